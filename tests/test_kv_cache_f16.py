"""The F16 KV cache: tp_attention over F16 keys/values (decode form and query tiles, every CPU path)
equals the attention over the same values held as F32 (the only difference is the rounding of the
cache to half precision), and the text decoder with kv_type f16 against f32 on the llama.cpp tiny
fixture: logits within 5e-4 (max-abs error / max-abs; measured <= 7.5e-5), greedy tokens identical."""

import numpy as np
import pytest

from encoder.graph import Context, to_numpy
from encoder.native import ffi, lib
from encoder.text_model import TextModel
from test_ops_attention import PATHS, rand, rel_err, sdpa_ref
from test_text_decoder import FIX, MODES

F16 = 1
KV_LOGIT_TOL = 5e-4  # measured 2.4e-5 .. 7.5e-5 (tiny / base / gundam prompts of 82 / 282 / 912 tokens)


def _attention(pool, path, q, k, v, kv_type, causal):
    """k, v (B, Hkv, Nk, D) stored token-major as the cache is, viewed as [D, Nk, Hkv, B]."""
    ctx = Context(PATHS[path])
    opts = ffi.new("tp_attention_opts *", lib.tp_attention_default_opts())
    opts.causal = causal
    tk = lib.tp_permute(ctx.ptr, ctx.tensor(np.ascontiguousarray(k.transpose(0, 2, 1, 3)), kv_type), 0, 2, 1, 3)
    tv = lib.tp_permute(ctx.ptr, ctx.tensor(np.ascontiguousarray(v.transpose(0, 2, 1, 3)), kv_type), 0, 2, 1, 3)
    out = lib.tp_attention(ctx.ptr, ctx.tensor(q), tk, tv, opts)
    ctx.check()
    ctx.compute([out], pool)
    return to_numpy(out)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("Nq", [1, 37])  # the decode form; query tiles (prefill)
@pytest.mark.parametrize("H,Hkv,Nk,D,Dv", [(10, 10, 300, 128, 128), (4, 2, 129, 24, 40), (3, 3, 37, 8, 5),
                                           (16, 2, 1001, 128, 128), (8, 2, 77, 64, 64)])  # GQA 8 (PaddleOCR-VL), 4
def test_attention_f16_kv_equals_rounded_f32(pool, path, Nq, H, Hkv, Nk, D, Dv):
    rng = np.random.default_rng(H + Nk + D + Nq)
    q, k, v = rand(rng, 1, H, Nq, D), rand(rng, 1, Hkv, Nk, D) * 2, rand(rng, 1, Hkv, Nk, Dv)
    k16, v16 = k.astype(np.float16).astype(np.float32), v.astype(np.float16).astype(np.float32)
    for causal in (False, True):
        ref = _attention(pool, path, q, k16, v16, None, causal)
        got = _attention(pool, path, q, k, v, F16, causal)
        assert rel_err(got, ref) < 1e-5
        if Nq == 1:  # the decode form: against torch on the rounded keys and values too
            assert rel_err(got, sdpa_ref(q, k16, v16)) < 1e-5


@pytest.fixture(scope="module")
def fixture_ref():
    return np.load(FIX / "reference.npz")


@pytest.mark.parametrize("mode", MODES)
def test_decoder_f16_cache_vs_f32_cache(fixture_ref, mode):
    feats = fixture_ref[f"features_{mode}"]
    ids = [0] + [128815] * len(feats) + [int(t) for t in fixture_ref["prompt_text_ids"]]
    out = {}
    for kv in ("f32", "f16"):
        m = TextModel(FIX / "text-f16.gguf", n_threads=2, n_ctx=1100, n_batch=256, kv_type=kv)
        logits = m.eval(ids, feats)
        m.reset()
        out[kv] = (logits, m.greedy(ids, 16, feats))
    err = float(np.abs(out["f16"][0] - out["f32"][0]).max() / np.abs(out["f32"][0]).max())
    assert err < KV_LOGIT_TOL, err
    assert out["f16"][1] == out["f32"][1] == [int(t) for t in fixture_ref[f"greedy16_{mode}"]]


def test_decoder_kv_auto_is_f16_for_f16_weights():
    ids = list(range(3, 40))
    a = TextModel(FIX / "text-f16.gguf", n_ctx=64).eval(ids)
    b = TextModel(FIX / "text-f16.gguf", n_ctx=64, kv_type="f16").eval(ids)
    np.testing.assert_array_equal(a, b)


def test_decoder_kv_type_errors():
    with pytest.raises(ValueError):
        TextModel(FIX / "text-f16.gguf", n_ctx=16, kv_type="q4_0")
    params = ffi.new("tp_text_params *", lib.tp_text_default_params())
    assert params.kv_type == -1
    params.kv_type = 2  # Q4_0: no such cache
    out = ffi.new("tp_text_model **")
    err = ffi.new("tp_error *")
    st = lib.tp_text_load(str(FIX / "text-f16.gguf").encode(), params, out, err)
    assert st == lib.TP_ERR_INVALID_ARGUMENT and b"kv_type" in ffi.string(err.message)
