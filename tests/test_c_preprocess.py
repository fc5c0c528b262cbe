"""The C preprocessing (native/image/preprocess.c: RGB bytes -> page views, no Python) against the Pillow
references, through the cffi binding: DeepSeek-OCR v1's (tests/reference_preprocess.py) and transformers'
DeepSeek-OCR-2 image processor.

- views: for many image sizes (1x1, odd, very wide/tall, smaller than a tile, up- and downscales) and
  every v1 mode (as view parameters: fit, view size, tile size), the C float views are BIT-IDENTICAL to
  prepare_image's (so the 8-bit pixels before the normalisation are equal too: the normalisation is
  injective), with the same grid; "auto" (gundam's parameters) makes exactly the views of the mode the
  reference resolves it to;
- TP_FIT_PAD_FLOOR: the views of DeepSeek-OCR-2's two modes equal DeepseekOcr2ImageProcessorPil's (the same
  8-bit pixels; the floats within rounding, as it rescales by multiplying with 1/255);
- resize: tp_rgb_resize equals Pillow's Image.resize(BICUBIC) on a sweep of sizes and strides;
- tiling: tp_image_tile_grid equals tiling.choose_grid on a sweep, exact ties included;
- bad input: NULL pointers, zero and absurd sizes, bad strides and parameters are refused with
  TP_ERR_INVALID_ARGUMENT and a message, the same limits as the Python side;
- encode: tp_vision_encode_rgb gives the same image tokens as tp_vision_encode of the reference's float
  views on the tiny llama.cpp-written vision GGUF of ../shared/fixtures.

Pillow 13 resamples vertically first when the height shrinks by more than twice as many pixels as the
width (python-pillow/Pillow#9549); the C code follows it, so exact equality needs Pillow >= 13.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import PIL
import pytest
from PIL import Image

from encoder.images import MAX_PIXELS, ImageError, check_size
from encoder.native import ffi, lib, new_error
from encoder.tiling import MAX_TILES_LIMIT, choose_grid
from reference_preprocess import PreparedImage, ViewGeometry, prepare_image

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
FIXTURE = FIXTURES / "llamacpp-tiny-v1"
FIXTURE_OCR2 = FIXTURES / "llamacpp-tiny-ocr2"
BICUBIC = Image.Resampling.BICUBIC
MODES = ["tiny", "small", "base", "large", "gundam", "auto"]
# DeepSeek-OCR v1's modes as view parameters (tilepass.h): (fit, view size (None: the geometry's global
# size), tiled). "auto" has gundam's parameters: gundam's views are base's for an image within a tile.
MODE_VIEWS = {
    "tiny": (lib.TP_FIT_STRETCH, 512, False),
    "small": (lib.TP_FIT_STRETCH, 640, False),
    "base": (lib.TP_FIT_PAD, None, False),
    "large": (lib.TP_FIT_PAD, 1280, False),
    "gundam": (lib.TP_FIT_PAD, None, True),
    "auto": (lib.TP_FIT_PAD, None, True),
}

pytestmark = pytest.mark.skipif(
    int(PIL.__version__.split(".")[0]) < 13, reason="the C resize follows Pillow >= 13's pass order"
)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def make_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 [H, W, 3]: a smooth page-like gradient with sharp blocks and noise (both clip often)."""
    rng = np.random.default_rng(seed + 1000 * width + height)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255) // max(width, 1), (yy * 255) // max(height, 1), ((xx + yy) * 5) % 256], -1)
    noise = rng.integers(0, 256, (height, width, 3))
    mask = rng.random((height, width, 1)) < 0.3
    blocks = ((xx // 7 + yy // 5) % 2 == 0)[..., None] * 255
    img = np.where(mask, noise, (base + blocks) % 256)
    return np.ascontiguousarray(img.astype(np.uint8))


class RgbImage:
    """A tp_rgb_image over a numpy array (kept alive with it), optionally with padded rows."""

    def __init__(self, pixels: np.ndarray, row_padding: int = 0) -> None:
        h, w, _ = pixels.shape
        if row_padding:
            buf = np.full((h, w * 3 + row_padding), 0xEE, np.uint8)
            buf[:, : w * 3] = pixels.reshape(h, w * 3)
            self.buffer = buf
            stride = w * 3 + row_padding
        else:
            self.buffer = np.ascontiguousarray(pixels)
            stride = 0
        self.struct: Any = ffi.new("tp_rgb_image *")
        self.struct.rgb = ffi.cast("uint8_t *", ffi.from_buffer(self.buffer))
        self.struct.width = w
        self.struct.height = h
        self.struct.stride = stride


def c_params(mode: str, geometry: ViewGeometry = ViewGeometry()) -> Any:
    fit, size, tiled = MODE_VIEWS[mode]
    p = ffi.new("tp_preprocess_params *", lib.tp_preprocess_default_params())
    p.fit = fit
    p.view_size = geometry.global_size if size is None else size
    p.tile_size = geometry.tile_size if tiled else 0
    p.min_tiles = geometry.min_tiles
    p.max_tiles = geometry.max_tiles
    assert isinstance(geometry.pad_color, int)
    p.pad_color = geometry.pad_color
    for c in range(3):
        p.image_mean[c] = geometry.mean[c]
        p.image_std[c] = geometry.std[c]
    return p


def c_page(pixels: np.ndarray, params: Any, row_padding: int = 0) -> tuple[list[np.ndarray], tuple[int, int]]:
    """(views, grid) of the C page: copies of its views [h, w, 3] in page order (tiles, then the
    whole-image view) and its (cols, rows)."""
    img = RgbImage(pixels, row_padding)
    out = ffi.new("tp_page **")
    err = new_error()
    st = lib.tp_page_from_rgb(img.struct, params, out, err)
    assert st == lib.TP_OK, ffi.string(err.message).decode()
    page = out[0]
    try:
        v = lib.tp_page_get_views(page)
        views = []
        for i in range(v.n_views):
            w, h = v.views[i].width, v.views[i].height
            views.append(np.frombuffer(ffi.buffer(v.views[i].pixels, w * h * 3 * 4), np.float32)
                         .reshape(h, w, 3).copy())
        grid = (int(v.grid_cols), int(v.grid_rows))
        if len(views) == 1:
            assert grid == (0, 0)
        else:
            assert grid[0] * grid[1] == len(views) - 1
        return views, grid
    finally:
        lib.tp_page_free(page)


def c_prepare(pixels: np.ndarray, mode: str, geometry: ViewGeometry = ViewGeometry(), row_padding: int = 0):
    """(global_view, tiles, grid) from the C library in a v1 mode; tiles [n, T, T, 3]."""
    views, grid = c_page(pixels, c_params(mode, geometry), row_padding)
    t = geometry.tile_size
    tiles = np.stack(views[:-1]) if len(views) > 1 else np.zeros((0, t, t, 3), np.float32)
    return views[-1], tiles, grid


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def assert_same_as_python(pixels: np.ndarray, mode: str, geometry: ViewGeometry = ViewGeometry(),
                          row_padding: int = 0) -> None:
    ref = prepare_image(Image.fromarray(pixels), mode, geometry)
    gv, tiles, grid = c_prepare(pixels, mode, geometry, row_padding)
    if mode == "auto":
        # the reference resolves auto (gundam over a tile, else base); the C page of gundam's parameters is
        # exactly the C page of the resolved mode
        assert ref.mode in ("gundam", "base")
        rv, rt, rg = c_prepare(pixels, ref.mode, geometry, row_padding)
        assert rg == grid and np.array_equal(bits(rv), bits(gv)) and np.array_equal(bits(rt), bits(tiles))
    else:
        assert ref.mode == mode
    assert grid == ref.grid
    assert gv.shape == ref.global_view.shape
    assert tiles.shape == ref.tiles.shape
    if not np.array_equal(bits(gv), bits(ref.global_view)):
        diff = np.argwhere(bits(gv) != bits(ref.global_view))
        pytest.fail(f"global view differs at {len(diff)} values, first {diff[:3].tolist()}")
    if not np.array_equal(bits(tiles), bits(ref.tiles)):
        diff = np.argwhere(bits(tiles) != bits(ref.tiles))
        pytest.fail(f"tiles differ at {len(diff)} values, first {diff[:3].tolist()}")


# ---------------------------------------------------------------------------------------------
# views equal the Python preprocessing
# ---------------------------------------------------------------------------------------------

SIZES = [
    (1, 1), (2, 3), (3, 2), (7, 5), (31, 17),  # tiny images: large upscales
    (100, 37), (37, 100),
    (511, 512), (512, 512), (639, 640), (640, 640),  # at and below a tile
    (641, 640), (640, 641), (700, 300),  # just over a tile
    (1000, 1000), (1023, 1025), (1024, 1024), (1240, 1754), (1754, 1240), (1920, 1080),
    (1281, 7), (7, 1281), (3001, 40), (40, 3001),  # very wide / tall
    (5000, 2), (2, 5000),  # the padded side rounds to 0 pixels: a view of padding only
    (2480, 3508),  # A4 at 300 dpi: downscales in both directions
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_views_equal_python(size, mode):
    w, h = size
    assert_same_as_python(make_image(w, h), mode)


@pytest.mark.parametrize(
    "geometry",
    [
        ViewGeometry(min_tiles=1, max_tiles=6),  # a 1x1 grid is possible: no tiles
        ViewGeometry(min_tiles=3, max_tiles=12, pad_color=0),
        ViewGeometry(global_size=512, tile_size=256, max_tiles=64, pad_color=255,
                     mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711)),
    ],
    ids=["min1-max6", "min3-max12-pad0", "small-geometry-clip-mean"],
)
@pytest.mark.parametrize("size", [(300, 200), (1000, 1000), (1500, 700), (260, 2000), (2100, 640)])
@pytest.mark.parametrize("mode", ["base", "gundam", "auto", "tiny"])
def test_views_equal_python_other_geometry(geometry, size, mode):
    assert_same_as_python(make_image(*size, seed=3), mode, geometry)


@pytest.mark.parametrize("row_padding", [1, 5, 64])
def test_row_stride(row_padding):
    pixels = make_image(777, 1111, seed=5)
    assert_same_as_python(pixels, "gundam", row_padding=row_padding)
    packed = c_prepare(pixels, "small")[0]
    strided = c_prepare(pixels, "small", row_padding=row_padding)[0]
    assert np.array_equal(bits(packed), bits(strided))


def test_random_sizes_all_modes():
    rng = np.random.default_rng(42)
    for i in range(24):
        if i % 3 == 0:
            w, h = (int(v) for v in rng.integers(1, 64, 2))
        elif i % 3 == 1:
            w, h = (int(v) for v in rng.integers(64, 1400, 2))
        else:
            w, h = int(rng.integers(600, 3000)), int(rng.integers(2, 3000))
        assert_same_as_python(make_image(w, h, seed=i), MODES[i % len(MODES)])


# ---------------------------------------------------------------------------------------------
# the resize on its own, and the tile grid
# ---------------------------------------------------------------------------------------------


def c_resize(pixels: np.ndarray, ow: int, oh: int, row_padding: int = 0) -> np.ndarray:
    img = RgbImage(pixels, row_padding)
    out = np.empty((oh, ow, 3), np.uint8)
    err = new_error()
    st = lib.tp_rgb_resize(img.struct, ow, oh, ffi.cast("uint8_t *", ffi.from_buffer(out)), out.nbytes, err)
    assert st == lib.TP_OK, ffi.string(err.message).decode()
    return out


def test_resize_equals_pillow():
    rng = np.random.default_rng(7)
    cases = [(1, 1, 1, 1), (1, 1, 5, 3), (5, 3, 1, 1), (30, 30, 16, 2), (30, 30, 15, 2), (20, 40, 2, 3),
             (40, 20, 31, 1), (900, 1300, 512, 512), (1300, 900, 512, 512), (64, 64, 64, 63), (64, 64, 63, 64)]
    for i in range(150):
        hi = (40, 400, 2000)[i % 3]
        cases.append(tuple(int(v) for v in rng.integers(1, hi, 4)))  # type: ignore[arg-type]
    for i, (w, h, ow, oh) in enumerate(cases):
        pixels = make_image(w, h, seed=i)
        ref = np.asarray(Image.fromarray(pixels).resize((ow, oh), BICUBIC))
        got = c_resize(pixels, ow, oh, row_padding=i % 4)
        assert np.array_equal(got, ref), f"{w}x{h} -> {ow}x{oh}: max diff {np.abs(got.astype(int) - ref).max()}"


def c_grid(w: int, h: int, lo: int, hi: int, tile: int) -> tuple[int, int]:
    cols = ffi.new("int32_t *")
    rows = ffi.new("int32_t *")
    err = new_error()
    st = lib.tp_image_tile_grid(w, h, lo, hi, tile, cols, rows, err)
    assert st == lib.TP_OK, ffi.string(err.message).decode()
    return int(cols[0]), int(rows[0])


def test_tile_grid_equals_python_sweep():
    limits = [(2, 9), (1, 9), (2, 6), (1, 1), (3, 3), (2, 2), (4, 16), (1, 64), (64, 64), (7, 40)]
    n = 0
    for lo, hi in limits:
        for w in list(range(1, 200, 7)) + [640, 641, 1000, 1240, 1280, 1920, 2560, 4000, 9999, 40000]:
            for h in list(range(1, 200, 11)) + [640, 641, 1000, 1080, 1754, 3000, 40000]:
                for tile in (640, 10):
                    assert c_grid(w, h, lo, hi, tile) == choose_grid(w, h, lo, hi, tile), (w, h, lo, hi, tile)
                    n += 1
    assert n > 10000


def test_tile_grid_exact_ties():
    # 5:4 with exactly two tiles: (1, 2) and (2, 1) are equally far; the later (2, 1) wins only when
    # the image is larger than half the candidate's tile area
    for (w, h) in [(5, 4), (500, 400), (1000, 800), (1250, 1000), (625, 500)]:
        for tile in (640, 300, 10):
            assert c_grid(w, h, 2, 2, tile) == choose_grid(w, h, 2, 2, tile)
    assert c_grid(5, 4, 2, 2, 640) == (1, 2)
    assert c_grid(1250, 1000, 2, 2, 640) == (2, 1)
    # the spec's examples (max 9 tiles)
    assert c_grid(1240, 1754, 2, 9, 640) == (2, 3)
    assert c_grid(1920, 1080, 2, 9, 640) == (4, 2)
    assert c_grid(1920, 1080, 2, 6, 640) == (2, 1)
    assert c_grid(1000, 1000, 2, 9, 640) == (2, 2)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def test_limits_are_the_python_ones():
    assert lib.TP_IMAGE_MAX_PIXELS == MAX_PIXELS
    assert lib.TP_IMAGE_MAX_TILES == MAX_TILES_LIMIT


def page_error(img: Any, params: Any = ffi.NULL) -> tuple[int, str]:
    out = ffi.new("tp_page **")
    err = new_error()
    st = lib.tp_page_from_rgb(img, params, out, err)
    if st == lib.TP_OK:
        lib.tp_page_free(out[0])
    else:
        assert out[0] == ffi.NULL
    return st, ffi.string(err.message).decode()


def raw_image(width: int, height: int, stride: int = 0, data: Any = None) -> Any:
    img = ffi.new("tp_rgb_image *")
    img.rgb = data if data is not None else ffi.cast("uint8_t *", ffi.from_buffer(_tiny))
    img.width = width
    img.height = height
    img.stride = stride
    return img


_tiny = np.zeros(64, np.uint8)


@pytest.mark.parametrize("size", [(0, 10), (10, 0), (0, 0), (-5, 10), (10, -1)])
def test_zero_size_refused(size):
    st, msg = page_error(raw_image(*size))
    assert st == lib.TP_ERR_INVALID_ARGUMENT
    assert "zero size" in msg
    with pytest.raises(ImageError, match="zero size"):
        check_size(size[0], size[1], "x")


@pytest.mark.parametrize("size", [(MAX_PIXELS + 1, 1), (1, MAX_PIXELS + 1), (8000, 5001), (2**31 - 1, 2**31 - 1)])
def test_absurd_size_refused_before_reading(size):
    # the pixel pointer covers 64 bytes only: the size check must come before any read (ASan would see it)
    st, msg = page_error(raw_image(*size))
    assert st == lib.TP_ERR_INVALID_ARGUMENT
    assert "too large" in msg and str(MAX_PIXELS) in msg
    with pytest.raises(ImageError, match="too large"):
        check_size(size[0], size[1], "x")


def test_largest_size_accepted_by_the_check():
    # exactly MAX_PIXELS is allowed on both sides; only the grid (no pixels) is computed here
    check_size(MAX_PIXELS, 1, "x")
    assert c_grid(MAX_PIXELS, 1, 2, 9, 640) == choose_grid(MAX_PIXELS, 1, 2, 9, 640)


def test_null_and_bad_arguments():
    assert page_error(ffi.NULL)[0] == lib.TP_ERR_INVALID_ARGUMENT
    st, msg = page_error(raw_image(4, 4, data=ffi.NULL))
    assert st == lib.TP_ERR_INVALID_ARGUMENT and "NULL" in msg
    st, msg = page_error(raw_image(4, 4, stride=11))
    assert st == lib.TP_ERR_INVALID_ARGUMENT and "stride" in msg
    st, msg = page_error(raw_image(2, 2**20, stride=2**62))
    assert st == lib.TP_ERR_INVALID_ARGUMENT and "stride" in msg
    err = new_error()
    assert lib.tp_page_from_rgb(raw_image(2, 2), ffi.NULL, ffi.NULL, err) == lib.TP_ERR_INVALID_ARGUMENT
    lib.tp_page_free(ffi.NULL)
    assert lib.tp_page_get_views(ffi.NULL) == ffi.NULL


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("fit", 4, "fit"), ("fit", -1, "fit"), ("tile_rule", 2, "tile rule"), ("tile_rule", -1, "tile rule"),
        ("factor", 0, "native fit"), ("max_pixels", 10**9, "native fit"),
        ("min_tiles", 0, "tile limits"), ("max_tiles", 65, "tile limits"), ("max_tiles", 1, "tile limits"),
        ("view_size", 0, "view size"), ("view_size", 4097, "view size"), ("tile_size", -1, "tile size"),
        ("tile_size", 4097, "tile size"), ("pad_color", 256, "pad"), ("pad_color", -1, "pad"),
    ],
)
def test_bad_params_refused(field, value, words):
    p = ffi.new("tp_preprocess_params *", lib.tp_preprocess_default_params())
    if field in ("factor", "max_pixels"):  # the native fit's own parameters
        p.fit = lib.TP_FIT_NATIVE
    setattr(p, field, value)
    st, msg = page_error(raw_image(4, 4), p)
    assert st == lib.TP_ERR_INVALID_ARGUMENT
    assert words in msg


