"""DeepSeek-VL2-Tiny benchmark (issue 24): a checkpoint with the published Tiny's shapes (spec deepseek-vl2.md
§2-§4: SigLIP-SO400M 27 layers 1152 wide, the MHA MoE decoder 12 layers 1280 wide with 64 experts, 3.37 B
parameters; the shared reference's ``randomize`` weights, stored in bf16 as the published files are: 6.7 GB)
converted by our converter (an F16 vision file; Q8_0 and Q4_K_M text files).

Vision: seconds for an A4 page (1240x1754: 3x3 tiles + the global view, 10 SigLIP passes: 6.7 TFLOP) against
the shared reference (``../shared/reference/deepseek_vl2_ref.py``, fp32 torch, ``image_tokens`` on its own
preprocessing). Decode: tok/s at context DECODE_CTX (bench_text's rounds, the median) against the reference's
decoder modules run with a KV cache (the reference recomputes the whole sequence per token; the cached steps
are checked against its uncached logits in the same process and the difference reported). Every side runs in
its own process: its peak RSS is its own. Targets: >= 3x on vision, >= 10x on decode.

``TP_BENCH_SMALL=1``: tiny widths (checks the module end to end in about a minute).
``TP_BENCH_CONCURRENT=N``: the children N at a time (a many-core machine; bench_common.child_results).
Standalone: ``python tests/bench/bench_vl2.py [threads]``."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench_common import (PRECISIONS, SMALL, best_ms, child_results, child_status, median_decode_tok_s,  # noqa: E402
                          page, run_child, text_model_decode_tok_s, write_result)

A4 = (1240, 1754)
VISION_FILES = (("f16", -1),)  # (vision outtype, precision): -1 = auto, what the CLI runs (BF16 where the CPU has it)
TEXT_FILES = ("q8_0", "q4_k_m")
DECODE_CTX, N_DEC_OURS, N_DEC_REF = (200, 8, 4) if SMALL else (1000, 32, 8)
CHECK_TOKENS = 12  # the cached reference against the uncached one: a prompt of this many, then 4 single steps
TARGET_VISION, TARGET_DECODE = 3.0, 10.0


def config() -> dict:
    """The published Tiny's shapes (``real_tiny_config``), or tiny widths with the real image geometry."""
    import reference_vl2 as rv

    R = rv.ref()
    if not SMALL:
        return R.real_tiny_config()
    return R.make_config((128, 2, 4, 3.7362), 256, dict(
        hidden_size=256, intermediate_size=512, moe_intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, n_routed_experts=8, num_experts_per_tok=3))


def vision_flops(n_views: int, cfg: dict) -> float:
    """FLOPs (2 x multiply-adds) of n_views 384 views: patch embedding, per layer qkv/out + MLP and attention
    over the 729 patches, the projector on 14x14 merged tokens (spec §3-§4)."""
    vc, d = cfg["vision_config"], cfg["projector_config"]["n_embed"]
    c, p, n_layer = vc["width"], vc["patch_size"], vc["layers"]
    f, g = int(c * vc["mlp_ratio"]), vc["image_size"] // vc["patch_size"]
    n, merged = g * g, ((g + 1) // 2) ** 2
    macs = n * 3 * p * p * c + n_layer * (n * (4 * c * c + 2 * c * f) + 2 * n * n * c) + merged * (4 * c * d + d * d)
    return 2 * macs * n_views


# ---- children -----------------------------------------------------------------------------------------
def _build_checkpoint(out_dir: str) -> None:
    """Its own process: the model built on the meta device, materialised in bf16 (6.7 GB, not 13.5 in fp32),
    the reference's random weights, saved in the official layout (``R.save``)."""
    import torch

    import reference_vl2 as rv

    R = rv.ref()
    with torch.device("meta"):
        model = R.DeepseekVL2Tiny(config())
    model = model.to(torch.bfloat16).to_empty(device="cpu")
    rv.save_model(R.randomize(model, seed=0).eval(), Path(out_dir))


def _read_tensors(path: Path, prefixes: tuple[str, ...]):
    """(name, fp32 torch tensor) of a safetensors file's F32 / BF16 tensors under ``prefixes``, read with plain
    file reads (a memory map would count the file's pages in this process's peak RSS)."""
    import torch

    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__" or not name.startswith(prefixes):
                continue
            lo, hi = info["data_offsets"]
            f.seek(base + lo)
            raw = np.frombuffer(f.read(hi - lo), {"F32": np.float32, "BF16": np.int16}[info["dtype"]])
            t = torch.from_numpy(raw.copy()).view(torch.bfloat16 if info["dtype"] == "BF16" else torch.float32)
            yield name, t.float().reshape(info["shape"])


def _load_reference(model_dir: str, prefixes: tuple[str, ...]):
    """The reference model with only the tensors under ``prefixes`` materialised (fp32, read one tensor at a
    time from the checkpoint); the rest stays on the meta device."""
    import torch

    import reference_vl2 as rv

    R = rv.ref()
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    with torch.device("meta"):
        model = R.DeepseekVL2Tiny(cfg)
    for name, t in _read_tensors(Path(model_dir) / "model.safetensors", prefixes):
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attr, torch.nn.Parameter(t, requires_grad=False))
    return R, cfg, model.eval()


