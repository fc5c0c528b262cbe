/* matmul_avx2.c - AVX2+FMA+F16C kernels for tp_mul_mat: the packed F32 GEMM (weight and token packing
 * by 8×8 register transposes, F16 widened while packing; the micro-kernel runs 16×6 register tiles over
 * the 32×12 packed panels, 12 accumulators, two loads and six broadcasts per k), row dot products, the
 * activation quantiser and quantised dots (vpmaddubsw + vpmaddwd). Called only on the AVX2 path. */
#include "tp_matmul.h"

#include <immintrin.h>

/* F16C half -> float (exact, as tp_f16_to_f32), inline. */
static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

static inline float load_w1(tp_type type, const char *row, int64_t i) {
    switch (type) {
    case TP_TYPE_F16: return h2f(((const uint16_t *)row)[i]);
    case TP_TYPE_BF16: return tp_bf16_to_f32(((const uint16_t *)row)[i]);
    default: return ((const float *)row)[i];
    }
}

/* ---------------------------------------------------------------------------------------------
 * Packing: weight rows into the micro-kernel's k-major panels and token rows into [K][NR] panels,
 * 8×8 blocks transposed in registers (F16 weights widened by F16C on the way). A plain copy writes
 * one float per panel row, strided, and converts F16 one value at a time.
 * ------------------------------------------------------------------------------------------- */

/* 8 values of a row from element k on (n of them inside the row, the rest zero) as floats */
static inline __m256 pack_load8(tp_type type, const char *row, int64_t k, int64_t n) {
    if (!row || n <= 0) return _mm256_setzero_ps();
    if (n >= 8) {
        if (type == TP_TYPE_F32) return _mm256_loadu_ps((const float *)row + k);
        const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + k));
        if (type == TP_TYPE_F16) return _mm256_cvtph_ps(h);
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    float v[8] = {0};
    for (int64_t i = 0; i < n; i++) v[i] = load_w1(type, row, k + i);
    return _mm256_loadu_ps(v);
}

static inline void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
        r[4 + i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
    }
}

/* Up to 8 rows (rows[i], i < nrows; NULL: a zero row) from element k0 on, n elements each, transposed
 * into P[k][i] (panel rows ld floats apart; columns >= nrows untouched) */
static void pack_rows8(tp_type type, const char *const *rows, int nrows, int64_t K, int64_t k0, int64_t n,
                       float *P, int64_t ld) {
    for (int64_t u0 = 0; u0 < n; u0 += 8) {
        const int64_t k = k0 + u0;
        const int nu = (int)TP_MIN(8, n - u0);
        __m256 r[8];
        for (int i = 0; i < 8; i++) r[i] = i < nrows ? pack_load8(type, rows[i], k, K - k) : _mm256_setzero_ps();
        transpose8(r);
        if (nrows == 8) {
            for (int j = 0; j < nu; j++) _mm256_storeu_ps(P + (u0 + j) * ld, r[j]);
        } else if (nrows == 4) {
            for (int j = 0; j < nu; j++) _mm_storeu_ps(P + (u0 + j) * ld, _mm256_castps256_ps128(r[j]));
        } else {
            for (int j = 0; j < nu; j++) {
                float v[8];
                _mm256_storeu_ps(v, r[j]);
                memcpy(P + (u0 + j) * ld, v, (size_t)nrows * sizeof(float));
            }
        }
    }
}

void tp_mm_pack_panel_avx2(tp_type type, const char *const rows[TP_MM_MR], int64_t K, int64_t k0, int64_t kc,
                           float *panel) {
    for (int h = 0; h < TP_MM_MR / 8; h++) pack_rows8(type, rows + 8 * h, 8, K, k0, kc, panel + 8 * h, TP_MM_MR);
}

void tp_mm_pack_tokens_avx2(const char *const rows[TP_MM_NR], int64_t K, float *panel) {
    for (int h = 0; h < TP_MM_NR; h += 8)
        pack_rows8(TP_TYPE_F32, rows + h, TP_MIN(8, TP_MM_NR - h), K, 0, K, panel + h, TP_MM_NR);
}

