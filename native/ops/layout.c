/* ops_layout.c - views (view, reshape, permute, transpose: no data movement) and the ops that
 * move data without arithmetic (cont, concat, pad, get_rows). */
#include "tp_kernels.h"

#include <stdio.h>

/* A tensor that aliases a's data: same type, given sizes and strides, byte offset from a's start. */
static tp_tensor *new_view(tp_context *ctx, tp_tensor *a, tp_op op, const int64_t *ne, const size_t *nb,
                           int n_dims, size_t offset) {
    tp_tensor *t = tp_new_op_tensor(ctx, a->type, n_dims, ne, op, a, NULL, NULL);
    if (!t) return NULL;
    for (int i = 0; i < TP_MAX_DIMS; i++) t->nb[i] = nb[i];
    t->view_src = a->view_src ? a->view_src : a;
    t->view_offs = a->view_offs + offset;
    if (t->view_src->data && t->view_src->op == TP_OP_NONE)
        t->data = (char *)t->view_src->data + t->view_offs;
    return t;
}

/* Whether the view's last byte lies inside the storage of a's root. */
static bool view_fits(const tp_tensor *a, const int64_t *ne, const size_t *nb, size_t offset) {
    size_t blck = (size_t)tp_type_block_elements(a->type);
    size_t end = offset + (size_t)(ne[0] / (int64_t)blck - 1) * nb[0] + tp_type_block_bytes(a->type);
    for (int i = 1; i < TP_MAX_DIMS; i++) end += (size_t)(ne[i] - 1) * nb[i];
    const tp_tensor *root = a->view_src ? a->view_src : a;
    return a->view_offs + end <= tp_tensor_nbytes(root);
}

tp_tensor *tp_view(tp_context *ctx, tp_tensor *a, int n_dims, const int64_t *ne, const size_t *nb,
                   size_t offset) {
    if (!TP_CHECK_INPUTS(ctx, "tp_view", a)) return NULL;
    if (n_dims < 1 || n_dims > TP_MAX_DIMS || !ne || (n_dims > 1 && !nb)) { /* nb may be NULL for 1-D */
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_view: n_dims %d or arrays invalid", n_dims);
        return NULL;
    }
    int64_t full_ne[TP_MAX_DIMS];
    size_t full_nb[TP_MAX_DIMS];
    for (int i = 0; i < TP_MAX_DIMS; i++) {
        full_ne[i] = i < n_dims ? ne[i] : 1;
        if (full_ne[i] < 1) {
            tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_view: ne[%d] = %lld", i, (long long)full_ne[i]);
            return NULL;
        }
    }
    if (full_ne[0] % tp_type_block_elements(a->type) != 0) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_view: ne[0] does not fit %s blocks", tp_type_name(a->type));
        return NULL;
    }
    /* nb[0] = 0 (or nb NULL) means the element size; a block type's rows must stay contiguous */
    full_nb[0] = nb && nb[0] != 0 ? nb[0] : tp_type_block_bytes(a->type);
    if (tp_type_block_elements(a->type) > 1 && full_nb[0] != tp_type_block_bytes(a->type)) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_view: a %s view must keep its rows contiguous", tp_type_name(a->type));
        return NULL;
    }
    for (int i = 1; i < TP_MAX_DIMS; i++)
        full_nb[i] = i < n_dims ? nb[i] : full_nb[i - 1] * (size_t)full_ne[i - 1];
    if (!view_fits(a, full_ne, full_nb, offset)) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_view: the view reaches past the end of its source");
        return NULL;
    }
    return new_view(ctx, a, TP_OP_VIEW, full_ne, full_nb, n_dims, offset);
}

