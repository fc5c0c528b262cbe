/* attention_avx512.c - AVX-512 microkernels of tp_attention: the contracts are those of the scalar
 * versions in ops_attention.c (key-major St[c][r], transposed Qt[d][r] and Ot[e][r]; vectors run
 * over 16 queries). Built with AVX-512 flags; called only when the context's path allows. */
#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include "tp_attention.h"
#include "tp_avx512.h"


#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

/* St[C keys][NV·16 queries] = K[C][D] · Qt[D][..] */
INLINE void qk_tile(const float *K, size_t ldk, const float *Qt, int ldq, float *St, int lds, int D, const int C,
                    const int NV) {
    __m512 acc[6][4];
    UNROLL for (int c = 0; c < C; c++)
        UNROLL for (int v = 0; v < NV; v++) acc[c][v] = _mm512_setzero_ps();
    for (int d = 0; d < D; d++) {
        __m512 qv[4];
        UNROLL for (int v = 0; v < NV; v++) qv[v] = _mm512_loadu_ps(Qt + (size_t)d * ldq + 16 * v);
        UNROLL for (int c = 0; c < C; c++) {
            __m512 kb = _mm512_set1_ps(K[(size_t)c * ldk + d]);
            UNROLL for (int v = 0; v < NV; v++) acc[c][v] = _mm512_fmadd_ps(kb, qv[v], acc[c][v]);
        }
    }
    UNROLL for (int c = 0; c < C; c++)
        UNROLL for (int v = 0; v < NV; v++) _mm512_storeu_ps(St + (size_t)c * lds + 16 * v, acc[c][v]);
}

INLINE void qk_all(const float *K, size_t ldk, const float *Qt, int ldq, float *St, int lds, int nc, int D, const int NV) {
    int c = 0;
    for (; c + 6 <= nc; c += 6) qk_tile(K + (size_t)c * ldk, ldk, Qt, ldq, St + (size_t)c * lds, lds, D, 6, NV);
    for (; c < nc; c++) qk_tile(K + (size_t)c * ldk, ldk, Qt, ldq, St + (size_t)c * lds, lds, D, 1, NV);
}

void tp_attn_qk_avx512(const float *K, size_t ldk, const float *Qt, int ldq, float *St, int lds, int nc, int nq, int D) {
    for (int r = 0; r < nq; r += 64) {
        int nv = (nq - r) / 16 < 4 ? (nq - r) / 16 : 4;
        switch (nv) {
        case 4: qk_all(K, ldk, Qt + r, ldq, St + r, lds, nc, D, 4); break;
        case 3: qk_all(K, ldk, Qt + r, ldq, St + r, lds, nc, D, 3); break;
        case 2: qk_all(K, ldk, Qt + r, ldq, St + r, lds, nc, D, 2); break;
        default: qk_all(K, ldk, Qt + r, ldq, St + r, lds, nc, D, 1); break;
        }
    }
}

/* Ot[E values][NV·16 queries] += Σ_c V[c][E] · Pt[c][..] */
INLINE void pv_tile(const float *Pt, int ldp, const float *V, size_t ldv, float *Ot, int ldo, int nc, const int E,
                    const int NV) {
    __m512 acc[6][4];
    UNROLL for (int e = 0; e < E; e++)
        UNROLL for (int v = 0; v < NV; v++) acc[e][v] = _mm512_loadu_ps(Ot + (size_t)e * ldo + 16 * v);
    for (int c = 0; c < nc; c++) {
        __m512 pv[4];
        UNROLL for (int v = 0; v < NV; v++) pv[v] = _mm512_loadu_ps(Pt + (size_t)c * ldp + 16 * v);
        UNROLL for (int e = 0; e < E; e++) {
            __m512 vb = _mm512_set1_ps(V[(size_t)c * ldv + e]);
            UNROLL for (int v = 0; v < NV; v++) acc[e][v] = _mm512_fmadd_ps(vb, pv[v], acc[e][v]);
        }
    }
    UNROLL for (int e = 0; e < E; e++)
        UNROLL for (int v = 0; v < NV; v++) _mm512_storeu_ps(Ot + (size_t)e * ldo + 16 * v, acc[e][v]);
}

