"""The DeepSeek-VL2 converter, against the shared reference (``reference_vl2`` over
``../shared/reference/deepseek_vl2_ref.py``):

* the reference's tiny models of the three kinds (``tiny_config("tiny" | "small" | "base")``: MHA + softmax gate;
  MLA without q LoRA; MLA with q LoRA + the sigmoid ``noaux_tc`` gate), randomised and saved in the official
  layout (one fp32 ``model.safetensors``, config.json without ``architectures``): the text and vision files at
  f32, every tensor read back equal to the checkpoint's after the reshapes written out here (experts stacked,
  ``pos_embed`` [1, n, C] -> [n, C], ``view_seperator`` [1, D], ``kv_b_proj`` split per head into ``attn_k_b``
  (transposed) and ``attn_v_b``), under names written out here from the README's "DeepSeek-VL2 keys" (not from
  convert/); every key with its value;
* quantised outtypes on a wider model (rows of 256 / 512 take the K-quants, 384 and 16 fall back), --dry-run,
  --vocab-only, broken checkpoints (one line naming the tensor), hostile config values (one line, fast), the
  family recognised from the config's content (published shapes included), the chat template.

GGUF files are read with a small reader here: ``gguf.GGUFReader`` takes ~8 s over a 129280-token vocabulary.
"""
from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import gguf
from gguf import GGMLQuantizationType as QT

import reference_models as rm
import reference_vl2 as rv
from convert import ConversionError, convert, plan
from convert.cli import main
from convert.config import load_config
from gguf_bytes import read_gguf
from convert_expect import FILE_TYPE, WRITER_VERSION, check_values, one_error, rewrite_checkpoint

CHOSEN = {"f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16, "q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_1": QT.Q4_1,
          "q5_0": QT.Q5_0, "q5_1": QT.Q5_1, "q4_k": QT.Q4_K, "q5_k": QT.Q5_K, "q6_k": QT.Q6_K}

# ---- the README's "DeepSeek-VL2 keys", written out independently of convert/ ----------------------------
_L = r"language\.model\.layers\.(\d+)\."
TEXT_RULES = [
    (r"language\.model\.embed_tokens\.weight", "token_embd.weight"),
    (r"language\.model\.norm\.weight", "output_norm.weight"),
    (r"language\.lm_head\.weight", "output.weight"),
    (_L + r"input_layernorm\.weight", r"blk.\1.attn_norm.weight"),
    (_L + r"post_attention_layernorm\.weight", r"blk.\1.ffn_norm.weight"),
    (_L + r"self_attn\.(q|k|v)_proj\.weight", r"blk.\1.attn_\2.weight"),
    (_L + r"self_attn\.o_proj\.weight", r"blk.\1.attn_output.weight"),
    (_L + r"self_attn\.q_a_proj\.weight", r"blk.\1.attn_q_a.weight"),
    (_L + r"self_attn\.q_a_layernorm\.weight", r"blk.\1.attn_q_a_norm.weight"),
    (_L + r"self_attn\.q_b_proj\.weight", r"blk.\1.attn_q_b.weight"),
    (_L + r"self_attn\.kv_a_proj_with_mqa\.weight", r"blk.\1.attn_kv_a_mqa.weight"),
    (_L + r"self_attn\.kv_a_layernorm\.weight", r"blk.\1.attn_kv_a_norm.weight"),
    (_L + r"mlp\.(gate|up|down)_proj\.weight", r"blk.\1.ffn_\2.weight"),
    (_L + r"mlp\.gate\.weight", r"blk.\1.ffn_gate_inp.weight"),
    (_L + r"mlp\.gate\.e_score_correction_bias", r"blk.\1.exp_probs_b.bias"),
    (_L + r"mlp\.experts\.\d+\.(gate|up|down)_proj\.weight", r"blk.\1.ffn_\2_exps.weight"),
    (_L + r"mlp\.shared_experts\.(gate|up|down)_proj\.weight", r"blk.\1.ffn_\2_shexp.weight"),
]
KV_B = re.compile(_L + r"self_attn\.kv_b_proj\.weight")
_B = r"vision\.blocks\.(\d+)\."
VISION_RULES = [
    (r"vision\.patch_embed\.proj\.(weight|bias)", r"v.patch_embd.\1"),
    (r"vision\.pos_embed", "v.position_embd.weight"),
    (_B + r"norm1\.(weight|bias)", r"v.blk.\1.ln1.\2"),
    (_B + r"norm2\.(weight|bias)", r"v.blk.\1.ln2.\2"),
    (_B + r"attn\.qkv\.(weight|bias)", r"v.blk.\1.attn_qkv.\2"),
    (_B + r"attn\.proj\.(weight|bias)", r"v.blk.\1.attn_out.\2"),
    (_B + r"mlp\.fc1\.(weight|bias)", r"v.blk.\1.ffn_up.\2"),
    (_B + r"mlp\.fc2\.(weight|bias)", r"v.blk.\1.ffn_down.\2"),
    (r"vision\.norm\.(weight|bias)", r"v.post_ln.\1"),
    (r"projector\.layers\.(0|2)\.(weight|bias)", r"mm.\1.\2"),
    (r"image_newline", "v.image_newline"),
    (r"view_seperator", "v.view_seperator"),
]
VISION_DROPPED = re.compile(r"vision\.attn_pool\..*")


