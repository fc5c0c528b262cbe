"""tp_interpolate against torch.nn.functional.interpolate (align_corners=False)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from encoder.graph import Context, ThreadPool, shape, to_numpy
from encoder.native import ffi, lib
from tp_testing import rel_err  # noqa: E402

MODES = {
    "bilinear": (lib.TP_INTERP_BILINEAR, dict(mode="bilinear")),
    "bicubic": (lib.TP_INTERP_BICUBIC, dict(mode="bicubic")),
    "bicubic_aa": (lib.TP_INTERP_BICUBIC_AA, dict(mode="bicubic", antialias=True)),
    "bilinear_aa": (lib.TP_INTERP_BILINEAR_AA, dict(mode="bilinear", antialias=True)),
}


def torch_ref(x_nchw, size, kw):
    return F.interpolate(torch.from_numpy(x_nchw), size=size, align_corners=False, **kw).numpy()


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(
    "src,dst",
    [((64, 64), (40, 40)), ((64, 64), (32, 32)), ((64, 64), (80, 80)), ((16, 16), (10, 10)),
     ((16, 16), (20, 20)), ((7, 13), (29, 5)), ((9, 9), (9, 9)), ((5, 31), (3, 31)), ((1, 6), (4, 1))],
)
def test_interpolate_2d(pool, mode, src, dst):
    tp_mode, kw = MODES[mode]
    rng = np.random.default_rng(hash((mode, src, dst)) % 2**32)
    n, c = 2, 3
    x = rng.standard_normal((n, c) + src).astype(np.float32)  # numpy (N, C, H, W) = ne [W, H, C, N]
    ctx = Context()
    t = lib.tp_interpolate(ctx.ptr, ctx.tensor(x), dst[1], dst[0], tp_mode)
    ctx.check()
    ctx.compute([t], pool)
    got = to_numpy(t)
    ref = torch_ref(x, dst, kw)
    assert got.shape == ref.shape
    assert rel_err(got, ref) < 1e-5


@pytest.mark.parametrize("mode", ["bicubic_aa", "bilinear", "bicubic"])
def test_interpolate_pos_embed_layout(pool, mode):
    """The model's use: a [C, W, H] pos-embed permuted to [W, H, C] (a non-contiguous view)."""
    tp_mode, kw = MODES[mode]
    rng = np.random.default_rng(5)
    emb = rng.standard_normal((64, 64, 24)).astype(np.float32)  # numpy (H, W, C) = ne [C, W, H]
    ctx = Context()
    te = ctx.tensor(emb)
    v = lib.tp_permute(ctx.ptr, te, 2, 0, 1, 3)  # ne [C, W, H] -> [W, H, C]
    t = lib.tp_interpolate(ctx.ptr, v, 40, 40, tp_mode)
    ctx.check()
    ctx.compute([t], pool)
    ref = torch_ref(np.ascontiguousarray(emb.transpose(2, 0, 1))[None], (40, 40), kw)[0]
    assert rel_err(to_numpy(t), ref) < 1e-5


@pytest.mark.parametrize("lin", [(27, 53), (127, 27), (27, 27), (5, 127), (127, 255), (2, 1)])
def test_interpolate_linear_1d(pool, lin):
    """Rel-pos tables: [L, C] resized along L (here ne0 = L after a transpose view)."""
    src, dst = lin
    rng = np.random.default_rng(src * 1000 + dst)
    x = rng.standard_normal((2, 3, src)).astype(np.float32)  # (N, C, L) = ne [L, C, N]
    ctx = Context()
    t = lib.tp_interpolate(ctx.ptr, ctx.tensor(x), dst, 3, lib.TP_INTERP_LINEAR)
    ctx.check()
    ctx.compute([t], pool)
    ref = F.interpolate(torch.from_numpy(x), size=dst, mode="linear", align_corners=False).numpy()
    assert shape(t) == ref.shape
    assert rel_err(to_numpy(t), ref) < 1e-5


def test_interpolate_errors():
    ctx = Context()
    a = ctx.tensor(np.zeros((3, 4, 5), np.float32))
    assert lib.tp_interpolate(ctx.ptr, a, 7, 5, lib.TP_INTERP_LINEAR) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_SHAPE
    assert "tp_interpolate" in ffi.string(lib.tp_context_error(ctx.ptr)).decode()
    ctx = Context()
    a = ctx.tensor(np.zeros((3, 4, 5), np.float32))
    assert lib.tp_interpolate(ctx.ptr, a, 0, 5, lib.TP_INTERP_BILINEAR) == ffi.NULL
    assert lib.tp_interpolate(ctx.ptr, a, 2, 2, 99) == ffi.NULL
    ctx = Context()
    a = ctx.tensor(np.zeros((3, 4, 5), np.float32))
    assert lib.tp_interpolate(ctx.ptr, a, 2, 2, 17) == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_INVALID_ARGUMENT
