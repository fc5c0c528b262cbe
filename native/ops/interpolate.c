/* ops_interpolate.c - resizing of dims 0 (and 1) of a [W, H, C, N] tensor, the way
 * torch.nn.functional.interpolate(align_corners=False) does it on the CPU.
 *
 * Every mode is a separable filter: output index o along an axis reads n_taps(o) input indices
 * with weights. The tables (per axis: index and weight per tap, tap count per output) are built
 * once per compute in the shared scratch, then each output value is
 *     out[oy][ox] = sum_jy wy[jy] * (sum_jx wx[jx] * in[iy[jy]][ix[jx]])
 * summed in the same order and precision (float) as PyTorch's kernels:
 *   - LINEAR / BILINEAR: source index s = scale·(o + 0.5) − 0.5 clamped at 0, i0 = (int)s,
 *     i1 = i0 + 1 unless at the end, weights (1 − λ, λ);
 *   - BICUBIC: s unclamped, i0 = floor(s), cubic convolution with A = −0.75 over i0−1..i0+2 with
 *     indices clamped into range;
 *   - *_AA: PyTorch's antialiased path: filter support interp_size/2 scaled by the down-scale factor
 *     (when scale ≥ 1), taps xmin..xmin+xsize−1 around center = scale·(o + 0.5), weights
 *     filter((j + xmin − center + 0.5)·invscale) normalised to sum 1; the bicubic filter there uses
 *     A = −0.5 (Keys), the bilinear one is the triangle.
 * scale = in / out computed in float, as PyTorch does when given a size. */
#include "tp_kernels.h"

#include <math.h>

typedef struct axis_plan {
    int64_t in, out;
    int taps;      /* table stride per output index */
    bool identity; /* the y axis of LINEAR: not resized */
} axis_plan;

static float axis_scale(int64_t in, int64_t out) { return (float)in / (float)out; }

/* Taps per output index for an axis resized from in to out under `mode` (1 = identity axis). */
static int axis_taps(int mode, int64_t in, int64_t out, bool identity) {
    if (identity) return 1;
    switch (mode) {
    case TP_INTERP_LINEAR:
    case TP_INTERP_BILINEAR: return 2;
    case TP_INTERP_BICUBIC: return 4;
    default: {
        float scale = axis_scale(in, out);
        float half = mode == TP_INTERP_BICUBIC_AA ? 2.0f : 1.0f;
        float support = scale >= 1.0f ? half * scale : half;
        int64_t t = (int64_t)ceilf(support) * 2 + 1;
        if (t > in) t = in; /* never more taps than inputs (xsize <= in) */
        return (int)t;
    }
    }
}

static float cubic_conv1(float x, float A) { return ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f; }
static float cubic_conv2(float x, float A) { return ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A; }

static float aa_filter(int mode, float x) {
    if (x < 0.0f) x = -x;
    if (mode == TP_INTERP_BILINEAR_AA) return x < 1.0f ? 1.0f - x : 0.0f;
    const float A = -0.5f;
    if (x < 1.0f) return cubic_conv1(x, A);
    if (x < 2.0f) return cubic_conv2(x, A);
    return 0.0f;
}

