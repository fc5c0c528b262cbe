"""tp_linear = act(tp_mul_mat(a, b) + bias) as one op: on every weight type, CPU path and GEMM/decode form
it gives exactly the numbers of tp_mul_mat, tp_add and tp_gelu / tp_quick_gelu (the int8 GEMM applies
bias and activation to each stored tile, the other paths in a pass after the product; both use the same
float operations). The ops it replaces are proven against references in test_mul_mat.py and
test_activations.py; errors."""

import numpy as np
import pytest

from encoder.graph import Context, to_numpy
from encoder.native import ffi, lib

F32, F16, Q4_0, Q8_0, Q4_K, BF16 = 0, 1, 2, 8, 12, 30
PATHS = list(range(int(lib.tp_cpu_best_path()) + 1))
PATH_IDS = [ffi.string(lib.tp_cpu_path_name(p)).decode() for p in PATHS]
ACTS = {"none": 0, "gelu": 1, "quick_gelu": 2, "gelu_tanh": 3}


def both(path, pool, w, x, bias, act, wtype):
    """(tp_linear, the separate ops) on the same inputs, in one graph."""
    ctx = Context(cpu_path=path)
    ta, tb = ctx.tensor(w, wtype), ctx.tensor(x)
    tbias = ctx.tensor(bias) if bias is not None else ffi.NULL
    fused = lib.tp_linear(ctx.ptr, ta, tb, tbias, act)
    ref = lib.tp_mul_mat(ctx.ptr, ta, tb)
    if bias is not None:
        ref = lib.tp_add(ctx.ptr, ref, tbias)
    if act == 1:
        ref = lib.tp_gelu(ctx.ptr, ref)
    elif act == 2:
        ref = lib.tp_quick_gelu(ctx.ptr, ref)
    elif act == 3:
        ref = lib.tp_gelu_tanh(ctx.ptr, ref)
    if fused == ffi.NULL or ref == ffi.NULL:
        ctx.check()
    ctx.compute([fused, ref], pool)
    return to_numpy(fused), to_numpy(ref)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("wtype", [F32, F16, BF16, Q8_0, Q4_0, Q4_K], ids=["f32", "f16", "bf16", "q8_0", "q4_0", "q4_K"])
@pytest.mark.parametrize("N", [1, 5, 19, 70])
@pytest.mark.parametrize("act", list(ACTS.values()), ids=list(ACTS))
def test_same_numbers_as_the_separate_ops(path, wtype, N, act, pool):
    K = 512 if wtype == Q4_K else 320
    M = 45  # not a multiple of the int8 GEMM's 32-row panels: the masked tail is exercised
    rng = np.random.default_rng(N * 10 + act + wtype)
    w = rng.standard_normal((M, K)).astype(np.float32) * 0.2
    x = rng.standard_normal((2, N, K)).astype(np.float32)  # 2 batches
    bias = rng.standard_normal(M).astype(np.float32)
    for b in (bias, None):
        got, want = both(path, pool, w, x, b, act, wtype)
        assert got.shape == (2, N, M)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_few_weight_rows(path, pool):
    """M < 16 takes the dot-product path even for many tokens (SAM's 14x14 rel-pos products)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((14, 64)).astype(np.float32)
    x = rng.standard_normal((3, 40, 64)).astype(np.float32)
    got, want = both(path, pool, w, x, rng.standard_normal(14).astype(np.float32), 1, F32)
    np.testing.assert_array_equal(got, want)
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    ctx = Context(cpu_path=path)
    out = lib.tp_mul_mat(ctx.ptr, ctx.tensor(w), ctx.tensor(x))
    ctx.compute([out], pool)
    assert np.abs(to_numpy(out) - ref).max() <= 1e-5 * np.abs(ref).max()


def test_errors():
    ctx = Context()
    a, b = ctx.tensor(np.zeros((4, 8), np.float32)), ctx.tensor(np.zeros((3, 8), np.float32))
    assert lib.tp_linear(ctx.ptr, a, b, ctx.tensor(np.zeros(5, np.float32)), 0) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_SHAPE
    assert "bias must be F32 [4]" in ffi.string(lib.tp_context_error(ctx.ptr)).decode()

    ctx = Context()
    a, b = ctx.tensor(np.zeros((4, 8), np.float32)), ctx.tensor(np.zeros((3, 8), np.float32))
    assert lib.tp_linear(ctx.ptr, a, b, ctx.tensor(np.zeros(4, np.float32), F16), 0) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_SHAPE

    ctx = Context()
    a, b = ctx.tensor(np.zeros((4, 8), np.float32)), ctx.tensor(np.zeros((3, 8), np.float32))
    assert lib.tp_linear(ctx.ptr, a, b, ffi.NULL, 7) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_INVALID_ARGUMENT
    assert "unknown activation 7" in ffi.string(lib.tp_context_error(ctx.ptr)).decode()

    ctx = Context()  # the product's own checks still apply
    a, b = ctx.tensor(np.zeros((4, 8), np.float32)), ctx.tensor(np.zeros((3, 7), np.float32))
    assert lib.tp_linear(ctx.ptr, a, b, ffi.NULL, 1) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_SHAPE
