"""``tilepass-cli``: images -> markdown with a DeepSeek-OCR text GGUF and its vision (mmproj) GGUF.

    tilepass-cli -m TEXT.gguf --mmproj VISION.gguf --image page.png [--image more.png ...] [-o OUT]

The images are encoded --images-per-pass at a time (default 4) in one pass of the vision model, then each
page of that pass is decoded in turn; a pass's compute buffer grows with its pages. Only the
result goes to stdout (or to -o); progress, timings, warnings and errors go to stderr.
Output files are written to a temporary file next to the target and renamed only when complete,
so an interrupted run never leaves a partial file under the final name.

Exit status: 0 success; 1 an error (a model or input that cannot be used, a page that failed, an
output that cannot be written; the other pages are still processed); 2 bad command-line usage;
3 every page decoded but at least one stopped at the -n limit (or the context) without an
end-of-text token, so its text is incomplete; 130 interrupted (Ctrl-C) or 143 terminated.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # annotations only: the CLI imports its modules when it runs
    from .generate import NoRepeat, Sampling
    from .pipeline import OcrPipeline

PROG = "tilepass-cli"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TRUNCATED, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143
MODES = ("tiny", "small", "base", "large", "gundam", "auto")


class CliError(Exception):
    """One clear line for stderr, and an exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


# --precision's names and their tp_precision codes (-1: auto, resolved by the library from the file)
PRECISIONS = {"auto": -1, "f32": 0, "bf16": 1, "int8": 2}


def _positive_int(name: str, minimum: int = 1):
    def conv(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, not {s!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum} (got {v})")
        return v
    return conv


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


def build_parser() -> argparse.ArgumentParser:
    from .pipeline import DEFAULT_PROMPT

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Convert document images to markdown with DeepSeek-OCR GGUF files (text model + vision mmproj).",
        epilog="Exit status: 0 ok; 1 error (other pages still processed); 2 usage; 3 a page stopped at -n "
               "without end of text (incomplete); 130 interrupted.",
    )
    p.add_argument("-m", "--model", required=True, metavar="TEXT.gguf", help="the text model GGUF")
    p.add_argument("--mmproj", required=True, metavar="VISION.gguf", help="the vision (mmproj) GGUF")
    p.add_argument("--image", action="append", required=True, metavar="FILE",
                   help="an input image; repeat for several pages")
    p.add_argument("-p", "--prompt", default=DEFAULT_PROMPT,
                   help=f"prompt (default {DEFAULT_PROMPT!r}; '<image>\\n' is put in front if it has no <image>)")
    p.add_argument("--mode", default="gundam", choices=MODES,
                   help="image mode (default gundam: 1024 global view + 640 tiles for large images)")
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
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--no-repeat-ngram", type=_positive_int("--no-repeat-ngram", 0), default=30, metavar="N",
                   help="ban repeating an n-gram of N tokens (default 30; 0 disables)")
    p.add_argument("--no-repeat-window", type=_positive_int("--no-repeat-window", 0), default=90, metavar="W",
                   help="only n-grams within the last W generated tokens (default 90; 0: all of them)")
    p.add_argument("--no-repeat-scope", choices=("generated", "all"), default="generated",
                   help="tokens the rule looks at: the generated ones (default, as the reference runner) or the "
                        "prompt too (as transformers' no_repeat_ngram_size)")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file (one image), or directory (several images: OUT/NAME.md or .json)")
    p.add_argument("--images-per-pass", type=_positive_int("--images-per-pass", 0), default=4, metavar="N",
                   help="images encoded together in one pass of the vision encoder, then decoded in turn before the "
                        "next pass (default 4: a gundam page needs ~0.6 GB of compute buffer in its pass; 0: all)")
    p.add_argument("--stream", action="store_true", help="print the text as it is generated")
    p.add_argument("--json", action="store_true",
                   help="JSON: text, grounding boxes in pixels of the original image, timings, token counts")
    p.add_argument("--boxes", metavar="OUT.png",
                   help="write the image with the labelled boxes drawn (a directory for several images)")
    p.add_argument("--raw", action="store_true", help="keep the <|ref|>/<|det|> tags (default: clean markdown)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or timings on stderr")
    return p