INLINE void pv_all(const float *Pt, int ldp, const float *V, size_t ldv, float *Ot, int ldo, int nc, int Dv, const int NV) {
    int e = 0;
    for (; e + 6 <= Dv; e += 6) pv_tile(Pt, ldp, V + e, ldv, Ot + (size_t)e * ldo, ldo, nc, 6, NV);
    for (; e < Dv; e++) pv_tile(Pt, ldp, V + e, ldv, Ot + (size_t)e * ldo, ldo, nc, 1, NV);
}

void tp_attn_pv_avx512(const float *Pt, int ldp, const float *V, size_t ldv, float *Ot, int ldo, int nc, int nq, int Dv) {
    for (int r = 0; r < nq; r += 64) {
        int nv = (nq - r) / 16 < 4 ? (nq - r) / 16 : 4;
        switch (nv) {
        case 4: pv_all(Pt + r, ldp, V, ldv, Ot + r, ldo, nc, Dv, 4); break;
        case 3: pv_all(Pt + r, ldp, V, ldv, Ot + r, ldo, nc, Dv, 3); break;
        case 2: pv_all(Pt + r, ldp, V, ldv, Ot + r, ldo, nc, Dv, 2); break;
        default: pv_all(Pt + r, ldp, V, ldv, Ot + r, ldo, nc, Dv, 1); break;
        }
    }
}

/* Q8_0 blocks (an f16 scale, then 32 int8; a Q8_0 KV cache): the block's low and high 16 values as floats,
 * and its scale. */
static inline __m512 q8_lo(const uint8_t *blk) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2)))); }
static inline __m512 q8_hi(const uint8_t *blk) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18)))); }
static inline float q8_scale(const uint8_t *blk) {
    uint16_t h;
    memcpy(&h, blk, sizeof h);
    return _cvtsh_ss(h);
}

/* n (a multiple of 32) elements of Q8_0 blocks as floats: q·d, as tp_dequantize_row. */
void tp_attn_q8_0_to_f32_avx512(const void *src, float *dst, int n) {
    const uint8_t *b = src;
    for (int i = 0; i < n; i += 32, b += 34) {
        const __m512 d = _mm512_set1_ps(q8_scale(b));
        _mm512_storeu_ps(dst + i, _mm512_mul_ps(q8_lo(b), d));
        _mm512_storeu_ps(dst + i + 16, _mm512_mul_ps(q8_hi(b), d));
    }
}

void tp_attn_add_rel_avx512(float *St, int lds, int nc, int nq, const float *RHt, const float *RWt, int ldr, int jh,
                            int jw, int Kw) {
    for (int c = 0; c < nc; c++) {
        float *srow = St + (size_t)c * lds;
        const float *a = RHt + (size_t)jh * ldr, *w = RWt + (size_t)jw * ldr;
        for (int r = 0; r < nq; r += 16)
            _mm512_storeu_ps(srow + r, _mm512_add_ps(_mm512_loadu_ps(srow + r),
                                                     _mm512_add_ps(_mm512_loadu_ps(a + r), _mm512_loadu_ps(w + r))));
        if (++jw == Kw) {
            jw = 0;
            jh++;
        }
    }
}

/* exp(x); results below e^-87 (and exp(-inf)) are 0; NaN propagates. */
INLINE __m512 exp512(__m512 x) {
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 ln2hi = _mm512_set1_ps(0.693359375f), ln2lo = _mm512_set1_ps(-2.12194440e-4f);
    __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
    __m512 xc = _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(_mm512_set1_ps(-88.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2hi, xc);
    r = _mm512_fnmadd_ps(n, ln2lo, r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 r2 = _mm512_mul_ps(r, r);
    p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512 y = _mm512_scalef_ps(p, n);
    return _mm512_mask_mov_ps(y, tiny, _mm512_setzero_ps());
}

void tp_attn_softmax_avx512(float *St, int lds, int nc, int nq, float *m, float *l, float *Ot, int ldo, int Dv) {
    for (int r = 0; r < nq; r += 16) {
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int c = 0; c < nc; c++) mx = _mm512_max_ps(mx, _mm512_loadu_ps(St + (size_t)c * lds + r));
        __m512 mo = _mm512_loadu_ps(m + r);
        __m512 mn = _mm512_max_ps(mo, mx);
        __m512 msafe = _mm512_mask_mov_ps(mn, _mm512_cmp_ps_mask(mn, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ),
                                          _mm512_setzero_ps());
        __m512 alpha = exp512(_mm512_sub_ps(mo, msafe));
        __m512 sum = _mm512_setzero_ps();
        for (int c = 0; c < nc; c++) {
            float *s = St + (size_t)c * lds + r;
            __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(s), msafe));
            _mm512_storeu_ps(s, e);
            sum = _mm512_add_ps(sum, e);
        }
        _mm512_storeu_ps(l + r, _mm512_fmadd_ps(_mm512_loadu_ps(l + r), alpha, sum));
        _mm512_storeu_ps(m + r, mn);
        if (_mm512_cmp_ps_mask(alpha, _mm512_set1_ps(1.0f), _CMP_NEQ_UQ) != 0)
            for (int e = 0; e < Dv; e++) {
                float *o = Ot + (size_t)e * ldo + r;
                _mm512_storeu_ps(o, _mm512_mul_ps(_mm512_loadu_ps(o), alpha));
            }
    }
}

