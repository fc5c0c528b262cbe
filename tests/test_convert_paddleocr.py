"""The PaddleOCR-VL converter, against independent references:

* tiny transformers models (``reference_paddleocr``: spec §8's config, vision weights redrawn), saved with
  ``save_pretrained`` and, rewritten, in the hub repos' config layout (with the unused tensors the published
  checkpoint carries): every tensor read back equals the safetensors weights, under names written out here
  from gguf-schema.md (not from convert/), with the schema's F32 rules; every key with its value;
* llama.cpp's own files for the same config (``../shared/fixtures/llamacpp-tiny-paddleocr-vl``): the same tensor
  names, shapes and types, the same llama.cpp keys and values, the same tokenizer (the reference checkpoints
  carry the fixture's SentencePiece vocabulary), plus keys of our own;
* quantised outtypes (rows of the real model's shapes: fallbacks included), --dry-run, broken and hostile
  checkpoints (one-line errors naming the tensor or key), the preprocessor and template sources, transformers'
  in-memory tensor names, an untied head, and a PaddleOCR-VL 1.5/1.6-style hub config.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import gguf
from gguf import GGMLQuantizationType as QT

import reference_models as rm
import reference_paddleocr as rp
from convert import ConversionError, convert, plan
from convert.cli import main
from convert.config import load_config
from gguf_bytes import dequant, read_gguf
from convert_expect import FILE_TYPE, check_values, one_error, rewrite_checkpoint

FIXTURE = rp.FIXTURE_DIR
CHOSEN = {"f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16, "q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_1": QT.Q4_1,
          "q5_0": QT.Q5_0, "q5_1": QT.Q5_1, "q4_k": QT.Q4_K, "q5_k": QT.Q5_K, "q6_k": QT.Q6_K}
OUR_TEXT_KEYS = {"tilepass.format_version", "tilepass.text.image_token_id", "tilepass.text.image_start_id",
                 "tilepass.text.image_end_id", "tokenizer.huggingface.json"}
OUR_VISION_KEYS = {"tilepass.format_version", "tilepass.vision.merge_size", "tilepass.vision.rope_freq_base",
                   "tilepass.vision.position_grid", "tilepass.projector.layer_norm_epsilon"}
OTHER_OURS = {"tilepass.writer_version"}  # written for every family by convert/base.py

# ---- gguf-schema.md's "PaddleOCR-VL" section, written out independently of convert/ ---------------------
_V = r"(?:model\.)?visual\.vision_model\."
_P = r"(?:mlp_AR|model\.projector)\."
_T = r"model\.(?:language_model\.)?"
VISION_RULES = [
    (_V + r"embeddings\.patch_embedding\.(weight|bias)", r"v.patch_embd.\1"),
    (_V + r"embeddings\.position_embedding\.weight", "v.position_embd.weight"),
    (_V + r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)", r"v.blk.\1.attn_\2.\3"),
    (_V + r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"v.blk.\1.attn_out.\2"),
    (_V + r"encoder\.layers\.(\d+)\.layer_norm(1|2)\.(weight|bias)", r"v.blk.\1.ln\2.\3"),
    (_V + r"encoder\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)", r"v.blk.\1.ffn_up.\2"),
    (_V + r"encoder\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)", r"v.blk.\1.ffn_down.\2"),
    (_V + r"post_layernorm\.(weight|bias)", r"v.post_ln.\1"),
    (_P + r"pre_norm\.(weight|bias)", r"mm.input_norm.\1"),
    (_P + r"linear_(1|2)\.(weight|bias)", r"mm.\1.\2"),
]
VISION_DROPPED = re.compile(_V + r"(embeddings\.packing_position_embedding\.weight|head\..*)")
TEXT_RULES = [
    (_T + r"embed_tokens\.weight", "token_embd.weight"),
    (_T + r"norm\.weight", "output_norm.weight"),
    (r"lm_head\.weight", "output.weight"),
    (_T + r"layers\.(\d+)\.input_layernorm\.weight", r"blk.\1.attn_norm.weight"),
    (_T + r"layers\.(\d+)\.post_attention_layernorm\.weight", r"blk.\1.ffn_norm.weight"),
    (_T + r"layers\.(\d+)\.self_attn\.(q|k|v)_proj\.weight", r"blk.\1.attn_\2.weight"),
    (_T + r"layers\.(\d+)\.self_attn\.o_proj\.weight", r"blk.\1.attn_output.weight"),
    (_T + r"layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight", r"blk.\1.ffn_\2.weight"),
]


def expected_tensors(sources: dict[str, np.ndarray], mmproj: bool) -> dict[str, np.ndarray]:
    """GGUF name -> expected float32 values (every source of the file maps once; the dropped map nowhere)."""
    out: dict[str, np.ndarray] = {}
    rules = VISION_RULES if mmproj else TEXT_RULES
    for src, arr in sources.items():
        hits = [re.sub(p, r, src) for p, r in rules if re.fullmatch(p, src)]
        if not hits:
            continue
        assert len(hits) == 1 and hits[0] not in out, (src, hits)
        out[hits[0]] = arr
    return out


def expected_type(name: str, ndim: int, row: int, chosen: QT) -> QT:
    """The schema's type column: norms, biases and the position table F32; the patch kernel F16 only in f16
    files (else F32); every other matrix the chosen type with llama-quantize's row fallbacks."""
    if ndim <= 1 or name == "v.position_embd.weight":
        return QT.F32
    if name == "v.patch_embd.weight":
        return chosen if chosen in (QT.F32, QT.F16) else QT.F32
    t = chosen
    if t in (QT.Q4_K, QT.Q5_K, QT.Q6_K) and row % 256:
        t = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}[t]
    if t in (QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1) and row % 32:
        t = QT.F16
    return t


