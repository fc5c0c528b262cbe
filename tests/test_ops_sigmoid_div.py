"""tp_sigmoid and tp_div (the sigmoid MoE router and its weight renormalisation) against torch: contiguous and
strided (transposed) inputs, 1 and 2 threads, tp_div's broadcasting of b, special values, and the errors."""

import numpy as np
import pytest
import torch

from encoder.graph import Context, ThreadPool, to_numpy
from encoder.native import ffi, lib


def _run(ctx, out, n_threads=2):
    assert out != ffi.NULL, ffi.string(lib.tp_context_error(ctx.ptr))
    ctx.compute([out], ThreadPool(n_threads))
    return to_numpy(out)


@pytest.mark.parametrize("strided", [False, True], ids=["contig", "transposed"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_sigmoid_vs_torch(strided, n_threads):
    rng = np.random.default_rng(3)
    x = np.concatenate([np.linspace(-30, 30, 3001, dtype=np.float32), rng.standard_normal(3000).astype(np.float32) * 4,
                        np.array([0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 100.0, -100.0, 1e4, -1e4, 87.0], np.float32)])
    x = x[: (x.size // 43) * 43].reshape(-1, 43)
    ctx = Context()
    t = lib.tp_transpose(ctx.ptr, ctx.tensor(np.ascontiguousarray(x.T))) if strided else ctx.tensor(x)
    got = _run(ctx, lib.tp_sigmoid(ctx.ptr, t), n_threads).reshape(x.shape).astype(np.float64)
    want = torch.sigmoid(torch.from_numpy(x).double()).numpy()
    normal = want > 1e-37
    assert np.all(np.abs(got - want)[normal] <= 3e-7 * want[normal])  # expf, 1 + e and the division: ~1.5 ulp
    assert np.all(np.abs(got[~normal]) <= 1e-37)


def test_sigmoid_special_values():
    x = np.array([[np.inf, -np.inf, np.nan, 0.0]], np.float32)
    ctx = Context()
    got = _run(ctx, lib.tp_sigmoid(ctx.ptr, ctx.tensor(x)))[0]
    assert got[0] == 1.0 and got[1] == 0.0 and np.isnan(got[2]) and got[3] == 0.5


@pytest.mark.parametrize("b_shape", [(2, 5, 7), (2, 1, 7), (2, 5, 1), (1, 1, 1)],
                         ids=["same", "bcast1", "bcast0", "scalar"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_div_vs_torch(b_shape, n_threads):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2, 5, 7)).astype(np.float32)
    b = (rng.uniform(0.1, 3.0, b_shape) * rng.choice([-1, 1], b_shape)).astype(np.float32)
    ctx = Context()
    got = _run(ctx, lib.tp_div(ctx.ptr, ctx.tensor(a), ctx.tensor(b)), n_threads).reshape(a.shape)
    want = (torch.from_numpy(a) / torch.from_numpy(b)).numpy()  # float32 division: correctly rounded both ways
    assert np.array_equal(got, want)


def test_div_strided_and_errors():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((9, 4)).astype(np.float32)
    b = rng.uniform(0.5, 2.0, (4, 9)).astype(np.float32)
    ctx = Context()
    ta = lib.tp_transpose(ctx.ptr, ctx.tensor(np.ascontiguousarray(a.T)))  # a, read through strides
    got = _run(ctx, lib.tp_div(ctx.ptr, ta, ctx.tensor(b.T.copy()))).reshape(9, 4)
    assert np.array_equal(got, (torch.from_numpy(a) / torch.from_numpy(b.T.copy())).numpy())
    ctx2 = Context()
    ones34, ones24 = np.ones((3, 4), np.float32), np.ones((2, 4), np.float32)
    assert lib.tp_div(ctx2.ptr, ctx2.tensor(ones34), ctx2.tensor(ones24)) == ffi.NULL  # [4, 2] not broadcast to [4, 3]
    assert "tp_div" in ffi.string(lib.tp_context_error(ctx2.ptr)).decode()
    ctx3 = Context()
    assert lib.tp_sigmoid(ctx3.ptr, ctx3.tensor(np.ones((3, 4), np.float32), 1)) == ffi.NULL  # F16: refused
    assert "tp_sigmoid" in ffi.string(lib.tp_context_error(ctx3.ptr)).decode()
