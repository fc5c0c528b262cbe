"""``tilepass-batch``: documents -> tilepass-cli's output directory, the pages decoded in this process or by a
pool of Ray actors.

    tilepass-batch -m TEXT.gguf --mmproj VISION.gguf scans/ 'more/**/*.pdf' -o out/            # in this process
    tilepass-batch -m TEXT.gguf --mmproj VISION.gguf scans/ -o out/ --ray                      # a local Ray
    tilepass-batch -m TEXT.gguf --mmproj VISION.gguf scans/ -o out/ --ray auto --actors 8      # a running cluster

The model options are tilepass-cli's; the output directory and its manifest are tilepass-cli's too, so either
command resumes the other's run. Exit status as tilepass-cli's: 0 ok, 1 an error (a page or input failed, Ray
missing), 2 usage (a changed model or setting without --force included), 3 a page stopped at -n, 130 / 143
interrupted / terminated.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Sequence

from ..cli import STOP_SIGNALS, _float, _Handlers, _positive_int, add_model_options
from ..interrupt import Interrupt
from .driver import Log, run_batch
from .settings import BatchError, ModelSettings

PROG = "tilepass-batch"


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(prog=PROG, description="OCR folders of PDFs and images into tilepass-cli's resumable "
                                "output layout, in this process or on Ray (a local one, or a cluster).")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_model_options(p)
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="PDFs (doc.pdf, doc.pdf:3-7,12), images, directories and quoted glob patterns")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the output directory (resumable)")
    p.add_argument("--dpi", type=_float("--dpi", 18.0, 1200.0), default=144.0,
                   help="PDF pages are rendered at this resolution (default 144)")
    p.add_argument("--force", action="store_true",
                   help="DIR holds pages made with another model, other settings or another version of an input: "
                        "redo them with these")
    p.add_argument("--parallel", type=_positive_int("--parallel", 0), default=0, metavar="N",
                   help="pages decoded together in each decoder (default 0: tilepass-cli's default for its threads)")
    p.add_argument("--images-per-pass", type=_positive_int("--images-per-pass"), default=None, metavar="N",
                   help="pages encoded in one vision pass (default 4, or --parallel if larger; with --ray at most "
                        "an actor's share of the pages)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="decode on Ray: a local Ray on this machine without ADDRESS, else join that cluster "
                        "('auto', ray://HOST:10001); needs pip install 'tilepass[ray]'")
    p.add_argument("--actors", type=_positive_int("--actors"), default=None, metavar="N",
                   help="Ray: decoder actors (default: the CPUs Ray reports // 4, at least 1, at most one per page)")
    p.add_argument("--threads-per-actor", type=_positive_int("--threads-per-actor", maximum=64), default=None,
                   metavar="T", help="Ray: threads of each actor (default: the CPUs // actors)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_intermixed_args(argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2
    log = Log(args.quiet)
    handlers = _Handlers()  # SIGINT, SIGTERM, SIGHUP unwind (the lock released, Ray shut down); SIGBUS one line
    try:
        handlers.install()
        with Interrupt() as interrupt:  # a signal stops a long C computation of this process within a node
            return _run(args, log, interrupt)
    except KeyboardInterrupt as e:
        log.error(f"{STOP_SIGNALS.get(getattr(e, 'signum', signal.SIGINT), 'stopped')}; the pages written are kept: "
                  "run the same command again to do the rest")
        return 128 + int(getattr(e, "signum", signal.SIGINT))
    finally:
        handlers.restore()


def _run(args: argparse.Namespace, log: Log, interrupt: Interrupt) -> int:
    use_ray = args.ray is not None
    if args.ray and os.path.exists(args.ray):  # `--ray scans/ ...`: the input taken for an address
        log.error(f"--ray {args.ray}: that is a file or directory, not a Ray address; put --ray after the inputs, "
                  "or write --ray=ADDRESS")
        return 2
    try:
        summary = run_batch(args.inputs, args.output, ModelSettings.from_args(args), use_ray=use_ray,
                            ray_address=args.ray or None, actors=args.actors,
                            threads_per_actor=args.threads_per_actor, threads=args.threads, force=args.force, log=log,
                            abort=interrupt)
    except BatchError as e:
        log.error(str(e))
        return 2 if e.usage else 1
    return summary.status


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
