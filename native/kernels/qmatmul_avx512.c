/* qmatmul_avx512.c - AVX-512 kernels of tp_mul_mat for quantised weights: the activation quantiser
 * (8-bit blocks), the quantised dot products (vpdpbusd where VNNI exists, else vpmaddubsw +
 * vpmaddwd), the one-token GEMV paths of decode and the int8 GEMM over packed weight panels.
 * Compiled with the AVX-512 flags; called only on that path. */
#include "tp_avx512.h"
#include "tp_matmul.h"

/* ---------------------------------------------------------------------------------------------
 * Activation blocks
 * ------------------------------------------------------------------------------------------- */

void tp_quantize_row_q8a_avx512(const float *x, tp_block_q8a *y, int64_t n) {
    const __m512 signbit = _mm512_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / TP_QK; i++) {
        const __m512 v0 = _mm512_loadu_ps(x + i * 32), v1 = _mm512_loadu_ps(x + i * 32 + 16);
        const __m512 a = _mm512_max_ps(_mm512_andnot_ps(signbit, v0), _mm512_andnot_ps(signbit, v1));
        const float amax = _mm512_reduce_max_ps(a);
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m512 idv = _mm512_set1_ps(id);
        const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, idv));
        const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, idv));
        y[i].d = d;
        y[i].s[0] = (int16_t)_mm512_reduce_add_epi32(q0);
        y[i].s[1] = (int16_t)_mm512_reduce_add_epi32(q1);
        _mm_storeu_si128((__m128i *)y[i].qs, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(y[i].qs + 16), _mm512_cvtepi32_epi8(q1));
    }
}

/* ---------------------------------------------------------------------------------------------
 * Quantised dot products
 * ------------------------------------------------------------------------------------------- */

/* u (unsigned bytes) · s (signed bytes), 4 bytes per int32 lane. */
static inline __m512i dot_u8s8(__m512i u, __m512i s, bool vnni) {
    if (vnni) return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
    return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
}

static inline __m512i load2x256(const void *lo, const void *hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)lo)),
                              _mm256_loadu_si256((const __m256i *)hi), 1);
}

static inline __m512 scale2(float lo, float hi) {
    return _mm512_insertf32x8(_mm512_set1_ps(lo), _mm256_set1_ps(hi), 1);
}

/* Each dot handles one weight row against nt <= 4 token rows (xs[t] = x + t*ldx): weights are
 * loaded and unpacked once per block for all tokens. out[t] receives the dot with token t. */
#define QT 4

static inline void qdot_q8_0(const tp_block_q8_0 *w, const tp_block_q8a *x, int64_t ldx, int nt, int64_t nb,
                             bool vnni, float *out) {
    __m512 acc[QT];
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        const __m512i wv = load2x256(w[i].qs, w[i + 1].qs);
        const __mmask64 neg = _mm512_movepi8_mask(wv);
        const __m512i wa = _mm512_abs_epi8(wv);
        const float d0 = h2f(w[i].d), d1 = h2f(w[i + 1].d);
        for (int t = 0; t < nt; t++) {
            const tp_block_q8a *xt = x + t * ldx + i;
            const __m512i xv = load2x256(xt[0].qs, xt[1].qs);
            const __m512i xs = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
            const __m512i ip = dot_u8s8(wa, xs, vnni);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ip), scale2(d0 * xt[0].d, d1 * xt[1].d), acc[t]);
        }
    }
    for (int t = 0; t < nt; t++) {
        float sum = _mm512_reduce_add_ps(acc[t]);
        const tp_block_q8a *xt = x + t * ldx;
        for (int64_t j = i; j < nb; j++) {
            int s = 0;
            for (int l = 0; l < 32; l++) s += w[j].qs[l] * xt[j].qs[l];
            sum += h2f(w[j].d) * xt[j].d * (float)s;
        }
        out[t] = sum;
    }
}

/* The levels of blocks b and b + 1 of a 32-block row (tp_q32_layout) as 64 unsigned bytes in element
 * order: each block's 16 nibble bytes twice, low nibbles in the first copy, high in the second, and the
 * Q5 types' high bits added where qh has them. */
static inline __attribute__((always_inline)) __m512i q32_levels2(const tp_q32_layout *L, const uint8_t *b) {
    const uint8_t *b1 = b + L->bytes;
    const __m256i q0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(b + L->qs)));
    const __m256i q1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(b1 + L->qs)));
    __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1);
    v = _mm512_and_si512(_mm512_mask_blend_epi64(0xCC, v, _mm512_srli_epi16(v, 4)), _mm512_set1_epi8(0x0F));
    if (L->qh >= 0) {
        uint32_t h0, h1;
        memcpy(&h0, b + L->qh, 4);
        memcpy(&h1, b1 + L->qh, 4);
        v = _mm512_mask_add_epi8(v, (__mmask64)h0 | ((__mmask64)h1 << 32), v, _mm512_set1_epi8(16));
    }
    return v;
}

/* the F16 field at byte p of a block, as float */
static inline float f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return h2f(h);
}

/* 8 F16 fields `stride` bytes apart (the same field of 8 consecutive blocks) as floats */
static inline __attribute__((always_inline)) __m256 h2f8_strided(const uint8_t *p, int stride) {
    uint16_t h[8];
    for (int i = 0; i < 8; i++) memcpy(&h[i], p + i * stride, 2);
    __m128i v = _mm_cvtsi32_si128(h[0]);
    v = _mm_insert_epi16(v, h[1], 1);
    v = _mm_insert_epi16(v, h[2], 2);
    v = _mm_insert_epi16(v, h[3], 3);
    v = _mm_insert_epi16(v, h[4], 4);
    v = _mm_insert_epi16(v, h[5], 5);
    v = _mm_insert_epi16(v, h[6], 6);
    v = _mm_insert_epi16(v, h[7], 7);
    return _mm256_cvtph_ps(v);
}

/* Q4_0 / Q4_1 / Q5_0 / Q5_1: Σ (d·u + bias)·x = d·dx·Σ u·q + bias·dx·Σ q per block; the second term
 * is collected as c·dx·Σq with c = m (types with a min) or d (then scaled by −offset at the end). */
static inline void qdot_q32(tp_type type, const void *wrow, const tp_block_q8a *x, int64_t ldx, int nt, int64_t nb,
                            bool vnni, float *out) {
    const tp_q32_layout L = tp_q32_layout_of(type);
    const uint8_t *w = wrow;
    __m512 acc[QT];
    float corr[QT];
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps(), corr[t] = 0.0f;
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        const uint8_t *b0 = w + (size_t)i * (size_t)L.bytes, *b1 = b0 + L.bytes;
        const __m512i v = q32_levels2(&L, b0);
        const float d0 = f16_at(b0), d1 = f16_at(b1);
        const float c0 = f16_at(b0 + tp_q32_c_at(&L)), c1 = f16_at(b1 + tp_q32_c_at(&L));
        for (int t = 0; t < nt; t++) {
            const tp_block_q8a *xt = x + t * ldx + i;
            const __m512i ip = dot_u8s8(v, load2x256(xt[0].qs, xt[1].qs), vnni);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ip), scale2(d0 * xt[0].d, d1 * xt[1].d), acc[t]);
            corr[t] += c0 * xt[0].d * (float)(xt[0].s[0] + xt[0].s[1]) + c1 * xt[1].d * (float)(xt[1].s[0] + xt[1].s[1]);
        }
    }
    for (int t = 0; t < nt; t++) {
        float sum = _mm512_reduce_add_ps(acc[t]) + tp_q32_c_factor(&L) * corr[t];
        if (i < nb) sum += tp_vec_dot_q8a(type, w + (size_t)i * (size_t)L.bytes, x + t * ldx + i, TP_QK);
        out[t] = sum;
    }
}