def _reference_vision_worker(model_dir: str, n_threads: int, out_json: str) -> None:
    import torch

    torch.set_num_threads(n_threads)
    R, cfg, model = _load_reference(model_dir, ("vision.", "projector.", "image_newline", "view_seperator"))
    views, tw, th = R.preprocess(page(A4), cfg)
    with torch.no_grad():
        ms = best_ms(lambda: model.image_tokens(views, tw, th))
    write_result(out_json, {"a4": ms, "views": int(views.shape[0]), "tiles": [tw, th]})


class _CachedDecoder:
    """The reference's decoder layers (MHA: deepseek-vl2-tiny) run one sequence with a KV cache: the same
    modules and formulas as ``R.Attention.forward`` (q/k/v/o, NeoX RoPE over the head, softmax in fp32) and the
    reference's MLP / MoE modules, keys and values of earlier positions kept instead of recomputed."""

    def __init__(self, R, model) -> None:
        self.R, self.tm, self.head = R, model.language.model, model.language.lm_head
        self.reset()

    def reset(self) -> None:
        self.k: list = [None] * len(self.tm.layers)
        self.v: list = [None] * len(self.tm.layers)
        self.n = 0

    def logits(self, ids):
        """ids [T] (torch long) appended to the sequence: the logits of every new position [T, vocab]."""
        import torch

        R, tm = self.R, self.tm
        x = tm.embed_tokens(ids)
        t = x.shape[0]
        attn0 = tm.layers[0].self_attn
        cos, sin = R.rope_tables(self.n + t, attn0.hd, tm.lc["rope_theta"])
        cos, sin = cos[self.n:], sin[self.n:]
        # new position i (absolute n + i) sees cache positions 0 .. n + i
        mask = torch.ones(t, self.n + t, dtype=torch.bool).triu(self.n + 1)
        for li, layer in enumerate(tm.layers):
            a = layer.self_attn
            h = layer.input_layernorm(x)
            q = a.q_proj(h).view(t, a.h, a.hd).transpose(0, 1)
            k = a.k_proj(h).view(t, a.kvh, a.hd).transpose(0, 1)
            v = a.v_proj(h).view(t, a.kvh, a.hd).transpose(0, 1)
            q, k = q * cos + R.rotate_half(q) * sin, k * cos + R.rotate_half(k) * sin
            self.k[li] = k if self.k[li] is None else torch.cat([self.k[li], k], 1)
            self.v[li] = v if self.v[li] is None else torch.cat([self.v[li], v], 1)
            kk = self.k[li].repeat_interleave(a.h // a.kvh, 0)
            vv = self.v[li].repeat_interleave(a.h // a.kvh, 0)
            s = ((q @ kk.transpose(-1, -2)) / a.hd ** 0.5).masked_fill(mask, float("-inf"))
            o = (torch.softmax(s.float(), -1).to(vv.dtype) @ vv).transpose(0, 1).reshape(t, -1)
            x = x + a.o_proj(o)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        self.n += t
        return self.head(tm.norm(x)).float()


def _reference_text_worker(model_dir: str, n_threads: int, out_json: str) -> None:
    import torch

    torch.set_num_threads(n_threads)
    R, cfg, model = _load_reference(model_dir, ("language.",))
    if cfg["language_config"].get("use_mla"):
        raise ValueError("the cached reference decoder runs MHA (deepseek-vl2-tiny) only")
    dec = _CachedDecoder(R, model)
    rng = np.random.default_rng(3)
    res = {}
    with torch.no_grad():
        # the cached steps against the reference's own uncached forward (logits of every position)
        ids = torch.from_numpy(rng.integers(3, 100000, size=CHECK_TOKENS + 4))
        want = model.language.lm_head(model.language.model(model.language.model.embed_tokens(ids))).float()
        got = [dec.logits(ids[:CHECK_TOKENS])] + [dec.logits(ids[i:i + 1]) for i in range(CHECK_TOKENS, len(ids))]
        res["cached_vs_uncached_max_rel"] = float((torch.cat(got) - want).abs().max() / want.abs().max())
        ctx = torch.from_numpy(rng.integers(3, 100000, size=DECODE_CTX))

        def start():
            dec.reset()
            return int(dec.logits(ctx)[-1].argmax())

        res["decode_tok_s"] = median_decode_tok_s(start, lambda tok: int(dec.logits(torch.tensor([tok]))[-1].argmax()),
                                                  N_DEC_REF)
    write_result(out_json, res)


def _ours_vision_worker(gguf_path: str, precision: int, n_threads: int, out_json: str) -> None:
    from encoder.vision import VisionEncoder

    enc = VisionEncoder(gguf_path, n_threads=n_threads, precision=precision)
    p = enc.prepare(page(A4))
    ms = best_ms(lambda: enc.encode([p]))  # the first run builds the graph: the best is a later one
    write_result(out_json, {"a4": ms, "precision": enc.precision, "tiles": list(p.grid), "n_tokens": p.n_tokens,
                            "compute_buffer_mb": enc.last_compute_bytes / 2**20})


def _ours_text_worker(gguf_path: str, n_threads: int, out_json: str) -> None:
    from encoder.text_model import TextModel

    m = TextModel(gguf_path, n_threads=n_threads, n_ctx=DECODE_CTX + 64, n_batch=512)
    ctx = np.random.default_rng(3).integers(3, 100000, size=DECODE_CTX).astype(np.int32)
    write_result(out_json, {"decode_tok_s": text_model_decode_tok_s(m, ctx, N_DEC_OURS)})


# ---- the module ---------------------------------------------------------------------------------------
def run(n_threads: int = 2) -> list[dict]:
    from convert import convert

    cfg = config()
    lc = cfg["language_config"]
    rows: list[dict] = [{"name": "vl2 shapes", "small": SMALL, "vision_width": cfg["vision_config"]["width"],
                         "text_width": lc["hidden_size"], "text_layers": lc["num_hidden_layers"],
                         "experts": lc["n_routed_experts"]}]
    with tempfile.TemporaryDirectory(prefix="tp-bench-vl2-") as tmp:
        root = Path(tmp)
        ckpt = root / "ckpt"
        run_child("bench_vl2", "_build_checkpoint", str(ckpt))
        vision_files = {o: convert(ckpt, mmproj=True, outtype=o, outfile=root / f"mmproj-{o}.gguf",
                                   progress=False).outfile for o, _ in VISION_FILES}
        text_files = {t: convert(ckpt, outtype=t, outfile=root / f"text-{t}.gguf", progress=False).outfile
                      for t in TEXT_FILES}
        M = "bench_vl2"
        jobs = {"ref_v": (M, "_reference_vision_worker", str(ckpt), n_threads),
                "ref_t": (M, "_reference_text_worker", str(ckpt), n_threads)}
        for outtype, precision in VISION_FILES:
            jobs[f"vision {outtype}"] = (M, "_ours_vision_worker", str(vision_files[outtype]), precision, n_threads)
        for t in TEXT_FILES:
            jobs[f"text {t}"] = (M, "_ours_text_worker", str(text_files[t]), n_threads)
        res = child_results(jobs)
        ref_v, ref_t = res["ref_v"], res["ref_t"]
        rows.append({"name": "vl2 reference fp32 vision", **child_status(ref_v)})
        rows.append({"name": "vl2 reference fp32 text (KV-cached)",
                     **child_status(ref_t, ("cached_vs_uncached_max_rel",))})
        for outtype, precision in VISION_FILES:
            ours = res[f"vision {outtype}"]
            label = f"{outtype} {PRECISIONS.get(ours.get('precision', precision), 'auto')}-precision"
            row = {"name": f"vl2 vision {label} a4 (3x3 tiles + global)", **child_status(ours)}
            if "failed" not in ours:
                n_views = ours["tiles"][0] * ours["tiles"][1] + 1
                flops = vision_flops(n_views, cfg)
                row.update(ours_ms=ours["a4"], tiles=ours["tiles"], views=n_views, n_tokens=ours["n_tokens"],
                           tflop=flops / 1e12, gflops=flops / (ours["a4"] / 1e3) / 1e9,
                           compute_buffer_mb=ours["compute_buffer_mb"])
                if "a4" in ref_v:
                    assert ref_v["views"] == n_views, (ref_v["views"], n_views)
                    row.update(peer="reference fp32 torch", peer_ms=ref_v["a4"], ratio=ref_v["a4"] / ours["a4"])
                row.update(target_ratio=TARGET_VISION, meets_target=row.get("ratio", 0.0) >= TARGET_VISION)
            rows.append(row)
        for t in TEXT_FILES:
            ours = res[f"text {t}"]
            row = {"name": f"vl2 text {t} decode_tok_s", **child_status(ours), "context": DECODE_CTX}
            if "decode_tok_s" in ours:
                row.update(ours=ours["decode_tok_s"], peer="reference fp32 torch, KV-cached")
                if "decode_tok_s" in ref_t:
                    row.update(peer_value=ref_t["decode_tok_s"], ratio=ours["decode_tok_s"] / ref_t["decode_tok_s"])
            row.update(target_ratio=TARGET_DECODE, meets_target=row.get("ratio", 0.0) >= TARGET_DECODE)
            rows.append(row)
    return rows


if __name__ == "__main__":
    for r in run(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
        print(r)