/* One query (nr = 1): St[c][0] = K[c] · q (q contiguous, D floats), lanes 1..15 of St set to 0. */
void tp_attn_qk1_avx512(const float *K, size_t ldk, const float *q, float *St, int lds, int nc, int D) {
    const int dfull = D & ~15;
    const __mmask16 tail = (__mmask16)((1u << (D & 15)) - 1);
    for (int c = 0; c < nc; c++) {
        const float *kr = K + (size_t)c * ldk;
        __m512 acc = _mm512_setzero_ps();
        int d = 0;
        for (; d < dfull; d += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(kr + d), _mm512_loadu_ps(q + d), acc);
        if (tail) acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, kr + d), _mm512_maskz_loadu_ps(tail, q + d), acc);
        __m512 row = _mm512_setzero_ps();
        row = _mm512_mask_mov_ps(row, 1, _mm512_set1_ps(_mm512_reduce_add_ps(acc)));
        _mm512_storeu_ps(St + (size_t)c * lds, row);
    }
}

/* One query: Ot[e][0] += Σ_c Pt[c][0] · V[c][e]. */
INLINE void pv1_chunk(const float *Pt, int ldp, const float *vb, size_t ldv, float *buf, int nc, __mmask16 last,
                      const int NV) {
    __m512 acc[8];
    UNROLL for (int v = 0; v < NV; v++) acc[v] = _mm512_maskz_loadu_ps(v == NV - 1 ? last : 0xFFFF, buf + 16 * v);
    for (int c = 0; c < nc; c++) {
        __m512 p = _mm512_set1_ps(Pt[(size_t)c * ldp]);
        const float *vr = vb + (size_t)c * ldv;
        UNROLL for (int v = 0; v < NV; v++)
            acc[v] = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(v == NV - 1 ? last : 0xFFFF, vr + 16 * v), acc[v]);
    }
    UNROLL for (int v = 0; v < NV; v++) _mm512_mask_storeu_ps(buf + 16 * v, v == NV - 1 ? last : 0xFFFF, acc[v]);
}

void tp_attn_pv1_avx512(const float *Pt, int ldp, const float *V, size_t ldv, float *Ot, int ldo, int nc, int Dv) {
    float buf[128] __attribute__((aligned(64)));
    for (int e0 = 0; e0 < Dv; e0 += 128) {
        int ne = Dv - e0 < 128 ? Dv - e0 : 128;
        int nv = (ne + 15) / 16;
        __mmask16 last = (__mmask16)((ne & 15) ? (1u << (ne & 15)) - 1 : 0xFFFF);
        for (int e = 0; e < ne; e++) buf[e] = Ot[(size_t)(e0 + e) * ldo];
        const float *vb = V + e0;
        switch (nv) {
        case 8: pv1_chunk(Pt, ldp, vb, ldv, buf, nc, last, 8); break;
        case 7: pv1_chunk(Pt, ldp, vb, ldv, buf, nc, last, 7); break;
        case 6: pv1_chunk(Pt, ldp, vb, ldv, buf, nc, last, 6); break;
        case 5: pv1_chunk(Pt, ldp, vb, ldv, buf, nc, last, 5); break;
        case 4: pv1_chunk(Pt, ldp, vb, ldv, buf, nc, last, 4); break;
        case 3: pv1_chunk(Pt, ldp, vb, ldv, buf, nc, last, 3); break;
        case 2: pv1_chunk(Pt, ldp, vb, ldv, buf, nc, last, 2); break;
        default: pv1_chunk(Pt, ldp, vb, ldv, buf, nc, last, 1); break;
        }
        for (int e = 0; e < ne; e++) Ot[(size_t)(e0 + e) * ldo] = buf[e];
    }
}

