/* vision_clip.c - CLIP-L fed by SAM features: a CLS token in front of each view's SAM tokens,
 * position embeddings (resized with bicubic antialias for grids other than 16×16), pre-LN, then
 * layers on the flattened tokens of all views; attention keeps each view to itself through
 * segments, so views of different sizes share one attention call. */
#include "deepseek_ocr.h"
#include "../blocks/graph_util.h"

#include <math.h>

/* CLIP position embeddings for an out_grid×out_grid view: [F, 1 + g·g]. */
static tp_tensor *clip_positions(tp_context *ctx, const dsocr_vision *m, int out_grid) {
    if (out_grid == m->clip_pos_grid) return m->clip_pos;
    const int64_t F = m->clip_width, g0 = m->clip_pos_grid;
    tp_tensor *cls = gu_cols(ctx, m->clip_pos, 0, 1);
    tp_tensor *grid = gu_reshape4(ctx, tp_cont(ctx, gu_cols(ctx, m->clip_pos, 1, g0 * g0)), F, g0, g0, 1);
    tp_tensor *r = gu_resize_grid(ctx, grid, out_grid);
    r = gu_reshape2(ctx, r, F, (int64_t)out_grid * out_grid);
    return tp_concat(ctx, tp_cont(ctx, cls), r, 1);
}

void dsocr_build_clip(tp_context *ctx, const dsocr_vision *m, const view_group *groups, int n_groups,
                      tp_tensor *const *sam_out, tp_tensor **clip_out) {
    const int64_t F = m->clip_width, H = m->clip_heads, D = F / H;
    tp_tensor *parts[TP_VISION_MAX_GROUPS] = {0};
    int64_t n_views = 0;
    for (int gi = 0; gi < n_groups; gi++) n_views += groups[gi].n_views;
    int64_t n_seg = n_views + 1;
    tp_tensor *segments = tp_new_tensor(ctx, TP_TYPE_I32, 1, &n_seg);
    if (!segments) return;
    int32_t *seg = segments->data;
    int64_t n_tok = 0, s = 0;
    seg[s++] = 0;
    for (int gi = 0; gi < n_groups; gi++) {
        const view_group *g = &groups[gi];
        const int out_grid = sam_out_grid(&m->sam_hp, g->width);
        int64_t hw = (int64_t)out_grid * out_grid, B = g->n_views;
        tp_tensor *x = gu_reshape3(ctx, sam_out[gi], F, hw, B);
        /* a CLS token per view: zeros [F, 1, B] + class embedding, broadcast */
        int64_t zne[3] = {F, 1, B};
        tp_tensor *zeros = tp_new_tensor(ctx, TP_TYPE_F32, 3, zne);
        tp_tensor *cls = tp_add(ctx, zeros, m->class_embd);
        x = tp_concat(ctx, cls, x, 1); /* [F, 1 + hw, B] */
        x = tp_add(ctx, x, clip_positions(ctx, m, out_grid));
        parts[gi] = gu_reshape2(ctx, x, F, (1 + hw) * B);
        for (int64_t v = 0; v < B; v++) {
            n_tok += 1 + hw;
            seg[s++] = (int32_t)n_tok;
        }
    }
    tp_tensor *x = gu_concat_n(ctx, parts, n_groups, 1); /* [F, N] */
    x = tp_layer_norm(ctx, x, m->pre_ln_w, m->pre_ln_b, m->clip_eps);

    vit_params vp = {.n_heads = H, .eps = m->clip_eps, .act = VIT_QUICK_GELU, .attention = tp_attention_default_opts()};
    vp.attention.scale = 1.0f / sqrtf((float)D);
    vp.attention.segments = n_views > 1 ? segments : NULL;
    for (int i = 0; i < m->clip_layers; i++) x = vit_layer_build(ctx, x, &m->clip[i], &vp);

    int64_t first = 0;
    for (int gi = 0; gi < n_groups; gi++) {
        const view_group *g = &groups[gi];
        const int out_grid = sam_out_grid(&m->sam_hp, g->width);
        int64_t hw = (int64_t)out_grid * out_grid, B = g->n_views;
        clip_out[gi] = gu_reshape3(ctx, gu_cols(ctx, x, first, (1 + hw) * B), F, 1 + hw, B);
        first += (1 + hw) * B;
    }
}
