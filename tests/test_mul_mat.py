"""tp_mul_mat: every weight type × every CPU path this machine has × 1/2 threads, against a
dequantise-then-float64 matmul; strided activations, broadcasting, the GEMM and decode paths, errors."""

import numpy as np
import pytest

from encoder.graph import Context, ThreadPool, to_numpy
from encoder.native import TilepassError, ffi, lib
from tp_testing import rel_err  # noqa: E402

F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, I32, BF16 = 0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 26, 30
PATHS = list(range(int(lib.tp_cpu_best_path()) + 1))
PATH_IDS = [ffi.string(lib.tp_cpu_path_name(p)).decode() for p in PATHS]
TYPE_NAMES = {F32: "f32", F16: "f16", BF16: "bf16", Q8_0: "q8_0", Q4_0: "q4_0", Q4_1: "q4_1", Q5_0: "q5_0",
              Q5_1: "q5_1", Q4_K: "q4_K", Q5_K: "q5_K", Q6_K: "q6_K"}

# Tolerances on max-abs error / max-abs of the reference:
#  - F32/F16 weights multiply F32 activations in F32: rounding only;
#  - BF16 weights on the AVX512-BF16 GEMM round the activations to BF16 (as ggml does): ~2^-9 each;
#  - quantised weights multiply 8-bit activation blocks (d = max|x|/127): <= 1/254 of each block's max.
TOL = {F32: 1e-5, F16: 1e-5, BF16: 1.5e-2, Q8_0: 2e-2, Q4_0: 2e-2, Q4_1: 2e-2, Q5_0: 2e-2, Q5_1: 2e-2, Q4_K: 2e-2,
       Q5_K: 2e-2, Q6_K: 2e-2}


def run_mm(path, pool, w, x, wtype, view=None):
    """w: numpy [..., M, K] weights, x: numpy [..., N, K]. Returns (ours, dequantised weights)."""
    ctx = Context(cpu_path=path)
    ta = ctx.tensor(w, wtype)
    if view == "transposed":
        # x given as [..., K, N]: transpose gives a [K, N] view with nb[0] != 4
        tb = lib.tp_transpose(ctx.ptr, ctx.tensor(np.ascontiguousarray(np.swapaxes(x, -1, -2))))
    elif view == "rowstride":
        # a view of every other row of a bigger tensor (row stride 2K floats)
        big = np.zeros(x.shape[:-2] + (x.shape[-2] * 2, x.shape[-1]), np.float32)
        big[..., ::2, :] = x
        t = ctx.tensor(big)
        ne = ffi.new("int64_t[4]", list(reversed(x.shape)) + [1] * (4 - x.ndim))
        nb = ffi.new("size_t[4]", [lib.tp_tensor_nb(t, i) for i in range(4)])
        nb[1] = nb[1] * 2
        tb = lib.tp_view(ctx.ptr, t, x.ndim, ne, nb, 0)
    else:
        tb = ctx.tensor(x)
    out = lib.tp_mul_mat(ctx.ptr, ta, tb)
    if out == ffi.NULL:
        ctx.check()
    ctx.compute([out], pool)
    return to_numpy(out), to_numpy(ta)


