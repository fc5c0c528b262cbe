/* attention_amx.c - the two products of ops_attention.c's flash attention on AMX tiles, for
 * TP_PRECISION_BF16 (q·scale, K, the probabilities P and V rounded to BF16, F32 accumulation).
 * Built with the AMX flags; ops_attention.c calls these only when tp_cpu_amx_usable() said yes.
 * Layouts follow ops_attention.c (query-innermost): St[c][r] (keys × queries), Ot[e][r].
 *   St = K·Qt:   A tiles = 16 keys × 32 d of the bf16 K rows; B tiles = 32 d × 16 queries of Qt in
 *                VNNI pairs (tp_attn_amx_pack_pairs); C = 16 keys × 16 queries, stored into St.
 *   Ot += Vt·Pt: A tiles = 16 e × 32 keys of the bf16 transposed V; B tiles = 32 keys × 16 queries of
 *                P in pairs; C = 16 e × 16 queries, loaded from / stored to Ot.
 * Tile state is per thread: tp_attn_amx_begin configures it, tp_attn_amx_end releases it. */
#include "tp_internal.h"
#include "tp_matmul.h"

#include <immintrin.h>
#include <math.h>
#include "tp_attention.h"

typedef struct {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;


void tp_attn_amx_begin(void) {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int i = 0; i < 8; i++) {
        cfg.colsb[i] = 64;
        cfg.rows[i] = 16;
    }
    /* not _tile_loadconfig: GCC 12's macro gives the asm an 8-byte memory operand, so the stores
     * to the rest of cfg can be dropped as dead (seen: ldtilecfg of a zeroed config, then #GP) */
    __asm__ volatile("ldtilecfg %0" : : "m"(cfg) : "memory");
}

void tp_attn_amx_end(void) { _tile_release(); }

