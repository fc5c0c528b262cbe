/* rope_topk.c - NeoX rotary position embedding (one position axis, or several sections of the rotation pairs
 * each with its own axis: M-RoPE, 2-D vision RoPE) and per-row top-k (MoE routing). */
#include "tp_kernels.h"

#include <math.h>

/* ---- rope (NeoX / rotate_half) ---- */

tp_tensor *tp_rope_neox(tp_context *ctx, tp_tensor *a, tp_tensor *pos, int n_rot, float freq_base) {
    if (!TP_CHECK_INPUTS(ctx, "tp_rope_neox", a, pos)) return NULL;
    if (a->type != TP_TYPE_F32 || pos->type != TP_TYPE_I32) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_rope_neox: a must be F32 and pos I32 (got %s, %s)",
                         tp_type_name(a->type), tp_type_name(pos->type));
        return NULL;
    }
    if (pos->ne[0] != a->ne[2] || tp_nelements(pos) != pos->ne[0]) {
        char sa[96], sp[96];
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_rope_neox: pos %s must be [T] = [%lld] for a %s [D, H, T, B]",
                         tp_shape_str(pos, sp, sizeof sp), (long long)a->ne[2], tp_shape_str(a, sa, sizeof sa));
        return NULL;
    }
    if (n_rot < 2 || n_rot % 2 != 0 || n_rot > a->ne[0]) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT,
                         "tp_rope_neox: n_rot = %d must be even, >= 2 and <= the head size %lld", n_rot,
                         (long long)a->ne[0]);
        return NULL;
    }
    if (!(freq_base > 0.0f) || isinf(freq_base)) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_rope_neox: freq_base = %g must be finite and > 0",
                         (double)freq_base);
        return NULL;
    }
    tp_tensor *t = tp_new_op_tensor(ctx, TP_TYPE_F32, a->n_dims, a->ne, TP_OP_ROPE_NEOX, a, pos, NULL);
    if (!t) return NULL;
    t->op_params[0] = n_rot;
    tp_set_op_param_f32(t, 1, freq_base);
    t->op_params[2] = n_rot; /* frequency denominator */
    t->op_params[3] = 0;     /* frequency index restarts per section */
    t->op_params[4] = 0;     /* sections: 0 = one position axis */
    return t;
}

tp_tensor *tp_rope_multi(tp_context *ctx, tp_tensor *a, tp_tensor *pos, int n_rot, float freq_base,
                         const int32_t *sections, int n_sections, int freq_dim, bool restart) {
    if (!TP_CHECK_INPUTS(ctx, "tp_rope_multi", a, pos)) return NULL;
    if (!sections || n_sections < 1 || n_sections > TP_ROPE_MAX_SECTIONS) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_rope_multi: %d sections (1..%d)", n_sections,
                         TP_ROPE_MAX_SECTIONS);
        return NULL;
    }
    int64_t pairs = 0;
    for (int i = 0; i < n_sections; i++) {
        if (sections[i] < 0) {
            tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_rope_multi: section %d has %d pairs", i, (int)sections[i]);
            return NULL;
        }
        pairs += sections[i];
    }
    if (2 * pairs != n_rot || freq_dim < 1) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT,
                         "tp_rope_multi: the sections hold %lld pairs, n_rot = %d needs %d; freq_dim = %d", (long long)pairs,
                         n_rot, n_rot / 2, freq_dim);
        return NULL;
    }
    if (pos->type != TP_TYPE_I32 || pos->ne[0] != a->ne[2] || pos->ne[1] != n_sections || pos->ne[2] != 1 ||
        pos->ne[3] != 1 || !tp_is_contiguous(pos)) {
        char sa[96], sp[96];
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_rope_multi: pos %s must be I32 [T, %d] = [%lld, %d] for a %s [D, H, T, B]",
                         tp_shape_str(pos, sp, sizeof sp), n_sections, (long long)a->ne[2], n_sections,
                         tp_shape_str(a, sa, sizeof sa));
        return NULL;
    }
    /* the single-axis checks on a [T] view of the first axis (type, n_rot, base) */
    int64_t ne1 = pos->ne[0];
    tp_tensor *axis0 = tp_view(ctx, pos, 1, &ne1, NULL, 0);
    tp_tensor *t = tp_rope_neox(ctx, a, axis0, n_rot, freq_base);
    if (!t) return NULL;
    t->src[1] = pos;
    t->op_params[2] = freq_dim;
    t->op_params[3] = restart ? 1 : 0;
    t->op_params[4] = n_sections;
    for (int i = 0; i < n_sections; i++) t->op_params[5 + i] = sections[i];
    return t;
}

