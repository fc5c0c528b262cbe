"""Tiny DeepSeek-OCR v1 reference checkpoints for tests (see ../shared/spec/references.md).

Two kinds of checkpoint, both real converter inputs:

* ``build_tiny_ocr(dir, seed=0, layout="hf"|"original")`` - a transformers
  ``UnlimitedOcrForConditionalGeneration`` with random weights (all text layers "full_attention" =
  DeepSeek-OCR v1), saved with ``save_pretrained`` (float32, one ``model.safetensors``, transformers'
  config layout). ``layout="original"`` then rewrites ``config.json`` into the original checkpoint
  layout (``language_config``, ``vision_config.width.*``) and re-saves the weights as bfloat16 shards
  with a ``model.safetensors.index.json``, as the published checkpoint is.
* ``build_synthetic_ocr(dir, dims, ...)`` - the same tensor names written directly (no torch), any
  size, e.g. the full tensor list of the real checkpoint with small widths, or a few hundred MB for
  benchmarks.

Both come with a small byte-level BPE ``tokenizer.json`` (made with ``tokenizers``) holding the
DeepSeek-OCR special tokens at their real ids, and a ``tokenizer_config.json``.
``get_tiny_ocr(...)`` caches built models for the whole test session.

The numbers of the tiny model are ``TINY`` (an ``OcrDims``); ``FULL`` is the published model's.
"""
from __future__ import annotations

import atexit
import json
import re
import shutil
import struct
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np

# ---- special tokens of DeepSeek-OCR (ids as in the real tokenizer) --------------------------------------
BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
IMAGE_TOKEN_ID = 128815
SPECIAL_TOKENS: dict[int, str] = {
    0: BOS, 1: EOS, 2: PAD,
    128815: "<image>", 128816: "<|ref|>", 128817: "<|/ref|>", 128818: "<|det|>", 128819: "<|/det|>",
    128820: "<|grounding|>", 128821: "<td>", 128822: "</td>", 128823: "<tr>", 128824: "</tr>",
    128825: "<|User|>", 128826: "<|Assistant|>",
}
REAL_VOCAB_SIZE = 129280


def special_tokens(vocab_size: int = REAL_VOCAB_SIZE) -> dict[int, str]:
    """The special tokens' ids for a vocabulary of ``vocab_size``: the real ids for the real size; for a
    smaller vocabulary (faster tests) ids 0-2 stay and the others move to ``vocab_size - 32 + k``."""
    if vocab_size >= REAL_VOCAB_SIZE:
        return dict(SPECIAL_TOKENS)
    if vocab_size < 64:
        raise ValueError("vocab_size must be at least 64")
    high = [t for i, t in sorted(SPECIAL_TOKENS.items()) if i >= 3]
    out = {i: t for i, t in SPECIAL_TOKENS.items() if i < 3}
    out.update({vocab_size - 32 + k: t for k, t in enumerate(high)})
    return out


def image_token_id(vocab_size: int = REAL_VOCAB_SIZE) -> int:
    return next(i for i, t in special_tokens(vocab_size).items() if t == "<image>")


