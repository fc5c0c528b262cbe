"""tilepass-cli with PaddleOCR-VL files (the llama.cpp-written fixture pair, as PaddlePaddle publishes them):
the prompt comes from the stored chat template and the family's task prompts, the tokens equal the
transformers reference's greedy tokens, and prompts the family cannot take are usage errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / ".." / "shared" / "fixtures" / "llamacpp-tiny-paddleocr-vl"
V1 = ROOT / ".." / "shared" / "fixtures" / "llamacpp-tiny-v1"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "encoder.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def paddle(*args: str) -> subprocess.CompletedProcess:
    assert FIXTURE.is_dir(), f"{FIXTURE} is missing"
    return cli("-m", str(FIXTURE / "text-f16.gguf"), "--mmproj", str(FIXTURE / "mmproj-f32.gguf"),
               "--image", str(FIXTURE / "page.png"), "-t", "2", *args)


def test_greedy_tokens_equal_the_reference():
    ref = np.load(FIXTURE / "reference.npz")
    r = paddle("-n", "16", "--json", "--kv-type", "f32")
    assert r.returncode == 3, r.stderr  # 16 tokens, no end of text: the -n status
    page = json.loads(r.stdout)
    assert page["tokens"] == {"prompt": int(ref["input_len"]), "image": 1472, "generated": 16}
    assert page["token_ids"] == [int(t) for t in ref["greedy16"]]


def test_task_prompts_and_bad_prompts():
    assert paddle("-n", "2", "--task", "table").returncode == 3
    r = paddle("-n", "2", "-p", "<image>\nOCR:")
    assert r.returncode == 2 and "remove <image>" in r.stderr
    r = paddle("-n", "2", "-p", "OCR:", "--task", "ocr")
    assert r.returncode == 2 and "use one" in r.stderr


def test_task_needs_a_family_with_tasks():
    r = cli("-m", str(V1 / "text-f16.gguf"), "--mmproj", str(V1 / "mmproj-f32.gguf"), "--image",
            str(V1 / "page.png"), "-n", "2", "--task", "table")
    assert r.returncode == 2 and "no task prompts" in r.stderr


@pytest.mark.parametrize("swap", [False, True])
def test_mixed_families_are_refused(swap):
    files = [str(V1 / "text-f16.gguf"), str(FIXTURE / "mmproj-f32.gguf")]
    if swap:
        files = [str(FIXTURE / "text-f16.gguf"), str(V1 / "mmproj-f32.gguf")]
    r = cli("-m", files[0], "--mmproj", files[1], "--image", str(FIXTURE / "page.png"), "-n", "2")
    assert r.returncode == 1, r.stderr
    assert "do not belong to the same model" in r.stderr or "does not go with" in r.stderr
