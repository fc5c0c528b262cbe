"""Fused attention (tp_attention) vs torch.nn.functional.scaled_dot_product_attention, same shapes.

run(n_threads) -> rows {name, shape, peer, ours_ms, peer_ms, ratio (peer/ours: > 1 = we are faster)}.
Shapes: SAM windows (25 windows x 196 tokens, 12 heads, D 64; plain and with the decomposed rel-pos
bias, which torch gets as a materialised float mask), SAM global attention (4096 tokens, 12 heads),
CLIP (257 tokens, 16 heads, a batch of tiles) and decode (1 query over a 4096 KV cache, GQA)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from encoder.graph import Context, Graph, ThreadPool  # noqa: E402
from encoder.native import ffi, lib  # noqa: E402

# name, B, H, Hkv, Nq, Nk, D, rel-pos window (Kh, Kw) or None
SHAPES = [
    ("sam_window", 25, 12, 12, 196, 196, 64, None),
    ("sam_window_relpos", 25, 12, 12, 196, 196, 64, (14, 14)),
    ("sam_global", 1, 12, 12, 4096, 4096, 64, None),
    ("clip_257", 7, 16, 16, 257, 257, 64, None),
    ("decode_4096", 1, 16, 4, 1, 4096, 128, None),
]


def _best_ms(fn, min_time=0.4, max_reps=50):
    fn()  # warm-up
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < 3 or (time.perf_counter() < t_end and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * min(times)


def _ours(pool, q, k, v, rel):
    ctx = Context()
    opts = ffi.new("tp_attention_opts *", lib.tp_attention_default_opts())
    if rel is not None:
        opts.rel_h = ctx.tensor(rel[0])
        opts.rel_w = ctx.tensor(rel[1])
    out = lib.tp_attention(ctx.ptr, ctx.tensor(q), ctx.tensor(k), ctx.tensor(v), opts)
    ctx.check()
    g = Graph(ctx)
    g.add_output(out)
    g.compute(pool)
    ms = _best_ms(lambda: g.compute(pool))
    return ms


def _torch(q, k, v, mask, H, Hkv):
    qt, kt, vt = torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v)
    gqa = H != Hkv
    m = None if mask is None else torch.from_numpy(mask)

    def fn():
        with torch.no_grad():
            F.scaled_dot_product_attention(qt, kt, vt, attn_mask=m, enable_gqa=gqa)

    return _best_ms(fn)


def run(n_threads: int = 2) -> list[dict]:
    torch.set_num_threads(n_threads)
    pool = ThreadPool(n_threads)
    rng = np.random.default_rng(0)
    rows = []
    for name, B, H, Hkv, Nq, Nk, D, win in SHAPES:
        q = rng.standard_normal((B, H, Nq, D), dtype=np.float32)
        k = rng.standard_normal((B, Hkv, Nk, D), dtype=np.float32)
        v = rng.standard_normal((B, Hkv, Nk, D), dtype=np.float32)
        rel, mask = None, None
        if win is not None:
            Kh, Kw = win
            rh = rng.standard_normal((B, H, Nq, Kh), dtype=np.float32)
            rw = rng.standard_normal((B, H, Nq, Kw), dtype=np.float32)
            rel = (rh, rw)
            j = np.arange(Nk)
            mask = np.ascontiguousarray(rh[..., j // Kw] + rw[..., j % Kw])
        ours = _ours(pool, q, k, v, rel)
        peer = _torch(q, k, v, mask, H, Hkv)
        rows.append({
            "name": f"attention_{name}",
            "shape": f"B{B} H{H}/{Hkv} Nq{Nq} Nk{Nk} D{D}" + (f" relpos{win[0]}x{win[1]}" if win else ""),
            "peer": "torch_sdpa",
            "ours_ms": ours,
            "peer_ms": peer,
            "ratio": peer / ours,
        })
    return rows


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    for r in run(args.threads):
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