@dataclass(frozen=True)
class OcrDims:
    """Every number that shapes a DeepSeek-OCR v1 checkpoint."""

    # text decoder (DeepSeek-V2 MoE, MHA)
    vocab_size: int = 129280
    text_hidden: int = 64
    text_layers: int = 3
    text_heads: int = 4
    text_kv_heads: int = 4
    dense_layers: int = 1  # leading dense layers (first_k_dense_replace)
    text_ffn: int = 96  # dense layers' intermediate size
    n_experts: int = 8
    moe_ffn: int = 32
    top_k: int = 2
    n_shared: int = 2
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6
    max_positions: int = 8192
    initializer_range: float = 0.2
    # SAM ViT-B
    sam_hidden: int = 32
    sam_layers: int = 2
    sam_heads: int = 2
    sam_global: tuple[int, ...] = (1,)
    sam_neck: int = 16
    sam_downsample: tuple[int, int] = (16, 32)
    sam_mlp: int = 64
    sam_image: int = 1024
    sam_patch: int = 16
    sam_window: int = 14
    # transformers' default for SAM is 1e-10: its features then sit near the float32 denormal range,
    # which hides numeric errors and makes every CPU kernel crawl; real checkpoints are nothing like it
    sam_initializer_range: float = 0.02
    # CLIP-L part (its width must equal sam_downsample[-1])
    clip_hidden: int = 32
    clip_layers: int = 2
    clip_heads: int = 4
    clip_ffn: int = 64
    clip_image: int = 224
    clip_patch: int = 14

    @property
    def head_dim(self) -> int:
        return self.text_hidden // self.text_heads

    @property
    def projector_in(self) -> int:
        return self.clip_hidden + self.sam_downsample[-1]

    def to_dict(self) -> dict:
        return asdict(self)


TINY = OcrDims()
# the same with a 1024-token vocabulary (special ids remapped, see special_tokens()): GGUF files whose
# token list reads back fast
TINY_SMALL_VOCAB = OcrDims(vocab_size=1024)
FULL = OcrDims(text_hidden=1280, text_layers=12, text_heads=10, text_kv_heads=10, text_ffn=6848, n_experts=64,
               moe_ffn=896, top_k=6, n_shared=2, initializer_range=0.02, sam_hidden=768, sam_layers=12,
               sam_heads=12, sam_global=(2, 5, 8, 11), sam_neck=256, sam_downsample=(512, 1024), sam_mlp=3072,
               clip_hidden=1024, clip_layers=24, clip_heads=16, clip_ffn=4096)
# the real checkpoint's tensor list (12 / 64 / 12 / 24 blocks) with small widths
FULL_NAMES_SMALL = replace(FULL, vocab_size=1024, text_hidden=32, text_heads=4, text_kv_heads=4, text_ffn=48, moe_ffn=16,
                           sam_hidden=24, sam_neck=8, sam_downsample=(16, 32), sam_mlp=48, clip_hidden=32,
                           clip_ffn=64, initializer_range=0.2)


# ---- configs ------------------------------------------------------------------------------------------
def hf_config_kwargs(d: OcrDims = TINY) -> dict:
    """kwargs for ``transformers.UnlimitedOcrConfig`` (transformers' layout)."""
    n = d.text_layers
    return dict(
        text_config=dict(
            vocab_size=d.vocab_size, hidden_size=d.text_hidden, intermediate_size=d.text_ffn, num_hidden_layers=n,
            num_attention_heads=d.text_heads, num_key_value_heads=d.text_kv_heads, n_routed_experts=d.n_experts,
            moe_intermediate_size=d.moe_ffn, num_experts_per_tok=d.top_k, n_shared_experts=d.n_shared,
            mlp_layer_types=["dense"] * d.dense_layers + ["sparse"] * (n - d.dense_layers),
            layer_types=["full_attention"] * n, initializer_range=d.initializer_range, rms_norm_eps=d.rms_eps,
            rope_parameters={"rope_theta": d.rope_theta, "rope_type": "default"},
            max_position_embeddings=d.max_positions, bos_token_id=0, eos_token_id=1),
        vision_config=dict(
            sam_config=dict(hidden_size=d.sam_hidden, num_hidden_layers=d.sam_layers, num_attention_heads=d.sam_heads,
                            global_attn_indexes=list(d.sam_global), output_channels=d.sam_neck,
                            downsample_channels=list(d.sam_downsample), mlp_dim=d.sam_mlp, image_size=d.sam_image,
                            patch_size=d.sam_patch, window_size=d.sam_window,
                            initializer_range=d.sam_initializer_range),
            encoder_config=dict(hidden_size=d.clip_hidden, num_hidden_layers=d.clip_layers,
                                num_attention_heads=d.clip_heads, intermediate_size=d.clip_ffn,
                                image_size=d.clip_image, patch_size=d.clip_patch)),
        image_token_id=image_token_id(d.vocab_size),
    )