/* Q4_K and Q5_K (q5): chunks of 64 = two sub-blocks of 32 with 6-bit scale and min. */
static inline void qdot_q45_K(const void *wrow, bool q5, const tp_block_q8a *x, int64_t ldx, int nt,
                              int64_t nsb, bool vnni, float *out) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc[QT];
    float corr[QT];
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps(), corr[t] = 0.0f;
    for (int64_t i = 0; i < nsb; i++) {
        const tp_k45_block blk = tp_k45_block_at(wrow, i, q5);
        const uint8_t *qs = blk.qs, *qh = blk.qh, *scales = blk.scales;
        const float d = h2f(blk.d), dmin = h2f(blk.dmin);
        uint8_t sc[8], m[8];
        for (int j = 0; j < 8; j++) tp_get_scale_min_k4(j, scales, &sc[j], &m[j]);
        __m512i hv = _mm512_setzero_si512();
        if (qh) hv = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)qh));
        for (int c = 0; c < 4; c++) {
            const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * c)));
            __m512i q = _mm512_and_si512(_mm512_mask_blend_epi64(0xF0, v, _mm512_srli_epi16(v, 4)), m4);
            if (qh) {
                const __m512i bits = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (2 * c))),
                                                        _mm256_set1_epi8((char)(1 << (2 * c + 1))), 1);
                q = _mm512_mask_add_epi8(q, _mm512_test_epi8_mask(hv, bits), q, _mm512_set1_epi8(16));
            }
            const float ds0 = d * sc[2 * c], ds1 = d * sc[2 * c + 1];
            const float dm0 = dmin * m[2 * c], dm1 = dmin * m[2 * c + 1];
            for (int t = 0; t < nt; t++) {
                const tp_block_q8a *x0 = x + t * ldx + 8 * i + 2 * c, *x1 = x0 + 1;
                const __m512i ip = dot_u8s8(q, load2x256(x0->qs, x1->qs), vnni);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ip), scale2(ds0 * x0->d, ds1 * x1->d), acc[t]);
                corr[t] += dm0 * x0->d * (float)(x0->s[0] + x0->s[1]) + dm1 * x1->d * (float)(x1->s[0] + x1->s[1]);
            }
        }
    }
    for (int t = 0; t < nt; t++) out[t] = _mm512_reduce_add_ps(acc[t]) - corr[t];
}

static inline void qdot_q6_K(const tp_block_q6_K *wrow, const tp_block_q8a *x, int64_t ldx, int nt, int64_t nsb,
                             bool vnni, float *out) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m3 = _mm512_set1_epi8(3);
    const __m128i rep4 = _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m512i sh01 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    const __m512i sh23 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    __m512 acc[QT];
    float corr[QT];
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps(), corr[t] = 0.0f;
    for (int64_t i = 0; i < nsb; i++) {
        const tp_block_q6_K *w = wrow + i;
        const float d = h2f(w->d);
        for (int h = 0; h < 2; h++) {
            const __m512i ql = _mm512_loadu_si512((const void *)(w->ql + 64 * h));
            const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w->qh + 32 * h)));
            const __m512i lo = _mm512_and_si512(ql, m4);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4);
            const __m512i h01 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh01), m3), 4);
            const __m512i h23 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh23), m3), 4);
            for (int pr = 0; pr < 2; pr++) {
                const __m512i q = pr ? _mm512_or_si512(hi, h23) : _mm512_or_si512(lo, h01);
                const int8_t *sc = w->scales + 8 * h + 4 * pr;
                int32_t sc4;
                memcpy(&sc4, sc, 4);
                const __m512i scv = _mm512_cvtepi8_epi32(_mm_shuffle_epi8(_mm_set1_epi32(sc4), rep4));
                for (int t = 0; t < nt; t++) {
                    const tp_block_q8a *x0 = x + t * ldx + 8 * i + 4 * h + 2 * pr, *x1 = x0 + 1;
                    const __m512i ip = _mm512_mullo_epi32(dot_u8s8(q, load2x256(x0->qs, x1->qs), vnni), scv);
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ip), scale2(d * x0->d, d * x1->d), acc[t]);
                    corr[t] += d * (x0->d * (float)(sc[0] * x0->s[0] + sc[1] * x0->s[1]) +
                                    x1->d * (float)(sc[2] * x1->s[0] + sc[3] * x1->s[1]));
                }
            }
        }
    }
    for (int t = 0; t < nt; t++) out[t] = _mm512_reduce_add_ps(acc[t]) - 32.0f * corr[t];
}

/* ---- VNNI fast paths (Q8_0, Q4_K, Q5_K): the activations of a group of up to 4 tokens are first
 * repacked per K segment into contiguous, 64-byte aligned int8 runs (in the order the unpacked
 * weights come out), with each block's d and d·Σq as float arrays; then every weight row is
 * streamed once for the group: one vpdpbusd per 64 weights and token, the per-block scales as a
 * lane vector (one vpermps from the 8 scales of 8 blocks), and the offset/min corrections as one
 * 8-float FMA per 8 blocks. Integer block sums are exact; only the float accumulation order
 * differs from the portable path. */
#define QSEG 128 /* activation blocks per segment (4096 values, a multiple of 8 blocks) */

typedef struct {
    _Alignas(64) int8_t qs[QT][QSEG * 32];
    _Alignas(64) float xd[QT][QSEG];
    _Alignas(64) float xs[QT][QSEG]; /* d · (sum of the block's 32 quants) */
} qx_pack;

enum { QX_PLAIN, QX_Q4K, QX_Q40 };

/* Repack blocks [b0, b0 + nbs) of nt tokens. QX_Q4K: per 8 blocks the order 0,2,1,3,4,6,5,7;
 * QX_Q40: per 4 blocks the first halves (16 quants) of the 4 blocks, then the second halves. */
static void qx_repack(const tp_block_q8a *x, int64_t ldx, int nt, int64_t b0, int64_t nbs, int order, qx_pack *pk) {
    static const int q4k_pos[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    for (int t = 0; t < nt; t++) {
        const tp_block_q8a *xb = x + t * ldx + b0;
        for (int64_t j = 0; j < nbs; j++) {
            pk->xd[t][j] = xb[j].d;
            pk->xs[t][j] = xb[j].d * (float)(xb[j].s[0] + xb[j].s[1]);
            const __m256i q = _mm256_loadu_si256((const __m256i *)xb[j].qs);
            if (order == QX_Q40) {
                int8_t *dst = pk->qs[t] + (j & ~(int64_t)3) * 32 + (j & 3) * 16;
                _mm_store_si128((__m128i *)dst, _mm256_castsi256_si128(q));
                _mm_store_si128((__m128i *)(dst + 64), _mm256_extracti128_si256(q, 1));
            } else {
                const int64_t pos = order == QX_Q4K ? (j & ~(int64_t)7) + q4k_pos[j & 7] : j;
                _mm256_store_si256((__m256i *)(pk->qs[t] + pos * 32), q);
            }
        }
    }
}

static inline __m512 lanes_of8(__m256 s8, __m512i idx) { return _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(s8)); }

/* acc + Σ_q (w_q · x[64q .. 64q + 64)) · lanes_of8(s8, i_q): four 64-byte unsigned weight vectors against four
 * of the token's int8 activation, each 32-bit sum scaled by its block's factor (the multi-token dots' step). */
static inline __attribute__((always_inline)) __m512 dot4_scaled(__m512 acc, __m512i w0, __m512i w1, __m512i w2,
                                                                __m512i w3, const int8_t *xq, __m256 s8, __m512i i0,
                                                                __m512i i1, __m512i i2, __m512i i3) {
    const __m512i z = _mm512_setzero_si512();
    const __m512i p0 = _mm512_dpbusd_epi32(z, w0, _mm512_load_si512((const void *)xq));
    const __m512i p1 = _mm512_dpbusd_epi32(z, w1, _mm512_load_si512((const void *)(xq + 64)));
    const __m512i p2 = _mm512_dpbusd_epi32(z, w2, _mm512_load_si512((const void *)(xq + 128)));
    const __m512i p3 = _mm512_dpbusd_epi32(z, w3, _mm512_load_si512((const void *)(xq + 192)));
    __m512 a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p0), lanes_of8(s8, i0), acc);
    __m512 b = _mm512_mul_ps(_mm512_cvtepi32_ps(p1), lanes_of8(s8, i1));
    a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p2), lanes_of8(s8, i2), a);
    b = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p3), lanes_of8(s8, i3), b);
    return _mm512_add_ps(a, b);
}

/* the sum of 8 lanes */
static inline float hsum8(__m256 v) {
    __m128 c4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    c4 = _mm_add_ps(c4, _mm_movehl_ps(c4, c4));
    c4 = _mm_add_ss(c4, _mm_movehdup_ps(c4));
    return _mm_cvtss_f32(c4);
}

/* Q8_0 over nbs blocks (w already at the segment): weights ^ 0x80 are unsigned, so
 * Σ w·x = vpdpbusd(w + 128, x) − 128 Σ x per block. */