def lang_config(cfg: dict) -> dict:
    return cfg["language_config"]


def expected_text(sources: dict[str, np.ndarray], cfg: dict) -> dict[str, np.ndarray]:
    """GGUF name -> float32 values of the text file (experts stacked in expert order; kv_b_proj split)."""
    lc = lang_config(cfg)
    groups: dict[str, list[tuple[int, np.ndarray]]] = {}
    out: dict[str, np.ndarray] = {}
    for src, arr in sources.items():
        if not src.startswith("language."):
            continue
        m = KV_B.fullmatch(src)
        if m:
            nope, vd, r = lc["qk_nope_head_dim"], lc["v_head_dim"], arr.shape[1]
            kv = arr.reshape(-1, nope + vd, r)
            out[f"blk.{m.group(1)}.attn_k_b.weight"] = kv[:, :nope].transpose(0, 2, 1)  # [heads, kv_lora, nope]
            out[f"blk.{m.group(1)}.attn_v_b.weight"] = kv[:, nope:]  # [heads, v, kv_lora]
            continue
        hits = [re.sub(p, r, src) for p, r in TEXT_RULES if re.fullmatch(p, src)]
        assert len(hits) == 1, (src, hits)
        e = re.search(r"\.experts\.(\d+)\.", src)
        groups.setdefault(hits[0], []).append((int(e.group(1)) if e else -1, arr))
    for name, parts in groups.items():
        out[name] = np.stack([a for _, a in sorted(parts, key=lambda p: p[0])]) if len(parts) > 1 else parts[0][1]
    return out


def expected_vision(sources: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for src, arr in sources.items():
        if src.startswith("language.") or VISION_DROPPED.fullmatch(src):
            continue
        hits = [re.sub(p, r, src) for p, r in VISION_RULES if re.fullmatch(p, src)]
        assert len(hits) == 1 and hits[0] not in out, (src, hits)
        name = hits[0]
        out[name] = arr.reshape(arr.shape[1:]) if name == "v.position_embd.weight" else \
            arr.reshape(1, -1) if name == "v.view_seperator" else arr
    return out


def use_more_bits(i: int, n: int) -> bool:  # llama-quantize's layer rule for the _M mixtures
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def expected_type(name: str, arr: np.ndarray, chosen: QT, *, mixture_layers: int = 0) -> QT:
    """F32 for what llama.cpp never quantises (1-D, router, position table, separator), the patch kernel F16 only
    with f16, else the chosen type (the _M mixture's Q6_K where its rule says) with llama-quantize's fallbacks."""
    if arr.ndim <= 1 or name.endswith("ffn_gate_inp.weight") or name in ("v.position_embd.weight",
                                                                         "v.view_seperator"):
        return QT.F32
    if name == "v.patch_embd.weight":
        return chosen if chosen in (QT.F32, QT.F16) else QT.F32
    t = chosen
    if mixture_layers:
        m = re.match(r"blk\.(\d+)\.(attn_v|ffn_down|ffn_down_exps|ffn_down_shexp)\.weight$", name)
        if name == "output.weight" or (m and use_more_bits(int(m.group(1)), mixture_layers)):
            t = QT.Q6_K
    row = arr.shape[-1]
    if t in (QT.Q4_K, QT.Q5_K, QT.Q6_K) and row % 256:
        t = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}[t]
    if t in (QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1) and row % 32:
        t = QT.F16
    return t


def check_kv(got: dict, want: dict) -> None:
    """Every expected key with its value, nothing extra (``...``: present, value checked elsewhere)."""
    assert set(got) == set(want), f"missing {set(want) - set(got)}, extra {set(got) - set(want)}"
    for k, w in want.items():
        g = got[k]
        if w is ...:
            continue
        if isinstance(w, float):
            assert isinstance(g, float) and np.isclose(g, w, rtol=1e-6), (k, g, w)
        elif isinstance(w, list) and w and isinstance(w[0], float):
            assert np.allclose(g, w, rtol=1e-6), (k, g, w)
        else:
            assert g == w and type(g) is type(w), (k, g, w)


def check_tensors(tensors: dict, want: dict, chosen: QT, mixture_layers: int = 0) -> set:
    assert set(tensors) == set(want), f"missing {set(want) - set(tensors)}, extra {set(tensors) - set(want)}"
    seen = set()
    for n, (qt, shape, got) in tensors.items():
        src = want[n].astype(np.float32)
        assert shape == src.shape, (n, shape, src.shape)
        assert qt == expected_type(n, src, chosen, mixture_layers=mixture_layers), (n, qt.name)
        check_values(n, qt, got, src)
        seen.add(qt)
    return seen


# ---- expected keys, from the saved config ---------------------------------------------------------------
VL2_TEMPLATE_PROMPT = "<|User|>: {}\n\n<|Assistant|>:"


