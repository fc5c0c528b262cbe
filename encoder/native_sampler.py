"""The generation policy of libtilepass (tp_sampler / tp_stop in tilepass.h) from Python: the no-repeat n-gram rule
over a token history, greedy / temperature / top-k / top-p sampling with a portable seeded PRNG, and the stop rules
(EOS ids, a count of new tokens, stop strings over the detokenised stream).

``NativeSampler(n_vocab, ...)``: ``accept(id)`` / ``accept_prompt(ids)`` grow the history, ``banned()`` gives the
ids the rule forbids next, ``sample(logits)`` the next id (-1 when nothing is left), ``filter(logits)`` the scores
transformers' warpers would leave. ``NativeStop(tokenizer, ...)``: ``push(id)`` gives (reason, text).
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np

from .native import check_error, ffi, lib, new_error
from .native_tokenizer import NativeTokenizer

SCOPES = {"generated": 0, "all": 1}
STOP_REASONS = {0: "", 1: "eos", 2: "length", 3: "stop_string"}


class NativeSampler:
    """A tp_sampler over rows of n_vocab float32 logits; freed when collected."""

    def __init__(self, n_vocab: int, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int | None = None, ngram: int = 30, window: int = 90, whitelist: Iterable[int] = (),
                 scope: str = "generated") -> None:
        if scope not in SCOPES:
            raise ValueError(f"no-repeat scope must be 'generated' or 'all', not {scope!r}")
        p = lib.tp_sampler_default_params()
        p.n_vocab = int(n_vocab)
        p.temperature = float(temperature)
        p.top_k = int(top_k)
        p.top_p = float(top_p)
        p.seed = int.from_bytes(os.urandom(8), "little") if seed is None else int(seed) & (2**64 - 1)
        p.no_repeat_ngram = int(ngram)
        p.no_repeat_window = int(window)
        p.no_repeat_scope = SCOPES[scope]
        wl = [int(i) for i in whitelist]
        c_wl = ffi.new("int32_t[]", wl) if wl else ffi.NULL
        p.no_repeat_whitelist = c_wl
        p.n_no_repeat_whitelist = len(wl)
        out, err = ffi.new("tp_sampler **"), new_error()
        status = lib.tp_sampler_create(ffi.new("tp_sampler_params *", p), out, err)
        if status == lib.TP_ERR_INVALID_ARGUMENT:
            raise ValueError(ffi.string(err.message).decode())
        check_error(status, err)
        self._s = ffi.gc(out[0], lib.tp_sampler_free)
        self.n_vocab = int(n_vocab)

    @classmethod
    def from_policy(cls, n_vocab: int, sampling: Any, no_repeat: Any) -> "NativeSampler":
        """From encoder.generate's Sampling (temperature, top_k, top_p, seed) and NoRepeat (ngram, window,
        whitelist, scope) objects."""
        return cls(n_vocab, temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                   seed=sampling.seed, ngram=no_repeat.ngram, window=no_repeat.window,
                   whitelist=sorted(no_repeat.whitelist), scope=no_repeat.scope)

    def reset(self) -> None:
        lib.tp_sampler_reset(self._s)

    def accept(self, token_id: int) -> None:
        err = new_error()
        check_error(lib.tp_sampler_accept(self._s, int(token_id), err), err)

    def accept_prompt(self, ids: Iterable[int]) -> None:
        arr = np.ascontiguousarray(np.asarray(list(ids), dtype=np.int32))
        err = new_error()
        ptr = ffi.from_buffer("int32_t[]", arr) if arr.size else ffi.NULL
        check_error(lib.tp_sampler_accept_prompt(self._s, ptr, int(arr.size), err), err)

    @property
    def n_history(self) -> int:
        return int(lib.tp_sampler_n_history(self._s))

    def banned(self) -> np.ndarray:
        n, err = ffi.new("int32_t *"), new_error()
        check_error(lib.tp_sampler_banned(self._s, ffi.NULL, 0, n, err), err)
        out = np.zeros(max(n[0], 1), dtype=np.int32)
        check_error(lib.tp_sampler_banned(self._s, ffi.from_buffer("int32_t[]", out), out.size, n, err), err)
        return out[:n[0]].astype(np.int64)

    @staticmethod
    def _row(logits: np.ndarray, copy: bool) -> np.ndarray:
        x = np.asarray(logits, dtype=np.float32).reshape(-1)
        if copy or not x.flags.writeable or not x.flags.c_contiguous:
            x = np.array(x, dtype=np.float32, copy=True, order="C")
        return x

    def sample(self, logits: np.ndarray, in_place: bool = False) -> int:
        """The next id (not accepted); -1 when no token is left. The row is copied unless in_place (a C-contiguous
        writable float32 row then gets the ban written into it)."""
        x = self._row(logits, copy=not in_place)
        tok, err = ffi.new("int32_t *"), new_error()
        check_error(lib.tp_sampler_sample(self._s, ffi.from_buffer("float[]", x), int(x.size), tok, err), err)
        return int(tok[0])

    def filter(self, logits: np.ndarray) -> np.ndarray:
        """A copy of logits as sampling sees them: the ban, the temperature, top-k and top-p applied (-inf out)."""
        x = self._row(logits, copy=True)
        err = new_error()
        check_error(lib.tp_sampler_filter(self._s, ffi.from_buffer("float[]", x), int(x.size), err), err)
        return x


class NativeStop:
    """A tp_stop: ``push(id)`` returns (reason, text): reason "" (go on), "eos", "length" or "stop_string"; text
    the bytes final so far. ``flush()`` the held-back rest at the end."""

    def __init__(self, tokenizer: NativeTokenizer | None, eos_ids: Iterable[int] = (), max_new_tokens: int = 0,
                 stop_strings: Iterable[str | bytes] = (), skip_special: bool = False) -> None:
        self._tok = tokenizer  # outlives the object
        p = lib.tp_stop_default_params()
        eos = [int(i) for i in eos_ids]
        self._keep: list[Any] = []
        if eos:
            c_eos = ffi.new("int32_t[]", eos)
            self._keep.append(c_eos)
            p.eos_ids, p.n_eos = c_eos, len(eos)
        p.max_new_tokens = int(max_new_tokens)
        stops = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in stop_strings]
        if stops:
            c_strs = [ffi.new("char[]", s) for s in stops]
            c_arr = ffi.new("char *[]", c_strs)
            self._keep += [c_strs, c_arr]
            p.stop_strings, p.n_stop_strings = ffi.cast("const char *const *", c_arr), len(stops)
        p.skip_special = bool(skip_special)
        out, err = ffi.new("tp_stop **"), new_error()
        handle = tokenizer._t if tokenizer is not None else ffi.NULL
        status = lib.tp_stop_create(handle, ffi.new("tp_stop_params *", p), out, err)
        if status == lib.TP_ERR_INVALID_ARGUMENT:
            raise ValueError(ffi.string(err.message).decode())
        check_error(status, err)
        self._s = ffi.gc(out[0], lib.tp_stop_free)

    def reset(self) -> None:
        lib.tp_stop_reset(self._s)

    @property
    def n_tokens(self) -> int:
        return int(lib.tp_stop_n_tokens(self._s))

    def push(self, token_id: int) -> tuple[str, bytes]:
        reason, p, n, err = ffi.new("int *"), ffi.new("char **"), ffi.new("size_t *"), new_error()
        check_error(lib.tp_stop_push(self._s, int(token_id), reason, ffi.cast("const char **", p), n, err), err)
        return STOP_REASONS[reason[0]], bytes(ffi.buffer(p[0], n[0]))

    def flush(self) -> bytes:
        p, n, err = ffi.new("char **"), ffi.new("size_t *"), new_error()
        check_error(lib.tp_stop_flush(self._s, ffi.cast("const char **", p), n, err), err)
        return bytes(ffi.buffer(p[0], n[0]))