tp_tensor *tp_reshape(tp_context *ctx, tp_tensor *a, int n_dims, const int64_t *ne) {
    if (!TP_CHECK_INPUTS(ctx, "tp_reshape", a)) return NULL;
    if (n_dims < 1 || n_dims > TP_MAX_DIMS || !ne) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_reshape: n_dims %d invalid", n_dims);
        return NULL;
    }
    if (!tp_is_contiguous(a)) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_reshape: source is not contiguous (use tp_cont)");
        return NULL;
    }
    int64_t full_ne[TP_MAX_DIMS];
    int64_t n = 1;
    for (int i = 0; i < TP_MAX_DIMS; i++) {
        full_ne[i] = i < n_dims ? ne[i] : 1;
        if (full_ne[i] < 1) {
            tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_reshape: ne[%d] = %lld", i, (long long)full_ne[i]);
            return NULL;
        }
        n *= full_ne[i];
    }
    if (n != tp_nelements(a) || full_ne[0] % tp_type_block_elements(a->type) != 0) {
        char buf[96];
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_reshape: %lld elements cannot be seen as %s",
                         (long long)tp_nelements(a), (snprintf(buf, sizeof buf, "[%lld, %lld, %lld, %lld]",
                         (long long)full_ne[0], (long long)full_ne[1], (long long)full_ne[2],
                         (long long)full_ne[3]), buf));
        return NULL;
    }
    size_t nb[TP_MAX_DIMS];
    nb[0] = tp_type_block_bytes(a->type);
    nb[1] = tp_type_row_bytes(a->type, full_ne[0]);
    for (int i = 2; i < TP_MAX_DIMS; i++) nb[i] = nb[i - 1] * (size_t)full_ne[i - 1];
    return new_view(ctx, a, TP_OP_RESHAPE, full_ne, nb, n_dims, 0);
}

tp_tensor *tp_permute(tp_context *ctx, tp_tensor *a, int axis0, int axis1, int axis2, int axis3) {
    if (!TP_CHECK_INPUTS(ctx, "tp_permute", a)) return NULL;
    int axes[TP_MAX_DIMS] = {axis0, axis1, axis2, axis3};
    int seen = 0;
    for (int i = 0; i < TP_MAX_DIMS; i++) {
        if (axes[i] < 0 || axes[i] >= TP_MAX_DIMS || (seen & (1 << axes[i]))) {
            tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_permute: (%d, %d, %d, %d) is not a permutation",
                             axis0, axis1, axis2, axis3);
            return NULL;
        }
        seen |= 1 << axes[i];
    }
    if (tp_type_block_elements(a->type) > 1 && axes[0] != 0) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_permute: cannot move dim 0 of a block-quantised tensor");
        return NULL;
    }
    int64_t ne[TP_MAX_DIMS];
    size_t nb[TP_MAX_DIMS];
    for (int i = 0; i < TP_MAX_DIMS; i++) {
        ne[axes[i]] = a->ne[i];
        nb[axes[i]] = a->nb[i];
    }
    return new_view(ctx, a, TP_OP_PERMUTE, ne, nb, TP_MAX_DIMS, 0);
}

tp_tensor *tp_transpose(tp_context *ctx, tp_tensor *a) {
    if (!TP_CHECK_INPUTS(ctx, "tp_transpose", a)) return NULL;
    tp_tensor *t = tp_permute(ctx, a, 1, 0, 2, 3);
    if (t) t->op = TP_OP_TRANSPOSE;
    return t;
}

/* ---- cont ---- */

tp_tensor *tp_cont(tp_context *ctx, tp_tensor *a) {
    if (!TP_CHECK_INPUTS(ctx, "tp_cont", a)) return NULL;
    if (a->type != TP_TYPE_F32 && a->type != TP_TYPE_F16 && a->type != TP_TYPE_BF16) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_cont: type %s is not F32/F16/BF16", tp_type_name(a->type));
        return NULL;
    }
    return tp_new_op_tensor(ctx, TP_TYPE_F32, a->n_dims, a->ne, TP_OP_CONT, a, NULL, NULL);
}

/* Rows of dst are split over threads; each element read through the source's strides. */
void tp_kernel_cont(const tp_compute_params *p, tp_tensor *dst) {
    const tp_tensor *a = dst->src[0];
    int64_t ne0 = a->ne[0], ne1 = a->ne[1], ne2 = a->ne[2];
    int64_t rows = ne1 * ne2 * a->ne[3];
    int64_t r0, r1;
    tp_split_range(rows, p->ith, p->nth, &r0, &r1);
    size_t es = a->nb[0];
    bool f32 = a->type == TP_TYPE_F32;
    for (int64_t r = r0; r < r1; r++) {
        int64_t i1 = r % ne1, i2 = (r / ne1) % ne2, i3 = r / (ne1 * ne2);
        const char *src = tp_row_ptr(a, i1, i2, i3);
        float *out = (float *)dst->data + r * ne0;
        if (es == (f32 ? 4u : 2u)) {
            tp_row_to_f32(a->type, src, out, ne0);
        } else if (f32) {
            for (int64_t i0 = 0; i0 < ne0; i0++) out[i0] = *(const float *)(src + i0 * es);
        } else {
            for (int64_t i0 = 0; i0 < ne0; i0++) tp_row_to_f32(a->type, src + i0 * es, &out[i0], 1);
        }
    }
}
