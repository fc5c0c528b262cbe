"""The generation policy in C (native/generate/: tp_sampler, tp_stop; encoder/native_sampler.py) against
independent references:

- the no-repeat ban set, grown one id at a time, against transformers' NoRepeatNGramLogitsProcessor (window 0,
  every id counted), UnlimitedOcrSlidingWindowNoRepeatNgramLogitsProcessor (window > 0), the DeepSeek-OCR vLLM
  runner's rule written out (window + whitelist, generated ids only), on random and looping histories;
- greedy against numpy's argmax (first maximum) after the ban; temperature / top-k / top-p against transformers'
  TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper (the same scores left, ties included);
- the seeded draws: the PRNG stream against xoshiro256** / splitmix64 written out here, reproducibility, and the
  empirical distribution against the filtered softmax (chi-square with a fixed seed);
- stop rules: EOS, max new tokens, stop strings across tokens that split UTF-8 characters (the text of a
  llama.cpp-written fixture's vocabulary);
- the ban + greedy step's cost on a 129,280-token row, alone and through encoder.generate.SequenceGen, against a
  bare numpy argmax over the row (printed; run with -s).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor
from transformers.models.unlimited_ocr.generation_unlimited_ocr import (
    UnlimitedOcrSlidingWindowNoRepeatNgramLogitsProcessor)

from encoder import generate as gen
from encoder.native import TilepassError
from encoder.native_sampler import NativeSampler, NativeStop
from encoder.native_tokenizer import NativeTokenizer
from hf_warpers import hf_filter, hf_probs

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures"
DEEPSEEK_VOCAB = 129280
TD_IDS = (128821, 128822)


def hf_banned(ids: list[int], n: int, vocab: int, window: int = 0) -> set[int]:
    proc = (UnlimitedOcrSlidingWindowNoRepeatNgramLogitsProcessor(n, window) if window
            else NoRepeatNGramLogitsProcessor(n))
    scores = proc(torch.tensor([ids], dtype=torch.long), torch.zeros(1, vocab))
    return set(np.nonzero(torch.isinf(scores[0]).numpy())[0].tolist())


def vllm_banned(ids: list[int], n: int, window: int, whitelist: set[int]) -> set[int]:
    """DeepSeek-OCR's vLLM runner's rule (its NoRepeatNGramLogitsProcessor over the generated ids), written out."""
    if len(ids) < n:
        return set()
    prefix = tuple(ids[len(ids) - n + 1:]) if n > 1 else ()
    banned = set()
    for i in range(max(0, len(ids) - window), len(ids) - n + 1):
        g = tuple(ids[i:i + n])
        if g[:-1] == prefix:
            banned.add(g[-1])
    return banned - whitelist


def random_history(rng: np.random.Generator, length: int, vocab: int, n: int) -> list[int]:
    """Few symbols, and half the time a loop (a period repeated), as a page that repeats itself."""
    ids = rng.integers(0, vocab, length).tolist()
    if length > 2 * n and rng.random() < 0.5:
        period = int(rng.integers(1, n + 2))
        start = int(rng.integers(0, length // 2))
        loop = (ids[start:start + period] * (length // period + 1))[:length - start]
        ids = ids[:start] + loop
    return ids


# ---- the no-repeat rule ----

@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("window", [0, 4, 17, 40])
def test_ban_set_matches_transformers_step_by_step(n, window):
    rng = np.random.default_rng(1000 * n + window)
    vocab = 6
    for _ in range(6):
        ids = random_history(rng, int(rng.integers(1, 70)), vocab, n)
        s = NativeSampler(vocab, ngram=n, window=window, scope="all")
        for t in range(len(ids)):
            s.accept(ids[t])
            hist = ids[:t + 1]
            ours = s.banned().tolist()
            assert ours == sorted(hf_banned(hist, n, vocab, window)), (hist, n, window)


@pytest.mark.parametrize("n,window", [(2, 6), (3, 10), (5, 30), (30, 90), (4, 0)])
def test_ban_set_matches_reference_runner(n, window):
    """Whitelist and window over the generated ids only (the prompt ignored with scope "generated")."""
    rng = np.random.default_rng(n + window)
    vocab = 7
    white = {4, 5}
    for _ in range(30):
        ids = random_history(rng, int(rng.integers(0, 3 * max(window, 30))), vocab, n)
        prompt = rng.integers(0, vocab, 20).tolist()
        s = NativeSampler(vocab, ngram=n, window=window, whitelist=white | {1000}, scope="generated")
        s.accept_prompt(prompt)
        assert s.n_history == 0
        for t in ids:
            s.accept(t)
        ref = vllm_banned(ids, n, window or len(ids), white)
        assert s.banned().tolist() == sorted(ref)
        # scope "all": the prompt is part of the history (transformers' rule over prompt + generated)
        a = NativeSampler(vocab, ngram=n, window=window, scope="all")
        a.accept_prompt(prompt + [-1, vocab + 3])  # placeholders outside the vocabulary are skipped
        for t in ids:
            a.accept(t)
        assert a.n_history == len(prompt) + len(ids)
        assert a.banned().tolist() == sorted(hf_banned(prompt + ids, n, vocab, window))


def test_ban_on_the_deepseek_vocabulary():
    """n 30, W 90 and <td> </td> never banned, on a looping table (129,280 tokens); the ban reaches the logits."""
    rng = np.random.default_rng(7)
    row = [TD_IDS[0], 7, TD_IDS[1]] + rng.integers(0, 128000, 5).tolist()
    ids = (row * 40)[:252]  # ends inside the row: the next id is banned
    s = NativeSampler(DEEPSEEK_VOCAB, ngram=30, window=90, whitelist=TD_IDS)
    for t in ids:
        s.accept(t)
    want = sorted(vllm_banned(ids, 30, 90, set(TD_IDS)))
    assert want and s.banned().tolist() == want
    logits = rng.standard_normal(DEEPSEEK_VOCAB).astype(np.float32)
    logits[want[0]] = 50.0
    ref = logits.copy()
    ref[want] = -np.inf
    assert s.sample(logits) == int(np.argmax(ref))
    x = logits.copy()
    s.sample(x, in_place=True)
    np.testing.assert_array_equal(x, ref)  # only the banned entries changed
    s.reset()
    assert s.n_history == 0 and s.banned().size == 0


def test_from_the_python_policy_objects():
    """generate.NoRepeat's defaults (n 30, W 90, <td> </td>, generated ids) give the runner's rule."""
    s = NativeSampler.from_policy(DEEPSEEK_VOCAB, gen.Sampling(), gen.NoRepeat())
    row = [TD_IDS[0], 11, TD_IDS[1], 12, 13]
    s.accept_prompt([1, 2, 3])
    for end in (124, 125):  # the next id: 13 (banned), then <td> (whitelisted)
        ids = (row * 30)[:end]
        s.reset()
        for t in ids:
            s.accept(t)
        assert s.n_history == len(ids)
        assert s.banned().tolist() == sorted(vllm_banned(ids, 30, 90, set(TD_IDS))) == ([13] if end == 124 else [])


# ---- greedy ----

def test_greedy_is_first_argmax():
    rng = np.random.default_rng(3)
    for trial in range(200):
        V = int(rng.integers(1, 300))
        logits = rng.integers(-3, 4, V).astype(np.float32)  # many ties
        s = NativeSampler(V, ngram=2, window=0, scope="all")
        ids = rng.integers(0, V, int(rng.integers(0, 12))).tolist()
        for t in ids:
            s.accept(t)
        ref = logits.copy()
        ban = sorted(hf_banned(ids, 2, V))
        ref[ban] = -np.inf
        got = s.sample(logits)
        assert got == (int(np.argmax(ref)) if np.isfinite(ref).any() else -1), (trial, ids)
    s = NativeSampler(4, ngram=0)
    assert s.sample(np.full(4, -np.inf, np.float32)) == -1
    assert s.sample(np.array([np.nan, 1.0, np.nan, 1.0], np.float32)) == 1
    assert s.sample(np.array([np.nan] * 4, np.float32)) == -1
    assert s.sample(np.array([1.0, np.inf, 2.0, np.inf], np.float32)) == 1  # torch.argmax: the first +inf
    t = NativeSampler(4, temperature=1.0, seed=3, ngram=0)
    draws = {t.sample(np.array([1.0, np.inf, 2.0, np.inf], np.float32)) for _ in range(200)}
    assert draws == {1, 3}  # +inf tokens only, both drawn
    big = NativeSampler(4, ngram=2**31 - 1, window=2**31 - 1)  # created at once (no n-step set-up)
    big.accept(2)
    assert big.banned().size == 0


# ---- temperature, top-k, top-p ----

@pytest.mark.parametrize("ties", [False, True])
def test_warpers_match_transformers(ties):
    rng = np.random.default_rng(11 + ties)
    n_checked = 0
    for trial in range(300):
        V = int(rng.integers(2, 400))
        logits = rng.standard_normal(V).astype(np.float32) * float(rng.uniform(0.5, 6))
        if ties:
            logits = np.round(logits * 2) / 2  # steps of 0.5: ties everywhere, at the top-k and top-p bounds too
        logits[rng.random(V) < 0.1] = -np.inf  # as banned tokens
        temperature = float(rng.choice([0.3, 0.7, 1.0, 1.6]))
        top_k = int(rng.choice([0, 1, 2, 5, 50, V + 3]))
        top_p = float(rng.choice([1.0, 0.95, 0.8, 0.5, 0.1]))
        s = NativeSampler(V, temperature=temperature, top_k=top_k, top_p=top_p, seed=trial, ngram=0)
        ours = s.filter(logits)
        ref = hf_filter(logits, temperature, top_k, top_p)
        if ties and top_p < 1.0:
            # torch.sort is not stable: which of the tokens tied at the top-p bound transformers keeps is torch's
            # choice. The same count is kept, the difference lies inside the bound's tie; and the rule documented
            # (ties by ascending id, a stable sort) is met exactly.
            diff = np.isfinite(ours) != np.isfinite(ref)
            assert np.isfinite(ours).sum() == np.isfinite(ref).sum(), (trial, V, temperature, top_k, top_p)
            assert len(set(logits[diff].tolist())) <= 1
            ref = hf_filter(logits, temperature, top_k, top_p, stable=True)
        assert np.array_equal(np.isfinite(ours), np.isfinite(ref)), (trial, V, temperature, top_k, top_p)
        np.testing.assert_array_equal(ours[np.isfinite(ours)], ref[np.isfinite(ref)])
        # every draw is a kept token
        for _ in range(3):
            assert np.isfinite(ref[s.sample(logits)])
        n_checked += int(np.isinf(ref).sum() > np.isinf(logits).sum())
    assert n_checked > 100  # the filters did remove tokens


def test_top_p_on_a_big_row():
    """Top-p alone over 129,280 tokens (the head sorted, not the row) against transformers."""
    rng = np.random.default_rng(5)
    for scale, p in [(1.0, 0.9), (4.0, 0.5), (0.05, 0.99), (8.0, 0.999)]:
        logits = (rng.standard_normal(DEEPSEEK_VOCAB) * scale).astype(np.float32)
        s = NativeSampler(DEEPSEEK_VOCAB, temperature=1.0, top_p=p, seed=1, ngram=0)
        ours, ref = s.filter(logits), hf_filter(logits, 1.0, 0, p)
        assert np.array_equal(np.isfinite(ours), np.isfinite(ref)), (scale, p)


# ---- the seeded draws ----

M64 = (1 << 64) - 1


def splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def xoshiro256ss(seed: int, count: int) -> list[int]:
    """xoshiro256** (Blackman & Vigna) with its state from splitmix64(seed), as published."""
    s, x = [], seed
    for _ in range(4):
        x, v = splitmix64(x)
        s.append(v)
    rotl = lambda v, k: ((v << k) | (v >> (64 - k))) & M64  # noqa: E731
    out = []
    for _ in range(count):
        out.append((rotl((s[1] * 5) & M64, 7) * 9) & M64)
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
    return out


def test_prng_stream_is_xoshiro256ss():
    """With 65,536 equal logits a draw is the top 16 bits of the generator's output: the stream is the published
    algorithm's, bit for bit (so the same on every platform)."""
    assert splitmix64(0)[1] == 0xE220A8397B1DCDAF  # the published first output of splitmix64(0)
    V = 1 << 16
    for seed in (0, 1, 12345, 2**64 - 1):
        s = NativeSampler(V, temperature=1.0, seed=seed, ngram=0)
        zeros = np.zeros(V, np.float32)
        got = [s.sample(zeros) for _ in range(64)]
        assert got == [v >> 48 for v in xoshiro256ss(seed, 64)], seed
        s.reset()
        assert [s.sample(zeros) for _ in range(8)] == got[:8]


