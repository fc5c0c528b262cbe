"""Tables in OTSL markup (PaddleOCR-VL's table output) as markdown or HTML tables.

OTSL, the "Optimized Table Structure Language" (Lysak et al., IBM Research, "Optimized Table Tokenization for
Table Structure Recognition", ICDAR 2023, arXiv:2305.03393), writes a table row by row as one marker per grid
slot, a cell's text following its marker:

- ``<fcel>`` a cell with text after it, ``<ecel>`` an empty cell (the paper's C);
- ``<lcel>`` merged with the slot to its left (L), ``<ucel>`` merged with the slot above (U), ``<xcel>`` merged
  both left and up (X: inside a 2-D span);
- ``<nl>`` the end of a row (NL).

PaddleOCR-VL's table recognition emits exactly these six (PaddleX, ``paddlex/inference/pipelines/paddleocr_vl/
uilts.py: convert_otsl_to_html``, "OTSL v1.0, only six tags"). docling (docling-core ``TableToken``) adds header
markers that start a cell like ``<fcel>``: ``<ched>`` (column header), ``<rhed>`` (row header), ``<srow>``
(section row); its DocTags wrap a table as ``<otsl>``...``</otsl>`` with ``<loc_N>`` location tokens and an
optional ``<caption>``...``</caption>``. All of these are read here; ``<loc_N>`` tokens inside a table are
dropped. (transformers' PaddleOCR-VL files, processor and image processors, name no table markers.)

``convert_tables(text)`` replaces every table in a model's output with a markdown table when no cell spans (and
column headers, if any, are all in the first row), else an HTML ``<table>`` with ``colspan``/``rowspan``
(``prefer_html=True``: always HTML). HTML is one line, as PaddleX writes it, with ``<th>`` for ``ched``/``rhed``
cells and the caption as ``<caption>``; in markdown the caption is a line above the table. Everything else (text,
LaTeX formulas) is left as it is, apart from the blank lines put around a table so that it stands as its own
block. A table is either an ``<otsl>`` block (to
``</otsl>``, or to the end of the text) or a run of markers starting at a cell marker: it goes on while markers
follow, and ends after a ``<nl>`` followed by other text, at a blank line inside a cell's text, or, for the last
cell when no marker follows, at the end of its line. A marker cut off by the end of the text (the ``-n`` limit:
``<fc``) is dropped.

Malformed tables never raise: ragged rows are padded with empty cells (a table so ragged that padding would
more than double it is written as HTML row by row as it came), a span marker with nothing to merge into
(``<lcel>`` at a row's start, ``<ucel>`` in the first row, a span that would overlap another) becomes a cell of
its own, text after a span marker joins the cell it belongs to, and empty rows are skipped. Cell text is stripped
and escaped: ``|`` as ``\\|`` in markdown, ``& < >`` as entities in HTML; a newline in a cell becomes ``<br>``.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

__all__ = ["Cell", "parse_otsl", "convert_tables"]

_ANCHORS = ("fcel", "ecel", "ched", "rhed", "srow")
_SPANS = ("lcel", "ucel", "xcel")
_CELL_RE = re.compile(r"<(fcel|ecel|lcel|ucel|xcel|ched|rhed|srow)>")
_MARKER_RE = re.compile(r"<(fcel|ecel|lcel|ucel|xcel|ched|rhed|srow|nl)>")
_LOC_RE = re.compile(r"<loc_\d+>")
_CAPTION_RE = re.compile(r"<caption>(.*?)(?:</caption>|(?=<(?:fcel|ecel|lcel|ucel|xcel|ched|rhed|srow|nl)>)|\Z)",
                         re.S)   # an unclosed caption ends at the first marker
_BLANK_LINE_RE = re.compile(r"\n[ \t]*\n")
_KNOWN_TAGS = tuple(f"<{m}>" for m in _ANCHORS + _SPANS + ("nl", "otsl", "caption")) + (
    "</otsl>", "</caption>", "<loc_")
# Grid slots. Past this, or when padding ragged rows would more than double the markers, a table is degenerate:
# it is written row by row as it came (HTML), spans not resolved.
_MAX_GRID = 1 << 20


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, top-left slot and extent. ``kind`` is the marker that started it: ``fcel``,
    ``ecel``, ``ched``, ``rhed`` or ``srow`` (a span marker with nothing to merge into counts as ``fcel`` or
    ``ecel``)."""
    text: str
    row: int
    col: int
    rowspan: int = 1
    colspan: int = 1
    kind: str = "fcel"

    @property
    def header(self) -> bool:
        return self.kind in ("ched", "rhed")


@dataclass(frozen=True)
class _Table:
    rows: list[list[Cell]]      # the cells starting in each grid row, left to right
    ncols: int
    caption: str


