"""The Pillow reference of DeepSeek-OCR v1 preprocessing (tests/reference_preprocess.py, what the C preprocessing
is checked against in test_c_preprocess.py) against the official pipeline.

The references here never call our module:
- the pixel pipeline is the official DeepSeek-OCR code's PIL steps (`infer` + `dynamic_preprocess` +
  `BasicImageTransform`), written out below with the same PIL calls (spec deepseek-ocr-v1.md §6);
  ToTensor + Normalize are done with torch operations (as torchvision does them) when torch is
  importable, else with the same numpy float32 formula;
- the tiling choice is transformers 5.23's `get_optimal_tiled_canvas` from
  `models/unlimited_ocr/image_processing_unlimited_ocr.py`, compiled from that file's source (the
  module itself imports torchvision, which is not installed), plus the official code's set-based
  `find_closest_aspect_ratio`;
- token counts come from transformers' `UnlimitedOcrProcessor.replace_image_token`.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import math
import struct
import types
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from reference_preprocess import (
    MAX_PIXELS,
    ImageError,
    PreparedImage,
    ViewGeometry,
    choose_grid,
    count_image_tokens,
    load_image,
    prepare_image,
)

FIXTURE_PAGE = (Path(__file__).resolve().parents[1] / "../shared/fixtures/llamacpp-tiny-v1/page.png")
MODES = ["tiny", "small", "base", "large", "gundam"]

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


# ---------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------


def _transformers_file(rel: str) -> Path:
    spec = importlib.util.find_spec("transformers")
    assert spec is not None and spec.origin is not None, "transformers is not installed"
    return Path(spec.origin).parent / rel


@lru_cache(maxsize=1)
def hf_tiling_functions() -> types.SimpleNamespace:
    """get_optimal_tiled_canvas + get_all_supported_aspect_ratios, compiled from the unlimited_ocr
    image processor's source (importing that module needs torchvision)."""
    path = _transformers_file("models/unlimited_ocr/image_processing_unlimited_ocr.py")
    tree = ast.parse(path.read_text())
    wanted = {"get_optimal_tiled_canvas", "get_all_supported_aspect_ratios"}
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    assert {f.name for f in funcs} == wanted
    module = ast.Module(body=funcs, type_ignores=[])
    ns: dict = {"lru_cache": lru_cache}
    exec(compile(module, str(path), "exec"), ns)
    return types.SimpleNamespace(**{name: ns[name] for name in wanted})


def hf_grid(width, height, min_tiles, max_tiles, tile=640):
    return tuple(hf_tiling_functions().get_optimal_tiled_canvas((height, width), (tile, tile), min_tiles, max_tiles))


def official_find_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size):
    # deepseek-ai/DeepSeek-OCR, process/image_process.py / modeling_deepseekocr.py
    best_ratio_diff = float("inf")
    best_ratio = (1, 1)
    area = width * height
    for ratio in target_ratios:
        target_aspect_ratio = ratio[0] / ratio[1]
        ratio_diff = abs(aspect_ratio - target_aspect_ratio)
        if ratio_diff < best_ratio_diff:
            best_ratio_diff = ratio_diff
            best_ratio = ratio
        elif ratio_diff == best_ratio_diff:
            if area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
                best_ratio = ratio
    return best_ratio


def official_grid(width, height, min_num=2, max_num=9, image_size=640):
    aspect_ratio = width / height
    target_ratios = set(
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if i * j <= max_num and i * j >= min_num
    )
    target_ratios = sorted(target_ratios, key=lambda x: x[0] * x[1])
    return official_find_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size)


