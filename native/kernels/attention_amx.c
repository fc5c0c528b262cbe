/* attention_amx.c - the two products of ops_attention.c's flash attention on AMX tiles, for
 * TP_PRECISION_BF16 (q·scale, K, the probabilities P and V rounded to BF16, F32 accumulation).
 * Built with the AMX flags; ops_attention.c calls these only when tp_cpu_amx_usable() said yes.
 * Layouts follow ops_attention.c (query-innermost): St[c][r] (keys × queries), Ot[e][r].
 *   St = K·Qt:   A tiles = 16 keys × 32 d of the bf16 K rows; B tiles = 32 d × 16 queries of Qt in
 *                VNNI pairs (tp_attn_bf16_pack_pairs, attention_avx512.c); C = 16 keys × 16 queries, stored into St.
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
 * r < nq (a multiple of 16); D a multiple of 32 (ops_attention.c zero pads the BF16 copies). */
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
