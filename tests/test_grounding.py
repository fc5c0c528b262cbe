"""Grounding post-processing (encoder/grounding.py) on recorded-style model outputs: clean markdown,
boxes in pixels, malformed and cut-off input, the same result for any streaming split, no exception
on random input."""

from __future__ import annotations

import json
import random

import pytest
from PIL import Image

from encoder.boxes import draw_regions
from encoder.grounding import GroundingParser, page_json, parse, parse_boxes, regions_json, to_markdown, to_pixels

# shaped like DeepSeek-OCR's output for "<|grounding|>Convert the document to markdown."
DOC = (
    "<|ref|>title<|/ref|><|det|>[[62, 41, 934, 78]]<|/det|>\n# Quarterly Report 2024\n\n"
    "<|ref|>text<|/ref|><|det|>[[62, 95, 934, 180]]<|/det|>\nRevenue grew by 12% (see Table 1). We define "
    "$f \\coloneqq g$ and $h \\eqqcolon k$.\n\n"
    "<|ref|>image<|/ref|><|det|>[[100, 200, 480, 420]]<|/det|>\n\n\n"
    "<|ref|>image_caption<|/ref|><|det|>[[100, 425, 480, 440]]<|/det|>\n<center>Figure 1: 売上高の推移</center>\n\n"
    "<|ref|>table<|/ref|><|det|>[[62, 470, 934, 700]]<|/det|>\n<table><tr><td>Q1</td><td>1.2</td></tr>"
    "<tr><td>Q2</td><td>1.4</td></tr></table>\n\n"
    "<|ref|>image<|/ref|><|det|>[[500, 200, 900, 420], [500, 430, 900, 460]]<|/det|>\n\n"
    "<|ref|>text<|/ref|><|det|>[[62, 720, 934, 760]]<|/det|>\n😀 Done."
)
DOC_MD = (
    "# Quarterly Report 2024\n\nRevenue grew by 12% (see Table 1). We define $f := g$ and $h =: k$.\n\n"
    "![](images/0.jpg)\n\n<center>Figure 1: 売上高の推移</center>\n\n"
    "<table><tr><td>Q1</td><td>1.2</td></tr><tr><td>Q2</td><td>1.4</td></tr></table>\n\n"
    "![](images/1.jpg)\n\n😀 Done.\n"
)


def split_feed(text: str, rng: random.Random, raw: bool = False) -> str:
    p = GroundingParser(raw=raw)
    out, i = [], 0
    while i < len(text):
        k = rng.randint(1, 9)
        out.append(p.feed(text[i:i + k]))
        i += k
    out.append(p.finish())
    return "".join(out)


def test_document_output():
    md, regions = parse(DOC)
    assert md == DOC_MD
    assert [r.label for r in regions] == ["title", "text", "image", "image_caption", "table", "image", "text"]
    assert regions[0].boxes == [(62, 41, 934, 78)]
    assert regions[5].boxes == [(500, 200, 900, 420), (500, 430, 900, 460)]
    assert [r.image_index for r in regions] == [None, None, 0, None, None, 1, None]
    assert all(r.complete for r in regions)
    assert regions[4].text.strip().startswith("<table>")
    # raw keeps the text as generated
    raw, raw_regions = parse(DOC, raw=True)
    assert raw == DOC and len(raw_regions) == 7


def test_pixels_and_json():
    w, h = 1240, 1754
    _, regions = parse(DOC)
    x1, y1, x2, y2 = to_pixels(regions[0].boxes[0], w, h)
    assert (x1, y1, x2, y2) == pytest.approx((62 / 999 * w, 41 / 999 * h, 934 / 999 * w, 78 / 999 * h))
    assert to_pixels((999, 999, 999, 999), w, h) == pytest.approx((w, h, w, h))
    j = page_json(to_markdown(DOC), DOC, regions, w, h, image="p.png")
    s = json.dumps(j, ensure_ascii=False)
    back = json.loads(s)
    assert back["regions"][0]["label"] == "title"
    assert back["regions"][0]["boxes"][0] == pytest.approx([round(v, 2) for v in (x1, y1, x2, y2)])
    assert back["regions"][0]["boxes_999"] == [[62, 41, 934, 78]]
    assert back["regions"][0]["text"] == "# Quarterly Report 2024"
    assert back["width"] == w and back["text"] == DOC_MD


def test_streaming_is_split_invariant():
    rng = random.Random(0)
    for text in [DOC, DOC[:137], DOC[:-3], "<|ref|>a<|ref|>b<|/ref|><|det|>[[1,2,3,4]]<|/det|>x\\coloneq"]:
        whole = parse(text)[0]
        for _ in range(40):
            assert split_feed(text, rng) == whole
            assert split_feed(text, rng, raw=True) == text


