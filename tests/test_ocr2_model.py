"""DeepSeek-OCR-2 through the registry against transformers 5.23 ``DeepseekOcr2ForConditionalGeneration``
(spec deepseek-ocr-2.md; a tiny random model saved with save_pretrained, converted by our converter, run by
our engine): the C preprocessing against the model's image processor, every view's SAM output, encoder
output and projected tokens, each page's laid-out features (both modes, tile grids 2x1, 1x2, 2x3, 3x2, an
image smaller than a tile, EXIF-rotated input, 3 pages of different sizes in one call), the prompt's logits
and 32 greedy tokens, and cosine / agreement floors for quantised files. Also: the llama.cpp-written pair of
../shared/fixtures/llamacpp-tiny-ocr2 reproduces its reference outputs."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convert import convert
from encoder.text_model import TextModel
from encoder.vision import VisionEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_ocr2 as ro  # noqa: E402
from test_vision_reference import cosine, page_image  # noqa: E402
from tp_testing import rel_err  # noqa: E402

F32_TOL = 1e-4
IMAGE_ID = 128815
PROMPT_IDS = [201, 128820, 369, 265, 394, 349, 381, 16]  # "\n<|grounding|>Convert the document to markdown."
# Quantised files: the vision tokens' cosine to the F32 reference (measured: f16 1.000000, q8_0 0.999803,
# q4_k 0.992610), and the top-1 agreement with transformers over all 1130 prompt positions of the text file of
# the same type (measured: f16 0.9929, q8_0 0.8903, q4_k 0.5336). The tiny random decoder's top-2 margins are
# tiny, at the image positions above all, so its agreement says little beyond "no regression"; the trained
# model's floors (tests/test_trained_model.py) are the meaningful ones.
VISION_COSINE = {"f16": 0.9999, "q8_0": 0.999, "q4_k": 0.99}
TOP1_AGREEMENT = {"f16": 0.98, "q8_0": 0.85, "q4_k": 0.50}

# (width, height) -> the gundam grid (cols, rows) the processor chooses (None: no tiles)
SIZES = {
    (1536, 768): (2, 1),
    (768 + 60, 1536): (1, 2),
    (1240, 1754): (2, 3),
    (1754, 1240): (3, 2),
    (600, 500): None,  # smaller than a tile: the global view only
}


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return ro.get_tiny_ocr2(seed=0)


@pytest.fixture(scope="module")
def reference(model_dir):
    return ro.load_tiny_ocr2(model_dir)


@pytest.fixture(scope="module")
def files(model_dir, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ocr2")
    got = {"text-f32": convert(model_dir, outtype="f32", outfile=out / "text-f32.gguf", progress=False).outfile}
    for t in ("f32", "f16", "q8_0", "q4_k"):
        got[t] = convert(model_dir, mmproj=True, outtype=t, outfile=out / f"mmproj-{t}.gguf", progress=False).outfile
    for t in ("f16", "q8_0", "q4_k"):
        got[f"text-{t}"] = convert(model_dir, outtype=t, outfile=out / f"text-{t}.gguf", progress=False).outfile
    return got


@pytest.fixture(scope="module")
def encoder(files) -> VisionEncoder:
    return VisionEncoder(files["f32"], n_threads=2, keep_stages=True)


def _check_views_and_stages(enc: VisionEncoder, ref: ro.FeatureRef, first_view: int, page: int, prepared) -> None:
    ours_views = prepared.view_arrays()
    refs = ref.page_views(page)
    assert len(ours_views) == len(refs)
    for k, (o, r) in enumerate(zip(ours_views, refs)):
        assert o.shape == r.pixels.transpose(1, 2, 0).shape
        # the processor multiplies by 1/255 where we divide: a float32 ulp apart at most
        assert np.abs(o - r.pixels.transpose(1, 2, 0)).max() < 1e-6, f"view {k} pixels"
        for stage, want in (("sam", r.sam), ("encoder", r.encoder), ("proj", r.projected)):
            got = enc.stage(stage, first_view + k).reshape(want.shape)
            assert rel_err(got, want) < F32_TOL, f"page {page} view {k} ({r.kind}) {stage}: {rel_err(got, want):.2e}"


@pytest.mark.parametrize("mode", ro.MODES)
@pytest.mark.parametrize("size", list(SIZES), ids=[f"{w}x{h}" for w, h in SIZES])
def test_f32_stages_and_layout_match_transformers(reference, encoder, mode, size):
    img = page_image(*size, seed=size[0] + size[1])
    prepared = encoder.prepare(img, mode)
    want_grid = SIZES[size] if mode == "gundam" else None
    assert prepared.grid == (want_grid or (0, 0))
    ref = ro.reference_features(reference, [img], mode)
    (ours,) = encoder.encode([prepared])
    assert ours.shape == ref.features[0].shape == (prepared.n_tokens, encoder.n_embd)
    n_tiles = want_grid[0] * want_grid[1] if want_grid else 0
    assert prepared.n_tokens == (256 + 144 * n_tiles + 1 if mode == "gundam" else 145)
    _check_views_and_stages(encoder, ref, 0, 0, prepared)
    assert rel_err(ours, ref.features[0]) < F32_TOL


def test_exif_rotated_input(reference, encoder):
    img = page_image(1300, 800, seed=7)
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img.save(buf, format="JPEG", exif=exif, quality=95)
    upright = Image.open(io.BytesIO(buf.getvalue()))
    from PIL import ImageOps
    upright = ImageOps.exif_transpose(upright).convert("RGB")
    assert upright.size == (800, 1300)
    for mode in ro.MODES:
        prepared = encoder.prepare(buf.getvalue(), mode)
        assert prepared.original_size == (800, 1300)
        ref = ro.reference_features(reference, [upright], mode)
        (ours,) = encoder.encode([prepared])
        assert rel_err(ours, ref.features[0]) < F32_TOL, mode


def test_three_pages_of_different_sizes_in_one_call(reference, encoder):
    imgs = [page_image(1240, 1754, seed=1), page_image(600, 500, seed=2), page_image(1536, 768, seed=3)]
    for mode in ro.MODES:
        prepared = [encoder.prepare(im, mode) for im in imgs]
        ref = ro.reference_features(reference, imgs, mode)
        outs = encoder.encode(prepared)
        first = 0
        for page, (p, o) in enumerate(zip(prepared, outs)):
            assert rel_err(o, ref.features[page]) < F32_TOL, f"{mode} page {page}"
            _check_views_and_stages(encoder, ref, first, page, p)
            first += int(p.views.n_views)


def _reference_prompt(reference, img, mode):
    pre = ro.preprocess([img], mode)
    n_img = 256 + 144 * pre.num_local_patches[0] + 1 if mode == "gundam" else 145
    ids = [0] + [IMAGE_ID] * n_img + PROMPT_IDS
    kw = dict(pixel_values=torch.from_numpy(pre.pixel_values), num_local_patches=pre.num_local_patches)
    if pre.pixel_values_local is not None:
        kw["pixel_values_local"] = torch.from_numpy(pre.pixel_values_local)
    return ids, kw


def _reference_greedy(reference, ids, kw, n_new):
    with torch.no_grad():
        out = reference(input_ids=torch.tensor([ids]), **kw, use_cache=True)
        logits = out.logits[0].float().numpy().copy()
        past, toks = out.past_key_values, []
        nxt = int(np.argmax(logits[-1]))
        for _ in range(n_new):
            toks.append(nxt)
            out = reference(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = int(out.logits[0, -1].argmax())
    return logits, toks


@pytest.mark.parametrize("mode", ro.MODES)
def test_prompt_logits_and_greedy_tokens_match_transformers(reference, files, mode):
    img = page_image(1240, 1754, seed=11)
    ids, kw = _reference_prompt(reference, img, mode)
    ref_logits, ref_tokens = _reference_greedy(reference, ids, kw, 32)
    enc = VisionEncoder(files["f32"], n_threads=2)
    (emb,) = enc.encode([img], mode)
    text = TextModel(files["text-f32"], n_threads=2)
    logits = text.eval(ids, embd=emb, all_logits=True)
    assert rel_err(logits, ref_logits) < F32_TOL
    text.reset()
    assert text.greedy(ids, 32, embd=emb) == ref_tokens


@pytest.mark.parametrize("outtype", ["f16", "q8_0", "q4_k"])
def test_quantised_files_floors(reference, files, outtype, record_property):
    img = page_image(1240, 1754, seed=11)
    enc = VisionEncoder(files[outtype], n_threads=2)
    worst = 1.0
    for mode in ro.MODES:
        (ours,) = enc.encode([img], mode)
        c = cosine(ours, ro.reference_features(reference, [img], mode).features[0])
        worst = min(worst, c)
        assert c >= VISION_COSINE[outtype], f"{outtype} {mode}: vision cosine {c:.5f}"
    # the text file of the same type, fed the F32 vision tokens: top-1 agreement over the prompt
    ids, kw = _reference_prompt(reference, img, "gundam")
    ref_logits, _ = _reference_greedy(reference, ids, kw, 0)
    (emb,) = VisionEncoder(files["f32"], n_threads=2).encode([img], "gundam")
    logits = TextModel(files[f"text-{outtype}"], n_threads=2).eval(ids, embd=emb, all_logits=True)
    agree = float(np.mean(np.argmax(logits, axis=1) == np.argmax(ref_logits, axis=1)))
    record_property(f"vision_cosine_{outtype}", worst)
    record_property(f"top1_{outtype}", agree)
    print(f"{outtype}: vision cosine {worst:.6f}, prompt top-1 agreement {agree:.4f}")
    assert agree >= TOP1_AGREEMENT[outtype], f"{outtype}: top-1 agreement {agree:.4f}"


def test_llamacpp_written_files_reproduce_their_reference():
    d = ro.FIXTURE_DIR
    assert d.is_dir(), f"{d} is missing"
    ref = np.load(d / "reference.npz")
    enc = VisionEncoder(d / "mmproj-f32.gguf", n_threads=2)
    assert enc.family == "deepseek_ocr2" and enc.modes == ("gundam", "base")
    text = TextModel(d / "text-f16.gguf", n_threads=2, kv_type="f32")
    for mode in ro.MODES:
        (emb,) = enc.encode([d / "page.png"], mode)
        assert rel_err(emb, ref[f"features_{mode}"]) < F32_TOL, mode
        ids = [0] + [IMAGE_ID] * emb.shape[0] + [int(i) for i in ref["prompt_text_ids"]]
        assert len(ids) == int(ref[f"input_len_{mode}"])
        text.reset()
        assert rel_err(text.eval(ids, embd=emb), ref[f"last_logits_{mode}"]) < F32_TOL, mode
        text.reset()
        assert text.greedy(ids, 16, embd=emb) == [int(t) for t in ref[f"greedy16_{mode}"]], mode


def test_family_defaults_and_bad_pairs(files, tmp_path):
    enc = VisionEncoder(files["f32"])
    assert enc.no_repeat == (20, 90)  # the official DeepSeek-OCR-2 runner's rule
    with pytest.raises(ValueError, match="unknown image mode 'tiny'"):
        enc.prepare(page_image(800, 800), "tiny")
    from encoder.native import TilepassError
    with pytest.raises(TilepassError, match="not a vision"):
        VisionEncoder(files["text-f32"])
    with pytest.raises(TilepassError, match="not a text model"):
        TextModel(files["f32"])
