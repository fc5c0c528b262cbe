"""tilepass-batch (issue 25): pages per hour of a folder of pages with Ray actors (a local Ray started by the
command) against tilepass-cli on the same folder, same settings, same machine: PAGES held-out pages of the
bundled model's generator (examples/model, converted as `make demo` does: text Q8_0, vision F16), base mode, the
prompt it was trained on, at most N_PREDICT tokens a page; a folder of a PDF and PNG images, two groups of GROUP
pages (tilepass-cli's passes) per actor: 8 pages for 1 actor, 16 for 2 (tilepass-cli runs both). pages_per_hour is
from the whole command's wall time (Python, model loading and, for Ray, starting a local Ray, its worker processes
and actors included: a fixed cost per run that a long job amortises), as a user sees it. The ratio is against
tilepass-cli with all the threads on the same pages; the markdown must be the CLI's. On this 2-core machine that is 1 actor x 2 threads and 2 actors x 1 thread
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
from bundled_model import MODEL  # noqa: E402

WORK = ROOT / "build" / "bench-ray"
GROUP = 4  # pages per vision pass (tilepass-cli's default --images-per-pass on 2 threads)
N_PREDICT = 128
SETTINGS = ["--mode", "base", "-p", "<image>\nFree OCR.", "-n", str(N_PREDICT), "-q"]


def _folder(name: str, images: list, n: int) -> Path:
    """A folder of the first n pages: a PDF of half of them, the rest PNG images."""
    import pdfmaker as pm

    d = WORK / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    half = n // 2
    (d / "a.pdf").write_bytes(pm.make_pdf([pm.PageSpec(im.width / 2, im.height / 2, image=im) for im in images[:half]]))
    for k, im in enumerate(images[half:n]):
        im.save(d / f"p{k:02d}.png")
    return d


def _inputs() -> tuple[Path, Path, list]:
    """The models, and the pages (held-out pages of the model's generator)."""
    from bundled_model import bundled_gguf
    from evaluate import EVAL_SEED0
    from gen import make_page

    WORK.mkdir(parents=True, exist_ok=True)
    text, vision = bundled_gguf(WORK)
    return text, vision, [make_page(EVAL_SEED0 + 60 + k).image for k in range(2 * GROUP * 2)]


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
    text, vision, images = _inputs()
    models = ["-m", str(text), "--mmproj", str(vision)]
    configs = [(f"tilepass-cli -t {n_threads}", 1, [sys.executable, "-m", "encoder.cli", *models, *SETTINGS,
                                                    "-t", str(n_threads)])]
    for actors in (1, 2):
        threads = max(1, n_threads // actors)
        configs.append((f"tilepass-batch --ray, {actors} actor(s) x {threads} thread(s)", actors,
                        [sys.executable, "-m", "encoder.batch.cli", *models, *SETTINGS, "--ray", "--actors",
                         str(actors), "--threads-per-actor", str(threads)]))
    rows: list[dict] = []
    cli: dict[int, tuple[float, dict[str, bytes]]] = {}  # pages -> the CLI's wall time and markdown
    for name, actors, cmd in configs:
        cli_run = name.startswith("tilepass-cli")
        for n in (2 * GROUP, 4 * GROUP) if cli_run else (2 * GROUP * actors,):  # two groups per actor
            out = WORK / "out"
            wall = _timed([*cmd, str(_folder(f"in-{n}", images, n)), "-o", str(out)], out)
            md = _markdown(out)
            row = {"name": name, "pages": n, "wall_s": wall, "pages_per_hour": n * 3600 / wall}
            if cli_run:
                cli[n] = (wall, md)
            else:
                if md != cli[n][1]:
                    raise RuntimeError(f"{name} wrote other markdown than tilepass-cli on {n} pages")
                row.update(peer=f"{configs[0][0]}, {n} pages", ours_ms=wall * 1e3, peer_ms=cli[n][0] * 1e3,
                           ratio=cli[n][0] / wall, same_markdown=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
        print(row)