def use_more_bits(i: int, n: int) -> bool:  # llama-quantize's layer rule for the _M mixtures
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def expected_type_m(name: str, ndim: int, row: int, main_type: QT, n_layer: int) -> QT:
    """llama-quantize's _M mixture: the head gets Q6_K, and with the head tied (no output.weight, this family's
    published layout) that is token_embd (llama_tensor_get_type's ``!qs.has_output`` rule)."""
    m = re.match(r"blk\.(\d+)\.(attn_v|ffn_down)\.weight$", name)
    more = name in ("output.weight", "token_embd.weight") or bool(m and use_more_bits(int(m.group(1)), n_layer))
    return expected_type(name, ndim, row, QT.Q6_K if more else main_type)


def expected_text_kv(hf: dict, chosen: QT, name: str, ids: dict | None = None) -> dict:
    """Every key of the text file but the tokenizer's lists, with its value, from the transformers config."""
    t = hf["text_config"]
    a = "paddleocr"
    ids = ids or {"image_token_id": 100295, "vision_start_token_id": 101305, "vision_end_token_id": 101306}
    return {
        "general.architecture": a, "general.type": "model", "general.name": name,
        "general.file_type": FILE_TYPE[chosen], "general.quantization_version": 2, "tilepass.format_version": 1,
        f"{a}.block_count": t["num_hidden_layers"], f"{a}.context_length": t["max_position_embeddings"],
        f"{a}.embedding_length": t["hidden_size"], f"{a}.feed_forward_length": t["intermediate_size"],
        f"{a}.attention.head_count": t["num_attention_heads"], f"{a}.attention.head_count_kv": t["num_key_value_heads"],
        f"{a}.rope.dimension_sections": list(t["rope_parameters"]["mrope_section"]) + [0],
        f"{a}.rope.freq_base": t["rope_parameters"]["rope_theta"],
        f"{a}.attention.layer_norm_rms_epsilon": t["rms_norm_eps"],
        f"{a}.attention.key_length": t["head_dim"], f"{a}.attention.value_length": t["head_dim"],
        "tilepass.text.image_token_id": ids["image_token_id"],
        "tilepass.text.image_start_id": ids["vision_start_token_id"],
        "tilepass.text.image_end_id": ids["vision_end_token_id"],
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": ..., "tokenizer.ggml.scores": ..., "tokenizer.ggml.token_type": ...,
        "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.padding_token_id": 0, "tokenizer.ggml.add_bos_token": False,
        "tokenizer.ggml.add_eos_token": False, "tokenizer.ggml.add_space_prefix": False,
        "tokenizer.chat_template": rp.CHAT_TEMPLATE, "tokenizer.huggingface.json": ...,
    }


def expected_vision_kv(hf: dict, chosen: QT, name: str, pp: dict | None = None) -> dict:
    v, t = hf["vision_config"], hf["text_config"]
    pp = pp or rp.PREPROCESSOR_CONFIG
    return {
        "general.architecture": "clip", "general.type": "mmproj", "general.name": name,
        "general.file_type": FILE_TYPE[chosen], "general.quantization_version": 2, "tilepass.format_version": 1,
        "clip.has_vision_encoder": True, "clip.projector_type": "paddleocr", "clip.use_gelu": True,
        "clip.vision.projection_dim": t["hidden_size"], "clip.vision.image_size": int(pp["max_pixels"] ** 0.5),
        "clip.vision.patch_size": 14, "clip.vision.embedding_length": v["hidden_size"],
        "clip.vision.feed_forward_length": v["intermediate_size"], "clip.vision.block_count": v["num_hidden_layers"],
        "clip.vision.attention.head_count": v["num_attention_heads"],
        "clip.vision.attention.layer_norm_epsilon": 1e-6,
        "clip.vision.image_mean": [0.5, 0.5, 0.5], "clip.vision.image_std": [0.5, 0.5, 0.5],
        "clip.vision.image_min_pixels": pp["min_pixels"], "clip.vision.image_max_pixels": pp["max_pixels"],
        "tilepass.vision.merge_size": 2, "tilepass.vision.rope_freq_base": 10000.0,
        "tilepass.vision.position_grid": 27, "tilepass.projector.layer_norm_epsilon": 1e-5,
    }


def check_kv(got: dict, want: dict) -> None:
    """Every expected key with its value (``...``: present, checked elsewhere); nothing else but the keys
    every family carries."""
    extra = set(got) - set(want)
    assert set(want) <= set(got) and extra <= OTHER_OURS, (f"missing {set(want) - set(got)}", f"extra {extra}")
    for k, w in want.items():
        if w is ...:
            continue
        g = got[k]
        if isinstance(w, float):
            assert np.isclose(g, w, rtol=1e-6), (k, g, w)
        elif isinstance(w, list):
            assert list(np.round(g, 6)) == list(np.round(w, 6)), (k, g, w)
        else:
            assert g == w and type(g) is type(w), (k, g, w)


def check_file(path: Path, sources: dict, mmproj: bool, chosen: QT, *, mixture_layers: int | None = None) -> dict:
    """Every tensor of the file: the expected set, shape, type and values."""
    kv, tensors = read_gguf(path)
    want = expected_tensors(sources, mmproj)
    assert set(tensors) == set(want), f"missing {set(want) - set(tensors)}, extra {set(tensors) - set(want)}"
    for n, t in tensors.items():
        src = want[n]
        assert t[1] == src.shape, (n, t[1], src.shape)
        typ = expected_type_m(n, src.ndim, src.shape[-1], chosen, mixture_layers) if mixture_layers else \
            expected_type(n, src.ndim, src.shape[-1], chosen)
        assert t[0] == typ, (n, t[0].name, typ.name)
        check_values(n, t[0], dequant(t), src)
    return kv


def saved_config(model_dir: Path) -> dict:
    return json.loads((model_dir / "config.json").read_text())


# ---- models ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_hf() -> Path:
    return rp.get_tiny_paddleocr(layout="hf")


