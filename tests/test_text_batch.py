"""Several sequences in one decoder pass (TextModel.eval_batch / tp_text_eval_batch) on tiny transformers models
of both text families, F32:

* DeepSeek-OCR (UnlimitedOcr: MoE with shared experts, plain MHA, NeoX rope) with 1..8 sequences of different
  prompt lengths (0..64 image rows), and PaddleOCR-VL (ERNIE: dense, GQA, 3-D M-RoPE positions) with 1, 2, 5
  and 8 prompts of images of different sizes (or none) and tasks;
* prompts are prefilled together (several per graph, split across graphs by a small n_batch), the last
  sequence joining later in the same call as the others' decode steps, then all decode one token per call,
  each finishing after its own number of tokens;
* every sequence's prompt logits within 1e-4 relative of transformers' and of the sequence evaluated alone,
  every decode step's logits within 1e-4 of the alone run, and its greedy tokens identical to transformers'.
Errors: a sequence of another model, the same sequence twice, an overflow of one sequence's cache and an abort
append nothing to any sequence."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from encoder.native import TilepassError
from encoder.text_model import BatchItem, TextModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tp_testing import rel_err  # noqa: E402

TOL = 1e-4


class Prompt:
    """One sequence's input and its independent reference (transformers)."""

    def __init__(self, ids, embd, pos, ref_logits, ref_greedy, n_new):
        self.ids = [int(t) for t in ids]
        self.embd = embd
        self.pos = pos
        self.ref_logits = ref_logits
        self.ref_greedy = list(ref_greedy)
        self.n_new = n_new
        self.alone: tuple | None = None


def alone(m: TextModel, p: Prompt) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """The sequence evaluated by itself on the model's built-in sequence: prompt logits, step logits, tokens
    (once per prompt: kept on it)."""
    if p.alone is None:
        p.alone = _alone(m, p)
    return p.alone


def _alone(m: TextModel, p: Prompt) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    m.reset()
    logits = m.eval(p.ids, p.embd, all_logits=True, pos=p.pos)
    steps, toks, last = [], [], logits[-1]
    for i in range(p.n_new):
        toks.append(int(np.argmax(last)))
        if i == p.n_new - 1:
            break
        last = m.eval([toks[-1]])
        steps.append(last)
    return logits, steps, toks


def batched(m: TextModel, prompts: list[Prompt]) -> tuple[list, list[list], list[list[int]]]:
    """All prompts through eval_batch: the first ones prefilled together, the last joining with the others'
    first decode step, then one decode step per call for every sequence still running."""
    seqs = [m.new_sequence(len(p.ids) + p.n_new) for p in prompts]
    pre: list = [None] * len(prompts)
    steps: list[list] = [[] for _ in prompts]
    toks: list[list[int]] = [[] for _ in prompts]
    last: list = [None] * len(prompts)
    late = len(prompts) - 1 if len(prompts) > 1 else None
    first = [i for i in range(len(prompts)) if i != late]
    outs = m.eval_batch([BatchItem(seqs[i], prompts[i].ids, prompts[i].embd, prompts[i].pos, all_logits=True)
                         for i in first])
    for i, o in zip(first, outs):
        pre[i], last[i] = o, o[-1]
    while True:
        items, who = [], []
        for i, p in enumerate(prompts):
            if pre[i] is None:
                items.append(BatchItem(seqs[i], p.ids, p.embd, p.pos, all_logits=True))
                who.append(i)
                continue
            if len(toks[i]) >= p.n_new:
                continue
            toks[i].append(int(np.argmax(last[i])))
            if len(toks[i]) < p.n_new:
                items.append(BatchItem(seqs[i], [toks[i][-1]]))
                who.append(i)
        if not items:
            break
        for i, o in zip(who, m.eval_batch(items)):
            if pre[i] is None:
                pre[i], last[i] = o, o[-1]
            else:
                steps[i].append(o)
                last[i] = o
    for i, p in enumerate(prompts):
        assert seqs[i].n_past == len(p.ids) + p.n_new - 1
    return pre, steps, toks


