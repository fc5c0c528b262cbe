"""VisionEncoder: preprocess images and encode them with libtilepass, all pages in one pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .native import TilepassError, check_error, ffi, lib, new_error
from .preprocess import PreparedImage, ViewGeometry, prepare_image

ImageSource = Image.Image | str | Path | bytes


class VisionEncoder:
    """A vision GGUF loaded into libtilepass.

    encode() turns images into their laid-out image-token embeddings ([n_tokens, n_embd] each),
    encoding every view of every image in one graph computation."""

    def __init__(self, path: str | Path, n_threads: int = 1, cpu_path: int = -1, keep_stages: bool = False,
                 precision: int = 0) -> None:
        params = ffi.new("tp_vision_params *", lib.tp_vision_default_params())
        params.n_threads = n_threads
        params.cpu_path = cpu_path
        params.keep_stages = keep_stages
        # tp_precision: 0 = F32, 1 = BF16 products, 2 = int8 (matrices as Q8_0), -1 = auto (by the file's weights)
        params.precision = precision
        out = ffi.new("tp_vision_model **")
        err = new_error()
        check_error(lib.tp_vision_load(str(path).encode(), params, out, err), err)
        self._model = ffi.gc(out[0], lib.tp_vision_free)
        info = ffi.new("tp_vision_info *")
        lib.tp_vision_get_info(self._model, info)
        self.n_embd = int(info.n_embd)
        self.precision = int(info.precision)  # what the model computes with (auto resolved)
        self.geometry = ViewGeometry(
            global_size=int(info.image_size),
            tile_size=int(info.tile_size),
            patch_size=int(info.patch_size),
            downsample=int(info.downsample),
            min_tiles=int(info.min_tiles),
            max_tiles=int(info.max_tiles),
            pad_color=int(info.pad_color),
            mean=tuple(float(v) for v in info.image_mean),  # type: ignore[arg-type]
            std=tuple(float(v) for v in info.image_std),  # type: ignore[arg-type]
        )

    def prepare(self, image: ImageSource | PreparedImage, mode: str = "gundam") -> PreparedImage:
        if isinstance(image, PreparedImage):
            return image
        return prepare_image(image, mode, self.geometry)

    def n_tokens(self, image: ImageSource | PreparedImage, mode: str = "gundam") -> int:
        return self.prepare(image, mode).n_tokens

    def encode(self, images: Sequence[ImageSource | PreparedImage], mode: str = "gundam") -> list[np.ndarray]:
        """One [n_tokens, n_embd] float32 array per image, all encoded in one pass."""
        prepared = [self.prepare(im, mode) for im in images]
        if not prepared:
            return []
        pages = ffi.new("tp_page_views[]", len(prepared))
        keep: list[Any] = []
        outputs: list[np.ndarray] = []
        out_ptrs = ffi.new("float *[]", len(prepared))
        for i, p in enumerate(prepared):
            gv = np.ascontiguousarray(p.global_view, dtype=np.float32)
            tiles = np.ascontiguousarray(p.tiles, dtype=np.float32)
            keep += [gv, tiles]
            pages[i].global_view = ffi.cast("float *", ffi.from_buffer(gv))
            pages[i].global_size = gv.shape[0]
            pages[i].n_tiles = tiles.shape[0]
            pages[i].tiles = ffi.cast("float *", ffi.from_buffer(tiles)) if tiles.shape[0] else ffi.NULL
            pages[i].tile_size = tiles.shape[1] if tiles.shape[0] else 0
            pages[i].grid_cols, pages[i].grid_rows = p.grid if tiles.shape[0] else (0, 0)
            n = lib.tp_vision_page_n_tokens(self._model, ffi.addressof(pages, i))
            if n < 0:
                raise TilepassError(lib.TP_ERR_INVALID_ARGUMENT, f"image {i}: views this model cannot encode")
            out = np.empty((n, self.n_embd), dtype=np.float32)
            outputs.append(out)
            out_ptrs[i] = ffi.cast("float *", ffi.from_buffer(out))
        err = new_error()
        check_error(lib.tp_vision_encode(self._model, pages, len(prepared), out_ptrs, err), err)
        return outputs

    def stage(self, name: str, view: int) -> np.ndarray:
        """A stage output ("sam", "clip", "proj") of one view of the last encode (keep_stages=True)."""
        n = ffi.new("int64_t *")
        err = new_error()
        check_error(lib.tp_vision_get_stage(self._model, name.encode(), view, ffi.NULL, 0, n, err), err)
        out = np.empty(int(n[0]), dtype=np.float32)
        check_error(
            lib.tp_vision_get_stage(self._model, name.encode(), view, ffi.cast("float *", ffi.from_buffer(out)), out.size, n, err),
            err,
        )
        return out

    def trim(self) -> None:
        """Free the graph and buffers and drop the weights' resident pages until the next encode."""
        lib.tp_vision_trim(self._model)

    @property
    def last_compute_bytes(self) -> int:
        return int(lib.tp_vision_last_compute_bytes(self._model))
