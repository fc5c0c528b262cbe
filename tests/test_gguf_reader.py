"""The C GGUF reader (native/gguf.c) against gguf-py's GGUFReader, plus hostile files.

(1) llama.cpp's fixture files: every key/value and every tensor equal to GGUFReader's.
(2) files from GGUFWriter with every value type, nested arrays, custom alignment, quantised types.
(3) hostile files (truncated, huge counts/lengths, bad magic/version/types/dims/offsets, duplicates):
    each open fails with TP_ERR_FORMAT/IO and a message naming the file, never crashes.
(4) tp_gguf_load_tensor + tp_tensor_get_f32 equal GGUFReader's data (F32, F16).
numpy-only references, so the file also runs under the ASan/UBSan library (see .notes/COMMON.md).
"""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from encoder.gguf_file import GGUFFile
from encoder.graph import Context, to_numpy
from encoder.native import TilepassError, ffi, lib

FIXTURES = (Path(__file__).resolve().parents[1] / "../shared/fixtures/llamacpp-tiny-v1")
VT = gguf.GGUFValueType
QT = gguf.GGMLQuantizationType


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def fixture_reader(name: str) -> gguf.GGUFReader:
    return gguf.GGUFReader(FIXTURES / name)


def open_status(path: Path | str) -> tuple[int, str]:
    """(status, message) of tp_gguf_open; closes the handle when it opened."""
    out = ffi.new("tp_gguf **")
    err = ffi.new("tp_error *")
    st = lib.tp_gguf_open(str(path).encode(), out, err)
    if st == lib.TP_OK:
        assert out[0] != ffi.NULL
        lib.tp_gguf_close(out[0])
        return st, ""
    assert out[0] == ffi.NULL
    return st, ffi.string(err.message).decode("utf-8", "replace")


def expect_fail(path: Path, needle: str | None = None, status: int | None = None) -> str:
    st, msg = open_status(path)
    assert st in (lib.TP_ERR_FORMAT, lib.TP_ERR_IO), (st, msg)
    if status is not None:
        assert st == status, (st, msg)
    assert msg.startswith(str(path) + ": "), msg
    if needle is not None:
        assert needle in msg, msg
    return msg


def expect_clean(path: Path) -> int:
    """Open either succeeds (then every accessor is exercised) or fails cleanly with a message."""
    st, msg = open_status(path)
    if st == lib.TP_OK:
        with GGUFFile(path) as f:
            for k in f.keys():
                try:
                    f.get(k)
                except TilepassError:
                    pass  # bool / nested arrays, u64 > 2^63-1: not readable through the getters
            for info in f.tensors():
                assert f.find_tensor(info.name) >= 0
                int(f.tensor_bytes(info.name).sum())  # touch every byte
        return st
    assert st in (lib.TP_ERR_FORMAT, lib.TP_ERR_IO), (st, msg)
    assert msg.startswith(str(path) + ": ") and len(msg) > len(str(path)) + 5, msg
    return st


def reader_value(field: gguf.ReaderField):
    return field.contents()


def assert_same_as_reader(path: Path, check_data: bool = True, ref: gguf.GGUFReader | None = None) -> None:
    """Every KV and tensor of `path` read by the C reader equals gguf.GGUFReader's view."""
    ref = ref or gguf.GGUFReader(path)
    fields = [(k, f) for k, f in ref.fields.items() if not k.startswith("GGUF.")]
    with GGUFFile(path) as f:
        assert f.n_kv == len(fields)
        assert f.keys() == [k for k, _ in fields]  # file order
        for i, (key, field) in enumerate(fields):
            assert lib.tp_gguf_find_key(f.ptr, key.encode()) == i
            t = field.types[0]
            assert f.value_type(key) == int(t), key
            if t == VT.ARRAY:
                et, n = f.array_type(key)
                assert et == int(field.types[1]), key
                if field.types[1] != VT.ARRAY:  # GGUFReader flattens nested arrays
                    assert n == len(field.data), key
                if field.types[1] in (VT.BOOL, VT.ARRAY):
                    with pytest.raises(TilepassError):
                        f.get(key)
                    continue
            theirs = reader_value(field)
            if t == VT.UINT64 and theirs > 2**63 - 1:
                with pytest.raises(TilepassError):  # not readable as int64
                    f.get(key)
                continue
            if t == VT.ARRAY and field.types[1] == VT.UINT64 and max(theirs) > 2**63 - 1:
                with pytest.raises(TilepassError):
                    f.get(key)
                continue
            ours = f.get(key)
            if t == VT.ARRAY and field.types[1] in (VT.FLOAT32, VT.FLOAT64):
                with np.errstate(over="ignore"):  # f64 values beyond f32's range read as inf
                    np.testing.assert_array_equal(np.float32(ours), np.asarray(theirs).astype(np.float32), key)
            elif t in (VT.FLOAT32, VT.FLOAT64):
                assert np.float32(ours) == np.float32(theirs), key
            else:
                assert ours == theirs, key
        assert f.n_tensors == len(ref.tensors)
        for i, rt in enumerate(ref.tensors):
            info = f.tensor_info(i)
            assert info.name == rt.name
            assert f.find_tensor(rt.name) == i
            assert info.type == int(rt.tensor_type), rt.name
            assert list(info.ne) == [int(x) for x in rt.shape], rt.name
            assert info.nbytes == rt.n_bytes, rt.name
            if check_data:
                ours_b = f.tensor_bytes(rt.name)
                theirs_b = np.ascontiguousarray(rt.data).view(np.uint8).reshape(-1)
                assert np.array_equal(ours_b, theirs_b), rt.name
                # the data lies at the offset GGUFReader computed
                base = int(ffi.cast("uintptr_t", lib.tp_gguf_tensor_data(f.ptr, 0))) - ref.tensors[0].data_offset
                assert int(ffi.cast("uintptr_t", lib.tp_gguf_tensor_data(f.ptr, i))) - base == rt.data_offset


