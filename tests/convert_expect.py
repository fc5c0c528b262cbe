"""What a converted GGUF must contain, derived from gguf-schema.md independently of convert/'s code:
source-name -> GGUF-name rules written out as regexes, the F32-only rules, the expected KV pairs,
and a reader that returns a GGUF's KV pairs and dequantised tensors."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT

from reference_models import OcrDims, image_token_id, read_checkpoint_f32, special_tokens, write_safetensors

from convert import __version__ as WRITER_VERSION  # every file records the writer's version

TEXT_RULES = [
    (r"model\.embed_tokens\.weight", "token_embd.weight"),
    (r"model\.norm\.weight", "output_norm.weight"),
    (r"lm_head\.weight", "output.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"blk.\1.attn_norm.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blk.\1.ffn_norm.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.weight", r"blk.\1.attn_q.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.weight", r"blk.\1.attn_k.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.weight", r"blk.\1.attn_v.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight", r"blk.\1.attn_output.weight"),
    (r"model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight", r"blk.\1.ffn_\2.weight"),
    (r"model\.layers\.(\d+)\.mlp\.gate\.weight", r"blk.\1.ffn_gate_inp.weight"),
    (r"model\.layers\.(\d+)\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight", r"blk.\1.ffn_\2_exps.weight"),
    (r"model\.layers\.(\d+)\.mlp\.shared_experts\.(gate|up|down)_proj\.weight", r"blk.\1.ffn_\2_shexp.weight"),
]
VISION_RULES = [
    (r"model\.sam_model\.patch_embed\.proj\.(weight|bias)", r"v.sam.patch_embd.\1"),
    (r"model\.sam_model\.pos_embed", "v.sam.pos_embd.weight"),
    (r"model\.sam_model\.blocks\.(\d+)\.norm1\.(weight|bias)", r"v.sam.blk.\1.pre_ln.\2"),
    (r"model\.sam_model\.blocks\.(\d+)\.norm2\.(weight|bias)", r"v.sam.blk.\1.post_ln.\2"),
    (r"model\.sam_model\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"v.sam.blk.\1.attn.qkv.\2"),
    (r"model\.sam_model\.blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"v.sam.blk.\1.attn.out.\2"),
    (r"model\.sam_model\.blocks\.(\d+)\.attn\.rel_pos_(h|w)", r"v.sam.blk.\1.attn.pos_\2.weight"),
    (r"model\.sam_model\.blocks\.(\d+)\.mlp\.lin(1|2)\.(weight|bias)", r"v.sam.blk.\1.mlp.lin\2.\3"),
    (r"model\.sam_model\.neck\.(\d+)\.(weight|bias)", r"v.sam.neck.\1.\2"),
    (r"model\.sam_model\.net_(2|3)\.weight", r"v.sam.net_\1.weight"),
    (r"model\.vision_model\.embeddings\.class_embedding", "v.class_embd"),
    (r"model\.vision_model\.embeddings\.position_embedding\.weight", "v.position_embd.weight"),
    (r"model\.vision_model\.pre_layrnorm\.(weight|bias)", r"v.pre_ln.\1"),
    (r"model\.vision_model\.transformer\.layers\.(\d+)\.layer_norm(1|2)\.(weight|bias)", r"v.blk.\1.ln\2.\3"),
    (r"model\.vision_model\.transformer\.layers\.(\d+)\.self_attn\.qkv_proj\.(weight|bias)", r"v.blk.\1.attn_qkv.\2"),
    (r"model\.vision_model\.transformer\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"v.blk.\1.attn_out.\2"),
    (r"model\.vision_model\.transformer\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)", r"v.blk.\1.ffn_up.\2"),
    (r"model\.vision_model\.transformer\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)", r"v.blk.\1.ffn_down.\2"),
    (r"model\.projector\.layers\.(weight|bias)", r"mm.model.fc.\1"),
    (r"model\.image_newline", "v.image_newline"),
    (r"model\.view_seperator", "v.view_seperator"),
]
DROPPED = {"model.vision_model.embeddings.patch_embedding.weight", "model.vision_model.embeddings.position_ids"}


def map_name(src: str, mmproj: bool) -> str | None:
    for pat, rep in VISION_RULES if mmproj else TEXT_RULES:
        if re.fullmatch(pat, src):
            return re.sub(pat, rep, src)
    return None


def expected_tensors(sources: dict[str, np.ndarray], mmproj: bool) -> dict[str, np.ndarray]:
    """GGUF name -> expected float32 values (experts stacked in expert order, view_seperator [1, n])."""
    groups: dict[str, list[tuple[int, np.ndarray]]] = {}
    for src, arr in sources.items():
        if src in DROPPED:
            continue
        name = map_name(src, mmproj)
        if name is None:
            continue
        m = re.search(r"\.experts\.(\d+)\.", src)
        groups.setdefault(name, []).append((int(m.group(1)) if m else 0, arr))
    out = {}
    for name, parts in groups.items():
        if len(parts) > 1:
            out[name] = np.stack([a for _, a in sorted(parts, key=lambda p: p[0])])
        else:
            out[name] = parts[0][1].reshape(1, -1) if name == "v.view_seperator" else parts[0][1]
    return out


def keeps_f32(name: str, ndim: int) -> bool:
    """Tensors llama.cpp never quantises (gguf-schema.md)."""
    return (ndim <= 1 or name.endswith("ffn_gate_inp.weight") or "pos_embd" in name or "position_embd" in name
            or ".attn.pos_" in name or ".neck." in name or ".net_" in name or name == "v.view_seperator")


def expected_type(name: str, ndim: int, row: int, chosen: QT) -> QT:
    if keeps_f32(name, ndim):
        return QT.F32
    if name == "v.sam.patch_embd.weight":
        return chosen if chosen in (QT.F32, QT.F16) else QT.F32
    t = chosen
    if t in (QT.Q4_K, QT.Q5_K, QT.Q6_K) and row % 256:  # as llama-quantize
        t = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}[t]
    if t in (QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1) and row % 32:
        t = QT.F16
    return t


FILE_TYPE = {QT.F32: 0, QT.F16: 1, QT.Q4_0: 2, QT.Q4_1: 3, QT.Q8_0: 7, QT.Q5_0: 8, QT.Q5_1: 9, QT.Q4_K: 14, QT.Q5_K: 16,
             QT.Q6_K: 18, QT.BF16: 32}


def expected_text_kv(d: OcrDims, chosen: QT, name: str) -> dict:
    a = "deepseek2-ocr"
    return {
        "general.architecture": a, "general.type": "model", "general.name": name,
        "general.file_type": FILE_TYPE[chosen], "general.quantization_version": 2, "tilepass.format_version": 1,
        "tilepass.writer_version": WRITER_VERSION,
        f"{a}.block_count": d.text_layers, f"{a}.context_length": d.max_positions,
        f"{a}.embedding_length": d.text_hidden, f"{a}.feed_forward_length": d.text_ffn,
        f"{a}.attention.head_count": d.text_heads, f"{a}.attention.head_count_kv": d.text_kv_heads,
        f"{a}.attention.layer_norm_rms_epsilon": d.rms_eps, f"{a}.rope.freq_base": d.rope_theta,
        f"{a}.rope.dimension_count": 0, f"{a}.leading_dense_block_count": d.dense_layers,
        f"{a}.vocab_size": d.vocab_size, f"{a}.expert_count": d.n_experts, f"{a}.expert_used_count": d.top_k,
        f"{a}.expert_shared_count": d.n_shared, f"{a}.expert_feed_forward_length": d.moe_ffn,
        f"{a}.expert_group_count": 1, f"{a}.expert_group_used_count": 1,
        "tilepass.text.rope_dimension_count": d.head_dim, "tilepass.text.expert_weights_scale": 1.0,
        "tilepass.text.expert_weights_norm": False, "tilepass.text.image_token_id": image_token_id(d.vocab_size),
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "deepseek-v3",
        "tokenizer.ggml.tokens": ..., "tokenizer.ggml.token_type": ..., "tokenizer.ggml.merges": ...,
        "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.padding_token_id": 2,
        "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False,
        "tokenizer.chat_template": "{% for m in messages %}{{m['content']}}{% endfor %}",
        "tokenizer.huggingface.json": ...,
    }


def expected_vision_kv(d: OcrDims, chosen: QT, name: str) -> dict:
    return {
        "general.architecture": "clip", "general.type": "mmproj", "general.name": name,
        "general.file_type": FILE_TYPE[chosen], "general.quantization_version": 2, "tilepass.format_version": 1,
        "tilepass.writer_version": WRITER_VERSION,
        "clip.has_vision_encoder": True, "clip.projector_type": "deepseekocr", "clip.use_gelu": True,
        "clip.vision.projection_dim": d.text_hidden, "clip.vision.image_size": d.clip_image,
        "clip.vision.patch_size": d.clip_patch, "clip.vision.embedding_length": d.clip_hidden,
        "clip.vision.feed_forward_length": d.clip_heads * 4, "clip.vision.block_count": d.clip_layers,
        "clip.vision.attention.head_count": d.clip_heads, "clip.vision.attention.layer_norm_epsilon": 1e-6,
        "clip.vision.image_mean": [0.5, 0.5, 0.5], "clip.vision.image_std": [0.5, 0.5, 0.5],
        "clip.vision.projector.scale_factor": 1, "clip.vision.window_size": d.sam_window,
        "clip.vision.preproc_min_tiles": 2, "clip.vision.preproc_max_tiles": 9,
        "clip.vision.sam.block_count": d.sam_layers, "clip.vision.sam.embedding_length": d.sam_hidden,
        "clip.vision.sam.head_count": d.sam_heads,
        "tilepass.sam.image_size": d.sam_image, "tilepass.sam.patch_size": d.sam_patch,
        "tilepass.sam.window_size": d.sam_window, "tilepass.sam.global_attn_indexes": list(d.sam_global),
        "tilepass.sam.layer_norm_epsilon": 1e-6, "tilepass.sam.feed_forward_length": d.sam_mlp,
        "tilepass.clip.layer_norm_epsilon": 1e-5, "tilepass.clip.feed_forward_length": d.clip_ffn,
        "tilepass.preproc.tile_size": 640, "tilepass.preproc.pad_color": [127, 127, 127],
    }


def read_kv(reader: gguf.GGUFReader) -> dict:
    out = {}
    for k, f in reader.fields.items():
        if k.startswith("GGUF."):
            continue
        v = f.contents()
        out[k] = v
    return out


def check_kv(got: dict, want: dict) -> None:
    """Every expected key with its value, nothing extra (``...`` = present, value checked elsewhere)."""
    assert set(got) == set(want), f"missing {set(want) - set(got)}, extra {set(got) - set(want)}"
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


def dequant(t) -> np.ndarray:
    """A GGUFReader tensor as float32 in PyTorch order."""
    shape = tuple(int(x) for x in reversed(t.shape))
    return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(shape).astype(np.float32)


def _block32_error_bound(qtype: QT, blk: np.ndarray) -> np.ndarray:
    """The largest error a 32-block type allows per block (blk: [n, 32] of source values)."""
    amax = np.abs(blk).max(axis=1, keepdims=True)
    # the f16 rounding of d adds up to |q|·d·2^-11
    if qtype == QT.Q8_0:  # d = amax/127, error <= d/2
        return amax / 127 * (0.5 + 127 / 2048)
    if qtype == QT.Q4_0:  # d = amax/8, error <= d (the clamped top value)
        return amax / 8 * (1 + 8 / 2048)
    if qtype == QT.Q5_0:  # d = amax/16, levels -16..15: error <= d/2 (d at the clamped top)
        return amax / 16 * (1 + 16 / 2048)
    # Q4_1 / Q5_1: d = (max - min)/levels, error <= d/2 + the f16 rounding of d and min
    lo, hi = blk.min(axis=1, keepdims=True), blk.max(axis=1, keepdims=True)
    d = (hi - lo) / (15 if qtype == QT.Q4_1 else 31)
    return d / 2 + (np.abs(lo) + (hi - lo)) * 2.0**-10


def check_values(name: str, qtype: QT, got: np.ndarray, src: np.ndarray) -> None:
    """Dequantised value vs source: exact for F32, the type's rounding for F16/BF16, the block error bound
    for quantised types."""
    assert got.shape == src.shape, (name, got.shape, src.shape)
    src = src.astype(np.float32)
    if qtype == QT.F32:
        np.testing.assert_array_equal(got, src, err_msg=name)
    elif qtype == QT.F16:
        np.testing.assert_array_equal(got, src.astype(np.float16).astype(np.float32), err_msg=name)
    elif qtype == QT.BF16:
        from reference_models import bf16_bits_to_f32, f32_to_bf16_bits
        np.testing.assert_array_equal(got, bf16_bits_to_f32(f32_to_bf16_bits(src)), err_msg=name)
    elif qtype in (QT.Q8_0, QT.Q4_0, QT.Q5_0, QT.Q4_1, QT.Q5_1):
        blk = src.reshape(-1, 32)
        bound = _block32_error_bound(qtype, blk)
        err = np.abs(got.reshape(-1, 32) - blk)
        assert np.all(err <= bound * 1.01 + 1e-7), (name, float((err - bound).max()))
    else:  # K-quants: relative RMS error per super-block of 256
        blk = src.reshape(-1, 256)
        rms_err = np.sqrt(((got.reshape(-1, 256) - blk) ** 2).mean(axis=1))
        amax = np.abs(blk).max(axis=1)
        limit = {QT.Q4_K: 0.12, QT.Q5_K: 0.06, QT.Q6_K: 0.03}[qtype]
        assert np.all(rms_err <= limit * amax + 1e-7), (name, float((rms_err / np.maximum(amax, 1e-12)).max()))


def special_tokens_ok(kv: dict) -> None:
    toks, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    for i, t in special_tokens(len(toks)).items():
        assert toks[i] == t and types[i] == int(gguf.TokenType.CONTROL), (i, toks[i], types[i])


def gguf_files(d: Path) -> list[str]:
    return sorted(p.name for p in Path(d).iterdir() if ".gguf" in p.name)


# ---- broken checkpoints (the converter's error tests) ----------------------------------------------------
def rewrite_checkpoint(model_dir: Path, edit) -> None:
    """Edit a one-file checkpoint's tensors (copies: safetensors maps the file being replaced)."""
    tensors = {k: np.array(v, copy=True) for k, v in read_checkpoint_f32(model_dir).items()}
    edit(tensors)
    tmp = model_dir / "model.safetensors.tmp"
    write_safetensors(tmp, tensors)
    tmp.replace(model_dir / "model.safetensors")


def one_error(capsys, *args) -> str:
    """Run convert-hf-to-gguf; it must fail with exit status 1 and exactly one error line, returned."""
    from convert.cli import main

    capsys.readouterr()  # drop what building the model printed
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("convert-hf-to-gguf: error: "), (rc, err)
    return err[0]
