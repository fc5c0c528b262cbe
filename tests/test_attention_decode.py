"""tp_attention's decode path (one query per head, batch 1: keys split over threads, all heads of a key
row at once, partials merged) against torch SDPA: head-major and token-major (KV-cache) layouts,
grouped heads, key counts below / around the thread count and the key block, every CPU path,
1..3 threads."""

import numpy as np
import pytest

from encoder.graph import Context, ThreadPool, to_numpy
from encoder.native import ffi, lib
from test_ops_attention import PATHS, rand, rel_err, sdpa_ref


def run_decode(pool, q, k, v, path, token_major, causal):
    ctx = Context(PATHS[path])
    opts = ffi.new("tp_attention_opts *", lib.tp_attention_default_opts())
    opts.causal = causal
    if token_major:  # k/v stored (B, Nk, Hkv, D) as the KV cache is, viewed as [D, Nk, Hkv, B]
        tk = lib.tp_permute(ctx.ptr, ctx.tensor(np.ascontiguousarray(k.transpose(0, 2, 1, 3))), 0, 2, 1, 3)
        tv = lib.tp_permute(ctx.ptr, ctx.tensor(np.ascontiguousarray(v.transpose(0, 2, 1, 3))), 0, 2, 1, 3)
    else:
        tk, tv = ctx.tensor(k), ctx.tensor(v)
    out = lib.tp_attention(ctx.ptr, ctx.tensor(q), tk, tv, opts)
    ctx.check()
    ctx.compute([out], pool)
    return to_numpy(out)


@pytest.fixture(params=[1, 2, 3], ids=["1thread", "2threads", "3threads"])
def pool3(request):
    return ThreadPool(request.param)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("H,Hkv,Nk,D,Dv", [(10, 10, 1016, 128, 128), (4, 2, 300, 24, 40), (1, 1, 1, 16, 16),
                                           (17, 17, 2, 8, 5), (6, 3, 129, 37, 19), (64, 8, 257, 32, 32),
                                           (16, 2, 1001, 128, 128), (8, 2, 77, 64, 64), (12, 3, 50, 40, 36)])
@pytest.mark.parametrize("token_major", [False, True], ids=["headmajor", "tokenmajor"])
def test_attention_decode(pool3, path, H, Hkv, Nk, D, Dv, token_major):
    rng = np.random.default_rng(H * 100 + Nk + D)
    q, k, v = rand(rng, 1, H, 1, D), rand(rng, 1, Hkv, Nk, D) * 2, rand(rng, 1, Hkv, Nk, Dv)
    for causal in (False, True):
        got = run_decode(pool3, q, k, v, path, token_major, causal)
        assert rel_err(got, sdpa_ref(q, k, v)) < 1e-5
