"""The generation backend of tilepass-server: one small interface, ``Engine.submit(request, sink) -> Job``.

A request (``GenRequest``: page images, the prompt, the decoding settings) goes into a bounded queue; a full queue
refuses it at once (``QueueFull``: the HTTP layer answers 503 with Retry-After). ``--parallel`` slots, each a
worker thread owning an ``OcrPipeline`` with its own text model (the text GGUF is memory-mapped: the weights are
the same pages for every slot; each slot has its own KV cache), take requests from the queue. The vision encoder
and the tokenizer are shared: requests whose pages reach the vision stage together are encoded in one pass
(``VisionBatcher``, at most --images-per-pass images a pass). Each slot then decodes its pages in turn and sends
events to the request's sink from its thread: ``Delta`` (text as it is generated), then ``Finished`` (every page's
output) or ``Failed`` (the exception: ``RequestError`` for a request the model cannot take, ``Cancelled``).

Cancelling a job (a client gone, shutdown) takes it off the queue, or stops its computation: between tokens, and
inside a vision pass or a prefill through the C library's abort poll (interrupt.CancelPipe; a vision pass stops
only when every request in it is cancelled).

A batched decoder (several sequences stepping together) replaces the slot workers behind the same submit/sink
interface."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..generate import NoRepeat, Sampling
from ..grounding import DEFAULT_IMAGE_LINK, GroundingParser, Region
from ..interrupt import CancelPipe
from ..pipeline import OcrPipeline, PipelineError

PAGE_SEPARATOR = "\n\n"  # between the pages of a request with several images


class QueueFull(Exception):
    """The queue holds --queue-size requests already."""


class ShuttingDown(Exception):
    """The server is stopping: no new request."""


class RequestError(ValueError):
    """A request the model cannot take (a prompt that does not fit the context, an image the mode cannot tile)."""


class Cancelled(Exception):
    """The job was cancelled (its client went away, or the server stops)."""


@dataclass(frozen=True)
class GenRequest:
    images: Sequence[Any]  # PIL RGB images: one page each
    prompt: str  # the text the family's conventions wrap (prompts.py)
    max_tokens: int
    sampling: Sampling = Sampling()
    no_repeat: NoRepeat | None = None  # None: the family's rule
    mode: str | None = None
    min_tiles: int | None = None
    max_tiles: int | None = None
    raw: bool = False


@dataclass
class PageOutput:
    text: str  # what the CLI prints: clean markdown (or the raw text with raw)
    raw_text: str
    regions: list[Region]
    width: int
    height: int
    mode: str
    tokens: list[int]
    stop_reason: str
    n_prompt: int
    n_image_tokens: int
    encode_ms: float
    prefill_ms: float
    decode_ms: float


@dataclass(frozen=True)
class Delta:
    page: int
    text: str


@dataclass(frozen=True)
class Finished:
    pages: list[PageOutput]
    queued_s: float  # from submit to a slot taking it


@dataclass(frozen=True)
class Failed:
    error: BaseException


Event = Delta | Finished | Failed
Sink = Callable[[Event], None]


class Job:
    """One submitted request: its sink, whether it was cancelled, where it runs."""

    def __init__(self, engine: "Engine", request: GenRequest, sink: Sink) -> None:
        self.request = request
        self._sink = sink
        self._engine = engine
        self._cancelled = threading.Event()
        self.submitted = time.perf_counter()
        self.started: float | None = None
        self.slot: _Slot | None = None  # set (under the engine's lock) while a slot runs it
        self.done = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop the job wherever it is; its sink gets Failed(Cancelled) unless it had finished."""
        if self.done or self.cancelled:
            return
        self._cancelled.set()
        self._engine._on_cancel(self)

    def emit(self, event: Event) -> None:
        try:
            self._sink(event)
        except Exception:  # a sink whose loop is gone (shutdown): nothing to tell
            pass


