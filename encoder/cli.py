"""``tilepass-cli``: images and PDFs -> markdown with a DeepSeek-OCR text GGUF and its vision (mmproj) GGUF.

    tilepass-cli -m TEXT.gguf --mmproj VISION.gguf --image page.png [--image more.png ...] [-o OUT]
    tilepass-cli -m TEXT.gguf --mmproj VISION.gguf doc.pdf 'scans/*.pdf' report.pdf:3-7,12 -o OUTDIR

Inputs (documents.py): images, PDFs (rendered at --dpi, pdf.py), page ranges, directories and globs. With a
PDF, a directory or a glob among them and -o, the run writes the document layout of layout.py into the
directory -o names and records what it did in OUTDIR/.tilepass-manifest.json (manifest.py): the same command
run again does only the pages not done (a changed model or setting is refused unless --force).

The images are encoded --images-per-pass at a time (default 4, or --parallel if larger) in one pass of the vision
model, then the pages of that pass are decoded, up to --parallel together (each its own KV cache, one decoder
pass per token for all; outputs still written in page order); a pass's compute buffer grows with its pages. Only the
result goes to stdout (or to -o); progress, timings, warnings and errors go to stderr.
Output files are written to a temporary file next to the target and renamed only when complete,
so an interrupted run never leaves a partial file under the final name.

Exit status: 0 success; 1 an error (a model or input that cannot be used, a page that failed, an
output that cannot be written; the other pages are still processed); 2 bad command-line usage;
3 every page decoded but at least one stopped at the -n limit (or the context) without an
end-of-text token, so its text is incomplete; 128 + the signal for a run stopped by one: 130 interrupted
(Ctrl-C, SIGINT), 129 hung up (SIGHUP), 143 terminated (SIGTERM), 135 a model file truncated while in use
(SIGBUS), 141 standard output a closed pipe (quietly, as a tool killed by SIGPIPE).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import io
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from .outputs import (FileId, OutputError, OverwriteRefused, check_writable_dir, file_id, input_ids,  # noqa: F401
                      link_target, oserror_text as _oserror_text, refuse_input, write_atomic)

if TYPE_CHECKING:  # annotations only: the CLI imports its modules when it runs
    from .documents import Document
    from .generate import NoRepeat, Sampling
    from .layout import DocumentOutputs
    from .pdf import RenderedPage
    from .pipeline import OcrPipeline
    from .progress import Progress

PROG = "tilepass-cli"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TRUNCATED, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143
EXIT_HANGUP, EXIT_SIGBUS, EXIT_BROKEN_PIPE = 129, 135, 141  # 128 + SIGHUP / SIGBUS / SIGPIPE
INT32_MAX = 2**31 - 1  # the C library's int parameters (context, threads); every integer option is bounded by it
SEED_MAX = 2**64 - 1


class CliError(Exception):
    """One clear line for stderr, and an exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


# --precision's names and their tp_precision codes (-1: auto, resolved by the library from the file)
PRECISIONS = {"auto": -1, "f32": 0, "bf16": 1, "int8": 2}


