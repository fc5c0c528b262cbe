"""Documents (issue 22): a 10-page PDF through `tilepass-cli DOC.pdf -o DIR`, pages/hour with `--parallel 1`
(one page decoded at a time) against the default `--parallel` (pages decoded together, pipeline.default_parallel),
2 threads, the two runs alternated (this machine's memory bandwidth drifts). Two model pairs:

- the bundled model (examples/model, converted as `make demo` does: Q8_0 text, F16 vision) on pages of its own
  generator, in its default mode, to EOS;
- full-size-shaped random weights (bench_e2e's pair: bench_vision's F16 vision file, bench_text's Q8_0 text file
  with the llama.cpp fixture's tokenizer) on synthetic A4 pages, gundam, 256 new tokens a page.

Each row: wall seconds, pages/hour, peak RSS of the CLI process, and (for --parallel 1, whose stages run one after
another) the share of the wall time in rendering the PDF (timed apart, pdf.py at the CLI's 144 dpi), the vision
passes, prefill and decode, from the per-page timings of DIR/<name>.json. ``TP_BENCH_SMALL=1``: 4 pages, 32 new
tokens (checks the module end to end)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "examples" / "ocrtrain"))

from bench_common import SMALL, run_cli_measured  # noqa: E402

RSS_CEILING_MB = 5000  # the ceiling for the full-size pair, 5 GB

N_PAGES = 4 if SMALL else 10
N_NEW_FULL = 32 if SMALL else 256
FIXTURE_TEXT = ROOT.parent / "shared" / "fixtures" / "llamacpp-tiny-v1" / "text-f16.gguf"


def _pdf(path: Path, images: list) -> None:
    """A PDF whose pages are these images, each drawn at 144 dpi (the CLI's default: its own pixels back)."""
    import pdfmaker as pm

    path.write_bytes(pm.make_pdf([pm.PageSpec(im.width / 2, im.height / 2, image=im) for im in images]))


def _render_s(pdf: Path) -> float:
    """Seconds to render every page as the CLI does (pdf.py, 144 dpi)."""
    from encoder.pdf import PdfDocument

    t0 = time.perf_counter()
    with PdfDocument(pdf) as doc:
        for number in range(1, doc.n_pages + 1):
            doc.render(number, dpi=144)
    return time.perf_counter() - t0


def _bundled(root: Path) -> tuple[Path, Path, list, list[str]]:
    from bundled_model import bundled_gguf
    from evaluate import EVAL_SEED0
    from gen import make_page

    text, vision = bundled_gguf(root)
    return text, vision, [make_page(EVAL_SEED0 + 100 + k).image for k in range(N_PAGES)], []


def _full_size(root: Path) -> tuple[Path, Path, list, list[str]]:
    import gguf

    from bench_common import page
    from bench_text import write_text_gguf
    from bench_vision import _checkpoint
    from convert.converter import convert

    vision, text = root / "mmproj-f16.gguf", root / "text-q8_0.gguf"
    convert(_checkpoint(root), mmproj=True, outtype="f16", outfile=vision, progress=False)
    write_text_gguf(text, gguf.GGMLQuantizationType.Q8_0, tokenizer_from=FIXTURE_TEXT)
    pages = [page((1240, 1754), (250 - k, 250, 250)) for k in range(N_PAGES)]
    return text, vision, pages, ["--mode", "gundam", "-n", str(N_NEW_FULL)]


def _shares(doc_json: Path, wall: float, render: float) -> dict:
    pages = json.loads(doc_json.read_text())["pages"]
    total = {k: sum(p["timings_ms"][k] for p in pages) / 1e3 for k in ("prefill", "decode")}
    # every page of a vision pass reports the whole pass (encode_batch): the pages of one pass are consecutive
    # and carry the same value, so each pass is counted once
    passes = [p["timings_ms"]["encode_batch"] for p in pages]
    total["encode_batch"] = sum(v for k, v in enumerate(passes) if k == 0 or v != passes[k - 1]) / 1e3
    return {"share_render": render / wall, **{f"share_{k}": v / wall for k, v in total.items()},
            "generated": sum(p["tokens"]["generated"] for p in pages)}


def run(n_threads: int = 2) -> list[dict]:
    rows: list[dict] = []
    for label, build in (("bundled model", _bundled), ("full-size random weights", _full_size)):
        with tempfile.TemporaryDirectory(prefix="tp-bench-docs-") as tmp:
            root = Path(tmp)
            text, vision, images, extra = build(root)
            pdf = root / "doc.pdf"
            _pdf(pdf, images)
            render = _render_s(pdf)
            best: dict[str, tuple[float, float, Path]] = {}
            peak_mb = 0.0  # the largest peak RSS of any run of this pair
            for rnd in range(2):  # alternated: --parallel 1, default, --parallel 1, default
                for name, par in (("--parallel 1", ["--parallel", "1"]), ("--parallel default", [])):
                    out = root / f"out-{rnd}-{len(par)}"
                    wall, rss, _, rc = run_cli_measured(["-m", str(text), "--mmproj", str(vision), str(pdf), "-o",
                                                         str(out), "-t", str(n_threads), "-q", *extra, *par])
                    if rc not in (0, 3):
                        rows.append({"name": f"documents, {label}, {name}", "failed": f"tilepass-cli exit {rc}"})
                        continue
                    peak_mb = max(peak_mb, rss)
                    if name not in best or wall < best[name][0]:
                        best[name] = (wall, rss, out / "doc.json")
            for name, (wall, rss, doc_json) in best.items():
                row = {"name": f"documents: {N_PAGES}-page PDF, {label}, {name}", "wall_s": wall,
                       "pages_per_hour": N_PAGES * 3600 / wall, "peak_rss_mb": rss}
                if name == "--parallel 1":
                    row.update(_shares(doc_json, wall, render))
                rows.append(row)
            if build is _full_size:
                rows.append({"name": f"documents, {label}: peak RSS of every run (Q8_0 text + F16 vision)",
                             "peak_rss_mb": peak_mb, "rss_ceiling_mb": RSS_CEILING_MB,
                             "rss_ok": peak_mb <= RSS_CEILING_MB})
            if len(best) == 2:
                one, dflt = best["--parallel 1"][0], best["--parallel default"][0]
                rows.append({"name": f"documents, {label}: pages/hour, default --parallel vs --parallel 1",
                             "ratio": one / dflt, "target_ratio": 2, "meets_target": one / dflt >= 2})
    return rows


if __name__ == "__main__":
    for r in run(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
        print(r)
