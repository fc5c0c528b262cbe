"""rope_neox against transformers' rotary embedding (and the same formula in torch), top_k against
torch.topk: odd sizes, non-contiguous views, 1 and 2 threads, ties, misuse."""

import numpy as np
import pytest
import torch

from encoder.graph import Context, ThreadPool, to_numpy, shape
from encoder.native import ffi, lib
from tp_testing import rel_err  # noqa: E402

TOL = 1e-5


def permuted_view(ctx, x, perm):
    """A non-contiguous tp view whose logical contents equal the 4-D array x."""
    base = np.ascontiguousarray(x.transpose(perm))
    tb = ctx.tensor(base)
    axes = [0] * 4
    for k in range(4):
        axes[3 - k] = 3 - perm[k]
    v = lib.tp_permute(ctx.ptr, tb, *axes)
    assert v != ffi.NULL
    np.testing.assert_array_equal(to_numpy(v), x)
    return v


def err_msg(ctx):
    return ffi.string(lib.tp_context_error(ctx.ptr)).decode()


# ---------------------------------------------------------------------------------------------
# rope
# ---------------------------------------------------------------------------------------------


def rope_ref_formula(x, pos, n_rot, base):
    """x numpy (B, T, H, D); HF's float32 computation written out (rotate_half style)."""
    xt = torch.from_numpy(x)
    inv_freq = 1.0 / (base ** (torch.arange(0, n_rot, 2, dtype=torch.int64).float() / n_rot))
    freqs = torch.from_numpy(pos).float()[:, None] * inv_freq[None, :]  # (T, n_rot/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]
    rot = xt[..., :n_rot]
    half = n_rot // 2
    rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
    return torch.cat((rot * cos + rotated * sin, xt[..., n_rot:]), dim=-1).numpy()