def _drop_partial_marker(text: str) -> str:
    """A marker cut off by the end of the output (``...<fc``): drop it."""
    i = text.rfind("<")
    if i >= 0 and len(text) - i >= 2 and ">" not in text[i:]:
        tail = text[i:]
        if any(tag.startswith(tail) for tag in _KNOWN_TAGS):
            return text[:i]
    return text


def _tokens(segment: str) -> tuple[list[list[tuple[str, str]]], str]:
    """Rows of (marker, text) from one table's markup, and its caption (``<caption>``, and any text before the
    first marker)."""
    captions: list[str] = []
    m = _CAPTION_RE.search(segment)
    if m is not None:
        captions.append(m.group(1).strip())
        segment = segment[:m.start()] + segment[m.end():]
    segment = _LOC_RE.sub("", segment.replace("<otsl>", "").replace("</otsl>", ""))
    rows: list[list[tuple[str, str]]] = []
    row: list[tuple[str, str]] = []
    matches = list(_MARKER_RE.finditer(segment))
    lead = segment[:matches[0].start() if matches else len(segment)]
    captions.append(lead.replace("<caption>", "").replace("</caption>", "").strip())
    caption = " ".join(c for c in captions if c)
    for i, mm in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(segment)
        kind = mm.group(1)
        if kind == "nl":
            if row:
                rows.append(row)
            row = []
            continue
        row.append((kind, segment[mm.end():end].strip()))
    if row:
        rows.append(row)
    return rows, caption


def _resolve(token_rows: list[list[tuple[str, str]]]) -> tuple[list[list[Cell]], int]:
    """Cells with their spans from the marker grid (ragged rows padded with empty cells)."""
    nrows = len(token_rows)
    ncols = max((len(r) for r in token_rows), default=0)
    if _degenerate(token_rows, ncols):
        return [[Cell(text, r, c, kind=_own_kind(kind, text)) for c, (kind, text) in enumerate(row)]
                for r, row in enumerate(token_rows)], ncols
    grid = [row + [("ecel", "")] * (ncols - len(row)) for row in token_rows]
    taken = [[False] * ncols for _ in range(nrows)]
    rows: list[list[Cell]] = [[] for _ in range(nrows)]
    for r in range(nrows):
        for c in range(ncols):
            if taken[r][c]:
                continue
            colspan = 1
            while c + colspan < ncols and not taken[r][c + colspan] and grid[r][c + colspan][0] in (
                    "lcel", "xcel"):
                colspan += 1
            rowspan = 1
            while r + rowspan < nrows and _spannable(grid[r + rowspan], taken[r + rowspan], c, colspan):
                rowspan += 1
            texts: list[str] = []
            for rr in range(r, r + rowspan):
                for cc in range(c, c + colspan):
                    taken[rr][cc] = True
                    if grid[rr][cc][1]:
                        texts.append(grid[rr][cc][1])   # text after a span marker joins its cell
            kind, text = grid[r][c][0], " ".join(texts)
            rows[r].append(Cell(text, r, c, rowspan, colspan, _own_kind(kind, text)))
    return rows, ncols


def _degenerate(token_rows: list[list[tuple[str, str]]], ncols: int) -> bool:
    slots = len(token_rows) * ncols
    return slots > _MAX_GRID or slots > 2 * sum(map(len, token_rows)) + 1024


def _spannable(row: list[tuple[str, str]], taken: list[bool], c: int, colspan: int) -> bool:
    """Whether the slots c..c+colspan-1 of a row continue the span above: a U or X first, X (or any span marker)
    after it, none of them already taken."""
    if row[c][0] not in ("ucel", "xcel"):
        return False
    return all(not taken[cc] and (cc == c or row[cc][0] in _SPANS) for cc in range(c, c + colspan))


def _own_kind(kind: str, text: str) -> str:
    if kind in _SPANS:           # a span marker with nothing to merge into: a cell of its own
        return "fcel" if text else "ecel"
    return kind


def _parse(segment: str) -> _Table:
    token_rows, caption = _tokens(segment)
    rows, ncols = _resolve(token_rows)
    return _Table(rows, ncols, caption)


def parse_otsl(text: str) -> list[list[Cell]]:
    """The cells of one table in OTSL markup (``<otsl>`` wrapper, ``<loc_N>`` and caption optional), row by row:
    each grid row lists the cells that start in it, left to right. Text before the first marker is ignored."""
    return _parse(_drop_partial_marker(text)).rows


# --- writing ---------------------------------------------------------------------------------------------------

def _markdown_ok(table: _Table) -> bool:
    """A full grid of 1x1 cells (no spans; not a degenerate table left ragged), column headers only in row 0."""
    for row in table.rows:
        if len(row) != table.ncols or any(cell.rowspan > 1 or cell.colspan > 1 for cell in row):
            return False
    return all(cell.row == 0 for row in table.rows for cell in row if cell.kind == "ched")


def _md_text(text: str) -> str:
    return text.replace("\\|", "|").replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")


