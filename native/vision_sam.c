/* vision_sam.c - SAM ViT-B over every view of a pass: patch embedding and position embedding per
 * group of same-size views, blocks on the flattened tokens of all views (windowed blocks batch
 * every 14×14 window of every view; global blocks batch the views of each size), then neck and
 * compressor convs per group. */
#include "vision.h"

#include <math.h>
#include <stdio.h>

/* ---- small helpers shared with vision_clip.c / vision_encode.c ---- */

tp_tensor *vision_linear(tp_context *ctx, tp_tensor *x, tp_tensor *w, tp_tensor *b) {
    return tp_linear(ctx, w, x, b, TP_ACT_NONE);
}

tp_tensor *vision_reshape2(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1) {
    int64_t ne[2] = {ne0, ne1};
    return tp_reshape(ctx, a, 2, ne);
}

tp_tensor *vision_reshape3(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1, int64_t ne2) {
    int64_t ne[3] = {ne0, ne1, ne2};
    return tp_reshape(ctx, a, 3, ne);
}

tp_tensor *vision_reshape4(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1, int64_t ne2,
                           int64_t ne3) {
    int64_t ne[4] = {ne0, ne1, ne2, ne3};
    return tp_reshape(ctx, a, 4, ne);
}

tp_tensor *vision_cols(tp_context *ctx, tp_tensor *a, int64_t first, int64_t n) {
    if (!a) return NULL;
    if (first == 0 && n == a->ne[1] && a->ne[2] == 1 && a->ne[3] == 1) return a;
    int64_t ne[2] = {a->ne[0], n};
    size_t nb[2] = {a->nb[0], a->nb[1]};
    return tp_view(ctx, a, 2, ne, nb, (size_t)first * a->nb[1]);
}

tp_tensor *vision_resize_grid(tp_context *ctx, tp_tensor *grid_cwh, int64_t to) {
    /* [C, W, H, 1] -> [W, H, C, 1], resize dims 0/1, and back */
    tp_tensor *whc = tp_cont(ctx, tp_permute(ctx, grid_cwh, 2, 0, 1, 3));
    tp_tensor *r = tp_interpolate(ctx, whc, to, to, TP_INTERP_BICUBIC_AA);
    return tp_cont(ctx, tp_permute(ctx, r, 1, 2, 0, 3));
}

tp_tensor *vision_concat_n(tp_context *ctx, tp_tensor *const *parts, int n, int dim) {
    tp_tensor *acc = parts[0];
    for (int i = 1; i < n; i++) acc = tp_concat(ctx, acc, parts[i], dim);
    return acc;
}

/* ---- relative positions ---- */

/* The table of one axis gathered for a side×side grid: [D, side (k), side (q)], entry (k, q) =
 * table[q − k + side − 1], after resizing the table to 2·side − 1 rows when it has another length
 * (linear, align_corners=False, as the reference). */
static tp_tensor *rel_table(tp_context *ctx, tp_tensor *table, int side) {
    if (!table) return NULL;
    int64_t D = table->ne[0], rows = table->ne[1], want = 2 * (int64_t)side - 1;
    tp_tensor *t = table;
    if (rows != want) {
        tp_tensor *ld = tp_cont(ctx, tp_transpose(ctx, table)); /* [rows, D] */
        tp_tensor *r = tp_interpolate(ctx, ld, want, D, TP_INTERP_LINEAR);
        t = tp_cont(ctx, tp_transpose(ctx, r));
    }
    int64_t n = (int64_t)side * side;
    tp_tensor *idx = tp_new_tensor(ctx, TP_TYPE_I32, 1, &n);
    if (!idx) return NULL;
    int32_t *v = idx->data;
    for (int q = 0; q < side; q++)
        for (int k = 0; k < side; k++) v[k + side * q] = q - k + side - 1;
    return vision_reshape3(ctx, tp_get_rows(ctx, t, idx), D, side, side);
}

/* Self-attention with decomposed relative positions over S sequences of side×side tokens.
 * h: [C, side·side, S] contiguous. Returns [C, side·side, S] after the output projection. */