def check(m_alone: TextModel, m_batch: TextModel, prompts: list[Prompt]) -> None:
    pre, steps, toks = batched(m_batch, prompts)
    for i, p in enumerate(prompts):
        a_pre, a_steps, a_toks = alone(m_alone, p)
        assert rel_err(pre[i], p.ref_logits) < TOL, f"sequence {i}: prompt logits against transformers"
        assert rel_err(pre[i], a_pre) < TOL, f"sequence {i}: prompt logits against the sequence alone"
        assert toks[i] == p.ref_greedy[: p.n_new], f"sequence {i}: greedy tokens against transformers"
        assert a_toks == toks[i]
        assert len(steps[i]) == len(a_steps) == p.n_new - 1
        for t, (b, a) in enumerate(zip(steps[i], a_steps)):
            assert rel_err(b, a) < TOL, f"sequence {i}, step {t}: logits against the sequence alone"


# ---------------------------------------------------------------------------------------------
# DeepSeek-OCR
# ---------------------------------------------------------------------------------------------

N_IMG = (0, 3, 64, 17, 25, 40, 9, 8)
N_NEW = (12, 5, 10, 1, 12, 8, 3, 12)  # different lengths: some finish early


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory):
    import reference_models as rm
    from test_text_decoder import Reference, _build

    dims = rm.TINY_SMALL_VOCAB
    d, files = _build(tmp_path_factory.mktemp("batch-deepseek"), dims, ["f32"])
    ref = Reference(d, rm.image_token_id(dims.vocab_size))
    rng = np.random.default_rng(11)
    prompts = []
    for k, (n_img, n_new) in enumerate(zip(N_IMG, N_NEW)):
        feats = (rng.standard_normal((n_img, dims.text_hidden)) * dims.initializer_range).astype(np.float32)
        text = [int(t) for t in rng.integers(3, 900, 4 + 3 * k)]
        ids = [0] + [ref.image_token] * n_img + text
        logits, greedy = ref.run(ids, feats, max(N_NEW))
        prompts.append(Prompt(ids, feats if n_img else None, None, logits, greedy, n_new))
    assert len({len(p.ids) for p in prompts}) == len(prompts)
    m_alone = TextModel(files["f32"], n_threads=2, n_ctx=256)
    m_batch = TextModel(files["f32"], n_threads=2, n_ctx=256, n_batch=48)
    return m_alone, m_batch, prompts


@pytest.mark.parametrize("n_seq", range(1, 9))
def test_deepseek_batched_equals_alone_and_transformers(deepseek, n_seq):
    m_alone, m_batch, prompts = deepseek
    check(m_alone, m_batch, prompts[:n_seq])


def test_refused_calls_append_nothing(deepseek):
    m_alone, m_batch, prompts = deepseek
    a, b, small = m_batch.new_sequence(), m_batch.new_sequence(), m_batch.new_sequence(8)
    assert small.n_ctx == 8 and a.n_ctx == 256
    m_batch.eval_batch([BatchItem(a, [0, 5, 6]), BatchItem(b, [0, 7]), BatchItem(small, [0, 1, 2, 3, 4, 5])])
    before = (a.n_past, b.n_past, small.n_past)
    assert before == (3, 2, 6)
    expect = a.eval([9])  # the logits after one more token: what a later successful call must give
    a.reset()
    a.eval([0, 5, 6])
    with pytest.raises(TilepassError, match="overflow") as e:
        m_batch.eval_batch([BatchItem(a, [9]), BatchItem(b, [9]), BatchItem(small, [1, 2, 3])])
    assert "entry 2" in str(e.value)
    with pytest.raises(TilepassError, match="same sequence"):
        m_batch.eval_batch([BatchItem(a, [9]), BatchItem(a, [9])])
    with pytest.raises(TilepassError, match="outside"):
        m_batch.eval_batch([BatchItem(a, [9]), BatchItem(b, [10**6])])
    with pytest.raises(ValueError, match="another model"):
        m_batch.eval_batch([BatchItem(a, [9]), BatchItem(m_alone.new_sequence(), [9])])
    assert (a.n_past, b.n_past, small.n_past) == before
    got = m_batch.eval_batch([BatchItem(a, [9]), BatchItem(b, [9]), BatchItem(small, [1, 2])])
    assert rel_err(got[0], expect) < TOL  # the refused calls left a as it was
    assert (a.n_past, b.n_past, small.n_past) == (4, 3, 8)


