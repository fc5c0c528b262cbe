"""DeepSeek-OCR v1: config, checkpoint names -> llama.cpp's GGUF names, shapes, types and KV pairs.

Config layouts:

* the original checkpoint layout (``deepseek-ai/DeepSeek-OCR``, ``DeepseekOCRForCausalLM``):
  ``language_config`` (text fields also repeated at top level), ``vision_config.width.{sam_vit_b,
  clip-l-14-224}``, ``projector_config``;
* the layout transformers' ``save_pretrained`` writes for ``UnlimitedOcrForConditionalGeneration``:
  ``text_config``, ``vision_config.{sam_config, encoder_config}``.

Values the original layout does not state (SAM patch/window/MLP width, neck channels, CLIP MLP width,
...) are resolved from tensor shapes.

Two parts, as in llama.cpp's converter: ``DeepseekOcrTextModel`` (``deepseek2-ocr``: the DeepSeek-V2 MoE
decoder, reused as is by DeepSeek-OCR-2) and ``DeepseekOcrVisionModel`` (``clip`` with projector
``deepseekocr``: SAM ViT-B -> CLIP-L -> linear projector).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
from gguf import GGUFValueType as VT
from gguf import MODEL_TENSOR as MT
from gguf import Keys

from ..base import KV, Count, Expect, MmprojModel, ModelBase, ModelConfig, TextModel, expect, tname
from ..config import Getter
from ..errors import ConversionError
from ..quant_policy import OutType
from ..tokenizer import load_vocab
from . import sam as sam_part
from .sam import SamConfig

FAMILY = "DeepSeek-OCR v1"
DEFAULT_IMAGE_TOKEN_ID = 128815
MAX_VOCAB = 1 << 24  # a bound for --vocab-only without weights; with them, the embedding's rows bound it

# ---- our own keys (values llama.cpp hard-codes; see convert/README_SECTION.md) -------------------------
KEY_TEXT_ROPE_DIMS = "tilepass.text.rope_dimension_count"
KEY_TEXT_EXPERT_WEIGHTS_SCALE = "tilepass.text.expert_weights_scale"
KEY_TEXT_EXPERT_WEIGHTS_NORM = "tilepass.text.expert_weights_norm"
KEY_TEXT_IMAGE_TOKEN_ID = "tilepass.text.image_token_id"
KEY_CLIP_EPS = "tilepass.clip.layer_norm_epsilon"
KEY_CLIP_FFN = "tilepass.clip.feed_forward_length"
KEY_TILE_SIZE = "tilepass.preproc.tile_size"
KEY_PAD_COLOR = "tilepass.preproc.pad_color"

# HF architectures this family knows (-> the layout their config uses)
ARCHITECTURES_ORIGINAL = ("DeepseekOCRForCausalLM",)
ARCHITECTURES_HF = ("UnlimitedOcrForConditionalGeneration", "UnlimitedOCRForCausalLM")


# ---- config ---------------------------------------------------------------------------------------------
@dataclass
class TextConfig:
    """The DeepSeek-V2 MoE decoder (shared by DeepSeek-OCR v1 and OCR-2)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    first_k_dense_replace: int
    n_routed_experts: int
    num_experts_per_tok: int
    n_shared_experts: int
    moe_intermediate_size: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    n_group: int = 1
    topk_group: int = 1
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = False
    tie_word_embeddings: bool = False
    bos_token_id: int | None = 0
    eos_token_id: int | None = 1
    pad_token_id: int | None = None


@dataclass
class ClipConfig:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int = 224
    patch_size: int = 14
    intermediate_size: int | None = None
    layer_norm_eps: float = 1e-5


@dataclass(kw_only=True)
class OcrConfig(ModelConfig):
    text: TextConfig
    sam: SamConfig
    clip: ClipConfig
    projector_input_dim: int | None
    projector_output_dim: int | None
    tile_size: int = 640
    pad_color: tuple[int, int, int] = (127, 127, 127)
    min_tiles: int = 2
    max_tiles: int = 9


