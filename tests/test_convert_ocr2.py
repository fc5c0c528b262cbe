"""The DeepSeek-OCR-2 converter, against independent references:

* tiny transformers models (``reference_ocr2``: spec §7's config, vision weights redrawn), saved with
  ``save_pretrained`` and, rewritten, in the published original config layout: every tensor read back with
  ``gguf.GGUFReader`` equals the safetensors weights after llama.cpp's reshape (``view_seperator`` [1, n]),
  under names written out here from gguf-schema.md (not from convert/), with the schema's F32 rules;
* llama.cpp's own files for the same config (``../shared/fixtures/llamacpp-tiny-ocr2``): same tensor names,
  shapes and types, same llama.cpp keys and values (ours may add keys of our own);
* broken and hostile checkpoints: one-line errors naming the tensor or key, and fast;
* the registry: a DeepSeek-OCR v1 checkpoint still converts as v1, and a new family is one registration.
"""
from __future__ import annotations

import copy
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
import reference_ocr2 as r2
from convert import ConversionError, convert, plan
from convert.cli import main
from convert.config import load_config
from gguf_bytes import read_gguf
from convert_expect import (FILE_TYPE, VISION_RULES, WRITER_VERSION, check_kv, check_values, dequant,
                            expected_tensors, expected_text_kv, expected_type, gguf_files, one_error, read_kv,
                            rewrite_checkpoint)

FIXTURE = r2.FIXTURE_DIR
CHOSEN = {"f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16, "q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_1": QT.Q4_1,
          "q5_0": QT.Q5_0, "q5_1": QT.Q5_1, "q4_k": QT.Q4_K, "q5_k": QT.Q5_K, "q6_k": QT.Q6_K}

# ---- what gguf-schema.md's "DeepSeek-OCR-2" section says, written out independently of convert/ --------
_ENC = r"model\.qwen2_model\.model\.model\."
OCR2_VISION_RULES = [r for r in VISION_RULES if r[0].startswith(r"model\.sam_model")] + [
    (_ENC + r"layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)", r"v.blk.\1.attn_\2.\3"),
    (_ENC + r"layers\.(\d+)\.self_attn\.o_proj\.weight", r"v.blk.\1.attn_out.weight"),
    (_ENC + r"layers\.(\d+)\.input_layernorm\.weight", r"v.blk.\1.ln1.weight"),
    (_ENC + r"layers\.(\d+)\.post_attention_layernorm\.weight", r"v.blk.\1.ln2.weight"),
    (_ENC + r"layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight", r"v.blk.\1.ffn_\2.weight"),
    (_ENC + r"norm\.weight", "v.post_ln.weight"),
    (r"model\.qwen2_model\.query_(768|1024)\.weight", r"v.resample_query_\1.weight"),
    (r"model\.projector\.layers\.(weight|bias)", r"mm.model.fc.\1"),
    (r"model\.view_seperator", "v.view_seperator"),
]
TEXT_KEY_EXTRAS = {"tokenizer.huggingface.json", "deepseek2-ocr.rope.freq_base"}  # ours beyond llama.cpp's


