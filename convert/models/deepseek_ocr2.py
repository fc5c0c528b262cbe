"""DeepSeek-OCR-2: config, checkpoint names -> llama.cpp's GGUF names, shapes, types and KV pairs.

Config layouts:

* the published original layout (``deepseek-ai/DeepSeek-OCR-2``, ``DeepseekOCR2ForCausalLM``):
  ``language_config`` (as v1), ``vision_config.model_name "deepencoderv2"``, ``vision_config.width.sam_vit_b``,
  ``vision_config.width["qwen2-0-5b"].dim`` (the encoder width), ``projector_config``. It states neither the
  encoder's depth, heads nor FFN width: the layers are counted in the checkpoint, the FFN width and the KV
  heads read from tensor shapes, the heads taken from ``vision_config.num_attention_heads`` when given, else
  the published model's 14 for width 896 (any other width needs the key). ``vision_config.layers`` /
  ``intermediate_size`` / ``num_attention_heads`` (what llama.cpp's converter reads) are honoured and checked.
  SAM's ``net_2``/``net_3`` widths come from the tensors (the official code hard-codes them; ``net_3`` ends
  at the encoder width);
* the layout transformers' ``save_pretrained`` writes for ``DeepseekOcr2ForConditionalGeneration``
  (``model_type "deepseek_ocr2"``): ``text_config``, ``vision_config.{sam_config, encoder_config}``.

Two parts: the text file is DeepSeek-OCR v1's (``deepseek2-ocr``, ``models/deepseek_ocr.py``'s text part
unchanged); the vision file is ``clip`` with projector ``deepseekocr2``: SAM ViT-B (``models/sam.py``) ->
a Qwen2-shaped encoder over [SAM tokens ; learned queries] -> one linear projector.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGUFValueType as VT
from gguf import MODEL_TENSOR as MT
from gguf import Keys

from ..base import KV, Count, Expect, MmprojModel, ModelBase, ModelConfig, expect, tname
from ..config import Getter
from ..errors import ConversionError
from ..quant_policy import OutType
from . import sam as sam_part
from .deepseek_ocr import (KEY_PAD_COLOR, KEY_TILE_SIZE, DeepseekOcrTextModel, TextConfig, read_projector,
                           read_text_hf, read_text_original)
from .sam import SamConfig

FAMILY = "DeepSeek-OCR-2"
ARCHITECTURES_ORIGINAL = ("DeepseekOCR2ForCausalLM",)
ARCHITECTURES_HF = ("DeepseekOcr2ForConditionalGeneration",)

# ---- what the gguf package 0.19 lacks (llama.cpp's gguf-py has them) ---------------------------------
PROJECTOR_TYPE = "deepseekocr2"  # VisionProjectorType.DEEPSEEKOCR2
V_RESMPL_QUERY_768 = "v.resample_query_768"  # MODEL_TENSOR.V_RESMPL_QUERY_768
V_RESMPL_QUERY_1024 = "v.resample_query_1024"  # MODEL_TENSOR.V_RESMPL_QUERY_1024
KEY_VISION_HEAD_COUNT_KV = "clip.vision.attention.head_count_kv"  # Keys.ClipVision.Attention.HEAD_COUNT_KV

# ---- our own keys ---------------------------------------------------------------------------------------
KEY_ENCODER_ROPE_FREQ_BASE = "tilepass.encoder.rope_freq_base"

# the published model's encoder (Qwen2-0.5B-shaped): what a config that states nothing means
REAL_ENCODER_WIDTH, REAL_ENCODER_HEADS = 896, 14

ENC = "model.qwen2_model."
ENC_LAYER = ENC + "model.model.layers."
_ENC_LAYER_RX = r"model\.qwen2_model\.model\.model\.layers\.(\d+)\."


@dataclass
class EncoderConfig:
    """The Qwen2-shaped encoder ("DeepEncoder V2"); ``None`` = not stated, resolved from the checkpoint."""

    hidden_size: int
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    intermediate_size: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass(kw_only=True)
class Ocr2Config(ModelConfig):
    text: TextConfig
    sam: SamConfig
    encoder: EncoderConfig
    projector_input_dim: int | None
    projector_output_dim: int | None
    image_size: int = 1024  # clip.vision.image_size (the global view)
    tile_size: int = 768
    pad_color: tuple[int, int, int] = (127, 127, 127)
    min_tiles: int = 2
    max_tiles: int = 6


def _parse_original(path: Path, top: Getter) -> Ocr2Config:
    text = read_text_original(top, FAMILY)
    vis = top.sub("vision_config")
    width = vis.sub("width")
    for key in ("sam_vit_b", "qwen2-0-5b"):
        if not width.has(key):
            raise ConversionError(path, f"missing \"vision_config.width.{key}\" (not a {FAMILY} vision tower)")
    image_size = vis.size("image_size", 1024)
    sam = sam_part.read_original(width.sub("sam_vit_b"), image_size, read_downsample=False)
    enc = EncoderConfig(
        hidden_size=width.sub("qwen2-0-5b").int("dim", minimum=1),
        num_hidden_layers=vis.int("layers", None, minimum=1),
        num_attention_heads=vis.int("num_attention_heads", None, minimum=1),
        num_key_value_heads=vis.int("num_key_value_heads", None, minimum=1),
        intermediate_size=vis.int("intermediate_size", None, minimum=1),
        rms_norm_eps=vis.float("rms_norm_eps", 1e-6),
        rope_theta=vis.float("rope_theta", 1e6),
    )
    proj_in, proj_out = read_projector(top)
    return Ocr2Config(layout="original", architecture="", path=path, text=text, sam=sam, encoder=enc,
                      projector_input_dim=proj_in, projector_output_dim=proj_out, image_size=image_size,
                      image_token_id=top.int("image_token_id", None))


def _parse_hf(path: Path, top: Getter) -> Ocr2Config:
    text = read_text_hf(top, FAMILY)
    vis = top.sub("vision_config")
    sam = sam_part.read_hf(vis.sub("sam_config"), [512, 896])
    e = vis.sub("encoder_config")
    kinds = e.obj.get("layer_types")
    if e.bool("use_sliding_window", False) or (isinstance(kinds, list) and any(k != "full_attention" for k in kinds)):
        raise ConversionError(path, "\"vision_config.encoder_config\": sliding-window attention is not "
                                    f"{FAMILY}'s encoder and is not supported")
    act = e.obj.get("hidden_act", "silu")
    if act != "silu":
        raise ConversionError(path, f"\"vision_config.encoder_config.hidden_act\" {act!r} is not supported (silu)")
    enc = EncoderConfig(
        hidden_size=e.int("hidden_size", minimum=1),
        num_hidden_layers=e.int("num_hidden_layers", None, minimum=1),
        num_attention_heads=e.int("num_attention_heads", None, minimum=1),
        num_key_value_heads=e.int("num_key_value_heads", None, minimum=1),
        intermediate_size=e.int("intermediate_size", None, minimum=1),
        rms_norm_eps=e.float("rms_norm_eps", 1e-6),
        rope_theta=e.rope_theta(1e6),
    )
    return Ocr2Config(layout="hf", architecture="", path=path, text=text, sam=sam, encoder=enc,
                      projector_input_dim=None, projector_output_dim=None, image_size=sam.image_size,
                      image_token_id=top.int("image_token_id", None))


class _DeepseekOcr2(ModelBase):
    """The family: its config reader."""

    family = FAMILY

    @classmethod
    def guess_architecture(cls, data: dict[str, Any]) -> str | None:
        if data.get("model_type") == "deepseek_ocr2":
            return ARCHITECTURES_HF[0]
        vis = data.get("vision_config")
        if "language_config" in data and isinstance(vis, dict) and (
                vis.get("model_name") == "deepencoderv2"
                or (isinstance(vis.get("width"), dict) and "qwen2-0-5b" in vis["width"])):
            return ARCHITECTURES_ORIGINAL[0]
        return None

    @classmethod
    def read_config(cls, path: Path, top: Getter, arch: str) -> Ocr2Config:
        """The layout by its content (``text_config``: transformers'), whichever architecture name it carries."""
        return _parse_hf(path, top) if top.has("text_config") else _parse_original(path, top)


@ModelBase.register(*ARCHITECTURES_ORIGINAL, *ARCHITECTURES_HF)
class DeepseekOcr2TextModel(_DeepseekOcr2, DeepseekOcrTextModel):
    """The DeepSeek-V2 MoE decoder -> ``deepseek2-ocr``: DeepSeek-OCR v1's text file, unchanged."""


@ModelBase.register(*ARCHITECTURES_ORIGINAL, *ARCHITECTURES_HF)
class DeepseekOcr2VisionModel(_DeepseekOcr2, MmprojModel):
    """SAM ViT-B + Qwen2-shaped encoder + linear projector -> ``clip`` / ``deepseekocr2``."""

    @classmethod
    def owns_name(cls, name: str) -> bool:
        return name.startswith(("model.sam_model.", ENC, "model.projector.")) or name == "model.view_seperator"

    def counts(self) -> list[Count]:
        out = sam_part.counts(self.cfg.sam)
        if self.cfg.encoder.num_hidden_layers is not None:
            out.append(Count("encoder num_hidden_layers", self.cfg.encoder.num_hidden_layers, _ENC_LAYER_RX,
                             "encoder layers (model.qwen2_model.model.model.layers.N.*)"))
        return out

    def resolve(self) -> None:
        cfg, s, e = self.cfg, self.cfg.sam, self.cfg.encoder
        path = cfg.path
        sam_part.resolve(self, s, path)
        W = e.hidden_size
        if e.num_hidden_layers is None:
            e.num_hidden_layers = self.present(_ENC_LAYER_RX)
            if e.num_hidden_layers == 0:
                raise ConversionError(self._where(), f"no encoder layers ({ENC_LAYER}N.*) in the checkpoint")
        if e.num_attention_heads is None:
            if W != REAL_ENCODER_WIDTH:
                raise ConversionError(path, f"the config does not state the encoder's attention heads and its width "
                                            f"{W} is not the published {REAL_ENCODER_WIDTH} ({REAL_ENCODER_HEADS} "
                                            f"heads): add \"vision_config.num_attention_heads\"")
            e.num_attention_heads = REAL_ENCODER_HEADS
        if W % e.num_attention_heads:
            raise ConversionError(path, f"encoder width {W} is not a multiple of its heads {e.num_attention_heads}")
        hd = e.head_dim
        if e.num_key_value_heads is None:
            rows = self._dim(ENC_LAYER + "0.self_attn.k_proj.weight", 0)
            if rows % hd:
                ref = self._ref(ENC_LAYER + "0.self_attn.k_proj.weight")
                raise ConversionError(ref.path, f"tensor {ref.name!r} has {rows} rows, not a multiple of the head "
                                                f"size {hd} (width {W} / {e.num_attention_heads} heads)")
            e.num_key_value_heads = rows // hd
        if e.num_key_value_heads == 0 or e.num_attention_heads % e.num_key_value_heads:
            raise ConversionError(path, f"encoder heads {e.num_attention_heads} are not a multiple of its KV heads "
                                        f"{e.num_key_value_heads}")
        if e.intermediate_size is None:
            e.intermediate_size = self._dim(ENC_LAYER + "0.mlp.gate_proj.weight", 0)
        if s.downsample_channels[-1] != W:
            raise ConversionError(path, f"SAM's last downsample width {s.downsample_channels[-1]} (net_3) must equal "
                                        f"the encoder width {W} (SAM tokens are the encoder's input)")
        if cfg.projector_input_dim is not None and cfg.projector_input_dim != W:
            raise ConversionError(path, f"projector_config.input_dim {cfg.projector_input_dim} != encoder width {W}")
        if cfg.projector_output_dim is not None and cfg.projector_output_dim != cfg.text.hidden_size:
            raise ConversionError(path, f"projector_config.n_embed {cfg.projector_output_dim} != text "
                                        f"hidden_size {cfg.text.hidden_size}")
        cfg.projector_input_dim, cfg.projector_output_dim = W, cfg.text.hidden_size

    def query_counts(self) -> tuple[int, int]:
        """Learned queries of a tile and of the global view: one per SAM token (patch 16, two stride-2 convs)."""
        s, cfg = self.cfg.sam, self.cfg
        side = lambda size: size // s.patch_size // 4  # noqa: E731
        return side(cfg.tile_size) ** 2, side(s.image_size) ** 2

    def expectations(self) -> list[Expect]:
        cfg, e = self.cfg, self.cfg.encoder
        W, I, hd = e.hidden_size, e.intermediate_size, e.head_dim
        q_out, kv_out = e.num_attention_heads * hd, e.num_key_value_heads * hd
        Ht = cfg.projector_output_dim
        E = expect
        out = sam_part.expectations(cfg.sam)
        for i in range(e.num_hidden_layers):
            b = f"{ENC_LAYER}{i}."
            out += [
                E(tname(MT.V_ENC_INPUT_NORM, i, ".weight"), b + "input_layernorm.weight", (W,), f32=True),
                E(tname(MT.V_ENC_ATTN_Q, i, ".weight"), b + "self_attn.q_proj.weight", (q_out, W)),
                E(tname(MT.V_ENC_ATTN_Q, i, ".bias"), b + "self_attn.q_proj.bias", (q_out,), f32=True),
                E(tname(MT.V_ENC_ATTN_K, i, ".weight"), b + "self_attn.k_proj.weight", (kv_out, W)),
                E(tname(MT.V_ENC_ATTN_K, i, ".bias"), b + "self_attn.k_proj.bias", (kv_out,), f32=True),
                E(tname(MT.V_ENC_ATTN_V, i, ".weight"), b + "self_attn.v_proj.weight", (kv_out, W)),
                E(tname(MT.V_ENC_ATTN_V, i, ".bias"), b + "self_attn.v_proj.bias", (kv_out,), f32=True),
                E(tname(MT.V_ENC_ATTN_O, i, ".weight"), b + "self_attn.o_proj.weight", (W, q_out)),
                E(tname(MT.V_ENC_POST_ATTN_NORM, i, ".weight"), b + "post_attention_layernorm.weight", (W,), f32=True),
                E(tname(MT.V_ENC_FFN_GATE, i, ".weight"), b + "mlp.gate_proj.weight", (I, W)),
                E(tname(MT.V_ENC_FFN_UP, i, ".weight"), b + "mlp.up_proj.weight", (I, W)),
                E(tname(MT.V_ENC_FFN_DOWN, i, ".weight"), b + "mlp.down_proj.weight", (W, I)),
            ]
        n_tile, n_global = self.query_counts()
        out += [
            E(tname(MT.V_POST_NORM, suffix=".weight"), ENC + "model.model.norm.weight", (W,), f32=True),
            E(tname(V_RESMPL_QUERY_768, suffix=".weight"), ENC + "query_768.weight", (n_tile, W)),
            E(tname(V_RESMPL_QUERY_1024, suffix=".weight"), ENC + "query_1024.weight", (n_global, W)),
            E(tname(MT.V_MMPROJ_FC, suffix=".weight"), "model.projector.layers.weight", (Ht, W)),
            E(tname(MT.V_MMPROJ_FC, suffix=".bias"), "model.projector.layers.bias", (Ht,), f32=True),
            E(tname(MT.V_ENC_EMBD_VSEP), "model.view_seperator", (Ht,), (1, Ht), f32=True),
        ]
        return out

    def kv_pairs(self, *, chosen: OutType, **_: Any) -> list[KV]:
        cfg, s, e = self.cfg, self.cfg.sam, self.cfg.encoder
        C, CV = Keys.Clip, Keys.ClipVision
        kv = self._general(chosen) + [
            KV(C.HAS_VISION_ENCODER, True, VT.BOOL),
            KV(C.PROJECTOR_TYPE, PROJECTOR_TYPE, VT.STRING),
            KV(CV.USE_GELU, True, VT.BOOL),  # SAM's MLP; the encoder's SwiGLU is SiLU, fixed in the graph
            KV(CV.PROJECTION_DIM, cfg.projector_output_dim, VT.UINT32),
            KV(CV.IMAGE_SIZE, cfg.image_size, VT.UINT32),
            KV(CV.PATCH_SIZE, s.patch_size, VT.UINT32),
            # the Qwen2-shaped encoder
            KV(CV.EMBEDDING_LENGTH, e.hidden_size, VT.UINT32),
            KV(CV.FEED_FORWARD_LENGTH, e.intermediate_size, VT.UINT32),
            KV(CV.BLOCK_COUNT, e.num_hidden_layers, VT.UINT32),
            KV(CV.Attention.HEAD_COUNT, e.num_attention_heads, VT.UINT32),
            KV(KEY_VISION_HEAD_COUNT_KV, e.num_key_value_heads, VT.UINT32),  # llama.cpp writes a constant 2
            KV(CV.Attention.LAYERNORM_EPS, e.rms_norm_eps, VT.FLOAT32),
            KV(CV.IMAGE_MEAN, cfg.image_mean, VT.ARRAY, VT.FLOAT32),
            KV(CV.IMAGE_STD, cfg.image_std, VT.ARRAY, VT.FLOAT32),
        ]
        # llama.cpp writes the scale factor only for a grid other than 4x its 16-token side (test models)
        scale = cfg.image_size // s.patch_size // 16
        if scale > 0 and scale != 4:
            kv.append(KV(CV.Projector.SCALE_FACTOR, scale, VT.UINT32))
        return kv + [
            KV(CV.WINDOW_SIZE, s.window_size, VT.UINT32),
            KV(CV.PREPROC_MIN_TILES, cfg.min_tiles, VT.UINT32),
            KV(CV.PREPROC_MAX_TILES, cfg.max_tiles, VT.UINT32),
            *sam_part.llamacpp_kv(s),
            # ours: what llama.cpp hard-codes
            *sam_part.own_kv(s),
            KV(KEY_TILE_SIZE, cfg.tile_size, VT.UINT32),
            KV(KEY_PAD_COLOR, list(cfg.pad_color), VT.ARRAY, VT.INT32),
            KV(KEY_ENCODER_ROPE_FREQ_BASE, e.rope_theta, VT.FLOAT32),
        ]
