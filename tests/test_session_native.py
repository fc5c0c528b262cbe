"""The C session API (include/tilepass.h "Sessions", native/session/) against today's Python path (encoder/pipeline.py,
prompts.py, generate.py, grounding.py), on the tiny llama.cpp fixtures and the bundled trained model:

* the prompt ids (and PaddleOCR-VL's M-RoPE positions: its chat template rendered in C) the C family builds equal
  encoder/prompts.py's, for the default prompt, a prompt with <image> inside and one without (PaddleOCR-VL: tasks);
* greedy and seeded-sampling tokens of the C session equal the Python loop's (OcrPipeline._generate_py: generate())
  token for token, with the no-repeat
  rule off, on (a short n-gram that fires on these models) and the family's default; the text equals the tokenizer's
  decoding of the tokens; stop strings; the errors of prompts that do not fit a family;
* OcrPipeline.generate and run_pages, which run the C loop (tp_session_submit_ids + tp_session_generate /
  tp_session_generate_batch), give the Python loop's results (_generate_py, _run_pages_py: generate_batch) and each
  page's tokens alone, streamed tokens included.
The grounding spans: tests/test_grounding_native.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / ".." / "shared" / "fixtures"
MODEL = ROOT / "examples" / "model"
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "examples" / "ocrtrain"))

from encoder.generate import NO_REPEAT_OFF, NoRepeat, Sampling  # noqa: E402
from encoder.native import TilepassError, lib  # noqa: E402
from encoder.pipeline import OcrPipeline  # noqa: E402
from encoder.preprocess import load_image  # noqa: E402
from session_native import CSession  # noqa: E402

N_NEW = 32
POLICIES = {
    "greedy": (Sampling(), NO_REPEAT_OFF),
    "greedy-no-repeat": (Sampling(), NoRepeat(ngram=2, window=0, whitelist=frozenset())),
    "greedy-no-repeat-all": (Sampling(), NoRepeat(ngram=3, window=16, whitelist=frozenset(), scope="all")),
    "sampled": (Sampling(temperature=0.8, top_k=40, top_p=0.9, seed=1234), NO_REPEAT_OFF),
    "sampled-no-repeat": (Sampling(temperature=0.3, top_k=50, top_p=0.95, seed=99), NoRepeat(ngram=2, window=0)),
}
TINY = ["llamacpp-tiny-v1", "llamacpp-tiny-ocr2", "llamacpp-tiny-paddleocr-vl"]
PROMPTS = {"deepseek": (None, "<image>\nFree OCR.", "Describe <image> in a few words.", "<|grounding|>Locate the table."),
           "paddleocr_vl": (None, "Table Recognition:", "Formula Recognition:")}


class Case:
    def __init__(self, text: Path, vision: Path, image: Path, mode: str | None = None) -> None:
        self.pipe = OcrPipeline(text, vision, n_threads=2)
        self.mode = mode
        self.rgb = np.asarray(load_image(str(image)), dtype=np.uint8)
        self.prepared = self.pipe.prepare([str(image)], mode)[0]
        (self.embd,), _ = self.pipe.encode([self.prepared])
        self.grid = tuple(self.prepared.token_grid)
        self.c = CSession(self.pipe.text._model, self.pipe.vision._model, mode)

    def py_prompt(self, prompt: str):
        return self.pipe.prompt(prompt, int(self.embd.shape[0]), self.grid)


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Case]:
    out = {}
    for name in TINY:
        d = FIXTURES / name
        assert (d / "text-f16.gguf").exists(), f"fixture {d} missing"
        out[name] = Case(d / "text-f16.gguf", d / "mmproj-f32.gguf", d / "page.png")
    assert (MODEL / "config.json").exists(), "the trained model is not bundled in examples/model"
    import engine_check
    from gen import make_page

    work = tmp_path_factory.mktemp("session")
    text, vision = engine_check.convert_files(MODEL, work, ["f32"])["f32"]
    page = work / "page.png"
    make_page(engine_check.EVAL_SEED0 + 7).image.save(page)
    out["bundled"] = Case(text, vision, page, "base")
    return out


@pytest.mark.parametrize("name", TINY + ["bundled"])
def test_prompt_ids_equal_python(cases, name):
    case = cases[name]
    family = case.pipe.conventions.family
    for prompt in PROMPTS.get(family, PROMPTS["deepseek"]):
        want = case.py_prompt(case.pipe.default_prompt if prompt is None else prompt)
        if prompt is None:
            case.c.submit(prompt, rgb=case.rgb)
        else:  # the ids do not depend on where the image rows come from
            case.c.submit(prompt, embd=case.embd, grid=case.grid)
        got, pos = case.c.prompt_ids()
        assert got == want.ids, f"{name} {prompt!r}"
        if want.positions is None:
            assert pos is None
        else:  # PaddleOCR-VL: the M-RoPE positions too
            assert pos is not None and np.array_equal(pos, want.positions), f"{name} {prompt!r}"


@pytest.mark.parametrize("name", TINY + ["bundled"])
@pytest.mark.parametrize("policy", list(POLICIES))
def test_tokens_equal_python(cases, name, policy):
    case = cases[name]
    sampling, no_repeat = POLICIES[policy]
    p = case.py_prompt(case.pipe.default_prompt)
    want = case.pipe._generate_py(p.ids, case.embd, N_NEW, sampling, no_repeat, None, p.positions)
    if policy == "greedy":
        case.c.submit(None, rgb=case.rgb)  # the image encoded by the session
    else:
        case.c.submit(None, embd=case.embd, grid=case.grid)
    got = case.c.generate(N_NEW, sampling, no_repeat)
    assert got.tokens == want.tokens, f"{name} {policy}"
    assert got.n_prompt == len(p.ids)
    assert got.stop_reason == {"eos": lib.TP_SESSION_STOP_EOS, "length": lib.TP_SESSION_STOP_LENGTH}[want.stop_reason]
    assert got.text.decode("utf-8") == case.pipe.tokenizer.decode(want.tokens)


@pytest.mark.parametrize("name", TINY[:2])
def test_no_repeat_policies_change_the_tokens(cases, name):
    """The no-repeat policies above do ban something on these models (else "rule on" would test nothing)."""
    case = cases[name]
    for policy in ("greedy-no-repeat", "greedy-no-repeat-all", "sampled-no-repeat"):
        sampling, no_repeat = POLICIES[policy]
        runs = []
        for nr in (no_repeat, NO_REPEAT_OFF):
            case.c.submit(None, embd=case.embd, grid=case.grid)
            runs.append(case.c.generate(N_NEW, sampling, nr).tokens)
        assert runs[0] != runs[1], f"{name} {policy}"


@pytest.mark.parametrize("name", TINY)
def test_family_default_no_repeat_and_embeddings(cases, name):
    """The session's defaults (the family's runner's rule, <td> </td> whitelisted) are the pipeline's; embeddings
    submitted instead of RGB give the same tokens."""
    case = cases[name]
    sampling = Sampling(temperature=0.7, seed=5)
    p = case.py_prompt(case.pipe.default_prompt)
    want = case.pipe._generate_py(p.ids, case.embd, N_NEW, sampling, case.pipe.default_no_repeat(), None, p.positions)
    case.c.submit(None, embd=case.embd, grid=case.grid)
    got = case.c.generate(N_NEW, sampling, None)
    assert got.tokens == want.tokens


def test_stop_string_and_errors(cases):
    case = cases["llamacpp-tiny-v1"]
    case.c.submit(None, rgb=case.rgb)
    full = case.c.generate(N_NEW, Sampling(), NO_REPEAT_OFF)
    text = full.text.decode("utf-8")
    cut = text[len(text) // 2:len(text) // 2 + 3]
    assert cut
    case.c.submit(None, rgb=case.rgb)
    got = case.c.generate(N_NEW, Sampling(), NO_REPEAT_OFF, stop=[cut])
    assert got.stop_reason == lib.TP_SESSION_STOP_STRING
    assert got.text.decode("utf-8") == text[:text.index(cut)]
    with pytest.raises(TilepassError, match="2 <image> tags for 1 image"):
        case.c.submit("<image><image>", rgb=case.rgb)
    with pytest.raises(TilepassError, match="nothing submitted"):
        case.c.generate(4)
    paddle = cases["llamacpp-tiny-paddleocr-vl"]
    with pytest.raises(TilepassError, match="PaddleOCR-VL prompt is the task text"):
        paddle.c.submit("<image>OCR:", embd=paddle.embd, grid=paddle.grid)
    with pytest.raises(TilepassError, match="image tokens for a"):
        paddle.c.submit(None, embd=paddle.embd, grid=(paddle.grid[0] + 1, paddle.grid[1]))


@pytest.mark.parametrize("name", TINY + ["bundled"])
@pytest.mark.parametrize("policy", list(POLICIES))
def test_pipeline_generate_is_the_c_loop(cases, name, policy):
    case = cases[name]
    sampling, no_repeat = POLICIES[policy]
    assert case.pipe.native_decoder() is not None
    p = case.py_prompt(case.pipe.default_prompt)
    want = case.pipe._generate_py(p.ids, case.embd, N_NEW, sampling, no_repeat, None, p.positions)
    streamed: list[int] = []
    got = case.pipe.generate(p.ids, case.embd, N_NEW, sampling, no_repeat, streamed.append, positions=p.positions)
    assert got.tokens == want.tokens and streamed == want.tokens
    assert (got.stop_reason, got.n_prompt, got.n_steps) == (want.stop_reason, want.n_prompt, want.n_steps)
    assert got.prefill_s > 0 and got.decode_s > 0


@pytest.mark.parametrize("name", TINY + ["bundled"])
def test_run_pages_is_the_c_batch_loop(cases, name):
    """Five pages (prompts, limits, policies of their own) through 2 slots: the C batch (slots refilled as pages stop)
    gives each page the Python batch loop's result and its tokens alone; a prompt that does not fit is reported."""
    from encoder.pipeline import PageRequest

    case = cases[name]
    prompts = PROMPTS["paddleocr_vl" if "paddle" in name else "deepseek"]
    pols = list(POLICIES.values())
    reqs = []
    for k in range(5):
        sampling, nr = pols[k % len(pols)]
        prompt = prompts[k % len(prompts)] or case.pipe.default_prompt
        reqs.append(PageRequest(f"p{k}", case.prepared, case.embd, prompt, 8 + 7 * k, sampling, nr, tag=k))
    bad = "<image> <image> two" if "paddle" not in name else "<image> x"
    reqs.insert(2, PageRequest("bad", case.prepared, case.embd, bad, 8, tag=-1))
    streams: dict[int, list[int]] = {}
    for r in reqs:
        streams[r.tag] = []
        r.on_token = streams[r.tag].append

    def collect(run) -> dict:
        out: dict = {}
        run(lambda r, res, err: out.__setitem__(r.tag, (res, err)))
        return out

    for s in streams.values():
        s.clear()
    c = collect(lambda f: case.pipe.run_pages(reqs, 2, f))
    c_streams = {k: list(v) for k, v in streams.items()}
    py = collect(lambda f: case.pipe._run_pages_py(reqs, 2, f))
    assert set(c) == set(py) == {r.tag for r in reqs}
    assert c[-1][0] is None and py[-1][0] is None and type(c[-1][1]) is type(py[-1][1])
    for r in reqs:
        if r.tag < 0:
            continue
        (cr, ce), (pr, pe) = c[r.tag], py[r.tag]
        assert ce is None and pe is None
        assert cr.tokens == pr.tokens == c_streams[r.tag], f"{name} page {r.tag}"
        assert (cr.stop_reason, cr.n_prompt, cr.text) == (pr.stop_reason, pr.n_prompt, pr.text)
        p = case.pipe.prompt(r.prompt, int(r.embd.shape[0]), case.grid)
        alone = case.pipe._generate_py(p.ids, case.embd, r.max_new_tokens, r.sampling, r.no_repeat, None, p.positions)
        assert cr.tokens == alone.tokens, f"{name} page {r.tag} alone"