def expected_vision(sources: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GGUF name -> expected float32 values of the vision file (every vision source maps, once)."""
    out: dict[str, np.ndarray] = {}
    for src, arr in sources.items():
        hits = [re.sub(p, r, src) for p, r in OCR2_VISION_RULES if re.fullmatch(p, src)]
        if not hits:
            assert src.startswith(("model.layers.", "model.embed_tokens.", "model.norm.", "lm_head.")), src
            continue
        assert len(hits) == 1 and hits[0] not in out, (src, hits)
        out[hits[0]] = arr.reshape(1, -1) if hits[0] == "v.view_seperator" else arr
    return out


def expected_vision_kv(hf: dict, chosen: QT, name: str) -> dict:
    """Every key of the vision file with its value, from the transformers config (llama.cpp's keys hold
    llama.cpp's values; the encoder's keys its true values; ours what llama.cpp hard-codes)."""
    s, e, t = hf["vision_config"]["sam_config"], hf["vision_config"]["encoder_config"], hf["text_config"]
    return {
        "general.architecture": "clip", "general.type": "mmproj", "general.name": name,
        "general.file_type": FILE_TYPE[chosen], "general.quantization_version": 2, "tilepass.format_version": 1,
        "tilepass.writer_version": WRITER_VERSION,
        "clip.has_vision_encoder": True, "clip.projector_type": "deepseekocr2", "clip.use_gelu": True,
        "clip.vision.projection_dim": t["hidden_size"], "clip.vision.image_size": 1024, "clip.vision.patch_size": 16,
        "clip.vision.embedding_length": e["hidden_size"], "clip.vision.feed_forward_length": e["intermediate_size"],
        "clip.vision.block_count": e["num_hidden_layers"], "clip.vision.attention.head_count": e["num_attention_heads"],
        "clip.vision.attention.head_count_kv": e["num_key_value_heads"],
        "clip.vision.attention.layer_norm_epsilon": 1e-6,
        "clip.vision.image_mean": [0.5, 0.5, 0.5], "clip.vision.image_std": [0.5, 0.5, 0.5],
        "clip.vision.window_size": 14, "clip.vision.preproc_min_tiles": 2, "clip.vision.preproc_max_tiles": 6,
        "clip.vision.sam.block_count": s["num_hidden_layers"], "clip.vision.sam.embedding_length": s["hidden_size"],
        "clip.vision.sam.head_count": s["num_attention_heads"],
        "tilepass.sam.image_size": 1024, "tilepass.sam.patch_size": 16, "tilepass.sam.window_size": 14,
        "tilepass.sam.global_attn_indexes": list(s["global_attn_indexes"]), "tilepass.sam.layer_norm_epsilon": 1e-6,
        "tilepass.sam.feed_forward_length": s["mlp_dim"], "tilepass.preproc.tile_size": 768,
        "tilepass.preproc.pad_color": [127, 127, 127], "tilepass.encoder.rope_freq_base": 1e6,
    }


def text_dims(hf: dict) -> rm.OcrDims:
    """The text numbers of a transformers OCR-2 config, as the v1 expectations take them."""
    t = hf["text_config"]
    return rm.OcrDims(vocab_size=t["vocab_size"], text_hidden=t["hidden_size"], text_layers=t["num_hidden_layers"],
                      text_heads=t["num_attention_heads"], text_kv_heads=t["num_key_value_heads"],
                      dense_layers=t["mlp_layer_types"].count("dense"), text_ffn=t["intermediate_size"],
                      n_experts=t["n_routed_experts"], moe_ffn=t["moe_intermediate_size"],
                      top_k=t["num_experts_per_tok"], n_shared=t["n_shared_experts"],
                      rope_theta=t["rope_parameters"]["rope_theta"], rms_eps=t["rms_norm_eps"],
                      max_positions=t["max_position_embeddings"])


def use_more_bits(i: int, n: int) -> bool:  # llama-quantize's layer rule for the _M mixtures
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def expected_type_m(name: str, ndim: int, row: int, main_type: QT, n_layer: int) -> QT:
    """``expected_type`` for llama-quantize's Q4_K_M / Q5_K_M (text files)."""
    m = re.match(r"blk\.(\d+)\.(attn_v|ffn_down|ffn_down_exps|ffn_down_shexp)\.weight$", name)
    more = name == "output.weight" or bool(m and use_more_bits(int(m.group(1)), n_layer))
    return expected_type(name, ndim, row, QT.Q6_K if more else main_type)


# ---- models ---------------------------------------------------------------------------------------------
def small_vocab(config: dict, vocab: int = 1024) -> dict:
    """A config with a ``vocab``-token vocabulary (special ids remapped as reference_models does)."""
    c = copy.deepcopy(config)
    c["text_config"]["vocab_size"] = vocab
    c["image_token_id"] = rm.image_token_id(vocab)
    return c


SMALL = small_vocab(r2.TINY_CONFIG)
# rows of 256 / 512 take K-quants; rows of 384 fall back to Q5_0, rows of 48 to F16
WIDE = small_vocab(dict(
    vision_config=dict(
        sam_config=dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, global_attn_indexes=[1],
                        output_channels=32, downsample_channels=[32, 256], mlp_dim=48),
        encoder_config=dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=384, vocab_size=1, rope_theta=1e6, max_position_embeddings=1024)),
    text_config=dict(vocab_size=1024, hidden_size=256, intermediate_size=512, moe_intermediate_size=384,
                     num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=4,
                     n_shared_experts=1, num_experts_per_tok=2, topk_method="greedy",
                     mlp_layer_types=["dense", "sparse", "sparse"], bos_token_id=0, eos_token_id=1,
                     max_position_embeddings=8192, rope_theta=10000.0, initializer_range=0.2),
    image_token_id=128815))


def saved_config(model_dir: Path) -> dict:
    return json.loads((model_dir / "config.json").read_text())


@pytest.fixture(scope="module")
def tiny_hf() -> Path:
    return r2.get_tiny_ocr2(layout="hf")


@pytest.fixture(scope="module")
def tiny_original() -> Path:
    return r2.get_tiny_ocr2(layout="original")


@pytest.fixture(scope="module")
def sources(tiny_hf) -> dict[str, np.ndarray]:
    return rm.read_checkpoint_f32(tiny_hf)


@pytest.fixture(scope="module")
def small_hf() -> Path:
    return r2.get_tiny_ocr2(layout="hf", config=SMALL)


@pytest.fixture(scope="module")
def wide_hf() -> Path:
    return r2.get_tiny_ocr2(layout="hf", config=WIDE)


def check_vision_file(path: Path, sources: dict, hf: dict, chosen: QT, name: str) -> gguf.GGUFReader:
    r = gguf.GGUFReader(path)
    check_kv(read_kv(r), expected_vision_kv(hf, chosen, name))
    want = expected_vision(sources)
    got = {t.name: t for t in r.tensors}
    assert set(got) == set(want), f"missing {set(want) - set(got)}, extra {set(got) - set(want)}"
    for n, t in got.items():
        src = want[n]
        assert tuple(int(x) for x in reversed(t.shape)) == src.shape, n
        assert t.tensor_type == expected_type(n, src.ndim, src.shape[-1], chosen), (n, t.tensor_type.name)
        check_values(n, t.tensor_type, dequant(t), src)
    return r


