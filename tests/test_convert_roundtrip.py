"""Convert tiny transformers reference models (both config layouts) and read the GGUF back."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import gguf
from gguf import GGMLQuantizationType as QT

import reference_models as rm
from convert import convert
from convert_expect import (check_kv, check_values, dequant, expected_tensors, expected_text_kv, expected_type,
                            expected_vision_kv, read_kv, special_tokens_ok)

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "llamacpp-tiny-v1"
if not FIXTURE.exists():
    FIXTURE = (Path(__file__).resolve().parents[1] / "../shared/fixtures/llamacpp-tiny-v1")

CHOSEN = {"f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16, "q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_1": QT.Q4_1,
          "q5_0": QT.Q5_0, "q5_1": QT.Q5_1}


SMALL = rm.TINY_SMALL_VOCAB


@pytest.fixture(scope="session")
def tiny_hf() -> Path:
    """A tiny transformers model with a 1024-token vocabulary (fast to read back); the full-vocabulary
    model is covered by the original-layout and llama.cpp-fixture tests."""
    return rm.get_tiny_ocr(layout="hf", dims=SMALL)


@pytest.fixture(scope="session")
def tiny_original() -> Path:
    return rm.get_tiny_ocr(layout="original", dims=SMALL)


@pytest.fixture(scope="session")
def sources_hf(tiny_hf) -> dict[str, np.ndarray]:
    return rm.read_checkpoint_f32(tiny_hf)


@pytest.fixture(scope="session")
def sources_original(tiny_original) -> dict[str, np.ndarray]:
    return rm.read_checkpoint_f32(tiny_original)


def _check_file(path: Path, sources: dict, mmproj: bool, chosen: QT, name: str, dims=rm.TINY) -> gguf.GGUFReader:
    r = gguf.GGUFReader(path)
    kv = read_kv(r)
    want_kv = (expected_vision_kv if mmproj else expected_text_kv)(dims, chosen, name)
    check_kv(kv, want_kv)
    if not mmproj:
        assert len(kv["tokenizer.ggml.tokens"]) == dims.vocab_size
        special_tokens_ok(kv)
    want = expected_tensors(sources, mmproj)
    got = {t.name: t for t in r.tensors}
    assert set(got) == set(want), f"missing {set(want) - set(got)}, extra {set(got) - set(want)}"
    for n, t in got.items():
        src = want[n]
        shape = tuple(int(x) for x in reversed(t.shape))
        assert shape == src.shape, (n, shape, src.shape)
        assert t.tensor_type == expected_type(n, src.ndim, src.shape[-1], chosen), (n, t.tensor_type.name)
        check_values(n, t.tensor_type, dequant(t), src)
    return r


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "auto"])
def test_text_hf_layout(tiny_hf, sources_hf, tmp_path, outtype):
    out = tmp_path / "text.gguf"
    res = convert(tiny_hf, outtype=outtype, outfile=out, progress=False)
    assert res.outfile == out
    chosen = QT.Q8_0 if outtype == "auto" else CHOSEN[outtype]
    r = _check_file(out, sources_hf, False, chosen, tiny_hf.name, SMALL)
    assert len(r.tensors) == 3 + 9 + 2 * 13
    kv = read_kv(r)
    from tokenizers import Tokenizer
    tok = Tokenizer.from_str(kv["tokenizer.huggingface.json"])
    assert tok.to_str() == Tokenizer.from_file(str(tiny_hf / "tokenizer.json")).to_str()
    assert kv["tokenizer.huggingface.json"] == (tiny_hf / "tokenizer.json").read_text(encoding="utf-8")
    assert kv["tokenizer.ggml.merges"] == [" ".join(m) if isinstance(m, list) else m for m in
                                           json.loads((tiny_hf / "tokenizer.json").read_text())["model"]["merges"]]


@pytest.mark.parametrize("outtype", ["f32", "f16", "q8_0", "auto"])
def test_vision_hf_layout(tiny_hf, sources_hf, tmp_path, outtype):
    out = tmp_path / "mmproj.gguf"
    convert(tiny_hf, mmproj=True, outtype=outtype, outfile=out, progress=False)
    chosen = QT.F16 if outtype == "auto" else CHOSEN[outtype]
    r = _check_file(out, sources_hf, True, chosen, tiny_hf.name, SMALL)
    d = SMALL
    assert len(r.tensors) == 3 + 14 * d.sam_layers + 8 + 4 + 12 * d.clip_layers + 4


@pytest.mark.parametrize("mmproj,outtype", [(False, "f32"), (False, "auto"), (True, "f16"), (True, "bf16")])
def test_original_layout_bf16_shards(tiny_original, sources_original, tmp_path, mmproj, outtype):
    """The original layout: language_config / vision_config.width.*, bf16, sharded with an index."""
    cfg = json.loads((tiny_original / "config.json").read_text())
    assert "language_config" in cfg and "width" in cfg["vision_config"]
    assert len(list(tiny_original.glob("model-*.safetensors"))) >= 2
    out = tmp_path / "o.gguf"
    convert(tiny_original, mmproj=mmproj, outtype=outtype, outfile=out, progress=False)
    chosen = {"auto": QT.F16 if mmproj else QT.Q8_0}.get(outtype) or CHOSEN[outtype]
    _check_file(out, sources_original, mmproj, chosen, tiny_original.name, SMALL)


def test_both_layouts_give_the_same_file(tiny_hf, tmp_path):
    """Same weights, either config layout: identical tensors and KV pairs (but general.name)."""
    orig = rm.copy_model(tiny_hf, tmp_path / "orig")
    rm.rewrite_config_original(orig, name=tiny_hf.name)
    for mmproj in (False, True):
        a, b = tmp_path / f"a{mmproj}.gguf", tmp_path / f"b{mmproj}.gguf"
        convert(tiny_hf, mmproj=mmproj, outtype="f16", outfile=a, progress=False)
        convert(orig, mmproj=mmproj, outtype="f16", outfile=b, progress=False)
        assert a.read_bytes() == b.read_bytes()


def test_matches_llamacpp_fixture_layout(tmp_path):
    """A model with the llama.cpp fixture's transformers config converts to files with exactly llama.cpp's
    tensor names, shapes and types, and llama.cpp's keys with llama.cpp's values (plus our own keys)."""
    hf_cfg = json.loads((FIXTURE / "transformers_config.json").read_text())
    dims = rm.dims_from_hf_config(hf_cfg)
    model = rm.build_tiny_ocr(tmp_path / "Orig", dims=dims)
    for mmproj, outtype, fixture in ((False, "f16", "text-f16.gguf"), (True, "f32", "mmproj-f32.gguf")):
        out = tmp_path / fixture
        convert(model, mmproj=mmproj, outtype=outtype, outfile=out, progress=False)
        ours, theirs = gguf.GGUFReader(out), gguf.GGUFReader(FIXTURE / fixture)
        t_ours = {t.name: (t.tensor_type, tuple(int(x) for x in t.shape)) for t in ours.tensors}
        t_theirs = {t.name: (t.tensor_type, tuple(int(x) for x in t.shape)) for t in theirs.tensors}
        assert t_ours == t_theirs
        kv_ours, kv_theirs = read_kv(ours), read_kv(theirs)
        for k, v in kv_theirs.items():
            if k in ("general.size_label",):
                continue  # optional metadata we do not write
            assert k in kv_ours, k
            if k == "tokenizer.ggml.tokens" or k == "tokenizer.ggml.merges" or k == "tokenizer.ggml.token_type":
                continue  # a different (random) tokenizer
            if isinstance(v, float):
                assert np.isclose(kv_ours[k], v), (k, kv_ours[k], v)
            elif isinstance(v, list) and v and isinstance(v[0], float):
                assert np.allclose(kv_ours[k], v), k
            else:
                assert kv_ours[k] == v, (k, kv_ours[k], v)
        extra = {k for k in kv_ours if k not in kv_theirs}
        assert all(k.startswith("tilepass.") or k in ("tokenizer.huggingface.json", "deepseek2-ocr.rope.freq_base")
                   for k in extra), extra
        # the global-attention block is recognisable by its table length, as llama.cpp files require
        if mmproj:
            assert kv_ours["tilepass.sam.global_attn_indexes"] == [1]
            assert t_ours["v.sam.blk.1.attn.pos_h.weight"][1][1] == 127


def test_vocab_only(tiny_hf, tmp_path):
    out = tmp_path / "vocab.gguf"
    convert(tiny_hf, outfile=out, vocab_only=True)
    r = gguf.GGUFReader(out)
    assert len(r.tensors) == 0
    kv = read_kv(r)
    assert kv["tilepass.text.image_token_id"] == rm.image_token_id(SMALL.vocab_size)
    assert len(kv["tokenizer.ggml.tokens"]) == SMALL.vocab_size
    special_tokens_ok(kv)
