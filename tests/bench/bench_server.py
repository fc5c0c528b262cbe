"""tilepass-server (issue 25): requests/s and p50/p95 latency at 1, 2 and 4 concurrent clients on the bundled
model (examples/model, converted as `make demo` does: text Q8_0, vision F16) and examples/page.png in gundam mode,
beside tilepass-cli on the same page: one page per run (its wall time, model loading included) and PAGES pages in
one run (pages/s once loaded, from the difference of the two runs). The server runs --parallel 2 with n_threads
threads (one text model, the slots decoded together); every response is checked against the CLI's text for the page
(greedy, so they must agree).

    python tests/bench/bench_server.py [THREADS]      (TILEPASS_BENCH_SERVER_S: seconds per client count, default 20)
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

MODEL = ROOT / "examples" / "model"
PAGE = ROOT / "examples" / "page.png"
WORK = ROOT / "build" / "bench-server"
SECONDS = float(os.environ.get("TILEPASS_BENCH_SERVER_S", "20"))
CLIENTS = (1, 2, 4)
PAGES = 4
PARALLEL = 2
SETTINGS = ["--mode", "gundam", "-n", "2048"]


def _models() -> tuple[Path, Path]:
    """The bundled model's GGUF files (converted once into build/bench-server)."""
    WORK.mkdir(parents=True, exist_ok=True)
    text, vision = WORK / "text-q8_0.gguf", WORK / "mmproj-f16.gguf"
    newest = max(p.stat().st_mtime for p in MODEL.iterdir())
    for out, extra, outtype in ((text, [], "q8_0"), (vision, ["--mmproj"], "f16")):
        if not out.exists() or out.stat().st_mtime < newest:
            subprocess.run([sys.executable, "-m", "convert", str(MODEL), *extra, "--outtype", outtype, "--outfile",
                            str(out), "--force"], cwd=ROOT, check=True, capture_output=True)
    return text, vision


def _cli(text: Path, vision: Path, n_pages: int, threads: int) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "encoder.cli", "-m", str(text), "--mmproj", str(vision), *SETTINGS,
                        "-t", str(threads), "-q", *[str(PAGE)] * n_pages], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode not in (0, 3):
        raise RuntimeError(f"tilepass-cli exit {r.returncode}: {r.stderr[-500:]}")
    return wall, r.stdout


def _clients(server, n: int, url: str, want: str) -> tuple[list[float], int, float]:
    """n clients sending the page for SECONDS; (latencies of right answers, wrong answers, seconds)."""
    import openai

    from server_harness import user_message

    stop = threading.Event()
    lock = threading.Lock()
    lat: list[float] = []
    wrong = [0]

    def client() -> None:
        c = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=600)
        while not stop.is_set():
            t0 = time.perf_counter()
            r = c.chat.completions.create(model="m", messages=user_message(url))
            dt = time.perf_counter() - t0
            with lock:
                if r.choices[0].message.content == want:
                    lat.append(dt)
                else:
                    wrong[0] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join()
    return lat, wrong[0], time.perf_counter() - t0


def run(n_threads: int = 2) -> list[dict]:
    from server_harness import Server, data_url, percentile

    if not (MODEL / "config.json").exists():
        return [{"name": "server", "skipped": f"no bundled model in {MODEL}"}]
    text, vision = _models()
    rows = []
    w1, want = _cli(text, vision, 1, n_threads)
    wn, _ = _cli(text, vision, PAGES, n_threads)
    per_page = (wn - w1) / (PAGES - 1)
    rows.append({"name": f"tilepass-cli, gundam page, -t {n_threads}", "one_page_wall_s": w1,
                 f"{PAGES}_pages_wall_s": wn, "pages_per_s_loaded": 1.0 / per_page if per_page > 0 else float("nan")})
    with Server("-t", n_threads, "--parallel", PARALLEL, *SETTINGS, text=text, vision=vision) as server:
        url = data_url(PAGE)
        for n in CLIENTS:
            lat, wrong, secs = _clients(server, n, url, want)
            rows.append({"name": f"tilepass-server, {n} client(s), --parallel {PARALLEL} -t {n_threads}",
                         "requests": len(lat), "wrong": wrong, "requests_per_s": len(lat) / secs,
                         "p50_ms": percentile(lat, 50) * 1e3, "p95_ms": percentile(lat, 95) * 1e3})
        rc, err = server.terminate()
        if rc != 0:
            raise RuntimeError(f"tilepass-server exit {rc}: {err[-500:]}")
    return rows


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
        print(row)