def test_seeded_runs_reproduce_and_follow_the_softmax():
    rng = np.random.default_rng(9)
    V = 12
    logits = rng.standard_normal(V).astype(np.float32) * 2
    for temperature, top_k, top_p in [(1.0, 0, 1.0), (0.7, 6, 1.0), (1.3, 0, 0.8), (0.9, 8, 0.9)]:
        runs = []
        for _ in range(2):
            s = NativeSampler(V, temperature=temperature, top_k=top_k, top_p=top_p, seed=42, ngram=0)
            runs.append([s.sample(logits) for _ in range(20000)])
        assert runs[0] == runs[1]
        other = NativeSampler(V, temperature=temperature, top_k=top_k, top_p=top_p, seed=43, ngram=0)
        assert [other.sample(logits) for _ in range(200)] != runs[0][:200]
        ref = hf_probs(logits, temperature, top_k, top_p)
        counts = np.bincount(runs[0], minlength=V)
        assert counts[ref == 0].sum() == 0  # nothing outside the kept set
        keep = ref > 0
        expected = ref[keep] * len(runs[0])
        chi2 = float((((counts[keep] - expected) ** 2) / expected).sum())
        # chi-square with df = kept - 1 <= 11: 31.3 is its 0.1 % tail for df 11
        assert chi2 < 31.3, (temperature, top_k, top_p, chi2, counts, expected)