def _text_common(g: Getter, first_k_dense: int, rope_theta: float) -> TextConfig:
    hidden = g.int("hidden_size", minimum=1)
    heads = g.int("num_attention_heads", minimum=1)
    kv_heads = g.int("num_key_value_heads", heads, minimum=1)
    if hidden % heads:
        raise ConversionError(g.path, f"\"{g._key('hidden_size')}\" {hidden} is not a multiple of "
                                      f"num_attention_heads {heads}")
    head_dim = g.int("head_dim", hidden // heads, minimum=1)
    n_layers = g.int("num_hidden_layers", minimum=1)
    n_experts = g.int("n_routed_experts", minimum=1)
    used = g.int("num_experts_per_tok", minimum=1)
    if used > n_experts:
        raise ConversionError(g.path, f"num_experts_per_tok {used} exceeds n_routed_experts {n_experts}")
    if not 0 <= first_k_dense <= n_layers:
        raise ConversionError(g.path, f"first_k_dense_replace {first_k_dense} is outside 0..{n_layers}")
    return TextConfig(
        vocab_size=g.int("vocab_size", minimum=1),
        hidden_size=hidden,
        intermediate_size=g.int("intermediate_size", minimum=1),
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        first_k_dense_replace=first_k_dense,
        n_routed_experts=n_experts,
        num_experts_per_tok=used,
        n_shared_experts=g.int("n_shared_experts", 0),
        moe_intermediate_size=g.int("moe_intermediate_size", minimum=1),
        max_position_embeddings=g.int("max_position_embeddings", 8192, minimum=1),
        rms_norm_eps=g.float("rms_norm_eps", 1e-6),
        rope_theta=rope_theta,
        n_group=g.int("n_group", 1, minimum=1),
        topk_group=g.int("topk_group", 1, minimum=1),
        routed_scaling_factor=g.float("routed_scaling_factor", 1.0),
        norm_topk_prob=g.bool("norm_topk_prob", False),
        tie_word_embeddings=g.bool("tie_word_embeddings", False),
        bos_token_id=g.int("bos_token_id", 0),
        eos_token_id=g.int("eos_token_id", 1) if not isinstance(g.obj.get("eos_token_id"), list)
        else g.obj["eos_token_id"][0],
        pad_token_id=g.int("pad_token_id", None),
    )


def _check_no_mla(g: Getter, family: str) -> None:
    if g.bool("use_mla", False) or g.has("kv_lora_rank") or g.has("q_lora_rank"):
        raise ConversionError(g.path, f"multi-head latent attention (use_mla / kv_lora_rank / q_lora_rank) "
                                      f"is not {family} and is not supported")


def read_text_original(top: Getter, family: str = FAMILY) -> TextConfig:
    """The decoder of the original layout: ``language_config`` (or the top level)."""
    lang = top.sub("language_config") if top.has("language_config") else top
    _check_no_mla(lang, family)
    return _text_common(lang, lang.int("first_k_dense_replace", 1), lang.float("rope_theta", 10000.0))


def read_text_hf(top: Getter, family: str = FAMILY) -> TextConfig:
    """The decoder of transformers' layout: ``text_config`` (``mlp_layer_types``, ``rope_parameters``)."""
    path = top.path
    t = top.sub("text_config")
    _check_no_mla(t, family)
    n_layers = t.int("num_hidden_layers", minimum=1)
    if t.has("mlp_layer_types"):
        kinds = t.obj["mlp_layer_types"]
        if not isinstance(kinds, list) or len(kinds) != n_layers or any(k not in ("dense", "sparse") for k in kinds):
            raise ConversionError(path, f"\"text_config.mlp_layer_types\" must list \"dense\"/\"sparse\" for each of "
                                        f"the {n_layers} layers, got {kinds!r}")
        k = 0
        while k < n_layers and kinds[k] == "dense":
            k += 1
        if any(x == "dense" for x in kinds[k:]):
            raise ConversionError(path, "\"text_config.mlp_layer_types\": dense layers after a sparse one are not "
                                        "supported (llama.cpp only has leading dense blocks)")
        first_k = k
    else:
        first_k = t.int("first_k_dense_replace", 1)
    text = _text_common(t, first_k, t.rope_theta(10000.0))
    if not t.bool("tie_word_embeddings", False) and top.bool("tie_word_embeddings", False):
        text.tie_word_embeddings = True
    return text


def read_projector(top: Getter) -> tuple[int | None, int | None]:
    """``projector_config`` of the original layout: (input_dim, n_embed), where stated."""
    if not top.has("projector_config"):
        return None, None
    p = top.sub("projector_config")
    ptype = p.obj.get("projector_type", "linear")
    if ptype != "linear":
        raise ConversionError(top.path, f"projector_config.projector_type {ptype!r} is not supported (only linear)")
    return p.int("input_dim", None, minimum=1), p.int("n_embed", None, minimum=1)


def _parse_original(path: Path, top: Getter) -> OcrConfig:
    text = read_text_original(top)
    vis = top.sub("vision_config")
    width = vis.sub("width")
    if not width.has("sam_vit_b"):
        raise ConversionError(path, "missing \"vision_config.width.sam_vit_b\" (not a DeepSeek-OCR v1 vision tower)")
    if not width.has("clip-l-14-224"):
        raise ConversionError(path, "missing \"vision_config.width.clip-l-14-224\"")
    c = width.sub("clip-l-14-224")
    sam = sam_part.read_original(width.sub("sam_vit_b"), vis.size("image_size", 1024), [512, 1024])
    clip = ClipConfig(
        hidden_size=c.int("width", minimum=1),
        num_hidden_layers=c.int("layers", minimum=1),
        num_attention_heads=c.int("heads", minimum=1),
        image_size=c.size("image_size", 224),
        patch_size=c.size("patch_size", 14),
    )
    proj_in, proj_out = read_projector(top)
    return OcrConfig(layout="original", architecture="", path=path, text=text, sam=sam, clip=clip,
                     projector_input_dim=proj_in, projector_output_dim=proj_out,
                     image_token_id=top.int("image_token_id", None))


def _parse_hf(path: Path, top: Getter) -> OcrConfig:
    text = read_text_hf(top)
    vis = top.sub("vision_config")
    sam = sam_part.read_hf(vis.sub("sam_config"), [512, 1024])
    c = vis.sub("encoder_config")
    clip = ClipConfig(
        hidden_size=c.int("hidden_size", 1024, minimum=1),
        num_hidden_layers=c.int("num_hidden_layers", 24, minimum=1),
        num_attention_heads=c.int("num_attention_heads", 16, minimum=1),
        image_size=c.size("image_size", 224),
        patch_size=c.size("patch_size", 14),
        intermediate_size=c.int("intermediate_size", 4096, minimum=1),
        layer_norm_eps=c.float("layer_norm_eps", 1e-5),
    )
    return OcrConfig(layout="hf", architecture="", path=path, text=text, sam=sam, clip=clip,
                     projector_input_dim=None, projector_output_dim=None,
                     image_token_id=top.int("image_token_id", None))


class _DeepseekOcr(ModelBase):
    """The family: its config reader."""

    family = FAMILY

    @classmethod
    def guess_architecture(cls, data: dict[str, Any]) -> str | None:
        if data.get("model_type") == "unlimited_ocr":
            return "UnlimitedOcrForConditionalGeneration"
        vis = data.get("vision_config")
        if "language_config" in data and isinstance(vis, dict) and vis.get("model_name") != "deepencoderv2" \
                and isinstance(vis.get("width") or {}, dict) and "qwen2-0-5b" not in (vis.get("width") or {}):
            return "DeepseekOCRForCausalLM"  # (DeepSeek-VL2's width is a number)
        return None

    @classmethod
    def read_config(cls, path: Path, top: Getter, arch: str) -> OcrConfig:
        return _parse_original(path, top) if arch in ARCHITECTURES_ORIGINAL else _parse_hf(path, top)


# ---- text -----------------------------------------------------------------------------------------------
@ModelBase.register(*ARCHITECTURES_ORIGINAL, *ARCHITECTURES_HF)
class DeepseekOcrTextModel(_DeepseekOcr, TextModel):
    """The DeepSeek-V2 MoE decoder -> ``deepseek2-ocr`` (DeepSeek-OCR-2 subclasses it unchanged)."""

    gguf_arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.DEEPSEEK2OCR]

    @classmethod
    def owns_name(cls, name: str) -> bool:
        return name.startswith(("lm_head.", "model.embed_tokens.", "model.layers.", "model.norm."))

    @classmethod
    def load_vocab(cls, model_dir: Path, cfg: Any) -> Any:
        t = cfg.text
        if t.vocab_size > MAX_VOCAB:  # the token list is built in memory
            raise ConversionError(cfg.path, f"\"vocab_size\" {t.vocab_size} is implausible (more than {MAX_VOCAB})")
        vocab = load_vocab(model_dir, t.vocab_size, bos_id=t.bos_token_id, eos_id=t.eos_token_id,
                           pad_id=t.pad_token_id)
        if cfg.image_token_id is None:
            cfg.image_token_id = vocab.special.get("<image>", DEFAULT_IMAGE_TOKEN_ID)
        return vocab

    def counts(self) -> list[Count]:
        t = self.cfg.text
        out = [Count("num_hidden_layers", t.num_hidden_layers, r"model\.layers\.(\d+)\.",
                     "layers (model.layers.N.*)")]
        if t.num_hidden_layers > t.first_k_dense_replace:
            out.append(Count("n_routed_experts", t.n_routed_experts, r"model\.layers\.\d+\.mlp\.experts\.(\d+)\.",
                             "experts (model.layers.L.mlp.experts.N.*)"))
        return out

    def check_counts(self) -> None:
        super().check_counts()
        # the tokenizer list is as long as vocab_size: bound it by the embedding before it is built
        rows = self._dim("model.embed_tokens.weight", 0)
        if self.cfg.text.vocab_size > rows:
            raise ConversionError(self.cfg.path, f"\"vocab_size\" is {self.cfg.text.vocab_size} but "
                                                 f"model.embed_tokens.weight has {rows} rows ({self.family})")

    def expectations(self) -> list[Expect]:
        t = self.cfg.text
        H, V = t.hidden_size, t.vocab_size
        q_out = t.num_attention_heads * t.head_dim
        kv_out = t.num_key_value_heads * t.head_dim
        E, Im = t.n_routed_experts, t.moe_intermediate_size
        Ish = Im * t.n_shared_experts
        X = Expect
        out: list[Expect] = [X(tname(MT.TOKEN_EMBD, suffix=".weight"), ["model.embed_tokens.weight"], (V, H), (V, H))]
        for i in range(t.num_hidden_layers):
            p = f"model.layers.{i}."
            out += [
                X(tname(MT.ATTN_NORM, i, ".weight"), [p + "input_layernorm.weight"], (H,), (H,), True),
                X(tname(MT.ATTN_Q, i, ".weight"), [p + "self_attn.q_proj.weight"], (q_out, H), (q_out, H)),
                X(tname(MT.ATTN_K, i, ".weight"), [p + "self_attn.k_proj.weight"], (kv_out, H), (kv_out, H)),
                X(tname(MT.ATTN_V, i, ".weight"), [p + "self_attn.v_proj.weight"], (kv_out, H), (kv_out, H)),
                X(tname(MT.ATTN_OUT, i, ".weight"), [p + "self_attn.o_proj.weight"], (H, q_out), (H, q_out)),
                X(tname(MT.FFN_NORM, i, ".weight"), [p + "post_attention_layernorm.weight"], (H,), (H,), True),
            ]
            if i < t.first_k_dense_replace:
                I = t.intermediate_size
                out += [
                    X(tname(MT.FFN_GATE, i, ".weight"), [p + "mlp.gate_proj.weight"], (I, H), (I, H)),
                    X(tname(MT.FFN_UP, i, ".weight"), [p + "mlp.up_proj.weight"], (I, H), (I, H)),
                    X(tname(MT.FFN_DOWN, i, ".weight"), [p + "mlp.down_proj.weight"], (H, I), (H, I)),
                ]
                continue
            out.append(X(tname(MT.FFN_GATE_INP, i, ".weight"), [p + "mlp.gate.weight"], (E, H), (E, H), True))
            for proj, key, shp in (("gate_proj", MT.FFN_GATE_EXP, (Im, H)), ("up_proj", MT.FFN_UP_EXP, (Im, H)),
                                   ("down_proj", MT.FFN_DOWN_EXP, (H, Im))):
                srcs = [f"{p}mlp.experts.{e}.{proj}.weight" for e in range(E)]
                out.append(X(tname(key, i, ".weight"), srcs, shp, (E, *shp)))
            if t.n_shared_experts:
                out += [
                    X(tname(MT.FFN_GATE_SHEXP, i, ".weight"), [p + "mlp.shared_experts.gate_proj.weight"],
                      (Ish, H), (Ish, H)),
                    X(tname(MT.FFN_UP_SHEXP, i, ".weight"), [p + "mlp.shared_experts.up_proj.weight"],
                      (Ish, H), (Ish, H)),
                    X(tname(MT.FFN_DOWN_SHEXP, i, ".weight"), [p + "mlp.shared_experts.down_proj.weight"],
                      (H, Ish), (H, Ish)),
                ]
        out.append(X(tname(MT.OUTPUT_NORM, suffix=".weight"), ["model.norm.weight"], (H,), (H,), True))
        if not (t.tie_word_embeddings and "lm_head.weight" not in self.ckpt):
            out.append(X(tname(MT.OUTPUT, suffix=".weight"), ["lm_head.weight"], (V, H), (V, H)))
        return out

    def kv_pairs(self, *, chosen: OutType, vocab=None, **_: Any) -> list[KV]:
        t = self.cfg.text
        a = self.gguf_arch
        L, A, R = Keys.LLM, Keys.Attention, Keys.Rope
        kv = self._general(chosen) + [
            KV(L.BLOCK_COUNT.format(arch=a), t.num_hidden_layers, VT.UINT32),
            KV(L.CONTEXT_LENGTH.format(arch=a), t.max_position_embeddings, VT.UINT32),
            KV(L.EMBEDDING_LENGTH.format(arch=a), t.hidden_size, VT.UINT32),
            KV(L.FEED_FORWARD_LENGTH.format(arch=a), t.intermediate_size, VT.UINT32),
            KV(A.HEAD_COUNT.format(arch=a), t.num_attention_heads, VT.UINT32),
            KV(A.HEAD_COUNT_KV.format(arch=a), t.num_key_value_heads, VT.UINT32),
            KV(A.LAYERNORM_RMS_EPS.format(arch=a), t.rms_norm_eps, VT.FLOAT32),
            KV(R.FREQ_BASE.format(arch=a), t.rope_theta, VT.FLOAT32),
            KV(R.DIMENSION_COUNT.format(arch=a), 0, VT.UINT32),  # llama.cpp's value (the graph ropes all dims)
            KV(L.LEADING_DENSE_BLOCK_COUNT.format(arch=a), t.first_k_dense_replace, VT.UINT32),
            KV(L.VOCAB_SIZE.format(arch=a), t.vocab_size, VT.UINT32),
            KV(L.EXPERT_COUNT.format(arch=a), t.n_routed_experts, VT.UINT32),
            KV(L.EXPERT_USED_COUNT.format(arch=a), t.num_experts_per_tok, VT.UINT32),
            KV(L.EXPERT_SHARED_COUNT.format(arch=a), t.n_shared_experts, VT.UINT32),
            KV(L.EXPERT_FEED_FORWARD_LENGTH.format(arch=a), t.moe_intermediate_size, VT.UINT32),
            KV(L.EXPERT_GROUP_COUNT.format(arch=a), t.n_group, VT.UINT32),
            KV(L.EXPERT_GROUP_USED_COUNT.format(arch=a), t.topk_group, VT.UINT32),
            # ours: the true values behind llama.cpp's defaults
            KV(KEY_TEXT_ROPE_DIMS, t.head_dim, VT.UINT32),
            KV(KEY_TEXT_EXPERT_WEIGHTS_SCALE, t.routed_scaling_factor, VT.FLOAT32),
            KV(KEY_TEXT_EXPERT_WEIGHTS_NORM, t.norm_topk_prob, VT.BOOL),
            KV(KEY_TEXT_IMAGE_TOKEN_ID, self.cfg.image_token_id, VT.UINT32),
        ]
        if vocab is not None:
            T = Keys.Tokenizer
            kv += [
                KV(T.MODEL, "gpt2", VT.STRING),
                KV(T.PRE, "deepseek-v3", VT.STRING),
                KV(T.LIST, vocab.tokens, VT.ARRAY, VT.STRING),
                KV(T.TOKEN_TYPE, vocab.token_types, VT.ARRAY, VT.INT32),
                KV(T.MERGES, vocab.merges, VT.ARRAY, VT.STRING),
            ]
            for key, v in ((T.BOS_ID, vocab.bos_id), (T.EOS_ID, vocab.eos_id), (T.PAD_ID, vocab.pad_id)):
                if v is not None:
                    kv.append(KV(key, v, VT.UINT32))
            kv += [
                KV(T.ADD_BOS, vocab.add_bos, VT.BOOL),
                KV(T.ADD_EOS, vocab.add_eos, VT.BOOL),
                KV(T.CHAT_TEMPLATE, vocab.chat_template, VT.STRING),
                KV(T.HF_JSON, vocab.hf_json, VT.STRING),
            ]
        return kv