def test_bad_mean_std_refused():
    for field, value in [("image_std", 0.0), ("image_std", float("nan")), ("image_mean", float("inf"))]:
        p = ffi.new("tp_preprocess_params *", lib.tp_preprocess_default_params())
        getattr(p, field)[1] = value
        st, msg = page_error(raw_image(4, 4), p)
        assert st == lib.TP_ERR_INVALID_ARGUMENT and "std" in msg


def test_default_params_are_deepseek_ocr_v1():
    # gundam: the padded global view plus tiles
    p = lib.tp_preprocess_default_params()
    g = ViewGeometry()
    assert p.fit == lib.TP_FIT_PAD
    assert (p.view_size, p.tile_size, p.min_tiles, p.max_tiles, p.pad_color) == (
        g.global_size, g.tile_size, g.min_tiles, g.max_tiles, g.pad_color)
    assert tuple(p.image_mean) == g.mean and tuple(p.image_std) == g.std


def test_tile_size_zero_means_no_tiles():
    # gundam's parameters with tile_size 0 are base's, whatever the image size
    pixels = make_image(1500, 700, seed=11)
    p = c_params("gundam")
    p.tile_size = 0
    views, grid = c_page(pixels, p)
    base, tiles, base_grid = c_prepare(pixels, "base")
    assert len(views) == 1 and grid == (0, 0) == base_grid
    assert np.array_equal(bits(views[0]), bits(base))