/* 16 rows × 6 tokens of a 32×12 tile: A stride TP_MM_MR floats, B stride TP_MM_NR floats. The twelve
 * accumulators are named values, never an array: an array indexed by the store loop's variable made the
 * compiler keep it in memory and store all twelve every k step (store-bound at ~40 % of the FMA peak). */
#define MM2_DECL(j) __m256 c##j##0 = _mm256_setzero_ps(), c##j##1 = _mm256_setzero_ps();
#define MM2_STEP(j)                                                                                \
    bv = _mm256_broadcast_ss(b + (j));                                                             \
    c##j##0 = _mm256_fmadd_ps(a0, bv, c##j##0);                                                    \
    c##j##1 = _mm256_fmadd_ps(a1, bv, c##j##1);
#define MM2_K(off)                                                                                 \
    {                                                                                              \
        const __m256 a0 = _mm256_loadu_ps(A + (off) * TP_MM_MR), a1 = _mm256_loadu_ps(A + (off) * TP_MM_MR + 8); \
        const float *b = B + (off) * TP_MM_NR;                                                     \
        __m256 bv;                                                                                 \
        MM2_STEP(0) MM2_STEP(1) MM2_STEP(2) MM2_STEP(3) MM2_STEP(4) MM2_STEP(5)                    \
    }
#define MM2_STORE_FULL(j)                                                                          \
    {                                                                                              \
        float *cr = C + (j) * ldc;                                                                 \
        if (accumulate) {                                                                          \
            c##j##0 = _mm256_add_ps(c##j##0, _mm256_loadu_ps(cr));                                 \
            c##j##1 = _mm256_add_ps(c##j##1, _mm256_loadu_ps(cr + 8));                             \
        }                                                                                          \
        _mm256_storeu_ps(cr, c##j##0);                                                             \
        _mm256_storeu_ps(cr + 8, c##j##1);                                                         \
    }
#define MM2_SPILL(j)                                                                               \
    _mm256_storeu_ps(tmp[j], c##j##0);                                                             \
    _mm256_storeu_ps(tmp[j] + 8, c##j##1);

static void kernel_16x6(int64_t kc, const float *A, const float *B, float *C, int64_t ldc, int mr, int nr,
                        bool accumulate) {
    MM2_DECL(0) MM2_DECL(1) MM2_DECL(2) MM2_DECL(3) MM2_DECL(4) MM2_DECL(5)
    int64_t k = 0;
    for (; k + 2 <= kc; k += 2, A += 2 * TP_MM_MR, B += 2 * TP_MM_NR) {
        MM2_K(0)
        MM2_K(1)
    }
    if (k < kc) MM2_K(0)
    if (mr == 16 && nr == 6) {
        MM2_STORE_FULL(0) MM2_STORE_FULL(1) MM2_STORE_FULL(2) MM2_STORE_FULL(3) MM2_STORE_FULL(4) MM2_STORE_FULL(5)
        return;
    }
    float tmp[6][16]; /* an edge tile: only its mr × nr part is stored */
    MM2_SPILL(0) MM2_SPILL(1) MM2_SPILL(2) MM2_SPILL(3) MM2_SPILL(4) MM2_SPILL(5)
    for (int j = 0; j < nr; j++) {
        float *cr = C + j * ldc;
        for (int m = 0; m < mr; m++) cr[m] = accumulate ? cr[m] + tmp[j][m] : tmp[j][m];
    }
}
#undef MM2_DECL
#undef MM2_STEP
#undef MM2_K
#undef MM2_STORE_FULL
#undef MM2_SPILL

void tp_mm_kernel_f32_avx2(int64_t kc, const float *A, const float *B, float *C, int64_t ldc, int mr, int nr,
                           bool accumulate) {
    for (int nh = 0; nh < 2 && nh * 6 < nr; nh++)
        for (int mh = 0; mh < 2 && mh * 16 < mr; mh++)
            kernel_16x6(kc, A + mh * 16, B + nh * 6, C + (int64_t)nh * 6 * ldc + mh * 16, ldc,
                        TP_MIN(16, mr - mh * 16), TP_MIN(6, nr - nh * 6), accumulate);
}

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 load_w8(tp_type type, const char *row, int64_t i) {
    switch (type) {
    case TP_TYPE_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
    case TP_TYPE_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i))), 16));
    default: return _mm256_loadu_ps((const float *)row + i);
    }
}