/* The position axis and frequency index of rotation pair i. */
static void pair_axis(const tp_tensor *dst, int64_t i, int64_t *axis, int64_t *j) {
    const int n_sections = dst->op_params[4];
    *axis = 0;
    *j = i;
    if (n_sections == 0) return;
    int64_t start = 0;
    for (int s = 0; s < n_sections; s++) {
        const int64_t n = dst->op_params[5 + s];
        if (i < start + n || s == n_sections - 1) {
            *axis = s;
            *j = dst->op_params[3] ? i - start : i;
            return;
        }
        start += n;
    }
}

#define ROPE_CHUNK 256 /* rotation pairs whose cos/sin are kept on the stack */

/* Rows (one head of one token) are split over threads in memory order (head fastest), so cos/sin
 * are computed once per token position a thread meets, not once per head.
 * cos/sin follow HF (transformers' rotary embedding) in float32: inv_freq = 1/base^(2i/n_rot),
 * theta = (float)pos · inv_freq, then cosf/sinf. */
void tp_kernel_rope_neox(const tp_compute_params *p, tp_tensor *dst) {
    const tp_tensor *a = dst->src[0], *pos = dst->src[1];
    int n_rot = dst->op_params[0], freq_dim = dst->op_params[2];
    float base = tp_get_op_param_f32(dst, 1);
    int64_t D = a->ne[0], H = a->ne[1], T = a->ne[2];
    int64_t rows = H * T * a->ne[3];
    int64_t half = n_rot / 2;
    int64_t r0, r1;
    tp_split_range(rows, p->ith, p->nth, &r0, &r1);
    float cs[ROPE_CHUNK], sn[ROPE_CHUNK];
    int64_t cached_t = -1, cached_c = -1;
    size_t s0 = a->nb[0];
    for (int64_t r = r0; r < r1; r++) {
        int64_t h = r % H, t = (r / H) % T, b = r / (H * T);
        const char *row = tp_row_ptr(a, h, t, b);
        float *y = (float *)dst->data + r * D;
        for (int64_t c0 = 0; c0 < half; c0 += ROPE_CHUNK) {
            int64_t cn = TP_MIN((int64_t)ROPE_CHUNK, half - c0);
            if (t != cached_t || c0 != cached_c) {
                for (int64_t j = 0; j < cn; j++) {
                    int64_t axis, fj;
                    pair_axis(dst, c0 + j, &axis, &fj);
                    float pf = (float)*(const int32_t *)((const char *)pos->data + (size_t)t * pos->nb[0] +
                                                         (size_t)axis * pos->nb[1]);
                    float inv = 1.0f / powf(base, (float)(2 * fj) / (float)freq_dim);
                    float th = pf * inv;
                    cs[j] = cosf(th);
                    sn[j] = sinf(th);
                }
                cached_t = t;
                cached_c = c0;
            }
            float *y0 = y + c0, *y1 = y + c0 + half;
            if (s0 == sizeof(float)) {
                const float *x0 = (const float *)row + c0, *x1 = (const float *)row + c0 + half;
                for (int64_t j = 0; j < cn; j++) {
                    y0[j] = x0[j] * cs[j] - x1[j] * sn[j];
                    y1[j] = x1[j] * cs[j] + x0[j] * sn[j];
                }
            } else {
                for (int64_t j = 0; j < cn; j++) {
                    float v0 = *(const float *)(row + (size_t)(c0 + j) * s0);
                    float v1 = *(const float *)(row + (size_t)(c0 + j + half) * s0);
                    y0[j] = v0 * cs[j] - v1 * sn[j];
                    y1[j] = v1 * cs[j] + v0 * sn[j];
                }
            }
        }
        if (n_rot < D) {
            if (s0 == sizeof(float)) {
                memcpy(y + n_rot, (const float *)row + n_rot, (size_t)(D - n_rot) * sizeof(float));
            } else {
                for (int64_t i = n_rot; i < D; i++) y[i] = *(const float *)(row + (size_t)i * s0);
            }
        }
    }
}