@pytest.fixture(scope="module")
def tiny_hub() -> Path:
    return rp.get_tiny_paddleocr(layout="hub")


@pytest.fixture(scope="module")
def hf_cfg(tiny_hf) -> dict:
    return saved_config(tiny_hf)


@pytest.fixture(scope="module")
def sources(tiny_hub) -> dict[str, np.ndarray]:
    return rm.read_checkpoint_f32(tiny_hub)


N_SMALL = 1024
# the real model's row shapes, scaled: vision width 288 (1152 / 4: K-quants fall back, as for 1152), 4 heads of
# 72 as the real model, MLP 400 (like 4304, not a multiple of 32: F16 fallback); text 256 wide, FFN 384
WIDE = dict(
    vision_config=dict(hidden_size=288, intermediate_size=400, num_hidden_layers=2, num_attention_heads=4,
                       image_size=384, patch_size=14, spatial_merge_size=2),
    text_config=dict(vocab_size=N_SMALL, hidden_size=256, intermediate_size=384, num_hidden_layers=3,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=64, initializer_range=0.2,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0,
                     rope_parameters=dict(rope_type="default", rope_theta=500000.0, mrope_section=[8, 12, 12])),
    **{k: v for k, v in rp.small_ids(N_SMALL).items() if k != "cls"})


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> Path:
    return rp.save_model(rp.make_model(seed=2, config=WIDE), tmp_path_factory.mktemp("paddle-wide") / "wide",
                         layout="hub", vocab=rp.small_vocabulary(N_SMALL))


# ---- round trips ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["hf", "hub"])
def test_vision_roundtrip_f32(tiny_hf, tiny_hub, hf_cfg, sources, tmp_path, layout):
    """Spec §8's model, both config layouts: every vision tensor exactly, every key with its value; the hub
    checkpoint's unused tensors are not written."""
    model = tiny_hf if layout == "hf" else tiny_hub
    cfg = saved_config(model)
    assert ("text_config" in cfg) == (layout == "hf")
    if layout == "hub":
        assert cfg["vision_config"]["architectures"] == ["PaddleOCRVisionModel"] and "rope_scaling" in cfg
        assert any(VISION_DROPPED.fullmatch(n) for n in sources)
    out = tmp_path / "mmproj.gguf"
    res = convert(model, mmproj=True, outtype="f32", outfile=out, progress=False)
    kv = check_file(out, sources, True, QT.F32)
    check_kv(kv, expected_vision_kv(hf_cfg, QT.F32, model.name))
    v = rp.TINY_CONFIG["vision_config"]
    assert len(res.plan.tensors) == 3 + 16 * v["num_hidden_layers"] + 2 + 6
    assert sorted(res.plan.dropped) == sorted(n for n in rm.read_checkpoint_f32(model) if VISION_DROPPED.fullmatch(n))
    _, t = read_gguf(out)
    assert t["v.position_embd.weight"][1] == (729, 32) and t["mm.1.weight"][1] == (128, 128)
    assert t["mm.2.weight"][1] == (64, 128) and t["v.patch_embd.weight"][1] == (32, 3, 14, 14)


@pytest.mark.parametrize("layout", ["hf", "hub"])
def test_text_roundtrip_f32(tiny_hf, tiny_hub, hf_cfg, sources, tmp_path, layout):
    """The text file: every tensor exactly (no output.weight: tied), every key with its value, the llama
    vocabulary of tokenizer.model, tokenizer.json verbatim, the template of chat_template.jinja."""
    model = tiny_hf if layout == "hf" else tiny_hub
    out = tmp_path / "text.gguf"
    convert(model, outtype="f32", outfile=out, progress=False)
    kv = check_file(out, sources, False, QT.F32)
    check_kv(kv, expected_text_kv(hf_cfg, QT.F32, model.name))
    assert "output.weight" not in read_gguf(out)[1]
    v = rp.fixture_vocabulary()
    assert kv["tokenizer.ggml.tokens"] == v.pieces and len(kv["tokenizer.ggml.scores"]) == 103424
    types = kv["tokenizer.ggml.token_type"]
    for i, tok in rp.SPECIAL_TOKENS.items():
        assert types[i] == int(gguf.TokenType.CONTROL) and kv["tokenizer.ggml.scores"][i] == -1000.0, i
    assert types[3] == int(gguf.TokenType.BYTE) and types[331] == int(gguf.TokenType.NORMAL)
    assert kv["tokenizer.huggingface.json"] == (model / "tokenizer.json").read_text(encoding="utf-8")


def test_both_layouts_give_the_same_files(tiny_hf, tmp_path):
    """Same weights in transformers' layout and in the hub's (plus its unused tensors): identical files."""
    hub = rm.copy_model(tiny_hf, tmp_path / "hub" / tiny_hf.name)
    rp.rewrite_config_hub(hub, name=tiny_hf.name)
    assert load_config(hub).layout == "hub" and load_config(tiny_hf).layout == "hf"
    for mmproj, outtype in ((True, "f32"), (True, "q8_0"), (False, "f16")):
        a, b = tmp_path / f"a{mmproj}{outtype}.gguf", tmp_path / f"b{mmproj}{outtype}.gguf"
        convert(tiny_hf, mmproj=mmproj, outtype=outtype, outfile=a, progress=False)
        convert(hub, mmproj=mmproj, outtype=outtype, outfile=b, progress=False)
        assert a.read_bytes() == b.read_bytes(), (mmproj, outtype)


