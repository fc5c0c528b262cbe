"""The HTTP routes (FastAPI): ``POST /v1/chat/completions`` (plain, or ``stream: true`` as server-sent events),
``GET /v1/models``, ``GET /health``, ``GET /metrics``. Requests become engine jobs (engine.py); every refusal is an
OpenAI-style error (errors.py) and no request can take the server down: anything unexpected is a 500 for that
request only."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..generate import Sampling
from ..grounding import regions_json
from ..pipeline import PipelineError
from .chat import ChatRequest, Limits, parse_chat
from .engine import (Cancelled, Delta, Engine, Failed, Finished, GenRequest, PageOutput, QueueFull, RequestError,
                     ShuttingDown)
from .errors import ApiError, bad_request, error_body
from .metrics import Metrics, engine_figures

log = logging.getLogger("tilepass.server")
CHAT = "/v1/chat/completions"


@dataclass(frozen=True)
class Defaults:
    """The server's settings for what a request does not say (the model options of the command line)."""
    prompt: str
    max_tokens: int
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    no_repeat_ngram: int | None = None  # None: the model family's
    no_repeat_window: int | None = None
    no_repeat_scope: str = "generated"
    mode: str | None = None
    min_tiles: int | None = None
    max_tiles: int | None = None
    raw: bool = False


@dataclass(frozen=True)
class ServerConfig:
    model_id: str
    defaults: Defaults
    limits: Limits
    max_body_bytes: int
    api_key: str | None = None
    retry_after_s: int = 1
    shutdown_timeout_s: float = 10.0


class _ClientGone(Exception):
    pass


