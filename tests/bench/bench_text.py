"""Text decoder benchmark (issue 6): synthetic text GGUFs with DeepSeek-OCR's real dimensions (random
Q8_0 / Q4_K / Q4_K_M blocks written directly, each tensor in the type the converter gives it), prefill tok/s over 512 and 1024 tokens, decode tok/s at context
1000 with the default F16 KV cache, an F32 one and a Q8_0 one, and the memory-bandwidth bound (active weight bytes per
token over a streaming read taken just before each timed decode round, the median round reported; the KV bytes
attention reads are reported beside it); beside the transformers reference (fp32, same architecture, random weights, own process)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_common import child_env, peak_rss_mb as _peak_rss_mb, reset_peak_rss as _reset_peak_rss  # noqa: E402

ARCH = "deepseek2-ocr"
DECODE_WARM = 4  # untimed one-token evals before a decode timing, ours and the reference's
DECODE_ROUNDS = 3  # timed rounds per decode figure, ours and the reference's: the median is reported (one round
# wandered by a fifth between runs on this shared machine)
N_VOCAB, N_EMBD, N_LAYER, N_HEAD, FFN, N_EXP, N_USED, N_SHARED, EXP_FFN = 129280, 1280, 12, 10, 6848, 64, 6, 2, 896


def _blocks(qtype, n_rows: int, n_per_row: int, rng) -> np.ndarray:
    """Random but valid blocks: sane f16 scales, random quants."""
    import gguf

    bs, ts = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_rows, n_per_row // bs, ts), dtype=np.uint8)
    if qtype == gguf.GGMLQuantizationType.Q8_0:
        raw[..., 0:2] = np.frombuffer(np.float16(0.002).tobytes(), np.uint8)
    elif qtype == gguf.GGMLQuantizationType.Q6_K:  # ql, qh, 16 int8 scales, then d
        raw[..., 208:210] = np.frombuffer(np.float16(0.0002).tobytes(), np.uint8)
    elif qtype == gguf.GGMLQuantizationType.Q5_0:  # d, then the high bits and nibbles
        raw[..., 0:2] = np.frombuffer(np.float16(0.008).tobytes(), np.uint8)
    else:  # Q4_K: d, dmin at the front
        raw[..., 0:2] = np.frombuffer(np.float16(0.001).tobytes(), np.uint8)
        raw[..., 2:4] = np.frombuffer(np.float16(0.0005).tobytes(), np.uint8)
    return raw.reshape(n_rows, -1)


def _copy_tokenizer(w, source: Path) -> None:
    """The tokenizer keys of another text GGUF (so that the CLI can run on the synthetic file)."""
    import gguf

    r = gguf.GGUFReader(str(source))
    for key, field in r.fields.items():
        if not key.startswith("tokenizer.") or key in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
            continue
        vt = field.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, field.contents(), vt, sub_type=field.types[-1])
        else:
            w.add_key_value(key, field.contents(), vt)


def write_text_gguf(path: Path, qtype, tokenizer_from: Path | None = None, mixture: bool = False) -> int:
    """Weights of type ``qtype`` (``mixture``: llama-quantize's _M mixture over it), each tensor in the type the
    converter would give it. Returns the bytes one decoded token reads (attention + dense/shared + 6 experts +
    lm_head)."""
    import gguf

    from convert.quant_policy import OutType, choose_type

    outtype = OutType(qtype, mixture)
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), ARCH)
    if tokenizer_from is not None:
        _copy_tokenizer(w, tokenizer_from)
    for k, v in (("block_count", N_LAYER), ("context_length", 8192), ("embedding_length", N_EMBD),
                 ("feed_forward_length", FFN), ("attention.head_count", N_HEAD), ("attention.head_count_kv", N_HEAD),
                 ("leading_dense_block_count", 1), ("vocab_size", N_VOCAB), ("expert_count", N_EXP),
                 ("expert_used_count", N_USED), ("expert_shared_count", N_SHARED),
                 ("expert_feed_forward_length", EXP_FFN)):
        w.add_uint32(f"{ARCH}.{k}", v)
    w.add_float32(f"{ARCH}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32(f"{ARCH}.rope.freq_base", 10000.0)
    w.add_uint32("tokenizer.ggml.bos_token_id", 0)
    w.add_uint32("tokenizer.ggml.eos_token_id", 1)
    active = 0

    def q(name: str, rows: int, cols: int, experts: int = 0, used: int = 0) -> None:
        nonlocal active
        # llama-quantize's fallbacks (and the converter's): rows that are not whole super-blocks (ffn_down of
        # the dense MLP, 6848, and of the experts, 896) are Q5_0 in a Q4_K file, Q8_0 where Q6_K was asked
        tq = choose_type(outtype.tensor_type(name, N_LAYER), cols).qtype
        data = _blocks(tq, rows * max(experts, 1), cols, rng)
        if experts:
            data = data.reshape(experts, rows, -1)
        w.add_tensor(name, data, raw_dtype=tq)
        per_row = data.shape[-1]
        active += (used if experts else 1) * rows * per_row if name != "token_embd.weight" else per_row

    def f32(name: str, shape: tuple[int, ...]) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02 + (1.0 if "norm" in name else 0.0)).astype(np.float32))

    q("token_embd.weight", N_VOCAB, N_EMBD)
    f32("output_norm.weight", (N_EMBD,))
    q("output.weight", N_VOCAB, N_EMBD)
    for i in range(N_LAYER):
        f32(f"blk.{i}.attn_norm.weight", (N_EMBD,))
        f32(f"blk.{i}.ffn_norm.weight", (N_EMBD,))
        for t in ("attn_q", "attn_k", "attn_v", "attn_output"):
            q(f"blk.{i}.{t}.weight", N_EMBD, N_EMBD)
        if i == 0:
            q("blk.0.ffn_gate.weight", FFN, N_EMBD)
            q("blk.0.ffn_up.weight", FFN, N_EMBD)
            q("blk.0.ffn_down.weight", N_EMBD, FFN)
            continue
        f32(f"blk.{i}.ffn_gate_inp.weight", (N_EXP, N_EMBD))
        q(f"blk.{i}.ffn_gate_exps.weight", EXP_FFN, N_EMBD, N_EXP, N_USED)
        q(f"blk.{i}.ffn_up_exps.weight", EXP_FFN, N_EMBD, N_EXP, N_USED)
        q(f"blk.{i}.ffn_down_exps.weight", N_EMBD, EXP_FFN, N_EXP, N_USED)
        q(f"blk.{i}.ffn_gate_shexp.weight", N_SHARED * EXP_FFN, N_EMBD)
        q(f"blk.{i}.ffn_up_shexp.weight", N_SHARED * EXP_FFN, N_EMBD)
        q(f"blk.{i}.ffn_down_shexp.weight", N_EMBD, N_SHARED * EXP_FFN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return active


@functools.lru_cache(maxsize=1)
def _stream_exe() -> str:
    """tests/bench/stream.c, built once per process with the system compiler."""
    exe = Path(tempfile.gettempdir()) / f"tilepass-stream-{os.getpid()}"
    subprocess.run(["cc", "-O3", "-march=native", "-pthread", str(HERE / "stream.c"), "-o", str(exe)], check=True)
    return str(exe)


def stream_bandwidth_gbs(n_threads: int) -> float:
    """A plain streaming read by n_threads (tests/bench/stream.c), GB/s."""
    out = subprocess.run([_stream_exe(), str(n_threads)], check=True, capture_output=True, text=True).stdout
    return float(out.strip())


def _decode_rounds(start, step, n_dec: int, before_timing=None) -> list[tuple[float, float | None]]:
    """Decode tok/s, ours and the reference's alike: DECODE_ROUNDS rounds, each start() (the context, untimed;
    it returns the decoder's state), DECODE_WARM untimed step(state) -> state calls (as llama-bench's warm-up
    run: our first one-token eval builds its graph, and the first few run slower while the machine settles),
    then n_dec timed ones. Returns (tok/s, before_timing()) per round: ours passes a streaming read, taken
    just before the round's timed tokens."""
    rounds = []
    for _ in range(DECODE_ROUNDS):
        state = start()
        for _ in range(DECODE_WARM):
            state = step(state)
        measured = before_timing() if before_timing else None
        t0 = time.perf_counter()
        for _ in range(n_dec):
            state = step(state)
        rounds.append((n_dec / (time.perf_counter() - t0), measured))
    return rounds


