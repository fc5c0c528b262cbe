"""Tiny PaddleOCR-VL reference checkpoints and reference outputs for tests (see
../shared/spec/paddleocr-vl.md §8 and ../shared/spec/references.md).

What it builds:

* ``make_model(seed=0, config=None)`` - a transformers 5.23 ``PaddleOCRVLForConditionalGeneration`` with random
  weights: by default the config of spec §8 (``TINY_CONFIG``: vision hidden 32 / 2 layers / 2 heads / MLP 64 /
  patch 14 / 27x27 position table; text hidden 64 / 2 layers / 4 heads, 2 KV heads of 16 / SwiGLU 128 / vocab
  103424 / θ 500000 / ``mrope_section`` [2, 3, 3] / ``initializer_range`` 0.2), or any other config dict (e.g.
  ``fixture_config()``, the llama.cpp fixture's ``transformers_config.json`` with its 3-layer vision tower).
  ``torch.manual_seed(seed)`` before construction; then the vision and projector weights are redrawn for O(1)
  activations as ``../shared/fixtures/llamacpp-tiny-paddleocr-vl/README.md`` describes (matrices
  N(0, 1/fan_in), position table N(0, 0.5), biases N(0, 0.05), norm weights 1 + N(0, 0.1)). ``f16_text=True``
  rounds the text weights to F16 (as the fixture did), so an F16 file holds them exactly.
* ``save_model(model, dir, layout="hf"|"hub", tokenizer="both"|"model"|"json")`` - ``save_pretrained``
  (float32, one ``model.safetensors``: the checkpoint's own names ``visual.*`` / ``mlp_AR.*`` / ``model.*``, no
  ``lm_head``: tied) plus the tokenizer, ``preprocessor_config.json`` (the official min/max pixels 147384 /
  2822400, mean = std = 0.5, patch 14, merge 2) and ``chat_template.jinja``. ``layout="hub"`` rewrites
  ``config.json`` into the hub repos' layout (text fields at the top level, ``rope_scaling.mrope_section``,
  ``vision_config.architectures = ["PaddleOCRVisionModel"]``, the remote-code extras) and adds the unused
  tensors the published checkpoint carries (``packing_position_embedding``, the SigLIP ``head.*``).
* The tokenizer is the llama.cpp fixture's own vocabulary (a small SentencePiece BPE: 400 trained pieces, byte
  fallback, no dummy prefix, identity normalisation; ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2; padded to 103424 with
  unreachable ``<|unused_i|>`` pieces; the specials at their real ids as control pieces), read from its text
  GGUF and written as ``tokenizer.model`` (a SentencePiece ``ModelProto``, serialised here) and/or
  ``tokenizer.json`` (the ``tokenizers`` BPE transformers 5 builds for a Llama tokenizer: merges from
  ``generate_merges``, Metaspace that never prepends, byte fallback), with ``tokenizer_config.json``
  (``add_bos_token`` false, ``add_prefix_space`` false, the specials in ``added_tokens_decoder``).
* ``get_tiny_paddleocr(...)`` / ``get_tiny_paddleocr_model(...)`` - the same, built once per test session
  (``reference_models``' cache); treat the results as read-only.

Reference outputs (transformers, float32, CPU), for the native tests:

* ``preprocess(images)`` - ``PaddleOCRVLImageProcessorPil`` with the official settings: ``pixel_values``
  [patches of all images, 3, 14, 14] (each image's patches in raster order) and ``image_grid_thw`` [n, 3].
* ``reference_features(model, images)`` - per image: the patch embeddings after the position embedding
  ``[gh·gw, C]``, the encoder output after ``post_layernorm`` ``[gh·gw, C]`` and the projected tokens
  ``[gh·gw/4, text width]`` (raster order of the merged grid), from one ``get_image_features`` call over all
  images (transformers' flattened multi-image pass).
* ``reference_prompt(model, images, task, n_new)`` - the chat template rendered (``<|begin_of_sentence|>User: `` +
  per image ``<|IMAGE_START|>`` + gh·gw/4 × ``<|IMAGE_PLACEHOLDER|>`` + ``<|IMAGE_END|>`` + task + ``\\nAssistant: ``)
  and tokenized, ``mm_token_type_ids``, the 3-D ``position_ids`` of ``get_rope_index`` and ``rope_delta``, the
  logits of every prompt position, and ``n_new`` greedy tokens (plain argmax, no EOS rule) with their logits.
"""
from __future__ import annotations

import copy
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