void tp_mm_dot_rows_avx2(tp_type type, const void *A, size_t lda, int64_t nrows, const float *x, int64_t k,
                         float *out) {
    const char *base = A;
    for (int64_t r = 0; r < nrows; r++) {
        const char *row = base + r * lda;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 16 <= k; i += 16) {
            s0 = _mm256_fmadd_ps(load_w8(type, row, i), _mm256_loadu_ps(x + i), s0);
            s1 = _mm256_fmadd_ps(load_w8(type, row, i + 8), _mm256_loadu_ps(x + i + 8), s1);
        }
        for (; i + 8 <= k; i += 8) s0 = _mm256_fmadd_ps(load_w8(type, row, i), _mm256_loadu_ps(x + i), s0);
        float s = hsum256(_mm256_add_ps(s0, s1));
        for (; i < k; i++) s += load_w1(type, row, i) * x[i];
        out[r] = s;
    }
}

void tp_quantize_row_q8a_avx2(const float *x, tp_block_q8a *y, int64_t n) {
    const __m256 signbit = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / TP_QK; i++) {
        __m256 v[4];
        for (int j = 0; j < 4; j++) v[j] = _mm256_loadu_ps(x + i * 32 + 8 * j);
        __m256 a = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(signbit, v[0]), _mm256_andnot_ps(signbit, v[1])),
                                 _mm256_max_ps(_mm256_andnot_ps(signbit, v[2]), _mm256_andnot_ps(signbit, v[3])));
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        const float amax = _mm_cvtss_f32(m);
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m256 idv = _mm256_set1_ps(id);
        int32_t q[32];
        for (int j = 0; j < 4; j++) _mm256_storeu_si256((__m256i *)(q + 8 * j), _mm256_cvtps_epi32(_mm256_mul_ps(v[j], idv)));
        /* the sums are of the stored int8 values: a NaN or infinite activation converts to INT32_MIN, and
         * summing those would overflow */
        int s0 = 0, s1 = 0;
        for (int j = 0; j < 32; j++) {
            y[i].qs[j] = (int8_t)q[j];
            if (j < 16) s0 += y[i].qs[j];
            else s1 += y[i].qs[j];
        }
        y[i].d = d;
        y[i].s[0] = (int16_t)s0;
        y[i].s[1] = (int16_t)s1;
    }
}

static inline __m256i dot_u8s8_256(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

static inline int hsum_i32_256(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* One Q4_K / Q5_K row against nt (1..4) tokens (token t's blocks at x + t * x_stride, its result at
 * out[t * ldo]): each sub-block unpacked once for all of them; every token's sum in the same order whatever nt. */
static void qdot_k45_rows(const char *row, bool q5, const tp_block_q8a *x, int64_t x_stride, int nt, int64_t k,
                          float *out, int64_t ldo) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t i = 0; i < k / TP_QK_K; i++) {
        const tp_k45_block blk = tp_k45_block_at(row, i, q5);
        const uint8_t *qs = blk.qs, *qh = blk.qh, *scales = blk.scales;
        const float d = h2f(blk.d), dmin = h2f(blk.dmin);
        const __m256i hv = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            tp_get_scale_min_k4(j, scales, &sc, &m);
            const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * (j / 2)));
            __m256i q = _mm256_and_si256((j & 1) ? _mm256_srli_epi16(v, 4) : v, m4);
            if (qh) {
                const __m256i bit = _mm256_set1_epi8((char)(1 << j));
                const __m256i hb = _mm256_cmpeq_epi8(_mm256_and_si256(hv, bit), bit);
                q = _mm256_or_si256(q, _mm256_and_si256(hb, _mm256_set1_epi8(16)));
            }
            for (int t = 0; t < nt; t++) {
                const tp_block_q8a *xb = x + t * x_stride + 8 * i + j;
                const int isum = hsum_i32_256(dot_u8s8_256(q, _mm256_loadu_si256((const __m256i *)xb->qs)));
                sum[t] += xb->d * (d * (float)(sc * isum) - dmin * (float)(m * (xb->s[0] + xb->s[1])));
            }
        }
    }
    for (int t = 0; t < nt; t++) out[t * ldo] = sum[t];
}

