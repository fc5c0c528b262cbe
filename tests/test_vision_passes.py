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
def files(tmp_path_factory):
    """The bundled model's (text, vision) GGUF files."""
    return bundled_gguf(tmp_path_factory.mktemp("passes"))


@pytest.fixture(scope="module")
def pipe(files):
    from gen import make_page

    from encoder.pipeline import OcrPipeline

    p = OcrPipeline(*files, n_threads=2)
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


def _resident_kb(path: Path) -> int:
    """The process's resident kB of its mappings of `path` (/proc/self/smaps)."""
    total, ours = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not line.startswith(("Rss", "Pss")):
            ours = len(head) >= 6 and Path(head[5]) == path  # a mapping's first line: range perms off dev inode path
        elif ours and line.startswith("Rss:"):
            total += int(head[1])
    return total


def test_a_pass_between_decode_steps_holds_neither_weights_of_the_other_model(pipe, files):
    """decoder_idle (tilepass-cli): the text weights' pages are given back before the pass and the vision
    weights' after it; the next decode step reads the text weights again and gives the same logits."""
    p, pages = pipe
    text_path, vision_path = (Path(f).resolve() for f in files)
    ids = p.prompt_ids(p.default_prompt, 0)[:8]

    def run(trim_between: bool) -> np.ndarray:
        p.text.reset()
        p.text.eval(ids[:-1])
        if trim_between:
            seen = {}
            encode = p.vision.encode

            def watched(views):
                seen["text_kb"] = _resident_kb(text_path)
                return encode(views)

            p.vision.encode = watched
            try:
                assert _resident_kb(text_path) > 0
                p.encode_pass(pages, decoder_idle=True)
            finally:
                del p.vision.encode
            assert seen["text_kb"] == 0 and _resident_kb(vision_path) == 0
        return p.text.eval(ids[-1:])

    assert np.array_equal(run(True), run(False))
    assert _resident_kb(text_path) > 0