@dataclass
class _VisionItem:
    prepared: list[Any]
    job: Job
    result: list[np.ndarray] | None = None
    error: BaseException | None = None
    seconds: float = 0.0
    done: bool = False


class VisionBatcher:
    """The shared vision encoder: whichever waiting slot finds no pass running encodes every page waiting (up to
    max_images) in one pass; a slot that is about to hand its pages in (``arriving``) is waited for up to gather_s,
    so requests that arrive together share a pass."""

    def __init__(self, pipe: OcrPipeline, cancel: CancelPipe, max_images: int, gather_s: float = 0.05,
                 on_pass: Callable[[int, float], None] | None = None) -> None:
        self.pipe = pipe
        self.cancel = cancel
        self.max_images = max(1, max_images)
        self.gather_s = gather_s
        self.on_pass = on_pass
        self._cv = threading.Condition()
        self._pending: list[_VisionItem] = []
        self._running: list[_VisionItem] = []
        self._busy = False
        self._arriving = 0

    def announce(self) -> None:
        with self._cv:
            self._arriving += 1

    def withdraw(self) -> None:
        with self._cv:
            self._arriving -= 1
            self._cv.notify_all()

    def poke(self) -> None:
        """A job was cancelled: waiting slots look again; a pass whose jobs are all cancelled is stopped."""
        with self._cv:
            if self._busy and self._running and all(it.job.cancelled for it in self._running):
                self.cancel.trip()
            self._cv.notify_all()

    def encode(self, prepared: list[Any], job: Job) -> tuple[list[np.ndarray], float]:
        """The job's pages' embeddings (after announce()), and this job's share of its pass's seconds."""
        item = _VisionItem(prepared, job)
        with self._cv:
            self._arriving -= 1
            self._pending.append(item)
            self._cv.notify_all()
            while not item.done:
                if job.cancelled and item in self._pending:
                    self._pending.remove(item)
                    raise Cancelled()
                if self._busy or not self._pending:
                    self._cv.wait(0.5)
                    continue
                end = time.monotonic() + self.gather_s
                while self._arriving > 0 and not self._busy and (left := end - time.monotonic()) > 0:
                    self._cv.wait(left)
                if self._busy:
                    continue
                for it in [it for it in self._pending if it.job.cancelled]:
                    self._pending.remove(it)
                    it.error, it.done = Cancelled(), True
                batch: list[_VisionItem] = []
                n = 0
                for it in list(self._pending):
                    if batch and n + len(it.prepared) > self.max_images:
                        break
                    batch.append(it)
                    n += len(it.prepared)
                    self._pending.remove(it)
                if not batch:
                    self._cv.notify_all()
                    continue
                self._busy, self._running = True, batch
                self._cv.release()
                try:
                    self._run(batch)
                finally:
                    self._cv.acquire()
                    self.cancel.reset()
                    self._busy, self._running = False, []
                    self._cv.notify_all()
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result, item.seconds

    def _run(self, batch: list[_VisionItem]) -> None:
        pages = [p for it in batch for p in it.prepared]
        t0 = time.perf_counter()
        try:
            embs, secs = self.pipe.encode(pages)
        except BaseException as e:  # noqa: BLE001 - every job of the pass gets the reason
            for it in batch:
                it.error = Cancelled() if it.job.cancelled else e
                it.done = True
            return
        total = max(1, sum(int(getattr(p, "n_tokens", 1)) for p in pages))
        k = 0
        for it in batch:
            mine = embs[k:k + len(it.prepared)]
            k += len(it.prepared)
            share = sum(int(getattr(p, "n_tokens", 1)) for p in it.prepared) / total
            it.result, it.seconds, it.done = mine, secs * share, True
        if self.on_pass is not None:
            self.on_pass(len(pages), time.perf_counter() - t0)


