/* ops_norm.c - layer norm, RMS norm and softmax, all over dim 0 (one row at a time).
 *
 * Every kernel splits the rows (dims 1..3) over the threads and writes each row of dst (always
 * contiguous) once. A non-contiguous source row is first gathered into the dst row, so the maths
 * always runs on a contiguous float row (vectorisable loops, no scratch needed).
 *
 * Sums use 8 float lanes over chunks of at most 256 elements, each chunk sum added in double:
 * vectorisable, and as accurate as a double sum for the row lengths these models use. */
#include "tp_kernels.h"

#include <math.h>

/* ---- shared helpers ---- */

#define LANES 8
#define CHUNK 256

/* sum(x - c) (c shifts the values near 0 so that float partial sums lose nothing to a large mean) */
static double sum_f32(const float *x, int64_t n, float c) {
    double total = 0.0;
    int64_t i = 0;
    int64_t n8 = n - n % LANES;
    while (i < n8) {
        int64_t end = TP_MIN(i + CHUNK, n8);
        float acc[LANES] = {0};
        for (; i < end; i += LANES)
            for (int j = 0; j < LANES; j++) acc[j] += x[i + j] - c;
        float s = 0.0f;
        for (int j = 0; j < LANES; j++) s += acc[j];
        total += s;
    }
    for (; i < n; i++) total += (double)x[i] - (double)c;
    return total;
}

/* sum((x - mh - ml)^2): the mean as a float pair (hi + lo), so that x - mean keeps full precision
 * when the mean is large against the spread (x - mh is exact for x near mh). */
static double sum_sq_dev_f32(const float *x, int64_t n, float mh, float ml) {
    double total = 0.0;
    int64_t i = 0;
    int64_t n8 = n - n % LANES;
    while (i < n8) {
        int64_t end = TP_MIN(i + CHUNK, n8);
        float acc[LANES] = {0};
        for (; i < end; i += LANES)
            for (int j = 0; j < LANES; j++) {
                float d = (x[i + j] - mh) - ml;
                acc[j] += d * d;
            }
        float s = 0.0f;
        for (int j = 0; j < LANES; j++) s += acc[j];
        total += s;
    }
    for (; i < n; i++) {
        double d = (double)x[i] - (double)mh - (double)ml;
        total += d * d;
    }
    return total;
}

/* The row (i1, i2, i3) of a F32 tensor as a contiguous float pointer: the source itself when its
 * dim 0 is contiguous, else gathered into buf (n floats). */
static const float *load_row(const tp_tensor *a, int64_t i1, int64_t i2, int64_t i3, float *buf) {
    const char *row = tp_row_ptr(a, i1, i2, i3);
    if (a->nb[0] == sizeof(float)) return (const float *)row;
    size_t s = a->nb[0];
    for (int64_t i = 0; i < a->ne[0]; i++) buf[i] = *(const float *)(row + (size_t)i * s);
    return buf;
}

/* A [ne0] F32 parameter vector (weight/bias) as a contiguous pointer, or NULL when it is strided
 * (then read element-wise through param_at). */
static const float *param_ptr(const tp_tensor *w) {
    if (!w) return NULL;
    return w->nb[0] == sizeof(float) ? (const float *)w->data : NULL;
}

static inline float param_at(const tp_tensor *w, int64_t i) {
    return *(const float *)((const char *)w->data + (size_t)i * w->nb[0]);
}

/* w (or NULL) must be a F32 vector of ne0 elements along dim 0. */
static bool check_param(tp_context *ctx, const char *op, const char *what, const tp_tensor *w,
                        const tp_tensor *a) {
    if (!w) return true;
    if (w->type != TP_TYPE_F32) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "%s: %s must be F32 (got %s)", op, what, tp_type_name(w->type));
        return false;
    }
    if (w->ne[0] != a->ne[0] || tp_nelements(w) != w->ne[0]) {
        char sw[96], sa[96];
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "%s: %s %s must be [%lld] for input %s", op, what,
                         tp_shape_str(w, sw, sizeof sw), (long long)a->ne[0], tp_shape_str(a, sa, sizeof sa));
        return false;
    }
    return true;
}