/* ---- decode (one query per head, all heads of a key block at once; contracts at the scalar
 * versions in ops_attention.c): keys are read in memory order, every head of a key row in turn. ---- */
/* Decode attention streams the whole cache once per token (62 MB at context 1000 for DeepSeek-OCR's
 * F16 cache), a K chunk then a V chunk, so the hardware prefetchers restart at every 4 KiB page; a
 * software prefetch a few lines ahead of each read keeps the reads in flight (measured on Zen 4, 2
 * threads, cold 12-layer cache: 25 % less time; 128-384 bytes ahead alike, 1-2 KiB worse). */
#define DEC_PF 256
static inline void dec_prefetch(const void *p) { _mm_prefetch((const char *)p + DEC_PF, _MM_HINT_T0); }

void tp_attn_dec_qk_avx512(const float *K, size_t ldk, size_t ldh, int group, const float *Q, float *St, int lds,
                           int nc, int H, int nq, int D) {
    const int dfull = D & ~31;
    for (int c = 0; c < nc; c++) {
        const float *kc = K + (size_t)c * ldk;
        float *srow = St + (size_t)c * lds;
        for (int h = 0; h < H; h++) {
            const float *kr = kc + (size_t)(h / group) * ldh, *qh = Q + (size_t)h * D;
            __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
            int d = 0;
            for (; d < dfull; d += 32) {
                dec_prefetch(kr + d);
                dec_prefetch(kr + d + 16);
                a = _mm512_fmadd_ps(_mm512_loadu_ps(kr + d), _mm512_loadu_ps(qh + d), a);
                b = _mm512_fmadd_ps(_mm512_loadu_ps(kr + d + 16), _mm512_loadu_ps(qh + d + 16), b);
            }
            for (; d < D; d += 16) {
                const __mmask16 m = (__mmask16)(D - d >= 16 ? 0xFFFF : (1u << (D - d)) - 1);
                a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, kr + d), _mm512_maskz_loadu_ps(m, qh + d), a);
            }
            srow[h] = _mm512_reduce_add_ps(_mm512_add_ps(a, b));
        }
        for (int h = H; h < nq; h++) srow[h] = 0.0f;
    }
}

void tp_attn_dec_pv_avx512(const float *Pt, int ldp, const float *V, size_t ldv, size_t ldh, int group, float *O,
                           int nc, int H, int Dv) {
    for (int c = 0; c < nc; c++) {
        const float *vc = V + (size_t)c * ldv;
        const float *pr = Pt + (size_t)c * ldp;
        for (int h = 0; h < H; h++) {
            const __m512 p = _mm512_set1_ps(pr[h]);
            const float *vr = vc + (size_t)(h / group) * ldh;
            float *o = O + (size_t)h * Dv;
            for (int e = 0; e < Dv; e += 16) {
                const __mmask16 m = (__mmask16)(Dv - e >= 16 ? 0xFFFF : (1u << (Dv - e)) - 1);
                dec_prefetch(vr + e);
                _mm512_mask_storeu_ps(o + e, m, _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(m, vr + e), _mm512_maskz_loadu_ps(m, o + e)));
            }
        }
    }
}

/* ---- an F16 KV cache (F16C conversion on load; sums in the order of the F32 forms) ---- */

static inline __m512 ld16h(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
static inline __m512 ld16h_mask(__mmask16 m, const uint16_t *p) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }

void tp_attn_dec_qk_f16_avx512(const uint16_t *K, size_t ldk, size_t ldh, int group, const float *Q, float *St, int lds,
                               int nc, int H, int nq, int D) {
    const int dfull = D & ~31;
    for (int c = 0; c < nc; c++) {
        const uint16_t *kc = K + (size_t)c * ldk;
        float *srow = St + (size_t)c * lds;
        for (int h = 0; h < H; h++) {
            const uint16_t *kr = kc + (size_t)(h / group) * ldh;
            const float *qh = Q + (size_t)h * D;
            __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
            int d = 0;
            for (; d < dfull; d += 32) {
                dec_prefetch(kr + d);
                a = _mm512_fmadd_ps(ld16h(kr + d), _mm512_loadu_ps(qh + d), a);
                b = _mm512_fmadd_ps(ld16h(kr + d + 16), _mm512_loadu_ps(qh + d + 16), b);
            }
            for (; d < D; d += 16) {
                const __mmask16 m = (__mmask16)(D - d >= 16 ? 0xFFFF : (1u << (D - d)) - 1);
                a = _mm512_fmadd_ps(ld16h_mask(m, kr + d), _mm512_maskz_loadu_ps(m, qh + d), a);
            }
            srow[h] = _mm512_reduce_add_ps(_mm512_add_ps(a, b));
        }
        for (int h = H; h < nq; h++) srow[h] = 0.0f;
    }
}

