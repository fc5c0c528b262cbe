"""The vision encoder loads GGUF files written by llama.cpp's converter (none of our keys) and
reproduces the transformers reference features stored beside them, in every mode."""

from pathlib import Path

import numpy as np
import pytest

from encoder.vision import VisionEncoder
from tp_testing import rel_err  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "llamacpp-tiny-v1"


@pytest.fixture(scope="module")
def reference():
    return np.load(FIXTURE / "reference.npz")


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("mode", ["tiny", "base", "gundam"])
def test_features_match_transformers(reference, mode, n_threads):
    enc = VisionEncoder(FIXTURE / "mmproj-f32.gguf", n_threads=n_threads)
    (ours,) = enc.encode([FIXTURE / "page.png"], mode=mode)
    ref = reference[f"features_{mode}"]
    assert ours.shape == ref.shape
    assert rel_err(ours, ref) < 1e-4


def test_one_pass_equals_one_at_a_time(reference):
    enc = VisionEncoder(FIXTURE / "mmproj-f32.gguf", n_threads=2)
    page = FIXTURE / "page.png"
    together = enc.encode([enc.prepare(page, "gundam"), enc.prepare(page, "base"), enc.prepare(page, "tiny")])
    alone = [enc.encode([page], mode=m)[0] for m in ("gundam", "base", "tiny")]
    for t, a in zip(together, alone):
        assert np.abs(t - a).max() <= 1e-5 * np.abs(a).max()