static bool check_input(tp_context *ctx, const char *op, const tp_tensor *a) {
    if (a->type != TP_TYPE_F32) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "%s: input must be F32 (got %s)", op, tp_type_name(a->type));
        return false;
    }
    return true;
}

static bool check_eps(tp_context *ctx, const char *op, float eps) {
    if (!(eps >= 0.0f) || isinf(eps)) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "%s: eps = %g must be finite and >= 0", op, (double)eps);
        return false;
    }
    return true;
}

/* ---- layer norm ---- */

tp_tensor *tp_layer_norm(tp_context *ctx, tp_tensor *a, tp_tensor *w, tp_tensor *b, float eps) {
    if (!TP_CHECK_INPUTS(ctx, "tp_layer_norm", a)) return NULL;
    if ((w && !TP_CHECK_INPUTS(ctx, "tp_layer_norm", w)) || (b && !TP_CHECK_INPUTS(ctx, "tp_layer_norm", b)))
        return NULL;
    if (!check_input(ctx, "tp_layer_norm", a) || !check_param(ctx, "tp_layer_norm", "weight", w, a) ||
        !check_param(ctx, "tp_layer_norm", "bias", b, a) || !check_eps(ctx, "tp_layer_norm", eps))
        return NULL;
    tp_tensor *t = tp_new_op_tensor(ctx, TP_TYPE_F32, a->n_dims, a->ne, TP_OP_LAYER_NORM, a, w, b);
    if (t) tp_set_op_param_f32(t, 0, eps);
    return t;
}

/* y = (x - mean) / sqrt(var + eps) * w + b, var biased (as torch.nn.functional.layer_norm). */
void tp_kernel_layer_norm(const tp_compute_params *p, tp_tensor *dst) {
    const tp_tensor *a = dst->src[0], *w = dst->src[1], *b = dst->src[2];
    float eps = tp_get_op_param_f32(dst, 0);
    int64_t ne0 = a->ne[0], ne1 = a->ne[1], ne2 = a->ne[2];
    int64_t rows = ne1 * ne2 * a->ne[3];
    int64_t r0, r1;
    tp_split_range(rows, p->ith, p->nth, &r0, &r1);
    const float *wp = param_ptr(w), *bp = param_ptr(b);
    for (int64_t r = r0; r < r1; r++) {
        int64_t i1 = r % ne1, i2 = (r / ne1) % ne2, i3 = r / (ne1 * ne2);
        float *y = (float *)dst->data + r * ne0;
        const float *x = load_row(a, i1, i2, i3, y);
        double mean = (double)x[0] + sum_f32(x, ne0, x[0]) / (double)ne0;
        float mh = (float)mean, ml = (float)(mean - (double)mh);
        double var = sum_sq_dev_f32(x, ne0, mh, ml) / (double)ne0;
        float rstd = (float)(1.0 / sqrt(var + (double)eps));
        for (int64_t i = 0; i < ne0; i++) y[i] = ((x[i] - mh) - ml) * rstd;
        if (w) {
            if (wp) for (int64_t i = 0; i < ne0; i++) y[i] *= wp[i];
            else for (int64_t i = 0; i < ne0; i++) y[i] *= param_at(w, i);
        }
        if (b) {
            if (bp) for (int64_t i = 0; i < ne0; i++) y[i] += bp[i];
            else for (int64_t i = 0; i < ne0; i++) y[i] += param_at(b, i);
        }
    }
}

/* ---- RMS norm ---- */