def test_transformers_tensor_names(tiny_hf, tmp_path):
    """A checkpoint under transformers' in-memory names (model.visual.*, model.projector.*,
    model.language_model.*), as some transformers versions saved it: identical files."""
    d = rm.copy_model(tiny_hf, tmp_path / tiny_hf.name)
    rename = [(r"^visual\.", "model.visual."), (r"^mlp_AR\.", "model.projector."),
              (r"^model\.(?!visual\.|projector\.)", "model.language_model.")]
    tensors = {}
    for k, v in rm.read_checkpoint_f32(d).items():
        for pat, rep in rename:
            if re.match(pat, k):
                k = re.sub(pat, rep, k)
                break
        tensors[k] = np.array(v, copy=True)
    assert "model.language_model.layers.1.mlp.up_proj.weight" in tensors and "model.projector.linear_1.weight" in tensors
    (d / "model.safetensors").unlink()
    rm.write_safetensors(d / "model.safetensors", tensors)
    for mmproj in (True, False):
        a, b = tmp_path / f"a{mmproj}.gguf", tmp_path / f"b{mmproj}.gguf"
        convert(tiny_hf, mmproj=mmproj, outtype="f16", outfile=a, progress=False)
        convert(d, mmproj=mmproj, outtype="f16", outfile=b, progress=False)
        assert a.read_bytes() == b.read_bytes(), mmproj


# ---- llama.cpp's files ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixture_models(tmp_path_factory) -> dict[str, Path]:
    """The llama.cpp fixture's transformers config (3-layer vision tower), in a directory named as llama.cpp's
    general.name says, in transformers' layout and in the hub layout llama.cpp's converter read."""
    model = rp.make_model(seed=6, config=rp.fixture_config())
    root = tmp_path_factory.mktemp("paddle-fixture")
    hf = rp.save_model(model, root / "hf" / "Orig")
    hub = rm.copy_model(hf, root / "hub" / "Orig")
    rp.rewrite_config_hub(hub, name="Orig")
    return {"hf": hf, "hub": hub}


def _same_value(a, b) -> bool:
    if isinstance(b, float):
        return bool(np.isclose(a, b, rtol=1e-6))
    if isinstance(b, list) and b and isinstance(b[0], float):
        return bool(np.allclose(a, b))
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("layout", ["hf", "hub"])
def test_vision_matches_llamacpp_fixture(fixture_models, tmp_path, layout):
    """Tensor names, shapes and types of llama.cpp's f32 vision file, its keys with its values (image_size 1680 =
    ⌊√max_pixels⌋), and ours."""
    out = tmp_path / "mmproj-f32.gguf"
    convert(fixture_models[layout], mmproj=True, outtype="f32", outfile=out, progress=False)
    kv_ours, t_ours = read_gguf(out)
    kv_theirs, t_theirs = read_gguf(FIXTURE / "mmproj-f32.gguf")
    assert {n: t[:2] for n, t in t_ours.items()} == {n: t[:2] for n, t in t_theirs.items()} and len(t_ours) == 59
    for k, v in kv_theirs.items():
        if k == "general.size_label":
            continue  # optional metadata we do not write
        assert k in kv_ours and _same_value(kv_ours[k], v), (k, kv_ours.get(k), v)
    assert set(kv_ours) - set(kv_theirs) == OUR_VISION_KEYS | OTHER_OURS
    assert (kv_ours["tilepass.vision.merge_size"], kv_ours["tilepass.vision.position_grid"]) == (2, 27)


@pytest.mark.parametrize("layout", ["hf", "hub"])
def test_text_matches_llamacpp_fixture(fixture_models, tmp_path, layout):
    """Tensor names, shapes and types of llama.cpp's f16 text file and every one of its keys with its value:
    the tokenizer too (the same SentencePiece model: tokens, scores and types for all 103424 ids, the ids,
    add_space_prefix false, the template), plus ours."""
    out = tmp_path / "text-f16.gguf"
    convert(fixture_models[layout], outtype="f16", outfile=out, progress=False)
    kv_ours, t_ours = read_gguf(out)
    kv_theirs, t_theirs = read_gguf(FIXTURE / "text-f16.gguf")
    assert {n: t[:2] for n, t in t_ours.items()} == {n: t[:2] for n, t in t_theirs.items()} and len(t_ours) == 20
    for k, v in kv_theirs.items():
        if k == "general.size_label":
            continue
        assert k in kv_ours and _same_value(kv_ours[k], v), (k, str(kv_ours.get(k))[:80], str(v)[:80])
    assert set(kv_ours) - set(kv_theirs) == OUR_TEXT_KEYS | OTHER_OURS
    assert kv_ours["paddleocr.rope.dimension_sections"] == [2, 3, 3, 0]


# ---- quantised outtypes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k",
                                     "auto"])
def test_vision_outtypes(wide, tmp_path, outtype):
    """Matrices take the type (rows of 288 and 1152 fall back from K-quants to Q5_0/Q5_1/Q8_0, rows of 400 to
    F16, as the real model's 1152 / 4304); norms, biases and the position table stay F32; the patch kernel is F16
    only with f16."""
    out = tmp_path / "v.gguf"
    convert(wide, mmproj=True, outtype=outtype, outfile=out, progress=False)
    chosen = QT.F16 if outtype == "auto" else CHOSEN[outtype]
    kv = check_file(out, rm.read_checkpoint_f32(wide), True, chosen)
    assert kv["general.file_type"] == FILE_TYPE[chosen]
    types = {n: t[0] for n, t in read_gguf(out)[1].items()}
    assert types["v.position_embd.weight"] == types["v.blk.0.ln1.bias"] == types["mm.1.bias"] == QT.F32
    assert types["v.patch_embd.weight"] == (QT.F16 if chosen == QT.F16 else QT.F32)
    if chosen == QT.Q4_K:
        assert types["v.blk.0.attn_q.weight"] == types["mm.1.weight"] == QT.Q5_0
        assert types["v.blk.0.ffn_down.weight"] == QT.F16 and types["mm.2.weight"] == QT.Q5_0


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0", "q4_0", "q5_1", "q4_k", "q5_k", "q6_k", "q4_k_m",
                                     "q5_k_m", "auto"])
