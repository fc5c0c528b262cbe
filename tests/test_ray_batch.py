"""tilepass-batch (encoder/batch/) against tilepass-cli on the same folder and settings: a folder of two PDFs (3 and
2 pages) and two PNG images, held-out pages of the bundled trained model's generator (examples/model: each page
reads differently, so a page written under another's name would show), tiny mode, the prompt it was trained on,
-n 8. tilepass-cli's run into its own directory is the reference (an independent path: its own loop over passes
and pages); the batch runs must write exactly its files (the pages' JSON compared without their timing fields,
the only fields that differ between two identical runs):
* on a local Ray started here (one ray.init for the module, 2 CPUs) with 2 actors of 1 thread;
* the same with one actor killed mid-run by the test hook (TILEPASS_RAY_TEST_KILL_AFTER): Ray restarts it and
  retries its pages; nothing lost, nothing written twice;
* in this process without Ray (and there a resumed CLI directory, and a changed -n refused);
* a second run over a finished directory decodes nothing (no page sent, Ray not even used) and changes no file;
* --ray where Ray cannot be imported: one error line naming the extra to install, exit status 1.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "ocrtrain"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pdfmaker as pm  # noqa: E402

from encoder.batch import BatchError, Log, ModelSettings, run_batch  # noqa: E402
from encoder.batch.raypool import pool_size  # noqa: E402
from encoder.batch.work import KILL_AFTER_ENV  # noqa: E402
from encoder.cli import main as cli_main  # noqa: E402
from encoder.manifest import MANIFEST_NAME  # noqa: E402
from bundled_model import bundled_gguf  # noqa: E402
from output_tree import tree  # noqa: E402

PROMPT = "<image>\nFree OCR."
N_PAGES = 7
OPTIONS = ("--mode", "tiny", "-p", PROMPT, "-n", "8")  # tiny (512): the pages still read apart


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Path]:
    """The models (the bundled model converted as `make demo` does), the input folder, tilepass-cli's output."""
    from evaluate import EVAL_SEED0
    from gen import make_page

    d = tmp_path_factory.mktemp("ray")
    text, vision = bundled_gguf(d)
    pages = [make_page(EVAL_SEED0 + 40 + k).image for k in range(N_PAGES)]
    inputs = d / "in"
    inputs.mkdir()
    spec = [pm.PageSpec(im.width / 2, im.height / 2, image=im) for im in pages]  # rendered at 144 dpi: own pixels
    (inputs / "alpha.pdf").write_bytes(pm.make_pdf(spec[:3]))
    (inputs / "beta.pdf").write_bytes(pm.make_pdf(spec[3:5]))
    pages[5].save(inputs / "gamma.png")
    pages[6].save(inputs / "delta.png")
    ref = d / "cli"
    rc = cli_main(["-m", str(text), "--mmproj", str(vision), "-t", "2", "-q", *OPTIONS, str(inputs), "-o", str(ref)])
    assert rc == 3  # -n 8: every page stops at the limit
    return {"text": text, "vision": vision, "inputs": inputs, "ref": ref}


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for the module (its workers import this checkout), shut down at the end."""
    import ray

    from encoder.batch.raypool import local_runtime_env

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env=local_runtime_env())
    yield ray
    ray.shutdown()


def settings(work: dict[str, Path]) -> ModelSettings:
    return ModelSettings(str(work["text"]), str(work["vision"]), prompt=PROMPT, mode="tiny", n_predict=8)


def batch(work: dict[str, Path], out: Path, **kw) -> tuple[object, list[str]]:
    lines: list[str] = []
    summary = run_batch([str(work["inputs"])], out, settings(work), log=Log(write=lines.append), **kw)
    return summary, lines




def assert_same_files(got: Path, want: Path) -> None:
    a, b = tree(got), tree(want)
    assert sorted(a) == sorted(b)
    assert len([k for k in b if k.endswith(".md")]) == 4 + N_PAGES
    for name in b:
        assert a[name] == b[name], name
    # every page once, in order, in the merged documents
    for doc, n in (("alpha", 3), ("beta", 2), ("gamma", 1), ("delta", 1)):
        md = (got / f"{doc}.md").read_text()
        assert [line for line in md.splitlines() if line.startswith("<!-- page")] == [
            f"<!-- page {k} -->" for k in range(1, n + 1)]
    texts = [(got / doc / f"page-000{k}.md").read_text() for doc, n in (("alpha", 3), ("beta", 2)) for k in
             range(1, n + 1)]
    assert len(set(texts)) == len(texts)  # the pages read differently: a mix-up would show


def test_ray_run_equals_the_cli_and_a_rerun_does_nothing(work, local_ray, tmp_path):
    out = tmp_path / "out"
    summary, lines = batch(work, out, use_ray=True, actors=2, threads_per_actor=1)
    assert (summary.backend, summary.actors, summary.threads) == ("ray", 2, 1), lines
    assert (summary.decoded, summary.failed, summary.duplicates, summary.status) == (N_PAGES, 0, 0, 3), lines
    assert_same_files(out, work["ref"])

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    summary, lines = batch(work, out, use_ray=True, actors=2, threads_per_actor=1)
    assert (summary.decoded, summary.skipped, summary.actors, summary.status) == (0, N_PAGES, 0, 3), lines
    assert any(f"nothing to do: the {N_PAGES} pages asked for were done before" in line for line in lines), lines
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    assert_same_files(out, work["ref"])


def test_a_killed_actor_loses_and_duplicates_nothing(work, local_ray, tmp_path, monkeypatch):
    monkeypatch.setenv(KILL_AFTER_ENV, "2")  # the first actor to finish 2 pages dies before returning them
    out = tmp_path / "out"
    summary, lines = batch(work, out, use_ray=True, actors=2, threads_per_actor=1)
    assert any("test hook: a decoder ended its process after 2 pages" in line for line in lines), lines
    assert (summary.decoded, summary.failed, summary.duplicates) == (N_PAGES, 0, 0), lines
    assert_same_files(out, work["ref"])
    man = json.loads((out / MANIFEST_NAME).read_text())
    assert sum(len(d["pages"]) for d in man["documents"].values()) == N_PAGES


def test_in_process_run_equals_the_cli(work, tmp_path):
    summary, lines = batch(work, tmp_path / "out", threads=2)
    assert (summary.backend, summary.decoded, summary.failed) == ("local", N_PAGES, 0), lines
    assert_same_files(tmp_path / "out", work["ref"])
    # the CLI's own directory resumes here too, and another -n is refused as the CLI refuses it (usage)
    shutil.copytree(work["ref"], tmp_path / "cli")
    summary, lines = batch(work, tmp_path / "cli", threads=2)
    assert (summary.decoded, summary.skipped) == (0, N_PAGES), lines
    assert_same_files(tmp_path / "cli", work["ref"])
    with pytest.raises(BatchError, match="n_predict was 8, now 9") as e:
        run_batch([str(work["inputs"])], tmp_path / "out", dataclasses.replace(settings(work), n_predict=9),
                  log=Log(write=lambda line: None))
    assert e.value.usage


@pytest.mark.parametrize("cpus, pages, asked, want", [
    (2, 7, (None, None), (1, 2)),  # this machine: one actor of both cores
    (16, 100, (None, None), (4, 4)),  # the 16 CPUs: 4 actors x 4 threads
    (16, 2, (None, None), (2, 8)),  # no more actors than pages
    (2, 7, (2, None), (2, 1)),
    (8, 7, (3, 2), (3, 2)),
])
def test_pool_size_follows_the_cpus(cpus, pages, asked, want):
    assert pool_size(cpus, pages, *asked) == want


def test_ray_not_installed_is_one_clear_error(work, tmp_path):
    code = ("import sys; sys.modules['ray'] = None  # `import ray` fails as where it is not installed\n"
            "from encoder.batch.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "-m", str(work["text"]), "--mmproj", str(work["vision"]),
                        str(work["inputs"]), "-o", str(tmp_path / "out"), "--ray"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("tilepass-batch: error: --ray needs Ray Data"), r.stderr
    assert "pip install 'tilepass[ray]'" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert not (tmp_path / "out").exists()


def test_an_address_where_nothing_answers_is_one_clear_error(work, tmp_path):
    """ray.init would retry a dead address for minutes: a host:port where nothing listens fails at once."""
    import socket

    with socket.socket() as s:  # a port just freed: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "encoder.batch.cli", "-m", str(work["text"]), "--mmproj",
                        str(work["vision"]), str(work["inputs"]), "-o", str(tmp_path / "out"),
                        f"--ray=127.0.0.1:{port}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert f"cannot join the Ray cluster at 127.0.0.1:{port}: nothing answers there" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    written = [p.name for p in (tmp_path / "out").rglob("*")] if (tmp_path / "out").exists() else []
    assert set(written) <= {MANIFEST_NAME}, written  # no page decoded, nothing but the run's record
