"""``run_batch``: documents -> the output directory of tilepass-cli (layout.py's files, manifest.py's manifest),
with the pages decoded in this process or by a pool of Ray actors (raypool.py).

The driver does what needs the output directory: it expands the inputs, locks the directory, checks the
manifest against the models, inputs and settings (refusing a change without ``force``, as tilepass-cli does,
with tilepass-cli's own functions), and leaves out the pages done before: they are never sent. Then it writes
each page as its result comes back (its files, then the manifest, then the document's files: DocumentOutputs),
whatever the order; a page that comes back twice (a retried Ray task) is written once.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Iterable, Sequence

from ..cli import Reporter
from .settings import BatchError, ModelSettings
from .work import KILL_AFTER_ENV, DecodeSpec, PageDecoder, PageKey, PageOut, render_page

PROG = "tilepass-batch"


@dataclass
class BatchSummary:
    """What a run did. ``status``: tilepass-cli's exit status for it (0 ok, 1 a page or input failed, 3 a page
    stopped at -n without an end of text)."""

    status: int = 0
    pages: int = 0  # pages asked for
    skipped: int = 0  # done before (not sent at all)
    decoded: int = 0  # decoded and written by this run
    failed: int = 0
    incomplete: int = 0  # of those decoded, stopped at -n or the context
    duplicates: int = 0  # results that came back twice (a retried task) and were written once
    seconds: float = 0.0
    actors: int = 0  # decoders (1: in this process)
    threads: int = 0  # threads per decoder
    backend: str = "local"

    @property
    def pages_per_hour(self) -> float:
        return self.decoded * 3600.0 / self.seconds if self.seconds > 0 else 0.0


class Log(Reporter):
    """tilepass-cli's Reporter, its lines ``tilepass-batch: ...``."""

    def __init__(self, quiet: bool = False, write: Callable[[str], None] | None = None) -> None:
        super().__init__(quiet, prog=PROG, write=write)


def _cli_call(fn: Callable[..., Any], *args: Any) -> Any:
    """A tilepass-cli helper; its CliError as a BatchError."""
    from ..cli import CliError

    try:
        return fn(*args)
    except CliError as e:
        raise BatchError(str(e), usage=e.status == 2) from None


def run_batch(inputs: Sequence[str], out_dir: str | os.PathLike[str], settings: ModelSettings, *,
              use_ray: bool = False, ray_address: str | None = None, actors: int | None = None,
              threads_per_actor: int | None = None, threads: int | None = None, force: bool = False,
              log: Log | None = None, abort: Any = None) -> BatchSummary:
    """Decode every page of ``inputs`` (tilepass-cli's: images, PDFs with page ranges, directories, globs) into
    ``out_dir``, laid out as tilepass-cli lays out a document run. ``use_ray`` (or a ``ray_address``): the pages
    go to a pool of Ray actors (``actors`` of ``threads_per_actor`` threads; defaults from the CPUs Ray reports),
    on a local Ray started here when none is running and no address is given; otherwise they are decoded in this
    process with ``threads`` (default: all CPUs, at most 64). ``abort``: the models' abort poll in this process
    (interrupt.Interrupt: a signal stops a long C computation). Raises BatchError (RayMissing without Ray)."""
    log = log or Log()
    use_ray = use_ray or ray_address is not None
    if use_ray:
        from .raypool import require_ray

        require_ray()
    t0 = time.monotonic()
    out = os.fspath(out_dir)
    ns = settings.namespace(inputs, out, force, threads=threads)
    run = _prepare(ns, settings, log, abort)
    summary = BatchSummary(pages=run.n_all, skipped=run.n_all - len(run.todo), backend="ray" if use_ray else "local")
    try:
        if run.todo:
            if use_ray:
                from .raypool import ray_pages

                pages, summary.actors, summary.threads = ray_pages(run, ray_address, actors, threads_per_actor, log)
            else:
                pages, summary.actors, summary.threads = _local_pages(run, threads, log)
            try:
                _write_results(run, pages, summary, log)
            finally:
                pages.close()  # stopped early (a signal, an error): Ray shut down now, not when collected
    finally:
        run.lock.release()
    summary.seconds = time.monotonic() - t0
    summary.status = 1 if (summary.failed or run.input_errors) else (
        3 if any(p.hit_limit for p in run.docs.done_pages(run.names)) else 0)
    if summary.decoded or summary.failed:
        log.info(f"summary: {summary.decoded} page{'s' if summary.decoded != 1 else ''} decoded "
                 f"({summary.incomplete} hit -n, incomplete), {summary.failed} failed, {summary.skipped} done before; "
                 f"{summary.seconds:.1f} s, {summary.pages_per_hour:.0f} pages/hour with {summary.actors} "
                 f"decoder{'s' if summary.actors != 1 else ''} x {summary.threads} thread"
                 f"{'s' if summary.threads != 1 else ''} ({summary.backend})")
    return summary


