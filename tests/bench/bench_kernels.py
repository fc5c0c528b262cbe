"""mul_mat kernels against numpy (OpenBLAS sgemm) and torch on the same shapes, in the same run.

run(n_threads) -> rows {name, ours_ms, peer, peer_ms, ratio (peer/ours: > 1 = we are faster), gflops, ...}.
  - F32 GEMM: SAM qkv 2304×768 over 4096 tokens, CLIP ffn 4096×1024 over 257 tokens, decode GEMV
    1280×1280 (one token): beside numpy and torch; GFLOP/s and the share of the FMA peak;
  - BF16 / F16 weights on the same shapes: against our own F32 (peer = "ours_f32");
  - Q8_0 / Q4_K / Q4_0 / Q6_K GEMV 1280×1280, 6848×1280, 129280×1280: GB/s of weights read against a plain
    streaming read measured in the same run (peer = "stream_read", ratio = our GB/s / stream GB/s);
  - 1 → n threads on the GEMM shapes (ratio = speed-up).
Run as a script: `python tests/bench/bench_kernels.py [--threads N]` prints a table."""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from encoder.graph import Context, Graph, ThreadPool  # noqa: E402
from encoder.native import ffi, lib  # noqa: E402

F32, F16, Q4_0, Q8_0, Q4_K, Q6_K, BF16 = 0, 1, 2, 8, 12, 14, 30
TNAME = {F32: "f32", F16: "f16", BF16: "bf16", Q8_0: "q8_0", Q4_0: "q4_0", Q4_K: "q4_K", Q6_K: "q6_K"}

GEMM_SHAPES = [("sam_qkv", 2304, 768, 4096), ("clip_ffn", 4096, 1024, 257)]  # name, M, K, N
GEMV_SHAPES = [(1280, 1280), (6848, 1280), (129280, 1280)]  # M, K