def _positive_int(name: str, minimum: int = 1, maximum: int = INT32_MAX) -> Callable[[str], int]:
    def conv(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, not {s!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum} (got {v})")
        if v > maximum:
            raise argparse.ArgumentTypeError(f"{name} must be <= {maximum} (got {v})")
        return v
    return conv


def _seed(s: str) -> int:
    """--seed: 0 .. 2**64-1, or -1 for a random seed (llama.cpp's meaning of -1)."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be an integer, not {s!r}") from None
    if not -1 <= v <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"--seed must be -1 (random) or 0 .. {SEED_MAX} (got {v})")
    return v


def _float(name: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    def conv(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, not {s!r}") from None
        if v != v or v in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{name} must be finite (got {s})")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise argparse.ArgumentTypeError(f"{name} must be {'>' if lo_open else '>='} {lo} (got {v})")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"{name} must be <= {hi} (got {v})")
        return v
    return conv


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The options that load the models and set how a page is decoded: tilepass-cli's, and tilepass-server's
    (encoder/server/cli.py) defaults for its requests."""
    from .pipeline import DEFAULT_PROMPT

    p.add_argument("-m", "--model", required=True, metavar="TEXT.gguf", help="the text model GGUF")
    p.add_argument("--mmproj", required=True, metavar="VISION.gguf", help="the vision (mmproj) GGUF")
    p.add_argument("-p", "--prompt", default=None,
                   help=f"prompt (default: the model family's; DeepSeek-OCR/OCR-2 {DEFAULT_PROMPT!r}, '<image>\\n' put in "
                        "front if it has no <image>; PaddleOCR-VL 'OCR:', the task text its chat template wraps)")
    p.add_argument("--task", choices=("ocr", "table", "formula", "chart"), default=None,
                   help="PaddleOCR-VL: the official task prompt (OCR:, Table Recognition:, Formula Recognition:, "
                        "Chart Recognition:) instead of -p")
    p.add_argument("--mode", default=None,
                   help="image mode, one the vision model has (default: its first; DeepSeek-OCR: gundam, tiny, "
                        "small, base, large, auto; DeepSeek-OCR-2: gundam, base)")
    p.add_argument("--min-tiles", type=_positive_int("--min-tiles"), default=None, help="gundam: fewest tiles (default from the file, 2)")
    p.add_argument("--max-tiles", type=_positive_int("--max-tiles"), default=None, help="gundam: most tiles (default from the file, 9)")
    p.add_argument("-n", "--n-predict", type=_positive_int("-n"), default=8192, metavar="N",
                   help="most new tokens per page (default 8192)")
    p.add_argument("-c", "--ctx-size", type=_positive_int("--ctx-size", 0), default=0, metavar="N",
                   help="KV-cache length (default 0: the model's context length)")
    p.add_argument("-t", "--threads", type=_positive_int("-t"), default=None, metavar="N",
                   help="threads (default: all CPUs, at most 64)")
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="auto",
                   help="vision arithmetic: f32 (exact), bf16 (BF16 products with F32 sums where the CPU has "
                        "AVX512-BF16/AMX: about 2x faster, cosine >= 0.999 to f32; elsewhere the same as f32) or "
                        "int8 (the weight matrices quantised to Q8_0 at load, int8 products as with a Q8_0 vision "
                        "file: faster again where the CPU has AVX512-VNNI); default auto: f32 for an F32 vision "
                        "file, else bf16 (as --kv-type auto)")
    p.add_argument("--kv-type", choices=("auto", "f16", "f32", "q8_0"), default="auto",
                   help="KV cache element type (default auto: f32 for an F32 text file, else f16 as llama.cpp; q8_0 "
                        "halves f16's memory and the bytes attention reads per token)")
    p.add_argument("--temp", type=_float("--temp", 0.0), default=0.0, help="temperature (default 0: greedy)")
    p.add_argument("--top-k", type=_positive_int("--top-k", 0), default=0, help="top-k sampling (0: off)")
    p.add_argument("--top-p", type=_float("--top-p", 0.0, 1.0, lo_open=True), default=1.0, help="top-p sampling (1: off)")
    p.add_argument("--seed", type=_seed, default=None, help="random seed for sampling (-1: a random one, as llama.cpp)")
    p.add_argument("--no-repeat-ngram", type=_positive_int("--no-repeat-ngram", 0), default=None, metavar="N",
                   help="ban repeating an n-gram of N tokens (default: the model family's official runner's, "
                        "DeepSeek-OCR 30, DeepSeek-OCR-2 20; 0 disables)")
    p.add_argument("--no-repeat-window", type=_positive_int("--no-repeat-window", 0), default=None, metavar="W",
                   help="only n-grams within the last W generated tokens (default 90; 0: all of them)")
    p.add_argument("--no-repeat-scope", choices=("generated", "all"), default="generated",
                   help="tokens the rule looks at: the generated ones (default, as the reference runner) or the "
                        "prompt too (as transformers' no_repeat_ngram_size)")
    p.add_argument("--raw", action="store_true", help="keep the <|ref|>/<|det|> tags (default: clean markdown)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Convert document images to markdown with DeepSeek-OCR GGUF files (text model + vision mmproj).",
        epilog="Exit status: 0 ok; 1 error (other pages still processed); 2 usage; 3 a page stopped at -n "
               "without end of text (incomplete); 130 interrupted, 129 hung up, 143 terminated; 135 a model file "
               "truncated while in use (SIGBUS); 141 stdout a closed pipe.",
    )
    from . import __version__

    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_model_options(p)
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="images, PDFs (doc.pdf, or doc.pdf:3-7,12 for some pages), directories (the PDFs and "
                        "images in them) and quoted glob patterns ('scans/**/*.pdf'), after those of --image")
    p.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="an input (an image, or anything INPUT takes); repeat for several")
    p.add_argument("--dpi", type=_float("--dpi", 18.0, 1200.0), default=144.0,
                   help="PDF pages are rendered at this resolution (default 144, as DeepSeek-OCR's PDF runner)")
    p.add_argument("--force", action="store_true",
                   help="-o DIR holds pages made with another model, other settings or another version of an "
                        "input: redo them with these (without it such a run is refused)")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file (one image), or directory (several images: OUT/NAME.md or .json; PDFs, "
                        "directories, globs: OUT/NAME.md, OUT/NAME.json, OUT/NAME/page-0001.md ..., "
                        "OUT/NAME/figures/, resumable)")
    p.add_argument("--images-per-pass", type=_positive_int("--images-per-pass", 0), default=None, metavar="N",
                   help="images prepared together for the vision encoder (default 4, or --parallel if larger; 0: "
                        "all), encoded in one pass where its compute buffer stays within 1 GiB, else in several (a "
                        "gundam page at full size needs ~0.6 GB), then decoded, up to --parallel together")
    p.add_argument("--parallel", type=_positive_int("--parallel", 0), default=0, metavar="N",
                   help="pages decoded together, each its own KV cache, one decoder pass per token for all of them "
                        "(the weights are read once per step for all pages: several times the pages per hour of "
                        "one at a time; each page's greedy text is the same). Default 0 = auto: 2 per CPU core, at "
                        "most 8, and no more KV caches than a quarter of the available memory holds; 1: one page at "
                        "a time, as before. --stream decodes one page at a time. Pages decode together within a pass "
                        "of --images-per-pass")
    p.add_argument("--stream", action="store_true", help="print the text as it is generated")
    p.add_argument("--json", action="store_true",
                   help="JSON: text, grounding boxes in pixels of the original image, timings, token counts")
    p.add_argument("--boxes", metavar="OUT.png",
                   help="write the image with the labelled boxes drawn (a directory for several images)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or timings on stderr")
    return p


# ---- small helpers -------------------------------------------------------------------------------------
class Reporter:
    """Lines for stderr, ``PROG: ...`` (info only unless quiet); write: where a line goes (stderr by default)."""

    def __init__(self, quiet: bool, prog: str = PROG, write: Callable[[str], None] | None = None) -> None:
        self.quiet = quiet
        self.prog = prog
        self.progress: Progress | None = None  # a terminal status line, cleared and drawn again around messages
        self._write = write or (lambda line: print(line, file=sys.stderr, flush=True))

    def info(self, msg: str) -> None:
        if not self.quiet:
            self._emit(f"{self.prog}: {msg}")

    def warn(self, msg: str) -> None:
        self._emit(f"{self.prog}: warning: {msg}")

    def error(self, msg: str) -> None:
        self._emit(f"{self.prog}: error: {msg}")

    def _emit(self, line: str) -> None:
        if self.progress is not None:
            self.progress.clear()
        try:  # a message that cannot be shown (stderr a closed pipe) does not stop the run
            self._write(line)
        except OSError:
            pass
        if self.progress is not None:
            self.progress.redraw()


def _check_writable_dir(d: Path, what: str) -> None:
    try:
        check_writable_dir(d, what)
    except OutputError as e:
        raise CliError(str(e)) from None


def _as_directory(target: str, names: Sequence[str]) -> bool:
    return len(names) > 1 or Path(target).is_dir() or target.endswith(os.sep)


