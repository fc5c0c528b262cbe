"""Conversion throughput: MB of checkpoint input per second and peak RSS relative to the input size,
per --outtype, on a synthetic DeepSeek-OCR checkpoint in the original layout (bf16, sharded, full
129280-token vocabulary; a few hundred MB).

    .venv/bin/python tests/bench/bench_convert.py [--size-mb 300] [--outtypes f16,q8_0,...] [--json out.json]

Each conversion runs in a fresh process (``python -m convert`` semantics via ``convert.convert``) so that
its peak RSS (``ru_maxrss``) is its own; ``baseline`` is the RSS of a process that only imported the
converter, so ``peak - baseline`` is what converting costs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

ALL_OUTTYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k"]

_CHILD = r"""
import json, sys, time
def hwm_kb():  # VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork+exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from convert import convert
base = hwm_kb()
model, outtype, mmproj, out = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
t0 = time.perf_counter()
res = convert(model, outtype=outtype, mmproj=mmproj, outfile=out, force=True, progress=False)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "input_bytes": res.plan.input_bytes, "output_bytes": res.plan.output_bytes,
                  "maxrss_kb": hwm_kb(), "baseline_kb": base}))
"""


def bench_dims(size_mb: float):
    """Dims of a synthetic checkpoint of about size_mb MB in bf16 (hidden 512: K-quant rows fit)."""
    import reference_models as rm

    d = replace(rm.TINY, text_hidden=512, text_heads=4, text_kv_heads=4, text_ffn=1024, moe_ffn=256, n_experts=8,
                n_shared=2, text_layers=2)
    per_layer = 2 * (4 * 512 * 512 + 3 * 8 * 256 * 512 + 3 * 512 * 512 + 8 * 512)
    base = 2 * 2 * d.vocab_size * 512
    layers = max(2, int(round((size_mb * 1e6 - base) / per_layer)) + 1)
    return replace(d, text_layers=layers)


def build(model_dir: Path, size_mb: float) -> Path:
    """Written by a child process, so that this one stays small."""
    code = ("import sys; sys.path[:0] = [sys.argv[3], sys.argv[4]]; from pathlib import Path; import bench_convert as b, "
            "reference_models as rm; rm.build_synthetic_ocr(Path(sys.argv[1]), b.bench_dims(float(sys.argv[2])), "
            "n_shards=3, dtype='bf16', scale=0.05)")
    subprocess.run([sys.executable, "-c", code, str(model_dir), str(size_mb), str(REPO / "tests"),
                    str(REPO / "tests" / "bench")], check=True, cwd=REPO)
    return model_dir


def run_one(model: Path, outtype: str, mmproj: bool, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", _CHILD, str(model), outtype, "1" if mmproj else "0", str(out)],
                       capture_output=True, text=True, env=env, cwd=REPO)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    mb = r["input_bytes"] / 1e6
    r.update(
        outtype=outtype, mmproj=mmproj, input_mb=round(mb, 1), output_mb=round(r["output_bytes"] / 1e6, 1),
        mb_per_s=round(mb / r["seconds"], 1), peak_rss_mb=round(r["maxrss_kb"] / 1024, 1),
        baseline_rss_mb=round(r["baseline_kb"] / 1024, 1),
        peak_rss_over_input=round(r["maxrss_kb"] * 1024 / r["input_bytes"], 3),
        added_rss_over_input=round((r["maxrss_kb"] - r["baseline_kb"]) * 1024 / r["input_bytes"], 3))
    return r


def run(size_mb: float = 300, outtypes: list[str] | None = None, workdir: Path | None = None) -> list[dict]:
    """Build the synthetic checkpoint, convert it once per outtype; returns one dict per conversion."""
    from convert import native_quant

    outtypes = outtypes or ALL_OUTTYPES
    if not native_quant.available():
        outtypes = [o for o in outtypes if not o.endswith("_k")]
    with tempfile.TemporaryDirectory(prefix="bench-convert-", dir=workdir) as td:
        model = build(Path(td) / "model", size_mb)
        results = []
        for ot in outtypes:
            out = Path(td) / f"out-{ot}.gguf"
            results.append(run_one(model, ot, False, out))
            out.unlink(missing_ok=True)
        return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=300)
    ap.add_argument("--outtypes", default=",".join(ALL_OUTTYPES))
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    res = run(args.size_mb, args.outtypes.split(","))
    print(f"{'outtype':8} {'in MB':>8} {'out MB':>8} {'s':>7} {'MB/s':>8} {'peak RSS MB':>12} {'RSS/input':>10} "
          f"{'(RSS-base)/input':>17}")
    for r in res:
        if "error" in r:
            print(f"{r.get('outtype', '?'):8} error: {r['error']}")
            continue
        print(f"{r['outtype']:8} {r['input_mb']:8.1f} {r['output_mb']:8.1f} {r['seconds']:7.2f} {r['mb_per_s']:8.1f} "
              f"{r['peak_rss_mb']:12.1f} {r['peak_rss_over_input']:10.3f} {r['added_rss_over_input']:17.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