def create_app(engine: Engine, config: ServerConfig, metrics: Metrics | None = None) -> FastAPI:
    metrics = metrics or Metrics()
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # uvicorn has stopped accepting and waited for (or cancelled) the requests in flight
        await asyncio.to_thread(engine.close, config.shutdown_timeout_s)

    app = FastAPI(title="tilepass-server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.metrics, app.state.config = engine, metrics, config

    def fail(e: ApiError, route: str) -> JSONResponse:
        metrics.request(route, e.status)
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return fail(e, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        msg = {404: f"no route {request.method} {request.url.path}",
               405: f"method {request.method} not allowed on {request.url.path}"}.get(e.status_code, str(e.detail))
        metrics.request("other", e.status_code)
        return JSONResponse(error_body(e.status_code, msg), status_code=e.status_code, headers=getattr(e, "headers", None))

    def check_key(request: Request) -> None:
        if config.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), config.api_key.encode()):
            raise ApiError(401, "invalid API key (give it as 'Authorization: Bearer KEY')", code="invalid_api_key")

    @app.get("/health")
    async def health() -> JSONResponse:
        body = {"status": "shutting down" if engine.closing else "ok", "slots": engine.n_slots,
                "slots_busy": engine.busy_slots, "queue_length": engine.queue_length}
        status = 503 if engine.closing else 200
        metrics.request("/health", status)
        return JSONResponse(body, status_code=status)

    @app.get("/metrics")
    async def prom() -> PlainTextResponse:
        gauges, counters = engine_figures(engine)
        metrics.request("/metrics", 200)
        return PlainTextResponse(metrics.render(gauges, counters), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        check_key(request)
        metrics.request("/v1/models", 200)
        return JSONResponse({"object": "list", "data": [{"id": config.model_id, "object": "model",
                                                         "created": created, "owned_by": "tilepass"}]})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:  # a bug: this request fails, not the server
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(e).__name__, e)
        metrics.request(request.url.path, 500)
        return JSONResponse(error_body(500, f"internal error: {type(e).__name__}: {e}"), status_code=500)

    @app.post(CHAT)
    async def chat(request: Request) -> Any:
        t0 = time.perf_counter()
        try:
            return await _chat(request, t0)
        except _ClientGone:  # nobody to answer; its job is cancelled
            metrics.request(CHAT, 499, time.perf_counter() - t0)
            return Response(status_code=499)

    async def _chat(request: Request, t0: float) -> Any:
        check_key(request)
        body = await _read_body(request, config.max_body_bytes)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
            raise bad_request(f"the request body is not valid JSON ({e})", None, "invalid_json") from None
        chat_req = await asyncio.to_thread(parse_chat, data, config.limits)
        gen = _gen_request(engine, config.defaults, chat_req)
        events = _Events(request)
        try:
            job = engine.submit(gen, events.sink(asyncio.get_running_loop()))
        except QueueFull:
            raise ApiError(503, f"the server is busy: {engine.queue_length} requests wait for its {engine.n_slots} "
                                "slot(s); retry later", code="queue_full",
                           headers={"Retry-After": str(config.retry_after_s)}) from None
        except ShuttingDown:
            raise ApiError(503, "the server is shutting down", code="shutting_down") from None
        try:
            first = await events.next()
        except BaseException:
            job.cancel()
            raise
        if isinstance(first, Failed):
            raise _failure(first.error, engine)
        if isinstance(first, Delta):
            metrics.first_token_after(time.perf_counter() - t0)
        cid = "chatcmpl-" + secrets.token_hex(12)
        if chat_req.stream:
            events.watch = False
            return StreamingResponse(_sse(first, events, job, cid, chat_req, t0),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            ev = first
            while not isinstance(ev, Finished):  # the deltas are in the pages' text already
                if isinstance(ev, Failed):
                    raise _failure(ev.error, engine)
                ev = await events.next()
        except BaseException:
            job.cancel()
            raise
        metrics.request(CHAT, 200, time.perf_counter() - t0)
        return JSONResponse(_completion(cid, config.model_id, ev.pages))

    async def _sse(first: Any, events: _Events, job: Any, cid: str, chat_req: ChatRequest,
                   t0: float) -> AsyncIterator[bytes]:
        now = int(time.time())

        def chunk(delta: dict, finish: str | None = None, **extra: Any) -> bytes:
            obj = {"id": cid, "object": "chat.completion.chunk", "created": now, "model": config.model_id,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
            return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

        status = 200
        try:
            yield chunk({"role": "assistant", "content": ""})
            ev = first
            while True:
                if isinstance(ev, Delta):
                    yield chunk({"content": ev.text})
                elif isinstance(ev, Finished):
                    done = _completion(cid, config.model_id, ev.pages)
                    yield chunk({}, done["choices"][0]["finish_reason"], pages=done["pages"])
                    if chat_req.include_usage:
                        usage = {"id": cid, "object": "chat.completion.chunk", "created": now,
                                 "model": config.model_id, "choices": [], "usage": done["usage"]}
                        yield b"data: " + json.dumps(usage).encode() + b"\n\n"
                    break
                else:  # Failed mid-stream: the status line is sent already; the error goes as an event
                    err = _failure(ev.error, engine)
                    status = err.status
                    yield b"data: " + json.dumps(err.body()).encode() + b"\n\n"
                    break
                ev = await events.next()
            yield b"data: [DONE]\n\n"
        except BaseException:
            status = 499  # the client went away (or the server stops): the job is cancelled below
            raise
        finally:
            job.cancel()  # a no-op once it finished
            metrics.request(CHAT, status, time.perf_counter() - t0)

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    too_big = ApiError(413, f"the request body is larger than {limit} bytes (--max-body-mb)", code="body_too_large")
    cl = request.headers.get("content-length")
    if cl is not None:
        try:
            if int(cl) > limit:
                raise too_big
        except ValueError:
            raise bad_request("the Content-Length header is not a number") from None
    chunks, n = [], 0
    try:
        async for c in request.stream():
            n += len(c)
            if n > limit:
                raise too_big
            chunks.append(c)
    except ClientDisconnect:
        raise _ClientGone() from None
    return b"".join(chunks)


class _Events:
    """A job's events as the slot thread sends them; ``next()`` raises _ClientGone once the client has
    disconnected (asked at most twice a second, whether events come or not). A streamed response does not ask:
    Starlette cancels it when the client goes."""

    def __init__(self, request: Request, watch: bool = True) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.request = request
        self.watch = watch
        self._checked = time.monotonic()

    def sink(self, loop: asyncio.AbstractEventLoop) -> Any:
        return lambda ev: loop.call_soon_threadsafe(self.queue.put_nowait, ev)

    async def next(self) -> Any:
        while True:
            if self.watch and time.monotonic() - self._checked >= 0.5:
                self._checked = time.monotonic()
                if await self.request.is_disconnected():
                    raise _ClientGone()
            try:
                return await asyncio.wait_for(self.queue.get(), 0.5)
            except asyncio.TimeoutError:
                continue


def _failure(e: BaseException, engine: Engine) -> ApiError:
    if isinstance(e, RequestError):
        return bad_request(str(e), None, "invalid_request")
    if isinstance(e, Cancelled):
        return ApiError(503, "the request was cancelled: the server is shutting down" if engine.closing
                        else "the request was cancelled", code="cancelled")
    log.error("request failed: %s: %s", type(e).__name__, e)
    return ApiError(500, f"the model failed on this request: {type(e).__name__}: {e}", code="internal_error")


def _gen_request(engine: Engine, d: Defaults, chat: ChatRequest) -> GenRequest:
    """The request's settings over the server's defaults, checked against the model (ApiError 400)."""
    s = chat.settings
    pipe = engine.pipe
    prompt = chat.text if chat.text is not None and chat.text.strip() else d.prompt
    try:
        pipe.prompt(prompt, 1, (1, 1))
    except PipelineError as e:
        raise bad_request(f"the prompt cannot be used: {e}", "messages", "invalid_prompt") from None
    mode = s.get("mode", d.mode)
    modes = tuple(getattr(pipe.vision, "modes", ()))
    if mode is not None and modes and mode not in modes:
        raise bad_request(f"'mode' must be one of {', '.join(modes)} (got {mode!r})", "mode", "invalid_value")
    try:
        sampling = Sampling(temperature=s.get("temperature", d.temperature), top_k=s.get("top_k", d.top_k),
                            top_p=s.get("top_p", d.top_p), seed=s.get("seed", d.seed))
        no_repeat = dataclasses.replace(
            pipe.default_no_repeat(s.get("no_repeat_ngram_size", d.no_repeat_ngram),
                                   s.get("no_repeat_window", d.no_repeat_window)),
            scope=s.get("no_repeat_scope", d.no_repeat_scope))
    except ValueError as e:
        raise bad_request(str(e)) from None
    return GenRequest(images=chat.images, prompt=prompt, max_tokens=s.get("max_tokens", d.max_tokens),
                      sampling=sampling, no_repeat=no_repeat, mode=mode, min_tiles=d.min_tiles, max_tiles=d.max_tiles,
                      raw=s.get("raw", d.raw))


def _finish_reason(pages: list[PageOutput]) -> str:
    return "length" if any(p.stop_reason in ("length", "context") for p in pages) else "stop"


def page_json(p: PageOutput) -> dict:
    """A page's grounding regions (boxes in pixels of its image and in the model's 0-999 grid) and figures."""
    return {"width": p.width, "height": p.height, "mode": p.mode, "stop_reason": p.stop_reason,
            "complete": p.stop_reason == "eos", "regions": regions_json(p.regions, p.width, p.height),
            "tokens": {"prompt": p.n_prompt, "image": p.n_image_tokens, "generated": len(p.tokens)},
            "timings_ms": {"encode": round(p.encode_ms, 1), "prefill": round(p.prefill_ms, 1),
                           "decode": round(p.decode_ms, 1)}}


def _completion(cid: str, model: str, pages: list[PageOutput]) -> dict:
    from .engine import PAGE_SEPARATOR

    n_prompt = sum(p.n_prompt for p in pages)
    n_gen = sum(len(p.tokens) for p in pages)
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": PAGE_SEPARATOR.join(p.text for p in pages)},
                         "finish_reason": _finish_reason(pages), "logprobs": None}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_gen, "total_tokens": n_prompt + n_gen},
            "pages": [page_json(p) for p in pages]}
