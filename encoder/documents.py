"""Inputs -> documents -> pages.

An input is an image file, a PDF (``doc.pdf``, or ``doc.pdf:3-7,12`` for some of its pages), a directory (the
PDFs and images directly inside it, sorted by name; hidden files skipped) or a glob pattern (``'scans/**/*.pdf'``,
quoted so that the shell leaves it; ``**`` descends into folders), expanded in the same way. A file is a PDF
when its name ends in ``.pdf`` (any case) or it starts with ``%PDF-``; in a directory or a glob only the file
names count (``.pdf`` and the image suffixes below).

Page ranges: ``N``, ``N-M`` and ``N-`` (N to the last page), separated by commas; pages count from 1. A path
that exists as it is written is never split at its last ``:``. A malformed range (``doc.pdf:0``,
``doc.pdf:9-3``) is a ``RangeSyntaxError`` (a usage error: nothing runs); a range past a PDF's last page, a PDF
that cannot be opened (missing, empty, encrypted, damaged, no pages), an empty directory and a glob that matches
nothing are ``InputError`` lines for that input only: the other inputs are still processed.

The same PDF named twice (``doc.pdf:1-2 doc.pdf:9``) is one document with the union of the pages. Each
document gets an output name: its file's stem, with ``-2``, ``-3`` ... added where stems repeat.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .pdf import PdfDocument, PdfError, RenderedPage

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff", ".bmp", ".webp", ".gif",
                            ".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".j2k"})
PDF_SUFFIX = ".pdf"
_RANGE_CHARS = re.compile(r"[0-9,\- ]+")
_GLOB_MAGIC = re.compile(r"[*?[]")
LISTED = 20  # names listed per directory or glob on stderr


class InputError(ValueError):
    """One input that cannot be used (the message names it); the others are still processed."""


class RangeSyntaxError(ValueError):
    """A page range that is not well formed: a usage error."""


PageRange = tuple[int, "int | None"]  # first, last (None: to the end)


def parse_ranges(spec: str, arg: str) -> tuple[PageRange, ...]:
    """``3-7,12,20-`` -> ((3, 7), (12, 12), (20, None)). Pages count from 1; a range may not run backwards."""
    out: list[PageRange] = []
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*(-)\s*(\d*))?", part)
        if not m:
            raise RangeSyntaxError(f"{arg}: {part!r} is not a page or a range of pages (use N, N-M or N-, "
                                   "separated by commas)" if part else f"{arg}: an empty page range")
        first = int(m.group(1))
        last: int | None = first if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
        if first < 1 or (last is not None and last < 1):
            raise RangeSyntaxError(f"{arg}: page numbers start at 1 (got {part})")
        if last is not None and last < first:
            raise RangeSyntaxError(f"{arg}: the range {part} runs backwards (did you mean {last}-{first}?)")
        out.append((first, last))
    return tuple(out)


def split_input(arg: str) -> tuple[str, tuple[PageRange, ...] | None]:
    """(path, page ranges or None for all pages) of one input argument."""
    if os.path.lexists(arg):
        return arg, None
    head, sep, tail = arg.rpartition(":")
    if not sep or not head:
        return arg, None
    if tail == "":
        raise RangeSyntaxError(f"{arg}: no pages after ':' (use {head}:N, {head}:N-M or {head}:N-)")
    if not _RANGE_CHARS.fullmatch(tail):
        return arg, None
    return head, parse_ranges(tail, arg)


def is_pdf(path: str) -> bool:
    """A name ending in .pdf, or a file whose first 1024 bytes hold the %PDF- header."""
    if path.lower().endswith(PDF_SUFFIX):
        return True
    try:
        with open(path, "rb") as f:
            return b"%PDF-" in f.read(1024)
    except OSError:
        return False


def _kind_by_name(name: str) -> str | None:
    suffix = os.path.splitext(name)[1].lower()
    return "pdf" if suffix == PDF_SUFFIX else "image" if suffix in IMAGE_SUFFIXES else None


@dataclass
class Document:
    """One input file and the pages of it to do (numbers from 1; an image has one page)."""

    path: str
    kind: str  # "pdf" | "image"
    pages: tuple[int, ...]
    n_pages: int
    arg: str = ""  # the argument that named it
    name: str = ""  # the output name (unique within a run)

    def label(self, number: int) -> str:
        """How messages and page markers name one of its pages: the image's path, or ``doc.pdf:N``."""
        return self.path if self.kind == "image" else f"{self.path}:{number}"


@dataclass
class Expansion:
    documents: list[Document] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one line per input (or document) that cannot be used
    notes: list[str] = field(default_factory=list)  # what each directory or glob expanded to
    document_mode: bool = False  # some input is a PDF, a directory, a glob or has a page range

    @property
    def n_pages(self) -> int:
        return sum(len(d.pages) for d in self.documents)


def _pages(ranges: tuple[PageRange, ...] | None, n_pages: int, path: str) -> tuple[int, ...]:
    if ranges is None:
        return tuple(range(1, n_pages + 1))
    out: set[int] = set()
    for first, last in ranges:
        end = n_pages if last is None else last
        if first > n_pages or end > n_pages:
            bad = first if first > n_pages else end
            raise InputError(f"{path}: page {bad} is past the end (the PDF has {n_pages} page"
                             f"{'s' if n_pages != 1 else ''})")
        out.update(range(first, end + 1))
    return tuple(sorted(out))


