/* graph_util.c - see graph_util.h. */
#include "graph_util.h"

tp_tensor *gu_linear(tp_context *ctx, tp_tensor *x, tp_tensor *w, tp_tensor *b) {
    return tp_linear(ctx, w, x, b, TP_ACT_NONE);
}

tp_tensor *gu_reshape2(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1) {
    int64_t ne[2] = {ne0, ne1};
    return tp_reshape(ctx, a, 2, ne);
}

tp_tensor *gu_reshape3(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1, int64_t ne2) {
    int64_t ne[3] = {ne0, ne1, ne2};
    return tp_reshape(ctx, a, 3, ne);
}

tp_tensor *gu_reshape4(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3) {
    int64_t ne[4] = {ne0, ne1, ne2, ne3};
    return tp_reshape(ctx, a, 4, ne);
}

tp_tensor *gu_cols(tp_context *ctx, tp_tensor *a, int64_t first, int64_t n) {
    if (!a) return NULL;
    if (first == 0 && n == a->ne[1] && a->ne[2] == 1 && a->ne[3] == 1) return a;
    int64_t ne[2] = {a->ne[0], n};
    size_t nb[2] = {a->nb[0], a->nb[1]};
    return tp_view(ctx, a, 2, ne, nb, (size_t)first * a->nb[1]);
}

tp_tensor *gu_resize_grid(tp_context *ctx, tp_tensor *grid_cwh, int64_t to) {
    /* [C, W, H, 1] -> [W, H, C, 1], resize dims 0/1, and back */
    tp_tensor *whc = tp_cont(ctx, tp_permute(ctx, grid_cwh, 2, 0, 1, 3));
    tp_tensor *r = tp_interpolate(ctx, whc, to, to, TP_INTERP_BICUBIC_AA);
    return tp_cont(ctx, tp_permute(ctx, r, 1, 2, 0, 3));
}

tp_tensor *gu_concat_n(tp_context *ctx, tp_tensor *const *parts, int n, int dim) {
    tp_tensor *acc = parts[0];
    for (int i = 1; i < n; i++) acc = tp_concat(ctx, acc, parts[i], dim);
    return acc;
}

tp_tensor *gu_text_logits(tp_context *ctx, tp_graph *g, tp_tensor *x, tp_tensor *norm, tp_tensor *output, float eps) {
    tp_tensor *logits = tp_mul_mat(ctx, output, tp_rms_norm(ctx, x, norm, eps));
    tp_graph_add_output(g, logits);
    return logits;
}
