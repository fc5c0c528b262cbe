"""The Q8_0 KV cache (llama.cpp's -ctk/-ctv q8_0): tp_attention over Q8_0 keys/values (decode form and
query tiles, every CPU path) equals SDPA over the same values quantised and dequantised by gguf-py's own
Q8_0 code; tp_cpy writes the same bytes as gguf-py's quantiser; the text decoder with kv_type q8_0 against
the F32 cache on a tiny model with 32-wide heads (logits within a stated bound, greedy tokens identical);
models whose heads are not whole Q8_0 blocks are refused with a clear error."""

from dataclasses import replace

import gguf
import numpy as np
import pytest

from encoder.graph import Context, to_numpy
from encoder.native import TilepassError, ffi, lib
from encoder.text_model import TextModel
from test_kv_cache_f16 import _attention
from test_ops_attention import PATHS, rand, rel_err, sdpa_ref
from test_text_decoder import FIX, _build

Q8_0 = 8
# max-abs error / max-abs of the logits over 300 positions of the tiny model below: measured 7.9e-3 (the F16
# cache on the same model: 7.7e-3; random tiny models amplify any rounding of the cache over the positions)
KV_LOGIT_TOL = 2e-2


def gguf_q8_roundtrip(a: np.ndarray) -> np.ndarray:
    """Q8_0 quantise + dequantise along the last axis by gguf-py (the independent reference)."""
    q = gguf.quants.quantize(np.ascontiguousarray(a, dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
    return gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).reshape(a.shape).astype(np.float32)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("Nq", [1, 37])  # the decode form (chunks dequantised for all heads); query tiles
@pytest.mark.parametrize("H,Hkv,Nk,D,Dv", [(10, 10, 300, 128, 128), (4, 2, 129, 32, 64), (3, 3, 37, 64, 32)])
def test_attention_q8_kv_equals_dequantised(pool, path, Nq, H, Hkv, Nk, D, Dv):
    rng = np.random.default_rng(H + Nk + D + Nq)
    q, k, v = rand(rng, 1, H, Nq, D), rand(rng, 1, Hkv, Nk, D) * 2, rand(rng, 1, Hkv, Nk, Dv)
    k8, v8 = gguf_q8_roundtrip(k), gguf_q8_roundtrip(v)
    for causal in (False, True):
        mask = None
        if causal:
            mask = np.where(np.arange(Nk)[None, :] <= np.arange(Nq)[:, None] + (Nk - Nq), 0.0, -np.inf)
            mask = mask.astype(np.float32)
        got = _attention(pool, path, q, k, v, Q8_0, causal)
        assert rel_err(got, sdpa_ref(q, k8, v8, mask)) < 1e-5


def test_cpy_quantises_like_gguf(pool):
    """New cache rows go in through tp_cpy: the bytes equal gguf-py's Q8_0 of the same rows."""
    rng = np.random.default_rng(5)
    rows = rand(rng, 6, 64) * 3
    ctx = Context()
    cache = ctx.tensor(np.zeros((10, 64), np.float32), Q8_0)
    ne = ffi.new("int64_t[2]", [64, 6])
    row_bytes = 64 // 32 * 34
    assert lib.tp_tensor_nb(cache, 1) == row_bytes
    nb = ffi.new("size_t[2]", [lib.tp_tensor_nb(cache, 0), row_bytes])
    view = lib.tp_view(ctx.ptr, cache, 2, ne, nb, 3 * row_bytes)
    out = lib.tp_cpy(ctx.ptr, ctx.tensor(rows), view)
    ctx.check()
    ctx.compute([out], pool)
    got = bytes(ffi.buffer(lib.tp_tensor_data(cache), 10 * row_bytes))
    want = gguf.quants.quantize(rows, gguf.GGMLQuantizationType.Q8_0).tobytes()
    assert got[3 * row_bytes:9 * row_bytes] == want
    assert got[:3 * row_bytes] == bytes(3 * row_bytes)  # rows outside the view untouched


def test_cpy_q8_needs_unit_stride_rows():
    ctx = Context()
    cache = ctx.tensor(np.zeros((4, 64), np.float32), Q8_0)
    src = lib.tp_transpose(ctx.ptr, ctx.tensor(np.zeros((64, 4), np.float32)))  # rows not unit-stride
    assert lib.tp_cpy(ctx.ptr, src, cache) == ffi.NULL
    with pytest.raises(TilepassError, match="Q8_0 dst needs rows of whole 32-blocks and a unit-stride src"):
        ctx.check()


@pytest.fixture(scope="module")
def tiny_heads32(tmp_path_factory):
    """A tiny random model whose attention heads are 32 wide (one Q8_0 block per head row), with weights of
    std 0.02 (the default 0.2 makes a model so chaotic that even the F16 cache moves its logits by 3 %)."""
    from reference_models import TINY_SMALL_VOCAB

    dims = replace(TINY_SMALL_VOCAB, text_heads=2, text_kv_heads=2, initializer_range=0.02)
    _, files = _build(tmp_path_factory.mktemp("kvq8"), dims, ("f16",))
    return files["f16"]


def test_decoder_q8_cache_vs_f32_cache(tiny_heads32):
    rng = np.random.default_rng(3)
    ids = [int(t) for t in rng.integers(3, 1000, size=300)]
    out = {}
    for kv in ("f32", "q8_0"):
        m = TextModel(tiny_heads32, n_threads=2, n_ctx=512, n_batch=128, kv_type=kv)
        logits = m.eval(ids, all_logits=True)  # prefill: query tiles over the cache
        m.reset()
        out[kv] = (logits, m.greedy(ids, 24))  # then the decode form
    err = float(np.abs(out["q8_0"][0] - out["f32"][0]).max() / np.abs(out["f32"][0]).max())
    print(f"q8_0 KV cache: logits max-abs error / max-abs {err:.2e} over {len(ids)} positions")
    assert err < KV_LOGIT_TOL, err
    assert out["q8_0"][1] == out["f32"][1]


def test_decoder_q8_cache_refused_for_narrow_heads():
    """The llama.cpp fixture's heads are 8 wide: not whole Q8_0 blocks."""
    with pytest.raises(TilepassError, match="multiples of 32"):
        TextModel(FIX / "text-f16.gguf", n_ctx=16, kv_type="q8_0")
