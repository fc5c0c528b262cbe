/* ops_conv.c - 2-D convolution, channels-innermost, as a composite built in the constructor:
 *   im2col(x) -> patches F32 [KW·KH·Cin, OW·OH·B]   (element k = kw + KW·(kh + KH·cin), i.e. the
 *                                                    kernel's own contiguous order)
 *   mul_mat(kernel seen as [KW·KH·Cin, Cout], patches) -> [Cout, OW·OH·B]
 *   add(bias [Cout])  (if any)
 *   reshape -> [Cout, OW, OH, B]
 * A 1x1 kernel with stride 1 and no padding skips im2col: the input already is [Cin, W·H·B]. */
#include "tp_kernels.h"

enum { IM_KW, IM_KH, IM_SX, IM_SY, IM_PX, IM_PY, IM_OW, IM_OH };

static tp_tensor *im2col(tp_context *ctx, tp_tensor *x, int64_t KW, int64_t KH, int sx, int sy, int px,
                         int py, int64_t OW, int64_t OH) {
    int64_t ne[TP_MAX_DIMS] = {KW * KH * x->ne[0], OW * OH * x->ne[3], 1, 1};
    tp_tensor *t = tp_new_op_tensor(ctx, TP_TYPE_F32, 2, ne, TP_OP_IM2COL, x, NULL, NULL);
    if (!t) return NULL;
    t->op_params[IM_KW] = (int32_t)KW;
    t->op_params[IM_KH] = (int32_t)KH;
    t->op_params[IM_SX] = sx;
    t->op_params[IM_SY] = sy;
    t->op_params[IM_PX] = px;
    t->op_params[IM_PY] = py;
    t->op_params[IM_OW] = (int32_t)OW;
    t->op_params[IM_OH] = (int32_t)OH;
    return t;
}

tp_tensor *tp_conv2d(tp_context *ctx, tp_tensor *x, tp_tensor *kernel, tp_tensor *bias,
                     int stride_x, int stride_y, int pad_x, int pad_y) {
    if (!TP_CHECK_INPUTS(ctx, "tp_conv2d", x, kernel)) return NULL;
    if (bias && !TP_CHECK_INPUTS(ctx, "tp_conv2d", bias)) return NULL;
    char sx_[96], sk_[96];
    if (x->type != TP_TYPE_F32) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_conv2d: x must be F32 (got %s)", tp_type_name(x->type));
        return NULL;
    }
    if (kernel->type == TP_TYPE_I32) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_conv2d: kernel type %s not supported", tp_type_name(kernel->type));
        return NULL;
    }
    if (stride_x < 1 || stride_y < 1 || pad_x < 0 || pad_y < 0) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_conv2d: strides (%d, %d) must be >= 1 and pads (%d, %d) >= 0",
                         stride_x, stride_y, pad_x, pad_y);
        return NULL;
    }
    int64_t Cin = x->ne[0], W = x->ne[1], H = x->ne[2], B = x->ne[3];
    int64_t KW = kernel->ne[0], KH = kernel->ne[1], Cout = kernel->ne[3];
    if (kernel->ne[2] != Cin || W + 2 * (int64_t)pad_x < KW || H + 2 * (int64_t)pad_y < KH) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_conv2d: kernel %s does not fit x %s with pads (%d, %d)",
                         tp_shape_str(kernel, sk_, sizeof sk_), tp_shape_str(x, sx_, sizeof sx_), pad_x, pad_y);
        return NULL;
    }
    int64_t OW = (W + 2 * (int64_t)pad_x - KW) / stride_x + 1;
    int64_t OH = (H + 2 * (int64_t)pad_y - KH) / stride_y + 1;
    if (KW > INT32_MAX || KH > INT32_MAX || OW > INT32_MAX || OH > INT32_MAX) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_conv2d: sizes too large");
        return NULL;
    }
    if (bias) {
        if (tp_nelements(bias) != Cout || bias->ne[0] != Cout) {
            char sb[96];
            tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_conv2d: bias %s is not [%lld]", tp_shape_str(bias, sb, sizeof sb),
                             (long long)Cout);
            return NULL;
        }
        if (bias->type != TP_TYPE_F32 && bias->type != TP_TYPE_F16 && bias->type != TP_TYPE_BF16) {
            tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_conv2d: bias type %s not supported", tp_type_name(bias->type));
            return NULL;
        }
    }

    /* the kernel as a [KW·KH·Cin, Cout] matrix */
    tp_tensor *kmat = kernel;
    if (!tp_is_contiguous(kmat)) {
        if (kmat->type != TP_TYPE_F32 && kmat->type != TP_TYPE_F16 && kmat->type != TP_TYPE_BF16) {
            tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_conv2d: a quantised kernel must be contiguous");
            return NULL;
        }
        kmat = tp_cont(ctx, kmat);
    }
    int64_t kne[2] = {KW * KH * Cin, Cout};
    kmat = tp_reshape(ctx, kmat, 2, kne);
    if (!kmat) return NULL;

    tp_tensor *cols;
    if (KW == 1 && KH == 1 && stride_x == 1 && stride_y == 1 && pad_x == 0 && pad_y == 0 &&
        tp_is_contiguous(x)) {
        int64_t xne[2] = {Cin, W * H * B};
        cols = tp_reshape(ctx, x, 2, xne);
    } else {
        cols = im2col(ctx, x, KW, KH, stride_x, stride_y, pad_x, pad_y, OW, OH);
    }
    if (!cols) return NULL;
    tp_tensor *y = tp_mul_mat(ctx, kmat, cols); /* [Cout, OW·OH·B] */
    if (!y) return NULL;
    if (bias) {
        tp_tensor *b = bias;
        if (b->type != TP_TYPE_F32 || !tp_is_contiguous(b)) b = tp_cont(ctx, b);
        int64_t bne[1] = {Cout};
        b = tp_reshape(ctx, b, 1, bne);
        y = tp_add(ctx, y, b);
        if (!y) return NULL;
    }
    int64_t one[TP_MAX_DIMS] = {Cout, OW, OH, B};
    return tp_reshape(ctx, y, 4, one);
}

