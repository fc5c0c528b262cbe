"""K-quants through libtilepass' native quantisers (tp_quantize), checked with gguf.quants.dequantize.

Skipped when build/libtilepass.so (encoder.native) cannot be loaded; they fail if the library loads but
its quantisers are wrong or missing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import gguf
from gguf import GGMLQuantizationType as QT

import reference_models as rm
from convert import native_quant
from convert_expect import check_values, dequant, expected_tensors, expected_type

KQ = [QT.Q4_K, QT.Q5_K, QT.Q6_K]


@pytest.mark.parametrize("qtype", KQ)
@pytest.mark.parametrize("rows,cols,kind", [(3, 256, "normal"), (5, 768, "normal"), (4, 512, "outliers"),
                                            (2, 256, "zeros"), (2, 512, "constant")])
def test_native_kquant_matches_gguf_dequantize(qtype, rows, cols, kind):
    rng = np.random.default_rng(cols + rows)
    x = rng.standard_normal((rows, cols), dtype=np.float32)
    if kind == "outliers":
        x[:, ::37] *= 40
    elif kind == "zeros":
        x[:] = 0
    elif kind == "constant":
        x[:] = 0.75
    q = native_quant.quantize(x, qtype)
    blk, size = gguf.GGML_QUANT_SIZES[qtype]
    assert q.shape == (rows, cols // blk * size) and q.dtype == np.uint8
    assert native_quant.row_bytes(qtype, cols) == cols // blk * size
    y = gguf.quants.dequantize(q, qtype).reshape(rows, cols)
    check_values(qtype.name, qtype, y, x)
    # the native inverse agrees with gguf's independent numpy implementation
    y2 = native_quant.dequantize(q, qtype, rows, cols)
    np.testing.assert_allclose(y2, y, rtol=1e-6, atol=1e-6)
    if kind in ("zeros",):
        np.testing.assert_array_equal(y, 0)


@pytest.mark.parametrize("qtype", KQ)
def test_native_kquant_rejects_bad_rows(qtype):
    from convert import ConversionError
    with pytest.raises(ConversionError):
        native_quant.quantize(np.zeros((2, 100), np.float32), qtype)


@pytest.mark.parametrize("outtype,qtype", [("q4_k", QT.Q4_K), ("q5_k", QT.Q5_K), ("q6_k", QT.Q6_K)])
def test_convert_kquant_text(tmp_path, outtype, qtype):
    """Rows of 256 take the K-quant; rows of 128 fall back as llama-quantize does (Q4_K -> Q5_0, Q5_K -> Q5_1,
    Q6_K -> Q8_0); norms/router stay F32."""
    d = rm.OcrDims(vocab_size=1024, text_hidden=256, text_heads=2, text_kv_heads=2, text_ffn=256, moe_ffn=128,
                   n_experts=4)
    model = rm.get_synthetic_ocr(d, n_shards=2)
    from convert import convert
    out = tmp_path / "k.gguf"
    convert(model, outtype=outtype, outfile=out)
    r = gguf.GGUFReader(out)
    sources = rm.read_checkpoint_f32(model)
    want = expected_tensors(sources, False)
    seen = set()
    for t in r.tensors:
        src = want[t.name]
        assert t.tensor_type == expected_type(t.name, src.ndim, src.shape[-1], qtype), t.name
        seen.add(t.tensor_type)
        check_values(t.name, t.tensor_type, dequant(t), src)
    assert seen == {qtype, {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}[qtype], QT.F32}
    assert r.fields["general.file_type"].contents() == {QT.Q4_K: 14, QT.Q5_K: 16, QT.Q6_K: 18}[qtype]