def _unique_stems(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        stem = Path(n).stem or "page"
        cand, k = stem, 1
        while cand in out:
            k += 1
            cand = f"{stem}-{k}"
        out.append(cand)
    return out


def plan_outputs(target: str | None, names: Sequence[str], ext: str, what: str) -> list[Path] | None:
    """One output path per image (None: stdout). Touches nothing: prepare_outputs creates the directory."""
    if target is None:
        return None
    t = Path(target)
    if not _as_directory(target, names):
        if t.exists() and not t.is_file():
            raise CliError(f"{what} {t}: exists and is not a regular file")
        return [t]
    if t.exists() and not t.is_dir():
        raise CliError(f"{what} {t}: several images need a directory here, but it is a file")
    return [t / f"{stem}{ext}" for stem in _unique_stems(names)]


def prepare_outputs(target: str | None, names: Sequence[str], what: str) -> None:
    """Check that the outputs planned for target can be written; create its directory for several images."""
    if target is None:
        return
    t = Path(target)
    if not _as_directory(target, names):
        parent = link_target(t).parent
        _check_writable_dir(parent if str(parent) else Path("."), what)
        return
    try:
        t.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"{what} {t}: cannot create the directory ({_oserror_text(e)})") from None
    _check_writable_dir(t, what)


# ---- outputs never overwrite inputs (the primitives are in outputs.py) --------------------------------
def check_outputs(inputs: Mapping[FileId, str], outputs: Sequence[tuple[str, list[Path] | None]]) -> None:
    """Usage error for an output (per option) that is one of the inputs, or two outputs that are one file."""
    seen: dict[object, str] = {}
    for what, paths in outputs:
        for p in paths or ():
            fid = file_id(p)
            if fid is not None and fid in inputs:
                raise CliError(f"{what} {p} is the same file as the input {inputs[fid]}; refusing to overwrite "
                               "an input", EXIT_USAGE)
            key: object = fid if fid is not None else os.path.realpath(p)
            if key in seen:
                raise CliError(f"{what} {p} and {seen[key]} are the same file; each output needs its own",
                               EXIT_USAGE)
            seen[key] = f"{what} {p}"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class StdoutBroken(BaseException):
    """Standard output is a pipe whose reader has gone (EPIPE): the run stops quietly, exit status 141 as
    for a tool killed by SIGPIPE. A BaseException so that no page's error handler takes it for its own."""


def _stdout_write(s: str) -> None:
    try:
        sys.stdout.write(s)
        sys.stdout.flush()
    except BrokenPipeError:
        raise StdoutBroken from None


def _check_stdout(needed: bool) -> None:
    """Python sets sys.stdout to None when fd 1 was closed at start (`>&-`)."""
    if needed and sys.stdout is None:
        raise CliError("standard output is closed; give -o FILE (or open stdout)")


def _occupy_closed_std_fds() -> None:
    """A closed fd 0/1/2 would be handed to the next file opened (a model, an output) and then written to by
    anything that writes "stdout": put /dev/null there first. A closed stderr gets a sys.stderr on it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                nfd = os.open(os.devnull, os.O_RDWR)
            except OSError:
                return
            if nfd != fd:
                os.dup2(nfd, fd)
                os.close(nfd)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)


def _silence_stdout() -> None:
    """After EPIPE: point fd 1 at /dev/null so the interpreter's last flush has nowhere to fail (the Python
    docs' advice for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):
        pass


class Signalled(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP: unwinds like Ctrl-C so that temporary files are removed; exit 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


STOP_SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}


def _on_signal(signum: int, frame: object) -> None:
    raise Signalled(signum)


@dataclasses.dataclass
class _Handlers:
    """Signal handlers main() installs and puts back: Python ones by signal, the C-level SIGBUS one."""
    python: dict[int, object] = dataclasses.field(default_factory=dict)
    sigbus: object | None = None

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            try:
                self.python[sig] = signal.signal(sig, _on_signal)
            except (ValueError, OSError):  # not the main thread
                return
        self.sigbus = _sigbus.install()

    def restore(self) -> None:
        for sig, old in self.python.items():
            try:
                signal.signal(sig, old)  # type: ignore[arg-type]
            except (ValueError, OSError, TypeError):
                pass
        if self.sigbus is not None:
            _sigbus.restore(self.sigbus)


class _SigbusHandler:
    """SIGBUS, a read of a memory-mapped model file past its end after someone truncated it, kills the
    process with no word. Python's signal module cannot catch it (its handlers run later, between
    bytecodes, and the faulting read would repeat forever), so a C-level handler is installed through
    ctypes' sigaction: it writes one line to stderr and _exit()s with 135, the status a SIGBUS death
    shows in a shell. Linux/glibc only (struct sigaction's layout); elsewhere nothing is installed."""

    MESSAGE = f"{PROG}: a model file changed or was truncated while in use (SIGBUS)\n".encode()

    class _SigAction(ctypes.Structure):
        _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int),
                    ("restorer", ctypes.c_void_p)]

    def __init__(self) -> None:
        self._callback = ctypes.CFUNCTYPE(None, ctypes.c_int)(self._handle)  # kept alive here

    @staticmethod
    def _handle(signum: int) -> None:
        try:
            os.write(2, _SigbusHandler.MESSAGE)
        finally:
            os._exit(EXIT_SIGBUS)

    def install(self) -> object | None:
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            new, old = self._SigAction(), self._SigAction()
            new.handler = ctypes.cast(self._callback, ctypes.c_void_p).value
            if libc.sigaction(signal.SIGBUS, ctypes.byref(new), ctypes.byref(old)) != 0:
                return None
        except (OSError, AttributeError):
            return None
        return old

    def restore(self, old: object) -> None:
        try:
            ctypes.CDLL(None).sigaction(signal.SIGBUS, ctypes.byref(old), None)  # type: ignore[arg-type]
        except (OSError, AttributeError, TypeError):
            pass


_sigbus = _SigbusHandler()


Stamp = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


