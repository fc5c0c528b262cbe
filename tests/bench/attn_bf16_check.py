"""One-shot check of tp_attention's BF16 path for any head size, for a CPU with AMX / AVX512-BF16.

1. runs the attention tests (and the BF16-precision matmul / vision tests) with pytest: on such a CPU
   they compare the BF16 path (AMX tiles, and the vdpbf16ps kernels under TILEPASS_AMX=0) with SDPA on
   BF16-rounded operands, for heads of 72 (PaddleOCR-VL's and DeepSeek-VL2's SigLIP), 40, 96, 80/24, 3/5 ...
2. times tp_attention on a PaddleOCR-VL-like shape (one A4 page: 11088 tokens, 16 heads of 72, one
   segment) in BF16 precision (AMX, then vdpbf16ps) and in F32 precision, and prints GFLOP/s
   (4·H·N²·D / time: the q·k and p·v products) and the BF16 result's error against the F32 one.

Usage (from the repository root, after `make lib sanlib`):
    TILEPASS_LIB=$PWD/build/libtilepass.so python tests/bench/attn_bf16_check.py [--threads 2] [--n 11088] [--san]
(--san: the attention tests once more on the ASan/UBSan build, as `make santest` runs them.)
Exit status: pytest's, or 1 when the CPU has no BF16 arithmetic (nothing of the BF16 path was checked)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from encoder.graph import Graph, ThreadPool, to_numpy  # noqa: E402
from encoder.native import ffi, lib  # noqa: E402
from test_mul_mat_bf16 import HAS_BF16, PRECISION_BF16, PRECISION_F32, make_ctx  # noqa: E402

TESTS = ["tests/test_ops_attention.py", "tests/test_attention_decode.py", "tests/test_mul_mat_bf16.py"]


def cpu_flags() -> set[str]:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def run_tests(san: bool) -> int:
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *TESTS]
    env = dict(os.environ)
    if san:  # as `make santest`: the ASan/UBSan library (make sanlib), the runtimes preloaded
        cc = os.environ.get("CC", "cc")
        rt = [subprocess.run([cc, f"-print-file-name={n}"], capture_output=True, text=True, check=True).stdout.strip()
              for n in ("libasan.so", "libubsan.so")]
        env.update(LD_PRELOAD=" ".join(rt), ASAN_OPTIONS="detect_leaks=0",
                   UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
                   TILEPASS_LIB=str(ROOT / "build/san/libtilepass.so"))
        cmd = cmd[:-len(TESTS)] + TESTS[:2]  # the attention tests
    print("$", ("(ASan) " if san else "") + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def time_attention(pool: ThreadPool, q, k, v, precision: int, amx: bool, reps: int) -> tuple[float, np.ndarray]:
    """Best seconds of reps computes (after one warm-up), and the output."""
    if amx:
        os.environ.pop("TILEPASS_AMX", None)
    else:
        os.environ["TILEPASS_AMX"] = "0"  # the vdpbf16ps kernels
    try:
        ctx = make_ctx(precision=precision)
        opts = ffi.new("tp_attention_opts *", lib.tp_attention_default_opts())
        opts.segments = ctx.tensor(np.asarray([0, q.shape[2]], np.int32))  # one image: one segment
        out = lib.tp_attention(ctx.ptr, ctx.tensor(q), ctx.tensor(k), ctx.tensor(v), opts)
        ctx.check()
        g = Graph(ctx)
        g.add_output(out)
        g.compute(pool)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            g.compute(pool)
            best = min(best, time.perf_counter() - t0)
        return best, to_numpy(out).copy()
    finally:
        os.environ.pop("TILEPASS_AMX", None)


def bench(threads: int, n: int, heads: int, d: int, reps: int) -> bool:
    """Prints the timings; False when the BF16 result is not a BF16 approximation of the F32 one."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, heads, n, d), dtype=np.float32) for _ in range(3))
    flop = 4.0 * heads * n * n * d
    pool = ThreadPool(threads)
    print(f"\ntp_attention N={n} H={heads} D={d} one segment, {threads} threads, {flop / 1e9:.1f} GFLOP per call")
    t32, ref = time_attention(pool, q, k, v, PRECISION_F32, True, reps)
    print(f"  f32 precision          : {t32 * 1e3:9.1f} ms  {flop / t32 / 1e9:7.1f} GFLOP/s")
    ok = True
    for name, amx in (("bf16 precision, AMX    ", True), ("bf16 precision, vdpbf16", False)):
        t, got = time_attention(pool, q, k, v, PRECISION_BF16, amx, reps)
        err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
        print(f"  {name}: {t * 1e3:9.1f} ms  {flop / t / 1e9:7.1f} GFLOP/s  x{t32 / t:.2f} vs f32, "
              f"max-abs err / max-abs vs f32 {err:.2e}")
        if HAS_BF16 and not 1e-6 < err < 2e-2:  # BF16 operands: ~1e-3; 0 would mean the F32 fallback ran
            print(f"  FAIL: {name.strip()} error {err:.2e} outside (1e-6, 2e-2)")
            ok = False
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=11088, help="tokens (PaddleOCR-VL, A4 page: 11088)")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--d", type=int, nargs="+", default=[72, 64],
                    help="head sizes to time (72: SigLIP; 64: a reference)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-tests", action="store_true")
    ap.add_argument("--san", action="store_true", help="also the attention tests on build/san (make sanlib first)")
    args = ap.parse_args()

    flags = cpu_flags()
    print(f"library {os.environ.get('TILEPASS_LIB', '(default)')}; cpu_best_path {int(lib.tp_cpu_best_path())}; "
          f"amx_bf16 {'amx_bf16' in flags}, avx512_bf16 {'avx512_bf16' in flags}; BF16 arithmetic: {HAS_BF16}")
    if not HAS_BF16:
        print("WARNING: no AVX512-BF16 here: the BF16 path cannot run; tests check the F32 fallback only")
    rc = 0
    if not args.no_tests:
        rc = run_tests(False)
        if args.san:
            rc = rc or run_tests(True)
    for d in args.d:
        if not bench(args.threads, args.n, args.heads, d, args.reps):
            rc = rc or 1
    print(f"\npytest exit status {rc}" + ("" if HAS_BF16 else " (BF16 path NOT exercised on this CPU)"))
    return rc if HAS_BF16 else 1


if __name__ == "__main__":
    sys.exit(main())