# ---- round trips ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["hf", "original"])
def test_vision_roundtrip_f32(tiny_hf, tiny_original, sources, tmp_path, layout):
    """Spec §7's model, both config layouts: every vision tensor exactly, every key with its value."""
    model = tiny_hf if layout == "hf" else tiny_original
    cfg = saved_config(model)
    assert ("text_config" in cfg) == (layout == "hf")
    if layout == "original":
        assert cfg["vision_config"]["model_name"] == "deepencoderv2" and "layers" not in cfg["vision_config"]
        assert (model / "processor_config.json").exists()
    out = tmp_path / "mmproj.gguf"
    convert(model, mmproj=True, outtype="f32", outfile=out, progress=False)
    r = check_vision_file(out, sources, saved_config(tiny_hf), QT.F32, model.name)
    s, e = r2.TINY_CONFIG["vision_config"]["sam_config"], r2.TINY_CONFIG["vision_config"]["encoder_config"]
    assert len(r.tensors) == 3 + 14 * s["num_hidden_layers"] + 8 + 12 * e["num_hidden_layers"] + 6
    t = {x.name: tuple(int(d) for d in reversed(x.shape)) for x in r.tensors}
    assert t["v.view_seperator"] == (1, 64) and t["v.resample_query_768.weight"] == (144, 32)
    assert t["v.resample_query_1024.weight"] == (256, 32) and t["v.blk.0.attn_k.weight"] == (16, 32)
    assert t["v.sam.net_3.weight"] == (32, 16, 3, 3)


def test_text_roundtrip_f32(tiny_hf, sources, tmp_path):
    """The text file of spec §7's model (vocabulary 129280): v1's text file, every tensor exactly."""
    out = tmp_path / "text.gguf"
    convert(tiny_hf, outtype="f32", outfile=out, progress=False)
    r = gguf.GGUFReader(out)
    hf = saved_config(tiny_hf)
    # every key's value, but the 129280-entry lists only by length and at the special ids (reading them whole
    # doubles the test's time; the small-vocabulary tests read them whole)
    big = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type")
    kv = {k: (... if k in big else f.contents()) for k, f in r.fields.items() if not k.startswith("GGUF.")}
    check_kv(kv, expected_text_kv(text_dims(hf), QT.F32, tiny_hf.name))
    toks, types = r.fields[big[0]], r.fields[big[1]]
    assert len(toks.data) == len(types.data) == 129280
    for i, tok in rm.special_tokens(129280).items():
        assert toks.contents(i) == tok and types.contents(i) == int(gguf.TokenType.CONTROL), i
    assert kv["tokenizer.huggingface.json"] == (tiny_hf / "tokenizer.json").read_text(encoding="utf-8")
    want = expected_tensors(sources, False)
    got = {t.name: t for t in r.tensors}
    assert set(got) == set(want) and len(got) == 3 + 9 + 2 * 13
    for n, t in got.items():
        assert t.tensor_type == expected_type(n, want[n].ndim, want[n].shape[-1], QT.F32)
        check_values(n, t.tensor_type, dequant(t), want[n])


def test_both_layouts_give_the_same_files(tiny_hf, tmp_path):
    """Same weights, transformers' or the published config layout (the latter with SAM's downsample_channels
    as v1 states them, [512, 1024], which the official code and the converter do not read): identical files."""
    orig = rm.copy_model(tiny_hf, tmp_path / "orig")
    r2.rewrite_config_original(orig, name=tiny_hf.name, sam_downsample=[512, 1024])
    cfg = load_config(orig)
    assert (cfg.layout, cfg.architecture) == ("original", "DeepseekOCR2ForCausalLM")
    assert cfg.encoder.num_hidden_layers is None and cfg.encoder.intermediate_size is None
    for mmproj, outtype in ((True, "f32"), (True, "q8_0"), (False, "f16")):
        a, b = tmp_path / f"a{mmproj}{outtype}.gguf", tmp_path / f"b{mmproj}{outtype}.gguf"
        convert(tiny_hf, mmproj=mmproj, outtype=outtype, outfile=a, progress=False)
        convert(orig, mmproj=mmproj, outtype=outtype, outfile=b, progress=False)
        assert a.read_bytes() == b.read_bytes(), (mmproj, outtype)


# ---- llama.cpp's files ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixture_models(tmp_path_factory) -> dict[str, Path]:
    """The llama.cpp fixture's transformers config (4-layer encoder, text width 32), in a directory named as
    llama.cpp's general.name says: transformers' layout, the original layout as llama.cpp's converter read it
    (encoder depth and FFN stated) and as published (neither stated)."""
    model = r2.make_model(seed=3, config=r2.fixture_config())
    root = tmp_path_factory.mktemp("ocr2-fixture")
    out = {"hf": r2.save_model(model, root / "hf" / "Orig")}
    for variant, keys in (("original+keys", True), ("original", False)):
        d = rm.copy_model(out["hf"], root / variant / "Orig")
        r2.rewrite_config_original(d, name="Orig", encoder_keys=keys)
        out[variant] = d
    return out


