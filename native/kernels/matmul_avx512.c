/* matmul_avx512.c - AVX-512 kernels of tp_mul_mat for float weights: the weight pack, the packed F32
 * GEMM micro-kernels (32×12, 32×6), the BF16 one (vdpbf16ps, only called where CPUID reports
 * AVX512-BF16) and the row dot products of decode. The quantised kernels are in qmatmul_avx512.c.
 * Compiled with the AVX-512 flags; called only on that path. */
#include "tp_avx512.h"
#include "tp_matmul.h"


/* ---------------------------------------------------------------------------------------------
 * Weight packing: TP_MM_MR rows into the micro-kernels' k-major panels, 16×16 blocks transposed in
 * registers. A plain copy writes one float per 128-byte panel row, so every store of a 64 KiB panel
 * misses L1 (~23 % of an F32 CLIP GEMM); here each store is a whole half-row of the panel.
 * ------------------------------------------------------------------------------------------- */

/* 16 panel elements of one row from element k on (n of them inside the row, the rest zero): floats,
 * or (bf16) 16 pairs of BF16 values, rounded to nearest even as tp_f32_to_bf16 does */
static inline __m512 pack_load(tp_type type, const char *row, int64_t k, int64_t n, bool bf16) {
    if (!row || n <= 0) return _mm512_setzero_ps();
    if (!bf16) {
        if (type == TP_TYPE_F32) return _mm512_maskz_loadu_ps(mask16((int)TP_MIN(n, 16)), row + k * 4);
        const __m256i h = _mm256_maskz_loadu_epi16(mask16((int)TP_MIN(n, 16)), row + k * 2);
        if (type == TP_TYPE_F16) return _mm512_cvtph_ps(h);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    if (type == TP_TYPE_BF16) return _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(mask32(n), row + k * 2));
    __m512 lo, hi;
    if (type == TP_TYPE_F32) {
        lo = _mm512_maskz_loadu_ps(mask16((int)TP_MIN(n, 16)), row + k * 4);
        hi = _mm512_maskz_loadu_ps(mask16((int)TP_MIN(n - 16, 16)), row + k * 4 + 64);
    } else {
        const __m512i h = _mm512_maskz_loadu_epi16(mask32(n), row + k * 2);
        lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
        hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
    }
    return _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

/* Up to 16 rows (rows[i], i < nrows; NULL: a zero row) from element k0 on, `units` panel elements each (floats,
 * or bf16 pairs), transposed into P[u][i] (panel rows ld floats apart; columns >= nrows untouched) */
static void pack_rows16(tp_type type, const char *const *rows, int nrows, int64_t K, int64_t k0, int64_t units,
                        bool bf16, float *P, int ld) {
    const int per = bf16 ? 2 : 1; /* row elements per panel element */
    const __mmask16 cols = mask16(nrows);
    for (int64_t u0 = 0; u0 < units; u0 += 16) {
        const int64_t k = k0 + u0 * per;
        const int nu = (int)TP_MIN(16, units - u0);
        __m512 r[16];
        for (int i = 0; i < 16; i++) r[i] = i < nrows ? pack_load(type, rows[i], k, K - k, bf16) : _mm512_setzero_ps();
        transpose16(r);
        for (int j = 0; j < nu; j++) _mm512_mask_storeu_ps(P + (u0 + j) * ld, cols, r[j]);
    }
}

void tp_mm_pack_panel_avx512(tp_type type, const char *const rows[TP_MM_MR], int64_t K, int64_t k0, int64_t kc,
                             bool bf16, void *panel) {
    const int64_t units = bf16 ? (kc + 1) / 2 : kc;
    for (int h = 0; h < TP_MM_MR / 16; h++)
        pack_rows16(type, rows + 16 * h, 16, K, k0, units, bf16, (float *)panel + 16 * h, TP_MM_MR);
}

void tp_mm_pack_tokens_avx512(const char *const rows[TP_MM_NR], int64_t K, int64_t Kp, bool bf16, void *panel) {
    pack_rows16(TP_TYPE_F32, rows, TP_MM_NR, K, 0, bf16 ? Kp / 2 : K, bf16, panel, TP_MM_NR);
}

/* ---------------------------------------------------------------------------------------------
 * GEMM micro-kernels
 * ------------------------------------------------------------------------------------------- */

#define MM_STORE_ROW(j)                                                                            \
    if ((j) < nr) {                                                                                \
        float *cr = C + (j) * ldc;                                                                 \
        if (accumulate) {                                                                          \
            c##j##0 = _mm512_add_ps(c##j##0, _mm512_maskz_loadu_ps(k0, cr));                      \
            c##j##1 = _mm512_add_ps(c##j##1, _mm512_maskz_loadu_ps(k1, cr + 16));                  \
        }                                                                                          \
        _mm512_mask_storeu_ps(cr, k0, c##j##0);                                                    \
        _mm512_mask_storeu_ps(cr + 16, k1, c##j##1);                                               \
    }

#define MM_DECL(j) __m512 c##j##0 = _mm512_setzero_ps(), c##j##1 = _mm512_setzero_ps();

/* one k step of the F32 kernels: column j of the B panel times both 16-row halves of A */
#define MM_STEP(j)                                                                                 \
    bv = _mm512_set1_ps(b[j]);                                                                     \
    c##j##0 = _mm512_fmadd_ps(a0, bv, c##j##0);                                                    \
    c##j##1 = _mm512_fmadd_ps(a1, bv, c##j##1);

/* The last panel of N often holds few tokens (257 = 21·12 + 5 for CLIP): half the work there. */
static void mm_kernel_f32_n6(int64_t kc, const float *A, const float *B, float *C, int64_t ldc, int mr, int nr,
                             bool accumulate) {
    MM_DECL(0) MM_DECL(1) MM_DECL(2) MM_DECL(3) MM_DECL(4) MM_DECL(5)
    for (int64_t k = 0; k < kc; k++) {
        const __m512 a0 = _mm512_loadu_ps(A + k * 32), a1 = _mm512_loadu_ps(A + k * 32 + 16);
        const float *b = B + k * TP_MM_NR;
        __m512 bv;
        MM_STEP(0) MM_STEP(1) MM_STEP(2) MM_STEP(3) MM_STEP(4) MM_STEP(5)
    }
    const __mmask16 k0 = mask16(mr), k1 = mask16(mr - 16);
    MM_STORE_ROW(0) MM_STORE_ROW(1) MM_STORE_ROW(2) MM_STORE_ROW(3) MM_STORE_ROW(4) MM_STORE_ROW(5)
}

void tp_mm_kernel_f32_avx512(int64_t kc, const float *A, const float *B, float *C, int64_t ldc, int mr,
                             int nr, bool accumulate) {
    if (nr <= 6) {
        mm_kernel_f32_n6(kc, A, B, C, ldc, mr, nr, accumulate);
        return;
    }
    MM_DECL(0) MM_DECL(1) MM_DECL(2) MM_DECL(3) MM_DECL(4) MM_DECL(5)
    MM_DECL(6) MM_DECL(7) MM_DECL(8) MM_DECL(9) MM_DECL(10) MM_DECL(11)
    for (int64_t k = 0; k < kc; k++) {
        const __m512 a0 = _mm512_loadu_ps(A + k * 32), a1 = _mm512_loadu_ps(A + k * 32 + 16);
        const float *b = B + k * TP_MM_NR;
        __m512 bv;
        MM_STEP(0) MM_STEP(1) MM_STEP(2) MM_STEP(3) MM_STEP(4) MM_STEP(5)
        MM_STEP(6) MM_STEP(7) MM_STEP(8) MM_STEP(9) MM_STEP(10) MM_STEP(11)
    }
    const __mmask16 k0 = mask16(mr), k1 = mask16(mr - 16);
    MM_STORE_ROW(0) MM_STORE_ROW(1) MM_STORE_ROW(2) MM_STORE_ROW(3) MM_STORE_ROW(4) MM_STORE_ROW(5)
    MM_STORE_ROW(6) MM_STORE_ROW(7) MM_STORE_ROW(8) MM_STORE_ROW(9) MM_STORE_ROW(10) MM_STORE_ROW(11)
}
#undef MM_STEP

void tp_mm_kernel_bf16_avx512(int64_t kc2, const uint16_t *A, const uint16_t *B, float *C, int64_t ldc,
                              int mr, int nr, bool accumulate) {
    MM_DECL(0) MM_DECL(1) MM_DECL(2) MM_DECL(3) MM_DECL(4) MM_DECL(5)
    MM_DECL(6) MM_DECL(7) MM_DECL(8) MM_DECL(9) MM_DECL(10) MM_DECL(11)
    for (int64_t k = 0; k < kc2; k++) {
        const __m512bh a0 = (__m512bh)_mm512_loadu_si512((const void *)(A + k * 64));
        const __m512bh a1 = (__m512bh)_mm512_loadu_si512((const void *)(A + k * 64 + 32));
        const uint16_t *b = B + k * 2 * TP_MM_NR;
        __m512bh bv;
        int32_t pair;
#define MM_STEP(j)                                                                                 \
    memcpy(&pair, b + 2 * (j), 4);                                                                 \
    bv = (__m512bh)_mm512_set1_epi32(pair);                                                        \
    c##j##0 = _mm512_dpbf16_ps(c##j##0, a0, bv);                                                   \
    c##j##1 = _mm512_dpbf16_ps(c##j##1, a1, bv);
        MM_STEP(0) MM_STEP(1) MM_STEP(2) MM_STEP(3) MM_STEP(4) MM_STEP(5)
        MM_STEP(6) MM_STEP(7) MM_STEP(8) MM_STEP(9) MM_STEP(10) MM_STEP(11)
#undef MM_STEP
    }
    const __mmask16 k0 = mask16(mr), k1 = mask16(mr - 16);
    MM_STORE_ROW(0) MM_STORE_ROW(1) MM_STORE_ROW(2) MM_STORE_ROW(3) MM_STORE_ROW(4) MM_STORE_ROW(5)
    MM_STORE_ROW(6) MM_STORE_ROW(7) MM_STORE_ROW(8) MM_STORE_ROW(9) MM_STORE_ROW(10) MM_STORE_ROW(11)
}

/* ---------------------------------------------------------------------------------------------
 * Row dot products (decode)
 * ------------------------------------------------------------------------------------------- */

static inline __m512 load_w(tp_type type, const char *row, int64_t i, __mmask16 m) {
    switch (type) {
    case TP_TYPE_F16:
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i));
    case TP_TYPE_BF16:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i)), 16));
    default: return _mm512_maskz_loadu_ps(m, (const float *)row + i);
    }
}