def _decode(m, rng, n_threads: int, n_dec: int = 48) -> dict:
    """Decode at context 1000 (greedy, one token per eval): the median round's tok/s, and beside every
    round the streaming read just before it (this shared machine's read swings between about 33 and
    60 GB/s from one minute to the next, so a bound from a read minutes away says little)."""
    ctx = rng.integers(3, 100000, size=1000).astype(np.int32)

    def start() -> int:
        m.reset()
        m.eval(ctx)
        return 5

    rounds = _decode_rounds(start, lambda tok: int(np.argmax(m.eval(np.array([tok], np.int32)))), n_dec,
                            lambda: stream_bandwidth_gbs(n_threads))
    return {"tok_s": float(np.median([r for r, _ in rounds])), "rounds": rounds}


def ours(path: Path, n_threads: int) -> dict:
    """Prefill and decode with the default KV cache (F16 for quantised weights), then decode again
    with an F32 cache (twice the bytes attention reads) and a Q8_0 one (about half); peak RSS is that of
    the default run."""
    from encoder.text_model import TextModel

    _reset_peak_rss()  # this process may have run other benchmarks: measure this one's peak alone
    m = TextModel(path, n_threads=n_threads, n_ctx=2048, n_batch=512)
    rng = np.random.default_rng(1)
    res = {}
    for n in (512, 1024):
        m.reset()
        ids = rng.integers(3, 100000, size=n).astype(np.int32)
        t0 = time.perf_counter()
        m.eval(ids)
        res[f"prefill{n}_tok_s"] = n / (time.perf_counter() - t0)
    res["decode_tok_s"] = _decode(m, rng, n_threads)
    del m
    res["peak_rss_mb"] = _peak_rss_mb()
    for kv in ("f32", "q8_0"):
        res[f"decode_kv{kv}_tok_s"] = _decode(TextModel(path, n_threads=n_threads, n_ctx=2048, n_batch=512,
                                                        kv_type=kv), rng, n_threads)
    return res


