"""PaddleOCR-VL files written by llama.cpp's converter (../shared/fixtures/llamacpp-tiny-paddleocr-vl: the form
PaddlePaddle publishes its GGUFs in, without any key of ours) load through the registry and reproduce their
transformers reference: the C preprocessing (smart_resize to 896x1288), the projected image tokens, the
prompt's last logits with the 3-D M-RoPE positions, and 16 greedy tokens."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoder.text_model import TextModel
from encoder.vision import VisionEncoder
from tp_testing import rel_err

FIXTURE = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "llamacpp-tiny-paddleocr-vl"
F32_TOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    assert FIXTURE.is_dir(), f"{FIXTURE} is missing"
    return np.load(FIXTURE / "reference.npz")


def test_vision_features(ref):
    enc = VisionEncoder(FIXTURE / "mmproj-f32.gguf", n_threads=2)
    assert (enc.family, enc.modes, enc.n_embd) == ("paddleocr_vl", ("auto",), 64)
    p = enc.prepare(FIXTURE / "page.png")
    t, gh, gw = (int(v) for v in ref["image_grid_thw"])
    assert (t, gh, gw) == (1, 92, 64)
    (view,) = p.view_arrays()
    assert view.shape == (gh * 14, gw * 14, 3)  # smart_resize: 900x1300 -> 896x1288
    assert p.n_tokens == gh * gw // 4
    (tokens,) = enc.encode([p])
    assert rel_err(tokens, ref["features"]) < F32_TOL


def test_text_logits_and_greedy_tokens(ref):
    text = TextModel(FIXTURE / "text-f16.gguf", n_threads=2, kv_type="f32")
    assert text.info.n_pos_axes == 3 and text.info.image_token_id == 100295
    ids, pos, emb = ref["prompt_ids"], ref["position_ids"], ref["features"]
    assert rel_err(text.eval(ids, embd=emb, pos=pos), ref["last_logits"]) < F32_TOL
    text.reset()
    # decoding continues at 1 + the largest prompt position on every axis (transformers' rope_delta)
    assert text.greedy(ids, 16, embd=emb, pos=pos) == [int(t) for t in ref["greedy16"]]


def test_positions_are_checked(ref):
    text = TextModel(FIXTURE / "text-f16.gguf", n_threads=1)
    with pytest.raises(ValueError, match=r"pos must be \[3, 2\]"):
        text.eval([1, 2], pos=np.zeros((1, 2), np.int32))
    from encoder.native import TilepassError
    with pytest.raises(TilepassError, match="out of range"):
        text.eval([1, 2], pos=np.full((3, 2), -1, np.int32))
    assert text.n_past == 0
