"""The C tokenizer of libtilepass (tp_tokenizer / tp_detokenizer in tilepass.h) from Python: text to ids and
ids back to bytes, built from a GGUF's vocabulary with no `tokenizers` dependency.

``NativeTokenizer.load(path)`` reads a (text or vocabulary-only) GGUF; ``encode`` gives the ids (special
tokens written in the text matched whole unless ``parse_special=False``), ``decode_bytes`` the tokens' bytes
joined, and ``stream()`` a ``NativeStream`` whose ``push(id)`` gives only complete UTF-8 characters.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from .native import check_error, ffi, lib, new_error


class NativeTokenizer:
    """A tp_tokenizer: freed when the object is collected (or by ``close``)."""

    def __init__(self, handle: Any, owner: Any = None) -> None:
        self._t = handle
        self._owner = owner  # a TextModel whose tokenizer this is (kept alive; not freed here)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NativeTokenizer":
        out = ffi.new("tp_tokenizer **")
        err = new_error()
        check_error(lib.tp_tokenizer_load(os.fsencode(path), out, err), err)
        return cls(ffi.gc(out[0], lib.tp_tokenizer_free))

    @property
    def n_vocab(self) -> int:
        return int(lib.tp_tokenizer_n_vocab(self._t))

    def encode(self, text: str | bytes, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        n = ffi.new("int32_t *")
        err = new_error()
        check_error(lib.tp_tokenize(self._t, data, len(data), parse_special, ffi.NULL, 0, n, err), err)
        ids = ffi.new("int32_t[]", max(n[0], 1))
        check_error(lib.tp_tokenize(self._t, data, len(data), parse_special, ids, n[0], n, err), err)
        return list(ids[0:n[0]])

    def token_bytes(self, token_id: int) -> bytes:
        n = ffi.new("size_t *")
        p = lib.tp_tokenizer_token_bytes(self._t, int(token_id), n)
        if p == ffi.NULL:
            raise IndexError(f"token id {token_id} is outside 0..{self.n_vocab - 1}")
        return bytes(ffi.buffer(p, n[0]))

    def token_id(self, text: str) -> int | None:
        data = text.encode("utf-8")
        i = int(lib.tp_tokenizer_token_id(self._t, data, len(data)))
        return None if i < 0 else i

    def is_special(self, token_id: int) -> bool:
        return bool(lib.tp_tokenizer_is_special(self._t, int(token_id)))

    def decode_bytes(self, ids: Iterable[int], skip_special: bool = False) -> bytes:
        arr = [int(i) for i in ids]
        c_ids = ffi.new("int32_t[]", arr) if arr else ffi.NULL
        n = ffi.new("size_t *")
        err = new_error()
        check_error(lib.tp_detokenize(self._t, c_ids, len(arr), skip_special, ffi.NULL, 0, n, err), err)
        buf = ffi.new("char[]", max(n[0], 1))
        check_error(lib.tp_detokenize(self._t, c_ids, len(arr), skip_special, buf, n[0], n, err), err)
        return bytes(ffi.buffer(buf, n[0]))

    def stream(self, skip_special: bool = False) -> "NativeStream":
        return NativeStream(self, skip_special)


class NativeStream:
    """A tp_detokenizer: ``push(id)`` returns the bytes of the characters completed so far (never part of one),
    ``flush()`` the rest (an incomplete character as U+FFFD)."""

    def __init__(self, tok: NativeTokenizer, skip_special: bool = False) -> None:
        self._tok = tok  # outlives the detokenizer
        out = ffi.new("tp_detokenizer **")
        err = new_error()
        check_error(lib.tp_detokenizer_create(tok._t, skip_special, out, err), err)
        self._d = ffi.gc(out[0], lib.tp_detokenizer_free)

    def push(self, token_id: int) -> bytes:
        p, n, err = ffi.new("char **"), ffi.new("size_t *"), new_error()
        check_error(lib.tp_detokenizer_push(self._d, int(token_id), ffi.cast("const char **", p), n, err), err)
        return bytes(ffi.buffer(p[0], n[0]))

    def flush(self) -> bytes:
        p, n, err = ffi.new("char **"), ffi.new("size_t *"), new_error()
        check_error(lib.tp_detokenizer_flush(self._d, ffi.cast("const char **", p), n, err), err)
        return bytes(ffi.buffer(p[0], n[0]))