void tp_attn_dec_pv_f16_avx512(const float *Pt, int ldp, const uint16_t *V, size_t ldv, size_t ldh, int group, float *O,
                               int nc, int H, int Dv) {
    for (int c = 0; c < nc; c++) {
        const uint16_t *vc = V + (size_t)c * ldv;
        const float *pr = Pt + (size_t)c * ldp;
        for (int h = 0; h < H; h++) {
            const __m512 p = _mm512_set1_ps(pr[h]);
            const uint16_t *vr = vc + (size_t)(h / group) * ldh;
            float *o = O + (size_t)h * Dv;
            for (int e = 0; e < Dv; e += 16) {
                const __mmask16 m = (__mmask16)(Dv - e >= 16 ? 0xFFFF : (1u << (Dv - e)) - 1);
                if ((e & 31) == 0) dec_prefetch(vr + e); /* one line per 32 values */
                _mm512_mask_storeu_ps(o + e, m, _mm512_fmadd_ps(p, ld16h_mask(m, vr + e), _mm512_maskz_loadu_ps(m, o + e)));
            }
        }
    }
}

/* The same over a Q8_0 cache (ldk, ldv, ldh in bytes; D, Dv multiples of 32): each block's 32 int8 are
 * widened to floats (q8_lo / q8_hi) and its scale applied once per block. */
void tp_attn_dec_qk_q8_avx512(const uint8_t *K, size_t ldk, size_t ldh, int group, const float *Q, float *St, int lds,
                              int nc, int H, int nq, int D) {
    for (int c = 0; c < nc; c++) {
        const uint8_t *kc = K + (size_t)c * ldk;
        float *srow = St + (size_t)c * lds;
        for (int h = 0; h < H; h++) {
            const uint8_t *kr = kc + (size_t)(h / group) * ldh;
            const float *qh = Q + (size_t)h * D;
            __m512 a = _mm512_setzero_ps();
            for (int d = 0; d < D; d += 32, kr += 34) {
                dec_prefetch(kr);
                const __m512 t = _mm512_fmadd_ps(q8_hi(kr), _mm512_loadu_ps(qh + d + 16),
                                                 _mm512_mul_ps(q8_lo(kr), _mm512_loadu_ps(qh + d)));
                a = _mm512_fmadd_ps(t, _mm512_set1_ps(q8_scale(kr)), a);
            }
            srow[h] = _mm512_reduce_add_ps(a);
        }
        for (int h = H; h < nq; h++) srow[h] = 0.0f;
    }
}

void tp_attn_dec_pv_q8_avx512(const float *Pt, int ldp, const uint8_t *V, size_t ldv, size_t ldh, int group, float *O,
                              int nc, int H, int Dv) {
    for (int c = 0; c < nc; c++) {
        const uint8_t *vc = V + (size_t)c * ldv;
        const float *pr = Pt + (size_t)c * ldp;
        for (int h = 0; h < H; h++) {
            const uint8_t *vr = vc + (size_t)(h / group) * ldh;
            float *o = O + (size_t)h * Dv;
            for (int e = 0; e < Dv; e += 32, vr += 34) {
                dec_prefetch(vr);
                const __m512 p = _mm512_set1_ps(pr[h] * q8_scale(vr));
                _mm512_storeu_ps(o + e, _mm512_fmadd_ps(p, q8_lo(vr), _mm512_loadu_ps(o + e)));
                _mm512_storeu_ps(o + e + 16, _mm512_fmadd_ps(p, q8_hi(vr), _mm512_loadu_ps(o + e + 16)));
            }
        }
    }
}

void tp_attn_f16_to_f32_avx512(const uint16_t *src, float *dst, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, ld16h(src + i));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, m, ld16h_mask(m, src + i));
    }
}