def test_resize_and_grid_bad_arguments():
    err = new_error()
    out = np.empty(12, np.uint8)
    dst = ffi.cast("uint8_t *", ffi.from_buffer(out))
    assert lib.tp_rgb_resize(raw_image(2, 2), 2, 2, dst, 11, err) == lib.TP_ERR_INVALID_ARGUMENT  # 12 needed
    assert "need 12" in ffi.string(err.message).decode()
    assert lib.tp_rgb_resize(raw_image(2, 2), 2, 2, ffi.NULL, 12, err) == lib.TP_ERR_INVALID_ARGUMENT
    assert lib.tp_rgb_resize(raw_image(2, 2), 0, 2, dst, 12, err) == lib.TP_ERR_INVALID_ARGUMENT
    assert lib.tp_rgb_resize(raw_image(2, 2), 8000, 5001, dst, 12, err) == lib.TP_ERR_INVALID_ARGUMENT
    assert lib.tp_rgb_resize(raw_image(0, 2), 2, 2, dst, 12, err) == lib.TP_ERR_INVALID_ARGUMENT
    assert lib.tp_rgb_resize(ffi.NULL, 2, 2, dst, 12, err) == lib.TP_ERR_INVALID_ARGUMENT
    assert lib.tp_rgb_resize(raw_image(2, 2), 2, 2, dst, 12, ffi.NULL) == lib.TP_OK  # err is optional
    c, r = ffi.new("int32_t *"), ffi.new("int32_t *")
    assert lib.tp_image_tile_grid(0, 5, 2, 9, 640, c, r, err) == lib.TP_ERR_INVALID_ARGUMENT
    assert lib.tp_image_tile_grid(5, 5, 0, 9, 640, c, r, err) == lib.TP_ERR_INVALID_ARGUMENT
    assert lib.tp_image_tile_grid(5, 5, 2, 65, 640, c, r, err) == lib.TP_ERR_INVALID_ARGUMENT
    assert lib.tp_image_tile_grid(5, 5, 2, 9, 0, c, r, err) == lib.TP_ERR_INVALID_ARGUMENT
    assert lib.tp_image_tile_grid(5, 5, 2, 9, 640, ffi.NULL, r, err) == lib.TP_ERR_INVALID_ARGUMENT


