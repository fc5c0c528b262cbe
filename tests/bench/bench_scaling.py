"""Thread scaling on a larger machine (issue 3: "scale from 1 to 2 threads here and on to 16 cores"):
the GEMM shapes of bench_kernels (F32, BF16, Q8_0 weights) and the Q8_0 GEMV at 1, 2, 4, 8 and 16 threads
(up to the machine's cores), each beside numpy/OpenBLAS sgemm at the same thread count in the same run.

run(n_threads) ignores n_threads: it sweeps the counts the machine has. On a machine of fewer than 4 cores
it measures nothing (bench_kernels already has 1 -> 2 threads) and says so in its one row.
`python tests/bench/bench_scaling.py [--json OUT]` prints the table."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench_kernels import (BF16, F32, GEMM_SHAPES, Q8_0, TNAME, _best_ms, _fma_peak_gflops, _MulMat,  # noqa: E402
                           _openblas_set_threads)

from encoder.graph import ThreadPool  # noqa: E402
from encoder.native import ffi, lib  # noqa: E402


def _counts(n_cpu: int) -> list[int]:
    return [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= n_cpu]


def run(n_threads: int = 0) -> list[dict]:
    n_cpu = len(os.sched_getaffinity(0))
    if n_cpu < 4:
        return [{"name": "scaling", "skipped": f"{n_cpu} cores: see bench_kernels' 1 -> 2 thread rows"}]
    rng = np.random.default_rng(0)
    path = ffi.string(lib.tp_cpu_path_name(lib.tp_cpu_best_path())).decode()
    rows: list[dict] = []
    cases = [(name, M, K, N, wt) for name, M, K, N in GEMM_SHAPES for wt in (F32, BF16, Q8_0)]
    cases.append(("decode_gemv", 129280, 1280, 1, Q8_0))
    base: dict[tuple, float] = {}
    for name, M, K, N, wt in cases:
        w = rng.standard_normal((M, K)).astype(np.float32) * 0.05
        x = rng.standard_normal((N, K)).astype(np.float32)
        flop = 2.0 * M * N * K
        for n in _counts(n_cpu):
            pool = ThreadPool(n)
            ms = _best_ms(_MulMat(w, x, wt, n, pool))
            key = (name, wt)
            base.setdefault(key, ms)
            row = {"name": f"scaling_{name}_{TNAME[wt]}", "shape": f"{M}x{K}x{N}", "threads": n, "ours_ms": ms,
                   "speedup_vs_1": base[key] / ms, "efficiency": base[key] / ms / n,
                   "gflops": flop / (ms * 1e-3) / 1e9, "fma_peak_gflops": _fma_peak_gflops(n), "cpu_path": path}
            if N == 1:  # GEMV: bytes of Q8_0 weights streamed per call
                row["gbs"] = M * K // 32 * 34 / (ms * 1e-3) / 1e9
            if wt == F32 and N > 1 and _openblas_set_threads(n):
                npm = _best_ms(lambda: x @ w.T)
                row.update(peer="numpy", peer_ms=npm, ratio=npm / ms)
            rows.append(row)
            del pool
    return rows


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = run()
    for r in rows:
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
