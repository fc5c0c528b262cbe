"""Tiny DeepSeek-OCR-2 reference checkpoints and reference outputs for tests (see
../shared/spec/deepseek-ocr-2.md §7 and ../shared/spec/references.md).

What it builds:

* ``make_model(seed=0, config=None)`` - a transformers 5.23 ``DeepseekOcr2ForConditionalGeneration`` with
  random weights: by default the config of spec §7 (``TINY_CONFIG``: SAM hidden 32 / 2 blocks / 2 heads /
  global block 1 / neck 16 / downsample [16, 32] / MLP 64; encoder hidden 32 / 2 layers / 4 heads / 2 KV
  heads / SwiGLU 64 / θ 1e6; text hidden 64 / 3 layers (dense, sparse, sparse) / 4 heads / 8 experts of 32,
  top-2 greedy, 2 shared / vocab 129280, ``initializer_range=0.2``), or any other config dict (e.g.
  ``fixture_config()``, the llama.cpp fixture's ``transformers_config.json`` with its 4-layer encoder).
  ``torch.manual_seed(seed)`` before construction; then the vision weights are redrawn for O(1)
  activations the way ``../shared/fixtures/llamacpp-tiny-ocr2/README.md`` describes (SAM matrices
  N(0, 0.05), rel-pos and position tables N(0, 0.1), query tables N(0, 0.5), separator N(0, 1), encoder and
  projector matrices N(0, 0.15), biases N(0, 0.05), norm weights 1 + N(0, 0.1)), so that comparisons of
  stage outputs mean something (transformers' own init leaves SAM near zero and the tables at zero).
* ``build_tiny_ocr2(dir, seed=0, layout="hf"|"original", config=None)`` - that model saved with
  ``save_pretrained`` (float32, one ``model.safetensors``: the checkpoint's original tensor names) plus the
  tokenizer files ``reference_models.write_tokenizer`` writes for v1 (real special ids, vocab 129280).
  ``layout="original"`` rewrites ``config.json`` into the published original layout
  (``architectures ["DeepseekOCR2ForCausalLM"]``, ``language_config``, ``vision_config.model_name
  "deepencoderv2"``, ``vision_config.width.sam_vit_b`` / ``["qwen2-0-5b"].dim``, ``projector_config``) and
  adds ``processor_config.json``; like the published config it states no encoder depth or FFN width
  (``encoder_keys`` adds those llama.cpp's converter reads; the heads are always stated, since the tiny
  width is not the published 896).
* ``get_tiny_ocr2(...)`` / ``get_tiny_ocr2_model(...)`` - the same, built once per test session
  (``reference_models``' cache); treat the results as read-only.

Reference outputs (transformers, float32, CPU), for the native tests:

* ``preprocess(images, mode)`` - ``DeepseekOcr2ImageProcessorPil``'s arrays: mode ``"gundam"`` is the
  default processor (global view 1024 + 768 tiles when a side exceeds 768, 2..6 tiles), ``"base"`` is
  ``crop_to_patches=False`` (one view made at 768).
* ``reference_features(model, images, mode)`` - per image the laid-out features the decoder receives
  (``model.model.get_image_features(...).pooler_output``: tiles' tokens, global view's, separator), and per
  VIEW the stage outputs: SAM output tokens ``[n, C]`` (``sam_encoder`` ``last_hidden_state`` flattened
  row-major), the encoder's output at the query positions after its final norm ``[n, C]``, and the projected
  tokens ``[n, text width]``; views are numbered page by page, each page's tiles first (raster order), then
  its global view. Each view also carries its preprocessed pixels.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

import reference_models as rm

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
FIXTURE_DIR = SHARED / "fixtures" / "llamacpp-tiny-ocr2"

MODES = ("gundam", "base")

# spec §7, verbatim
TINY_CONFIG: dict[str, Any] = dict(
    vision_config=dict(
        sam_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, global_attn_indexes=[1],
                        output_channels=16, downsample_channels=[16, 32], mlp_dim=64),
        encoder_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=64, vocab_size=1, rope_theta=1e6, max_position_embeddings=1024)),
    text_config=dict(vocab_size=129280, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                     num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8,
                     n_shared_experts=2, num_experts_per_tok=2, topk_method="greedy",
                     mlp_layer_types=["dense", "sparse", "sparse"], bos_token_id=0, eos_token_id=1,
                     max_position_embeddings=8192, rope_theta=10000.0, initializer_range=0.2),
    image_token_id=128815)

# the vision redraw (the llama.cpp fixture README's recipe): name class -> std (norm weights: 1 + N(0, std))
REDRAW_STD = {"sam_matrix": 0.05, "table": 0.1, "query": 0.5, "separator": 1.0, "matrix": 0.15, "bias": 0.05,
              "norm": 0.1}


def fixture_config() -> dict[str, Any]:
    """The llama.cpp fixture's transformers config (``../shared/fixtures/llamacpp-tiny-ocr2``)."""
    return json.loads((FIXTURE_DIR / "transformers_config.json").read_text())


