/* ops_elementwise.c - add, mul, div (with broadcasting), scale, sigmoid and the activations. */
#include "tp_kernels.h"

#include <math.h>

static bool is_f32(const tp_tensor *t) { return t->type == TP_TYPE_F32; }

static tp_tensor *binary_op(tp_context *ctx, const char *name, tp_op op, tp_tensor *a, tp_tensor *b) {
    if (!TP_CHECK_INPUTS(ctx, name, a, b)) return NULL;
    if (!is_f32(a) || !is_f32(b)) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "%s: inputs must be F32 (got %s, %s)", name,
                         tp_type_name(a->type), tp_type_name(b->type));
        return NULL;
    }
    if (!tp_can_broadcast(a, b)) {
        char sa[96], sb[96];
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "%s: %s cannot be broadcast to %s", name,
                         tp_shape_str(b, sb, sizeof sb), tp_shape_str(a, sa, sizeof sa));
        return NULL;
    }
    return tp_new_op_tensor(ctx, TP_TYPE_F32, a->n_dims, a->ne, op, a, b, NULL);
}

tp_tensor *tp_add(tp_context *ctx, tp_tensor *a, tp_tensor *b) { return binary_op(ctx, "tp_add", TP_OP_ADD, a, b); }
tp_tensor *tp_mul(tp_context *ctx, tp_tensor *a, tp_tensor *b) { return binary_op(ctx, "tp_mul", TP_OP_MUL, a, b); }
tp_tensor *tp_div(tp_context *ctx, tp_tensor *a, tp_tensor *b) { return binary_op(ctx, "tp_div", TP_OP_DIV, a, b); }

static void binary_row_contiguous(float *restrict out, const float *restrict x, const float *restrict y,
                                  int64_t n, bool y_scalar, tp_op op) {
    const bool is_add = op == TP_OP_ADD;
    if (op == TP_OP_DIV) {
        for (int64_t i = 0; i < n; i++) out[i] = x[i] / y[y_scalar ? 0 : i];
    } else if (y_scalar) {
        const float c = y[0];
        if (is_add)
            for (int64_t i = 0; i < n; i++) out[i] = x[i] + c;
        else
            for (int64_t i = 0; i < n; i++) out[i] = x[i] * c;
    } else if (is_add) {
        for (int64_t i = 0; i < n; i++) out[i] = x[i] + y[i];
    } else {
        for (int64_t i = 0; i < n; i++) out[i] = x[i] * y[i];
    }
}

/* dst = a (op) b over rows split across threads; b broadcast where its dims are 1. */
static void binary_kernel(const tp_compute_params *p, tp_tensor *dst, tp_op op) {
    const tp_tensor *a = dst->src[0], *b = dst->src[1];
    int64_t ne0 = a->ne[0], ne1 = a->ne[1], ne2 = a->ne[2];
    int64_t rows = ne1 * ne2 * a->ne[3];
    int64_t r0, r1;
    tp_split_range(rows, p->ith, p->nth, &r0, &r1);
    bool b_bcast0 = b->ne[0] == 1;
    for (int64_t r = r0; r < r1; r++) {
        int64_t i1 = r % ne1, i2 = (r / ne1) % ne2, i3 = r / (ne1 * ne2);
        const char *ra = tp_row_ptr(a, i1, i2, i3);
        const char *rb = tp_row_ptr(b, i1 % b->ne[1], i2 % b->ne[2], i3 % b->ne[3]);
        float *out = (float *)dst->data + r * ne0;
        size_t sa = a->nb[0], sb = b_bcast0 ? 0 : b->nb[0];
        if (sa == sizeof(float) && (sb == sizeof(float) || sb == 0)) {
            /* the common case (residuals, biases): unit stride, so the loops vectorise */
            binary_row_contiguous(out, (const float *)ra, (const float *)rb, ne0, sb == 0, op);
            continue;
        }
        if (op == TP_OP_DIV) {
            for (int64_t i = 0; i < ne0; i++)
                out[i] = *(const float *)(ra + i * sa) / *(const float *)(rb + i * sb);
        } else if (op == TP_OP_ADD) {
            for (int64_t i = 0; i < ne0; i++)
                out[i] = *(const float *)(ra + i * sa) + *(const float *)(rb + i * sb);
        } else {
            for (int64_t i = 0; i < ne0; i++)
                out[i] = *(const float *)(ra + i * sa) * *(const float *)(rb + i * sb);
        }
    }
}

void tp_kernel_add(const tp_compute_params *p, tp_tensor *dst) { binary_kernel(p, dst, TP_OP_ADD); }
void tp_kernel_mul(const tp_compute_params *p, tp_tensor *dst) { binary_kernel(p, dst, TP_OP_MUL); }
void tp_kernel_div(const tp_compute_params *p, tp_tensor *dst) { binary_kernel(p, dst, TP_OP_DIV); }

static tp_tensor *unary_op(tp_context *ctx, const char *name, tp_op op, tp_tensor *a) {
    if (!TP_CHECK_INPUTS(ctx, name, a)) return NULL;
    if (!is_f32(a)) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "%s: input must be F32 (got %s)", name, tp_type_name(a->type));
        return NULL;
    }
    return tp_new_op_tensor(ctx, TP_TYPE_F32, a->n_dims, a->ne, op, a, NULL, NULL);
}

