/* tp_act_rows.h - the row loops of gelu (erf and tanh forms), quick_gelu and silu, shared by the portable build
 * (ops_elementwise.c) and the per-ISA files (act_avx2.c, act_avx512.c), which compile the same code
 * with wider vectors and fused multiply-adds. A file including it defines TP_ACT_MADD(a, b, c)
 * (a·b + c) first: plain arithmetic in portable code (fmaf would be a libm call there), fmaf where
 * the file is built with -mfma. Internal. */
#ifndef TP_ACT_ROWS_H
#define TP_ACT_ROWS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef TP_ACT_MADD
#error "define TP_ACT_MADD before including tp_act_rows.h"
#endif

/* ---- gelu (erf), quick_gelu, silu: branch-free loops over a row that the compiler vectorises
 * (no libm call per element). Both rest on exp of a non-positive argument and on
 * erfc(z) = t·exp(-z² + P(t)), t = 1/(1 + z/2) (Numerical Recipes' Chebyshev fit, fractional
 * error < 1.2e-7 for all z >= 0), so Φ(x) = erfc(-x/√2)/2 keeps its relative accuracy in the far
 * negative tail and 1 - erfc/2 its absolute accuracy on the positive side. ---- */

/* The selects below work on the bits (masks, integer compares), not on float compares: under the
 * default -ftrapping-math a float compare may not be if-converted, and the loops would stay scalar. */
static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
/* mask ? a : b, mask all ones or all zeros */
static inline float sel(uint32_t mask, float a, float b) { return u2f((f2u(a) & mask) | (f2u(b) & ~mask)); }
static inline uint32_t sign_mask(float x) { return 0u - (f2u(x) >> 31); }

/* exp(x) for x <= 0; x < -87 (and -inf, negative NaN) gives 0. Cephes-style range reduction and a
 * degree-6 polynomial (the scheme of ops_norm.c's softmax exp), relative error ~1e-7. */
static inline float exp_nonpos(float x) {
    uint32_t under = 0u - (uint32_t)(f2u(x) > 0xC2AE0000u); /* -87.0f: for x <= 0 larger bits = more negative */
    float xc = sel(under, -87.0f, x);
    float t = TP_ACT_MADD(xc, 1.44269504088896341f, 12582912.0f);
    float fn = t - 12582912.0f;
    float r = TP_ACT_MADD(fn, -0.693359375f, xc);
    r = TP_ACT_MADD(fn, 2.12194440e-4f, r);
    float r2 = r * r;
    float poly = 1.9875691500e-4f;
    poly = TP_ACT_MADD(poly, r, 1.3981999507e-3f);
    poly = TP_ACT_MADD(poly, r, 8.3334519073e-3f);
    poly = TP_ACT_MADD(poly, r, 4.1665795894e-2f);
    poly = TP_ACT_MADD(poly, r, 1.6666665459e-1f);
    poly = TP_ACT_MADD(poly, r, 5.0000001201e-1f);
    float e = TP_ACT_MADD(poly, r2, r) + 1.0f;
    /* 2^fn from t's bits: t = 1.5·2^23 + fn holds fn in its low mantissa bits (no float->int cast) */
    float scale = u2f((f2u(t) - 0x4B400000u + 127u) << 23);
    return u2f(f2u(e * scale) & ~under);
}

/* x·σ(v) for a v of x's sign, with exp taken of -|v| only (no overflow): e/(1 + e) for v < 0, 1/(1 + e)
 * otherwise, so the negative tail keeps its relative accuracy (no 1 - σ cancellation). */
static inline float x_sigmoid(float x, float v) {
    float e = exp_nonpos(-fabsf(v));
    return x * (sel(sign_mask(v), e, 1.0f) / (1.0f + e));
}

/* x·σ(k·x): quick_gelu (k = 1.702) and silu (k = 1). */
static inline void tp_act_sigmoid_mul_row(float *y, int64_t n, float k) {
    for (int64_t i = 0; i < n; i++) y[i] = x_sigmoid(y[i], k * y[i]);
}

/* gelu with the tanh approximation, 0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³), computed as the
 * identical x·σ(2u): no tanh call, and no cancellation of 1 + tanh(u) in the negative tail. */
static inline void tp_act_gelu_tanh_row(float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float x = y[i];
        y[i] = x_sigmoid(x, 1.5957691216057308f * TP_ACT_MADD(0.044715f * x * x, x, x));
    }
}

static inline void tp_act_gelu_row(float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float x = y[i];
        float z = fabsf(x) * 0.70710678118654752f;
        float t = 1.0f / (1.0f + 0.5f * z);
        float q = 0.17087277f;
        q = TP_ACT_MADD(q, t, -0.82215223f);
        q = TP_ACT_MADD(q, t, 1.48851587f);
        q = TP_ACT_MADD(q, t, -1.13520398f);
        q = TP_ACT_MADD(q, t, 0.27886807f);
        q = TP_ACT_MADD(q, t, -0.18628806f);
        q = TP_ACT_MADD(q, t, 0.09678418f);
        q = TP_ACT_MADD(q, t, 0.37409196f);
        q = TP_ACT_MADD(q, t, 1.00002368f);
        q = TP_ACT_MADD(q, t, -1.26551223f);
        float half_erfc = 0.5f * t * exp_nonpos(q - 0.5f * x * x); /* Φ(-|x|); z² = x²/2, one rounding */
        y[i] = x * sel(sign_mask(x), half_erfc, 1.0f - half_erfc);
    }
}

/* The per-ISA copies (called only where p->path allows). */
void tp_act_gelu_row_avx512(float *y, int64_t n);
void tp_act_gelu_tanh_row_avx512(float *y, int64_t n);
void tp_act_sigmoid_mul_row_avx512(float *y, int64_t n, float k);
void tp_act_gelu_row_avx2(float *y, int64_t n);
void tp_act_gelu_tanh_row_avx2(float *y, int64_t n);
void tp_act_sigmoid_mul_row_avx2(float *y, int64_t n, float k);

#endif