import reference_models as rm
from gguf_bytes import read_gguf

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
FIXTURE_DIR = SHARED / "fixtures" / "llamacpp-tiny-paddleocr-vl"

VOCAB_SIZE = 103424
IMAGE_TOKEN_ID, IMAGE_START_ID, IMAGE_END_ID = 100295, 101305, 101306
BOS_ID, EOS_ID, UNK_ID, PAD_ID, CLS_ID = 1, 2, 0, 0, 100273
SPECIAL_TOKENS: dict[int, str] = {0: "<unk>", 1: "<s>", 2: "</s>", 100273: "<|begin_of_sentence|>",
                                  100295: "<|IMAGE_PLACEHOLDER|>", 101305: "<|IMAGE_START|>", 101306: "<|IMAGE_END|>"}
TASKS = ("OCR:", "Table Recognition:", "Formula Recognition:", "Chart Recognition:")
MIN_PIXELS, MAX_PIXELS = 147384, 2822400  # the official preprocessor_config.json's

# spec §8, verbatim
TINY_CONFIG: dict[str, Any] = dict(
    vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                       image_size=384, patch_size=14, spatial_merge_size=2),
    text_config=dict(vocab_size=103424, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, initializer_range=0.2,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0,
                     rope_parameters=dict(rope_type="default", rope_theta=500000.0, mrope_section=[2, 3, 3])))

# the chat template of the llama.cpp fixture (spec §6's prompt: "... \nAssistant: ")
CHAT_TEMPLATE = """{%- if not add_generation_prompt is defined -%}
    {%- set add_generation_prompt = true -%}
{%- endif -%}
{%- if not cls_token is defined -%}
    {%- set cls_token = "<|begin_of_sentence|>" -%}
{%- endif -%}
{%- if not eos_token is defined -%}
    {%- set eos_token = "</s>" -%}
{%- endif -%}
{%- if not image_token is defined -%}
    {%- set image_token = "<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>" -%}
{%- endif -%}
{{- cls_token -}}
{%- for message in messages -%}
    {%- if message["role"] == "user" -%}
        {{- "User: " -}}
        {%- for content in message["content"] -%}
            {%- if content["type"] == "image" -%}
                {{ image_token }}
            {%- endif -%}
        {%- endfor -%}
        {%- for content in message["content"] -%}
            {%- if content["type"] == "text" -%}
                {{ content["text"] }}
            {%- endif -%}
        {%- endfor -%}
        {{ "\\n" -}}
    {%- elif message["role"] == "assistant" -%}
        {{- "Assistant: " -}}
        {%- for content in message["content"] -%}
            {%- if content["type"] == "text" -%}
                {{ content["text"] }}
            {%- endif -%}
        {%- endfor -%}
        {{ eos_token -}}
    {%- elif message["role"] == "system" -%}
        {%- for content in message["content"] -%}
            {%- if content["type"] == "text" -%}
                {{ content["text"] + "\\n" }}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- "Assistant: " -}}
{%- endif -%}
"""

PREPROCESSOR_CONFIG = {
    "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "PaddleOCRVLImageProcessor", "image_std": [0.5, 0.5, 0.5],
    "max_pixels": MAX_PIXELS, "merge_size": 2, "min_pixels": MIN_PIXELS, "patch_size": 14,
    "processor_class": "PaddleOCRVLProcessor", "resample": 3, "rescale_factor": 1 / 255, "temporal_patch_size": 1,
}

# the vision redraw (the llama.cpp fixture README's recipe): std per kind; matrices get 1/sqrt(fan_in)
REDRAW_STD = {"table": 0.5, "bias": 0.05, "norm": 0.1}


def fixture_config() -> dict[str, Any]:
    """The llama.cpp fixture's transformers config (``../shared/fixtures/llamacpp-tiny-paddleocr-vl``)."""
    return json.loads((FIXTURE_DIR / "transformers_config.json").read_text())


def _config_key(config: dict | None) -> str:
    return json.dumps(config if config is not None else TINY_CONFIG, sort_keys=True)


# ---- the model ------------------------------------------------------------------------------------------
def _redraw_kind(name: str, ndim: int) -> str:
    if name.endswith("position_embedding.weight"):
        return "table"
    if name.endswith(".bias"):
        return "bias"
    return "norm" if ndim == 1 else "matrix"