/* ---------------------------------------------------------------------------------------------
 * TP_PRECISION_BF16 operands (q·scale, K, P and V rounded to BF16, F32 accumulation), shared by the
 * AMX tiles (attention_amx.c) and the vdpbf16ps kernels below (AVX512-BF16 without AMX).
 * Pair tiles: tile (kt, rt) at dst + (kt·nq/16 + rt)·512 holds rows 32kt..32kt+31 × columns
 * 16rt..16rt+15 as [row/2][col][row%2] (AMX's VNNI B layout; one 64-byte row = one vector of 16
 * columns, each lane a pair of rows: vdpbf16ps's operand too).
 * ------------------------------------------------------------------------------------------- */

/* n floats to bf16 (round to nearest even). */
void tp_attn_bf16_rows(const float *src, int64_t n, uint16_t *dst) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 lo = _mm512_loadu_ps(src + i), hi = _mm512_loadu_ps(src + i + 16);
        _mm512_storeu_si512((void *)(dst + i), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    for (; i < n; i++) {
        __m128bh h = _mm_cvtneps_pbh(_mm_set_ss(src[i]));
        uint16_t u;
        memcpy(&u, &h, sizeof u);
        dst[i] = u;
    }
}

/* src rows (lds floats apart, nq a multiple of 16 columns) to B tiles of pairs: tile (kt, rt) at
 * dst + (kt·nq/16 + rt)·512 holds rows 32kt..32kt+31 × columns 16rt..16rt+15 as [row/2][col][row%2].
 * Rows nrows..nrows_pad-1 (nrows_pad a multiple of 32) are zeros. */
void tp_attn_bf16_pack_pairs(const float *src, int lds, int nrows, int nrows_pad, int nq, uint16_t *dst) {
    const int nqt = nq / 16;
    /* output word 2i <- i (row c), 2i+1 <- 16 + i (row c+1) of cvtne2ps(row c+1, row c) */
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                         23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512 zero = _mm512_setzero_ps();
    for (int c = 0; c < nrows_pad; c += 2) {
        const int kt = c / 32, kp = (c % 32) / 2;
        const float *r0 = src + (size_t)c * lds, *r1 = r0 + lds;
        for (int rt = 0; rt < nqt; rt++) {
            __m512 a = c < nrows ? _mm512_loadu_ps(r0 + rt * 16) : zero;
            __m512 b = c + 1 < nrows ? _mm512_loadu_ps(r1 + rt * 16) : zero;
            __m512i v = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(b, a));
            _mm512_storeu_si512((void *)(dst + ((size_t)kt * nqt + rt) * 512 + kp * 32), v);
        }
    }
}

/* The online-softmax step of ops_attention.c (same contract as tp_attn_softmax_avx512: per query r,
 * m' = max(m, max_c St[c][r]), l = l·e^(m−m') + Σ_c e^(St−m'), Ot[e][r] ·= e^(m−m')) fused with the BF16
 * packing of the probabilities: they go straight into Pp as pair tiles (see tp_attn_bf16_pack_pairs,
 * rows nc..round32(nc) zero) and St is only read. */
void tp_attn_bf16_softmax_pack(const float *St, int lds, int nc, int nq, float *m, float *l, float *Ot, int ldo,
                              int Dv, uint16_t *Pp) {
    const int nqt = nq / 16, ncp = (nc + 31) & ~31;
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                         23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (int rt = 0; rt < nqt; rt++) {
        const int r = rt * 16;
        __m512 mx0 = _mm512_set1_ps(-INFINITY), mx1 = mx0;
        int c = 0;
        for (; c + 2 <= nc; c += 2) {
            mx0 = _mm512_max_ps(mx0, _mm512_loadu_ps(St + (size_t)c * lds + r));
            mx1 = _mm512_max_ps(mx1, _mm512_loadu_ps(St + (size_t)(c + 1) * lds + r));
        }
        if (c < nc) mx0 = _mm512_max_ps(mx0, _mm512_loadu_ps(St + (size_t)c * lds + r));
        const __m512 mo = _mm512_loadu_ps(m + r);
        const __m512 mn = _mm512_max_ps(mo, _mm512_max_ps(mx0, mx1));
        const __m512 msafe = _mm512_mask_mov_ps(mn, _mm512_cmp_ps_mask(mn, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ),
                                                _mm512_setzero_ps());
        const __m512 alpha = exp512(_mm512_sub_ps(mo, msafe));
        __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
        for (c = 0; c < ncp; c += 2) {
            __m512 e0 = _mm512_setzero_ps(), e1 = _mm512_setzero_ps();
            if (c < nc) e0 = exp512(_mm512_sub_ps(_mm512_loadu_ps(St + (size_t)c * lds + r), msafe));
            if (c + 1 < nc) e1 = exp512(_mm512_sub_ps(_mm512_loadu_ps(St + (size_t)(c + 1) * lds + r), msafe));
            sum0 = _mm512_add_ps(sum0, e0);
            sum1 = _mm512_add_ps(sum1, e1);
            __m512i v = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
            _mm512_storeu_si512((void *)(Pp + ((size_t)(c / 32) * nqt + rt) * 512 + ((c % 32) / 2) * 32), v);
        }
        _mm512_storeu_ps(l + r, _mm512_fmadd_ps(_mm512_loadu_ps(l + r), alpha, _mm512_add_ps(sum0, sum1)));
        _mm512_storeu_ps(m + r, mn);
        if (_mm512_cmp_ps_mask(alpha, _mm512_set1_ps(1.0f), _CMP_NEQ_UQ) != 0)
            for (int e = 0; e < Dv; e++) {
                float *o = Ot + (size_t)e * ldo + r;
                _mm512_storeu_ps(o, _mm512_mul_ps(_mm512_loadu_ps(o), alpha));
            }
    }
}

