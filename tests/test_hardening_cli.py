"""tilepass-cli and convert-hf-to-gguf against what a tester did to them: outputs that are inputs (by path,
symlink or hard link) or each other, stopping signals (SIGTERM, SIGHUP: the temporary file removed, exit
128 + signal), output permissions under the umask, a symlink at -o, out-of-range integers, a closed or
broken stdout, --seed -1, and a model file truncated while in use (between pages: the check; inside a page:
the SIGBUS handler)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import reference_models as rm
from convert_expect import gguf_files
from encoder.cli import main

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "llamacpp-tiny-v1"
TEXT, VISION, PAGE = FIXTURE / "text-f16.gguf", FIXTURE / "mmproj-f32.gguf", FIXTURE / "page.png"
QUICK = ("--mode", "tiny", "-n", "3", "--no-repeat-ngram", "0", "-t", "2")


def run_cli(capsys, *args, text: Path = TEXT) -> tuple[int, str, str]:
    rc = main([str(a) for a in ("-m", text, "--mmproj", VISION, *args)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def cli_cmd(*args, text: Path = TEXT) -> list[str]:
    return [sys.executable, "-m", "encoder.cli", "-m", str(text), "--mmproj", str(VISION), *map(str, args)]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error:" in line]


def snapshot(d: Path) -> dict[str, tuple[int, bytes]]:
    """Every entry under d: its mtime and bytes (a symlink's target name)."""
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_symlink():
            out[str(p)] = (0, os.readlink(p).encode())
        elif p.is_file():
            out[str(p)] = (p.stat().st_mtime_ns, p.read_bytes())
        else:
            out[str(p)] = (0, b"<dir>")
    return out


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# ---- 1. outputs never overwrite inputs ------------------------------------------------------------------
@pytest.fixture
def page_dir(tmp_path) -> Path:
    d = tmp_path / "pages"
    d.mkdir()
    shutil.copy(PAGE, d / "in.png")
    os.symlink("in.png", d / "link.png")
    os.link(d / "in.png", d / "hard.png")
    shutil.copy(PAGE, d / "other.png")
    return d


@pytest.mark.parametrize("case", ["same path", "symlink", "hard link", "boxes onto input", "boxes dir",
                                  "output dir", "output onto -m", "two outputs one file", "outputs via link"])
def test_output_that_is_an_input_is_refused(page_dir, tmp_path, capsys, case):
    d = page_dir
    args = {
        "same path": ["--image", d / "in.png", "-o", d / "in.png"],
        "symlink": ["--image", d / "in.png", "-o", d / "link.png"],
        "hard link": ["--image", d / "in.png", "-o", d / "hard.png"],
        "boxes onto input": ["--image", d / "in.png", "--boxes", d / "hard.png"],
        # --boxes DIR writes DIR/in.png and DIR/other.png: the inputs themselves
        "boxes dir": ["--image", d / "in.png", "--image", d / "other.png", "-o", tmp_path / "new-out",
                      "--boxes", d],
        # -o DIR with --json writes DIR/in.json: an input named so
        "output dir": ["--image", d / "in.png", "--image", d / "x.json", "--json", "-o", d],
        # a private copy: a regression here must not overwrite the shared fixture
        "output onto -m": ["--image", d / "in.png", "-o", d / "text.gguf"],
        "two outputs one file": ["--image", d / "in.png", "-o", tmp_path / "a.out", "--boxes", tmp_path / "a.out"],
        "outputs via link": ["--image", d / "in.png", "-o", tmp_path / "b.png", "--boxes", tmp_path / "lb.png"],
    }[case]
    text = d / "text.gguf"
    shutil.copy(TEXT, text)
    if case == "output dir":
        (d / "x.json").write_text("{}")
    if case == "outputs via link":
        os.symlink(tmp_path / "b.png", tmp_path / "lb.png")  # dangling: both outputs land on b.png
    before = snapshot(tmp_path)
    rc, out, err = run_cli(capsys, *QUICK, *args, text=text)
    assert rc == 2 and out == "", err
    (line,) = error_lines(err)
    assert ("refusing to overwrite an input" in line) if "outputs" not in case else ("are the same file" in line)
    assert snapshot(tmp_path) == before  # nothing written, nothing created (not even -o's directory)


def test_distinct_outputs_still_work(page_dir, tmp_path, capsys):
    d = page_dir
    rc, out, err = run_cli(capsys, *QUICK, "--image", d / "in.png", "--image", d / "other.png",
                           "-o", tmp_path / "out", "--boxes", tmp_path / "boxes")
    assert rc == 3, err  # 3 tokens: incomplete, written
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["in.md", "other.md"]
    assert sorted(p.name for p in (tmp_path / "boxes").iterdir()) == ["in.png", "other.png"]


def test_crop_onto_an_input_is_refused(page_dir, tmp_path):
    """The crops (images/STEM_N.jpg) are known only while writing: refuse_input stops one that is an input."""
    from encoder.cli import OverwriteRefused, input_ids, refuse_input

    crop = tmp_path / "images" / "page_0.jpg"
    crop.parent.mkdir()
    os.link(page_dir / "in.png", crop)
    inputs = input_ids([("--image", str(page_dir / "in.png"))])
    with pytest.raises(OverwriteRefused, match="same file as the input --image"):
        refuse_input(crop, inputs)
    refuse_input(tmp_path / "images" / "page_1.jpg", inputs)  # a new file: fine


# ---- 2 and 5. stopping signals --------------------------------------------------------------------------
BIG = rm.OcrDims(vocab_size=1024, text_hidden=512, text_layers=4, text_heads=8, text_kv_heads=8, text_ffn=1024,
                 n_experts=16, moe_ffn=256)


@pytest.fixture(scope="module")
def big_model() -> Path:
    """56 MB of bf16 weights: about 2 s to write as q4_k on 2 cores, time to send a signal mid-write."""
    return rm.get_synthetic_ocr(BIG, n_shards=2)


def wait_for(pred, timeout: float, proc: subprocess.Popen) -> bool:
    t_end = time.time() + timeout
    while time.time() < t_end and proc.poll() is None:
        if pred():
            return True
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["TERM", "HUP", "INT"])
def test_convert_signal_removes_temporary_file(big_model, tmp_path, sig):
    out = tmp_path / "o.gguf"
    p = subprocess.Popen([sys.executable, "-m", "convert", str(big_model), "--outfile", str(out), "--outtype",
                          "q4_k", "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        seen = wait_for(lambda: any(".tmp" in n for n in gguf_files(tmp_path)), 120, p)
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert seen, f"no temporary file appeared; the conversion ended with {p.returncode}: {err}"
    assert p.returncode == 128 + sig, err
    name = {signal.SIGTERM: "terminated", signal.SIGHUP: "hung up", signal.SIGINT: "interrupted"}[sig]
    assert err.strip().splitlines() == [f"convert-hf-to-gguf: error: {name} ({sig.name}); the output file was "
                                        "not written"]
    assert gguf_files(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_cli_signal_leaves_no_output(tmp_path, sig):
    outdir = tmp_path / "out"
    p = subprocess.Popen(cli_cmd("--image", PAGE, "--image", PAGE, "--mode", "tiny", "-n", "100000",
                                 "--no-repeat-ngram", "0", "-c", "8192", "-t", "2", "-o", outdir),
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while True:
            line = p.stderr.readline()
            lines.append(line)
            if "encoded in" in line or not line:
                break
        time.sleep(0.5)  # decoding the first page
        p.send_signal(sig)
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    err = "".join(lines) + p.stderr.read()
    assert rc == 128 + sig, err
    assert {signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}[sig] in err
    assert list(outdir.iterdir()) == []


def test_cli_temporary_file_removed_when_signalled_mid_write(tmp_path, monkeypatch):
    """A signal while write_atomic holds its temporary file: the file is removed, the target untouched."""
    import encoder.cli as cli

    target = tmp_path / "page.md"
    target.write_text("old")

    def fsync_then_signal(fd: int) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # the handler runs at the next bytecode

    old = signal.signal(signal.SIGTERM, cli._on_signal)
    try:
        monkeypatch.setattr(cli.os, "fsync", fsync_then_signal)
        with pytest.raises(cli.Signalled):
            cli.write_atomic(target, b"new")
    finally:
        signal.signal(signal.SIGTERM, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.md"]
    assert target.read_text() == "old"


# ---- 3. permissions and symlinks ------------------------------------------------------------------------
def test_cli_output_mode_follows_umask(tmp_path, capsys, umask022):
    rc, _, err = run_cli(capsys, *QUICK, "--image", PAGE, "-o", tmp_path / "p.md", "--boxes", tmp_path / "b.png")
    assert rc == 3, err
    rc, _, err = run_cli(capsys, *QUICK, "--image", PAGE, "--image", PAGE, "-o", tmp_path / "dir")
    assert rc == 3, err
    for p in (tmp_path / "p.md", tmp_path / "b.png", *(tmp_path / "dir").iterdir()):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    os.umask(0o027)
    rc, _, err = run_cli(capsys, *QUICK, "--image", PAGE, "-o", tmp_path / "q.md")
    assert stat.S_IMODE((tmp_path / "q.md").stat().st_mode) == 0o640
    (tmp_path / "p.md").chmod(0o604)  # an existing file keeps its mode, as open(..., "w") keeps it
    rc, _, err = run_cli(capsys, *QUICK, "--image", PAGE, "-o", tmp_path / "p.md")
    assert stat.S_IMODE((tmp_path / "p.md").stat().st_mode) == 0o604


def test_cli_writes_through_a_symlink(tmp_path, capsys, umask022):
    real = tmp_path / "real"
    real.mkdir()
    (real / "page.md").write_text("old")
    os.symlink(real / "page.md", tmp_path / "link.md")
    os.symlink(real / "boxes.png", tmp_path / "link.png")  # dangling: the target is created
    rc, _, err = run_cli(capsys, *QUICK, "--image", PAGE, "-o", tmp_path / "link.md", "--boxes",
                         tmp_path / "link.png")
    assert rc == 3, err
    assert (tmp_path / "link.md").is_symlink() and (tmp_path / "link.png").is_symlink()
    assert (real / "page.md").read_text() != "old"
    assert (real / "boxes.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in real.iterdir()) == ["boxes.png", "page.md"]  # no temporary file left


@pytest.fixture(scope="module")
def small_model() -> Path:
    return rm.get_synthetic_ocr(rm.OcrDims(vocab_size=1024, text_hidden=32, text_ffn=48, moe_ffn=16, n_experts=4),
                                n_shards=1)


def test_convert_output_mode_and_symlink(small_model, tmp_path, umask022):
    from convert import convert

    convert(small_model, outfile=tmp_path / "a.gguf", outtype="f16", progress=False)
    assert stat.S_IMODE((tmp_path / "a.gguf").stat().st_mode) == 0o644
    (tmp_path / "a.gguf").chmod(0o640)
    convert(small_model, outfile=tmp_path / "a.gguf", outtype="f16", progress=False, force=True)
    assert stat.S_IMODE((tmp_path / "a.gguf").stat().st_mode) == 0o640
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real / "m.gguf", tmp_path / "m.gguf")
    convert(small_model, outfile=tmp_path / "m.gguf", outtype="f16", progress=False)
    assert (tmp_path / "m.gguf").is_symlink()
    assert (real / "m.gguf").read_bytes()[:4] == b"GGUF"
    assert gguf_files(real) == ["m.gguf"] and gguf_files(tmp_path) == ["a.gguf", "m.gguf"]


# ---- 4. integers, stdout, --seed ------------------------------------------------------------------------
@pytest.mark.parametrize("opt", ["-c", "-n", "-t", "--images-per-pass", "--top-k", "--min-tiles", "--max-tiles",
                                 "--no-repeat-ngram", "--no-repeat-window"])
def test_out_of_range_integer_is_a_usage_error(capsys, opt):
    rc, out, err = run_cli(capsys, *QUICK, "--image", PAGE, opt, "4294967296")  # QUICK: a regression ends soon
    assert rc == 2 and out == ""
    assert f"must be <= 2147483647 (got 4294967296)" in err and "Traceback" not in err


def test_seed_minus_one_is_random(tmp_path, capsys):
    args = (*QUICK[:2], "-n", "6", "--no-repeat-ngram", "0", "-t", "2", "--temp", "1.5", "--json", "--raw",
            "--image", PAGE)
    rc, out, err = run_cli(capsys, *args, "--seed", "-1")
    assert rc in (0, 3), err
    seeds = [line.rsplit(" ", 1)[1] for line in err.splitlines() if "random seed" in line]
    assert len(seeds) == 1
    first = json.loads(out)["token_ids"]
    rc, out, err = run_cli(capsys, *args, "--seed", seeds[0])  # the seed printed repeats the run
    assert rc in (0, 3) and json.loads(out)["token_ids"] == first
    rc, out, err = run_cli(capsys, *args, "--seed", "-2")
    assert rc == 2 and "--seed must be -1 (random) or 0" in err


def test_closed_stdout(tmp_path):
    """`tilepass-cli ... >&-`: one error line, exit 1, before the models load; with -o it runs as usual."""
    sh = ["sh", "-c", 'exec "$@" >&-', "sh"]
    p = subprocess.run([*sh, *cli_cmd(*QUICK, "--image", PAGE)], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip().splitlines() == ["tilepass-cli: error: standard output is closed; give -o FILE "
                                             "(or open stdout)"]
    p = subprocess.run([*sh, *cli_cmd(*QUICK, "-q", "--image", PAGE, "-o", tmp_path / "o.md")], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 3 and "Traceback" not in p.stderr and (tmp_path / "o.md").exists()


@pytest.mark.parametrize("stream", [False, True])
def test_stdout_a_closed_pipe_exits_141_quietly(stream):
    """`tilepass-cli ... | head -c1`: the reader is gone before the first page is written: exit 141 (as a tool
    killed by SIGPIPE), no traceback, no error line, the other pages not decoded."""
    cmd = cli_cmd(*QUICK, "--image", PAGE, "--image", PAGE, "--image", PAGE, *(["--stream"] if stream else []))
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.close()
    err = p.stderr.read()
    rc = p.wait(timeout=120)
    assert rc == 141, err
    assert "Traceback" not in err and error_lines(err) == [] and "Broken pipe" not in err
    assert err.count("[1/3]") <= 1 and "[2/3]" not in err


# ---- 6. a model file truncated while in use -------------------------------------------------------------
def test_model_truncated_between_pages_is_caught(tmp_path):
    """Truncated after the pass is encoded, before its first page is decoded: the check before each page
    stops the run with one line (without it, the decoder would read past the file's end: SIGBUS)."""
    text = tmp_path / "text.gguf"
    shutil.copy(TEXT, text)
    code = ("import os, sys\n"
            "from encoder.pipeline import OcrPipeline\n"
            "real = OcrPipeline.encode_pass\n"
            "def encode(self, prepared, trim=True, **kw):\n"
            "    out = real(self, prepared, trim, **kw)\n"
            f"    os.truncate({str(text)!r}, 4096)\n"
            "    return out\n"
            "OcrPipeline.encode_pass = encode\n"
            "from encoder.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    cmd = [sys.executable, "-c", code, *cli_cmd(*QUICK, "--image", PAGE, "-o", tmp_path / "o.md", text=text)[3:]]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, (p.returncode, p.stderr)
    (line,) = error_lines(p.stderr)
    assert line == (f"tilepass-cli: error: {text}: the model file was truncated ({TEXT.stat().st_size} -> 4096 "
                    "bytes) while in use; stopping before the next pass or page")
    assert not (tmp_path / "o.md").exists()


def test_model_truncated_mid_page_sigbus(tmp_path):
    """Truncated while a page is being decoded: the read past the end raises SIGBUS; the CLI prints one line
    and exits with 135 instead of dying without a word."""
    text = tmp_path / "text.gguf"
    shutil.copy(TEXT, text)
    p = subprocess.Popen(cli_cmd("--image", PAGE, "--mode", "tiny", "-n", "100000", "--no-repeat-ngram", "0",
                                 "-c", "8192", "-t", "2", "-o", tmp_path / "o.md", text=text),
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while True:
            line = p.stderr.readline()
            lines.append(line)
            if "encoded in" in line or not line:
                break
        time.sleep(0.3)  # well into the page (8192 tokens take ~25 s here)
        os.truncate(text, 0)
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    err = "".join(lines) + p.stderr.read()
    assert rc == 135, err
    assert err.splitlines()[-1] == "tilepass-cli: a model file changed or was truncated while in use (SIGBUS)"
    assert [p.name for p in tmp_path.iterdir()] == ["text.gguf"]  # no output, no temporary file
