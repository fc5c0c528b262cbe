"""layer_norm, rms_norm and softmax against torch: odd sizes, non-contiguous views, broadcasting,
1 and 2 threads, misuse (NULL result + context error naming the op)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from encoder.graph import Context, ThreadPool, to_numpy, shape
from encoder.native import ffi, lib
from tp_testing import rel_err  # noqa: E402

TOL = 1e-5


def permuted_view(ctx, x, perm):
    """A non-contiguous tp view whose logical contents equal the 4-D array x: the data is stored
    as x.transpose(perm) and tp_permute'd back."""
    base = np.ascontiguousarray(x.transpose(perm))
    tb = ctx.tensor(base)
    axes = [0] * 4
    for k in range(4):
        axes[3 - k] = 3 - perm[k]
    v = lib.tp_permute(ctx.ptr, tb, *axes)
    assert v != ffi.NULL
    np.testing.assert_array_equal(to_numpy(v), x)
    return v


def strided_rows_view(ctx, x, extra=3):
    """A view of x (any dims) whose rows are contiguous but spaced apart (padding after each row)."""
    pad = np.full(x.shape[:-1] + (extra,), np.nan, np.float32)
    base = np.concatenate([x, pad], axis=-1)
    tb = ctx.tensor(base)
    nd = x.ndim
    ne = ffi.new("int64_t[4]", list(reversed(x.shape)))
    nb = ffi.new("size_t[4]", list(reversed(base.strides)))
    v = lib.tp_view(ctx.ptr, tb, nd, ne, nb, 0)
    assert v != ffi.NULL
    np.testing.assert_array_equal(to_numpy(v), x)
    return v


def make_input(ctx, x, layout):
    if layout == "contig":
        return ctx.tensor(x)
    if layout == "permuted":  # dim 0 strided: transpose of the two innermost dims in memory
        return permuted_view(ctx, x, (2, 0, 3, 1))
    if layout == "strided_rows":
        return strided_rows_view(ctx, x)
    raise ValueError(layout)


def err_msg(ctx):
    return ffi.string(lib.tp_context_error(ctx.ptr)).decode()


LAYOUTS = ["contig", "permuted", "strided_rows"]

# ---------------------------------------------------------------------------------------------
# layer_norm
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape4,affine,eps", [((2, 3, 5, 37), "wb", 1e-5), ((1, 2, 9, 1283), "w", 1e-6),
                                              ((3, 1, 4, 1), "none", 1e-5), ((2, 2, 3, 8), "b", 0.0)])
def test_layer_norm(pool, layout, shape4, affine, eps):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape4) * 3 + 0.7).astype(np.float32)
    if eps == 0.0:
        x[..., 0] += 5.0  # keep var > 0
    ne0 = shape4[-1]
    w = rng.standard_normal(ne0).astype(np.float32) if "w" in affine else None
    b = rng.standard_normal(ne0).astype(np.float32) if "b" in affine else None
    ctx = Context()
    tx = make_input(ctx, x, layout)
    tw = ctx.tensor(w) if w is not None else ffi.NULL
    tbias = ctx.tensor(b) if b is not None else ffi.NULL
    out = lib.tp_layer_norm(ctx.ptr, tx, tw, tbias, eps)
    assert out != ffi.NULL, err_msg(ctx)
    ctx.compute([out], pool)
    ref = F.layer_norm(torch.from_numpy(x), (ne0,),
                       torch.from_numpy(w) if w is not None else None,
                       torch.from_numpy(b) if b is not None else None, eps)
    assert shape(out) == x.shape
    assert rel_err(to_numpy(out), ref.numpy()) < TOL


