"""PaddleOCR-VL (0.9B; also 1.5 and 1.6, the same architecture): config, checkpoint names -> llama.cpp's GGUF
names, shapes, types and KV pairs (../shared/spec/gguf-schema.md, section "PaddleOCR-VL").

Config layouts (``architectures[0] = "PaddleOCRVLForConditionalGeneration"`` in both; read by content):

* transformers' (``save_pretrained``): ``text_config`` (``rope_parameters.mrope_section``), ``vision_config``;
* the hub repos' (PaddlePaddle's remote-code config): the text fields at the top level,
  ``rope_scaling.mrope_section`` + ``rope_theta``, ``vision_config.architectures = ["PaddleOCRVisionModel"]``
  (and ``vision_config.model_type "paddleocr_vl"``).

Tensor names: the checkpoint's own (``visual.vision_model.*``, ``mlp_AR.*``, ``model.*``: what the hub repos
hold and what ``save_pretrained`` writes) or transformers' in-memory names (``model.visual.*``,
``model.projector.*``, ``model.language_model.*``, which transformers also loads). The head is tied: no
``lm_head`` tensor means no ``output.weight`` (llama.cpp reuses ``token_embd``); a checkpoint that has one gets
it written. ``visual.vision_model.head.*`` and ``packing_position_embedding`` are unused and dropped.

``preprocessor_config.json`` gives ``min_pixels`` / ``max_pixels`` (top level, or ``size.{min,max}_pixels``, or
``size.{shortest,longest}_edge`` as transformers' processors save them), the mean/std, and patch and merge
sizes that must agree with the config; the vision file needs it.

Two parts: ``paddleocr`` (ERNIE-4.5 decoder with 3-D M-RoPE; a SentencePiece ``llama`` vocabulary, see
``convert.tokenizer.load_spm_vocab``) and ``clip`` with projector ``paddleocr`` (SigLIP-NaViT encoder +
LayerNorm / 2x2 merge / MLP projector).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
from gguf import GGUFValueType as VT
from gguf import MODEL_TENSOR as MT
from gguf import Keys

from ..base import KV, Count, Expect, MmprojModel, ModelBase, ModelConfig, TextModel, expect, tname
from ..config import Getter, load_json
from ..errors import ConversionError
from ..quant_policy import OutType
from ..tokenizer import load_spm_vocab

FAMILY = "PaddleOCR-VL"
ARCHITECTURES = ("PaddleOCRVLForConditionalGeneration",)
TEXT_ARCH = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.PADDLEOCR]  # "paddleocr"
PROJECTOR_TYPE = gguf.VisionProjectorType.PADDLEOCR  # "paddleocr"
MAX_VOCAB = 1 << 24  # a bound for --vocab-only without weights; with them, the embedding's rows bound it

# ---- our own keys (values llama.cpp hard-codes; see convert/README_SECTION.md) -------------------------
KEY_TEXT_IMAGE_TOKEN_ID = "tilepass.text.image_token_id"
KEY_TEXT_IMAGE_START_ID = "tilepass.text.image_start_id"
KEY_TEXT_IMAGE_END_ID = "tilepass.text.image_end_id"
KEY_VISION_MERGE_SIZE = "tilepass.vision.merge_size"
KEY_VISION_ROPE_FREQ_BASE = "tilepass.vision.rope_freq_base"
KEY_VISION_POSITION_GRID = "tilepass.vision.position_grid"
KEY_PROJECTOR_EPS = "tilepass.projector.layer_norm_epsilon"

# the real model's ids (PaddleOCRVLConfig's defaults)
IMAGE_TOKEN_ID, IMAGE_START_ID, IMAGE_END_ID = 100295, 101305, 101306
PROJECTOR_EPS = 1e-5  # transformers' PaddleOCRProjector hard-codes its LayerNorm's eps

# checkpoint name prefixes: (text, vision, projector), the checkpoint's own and transformers' in-memory names
NAMING = {
    "original": ("model.", "visual.vision_model.", "mlp_AR."),
    "transformers": ("model.language_model.", "model.visual.vision_model.", "model.projector."),
}


# ---- config ---------------------------------------------------------------------------------------------
@dataclass
class PaddleTextConfig:
    """The ERNIE-4.5-0.3B decoder."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    mrope_section: list[int]
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = 0