def _stamp(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class ModelFiles:
    """The model files as they were when loaded (taken just before): check() raises CliError when one was
    truncated or rewritten in place, before the next pass or page reads its memory map. A file replaced by
    rename (another inode at the path) is harmless, the old one stays mapped, and is not reported."""

    def __init__(self, paths: Sequence[str]) -> None:
        self._stamps = {p: s for p in paths if (s := _stamp(p)) is not None}

    def check(self) -> None:
        for path, (dev, ino, size, mtime) in self._stamps.items():
            now = _stamp(path)
            if now is None or now[:2] != (dev, ino) or now[2:] == (size, mtime):
                continue
            what = f"truncated ({size} -> {now[2]} bytes)" if now[2] < size else "changed"
            raise CliError(f"{path}: the model file was {what} while in use; stopping before the next pass or "
                           "page")


# ---- the run -------------------------------------------------------------------------------------------
def run(args: argparse.Namespace, rep: Reporter) -> int:
    from .generate import Sampling
    from .pipeline import PipelineError

    t_start = time.perf_counter()
    seed = args.seed
    if seed == -1:  # llama.cpp's "random seed"; said on stderr so that the run can be repeated
        seed = secrets.randbits(32)
        rep.info(f"random seed {seed}")
    if args.prompt is not None and args.task is not None:
        raise CliError("-p and --task are two ways to give the prompt: use one", EXIT_USAGE)
    try:
        prompt = args.prompt  # checked against the model family's conventions once the models are loaded
        sampling = Sampling(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, seed=seed)
    except (PipelineError, ValueError) as e:
        raise CliError(str(e), EXIT_USAGE) from None
    check_tile_args(args)
    if args.stream and args.json and args.output is None:
        raise CliError("--stream with --json needs -o (stdout carries the JSON document)", EXIT_USAGE)

    _check_stdout(args.output is None or args.stream)
    from .documents import RangeSyntaxError, expand_inputs

    given = [*args.image, *args.inputs]
    if not given:
        raise CliError("no input: give images or PDFs (INPUT ..., or --image FILE)", EXIT_USAGE)
    try:
        found = expand_inputs(given, exclude_under=args.output)
    except RangeSyntaxError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    status = EXIT_OK
    if found.document_mode:
        if args.boxes is not None:
            raise CliError("--boxes is for images given one by one; with PDFs, directories or globs the boxes are "
                           "in the JSON (-o DIR: DIR/NAME.json)", EXIT_USAGE)
        for note in found.notes:
            rep.info(note)
        for err in found.errors:
            rep.error(err)
            status = EXIT_ERROR
        if not found.documents:
            raise CliError("no usable input", EXIT_ERROR)
    images = [d.path for d in found.documents]
    ext = ".json" if args.json else ".md"
    docs: DocumentOutputs | None = None
    lock = None
    if found.document_mode and args.output is not None:
        docs, lock, inputs = _open_document_outputs(args, rep, found.documents)
        outs = box_outs = None
    else:
        outs = plan_outputs(args.output, images, ext, "output")
        box_outs = plan_outputs(args.boxes, images, ".png", "--boxes")
        inputs = input_ids([("-m", args.model), ("--mmproj", args.mmproj),
                            *(("--image" if k < len(args.image) else "input", im) for k, im in enumerate(images))])
        check_outputs(inputs, [("output", outs), ("--boxes", box_outs)])
        prepare_outputs(args.output, images, "output")
        prepare_outputs(args.boxes, images, "--boxes")
    try:
        return _run_pages(args, rep, found, docs, outs, box_outs, inputs, prompt, sampling, status, t_start)
    finally:
        if lock is not None:
            lock.release()


def _open_document_outputs(args: argparse.Namespace, rep: Reporter, documents: Sequence[Document]):
    """-o DIR of a document run: the directory (created), locked; its manifest read and checked against the
    model files and the inputs (settings are checked once the models are loaded). Returns (outputs, lock,
    input ids)."""
    from .layout import DocumentOutputs
    from .manifest import DocInput, Manifest, ManifestError, ResumeRefused, fingerprint, reconcile_inputs
    from .outputs import DirectoryLock

    root = Path(args.output)
    if root.exists() and not root.is_dir():
        raise CliError(f"output {root}: PDFs, directories and globs need a directory here, but it is a file")
    inputs = input_ids([("-m", args.model), ("--mmproj", args.mmproj), *(("input", d.path) for d in documents)])
    probe = DocumentOutputs(root, Manifest(root), args.dpi, inputs)
    check_outputs(inputs, [("output", probe.planned_paths(documents))])
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"output {root}: cannot create the directory ({_oserror_text(e)})") from None
    _check_writable_dir(root, "output")
    lock = DirectoryLock(root)
    try:
        lock.acquire()
    except OutputError as e:
        raise CliError(str(e)) from None
    try:
        manifest = Manifest.load(root) or Manifest(root)
        models = {}
        for role, path in (("text", args.model), ("vision", args.mmproj)):
            try:
                models[role] = {"path": os.path.abspath(path), **fingerprint(path)}
            except OSError as e:
                raise CliError(f"{path}: {'no such file' if isinstance(e, FileNotFoundError) else _oserror_text(e)}")
        doc_inputs = []
        for d in documents:
            try:
                fp = fingerprint(d.path)
            except OSError:
                fp = None  # an image that cannot be read: its page fails with the reason when it comes
            doc_inputs.append(DocInput(d.name, os.path.abspath(d.path), d.kind, d.n_pages, fp))
        for note in reconcile_inputs(manifest, models, doc_inputs, args.force):
            rep.info(note)
    except (ManifestError, ResumeRefused) as e:
        lock.release()
        raise CliError(str(e), EXIT_USAGE if isinstance(e, ResumeRefused) else EXIT_ERROR) from None
    except BaseException:
        lock.release()
        raise
    return DocumentOutputs(root, manifest, args.dpi, inputs), lock, inputs