def _reference_worker(n_threads: int, out_json: str) -> None:
    import torch
    from transformers import UnlimitedOcrTextConfig, UnlimitedOcrTextModel  # noqa: F401

    torch.set_num_threads(n_threads)
    from transformers import UnlimitedOcrConfig, UnlimitedOcrForConditionalGeneration

    cfg = UnlimitedOcrConfig(text_config=dict(
        vocab_size=N_VOCAB, hidden_size=N_EMBD, intermediate_size=FFN, num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD, num_key_value_heads=N_HEAD, n_routed_experts=N_EXP, moe_intermediate_size=EXP_FFN,
        num_experts_per_tok=N_USED, n_shared_experts=N_SHARED, mlp_layer_types=["dense"] + ["sparse"] * (N_LAYER - 1),
        layer_types=["full_attention"] * N_LAYER, max_position_embeddings=8192))
    with torch.device("meta"):
        pass
    lm = UnlimitedOcrForConditionalGeneration(cfg).eval()
    model = lm
    rng = np.random.default_rng(1)
    res = {}
    with torch.no_grad():
        for n in (512, 1024):
            ids = torch.from_numpy(rng.integers(3, 100000, size=(1, n)))
            t0 = time.perf_counter()
            model(input_ids=ids, use_cache=True)
            res[f"prefill{n}_tok_s"] = n / (time.perf_counter() - t0)
        ids = torch.from_numpy(rng.integers(3, 100000, size=(1, 1000)))

        def step(out):
            return model(input_ids=out.logits[:, -1:].argmax(-1), past_key_values=out.past_key_values, use_cache=True)

        res["decode_tok_s"] = float(np.median([r for r, _ in _decode_rounds(lambda: model(input_ids=ids, use_cache=True),
                                                                              step, 8)]))
    Path(out_json).write_text(json.dumps(res))