# ---------------------------------------------------------------------------------------------
# RGB encode == float-view encode
# ---------------------------------------------------------------------------------------------

needs_fixture = pytest.mark.skipif(not (FIXTURE / "mmproj-f32.gguf").exists(), reason="fixture missing")


def encode_rgb(model: Any, images: list[np.ndarray], mode: str | None) -> tuple[int, list[np.ndarray], str]:
    rgb = [RgbImage(p) for p in images]
    arr = ffi.new("tp_rgb_image[]", len(rgb))
    for i, r in enumerate(rgb):
        arr[i] = r.struct[0]
    params = ffi.NULL
    if mode is not None:
        params = ffi.new("tp_preprocess_params *")
        assert lib.tp_vision_preprocess_params(model, mode.encode(), params) == lib.TP_OK
    toks = ffi.new("float *[]", len(rgb))
    ns = ffi.new("int64_t[]", len(rgb))
    err = new_error()
    st = lib.tp_vision_encode_rgb(model, arr, len(rgb), params, toks, ns, err)
    out = []
    info = ffi.new("tp_vision_info *")
    lib.tp_vision_get_info(model, info)
    for i in range(len(rgb)):
        if st == lib.TP_OK:
            n = int(ns[i])
            out.append(np.frombuffer(ffi.buffer(toks[i], n * info.n_embd * 4), np.float32)
                       .reshape(n, info.n_embd).copy())
            lib.tp_vision_tokens_free(toks[i])
        else:
            assert toks[i] == ffi.NULL and ns[i] == 0
    return st, out, ffi.string(err.message).decode()


