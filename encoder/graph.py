"""A thin Pythonic layer over the C graph API: contexts, tensors from numpy, compute, read back.

Used by tests and small tools; model code lives in C.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .native import TilepassError, check_context, check_error, ffi, lib, new_error

_NP_TO_TP = {np.dtype(np.float32): 0, np.dtype(np.int32): 26}


class ThreadPool:
    """Owns a tp_threadpool."""

    def __init__(self, n_threads: int = 1) -> None:
        params = ffi.new("tp_threadpool_params *", lib.tp_threadpool_default_params())
        params.n_threads = n_threads
        out = ffi.new("tp_threadpool **")
        err = new_error()
        check_error(lib.tp_threadpool_create(params, out, err), err, "thread pool")
        self.ptr = ffi.gc(out[0], lib.tp_threadpool_free)
        self.n_threads = n_threads


class Context:
    """Owns a tp_context; builds tensors and graphs in it."""

    def __init__(self, cpu_path: int = -1) -> None:
        params = ffi.new("tp_context_params *", lib.tp_context_default_params())
        params.cpu_path = cpu_path
        out = ffi.new("tp_context **")
        err = new_error()
        check_error(lib.tp_context_create(params, out, err), err, "context")
        self.ptr = ffi.gc(out[0], lib.tp_context_free)
        self._keep: list[Any] = []  # external buffers that must outlive the context's use

    def check(self) -> None:
        check_context(self.ptr)

    def tensor(self, array: np.ndarray, tp_type: int | None = None) -> Any:
        """A leaf tensor holding `array` (numpy order [..., d1, d0] -> ne [d0, d1, ...]).

        tp_type converts on the way in (F16/BF16/quantised from float32 data)."""
        arr = np.ascontiguousarray(array)
        if arr.ndim < 1 or arr.ndim > 4:
            raise ValueError(f"tensors have 1..4 dims, got {arr.ndim}")
        if tp_type is None:
            if arr.dtype not in _NP_TO_TP:
                arr = arr.astype(np.float32)
            tp_type = _NP_TO_TP[arr.dtype]
        ne = ffi.new("int64_t[4]", list(reversed(arr.shape)) + [1] * (4 - arr.ndim))
        t = lib.tp_new_tensor(self.ptr, tp_type, arr.ndim, ne)
        if t == ffi.NULL:
            self.check()
        if tp_type == 26:
            src_i = np.ascontiguousarray(arr, dtype=np.int32)  # kept alive until the copy is done
            st = lib.tp_tensor_set_i32(t, ffi.cast("int32_t *", ffi.from_buffer(src_i)), arr.size)
        else:
            src = arr.astype(np.float32, copy=False)
            st = lib.tp_tensor_set_f32(t, ffi.cast("float *", ffi.from_buffer(src)), src.size)
        if st != lib.TP_OK:
            check_context(self.ptr, st)
        return t

    def compute(self, outputs: Sequence[Any], pool: ThreadPool) -> "Graph":
        g = Graph(self)
        for t in outputs:
            g.add_output(t)
        g.compute(pool)
        return g


class Graph:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.ptr = lib.tp_graph_new(ctx.ptr)
        if self.ptr == ffi.NULL:
            ctx.check()

    def add_output(self, t: Any) -> None:
        st = lib.tp_graph_add_output(self.ptr, t if t is not None else ffi.NULL)
        if st != lib.TP_OK:
            check_context(self.ctx.ptr, st)

    def compute(self, pool: ThreadPool) -> None:
        st = lib.tp_graph_compute(self.ptr, pool.ptr)
        if st != lib.TP_OK:
            check_context(self.ctx.ptr, st)

    @property
    def peak_bytes(self) -> int:
        return int(lib.tp_graph_peak_bytes(self.ptr))

    @property
    def total_intermediate_bytes(self) -> int:
        return int(lib.tp_graph_total_intermediate_bytes(self.ptr))

    @property
    def n_nodes(self) -> int:
        return int(lib.tp_graph_n_nodes(self.ptr))


def shape(t: Any) -> tuple[int, ...]:
    """numpy-order shape of a tensor (dims beyond n_dims dropped)."""
    n = lib.tp_tensor_n_dims(t)
    return tuple(int(lib.tp_tensor_ne(t, i)) for i in reversed(range(n)))


def to_numpy(t: Any) -> np.ndarray:
    """The tensor's logical contents as float32, numpy order."""
    n = int(lib.tp_tensor_nelements(t))
    out = np.empty(n, dtype=np.float32)
    st = lib.tp_tensor_get_f32(t, ffi.cast("float *", ffi.from_buffer(out)), n)
    if st != lib.TP_OK:
        raise TilepassError(st, ffi.string(lib.tp_status_string(st)).decode())
    return out.reshape(shape(t))