def _output_settings(args: argparse.Namespace, pipe: OcrPipeline, prompt: str, sampling: Sampling,
                     no_repeat: NoRepeat, vision_arith: str) -> dict:
    """The settings that change a page's output, resolved (the manifest compares them between runs)."""
    mode = args.mode or getattr(pipe.vision, "default_mode", None)
    lo, hi = args.min_tiles, args.max_tiles
    try:
        p = pipe.vision.preprocess_params(mode, lo, hi)
        lo, hi = int(p.min_tiles), int(p.max_tiles)
    except (AttributeError, ValueError, TypeError):
        pass
    return {"prompt": prompt, "mode": mode, "min_tiles": lo, "max_tiles": hi, "n_predict": args.n_predict,
            "n_ctx": pipe.n_ctx, "kv_type": args.kv_type, "precision": vision_arith,
            "sampling": {"temperature": args.temp, "top_k": args.top_k, "top_p": args.top_p,
                         "seed": None if sampling.greedy else sampling.seed},
            "no_repeat": {"ngram": no_repeat.ngram, "window": no_repeat.window, "scope": no_repeat.scope},
            "raw": args.raw, "dpi": args.dpi}


@dataclasses.dataclass
class _PageTask:
    """One page of the run: how messages name it, its place in the run, and (document runs) its document,
    page number and, once loaded, its image and PDF geometry."""
    label: str
    index: int
    doc: Document
    number: int = 1
    image: object = None
    rendered: RenderedPage | None = None


@dataclasses.dataclass
class _EncodedPage:
    """A page ready to decode: its task, prepared views, embeddings, its pass's encode time and its share of it."""
    task: _PageTask
    prepared: Any
    embd: Any
    enc_s: float
    share: float


def _resolve_prompt(args: argparse.Namespace, pipe: OcrPipeline, prompt: str | None) -> str:
    """-p, --task or the family's default, checked against the family's conventions (a usage error if not)."""
    from .pipeline import PipelineError

    conv = pipe.conventions
    if args.task is not None:
        if not conv.tasks:
            raise CliError(f"--task: the {conv.family} model has no task prompts (give -p)", EXIT_USAGE)
        prompt = conv.tasks[args.task]
    prompt = conv.default_prompt if prompt is None else prompt
    try:
        pipe.prompt(prompt, 1, (1, 1))
    except PipelineError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    return prompt


def load_pipeline(args: argparse.Namespace, threads: int, abort, **shared) -> OcrPipeline:
    """Both models as the model options say (CliError if they cannot be used, EXIT_USAGE for a --mode the vision
    model lacks); abort: the models' abort poll (interrupt.py). shared: OcrPipeline's vision_model / tokenizer
    already loaded (tilepass-server's slots share them)."""
    from .pipeline import OcrPipeline, PipelineError
    from .tokenizer import TokenizerError

    try:
        pipe = OcrPipeline(args.model, args.mmproj, n_threads=threads, n_ctx=args.ctx_size,
                           vision_precision=PRECISIONS[args.precision], kv_type=args.kv_type, abort=abort, **shared)
    except (PipelineError, TokenizerError) as e:
        raise CliError(str(e)) from None
    modes = tuple(getattr(pipe.vision, "modes", ()))
    if args.mode is not None and modes and args.mode not in modes:
        raise CliError(f"argument --mode: invalid choice: {args.mode!r} (this {getattr(pipe.vision, 'family', '')} "
                       f"model has: {', '.join(modes)})", EXIT_USAGE)
    return pipe