static void qv_q8_0(const tp_block_q8_0 *w, const qx_pack *pk, int nt, int64_t nbs, float *out) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __m512i i0 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(2)), i2 = _mm512_add_epi32(i0, _mm512_set1_epi32(4)),
                  i3 = _mm512_add_epi32(i0, _mm512_set1_epi32(6));
    __m512 acc[QT];
    __m256 corr[QT];
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps(), corr[t] = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= nbs; j += 8) {
        const tp_block_q8_0 *wb = w + j;
        _mm_prefetch((const char *)(wb + 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(wb + 16) + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)(wb + 16) + 128, _MM_HINT_T0);
        _mm_prefetch((const char *)(wb + 16) + 192, _MM_HINT_T0);
        _mm_prefetch((const char *)(wb + 16) + 256, _MM_HINT_T0);
        const __m256 dw = h2f8_strided((const uint8_t *)wb, (int)sizeof(tp_block_q8_0));
        const __m512i w0 = _mm512_xor_si512(load2x256(wb[0].qs, wb[1].qs), flip);
        const __m512i w1 = _mm512_xor_si512(load2x256(wb[2].qs, wb[3].qs), flip);
        const __m512i w2 = _mm512_xor_si512(load2x256(wb[4].qs, wb[5].qs), flip);
        const __m512i w3 = _mm512_xor_si512(load2x256(wb[6].qs, wb[7].qs), flip);
        for (int t = 0; t < nt; t++) {
            const int8_t *xq = pk->qs[t] + j * 32;
            const __m256 s8 = _mm256_mul_ps(dw, _mm256_load_ps(pk->xd[t] + j));
            corr[t] = _mm256_fmadd_ps(dw, _mm256_load_ps(pk->xs[t] + j), corr[t]);
            acc[t] = dot4_scaled(acc[t], w0, w1, w2, w3, xq, s8, i0, i1, i2, i3);
        }
    }
    for (int t = 0; t < nt; t++) {
        float sum = _mm512_reduce_add_ps(acc[t]) - 128.0f * hsum8(corr[t]);
        for (int64_t jj = j; jj < nbs; jj++) { /* tail blocks */
            const __m256i wv = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)w[jj].qs), _mm512_castsi512_si256(flip));
            const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv,
                                                  _mm256_load_si256((const __m256i *)(pk->qs[t] + jj * 32)));
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
            const float dw = h2f(w[jj].d);
            sum += dw * (pk->xd[t][jj] * (float)_mm_cvtsi128_si32(s4) - 128.0f * pk->xs[t][jj]);
        }
        out[t] += sum;
    }
}

/* The 6-bit scales and mins of a Q4_K/Q5_K super-block (12 bytes; 16 are read, the block goes on) as
 * bytes: scales 0..7, then mins 0..7 (tp_get_scale_min_k4, in vector form). */
static inline __m128i q4k_scales_mins(const uint8_t *scales) {
    const __m128i v = _mm_loadu_si128((const __m128i *)scales);
    const __m128i a = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
    const __m128i b = _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
    const __m128i top = _mm_srli_epi16(_mm_and_si128(b, _mm_set1_epi8((char)0xC0)), 2);
    const __m128i lo = _mm_and_si128(a, _mm_set1_epi8(0x3F));
    const __m128i hs = _mm_or_si128(_mm_and_si128(a, _mm_set1_epi8(0x0F)), top);
    const __m128i hm = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), _mm_set1_epi8(0x0F)), top);
    return _mm_mask_blend_epi8(0xF000, _mm_mask_blend_epi8(0x00F0, lo, hs), hm);
}

/* Q5_K: add each level's fifth bit (qh[l] bit 2c for the low nibbles of 32-byte chunk c, bit 2c + 1 for
 * the high ones) to the four nibble vectors n0 (chunks 0, 1 low), n1 (0, 1 high), n2 (2, 3 low), n3. */
static inline __attribute__((always_inline)) void q5k_add_high(const uint8_t *qh, __m512i *n0, __m512i *n1,
                                                               __m512i *n2, __m512i *n3) {
    const __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)qh));
    const __m512i sixteen = _mm512_set1_epi8(16);
    const __m512i sel = _mm512_inserti64x4(_mm512_set1_epi8(0x01), _mm256_set1_epi8(0x04), 1);
    *n0 = _mm512_mask_add_epi8(*n0, _mm512_test_epi8_mask(h, sel), *n0, sixteen);
    *n1 = _mm512_mask_add_epi8(*n1, _mm512_test_epi8_mask(h, _mm512_slli_epi16(sel, 1)), *n1, sixteen);
    *n2 = _mm512_mask_add_epi8(*n2, _mm512_test_epi8_mask(h, _mm512_slli_epi16(sel, 4)), *n2, sixteen);
    *n3 = _mm512_mask_add_epi8(*n3, _mm512_test_epi8_mask(h, _mm512_slli_epi16(sel, 5)), *n3, sixteen);
}

/* The 256 levels of a Q4_K / Q5_K super-block as four 64-byte vectors in QX_Q4K order: n0 the low nibbles of
 * chunks 0, 1, n1 their high nibbles, n2 and n3 the same for chunks 2, 3 (Q5_K: with the fifth bits). */
static inline __attribute__((always_inline)) void k45_levels(const tp_k45_block *blk, bool q5, __m512i *n0,
                                                             __m512i *n1, __m512i *n2, __m512i *n3) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i v0 = _mm512_loadu_si512((const void *)blk->qs), v1 = _mm512_loadu_si512((const void *)(blk->qs + 64));
    *n0 = _mm512_and_si512(v0, m4), *n1 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), m4);
    *n2 = _mm512_and_si512(v1, m4), *n3 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4);
    if (q5) q5k_add_high(blk->qh, n0, n1, n2, n3);
}

/* Q4_K / Q5_K over nsb super-blocks: Σ_j d·sc_j·xd_j·Σ(q·x) − dmin·m_j·xd_j·Σx per sub-block j; the
 * activations are in QX_Q4K order so the low/high nibbles of 64 bytes meet 64 contiguous bytes. */
static inline __attribute__((always_inline)) void qv_k45(const uint8_t *w, bool q5, const qx_pack *pk, int nt,
                                                         int64_t nsb, float *out) {
    const __m512i i0 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    const __m512i i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(1)), i2 = _mm512_add_epi32(i0, _mm512_set1_epi32(4)),
                  i3 = _mm512_add_epi32(i0, _mm512_set1_epi32(5));
    __m512 acc[QT];
    __m256 corr[QT];
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps(), corr[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nsb; i++) {
        const tp_k45_block blk = tp_k45_block_at(w, i, q5);
        const char *ahead = (const char *)w + (i + 2) * tp_k45_block_bytes(q5);
        _mm_prefetch(ahead, _MM_HINT_T0);
        _mm_prefetch(ahead + 64, _MM_HINT_T0);
        _mm_prefetch(ahead + 128, _MM_HINT_T0);
        const __m128i smv = q4k_scales_mins(blk.scales); /* 8 scales, 8 mins */
        const __m256 scf = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(smv)), _mm256_set1_ps(h2f(blk.d)));
        const __m256 mf = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(smv, smv))),
                                        _mm256_set1_ps(h2f(blk.dmin)));
        __m512i n0, n1, n2, n3;
        k45_levels(&blk, q5, &n0, &n1, &n2, &n3);
        for (int t = 0; t < nt; t++) {
            const int8_t *xq = pk->qs[t] + i * 256;
            const __m256 s8 = _mm256_mul_ps(scf, _mm256_load_ps(pk->xd[t] + 8 * i));
            corr[t] = _mm256_fmadd_ps(mf, _mm256_load_ps(pk->xs[t] + 8 * i), corr[t]);
            acc[t] = dot4_scaled(acc[t], n0, n1, n2, n3, xq, s8, i0, i1, i2, i3);
        }
    }
    for (int t = 0; t < nt; t++) {
        out[t] += _mm512_reduce_add_ps(acc[t]) - hsum8(corr[t]);
    }
}

/* ---- One token, four weight rows per call (decode). The rows are read one after the other, so the
 * weights stream through memory in address order (what the hardware prefetchers follow best; four
 * rows interleaved block by block measured 30-40 % slower from DRAM on Zen 4), with a software
 * prefetch a fixed distance ahead that also crosses the 4 KiB pages a hardware prefetcher stops at. Each
 * row keeps its own accumulators (two chains), the corrections are folded in at the end, and the
 * four sums come out of one transposed reduction; the per-row reductions and call overheads of
 * the one-row kernels are gone, and the activation vectors are L1-resident. Q4_K decodes the
 * 6-bit scales and mins of four super-blocks in one 512-bit pass. */
#define QV_ROWS 4
/* Bytes ahead. Q8_0: on Zen 4 512 beat 1024 and 2048; on a Sapphire Rapids Xeon (PaddleOCR-VL's decode, 2
 * threads, alternated runs) 2048 gave 50.6 and 52.6 tok/s against 512's 43.2 and 45.2 (1024: 44.4, 46.2), its
 * cores reaching DRAM with a longer latency: so 2048 on Intel, 512 elsewhere. Q4_K, slower to compute: 2048
 * beat 512 and 1024 on Zen 4. */
