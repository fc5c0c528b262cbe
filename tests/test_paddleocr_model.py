"""PaddleOCR-VL through the registry against transformers 5.23 ``PaddleOCRVLForConditionalGeneration``
(spec paddleocr-vl.md §8: a tiny random model saved with save_pretrained, converted by our converter, run by our
engine): the C preprocessing against the model's image processor, each image's patch embeddings, encoder
output and projected tokens within 1e-4 for images of many sizes and aspect ratios (one below min_pixels,
one above max_pixels, a strip near the aspect limit, one under 28 px), several images of different sizes in
ONE encode call (attention segmented per image), the prompt's logits and 32 greedy tokens through the pipeline
(the stored chat template, 3-D M-RoPE positions), quantised floors, and bad input."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from convert import convert
from encoder.images import ImageError
from encoder.pipeline import OcrPipeline, PipelineError
from encoder.text_model import TextModel
from encoder.vision import VisionEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_paddleocr as rp  # noqa: E402
from test_vision_reference import cosine, page_image  # noqa: E402
from tp_testing import rel_err  # noqa: E402

F32_TOL = 1e-4
# (width, height): sizes and aspect ratios the processor treats differently
SIZES = [
    (900, 1300),   # a page: rounded to multiples of 28
    (1000, 700),   # landscape
    (200, 150),    # below min_pixels: scaled up
    (2400, 1800),  # above max_pixels: scaled down
    (5200, 30),    # a strip near the aspect limit (173:1)
    (20, 300),     # a side under 28 px: scaled up to 28 first
    (448, 448),    # already at a multiple of 28: no resampling of the position table's grid but 16x16
]
VISION_COSINE = {"f16": 0.9999, "q8_0": 0.999, "q4_k": 0.99}
TOP1_AGREEMENT = {"f16": 0.97, "q8_0": 0.85, "q4_k": 0.50}


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return rp.get_tiny_paddleocr(seed=0)


@pytest.fixture(scope="module")
def reference(model_dir):
    return rp.load_tiny_paddleocr(model_dir)


@pytest.fixture(scope="module")
def files(model_dir, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("paddle")
    got = {}
    for t in ("f32", "f16", "q8_0", "q4_k"):
        got[t] = convert(model_dir, mmproj=True, outtype=t, outfile=out / f"mmproj-{t}.gguf", progress=False).outfile
        got[f"text-{t}"] = convert(model_dir, outtype=t, outfile=out / f"text-{t}.gguf", progress=False).outfile
    return got


@pytest.fixture(scope="module")
def encoder(files) -> VisionEncoder:
    return VisionEncoder(files["f32"], n_threads=2, keep_stages=True)


def _check(enc: VisionEncoder, view: int, prepared, ref_pre: rp.Preprocessed, i: int, ref: rp.ImageRef) -> None:
    (pixels,) = prepared.view_arrays()
    want = ref_pre.pixels(i)
    assert pixels.shape == want.shape, (pixels.shape, want.shape)
    assert np.abs(pixels - want).max() < 1e-6  # the processor multiplies by 1/255 where we divide
    gh, gw = ref.grid
    assert prepared.token_grid == (gw // 2, gh // 2) and prepared.n_tokens == gh * gw // 4
    for stage, r in (("embed", ref.embeddings), ("encoder", ref.encoder), ("proj", ref.projected)):
        got = enc.stage(stage, view).reshape(r.shape)
        assert rel_err(got, r) < F32_TOL, f"{stage}: {rel_err(got, r):.2e}"


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_f32_stages_match_transformers(reference, encoder, size):
    img = page_image(*size, seed=size[0] + 7 * size[1])
    ref = rp.reference_features(reference, [img])
    prepared = encoder.prepare(img)
    (tokens,) = encoder.encode([prepared])
    _check(encoder, 0, prepared, ref.pre, 0, ref.images[0])
    assert rel_err(tokens, ref.images[0].projected) < F32_TOL


def test_four_images_of_different_sizes_in_one_call(reference, encoder):
    imgs = [page_image(900, 1300, seed=1), page_image(200, 150, seed=2), page_image(1000, 700, seed=3),
            page_image(448, 448, seed=4)]
    ref = rp.reference_features(reference, imgs)  # transformers' own flattened multi-image pass
    prepared = [encoder.prepare(im) for im in imgs]
    outs = encoder.encode(prepared)
    for i, (p, o) in enumerate(zip(prepared, outs)):
        assert rel_err(o, ref.images[i].projected) < F32_TOL, f"image {i}"
        _check(encoder, i, p, ref.pre, i, ref.images[i])
    # and each equals encoding it alone (attention never crosses images)
    alone = [encoder.encode([p])[0] for p in prepared]
    for a, o in zip(alone, outs):
        assert np.abs(a - o).max() <= 1e-5 * np.abs(a).max()


@pytest.mark.parametrize("task", ["OCR:", "Table Recognition:"])
def test_prompt_logits_and_greedy_tokens_through_the_pipeline(reference, files, task):
    img = page_image(700, 980, seed=5)
    ref = rp.reference_prompt(reference, [img], task, n_new=32)
    pipe = OcrPipeline(files["text-f32"], files["f32"], n_threads=2)
    (prepared,) = pipe.prepare([img])
    (emb,), _ = pipe.encode([prepared])
    prompt = pipe.prompt(task, prepared.n_tokens, prepared.token_grid)
    assert prompt.ids == [int(t) for t in ref.input_ids]
    assert np.array_equal(prompt.positions, ref.position_ids)
    text = pipe.text
    text.reset()
    logits = text.eval(prompt.ids, embd=emb, all_logits=True, pos=prompt.positions)
    assert rel_err(logits, ref.logits) < F32_TOL
    text.reset()
    assert text.greedy(prompt.ids, 32, embd=emb, pos=prompt.positions) == ref.greedy


@pytest.mark.parametrize("outtype", ["f16", "q8_0", "q4_k"])
def test_quantised_files_floors(reference, files, outtype, record_property):
    img = page_image(900, 1300, seed=9)
    ref = rp.reference_prompt(reference, [img], "OCR:", n_new=0, features=True)
    (ours,) = VisionEncoder(files[outtype], n_threads=2).encode([img])
    c = cosine(ours, ref.features.images[0].projected)
    (emb,) = VisionEncoder(files["f32"], n_threads=2).encode([img])
    pos = np.asarray(ref.position_ids, np.int32)
    logits = TextModel(files[f"text-{outtype}"], n_threads=2).eval(ref.input_ids, embd=emb, all_logits=True, pos=pos)
    agree = float(np.mean(np.argmax(logits, axis=1) == np.argmax(ref.logits, axis=1)))
    record_property(f"vision_cosine_{outtype}", c)
    record_property(f"top1_{outtype}", agree)
    print(f"{outtype}: vision cosine {c:.6f}, prompt top-1 agreement {agree:.4f}")
    assert c >= VISION_COSINE[outtype]
    assert agree >= TOP1_AGREEMENT[outtype]


def test_bad_input(files, encoder):
    from PIL import Image

    with pytest.raises(ImageError, match="aspect ratio over 200"):
        encoder.prepare(Image.new("RGB", (6000, 20), (255, 255, 255)))
    with pytest.raises(ValueError, match="unknown image mode 'gundam'"):
        encoder.prepare(page_image(300, 300), "gundam")
    assert encoder.no_repeat == (0, 0)  # the official runner decodes greedily without a no-repeat rule


def test_deepseek_text_with_paddleocr_vision_is_refused(files):
    v1 = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "llamacpp-tiny-v1" / "text-f16.gguf"
    with pytest.raises(PipelineError, match="does not go with|differs from"):
        OcrPipeline(v1, files["f32"], n_threads=1)
