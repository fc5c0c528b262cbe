/* quants.c - the GGUF/ggml block formats Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K: quantisation with ggml's
 * reference algorithms (portable scalar code, so bytes are identical on every CPU path),
 * dequantisation, the on-the-fly 8-bit activation blocks and portable integer dot products. */
#include "tp_quants.h"

#include <float.h>
#include <math.h>
#include <stdio.h>

#define GROUP_MAX_EPS 1e-15f

bool tp_is_quantized(tp_type type) {
    switch (type) {
    case TP_TYPE_Q8_0:
    case TP_TYPE_Q4_0:
    case TP_TYPE_Q4_1:
    case TP_TYPE_Q5_0:
    case TP_TYPE_Q5_1:
    case TP_TYPE_Q4_K:
    case TP_TYPE_Q5_K:
    case TP_TYPE_Q6_K: return true;
    default: return false;
    }
}

/* ggml's nearest_int: round half to even through the float mantissa (|x| < 2^22). */
static inline int nearest_int(float fval) {
    float val = fval + 12582912.f;
    int i;
    memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

/* ---------------------------------------------------------------------------------------------
 * Q8_0 / Q4_0
 * ------------------------------------------------------------------------------------------- */

/* A value about to be converted to a small integer: NaN and infinities (a non-finite input, or a block whose
 * scale overflowed) become 0, since converting them is undefined behaviour; finite values pass unchanged, so
 * the bytes stay ggml's. */
static inline float finite_or_zero(float v) { return isfinite(v) ? v : 0.0f; }

static void quantize_q8_0(const float *x, tp_block_q8_0 *y, int64_t n) {
    for (int64_t i = 0; i < n / TP_QK; i++) {
        const float *xb = x + i * TP_QK;
        float amax = 0.0f;
        for (int j = 0; j < TP_QK; j++) amax = fmaxf(amax, fabsf(xb[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = tp_f32_to_f16(d);
        for (int j = 0; j < TP_QK; j++) y[i].qs[j] = (int8_t)roundf(finite_or_zero(xb[j] * id));
    }
}

static void dequantize_q8_0(const tp_block_q8_0 *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n / TP_QK; i++) {
        const float d = tp_f16_to_f32(x[i].d);
        for (int j = 0; j < TP_QK; j++) y[i * TP_QK + j] = (float)x[i].qs[j] * d;
    }
}

/* Q4_0/Q5_0: the scale d = v / −half, v the block's value of largest magnitude with its sign (the first of
 * equals), stored as F16; returns 1/d (0 for a zero block). */
static float signed_scale(const float *xb, float half, uint16_t *d_f16) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < TP_QK; j++) {
        if (amax < fabsf(xb[j])) {
            amax = fabsf(xb[j]);
            max = xb[j];
        }
    }
    const float d = max / -half;
    *d_f16 = tp_f32_to_f16(d);
    return d != 0.0f ? 1.0f / d : 0.0f;
}

static void quantize_q4_0(const float *x, tp_block_q4_0 *y, int64_t n) {
    for (int64_t i = 0; i < n / TP_QK; i++) {
        const float *xb = x + i * TP_QK;
        const float id = signed_scale(xb, 8.0f, &y[i].d);
        for (int j = 0; j < TP_QK / 2; j++) {
            const float x0 = xb[j] * id, x1 = xb[TP_QK / 2 + j] * id;
            int v0 = (int)(int8_t)finite_or_zero(x0 + 8.5f), v1 = (int)(int8_t)finite_or_zero(x1 + 8.5f);
            v0 = TP_MIN(15, v0);
            v1 = TP_MIN(15, v1);
            y[i].qs[j] = (uint8_t)(v0 | (v1 << 4));
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Q4_1 / Q5_0 / Q5_1: ggml's reference quantisers (min/max per block; Q5_0 symmetric like Q4_0)
 * ------------------------------------------------------------------------------------------- */

/* Q4_1/Q5_1: the block's min and scale (max − min)/levels, stored as F16; returns 1/scale (0 for a flat
 * block) and the min. */
static float min_and_scale(const float *xb, float levels, uint16_t *d_f16, uint16_t *m_f16, float *min) {
    float max = -FLT_MAX;
    *min = FLT_MAX;
    for (int j = 0; j < TP_QK; j++) {
        if (xb[j] < *min) *min = xb[j];
        if (xb[j] > max) max = xb[j];
    }
    const float d = (max - *min) / levels;
    *d_f16 = tp_f32_to_f16(d);
    *m_f16 = tp_f32_to_f16(*min);
    return d != 0.0f ? 1.0f / d : 0.0f;
}

static void quantize_q4_1(const float *x, tp_block_q4_1 *y, int64_t n) {
    for (int64_t i = 0; i < n / TP_QK; i++) {
        const float *xb = x + i * TP_QK;
        float min;
        const float id = min_and_scale(xb, 15.0f, &y[i].d, &y[i].m, &min);
        for (int j = 0; j < TP_QK / 2; j++) {
            const int v0 = TP_MIN(15, (int)(int8_t)finite_or_zero((xb[j] - min) * id + 0.5f));
            const int v1 = TP_MIN(15, (int)(int8_t)finite_or_zero((xb[TP_QK / 2 + j] - min) * id + 0.5f));
            y[i].qs[j] = (uint8_t)(v0 | (v1 << 4));
        }
    }
}

/* The nibbles and high bits of 32 levels of 5 bits (element j: low nibble of qs[j], j + 16: high). */
static void pack_q5_levels(const int v[TP_QK], uint8_t qs[16], uint8_t qh_bytes[4]) {
    uint32_t qh = 0;
    for (int j = 0; j < TP_QK / 2; j++) {
        qs[j] = (uint8_t)((v[j] & 0x0F) | ((v[j + 16] & 0x0F) << 4));
        qh |= (uint32_t)((v[j] & 0x10) >> 4) << j;
        qh |= (uint32_t)((v[j + 16] & 0x10) >> 4) << (j + 16);
    }
    memcpy(qh_bytes, &qh, 4);
}

static void quantize_q5_0(const float *x, tp_block_q5_0 *y, int64_t n) {
    for (int64_t i = 0; i < n / TP_QK; i++) {
        const float *xb = x + i * TP_QK;
        const float id = signed_scale(xb, 16.0f, &y[i].d);
        int v[TP_QK];
        for (int j = 0; j < TP_QK; j++) v[j] = TP_MIN(31, (int)(int8_t)finite_or_zero(xb[j] * id + 16.5f));
        pack_q5_levels(v, y[i].qs, y[i].qh);
    }
}

static void quantize_q5_1(const float *x, tp_block_q5_1 *y, int64_t n) {
    for (int64_t i = 0; i < n / TP_QK; i++) {
        const float *xb = x + i * TP_QK;
        float min;
        const float id = min_and_scale(xb, 31.0f, &y[i].d, &y[i].m, &min);
        int v[TP_QK];
        for (int j = 0; j < TP_QK; j++) v[j] = (int)(uint8_t)finite_or_zero((xb[j] - min) * id + 0.5f);
        pack_q5_levels(v, y[i].qs, y[i].qh);
    }
}

/* Q4_0, Q4_1, Q5_0, Q5_1 as ggml computes them: (u − 8)·d, (u − 16)·d for the types with an offset, u·d + m
 * for the types with a min. */
static void dequantize_q32(tp_type type, const void *x, float *y, int64_t n) {
    const tp_q32_layout L = tp_q32_layout_of(type);
    uint8_t u[TP_QK];
    for (int64_t i = 0; i < n / TP_QK; i++) {
        float d, bias;
        tp_q32_block_levels(&L, x, i, u, &d, &bias);
        for (int j = 0; j < TP_QK; j++)
            y[i * TP_QK + j] = L.m >= 0 ? (float)u[j] * d + bias : (float)((int)u[j] - L.offset) * d;
    }
}

/* ---------------------------------------------------------------------------------------------
 * K-quants: ggml's make_qkx2_quants / make_qx_quants
 * ------------------------------------------------------------------------------------------- */

static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                              bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_mad = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)TP_MAX(0, TP_MIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_mad += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * (x[i] - min));
            l = TP_MAX(0, TP_MIN(nmax, l));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float mad = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                mad += weights[i] * diff;
            }
            if (mad < best_mad) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

static float make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    bool return_early = false;
    if (rmse_type < 0) {
        rmse_type = -rmse_type;
        return_early = true;
    }
#define QX_WEIGHT(v) (rmse_type == 1 ? (v) * (v) : rmse_type == 2 ? 1 : rmse_type == 3 ? fabsf(v) : sqrtf(fabsf(v)))
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = TP_MAX(-nmax, TP_MIN(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        float w = QX_WEIGHT(x[i]);
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    if (return_early) return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = TP_MAX(-nmax, TP_MIN(nmax - 1, l));
            float w = QX_WEIGHT(x[i]);
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + TP_MAX(-nmax, TP_MIN(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
#undef QX_WEIGHT
    return scale;
}

/* Shared by Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins; L receives 0..nmax. */
static void quantize_k_scales_mins(const float *x, int nmax, float rmin, int nstep, uint16_t *yd,
                                   uint16_t *ydmin, uint8_t *yscales, uint8_t *L) {
    uint8_t Laux[32];
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin,
                                     0.1f, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(yscales, 0, 12);
    for (int j = 0; j < 8; ++j) {
        uint8_t ls = (uint8_t)TP_MIN(63, nearest_int(inv_scale * scales[j]));
        uint8_t lm = (uint8_t)TP_MIN(63, nearest_int(inv_min * mins[j]));
        if (j < 4) {
            yscales[j] = ls;
            yscales[j + 4] = lm;
        } else {
            yscales[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            yscales[j - 4] |= (uint8_t)((ls >> 4) << 6);
            yscales[j - 0] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *yd = tp_f32_to_f16(max_scale / 63.f);
    *ydmin = tp_f32_to_f16(max_min / 63.f);
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        tp_get_scale_min_k4(j, yscales, &sc, &m);
        const float d = tp_f16_to_f32(*yd) * sc;
        if (!d) continue;
        const float dm = tp_f16_to_f32(*ydmin) * m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)TP_MAX(0, TP_MIN(nmax, l));
        }
    }
}

static void quantize_q4_K(const float *x, tp_block_q4_K *y, int64_t n) {
    uint8_t L[TP_QK_K];
    for (int64_t i = 0; i < n / TP_QK_K; i++, x += TP_QK_K) {
        quantize_k_scales_mins(x, 15, -1.f, 20, &y[i].d, &y[i].dmin, y[i].scales, L);
        uint8_t *q = y[i].qs;
        for (int j = 0; j < TP_QK_K; j += 64) {
            for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
            q += 32;
        }
    }
}

static void quantize_q5_K(const float *x, tp_block_q5_K *y, int64_t n) {
    uint8_t L[TP_QK_K];
    for (int64_t i = 0; i < n / TP_QK_K; i++, x += TP_QK_K) {
        quantize_k_scales_mins(x, 31, -0.5f, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
        uint8_t *qh = y[i].qh, *ql = y[i].qs;
        memset(qh, 0, 32);
        uint8_t m1 = 1, m2 = 2;
        for (int nn = 0; nn < TP_QK_K; nn += 64) {
            for (int j = 0; j < 32; ++j) {
                int l1 = L[nn + j];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                int l2 = L[nn + j + 32];
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 = (uint8_t)(m1 << 2);
            m2 = (uint8_t)(m2 << 2);
            ql += 32;
        }
    }
}

static void quantize_q6_K(const float *x, tp_block_q6_K *y, int64_t n) {
    int8_t L[TP_QK_K];
    float scales[TP_QK_K / 16];
    for (int64_t i = 0; i < n / TP_QK_K; i++, x += TP_QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < TP_QK_K / 16; ++ib) {
            const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1);
            scales[ib] = scale;
            const float abs_scale = fabsf(scale);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof(tp_block_q6_K));
            y[i].d = tp_f32_to_f16(0.f);
            continue;
        }
        float iscale = -128.f / max_scale;
        y[i].d = tp_f32_to_f16(1 / iscale);
        for (int ib = 0; ib < TP_QK_K / 16; ++ib)
            y[i].scales[ib] = (int8_t)TP_MIN(127, nearest_int(iscale * scales[ib]));
        for (int j = 0; j < TP_QK_K / 16; ++j) {
            float d = tp_f16_to_f32(y[i].d) * y[i].scales[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ++ii) {
                int l = nearest_int(x[16 * j + ii] / d);
                l = TP_MAX(-32, TP_MIN(31, l));
                L[16 * j + ii] = (int8_t)(l + 32);
            }
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < TP_QK_K; j += 128) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                  ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
            }
            ql += 64;
            qh += 32;
        }
    }
}

/* Integer levels of a K-quant super-block: q[256] and per-32 (Q4_K/Q5_K: scale, min) or
 * per-16 (Q6_K: scale) integer factors. Shared by dequantisation and the portable dot. */
static void unpack_q4_K(const tp_block_q4_K *b, int8_t *q, uint8_t *sc, uint8_t *m) {
    for (int j = 0; j < 8; j++) tp_get_scale_min_k4(j, b->scales, &sc[j], &m[j]);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            q[64 * c + l] = (int8_t)(b->qs[32 * c + l] & 0xF);
            q[64 * c + 32 + l] = (int8_t)(b->qs[32 * c + l] >> 4);
        }
}

static void unpack_q5_K(const tp_block_q5_K *b, int8_t *q, uint8_t *sc, uint8_t *m) {
    for (int j = 0; j < 8; j++) tp_get_scale_min_k4(j, b->scales, &sc[j], &m[j]);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            q[64 * c + l] = (int8_t)((b->qs[32 * c + l] & 0xF) | (((b->qh[l] >> (2 * c)) & 1) << 4));
            q[64 * c + 32 + l] = (int8_t)((b->qs[32 * c + l] >> 4) | (((b->qh[l] >> (2 * c + 1)) & 1) << 4));
        }
}