#define QV_PF_Q8_0 512
#define QV_PF_Q8_0_INTEL 2048
#define QV_PF_Q4_K 2048

/* out[0..3] += the horizontal sums of a0..a3. */
static inline void qv_reduce4(__m512 a0, __m512 a1, __m512 a2, __m512 a3, float *out) {
    const __m512 t01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1)); /* a0 a1 a0 a1 */
    const __m512 t23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    const __m512 t = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t01), _mm512_castps_pd(t23))),
                                   _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t01), _mm512_castps_pd(t23))));
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(t), _mm512_extractf32x8_ps(t, 1));
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    _mm_storeu_ps(out, _mm_add_ps(_mm_loadu_ps(out), s));
}

#define QV_INLINE static inline __attribute__((always_inline))

/* One Q8_0 row over blocks [0, nbs): returns Σ (with the −128 correction folded in) as lanes. */
QV_INLINE __m512 qv_row_q8_0(const tp_block_q8_0 *w, const int8_t *xqs, const float *xd, const float *xs, int64_t nbs,
                             int pf_bytes) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __m512i i0 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(2)), i2 = _mm512_add_epi32(i0, _mm512_set1_epi32(4)),
                  i3 = _mm512_add_epi32(i0, _mm512_set1_epi32(6));
    __m512 acc = _mm512_setzero_ps(), acb = _mm512_setzero_ps();
    __m256 corr = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= nbs; j += 8) {
        const tp_block_q8_0 *wb = w + j;
        const char *pf = (const char *)wb + pf_bytes;
        _mm_prefetch(pf, _MM_HINT_T0);
        _mm_prefetch(pf + 64, _MM_HINT_T0);
        _mm_prefetch(pf + 128, _MM_HINT_T0);
        _mm_prefetch(pf + 192, _MM_HINT_T0);
        _mm_prefetch(pf + 256, _MM_HINT_T0);
        const int8_t *xq = xqs + j * 32;
        const __m256 dw = h2f8_strided((const uint8_t *)wb, (int)sizeof(tp_block_q8_0));
        const __m256 s8 = _mm256_mul_ps(dw, _mm256_load_ps(xd + j));
        corr = _mm256_fmadd_ps(dw, _mm256_load_ps(xs + j), corr);
        const __m512i z = _mm512_setzero_si512();
        const __m512i p0 = _mm512_dpbusd_epi32(z, _mm512_xor_si512(load2x256(wb[0].qs, wb[1].qs), flip),
                                               _mm512_load_si512((const void *)xq));
        const __m512i p1 = _mm512_dpbusd_epi32(z, _mm512_xor_si512(load2x256(wb[2].qs, wb[3].qs), flip),
                                               _mm512_load_si512((const void *)(xq + 64)));
        const __m512i p2 = _mm512_dpbusd_epi32(z, _mm512_xor_si512(load2x256(wb[4].qs, wb[5].qs), flip),
                                               _mm512_load_si512((const void *)(xq + 128)));
        const __m512i p3 = _mm512_dpbusd_epi32(z, _mm512_xor_si512(load2x256(wb[6].qs, wb[7].qs), flip),
                                               _mm512_load_si512((const void *)(xq + 192)));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p0), lanes_of8(s8, i0), acc);
        acb = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p1), lanes_of8(s8, i1), acb);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p2), lanes_of8(s8, i2), acc);
        acb = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p3), lanes_of8(s8, i3), acb);
    }
    for (; j < nbs; j++) { /* tail blocks: one 256-bit product per block */
        const __m256i wv = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)w[j].qs), _mm512_castsi512_si256(flip));
        const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv, _mm256_load_si256((const __m256i *)(xqs + j * 32)));
        const float dw = h2f(w[j].d);
        acc = _mm512_add_ps(acc, _mm512_zextps256_ps512(_mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * xd[j]))));
        corr = _mm256_add_ps(corr, _mm256_setr_ps(dw * xs[j], 0, 0, 0, 0, 0, 0, 0));
    }
    return _mm512_fmadd_ps(_mm512_zextps256_ps512(corr), _mm512_set1_ps(-128.0f), _mm512_add_ps(acc, acb));
}

/* Q8_0: rows row + r·lda (r < 4), blocks [0, nbs) of the segment; out[r] += the dots. */
QV_INLINE void qv4_q8_0_at(const char *row, size_t lda, const int8_t *xq, const float *xd, const float *xs,
                           int64_t nbs, float *out, int pf) {
    const __m512 a0 = qv_row_q8_0((const tp_block_q8_0 *)row, xq, xd, xs, nbs, pf);
    const __m512 a1 = qv_row_q8_0((const tp_block_q8_0 *)(row + lda), xq, xd, xs, nbs, pf);
    const __m512 a2 = qv_row_q8_0((const tp_block_q8_0 *)(row + 2 * lda), xq, xd, xs, nbs, pf);
    const __m512 a3 = qv_row_q8_0((const tp_block_q8_0 *)(row + 3 * lda), xq, xd, xs, nbs, pf);
    qv_reduce4(a0, a1, a2, a3, out);
}
static void qv4_q8_0(const char *row, size_t lda, const int8_t *xq, const float *xd, const float *xs, int64_t nbs,
                     float *out) {
    qv4_q8_0_at(row, lda, xq, xd, xs, nbs, out, QV_PF_Q8_0);
}
static void qv4_q8_0_intel(const char *row, size_t lda, const int8_t *xq, const float *xd, const float *xs,
                           int64_t nbs, float *out) {
    qv4_q8_0_at(row, lda, xq, xd, xs, nbs, out, QV_PF_Q8_0_INTEL);
}

/* The Q4_K / Q5_K sub-block work of one super-block given its scale vector sm = [d·sc0..7, dmin·m0..7]. */
QV_INLINE void qv_sb_k45(const uint8_t *b, bool q5, __m512 sm, const int8_t *xq, const float *xd, const float *xs,
                         __m512 *acc, __m512 *acb, __m256 *corr) {
    const __m512i i0 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    const __m512i i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(1)), i2 = _mm512_add_epi32(i0, _mm512_set1_epi32(4)),
                  i3 = _mm512_add_epi32(i0, _mm512_set1_epi32(5));
    const char *pf = (const char *)b + QV_PF_Q4_K;
    _mm_prefetch(pf, _MM_HINT_T0);
    _mm_prefetch(pf + 64, _MM_HINT_T0);
    _mm_prefetch(pf + 128, _MM_HINT_T0);
    const __m256 s8 = _mm256_mul_ps(_mm512_castps512_ps256(sm), _mm256_load_ps(xd));
    *corr = _mm256_fmadd_ps(_mm512_extractf32x8_ps(sm, 1), _mm256_load_ps(xs), *corr);
    const tp_k45_block blk = tp_k45_block_at(b, 0, q5);
    __m512i n0, n1, n2, n3;
    k45_levels(&blk, q5, &n0, &n1, &n2, &n3);
    const __m512i z = _mm512_setzero_si512();
    const __m512i p0 = _mm512_dpbusd_epi32(z, n0, _mm512_load_si512((const void *)xq));
    const __m512i p1 = _mm512_dpbusd_epi32(z, n1, _mm512_load_si512((const void *)(xq + 64)));
    const __m512i p2 = _mm512_dpbusd_epi32(z, n2, _mm512_load_si512((const void *)(xq + 128)));
    const __m512i p3 = _mm512_dpbusd_epi32(z, n3, _mm512_load_si512((const void *)(xq + 192)));
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p0), lanes_of8(s8, i0), *acc);
    *acb = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p1), lanes_of8(s8, i1), *acb);
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p2), lanes_of8(s8, i2), *acc);
    *acb = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p3), lanes_of8(s8, i3), *acb);
}

/* [d·sc0..7, dmin·m0..7] of a super-block from its decoded scale/min bytes. */
QV_INLINE __m512 qv_k45_sm(const uint8_t *b, bool q5, __m128i smb) {
    const tp_k45_block blk = tp_k45_block_at(b, 0, q5);
    const uint32_t dm = blk.d | (uint32_t)blk.dmin << 16;
    const __m128 dd = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dm)); /* d, dmin */
    const __m512 ddv = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                             _mm512_castps128_ps512(dd));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(smb)), ddv);
}

/* One Q4_K / Q5_K row over super-blocks [0, nsb): the scales of four super-blocks decoded at once (lane i =
 * super-block i: the vector form of q4k_scales_mins), the rest one by one. */