def redraw_vision(model, seed: int) -> None:
    """Redraw every vision-tower and projector parameter for O(1) activations."""
    import torch

    g = torch.Generator().manual_seed(20_000 + seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith(("model.visual.", "model.projector.")):
                continue
            kind = _redraw_kind(name, p.ndim)
            x = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if kind == "matrix":
                p.copy_(x / float(np.sqrt(np.prod(p.shape[1:]))))
            elif kind == "norm":
                p.copy_(1.0 + x * REDRAW_STD["norm"])
            else:
                p.copy_(x * REDRAW_STD[kind])


def make_model(seed: int = 0, config: dict | None = None, *, f16_text: bool = False):
    """The tiny reference model (eval mode, float32): spec §8's config unless ``config`` is given."""
    import torch
    from transformers import PaddleOCRVLConfig, PaddleOCRVLForConditionalGeneration

    cfg_dict = copy.deepcopy(config if config is not None else TINY_CONFIG)
    cfg = PaddleOCRVLConfig.from_dict(cfg_dict) if "model_type" in cfg_dict else PaddleOCRVLConfig(**cfg_dict)
    torch.manual_seed(seed)
    model = PaddleOCRVLForConditionalGeneration(cfg).eval()
    redraw_vision(model, seed)
    if f16_text:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.startswith("model.language_model."):
                    p.copy_(p.half().float())
    return model


# ---- the tokenizer --------------------------------------------------------------------------------------
@dataclass
class SpmVocabulary:
    """A SentencePiece vocabulary: pieces, scores and sentencepiece types (1 normal, 2 unknown, 3 control,
    4 user-defined, 5 unused, 6 byte), and the model's settings."""

    pieces: list[str]
    scores: list[float]
    types: list[int]
    model_type: str = "bpe"  # "bpe" | "unigram"
    byte_fallback: bool = True
    add_dummy_prefix: bool = False
    unk_id: int = UNK_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    pad_id: int = -1


def _read_gguf_tokenizer(path: Path) -> dict[str, Any]:
    """The KV pairs of a GGUF, its ``tokenizer.ggml.*`` arrays among them (tests/gguf_bytes.py: not the runtime's
    reader)."""
    return read_gguf(path, kv_only=True)[0]


_FIXTURE_VOCAB: SpmVocabulary | None = None


def fixture_vocabulary() -> SpmVocabulary:
    """The llama.cpp fixture's tokenizer as the SentencePiece model it was converted from: its pieces and scores,
    with sentencepiece's own types and scores for the specials (llama.cpp's converter turned those into CONTROL
    tokens of score -1000 through ``added_tokens_decoder``)."""
    global _FIXTURE_VOCAB
    if _FIXTURE_VOCAB is None:
        kv = _read_gguf_tokenizer(FIXTURE_DIR / "text-f16.gguf")
        pieces = list(kv["tokenizer.ggml.tokens"])
        scores = [float(s) for s in kv["tokenizer.ggml.scores"]]
        types = [int(t) for t in kv["tokenizer.ggml.token_type"]]
        assert len(pieces) == VOCAB_SIZE and all(types[i] == 3 for i in SPECIAL_TOKENS)
        for i in SPECIAL_TOKENS:
            scores[i] = 0.0
        types[UNK_ID] = 2
        _FIXTURE_VOCAB = SpmVocabulary(pieces, scores, types)
    return _FIXTURE_VOCAB


def small_vocabulary(n: int = 1024) -> SpmVocabulary:
    """The fixture's vocabulary cut to ``n`` ids (faster tests): ids 0-2 and the 400 trained pieces stay, the four
    high specials move to ``n - 4 .. n - 1`` (``small_ids(n)``), the rest are unused pieces."""
    v = fixture_vocabulary()
    if n < 420:
        raise ValueError("n must be at least 420")
    pieces, scores, types = v.pieces[:n], v.scores[:n], v.types[:n]
    for k, i in enumerate(sorted(i for i in SPECIAL_TOKENS if i > 2)):
        j = n - 4 + k
        pieces[j], scores[j], types[j] = v.pieces[i], 0.0, 3
    return SpmVocabulary(pieces, scores, types)


def small_ids(n: int = 1024) -> dict[str, int]:
    """Where ``small_vocabulary(n)`` puts the special ids (config keys -> id)."""
    return {"cls": n - 4, "image_token_id": n - 3, "vision_start_token_id": n - 2, "vision_end_token_id": n - 1}


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _pb(field_no: int, value) -> bytes:
    """One protobuf field: bytes/str (length-delimited), float (fixed32), bool/int (varint)."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return _varint(field_no << 3 | 2) + _varint(len(value)) + value
    if isinstance(value, float):
        return _varint(field_no << 3 | 5) + struct.pack("<f", value)
    return _varint(field_no << 3) + _varint(int(value))


def sentencepiece_model_bytes(v: SpmVocabulary) -> bytes:
    """A sentencepiece ``ModelProto`` (``tokenizer.model``) for a vocabulary: pieces, the trainer settings encoding
    depends on (model type, byte fallback, special ids) and an identity normaliser that keeps whitespace runs."""
    out = bytearray()
    for p, s, t in zip(v.pieces, v.scores, v.types):
        out += _pb(1, _pb(1, p) + _pb(2, float(s)) + _pb(3, t))
    trainer = (_pb(3, {"unigram": 1, "bpe": 2}[v.model_type]) + _pb(4, len(v.pieces)) + _pb(35, v.byte_fallback)
               + _pb(40, v.unk_id) + _pb(41, v.bos_id) + _pb(42, v.eos_id) + _pb(43, v.pad_id))
    normalizer = _pb(1, "identity") + _pb(3, v.add_dummy_prefix) + _pb(4, False) + _pb(5, True)
    out += _pb(2, trainer) + _pb(3, normalizer)
    return bytes(out)


def tokenizer_json(v: SpmVocabulary, *, add_prefix_space: bool = False) -> str:
    """The ``tokenizers`` tokenizer transformers 5's ``LlamaTokenizer`` builds for this vocabulary: a BPE with
    ``generate_merges``' merges (a Unigram with the scores for a unigram model), byte fallback, Metaspace without
    splitting (prepending "▁" to the first segment only when ``add_prefix_space``), the special pieces as special
    added tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers.tokenization_utils_base import generate_merges

    vocab = {}
    for i, p in enumerate(v.pieces):
        vocab.setdefault(p, i)
    if v.model_type == "bpe":
        model = models.BPE(vocab=vocab, merges=generate_merges(vocab), unk_token=v.pieces[v.unk_id], fuse_unk=True,
                           byte_fallback=v.byte_fallback, dropout=None)
    else:
        model = models.Unigram(list(zip(v.pieces, v.scores)), unk_id=v.unk_id, byte_fallback=v.byte_fallback)
    tok = Tokenizer(model)
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", split=False,
                                                 prepend_scheme="first" if add_prefix_space else "never")
    seq = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix_space:
        seq.append(decoders.Strip(content=" ", left=1))
    tok.decoder = decoders.Sequence(seq)
    tok.add_special_tokens([AddedToken(p, normalized=False, special=True) for i, p in enumerate(v.pieces)
                            if v.types[i] in (2, 3)])
    tok.add_tokens([AddedToken(p, normalized=False, special=False) for i, p in enumerate(v.pieces) if v.types[i] == 4])
    return tok.to_str()


