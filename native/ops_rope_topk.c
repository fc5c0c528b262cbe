/* ops_rope_topk.c - STUB written by the lead so the library links; the owning helper replaces it. */
#include "tp_kernels.h"

tp_tensor *tp_rope_neox(tp_context *ctx, tp_tensor *a, tp_tensor *pos, int n_rot, float freq_base) {
    TP_UNUSED(ctx);
    TP_UNUSED(a);
    TP_UNUSED(pos);
    TP_UNUSED(n_rot);
    TP_UNUSED(freq_base);
    tp_ctx_set_error(ctx, TP_ERR_UNSUPPORTED, "tp_rope_neox: not implemented yet");
    return NULL;
}

tp_tensor *tp_top_k(tp_context *ctx, tp_tensor *a, int k) {
    TP_UNUSED(ctx);
    TP_UNUSED(a);
    TP_UNUSED(k);
    tp_ctx_set_error(ctx, TP_ERR_UNSUPPORTED, "tp_top_k: not implemented yet");
    return NULL;
}

void tp_kernel_rope_neox(const tp_compute_params *p, tp_tensor *dst) {
    TP_UNUSED(p);
    TP_UNUSED(dst);
}

void tp_kernel_top_k(const tp_compute_params *p, tp_tensor *dst) {
    TP_UNUSED(p);
    TP_UNUSED(dst);
}