# ---- parameters and misuse ----

def test_bad_parameters_and_calls():
    for kw, word in [(dict(n_vocab=0), "n_vocab"), (dict(temperature=-1.0), "temperature"),
                     (dict(temperature=float("nan")), "temperature"), (dict(top_k=-2), "top_k"),
                     (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(ngram=-1), "no_repeat_ngram"),
                     (dict(window=-3), "no_repeat_window"), (dict(whitelist=[-4]), "no_repeat_whitelist")]:
        args = dict(n_vocab=10) | kw
        with pytest.raises(ValueError, match=word):
            NativeSampler(**args)
    with pytest.raises(ValueError, match="scope"):
        NativeSampler(10, scope="prompt")
    s = NativeSampler(10)
    with pytest.raises(TilepassError, match="n_vocab is 10"):
        s.sample(np.zeros(11, np.float32))
    with pytest.raises(TilepassError, match="out of range"):
        s.accept(10)
    with pytest.raises(ValueError, match="stop"):
        NativeStop(None, stop_strings=["x"])
    with pytest.raises(ValueError, match="empty"):
        NativeStop(NativeTokenizer.load(FIXTURES / "llamacpp-tiny-v1" / "text-f16.gguf"), stop_strings=[""])


# ---- stop rules ----

@pytest.fixture(scope="module")
def tok() -> NativeTokenizer:
    return NativeTokenizer.load(FIXTURES / "llamacpp-tiny-v1" / "text-f16.gguf")


