"""Tiny DeepSeek-VL2 reference checkpoints for tests: a thin wrapper over the shared reference
``../shared/reference/deepseek_vl2_ref.py`` (plain PyTorch, checked against the official code; see
../shared/spec/deepseek-vl2.md §10), imported by path.

* ``ref()`` - the reference module (``R``): ``R.tiny_config(kind)``, ``R.randomize``, ``R.save``, ``R.load``,
  ``R.build_tokenizer``, ``R.preprocess``, ``R.build_inputs``, ...
* ``make_model(kind="tiny", seed=0, config=None)`` - ``R.DeepseekVL2Tiny(R.tiny_config(kind))`` (or any config
  in the official layout) with ``R.randomize(model, seed)``, eval mode, float32.
* ``save_model(model, dir)`` - ``R.save``: the official checkpoint layout, one ``model.safetensors`` (fp32,
  official tensor names, the unused ``vision.attn_pool.*`` head included), ``config.json`` (no
  ``architectures``), ``processor_config.json``, ``tokenizer.json`` + ``tokenizer_config.json`` (a small
  byte-level BPE padded to 129280 ids, the special tokens at their real ids). A config whose
  ``language_config.vocab_size`` is smaller gets that tokenizer cut to its size, the high special tokens
  (``<image>`` ...) moved to the last ids (``special_ids(vocab)``).
* ``wide_config(kind, vocab)`` - a model whose rows fit the K-quants (256 / 512 wide) with some that do not
  (384-wide experts, 16-wide heads), for the quantised outtypes.
* ``get_vl2(kind="tiny", seed=0, config=None)`` / ``get_model(...)`` - the same, built once per test session
  (``reference_models``' cache directory); treat the results as read-only.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import reference_models as rm

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
REF_PATH = SHARED / "reference" / "deepseek_vl2_ref.py"
KINDS = ("tiny", "small", "base")


def ref():
    """The shared reference module, imported by path (a missing file is an error, not a skip)."""
    mod = sys.modules.get("deepseek_vl2_ref")
    if mod is None:
        if not REF_PATH.is_file():
            raise FileNotFoundError(f"the DeepSeek-VL2 reference is missing: {REF_PATH}")
        spec = importlib.util.spec_from_file_location("deepseek_vl2_ref", REF_PATH)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["deepseek_vl2_ref"] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules["deepseek_vl2_ref"]
            raise
    return mod


def tiny_config(kind: str = "tiny") -> dict:
    return ref().tiny_config(kind)


def wide_config(kind: str = "base", vocab: int = 1024) -> dict:
    """SigLIP 256 wide (1 block, 4 heads, MLP 512), D = 256, decoder 256 wide (3 layers: dense 512, then 4
    experts of 384, top-2, 1 shared), 2 heads; MLA kinds: kv_lora 256, nope 16 (k_b rows of 16), rope 64,
    v 128, base a q LoRA 256 and the noaux_tc gate; ``vocab`` ids."""
    R = ref()
    text = dict(hidden_size=256, intermediate_size=512, moe_intermediate_size=384, num_hidden_layers=3,
                num_attention_heads=2, num_key_value_heads=2, n_routed_experts=4, num_experts_per_tok=2,
                n_shared_experts=1, vocab_size=vocab)
    mla = dict(use_mla=True, kv_lora_rank=256, q_lora_rank=None, qk_nope_head_dim=16, qk_rope_head_dim=64,
               v_head_dim=128)
    if kind == "small":
        text.update(mla)
    elif kind == "base":
        text.update(mla, q_lora_rank=256, topk_method="noaux_tc", scoring_func="sigmoid", norm_topk_prob=True,
                    routed_scaling_factor=2.0)
    return R.make_config((256, 1, 4, 2.0), 256, text)


def _config_key(kind: str, config: dict | None) -> str:
    return json.dumps(config if config is not None else tiny_config(kind), sort_keys=True)


def make_model(kind: str = "tiny", seed: int = 0, config: dict | None = None):
    R = ref()
    model = R.DeepseekVL2Tiny(copy.deepcopy(config) if config is not None else R.tiny_config(kind)).eval()
    return R.randomize(model, seed=seed)


def special_ids(vocab: int) -> dict[int, str]:
    """The reference's special tokens at their ids in a ``vocab``-token cut (the real ids when 129280)."""
    R = ref()
    if vocab == R.VOCAB:
        return dict(R.SPECIALS)
    high = sorted(i for i in R.SPECIALS if i > 2)
    out = {i: R.SPECIALS[i] for i in R.SPECIALS if i <= 2}
    out.update({vocab - len(high) + k: R.SPECIALS[i] for k, i in enumerate(high)})
    return out


