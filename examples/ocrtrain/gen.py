"""Synthetic document pages for training a small DeepSeek-OCR v1 model.

`make_page(seed)` renders one page with Pillow and the bundled DejaVu Sans font and returns the image together
with its ground truth: markdown (headings, paragraphs, lists, HTML tables as DeepSeek-OCR writes them) and the
grounded form `<|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2]]<|/det|>\ncontent` with 0..999 coordinates.
Everything is a pure function of the seed (and of `difficulty`, the curriculum knob; 1.0 is the evaluation
distribution).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

HERE = Path(__file__).resolve().parent
FONT_REGULAR = HERE / "DejaVuSans.ttf"
FONT_BOLD = HERE / "DejaVuSans-Bold.ttf"


@functools.lru_cache(maxsize=None)
def words() -> tuple[str, ...]:
    return tuple(w.strip() for w in (HERE / "words.txt").read_text().split() if w.strip())


@functools.lru_cache(maxsize=256)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_BOLD if bold else FONT_REGULAR), size)


@dataclass
class Block:
    kind: str  # title, sub_title, text, list, table
    markdown: str
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # page pixels


@dataclass
class Page:
    image: Image.Image
    markdown: str
    grounding: str
    blocks: list[Block] = field(default_factory=list)
    glyphs: Image.Image | None = None  # "L": the glyph class of the character covering each pixel (0: none)
    # page-pixel centre (x, y) of each character of `markdown` / `grounding` that is drawn; NaN where none is
    # (markdown syntax, coordinates): the targets of train.ReadingAttention
    markdown_xy: np.ndarray | None = None
    grounding_xy: np.ndarray | None = None


# ----------------------------------------------------------------------------------------------- glyph labels
GLYPH_CLASSES = 98  # 0 no character, 1..95 printable ASCII (space included), 96 the bullet, 97 any other


def glyph_class(ch: str) -> int:
    o = ord(ch)
    if 32 <= o <= 126:
        return o - 31
    return 96 if ch == "\u2022" else 97


Drawn = list[tuple[str, list[tuple[float, float]]]]  # what a page drew, in order: text and its characters' centres


def draw_text(draw: ImageDraw.ImageDraw, glyphs: ImageDraw.ImageDraw | None, xy: tuple[int, int], text: str,
              f: ImageFont.FreeTypeFont, fill: int, drawn: Drawn | None = None) -> None:
    """Draw `text` and paint each character's advance box (one line high) with its glyph class into `glyphs`:
    the dense training target of train.GlyphProbe, which tells the vision tower which character lies where.
    Appends the text and the centre of each character's box to `drawn` (see locate)."""
    draw.text(xy, text, font=f, fill=fill)
    if not text:
        return
    x, y = xy
    top, bottom = f.getbbox("Hgjp|")[1::2]  # relative to xy, the same for every line of this font
    x0, centres = float(x), []
    for i, ch in enumerate(text):
        x1 = x + f.getlength(text[:i + 1])
        if glyphs is not None and x1 - x0 >= 1:
            glyphs.rectangle([round(x0), y + top, round(x1) - 1, y + bottom - 1], fill=glyph_class(ch))
        centres.append(((x0 + x1) / 2, y + (top + bottom) / 2))
        x0 = x1
    if drawn is not None:
        drawn.append((text, centres))