def _config_key(config: dict | None) -> str:
    return json.dumps(config if config is not None else TINY_CONFIG, sort_keys=True)


def _redraw_class(name: str, ndim: int) -> str:
    """Which redraw a vision parameter (transformers' in-memory name) gets."""
    if name.endswith("view_separator"):
        return "separator"
    if "query_768_resolution" in name or "query_1024_resolution" in name:
        return "query"
    if name.endswith(("pos_embed", "rel_pos_h", "rel_pos_w")):
        return "table"
    if name.endswith(".bias"):
        return "bias"
    if ndim == 1:
        return "norm"
    return "sam_matrix" if ".sam_encoder." in name else "matrix"


def redraw_vision(model, seed: int) -> None:
    """Redraw every vision parameter (SAM, encoder, queries, projector, separator) for O(1) activations."""
    import torch

    g = torch.Generator().manual_seed(10_000 + seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not (".vision_tower." in name or ".multi_modal_projector." in name or name.endswith("view_separator")):
                continue
            kind = _redraw_class(name, p.ndim)
            x = torch.randn(p.shape, generator=g, dtype=torch.float32) * REDRAW_STD[kind]
            p.copy_(x + 1.0 if kind == "norm" else x)


def make_model(seed: int = 0, config: dict | None = None):
    """The tiny reference model (eval mode, float32): spec §7's config unless ``config`` is given."""
    import torch
    from transformers import DeepseekOcr2Config, DeepseekOcr2ForConditionalGeneration

    cfg_dict = copy.deepcopy(config if config is not None else TINY_CONFIG)
    cfg = DeepseekOcr2Config.from_dict(cfg_dict) if "model_type" in cfg_dict else DeepseekOcr2Config(**cfg_dict)
    torch.manual_seed(seed)
    model = DeepseekOcr2ForConditionalGeneration(cfg).eval()
    redraw_vision(model, seed)
    return model


# ---- the original (published) config layout -------------------------------------------------------------
def original_config(hf: dict, name: str, *, encoder_keys: bool = False, heads: bool = True,
                    sam_downsample: list[int] | None = None) -> dict:
    """config.json in the published original layout, from a saved transformers config.

    The published config states only the encoder width (``width["qwen2-0-5b"].dim``); ``encoder_keys`` adds
    ``vision_config.layers / intermediate_size`` (what llama.cpp's converter reads, as its tiny fixture did).
    ``heads`` writes ``vision_config.num_attention_heads`` (a converter can only assume the published 14 for
    width 896: the tiny widths need it; ``heads=False`` is the published config's shape).
    ``sam_downsample`` overrides ``sam_vit_b.downsample_channels`` (the official code does not read it)."""
    t = hf["text_config"]
    s = hf["vision_config"]["sam_config"]
    e = hf["vision_config"]["encoder_config"]
    kinds = t["mlp_layer_types"]
    lang = {
        "architectures": ["DeepseekV2ForCausalLM"], "bos_token_id": t["bos_token_id"],
        "eos_token_id": t["eos_token_id"], "first_k_dense_replace": kinds.count("dense"),
        "hidden_size": t["hidden_size"], "intermediate_size": t["intermediate_size"], "kv_lora_rank": None,
        "lm_head": True, "max_position_embeddings": t["max_position_embeddings"],
        "moe_intermediate_size": t["moe_intermediate_size"], "n_group": 1, "n_routed_experts": t["n_routed_experts"],
        "n_shared_experts": t["n_shared_experts"], "num_attention_heads": t["num_attention_heads"],
        "num_experts_per_tok": t["num_experts_per_tok"], "num_hidden_layers": t["num_hidden_layers"],
        "num_key_value_heads": t["num_key_value_heads"], "q_lora_rank": None, "qk_nope_head_dim": 0,
        "qk_rope_head_dim": 0, "rm_head": False, "topk_group": 1, "topk_method": "greedy",
        "torch_dtype": "bfloat16", "use_mla": False, "v_head_dim": 0, "vocab_size": t["vocab_size"],
    }
    vision: dict[str, Any] = {
        "image_size": s["image_size"], "mlp_ratio": 3.7362, "model_name": "deepencoderv2", "model_type": "vision",
        "width": {
            "qwen2-0-5b": {"dim": e["hidden_size"]},
            "sam_vit_b": {"downsample_channels": list(sam_downsample or s["downsample_channels"]),
                          "global_attn_indexes": list(s["global_attn_indexes"]), "heads": s["num_attention_heads"],
                          "layers": s["num_hidden_layers"], "width": s["hidden_size"]},
        },
    }
    if heads:
        vision["num_attention_heads"] = e["num_attention_heads"]
    if encoder_keys:
        vision["layers"] = e["num_hidden_layers"]
        vision["intermediate_size"] = e["intermediate_size"]
    cfg = {
        "_name_or_path": name,
        "architectures": ["DeepseekOCR2ForCausalLM"],
        "candidate_resolutions": [[1024, 1024]],
        "global_view_pos": "head",
        "language_config": lang,
        "model_type": "deepseek_vl_v2",
        "projector_config": {"input_dim": e["hidden_size"], "model_type": "mlp_projector",
                             "n_embed": t["hidden_size"], "projector_type": "linear"},
        "tile_tag": "2D",
        "torch_dtype": "bfloat16",
        "vision_config": vision,
    }
    cfg.update({k: v for k, v in lang.items() if k not in ("architectures", "torch_dtype")})
    return cfg


PROCESSOR_CONFIG = {
    "add_special_token": False, "candidate_resolutions": [[1024, 1024]], "downsample_ratio": 4, "ignore_id": -100,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "image_token": "<image>", "mask_prompt": False,
    "normalize": True, "pad_token": rm.PAD, "patch_size": 16, "processor_class": "DeepseekVLV2Processor",
    "sft_format": "deepseek",
}


def rewrite_config_original(model_dir: Path, name: str | None = None, **kw) -> dict:
    """Rewrite a saved transformers ``config.json`` into the original layout, in place, and add
    ``processor_config.json``."""
    model_dir = Path(model_dir)
    cfg = original_config(json.loads((model_dir / "config.json").read_text()), name or model_dir.name, **kw)
    (model_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    (model_dir / "processor_config.json").write_text(json.dumps(PROCESSOR_CONFIG, indent=1, ensure_ascii=False),
                                                     encoding="utf-8")
    return cfg


def save_model(model, out_dir: Path, *, layout: str = "hf", **kw) -> Path:
    """``save_pretrained`` (float32, one file) + tokenizer files; ``layout="original"`` rewrites the config."""
    if layout not in ("hf", "original"):
        raise ValueError(f"layout must be 'hf' or 'original', not {layout!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, max_shard_size="100GB")
    rm.write_tokenizer(out_dir, model.config.text_config.vocab_size)
    if layout == "original":
        rewrite_config_original(out_dir, name=out_dir.name, **kw)
    return out_dir


def build_tiny_ocr2(out_dir: Path, *, seed: int = 0, layout: str = "hf", config: dict | None = None, **kw) -> Path:
    """Build and save a tiny reference model (see the module docstring)."""
    return save_model(make_model(seed, config), out_dir, layout=layout, **kw)


# ---- per-session cache ----------------------------------------------------------------------------------
_MODELS: dict[tuple, Any] = {}


def get_tiny_ocr2_model(*, seed: int = 0, config: dict | None = None):
    """``make_model`` once per (seed, config) per process; treat the result as read-only."""
    key = (seed, _config_key(config))
    if key not in _MODELS:
        _MODELS[key] = make_model(seed, config)
    return _MODELS[key]


def get_tiny_ocr2(*, seed: int = 0, layout: str = "hf", config: dict | None = None, encoder_keys: bool = False) -> Path:
    """``build_tiny_ocr2`` once per arguments per process (the weights of ``get_tiny_ocr2_model``)."""
    key = ("tiny-ocr2", seed, layout, _config_key(config), encoder_keys)
    if key not in rm._CACHE:
        d = rm._cache_root() / f"tiny-ocr2-{layout}-s{seed}-{len(rm._CACHE)}"
        kw = {"encoder_keys": encoder_keys} if layout == "original" else {}
        rm._CACHE[key] = save_model(get_tiny_ocr2_model(seed=seed, config=config), d, layout=layout, **kw)
    return rm._CACHE[key]


def load_tiny_ocr2(model_dir: Path):
    """A saved transformers-layout model read back with ``from_pretrained`` (eval, float32)."""
    from transformers import DeepseekOcr2ForConditionalGeneration
    return DeepseekOcr2ForConditionalGeneration.from_pretrained(model_dir, dtype="float32").eval()


# ---- reference outputs ----------------------------------------------------------------------------------
def image_processor(mode: str = "gundam"):
    from transformers.models.deepseek_ocr2.image_processing_pil_deepseek_ocr2 import DeepseekOcr2ImageProcessorPil

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    return DeepseekOcr2ImageProcessorPil() if mode == "gundam" else DeepseekOcr2ImageProcessorPil(crop_to_patches=False)


def tile_grid(width: int, height: int, mode: str = "gundam") -> tuple[int, int] | None:
    """(cols, rows) of the tiles the processor cuts from an image of this size, or None (no tiles)."""
    from transformers.models.deepseek_ocr2.image_processing_pil_deepseek_ocr2 import get_optimal_tiled_canvas

    proc = image_processor(mode)
    if not proc.crop_to_patches or max(width, height) <= proc.tile_size:
        return None
    return tuple(get_optimal_tiled_canvas((height, width), (proc.tile_size, proc.tile_size), proc.min_patches,
                                          proc.max_patches))


@dataclass
class Preprocessed:
    """The processor's arrays (float32, normalised, channels first)."""

    pixel_values: np.ndarray  # [pages, 3, S, S]: the global views (S = 1024 gundam, 768 base)
    pixel_values_local: np.ndarray | None  # [tiles of all pages, 3, 768, 768] in page then raster order
    num_local_patches: list[int]  # tiles per page
    grids: list[tuple[int, int] | None]  # (cols, rows) per page


def preprocess(images: Iterable, mode: str = "gundam") -> Preprocessed:
    images = [im.convert("RGB") for im in images]
    feat = image_processor(mode)(images=images, return_tensors="np")
    local = feat.get("pixel_values_local")
    return Preprocessed(np.asarray(feat["pixel_values"], np.float32),
                        None if local is None else np.asarray(local, np.float32),
                        [int(n) for n in np.asarray(feat["num_local_patches"]).reshape(-1)],
                        [tile_grid(*im.size, mode=mode) for im in images])


@dataclass
class ViewRef:
    """One view's stage outputs."""

    page: int
    kind: str  # "tile" | "global"
    index: int  # the tile's raster index within its page; -1 for the global view
    pixels: np.ndarray  # [3, S, S] as the processor made it
    sam: np.ndarray  # [n, C]: SAM (neck + net_2 + net_3) output tokens, row-major over the grid
    encoder: np.ndarray  # [n, C]: the encoder's final-normed output at the n query positions
    projected: np.ndarray  # [n, text width]


@dataclass
class FeatureRef:
    mode: str
    features: list[np.ndarray]  # per page: [tiles·144 + 256 + 1 (gundam) or 144 + 1 (base), text width]
    views: list[ViewRef]
    pre: Preprocessed
    extra: dict[str, Any] = field(default_factory=dict)

    def page_views(self, page: int) -> list[ViewRef]:
        return [v for v in self.views if v.page == page]


def reference_features(model, images: Iterable, mode: str = "gundam") -> FeatureRef:
    """transformers' image features of ``images`` (PIL) and every view's stage outputs (see the docstring)."""
    import torch

    pre = preprocess(images, mode)
    inner = model.model
    calls: dict[str, list] = {"sam": [], "encoder": [], "projected": []}

    def grab(key, fn):
        return lambda module, args, out: calls[key].append(fn(out).detach().float().numpy().copy())

    hooks = [
        inner.vision_tower.sam_encoder.register_forward_hook(
            grab("sam", lambda o: o.last_hidden_state.flatten(2).transpose(1, 2))),
        inner.vision_tower.register_forward_hook(grab("encoder", lambda o: o.last_hidden_state)),
        inner.multi_modal_projector.register_forward_hook(grab("projected", lambda o: o)),
    ]
    try:
        with torch.no_grad():
            out = inner.get_image_features(
                pixel_values=torch.from_numpy(pre.pixel_values),
                pixel_values_local=None if pre.pixel_values_local is None else torch.from_numpy(pre.pixel_values_local),
                num_local_patches=pre.num_local_patches)
    finally:
        for h in hooks:
            h.remove()
    n_calls = 1 + (pre.pixel_values_local is not None)
    assert all(len(v) == n_calls for v in calls.values()), {k: len(v) for k, v in calls.items()}
    features = [f.detach().float().numpy().copy() for f in out.pooler_output]
    # get_image_features runs every page's global view first, then all tiles: put them in page order
    views: list[ViewRef] = []
    t0 = 0
    for page, n_tiles in enumerate(pre.num_local_patches):
        for k in range(n_tiles):
            i = t0 + k
            views.append(ViewRef(page, "tile", k, pre.pixel_values_local[i], calls["sam"][1][i],
                                 calls["encoder"][1][i], calls["projected"][1][i]))
        t0 += n_tiles
        views.append(ViewRef(page, "global", -1, pre.pixel_values[page], calls["sam"][0][page],
                             calls["encoder"][0][page], calls["projected"][0][page]))
    return FeatureRef(mode, features, views, pre)


__all__ = [
    "TINY_CONFIG", "REDRAW_STD", "MODES", "FIXTURE_DIR", "fixture_config", "make_model", "redraw_vision",
    "original_config", "rewrite_config_original", "PROCESSOR_CONFIG", "save_model", "build_tiny_ocr2",
    "get_tiny_ocr2", "get_tiny_ocr2_model", "load_tiny_ocr2", "image_processor", "tile_grid", "Preprocessed",
    "preprocess", "ViewRef", "FeatureRef", "reference_features",
]
