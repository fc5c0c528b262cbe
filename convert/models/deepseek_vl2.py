"""DeepSeek-VL2 (tiny, small, base): config, checkpoint names -> GGUF names, shapes, types and KV pairs
(../shared/spec/deepseek-vl2.md; the README's "DeepSeek-VL2 keys" lists every key and tensor).

llama.cpp has no DeepSeek-VL2 support; the files follow its conventions where they exist:

* the text file is llama.cpp's DeepSeek-V2 decoder. deepseek-vl2-tiny (``use_mla`` false: plain multi-head
  attention, exactly DeepSeek-OCR's decoder) is written as ``deepseek2-ocr`` with DeepSeek-OCR v1's tensor
  names and keys (``models/deepseek_ocr.py``'s text part); small and base (multi-head latent attention) as
  ``deepseek2`` the way llama.cpp's current converter writes DeepSeek-V2 (``conversion/deepseek.py``
  ``DeepseekV2Model``): ``attn_q`` or ``attn_q_a`` / ``attn_q_a_norm`` / ``attn_q_b``, ``attn_kv_a_mqa``,
  ``attn_kv_a_norm``, and ``kv_b_proj`` split per head into ``attn_k_b`` (transposed: [heads, kv_lora, nope])
  and ``attn_v_b`` ([heads, v, kv_lora]) - no ``attn_kv_b`` ("only old legacy GGUF files" have it);
  ``head_count_kv`` 1, ``key_length`` / ``value_length`` = kv_lora + rope / kv_lora, ``key_length_mla`` /
  ``value_length_mla`` = nope + rope / v; the sigmoid ``noaux_tc`` gate's ``e_score_correction_bias`` as
  ``blk.N.exp_probs_b.bias``;
* the vision file is ``clip`` with our projector type ``deepseekvl2``: the SigLIP tower in llama.cpp's generic
  vision names (``attn_qkv`` kept fused), the two projector linears as ``mm.0`` / ``mm.2``, ``v.image_newline``
  and ``v.view_seperator``; SigLIP's unused ``attn_pool`` head is dropped. What the C side needs beyond
  llama.cpp's keys (tiling candidates, pad colour, the 2x2 channel-major merge) is under ``tilepass.*``.

The checkpoint is the official layout (``vision.*`` timm names, ``projector.layers.{0,2}``, ``image_newline``,
``view_seperator``, ``language.*``); its config.json has no ``architectures``: the family is recognised by
``model_type "deepseek_vl_v2"`` / its ``vision_config`` + ``projector_config`` + ``language_config`` with a
SigLIP tower (DeepSeek-OCR's configs share the model_type but their ``vision_config.width`` is a dict).
Fields a config omits take the official classes' defaults (``DeepseekV2Config``, ``VisionEncoderConfig``,
``MlpProjectorConfig``), as the official code does.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import gguf
from gguf import GGUFValueType as VT
from gguf import MODEL_TENSOR as MT
from gguf import Keys

from ..base import KV, Count, Expect, MmprojModel, ModelBase, ModelConfig, ModelPlan, TensorPlan, expect, tname
from ..config import Getter, load_json
from ..errors import ConversionError
from ..quant_policy import OutType
from ..safetensors_reader import iter_rows_f32
from ..tokenizer import DEFAULT_CHAT_TEMPLATE
from .deepseek_ocr import (KEY_PAD_COLOR, KEY_TEXT_EXPERT_WEIGHTS_NORM, KEY_TEXT_EXPERT_WEIGHTS_SCALE,
                           KEY_TEXT_IMAGE_TOKEN_ID, KEY_TILE_SIZE, MAX_VOCAB, DeepseekOcrTextModel, TextConfig)

FAMILY = "DeepSeek-VL2"
ARCHITECTURES = ("DeepseekVLV2ForCausalLM",)  # the official class; the published configs name none
MODEL_TYPE = "deepseek_vl_v2"
TEXT_ARCH_MHA = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.DEEPSEEK2OCR]  # "deepseek2-ocr" (tiny)
TEXT_ARCH_MLA = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.DEEPSEEK2]  # "deepseek2" (small, base)
PROJECTOR_TYPE = "deepseekvl2"  # ours: llama.cpp has none

# ---- our own keys (see the README's "DeepSeek-VL2 keys") --------------------------------------------------
KEY_PROJECTOR_KIND = "tilepass.projector.type"
KEY_VISION_DOWNSAMPLE = "tilepass.vision.downsample"
KEY_CANDIDATES = "tilepass.preproc.candidate_resolutions"
KEY_MAX_TILED_IMAGES = "tilepass.preproc.max_tiled_images"

PROJECTOR_KIND = "downsample_mlp_gelu"  # the official projector_type: the only one VL2 uses
MAX_TILED_IMAGES = 2  # the official processor tiles only when a prompt holds <= 2 images
# bounds on the tiling candidates (the published list: 23 candidates of 1..9 tiles)
MAX_CANDIDATES, MAX_TILES_PER_CANDIDATE = 256, 64

# the official chat format "deepseek" (conversation.py / format_messages_v2): "<|User|>: " + content.strip() +
# "\n\n<|Assistant|>:", an earlier answer stripped right after it followed by EOS, a system message as its
# stripped text; BOS comes from add_bos_token. Written when tokenizer_config.json carries no template.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- '<|User|>: ' + message['content'] | trim + '\\n\\n<|Assistant|>:' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- message['content'] | trim + eos_token -}}"
    "{%- else -%}"
    "{{- message['content'] | trim -}}"
    "{%- endif -%}"
    "{%- endfor -%}")

_KV_B_NAME = re.compile(r"^blk\.\d+\.attn_(k|v)_b\.weight$")  # the two halves of kv_b_proj

# checkpoint prefixes
LANG = "language.model."
LM_HEAD = "language.lm_head.weight"
_U32 = 1 << 32


# ---- config ---------------------------------------------------------------------------------------------
@dataclass
class Vl2TextConfig(TextConfig):
    """DeepSeek-VL2's DeepSeek-V2 decoder: v1's numbers plus the attention kind and the gate."""

    use_mla: bool = True
    q_lora_rank: int | None = None
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    scoring_func: str = "softmax"
    topk_method: str = "greedy"


@dataclass
class SiglipConfig:
    """The SigLIP ViT (timm VisionTransformer, no class token, final norm used)."""

    width: int
    layers: int
    heads: int
    mlp_ratio: float
    image_size: int = 384
    patch_size: int = 14
    layer_norm_eps: float = 1e-6  # timm's SigLIP: partial(nn.LayerNorm, eps=1e-6), not in any config

    @property
    def grid(self) -> int:
        """Patches per side (27 for 384 / 14: the stride-14 convolution drops the last 6 pixels)."""
        return self.image_size // self.patch_size

    @property
    def intermediate_size(self) -> int:
        return int(self.width * self.mlp_ratio)  # timm's mlp_hidden_dim


@dataclass
class ProjectorConfig:
    input_dim: int
    n_embed: int
    depth: int = 2
    mlp_ratio: int = 1
    downsample_ratio: int = 2


@dataclass(kw_only=True)
class Vl2Config(ModelConfig):
    text: Vl2TextConfig
    vision: SiglipConfig
    projector: ProjectorConfig
    candidate_resolutions: list[tuple[int, int]] = field(default_factory=list)  # (width, height)
    max_tiled_images: int = MAX_TILED_IMAGES


def _nullable_int(g: Getter, key: str, default: int | None, minimum: int = 1) -> int | None:
    """An int that may be stated as null (null -> None; absent -> default)."""
    if key in g.obj and g.obj[key] is None:
        return None
    return g.int(key, default, minimum=minimum)


def _first_id(g: Getter, key: str) -> int | None:
    v = g.obj.get(key)
    if isinstance(v, list) and v and isinstance(v[0], int) and not isinstance(v[0], bool):
        return v[0]  # eos_token_id may be a list
    return g.int(key, None)


def _choice(g: Getter, key: str, default: str, allowed: tuple[str, ...], why: str = "") -> str:
    v = g.obj.get(key, default)
    if v is None:
        v = default
    if v not in allowed:
        raise ConversionError(g.path, f"\"{g._key(key)}\" {v!r} is not supported ({' / '.join(allowed)}){why}")
    return v


def _u32(g: Getter, key: str, v: int) -> int:
    if v >= _U32:
        raise ConversionError(g.path, f"\"{g._key(key)}\" {v} does not fit 32 bits")
    return v


def read_text(top: Getter) -> Vl2TextConfig:
    """``language_config`` with ``DeepseekV2Config``'s defaults for what it omits."""
    lang = top.sub("language_config")
    path = lang.path
    _choice(lang, "hidden_act", "silu", ("silu",))
    if lang.bool("attention_bias", False):
        raise ConversionError(path, "\"language_config.attention_bias\": biased attention projections are not "
                                    f"{FAMILY}'s decoder and are not supported")
    if lang.has("rope_scaling"):
        raise ConversionError(path, "\"language_config.rope_scaling\" is not supported (plain RoPE only: no "
                                    f"{FAMILY} config uses scaling)")
    use_mla = lang.bool("use_mla", True)  # absent in small's and base's configs: the class default is true
    hidden = lang.int("hidden_size", 4096, minimum=1)
    heads = lang.int("num_attention_heads", 32, minimum=1)
    kv_heads = lang.int("num_key_value_heads", heads, minimum=1)
    n_layers = lang.int("num_hidden_layers", 30, minimum=1)
    n_experts = lang.int("n_routed_experts", minimum=1)  # the class default (none: all dense) is not VL2
    used = lang.int("num_experts_per_tok", minimum=1)
    if used > n_experts:
        raise ConversionError(path, f"num_experts_per_tok {used} exceeds n_routed_experts {n_experts}")
    first_k = lang.int("first_k_dense_replace", 0)
    if first_k > n_layers:
        raise ConversionError(path, f"first_k_dense_replace {first_k} is outside 0..{n_layers}")
    if lang.int("moe_layer_freq", 1, minimum=1) != 1:
        raise ConversionError(path, "\"language_config.moe_layer_freq\" other than 1 is not supported (llama.cpp "
                                    "has only leading dense blocks)")
    topk = _choice(lang, "topk_method", "gready", ("greedy", "noaux_tc", "group_limited_greedy"),
                   " (the class default \"gready\" matches no method)")
    scoring = _choice(lang, "scoring_func", "softmax", ("softmax", "sigmoid"))
    n_group = lang.int("n_group", 1, minimum=1)
    topk_group = lang.int("topk_group", 1, minimum=1)
    if n_group > 1:
        if topk != "noaux_tc":
            raise ConversionError(path, f"n_group {n_group} with topk_method {topk!r} is not supported (llama.cpp "
                                        "ranks expert groups by their top-2 sum, noaux_tc's rule)")
        if n_experts % n_group or topk_group > n_group:
            raise ConversionError(path, f"n_group {n_group} / topk_group {topk_group} do not divide "
                                        f"n_routed_experts {n_experts}")
    if topk != "noaux_tc":  # greedy ignores the groups: llama.cpp must not apply them
        n_group = topk_group = 1
    cfg = Vl2TextConfig(
        vocab_size=lang.int("vocab_size", 102400, minimum=1),
        hidden_size=hidden,
        intermediate_size=lang.int("intermediate_size", 11008, minimum=1),
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=0,
        first_k_dense_replace=first_k,
        n_routed_experts=n_experts,
        num_experts_per_tok=used,
        n_shared_experts=lang.int("n_shared_experts", 0),
        moe_intermediate_size=lang.int("moe_intermediate_size", 1407, minimum=1),
        max_position_embeddings=_u32(lang, "max_position_embeddings",
                                     lang.int("max_position_embeddings", 2048, minimum=1)),
        rms_norm_eps=lang.float("rms_norm_eps", 1e-6),
        rope_theta=lang.float("rope_theta", 10000.0),
        n_group=n_group,
        topk_group=topk_group,
        routed_scaling_factor=lang.float("routed_scaling_factor", 1.0),
        norm_topk_prob=lang.bool("norm_topk_prob", False),
        tie_word_embeddings=lang.bool("tie_word_embeddings", False),
        bos_token_id=_first_id(lang, "bos_token_id"),
        eos_token_id=_first_id(lang, "eos_token_id"),
        pad_token_id=_first_id(lang, "pad_token_id"),
        use_mla=use_mla,
        scoring_func=scoring,
        topk_method=topk,
    )
    if not cfg.rms_norm_eps > 0 or not cfg.rope_theta > 0:
        raise ConversionError(path, "rms_norm_eps and rope_theta must be positive")
    if use_mla:
        cfg.q_lora_rank = _nullable_int(lang, "q_lora_rank", 1536)
        for key, default in (("kv_lora_rank", 512), ("qk_nope_head_dim", 128), ("qk_rope_head_dim", 64),
                             ("v_head_dim", 128)):
            v = _nullable_int(lang, key, default)
            if v is None:
                raise ConversionError(path, f"\"language_config.{key}\" is null but use_mla is true")
            setattr(cfg, key, v)
        if cfg.qk_rope_head_dim % 2:
            raise ConversionError(path, f"qk_rope_head_dim {cfg.qk_rope_head_dim} must be even (RoPE pairs)")
        cfg.head_dim = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    else:  # transformers 4.38's LlamaAttention: head = hidden / heads, RoPE over all of it
        if hidden % heads:
            raise ConversionError(path, f"\"language_config.hidden_size\" {hidden} is not a multiple of "
                                        f"num_attention_heads {heads}")
        if heads % kv_heads:
            raise ConversionError(path, f"num_attention_heads {heads} is not a multiple of num_key_value_heads "
                                        f"{kv_heads}")
        cfg.head_dim = hidden // heads
    return cfg