# ---- a hand-written GGUF builder for precise hostile files ----

def s(b: bytes | str) -> bytes:
    b = b.encode() if isinstance(b, str) else b
    return struct.pack("<Q", len(b)) + b


def kv(key: bytes | str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def u32kv(key: str, v: int) -> bytes:
    return kv(key, VT.UINT32, struct.pack("<I", v))


def tinfo(name: bytes | str, ne: list[int], ttype: int, offset: int) -> bytes:
    return s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", x) for x in ne) + \
        struct.pack("<IQ", ttype, offset)


def build(kvs: list[bytes], tinfos: list[bytes], data: bytes = b"", version: int = 3,
          n_tensors: int | None = None, n_kv: int | None = None, alignment: int = 32,
          magic: bytes = b"GGUF") -> bytes:
    head = magic + struct.pack("<IQQ", version, len(tinfos) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tinfos)
    body += b"\0" * ((-len(body)) % alignment)
    return body + data


def simple_file(**kw) -> bytes:
    """Two F32 tensors 'a' [8] at 0 and 'b' [4, 2] at 32, a few keys."""
    kvs = kw.pop("kvs", [kv("general.architecture", VT.STRING, s("test")), u32kv("x.count", 7)])
    tis = kw.pop("tinfos", [tinfo("a", [8], QT.F32, 0), tinfo("b", [4, 2], QT.F32, 32)])
    data = kw.pop("data", np.arange(16, dtype=np.float32).tobytes())
    return build(kvs, tis, data, **kw)


@pytest.fixture
def tmp(tmp_path):
    counter = iter(range(10**9))

    def write(data: bytes, name: str | None = None) -> Path:
        p = tmp_path / (name or f"f{next(counter)}.gguf")
        p.write_bytes(data)
        return p

    return write


# ------------------------------------------------------------------------------------------------
# (1) llama.cpp's files
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mmproj-f32.gguf", "text-f16.gguf"])
def test_fixture_matches_gguf_reader(name):
    assert_same_as_reader(FIXTURES / name, ref=fixture_reader(name))


def test_fixture_typed_getters():
    with GGUFFile(FIXTURES / "mmproj-f32.gguf") as f:
        g = f.ptr
        assert f.get("general.architecture") == "clip"
        assert f.get("clip.projector_type") == "deepseekocr"
        b = ffi.new("bool *")
        assert lib.tp_gguf_get_bool(g, b"clip.has_vision_encoder", b) == lib.TP_OK and b[0]
        u = ffi.new("uint32_t *")
        assert lib.tp_gguf_get_u32(g, b"clip.vision.projection_dim", u) == lib.TP_OK
        x = ffi.new("float *")
        assert lib.tp_gguf_get_arr_f32(g, b"clip.vision.image_mean", 2, x) == lib.TP_OK and x[0] == 0.5
        assert lib.tp_gguf_get_arr_f32(g, b"clip.vision.image_mean", 3, x) == lib.TP_ERR_INVALID_ARGUMENT
        assert lib.tp_gguf_get_u32(g, b"no.such.key", u) == lib.TP_ERR_INVALID_ARGUMENT
        assert lib.tp_gguf_get_u32(g, b"general.architecture", u) == lib.TP_ERR_TYPE
    with GGUFFile(FIXTURES / "text-f16.gguf") as f:
        toks = f.get("tokenizer.ggml.tokens")
        assert len(toks) == 129280
        data, n = ffi.new("const char **"), ffi.new("size_t *")
        assert lib.tp_gguf_get_arr_str(f.ptr, b"tokenizer.ggml.tokens", 129279, data, n) == lib.TP_OK
        assert bytes(ffi.buffer(data[0], n[0])).decode() == toks[-1]
        assert lib.tp_gguf_get_arr_str(f.ptr, b"tokenizer.ggml.tokens", 129280, data, n) == \
            lib.TP_ERR_INVALID_ARGUMENT
        assert lib.tp_gguf_get_arr_str(f.ptr, b"tokenizer.ggml.token_type", 0, data, n) == lib.TP_ERR_TYPE
        v = ffi.new("int64_t *")
        assert lib.tp_gguf_get_arr_i64(f.ptr, b"tokenizer.ggml.token_type", 0, v) == lib.TP_OK
        assert lib.tp_gguf_get_arr_i64(f.ptr, b"tokenizer.ggml.tokens", 0, v) == lib.TP_ERR_TYPE


# ------------------------------------------------------------------------------------------------
# (4) loading tensors into a context
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mmproj-f32.gguf", "text-f16.gguf"])
def test_load_tensor_values(name):
    path = FIXTURES / name
    ref = fixture_reader(name)
    f = GGUFFile(path)
    ctx = Context()
    seen = set()
    for rt in ref.tensors:
        if rt.n_elements > 2_000_000 and rt.tensor_type in seen:
            continue  # the big embedding tables: one of each type is enough
        seen.add(rt.tensor_type)
        t = f.load_tensor(ctx, rt.name)
        assert ffi.string(lib.tp_tensor_name(t)).decode() == rt.name
        assert lib.tp_tensor_type(t) == int(rt.tensor_type)
        assert [lib.tp_tensor_ne(t, d) for d in range(lib.tp_tensor_n_dims(t))] == [int(x) for x in rt.shape]
        ours = to_numpy(t)
        theirs = np.asarray(rt.data).astype(np.float32).reshape(ours.shape)
        np.testing.assert_array_equal(ours, theirs, rt.name)
    assert {QT.F32} <= seen
    if name == "text-f16.gguf":
        assert QT.F16 in seen
    ctx.check()
    last = f.load_tensor(ctx, ref.tensors[-1].name)
    del f  # the context keeps the file alive: the tensor stays readable
    np.testing.assert_array_equal(to_numpy(last).reshape(-1),
                                  np.asarray(ref.tensors[-1].data).astype(np.float32).reshape(-1))


def test_load_tensor_absent_sets_context_error():
    f = GGUFFile(FIXTURES / "mmproj-f32.gguf")
    ctx = Context()
    t = lib.tp_gguf_load_tensor(f.ptr, ctx.ptr, b"no.such.tensor")
    assert t == ffi.NULL
    assert lib.tp_context_status(ctx.ptr) == lib.TP_ERR_INVALID_ARGUMENT
    msg = ffi.string(lib.tp_context_error(ctx.ptr)).decode()
    assert "no.such.tensor" in msg and "mmproj-f32.gguf" in msg
    with pytest.raises(TilepassError):
        f.load_tensor(ctx, "another.missing")
    assert lib.tp_gguf_load_tensor(ffi.NULL, ctx.ptr, b"x") == ffi.NULL
    assert lib.tp_gguf_load_tensor(f.ptr, ffi.NULL, b"x") == ffi.NULL


def test_accessors_reject_bad_indices():
    f = GGUFFile(FIXTURES / "mmproj-f32.gguf")
    g = f.ptr
    for i in (-1, f.n_kv, 2**62):
        assert lib.tp_gguf_key(g, i) == ffi.NULL
        assert lib.tp_gguf_kv_type(g, i) == -1
        assert lib.tp_gguf_arr_n(g, i) == -1
    for i in (-1, f.n_tensors):
        assert lib.tp_gguf_tensor_name(g, i) == ffi.NULL
        assert lib.tp_gguf_tensor_type(g, i) == -1
        assert lib.tp_gguf_tensor_nbytes(g, i) == 0
        assert lib.tp_gguf_tensor_data(g, i) == ffi.NULL
    assert lib.tp_gguf_tensor_ne(g, 0, 4) == 0 and lib.tp_gguf_tensor_ne(g, 0, -1) == 0
    assert lib.tp_gguf_tensor_ne(g, 0, 3) == 1
    assert lib.tp_gguf_find_tensor(g, b"nope") == -1 and lib.tp_gguf_find_key(g, b"nope") == -1
    assert lib.tp_gguf_arr_type(g, lib.tp_gguf_find_key(g, b"general.architecture")) == -1
    assert lib.tp_gguf_n_kv(ffi.NULL) == 0 and lib.tp_gguf_n_tensors(ffi.NULL) == 0
    lib.tp_gguf_close(ffi.NULL)
    u = ffi.new("uint32_t *")
    assert lib.tp_gguf_get_u32(ffi.NULL, b"x", u) == lib.TP_ERR_INVALID_ARGUMENT
    assert lib.tp_gguf_get_u32(g, ffi.NULL, u) == lib.TP_ERR_INVALID_ARGUMENT


# ------------------------------------------------------------------------------------------------
# (2) files written by GGUFWriter
# ------------------------------------------------------------------------------------------------

def write_all_types(path: Path, alignment: int | None = None) -> dict:
    w = gguf.GGUFWriter(path, "testarch")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    values = {
        "t.u8": (200, VT.UINT8), "t.i8": (-100, VT.INT8), "t.u16": (60000, VT.UINT16),
        "t.i16": (-30000, VT.INT16), "t.u32": (4_000_000_000, VT.UINT32), "t.i32": (-2_000_000_000, VT.INT32),
        "t.f32": (1.5e-6, VT.FLOAT32), "t.bool_t": (True, VT.BOOL), "t.bool_f": (False, VT.BOOL),
        "t.str": ("héllo wörld", VT.STRING), "t.empty_str": ("", VT.STRING),
        "t.u64": (2**63 + 5, VT.UINT64), "t.u64_small": (2**40, VT.UINT64), "t.i64": (-(2**62), VT.INT64),
        "t.f64": (3.141592653589793, VT.FLOAT64),
    }
    for k, (v, t) in values.items():
        w.add_key_value(k, v, t)
    arrays = {
        "a.str": (["a", "", "ünïcode", "x" * 300], VT.STRING),
        "a.u64": ([0, 1, 2**64 - 1, 2**40], VT.UINT64),
        "a.i8": ([-128, 0, 127], VT.INT8),
        "a.f64": ([0.1, -2.5, 1e300], VT.FLOAT64),
        "a.bool": ([True, False, True], VT.BOOL),
        "a.f32": ([0.5, 0.25, -1.0], VT.FLOAT32),
        "a.i32": ([-1, 2**31 - 1], VT.INT32),
        "a.u16": ([65535, 7], VT.UINT16),
        "a.i64": ([-(2**63), 2**63 - 1], VT.INT64),
    }
    for k, (v, t) in arrays.items():
        w.add_key_value(k, v, VT.ARRAY, sub_type=t)
    w.add_key_value("a.nested", [[1, 2], [3, 4, 5]], VT.ARRAY)
    w.add_uint32("t.after_nested", 1234)
    rng = np.random.default_rng(0)
    tensors = {
        "w.f32": rng.standard_normal((3, 5, 7)).astype(np.float32),
        "w.f16": rng.standard_normal((6, 10)).astype(np.float16),
        "w.i32": rng.integers(-1000, 1000, (9,), dtype=np.int32),
        "w.vec": rng.standard_normal((2, 3, 4, 5)).astype(np.float32),
    }
    for k, v in tensors.items():
        w.add_tensor(k, v)
    q = rng.integers(0, 255, (4, 2 * 34), dtype=np.uint8)  # Q8_0 [64, 4]: raw bytes, shape inferred
    w.add_tensor("w.q8", q, raw_dtype=QT.Q8_0)
    bf = rng.integers(0, 2**16, (3, 8), dtype=np.uint16)
    w.add_tensor("w.bf16", bf, raw_shape=(3, 8), raw_dtype=QT.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"values": values, "arrays": arrays, "tensors": tensors}


@pytest.mark.parametrize("alignment", [None, 64, 1])
def test_writer_all_types(tmp_path, alignment):
    path = tmp_path / "all.gguf"
    spec = write_all_types(path, alignment)
    assert_same_as_reader(path)
    f = GGUFFile(path)
    g = f.ptr
    vals = spec["values"]
    for k, (v, t) in vals.items():
        assert f.value_type(k) == int(t)
        if t in (VT.FLOAT32, VT.FLOAT64):
            assert f.get(k) == np.float32(v)
        elif t == VT.UINT64 and v > 2**63 - 1:
            with pytest.raises(TilepassError):
                f.get(k)
        else:
            assert f.get(k) == v, k
    # integer getters: any integer type whose value fits
    i64, u32 = ffi.new("int64_t *"), ffi.new("uint32_t *")
    assert lib.tp_gguf_get_u32(g, b"t.u8", u32) == lib.TP_OK and u32[0] == 200
    assert lib.tp_gguf_get_u32(g, b"t.u32", u32) == lib.TP_OK and u32[0] == 4_000_000_000
    assert lib.tp_gguf_get_u32(g, b"t.i8", u32) == lib.TP_ERR_TYPE  # negative
    assert lib.tp_gguf_get_u32(g, b"t.u64_small", u32) == lib.TP_ERR_TYPE  # too big
    assert lib.tp_gguf_get_i64(g, b"t.u64_small", i64) == lib.TP_OK and i64[0] == 2**40
    assert lib.tp_gguf_get_i64(g, b"t.u64", i64) == lib.TP_ERR_TYPE  # > 2^63-1
    assert lib.tp_gguf_get_i64(g, b"t.i64", i64) == lib.TP_OK and i64[0] == -(2**62)
    assert lib.tp_gguf_get_i64(g, b"t.bool_t", i64) == lib.TP_ERR_TYPE  # bool is not an integer
    assert lib.tp_gguf_get_i64(g, b"t.f32", i64) == lib.TP_ERR_TYPE
    fl, b = ffi.new("float *"), ffi.new("bool *")
    assert lib.tp_gguf_get_f32(g, b"t.u32", fl) == lib.TP_ERR_TYPE
    assert lib.tp_gguf_get_bool(g, b"t.u8", b) == lib.TP_ERR_TYPE
    assert lib.tp_gguf_get_bool(g, b"t.bool_f", b) == lib.TP_OK and not b[0]
    data, n = ffi.new("const char **"), ffi.new("size_t *")
    assert lib.tp_gguf_get_str(g, b"t.u8", data, n) == lib.TP_ERR_TYPE
    assert lib.tp_gguf_get_str(g, b"t.empty_str", data, n) == lib.TP_OK and n[0] == 0
    assert lib.tp_gguf_get_arr_i64(g, b"t.u8", 0, i64) == lib.TP_ERR_TYPE  # not an array
    # arrays
    arrs = spec["arrays"]
    assert f.get("a.str") == arrs["a.str"][0]
    assert f.get("a.i8") == [-128, 0, 127]
    assert f.get("a.i64") == [-(2**63), 2**63 - 1]
    assert f.get("a.u16") == [65535, 7]
    assert f.array_type("a.u64") == (int(VT.UINT64), 4)
    assert lib.tp_gguf_get_arr_i64(g, b"a.u64", 1, i64) == lib.TP_OK and i64[0] == 1
    assert lib.tp_gguf_get_arr_i64(g, b"a.u64", 2, i64) == lib.TP_ERR_TYPE  # 2^64-1 does not fit
    assert lib.tp_gguf_get_arr_i64(g, b"a.u64", 3, i64) == lib.TP_OK and i64[0] == 2**40
    assert lib.tp_gguf_get_arr_i64(g, b"a.u64", -1, i64) == lib.TP_ERR_INVALID_ARGUMENT
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(np.float32(f.get("a.f64")), np.float32([0.1, -2.5, np.inf]))
    assert f.array_type("a.bool") == (int(VT.BOOL), 3)
    assert lib.tp_gguf_get_arr_i64(g, b"a.bool", 0, i64) == lib.TP_ERR_TYPE
    assert lib.tp_gguf_get_arr_f32(g, b"a.i32", 0, fl) == lib.TP_ERR_TYPE
    assert f.array_type("a.nested") == (int(VT.ARRAY), 2)
    assert lib.tp_gguf_get_arr_i64(g, b"a.nested", 0, i64) == lib.TP_ERR_TYPE
    assert f.get("t.after_nested") == 1234  # parsing resumed correctly after the nested array
    # tensors
    for name, arr in spec["tensors"].items():
        info = f.tensor_info(f.find_tensor(name))
        assert info.shape == arr.shape and info.nbytes == arr.nbytes
        assert np.array_equal(f.tensor_bytes(name), arr.view(np.uint8).reshape(-1))
    q8 = f.tensor_info(f.find_tensor("w.q8"))
    assert q8.type == QT.Q8_0 and q8.ne == (64, 4) and q8.nbytes == 4 * 2 * 34
    ctx = Context()
    for name, arr in spec["tensors"].items():
        if arr.dtype == np.int32:
            continue
        np.testing.assert_array_equal(to_numpy(f.load_tensor(ctx, name)), arr.astype(np.float32))
    ro = f.tensor_bytes("w.f32")
    assert not ro.flags.writeable


def test_version_2_and_minimal_files(tmp):
    p = tmp(simple_file(version=2))
    with GGUFFile(p) as f:
        assert f.get("x.count") == 7 and f.n_tensors == 2
        np.testing.assert_array_equal(np.frombuffer(f.tensor_bytes("b").tobytes(), np.float32), np.arange(8, 16))
    # header only: no keys, no tensors, no data section
    with GGUFFile(tmp(build([], []))) as f:
        assert f.n_kv == 0 and f.n_tensors == 0
    # keys but no tensors, not padded to the alignment
    raw = build([u32kv("k", 1)], [], alignment=1)
    with GGUFFile(tmp(raw)) as f:
        assert f.get("k") == 1
    # nested arrays up to the depth limit (3) are accepted
    inner = struct.pack("<IQ", VT.UINT8, 2) + b"\1\2"
    mid = struct.pack("<IQ", VT.ARRAY, 1) + inner
    outer = struct.pack("<IQ", VT.ARRAY, 1) + mid
    with GGUFFile(tmp(build([kv("n3", VT.ARRAY, outer), u32kv("after", 5)], []))) as f:
        assert f.array_type("n3") == (int(VT.ARRAY), 1) and f.get("after") == 5
    # a custom alignment is honoured
    raw = simple_file(kvs=[u32kv("general.alignment", 64)],
                      tinfos=[tinfo("a", [8], QT.F32, 0), tinfo("b", [8], QT.F32, 64)],
                      data=np.arange(8, dtype=np.float32).tobytes() + b"\0" * 32 +
                      np.arange(8, 16, dtype=np.float32).tobytes(), alignment=64)
    with GGUFFile(tmp(raw)) as f:
        np.testing.assert_array_equal(np.frombuffer(f.tensor_bytes("b").tobytes(), np.float32), np.arange(8, 16))
    assert_same_as_reader(tmp(raw))


# ------------------------------------------------------------------------------------------------
# (3) hostile files
# ------------------------------------------------------------------------------------------------

BIG = [2**63, 2**64 - 1, 2**63 - 1, 2**32, 2**32 - 1, 2**31]


def test_hostile_handcrafted(tmp, tmp_path):
    F = lib.TP_ERR_FORMAT
    cases = {
        "bad magic": (simple_file(magic=b"GGUX"), "not a GGUF file"),
        "version 1": (simple_file(version=1), "version 1"),
        "version 99": (simple_file(version=99), "version 99"),
        "version 0": (simple_file(version=0), "version"),
        "big-endian": (simple_file(version=0x03000000), "big-endian"),
        "empty": (b"", "not a GGUF file"),
        "magic only": (b"GGUF", "truncated"),
        "short header": (b"GGUF\3\0\0\0\0\0", "truncated"),
        "unknown value type": (simple_file(kvs=[kv("k", 13, b"\0" * 8)]), "unknown value type 13"),
        "unknown value type max": (simple_file(kvs=[kv("k", 2**32 - 1, b"\0" * 8)]), "unknown value type"),
        "unknown array type": (simple_file(kvs=[kv("k", VT.ARRAY, struct.pack("<IQ", 77, 1) + b"\0" * 8)]),
                               "unknown array element type 77"),
        "nested too deep": (simple_file(kvs=[kv("k", VT.ARRAY, struct.pack("<IQ", VT.ARRAY, 1) * 3 +
                                                  struct.pack("<IQ", VT.ARRAY, 1) + struct.pack("<IQ", 0, 1) + b"\0")]),
                            "nested"),
        "duplicate key": (simple_file(kvs=[u32kv("same", 1), u32kv("other", 2), u32kv("same", 3)]),
                          "duplicate key 'same'"),
        "duplicate tensor": (simple_file(tinfos=[tinfo("a", [8], QT.F32, 0), tinfo("a", [8], QT.F32, 32)]),
                             "duplicate tensor name 'a'"),
        "n_dims 0": (simple_file(tinfos=[tinfo("a", [], QT.F32, 0)]), "0 dimensions"),
        "n_dims 5": (simple_file(tinfos=[tinfo("a", [1, 1, 1, 1, 8], QT.F32, 0)]), "5 dimensions"),
        "ne 0": (simple_file(tinfos=[tinfo("a", [8, 0], QT.F32, 0)]), "ne[1] = 0"),
        "ne 2^63": (simple_file(tinfos=[tinfo("a", [2**63], QT.F32, 0)]), "out of range"),
        "ne 2^64-1": (simple_file(tinfos=[tinfo("a", [2**64 - 1], QT.F32, 0)]), "out of range"),
        "nelements overflow": (simple_file(tinfos=[tinfo("a", [2**32, 2**32], QT.F32, 0)]), "overflow"),
        "nbytes overflow": (simple_file(tinfos=[tinfo("a", [2**62], QT.F32, 0)]), "overflow"),
        "huge tensor": (simple_file(tinfos=[tinfo("a", [2**40, 2**10], QT.F32, 0)]), "runs past the end"),
        "type q2_K (unsupported)": (simple_file(tinfos=[tinfo("a", [256], 10, 0)]), "tensor type 10"),
        "type 99": (simple_file(tinfos=[tinfo("a", [8], 99, 0)]), "tensor type 99"),
        "type 2^32-1": (simple_file(tinfos=[tinfo("a", [8], 2**32 - 1, 0)]), "tensor type"),
        "block multiple": (simple_file(tinfos=[tinfo("a", [16], QT.Q8_0, 0)]), "not a multiple of q8_0's block"),
        "misaligned": (simple_file(tinfos=[tinfo("a", [8], QT.F32, 4)]), "not a multiple of the alignment"),
        "past end": (simple_file(tinfos=[tinfo("a", [8], QT.F32, 0), tinfo("b", [8, 2], QT.F32, 32)]),
                     "tensor 'b' data (offset 32"),
        "offset huge": (simple_file(tinfos=[tinfo("a", [8], QT.F32, 2**64 - 32)]), "runs past the end"),
        "overlap": (simple_file(tinfos=[tinfo("a", [16], QT.F32, 0), tinfo("b", [8], QT.F32, 32)]), "overlap"),
        "alignment type": (simple_file(kvs=[kv("general.alignment", VT.UINT64, struct.pack("<Q", 32))]),
                           "general.alignment has type u64"),
        "alignment 0": (simple_file(kvs=[u32kv("general.alignment", 0)]), "not a power of 2"),
        "alignment 48": (simple_file(kvs=[u32kv("general.alignment", 48)]), "not a power of 2"),
        "key NUL": (simple_file(kvs=[kv(b"a\0b", VT.UINT8, b"\1")]), "NUL"),
        "name too long": (simple_file(tinfos=[tinfo("n" * 64, [8], QT.F32, 0)]), "more than 63"),
        "string past end": (simple_file(kvs=[kv("k", VT.STRING, struct.pack("<Q", 10**6) + b"abc")]),
                            "runs past the end"),
        "scalar past end": (build([s("k") + struct.pack("<I", VT.UINT64) + b"\1\2"], [], alignment=1),
                            "runs past the end"),
    }
    for v in BIG:
        cases[f"n_tensors {v}"] = (simple_file(n_tensors=v), "n_tensors")
        cases[f"n_kv {v}"] = (simple_file(n_kv=v), "n_kv")
        cases[f"key length {v}"] = (simple_file(kvs=[struct.pack("<Q", v) + b"key"]), "runs past the end")
        cases[f"string length {v}"] = (simple_file(kvs=[kv("k", VT.STRING, struct.pack("<Q", v) + b"ab")]),
                                       "runs past the end")
        cases[f"u8 array count {v}"] = (simple_file(kvs=[kv("k", VT.ARRAY, struct.pack("<IQ", VT.UINT8, v) + b"ab")]),
                                        "cannot fit")
        cases[f"str array count {v}"] = (simple_file(kvs=[kv("k", VT.ARRAY, struct.pack("<IQ", VT.STRING, v))]),
                                         "cannot fit")
        cases[f"u64 array count {v}"] = (simple_file(kvs=[kv("k", VT.ARRAY, struct.pack("<IQ", VT.UINT64, v))]),
                                         "cannot fit")
        cases[f"nested count {v}"] = (simple_file(kvs=[kv("k", VT.ARRAY, struct.pack("<IQ", VT.ARRAY, v))]),
                                      "cannot fit")
        cases[f"tensor name length {v}"] = (simple_file(tinfos=[struct.pack("<Q", v) + b"a"]), "runs past the end")
        cases[f"tensor offset {v}"] = (simple_file(tinfos=[tinfo("a", [8], QT.F32, v & ~31)]), "tensor 'a'")
    for name, (raw, needle) in cases.items():
        p = tmp(raw, name.replace(" ", "_").replace("/", "_") + ".gguf")
        expect_fail(p, needle, F)
    # the message names the problem precisely
    msg = expect_fail(tmp(simple_file(tinfos=[tinfo("a", [8], QT.F32, 0), tinfo("b", [8, 2], QT.F32, 32)])))
    assert "64 bytes" in msg and "runs past the end of the file" in msg
    # I/O failures
    expect_fail(tmp_path / "does_not_exist.gguf", "cannot open", lib.TP_ERR_IO)
    d = tmp_path / "a_dir.gguf"
    d.mkdir()
    expect_fail(d, "not a regular file", lib.TP_ERR_IO)
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    expect_fail(fifo, "not a regular file", lib.TP_ERR_IO)  # and does not hang


def test_invalid_arguments():
    err = ffi.new("tp_error *")
    out = ffi.new("tp_gguf **")
    assert lib.tp_gguf_open(ffi.NULL, out, err) == lib.TP_ERR_INVALID_ARGUMENT
    assert lib.tp_gguf_open(str(FIXTURES / "mmproj-f32.gguf").encode(), ffi.NULL, err) == \
        lib.TP_ERR_INVALID_ARGUMENT
    assert lib.tp_gguf_open(b"/nonexistent/x.gguf", out, ffi.NULL) == lib.TP_ERR_IO  # err optional


@pytest.fixture(scope="module")
def writer_file(tmp_path_factory) -> tuple[bytes, gguf.GGUFReader, Path]:
    p = tmp_path_factory.mktemp("w") / "base.gguf"
    write_all_types(p)
    return p.read_bytes(), gguf.GGUFReader(p), p


def test_truncations(tmp, writer_file):
    raw, ref, _ = writer_file
    header_end = min(t.data_offset for t in ref.tensors)
    data_end = max(t.data_offset + t.n_bytes for t in ref.tensors)
    cuts = sorted(set(range(0, header_end, max(1, header_end // 100))) |
                  set(range(header_end - 40, header_end + 1)) |
                  {header_end + 1, header_end + 100, data_end - 1, (header_end + data_end) // 2})
    for cut in cuts:
        expect_fail(tmp(raw[:cut], "cut.gguf"))
    # the fixture, too
    fx = (FIXTURES / "mmproj-f32.gguf").read_bytes()
    ref_fx = fixture_reader("mmproj-f32.gguf")
    h = min(t.data_offset for t in ref_fx.tensors)
    for cut in list(range(0, h, max(1, h // 100))) + [h + 5, len(fx) // 2, len(fx) - 100]:
        expect_fail(tmp(fx[:cut], "cutfx.gguf"))


def field_parts(field) -> list[tuple[int, np.ndarray]]:
    """(file offset, array) of each part of a GGUFReader field, in file order."""
    out, off = [], field.offset
    for part in field.parts:
        out.append((off, part))
        off += part.nbytes
    return out


def test_overwrite_every_count_and_length(tmp, writer_file):
    """Overwrite each u32/u64 of the header (KV and tensor-info parts) with hostile values: every open
    fails cleanly or succeeds; lengths, counts, n_dims, ne and tensor types must fail."""
    raw, ref, _ = writer_file
    fields = [f for k, f in ref.fields.items()] + [t.field for t in ref.tensors]
    n_tried = 0
    for field in fields:
        parts = field_parts(field)
        for pi, (off, part) in enumerate(parts):
            if part.dtype not in (np.uint32, np.uint64) or part.size != 1:
                continue
            width = part.dtype.itemsize
            values = [2**64 - 1, 2**63, 2**62, 2**32 + 1] if width == 8 else [2**32 - 1, 2**31, 13, 5, 0]
            for v in values:
                mutated = bytearray(raw)
                mutated[off:off + width] = (v & (2**(8 * width) - 1)).to_bytes(width, "little")
                p = tmp(bytes(mutated), "mut.gguf")
                st = expect_clean(p)
                n_tried += 1
                is_len = width == 8 and pi + 1 < len(parts) and parts[pi + 1][1].dtype == np.uint8 and \
                    parts[pi + 1][1].size == int(part[0])  # a string length
                if is_len and v >= 2**32:
                    assert st != lib.TP_OK, (field.name, pi, v)
    # header counts
    for off in (8, 16):
        for v in BIG:
            mutated = bytearray(raw)
            mutated[off:off + 8] = v.to_bytes(8, "little")
            expect_fail(tmp(bytes(mutated), "cnt.gguf"))
            n_tried += 1
    assert n_tried > 200


def test_random_mutations(tmp, writer_file):
    raw, ref, _ = writer_file
    header_end = min(t.data_offset for t in ref.tensors)
    rng = np.random.default_rng(1234)
    for _ in range(400):
        mutated = bytearray(raw)
        for _ in range(int(rng.integers(1, 5))):
            pos = int(rng.integers(0, header_end))
            kind = int(rng.integers(0, 3))
            if kind == 0:
                mutated[pos] = int(rng.integers(0, 256))
            elif kind == 1:
                mutated[pos] ^= 1 << int(rng.integers(0, 8))
            else:
                vals = [0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1]
                v = vals[int(rng.integers(0, len(vals)))]
                mutated[pos:pos + 8] = v.to_bytes(8, "little")
                del mutated[len(raw):]
        expect_clean(tmp(bytes(mutated), "rnd.gguf"))
