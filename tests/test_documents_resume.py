"""Resume after `kill -9`: a document run into -o DIR killed with SIGKILL at random moments (during start-up,
rendering, encoding, decoding, between a page's files and the manifest, while the document files are rebuilt),
then run again until it completes, ends with exactly the files of a run that was never interrupted: the same
names, the same bytes (the pages' JSON compared without their timing fields, the only fields that differ
between two identical runs), every page once in the merged markdown, no temporary file left. The model is the
llama.cpp-written tiny fixture pair (tiny mode, 30 tokens a page: about a third of a second a page here)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pdfmaker as pm  # noqa: E402

from encoder.manifest import MANIFEST_NAME  # noqa: E402
from output_tree import tree  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "llamacpp-tiny-v1"
TEXT, VISION, PAGE = FIXTURE / "text-f16.gguf", FIXTURE / "mmproj-f32.gguf", FIXTURE / "page.png"
KILLS = 6




def command(inputs: list[Path], out: Path) -> list[str]:
    return [sys.executable, "-m", "encoder.cli", "-m", str(TEXT), "--mmproj", str(VISION), "--mode", "tiny",
            "-t", "2", "-n", "30", "--no-repeat-ngram", "0", "--images-per-pass", "2",
            *map(str, inputs), "-o", str(out)]


class Run:
    """The CLI in a subprocess, its stderr read by a thread (so that the pipe never fills)."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line))

    def wait_for(self, words: str, timeout: float) -> bool:
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end and self.proc.poll() is None:
            if any(words in line for _, line in self.lines):
                return True
            time.sleep(0.01)
        return any(words in line for _, line in self.lines)

    def finish(self, timeout: float) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._t.join(timeout=10)
        return rc

    @property
    def err(self) -> str:
        return "".join(line for _, line in self.lines)


def test_sigkill_at_random_moments_then_resume_gives_the_same_files(tmp_path):
    pdf = tmp_path / "report.pdf"
    pages = pm.sample_pages() + [pm.PageSpec(500, 700, content=pm.text(50, 600, f"Extra page {k}")) for k in (5, 6)]
    pdf.write_bytes(pm.make_pdf(pages))
    inputs = [pdf, PAGE]  # a 6-page PDF and an image: 7 pages, 2 documents

    ref = tmp_path / "ref"
    t0 = time.monotonic()
    r = Run(command(inputs, ref))
    assert r.finish(300) == 3, r.err  # 30 tokens without EOS: incomplete pages, exit 3
    t_run = time.monotonic() - t0
    loaded = next(t for t, line in r.lines if "models loaded" in line) - t0
    want = tree(ref)
    assert len([k for k in want if k.endswith(".md")]) == 2 + 7

    out = tmp_path / "out"
    rng = random.Random(20240607)
    per_page = (t_run - loaded) / 7
    kills = []
    n_done = 0
    for k in range(KILLS):
        r = Run(command(inputs, out))
        if k == 0:  # once during start-up
            delay = rng.uniform(0.0, loaded)
            time.sleep(delay)
        else:  # otherwise somewhere in the pages left: from the models' load to (nearly) the end of the run
            assert r.wait_for("models loaded", 120), r.err
            delay = rng.uniform(0.0, per_page * (7 - n_done) * 0.9)
            time.sleep(delay)
        r.proc.send_signal(signal.SIGKILL)
        rc = r.finish(60)
        done = (json.loads((out / MANIFEST_NAME).read_text()) if (out / MANIFEST_NAME).exists() else {})
        n_done = sum(p["status"] == "done" for d in done.get("documents", {}).values() for p in d["pages"].values())
        kills.append((round(delay, 2), rc, n_done))
        if rc != -signal.SIGKILL or n_done == 7:  # it finished before the kill: nothing left to interrupt
            break
    r = Run(command(inputs, out))
    rc = r.finish(300)
    assert rc == 3, (kills, r.err)
    assert any(rc == -signal.SIGKILL for _, rc, _ in kills), kills
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]
    got = tree(out)
    assert sorted(got) == sorted(want), kills
    for name in want:
        assert got[name] == want[name], (name, kills)
    md = (out / "report.md").read_text()
    assert [line for line in md.splitlines() if line.startswith("<!-- page")] == [
        f"<!-- page {n} -->" for n in range(1, 7)]
    print("kills (delay s, exit status, pages done after it):", kills)
