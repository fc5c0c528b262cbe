"""Image -> text with both models: load a text GGUF and a vision (mmproj) GGUF, check that they fit
together, build the input ids of a page, encode every page's image in one pass and decode the pages, one at a time
(run_page) or several together (run_pages: each page its own sequence of the text model, all running pages one
decode step per pass of the decoder).

Input ids (spec §8): ``[bos] + tokens(prompt before <image>) + [image_id] * n_image_tokens +
tokens(prompt after <image>)``; the image embeddings replace the image-token positions in order.
Each part of the prompt is tokenised on its own, as the reference processor does.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .generate import BatchJob, GenerationResult, NoRepeat, Sampling, SequenceGen, generate, generate_batch
from .prompts import IMAGE_TAG, Prompt, PromptError, check_pair, conventions_for, normalise_deepseek_prompt
from .tokenizer import Tokenizer

DEFAULT_PROMPT = "<|grounding|>Convert the document to markdown."
TEXT_ARCHS = ("deepseek2-ocr", "deepseek2", "paddleocr")
VISION_ARCHS = ("clip",)


class PipelineError(RuntimeError):
    """A problem with the models or the request, with a message meant for the user."""


def normalise_prompt(prompt: str) -> str:
    """DeepSeek-OCR's: ``<image>\\n`` put in front when the prompt has no ``<image>``; more than one is refused."""
    try:
        return normalise_deepseek_prompt(prompt)
    except PromptError as e:
        raise PipelineError(str(e)) from None


def gguf_summary(path: str | os.PathLike) -> dict:
    """general.architecture and the widths that must agree, read without loading any tensor:
    ``arch``, ``projector_type``, ``text_width`` (token_embd rows), ``vision_width`` (projector output)."""
    from .gguf_file import GGUFFile
    from .native import TilepassError

    p = os.fspath(path)
    if not os.path.exists(p):
        raise PipelineError(f"{p}: no such file")
    if os.path.isdir(p):
        raise PipelineError(f"{p}: is a directory, not a GGUF file")
    try:
        with GGUFFile(p) as f:
            arch = f.get("general.architecture", None)
            out = {"arch": arch, "projector_type": f.get("clip.projector_type", None),
                   "chat_template": f.get("tokenizer.chat_template", None)}
            t = f.find_tensor("token_embd.weight")
            out["text_width"] = f.tensor_info(t).ne[0] if t >= 0 else (
                f.get(f"{arch}.embedding_length", None) if isinstance(arch, str) else None)
            v = f.find_tensor("mm.model.fc.weight")
            out["vision_width"] = f.tensor_info(v).ne[1] if v >= 0 else f.get("clip.vision.projection_dim", None)
    except TilepassError as e:
        raise PipelineError(f"{p}: not a readable GGUF file ({e})") from None
    except OSError as e:
        raise PipelineError(f"{p}: cannot read ({e.strerror or e})") from None
    return out


def check_model_files(text_path: str | os.PathLike, vision_path: str | os.PathLike) -> None:
    """Clear errors for a missing file, a non-GGUF, the two files swapped or mixed up, and a vision
    file whose output width is not the text model's embedding width."""
    t = gguf_summary(text_path)
    v = gguf_summary(vision_path)
    tp, vp = os.fspath(text_path), os.fspath(vision_path)
    if v["arch"] not in VISION_ARCHS:
        what = "it is a text model" if v["arch"] in TEXT_ARCHS else f"general.architecture = {v['arch']!r}"
        raise PipelineError(f"{vp}: not a vision (mmproj) GGUF ({what}); "
                            "pass the text model with -m and the vision file with --mmproj")
    if t["arch"] not in TEXT_ARCHS:
        what = "it is a vision (mmproj) file" if t["arch"] in VISION_ARCHS else f"general.architecture = {t['arch']!r}"
        raise PipelineError(f"{tp}: not a DeepSeek-OCR text GGUF ({what}); "
                            "pass the text model with -m and the vision file with --mmproj")
    tw, vw = t["text_width"], v["vision_width"]
    if tw is not None and vw is not None and int(tw) != int(vw):
        raise PipelineError(width_mismatch_message(int(vw), vp, int(tw), tp))