def test_layer_norm_large_offset_and_strided_params(pool):
    # a mean far from 0 (two-pass stability) and weight/bias read through strided views
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((5, 7, 301)) + 1000.0).astype(np.float32)
    wb = rng.standard_normal((2, 301)).astype(np.float32)
    ctx = Context()
    # [301, 1] views with an 8-byte dim-0 stride into interleaved (w, b) pairs
    # (a 1-D tp_view takes nb[0] from the type, so the views are 2-D)
    ne2 = ffi.new("int64_t[2]", [301, 1])
    nb2 = ffi.new("size_t[2]", [8, 8 * 301])
    # one spare (w, b) pair at the end: tp_view's bounds check counts ne0·nb0 bytes for dim 0
    base = ctx.tensor(np.concatenate([wb.T, np.zeros((1, 2), np.float32)], axis=0))
    wv = lib.tp_view(ctx.ptr, base, 2, ne2, nb2, 0)
    bv = lib.tp_view(ctx.ptr, base, 2, ne2, nb2, 4)
    np.testing.assert_array_equal(to_numpy(wv)[0], wb[0])
    np.testing.assert_array_equal(to_numpy(bv)[0], wb[1])
    out = lib.tp_layer_norm(ctx.ptr, ctx.tensor(x), wv, bv, 1e-5)
    assert out != ffi.NULL, err_msg(ctx)
    ctx.compute([out], pool)
    ref = F.layer_norm(torch.from_numpy(x).double(), (301,), torch.from_numpy(wb[0]).double(),
                       torch.from_numpy(wb[1]).double(), 1e-5)
    assert rel_err(to_numpy(out), ref.numpy()) < TOL


# ---------------------------------------------------------------------------------------------
# rms_norm
# ---------------------------------------------------------------------------------------------


def rms_ref(x, w, eps):
    """LLaMA / DeepSeek RMSNorm (transformers), computed in f32."""
    try:
        from transformers.models.llama.modeling_llama import LlamaRMSNorm
    except Exception:  # pragma: no cover - formula fallback
        xt = torch.from_numpy(x)
        var = xt.pow(2).mean(-1, keepdim=True)
        y = xt * torch.rsqrt(var + eps)
        return (y * torch.from_numpy(w)).numpy() if w is not None else y.numpy()
    m = LlamaRMSNorm(x.shape[-1], eps=eps)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w) if w is not None else torch.ones(x.shape[-1]))
        return m(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape4,use_w,eps", [((2, 3, 5, 37), True, 1e-6), ((1, 1, 11, 1280), True, 1e-5),
                                             ((2, 3, 1, 1), False, 1e-6), ((3, 2, 2, 9), False, 0.0)])
def test_rms_norm(pool, layout, shape4, use_w, eps):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape4) * 2).astype(np.float32)
    x[..., 0] += 1.0
    w = rng.standard_normal(shape4[-1]).astype(np.float32) if use_w else None
    ctx = Context()
    tx = make_input(ctx, x, layout)
    out = lib.tp_rms_norm(ctx.ptr, tx, ctx.tensor(w) if use_w else ffi.NULL, eps)
    assert out != ffi.NULL, err_msg(ctx)
    ctx.compute([out], pool)
    ref = rms_ref(x, w, eps)
    assert rel_err(to_numpy(out), ref) < TOL
    # torch's own functional rms_norm agrees too
    ref2 = F.rms_norm(torch.from_numpy(x), (shape4[-1],), torch.from_numpy(w) if use_w else None, eps)
    assert rel_err(to_numpy(out), ref2.numpy()) < TOL


# ---------------------------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mask_shape", [None, "full", (1, 1, 5, 33), (1, 3, 1, 33), (2, 1, 5, 33),
                                        (1, 1, 1, 33), (2, 3, 5, 1)])
def test_softmax(pool, layout, mask_shape):
    rng = np.random.default_rng(4)
    shape4 = (2, 3, 5, 33)
    x = (rng.standard_normal(shape4) * 4).astype(np.float32)
    scale = 0.37
    ctx = Context()
    tx = make_input(ctx, x, layout)
    if mask_shape is None:
        m = None
        tm = ffi.NULL
    else:
        ms = shape4 if mask_shape == "full" else mask_shape
        m = rng.standard_normal(ms).astype(np.float32)
        if ms[-1] > 1:
            m[rng.random(ms) < 0.3] = -np.inf  # causal/padding style -inf entries
            m[..., 0] = 0.0  # never a fully masked row here
        tm = ctx.tensor(m)
    out = lib.tp_softmax(ctx.ptr, tx, tm, scale)
    assert out != ffi.NULL, err_msg(ctx)
    ctx.compute([out], pool)
    logits = torch.from_numpy(x) * scale
    if m is not None:
        logits = logits + torch.from_numpy(m)
    ref = torch.softmax(logits, dim=-1).numpy()
    got = to_numpy(out)
    assert rel_err(got, ref) < TOL
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)


