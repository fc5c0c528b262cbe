"""``tilepass-server``: the options (tilepass-cli's model options, then the server's), loading the models once per
slot (the text GGUF is memory-mapped: the slots share its pages; the vision encoder and tokenizer are loaded once),
and uvicorn. SIGTERM or Ctrl-C: stop accepting, let the requests in flight finish within --shutdown-timeout, cancel
the rest, exit 0.

    tilepass-server -m TEXT.gguf --mmproj VISION.gguf [--host 127.0.0.1] [--port 8080] [--api-key KEY]
                    [-t THREADS] [--parallel N] [--max-image-pixels P] [--max-body-mb M] [--allow-files DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..cli import (EXIT_ERROR, EXIT_OK, EXIT_USAGE, PRECISIONS, CliError, _float, _positive_int, _resolve_prompt,
                   add_model_options, check_tile_args, load_pipeline)
from ..images import MAX_PIXELS

if TYPE_CHECKING:  # FastAPI and uvicorn are imported when the server starts (a clear error if they are missing)
    from .app import Defaults
    from .engine import Engine

PROG = "tilepass-server"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="An OpenAI-compatible server (POST /v1/chat/completions with image_url parts, GET /v1/models, "
                    "/health, /metrics) over a text GGUF and its vision (mmproj) GGUF. The model options set the "
                    "defaults of requests that do not give them.")
    from .. import __version__

    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_model_options(p)
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=_positive_int("--port", 0, 65535), default=8080, help="port (default 8080)")
    s.add_argument("--api-key", default=os.environ.get("TILEPASS_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1/* (default: $TILEPASS_API_KEY; none: no key)")
    s.add_argument("--parallel", type=_positive_int("--parallel", 1, 256), default=1, metavar="N",
                   help="requests decoded at the same time, each in its own slot (a sequence with its own KV cache); the "
                        "slots' pages are decoded together, one batched step for all (default 1)")
    s.add_argument("--queue-size", type=_positive_int("--queue-size", 1, 1_000_000), default=16, metavar="N",
                   help="requests that may wait for a slot; one more is answered 503 with Retry-After (default 16)")
    s.add_argument("--images-per-pass", type=_positive_int("--images-per-pass"), default=4, metavar="N",
                   help="most images of waiting requests encoded together in one vision pass (default 4)")
    s.add_argument("--max-images", type=_positive_int("--max-images"), default=8, metavar="N",
                   help="most images in one request (default 8)")
    s.add_argument("--max-image-pixels", type=_positive_int("--max-image-pixels"), default=MAX_PIXELS, metavar="P",
                   help=f"larger images are refused with 400 (default {MAX_PIXELS})")
    s.add_argument("--max-body-mb", type=_float("--max-body-mb", 0.0, 4096.0, lo_open=True), default=32.0,
                   metavar="M", help="larger request bodies are refused with 413 (default 32)")
    s.add_argument("--allow-files", metavar="DIR", default=None,
                   help="take file:// image URLs of files under DIR (default: refused; remote URLs always are)")
    s.add_argument("--alias", default=None, help="the model's name in /v1/models and responses (default: the text "
                                                 "file's name without .gguf)")
    s.add_argument("--shutdown-timeout", type=_float("--shutdown-timeout", 0.0, 3600.0), default=10.0, metavar="S",
                   help="on SIGTERM, seconds the requests in flight get to finish before they are cancelled "
                        "(default 10)")
    s.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"), default="info")
    s.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    return p


def load_engine(args: argparse.Namespace, threads: int) -> Engine:
    """The models (the vision encoder, the tokenizer, one text model with a sequence per slot) and the engine
    over them."""
    from ..interrupt import CancelPipe
    from ..native import TilepassError
    from ..pipeline import PipelineError, check_model_files
    from ..vision import VisionEncoder
    from .engine import Engine

    try:
        check_model_files(args.model, args.mmproj)
    except PipelineError as e:
        raise CliError(str(e)) from None
    vision_cancel = CancelPipe()
    try:
        vision = VisionEncoder(args.mmproj, n_threads=threads, precision=PRECISIONS[args.precision],
                               abort=vision_cancel)
    except TilepassError as e:
        raise CliError(f"{args.mmproj}: cannot load the vision model: {e}") from None
    text_cancel = CancelPipe()
    pipe = load_pipeline(args, threads, text_cancel, vision_model=vision)
    try:
        return Engine(pipe, text_cancel, vision_cancel, n_slots=args.parallel, max_queue=args.queue_size,
                      images_per_pass=args.images_per_pass, vision_hold_s=_test_vision_hold())
    except (ValueError, TilepassError) as e:
        raise CliError(f"{args.model}: {e}") from None


def _test_vision_hold() -> float:
    """TILEPASS_TEST_HOLD_VISION_S, a test hook: seconds a vision pass waits for its jobs to be cancelled before it
    encodes (tests/test_server.py cancels a pass in flight with it); unset or 0 in normal use."""
    raw = os.environ.get("TILEPASS_TEST_HOLD_VISION_S", "0")
    try:
        hold = float(raw)
    except ValueError:
        raise CliError(f"TILEPASS_TEST_HOLD_VISION_S={raw!r}: not a number of seconds") from None
    if not 0 <= hold <= 60:
        raise CliError(f"TILEPASS_TEST_HOLD_VISION_S={raw!r}: between 0 and 60 seconds")
    return hold


def _defaults(args: argparse.Namespace, engine: Engine) -> Defaults:
    from .app import Defaults

    prompt = _resolve_prompt(args, engine.pipe, args.prompt)
    return Defaults(prompt=prompt, max_tokens=args.n_predict, temperature=args.temp, top_k=args.top_k,
                    top_p=args.top_p, seed=None if args.seed == -1 else args.seed,
                    no_repeat_ngram=args.no_repeat_ngram, no_repeat_window=args.no_repeat_window,
                    no_repeat_scope=args.no_repeat_scope, mode=args.mode, min_tiles=args.min_tiles,
                    max_tiles=args.max_tiles, raw=args.raw)


def _check_usage(args: argparse.Namespace) -> None:
    if args.prompt is not None and args.task is not None:
        raise CliError("-p and --task are two ways to give the prompt: use one", EXIT_USAGE)
    check_tile_args(args)
    if args.allow_files is not None and not Path(args.allow_files).is_dir():
        raise CliError(f"--allow-files {args.allow_files}: not a directory", EXIT_USAGE)


def _server_class(uvicorn, engine, timeout: float):
    """uvicorn's Server whose shutdown first refuses new requests, then cancels the jobs still running after timeout
    seconds: their requests end by themselves (503, or an error event in a stream) before uvicorn's own deadline
    (timeout + 5 s) would cancel the request tasks."""

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            engine.stop_accepting()
            handle = asyncio.get_running_loop().call_later(timeout, engine.cancel_all)
            try:
                await super().shutdown(sockets)
            finally:
                handle.cancel()

    return Server


def serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .app import ServerConfig, create_app
    except ImportError as e:
        raise CliError(f"the server needs FastAPI and uvicorn ({e}); install them with: pip install 'tilepass[server]'")
    from .chat import Limits

    _check_usage(args)
    threads = min(args.threads or (os.cpu_count() or 1), 64)
    engine = load_engine(args, threads)
    try:
        defaults = _defaults(args, engine)
        model_id = args.alias or Path(args.model).name.removesuffix(".gguf")
        limits = Limits(max_image_pixels=args.max_image_pixels, max_images=args.max_images,
                        allow_files=Path(os.path.realpath(args.allow_files)) if args.allow_files else None)
        config = ServerConfig(model_id=model_id, defaults=defaults, limits=limits,
                              max_body_bytes=int(args.max_body_mb * 1024 * 1024), api_key=args.api_key or None,
                              shutdown_timeout_s=args.shutdown_timeout)
        app = create_app(engine, config)
        server = _server_class(uvicorn, engine, args.shutdown_timeout)(uvicorn.Config(
            app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log, lifespan="on",
            timeout_graceful_shutdown=args.shutdown_timeout + 5.0))
        print(f"{PROG}: {model_id} ({engine.pipe.conventions.family}), {args.parallel} slot(s), {threads} "
              f"thread(s), queue {args.queue_size}; listening on http://{args.host}:{args.port}", file=sys.stderr,
              flush=True)
        if not config.api_key and args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"{PROG}: warning: listening on {args.host} without --api-key: anyone who reaches this port can use "
                  "the server", file=sys.stderr, flush=True)
        # uvicorn re-raises the signal that stopped it once it has shut down gracefully: these handlers take it,
        # so that a graceful stop exits 0 instead of dying of the signal
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, f: None)
        try:
            server.run()
        except SystemExit as e:  # uvicorn could not start (the port is taken, ...): it logged why
            code = e.code if isinstance(e.code, int) else EXIT_ERROR
            if code:
                raise CliError(f"could not serve on {args.host}:{args.port}", code) from None
    finally:
        engine.close(args.shutdown_timeout)
    print(f"{PROG}: stopped", file=sys.stderr, flush=True)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    try:
        return serve(args)
    except CliError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr, flush=True)
        return e.status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
