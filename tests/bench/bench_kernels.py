"""mul_mat kernels against numpy (OpenBLAS sgemm) and torch on the same shapes, in the same run.

run(n_threads) -> rows {name, ours_ms, peer, peer_ms, ratio (peer/ours: > 1 = we are faster), gflops, ...}.
  - F32 GEMM: SAM qkv 2304×768 over 4096 tokens, CLIP ffn 4096×1024 over 257 tokens, decode GEMV
    1280×1280 (one token): beside numpy and torch; GFLOP/s and the share of the FMA peak (measured by
    tests/bench/peak.c on AVX-512 CPUs: 512-bit FMA chains on every thread);
  - BF16 / F16 weights on the same shapes: against our own F32 (peer = "ours_f32"); BF16 also against the
    vdpbf16ps peak (peak.c);
  - Q8_0 / Q4_K GEMV (one token), rows × cols 1280×1280, 6848×1280, 129280×1280 (gemv_TYPE_MxK): GB/s
    of weights read, cold (copies cycled past the cache), against tests/bench/stream.c run in the same
    sitting with the same threads (ratio = pct_stream / 100), and 1 → n-thread scaling (speedup);
  - 1 → n threads on the GEMM shapes (ratio = speed-up);
  - the vision encoders' GEMMs (VISION_SHAPES, DeepSeek-OCR-2 on a 768 tile), F32 and F16 weights against
    torch's fp32 linear with the same thread count, alternating rounds (vision_TYPE_SHAPE).
Run as a script: `python tests/bench/bench_kernels.py [--threads N] [--vision]` prints a table."""

from __future__ import annotations

import ctypes
import glob
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from encoder.graph import Context, Graph, ThreadPool  # noqa: E402
from encoder.native import ffi, lib  # noqa: E402
from bench_text import stream_bandwidth_gbs  # noqa: E402  (tests/bench/stream.c, built once)

F32, F16, Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, BF16 = 0, 1, 2, 6, 8, 12, 13, 14, 30
TNAME = {F32: "f32", F16: "f16", BF16: "bf16", Q8_0: "q8_0", Q4_0: "q4_0", Q5_0: "q5_0", Q4_K: "q4_K", Q5_K: "q5_K",
         Q6_K: "q6_K"}

GEMM_SHAPES = [("sam_qkv", 2304, 768, 4096), ("clip_ffn", 4096, 1024, 257)]  # name, M, K, N
# DeepSeek-OCR-2's vision encoder on one 768 tile (name, M, K, N): SAM-B's windowed layers over 16 windows
# of 14×14 = 3,136 tokens, the Qwen2 encoder's (896 wide, 2 KV heads of 64, SwiGLU 4864) over 2·144 tokens
VISION_SHAPES = [("sam_qkv", 2304, 768, 3136), ("sam_proj", 768, 768, 3136), ("sam_mlp_up", 3072, 768, 3136),
                 ("sam_mlp_down", 768, 3072, 3136), ("enc_q", 896, 896, 288), ("enc_kv", 128, 896, 288),
                 ("enc_up", 4864, 896, 288), ("enc_down", 896, 4864, 288)]
GEMV_SHAPES = [(1280, 1280), (6848, 1280), (129280, 1280)]  # M, K


def _best_ms(fn, min_time=0.3, max_reps=30, min_reps=3, warm_up=True):
    """The fastest of at least min_reps timed calls (more while min_time lasts, at most max_reps), in ms,
    after one untimed call unless warm_up is False."""
    if warm_up:
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


_PEAKS: dict[int, tuple[float, float]] = {}


