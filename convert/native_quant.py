"""K-quants (Q4_K, Q5_K, Q6_K) through libtilepass' native quantisers (``tp_quantize``).

``gguf.quants`` can dequantise K-quants but not quantise them, so the converter calls the C library
through the cffi binding in ``encoder.native`` (``build/libtilepass.so``). The other types never
need it.
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as QT

from .errors import ConversionError

_lib_cache: tuple | None = None


def _native():
    global _lib_cache
    if _lib_cache is None:
        try:
            from encoder.native import ffi, lib  # type: ignore[import-not-found]
        except Exception as e:  # ImportError, OSError from dlopen, cffi errors
            raise ConversionError(None, f"K-quant types need the native library build/libtilepass.so "
                                        f"(encoder.native): {type(e).__name__}: {e}") from None
        _lib_cache = (ffi, lib)
    return _lib_cache


def available() -> bool:
    """Whether the native quantisers can be loaded."""
    try:
        _native()
        return True
    except ConversionError:
        return False


def row_bytes(qtype: QT | int, n_per_row: int) -> int:
    """Bytes of one row as the C library computes them (0 if n_per_row does not fit the block)."""
    _, lib = _native()
    return int(lib.tp_type_row_bytes(int(qtype), int(n_per_row)))


def quantize(rows: np.ndarray, qtype: QT | int) -> np.ndarray:
    """float32 [n_rows, n_per_row] -> uint8 [n_rows, row_bytes] in GGUF's block layout."""
    ffi, lib = _native()
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    if rows.ndim != 2:
        rows = rows.reshape(-1, rows.shape[-1])
    n_rows, n = rows.shape
    rb = int(lib.tp_type_row_bytes(int(qtype), n))
    if rb == 0:
        raise ConversionError(None, f"{QT(qtype).name}: a row of {n} values does not fit the type's block")
    out = np.empty((n_rows, rb), dtype=np.uint8)
    if n_rows == 0:
        return out
    err = ffi.new("tp_error *")
    written = ffi.new("size_t *")
    src = ffi.cast("const float *", ffi.from_buffer(rows))
    dst = ffi.cast("void *", ffi.from_buffer(out, require_writable=True))
    status = lib.tp_quantize(int(qtype), src, n_rows, n, dst, out.nbytes, written, err)
    if status != 0:
        msg = ffi.string(err.message).decode("utf-8", "replace")
        raise ConversionError(None, f"tp_quantize({QT(qtype).name}) failed: {msg or status}")
    if written[0] != out.nbytes:
        raise ConversionError(None, f"tp_quantize({QT(qtype).name}) wrote {written[0]} bytes, expected {out.nbytes}")
    return out


def dequantize(data: np.ndarray, qtype: QT | int, n_rows: int, n_per_row: int) -> np.ndarray:
    """The native inverse (for tests comparing it with gguf.quants.dequantize)."""
    ffi, lib = _native()
    data = np.ascontiguousarray(data, dtype=np.uint8)
    out = np.empty((n_rows, n_per_row), dtype=np.float32)
    err = ffi.new("tp_error *")
    status = lib.tp_dequantize(int(qtype), ffi.cast("const void *", ffi.from_buffer(data)), data.nbytes,
                               n_rows, n_per_row, ffi.cast("float *", ffi.from_buffer(out, require_writable=True)),
                               err)
    if status != 0:
        msg = ffi.string(err.message).decode("utf-8", "replace")
        raise ConversionError(None, f"tp_dequantize({QT(qtype).name}) failed: {msg or status}")
    return out
