/* ops_cpy.c - tp_cpy: write a tensor into (a view of) a persistent leaf, e.g. a KV cache (F32, F16 or
 * Q8_0: rows rounded / quantised on the way in).
 *
 * The result aliases dst: it has dst's shape and strides and its view_src/view_offs point at dst's
 * storage, so the planner gives it dst's data (it still reserves arena bytes of the result's size,
 * which stay unused). The op's sources are (src, dst); a reader that must see the written values
 * takes the result (or a view of it) as a source, or lists it as an extra source, which orders it
 * after the copy. Only leaves may be written (their data outlives the graph). */
#include "tp_kernels.h"
#include "tp_quants.h"

tp_tensor *tp_cpy(tp_context *ctx, tp_tensor *src, tp_tensor *dst) {
    if (!TP_CHECK_INPUTS(ctx, "tp_cpy", src, dst)) return NULL;
    char sa[96], sb[96];
    if (src->type != TP_TYPE_F32) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_cpy: src must be F32 (got %s)", tp_type_name(src->type));
        return NULL;
    }
    if (dst->type != TP_TYPE_F32 && dst->type != TP_TYPE_F16 && dst->type != TP_TYPE_Q8_0) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_cpy: dst must be F32, F16 or Q8_0 (got %s)", tp_type_name(dst->type));
        return NULL;
    }
    /* Q8_0: whole rows of blocks, quantised from unit-stride float rows */
    if (dst->type == TP_TYPE_Q8_0 && (dst->ne[0] % TP_QK != 0 || src->nb[0] != sizeof(float))) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_cpy: a Q8_0 dst needs rows of whole %d-blocks and a unit-stride src (%s)",
                         TP_QK, tp_shape_str(dst, sa, sizeof sa));
        return NULL;
    }
    if (!tp_same_shape(src, dst)) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_cpy: src %s and dst %s differ in shape",
                         tp_shape_str(src, sa, sizeof sa), tp_shape_str(dst, sb, sizeof sb));
        return NULL;
    }
    tp_tensor *root = dst->view_src ? dst->view_src : dst;
    if (root->op != TP_OP_NONE || !root->data) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT,
                         "tp_cpy: dst must be a leaf or a view of a leaf (its data must outlive the graph)");
        return NULL;
    }
    tp_tensor *t = tp_new_op_tensor(ctx, dst->type, dst->n_dims, dst->ne, TP_OP_CPY, src, dst, NULL);
    if (!t) return NULL;
    for (int i = 0; i < TP_MAX_DIMS; i++) t->nb[i] = dst->nb[i];
    t->view_src = root;
    t->view_offs = dst->view_src ? dst->view_offs : 0;
    t->data = (char *)root->data + t->view_offs;
    return t;
}

void tp_kernel_cpy(const tp_compute_params *p, tp_tensor *dst) {
    const tp_tensor *src = dst->src[0];
    const int64_t ne0 = dst->ne[0], ne1 = dst->ne[1], ne2 = dst->ne[2];
    const int64_t rows = ne1 * ne2 * dst->ne[3];
    int64_t r0, r1;
    tp_split_range(rows, p->ith, p->nth, &r0, &r1);
    const bool f16 = dst->type == TP_TYPE_F16;
    for (int64_t r = r0; r < r1; r++) {
        int64_t i1 = r % ne1, i2 = (r / ne1) % ne2, i3 = r / (ne1 * ne2);
        const char *in = tp_row_ptr(src, i1, i2, i3);
        char *out = tp_row_ptr(dst, i1, i2, i3);
        if (dst->type == TP_TYPE_Q8_0) {
            tp_quantize_row(TP_TYPE_Q8_0, (const float *)in, out, ne0);
            continue;
        }
        if (!f16 && src->nb[0] == sizeof(float) && dst->nb[0] == sizeof(float)) {
            memcpy(out, in, (size_t)ne0 * sizeof(float));
            continue;
        }
        for (int64_t i = 0; i < ne0; i++) {
            float v = *(const float *)(in + (size_t)i * src->nb[0]);
            if (f16) *(uint16_t *)(out + (size_t)i * dst->nb[0]) = tp_f32_to_f16(v);
            else *(float *)(out + (size_t)i * dst->nb[0]) = v;
        }
    }
}