/* n floats to bf16 (round to nearest even). */
void tp_attn_amx_rows_to_bf16(const float *src, int64_t n, uint16_t *dst) {
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
void tp_attn_amx_pack_pairs(const float *src, int lds, int nrows, int nrows_pad, int nq, uint16_t *dst) {
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

/* 2×2 blocks: C(i, j) += A_i · B_j for two A and two B tiles per k step (4 loads per 4 products). */
#define TILE_2X2_STEP(Ai0, Ai1, lda_b, Bj0, Bj1)                                                  \
    do {                                                                                          \
        _tile_loadd(4, (Ai0), (lda_b));                                                           \
        _tile_loadd(6, (Bj0), 64);                                                                \
        _tile_loadd(5, (Ai1), (lda_b));                                                           \
        _tile_loadd(7, (Bj1), 64);                                                                \
        _tile_dpbf16ps(0, 4, 6);                                                                  \
        _tile_dpbf16ps(1, 4, 7);                                                                  \
        _tile_dpbf16ps(2, 5, 6);                                                                  \
        _tile_dpbf16ps(3, 5, 7);                                                                  \
    } while (0)

/* St[c][r] = Σ_d K[c][d]·Q[d][r] for c < round16(nc) (K rows past nc must be readable: zeros),
 * r < nq (a multiple of 16); D a multiple of 32. */
void tp_attn_amx_qk(const uint16_t *Kb, size_t ldk, const uint16_t *Qp, float *St, int lds, int nc, int nq, int D) {
    const int nqt = nq / 16, KT = D / 32, nct = (nc + 15) / 16;
    const size_t ldk_b = ldk * sizeof(uint16_t), ldc = (size_t)lds * sizeof(float);
    if (nqt % 2 == 0 && nct % 2 == 0) {
        for (int ct = 0; ct < nct; ct += 2) {
            const uint16_t *A0 = Kb + (size_t)ct * 16 * ldk, *A1 = A0 + (size_t)16 * ldk;
            for (int rt = 0; rt < nqt; rt += 2) {
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                for (int kt = 0; kt < KT; kt++) {
                    const uint16_t *B = Qp + ((size_t)kt * nqt + rt) * 512;
                    TILE_2X2_STEP(A0 + kt * 32, A1 + kt * 32, ldk_b, B, B + 512);
                }
                float *C = St + (size_t)ct * 16 * lds + rt * 16;
                _tile_stored(0, C, ldc);
                _tile_stored(1, C + 16, ldc);
                _tile_stored(2, C + (size_t)16 * lds, ldc);
                _tile_stored(3, C + (size_t)16 * lds + 16, ldc);
            }
        }
        return;
    }
    for (int ct = 0; ct < nct; ct++) {
        const uint16_t *A = Kb + (size_t)ct * 16 * ldk;
        for (int rt0 = 0; rt0 < nqt; rt0 += 4) {
            const int nb = TP_MIN(4, nqt - rt0);
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int kt = 0; kt < KT; kt++) {
                _tile_loadd(4, A + kt * 32, ldk * sizeof(uint16_t));
                const uint16_t *B = Qp + ((size_t)kt * nqt + rt0) * 512;
                _tile_loadd(5, B, 64);
                _tile_dpbf16ps(0, 4, 5);
                if (nb > 1) {
                    _tile_loadd(6, B + 512, 64);
                    _tile_dpbf16ps(1, 4, 6);
                }
                if (nb > 2) {
                    _tile_loadd(7, B + 1024, 64);
                    _tile_dpbf16ps(2, 4, 7);
                }
                if (nb > 3) {
                    _tile_loadd(5, B + 1536, 64);
                    _tile_dpbf16ps(3, 4, 5);
                }
            }
            float *C = St + (size_t)ct * 16 * lds + rt0 * 16;
            _tile_stored(0, C, ldc);
            if (nb > 1) _tile_stored(1, C + 16, ldc);
            if (nb > 2) _tile_stored(2, C + 32, ldc);
            if (nb > 3) _tile_stored(3, C + 48, ldc);
        }
    }
}

/* Ot[e][r] += Σ_c Vt[e][c]·P[c][r] over c < round32(nc) (P pairs zero past nc; Vt columns there must
 * be finite); e < Dv (a multiple of 16), r < nq. */
void tp_attn_amx_pv(const uint16_t *Vt, size_t ldvt, const uint16_t *Pp, float *Ot, int ldo, int nc, int nq, int Dv) {
    const int nqt = nq / 16, KT = (nc + 31) / 32, net = Dv / 16;
    const size_t ldc = (size_t)ldo * sizeof(float), lda_b = ldvt * sizeof(uint16_t);
    if (nqt % 2 == 0 && net % 2 == 0) {
        for (int et = 0; et < net; et += 2) {
            const uint16_t *A0 = Vt + (size_t)et * 16 * ldvt, *A1 = A0 + (size_t)16 * ldvt;
            for (int rt = 0; rt < nqt; rt += 2) {
                float *C = Ot + (size_t)et * 16 * ldo + rt * 16;
                _tile_loadd(0, C, ldc);
                _tile_loadd(1, C + 16, ldc);
                _tile_loadd(2, C + (size_t)16 * ldo, ldc);
                _tile_loadd(3, C + (size_t)16 * ldo + 16, ldc);
                for (int kt = 0; kt < KT; kt++) {
                    const uint16_t *B = Pp + ((size_t)kt * nqt + rt) * 512;
                    TILE_2X2_STEP(A0 + kt * 32, A1 + kt * 32, lda_b, B, B + 512);
                }
                _tile_stored(0, C, ldc);
                _tile_stored(1, C + 16, ldc);
                _tile_stored(2, C + (size_t)16 * ldo, ldc);
                _tile_stored(3, C + (size_t)16 * ldo + 16, ldc);
            }
        }
        return;
    }
    for (int et = 0; et < net; et++) {
        const uint16_t *A = Vt + (size_t)et * 16 * ldvt;
        for (int rt0 = 0; rt0 < nqt; rt0 += 4) {
            const int nb = TP_MIN(4, nqt - rt0);
            float *C = Ot + (size_t)et * 16 * ldo + rt0 * 16;
            _tile_loadd(0, C, ldc);
            if (nb > 1) _tile_loadd(1, C + 16, ldc);
            if (nb > 2) _tile_loadd(2, C + 32, ldc);
            if (nb > 3) _tile_loadd(3, C + 48, ldc);
            for (int kt = 0; kt < KT; kt++) {
                _tile_loadd(4, A + kt * 32, ldvt * sizeof(uint16_t));
                const uint16_t *B = Pp + ((size_t)kt * nqt + rt0) * 512;
                _tile_loadd(5, B, 64);
                _tile_dpbf16ps(0, 4, 5);
                if (nb > 1) {
                    _tile_loadd(6, B + 512, 64);
                    _tile_dpbf16ps(1, 4, 6);
                }
                if (nb > 2) {
                    _tile_loadd(7, B + 1024, 64);
                    _tile_dpbf16ps(2, 4, 7);
                }
                if (nb > 3) {
                    _tile_loadd(5, B + 1536, 64);
                    _tile_dpbf16ps(3, 4, 5);
                }
            }
            _tile_stored(0, C, ldc);
            if (nb > 1) _tile_stored(1, C + 16, ldc);
            if (nb > 2) _tile_stored(2, C + 32, ldc);
            if (nb > 3) _tile_stored(3, C + 48, ldc);
        }
    }
}

/* exp for the probabilities (as attention_avx512.c's exp512: Cephes range reduction and degree-6
 * polynomial, x < -87 -> 0, -inf -> 0). */
static inline __m512 exp16(__m512 x) {
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
    return _mm512_mask_mov_ps(_mm512_scalef_ps(p, n), tiny, _mm512_setzero_ps());
}

/* The online-softmax step of ops_attention.c (same contract as tp_attn_softmax_avx512: per query r,
 * m' = max(m, max_c St[c][r]), l = l·e^(m−m') + Σ_c e^(St−m'), Ot[e][r] ·= e^(m−m')) fused with the BF16
 * packing of the probabilities: they go straight into Pp as pair tiles (see tp_attn_amx_pack_pairs,
 * rows nc..round32(nc) zero) and St is only read. */
void tp_attn_amx_softmax_pack(const float *St, int lds, int nc, int nq, float *m, float *l, float *Ot, int ldo,
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
        const __m512 alpha = exp16(_mm512_sub_ps(mo, msafe));
        __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
        for (c = 0; c < ncp; c += 2) {
            __m512 e0 = _mm512_setzero_ps(), e1 = _mm512_setzero_ps();
            if (c < nc) e0 = exp16(_mm512_sub_ps(_mm512_loadu_ps(St + (size_t)c * lds + r), msafe));
            if (c + 1 < nc) e1 = exp16(_mm512_sub_ps(_mm512_loadu_ps(St + (size_t)(c + 1) * lds + r), msafe));
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