/* One Q6_K row against nt (1..4) tokens, as qdot_k45_rows. */
static void qdot_q6k_rows(const char *row, const tp_block_q8a *x, int64_t x_stride, int nt, int64_t k, float *out,
                          int64_t ldo) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t i = 0; i < k / TP_QK_K; i++) {
        const tp_block_q6_K *w = (const tp_block_q6_K *)row + i;
        const float d = h2f(w->d);
        for (int h = 0; h < 2; h++) {
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(w->qh + 32 * h));
            for (int g = 0; g < 4; g++) {
                const __m256i ql = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * h + 32 * (g & 1)));
                const __m256i lo = _mm256_and_si256(g < 2 ? ql : _mm256_srli_epi16(ql, 4), m4);
                const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g)), m3);
                const __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
                const int8_t *sc = w->scales + 8 * h + 2 * g;
                for (int t = 0; t < nt; t++) {
                    const tp_block_q8a *xb = x + t * x_stride + 8 * i + 4 * h + g;
                    const __m256i ip = dot_u8s8_256(q, _mm256_loadu_si256((const __m256i *)xb->qs));
                    /* lanes 0-3: first 16 elements, lanes 4-7: second 16 */
                    const __m128i lo4 = _mm256_castsi256_si128(ip), hi4 = _mm256_extracti128_si256(ip, 1);
                    __m128i s = _mm_hadd_epi32(lo4, hi4); /* [l01, l23, h01, h23] */
                    s = _mm_hadd_epi32(s, s);             /* [l, h, l, h] */
                    const int sl = _mm_cvtsi128_si32(s), sh = _mm_extract_epi32(s, 1);
                    const int isum = sc[0] * (sl - 32 * xb->s[0]) + sc[1] * (sh - 32 * xb->s[1]);
                    sum[t] += d * xb->d * (float)isum;
                }
            }
        }
    }
    for (int t = 0; t < nt; t++) out[t * ldo] = sum[t];
}

bool tp_mm_qdot4_avx2_type_ok(tp_type type) {
    return type == TP_TYPE_Q8_0 || type == TP_TYPE_Q4_K || type == TP_TYPE_Q5_K || type == TP_TYPE_Q6_K;
}

void tp_mm_qdot4_avx2(tp_type type, const void *A, size_t lda, int64_t nrows, const tp_block_q8a *x, int64_t x_stride,
                      int64_t k, float *out, int64_t ldo) {
    if (type != TP_TYPE_Q8_0) {
        for (int64_t r = 0; r < nrows; r++) {
            const char *row = (const char *)A + (size_t)r * lda;
            if (type == TP_TYPE_Q6_K) qdot_q6k_rows(row, x, x_stride, 4, k, out + r, ldo);
            else qdot_k45_rows(row, type == TP_TYPE_Q5_K, x, x_stride, 4, k, out + r, ldo);
        }
        return;
    }
    const tp_block_q8a *x0 = x, *x1 = x + x_stride, *x2 = x + 2 * x_stride, *x3 = x + 3 * x_stride;
    for (int64_t r = 0; r < nrows; r++) {
        const tp_block_q8_0 *w = (const tp_block_q8_0 *)((const char *)A + (size_t)r * lda);
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int64_t i = 0; i < k / TP_QK; i++) {
            const __m256i wv = _mm256_loadu_si256((const __m256i *)w[i].qs);
            const __m256i aw = _mm256_sign_epi8(wv, wv);
            const float dw = h2f(w[i].d);
#define TP_QDOT4_STEP(acc, xt)                                                                                     \
    acc = _mm256_fmadd_ps(                                                                                         \
        _mm256_cvtepi32_ps(dot_u8s8_256(aw, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xt[i].qs), wv))), \
        _mm256_set1_ps(dw * xt[i].d), acc)
            TP_QDOT4_STEP(a0, x0);
            TP_QDOT4_STEP(a1, x1);
            TP_QDOT4_STEP(a2, x2);
            TP_QDOT4_STEP(a3, x3);
