/* ops_norm.c - STUB written by the lead so the library links; the owning helper replaces it. */
#include "tp_kernels.h"

tp_tensor *tp_layer_norm(tp_context *ctx, tp_tensor *a, tp_tensor *w, tp_tensor *b, float eps) {
    TP_UNUSED(ctx);
    TP_UNUSED(a);
    TP_UNUSED(w);
    TP_UNUSED(b);
    TP_UNUSED(eps);
    tp_ctx_set_error(ctx, TP_ERR_UNSUPPORTED, "tp_layer_norm: not implemented yet");
    return NULL;
}

tp_tensor *tp_rms_norm(tp_context *ctx, tp_tensor *a, tp_tensor *w, float eps) {
    TP_UNUSED(ctx);
    TP_UNUSED(a);
    TP_UNUSED(w);
    TP_UNUSED(eps);
    tp_ctx_set_error(ctx, TP_ERR_UNSUPPORTED, "tp_rms_norm: not implemented yet");
    return NULL;
}

tp_tensor *tp_softmax(tp_context *ctx, tp_tensor *a, tp_tensor *mask, float scale) {
    TP_UNUSED(ctx);
    TP_UNUSED(a);
    TP_UNUSED(mask);
    TP_UNUSED(scale);
    tp_ctx_set_error(ctx, TP_ERR_UNSUPPORTED, "tp_softmax: not implemented yet");
    return NULL;
}

void tp_kernel_layer_norm(const tp_compute_params *p, tp_tensor *dst) {
    TP_UNUSED(p);
    TP_UNUSED(dst);
}

void tp_kernel_rms_norm(const tp_compute_params *p, tp_tensor *dst) {
    TP_UNUSED(p);
    TP_UNUSED(dst);
}

void tp_kernel_softmax(const tp_compute_params *p, tp_tensor *dst) {
    TP_UNUSED(p);
    TP_UNUSED(dst);
}