def original_config(d: OcrDims, name: str = "tiny-deepseek-ocr") -> dict:
    """config.json in the original checkpoint layout (cf. ../shared/fixtures/deepseek-ocr-v1/config.json)."""
    lang = {
        "architectures": ["DeepseekV2ForCausalLM"], "bos_token_id": 0, "eos_token_id": 1,
        "first_k_dense_replace": d.dense_layers, "hidden_size": d.text_hidden, "intermediate_size": d.text_ffn,
        "kv_lora_rank": None, "lm_head": True, "max_position_embeddings": d.max_positions,
        "moe_intermediate_size": d.moe_ffn, "n_group": 1, "n_routed_experts": d.n_experts,
        "n_shared_experts": d.n_shared, "num_attention_heads": d.text_heads, "num_experts_per_tok": d.top_k,
        "num_hidden_layers": d.text_layers, "num_key_value_heads": d.text_kv_heads, "q_lora_rank": None,
        "qk_nope_head_dim": 0, "qk_rope_head_dim": 0, "rm_head": False, "topk_group": 1, "topk_method": "greedy",
        "torch_dtype": "bfloat16", "use_mla": False, "v_head_dim": 0, "vocab_size": d.vocab_size,
    }
    cfg = {
        "_name_or_path": name,
        "candidate_resolutions": [[1024, 1024]],
        "global_view_pos": "head",
        "architectures": ["DeepseekOCRForCausalLM"],
        "language_config": lang,
        "model_type": "deepseek_vl_v2",
        "projector_config": {"input_dim": d.projector_in, "model_type": "mlp_projector", "n_embed": d.text_hidden,
                             "projector_type": "linear"},
        "tile_tag": "2D",
        "torch_dtype": "bfloat16",
        "vision_config": {
            "image_size": d.sam_image, "mlp_ratio": 3.7362, "model_name": "deeplip_b_l", "model_type": "vision",
            "width": {
                "clip-l-14-224": {"heads": d.clip_heads, "image_size": d.clip_image, "layers": d.clip_layers,
                                  "patch_size": d.clip_patch, "width": d.clip_hidden},
                "sam_vit_b": {"downsample_channels": list(d.sam_downsample), "global_attn_indexes": list(d.sam_global),
                              "heads": d.sam_heads, "layers": d.sam_layers, "width": d.sam_hidden},
            },
        },
    }
    cfg.update({k: v for k, v in lang.items() if k not in ("architectures", "torch_dtype")})
    return cfg


def dims_from_hf_config(cfg: dict) -> OcrDims:
    """The numbers of a saved transformers config (transformers' layout)."""
    t, s, c = cfg["text_config"], cfg["vision_config"]["sam_config"], cfg["vision_config"]["encoder_config"]
    kinds = t["mlp_layer_types"]
    return OcrDims(
        vocab_size=t["vocab_size"], text_hidden=t["hidden_size"], text_layers=t["num_hidden_layers"],
        text_heads=t["num_attention_heads"], text_kv_heads=t["num_key_value_heads"],
        dense_layers=kinds.count("dense"), text_ffn=t["intermediate_size"], n_experts=t["n_routed_experts"],
        moe_ffn=t["moe_intermediate_size"], top_k=t["num_experts_per_tok"], n_shared=t["n_shared_experts"],
        rope_theta=t["rope_parameters"]["rope_theta"], rms_eps=t["rms_norm_eps"],
        max_positions=t["max_position_embeddings"], initializer_range=t["initializer_range"],
        sam_hidden=s["hidden_size"], sam_layers=s["num_hidden_layers"], sam_heads=s["num_attention_heads"],
        sam_global=tuple(s["global_attn_indexes"]), sam_neck=s["output_channels"],
        sam_downsample=tuple(s["downsample_channels"]), sam_mlp=s["mlp_dim"], sam_image=s["image_size"],
        sam_patch=s["patch_size"], sam_window=s["window_size"], clip_hidden=c["hidden_size"],
        clip_layers=c["num_hidden_layers"], clip_heads=c["num_attention_heads"], clip_ffn=c["intermediate_size"],
        clip_image=c["image_size"], clip_patch=c["patch_size"])


