/* ops_matmul.c - STUB written by the lead so the library links; the owning helper replaces it. */
#include "tp_kernels.h"

tp_tensor *tp_mul_mat(tp_context *ctx, tp_tensor *a, tp_tensor *b) {
    TP_UNUSED(ctx);
    TP_UNUSED(a);
    TP_UNUSED(b);
    tp_ctx_set_error(ctx, TP_ERR_UNSUPPORTED, "tp_mul_mat: not implemented yet");
    return NULL;
}

void tp_kernel_mul_mat(const tp_compute_params *p, tp_tensor *dst) {
    TP_UNUSED(p);
    TP_UNUSED(dst);
}

size_t tp_work_size_mul_mat(const tp_tensor *dst, int nth) {
    TP_UNUSED(dst);
    TP_UNUSED(nth);
    return 0;
}