static inline __m512 dpbf16(__m512 acc, __m512i a, __m512i b) { return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b); }

static inline __m512i bcast_pair(const uint16_t *p) {
    uint32_t u;
    memcpy(&u, p, sizeof u);
    return _mm512_set1_epi32((int)u);
}

/* Both BF16 products are C[r][16·v + i] (+)= Σ_k A[r][k]·B[k][16·v + i] over k < nk (a multiple of 32):
 * R rows of A (BF16, lda apart: K's keys, or Vt's values) broadcast a pair of k at a time against NV
 * vectors of the pair tiles B (Q, or P). */
INLINE void pair_tile(const uint16_t *A, size_t lda, const uint16_t *B, int nqt, float *C, int ldc, int nk,
                      bool accumulate, const int R, const int NV) {
    __m512 acc[6][4];
    UNROLL for (int r = 0; r < R; r++)
        UNROLL for (int v = 0; v < NV; v++)
            acc[r][v] = accumulate ? _mm512_loadu_ps(C + (size_t)r * ldc + 16 * v) : _mm512_setzero_ps();
    for (int kt = 0; kt < nk / 32; kt++) {
        const uint16_t *bt = B + (size_t)kt * (size_t)nqt * 512;
        for (int kp = 0; kp < 16; kp++) {
            const int k = kt * 32 + 2 * kp;
            __m512i bv[4];
            UNROLL for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_si512((const void *)(bt + (size_t)v * 512 + kp * 32));
            UNROLL for (int r = 0; r < R; r++) {
                const __m512i ab = bcast_pair(A + (size_t)r * lda + k);
                UNROLL for (int v = 0; v < NV; v++) acc[r][v] = dpbf16(acc[r][v], ab, bv[v]);
            }
        }
    }
    UNROLL for (int r = 0; r < R; r++)
        UNROLL for (int v = 0; v < NV; v++) _mm512_storeu_ps(C + (size_t)r * ldc + 16 * v, acc[r][v]);
}

/* rows in tiles of 6, then 2, then 1 */
INLINE void pair_rows(const uint16_t *A, size_t lda, const uint16_t *B, int nqt, float *C, int ldc, int nrows, int nk,
                      bool accumulate, const int NV) {
    int r = 0;
    for (; r + 6 <= nrows; r += 6) pair_tile(A + (size_t)r * lda, lda, B, nqt, C + (size_t)r * ldc, ldc, nk, accumulate, 6, NV);
    for (; r + 2 <= nrows; r += 2) pair_tile(A + (size_t)r * lda, lda, B, nqt, C + (size_t)r * ldc, ldc, nk, accumulate, 2, NV);
    if (r < nrows) pair_tile(A + (size_t)r * lda, lda, B, nqt, C + (size_t)r * ldc, ldc, nk, accumulate, 1, NV);
}

static void pair_product(const uint16_t *A, size_t lda, const uint16_t *B, int nq, float *C, int ldc, int nrows, int nk,
                         bool accumulate) {
    const int nqt = nq / 16;
    switch (nqt) {
    case 4: pair_rows(A, lda, B, nqt, C, ldc, nrows, nk, accumulate, 4); break;
    case 3: pair_rows(A, lda, B, nqt, C, ldc, nrows, nk, accumulate, 3); break;
    case 2: pair_rows(A, lda, B, nqt, C, ldc, nrows, nk, accumulate, 2); break;
    default: pair_rows(A, lda, B, nqt, C, ldc, nrows, nk, accumulate, 1); break;
    }
}

