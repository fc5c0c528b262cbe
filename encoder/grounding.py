"""Grounding output of DeepSeek-OCR: parse ``<|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|>``
regions out of the generated text, turn the text into clean markdown, and the boxes into pixels.

Coordinates are normalised to 0..999 of the original image: pixel = v / 999 * W (x) or * H (y).

Clean markdown follows the reference post-processing (DeepSeek-OCR ``run_dpsk_ocr_image.py``): a
complete ref+det group is removed (its label is a region type, not content); a group labelled
``image`` becomes a picture link ``![](images/N.jpg)`` (N counts image regions from 0);
``\\coloneqq`` / ``\\eqqcolon`` become ``:=`` / ``=:``. On top of that, runs of three or more newlines
are collapsed to two and the text is stripped of leading and trailing blank lines.

The parser is a streaming state machine (``GroundingParser.feed``/``finish``): the same output for
any split of the input into chunks, so the CLI can stream clean markdown as tokens arrive. It never
raises on odd input; malformed pieces are handled as follows:

* a ``<|ref|>`` never closed by ``<|/ref|>`` within 256 characters: the tag is dropped, the text kept;
* nested ``<|ref|>``: the text of the outer one is kept as text, the inner one is the label;
* ``<|ref|>..<|/ref|>`` not followed by ``<|det|>``: the tags are dropped, the label kept as text;
* ``<|det|>`` whose content stops looking like a box list (text before the first ``[``, a line
  break inside the brackets, text after the closing ``]]``) or runs past 4096 characters: the region ends there (boxes parsed so far are kept) and the
  rest is text; a ``<|det|>`` without a preceding ref is a region with no label;
* stray ``<|/ref|>``, ``<|/det|>``, ``<|grounding|>`` and the BOS/EOS/pad texts are dropped;
* a group cut off by the end of the text (a page that hit the token limit) gives a region with the
  boxes complete so far and no markdown; a dangling partial tag at the very end is dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterable

REF_O, REF_C, DET_O, DET_C = "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>"
DROPPED = ("<|grounding|>", "<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>", "<｜▁pad▁｜>")
REPLACEMENTS = {"\\coloneqq": ":=", "\\eqqcolon": "=:"}
IMAGE_LABELS = frozenset({"image"})
DEFAULT_IMAGE_LINK = "![](images/{index}.jpg)\n"
MAX_LABEL = 256
MAX_DET = 4096

_TAGS = (REF_O, REF_C, DET_O, DET_C)
_NUM = r"\s*(-?\d+(?:\.\d*)?)\s*"
_BOX_RE = re.compile(r"\[" + ",".join([_NUM] * 4) + r"\]")


@dataclass
class Region:
    label: str | None
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # 0..999, x1 <= x2, y1 <= y2
    text: str = ""  # clean markdown that followed the region (up to the next one)
    complete: bool = True  # False: cut off (no <|/det|> or an unterminated box list)
    image_index: int | None = None  # for image regions: N of images/N.jpg

    def pixel_boxes(self, width: int, height: int) -> list[tuple[float, float, float, float]]:
        return [to_pixels(b, width, height) for b in self.boxes]


def to_pixels(box: tuple[float, float, float, float], width: int, height: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (x1 / 999.0 * width, y1 / 999.0 * height, x2 / 999.0 * width, y2 / 999.0 * height)


def parse_boxes(det: str) -> list[tuple[int, int, int, int]]:
    """Every ``[a, b, c, d]`` in the text, clamped to 0..999 and ordered; anything else is ignored."""
    out = []
    for m in _BOX_RE.finditer(det):
        try:
            v = [min(max(int(round(float(g))), 0), 999) for g in m.groups()]
        except (ValueError, OverflowError):
            continue
        x1, x2 = sorted((v[0], v[2]))
        y1, y2 = sorted((v[1], v[3]))
        out.append((x1, y1, x2, y2))
    return out


class _Lexer:
    """Splits a character stream into text and tag events, holding back a possible partial tag."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self.re = re.compile("|".join(re.escape(p) for p in sorted(self.patterns, key=len, reverse=True)))
        self.prefixes = frozenset(p[:k] for p in self.patterns for k in range(1, len(p)))
        self.maxlen = max(len(p) for p in self.patterns)
        self.buf = ""

    def feed(self, chunk: str) -> list[tuple[str, str]]:
        self.buf += chunk
        events: list[tuple[str, str]] = []
        pos = 0
        for m in self.re.finditer(self.buf):
            if m.start() > pos:
                events.append(("text", self.buf[pos:m.start()]))
            events.append(("tag", m.group()))
            pos = m.end()
        rest = self.buf[pos:]
        hold = 0
        for k in range(min(len(rest), self.maxlen - 1), 0, -1):
            if rest[-k:] in self.prefixes:
                hold = k
                break
        if len(rest) > hold:
            events.append(("text", rest[:len(rest) - hold]))
        self.buf = rest[len(rest) - hold:]
        return events

    def finish(self) -> str:
        rest, self.buf = self.buf, ""
        return rest


