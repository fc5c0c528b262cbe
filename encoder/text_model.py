"""TextModel: a text decoder of libtilepass (its built-in sequence with its KV cache), TextSequence: more
sequences of the same model, and TextModel.eval_batch: several sequences in one decoder pass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

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
        self.path = Path(path)
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

    def trim(self) -> None:
        """Drop the weights' resident pages (KV caches kept): the next eval reads them from the file again."""
        lib.tp_text_trim(self._model)

    def new_sequence(self, n_ctx: int = 0) -> "TextSequence":
        """Another sequence of this model (its own KV cache of n_ctx tokens; 0: the model's n_ctx)."""
        return TextSequence(self, n_ctx)

    def _entry(self, entry: Any, seq: "TextSequence | None", ids: Sequence[int] | np.ndarray,
               embd: np.ndarray | None, all_logits: bool, pos: np.ndarray | None, want_logits: bool,
               keep: list) -> np.ndarray | None:
        """Fill a tp_text_batch_entry; the arrays it points into are appended to keep; returns the logits
        array it writes (None when no logits are wanted)."""
        ids_a = np.ascontiguousarray(np.asarray(ids, dtype=np.int32).reshape(-1))
        n = ids_a.size
        entry.seq = seq._seq if seq is not None else ffi.NULL
        entry.ids = ffi.cast("int32_t *", ffi.from_buffer(ids_a)) if n else ffi.NULL
        entry.n = n
        keep.append(ids_a)
        entry.pos = ffi.NULL
        if pos is not None:
            pos_a = np.ascontiguousarray(np.asarray(pos, dtype=np.int32).reshape(-1, max(n, 1)))
            if pos_a.shape[0] != self.info.n_pos_axes:
                raise ValueError(f"pos must be [{self.info.n_pos_axes}, {n}], got {np.shape(pos)}")
            entry.pos = ffi.cast("int32_t *", ffi.from_buffer(pos_a))
            keep.append(pos_a)
        entry.n_embd_rows = 0
        entry.embd = ffi.NULL
        if embd is not None:
            embd_a = np.ascontiguousarray(embd, dtype=np.float32)
            if embd_a.ndim != 2 or (embd_a.size and embd_a.shape[1] != self.info.n_embd):
                raise ValueError(f"embd must be [n_rows, {self.info.n_embd}], got {embd_a.shape}")
            entry.n_embd_rows = embd_a.shape[0]
            entry.embd = ffi.cast("float *", ffi.from_buffer(embd_a)) if embd_a.size else ffi.cast("float *", 1)
            keep.append(embd_a)
        entry.all_logits = all_logits
        entry.logits = ffi.NULL
        if not want_logits:
            return None
        logits = np.empty((n if all_logits else 1, self.info.n_vocab), dtype=np.float32)
        entry.logits = ffi.cast("float *", ffi.from_buffer(logits))
        return logits

    def eval(self, ids: Sequence[int] | np.ndarray, embd: np.ndarray | None = None,
             all_logits: bool = False, pos: np.ndarray | None = None) -> np.ndarray:
        """Logits after appending ids (image rows replacing the image tokens); pos (optional): the tokens'
        positions, [n_pos_axes, n] (M-RoPE models: t, h, w), else they follow the largest position so far."""
        entry = ffi.new("tp_text_batch_entry *")
        keep: list = []
        logits = self._entry(entry, None, ids, embd, all_logits, pos, True, keep)
        assert logits is not None
        err = new_error()
        st = lib.tp_text_eval_pos(self._model, entry.ids, entry.n, entry.pos, entry.embd, entry.n_embd_rows,
                                  entry.logits, all_logits, err)
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

    def eval_batch(self, items: Sequence["BatchItem"]) -> list[np.ndarray | None]:
        """Append each item's tokens to its sequence, all in one decoder pass (the weights read once for
        all); per item its logits as eval returns them (None with want_logits=False). On any error nothing
        is appended to any sequence."""
        entries = ffi.new("tp_text_batch_entry[]", max(len(items), 1))
        keep: list = []
        outs = [self._entry(entries[i], it.seq, it.ids, it.embd, it.all_logits, it.pos, it.want_logits, keep)
                for i, it in enumerate(items)]
        for it in items:
            if it.seq is not None and it.seq.model is not self:
                raise ValueError("a sequence of another model was given to eval_batch")
        err = new_error()
        st = lib.tp_text_eval_batch(self._model, entries, len(items), err)
        self._abort.reraise()
        check_error(st, err)
        return [o if (o is None or it.all_logits) else o[0] for o, it in zip(outs, items)]

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


class TextSequence:
    """A sequence of a TextModel: its own KV cache (n_ctx tokens; 0: the model's), tokens and positions,
    evaluated with TextModel.eval_batch. Keeps its model alive."""

    def __init__(self, model: TextModel, n_ctx: int = 0) -> None:
        if n_ctx < 0:
            raise ValueError(f"n_ctx must be >= 0 (got {n_ctx})")
        self.model = model
        out = ffi.new("tp_text_seq **")
        err = new_error()
        check_error(lib.tp_text_seq_create(model._model, n_ctx, out, err), err)
        self._seq = ffi.gc(out[0], lib.tp_text_seq_free)

    @property
    def n_past(self) -> int:
        return int(lib.tp_text_seq_n_past(self._seq))

    @property
    def n_ctx(self) -> int:
        return int(lib.tp_text_seq_n_ctx(self._seq))

    def reset(self) -> None:
        lib.tp_text_seq_reset(self._seq)

    def eval(self, ids: Sequence[int] | np.ndarray, embd: np.ndarray | None = None,
             all_logits: bool = False, pos: np.ndarray | None = None) -> np.ndarray:
        """This sequence alone, as TextModel.eval."""
        (out,) = self.model.eval_batch([BatchItem(self, ids, embd, pos, all_logits)])
        assert out is not None
        return out


@dataclass
class BatchItem:
    """One sequence's part of TextModel.eval_batch (seq None: the model's built-in sequence)."""

    seq: TextSequence | None
    ids: Sequence[int] | np.ndarray
    embd: np.ndarray | None = None
    pos: np.ndarray | None = None
    all_logits: bool = False
    want_logits: bool = True
