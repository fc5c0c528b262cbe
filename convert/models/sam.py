"""SAM ViT-B, the first stage of both DeepSeek-OCR vision towers (v1 and OCR-2): its config, the values
read from tensor shapes, its expected tensors (``model.sam_model.*`` -> ``v.sam.*``) and its KV pairs.

Shared by ``deepseek_ocr.py`` and ``deepseek_ocr2.py``; the two differ only in the width ``net_3`` ends at
(1024 for v1's CLIP, the encoder width 896 for OCR-2).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gguf import GGUFValueType as VT
from gguf import MODEL_TENSOR as MT
from gguf import Keys

from ..base import KV, Count, Expect, expect, tname
from ..errors import ConversionError

if TYPE_CHECKING:
    from ..base import ModelBase
    from ..config import Getter

PREFIX = "model.sam_model."

# ---- our own keys (values llama.cpp hard-codes) ---------------------------------------------------------
KEY_SAM_IMAGE_SIZE = "tilepass.sam.image_size"
KEY_SAM_PATCH_SIZE = "tilepass.sam.patch_size"
KEY_SAM_WINDOW_SIZE = "tilepass.sam.window_size"
KEY_SAM_GLOBAL_ATTN = "tilepass.sam.global_attn_indexes"
KEY_SAM_EPS = "tilepass.sam.layer_norm_epsilon"
KEY_SAM_FFN = "tilepass.sam.feed_forward_length"


@dataclass
class SamConfig:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    global_attn_indexes: list[int]
    downsample_channels: list[int] | None  # None: from net_2 / net_3
    image_size: int = 1024
    patch_size: int | None = None  # original layout: from the patch-embedding kernel
    window_size: int | None = None  # original layout: from a windowed block's rel-pos table
    mlp_dim: int | None = None
    output_channels: int | None = None  # neck width
    layer_norm_eps: float = 1e-6


def read_original(s: "Getter", image_size: int, downsample: list[int] | None = None,
                  read_downsample: bool = True) -> SamConfig:
    """``vision_config.width.sam_vit_b`` of the original layout (``read_downsample=False``: the channels
    come from ``net_2`` / ``net_3`` whatever the config says)."""
    return SamConfig(
        hidden_size=s.int("width", minimum=1),
        num_hidden_layers=s.int("layers", minimum=1),
        num_attention_heads=s.int("heads", minimum=1),
        global_attn_indexes=s.int_list("global_attn_indexes", [2, 5, 8, 11]),
        downsample_channels=s.int_list("downsample_channels", downsample) if read_downsample else None,
        image_size=image_size,
    )


def read_hf(s: "Getter", downsample: list[int]) -> SamConfig:
    """``vision_config.sam_config`` of transformers' layout (transformers' defaults for absent keys)."""
    return SamConfig(
        hidden_size=s.int("hidden_size", 768, minimum=1),
        num_hidden_layers=s.int("num_hidden_layers", 12, minimum=1),
        num_attention_heads=s.int("num_attention_heads", 12, minimum=1),
        global_attn_indexes=s.int_list("global_attn_indexes", [2, 5, 8, 11]),
        downsample_channels=s.int_list("downsample_channels", list(downsample)),
        image_size=s.size("image_size", 1024),
        patch_size=s.size("patch_size", 16),
        window_size=s.int("window_size", 14, minimum=1),
        mlp_dim=s.int("mlp_dim", 3072, minimum=1),
        output_channels=s.int("output_channels", 256, minimum=1),
        layer_norm_eps=s.float("layer_norm_eps", 1e-6),
    )


def counts(s: SamConfig) -> list[Count]:
    return [Count("sam num_hidden_layers", s.num_hidden_layers, r"model\.sam_model\.blocks\.(\d+)\.",
                  "SAM blocks (model.sam_model.blocks.N.*)")]


def resolve(part: "ModelBase", s: SamConfig, path: Path) -> None:
    """Fill what the config leaves open from tensor shapes; check what must agree."""
    sp = PREFIX
    if s.patch_size is None:
        s.patch_size = part._dim(sp + "patch_embed.proj.weight", 2)
    if s.mlp_dim is None:
        s.mlp_dim = part._dim(sp + "blocks.0.mlp.lin1.weight", 0)
    if s.output_channels is None:
        s.output_channels = part._dim(sp + "neck.0.weight", 0)
    if s.downsample_channels is None:
        s.downsample_channels = [part._dim(sp + "net_2.weight", 0), part._dim(sp + "net_3.weight", 0)]
    if any(not 0 <= g < s.num_hidden_layers for g in s.global_attn_indexes):
        raise ConversionError(path, f"SAM global_attn_indexes {s.global_attn_indexes} outside 0.."
                                    f"{s.num_hidden_layers - 1}")
    if s.window_size is None:
        windowed = next((i for i in range(s.num_hidden_layers) if i not in s.global_attn_indexes), None)
        s.window_size = (part._dim(f"{sp}blocks.{windowed}.attn.rel_pos_h", 0) + 1) // 2 if windowed is not None \
            else 14
    if len(s.downsample_channels) != 2:
        raise ConversionError(path, f"SAM downsample_channels must have 2 entries, got {s.downsample_channels}")
    if s.image_size % s.patch_size:
        raise ConversionError(path, f"SAM image_size {s.image_size} is not a multiple of patch {s.patch_size}")
    if s.hidden_size % s.num_attention_heads:
        raise ConversionError(path, f"SAM width {s.hidden_size} is not a multiple of heads {s.num_attention_heads}")


def expectations(s: SamConfig) -> list[Expect]:
    """Every SAM tensor: llama.cpp's names; F32 but for the matrices (and the patch kernel: F16 with f16)."""
    Ws, P, g = s.hidden_size, s.patch_size, s.image_size // s.patch_size
    hd = Ws // s.num_attention_heads
    Nc, (d0, d1) = s.output_channels, s.downsample_channels
    sp = PREFIX
    E = expect
    out = [
        E(tname(MT.V_SAM_PATCH_EMBD, suffix=".weight"), sp + "patch_embed.proj.weight", (Ws, 3, P, P), conv=True),
        E(tname(MT.V_SAM_PATCH_EMBD, suffix=".bias"), sp + "patch_embed.proj.bias", (Ws,), f32=True),
        E(tname(MT.V_SAM_POS_EMBD, suffix=".weight"), sp + "pos_embed", (1, g, g, Ws), f32=True),
    ]
    for i in range(s.num_hidden_layers):
        b = f"{sp}blocks.{i}."
        size = g if i in s.global_attn_indexes else s.window_size
        out += [
            E(tname(MT.V_SAM_PRE_NORM, i, ".weight"), b + "norm1.weight", (Ws,), f32=True),
            E(tname(MT.V_SAM_PRE_NORM, i, ".bias"), b + "norm1.bias", (Ws,), f32=True),
            E(tname(MT.V_SAM_ATTN_QKV, i, ".weight"), b + "attn.qkv.weight", (3 * Ws, Ws)),
            E(tname(MT.V_SAM_ATTN_QKV, i, ".bias"), b + "attn.qkv.bias", (3 * Ws,), f32=True),
            E(tname(MT.V_SAM_ATTN_OUT, i, ".weight"), b + "attn.proj.weight", (Ws, Ws)),
            E(tname(MT.V_SAM_ATTN_OUT, i, ".bias"), b + "attn.proj.bias", (Ws,), f32=True),
            E(tname(MT.V_SAM_ATTN_POS_H, i, ".weight"), b + "attn.rel_pos_h", (2 * size - 1, hd), f32=True),
            E(tname(MT.V_SAM_ATTN_POS_W, i, ".weight"), b + "attn.rel_pos_w", (2 * size - 1, hd), f32=True),
            E(tname(MT.V_SAM_POST_NORM, i, ".weight"), b + "norm2.weight", (Ws,), f32=True),
            E(tname(MT.V_SAM_POST_NORM, i, ".bias"), b + "norm2.bias", (Ws,), f32=True),
            E(tname(MT.V_SAM_MLP_LIN_1, i, ".weight"), b + "mlp.lin1.weight", (s.mlp_dim, Ws)),
            E(tname(MT.V_SAM_MLP_LIN_1, i, ".bias"), b + "mlp.lin1.bias", (s.mlp_dim,), f32=True),
            E(tname(MT.V_SAM_MLP_LIN_2, i, ".weight"), b + "mlp.lin2.weight", (Ws, s.mlp_dim)),
            E(tname(MT.V_SAM_MLP_LIN_2, i, ".bias"), b + "mlp.lin2.bias", (Ws,), f32=True),
        ]
    out += [
        E(tname(MT.V_SAM_NECK, 0, ".weight"), sp + "neck.0.weight", (Nc, Ws, 1, 1), f32=True),
        E(tname(MT.V_SAM_NECK, 1, ".weight"), sp + "neck.1.weight", (Nc,), f32=True),
        E(tname(MT.V_SAM_NECK, 1, ".bias"), sp + "neck.1.bias", (Nc,), f32=True),
        E(tname(MT.V_SAM_NECK, 2, ".weight"), sp + "neck.2.weight", (Nc, Nc, 3, 3), f32=True),
        E(tname(MT.V_SAM_NECK, 3, ".weight"), sp + "neck.3.weight", (Nc,), f32=True),
        E(tname(MT.V_SAM_NECK, 3, ".bias"), sp + "neck.3.bias", (Nc,), f32=True),
        E(tname(MT.V_SAM_NET_2, suffix=".weight"), sp + "net_2.weight", (d0, Nc, 3, 3), f32=True),
        E(tname(MT.V_SAM_NET_3, suffix=".weight"), sp + "net_3.weight", (d1, d0, 3, 3), f32=True),
    ]
    return out