class _Tidy:
    """Collapses 3+ newlines to 2, drops leading blank lines and holds trailing newlines until more
    text comes (finish() drops them); chunk-invariant."""

    def __init__(self) -> None:
        self.started = False
        self.nl = 0  # held newlines
        self.ws = ""  # held spaces/tabs after held newlines (or at the start)

    def feed(self, s: str) -> str:
        out = []
        for run in re.findall(r"\n+|[ \t\r]+|[^\n \t\r]+", s):
            if run[0] == "\n":
                self.nl += len(run)
                self.ws = ""  # trailing spaces on a blank line are dropped
            elif run[0] in " \t\r":
                self.ws += run
            else:
                if self.started:
                    out.append("\n" * min(self.nl, 2))
                    out.append(self.ws)
                elif self.nl == 0:
                    out.append(self.ws)  # indentation of the very first line is kept
                self.nl, self.ws = 0, ""
                self.started = True
                out.append(run)
        return "".join(out)

    def finish(self) -> str:
        self.nl, self.ws = 0, ""
        return "\n" if self.started else ""


class GroundingParser:
    """Streaming parser. ``feed(chunk)`` returns the clean markdown that is certain so far;
    ``finish()`` the rest. ``regions`` collects the grounding regions. With ``raw=True`` the text
    is passed through unchanged (tags kept) and regions are still collected."""

    def __init__(self, image_link: str | None = DEFAULT_IMAGE_LINK, raw: bool = False, tidy: bool = True) -> None:
        self.image_link = image_link
        self.raw = raw
        self.regions: list[Region] = []
        self._lex = _Lexer(_TAGS + DROPPED + tuple(REPLACEMENTS))
        self._tidy = _Tidy() if (tidy and not raw) else None
        self._state = "text"  # text | label | after_ref | det
        self._label = ""
        self._ws = ""  # whitespace after <|/ref|>
        self._det = ""
        self._depth = 0
        self._opened = False  # a '[' seen in the det
        self._closed = False  # the outer list closed
        self._n_images = 0
        self._current: Region | None = None  # the region whose following text is being collected
        self._finished = False

    # ---- output helpers ----
    def _emit(self, out: list[str], s: str) -> None:
        if not s:
            return
        if self._current is not None:
            self._current.text += s
        out.append(self._tidy.feed(s) if self._tidy else s)

    def _close_region(self, out: list[str], complete: bool) -> None:
        label = self._label.strip()
        boxes = parse_boxes(self._det)
        region = Region(label=label or None, boxes=boxes, complete=complete)
        self.regions.append(region)
        self._current = region
        self._label, self._det = "", ""
        self._depth, self._opened, self._closed = 0, False, False
        self._state = "text"
        if region.label is not None and region.label.lower() in IMAGE_LABELS:
            region.image_index = self._n_images
            self._n_images += 1
            if self.image_link and not self.raw:
                self._emit(out, self.image_link.format(index=region.image_index))

    # ---- the state machine ----
    def feed(self, chunk: str) -> str:
        if self._finished:
            raise RuntimeError("GroundingParser.feed after finish")
        out: list[str] = []
        if self.raw:
            # pass through; regions are still parsed by a shadow parser
            if not hasattr(self, "_shadow"):
                self._shadow = GroundingParser(image_link=None, raw=False, tidy=False)
            self._shadow.feed(chunk)
            self.regions = self._shadow.regions
            return chunk
        for kind, val in self._lex.feed(chunk):
            self._event(out, kind, val)
        return "".join(out)

    def finish(self) -> str:
        if self._finished:
            return ""
        self._finished = True
        if self.raw:
            if hasattr(self, "_shadow"):
                self._shadow.finish()
                self.regions = self._shadow.regions
            return ""
        out: list[str] = []
        rest = self._lex.finish()
        # a partial tag at the very end is dropped; partial replacement text is kept
        if rest and not any(p.startswith(rest) for p in _TAGS + DROPPED):
            self._event(out, "text", rest)
        if self._state == "label":
            pass  # cut-off label: dropped
        elif self._state == "after_ref":
            pass  # label with no det at the end: dropped
        elif self._state == "det":
            self._close_region(out, complete=self._det_balanced())
        if self._tidy:
            out.append(self._tidy.finish())
        return "".join(out)

    def _event(self, out: list[str], kind: str, val: str) -> None:
        st = self._state
        if kind == "text":
            if st == "text":
                self._emit(out, val)
            elif st == "label":
                self._label += val
                if len(self._label) > MAX_LABEL:
                    self._state = "text"
                    label, self._label = self._label, ""
                    self._emit(out, label)
            elif st == "after_ref":
                if val.strip() == "":
                    self._ws += val
                else:
                    self._state = "text"
                    label, ws, self._label, self._ws = self._label, self._ws, "", ""
                    self._emit(out, label + ws + val)
            else:  # det
                self._det_text(out, val)
            return
        tag = val
        if tag in REPLACEMENTS:
            self._event(out, "text", REPLACEMENTS[tag] if st == "text" else tag)
            return
        if tag in DROPPED:
            return
        if st == "text":
            if tag == REF_O:
                self._state, self._label = "label", ""
            elif tag == DET_O:
                self._start_det(label="")
            # stray closing tags: dropped
        elif st == "label":
            if tag == REF_O:  # nested: the outer text is content
                label, self._label = self._label, ""
                self._emit(out, label)
            elif tag == REF_C:
                self._state, self._ws = "after_ref", ""
            elif tag == DET_O:  # <|/ref|> missing
                self._start_det(self._label)
            # DET_C inside a label: dropped
        elif st == "after_ref":
            if tag == DET_O:
                self._start_det(self._label)
            elif tag == REF_O:
                label, ws = self._label, self._ws
                self._state, self._label, self._ws = "label", "", ""
                self._emit(out, label + ws)
            # stray closers: dropped
        else:  # det
            if tag == DET_C:
                self._close_region(out, complete=self._det_balanced())
            elif tag == REF_O:
                self._close_region(out, complete=False)
                self._state, self._label = "label", ""
            # nested <|det|> / stray <|/ref|>: dropped

    def _start_det(self, label: str) -> None:
        self._state, self._label, self._ws = "det", label, ""
        self._det, self._depth, self._opened, self._closed = "", 0, False, False

    def _det_balanced(self) -> bool:
        return self._opened and self._closed

    def _det_text(self, out: list[str], val: str) -> None:
        for i, ch in enumerate(val):
            if self._closed:
                if ch.isspace():
                    self._det += ch
                    continue
                # text after the closed box list without <|/det|>
                self._close_region(out, complete=True)
                self._event(out, "text", val[i:])
                return
            bad = (len(self._det) >= MAX_DET
                   or (not self._opened and ch not in "[ \t\r\n")  # text before any '['
                   or (self._opened and ch == "\n"))  # a box list never spans lines
            if bad:
                self._close_region(out, complete=False)
                self._event(out, "text", val[i:])
                return
            self._det += ch
            if ch == "[":
                self._depth += 1
                self._opened = True
            elif ch == "]":
                self._depth -= 1
                if self._depth <= 0:
                    self._closed = True


def parse(text: str, raw: bool = False, image_link: str | None = DEFAULT_IMAGE_LINK) -> tuple[str, list[Region]]:
    """(clean markdown or raw text, regions) of a whole generated text."""
    p = GroundingParser(image_link=image_link, raw=raw)
    s = p.feed(text) + p.finish()
    return s, p.regions


def to_markdown(text: str, image_link: str | None = DEFAULT_IMAGE_LINK) -> str:
    return parse(text, image_link=image_link)[0]


def regions_json(regions: list[Region], width: int, height: int) -> list[dict]:
    out = []
    for r in regions:
        out.append({
            "label": r.label,
            "boxes": [[round(v, 2) for v in to_pixels(b, width, height)] for b in r.boxes],
            "boxes_999": [list(b) for b in r.boxes],
            "text": r.text.strip(),
            "complete": r.complete,
            **({"image_index": r.image_index} if r.image_index is not None else {}),
        })
    return out


def page_json(text: str, raw_text: str, regions: list[Region], width: int, height: int, **extra) -> dict:
    return {"text": text, "raw": raw_text, "width": width, "height": height,
            "regions": regions_json(regions, width, height), **extra}


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=1)