def rewrite_config_original(model_dir: Path, name: str | None = None) -> dict:
    """Rewrite a saved transformers ``config.json`` into the original checkpoint layout, in place."""
    model_dir = Path(model_dir)
    hf = json.loads((model_dir / "config.json").read_text())
    cfg = original_config(dims_from_hf_config(hf), name or model_dir.name)
    (model_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    return cfg


# ---- checkpoint tensors ---------------------------------------------------------------------------------
def checkpoint_shapes(d: OcrDims, *, unused_clip_tensors: bool = False) -> dict[str, tuple[int, ...]]:
    """Every tensor name of a DeepSeek-OCR v1 checkpoint with its shape (PyTorch order)."""
    H, hd = d.text_hidden, d.head_dim
    s: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (d.vocab_size, H)}
    for i in range(d.text_layers):
        p = f"model.layers.{i}."
        s[p + "input_layernorm.weight"] = (H,)
        s[p + "post_attention_layernorm.weight"] = (H,)
        s[p + "self_attn.q_proj.weight"] = (d.text_heads * hd, H)
        s[p + "self_attn.k_proj.weight"] = (d.text_kv_heads * hd, H)
        s[p + "self_attn.v_proj.weight"] = (d.text_kv_heads * hd, H)
        s[p + "self_attn.o_proj.weight"] = (H, d.text_heads * hd)
        if i < d.dense_layers:
            s[p + "mlp.gate_proj.weight"] = (d.text_ffn, H)
            s[p + "mlp.up_proj.weight"] = (d.text_ffn, H)
            s[p + "mlp.down_proj.weight"] = (H, d.text_ffn)
        else:
            s[p + "mlp.gate.weight"] = (d.n_experts, H)
            for e in range(d.n_experts):
                s[p + f"mlp.experts.{e}.gate_proj.weight"] = (d.moe_ffn, H)
                s[p + f"mlp.experts.{e}.up_proj.weight"] = (d.moe_ffn, H)
                s[p + f"mlp.experts.{e}.down_proj.weight"] = (H, d.moe_ffn)
            if d.n_shared:
                sh = d.moe_ffn * d.n_shared
                s[p + "mlp.shared_experts.gate_proj.weight"] = (sh, H)
                s[p + "mlp.shared_experts.up_proj.weight"] = (sh, H)
                s[p + "mlp.shared_experts.down_proj.weight"] = (H, sh)
    s["model.norm.weight"] = (H,)
    s["lm_head.weight"] = (d.vocab_size, H)
    W, g = d.sam_hidden, d.sam_image // d.sam_patch
    sp = "model.sam_model."
    s[sp + "patch_embed.proj.weight"] = (W, 3, d.sam_patch, d.sam_patch)
    s[sp + "patch_embed.proj.bias"] = (W,)
    s[sp + "pos_embed"] = (1, g, g, W)
    for i in range(d.sam_layers):
        b = f"{sp}blocks.{i}."
        size = g if i in d.sam_global else d.sam_window
        for n in ("norm1", "norm2"):
            s[b + n + ".weight"] = (W,)
            s[b + n + ".bias"] = (W,)
        s[b + "attn.qkv.weight"] = (3 * W, W)
        s[b + "attn.qkv.bias"] = (3 * W,)
        s[b + "attn.proj.weight"] = (W, W)
        s[b + "attn.proj.bias"] = (W,)
        s[b + "attn.rel_pos_h"] = (2 * size - 1, W // d.sam_heads)
        s[b + "attn.rel_pos_w"] = (2 * size - 1, W // d.sam_heads)
        s[b + "mlp.lin1.weight"] = (d.sam_mlp, W)
        s[b + "mlp.lin1.bias"] = (d.sam_mlp,)
        s[b + "mlp.lin2.weight"] = (W, d.sam_mlp)
        s[b + "mlp.lin2.bias"] = (W,)
    N, (d0, d1) = d.sam_neck, d.sam_downsample
    s[sp + "neck.0.weight"] = (N, W, 1, 1)
    s[sp + "neck.1.weight"] = (N,)
    s[sp + "neck.1.bias"] = (N,)
    s[sp + "neck.2.weight"] = (N, N, 3, 3)
    s[sp + "neck.3.weight"] = (N,)
    s[sp + "neck.3.bias"] = (N,)
    s[sp + "net_2.weight"] = (d0, N, 3, 3)
    s[sp + "net_3.weight"] = (d1, d0, 3, 3)
    C = d.clip_hidden
    vp = "model.vision_model."
    n_pos = (d.clip_image // d.clip_patch) ** 2 + 1
    s[vp + "embeddings.class_embedding"] = (C,)
    s[vp + "embeddings.position_embedding.weight"] = (n_pos, C)
    if unused_clip_tensors:
        s[vp + "embeddings.patch_embedding.weight"] = (C, 3, d.clip_patch, d.clip_patch)
        s[vp + "embeddings.position_ids"] = (1, n_pos)
    s[vp + "pre_layrnorm.weight"] = (C,)
    s[vp + "pre_layrnorm.bias"] = (C,)
    for i in range(d.clip_layers):
        b = f"{vp}transformer.layers.{i}."
        for n in ("layer_norm1", "layer_norm2"):
            s[b + n + ".weight"] = (C,)
            s[b + n + ".bias"] = (C,)
        s[b + "self_attn.qkv_proj.weight"] = (3 * C, C)
        s[b + "self_attn.qkv_proj.bias"] = (3 * C,)
        s[b + "self_attn.out_proj.weight"] = (C, C)
        s[b + "self_attn.out_proj.bias"] = (C,)
        s[b + "mlp.fc1.weight"] = (d.clip_ffn, C)
        s[b + "mlp.fc1.bias"] = (d.clip_ffn,)
        s[b + "mlp.fc2.weight"] = (C, d.clip_ffn)
        s[b + "mlp.fc2.bias"] = (C,)
    s["model.projector.layers.weight"] = (H, d.projector_in)
    s["model.projector.layers.bias"] = (H,)
    s["model.image_newline"] = (H,)
    s["model.view_seperator"] = (H,)
    return s


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


_ST_DTYPE = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int64): "I64"}


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], bf16: Iterable[str] = ()) -> None:
    """Minimal safetensors writer (no torch); names in ``bf16`` hold uint16 bfloat16 bit patterns."""
    bf16 = set(bf16)
    header, offset = {}, 0
    for name, a in tensors.items():
        dt = "BF16" if name in bf16 else _ST_DTYPE[a.dtype]
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a).tobytes())