QV_INLINE __m512 qv_row_k45(const uint8_t *w, bool q5, const int8_t *xq, const float *xd, const float *xs,
                            int64_t nsb) {
    const __m512i sh_a = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
    const __m512i sh_b = _mm512_broadcast_i32x4(_mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
    const __m512i c0 = _mm512_set1_epi8((char)0xC0), c3f = _mm512_set1_epi8(0x3F), m4 = _mm512_set1_epi8(0x0F);
    const int64_t bytes = tp_k45_block_bytes(q5);
    __m512 acc = _mm512_setzero_ps(), acb = _mm512_setzero_ps();
    __m256 corr = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 4 <= nsb; i += 4) {
        const uint8_t *b = w + i * bytes;
        __m512i sv = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)tp_k45_block_at(b, 0, q5).scales));
        sv = _mm512_inserti32x4(sv, _mm_loadu_si128((const __m128i *)tp_k45_block_at(b, 1, q5).scales), 1);
        sv = _mm512_inserti32x4(sv, _mm_loadu_si128((const __m128i *)tp_k45_block_at(b, 2, q5).scales), 2);
        sv = _mm512_inserti32x4(sv, _mm_loadu_si128((const __m128i *)tp_k45_block_at(b, 3, q5).scales), 3);
        const __m512i a = _mm512_shuffle_epi8(sv, sh_a), bb = _mm512_shuffle_epi8(sv, sh_b);
        const __m512i top = _mm512_srli_epi16(_mm512_and_si512(bb, c0), 2);
        const __m512i lo = _mm512_and_si512(a, c3f);
        const __m512i hs = _mm512_or_si512(_mm512_and_si512(a, m4), top);
        const __m512i hm = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(a, 4), m4), top);
        const __m512i smv = _mm512_mask_blend_epi8(0xF000F000F000F000ull,
                                                   _mm512_mask_blend_epi8(0x00F000F000F000F0ull, lo, hs), hm);
        const __m128i smb[4] = {_mm512_castsi512_si128(smv), _mm512_extracti32x4_epi32(smv, 1),
                                _mm512_extracti32x4_epi32(smv, 2), _mm512_extracti32x4_epi32(smv, 3)};
        for (int s = 0; s < 4; s++)
            qv_sb_k45(b + s * bytes, q5, qv_k45_sm(b + s * bytes, q5, smb[s]), xq + (i + s) * 256, xd + 8 * (i + s),
                      xs + 8 * (i + s), &acc, &acb, &corr);
    }
    for (; i < nsb; i++) {
        const uint8_t *b = w + i * bytes;
        qv_sb_k45(b, q5, qv_k45_sm(b, q5, q4k_scales_mins(tp_k45_block_at(b, 0, q5).scales)), xq + i * 256, xd + 8 * i, xs + 8 * i, &acc,
                  &acb, &corr);
    }
    return _mm512_sub_ps(_mm512_add_ps(acc, acb), _mm512_zextps256_ps512(corr));
}

/* Q4_K / Q5_K: rows row + r·lda (r < 4), super-blocks [0, nsb) of the segment; out[r] += the dots. */
QV_INLINE void qv4_k45(const char *row, bool q5, size_t lda, const int8_t *xq, const float *xd, const float *xs,
                       int64_t nsb, float *out) {
    const __m512 a0 = qv_row_k45((const uint8_t *)row, q5, xq, xd, xs, nsb);
    const __m512 a1 = qv_row_k45((const uint8_t *)(row + lda), q5, xq, xd, xs, nsb);
    const __m512 a2 = qv_row_k45((const uint8_t *)(row + 2 * lda), q5, xq, xd, xs, nsb);
    const __m512 a3 = qv_row_k45((const uint8_t *)(row + 3 * lda), q5, xq, xd, xs, nsb);
    qv_reduce4(a0, a1, a2, a3, out);
}
static void qv4_q4_K(const char *r, size_t lda, const int8_t *q, const float *d, const float *s, int64_t n, float *o) {
    qv4_k45(r, false, lda, q, d, s, n, o);
}
static void qv4_q5_K(const char *r, size_t lda, const int8_t *q, const float *d, const float *s, int64_t n, float *o) {
    qv4_k45(r, true, lda, q, d, s, n, o);
}

#define QV_PF_Q32 512 /* bytes ahead, as Q8_0 */

/* One Q4_0/Q4_1/Q5_0/Q5_1 row over blocks [0, nbs) as lanes; c·Σq (c = m, or d times −offset) folded in. */
QV_INLINE __m512 qv_row_q32(tp_type type, const uint8_t *w, const int8_t *xqs, const float *xd, const float *xs,
                            int64_t nbs) {
    const tp_q32_layout L = tp_q32_layout_of(type);
    const __m512i i0 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(2)), i2 = _mm512_add_epi32(i0, _mm512_set1_epi32(4)),
                  i3 = _mm512_add_epi32(i0, _mm512_set1_epi32(6));
    __m512 acc = _mm512_setzero_ps();
    __m256 corr = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= nbs; j += 8) {
        const uint8_t *wb = w + (size_t)j * (size_t)L.bytes;
        _mm_prefetch((const char *)wb + QV_PF_Q32, _MM_HINT_T0);
        _mm_prefetch((const char *)wb + QV_PF_Q32 + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)wb + QV_PF_Q32 + 128, _MM_HINT_T0);
        const __m256 dw = h2f8_strided(wb, L.bytes);
        const __m256 cw = L.m >= 0 ? h2f8_strided(wb + L.m, L.bytes) : dw; /* tp_q32_c_at */
        corr = _mm256_fmadd_ps(cw, _mm256_load_ps(xs + j), corr);
        const __m256 s8 = _mm256_mul_ps(dw, _mm256_load_ps(xd + j));
        acc = dot4_scaled(acc, q32_levels2(&L, wb), q32_levels2(&L, wb + 2 * L.bytes), q32_levels2(&L, wb + 4 * L.bytes),
                          q32_levels2(&L, wb + 6 * L.bytes), xqs + j * 32, s8, i0, i1, i2, i3);
    }
    float tail = 0.0f, tail_c = 0.0f;
    for (; j + 2 <= nbs; j += 2) { /* tail pairs (896-wide rows: 28 blocks = 3·8 + 2·2) */
        const uint8_t *wb = w + (size_t)j * (size_t)L.bytes;
        const float d0 = f16_at(wb), d1 = f16_at(wb + L.bytes);
        const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q32_levels2(&L, wb),
                                              _mm512_load_si512((const void *)(xqs + j * 32)));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), scale2(d0 * xd[j], d1 * xd[j + 1]), acc);
        tail_c += f16_at(wb + tp_q32_c_at(&L)) * xs[j] + f16_at(wb + L.bytes + tp_q32_c_at(&L)) * xs[j + 1];
    }
    for (; j < nbs; j++) { /* an odd last block */
        uint8_t u[32];
        float d, bias;
        tp_q32_block_levels(&L, w, j, u, &d, &bias);
        int s = 0;
        for (int l = 0; l < 32; l++) s += u[l] * xqs[j * 32 + l];
        tail += d * xd[j] * (float)s;
        tail_c += f16_at(w + (size_t)j * (size_t)L.bytes + tp_q32_c_at(&L)) * xs[j];
    }
    const float factor = tp_q32_c_factor(&L);
    acc = _mm512_add_ps(acc, _mm512_zextps128_ps512(_mm_set_ss(tail + factor * tail_c)));
    return _mm512_fmadd_ps(_mm512_zextps256_ps512(corr), _mm512_set1_ps(factor), acc);
}

/* rows row + r·lda (r < 4); out[r] += the dots */
QV_INLINE void qv4_q32(tp_type type, const char *row, size_t lda, const int8_t *xq, const float *xd, const float *xs,
                       int64_t nbs, float *out) {
    const __m512 a0 = qv_row_q32(type, (const uint8_t *)row, xq, xd, xs, nbs);
    const __m512 a1 = qv_row_q32(type, (const uint8_t *)(row + lda), xq, xd, xs, nbs);
    const __m512 a2 = qv_row_q32(type, (const uint8_t *)(row + 2 * lda), xq, xd, xs, nbs);
    const __m512 a3 = qv_row_q32(type, (const uint8_t *)(row + 3 * lda), xq, xd, xs, nbs);
    qv_reduce4(a0, a1, a2, a3, out);
}

/* one instance per type, so that every layout offset is a constant */
static void qv4_q4_0(const char *r, size_t lda, const int8_t *q, const float *d, const float *s, int64_t n, float *o) {
    qv4_q32(TP_TYPE_Q4_0, r, lda, q, d, s, n, o);
}
static void qv4_q4_1(const char *r, size_t lda, const int8_t *q, const float *d, const float *s, int64_t n, float *o) {
    qv4_q32(TP_TYPE_Q4_1, r, lda, q, d, s, n, o);
}
static void qv4_q5_0(const char *r, size_t lda, const int8_t *q, const float *d, const float *s, int64_t n, float *o) {
    qv4_q32(TP_TYPE_Q5_0, r, lda, q, d, s, n, o);
}
static void qv4_q5_1(const char *r, size_t lda, const int8_t *q, const float *d, const float *s, int64_t n, float *o) {
    qv4_q32(TP_TYPE_Q5_1, r, lda, q, d, s, n, o);
}

