"""Generation policy (encoder/generate.py, over libtilepass's tp_sampler): SequenceGen's no-repeat ban against
transformers' processors and the reference vLLM runner's rule, seeded sampling against transformers' warpers'
softmax, stop rules, and the whole loop against transformers' generate() on a tiny random causal LM. The C sampler
itself is tested in depth in test_sampler_native.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoder.generate import NO_REPEAT_OFF, NoRepeat, Sampling, SequenceGen, generate
from hf_warpers import hf_probs


def hf_banned(ids: np.ndarray, n: int, vocab: int, window: int = 0) -> set[int]:
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor
    from transformers.models.unlimited_ocr.generation_unlimited_ocr import (
        UnlimitedOcrSlidingWindowNoRepeatNgramLogitsProcessor)

    proc = (UnlimitedOcrSlidingWindowNoRepeatNgramLogitsProcessor(n, window) if window
            else NoRepeatNGramLogitsProcessor(n))
    scores = proc(torch.from_numpy(ids[None].astype(np.int64)), torch.zeros(1, vocab))
    return set(np.nonzero(torch.isinf(scores[0]).numpy())[0].tolist())


def vllm_banned(ids: list[int], n: int, window: int, whitelist: set[int]) -> set[int]:
    """The DeepSeek-OCR vLLM runner's rule, written out as it is (process/ngram_norepeat.py)."""
    if len(ids) < n:
        return set()
    prefix = tuple(ids[-(n - 1):]) if n > 1 else ()
    start = max(0, len(ids) - window)
    end = len(ids) - n + 1
    banned = set()
    for i in range(start, end):
        g = tuple(ids[i:i + n])
        if g[:-1] == prefix:
            banned.add(g[-1])
    return banned - whitelist


def seq_banned(ids: list[int], vocab: int, rule: NoRepeat, prompt: list[int] = ()) -> set[int]:
    """The ids SequenceGen bans after generating ids (a row of zeros with the history's next id on top: the ban
    shows as -inf written into the row, which next_token uses in place)."""
    g = SequenceGen(list(prompt), len(ids) + 2, eos_ids=(), no_repeat=rule)
    for t in ids:  # force the history: each row makes t the only candidate
        row = np.full(vocab, -np.inf, np.float32)
        row[t] = 0.0
        assert g.next_token(row) == t
    row = np.zeros(vocab, np.float32)
    g.next_token(row)
    return set(np.nonzero(np.isneginf(row))[0].tolist())


@pytest.mark.parametrize("n", [1, 2, 3, 6])
@pytest.mark.parametrize("window", [0, 5, 17])
def test_ban_matches_transformers(n, window):
    """Scope "all" (the prompt counts, no whitelist): transformers' processors over prompt + generated ids."""
    rng = np.random.default_rng(100 * n + window)
    vocab = 7
    rule = NoRepeat(ngram=n, window=window, whitelist=frozenset(), scope="all")
    checked = 0
    for trial in range(25):
        L = int(rng.integers(0, 40))
        ids = rng.integers(0, vocab, L)  # few symbols and planted repeats so that bans happen often
        k = max(n - 1, 1) + int(rng.integers(0, 3))
        src = max(0, L - window) if window else 0
        if trial % 2 and L - src > 2 * k:  # the suffix repeats ids inside the window: the next id is banned
            ids[-k:] = ids[src:src + k]
        cut = int(rng.integers(0, L + 1))
        prompt, gen_ids = ids[:cut].tolist(), ids[cut:].tolist()
        try:
            got = seq_banned(gen_ids, vocab, rule, prompt)
        except AssertionError:
            continue  # a forced id was itself banned: not a history the rule lets happen
        assert got == hf_banned(ids, n, vocab, window), (prompt, gen_ids, n, window)
        checked += bool(got)
    assert checked > 0 or 0 < window < n  # (an n-gram longer than the window never bans)


@pytest.mark.parametrize("n,window", [(2, 6), (3, 10), (5, 30), (30, 90)])
def test_ban_matches_reference_runner(n, window):
    """The default scope "generated" with a whitelist: the runner's rule over the generated ids only."""
    rng = np.random.default_rng(n)
    vocab = 6
    white = {4, 5}
    rule = NoRepeat(ngram=n, window=window, whitelist=frozenset(white))
    checked = 0
    for _ in range(30):
        L = int(rng.integers(0, 3 * window))
        ids = rng.integers(0, vocab, L).tolist()
        k = n - 1 + int(rng.integers(0, 3))
        src = max(0, L - window)
        if rng.random() < 0.6 and L - src > 2 * k:  # a page starting to loop: its suffix repeats ids in the window
            ids[-k:] = ids[src:src + k]
        try:
            got = seq_banned(ids, vocab, rule, prompt=[0, 1, 2, 3])
        except AssertionError:
            continue  # a forced id was itself banned: not a history the rule lets happen
        assert got == vllm_banned(ids, n, window, white)
        checked += bool(got)
    assert checked > 0