class _Slot:
    """A worker thread with its own pipeline (text model + KV cache); its CancelPipe stops its prefill."""

    def __init__(self, engine: "Engine", index: int, pipe: OcrPipeline, cancel: CancelPipe) -> None:
        self.engine = engine
        self.index = index
        self.pipe = pipe
        self.cancel = cancel
        self.thread = threading.Thread(target=self._loop, name=f"tilepass-slot-{index}", daemon=True)

    def _loop(self) -> None:
        eng = self.engine
        while True:
            job = eng._queue.get()
            if job is None:
                return
            with eng._lock:
                if job.cancelled:
                    job.done = True
                    eng._jobs.discard(job)
                    job.emit(Failed(Cancelled()))
                    continue
                job.slot = self
                job.started = time.perf_counter()
                eng._busy += 1
            try:
                event: Event = Finished(self._run(job), job.started - job.submitted)
            except BaseException as e:  # noqa: BLE001 - the job fails, the slot goes on
                event = Failed(Cancelled() if job.cancelled else e)
            with eng._lock:
                job.slot = None
                job.done = True
                eng._jobs.discard(job)
                eng._busy -= 1
                self.cancel.reset()
            job.emit(event)

    def _run(self, job: Job) -> list[PageOutput]:
        """The request's pages, --images-per-pass at a time (as tilepass-cli): prepared, encoded in a shared pass,
        decoded in turn."""
        req = job.request
        pipe = self.pipe
        batcher = self.engine.vision
        no_repeat = req.no_repeat if req.no_repeat is not None else pipe.default_no_repeat()
        out: list[PageOutput] = []
        for c0 in range(0, len(req.images), batcher.max_images):
            batcher.announce()
            try:
                prepared = []
                for im in req.images[c0:c0 + batcher.max_images]:
                    try:
                        prepared.append(pipe.vision.prepare(im, req.mode, req.min_tiles, req.max_tiles))
                    except (ValueError, OSError) as e:
                        raise RequestError(f"image {c0 + len(prepared) + 1}: {e}") from None
            except BaseException:
                batcher.withdraw()
                raise
            embs, enc_s = batcher.encode(prepared, job)
            share = enc_s / max(1, len(prepared))
            for j, (prep, emb) in enumerate(zip(prepared, embs)):
                if job.cancelled:
                    raise Cancelled()
                k = c0 + j
                if k:
                    job.emit(Delta(k, PAGE_SEPARATOR))
                out.append(self._page(job, k, prep, emb, no_repeat, share))
        return out

    def _page(self, job: Job, k: int, prep: Any, emb: np.ndarray, no_repeat: NoRepeat, enc_s: float) -> PageOutput:
        """One page decoded as tilepass-cli decodes it (grounding tags cleaned, PaddleOCR-VL's tables converted)."""
        req, pipe = job.request, self.pipe
        parser = GroundingParser(image_link=DEFAULT_IMAGE_LINK, raw=req.raw)
        sd = pipe.tokenizer.stream()
        pieces: list[str] = []

        def on_token(tok: int) -> None:
            if job.cancelled:
                raise Cancelled()
            s = parser.feed(sd.push(tok))
            if s:
                pieces.append(s)
                job.emit(Delta(k, s))

        try:
            res = pipe.run_page(f"image {k + 1}", prep, emb, req.prompt, req.max_tokens, req.sampling, no_repeat,
                                on_token)
        except PipelineError as e:
            raise RequestError(str(e)) from None
        tail = parser.feed(sd.flush()) + parser.finish()
        if tail:
            pieces.append(tail)
            job.emit(Delta(k, tail))
        text = "".join(pieces)
        if getattr(pipe.conventions, "table_markup", False) and not req.raw:
            from ..otsl import convert_tables

            text = convert_tables(text)
        w, h = res.original_size
        self.engine._count_page(res.n_prompt, len(res.tokens))
        return PageOutput(text=text, raw_text=res.text, regions=list(parser.regions), width=int(w), height=int(h),
                          mode=res.mode, tokens=list(res.tokens), stop_reason=res.stop_reason, n_prompt=res.n_prompt,
                          n_image_tokens=res.n_image_tokens, encode_ms=enc_s * 1e3, prefill_ms=res.prefill_ms,
                          decode_ms=res.decode_ms)


