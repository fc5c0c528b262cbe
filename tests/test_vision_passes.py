"""Vision passes under a memory budget (OcrPipeline.passes, tp_vision_plan_bytes), on the bundled model:

* tp_vision_plan_bytes tells, without encoding, the compute memory the encode then reports
  (tp_vision_last_compute_bytes), and the encode reuses the graph it built;
* a batch of pages is split into passes only where one pass would need more than ``pass_bytes``; the split
  keeps the pages' order, and each pass's embeddings are those of encoding its pages by themselves;
* under the default budget a few small pages still share one pass.
The memory this bounds (tilepass-cli's peak RSS on full-size gundam pages) is measured by bench_documents."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "ocrtrain"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bundled_model import bundled_gguf  # noqa: E402


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from gen import make_page

    from encoder.pipeline import OcrPipeline

    text, vision = bundled_gguf(tmp_path_factory.mktemp("passes"))
    p = OcrPipeline(text, vision, n_threads=2)
    pages = p.prepare([make_page(300 + k).image for k in range(3)])
    return p, pages


def test_plan_bytes_is_what_the_encode_then_needs(pipe):
    p, pages = pipe
    enc = p.vision
    for n in (1, 3, 2):
        want = enc.plan_bytes(pages[:n])
        enc.encode(pages[:n])
        assert enc.last_compute_bytes == want > 0
    assert enc.plan_bytes(pages[:1]) < enc.plan_bytes(pages[:2]) < enc.plan_bytes(pages[:3])


def test_plan_bytes_refuses_what_encode_refuses(pipe):
    from encoder.native import TilepassError

    p, pages = pipe
    with pytest.raises(TilepassError, match="NULL argument or no pages"):
        p.vision.plan_bytes([])


def test_pages_split_into_passes_only_over_the_budget(pipe):
    p, pages = pipe
    one, two, three = (p.vision.plan_bytes(pages[:n]) for n in (1, 2, 3))
    alone = [p.vision.encode([pg])[0] for pg in pages]
    together = p.vision.encode(pages)
    budget0 = p.pass_bytes
    try:
        for budget, want in ((three, [3]), (three - 1, [2, 1]), (two - 1, [1, 1, 1]), (one - 1, [1, 1, 1]),
                             (0, [3])):  # 0: no budget
            p.pass_bytes = budget
            parts = p.passes(pages)
            assert [len(x) for x in parts] == want, budget
            assert [pg for part in parts for pg in part] == list(pages)  # order kept, nothing lost
            embs, _ = p.encode(pages)
            if want == [1, 1, 1]:  # each page encoded by itself: the same bits as alone
                for e, a in zip(embs, alone):
                    np.testing.assert_array_equal(e, a)
            if want == [3]:
                for e, t in zip(embs, together):
                    np.testing.assert_array_equal(e, t)
            for e, a in zip(embs, alone):  # whatever the split, within batching's rounding of alone
                np.testing.assert_allclose(e, a, rtol=1e-4, atol=1e-5)
    finally:
        p.pass_bytes = budget0


def test_small_pages_share_a_pass_under_the_default_budget(pipe):
    from encoder.pipeline import PASS_BYTES

    p, pages = pipe
    assert p.pass_bytes == PASS_BYTES
    assert [len(x) for x in p.passes(pages)] == [3]
