"""The test reference of DeepSeek-OCR v1 image preprocessing (spec `deepseek-ocr-v1.md` §5, §6), numpy + Pillow only:
the runtime preprocesses in C (native/image/preprocess.c); tests check it against this module, and this module
against the official pipeline (test_preprocess.py).

Reproduces the official DeepSeek-OCR PIL pipeline (`DeepseekOCRForCausalLM.infer` + `dynamic_preprocess`
+ `BasicImageTransform`):

- load: ``Image.open`` -> ``ImageOps.exif_transpose`` -> ``convert("RGB")`` (see images.py for checks);
- tiny / small: ``image.resize((S, S))`` (bicubic, aspect ratio NOT kept); the reference then calls
  ``ImageOps.pad`` on the S x S result, which is a copy and is skipped here;
- base / large / the gundam global view: ``ImageOps.pad(image, (S, S), color=(127, 127, 127))``
  (bicubic, aspect-preserving, centred with Python's round());
- gundam tiles, only when width > tile or height > tile: grid from tiling.choose_grid, the whole image
  resized (bicubic, no padding) to (tile*cols, tile*rows) and cut in raster order. A chosen grid of
  (1, 1) (possible only with min_tiles == 1) means no tiles, as in the official code, which adds local
  views and their tokens only when cols > 1 or rows > 1;
- normalisation in float32, the operations of torchvision's ToTensor + Normalize in the same order:
  ``x.float() / 255``, ``- mean``, ``/ std``. The output is BIT-IDENTICAL to the reference (tested),
  before the reference's own cast to bfloat16.

Modes (`auto` resolves to `gundam` when width > tile_size or height > tile_size, else `base`):

| mode   | view                        | tiles                           | image tokens (real geometry)      |
|--------|-----------------------------|---------------------------------|-----------------------------------|
| tiny   | stretch to 512              | none                            | 8*9+1 = 73                        |
| small  | stretch to 640              | none                            | 10*11+1 = 111                     |
| base   | pad to global_size (1024)   | none                            | 16*17+1 = 273                     |
| large  | pad to 1280                 | none                            | 20*21+1 = 421                     |
| gundam | pad to global_size (1024)   | tile_size (640) when > tile     | 273 + (10*rows)*(10*cols+1)       |

Conventions of PreparedImage: pixel arrays are HWC (channels innermost) float32; ``grid`` is
(cols, rows) of the tiles and (0, 0) when there are none (transformers' processor reports
``patches_grid=[1, 1]`` with ``num_local_patches=0`` in that case: map (0, 0) to that when calling it);
``tiles.shape[0] == cols * rows`` always. Token layout of §5: tiles (as one grid, a newline after each
grid row), then the global view (a newline after each row), then the view separator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from encoder.images import MAX_PIXELS, ImageError, load_image
from encoder.tiling import MAX_TILES_LIMIT, candidate_grids, check_tile_range, choose_grid

__all__ = [
    "ImageError",
    "MAX_PIXELS",
    "MAX_TILES_LIMIT",
    "MODES",
    "MODE_NAMES",
    "ModeSpec",
    "PreparedImage",
    "ViewGeometry",
    "candidate_grids",
    "choose_grid",
    "count_image_tokens",
    "load_image",
    "normalise",
    "prepare_image",
    "resolve_mode",
    "tokens_per_side",
]

BICUBIC = Image.Resampling.BICUBIC


@dataclass(frozen=True)
class ViewGeometry:
    """Image geometry of the model. The defaults are DeepSeek-OCR v1's (and its GGUF's tile limits)."""

    global_size: int = 1024  # base / gundam global view
    tile_size: int = 640  # gundam tiles
    patch_size: int = 16  # SAM patch embedding
    downsample: int = 4  # SAM neck + net_2 + net_3 (two stride-2 convs)
    min_tiles: int = 2
    max_tiles: int = 9
    pad_color: int | tuple[int, int, int] = 127  # int(0.5 * 255) in the reference
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModeSpec:
    view_size: int | None  # None: geometry.global_size
    resize: str  # "stretch" (plain resize, aspect not kept) or "pad" (ImageOps.pad)
    tiled: bool  # gundam: 640 tiles when the image exceeds a tile


MODES: dict[str, ModeSpec] = {
    "tiny": ModeSpec(512, "stretch", False),
    "small": ModeSpec(640, "stretch", False),
    "base": ModeSpec(None, "pad", False),
    "large": ModeSpec(1280, "pad", False),
    "gundam": ModeSpec(None, "pad", True),
}
MODE_NAMES = tuple(MODES) + ("auto",)


@dataclass
class PreparedImage:
    global_view: np.ndarray  # float32 [S, S, 3], (x/255 - mean)/std, HWC
    tiles: np.ndarray  # float32 [n_tiles, T, T, 3], raster order (row-major); n_tiles may be 0
    grid: tuple[int, int]  # (cols, rows) of the tiles; (0, 0) when there are none
    original_size: tuple[int, int]  # (width, height) after EXIF orientation
    mode: str  # the mode used ("auto" resolved to "gundam" or "base")
    n_tokens: int  # laid-out image tokens incl. newlines and the view separator


def view_size(mode: str, geometry: ViewGeometry = ViewGeometry()) -> int:
    spec = MODES[_check_mode(mode, allow_auto=False)]
    return geometry.global_size if spec.view_size is None else spec.view_size


def tokens_per_side(size: int, geometry: ViewGeometry = ViewGeometry()) -> int:
    """Tokens along one side of a size x size view (16 at 1024, 10 at 640, 8 at 512, 20 at 1280)."""
    return math.ceil((size // geometry.patch_size) / geometry.downsample)


def _check_mode(mode: str, allow_auto: bool = True) -> str:
    if mode not in MODES and not (allow_auto and mode == "auto"):
        names = ", ".join(MODE_NAMES if allow_auto else tuple(MODES))
        raise ValueError(f"unknown image mode {mode!r} (expected one of: {names})")
    return mode


def resolve_mode(mode: str, width: int, height: int, geometry: ViewGeometry = ViewGeometry()) -> str:
    """`auto` -> `gundam` if the image exceeds a tile in either direction, else `base`."""
    _check_mode(mode)
    if mode == "auto":
        return "gundam" if (width > geometry.tile_size or height > geometry.tile_size) else "base"
    return mode


def count_image_tokens(mode: str, grid: tuple[int, int], geometry: ViewGeometry = ViewGeometry()) -> int:
    """Image tokens of a prepared image: view rows*(cols+1) + 1 separator, plus the tile grid's
    (rows*q)*(cols*q + 1) in gundam mode, q = tokens_per_side(tile_size).

    ``grid`` (cols, rows): (0, 0) or (1, 1) mean no tiles (as in the official code and in
    transformers' ``patches_grid``). `auto` counts as gundam (identical when there are no tiles).
    """
    _check_mode(mode)
    if mode == "auto":
        mode = "gundam"
    cols, rows = grid
    if cols < 0 or rows < 0:
        raise ValueError(f"invalid tile grid {grid!r}")
    has_tiles = cols * rows > 0 and (cols > 1 or rows > 1)
    if (cols == 0) != (rows == 0):
        raise ValueError(f"invalid tile grid {grid!r}")
    q = tokens_per_side(view_size(mode, geometry), geometry)
    n = q * (q + 1) + 1
    if has_tiles:
        if not MODES[mode].tiled:
            raise ValueError(f"mode {mode!r} has no tiles (got grid {grid!r})")
        qt = tokens_per_side(geometry.tile_size, geometry)
        n += (rows * qt) * (cols * qt + 1)
    return n


def normalise(pixels: np.ndarray, geometry: ViewGeometry = ViewGeometry()) -> np.ndarray:
    """uint8 [..., 3] -> float32 (x/255 - mean)/std, the same float32 operations, in the same order,
    as torchvision's ToTensor (``.float().div(255)``) then Normalize (``.sub_(mean).div_(std)``)."""
    mean = np.asarray(geometry.mean, dtype=np.float32)
    std = np.asarray(geometry.std, dtype=np.float32)
    x = pixels.astype(np.float32)
    x /= np.float32(255)
    x -= mean
    x /= std
    return x


def _pad_color(geometry: ViewGeometry) -> tuple[int, int, int]:
    c = geometry.pad_color
    return (c, c, c) if isinstance(c, int) else tuple(c)


def _as_uint8(image: Image.Image) -> np.ndarray:
    arr = np.asarray(image, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise AssertionError(f"expected an RGB image, got array of shape {arr.shape}")
    return arr


def prepare_image(
    image: Image.Image | str | Path | bytes, mode: str = "auto", geometry: ViewGeometry = ViewGeometry()
) -> PreparedImage:
    """Load (if needed) and preprocess one image for the vision encoder. See the module docstring.

    Raises ImageError for an unusable image, ValueError for an unknown mode or bad tile limits.
    """
    _check_mode(mode)
    check_tile_range(geometry.min_tiles, geometry.max_tiles)
    rgb = load_image(image)  # EXIF transpose + RGB + checks, also for an already opened PIL image
    width, height = rgb.size
    mode = resolve_mode(mode, width, height, geometry)
    spec = MODES[mode]
    size = view_size(mode, geometry)
    tile = geometry.tile_size

    # the global (or only) view
    if spec.resize == "stretch":
        view = rgb.resize((size, size), resample=BICUBIC)
    else:
        view = ImageOps.pad(rgb, (size, size), method=BICUBIC, color=_pad_color(geometry))
    global_view = normalise(_as_uint8(view), geometry)

    # gundam tiles
    grid = (0, 0)
    tiles = np.zeros((0, tile, tile, 3), dtype=np.float32)
    if spec.tiled and (width > tile or height > tile):
        cols, rows = choose_grid(width, height, geometry.min_tiles, geometry.max_tiles, tile)
        if cols > 1 or rows > 1:
            resized = _as_uint8(rgb.resize((tile * cols, tile * rows), resample=BICUBIC))
            # [rows*T, cols*T, 3] -> [rows, T, cols, T, 3] -> [rows, cols, T, T, 3]: raster order
            cut = resized.reshape(rows, tile, cols, tile, 3).transpose(0, 2, 1, 3, 4)
            tiles = normalise(np.ascontiguousarray(cut).reshape(rows * cols, tile, tile, 3), geometry)
            grid = (cols, rows)

    return PreparedImage(
        global_view=global_view,
        tiles=tiles,
        grid=grid,
        original_size=(width, height),
        mode=mode,
        n_tokens=count_image_tokens(mode, grid, geometry),
    )
