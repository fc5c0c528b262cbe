"""The C session API on DeepSeek-VL2, which has no llama.cpp fixture: a tiny random model of the reference
(../shared/reference/deepseek_vl2_ref.py, through tests/reference_vl2.py) converted by our converter.

* one image: the prompt ids the C family builds equal encoder/prompts.py's and the reference processor's
  (build_inputs); greedy and seeded tokens equal the Python pipeline's, with the no-repeat rule off and on;
* three images in one prompt (the official processor's rule for more than two: no tiles, mode "global"): the C ids
  equal build_inputs', and 16 greedy tokens (EOS ignored) equal the reference model's own greedy decode.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from convert import convert
from encoder.generate import NO_REPEAT_OFF, NoRepeat, Sampling
from encoder.pipeline import OcrPipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_vl2 as rv  # noqa: E402
from session_native import CSession  # noqa: E402
from test_vision_reference import page_image  # noqa: E402

N_NEW = 24


@pytest.fixture(scope="module")
def vl2(tmp_path_factory):
    model_dir = rv.get_vl2("tiny")
    out = tmp_path_factory.mktemp("vl2-session")
    vision = convert(model_dir, mmproj=True, outtype="f32", outfile=out / "mmproj-f32.gguf", progress=False).outfile
    text = convert(model_dir, outtype="f32", outfile=out / "text-f32.gguf", progress=False).outfile
    pipe = OcrPipeline(text, vision, n_threads=2)
    return model_dir, pipe, CSession(pipe.text._model, pipe.vision._model)


def rgb(img) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


@pytest.mark.parametrize("policy", ["greedy", "greedy-no-repeat", "sampled"])
def test_one_image_ids_and_tokens(vl2, policy):
    model_dir, pipe, c = vl2
    ref = rv.ref()
    img = page_image(640, 480, seed=5)
    question = "Convert the document to markdown."
    want_ids, _ = ref.build_inputs(ref.load_tokenizer(model_dir), "<image>\n" + question, [img], rv.tiny_config("tiny"))
    (prepared,) = pipe.prepare([img])
    (emb,), _ = pipe.encode([prepared])
    p = pipe.prompt(question, prepared.n_tokens, prepared.token_grid)
    c.submit(None, rgb=rgb(img))
    ids, pos = c.prompt_ids()
    assert ids == p.ids == [int(i) for i in want_ids] and pos is None
    sampling, no_repeat = {"greedy": (Sampling(), NO_REPEAT_OFF),
                           "greedy-no-repeat": (Sampling(), NoRepeat(ngram=2, window=0)),
                           "sampled": (Sampling(temperature=0.6, top_k=20, seed=3), NO_REPEAT_OFF)}[policy]
    want = pipe.generate(p.ids, emb, N_NEW, sampling, no_repeat)
    assert c.generate(N_NEW, sampling, no_repeat).tokens == want.tokens


def test_three_images_in_one_prompt(vl2):
    model_dir, _, c = vl2
    ref = rv.ref()
    imgs = [page_image(640, 480, seed=1), page_image(1240, 1754, seed=2), page_image(300, 200, seed=3)]
    prompt = "<image>\n<image>\nCompare these and <image> this one."
    want_ids, images = ref.build_inputs(ref.load_tokenizer(model_dir), prompt, imgs, rv.tiny_config("tiny"))
    c.submit(prompt, rgb=[rgb(i) for i in imgs])
    ids, _ = c.prompt_ids()
    assert ids == [int(i) for i in want_ids]
    with torch.no_grad():
        want = rv.get_model("tiny").generate(want_ids, images, max_new_tokens=16, eos_id=-1)
    assert c.generate(16, Sampling(), NO_REPEAT_OFF, ignore_eos=True).tokens == [int(t) for t in want]