def _under(path: str, directory: str | None) -> bool:
    if directory is None:
        return False
    real = os.path.realpath(path)
    return real == directory or real.startswith(directory.rstrip(os.sep) + os.sep)


def _summary(arg: str, files: Sequence[str]) -> str:
    n_pdf = sum(1 for f in files if _kind_by_name(f) == "pdf")
    what = f"{n_pdf} PDF{'s' if n_pdf != 1 else ''}, {len(files) - n_pdf} image{'s' if len(files) - n_pdf != 1 else ''}"
    shown = ", ".join(files[:LISTED]) + (f" and {len(files) - LISTED} more" if len(files) > LISTED else "")
    return f"{arg}: {what}: {shown}"


def _expand_dir(path: str, exclude: str | None) -> list[str]:
    out = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_file() or _kind_by_name(entry.name) is None:
            continue
        if not _under(entry.path, exclude):
            out.append(entry.path)
    return out


def _expand_glob(pattern: str, exclude: str | None) -> list[str]:
    return sorted(p for p in glob.glob(pattern, recursive=True)
                  if os.path.isfile(p) and _kind_by_name(p) is not None and not _under(p, exclude))


def unique_names(paths: Iterable[str]) -> list[str]:
    """Output names: each file's stem (leading dots dropped), with -2, -3 ... where stems repeat."""
    out: list[str] = []
    for p in paths:
        stem = Path(p).stem.lstrip(".") or "document"
        cand, k = stem, 1
        while cand in out:
            k += 1
            cand = f"{stem}-{k}"
        out.append(cand)
    return out


def expand_inputs(args: Sequence[str], exclude_under: str | os.PathLike[str] | None = None) -> Expansion:
    """The documents the inputs name, in order. Raises RangeSyntaxError for a malformed page range (checked
    for every argument before any file is opened); files inside ``exclude_under`` (the output directory) are
    left out of directories and globs."""
    parsed = [(arg, *split_input(arg)) for arg in args]
    exclude = os.path.realpath(exclude_under) if exclude_under is not None else None
    ex = Expansion()
    pdfs: dict[str, Document] = {}  # realpath -> the document, to merge a PDF named twice
    found: list[tuple[str, str, str, tuple[PageRange, ...] | None]] = []  # (arg, path or error, kind, ranges)
    for arg, path, ranges in parsed:
        error = None
        if ranges is not None:
            ex.document_mode = True
        if os.path.isdir(path) or (not os.path.lexists(path) and _GLOB_MAGIC.search(path)):
            ex.document_mode = True
            is_dir = os.path.isdir(path)
            files = _expand_dir(path, exclude) if is_dir else _expand_glob(path, exclude)
            if ranges is not None:
                error = f"{arg}: page ranges are for a PDF, not a {'directory' if is_dir else 'pattern'}"
            elif not files and is_dir:
                error = (f"{path}: no PDF or image in this directory (looked for *.pdf and the image suffixes "
                         "*.png, *.jpg, *.tif ...; not in subfolders)")
            elif not files:
                error = f"{path}: no PDF or image matches this pattern"
            else:
                ex.notes.append(_summary(path, files))
                found += [(arg, f, _kind_by_name(f) or "image", None) for f in files]
        elif is_pdf(path):
            ex.document_mode = True
            found.append((arg, path, "pdf", ranges))
        elif ranges is not None:
            error = f"{arg}: page ranges are for a PDF; {path} is not one"
        else:
            found.append((arg, path, "image", None))  # read (and its errors reported) when its page comes
        if error is not None:
            found.append((arg, error, "error", None))
    for arg, path, kind, ranges in found:
        if kind == "error":
            ex.errors.append(path)
            continue
        if kind == "image":
            ex.documents.append(Document(path, "image", (1,), 1, arg))
            continue
        try:
            with PdfDocument(path) as pdf:
                n = pdf.n_pages
            pages = _pages(ranges, n, path)
        except (PdfError, InputError) as e:
            ex.errors.append(str(e))
            continue
        key = os.path.realpath(path)
        if key in pdfs:  # the same PDF again: one document, the union of the pages
            doc = pdfs[key]
            doc.pages = tuple(sorted(set(doc.pages) | set(pages)))
            continue
        pdfs[key] = Document(path, "pdf", pages, n, arg)
        ex.documents.append(pdfs[key])
    for doc, name in zip(ex.documents, unique_names(d.path for d in ex.documents)):
        doc.name = name
    return ex


class PageLoader:
    """Loads pages in order: an image file through images.load_image, a PDF page rendered at ``dpi``. Keeps
    the PDF of the last page open (pages come document by document); close() when done."""

    def __init__(self, dpi: float) -> None:
        self.dpi = dpi
        self._open: tuple[str, PdfDocument] | None = None

    def load(self, doc: Document, number: int) -> tuple[Any, RenderedPage | None]:
        """(RGB PIL image, the rendered page with its geometry, or None for an image file). Raises
        ImageError / PdfError (ValueErrors) naming the file."""
        if doc.kind == "image":
            from .images import load_image

            return load_image(doc.path), None
        if self._open is None or self._open[0] != doc.path:
            self.close()
            self._open = (doc.path, PdfDocument(doc.path))
        page = self._open[1].render(number, self.dpi)
        return page.image, page

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None


__all__ = ["Document", "Expansion", "IMAGE_SUFFIXES", "InputError", "PageLoader", "RangeSyntaxError",
           "expand_inputs", "is_pdf", "parse_ranges", "split_input", "unique_names"]
