"""The real checkpoint's tensor list (all 2711 names of deepseek-ocr-v1/model.safetensors.index.json) maps
completely: a synthetic checkpoint with exactly those names (real block/expert counts, small widths)
converts to the schema's tensor counts. Also --dry-run output and the type policy."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import gguf
from gguf import GGMLQuantizationType as QT

import reference_models as rm
from convert import plan
from convert.cli import main
from convert.config import load_config
from convert.errors import ConversionError
from convert.quant_policy import choose_type
from convert_expect import DROPPED, gguf_files, map_name

INDEX = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "deepseek-ocr-v1" / "model.safetensors.index.json"
if not INDEX.exists():
    INDEX = (Path(__file__).resolve().parents[1] / "../shared/fixtures/deepseek-ocr-v1/model.safetensors.index.json")
REAL_CONFIG = INDEX.parent / "config.json"
D = rm.FULL_NAMES_SMALL


@pytest.fixture(scope="module")
def real_names() -> list[str]:
    return list(json.loads(INDEX.read_text())["weight_map"])


@pytest.fixture(scope="module")
def full_model(real_names) -> Path:
    return rm.get_synthetic_ocr(D, names=real_names, n_shards=3)


def test_index_has_2711_names(real_names):
    assert len(real_names) == 2711
    assert set(real_names) == set(rm.checkpoint_shapes(rm.FULL, unused_clip_tensors=True))


def test_real_config_parses():
    """The published config.json (original layout) reads into the published numbers."""
    import shutil, tempfile
    with tempfile.TemporaryDirectory() as td:
        shutil.copy(REAL_CONFIG, Path(td) / "config.json")
        cfg = load_config(Path(td))
    t, s, c = cfg.text, cfg.sam, cfg.clip
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads) == (1280, 12, 10, 10)
    assert (t.intermediate_size, t.moe_intermediate_size, t.n_routed_experts, t.num_experts_per_tok) == (6848, 896, 64, 6)
    assert (t.n_shared_experts, t.first_k_dense_replace, t.vocab_size, t.max_position_embeddings) == (2, 1, 129280, 8192)
    assert (t.rms_norm_eps, t.rope_theta, t.head_dim) == (1e-6, 10000.0, 128)
    assert (s.hidden_size, s.num_hidden_layers, s.num_attention_heads, s.global_attn_indexes) == (768, 12, 12, [2, 5, 8, 11])
    assert (s.downsample_channels, s.image_size) == ([512, 1024], 1024)
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.image_size, c.patch_size) == (1024, 24, 16, 224, 14)
    assert (cfg.projector_input_dim, cfg.projector_output_dim) == (2048, 1280)


@pytest.mark.parametrize("mmproj", [False, True])
def test_every_real_name_maps(full_model, real_names, tmp_path, mmproj):
    out = tmp_path / "o.gguf"
    rc = main([str(full_model), "--outfile", str(out), "--no-progress"] + (["--mmproj"] if mmproj else []))
    assert rc == 0
    r = gguf.GGUFReader(out)
    names = {t.name for t in r.tensors}
    n_sam, n_clip = D.sam_layers, D.clip_layers
    if mmproj:
        assert len(names) == 3 + 14 * n_sam + 8 + 4 + 12 * n_clip + 4 == 475
    else:
        assert len(names) == 155
        assert r.fields["deepseek2-ocr.block_count"].contents() == 12
        assert r.fields["deepseek2-ocr.expert_count"].contents() == 64
        exps = next(t for t in r.tensors if t.name == "blk.11.ffn_down_exps.weight")
        assert tuple(int(x) for x in reversed(exps.shape)) == (64, D.text_hidden, D.moe_ffn)
    # every source name of this part maps to one of them, and nothing is written that has no source
    mapped = {map_name(n, mmproj) for n in real_names if n not in DROPPED} - {None}
    assert mapped == names
    # every one of the 2711 names is either written by one of the two files or one of the 2 dropped ones
    unmapped = [n for n in real_names if map_name(n, False) is None and map_name(n, True) is None]
    assert sorted(unmapped) == sorted(DROPPED)
    if mmproj:
        g = {t.name: t for t in r.tensors}
        for i in range(12):
            rows = int(g[f"v.sam.blk.{i}.attn.pos_h.weight"].shape[1])
            assert rows == (127 if i in (2, 5, 8, 11) else 27)


def test_dry_run_lists_everything_and_writes_nothing(full_model, capsys):
    before = sorted(p.name for p in full_model.iterdir())
    rc = main([str(full_model), "--dry-run", "--outtype", "q4_0"])
    assert rc == 0
    out = capsys.readouterr().out
    tensor_lines = [l for l in out.splitlines() if " -> blk." in l or " -> token_embd" in l or " -> output" in l]
    assert len(tensor_lines) == 155
    assert "model.layers.5.mlp.experts.0.up_proj.weight .. model.layers.5.mlp.experts.63.up_proj.weight " \
           "(stacked x64) [BF16] -> blk.5.ffn_up_exps.weight [64, 16, 32] Q4_0" in out
    assert "deepseek2-ocr.expert_count UINT32 = 64" in out
    assert "tokenizer.ggml.pre STRING = 'deepseek-v3'" in out
    # row of 16 (moe_ffn) does not fit Q4_0's block of 32: shown as a fallback
    assert re.search(r"-> blk\.1\.ffn_down_exps\.weight \[64, 32, 16\] F16 +\(row 16 not a multiple of 32: Q4_0->F16\)",
                     out)
    assert sorted(p.name for p in full_model.iterdir()) == before


def test_dry_run_shows_kquant_fallback_without_native_library(capsys):
    """A K-quant request on rows of 64 falls back as llama-quantize does (Q4_K -> Q5_0) and needs no
    native quantiser."""
    model = rm.get_synthetic_ocr(rm.OcrDims(vocab_size=1024), n_shards=1)
    p = plan(model, outtype="q4_k")
    assert {t.qtype for t in p.tensors} <= {QT.Q5_0, QT.F32}
    rc = main([str(model), "--dry-run", "--outtype", "q4_k"])
    assert rc == 0
    assert "row 64 not a multiple of 256: Q4_K->Q5_0" in capsys.readouterr().out


def test_type_policy():
    assert choose_type(QT.Q4_K, 1280).qtype == QT.Q4_K
    assert choose_type(QT.Q4_K, 896).qtype == QT.Q5_0  # llama-quantize's fallbacks
    assert choose_type(QT.Q5_K, 896).qtype == QT.Q5_1
    assert choose_type(QT.Q6_K, 896).qtype == QT.Q8_0
    assert choose_type(QT.Q6_K, 48).qtype == QT.F16
    assert choose_type(QT.Q5_0, 48).qtype == QT.F16
    assert choose_type(QT.Q8_0, 48).qtype == QT.F16
    assert choose_type(QT.Q4_0, 64).qtype == QT.Q4_0
    assert choose_type(QT.BF16, 7).qtype == QT.BF16
    assert choose_type(QT.Q8_0, 64, force_f32=True).qtype == QT.F32
    assert choose_type(QT.F16, 16, conv_f16_only=True).qtype == QT.F16
    assert choose_type(QT.Q8_0, 16, conv_f16_only=True).qtype == QT.F32
    assert choose_type(QT.BF16, 16, conv_f16_only=True).qtype == QT.F32


def test_q4_k_m_mixture(full_model, capsys):
    """--outtype q4_k_m is llama-quantize's Q4_K_M: Q6_K for output.weight, and for attn_v and every ffn_down
    (dense, experts, shared experts) in layers 0, 3, 6, 9, 10 and 11 of 12 (src/llama-quant.cpp's use_more_bits:
    i < n/8, i >= 7n/8, (i - n/8) % 3 == 2, worked out by hand); Q4_K elsewhere; then the same fallbacks as any
    K-quant (these small widths: Q6_K -> Q8_0 -> F16, Q4_K -> Q5_0 -> F16); general.file_type 15."""
    more_bits = {0, 3, 6, 9, 10, 11}
    single = {t.name: t.qtype for t in plan(full_model, outtype="q4_k").tensors}
    p = plan(full_model, outtype="q4_k_m")
    upgraded = 0
    for t in p.tensors:
        if single[t.name] == QT.F32:  # norms, router, ...: F32 whatever the outtype
            assert t.qtype == QT.F32, t.name
            continue
        m = re.match(r"blk\.(\d+)\.(attn_v|ffn_down|ffn_down_exps|ffn_down_shexp)\.weight$", t.name)
        more = t.name == "output.weight" or bool(m and int(m.group(1)) in more_bits)
        upgraded += more
        assert t.qtype == choose_type(QT.Q6_K if more else QT.Q4_K, t.row_len).qtype, t.name
    assert upgraded == 1 + 6 + 1 + 5 * 2  # output; 6 attn_v; layer 0's dense ffn_down; 5 MoE layers' exps + shexp
    assert {kv.key: kv.value for kv in p.kv}["general.file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert main([str(full_model), "--dry-run", "--outtype", "q4_k_m"]) == 0
    assert "outtype q4_k_m (Q4_K_M)" in capsys.readouterr().out
    with pytest.raises(ConversionError, match="mixture for a text model"):
        plan(full_model, mmproj=True, outtype="q4_k_m")


def test_auto_picks_published_types(full_model):
    assert plan(full_model, outtype="auto").chosen.qtype == QT.Q8_0
    assert plan(full_model, mmproj=True, outtype="auto").chosen.qtype == QT.F16
    p = plan(full_model, mmproj=True, outtype="auto")
    types = {t.name: t.qtype for t in p.tensors}
    assert types["v.blk.0.attn_qkv.weight"] == QT.F16
    assert types["v.sam.patch_embd.weight"] == QT.F16
    assert types["v.position_embd.weight"] == QT.F32
    assert types["v.sam.neck.2.weight"] == QT.F32
