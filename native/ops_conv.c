/* ops_conv.c - STUB written by the lead so the library links; the owning helper replaces it. */
#include "tp_kernels.h"

tp_tensor *tp_conv2d(tp_context *ctx, tp_tensor *x, tp_tensor *kernel, tp_tensor *bias,
                     int stride_x, int stride_y, int pad_x, int pad_y) {
    TP_UNUSED(ctx);
    TP_UNUSED(x);
    TP_UNUSED(kernel);
    TP_UNUSED(bias);
    TP_UNUSED(stride_x);
    TP_UNUSED(stride_y);
    TP_UNUSED(pad_x);
    TP_UNUSED(pad_y);
    tp_ctx_set_error(ctx, TP_ERR_UNSUPPORTED, "tp_conv2d: not implemented yet");
    return NULL;
}

void tp_kernel_im2col(const tp_compute_params *p, tp_tensor *dst) {
    TP_UNUSED(p);
    TP_UNUSED(dst);
}
