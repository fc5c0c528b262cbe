"""The decode loop in C vs in Python (issue 23 item 3): the CLI's decode of one page (OcrPipeline.generate) now runs
tp_session_generate (encoder/native_decode.py: prefill, sampler, no-repeat rule and stop rules in C, no Python per
token); before, generate() ran per token in Python: an eval returning the 129,280 logits as an array, the C
sampler called on it, the stop rules. Both here on one loaded text model, on the synthetic text GGUFs of
bench_text.py (DeepSeek-OCR's real dimensions, Q8_0 and Q4_K_M) with the tokenizer of a fixture:

* the same on the fixture's tiny model (width 32, the real vocabulary), where a token's eval is cheap and the
  loop's own cost shows;
* one page: a PROMPT-token prefill, then N_NEW greedy tokens with the CLI's no-repeat rule (30 / 90), no EOS stop;
  decode µs per token and tok/s of the C loop (NativeDecoder.generate) and of the Python loop (generate() over
  TextModel.eval, as OcrPipeline._generate_py), runs alternated (ROUNDS each, the median reported: the machine is
  shared), and the difference per token: the Python per-token overhead removed;
* --parallel 4: four pages together, C's tp_session_generate_batch vs Python's generate_batch over
  TextModel.eval_batch, summed decode tok/s.

``python bench_decode_native.py [threads] [--small]``: --small runs shapes a few hundred times smaller (the vocabulary
kept: the tokenizer's); there the per-token overhead is a larger share of a token's time."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import bench_decode_batch  # noqa: E402
import bench_text  # noqa: E402

TOKENIZER = ROOT / ".." / "shared" / "fixtures" / "llamacpp-tiny-v1" / "text-f16.gguf"
PROMPT, N_NEW, ROUNDS, N_PAR = 64, 48, 3, 4


def c_one(dec, ids, n_new: int, sampling, no_repeat) -> tuple[float, int]:
    r = dec.generate(ids, None, None, n_new, sampling, no_repeat, False, None)
    return r.decode_s, r.n_steps


def py_one(m, ids, n_new: int, sampling, no_repeat) -> tuple[float, int]:
    from encoder.generate import generate

    def prefill():
        m.reset()
        return m.eval(list(ids))

    r = generate(prefill, lambda t: m.eval([t]), ids, n_new, (), sampling, no_repeat)
    return r.decode_s, r.n_steps


def c_batch(dec, prompts, n_new: int, sampling, no_repeat) -> tuple[float, int]:
    todo = list(range(len(prompts)))
    got: list = []

    def start(slot: int):
        if not todo:
            return None
        k = todo.pop(0)
        dec.submit(slot, prompts[k], None, None)
        return k, dict(max_new_tokens=n_new, sampling=sampling, no_repeat=no_repeat, eos=False)

    t0 = time.perf_counter()
    dec.generate_batch(len(prompts), start, lambda tag, res, err: got.append(res))
    dt = time.perf_counter() - t0
    assert all(r is not None for r in got)
    return dt, sum(len(r.tokens) for r in got)


def py_batch(m, seqs, prompts, n_new: int, sampling, no_repeat) -> tuple[float, int]:
    from encoder.generate import BatchJob, SequenceGen, generate_batch
    from encoder.text_model import BatchItem

    def prefill(slot: int, job):
        s = seqs[slot]
        m.reset() if s is None else s.reset()
        return m.eval_batch([BatchItem(s, list(prompts[job.data]))])[0]

    jobs = [BatchJob(SequenceGen(prompts[k], n_new, (), sampling, no_repeat), k) for k in range(len(prompts))]
    t0 = time.perf_counter()
    generate_batch(jobs, len(prompts), prefill, lambda pairs: m.eval_batch([BatchItem(seqs[k], [t]) for k, t in pairs]),
                   lambda job, err: None)
    dt = time.perf_counter() - t0
    return dt, sum(len(j.gen.result.tokens) for j in jobs)


def one_page(name: str, m, n_new: int, sampling, no_repeat, small: bool) -> dict:
    from encoder.native_decode import NativeDecoder

    dec = NativeDecoder(m, None)
    ids = np.random.default_rng(1).integers(3, 128000, size=PROMPT).astype(np.int32).tolist()
    c_us, py_us = [], []
    for _ in range(ROUNDS):  # alternated
        dt, n = c_one(dec, ids, n_new, sampling, no_repeat)
        c_us.append(dt / n * 1e6)
        dt, n = py_one(m, ids, n_new, sampling, no_repeat)
        py_us.append(dt / n * 1e6)
    c, py = float(np.median(c_us)), float(np.median(py_us))
    return {"name": f"{name} decode, one page (CLI --parallel 1)", "c_us_per_token": round(c, 1),
            "python_us_per_token": round(py, 1), "overhead_removed_us": round(py - c, 1),
            "c_tok_s": round(1e6 / c, 2), "python_tok_s": round(1e6 / py, 2),
            "rounds_c_us": [round(v, 1) for v in c_us], "rounds_py_us": [round(v, 1) for v in py_us],
            "small_shapes": small}


def run(n_threads: int = 2, small: bool = False) -> list[dict]:
    import gguf

    from encoder.generate import NoRepeat, Sampling
    from encoder.native_decode import NativeDecoder
    from encoder.text_model import TextModel

    assert TOKENIZER.exists(), f"fixture {TOKENIZER} missing"
    QT = gguf.GGMLQuantizationType
    sampling, no_repeat = Sampling(), NoRepeat(ngram=30, window=90)
    rows = []
    # the fixture's tiny model (width 32, the real vocabulary): a token's eval is cheap, the loop's overhead shows
    m = TextModel(TOKENIZER, n_threads=n_threads, n_ctx=PROMPT + 4 * N_NEW + 8)
    rows.append(one_page("tiny fixture (width 32, vocab 129,280)", m, 4 * N_NEW, sampling, no_repeat, small))
    del m
    with bench_decode_batch.dims(small), tempfile.TemporaryDirectory(prefix="tp-bench-native-") as tmp:
        bench_text.N_VOCAB = 129280  # the tokenizer's (dims() puts the saved value back)
        for qname, qtype, mixture in (("q8_0", QT.Q8_0, False), ("q4_k_m", QT.Q4_K, True)):
            path = Path(tmp) / f"text-{qname}.gguf"
            bench_text.write_text_gguf(path, qtype, tokenizer_from=TOKENIZER, mixture=mixture)
            n_ctx = PROMPT + N_NEW + 8
            m = TextModel(path, n_threads=n_threads, n_ctx=n_ctx)
            rows.append(one_page(f"text {qname}", m, N_NEW, sampling, no_repeat, small))
            dec = NativeDecoder(m, None)
            rng = np.random.default_rng(2)
            prompts = [rng.integers(3, 128000, size=PROMPT).astype(np.int32).tolist() for _ in range(N_PAR)]
            seqs = [None] + [m.new_sequence(n_ctx) for _ in range(N_PAR - 1)]
            dec.session(N_PAR - 1)
            c_t, py_t = [], []
            for _ in range(ROUNDS):
                dt, n = c_batch(dec, prompts, N_NEW, sampling, no_repeat)
                c_t.append(n / dt)
                dt, n = py_batch(m, seqs, prompts, N_NEW, sampling, no_repeat)
                py_t.append(n / dt)
            rows.append({"name": f"text {qname} {N_PAR} pages together (prefill included), summed tok/s",
                         "c_tok_s": round(float(np.median(c_t)), 2), "python_tok_s": round(float(np.median(py_t)), 2),
                         "small_shapes": small})
            del dec, seqs, m
            path.unlink()
    return rows


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    for row in run(int(args[0]) if args else 2, small="--small" in sys.argv):
        print(row)