def split_chars(tok: NativeTokenizer, ids: list[int]) -> int:
    """How many tokens are not whole UTF-8 characters by themselves."""
    n = 0
    for i in ids:
        try:
            tok.token_bytes(i).decode("utf-8")
        except UnicodeDecodeError:
            n += 1
    return n


TEXT = "Tabelle: 日本語のテキスト 😀👍🏽 <td>naïve</td> Ölfläche — fin."


@pytest.mark.parametrize("stop", ["のテ", "😀👍", "</td>", "fläche —", "fin.", "Z"])
def test_stop_strings_across_split_characters(tok, stop):
    ids = tok.encode(TEXT, parse_special=False)
    assert split_chars(tok, ids) > 0  # the text has characters split over tokens
    st = NativeStop(tok, eos_ids=[1], stop_strings=[stop, "never"])
    text, reason, at = b"", "", -1
    for k, i in enumerate(ids):
        reason, piece = st.push(i)
        piece.decode("utf-8")  # whole characters only
        text += piece
        assert stop.encode() not in text
        if reason:
            at = k
            break
    data, s = TEXT.encode(), stop.encode()
    if s in data:
        assert reason == "stop_string" and text == data[:data.index(s)]
        # the token that completed the stop string: the first whose text (whole characters) holds it
        first = next(k for k in range(len(ids)) if s in tok.decode_bytes(ids[:k + 1]).decode("utf-8", "ignore")
                     .encode())
        assert at == first and st.n_tokens == at + 1
        assert st.flush() == b""
    else:
        assert reason == "" and text + st.flush() == data
    with pytest.raises(TilepassError):
        st.push(ids[0]) if reason else (_ for _ in ()).throw(TilepassError(1, "not stopped"))


def test_stop_eos_length_and_hold_back(tok):
    ids = tok.encode("ab</t", parse_special=False) + tok.encode("x</td>y", parse_special=False)
    st = NativeStop(tok, eos_ids=[7, 1], max_new_tokens=100, stop_strings=["</td>"])
    out = b""
    for i in ids:
        reason, piece = st.push(i)
        out += piece
        if reason:
            break
    assert reason == "stop_string" and out == b"ab</tx"
    st.reset()
    assert st.n_tokens == 0
    assert st.push(ids[0])[0] == "" and st.push(1) == ("eos", b"")
    st = NativeStop(tok, max_new_tokens=3, stop_strings=["<td>"])
    pieces = tok.encode("1 <t", parse_special=False) + tok.encode("b", parse_special=False)
    got = [st.push(i) for i in pieces[:3]]
    assert [r for r, _ in got] == ["", "", "length"]
    assert b"".join(p for _, p in got) + st.flush() == tok.decode_bytes(pieces[:3])
    no_text = NativeStop(None, eos_ids=[5], max_new_tokens=2)
    assert no_text.push(3) == ("", b"") and no_text.push(5) == ("eos", b"")