def test_text_outtypes(wide, tmp_path, outtype):
    out = tmp_path / "t.gguf"
    convert(wide, outtype=outtype, outfile=out, progress=False)
    mixture = outtype.endswith("_m")
    main_type = {"auto": QT.Q8_0, "q4_k_m": QT.Q4_K, "q5_k_m": QT.Q5_K}.get(outtype) or CHOSEN[outtype]
    kv = check_file(out, rm.read_checkpoint_f32(wide), False, main_type, mixture_layers=3 if mixture else None)
    want = FILE_TYPE[main_type] if not mixture else {QT.Q4_K: 15, QT.Q5_K: 17}[main_type]
    assert kv["general.file_type"] == want
    types = {n: t[0] for n, t in read_gguf(out)[1].items()}
    if outtype == "q4_k":
        assert types["blk.0.ffn_down.weight"] == QT.Q5_0 and types["token_embd.weight"] == QT.Q4_K
    if outtype == "q4_k_m":
        assert types["blk.2.attn_v.weight"] == QT.Q6_K and types["blk.2.ffn_down.weight"] == QT.Q8_0  # row 384
        assert types["blk.1.attn_v.weight"] == QT.Q4_K
        assert "output.weight" not in types and types["token_embd.weight"] == QT.Q6_K  # the tied head


def test_mixture_refused_for_vision(tiny_hf):
    with pytest.raises(ConversionError, match="mixture for a text model"):
        plan(tiny_hf, mmproj=True, outtype="q4_k_m")


# ---- --dry-run ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mmproj", [True, False])
def test_dry_run_lists_every_tensor(tiny_hub, sources, capsys, mmproj):
    before = sorted(p.name for p in tiny_hub.iterdir())
    assert main([str(tiny_hub), "--dry-run", "--outtype", "q8_0"] + (["--mmproj"] if mmproj else [])) == 0
    out = capsys.readouterr().out
    want = expected_tensors(sources, mmproj)
    lines = [ln for ln in out.splitlines() if " -> " in ln and not ln.startswith("#") and "(dropped" not in ln]
    listed = {}
    for ln in lines:
        m = re.search(r" -> (\S+) \[([\d, ]+)\] (\w+)", ln)
        listed[m.group(1)] = (tuple(int(x) for x in m.group(2).split(", ")), m.group(3))
    assert set(listed) == set(want) and len(lines) == len(want)
    for n, (shape, typ) in listed.items():
        assert shape == want[n].shape and typ == expected_type(n, want[n].ndim, shape[-1], QT.Q8_0).name, n
    dropped = sorted(ln.split(" -> ")[0] for ln in out.splitlines() if "(dropped" in ln)
    if mmproj:
        assert dropped == sorted(n for n in sources if VISION_DROPPED.fullmatch(n)) and len(dropped) == 12
        assert "visual.vision_model.embeddings.packing_position_embedding.weight -> (dropped" in out
        assert "mlp_AR.linear_1.weight [F32] -> mm.1.weight [128, 128] Q8_0" in out
        assert "clip.projector_type STRING = 'paddleocr'" in out and "clip.vision.image_size UINT32 = 1680" in out
        assert "tilepass.vision.position_grid UINT32 = 27" in out and "tensors belong to the text file" in out
    else:
        assert dropped == []
        assert "paddleocr.rope.dimension_sections ARRAY[INT32] = [2, 3, 3, 0]" in out
        assert "tokenizer.ggml.model STRING = 'llama'" in out and "tokenizer.ggml.add_space_prefix BOOL = false" in out
        assert "belong to the vision (--mmproj) file" in out
    assert sorted(p.name for p in tiny_hub.iterdir()) == before