/* ---- top-k ---- */

tp_tensor *tp_top_k(tp_context *ctx, tp_tensor *a, int k) {
    if (!TP_CHECK_INPUTS(ctx, "tp_top_k", a)) return NULL;
    if (a->type != TP_TYPE_F32) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_top_k: input must be F32 (got %s)", tp_type_name(a->type));
        return NULL;
    }
    if (k < 1 || k > a->ne[0]) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_top_k: k = %d is not in 1..%lld (the row length)", k,
                         (long long)a->ne[0]);
        return NULL;
    }
    if (a->ne[0] > INT32_MAX) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_top_k: rows of %lld elements do not fit I32 indices",
                         (long long)a->ne[0]);
        return NULL;
    }
    int64_t ne[TP_MAX_DIMS] = {k, a->ne[1], a->ne[2], a->ne[3]};
    tp_tensor *t = tp_new_op_tensor(ctx, TP_TYPE_I32, a->n_dims, ne, TP_OP_TOP_K, a, NULL, NULL);
    if (t) t->op_params[0] = k;
    return t;
}

/* v ranks above w: NaN above every number (as torch.topk), otherwise plain >. */
static inline bool ranks_above(float v, float w) {
    if (v != v) return w == w;
    return v > w;
}

/* The dst row is kept sorted (best first, equal values by ascending index). Elements arrive in
 * index order, so a new one goes after every entry it does not rank above: that makes ties go to
 * the lower index. Binary search + memmove: O(n log k) compares for typical data. */
void tp_kernel_top_k(const tp_compute_params *p, tp_tensor *dst) {
    const tp_tensor *a = dst->src[0];
    int64_t k = dst->op_params[0];
    int64_t n = a->ne[0], ne1 = a->ne[1], ne2 = a->ne[2];
    int64_t rows = ne1 * ne2 * a->ne[3];
    int64_t r0, r1;
    tp_split_range(rows, p->ith, p->nth, &r0, &r1);
    size_t s0 = a->nb[0];
    for (int64_t r = r0; r < r1; r++) {
        int64_t i1 = r % ne1, i2 = (r / ne1) % ne2, i3 = r / (ne1 * ne2);
        const char *row = tp_row_ptr(a, i1, i2, i3);
        int32_t *out = (int32_t *)dst->data + r * k;
#define TOPK_AT(i) (*(const float *)(row + (size_t)(i) * s0))
        int64_t cnt = 0;
        for (int64_t i = 0; i < n; i++) {
            float v = TOPK_AT(i);
            if (cnt == k && !ranks_above(v, TOPK_AT(out[k - 1]))) continue;
            int64_t lo = 0, hi = cnt;
            while (lo < hi) {
                int64_t mid = lo + (hi - lo) / 2;
                if (ranks_above(v, TOPK_AT(out[mid]))) hi = mid;
                else lo = mid + 1;
            }
            int64_t last = cnt < k ? cnt : k - 1; /* entries lo..last-1 move one place down */
            if (last > lo) memmove(&out[lo + 1], &out[lo], (size_t)(last - lo) * sizeof(int32_t));
            out[lo] = (int32_t)i;
            if (cnt < k) cnt++;
        }
#undef TOPK_AT
    }
}
