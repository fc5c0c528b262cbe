"""TextModel: the DeepSeek-OCR text decoder of libtilepass (one sequence with its KV cache)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .interrupt import AbortHook, Interrupt
from .native import check_error, ffi, lib, new_error

if TYPE_CHECKING:
    from .native_tokenizer import NativeTokenizer


@dataclass(frozen=True)
class TextInfo:
    n_vocab: int
    n_embd: int
    n_layer: int
    n_ctx: int
    n_ctx_train: int
    bos_id: int
    eos_id: int
    pad_id: int
    image_token_id: int
    n_pos_axes: int


class TextModel:
    """A text GGUF loaded into libtilepass.

    eval(ids, embd) appends tokens to the sequence (image-token positions take the rows of ``embd``
    in order) and returns logits: ``[n_vocab]`` for the last position, or ``[n, n_vocab]`` with
    ``all_logits=True``.

    kv_type: the KV cache's element type, "f16", "f32", "q8_0" (llama.cpp's -ctk/-ctv q8_0: half the bytes of
    f16; head sizes must be multiples of 32) or "auto" (None; F32 for F32 weights, else F16)."""

    KV_TYPES = {"auto": -1, "f32": 0, "f16": 1, "q8_0": 8}

    def __init__(self, path: str | Path, n_threads: int = 1, n_ctx: int = 0, n_batch: int = 0,
                 cpu_path: int = -1, kv_type: str | None = None, abort: "Callable[[], bool] | Interrupt | None" = None) -> None:
        if (kv_type or "auto") not in self.KV_TYPES:
            raise ValueError(f"kv_type must be one of {sorted(self.KV_TYPES)} (got {kv_type!r})")
        params = ffi.new("tp_text_params *", lib.tp_text_default_params())
        params.n_threads = n_threads
        params.cpu_path = cpu_path
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.kv_type = self.KV_TYPES[kv_type or "auto"]
        # asked between graph nodes: true stops an evaluation with TP_ERR_ABORTED, nothing appended (interrupt.py)
        self._abort = AbortHook(abort)
        params.abort_callback = self._abort.callback
        params.abort_callback_data = self._abort.data
        out = ffi.new("tp_text_model **")
        err = new_error()
        check_error(lib.tp_text_load(str(path).encode(), params, out, err), err)
        self._model = ffi.gc(out[0], lib.tp_text_free)
        info = ffi.new("tp_text_info *")
        lib.tp_text_get_info(self._model, info)
        self.info = TextInfo(*(int(getattr(info, f)) for f in TextInfo.__dataclass_fields__))

    @property
    def n_past(self) -> int:
        return int(lib.tp_text_n_past(self._model))

    def reset(self) -> None:
        lib.tp_text_reset(self._model)

    def eval(self, ids: Sequence[int] | np.ndarray, embd: np.ndarray | None = None,
             all_logits: bool = False, pos: np.ndarray | None = None) -> np.ndarray:
        """Logits after appending ids (image rows replacing the image tokens); pos (optional): the tokens'
        positions, [n_pos_axes, n] (M-RoPE models: t, h, w), else they follow the largest position so far."""
        ids_a = np.ascontiguousarray(np.asarray(ids, dtype=np.int32).reshape(-1))
        n = ids_a.size
        pos_ptr = ffi.NULL
        if pos is not None:
            pos_a = np.ascontiguousarray(np.asarray(pos, dtype=np.int32).reshape(-1, n))
            if pos_a.shape[0] != self.info.n_pos_axes:
                raise ValueError(f"pos must be [{self.info.n_pos_axes}, {n}], got {np.shape(pos)}")
            pos_ptr = ffi.cast("int32_t *", ffi.from_buffer(pos_a))
        n_rows = 0
        embd_ptr = ffi.NULL
        if embd is not None:
            embd_a = np.ascontiguousarray(embd, dtype=np.float32)
            if embd_a.ndim != 2 or (embd_a.size and embd_a.shape[1] != self.info.n_embd):
                raise ValueError(f"embd must be [n_rows, {self.info.n_embd}], got {embd_a.shape}")
            n_rows = embd_a.shape[0]
            embd_ptr = ffi.cast("float *", ffi.from_buffer(embd_a)) if embd_a.size else ffi.cast("float *", 1)
        logits = np.empty((n if all_logits else 1, self.info.n_vocab), dtype=np.float32)
        err = new_error()
        ids_ptr = ffi.cast("int32_t *", ffi.from_buffer(ids_a)) if n else ffi.NULL
        st = lib.tp_text_eval_pos(self._model, ids_ptr, n, pos_ptr, embd_ptr, n_rows,
                                  ffi.cast("float *", ffi.from_buffer(logits)), all_logits, err)
        self._abort.reraise()  # a signal that stopped the evaluation: its exception, not "aborted"
        check_error(st, err)
        return logits if all_logits else logits[0]

    def tokenizer(self) -> "NativeTokenizer":
        """The model's own C tokenizer (tp_text_get_tokenizer), built from its file's vocabulary; TilepassError
        with the reason when the vocabulary is not one it supports."""
        from .native_tokenizer import NativeTokenizer

        out = ffi.new("tp_tokenizer **")
        err = new_error()
        check_error(lib.tp_text_get_tokenizer(self._model, ffi.cast("const tp_tokenizer **", out), err), err)
        return NativeTokenizer(out[0], owner=self)

    def token_bytes(self, token_id: int) -> bytes:
        n = ffi.new("size_t *")
        p = lib.tp_text_token_bytes(self._model, int(token_id), n)
        if p == ffi.NULL:
            raise IndexError(f"token id {token_id} is outside 0..{self.info.n_vocab - 1}")
        return bytes(ffi.buffer(p, n[0]))

    def greedy(self, prompt: Sequence[int], n_new: int, embd: np.ndarray | None = None,
               pos: np.ndarray | None = None) -> list[int]:
        """Evaluate the prompt, then generate n_new tokens greedily one at a time (no stop rule)."""
        logits = self.eval(prompt, embd, pos=pos)
        out: list[int] = []
        for _ in range(n_new):
            tok = int(np.argmax(logits))
            out.append(tok)
            if len(out) < n_new:
                logits = self.eval([tok])
        return out
