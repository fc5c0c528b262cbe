"""Hardening of the native library against the files and calls a tester found faults with (the issue "Hardening:
the faults a hostile file, a second thread or a slip of the keyboard still finds"). Each case rewrites a copy of
a llama.cpp-written fixture (../shared/fixtures) with the gguf package, as another tool would have written it:

1. only the CLIP or the SAM position table stored as F16: encoding in mode tiny then base (then tiny again) once
   used freed memory after a failed graph build; both modes must encode and match the F32 file;
2. norms, biases, position/relative-position tables, queries and layout vectors stored as F16 (and the whole
   vision file F16), and a text file whose norms and router are F16: they load and match the F32 / F16 file
   within F16 rounding;
3. llama-quantize's plain Q8_0 (every 2-D+ tensor whose rows are a multiple of 32, SAM's tables and the
   layout vectors included): every mode of both families works, cosine >= 0.99 to the F32 file;
4. a weight of a type no op takes (I32): every encode fails with a message, again and again, nothing freed
   twice or read after free;
5. the abort callback through the Python binding (cffi): an encode stopped after a few nodes raises
   TP_ERR_ABORTED and the next encode equals an undisturbed one.
Runs under ASan/UBSan too (Makefile SAN_PYTESTS): the memory faults show there.
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np
import pytest

from encoder.native import TilepassError, ffi, lib
from encoder.text_model import TextModel
from encoder.vision import VisionEncoder
from tp_testing import rel_err

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
V1 = FIXTURES / "llamacpp-tiny-v1"
OCR2 = FIXTURES / "llamacpp-tiny-ocr2"
QT = gguf.GGMLQuantizationType
VT = gguf.GGUFValueType
# Against the sanitizer build (make santest) every encode is ~10x slower: the memory-fault cases run in full,
# the accuracy sweeps over the one-view modes only (the full sweep runs in the plain pytest pass).
UNDER_SAN = Path(os.environ.get("TILEPASS_LIB", "")).parent.name == "san"
CHEAP_MODES = ("tiny", "base")


def sweep_modes(enc: VisionEncoder) -> tuple[str, ...]:
    return tuple(m for m in enc.modes if m in CHEAP_MODES) if UNDER_SAN else enc.modes

# the weight matrices (what tp_mul_mat / tp_conv2d multiply); everything else is element-wise or a table
MATRIX_SUFFIXES = ("attn.qkv.weight", "attn.out.weight", "mlp.lin1.weight", "mlp.lin2.weight", "attn_qkv.weight",
                   "attn_out.weight", "ffn_up.weight", "ffn_down.weight", "ffn_gate.weight", "attn_q.weight",
                   "attn_k.weight", "attn_v.weight", "mm.model.fc.weight", "patch_embd.weight", "neck.0.weight",
                   "neck.2.weight", "net_2.weight", "net_3.weight")


def rewrite(src: Path, dst: Path, choose) -> list[str]:
    """A copy of src with each tensor stored as choose(name, numpy shape) (None: as it is). Returns the names
    whose type changed."""
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(str(dst), r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        if f.types[0] == VT.ARRAY:
            w.add_key_value(k, f.contents(), VT.ARRAY, sub_type=f.types[-1])
        else:
            w.add_key_value(k, f.contents(), f.types[0])
    changed = []
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))
        qt = choose(t.name, shape)
        if qt is None or qt == t.tensor_type:
            w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
            continue
        changed.append(t.name)
        data = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(shape).astype(np.float32)
        if qt == QT.F32:
            w.add_tensor(t.name, data)
        elif qt == QT.F16:
            w.add_tensor(t.name, data.astype(np.float16))
        elif qt == QT.I32:
            w.add_tensor(t.name, data.astype(np.int32))
        else:
            w.add_tensor(t.name, gguf.quants.quantize(data, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return changed


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest per-token cosine similarity of two [n, d] token arrays."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(((a64 * b64).sum(1) / np.linalg.norm(a64, axis=1) / np.linalg.norm(b64, axis=1)).min())


class _References(dict):
    """Each family's F32 tokens of page.png per mode, computed on first use: refs[family_dir.name][mode]."""

    def __missing__(self, family: str) -> dict:
        enc = VisionEncoder(FIXTURES / family / "mmproj-f32.gguf")

        class _Modes(dict):
            def __missing__(self, mode: str) -> np.ndarray:
                self[mode] = enc.encode([FIXTURES / family / "page.png"], mode=mode)[0]
                return self[mode]

        self[family] = _Modes()
        return self[family]


