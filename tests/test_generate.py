"""Generation policy (encoder/generate.py): the no-repeat n-gram rule against transformers'
processors and the reference vLLM runner's rule, sampling, stop rules, and the whole loop against
transformers' generate() on a tiny random causal LM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoder.generate import (NO_REPEAT_OFF, NoRepeat, Sampler, Sampling, apply_no_repeat, banned_tokens,
                              filter_logits, generate)


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


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("window", [0, 5, 17])
def test_banned_matches_transformers(n, window):
    rng = np.random.default_rng(100 * n + window)
    vocab = 7
    for trial in range(60):
        L = int(rng.integers(0, 40))
        # few symbols and planted repeats so that bans happen often
        ids = rng.integers(0, vocab, L)
        if L > 8 and trial % 2:
            k = int(rng.integers(2, 6))
            ids[-k:] = ids[:k]
        ours = set(banned_tokens(ids, n, window).tolist())
        assert ours == hf_banned(ids, n, vocab, window), (ids.tolist(), n, window)


@pytest.mark.parametrize("n,window", [(2, 6), (3, 10), (5, 30), (30, 90)])
def test_banned_matches_reference_runner(n, window):
    rng = np.random.default_rng(n)
    vocab = 6
    white = {4, 5}
    for _ in range(80):
        L = int(rng.integers(0, 3 * window))
        ids = rng.integers(0, vocab, L).tolist()
        if L > 2 * n and rng.random() < 0.5:  # a long repeat, as a looping page
            period = int(rng.integers(1, n + 2))
            ids = (ids[:period] * (L // period + 1))[:L]
        ours = set(banned_tokens(ids, n, window, white).tolist())
        assert ours == vllm_banned(ids, n, window, white)


def test_whitelist_and_disable():
    ids = [5, 9, 5, 9, 5]
    assert banned_tokens(ids, 2, 0).tolist() == [9]
    assert banned_tokens(ids, 2, 0, whitelist={9}).tolist() == []
    assert banned_tokens(ids, 0, 0).tolist() == []
    logits = np.zeros(12, np.float32)
    apply_no_repeat(logits, ids, NoRepeat(ngram=2, window=0, whitelist=frozenset()))
    assert np.isneginf(logits[9]) and np.isfinite(np.delete(logits, 9)).all()
    logits = np.zeros(12, np.float32)
    apply_no_repeat(logits, ids, NO_REPEAT_OFF)
    assert np.isfinite(logits).all()
    with pytest.raises(ValueError):
        NoRepeat(ngram=-1)


def test_td_tokens_never_banned_by_default():
    td, ctd = 128821, 128822
    row = [td, 7, ctd]
    ids = row * 40
    rule = NoRepeat(ngram=3, window=90)
    logits = np.zeros(129280, np.float32)
    apply_no_repeat(logits, ids, rule)
    assert np.isfinite(logits[[td, ctd]]).all()
    assert np.isneginf(logits[7]) or ids[-2:] != [ctd, td]


def test_sampling_greedy_topk_topp_seed():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(50).astype(np.float32)
    best = int(np.argmax(logits))
    assert Sampler(Sampling())(logits) == best
    assert Sampler(Sampling(temperature=1.0, top_k=1, seed=3))(logits) == best
    assert Sampler(Sampling(temperature=1.0, top_p=1e-6, seed=3))(logits) == best
    a = [Sampler(Sampling(temperature=0.8, seed=42))(logits) for _ in range(3)]
    s = Sampler(Sampling(temperature=0.8, seed=42))
    b = [s(logits) for _ in range(20)]
    s2 = Sampler(Sampling(temperature=0.8, seed=42))
    assert b == [s2(logits) for _ in range(20)]
    assert len(set(b)) > 1 and len(set(a)) == 1
    # top-k keeps exactly k candidates; top-p keeps the smallest set reaching p
    x = filter_logits(logits, Sampling(temperature=1.0, top_k=5))
    assert np.isfinite(x).sum() == 5
    p = np.exp(logits - logits.max()); p /= p.sum()
    order = np.argsort(-p)
    k = int(np.searchsorted(np.cumsum(p[order]), 0.5) + 1)
    x = filter_logits(logits, Sampling(temperature=1.0, top_p=0.5))
    assert set(np.nonzero(np.isfinite(x))[0]) == set(order[:k].tolist())
    # sampled frequencies follow the softmax
    s = Sampler(Sampling(temperature=1.0, seed=1))
    small = np.log(np.array([0.5, 0.3, 0.2]))
    counts = np.bincount([s(small) for _ in range(4000)], minlength=3) / 4000
    assert np.allclose(counts, [0.5, 0.3, 0.2], atol=0.03)
    # banned everywhere: no candidate
    assert Sampler(Sampling())(np.full(4, -np.inf)) == -1
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

