"""tilepass-server in a child process for the tests and the benchmark: start it on a free port, wait for /health,
stop it with SIGTERM; images as data: URIs; the child's resident memory."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / ".." / "shared" / "fixtures" / "llamacpp-tiny-v1"
TEXT, VISION, PAGE = FIXTURE / "text-f16.gguf", FIXTURE / "mmproj-f32.gguf", FIXTURE / "page.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``tilepass-server`` (python -m encoder.server.cli) with the given options; ``url`` its /v1 base."""

    def __init__(self, *args: object, text: Path = TEXT, vision: Path = VISION, startup_s: float = 60.0,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self._err = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would stop the server
        cmd = [sys.executable, "-m", "encoder.server.cli", "-m", str(text), "--mmproj", str(vision),
               "--port", str(self.port), "--log-level", "warning", *(str(a) for a in args)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._err, text=True,
                                     env=None if env is None else {**os.environ, **env})
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/v1"
        end = time.monotonic() + startup_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tilepass-server exited with {self.proc.returncode} at start:\n{self.stderr()}")
            try:
                if httpx.get(self.base + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                self.proc.kill()
                raise RuntimeError("tilepass-server did not answer /health in time")
            time.sleep(0.1)

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def terminate(self, timeout: float = 60.0) -> tuple[int, str]:
        """SIGTERM, then wait; (exit status, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"tilepass-server did not stop within {timeout} s of SIGTERM:\n{self.stderr()}")
        return self.proc.returncode, self.stderr()

    def stderr(self) -> str:
        self._err.flush()
        self._err.seek(0)
        return self._err.read()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


def png_bytes(img: Image.Image) -> bytes:
    b = io.BytesIO()
    img.save(b, format="PNG")
    return b.getvalue()


def data_url(img: Image.Image | bytes | Path) -> str:
    if isinstance(img, Path):
        img = img.read_bytes()
    elif isinstance(img, Image.Image):
        img = png_bytes(img)
    return "data:image/png;base64," + base64.b64encode(img).decode()


def noise_page(seed: int, size: tuple[int, int] = (160, 200)) -> Image.Image:
    """A small page of random pixels: with the fixture's random weights each gives its own output."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def user_message(*images: str, text: str | None = None) -> list[dict]:
    parts: list[dict] = [{"type": "image_url", "image_url": {"url": u}} for u in images]
    if text is not None:
        parts.append({"type": "text", "text": text})
    return [{"role": "user", "content": parts}]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")
