"""A stop signal ends a long vision pass within a graph node (the abort callback polls a wakeup-fd flag), not when
the C call returns: tilepass-cli on 12 OCR-2 gundam pages in one pass (about 20 s of encoding on 2 cores) is
interrupted 1 s into the pass and exits 130 within a few seconds; a model stopped that way stays usable."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from encoder.interrupt import AbortHook
from encoder.native import TilepassError
from encoder.vision import VisionEncoder

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / ".." / "shared" / "fixtures" / "llamacpp-tiny-ocr2"


def test_sigint_stops_a_long_encode_pass_quickly():
    assert FIXTURE.is_dir(), f"{FIXTURE} is missing"
    images = [a for _ in range(12) for a in ("--image", str(FIXTURE / "page.png"))]
    p = subprocess.Popen([sys.executable, "-m", "encoder.cli", "-m", str(FIXTURE / "text-f16.gguf"), "--mmproj",
                          str(FIXTURE / "mmproj-f32.gguf"), *images, "-n", "1", "-t", "2", "--images-per-pass", "0",
                          "--precision", "f32"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.monotonic() + 120
    while "encoding 12 image(s)" not in seen and time.monotonic() < deadline:
        seen += p.stderr.readline()
    assert "encoding 12 image(s)" in seen, seen
    time.sleep(1.0)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    rest = p.communicate(timeout=60)[1]
    elapsed = time.monotonic() - t0
    assert p.returncode == 130, seen + rest
    assert "encoded in" not in rest  # the pass did not run to its end
    assert elapsed < 8.0, f"took {elapsed:.1f} s to stop"


def test_an_aborted_encode_leaves_the_model_usable():
    calls = {"n": 0}

    def poll() -> bool:
        calls["n"] += 1
        return calls["n"] > 50 and calls.get("stop", True)

    enc = VisionEncoder(FIXTURE / "mmproj-f32.gguf", n_threads=2, abort=poll)
    try:
        enc.encode([FIXTURE / "page.png"], "base")
        raise AssertionError("the encode was not aborted")
    except TilepassError as e:
        assert "abort" in str(e)
    calls["stop"] = False
    (tokens,) = enc.encode([FIXTURE / "page.png"], "base")
    ref = np.load(FIXTURE / "reference.npz")["features_base"]
    assert np.abs(tokens - ref).max() <= 1e-4 * np.abs(ref).max()
    assert AbortHook(None).callback is not None  # ffi.NULL: no callback


def test_an_exception_in_the_poll_stops_and_is_raised_after_the_call():
    def poll() -> bool:
        raise KeyboardInterrupt

    enc = VisionEncoder(FIXTURE / "mmproj-f32.gguf", n_threads=1, abort=poll)
    try:
        enc.encode([FIXTURE / "page.png"], "base")
        raise AssertionError("not interrupted")
    except KeyboardInterrupt:
        pass


def test_cancel_pipe_stops_a_pass_from_another_thread_and_resets():
    """tilepass-server's per-request cancel: CancelPipe.trip() from any thread stops the pass within a graph node
    (polled in C); reset() makes the model usable again, with the reference's result."""
    import threading

    from encoder.interrupt import CancelPipe
    from encoder.text_model import TextModel

    cp = CancelPipe()
    enc = VisionEncoder(FIXTURE / "mmproj-f32.gguf", n_threads=2, abort=cp)
    timer = threading.Timer(0.5, cp.trip)
    timer.start()
    t0 = time.monotonic()
    try:
        enc.encode([FIXTURE / "page.png"] * 6, "gundam")  # several seconds of work
        raise AssertionError("the encode was not cancelled")
    except TilepassError as e:
        assert "abort" in str(e)
    assert time.monotonic() - t0 < 4.0
    timer.join()
    cp.reset()
    (tokens,) = enc.encode([FIXTURE / "page.png"], "base")
    ref = np.load(FIXTURE / "reference.npz")["features_base"]
    assert np.abs(tokens - ref).max() <= 1e-4 * np.abs(ref).max()
    # a text model: tripped, an evaluation stops; reset, it runs
    tcp = CancelPipe()
    text = TextModel(FIXTURE / "text-f16.gguf", n_threads=1, abort=tcp)
    tcp.trip()
    try:
        text.eval([0, 1, 2])
        raise AssertionError("the evaluation was not cancelled")
    except TilepassError as e:
        assert "abort" in str(e)
    tcp.reset()
    assert text.eval([0, 1, 2]).shape == (text.info.n_vocab,)
    cp.close()
    tcp.close()