def test_softmax_noncontiguous_mask_and_causal(pool):
    rng = np.random.default_rng(5)
    T = 19
    x = rng.standard_normal((2, 4, T, T)).astype(np.float32)
    causal = np.triu(np.full((T, T), -np.inf, np.float32), 1)
    ctx = Context()
    # the mask stored transposed and tp_transpose'd back: dim 0 strided
    tm = lib.tp_transpose(ctx.ptr, ctx.tensor(np.ascontiguousarray(causal.T)))
    np.testing.assert_array_equal(to_numpy(tm).reshape(T, T), causal)
    out = lib.tp_softmax(ctx.ptr, permuted_view(ctx, x, (1, 0, 3, 2)), tm, 1.0 / 8)
    assert out != ffi.NULL, err_msg(ctx)
    ctx.compute([out], pool)
    ref = torch.softmax(torch.from_numpy(x) / 8 + torch.from_numpy(causal), dim=-1).numpy()
    assert rel_err(to_numpy(out), ref) < TOL


def test_softmax_fully_masked_rows_are_zero(pool):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 17)).astype(np.float32)
    m = np.zeros((1, 4, 17), np.float32)
    m[0, 1, :] = -np.inf  # row 1 of every head fully masked
    m[0, 2, 5:] = -np.inf
    ctx = Context()
    out = lib.tp_softmax(ctx.ptr, ctx.tensor(x), ctx.tensor(m), 1.0)
    ctx.compute([out], pool)
    got = to_numpy(out)
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got[:, 1, :], 0.0)
    ref = torch.softmax(torch.from_numpy(x) + torch.from_numpy(m), dim=-1).numpy()
    keep = [0, 2, 3]
    assert rel_err(got[:, keep], ref[:, keep]) < TOL
    np.testing.assert_array_equal(got[:, 2, 5:], 0.0)


def test_softmax_large_logits_and_nan(pool):
    x = np.array([[1e4, 1e4 - 1, -1e4, 0.0], [np.nan, 1.0, 2.0, 3.0], [-np.inf, -np.inf, 0.0, 1.0]],
                 np.float32)
    ctx = Context()
    out = lib.tp_softmax(ctx.ptr, ctx.tensor(x), ffi.NULL, 1.0)
    ctx.compute([out], pool)
    got = to_numpy(out)
    ref = torch.softmax(torch.from_numpy(x), -1).numpy()
    np.testing.assert_allclose(got[[0, 2]], ref[[0, 2]], rtol=1e-6, atol=1e-7)
    assert np.isnan(got[1]).all() and np.isnan(ref[1]).all()


# ---------------------------------------------------------------------------------------------
# misuse
# ---------------------------------------------------------------------------------------------


def _expect_error(ctx, res, op, status):
    assert res == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == status
    assert op in err_msg(ctx), err_msg(ctx)


@pytest.mark.parametrize("case", ["ln_type", "ln_w_shape", "ln_b_type", "ln_null", "ln_eps", "ln_w_other_ctx",
                                  "rms_type", "rms_w_shape", "rms_null", "rms_eps",
                                  "sm_type", "sm_mask_shape", "sm_mask_type", "sm_null"])