@dataclass
class PaddleVisionConfig:
    """The SigLIP-NaViT encoder."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    patch_size: int = 14
    image_size: int = 384
    spatial_merge_size: int = 2
    layer_norm_eps: float = 1e-6
    rope_theta: float = 10000.0

    @property
    def position_grid(self) -> int:
        """The side of the learned position table (27 for 384 / 14)."""
        return self.image_size // self.patch_size


@dataclass(kw_only=True)
class PaddleOcrVlConfig(ModelConfig):
    text: PaddleTextConfig
    vision: PaddleVisionConfig
    image_start_id: int = IMAGE_START_ID
    image_end_id: int = IMAGE_END_ID
    min_pixels: int | None = None  # from preprocessor_config.json
    max_pixels: int | None = None
    preprocessor_path: Path | None = None


def _first_id(g: Getter, key: str, default: int | None) -> int | None:
    v = g.obj.get(key)
    if isinstance(v, list) and v and isinstance(v[0], int) and not isinstance(v[0], bool):
        return v[0]  # eos_token_id may be a list
    return g.int(key, default)


def _read_text(top: Getter, g: Getter, layout: str) -> PaddleTextConfig:
    """The decoder's numbers from ``g`` (``text_config`` or, hub layout, the top level)."""
    path = top.path
    act = g.obj.get("hidden_act", "silu")
    if act != "silu":
        raise ConversionError(path, f"\"{g._key('hidden_act')}\" {act!r} is not supported (ERNIE's SwiGLU: silu)")
    if g.bool("use_bias", False):
        raise ConversionError(path, f"\"{g._key('use_bias')}\": biased projections are not {FAMILY}'s decoder "
                                    "and are not supported")
    hidden = g.int("hidden_size", minimum=1)
    heads = g.int("num_attention_heads", minimum=1)
    kv_heads = g.int("num_key_value_heads", 2, minimum=1)  # transformers' defaults: 2 KV heads, head 128
    head_dim = g.int("head_dim", 128, minimum=1)
    if heads % kv_heads:
        raise ConversionError(path, f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    # RoPE: transformers' rope_parameters {rope_theta, mrope_section}; the hub's rope_scaling + rope_theta
    rp_key = "rope_parameters" if g.has("rope_parameters") else "rope_scaling" if g.has("rope_scaling") else None
    theta = g.float("rope_theta", 500000.0)
    section = [16, 24, 24]
    if rp_key is not None:
        rp = g.sub(rp_key)
        for k in ("rope_type", "type"):
            if rp.obj.get(k, "default") != "default":
                raise ConversionError(path, f"\"{rp._key(k)}\" {rp.obj[k]!r} is not supported (default)")
        theta = rp.float("rope_theta", theta)
        section = rp.int_list("mrope_section", section)
    if len(section) != 3 or any(s < 0 for s in section) or 2 * sum(section) != head_dim:
        raise ConversionError(path, f"mrope_section {section} must be 3 non-negative counts of frequency pairs "
                                    f"summing to head_dim / 2 = {head_dim / 2:g}")
    return PaddleTextConfig(
        vocab_size=g.int("vocab_size", minimum=1), hidden_size=hidden,
        intermediate_size=g.int("intermediate_size", minimum=1),
        num_hidden_layers=g.int("num_hidden_layers", minimum=1), num_attention_heads=heads,
        num_key_value_heads=kv_heads, head_dim=head_dim, mrope_section=section,
        max_position_embeddings=g.int("max_position_embeddings", 131072, minimum=1),
        rms_norm_eps=g.float("rms_norm_eps", 1e-5), rope_theta=theta,
        bos_token_id=_first_id(g, "bos_token_id", 1), eos_token_id=_first_id(g, "eos_token_id", 2),
        pad_token_id=_first_id(g, "pad_token_id", 0))


def _read_vision(v: Getter) -> PaddleVisionConfig:
    path = v.path
    act = v.obj.get("hidden_act", "gelu_pytorch_tanh")
    if act != "gelu_pytorch_tanh":
        raise ConversionError(path, f"\"{v._key('hidden_act')}\" {act!r} is not supported (gelu_pytorch_tanh)")
    if v.int("num_channels", 3, minimum=1) != 3:
        raise ConversionError(path, f"\"{v._key('num_channels')}\" must be 3")
    theta = v.float("rope_theta", 10000.0)
    if v.has("rope_parameters"):
        rp = v.sub("rope_parameters")
        if rp.obj.get("rope_type", "axial") != "axial":
            raise ConversionError(path, f"\"{rp._key('rope_type')}\" {rp.obj['rope_type']!r} is not supported (axial)")
        theta = rp.float("rope_theta", theta)
    vc = PaddleVisionConfig(
        hidden_size=v.int("hidden_size", minimum=1), intermediate_size=v.int("intermediate_size", minimum=1),
        num_hidden_layers=v.int("num_hidden_layers", minimum=1),
        num_attention_heads=v.int("num_attention_heads", minimum=1), patch_size=v.size("patch_size", 14),
        image_size=v.size("image_size", 384), spatial_merge_size=v.int("spatial_merge_size", 2, minimum=1),
        layer_norm_eps=v.float("layer_norm_eps", 1e-6), rope_theta=theta)
    if vc.hidden_size % vc.num_attention_heads or (vc.hidden_size // vc.num_attention_heads) % 4:
        raise ConversionError(path, f"vision width {vc.hidden_size} / {vc.num_attention_heads} heads must give a head "
                                    "size that is a multiple of 4 (2-D RoPE)")
    if vc.position_grid < 1:
        raise ConversionError(path, f"vision image_size {vc.image_size} is smaller than patch_size {vc.patch_size}")
    return vc


def _pixels(pp: Path, data: dict, key: str) -> int | None:
    """``min_pixels`` / ``max_pixels``: top level, ``size.min_pixels``, or ``size.shortest_edge`` (transformers)."""
    size = data.get("size") if isinstance(data.get("size"), dict) else {}
    alias = {"min_pixels": "shortest_edge", "max_pixels": "longest_edge"}[key]
    for where, v in ((key, data.get(key)), (f"size.{key}", size.get(key)), (f"size.{alias}", size.get(alias))):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 1 << 32:
            raise ConversionError(pp, f"\"{where}\" must be a positive 32-bit integer, got {v!r}")
        return v
    return None


def _read_preprocessor(cfg: PaddleOcrVlConfig, model_dir: Path) -> None:
    pp = model_dir / "preprocessor_config.json"
    if not pp.exists():
        return
    data = load_json(pp, "preprocessor_config.json")
    cfg.preprocessor_path = pp
    cfg.min_pixels, cfg.max_pixels = _pixels(pp, data, "min_pixels"), _pixels(pp, data, "max_pixels")
    if cfg.min_pixels is not None and cfg.max_pixels is not None and cfg.min_pixels > cfg.max_pixels:
        raise ConversionError(pp, f"min_pixels {cfg.min_pixels} exceeds max_pixels {cfg.max_pixels}")
    for key in ("image_mean", "image_std"):
        v = data.get(key)
        if v is not None:
            if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
                raise ConversionError(pp, f"\"{key}\" must be a list of 3 numbers, got {v!r}")
            setattr(cfg, key, [float(x) for x in v])
    for key, want in (("patch_size", cfg.vision.patch_size), ("merge_size", cfg.vision.spatial_merge_size)):
        v = data.get(key)
        if v is not None and v != want:
            raise ConversionError(pp, f"\"{key}\" {v!r} disagrees with config.json's {want}")


class _PaddleOcrVl(ModelBase):
    """The family: its config reader and the checkpoint's naming."""

    family = FAMILY

    @classmethod
    def guess_architecture(cls, data: dict[str, Any]) -> str | None:
        return ARCHITECTURES[0] if data.get("model_type") == "paddleocr_vl" else None

    @classmethod
    def read_config(cls, path: Path, top: Getter, arch: str) -> PaddleOcrVlConfig:
        layout = "hf" if top.has("text_config") else "hub"
        text = _read_text(top, top.sub("text_config") if layout == "hf" else top, layout)
        vision = _read_vision(top.sub("vision_config"))
        ids = {k: top.int(k, d) for k, d in (("image_token_id", IMAGE_TOKEN_ID),
                                             ("vision_start_token_id", IMAGE_START_ID),
                                             ("vision_end_token_id", IMAGE_END_ID))}
        for k, v in ids.items():
            if v >= text.vocab_size:
                raise ConversionError(path, f"\"{k}\" {v} does not fit vocab_size {text.vocab_size}")
        cfg = PaddleOcrVlConfig(layout=layout, architecture="", path=path, text=text, vision=vision,
                                image_token_id=ids["image_token_id"], image_start_id=ids["vision_start_token_id"],
                                image_end_id=ids["vision_end_token_id"])
        _read_preprocessor(cfg, path.parent)
        return cfg

    @property
    def naming(self) -> str:
        """Which names the checkpoint uses (transformers' in-memory ones, or its own)."""
        if self.ckpt is not None and any(n.startswith(("model.language_model.", "model.visual.", "model.projector."))
                                         for n in self.ckpt.tensors):
            return "transformers"
        return "original"

    @property
    def prefixes(self) -> tuple[str, str, str]:
        return NAMING[self.naming]


# ---- text -----------------------------------------------------------------------------------------------
@ModelBase.register(*ARCHITECTURES)
class PaddleOcrVlTextModel(_PaddleOcrVl, TextModel):
    """The ERNIE-4.5 decoder with 3-D M-RoPE -> ``paddleocr``."""

    gguf_arch = TEXT_ARCH

    @classmethod
    def owns_name(cls, name: str) -> bool:
        return name.startswith("lm_head.") or (name.startswith("model.")
                                               and not name.startswith(("model.visual.", "model.projector.")))

    @classmethod
    def load_vocab(cls, model_dir: Path, cfg: Any) -> Any:
        t = cfg.text
        if t.vocab_size > MAX_VOCAB:  # the token list is built in memory
            raise ConversionError(cfg.path, f"\"vocab_size\" {t.vocab_size} is implausible (more than {MAX_VOCAB})")
        return load_spm_vocab(model_dir, t.vocab_size, bos_id=t.bos_token_id, eos_id=t.eos_token_id,
                              pad_id=t.pad_token_id)

    def counts(self) -> list[Count]:
        tp = self.prefixes[0]
        return [Count("num_hidden_layers", self.cfg.text.num_hidden_layers, tp.replace(".", r"\.") + r"layers\.(\d+)\.",
                      f"layers ({tp}layers.N.*)")]

    def check_counts(self) -> None:
        super().check_counts()
        # the tokenizer list is as long as vocab_size: bound it by the embedding before it is built
        rows = self._dim(self.prefixes[0] + "embed_tokens.weight", 0)
        if self.cfg.text.vocab_size > rows:
            raise ConversionError(self.cfg.path, f"\"vocab_size\" is {self.cfg.text.vocab_size} but "
                                                 f"{self.prefixes[0]}embed_tokens.weight has {rows} rows ({FAMILY})")

    def expectations(self) -> list[Expect]:
        t, tp = self.cfg.text, self.prefixes[0]
        H, V, I = t.hidden_size, t.vocab_size, t.intermediate_size
        q_out, kv_out = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
        E = expect
        out = [E(tname(MT.TOKEN_EMBD, suffix=".weight"), tp + "embed_tokens.weight", (V, H))]
        for i in range(t.num_hidden_layers):
            p = f"{tp}layers.{i}."
            out += [
                E(tname(MT.ATTN_NORM, i, ".weight"), p + "input_layernorm.weight", (H,), f32=True),
                E(tname(MT.ATTN_Q, i, ".weight"), p + "self_attn.q_proj.weight", (q_out, H)),
                E(tname(MT.ATTN_K, i, ".weight"), p + "self_attn.k_proj.weight", (kv_out, H)),
                E(tname(MT.ATTN_V, i, ".weight"), p + "self_attn.v_proj.weight", (kv_out, H)),
                E(tname(MT.ATTN_OUT, i, ".weight"), p + "self_attn.o_proj.weight", (H, q_out)),
                E(tname(MT.FFN_NORM, i, ".weight"), p + "post_attention_layernorm.weight", (H,), f32=True),
                E(tname(MT.FFN_GATE, i, ".weight"), p + "mlp.gate_proj.weight", (I, H)),
                E(tname(MT.FFN_UP, i, ".weight"), p + "mlp.up_proj.weight", (I, H)),
                E(tname(MT.FFN_DOWN, i, ".weight"), p + "mlp.down_proj.weight", (H, I)),
            ]
        out.append(E(tname(MT.OUTPUT_NORM, suffix=".weight"), tp + "norm.weight", (H,), f32=True))
        if "lm_head.weight" in self.ckpt:  # tied (the published model): llama.cpp reuses token_embd
            out.append(E(tname(MT.OUTPUT, suffix=".weight"), "lm_head.weight", (V, H)))
        return out

    def kv_pairs(self, *, chosen: OutType, vocab=None, **_: Any) -> list[KV]:
        t, cfg, a = self.cfg.text, self.cfg, self.gguf_arch
        L, A, R = Keys.LLM, Keys.Attention, Keys.Rope
        kv = self._general(chosen) + [
            KV(L.BLOCK_COUNT.format(arch=a), t.num_hidden_layers, VT.UINT32),
            KV(L.CONTEXT_LENGTH.format(arch=a), t.max_position_embeddings, VT.UINT32),
            KV(L.EMBEDDING_LENGTH.format(arch=a), t.hidden_size, VT.UINT32),
            KV(L.FEED_FORWARD_LENGTH.format(arch=a), t.intermediate_size, VT.UINT32),
            KV(A.HEAD_COUNT.format(arch=a), t.num_attention_heads, VT.UINT32),
            KV(A.HEAD_COUNT_KV.format(arch=a), t.num_key_value_heads, VT.UINT32),
            # mrope_section padded to 4, in frequency pairs (t, h, w, -)
            KV(R.DIMENSION_SECTIONS.format(arch=a), list(t.mrope_section) + [0], VT.ARRAY, VT.INT32),
            KV(R.FREQ_BASE.format(arch=a), t.rope_theta, VT.FLOAT32),
            KV(A.LAYERNORM_RMS_EPS.format(arch=a), t.rms_norm_eps, VT.FLOAT32),
            KV(A.KEY_LENGTH.format(arch=a), t.head_dim, VT.UINT32),
            KV(A.VALUE_LENGTH.format(arch=a), t.head_dim, VT.UINT32),
            # ours: the image markers llama.cpp's mtmd hard-codes
            KV(KEY_TEXT_IMAGE_TOKEN_ID, cfg.image_token_id, VT.UINT32),
            KV(KEY_TEXT_IMAGE_START_ID, cfg.image_start_id, VT.UINT32),
            KV(KEY_TEXT_IMAGE_END_ID, cfg.image_end_id, VT.UINT32),
        ]
        if vocab is not None:
            T = Keys.Tokenizer
            kv += [
                KV(T.MODEL, "llama", VT.STRING),
                KV(T.PRE, "default", VT.STRING),
                KV(T.LIST, vocab.tokens, VT.ARRAY, VT.STRING),
                KV(T.SCORES, vocab.scores, VT.ARRAY, VT.FLOAT32),
                KV(T.TOKEN_TYPE, vocab.token_types, VT.ARRAY, VT.INT32),
            ]
            for key, v in ((T.BOS_ID, vocab.bos_id), (T.EOS_ID, vocab.eos_id), (T.UNK_ID, vocab.unk_id),
                           (T.PAD_ID, vocab.pad_id)):
                if v is not None:
                    kv.append(KV(key, v, VT.UINT32))
            kv += [
                KV(T.ADD_BOS, vocab.add_bos, VT.BOOL),
                KV(T.ADD_EOS, vocab.add_eos, VT.BOOL),
                # always written: without it llama.cpp's SentencePiece default (true) puts "▁" after every special
                KV(T.ADD_PREFIX, vocab.add_space_prefix, VT.BOOL),
            ]
            if vocab.chat_template is not None:
                kv.append(KV(T.CHAT_TEMPLATE, vocab.chat_template, VT.STRING))
            if vocab.hf_json is not None:
                kv.append(KV(T.HF_JSON, vocab.hf_json, VT.STRING))
        return kv


# ---- vision ---------------------------------------------------------------------------------------------
@ModelBase.register(*ARCHITECTURES)
class PaddleOcrVlVisionModel(_PaddleOcrVl, MmprojModel):
    """SigLIP-NaViT encoder + LayerNorm / 2x2 merge / MLP projector -> ``clip`` / ``paddleocr``."""

    @classmethod
    def owns_name(cls, name: str) -> bool:
        return name.startswith(("visual.", "mlp_AR.", "model.visual.", "model.projector."))

    def drops(self, name: str) -> bool:
        """Unused by the model (transformers ignores them on load): the NaViT packing table and SigLIP's
        pooling head."""
        return self.owns(name) and ("packing_position_embedding" in name or "vision_model.head." in name)

    def counts(self) -> list[Count]:
        vp = self.prefixes[1]
        return [Count("vision_config.num_hidden_layers", self.cfg.vision.num_hidden_layers,
                      vp.replace(".", r"\.") + r"encoder\.layers\.(\d+)\.", f"vision layers ({vp}encoder.layers.N.*)")]

    def resolve(self) -> None:
        cfg = self.cfg
        where = cfg.preprocessor_path or cfg.path.parent / "preprocessor_config.json"
        if cfg.preprocessor_path is None:
            raise ConversionError(where, "preprocessor_config.json not found: the vision file needs its min_pixels "
                                         "and max_pixels")
        for key in ("min_pixels", "max_pixels"):
            if getattr(cfg, key) is None:
                raise ConversionError(where, f"missing \"{key}\" (needed for the vision file)")

    def expectations(self) -> list[Expect]:
        v, cfg = self.cfg.vision, self.cfg
        _, vp, pp = self.prefixes
        W, I, p, g = v.hidden_size, v.intermediate_size, v.patch_size, v.position_grid
        Wm = W * v.spatial_merge_size ** 2
        Ht = cfg.text.hidden_size
        E = expect
        emb = vp + "embeddings."
        out = [
            E(tname(MT.V_ENC_EMBD_PATCH, suffix=".weight"), emb + "patch_embedding.weight", (W, 3, p, p), conv=True),
            E(tname(MT.V_ENC_EMBD_PATCH, suffix=".bias"), emb + "patch_embedding.bias", (W,), f32=True),
            E(tname(MT.V_ENC_EMBD_POS, suffix=".weight"), emb + "position_embedding.weight", (g * g, W), f32=True),
        ]
        for i in range(v.num_hidden_layers):
            b = f"{vp}encoder.layers.{i}."
            for proj, key in (("q_proj", MT.V_ENC_ATTN_Q), ("k_proj", MT.V_ENC_ATTN_K), ("v_proj", MT.V_ENC_ATTN_V),
                              ("out_proj", MT.V_ENC_ATTN_O)):
                out += [E(tname(key, i, ".weight"), f"{b}self_attn.{proj}.weight", (W, W)),
                        E(tname(key, i, ".bias"), f"{b}self_attn.{proj}.bias", (W,), f32=True)]
            for norm, key in (("layer_norm1", MT.V_ENC_INPUT_NORM), ("layer_norm2", MT.V_ENC_POST_ATTN_NORM)):
                out += [E(tname(key, i, ".weight"), f"{b}{norm}.weight", (W,), f32=True),
                        E(tname(key, i, ".bias"), f"{b}{norm}.bias", (W,), f32=True)]
            out += [
                E(tname(MT.V_ENC_FFN_UP, i, ".weight"), b + "mlp.fc1.weight", (I, W)),
                E(tname(MT.V_ENC_FFN_UP, i, ".bias"), b + "mlp.fc1.bias", (I,), f32=True),
                E(tname(MT.V_ENC_FFN_DOWN, i, ".weight"), b + "mlp.fc2.weight", (W, I)),
                E(tname(MT.V_ENC_FFN_DOWN, i, ".bias"), b + "mlp.fc2.bias", (W,), f32=True),
            ]
        out += [
            E(tname(MT.V_POST_NORM, suffix=".weight"), vp + "post_layernorm.weight", (W,), f32=True),
            E(tname(MT.V_POST_NORM, suffix=".bias"), vp + "post_layernorm.bias", (W,), f32=True),
            E(tname(MT.V_MM_INP_NORM, suffix=".weight"), pp + "pre_norm.weight", (W,), f32=True),
            E(tname(MT.V_MM_INP_NORM, suffix=".bias"), pp + "pre_norm.bias", (W,), f32=True),
            E(tname(MT.V_MMPROJ, 1, ".weight"), pp + "linear_1.weight", (Wm, Wm)),
            E(tname(MT.V_MMPROJ, 1, ".bias"), pp + "linear_1.bias", (Wm,), f32=True),
            E(tname(MT.V_MMPROJ, 2, ".weight"), pp + "linear_2.weight", (Ht, Wm)),
            E(tname(MT.V_MMPROJ, 2, ".bias"), pp + "linear_2.bias", (Ht,), f32=True),
        ]
        return out

    def kv_pairs(self, *, chosen: OutType, **_: Any) -> list[KV]:
        v, cfg = self.cfg.vision, self.cfg
        C, CV = Keys.Clip, Keys.ClipVision
        return self._general(chosen) + [
            KV(C.HAS_VISION_ENCODER, True, VT.BOOL),
            KV(C.PROJECTOR_TYPE, PROJECTOR_TYPE, VT.STRING),
            KV(CV.USE_GELU, True, VT.BOOL),
            KV(CV.PROJECTION_DIM, cfg.text.hidden_size, VT.UINT32),
            # llama.cpp writes the largest square side max_pixels allows, not the config's 384
            KV(CV.IMAGE_SIZE, int(math.sqrt(cfg.max_pixels)), VT.UINT32),
            KV(CV.PATCH_SIZE, v.patch_size, VT.UINT32),
            KV(CV.EMBEDDING_LENGTH, v.hidden_size, VT.UINT32),
            KV(CV.FEED_FORWARD_LENGTH, v.intermediate_size, VT.UINT32),
            KV(CV.BLOCK_COUNT, v.num_hidden_layers, VT.UINT32),
            KV(CV.Attention.HEAD_COUNT, v.num_attention_heads, VT.UINT32),
            KV(CV.Attention.LAYERNORM_EPS, v.layer_norm_eps, VT.FLOAT32),
            KV(CV.IMAGE_MEAN, cfg.image_mean, VT.ARRAY, VT.FLOAT32),
            KV(CV.IMAGE_STD, cfg.image_std, VT.ARRAY, VT.FLOAT32),
            KV(CV.IMAGE_MIN_PIXELS, cfg.min_pixels, VT.UINT32),
            KV(CV.IMAGE_MAX_PIXELS, cfg.max_pixels, VT.UINT32),
            # ours: what llama.cpp hard-codes
            KV(KEY_VISION_MERGE_SIZE, v.spatial_merge_size, VT.UINT32),
            KV(KEY_VISION_ROPE_FREQ_BASE, v.rope_theta, VT.FLOAT32),
            KV(KEY_VISION_POSITION_GRID, v.position_grid, VT.UINT32),
            KV(KEY_PROJECTOR_EPS, PROJECTOR_EPS, VT.FLOAT32),
        ]


__all__ = ["FAMILY", "ARCHITECTURES", "PaddleOcrVlConfig", "PaddleTextConfig", "PaddleVisionConfig",
           "PaddleOcrVlTextModel", "PaddleOcrVlVisionModel", "KEY_TEXT_IMAGE_TOKEN_ID", "KEY_TEXT_IMAGE_START_ID",
           "KEY_TEXT_IMAGE_END_ID", "KEY_VISION_MERGE_SIZE", "KEY_VISION_ROPE_FREQ_BASE", "KEY_VISION_POSITION_GRID",
           "KEY_PROJECTOR_EPS"]
