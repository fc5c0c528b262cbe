/* ops_interpolate.c - STUB written by the lead so the library links; the owning helper replaces it. */
#include "tp_kernels.h"

tp_tensor *tp_interpolate(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1, int mode) {
    TP_UNUSED(ctx);
    TP_UNUSED(a);
    TP_UNUSED(ne0);
    TP_UNUSED(ne1);
    TP_UNUSED(mode);
    tp_ctx_set_error(ctx, TP_ERR_UNSUPPORTED, "tp_interpolate: not implemented yet");
    return NULL;
}

void tp_kernel_interpolate(const tp_compute_params *p, tp_tensor *dst) {
    TP_UNUSED(p);
    TP_UNUSED(dst);
}

size_t tp_work_size_interpolate(const tp_tensor *dst, int nth) {
    TP_UNUSED(dst);
    TP_UNUSED(nth);
    return 0;
}