def _machine_peaks(n_threads: int) -> tuple[float, float]:
    """(F32 FMA, BF16 vdpbf16ps) GFLOP/s of n_threads, measured by tests/bench/peak.c (512-bit FMA chains,
    best of 5) on an AVX-512 CPU; elsewhere 2 FMA units × 8 lanes × 2 flops × cpuinfo's clock, and no BF16."""
    if n_threads in _PEAKS:
        return _PEAKS[n_threads]
    if lib.tp_cpu_best_path() == 2:
        exe = Path(tempfile.gettempdir()) / "tilepass-peak"
        src = Path(__file__).resolve().parent / "peak.c"
        subprocess.run(["cc", "-O2", "-mavx512f", "-mavx512bf16", "-pthread", str(src), "-o", str(exe)], check=True)
        out = subprocess.run([str(exe), str(n_threads)], check=True, capture_output=True, text=True).stdout
        vals = dict(line.split() for line in out.strip().splitlines())
        _PEAKS[n_threads] = (float(vals["fma"]), float(vals["bf16"]))
        return _PEAKS[n_threads]
    mhz = 2000.0
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                break
    except OSError:
        pass
    _PEAKS[n_threads] = (n_threads * mhz * 1e-3 * 2 * 8 * 2, 0.0)
    return _PEAKS[n_threads]


def _fma_peak_gflops(n_threads: int) -> float:
    return _machine_peaks(n_threads)[0]


class _GemvSet:
    """`copies` independent one-token mul_mats (distinct copies of one weight matrix, one shared x) in
    one graph: the copies together exceed the last-level cache, so every weight byte comes from
    memory as in decode; one compute runs them all (with each op's activation quantisation and
    barriers), and the time per op is the figure."""

    def __init__(self, w, x, wtype, copies):
        self.ctx = Context()
        self.copies = copies
        xt = self.ctx.tensor(x)
        self.g = Graph(self.ctx)
        for _ in range(copies):
            out = lib.tp_mul_mat(self.ctx.ptr, self.ctx.tensor(w, wtype), xt)
            if out == ffi.NULL:
                self.ctx.check()
            self.g.add_output(out)

    def ms(self, pool) -> float:
        return _best_ms(lambda: self.g.compute(pool), min_time=0.5, min_reps=5) / self.copies


GEMV_QTYPES = (Q8_0, Q4_K)  # the decode targets; Q4_0 / Q5_0 / Q5_K / Q6_K with --all-gemv
COLD_BYTES = 96 << 20  # weights cycled per measurement (3 × a 32 MiB L3)