def test_whitelist_and_disable():
    ids = [5, 9, 5]
    assert seq_banned(ids, 12, NoRepeat(ngram=2, window=0, whitelist=frozenset())) == {9}
    assert seq_banned(ids, 12, NoRepeat(ngram=2, window=0, whitelist=frozenset({9}))) == set()
    assert seq_banned(ids, 12, NO_REPEAT_OFF) == set()
    with pytest.raises(ValueError):
        NoRepeat(ngram=-1)


def test_td_tokens_never_banned_by_default():
    td, ctd = 128821, 128822
    rule = NoRepeat(ngram=3, window=90)
    for t in (td, ctd):  # 7 8 t ... 7 8: t would repeat the 3-gram, but is whitelisted
        assert seq_banned([7, 8, t, 5, 7, 8], 129280, rule) == set()
    assert seq_banned([7, 8, 6, 5, 7, 8], 129280, rule) == {6}


def _sampled(sampling: Sampling, rows: list[np.ndarray], rule: NoRepeat = NO_REPEAT_OFF) -> list[int]:
    g = SequenceGen([0], len(rows) + 1, eos_ids=(), sampling=sampling, no_repeat=rule)
    return [g.next_token(r.copy()) for r in rows]


def test_sampling_greedy_topk_topp_seed():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(50).astype(np.float32)
    best = int(np.argmax(logits))
    rows = [logits] * 300
    assert set(_sampled(Sampling(), rows[:5])) == {best}
    assert set(_sampled(Sampling(temperature=1.0, top_k=1, seed=3), rows)) == {best}
    assert set(_sampled(Sampling(temperature=1.0, top_p=1e-6, seed=3), rows)) == {best}
    # a seed repeats its run; another seed gives another
    a = _sampled(Sampling(temperature=0.8, seed=42), rows)
    assert a == _sampled(Sampling(temperature=0.8, seed=42), rows)
    assert a != _sampled(Sampling(temperature=0.8, seed=43), rows)
    assert len(set(a)) > 1
    # the draws follow transformers' warpers' distribution, and never leave its kept set
    for temperature, top_k, top_p in [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.6)]:
        small = (rng.standard_normal(8) * 1.5).astype(np.float32)
        ref = hf_probs(small, temperature, top_k, top_p)
        draws = _sampled(Sampling(temperature=temperature, top_k=top_k, top_p=top_p, seed=7), [small] * 6000)
        counts = np.bincount(draws, minlength=8)
        assert counts[ref == 0].sum() == 0
        keep = ref > 0
        expected = ref[keep] * len(draws)
        chi2 = float((((counts[keep] - expected) ** 2) / expected).sum())
        assert chi2 < 24.3, (temperature, top_k, top_p, counts, expected)  # the 0.1 % tail of chi-square, df <= 7
    # the ban comes before sampling: a banned token is never drawn
    rule = NoRepeat(ngram=2, window=0, whitelist=frozenset())
    g = SequenceGen([0], 400, eos_ids=(), sampling=Sampling(temperature=1.0, seed=5), no_repeat=rule)
    hist: list[int] = []
    for _ in range(300):
        row = np.zeros(6, np.float32)
        want_banned = vllm_banned(hist, 2, len(hist), set()) if hist else set()
        tok = g.next_token(row)
        if tok is None:
            assert g.result.stop_reason == "no_candidates" and want_banned == set(range(6))
            break
        assert tok not in want_banned
        hist.append(tok)
    # banned everywhere: no candidate
    g = SequenceGen([0], 5, eos_ids=())
    assert g.next_token(np.full(4, -np.inf, np.float32)) is None and g.result.stop_reason == "no_candidates"
    with pytest.raises(ValueError):
        Sampling(temperature=-1)
    with pytest.raises(ValueError):
        Sampling(top_p=0)


