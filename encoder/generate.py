"""Generation policy: the parameter objects (Sampling, NoRepeat), one sequence's policy fed one logits row at a
time (SequenceGen), and the loops that drive a model: ``generate`` (one sequence, ``step(id) -> logits``) and
``generate_batch`` (continuous batching of many). The per-token work (the no-repeat ban, greedy / temperature /
top-k / top-p sampling with a seeded PRNG) is libtilepass's tp_sampler (encoder/native_sampler.py); this module
only adds the stop rules (EOS ids, a count of new tokens, the context size).

No-repeat n-gram rule. With history h (a list of ids), n-gram size n and window W: a token t is banned for the next
position when some n-gram ``h[i:i+n]`` lying entirely inside the last W tokens of h (W = 0: anywhere in h) has
``h[i:i+n-1] == h[-(n-1):]`` and ``h[i+n-1] == t``; tokens in the whitelist are never banned. This is

* transformers' ``NoRepeatNGramLogitsProcessor`` (``no_repeat_ngram_size=n``) with W = 0 and the
  history = prompt + generated tokens (scope "all");
* transformers' ``UnlimitedOcrSlidingWindowNoRepeatNgramLogitsProcessor`` with W > 0 (it cuts the
  ids to their last W before the same test);
* DeepSeek-OCR's vLLM runner (``NoRepeatNGramLogitsProcessor(ngram_size=30, window_size=90,
  whitelist_token_ids={<td>, </td>})``) with the history = generated tokens only (scope "generated").

Sampling order (as transformers): no-repeat ban, then temperature, top-k, top-p; temperature 0
(the default) is greedy argmax (the first maximum on ties, as torch.argmax).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from .native_sampler import NativeSampler

TD_IDS = (128821, 128822)  # <td>, </td>: never banned by the reference runner


@dataclass(frozen=True)
class NoRepeat:
    """The no-repeat n-gram rule. ngram 0 disables it; window 0 = the whole history.
    scope: "generated" (the reference vLLM runner: only new tokens count) or "all" (transformers:
    the prompt ids count too)."""

    ngram: int = 30
    window: int = 90
    whitelist: frozenset[int] = frozenset(TD_IDS)
    scope: str = "generated"

    def __post_init__(self) -> None:
        if self.ngram < 0 or self.window < 0:
            raise ValueError(f"no-repeat n-gram size and window must be >= 0 (got {self.ngram}, {self.window})")
        if self.scope not in ("generated", "all"):
            raise ValueError(f"no-repeat scope must be 'generated' or 'all', not {self.scope!r}")

    @property
    def enabled(self) -> bool:
        return self.ngram > 0


NO_REPEAT_OFF = NoRepeat(ngram=0, window=0)


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (self.temperature >= 0.0) or not np.isfinite(self.temperature):
            raise ValueError(f"temperature must be a finite number >= 0 (got {self.temperature})")
        if self.top_k < 0:
            raise ValueError(f"top-k must be >= 0 (got {self.top_k})")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top-p must be in (0, 1] (got {self.top_p})")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class GenerationResult:
    tokens: list[int] = field(default_factory=list)  # generated ids (EOS not included)
    stop_reason: str = ""  # "eos", "length" (hit max_new_tokens), "context" (KV cache full), "no_candidates", "interrupted"
    n_prompt: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    n_steps: int = 0  # decoder steps after the prefill

    @property
    def complete(self) -> bool:
        return self.stop_reason == "eos"

    @property
    def prefill_tps(self) -> float:
        return self.n_prompt / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        return self.n_steps / self.decode_s if self.decode_s > 0 else 0.0


class SequenceGen:
    """One sequence's generation policy, fed one logits vector at a time: ``next_token(logits)`` gives the id
    to append (and evaluate) next, or None once the sequence has stopped (``result.stop_reason`` set). The
    stop rules, no-repeat ban and sampler of ``generate``, which runs one of these; ``generate_batch`` runs
    many side by side."""

    def __init__(self, prompt_ids: Sequence[int], max_new_tokens: int, eos_ids: Iterable[int] = (1,),
                 sampling: Sampling = Sampling(), no_repeat: NoRepeat = NoRepeat(), max_total: int | None = None,
                 on_token: Callable[[int], None] | None = None) -> None:
        self.n_prompt = len(prompt_ids)
        self.max_new_tokens = max_new_tokens
        self.eos = frozenset(eos_ids)
        self.sampling = sampling
        self.no_repeat = no_repeat
        self.max_total = max_total
        self.on_token = on_token
        self.prompt_ids = list(prompt_ids) if no_repeat.enabled and no_repeat.scope == "all" else []
        self.sampler: NativeSampler | None = None  # made at the first row: its size is the vocabulary's
        self.result = GenerationResult(n_prompt=len(prompt_ids))

    def _sampler_for(self, n_vocab: int) -> NativeSampler:
        s = NativeSampler.from_policy(n_vocab, self.sampling, self.no_repeat)
        s.accept_prompt(self.prompt_ids)  # scope "all": the prompt's ids count (placeholders outside the vocabulary skipped)
        self.sampler = s
        return s

    def next_token(self, logits: np.ndarray) -> int | None:
        """The id to append next, or None once stopped. A writable C-contiguous float32 row is used in place: its
        banned entries become -inf (other rows are copied)."""
        res = self.result
        if len(res.tokens) >= self.max_new_tokens:
            res.stop_reason = "length"
            return None
        x = np.asarray(logits).reshape(-1)
        s = self.sampler if self.sampler is not None else self._sampler_for(int(x.size))
        tok = s.sample(x, in_place=True)
        if tok < 0:
            res.stop_reason = "no_candidates"
            return None
        if tok in self.eos:
            res.stop_reason = "eos"
            return None
        res.tokens.append(tok)
        s.accept(tok)
        if self.on_token is not None:
            self.on_token(tok)
        if len(res.tokens) >= self.max_new_tokens:
            res.stop_reason = "length"
            return None
        if self.max_total is not None and self.n_prompt + len(res.tokens) > self.max_total:
            res.stop_reason = "context"  # the KV cache cannot take this token
            return None
        return tok


def generate(
    prefill: Callable[[], np.ndarray],
    step: Callable[[int], np.ndarray],
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    eos_ids: Iterable[int] = (1,),
    sampling: Sampling = Sampling(),
    no_repeat: NoRepeat = NoRepeat(),
    max_total: int | None = None,
    on_token: Callable[[int], None] | None = None,
) -> GenerationResult:
    """Run the loop: ``prefill()`` returns the logits after the prompt; ``step(id)`` appends one id
    and returns the next logits. Stops at an EOS id (not appended to the tokens), after
    ``max_new_tokens`` tokens ("length"), or when the sequence would exceed ``max_total`` ids
    ("context"). A KeyboardInterrupt is re-raised after recording "interrupted" in the result
    attached to the exception (``exc.partial``)."""
    gen = SequenceGen(prompt_ids, max_new_tokens, eos_ids, sampling, no_repeat, max_total, on_token)
    res = gen.result
    try:
        t0 = time.perf_counter()
        logits = prefill()
        res.prefill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        tok = gen.next_token(logits)
        while tok is not None:
            logits = step(tok)
            res.n_steps += 1
            tok = gen.next_token(logits)
        res.decode_s = time.perf_counter() - t0
    except KeyboardInterrupt as e:
        res.stop_reason = "interrupted"
        e.partial = res  # type: ignore[attr-defined]
        raise
    return res


@dataclass
class BatchJob:
    """One sequence of ``generate_batch``: its policy and whatever the caller's callbacks need (``data``)."""

    gen: SequenceGen
    data: object = None