@dataclass
class Run:
    """A run after its checks: the output directory (locked), what is left to do, how to decode it."""

    docs: Any  # layout.DocumentOutputs
    lock: Any  # outputs.DirectoryLock
    documents: tuple[Any, ...]  # documents.Document, indexed by PageKey[0]
    names: set[str]
    todo: list[PageKey]
    n_all: int
    spec: DecodeSpec
    args: Any  # the argparse namespace of tilepass-cli's helpers
    pipe: Any  # the driver's pipeline (settings resolved with it); the local decoder uses it
    input_errors: int = 0


def _prepare(ns: Any, settings: ModelSettings, log: Log, abort: Any = None) -> Run:
    """tilepass-cli's checks, in its order: usage, inputs, the directory and its manifest, the models, the
    resolved settings; then the pages not done before."""
    from ..cli import PRECISIONS, _open_document_outputs, _output_settings, _resolve_prompt, check_tile_args, \
        load_pipeline
    from ..documents import RangeSyntaxError, expand_inputs
    from ..generate import Sampling
    from ..manifest import ResumeRefused

    if settings.prompt is not None and settings.task is not None:
        raise BatchError("-p and --task are two ways to give the prompt: use one", usage=True)
    seed = settings.seed
    if seed == -1:
        seed = secrets.randbits(32)
        log.info(f"random seed {seed}")
    try:
        sampling = Sampling(temperature=settings.temp, top_k=settings.top_k, top_p=settings.top_p, seed=seed)
    except ValueError as e:
        raise BatchError(str(e), usage=True) from None
    _cli_call(check_tile_args, ns)
    if not ns.inputs:
        raise BatchError("no input: give PDFs, images, directories or globs", usage=True)
    try:
        found = expand_inputs(ns.inputs, exclude_under=ns.output)
    except RangeSyntaxError as e:
        raise BatchError(str(e), usage=True) from None
    for note in found.notes:
        log.info(note)
    for err in found.errors:
        log.error(err)
    if not found.documents:
        raise BatchError("no usable input")
    docs, lock, _ = _cli_call(_open_document_outputs, ns, log, found.documents)
    try:
        pipe = _cli_call(load_pipeline, ns, ns.threads or min(os.cpu_count() or 1, 64), abort)
        prompt = _cli_call(_resolve_prompt, ns, pipe, ns.prompt)
        code = getattr(pipe.vision, "precision", 0)
        arith = next((name for name, c in PRECISIONS.items() if c == code), "f32")
        no_repeat = dataclasses.replace(pipe.default_no_repeat(settings.no_repeat_ngram, settings.no_repeat_window),
                                        scope=settings.no_repeat_scope)
        try:
            notes, warnings = docs.start_run(_output_settings(ns, pipe, prompt, sampling, no_repeat, arith), ns.force,
                                             found.documents)
        except ResumeRefused as e:
            raise BatchError(str(e), usage=True) from None
        for note in notes:
            log.info(note)
        for note in warnings:
            log.warn(note)
        documents = tuple(found.documents)
        todo_by_doc = {d.name: set(docs.pages_to_do(d)) for d in documents}
        all_keys = [(i, n) for i, d in enumerate(documents) for n in d.pages]
        todo = [(i, n) for i, n in all_keys if n in todo_by_doc[documents[i].name]]
        if not todo:
            log.info(f"nothing to do: the {len(all_keys)} page{'s' if len(all_keys) != 1 else ''} asked for were "
                     f"done before ({docs.manifest.path}); the document files are up to date")
        elif len(todo) < len(all_keys):
            log.info(f"resuming in {docs.root}: {len(all_keys) - len(todo)} of {len(all_keys)} pages done before; "
                     f"{len(todo)} to do")
        for d in documents:
            if not todo_by_doc[d.name]:
                docs.write_document(d)
        spec = DecodeSpec(settings, prompt, sampling, no_repeat, documents, 1)
        names = {d.name for d in documents}
        return Run(docs, lock, documents, names, todo, len(all_keys), spec, ns, pipe, len(found.errors))
    except BaseException:
        lock.release()
        raise