tp_tensor *tp_rms_norm(tp_context *ctx, tp_tensor *a, tp_tensor *w, float eps) {
    if (!TP_CHECK_INPUTS(ctx, "tp_rms_norm", a)) return NULL;
    if (w && !TP_CHECK_INPUTS(ctx, "tp_rms_norm", w)) return NULL;
    if (!check_input(ctx, "tp_rms_norm", a) || !check_param(ctx, "tp_rms_norm", "weight", w, a) ||
        !check_eps(ctx, "tp_rms_norm", eps))
        return NULL;
    tp_tensor *t = tp_new_op_tensor(ctx, TP_TYPE_F32, a->n_dims, a->ne, TP_OP_RMS_NORM, a, w, NULL);
    if (t) tp_set_op_param_f32(t, 0, eps);
    return t;
}

/* y = w · (x · 1/sqrt(mean(x²) + eps)), in f32 as LLaMA/DeepSeek RMSNorm. */
void tp_kernel_rms_norm(const tp_compute_params *p, tp_tensor *dst) {
    const tp_tensor *a = dst->src[0], *w = dst->src[1];
    float eps = tp_get_op_param_f32(dst, 0);
    int64_t ne0 = a->ne[0], ne1 = a->ne[1], ne2 = a->ne[2];
    int64_t rows = ne1 * ne2 * a->ne[3];
    int64_t r0, r1;
    tp_split_range(rows, p->ith, p->nth, &r0, &r1);
    const float *wp = param_ptr(w);
    for (int64_t r = r0; r < r1; r++) {
        int64_t i1 = r % ne1, i2 = (r / ne1) % ne2, i3 = r / (ne1 * ne2);
        float *y = (float *)dst->data + r * ne0;
        const float *x = load_row(a, i1, i2, i3, y);
        float ms = (float)(sum_sq_dev_f32(x, ne0, 0.0f, 0.0f) / (double)ne0);
        float scale = 1.0f / sqrtf(ms + eps);
        for (int64_t i = 0; i < ne0; i++) y[i] = x[i] * scale;
        if (w) {
            if (wp) for (int64_t i = 0; i < ne0; i++) y[i] *= wp[i];
            else for (int64_t i = 0; i < ne0; i++) y[i] *= param_at(w, i);
        }
    }
}


/* exp(x) for x <= 0 (the shifted logits of a softmax), written so that the loop over a row
 * auto-vectorises: Cephes' expf (range reduction by ln 2 in two parts, degree-5 polynomial,
 * about 1 ulp), rounding by the 1.5·2^23 trick, 2^n built from its bits. x < -87 gives 0 (the true
 * value is below 1.7e-38, below FLT_MIN scale and irrelevant next to the row maximum's 1). */
static void exp_row_nonpos(float *y, int64_t n) {
    /* x < -87 (and -inf) found on the bits: for x <= 0 a larger unsigned pattern is a more
     * negative number. Integer selects keep the loop free of FP branches, so it vectorises. */
    const uint32_t lim = 0xC2AE0000u; /* -87.0f */
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &y[i], sizeof u);
        uint32_t under = u > lim;
        uint32_t uc = under ? lim : u;
        float xc;
        memcpy(&xc, &uc, sizeof xc);
        float t = xc * 1.44269504088896341f + 12582912.0f;
        float fn = t - 12582912.0f;
        float r = xc - fn * 0.693359375f;
        r = r - fn * -2.12194440e-4f;
        float r2 = r * r;
        float poly = 1.9875691500e-4f;
        poly = poly * r + 1.3981999507e-3f;
        poly = poly * r + 8.3334519073e-3f;
        poly = poly * r + 4.1665795894e-2f;
        poly = poly * r + 1.6666665459e-1f;
        poly = poly * r + 5.0000001201e-1f;
        float e = poly * r2 + r + 1.0f;
        int32_t bits = ((int32_t)fn + 127) * (1 << 23);
        float scale;
        memcpy(&scale, &bits, sizeof scale);
        float res = e * scale;
        uint32_t rb;
        memcpy(&rb, &res, sizeof rb);
        rb &= under - 1u;
        memcpy(&y[i], &rb, sizeof rb);
    }
}

