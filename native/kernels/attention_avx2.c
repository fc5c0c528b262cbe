/* attention_avx2.c - AVX2+FMA microkernels of tp_attention: the contracts are those of the scalar
 * versions in ops_attention.c (key-major St[c][r], transposed Qt[d][r] and Ot[e][r]; vectors run
 * over 8 queries, tiles over 16). Built with AVX2 flags; called only when the context's path allows. */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include "tp_attention.h"


#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

/* St[C keys][16 queries] = K[C][D] · Qt[D][16] */
INLINE void qk_tile(const float *K, size_t ldk, const float *Qt, int ldq, float *St, int lds, int D, const int C) {
    __m256 acc[6][2];
    UNROLL for (int c = 0; c < C; c++) acc[c][0] = acc[c][1] = _mm256_setzero_ps();
    for (int d = 0; d < D; d++) {
        __m256 q0 = _mm256_loadu_ps(Qt + (size_t)d * ldq), q1 = _mm256_loadu_ps(Qt + (size_t)d * ldq + 8);
        UNROLL for (int c = 0; c < C; c++) {
            __m256 kb = _mm256_broadcast_ss(K + (size_t)c * ldk + d);
            acc[c][0] = _mm256_fmadd_ps(kb, q0, acc[c][0]);
            acc[c][1] = _mm256_fmadd_ps(kb, q1, acc[c][1]);
        }
    }
    UNROLL for (int c = 0; c < C; c++) {
        _mm256_storeu_ps(St + (size_t)c * lds, acc[c][0]);
        _mm256_storeu_ps(St + (size_t)c * lds + 8, acc[c][1]);
    }
}

void tp_attn_qk_avx2(const float *K, size_t ldk, const float *Qt, int ldq, float *St, int lds, int nc, int nq, int D) {
    int c = 0;
    for (; c + 6 <= nc; c += 6)
        for (int r = 0; r < nq; r += 16) qk_tile(K + (size_t)c * ldk, ldk, Qt + r, ldq, St + (size_t)c * lds + r, lds, D, 6);
    for (; c < nc; c++)
        for (int r = 0; r < nq; r += 16) qk_tile(K + (size_t)c * ldk, ldk, Qt + r, ldq, St + (size_t)c * lds + r, lds, D, 1);
}

/* Ot[E values][16 queries] += Σ_c V[c][E] · Pt[c][16] */
INLINE void pv_tile(const float *Pt, int ldp, const float *V, size_t ldv, float *Ot, int ldo, int nc, const int E) {
    __m256 acc[6][2];
    UNROLL for (int e = 0; e < E; e++) {
        acc[e][0] = _mm256_loadu_ps(Ot + (size_t)e * ldo);
        acc[e][1] = _mm256_loadu_ps(Ot + (size_t)e * ldo + 8);
    }
    for (int c = 0; c < nc; c++) {
        __m256 p0 = _mm256_loadu_ps(Pt + (size_t)c * ldp), p1 = _mm256_loadu_ps(Pt + (size_t)c * ldp + 8);
        UNROLL for (int e = 0; e < E; e++) {
            __m256 vb = _mm256_broadcast_ss(V + (size_t)c * ldv + e);
            acc[e][0] = _mm256_fmadd_ps(vb, p0, acc[e][0]);
            acc[e][1] = _mm256_fmadd_ps(vb, p1, acc[e][1]);
        }
    }
    UNROLL for (int e = 0; e < E; e++) {
        _mm256_storeu_ps(Ot + (size_t)e * ldo, acc[e][0]);
        _mm256_storeu_ps(Ot + (size_t)e * ldo + 8, acc[e][1]);
    }
}

void tp_attn_pv_avx2(const float *Pt, int ldp, const float *V, size_t ldv, float *Ot, int ldo, int nc, int nq, int Dv) {
    for (int r = 0; r < nq; r += 16) {
        int e = 0;
        for (; e + 6 <= Dv; e += 6) pv_tile(Pt + r, ldp, V + e, ldv, Ot + (size_t)e * ldo + r, ldo, nc, 6);
        for (; e < Dv; e++) pv_tile(Pt + r, ldp, V + e, ldv, Ot + (size_t)e * ldo + r, ldo, nc, 1);
    }
}

