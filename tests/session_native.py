"""A thin cffi wrapper of the C session API (include/tilepass.h "Sessions") for the tests: make a session over an
OcrPipeline's loaded models, submit, read the prompt ids, generate with a policy given as encoder.generate's Sampling
and NoRepeat objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from encoder.generate import NoRepeat, Sampling
from encoder.native import check_error, ffi, lib, new_error

SCOPES = {"generated": lib.TP_NO_REPEAT_GENERATED, "all": lib.TP_NO_REPEAT_ALL}


@dataclass
class CResult:
    tokens: list[int]
    text: bytes
    stop_reason: int
    n_prompt: int
    spans: list[tuple[int, int, int, int, list[tuple[int, int, int, int]], bool]]


class CSession:
    def __init__(self, text_model: Any, vision_model: Any, image_mode: str | None = None) -> None:
        p = lib.tp_session_default_params()
        self._mode = ffi.new("char[]", image_mode.encode()) if image_mode else ffi.NULL
        p.image_mode = self._mode
        out, err = ffi.new("tp_session **"), new_error()
        check_error(lib.tp_session_create_from_models(text_model, vision_model, ffi.new("tp_session_params *", p), out,
                                                      err), err)
        self._s = ffi.gc(out[0], lib.tp_session_free)

    def submit(self, prompt: str | None, rgb: np.ndarray | list[np.ndarray] | None = None,
               embd: np.ndarray | None = None, grid: tuple[int, int] = (0, 0)) -> None:
        """One image (rgb an array or embd), or several (rgb a list of HxWx3 arrays)."""
        rgbs = rgb if isinstance(rgb, list) else [rgb]
        imgs = ffi.new("tp_session_image[]", len(rgbs))
        keep = []
        for img, one in zip(imgs, rgbs):
            if one is not None:
                a = np.ascontiguousarray(one, dtype=np.uint8)
                keep.append(a)
                img.rgb.rgb = ffi.cast("const uint8_t *", ffi.from_buffer(a))
                img.rgb.width, img.rgb.height, img.rgb.stride = a.shape[1], a.shape[0], 0
            else:
                e = np.ascontiguousarray(embd, dtype=np.float32)
                keep.append(e)
                img.embd = ffi.cast("const float *", ffi.from_buffer(e))
                img.n_tokens = e.shape[0]
                img.grid_cols, img.grid_rows = grid
        c_prompt = ffi.NULL if prompt is None else ffi.new("char[]", prompt.encode())
        err = new_error()
        check_error(lib.tp_session_submit(self._s, c_prompt, imgs, len(rgbs), err), err)

    def prompt_ids(self) -> tuple[list[int], np.ndarray | None]:
        ids, n, pos, axes = ffi.new("const int32_t **"), ffi.new("int32_t *"), ffi.new("const int32_t **"), ffi.new("int32_t *")
        assert lib.tp_session_prompt_ids(self._s, ids, n, pos, axes) == lib.TP_OK
        got = [ids[0][i] for i in range(n[0])]
        p = None
        if pos[0] != ffi.NULL:
            p = np.frombuffer(ffi.buffer(pos[0], 4 * axes[0] * n[0]), dtype=np.int32).reshape(axes[0], n[0]).copy()
        return got, p

    def generate(self, max_tokens: int, sampling: Sampling | None = None, no_repeat: NoRepeat | None = None,
                 stop: list[str] | None = None, ignore_eos: bool = False) -> CResult:
        p = lib.tp_session_default_gen_params()
        p.max_tokens = max_tokens
        p.ignore_eos = ignore_eos
        keep: list[Any] = []
        if sampling is not None:
            p.sampler.temperature = sampling.temperature
            p.sampler.top_k = sampling.top_k
            p.sampler.top_p = sampling.top_p
            p.sampler.seed = 0 if sampling.seed is None else sampling.seed
        if no_repeat is not None:
            p.sampler.no_repeat_ngram = no_repeat.ngram
            p.sampler.no_repeat_window = no_repeat.window
            p.sampler.no_repeat_scope = SCOPES[no_repeat.scope]
            wl = sorted(no_repeat.whitelist)
            arr = ffi.new("int32_t[]", wl) if wl else ffi.NULL
            keep.append(arr)
            p.sampler.no_repeat_whitelist = arr
            p.sampler.n_no_repeat_whitelist = len(wl)
        if stop:
            strs = [ffi.new("char[]", s.encode()) for s in stop]
            arr = ffi.new("const char *[]", strs)
            keep += [strs, arr]
            p.stop_strings = arr
            p.n_stop_strings = len(stop)
        r, err = ffi.new("tp_session_result *"), new_error()
        check_error(lib.tp_session_generate(self._s, ffi.new("tp_session_gen_params *", p), r, err), err)
        spans = []
        for i in range(r.n_spans):
            s = r.spans[i]
            boxes = [(b.x1, b.y1, b.x2, b.y2) for b in (r.boxes[s.first_box + k] for k in range(s.n_boxes))]
            spans.append((s.begin, s.end, s.label_begin, s.label_end, boxes, bool(s.complete)))
        return CResult([r.tokens[i] for i in range(r.n_generated_tokens)], ffi.buffer(r.text, r.text_len)[:],
                       r.stop_reason, r.n_prompt_tokens, spans)


def grounding_parse(text: bytes) -> list[tuple[int, int, int, int, list[tuple[int, int, int, int]], bool]]:
    ns, nb, err = ffi.new("int32_t *"), ffi.new("int32_t *"), new_error()
    check_error(lib.tp_grounding_parse(text, len(text), ffi.NULL, 0, ns, ffi.NULL, 0, nb, err), err)
    spans, boxes = ffi.new("tp_grounding_span[]", max(1, ns[0])), ffi.new("tp_grounding_box[]", max(1, nb[0]))
    check_error(lib.tp_grounding_parse(text, len(text), spans, ns[0], ns, boxes, nb[0], nb, err), err)
    out = []
    for i in range(ns[0]):
        s = spans[i]
        bx = [(b.x1, b.y1, b.x2, b.y2) for b in (boxes[s.first_box + k] for k in range(s.n_boxes))]
        out.append((s.begin, s.end, s.label_begin, s.label_end, bx, bool(s.complete)))
    return out
