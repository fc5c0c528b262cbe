"""Both DeepSeek-OCR config layouts -> one typed description of the model.

* the original checkpoint layout (``deepseek-ai/DeepSeek-OCR``): ``language_config`` (text fields also
  repeated at top level), ``vision_config.width.{sam_vit_b, clip-l-14-224}``, ``projector_config``;
* the layout transformers' ``save_pretrained`` writes for ``UnlimitedOcrForConditionalGeneration``:
  ``text_config``, ``vision_config.{sam_config, encoder_config}``.

Values the original layout does not state (SAM patch/window/MLP width, neck channels, CLIP MLP width,
...) are left ``None`` here and resolved from tensor shapes by the architecture class.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConversionError

# HF architectures / model types this converter knows (-> the layout their config uses)
ARCHITECTURES_ORIGINAL = ("DeepseekOCRForCausalLM",)
ARCHITECTURES_HF = ("UnlimitedOcrForConditionalGeneration", "UnlimitedOCRForCausalLM")


@dataclass
class TextConfig:
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
class SamConfig:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    global_attn_indexes: list[int]
    downsample_channels: list[int]
    image_size: int = 1024
    patch_size: int | None = None  # original layout: from the patch-embedding kernel
    window_size: int | None = None  # original layout: from a windowed block's rel-pos table
    mlp_dim: int | None = None
    output_channels: int | None = None  # neck width
    layer_norm_eps: float = 1e-6


@dataclass
class ClipConfig:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int = 224
    patch_size: int = 14
    intermediate_size: int | None = None
    layer_norm_eps: float = 1e-5


@dataclass
class OcrConfig:
    layout: str  # "original" | "hf"
    architecture: str
    path: Path
    text: TextConfig
    sam: SamConfig
    clip: ClipConfig
    projector_input_dim: int | None
    projector_output_dim: int | None
    image_token_id: int | None = None  # None: the tokenizer's <image> id, else 128815
    name: str | None = None
    tile_size: int = 640
    pad_color: tuple[int, int, int] = (127, 127, 127)
    min_tiles: int = 2
    max_tiles: int = 9
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class _Getter:
    """Typed access to one JSON object with errors naming the config file and the key path."""

    def __init__(self, path: Path, obj: Any, where: str):
        self.path, self.obj, self.where = path, obj, where
        if not isinstance(obj, dict):
            raise ConversionError(path, f"{where or 'config'} is not a JSON object")

    def _key(self, k: str) -> str:
        return f"{self.where}.{k}" if self.where else k

    def has(self, k: str) -> bool:
        return k in self.obj and self.obj[k] is not None

    def sub(self, k: str) -> "_Getter":
        if not self.has(k):
            raise ConversionError(self.path, f"missing \"{self._key(k)}\"")
        return _Getter(self.path, self.obj[k], self._key(k))

    def int(self, k: str, default: Any = ..., minimum: int = 0) -> Any:
        if not self.has(k):
            if default is ...:
                raise ConversionError(self.path, f"missing \"{self._key(k)}\"")
            return default
        v = self.obj[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConversionError(self.path, f"\"{self._key(k)}\" must be an integer >= {minimum}, got {v!r}")
        return v

    def float(self, k: str, default: Any = ...) -> Any:
        if not self.has(k):
            if default is ...:
                raise ConversionError(self.path, f"missing \"{self._key(k)}\"")
            return default
        v = self.obj[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConversionError(self.path, f"\"{self._key(k)}\" must be a number, got {v!r}")
        return float(v)

    def bool(self, k: str, default: bool) -> bool:
        if not self.has(k):
            return default
        v = self.obj[k]
        if not isinstance(v, bool):
            raise ConversionError(self.path, f"\"{self._key(k)}\" must be true or false, got {v!r}")
        return v

    def int_list(self, k: str, default: Any = ...) -> Any:
        if not self.has(k):
            if default is ...:
                raise ConversionError(self.path, f"missing \"{self._key(k)}\"")
            return default
        v = self.obj[k]
        if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise ConversionError(self.path, f"\"{self._key(k)}\" must be a list of integers, got {v!r}")
        return list(v)

    def size(self, k: str, default: Any = ...) -> Any:
        """An image/patch size: an int or a square [n, n] pair."""
        if self.has(k) and isinstance(self.obj[k], (list, tuple)):
            v = self.obj[k]
            if len(v) != 2 or v[0] != v[1] or not isinstance(v[0], int):
                raise ConversionError(self.path, f"\"{self._key(k)}\" must be a square size, got {v!r}")
            return v[0]
        return self.int(k, default, minimum=1)


def _load_json(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConversionError(path, f"{what} not found") from None
    except IsADirectoryError:
        raise ConversionError(path, f"{what} is a directory") from None
    except PermissionError:
        raise ConversionError(path, f"cannot read {what}: permission denied") from None
    except UnicodeDecodeError:
        raise ConversionError(path, f"cannot read {what}: not UTF-8 text") from None
    except OSError as e:
        raise ConversionError(path, f"cannot read {what}: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConversionError(path, f"invalid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConversionError(path, f"{what} is not a JSON object")
    return data


def _text_common(g: _Getter, first_k_dense: int, rope_theta: float) -> TextConfig:
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


def _check_no_mla(g: _Getter) -> None:
    if g.bool("use_mla", False) or g.has("kv_lora_rank") or g.has("q_lora_rank"):
        raise ConversionError(g.path, "multi-head latent attention (use_mla / kv_lora_rank / q_lora_rank) "
                                      "is not DeepSeek-OCR and is not supported")


def _parse_original(path: Path, top: _Getter) -> OcrConfig:
    # text fields live in language_config (and are repeated at top level in the real file)
    lang = top.sub("language_config") if top.has("language_config") else top
    _check_no_mla(lang)
    text = _text_common(lang, lang.int("first_k_dense_replace", 1), lang.float("rope_theta", 10000.0))
    vis = top.sub("vision_config")
    width = vis.sub("width")
    if not width.has("sam_vit_b"):
        raise ConversionError(path, "missing \"vision_config.width.sam_vit_b\" (not a DeepSeek-OCR v1 vision tower)")
    if not width.has("clip-l-14-224"):
        raise ConversionError(path, "missing \"vision_config.width.clip-l-14-224\"")
    s = width.sub("sam_vit_b")
    c = width.sub("clip-l-14-224")
    sam = SamConfig(
        hidden_size=s.int("width", minimum=1),
        num_hidden_layers=s.int("layers", minimum=1),
        num_attention_heads=s.int("heads", minimum=1),
        global_attn_indexes=s.int_list("global_attn_indexes", [2, 5, 8, 11]),
        downsample_channels=s.int_list("downsample_channels", [512, 1024]),
        image_size=vis.size("image_size", 1024),
    )
    clip = ClipConfig(
        hidden_size=c.int("width", minimum=1),
        num_hidden_layers=c.int("layers", minimum=1),
        num_attention_heads=c.int("heads", minimum=1),
        image_size=c.size("image_size", 224),
        patch_size=c.size("patch_size", 14),
    )
    proj_in = proj_out = None
    if top.has("projector_config"):
        p = top.sub("projector_config")
        ptype = p.obj.get("projector_type", "linear")
        if ptype != "linear":
            raise ConversionError(path, f"projector_config.projector_type {ptype!r} is not supported (only linear)")
        proj_in = p.int("input_dim", None, minimum=1)
        proj_out = p.int("n_embed", None, minimum=1)
    return OcrConfig(layout="original", architecture="", path=path, text=text, sam=sam, clip=clip,
                     projector_input_dim=proj_in, projector_output_dim=proj_out,
                     image_token_id=top.int("image_token_id", None))


def _parse_hf(path: Path, top: _Getter) -> OcrConfig:
    t = top.sub("text_config")
    _check_no_mla(t)
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
    if t.has("rope_parameters"):
        rp = t.sub("rope_parameters")
        rtype = rp.obj.get("rope_type", "default")
        if rtype != "default":
            raise ConversionError(path, f"text_config.rope_parameters.rope_type {rtype!r} is not supported")
        theta = rp.float("rope_theta", 10000.0)
    else:
        theta = t.float("rope_theta", 10000.0)
    text = _text_common(t, first_k, theta)
    if not t.bool("tie_word_embeddings", False) and top.bool("tie_word_embeddings", False):
        text.tie_word_embeddings = True
    vis = top.sub("vision_config")
    s = vis.sub("sam_config")
    c = vis.sub("encoder_config")
    sam = SamConfig(
        hidden_size=s.int("hidden_size", 768, minimum=1),
        num_hidden_layers=s.int("num_hidden_layers", 12, minimum=1),
        num_attention_heads=s.int("num_attention_heads", 12, minimum=1),
        global_attn_indexes=s.int_list("global_attn_indexes", [2, 5, 8, 11]),
        downsample_channels=s.int_list("downsample_channels", [512, 1024]),
        image_size=s.size("image_size", 1024),
        patch_size=s.size("patch_size", 16),
        window_size=s.int("window_size", 14, minimum=1),
        mlp_dim=s.int("mlp_dim", 3072, minimum=1),
        output_channels=s.int("output_channels", 256, minimum=1),
        layer_norm_eps=s.float("layer_norm_eps", 1e-6),
    )
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


def load_config(model_dir: Path) -> OcrConfig:
    """Read ``config.json`` (and ``processor_config.json`` when present) of a checkpoint directory."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise ConversionError(model_dir, "model directory not found")
    if not model_dir.is_dir():
        raise ConversionError(model_dir, "not a directory")
    path = model_dir / "config.json"
    data = _load_json(path, "config.json")
    top = _Getter(path, data, "")
    archs = data.get("architectures") or []
    if not isinstance(archs, list):
        raise ConversionError(path, f"\"architectures\" must be a list, got {archs!r}")
    arch = archs[0] if archs else None
    if arch in ARCHITECTURES_ORIGINAL or (arch is None and "language_config" in data and "vision_config" in data):
        cfg = _parse_original(path, top)
    elif arch in ARCHITECTURES_HF or (arch is None and data.get("model_type") == "unlimited_ocr"):
        cfg = _parse_hf(path, top)
    else:
        known = ", ".join(ARCHITECTURES_ORIGINAL + ARCHITECTURES_HF)
        raise ConversionError(path, f"unknown architecture {arch or data.get('model_type')!r} "
                                    f"(this converter handles {known})")
    cfg.architecture = arch or ("DeepseekOCRForCausalLM" if cfg.layout == "original"
                                else "UnlimitedOcrForConditionalGeneration")
    cfg.raw = data
    name = data.get("_name_or_path")
    cfg.name = Path(name).name if isinstance(name, str) and name else model_dir.resolve().name
    # preprocessing facts, where the checkpoint states them
    pp = model_dir / "processor_config.json"
    if pp.exists():
        pdata = _load_json(pp, "processor_config.json")
        for key in ("image_mean", "image_std"):
            v = pdata.get(key)
            if v is not None:
                if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
                    raise ConversionError(pp, f"\"{key}\" must be a list of 3 numbers, got {v!r}")
                setattr(cfg, key, [float(x) for x in v])
    return cfg