def _rotated(centres: list[tuple[float, float]], degrees: float, w: int, h: int) -> list[tuple[float, float]]:
    """Points moved as Image.rotate(degrees) (counter-clockwise about the centre) moves the pixels under them."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    cx, cy = w / 2, h / 2
    return [(cx + (x - cx) * c + (y - cy) * s, cy - (x - cx) * s + (y - cy) * c) for x, y in centres]


def locate(text: str, drawn: Drawn) -> np.ndarray:
    """[len(text), 2] page-pixel centres of the characters of `text` (a page's markdown or grounded form) that
    were drawn, NaN elsewhere. Each drawn string is looked up in `text` after the previous one: the truth lists
    what was drawn in drawing order, with markdown syntax between (a list's bullet is drawn but not written)."""
    xy = np.full((len(text), 2), np.nan, dtype=np.float32)
    cur = 0
    for s, centres in drawn:
        at = text.find(s, cur)
        if at < 0:
            continue
        xy[at:at + len(s)] = centres
        cur = at + len(s)
    return xy


# ----------------------------------------------------------------------------------------------- text
def _number(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.35:
        return str(rng.randint(1, 99))
    if r < 0.55:
        return str(rng.randint(1900, 2099))
    if r < 0.75:
        return f"{rng.randint(0, 99)}.{rng.randint(0, 9)}"
    if r < 0.9:
        return f"{rng.randint(1, 100)}%"
    return str(rng.randint(100, 9999))


def _word(rng: random.Random, p_number: float = 0.07) -> str:
    if rng.random() < p_number:
        return _number(rng)
    return rng.choice(words())


def _sentence(rng: random.Random, n: int) -> str:
    out = []
    for i in range(n):
        w = _word(rng)
        if i == 0:
            w = w[:1].upper() + w[1:]
        elif rng.random() < 0.03:
            w = f"({w})"
        out.append(w)
        if 0 < i < n - 1 and rng.random() < 0.08:
            out[-1] += rng.choice([",", ",", ",", ";", ":"])
    return " ".join(out) + rng.choice([".", ".", ".", ".", "?", "!"])


def _paragraph(rng: random.Random, n_words: int) -> str:
    sents, left = [], n_words
    while left > 0:
        k = min(left, rng.randint(4, 14))
        sents.append(_sentence(rng, max(2, k)))
        left -= k
    return " ".join(sents)


def _title(rng: random.Random, lo: int, hi: int) -> str:
    ws = [_word(rng, 0.05) for _ in range(rng.randint(lo, hi))]
    return " ".join(w[:1].upper() + w[1:] for w in ws)


# ----------------------------------------------------------------------------------------------- layout
def _wrap(text: str, f: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines, cur = [], ""
    for w in text.split(" "):
        cand = w if not cur else cur + " " + w
        if f.getlength(cand) <= width or not cur:
            cur = cand
        else:
            lines.append(cur)
            cur = w
    if cur:
        lines.append(cur)
    return lines


def make_page(seed: int, difficulty: float = 1.0) -> Page:
    """Render one page. `difficulty` in [0, 1] scales text size down and amount of text up."""
    rng = random.Random(seed)
    d = min(max(difficulty, 0.0), 1.0)
    # page geometry
    W = rng.randint(700, 1500)
    H = int(W * rng.uniform(0.7, 1.6))
    scale = max(W, H) / 1024.0  # page pixels per pixel of the 1024 global view
    f1024 = rng.uniform(36.0 - 10.0 * d, 38.0 - 4.0 * d)  # body font size as seen in the 1024 view: 26-34 px
    fs = max(10, int(round(f1024 * scale)))
    body = font(fs)
    line_h = int(fs * rng.uniform(1.25, 1.45))
    mx = int(W * rng.uniform(0.04, 0.10))
    my = int(H * rng.uniform(0.04, 0.08))
    text_w = W - 2 * mx
    bg = rng.randint(238, 255)
    ink = rng.randint(0, 50)
    img = Image.new("L", (W, H), bg)
    draw = ImageDraw.Draw(img)
    glyph_img = Image.new("L", (W, H), 0)
    gdraw = ImageDraw.Draw(glyph_img)
    drawn: Drawn = []

    blocks: list[Block] = []
    y = my
    gap = int(line_h * rng.uniform(0.5, 1.0))
    max_words = int(14 + 36 * d)
    n_blocks = rng.randint(1, 2 + int(3 * d))

    def fits(h: int) -> bool:
        return y + h <= H - my

    # planned block list
    plan: list[str] = []
    if rng.random() < 0.8:
        plan.append("title")
    for _ in range(n_blocks):
        r = rng.random()
        plan.append("text" if r < 0.55 else "sub_title" if r < 0.68 else "list" if r < 0.84 else "table")
    if plan and plan[-1] == "sub_title":
        plan.append("text")

    for kind in plan:
        if kind in ("title", "sub_title"):
            big = kind == "title"
            f = font(int(fs * (1.5 if big else 1.25)), bold=True)
            text = _title(rng, 2, 5 if big else 4)
            lines = _wrap(text, f, text_w)
            lh = int(f.size * 1.3)
            h = lh * len(lines)
            if not fits(h):
                break
            x_off = mx
            if big and rng.random() < 0.3:  # centred title
                x_off = mx + max(0, (text_w - int(max(f.getlength(l) for l in lines))) // 2)
            x1 = x_off + int(max(f.getlength(l) for l in lines))
            for i, l in enumerate(lines):
                draw_text(draw, gdraw, (x_off, y + i * lh), l, f, ink, drawn)
            md = ("# " if big else "## ") + " ".join(lines)
            blocks.append(Block(kind, md, (x_off, y, x1, y + h)))
            y += h + gap
        elif kind == "text":
            text = _paragraph(rng, rng.randint(6, max_words))
            lines = _wrap(text, body, text_w)
            while lines and not fits(line_h * len(lines)):
                lines = lines[:-1]
            if not lines:
                break
            # never cut a paragraph in the middle of a sentence: truth is exactly what is drawn
            for i, l in enumerate(lines):
                draw_text(draw, gdraw, (mx, y + i * line_h), l, body, ink, drawn)
            h = line_h * len(lines)
            x1 = mx + int(max(body.getlength(l) for l in lines))
            blocks.append(Block("text", " ".join(lines), (mx, y, x1, y + h)))
            y += h + gap
        elif kind == "list":
            n = rng.randint(2, 4)
            ordered = rng.random() < 0.4
            items = [_sentence(rng, rng.randint(2, 6)).rstrip(".?!") for _ in range(n)]
            indent = int(fs * 1.6)
            if not fits(line_h * n):
                break
            md_lines, x1 = [], mx
            for i, it in enumerate(items):
                it = _wrap(it, body, text_w - indent)[0]
                mark = f"{i + 1}." if ordered else "\u2022"
                draw_text(draw, gdraw, (mx, y + i * line_h), mark, body, ink, drawn)
                draw_text(draw, gdraw, (mx + indent, y + i * line_h), it, body, ink, drawn)
                x1 = max(x1, mx + indent + int(body.getlength(it)))
                md_lines.append((f"{i + 1}. " if ordered else "- ") + it)
            h = line_h * n
            blocks.append(Block("text", "\n".join(md_lines), (mx, y, x1, y + h)))
            y += h + gap
        else:  # table
            rows, cols = rng.randint(2, 4), rng.randint(2, 4)
            cells = [
                [(_title(rng, 1, 1) if r == 0 else (_number(rng) if rng.random() < 0.4 else _word(rng, 0)))
                 for _ in range(cols)]
                for r in range(rows)
            ]
            pad = int(fs * 0.5)
            widths = [max(int(body.getlength(cells[r][c])) for r in range(rows)) + 2 * pad for c in range(cols)]
            if sum(widths) > text_w:
                continue
            rh = int(line_h * 1.3)
            h = rh * rows
            if not fits(h):
                break
            lw = max(1, fs // 14)
            x = mx
            xs = [x]
            for wdt in widths:
                x += wdt
                xs.append(x)
            for r in range(rows + 1):
                draw.line([(xs[0], y + r * rh), (xs[-1], y + r * rh)], fill=ink, width=lw)
            for xx in xs:
                draw.line([(xx, y), (xx, y + h)], fill=ink, width=lw)
            for r in range(rows):
                for c in range(cols):
                    xy = (xs[c] + pad, y + r * rh + (rh - fs) // 2 - fs // 8)
                    draw_text(draw, gdraw, xy, cells[r][c], body, ink, drawn)
            md = "<table>" + "".join(
                "<tr>" + "".join(f"<td>{cells[r][c]}</td>" for c in range(cols)) + "</tr>" for r in range(rows)
            ) + "</table>"
            blocks.append(Block("table", md, (xs[0], y, xs[-1], y + h)))
            y += h + gap

    if not blocks:  # always at least one line of text
        text = _sentence(rng, 3)
        draw_text(draw, gdraw, (mx, my), text, body, ink, drawn)
        blocks.append(Block("text", text, (mx, my, mx + int(body.getlength(text)), my + line_h)))

    # degradations: slight rotation, blur, noise
    if rng.random() < 0.4:
        angle = rng.uniform(-0.8, 0.8)
        img = img.rotate(angle, resample=Image.BICUBIC, fillcolor=bg)
        glyph_img = glyph_img.rotate(angle, resample=Image.NEAREST, fillcolor=0)
        drawn = [(text, _rotated(centres, angle, W, H)) for text, centres in drawn]
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9) * scale))
    if rng.random() < 0.4:
        nrng = np.random.default_rng(seed & 0xFFFFFFFF)
        a = np.asarray(img, dtype=np.int16) + nrng.normal(0, rng.uniform(2, 8), (H, W)).astype(np.int16)
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    img = img.convert("RGB")

    md = "\n\n".join(b.markdown for b in blocks)
    g = []
    for b in blocks:
        x0, y0, x1, y1 = b.box
        c = [round(x0 / W * 999), round(y0 / H * 999), round(min(x1, W) / W * 999), round(min(y1, H) / H * 999)]
        label = b.kind if b.kind in ("title", "sub_title", "table") else "text"
        g.append(f"<|ref|>{label}<|/ref|><|det|>[[{c[0]}, {c[1]}, {c[2]}, {c[3]}]]<|/det|>\n{b.markdown}")
    grounding = "\n\n".join(g)
    return Page(img, md, grounding, blocks, glyph_img, locate(md, drawn), locate(grounding, drawn))


def make_card(seed: int) -> Page:
    """A curriculum page: 1-4 short lines in a large font (40-70 px as seen in the 1024 view), nothing else.
    Reading these needs no layout, only the link between glyphs and tokens, which full pages learn slowly."""
    rng = random.Random(seed)
    W = rng.randint(700, 1500)
    H = int(W * rng.uniform(0.7, 1.6))
    scale = max(W, H) / 1024.0
    fs = max(10, int(round(rng.uniform(40.0, 70.0) * scale)))
    f = font(fs, bold=rng.random() < 0.3)
    bg, ink = rng.randint(238, 255), rng.randint(0, 50)
    img = Image.new("L", (W, H), bg)
    draw = ImageDraw.Draw(img)
    glyph_img = Image.new("L", (W, H), 0)
    gdraw = ImageDraw.Draw(glyph_img)
    drawn: Drawn = []
    mx, y = int(W * rng.uniform(0.04, 0.2)), int(H * rng.uniform(0.04, 0.3))
    lines = []
    for _ in range(rng.randint(1, 4)):
        text = " ".join(_word(rng) for _ in range(rng.randint(1, 3)))
        if mx + f.getlength(text) > W - 10 or y + fs * 1.4 > H - 10:
            break
        draw_text(draw, gdraw, (mx, y), text, f, ink, drawn)
        lines.append(text)
        y += int(fs * 1.4)
    if not lines:
        lines = ["a"]
        draw_text(draw, gdraw, (mx, 10), "a", f, ink, drawn)
    img = img.convert("RGB")
    md = " ".join(lines)
    box = (mx, 0, W, y)
    c = [round(box[0] / W * 999), 0, 999, round(min(y, H) / H * 999)]
    grounding = f"<|ref|>text<|/ref|><|det|>[[{c[0]}, {c[1]}, {c[2]}, {c[3]}]]<|/det|>\n{md}"
    return Page(img, md, grounding, [Block("text", md, box)], glyph_img, locate(md, drawn), locate(grounding, drawn))


if __name__ == "__main__":  # python gen.py SEED OUT.png  -> writes OUT.png and OUT.md
    import sys

    p = make_page(int(sys.argv[1]))
    out = Path(sys.argv[2])
    p.image.save(out)
    out.with_suffix(".md").write_text(p.markdown + "\n")
    print(p.markdown)
    print("----")
    print(p.grounding)
