"""Core: graph building, planning and computing, views, broadcasting, against numpy/torch."""

import numpy as np
import pytest
import torch

from encoder.graph import Context, ThreadPool, to_numpy
from encoder.native import TilepassError, ffi, lib


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def pool(request):
    return ThreadPool(request.param)


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