def read_vision(top: Getter) -> SiglipConfig:
    """``vision_config`` with ``VisionEncoderConfig``'s defaults (patch 16, width 1024, 24 layers, 16 heads,
    image 384, mlp_ratio 4: the VL2 configs override all but heads and image size)."""
    v = top.sub("vision_config")
    name = v.obj.get("model_name", "siglip_large_patch16_384")
    if not isinstance(name, str) or not name.startswith("siglip"):
        raise ConversionError(v.path, f"\"vision_config.model_name\" {name!r} is not a SigLIP tower ({FAMILY})")
    vc = SiglipConfig(width=v.int("width", 1024, minimum=1), layers=v.int("layers", 24, minimum=1),
                      heads=v.int("heads", 16, minimum=1), mlp_ratio=v.float("mlp_ratio", 4.0),
                      image_size=v.size("image_size", 384), patch_size=v.size("patch_size", 16))
    if vc.width % vc.heads:
        raise ConversionError(v.path, f"vision width {vc.width} is not a multiple of its heads {vc.heads}")
    if vc.grid < 1 or vc.image_size >= 1 << 16:
        raise ConversionError(v.path, f"vision image_size {vc.image_size} / patch_size {vc.patch_size} gives no "
                                      "usable patch grid")
    if not 0 < vc.mlp_ratio <= 64:
        raise ConversionError(v.path, f"\"vision_config.mlp_ratio\" {vc.mlp_ratio} is out of range")
    return vc


