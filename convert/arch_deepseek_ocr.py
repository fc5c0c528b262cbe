"""DeepSeek-OCR v1: checkpoint names -> llama.cpp's GGUF names, shapes, types and KV pairs.

One class per output file, as in llama.cpp's converter: ``DeepseekOcrTextModel`` (``deepseek2-ocr``)
and ``DeepseekOcrVisionModel`` (``clip`` with projector ``deepseekocr``). Each builds the full list
of expected tensors from the config (widths the original config does not state are read from tensor
shapes first), checks the checkpoint against it (nothing missing, nothing unknown, every shape as the
config implies) and yields ``TensorPlan`` entries the writer streams out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf import MODEL_TENSOR as MT
from gguf import Keys

from .config import OcrConfig
from .errors import ConversionError
from .quant_policy import OutType, choose_type
from .safetensors_reader import Checkpoint, TensorRef, iter_rows_f32

# ---- our own keys (values llama.cpp hard-codes; see convert/README_SECTION.md) -------------------------
KEY_FORMAT_VERSION = "tilepass.format_version"
FORMAT_VERSION = 1
KEY_TEXT_ROPE_DIMS = "tilepass.text.rope_dimension_count"
KEY_TEXT_EXPERT_WEIGHTS_SCALE = "tilepass.text.expert_weights_scale"
KEY_TEXT_EXPERT_WEIGHTS_NORM = "tilepass.text.expert_weights_norm"
KEY_TEXT_IMAGE_TOKEN_ID = "tilepass.text.image_token_id"
KEY_SAM_IMAGE_SIZE = "tilepass.sam.image_size"
KEY_SAM_PATCH_SIZE = "tilepass.sam.patch_size"
KEY_SAM_WINDOW_SIZE = "tilepass.sam.window_size"
KEY_SAM_GLOBAL_ATTN = "tilepass.sam.global_attn_indexes"
KEY_SAM_EPS = "tilepass.sam.layer_norm_epsilon"
KEY_SAM_FFN = "tilepass.sam.feed_forward_length"
KEY_CLIP_EPS = "tilepass.clip.layer_norm_epsilon"
KEY_CLIP_FFN = "tilepass.clip.feed_forward_length"
KEY_TILE_SIZE = "tilepass.preproc.tile_size"
KEY_PAD_COLOR = "tilepass.preproc.pad_color"


def tname(t: MT, bid: int | None = None, suffix: str = "") -> str:
    """A GGUF tensor name from the gguf package's constants."""
    base = gguf.TENSOR_NAMES[t]
    return (base.format(bid=bid) if "{bid}" in base else base) + suffix


@dataclass
class KV:
    key: str
    value: Any
    vtype: VT
    sub_type: VT | None = None


@dataclass
class TensorPlan:
    """One output tensor: where its data comes from and how it is stored."""

    name: str
    sources: list[TensorRef]  # several = stacked along a new first axis (experts)
    shape: tuple[int, ...]  # numpy/PyTorch order (GGUF's ne is the reverse)
    qtype: QT
    note: str = ""

    @property
    def row_len(self) -> int:
        return self.shape[-1]

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        blk, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return self.n_elements // blk * size

    @property
    def source_bytes(self) -> int:
        return sum(s.nbytes for s in self.sources)

    def iter_rows(self, max_chunk_bytes: int = 4 << 20) -> Iterator[np.ndarray]:
        """float32 [rows, row_len] chunks, in output order."""
        for src in self.sources:
            for chunk in iter_rows_f32(src, max_chunk_bytes):
                yield chunk.reshape(-1, self.row_len)

    def read_f32(self) -> np.ndarray:
        parts = list(self.iter_rows())
        return np.concatenate(parts, axis=0).reshape(self.shape)


@dataclass
class _Expect:
    gguf_name: str
    sources: list[str]
    src_shape: tuple[int, ...]  # each source's shape
    out_shape: tuple[int, ...]
    force_f32: bool = False
    conv_f16_only: bool = False


@dataclass
class ModelPlan:
    arch: str
    kv: list[KV]
    tensors: list[TensorPlan]
    dropped: list[str] = field(default_factory=list)  # source tensors intentionally not written
    skipped: list[str] = field(default_factory=list)  # source tensors that belong to the other file


