"""What a run into an output directory did, so that the same command run again does only what is left.

``DIR/.tilepass-manifest.json`` (JSON, written with outputs.write_atomic after each page's files are in place,
so a run killed at any moment leaves the previous or the next complete manifest)::

    {"format": "tilepass-manifest", "version": 1, "tilepass": "0.4.0",
     "models": {"text": {"path": "/abs/text.gguf", "size": 123, "head_tail_sha256": "..."},
                "vision": {...}},
     "settings": {"prompt": "...", "mode": "gundam", "n_predict": 8192, "dpi": 144, ...},
     "documents": {"report": {"source": "/abs/report.pdf", "kind": "pdf", "n_pages": 12, "size": 4567,
                              "head_tail_sha256": "...",
                              "pages": {"1": {"status": "done", "stop": "eos", "figures": ["page-0001-0.jpg"]},
                                        "2": {"status": "failed", "error": "..."}}}}}

A file's fingerprint is its size and the SHA-256 of its size, its first MiB and its last MiB (the whole file when
it is at most 2 MiB): two reads of 1 MiB, whatever the file's size (a full SHA-256 of a 6.7 GB DeepSeek-OCR F16
text file takes about 10 s on this machine's cores, at 0.7 GB/s). The modification time is not part of it, so a
copied or moved model is the same model. A GGUF file's first MiB holds its header (architecture, tensor types,
the start of its metadata); its last MiB the end of its last tensor's weights: another conversion, another
quantisation or other weights change one or the other. A file changed only in its middle is not noticed.

The settings are those that change the output (resolved: a default that the model decides is recorded as the
value it took); threads and --images-per-pass are not among them. A page counts as done when the manifest says
so and its files are there; failed pages are tried again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .outputs import write_if_changed

MANIFEST_NAME = ".tilepass-manifest.json"
FORMAT, VERSION = "tilepass-manifest", 1
FINGERPRINT_BYTES = 1 << 20


class ManifestError(ValueError):
    """A manifest that cannot be read (not JSON, another format or version)."""


def fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """{"size": bytes, "head_tail_sha256": hex} (see the module docstring). OSError if unreadable."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(size.to_bytes(8, "little"))
        if size <= 2 * FINGERPRINT_BYTES:
            h.update(f.read())
        else:
            h.update(f.read(FINGERPRINT_BYTES))
            f.seek(size - FINGERPRINT_BYTES)
            h.update(f.read(FINGERPRINT_BYTES))
    return {"size": size, "head_tail_sha256": h.hexdigest()}


def same_file(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.get("size") == b.get("size") and a.get("head_tail_sha256") == b.get("head_tail_sha256")


@dataclass
class PageRecord:
    status: str  # "done" | "failed"
    stop: str | None = None  # the stop reason of a done page: "eos", "length", "context", ...
    figures: list[str] = field(default_factory=list)  # file names in the document's figures/ folder
    error: str | None = None  # why a failed page failed

    @property
    def done(self) -> bool:
        return self.status == "done"

    @property
    def hit_limit(self) -> bool:
        return self.done and self.stop not in (None, "eos")

    def to_json(self) -> dict[str, Any]:
        if self.status == "done":
            return {"status": "done", "stop": self.stop, "figures": list(self.figures)}
        return {"status": self.status, "error": self.error}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "PageRecord":
        return cls(status=str(d.get("status")), stop=d.get("stop"), figures=[str(f) for f in d.get("figures", [])],
                   error=d.get("error"))


@dataclass
class DocRecord:
    source: str  # the input file, absolute
    kind: str  # "pdf" | "image"
    n_pages: int
    file: dict[str, Any]  # its fingerprint
    pages: dict[int, PageRecord] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "n_pages": self.n_pages, **self.file,
                "pages": {str(n): self.pages[n].to_json() for n in sorted(self.pages)}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "DocRecord":
        return cls(source=str(d["source"]), kind=str(d["kind"]), n_pages=int(d["n_pages"]),
                   file={"size": d.get("size"), "head_tail_sha256": d.get("head_tail_sha256")},
                   pages={int(n): PageRecord.from_json(p) for n, p in d.get("pages", {}).items()})


@dataclass
class Manifest:
    directory: Path
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    documents: dict[str, DocRecord] = field(default_factory=dict)
    tilepass: str = ""

    @property
    def path(self) -> Path:
        return self.directory / MANIFEST_NAME

    # ---- reading and writing ----
    @classmethod
    def load(cls, directory: Path) -> "Manifest | None":
        """The manifest in directory, or None where there is none. ManifestError if it cannot be used."""
        path = directory / MANIFEST_NAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ManifestError(f"{path}: cannot read ({e.strerror or e})") from None
        try:
            d = json.loads(raw)
            if not isinstance(d, dict) or d.get("format") != FORMAT:
                raise ManifestError(f"{path}: not a tilepass manifest")
            if d.get("version") != VERSION:
                raise ManifestError(f"{path}: manifest version {d.get('version')!r}; this tilepass-cli reads "
                                    f"version {VERSION}")
            return cls(directory, models=dict(d.get("models", {})), settings=dict(d.get("settings", {})),
                       documents={str(k): DocRecord.from_json(v) for k, v in d.get("documents", {}).items()},
                       tilepass=str(d.get("tilepass", "")))
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ManifestError(f"{path}: not a readable manifest ({type(e).__name__}: {e}); remove it to start "
                                "over") from None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "tilepass": self.tilepass, "models": self.models,
                "settings": self.settings,
                "documents": {k: self.documents[k].to_json() for k in sorted(self.documents)}}

    def save(self) -> None:
        write_if_changed(self.path, (json.dumps(self.to_json(), ensure_ascii=False, indent=1) + "\n").encode("utf-8"))

    # ---- what changed since the manifest was written ----
    def model_changes(self, models: Mapping[str, Mapping[str, Any]]) -> list[str]:
        out = []
        for role, now in models.items():
            old = self.models.get(role)
            if old is not None and not same_file(old, now):
                out.append(f"the {role} model is not the one used before ({old.get('path')}, {old.get('size')} "
                           f"bytes; now {now.get('path')}, {now.get('size')} bytes)")
        return out

    def setting_changes(self, settings: Mapping[str, Any]) -> list[str]:
        out = []
        for key in sorted(set(self.settings) | set(settings)):
            if key in self.settings and self.settings.get(key) != settings.get(key):
                out.append(f"{key} was {self.settings.get(key)!r}, now {settings.get(key)!r}")
        return out

    def document_change(self, name: str, kind: str, file: Mapping[str, Any] | None) -> str | None:
        rec = self.documents.get(name)
        if rec is None or file is None or not any(p.done for p in rec.pages.values()):
            return None  # nothing made from it yet: nothing to refuse
        if rec.kind != kind or not same_file(rec.file, file):
            return f"{name}: the input is not the file its pages were made from ({rec.source})"
        return None


