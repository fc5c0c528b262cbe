"""tilepass-batch (issue 25): pages per hour of a folder of pages with Ray actors (a local Ray started by the
command) against tilepass-cli on the same folder, same settings, same machine: PAGES held-out pages of the
bundled model's generator (examples/model, converted as `make demo` does: text Q8_0, vision F16), base mode, the
prompt it was trained on, at most N_PREDICT tokens a page. pages_per_hour is from the whole command's wall time
(Python, model loading and, for Ray, starting Ray and its actors included), as a user sees it; each command also
runs on SMALL of the pages, and the difference gives the rate once started (pages_per_hour_after_startup) and the
start-up time. The ratio is against tilepass-cli with all the threads. On this 2-core machine that is 1 actor x 2 threads and 2 actors x 1 thread
against tilepass-cli -t 2; more actors than cores would only share them. Every run's markdown must equal the
CLI's (greedy decoding).

    python tests/bench/bench_ray.py [THREADS]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "examples" / "ocrtrain"))

from bench_common import child_env  # noqa: E402

MODEL = ROOT / "examples" / "model"
WORK = ROOT / "build" / "bench-ray"
PAGES = 8
SMALL = 2  # the pages of the small run (its wall time less SMALL pages' time: the command's start-up)
N_PREDICT = 256
SETTINGS = ["--mode", "base", "-p", "<image>\nFree OCR.", "-n", str(N_PREDICT), "-q"]


def _inputs() -> tuple[Path, Path, Path, Path]:
    """The models, a folder of PAGES pages (two PDFs of three pages and two PNG images) and a folder of SMALL of
    them (the images)."""
    import pdfmaker as pm
    from convert.converter import convert
    from evaluate import EVAL_SEED0
    from gen import make_page

    WORK.mkdir(parents=True, exist_ok=True)
    text, vision = WORK / "text-q8_0.gguf", WORK / "mmproj-f16.gguf"
    if not text.exists():
        convert(MODEL, outtype="q8_0", outfile=text, progress=False)
    if not vision.exists():
        convert(MODEL, mmproj=True, outtype="f16", outfile=vision, progress=False)
    folder, small = WORK / "in", WORK / "in-small"
    for d in (folder, small):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    images = [make_page(EVAL_SEED0 + 60 + k).image for k in range(PAGES)]
    spec = [pm.PageSpec(im.width / 2, im.height / 2, image=im) for im in images]
    (folder / "a.pdf").write_bytes(pm.make_pdf(spec[:3]))
    (folder / "b.pdf").write_bytes(pm.make_pdf(spec[3:6]))
    for k, im in enumerate(images[6:]):
        im.save(folder / f"c{k}.png")
        im.save(small / f"c{k}.png")
    return text, vision, folder, small


def _timed(cmd: list[str], out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=child_env())
    wall = time.perf_counter() - t0
    if r.returncode not in (0, 3):
        raise RuntimeError(f"{cmd[2]} exit {r.returncode}: {r.stderr[-800:]}")
    return wall


def _markdown(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*.md"))}


def run(n_threads: int = 2) -> list[dict]:
    if not (MODEL / "config.json").exists():
        return [{"name": "ray", "skipped": f"no bundled model in {MODEL}"}]
    try:
        import ray  # noqa: F401
    except ImportError:
        return [{"name": "ray", "skipped": "Ray is not installed (pip install 'tilepass[ray]')"}]
    text, vision, folder, small = _inputs()
    models = ["-m", str(text), "--mmproj", str(vision)]
    configs = [(f"tilepass-cli -t {n_threads}", [sys.executable, "-m", "encoder.cli", *models, *SETTINGS,
                                                 "-t", str(n_threads)])]
    for actors in (1, 2):
        threads = max(1, n_threads // actors)
        configs.append((f"tilepass-batch --ray, {actors} actor(s) x {threads} thread(s)",
                        [sys.executable, "-m", "encoder.batch.cli", *models, *SETTINGS, "--ray", "--actors",
                         str(actors), "--threads-per-actor", str(threads)]))
    rows: list[dict] = []
    want: dict[str, bytes] = {}
    cli_s = 0.0
    for k, (name, cmd) in enumerate(configs):
        out = WORK / f"out-{k}"
        wall_small = _timed([*cmd, str(small), "-o", str(out)], out)
        wall = _timed([*cmd, str(folder), "-o", str(out)], out)
        md = _markdown(out)
        if k == 0:
            want, cli_s = md, wall
        elif md != want:
            raise RuntimeError(f"{name} wrote other markdown than tilepass-cli")
        per_page = (wall - wall_small) / (PAGES - SMALL)  # the pages beyond the small run's: start-up cancels out
        row = {"name": name, "pages": PAGES, "wall_s": wall, "pages_per_hour": PAGES * 3600 / wall,
               "pages_per_hour_after_startup": 3600 / per_page if per_page > 0 else float("nan"),
               "startup_s": wall_small - SMALL * per_page}
        if k:
            row.update(peer=configs[0][0], ours_ms=wall * 1e3, peer_ms=cli_s * 1e3, ratio=cli_s / wall,
                       same_markdown=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
        print(row)