def reference(wd, x):
    a2 = wd.shape[0] if wd.ndim == 4 else 1
    w64, x64 = wd.astype(np.float64), x.astype(np.float64)
    if wd.ndim == 4:  # broadcast the weights' batch dims over the activations'
        w64 = np.repeat(np.repeat(w64, x.shape[0] // a2, axis=0), x.shape[1] // wd.shape[1], axis=1)
    return x64 @ np.swapaxes(w64, -1, -2)


SHAPES = [  # (K, M, N): decode rows, GEMM with tails, K beyond one k-block, M beyond one row block
    (64, 45, 1),
    (96, 70, 3),
    (67, 45, 13),
    (520, 33, 29),
    (1056, 67, 12),
    (530, 531, 40),  # a thread's weight rows beyond one row block; K and M not multiples of the 8×8 pack
]


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("wtype", [F32, F16, BF16], ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_float_weights(path, wtype, shape, pool):
    K, M, N = shape
    rng = np.random.default_rng(K * 7 + M + N)
    w = rng.standard_normal((M, K)).astype(np.float32)
    x = rng.standard_normal((N, K)).astype(np.float32)
    got, wd = run_mm(path, pool, w, x, wtype)
    tol = TOL[wtype] if wtype != BF16 else 1e-5 if N < 8 or path < 2 else TOL[BF16]
    assert got.shape == (N, M)
    assert rel_err(got, reference(wd, x)) < tol


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("view", ["transposed", "rowstride"])
@pytest.mark.parametrize("N", [2, 21])
def test_strided_activations_and_broadcast(path, view, N, pool):
    rng = np.random.default_rng(N)
    K, M = 131, 37
    w = rng.standard_normal((3, 1, M, K)).astype(np.float32)  # a: [K, M, 1, 3]
    x = rng.standard_normal((3, 2, N, K)).astype(np.float32)  # b: [K, N, 2, 3]
    got, wd = run_mm(path, pool, w, x, F32, view=view)
    assert got.shape == (3, 2, N, M)
    assert rel_err(got, reference(wd, x)) < 1e-5


QTYPES = [Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K]


@pytest.mark.parametrize("wtype", QTYPES, ids=[TYPE_NAMES[t] for t in QTYPES])
@pytest.mark.parametrize("N", [1, 5, 19])
def test_quantised_weights_all_paths(wtype, N, pool):
    K = 512 if wtype in (Q4_K, Q5_K, Q6_K) else 320
    M = 37
    rng = np.random.default_rng(wtype * 10 + N)
    w = rng.standard_normal((M, K)).astype(np.float32)
    x = (rng.standard_t(4, (2, N, K))).astype(np.float32)  # heavy-tailed activations, 2 batches
    results = []
    for path in PATHS:
        got, wd = run_mm(path, pool, w, x, wtype)
        assert got.shape == (2, N, M)
        assert rel_err(got, reference(wd, x)) < TOL[wtype], ffi.string(lib.tp_cpu_path_name(path))
        results.append(got)
    # integer dot products are exact: paths differ only by float summation order
    for got in results[1:]:
        assert rel_err(got, results[0]) < 1e-5


DOT_PATHS = [p for p in PATHS if p <= 1]  # scalar, AVX2: per-token dot products for quantised weights


@pytest.mark.parametrize("path", DOT_PATHS, ids=PATH_IDS[:len(DOT_PATHS)])
@pytest.mark.parametrize("wtype", [Q8_0, Q4_K, Q6_K], ids=["q8_0", "q4_K", "q6_K"])
def test_a_tokens_product_does_not_depend_on_its_neighbours(path, wtype, pool):
    """Sequences decoded together (tp_text_eval_batch) get the same logits bits as alone where a token's row of
    the product is the same whatever tokens share the call: on the scalar and AVX2 paths for quantised weights,
    1..9 tokens (the AVX2 Q8_0 kernel takes 4 at a time, the rest one by one) against each token alone, and the
    dequantised reference. (AVX512-VNNI sums a lone token's row in another order than a group's, and float
    weights take the GEMM from 8 tokens: there batched and alone differ by rounding only.)"""
    K, M = 1280, 70
    rng = np.random.default_rng(wtype + 100 * path)
    w = rng.standard_normal((M, K)).astype(np.float32)
    x = rng.standard_normal((9, K)).astype(np.float32)
    alone = [run_mm(path, pool, w, x[n:n + 1], wtype)[0].reshape(M) for n in range(9)]
    for N in (2, 4, 5, 9):
        got, wd = run_mm(path, pool, w, x[:N], wtype)
        assert rel_err(got, reference(wd, x[:N])) < TOL[wtype]
        for n in range(N):
            assert np.array_equal(got.reshape(N, M)[n], alone[n]), (N, n)


def test_quantised_activation_error_is_what_8bit_blocks_give(pool):
    """Q8_0 weights: our result equals a float64 model of the integer algorithm (w8 · x8 per block)."""
    rng = np.random.default_rng(5)
    K, M, N = 256, 20, 3
    w = rng.standard_normal((M, K)).astype(np.float32)
    x = rng.standard_normal((N, K)).astype(np.float32)
    got, wd = run_mm(PATHS[-1], pool, w, x, Q8_0)
    xb = x.reshape(N, K // 32, 32)
    d = (np.abs(xb).max(-1, keepdims=True) / np.float32(127)).astype(np.float32)
    idv = np.where(d == 0, 0, np.float32(1) / d).astype(np.float32)
    xq = np.rint(xb * idv) * d
    ref = xq.reshape(N, K).astype(np.float64) @ wd.astype(np.float64).T
    assert rel_err(got, ref) < 1e-5


def test_errors():
    ctx = Context()
    a = ctx.tensor(np.zeros((4, 8), np.float32))
    assert lib.tp_mul_mat(ctx.ptr, a, ctx.tensor(np.zeros((3, 7), np.float32))) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_SHAPE
    assert "K mismatch" in ffi.string(lib.tp_context_error(ctx.ptr)).decode()

    ctx = Context()
    ai = ctx.tensor(np.zeros((4, 8), np.int32))
    assert lib.tp_mul_mat(ctx.ptr, ai, ctx.tensor(np.zeros((3, 8), np.float32))) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_TYPE

    ctx = Context()
    a = ctx.tensor(np.zeros((4, 8), np.float32))
    bh = ctx.tensor(np.zeros((3, 8), np.float32), F16)
    assert lib.tp_mul_mat(ctx.ptr, a, bh) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_TYPE

    ctx = Context()
    a = ctx.tensor(np.zeros((2, 4, 8), np.float32))
    b = ctx.tensor(np.zeros((3, 5, 8), np.float32))
    assert lib.tp_mul_mat(ctx.ptr, a, b) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_SHAPE
    with pytest.raises(TilepassError, match="broadcast"):
        ctx.check()


def test_graph_chain(pool):
    """mul_mat inside a graph: its scratch and output buffers are planned like any op's."""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((64, 48)).astype(np.float32)
    w2 = rng.standard_normal((32, 64)).astype(np.float32)
    x = rng.standard_normal((17, 48)).astype(np.float32)
    ctx = Context()
    h = lib.tp_gelu(ctx.ptr, lib.tp_mul_mat(ctx.ptr, ctx.tensor(w1), ctx.tensor(x)))
    out = lib.tp_mul_mat(ctx.ptr, ctx.tensor(w2), h)
    ctx.compute([out], pool)
    import math

    hh = x.astype(np.float64) @ w1.T.astype(np.float64)
    hh = 0.5 * hh * (1 + np.vectorize(math.erf)(hh / math.sqrt(2)))
    assert rel_err(to_numpy(out), hh @ w2.T.astype(np.float64)) < 1e-5