def encode_views(model: Any, refs: list[PreparedImage]) -> list[np.ndarray]:
    """tp_vision_encode of pages made of the reference's float views (tiles, then the global view)."""
    info = ffi.new("tp_vision_info *")
    lib.tp_vision_get_info(model, info)
    keep: list[Any] = []
    pages = ffi.new("tp_page_views[]", len(refs))
    outs = [np.empty(0, np.float32)] * len(refs)
    ptrs = ffi.new("float *[]", len(refs))
    for i, ref in enumerate(refs):
        arrays = [np.ascontiguousarray(t) for t in ref.tiles] + [np.ascontiguousarray(ref.global_view)]
        views = ffi.new("tp_image_view[]", len(arrays))
        for j, a in enumerate(arrays):
            views[j].pixels = ffi.cast("const float *", ffi.from_buffer(a))
            views[j].width, views[j].height = a.shape[1], a.shape[0]
        keep += [arrays, views]
        pages[i].views, pages[i].n_views = views, len(arrays)
        pages[i].grid_cols, pages[i].grid_rows = ref.grid
        n = lib.tp_vision_page_n_tokens(model, ffi.addressof(pages, i))
        assert n == ref.n_tokens
        outs[i] = np.empty((n, info.n_embd), np.float32)
        ptrs[i] = ffi.cast("float *", ffi.from_buffer(outs[i]))
    err = new_error()
    assert lib.tp_vision_encode(model, pages, len(refs), ptrs, err) == lib.TP_OK, ffi.string(err.message).decode()
    return outs