/* One Q6_K row over super-blocks [0, nsb): per half (128 values) the 64 low-nibble bytes and 32 bytes of
 * 2-bit high parts give two 64-byte level vectors (u = q + 32, 0..63) in element order; each 32-bit
 * lane of a product covers 4 values of one 16-value sub-block, scaled by d·sc·xd (one vpermps from the
 * super-block's 16 products); the −32 offset is d·sc·(xd·Σx per 16) summed as one FMA per super-block. */
QV_INLINE __m512 qv_row_q6_K(const tp_block_q6_K *w, const int8_t *xq, const float *xd, const float *xs16,
                             int64_t nsb) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    const __m512i up01 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1); /* bits 0-1 | 2-3 -> 4-5 */
    const __m512i dn23 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1); /* bits 4-5 | 6-7 */
    const __m512i i_xd = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i i_a0 = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m512i four = _mm512_set1_epi32(4);
    __m512 acc = _mm512_setzero_ps(), acb = _mm512_setzero_ps(), corr = _mm512_setzero_ps();
    for (int64_t i = 0; i < nsb; i++) {
        const tp_block_q6_K *b = w + i;
        _mm_prefetch((const char *)b + QV_PF_Q4_K, _MM_HINT_T0);
        _mm_prefetch((const char *)b + QV_PF_Q4_K + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)b + QV_PF_Q4_K + 128, _MM_HINT_T0);
        _mm_prefetch((const char *)b + QV_PF_Q4_K + 192, _MM_HINT_T0);
        const __m512 sc = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b->scales))),
                                        _mm512_set1_ps(h2f(b->d)));
        corr = _mm512_fmadd_ps(sc, _mm512_loadu_ps(xs16 + 16 * i), corr);
        const __m512 sx = _mm512_mul_ps(sc, _mm512_permutexvar_ps(i_xd, _mm512_castps256_ps512(_mm256_load_ps(xd + 8 * i))));
        for (int h = 0; h < 2; h++) {
            const __m512i ql = _mm512_loadu_si512((const void *)(b->ql + 64 * h));
            const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
            const __m512i ua = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(_mm512_sllv_epi16(qh, up01), m30));
            const __m512i ub = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                               _mm512_and_si512(_mm512_srlv_epi16(qh, dn23), m30));
            const int8_t *x = xq + i * 256 + h * 128;
            const __m512i pa = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ua, _mm512_load_si512((const void *)x));
            const __m512i pb = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ub, _mm512_load_si512((const void *)(x + 64)));
            const __m512i ia = _mm512_add_epi32(i_a0, _mm512_set1_epi32(8 * h));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pa), _mm512_permutexvar_ps(ia, sx), acc);
            acb = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pb), _mm512_permutexvar_ps(_mm512_add_epi32(ia, four), sx), acb);
        }
    }
    return _mm512_fmadd_ps(corr, _mm512_set1_ps(-32.0f), _mm512_add_ps(acc, acb));
}

/* Q6_K: rows row + r·lda (r < 4); out[r] += the dots. xs16 (per 16 values xd·Σx) rides in the xs slot. */
static void qv4_q6_K(const char *row, size_t lda, const int8_t *xq, const float *xd, const float *xs16, int64_t nsb,
                     float *out) {
    const __m512 a0 = qv_row_q6_K((const tp_block_q6_K *)row, xq, xd, xs16, nsb);
    const __m512 a1 = qv_row_q6_K((const tp_block_q6_K *)(row + lda), xq, xd, xs16, nsb);
    const __m512 a2 = qv_row_q6_K((const tp_block_q6_K *)(row + 2 * lda), xq, xd, xs16, nsb);
    const __m512 a3 = qv_row_q6_K((const tp_block_q6_K *)(row + 3 * lda), xq, xd, xs16, nsb);
    qv_reduce4(a0, a1, a2, a3, out);
}

/* One token's activation for the whole of k (up to QV_MAXB blocks) in kernel order (as qx_repack),
 * so that every weight row streams from its start to its end in one pass. */
#define QV_MAXB (QT * QSEG)
typedef struct {
    _Alignas(64) int8_t qs[QV_MAXB * 32];
    _Alignas(64) float xd[QV_MAXB];
    _Alignas(64) float xs[QV_MAXB];
    _Alignas(64) float xs16[2 * QV_MAXB]; /* Q6_K: d · (sum of each 16 quants) */
} qx_one;

