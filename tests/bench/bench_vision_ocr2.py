"""DeepSeek-OCR-2 vision benchmark (issue 19): a vision GGUF with DeepSeek-OCR-2's real dimensions (SAM-B,
the 24-layer 896-wide encoder with 14/2 heads, random weights; F16 and Q8_0 files), seconds per page for
`base` (one 768 view) and an A4 page in `gundam` (1240x1754: 6 tiles + the 1024 global view), GFLOP/s
against the spec's FLOP counts and the machine's measured peak, peak RSS; beside the transformers reference
(DeepseekOcr2, fp32, same weights, same threads, the processor's own pixels) measured in the same run in its
own process."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench_common import best_ms as _best_ms, page as _page, peak_rss_mb as _peak_rss_mb, run_child  # noqa: E402

# FLOPs per page (2 x MACs) from deepseek-ocr-2.md §8: a 768 view 728 GF, the 1024 global view 1,366 GF
FLOPS = {"base": 728e9, "gundam_a4": 1366e9 + 6 * 728e9}
PAGES = {"base": ((1240, 1754), "base"), "gundam_a4": ((1240, 1754), "gundam")}
# every time is bench_common.best_ms's (best of 2); ours after an untimed run that builds the graph

# the published model's vision (spec §1-§3), a small text part (only the projector's width matters here)
FULL_VISION_CONFIG = dict(
    vision_config=dict(
        sam_config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, global_attn_indexes=[2, 5, 8, 11],
                        output_channels=256, downsample_channels=[512, 896], mlp_dim=3072),
        encoder_config=dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                            intermediate_size=4864, vocab_size=1, rope_theta=1e6, max_position_embeddings=2048)),
    text_config=dict(vocab_size=1024, hidden_size=1280, intermediate_size=64, moe_intermediate_size=16,
                     num_hidden_layers=2, num_attention_heads=10, num_key_value_heads=10, n_routed_experts=4,
                     n_shared_experts=1, num_experts_per_tok=2, topk_method="greedy", mlp_layer_types=["dense", "sparse"],
                     bos_token_id=0, eos_token_id=1, max_position_embeddings=8192, rope_theta=10000.0),
    image_token_id=1000)


def _build_checkpoint(out_dir: str) -> None:
    """Runs in its own process (the model is 1.8 GB in fp32): save the full-size vision checkpoint."""
    import reference_ocr2 as ro

    ro.save_model(ro.make_model(seed=0, config=FULL_VISION_CONFIG), Path(out_dir))


def _reference_worker(model_dir: str, n_threads: int, out_json: str) -> None:
    """Runs in its own process: transformers fp32 timings, ms per page."""
    import torch

    import reference_ocr2 as ro

    torch.set_num_threads(n_threads)
    model = ro.load_tiny_ocr2(Path(model_dir)).model
    res = {}
    for name, (size, mode) in PAGES.items():
        pre = ro.preprocess([_page(size)], mode)
        kw = dict(pixel_values=torch.from_numpy(pre.pixel_values), num_local_patches=pre.num_local_patches)
        if pre.pixel_values_local is not None:
            kw["pixel_values_local"] = torch.from_numpy(pre.pixel_values_local)
        with torch.no_grad():
            res[name] = _best_ms(lambda: model.get_image_features(**kw))
    res["peak_rss_mb"] = _peak_rss_mb()
    Path(out_json).write_text(json.dumps(res))


def run(n_threads: int = 2) -> list[dict]:
    from convert import convert
    from encoder.vision import VisionEncoder

    from bench_kernels import _machine_peaks

    fma_peak, bf16_peak = _machine_peaks(n_threads)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="tp-bench-ocr2-") as tmp:
        root = Path(tmp)
        ckpt = root / "ckpt"
        run_child("bench_vision_ocr2", "_build_checkpoint", str(ckpt))
        ref_json = root / "ref.json"
        run_child("bench_vision_ocr2", "_reference_worker", str(ckpt), n_threads, str(ref_json))
        ref = json.loads(ref_json.read_text())
        rows.append({"name": "ocr2 transformers reference peak RSS", "peak_rss_mb": ref["peak_rss_mb"]})
        for outtype, precision in (("f16", 0), ("f16", 1), ("q8_0", 1)):
            gguf = root / f"v-{outtype}.gguf"
            if not gguf.exists():
                convert(ckpt, mmproj=True, outtype=outtype, outfile=gguf, progress=False)
            enc = VisionEncoder(gguf, n_threads=n_threads, precision=precision)
            label = outtype + {0: " f32-precision", 1: " bf16-precision"}[precision]
            for name, (size, mode) in PAGES.items():
                p = enc.prepare(_page(size), mode)
                enc.encode([p])  # builds the graph
                ms = _best_ms(lambda: enc.encode([p]))
                gflops = FLOPS[name] / (ms / 1e3) / 1e9
                peak = bf16_peak if precision and bf16_peak > 0 else fma_peak
                rows.append({"name": f"ocr2 vision {label} {name}", "ours_ms": ms, "peer": "transformers fp32",
                             "peer_ms": ref[name], "ratio": ref[name] / ms, "gflops": gflops,
                             "machine_peak_gflops": peak, "peak_frac": gflops / peak,
                             "peak_rss_mb": _peak_rss_mb(), "compute_buffer_mb": enc.last_compute_bytes / 2**20})
            del enc
    return rows


if __name__ == "__main__":
    for r in run(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
        print(r)
