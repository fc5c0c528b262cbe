"""One-token GEMV on quantised weights (the decode path: four weight rows at a time over whole rows of
up to 16384 values, blocks not a multiple of 8, rows not a multiple of 4; longer rows in segments of
4096): every CPU path
against a float64 model of the integer algorithm, paths equal up to float summation order, and 1 vs
2 threads identical (each output row is computed by one thread, in the same order)."""

import numpy as np
import pytest

from encoder.graph import ThreadPool
from test_mul_mat import PATHS, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0, TOL, reference, run_mm
from tp_testing import rel_err

# (K, M): rows not a multiple of 4 or of the 64-row chunk; K with one or two activation segments,
# the second one ending in blocks that are not a multiple of 8 (Q8_0: 6848 = 214 blocks)
SHAPES_Q8 = [(1280, 37), (6848, 67), (4096 + 96, 5), (32, 9), (16384 + 32 * 9, 6)]  # the last: beyond one pass
SHAPES_QK = [(1280, 37), (6912, 67), (256, 3), (16384 + 256, 5)]


def _case(wtype, K, M, N, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((M, K)).astype(np.float32)
    x = rng.standard_t(4, (N, K)).astype(np.float32)
    return w, x


@pytest.mark.parametrize("wtype,K,M", [(Q8_0, K, M) for K, M in SHAPES_Q8] + [(t, K, M) for t in (Q4_K, Q5_K, Q6_K) for K, M in SHAPES_QK]
                         + [(Q4_0, 1280, 37)]
                         # the 32-block types llama.cpp's K-quant files hold for 896-wide rows: blocks not a
                         # multiple of 8 (896 = 28 blocks), rows not a multiple of 4
                         + [(t, K, M) for t in (Q4_0, Q4_1, Q5_0, Q5_1) for K, M in ((896, 38), (6848, 5))])
def test_gemv_one_token(wtype, K, M):
    w, x = _case(wtype, K, M, 1, K + M + wtype)
    pool1, pool2 = ThreadPool(1), ThreadPool(2)
    results = []
    for path in PATHS:
        got, wd = run_mm(path, pool1, w, x, wtype)
        assert rel_err(got, reference(wd, x)) < TOL[wtype]
        got2, _ = run_mm(path, pool2, w, x, wtype)
        np.testing.assert_array_equal(got, got2)
        results.append(got)
    for got in results[1:]:
        assert rel_err(got, results[0]) < 1e-5


@pytest.mark.parametrize("wtype", [Q8_0, Q4_K, Q5_K, Q5_0, Q5_1])
@pytest.mark.parametrize("N", [2, 5])
def test_gemv_few_tokens_match_one_token(wtype, N):
    """A token's result does not depend on the other tokens of the call (group of 4 + tail of 1)."""
    K, M = 1280, 70
    w, x = _case(wtype, K, M, N, N * 3 + wtype)
    pool = ThreadPool(2)
    many, _ = run_mm(PATHS[-1], pool, w, x, wtype)
    for n in range(N):
        one, _ = run_mm(PATHS[-1], pool, w, x[n : n + 1], wtype)
        assert rel_err(many[n : n + 1], one) < 1e-5