def rope_ref_hf(x, pos, n_rot, base):
    """transformers' LlamaRotaryEmbedding + apply_rotary_pos_emb (same as DeepSeek-OCR-2's text model),
    with partial rotary done as HF models do it (rotate the first n_rot dims, pass the rest)."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    B, T, H, D = x.shape
    cfg = LlamaConfig(hidden_size=n_rot * H, num_attention_heads=H, head_dim=n_rot, rope_theta=base,
                      max_position_embeddings=1 << 16)
    emb = LlamaRotaryEmbedding(cfg)
    q = torch.from_numpy(x).transpose(1, 2)  # (B, H, T, D) as HF
    pid = torch.from_numpy(pos).long()[None, :].expand(B, T)
    cos, sin = emb(q, pid)
    q_rot, _ = apply_rotary_pos_emb(q[..., :n_rot], q[..., :n_rot], cos, sin)
    return torch.cat((q_rot, q[..., n_rot:]), dim=-1).transpose(1, 2).numpy()


ROPE_CASES = [
    # (B, T, H, D), n_rot, base, max position
    ((2, 7, 3, 64), 64, 10000.0, 300),
    ((1, 5, 4, 37), 20, 10000.0, 50),
    ((3, 1, 2, 128), 128, 1e6, 2000),
    ((1, 9, 1, 10), 2, 500.0, 100),
    ((2, 3, 3, 1030), 1030, 10000.0, 40),  # more than one stack chunk of cos/sin
]


@pytest.mark.parametrize("layout", ["contig", "permuted"])
@pytest.mark.parametrize("case", range(len(ROPE_CASES)))
def test_rope_neox(pool, layout, case):
    shape4, n_rot, base, max_pos = ROPE_CASES[case]
    rng = np.random.default_rng(10 + case)
    x = rng.standard_normal(shape4).astype(np.float32)  # numpy (B, T, H, D) = ne [D, H, T, B]
    pos = rng.integers(0, max_pos, size=shape4[1]).astype(np.int32)
    ctx = Context()
    tx = ctx.tensor(x) if layout == "contig" else permuted_view(ctx, x, (1, 3, 0, 2))
    out = lib.tp_rope_neox(ctx.ptr, tx, ctx.tensor(pos), n_rot, base)
    assert out != ffi.NULL, err_msg(ctx)
    ctx.compute([out], pool)
    got = to_numpy(out)
    assert got.shape == x.shape
    assert rel_err(got, rope_ref_formula(x, pos, n_rot, base)) < TOL
    assert rel_err(got, rope_ref_hf(x, pos, n_rot, base)) < TOL
    np.testing.assert_array_equal(got[..., n_rot:], x[..., n_rot:])


def test_rope_neox_positions_view_and_negative(pool):
    # pos read through a strided view; negative and zero positions (identity at 0)
    rng = np.random.default_rng(20)
    x = rng.standard_normal((2, 6, 5, 24)).astype(np.float32)
    pos2 = np.array([[0, 99], [5, 99], [-3, 99], [17, 99], [1, 99], [250, 99]], np.int32)  # column 0
    ctx = Context()
    ne = ffi.new("int64_t[2]", [6, 1])
    nb = ffi.new("size_t[2]", [8, 48])
    tpos = lib.tp_view(ctx.ptr, ctx.tensor(np.concatenate([pos2, pos2[:1]])), 2, ne, nb, 0)
    assert tpos != ffi.NULL, err_msg(ctx)
    out = lib.tp_rope_neox(ctx.ptr, ctx.tensor(x), tpos, 24, 10000.0)
    assert out != ffi.NULL, err_msg(ctx)
    ctx.compute([out], pool)
    got = to_numpy(out)
    ref = rope_ref_formula(x, pos2[:, 0].copy(), 24, 10000.0)
    assert rel_err(got, ref) < TOL
    np.testing.assert_array_equal(got[:, 0], x[:, 0])  # position 0: cos 1, sin 0


# ---------------------------------------------------------------------------------------------
# top_k
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["contig", "permuted"])
@pytest.mark.parametrize("n,k", [(64, 6), (64, 1), (64, 64), (257, 8), (3, 2), (1, 1), (1000, 300)])
def test_top_k(pool, layout, n, k):
    rng = np.random.default_rng(n * 31 + k)
    x = rng.standard_normal((2, 3, 5, n)).astype(np.float32)
    assert all(len(np.unique(r)) == n for r in x.reshape(-1, n))  # no ties
    ctx = Context()
    tx = ctx.tensor(x) if layout == "contig" else permuted_view(ctx, x, (3, 1, 0, 2))
    out = lib.tp_top_k(ctx.ptr, tx, k)
    assert out != ffi.NULL, err_msg(ctx)
    ctx.compute([out], pool)
    assert lib.tp_tensor_type(out) == lib.TP_TYPE_I32
    assert shape(out) == (2, 3, 5, k)
    got = np.frombuffer(ffi.buffer(lib.tp_tensor_data(out), 4 * x.size // n * k), np.int32).reshape(2, 3, 5, k)
    ref = torch.topk(torch.from_numpy(x), k, dim=-1, largest=True, sorted=True).indices.numpy()
    np.testing.assert_array_equal(got, ref)


def _read_i32(t, shp):
    n = int(np.prod(shp))
    return np.frombuffer(ffi.buffer(lib.tp_tensor_data(t), 4 * n), np.int32).reshape(shp).copy()


def test_top_k_ties_go_to_lower_index(pool):
    rng = np.random.default_rng(30)
    x = rng.integers(0, 4, size=(7, 64)).astype(np.float32)  # many ties
    x[0] = 1.0  # all equal: 0..k-1
    x[1] = np.arange(64)[::-1]  # descending
    x[2] = np.arange(64)  # ascending
    x[3, :] = -np.inf
    x[3, 10] = 5.0
    ctx = Context()
    out = lib.tp_top_k(ctx.ptr, ctx.tensor(x), 9)
    ctx.compute([out], pool)
    got = _read_i32(out, (7, 9))
    ref = np.argsort(-x, axis=-1, kind="stable")[:, :9]
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got[0], np.arange(9))
    assert got[3, 0] == 10 and list(got[3, 1:]) == [0, 1, 2, 3, 4, 5, 6, 7]


def test_top_k_nan_ranks_highest(pool):
    # as torch.topk: NaN counts as larger than any number
    x = np.array([[1.0, np.nan, 3.0, -2.0, np.nan, 0.5], [np.inf, 1.0, np.nan, 2.0, -np.inf, 0.0]], np.float32)
    ctx = Context()
    out = lib.tp_top_k(ctx.ptr, ctx.tensor(x), 4)
    ctx.compute([out], pool)
    got = _read_i32(out, (2, 4))
    np.testing.assert_array_equal(got, [[1, 4, 2, 0], [2, 0, 3, 1]])
    ref = torch.topk(torch.from_numpy(x), 4, dim=-1).indices.numpy()
    np.testing.assert_array_equal(got[:, :1], ref[:, :1])  # torch's order among NaNs is unspecified


def test_top_k_moe_routing_then_get_rows_weights(pool):
    # the MoE use: softmax over expert logits, top-k indices, gather the chosen weights
    rng = np.random.default_rng(31)
    logits = rng.standard_normal((11, 64)).astype(np.float32)
    ctx = Context()
    tl = ctx.tensor(logits)
    probs = lib.tp_softmax(ctx.ptr, tl, ffi.NULL, 1.0)
    idx = lib.tp_top_k(ctx.ptr, probs, 6)
    ctx.compute([probs, idx], pool)
    ref_p, ref_i = torch.topk(torch.softmax(torch.from_numpy(logits), -1), 6, dim=-1)
    np.testing.assert_array_equal(_read_i32(idx, (11, 6)), ref_i.numpy())


# ---------------------------------------------------------------------------------------------
# misuse
# ---------------------------------------------------------------------------------------------


def _expect_error(ctx, res, op, status):
    assert res == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == status, err_msg(ctx)
    assert op in err_msg(ctx), err_msg(ctx)


@pytest.mark.parametrize("case", ["rope_a_type", "rope_pos_type", "rope_pos_shape", "rope_odd", "rope_too_big",
                                  "rope_zero", "rope_base", "rope_null", "topk_type", "topk_k0", "topk_kbig",
                                  "topk_null"])
def test_misuse(case):
    ctx = Context()
    a = ctx.tensor(np.zeros((2, 5, 3, 16), np.float32))  # [D=16, H=3, T=5, B=2]
    a16 = ctx.tensor(np.zeros((2, 5, 3, 16), np.float32), tp_type=1)
    pos = ctx.tensor(np.arange(5, dtype=np.int32))
    posf = ctx.tensor(np.arange(5, dtype=np.float32))
    pos4 = ctx.tensor(np.arange(4, dtype=np.int32))
    RP, TK = "tp_rope_neox", "tp_top_k"
    if case == "rope_a_type":
        _expect_error(ctx, lib.tp_rope_neox(ctx.ptr, a16, pos, 16, 1e4), RP, lib.TP_ERR_TYPE)
    elif case == "rope_pos_type":
        _expect_error(ctx, lib.tp_rope_neox(ctx.ptr, a, posf, 16, 1e4), RP, lib.TP_ERR_TYPE)
    elif case == "rope_pos_shape":
        _expect_error(ctx, lib.tp_rope_neox(ctx.ptr, a, pos4, 16, 1e4), RP, lib.TP_ERR_SHAPE)
    elif case == "rope_odd":
        _expect_error(ctx, lib.tp_rope_neox(ctx.ptr, a, pos, 15, 1e4), RP, lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "rope_too_big":
        _expect_error(ctx, lib.tp_rope_neox(ctx.ptr, a, pos, 18, 1e4), RP, lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "rope_zero":
        _expect_error(ctx, lib.tp_rope_neox(ctx.ptr, a, pos, 0, 1e4), RP, lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "rope_base":
        _expect_error(ctx, lib.tp_rope_neox(ctx.ptr, a, pos, 16, -1.0), RP, lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "rope_null":
        _expect_error(ctx, lib.tp_rope_neox(ctx.ptr, a, ffi.NULL, 16, 1e4), RP, lib.TP_ERR_INVALID_ARGUMENT)
        assert lib.tp_rope_neox(ffi.NULL, a, pos, 16, 1e4) == ffi.NULL
    elif case == "topk_type":
        _expect_error(ctx, lib.tp_top_k(ctx.ptr, pos, 2), TK, lib.TP_ERR_TYPE)
    elif case == "topk_k0":
        _expect_error(ctx, lib.tp_top_k(ctx.ptr, a, 0), TK, lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "topk_kbig":
        _expect_error(ctx, lib.tp_top_k(ctx.ptr, a, 17), TK, lib.TP_ERR_INVALID_ARGUMENT)
    elif case == "topk_null":
        _expect_error(ctx, lib.tp_top_k(ctx.ptr, ffi.NULL, 2), TK, lib.TP_ERR_INVALID_ARGUMENT)