def test_light_reader_agrees_with_gguf_reader():
    """The metadata reader used below against gguf's own reader, on llama.cpp's vision file."""
    kv, tensors = read_gguf(FIXTURE / "mmproj-f32.gguf", strings=False, tensors="info")
    r = gguf.GGUFReader(FIXTURE / "mmproj-f32.gguf")
    assert kv == read_kv(r)
    assert tensors == {t.name: (t.tensor_type, tuple(int(x) for x in reversed(t.shape))) for t in r.tensors}


def _same_value(a, b) -> bool:
    if isinstance(b, float):
        return bool(np.isclose(a, b, rtol=1e-6))
    if isinstance(b, list) and b and isinstance(b[0], float):
        return bool(np.allclose(a, b))
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("variant", ["hf", "original+keys", "original"])
def test_vision_matches_llamacpp_fixture(fixture_models, tmp_path, variant):
    """Tensor names, shapes and types of llama.cpp's f32 vision file; its keys with its values (its
    head_count_kv 2 is the model's true KV head count); every other key of ours is tilepass.*."""
    out = tmp_path / "mmproj-f32.gguf"
    convert(fixture_models[variant], mmproj=True, outtype="f32", outfile=out, progress=False)
    kv_ours, t_ours = read_gguf(out, strings=False, tensors="info")
    kv_theirs, t_theirs = read_gguf(FIXTURE / "mmproj-f32.gguf", strings=False, tensors="info")
    assert t_ours == t_theirs
    for k, v in kv_theirs.items():
        if k == "general.size_label":
            continue  # optional metadata we do not write
        assert k in kv_ours and _same_value(kv_ours[k], v), (k, kv_ours.get(k), v)
    assert kv_ours["clip.vision.attention.head_count_kv"] == kv_theirs["clip.vision.attention.head_count_kv"] == 2
    extra = set(kv_ours) - set(kv_theirs)
    assert extra == {"tilepass.format_version", "tilepass.writer_version", "tilepass.sam.image_size",
                     "tilepass.sam.patch_size", "tilepass.sam.window_size", "tilepass.sam.global_attn_indexes", "tilepass.sam.layer_norm_epsilon",
                     "tilepass.sam.feed_forward_length", "tilepass.preproc.tile_size", "tilepass.preproc.pad_color",
                     "tilepass.encoder.rope_freq_base"}, extra
    assert kv_ours["tilepass.encoder.rope_freq_base"] == 1e6 and kv_ours["tilepass.sam.global_attn_indexes"] == [1]