class ResumeRefused(ValueError):
    """The directory holds pages made with another model, other settings or another input file, and --force
    was not given."""


def _refusal(directory: Path, changes: list[str], n_done: int) -> ResumeRefused:
    return ResumeRefused(f"{directory} holds {n_done} page{'s' if n_done != 1 else ''} made differently: "
                         f"{'; '.join(changes)}. Run with the same model and settings to resume there, or pass "
                         "--force to redo the pages with these")


def _n_done(m: Manifest, names: Any = None) -> int:
    return sum(1 for k, d in m.documents.items() if names is None or k in names for p in d.pages.values() if p.done)


@dataclass(frozen=True)
class DocInput:
    """A document of this run as the manifest records it."""
    name: str
    source: str
    kind: str
    n_pages: int
    file: dict[str, Any] | None  # its fingerprint (None: unreadable now; its page will fail and say why)


def reconcile_inputs(m: Manifest, models: Mapping[str, dict[str, Any]], docs: list[DocInput], force: bool) -> list[str]:
    """Check the models and the input files against the manifest (before the models are loaded): ResumeRefused
    for a change without force; with force, the records made from what changed are dropped. Then the
    manifest describes this run's models and documents. Returns notes for stderr."""
    notes: list[str] = []
    model_changes = m.model_changes(models)
    doc_changes = {d.name: c for d in docs if (c := m.document_change(d.name, d.kind, d.file)) is not None}
    if model_changes or doc_changes:
        if not force:
            raise _refusal(m.directory, model_changes + list(doc_changes.values()),
                           _n_done(m) if model_changes else _n_done(m, doc_changes))
        if model_changes:
            notes.append(f"--force: {'; '.join(model_changes)}: every page is redone; the records of "
                         f"{len(m.documents)} document(s) are dropped")
            m.documents.clear()
        for name, change in doc_changes.items():
            notes.append(f"--force: {change}: its pages are redone")
            m.documents.pop(name, None)
    m.models = {k: dict(v) for k, v in models.items()}
    for d in docs:
        rec = m.documents.get(d.name)
        if rec is None:
            m.documents[d.name] = DocRecord(d.source, d.kind, d.n_pages, dict(d.file or {}))
        else:
            rec.source, rec.n_pages = d.source, d.n_pages
            if d.file is not None:
                rec.file = dict(d.file)
    return notes


def reconcile_settings(m: Manifest, settings: Mapping[str, Any], force: bool, names: Any) -> list[str]:
    """Check the resolved settings (after the models are loaded): ResumeRefused for a change without force;
    with force every record is dropped but those of this run's documents, which start again. Returns notes."""
    notes: list[str] = []
    changes = m.setting_changes(settings) if m.settings else []
    if changes:
        if not force:
            raise _refusal(m.directory, changes, _n_done(m))
        others = sorted(k for k in m.documents if k not in names)
        notes.append(f"--force: {'; '.join(changes)}: every page is redone"
                     + (f"; the records of {len(others)} other document(s) are dropped (their files are left)"
                        if others else ""))
        for k in list(m.documents):
            if k in names:
                m.documents[k].pages.clear()
            else:
                del m.documents[k]
    m.settings = dict(settings)
    return notes


__all__ = ["DocInput", "DocRecord", "MANIFEST_NAME", "Manifest", "ManifestError", "PageRecord", "ResumeRefused",
           "fingerprint", "reconcile_inputs", "reconcile_settings", "same_file"]