def run(n_threads: int = 2) -> list[dict]:
    import gguf

    rows = []
    # streaming reads before and after everything, for the record; each decode bound divides by the reads
    # taken beside its own rounds (_decode)
    bw_before = stream_bandwidth_gbs(n_threads)
    with tempfile.TemporaryDirectory(prefix="tp-bench-text-") as tmp:
        ref_json = Path(tmp) / "ref.json"
        env = child_env()
        r = subprocess.run([sys.executable, "-c", f"import bench_text; bench_text._reference_worker({n_threads}, {str(ref_json)!r})"],
                           env=env)
        ref = json.loads(ref_json.read_text()) if r.returncode == 0 and ref_json.exists() else {}
        measured = []
        QT = gguf.GGMLQuantizationType
        # q4_k_m: llama-quantize's Q4_K_M, the file llama.cpp's decode figure in issue 6 was measured on
        for qname, qtype, mixture in (("q8_0", QT.Q8_0, False), ("q4_k", QT.Q4_K, False), ("q4_k_m", QT.Q4_K, True)):
            path = Path(tmp) / f"text-{qname}.gguf"
            active = write_text_gguf(path, qtype, mixture=mixture)
            measured.append((qname, active, ours(path, n_threads)))
            path.unlink()
        bw_after = stream_bandwidth_gbs(n_threads)
        rows.append({"name": f"streaming read, {n_threads} threads (stream.c)", "gb_s": max(bw_before, bw_after),
                     "before_gb_s": bw_before, "after_gb_s": bw_after})
        for qname, active, res in measured:
            for key in ("prefill512_tok_s", "prefill1024_tok_s", "decode_tok_s", "decode_kvf32_tok_s",
                        "decode_kvq8_0_tok_s"):
                kv_cache = key[len("decode_kv"):-len("_tok_s")] if key.startswith("decode_kv") else "f16"
                decode = key.startswith("decode")
                ours_value = res[key]["tok_s"] if decode else res[key]
                row = {"name": f"text {qname} {key}", "ours": ours_value, "peer": "transformers fp32",
                       "kv_cache": kv_cache}
                rkey = "decode_tok_s" if decode else key
                if rkey in ref:
                    row["peer_value"] = ref[rkey]
                    row["ratio"] = ours_value / ref[rkey]
                if decode:
                    # two bounds: the active weights alone (the figure), and every byte a token
                    # reads, i.e. with the KV cache attention streams at context 1000; each round against
                    # the streaming read taken just before it, then the median round
                    kv = N_LAYER * 1000 * 2 * N_EMBD * {"f32": 4, "f16": 2, "q8_0": 34 / 32}[kv_cache]
                    rounds = res[key]["rounds"]
                    bw = float(np.median([b for _, b in rounds]))

                    def share(nbytes: float) -> float:  # the median round's share of its own bound
                        return float(np.median([rate * nbytes / (b * 1e9) for rate, b in rounds]))

                    row["kv_mb_per_token"] = kv / 2**20
                    row["round_tok_s"] = [round(rate, 2) for rate, _ in rounds]
                    row["round_stream_gb_s"] = [round(b, 2) for _, b in rounds]
                    row["bandwidth_bound_tok_s"] = bw * 1e9 / active
                    row["of_bound"] = share(active)
                    row["bound_with_kv_tok_s"] = bw * 1e9 / (active + kv)
                    row["of_bound_with_kv"] = share(active + kv)
                rows.append(row)
            rows.append({"name": f"text {qname} peak RSS", "peak_rss_mb": res["peak_rss_mb"],
                         "active_mb_per_token": active / 2**20})
    return rows


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
        print(row)