/* exp(x); results below e^-87 (and exp(-inf)) are 0; NaN propagates. */
INLINE __m256 exp256(__m256 x) {
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2hi = _mm256_set1_ps(0.693359375f), ln2lo = _mm256_set1_ps(-2.12194440e-4f);
    __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
    __m256 xc = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), x));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, ln2hi, xc);
    r = _mm256_fnmadd_ps(n, ln2lo, r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 r2 = _mm256_mul_ps(r, r);
    p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(tiny, y);
}

void tp_attn_softmax_avx2(float *St, int lds, int nc, int nq, float *m, float *l, float *Ot, int ldo, int Dv) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    for (int r = 0; r < nq; r += 8) {
        __m256 mx = ninf;
        for (int c = 0; c < nc; c++) mx = _mm256_max_ps(mx, _mm256_loadu_ps(St + (size_t)c * lds + r));
        __m256 mo = _mm256_loadu_ps(m + r);
        __m256 mn = _mm256_max_ps(mo, mx);
        __m256 msafe = _mm256_andnot_ps(_mm256_cmp_ps(mn, ninf, _CMP_EQ_OQ), mn);
        __m256 alpha = exp256(_mm256_sub_ps(mo, msafe));
        __m256 sum = _mm256_setzero_ps();
        for (int c = 0; c < nc; c++) {
            float *s = St + (size_t)c * lds + r;
            __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s), msafe));
            _mm256_storeu_ps(s, e);
            sum = _mm256_add_ps(sum, e);
        }
        _mm256_storeu_ps(l + r, _mm256_fmadd_ps(_mm256_loadu_ps(l + r), alpha, sum));
        _mm256_storeu_ps(m + r, mn);
        if (_mm256_movemask_ps(_mm256_cmp_ps(alpha, _mm256_set1_ps(1.0f), _CMP_NEQ_UQ)) != 0)
            for (int e = 0; e < Dv; e++) {
                float *o = Ot + (size_t)e * ldo + r;
                _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_loadu_ps(o), alpha));
            }
    }
}

static float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One query (nr = 1): St[c][0] = K[c] · q (q contiguous, D floats), lanes 1..15 of St set to 0. */
void tp_attn_qk1_avx2(const float *K, size_t ldk, const float *q, float *St, int lds, int nc, int D) {
    const int dfull = D & ~7;
    for (int c = 0; c < nc; c++) {
        const float *kr = K + (size_t)c * ldk;
        __m256 acc = _mm256_setzero_ps();
        int d = 0;
        for (; d < dfull; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(kr + d), _mm256_loadu_ps(q + d), acc);
        float s = hsum256(acc);
        for (; d < D; d++) s += kr[d] * q[d];
        float *row = St + (size_t)c * lds;
        _mm256_storeu_ps(row, _mm256_setzero_ps());
        _mm256_storeu_ps(row + 8, _mm256_setzero_ps());
        row[0] = s;
    }
}

/* One query: Ot[e][0] += Σ_c Pt[c][0] · V[c][e]. */
void tp_attn_pv1_avx2(const float *Pt, int ldp, const float *V, size_t ldv, float *Ot, int ldo, int nc, int Dv) {
    float buf[64];
    for (int e0 = 0; e0 < Dv; e0 += 64) {
        int ne = Dv - e0 < 64 ? Dv - e0 : 64;
        for (int e = 0; e < ne; e++) buf[e] = Ot[(size_t)(e0 + e) * ldo];
        if (ne == 64) {
            __m256 acc[8];
            UNROLL for (int v = 0; v < 8; v++) acc[v] = _mm256_loadu_ps(buf + 8 * v);
            for (int c = 0; c < nc; c++) {
                __m256 p = _mm256_broadcast_ss(Pt + (size_t)c * ldp);
                const float *vr = V + (size_t)c * ldv + e0;
                UNROLL for (int v = 0; v < 8; v++) acc[v] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 8 * v), acc[v]);
            }
            UNROLL for (int v = 0; v < 8; v++) _mm256_storeu_ps(buf + 8 * v, acc[v]);
        } else {
            for (int c = 0; c < nc; c++) {
                float p = Pt[(size_t)c * ldp];
                const float *vr = V + (size_t)c * ldv + e0;
                for (int e = 0; e < ne; e++) buf[e] += p * vr[e];
            }
        }
        for (int e = 0; e < ne; e++) Ot[(size_t)(e0 + e) * ldo] = buf[e];
    }
}