def generate_batch(
    jobs: Iterable[BatchJob],
    n_parallel: int,
    prefill: Callable[[int, BatchJob], np.ndarray],
    step: Callable[[list[tuple[int, int]]], list[np.ndarray]],
    on_done: Callable[[BatchJob, BaseException | None], None],
) -> None:
    """Continuous batching of many sequences through ``n_parallel`` slots: a job takes a free slot and is
    prefilled alone (``prefill(slot, job)`` returns the logits after its prompt; prefill is compute-bound),
    then every running job takes one decode step per ``step([(slot, id), ...])`` call (one logits vector per
    pair, in order: all sequences in one pass of the decoder, the weights read once). Each job keeps its own
    no-repeat history, sampler, stop rules and -n limit (its SequenceGen), so a job's tokens are those
    ``generate`` gives it alone. ``on_done(job, error)`` is called as each job stops (its result in
    job.gen.result; error: the exception its prefill raised, or a failed step's for every job in that step),
    and its slot goes to the next job. A KeyboardInterrupt marks the running jobs "interrupted" and is
    re-raised."""
    if n_parallel < 1:
        raise ValueError(f"n_parallel must be >= 1 (got {n_parallel})")
    pending = iter(jobs)
    slots: list[tuple[BatchJob, int, float] | None] = [None] * n_parallel  # (job, next id, decode start)
    exhausted = False
    try:
        while True:
            for k in range(n_parallel):  # fill free slots: prefill the next jobs alone
                while slots[k] is None and not exhausted:
                    job = next(pending, None)
                    if job is None:
                        exhausted = True
                        break
                    res = job.gen.result
                    t0 = time.perf_counter()
                    try:
                        logits = prefill(k, job)
                    except Exception as e:  # this job is lost, not the others
                        on_done(job, e)
                        continue
                    res.prefill_s = time.perf_counter() - t0
                    tok = job.gen.next_token(logits)
                    if tok is None:
                        on_done(job, None)
                    else:
                        slots[k] = (job, tok, time.perf_counter())
            running = [k for k in range(n_parallel) if slots[k] is not None]
            if not running:
                return
            pairs = [(k, slots[k][1]) for k in running]  # type: ignore[index]
            try:
                outs = step(pairs)
            except Exception as e:
                for k in running:
                    job, _, t0 = slots[k]  # type: ignore[misc]
                    job.gen.result.decode_s = time.perf_counter() - t0
                    slots[k] = None
                    on_done(job, e)
                continue
            for k, logits in zip(running, outs):
                job, _, t0 = slots[k]  # type: ignore[misc]
                job.gen.result.n_steps += 1
                tok = job.gen.next_token(logits)
                if tok is None:
                    job.gen.result.decode_s = time.perf_counter() - t0
                    slots[k] = None
                    on_done(job, None)
                else:
                    slots[k] = (job, tok, t0)
    except KeyboardInterrupt:
        for sl in slots:
            if sl is not None:
                sl[0].gen.result.stop_reason = "interrupted"
        raise
