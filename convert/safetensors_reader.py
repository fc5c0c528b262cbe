"""Lazy, validated reading of (sharded) safetensors checkpoints without torch.

Only the JSON headers are read up front; each header is checked against the file size (a truncated
file is reported before any conversion work starts). Tensor data is read with ``os.pread`` in row
chunks, so converting a multi-GB checkpoint keeps only a few MB of it in memory at a time (no mmap:
touched mapped pages would count towards the process's resident size).
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import ConversionError

# safetensors dtype -> (numpy dtype of the stored words, item size)
_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # decoded to f32 by shifting into the high half
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),
}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
_MAX_HEADER = 100 * 1024 * 1024


def bf16_to_f32(words: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) to float32, exactly."""
    return (words.astype(np.uint32) << 16).view(np.float32)


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lives: file, dtype, shape, absolute byte offset and size."""

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def n_rows(self) -> int:
        """Rows of the innermost dimension (1 for a 1-D tensor or a scalar)."""
        return self.n_elements // self.shape[-1] if self.shape else 1

    @property
    def row_len(self) -> int:
        return self.shape[-1] if self.shape else 1


def read_header(path: Path) -> dict[str, TensorRef]:
    """Parse and validate one safetensors file's header."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ConversionError(path, f"truncated safetensors file ({size} bytes, no header)")
            (hlen,) = struct.unpack("<Q", head)
            if hlen > _MAX_HEADER or 8 + hlen > size:
                raise ConversionError(
                    path, f"truncated or corrupt safetensors file (header of {hlen} bytes, file of {size})")
            raw = f.read(hlen)
    except FileNotFoundError:
        raise ConversionError(path, "file not found") from None
    except IsADirectoryError:
        raise ConversionError(path, "is a directory, not a safetensors file") from None
    except PermissionError:
        raise ConversionError(path, "cannot read file: permission denied") from None
    except OSError as e:
        raise ConversionError(path, f"cannot read file: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(path, f"corrupt safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise ConversionError(path, "corrupt safetensors header: not a JSON object")
    base = 8 + hlen
    data_size = size - base
    out: dict[str, TensorRef] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            shape = tuple(int(d) for d in info["shape"])
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ConversionError(path, f"corrupt safetensors header entry for tensor {name!r}") from None
        if dtype not in _DTYPES:
            raise ConversionError(path, f"tensor {name!r} has unsupported dtype {dtype}")
        if any(d < 0 for d in shape):
            raise ConversionError(path, f"tensor {name!r} has a negative dimension {list(shape)}")
        n = 1
        for d in shape:
            n *= d
        want = n * _DTYPES[dtype].itemsize
        if start < 0 or end < start or end - start != want:
            raise ConversionError(
                path, f"tensor {name!r}: data offsets [{start}, {end}) do not fit dtype {dtype} shape {list(shape)}")
        if end > data_size:
            raise ConversionError(
                path, f"truncated safetensors file: tensor {name!r} ends at byte {base + end}, file has {size}")
        out[name] = TensorRef(name, path, dtype, shape, base + start, want)
    return out


class Checkpoint:
    """All tensors of a checkpoint directory: ``model.safetensors.index.json`` or single/multiple shards."""

    def __init__(self, model_dir: Path):
        self.dir = Path(model_dir)
        self.tensors: dict[str, TensorRef] = {}
        self.files: list[Path] = []
        index = self.dir / "model.safetensors.index.json"
        if index.exists():
            try:
                data = json.loads(index.read_text(encoding="utf-8"))
                weight_map = data["weight_map"]
                if not isinstance(weight_map, dict):
                    raise TypeError
            except OSError as e:
                raise ConversionError(index, f"cannot read file: {e.strerror or e}") from None
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ConversionError(index, f"invalid JSON: {e}") from None
            except (KeyError, TypeError):
                raise ConversionError(index, "no \"weight_map\" object") from None
            shards = sorted(set(weight_map.values()))
            for shard in shards:
                p = self.dir / shard
                if not p.exists():
                    raise ConversionError(p, "shard listed in model.safetensors.index.json is missing")
            headers = {shard: read_header(self.dir / shard) for shard in shards}
            for name, shard in weight_map.items():
                ref = headers[shard].get(name)
                if ref is None:
                    raise ConversionError(self.dir / shard, f"tensor {name!r} listed in the index is not in this shard")
                self.tensors[name] = ref
            self.files = [self.dir / s for s in shards]
        else:
            files = sorted(self.dir.glob("*.safetensors"))
            if not files:
                raise ConversionError(self.dir, "no model.safetensors.index.json and no *.safetensors files")
            for p in files:
                for name, ref in read_header(p).items():
                    if name in self.tensors:
                        raise ConversionError(p, f"tensor {name!r} also appears in {self.tensors[name].path.name}")
                    self.tensors[name] = ref
            self.files = files
        self.total_bytes = sum(r.nbytes for r in self.tensors.values())

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __getitem__(self, name: str) -> TensorRef:
        return self.tensors[name]

    def names(self) -> list[str]:
        return list(self.tensors)


def _pread_exact(fd: int, n: int, offset: int, path: Path) -> np.ndarray:
    """n bytes at offset, read straight into one numpy buffer (no intermediate copies)."""
    buf = np.empty(n, dtype=np.uint8)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.preadv(fd, [view[got:]], offset + got)
        if k <= 0:
            raise ConversionError(path, f"truncated safetensors file: unexpected end of data at byte {offset + got}")
        got += k
    return buf


def iter_rows_f32(ref: TensorRef, max_chunk_bytes: int = 4 << 20) -> Iterator[np.ndarray]:
    """Yield the tensor as float32 arrays of shape [rows, row_len], a few MB at a time, in order."""
    if ref.dtype not in _FLOAT_DTYPES:
        raise ConversionError(ref.path, f"tensor {ref.name!r} has non-float dtype {ref.dtype}")
    item = _DTYPES[ref.dtype].itemsize
    row_len = ref.row_len
    n_rows = ref.n_rows
    if ref.n_elements == 0:
        return
    rows_per_chunk = max(1, max_chunk_bytes // max(1, row_len * item))
    try:
        fd = os.open(ref.path, os.O_RDONLY)
    except OSError as e:
        raise ConversionError(ref.path, f"cannot read file: {e.strerror or e}") from None
    try:
        for r0 in range(0, n_rows, rows_per_chunk):
            r1 = min(n_rows, r0 + rows_per_chunk)
            raw = _pread_exact(fd, (r1 - r0) * row_len * item, ref.offset + r0 * row_len * item, ref.path)
            words = raw.view(_DTYPES[ref.dtype]).reshape(r1 - r0, row_len)
            if ref.dtype == "BF16":
                yield bf16_to_f32(words)
            else:
                yield words.astype(np.float32)
    finally:
        os.close(fd)


def read_f32(ref: TensorRef) -> np.ndarray:
    """The whole tensor as float32 in its own shape (for small tensors and tests)."""
    parts = list(iter_rows_f32(ref))
    if not parts:
        return np.zeros(ref.shape, np.float32)
    return np.concatenate(parts, axis=0).reshape(ref.shape)
