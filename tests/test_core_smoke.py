"""Core: graph building, planning and computing, views, broadcasting, against numpy/torch."""

import numpy as np
import pytest
import torch

from encoder.graph import Context, ThreadPool, to_numpy
from encoder.native import TilepassError, ffi, lib


def test_add_broadcast_and_permute(pool):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 5, 7, 9)).astype(np.float32)
    b = rng.standard_normal((3, 1, 7, 1)).astype(np.float32)
    ctx = Context()
    ta, tb = ctx.tensor(a), ctx.tensor(b)
    s = lib.tp_add(ctx.ptr, ta, tb)
    # ggml permute: source dim i goes to axis_i. numpy dims are reversed ne dims.
    p = lib.tp_cont(ctx.ptr, lib.tp_permute(ctx.ptr, s, 1, 0, 3, 2))
    out = lib.tp_scale(ctx.ptr, p, 0.5)
    ctx.compute([out, s], pool)
    ref = torch.from_numpy(a) + torch.from_numpy(b)
    np.testing.assert_allclose(to_numpy(s), ref.numpy(), rtol=1e-6)
    # ne [9,7,5,3] -> ne' [7,9,3,5] ; numpy order (5,3,9,7) = ref.permute(1,0,3,2)
    np.testing.assert_allclose(to_numpy(out), 0.5 * ref.permute(1, 0, 3, 2).numpy(), rtol=1e-6)


def test_shape_error_is_sticky_and_named():
    ctx = Context()
    a = ctx.tensor(np.zeros((2, 3), np.float32))
    b = ctx.tensor(np.zeros((4, 3), np.float32))
    bad = lib.tp_add(ctx.ptr, a, b)
    assert bad == ffi.NULL
    again = lib.tp_gelu(ctx.ptr, bad)  # NULL in, NULL out, first error kept
    assert again == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_SHAPE
    assert "tp_add" in ffi.string(lib.tp_context_error(ctx.ptr)).decode()
    with pytest.raises(TilepassError, match="tp_add"):
        ctx.check()


def test_planner_reuses_dead_buffers(pool):
    ctx = Context()
    x = ctx.tensor(np.ones((64, 256), np.float32))
    h = x
    for _ in range(50):
        h = lib.tp_gelu(ctx.ptr, lib.tp_add(ctx.ptr, h, x))
    ctx_graph = ctx.compute([h], pool)
    one = 64 * 256 * 4
    assert ctx_graph.total_intermediate_bytes == 100 * one
    assert ctx_graph.peak_bytes <= 3 * one


def test_planner_peak_for_a_24_layer_vit_is_far_below_its_intermediates():
    """A ViT-shaped graph (24 pre-LN blocks: LN, fused qkv, attention, projection, MLP) keeps only a few
    activations alive at once: the planned buffer is a small fraction of all intermediates."""
    rng = np.random.default_rng(0)
    C, H, N, F = 64, 4, 197, 256
    ctx = Context()
    x = ctx.tensor(rng.standard_normal((N, C)).astype(np.float32))
    ones, zeros = ctx.tensor(np.ones(C, np.float32)), ctx.tensor(np.zeros(C, np.float32))
    h = x
    for _ in range(24):
        w_qkv = ctx.tensor(rng.standard_normal((3 * C, C)).astype(np.float32) * 0.05)
        w_o = ctx.tensor(rng.standard_normal((C, C)).astype(np.float32) * 0.05)
        w_1 = ctx.tensor(rng.standard_normal((F, C)).astype(np.float32) * 0.05)
        w_2 = ctx.tensor(rng.standard_normal((C, F)).astype(np.float32) * 0.05)
        a = lib.tp_layer_norm(ctx.ptr, h, ones, zeros, 1e-5)
        qkv = lib.tp_mul_mat(ctx.ptr, w_qkv, a)  # [3C, N]
        ne = ffi.new("int64_t[4]", [C // H, H, N, 1])
        nb = ffi.new("size_t[4]", [4, 4 * (C // H), 4 * 3 * C, 4 * 3 * C * N])
        q, k, v = (lib.tp_permute(ctx.ptr, lib.tp_view(ctx.ptr, qkv, 4, ne, nb, 4 * C * i), 0, 2, 1, 3) for i in range(3))
        opts = ffi.new("tp_attention_opts *", lib.tp_attention_default_opts())
        o = lib.tp_attention(ctx.ptr, q, k, v, opts)
        o = lib.tp_reshape(ctx.ptr, o, 2, ffi.new("int64_t[2]", [C, N]))
        h = lib.tp_add(ctx.ptr, h, lib.tp_mul_mat(ctx.ptr, w_o, o))
        m = lib.tp_mul_mat(ctx.ptr, w_2, lib.tp_gelu(ctx.ptr, lib.tp_mul_mat(ctx.ptr, w_1, lib.tp_layer_norm(ctx.ptr, h, ones, zeros, 1e-5))))
        h = lib.tp_add(ctx.ptr, h, m)
    g = ctx.compute([h], ThreadPool(2))
    assert np.isfinite(to_numpy(h)).all()
    print(f"24-layer ViT: peak {g.peak_bytes / 2**20:.2f} MiB of {g.total_intermediate_bytes / 2**20:.2f} MiB intermediates")
    assert g.peak_bytes < 0.1 * g.total_intermediate_bytes