/* One patch column per output position (ow, oh, b), split over threads; out-of-image taps are 0. */
void tp_kernel_im2col(const tp_compute_params *p, tp_tensor *dst) {
    const tp_tensor *x = dst->src[0];
    const int64_t KW = dst->op_params[IM_KW], KH = dst->op_params[IM_KH];
    const int64_t sx = dst->op_params[IM_SX], sy = dst->op_params[IM_SY];
    const int64_t px = dst->op_params[IM_PX], py = dst->op_params[IM_PY];
    const int64_t OW = dst->op_params[IM_OW], OH = dst->op_params[IM_OH];
    const int64_t Cin = x->ne[0], W = x->ne[1], H = x->ne[2];
    const int64_t K = dst->ne[0], N = dst->ne[1];
    const size_t nb0 = x->nb[0], nb1 = x->nb[1], nb2 = x->nb[2], nb3 = x->nb[3];
    int64_t c0, c1;
    tp_split_range(N, p->ith, p->nth, &c0, &c1);
    for (int64_t n = c0; n < c1; n++) {
        int64_t ow = n % OW, oh = (n / OW) % OH, b = n / (OW * OH);
        float *col = (float *)dst->data + n * K;
        const char *xb = (const char *)x->data + b * nb3;
        int64_t iw0 = ow * sx - px, ih0 = oh * sy - py;
        for (int64_t kh = 0; kh < KH; kh++) {
            int64_t ih = ih0 + kh;
            bool hin = ih >= 0 && ih < H;
            for (int64_t kw = 0; kw < KW; kw++) {
                int64_t iw = iw0 + kw;
                float *o = col + kw + KW * kh;
                const size_t step = (size_t)(KW * KH);
                if (!hin || iw < 0 || iw >= W) {
                    for (int64_t c = 0; c < Cin; c++) o[(size_t)c * step] = 0.0f;
                } else {
                    const char *src = xb + (size_t)ih * nb2 + (size_t)iw * nb1;
                    for (int64_t c = 0; c < Cin; c++) o[(size_t)c * step] = *(const float *)(src + (size_t)c * nb0);
                }
            }
        }
    }
}