/* Fill the table entries of output index o: idx[0..taps), w[0..taps), *cnt. */
static void axis_entry(int mode, const axis_plan *ax, int64_t o, int32_t *idx, float *w, int32_t *cnt) {
    int T = ax->taps;
    int64_t in = ax->in;
    if (ax->identity) {
        idx[0] = (int32_t)o;
        w[0] = 1.0f;
        *cnt = 1;
        return;
    }
    float scale = axis_scale(in, ax->out);
    if (mode == TP_INTERP_LINEAR || mode == TP_INTERP_BILINEAR) {
        float s = scale * ((float)o + 0.5f) - 0.5f;
        if (s < 0.0f) s = 0.0f;
        int64_t i0 = (int64_t)floorf(s);
        if (i0 > in - 1) i0 = in - 1;
        float l1 = s - (float)i0;
        l1 = l1 < 0.0f ? 0.0f : (l1 > 1.0f ? 1.0f : l1);
        idx[0] = (int32_t)i0;
        idx[1] = (int32_t)(i0 < in - 1 ? i0 + 1 : i0);
        w[0] = 1.0f - l1;
        w[1] = l1;
        *cnt = 2;
        return;
    }
    if (mode == TP_INTERP_BICUBIC) {
        float s = scale * ((float)o + 0.5f) - 0.5f;
        int64_t i0 = (int64_t)floorf(s);
        if (i0 > in - 1) i0 = in - 1;
        float t = s - (float)i0;
        t = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
        const float A = -0.75f;
        w[0] = cubic_conv2(t + 1.0f, A);
        w[1] = cubic_conv1(t, A);
        w[2] = cubic_conv1(1.0f - t, A);
        w[3] = cubic_conv2((1.0f - t) + 1.0f, A);
        for (int j = 0; j < 4; j++) {
            int64_t k = i0 - 1 + j;
            k = k < 0 ? 0 : (k > in - 1 ? in - 1 : k);
            idx[j] = (int32_t)k;
        }
        *cnt = 4;
        return;
    }
    /* antialiased */
    float half = mode == TP_INTERP_BICUBIC_AA ? 2.0f : 1.0f;
    float support = scale >= 1.0f ? half * scale : half;
    float center = (float)((double)scale * ((double)o + 0.5));
    float invscale = scale >= 1.0f ? (float)(1.0 / (double)scale) : 1.0f;
    int64_t xmin = (int64_t)((double)(center - support) + 0.5);
    if (xmin < 0) xmin = 0;
    int64_t xend = (int64_t)((double)(center + support) + 0.5);
    if (xend > in) xend = in;
    int64_t xsize = xend - xmin;
    if (xsize > T) xsize = T; /* cannot happen: T bounds the support */
    if (xsize < 1) { /* degenerate; keep defined */
        xmin = xmin < in ? xmin : in - 1;
        xsize = 1;
    }
    float total = 0.0f;
    for (int64_t j = 0; j < xsize; j++) {
        float arg = (float)((double)((float)(j + xmin) - center + 0.5f) * (double)invscale);
        float wj = aa_filter(mode, arg);
        w[j] = wj;
        idx[j] = (int32_t)(xmin + j);
        total += wj;
    }
    if (total != 0.0f)
        for (int64_t j = 0; j < xsize; j++) w[j] /= total;
    for (int64_t j = xsize; j < T; j++) {
        w[j] = 0.0f;
        idx[j] = (int32_t)xmin;
    }
    *cnt = (int32_t)xsize;
}

tp_tensor *tp_interpolate(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1, int mode) {
    if (!TP_CHECK_INPUTS(ctx, "tp_interpolate", a)) return NULL;
    if (a->type != TP_TYPE_F32) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_interpolate: input must be F32 (got %s)", tp_type_name(a->type));
        return NULL;
    }
    if (mode < TP_INTERP_LINEAR || mode > TP_INTERP_BILINEAR_AA) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_interpolate: unknown mode %d", mode);
        return NULL;
    }
    if (ne0 < 1 || ne1 < 1 || ne0 > INT32_MAX || ne1 > INT32_MAX || a->ne[0] > INT32_MAX ||
        a->ne[1] > INT32_MAX) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_interpolate: output size %lld x %lld invalid",
                         (long long)ne0, (long long)ne1);
        return NULL;
    }
    if (mode == TP_INTERP_LINEAR && ne1 != a->ne[1]) {
        char sa[96];
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_interpolate: LINEAR resizes dim 0 only, but ne1 %lld != %s[1]",
                         (long long)ne1, tp_shape_str(a, sa, sizeof sa));
        return NULL;
    }
    int64_t ne[TP_MAX_DIMS] = {ne0, ne1, a->ne[2], a->ne[3]};
    int n_dims = a->n_dims < 2 ? 2 : a->n_dims;
    if (mode == TP_INTERP_LINEAR) n_dims = a->n_dims;
    tp_tensor *t = tp_new_op_tensor(ctx, TP_TYPE_F32, n_dims, ne, TP_OP_INTERPOLATE, a, NULL, NULL);
    if (t) t->op_params[0] = mode;
    return t;
}

