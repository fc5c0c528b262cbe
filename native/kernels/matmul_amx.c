/* matmul_amx.c - the BF16 GEMM on AMX tiles (TP_PRECISION_BF16, many tokens). Built with the AMX and
 * AVX-512 flags; ops_matmul.c calls it only when tp_cpu_amx_usable() (amx.c) said yes, which also
 * made sure this process has the kernel's permission for tile data.
 *
 * C[n][m] = Σ_k x[n][k]·w[m][k]: A tiles are 16 tokens × 32 k of the bf16 activations (packed by
 * ops_matmul.c as contiguous 1 KiB tiles, tp_amx_row_to_tiles), B tiles are 32 k × 16 weight rows in
 * the VNNI pair layout ([k/2][16][2], packed here per thread block), so a 16×16 F32 result tile is
 * 16 tokens × 16 output features, stored straight into C's rows. 2×2 tile blocking: tmm0..3
 * accumulate 32 tokens × 32 features, tmm4/5 hold A, tmm6/7 hold B. Loops: k blocks of AMX_KC (C
 * tiles reloaded per block) > blocks of tp_amx_block_rows weight rows (packed once per k block) >
 * 32-token blocks > 32-row sub-blocks > k tiles.
 * Tile state is per thread: each call configures it (ldtilecfg) and releases it at the end. */
#include "tp_internal.h"
#include "tp_matmul.h"

#include <immintrin.h>

typedef struct {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

static void tiles_configure(void) {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int i = 0; i < 8; i++) {
        cfg.colsb[i] = 64; /* 16 floats, 32 bf16 or 16 bf16 pairs */
        cfg.rows[i] = 16;
    }
    /* not _tile_loadconfig: GCC 12's macro gives the asm an 8-byte memory operand, so the stores
     * to the rest of cfg can be dropped as dead (seen: ldtilecfg of a zeroed config, then #GP) */
    __asm__ volatile("ldtilecfg %0" : : "m"(cfg) : "memory");
}

#define BTILE 512 /* uint16 per packed B tile: 16 pair-rows × 16 columns × 2 */

/* k per block: the C tiles are reloaded once per block, a 32-token A block (64 KiB) stays in L1/L2 while
 * the 32-row B blocks pass (measured on SAM/CLIP shapes: 1024 beats 256/512/768 and the full K of 3072) */
#define AMX_KC 1024

static int64_t kc_of(int64_t Kp) { return TP_MIN(Kp, AMX_KC); }

int64_t tp_amx_block_rows(int64_t Kp) {
    int64_t rows = (int64_t)(512 * 1024) / (kc_of(Kp) * 2); /* packed block <= 512 KiB (L2) */
    rows = rows / TP_AMX_MB * TP_AMX_MB;
    return TP_MAX(TP_AMX_MB, TP_MIN(512, rows));
}

size_t tp_amx_thread_bytes(int64_t K, int64_t Kp) {
    size_t packed = (size_t)tp_amx_block_rows(Kp) * (size_t)kc_of(Kp) * sizeof(uint16_t);
    size_t rowbf = ((size_t)Kp * sizeof(uint16_t) + 63) & ~(size_t)63;
    size_t rowf = ((size_t)K * sizeof(float) + 63) & ~(size_t)63;
    return packed + rowbf + rowf + 16 * 16 * sizeof(float);
}

static inline __mmask16 tail_mask(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u); }

