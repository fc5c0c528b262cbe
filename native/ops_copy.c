/* ops_copy.c - STUB written by the lead so the library links; the owning helper replaces it. */
#include "tp_kernels.h"

tp_tensor *tp_concat(tp_context *ctx, tp_tensor *a, tp_tensor *b, int dim) {
    TP_UNUSED(ctx);
    TP_UNUSED(a);
    TP_UNUSED(b);
    TP_UNUSED(dim);
    tp_ctx_set_error(ctx, TP_ERR_UNSUPPORTED, "tp_concat: not implemented yet");
    return NULL;
}

tp_tensor *tp_pad(tp_context *ctx, tp_tensor *a, const int *before, const int *after) {
    TP_UNUSED(ctx);
    TP_UNUSED(a);
    TP_UNUSED(before);
    TP_UNUSED(after);
    tp_ctx_set_error(ctx, TP_ERR_UNSUPPORTED, "tp_pad: not implemented yet");
    return NULL;
}

tp_tensor *tp_get_rows(tp_context *ctx, tp_tensor *a, tp_tensor *idx) {
    TP_UNUSED(ctx);
    TP_UNUSED(a);
    TP_UNUSED(idx);
    tp_ctx_set_error(ctx, TP_ERR_UNSUPPORTED, "tp_get_rows: not implemented yet");
    return NULL;
}

void tp_kernel_concat(const tp_compute_params *p, tp_tensor *dst) {
    TP_UNUSED(p);
    TP_UNUSED(dst);
}

void tp_kernel_pad(const tp_compute_params *p, tp_tensor *dst) {
    TP_UNUSED(p);
    TP_UNUSED(dst);
}

void tp_kernel_get_rows(const tp_compute_params *p, tp_tensor *dst) {
    TP_UNUSED(p);
    TP_UNUSED(dst);
}
