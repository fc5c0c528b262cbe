/* ops_copy.c - ops that move data without arithmetic: concat, pad, get_rows.
 * Each kernel splits dst's rows (dims 1..3) over the threads; sources are read through their
 * strides, with memcpy fast paths for rows whose dim 0 is contiguous. */
#include "tp_kernels.h"

/* Copy row (i1, i2, i3) of the F32 tensor a (ne0 = a->ne[0] floats) to out. */
static void copy_row_f32(const tp_tensor *a, int64_t i1, int64_t i2, int64_t i3, float *out) {
    const char *row = tp_row_ptr(a, i1, i2, i3);
    int64_t n = a->ne[0];
    size_t s = a->nb[0];
    if (s == sizeof(float)) {
        memcpy(out, row, (size_t)n * sizeof(float));
    } else {
        for (int64_t i = 0; i < n; i++) out[i] = *(const float *)(row + (size_t)i * s);
    }
}

static int max_i(int a, int b) { return a > b ? a : b; }

/* ---- concat ---- */

tp_tensor *tp_concat(tp_context *ctx, tp_tensor *a, tp_tensor *b, int dim) {
    if (!TP_CHECK_INPUTS(ctx, "tp_concat", a, b)) return NULL;
    if (dim < 0 || dim >= TP_MAX_DIMS) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_concat: dim = %d is not 0..3", dim);
        return NULL;
    }
    if (a->type != TP_TYPE_F32 || b->type != TP_TYPE_F32) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_concat: inputs must be F32 (got %s, %s)", tp_type_name(a->type),
                         tp_type_name(b->type));
        return NULL;
    }
    int64_t ne[TP_MAX_DIMS];
    for (int i = 0; i < TP_MAX_DIMS; i++) {
        if (i != dim && a->ne[i] != b->ne[i]) {
            char sa[96], sb[96];
            tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_concat: %s and %s differ in dim %d (concatenating along dim %d)",
                             tp_shape_str(a, sa, sizeof sa), tp_shape_str(b, sb, sizeof sb), i, dim);
            return NULL;
        }
        ne[i] = i == dim ? a->ne[i] + b->ne[i] : a->ne[i];
    }
    int n_dims = max_i(max_i(a->n_dims, b->n_dims), dim + 1);
    tp_tensor *t = tp_new_op_tensor(ctx, TP_TYPE_F32, n_dims, ne, TP_OP_CONCAT, a, b, NULL);
    if (t) t->op_params[0] = dim;
    return t;
}

void tp_kernel_concat(const tp_compute_params *p, tp_tensor *dst) {
    const tp_tensor *a = dst->src[0], *b = dst->src[1];
    int dim = dst->op_params[0];
    int64_t ne0 = dst->ne[0], ne1 = dst->ne[1], ne2 = dst->ne[2];
    int64_t rows = ne1 * ne2 * dst->ne[3];
    int64_t r0, r1;
    tp_split_range(rows, p->ith, p->nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        int64_t i[TP_MAX_DIMS] = {0, r % ne1, (r / ne1) % ne2, r / (ne1 * ne2)};
        float *out = (float *)dst->data + r * ne0;
        if (dim == 0) {
            copy_row_f32(a, i[1], i[2], i[3], out);
            copy_row_f32(b, i[1], i[2], i[3], out + a->ne[0]);
        } else if (i[dim] < a->ne[dim]) {
            copy_row_f32(a, i[1], i[2], i[3], out);
        } else {
            i[dim] -= a->ne[dim];
            copy_row_f32(b, i[1], i[2], i[3], out);
        }
    }
}

/* ---- pad ---- */

tp_tensor *tp_pad(tp_context *ctx, tp_tensor *a, const int *before, const int *after) {
    if (!TP_CHECK_INPUTS(ctx, "tp_pad", a)) return NULL;
    if (!before || !after) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_pad: before/after must point to 4 ints each");
        return NULL;
    }
    if (a->type != TP_TYPE_F32) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_pad: input must be F32 (got %s)", tp_type_name(a->type));
        return NULL;
    }
    int64_t ne[TP_MAX_DIMS];
    int n_dims = a->n_dims;
    for (int i = 0; i < TP_MAX_DIMS; i++) {
        if (before[i] < 0 || after[i] < 0) {
            tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_pad: padding of dim %d is (%d, %d), must be >= 0", i,
                             before[i], after[i]);
            return NULL;
        }
        ne[i] = a->ne[i] + before[i] + after[i];
        if (before[i] || after[i]) n_dims = max_i(n_dims, i + 1);
    }
    tp_tensor *t = tp_new_op_tensor(ctx, TP_TYPE_F32, n_dims, ne, TP_OP_PAD, a, NULL, NULL);
    if (!t) return NULL;
    for (int i = 0; i < TP_MAX_DIMS; i++) {
        t->op_params[i] = before[i];
        t->op_params[TP_MAX_DIMS + i] = after[i];
    }
    return t;
}

