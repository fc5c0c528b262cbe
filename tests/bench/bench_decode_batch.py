"""Batched decode (issue 22 item 4): several sequences of one text model in one decoder pass
(tp_text_eval_batch), on the synthetic text GGUFs of bench_text.py (DeepSeek-OCR's real dimensions, Q8_0 and
Q4_K_M by default):

* summed decode tok/s with 1, 2, 4 and 8 sequences decoding together, each at context CTX (its own KV cache,
  F16), one token per sequence per call: the median of DECODE_ROUNDS rounds of N_DEC calls after DECODE_WARM
  untimed ones; and its ratio to one stream (the goal: >= 2.5x at 4 sequences);
* pages per hour of the text part alone: N_PAGES pages (a PROMPT-token prefill each, then MAX_NEW[k] greedy
  tokens, lengths that differ as pages do) decoded one at a time (--parallel 1) and through generate_batch with
  the CLI's default --parallel for this machine (pipeline.default_parallel), prefill included (the goal: >= 2x).

``python bench_decode_batch.py [threads] [--small]``: --small runs shapes a few hundred times smaller (a smoke
run of the code path; its figures say nothing about the full model)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import bench_text  # noqa: E402

BATCHES = (1, 2, 4, 8)
CTX, N_DEC, DECODE_WARM, DECODE_ROUNDS = 1000, 32, 4, 3
N_PAGES, PROMPT, MAX_NEW = 8, 300, (256, 96, 200, 160, 240, 128, 180, 220)
SMALL = dict(N_VOCAB=4096, N_EMBD=256, N_LAYER=4, N_HEAD=4, FFN=512, N_EXP=8, N_USED=2, N_SHARED=1, EXP_FFN=256)


@contextlib.contextmanager
def dims(small: bool):
    """bench_text's model dimensions, shrunk for a smoke run."""
    saved = {k: getattr(bench_text, k) for k in SMALL}
    if small:
        for k, v in SMALL.items():
            setattr(bench_text, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(bench_text, k, v)


def summed_decode(m, n_seq: int, ctx: int, n_dec: int, rng) -> dict:
    """n_seq sequences at context ctx; one decode step of all of them per eval_batch call."""
    from encoder.text_model import BatchItem

    seqs = [m.new_sequence(ctx + n_dec * (DECODE_ROUNDS + 1) + DECODE_WARM * (DECODE_ROUNDS + 1) + 8)
            for _ in range(n_seq)]
    for s in seqs:
        s.eval(rng.integers(3, bench_text.N_VOCAB - 1, size=ctx).astype(np.int32))
    toks = [5] * n_seq

    def step() -> None:
        outs = m.eval_batch([BatchItem(s, [t]) for s, t in zip(seqs, toks)])
        for i, o in enumerate(outs):
            toks[i] = int(np.argmax(o))

    rounds = []
    for _ in range(DECODE_ROUNDS):
        for _ in range(DECODE_WARM):
            step()
        t0 = time.perf_counter()
        for _ in range(n_dec):
            step()
        rounds.append(n_seq * n_dec / (time.perf_counter() - t0))
    return {"tok_s": float(np.median(rounds)), "rounds": [round(r, 2) for r in rounds]}


def pages_per_hour(m, n_parallel: int, n_pages: int, prompt: int, max_new, rng) -> float:
    """The text part of n_pages pages: prefill + greedy decode (no stop token: each page's -n), n_parallel at
    once through generate_batch (1: one page at a time on the model's own sequence, as the CLI's --parallel 1)."""
    from encoder.generate import BatchJob, NoRepeat, Sampling, SequenceGen, generate, generate_batch
    from encoder.text_model import BatchItem

    prompts = [rng.integers(3, bench_text.N_VOCAB - 1, size=prompt).astype(np.int32) for _ in range(n_pages)]
    off = NoRepeat(ngram=0, window=0)
    t0 = time.perf_counter()
    if n_parallel == 1:
        for k in range(n_pages):
            m.reset()
            generate(lambda: m.eval(prompts[k]), lambda t: m.eval([t]), prompts[k], max_new[k], (), Sampling(), off)
    else:
        seqs = [None] + [m.new_sequence(prompt + max(max_new) + 8) for _ in range(n_parallel - 1)]

        def prefill(slot: int, job: BatchJob):
            s = seqs[slot]
            if s is None:
                m.reset()
            else:
                s.reset()
            return m.eval_batch([BatchItem(s, prompts[job.data])])[0]

        def step(pairs):
            return m.eval_batch([BatchItem(seqs[k], [t]) for k, t in pairs])

        jobs = [BatchJob(SequenceGen(prompts[k], max_new[k], (), Sampling(), off), k) for k in range(n_pages)]
        generate_batch(jobs, n_parallel, prefill, step, lambda job, err: None)
    return n_pages / (time.perf_counter() - t0) * 3600


def run(n_threads: int = 2, small: bool = False) -> list[dict]:
    import gguf

    from encoder.pipeline import default_parallel, mem_available_bytes
    from encoder.text_model import TextModel

    QT = gguf.GGMLQuantizationType
    ctx, n_dec = (CTX, N_DEC) if not small else (200, 16)
    prompt, max_new = (PROMPT, MAX_NEW) if not small else (64, tuple(v // 4 for v in MAX_NEW))
    rows = []
    with dims(small), tempfile.TemporaryDirectory(prefix="tp-bench-batch-") as tmp:
        for qname, qtype, mixture in (("q8_0", QT.Q8_0, False), ("q4_k_m", QT.Q4_K, True)):
            path = Path(tmp) / f"text-{qname}.gguf"
            bench_text.write_text_gguf(path, qtype, mixture=mixture)
            m = TextModel(path, n_threads=n_threads, n_ctx=prompt + max(max_new) + 8, n_batch=512)
            rng = np.random.default_rng(1)
            one = None
            for b in BATCHES:
                r = summed_decode(m, b, ctx, n_dec, rng)
                one = one or r["tok_s"]
                rows.append({"name": f"text {qname} summed decode, {b} sequence{'s' if b > 1 else ''}",
                             "ours": r["tok_s"], "x_one_stream": r["tok_s"] / one, "context": ctx,
                             "round_tok_s": r["rounds"], "small_shapes": small})
            auto = default_parallel(n_threads, mem_available_bytes(), _kv_bytes(m))
            p1 = pages_per_hour(m, 1, N_PAGES, prompt, max_new, rng)
            pn = pages_per_hour(m, auto, N_PAGES, prompt, max_new, rng)
            rows.append({"name": f"text {qname} pages/hour, --parallel 1", "ours": p1, "pages": N_PAGES,
                         "prompt": prompt, "max_new": list(max_new), "small_shapes": small})
            rows.append({"name": f"text {qname} pages/hour, --parallel default ({auto})", "ours": pn,
                         "x_parallel_1": pn / p1, "pages": N_PAGES, "small_shapes": small})
            del m
            path.unlink()
    return rows


def _kv_bytes(m) -> int:
    from encoder.native import lib

    return int(lib.tp_text_seq_bytes(m._model, 0))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    for row in run(int(args[0]) if args else 2, small="--small" in sys.argv):
        print(row)
