/* tp_quants.h - block-quantised row conversion shared by the type layer and kernels. */
#ifndef TP_QUANTS_H
#define TP_QUANTS_H

#include "tp_internal.h"

#include <stddef.h>

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
    uint16_t d, m; /* f16 scale and min */
    uint8_t qs[16];
} tp_block_q4_1; /* 20 bytes */

typedef struct {
    uint16_t d;    /* f16 */
    uint8_t qh[4]; /* bit j: the fifth bit of element j */
    uint8_t qs[16];
} tp_block_q5_0; /* 22 bytes */

typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[16];
} tp_block_q5_1; /* 24 bytes */

/* Q4_0, Q4_1, Q5_0 and Q5_1 ("32-blocks") share one shape: d (F16), a min m (F16) in Q4_1/Q5_1, 32 high
 * bits qh in Q5_0/Q5_1, then 16 bytes of nibbles (element j low, element j + 16 high). Element j's
 * level u_j (0..15, or 0..31 with its qh bit as bit 4) stands for d·u_j + bias with bias −8d, m, −16d, m.
 * Byte offsets within the block (−1: absent), so kernels can read any of them the same way. */
typedef struct {
    int bytes, qs, qh, m;
    int offset; /* Q4_0 8, Q5_0 16 (bias = −offset·d); 0 for the types with a min */
} tp_q32_layout;

static inline bool tp_is_q32(tp_type t) {
    return t == TP_TYPE_Q4_0 || t == TP_TYPE_Q4_1 || t == TP_TYPE_Q5_0 || t == TP_TYPE_Q5_1;
}

#define TP_Q32_AT(type, field) ((int)offsetof(type, field))
static inline tp_q32_layout tp_q32_layout_of(tp_type t) {
    switch (t) {
    case TP_TYPE_Q4_1:
        return (tp_q32_layout){(int)sizeof(tp_block_q4_1), TP_Q32_AT(tp_block_q4_1, qs), -1, TP_Q32_AT(tp_block_q4_1, m), 0};
    case TP_TYPE_Q5_0:
        return (tp_q32_layout){(int)sizeof(tp_block_q5_0), TP_Q32_AT(tp_block_q5_0, qs), TP_Q32_AT(tp_block_q5_0, qh), -1, 16};
    case TP_TYPE_Q5_1:
        return (tp_q32_layout){(int)sizeof(tp_block_q5_1), TP_Q32_AT(tp_block_q5_1, qs), TP_Q32_AT(tp_block_q5_1, qh),
                               TP_Q32_AT(tp_block_q5_1, m), 0};
    default: return (tp_q32_layout){(int)sizeof(tp_block_q4_0), TP_Q32_AT(tp_block_q4_0, qs), -1, -1, 8}; /* Q4_0 */
    }
}
#undef TP_Q32_AT

/* Kernels split a block's Σ (d·u + bias)·x into d·Σ u·x and c·Σ x, with c the F16 field at byte
 * tp_q32_c_at (the min where the type has one, else d) scaled at the end by tp_q32_c_factor (1, or
 * −offset). */
static inline int tp_q32_c_at(const tp_q32_layout *L) { return L->m >= 0 ? L->m : 0; }
static inline float tp_q32_c_factor(const tp_q32_layout *L) { return L->m >= 0 ? 1.0f : -(float)L->offset; }

/* Block i of a row of a 32-block type: its 32 levels in element order, d, and the bias (m or −offset·d). */
static inline void tp_q32_block_levels(const tp_q32_layout *L, const void *row, int64_t i, uint8_t u[32], float *d,
                                       float *bias) {
    const uint8_t *b = (const uint8_t *)row + (size_t)i * (size_t)L->bytes;
    uint16_t h;
    memcpy(&h, b, 2);
    *d = tp_f16_to_f32(h);
    if (L->m >= 0) {
        memcpy(&h, b + L->m, 2);
        *bias = tp_f16_to_f32(h);
    } else {
        *bias = -(float)L->offset * *d;
    }
    uint32_t qh = 0;
    if (L->qh >= 0) memcpy(&qh, b + L->qh, 4);
    for (int j = 0; j < 16; j++) {
        u[j] = (uint8_t)((b[L->qs + j] & 0xF) | (((qh >> j) & 1u) << 4));
        u[j + 16] = (uint8_t)((b[L->qs + j] >> 4) | (((qh >> (j + 16)) & 1u) << 4));
    }
}

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

/* bytes of one Q4_K or Q5_K super-block */
static inline int64_t tp_k45_block_bytes(bool q5) {
    return q5 ? (int64_t)sizeof(tp_block_q5_K) : (int64_t)sizeof(tp_block_q4_K);
}

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
_Static_assert(sizeof(tp_block_q4_1) == 20, "q4_1 size");
_Static_assert(sizeof(tp_block_q5_0) == 22, "q5_0 size");
_Static_assert(sizeof(tp_block_q5_1) == 24, "q5_1 size");
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