@needs_fixture
def test_rgb_encode_equals_float_view_encode():
    from encoder.vision import VisionEncoder

    enc = VisionEncoder(FIXTURE / "mmproj-f32.gguf", n_threads=2)
    page = np.asarray(Image.open(FIXTURE / "page.png").convert("RGB"))  # 900x1300: gundam 2x3
    small = make_image(300, 170, seed=9)
    for mode in ["gundam", "tiny", "base"]:
        refs = [prepare_image(Image.fromarray(page), mode), prepare_image(Image.fromarray(small), mode)]
        want = encode_views(enc._model, refs)
        st, got, msg = encode_rgb(enc._model, [page, small], mode)
        assert st == lib.TP_OK, msg
        for g, w in zip(got, want):
            assert g.shape == w.shape
            assert np.array_equal(g, w), f"{mode}: max diff {np.abs(g - w).max()}"
    # params NULL = the model's default mode, gundam
    st, got, msg = encode_rgb(enc._model, [page], None)
    assert st == lib.TP_OK, msg
    assert got[0].shape[0] == 903  # 2x3 tiles + global view + separator (fixture README)
    assert np.array_equal(got[0], encode_views(enc._model, [prepare_image(Image.fromarray(page), "gundam")])[0])


@needs_fixture
def test_rgb_encode_failure_leaves_nothing():
    from encoder.vision import VisionEncoder

    enc = VisionEncoder(FIXTURE / "mmproj-f32.gguf", n_threads=1)
    good = make_image(50, 40)
    bad = np.zeros((1, 1, 3), np.uint8)
    rgb = [RgbImage(good), RgbImage(bad)]
    arr = ffi.new("tp_rgb_image[]", 2)
    arr[0] = rgb[0].struct[0]
    arr[1] = rgb[1].struct[0]
    arr[1].width = 0
    toks = ffi.new("float *[]", 2)
    ns = ffi.new("int64_t[]", 2)
    err = new_error()
    st = lib.tp_vision_encode_rgb(enc._model, arr, 2, ffi.NULL, toks, ns, err)
    assert st == lib.TP_ERR_INVALID_ARGUMENT
    msg = ffi.string(err.message).decode()
    assert "image 1" in msg and "zero size" in msg
    assert toks[0] == ffi.NULL and toks[1] == ffi.NULL and ns[0] == 0 and ns[1] == 0
    assert lib.tp_vision_encode_rgb(ffi.NULL, arr, 1, ffi.NULL, toks, ns, err) == lib.TP_ERR_INVALID_ARGUMENT
    assert lib.tp_vision_encode_rgb(enc._model, arr, 0, ffi.NULL, toks, ns, err) == lib.TP_ERR_INVALID_ARGUMENT
    lib.tp_vision_tokens_free(ffi.NULL)


