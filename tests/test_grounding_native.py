"""tp_grounding_parse (native/session/grounding.c: the spans tp_session_generate's result gives) against
encoder/grounding.py's GroundingParser on synthetic texts: the same regions (label, boxes in 0..999, completeness),
well-formed and malformed (cut off, nested, unclosed, over-long labels, text inside or after the box list, numbers
out of range, rounding, overflow), and byte offsets that point at the region's first tag and its label. Fast: no
model (run under ASan/UBSan too, SAN_PYTESTS)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from encoder.grounding import DET_C, DROPPED, parse  # noqa: E402
from session_native import grounding_parse  # noqa: E402

GROUNDING_TEXTS = [
    "<|ref|>title<|/ref|><|det|>[[10, 20, 300, 40]]<|/det|>\n# Hello\n",
    "<|ref|>table<|/ref|><|det|>[[5,5,900,400], [1, 2, 3.5, 2.5]]<|/det|><table></table>",
    "<|ref|> image <|/ref|> <|det|>[[1000, -3, 7, 2000]]<|/det|>text after",
    "<|ref|>cut<|/ref|><|det|>[[1, 2, 3, 4], [5, 6",
    "<|det|>[[4, 3, 2, 1]]<|/det|> no label",
    "<|ref|>a<|ref|>b<|/ref|><|det|>[[0,0,1,1]]<|/det|>",
    "<|ref|>label only<|/ref|> then text",
    "<|ref|>x<|/ref|><|det|>[[1, 1, 2, 2]]] trailing text without a closer",
    "<|ref|>y<|/ref|><|det|>oops [[1, 1, 2, 2]]<|/det|>",
    "<|ref|>z<|/ref|><|det|>[[1, 1,\n 2, 2]]<|/det|>",
    "<|ref|>w<|/ref|><|det|>[[1, 1, 2, 2]]<|ref|>v<|/ref|><|det|>[[3, 3, 4, 4]]<|/det|>",
    "<|ref|>" + "L" * 300 + "<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|>",
    "<|ref|>ünïcødé 表<|/ref|><|det|>[[0.5, 1.5, 2.5, 998.5]]<|/det|>",
    "<|ref|>q<|/ref|><|det|>[[1, 2, 3, 4]]<|/de",
    "<|ref|>r<|/ref|><|det|>[[1e3, 2, 3, 4], [7, 8, 9, 10]]<|/det|>",
    "plain text with no regions \\coloneqq at all",
    "<|ref|>s<|/ref|><|det|>[[" + "1" * 400 + ", 2, 3, 4], [00000000000000000000000000000000000000000000000000000000000000000005, 1, 2, 3]]<|/det|>",
]


@pytest.mark.parametrize("text", GROUNDING_TEXTS)
def test_grounding_spans_equal_python(text):
    _, regions = parse(text)
    raw = text.encode()
    spans = grounding_parse(raw)
    assert len(spans) == len(regions)
    for (begin, end, lb, le, boxes, complete), r in zip(spans, regions):
        label = raw[lb:le].decode()
        assert (label or None) == r.label
        assert boxes == [tuple(b) for b in r.boxes]
        assert complete == r.complete
        assert raw[begin:].startswith((b"<|ref|>", b"<|det|>")) and begin <= lb <= le <= end <= len(raw)


def label_text(b: bytes) -> str:
    """A span's label bytes as GroundingParser's label: less the tags it drops there, stripped."""
    s = b.decode()
    for t in (*DROPPED, DET_C):
        s = s.replace(t, "")
    return s.strip()


PIECES = ["<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>", "<｜end▁of▁sentence｜>", "\\coloneqq", "[", "]",
          "[[", "]]", ", ", ",", "12", "999", "-4", "3.5", "1000", " ", "  ", "\n", "\t", "text", "表", "é", "\u3000",
          "<|re", "<|/de", "\\coloneq", "label", "image", "0"]


def test_grounding_random_texts_equal_python():
    """2,000 texts drawn from tags, parts of tags, box syntax, whitespace and other characters (seeded)."""
    import random

    rng = random.Random(2026)
    for _ in range(2000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 40)))
        _, regions = parse(text)
        raw = text.encode()
        spans = grounding_parse(raw)
        got = [((label_text(raw[lb:le]) or None), boxes, complete) for (_, _, lb, le, boxes, complete) in spans]
        want = [(r.label, [tuple(b) for b in r.boxes], r.complete) for r in regions]
        assert got == want, repr(text)
