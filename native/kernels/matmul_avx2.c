/* matmul_avx2.c - AVX2+FMA+F16C kernels for tp_mul_mat: the packed F32 GEMM micro-kernel (16×6 tiles
 * of the 32×12 packed panels), row dot products, the activation quantiser and quantised dots
 * (vpmaddubsw + vpmaddwd). Called only on the AVX2 path. */
#include "tp_matmul.h"

#include <immintrin.h>

/* F16C half -> float (exact, as tp_f16_to_f32), inline. */
static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* 16 rows × 6 tokens: A stride 32 floats, B stride 12 floats. */
static void kernel_16x6(int64_t kc, const float *A, const float *B, float *C, int64_t ldc, int mr, int nr,
                        bool accumulate) {
    __m256 c[6][2];
    for (int j = 0; j < 6; j++) c[j][0] = c[j][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        const __m256 a0 = _mm256_loadu_ps(A + k * TP_MM_MR), a1 = _mm256_loadu_ps(A + k * TP_MM_MR + 8);
        const float *b = B + k * TP_MM_NR;
        for (int j = 0; j < 6; j++) {
            const __m256 bv = _mm256_broadcast_ss(b + j);
            c[j][0] = _mm256_fmadd_ps(a0, bv, c[j][0]);
            c[j][1] = _mm256_fmadd_ps(a1, bv, c[j][1]);
        }
    }
    for (int j = 0; j < nr; j++) {
        float *cr = C + j * ldc;
        if (mr == 16) {
            __m256 v0 = c[j][0], v1 = c[j][1];
            if (accumulate) {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(cr));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(cr + 8));
            }
            _mm256_storeu_ps(cr, v0);
            _mm256_storeu_ps(cr + 8, v1);
        } else {
            float tmp[16];
            _mm256_storeu_ps(tmp, c[j][0]);
            _mm256_storeu_ps(tmp + 8, c[j][1]);
            for (int m = 0; m < mr; m++) cr[m] = accumulate ? cr[m] + tmp[m] : tmp[m];
        }
    }
}

void tp_mm_kernel_f32_avx2(int64_t kc, const float *A, const float *B, float *C, int64_t ldc, int mr, int nr,
                           bool accumulate) {
    for (int mh = 0; mh < 2 && mh * 16 < mr; mh++)
        for (int nh = 0; nh < 2 && nh * 6 < nr; nh++)
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

static inline float load_w1(tp_type type, const char *row, int64_t i) {
    switch (type) {
    case TP_TYPE_F16: return h2f(((const uint16_t *)row)[i]);
    case TP_TYPE_BF16: return tp_bf16_to_f32(((const uint16_t *)row)[i]);
    default: return ((const float *)row)[i];
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