def _to_markdown(table: _Table) -> str:
    grid = [[""] * table.ncols for _ in table.rows]
    for row in table.rows:
        for cell in row:
            grid[cell.row][cell.col] = _md_text(cell.text)
    lines = ["| " + " | ".join(grid[0]) + " |", "|" + " --- |" * table.ncols]
    lines += ["| " + " | ".join(row) + " |" for row in grid[1:]]
    text = "\n".join(lines)
    return f"{_md_text(table.caption)}\n\n{text}" if table.caption else text


def _html_text(text: str) -> str:
    return html.escape(text, quote=False).replace("\r\n", "\n").replace("\n", "<br>")


def _to_html(table: _Table) -> str:
    parts = ["<table>"]
    if table.caption:
        parts.append(f"<caption>{_html_text(table.caption)}</caption>")
    for row in table.rows:
        parts.append("<tr>")
        for cell in row:
            tag = "th" if cell.header else "td"
            attrs = (f' rowspan="{cell.rowspan}"' if cell.rowspan > 1 else "") + (
                f' colspan="{cell.colspan}"' if cell.colspan > 1 else "")
            parts.append(f"<{tag}{attrs}>{_html_text(cell.text)}</{tag}>")
        parts.append("</tr>")
    parts.append("</table>")
    return "".join(parts)


def _render(segment: str, prefer_html: bool) -> str:
    table = _parse(segment)
    if table.ncols == 0:           # no cells: only a caption, if anything, is left
        if not table.caption:
            return ""
        return _to_html(table) if prefer_html else _md_text(table.caption)
    if prefer_html or not _markdown_ok(table):
        return _to_html(table)
    return _to_markdown(table)


# --- finding tables in text ------------------------------------------------------------------------------------

def _run_end(text: str, start: int) -> int:
    """The end of the bare run of markers that starts with the cell marker at ``start``."""
    m = _MARKER_RE.match(text, start)
    assert m is not None
    while True:
        nxt = _MARKER_RE.search(text, m.end())
        stop = nxt.start() if nxt else len(text)
        between = text[m.end():stop]
        if m.group(1) == "nl":
            if nxt is None or _LOC_RE.sub("", between).strip():
                return m.end()
        else:
            blank = _BLANK_LINE_RE.search(between)
            if blank is not None:
                return m.end() + blank.start()
            if nxt is None:
                newline = between.find("\n")
                return m.end() + newline if newline >= 0 else len(text)
        m = nxt


def _segments(text: str) -> list[tuple[bool, str]]:
    """The text cut into (is_table, piece)."""
    pieces: list[tuple[bool, str]] = []
    pos = 0
    wrapped = bare_at = -2           # the next "<otsl>" / bare cell marker at or after pos (-1: none)
    while pos < len(text):
        if wrapped != -1 and wrapped < pos:
            wrapped = text.find("<otsl>", pos)
        if bare_at != -1 and bare_at < pos:
            bare = _CELL_RE.search(text, pos)
            bare_at = bare.start() if bare else -1
        if wrapped < 0 and bare_at < 0:
            break
        if wrapped >= 0 and (bare_at < 0 or wrapped <= bare_at):
            start = wrapped
            close = text.find("</otsl>", start)
            end = close + len("</otsl>") if close >= 0 else len(text)
            body = text[start + len("<otsl>"):close if close >= 0 else len(text)]
        else:
            start = bare_at
            end = _run_end(text, start)
            body = text[start:end]
        if end == len(text):
            body = _drop_partial_marker(body)
        pieces.append((False, text[pos:start]))
        pieces.append((True, body))
        pos = end
    pieces.append((False, text[pos:]))
    return pieces


def _lead(s: str) -> str:
    """Newlines to add before ``s`` so that it starts a new block after a table."""
    return "" if s.startswith("\n\n") else "\n" if s.startswith("\n") else "\n\n"


def _trail(s: str) -> str:
    """Newlines to add after ``s`` so that a table after it starts a new block."""
    return "" if s.endswith("\n\n") else "\n" if s.endswith("\n") else "\n\n"


def convert_tables(text: str, *, prefer_html: bool = False) -> str:
    """``text`` with every OTSL table in it written as a markdown table (no spans) or an HTML table (spans, or
    ``prefer_html``); the rest of the text is kept. Never raises for any string."""
    if not isinstance(text, str):
        raise TypeError(f"convert_tables() needs a str, not {type(text).__name__}")
    if "<" not in text:
        return text
    out: list[str] = []
    has_content = False      # non-blank text already written
    after_table = False
    for is_table, piece in _segments(text):
        if is_table:
            rendered = _render(piece, prefer_html)
            if not rendered:
                continue
            if has_content:
                out.append(_trail(out[-1]) if out else "")
            out.append(rendered)
            has_content, after_table = True, True
        elif piece:
            if after_table and piece.strip():
                piece = _lead(piece) + piece
            out.append(piece)
            has_content = has_content or bool(piece.strip())
            after_table = after_table and not piece.strip()
    return "".join(out)