static void qdot_one(tp_type type, const void *A, size_t lda, int64_t nrows, const tp_block_q8a *x, int64_t nb,
                     float *out) {
    static const int q4k_pos[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    const bool k45 = type == TP_TYPE_Q4_K || type == TP_TYPE_Q5_K;
    const bool intel = type == TP_TYPE_Q8_0 && tp_cpu_is_intel(); /* the Q8_0 prefetch distance */
    qx_one pk;
    for (int64_t j = 0; j < nb; j++) {
        pk.xd[j] = x[j].d;
        pk.xs[j] = x[j].d * (float)(x[j].s[0] + x[j].s[1]);
        if (type == TP_TYPE_Q6_K) {
            pk.xs16[2 * j] = x[j].d * (float)x[j].s[0];
            pk.xs16[2 * j + 1] = x[j].d * (float)x[j].s[1];
        }
        const int64_t pos = k45 ? (j & ~(int64_t)7) + q4k_pos[j & 7] : j;
        _mm256_store_si256((__m256i *)(pk.qs + pos * 32), _mm256_loadu_si256((const __m256i *)x[j].qs));
    }
    void (*rows4)(const char *, size_t, const int8_t *, const float *, const float *, int64_t, float *);
    int64_t nblocks = nb;
    switch (type) {
    case TP_TYPE_Q4_K: rows4 = qv4_q4_K, nblocks = nb / 8; break;
    case TP_TYPE_Q5_K: rows4 = qv4_q5_K, nblocks = nb / 8; break;
    case TP_TYPE_Q6_K: rows4 = qv4_q6_K, nblocks = nb / 8; break;
    case TP_TYPE_Q4_0: rows4 = qv4_q4_0; break;
    case TP_TYPE_Q4_1: rows4 = qv4_q4_1; break;
    case TP_TYPE_Q5_0: rows4 = qv4_q5_0; break;
    case TP_TYPE_Q5_1: rows4 = qv4_q5_1; break;
    default: rows4 = intel ? qv4_q8_0_intel : qv4_q8_0; break;
    }
    int64_t r = 0;
    for (; r + QV_ROWS <= nrows; r += QV_ROWS) {
        out[r] = out[r + 1] = out[r + 2] = out[r + 3] = 0.0f;
        rows4((const char *)A + (size_t)r * lda, lda, pk.qs, pk.xd, type == TP_TYPE_Q6_K ? pk.xs16 : pk.xs, nblocks,
              out + r);
    }
    for (; r < nrows; r++) {
        const char *row = (const char *)A + (size_t)r * lda;
        __m512 v;
        if (k45) v = qv_row_k45((const uint8_t *)row, type == TP_TYPE_Q5_K, pk.qs, pk.xd, pk.xs, nblocks);
        else if (type == TP_TYPE_Q6_K) v = qv_row_q6_K((const tp_block_q6_K *)row, pk.qs, pk.xd, pk.xs16, nblocks);
        else if (type == TP_TYPE_Q8_0)
            v = qv_row_q8_0((const tp_block_q8_0 *)row, pk.qs, pk.xd, pk.xs, nblocks,
                            intel ? QV_PF_Q8_0_INTEL : QV_PF_Q8_0);
        else v = qv_row_q32(type, (const uint8_t *)row, pk.qs, pk.xd, pk.xs, nblocks);
        out[r] = _mm512_reduce_add_ps(v);
    }
}

/* Rows × tokens through the VNNI fast paths (type Q8_0, Q4_K or Q5_K; k a multiple of the block). */
static void qdot_fast(tp_type type, const void *A, size_t lda, int64_t nrows, const tp_block_q8a *x, int64_t ldx,
                      int64_t ntok, int64_t k, float *out, int64_t ldo) {
    qx_pack pk;
    const int64_t nb = k / TP_QK;
    const int order = type == TP_TYPE_Q4_K || type == TP_TYPE_Q5_K ? QX_Q4K : QX_PLAIN;
    for (int64_t n0 = 0; n0 < ntok; n0 += QT) {
        const int nt = (int)TP_MIN(QT, ntok - n0);
        if (nt == 1 && nb <= QV_MAXB) { /* one token: whole rows, four at a time */
            qdot_one(type, A, lda, nrows, x + n0 * ldx, nb, out + n0 * ldo);
            continue;
        }
        for (int64_t r = 0; r < nrows; r++)
            for (int t = 0; t < nt; t++) out[(n0 + t) * ldo + r] = 0.0f;
        for (int64_t b0 = 0; b0 < nb; b0 += QSEG) {
            const int64_t nbs = TP_MIN(QSEG, nb - b0);
            qx_repack(x + n0 * ldx, ldx, nt, b0, nbs, order, &pk);
            for (int64_t r = 0; r < nrows; r++) {
                const char *row = (const char *)A + (size_t)r * lda;
                float tmp[QT] = {0};
                if (type == TP_TYPE_Q4_K) qv_k45((const uint8_t *)row + b0 / 8 * tp_k45_block_bytes(false), false, &pk, nt, nbs / 8, tmp);
                else if (type == TP_TYPE_Q5_K) qv_k45((const uint8_t *)row + b0 / 8 * tp_k45_block_bytes(true), true, &pk, nt, nbs / 8, tmp);
                else qv_q8_0((const tp_block_q8_0 *)row + b0, &pk, nt, nbs, tmp);
                for (int t = 0; t < nt; t++) out[(n0 + t) * ldo + r] += tmp[t];
            }
        }
    }
}

static inline void qdot_row(tp_type type, const char *row, const tp_block_q8a *x, int64_t ldx, int nt, int64_t k,
                            bool vnni, float *out) {
    switch (type) {
    case TP_TYPE_Q8_0: qdot_q8_0((const tp_block_q8_0 *)row, x, ldx, nt, k / TP_QK, vnni, out); break;
    case TP_TYPE_Q4_0:
    case TP_TYPE_Q4_1:
    case TP_TYPE_Q5_0:
    case TP_TYPE_Q5_1: qdot_q32(type, row, x, ldx, nt, k / TP_QK, vnni, out); break;
    case TP_TYPE_Q4_K: qdot_q45_K(row, false, x, ldx, nt, k / TP_QK_K, vnni, out); break;
    case TP_TYPE_Q5_K: qdot_q45_K(row, true, x, ldx, nt, k / TP_QK_K, vnni, out); break;
    case TP_TYPE_Q6_K: qdot_q6_K((const tp_block_q6_K *)row, x, ldx, nt, k / TP_QK_K, vnni, out); break;
    default:
        for (int t = 0; t < nt; t++) out[t] = tp_vec_dot_q8a(type, row, x + t * ldx, k);
        break;
    }
}

static void qdot_row4(tp_type type, const char *row, const tp_block_q8a *x, int64_t ldx, int64_t k, bool vnni,
                      float *out) {
    qdot_row(type, row, x, ldx, 4, k, vnni, out);
}
static void qdot_row1(tp_type type, const char *row, const tp_block_q8a *x, int64_t k, bool vnni, float *out) {
    qdot_row(type, row, x, 0, 1, k, vnni, out);
}

/* out[n*ldo + r] = dot(weight row r, token n) for nrows rows (lda bytes apart) × ntok tokens
 * (ldx blocks apart). */
void tp_mm_qdot_avx512(tp_type type, const void *A, size_t lda, int64_t nrows, const tp_block_q8a *x,
                       int64_t ldx, int64_t ntok, int64_t k, float *out, int64_t ldo, bool vnni) {
    if (vnni && (type == TP_TYPE_Q8_0 || type == TP_TYPE_Q4_K || type == TP_TYPE_Q5_K)) {
        qdot_fast(type, A, lda, nrows, x, ldx, ntok, k, out, ldo);
        return;
    }
    if (vnni && (tp_is_q32(type) || type == TP_TYPE_Q6_K) && ntok == 1 && k / TP_QK <= QV_MAXB) {
        /* decode: whole rows, four at a time */
        qdot_one(type, A, lda, nrows, x, k / TP_QK, out);
        return;
    }
    for (int64_t r = 0; r < nrows; r++) {
        const char *row = (const char *)A + (size_t)r * lda;
        int64_t n = 0;
        float tmp[QT];
        for (; n + QT <= ntok; n += QT) {
            qdot_row4(type, row, x + n * ldx, ldx, k, vnni, tmp);
            for (int t = 0; t < QT; t++) out[(n + t) * ldo + r] = tmp[t];
        }
        for (; n < ntok; n++) {
            qdot_row1(type, row, x + n * ldx, k, vnni, tmp);
            out[n * ldo + r] = tmp[0];
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Int8 GEMM for quantised weights (VNNI): many tokens against packed weight panels
 *
 * A panel holds TP_QG_ROWS (32) weight rows over all of k in row-interleaved form: per block of
 * 32 k, 8 groups of 4 k, each group two 64-byte vectors (rows 0..15, 16..31) of 16 rows × 4
 * unsigned bytes, then 32 float scales and 32 float biases. A block of row r contributes
 *     dx · (scale_r · Σ u·x + bias_r · Σx)
 * to the dot with an activation block (dx, int8 x): Q8_0 stores u = w + 128, scale d, bias −128 d;
 * Q4_0/Q5_0 u = q, scale d, bias −8 d / −16 d; Q4_1/Q5_1 u = q, scale d, bias m; Q4_K/Q5_K u = q,
 * scale d·sc_j, bias −dmin·m_j. The integer sums
 * are exact; one vpdpbusd takes 4 k of 16 rows for one token (the token's 4 bytes broadcast), so
 * the float work is one convert and 3 FMAs per 32 k × 16 rows × token. Where every bias is the
 * same multiple c of its scale (Q8_0: −128, Q4_0: −8, Q5_0: −16) the block is scale_r · (dx Σ u·x + c Σx):
 * one convert and 2 FMAs. These float operations share the vector pipes with vpdpbusd, so they
 * are what the GEMM loses to peak.
 * ------------------------------------------------------------------------------------------- */

#define QG_BLOCK_BYTES (8 * 128 + 2 * TP_QG_ROWS * (int)sizeof(float))

bool tp_qgemm_type_ok(tp_type type) {
    return type == TP_TYPE_Q8_0 || tp_is_q32(type) || type == TP_TYPE_Q4_K || type == TP_TYPE_Q5_K;
}

size_t tp_qgemm_panel_bytes(int64_t k) { return (size_t)(k / TP_QK) * QG_BLOCK_BYTES; }

/* c where every block's bias is c·scale (Q8_0 −128, Q4_0 −8, Q5_0 −16; the kernel then folds it), else 0 */
static float qg_bias_per_scale(tp_type type) {
    if (type == TP_TYPE_Q8_0) return -128.0f;
    if (tp_is_q32(type)) return -(float)tp_q32_layout_of(type).offset; /* 0 where the type has a min */
    return 0.0f;
}

/* One weight row as unsigned levels u[k], and per 32-block scale and bias. */
static void qg_unpack_row(tp_type type, const char *row, int64_t k, uint8_t *u, float *sc, float *bi) {
    const int64_t nb = k / TP_QK;
    switch (type) {
    case TP_TYPE_Q8_0: {
        const tp_block_q8_0 *w = (const tp_block_q8_0 *)row;
        const __m256i flip = _mm256_set1_epi8((char)0x80);
        for (int64_t j = 0; j < nb; j++) {
            _mm256_storeu_si256((__m256i *)(u + 32 * j),
                                _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)w[j].qs), flip));
            sc[j] = h2f(w[j].d);
            bi[j] = -128.0f * sc[j];
        }
        return;
    }
    case TP_TYPE_Q4_0:
    case TP_TYPE_Q4_1:
    case TP_TYPE_Q5_0:
    case TP_TYPE_Q5_1: {
        const tp_q32_layout L = tp_q32_layout_of(type);
        for (int64_t j = 0; j < nb; j++) tp_q32_block_levels(&L, row, j, u + 32 * j, sc + j, bi + j);
        return;
    }
    default: { /* Q4_K, Q5_K */
        const bool q5 = type == TP_TYPE_Q5_K;
        for (int64_t i = 0; i < k / TP_QK_K; i++) {
            const tp_k45_block blk = tp_k45_block_at(row, i, q5);
            const uint8_t *qs = blk.qs, *qh = blk.qh, *scales = blk.scales;
            const float d = h2f(blk.d), dmin = h2f(blk.dmin);
            uint8_t *ub = u + 256 * i;
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++) {
                    uint8_t lo = (uint8_t)(qs[32 * c + l] & 0xF), hi = (uint8_t)(qs[32 * c + l] >> 4);
                    if (qh) {
                        lo = (uint8_t)(lo | (((qh[l] >> (2 * c)) & 1) << 4));
                        hi = (uint8_t)(hi | (((qh[l] >> (2 * c + 1)) & 1) << 4));
                    }
                    ub[64 * c + l] = lo;
                    ub[64 * c + 32 + l] = hi;
                }
            for (int j = 0; j < 8; j++) {
                uint8_t s, m;
                tp_get_scale_min_k4(j, scales, &s, &m);
                sc[8 * i + j] = d * (float)s;
                bi[8 * i + j] = -dmin * (float)m;
            }
        }
        return;
    }
    }
}

void tp_qgemm_pack_avx512(tp_type type, const void *A, size_t lda, int64_t nrows, int64_t k, uint8_t *panel,
                          void *tmp) {
    const int64_t nb = k / TP_QK;
    uint8_t *u = tmp;
    float *sc = (float *)(u + ((k + 63) & ~(int64_t)63)), *bi = sc + nb;
    for (int r = 0; r < TP_QG_ROWS; r++) {
        const int half = r / 16, lane = r % 16;
        if (r < nrows) {
            qg_unpack_row(type, (const char *)A + (size_t)r * lda, k, u, sc, bi);
        } else {
            memset(u, 0, (size_t)k);
            for (int64_t j = 0; j < nb; j++) sc[j] = bi[j] = 0.0f;
        }
        for (int64_t j = 0; j < nb; j++) {
            uint8_t *pb = panel + (size_t)j * QG_BLOCK_BYTES;
            for (int g = 0; g < 8; g++) memcpy(pb + g * 128 + half * 64 + lane * 4, u + 32 * j + 4 * g, 4);
            float *f = (float *)(pb + 8 * 128);
            f[r] = sc[j];
            f[TP_QG_ROWS + r] = bi[j];
        }
    }
}

size_t tp_qgemm_pack_tmp_bytes(int64_t k) {
    return (size_t)((k + 63) & ~(int64_t)63) + 2 * (size_t)(k / TP_QK) * sizeof(float) + 64;
}

/* nt tokens × one panel over all k. fold: the types' common bias/scale ratio (0: per-row biases). The
 * bias of tp_linear is added in registers; its activation (ep_act) runs on the stored 32 outputs. */
static inline __attribute__((always_inline)) void qg_kernel(const uint8_t *panel, int64_t nb, const tp_block_q8a *x,
                                                            int64_t ldx, const float *xs, const int nt,
                                                            float *const *out, __mmask16 k0, __mmask16 k1,
                                                            const float fold, const float *bias,
                                                            const tp_mm_epilogue *ep_act, int64_t m0, int rr) {
    __m512 f[4][2];
    for (int t = 0; t < nt; t++) f[t][0] = f[t][1] = _mm512_setzero_ps();
    for (int64_t j = 0; j < nb; j++) {
        const uint8_t *pj = panel + (size_t)j * QG_BLOCK_BYTES;
        _mm_prefetch((const char *)(pj + 2 * QG_BLOCK_BYTES), _MM_HINT_T0);
        _mm_prefetch((const char *)(pj + 2 * QG_BLOCK_BYTES) + 64, _MM_HINT_T0);
        __m512i a[4][2];
        for (int t = 0; t < nt; t++) a[t][0] = a[t][1] = _mm512_setzero_si512();
        for (int g = 0; g < 8; g++) {
            const __m512i w0 = _mm512_load_si512((const void *)(pj + g * 128));
            const __m512i w1 = _mm512_load_si512((const void *)(pj + g * 128 + 64));
            for (int t = 0; t < nt; t++) {
                int32_t v;
                memcpy(&v, x[t * ldx + j].qs + 4 * g, 4);
                const __m512i xb = _mm512_set1_epi32(v);
                a[t][0] = _mm512_dpbusd_epi32(a[t][0], w0, xb);
                a[t][1] = _mm512_dpbusd_epi32(a[t][1], w1, xb);
            }
        }
        const float *sf = (const float *)(pj + 8 * 128);
        const __m512 sc0 = _mm512_load_ps(sf), sc1 = _mm512_load_ps(sf + 16);
        if (fold != 0.0f) {
            for (int t = 0; t < nt; t++) {
                const __m512 dx = _mm512_set1_ps(x[t * ldx + j].d), cxs = _mm512_set1_ps(fold * xs[t * nb + j]);
                f[t][0] = _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(a[t][0]), dx, cxs), sc0, f[t][0]);
                f[t][1] = _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(a[t][1]), dx, cxs), sc1, f[t][1]);
            }
        } else {
            const __m512 b0 = _mm512_load_ps(sf + 32), b1 = _mm512_load_ps(sf + 48);
            for (int t = 0; t < nt; t++) {
                const __m512 dx = _mm512_set1_ps(x[t * ldx + j].d), dxs = _mm512_set1_ps(xs[t * nb + j]);
                f[t][0] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a[t][0]), sc0), dx, f[t][0]);
                f[t][1] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a[t][1]), sc1), dx, f[t][1]);
                f[t][0] = _mm512_fmadd_ps(b0, dxs, f[t][0]);
                f[t][1] = _mm512_fmadd_ps(b1, dxs, f[t][1]);
            }
        }
    }
    if (bias) { /* as tp_add: one rounding of out + bias */
        const __m512 b0 = _mm512_maskz_loadu_ps(k0, bias + m0), b1 = _mm512_maskz_loadu_ps(k1, bias + m0 + 16);
        for (int t = 0; t < nt; t++) {
            f[t][0] = _mm512_add_ps(f[t][0], b0);
            f[t][1] = _mm512_add_ps(f[t][1], b1);
        }
    }
    for (int t = 0; t < nt; t++) {
        _mm512_mask_storeu_ps(out[t], k0, f[t][0]);
        _mm512_mask_storeu_ps(out[t] + 16, k1, f[t][1]);
        if (ep_act) tp_mm_epilogue_row(ep_act, out[t], m0, rr); /* the 32 outputs are in L1 */
    }
}

