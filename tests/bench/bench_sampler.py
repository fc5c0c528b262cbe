"""Per-token generation policy (issue 23): one decode step's no-repeat ban + greedy choice on DeepSeek-OCR's
129,280-token row (n-gram 30, window 90, a looping history so the ban is at work): libtilepass's tp_sampler
alone, encoder.generate.SequenceGen.next_token (what generate / the CLI / the server run per token), against a
bare numpy argmax over the row (the least any policy costs). Best of 5 blocks of 100 steps each."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

VOCAB = 129280
TD_IDS = (128821, 128822)
STEPS = 100


def _best_us(block) -> float:
    out = []
    for _ in range(5):
        t0 = time.perf_counter()
        r = block()
        out.append(r if r is not None else time.perf_counter() - t0)
    return min(out) / STEPS * 1e6


def run(n_threads: int = 2) -> list[dict]:
    from encoder import generate as gen
    from encoder.native_sampler import NativeSampler

    rng = np.random.default_rng(0)
    loop = rng.integers(0, 128000, 7).tolist()
    logits = rng.standard_normal(VOCAB).astype(np.float32)
    s = NativeSampler(VOCAB, ngram=30, window=90, whitelist=TD_IDS)
    for t in (loop * 40)[:200]:
        s.accept(t)
    x = logits.copy()

    def c_block() -> None:
        for k in range(STEPS):
            s.accept(loop[k % 7])  # the history moves: the ban is recomputed every step
            s.sample(x, in_place=True)

    rows = [logits.copy() for _ in range(7)]
    for r, t in zip(rows, loop):
        r[t] += 100.0  # the model wants to loop: the ban is at work
    g = gen.SequenceGen([0, 1, 2], 10**9, eos_ids=(), no_repeat=gen.NoRepeat(ngram=30, window=90))
    buf = np.empty(VOCAB, np.float32)

    def seq_block() -> float:
        dt = 0.0
        for k in range(STEPS):
            np.copyto(buf, rows[k % 7])  # the row as the model leaves it (not timed)
            t0 = time.perf_counter()
            g.next_token(buf)
            dt += time.perf_counter() - t0
        return dt

    def argmax_block() -> None:
        for _ in range(STEPS):
            int(np.argmax(logits))

    c_us, seq_us, np_us = _best_us(c_block), _best_us(seq_block), _best_us(argmax_block)
    return [{"name": "policy step (ban n30 W90 + greedy, 129,280 logits)", "c_sampler_us": c_us,
             "sequencegen_us": seq_us, "peer": "numpy argmax alone", "peer_us": np_us, "ratio": np_us / seq_us}]


if __name__ == "__main__":
    for r in run():
        print(r)