def test_abort_appends_nothing(deepseek):
    m_alone = deepseek[0]
    calls = {"n": 0, "stop": 0}

    def abort() -> bool:
        calls["n"] += 1
        return calls["stop"] > 0 and calls["n"] >= calls["stop"]

    m = TextModel(m_alone.path, n_threads=2, n_ctx=64, abort=abort)
    s1, s2 = m.new_sequence(), m.new_sequence()
    s1.eval([0, 5, 6])
    calls["stop"], calls["n"] = 10, 0
    with pytest.raises(TilepassError, match="aborted"):
        m.eval_batch([BatchItem(s1, [7, 8]), BatchItem(s2, [0, 1, 2, 3])])
    assert (s1.n_past, s2.n_past) == (3, 0)
    calls["stop"] = 0
    m.eval_batch([BatchItem(s1, [7, 8]), BatchItem(s2, [0, 1, 2, 3])])
    assert (s1.n_past, s2.n_past) == (5, 4)


# ---------------------------------------------------------------------------------------------
# PaddleOCR-VL
# ---------------------------------------------------------------------------------------------

PADDLE_PROMPTS = (((700, 980), "OCR:", 12), ((300, 200), "Table Recognition:", 4), (None, "OCR:", 9),
                  ((460, 520), "Formula Recognition:", 7), (None, "Table Recognition:", 6),
                  ((200, 300), "OCR:", 12), ((150, 900), "Chart Recognition:", 3), ((640, 360), "Chart Recognition:", 10))


@pytest.fixture(scope="module")
def paddle(tmp_path_factory):
    import reference_paddleocr as rp
    from convert import convert
    from test_vision_reference import page_image

    model_dir = rp.get_tiny_paddleocr(seed=0)
    ref_model = rp.load_tiny_paddleocr(model_dir)
    path = convert(model_dir, outtype="f32", outfile=tmp_path_factory.mktemp("batch-paddle") / "text-f32.gguf",
                   progress=False).outfile
    prompts = []
    for k, (size, task, n_new) in enumerate(PADDLE_PROMPTS):
        images = [page_image(*size, seed=k)] if size else []
        ref = rp.reference_prompt(ref_model, images, task, n_new=max(p[2] for p in PADDLE_PROMPTS),
                                  features=bool(images))
        embd = ref.features.images[0].projected if images else None
        prompts.append(Prompt(ref.input_ids, embd, np.asarray(ref.position_ids, np.int32), ref.logits, ref.greedy,
                              n_new))
    assert len({len(p.ids) for p in prompts}) >= len(prompts) - 2  # small images scale up to the same size
    m_alone = TextModel(path, n_threads=2, n_ctx=2048)
    m_batch = TextModel(path, n_threads=2, n_ctx=2048, n_batch=64)
    return m_alone, m_batch, prompts


@pytest.mark.parametrize("n_seq", (1, 2, 5, 8))  # a prompt's logits are 300 x 103,424 floats: not every count
def test_paddleocr_batched_equals_alone_and_transformers(paddle, n_seq):
    m_alone, m_batch, prompts = paddle
    check(m_alone, m_batch, prompts[:n_seq])