class _OcrPart:
    """Shared machinery of the two parts."""

    gguf_arch: str = ""
    file_kind: str = ""  # general.type

    def __init__(self, cfg: OcrConfig, ckpt: Checkpoint):
        self.cfg = cfg
        self.ckpt = ckpt

    # which checkpoint tensors this part owns / drops; everything else must belong to the other part
    def owns(self, name: str) -> bool:
        raise NotImplementedError

    def drops(self, name: str) -> bool:
        return False

    @staticmethod
    def other_owns(name: str) -> bool:
        return DeepseekOcrTextModel.owns_name(name) or DeepseekOcrVisionModel.owns_name(name)

    def expectations(self) -> list[_Expect]:
        raise NotImplementedError

    def kv_pairs(self, **extra: Any) -> list[KV]:
        raise NotImplementedError

    @property
    def n_layer(self) -> int:
        """The text model's block count (what the _M mixture's layer rule counts)."""
        return self.cfg.text.num_hidden_layers

    # ---- helpers ----
    def _where(self) -> str:
        idx = self.ckpt.dir / "model.safetensors.index.json"
        return str(idx if idx.exists() else self.ckpt.dir)

    def _ref(self, name: str) -> TensorRef:
        ref = self.ckpt.tensors.get(name)
        if ref is None:
            raise ConversionError(self._where(), f"missing tensor {name!r}")
        return ref

    def _dim(self, name: str, axis: int) -> int:
        ref = self._ref(name)
        if len(ref.shape) <= axis:
            raise ConversionError(ref.path, f"tensor {name!r} has shape {list(ref.shape)}, expected at least "
                                            f"{axis + 1} dimensions")
        return ref.shape[axis]

    def build(self, chosen: OutType, **kv_extra: Any) -> ModelPlan:
        exps = self.expectations()
        expected_sources: set[str] = set()
        tensors: list[TensorPlan] = []
        for e in exps:
            refs = []
            for s in e.sources:
                ref = self._ref(s)
                if tuple(ref.shape) != tuple(e.src_shape):
                    raise ConversionError(ref.path, f"tensor {s!r} has shape {list(ref.shape)} but the config implies "
                                                    f"{list(e.src_shape)}")
                if ref.dtype not in ("F32", "F16", "BF16", "F64"):
                    raise ConversionError(ref.path, f"tensor {s!r} has non-float dtype {ref.dtype}")
                refs.append(ref)
                expected_sources.add(s)
            tc = choose_type(chosen.tensor_type(e.gguf_name, self.n_layer), e.out_shape[-1], force_f32=e.force_f32,
                             conv_f16_only=e.conv_f16_only)
            tensors.append(TensorPlan(e.gguf_name, refs, tuple(e.out_shape), tc.qtype, tc.note))
        dropped, skipped = [], []
        for name, ref in self.ckpt.tensors.items():
            if name in expected_sources:
                continue
            if self.drops(name):
                dropped.append(name)
            elif self.owns(name) or not self.other_owns(name):
                raise ConversionError(ref.path, f"unexpected tensor {name!r} (not part of DeepSeek-OCR v1 as "
                                                f"configured)")
            else:
                skipped.append(name)
        kv = self.kv_pairs(chosen=chosen, **kv_extra)
        return ModelPlan(self.gguf_arch, kv, tensors, dropped, skipped)

    def _general(self, chosen: OutType) -> list[KV]:
        return [
            KV(Keys.General.TYPE, self.file_kind, VT.STRING),
            KV(Keys.General.NAME, self.cfg.name or "DeepSeek-OCR", VT.STRING),
            KV(Keys.General.FILE_TYPE, chosen.file_type, VT.UINT32),
            KV(Keys.General.QUANTIZATION_VERSION, gguf.GGML_QUANT_VERSION, VT.UINT32),
            KV(KEY_FORMAT_VERSION, FORMAT_VERSION, VT.UINT32),
        ]


