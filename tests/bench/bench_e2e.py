"""End to end (issue 6): `tilepass-cli` on one gundam 2×3 page (1240×1754) with full-size-shaped random
weights — an F16 vision GGUF (bench_vision's checkpoint, converted by our converter) and a Q8_0 text GGUF
(bench_text's synthetic file with the real tokenizer of the llama.cpp fixture) — 256 new tokens, 2 threads.
Reports wall seconds of the whole command (load, preprocess, encode, prefill, decode), the CLI's own
timings, and the process's peak RSS against the issue's ceiling (4.5 GB; llama.cpp: 5.6 GB)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench_common import run_cli_measured as _run_measured  # noqa: E402

FIXTURE_TEXT = ROOT.parent / "shared" / "fixtures" / "llamacpp-tiny-v1" / "text-f16.gguf"
RSS_CEILING_MB = 4.5 * 1024
N_NEW = 256


def run(n_threads: int = 2) -> list[dict]:
    import gguf

    from bench_text import write_text_gguf
    from bench_vision import _checkpoint, _page
    from convert.converter import convert

    if not FIXTURE_TEXT.exists():
        return [{"name": "end to end", "skipped": f"needs the tokenizer of {FIXTURE_TEXT}"}]
    with tempfile.TemporaryDirectory(prefix="tp-bench-e2e-") as tmp:
        root = Path(tmp)
        vision = root / "mmproj-f16.gguf"
        convert(_checkpoint(root), mmproj=True, outtype="f16", outfile=vision, progress=False)
        text = root / "text-q8_0.gguf"
        write_text_gguf(text, gguf.GGMLQuantizationType.Q8_0, tokenizer_from=FIXTURE_TEXT)
        page = root / "page.png"
        _page((1240, 1754)).save(page)
        cli = ["-m", str(text), "--mmproj", str(vision), "--image", str(page),
               "--mode", "gundam", "-n", str(N_NEW), "-t", str(n_threads), "--json", "-q"]  # default precision: auto = bf16 for the F16 vision file
        wall, rss_mb, out, rc = _run_measured(cli)
        if rc not in (0, 3):  # 3: the page hit -n without EOS, which is what this benchmark asks for
            return [{"name": "end to end", "failed": f"tilepass-cli exit {rc}"}]
        res = json.loads(out)
        page_res = res[0] if isinstance(res, list) else res
        return [{"name": f"end to end: gundam 2x3 page, {N_NEW} new tokens, F16 vision (default precision: auto = bf16) + Q8_0 text",
                 "wall_s": wall, "generated": page_res["tokens"]["generated"],
                 "timings_ms": page_res["timings_ms"], "tokens_per_s": page_res["tokens_per_s"],
                 "peak_rss_mb": rss_mb, "rss_ceiling_mb": RSS_CEILING_MB, "rss_ok": rss_mb <= RSS_CEILING_MB}]


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
        print(row)
