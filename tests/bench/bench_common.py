"""Helpers the benchmark modules share: the synthetic page, peak RSS, best-of timing, worker functions run in
a child process (so that each side's memory and RSS are its own) and the CLI run with its own peak RSS.

``TP_BENCH_SMALL=1`` in the environment asks the modules that support it for shrunken shapes (a run of a
minute or two that checks the module end to end; its figures say nothing about speed)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

SMALL = os.environ.get("TP_BENCH_SMALL", "") not in ("", "0")
TIMED_RUNS = 2  # best of, unless one run takes longer than ONE_RUN_S
ONE_RUN_S = 60.0  # a run this long is timed once: minutes of compute average the machine's wander out


def page(size: tuple[int, int], background: tuple[int, int, int] = (245, 243, 238)):
    """A synthetic page: dark text-line bars on a light background, ``size`` = (width, height)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, background)
    d = ImageDraw.Draw(img)
    for y in range(40, size[1] - 40, 30):
        d.rectangle([60, y, size[0] - 60, y + 12], fill=(30, 30, 30))
    return img


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM on Linux, else ru_maxrss), MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM (the peak resident set) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def best_ms(fn: Callable[[], Any], runs: int = TIMED_RUNS, one_run_s: float = ONE_RUN_S) -> float:
    """The fastest of ``runs`` calls of fn, in ms; a first call longer than ``one_run_s`` is the only one."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = min(best, dt * 1e3)
        if dt > one_run_s:
            break
    return best


def child_env() -> dict[str, str]:
    """The environment of a child that imports the bench modules, the package and the tests' references."""
    paths = [str(HERE), str(ROOT), str(ROOT / "tests")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def run_child(module: str, func: str, *args: Any, check: bool = True) -> subprocess.CompletedProcess:
    """``module.func(*args)`` in a fresh Python process (args: literals that repr() writes back)."""
    code = f"import {module}; {module}.{func}(*{args!r})"
    return subprocess.run([sys.executable, "-c", code], check=check, env=child_env(), cwd=ROOT)


def child_result(module: str, func: str, *args: Any) -> dict:
    """``module.func(*args, out_json)`` in a fresh process, where the worker writes its results to out_json
    (``write_result``); a worker that failed (killed for memory, say) gives {"failed": "..."}."""
    with tempfile.TemporaryDirectory(prefix="tp-bench-child-") as tmp:
        out = Path(tmp) / "result.json"
        r = run_child(module, func, *args, str(out), check=False)
        if r.returncode != 0 or not out.exists():
            why = f"signal {-r.returncode}" if r.returncode < 0 else f"exit {r.returncode}"
            return {"failed": f"{module}.{func}: {why}" + (" (killed: out of memory?)" if r.returncode == -9 else "")}
        return json.loads(out.read_text())


def child_results(jobs: dict[str, tuple]) -> dict[str, dict]:
    """``child_result(*job)`` for every job, keyed as given: one after another, or TP_BENCH_CONCURRENT=N at a time
    (for a machine with many more cores than the benchmark's threads: each child keeps its own threads and its
    own peak RSS, but they share the memory bandwidth and caches, which the figures then say)."""
    n = max(1, int(os.environ.get("TP_BENCH_CONCURRENT", "1")))
    if n == 1:
        return {k: child_result(*job) for k, job in jobs.items()}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = {k: pool.submit(child_result, *job) for k, job in jobs.items()}
        return {k: f.result() for k, f in futures.items()}


def write_result(out_json: str, res: dict) -> None:
    """A worker's results, with its process's peak RSS."""
    res["peak_rss_mb"] = peak_rss_mb()
    Path(out_json).write_text(json.dumps(res))


# The CLI in a child whose own peak RSS is read at its exit (VmHWM): ru_maxrss of a child can carry the
# parent's peak over fork+exec, and this parent holds other benchmarks' memory.
_CLI_WRAPPER = (
    "import sys, atexit\n"
    "def _hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            sys.stderr.write('TP_VMHWM_KB ' + line.split()[1] + '\\n')\n"
    "atexit.register(_hwm)\n"
    "from encoder.cli import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)


def run_cli_measured(args: list[str]) -> tuple[float, float, str, int]:
    """tilepass-cli with ``args``: (wall s, peak RSS MB of the CLI process, stdout, exit code)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CLI_WRAPPER, *args], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    kb = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("TP_VMHWM_KB ")]
    return wall, (kb[-1] / 1024 if kb else float("nan")), proc.stdout, proc.returncode


PRECISIONS = {0: "f32", 1: "bf16", 2: "int8"}  # tp_precision as the vision encoders report it


def child_status(res: dict, keys: tuple[str, ...] = ()) -> dict:
    """The row cells of a child's result: its peak RSS or why it failed, and ``keys`` where present."""
    return {k: res[k] for k in ("peak_rss_mb", "failed", *keys) if k in res}


def median_decode_tok_s(start: Callable[[], Any], step: Callable[[Any], Any], n_dec: int) -> float:
    """bench_text's decode rounds (``_decode_rounds``: untimed warm-up tokens, then n_dec timed ones per
    round), the median round's tok/s."""
    import numpy as np

    from bench_text import _decode_rounds

    return float(np.median([rate for rate, _ in _decode_rounds(start, step, n_dec)]))


def text_model_decode_tok_s(m: Any, ctx: Any, n_dec: int) -> float:
    """Greedy decode tok/s of our TextModel ``m`` after the context ids ``ctx`` (median_decode_tok_s)."""
    import numpy as np

    def start() -> int:
        m.reset()
        return int(np.argmax(m.eval(ctx)))

    return median_decode_tok_s(start, lambda tok: int(np.argmax(m.eval(np.array([tok], np.int32)))), n_dec)