# ---------------------------------------------------------------------------------------------
# TP_FIT_PAD_FLOOR: DeepSeek-OCR-2's modes against transformers' image processor
# ---------------------------------------------------------------------------------------------

OCR2_SIZES = [
    (900, 1300), (1300, 900),  # the fixture page and its transpose: 2x3 / 3x2 tiles
    (768, 768), (769, 100), (100, 769),  # at and just over a tile
    (500, 333), (333, 777), (1001, 1024), (1024, 1001),  # odd margins: floored offsets
    (2000, 1000), (3000, 40), (40, 3000), (1919, 1081), (5, 7), (1, 1),
]


def ocr2_params(crop_to_patches: bool) -> Any:
    """DeepSeek-OCR-2's modes as view parameters: gundam {PAD_FLOOR, 1024, tiles 768, 2..6}, base
    {PAD_FLOOR, 768, no tiles}."""
    p = ffi.new("tp_preprocess_params *", lib.tp_preprocess_default_params())
    p.fit = lib.TP_FIT_PAD_FLOOR
    p.view_size = 1024 if crop_to_patches else 768
    p.tile_size = 768 if crop_to_patches else 0
    p.min_tiles, p.max_tiles = 2, 6
    return p


@pytest.mark.parametrize("crop_to_patches", [True, False], ids=["gundam", "base"])
def test_pad_floor_equals_transformers_deepseek_ocr2(crop_to_patches):
    proc_mod = pytest.importorskip("transformers.models.deepseek_ocr2.image_processing_pil_deepseek_ocr2")
    proc = proc_mod.DeepseekOcr2ImageProcessorPil()
    max_diff = 0.0
    for i, (w, h) in enumerate(OCR2_SIZES):
        pixels = make_image(w, h, seed=i)
        out = proc(images=[Image.fromarray(pixels)], crop_to_patches=crop_to_patches)
        want = [np.asarray(t).transpose(1, 2, 0) for t in out.get("pixel_values_local", [])]
        assert int(out["num_local_patches"][0]) == len(want)
        want.append(np.asarray(out["pixel_values"][0]).transpose(1, 2, 0))  # CHW -> HWC, the global view last
        got, grid = c_page(pixels, ocr2_params(crop_to_patches), row_padding=i % 3)
        assert [g.shape for g in got] == [x.shape for x in want], (w, h)
        if len(got) > 1:
            assert grid == choose_grid(w, h, 2, 6, 768)
        for g, x in zip(got, want):
            # the same 8-bit pixels: (v * 0.5 + 0.5) * 255 recovers the level from either side
            level_g = np.rint((g.astype(np.float64) * 0.5 + 0.5) * 255)
            level_x = np.rint((x.astype(np.float64) * 0.5 + 0.5) * 255)
            assert np.array_equal(level_g, level_x), f"{w}x{h}: {np.count_nonzero(level_g != level_x)} pixels differ"
            # the floats within rounding: transformers rescales by multiplying with 1/255, we divide by 255
            d = float(np.abs(g.astype(np.float64) - x).max())
            assert d <= 2e-7, f"{w}x{h}: max difference {d}"
            max_diff = max(max_diff, d)
    print(f"TP_FIT_PAD_FLOOR vs DeepseekOcr2ImageProcessorPil (crop_to_patches={crop_to_patches}): "
          f"max |difference| {max_diff:.3g}")


