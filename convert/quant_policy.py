"""Which GGUF type each tensor gets, and the row quantisers.

Policy (llama.cpp's): tensors llama.cpp keeps in F32 stay F32; everything else gets the type chosen
with ``--outtype``. A row (innermost dimension) that is not a multiple of the type's block cannot be
stored in that type and falls back as llama-quantize does: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0
(DeepSeek-OCR's 896-wide expert rows), and a 32-block type -> F16.

``q4_k_m`` / ``q5_k_m`` are llama-quantize's ``_M`` mixtures for a text file: the K-quant everywhere, but Q6_K
for the output head, and for ``attn_v`` and every ``ffn_down`` (dense, experts, shared experts) in the layers
its ``use_more_bits`` rule picks (the first and last eighth, and every third layer between), before the
fallbacks above.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGML_QUANT_SIZES, LlamaFileType
from gguf import quants as gq

from .errors import ConversionError

OUTTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k", "q4_k_m",
            "q5_k_m", "auto")

_BY_NAME = {
    "f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16, "q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_1": QT.Q4_1,
    "q5_0": QT.Q5_0, "q5_1": QT.Q5_1, "q4_k": QT.Q4_K, "q5_k": QT.Q5_K, "q6_k": QT.Q6_K,
}
# llama-quantize's _M mixtures: their main type
_MIXTURES = {"q4_k_m": QT.Q4_K, "q5_k_m": QT.Q5_K}
# what the published files use
AUTO_TEXT = QT.Q8_0
AUTO_VISION = QT.F16

K_QUANTS = (QT.Q4_K, QT.Q5_K, QT.Q6_K)
BLOCK32 = (QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1)
# llama-quantize's type for a row a K-quant cannot hold
K_FALLBACK = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}
_FILE_TYPE = {
    QT.F32: LlamaFileType.ALL_F32, QT.F16: LlamaFileType.MOSTLY_F16, QT.BF16: LlamaFileType.MOSTLY_BF16,
    QT.Q8_0: LlamaFileType.MOSTLY_Q8_0, QT.Q4_0: LlamaFileType.MOSTLY_Q4_0, QT.Q4_1: LlamaFileType.MOSTLY_Q4_1,
    QT.Q5_0: LlamaFileType.MOSTLY_Q5_0, QT.Q5_1: LlamaFileType.MOSTLY_Q5_1,
    QT.Q4_K: LlamaFileType.MOSTLY_Q4_K_S, QT.Q5_K: LlamaFileType.MOSTLY_Q5_K_S, QT.Q6_K: LlamaFileType.MOSTLY_Q6_K,
}
_MIXTURE_FILE_TYPE = {QT.Q4_K: LlamaFileType.MOSTLY_Q4_K_M, QT.Q5_K: LlamaFileType.MOSTLY_Q5_K_M}
# the tensors an _M mixture gives more bits in the layers use_more_bits picks (group 1: the layer)
_MORE_BITS_TENSOR = re.compile(r"^blk\.(\d+)\.(attn_v|ffn_down|ffn_down_exps|ffn_down_shexp)\.weight$")


def use_more_bits(i_layer: int, n_layer: int) -> bool:
    """llama-quantize's choice of layers for more bits in an _M mixture."""
    return i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2


@dataclass(frozen=True)
class OutType:
    """What ``--outtype`` asks for: one main type, and whether the ``_M`` mixture is laid over it."""

    qtype: QT
    mixture: bool = False

    @property
    def name(self) -> str:
        return self.qtype.name + ("_M" if self.mixture else "")

    @property
    def file_type(self) -> int:
        """``general.file_type`` (llama_ftype)."""
        return int(_MIXTURE_FILE_TYPE[self.qtype] if self.mixture else _FILE_TYPE[self.qtype])

    def tensor_type(self, gguf_name: str, n_layer: int, tied_head: bool = False) -> QT:
        """The type this outtype gives a weight matrix of the text file, before fallbacks. tied_head: the file has
        no output.weight, so token_embd is the output head too and gets the head's type (as llama-quantize does)."""
        if not self.mixture:
            return self.qtype
        m = _MORE_BITS_TENSOR.match(gguf_name)
        head = gguf_name == "output.weight" or (tied_head and gguf_name == "token_embd.weight")
        if head or (m and use_more_bits(int(m.group(1)), n_layer)):
            return QT.Q6_K
        return self.qtype


def resolve_outtype(outtype: str, mmproj: bool) -> OutType:
    """What ``--outtype`` names (``auto``: text Q8_0, vision F16)."""
    key = outtype.lower()
    if key == "auto":
        return OutType(AUTO_VISION if mmproj else AUTO_TEXT)
    if key in _MIXTURES:
        if mmproj:
            raise ConversionError(None, f"--outtype {key} is llama-quantize's mixture for a text model; for "
                                        f"--mmproj choose one type (e.g. {key[:-2]})")
        return OutType(_MIXTURES[key], mixture=True)
    if key not in _BY_NAME:
        raise ConversionError(None, f"unknown --outtype {outtype!r} (choose from {', '.join(OUTTYPES)})")
    return OutType(_BY_NAME[key])


def block_size(qtype: QT) -> int:
    return GGML_QUANT_SIZES[qtype][0]


def row_bytes(qtype: QT, n: int) -> int:
    blk, size = GGML_QUANT_SIZES[qtype]
    if n % blk:
        raise ValueError(f"row of {n} is not a multiple of {qtype.name}'s block {blk}")
    return n // blk * size


@dataclass(frozen=True)
class TypeChoice:
    qtype: QT
    note: str = ""  # why it differs from the chosen type ("" if it does not)


def choose_type(chosen: QT, row_len: int, *, force_f32: bool = False, conv_f16_only: bool = False) -> TypeChoice:
    """The type of one tensor.

    ``force_f32``: llama.cpp keeps it in F32 (norms, biases, router, position tables, convs, ...).
    ``conv_f16_only``: a convolution kernel llama.cpp stores F16 when converting to f16, else F32.
    """
    if force_f32:
        return TypeChoice(QT.F32, "" if chosen == QT.F32 else "kept F32")
    if conv_f16_only:
        if chosen in (QT.F32, QT.F16):
            return TypeChoice(chosen)
        return TypeChoice(QT.F32, "conv kernel kept F32")
    t = chosen
    notes = []
    if t in K_QUANTS and row_len % block_size(t):
        notes.append(f"row {row_len} not a multiple of {block_size(t)}: {t.name}->{K_FALLBACK[t].name}")
        t = K_FALLBACK[t]
    if t in BLOCK32 and row_len % block_size(t):
        notes.append(f"row {row_len} not a multiple of {block_size(t)}: {t.name}->F16")
        t = QT.F16
    return TypeChoice(t, "; ".join(notes))


def quantize_rows(rows: np.ndarray, qtype: QT) -> np.ndarray:
    """float32 [n_rows, row_len] -> the GGUF bytes (or F32/F16 values) of those rows."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if qtype == QT.F32:
        return rows
    if qtype == QT.F16:
        return rows.astype(np.float16)
    if qtype == QT.BF16 or qtype in BLOCK32:
        return gq.quantize(rows, qtype)
    if qtype in K_QUANTS:
        from .native_quant import quantize as native_quantize
        return native_quantize(rows, qtype)
    raise ConversionError(None, f"no quantiser for {qtype.name}")


def dequantize(data: np.ndarray, qtype: QT) -> np.ndarray:
    """The inverse, for checks: gguf.quants' independent numpy implementation."""
    return gq.dequantize(data, qtype)
