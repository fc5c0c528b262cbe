"""tp_conv2d (im2col + mul_mat + bias) against torch.nn.functional.conv2d."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from encoder.graph import Context, ThreadPool, shape, to_numpy
from encoder.native import ffi, lib
from tp_testing import rel_err  # noqa: E402


def run_conv(pool, x_nhwc, w_oihw, bias, stride, pad, ktype=None, permuted_input=False):
    """x numpy (B, H, W, Cin) = ne [Cin, W, H, B]; w (Cout, Cin, KH, KW) = ne [KW, KH, Cin, Cout]."""
    ctx = Context()
    if permuted_input:
        # hold x as (B, Cin, H, W) = ne [W, H, Cin, B] and view it as [Cin, W, H, B]
        tx = ctx.tensor(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
        tx = lib.tp_permute(ctx.ptr, tx, 1, 2, 0, 3)
    else:
        tx = ctx.tensor(x_nhwc)
    tw = ctx.tensor(w_oihw, ktype)
    tb = ctx.tensor(bias) if bias is not None else ffi.NULL
    y = lib.tp_conv2d(ctx.ptr, tx, tw, tb, stride[1], stride[0], pad[1], pad[0])
    ctx.check()
    ctx.compute([y], pool)
    return to_numpy(y), shape(y)  # (the context dies on return: read everything here)


def torch_conv(x_nhwc, w, bias, stride, pad):
    xt = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)
    y = F.conv2d(xt, torch.from_numpy(w), None if bias is None else torch.from_numpy(bias), stride=stride,
                 padding=pad)
    return y.permute(0, 2, 3, 1).contiguous().numpy()


CASES = [
    # (B, H, W, Cin, Cout, KH, KW, stride (y, x), pad (y, x))
    (2, 9, 11, 5, 7, 3, 3, (1, 1), (1, 1)),
    (1, 10, 13, 4, 6, 3, 3, (2, 2), (1, 1)),
    (3, 7, 8, 3, 5, 3, 3, (1, 1), (0, 0)),
    (1, 32, 48, 3, 16, 16, 16, (16, 16), (0, 0)),  # SAM patch embedding, smaller
    (2, 6, 5, 9, 4, 1, 1, (1, 1), (0, 0)),  # 1x1 fast path
    (1, 7, 9, 6, 3, 1, 1, (2, 2), (0, 0)),  # 1x1 with stride: im2col
    (2, 9, 7, 4, 3, 2, 3, (2, 1), (0, 1)),  # rectangular kernel, unequal strides/pads
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:7])) + f"_s{c[7][0]}{c[7][1]}_p{c[8][0]}{c[8][1]}")
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_conv2d(pool, case, with_bias):
    B, H, W, Cin, Cout, KH, KW, stride, pad = case
    rng = np.random.default_rng(abs(hash(case)) % 2**32)
    x = rng.standard_normal((B, H, W, Cin)).astype(np.float32)
    w = rng.standard_normal((Cout, Cin, KH, KW)).astype(np.float32)
    b = rng.standard_normal(Cout).astype(np.float32) if with_bias else None
    got, y_shape = run_conv(pool, x, w, b, stride, pad)
    ref = torch_conv(x, w, b, stride, pad)
    assert y_shape == ref.shape
    assert rel_err(got, ref) < 1e-5


@pytest.mark.parametrize("case", [CASES[0], CASES[4]], ids=["3x3", "1x1"])
def test_conv2d_strided_input(pool, case):
    """x as a permuted (non-contiguous) view."""
    B, H, W, Cin, Cout, KH, KW, stride, pad = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal((B, H, W, Cin)).astype(np.float32)
    w = rng.standard_normal((Cout, Cin, KH, KW)).astype(np.float32)
    b = rng.standard_normal(Cout).astype(np.float32)
    got, _ = run_conv(pool, x, w, b, stride, pad, permuted_input=True)
    assert rel_err(got, torch_conv(x, w, b, stride, pad)) < 1e-5


def test_conv2d_f16_kernel(pool):
    """An F16 kernel: compare with torch on the F16-rounded weights (the mul_mat's precision applies)."""
    B, H, W, Cin, Cout, KH, KW, stride, pad = CASES[1]
    rng = np.random.default_rng(4)
    x = rng.standard_normal((B, H, W, Cin)).astype(np.float32)
    w = rng.standard_normal((Cout, Cin, KH, KW)).astype(np.float32)
    b = rng.standard_normal(Cout).astype(np.float32)
    got, _ = run_conv(pool, x, w, b, stride, pad, ktype=lib.TP_TYPE_F16)
    ref = torch_conv(x, w.astype(np.float16).astype(np.float32), b, stride, pad)
    assert rel_err(got, ref) < 1e-4


def test_conv2d_errors():
    ctx = Context()
    x = ctx.tensor(np.zeros((1, 4, 4, 3), np.float32))
    w = ctx.tensor(np.zeros((5, 2, 3, 3), np.float32))  # Cin 2 != 3
    assert lib.tp_conv2d(ctx.ptr, x, w, ffi.NULL, 1, 1, 0, 0) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_SHAPE
    assert "tp_conv2d" in ffi.string(lib.tp_context_error(ctx.ptr)).decode()
    ctx = Context()
    x = ctx.tensor(np.zeros((1, 4, 4, 3), np.float32))
    w = ctx.tensor(np.zeros((5, 3, 3, 3), np.float32))
    assert lib.tp_conv2d(ctx.ptr, x, w, ffi.NULL, 0, 1, 0, 0) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_INVALID_ARGUMENT
    ctx = Context()
    x = ctx.tensor(np.zeros((1, 4, 4, 3), np.float32))
    w = ctx.tensor(np.zeros((5, 3, 3, 3), np.float32))
    b = ctx.tensor(np.zeros(4, np.float32))
    assert lib.tp_conv2d(ctx.ptr, x, w, b, 1, 1, 0, 0) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_SHAPE
    ctx = Context()
    x = ctx.tensor(np.zeros((1, 2, 2, 3), np.float32))
    w = ctx.tensor(np.zeros((5, 3, 3, 3), np.float32))  # 3x3 kernel on 2x2 without padding
    assert lib.tp_conv2d(ctx.ptr, x, w, ffi.NULL, 1, 1, 0, 0) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_SHAPE