def official_dynamic_preprocess(image, min_num=2, max_num=9, image_size=640):
    orig_width, orig_height = image.size
    target_aspect_ratio = official_grid(orig_width, orig_height, min_num, max_num, image_size)
    target_width = image_size * target_aspect_ratio[0]
    target_height = image_size * target_aspect_ratio[1]
    blocks = target_aspect_ratio[0] * target_aspect_ratio[1]
    resized_img = image.resize((target_width, target_height))
    processed_images = []
    for i in range(blocks):
        box = (
            (i % (target_width // image_size)) * image_size,
            (i // (target_width // image_size)) * image_size,
            ((i % (target_width // image_size)) + 1) * image_size,
            ((i // (target_width // image_size)) + 1) * image_size,
        )
        processed_images.append(resized_img.crop(box))
    return processed_images, target_aspect_ratio


def reference_transform(pil_image, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> np.ndarray:
    """torchvision ToTensor + Normalize, returned HWC float32."""
    arr = np.array(pil_image, np.uint8, copy=True)
    if torch is not None:
        t = torch.from_numpy(arr).view(pil_image.size[1], pil_image.size[0], 3).permute(2, 0, 1).contiguous()
        t = t.to(dtype=torch.float32).div(255)
        m = torch.as_tensor(mean, dtype=t.dtype).view(-1, 1, 1)
        s = torch.as_tensor(std, dtype=t.dtype).view(-1, 1, 1)
        t = t.sub_(m).div_(s)
        return t.permute(1, 2, 0).numpy()
    x = arr.astype(np.float32) / np.float32(255)  # pragma: no cover
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)  # pragma: no cover


# official mode table: (base_size, image_size, crop_mode)
OFFICIAL_MODES = {
    "tiny": (512, 512, False),
    "small": (640, 640, False),
    "base": (1024, 1024, False),
    "large": (1280, 1280, False),
    "gundam": (1024, 640, True),
}


def reference_pipeline(source, mode, min_num=2, max_num=9):
    """The official DeepSeek-OCR infer() preprocessing for one image, float32 before its bf16 cast.

    Returns (global_view HWC, tiles [N, T, T, 3], (cols, rows) as images_spatial_crop, n_tokens)."""
    if isinstance(source, Image.Image):
        image = source
    else:
        image = Image.open(source)
    image = ImageOps.exif_transpose(image)
    image = image.convert("RGB")
    mean = (0.5, 0.5, 0.5)
    color = tuple(int(x * 255) for x in mean)
    patch_size, downsample_ratio = 16, 4
    base_size, image_size, crop_mode = OFFICIAL_MODES[mode]
    tiles = []
    if crop_mode:
        if image.size[0] <= 640 and image.size[1] <= 640:
            crop_ratio = [1, 1]
            images_crop_raw = []
        else:
            images_crop_raw, crop_ratio = official_dynamic_preprocess(image, min_num, max_num, image_size)
        global_view = ImageOps.pad(image, (base_size, base_size), color=color)
        width_crop_num, height_crop_num = crop_ratio
        if width_crop_num > 1 or height_crop_num > 1:
            tiles = [reference_transform(t) for t in images_crop_raw]
        num_queries = math.ceil((image_size // patch_size) / downsample_ratio)
        num_queries_base = math.ceil((base_size // patch_size) / downsample_ratio)
        n_tokens = (num_queries_base + 1) * num_queries_base + 1
        if width_crop_num > 1 or height_crop_num > 1:
            n_tokens += (num_queries * width_crop_num + 1) * (num_queries * height_crop_num)
    else:
        crop_ratio = [1, 1]
        if image_size <= 640:
            image = image.resize((image_size, image_size))
        global_view = ImageOps.pad(image, (image_size, image_size), color=color)
        num_queries = math.ceil((image_size // patch_size) / downsample_ratio)
        n_tokens = (num_queries + 1) * num_queries + 1
    g = reference_transform(global_view)
    t = np.stack(tiles) if tiles else np.zeros((0, 640, 640, 3), np.float32)
    return g, t, tuple(crop_ratio), n_tokens


@lru_cache(maxsize=1)
def hf_replace_image_token():
    """UnlimitedOcrProcessor.replace_image_token compiled from its source (importing the processor
    pulls in most of transformers: seconds)."""
    path = _transformers_file("models/unlimited_ocr/processing_unlimited_ocr.py")
    tree = ast.parse(path.read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "UnlimitedOcrProcessor"]
    (fn,) = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "replace_image_token"]
    fn.returns = None
    for a in fn.args.args + fn.args.kwonlyargs:
        a.annotation = None
    ns: dict = {"math": math}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(path), "exec"), ns)
    return ns["replace_image_token"]


def hf_token_count(grid, n_local, size=1024, tile=640):
    """transformers' UnlimitedOcrProcessor.replace_image_token, without a tokenizer."""
    proc = types.SimpleNamespace(patch_size=16, downsample_ratio=4, image_token="<image>")
    proc.image_processor = types.SimpleNamespace(size={"height": size, "width": size}, tile_size=tile)
    text = hf_replace_image_token()(
        proc, {"patches_grid": [list(grid)], "num_local_patches": [n_local]}, 0, size={"height": size, "width": size}
    )
    return len(text) // len("<image>")


# ---------------------------------------------------------------------------------------------
# test images
# ---------------------------------------------------------------------------------------------


def _rgb_pattern(width, height, seed):
    """A smooth gradient with sharp edges and noise: bicubic differences would show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 255 // max(width - 1, 1)).astype(np.int32)
    g = (y * 255 // max(height - 1, 1)).astype(np.int32)
    b = (((x // 7) + (y // 5)) % 2 * 200).astype(np.int32)
    arr = np.stack([r, g, b], axis=-1) + rng.integers(-30, 31, size=(height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    files = {}

    def save(name, img, fmt="PNG", **kw):
        p = d / name
        if fmt == "PNG":
            kw.setdefault("compress_level", 1)  # fast to write
        img.save(p, fmt, **kw)
        files[name] = p

    save("landscape_1237x801.png", _rgb_pattern(1237, 801, 1))  # odd padding: round() centring
    save("portrait_700x1901.png", _rgb_pattern(700, 1901, 2))
    save("small_333x517.png", _rgb_pattern(333, 517, 3))  # below a tile: no gundam tiles
    save("edge_641x640.png", _rgb_pattern(641, 640, 4))  # one pixel over a tile
    save("tie_1280x1024.png", _rgb_pattern(1280, 1024, 5))  # exact aspect tie, (2,2) vs (3,2)
    save("thin_3x2000.png", _rgb_pattern(3, 2000, 6))  # extreme aspect ratio
    base = _rgb_pattern(900, 620, 7)
    rgba = base.copy()
    rgba.putalpha(Image.fromarray(np.tile((np.arange(900) % 256).astype(np.uint8)[None, :], (620, 1))))
    save("rgba_900x620.png", rgba)
    save("gray_L_820x1100.png", _rgb_pattern(820, 1100, 8).convert("L"))
    save("palette_P_1000x700.png", _rgb_pattern(1000, 700, 9).convert("P", palette=Image.Palette.ADAPTIVE))
    save("gray16_700x900.png", Image.fromarray((np.arange(700 * 900, dtype=np.uint16) % 65535).reshape(900, 700)))
    save("cmyk_800x650.jpg", _rgb_pattern(800, 650, 10).convert("CMYK"), "JPEG", quality=90)
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        save(f"exif{orientation}_1100x700.jpg", _rgb_pattern(1100, 700, 11), "JPEG", exif=exif, quality=92)
    files["page.png"] = FIXTURE_PAGE
    return files


ALL_IMAGES = [
    "landscape_1237x801.png",
    "portrait_700x1901.png",
    "small_333x517.png",
    "edge_641x640.png",
    "tie_1280x1024.png",
    "thin_3x2000.png",
    "rgba_900x620.png",
    "gray_L_820x1100.png",
    "palette_P_1000x700.png",
    "gray16_700x900.png",
    "cmyk_800x650.jpg",
    "exif3_1100x700.jpg",
    "exif6_1100x700.jpg",
    "exif8_1100x700.jpg",
    "page.png",
]


def _assert_same(ours: PreparedImage, ref, mode):
    g, t, crop_ratio, n_tokens = ref
    assert ours.global_view.dtype == np.float32 and ours.tiles.dtype == np.float32
    assert ours.global_view.shape == g.shape
    # bit-identical, not merely close
    assert np.array_equal(ours.global_view, g), f"{mode}: global view differs, max {np.abs(ours.global_view - g).max()}"
    assert ours.tiles.shape == t.shape, (ours.tiles.shape, t.shape)
    assert np.array_equal(ours.tiles, t), f"{mode}: tiles differ"
    if t.shape[0]:
        assert ours.grid == crop_ratio
    else:
        assert ours.grid == (0, 0)
    assert ours.n_tokens == n_tokens


# ---------------------------------------------------------------------------------------------
# pixels
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_pixels_equal_reference_every_mode(image_files, name):
    path = image_files[name]
    ours = {}
    for mode in MODES:
        ours[mode] = prepare_image(path, mode)
        assert ours[mode].mode == mode
        _assert_same(ours[mode], reference_pipeline(path, mode), mode)
    # auto = gundam above a tile, base otherwise; the same output as that mode
    auto = prepare_image(path, "auto")
    w, h = auto.original_size
    expected = ours["gundam" if (w > 640 or h > 640) else "base"]
    assert auto.mode == expected.mode
    assert np.array_equal(auto.global_view, expected.global_view) and np.array_equal(auto.tiles, expected.tiles)
    assert (auto.grid, auto.n_tokens) == (expected.grid, expected.n_tokens)


def test_page_fixture_gundam_matches_reference_npz():
    p = prepare_image(FIXTURE_PAGE, "gundam")
    assert p.original_size == (900, 1300)
    assert p.grid == (2, 3) and p.tiles.shape == (6, 640, 640, 3) and p.n_tokens == 903
    ref = np.load(Path(FIXTURE_PAGE).parent / "reference.npz")
    for mode in ("tiny", "base", "gundam"):
        n = prepare_image(FIXTURE_PAGE, mode).n_tokens
        assert n == ref[f"features_{mode}"].shape[0]
        assert int(ref[f"input_len_{mode}"]) == 1 + n + len(ref["prompt_text_ids"])  # BOS + image + prompt


@pytest.mark.parametrize("max_tiles,min_tiles", [(6, 2), (9, 1), (4, 4)])
def test_pixels_equal_reference_other_tile_limits(image_files, max_tiles, min_tiles):
    geo = ViewGeometry(min_tiles=min_tiles, max_tiles=max_tiles)
    for name in ("landscape_1237x801.png", "page.png"):
        path = image_files[name]
        _assert_same(prepare_image(path, "gundam", geo), reference_pipeline(path, "gundam", min_tiles, max_tiles), name)


def test_min_tiles_one_grid_1x1_means_no_tiles():
    # 700x650 with min 1: (1, 1) is the closest grid; the official code then adds no local views
    img = _rgb_pattern(700, 650, 12)
    geo = ViewGeometry(min_tiles=1, max_tiles=9)
    assert choose_grid(700, 650, 1, 9, 640) == (1, 1)
    p = prepare_image(img, "gundam", geo)
    assert p.grid == (0, 0) and p.tiles.shape[0] == 0 and p.n_tokens == 273
    _assert_same(p, reference_pipeline(img, "gundam", 1, 9), "gundam")


def test_pil_image_input_equals_path_input(image_files):
    for name in ("rgba_900x620.png", "exif6_1100x700.jpg", "palette_P_1000x700.png"):
        path = image_files[name]
        a = prepare_image(path, "gundam")
        with Image.open(path) as im:
            b = prepare_image(im, "gundam")
        c = prepare_image(path.read_bytes(), "gundam")
        for other in (b, c):
            assert np.array_equal(a.global_view, other.global_view) and np.array_equal(a.tiles, other.tiles)
            assert (a.grid, a.original_size, a.n_tokens) == (other.grid, other.original_size, other.n_tokens)


def test_normalisation_values():
    p = prepare_image(Image.new("RGB", (100, 80), (0, 255, 127)), "small")
    assert p.global_view.dtype == np.float32 and p.global_view.flags["C_CONTIGUOUS"]
    px = p.global_view[40, 50]
    assert px[0] == -1.0 and px[1] == 1.0
    assert px[2] == np.float32((np.float32(127) / np.float32(255) - np.float32(0.5)) / np.float32(0.5))
    # the pad colour 127 in a padded mode
    q = prepare_image(Image.new("RGB", (200, 100), (255, 255, 255)), "base")
    assert np.all(q.global_view[0, 0] == px[2]) and np.all(q.global_view[512, 512] == 1.0)


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_moves_pixels(orientation):
    """Independent of ImageOps: the decoded (untransposed) pixels rearranged with numpy."""
    src = _rgb_pattern(160, 90, 13)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    src.save(buf, "JPEG", exif=exif, quality=95)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as raw:
        a = np.asarray(raw.convert("RGB"))
    expected = {
        2: a[:, ::-1],
        3: a[::-1, ::-1],
        4: a[::-1, :],
        5: a.transpose(1, 0, 2),
        6: np.rot90(a, k=-1),  # rotate 90 degrees clockwise
        7: a[::-1, ::-1].transpose(1, 0, 2),
        8: np.rot90(a, k=1),
    }[orientation]
    loaded = load_image(data)
    assert loaded.mode == "RGB"
    assert np.array_equal(np.asarray(loaded), expected)
    p = prepare_image(data, "tiny")
    assert p.original_size == (expected.shape[1], expected.shape[0])


# ---------------------------------------------------------------------------------------------
# tiling choice
# ---------------------------------------------------------------------------------------------


def test_spec_examples():
    assert choose_grid(1240, 1754, 2, 9, 640) == (2, 3)
    assert count_image_tokens("gundam", (2, 3), ViewGeometry()) == 903
    assert choose_grid(1920, 1080, 2, 9, 640) == (4, 2)
    assert count_image_tokens("gundam", (4, 2), ViewGeometry()) == 1093
    assert choose_grid(1920, 1080, 2, 6, 640) == (2, 1)
    assert choose_grid(1000, 1000, 2, 9, 640) == (2, 2)
    # through prepare_image, with shapes
    p = prepare_image(Image.new("RGB", (1240, 1754), (10, 20, 30)), "gundam")
    assert p.grid == (2, 3) and p.tiles.shape == (6, 640, 640, 3) and p.n_tokens == 903
    p = prepare_image(Image.new("RGB", (1920, 1080)), "gundam", ViewGeometry(max_tiles=6))
    assert p.grid == (2, 1) and p.tiles.shape == (2, 640, 640, 3)
    p = prepare_image(Image.new("RGB", (1000, 1000)), "auto")
    assert p.mode == "gundam" and p.grid == (2, 2)


def test_tiling_sweep_200_random_sizes():
    rng = np.random.default_rng(20260822)
    sizes = rng.integers(100, 4001, size=(200, 2))
    for min_tiles, max_tiles in [(2, 9), (2, 6), (1, 9), (2, 32), (3, 12)]:
        for w, h in sizes.tolist():
            ours = choose_grid(w, h, min_tiles, max_tiles, 640)
            assert ours == hf_grid(w, h, min_tiles, max_tiles), (w, h, min_tiles, max_tiles)
            assert ours == official_grid(w, h, min_tiles, max_tiles), (w, h, min_tiles, max_tiles)


def test_tiling_exact_ties():
    """Sizes whose aspect ratio lies exactly half-way between two candidate ratios, on both sides of
    the area threshold of the tie rule."""
    for min_tiles, max_tiles in [(2, 9), (2, 6), (1, 9)]:
        grids = hf_tiling_functions().get_all_supported_aspect_ratios(min_tiles, max_tiles)
        ratios = sorted({(c, r) for c, r in grids}, key=lambda g: g[0] / g[1])
        n_ties = 0
        for (c1, r1), (c2, r2) in zip(ratios, ratios[1:]):
            # midpoint (c1/r1 + c2/r2) / 2 = num / den
            num, den = c1 * r2 + c2 * r1, 2 * r1 * r2
            for k in (1, 2, 3, 5, 8, 13, 40, 100, 400):
                w, h = num * k, den * k
                if not (1 <= w <= 20000 and 1 <= h <= 20000):
                    continue
                ours = choose_grid(w, h, min_tiles, max_tiles, 640)
                assert ours == hf_grid(w, h, min_tiles, max_tiles), (w, h, min_tiles, max_tiles)
                assert ours == official_grid(w, h, min_tiles, max_tiles), (w, h, min_tiles, max_tiles)
                n_ties += 1
        assert n_ties > 50
    # the two sides of the threshold for 5:4, (2, 2) vs (3, 2): area > 0.5 * 640^2 * 6 = 1228800
    assert choose_grid(1000, 800, 2, 9, 640) == (2, 2)
    assert choose_grid(1280, 1024, 2, 9, 640) == (3, 2)


# ---------------------------------------------------------------------------------------------
# token counts
# ---------------------------------------------------------------------------------------------


def test_token_counts_per_mode():
    geo = ViewGeometry()
    assert [count_image_tokens(m, (0, 0), geo) for m in MODES] == [73, 111, 273, 421, 273]
    assert count_image_tokens("gundam", (1, 1), geo) == 273  # transformers' "no tiles" grid
    for cols, rows in [(2, 1), (1, 2), (2, 3), (3, 3), (4, 2), (1, 9), (8, 4)]:
        n = count_image_tokens("gundam", (cols, rows), geo)
        assert n == 273 + (10 * rows) * (10 * cols + 1)
        assert n == hf_token_count((cols, rows), cols * rows)
    for mode, size in [("tiny", 512), ("small", 640), ("base", 1024), ("large", 1280)]:
        assert count_image_tokens(mode, (0, 0), geo) == hf_token_count((1, 1), 0, size=size)
    with pytest.raises(ValueError):
        count_image_tokens("base", (2, 3), geo)
    with pytest.raises(ValueError):
        count_image_tokens("huge", (0, 0), geo)


def test_token_counts_follow_geometry():
    # a geometry with other sizes uses the same arithmetic: ceil((S // patch) / downsample) per side
    geo = ViewGeometry(global_size=512, tile_size=320, patch_size=16, downsample=4)
    assert count_image_tokens("base", (0, 0), geo) == 8 * 9 + 1
    assert count_image_tokens("gundam", (2, 3), geo) == 73 + (5 * 3) * (5 * 2 + 1)
    p = prepare_image(_rgb_pattern(700, 1000, 14), "gundam", geo)
    assert p.global_view.shape == (512, 512, 3) and p.tiles.shape[1:] == (320, 320, 3)
    cols, rows = p.grid
    assert p.tiles.shape[0] == cols * rows and p.n_tokens == 73 + (5 * rows) * (5 * cols + 1)
    geo = ViewGeometry(patch_size=16, downsample=3)  # non-divisible: ceil
    assert count_image_tokens("base", (0, 0), geo) == 22 * 23 + 1


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is one tiny compressed row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def test_bad_inputs(tmp_path):
    cases = {}
    cases["missing"] = (tmp_path / "does-not-exist.png", "no such file")
    cases["directory"] = (tmp_path, "directory")
    (tmp_path / "empty.png").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.png", "0 bytes")
    (tmp_path / "garbage.jpg").write_bytes(b"this is not an image at all" * 10)
    cases["garbage"] = (tmp_path / "garbage.jpg", "cannot read image")
    buf = io.BytesIO()
    _rgb_pattern(300, 200, 15).save(buf, "JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    cases["truncated"] = (tmp_path / "truncated.jpg", "cannot")
    buf = io.BytesIO()
    _rgb_pattern(300, 200, 16).save(buf, "PNG")
    (tmp_path / "truncated.png").write_bytes(buf.getvalue()[:200])
    cases["truncated png"] = (tmp_path / "truncated.png", "cannot")
    (tmp_path / "zero.png").write_bytes(_png_with_header(0, 100))
    cases["zero width header"] = (tmp_path / "zero.png", "")
    (tmp_path / "big.png").write_bytes(_png_with_header(8000, 6000))  # 48 M > MAX_PIXELS < PIL's bomb limit
    cases["too large"] = (tmp_path / "big.png", "too large")
    (tmp_path / "bomb.png").write_bytes(_png_with_header(100_000, 100_000))  # PIL's own bomb error
    cases["absurd"] = (tmp_path / "bomb.png", "too large")
    (tmp_path / "absurd2.png").write_bytes(_png_with_header(2**31 - 1, 2**31 - 1))
    cases["absurd 2^31"] = (tmp_path / "absurd2.png", "")
    for label, (path, words) in cases.items():
        for fn in (load_image, lambda p: prepare_image(p, "gundam")):
            with pytest.raises(ImageError) as info:
                fn(path)
            msg = str(info.value)
            assert str(path) in msg, (label, msg)
            assert words in msg, (label, msg)
    assert issubclass(ImageError, ValueError)
    with pytest.raises(ImageError, match="0 bytes"):
        load_image(b"")
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(b"\x89PNG garbage")


def test_bad_in_memory_images():
    with pytest.raises(ImageError, match="zero size"):
        prepare_image(Image.new("RGB", (0, 10)), "base")
    with pytest.raises(ImageError, match="zero size"):
        load_image(Image.new("L", (10, 0)))
    with pytest.raises(ImageError, match="too large"):
        load_image(Image.new("L", (300, 200)), max_pixels=300 * 200 - 1)
    assert load_image(Image.new("L", (300, 200)), max_pixels=300 * 200).size == (300, 200)
    assert 10_000_000 <= MAX_PIXELS <= 100_000_000


def test_bad_modes_and_limits():
    img = Image.new("RGB", (1000, 800))
    with pytest.raises(ValueError, match="unknown image mode"):
        prepare_image(img, "huge")
    with pytest.raises(ValueError, match="max_tiles"):
        prepare_image(img, "gundam", ViewGeometry(min_tiles=5, max_tiles=4))
    with pytest.raises(ValueError, match="min_tiles"):
        prepare_image(img, "gundam", ViewGeometry(min_tiles=0, max_tiles=4))
    with pytest.raises(ValueError, match="max_tiles"):
        prepare_image(img, "gundam", ViewGeometry(max_tiles=10_000))
    with pytest.raises(ValueError):
        choose_grid(0, 100, 2, 9, 640)