def width_mismatch_message(vw: int, vp: str, tw: int, tp: str) -> str:
    return (f"the vision model's output width ({vw}, {vp}) differs from the text model's embedding width "
            f"({tw}, {tp}): these files do not belong to the same model")


def _info_get(info: Any, name: str, default: Any = None) -> Any:
    if info is None:
        return default
    if isinstance(info, dict):
        return info.get(name, default)
    return getattr(info, name, default)


def peak_memory_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@dataclass
class PageResult:
    name: str
    tokens: list[int] = field(default_factory=list)
    text: str = ""  # the decoded generated text (raw, tags kept)
    stop_reason: str = ""
    n_prompt: int = 0
    n_image_tokens: int = 0
    original_size: tuple[int, int] = (0, 0)
    mode: str = ""
    encode_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    prefill_tps: float = 0.0
    decode_tps: float = 0.0

    @property
    def complete(self) -> bool:
        return self.stop_reason == "eos"


@dataclass
class PageRequest:
    """One page for run_pages: as the arguments of run_page, and ``tag`` for the caller."""

    name: str
    prepared: Any
    embd: np.ndarray
    prompt: str
    max_new_tokens: int
    sampling: Sampling = Sampling()
    no_repeat: NoRepeat | None = None
    on_token: Callable[[int], None] | None = None
    tag: Any = None


# a vision pass's compute buffer, at most (OcrPipeline.passes): a full-size DeepSeek-OCR gundam page needs about
# 0.6 GB, so such pages go one to a pass (batching them gains little: their views are large already), while small
# pages and crops still share passes (the CLI's peak on full-size gundam pages: 7.4 -> 5.3 GB at the default --parallel,
# 3.97 GB with the text weights' pages given back during each pass: encode_pass's decoder_idle)
PASS_BYTES = 1 << 30


def default_parallel(n_cpus: int, mem_available: int, kv_bytes: int, cap: int = 8) -> int:
    """--parallel's default: 2 pages per core, at most ``cap`` (8), and no more KV caches than a quarter of the
    available memory holds (one at least)."""
    by_mem = mem_available // 4 // kv_bytes if kv_bytes > 0 and mem_available > 0 else cap
    return max(1, min(cap, 2 * max(1, n_cpus), int(by_mem)))