def gemv_rows(n_threads: int, rng, pool, pool1, qtypes=GEMV_QTYPES) -> list[dict]:
    """One-token GEMV on quantised weights, rows × cols = M × K (name gemv_TYPE_MxK): GB/s of weight
    bytes read (cold: copies cycled so that nothing stays cached) against stream.c run in the same
    sitting with the same thread count; `ratio` = the share of the streaming bandwidth; `speedup`
    = 1-thread time / n-thread time."""
    stream = stream_bandwidth_gbs(n_threads)
    rows = [{"name": "stream_read", "gbs": stream, "threads": n_threads, "peer": "stream.c"}]
    for wtype in qtypes:
        for M, K in GEMV_SHAPES:
            nbytes = int(lib.tp_type_row_bytes(wtype, K)) * M
            copies = max(1, -(-COLD_BYTES // nbytes))
            w = rng.standard_normal((M, K)).astype(np.float32) * 0.05
            x = rng.standard_normal((1, K)).astype(np.float32)
            gs = _GemvSet(w, x, wtype, copies)
            del w
            ms = gs.ms(pool)
            ms1 = gs.ms(pool1) if n_threads > 1 else ms
            ms = min(ms, gs.ms(pool))  # again after the 1-thread run: the better of two sittings
            gbs = nbytes / (ms * 1e-3) / 1e9
            rows.append({"name": f"gemv_{TNAME[wtype]}_{M}x{K}", "shape": f"{M}x{K}", "ours_ms": ms,
                         "peer": "stream_read", "peer_ms": nbytes / (stream * 1e9) * 1e3, "ratio": gbs / stream,
                         "gbs": gbs, "stream_gbs": stream, "pct_stream": 100.0 * gbs / stream,
                         "ms_1thread": ms1, "gbs_1thread": nbytes / (ms1 * 1e-3) / 1e9, "speedup": ms1 / ms,
                         "gflops": 2.0 * M * K / (ms * 1e-3) / 1e9, "weight_bytes": nbytes, "copies": copies})
            del gs
    return rows


def vision_gemm_rows(n_threads: int, rng, pool, rounds: int = 3) -> list[dict]:
    """The vision encoders' GEMMs (VISION_SHAPES): ours with F32 and F16 weights against torch's fp32
    linear (torch.set_num_threads(n_threads)) on the same shapes, in alternating rounds (ours F32, torch,
    ours F16, ...; the best of each kind) because memory bandwidth and other processes on the machine
    change from minute to minute; GFLOP/s and the share of the FMA peak. ratio = torch ms / ours ms."""
    peak = _fma_peak_gflops(n_threads)
    torch.set_num_threads(n_threads)
    rows = []
    for name, M, K, N in VISION_SHAPES:
        w = rng.standard_normal((M, K)).astype(np.float32) * 0.05
        x = rng.standard_normal((N, K)).astype(np.float32)
        flop = 2.0 * M * N * K
        ours32, ours16 = _MulMat(w, x, F32, n_threads, pool), _MulMat(w, x, F16, n_threads, pool)
        wt, xt = torch.from_numpy(w), torch.from_numpy(x)

        def peer():
            with torch.inference_mode():
                torch.nn.functional.linear(xt, wt)

        best = {"f32": float("inf"), "torch": float("inf"), "f16": float("inf")}
        for _ in range(rounds):
            for kind, fn in (("f32", ours32), ("torch", peer), ("f16", ours16)):
                best[kind] = min(best[kind], _best_ms(fn, min_time=0.15, min_reps=2))
        tg = flop / (best["torch"] * 1e-3) / 1e9
        for wtype in ("f32", "f16"):
            gf = flop / (best[wtype] * 1e-3) / 1e9
            rows.append({"name": f"vision_{wtype}_{name}", "shape": f"{M}x{K}x{N}", "ours_ms": best[wtype],
                         "peer": "torch_f32", "peer_ms": best["torch"], "ratio": best["torch"] / best[wtype],
                         "gflops": gf, "peak_frac": gf / peak, "peer_gflops": tg, "peer_peak_frac": tg / peak})
    return rows


def run(n_threads: int = 2) -> list[dict]:
    rows: list[dict] = []
    rng = np.random.default_rng(0)
    peak, bf16_peak = _machine_peaks(n_threads)
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
            if wtype == BF16 and bf16_peak > 0:
                rows[-1].update(bf16_peak_gflops=bf16_peak, bf16_peak_frac=flop / (ms * 1e-3) / 1e9 / bf16_peak)
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

    rows += vision_gemm_rows(n_threads, rng, pool)
    rows += gemv_rows(n_threads, rng, pool, pool1)
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
    ap.add_argument("--gemv", action="store_true", help="only the quantised GEMV rows")
    ap.add_argument("--all-gemv", action="store_true", help="GEMV rows for Q4_0, Q5_0, Q5_K and Q6_K too")
    ap.add_argument("--vision", action="store_true", help="only the vision GEMM rows (ours vs torch fp32)")
    args = ap.parse_args()
    qtypes = (Q8_0, Q4_K, Q4_0, Q5_0, Q5_K, Q6_K) if args.all_gemv else GEMV_QTYPES
    if args.vision:
        rows = vision_gemm_rows(args.threads, np.random.default_rng(0), ThreadPool(args.threads))
        keys = ["name", "shape", "ours_ms", "peer_ms", "ratio", "gflops", "peak_frac", "peer_gflops", "peer_peak_frac"]
    elif args.gemv:
        rows = gemv_rows(args.threads, np.random.default_rng(0), ThreadPool(args.threads), ThreadPool(1), qtypes)
        keys = ["name", "ours_ms", "gbs", "pct_stream", "ms_1thread", "speedup", "copies"]
    else:
        rows = run(args.threads)
        keys = ["name", "shape", "ours_ms", "peer", "peer_ms", "ratio", "gflops", "peak_frac", "gbs", "pct_stream",
                "speedup"]
    print("  ".join(f"{k:>14}" for k in keys))
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k, "")
            cells.append(f"{v:>14.4g}" if isinstance(v, float) else f"{str(v):>14}")
        print("  ".join(cells))


if __name__ == "__main__":
    main()
