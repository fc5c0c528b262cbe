/* ops_attention.c - STUB written by the lead so the library links; the owning helper replaces it. */
#include "tp_kernels.h"

tp_tensor *tp_attention(tp_context *ctx, tp_tensor *q, tp_tensor *k, tp_tensor *v,
                        const tp_attention_opts *opts) {
    TP_UNUSED(ctx);
    TP_UNUSED(q);
    TP_UNUSED(k);
    TP_UNUSED(v);
    TP_UNUSED(opts);
    tp_ctx_set_error(ctx, TP_ERR_UNSUPPORTED, "tp_attention: not implemented yet");
    return NULL;
}

void tp_kernel_attention(const tp_compute_params *p, tp_tensor *dst) {
    TP_UNUSED(p);
    TP_UNUSED(dst);
}

size_t tp_work_size_attention(const tp_tensor *dst, int nth) {
    TP_UNUSED(dst);
    TP_UNUSED(nth);
    return 0;
}

tp_attention_opts tp_attention_default_opts(void) {
    tp_attention_opts o;
    memset(&o, 0, sizeof o);
    return o;
}
