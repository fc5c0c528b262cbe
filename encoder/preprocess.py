"""Image -> the views of a page, through libtilepass's preprocessing (native/image/preprocess.c; tilepass.h,
"Images as RGB bytes"): the vision model's image modes say how (view fit and size, tiles, mean/std), Pillow
only decodes the file (images.py: EXIF orientation, RGB, size checks). There is no second implementation
in Python: tests check the C one against the reference pipelines (tests/reference_preprocess.py for
DeepSeek-OCR, transformers' image processors for the others).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .images import ImageError, load_image
from .native import TilepassError, check_error, ffi, lib, new_error

ImageSource = Image.Image | str | Path | bytes

__all__ = ["ImageError", "ImageSource", "PreparedImage", "prepare_image", "rgb_page"]


@dataclass
class PreparedImage:
    """One preprocessed page: the C page (it owns the views' pixels) and what the pipeline reports."""

    page: Any  # tp_page *, freed with this object
    grid: tuple[int, int]  # (cols, rows) of the tiles; (0, 0) when there are none
    original_size: tuple[int, int]  # (width, height) after EXIF orientation
    mode: str
    n_tokens: int  # laid-out image tokens (layout tokens such as newlines and separators included)
    token_grid: tuple[int, int] = (0, 0)  # (cols, rows) of the image tokens when they form one grid (native fit)

    @property
    def views(self) -> Any:
        """The tp_page_views of the page (valid while this object lives)."""
        return lib.tp_page_get_views(self.page)

    def view_arrays(self) -> list[np.ndarray]:
        """Copies of the views' pixels, [height, width, 3] float32 each, in page order (tiles, then the
        whole-image view)."""
        v = self.views
        out = []
        for i in range(v.n_views):
            w, h = int(v.views[i].width), int(v.views[i].height)
            buf = ffi.buffer(v.views[i].pixels, w * h * 3 * 4)
            out.append(np.frombuffer(buf, dtype=np.float32).reshape(h, w, 3).copy())
        return out

    @property
    def global_view(self) -> np.ndarray:
        return self.view_arrays()[-1]

    @property
    def tiles(self) -> np.ndarray:
        views = self.view_arrays()[:-1]
        if not views:
            return np.zeros((0, 0, 0, 3), dtype=np.float32)
        return np.stack(views)


def rgb_page(rgb: np.ndarray, params: Any) -> Any:
    """A tp_page (freed with the returned handle) from a uint8 [h, w, 3] array and tp_preprocess_params."""
    a = np.ascontiguousarray(rgb, dtype=np.uint8)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an RGB array [h, w, 3], got shape {a.shape}")
    img = ffi.new("tp_rgb_image *")
    img.rgb = ffi.cast("const uint8_t *", ffi.from_buffer(a))
    img.width, img.height, img.stride = a.shape[1], a.shape[0], 0
    out = ffi.new("tp_page **")
    err = new_error()
    check_error(lib.tp_page_from_rgb(img, params, out, err), err)
    return ffi.gc(out[0], lib.tp_page_free)


def prepare_image(image: ImageSource, mode: str, params: Any, n_tokens_of: Any) -> PreparedImage:
    """Decode one image and make its page with `params` (tp_preprocess_params of `mode`);
    ``n_tokens_of(views)`` counts its tokens for the model. Raises ImageError for an unusable image."""
    rgb = load_image(image)  # EXIF transpose + RGB + checks, also for an already opened PIL image
    width, height = rgb.size
    try:
        page = rgb_page(np.asarray(rgb, dtype=np.uint8), params)
    except TilepassError as e:
        raise ImageError(str(e)) from None
    v = lib.tp_page_get_views(page)
    n = int(n_tokens_of(v))
    if n < 0:
        raise ImageError(f"the model cannot encode the views of this {width}x{height} image in mode {mode!r}")
    token_grid = (0, 0)
    if params.fit == lib.TP_FIT_NATIVE:  # one view whose tokens are its factor x factor blocks, in raster order
        token_grid = (int(v.views[0].width) // params.factor, int(v.views[0].height) // params.factor)
    return PreparedImage(page=page, grid=(int(v.grid_cols), int(v.grid_rows)), original_size=(width, height),
                         mode=mode, n_tokens=n, token_grid=token_grid)
