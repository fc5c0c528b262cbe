"""Vision encoder benchmark (issue 5): a synthetic vision GGUF with DeepSeek-OCR v1's real dimensions
(random weights, F16 and Q8_0), ms per image for base, large, gundam 2x3 and 8 gundam pages in one
pass vs one page at a time; beside the transformers reference (fp32, same weights, same threads)
measured in the same run in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from bench_common import child_env, page, peak_rss_mb as _peak_rss_mb  # noqa: E402

# GFLOPs per image from deepseek-ocr-v1.md §10
FLOPS = {"base": 1140e9, "large": 1943e9, "gundam2x3": 3470e9}
# every per-image time, ours and the reference's, is the best of this many runs (a single run on this
# shared machine wanders by several per cent); ours come after an untimed run that builds the graph
TIMED_RUNS = 2
SIZES = {"base": ((1240, 1754), "base"), "large": ((1240, 1754), "large"), "gundam2x3": ((1240, 1754), "gundam")}


def _checkpoint(root: Path) -> Path:
    """Full-size vision, tiny text: saved by transformers (real tensor names)."""
    from reference_models import FULL, build_tiny_ocr

    dims = replace(FULL, vocab_size=1024, text_hidden=1280, text_layers=2, text_heads=10, text_kv_heads=10,
                   text_ffn=48, n_experts=4, moe_ffn=16, top_k=2, n_shared=1, initializer_range=0.02)
    return build_tiny_ocr(root / "ckpt", seed=0, dims=dims)


def _best_of(n: int, fn) -> float:
    """The fastest of n timed calls, in ms (no warm-up call: the reference's first run counts as ours does
    after the untimed run that builds our graph)."""
    from bench_kernels import _best_ms

    return _best_ms(fn, min_time=0.0, max_reps=n, min_reps=n, warm_up=False)


def _reference_worker(model_dir: str, n_threads: int, out_json: str) -> None:
    """Runs in its own process: transformers fp32 timings."""
    import torch
    from transformers import UnlimitedOcrForConditionalGeneration

    from bench_vision import SIZES, _page

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from reference_preprocess import prepare_image  # the Pillow reference pipeline (what the C one equals)

    torch.set_num_threads(n_threads)
    model = UnlimitedOcrForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval().model
    res = {}
    for name, (size, mode) in SIZES.items():
        p = prepare_image(_page(size), mode)
        gv = torch.from_numpy(np.ascontiguousarray(p.global_view.transpose(2, 0, 1)))[None]
        kw = {}
        if p.tiles.shape[0]:
            kw = dict(pixel_values_local=torch.from_numpy(np.ascontiguousarray(p.tiles.transpose(0, 3, 1, 2))),
                      num_local_patches=[p.tiles.shape[0]], patches_grid=[list(p.grid)])
        with torch.no_grad():
            res[name] = _best_of(TIMED_RUNS, lambda: model.get_image_features(pixel_values=gv, **kw))
    res["peak_rss_mb"] = _peak_rss_mb()
    Path(out_json).write_text(json.dumps(res))


def _page(size: tuple[int, int]):
    return page(size, (250, 250, 250))


def run(n_threads: int = 2) -> list[dict]:
    from convert.converter import convert
    from encoder.vision import VisionEncoder

    from bench_kernels import _machine_peaks

    # measured F32 FMA / vdpbf16ps peaks (tests/bench/peak.c); the Q8_0 file's int8 products can exceed
    # the F32 one
    fma_peak, bf16_peak = _machine_peaks(n_threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tp-bench-vision-") as tmp:
        root = Path(tmp)
        ckpt = _checkpoint(root)
        ref_json = root / "ref.json"
        env = child_env()
        subprocess.run([sys.executable, "-c",
                        f"import bench_vision; bench_vision._reference_worker({str(ckpt)!r}, {n_threads}, {str(ref_json)!r})"],
                       check=True, env=env)
        ref = json.loads(ref_json.read_text())
        rows.append({"name": "transformers reference peak RSS", "peak_rss_mb": ref["peak_rss_mb"]})
        # (file type, precision): F32 arithmetic is exact; BF16 rounds the products' inputs (AMX/AVX512-BF16);
        # the CLI's default (auto) is BF16 for both of these files; int8 (--precision int8) quantises the F16
        # file's matrices to Q8_0 at load
        f32_tokens: dict[str, np.ndarray] = {}
        for outtype, precision in (("f16", 0), ("f16", 1), ("f16", 2), ("q8_0", 0), ("q8_0", 1)):
            gguf = root / f"v-{outtype}.gguf"
            if not gguf.exists():
                convert(ckpt, mmproj=True, outtype=outtype, outfile=gguf, progress=False)
            t0 = time.perf_counter()
            enc = VisionEncoder(gguf, n_threads=n_threads, precision=precision)
            load_ms = (time.perf_counter() - t0) * 1e3  # int8: the matrices quantised to Q8_0 here
            label = outtype + {0: "", 1: " bf16-precision", 2: " int8-precision"}[precision]
            for name, (size, mode) in SIZES.items():
                p = enc.prepare(_page(size), mode)
                (tokens,) = enc.encode([p])  # builds the graph
                ms = _best_of(TIMED_RUNS, lambda: enc.encode([p]))
                # the trade a precision makes: its tokens against F32 arithmetic on the same file's weights
                if outtype == "f16":
                    if precision == 0:
                        f32_tokens[name] = tokens.astype(np.float64)
                    else:
                        a, b = f32_tokens[name], tokens.astype(np.float64)
                        rows.append({"name": f"vision {label} {name} cosine to f32 precision",
                                     "cosine": float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b))),
                                     "load_ms": load_ms})
                gflops = FLOPS[name] / (ms / 1e3) / 1e9
                peak = bf16_peak if precision and bf16_peak > 0 else fma_peak
                rows.append({"name": f"vision {label} {name}", "ours_ms": ms, "peer": "transformers fp32",
                             "peer_ms": ref[name], "ratio": ref[name] / ms, "gflops": gflops,
                             "machine_peak_gflops": peak, "peak_frac": gflops / peak})
            if outtype == "f16" and precision < 2:
                # one pass over 8 pages vs a loop over them (batching must never be slower)
                p = enc.prepare(_page((1240, 1754)), "gundam")
                enc.encode([p] * 8)
                t0 = time.perf_counter()
                enc.encode([p] * 8)
                batched = (time.perf_counter() - t0) * 1e3
                enc.encode([p])
                t0 = time.perf_counter()
                for _ in range(8):
                    enc.encode([p])
                looped = (time.perf_counter() - t0) * 1e3
                rows.append({"name": f"vision {label} 8 gundam 2x3 pages, one pass", "ours_ms": batched,
                             "peer": "one page at a time", "peer_ms": looped, "ratio": looped / batched,
                             "peak_rss_mb": _peak_rss_mb(), "compute_buffer_mb": enc.last_compute_bytes / 2**20})
            del enc
    return rows


if __name__ == "__main__":
    for r in run(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
        print(r)