class ScriptedModel:
    """step(id) -> logits favouring the next id of a script; EOS at the end."""

    def __init__(self, script: list[int], vocab: int = 20, eos: int = 1) -> None:
        self.script, self.vocab, self.eos, self.k = script, vocab, eos, 0

    def logits(self) -> np.ndarray:
        x = np.zeros(self.vocab, np.float32)
        x[self.script[self.k] if self.k < len(self.script) else self.eos] = 5.0
        x[(self.k * 7 + 3) % self.vocab] += 1.0  # a runner-up
        self.k += 1
        return x

    def prefill(self) -> np.ndarray:
        return self.logits()

    def step(self, tok: int) -> np.ndarray:
        return self.logits()


def test_stop_rules():
    m = ScriptedModel([5, 6, 7])
    r = generate(m.prefill, m.step, [0, 2], 10, eos_ids=[1], no_repeat=NO_REPEAT_OFF)
    assert r.tokens == [5, 6, 7] and r.stop_reason == "eos" and r.complete and r.n_steps == 3
    m = ScriptedModel([5, 6, 7])
    r = generate(m.prefill, m.step, [0, 2], 2, eos_ids=[1], no_repeat=NO_REPEAT_OFF)
    assert r.tokens == [5, 6] and r.stop_reason == "length" and not r.complete
    m = ScriptedModel([5, 6, 7, 8])
    r = generate(m.prefill, m.step, [0, 2], 10, eos_ids=[1], no_repeat=NO_REPEAT_OFF, max_total=4)
    assert r.tokens == [5, 6, 7] and r.stop_reason == "context"
    # a looping script is broken by the rule (generated scope: the prompt does not count)
    m = ScriptedModel([5, 6] * 10)
    r = generate(m.prefill, m.step, [5, 6, 5], 20, eos_ids=[1], no_repeat=NoRepeat(ngram=3, window=0))
    assert r.tokens[:4] == [5, 6, 5, 6] and r.tokens[4] != 5
    # the prompt's n-grams count only with scope "all" (transformers)
    m = ScriptedModel([5, 6, 7, 9])
    r = generate(m.prefill, m.step, [5, 6, 7], 20, eos_ids=[1], no_repeat=NoRepeat(ngram=3, window=0))
    assert r.tokens == [5, 6, 7, 9]
    m = ScriptedModel([5, 6, 7, 9])
    r = generate(m.prefill, m.step, [5, 6, 7], 20, eos_ids=[1], no_repeat=NoRepeat(ngram=3, window=0, scope="all"))
    assert r.tokens[:2] == [5, 6] and r.tokens[2] != 7


def test_interrupt_keeps_partial():
    calls = []

    def prefill():
        return np.eye(10, dtype=np.float32)[4]

    def step(tok):
        calls.append(tok)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return np.eye(10, dtype=np.float32)[4 + len(calls)]

    with pytest.raises(KeyboardInterrupt) as ei:
        generate(prefill, step, [0], 100, no_repeat=NO_REPEAT_OFF)
    assert ei.value.partial.stop_reason == "interrupted"
    assert ei.value.partial.tokens == [4, 5, 6]


# ---- the loop against transformers' generate on a tiny random causal LM ----------------------------
@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=24, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=256, bos_token_id=0, eos_token_id=1,
                      pad_token_id=2)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # make EOS rare and repetition likely
        model.lm_head.weight[1] -= 5.0
        model.lm_head.weight.mul_(3.0)
    return model


def _our_greedy(model, prompt: list[int], n: int, rule: NoRepeat) -> list[int]:
    seq = list(prompt)

    def logits_of() -> np.ndarray:
        with torch.no_grad():
            return model(torch.tensor([seq])).logits[0, -1].numpy()

    def step(tok: int) -> np.ndarray:
        seq.append(tok)
        return logits_of()

    return generate(logits_of, step, prompt, n, eos_ids=[1], no_repeat=rule).tokens


@pytest.mark.parametrize("ngram", [0, 2, 3, 5])
def test_greedy_loop_equals_transformers_generate(tiny_lm, ngram):
    prompt = [0, 5, 9, 5, 9, 7, 3]
    n = 60
    kw = dict(no_repeat_ngram_size=ngram) if ngram else {}
    with torch.no_grad():
        out = tiny_lm.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, num_beams=1,
                               pad_token_id=2, **kw)
    ref = out[0, len(prompt):].tolist()
    if ref and ref[-1] == 1:
        ref = ref[:-1]
    rule = NoRepeat(ngram=ngram, window=0, whitelist=frozenset(), scope="all") if ngram else NO_REPEAT_OFF
    ours = _our_greedy(tiny_lm, prompt, n, rule)
    assert ours == ref
    if ngram == 0:
        # the tiny LM loops without the rule: the rule is exercised in the other cases
        assert len(set(ours[-20:])) < 20