static void plans(const tp_tensor *dst, axis_plan *ax, axis_plan *ay) {
    const tp_tensor *a = dst->src[0];
    int mode = dst->op_params[0];
    ax->in = a->ne[0];
    ax->out = dst->ne[0];
    ay->in = a->ne[1];
    ay->out = dst->ne[1];
    /* An unchanged axis needs no special case: its weights are exactly the identity in every mode. */
    ax->identity = false;
    ay->identity = mode == TP_INTERP_LINEAR;
    ax->taps = axis_taps(mode, ax->in, ax->out, ax->identity);
    ay->taps = axis_taps(mode, ay->in, ay->out, ay->identity);
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Bytes of one axis table: idx + w per tap, plus a count per output. */
static size_t table_bytes(const axis_plan *ax) {
    size_t n = (size_t)ax->out * (size_t)ax->taps;
    return align64(n * sizeof(int32_t)) + align64(n * sizeof(float)) + align64((size_t)ax->out * sizeof(int32_t));
}

size_t tp_work_size_interpolate(const tp_tensor *dst, int nth) {
    TP_UNUSED(nth);
    axis_plan ax, ay;
    plans(dst, &ax, &ay);
    return table_bytes(&ax) + table_bytes(&ay);
}

typedef struct axis_table {
    int32_t *idx;
    float *w;
    int32_t *cnt;
} axis_table;

static char *carve_table(char *base, const axis_plan *ax, axis_table *tb) {
    size_t n = (size_t)ax->out * (size_t)ax->taps;
    tb->idx = (int32_t *)base;
    base += align64(n * sizeof(int32_t));
    tb->w = (float *)base;
    base += align64(n * sizeof(float));
    tb->cnt = (int32_t *)base;
    base += align64((size_t)ax->out * sizeof(int32_t));
    return base;
}

void tp_kernel_interpolate(const tp_compute_params *p, tp_tensor *dst) {
    const tp_tensor *a = dst->src[0];
    int mode = dst->op_params[0];
    axis_plan ax, ay;
    plans(dst, &ax, &ay);
    axis_table tx, ty;
    char *base = p->wdata;
    base = carve_table(base, &ax, &tx);
    carve_table(base, &ay, &ty);

    /* phase 1: the tables, entries split over threads */
    int64_t n_entries = ax.out + ay.out, e0, e1;
    tp_split_range(n_entries, p->ith, p->nth, &e0, &e1);
    for (int64_t e = e0; e < e1; e++) {
        if (e < ax.out)
            axis_entry(mode, &ax, e, tx.idx + e * ax.taps, tx.w + e * ax.taps, tx.cnt + e);
        else {
            int64_t o = e - ax.out;
            axis_entry(mode, &ay, o, ty.idx + o * ay.taps, ty.w + o * ay.taps, ty.cnt + o);
        }
    }
    tp_barrier(p->pool);

    /* phase 2: output rows (oy, c, n) split over threads */
    int64_t OW = dst->ne[0], OH = dst->ne[1], C = dst->ne[2];
    int64_t rows = OH * C * dst->ne[3], r0, r1;
    tp_split_range(rows, p->ith, p->nth, &r0, &r1);
    size_t sx = a->nb[0], sy = a->nb[1];
    for (int64_t r = r0; r < r1; r++) {
        int64_t oy = r % OH, c = (r / OH) % C, n = r / (OH * C);
        const char *plane = (const char *)a->data + c * a->nb[2] + n * a->nb[3];
        float *out = (float *)dst->data + r * OW;
        const int32_t *iy = ty.idx + oy * ay.taps;
        const float *wy = ty.w + oy * ay.taps;
        int ny = ty.cnt[oy];
        for (int64_t ox = 0; ox < OW; ox++) {
            const int32_t *ix = tx.idx + ox * ax.taps;
            const float *wx = tx.w + ox * ax.taps;
            int nx = tx.cnt[ox];
            float acc = 0.0f;
            for (int jy = 0; jy < ny; jy++) {
                const char *row = plane + (size_t)iy[jy] * sy;
                float t = *(const float *)(row + (size_t)ix[0] * sx) * wx[0];
                for (int jx = 1; jx < nx; jx++) t += *(const float *)(row + (size_t)ix[jx] * sx) * wx[jx];
                acc = jy == 0 ? t * wy[0] : acc + t * wy[jy];
            }
            out[ox] = acc;
        }
    }
}