void tp_amx_row_to_bf16(const float *src, int64_t k, int64_t kp, uint16_t *dst) {
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
        __m512 lo = _mm512_loadu_ps(src + i), hi = _mm512_loadu_ps(src + i + 16);
        _mm512_storeu_si512((void *)(dst + i), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    for (; i < kp; i += 32) { /* tail: masked loads, zeros up to kp (a multiple of 32 past i) */
        const int64_t r = k - i; /* may be <= 0: zeros only */
        __m512 lo = _mm512_maskz_loadu_ps(tail_mask(TP_MAX(r, 0)), src + i);
        __m512 hi = _mm512_maskz_loadu_ps(tail_mask(TP_MAX(r - 16, 0)), src + i + 16);
        __m512i v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
        int64_t left = kp - i;
        if (left >= 32) _mm512_storeu_si512((void *)(dst + i), v);
        else _mm512_mask_storeu_epi16(dst + i, (__mmask32)((1ull << left) - 1ull), v);
    }
}

void tp_amx_row_to_tiles(const float *src, int64_t k, int64_t kp, uint16_t *dst) {
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
        __m512 lo = _mm512_loadu_ps(src + i), hi = _mm512_loadu_ps(src + i + 16);
        _mm512_storeu_si512((void *)(dst + i / 32 * BTILE), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    for (; i < kp; i += 32) {
        const int64_t r = k - i;
        __m512 lo = _mm512_maskz_loadu_ps(tail_mask(TP_MAX(r, 0)), src + i);
        __m512 hi = _mm512_maskz_loadu_ps(tail_mask(TP_MAX(r - 16, 0)), src + i + 16);
        _mm512_storeu_si512((void *)(dst + i / 32 * BTILE), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

/* Elements [k0, k0 + kc) of weight row m of a (any strides) as kc bf16 values (zero padded past K). */
static const uint16_t *weight_row_bf16(const tp_tensor *a, int64_t m, int64_t ia2, int64_t ia3, int64_t k0, int64_t kc,
                                       uint16_t *rowbf, float *rowf) {
    const int64_t K = TP_MIN(a->ne[0] - k0, kc); /* valid elements */
    const char *row = (const char *)tp_row_ptr(a, m, ia2, ia3) + k0 * a->nb[0];
    const size_t es = a->type == TP_TYPE_F32 ? 4 : 2;
    if (a->nb[0] != es) { /* strided elements: through F32 */
        for (int64_t k = 0; k < K; k++) tp_row_to_f32(a->type, row + k * a->nb[0], &rowf[k], 1);
        tp_amx_row_to_bf16(rowf, K, kc, rowbf);
        return rowbf;
    }
    switch (a->type) {
    case TP_TYPE_F32:
        tp_amx_row_to_bf16((const float *)row, K, kc, rowbf);
        break;
    case TP_TYPE_F16: {
        const uint16_t *h = (const uint16_t *)row;
        for (int64_t i = 0; i < kc; i += 32) {
            __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
            if (K - i > 0) lo = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail_mask(K - i), h + i));
            if (K - i - 16 > 0) hi = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail_mask(K - i - 16), h + i + 16));
            _mm512_storeu_si512((void *)(rowbf + i), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
        break;
    }
    default: /* BF16 */
        memcpy(rowbf, row, (size_t)K * sizeof(uint16_t));
        for (int64_t k = K; k < kc; k++) rowbf[k] = 0;
        break;
    }
    return rowbf;
}

/* Rows [mb, mb + rows) × k [k0, k0 + kc) (rows a multiple of 32, rows past mend zeros; kc a multiple of
 * 32) into 16-row groups of B tiles: group g, k tile t at Bp + (g·KT + t)·BTILE (KT = kc/32), element
 * (k, r) at [(k%32)/2][r][k%2]. */
static void pack_weights(const tp_tensor *a, int64_t ia2, int64_t ia3, int64_t mb, int64_t mend, int64_t rows,
                         int64_t k0, int64_t kc, uint16_t *Bp, uint16_t *rowbf, float *rowf) {
    const int64_t KT = kc / TP_AMX_KT;
    const __m512i vidx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32(16));
    for (int64_t r = 0; r < rows; r++) {
        uint16_t *group = Bp + (size_t)(r / 16) * (size_t)KT * BTILE;
        const int rr = (int)(r % 16);
        if (mb + r >= mend) {
            for (int64_t t = 0; t < KT; t++)
                _mm512_i32scatter_epi32((void *)((uint32_t *)(group + (size_t)t * BTILE) + rr), vidx,
                                        _mm512_setzero_si512(), 4);
            continue;
        }
        const uint16_t *w = weight_row_bf16(a, mb + r, ia2, ia3, k0, kc, rowbf, rowf);
        for (int64_t t = 0; t < KT; t++) {
            __m512i v = _mm512_loadu_si512((const void *)(w + t * TP_AMX_KT)); /* 16 k pairs */
            _mm512_i32scatter_epi32((void *)((uint32_t *)(group + (size_t)t * BTILE) + rr), vidx, v, 4);
        }
    }
}

/* A result tile held in tmm `t` to C (rows tokens, ldc floats apart), only nr × nc valid. */
#define STORE_TILE(t, Cp, ldc, nr, nc, tmp)                                                       \
    do {                                                                                          \
        if ((nr) >= 16 && (nc) >= 16) {                                                           \
            _tile_stored(t, (Cp), (ldc) * (int64_t)sizeof(float));                                \
        } else if ((nr) > 0 && (nc) > 0) {                                                        \
            _tile_stored(t, (tmp), 16 * sizeof(float));                                           \
            for (int64_t i_ = 0; i_ < (nr); i_++)                                                 \
                memcpy((Cp) + i_ * (ldc), (tmp) + i_ * 16, (size_t)(nc) * sizeof(float));         \
        }                                                                                         \
    } while (0)

/* Load a C tile to accumulate on (only nr × nc valid: through tmp, zeros elsewhere). */
#define LOAD_TILE(t, Cp, ldc, nr, nc, tmp)                                                        \
    do {                                                                                          \
        if ((nr) >= 16 && (nc) >= 16) {                                                           \
            _tile_loadd(t, (Cp), (ldc) * (int64_t)sizeof(float));                                 \
        } else {                                                                                  \
            memset((tmp), 0, 16 * 16 * sizeof(float));                                            \
            for (int64_t i_ = 0; i_ < (nr); i_++)                                                 \
                if ((nc) > 0) memcpy((tmp) + i_ * 16, (Cp) + i_ * (ldc), (size_t)(nc) * sizeof(float)); \
            _tile_loadd(t, (tmp), 16 * sizeof(float));                                            \
        }                                                                                         \
    } while (0)

void tp_mm_amx_thread(const tp_tensor *a, int64_t ia2, int64_t ia3, int64_t m0, int64_t m1,
                      const uint16_t *acts, int64_t Kp, int64_t n0, int64_t n1, float *C, int64_t ldc,
                      void *scratch) {
    if (m0 >= m1 || n0 >= n1) return;
    const int64_t K = a->ne[0], KC = kc_of(Kp);
    const int64_t MC = tp_amx_block_rows(Kp);
    uint16_t *Bp = (uint16_t *)scratch;
    uint16_t *rowbf = Bp + (size_t)MC * (size_t)KC;
    float *rowf = (float *)((char *)rowbf + (((size_t)Kp * sizeof(uint16_t) + 63) & ~(size_t)63));
    float *ctmp = (float *)((char *)rowf + (((size_t)K * sizeof(float) + 63) & ~(size_t)63));
    const int64_t KTall = Kp / TP_AMX_KT;
    tiles_configure();
    for (int64_t k0 = 0; k0 < Kp; k0 += KC) {
        const int64_t kc = TP_MIN(KC, Kp - k0), KT = kc / TP_AMX_KT;
        for (int64_t mb = m0; mb < m1; mb += MC) {
            const int64_t mc = TP_MIN(MC, m1 - mb);
            const int64_t nsub = (mc + TP_AMX_MB - 1) / TP_AMX_MB;
            pack_weights(a, ia2, ia3, mb, m1, nsub * TP_AMX_MB, k0, kc, Bp, rowbf, rowf);
            for (int64_t nb = n0; nb < n1; nb += TP_AMX_NB) {
                /* A tiles: group of 16 tokens g, k tile t at acts + (g·KTall + t)·BTILE */
                const uint16_t *A0 = acts + ((size_t)(nb / 16) * (size_t)KTall + (size_t)(k0 / TP_AMX_KT)) * BTILE;
                const uint16_t *A1 = A0 + (size_t)KTall * BTILE;
                const int64_t nr0 = TP_MIN(16, n1 - nb), nr1 = TP_MIN(16, n1 - nb - 16);
                for (int64_t s = 0; s < nsub; s++) {
                    const uint16_t *B0 = Bp + (size_t)(2 * s) * (size_t)KT * BTILE, *B1 = B0 + (size_t)KT * BTILE;
                    const int64_t mcol = mb + s * TP_AMX_MB;
                    const int64_t nc0 = TP_MIN(16, m1 - mcol), nc1 = TP_MIN(16, m1 - mcol - 16);
                    float *Cb = C + (size_t)nb * (size_t)ldc + mcol;
                    if (k0 == 0) {
                        _tile_zero(0);
                        _tile_zero(1);
                        _tile_zero(2);
                        _tile_zero(3);
                    } else {
                        LOAD_TILE(0, Cb, ldc, nr0, nc0, ctmp);
                        LOAD_TILE(1, Cb + 16, ldc, nr0, nc1, ctmp);
                        LOAD_TILE(2, Cb + 16 * ldc, ldc, nr1, nc0, ctmp);
                        LOAD_TILE(3, Cb + 16 * ldc + 16, ldc, nr1, nc1, ctmp);
                    }
                    for (int64_t t = 0; t < KT; t++) {
                        _tile_loadd(4, A0 + t * BTILE, 64);
                        _tile_loadd(6, B0 + t * BTILE, 64);
                        _tile_loadd(5, A1 + t * BTILE, 64);
                        _tile_loadd(7, B1 + t * BTILE, 64);
                        _tile_dpbf16ps(0, 4, 6);
                        _tile_dpbf16ps(1, 4, 7);
                        _tile_dpbf16ps(2, 5, 6);
                        _tile_dpbf16ps(3, 5, 7);
                    }
                    STORE_TILE(0, Cb, ldc, nr0, nc0, ctmp);
                    STORE_TILE(1, Cb + 16, ldc, nr0, nc1, ctmp);
                    STORE_TILE(2, Cb + 16 * ldc, ldc, nr1, nc0, ctmp);
                    STORE_TILE(3, Cb + 16 * ldc + 16, ldc, nr1, nc1, ctmp);
                }
            }
        }
    }
    _tile_release();
}
