"""The int8 GEMM for quantised weights (VNNI, packed weight panels of 32 rows; matmul_avx512.c), as
tp_mul_mat (from 6 tokens) and tp_mul_mat_id (experts with 4 or more tokens) use it: against a
dequantise-then-float64 matmul of the 8-bit activation blocks (exact up to float summation), and
against the portable / AVX2 paths, with row, token and block tails, on 1 and 2 threads."""

import numpy as np
import pytest

from encoder.graph import Context, to_numpy
from encoder.native import ffi, lib
from test_mul_mat import Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q8_0, TYPE_NAMES
from tp_testing import rel_err  # noqa: E402

NAMES = {t: TYPE_NAMES[t] for t in (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K)}  # the int8 GEMM's weight types
BEST = int(lib.tp_cpu_best_path())
AVX2_OR_SCALAR = min(BEST, 1)


def q8_blocks(x: np.ndarray) -> np.ndarray:
    """The activations as tp_quantize_row_q8a rounds them (d = max|x| / 127, q = rint(x / d))."""
    n, k = x.shape
    xb = x.reshape(n, k // 32, 32)
    d = (np.abs(xb).max(-1, keepdims=True) / np.float32(127)).astype(np.float32)
    idv = np.where(d == 0, 0, np.float32(1) / np.where(d == 0, 1, d)).astype(np.float32)
    return (np.rint(xb * idv) * d).reshape(n, k).astype(np.float64)


def mul_mat(path, pool, w, x, wtype):
    ctx = Context(cpu_path=path)
    ta = ctx.tensor(w, wtype)
    out = lib.tp_mul_mat(ctx.ptr, ta, ctx.tensor(x))
    assert out != ffi.NULL, ffi.string(lib.tp_context_error(ctx.ptr))
    ctx.compute([out], pool)
    return to_numpy(out), to_numpy(ta)


SHAPES = [  # K, M, N: row tails (M % 32, M % 64), token tails (N % 4), several panels
    (64, 1, 6),
    (96, 31, 7),
    (256, 33, 13),
    (512, 65, 8),
    (896, 100, 29),
    (1280, 130, 67),
    # K = 4096: a unit of 64 rows packs to 328 KB, so a thread packs 6 units per group (several groups per
    # thread) and runs them over chunks of 48 tokens (two whole, one tail of 7): ops_matmul.c's mm_qgemm
    (4096, 1000, 103),
]


@pytest.mark.parametrize("wtype", list(NAMES), ids=list(NAMES.values()))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_qgemm_against_dequantised(wtype, shape, pool):
    K, M, N = shape
    if wtype in (Q4_K, Q5_K) and K % 256:
        K = 256 * ((K + 255) // 256)
    rng = np.random.default_rng(K + 3 * M + 7 * N + wtype)
    w = rng.standard_normal((M, K)).astype(np.float32)
    x = rng.standard_t(4, (N, K)).astype(np.float32)
    got, wd = mul_mat(BEST, pool, w, x, wtype)
    assert got.shape == (N, M)
    # exact integer products: only the float accumulation differs from this float64 model
    ref = q8_blocks(x) @ wd.reshape(M, K).astype(np.float64).T
    assert rel_err(got, ref) < 1e-5
    assert rel_err(got, x.astype(np.float64) @ wd.reshape(M, K).astype(np.float64).T) < 2e-2
    other, _ = mul_mat(AVX2_OR_SCALAR, pool, w, x, wtype)
    assert rel_err(got, other) < 1e-5


@pytest.mark.parametrize("wtype", [Q8_0, Q4_K], ids=["q8_0", "q4_K"])
def test_qgemm_batches_and_zero_rows(wtype, pool):
    """Several batches (the weights broadcast over them), all-zero activation rows and weight rows."""
    K, M, N = 512, 45, 9
    rng = np.random.default_rng(4)
    w = rng.standard_normal((M, K)).astype(np.float32)
    w[7] = 0.0
    x = rng.standard_normal((3, N, K)).astype(np.float32)
    x[1, 4] = 0.0
    got, wd = mul_mat(BEST, pool, w, x, wtype)
    ref = np.stack([q8_blocks(xb) for xb in x]) @ wd.reshape(M, K).astype(np.float64).T
    assert got.shape == (3, N, M)
    assert rel_err(got, ref) < 1e-5
    assert np.all(got[1, 4] == 0.0) and np.all(got[:, :, 7] == 0.0)


@pytest.mark.parametrize("wtype", [Q8_0, Q4_K, Q5_0, Q5_1], ids=["q8_0", "q4_K", "q5_0", "q5_1"])
@pytest.mark.parametrize("T", [1, 5, 40])
def test_mul_mat_id_qgemm(wtype, T, pool):
    """Experts with many tokens (the int8 GEMM) and with few (row dot products) in one op."""
    rng = np.random.default_rng(T + wtype)
    E, M, K, n_used = 6, 70, 512, 3
    w = rng.standard_normal((E, M, K)).astype(np.float32)
    x = rng.standard_normal((T, 1, K)).astype(np.float32)
    # skewed routing: expert 0 and 1 take most tokens, 5 only one or none
    p = np.array([0.4, 0.3, 0.1, 0.1, 0.08, 0.02])
    ids = np.stack([rng.choice(E, n_used, replace=False, p=p) for _ in range(T)]).astype(np.int32)
    out = {}
    for path in (BEST, AVX2_OR_SCALAR):
        ctx = Context(cpu_path=path)
        tw = ctx.tensor(w, wtype)
        wd = to_numpy(tw).reshape(E, M, K).astype(np.float64)
        o = lib.tp_mul_mat_id(ctx.ptr, tw, ctx.tensor(x), ctx.tensor(ids))
        assert o != ffi.NULL, ffi.string(lib.tp_context_error(ctx.ptr))
        ctx.compute([o], pool)
        out[path] = to_numpy(o).reshape(T, n_used, M)
    xq = q8_blocks(x.reshape(T, K))
    ref = np.einsum("tk,tsmk->tsm", xq, wd[ids])
    assert rel_err(out[BEST], ref) < 1e-5
    assert rel_err(out[BEST], out[AVX2_OR_SCALAR]) < 1e-5