@pytest.mark.skipif(not (FIXTURE_OCR2 / "mmproj-f32.gguf").exists(), reason="fixture missing")
def test_ocr2_modes_are_pad_floor():
    from encoder.vision import VisionEncoder

    enc = VisionEncoder(FIXTURE_OCR2 / "mmproj-f32.gguf", n_threads=1)
    assert enc.modes == ("gundam", "base")
    for mode, crop in [("gundam", True), ("base", False)]:
        p = ffi.new("tp_preprocess_params *")
        assert lib.tp_vision_preprocess_params(enc._model, mode.encode(), p) == lib.TP_OK
        want = ocr2_params(crop)
        assert (p.fit, p.view_size, p.tile_size, p.min_tiles, p.max_tiles, p.pad_color) == (
            want.fit, want.view_size, want.tile_size, want.min_tiles, want.max_tiles, want.pad_color)
        assert tuple(p.image_mean) == tuple(want.image_mean) and tuple(p.image_std) == tuple(want.image_std)
    page = np.asarray(Image.open(FIXTURE_OCR2 / "page.png").convert("RGB"))
    st, got, msg = encode_rgb(enc._model, [page], None)  # the default mode: 2x3 tiles, 1121 tokens (README)
    assert st == lib.TP_OK, msg
    assert got[0].shape == (1121, enc.n_embd)
    st, got, msg = encode_rgb(enc._model, [page], "base")
    assert st == lib.TP_OK, msg
    assert got[0].shape == (145, enc.n_embd)