#undef TP_QDOT4_STEP
        }
        out[r] = hsum256(a0);
        out[ldo + r] = hsum256(a1);
        out[2 * ldo + r] = hsum256(a2);
        out[3 * ldo + r] = hsum256(a3);
    }
}

void tp_mm_qdot_avx2(tp_type type, const void *A, size_t lda, int64_t nrows, const tp_block_q8a *x,
                     int64_t k, float *out) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t r = 0; r < nrows; r++) {
        const char *row = (const char *)A + (size_t)r * lda;
        if (type == TP_TYPE_Q8_0) {
            const tp_block_q8_0 *w = (const tp_block_q8_0 *)row;
            __m256 acc = _mm256_setzero_ps();
            for (int64_t i = 0; i < k / TP_QK; i++) {
                const __m256i wv = _mm256_loadu_si256((const __m256i *)w[i].qs);
                const __m256i xv = _mm256_loadu_si256((const __m256i *)x[i].qs);
                const __m256i ip = dot_u8s8_256(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ip), _mm256_set1_ps(h2f(w[i].d) * x[i].d), acc);
            }
            out[r] = hsum256(acc);
        } else if (tp_is_q32(type)) { /* Q4_0 / Q4_1 / Q5_0 / Q5_1: see quants.c's tp_vec_dot_q8a */
            const tp_q32_layout L = tp_q32_layout_of(type);
            const __m256i bit_of_byte = _mm256_set1_epi64x(0x8040201008040201LL);
            const __m256i byte_of_bit = _mm256_setr_epi64x(0, 0x0101010101010101LL, 0x0202020202020202LL,
                                                            0x0303030303030303LL);
            __m256 acc = _mm256_setzero_ps();
            float corr = 0.0f;
            for (int64_t i = 0; i < k / TP_QK; i++) {
                const uint8_t *b = (const uint8_t *)row + (size_t)i * (size_t)L.bytes;
                const __m128i q = _mm_loadu_si128((const __m128i *)(b + L.qs));
                __m256i v = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1), m4);
                if (L.qh >= 0) { /* byte j gets bit j of qh as 16 */
                    uint32_t qh;
                    memcpy(&qh, b + L.qh, 4);
                    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), byte_of_bit);
                    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit_of_byte), bit_of_byte);
                    v = _mm256_or_si256(v, _mm256_and_si256(set, _mm256_set1_epi8(16)));
                }
                uint16_t h, hc;
                memcpy(&h, b, 2);
                memcpy(&hc, b + tp_q32_c_at(&L), 2);
                const float d = h2f(h), c = h2f(hc);
                const __m256i ip = dot_u8s8_256(v, _mm256_loadu_si256((const __m256i *)x[i].qs));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ip), _mm256_set1_ps(d * x[i].d), acc);
                corr += c * x[i].d * (float)(x[i].s[0] + x[i].s[1]);
            }
            out[r] = hsum256(acc) + tp_q32_c_factor(&L) * corr;
        } else if (type == TP_TYPE_Q4_K || type == TP_TYPE_Q5_K) {
            qdot_k45_rows(row, type == TP_TYPE_Q5_K, x, 0, 1, k, out + r, 0);
        } else if (type == TP_TYPE_Q6_K) {
            qdot_q6k_rows(row, x, 0, 1, k, out + r, 0);
        } else {
            out[r] = tp_vec_dot_q8a(type, row, x, k);
        }
    }
}