/* the last 1-3 tokens (not inlined: rare) */
static __attribute__((noinline)) void qg_tail(const uint8_t *pn, int64_t nb, const tp_block_q8a *xt, const float *xst,
                                              int nt, float *const *o, __mmask16 k0, __mmask16 k1, float fold,
                                              const float *b, const tp_mm_epilogue *ep_act, int64_t r0, int rr) {
    for (int t = 0; t < nt; t++)
        qg_kernel(pn, nb, xt + t * nb, nb, xst + t * nb, 1, o + t, k0, k1, fold, b, ep_act, r0, rr);
}

void tp_qgemm_avx512(tp_type type, const uint8_t *panels, int64_t nrows, int64_t k, const tp_block_q8a *x,
                     const float *xs, int64_t ntok, float *out, int64_t ldo, const int32_t *out_idx,
                     const tp_mm_epilogue *ep, int64_t m0) {
    const int64_t nb = k / TP_QK;
    const float fold = qg_bias_per_scale(type);
    const size_t pbytes = tp_qgemm_panel_bytes(k);
    const float *bias = ep ? ep->bias : NULL;
    const tp_mm_epilogue act = {NULL, ep ? ep->act : TP_ACT_NONE, ep ? ep->path : TP_CPU_SCALAR};
    const tp_mm_epilogue *ep_act = act.act != TP_ACT_NONE ? &act : NULL;
    for (int64_t n0 = 0; n0 < ntok; n0 += 4) {
        const int nt = (int)TP_MIN(4, ntok - n0);
        const tp_block_q8a *xt = x + n0 * nb;
        const float *xst = xs + n0 * nb;
        for (int64_t r0 = 0; r0 < nrows; r0 += TP_QG_ROWS) {
            const uint8_t *pn = panels + (size_t)(r0 / TP_QG_ROWS) * pbytes;
            float *o[4];
            for (int t = 0; t < nt; t++)
                o[t] = out + (size_t)(out_idx ? out_idx[n0 + t] : n0 + t) * (size_t)ldo + r0;
            const int rr = (int)TP_MIN(TP_QG_ROWS, nrows - r0);
            const __mmask16 k0 = mask16(rr), k1 = mask16(rr - 16);
            const float *b = bias ? bias + m0 : NULL; /* the kernel indexes it by r0 */
            if (fold != 0.0f && nt == 4) qg_kernel(pn, nb, xt, nb, xst, 4, o, k0, k1, fold, b, ep_act, r0, rr);
            else if (nt == 4) qg_kernel(pn, nb, xt, nb, xst, 4, o, k0, k1, 0.0f, b, ep_act, r0, rr);
            else qg_tail(pn, nb, xt, xst, nt, o, k0, k1, fold, b, ep_act, r0, rr);
        }
    }
}
