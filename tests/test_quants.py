"""Quantised types: our bytes against gguf.quants (Q8_0, Q4_0 byte-exact; K-quants decoded by
gguf.quants.dequantize equal our dequantisation, with ggml-level error), the C API's checks."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as GT
from gguf import quants as gq

from encoder.native import ffi, lib, new_error

F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16 = 0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 30
GGUF = {Q4_0: GT.Q4_0, Q4_1: GT.Q4_1, Q5_0: GT.Q5_0, Q5_1: GT.Q5_1, Q8_0: GT.Q8_0, Q4_K: GT.Q4_K, Q5_K: GT.Q5_K,
        Q6_K: GT.Q6_K, F16: GT.F16, BF16: GT.BF16}

# RMSE relative to the row's RMS that ggml's reference quantisers reach on Gaussian data
# (bounds set a little above the figures reported by this suite: see the report; ggml's
# reference quantisers give the same bytes, hence the same error, where verified).
RMSE_BOUND = {Q8_0: 0.006, Q4_0: 0.12, Q4_1: 0.085, Q5_0: 0.06, Q5_1: 0.042, Q4_K: 0.085, Q5_K: 0.042, Q6_K: 0.021}


def quantize(t, x):
    rows, n = x.shape
    size = int(lib.tp_type_row_bytes(t, n)) * rows
    dst = np.zeros(size, np.uint8)
    written = ffi.new("size_t *")
    err = new_error()
    src = np.ascontiguousarray(x, np.float32)
    st = lib.tp_quantize(t, ffi.cast("float *", ffi.from_buffer(src)), rows, n,
                         ffi.cast("void *", ffi.from_buffer(dst)), size, written, err)
    assert st == lib.TP_OK, ffi.string(err.message)
    assert written[0] == size
    return dst.reshape(rows, -1)


def dequantize(t, q, rows, n):
    out = np.zeros((rows, n), np.float32)
    err = new_error()
    st = lib.tp_dequantize(t, ffi.cast("void *", ffi.from_buffer(q)), q.size, rows, n,
                           ffi.cast("float *", ffi.from_buffer(out)), err)
    assert st == lib.TP_OK, ffi.string(err.message)
    return out


def heavy_tailed(rng, rows, n):
    """Real-looking weights: Student-t / Laplace rows with a few large outliers."""
    x = np.concatenate([rng.standard_t(3, (rows // 2, n)), rng.laplace(0, 0.02, (rows - rows // 2, n))])
    idx = rng.integers(0, x.size, x.size // 500 + 1)
    x.flat[idx] *= 20
    return (x * 0.05).astype(np.float32)


def data(kind, rows, n, seed):
    rng = np.random.default_rng(seed)
    if kind == "gauss":
        return rng.standard_normal((rows, n)).astype(np.float32)
    if kind == "heavy":
        return heavy_tailed(rng, rows, n)
    x = rng.standard_normal((rows, n)).astype(np.float32)  # edge cases: zeros, constant, tiny, ties
    x[0] = 0
    x[1] = 0.5
    x[2, :32] = np.arange(32) - 16
    x[3] *= 1e-8
    return x


KINDS = ["gauss", "heavy", "edge"]


@pytest.mark.parametrize("t", [Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16, BF16],
                         ids=["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "f16", "bf16"])
@pytest.mark.parametrize("kind", KINDS)
def test_bytes_equal_gguf(t, kind):
    x = data(kind, 16, 256, seed=t)
    ours = quantize(t, x)
    theirs = gq.quantize(x, GGUF[t])
    np.testing.assert_array_equal(ours, theirs.view(np.uint8).reshape(ours.shape))
    np.testing.assert_array_equal(dequantize(t, ours, 16, 256), gq.dequantize(theirs, GGUF[t]))


@pytest.mark.parametrize("t", [Q4_K, Q5_K, Q6_K], ids=["q4_K", "q5_K", "q6_K"])
@pytest.mark.parametrize("kind", KINDS)
def test_kquants_decode_with_gguf_and_error(t, kind):
    rows, n = 16, 512
    x = data(kind, rows, n, seed=t)
    ours = quantize(t, x)
    mine = dequantize(t, ours, rows, n)
    theirs = gq.dequantize(ours.reshape(-1), GGUF[t]).reshape(rows, n)
    np.testing.assert_array_equal(mine, theirs)
    if kind == "gauss":
        rmse = np.sqrt(np.mean((mine - x) ** 2)) / np.sqrt(np.mean(x**2))
        assert rmse < RMSE_BOUND[t], rmse


@pytest.mark.parametrize("t", [Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K],
                         ids=["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_K", "q5_K", "q6_K"])
def test_error_bounds_gauss(t):
    x = data("gauss", 64, 1024, seed=99)
    mine = dequantize(t, quantize(t, x), 64, 1024)
    rmse = np.sqrt(np.mean((mine - x) ** 2)) / np.sqrt(np.mean(x**2))
    assert rmse < RMSE_BOUND[t], rmse


def test_tensor_roundtrip_and_getrows_path():
    """Quantised leaves: tp_tensor_set_f32 quantises, tp_tensor_get_f32 dequantises."""
    from encoder.graph import Context, to_numpy

    x = data("gauss", 4, 256, seed=3)
    ctx = Context()
    t = ctx.tensor(x, Q4_K)
    assert lib.tp_tensor_nb(t, 1) == 144
    np.testing.assert_array_equal(to_numpy(t), dequantize(Q4_K, quantize(Q4_K, x), 4, 256))


def test_api_rejects_bad_rows():
    x = np.zeros((2, 48), np.float32)
    dst = np.zeros(4096, np.uint8)
    err = new_error()
    written = ffi.new("size_t *")
    src = ffi.cast("float *", ffi.from_buffer(x))
    d = ffi.cast("void *", ffi.from_buffer(dst))
    assert lib.tp_quantize(Q4_K, src, 2, 48, d, dst.size, written, err) == lib.TP_ERR_SHAPE
    assert b"multiple" in ffi.string(err.message)
    assert lib.tp_quantize(Q8_0, src, 2, 48, d, dst.size, written, err) == lib.TP_ERR_SHAPE
    assert lib.tp_quantize(Q8_0, src, 1, 32, d, 10, written, err) == lib.TP_ERR_INVALID_ARGUMENT
    assert lib.tp_quantize(26, src, 1, 32, d, dst.size, written, err) == lib.TP_ERR_TYPE
    assert lib.tp_quantize(Q8_0, src, 1, 32, d, dst.size, written, err) == lib.TP_OK
    assert written[0] == 34
    out = np.zeros(32, np.float32)
    assert lib.tp_dequantize(Q8_0, d, 33, 1, 32, ffi.cast("float *", ffi.from_buffer(out)), err) == lib.TP_ERR_INVALID_ARGUMENT