def cut_tokenizer(model_dir: Path, vocab: int) -> None:
    """Cut the reference tokenizer (129280 ids) to ``vocab`` ids: the BPE tokens keep their ids, the unused
    fill is dropped, the high special tokens move to the last ids."""
    R = ref()
    model_dir = Path(model_dir)
    new_ids = special_ids(vocab)
    remap = {i: next(j for j, t in new_ids.items() if t == s) for i, s in R.SPECIALS.items()}
    first_special = min(j for j in new_ids if j > 2)
    tj = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    specials = set(R.SPECIALS.values())
    bpe_top = max(i for t, i in tj["model"]["vocab"].items() if not t.startswith("<|unused_") and t not in specials)
    if bpe_top >= first_special:
        raise ValueError(f"vocab {vocab} is too small for the reference BPE ({bpe_top + 1} ids)")
    kept = {t: i for t, i in tj["model"]["vocab"].items() if t not in specials and i < first_special}
    kept.update({s: remap[i] for i, s in R.SPECIALS.items()})
    tj["model"]["vocab"] = dict(sorted(kept.items(), key=lambda kv: kv[1]))
    for a in tj["added_tokens"]:
        a["id"] = remap[a["id"]]
    (model_dir / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    tc = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    tc["added_tokens_decoder"] = {str(remap[int(i)]): v for i, v in tc["added_tokens_decoder"].items()}
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=1), encoding="utf-8")


def save_model(model, out_dir: Path) -> Path:
    """``R.save`` (official layout, fp32, one file) + the tokenizer cut to the config's vocabulary."""
    R = ref()
    out_dir = Path(out_dir)
    R.save(model, str(out_dir))
    vocab = model.config["language_config"]["vocab_size"]
    if vocab != R.VOCAB:
        cut_tokenizer(out_dir, vocab)
    return out_dir


def build_vl2(out_dir: Path, kind: str = "tiny", *, seed: int = 0, config: dict | None = None) -> Path:
    return save_model(make_model(kind, seed, config), out_dir)


# ---- per-session cache ----------------------------------------------------------------------------------
_MODELS: dict[tuple, Any] = {}


def get_model(kind: str = "tiny", *, seed: int = 0, config: dict | None = None):
    """``make_model`` once per (kind, seed, config) per process; treat the result as read-only."""
    key = (kind, seed, _config_key(kind, config))
    if key not in _MODELS:
        _MODELS[key] = make_model(kind, seed, config)
    return _MODELS[key]


def get_vl2(kind: str = "tiny", *, seed: int = 0, config: dict | None = None) -> Path:
    """``build_vl2`` once per arguments per process (the weights of ``get_model``)."""
    key = ("vl2", kind, seed, _config_key(kind, config))
    if key not in rm._CACHE:
        d = rm._cache_root() / f"vl2-{kind}-s{seed}-{len(rm._CACHE)}"
        rm._CACHE[key] = save_model(get_model(kind, seed=seed, config=config), d)
    return rm._CACHE[key]


def checkpoint_f32(model_dir: Path) -> dict:
    """Every tensor of the saved checkpoint as float32 numpy arrays (read with ``safetensors``)."""
    return rm.read_checkpoint_f32(model_dir)


__all__ = ["REF_PATH", "KINDS", "ref", "tiny_config", "wide_config", "make_model", "special_ids", "cut_tokenizer",
           "save_model", "build_vl2", "get_model", "get_vl2", "checkpoint_f32"]