class DeepseekOcrTextModel(_OcrPart):
    """The DeepSeek-V2 MoE decoder -> ``deepseek2-ocr``."""

    gguf_arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.DEEPSEEK2OCR]
    file_kind = "model"

    @staticmethod
    def owns_name(name: str) -> bool:
        return name.startswith(("lm_head.", "model.embed_tokens.", "model.layers.", "model.norm."))

    def owns(self, name: str) -> bool:
        return self.owns_name(name)

    def expectations(self) -> list[_Expect]:
        t = self.cfg.text
        H, V = t.hidden_size, t.vocab_size
        q_out = t.num_attention_heads * t.head_dim
        kv_out = t.num_key_value_heads * t.head_dim
        E, Im = t.n_routed_experts, t.moe_intermediate_size
        Ish = Im * t.n_shared_experts
        out: list[_Expect] = [_Expect(tname(MT.TOKEN_EMBD, suffix=".weight"), ["model.embed_tokens.weight"],
                                      (V, H), (V, H))]
        for i in range(t.num_hidden_layers):
            p = f"model.layers.{i}."
            out += [
                _Expect(tname(MT.ATTN_NORM, i, ".weight"), [p + "input_layernorm.weight"], (H,), (H,), True),
                _Expect(tname(MT.ATTN_Q, i, ".weight"), [p + "self_attn.q_proj.weight"], (q_out, H), (q_out, H)),
                _Expect(tname(MT.ATTN_K, i, ".weight"), [p + "self_attn.k_proj.weight"], (kv_out, H), (kv_out, H)),
                _Expect(tname(MT.ATTN_V, i, ".weight"), [p + "self_attn.v_proj.weight"], (kv_out, H), (kv_out, H)),
                _Expect(tname(MT.ATTN_OUT, i, ".weight"), [p + "self_attn.o_proj.weight"], (H, q_out), (H, q_out)),
                _Expect(tname(MT.FFN_NORM, i, ".weight"), [p + "post_attention_layernorm.weight"], (H,), (H,), True),
            ]
            if i < t.first_k_dense_replace:
                I = t.intermediate_size
                out += [
                    _Expect(tname(MT.FFN_GATE, i, ".weight"), [p + "mlp.gate_proj.weight"], (I, H), (I, H)),
                    _Expect(tname(MT.FFN_UP, i, ".weight"), [p + "mlp.up_proj.weight"], (I, H), (I, H)),
                    _Expect(tname(MT.FFN_DOWN, i, ".weight"), [p + "mlp.down_proj.weight"], (H, I), (H, I)),
                ]
                continue
            out.append(_Expect(tname(MT.FFN_GATE_INP, i, ".weight"), [p + "mlp.gate.weight"], (E, H), (E, H), True))
            for proj, key, shp in (("gate_proj", MT.FFN_GATE_EXP, (Im, H)), ("up_proj", MT.FFN_UP_EXP, (Im, H)),
                                   ("down_proj", MT.FFN_DOWN_EXP, (H, Im))):
                srcs = [f"{p}mlp.experts.{e}.{proj}.weight" for e in range(E)]
                out.append(_Expect(tname(key, i, ".weight"), srcs, shp, (E, *shp)))
            if t.n_shared_experts:
                out += [
                    _Expect(tname(MT.FFN_GATE_SHEXP, i, ".weight"), [p + "mlp.shared_experts.gate_proj.weight"],
                            (Ish, H), (Ish, H)),
                    _Expect(tname(MT.FFN_UP_SHEXP, i, ".weight"), [p + "mlp.shared_experts.up_proj.weight"],
                            (Ish, H), (Ish, H)),
                    _Expect(tname(MT.FFN_DOWN_SHEXP, i, ".weight"), [p + "mlp.shared_experts.down_proj.weight"],
                            (H, Ish), (H, Ish)),
                ]
        out.append(_Expect(tname(MT.OUTPUT_NORM, suffix=".weight"), ["model.norm.weight"], (H,), (H,), True))
        if not (t.tie_word_embeddings and "lm_head.weight" not in self.ckpt):
            out.append(_Expect(tname(MT.OUTPUT, suffix=".weight"), ["lm_head.weight"], (V, H), (V, H)))
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


