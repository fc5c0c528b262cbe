"""DeepSeek-VL2 through the registry against ../shared/reference/deepseek_vl2_ref.py (plain PyTorch, checked
against the official code; tiny random models of its `tiny_config`, saved in the official layout, converted by
our converter, run by our engine): the C preprocessing (global view + best-fit tiles) against the reference's,
the laid-out image tokens within 1e-4 for a small image, a wide one (4x2 tiles), an A4 page (3x3) and tall and
very wide strips, all in ONE encode call; three images in one prompt (tiling off: mode "global"); through the
pipeline the prompt ids, the logits of the whole prompt within 1e-4 and 32 greedy tokens for the Tiny decoder
(MHA MoE: the DeepSeek-OCR text family); quantised floors. Small and base (MLA) text files convert but are not
run yet."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from convert import convert
from encoder.pipeline import OcrPipeline
from encoder.text_model import TextModel
from encoder.vision import VisionEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_vl2 as rv  # noqa: E402
from test_vision_reference import cosine, page_image  # noqa: E402
from tp_testing import rel_err  # noqa: E402

F32_TOL = 1e-4
# (width, height) -> (tiles across, tiles down) the reference's select_best_resolution picks
SIZES = {(300, 200): (1, 1), (1600, 500): (4, 2), (1240, 1754): (3, 3), (500, 2500): (1, 5), (4000, 300): (9, 1)}
VISION_COSINE = {"f16": 0.9999, "q8_0": 0.999, "q4_k": 0.99}
TOP1_AGREEMENT = {"f16": 0.97, "q8_0": 0.85, "q4_k": 0.50}


@pytest.fixture(scope="module")
def ref():
    return rv.ref()


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return rv.get_vl2("tiny")


@pytest.fixture(scope="module")
def reference():
    return rv.get_model("tiny")


@pytest.fixture(scope="module")
def files(model_dir, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("vl2")
    got = {}
    for t in ("f32", "f16", "q8_0", "q4_k"):
        got[t] = convert(model_dir, mmproj=True, outtype=t, outfile=out / f"mmproj-{t}.gguf", progress=False).outfile
        got[f"text-{t}"] = convert(model_dir, outtype=t, outfile=out / f"text-{t}.gguf", progress=False).outfile
    return got


def _reference_tokens(ref, reference, img, crop=True):
    views, tw, th = ref.preprocess(img, rv.tiny_config("tiny"), crop)
    with torch.no_grad():
        return views, (tw, th), reference.image_tokens(views, tw, th).numpy()


def test_all_views_of_five_images_in_one_call(ref, reference, files):
    enc = VisionEncoder(files["f32"], n_threads=2)
    assert (enc.family, enc.modes) == ("deepseek_vl2", ("auto", "global"))
    imgs = [page_image(*size, seed=size[0] + size[1]) for size in SIZES]
    prepared = [enc.prepare(im) for im in imgs]
    outs = enc.encode(prepared)  # 1 + 8 + 1 + 9 + 1 + 5 + 1 + 9 + 1 + 1 = 37 views of 384, one batch
    for (size, grid), im, p, ours in zip(SIZES.items(), imgs, prepared, outs):
        views, (tw, th), want = _reference_tokens(ref, reference, im)
        assert (tw, th) == grid and p.grid == grid
        mine = p.view_arrays()  # the tiles, then the global view; the reference has the global view first
        assert np.array_equal(np.stack([mine[-1]] + mine[:-1]), views.numpy().transpose(0, 2, 3, 1)), size
        assert ours.shape == want.shape == (211 + 14 * th * (14 * tw + 1), enc.n_embd)
        assert rel_err(ours, want) < F32_TOL, size


def test_three_images_in_one_prompt_use_one_tile(ref, reference, files):
    enc = VisionEncoder(files["f32"], n_threads=2)
    imgs = [page_image(640, 480, seed=1), page_image(1240, 1754, seed=2), page_image(300, 200, seed=3)]
    outs = enc.encode(imgs, mode="global")  # the official processor's choice for more than two images
    for im, ours in zip(imgs, outs):
        _, grid, want = _reference_tokens(ref, reference, im, crop=False)
        assert grid == (1, 1) and ours.shape[0] == 421
        assert rel_err(ours, want) < F32_TOL


def test_prompt_logits_and_greedy_tokens_through_the_pipeline(ref, reference, model_dir, files):
    img = page_image(640, 480, seed=5)
    question = "Convert the document to markdown."
    tok = ref.load_tokenizer(model_dir)
    ids, images = ref.build_inputs(tok, "<image>\n" + question, [img], rv.tiny_config("tiny"))
    with torch.no_grad():
        ref_logits = reference(ids, images).numpy()
        ref_greedy = reference.generate(ids, images, max_new_tokens=32, eos_id=-1)
    pipe = OcrPipeline(files["text-f32"], files["f32"], n_threads=2)
    assert pipe.default_prompt == question
    (prepared,) = pipe.prepare([img])
    (emb,), _ = pipe.encode([prepared])
    prompt = pipe.prompt(question, prepared.n_tokens, prepared.token_grid)
    assert prompt.ids == [int(i) for i in ids] and prompt.positions is None
    text = pipe.text
    text.reset()
    assert rel_err(text.eval(prompt.ids, embd=emb, all_logits=True), ref_logits) < F32_TOL
    text.reset()
    assert text.greedy(prompt.ids, 32, embd=emb) == ref_greedy


@pytest.mark.parametrize("outtype", ["f16", "q8_0", "q4_k"])
def test_quantised_files_floors(ref, reference, model_dir, files, outtype, record_property):
    img = page_image(1240, 1754, seed=9)
    _, _, want = _reference_tokens(ref, reference, img)
    (ours,) = VisionEncoder(files[outtype], n_threads=2).encode([img])
    c = cosine(ours, want)
    tok = ref.load_tokenizer(model_dir)
    ids, images = ref.build_inputs(tok, "<image>\nConvert the document to markdown.", [img], rv.tiny_config("tiny"))
    with torch.no_grad():
        ref_logits = reference(ids, images).numpy()
    (emb,) = VisionEncoder(files["f32"], n_threads=2).encode([img])
    logits = TextModel(files[f"text-{outtype}"], n_threads=2).eval(ids.numpy(), embd=emb, all_logits=True)
    agree = float(np.mean(np.argmax(logits, axis=1) == np.argmax(ref_logits, axis=1)))
    record_property(f"vision_cosine_{outtype}", c)
    record_property(f"top1_{outtype}", agree)
    print(f"{outtype}: vision cosine {c:.6f}, prompt top-1 agreement {agree:.4f}")
    assert c >= VISION_COSINE[outtype]
    assert agree >= TOP1_AGREEMENT[outtype]
