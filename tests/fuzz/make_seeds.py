"""Seed inputs for the fuzz targets of tests/fuzz/ (written at run time: the model seeds are tens of KB, too big
to keep in the repository), deterministic (same bytes on every run).

    python tests/fuzz/make_seeds.py OUT_DIR [--fixtures ../shared/fixtures]

OUT_DIR/load/   GGUF files for fuzz_load (tp_gguf_open, then tp_vision_load / tp_text_load and, when they load, a
                small encode / eval):
                  - synthetic DeepSeek-OCR v1 and DeepSeek-OCR-2 vision files with tiny shapes (an 8-wide SAM of
                    two blocks, one windowed and one global, on 4-pixel patches; a one-layer CLIP / Qwen2-shaped
                    encoder), whose views of 16 and 32 pixels encode in milliseconds;
                  - a synthetic deepseek2-ocr text file (a dense and a MoE layer, 32 tokens), and a deepseek2 one
                    (multi-head latent attention with a q LoRA, the sigmoid gate);
                  - every text fixture of ../shared/fixtures with its vocabulary cut to 64 tokens (the families'
                    real key sets), and the vision fixtures of families with no synthetic file here stored as F16
                    (PaddleOCR-VL: 190 KB; the DeepSeek ones, 480 KB, would only slow the fuzzer down);
                  - a few degenerate files (a header alone, an architecture and nothing else).
OUT_DIR/image/  byte strings for fuzz_image (the first bytes choose the image size, stride and preprocessing
                parameters, the rest are pixels: see fuzz_image.c).
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

import gguf
import numpy as np

QT = gguf.GGMLQuantizationType
VT = gguf.GGUFValueType
SYNTHETIC_PROJECTORS = ("deepseekocr", "deepseekocr2")  # vision families with a tiny synthetic seed below


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _write(path: Path, arch: str, kv: dict, tensors: dict) -> None:
    """kv: key -> (value, type[, sub_type]); tensors: name -> float32 array in numpy (PyTorch) order, stored F16
    (1-D and tables too: the loaders make them F32) unless the array is already another dtype."""
    w = gguf.GGUFWriter(str(path), arch)
    for k, v in kv.items():
        if v[1] == VT.ARRAY:
            w.add_key_value(k, v[0], VT.ARRAY, sub_type=v[2])
        else:
            w.add_key_value(k, v[0], v[1])
    for name, a in tensors.items():
        w.add_tensor(name, a.astype(np.float16) if a.dtype == np.float32 else a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _t(rng, *shape, scale=0.3):
    """A tensor in PyTorch order (the GGUF ne is reversed)."""
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _sam(rng, C=8, heads=2, P=4, grid=8, window=4, mlp=16, neck=8, out=8) -> dict:
    D = C // heads
    t = {
        "v.sam.patch_embd.weight": _t(rng, C, 3, P, P),
        "v.sam.patch_embd.bias": _t(rng, C),
        "v.sam.pos_embd.weight": _t(rng, 1, grid, grid, C),
    }
    for i, rows in enumerate((2 * window - 1, 2 * grid - 1)):  # block 0 windowed, block 1 global
        b = f"v.sam.blk.{i}."
        t.update({
            b + "pre_ln.weight": 1 + _t(rng, C, scale=0.05), b + "pre_ln.bias": _t(rng, C, scale=0.05),
            b + "post_ln.weight": 1 + _t(rng, C, scale=0.05), b + "post_ln.bias": _t(rng, C, scale=0.05),
            b + "attn.qkv.weight": _t(rng, 3 * C, C), b + "attn.qkv.bias": _t(rng, 3 * C),
            b + "attn.out.weight": _t(rng, C, C), b + "attn.out.bias": _t(rng, C),
            b + "attn.pos_h.weight": _t(rng, rows, D), b + "attn.pos_w.weight": _t(rng, rows, D),
            b + "mlp.lin1.weight": _t(rng, mlp, C), b + "mlp.lin1.bias": _t(rng, mlp),
            b + "mlp.lin2.weight": _t(rng, C, mlp), b + "mlp.lin2.bias": _t(rng, C),
        })
    t.update({
        "v.sam.neck.0.weight": _t(rng, neck, C, 1, 1),
        "v.sam.neck.1.weight": 1 + _t(rng, neck, scale=0.05), "v.sam.neck.1.bias": _t(rng, neck, scale=0.05),
        "v.sam.neck.2.weight": _t(rng, neck, neck, 3, 3),
        "v.sam.neck.3.weight": 1 + _t(rng, neck, scale=0.05), "v.sam.neck.3.bias": _t(rng, neck, scale=0.05),
        "v.sam.net_2.weight": _t(rng, neck, neck, 3, 3),
        "v.sam.net_3.weight": _t(rng, out, neck, 3, 3),
    })
    return t


def _vision_kv(projector: str, extra: dict) -> dict:
    kv = {
        "general.type": ("mmproj", VT.STRING),
        "clip.has_vision_encoder": (True, VT.BOOL),
        "clip.projector_type": (projector, VT.STRING),
        "clip.vision.image_mean": ([0.5, 0.5, 0.5], VT.ARRAY, VT.FLOAT32),
        "clip.vision.image_std": ([0.5, 0.5, 0.5], VT.ARRAY, VT.FLOAT32),
        "clip.vision.window_size": (4, VT.UINT32),
        "clip.vision.sam.head_count": (2, VT.UINT32),
        "clip.vision.attention.head_count": (2, VT.UINT32),
        "clip.vision.preproc_min_tiles": (2, VT.UINT32),
        "clip.vision.preproc_max_tiles": (4, VT.UINT32),
        "tilepass.preproc.tile_size": (16, VT.UINT32),  # 4-pixel patches, two stride-2 convs: views of 16·k
    }
    kv.update(extra)
    return kv


def tiny_v1_vision(path: Path) -> None:
    """DeepSeek-OCR v1: global view 32 (SAM grid 8 -> 2x2 tokens), tiles of 16."""
    rng = _rng(1)
    F = E = 8
    t = _sam(rng)
    t.update({"v.class_embd": _t(rng, F), "v.position_embd.weight": _t(rng, 1 + 2 * 2, F),
              "v.pre_ln.weight": 1 + _t(rng, F, scale=0.05), "v.pre_ln.bias": _t(rng, F, scale=0.05)})
    b = "v.blk.0."
    t.update({b + "ln1.weight": 1 + _t(rng, F, scale=0.05), b + "ln1.bias": _t(rng, F, scale=0.05),
              b + "ln2.weight": 1 + _t(rng, F, scale=0.05), b + "ln2.bias": _t(rng, F, scale=0.05),
              b + "attn_qkv.weight": _t(rng, 3 * F, F), b + "attn_qkv.bias": _t(rng, 3 * F),
              b + "attn_out.weight": _t(rng, F, F), b + "attn_out.bias": _t(rng, F),
              b + "ffn_up.weight": _t(rng, 16, F), b + "ffn_up.bias": _t(rng, 16),
              b + "ffn_down.weight": _t(rng, F, 16), b + "ffn_down.bias": _t(rng, F)})
    t.update({"mm.model.fc.weight": _t(rng, E, 2 * F), "mm.model.fc.bias": _t(rng, E),
              "v.image_newline": _t(rng, E), "v.view_seperator": _t(rng, 1, E)})
    _write(path, "clip", _vision_kv("deepseekocr", {}), t)


def tiny_ocr2_vision(path: Path) -> None:
    """DeepSeek-OCR-2: global view 32 (2x2 SAM tokens, 4 queries), tiles of 16 (1 token, 1 query)."""
    rng = _rng(2)
    C = E = 8
    t = _sam(rng, out=C)
    b = "v.blk.0."
    t.update({b + "ln1.weight": 1 + _t(rng, C, scale=0.05), b + "ln2.weight": 1 + _t(rng, C, scale=0.05),
              b + "attn_q.weight": _t(rng, C, C), b + "attn_q.bias": _t(rng, C),
              b + "attn_k.weight": _t(rng, 4, C), b + "attn_k.bias": _t(rng, 4),
              b + "attn_v.weight": _t(rng, 4, C), b + "attn_v.bias": _t(rng, 4),
              b + "attn_out.weight": _t(rng, C, C),
              b + "ffn_gate.weight": _t(rng, 16, C), b + "ffn_up.weight": _t(rng, 16, C),
              b + "ffn_down.weight": _t(rng, C, 16)})
    t.update({"v.post_ln.weight": 1 + _t(rng, C, scale=0.05),
              "v.resample_query_768.weight": _t(rng, 1, C), "v.resample_query_1024.weight": _t(rng, 4, C),
              "mm.model.fc.weight": _t(rng, E, C), "mm.model.fc.bias": _t(rng, E),
              "v.view_seperator": _t(rng, 1, E)})
    _write(path, "clip", _vision_kv("deepseekocr2", {"clip.vision.attention.head_count_kv": (1, VT.UINT32)}), t)


def _byte_level_vocab(n: int) -> tuple[list[str], list[int]]:
    """n GPT-2 byte-level token strings (some multi-byte, some special), the last one "<image>"."""
    toks, types = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"], [3, 3, 3]
    for i in range(n - 4):
        toks.append(["Ġ", "a", "Ġthe", "ĊĊ", "é", "Ã©", "\u00a0", "x"][i % 8] + str(i))
        types.append(1)
    return toks + ["<image>"], types + [3]


def tiny_deepseek_text(path: Path) -> None:
    rng = _rng(3)
    C, V, H = 8, 32, 2
    arch = "deepseek2-ocr"
    toks, types = _byte_level_vocab(V)
    kv = {
        f"{arch}.block_count": (2, VT.UINT32), f"{arch}.context_length": (64, VT.UINT32),
        f"{arch}.embedding_length": (C, VT.UINT32), f"{arch}.feed_forward_length": (16, VT.UINT32),
        f"{arch}.attention.head_count": (H, VT.UINT32), f"{arch}.attention.head_count_kv": (H, VT.UINT32),
        f"{arch}.attention.layer_norm_rms_epsilon": (1e-6, VT.FLOAT32),
        f"{arch}.expert_count": (2, VT.UINT32), f"{arch}.expert_used_count": (1, VT.UINT32),
        f"{arch}.leading_dense_block_count": (1, VT.UINT32), f"{arch}.vocab_size": (V, VT.UINT32),
        f"{arch}.expert_feed_forward_length": (4, VT.UINT32), f"{arch}.expert_shared_count": (1, VT.UINT32),
        "tokenizer.ggml.model": ("gpt2", VT.STRING),
        "tokenizer.ggml.tokens": (toks, VT.ARRAY, VT.STRING),
        "tokenizer.ggml.token_type": (types, VT.ARRAY, VT.INT32),
        "tokenizer.ggml.bos_token_id": (0, VT.UINT32), "tokenizer.ggml.eos_token_id": (1, VT.UINT32),
        "tokenizer.ggml.padding_token_id": (2, VT.UINT32),
    }
    t = {"token_embd.weight": _t(rng, V, C), "output.weight": _t(rng, V, C),
         "output_norm.weight": 1 + _t(rng, C, scale=0.05)}
    for l in range(2):
        b = f"blk.{l}."
        t.update({b + "attn_norm.weight": 1 + _t(rng, C, scale=0.05), b + "ffn_norm.weight": 1 + _t(rng, C, scale=0.05),
                  b + "attn_q.weight": _t(rng, C, C), b + "attn_k.weight": _t(rng, C, C),
                  b + "attn_v.weight": _t(rng, C, C), b + "attn_output.weight": _t(rng, C, C)})
        if l == 0:
            t.update({b + "ffn_gate.weight": _t(rng, 16, C), b + "ffn_up.weight": _t(rng, 16, C),
                      b + "ffn_down.weight": _t(rng, C, 16)})
        else:
            t.update({b + "ffn_gate_inp.weight": _t(rng, 2, C),
                      b + "ffn_gate_exps.weight": _t(rng, 2, 4, C), b + "ffn_up_exps.weight": _t(rng, 2, 4, C),
                      b + "ffn_down_exps.weight": _t(rng, 2, C, 4),
                      b + "ffn_gate_shexp.weight": _t(rng, 4, C), b + "ffn_up_shexp.weight": _t(rng, 4, C),
                      b + "ffn_down_shexp.weight": _t(rng, C, 4)})
    _write(path, arch, kv, t)


def tiny_deepseek2_mla_text(path: Path) -> None:
    """deepseek2 (multi-head latent attention, llama.cpp's layout): a q LoRA, kv_lora 8, rope 4, nope 4, v 4, a
    dense and a MoE layer with the sigmoid gate and its selection bias."""
    rng = _rng(5)
    C, V, H, R, ROPE, NOPE, DV, QR = 8, 32, 2, 8, 4, 4, 4, 6
    arch = "deepseek2"
    toks, types = _byte_level_vocab(V)
    kv = {
        f"{arch}.block_count": (2, VT.UINT32), f"{arch}.context_length": (64, VT.UINT32),
        f"{arch}.embedding_length": (C, VT.UINT32), f"{arch}.feed_forward_length": (16, VT.UINT32),
        f"{arch}.attention.head_count": (H, VT.UINT32), f"{arch}.attention.head_count_kv": (1, VT.UINT32),
        f"{arch}.attention.layer_norm_rms_epsilon": (1e-6, VT.FLOAT32),
        f"{arch}.rope.dimension_count": (ROPE, VT.UINT32), f"{arch}.attention.q_lora_rank": (QR, VT.UINT32),
        f"{arch}.attention.kv_lora_rank": (R, VT.UINT32), f"{arch}.attention.key_length": (R + ROPE, VT.UINT32),
        f"{arch}.attention.value_length": (R, VT.UINT32),
        f"{arch}.attention.key_length_mla": (NOPE + ROPE, VT.UINT32),
        f"{arch}.attention.value_length_mla": (DV, VT.UINT32),
        f"{arch}.expert_count": (2, VT.UINT32), f"{arch}.expert_used_count": (2, VT.UINT32),
        f"{arch}.leading_dense_block_count": (1, VT.UINT32), f"{arch}.vocab_size": (V, VT.UINT32),
        f"{arch}.expert_feed_forward_length": (4, VT.UINT32), f"{arch}.expert_shared_count": (1, VT.UINT32),
        f"{arch}.expert_gating_func": (2, VT.UINT32), f"{arch}.expert_weights_norm": (True, VT.BOOL),
        f"{arch}.expert_weights_scale": (2.0, VT.FLOAT32),
        "tokenizer.ggml.model": ("gpt2", VT.STRING),
        "tokenizer.ggml.tokens": (toks, VT.ARRAY, VT.STRING),
        "tokenizer.ggml.token_type": (types, VT.ARRAY, VT.INT32),
        "tokenizer.ggml.bos_token_id": (0, VT.UINT32), "tokenizer.ggml.eos_token_id": (1, VT.UINT32),
    }
    t = {"token_embd.weight": _t(rng, V, C), "output.weight": _t(rng, V, C),
         "output_norm.weight": 1 + _t(rng, C, scale=0.05)}
    for l in range(2):
        b = f"blk.{l}."
        t.update({b + "attn_norm.weight": 1 + _t(rng, C, scale=0.05), b + "ffn_norm.weight": 1 + _t(rng, C, scale=0.05),
                  b + "attn_q_a.weight": _t(rng, QR, C), b + "attn_q_a_norm.weight": 1 + _t(rng, QR, scale=0.05),
                  b + "attn_q_b.weight": _t(rng, H * (NOPE + ROPE), QR),
                  b + "attn_kv_a_mqa.weight": _t(rng, R + ROPE, C),
                  b + "attn_kv_a_norm.weight": 1 + _t(rng, R, scale=0.05),
                  b + "attn_k_b.weight": _t(rng, H, R, NOPE), b + "attn_v_b.weight": _t(rng, H, DV, R),
                  b + "attn_output.weight": _t(rng, C, H * DV)})
        if l == 0:
            t.update({b + "ffn_gate.weight": _t(rng, 16, C), b + "ffn_up.weight": _t(rng, 16, C),
                      b + "ffn_down.weight": _t(rng, C, 16)})
        else:
            t.update({b + "ffn_gate_inp.weight": _t(rng, 2, C), b + "exp_probs_b.bias": _t(rng, 2),
                      b + "ffn_gate_exps.weight": _t(rng, 2, 4, C), b + "ffn_up_exps.weight": _t(rng, 2, 4, C),
                      b + "ffn_down_exps.weight": _t(rng, 2, C, 4),
                      b + "ffn_gate_shexp.weight": _t(rng, 4, C), b + "ffn_up_shexp.weight": _t(rng, 4, C),
                      b + "ffn_down_shexp.weight": _t(rng, C, 4)})
    _write(path, arch, kv, t)


def _copy_kv(r: gguf.GGUFReader, cut: int | None) -> tuple[str, dict]:
    arch = r.fields["general.architecture"].contents()
    n_vocab = None
    if cut is not None:
        n_vocab = len(r.fields["tokenizer.ggml.tokens"].contents())
    kv = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        v = f.contents()
        if f.types[0] == VT.ARRAY:
            if cut is not None and isinstance(v, list) and len(v) == n_vocab:
                v = v[:cut]
            elif k == "tokenizer.ggml.merges":
                v = v[:16]
            kv[k] = (v, VT.ARRAY, f.types[-1])
        else:
            if cut is not None and k.endswith(".vocab_size"):
                v = cut
            elif cut is not None and k.startswith("tokenizer.ggml.") and k.endswith("_id") and int(v) >= cut:
                v = 1
            kv[k] = (v, f.types[0])
    return arch, kv


def cut_text_fixture(src: Path, dst: Path, n_vocab: int = 64) -> None:
    """A fixture text file with its vocabulary (token_embd / output rows, token arrays) cut to n_vocab."""
    r = gguf.GGUFReader(src)
    arch, kv = _copy_kv(r, n_vocab)
    full = len(r.fields["tokenizer.ggml.tokens"].contents())
    t = {}
    for tt in r.tensors:
        a = np.asarray(tt.data)
        if a.ndim == 2 and a.shape[0] == full:
            a = a[:n_vocab]
        t[tt.name] = np.ascontiguousarray(a)
    _write(dst, arch, kv, t)


def f16_vision_fixture(src: Path, dst: Path) -> None:
    r = gguf.GGUFReader(src)
    arch, kv = _copy_kv(r, None)
    _write(dst, arch, kv, {tt.name: np.asarray(tt.data).astype(np.float32) for tt in r.tensors})


def degenerate(out: Path) -> None:
    w = gguf.GGUFWriter(str(out / "header_only.gguf"), "clip")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for arch in ("deepseek2-ocr", "deepseek2", "paddleocr"):
        w = gguf.GGUFWriter(str(out / f"arch_{arch}.gguf"), arch)
        w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


def image_seeds(out: Path) -> None:
    """fuzz_image's layout: 20 bytes of choices (see fuzz_image.c), then pixels."""
    rng = _rng(4)
    shapes = [(1, 1), (3, 2), (40, 17), (17, 40), (64, 64), (90, 30), (5, 96)]
    for i, (w, h) in enumerate(shapes):
        head = struct.pack("<BBBBBBBBBBBBBBBB", w, h, i % 4, 0 if i % 2 else 3, 24 + 8 * i, 16 * (i % 3),
                           1 + i % 2, 2 + i % 7, 127, 128, 128, 128, 64, 64, 64, i) + bytes([28, 0, 4, 8])
        (out / f"image_{i}.bin").write_bytes(head + rng.integers(0, 256, w * h * 3, dtype=np.uint8).tobytes())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "fixtures")
    a = ap.parse_args()
    load, image = a.out / "load", a.out / "image"
    load.mkdir(parents=True, exist_ok=True)
    image.mkdir(parents=True, exist_ok=True)
    tiny_v1_vision(load / "tiny_v1_vision.gguf")
    tiny_ocr2_vision(load / "tiny_ocr2_vision.gguf")
    tiny_deepseek_text(load / "tiny_deepseek_text.gguf")
    tiny_deepseek2_mla_text(load / "tiny_deepseek2_mla_text.gguf")
    fixtures = sorted(p for p in a.fixtures.glob("llamacpp-*") if p.is_dir())
    if not fixtures:
        print(f"make_seeds: no fixtures under {a.fixtures}", file=sys.stderr)
        return 1
    for d in fixtures:
        cut_text_fixture(d / "text-f16.gguf", load / f"{d.name}_text_cut.gguf")
        projector = gguf.GGUFReader(d / "mmproj-f32.gguf").fields["clip.projector_type"].contents()
        if projector not in SYNTHETIC_PROJECTORS:
            f16_vision_fixture(d / "mmproj-f32.gguf", load / f"{d.name}_vision_f16.gguf")
    degenerate(load)
    image_seeds(image)
    n = sum(1 for _ in a.out.rglob("*") if _.is_file())
    print(f"make_seeds: {n} seeds in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