def test_text_matches_llamacpp_fixture(fixture_models, tmp_path):
    """Tensor names, shapes and types of llama.cpp's f16 text file, its keys with its values but the
    tokenizer's contents (a different random tokenizer), plus our own keys."""
    out = tmp_path / "text-f16.gguf"
    convert(fixture_models["hf"], outtype="f16", outfile=out, progress=False)
    kv_ours, t_ours = read_gguf(out, strings=False, tensors="info")
    kv_theirs, t_theirs = read_gguf(FIXTURE / "text-f16.gguf", strings=False, tensors="info")
    assert t_ours == t_theirs and len(t_ours) == 38
    for k, v in kv_theirs.items():
        if k in ("general.size_label", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"):
            continue
        assert k in kv_ours and _same_value(kv_ours[k], v), (k, kv_ours.get(k), v)
    extra = set(kv_ours) - set(kv_theirs)
    assert all(k.startswith("tilepass.") or k in TEXT_KEY_EXTRAS for k in extra), extra
    # the original layout gives the same text file
    out2 = tmp_path / "text-f16-original.gguf"
    convert(fixture_models["original"], outtype="f16", outfile=out2, progress=False)
    assert out2.read_bytes() == out.read_bytes()


# ---- quantised outtypes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0", "q4_0", "q5_1", "q4_k", "q6_k", "auto"])
def test_vision_outtypes(wide_hf, tmp_path, outtype):
    """Matrices and query tables take the type (K-quants on rows of 256/512, llama-quantize's fallbacks on
    rows of 384 and 48); norms, biases, tables, convs and the separator stay F32; SAM's patch kernel is F16
    only with f16."""
    out = tmp_path / "v.gguf"
    convert(wide_hf, mmproj=True, outtype=outtype, outfile=out, progress=False)
    chosen = QT.F16 if outtype == "auto" else CHOSEN[outtype]
    r = check_vision_file(out, rm.read_checkpoint_f32(wide_hf), saved_config(wide_hf), chosen, wide_hf.name)
    types = {t.name: t.tensor_type for t in r.tensors}
    assert types["v.resample_query_768.weight"] == types["v.blk.0.attn_q.weight"] == chosen
    assert types["v.view_seperator"] == types["v.blk.0.ln1.weight"] == types["v.sam.net_3.weight"] == QT.F32
    assert types["v.sam.patch_embd.weight"] == (QT.F16 if chosen == QT.F16 else QT.F32)
    if chosen == QT.Q4_K:
        assert types["v.blk.0.ffn_down.weight"] == QT.Q5_0 and types["v.sam.blk.0.mlp.lin2.weight"] == QT.F16


@pytest.mark.parametrize("outtype", ["f16", "q8_0", "q4_k", "q4_k_m", "q5_k_m", "auto"])
def test_text_outtypes(wide_hf, tmp_path, outtype):
    out = tmp_path / "t.gguf"
    convert(wide_hf, outtype=outtype, outfile=out, progress=False)
    r = gguf.GGUFReader(out)
    hf = saved_config(wide_hf)
    mixture = outtype.endswith("_m")
    main_type = {"auto": QT.Q8_0, "q4_k_m": QT.Q4_K, "q5_k_m": QT.Q5_K}.get(outtype) or CHOSEN[outtype]
    kv = read_kv(r)
    want_kv = expected_text_kv(text_dims(hf), main_type, wide_hf.name)
    if mixture:
        want_kv["general.file_type"] = {QT.Q4_K: 15, QT.Q5_K: 17}[main_type]  # MOSTLY_Q4_K_M / _Q5_K_M
    check_kv(kv, want_kv)
    want = expected_tensors(rm.read_checkpoint_f32(wide_hf), False)
    seen = set()
    for t in r.tensors:
        src = want[t.name]
        typ = expected_type_m(t.name, src.ndim, src.shape[-1], main_type, 3) if mixture else \
            expected_type(t.name, src.ndim, src.shape[-1], main_type)
        assert t.tensor_type == typ, (t.name, t.tensor_type.name, typ.name)
        seen.add(t.tensor_type)
        check_values(t.name, t.tensor_type, dequant(t), src)
    if outtype == "q4_k":
        assert seen == {QT.Q4_K, QT.Q5_0, QT.F32}  # expert rows of 384 fall back
    if outtype == "q4_k_m":
        assert QT.Q6_K in seen


def test_mixture_refused_for_vision(small_hf):
    with pytest.raises(ConversionError, match="mixture for a text model"):
        plan(small_hf, mmproj=True, outtype="q4_k_m")


# ---- --dry-run ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mmproj", [True, False])
def test_dry_run_lists_every_tensor(small_hf, capsys, mmproj):
    before = sorted(p.name for p in small_hf.iterdir())
    assert main([str(small_hf), "--dry-run", "--outtype", "q8_0"] + (["--mmproj"] if mmproj else [])) == 0
    out = capsys.readouterr().out
    srcs = rm.read_checkpoint_f32(small_hf)
    want = expected_vision(srcs) if mmproj else expected_tensors(srcs, False)
    lines = [l for l in out.splitlines() if " -> " in l and not l.startswith("#")]
    listed = {}
    for l in lines:
        m = re.search(r" -> (\S+) \[([\d, ]+)\] (\w+)", l)
        listed[m.group(1)] = (tuple(int(x) for x in m.group(2).split(", ")), m.group(3))
    assert set(listed) == set(want) and len(lines) == len(want)
    for n, (shape, typ) in listed.items():
        assert shape == want[n].shape and typ == expected_type(n, want[n].ndim, shape[-1], QT.Q8_0).name, n
    if mmproj:
        assert "model.qwen2_model.query_768.weight [F32] -> v.resample_query_768.weight [144, 32] Q8_0" in out
        assert "model.view_seperator [F32] -> v.view_seperator [1, 64] F32" in out
        assert "clip.projector_type STRING = 'deepseekocr2'" in out
        assert "clip.vision.attention.head_count_kv UINT32 = 2" in out
        assert "tilepass.encoder.rope_freq_base FLOAT32 = 1e+06" in out
        assert "tensors belong to the text file" in out
    else:
        assert "deepseek2-ocr.expert_count UINT32 = 8" in out and "belong to the vision (--mmproj) file" in out
    assert sorted(p.name for p in small_hf.iterdir()) == before


# ---- broken checkpoints ---------------------------------------------------------------------------------
_L1 = "model.qwen2_model.model.model.layers.1."
BROKEN = {
    "missing": (lambda t: t.pop(_L1 + "mlp.down_proj.weight"),
                ["missing tensor", _L1 + "mlp.down_proj.weight"]),
    "extra": (lambda t: t.__setitem__("model.qwen2_model.query_512.weight", np.zeros((64, 32), np.float32)),
              ["unexpected tensor", "model.qwen2_model.query_512.weight", "not part of DeepSeek-OCR-2 as configured"]),
    "extra_layer": (lambda t: t.__setitem__("model.qwen2_model.model.model.layers.2.mlp.up_proj.weight",
                                            np.zeros((64, 32), np.float32)),
                    ["model.qwen2_model.model.model.layers.2."]),
    "wrong_shape": (lambda t: t.__setitem__(_L1 + "self_attn.k_proj.weight", np.zeros((24, 32), np.float32)),
                    ["model.safetensors", _L1 + "self_attn.k_proj.weight", "[24, 32]", "config implies [16, 32]"]),
    "wrong_query_rows": (lambda t: t.__setitem__("model.qwen2_model.query_768.weight", np.zeros((143, 32), np.float32)),
                         ["model.qwen2_model.query_768.weight", "[143, 32]", "[144, 32]"]),
    "wrong_separator": (lambda t: t.__setitem__("model.view_seperator", np.zeros((32,), np.float32)),
                        ["model.view_seperator", "[32]", "[64]"]),
}


@pytest.mark.parametrize("layout", ["hf", "original"])
@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_checkpoint(tiny_hf, tiny_original, tmp_path, capsys, layout, case):
    """A missing, extra or wrongly shaped tensor: one error line naming it; no output file. (The original
    layout counts the encoder's layers, so an extra layer there is a layer with missing tensors.)"""
    model = rm.copy_model(tiny_hf if layout == "hf" else tiny_original, tmp_path / "m")
    edit, needles = BROKEN[case]
    rewrite_checkpoint(model, edit)
    line = one_error(capsys, model, "--mmproj", "--outfile", tmp_path / "o.gguf")
    for n in needles:
        assert n in line, (n, line)
    if case == "extra_layer":
        assert ("unexpected tensor" in line) == (layout == "hf") and ("missing tensor" in line) == (layout != "hf")
    assert gguf_files(tmp_path) == []


def test_unknown_text_tensor_fails_the_text_file_only(small_hf, tmp_path, capsys):
    """An unknown decoder tensor fails the text file, naming the family; the vision file leaves it to the
    text file."""
    model = rm.copy_model(small_hf, tmp_path / "m")
    rewrite_checkpoint(model, lambda t: t.__setitem__("model.layers.1.mlp.experts.8.up_proj.weight",
                                            np.zeros((32, 64), np.float32)))
    line = one_error(capsys, model, "--outfile", tmp_path / "t.gguf")
    assert "unexpected tensor 'model.layers.1.mlp.experts.8.up_proj.weight' (not part of DeepSeek-OCR-2" in line
    assert main([str(model), "--mmproj", "--outfile", str(tmp_path / "v.gguf")]) == 0


def test_encoder_heads_needed_for_a_width_other_than_896(tiny_hf, tmp_path, capsys):
    model = rm.copy_model(tiny_hf, tmp_path / "m")
    r2.rewrite_config_original(model, heads=False)
    line = one_error(capsys, model, "--mmproj", "--outfile", tmp_path / "o.gguf")
    assert "config.json" in line and "vision_config.num_attention_heads" in line and "896" in line


def test_published_encoder_width_defaults(tmp_path):
    """The published config's shape (width 896 and nothing else about the encoder): 14 heads (the real
    model's), KV heads from k_proj's rows (2), FFN width from gate_proj, layers counted in the checkpoint."""
    cfg = small_vocab(r2.TINY_CONFIG)
    cfg["vision_config"]["sam_config"]["downsample_channels"] = [16, 896]
    cfg["vision_config"]["encoder_config"].update(hidden_size=896, num_attention_heads=14, num_key_value_heads=2,
                                                  intermediate_size=80, num_hidden_layers=2)
    model = r2.build_tiny_ocr2(tmp_path / "m", seed=1, config=cfg, layout="original", heads=False)
    vc = saved_config(model)["vision_config"]
    assert "num_attention_heads" not in vc and "layers" not in vc and vc["width"]["qwen2-0-5b"] == {"dim": 896}
    p = plan(model, mmproj=True, outtype="f16")
    kv = {k.key: k.value for k in p.kv}
    assert (kv["clip.vision.embedding_length"], kv["clip.vision.block_count"], kv["clip.vision.feed_forward_length"],
            kv["clip.vision.attention.head_count"], kv["clip.vision.attention.head_count_kv"]) == (896, 2, 80, 14, 2)
    shapes = {t.name: t.shape for t in p.tensors}
    assert shapes["v.blk.1.attn_k.weight"] == (128, 896) and shapes["v.blk.1.attn_q.weight"] == (896, 896)
    assert shapes["mm.model.fc.weight"] == (64, 896) and shapes["v.sam.net_3.weight"] == (896, 16, 3, 3)


def test_published_config_reads():
    """A config.json with the published model's numbers in the original layout (SAM's downsample_channels as
    v1's, [512, 1024]; no encoder depth, heads or FFN width) reads into those numbers; without
    "architectures" it is still recognised as DeepSeek-OCR-2."""
    lang = {"vocab_size": 129280, "hidden_size": 1280, "intermediate_size": 6848, "moe_intermediate_size": 896,
            "num_hidden_layers": 12, "num_attention_heads": 10, "num_key_value_heads": 10, "n_routed_experts": 64,
            "n_shared_experts": 2, "num_experts_per_tok": 6, "first_k_dense_replace": 1, "topk_method": "greedy",
            "bos_token_id": 0, "eos_token_id": 1, "use_mla": False, "kv_lora_rank": None, "q_lora_rank": None}
    cfg = {"architectures": ["DeepseekOCR2ForCausalLM"], "model_type": "deepseek_vl_v2", "language_config": lang,
           "vision_config": {"image_size": 1024, "mlp_ratio": 3.7362, "model_name": "deepencoderv2",
                             "model_type": "vision",
                             "width": {"sam_vit_b": {"width": 768, "layers": 12, "heads": 12,
                                                     "global_attn_indexes": [2, 5, 8, 11],
                                                     "downsample_channels": [512, 1024]},
                                       "qwen2-0-5b": {"dim": 896}}},
           "projector_config": {"input_dim": 896, "n_embed": 1280, "projector_type": "linear",
                                "model_type": "mlp_projector"}, **lang}
    import tempfile
    for archs in (True, False):
        with tempfile.TemporaryDirectory() as td:
            c = dict(cfg) if archs else {k: v for k, v in cfg.items() if k != "architectures"}
            (Path(td) / "config.json").write_text(json.dumps(c))
            got = load_config(Path(td))
        assert (got.layout, got.architecture) == ("original", "DeepseekOCR2ForCausalLM")
        t, s, e = got.text, got.sam, got.encoder
        assert (t.hidden_size, t.num_hidden_layers, t.n_routed_experts, t.vocab_size, t.head_dim) == (1280, 12, 64,
                                                                                                       129280, 128)
        assert (s.hidden_size, s.num_hidden_layers, s.num_attention_heads, s.global_attn_indexes) == (768, 12, 12,
                                                                                                      [2, 5, 8, 11])
        assert s.downsample_channels is None  # read from net_2 / net_3
        assert (e.hidden_size, e.num_hidden_layers, e.num_attention_heads, e.intermediate_size) == (896, None, None,
                                                                                                    None)
        assert (e.rope_theta, e.rms_norm_eps, got.tile_size, got.max_tiles) == (1e6, 1e-6, 768, 6)
        assert (got.projector_input_dim, got.projector_output_dim) == (896, 1280)


def test_layout_is_read_from_the_config(tiny_hf, tmp_path):
    """transformers' layout under the published architecture name (or none) still reads as transformers'."""
    for archs in (["DeepseekOCR2ForCausalLM"], None):
        cfg = saved_config(tiny_hf)
        if archs is None:
            del cfg["architectures"]
        else:
            cfg["architectures"] = archs
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        got = load_config(tmp_path)
        assert got.layout == "hf" and got.encoder.num_hidden_layers == 2 and got.text.hidden_size == 64
        assert got.architecture == (archs[0] if archs else "DeepseekOcr2ForConditionalGeneration")


# ---- the registry ---------------------------------------------------------------------------------------
def test_registry_and_v1_unchanged(tmp_path, capsys):
    """Both families' architectures have both parts; a DeepSeek-OCR v1 checkpoint still converts as v1 (its
    projector, no OCR-2 key) and its errors name v1."""
    from convert.base import ModelBase
    for arch in ("DeepseekOCRForCausalLM", "UnlimitedOcrForConditionalGeneration", "UnlimitedOCRForCausalLM",
                 "DeepseekOCR2ForCausalLM", "DeepseekOcr2ForConditionalGeneration"):
        t, v = ModelBase.lookup(arch, False), ModelBase.lookup(arch, True)
        assert t.gguf_arch == "deepseek2-ocr" and v.gguf_arch == "clip", arch
        assert t.family == v.family == ("DeepSeek-OCR-2" if "2" in arch else "DeepSeek-OCR v1")
    v1 = rm.get_tiny_ocr(layout="hf", dims=rm.TINY_SMALL_VOCAB)
    p = plan(v1, mmproj=True, outtype="f16")
    kv = {k.key: k.value for k in p.kv}
    assert kv["clip.projector_type"] == "deepseekocr" and kv["tilepass.preproc.tile_size"] == 640
    assert "tilepass.encoder.rope_freq_base" not in kv and "clip.vision.attention.head_count_kv" not in kv
    assert "v.image_newline" in {t.name for t in p.tensors}
    model = rm.copy_model(v1, tmp_path / "v1")
    rewrite_checkpoint(model, lambda t: t.__setitem__("model.qwen2_model.query_768.weight", np.zeros((144, 32), np.float32)))
    line = one_error(capsys, model, "--mmproj", "--outfile", tmp_path / "o.gguf")
    assert "unexpected tensor 'model.qwen2_model.query_768.weight' (not part of DeepSeek-OCR v1 as configured)" in line


def test_a_new_family_is_one_registration(tmp_path):
    """A family of its own (one tensor, one key) registered by architecture name converts through the same
    machinery: expected tensors checked against the checkpoint, nothing unknown."""
    from gguf import GGUFValueType as VT
    from convert.base import KV, ModelBase, ModelConfig, TextModel, expect

    @ModelBase.register("ToyForTesting")
    class ToyText(TextModel):
        family = "Toy"
        gguf_arch = "toy"

        @classmethod
        def read_config(cls, path, top, arch):
            cfg = ModelConfig(layout="hf", architecture=arch, path=path)
            cfg.width = top.int("width", minimum=1)
            return cfg

        @classmethod
        def owns_name(cls, name):
            return name.startswith("toy.")

        @property
        def n_layer(self):
            return 1

        def expectations(self):
            return [expect("token_embd.weight", "toy.embed", (4, self.cfg.width))]

        def kv_pairs(self, *, chosen, **_):
            return self._general(chosen) + [KV("toy.width", self.cfg.width, VT.UINT32)]

    try:
        (tmp_path / "config.json").write_text(json.dumps({"architectures": ["ToyForTesting"], "width": 32}))
        w = np.arange(128, dtype=np.float32).reshape(4, 32)
        rm.write_safetensors(tmp_path / "model.safetensors", {"toy.embed": w})
        convert(tmp_path, outtype="f32", outfile=tmp_path / "toy.gguf")
        r = gguf.GGUFReader(tmp_path / "toy.gguf")
        assert read_kv(r)["toy.width"] == 32 and read_kv(r)["general.architecture"] == "toy"
        np.testing.assert_array_equal(dequant(r.tensors[0]), w)
        rm.write_safetensors(tmp_path / "model.safetensors", {"toy.embed": w, "toy.extra": w})
        with pytest.raises(ConversionError, match="unexpected tensor 'toy.extra' \\(not part of Toy"):
            convert(tmp_path, outtype="f32", outfile=tmp_path / "toy2.gguf")
    finally:
        ModelBase._registry["model"].pop("ToyForTesting")


# ---- hostile config values ------------------------------------------------------------------------------
def _set(cfg: dict, path: str, value) -> None:
    *head, last = path.split(".")
    for k in head:
        cfg = cfg[k]
    cfg[last] = value


V1_DIMS = rm.OcrDims(vocab_size=1024, text_hidden=32, text_ffn=48, moe_ffn=16, n_experts=4)
HOSTILE = [
    # (model, config keys set, extra CLI args, what the one error line names)
    ("v1", ["language_config.n_routed_experts", "n_routed_experts"], 10**9, [], ["n_routed_experts", "experts"]),
    ("v1", ["language_config.num_hidden_layers", "num_hidden_layers"], 10**12, [], ["num_hidden_layers", "layers"]),
    ("v1", ["language_config.vocab_size", "vocab_size"], 10**12, [], ["vocab_size"]),
    ("v1", ["vision_config.width.sam_vit_b.layers"], 10**12, ["--mmproj"], ["sam num_hidden_layers", "SAM blocks"]),
    ("v1", ["vision_config.width.clip-l-14-224.layers"], 10**12, ["--mmproj"], ["clip num_hidden_layers"]),
    ("ocr2", ["language_config.n_routed_experts", "n_routed_experts"], 10**9, [], ["n_routed_experts"]),
    ("ocr2", ["language_config.num_hidden_layers", "num_hidden_layers"], 10**12, [], ["num_hidden_layers"]),
    ("ocr2", ["vision_config.layers"], 10**12, ["--mmproj"], ["encoder num_hidden_layers", "encoder layers"]),
    ("ocr2", ["vision_config.width.sam_vit_b.layers"], 10**12, ["--mmproj"], ["SAM blocks"]),
    ("ocr2", ["language_config.vocab_size", "vocab_size"], 10**12, ["--vocab-only"], ["vocab_size"]),
]


@pytest.fixture(scope="module")
def v1_model() -> Path:
    return rm.get_synthetic_ocr(V1_DIMS, n_shards=2)


@pytest.mark.parametrize("family,keys,value,args,needles", HOSTILE,
                         ids=[f"{h[0]}-{h[1][0].split('.', 1)[-1]}{'-' + h[3][0] if h[3] else ''}" for h in HOSTILE])
def test_hostile_config_fails_fast(v1_model, tiny_original, tmp_path, capsys, family, keys, value, args, needles):
    """Counts far beyond the checkpoint are refused before anything is sized by them: one line, well under a
    second, memory bounded by the checkpoint."""
    model = rm.copy_model(v1_model if family == "v1" else tiny_original, tmp_path / "m")
    cfg = saved_config(model)
    for k in keys:
        _set(cfg, k, value)
    (model / "config.json").write_text(json.dumps(cfg))
    t0 = time.perf_counter()
    line = one_error(capsys, model, "--outfile", tmp_path / "o.gguf", *args)
    assert time.perf_counter() - t0 < 1.0
    assert str(value) in line and "config.json" in line
    for n in needles:
        assert n in line, (n, line)


def test_hostile_vocab_without_weights(tiny_original, tmp_path, capsys):
    """--vocab-only needs no weights; without them a vocab_size no tokenizer has is refused at once."""
    model = tmp_path / "m"
    model.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_original / f, model / f)
    cfg = saved_config(model)
    cfg["language_config"]["vocab_size"] = cfg["vocab_size"] = 10**12
    (model / "config.json").write_text(json.dumps(cfg))
    t0 = time.perf_counter()
    line = one_error(capsys, model, "--vocab-only", "--outfile", tmp_path / "o.gguf")
    assert time.perf_counter() - t0 < 1.0 and "vocab_size" in line and str(10**12) in line