def test_misuse(case):
    ctx = Context()
    f = ctx.tensor(np.zeros((3, 4, 8), np.float32))
    i32 = ctx.tensor(np.zeros((3, 4, 8), np.int32))
    f16 = ctx.tensor(np.zeros((3, 4, 8), np.float32), tp_type=1)
    w8 = ctx.tensor(np.ones(8, np.float32))
    w7 = ctx.tensor(np.ones(7, np.float32))
    w8x2 = ctx.tensor(np.ones((2, 8), np.float32))
    assert lib.tp_context_status(ctx.ptr) == lib.TP_OK
    if case == "ln_type":
        _expect_error(ctx, lib.tp_layer_norm(ctx.ptr, i32, w8, w8, 1e-5), "tp_layer_norm", lib.TP_ERR_TYPE)
    elif case == "ln_w_shape":
        _expect_error(ctx, lib.tp_layer_norm(ctx.ptr, f, w7, ffi.NULL, 1e-5), "tp_layer_norm", lib.TP_ERR_SHAPE)
        ctx2 = Context()
        g = ctx2.tensor(np.zeros((3, 8), np.float32))
        _expect_error(ctx2, lib.tp_layer_norm(ctx2.ptr, g, ctx2.tensor(np.ones((2, 8), np.float32)), ffi.NULL, 1e-5),
                      "tp_layer_norm", lib.TP_ERR_SHAPE)
    elif case == "ln_b_type":
        _expect_error(ctx, lib.tp_layer_norm(ctx.ptr, f, w8, ctx.tensor(np.ones(8, np.int32)), 1e-5),
                      "tp_layer_norm", lib.TP_ERR_TYPE)
    elif case == "ln_null":
        _expect_error(ctx, lib.tp_layer_norm(ctx.ptr, ffi.NULL, w8, w8, 1e-5), "tp_layer_norm",
                      lib.TP_ERR_INVALID_ARGUMENT)
        assert lib.tp_layer_norm(ffi.NULL, f, w8, w8, 1e-5) == ffi.NULL
    elif case == "ln_eps":
        _expect_error(ctx, lib.tp_layer_norm(ctx.ptr, f, ffi.NULL, ffi.NULL, -1.0), "tp_layer_norm",
                      lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "ln_w_other_ctx":
        other = Context()
        wo = other.tensor(np.ones(8, np.float32))
        _expect_error(ctx, lib.tp_layer_norm(ctx.ptr, f, wo, ffi.NULL, 1e-5), "tp_layer_norm",
                      lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "rms_type":
        _expect_error(ctx, lib.tp_rms_norm(ctx.ptr, f16, w8, 1e-6), "tp_rms_norm", lib.TP_ERR_TYPE)
    elif case == "rms_w_shape":
        _expect_error(ctx, lib.tp_rms_norm(ctx.ptr, f, w8x2, 1e-6), "tp_rms_norm", lib.TP_ERR_SHAPE)
    elif case == "rms_null":
        _expect_error(ctx, lib.tp_rms_norm(ctx.ptr, ffi.NULL, w8, 1e-6), "tp_rms_norm", lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "rms_eps":
        _expect_error(ctx, lib.tp_rms_norm(ctx.ptr, f, w8, float("nan")), "tp_rms_norm", lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "sm_type":
        _expect_error(ctx, lib.tp_softmax(ctx.ptr, i32, ffi.NULL, 1.0), "tp_softmax", lib.TP_ERR_TYPE)
    elif case == "sm_mask_shape":
        m = ctx.tensor(np.zeros((2, 4, 8), np.float32))  # dim 2: 2 vs 3
        _expect_error(ctx, lib.tp_softmax(ctx.ptr, f, m, 1.0), "tp_softmax", lib.TP_ERR_SHAPE)
    elif case == "sm_mask_type":
        _expect_error(ctx, lib.tp_softmax(ctx.ptr, f, f16, 1.0), "tp_softmax", lib.TP_ERR_TYPE)
    elif case == "sm_null":
        _expect_error(ctx, lib.tp_softmax(ctx.ptr, ffi.NULL, ffi.NULL, 1.0), "tp_softmax", lib.TP_ERR_INVALID_ARGUMENT)
    # the first error is kept; further builds on a NULL input stay NULL
    first = err_msg(ctx)
    assert lib.tp_softmax(ctx.ptr, ffi.NULL, ffi.NULL, 1.0) == ffi.NULL
    assert err_msg(ctx) == first


def test_softmax_exp_accuracy_over_the_whole_range(pool):
    # one logit at 0 and the rest spread over [-100, 0]: every probability checked element-wise
    # (relative) against a float64 reference, down to the smallest normal floats
    x = np.concatenate([[0.0], np.linspace(-100.0, 0.0, 20001)]).astype(np.float32)[None, :]
    ctx = Context()
    out = lib.tp_softmax(ctx.ptr, ctx.tensor(x), ffi.NULL, 1.0)
    ctx.compute([out], pool)
    got = to_numpy(out)[0].astype(np.float64)
    ref = torch.softmax(torch.from_numpy(x).double(), -1).numpy()[0]
    big = ref > 1e-36
    assert np.max(np.abs(got[big] - ref[big]) / ref[big]) < 2e-6
    assert np.all(got[~big] < 1e-36) and np.all(got >= 0)