class DeepseekOcrVisionModel(_OcrPart):
    """SAM ViT-B + CLIP-L + linear projector -> ``clip`` / ``deepseekocr`` (the mmproj file)."""

    gguf_arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ]
    file_kind = "mmproj"
    _DROP = ("model.vision_model.embeddings.patch_embedding.weight", "model.vision_model.embeddings.position_ids")

    @staticmethod
    def owns_name(name: str) -> bool:
        return name.startswith(("model.sam_model.", "model.vision_model.", "model.projector.")) or name in (
            "model.image_newline", "model.view_seperator")

    def owns(self, name: str) -> bool:
        return self.owns_name(name)

    def drops(self, name: str) -> bool:
        return name in self._DROP

    def __init__(self, cfg: OcrConfig, ckpt: Checkpoint):
        super().__init__(cfg, ckpt)
        self._resolve()

    def _resolve(self) -> None:
        """Fill what the config leaves open from tensor shapes; check what must agree."""
        s, c, cfg = self.cfg.sam, self.cfg.clip, self.cfg
        sp = "model.sam_model."
        if s.patch_size is None:
            s.patch_size = self._dim(sp + "patch_embed.proj.weight", 2)
        if s.mlp_dim is None:
            s.mlp_dim = self._dim(sp + "blocks.0.mlp.lin1.weight", 0)
        if s.output_channels is None:
            s.output_channels = self._dim(sp + "neck.0.weight", 0)
        if s.window_size is None:
            windowed = [i for i in range(s.num_hidden_layers) if i not in s.global_attn_indexes]
            s.window_size = (self._dim(f"{sp}blocks.{windowed[0]}.attn.rel_pos_h", 0) + 1) // 2 if windowed else 14
        if c.intermediate_size is None:
            c.intermediate_size = self._dim("model.vision_model.transformer.layers.0.mlp.fc1.weight", 0)
        if any(not 0 <= g < s.num_hidden_layers for g in s.global_attn_indexes):
            raise ConversionError(cfg.path, f"SAM global_attn_indexes {s.global_attn_indexes} outside 0.."
                                            f"{s.num_hidden_layers - 1}")
        if len(s.downsample_channels) != 2:
            raise ConversionError(cfg.path, f"SAM downsample_channels must have 2 entries, got {s.downsample_channels}")
        if s.image_size % s.patch_size:
            raise ConversionError(cfg.path, f"SAM image_size {s.image_size} is not a multiple of patch {s.patch_size}")
        if s.hidden_size % s.num_attention_heads:
            raise ConversionError(cfg.path, f"SAM width {s.hidden_size} is not a multiple of heads "
                                            f"{s.num_attention_heads}")
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

    def expectations(self) -> list[_Expect]:
        s, c, cfg = self.cfg.sam, self.cfg.clip, self.cfg
        Ws, P, g = s.hidden_size, s.patch_size, s.image_size // s.patch_size
        hd = Ws // s.num_attention_heads
        Nc, (d0, d1) = s.output_channels, s.downsample_channels
        Wc, Ic = c.hidden_size, c.intermediate_size
        n_pos = (c.image_size // c.patch_size) ** 2 + 1
        Ht = cfg.projector_output_dim
        sp = "model.sam_model."

        def E(name: str, src: str, shape: tuple, out: tuple | None = None, f32: bool = False, conv: bool = False):
            return _Expect(name, [src], shape, out or shape, f32, conv)

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
            KV(CV.SAM.BLOCK_COUNT, s.num_hidden_layers, VT.UINT32),
            KV(CV.SAM.EMBEDDING_LENGTH, s.hidden_size, VT.UINT32),
            KV(CV.SAM.HEAD_COUNT, s.num_attention_heads, VT.UINT32),
            # ours: what llama.cpp hard-codes
            KV(KEY_SAM_IMAGE_SIZE, s.image_size, VT.UINT32),
            KV(KEY_SAM_PATCH_SIZE, s.patch_size, VT.UINT32),
            KV(KEY_SAM_WINDOW_SIZE, s.window_size, VT.UINT32),
            KV(KEY_SAM_GLOBAL_ATTN, list(s.global_attn_indexes), VT.ARRAY, VT.INT32),
            KV(KEY_SAM_EPS, s.layer_norm_eps, VT.FLOAT32),
            KV(KEY_SAM_FFN, s.mlp_dim, VT.UINT32),
            KV(KEY_CLIP_EPS, c.layer_norm_eps, VT.FLOAT32),
            KV(KEY_CLIP_FFN, c.intermediate_size, VT.UINT32),
            KV(KEY_TILE_SIZE, cfg.tile_size, VT.UINT32),
            KV(KEY_PAD_COLOR, list(cfg.pad_color), VT.ARRAY, VT.INT32),
        ]


ARCHITECTURES = {
    "DeepseekOCRForCausalLM": (DeepseekOcrTextModel, DeepseekOcrVisionModel),
    "UnlimitedOcrForConditionalGeneration": (DeepseekOcrTextModel, DeepseekOcrVisionModel),
    "UnlimitedOCRForCausalLM": (DeepseekOcrTextModel, DeepseekOcrVisionModel),
}