/* St[c][r] = Σ_d K[c][d]·Q[d][r] for c < nc, r < nq (a multiple of 16, at most 64);
 * D a multiple of 32 (ops_attention.c zero pads the BF16 copies). */
void tp_attn_bf16_qk_avx512(const uint16_t *Kb, size_t ldk, const uint16_t *Qp, float *St, int lds, int nc, int nq,
                            int D) {
    pair_product(Kb, ldk, Qp, nq, St, lds, nc, D, false);
}

/* Ot[e][r] += Σ_c Vt[e][c]·P[c][r] over c < round32(nc) (P pairs zero past nc; Vt columns there must be
 * finite); e < Dv, r < nq (a multiple of 16, at most 64). */
void tp_attn_bf16_pv_avx512(const uint16_t *Vt, size_t ldvt, const uint16_t *Pp, float *Ot, int ldo, int nc, int nq,
                            int Dv) {
    pair_product(Vt, ldvt, Pp, nq, Ot, ldo, Dv, (nc + 31) & ~31, true);
}

/* ---------------------------------------------------------------------------------------------
 * The tile's transposes (rows of the tensors <-> the key- / query-major scratch), 16x16 at a time
 * ------------------------------------------------------------------------------------------- */

/* rows row0..row0+15 of src (row i at src + i·lds floats; rows >= n read as 0) × 16 floats from column
 * c0 (nc of them), transposed: r[j] holds column c0 + j of the 16 rows */
static inline void load_t16(const float *src, size_t lds, int64_t row0, int64_t n, int64_t c0, int nc, __m512 r[16]) {
    const __mmask16 m = mask16(nc);
    for (int i = 0; i < 16; i++)
        r[i] = row0 + i < n ? _mm512_maskz_loadu_ps(m, src + (size_t)(row0 + i) * lds + c0) : _mm512_setzero_ps();
    transpose16(r);
}

void tp_attn_load_qt_avx512(const float *q, size_t ldq, int64_t i0, int nr, int nq, int D, float scale, float *Qt,
                            int ldt) {
    const __m512 s = _mm512_set1_ps(scale);
    for (int r0 = 0; r0 < nq; r0 += 16)
        for (int d0 = 0; d0 < D; d0 += 16) {
            __m512 r[16];
            load_t16(q, ldq, i0 + r0, i0 + nr, d0, D - d0, r);
            for (int j = 0; j < 16 && d0 + j < D; j++)
                _mm512_storeu_ps(Qt + (size_t)(d0 + j) * ldt + r0, _mm512_mul_ps(r[j], s));
        }
}

void tp_attn_store_out_avx512(const float *Ot, int ldo, const float *l, int nr, int Dv, float *out, size_t ldout) {
    for (int r0 = 0; r0 < nr; r0 += 16) {
        float inv[16]; /* once per query, not per 16 outputs */
        for (int j = 0; j < 16; j++) inv[j] = r0 + j < nr && l[r0 + j] > 0.0f ? 1.0f / l[r0 + j] : 0.0f;
        for (int e0 = 0; e0 < Dv; e0 += 16) {
            __m512 r[16];
            load_t16(Ot, (size_t)ldo, e0, Dv, r0, 16, r);
            const __mmask16 m = mask16(Dv - e0);
            for (int j = 0; j < 16 && r0 + j < nr; j++) {
                float *o = out + (size_t)(r0 + j) * ldout + e0;
                _mm512_mask_storeu_ps(o, m, _mm512_mul_ps(r[j], _mm512_set1_ps(inv[j])));
            }
        }
    }
}

void tp_attn_bf16_vt_avx512(const float *v, size_t ldv, int64_t n, int64_t c0, int64_t c1, int Dv, uint16_t *vt,
                            size_t ldvt) {
    for (int64_t cb = c0; cb < c1; cb += 16)
        for (int e0 = 0; e0 < Dv; e0 += 16) {
            __m512 r[16];
            load_t16(v, ldv, cb, n, e0, Dv - e0, r);
            const __mmask16 m = mask16((int)(c1 - cb));
            for (int j = 0; j < 16 && e0 + j < Dv; j++)
                _mm256_mask_storeu_epi16(vt + (size_t)(e0 + j) * ldvt + cb, m, (__m256i)_mm512_cvtneps_pbh(r[j]));
        }
}