def kill_hook(spec: DecodeSpec) -> DecodeSpec:
    """The spec of a run's Ray actors, with the test hook of work.py on where TILEPASS_RAY_TEST_KILL_AFTER=N is set:
    its N and a token file of its own for this run."""
    value = os.environ.get(KILL_AFTER_ENV, "")
    if not value:
        return spec
    try:
        n = int(value)
    except ValueError:
        raise BatchError(f"{KILL_AFTER_ENV}={value!r}: a number of pages (a test hook)") from None
    token = Path(tempfile.gettempdir()) / f"tilepass-kill-{os.getpid()}-{secrets.token_hex(6)}"
    return dataclasses.replace(spec, kill_after=n, kill_token=str(token))


def end_kill_hook(spec: DecodeSpec, log: Log) -> None:
    """Say whether the test hook killed a decoder (its token file exists) and remove the token."""
    if spec.kill_token is None:
        return
    try:
        os.unlink(spec.kill_token)
    except OSError:
        return
    log.info(f"test hook: a decoder ended its process after {spec.kill_after} pages ({KILL_AFTER_ENV})")


def _local_pages(run: Run, threads: int | None, log: Log) -> tuple[Generator[PageOut, None, None], int, int]:
    """The pages decoded in this process, a group (one vision pass) at a time, with the driver's pipeline."""
    from ..documents import PageLoader

    n_threads = min(threads or os.cpu_count() or 1, 64)
    spec = dataclasses.replace(run.spec, threads=n_threads)  # (the test hook is for Ray actors only)
    decoder = PageDecoder(spec, run.pipe)

    def pages() -> Generator[PageOut, None, None]:
        loader = PageLoader(run.args.dpi)
        try:
            per_pass = decoder.per_pass(len(run.todo))
            for k in range(0, len(run.todo), per_pass):
                group = [render_page(loader, run.documents, key) for key in run.todo[k:k + per_pass]]
                yield from decoder.decode(group)
        finally:
            loader.close()

    log.info(f"{len(run.todo)} page{'s' if len(run.todo) != 1 else ''} to decode in this process "
             f"({n_threads} threads, up to {decoder.parallel} pages together)")
    return pages(), 1, n_threads


def _write_results(run: Run, pages: Iterable[PageOut], summary: BatchSummary, log: Log) -> None:
    """Each page's files, the manifest, the document's files, as each result comes; a page that comes twice is
    written once; a page that never comes is recorded as failed."""
    from ..progress import Progress

    docs = run.docs
    left: dict[str, int] = {}
    for i, _ in run.todo:
        left[run.documents[i].name] = left.get(run.documents[i].name, 0) + 1
    progress = Progress(len(run.todo), len(left), prog=PROG, enabled=not log.quiet)
    if progress.tty:
        log.progress = progress
    seen: set[PageKey] = set()
    wanted = set(run.todo)
    for out in pages:
        if out.key in seen or out.key not in wanted:
            summary.duplicates += 1
            continue
        seen.add(out.key)
        doc = run.documents[out.key[0]]
        ok, incomplete = _write_one(run, doc, out, log)
        summary.decoded += ok
        summary.failed += not ok
        summary.incomplete += ok and incomplete
        left[doc.name] -= 1
        if left[doc.name] == 0:
            docs.write_document(doc)
        progress.page_done(ok, incomplete, document_done=left[doc.name] == 0)
    for key in sorted(wanted - seen):  # a Ray task that failed for good: its pages were never returned
        doc = run.documents[key[0]]
        msg = f"{doc.label(key[1])}: no result (its worker failed; see the Ray logs)"
        log.error(msg)
        docs.fail_page(doc, key[1], msg)
        summary.failed += 1
        left[doc.name] -= 1
        if left[doc.name] == 0:
            docs.write_document(doc)
    progress.finish()
    log.progress = None


def _write_one(run: Run, doc: Any, out: PageOut, log: Log) -> tuple[bool, bool]:
    """(written, incomplete)."""
    from ..outputs import oserror_text

    n = out.key[1]
    if out.error is not None:
        log.error(out.error)
        run.docs.fail_page(doc, n, out.error)
        return False, False
    incomplete = out.stop != "eos"
    if incomplete:
        log.warn(f"{doc.label(n)}: generation stopped ({out.stop}) without an end-of-text token; the output is "
                 "incomplete")
    try:
        run.docs.write_page(doc, n, out.text, out.record, out.image, out.regions, out.stop)
    except OSError as e:
        msg = f"{doc.label(n)}: cannot write {getattr(e, 'filename', None) or 'output'}: {oserror_text(e)}"
        log.error(msg)
        run.docs.fail_page(doc, n, msg)
        return False, incomplete
    log.info(f"wrote {run.docs.page_md(doc, n)}")
    return True, incomplete


__all__ = ["BatchSummary", "Log", "Run", "run_batch"]