# ---- small helpers -------------------------------------------------------------------------------------
class Reporter:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def info(self, msg: str) -> None:
        if not self.quiet:
            print(f"{PROG}: {msg}", file=sys.stderr, flush=True)

    def warn(self, msg: str) -> None:
        print(f"{PROG}: warning: {msg}", file=sys.stderr, flush=True)

    def error(self, msg: str) -> None:
        print(f"{PROG}: error: {msg}", file=sys.stderr, flush=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write data to a temporary file in path's directory and rename it to path when complete."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _oserror_text(e: OSError) -> str:
    return e.strerror or str(e)


def _check_writable_dir(d: Path, what: str) -> None:
    if not d.exists():
        raise CliError(f"{what} {d}: directory does not exist")
    if not d.is_dir():
        raise CliError(f"{what} {d}: not a directory")
    # a real attempt (os.access ignores read-only mounts and is always true for root)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tilepass-write-test.", dir=d)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise CliError(f"{what} {d}: cannot write there ({_oserror_text(e)})") from None


def plan_outputs(target: str | None, names: Sequence[str], ext: str, what: str) -> list[Path] | None:
    """One output path per image (None: stdout). Directories are created for several images."""
    if target is None:
        return None
    t = Path(target)
    many = len(names) > 1
    as_dir = many or t.is_dir() or target.endswith(os.sep)
    if not as_dir:
        _check_writable_dir(t.parent if str(t.parent) else Path("."), what)
        if t.exists() and not t.is_file():
            raise CliError(f"{what} {t}: exists and is not a regular file")
        return [t]
    if t.exists() and not t.is_dir():
        raise CliError(f"{what} {t}: several images need a directory here, but it is a file")
    try:
        t.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"{what} {t}: cannot create the directory ({_oserror_text(e)})") from None
    _check_writable_dir(t, what)
    out, used = [], set()
    for n in names:
        stem = Path(n).stem or "page"
        cand, k = stem, 1
        while cand in used:
            k += 1
            cand = f"{stem}-{k}"
        used.add(cand)
        out.append(t / f"{cand}{ext}")
    return out


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _stdout_write(s: str) -> None:
    sys.stdout.write(s)
    sys.stdout.flush()


class Terminated(KeyboardInterrupt):
    """SIGTERM: unwinds like Ctrl-C so that temporary files are removed."""


def _on_term(signum, frame) -> None:
    raise Terminated


