"""concat, pad and get_rows against torch: every dim, odd sizes, non-contiguous views, every source
type of get_rows (F32/F16/BF16/I32 and the quantised ones), out-of-range indices, 1 and 2 threads,
misuse (NULL result + context error naming the op)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from encoder.graph import Context, ThreadPool, to_numpy, shape
from encoder.native import TilepassError, ffi, lib

F16, BF16, I32 = 1, 30, 26


def permuted_view(ctx, x, perm, tp_type=None):
    """A non-contiguous tp view whose logical contents equal the 4-D array x."""
    base = np.ascontiguousarray(x.transpose(perm))
    tb = ctx.tensor(base, tp_type)
    axes = [0] * 4
    for k in range(4):
        axes[3 - k] = 3 - perm[k]
    v = lib.tp_permute(ctx.ptr, tb, *axes)
    assert v != ffi.NULL
    if tp_type is None:
        np.testing.assert_array_equal(to_numpy(v), x)
    return v


def err_msg(ctx):
    return ffi.string(lib.tp_context_error(ctx.ptr)).decode()


def make(ctx, x, layout, perm=(2, 0, 3, 1)):
    return ctx.tensor(x) if layout == "contig" else permuted_view(ctx, x, perm)


# ---------------------------------------------------------------------------------------------
# concat
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["contig", "permuted", "mixed"])
@pytest.mark.parametrize("dim", [0, 1, 2, 3])
def test_concat(pool, layout, dim):
    rng = np.random.default_rng(40 + dim)
    base_shape = [2, 3, 5, 7]  # numpy order; ne dim d is numpy axis 3 - d
    sa, sb = list(base_shape), list(base_shape)
    sa[3 - dim], sb[3 - dim] = 4, 3
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    ctx = Context()
    ta = make(ctx, a, "contig" if layout == "contig" else "permuted")
    tb = make(ctx, b, "permuted" if layout == "permuted" else "contig", perm=(1, 3, 2, 0))
    out = lib.tp_concat(ctx.ptr, ta, tb, dim)
    assert out != ffi.NULL, err_msg(ctx)
    ctx.compute([out], pool)
    ref = torch.cat((torch.from_numpy(a), torch.from_numpy(b)), dim=3 - dim).numpy()
    np.testing.assert_array_equal(to_numpy(out), ref)


def test_concat_grows_dims_and_chains(pool):
    # two 2-D [5, 3] tensors along dim 2 give a 3-D [5, 3, 2]; the result feeds another op
    rng = np.random.default_rng(41)
    a = rng.standard_normal((3, 5)).astype(np.float32)
    b = rng.standard_normal((3, 5)).astype(np.float32)
    ctx = Context()
    ta, tb = ctx.tensor(a), ctx.tensor(b)
    c = lib.tp_concat(ctx.ptr, ta, tb, 2)
    assert lib.tp_tensor_n_dims(c) == 3 and shape(c) == (2, 3, 5)
    d = lib.tp_concat(ctx.ptr, lib.tp_transpose(ctx.ptr, ta), lib.tp_transpose(ctx.ptr, tb), 0)  # [6, 5]
    e = lib.tp_scale(ctx.ptr, c, 2.0)
    ctx.compute([c, d, e], pool)
    np.testing.assert_array_equal(to_numpy(c), np.stack([a, b]))
    # (views made by tp_transpose are 4-D, so d is too)
    np.testing.assert_array_equal(to_numpy(d).reshape(5, 6), np.concatenate([a.T, b.T], axis=1))
    np.testing.assert_array_equal(to_numpy(e), 2 * np.stack([a, b]))


# ---------------------------------------------------------------------------------------------
# pad
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["contig", "permuted"])
@pytest.mark.parametrize("before,after", [((1, 0, 2, 0), (0, 3, 0, 1)), ((0, 0, 0, 0), (0, 0, 0, 0)),
                                          ((3, 2, 1, 1), (2, 1, 0, 2)), ((0, 0, 0, 0), (5, 0, 0, 0)),
                                          ((0, 4, 0, 0), (0, 0, 0, 0))])
def test_pad(pool, layout, before, after):
    rng = np.random.default_rng(50)
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    ctx = Context()
    tx = make(ctx, x, layout)
    out = lib.tp_pad(ctx.ptr, tx, ffi.new("int[4]", list(before)), ffi.new("int[4]", list(after)))
    assert out != ffi.NULL, err_msg(ctx)
    ctx.compute([out], pool)
    # torch's pad tuple runs from the last numpy dim (= ne dim 0) outwards, as before/after do
    spec = []
    for d in range(4):
        spec += [before[d], after[d]]
    ref = F.pad(torch.from_numpy(x), tuple(spec)).numpy()
    np.testing.assert_array_equal(to_numpy(out), ref)


def test_pad_adds_dims(pool):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)  # ne [3, 2]
    ctx = Context()
    out = lib.tp_pad(ctx.ptr, ctx.tensor(x), ffi.new("int[4]", [0, 1, 1, 0]), ffi.new("int[4]", [1, 0, 0, 0]))
    assert lib.tp_tensor_n_dims(out) == 3
    ctx.compute([out], pool)
    ref = F.pad(torch.from_numpy(x)[None], (0, 1, 1, 0, 1, 0)).numpy()
    np.testing.assert_array_equal(to_numpy(out), ref)


# ---------------------------------------------------------------------------------------------
# get_rows
# ---------------------------------------------------------------------------------------------


def gather_ref(a, idx):
    """a numpy (a3, a2, R, K), idx (a3, a2, n) -> (a3, a2, n, K)."""
    return np.take_along_axis(a, idx[..., None].astype(np.int64), axis=2)


def _as_type(x, tp_type):
    """What x becomes stored as tp_type and read back as float32."""
    if tp_type == F16:
        return x.astype(np.float16).astype(np.float32)
    if tp_type == BF16:
        return torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    return x


@pytest.mark.parametrize("tp_type", [None, F16, BF16, I32])
@pytest.mark.parametrize("dims", [(1, 1, 10, 13), (2, 3, 7, 5), (1, 2, 1, 33)])
def test_get_rows_types(pool, tp_type, dims):
    rng = np.random.default_rng(60)
    a3, a2, R, K = dims
    if tp_type == I32:
        a = rng.integers(-1000, 1000, size=dims).astype(np.int32)
        ref_a = a.astype(np.float32)
    else:
        a = rng.standard_normal(dims).astype(np.float32)
        ref_a = _as_type(a, tp_type)
    n = 9
    idx = rng.integers(0, R, size=(a3, a2, n)).astype(np.int32)
    ctx = Context()
    ta = ctx.tensor(a, tp_type)
    out = lib.tp_get_rows(ctx.ptr, ta, ctx.tensor(idx))
    assert out != ffi.NULL, err_msg(ctx)
    ctx.compute([out], pool)
    assert shape(out)[-2:] == (n, K)
    np.testing.assert_array_equal(to_numpy(out).reshape(a3, a2, n, K), gather_ref(ref_a, idx))


@pytest.mark.parametrize("tp_type", [None, F16, BF16])
def test_get_rows_strided_sources(pool, tp_type):
    # a transposed source (dim 0 strided), and an idx read through a permuted view
    rng = np.random.default_rng(61)
    a = rng.standard_normal((2, 3, 11, 6)).astype(np.float32)  # (a3, a2, R, K)
    idx = rng.integers(0, 11, size=(2, 3, 4)).astype(np.int32)
    ctx = Context()
    ta = permuted_view(ctx, a, (0, 1, 3, 2), tp_type)  # stored (a3, a2, K, R): dim 0 of the view strided
    tidx_base = ctx.tensor(np.ascontiguousarray(idx.transpose(1, 0, 2)))  # stored (a2, a3, n)
    tidx = lib.tp_permute(ctx.ptr, tidx_base, 0, 2, 1, 3)
    assert lib.tp_tensor_nb(ta, 0) > 4  # dim 0 really is strided
    out = lib.tp_get_rows(ctx.ptr, ta, tidx)
    assert out != ffi.NULL, err_msg(ctx)
    ctx.compute([out], pool)
    np.testing.assert_array_equal(to_numpy(out), gather_ref(_as_type(a, tp_type), idx))


def test_get_rows_embedding_lookup(pool):
    # the common use: token embeddings [d, vocab] and 1-D token ids
    rng = np.random.default_rng(62)
    emb = rng.standard_normal((100, 24)).astype(np.float32)
    ids = np.array([5, 0, 99, 5, 42], np.int32)
    ctx = Context()
    out = lib.tp_get_rows(ctx.ptr, ctx.tensor(emb), ctx.tensor(ids))
    assert lib.tp_tensor_n_dims(out) == 2 and shape(out) == (5, 24)
    ctx.compute([out], pool)
    ref = torch.nn.functional.embedding(torch.from_numpy(ids).long(), torch.from_numpy(emb)).numpy()
    np.testing.assert_array_equal(to_numpy(out), ref)


def test_get_rows_out_of_range_is_a_compute_error(pool):
    rng = np.random.default_rng(63)
    a = rng.standard_normal((6, 8)).astype(np.float32)
    idx = np.array([1, 6, -1, 5, 2 ** 31 - 1], np.int32)
    ctx = Context()
    out = lib.tp_get_rows(ctx.ptr, ctx.tensor(a), ctx.tensor(idx))
    assert out != ffi.NULL  # the indices are data: only the compute can see them
    with pytest.raises(TilepassError, match="get_rows"):
        ctx.compute([out], pool)
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_INVALID_ARGUMENT
    got = to_numpy(out)
    np.testing.assert_array_equal(got[[0, 3]], a[[1, 5]])
    np.testing.assert_array_equal(got[[1, 2, 4]], 0.0)


QTYPES = {"q8_0": (8, 32), "q4_0": (2, 32), "q4_K": (12, 256), "q5_K": (13, 256), "q6_K": (14, 256)}


def _quantize(ctx, x2d, qtype):
    """A leaf of type qtype over quantised bytes of the [rows, n] float array, and the bytes."""
    rows, n = x2d.shape
    row_bytes = lib.tp_type_row_bytes(qtype, n)
    buf = np.zeros(rows * row_bytes, np.uint8)
    err = ffi.new("tp_error *")
    src = np.ascontiguousarray(x2d, np.float32)
    st = lib.tp_quantize(qtype, ffi.cast("float *", ffi.from_buffer(src)), rows, n,
                         ffi.cast("void *", ffi.from_buffer(buf)), buf.size, ffi.NULL, err)
    return st, buf


def _dequantize(buf, qtype, rows, n):
    out = np.zeros((rows, n), np.float32)
    err = ffi.new("tp_error *")
    st = lib.tp_dequantize(qtype, ffi.cast("void *", ffi.from_buffer(buf)), buf.size, rows, n,
                           ffi.cast("float *", ffi.from_buffer(out)), err)
    return st, out


@pytest.mark.parametrize("name", list(QTYPES))
def test_get_rows_quantised(pool, name):
    qtype, blk = QTYPES[name]
    rng = np.random.default_rng(64)
    a2, R, K = 2, 7, 2 * blk
    a = rng.standard_normal((a2, R, K)).astype(np.float32)
    ctx = Context()
    st, buf = _quantize(ctx, a.reshape(-1, K), qtype)
    assert st == lib.TP_OK, f"tp_quantize({name}) failed with status {st}"
    st, deq = _dequantize(buf, qtype, a2 * R, K)
    assert st == lib.TP_OK and np.any(deq), f"tp_dequantize({name}) failed with status {st}"
    assert np.max(np.abs(deq - a.reshape(-1, K))) < 0.5  # a sane round trip
    ne = ffi.new("int64_t[3]", [K, R, a2])
    ta = lib.tp_new_tensor_external(ctx.ptr, qtype, 3, ne, ffi.cast("void *", ffi.from_buffer(buf)), buf.size)
    assert ta != ffi.NULL, err_msg(ctx)
    idx = rng.integers(0, R, size=(a2, 5)).astype(np.int32)
    out = lib.tp_get_rows(ctx.ptr, ta, ctx.tensor(idx))
    assert out != ffi.NULL, err_msg(ctx)
    ctx.compute([out], pool)
    ref = gather_ref(deq.reshape(1, a2, R, K), idx[None])[0]
    np.testing.assert_array_equal(to_numpy(out), ref)


# ---------------------------------------------------------------------------------------------
# misuse
# ---------------------------------------------------------------------------------------------


def _expect_error(ctx, res, op, status):
    assert res == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == status, err_msg(ctx)
    assert op in err_msg(ctx), err_msg(ctx)


@pytest.mark.parametrize("case", ["cat_shape", "cat_dim", "cat_type", "cat_null", "pad_neg", "pad_null_arr",
                                  "pad_type", "pad_null", "gr_idx_type", "gr_idx_shape", "gr_null", "gr_idx4"])
def test_misuse(case):
    ctx = Context()
    a = ctx.tensor(np.zeros((2, 3, 4), np.float32))  # ne [4, 3, 2]
    b = ctx.tensor(np.zeros((2, 5, 4), np.float32))
    a16 = ctx.tensor(np.zeros((2, 3, 4), np.float32), tp_type=F16)
    z = ffi.new("int[4]", [0, 0, 0, 0])
    idx = ctx.tensor(np.zeros((2, 3), np.int32))  # [3, 2]: matches a's dim 2 = 2
    if case == "cat_shape":
        _expect_error(ctx, lib.tp_concat(ctx.ptr, a, b, 0), "tp_concat", lib.TP_ERR_SHAPE)
    elif case == "cat_dim":
        _expect_error(ctx, lib.tp_concat(ctx.ptr, a, a, 4), "tp_concat", lib.TP_ERR_INVALID_ARGUMENT)
        ctx2 = Context()
        t = ctx2.tensor(np.zeros(3, np.float32))
        _expect_error(ctx2, lib.tp_concat(ctx2.ptr, t, t, -1), "tp_concat", lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "cat_type":
        _expect_error(ctx, lib.tp_concat(ctx.ptr, a, a16, 0), "tp_concat", lib.TP_ERR_TYPE)
    elif case == "cat_null":
        _expect_error(ctx, lib.tp_concat(ctx.ptr, a, ffi.NULL, 1), "tp_concat", lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "pad_neg":
        _expect_error(ctx, lib.tp_pad(ctx.ptr, a, z, ffi.new("int[4]", [0, -1, 0, 0])), "tp_pad",
                      lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "pad_null_arr":
        _expect_error(ctx, lib.tp_pad(ctx.ptr, a, ffi.NULL, z), "tp_pad", lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "pad_type":
        _expect_error(ctx, lib.tp_pad(ctx.ptr, a16, z, z), "tp_pad", lib.TP_ERR_TYPE)
    elif case == "pad_null":
        _expect_error(ctx, lib.tp_pad(ctx.ptr, ffi.NULL, z, z), "tp_pad", lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "gr_idx_type":
        _expect_error(ctx, lib.tp_get_rows(ctx.ptr, a, ctx.tensor(np.zeros((2, 3), np.float32))), "tp_get_rows",
                      lib.TP_ERR_TYPE)
    elif case == "gr_idx_shape":
        _expect_error(ctx, lib.tp_get_rows(ctx.ptr, a, ctx.tensor(np.zeros((3, 3), np.int32))), "tp_get_rows",
                      lib.TP_ERR_SHAPE)
    elif case == "gr_null":
        _expect_error(ctx, lib.tp_get_rows(ctx.ptr, ffi.NULL, idx), "tp_get_rows", lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "gr_idx4":
        # a 4-D idx (idx ne3 must be 1)
        _expect_error(ctx, lib.tp_get_rows(ctx.ptr, a, ctx.tensor(np.zeros((2, 1, 2, 3), np.int32))), "tp_get_rows",
                      lib.TP_ERR_SHAPE)
    # sanity: the valid form of get_rows builds
    ok = Context()
    ta = ok.tensor(np.zeros((2, 3, 4), np.float32))
    assert lib.tp_get_rows(ok.ptr, ta, ok.tensor(np.zeros((2, 3), np.int32))) != ffi.NULL