@pytest.fixture(scope="module")
def reference_tokens():
    return _References()


# ---- 1. one position table F16: tiny then base ----

@pytest.mark.parametrize("table", ["v.position_embd.weight", "v.sam.pos_embd.weight"])
def test_f16_position_table_tiny_then_base(tmp_path, reference_tokens, table):
    path = tmp_path / "mmproj-pos-f16.gguf"
    assert rewrite(V1 / "mmproj-f32.gguf", path, lambda n, s: QT.F16 if n == table else None) == [table]
    enc = VisionEncoder(path, n_threads=2)
    for mode in ("tiny", "base", "tiny") + (() if UNDER_SAN else ("gundam",)):
        (ours,) = enc.encode([V1 / "page.png"], mode=mode)
        ref = reference_tokens[V1.name][mode]
        assert ours.shape == ref.shape
        assert rel_err(ours, ref) < 1e-3, (mode, rel_err(ours, ref))


# ---- 2. element-wise tensors and tables F16 ----

@pytest.mark.parametrize("which", ["tables_and_vectors", "whole_file"])
@pytest.mark.parametrize("fixture", [V1, OCR2], ids=["v1", "ocr2"])
def test_f16_vision_file(tmp_path, reference_tokens, fixture, which):
    path = tmp_path / f"mmproj-{which}-f16.gguf"
    changed = rewrite(fixture / "mmproj-f32.gguf", path,
                      lambda n, s: QT.F16 if which == "whole_file" or not n.endswith(MATRIX_SUFFIXES) else None)
    assert any("ln" in n and n.endswith("weight") for n in changed) and any(n.endswith("bias") for n in changed)
    assert "v.sam.blk.0.attn.pos_h.weight" in changed and "v.view_seperator" in changed
    enc = VisionEncoder(path, precision=0)
    for mode in sweep_modes(enc):
        (ours,) = enc.encode([fixture / "page.png"], mode=mode)
        ref = reference_tokens[fixture.name][mode]
        assert rel_err(ours, ref) < 1e-2, (mode, rel_err(ours, ref))
        assert min_cosine(ours, ref) > 0.9999, (mode, min_cosine(ours, ref))


def test_f16_norms_and_router_text_file(tmp_path, fixture=V1):  # both fixtures' text files are deepseek2-ocr
    path = tmp_path / "text-norms-f16.gguf"
    changed = rewrite(fixture / "text-f16.gguf", path, lambda n, s: QT.F16 if len(s) <= 2 and
                      ("norm" in n or "gate_inp" in n) else None)
    assert "output_norm.weight" in changed and "blk.0.attn_norm.weight" in changed
    assert "blk.1.ffn_gate_inp.weight" in changed
    ref_ids = list(np.load(fixture / "reference.npz")["prompt_text_ids"])
    prompt = [0] + ref_ids
    ref_model, ours_model = TextModel(fixture / "text-f16.gguf", n_ctx=128), TextModel(path, n_ctx=128)
    ref, ours = ref_model.eval(prompt), ours_model.eval(prompt)
    # these files' norms and router hold values F16 represents closely: logits within F16 rounding
    assert rel_err(ours, ref) < 1e-3
    ref_model.reset()
    ours_model.reset()
    assert ours_model.greedy(prompt, 8) == ref_model.greedy(prompt, 8)


# ---- 3. plain llama-quantize Q8_0 ----