/* ---- softmax ---- */

tp_tensor *tp_softmax(tp_context *ctx, tp_tensor *a, tp_tensor *mask, float scale) {
    if (!TP_CHECK_INPUTS(ctx, "tp_softmax", a)) return NULL;
    if (mask && !TP_CHECK_INPUTS(ctx, "tp_softmax", mask)) return NULL;
    if (!check_input(ctx, "tp_softmax", a)) return NULL;
    if (mask) {
        if (mask->type != TP_TYPE_F32) {
            tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_softmax: mask must be F32 (got %s)", tp_type_name(mask->type));
            return NULL;
        }
        if (!tp_can_broadcast(a, mask)) {
            char sa[96], sm[96];
            tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_softmax: mask %s cannot be broadcast to %s",
                             tp_shape_str(mask, sm, sizeof sm), tp_shape_str(a, sa, sizeof sa));
            return NULL;
        }
    }
    tp_tensor *t = tp_new_op_tensor(ctx, TP_TYPE_F32, a->n_dims, a->ne, TP_OP_SOFTMAX, a, mask, NULL);
    if (t) tp_set_op_param_f32(t, 0, scale);
    return t;
}

/* y = softmax(x·scale + mask). A row whose every logit is -inf (fully masked) gives zeros
 * (torch gives NaN there). NaN logits give NaN, as in torch. */
void tp_kernel_softmax(const tp_compute_params *p, tp_tensor *dst) {
    const tp_tensor *a = dst->src[0], *m = dst->src[1];
    float scale = tp_get_op_param_f32(dst, 0);
    int64_t ne0 = a->ne[0], ne1 = a->ne[1], ne2 = a->ne[2];
    int64_t rows = ne1 * ne2 * a->ne[3];
    int64_t r0, r1;
    tp_split_range(rows, p->ith, p->nth, &r0, &r1);
    size_t sa = a->nb[0];
    for (int64_t r = r0; r < r1; r++) {
        int64_t i1 = r % ne1, i2 = (r / ne1) % ne2, i3 = r / (ne1 * ne2);
        float *y = (float *)dst->data + r * ne0;
        const char *ra = tp_row_ptr(a, i1, i2, i3);
        if (sa == sizeof(float)) {
            const float *x = (const float *)ra;
            for (int64_t i = 0; i < ne0; i++) y[i] = x[i] * scale;
        } else {
            for (int64_t i = 0; i < ne0; i++) y[i] = *(const float *)(ra + (size_t)i * sa) * scale;
        }
        if (m) {
            const char *rm = tp_row_ptr(m, i1 % m->ne[1], i2 % m->ne[2], i3 % m->ne[3]);
            if (m->ne[0] == 1) {
                float v = *(const float *)rm;
                for (int64_t i = 0; i < ne0; i++) y[i] += v;
            } else if (m->nb[0] == sizeof(float)) {
                const float *mv = (const float *)rm;
                for (int64_t i = 0; i < ne0; i++) y[i] += mv[i];
            } else {
                for (int64_t i = 0; i < ne0; i++) y[i] += *(const float *)(rm + (size_t)i * m->nb[0]);
            }
        }
        float mx = -INFINITY;
        bool has_nan = false;
        for (int64_t i = 0; i < ne0; i++) {
            mx = y[i] > mx ? y[i] : mx;
            has_nan |= y[i] != y[i];
        }
        if (has_nan) {
            for (int64_t i = 0; i < ne0; i++) y[i] = NAN;
            continue;
        }
        if (mx == -INFINITY) {
            memset(y, 0, (size_t)ne0 * sizeof(float));
            continue;
        }
        for (int64_t i = 0; i < ne0; i++) y[i] -= mx;
        exp_row_nonpos(y, ne0);
        float inv = (float)(1.0 / sum_f32(y, ne0, 0.0f));
        for (int64_t i = 0; i < ne0; i++) y[i] *= inv;
    }
}