def _run_pages(args: argparse.Namespace, rep: Reporter, found, docs: DocumentOutputs | None, outs, box_outs,
               inputs, prompt: str, sampling: Sampling, status: int, t_start: float) -> int:
    from .documents import PageLoader
    from .grounding import dumps
    from .manifest import ResumeRefused
    from .pipeline import peak_memory_bytes
    from .progress import Progress

    threads = args.threads or min(os.cpu_count() or 1, 64)
    threads = min(threads, 64)

    # models
    t0 = time.perf_counter()
    models = ModelFiles([args.model, args.mmproj])
    pipe = load_pipeline(args, threads, args.interrupt)
    prompt = _resolve_prompt(args, pipe, prompt)
    code = getattr(pipe.vision, "precision", 0)
    vision_arith = next((name for name, c in PRECISIONS.items() if c == code), "f32")
    rep.info(f"models loaded in {time.perf_counter() - t0:.2f} s (text width {pipe.n_embd}, vocab {pipe.n_vocab}, "
             f"{threads} threads, vision arithmetic {vision_arith}{' (auto)' if args.precision == 'auto' else ''})")
    no_repeat = dataclasses.replace(pipe.default_no_repeat(args.no_repeat_ngram, args.no_repeat_window),
                                    scope=args.no_repeat_scope)

    # the pages to do: every page of every document, less (a document run into -o DIR) those done before
    pairs = [(d, n) for d in found.documents for n in d.pages]
    if docs is not None:
        try:
            notes, warnings = docs.start_run(_output_settings(args, pipe, prompt, sampling, no_repeat, vision_arith),
                                             args.force, found.documents)
        except ResumeRefused as e:
            raise CliError(str(e), EXIT_USAGE) from None
        for note in notes:
            rep.info(note)
        for note in warnings:
            rep.warn(note)
        todo = {d.name: set(docs.pages_to_do(d)) for d in found.documents}
        n_all = len(pairs)
        pairs = [(d, n) for d, n in pairs if n in todo[d.name]]
        if not pairs:
            rep.info(f"nothing to do: the {n_all} page{'s' if n_all != 1 else ''} asked for were done before "
                     f"({docs.manifest.path}); the document files are up to date")
        elif len(pairs) < n_all:
            rep.info(f"resuming in {docs.root}: {n_all - len(pairs)} of {n_all} pages done before "
                     f"({docs.manifest.path.name}); {len(pairs)} to do")
        for d in found.documents:
            if not todo[d.name]:
                docs.write_document(d)
    tasks = [_PageTask(d.label(n), k, d, n) for k, (d, n) in enumerate(pairs)]
    left = {}  # document name -> its pages not yet handled in this run
    for t in tasks:
        left[t.doc.name] = left.get(t.doc.name, 0) + 1
    progress = Progress(len(tasks), len(left), prog=PROG,
                        enabled=not args.quiet and (found.document_mode or len(tasks) > 1))
    if progress.tty:
        rep.progress = progress

    # pages, in passes of --images-per-pass: each pass is prepared and encoded in one graph computation and its
    # pages handed to the decoder; a failure is reported and the other pages (and passes) go on. The passes are
    # made lazily, when the decoder asks for the next page: with --parallel, a slot freed at the end of a pass
    # takes a page of the next one while the others decode on, so the batch does not drain between passes.
    truncated: list[str] = []
    json_pages: list[dict] = []
    multi = len(tasks) > 1
    job = _Job(args, rep, pipe, prompt, sampling, no_repeat, outs, box_outs, multi, inputs, docs, len(tasks))
    parallel = _parallel(args, pipe, threads)
    if parallel > 1:
        rep.info(f"decoding up to {parallel} pages together (--parallel{' auto' if not args.parallel else ''})")
    per_pass = pages_per_pass(args.images_per_pass, parallel, len(tasks))
    loader = PageLoader(args.dpi) if found.document_mode else None
    any_usable = False  # some page was prepared without error
    enc_total = 0.0

    def handled(t: _PageTask, ok: bool, incomplete: bool = False, error: str | None = None) -> None:
        t.image = t.rendered = None  # the page's pixels are not needed any more
        if not ok and docs is not None:
            docs.fail_page(t.doc, t.number, error or "failed")
        left[t.doc.name] -= 1
        if left[t.doc.name] == 0 and docs is not None:
            docs.write_document(t.doc)
        progress.page_done(ok, incomplete, document_done=left[t.doc.name] == 0)

    def failed(t: _PageTask, msg: str) -> None:
        nonlocal status
        rep.error(msg)
        status = EXIT_ERROR
        handled(t, False, error=msg)

    def encoded_pages() -> Iterator[_EncodedPage]:
        """Every page that encodes, pass by pass, with its embeddings."""
        nonlocal any_usable
        for p0 in range(0, len(tasks), per_pass):
            batch = tasks[p0:p0 + per_pass]
            sources: dict[int, object] = {}
            for t in batch:
                if loader is None:
                    sources[t.index] = t.label  # an image path: read by prepare
                    continue
                progress.start_page(t.label)
                try:
                    t.image, t.rendered = loader.load(t.doc, t.number)
                    sources[t.index] = t.image
                except (ValueError, OSError, MemoryError) as e:  # ImageError, PdfError
                    sources[t.index] = e
            ok_src = [t.index for t in batch if not isinstance(sources[t.index], BaseException)]
            prepared = dict(zip(ok_src, pipe.prepare([sources[i] for i in ok_src], args.mode, args.min_tiles,
                                                     args.max_tiles)))
            prepared.update({t.index: sources[t.index] for t in batch if t.index not in prepared})
            good = [t for t in batch if not isinstance(prepared[t.index], BaseException)]
            for t in batch:
                e = prepared[t.index]
                if isinstance(e, BaseException):
                    failed(t, str(e) if t.doc.path in str(e) else f"{t.label}: {e}")
            if not good:
                continue
            any_usable = True
            k = 0
            for part in pipe.passes([prepared[t.index] for t in good]):  # split where memory needs it
                in_part, k = good[k:k + len(part)], k + len(part)
                yield from encode_pass(in_part, part)

    def encode_pass(in_part: list[_PageTask], part: list) -> Iterator[_EncodedPage]:
        nonlocal enc_total
        views = sum(int(p.views.n_views) for p in part)
        where = (f" (images {in_part[0].index + 1}-{in_part[-1].index + 1} of {len(tasks)})"
                 if len(in_part) < len(tasks) else "")
        rep.info(f"encoding {len(in_part)} image(s){where}, {views} view(s), mode {part[0].mode} ...")
        models.check()
        try:
            embs, enc_s = pipe.encode_pass(part, decoder_idle=True)  # a part of pipe.passes: not split again
        except Exception as e:  # TilepassError, MemoryError: this pass's pages are lost, not the others'
            msg = f"vision encoding failed for {', '.join(t.label for t in in_part)}: {e}"
            for t in in_part:
                failed(t, msg)
            return
        enc_total += enc_s
        rep.info(f"encoded in {enc_s * 1e3:.0f} ms")
        pass_tokens = sum(p.n_tokens for p in part)
        for t, p, emb in zip(in_part, part, embs):
            models.check()  # before each page is decoded: a truncated model would be read past its end
            yield _EncodedPage(t, p, emb, enc_s, p.n_tokens / max(1, pass_tokens))

    def after(t: _PageTask, outcome: _PageOutcome) -> None:
        nonlocal status
        if not outcome.ok:
            status = EXIT_ERROR
        if outcome.truncated:
            truncated.append(t.label)
        if outcome.json_page is not None:
            json_pages.append(outcome.json_page)
        handled(t, outcome.ok, outcome.truncated, outcome.error)

    try:
        if parallel > 1:
            _decode_pages(job, encoded_pages(), parallel, progress, after)
        else:
            for k, page in enumerate(encoded_pages()):
                progress.start_page(page.task.label)
                after(page.task, _decode_page(job, k, page))
    except KeyboardInterrupt as e:
        progress.finish()
        rep.progress = None
        if docs is not None:
            n_done = len(docs.done_pages({d.name for d in found.documents}))
            e.resume_hint = (f"{n_done} page{'s' if n_done != 1 else ''} done and kept in {docs.root} "  # type: ignore[attr-defined]
                             f"({docs.manifest.path.name}); run the same command again to do the rest")
        raise
    finally:
        if loader is not None:
            loader.close()
    progress.finish()
    rep.progress = None

    if tasks and not any_usable:
        raise CliError("no usable image" if not found.document_mode else "no usable page", EXIT_ERROR)
    if json_pages:
        _stdout_write(dumps(json_pages[0] if not multi else json_pages) + "\n")
    if progress.enabled and tasks:
        rep.info(f"summary: {progress.summary()}")
    rep.info(f"done in {time.perf_counter() - t_start:.2f} s; encode {enc_total * 1e3:.0f} ms; "
             f"peak memory {_fmt_bytes(peak_memory_bytes())}")
    if docs is not None:  # a resumed run: the pages done before count too
        truncated += [str(i) for i, p in enumerate(docs.done_pages({d.name for d in found.documents}))
                      if p.hit_limit]
    if status == EXIT_OK and truncated:
        status = EXIT_TRUNCATED
    return status