# ---- broken checkpoints ---------------------------------------------------------------------------------
_VL1 = "visual.vision_model.encoder.layers.1."
BROKEN = {
    # (edit, vision file?, what the one line names)
    "missing_vision": (lambda t: t.pop(_VL1 + "mlp.fc2.bias"), True, ["missing tensor", _VL1 + "mlp.fc2.bias"]),
    "missing_projector": (lambda t: t.pop("mlp_AR.linear_2.weight"), True, ["missing tensor", "mlp_AR.linear_2.weight"]),
    "extra_vision": (lambda t: t.__setitem__("visual.vision_model.encoder.layers.2.mlp.fc1.weight",
                                             np.zeros((64, 32), np.float32)), True,
                     ["unexpected tensor", "visual.vision_model.encoder.layers.2.mlp.fc1.weight",
                      "not part of PaddleOCR-VL as configured"]),
    "extra_projector": (lambda t: t.__setitem__("mlp_AR.linear_3.weight", np.zeros((64, 64), np.float32)), True,
                        ["unexpected tensor", "mlp_AR.linear_3.weight"]),
    "wrong_position_table": (lambda t: t.__setitem__("visual.vision_model.embeddings.position_embedding.weight",
                                                     np.zeros((730, 32), np.float32)), True,
                             ["position_embedding.weight", "[730, 32]", "config implies [729, 32]"]),
    "wrong_merge": (lambda t: t.__setitem__("mlp_AR.linear_1.weight", np.zeros((128, 64), np.float32)), True,
                    ["mlp_AR.linear_1.weight", "[128, 64]", "[128, 128]"]),
    "missing_text": (lambda t: t.pop("model.layers.1.mlp.down_proj.weight"), False,
                     ["missing tensor", "model.layers.1.mlp.down_proj.weight"]),
    "wrong_kv_rows": (lambda t: t.__setitem__("model.layers.0.self_attn.k_proj.weight", np.zeros((48, 64), np.float32)),
                      False, ["model.safetensors", "model.layers.0.self_attn.k_proj.weight", "[48, 64]", "[32, 64]"]),
    "extra_text": (lambda t: t.__setitem__("model.layers.0.self_attn.qkv_proj.weight", np.zeros((128, 64), np.float32)),
                   False, ["unexpected tensor", "model.layers.0.self_attn.qkv_proj.weight"]),
    "int_tensor": (lambda t: t.__setitem__("model.norm.weight", np.zeros((64,), np.int64)), False,
                   ["model.norm.weight", "non-float dtype"]),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_checkpoint(tiny_hub, tmp_path, capsys, case):
    """A missing, extra or wrongly shaped tensor: one error line naming it; no output file."""
    model = rm.copy_model(tiny_hub, tmp_path / "m")
    edit, mmproj, needles = BROKEN[case]
    rewrite_checkpoint(model, edit)
    line = one_error(capsys, model, *(["--mmproj"] if mmproj else []), "--outfile", tmp_path / "o.gguf")
    for n in needles:
        assert n in line, (n, line)
    assert not list(tmp_path.glob("o.gguf*"))


def test_preprocessor_config_needed_for_vision_only(tiny_hf, tmp_path, capsys):
    """Without preprocessor_config.json (or without its pixel bounds) the vision file is refused in one line; the
    text file converts."""
    model = rm.copy_model(tiny_hf, tmp_path / "m")
    (model / "preprocessor_config.json").unlink()
    line = one_error(capsys, model, "--mmproj", "--outfile", tmp_path / "o.gguf")
    assert "preprocessor_config.json not found" in line and "min_pixels" in line
    assert main([str(model), "--outfile", str(tmp_path / "t.gguf"), "--vocab-only"]) == 0
    pp = dict(rp.PREPROCESSOR_CONFIG)
    del pp["max_pixels"]
    (model / "preprocessor_config.json").write_text(json.dumps(pp))
    line = one_error(capsys, model, "--mmproj", "--outfile", tmp_path / "o.gguf")
    assert "preprocessor_config.json" in line and "missing \"max_pixels\"" in line
    pp.update(max_pixels=2822400, patch_size=16)
    (model / "preprocessor_config.json").write_text(json.dumps(pp))
    line = one_error(capsys, model, "--mmproj", "--outfile", tmp_path / "o.gguf")
    assert "\"patch_size\" 16 disagrees with config.json's 14" in line


@pytest.mark.parametrize("form", ["size_pixels", "size_edges", "processor_save"])
def test_preprocessor_forms(tiny_hf, tmp_path, form):
    """The pixel bounds where transformers' processors put them (``size.{shortest,longest}_edge``, what
    ``PaddleOCRVLImageProcessorPil.save_pretrained`` writes) or ``size.{min,max}_pixels``."""
    model = rm.copy_model(tiny_hf, tmp_path / "m")
    pp = {k: v for k, v in rp.PREPROCESSOR_CONFIG.items() if k not in ("min_pixels", "max_pixels")}
    if form == "size_pixels":
        pp["size"] = {"min_pixels": 112896, "max_pixels": 1003520}
        (model / "preprocessor_config.json").write_text(json.dumps(pp))
    elif form == "size_edges":
        pp["size"] = {"shortest_edge": 112896, "longest_edge": 1003520}
        (model / "preprocessor_config.json").write_text(json.dumps(pp))
    else:
        rp.image_processor(min_pixels=112896, max_pixels=1003520).save_pretrained(model)
    kv = {k.key: k.value for k in plan(model, mmproj=True, outtype="f16").kv}
    assert (kv["clip.vision.image_min_pixels"], kv["clip.vision.image_max_pixels"]) == (112896, 1003520)
    assert kv["clip.vision.image_size"] == 1001  # ⌊√1003520⌋, as llama.cpp writes it
    assert kv["clip.vision.image_mean"] == [0.5, 0.5, 0.5]


def test_chat_template_sources(tiny_hf, tmp_path):
    """tokenizer_config.json's template first (llama.cpp's order), else chat_template.jinja; none: no key."""
    model = rm.copy_model(tiny_hf, tmp_path / "m")
    tpl = lambda: {k.key: k.value for k in plan(model, vocab_only=True).kv}.get("tokenizer.chat_template")  # noqa
    assert tpl() == rp.CHAT_TEMPLATE
    tc = json.loads((model / "tokenizer_config.json").read_text())
    tc["chat_template"] = "{{ 'from tokenizer_config' }}"
    (model / "tokenizer_config.json").write_text(json.dumps(tc))
    assert tpl() == "{{ 'from tokenizer_config' }}"
    del tc["chat_template"]
    (model / "tokenizer_config.json").write_text(json.dumps(tc))
    (model / "chat_template.jinja").unlink()
    assert tpl() is None


def test_untied_head_and_hub_tie_flag(tiny_hf, tmp_path):
    """An ``lm_head.weight`` in the checkpoint is written as output.weight; without one the head is tied whatever
    the config's tie flag says (a hub config may say false)."""
    d = rm.copy_model(tiny_hf, tmp_path / "untied")
    head = np.random.default_rng(0).standard_normal((103424, 64)).astype(np.float32)
    rewrite_checkpoint(d, lambda t: t.__setitem__("lm_head.weight", head))
    p = plan(d, outtype="q8_0")
    assert [t.name for t in p.tensors][-1] == "output.weight" and p.tensors[-1].shape == (103424, 64)
    d2 = rm.copy_model(tiny_hf, tmp_path / "tie-false")
    rp.rewrite_config_hub(d2, tie=False, unused_tensors=False)
    assert "output.weight" not in {t.name for t in plan(d2, outtype="q8_0").tensors}


def test_paddleocr_vl_15_style_config(tiny_hf, tmp_path):
    """PaddleOCR-VL 1.5 / 1.6 (same architecture and tensors): their hub config (no text_config), the 1.6
    processor bounds (112896 / 1003520) and a template whose generation prompt is "Assistant:\\n" convert; the
    template is written verbatim."""
    d = rm.copy_model(tiny_hf, tmp_path / "PaddleOCR-VL-1.6")
    rp.rewrite_config_hub(d, name="PaddleOCR-VL-1.6", tie=False)
    pp = dict(rp.PREPROCESSOR_CONFIG, min_pixels=112896, max_pixels=1003520)
    (d / "preprocessor_config.json").write_text(json.dumps(pp))
    tpl = rp.CHAT_TEMPLATE.replace('"Assistant: "', '"Assistant:\\n"')
    (d / "chat_template.jinja").write_text(tpl)
    v = {k.key: k.value for k in plan(d, mmproj=True, outtype="f16").kv}
    t = {k.key: k.value for k in plan(d, outtype="q8_0").kv}
    assert (v["clip.vision.image_size"], v["clip.vision.image_max_pixels"], v["general.name"]) == (
        1001, 1003520, "PaddleOCR-VL-1.6")
    assert t["tokenizer.chat_template"] == tpl and t["paddleocr.rope.dimension_sections"] == [2, 3, 3, 0]


# ---- configs --------------------------------------------------------------------------------------------
def test_registry_and_guess():
    """PaddleOCRVLForConditionalGeneration has both parts; a config without "architectures" is recognised by its
    model_type; the other families are unchanged."""
    from convert.base import ModelBase
    t, v = ModelBase.lookup("PaddleOCRVLForConditionalGeneration", False), \
        ModelBase.lookup("PaddleOCRVLForConditionalGeneration", True)
    assert (t.gguf_arch, v.gguf_arch, t.family, v.family) == ("paddleocr", "clip", "PaddleOCR-VL", "PaddleOCR-VL")
    assert ModelBase.lookup("DeepseekOCR2ForCausalLM", False).gguf_arch == "deepseek2-ocr"


@pytest.mark.parametrize("layout", ["hf", "hub"])
def test_config_reads(tiny_hf, tiny_hub, tmp_path, layout):
    cfg = saved_config(tiny_hf if layout == "hf" else tiny_hub)
    del cfg["architectures"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    got = load_config(tmp_path)
    assert (got.layout, got.architecture) == (layout, "PaddleOCRVLForConditionalGeneration")
    t, v = got.text, got.vision
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads, t.head_dim) == (
        64, 2, 4, 2, 16)
    assert (t.mrope_section, t.rope_theta, t.vocab_size, t.rms_norm_eps) == ([2, 3, 3], 500000.0, 103424, 1e-5)
    assert (v.hidden_size, v.num_hidden_layers, v.position_grid, v.spatial_merge_size, v.rope_theta) == (
        32, 2, 27, 2, 10000.0)
    assert (got.image_token_id, got.image_start_id, got.image_end_id) == (100295, 101305, 101306)
    assert got.min_pixels is None  # no preprocessor_config.json in tmp_path


def test_published_config_reads(tmp_path):
    """The real model's numbers in the hub layout (the fixture README's / PaddlePaddle's config fields)."""
    hf = {"text_config": {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "head_dim": 128,
                          "hidden_act": "silu", "hidden_size": 1024, "intermediate_size": 3072,
                          "max_position_embeddings": 131072, "num_attention_heads": 16, "num_hidden_layers": 18,
                          "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "vocab_size": 103424,
                          "rope_parameters": {"mrope_section": [16, 24, 24], "rope_theta": 500000.0}},
          "vision_config": {"hidden_act": "gelu_pytorch_tanh", "hidden_size": 1152, "image_size": 384,
                            "intermediate_size": 4304, "layer_norm_eps": 1e-6, "num_attention_heads": 16,
                            "num_channels": 3, "num_hidden_layers": 27, "patch_size": 14, "spatial_merge_size": 2},
          "image_token_id": 100295, "video_token_id": 100296, "vision_start_token_id": 101305,
          "vision_end_token_id": 101306}
    (tmp_path / "config.json").write_text(json.dumps(rp.hub_config(hf, "PaddleOCR-VL", tie=False)))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(rp.PREPROCESSOR_CONFIG))
    got = load_config(tmp_path)
    t, v = got.text, got.vision
    assert got.layout == "hub"
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads, t.head_dim,
            t.intermediate_size, t.mrope_section) == (1024, 18, 16, 2, 128, 3072, [16, 24, 24])
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.intermediate_size, v.position_grid) == (
        1152, 27, 16, 4304, 27)
    assert (got.min_pixels, got.max_pixels) == (147384, 2822400)