def _best_ms(fn, min_time=0.3, max_reps=30, min_reps=3):
    fn()
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < min_reps or (time.perf_counter() < t_end and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def _openblas_set_threads(n: int) -> bool:
    """numpy's bundled OpenBLAS: set its thread count through its own entry point."""
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*.so*"))
    for path in libs:
        try:
            so = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads"):
            f = getattr(so, sym, None)
            if f is not None:
                f(ctypes.c_int(n))
                return True
    return False


class _MulMat:
    """A computed-once graph holding one mul_mat, re-run for timing."""

    def __init__(self, w, x, wtype, n_threads, pool=None):
        self.ctx = Context()
        out = lib.tp_mul_mat(self.ctx.ptr, self.ctx.tensor(w, wtype), self.ctx.tensor(x))
        if out == ffi.NULL:
            self.ctx.check()
        self.g = Graph(self.ctx)
        self.g.add_output(out)
        self.pool = pool or ThreadPool(n_threads)
        self.g.compute(self.pool)

    def __call__(self):
        self.g.compute(self.pool)


def _fma_peak_gflops(n_threads: int) -> float:
    """2 FMA units × 16 lanes × 2 flops per cycle per core at the nominal clock (cpuinfo MHz)."""
    mhz = 2000.0
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                break
    except OSError:
        pass
    lanes = 16 if lib.tp_cpu_best_path() == 2 else 8
    return n_threads * mhz * 1e-3 * 2 * lanes * 2


def _stream_read_gbs(n_threads: int, nbytes=1 << 29) -> float:
    torch.set_num_threads(n_threads)
    t = torch.ones(nbytes // 4, dtype=torch.float32)
    ms = _best_ms(lambda: t.sum(), min_time=0.3)
    return nbytes / (ms * 1e-3) / 1e9


def run(n_threads: int = 2) -> list[dict]:
    rows: list[dict] = []
    rng = np.random.default_rng(0)
    peak = _fma_peak_gflops(n_threads)
    torch.set_num_threads(n_threads)
    have_blas_threads = _openblas_set_threads(n_threads)
    pool = ThreadPool(n_threads)
    pool1 = ThreadPool(1)
    f32_ms: dict[str, float] = {}

    shapes = GEMM_SHAPES + [("decode_gemv", 1280, 1280, 1)]
    for name, M, K, N in shapes:
        w = rng.standard_normal((M, K)).astype(np.float32) * 0.05
        x = rng.standard_normal((N, K)).astype(np.float32)
        flop = 2.0 * M * N * K
        ours = _best_ms(_MulMat(w, x, F32, n_threads, pool))
        f32_ms[name] = ours
        gf = flop / (ours * 1e-3) / 1e9
        npm = _best_ms(lambda: x @ w.T)
        wt, xt = torch.from_numpy(w), torch.from_numpy(x)
        with torch.inference_mode():
            tm = _best_ms(lambda: torch.nn.functional.linear(xt, wt))
        shape = f"{M}x{K}x{N}"
        rows.append({"name": f"mul_mat_f32_{name}", "shape": shape, "ours_ms": ours, "peer": "numpy",
                     "peer_ms": npm, "ratio": npm / ours, "gflops": gf, "peak_frac": gf / peak,
                     "blas_threads_set": have_blas_threads})
        rows.append({"name": f"mul_mat_f32_{name}", "shape": shape, "ours_ms": ours, "peer": "torch",
                     "peer_ms": tm, "ratio": tm / ours, "gflops": gf, "peak_frac": gf / peak})
        for wtype in (BF16, F16):
            ms = _best_ms(_MulMat(w, x, wtype, n_threads, pool))
            wt16 = wt.to(torch.bfloat16 if wtype == BF16 else torch.float16)
            rows.append({"name": f"mul_mat_{TNAME[wtype]}_{name}", "shape": shape, "ours_ms": ms, "peer": "ours_f32",
                         "peer_ms": ours, "ratio": ours / ms, "gflops": flop / (ms * 1e-3) / 1e9,
                         "peak_frac": flop / (ms * 1e-3) / 1e9 / peak})
            if wtype == BF16:
                xt16 = xt.to(torch.bfloat16)
                with torch.inference_mode():
                    tm16 = _best_ms(lambda: torch.nn.functional.linear(xt16, wt16))
                rows.append({"name": f"mul_mat_bf16_{name}", "shape": shape, "ours_ms": ms, "peer": "torch_bf16",
                             "peer_ms": tm16, "ratio": tm16 / ms, "gflops": flop / (ms * 1e-3) / 1e9})
        if N > 1 and n_threads > 1:
            one = _best_ms(_MulMat(w, x, F32, 1, pool1))
            rows.append({"name": f"mul_mat_f32_{name}_threads", "shape": shape, "ours_ms": ours,
                         "peer": "ours_1thread", "peer_ms": one, "ratio": one / ours,
                         "gflops": gf})
            one16 = _best_ms(_MulMat(w, x, BF16, 1, pool1))
            ms16 = _best_ms(_MulMat(w, x, BF16, n_threads, pool))
            rows.append({"name": f"mul_mat_bf16_{name}_threads", "shape": shape, "ours_ms": ms16,
                         "peer": "ours_1thread", "peer_ms": one16, "ratio": one16 / ms16,
                         "gflops": flop / (ms16 * 1e-3) / 1e9})

    stream = _stream_read_gbs(n_threads)
    rows.append({"name": "stream_read", "gbs": stream, "threads": n_threads})
    for wtype in (Q8_0, Q4_K, Q4_0, Q6_K):
        for M, K in GEMV_SHAPES:
            w = (rng.standard_normal((M, K)).astype(np.float32)) * 0.05
            x = rng.standard_normal((1, K)).astype(np.float32)
            nbytes = int(lib.tp_type_row_bytes(wtype, K)) * M
            ms = _best_ms(_MulMat(w, x, wtype, n_threads, pool))
            gbs = nbytes / (ms * 1e-3) / 1e9
            rows.append({"name": f"gemv_{TNAME[wtype]}_{M}x{K}", "ours_ms": ms, "peer": "stream_read",
                         "peer_ms": nbytes / (stream * 1e9) * 1e3, "ratio": gbs / stream, "gbs": gbs,
                         "gflops": 2.0 * M * K / (ms * 1e-3) / 1e9})
            del w
    for wtype in (Q8_0, Q4_K):  # quantised weights over many tokens, for the record
        name, M, K, N = GEMM_SHAPES[1]
        w = rng.standard_normal((M, K)).astype(np.float32) * 0.05
        x = rng.standard_normal((N, K)).astype(np.float32)
        ms = _best_ms(_MulMat(w, x, wtype, n_threads, pool))
        rows.append({"name": f"mul_mat_{TNAME[wtype]}_{name}", "shape": f"{M}x{K}x{N}", "ours_ms": ms,
                     "peer": "ours_f32", "peer_ms": f32_ms[name], "ratio": f32_ms[name] / ms,
                     "gflops": 2.0 * M * N * K / (ms * 1e-3) / 1e9})
    for r in rows:
        r["threads"] = n_threads
        r["cpu_path"] = ffi.string(lib.tp_cpu_path_name(lib.tp_cpu_best_path())).decode()
        r.setdefault("fma_peak_gflops", peak)
    return rows


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rows = run(args.threads)
    keys = ["name", "shape", "ours_ms", "peer", "peer_ms", "ratio", "gflops", "peak_frac", "gbs"]
    print("  ".join(f"{k:>14}" for k in keys))
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k, "")
            cells.append(f"{v:>14.4g}" if isinstance(v, float) else f"{str(v):>14}")
        print("  ".join(cells))


if __name__ == "__main__":
    main()
