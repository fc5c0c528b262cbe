"""The work of a batch run, the same whether it runs in this process or in Ray workers: render a page
(``render_page``, pypdfium2 through documents.PageLoader, as tilepass-cli renders it) and decode a group of
pages (``PageDecoder``: both models loaded once, memory-mapped; the group's images prepared and encoded in one
vision pass, then decoded up to --parallel together, as tilepass-cli does a pass of --images-per-pass). The
groups are tilepass-cli's passes (consecutive pages, cli.pages_per_pass of them): a page's embeddings may
depend on the pages encoded with it, so the same groups write the same files. What
goes between the stages is pickled into bytes (``PageIn`` / ``PageOut``), so that Ray Data carries it as one
binary column.

Test hook: ``TILEPASS_RAY_TEST_KILL_AFTER=N`` in the driver's environment (read by driver.kill_hook, handed to
the Ray actors in their DecodeSpec) makes the first actor to finish N pages end its process with ``os._exit(1)``
right there (before its group's results are returned), once per run: the actor that claims the run's kill token
(a file created with O_EXCL) dies, the others and the restarted one carry on. tests/test_ray_batch.py kills a Ray
actor mid-run with it; it is not meant for anything else.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..documents import Document, PageLoader
from .settings import BatchError, ModelSettings

KILL_AFTER_ENV = "TILEPASS_RAY_TEST_KILL_AFTER"  # test hook (see the module docstring)

PageKey = tuple[int, int]  # (the document's index in the run, the page's number in it)


@dataclass
class PageIn:
    """A rendered page (or why it could not be rendered)."""

    key: PageKey
    image: Any = None  # RGB PIL image
    geometry: Any = None  # pdf.PageGeometry of a PDF page; None for an image file
    error: str | None = None


@dataclass
class PageOut:
    """A decoded page, ready for layout.DocumentOutputs.write_page (or why it failed)."""

    key: PageKey
    error: str | None = None
    text: str = ""
    record: dict[str, Any] = field(default_factory=dict)  # the page's JSON
    regions: list[Any] = field(default_factory=list)  # grounding regions (for the figures); [] with --raw
    stop: str = ""
    image: Any = None  # the page's image, only where a region is a figure to crop from it


def render_page(loader: PageLoader, documents: Sequence[Document], key: PageKey) -> PageIn:
    doc = documents[key[0]]
    try:
        image, rendered = loader.load(doc, key[1])
    except (ValueError, OSError, MemoryError) as e:  # ImageError, PdfError: the page fails, the others go on
        return PageIn(key, error=str(e) if doc.path in str(e) else f"{doc.label(key[1])}: {e}")
    return PageIn(key, image, rendered.geometry if rendered is not None else None)


def render_batch(batch: dict[str, np.ndarray], documents: Sequence[Document], groups: Sequence[Sequence[PageKey]],
                 dpi: float) -> dict[str, np.ndarray]:
    """Ray Data: rows {group} -> rows {group, pages: the group's pages rendered, a pickled list of PageIn}."""
    loader = PageLoader(dpi)
    try:
        pages = [pickle.dumps([render_page(loader, documents, key) for key in groups[int(g)]],
                              protocol=pickle.HIGHEST_PROTOCOL) for g in batch["group"]]
    finally:
        loader.close()
    return {"group": batch["group"], "pages": _objects(pages)}


def _objects(items: list[bytes]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


@dataclass(frozen=True)
class DecodeSpec:
    """What every decoder of a run shares: the settings as given, and as the driver resolved them with the model
    (the prompt, the sampling with its seed, the no-repeat rule), the documents, threads per decoder."""

    settings: ModelSettings
    prompt: str
    sampling: Any  # generate.Sampling
    no_repeat: Any  # generate.NoRepeat
    documents: tuple[Document, ...]
    threads: int
    kill_after: int = 0  # the test hook (see the module docstring): die after this many pages (0: off)
    kill_token: str | None = None  # ... once per run: the decoder that creates this file


class PageDecoder:
    """Both models, loaded once; ``decode(pages)`` decodes a group of rendered pages; called with a Ray Data
    batch it does the same to the pickled pages in it (the actor of the pool)."""

    def __init__(self, spec: DecodeSpec, pipe: Any = None) -> None:
        from ..cli import CliError, _parallel, load_pipeline

        self.spec = spec
        args = spec.settings.namespace([], "", False, threads=spec.threads)
        try:
            self.pipe = pipe if pipe is not None else load_pipeline(args, spec.threads, None)
        except CliError as e:
            raise BatchError(str(e), usage=e.status == 2) from None
        self.parallel = _parallel(args, self.pipe, spec.threads)
        self.finished = 0  # pages decoded by this process (the test hook counts them)

    def per_pass(self, n_pages: int) -> int:
        """Pages per group (one vision pass), by tilepass-cli's --images-per-pass rule for this decoder's --parallel."""
        from ..cli import pages_per_pass

        return pages_per_pass(self.spec.settings.images_per_pass, self.parallel, n_pages)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Ray Data: rows {group, pages} -> a row per page {doc, number, result: a pickled PageOut}; each group is
        one vision pass, as tilepass-cli does the same pages."""
        outs = [o for b in batch["pages"] for o in self.decode(pickle.loads(b))]
        return {"doc": np.array([o.key[0] for o in outs], dtype=np.int64),
                "number": np.array([o.key[1] for o in outs], dtype=np.int64),
                "result": _objects([pickle.dumps(o, protocol=pickle.HIGHEST_PROTOCOL) for o in outs])}

    def decode(self, pages: Sequence[PageIn]) -> list[PageOut]:
        """PageOut for each page, in the order given; a page's failure costs only that page (or, for a failed
        vision pass, the pages of that pass)."""
        s = self.spec.settings
        outs: dict[PageKey, PageOut] = {p.key: PageOut(p.key, error=p.error) for p in pages if p.error is not None}
        ok = [p for p in pages if p.error is None]
        good: list[tuple[PageIn, Any]] = []
        for p, prep in zip(ok, self.pipe.prepare([p.image for p in ok], s.mode, s.min_tiles, s.max_tiles)):
            if isinstance(prep, BaseException):
                doc = self.spec.documents[p.key[0]]
                outs[p.key] = PageOut(p.key, error=str(prep) if doc.path in str(prep) else f"{self._label(p)}: {prep}")
            else:
                good.append((p, prep))
        if good:
            try:
                embs, enc_s = self.pipe.encode([prep for _, prep in good])
            except Exception as e:  # TilepassError, MemoryError: this pass's pages are lost, not the others'
                msg = f"vision encoding failed for {', '.join(self._label(p) for p, _ in good)}: {e}"
                outs.update({p.key: PageOut(p.key, error=msg) for p, _ in good})
            else:
                for out in self._decode(good, embs, enc_s):
                    outs[out.key] = out
        return [outs[p.key] for p in pages]

    def _label(self, p: PageIn) -> str:
        return self.spec.documents[p.key[0]].label(p.key[1])

    def _decode(self, good: list[tuple[PageIn, Any]], embs: list[Any], enc_s: float) -> list[PageOut]:
        from ..layout import DocumentOutputs
        from ..page_text import PageText
        from ..pipeline import PageRequest, PipelineError

        spec, pipe = self.spec, self.pipe
        table_markup = bool(getattr(getattr(pipe, "conventions", None), "table_markup", False))
        texts = [PageText(pipe.tokenizer, DocumentOutputs.image_link(p.key[1]), spec.settings.raw, table_markup)
                 for p, _ in good]
        outs: list[PageOut] = []

        def finished(j: int, res: Any, err: BaseException | None) -> None:
            p = good[j][0]
            if err is not None:
                why = f"{self._label(p)}: {err}" if isinstance(err, PipelineError) else \
                    f"{self._label(p)}: decoding failed: {err}"
                outs.append(PageOut(p.key, error=why))
            else:
                outs.append(self._page_out(p, texts[j], res, enc_s))
            self.finished += 1
            self._test_hook()

        if self.parallel > 1 and len(good) > 1:
            reqs = [PageRequest(self._label(p), prep, emb, spec.prompt, spec.settings.n_predict, spec.sampling,
                                spec.no_repeat, texts[j].push, j) for j, ((p, prep), emb) in enumerate(zip(good, embs))]
            pipe.run_pages(reqs, self.parallel, lambda r, res, err: finished(r.tag, res, err))
        else:
            for j, ((p, prep), emb) in enumerate(zip(good, embs)):
                try:
                    res = pipe.run_page(self._label(p), prep, emb, spec.prompt, spec.settings.n_predict,
                                        spec.sampling, spec.no_repeat, texts[j].push)
                except Exception as e:  # PipelineError, or the decoder failed on this page
                    finished(j, None, e)
                    continue
                finished(j, res, None)
        return outs

    def _page_out(self, p: PageIn, text: Any, res: Any, enc_s: float) -> PageOut:
        from ..layout import page_record
        from ..page_text import result_json

        text.finish()
        doc = self.spec.documents[p.key[0]]
        page = result_json(text.text, res, text.regions, doc.label(p.key[1]), enc_s, token_ids=False)
        record = page_record(page, doc, p.key[1], p.geometry, hit_limit=res.stop_reason == "length")
        regions = [] if self.spec.settings.raw else list(text.regions)
        figures = any(r.image_index is not None and r.boxes for r in regions)
        return PageOut(p.key, text=text.text, record=record, regions=regions, stop=res.stop_reason,
                       image=p.image if figures else None)

    def _test_hook(self) -> None:
        token = self.spec.kill_token
        if not self.spec.kill_after or token is None or self.finished < self.spec.kill_after:
            return
        try:
            os.close(os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError:  # another decoder (or this one, before a restart) died already
            return
        os._exit(1)


__all__ = ["DecodeSpec", "KILL_AFTER_ENV", "PageDecoder", "PageIn", "PageOut", "render_batch", "render_page"]