def write_sharded(model_dir: Path, tensors: dict[str, np.ndarray], n_shards: int, *, dtype: str = "bf16") -> None:
    """Write tensors (float32 arrays) as ``n_shards`` safetensors files plus ``model.safetensors.index.json``."""
    model_dir = Path(model_dir)
    names = list(tensors)
    target = max(1, sum(a.nbytes for a in tensors.values())) / n_shards
    buckets: list[list[str]] = [[] for _ in range(n_shards)]
    acc = 0
    for n in names:
        buckets[min(n_shards - 1, int(acc / target))].append(n)
        acc += tensors[n].nbytes
    shards = [b for b in buckets if b]
    weight_map, total_size = {}, 0
    for k, sh in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        out, bf = {}, []
        for n in sh:
            a = tensors[n]
            if a.dtype == np.float32 and dtype == "bf16":
                out[n] = f32_to_bf16_bits(a)
                bf.append(n)
            elif a.dtype == np.float32 and dtype == "f16":
                out[n] = a.astype(np.float16)
            else:
                out[n] = a
            weight_map[n] = fname
            total_size += out[n].nbytes
        write_safetensors(model_dir / fname, out, bf)
    (model_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total_size}, "weight_map": weight_map}, indent=1))


def read_checkpoint_f32(model_dir: Path) -> dict[str, np.ndarray]:
    """All float tensors of a checkpoint as float32, read with the ``safetensors`` package (for checks)."""
    from safetensors import safe_open

    out = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            for k in st.keys():
                t = st.get_tensor(k)
                if t.is_floating_point():
                    out[k] = t.float().numpy()
    return out