static tp_tensor *sam_attention(tp_context *ctx, const vision_hparams *hp, const sam_block *b,
                                tp_tensor *h, int side, tp_tensor *table_h, tp_tensor *table_w) {
    if (!h) return NULL;
    const int64_t C = hp->sam_width, H = hp->sam_heads, D = C / H, T = (int64_t)side * side;
    const int64_t S = h->ne[2];
    tp_tensor *qkv = vision_linear(ctx, h, b->qkv_w, b->qkv_b); /* [3C, T, S] */
    if (!qkv) return NULL;
    int64_t ne[4] = {D, H, T, S};
    size_t nb[4] = {sizeof(float), (size_t)D * sizeof(float), qkv->nb[1], qkv->nb[2]};
    tp_tensor *qv = tp_view(ctx, qkv, 4, ne, nb, 0);
    tp_tensor *kv = tp_view(ctx, qkv, 4, ne, nb, (size_t)C * sizeof(float));
    tp_tensor *vv = tp_view(ctx, qkv, 4, ne, nb, (size_t)(2 * C) * sizeof(float));
    tp_tensor *q = tp_cont(ctx, tp_permute(ctx, qv, 0, 2, 1, 3)); /* [D, T, H, S] */
    tp_tensor *k = tp_permute(ctx, kv, 0, 2, 1, 3);
    tp_tensor *v = tp_permute(ctx, vv, 0, 2, 1, 3);

    /* rel_h[kh, (qh, qw)] = q(qh, qw) · table_h[qh − kh + side − 1]: batched over qh */
    tp_tensor *q_grid = vision_reshape4(ctx, q, D, side, side, H * S); /* [D, qw, qh, H·S] */
    tp_tensor *rel_h = tp_mul_mat(ctx, table_h, q_grid);                /* [kh, qw, qh, H·S] */
    rel_h = vision_reshape4(ctx, rel_h, side, T, H, S);
    /* rel_w: the same batched over qw */
    tp_tensor *q_t = tp_permute(ctx, q_grid, 0, 2, 1, 3);  /* [D, qh, qw, H·S] */
    tp_tensor *rel_w = tp_mul_mat(ctx, table_w, q_t);       /* [kw, qh, qw, H·S] */
    rel_w = tp_cont(ctx, tp_permute(ctx, rel_w, 0, 2, 1, 3));
    rel_w = vision_reshape4(ctx, rel_w, side, T, H, S);

    tp_attention_opts opts = tp_attention_default_opts();
    opts.scale = 1.0f / sqrtf((float)D);
    opts.rel_h = rel_h;
    opts.rel_w = rel_w;
    tp_tensor *o = tp_attention(ctx, q, k, v, &opts); /* [D, H, T, S] */
    o = vision_reshape3(ctx, o, C, T, S);
    return vision_linear(ctx, o, b->out_w, b->out_b);
}

/* Windowed attention: every window of every view in one batch. h_all: [C, N] (groups in order). */
static tp_tensor *sam_windowed(tp_context *ctx, const vision_hparams *hp, const sam_block *b,
                               tp_tensor *h_all, const view_group *groups, int n_groups) {
    const int64_t C = hp->sam_width, ws = hp->window_size;
    tp_tensor *parts[8] = {0};
    int64_t first = 0;
    for (int gi = 0; gi < n_groups; gi++) {
        const view_group *g = &groups[gi];
        int64_t grid = g->grid, n_tok = grid * grid * g->n_views;
        int64_t nw = (grid + ws - 1) / ws, gp = nw * ws;
        tp_tensor *x = vision_cols(ctx, h_all, first, n_tok); /* contiguous columns */
        x = vision_reshape4(ctx, x, C, grid, grid, g->n_views);
        if (gp != grid) {
            int before[4] = {0, 0, 0, 0}, after[4] = {0, (int)(gp - grid), (int)(gp - grid), 0};
            x = tp_pad(ctx, x, before, after);
        }
        /* [C, gp, gp, B] -> [C·ws, nw, ws, nw·B] -> swap -> [C, ws·ws, nw·nw·B] */
        x = vision_reshape4(ctx, x, C * ws, nw, ws, nw * g->n_views);
        x = tp_cont(ctx, tp_permute(ctx, x, 0, 2, 1, 3));
        parts[gi] = vision_reshape3(ctx, x, C, ws * ws, nw * nw * g->n_views);
        first += n_tok;
    }
    tp_tensor *wins = vision_concat_n(ctx, parts, n_groups, 2);
    tp_tensor *th = rel_table(ctx, b->pos_h, (int)ws);
    tp_tensor *tw = rel_table(ctx, b->pos_w, (int)ws);
    tp_tensor *a = sam_attention(ctx, hp, b, wins, (int)ws, th, tw); /* [C, ws·ws, windows] */
    if (!a) return NULL;
    int64_t win0 = 0;
    for (int gi = 0; gi < n_groups; gi++) {
        const view_group *g = &groups[gi];
        int64_t grid = g->grid, nw = (grid + ws - 1) / ws, gp = nw * ws, n_win = nw * nw * g->n_views;
        int64_t ne[3] = {C, ws * ws, n_win};
        size_t nb[3] = {a->nb[0], a->nb[1], a->nb[2]};
        tp_tensor *y = tp_view(ctx, a, 3, ne, nb, (size_t)win0 * a->nb[2]);
        y = vision_reshape4(ctx, y, C * ws, ws, nw, nw * g->n_views);
        y = tp_cont(ctx, tp_permute(ctx, y, 0, 2, 1, 3)); /* [C·ws, nw, ws, nw·B] */
        y = vision_reshape4(ctx, y, C, gp, gp, g->n_views);
        if (gp != grid) {
            int64_t cne[4] = {C, grid, grid, g->n_views};
            size_t cnb[4] = {y->nb[0], y->nb[1], y->nb[2], y->nb[3]};
            y = tp_cont(ctx, tp_view(ctx, y, 4, cne, cnb, 0));
        }
        parts[gi] = vision_reshape2(ctx, y, C, grid * grid * g->n_views);
        win0 += n_win;
    }
    return vision_concat_n(ctx, parts, n_groups, 1);
}