def read_projector(top: Getter) -> ProjectorConfig:
    """``projector_config`` with ``MlpProjectorConfig``'s defaults."""
    p = top.sub("projector_config")
    _choice(p, "projector_type", PROJECTOR_KIND, (PROJECTOR_KIND,))
    pc = ProjectorConfig(input_dim=p.int("input_dim", 1152, minimum=1), n_embed=p.int("n_embed", 2048, minimum=1),
                         depth=p.int("depth", 2, minimum=1), mlp_ratio=p.int("mlp_ratio", 1, minimum=1),
                         downsample_ratio=p.int("downsample_ratio", 2, minimum=1))
    if pc.depth != 2:
        raise ConversionError(p.path, f"\"projector_config.depth\" {pc.depth} is not supported (2: Linear -> GELU "
                                      "-> Linear)")
    if pc.mlp_ratio > 64:
        raise ConversionError(p.path, f"\"projector_config.mlp_ratio\" {pc.mlp_ratio} is out of range")
    return pc


def _candidates(where: Path, raw: Any, tile: int) -> list[tuple[int, int]]:
    """The tiling candidates: (width, height) pairs, multiples of the tile, bounded."""
    if not isinstance(raw, list) or not raw or len(raw) > MAX_CANDIDATES:
        raise ConversionError(where, f"\"candidate_resolutions\" must be a list of 1..{MAX_CANDIDATES} [width, "
                                     f"height] pairs, got {str(raw)[:80]}")
    out = []
    for c in raw:
        if not (isinstance(c, (list, tuple)) and len(c) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in c)):
            raise ConversionError(where, f"\"candidate_resolutions\" entry {c!r} is not a [width, height] pair")
        w, h = c
        if w % tile or h % tile or (w // tile) * (h // tile) > MAX_TILES_PER_CANDIDATE:
            raise ConversionError(where, f"\"candidate_resolutions\" entry {list(c)} must be whole {tile}-pixel "
                                         f"tiles, at most {MAX_TILES_PER_CANDIDATE} of them")
        out.append((w, h))
    if out[0][0] != tile:  # the official processor takes its tile size from the first candidate's width
        raise ConversionError(where, f"\"candidate_resolutions\" starts with {list(out[0])}: its width must be "
                                     f"the vision image_size {tile}")
    return out


def _read_processor(cfg: Vl2Config, model_dir: Path) -> None:
    """processor_config.json: the tiling candidates (which must equal config.json's where both state them),
    patch size and downsample ratio that must agree with config.json, normalisation on."""
    pp = model_dir / "processor_config.json"
    tile = cfg.vision.image_size
    raw = cfg.raw.get("candidate_resolutions")
    where = cfg.path
    if pp.exists():
        data = load_json(pp, "processor_config.json")
        for key, want in (("patch_size", cfg.vision.patch_size), ("downsample_ratio", cfg.projector.downsample_ratio)):
            v = data.get(key)
            if v is not None and v != want:
                raise ConversionError(pp, f"\"{key}\" {v!r} disagrees with config.json's {want}")
        if data.get("normalize", True) is not True:
            raise ConversionError(pp, "\"normalize\": only normalised pixels ((x/255 - mean)/std) are supported")
        pr = data.get("candidate_resolutions")
        if pr is not None:
            if raw is not None and _candidates(pp, pr, tile) != _candidates(cfg.path, raw, tile):
                raise ConversionError(pp, "\"candidate_resolutions\" disagrees with config.json's")
            raw, where = pr, pp
    cfg.candidate_resolutions = _candidates(where, raw if raw is not None else [[tile, tile]], tile)


class _DeepseekVl2(ModelBase):
    """The family: its config reader."""

    family = FAMILY

    @classmethod
    def guess_architecture(cls, data: dict[str, Any]) -> str | None:
        vis, proj = data.get("vision_config"), data.get("projector_config")
        if not (isinstance(vis, dict) and isinstance(proj, dict) and isinstance(data.get("language_config"), dict)):
            return None
        if isinstance(vis.get("width"), dict):  # DeepSeek-OCR's towers (same model_type)
            return None
        siglip = str(vis.get("model_name", "")).startswith("siglip")
        if data.get("model_type") == MODEL_TYPE or siglip or proj.get("projector_type") == PROJECTOR_KIND:
            return ARCHITECTURES[0]
        return None

    @classmethod
    def read_config(cls, path: Path, top: Getter, arch: str) -> Vl2Config:
        tile_tag = top.obj.get("tile_tag", "tile_tag")  # the official class default, which it rejects
        if tile_tag != "2D":
            raise ConversionError(path, f"\"tile_tag\" {tile_tag!r} is not supported (\"2D\")")
        pos = top.obj.get("global_view_pos", "head")
        if pos != "head":
            raise ConversionError(path, f"\"global_view_pos\" {pos!r} is not supported (\"head\": the global view "
                                        "first)")
        cfg = Vl2Config(layout="original", architecture="", path=path, text=read_text(top),
                        vision=read_vision(top), projector=read_projector(top), raw=top.obj)
        _read_processor(cfg, path.parent)
        return cfg


# ---- text -----------------------------------------------------------------------------------------------
@dataclass
class KvBSplit(TensorPlan):
    """``kv_b_proj`` [heads·(nope + v), kv_lora] split per head, as llama.cpp's converter does: ``attn_k_b`` =
    the nope rows transposed ([heads, kv_lora, nope]), ``attn_v_b`` = the v rows ([heads, v, kv_lora])."""

    part: str = "k"
    nope: int = 0
    v_dim: int = 0

    def iter_rows(self, max_chunk_bytes: int = 4 << 20) -> Iterator[np.ndarray]:
        src = self.sources[0]
        heads, per, rank = self.shape[0], self.nope + self.v_dim, src.shape[1]
        kv = np.concatenate([c.reshape(-1, rank) for c in iter_rows_f32(src, max_chunk_bytes)]).reshape(
            heads, per, rank)
        for h in range(heads):
            yield np.ascontiguousarray(kv[h, :self.nope].T) if self.part == "k" else kv[h, self.nope:]

    @property
    def source_bytes(self) -> int:
        return self.sources[0].nbytes * (self.nope if self.part == "k" else self.v_dim) // (self.nope + self.v_dim)


def pre_tokenizer_name(hf_json: str, vocab_size: int) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for a DeepSeek vocabulary: by the pre-tokenizer's digit split
    (DeepSeek-V3's ``\\p{N}{1,3}``, DeepSeek-LLM/V2's ``\\p{N}+``), else by the vocabulary (102400 = DeepSeek-V2's,
    small's; 129280 = DeepSeek-V3's, tiny's and base's)."""
    patterns: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            pat = x.get("pattern")
            if isinstance(pat, dict):
                patterns.extend(v for v in pat.values() if isinstance(v, str))
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    try:
        walk(json.loads(hf_json).get("pre_tokenizer"))
    except (ValueError, AttributeError):
        pass
    if "\\p{N}{1,3}" in patterns:
        return "deepseek-v3"
    if "\\p{N}+" in patterns:
        return "deepseek-llm"
    return "deepseek-llm" if vocab_size == 102400 else "deepseek-v3"


@ModelBase.register(*ARCHITECTURES)
class DeepseekVl2TextModel(_DeepseekVl2, DeepseekOcrTextModel):
    """The DeepSeek-V2 MoE decoder: ``deepseek2-ocr`` (MHA, tiny: v1's file) or ``deepseek2`` (MLA)."""

    def __init__(self, cfg: Any, ckpt: Any):
        super().__init__(cfg, ckpt)
        self.gguf_arch = TEXT_ARCH_MLA if cfg.text.use_mla else TEXT_ARCH_MHA

    @classmethod
    def owns_name(cls, name: str) -> bool:
        return name.startswith("language.")

    @classmethod
    def load_vocab(cls, model_dir: Path, cfg: Any) -> Any:
        vocab = super().load_vocab(model_dir, cfg)  # v1's: tokenizer.json + tokenizer_config.json
        img = vocab.special.get("<image>")  # no fallback to DeepSeek-OCR's id: small's vocabulary differs
        if img is None and "<image>" in vocab.tokens:
            img = vocab.tokens.index("<image>")
        if img is None:
            raise ConversionError(Path(model_dir) / "tokenizer.json", "no \"<image>\" token in the vocabulary")
        cfg.image_token_id = img
        if vocab.chat_template == DEFAULT_CHAT_TEMPLATE:  # tokenizer_config.json has none
            vocab.chat_template = CHAT_TEMPLATE
        return vocab

    def counts(self) -> list[Count]:
        t = self.cfg.text
        out = [Count("num_hidden_layers", t.num_hidden_layers, r"language\.model\.layers\.(\d+)\.",
                     "layers (language.model.layers.N.*)")]
        if t.num_hidden_layers > t.first_k_dense_replace:
            out.append(Count("n_routed_experts", t.n_routed_experts,
                             r"language\.model\.layers\.\d+\.mlp\.experts\.(\d+)\.",
                             "experts (language.model.layers.L.mlp.experts.N.*)"))
        return out

    def check_counts(self) -> None:
        ModelBase.check_counts(self)
        if self.cfg.text.vocab_size > MAX_VOCAB:
            raise ConversionError(self.cfg.path, f"\"vocab_size\" {self.cfg.text.vocab_size} is implausible")
        rows = self._dim(LANG + "embed_tokens.weight", 0)
        if self.cfg.text.vocab_size > rows:
            raise ConversionError(self.cfg.path, f"\"vocab_size\" is {self.cfg.text.vocab_size} but "
                                                 f"{LANG}embed_tokens.weight has {rows} rows ({FAMILY})")

    # -- tensors --
    def _attention_mha(self, i: int, p: str) -> list[Expect]:
        t = self.cfg.text
        H, q_out, kv_out = t.hidden_size, t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
        E = expect
        return [
            E(tname(MT.ATTN_Q, i, ".weight"), p + "self_attn.q_proj.weight", (q_out, H)),
            E(tname(MT.ATTN_K, i, ".weight"), p + "self_attn.k_proj.weight", (kv_out, H)),
            E(tname(MT.ATTN_V, i, ".weight"), p + "self_attn.v_proj.weight", (kv_out, H)),
            E(tname(MT.ATTN_OUT, i, ".weight"), p + "self_attn.o_proj.weight", (H, q_out)),
        ]

    def _attention_mla(self, i: int, p: str) -> list[Expect]:
        t = self.cfg.text
        D, nh, r, rope = t.hidden_size, t.num_attention_heads, t.kv_lora_rank, t.qk_rope_head_dim
        nope, vd = t.qk_nope_head_dim, t.v_head_dim
        q_out = nh * (nope + rope)
        a = p + "self_attn."
        E = expect
        if t.q_lora_rank is None:
            out = [E(tname(MT.ATTN_Q, i, ".weight"), a + "q_proj.weight", (q_out, D))]
        else:
            qr = t.q_lora_rank
            out = [
                E(tname(MT.ATTN_Q_A, i, ".weight"), a + "q_a_proj.weight", (qr, D)),
                E(tname(MT.ATTN_Q_A_NORM, i, ".weight"), a + "q_a_layernorm.weight", (qr,), f32=True),
                E(tname(MT.ATTN_Q_B, i, ".weight"), a + "q_b_proj.weight", (q_out, qr)),
            ]
        kv_b = a + "kv_b_proj.weight"
        return out + [
            E(tname(MT.ATTN_KV_A_MQA, i, ".weight"), a + "kv_a_proj_with_mqa.weight", (r + rope, D)),
            E(tname(MT.ATTN_KV_A_NORM, i, ".weight"), a + "kv_a_layernorm.weight", (r,), f32=True),
            E(tname(MT.ATTN_K_B, i, ".weight"), kv_b, (nh * (nope + vd), r), (nh, r, nope)),
            E(tname(MT.ATTN_V_B, i, ".weight"), kv_b, (nh * (nope + vd), r), (nh, vd, r)),
            E(tname(MT.ATTN_OUT, i, ".weight"), a + "o_proj.weight", (D, nh * vd)),
        ]

    def _ffn(self, i: int, p: str) -> list[Expect]:
        t = self.cfg.text
        H, E_, Im = t.hidden_size, t.n_routed_experts, t.moe_intermediate_size
        E = expect
        if i < t.first_k_dense_replace:
            I = t.intermediate_size
            return [
                E(tname(MT.FFN_GATE, i, ".weight"), p + "mlp.gate_proj.weight", (I, H)),
                E(tname(MT.FFN_UP, i, ".weight"), p + "mlp.up_proj.weight", (I, H)),
                E(tname(MT.FFN_DOWN, i, ".weight"), p + "mlp.down_proj.weight", (H, I)),
            ]
        out = [E(tname(MT.FFN_GATE_INP, i, ".weight"), p + "mlp.gate.weight", (E_, H), f32=True)]
        if t.topk_method == "noaux_tc":
            out.append(E(tname(MT.FFN_EXP_PROBS_B, i, ".bias"), p + "mlp.gate.e_score_correction_bias", (E_,),
                         f32=True))
        for proj, key, shp in (("gate_proj", MT.FFN_GATE_EXP, (Im, H)), ("up_proj", MT.FFN_UP_EXP, (Im, H)),
                               ("down_proj", MT.FFN_DOWN_EXP, (H, Im))):
            out.append(Expect(tname(key, i, ".weight"), [f"{p}mlp.experts.{e}.{proj}.weight" for e in range(E_)],
                              shp, (E_, *shp)))
        if t.n_shared_experts:
            Ish = Im * t.n_shared_experts
            s = p + "mlp.shared_experts."
            out += [
                E(tname(MT.FFN_GATE_SHEXP, i, ".weight"), s + "gate_proj.weight", (Ish, H)),
                E(tname(MT.FFN_UP_SHEXP, i, ".weight"), s + "up_proj.weight", (Ish, H)),
                E(tname(MT.FFN_DOWN_SHEXP, i, ".weight"), s + "down_proj.weight", (H, Ish)),
            ]
        return out

    def expectations(self) -> list[Expect]:
        t = self.cfg.text
        H, V = t.hidden_size, t.vocab_size
        E = expect
        out = [E(tname(MT.TOKEN_EMBD, suffix=".weight"), LANG + "embed_tokens.weight", (V, H))]
        attention = self._attention_mla if t.use_mla else self._attention_mha
        for i in range(t.num_hidden_layers):
            p = f"{LANG}layers.{i}."
            out.append(E(tname(MT.ATTN_NORM, i, ".weight"), p + "input_layernorm.weight", (H,), f32=True))
            out += attention(i, p)
            out.append(E(tname(MT.FFN_NORM, i, ".weight"), p + "post_attention_layernorm.weight", (H,), f32=True))
            out += self._ffn(i, p)
        out.append(E(tname(MT.OUTPUT_NORM, suffix=".weight"), LANG + "norm.weight", (H,), f32=True))
        if not (t.tie_word_embeddings and LM_HEAD not in self.ckpt):
            out.append(E(tname(MT.OUTPUT, suffix=".weight"), LM_HEAD, (V, H)))
        return out

    def build(self, chosen: OutType, **kv_extra: Any) -> ModelPlan:
        mp = super().build(chosen, **kv_extra)
        t = self.cfg.text
        for k, tp in enumerate(mp.tensors):
            m = _KV_B_NAME.match(tp.name)
            if m is not None:
                mp.tensors[k] = KvBSplit(tp.name, tp.sources, tp.shape, tp.qtype, tp.note, part=m.group(1),
                                         nope=t.qk_nope_head_dim, v_dim=t.v_head_dim)
        return mp

    # -- keys --
    def _gate_kv(self, a: str, always: bool) -> list[KV]:
        """llama.cpp's gate keys: always in deepseek2 files; in deepseek2-ocr files only where the config departs
        from llama.cpp's defaults (softmax, scale 1, no renormalisation), so that tiny's file is v1's."""
        t, L = self.cfg.text, Keys.LLM
        out = []
        if always or t.routed_scaling_factor != 1.0:
            out.append(KV(L.EXPERT_WEIGHTS_SCALE.format(arch=a), t.routed_scaling_factor, VT.FLOAT32))
        if always or t.norm_topk_prob:
            out.append(KV(L.EXPERT_WEIGHTS_NORM.format(arch=a), t.norm_topk_prob, VT.BOOL))
        if always or t.scoring_func != "softmax":
            G = gguf.ExpertGatingFuncType
            func = G.SIGMOID if t.scoring_func == "sigmoid" else G.SOFTMAX
            out.append(KV(L.EXPERT_GATING_FUNC.format(arch=a), int(func), VT.UINT32))
        return out

    def kv_pairs(self, *, chosen: OutType, vocab=None, **_: Any) -> list[KV]:
        t, a = self.cfg.text, self.gguf_arch
        v1 = DeepseekOcrTextModel.kv_pairs(self, chosen=chosen, vocab=vocab)  # v1's keys and tokenizer
        tok = [kv for kv in v1 if kv.key.startswith("tokenizer.")]
        if vocab is not None:
            for kv in tok:
                if kv.key == Keys.Tokenizer.PRE:
                    kv.value = pre_tokenizer_name(vocab.hf_json, t.vocab_size)
        if not t.use_mla:  # deepseek2-ocr: DeepSeek-OCR's text file
            return [kv for kv in v1 if not kv.key.startswith("tokenizer.")] + self._gate_kv(a, False) + tok
        L, A, R = Keys.LLM, Keys.Attention, Keys.Rope
        r, rope = t.kv_lora_rank, t.qk_rope_head_dim
        kv = self._general(chosen) + [
            KV(L.BLOCK_COUNT.format(arch=a), t.num_hidden_layers, VT.UINT32),
            KV(L.CONTEXT_LENGTH.format(arch=a), t.max_position_embeddings, VT.UINT32),
            KV(L.EMBEDDING_LENGTH.format(arch=a), t.hidden_size, VT.UINT32),
            KV(L.FEED_FORWARD_LENGTH.format(arch=a), t.intermediate_size, VT.UINT32),
            KV(A.HEAD_COUNT.format(arch=a), t.num_attention_heads, VT.UINT32),
            KV(A.HEAD_COUNT_KV.format(arch=a), 1, VT.UINT32),  # MLA as MQA over the latent, as llama.cpp writes it
            KV(A.LAYERNORM_RMS_EPS.format(arch=a), t.rms_norm_eps, VT.FLOAT32),
            KV(R.FREQ_BASE.format(arch=a), t.rope_theta, VT.FLOAT32),
            KV(R.DIMENSION_COUNT.format(arch=a), rope, VT.UINT32),
            KV(L.LEADING_DENSE_BLOCK_COUNT.format(arch=a), t.first_k_dense_replace, VT.UINT32),
            KV(L.VOCAB_SIZE.format(arch=a), t.vocab_size, VT.UINT32),
        ]
        if t.q_lora_rank is not None:
            kv.append(KV(A.Q_LORA_RANK.format(arch=a), t.q_lora_rank, VT.UINT32))
        kv += [
            KV(A.KV_LORA_RANK.format(arch=a), r, VT.UINT32),
            KV(A.KEY_LENGTH.format(arch=a), r + rope, VT.UINT32),
            KV(A.VALUE_LENGTH.format(arch=a), r, VT.UINT32),
            KV(A.KEY_LENGTH_MLA.format(arch=a), t.qk_nope_head_dim + rope, VT.UINT32),
            KV(A.VALUE_LENGTH_MLA.format(arch=a), t.v_head_dim, VT.UINT32),
            KV(L.EXPERT_FEED_FORWARD_LENGTH.format(arch=a), t.moe_intermediate_size, VT.UINT32),
            KV(L.EXPERT_COUNT.format(arch=a), t.n_routed_experts, VT.UINT32),
            KV(L.EXPERT_USED_COUNT.format(arch=a), t.num_experts_per_tok, VT.UINT32),
            KV(L.EXPERT_SHARED_COUNT.format(arch=a), t.n_shared_experts, VT.UINT32),
            *self._gate_kv(a, True),
            KV(L.EXPERT_GROUP_COUNT.format(arch=a), t.n_group, VT.UINT32),
            KV(L.EXPERT_GROUP_USED_COUNT.format(arch=a), t.topk_group, VT.UINT32),
            # ours, as in every text file of ours (the same values as llama.cpp's gate keys here)
            KV(KEY_TEXT_EXPERT_WEIGHTS_SCALE, t.routed_scaling_factor, VT.FLOAT32),
            KV(KEY_TEXT_EXPERT_WEIGHTS_NORM, t.norm_topk_prob, VT.BOOL),
            KV(KEY_TEXT_IMAGE_TOKEN_ID, self.cfg.image_token_id, VT.UINT32),
        ]
        return kv + tok


# ---- vision ---------------------------------------------------------------------------------------------
@ModelBase.register(*ARCHITECTURES)
class DeepseekVl2VisionModel(_DeepseekVl2, MmprojModel):
    """SigLIP-SO400M/14 + 2x2 channel-major merge + MLP projector -> ``clip`` / ``deepseekvl2``."""

    @classmethod
    def owns_name(cls, name: str) -> bool:
        return name.startswith(("vision.", "projector.")) or name in ("image_newline", "view_seperator")

    def drops(self, name: str) -> bool:
        """SigLIP's attention-pooling ("MAP") head: in the checkpoint, never run (ignore_head=True)."""
        return name.startswith("vision.attn_pool.")

    def counts(self) -> list[Count]:
        return [Count("vision_config.layers", self.cfg.vision.layers, r"vision\.blocks\.(\d+)\.",
                      "vision blocks (vision.blocks.N.*)")]

    def resolve(self) -> None:
        cfg, v, p = self.cfg, self.cfg.vision, self.cfg.projector
        if p.input_dim != v.width:
            raise ConversionError(cfg.path, f"projector_config.input_dim {p.input_dim} != vision width {v.width}")
        if p.n_embed != cfg.text.hidden_size:
            raise ConversionError(cfg.path, f"projector_config.n_embed {p.n_embed} != language hidden_size "
                                            f"{cfg.text.hidden_size}")
        if p.downsample_ratio > v.grid:
            raise ConversionError(cfg.path, f"projector_config.downsample_ratio {p.downsample_ratio} exceeds the "
                                            f"patch grid {v.grid}")

    def expectations(self) -> list[Expect]:
        v, p = self.cfg.vision, self.cfg.projector
        W, I, ps, g = v.width, v.intermediate_size, v.patch_size, v.grid
        D, Hm, Win = p.n_embed, p.n_embed * p.mlp_ratio, v.width * p.downsample_ratio ** 2
        E = expect
        out = [
            E(tname(MT.V_ENC_EMBD_PATCH, suffix=".weight"), "vision.patch_embed.proj.weight", (W, 3, ps, ps),
              conv=True),
            E(tname(MT.V_ENC_EMBD_PATCH, suffix=".bias"), "vision.patch_embed.proj.bias", (W,), f32=True),
            E(tname(MT.V_ENC_EMBD_POS, suffix=".weight"), "vision.pos_embed", (1, g * g, W), (g * g, W), f32=True),
        ]
        for i in range(v.layers):
            b = f"vision.blocks.{i}."
            out += [
                E(tname(MT.V_ENC_INPUT_NORM, i, ".weight"), b + "norm1.weight", (W,), f32=True),
                E(tname(MT.V_ENC_INPUT_NORM, i, ".bias"), b + "norm1.bias", (W,), f32=True),
                E(tname(MT.V_ENC_ATTN_QKV, i, ".weight"), b + "attn.qkv.weight", (3 * W, W)),
                E(tname(MT.V_ENC_ATTN_QKV, i, ".bias"), b + "attn.qkv.bias", (3 * W,), f32=True),
                E(tname(MT.V_ENC_ATTN_O, i, ".weight"), b + "attn.proj.weight", (W, W)),
                E(tname(MT.V_ENC_ATTN_O, i, ".bias"), b + "attn.proj.bias", (W,), f32=True),
                E(tname(MT.V_ENC_POST_ATTN_NORM, i, ".weight"), b + "norm2.weight", (W,), f32=True),
                E(tname(MT.V_ENC_POST_ATTN_NORM, i, ".bias"), b + "norm2.bias", (W,), f32=True),
                E(tname(MT.V_ENC_FFN_UP, i, ".weight"), b + "mlp.fc1.weight", (I, W)),
                E(tname(MT.V_ENC_FFN_UP, i, ".bias"), b + "mlp.fc1.bias", (I,), f32=True),
                E(tname(MT.V_ENC_FFN_DOWN, i, ".weight"), b + "mlp.fc2.weight", (W, I)),
                E(tname(MT.V_ENC_FFN_DOWN, i, ".bias"), b + "mlp.fc2.bias", (W,), f32=True),
            ]
        out += [
            E(tname(MT.V_POST_NORM, suffix=".weight"), "vision.norm.weight", (W,), f32=True),
            E(tname(MT.V_POST_NORM, suffix=".bias"), "vision.norm.bias", (W,), f32=True),
            E(tname(MT.V_MMPROJ, 0, ".weight"), "projector.layers.0.weight", (Hm, Win)),
            E(tname(MT.V_MMPROJ, 0, ".bias"), "projector.layers.0.bias", (Hm,), f32=True),
            E(tname(MT.V_MMPROJ, 2, ".weight"), "projector.layers.2.weight", (D, Hm)),
            E(tname(MT.V_MMPROJ, 2, ".bias"), "projector.layers.2.bias", (D,), f32=True),
            E(tname(MT.V_ENC_EMBD_IMGNL), "image_newline", (D,), f32=True),
            E(tname(MT.V_ENC_EMBD_VSEP), "view_seperator", (D,), (1, D), f32=True),
        ]
        return out

    def kv_pairs(self, *, chosen: OutType, **_: Any) -> list[KV]:
        cfg, v, p = self.cfg, self.cfg.vision, self.cfg.projector
        C, CV = Keys.Clip, Keys.ClipVision
        tiles = [(w // v.image_size) * (h // v.image_size) for w, h in cfg.candidate_resolutions]
        pad = [int(m * 255) for m in cfg.image_mean]  # the official processor's background colour
        return self._general(chosen) + [
            KV(C.HAS_VISION_ENCODER, True, VT.BOOL),
            KV(C.PROJECTOR_TYPE, PROJECTOR_TYPE, VT.STRING),
            KV(CV.USE_GELU, True, VT.BOOL),  # the ViT's MLP (tanh GELU); the projector's is erf (its type says)
            KV(CV.PROJECTION_DIM, p.n_embed, VT.UINT32),
            KV(CV.IMAGE_SIZE, v.image_size, VT.UINT32),
            KV(CV.PATCH_SIZE, v.patch_size, VT.UINT32),
            KV(CV.EMBEDDING_LENGTH, v.width, VT.UINT32),
            KV(CV.FEED_FORWARD_LENGTH, v.intermediate_size, VT.UINT32),
            KV(CV.BLOCK_COUNT, v.layers, VT.UINT32),
            KV(CV.Attention.HEAD_COUNT, v.heads, VT.UINT32),
            KV(CV.Attention.LAYERNORM_EPS, v.layer_norm_eps, VT.FLOAT32),
            KV(CV.IMAGE_MEAN, cfg.image_mean, VT.ARRAY, VT.FLOAT32),
            KV(CV.IMAGE_STD, cfg.image_std, VT.ARRAY, VT.FLOAT32),
            KV(CV.PREPROC_MIN_TILES, min(tiles), VT.UINT32),
            KV(CV.PREPROC_MAX_TILES, max(tiles), VT.UINT32),
            # ours
            KV(KEY_PROJECTOR_KIND, PROJECTOR_KIND, VT.STRING),
            KV(KEY_VISION_DOWNSAMPLE, p.downsample_ratio, VT.UINT32),
            KV(KEY_TILE_SIZE, v.image_size, VT.UINT32),
            KV(KEY_CANDIDATES, [x for wh in cfg.candidate_resolutions for x in wh], VT.ARRAY, VT.INT32),
            KV(KEY_PAD_COLOR, pad, VT.ARRAY, VT.INT32),
            KV(KEY_MAX_TILED_IMAGES, cfg.max_tiled_images, VT.UINT32),
        ]


__all__ = ["FAMILY", "ARCHITECTURES", "PROJECTOR_TYPE", "CHAT_TEMPLATE", "Vl2Config", "Vl2TextConfig",
           "SiglipConfig", "ProjectorConfig", "DeepseekVl2TextModel", "DeepseekVl2VisionModel", "KvBSplit",
           "pre_tokenizer_name", "KEY_PROJECTOR_KIND", "KEY_VISION_DOWNSAMPLE", "KEY_CANDIDATES",
           "KEY_MAX_TILED_IMAGES"]