def mem_available_bytes() -> int:
    """MemAvailable of /proc/meminfo (0 where unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class OcrPipeline:
    """Both models and the tokenizer. ``text_model`` / ``vision_model`` may be passed in (tests)."""

    def __init__(self, text_path: str | os.PathLike, vision_path: str | os.PathLike, n_threads: int = 1,
                 n_ctx: int = 0, *, check_files: bool = True, text_model: Any = None, vision_model: Any = None,
                 tokenizer: Tokenizer | None = None, vision_precision: int = 0, kv_type: str | None = None,
                 abort: Any = None, pass_bytes: int = PASS_BYTES) -> None:
        self.pass_bytes = pass_bytes
        if check_files:
            check_model_files(text_path, vision_path)
        from .native import TilepassError

        try:
            if vision_model is None:
                from .vision import VisionEncoder

                vision_model = VisionEncoder(vision_path, n_threads=n_threads, precision=vision_precision, abort=abort)
        except TilepassError as e:
            raise PipelineError(f"{os.fspath(vision_path)}: cannot load the vision model: {e}") from None
        self.vision = vision_model
        self.tokenizer = tokenizer if tokenizer is not None else Tokenizer.from_gguf(text_path)
        try:
            if text_model is None:
                try:
                    from .text_model import TextModel
                except ImportError as e:
                    raise PipelineError(f"the text decoder is not available in this build ({e})") from None
                text_model = TextModel(text_path, n_threads=n_threads, n_ctx=n_ctx, kv_type=kv_type, abort=abort)
        except TilepassError as e:
            raise PipelineError(f"{os.fspath(text_path)}: cannot load the text model: {e}") from None
        self.text = text_model
        info = getattr(text_model, "info", None)
        self.n_embd = int(_info_get(info, "n_embd", 0))
        self.n_vocab = int(_info_get(info, "n_vocab", self.tokenizer.n_vocab))
        self.n_ctx = int(_info_get(info, "n_ctx", 0)) or None
        v_embd = int(getattr(self.vision, "n_embd", 0))
        if self.n_embd and v_embd and v_embd != self.n_embd:
            raise PipelineError(width_mismatch_message(v_embd, os.fspath(vision_path), self.n_embd,
                                                       os.fspath(text_path)))

        def pick(name: str, tok_value: int | None, fallback: int | None) -> int | None:
            v = _info_get(info, name, None)
            if v is not None and int(v) >= 0:
                return int(v)
            return tok_value if tok_value is not None else fallback

        self.bos_id = pick("bos_id", self.tokenizer.bos_id, 0)
        self.eos_id = pick("eos_id", self.tokenizer.eos_id, 1)
        self.image_id = pick("image_token_id", self.tokenizer.token_id(IMAGE_TAG), None)
        summary = gguf_summary(text_path) if check_files else {}
        try:
            self.conventions = conventions_for(getattr(self.vision, "family", "deepseek_ocr"), self.tokenizer,
                                               bos_id=self.bos_id, image_id=self.image_id,
                                               chat_template=summary.get("chat_template"))
            check_pair(self.conventions, summary.get("arch"), os.fspath(vision_path), os.fspath(text_path))
        except PromptError as e:
            raise PipelineError(f"{os.fspath(text_path)}: {e}" if "text model" not in str(e) else str(e)) from None
        self.td_ids = frozenset(i for i in (self.tokenizer.token_id("<td>"), self.tokenizer.token_id("</td>"))
                                if i is not None)

    # ---- pages ----
    def prepare(self, sources: Sequence[Any], mode: str | None = None, min_tiles: int | None = None,
                max_tiles: int | None = None) -> list[Any]:
        """One PreparedImage per source (mode None: the vision model's default), or the exception
        (ImageError, ...) that source raised."""
        out: list[Any] = []
        for s in sources:
            try:
                out.append(self.vision.prepare(s, mode, min_tiles, max_tiles))
            except (ValueError, OSError, MemoryError) as e:  # ImageError is a ValueError
                out.append(e)
        return out

    def passes(self, prepared: Sequence[Any]) -> list[list[Any]]:
        """The pages split into vision passes, in order: as many pages to a pass as keep its compute buffer
        within ``pass_bytes`` (a page alone always makes a pass). One rule for every caller (tilepass-cli,
        tilepass-batch, the server), since a page's embeddings may depend on its pass companions by rounding."""
        plan = getattr(self.vision, "plan_bytes", None)
        if plan is None or len(prepared) < 2 or self.pass_bytes <= 0:
            return [list(prepared)]
        from .native import TilepassError

        def too_big(pages: list[Any]) -> bool:
            try:
                return plan(pages) > self.pass_bytes
            except (TilepassError, MemoryError):  # no graph for them together: apart, or encode says why
                return True

        out: list[list[Any]] = []
        cur: list[Any] = []
        for p in prepared:
            if cur and too_big([*cur, p]):
                out.append(cur)
                cur = []
            cur.append(p)
        out.append(cur)
        return out

    def encode(self, prepared: Sequence[Any]) -> tuple[list[np.ndarray], float]:
        """The pages in as few vision passes as ``passes`` allows (one, unless their compute buffer would pass
        ``pass_bytes``); (embeddings, seconds)."""
        t0 = time.perf_counter()
        parts = self.passes(prepared)
        embs = [e for k, part in enumerate(parts) for e in self.encode_pass(part, trim=k == len(parts) - 1)[0]]
        return embs, time.perf_counter() - t0

    def encode_pass(self, part: Sequence[Any], trim: bool = True,
                    decoder_idle: bool = False) -> tuple[list[np.ndarray], float]:
        """One vision pass (a part that ``passes`` gave); (embeddings, seconds). trim: then give the vision buffers
        and weight pages back, as the decoder runs next. decoder_idle: the caller decodes nothing until this
        returns (tilepass-cli, between decode steps; not the server, whose other pages decode meanwhile), so
        the text weights' pages are given back first and the pass never holds both models at once."""
        t0 = time.perf_counter()
        text_trim = getattr(self.text, "trim", None)
        if decoder_idle and text_trim is not None:
            text_trim()
        embs = self.vision.encode(list(part))
        trim_fn = getattr(self.vision, "trim", None)
        if trim and trim_fn is not None:
            trim_fn()
        return embs, time.perf_counter() - t0

    @property
    def default_prompt(self) -> str:
        return self.conventions.default_prompt

    def prompt(self, prompt: str, n_image_tokens: int, token_grid: tuple[int, int] = (0, 0)) -> Prompt:
        """The decoder's input for one page, by the model family's conventions (prompts.py)."""
        try:
            return self.conventions.build(self.tokenizer, prompt, n_image_tokens, token_grid)
        except PromptError as e:
            raise PipelineError(str(e)) from None

    def prompt_ids(self, prompt: str, n_image_tokens: int) -> list[int]:
        return self.prompt(prompt, n_image_tokens).ids

    def default_no_repeat(self, ngram: int | None = None, window: int | None = None) -> NoRepeat:
        """The no-repeat rule: the vision family's official runner's n-gram size and window where not given."""
        fam_ngram, fam_window = getattr(self.vision, "no_repeat", (30, 90))
        return NoRepeat(ngram=fam_ngram if ngram is None else ngram, window=fam_window if window is None else window,
                        whitelist=self.td_ids, scope="generated")

    def check_prompt(self, ids: Sequence[int], embd: np.ndarray | None) -> np.ndarray | None:
        """PipelineError unless ids (one image token per row of embd) fit the context; the rows to prefill with
        (None for none)."""
        n_img = sum(1 for i in ids if i == self.image_id)
        if embd is not None and embd.shape[0] != n_img:
            raise PipelineError(f"{embd.shape[0]} image embeddings for {n_img} image tokens")
        if self.n_ctx is not None and len(ids) >= self.n_ctx:
            raise PipelineError(f"the prompt ({len(ids)} tokens with the image) does not fit the context of "
                                f"{self.n_ctx} tokens (use a smaller --mode or a larger context)")
        return None if embd is None or embd.shape[0] == 0 else np.ascontiguousarray(embd, dtype=np.float32)

    def generate(self, ids: Sequence[int], embd: np.ndarray | None, max_new_tokens: int,
                 sampling: Sampling = Sampling(), no_repeat: NoRepeat | None = None,
                 on_token: Callable[[int], None] | None = None, positions: np.ndarray | None = None) -> GenerationResult:
        """Reset the decoder, prefill ids (image rows replacing the image tokens; positions [3, n] for M-RoPE
        models), generate: in C (native_decode) with libtilepass's models, else (models passed in) by generate()."""
        if no_repeat is None:
            no_repeat = self.default_no_repeat()
        e = self.check_prompt(ids, embd)
        dec = self.native_decoder()
        if dec is not None and max_new_tokens > 0:
            return dec.generate(ids, e, positions, max_new_tokens, sampling, no_repeat, self.eos_id is not None,
                                on_token)
        return self._generate_py(ids, e, max_new_tokens, sampling, no_repeat, on_token, positions)

    def _generate_py(self, ids: Sequence[int], e: np.ndarray | None, max_new_tokens: int, sampling: Sampling,
                     no_repeat: NoRepeat, on_token: Callable[[int], None] | None,
                     positions: np.ndarray | None) -> GenerationResult:
        """generate's loop in Python (generate(): an eval, the C sampler and the stop rules per token), for models
        that are not libtilepass's; the reference the C loop is tested and benched against."""
        text = self.text
        n_vocab = self.n_vocab

        def last(logits: np.ndarray) -> np.ndarray:
            a = np.asarray(logits).reshape(-1)
            return a[-n_vocab:] if n_vocab and a.size >= n_vocab else a

        def prefill() -> np.ndarray:
            text.reset()
            if positions is None:
                return last(text.eval(list(ids), embd=e))
            return last(text.eval(list(ids), embd=e, pos=positions))

        def step(tok: int) -> np.ndarray:
            return last(text.eval([tok]))

        return generate(prefill, step, ids, max_new_tokens, eos_ids=() if self.eos_id is None else (self.eos_id,),
                        sampling=sampling, no_repeat=no_repeat, max_total=self.n_ctx, on_token=on_token)

    def run_page(self, name: str, prepared: Any, embd: np.ndarray, prompt: str, max_new_tokens: int,
                 sampling: Sampling = Sampling(), no_repeat: NoRepeat | None = None,
                 on_token: Callable[[int], None] | None = None) -> PageResult:
        p = self.prompt(prompt, int(embd.shape[0]), tuple(getattr(prepared, "token_grid", (0, 0))))
        ids = p.ids
        res = self.generate(ids, embd, max_new_tokens, sampling, no_repeat, on_token, positions=p.positions)
        return self._page_result(name, prepared, embd, ids, res)

    def native_decoder(self) -> Any:
        """The C decode loop (native_decode.NativeDecoder) over this pipeline's libtilepass models, or None when a
        model was passed in that is not one (tests' stand-ins) or whose ids the C session would read otherwise."""
        if getattr(self, "_native", False) is not False:
            return self._native
        self._native: Any = None
        from .text_model import TextModel
        from .vision import VisionEncoder

        info = getattr(self.text, "info", None)
        if (isinstance(self.text, TextModel) and isinstance(self.vision, VisionEncoder) and info is not None
                and self.eos_id == (info.eos_id if info.eos_id >= 0 else 1)
                and self.image_id is not None and self.image_id == info.image_token_id):
            from .native_decode import NativeDecoder

            self._native = NativeDecoder(self.text, self.vision)
        return self._native

    @property
    def can_batch(self) -> bool:
        """Whether the text model decodes several sequences together (run_pages with n_parallel > 1)."""
        return hasattr(self.text, "eval_batch") and hasattr(self.text, "new_sequence")

    def kv_bytes(self) -> int:
        """The bytes of one more page's KV cache (0 where the text model cannot say)."""
        from .native import lib

        model = getattr(self.text, "_model", None)
        return int(lib.tp_text_seq_bytes(model, 0)) if model is not None else 0

    def run_pages(self, requests: Iterable[PageRequest], n_parallel: int,
                  on_page: Callable[[PageRequest, PageResult | None, BaseException | None], None]) -> None:
        """Decode the pages, up to n_parallel together (generate_batch: each page prefilled alone into its own
        sequence, then all running pages one decode step per decoder pass; a page that stops gives its slot to
        the next). ``on_page(request, result, error)`` as each page stops (not in order). Greedy output of each
        page is what run_page gives it. With libtilepass's models the loop is C's (tp_session_generate_batch).

        ``requests`` is read lazily, one request each time a slot is free: a generator may encode the next
        pages when the pages it gave so far are all taken, so the slots never drain between vision passes."""
        if isinstance(requests, Sequence):
            n_parallel = min(n_parallel, len(requests))
        n = max(1, n_parallel)
        dec = self.native_decoder()
        if dec is not None:
            self._run_pages_native(dec, requests, n, on_page)
            return
        self._run_pages_py(requests, n, on_page)

    def _run_pages_py(self, requests: Iterable[PageRequest], n: int,
                      on_page: Callable[[PageRequest, PageResult | None, BaseException | None], None]) -> None:
        """run_pages' loop in Python (generate_batch over TextModel.eval_batch), for models that are not
        libtilepass's; the reference of the C loop's tests and bench."""
        from .text_model import BatchItem

        text = self.text
        n_vocab = self.n_vocab
        seqs: list[Any] = getattr(self, "_seqs", [])
        while len(seqs) < n - 1:  # slot 0 is the model's own sequence, the others its extra sequences
            seqs.append(text.new_sequence(self.n_ctx or 0))
        self._seqs = seqs
        slot_seq = [None, *seqs[: n - 1]]

        def last(logits: np.ndarray) -> np.ndarray:
            a = np.asarray(logits).reshape(-1)
            return a[-n_vocab:] if n_vocab and a.size >= n_vocab else a

        prompts: dict[int, tuple[list[int], Any]] = {}

        def jobs() -> Iterator[BatchJob]:
            for r in requests:
                nr = r.no_repeat if r.no_repeat is not None else self.default_no_repeat()
                try:
                    p = self.prompt(r.prompt, int(r.embd.shape[0]), tuple(getattr(r.prepared, "token_grid", (0, 0))))
                except PipelineError as e:
                    on_page(r, None, e)
                    continue
                gen = SequenceGen(p.ids, r.max_new_tokens, () if self.eos_id is None else (self.eos_id,), r.sampling,
                                  nr, self.n_ctx, r.on_token)
                prompts[id(r)] = (p.ids, p.positions)
                yield BatchJob(gen, r)

        def prefill(slot: int, job: BatchJob) -> np.ndarray:
            r: PageRequest = job.data  # type: ignore[assignment]
            ids, positions = prompts[id(r)]
            e = self.check_prompt(ids, r.embd)
            seq = slot_seq[slot]
            if seq is None:
                text.reset()
            else:
                seq.reset()
            (out,) = text.eval_batch([BatchItem(seq, list(ids), e, positions)])
            return last(out)

        def step(pairs: list[tuple[int, int]]) -> list[np.ndarray]:
            outs = text.eval_batch([BatchItem(slot_seq[k], [tok]) for k, tok in pairs])
            return [last(o) for o in outs]

        def done(job: BatchJob, err: BaseException | None) -> None:
            r: PageRequest = job.data  # type: ignore[assignment]
            ids, _ = prompts.pop(id(r))
            if err is not None:
                on_page(r, None, err)
                return
            on_page(r, self._page_result(r.name, r.prepared, r.embd, ids, job.gen.result), None)

        generate_batch(jobs(), n, prefill, step, done)

    def _run_pages_native(self, dec: Any, requests: Iterable[PageRequest], n: int,
                          on_page: Callable[[PageRequest, PageResult | None, BaseException | None], None]) -> None:
        from .native import TilepassError

        pending = iter(requests)

        def start(slot: int) -> tuple[Any, dict] | None:
            for r in pending:
                if r.max_new_tokens < 1:  # C's 0 means no limit: not what 0 new tokens asks for
                    on_page(r, None, PipelineError(f"{r.name}: max_new_tokens must be at least 1 "
                                                   f"(got {r.max_new_tokens})"))
                    continue
                try:
                    p = self.prompt(r.prompt, int(r.embd.shape[0]), tuple(getattr(r.prepared, "token_grid", (0, 0))))
                    e = self.check_prompt(p.ids, r.embd)
                    dec.submit(slot, p.ids, e, p.positions)
                except (PipelineError, TilepassError) as err:
                    on_page(r, None, err)
                    continue
                nr = r.no_repeat if r.no_repeat is not None else self.default_no_repeat()
                return (r, p.ids), dict(max_new_tokens=r.max_new_tokens, sampling=r.sampling, no_repeat=nr,
                                        eos=self.eos_id is not None, on_token=r.on_token)
            return None

        def done(tag: Any, res: GenerationResult | None, err: BaseException | None) -> None:
            r, ids = tag
            if err is not None or res is None:
                on_page(r, None, err)
                return
            on_page(r, self._page_result(r.name, r.prepared, r.embd, ids, res), None)

        dec.generate_batch(n, start, done)

    def _page_result(self, name: str, prepared: Any, embd: np.ndarray, ids: Sequence[int],
                     res: GenerationResult) -> PageResult:
        return PageResult(
            name=name, tokens=res.tokens, text=self.tokenizer.decode(res.tokens), stop_reason=res.stop_reason,
            n_prompt=len(ids), n_image_tokens=int(embd.shape[0]),
            original_size=tuple(getattr(prepared, "original_size", (0, 0))), mode=getattr(prepared, "mode", ""),
            prefill_ms=res.prefill_s * 1e3, decode_ms=res.decode_s * 1e3, prefill_tps=res.prefill_tps,
            decode_tps=res.decode_tps)


__all__ = ["OcrPipeline", "PageRequest", "PageResult", "PipelineError", "default_parallel",
           "mem_available_bytes", "DEFAULT_PROMPT", "IMAGE_TAG", "normalise_prompt",
           "check_model_files", "gguf_summary", "peak_memory_bytes"]
