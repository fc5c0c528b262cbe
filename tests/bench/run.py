"""`make bench`: run every benchmark module, print one table, write JSON.

Each module tests/bench/bench_*.py exposes run(n_threads: int) -> list[dict]; a row has at least
`name` and, where a peer was measured in the same run, `peer`, `ours_ms`, `peer_ms` and `ratio`
(peer time / our time: above 1 means we are faster). Shared helpers: bench_common.py. TP_BENCH_SMALL=1 shrinks
the shapes of the modules that support it (bench_paddleocr_vl, bench_vl2) to check them end to end quickly."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

ORDER = ["bench_kernels", "bench_attention", "bench_vision", "bench_text", "bench_decode_batch", "bench_documents", "bench_e2e",
         "bench_server", "bench_ray", "bench_paddleocr_vl", "bench_vl2", "bench_convert"]
HELPERS = {"bench_common"}  # shared by the modules: no run()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", type=Path, default=Path("build/bench.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="module names to run (default: all)")
    args = ap.parse_args()
    found = sorted(p.stem for p in HERE.glob("bench_*.py") if p.stem not in HELPERS)
    names = [n for n in ORDER if n in found] + [n for n in found if n not in ORDER]
    if args.only:
        names = [n for n in names if n in args.only]
    results: dict[str, list[dict]] = {}
    failed = []
    for name in names:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            fn = importlib.import_module(name).run
            takes_threads = "n_threads" in inspect.signature(fn).parameters
            rows = fn(n_threads=args.threads) if takes_threads else fn()
        except Exception as exc:  # a broken benchmark must not hide the others' figures
            print(f"   {name} failed: {type(exc).__name__}: {exc}", flush=True)
            failed.append(name)
            continue
        results[name] = rows
        for r in rows:
            cells = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()]
            print("   " + "  ".join(cells), flush=True)
        print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
