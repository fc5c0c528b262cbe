"""The output directory of a document run (``tilepass-cli ... -o DIR`` with a PDF, a directory, a glob or
several inputs):

    DIR/.tilepass-manifest.json       what is done (manifest.py); the same command again resumes from it
    DIR/<name>.md                     the document: its pages' markdown in page order, each page introduced by
                                      PAGE_MARKER on a line of its own (``<!-- page 3 -->``, the page's number
                                      in the PDF), a blank line before and after it
    DIR/<name>.json                   {"document", "name", "kind", "n_pages", "dpi", "pages": [page, ...]}
    DIR/<name>/page-0003.md           one page's markdown (figure links relative to DIR/<name>/)
    DIR/<name>/page-0003.json         one page: text, raw model output, size in pixels (and points, rotation,
                                      dpi for a PDF page), regions with boxes in page pixels ("boxes"), in the
                                      model's 0..999 grid ("boxes_999") and in PDF points ("boxes_pt": user
                                      space, y up), token counts, timings, stop reason and whether it hit -n
    DIR/<name>/figures/page-0003-0.jpg  the regions the model labels ``image``, cropped from the page as
                                      rendered (as the official DeepSeek-OCR runner saves them), linked from the
                                      markdown in their place

Each page's files are written (each to a temporary name, renamed when complete), then the manifest records the
page as done, then the document's two files are rebuilt from the done pages' files. A run killed at any moment
loses at most the pages it was working on; the next run redoes those and rebuilds the document files.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import quote

from .documents import Document
from .manifest import Manifest, PageRecord, reconcile_settings
from .outputs import FileId, refuse_input, remove_stale_temps, write_atomic, write_if_changed

PAGE_MARKER = "<!-- page {n} -->"
TIMING_KEYS = ("timings_ms", "tokens_per_s")  # the fields of a page's JSON that differ between identical runs


def page_stem(n: int) -> str:
    return f"page-{n:04d}"


def figure_name(n: int, index: int) -> str:
    return f"{page_stem(n)}-{index}.jpg"


def merge_markdown(pages: Iterable[tuple[int, str]]) -> str:
    """The document's markdown: each page's text after its marker, blank lines between."""
    parts = [f"{PAGE_MARKER.format(n=n)}\n\n{text.strip()}".rstrip() for n, text in pages]
    return "\n\n".join(parts) + "\n" if parts else ""


@dataclass
class _Page:
    text: str  # the page file's markdown
    record: dict[str, Any]  # the page file's JSON
    figures: list[str] = field(default_factory=list)


class DocumentOutputs:
    """Writes a document run's files and keeps the manifest. ``pages_to_do(doc)`` after ``open_documents``."""

    def __init__(self, root: Path, manifest: Manifest, dpi: float, inputs: Mapping[FileId, str]) -> None:
        self.root = root
        self.manifest = manifest
        self.dpi = dpi
        self.inputs = inputs
        self._pages: dict[str, dict[int, _Page]] = {}

    # ---- paths ----
    def folder(self, doc: Document) -> Path:
        return self.root / doc.name

    def page_md(self, doc: Document, n: int) -> Path:
        return self.folder(doc) / f"{page_stem(n)}.md"

    def page_json(self, doc: Document, n: int) -> Path:
        return self.folder(doc) / f"{page_stem(n)}.json"

    def figures_dir(self, doc: Document) -> Path:
        return self.folder(doc) / "figures"

    def doc_md(self, doc: Document) -> Path:
        return self.root / f"{doc.name}.md"

    def doc_json(self, doc: Document) -> Path:
        return self.root / f"{doc.name}.json"

    def planned_paths(self, docs: Iterable[Document]) -> list[Path]:
        """The files whose names are known before any page is decoded (to check against the inputs)."""
        out = []
        for d in docs:
            out += [self.doc_md(d), self.doc_json(d)]
            out += [p for n in d.pages for p in (self.page_md(d, n), self.page_json(d, n))]
        return out

    @staticmethod
    def image_link(n: int) -> str:
        """The GroundingParser's image_link for page n's file (relative to DIR/<name>/)."""
        return f"![](figures/{page_stem(n)}-{{index}}.jpg)\n"

    # ---- start: what is done ----
    def start_run(self, settings: Mapping[str, Any], force: bool,
                  docs: Iterable[Document]) -> tuple[list[str], list[str]]:
        """A run's start, for tilepass-cli and tilepass-batch alike: the settings checked against the manifest's
        (manifest.ResumeRefused for a change without force), the manifest stamped and saved, the documents
        opened. Returns (notes, warnings) for stderr."""
        from . import __version__

        docs = list(docs)
        notes = reconcile_settings(self.manifest, settings, force, {d.name for d in docs})
        self.manifest.tilepass = __version__
        self.manifest.save()
        return notes, self.open_documents(docs)

    def open_documents(self, docs: Iterable[Document]) -> list[str]:
        """Remove temporary files a killed run left; read the done pages' files back (a done page whose files are
        missing or unreadable is done again). Returns notes for stderr."""
        notes: list[str] = []
        remove_stale_temps(self.root)
        for doc in docs:
            rec = self.manifest.documents[doc.name]
            for d in (self.folder(doc), self.figures_dir(doc)):
                remove_stale_temps(d)
            pages: dict[int, _Page] = {}
            for n, p in sorted(rec.pages.items()):
                if not p.done:
                    continue
                try:
                    text = self.page_md(doc, n).read_text(encoding="utf-8")
                    record = json.loads(self.page_json(doc, n).read_text(encoding="utf-8"))
                    missing = [f for f in p.figures if not (self.figures_dir(doc) / f).is_file()]
                    if missing:
                        raise FileNotFoundError(self.figures_dir(doc) / missing[0])
                except (OSError, ValueError) as e:
                    notes.append(f"{doc.label(n)}: done before, but its files cannot be read "
                                 f"({getattr(e, 'filename', None) or e}): doing it again")
                    rec.pages.pop(n)
                    continue
                pages[n] = _Page(text, record, list(p.figures))
            self._pages[doc.name] = pages
        return notes

    def pages_to_do(self, doc: Document) -> list[int]:
        rec = self.manifest.documents[doc.name]
        return [n for n in doc.pages if not (n in rec.pages and rec.pages[n].done)]

    def done_pages(self, names: Iterable[str] | None = None) -> list[PageRecord]:
        docs = self.manifest.documents
        return [p for k in (docs if names is None else names) if k in docs for p in docs[k].pages.values() if p.done]

    # ---- a page ----
    def write_page(self, doc: Document, n: int, text: str, record: dict[str, Any], image: Any, regions: list,
                   stop: str) -> list[Path]:
        """Page n's figures and files, then the manifest, then the document's files. Returns the paths written
        for the page. OSError (the page is then not done; the files of finished pages are untouched)."""
        from .grounding import to_pixels

        os.makedirs(self.folder(doc), exist_ok=True)
        written: list[Path] = []
        figures: dict[int, str] = {}
        for r in regions:
            if r.image_index is None or not r.boxes or image is None:
                continue
            x1, y1, x2, y2 = (int(v) for v in to_pixels(r.boxes[0], image.width, image.height))
            if x2 <= x1 or y2 <= y1:
                continue
            buf = io.BytesIO()
            image.crop((x1, y1, x2, y2)).save(buf, format="JPEG", quality=92)
            os.makedirs(self.figures_dir(doc), exist_ok=True)
            path = self.figures_dir(doc) / figure_name(n, r.image_index)
            refuse_input(path, self.inputs)
            write_atomic(path, buf.getvalue())
            figures[r.image_index] = path.name
            written.append(path)
        for reg in record.get("regions", []):
            if reg.get("image_index") in figures:
                reg["figure"] = f"figures/{figures[reg['image_index']]}"
        for path, data in ((self.page_json(doc, n), json.dumps(record, ensure_ascii=False, indent=1) + "\n"),
                           (self.page_md(doc, n), text)):
            refuse_input(path, self.inputs)
            write_atomic(path, data.encode("utf-8"))
            written.append(path)
        rec = self.manifest.documents[doc.name]
        rec.pages[n] = PageRecord("done", stop=stop, figures=[figures[k] for k in sorted(figures)])
        self.manifest.save()
        self._pages.setdefault(doc.name, {})[n] = _Page(text, record, [figures[k] for k in sorted(figures)])
        self.write_document(doc)
        return written

    def fail_page(self, doc: Document, n: int, error: str) -> None:
        """Record a failed page (tried again by the next run); a done page of an earlier run stays done."""
        rec = self.manifest.documents[doc.name]
        if n in rec.pages and rec.pages[n].done:
            return
        rec.pages[n] = PageRecord("failed", error=error)
        try:
            self.manifest.save()
        except OSError:
            pass  # the page is not done either way

    # ---- the document ----
    def document_markdown(self, doc: Document) -> str:
        q = quote(doc.name)
        pieces = []
        for n, page in sorted(self._pages.get(doc.name, {}).items()):
            text = page.text
            for f in page.figures:  # the page file's links, made relative to DIR
                text = text.replace(f"](figures/{f})", f"]({q}/figures/{f})")
            pieces.append((n, text))
        return merge_markdown(pieces)

    def document_record(self, doc: Document) -> dict[str, Any]:
        rec = self.manifest.documents[doc.name]
        return {"document": doc.path, "name": doc.name, "kind": doc.kind, "n_pages": rec.n_pages,
                **({"dpi": self.dpi} if doc.kind == "pdf" else {}),
                "pages": [p.record for _, p in sorted(self._pages.get(doc.name, {}).items())]}

    def write_document(self, doc: Document) -> None:
        """DIR/<name>.md and DIR/<name>.json from the done pages (rewritten only when they change)."""
        for path, data in ((self.doc_json(doc), json.dumps(self.document_record(doc), ensure_ascii=False,
                                                            indent=1) + "\n"),
                           (self.doc_md(doc), self.document_markdown(doc))):
            refuse_input(path, self.inputs)
            write_if_changed(path, data.encode("utf-8"))


def page_record(base: dict[str, Any], doc: Document, n: int, geometry: Any, hit_limit: bool) -> dict[str, Any]:
    """A page's JSON: grounding.page_json's fields, the document and page number first, PDF geometry (points,
    rotation, dpi; each region's boxes in points) for a PDF page, and whether the page hit -n."""
    out: dict[str, Any] = {"document": doc.path, "page": n}
    out.update(base)
    out["hit_limit"] = hit_limit
    if geometry is not None:
        out["dpi"] = geometry.dpi
        out["size_pt"] = [round(geometry.width_pt, 3), round(geometry.height_pt, 3)]
        out["rotation"] = geometry.rotation
        from .grounding import to_pixels

        w, h = geometry.width_px, geometry.height_px
        for reg in out.get("regions", []):
            reg["boxes_pt"] = [[round(v, 2) for v in geometry.to_points(to_pixels(tuple(b), w, h))]
                               for b in reg.get("boxes_999", [])]
    return out


__all__ = ["DocumentOutputs", "PAGE_MARKER", "TIMING_KEYS", "figure_name", "merge_markdown", "page_record",
           "page_stem"]
