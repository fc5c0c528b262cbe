"""A small GGUF reader for the tests, independent of the runtime's reader and of gguf.GGUFReader (which takes
seconds over a 100k-token vocabulary): KV pairs and tensors straight from the bytes, as gguf-schema.md lays
them out (version 3, little-endian)."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Literal

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {4: "<u4", 5: "<i4", 6: "<f4"}  # numeric arrays read in one go (token types, scores)


def read_gguf(path: Path, *, strings: bool = True, tensors: Literal["info", "raw", "f32"] = "raw",
              kv_only: bool = False) -> tuple[dict[str, Any], dict[str, tuple]]:
    """(KV pairs, {tensor: (type, shape [out, in, ...])} plus, by ``tensors``, the raw block bytes ("raw") or the
    dequantised float32 values ("f32")). ``strings=False`` reads string arrays as ("strings", count) only."""
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        v = struct.unpack_from(fmt, data, pos)[0]
        pos += struct.calcsize(fmt)
        return v

    def string() -> str:
        nonlocal pos
        n = take("<Q")
        s = data[pos:pos + n].decode("utf-8")
        pos += n
        return s

    def value(t: int):
        nonlocal pos
        if t == 8:
            return string()
        if t == 9:
            st, n = take("<I"), take("<Q")
            if st in _NUMPY:
                arr = np.frombuffer(data, _NUMPY[st], n, pos)
                pos += 4 * n
                return arr.tolist()
            if st == 8 and not strings:
                for _ in range(n):
                    string()
                return ("strings", n)
            return [value(st) for _ in range(n)]
        return take(_SCALAR[t])

    assert data[:4] == b"GGUF" and take("<4s") and take("<I") == 3
    n_tensors, n_kv = take("<Q"), take("<Q")
    kv = {}
    for _ in range(n_kv):
        k = string()
        kv[k] = value(take("<I"))
    if kv_only:
        return kv, {}
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take("<Q") for _ in range(take("<I"))]
        infos.append((name, tuple(reversed(dims)), QT(take("<I")), take("<Q")))
    start = pos + (-pos % kv.get("general.alignment", 32))
    out: dict[str, tuple] = {}
    for name, shape, qt, off in infos:
        if tensors == "info":
            out[name] = (qt, shape)
            continue
        blk, size = gguf.GGML_QUANT_SIZES[qt]
        raw = np.frombuffer(data, np.uint8, int(np.prod(shape)) // blk * size, start + off)
        out[name] = (qt, shape, raw if tensors == "raw" else dequant((qt, shape, raw)))
    return kv, out


def dequant(t: tuple) -> np.ndarray:
    """A ("raw") tensor's float32 values."""
    qt, shape, raw = t
    return gguf.quants.dequantize(raw, qt).reshape(shape).astype(np.float32)