@dataclass
class EngineStats:
    pages: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    vision_passes: int = 0
    vision_images: int = 0
    vision_seconds: float = 0.0
    by_pass_size: dict[int, int] = field(default_factory=dict)


class Engine:
    """The queue, the slots and the shared vision pass. pipes: one OcrPipeline per slot, all with the same vision
    encoder and tokenizer; slot_cancels[i] is the CancelPipe slot i's text model was loaded with, vision_cancel the
    vision encoder's."""

    def __init__(self, pipes: Sequence[OcrPipeline], slot_cancels: Sequence[CancelPipe], vision_cancel: CancelPipe,
                 max_queue: int, images_per_pass: int) -> None:
        if not pipes or len(pipes) != len(slot_cancels):
            raise ValueError("one CancelPipe per pipeline, at least one pipeline")
        self.pipes = list(pipes)
        self.stats = EngineStats()
        self._lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max(1, max_queue))
        self._busy = 0
        self._closing = False
        self._closed = False
        self._jobs: set[Job] = set()
        self.vision = VisionBatcher(pipes[0], vision_cancel, images_per_pass, on_pass=self._count_pass)
        self.slots = [_Slot(self, i, p, c) for i, (p, c) in enumerate(zip(pipes, slot_cancels))]
        for s in self.slots:
            s.thread.start()

    # ---- what the HTTP layer asks ----
    @property
    def n_slots(self) -> int:
        return len(self.slots)

    @property
    def busy_slots(self) -> int:
        return self._busy

    @property
    def queue_length(self) -> int:
        return self._queue.qsize()

    @property
    def closing(self) -> bool:
        return self._closing

    def submit(self, request: GenRequest, sink: Sink) -> Job:
        """Queue the request (QueueFull when the queue is full, ShuttingDown after close)."""
        job = Job(self, request, sink)
        with self._lock:
            if self._closing:
                raise ShuttingDown()
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise QueueFull() from None
            self._jobs.add(job)
        return job

    def stop_accepting(self) -> None:
        """Refuse new requests (ShuttingDown); those queued or running go on."""
        with self._lock:
            self._closing = True

    def cancel_all(self) -> None:
        """Cancel every job, queued or running (each sink gets Failed(Cancelled))."""
        with self._lock:
            jobs = list(self._jobs)
        for j in jobs:
            j.cancel()

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new requests, cancel every job (queued or running), stop the slots (each within timeout)."""
        with self._lock:
            if self._closed:
                return
            self._closing = self._closed = True
        self.cancel_all()
        end = time.monotonic() + timeout
        for _ in self.slots:
            while any(s.thread.is_alive() for s in self.slots) and time.monotonic() < end:
                try:
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:  # cancelled jobs still queued: the slots drain them
                    continue
        for s in self.slots:
            s.thread.join(max(0.0, end - time.monotonic()))

    # ---- internals ----
    def _on_cancel(self, job: Job) -> None:
        with self._lock:
            if job.slot is not None:
                job.slot.cancel.trip()  # its prefill (if in one) stops within a graph node
        self.vision.poke()

    def _count_page(self, n_prompt: int, n_generated: int) -> None:
        with self._lock:
            self.stats.pages += 1
            self.stats.prompt_tokens += n_prompt
            self.stats.completion_tokens += n_generated

    def _count_pass(self, n_images: int, seconds: float) -> None:
        with self._lock:
            st = self.stats
            st.vision_passes += 1
            st.vision_images += n_images
            st.vision_seconds += seconds
            st.by_pass_size[n_images] = st.by_pass_size.get(n_images, 0) + 1