/* ---- decode (one query per head, all heads of a key block at once; contracts at the scalar
 * versions in ops_attention.c), over F32 or F16 cache rows (F16C conversion on load).
 * Heads go four at a time: four independent FMA chains, one K row load and conversion for the four when
 * they share a kv head (GQA: PaddleOCR-VL's 8 query heads a kv head), and one 4-way horizontal reduction.
 * With 8 query heads a kv head, PV keeps 8 heads × 8 outputs in registers over every key of the block and
 * stores them once (one V load and conversion for the 8 heads). ---- */

INLINE __m256 ld8_kv(const void *p, size_t i, bool f16) {
    if (f16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    return _mm256_loadu_ps((const float *)p + i);
}

INLINE float ld1_kv(const void *p, size_t i, bool f16) {
    if (f16) return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(((const uint16_t *)p)[i])));
    return ((const float *)p)[i];
}

/* the four horizontal sums of a0..a3 */
INLINE __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

INLINE void dec_qk(const void *K, bool f16, size_t ldk, size_t ldh, int group, const float *Q, float *St, int lds,
                   int nc, int H, int nq, int D) {
    const int dfull = D & ~7;
    for (int c = 0; c < nc; c++) {
        float *srow = St + (size_t)c * lds;
        int h = 0;
        for (; h + 4 <= H; h += 4) {
            size_t kr[4];
            for (int j = 0; j < 4; j++) kr[j] = (size_t)c * ldk + (size_t)((h + j) / group) * ldh;
            const float *q0 = Q + (size_t)h * D, *q1 = q0 + D, *q2 = q1 + D, *q3 = q2 + D;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            if (kr[0] == kr[3]) {
                for (int d = 0; d < dfull; d += 8) {
                    const __m256 k = ld8_kv(K, kr[0] + (size_t)d, f16);
                    a0 = _mm256_fmadd_ps(k, _mm256_loadu_ps(q0 + d), a0);
                    a1 = _mm256_fmadd_ps(k, _mm256_loadu_ps(q1 + d), a1);
                    a2 = _mm256_fmadd_ps(k, _mm256_loadu_ps(q2 + d), a2);
                    a3 = _mm256_fmadd_ps(k, _mm256_loadu_ps(q3 + d), a3);
                }
            } else {
                for (int d = 0; d < dfull; d += 8) {
                    a0 = _mm256_fmadd_ps(ld8_kv(K, kr[0] + (size_t)d, f16), _mm256_loadu_ps(q0 + d), a0);
                    a1 = _mm256_fmadd_ps(ld8_kv(K, kr[1] + (size_t)d, f16), _mm256_loadu_ps(q1 + d), a1);
                    a2 = _mm256_fmadd_ps(ld8_kv(K, kr[2] + (size_t)d, f16), _mm256_loadu_ps(q2 + d), a2);
                    a3 = _mm256_fmadd_ps(ld8_kv(K, kr[3] + (size_t)d, f16), _mm256_loadu_ps(q3 + d), a3);
                }
            }
            float s[4];
            _mm_storeu_ps(s, hsum4(a0, a1, a2, a3));
            for (int j = 0; j < 4; j++) {
                for (int d = dfull; d < D; d++) s[j] += ld1_kv(K, kr[j] + (size_t)d, f16) * Q[(size_t)(h + j) * D + d];
                srow[h + j] = s[j];
            }
        }
        for (; h < H; h++) {
            const size_t kr = (size_t)c * ldk + (size_t)(h / group) * ldh;
            const float *qh = Q + (size_t)h * D;
            __m256 a = _mm256_setzero_ps();
            for (int d = 0; d < dfull; d += 8) a = _mm256_fmadd_ps(ld8_kv(K, kr + (size_t)d, f16), _mm256_loadu_ps(qh + d), a);
            float sum = hsum256(a);
            for (int d = dfull; d < D; d++) sum += ld1_kv(K, kr + (size_t)d, f16) * qh[d];
            srow[h] = sum;
        }
        for (h = H; h < nq; h++) srow[h] = 0.0f;
    }
}