tp_tensor *tp_scale(tp_context *ctx, tp_tensor *a, float s) {
    tp_tensor *t = unary_op(ctx, "tp_scale", TP_OP_SCALE, a);
    if (t) tp_set_op_param_f32(t, 0, s);
    return t;
}
tp_tensor *tp_gelu(tp_context *ctx, tp_tensor *a) { return unary_op(ctx, "tp_gelu", TP_OP_GELU, a); }
tp_tensor *tp_gelu_tanh(tp_context *ctx, tp_tensor *a) { return unary_op(ctx, "tp_gelu_tanh", TP_OP_GELU_TANH, a); }
tp_tensor *tp_quick_gelu(tp_context *ctx, tp_tensor *a) { return unary_op(ctx, "tp_quick_gelu", TP_OP_QUICK_GELU, a); }
tp_tensor *tp_silu(tp_context *ctx, tp_tensor *a) { return unary_op(ctx, "tp_silu", TP_OP_SILU, a); }
tp_tensor *tp_sigmoid(tp_context *ctx, tp_tensor *a) { return unary_op(ctx, "tp_sigmoid", TP_OP_SIGMOID, a); }

typedef float (*unary_fn)(float x, float param);

static float f_scale(float x, float s) { return x * s; }

/* σ(x) with exp taken of −|x| only (no overflow): e/(1 + e) for x < 0, 1/(1 + e) otherwise. */
static float f_sigmoid(float x, float u) {
    TP_UNUSED(u);
    const float e = expf(-fabsf(x));
    return (x < 0.0f ? e : 1.0f) / (1.0f + e);
}

static void unary_kernel(const tp_compute_params *p, tp_tensor *dst, unary_fn fn) {
    const tp_tensor *a = dst->src[0];
    float param = tp_get_op_param_f32(dst, 0);
    int64_t ne0 = a->ne[0], ne1 = a->ne[1], ne2 = a->ne[2];
    int64_t rows = ne1 * ne2 * a->ne[3];
    int64_t r0, r1;
    tp_split_range(rows, p->ith, p->nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        int64_t i1 = r % ne1, i2 = (r / ne1) % ne2, i3 = r / (ne1 * ne2);
        const char *ra = tp_row_ptr(a, i1, i2, i3);
        float *out = (float *)dst->data + r * ne0;
        for (int64_t i = 0; i < ne0; i++) out[i] = fn(*(const float *)(ra + i * a->nb[0]), param);
    }
}

void tp_kernel_scale(const tp_compute_params *p, tp_tensor *dst) { unary_kernel(p, dst, f_scale); }
void tp_kernel_sigmoid(const tp_compute_params *p, tp_tensor *dst) { unary_kernel(p, dst, f_sigmoid); }

/* ---- gelu (erf and tanh forms), quick_gelu, silu: row loops in tp_act_rows.h ---- */
#define TP_ACT_MADD(a, b, c) ((a) * (b) + (c))
#include "tp_act_rows.h"

void tp_act_row(tp_act_row_kind act, float *y, int64_t n, tp_cpu_path path) {
    const float k = act == TP_ACT_ROW_SILU ? 1.0f : 1.702f; /* x·σ(k·x) */
    if (path == TP_CPU_AVX512) {
        if (act == TP_ACT_ROW_GELU) tp_act_gelu_row_avx512(y, n);
        else if (act == TP_ACT_ROW_GELU_TANH) tp_act_gelu_tanh_row_avx512(y, n);
        else tp_act_sigmoid_mul_row_avx512(y, n, k);
    } else if (path == TP_CPU_AVX2) {
        if (act == TP_ACT_ROW_GELU) tp_act_gelu_row_avx2(y, n);
        else if (act == TP_ACT_ROW_GELU_TANH) tp_act_gelu_tanh_row_avx2(y, n);
        else tp_act_sigmoid_mul_row_avx2(y, n, k);
    } else if (act == TP_ACT_ROW_GELU) {
        tp_act_gelu_row(y, n);
    } else if (act == TP_ACT_ROW_GELU_TANH) {
        tp_act_gelu_tanh_row(y, n);
    } else {
        tp_act_sigmoid_mul_row(y, n, k);
    }
}

static void act_kernel(const tp_compute_params *p, tp_tensor *dst, tp_act_row_kind act) {
    const tp_tensor *a = dst->src[0];
    int64_t ne0 = a->ne[0], ne1 = a->ne[1], ne2 = a->ne[2];
    int64_t rows = ne1 * ne2 * a->ne[3];
    int64_t r0, r1;
    tp_split_range(rows, p->ith, p->nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        int64_t i1 = r % ne1, i2 = (r / ne1) % ne2, i3 = r / (ne1 * ne2);
        const char *ra = tp_row_ptr(a, i1, i2, i3);
        float *out = (float *)dst->data + r * ne0;
        if (a->nb[0] == sizeof(float)) memcpy(out, ra, (size_t)ne0 * sizeof(float));
        else for (int64_t i = 0; i < ne0; i++) out[i] = *(const float *)(ra + i * a->nb[0]);
        tp_act_row(act, out, ne0, p->path);
    }
}

void tp_kernel_gelu(const tp_compute_params *p, tp_tensor *dst) { act_kernel(p, dst, TP_ACT_ROW_GELU); }
void tp_kernel_gelu_tanh(const tp_compute_params *p, tp_tensor *dst) { act_kernel(p, dst, TP_ACT_ROW_GELU_TANH); }
void tp_kernel_quick_gelu(const tp_compute_params *p, tp_tensor *dst) { act_kernel(p, dst, TP_ACT_ROW_QUICK_GELU); }
void tp_kernel_silu(const tp_compute_params *p, tp_tensor *dst) { act_kernel(p, dst, TP_ACT_ROW_SILU); }