def q8_like_llama_quantize(name: str, shape: tuple) -> object:
    """llama-quantize's plain Q8_0: every tensor of 2+ dims whose rows are whole 32-blocks."""
    return QT.Q8_0 if len(shape) >= 2 and shape[-1] % 32 == 0 else None


@pytest.mark.parametrize("fixture", [V1, OCR2], ids=["v1", "ocr2"])
def test_plain_llama_quantize_q8_0(tmp_path, reference_tokens, fixture):
    path = tmp_path / "mmproj-q8_0.gguf"
    changed = rewrite(fixture / "mmproj-f32.gguf", path, q8_like_llama_quantize)
    assert "v.sam.pos_embd.weight" in changed and "v.view_seperator" in changed  # tables, not only matrices
    for precision in (0, -1, 2):  # f32, auto, int8
        enc = VisionEncoder(path, precision=precision)
        for mode in sweep_modes(enc):
            (ours,) = enc.encode([fixture / "page.png"], mode=mode)
            ref = reference_tokens[fixture.name][mode]
            assert ours.shape == ref.shape
            assert min_cosine(ours, ref) >= 0.99, (precision, mode, min_cosine(ours, ref))


# ---- 4. a failed graph build, again and again ----

@pytest.mark.parametrize("weight", ["v.sam.patch_embd.weight", "v.blk.0.attn_qkv.weight", "mm.model.fc.weight"])
def test_unusable_weight_type_fails_every_encode(tmp_path, weight):
    path = tmp_path / "mmproj-i32.gguf"
    rewrite(V1 / "mmproj-f32.gguf", path, lambda n, s: QT.I32 if n == weight else None)
    try:
        enc = VisionEncoder(path)
    except TilepassError as e:  # refusing the file at load is as good
        assert e.status == lib.TP_ERR_FORMAT and weight in str(e)
        return
    for mode in ("tiny", "base", "tiny", "gundam", "base"):
        with pytest.raises(TilepassError) as e:
            enc.encode([V1 / "page.png"], mode=mode)
        assert "i32" in str(e.value) and "building the vision graph" in str(e.value)
    with pytest.raises(TilepassError):
        enc.stage("proj", 0)  # no stage outputs after a failed build


# ---- 5. the abort callback through cffi ----

def test_abort_callback_from_python():
    state = {"calls": 0, "abort_at": 0}

    @ffi.callback("bool(void *)")
    def abort_cb(_data):
        state["calls"] += 1
        return state["abort_at"] > 0 and state["calls"] >= state["abort_at"]

    params = ffi.new("tp_vision_params *", lib.tp_vision_default_params())
    params.n_threads = 2
    params.abort_callback = abort_cb
    out = ffi.new("tp_vision_model **")
    err = ffi.new("tp_error *")
    assert lib.tp_vision_load(str(V1 / "mmproj-f32.gguf").encode(), params, out, err) == lib.TP_OK
    model = ffi.gc(out[0], lib.tp_vision_free)
    page = VisionEncoder(V1 / "mmproj-f32.gguf").prepare(V1 / "page.png", "tiny")  # its views (C preprocessing)

    def encode() -> tuple[int, np.ndarray]:
        tokens = np.full((page.n_tokens, 32), -7.0, dtype=np.float32)
        ptrs = ffi.new("float *[]", [ffi.cast("float *", ffi.from_buffer(tokens))])
        return lib.tp_vision_encode(model, page.views, 1, ptrs, err), tokens

    st, ref = encode()
    assert st == lib.TP_OK
    assert state["calls"] > 50  # asked between the nodes
    state.update(calls=0, abort_at=3)
    st, tokens = encode()
    assert st == lib.TP_ERR_ABORTED and "aborted" in ffi.string(err.message).decode()
    assert state["calls"] == 3 and np.all(tokens == -7.0)  # stopped there, nothing written
    state.update(calls=0, abort_at=0)
    st, tokens = encode()
    assert st == lib.TP_OK and np.array_equal(tokens, ref)