@dataclasses.dataclass(frozen=True)
class _Job:
    """What every page of a run shares."""
    args: argparse.Namespace
    rep: Reporter
    pipe: OcrPipeline
    prompt: str
    sampling: Sampling
    no_repeat: NoRepeat
    outs: list[Path] | None
    box_outs: list[Path] | None
    multi: bool
    inputs: Mapping[FileId, str]  # the input files, which no output may overwrite
    docs: DocumentOutputs | None = None  # a document run into -o DIR: its layout and manifest
    n_pages: int = 0  # pages of this run


@dataclasses.dataclass(frozen=True)
class _PageOutcome:
    ok: bool  # decoded and written
    truncated: bool  # stopped without an end-of-text token
    json_page: dict | None  # for the JSON document on stdout (--json without -o)
    error: str | None = None  # why a page that is not ok failed


def pages_per_pass(images_per_pass: int | None, parallel: int, n_pages: int) -> int:
    """--images-per-pass: the pages encoded in one vision pass (default 4, or --parallel if larger; 0: all). A pass's
    pages are encoded together, and a page's embeddings (so, near a tie, its text) may depend on its companions:
    tilepass-batch groups pages by the same rule to write the same files."""
    return max(4, parallel) if images_per_pass is None else images_per_pass or max(1, n_pages)


def _parallel(args: argparse.Namespace, pipe: OcrPipeline, threads: int) -> int:
    """--parallel, or its default (pipeline.default_parallel: cores and memory); 1 with --stream or a text
    model that cannot decode several sequences at once."""
    from .pipeline import default_parallel, mem_available_bytes

    if args.stream or not pipe.can_batch:
        return 1
    if args.parallel:
        return args.parallel
    return default_parallel(threads, mem_available_bytes(), pipe.kv_bytes())


class _PageDecode:
    """One page's decoding state (grounding parser, token stream, the text so far) and the writing of its
    outputs once its tokens are there (finish)."""

    def __init__(self, job: _Job, k: int, task: _PageTask) -> None:
        from .grounding import DEFAULT_IMAGE_LINK
        from .page_text import PageText

        self.job, self.k, self.task = job, k, task
        args, outs = job.args, job.outs
        link = DEFAULT_IMAGE_LINK
        if job.docs is not None:
            link = job.docs.image_link(task.number)
        elif outs is not None:
            esc = outs[task.index].stem.replace("{", "{{").replace("}", "}}")
            link = f"![](images/{esc}_{{index}}.jpg)\n"
        table_markup = bool(getattr(getattr(job.pipe, "conventions", None), "table_markup", False))
        self.page = PageText(job.pipe.tokenizer, link, args.raw, table_markup)
        self.stream_now = args.stream
        if self.stream_now and job.multi and outs is None and job.docs is None:
            _write_page_marker(k, task.label)

    def on_token(self, tok: int) -> None:
        s = self.page.push(tok)
        if s and self.stream_now:
            _stdout_write(s)

    def failed(self, e: BaseException) -> _PageOutcome:
        from .pipeline import PipelineError

        name, rep = self.task.label, self.job.rep
        if isinstance(e, PipelineError):
            rep.error(f"{name}: {e}")
            return _PageOutcome(False, False, None, f"{name}: {e}")
        rep.error(f"{name}: decoding failed: {e}")
        return _PageOutcome(False, False, None, f"{name}: decoding failed: {e}")


def _decode_page(job: _Job, k: int, page: _EncodedPage) -> _PageOutcome:
    """Decode a page (the k-th handed to the decoder) from its embeddings, then write its outputs; a failure
    is reported and costs only this page."""
    d = _PageDecode(job, k, page.task)
    try:
        res = job.pipe.run_page(page.task.label, page.prepared, page.embd, job.prompt, job.args.n_predict,
                                job.sampling, job.no_repeat, d.on_token)
    except Exception as e:  # PipelineError, or the decoder failed on this page: report, go on
        return d.failed(e)
    return _finish_page(d, res, page.enc_s, page.share)


def _decode_pages(job: _Job, pages: Iterator[_EncodedPage], parallel: int, progress: Progress,
                  after: Callable[[_PageTask, _PageOutcome], None]) -> None:
    """The pages decoded up to `parallel` together (OcrPipeline.run_pages, which takes the next page from
    `pages` whenever a slot is free); each page's outputs are written and `after` called in the order the
    pages came, as soon as it and every page before it are done."""
    from .pipeline import PageRequest

    given: dict[int, tuple[_EncodedPage, _PageDecode]] = {}  # handed to the decoder, not yet finished in order
    results: dict[int, tuple] = {}
    next_j = 0

    def requests() -> Iterator[PageRequest]:
        for j, page in enumerate(pages):
            d = _PageDecode(job, j, page.task)
            given[j] = (page, d)
            if j == next_j:
                progress.start_page(page.task.label)
            yield PageRequest(page.task.label, page.prepared, page.embd, job.prompt, job.args.n_predict,
                              job.sampling, job.no_repeat, d.on_token, j)

    def on_page(r: PageRequest, res, err: BaseException | None) -> None:
        nonlocal next_j
        results[r.tag] = (res, err)
        while next_j in results:  # finished in page order: stdout, markers, progress
            res, err = results.pop(next_j)
            page, d = given.pop(next_j)
            after(page.task, d.failed(err) if err is not None else _finish_page(d, res, page.enc_s, page.share))
            next_j += 1
            if next_j in given:
                progress.start_page(given[next_j][0].task.label)

    job.pipe.run_pages(requests(), parallel, on_page)