BAD_CONFIGS = [
    ("text_config.rope_parameters.mrope_section", [2, 3, 2], "mrope_section [2, 3, 2] must be 3"),
    ("text_config.hidden_act", "gelu", "is not supported (ERNIE's SwiGLU: silu)"),
    ("text_config.use_bias", True, "biased projections"),
    ("vision_config.hidden_act", "gelu", "is not supported (gelu_pytorch_tanh)"),
    ("vision_config.rope_parameters.rope_type", "default", "is not supported (axial)"),
    ("image_token_id", 200000, "\"image_token_id\" 200000 does not fit vocab_size 103424"),
]


@pytest.mark.parametrize("key,value,needle", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_values(tiny_hf, tmp_path, capsys, key, value, needle):
    model = rm.copy_model(tiny_hf, tmp_path / "m")
    cfg = saved_config(model)
    node = cfg
    *head, last = key.split(".")
    for k in head:
        node = node[k]
    node[last] = value
    (model / "config.json").write_text(json.dumps(cfg))
    line = one_error(capsys, model, "--mmproj", "--outfile", tmp_path / "o.gguf")
    assert "config.json" in line and needle in line, line


HOSTILE = [
    (["num_hidden_layers"], [], ["num_hidden_layers", "layers (model.layers.N.*)"]),
    (["vision_config.num_hidden_layers"], ["--mmproj"], ["vision_config.num_hidden_layers", "vision layers"]),
    (["vocab_size"], [], ["vocab_size"]),
    (["vocab_size"], ["--vocab-only"], ["vocab_size"]),
]


@pytest.mark.parametrize("keys,args,needles", HOSTILE, ids=["layers", "vision-layers", "vocab", "vocab-only"])
def test_hostile_config_fails_fast(tiny_hub, tmp_path, capsys, keys, args, needles):
    """Counts far beyond the checkpoint are refused before anything is sized by them: one line, under a second."""
    model = tmp_path / "m"
    model.mkdir()
    for f in tiny_hub.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, model / f.name)
    (model / "model.safetensors").symlink_to(tiny_hub / "model.safetensors")
    cfg = saved_config(model)
    for k in keys:
        node = cfg
        *head, last = k.split(".")
        for h in head:
            node = node[h]
        node[last] = 10 ** 12
    (model / "config.json").write_text(json.dumps(cfg))
    t0 = time.perf_counter()
    line = one_error(capsys, model, "--outfile", tmp_path / "o.gguf", *args)
    assert time.perf_counter() - t0 < 1.0
    assert str(10 ** 12) in line and "config.json" in line
    for n in needles:
        assert n in line, (n, line)


