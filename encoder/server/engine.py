"""The generation backend of tilepass-server: one small interface, ``Engine.submit(request, sink) -> Job``.

A request (``GenRequest``: page images, the prompt, the decoding settings) goes into a bounded queue; a full queue
refuses it at once (``QueueFull``: the HTTP layer answers 503 with Retry-After). ``--parallel`` slots take requests
from the queue: a slot is a front-end thread (it prepares the request's pages and has them encoded) and a sequence
(its own KV cache) of the one text model. Requests whose pages reach the vision stage together are encoded in one
pass (``VisionBatcher``, at most --images-per-pass images a pass). The slot then hands its pages in turn to the
``Decoder``: one thread that prefills a new page alone, then adds it to the running batch, each step one token of
every running page in one ``tp_text_eval_batch`` call (continuous batching: the weights are read once a step for
all, a page that stops gives its place to the next). Each page keeps its own sampler, no-repeat rule and stop rules
(``generate.SequenceGen``), so its tokens are those it gets alone. Events go to the request's sink: ``Delta`` (text
as it is generated, from the decoder thread), then ``Finished`` (every page's output) or ``Failed`` (the exception:
``RequestError`` for a request the model cannot take, ``Cancelled``).

Cancelling a job (a client gone, shutdown) takes it off the queue, or stops its computation: between tokens, and
inside a vision pass or a prefill through the C library's abort poll (interrupt.CancelPipe; a vision pass stops
only when every request in it is cancelled). A cancelled page leaves the decode batch before the next step; the
other pages go on."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..generate import NoRepeat, Sampling, SequenceGen
from ..grounding import DEFAULT_IMAGE_LINK, GroundingParser, Region
from ..interrupt import CancelPipe
from ..pipeline import OcrPipeline, PipelineError
from ..text_model import BatchItem

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
                 on_pass: Callable[[int, float], None] | None = None, hold_s: float = 0.0) -> None:
        self.pipe = pipe
        # Test hook (TILEPASS_TEST_HOLD_VISION_S, read by the server CLI): a pass waits up to hold_s for all of its
        # jobs to be cancelled before it encodes, so a test can cancel a pass in flight whatever the encoder's
        # speed; the encode then starts with the cancel pipe tripped and stops through the library's abort poll.
        self.hold_s = hold_s
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
        if self.hold_s > 0:
            end = time.monotonic() + self.hold_s
            while not all(it.job.cancelled for it in batch) and time.monotonic() < end:
                time.sleep(0.01)
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


@dataclass
class _PageTask:
    """One page of a job handed by its slot to the decoder: the prompt, the slot's sequence, its policy
    (SequenceGen, whose on_token streams the page's deltas), and how it ended."""

    job: Job
    slot: int
    ids: list[int]
    positions: Any
    embd: np.ndarray | None
    gen: SequenceGen
    next_id: int = -1
    decode_t0: float = 0.0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class _Slot:
    """A front-end thread: takes a request from the queue, prepares and encodes its pages (the shared vision pass),
    then hands them one at a time to the decoder (its own sequence, index) and waits for each."""

    def __init__(self, engine: "Engine", index: int) -> None:
        self.engine = engine
        self.index = index
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
            job.emit(event)

    def _run(self, job: Job) -> list[PageOutput]:
        """The request's pages, --images-per-pass at a time (as tilepass-cli): prepared, encoded in a shared pass,
        decoded in turn."""
        req = job.request
        pipe = self.engine.pipe
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
        req, pipe = job.request, self.engine.pipe
        parser = GroundingParser(image_link=DEFAULT_IMAGE_LINK, raw=req.raw)
        sd = pipe.tokenizer.stream()
        pieces: list[str] = []

        def on_token(tok: int) -> None:  # called by the decoder thread
            s = parser.feed(sd.push(tok))
            if s:
                pieces.append(s)
                job.emit(Delta(k, s))

        try:
            p = pipe.prompt(req.prompt, int(emb.shape[0]), tuple(getattr(prep, "token_grid", (0, 0))))
            embd = pipe.check_prompt(p.ids, emb)
        except PipelineError as e:
            raise RequestError(str(e)) from None
        gen = SequenceGen(p.ids, req.max_tokens, () if pipe.eos_id is None else (pipe.eos_id,), req.sampling,
                          no_repeat, pipe.n_ctx, on_token)
        task = _PageTask(job, self.index, list(p.ids), p.positions, embd, gen)
        self.engine.decoder.submit(task)
        task.done.wait()
        if task.error is not None:
            raise task.error
        res = pipe._page_result(f"image {k + 1}", prep, emb, p.ids, gen.result)
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


class Decoder:
    """The one decode thread: the slots' pages are sequences of one text model (slot 0 the model's own sequence,
    slot i its extra sequence i). A page handed in is prefilled alone (its prefill stops through the text model's
    CancelPipe when its job is cancelled), then joins the running batch: each step evaluates one token of every
    running page in one TextModel.eval_batch call (the weights read once for all), and each page's SequenceGen picks
    its next id (its own sampler, no-repeat rule, stop rules). A cancelled page leaves the batch before the next
    step; the others go on."""

    def __init__(self, engine: "Engine", pipe: OcrPipeline, cancel: CancelPipe, n_slots: int) -> None:
        self.engine = engine
        self.pipe = pipe
        self.cancel = cancel
        self.text = pipe.text
        self.seqs: list[Any] = [None] + [pipe.text.new_sequence(pipe.n_ctx or 0) for _ in range(n_slots - 1)]
        self._cv = threading.Condition()
        self._inbox: list[_PageTask] = []
        self._stopping = False
        self._prefilling: Job | None = None  # under engine._lock
        self.n_running = 0
        self.thread = threading.Thread(target=self._loop, name="tilepass-decoder", daemon=True)

    def submit(self, task: _PageTask) -> None:
        with self._cv:
            if self._stopping:
                task.error = Cancelled()
                task.done.set()
                return
            self._inbox.append(task)
            self._cv.notify()

    def poke(self, job: Job) -> None:
        """job was cancelled (called under engine._lock): stop its prefill if it is in one; wake the loop."""
        if self._prefilling is job:
            self.cancel.trip()
        with self._cv:
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()

    def _last(self, logits: np.ndarray) -> np.ndarray:
        a = np.asarray(logits).reshape(-1)
        n_vocab = self.pipe.n_vocab
        return a[-n_vocab:] if n_vocab and a.size >= n_vocab else a

    @staticmethod
    def _end(task: _PageTask, error: BaseException | None = None) -> None:
        if task.decode_t0:
            task.gen.result.decode_s = time.perf_counter() - task.decode_t0
        task.error = error
        task.done.set()

    def _loop(self) -> None:
        running: list[_PageTask] = []
        try:
            while True:
                with self._cv:
                    while not self._inbox and not running and not self._stopping:
                        self._cv.wait()
                    new, self._inbox = self._inbox, []
                    stopping = self._stopping
                if stopping:
                    for t in running + new:
                        self._end(t, Cancelled())
                    running = []
                    return
                for t in new:
                    if self._prefill(t):
                        running.append(t)
                for t in [t for t in running if t.job.cancelled]:
                    running.remove(t)
                    self._end(t, Cancelled())
                self.n_running = len(running)
                if running:
                    running = self._step(running)
                    self.n_running = len(running)
        except BaseException as e:  # noqa: BLE001 - a bug: no slot may wait forever
            with self._cv:
                self._stopping = True
                left, self._inbox = self._inbox, []
            for t in running + left:
                if not t.done.is_set():
                    self._end(t, e)
            raise

    def _prefill(self, t: _PageTask) -> bool:
        """Prefill t alone into its slot's sequence and pick its first id; whether it goes on decoding."""
        eng = self.engine
        if t.job.cancelled:
            self._end(t, Cancelled())
            return False
        seq = self.seqs[t.slot]
        with eng._lock:
            self._prefilling = t.job
        t0 = time.perf_counter()
        try:
            if seq is None:
                self.text.reset()
            else:
                seq.reset()
            (out,) = self.text.eval_batch([BatchItem(seq, t.ids, t.embd, t.positions)])
        except Exception as e:  # noqa: BLE001 - this page fails, the batch goes on
            self._end(t, Cancelled() if t.job.cancelled else e)
            return False
        finally:
            with eng._lock:
                self._prefilling = None
                self.cancel.reset()
        t.gen.result.prefill_s = time.perf_counter() - t0
        t.decode_t0 = time.perf_counter()
        tok = t.gen.next_token(self._last(out))
        if tok is None:
            self._end(t)
            return False
        t.next_id = tok
        return True

    def _step(self, running: list[_PageTask]) -> list[_PageTask]:
        """One token of every running page in one decoder pass; the pages still running after it."""
        try:
            outs = self.text.eval_batch([BatchItem(self.seqs[t.slot], [t.next_id]) for t in running])
        except Exception as e:  # noqa: BLE001 - every page of the failed step gets the reason
            for t in running:
                self._end(t, Cancelled() if t.job.cancelled else e)
            return []
        self.engine._count_step(len(running))
        still: list[_PageTask] = []
        for t, logits in zip(running, outs):
            t.gen.result.n_steps += 1
            if t.job.cancelled:
                self._end(t, Cancelled())
                continue
            tok = t.gen.next_token(self._last(logits))
            if tok is None:
                self._end(t)
            else:
                t.next_id = tok
                still.append(t)
        return still


@dataclass
class EngineStats:
    pages: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    vision_passes: int = 0
    vision_images: int = 0
    vision_seconds: float = 0.0
    by_pass_size: dict[int, int] = field(default_factory=dict)
    decode_steps: int = 0  # decoder passes after the prefills
    decode_rows: int = 0  # tokens evaluated in them (one per running page a step)
    batched_steps: int = 0  # steps of more than one page
    max_rows: int = 0  # the most pages in one step


class Engine:
    """The queue, the slots, the decoder and the shared vision pass. pipe: the OcrPipeline (vision encoder, tokenizer,
    the one text model whose sequences the slots decode in); text_cancel: the CancelPipe its text model was loaded
    with (stops a cancelled job's prefill), vision_cancel the vision encoder's."""

    def __init__(self, pipe: OcrPipeline, text_cancel: CancelPipe, vision_cancel: CancelPipe, n_slots: int,
                 max_queue: int, images_per_pass: int, vision_hold_s: float = 0.0) -> None:
        if n_slots < 1:
            raise ValueError(f"at least one slot (got {n_slots})")
        if n_slots > 1 and not pipe.can_batch:
            raise ValueError("this text model cannot decode several sequences together: one slot only")
        self.pipe = pipe
        self.stats = EngineStats()
        self._lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max(1, max_queue))
        self._busy = 0
        self._closing = False
        self._closed = False
        self._jobs: set[Job] = set()
        self.vision = VisionBatcher(pipe, vision_cancel, images_per_pass, on_pass=self._count_pass,
                                    hold_s=vision_hold_s)
        self.decoder = Decoder(self, pipe, text_cancel, n_slots)
        self.slots = [_Slot(self, i) for i in range(n_slots)]
        self.decoder.thread.start()
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
    def decoding(self) -> int:
        """Pages in the running batch."""
        return self.decoder.n_running

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
        """Refuse new requests, cancel every job (queued or running), stop the slots and the decoder (within
        timeout)."""
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
        self.decoder.stop()
        self.decoder.thread.join(max(0.0, end - time.monotonic()))

    # ---- internals ----
    def _on_cancel(self, job: Job) -> None:
        with self._lock:
            self.decoder.poke(job)  # its prefill (if in one) stops within a graph node
        self.vision.poke()

    def _count_page(self, n_prompt: int, n_generated: int) -> None:
        with self._lock:
            self.stats.pages += 1
            self.stats.prompt_tokens += n_prompt
            self.stats.completion_tokens += n_generated

    def _count_step(self, n_rows: int) -> None:
        with self._lock:
            st = self.stats
            st.decode_steps += 1
            st.decode_rows += n_rows
            st.batched_steps += n_rows > 1
            st.max_rows = max(st.max_rows, n_rows)

    def _count_pass(self, n_images: int, seconds: float) -> None:
        with self._lock:
            st = self.stats
            st.vision_passes += 1
            st.vision_images += n_images
            st.vision_seconds += seconds
            st.by_pass_size[n_images] = st.by_pass_size.get(n_images, 0) + 1