def _finish_page(d: _PageDecode, res, enc_s: float, share: float) -> _PageOutcome:
    """The page's decoded tokens are in res: its text (tail of the stream, tables), report, outputs."""
    job, task = d.job, d.task
    args, rep, outs = job.args, job.rep, job.outs
    name, i, k = task.label, task.index, d.k
    stream_now = d.stream_now
    from .grounding import dumps
    from .page_text import result_json

    tail = d.page.finish()
    if tail and stream_now:
        _stdout_write(tail)
    text = d.page.text
    regions = d.page.regions
    res.encode_ms = enc_s * 1e3 * share

    rep.info(f"[{i + 1}/{job.n_pages}] {name}: {res.n_image_tokens} image tokens, "
             f"prompt {res.n_prompt} tokens; prefill {res.prefill_ms:.0f} ms ({res.prefill_tps:.1f} tok/s), "
             f"{len(res.tokens)} new tokens, decode {res.decode_tps:.1f} tok/s; stop: {res.stop_reason}")
    if not res.complete:
        why = {"length": f"the -n limit ({args.n_predict} tokens)", "context": "the end of the context",
               "no_candidates": "a step where every token was banned"}.get(res.stop_reason, res.stop_reason)
        rep.warn(f"{name}: generation stopped at {why} without an end-of-text token; the output is incomplete")

    page = None
    if args.json or job.docs is not None:  # the document files leave the token ids out
        page = result_json(text, res, regions, name, enc_s, token_ids=job.docs is None)

    # outputs
    json_page = None
    try:
        if job.docs is not None and page is not None:
            from .layout import page_record

            geometry = task.rendered.geometry if task.rendered is not None else None
            record = page_record(page, task.doc, task.number, geometry, hit_limit=res.stop_reason == "length")
            job.docs.write_page(task.doc, task.number, text, record, task.image,
                                [] if args.raw else regions, res.stop_reason)
            rep.info(f"wrote {job.docs.page_md(task.doc, task.number)}")
        elif outs is not None:
            data = (dumps(page) + "\n") if page is not None else text
            if not args.raw:
                _save_crops(name, outs[i], regions, job.inputs)
            write_atomic(outs[i], data.encode("utf-8"))
            rep.info(f"wrote {outs[i]}")
        elif page is not None:
            json_page = page
        elif not stream_now:
            if job.multi:
                _write_page_marker(k, name)
            _stdout_write(text)
        if job.box_outs is not None:
            _save_boxes(name, job.box_outs[i], regions)
            rep.info(f"wrote {job.box_outs[i]}")
    except OSError as e:
        target = getattr(e, "filename", None) or (outs[i] if outs else "output")
        msg = f"{name}: cannot write {target}: {_oserror_text(e)}"
        rep.error(msg)
        return _PageOutcome(False, not res.complete, json_page, msg)
    return _PageOutcome(True, not res.complete, json_page)


def _write_page_marker(k: int, name: str) -> None:
    """Where several pages share stdout: the k-th page's marker (a blank line before all but the first)."""
    _stdout_write(("\n" if k else "") + f"<!-- page {k + 1}: {name} -->\n")


def _save_boxes(name: str, path: Path, regions) -> None:
    from .boxes import draw_regions
    from .images import load_image

    img = draw_regions(load_image(name), regions)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write_atomic(path, buf.getvalue())


def _save_crops(name: str, out_path: Path, regions, inputs: Mapping[FileId, str]) -> None:
    """The image regions as images/STEM_N.jpg next to the output (the links in the markdown)."""
    from .grounding import to_pixels
    from .images import load_image

    imgs = [r for r in regions if r.image_index is not None and r.boxes]
    if not imgs:
        return
    d = out_path.parent / "images"
    d.mkdir(exist_ok=True)
    src = load_image(name)
    w, h = src.size
    for r in imgs:
        x1, y1, x2, y2 = (int(v) for v in to_pixels(r.boxes[0], w, h))
        if x2 <= x1 or y2 <= y1:
            continue
        buf = io.BytesIO()
        src.crop((x1, y1, x2, y2)).save(buf, format="JPEG", quality=92)
        crop = d / f"{out_path.stem}_{r.image_index}.jpg"
        refuse_input(crop, inputs)  # an earlier run's crop given back as an input image
        write_atomic(crop, buf.getvalue())


def _report_stop(e: KeyboardInterrupt) -> int:
    """The one line for a run stopped by a signal; its exit status, 128 + the signal."""
    signum = e.signum if isinstance(e, Signalled) else signal.SIGINT
    try:
        sys.stdout.flush()
    except Exception:
        pass
    try:  # after SIGHUP the terminal may be gone
        print(f"\n{PROG}: {STOP_SIGNALS.get(signum, 'stopped')}; the page being decoded was not written",
              file=sys.stderr, flush=True)
        hint = getattr(e, "resume_hint", None)  # a document run into -o DIR: how to go on
        if hint:
            print(f"{PROG}: {hint}", file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass
    return 128 + int(signum)


def check_tile_args(args: argparse.Namespace) -> None:
    """--min-tiles / --max-tiles: a usage error (CliError) unless they make a valid range (the other side from the
    defaults, 2 and 9)."""
    if args.min_tiles is None and args.max_tiles is None:
        return
    from .tiling import check_tile_range

    lo = args.min_tiles if args.min_tiles is not None else min(2, args.max_tiles or 2)
    try:
        check_tile_range(lo, args.max_tiles if args.max_tiles is not None else max(9, lo))
    except ValueError as e:
        raise CliError(str(e), EXIT_USAGE) from None


def main(argv: Sequence[str] | None = None) -> int:
    _occupy_closed_std_fds()
    parser = build_parser()
    try:
        args = parser.parse_intermixed_args(argv)  # INPUTs before, between and after options
    except SystemExit as e:  # argparse: usage errors exit 2, --help exits 0
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    rep = Reporter(args.quiet)
    handlers = _Handlers()
    try:
        handlers.install()
        # a stop signal ends a long encode or prefill within one graph node, not when the C call returns
        from .interrupt import Interrupt

        with Interrupt() as interrupt:
            args.interrupt = interrupt
            return run(args, rep)
    except CliError as e:
        rep.error(str(e))
        return e.status
    except KeyboardInterrupt as e:
        return _report_stop(e)
    except (StdoutBroken, BrokenPipeError):  # quietly, as `yes | head` does
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    finally:
        handlers.restore()


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