void tp_mm_dot_rows_avx512(tp_type type, const void *A, size_t lda, int64_t nrows, const float *x,
                           int64_t k, float *out) {
    const char *base = A;
    int64_t r = 0;
    for (; r + 4 <= nrows; r += 4) {
        const char *r0 = base + r * lda, *r1 = r0 + lda, *r2 = r1 + lda, *r3 = r2 + lda;
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (int64_t i = 0; i < k; i += 16) {
            const __mmask16 m = mask16((int)TP_MIN(16, k - i));
            const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
            s0 = _mm512_fmadd_ps(load_w(type, r0, i, m), xv, s0);
            s1 = _mm512_fmadd_ps(load_w(type, r1, i, m), xv, s1);
            s2 = _mm512_fmadd_ps(load_w(type, r2, i, m), xv, s2);
            s3 = _mm512_fmadd_ps(load_w(type, r3, i, m), xv, s3);
        }
        out[r] = _mm512_reduce_add_ps(s0);
        out[r + 1] = _mm512_reduce_add_ps(s1);
        out[r + 2] = _mm512_reduce_add_ps(s2);
        out[r + 3] = _mm512_reduce_add_ps(s3);
    }
    for (; r < nrows; r++) {
        const char *r0 = base + r * lda;
        __m512 s0 = _mm512_setzero_ps();
        for (int64_t i = 0; i < k; i += 16) {
            const __mmask16 m = mask16((int)TP_MIN(16, k - i));
            s0 = _mm512_fmadd_ps(load_w(type, r0, i, m), _mm512_maskz_loadu_ps(m, x + i), s0);
        }
        out[r] = _mm512_reduce_add_ps(s0);
    }
}
