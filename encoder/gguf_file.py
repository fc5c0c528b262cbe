"""A small Pythonic layer over the C GGUF reader (tp_gguf_*): open a file, read its keys and
values, list its tensors, look at their bytes, and load them as leaf tensors of a Context.

    with GGUFFile("model.gguf") as f:
        arch = f.get("general.architecture")
        for info in f.tensors():
            print(info.name, info.type, info.ne, info.nbytes)
        t = f.load_tensor(ctx, "v.class_embd")

Values come back as Python objects: integers as int, floats as float (f32; f64 values are read
through the f32 getter, the only float getter the C API has), bools as bool, strings as str
(invalid UTF-8 replaced), arrays as lists. Arrays of bools, of arrays, and u64 values above 2^63-1
cannot be read through the C getters and raise TilepassError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .native import TilepassError, check_context, check_error, ffi, lib, new_error

# tp_gguf_value_type
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
INT_TYPES = frozenset({UINT8, INT8, UINT16, INT16, UINT32, INT32, UINT64, INT64})
FLOAT_TYPES = frozenset({FLOAT32, FLOAT64})


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: int              # tp_type / GGML type id
    ne: tuple[int, ...]    # sizes, innermost first (n_dims entries)
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy order (reverse of ne)."""
        return tuple(reversed(self.ne))