# ---- the reference helpers the native tests use (reference_paddleocr) -----------------------------------
@pytest.fixture(scope="module")
def page_prompt():
    """reference_prompt on the fixture's page (the llama.cpp fixture's geometry and tokenizer)."""
    from PIL import Image

    model = rp.get_tiny_paddleocr_model()
    img = Image.open(FIXTURE / "page.png")
    return model, img, rp.reference_prompt(model, [img], "OCR:", 8, features=True)


def test_reference_prompt_matches_fixture(page_prompt):
    """The prompt ids, 3-D positions and rope delta of the fixture's reference.npz (same page, template and
    tokenizer), and greedy tokens that a cache-free forward over prompt + tokens confirms."""
    import torch

    model, _, ref = page_prompt
    z = np.load(FIXTURE / "reference.npz")
    assert ref.input_ids.tolist() == z["prompt_ids"].tolist()
    assert np.array_equal(ref.position_ids, z["position_ids"]) and ref.rope_delta == int(z["rope_delta"]) == -1426
    assert int(ref.mm_token_type_ids.sum()) == 1472 and ref.logits.shape == (1484, 103424)
    assert ref.features.pre.image_grid_thw.tolist() == [z["image_grid_thw"].tolist()]
    # the greedy tokens again, without the KV cache: one forward over the prompt and the tokens
    ids = np.concatenate([ref.input_ids, ref.greedy[:-1]])
    mm = np.concatenate([ref.mm_token_type_ids, np.zeros(len(ref.greedy) - 1, np.int32)])
    pre = ref.features.pre
    with torch.no_grad():
        model.model.rope_deltas = None
        out = model(input_ids=torch.from_numpy(ids)[None], pixel_values=torch.from_numpy(pre.pixel_values),
                    image_grid_thw=torch.from_numpy(pre.image_grid_thw), mm_token_type_ids=torch.from_numpy(mm)[None])
        model.model.rope_deltas = None
    logits = out.logits[0, len(ref.input_ids) - 1:].numpy()
    assert logits.argmax(-1).tolist() == ref.greedy
    np.testing.assert_allclose(logits, ref.greedy_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ref.logits[-1], ref.greedy_logits[0], rtol=1e-5, atol=1e-5)


def test_reference_features_stages(page_prompt):
    """The stage outputs line up: the embeddings are the patch convolution plus the 27x27 table resampled
    bilinearly (align_corners=False) to the grid; the projector (LayerNorm eps 1e-5, 2x2 merge position-major,
    Linear, exact GELU, Linear) applied to the encoder output gives the projected tokens; two images in one pass
    give each image's single-image outputs (attention never crosses images)."""
    import torch
    import torch.nn.functional as F

    model, img, ref = page_prompt
    im = ref.features.images[0]
    gh, gw = im.grid
    assert (gh, gw) == (92, 64) and im.embeddings.shape == (5888, 32) and im.projected.shape == (1472, 64)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    e = "model.visual.vision_model.embeddings."
    x = torch.from_numpy(ref.features.pre.patches(0))
    patches = F.conv2d(x, sd[e + "patch_embedding.weight"], sd[e + "patch_embedding.bias"]).reshape(-1, 32)
    table = sd[e + "position_embedding.weight"].reshape(27, 27, 32).permute(2, 0, 1)[None]
    pos = F.interpolate(table, size=(gh, gw), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).reshape(-1, 32)
    np.testing.assert_allclose(im.embeddings, (patches + pos).numpy(), rtol=1e-5, atol=1e-5)
    p = "model.projector."
    h = F.layer_norm(torch.from_numpy(im.encoder), (32,), sd[p + "pre_norm.weight"], sd[p + "pre_norm.bias"], 1e-5)
    h = h.reshape(gh // 2, 2, gw // 2, 2, 32).permute(0, 2, 1, 3, 4).reshape(-1, 128)
    h = F.linear(F.gelu(F.linear(h, sd[p + "linear_1.weight"], sd[p + "linear_1.bias"])),
                 sd[p + "linear_2.weight"], sd[p + "linear_2.bias"])
    np.testing.assert_allclose(im.projected, h.numpy(), rtol=1e-4, atol=1e-5)
    small = img.resize((300, 200))
    both = rp.reference_features(model, [small, img.crop((0, 0, 500, 420))])
    one = [rp.reference_features(model, [x]).images[0] for x in (small, img.crop((0, 0, 500, 420)))]
    for a, b in zip(both.images, one):
        assert a.grid == b.grid
        for k in ("embeddings", "encoder", "projected"):
            np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=1e-4, atol=1e-5)
    assert both.images[0].grid == (24, 34)  # 300x200 grows to min_pixels: 476x336 (smart_resize, factor 28)
