/* tp_quants.h - block-quantised row conversion shared by the type layer and kernels. */
#ifndef TP_QUANTS_H
#define TP_QUANTS_H

#include "tp_internal.h"

/* Whether the type is a block-quantised type this build implements. */
bool tp_is_quantized(tp_type type);
/* One row of n elements (a multiple of the block size). */
void tp_dequantize_row(tp_type type, const void *src, float *dst, int64_t n);
void tp_quantize_row(tp_type type, const float *src, void *dst, int64_t n);

/* ---- the exact ggml block layouts ---- */
#define TP_QK 32   /* Q8_0 / Q4_0 block */
#define TP_QK_K 256 /* K-quant super-block */

typedef struct {
    uint16_t d; /* f16 */
    int8_t qs[32];
} tp_block_q8_0; /* 34 bytes */

typedef struct {
    uint16_t d; /* f16 */
    uint8_t qs[16];
} tp_block_q4_0; /* 18 bytes */

typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[128];
} tp_block_q4_K; /* 144 bytes */

typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[32];
    uint8_t qs[128];
} tp_block_q5_K; /* 176 bytes */

/* Q4_K and Q5_K blocks differ only by Q5_K's high bits: the fields of block i of a row of either
 * (qh NULL for Q4_K; d and dmin as stored, F16). */
typedef struct {
    const uint8_t *qs, *qh, *scales;
    uint16_t d, dmin;
} tp_k45_block;

static inline tp_k45_block tp_k45_block_at(const void *row, int64_t i, bool q5) {
    tp_k45_block b;
    if (q5) {
        const tp_block_q5_K *w = (const tp_block_q5_K *)row + i;
        b.qs = w->qs, b.qh = w->qh, b.scales = w->scales, b.d = w->d, b.dmin = w->dmin;
    } else {
        const tp_block_q4_K *w = (const tp_block_q4_K *)row + i;
        b.qs = w->qs, b.qh = NULL, b.scales = w->scales, b.d = w->d, b.dmin = w->dmin;
    }
    return b;
}

typedef struct {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d;
} tp_block_q6_K; /* 210 bytes */

_Static_assert(sizeof(tp_block_q8_0) == 34, "q8_0 size");
_Static_assert(sizeof(tp_block_q4_0) == 18, "q4_0 size");
_Static_assert(sizeof(tp_block_q4_K) == 144, "q4_K size");
_Static_assert(sizeof(tp_block_q5_K) == 176, "q5_K size");
_Static_assert(sizeof(tp_block_q6_K) == 210, "q6_K size");

/* Activations quantised on the fly for integer dot products (internal, not a file format):
 * 32 values, q = round(x / d) with d = max|x| / 127, and the sums of each half of qs. */
typedef struct {
    float d;
    int16_t s[2]; /* sum of qs[0..15], qs[16..31] */
    int8_t qs[32];
} tp_block_q8a; /* 40 bytes */

/* Quantise n floats (n a multiple of 32) into n/32 activation blocks (portable, the reference). */
void tp_quantize_row_q8a(const float *x, tp_block_q8a *y, int64_t n);
/* Portable dot product of one weight row (type, n elements) with n/32 activation blocks. */
float tp_vec_dot_q8a(tp_type type, const void *w, const tp_block_q8a *a, int64_t n);

static inline void tp_get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

#endif
