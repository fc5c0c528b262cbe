"""tp_attention against torch.nn.functional.scaled_dot_product_attention.

Layouts: q ne [D, Nq, H, B] is numpy (B, H, Nq, D) = torch SDPA's layout; the result ne [Dv, H, Nq, B]
is numpy (B, Nq, H, Dv) = SDPA's output transposed (1, 2)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from encoder.graph import Context, ThreadPool, to_numpy
from encoder.native import ffi, lib
from tp_testing import rel_err  # noqa: E402

PATHS = {"scalar": 0, "avx2": 1, "avx512": 2}


def sdpa_ref(q, k, v, mask=None, scale=None):
    """q (B, H, Nq, D), k/v (B, Hkv, Nk, *); mask bool or float broadcastable to (B, H, Nq, Nk)."""
    H, Hkv = q.shape[1], k.shape[1]
    kt, vt = torch.from_numpy(k), torch.from_numpy(v)
    if H != Hkv:
        kt = kt.repeat_interleave(H // Hkv, dim=1)
        vt = vt.repeat_interleave(H // Hkv, dim=1)
    m = None if mask is None else torch.from_numpy(mask)
    out = F.scaled_dot_product_attention(torch.from_numpy(q), kt, vt, attn_mask=m, scale=scale)
    return out.transpose(1, 2).contiguous().numpy()


def run_attn(pool, q, k, v, cpu_path=-1, scale=0.0, causal=False, bias=None, rel_h=None, rel_w=None, segments=None):
    ctx = Context(cpu_path)
    opts = ffi.new("tp_attention_opts *", lib.tp_attention_default_opts())
    opts.scale = scale
    opts.causal = causal
    keep = []
    if bias is not None:
        opts.bias = ctx.tensor(bias)
    if rel_h is not None:
        opts.rel_h = ctx.tensor(rel_h)
        opts.rel_w = ctx.tensor(rel_w)
    if segments is not None:
        opts.segments = ctx.tensor(np.asarray(segments, np.int32))
    keep.append(opts)
    out = lib.tp_attention(ctx.ptr, ctx.tensor(q), ctx.tensor(k), ctx.tensor(v), opts)
    ctx.check()
    g = ctx.compute([out], pool)
    return to_numpy(out), g.peak_bytes


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(
    "B,H,Hkv,Nq,Nk,D,Dv",
    [(2, 3, 3, 37, 53, 16, 16), (1, 4, 2, 130, 130, 64, 64), (3, 2, 1, 1, 300, 24, 40), (1, 1, 1, 5, 7, 3, 5),
     (2, 2, 2, 196, 196, 64, 64), (1, 3, 3, 70, 257, 80, 72)],
)
def test_attention_plain(pool, path, B, H, Hkv, Nq, Nk, D, Dv):
    rng = np.random.default_rng(B * 1000 + Nq + Nk + D)
    q, k, v = rand(rng, B, H, Nq, D), rand(rng, B, Hkv, Nk, D), rand(rng, B, Hkv, Nk, Dv)
    got, _ = run_attn(pool, q, k, v, PATHS[path])
    assert rel_err(got, sdpa_ref(q, k, v)) < 1e-5


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("bshape", ["full", "bcast_h", "bcast_b"])
def test_attention_bias_and_scale(pool, path, bshape):
    rng = np.random.default_rng(7)
    B, H, Nq, Nk, D = 2, 3, 45, 150, 32
    q, k, v = rand(rng, B, H, Nq, D), rand(rng, B, H, Nk, D), rand(rng, B, H, Nk, D)
    bs = {"full": (B, H, Nq, Nk), "bcast_h": (B, 1, Nq, Nk), "bcast_b": (1, H, Nq, Nk)}[bshape]
    bias = rand(rng, *bs)
    bias[..., 3] = -np.inf  # a masked key everywhere
    got, _ = run_attn(pool, q, k, v, PATHS[path], scale=0.3, bias=bias)
    assert rel_err(got, sdpa_ref(q, k, v, bias, scale=0.3)) < 1e-5


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("NqNk", [(50, 50), (20, 147), (200, 200)])
def test_attention_causal(pool, path, NqNk):
    Nq, Nk = NqNk
    rng = np.random.default_rng(Nq + Nk)
    B, H, D = 2, 2, 24
    q, k, v = rand(rng, B, H, Nq, D), rand(rng, B, H, Nk, D), rand(rng, B, H, Nk, D)
    got, _ = run_attn(pool, q, k, v, PATHS[path], causal=True)
    i = np.arange(Nq)[:, None]
    j = np.arange(Nk)[None, :]
    mask = j <= i + (Nk - Nq)
    assert rel_err(got, sdpa_ref(q, k, v, mask)) < 1e-5


def test_attention_causal_fully_masked_rows_are_zero(pool):
    """Nk < Nq: the first queries see no key; their output is defined as 0."""
    rng = np.random.default_rng(1)
    B, H, Nq, Nk, D = 1, 2, 10, 4, 8
    q, k, v = rand(rng, B, H, Nq, D), rand(rng, B, H, Nk, D), rand(rng, B, H, Nk, D)
    got, _ = run_attn(pool, q, k, v, causal=True)
    assert np.all(got[:, : Nq - Nk] == 0)
    i = np.arange(Nq - Nk, Nq)[:, None]
    mask = np.arange(Nk)[None, :] <= i + (Nk - Nq)
    assert rel_err(got[:, Nq - Nk:], sdpa_ref(q[:, :, Nq - Nk:], k, v, mask)) < 1e-5


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("causal", [False, True])
def test_attention_segments(pool, path, causal):
    rng = np.random.default_rng(11)
    B, H, N, D = 2, 3, 171, 32
    seg = [0, 5, 70, 70, 140, 171]  # includes an empty segment
    q, k, v = rand(rng, B, H, N, D), rand(rng, B, H, N, D), rand(rng, B, H, N, D)
    got, _ = run_attn(pool, q, k, v, PATHS[path], causal=causal, segments=seg)
    ids = np.zeros(N, np.int64)
    for s in range(len(seg) - 1):
        ids[seg[s]: seg[s + 1]] = s
    mask = ids[:, None] == ids[None, :]
    if causal:
        mask &= np.arange(N)[None, :] <= np.arange(N)[:, None]
    assert rel_err(got, sdpa_ref(q, k, v, mask)) < 1e-5


def test_attention_bad_segments_fail_at_compute(pool):
    rng = np.random.default_rng(2)
    q = rand(rng, 1, 1, 8, 4)
    with pytest.raises(Exception):
        run_attn(pool, q, q, q, segments=[0, 5, 3, 8])


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("win", [(14, 14), (5, 7)])
def test_attention_rel_pos(pool, path, win):
    """SAM's decomposed relative position: logit[i, j] += rel_h[j // Kw, i] + rel_w[j % Kw, i]."""
    Kh, Kw = win
    rng = np.random.default_rng(Kh * Kw)
    B, H, N, D = 3, 2, Kh * Kw, 64
    q, k, v = rand(rng, B, H, N, D), rand(rng, B, H, N, D), rand(rng, B, H, N, D)
    rel_h, rel_w = rand(rng, B, H, N, Kh), rand(rng, B, H, N, Kw)
    got, _ = run_attn(pool, q, k, v, PATHS[path], rel_h=rel_h, rel_w=rel_w)
    j = np.arange(N)
    full = rel_h[..., j // Kw] + rel_w[..., j % Kw]
    assert rel_err(got, sdpa_ref(q, k, v, full)) < 1e-5


def test_attention_rel_pos_with_bias(pool):
    rng = np.random.default_rng(9)
    Kh, Kw, B, H, D = 9, 15, 1, 2, 16
    N = Kh * Kw
    q, k, v = rand(rng, B, H, N, D), rand(rng, B, H, N, D), rand(rng, B, H, N, D)
    rel_h, rel_w, bias = rand(rng, B, H, N, Kh), rand(rng, B, H, N, Kw), rand(rng, 1, 1, N, N)
    got, _ = run_attn(pool, q, k, v, bias=bias, rel_h=rel_h, rel_w=rel_w)
    j = np.arange(N)
    full = rel_h[..., j // Kw] + rel_w[..., j % Kw] + bias
    assert rel_err(got, sdpa_ref(q, k, v, full)) < 1e-5


@pytest.mark.parametrize("path", list(PATHS))
def test_attention_fused_qkv_views(pool, path):
    """How the model calls it: qkv [3·D·H, N, B] -> views [D, H, N, B] -> permute to [D, N, H, B]."""
    rng = np.random.default_rng(3)
    B, H, N, D = 2, 4, 77, 32
    qkv = rand(rng, B, N, 3 * H * D)  # ne [3DH, N, B]
    ctx = Context(PATHS[path])
    t = ctx.tensor(qkv)
    views = []
    for part in range(3):
        ne = ffi.new("int64_t[4]", [D, H, N, B])
        nb = ffi.new("size_t[4]", [4, 4 * D, 4 * 3 * D * H, 4 * 3 * D * H * N])
        vw = lib.tp_view(ctx.ptr, t, 4, ne, nb, part * D * H * 4)
        views.append(lib.tp_permute(ctx.ptr, vw, 0, 2, 1, 3))
    out = lib.tp_attention(ctx.ptr, views[0], views[1], views[2], ffi.NULL)
    ctx.check()
    ctx.compute([out], pool)
    x = qkv.reshape(B, N, 3, H, D).transpose(2, 0, 3, 1, 4)  # (3, B, H, N, D)
    ref = sdpa_ref(np.ascontiguousarray(x[0]), np.ascontiguousarray(x[1]), np.ascontiguousarray(x[2]))
    assert rel_err(to_numpy(out), ref) < 1e-5


def test_attention_strided_element_views(pool):
    """q/k/v whose dim 0 is not unit-stride (transposed views) take the gather paths."""
    rng = np.random.default_rng(4)
    B, H, N, D = 1, 2, 40, 24
    qt, kt, vt = rand(rng, B, H, D, N), rand(rng, B, H, D, N), rand(rng, B, H, D, N)  # ne [N, D, H, B]
    ctx = Context()
    tq, tk, tv = (lib.tp_transpose(ctx.ptr, ctx.tensor(a)) for a in (qt, kt, vt))
    out = lib.tp_attention(ctx.ptr, tq, tk, tv, ffi.NULL)
    ctx.check()
    ctx.compute([out], pool)
    sw = lambda a: np.ascontiguousarray(a.swapaxes(2, 3))  # noqa: E731
    assert rel_err(to_numpy(out), sdpa_ref(sw(qt), sw(kt), sw(vt))) < 1e-5


def test_attention_large_no_nxn_buffer():
    """12 heads x 4096 tokens x 64: the planned buffer holds no 4096x4096 matrix."""
    rng = np.random.default_rng(5)
    B, H, N, D = 1, 12, 4096, 64
    q, k, v = rand(rng, B, H, N, D), rand(rng, B, H, N, D), rand(rng, B, H, N, D)
    got, peak = run_attn(ThreadPool(2), q, k, v)
    assert peak < 4096 * 4096 * 4 // 2
    assert peak - got.nbytes < 16 << 20  # beside the output: only per-thread tiles
    assert rel_err(got, sdpa_ref(q, k, v)) < 2e-5


def test_attention_errors():
    ctx = Context()
    q = ctx.tensor(np.zeros((1, 2, 5, 8), np.float32))
    k = ctx.tensor(np.zeros((1, 2, 6, 7), np.float32))
    assert lib.tp_attention(ctx.ptr, q, k, k, ffi.NULL) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_SHAPE
    assert "tp_attention" in ffi.string(lib.tp_context_error(ctx.ptr)).decode()
    ctx = Context()
    q = ctx.tensor(np.zeros((1, 3, 5, 8), np.float32))
    k = ctx.tensor(np.zeros((1, 2, 6, 8), np.float32))  # H 3 % Hkv 2
    assert lib.tp_attention(ctx.ptr, q, k, k, ffi.NULL) == ffi.NULL
    ctx = Context()
    q = ctx.tensor(np.zeros((1, 2, 5, 8), np.float32))
    k = ctx.tensor(np.zeros((1, 2, 6, 8), np.float32))
    opts = ffi.new("tp_attention_opts *", lib.tp_attention_default_opts())
    opts.segments = ctx.tensor(np.array([0, 5], np.int32))  # Nq != Nk
    assert lib.tp_attention(ctx.ptr, q, k, k, opts) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_SHAPE
    ctx = Context()
    q = ctx.tensor(np.zeros((1, 2, 6, 8), np.float32))
    opts = ffi.new("tp_attention_opts *", lib.tp_attention_default_opts())
    opts.bias = ctx.tensor(np.zeros((1, 2, 6, 5), np.float32))
    assert lib.tp_attention(ctx.ptr, q, q, q, opts) == ffi.NULL
    ctx = Context()
    q = ctx.tensor(np.zeros((1, 2, 6, 8), np.float32))
    opts = ffi.new("tp_attention_opts *", lib.tp_attention_default_opts())
    opts.rel_h = ctx.tensor(np.zeros((1, 2, 6, 2), np.float32))
    assert lib.tp_attention(ctx.ptr, q, q, q, opts) == ffi.NULL  # rel_w missing
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_INVALID_ARGUMENT


def check_bf16_attention(got, q, k, v, mask, label: str) -> None:
    """A TP_PRECISION_BF16 attention result: on a CPU with BF16 arithmetic within 4e-3 of SDPA on BF16-rounded
    q·scale, K and V and measurably off the exact F32 result (BF16 arithmetic really ran, not the F32
    fallback); elsewhere the exact F32 result."""
    from test_mul_mat_bf16 import HAS_BF16, bf16_round

    exact = sdpa_ref(q, k, v, mask)
    if not HAS_BF16:
        assert rel_err(got, exact) < 1e-5
        return
    scale = 1.0 / np.sqrt(q.shape[-1])
    ref = sdpa_ref(bf16_round(q * scale), bf16_round(k), bf16_round(v), mask, scale=1.0)
    err, err_exact = rel_err(got, ref), rel_err(got, exact)
    print(f"bf16 attention {label}: rel err {err:.2e} vs bf16-operand SDPA, {err_exact:.2e} vs F32")
    assert err < 4e-3
    assert err_exact > 1e-6


@pytest.mark.parametrize(
    "B,H,Nq,Nk,rel,causal",
    [(2, 3, 37, 53, False, False), (1, 2, 130, 300, False, True), (2, 2, 196, 196, True, False),
     (1, 1, 257, 257, False, False)],
)
def test_attention_bf16_precision(pool, B, H, Nq, Nk, rel, causal):
    """TP_PRECISION_BF16 (heads of 64: AMX tiles, else vdpbf16ps on AVX512-BF16): q·scale, K, V and the
    probabilities rounded to BF16, F32 accumulation. Against SDPA on BF16-rounded q·scale, K and V (the
    probabilities' rounding is the rest of the difference); without BF16 arithmetic, the exact F32 result."""
    from test_mul_mat_bf16 import PRECISION_BF16, make_ctx

    rng = np.random.default_rng(Nq + Nk)
    D = 64
    q, k, v = rand(rng, B, H, Nq, D), rand(rng, B, H, Nk, D), rand(rng, B, H, Nk, D)
    ctx = make_ctx(precision=PRECISION_BF16)
    opts = ffi.new("tp_attention_opts *", lib.tp_attention_default_opts())
    opts.causal = causal
    mask = None
    if rel:  # SAM's decomposed rel-pos: Nk = 14 x 14
        rh, rw = rand(rng, B, H, Nq, 14), rand(rng, B, H, Nq, 14)
        opts.rel_h, opts.rel_w = ctx.tensor(rh), ctx.tensor(rw)
        j = np.arange(Nk)
        mask = np.ascontiguousarray(rh[..., j // 14] + rw[..., j % 14])
    if causal:
        mask = np.where(np.arange(Nk)[None, :] <= np.arange(Nq)[:, None] + (Nk - Nq), 0.0, -np.inf).astype(np.float32)
    out = lib.tp_attention(ctx.ptr, ctx.tensor(q), ctx.tensor(k), ctx.tensor(v), opts)
    ctx.check()
    ctx.compute([out], pool)
    got = to_numpy(out)
    check_bf16_attention(got, q, k, v, mask, f"B{B} H{H} Nq{Nq} Nk{Nk}")


@pytest.mark.parametrize("kernel", ["amx", "vdpbf16ps"])
@pytest.mark.parametrize(
    "B,H,Hkv,Nq,Nk,D,Dv,causal,segments",
    [(1, 2, 2, 150, 150, 72, 72, False, None),  # SigLIP's heads (PaddleOCR-VL, DeepSeek-VL2: 1152 / 16)
     (1, 2, 2, 171, 171, 72, 72, False, [0, 5, 70, 70, 140, 171]),  # several images in one sequence
     (2, 3, 3, 37, 53, 40, 72, False, None),  # D and Dv differ, neither a multiple of 32
     (1, 4, 2, 130, 130, 96, 96, True, None),  # D a multiple of 32 but not 64; grouped kv heads
     (1, 2, 1, 70, 257, 80, 24, False, None),
     (1, 1, 1, 33, 33, 3, 5, False, None)],
)
def test_attention_bf16_any_head_size(pool, monkeypatch, kernel, B, H, Hkv, Nq, Nk, D, Dv, causal, segments):
    """TP_PRECISION_BF16 for head sizes that are not multiples of 32 (D) / 16 (Dv): the BF16 copies of
    q·scale and K are zero padded along D, those of V and the accumulator along Dv. kernel: the AMX tiles,
    or (TILEPASS_AMX=0) the vdpbf16ps kernels. Against SDPA on BF16-rounded q·scale, K and V; on a CPU
    without BF16 arithmetic, the exact F32 result."""
    from test_mul_mat_bf16 import PRECISION_BF16, make_ctx

    if kernel == "vdpbf16ps":
        monkeypatch.setenv("TILEPASS_AMX", "0")
    rng = np.random.default_rng(Nq * 7 + D * 3 + Dv)
    q, k, v = rand(rng, B, H, Nq, D), rand(rng, B, Hkv, Nk, D), rand(rng, B, Hkv, Nk, Dv)
    ctx = make_ctx(precision=PRECISION_BF16)
    opts = ffi.new("tp_attention_opts *", lib.tp_attention_default_opts())
    opts.causal = causal
    mask = None
    if segments is not None:
        opts.segments = ctx.tensor(np.asarray(segments, np.int32))
        ids = np.zeros(Nq, np.int64)
        for s in range(len(segments) - 1):
            ids[segments[s]: segments[s + 1]] = s
        mask = ids[:, None] == ids[None, :]
    if causal:
        mask = np.arange(Nk)[None, :] <= np.arange(Nq)[:, None] + (Nk - Nq)
    out = lib.tp_attention(ctx.ptr, ctx.tensor(q), ctx.tensor(k), ctx.tensor(v), opts)
    ctx.check()
    ctx.compute([out], pool)
    got = to_numpy(out)
    assert got.shape == (B, Nq, H, Dv)
    check_bf16_attention(got, q, k, v, mask, f"({kernel}) D{D} Dv{Dv}")
