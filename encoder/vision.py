"""VisionEncoder: a vision GGUF of any family this build runs; images to their laid-out image-token
embeddings, every view of every image in one pass."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .interrupt import AbortHook, Interrupt
from .native import check_error, ffi, lib, new_error
from .preprocess import ImageSource, PreparedImage, prepare_image


class VisionEncoder:
    """A vision GGUF loaded into libtilepass.

    ``modes`` are the model's image modes (the first is its default); encode() turns images into their
    laid-out image-token embeddings ([n_tokens, n_embd] each), encoding every view of every image in one
    graph computation."""

    def __init__(self, path: str | Path, n_threads: int = 1, cpu_path: int = -1, keep_stages: bool = False,
                 precision: int = 0, abort: "Callable[[], bool] | Interrupt | None" = None) -> None:
        params = ffi.new("tp_vision_params *", lib.tp_vision_default_params())
        params.n_threads = n_threads
        params.cpu_path = cpu_path
        params.keep_stages = keep_stages
        # tp_precision: 0 = F32, 1 = BF16 products, 2 = int8 (matrices as Q8_0), -1 = auto (by the file's weights)
        params.precision = precision
        # asked between graph nodes: true stops an encode with TP_ERR_ABORTED (interrupt.py)
        self._abort = AbortHook(abort)
        params.abort_callback = self._abort.callback
        params.abort_callback_data = self._abort.data
        out = ffi.new("tp_vision_model **")
        err = new_error()
        check_error(lib.tp_vision_load(str(path).encode(), params, out, err), err)
        self._model = ffi.gc(out[0], lib.tp_vision_free)
        info = ffi.new("tp_vision_info *")
        lib.tp_vision_get_info(self._model, info)
        self.n_embd = int(info.n_embd)
        self.precision = int(info.precision)  # what the model computes with (auto resolved)
        self.family = ffi.string(info.family).decode()
        self.projector_type = ffi.string(info.projector_type).decode()
        # the family's official runner's no-repeat rule (n-gram size, window of generated tokens)
        self.no_repeat = (int(info.no_repeat_ngram), int(info.no_repeat_window))
        self.modes: tuple[str, ...] = tuple(ffi.string(lib.tp_vision_mode_name(self._model, i)).decode()
                                            for i in range(info.n_modes))

    @property
    def default_mode(self) -> str:
        return self.modes[0]

    def preprocess_params(self, mode: str | None = None, min_tiles: int | None = None,
                          max_tiles: int | None = None) -> object:
        """tp_preprocess_params of an image mode (None: the default), tile limits optionally overridden."""
        mode = mode or self.default_mode
        if mode not in self.modes:
            raise ValueError(f"unknown image mode {mode!r} for this {self.family} model "
                             f"(expected one of: {', '.join(self.modes)})")
        p = ffi.new("tp_preprocess_params *")
        check_error(lib.tp_vision_preprocess_params(self._model, mode.encode(), p))
        if min_tiles is not None or max_tiles is not None:
            lo = min(p.min_tiles, max_tiles or p.min_tiles) if min_tiles is None else min_tiles
            p.min_tiles, p.max_tiles = lo, max(p.max_tiles, lo) if max_tiles is None else max_tiles
        return p

    def prepare(self, image: ImageSource | PreparedImage, mode: str | None = None, min_tiles: int | None = None,
                max_tiles: int | None = None) -> PreparedImage:
        if isinstance(image, PreparedImage):
            return image
        mode = mode or self.default_mode
        params = self.preprocess_params(mode, min_tiles, max_tiles)
        return prepare_image(image, mode, params, lambda views: lib.tp_vision_page_n_tokens(self._model, views))

    def n_tokens(self, image: ImageSource | PreparedImage, mode: str | None = None) -> int:
        return self.prepare(image, mode).n_tokens

    def plan_bytes(self, images: Sequence[PreparedImage]) -> int:
        """The compute buffer encoding these prepared images in one pass needs (tp_vision_plan_bytes), without
        encoding them; the graph is kept for an encode of the same images."""
        pages = ffi.new("tp_page_views[]", [p.views[0] for p in images])
        n = ffi.new("size_t *")
        err = new_error()
        check_error(lib.tp_vision_plan_bytes(self._model, pages, len(images), n, err), err)
        return int(n[0])

    def encode(self, images: Sequence[ImageSource | PreparedImage], mode: str | None = None) -> list[np.ndarray]:
        """One [n_tokens, n_embd] float32 array per image, all encoded in one pass."""
        prepared = [self.prepare(im, mode) for im in images]
        if not prepared:
            return []
        pages = ffi.new("tp_page_views[]", len(prepared))
        out_ptrs = ffi.new("float *[]", len(prepared))
        outputs: list[np.ndarray] = []
        for i, p in enumerate(prepared):
            pages[i] = p.views[0]
            out = np.empty((p.n_tokens, self.n_embd), dtype=np.float32)
            outputs.append(out)
            out_ptrs[i] = ffi.cast("float *", ffi.from_buffer(out))
        err = new_error()
        st = lib.tp_vision_encode(self._model, pages, len(prepared), out_ptrs, err)
        self._abort.reraise()  # a signal that stopped the pass: its exception, not "aborted"
        check_error(st, err)
        return outputs

    def stage(self, name: str, view: int) -> np.ndarray:
        """A stage output ("proj" and the family's, e.g. "sam", "clip") of one view of the last encode
        (keep_stages=True), flat."""
        n = ffi.new("int64_t *")
        err = new_error()
        check_error(lib.tp_vision_get_stage(self._model, name.encode(), view, ffi.NULL, 0, n, err), err)
        out = np.empty(int(n[0]), dtype=np.float32)
        check_error(
            lib.tp_vision_get_stage(self._model, name.encode(), view, ffi.cast("float *", ffi.from_buffer(out)),
                                    out.size, n, err),
            err,
        )
        return out

    def trim(self) -> None:
        """Free the graph and buffers and drop the weights' resident pages until the next encode."""
        lib.tp_vision_trim(self._model)

    @property
    def last_compute_bytes(self) -> int:
        return int(lib.tp_vision_last_compute_bytes(self._model))
