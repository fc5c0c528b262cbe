"""Pages decoded together (tilepass-cli --parallel, OcrPipeline.run_pages, generate.generate_batch) on the bundled
trained model (examples/model), which reads its generator's pages (peaked logits, texts of different lengths):

* F32 files, --parallel 3 over 4 pages (continuous batching: a finished page's slot taken by the next), no
  no-repeat rule: every page's tokens are transformers' own greedy tokens (UnlimitedOcr.generate);
* the demo's files (text Q8_0, vision F16), the default no-repeat rule (each page its own history): --parallel 4,
  the automatic default and --parallel 1 write identical outputs, for images (stdout in page order) and for a
  PDF into -o DIR (document files, page files, a resumed run that has nothing left to do);
* generate_batch alone: each sequence's tokens and stop reason equal generate()'s for it (greedy, seeded
  sampling, no-repeat, -n, context), for 1..8 slots; a failing prefill costs its own sequence only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "model"
sys.path.insert(0, str(ROOT / "examples" / "ocrtrain"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pdfmaker as pm  # noqa: E402
from encoder.generate import (BatchJob, NoRepeat, Sampling, SequenceGen, generate,  # noqa: E402
                              generate_batch)

N_PAGES = 4
PROMPT = "<image>\nFree OCR."
MAX_NEW = 128


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    assert (MODEL / "config.json").exists(), "the trained model is not bundled in examples/model"
    import engine_check
    from gen import make_page

    work = tmp_path_factory.mktemp("parallel")
    files = engine_check.convert_files(MODEL, work, ["f32", "q8_0"])
    pages = [make_page(engine_check.EVAL_SEED0 + 20 + k) for k in range(N_PAGES)]
    images = []
    for k, p in enumerate(pages):
        images.append(work / f"page{k}.png")
        p.image.save(images[-1])
    return files, pages, images, work


def cli(text: Path, vision: Path, *args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "encoder.cli", "-m", str(text), "--mmproj", str(vision), "-t", "2",
           "--mode", "base", "-p", PROMPT, *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_parallel_tokens_are_transformers_greedy(bundle, tmp_path):
    import engine_check

    from encoder.pipeline import OcrPipeline

    files, _pages, images, _ = bundle
    text, vision = files["f32"]
    out = tmp_path / "out"
    r = cli(text, vision, *images, "--parallel", "3", "-n", MAX_NEW, "--no-repeat-ngram", "0", "--json", "--raw",
            "-o", out)
    assert r.returncode in (0, 3), r.stderr
    assert "decoding up to 3 pages together" in r.stderr
    ref = engine_check.Reference.load(MODEL, n_threads=2)
    pipe = OcrPipeline(text, vision, n_threads=2)
    lengths = set()
    for im in images:
        got = json.loads((out / f"{im.stem}.json").read_text())["token_ids"]
        prepared = pipe.prepare([str(im)], "base")[0]
        ids = pipe.prompt_ids(PROMPT, int(prepared.n_tokens))
        want = ref.greedy(ids, prepared, MAX_NEW, pipe.eos_id)
        assert got == want, f"{im.name}: first difference at {next(i for i, (a, b) in enumerate(zip(got + [-1], want)) if a != b)}"
        lengths.add(len(want))
    assert len(lengths) > 1  # pages finish at different steps: slots are handed on


def test_parallel_outputs_identical_to_one_at_a_time(bundle, tmp_path):
    files, pages, images, _ = bundle
    text, vision = files["q8_0"]
    runs = {}
    for par in ("1", "4"):
        r = cli(text, vision, *images, "--parallel", par, "-n", "400")
        assert r.returncode == 0, r.stderr
        assert ("decoding up to" in r.stderr) == (par != "1")
        runs[par] = r.stdout
    assert runs["4"] == runs["1"]
    markers = [line for line in runs["4"].splitlines() if line.startswith("<!-- page")]
    assert [m.split(": ", 1)[1].rstrip(" ->") for m in markers] == [str(im) for im in images]  # page order kept

    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(pm.make_pdf([pm.PageSpec(p.image.width / 2, p.image.height / 2, image=p.image) for p in pages]))
    trees = {}
    for par in ("1", "0"):  # one at a time, and the automatic default (2 per core here: several together)
        out = tmp_path / f"out{par}"
        r = cli(text, vision, pdf, "--parallel", par, "-n", "400", "-o", out)
        assert r.returncode == 0, r.stderr
        assert ("decoding up to" in r.stderr) == (par != "1")
        trees[par] = {str(p.relative_to(out)): content(p) for p in sorted(out.rglob("*"))
                      if p.is_file() and not p.name.startswith(".")}
    again = cli(text, vision, pdf, "-n", "400", "-o", tmp_path / "out0")
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr
    assert "doc.md" in trees["1"]
    assert len([k for k in trees["1"] if k.startswith("doc/page-") and k.endswith(".md")]) == N_PAGES
    assert trees["0"] == trees["1"]



def test_the_next_pass_fills_a_free_slot_while_the_others_decode(bundle, tmp_path):
    """Passes of one image, two slots: the second pass is encoded as soon as the first page is in a slot (before
    any page finishes), the third as soon as one of the two has finished, while the other is still decoding (a
    batch drained at each pass's end would report pages 1 and 2 first). The outputs are those of decoding the
    pages one at a time."""
    files, _pages, images, _ = bundle
    text, vision = files["q8_0"]
    runs = {}
    for par in ("1", "2"):
        r = cli(text, vision, *images, "--images-per-pass", "1", "--parallel", par, "-n", MAX_NEW)
        assert r.returncode in (0, 3), r.stderr
        runs[par] = r
    assert runs["2"].stdout == runs["1"].stdout
    lines = runs["2"].stderr.splitlines()

    def at(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    first_done = min(at(f"tilepass-cli: [{k}/{N_PAGES}]") for k in range(1, N_PAGES + 1))
    assert at(f"tilepass-cli: encoding 1 image(s) (images 2-2 of {N_PAGES})") < first_done
    third = at(f"tilepass-cli: encoding 1 image(s) (images 3-3 of {N_PAGES})")
    assert third < max(at(f"tilepass-cli: [{k}/{N_PAGES}]") for k in (1, 2))

def content(path: Path):
    """A file's bytes; a JSON file's data less its timings (they differ between any two runs)."""
    if path.suffix != ".json":
        return path.read_bytes()

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("timings_ms", "tokens_per_s")}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return strip(json.loads(path.read_text()))


# ---- generate_batch against generate ------------------------------------------------------------------

V = 50


def fake_logits(history: list[int], salt: int) -> np.ndarray:
    """A deterministic stand-in for a model: logits from the sequence so far (and a per-sequence salt)."""
    rng = np.random.default_rng(abs(hash((salt, *history))) % (2**32))
    x = rng.standard_normal(V).astype(np.float32)
    if len(history) > 6 + salt % 5:
        x[1] += 3.0  # EOS becomes likely after a while, at a different step per sequence
    return x


CASES = [  # (prompt, max_new, sampling, no_repeat, max_total)
    ([5, 6, 7], 12, Sampling(), NoRepeat(ngram=2, window=0, whitelist=frozenset()), None),
    ([8], 3, Sampling(), NoRepeat(ngram=0, window=0), None),
    ([9, 9, 9, 9], 20, Sampling(temperature=0.8, top_k=10, seed=3), NoRepeat(ngram=3, window=6), None),
    ([4, 2], 20, Sampling(temperature=1.2, top_p=0.9, seed=7), NoRepeat(ngram=0, window=0), 9),
    ([3] * 7, 0, Sampling(), NoRepeat(), None),
    ([11, 12], 15, Sampling(), NoRepeat(ngram=1, window=4, whitelist=frozenset({13})), None),
    ([20, 21, 22], 9, Sampling(temperature=0.5, seed=11), NoRepeat(ngram=2, window=0), None),
    ([30], 25, Sampling(), NoRepeat(ngram=0, window=0), 12),
    ([31, 32], 6, Sampling(), NoRepeat(ngram=0, window=0), None),
]


def alone(k: int):
    prompt, max_new, sampling, nr, max_total = CASES[k]
    hist = list(prompt)

    def step(tok: int) -> np.ndarray:
        hist.append(tok)
        return fake_logits(hist, k)

    return generate(lambda: fake_logits(hist, k), step, prompt, max_new, (1,), sampling, nr, max_total)


@pytest.mark.parametrize("n_parallel", range(1, 9))
def test_generate_batch_equals_generate(n_parallel):
    want = [alone(k) for k in range(len(CASES))]
    assert {w.stop_reason for w in want} >= {"eos", "length", "context"}
    hist: dict[int, list[int]] = {}
    slot_of: dict[int, int] = {}
    done: list[int] = []
    calls = {"max_batch": 0}

    def prefill(slot: int, job: BatchJob) -> np.ndarray:
        k = job.data
        assert slot not in slot_of.values()
        slot_of[k] = slot
        hist[slot] = list(CASES[k][0])
        return fake_logits(hist[slot], k)

    def step(pairs):
        calls["max_batch"] = max(calls["max_batch"], len(pairs))
        assert len({s for s, _ in pairs}) == len(pairs) <= n_parallel
        out = []
        for slot, tok in pairs:
            hist[slot].append(tok)
            k = next(k for k, s in slot_of.items() if s == slot)
            out.append(fake_logits(hist[slot], k))
        return out

    def on_done(job: BatchJob, err):
        assert err is None
        done.append(job.data)
        slot_of.pop(job.data)

    gens = [SequenceGen(c[0], c[1], (1,), c[2], c[3], c[4]) for c in CASES]
    generate_batch([BatchJob(g, k) for k, g in enumerate(gens)], n_parallel, prefill, step, on_done)
    assert sorted(done) == list(range(len(CASES)))
    assert calls["max_batch"] <= n_parallel and (n_parallel == 1 or calls["max_batch"] > 1)
    for k, (g, w) in enumerate(zip(gens, want)):
        assert g.result.tokens == w.tokens and g.result.stop_reason == w.stop_reason, k
        assert g.result.n_steps == w.n_steps


def test_generate_batch_failures_cost_their_own_sequence():
    errors = {}

    def prefill(slot, job):
        if job.data == 1:
            raise ValueError("bad page")
        return fake_logits(list(CASES[job.data][0]), job.data)

    def step(pairs):
        return [fake_logits([tok], 0) for _, tok in pairs]

    def on_done(job, err):
        errors[job.data] = err

    gens = [SequenceGen(CASES[k][0], 4, (1,), Sampling(), NoRepeat(ngram=0, window=0)) for k in range(3)]
    generate_batch([BatchJob(g, k) for k, g in enumerate(gens)], 2, prefill, step, on_done)
    assert sorted(errors) == [0, 1, 2]
    assert isinstance(errors[1], ValueError) and errors[0] is None and errors[2] is None
    with pytest.raises(ValueError, match="n_parallel"):
        generate_batch([], 0, prefill, step, on_done)
