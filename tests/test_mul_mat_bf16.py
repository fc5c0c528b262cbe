"""TP_PRECISION_BF16: tp_mul_mat rounds F32/F16/BF16 weights and the activations to BF16 and accumulates
in F32 (AMX tiles where the CPU and kernel allow, else AVX512-BF16 vdpbf16ps, else the F32 paths), from
32 tokens on; against torch with the inputs rounded the same way:
    ref = x.bfloat16().float() @ w.bfloat16().float().T   (float64 accumulation)
Tolerance: max-abs error / max-abs of the reference <= 1e-5. Both sides multiply the same BF16 values
exactly (a BF16 product has 16 significant bits and is exact in F32), so the difference is the F32
summation of K products: ~K·2^-24·max|x·w| worst case, ~sqrt(K)·2^-24 typically, far below the BF16
input rounding itself (2^-9 relative per input), which is the stated approximation of this setting.
For F16 weights the reference rounds F16 -> BF16 too (what the kernel does).

Also: the fallback paths (TILEPASS_AMX=0: vdpbf16ps; cpu_path avx2 / scalar: F32) give the same within
the BF16 tolerance against the exact F32 product (2e-2 · ... as in test_mul_mat's BF16 row), and
TP_PRECISION_F32 (the default) is unchanged. Last, the vision encoder at BF16 precision against the
transformers F32 reference: cosine >= 0.999 per image."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from encoder.graph import Context, ThreadPool, to_numpy
from encoder.native import check_error, ffi, lib, new_error
from tp_testing import rel_err  # noqa: E402

F32, F16, BF16 = 0, 1, 30
PRECISION_F32, PRECISION_BF16, PRECISION_INT8 = 0, 1, 2
BEST = int(lib.tp_cpu_best_path())


def _cpu_flag(flag: str) -> bool:
    try:
        return flag in open("/proc/cpuinfo").read().split()
    except OSError:
        return False


# BF16 arithmetic happens on the AVX-512 path of a CPU with AVX512-BF16 (AMX tiles or vdpbf16ps)
HAS_BF16 = BEST == 2 and _cpu_flag("avx512_bf16")


def make_ctx(cpu_path: int = -1, precision: int = PRECISION_BF16) -> Context:
    ctx = Context.__new__(Context)
    params = ffi.new("tp_context_params *", lib.tp_context_default_params())
    params.cpu_path = cpu_path
    params.precision = precision
    out = ffi.new("tp_context **")
    err = new_error()
    check_error(lib.tp_context_create(params, out, err), err, "context")
    ctx.ptr = ffi.gc(out[0], lib.tp_context_free)
    ctx._keep = []
    return ctx


def bf16_round(a: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).bfloat16().float().numpy()


def run(w, x, wtype, pool, cpu_path=-1, precision=PRECISION_BF16, view=None):
    ctx = make_ctx(cpu_path, precision)
    ta = ctx.tensor(w, wtype)
    if view == "transposed":
        tb = lib.tp_transpose(ctx.ptr, ctx.tensor(np.ascontiguousarray(np.swapaxes(x, -1, -2))))
    else:
        tb = ctx.tensor(x)
    if view == "weights_transposed":  # weights as a transposed view: strided weight elements
        ta = lib.tp_transpose(ctx.ptr, ctx.tensor(np.ascontiguousarray(np.swapaxes(w, -1, -2)), wtype))
    out = lib.tp_mul_mat(ctx.ptr, ta, tb)
    if out == ffi.NULL:
        ctx.check()
    ctx.compute([out], pool)
    return to_numpy(out).reshape(x.shape[:-2] + (x.shape[-2], w.shape[-2])), to_numpy(ta).reshape(w.shape)


def bf16_reference(wd, x):
    """wd: the weights as stored (F16 already rounded to F16), rounded to BF16 like the kernel does."""
    w64 = bf16_round(wd).astype(np.float64)
    x64 = bf16_round(x).astype(np.float64)
    if w64.ndim == 4:
        w64 = np.repeat(np.repeat(w64, x.shape[0] // w64.shape[0], axis=0), x.shape[1] // w64.shape[1], axis=1)
    return x64 @ np.swapaxes(w64, -1, -2)


SHAPES = [  # (K, M, N): odd sizes around the 16/32 tile edges, K over several 32-tiles
    (64, 64, 32),
    (67, 45, 33),
    (50, 37, 45),
    (200, 130, 97),
    (768, 70, 64),
    (1056, 33, 40),
    (31, 300, 129),
]


@pytest.mark.parametrize("wtype", [F32, F16, BF16], ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bf16_precision_vs_torch(wtype, shape, pool):
    K, M, N = shape
    rng = np.random.default_rng(K * 7 + M + N)
    w = rng.standard_normal((M, K)).astype(np.float32)
    x = rng.standard_normal((N, K)).astype(np.float32)
    got, wd = run(w, x, wtype, pool)
    ref = bf16_reference(wd, x)
    if HAS_BF16:
        assert rel_err(got, ref) < 1e-5
    else:  # no BF16 arithmetic on this CPU: the F32 result
        assert rel_err(got, x.astype(np.float64) @ wd.astype(np.float64).T) < 1e-5


@pytest.mark.parametrize("view", [None, "transposed", "weights_transposed"], ids=["contig", "x_transposed", "w_transposed"])
def test_broadcast_batches_and_views(view, pool):
    rng = np.random.default_rng(3)
    K, M, N = 131, 37, 45
    w = rng.standard_normal((3, 1, M, K)).astype(np.float32)  # a: [K, M, 1, 3]
    x = rng.standard_normal((3, 2, N, K)).astype(np.float32)  # b: [K, N, 2, 3]
    if view == "weights_transposed":
        w = w[:, :, :, :]
    got, wd = run(w, x, F16, pool, view=view)
    assert got.shape == (3, 2, N, M)
    if HAS_BF16:
        assert rel_err(got, bf16_reference(wd, x)) < 1e-5


@pytest.mark.parametrize("xshape", [(5, 45, 131), (2, 3, 33, 64), (25, 7, 96)], ids=["5x45", "2x3x33", "25x7"])
def test_shared_weights_over_batches(xshape, pool):
    """2-D weights times batched activations: the AMX plan runs one GEMM over all batches' tokens
    (rows of the batches run into each other inside a 32-token block)."""
    rng = np.random.default_rng(sum(xshape))
    K, M = xshape[-1], 70
    w = rng.standard_normal((M, K)).astype(np.float32)
    x = rng.standard_normal(xshape).astype(np.float32)
    got, wd = run(w, x, F32, pool)
    assert got.shape == xshape[:-1] + (M,)
    if HAS_BF16 and xshape[-2] >= 32:
        assert rel_err(got, bf16_reference(wd, x)) < 1e-5
    else:  # under 32 tokens per batch: the F32 path
        assert rel_err(got, x.astype(np.float64) @ wd.astype(np.float64).T) < 1e-5


BF16_VS_F32 = 1.5e-2  # BF16 inputs vs the exact product: ~2^-9 per input, as test_mul_mat's BF16 row


@pytest.mark.parametrize("wtype", [F32, F16, BF16], ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("fallback", ["amx", "no_amx", "avx2", "scalar", "f32_precision"])
def test_fallbacks_agree(wtype, fallback, pool, monkeypatch):
    K, M, N = 200, 70, 97
    rng = np.random.default_rng(11)
    w = rng.standard_normal((M, K)).astype(np.float32)
    x = rng.standard_normal((N, K)).astype(np.float32)
    cpu_path, precision = -1, PRECISION_BF16
    if fallback == "no_amx":
        monkeypatch.setenv("TILEPASS_AMX", "0")
    elif fallback == "avx2":
        cpu_path = min(1, BEST)
    elif fallback == "scalar":
        cpu_path = 0
    elif fallback == "f32_precision":
        precision = PRECISION_F32
    got, wd = run(w, x, wtype, pool, cpu_path=cpu_path, precision=precision)
    exact = x.astype(np.float64) @ wd.astype(np.float64).T
    bf16_arith = HAS_BF16 and fallback in ("amx", "no_amx")
    if bf16_arith:
        assert rel_err(got, bf16_reference(wd, x)) < 1e-5
        assert rel_err(got, exact) < BF16_VS_F32
    elif wtype == BF16 and cpu_path in (-1, 2) and HAS_BF16:
        assert rel_err(got, exact) < BF16_VS_F32  # BF16 weights always use vdpbf16ps (as before)
    else:  # F32 arithmetic: exact within F32 rounding
        assert rel_err(got, exact) < 1e-5


def test_few_tokens_stay_f32(pool):
    """Under 32 tokens (decode, small products) BF16 precision keeps the F32 paths."""
    rng = np.random.default_rng(2)
    K, M, N = 96, 70, 20
    w = rng.standard_normal((M, K)).astype(np.float32)
    x = rng.standard_normal((N, K)).astype(np.float32)
    got, wd = run(w, x, F32, pool)
    assert rel_err(got, x.astype(np.float64) @ wd.astype(np.float64).T) < 1e-5


def test_bad_precision_rejected():
    params = ffi.new("tp_context_params *", lib.tp_context_default_params())
    assert params.precision == PRECISION_F32
    params.precision = 7
    out = ffi.new("tp_context **")
    err = new_error()
    assert lib.tp_context_create(params, out, err) == lib.TP_ERR_INVALID_ARGUMENT
    assert "precision" in ffi.string(err.message).decode()


# ---- the vision encoder at BF16 precision against transformers (F32) ----

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _d64_dims():
    """The tiny model with 64-wide attention heads (SAM and CLIP), so that the AMX attention runs too
    (the default tiny model has heads of 16 and 8: the F32 attention kernels)."""
    from dataclasses import replace

    from reference_models import TINY

    return replace(TINY, sam_hidden=128, sam_heads=2, sam_mlp=256, sam_downsample=(32, 128), clip_hidden=128,
                   clip_heads=2, clip_ffn=256)


@pytest.fixture(scope="module")
def vision_setup(tmp_path_factory):
    from transformers import UnlimitedOcrForConditionalGeneration

    from convert.converter import convert
    from reference_models import get_tiny_ocr

    out = tmp_path_factory.mktemp("vision_bf16")
    setups = {}
    for name, dims, types in (("heads16", None, ("f32", "f16")), ("heads64", _d64_dims(), ("f16",))):
        model_dir = get_tiny_ocr(seed=1) if dims is None else get_tiny_ocr(seed=1, dims=dims)
        ref = UnlimitedOcrForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval().model
        files = {t: convert(model_dir, mmproj=True, outtype=t, outfile=out / f"{name}-{t}.gguf", progress=False).outfile
                 for t in types}
        setups[name] = (ref, files)
    return setups


@pytest.mark.parametrize("model,outtype", [("heads16", "f32"), ("heads16", "f16"), ("heads64", "f16")])
def test_vision_encoder_bf16_precision_cosine(vision_setup, model, outtype, record_property):
    from encoder.vision import VisionEncoder
    from test_vision_reference import cosine, page_image, reference_stages

    ref, files = vision_setup[model]
    enc = VisionEncoder(files[outtype], n_threads=2, precision=PRECISION_BF16)
    enc32 = VisionEncoder(files[outtype], n_threads=2)
    worst = 1.0
    for mode, size in (("base", (900, 1300)), ("gundam", (1240, 1754)), ("tiny", (640, 480))):
        p = enc.prepare(page_image(*size, seed=3), mode)
        (ours,) = enc.encode([p])
        (ours32,) = enc32.encode([p])
        ref_layout = reference_stages(ref, p)["layout"]
        c = cosine(ours, ref_layout)
        print(f"vision {model} {outtype} {mode}: BF16-precision cosine vs transformers F32 {c:.6f} "
              f"(our F32 precision: {cosine(ours32, ref_layout):.6f})")
        worst = min(worst, c)
        assert c >= 0.999, f"{model} {outtype} {mode}: cosine {c:.6f}"
    record_property(f"cosine_bf16_precision_{model}_{outtype}", worst)


@pytest.mark.parametrize("precision", [PRECISION_F32, PRECISION_BF16], ids=["f32", "bf16"])
@pytest.mark.parametrize("view", [None, "transposed"], ids=["contig", "x_transposed"])
def test_one_weight_matrix_many_batches(precision, view, pool):
    """One weight matrix for every batch of b (SAM's windows): the packed GEMM runs it as one GEMM over all
    batches' tokens (weights packed once); each batch's rows must land in its own slice of dst."""
    rng = np.random.default_rng(11)
    K, M, N = 70, 45, 37  # >= 32 tokens (BF16 from 32 on), not a multiple of the 12-token panel
    w = rng.standard_normal((M, K)).astype(np.float32)
    x = rng.standard_normal((2, 3, N, K)).astype(np.float32)
    got, wd = run(w, x, F16, pool, precision=precision, view=view)
    if precision == PRECISION_BF16 and HAS_BF16:
        ref = bf16_reference(wd, x)
    else:
        ref = x.astype(np.float64) @ wd.astype(np.float64).T
    assert rel_err(got, ref) < 1e-5


@pytest.fixture(scope="module")
def int8_setup(tmp_path_factory):
    """The heads16 model also as a Q8_0 file (gguf.quants' quantiser, the converter's)."""
    from convert.converter import convert
    from reference_models import get_tiny_ocr

    out = tmp_path_factory.mktemp("vision_int8")
    model_dir = get_tiny_ocr(seed=1)
    return {t: convert(model_dir, mmproj=True, outtype=t, outfile=out / f"{t}.gguf", progress=False).outfile
            for t in ("f32", "q8_0")}


def test_vision_encoder_int8_precision(vision_setup, int8_setup, record_property):
    """TP_PRECISION_INT8: the matrices of an F32 or F16 file quantised to Q8_0 at load. From the F32 file the
    Q8_0 bytes equal gguf.quants' (the converter's Q8_0 file), so the tokens equal that file's run with BF16
    precision (the same int8 GEMM and BF16 attention) up to float summation order; against transformers F32
    the cosine floor of the quantised files holds (F16 file: quantised from F16-rounded weights)."""
    from encoder.vision import VisionEncoder
    from test_vision_reference import cosine, page_image, reference_stages

    ref, files = vision_setup["heads16"]
    int8_f32 = VisionEncoder(int8_setup["f32"], n_threads=2, precision=PRECISION_INT8)
    q8_file = VisionEncoder(int8_setup["q8_0"], n_threads=2, precision=PRECISION_BF16)
    int8_f16 = VisionEncoder(files["f16"], n_threads=2, precision=PRECISION_INT8)
    assert int8_f32.precision == PRECISION_INT8
    worst = 1.0
    for mode, size in (("base", (900, 1300)), ("gundam", (1240, 1754)), ("tiny", (640, 480))):
        p = int8_f32.prepare(page_image(*size, seed=3), mode)
        (a,) = int8_f32.encode([p])
        (b,) = q8_file.encode([p])
        (c16,) = int8_f16.encode([p])
        assert rel_err(a, b) < 1e-5, mode
        ref_layout = reference_stages(ref, p)["layout"]
        c = min(cosine(a, ref_layout), cosine(c16, ref_layout))
        print(f"vision int8 {mode}: cosine vs transformers F32 {cosine(a, ref_layout):.6f} (F32 file), "
              f"{cosine(c16, ref_layout):.6f} (F16 file)")
        worst = min(worst, c)
        assert c >= 0.999, f"int8 {mode}: cosine {c:.6f}"
    record_property("cosine_int8_precision", worst)


def test_vision_precision_auto(vision_setup):
    """precision -1 (auto, the CLI's default): F32 arithmetic for an F32 file, BF16 products for a file
    already rounded to F16; an explicit precision is kept; anything else is refused."""
    from encoder.native import TilepassError
    from encoder.vision import VisionEncoder

    _, files = vision_setup["heads16"]
    assert VisionEncoder(files["f32"], precision=-1).precision == PRECISION_F32
    assert VisionEncoder(files["f16"], precision=-1).precision == PRECISION_BF16
    assert VisionEncoder(files["f16"]).precision == PRECISION_F32
    assert VisionEncoder(files["f32"], precision=PRECISION_BF16).precision == PRECISION_BF16
    with pytest.raises(TilepassError, match="precision 7"):
        VisionEncoder(files["f32"], precision=7)