# ---- tokenizer ------------------------------------------------------------------------------------------
_CORPUS = [
    "# Title\n\nThe quick brown fox jumps over the lazy dog. Convert the document to markdown.",
    "Free OCR. Parse the figure. Describe this image in detail. Locate the table in the image.",
    "| name | value |\n|---|---|\n| alpha | 1.5 |\n| beta | 2,000 |\n",
    "In 2024 the results were: 12% growth, 3.5 million users, and $4.2B revenue.",
    "Section 1.2 - Introduction: documents contain text, tables, formulas like E = mc^2, and figures.",
]


def write_tokenizer(model_dir: Path, vocab_size: int = REAL_VOCAB_SIZE, bpe_vocab: int = 400) -> None:
    """A small byte-level BPE with the DeepSeek-OCR special tokens at their real ids, filled up to
    ``vocab_size`` with ``<|unused_N|>`` tokens (as the real vocabulary is full)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=bpe_vocab, special_tokens=[BOS, EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, 0)])
    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    specials = special_tokens(vocab_size)
    assert all(vocab[t] == i for i, t in specials.items() if i < 3)
    if max(vocab.values()) >= min(i for i in specials if i >= 3):
        raise ValueError(f"vocab_size {vocab_size} too small for a BPE of {bpe_vocab} plus the special tokens")
    used = set(vocab.values())
    specials_hi = {i: t for i, t in specials.items() if i >= 3}
    for i in range(vocab_size):
        if i in used:
            continue
        vocab[specials_hi.get(i, f"<|unused_{i}|>")] = i
    data["added_tokens"] = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True} for i, t in sorted(specials.items())]
    (model_dir / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    tc = {
        "add_bos_token": True, "add_eos_token": False, "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
        "unk_token": None, "clean_up_tokenization_spaces": False, "model_max_length": 8192,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True}
                                 for i, t in sorted(specials.items())},
    }
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=1), encoding="utf-8")


# ---- builders -------------------------------------------------------------------------------------------
def build_tiny_ocr(out_dir: Path, *, seed: int = 0, layout: str = "hf", dims: OcrDims = TINY,
                   n_shards: int = 2, dtype: str = "bf16") -> Path:
    """Build, save and return a tiny transformers ``UnlimitedOcrForConditionalGeneration``.

    ``layout="hf"``: exactly what ``save_pretrained`` writes (float32). ``layout="original"``: the same
    weights re-saved as ``n_shards`` ``dtype`` (bf16) shards with an index, and the config rewritten into
    the original layout. The directory also gets the tokenizer files.
    """
    import torch
    from transformers import UnlimitedOcrConfig, UnlimitedOcrForConditionalGeneration

    if layout not in ("hf", "original"):
        raise ValueError(f"layout must be 'hf' or 'original', not {layout!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = UnlimitedOcrForConditionalGeneration(UnlimitedOcrConfig(**hf_config_kwargs(dims))).eval()
    model.save_pretrained(out_dir)
    write_tokenizer(out_dir, dims.vocab_size)
    if layout == "original":
        tensors = read_checkpoint_f32(out_dir)
        (out_dir / "model.safetensors").unlink()
        write_sharded(out_dir, tensors, n_shards, dtype=dtype)
        rewrite_config_original(out_dir, name=out_dir.name)
    return out_dir


def build_synthetic_ocr(out_dir: Path, dims: OcrDims = TINY, *, seed: int = 0, n_shards: int = 3,
                        dtype: str = "bf16", names: Iterable[str] | None = None, scale: float = 0.05,
                        unused_clip_tensors: bool = False, tokenizer: bool = True) -> Path:
    """Write a checkpoint in the original layout directly (no torch): random weights, every shape from
    ``checkpoint_shapes(dims)``. ``names`` (e.g. the real index's list) restricts/orders the tensors and
    must be covered by the shapes (``position_ids`` is written as int64)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shapes = checkpoint_shapes(dims, unused_clip_tensors=True)
    if names is None:
        names = [n for n in checkpoint_shapes(dims, unused_clip_tensors=unused_clip_tensors)]
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for n in names:
        if n not in shapes:
            raise KeyError(f"no shape known for {n!r}")
        if n.endswith("position_ids"):
            tensors[n] = np.arange(int(np.prod(shapes[n])), dtype=np.int64).reshape(shapes[n])
        else:
            tensors[n] = (rng.standard_normal(shapes[n], dtype=np.float32) * scale).astype(np.float32)
    write_sharded(out_dir, tensors, n_shards, dtype=dtype)
    (out_dir / "config.json").write_text(json.dumps(original_config(dims, out_dir.name), indent=1))
    if tokenizer:
        write_tokenizer(out_dir, dims.vocab_size)
    return out_dir


# ---- per-session cache ----------------------------------------------------------------------------------
_CACHE: dict[tuple, Path] = {}
_CACHE_ROOT: Path | None = None


def _cache_root() -> Path:
    global _CACHE_ROOT
    if _CACHE_ROOT is None:
        _CACHE_ROOT = Path(tempfile.mkdtemp(prefix="tilepass-ref-"))
        atexit.register(shutil.rmtree, _CACHE_ROOT, True)
    return _CACHE_ROOT


def get_tiny_ocr(*, seed: int = 0, layout: str = "hf", dims: OcrDims = TINY) -> Path:
    """``build_tiny_ocr`` once per (seed, layout, dims) per process; treat the result as read-only."""
    key = ("tiny", seed, layout, dims)
    if key not in _CACHE:
        d = _cache_root() / f"tiny-{layout}-s{seed}-{len(_CACHE)}"
        _CACHE[key] = build_tiny_ocr(d, seed=seed, layout=layout, dims=dims)
    return _CACHE[key]


def get_synthetic_ocr(dims: OcrDims = TINY, **kw) -> Path:
    """``build_synthetic_ocr`` once per arguments per process; treat the result as read-only."""
    key = ("synthetic", dims, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kw.items())))
    if key not in _CACHE:
        d = _cache_root() / f"synthetic-{len(_CACHE)}"
        _CACHE[key] = build_synthetic_ocr(d, dims, **kw)
    return _CACHE[key]


def copy_model(src: Path, dst: Path) -> Path:
    """A private, writable copy of a cached model (for tests that damage it)."""
    shutil.copytree(src, dst)
    return Path(dst)


__all__ = [
    "OcrDims", "TINY", "TINY_SMALL_VOCAB", "FULL", "special_tokens", "image_token_id", "REAL_VOCAB_SIZE", "FULL_NAMES_SMALL", "SPECIAL_TOKENS", "IMAGE_TOKEN_ID", "BOS", "EOS", "PAD",
    "hf_config_kwargs", "original_config", "dims_from_hf_config", "rewrite_config_original", "checkpoint_shapes",
    "write_safetensors", "write_sharded", "read_checkpoint_f32", "write_tokenizer", "build_tiny_ocr",
    "build_synthetic_ocr", "get_tiny_ocr", "get_synthetic_ocr", "copy_model", "f32_to_bf16_bits",
    "bf16_bits_to_f32",
]