CASES = [
    # (input, markdown, [(label, boxes, complete)])
    ("<|ref|>a<|ref|>b<|/ref|><|det|>[[1,2,3,4]]<|/det|>hello", "ahello\n", [("b", [(1, 2, 3, 4)], True)]),
    ("the <|ref|>cat<|/ref|> sits<|/det|> here", "the cat sits here\n", []),
    ("<|det|>[[5, 6, 7, 8]]<|/det|>\nno label", "no label\n", [(None, [(5, 6, 7, 8)], True)]),
    ("<|det|>[[5, 6, 7, 8]] text without a closing tag", "text without a closing tag\n", [(None, [(5, 6, 7, 8)], True)]),
    ("<|ref|>text<|/ref|><|det|>[[1000, -5, 3.5, 4], [a, b, c, d], [1, 2, 3]]<|/det|>\nX", "X\n",
     [("text", [(4, 0, 999, 4)], True)]),
    ("<|ref|>text<|/ref|><|det|>[[9, 8, 7, 6]]<|/det|>", "", [("text", [(7, 6, 9, 8)], True)]),
    ("<|ref|>text<|/ref|><|det|>[[1, 2, 3, 4]]\n2024 report", "2024 report\n", [("text", [(1, 2, 3, 4)], True)]),
    ("<|ref|>text<|/ref|><|det|>garbage<|/det|>after", "garbageafter\n", [("text", [], False)]),
    ("stray <|/ref|> and <|/det|> and <|grounding|> tags", "stray  and  and  tags\n", []),
    ("<|ref|>" + "x" * 300 + " tail", "x" * 300 + " tail\n", []),
    ("<|ref|>text<|/ref|><|det|>[[1, 2, 3, 4],\n[5, 6, 7, 8]]<|/det|>", "[5, 6, 7, 8]]\n", [("text", [(1, 2, 3, 4)], False)]),
    # cut off by the token limit
    ("Intro\n<|ref|>text<|/ref|><|det|>[[1, 2, 3", "Intro\n", [("text", [], False)]),
    ("Intro\n<|ref|>text<|/ref|><|det|>[[1, 2, 3, 4], [5, 6", "Intro\n", [("text", [(1, 2, 3, 4)], False)]),
    ("Intro\n<|ref|>text<|/ref|><|det|>[[1, 2, 3, 4]]<|/de", "Intro\n", [("text", [(1, 2, 3, 4)], True)]),
    ("Intro\n<|ref|>tab", "Intro\n", []),
    ("Intro\n<|ref|>table<|/ref|>", "Intro\n", []),
    ("Intro\n<|re", "Intro\n", []),
    ("Intro \\coloneq", "Intro \\coloneq\n", []),
    ("", "", []),
    ("\n\n\n   \n", "", []),
]


@pytest.mark.parametrize("text,md,regions", CASES)
def test_malformed_and_cut_off(text, md, regions):
    out, regs = parse(text)
    assert out == md
    assert [(r.label, r.boxes, r.complete) for r in regs] == regions
    json.dumps(regions_json(regs, 100, 200))


def test_parse_boxes_tolerant():
    assert parse_boxes("[[1, 2, 3, 4]]") == [(1, 2, 3, 4)]
    assert parse_boxes("[[1.6,2,3,4],[x],[5,6,7,8,9],[10, 20, 30, 40]") == [(2, 2, 3, 4), (10, 20, 30, 40)]
    assert parse_boxes("[[99999999999999999999999, 0, 0, 0]]") == [(0, 0, 999, 0)]
    assert parse_boxes("") == []


def test_random_input_never_raises():
    rng = random.Random(1)
    atoms = ["<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>", "[[", "]]", "[", "]", ",", " ", "\n",
             "12", "999", "-3", "1.5", "image", "text", "table", "# T", "<td>", "😀", "标", "\\coloneqq", "<|", "|>",
             "<|re", "f|>", "<｜end▁of▁sentence｜>"]
    fragments = {"<|", "|>", "<|re", "f|>"}  # can form new tags once a dropped tag between them is gone
    for k in range(3000):
        pool = atoms if k % 2 else [a for a in atoms if a not in fragments]
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 40)))
        md, regs = parse(text)
        assert isinstance(md, str)
        if not k % 2:
            assert "<|ref|>" not in md and "<|det|>" not in md and "<|/ref|>" not in md and "<|/det|>" not in md
        for r in regs:
            for b in r.boxes:
                assert 0 <= b[0] <= b[2] <= 999 and 0 <= b[1] <= b[3] <= 999
        json.dumps(regions_json(regs, 640, 480))
        assert split_feed(text, rng) == md


def test_draw_boxes():
    img = Image.new("RGB", (300, 200), "white")
    _, regions = parse(DOC)
    out = draw_regions(img, regions)
    assert out.size == img.size and out.mode == "RGB"
    assert out.getpixel((int(62 / 999 * 300), int(60 / 999 * 200))) != (255, 255, 255)
    draw_regions(img, [])  # nothing to draw