/* Global attention: the views of each size attend as one 4-D batch. */
static tp_tensor *sam_global(tp_context *ctx, const vision_hparams *hp, const sam_block *b,
                             tp_tensor *h_all, const view_group *groups, int n_groups) {
    const int64_t C = hp->sam_width;
    tp_tensor *parts[8] = {0};
    int64_t first = 0;
    for (int gi = 0; gi < n_groups; gi++) {
        const view_group *g = &groups[gi];
        int64_t grid = g->grid, n_tok = grid * grid * g->n_views;
        tp_tensor *x = vision_cols(ctx, h_all, first, n_tok);
        x = vision_reshape3(ctx, x, C, grid * grid, g->n_views);
        tp_tensor *th = rel_table(ctx, b->pos_h, (int)grid);
        tp_tensor *tw = rel_table(ctx, b->pos_w, (int)grid);
        tp_tensor *a = sam_attention(ctx, hp, b, x, (int)grid, th, tw);
        parts[gi] = vision_reshape2(ctx, a, C, n_tok);
        first += n_tok;
    }
    return vision_concat_n(ctx, parts, n_groups, 1);
}

void vision_build_sam(tp_context *ctx, const vision_hparams *hp, const vision_weights *w,
                      view_group *groups, int n_groups, tp_tensor **sam_out) {
    const int64_t C = hp->sam_width, P = hp->patch_size;
    tp_tensor *parts[8] = {0};
    for (int gi = 0; gi < n_groups; gi++) {
        view_group *g = &groups[gi];
        tp_tensor *x = tp_conv2d(ctx, g->pixels, w->patch_w, w->patch_b, (int)P, (int)P, 0, 0);
        tp_tensor *pos = w->pos_embd;
        if (g->grid != hp->sam_pos_grid) pos = vision_resize_grid(ctx, pos, g->grid);
        x = tp_add(ctx, x, pos); /* [C, grid, grid, B] + [C, grid, grid, 1] */
        parts[gi] = vision_reshape2(ctx, x, C, (int64_t)g->grid * g->grid * g->n_views);
    }
    tp_tensor *x = vision_concat_n(ctx, parts, n_groups, 1);

    for (int i = 0; i < hp->sam_blocks; i++) {
        const sam_block *b = &w->sam[i];
        tp_tensor *h = tp_layer_norm(ctx, x, b->ln1_w, b->ln1_b, hp->sam_eps);
        tp_tensor *a = b->global ? sam_global(ctx, hp, b, h, groups, n_groups)
                                 : sam_windowed(ctx, hp, b, h, groups, n_groups);
        x = tp_add(ctx, x, a);
        h = tp_layer_norm(ctx, x, b->ln2_w, b->ln2_b, hp->sam_eps);
        h = vision_linear(ctx, tp_linear(ctx, b->mlp1_w, h, b->mlp1_b, TP_ACT_GELU), b->mlp2_w, b->mlp2_b);
        x = tp_add(ctx, x, h);
    }

    int64_t first = 0;
    for (int gi = 0; gi < n_groups; gi++) {
        const view_group *g = &groups[gi];
        int64_t n_tok = (int64_t)g->grid * g->grid * g->n_views;
        tp_tensor *y = vision_cols(ctx, x, first, n_tok);
        y = vision_reshape4(ctx, y, C, g->grid, g->grid, g->n_views);
        y = tp_conv2d(ctx, y, w->neck0_w, NULL, 1, 1, 0, 0);
        y = tp_layer_norm(ctx, y, w->neck1_w, w->neck1_b, 1e-6f);
        y = tp_conv2d(ctx, y, w->neck2_w, NULL, 1, 1, 1, 1);
        y = tp_layer_norm(ctx, y, w->neck3_w, w->neck3_b, 1e-6f);
        y = tp_conv2d(ctx, y, w->net2_w, NULL, 2, 2, 1, 1);
        sam_out[gi] = tp_conv2d(ctx, y, w->net3_w, NULL, 2, 2, 1, 1);
        first += n_tok;
    }
}