def tokenizer_config(v: SpmVocabulary, *, add_prefix_space: bool = False, chat_template: str | None = None) -> dict:
    tc = {
        "add_bos_token": False, "add_eos_token": False, "add_prefix_space": add_prefix_space,
        "bos_token": v.pieces[v.bos_id], "eos_token": v.pieces[v.eos_id], "unk_token": v.pieces[v.unk_id],
        "pad_token": v.pieces[v.unk_id], "clean_up_tokenization_spaces": False, "legacy": False,
        "model_max_length": 131072, "tokenizer_class": "LlamaTokenizer",
        "added_tokens_decoder": {str(i): {"content": p, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True}
                                 for i, p in enumerate(v.pieces) if v.types[i] in (2, 3)},
    }
    if SPECIAL_TOKENS[CLS_ID] in v.pieces:
        tc["cls_token"] = SPECIAL_TOKENS[CLS_ID]
    if chat_template is not None:
        tc["chat_template"] = chat_template
    return tc


def write_tokenizer(model_dir: Path, kind: str = "both", vocab: SpmVocabulary | None = None, *,
                    add_prefix_space: bool = False, template: str = "jinja") -> None:
    """The tokenizer files: ``kind`` "model" (tokenizer.model), "json" (tokenizer.json) or "both", plus
    tokenizer_config.json; the chat template as ``chat_template.jinja`` (``template="jinja"``), inside
    tokenizer_config.json (``"config"``) or nowhere (``None``)."""
    if kind not in ("both", "model", "json"):
        raise ValueError(f"kind must be 'both', 'model' or 'json', not {kind!r}")
    v = vocab or fixture_vocabulary()
    model_dir = Path(model_dir)
    if kind in ("both", "model"):
        (model_dir / "tokenizer.model").write_bytes(sentencepiece_model_bytes(v))
    if kind in ("both", "json"):
        (model_dir / "tokenizer.json").write_text(tokenizer_json(v, add_prefix_space=add_prefix_space),
                                                  encoding="utf-8")
    tc = tokenizer_config(v, add_prefix_space=add_prefix_space,
                          chat_template=CHAT_TEMPLATE if template == "config" else None)
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=1), encoding="utf-8")
    if template == "jinja":
        (model_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")


_HF_TOKENIZER = None


def hf_tokenizer():
    """The ``tokenizers`` tokenizer of the reference checkpoints (what their tokenizer.json holds)."""
    global _HF_TOKENIZER
    if _HF_TOKENIZER is None:
        from tokenizers import Tokenizer
        _HF_TOKENIZER = Tokenizer.from_str(tokenizer_json(fixture_vocabulary()))
    return _HF_TOKENIZER


# ---- the hub repos' config layout -----------------------------------------------------------------------
def hub_config(hf: dict, name: str, *, tie: bool = True) -> dict:
    """config.json in the hub repos' layout, from a saved transformers config (as the fixture README describes:
    the text fields at the top level, ``rope_scaling.mrope_section``, ``vision_config.architectures``)."""
    t, v = hf["text_config"], hf["vision_config"]
    rp = t["rope_parameters"]
    cfg = {
        "_name_or_path": name,
        "architectures": ["PaddleOCRVLForConditionalGeneration"],
        "auto_map": {"AutoConfig": "configuration_paddleocr_vl.PaddleOCRVLConfig",
                     "AutoModel": "modeling_paddleocr_vl.PaddleOCRVLForConditionalGeneration"},
        "model_type": "paddleocr_vl",
        "bos_token_id": t["bos_token_id"], "eos_token_id": t["eos_token_id"], "pad_token_id": t["pad_token_id"],
        "compression_ratio": 1.0, "head_dim": t["head_dim"], "hidden_act": t["hidden_act"],
        "hidden_dropout_prob": 0.0, "hidden_size": t["hidden_size"], "ignored_index": -100,
        "image_token_id": hf["image_token_id"], "intermediate_size": t["intermediate_size"],
        "max_position_embeddings": t["max_position_embeddings"], "max_sequence_length": None,
        "num_attention_heads": t["num_attention_heads"], "num_hidden_layers": t["num_hidden_layers"],
        "num_key_value_heads": t["num_key_value_heads"], "rms_norm_eps": t["rms_norm_eps"],
        "rope_is_neox_style": True,
        "rope_scaling": {"mrope_section": list(rp["mrope_section"]), "rope_type": "default", "type": "default"},
        "rope_theta": rp["rope_theta"], "tie_word_embeddings": tie, "torch_dtype": "bfloat16",
        "use_3d_rope": True, "use_bias": False, "use_cache": False, "use_flash_attention": False,
        "video_token_id": hf["video_token_id"], "vision_start_token_id": hf["vision_start_token_id"],
        "vision_end_token_id": hf["vision_end_token_id"], "vocab_size": t["vocab_size"],
        "weight_share_add_bias": True,
        "vision_config": {
            "architectures": ["PaddleOCRVisionModel"], "attention_dropout": 0.0,
            "auto_map": {"AutoConfig": "configuration_paddleocr_vl.PaddleOCRVisionConfig",
                         "AutoModel": "modeling_paddleocr_vl.SiglipVisionModel"},
            "hidden_act": v["hidden_act"], "hidden_size": v["hidden_size"], "image_size": v["image_size"],
            "intermediate_size": v["intermediate_size"], "layer_norm_eps": v["layer_norm_eps"],
            "model_type": "paddleocr_vl", "num_attention_heads": v["num_attention_heads"],
            "num_channels": v["num_channels"], "num_hidden_layers": v["num_hidden_layers"],
            "pad_token_id": 0, "patch_size": v["patch_size"], "spatial_merge_size": v["spatial_merge_size"],
            "temporal_patch_size": 2, "tokens_per_second": 2, "torch_dtype": "bfloat16",
        },
    }
    return cfg


def unused_hub_tensors(hf: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Tensors the published checkpoint holds and nothing uses (transformers ignores them on load): the NaViT
    packing position table and SigLIP's attention-pooling head (small shapes, the real names)."""
    W, I = hf["vision_config"]["hidden_size"], hf["vision_config"]["intermediate_size"]
    g = np.random.default_rng(seed)
    h = "visual.vision_model.head."
    shapes = {
        "visual.vision_model.embeddings.packing_position_embedding.weight": (64, W),
        h + "probe": (1, 1, W), h + "attention.in_proj_weight": (3 * W, W), h + "attention.in_proj_bias": (3 * W,),
        h + "attention.out_proj.weight": (W, W), h + "attention.out_proj.bias": (W,),
        h + "layernorm.weight": (W,), h + "layernorm.bias": (W,),
        h + "mlp.fc1.weight": (I, W), h + "mlp.fc1.bias": (I,), h + "mlp.fc2.weight": (W, I), h + "mlp.fc2.bias": (W,),
    }
    return {k: g.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def rewrite_config_hub(model_dir: Path, name: str | None = None, *, tie: bool = True,
                       unused_tensors: bool = True) -> dict:
    """Rewrite a saved transformers ``config.json`` into the hub layout, in place; with ``unused_tensors`` add the
    published checkpoint's unused tensors to ``model.safetensors``."""
    model_dir = Path(model_dir)
    hf = json.loads((model_dir / "config.json").read_text())
    cfg = hub_config(hf, name or model_dir.name, tie=tie)
    (model_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    if unused_tensors:
        tensors = {k: np.array(v, copy=True) for k, v in rm.read_checkpoint_f32(model_dir).items()}
        tensors.update(unused_hub_tensors(hf))
        tmp = model_dir / "model.safetensors.tmp"
        rm.write_safetensors(tmp, tensors)
        tmp.replace(model_dir / "model.safetensors")
    return cfg


def save_model(model, out_dir: Path, *, layout: str = "hf", tokenizer: str = "both", template: str = "jinja",
               preprocessor: dict | None = None, vocab: SpmVocabulary | None = None) -> Path:
    """``save_pretrained`` (float32, one file) + tokenizer + preprocessor_config.json + chat template;
    ``layout="hub"`` rewrites the config (see the module docstring)."""
    if layout not in ("hf", "hub"):
        raise ValueError(f"layout must be 'hf' or 'hub', not {layout!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, max_shard_size="100GB")
    write_tokenizer(out_dir, tokenizer, vocab, template=template)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor or PREPROCESSOR_CONFIG, indent=1))
    if layout == "hub":
        rewrite_config_hub(out_dir, name=out_dir.name)
    return out_dir


def build_tiny_paddleocr(out_dir: Path, *, seed: int = 0, layout: str = "hf", config: dict | None = None,
                         tokenizer: str = "both", f16_text: bool = False, **kw) -> Path:
    """Build and save a tiny reference model (see the module docstring)."""
    return save_model(make_model(seed, config, f16_text=f16_text), out_dir, layout=layout, tokenizer=tokenizer, **kw)


# ---- per-session cache ----------------------------------------------------------------------------------
_MODELS: dict[tuple, Any] = {}


def get_tiny_paddleocr_model(*, seed: int = 0, config: dict | None = None, f16_text: bool = False):
    """``make_model`` once per (seed, config, f16_text) per process; treat the result as read-only."""
    key = (seed, _config_key(config), f16_text)
    if key not in _MODELS:
        _MODELS[key] = make_model(seed, config, f16_text=f16_text)
    return _MODELS[key]


def get_tiny_paddleocr(*, seed: int = 0, layout: str = "hf", config: dict | None = None, tokenizer: str = "both",
                       f16_text: bool = False) -> Path:
    """``build_tiny_paddleocr`` once per arguments per process (the weights of ``get_tiny_paddleocr_model``)."""
    key = ("tiny-paddleocr", seed, layout, _config_key(config), tokenizer, f16_text)
    if key not in rm._CACHE:
        d = rm._cache_root() / f"tiny-paddleocr-{layout}-{tokenizer}-s{seed}-{len(rm._CACHE)}"
        rm._CACHE[key] = save_model(get_tiny_paddleocr_model(seed=seed, config=config, f16_text=f16_text), d,
                                    layout=layout, tokenizer=tokenizer)
    return rm._CACHE[key]


def load_tiny_paddleocr(model_dir: Path):
    """A saved model read back with ``from_pretrained`` (eval, float32)."""
    from transformers import PaddleOCRVLForConditionalGeneration
    return PaddleOCRVLForConditionalGeneration.from_pretrained(model_dir, dtype="float32").eval()


# ---- reference outputs ----------------------------------------------------------------------------------
def image_processor(min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS):
    """``PaddleOCRVLImageProcessorPil`` with the official settings (the class defaults differ: CLIP's mean/std,
    other pixel bounds)."""
    from transformers.models.paddleocr_vl.image_processing_pil_paddleocr_vl import PaddleOCRVLImageProcessorPil
    return PaddleOCRVLImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3, min_pixels=min_pixels,
                                        max_pixels=max_pixels)


@dataclass
class Preprocessed:
    pixel_values: np.ndarray  # [patches of all images, 3, 14, 14] float32, each image's patches in raster order
    image_grid_thw: np.ndarray  # [n, 3] int64: (1, gh, gw) per image

    def patches(self, i: int) -> np.ndarray:
        """Image ``i``'s patches [gh·gw, 3, 14, 14]."""
        n = [int(np.prod(g)) for g in self.image_grid_thw]
        return self.pixel_values[sum(n[:i]):sum(n[:i + 1])]

    def pixels(self, i: int) -> np.ndarray:
        """Image ``i`` as the processor resized and normalised it: [gh·14, gw·14, 3] float32 (HWC)."""
        _, gh, gw = (int(x) for x in self.image_grid_thw[i])
        p = self.patches(i).reshape(gh, gw, 3, 14, 14)
        return p.transpose(0, 3, 1, 4, 2).reshape(gh * 14, gw * 14, 3)

    def n_tokens(self, i: int, merge: int = 2) -> int:
        return int(np.prod(self.image_grid_thw[i])) // (merge * merge)


def preprocess(images: Iterable, **kw) -> Preprocessed:
    images = [im.convert("RGB") for im in images]
    feat = image_processor(**kw)(images=images, return_tensors="np")
    return Preprocessed(np.asarray(feat["pixel_values"], np.float32), np.asarray(feat["image_grid_thw"], np.int64))


@dataclass
class ImageRef:
    """One image's stage outputs (float32)."""

    grid: tuple[int, int]  # (gh, gw) in patches
    embeddings: np.ndarray  # [gh·gw, C]: patch embedding + resampled position table
    encoder: np.ndarray  # [gh·gw, C]: after the last layer and post_layernorm
    projected: np.ndarray  # [gh·gw/4, text width]: the image tokens the decoder receives


@dataclass
class FeatureRef:
    images: list[ImageRef]
    pre: Preprocessed


def reference_features(model, images: Iterable, pre: Preprocessed | None = None) -> FeatureRef:
    """transformers' stage outputs for ``images`` (PIL), all images in one ``get_image_features`` call."""
    import torch

    images = list(images)
    pre = pre if pre is not None else preprocess(images)
    vm = model.model.visual.vision_model
    calls: dict[str, list] = {"embeddings": [], "encoder": []}

    def grab(key, fn):
        return lambda module, args, out: calls[key].append(fn(out).detach().float().numpy().copy())

    hooks = [vm.embeddings.register_forward_hook(grab("embeddings", lambda o: o)),
             vm.register_forward_hook(grab("encoder", lambda o: o.last_hidden_state))]
    try:
        with torch.no_grad():
            out = model.model.get_image_features(torch.from_numpy(pre.pixel_values),
                                                 torch.from_numpy(pre.image_grid_thw))
    finally:
        for h in hooks:
            h.remove()
    assert all(len(v) == 1 for v in calls.values()), {k: len(v) for k, v in calls.items()}
    emb, enc = (calls[k][0].reshape(-1, calls[k][0].shape[-1]) for k in ("embeddings", "encoder"))
    refs, start = [], 0
    for i, proj in enumerate(out.pooler_output):
        _, gh, gw = (int(x) for x in pre.image_grid_thw[i])
        n = gh * gw
        refs.append(ImageRef((gh, gw), emb[start:start + n], enc[start:start + n], proj.detach().float().numpy().copy()))
        start += n
    assert start == emb.shape[0]
    return FeatureRef(refs, pre)


def render_prompt(n_images: int, task: str, template: str = CHAT_TEMPLATE) -> str:
    """The chat template rendered for one user message (``n_images`` images, then the task) with the generation
    prompt, each image still one ``<|IMAGE_PLACEHOLDER|>`` (the processor expands it)."""
    import jinja2

    content = [{"type": "image"}] * n_images + [{"type": "text", "text": task}]
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=[{"role": "user", "content": content}],
                                            add_generation_prompt=True)


def expand_image_tokens(text: str, n_tokens: list[int]) -> str:
    """Each ``<|IMAGE_PLACEHOLDER|>`` in turn repeated as many times as its image has tokens (the processor's
    ``replace_image_token``)."""
    ph = SPECIAL_TOKENS[IMAGE_TOKEN_ID]
    parts = text.split(ph)
    assert len(parts) == len(n_tokens) + 1, (len(parts), n_tokens)
    return parts[0] + "".join(ph * n + rest for n, rest in zip(n_tokens, parts[1:]))


@dataclass
class PromptRef:
    text: str  # the rendered, expanded prompt
    input_ids: np.ndarray  # [L] int64
    mm_token_type_ids: np.ndarray  # [L] int32: 1 at image placeholders
    position_ids: np.ndarray  # [3, L] int64: (t, h, w) per token, get_rope_index
    rope_delta: int  # decoding position = cache length + rope_delta on every axis
    logits: np.ndarray  # [L, vocab] of the prompt
    greedy: list[int]  # n_new argmax tokens
    greedy_logits: np.ndarray  # [n_new, vocab]: the logits each greedy token was chosen from
    greedy_margin: float  # the smallest top-1 minus top-2 gap over the greedy steps
    features: FeatureRef | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def reference_prompt(model, images: Iterable, task: str = "OCR:", n_new: int = 16, *, tokenizer=None,
                     template: str = CHAT_TEMPLATE, features: bool = False) -> PromptRef:
    """The prompt for ``images`` and ``task`` as transformers runs it (see the module docstring). ``tokenizer``: a
    ``tokenizers.Tokenizer`` (default: the reference checkpoints')."""
    import torch

    images = list(images)
    tok = tokenizer if tokenizer is not None else hf_tokenizer()
    pre = preprocess(images) if images else None
    n_tok = [pre.n_tokens(i) for i in range(len(images))] if pre is not None else []
    text = expand_image_tokens(render_prompt(len(images), task, template), n_tok)
    ids = np.asarray(tok.encode(text, add_special_tokens=False).ids, np.int64)
    mm = (ids == IMAGE_TOKEN_ID).astype(np.int32)
    assert int(mm.sum()) == sum(n_tok)
    inner = model.model
    input_ids = torch.from_numpy(ids)[None]
    kwargs: dict[str, Any] = {}
    if pre is not None:
        kwargs = dict(pixel_values=torch.from_numpy(pre.pixel_values), image_grid_thw=torch.from_numpy(pre.image_grid_thw),
                      mm_token_type_ids=torch.from_numpy(mm)[None])
    with torch.no_grad():
        inner.rope_deltas = None
        if pre is not None:
            pos, delta = inner.get_rope_index(input_ids, mm_token_type_ids=kwargs["mm_token_type_ids"],
                                              image_grid_thw=kwargs["image_grid_thw"])
            pos, delta = pos[:, 0].numpy().copy(), int(delta.reshape(-1)[0])
        else:
            pos, delta = np.tile(np.arange(len(ids), dtype=np.int64), (3, 1)), 0
        inner.rope_deltas = None
        out = model(input_ids=input_ids, use_cache=True, **kwargs)
        logits = out.logits[0].float().numpy().copy()
        past = out.past_key_values
        greedy, g_logits, margin = [], [], float("inf")
        step = logits[-1]
        for _ in range(n_new):
            top2 = np.sort(step)[-2:]
            margin = min(margin, float(top2[1] - top2[0]))
            nxt = int(np.argmax(step))
            greedy.append(nxt)
            g_logits.append(step)
            if len(greedy) == n_new:
                break
            out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            step = out.logits[0, -1].float().numpy().copy()
        inner.rope_deltas = None
    feats = reference_features(model, images, pre) if features and images else None
    return PromptRef(text, ids, mm, pos, delta, logits, greedy, np.stack(g_logits) if g_logits else
                     np.zeros((0, logits.shape[-1]), np.float32), margin, feats)


__all__ = [
    "TINY_CONFIG", "REDRAW_STD", "FIXTURE_DIR", "VOCAB_SIZE", "SPECIAL_TOKENS", "IMAGE_TOKEN_ID", "IMAGE_START_ID",
    "IMAGE_END_ID", "TASKS", "MIN_PIXELS", "MAX_PIXELS", "CHAT_TEMPLATE", "PREPROCESSOR_CONFIG", "fixture_config",
    "make_model", "redraw_vision", "SpmVocabulary", "fixture_vocabulary", "small_vocabulary", "small_ids",
    "sentencepiece_model_bytes",
    "tokenizer_json", "tokenizer_config", "write_tokenizer", "hf_tokenizer", "hub_config", "unused_hub_tensors",
    "rewrite_config_hub", "save_model", "build_tiny_paddleocr", "get_tiny_paddleocr", "get_tiny_paddleocr_model",
    "load_tiny_paddleocr", "image_processor", "Preprocessed", "preprocess", "ImageRef", "FeatureRef",
    "reference_features", "render_prompt", "expand_image_tokens", "PromptRef", "reference_prompt",
]