/* O[h0 + j][e .. e + 8) += Σ_c Pt[c][h0 + j] · V[c][hk][e .. e + 8) for j < 8 (the 8 heads share kv head hk) */
INLINE void pv_8heads(const float *Pt, int ldp, const void *V, bool f16, size_t ldv, size_t vofs, int h0, float *O,
                      int nc, int Dv, int e) {
    __m256 acc[8];
    UNROLL for (int j = 0; j < 8; j++) acc[j] = _mm256_loadu_ps(O + (size_t)(h0 + j) * Dv + e);
    for (int c = 0; c < nc; c++) {
        const __m256 v = ld8_kv(V, (size_t)c * ldv + vofs + (size_t)e, f16);
        const float *pr = Pt + (size_t)c * ldp + h0;
        UNROLL for (int j = 0; j < 8; j++) acc[j] = _mm256_fmadd_ps(_mm256_broadcast_ss(pr + j), v, acc[j]);
    }
    UNROLL for (int j = 0; j < 8; j++) _mm256_storeu_ps(O + (size_t)(h0 + j) * Dv + e, acc[j]);
}

INLINE void dec_pv(const float *Pt, int ldp, const void *V, bool f16, size_t ldv, size_t ldh, int group, float *O,
                   int nc, int H, int Dv) {
    if (group % 8 == 0 && Dv % 8 == 0) {
        for (int h = 0; h < H; h += 8)
            for (int e = 0; e < Dv; e += 8) pv_8heads(Pt, ldp, V, f16, ldv, (size_t)(h / group) * ldh, h, O, nc, Dv, e);
        return;
    }
    /* few heads a kv head (MHA): V streamed once in memory order, each key's row into the L1-resident O
     * (register blocks over keys measured 2.3x slower here: 10 heads' rows a key apart leave L1) */
    const int efull = Dv & ~7;
    for (int c = 0; c < nc; c++) {
        const float *pr = Pt + (size_t)c * ldp;
        for (int h = 0; h < H; h++) {
            const __m256 p = _mm256_set1_ps(pr[h]);
            const size_t vr = (size_t)c * ldv + (size_t)(h / group) * ldh;
            float *o = O + (size_t)h * Dv;
            int e = 0;
            for (; e < efull; e += 8) _mm256_storeu_ps(o + e, _mm256_fmadd_ps(p, ld8_kv(V, vr + (size_t)e, f16), _mm256_loadu_ps(o + e)));
            for (; e < Dv; e++) o[e] += pr[h] * ld1_kv(V, vr + (size_t)e, f16);
        }
    }
}

void tp_attn_dec_qk_avx2(const void *K, bool f16, size_t ldk, size_t ldh, int group, const float *Q, float *St,
                         int lds, int nc, int H, int nq, int D) {
    if (f16) dec_qk(K, true, ldk, ldh, group, Q, St, lds, nc, H, nq, D); /* one body per row type, the type */
    else dec_qk(K, false, ldk, ldh, group, Q, St, lds, nc, H, nq, D);    /* a constant in its loops */
}

void tp_attn_dec_pv_avx2(const float *Pt, int ldp, const void *V, bool f16, size_t ldv, size_t ldh, int group,
                         float *O, int nc, int H, int Dv) {
    if (f16) dec_pv(Pt, ldp, V, true, ldv, ldh, group, O, nc, H, Dv);
    else dec_pv(Pt, ldp, V, false, ldv, ldh, group, O, nc, H, Dv);
}

void tp_attn_f16_to_f32_avx2(const uint16_t *src, float *dst, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, ld8_kv(src, (size_t)i, true));
    for (; i < n; i++) dst[i] = ld1_kv(src, (size_t)i, true);
}
