"""``convert-hf-to-gguf`` / ``python -m convert``."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Sequence

from gguf import GGUFValueType as VT

from .converter import Plan, convert, plan
from .errors import ConversionError
from .quant_policy import OUTTYPES

PROG = "convert-hf-to-gguf"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Convert a checkpoint (safetensors) of DeepSeek-OCR, DeepSeek-OCR-2, PaddleOCR-VL or DeepSeek-VL2 "
                    "to GGUF files llama.cpp and tilepass load: the text model or, with --mmproj, the vision model "
                    "(clip; the projector type names the family). The family is read from config.json.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("model_dir", metavar="DIR", help="checkpoint directory (config.json, *.safetensors, tokenizer)")
    p.add_argument("--mmproj", action="store_true", help="write the vision GGUF instead of the text GGUF")
    p.add_argument("--outtype", default="auto", type=str.lower, choices=OUTTYPES,
                   help="type of the weight matrices (default auto: text q8_0, vision f16); tensors llama.cpp "
                        "keeps in F32 stay F32, rows that do not fit a block fall back (K -> q8_0 -> f16)")
    p.add_argument("--outfile", metavar="PATH", help="output file (default: DIR/[mmproj-]NAME-TYPE.gguf)")
    p.add_argument("--vocab-only", action="store_true", help="write only the KV pairs and tokenizer, no tensors")
    p.add_argument("--dry-run", action="store_true", help="print every tensor and KV pair without writing")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def _fmt_value(kv) -> str:
    v = kv.value
    if kv.vtype == VT.ARRAY:
        items = list(v)
        head = ", ".join(repr(x) if isinstance(x, str) else f"{x:g}" if isinstance(x, float) else str(x)
                         for x in items[:6])
        more = f", ... ({len(items)} items)" if len(items) > 6 else ""
        return f"[{head}{more}]"
    if kv.vtype == VT.STRING:
        s = str(v)
        return repr(s if len(s) <= 80 else s[:77] + "...") + (f" ({len(s)} chars)" if len(s) > 80 else "")
    if kv.vtype == VT.FLOAT32:
        return f"{v:g}"
    return str(v).lower() if isinstance(v, bool) else str(v)


def print_plan(p: Plan, outfile: str | None, out=None) -> None:
    out = out or sys.stdout
    target = outfile or p.default_outfile()
    print(f"# {p.model_dir} ({p.config.layout} layout, {p.config.architecture}) -> {target}", file=out)
    print(f"# architecture {p.arch}, outtype {p.outtype} ({p.chosen.name}); {len(p.kv) + 1} KV pairs, "
          f"{len(p.tensors)} tensors; {p.input_bytes / 1e6:.1f} MB in -> {p.output_bytes / 1e6:.1f} MB of tensor data",
          file=out)
    print("## KV pairs", file=out)
    print(f"general.architecture STRING = {p.arch!r}", file=out)
    for kv in p.kv:
        typ = kv.vtype.name + (f"[{kv.sub_type.name}]" if kv.sub_type is not None else "")
        print(f"{kv.key} {typ} = {_fmt_value(kv)}", file=out)
    print("## tensors (source -> GGUF name, shape [out, in, ...], type)", file=out)
    for t in p.tensors:
        if len(t.sources) > 1:
            src = f"{t.sources[0].name} .. {t.sources[-1].name} (stacked x{len(t.sources)})"
        else:
            src = t.sources[0].name
        dt = t.sources[0].dtype
        note = f"  ({t.note})" if t.note else ""
        print(f"{src} [{dt}] -> {t.name} {list(t.shape)} {t.qtype.name}{note}", file=out)
    for name in p.dropped:
        print(f"{name} -> (dropped: unused by the graph)", file=out)
    if p.skipped:
        other = "text" if p.mmproj else "vision (--mmproj)"
        print(f"# {len(p.skipped)} tensors belong to the {other} file and are not written here", file=out)


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP, unwinding like Ctrl-C (the writer removes its temporary file); exit 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


STOP_SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}


def _on_signal(signum: int, frame: object) -> None:
    raise Signalled(signum)


def _install_signal_handlers() -> dict[int, object]:
    """SIGTERM and SIGHUP raise Signalled (SIGINT already raises KeyboardInterrupt); the old handlers back."""
    old: dict[int, object] = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            old[sig] = signal.signal(sig, _on_signal)
        except (ValueError, OSError):  # not the main thread
            break
    return old


def _restore_signal_handlers(old: dict[int, object]) -> None:
    for sig, handler in old.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]


def _report_stop(e: KeyboardInterrupt) -> int:
    signum = e.signum if isinstance(e, Signalled) else signal.SIGINT
    try:  # after SIGHUP the terminal may be gone
        print(f"{PROG}: error: {STOP_SIGNALS[signum]} ({signal.Signals(signum).name}); the output file was not "
              "written", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
    return 128 + int(signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    old_handlers = _install_signal_handlers()
    try:
        return _main(args)
    except KeyboardInterrupt as e:  # one that came after _main's own handlers
        return _report_stop(e)
    finally:
        _restore_signal_handlers(old_handlers)


def _main(args: argparse.Namespace) -> int:
    try:
        if args.dry_run:
            p = plan(args.model_dir, mmproj=args.mmproj, outtype=args.outtype, vocab_only=args.vocab_only)
            print_plan(p, args.outfile)
            return 0
        res = convert(args.model_dir, mmproj=args.mmproj, outtype=args.outtype, outfile=args.outfile,
                      vocab_only=args.vocab_only, force=args.force, progress=False if args.no_progress else None)
    except ConversionError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # SIGINT, SIGTERM, SIGHUP: the temporary file is gone
        return _report_stop(e)
    except BrokenPipeError:  # e.g. --dry-run | head
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # as the Python docs advise: no second error at exit
        return 0
    p = res.plan
    mb_in = p.input_bytes / 1e6
    print(f"{PROG}: wrote {res.outfile} ({len(p.tensors)} tensors, {p.output_bytes / 1e6:.1f} MB; "
          f"{mb_in:.1f} MB read in {res.seconds:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