# ---- the run -------------------------------------------------------------------------------------------
def run(args: argparse.Namespace, rep: Reporter) -> int:
    from .generate import Sampling
    from .grounding import dumps
    from .pipeline import OcrPipeline, PipelineError, normalise_prompt, peak_memory_bytes
    from .tokenizer import TokenizerError

    t_start = time.perf_counter()
    try:
        prompt = normalise_prompt(args.prompt)
        sampling = Sampling(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    except (PipelineError, ValueError) as e:
        raise CliError(str(e), EXIT_USAGE) from None
    if args.min_tiles is not None or args.max_tiles is not None:
        from .tiling import check_tile_range

        lo = args.min_tiles if args.min_tiles is not None else min(2, args.max_tiles or 2)
        try:
            check_tile_range(lo, args.max_tiles if args.max_tiles is not None else max(9, lo))
        except ValueError as e:
            raise CliError(str(e), EXIT_USAGE) from None
    if args.stream and args.json and args.output is None:
        raise CliError("--stream with --json needs -o (stdout carries the JSON document)", EXIT_USAGE)

    images = list(args.image)
    ext = ".json" if args.json else ".md"
    outs = plan_outputs(args.output, images, ext, "output")
    box_outs = plan_outputs(args.boxes, images, ".png", "--boxes")
    threads = args.threads or min(os.cpu_count() or 1, 64)
    threads = min(threads, 64)

    # models
    t0 = time.perf_counter()
    try:
        pipe = OcrPipeline(args.model, args.mmproj, n_threads=threads, n_ctx=args.ctx_size,
                           vision_precision=PRECISIONS[args.precision], kv_type=args.kv_type)
    except (PipelineError, TokenizerError) as e:
        raise CliError(str(e)) from None
    code = getattr(pipe.vision, "precision", 0)
    vision_arith = next((name for name, c in PRECISIONS.items() if c == code), "f32")
    rep.info(f"models loaded in {time.perf_counter() - t0:.2f} s (text width {pipe.n_embd}, vocab {pipe.n_vocab}, "
             f"{threads} threads, vision arithmetic {vision_arith}{' (auto)' if args.precision == 'auto' else ''})")

    # images, in passes of --images-per-pass: each pass is prepared and encoded in one graph computation,
    # then its pages are decoded in turn; a failure is reported and the other pages (and passes) go on
    status = EXIT_OK
    no_repeat = dataclasses.replace(pipe.default_no_repeat(args.no_repeat_ngram, args.no_repeat_window),
                                    scope=args.no_repeat_scope)
    truncated: list[str] = []
    json_pages: list[dict] = []
    multi = len(images) > 1
    job = _Job(args, rep, pipe, prompt, sampling, no_repeat, outs, box_outs, multi)
    per_pass = args.images_per_pass or len(images)
    any_usable = False  # some page was prepared without error
    n_shown = 0  # pages handed to the decoder (the page markers count these)
    enc_total = 0.0
    for p0 in range(0, len(images), per_pass):
        batch = range(p0, min(p0 + per_pass, len(images)))
        prepared = dict(zip(batch, pipe.prepare([images[i] for i in batch], args.mode, args.min_tiles, args.max_tiles)))
        good = [i for i in batch if not isinstance(prepared[i], BaseException)]
        for i in batch:
            if isinstance(prepared[i], BaseException):
                rep.error(str(prepared[i]) if images[i] in str(prepared[i]) else f"{images[i]}: {prepared[i]}")
                status = EXIT_ERROR
        if not good:
            continue
        any_usable = True
        views = sum(1 + prepared[i].tiles.shape[0] for i in good)
        where = f" (images {good[0] + 1}-{good[-1] + 1} of {len(images)})" if per_pass < len(images) else ""
        rep.info(f"encoding {len(good)} image(s){where}, {views} view(s), mode {args.mode} ...")
        try:
            embs, enc_s = pipe.encode([prepared[i] for i in good])
        except Exception as e:  # TilepassError, MemoryError: this pass's pages are lost, not the others'
            rep.error(f"vision encoding failed for {', '.join(images[i] for i in good)}: {e}")
            status = EXIT_ERROR
            continue
        enc_total += enc_s
        rep.info(f"encoded in {enc_s * 1e3:.0f} ms")
        pass_tokens = sum(prepared[i].n_tokens for i in good)
        for i, emb in zip(good, embs):
            outcome = _decode_page(job, n_shown, i, prepared[i], emb, enc_s, prepared[i].n_tokens / max(1, pass_tokens))
            n_shown += 1
            if not outcome.ok:
                status = EXIT_ERROR
            if outcome.truncated:
                truncated.append(images[i])
            if outcome.json_page is not None:
                json_pages.append(outcome.json_page)

    if not any_usable:
        raise CliError("no usable image", EXIT_ERROR)
    if json_pages:
        _stdout_write(dumps(json_pages[0] if not multi else json_pages) + "\n")
    rep.info(f"done in {time.perf_counter() - t_start:.2f} s; encode {enc_total * 1e3:.0f} ms; "
             f"peak memory {_fmt_bytes(peak_memory_bytes())}")
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


@dataclasses.dataclass(frozen=True)
class _PageOutcome:
    ok: bool  # decoded and written
    truncated: bool  # stopped without an end-of-text token
    json_page: dict | None  # for the JSON document on stdout (--json without -o)


def _decode_page(job: _Job, k: int, i: int, prep, emb, enc_s: float, share: float) -> _PageOutcome:
    """Decode image i (the k-th page handed to the decoder) from its embeddings, then write its outputs; a
    failure is reported and costs only this page. share: this page's part of its pass's encode time."""
    from .grounding import DEFAULT_IMAGE_LINK, GroundingParser, dumps, page_json
    from .pipeline import PipelineError

    args, rep, pipe, outs = job.args, job.rep, job.pipe, job.outs
    name = args.image[i]
    link = DEFAULT_IMAGE_LINK
    if outs is not None:
        esc = outs[i].stem.replace("{", "{{").replace("}", "}}")
        link = f"![](images/{esc}_{{index}}.jpg)\n"
    parser = GroundingParser(image_link=link, raw=args.raw)
    sd = pipe.tokenizer.stream()
    pieces: list[str] = []
    stream_now = args.stream

    if stream_now and job.multi and outs is None:
        _write_page_marker(k, name)

    def on_token(tok: int) -> None:
        s = parser.feed(sd.push(tok))
        if s:
            pieces.append(s)
            if stream_now:
                _stdout_write(s)

    try:
        res = pipe.run_page(name, prep, emb, job.prompt, args.n_predict, job.sampling, job.no_repeat, on_token)
    except PipelineError as e:
        rep.error(f"{name}: {e}")
        return _PageOutcome(False, False, None)
    except Exception as e:  # the decoder failed on this page: report, go on
        rep.error(f"{name}: decoding failed: {e}")
        return _PageOutcome(False, False, None)
    tail = parser.feed(sd.flush()) + parser.finish()
    if tail:
        pieces.append(tail)
        if stream_now:
            _stdout_write(tail)
    text = "".join(pieces)
    res.encode_ms = enc_s * 1e3 * share

    rep.info(f"[{i + 1}/{len(args.image)}] {name}: {res.n_image_tokens} image tokens, "
             f"prompt {res.n_prompt} tokens; prefill {res.prefill_ms:.0f} ms ({res.prefill_tps:.1f} tok/s), "
             f"{len(res.tokens)} new tokens, decode {res.decode_tps:.1f} tok/s; stop: {res.stop_reason}")
    if not res.complete:
        why = {"length": f"the -n limit ({args.n_predict} tokens)", "context": "the end of the context",
               "no_candidates": "a step where every token was banned"}.get(res.stop_reason, res.stop_reason)
        rep.warn(f"{name}: generation stopped at {why} without an end-of-text token; the output is incomplete")

    w, h = res.original_size
    page = None
    if args.json:
        page = page_json(text, res.text, parser.regions, w, h, image=name, mode=res.mode,
                         complete=res.complete, stop_reason=res.stop_reason,
                         tokens={"prompt": res.n_prompt, "image": res.n_image_tokens, "generated": len(res.tokens)},
                         token_ids=res.tokens,
                         timings_ms={"encode_batch": round(enc_s * 1e3, 1), "prefill": round(res.prefill_ms, 1),
                                     "decode": round(res.decode_ms, 1)},
                         tokens_per_s={"prefill": round(res.prefill_tps, 2), "decode": round(res.decode_tps, 2)})

    # outputs
    json_page = None
    try:
        if outs is not None:
            data = (dumps(page) + "\n") if page is not None else text
            if not args.raw:
                _save_crops(name, outs[i], parser.regions, rep)
            write_atomic(outs[i], data.encode("utf-8"))
            rep.info(f"wrote {outs[i]}")
        elif page is not None:
            json_page = page
        elif not stream_now:
            if job.multi:
                _write_page_marker(k, name)
            _stdout_write(text)
        if job.box_outs is not None:
            _save_boxes(name, job.box_outs[i], parser.regions)
            rep.info(f"wrote {job.box_outs[i]}")
    except OSError as e:
        target = getattr(e, "filename", None) or (outs[i] if outs else "output")
        rep.error(f"{name}: cannot write {target}: {_oserror_text(e)}")
        return _PageOutcome(False, not res.complete, json_page)
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


def _save_crops(name: str, out_path: Path, regions, rep: Reporter) -> None:
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
        write_atomic(d / f"{out_path.stem}_{r.image_index}.jpg", buf.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: usage errors exit 2, --help exits 0
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    rep = Reporter(args.quiet)
    old_term = None
    try:
        old_term = signal.signal(signal.SIGTERM, _on_term)
    except ValueError:  # not the main thread
        pass
    try:
        return run(args, rep)
    except CliError as e:
        rep.error(str(e))
        return e.status
    except KeyboardInterrupt as e:
        try:
            sys.stdout.flush()
        except Exception:
            pass
        print(f"\n{PROG}: {'terminated' if isinstance(e, Terminated) else 'interrupted'}; the page being decoded "
              "was not written", file=sys.stderr, flush=True)
        return EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_ERROR
    finally:
        if old_term is not None:
            try:
                signal.signal(signal.SIGTERM, old_term)
            except ValueError:
                pass


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