# ---- vision ---------------------------------------------------------------------------------------------
@ModelBase.register(*ARCHITECTURES_ORIGINAL, *ARCHITECTURES_HF)
class DeepseekOcrVisionModel(_DeepseekOcr, MmprojModel):
    """SAM ViT-B + CLIP-L + linear projector -> ``clip`` / ``deepseekocr`` (the mmproj file)."""

    _DROP = ("model.vision_model.embeddings.patch_embedding.weight", "model.vision_model.embeddings.position_ids")

    @classmethod
    def owns_name(cls, name: str) -> bool:
        return name.startswith(("model.sam_model.", "model.vision_model.", "model.projector.")) or name in (
            "model.image_newline", "model.view_seperator")

    def drops(self, name: str) -> bool:
        return name in self._DROP

    def counts(self) -> list[Count]:
        return sam_part.counts(self.cfg.sam) + [
            Count("clip num_hidden_layers", self.cfg.clip.num_hidden_layers,
                  r"model\.vision_model\.transformer\.layers\.(\d+)\.",
                  "CLIP layers (model.vision_model.transformer.layers.N.*)")]

    def resolve(self) -> None:
        s, c, cfg = self.cfg.sam, self.cfg.clip, self.cfg
        sam_part.resolve(self, s, cfg.path)
        if c.intermediate_size is None:
            c.intermediate_size = self._dim("model.vision_model.transformer.layers.0.mlp.fc1.weight", 0)
        if c.hidden_size % c.num_attention_heads:
            raise ConversionError(cfg.path, f"CLIP width {c.hidden_size} is not a multiple of heads "
                                            f"{c.num_attention_heads}")
        if c.hidden_size != s.downsample_channels[-1]:
            raise ConversionError(cfg.path, f"CLIP width {c.hidden_size} must equal SAM's last downsample width "
                                            f"{s.downsample_channels[-1]} (SAM features replace CLIP's patches)")
        want_in = c.hidden_size + s.downsample_channels[-1]
        if cfg.projector_input_dim is not None and cfg.projector_input_dim != want_in:
            raise ConversionError(cfg.path, f"projector_config.input_dim {cfg.projector_input_dim} != CLIP width + "
                                            f"SAM output width = {want_in}")
        if cfg.projector_output_dim is not None and cfg.projector_output_dim != self.cfg.text.hidden_size:
            raise ConversionError(cfg.path, f"projector_config.n_embed {cfg.projector_output_dim} != text "
                                            f"hidden_size {self.cfg.text.hidden_size}")
        cfg.projector_input_dim, cfg.projector_output_dim = want_in, self.cfg.text.hidden_size

    def expectations(self) -> list[Expect]:
        c, cfg = self.cfg.clip, self.cfg
        Wc, Ic = c.hidden_size, c.intermediate_size
        n_pos = (c.image_size // c.patch_size) ** 2 + 1
        Ht = cfg.projector_output_dim
        E = expect
        out = sam_part.expectations(self.cfg.sam)
        vp = "model.vision_model."
        out += [
            E(tname(MT.V_ENC_EMBD_CLS), vp + "embeddings.class_embedding", (Wc,), f32=True),
            E(tname(MT.V_ENC_EMBD_POS, suffix=".weight"), vp + "embeddings.position_embedding.weight", (n_pos, Wc),
              f32=True),
            E(tname(MT.V_PRE_NORM, suffix=".weight"), vp + "pre_layrnorm.weight", (Wc,), f32=True),
            E(tname(MT.V_PRE_NORM, suffix=".bias"), vp + "pre_layrnorm.bias", (Wc,), f32=True),
        ]
        for i in range(c.num_hidden_layers):
            b = f"{vp}transformer.layers.{i}."
            out += [
                E(tname(MT.V_ENC_INPUT_NORM, i, ".weight"), b + "layer_norm1.weight", (Wc,), f32=True),
                E(tname(MT.V_ENC_INPUT_NORM, i, ".bias"), b + "layer_norm1.bias", (Wc,), f32=True),
                E(tname(MT.V_ENC_ATTN_QKV, i, ".weight"), b + "self_attn.qkv_proj.weight", (3 * Wc, Wc)),
                E(tname(MT.V_ENC_ATTN_QKV, i, ".bias"), b + "self_attn.qkv_proj.bias", (3 * Wc,), f32=True),
                E(tname(MT.V_ENC_ATTN_O, i, ".weight"), b + "self_attn.out_proj.weight", (Wc, Wc)),
                E(tname(MT.V_ENC_ATTN_O, i, ".bias"), b + "self_attn.out_proj.bias", (Wc,), f32=True),
                E(tname(MT.V_ENC_POST_ATTN_NORM, i, ".weight"), b + "layer_norm2.weight", (Wc,), f32=True),
                E(tname(MT.V_ENC_POST_ATTN_NORM, i, ".bias"), b + "layer_norm2.bias", (Wc,), f32=True),
                E(tname(MT.V_ENC_FFN_UP, i, ".weight"), b + "mlp.fc1.weight", (Ic, Wc)),
                E(tname(MT.V_ENC_FFN_UP, i, ".bias"), b + "mlp.fc1.bias", (Ic,), f32=True),
                E(tname(MT.V_ENC_FFN_DOWN, i, ".weight"), b + "mlp.fc2.weight", (Wc, Ic)),
                E(tname(MT.V_ENC_FFN_DOWN, i, ".bias"), b + "mlp.fc2.bias", (Wc,), f32=True),
            ]
        Win = cfg.projector_input_dim
        out += [
            E(tname(MT.V_MMPROJ_FC, suffix=".weight"), "model.projector.layers.weight", (Ht, Win)),
            E(tname(MT.V_MMPROJ_FC, suffix=".bias"), "model.projector.layers.bias", (Ht,), f32=True),
            E(tname(MT.V_ENC_EMBD_IMGNL), "model.image_newline", (Ht,), f32=True),
            E(tname(MT.V_ENC_EMBD_VSEP), "model.view_seperator", (Ht,), (1, Ht), f32=True),
        ]
        return out

    def kv_pairs(self, *, chosen: OutType, **_: Any) -> list[KV]:
        s, c, cfg = self.cfg.sam, self.cfg.clip, self.cfg
        C, CV = Keys.Clip, Keys.ClipVision
        return self._general(chosen) + [
            KV(C.HAS_VISION_ENCODER, True, VT.BOOL),
            KV(C.PROJECTOR_TYPE, gguf.VisionProjectorType.DEEPSEEKOCR, VT.STRING),
            KV(CV.USE_GELU, True, VT.BOOL),
            KV(CV.PROJECTION_DIM, cfg.projector_output_dim, VT.UINT32),
            KV(CV.IMAGE_SIZE, c.image_size, VT.UINT32),
            KV(CV.PATCH_SIZE, c.patch_size, VT.UINT32),
            KV(CV.EMBEDDING_LENGTH, c.hidden_size, VT.UINT32),
            KV(CV.FEED_FORWARD_LENGTH, c.num_attention_heads * 4, VT.UINT32),  # llama.cpp's (unused) value
            KV(CV.BLOCK_COUNT, c.num_hidden_layers, VT.UINT32),
            KV(CV.Attention.HEAD_COUNT, c.num_attention_heads, VT.UINT32),
            KV(CV.Attention.LAYERNORM_EPS, s.layer_norm_eps, VT.FLOAT32),  # llama.cpp writes SAM's 1e-6 here
            KV(CV.IMAGE_MEAN, cfg.image_mean, VT.ARRAY, VT.FLOAT32),
            KV(CV.IMAGE_STD, cfg.image_std, VT.ARRAY, VT.FLOAT32),
            KV(CV.Projector.SCALE_FACTOR, 1, VT.UINT32),
            KV(CV.WINDOW_SIZE, s.window_size, VT.UINT32),
            KV(CV.PREPROC_MIN_TILES, cfg.min_tiles, VT.UINT32),
            KV(CV.PREPROC_MAX_TILES, cfg.max_tiles, VT.UINT32),
            *sam_part.llamacpp_kv(s),
            # ours: what llama.cpp hard-codes
            *sam_part.own_kv(s),
            KV(KEY_CLIP_EPS, c.layer_norm_eps, VT.FLOAT32),
            KV(KEY_CLIP_FFN, c.intermediate_size, VT.UINT32),
            KV(KEY_TILE_SIZE, cfg.tile_size, VT.UINT32),
            KV(KEY_PAD_COLOR, list(cfg.pad_color), VT.ARRAY, VT.INT32),
        ]