def llamacpp_kv(s: SamConfig) -> list[KV]:
    """llama.cpp's SAM keys (``clip.vision.sam.*``; ``clip.vision.window_size`` is SAM's window too)."""
    CV = Keys.ClipVision
    return [
        KV(CV.SAM.BLOCK_COUNT, s.num_hidden_layers, VT.UINT32),
        KV(CV.SAM.EMBEDDING_LENGTH, s.hidden_size, VT.UINT32),
        KV(CV.SAM.HEAD_COUNT, s.num_attention_heads, VT.UINT32),
    ]


def own_kv(s: SamConfig) -> list[KV]:
    """Ours: what llama.cpp hard-codes for SAM."""
    return [
        KV(KEY_SAM_IMAGE_SIZE, s.image_size, VT.UINT32),
        KV(KEY_SAM_PATCH_SIZE, s.patch_size, VT.UINT32),
        KV(KEY_SAM_WINDOW_SIZE, s.window_size, VT.UINT32),
        KV(KEY_SAM_GLOBAL_ATTN, list(s.global_attn_indexes), VT.ARRAY, VT.INT32),
        KV(KEY_SAM_EPS, s.layer_norm_eps, VT.FLOAT32),
        KV(KEY_SAM_FFN, s.mlp_dim, VT.UINT32),
    ]
