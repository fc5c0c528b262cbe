"""Issue 5's proof: our vision encoder against the transformers reference (UnlimitedOcr) on a tiny
random model saved with save_pretrained and converted by our converter. Stage by stage in F32
(SAM output, CLIP output, projected tokens, laid-out sequence) for every mode and gundam grid;
cosine floors for F16/BF16/Q8_0 vision files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from convert.converter import convert
from encoder.preprocess import PreparedImage
from encoder.vision import VisionEncoder
import sys
sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_models import get_tiny_ocr  # noqa: E402
from tp_testing import rel_err  # noqa: E402

F32_TOL = 1e-4
COSINE_FLOOR = {"f16": 0.999, "bf16": 0.999, "q8_0": 0.999}


def page_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A page-like picture: light background, dark text-like bars, a coloured block."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), (245, 243, 238))
    d = ImageDraw.Draw(img)
    y = int(height * 0.05)
    while y < height * 0.9:
        x = int(width * 0.06)
        while x < width * 0.9:
            w = int(rng.integers(width // 40 + 2, width // 8 + 3))
            d.rectangle([x, y, x + w, y + max(2, height // 60)], fill=tuple(int(v) for v in rng.integers(0, 90, 3)))
            x += w + max(3, width // 60)
        y += max(6, height // 25)
    d.ellipse([width // 3, height // 3, width // 2, height // 2], fill=(200, 60, 40))
    return img


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def tiny_model_dir() -> Path:
    return get_tiny_ocr(seed=1)


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    from transformers import UnlimitedOcrForConditionalGeneration

    model = UnlimitedOcrForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model.model


@pytest.fixture(scope="module")
def vision_files(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("vision")
    files = {}
    for outtype in ("f32", "f16", "bf16", "q8_0"):
        files[outtype] = convert(tiny_model_dir, mmproj=True, outtype=outtype, outfile=out / f"mmproj-{outtype}.gguf",
                                 progress=False).outfile
    return files


def reference_stages(ref, p: PreparedImage) -> dict[str, list[np.ndarray] | np.ndarray]:
    """One get_image_features call; hooks catch each stage. Per view (tiles first, then global):
    SAM [hw, C], CLIP [1+hw, F], projected [hw, E]; and the laid-out sequence."""
    caught: dict[str, list[torch.Tensor]] = {"sam": [], "clip": [], "proj": []}
    hooks = [
        ref.vision_tower.sam_encoder.register_forward_hook(lambda m, i, o: caught["sam"].append(o.last_hidden_state)),
        ref.vision_tower.vision_encoder.register_forward_hook(lambda m, i, o: caught["clip"].append(o.last_hidden_state)),
        ref.multi_modal_projector.register_forward_hook(lambda m, i, o: caught["proj"].append(o)),
    ]
    try:
        with torch.no_grad():
            gv = torch.from_numpy(np.ascontiguousarray(p.global_view.transpose(2, 0, 1)))[None]
            kwargs = {}
            if p.tiles.shape[0]:
                kwargs = dict(pixel_values_local=torch.from_numpy(np.ascontiguousarray(p.tiles.transpose(0, 3, 1, 2))),
                              num_local_patches=[p.tiles.shape[0]], patches_grid=[list(p.grid)])
            layout = ref.get_image_features(pixel_values=gv, **kwargs).pooler_output[0].numpy()
    finally:
        for h in hooks:
            h.remove()
    out: dict[str, list[np.ndarray] | np.ndarray] = {"layout": layout}
    for stage, batches in caught.items():
        # the global view's batch runs first, the tiles' second: reorder to tiles, then global
        views = [b for b in batches[1:] for b in b] + [batches[0][0]] if len(batches) > 1 else [batches[0][0]]
        if stage == "sam":
            views = [v.flatten(1).T for v in views]
        out[stage] = [v.numpy() for v in views]
    return out


CASES = [
    ("tiny", (900, 1300), None),
    ("small", (900, 1300), None),
    ("base", (900, 1300), None),
    ("large", (700, 500), None),
    ("gundam", (1300, 650), (2, 1)),
    ("gundam", (650, 1300), (1, 2)),
    ("gundam", (1240, 1754), (2, 3)),
    ("gundam", (1920, 1920), (3, 3)),
    ("gundam", (500, 400), (0, 0)),  # smaller than a tile: global view only
]


@pytest.mark.parametrize("mode,size,grid", CASES, ids=[f"{m}-{s[0]}x{s[1]}" for m, s, _ in CASES])
def test_f32_stages_match_transformers(reference, vision_files, mode, size, grid):
    enc = VisionEncoder(vision_files["f32"], n_threads=2, keep_stages=True)
    p = enc.prepare(page_image(*size, seed=size[0]), mode)
    if grid is not None:
        assert p.grid == grid
    (ours,) = enc.encode([p])
    ref = reference_stages(reference, p)
    for v in range(len(ref["sam"])):
        for stage in ("sam", "clip", "proj"):
            r = ref[stage][v]
            o = enc.stage(stage, v).reshape(r.shape)
            assert rel_err(o, r) < F32_TOL, f"{stage} of view {v}: {rel_err(o, r):.2e}"
    assert ours.shape == ref["layout"].shape == (p.n_tokens, enc.n_embd)
    assert rel_err(ours, ref["layout"]) < F32_TOL


def test_exif_rotated_input(reference, vision_files):
    img = page_image(1300, 700, seed=7)
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img.save(buf, format="JPEG", quality=95, exif=exif)
    enc = VisionEncoder(vision_files["f32"], n_threads=2)
    p = enc.prepare(buf.getvalue(), "gundam")
    assert p.original_size == (700, 1300)  # width and height swapped by the EXIF orientation
    (ours,) = enc.encode([p])
    assert rel_err(ours, reference_stages(reference, p)["layout"]) < F32_TOL


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_quantised_vision_files_cosine(reference, vision_files, outtype, record_property):
    enc = VisionEncoder(vision_files[outtype], n_threads=2)
    worst = 1.0
    for mode, size in (("base", (900, 1300)), ("gundam", (1240, 1754)), ("tiny", (640, 480))):
        p = enc.prepare(page_image(*size, seed=3), mode)
        (ours,) = enc.encode([p])
        c = cosine(ours, reference_stages(reference, p)["layout"])
        worst = min(worst, c)
        assert c >= COSINE_FLOOR[outtype], f"{outtype} {mode}: cosine {c:.6f}"
    record_property(f"cosine_{outtype}", worst)
    print(f"{outtype}: worst cosine per image {worst:.6f}")


def test_several_pages_in_one_pass_equal_one_at_a_time(vision_files):
    enc = VisionEncoder(vision_files["f32"], n_threads=2)
    pages = [enc.prepare(page_image(*s, seed=i), "gundam")
             for i, s in enumerate(((1240, 1754), (1300, 650), (500, 400)))]
    together = enc.encode(pages)
    for p, t in zip(pages, together):
        (alone,) = enc.encode([p])
        assert np.abs(t - alone).max() <= 1e-5 * np.abs(alone).max()