def _enc(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _dec(raw: bytes) -> str:
    """Keys and tensor names: bytes that are not UTF-8 survive a round trip (surrogateescape)."""
    return raw.decode("utf-8", "surrogateescape")


def _status_error(status: int, what: str) -> TilepassError:
    return TilepassError(status, f"{what}: {ffi.string(lib.tp_status_string(status)).decode()}")


class GGUFFile:
    """Owns a tp_gguf (the memory-mapped file). Keep it alive while tensors loaded from it are used
    (load_tensor ties it to the Context for you)."""

    def __init__(self, path: str | bytes | os.PathLike) -> None:
        self.path = os.fsdecode(path)
        out = ffi.new("tp_gguf **")
        err = new_error()
        self.ptr = None
        check_error(lib.tp_gguf_open(os.fsencode(self.path), out, err), err)
        self.ptr = ffi.gc(out[0], lib.tp_gguf_close)

    def close(self) -> None:
        if self.ptr is not None:
            ffi.release(self.ptr)
            self.ptr = None

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- keys and values ----
    @property
    def n_kv(self) -> int:
        return int(lib.tp_gguf_n_kv(self.ptr))

    def keys(self) -> list[str]:
        return [_dec(ffi.string(lib.tp_gguf_key(self.ptr, i))) for i in range(self.n_kv)]

    def __contains__(self, key: str) -> bool:
        return lib.tp_gguf_find_key(self.ptr, _enc(key)) >= 0

    def _index(self, key: str) -> int:
        i = int(lib.tp_gguf_find_key(self.ptr, _enc(key)))
        if i < 0:
            raise KeyError(key)
        return i

    def value_type(self, key: str) -> int:
        return int(lib.tp_gguf_kv_type(self.ptr, self._index(key)))

    def array_type(self, key: str) -> tuple[int, int]:
        """(element type, count) of an array value."""
        i = self._index(key)
        return int(lib.tp_gguf_arr_type(self.ptr, i)), int(lib.tp_gguf_arr_n(self.ptr, i))

    def get_bytes(self, key: str) -> bytes:
        """A string value's raw bytes."""
        data, n = ffi.new("const char **"), ffi.new("size_t *")
        st = lib.tp_gguf_get_str(self.ptr, _enc(key), data, n)
        if st != lib.TP_OK:
            raise _status_error(st, key)
        return bytes(ffi.buffer(data[0], n[0]))

    def get(self, key: str, default: Any = KeyError) -> Any:
        if key not in self:
            if default is KeyError:
                raise KeyError(key)
            return default
        t = self.value_type(key)
        k = _enc(key)
        if t in INT_TYPES:
            out = ffi.new("int64_t *")
            st = lib.tp_gguf_get_i64(self.ptr, k, out)
        elif t in FLOAT_TYPES:
            out = ffi.new("float *")
            st = lib.tp_gguf_get_f32(self.ptr, k, out)
        elif t == BOOL:
            out = ffi.new("bool *")
            st = lib.tp_gguf_get_bool(self.ptr, k, out)
        elif t == STRING:
            return self.get_bytes(key).decode("utf-8", "replace")
        elif t == ARRAY:
            return self.get_array(key)
        else:  # pragma: no cover - the reader rejects unknown types at open
            raise TilepassError(lib.TP_ERR_TYPE, f"{key}: unknown value type {t}")
        if st != lib.TP_OK:
            raise _status_error(st, key)
        return out[0] if t != BOOL else bool(out[0])

    def get_array(self, key: str) -> list[Any]:
        et, n = self.array_type(key)
        k = _enc(key)
        if et in INT_TYPES:
            out, fn = ffi.new("int64_t *"), lib.tp_gguf_get_arr_i64
        elif et in FLOAT_TYPES:
            out, fn = ffi.new("float *"), lib.tp_gguf_get_arr_f32
        elif et == STRING:
            data, ln = ffi.new("const char **"), ffi.new("size_t *")
            res = []
            for j in range(n):
                st = lib.tp_gguf_get_arr_str(self.ptr, k, j, data, ln)
                if st != lib.TP_OK:
                    raise _status_error(st, f"{key}[{j}]")
                res.append(bytes(ffi.buffer(data[0], ln[0])).decode("utf-8", "replace"))
            return res
        else:
            raise TilepassError(lib.TP_ERR_TYPE, f"{key}: arrays of type {et} cannot be read")
        res = []
        for j in range(n):
            st = fn(self.ptr, k, j, out)
            if st != lib.TP_OK:
                raise _status_error(st, f"{key}[{j}]")
            res.append(out[0])
        return res

    # ---- tensors ----
    @property
    def n_tensors(self) -> int:
        return int(lib.tp_gguf_n_tensors(self.ptr))

    def tensor_info(self, i: int) -> TensorInfo:
        if not 0 <= i < self.n_tensors:
            raise IndexError(i)
        n = lib.tp_gguf_tensor_n_dims(self.ptr, i)
        return TensorInfo(
            name=_dec(ffi.string(lib.tp_gguf_tensor_name(self.ptr, i))),
            type=int(lib.tp_gguf_tensor_type(self.ptr, i)),
            ne=tuple(int(lib.tp_gguf_tensor_ne(self.ptr, i, d)) for d in range(n)),
            nbytes=int(lib.tp_gguf_tensor_nbytes(self.ptr, i)),
        )

    def tensors(self) -> Iterator[TensorInfo]:
        for i in range(self.n_tensors):
            yield self.tensor_info(i)

    def find_tensor(self, name: str) -> int:
        return int(lib.tp_gguf_find_tensor(self.ptr, _enc(name)))

    def tensor_bytes(self, name: str) -> np.ndarray:
        """A read-only uint8 view of a tensor's bytes in the mapping (valid while this file is open)."""
        i = self.find_tensor(name)
        if i < 0:
            raise KeyError(name)
        n = int(lib.tp_gguf_tensor_nbytes(self.ptr, i))
        buf = ffi.buffer(ffi.cast("char *", lib.tp_gguf_tensor_data(self.ptr, i)), n)
        arr = np.frombuffer(buf, dtype=np.uint8)
        arr.flags.writeable = False
        return arr

    def load_tensor(self, ctx: Any, name: str) -> Any:
        """A leaf tensor of `ctx` (an encoder.graph.Context) over the mapped data; keeps this file
        alive as long as the context."""
        t = lib.tp_gguf_load_tensor(self.ptr, ctx.ptr, _enc(name))
        if t == ffi.NULL:
            check_context(ctx.ptr)
        keep = getattr(ctx, "_keep", None)
        if keep is not None and not any(k is self for k in keep):
            keep.append(self)
        return t