def expected_text_kv(model_dir: Path, chosen: QT, *, file_type: int | None = None) -> dict:
    cfg = json.loads((model_dir / "config.json").read_text())
    lc = lang_config(cfg)
    mla = lc.get("use_mla", True)
    a = "deepseek2" if mla else "deepseek2-ocr"
    V, D, H = lc["vocab_size"], lc["hidden_size"], lc["num_attention_heads"]
    sigmoid = lc.get("scoring_func") == "sigmoid"
    kv = {
        "general.architecture": a, "general.type": "model", "general.name": model_dir.name,
        "general.file_type": FILE_TYPE[chosen] if file_type is None else file_type,
        "general.quantization_version": 2, "tilepass.format_version": 1, "tilepass.writer_version": WRITER_VERSION,
        f"{a}.block_count": lc["num_hidden_layers"], f"{a}.context_length": lc["max_position_embeddings"],
        f"{a}.embedding_length": D, f"{a}.feed_forward_length": lc["intermediate_size"],
        f"{a}.attention.head_count": H, f"{a}.attention.layer_norm_rms_epsilon": 1e-6, f"{a}.rope.freq_base": 10000.0,
        f"{a}.leading_dense_block_count": lc["first_k_dense_replace"], f"{a}.vocab_size": V,
        f"{a}.expert_count": lc["n_routed_experts"], f"{a}.expert_used_count": lc["num_experts_per_tok"],
        f"{a}.expert_shared_count": lc["n_shared_experts"],
        f"{a}.expert_feed_forward_length": lc["moe_intermediate_size"],
        f"{a}.expert_group_count": 1, f"{a}.expert_group_used_count": 1,
        "tilepass.text.expert_weights_scale": 2.0 if sigmoid else 1.0,
        "tilepass.text.expert_weights_norm": sigmoid,
        "tilepass.text.image_token_id": next(i for i, t in rv.special_ids(V).items() if t == "<image>"),
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "deepseek-v3", "tokenizer.ggml.tokens": ...,
        "tokenizer.ggml.token_type": ..., "tokenizer.ggml.merges": ..., "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.padding_token_id": 2, "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False, "tokenizer.chat_template": ...,
        "tokenizer.huggingface.json": (model_dir / "tokenizer.json").read_text(encoding="utf-8"),
    }
    if not mla:  # DeepSeek-OCR v1's text file
        kv.update({f"{a}.attention.head_count_kv": lc["num_key_value_heads"], f"{a}.rope.dimension_count": 0,
                   "tilepass.text.rope_dimension_count": D // H})
        return kv
    r, rope, nope, v = lc["kv_lora_rank"], lc["qk_rope_head_dim"], lc["qk_nope_head_dim"], lc["v_head_dim"]
    kv.update({
        f"{a}.attention.head_count_kv": 1, f"{a}.rope.dimension_count": rope,
        f"{a}.attention.kv_lora_rank": r, f"{a}.attention.key_length": r + rope, f"{a}.attention.value_length": r,
        f"{a}.attention.key_length_mla": nope + rope, f"{a}.attention.value_length_mla": v,
        f"{a}.expert_weights_scale": 2.0 if sigmoid else 1.0, f"{a}.expert_weights_norm": sigmoid,
        f"{a}.expert_gating_func": 2 if sigmoid else 1,
    })
    if lc.get("q_lora_rank") is not None:
        kv[f"{a}.attention.q_lora_rank"] = lc["q_lora_rank"]
    return kv


def expected_vision_kv(model_dir: Path, chosen: QT) -> dict:
    cfg = json.loads((model_dir / "config.json").read_text())
    vc, pc = cfg["vision_config"], cfg["projector_config"]
    cands = cfg["candidate_resolutions"]
    tiles = [(w // 384) * (h // 384) for w, h in cands]
    return {
        "general.architecture": "clip", "general.type": "mmproj", "general.name": model_dir.name,
        "general.file_type": FILE_TYPE[chosen], "general.quantization_version": 2, "tilepass.format_version": 1,
        "tilepass.writer_version": WRITER_VERSION,
        "clip.has_vision_encoder": True, "clip.projector_type": "deepseekvl2", "clip.use_gelu": True,
        "clip.vision.projection_dim": pc["n_embed"], "clip.vision.image_size": 384, "clip.vision.patch_size": 14,
        "clip.vision.embedding_length": vc["width"],
        "clip.vision.feed_forward_length": int(vc["width"] * vc["mlp_ratio"]),
        "clip.vision.block_count": vc["layers"], "clip.vision.attention.head_count": vc["heads"],
        "clip.vision.attention.layer_norm_epsilon": 1e-6, "clip.vision.image_mean": [0.5, 0.5, 0.5],
        "clip.vision.image_std": [0.5, 0.5, 0.5], "clip.vision.preproc_min_tiles": min(tiles),
        "clip.vision.preproc_max_tiles": max(tiles),
        "tilepass.projector.type": "downsample_mlp_gelu", "tilepass.vision.downsample": 2,
        "tilepass.preproc.tile_size": 384, "tilepass.preproc.candidate_resolutions": [x for c in cands for x in c],
        "tilepass.preproc.pad_color": [127, 127, 127], "tilepass.preproc.max_tiled_images": 2,
    }


# ---- models ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=rv.KINDS)
def kind_model(request) -> tuple[str, Path]:
    return request.param, rv.get_vl2(request.param)


@pytest.fixture(scope="module")
def wide_base() -> Path:
    return rv.get_vl2("base", config=rv.wide_config("base"))


@pytest.fixture(scope="module")
def wide_tiny() -> Path:
    return rv.get_vl2("tiny", config=rv.wide_config("tiny"))


# ---- round trips ----------------------------------------------------------------------------------------
def test_checkpoint_is_the_official_layout(kind_model):
    """What the reference saves: one fp32 model.safetensors with the official names, config.json without
    ``architectures`` (the family is recognised by content), processor_config.json, the tokenizer files."""
    kind, model = kind_model
    names = {p.name for p in model.iterdir()}
    assert {"model.safetensors", "config.json", "processor_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= names and not (model / "model.safetensors.index.json").exists()
    raw = json.loads((model / "config.json").read_text())
    assert "architectures" not in raw and raw["model_type"] == "deepseek_vl_v2"
    cfg = load_config(model)
    assert (cfg.architecture, cfg.layout, cfg.text.use_mla) == ("DeepseekVLV2ForCausalLM", "original", kind != "tiny")
    assert (cfg.text.q_lora_rank is not None) == (kind == "base")
    assert cfg.text.topk_method == ("noaux_tc" if kind == "base" else "greedy")
    assert len(cfg.candidate_resolutions) == 23 and cfg.candidate_resolutions[-1] == (1152, 1152)


def test_text_roundtrip_f32(kind_model, tmp_path):
    """The text file of each kind at f32: every tensor exactly (kv_b_proj split as llama.cpp does), every key
    with its value, the vocabulary id for id."""
    kind, model = kind_model
    out = tmp_path / "text.gguf"
    convert(model, outtype="f32", outfile=out, progress=False)
    kv, tensors = read_gguf(out, tensors="f32")
    check_kv(kv, expected_text_kv(model, QT.F32))
    cfg = json.loads((model / "config.json").read_text())
    want = expected_text(rv.checkpoint_f32(model), cfg)
    check_tensors(tensors, want, QT.F32)
    lc = lang_config(cfg)
    L = lc["num_hidden_layers"]
    per_layer = {"tiny": 6, "small": 8, "base": 10}[kind]  # norms + attention
    moe = 1 + 3 + 3 + (kind == "base")  # router, experts, shared experts (+ exp_probs_b)
    assert len(tensors) == 3 + L * per_layer + 3 + (L - 1) * moe
    # the vocabulary, id for id
    tj = json.loads((model / "tokenizer.json").read_text(encoding="utf-8"))
    by_id = {i: t for t, i in tj["model"]["vocab"].items()}
    assert kv["tokenizer.ggml.tokens"] == [by_id[i] for i in range(lc["vocab_size"])]
    specials = rv.special_ids(lc["vocab_size"])
    assert kv["tokenizer.ggml.token_type"] == [3 if i in specials else 1 for i in range(lc["vocab_size"])]
    assert kv["tokenizer.ggml.merges"] == tj["model"]["merges"]
    if kind != "tiny":  # the split, spelled out for one layer
        nope, vd, r, H = lc["qk_nope_head_dim"], lc["v_head_dim"], lc["kv_lora_rank"], lc["num_attention_heads"]
        kvb = rv.checkpoint_f32(model)["language.model.layers.1.self_attn.kv_b_proj.weight"]
        k_b, v_b = tensors["blk.1.attn_k_b.weight"][2], tensors["blk.1.attn_v_b.weight"][2]
        assert k_b.shape == (H, r, nope) and v_b.shape == (H, vd, r)
        for h in range(H):
            np.testing.assert_array_equal(k_b[h].T, kvb[h * (nope + vd):h * (nope + vd) + nope])
            np.testing.assert_array_equal(v_b[h], kvb[h * (nope + vd) + nope:(h + 1) * (nope + vd)])


def test_vision_roundtrip_f32(kind_model, tmp_path):
    """The vision file of each kind at f32: every tensor exactly, every key with its value, attn_pool dropped."""
    kind, model = kind_model
    out = tmp_path / "mmproj.gguf"
    convert(model, mmproj=True, outtype="f32", outfile=out, progress=False)
    kv, tensors = read_gguf(out, tensors="f32")
    check_kv(kv, expected_vision_kv(model, QT.F32))
    check_tensors(tensors, expected_vision(rv.checkpoint_f32(model)), QT.F32)
    vc = json.loads((model / "config.json").read_text())["vision_config"]
    assert len(tensors) == 3 + 12 * vc["layers"] + 2 + 4 + 2
    shapes = {n: t[1] for n, t in tensors.items()}
    assert shapes["v.position_embd.weight"] == (729, 64) and shapes["v.blk.0.attn_qkv.weight"] == (192, 64)
    assert shapes["mm.0.weight"] == (64, 256) and shapes["mm.2.weight"] == (64, 64)
    assert shapes["v.view_seperator"] == (1, 64) and shapes["v.image_newline"] == (64,)
    assert shapes["v.patch_embd.weight"] == (64, 3, 14, 14)


def test_chat_template_renders_the_official_format(wide_base, tmp_path):
    """The stored template renders the official "deepseek" format (spec §8), through the runtime's renderer."""
    from encoder.chat_template import render_chat_template

    out = tmp_path / "t.gguf"
    convert(wide_base, outtype="f16", outfile=out, progress=False, vocab_only=True)
    kv, tensors = read_gguf(out, tensors="f32")
    assert tensors == {}
    tpl, R = kv["tokenizer.chat_template"], rv.ref()
    text = "<image>\nDescribe this image in detail.  "
    got = render_chat_template(tpl, [{"role": "user", "content": text}], eos_token=R.SPECIALS[R.EOS_ID],
                               bos_token=R.SPECIALS[R.BOS_ID])
    assert got == R.format_prompt(text) == VL2_TEMPLATE_PROMPT.format(text.strip())
    turns = [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": " Hello. "}, {"role": "user", "content": "<image>\nAnd?"}]
    got = render_chat_template(tpl, turns, eos_token="<eos>", bos_token="<bos>")
    assert got == "Be brief.<|User|>: Hi\n\n<|Assistant|>:Hello.<eos><|User|>: <image>\nAnd?\n\n<|Assistant|>:"
    # a template of the checkpoint's own wins
    model = rm.copy_model(wide_base, tmp_path / "m")
    tc = json.loads((model / "tokenizer_config.json").read_text())
    tc["chat_template"] = "{{ messages[0]['content'] }}"
    (model / "tokenizer_config.json").write_text(json.dumps(tc))
    p = plan(model, vocab_only=True)
    assert {k.key: k.value for k in p.kv}["tokenizer.chat_template"] == "{{ messages[0]['content'] }}"


# ---- quantised outtypes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k",
                                     "q4_k_m", "q5_k_m", "auto"])
def test_text_outtypes(wide_base, tmp_path, outtype):
    """MLA + q LoRA + noaux_tc, rows of 256/512 (K-quants), 384 (experts: Q4_K -> Q5_0 ...), 16 (k_b: F16 for
    32-block types); norms, router and exp_probs_b F32; the _M mixtures' Q6_K rows."""
    out = tmp_path / "t.gguf"
    convert(wide_base, outtype=outtype, outfile=out, progress=False)
    mixture = outtype.endswith("_m")
    main_type = {"auto": QT.Q8_0, "q4_k_m": QT.Q4_K, "q5_k_m": QT.Q5_K}.get(outtype) or CHOSEN[outtype]
    kv, tensors = read_gguf(out, tensors="f32")
    check_kv(kv, expected_text_kv(wide_base, main_type,
                                  file_type={"q4_k_m": 15, "q5_k_m": 17}.get(outtype)))
    cfg = json.loads((wide_base / "config.json").read_text())
    seen = check_tensors(tensors, expected_text(rv.checkpoint_f32(wide_base), cfg), main_type,
                         mixture_layers=3 if mixture else 0)
    if outtype == "q4_k":
        assert seen == {QT.Q4_K, QT.Q5_0, QT.F16, QT.F32} and tensors["blk.1.attn_v_b.weight"][0] == QT.Q4_K
        assert tensors["blk.1.ffn_down_exps.weight"][0] == QT.Q5_0  # rows of 384
        assert tensors["blk.1.attn_k_b.weight"][0] == QT.F16  # rows of 16: Q4_K -> Q5_0 -> F16
        assert tensors["blk.1.exp_probs_b.bias"][0] == QT.F32
    if mixture:  # of 3 layers the rule picks layer 2, whose 384-wide down rows fall back from Q6_K
        assert tensors["output.weight"][0] == QT.Q6_K and tensors["blk.2.ffn_down_exps.weight"][0] == QT.Q8_0


def test_text_mixture_mha(wide_tiny, tmp_path):
    """deepseek2-ocr (MHA) under q4_k_m: attn_v gets llama-quantize's extra bits in the layers its rule picks."""
    out = tmp_path / "t.gguf"
    convert(wide_tiny, outtype="q4_k_m", outfile=out, progress=False)
    kv, tensors = read_gguf(out, tensors="f32")
    check_kv(kv, expected_text_kv(wide_tiny, QT.Q4_K, file_type=15))
    cfg = json.loads((wide_tiny / "config.json").read_text())
    check_tensors(tensors, expected_text(rv.checkpoint_f32(wide_tiny), cfg), QT.Q4_K, mixture_layers=3)
    assert tensors["blk.2.attn_v.weight"][0] == QT.Q6_K and tensors["blk.1.attn_v.weight"][0] == QT.Q4_K


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k",
                                     "auto"])
def test_vision_outtypes(wide_base, tmp_path, outtype):
    out = tmp_path / "v.gguf"
    convert(wide_base, mmproj=True, outtype=outtype, outfile=out, progress=False)
    chosen = QT.F16 if outtype == "auto" else CHOSEN[outtype]
    kv, tensors = read_gguf(out, tensors="f32")
    check_kv(kv, expected_vision_kv(wide_base, chosen))
    check_tensors(tensors, expected_vision(rv.checkpoint_f32(wide_base)), chosen)
    assert tensors["mm.0.weight"][0] == tensors["v.blk.0.attn_qkv.weight"][0] == chosen
    assert tensors["v.position_embd.weight"][0] == tensors["v.view_seperator"][0] == QT.F32


def test_mixture_refused_for_vision(wide_base):
    with pytest.raises(ConversionError, match="mixture for a text model"):
        plan(wide_base, mmproj=True, outtype="q4_k_m")


# ---- --dry-run ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mmproj", [True, False])
def test_dry_run_lists_every_tensor(wide_base, capsys, mmproj):
    before = sorted(p.name for p in wide_base.iterdir())
    assert main([str(wide_base), "--dry-run", "--outtype", "q8_0"] + (["--mmproj"] if mmproj else [])) == 0
    out = capsys.readouterr().out
    srcs = rv.checkpoint_f32(wide_base)
    cfg = json.loads((wide_base / "config.json").read_text())
    want = expected_vision(srcs) if mmproj else expected_text(srcs, cfg)
    lines = [ln for ln in out.splitlines() if " -> " in ln and not ln.startswith("#") and "(dropped" not in ln]
    listed = {}
    for ln in lines:
        m = re.search(r" -> (\S+) \[([\d, ]+)\] (\w+)", ln)
        listed[m.group(1)] = (tuple(int(x) for x in m.group(2).split(", ")), m.group(3))
    assert set(listed) == set(want) and len(lines) == len(want)
    for n, (shape, typ) in listed.items():
        assert shape == want[n].shape and typ == expected_type(n, want[n], QT.Q8_0).name, n
    dropped = [ln.split(" ")[0] for ln in out.splitlines() if ln.endswith("(dropped: unused by the graph)")]
    if mmproj:
        assert sorted(dropped) == sorted(n for n in srcs if n.startswith("vision.attn_pool."))
        assert len(dropped) == 13 and "clip.projector_type STRING = 'deepseekvl2'" in out
        assert "vision.pos_embed [F32] -> v.position_embd.weight [729, 256] F32" in out
        assert "tilepass.preproc.candidate_resolutions ARRAY[INT32] = [384, 384, 384, 768, 768, 384, ... (46 items)]" \
            in out and "tensors belong to the text file" in out
    else:
        assert not dropped and "deepseek2.attention.kv_lora_rank UINT32 = 256" in out
        assert ("language.model.layers.1.self_attn.kv_b_proj.weight [F32] -> blk.1.attn_k_b.weight [2, 256, 16] F16"
                in out)
        assert "belong to the vision (--mmproj) file" in out
    assert sorted(p.name for p in wide_base.iterdir()) == before


# ---- broken checkpoints ---------------------------------------------------------------------------------
_T1 = "language.model.layers.1."
_z = lambda *s: np.zeros(s, np.float32)  # noqa: E731
BROKEN = {
    # name: (edit, --mmproj, what the line names)
    "missing_kv_b": (lambda t: t.pop(_T1 + "self_attn.kv_b_proj.weight"), False,
                     ["missing tensor", _T1 + "self_attn.kv_b_proj.weight"]),
    "missing_bias": (lambda t: t.pop(_T1 + "mlp.gate.e_score_correction_bias"), False,
                     ["missing tensor", "e_score_correction_bias"]),
    "extra_expert": (lambda t: t.__setitem__(_T1 + "mlp.experts.4.up_proj.weight", _z(384, 256)), False,
                     ["unexpected tensor", "experts.4.up_proj", "not part of DeepSeek-VL2 as configured"]),
    "extra_text": (lambda t: t.__setitem__(_T1 + "self_attn.k_proj.weight", _z(256, 256)), False,
                   ["unexpected tensor", _T1 + "self_attn.k_proj.weight"]),
    "wrong_kv_a": (lambda t: t.__setitem__(_T1 + "self_attn.kv_a_proj_with_mqa.weight", _z(256, 256)), False,
                   ["model.safetensors", "kv_a_proj_with_mqa", "[256, 256]", "config implies [320, 256]"]),
    "wrong_kv_b": (lambda t: t.__setitem__(_T1 + "self_attn.kv_b_proj.weight", _z(280, 256)), False,
                   ["kv_b_proj", "[280, 256]", "[288, 256]"]),
    "missing_block": (lambda t: t.pop("vision.blocks.0.mlp.fc2.bias"), True,
                      ["missing tensor", "vision.blocks.0.mlp.fc2.bias"]),
    "extra_block": (lambda t: t.__setitem__("vision.blocks.1.norm1.weight", _z(256)), True,
                    ["unexpected tensor", "vision.blocks.1.norm1.weight"]),
    "wrong_pos": (lambda t: t.__setitem__("vision.pos_embed", _z(1, 784, 256)), True,
                  ["vision.pos_embed", "[1, 784, 256]", "[1, 729, 256]"]),
    "wrong_projector": (lambda t: t.__setitem__("projector.layers.0.weight", _z(256, 256)), True,
                        ["projector.layers.0.weight", "[256, 256]", "[256, 1024]"]),
    "wrong_separator": (lambda t: t.__setitem__("view_seperator", _z(1, 256)), True,
                        ["view_seperator", "[1, 256]", "[256]"]),
    "missing_newline": (lambda t: t.pop("image_newline"), True, ["missing tensor", "'image_newline'"]),
    "int_weight": (lambda t: t.__setitem__("projector.layers.2.bias", np.zeros(256, np.int64)), True,
                   ["projector.layers.2.bias", "non-float dtype I64"]),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_checkpoint(wide_base, tmp_path, capsys, case):
    """A missing, extra, wrongly shaped or non-float tensor: one error line naming it; no output file."""
    model = rm.copy_model(wide_base, tmp_path / "m")
    edit, mmproj, needles = BROKEN[case]
    rewrite_checkpoint(model, edit)
    line = one_error(capsys, model, *(["--mmproj"] if mmproj else []), "--outfile", tmp_path / "o.gguf")
    for n in needles:
        assert n in line, (n, line)
    assert not list(tmp_path.glob("*.gguf*"))


# ---- hostile and unsupported config values --------------------------------------------------------------
def _set(cfg: dict, path: str, value) -> None:
    *head, last = path.split(".")
    for k in head:
        cfg = cfg[k]
    if value is _DEL:
        cfg.pop(last)
    else:
        cfg[last] = value


_DEL = object()
HOSTILE = [
    # (config key, value, extra CLI args, what the one line names)
    ("language_config.num_hidden_layers", 10**12, [], ["num_hidden_layers", "layers (language.model.layers.N.*)"]),
    ("language_config.n_routed_experts", 10**9, [], ["n_routed_experts", "experts"]),
    ("language_config.vocab_size", 10**12, [], ["vocab_size"]),
    ("language_config.vocab_size", 10**12, ["--vocab-only"], ["vocab_size"]),
    ("language_config.kv_lora_rank", 10**12, [], ["model.safetensors", "kv_a_proj_with_mqa", "config implies"]),
    ("language_config.max_position_embeddings", 2**40, [], ["max_position_embeddings", "32 bits"]),
    ("vision_config.layers", 10**12, ["--mmproj"], ["vision_config.layers", "vision blocks"]),
    ("vision_config.image_size", 10**9, ["--mmproj"], ["image_size"]),
    ("candidate_resolutions", [[384, 384]] * 100000, ["--mmproj"], ["candidate_resolutions"]),
    ("candidate_resolutions", [[384, 384], [384 * 10**6, 384]], ["--mmproj"], ["candidate_resolutions", "tiles"]),
    ("candidate_resolutions", [[384, 384], [400, 384]], ["--mmproj"], ["[400, 384]"]),
    ("language_config.topk_method", _DEL, [], ["topk_method", "gready"]),
    ("language_config.scoring_func", "sqrtsoftplus", [], ["scoring_func"]),
    ("language_config.moe_layer_freq", 2, [], ["moe_layer_freq"]),
    ("language_config.n_group", 3, [], ["n_group 3"]),
    ("language_config.kv_lora_rank", None, [], ["kv_lora_rank", "null"]),
    ("language_config.rope_scaling", {"type": "yarn", "factor": 4}, [], ["rope_scaling"]),
    ("tile_tag", "1D", ["--mmproj"], ["tile_tag"]),
    ("global_view_pos", "tail", ["--mmproj"], ["global_view_pos"]),
    ("projector_config.depth", 3, ["--mmproj"], ["projector_config.depth"]),
    ("projector_config.n_embed", 128, ["--mmproj"], ["n_embed 128", "hidden_size 256"]),
    ("projector_config.projector_type", "linear", ["--mmproj"], ["projector_type"]),
    ("vision_config.model_name", "sam_b", ["--mmproj"], ["model_name"]),
]


@pytest.mark.parametrize("key,value,args,needles", HOSTILE,
                         ids=[f"{h[0].split('.')[-1]}-{i}" for i, h in enumerate(HOSTILE)])
def test_hostile_config_fails_fast(wide_base, tmp_path, capsys, key, value, args, needles):
    """Counts far beyond the checkpoint and unsupported values are refused before anything is sized by them:
    one line naming config.json and the key, well under a second."""
    model = tmp_path / "m"
    model.mkdir()
    for f in wide_base.iterdir():  # the weights by link: nothing here rewrites them
        (model / f.name).symlink_to(f)
    cfg = json.loads((wide_base / "config.json").read_text())
    _set(cfg, key, value)
    (model / "config.json").unlink()
    (model / "config.json").write_text(json.dumps(cfg))
    if key == "candidate_resolutions":  # processor_config.json states them too
        (model / "processor_config.json").unlink()
    t0 = time.perf_counter()
    line = one_error(capsys, model, "--outfile", tmp_path / "o.gguf", *args)
    assert time.perf_counter() - t0 < 1.0
    assert ("config.json" in line) == (value != 10**12 or "kv_lora" not in key)  # else the tensor's file
    for n in needles:
        assert n in line, (n, line)


def test_processor_config_must_agree(wide_base, tmp_path, capsys):
    model = rm.copy_model(wide_base, tmp_path / "m")
    pp = json.loads((model / "processor_config.json").read_text())
    pp["candidate_resolutions"] = pp["candidate_resolutions"][:5]
    (model / "processor_config.json").write_text(json.dumps(pp))
    line = one_error(capsys, model, "--mmproj", "--outfile", tmp_path / "o.gguf")
    assert "processor_config.json" in line and "candidate_resolutions" in line
    pp["candidate_resolutions"] = rv.ref().candidate_resolutions()
    pp["downsample_ratio"] = 3
    (model / "processor_config.json").write_text(json.dumps(pp))
    line = one_error(capsys, model, "--mmproj", "--outfile", tmp_path / "o.gguf")
    assert "downsample_ratio" in line
    # without either list: the official default, one 384 tile
    (model / "processor_config.json").unlink()
    cfg = json.loads((model / "config.json").read_text())
    del cfg["candidate_resolutions"]
    (model / "config.json").write_text(json.dumps(cfg))
    kv = {k.key: k.value for k in plan(model, mmproj=True, outtype="f16").kv}
    assert kv["tilepass.preproc.candidate_resolutions"] == [384, 384] and kv["clip.vision.preproc_max_tiles"] == 1


# ---- the family by content, and the published shapes ---------------------------------------------------
def _read_published(tmp_path: Path, config: dict):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return load_config(tmp_path)


def test_published_configs_read(tmp_path):
    """The published shapes (the reference's real_*_config, in the official layout, without architectures):
    the family recognised, the omitted fields at the official classes' defaults (base: 30 layers, 32 heads,
    kv_lora 512, nope 128, rope 64, v 128, MLA on)."""
    R = rv.ref()
    t = _read_published(tmp_path, R.real_tiny_config())
    assert t.architecture == "DeepseekVLV2ForCausalLM" and not t.text.use_mla
    assert (t.text.hidden_size, t.text.num_hidden_layers, t.text.num_attention_heads, t.text.head_dim,
            t.text.n_routed_experts, t.text.moe_intermediate_size, t.text.vocab_size) == (1280, 12, 10, 128, 64, 896,
                                                                                          129280)
    v = t.vision
    assert (v.width, v.layers, v.heads, v.patch_size, v.image_size, v.grid, v.intermediate_size) == (
        1152, 27, 16, 14, 384, 27, 4304)
    assert (t.projector.input_dim, t.projector.n_embed, t.projector.downsample_ratio) == (1152, 1280, 2)
    s = _read_published(tmp_path, R.real_small_config()).text
    assert s.use_mla and (s.q_lora_rank, s.kv_lora_rank, s.qk_nope_head_dim, s.qk_rope_head_dim, s.v_head_dim,
                          s.num_attention_heads, s.vocab_size) == (None, 512, 128, 64, 128, 16, 102400)
    b = _read_published(tmp_path, R.real_base_config()).text
    assert b.use_mla and (b.num_hidden_layers, b.num_attention_heads, b.hidden_size, b.q_lora_rank, b.kv_lora_rank,
                          b.qk_nope_head_dim, b.qk_rope_head_dim, b.v_head_dim, b.n_routed_experts) == (
        30, 32, 2560, None, 512, 128, 64, 128, 72)
    assert (b.scoring_func, b.topk_method, b.norm_topk_prob, b.routed_scaling_factor) == ("sigmoid", "noaux_tc",
                                                                                         True, 2.0)
    # with the official class name as architectures too
    c = R.real_base_config()
    c["architectures"] = ["DeepseekVLV2ForCausalLM"]
    assert _read_published(tmp_path, c).architecture == "DeepseekVLV2ForCausalLM"


def test_other_families_still_recognised(tmp_path):
    """DeepSeek-OCR's configs share model_type "deepseek_vl_v2": theirs stay theirs (their vision_config.width
    is a dict), and no guesser trips over VL2's numeric width."""
    from convert.base import ModelBase
    R = rv.ref()
    vl2 = R.real_tiny_config()
    ocr = copy.deepcopy(vl2)
    ocr["vision_config"] = {"model_name": "deepencoder", "width": {"sam_vit_b": {}, "clip-l-14-224": {}}}
    ocr2 = copy.deepcopy(vl2)
    ocr2["vision_config"] = {"model_name": "deepencoderv2", "width": {"sam_vit_b": {}, "qwen2-0-5b": {"dim": 896}}}
    for data, want in ((vl2, {"DeepseekVLV2ForCausalLM"}), (ocr, {"DeepseekOCRForCausalLM"}),
                       (ocr2, {"DeepseekOCR2ForCausalLM"})):
        got = {g for part in ModelBase.registered_parts() if (g := part.guess_architecture(data))}
        assert got == want, (data["vision_config"], got)
    t, v = ModelBase.lookup("DeepseekVLV2ForCausalLM", False), ModelBase.lookup("DeepseekVLV2ForCausalLM", True)
    assert t.family == v.family == "DeepSeek-VL2" and v.gguf_arch == "clip"


def test_pre_tokenizer_name():
    from convert.models.deepseek_vl2 import pre_tokenizer_name

    def tok(*regexes):
        return json.dumps({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated"} for r in regexes]
            + [{"type": "ByteLevel", "use_regex": False}]}})
    assert pre_tokenizer_name(tok(r"\p{N}{1,3}", r"[一-龥぀-ゟ゠-ヿ]+"), 102400) == "deepseek-v3"
    assert pre_tokenizer_name(tok(r"[\r\n]", r"\p{N}+"), 129280) == "deepseek-llm"
    plain = json.dumps({"pre_tokenizer": {"type": "ByteLevel"}})
    assert pre_tokenizer_name(plain, 129280) == "deepseek-v3" and pre_tokenizer_name(plain, 102400) == "deepseek-llm"


def test_image_token_required(wide_base, tmp_path, capsys):
    model = rm.copy_model(wide_base, tmp_path / "m")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        p = model / f
        p.write_text(p.read_text(encoding="utf-8").replace('"<image>"', '"<picture>"'), encoding="utf-8")
    line = one_error(capsys, model, "--outfile", tmp_path / "o.gguf")
    assert "tokenizer.json" in line and "<image>" in line