void tp_kernel_pad(const tp_compute_params *p, tp_tensor *dst) {
    const tp_tensor *a = dst->src[0];
    const int32_t *before = dst->op_params;
    int64_t ne0 = dst->ne[0], ne1 = dst->ne[1], ne2 = dst->ne[2];
    int64_t rows = ne1 * ne2 * dst->ne[3];
    int64_t r0, r1;
    tp_split_range(rows, p->ith, p->nth, &r0, &r1);
    int64_t b0 = before[0], n0 = a->ne[0];
    for (int64_t r = r0; r < r1; r++) {
        int64_t s1 = r % ne1 - before[1], s2 = (r / ne1) % ne2 - before[2], s3 = r / (ne1 * ne2) - before[3];
        float *out = (float *)dst->data + r * ne0;
        if (s1 < 0 || s1 >= a->ne[1] || s2 < 0 || s2 >= a->ne[2] || s3 < 0 || s3 >= a->ne[3]) {
            memset(out, 0, (size_t)ne0 * sizeof(float));
            continue;
        }
        if (b0 > 0) memset(out, 0, (size_t)b0 * sizeof(float));
        copy_row_f32(a, s1, s2, s3, out + b0);
        if (ne0 > b0 + n0) memset(out + b0 + n0, 0, (size_t)(ne0 - b0 - n0) * sizeof(float));
    }
}

/* ---- get_rows ---- */

tp_tensor *tp_get_rows(tp_context *ctx, tp_tensor *a, tp_tensor *idx) {
    if (!TP_CHECK_INPUTS(ctx, "tp_get_rows", a, idx)) return NULL;
    if (idx->type != TP_TYPE_I32) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_get_rows: idx must be I32 (got %s)", tp_type_name(idx->type));
        return NULL;
    }
    if (tp_type_block_elements(a->type) > 1 && !tp_rows_contiguous(a)) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_get_rows: the %s rows of a are not contiguous",
                         tp_type_name(a->type));
        return NULL;
    }
    if (idx->ne[1] != a->ne[2] || idx->ne[2] != a->ne[3] || idx->ne[3] != 1) {
        char sa[96], si[96];
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_get_rows: idx %s must be [n, a2, a3] for a %s [K, R, a2, a3]",
                         tp_shape_str(idx, si, sizeof si), tp_shape_str(a, sa, sizeof sa));
        return NULL;
    }
    int64_t ne[TP_MAX_DIMS] = {a->ne[0], idx->ne[0], a->ne[2], a->ne[3]};
    int n_dims = TP_MIN(max_i(max_i(a->n_dims, idx->n_dims + 1), 2), TP_MAX_DIMS);
    return tp_new_op_tensor(ctx, TP_TYPE_F32, n_dims, ne, TP_OP_GET_ROWS, a, idx, NULL);
}

/* An index outside 0..R-1 zero-fills its row and makes the compute fail (tp_report_bad_data). */
void tp_kernel_get_rows(const tp_compute_params *p, tp_tensor *dst) {
    const tp_tensor *a = dst->src[0], *idx = dst->src[1];
    int64_t K = dst->ne[0], n = dst->ne[1], ne2 = dst->ne[2];
    int64_t rows = n * ne2 * dst->ne[3];
    int64_t R = a->ne[1];
    int64_t r0, r1;
    tp_split_range(rows, p->ith, p->nth, &r0, &r1);
    bool whole_rows = tp_rows_contiguous(a); /* always true for block types (checked at build) */
    size_t s0 = a->nb[0];
    for (int64_t r = r0; r < r1; r++) {
        int64_t j = r % n, i2 = (r / n) % ne2, i3 = r / (n * ne2);
        int64_t row = *(const int32_t *)((const char *)idx->data + (size_t)j * idx->nb[0] +
                                         (size_t)i2 * idx->nb[1] + (size_t)i3 * idx->nb[2]);
        float *out = (float *)dst->data + r * K;
        if (row < 0 || row >= R) {
            tp_report_bad_data(p);
            memset(out, 0, (size_t)K * sizeof(float));
            continue;
        }
        const char *src = tp_row_ptr(a, row, i2, i3);
        if (whole_rows) {
            tp_row_to_f32(a->type, src, out, K);
        } else {
            for (int64_t i = 0; i < K; i++) tp_row_to_f32(a->type, src + (size_t)i * s0, &out[i], 1);
        }
    }
}