static void unpack_q6_K(const tp_block_q6_K *b, int8_t *q) {
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        int8_t *y = q + 128 * h;
        for (int l = 0; l < 32; l++) {
            y[l + 0] = (int8_t)(((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
            y[l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            y[l + 64] = (int8_t)(((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            y[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
}

static void dequantize_q4_K(const tp_block_q4_K *x, float *y, int64_t n) {
    int8_t q[TP_QK_K];
    uint8_t sc[8], m[8];
    for (int64_t i = 0; i < n / TP_QK_K; i++) {
        const float d = tp_f16_to_f32(x[i].d), dmin = tp_f16_to_f32(x[i].dmin);
        unpack_q4_K(&x[i], q, sc, m);
        for (int j = 0; j < 8; j++) {
            const float d1 = d * sc[j], m1 = dmin * m[j];
            for (int l = 0; l < 32; l++) *y++ = d1 * q[32 * j + l] - m1;
        }
    }
}

static void dequantize_q5_K(const tp_block_q5_K *x, float *y, int64_t n) {
    int8_t q[TP_QK_K];
    uint8_t sc[8], m[8];
    for (int64_t i = 0; i < n / TP_QK_K; i++) {
        const float d = tp_f16_to_f32(x[i].d), dmin = tp_f16_to_f32(x[i].dmin);
        unpack_q5_K(&x[i], q, sc, m);
        for (int j = 0; j < 8; j++) {
            const float d1 = d * sc[j], m1 = dmin * m[j];
            for (int l = 0; l < 32; l++) *y++ = d1 * q[32 * j + l] - m1;
        }
    }
}

static void dequantize_q6_K(const tp_block_q6_K *x, float *y, int64_t n) {
    int8_t q[TP_QK_K];
    for (int64_t i = 0; i < n / TP_QK_K; i++) {
        const float d = tp_f16_to_f32(x[i].d);
        unpack_q6_K(&x[i], q);
        for (int j = 0; j < 16; j++) {
            const float d1 = d * x[i].scales[j];
            for (int l = 0; l < 16; l++) *y++ = d1 * q[16 * j + l];
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Row entry points
 * ------------------------------------------------------------------------------------------- */

void tp_dequantize_row(tp_type type, const void *src, float *dst, int64_t n) {
    switch (type) {
    case TP_TYPE_Q8_0: dequantize_q8_0(src, dst, n); return;
    case TP_TYPE_Q4_0:
    case TP_TYPE_Q4_1:
    case TP_TYPE_Q5_0:
    case TP_TYPE_Q5_1: dequantize_q32(type, src, dst, n); return;
    case TP_TYPE_Q4_K: dequantize_q4_K(src, dst, n); return;
    case TP_TYPE_Q5_K: dequantize_q5_K(src, dst, n); return;
    case TP_TYPE_Q6_K: dequantize_q6_K(src, dst, n); return;
    default: memset(dst, 0, (size_t)n * sizeof(float)); return;
    }
}

void tp_quantize_row(tp_type type, const float *src, void *dst, int64_t n) {
    switch (type) {
    case TP_TYPE_Q8_0: quantize_q8_0(src, dst, n); return;
    case TP_TYPE_Q4_0: quantize_q4_0(src, dst, n); return;
    case TP_TYPE_Q4_1: quantize_q4_1(src, dst, n); return;
    case TP_TYPE_Q5_0: quantize_q5_0(src, dst, n); return;
    case TP_TYPE_Q5_1: quantize_q5_1(src, dst, n); return;
    case TP_TYPE_Q4_K: quantize_q4_K(src, dst, n); return;
    case TP_TYPE_Q5_K: quantize_q5_K(src, dst, n); return;
    case TP_TYPE_Q6_K: quantize_q6_K(src, dst, n); return;
    default: return;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Activation blocks and portable dot products
 * ------------------------------------------------------------------------------------------- */

void tp_quantize_row_q8a(const float *x, tp_block_q8a *y, int64_t n) {
    for (int64_t i = 0; i < n / TP_QK; i++) {
        const float *xb = x + i * TP_QK;
        float amax = 0.0f;
        for (int j = 0; j < TP_QK; j++) amax = fmaxf(amax, fabsf(xb[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = d;
        int s0 = 0, s1 = 0;
        for (int j = 0; j < TP_QK; j++) {
            int v = nearest_int(xb[j] * id);
            y[i].qs[j] = (int8_t)v;
            if (j < 16) s0 += v;
            else s1 += v;
        }
        y[i].s[0] = (int16_t)s0;
        y[i].s[1] = (int16_t)s1;
    }
}

static inline int dot32_i8(const int8_t *a, const int8_t *b, int len) {
    int s = 0;
    for (int j = 0; j < len; j++) s += (int)a[j] * (int)b[j];
    return s;
}

float tp_vec_dot_q8a(tp_type type, const void *w, const tp_block_q8a *a, int64_t n) {
    float sum = 0.0f;
    switch (type) {
    case TP_TYPE_Q8_0: {
        const tp_block_q8_0 *x = w;
        for (int64_t i = 0; i < n / TP_QK; i++)
            sum += tp_f16_to_f32(x[i].d) * a[i].d * (float)dot32_i8(x[i].qs, a[i].qs, 32);
        return sum;
    }
    case TP_TYPE_Q4_0:
    case TP_TYPE_Q4_1:
    case TP_TYPE_Q5_0:
    case TP_TYPE_Q5_1: {
        /* Σ (d·u + bias)·(da·a) = d·da·Σ u·a + bias·da·Σ a; with an offset the sum stays integer */
        const tp_q32_layout L = tp_q32_layout_of(type);
        uint8_t u[TP_QK];
        for (int64_t i = 0; i < n / TP_QK; i++) {
            float d, bias;
            tp_q32_block_levels(&L, w, i, u, &d, &bias);
            int s = 0;
            for (int j = 0; j < TP_QK; j++) s += u[j] * a[i].qs[j];
            const int as = a[i].s[0] + a[i].s[1];
            if (L.m >= 0) sum += a[i].d * (d * (float)s + bias * (float)as);
            else sum += d * a[i].d * (float)(s - L.offset * as);
        }
        return sum;
    }
    case TP_TYPE_Q4_K:
    case TP_TYPE_Q5_K: {
        int8_t q[TP_QK_K];
        uint8_t sc[8], m[8];
        for (int64_t i = 0; i < n / TP_QK_K; i++) {
            float d, dmin;
            if (type == TP_TYPE_Q4_K) {
                const tp_block_q4_K *x = (const tp_block_q4_K *)w + i;
                unpack_q4_K(x, q, sc, m);
                d = tp_f16_to_f32(x->d);
                dmin = tp_f16_to_f32(x->dmin);
            } else {
                const tp_block_q5_K *x = (const tp_block_q5_K *)w + i;
                unpack_q5_K(x, q, sc, m);
                d = tp_f16_to_f32(x->d);
                dmin = tp_f16_to_f32(x->dmin);
            }
            const tp_block_q8a *ab = a + i * 8;
            for (int j = 0; j < 8; j++) {
                int s = dot32_i8(q + 32 * j, ab[j].qs, 32);
                int as = ab[j].s[0] + ab[j].s[1];
                sum += ab[j].d * (d * (float)(sc[j] * s) - dmin * (float)(m[j] * as));
            }
        }
        return sum;
    }
    case TP_TYPE_Q6_K: {
        int8_t q[TP_QK_K];
        for (int64_t i = 0; i < n / TP_QK_K; i++) {
            const tp_block_q6_K *x = (const tp_block_q6_K *)w + i;
            unpack_q6_K(x, q);
            const float d = tp_f16_to_f32(x->d);
            const tp_block_q8a *ab = a + i * 8;
            for (int j = 0; j < 8; j++) {
                int s = x->scales[2 * j] * dot32_i8(q + 32 * j, ab[j].qs, 16) +
                        x->scales[2 * j + 1] * dot32_i8(q + 32 * j + 16, ab[j].qs + 16, 16);
                sum += d * ab[j].d * (float)s;
            }
        }
        return sum;
    }
    default: return 0.0f;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Public API
 * ------------------------------------------------------------------------------------------- */

/* The checks tp_quantize and tp_dequantize share: a float/quantised type, buffers, whole blocks per
 * row, and a buffer of `size` bytes holding every row. Sets *row_bytes on success. */
static tp_status check_rows(const char *who, const char *buf_name, int type, const void *src, const void *dst,
                            int64_t n_rows, int64_t n_per_row, size_t size, size_t *row_bytes, tp_error *err) {
    if (!tp_type_is_valid(type) || type == TP_TYPE_I32) {
        tp_error_set(err, TP_ERR_TYPE, "%s: type %d is not a float or quantised type", who, type);
        return TP_ERR_TYPE;
    }
    if (!src || !dst || n_rows < 0 || n_per_row <= 0) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: NULL buffer or bad sizes (%lld rows of %lld)", who,
                     (long long)n_rows, (long long)n_per_row);
        return TP_ERR_INVALID_ARGUMENT;
    }
    *row_bytes = tp_type_row_bytes(type, n_per_row);
    if (*row_bytes == 0) {
        tp_error_set(err, TP_ERR_SHAPE, "%s: row length %lld is not a multiple of %s's block of %lld", who,
                     (long long)n_per_row, tp_type_name(type), (long long)tp_type_block_elements(type));
        return TP_ERR_SHAPE;
    }
    if ((uint64_t)n_rows > SIZE_MAX / *row_bytes || (size_t)n_rows * *row_bytes > size) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: %lld rows of %s need %zu bytes each, %s has %zu", who,
                     (long long)n_rows, tp_type_name(type), *row_bytes, buf_name, size);
        return TP_ERR_INVALID_ARGUMENT;
    }
    return TP_OK;
}

tp_status tp_quantize(int type, const float *src, int64_t n_rows, int64_t n_per_row, void *dst,
                      size_t dst_size, size_t *written, tp_error *err) {
    if (written) *written = 0;
    size_t row_bytes = 0;
    tp_status st = check_rows("tp_quantize", "dst", type, src, dst, n_rows, n_per_row, dst_size, &row_bytes, err);
    if (st != TP_OK) return st;
    for (int64_t r = 0; r < n_rows; r++)
        tp_row_from_f32((tp_type)type, src + r * n_per_row, (char *)dst + (size_t)r * row_bytes, n_per_row);
    if (written) *written = (size_t)n_rows * row_bytes;
    return TP_OK;
}

tp_status tp_dequantize(int type, const void *src, size_t src_size, int64_t n_rows, int64_t n_per_row,
                        float *dst, tp_error *err) {
    size_t row_bytes = 0;
    tp_status st = check_rows("tp_dequantize", "src", type, src, dst, n_rows, n_per_row, src_size, &row_bytes, err);
    if (st != TP_OK) return st;
    for (int64_t r = 0; r < n_rows; r++)
        tp_row_to_f32((tp_type)type, (const char *)src + (size_t)r * row_bytes, dst + r * n_per_row, n_per_row);
    return TP_OK;
}
