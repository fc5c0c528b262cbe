/* sam.c - SAM ViT-B over every view of a pass: patch embedding and position embedding per group of
 * same-size views, blocks on the flattened tokens of all views (windowed blocks batch every window of
 * every view; global blocks batch the views of each size), then neck and compressor convs per group. */
#include "sam.h"
#include "graph_util.h"
#include "names.h"

#include <math.h>
#include <stdio.h>

static int grid_of(const sam_hparams *hp, const view_group *g) { return g->width / hp->patch_size; }

int sam_out_grid(const sam_hparams *hp, int side) {
    int unit = hp->downsample;
    return side > 0 && side <= TP_IMAGE_MAX_SIDE && side % unit == 0 ? side / unit : 0;
}

tp_status sam_load(weights_loader *L, sam_hparams *hp, sam_weights *w) {
    const tp_gguf *g = L->g;
    memset(hp, 0, sizeof(*hp));
    memset(w, 0, sizeof(*w));
    hp->width = (int)weights_tensor_ne(g, TN_SAM_PATCH_W, 3);
    hp->patch_size = (int)weights_tensor_ne(g, TN_SAM_PATCH_W, 0);
    hp->pos_grid = (int)weights_tensor_ne(g, TN_SAM_POS, 1);
    hp->n_blocks = weights_count_blocks(g, TN_SAM_QKV_W, SAM_MAX_BLOCKS);
    hp->out_channels = (int)weights_tensor_ne(g, TN_SAM_NET3_W, 3);
    if (hp->width <= 0 || hp->patch_size <= 0 || hp->pos_grid <= 0 || hp->n_blocks == 0 || hp->out_channels <= 0) {
        tp_error_set(L->err, TP_ERR_FORMAT, "%s: a SAM tensor is missing (patch/position embedding, blocks or net_3)",
                     L->path);
        L->failed = true;
        return TP_ERR_FORMAT;
    }
    hp->heads = weights_get_int(g, KEY_V_SAM_HEAD_COUNT, 1, 4096, 12);
    hp->image_size = weights_get_int(g, KEY_TP_SAM_IMAGE_SIZE, 1, TP_IMAGE_MAX_SIDE, hp->pos_grid * hp->patch_size);
    hp->window_size = weights_get_int(g, KEY_TP_SAM_WINDOW_SIZE, 1, 4096, weights_get_int(g, KEY_V_WINDOW_SIZE, 1, 4096, 14));
    hp->eps = weights_get_float(g, KEY_TP_SAM_EPS, 0.0f, 1.0f, 1e-6f);
    hp->downsample = hp->patch_size * 4; /* two stride-2 convs (net_2, net_3) */
    if (hp->width % hp->heads != 0) {
        tp_error_set(L->err, TP_ERR_FORMAT, "%s: SAM width %d is not divisible by its %d heads", L->path, hp->width,
                     hp->heads);
        L->failed = true;
        return TP_ERR_FORMAT;
    }
    const int64_t C = hp->width, P = hp->patch_size, D = C / hp->heads;
    w->patch_w = weights_load(L, TN_SAM_PATCH_W, P, P, 3, C);
    w->patch_b = weights_load_f32(L, TN_SAM_PATCH_B, C, 1, 1, 1);
    w->pos_embd = weights_load_f32(L, TN_SAM_POS, C, hp->pos_grid, hp->pos_grid, 1);
    const int64_t win_rows = 2 * hp->window_size - 1, global_rows = 2 * hp->pos_grid - 1;
    for (int i = 0; i < hp->n_blocks && !L->failed; i++) {
        sam_block *b = &w->blocks[i];
        b->ln1_w = weights_loadf_f32(L, C, 1, 1, 1, TN_SAM_LN1_W, i);
        b->ln1_b = weights_loadf_f32(L, C, 1, 1, 1, TN_SAM_LN1_B, i);
        b->ln2_w = weights_loadf_f32(L, C, 1, 1, 1, TN_SAM_LN2_W, i);
        b->ln2_b = weights_loadf_f32(L, C, 1, 1, 1, TN_SAM_LN2_B, i);
        b->qkv_w = weights_loadf(L, C, 3 * C, 1, 1, TN_SAM_QKV_W, i);
        b->qkv_b = weights_loadf_f32(L, 3 * C, 1, 1, 1, TN_SAM_QKV_B, i);
        b->out_w = weights_loadf(L, C, C, 1, 1, TN_SAM_OUT_W, i);
        b->out_b = weights_loadf_f32(L, C, 1, 1, 1, TN_SAM_OUT_B, i);
        b->pos_h = weights_loadf_f32(L, D, -1, 1, 1, TN_SAM_POS_H, i);
        b->pos_w = weights_loadf_f32(L, D, -1, 1, 1, TN_SAM_POS_W, i);
        b->mlp1_w = weights_loadf(L, C, -1, 1, 1, TN_SAM_MLP1_W, i);
        if (L->failed) break;
        int64_t mlp = b->mlp1_w->ne[1];
        b->mlp1_b = weights_loadf_f32(L, mlp, 1, 1, 1, TN_SAM_MLP1_B, i);
        b->mlp2_w = weights_loadf(L, mlp, C, 1, 1, TN_SAM_MLP2_W, i);
        b->mlp2_b = weights_loadf_f32(L, C, 1, 1, 1, TN_SAM_MLP2_B, i);
        if (L->failed) break;
        /* a block is global when its relative-position table spans the whole grid */
        int64_t rows = b->pos_h->ne[1];
        if ((rows != win_rows && rows != global_rows) || b->pos_w->ne[1] != rows) {
            tp_error_set(L->err, TP_ERR_FORMAT,
                         "%s: SAM block %d: relative-position table of %lld rows (expected %lld or %lld)", L->path, i,
                         (long long)rows, (long long)win_rows, (long long)global_rows);
            L->failed = true;
            return TP_ERR_FORMAT;
        }
        b->global = rows != win_rows || win_rows == global_rows;
    }
    const int64_t N = hp->out_channels;
    const int64_t neck = weights_tensor_nef(g, 3, TN_SAM_NECK_W, 0);
    const int64_t mid = weights_tensor_ne(g, TN_SAM_NET2_W, 3);
    w->neck0_w = weights_loadf(L, 1, 1, C, neck, TN_SAM_NECK_W, 0);
    w->neck1_w = weights_loadf_f32(L, neck, 1, 1, 1, TN_SAM_NECK_W, 1);
    w->neck1_b = weights_loadf_f32(L, neck, 1, 1, 1, TN_SAM_NECK_B, 1);
    w->neck2_w = weights_loadf(L, 3, 3, neck, neck, TN_SAM_NECK_W, 2);
    w->neck3_w = weights_loadf_f32(L, neck, 1, 1, 1, TN_SAM_NECK_W, 3);
    w->neck3_b = weights_loadf_f32(L, neck, 1, 1, 1, TN_SAM_NECK_B, 3);
    w->net2_w = weights_load(L, TN_SAM_NET2_W, 3, 3, neck, mid);
    w->net3_w = weights_load(L, TN_SAM_NET3_W, 3, 3, mid, N);
    return L->failed ? (L->err ? L->err->status : TP_ERR_FORMAT) : TP_OK;
}

int sam_matrices(sam_weights *w, const sam_hparams *hp, tp_tensor ***slots, int cap) {
    int n = 0;
    for (int i = 0; i < hp->n_blocks && n + 4 <= cap; i++) {
        slots[n++] = &w->blocks[i].qkv_w;
        slots[n++] = &w->blocks[i].out_w;
        slots[n++] = &w->blocks[i].mlp1_w;
        slots[n++] = &w->blocks[i].mlp2_w;
    }
    return n;
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
    return gu_reshape3(ctx, tp_get_rows(ctx, t, idx), D, side, side);
}

/* Self-attention with decomposed relative positions over S sequences of side×side tokens.
 * h: [C, side·side, S] contiguous. Returns [C, side·side, S] after the output projection. */
static tp_tensor *sam_attention(tp_context *ctx, const sam_hparams *hp, const sam_block *b,
                                tp_tensor *h, int side, tp_tensor *table_h, tp_tensor *table_w) {
    if (!h) return NULL;
    const int64_t C = hp->width, H = hp->heads, D = C / H, T = (int64_t)side * side;
    const int64_t S = h->ne[2];
    tp_tensor *qkv = gu_linear(ctx, h, b->qkv_w, b->qkv_b); /* [3C, T, S] */
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
    tp_tensor *q_grid = gu_reshape4(ctx, q, D, side, side, H * S); /* [D, qw, qh, H·S] */
    tp_tensor *rel_h = tp_mul_mat(ctx, table_h, q_grid);                /* [kh, qw, qh, H·S] */
    rel_h = gu_reshape4(ctx, rel_h, side, T, H, S);
    /* rel_w: the same batched over qw */
    tp_tensor *q_t = tp_permute(ctx, q_grid, 0, 2, 1, 3);  /* [D, qh, qw, H·S] */
    tp_tensor *rel_w = tp_mul_mat(ctx, table_w, q_t);       /* [kw, qh, qw, H·S] */
    rel_w = tp_cont(ctx, tp_permute(ctx, rel_w, 0, 2, 1, 3));
    rel_w = gu_reshape4(ctx, rel_w, side, T, H, S);

    tp_attention_opts opts = tp_attention_default_opts();
    opts.scale = 1.0f / sqrtf((float)D);
    opts.rel_h = rel_h;
    opts.rel_w = rel_w;
    tp_tensor *o = tp_attention(ctx, q, k, v, &opts); /* [D, H, T, S] */
    o = gu_reshape3(ctx, o, C, T, S);
    return gu_linear(ctx, o, b->out_w, b->out_b);
}

/* Windowed attention: every window of every view in one batch. h_all: [C, N] (groups in order). */
static tp_tensor *sam_windowed(tp_context *ctx, const sam_hparams *hp, const sam_block *b,
                               tp_tensor *h_all, const view_group *groups, int n_groups) {
    const int64_t C = hp->width, ws = hp->window_size;
    tp_tensor *parts[TP_VISION_MAX_GROUPS] = {0};
    int64_t first = 0;
    for (int gi = 0; gi < n_groups; gi++) {
        const view_group *g = &groups[gi];
        int64_t grid = grid_of(hp, g), n_tok = grid * grid * g->n_views;
        int64_t nw = (grid + ws - 1) / ws, gp = nw * ws;
        tp_tensor *x = gu_cols(ctx, h_all, first, n_tok); /* contiguous columns */
        x = gu_reshape4(ctx, x, C, grid, grid, g->n_views);
        if (gp != grid) {
            int before[4] = {0, 0, 0, 0}, after[4] = {0, (int)(gp - grid), (int)(gp - grid), 0};
            x = tp_pad(ctx, x, before, after);
        }
        /* [C, gp, gp, B] -> [C·ws, nw, ws, nw·B] -> swap -> [C, ws·ws, nw·nw·B] */
        x = gu_reshape4(ctx, x, C * ws, nw, ws, nw * g->n_views);
        x = tp_cont(ctx, tp_permute(ctx, x, 0, 2, 1, 3));
        parts[gi] = gu_reshape3(ctx, x, C, ws * ws, nw * nw * g->n_views);
        first += n_tok;
    }
    tp_tensor *wins = gu_concat_n(ctx, parts, n_groups, 2);
    tp_tensor *th = rel_table(ctx, b->pos_h, (int)ws);
    tp_tensor *tw = rel_table(ctx, b->pos_w, (int)ws);
    tp_tensor *a = sam_attention(ctx, hp, b, wins, (int)ws, th, tw); /* [C, ws·ws, windows] */
    if (!a) return NULL;
    int64_t win0 = 0;
    for (int gi = 0; gi < n_groups; gi++) {
        const view_group *g = &groups[gi];
        int64_t grid = grid_of(hp, g), nw = (grid + ws - 1) / ws, gp = nw * ws, n_win = nw * nw * g->n_views;
        int64_t ne[3] = {C, ws * ws, n_win};
        size_t nb[3] = {a->nb[0], a->nb[1], a->nb[2]};
        tp_tensor *y = tp_view(ctx, a, 3, ne, nb, (size_t)win0 * a->nb[2]);
        y = gu_reshape4(ctx, y, C * ws, ws, nw, nw * g->n_views);
        y = tp_cont(ctx, tp_permute(ctx, y, 0, 2, 1, 3)); /* [C·ws, nw, ws, nw·B] */
        y = gu_reshape4(ctx, y, C, gp, gp, g->n_views);
        if (gp != grid) {
            int64_t cne[4] = {C, grid, grid, g->n_views};
            size_t cnb[4] = {y->nb[0], y->nb[1], y->nb[2], y->nb[3]};
            y = tp_cont(ctx, tp_view(ctx, y, 4, cne, cnb, 0));
        }
        parts[gi] = gu_reshape2(ctx, y, C, grid * grid * g->n_views);
        win0 += n_win;
    }
    return gu_concat_n(ctx, parts, n_groups, 1);
}

/* Global attention: the views of each size attend as one 4-D batch. */
static tp_tensor *sam_global(tp_context *ctx, const sam_hparams *hp, const sam_block *b,
                             tp_tensor *h_all, const view_group *groups, int n_groups) {
    const int64_t C = hp->width;
    tp_tensor *parts[TP_VISION_MAX_GROUPS] = {0};
    int64_t first = 0;
    for (int gi = 0; gi < n_groups; gi++) {
        const view_group *g = &groups[gi];
        int64_t grid = grid_of(hp, g), n_tok = grid * grid * g->n_views;
        tp_tensor *x = gu_cols(ctx, h_all, first, n_tok);
        x = gu_reshape3(ctx, x, C, grid * grid, g->n_views);
        tp_tensor *th = rel_table(ctx, b->pos_h, (int)grid);
        tp_tensor *tw = rel_table(ctx, b->pos_w, (int)grid);
        tp_tensor *a = sam_attention(ctx, hp, b, x, (int)grid, th, tw);
        parts[gi] = gu_reshape2(ctx, a, C, n_tok);
        first += n_tok;
    }
    return gu_concat_n(ctx, parts, n_groups, 1);
}

void sam_build(tp_context *ctx, const sam_hparams *hp, const sam_weights *w,
                      const view_group *groups, int n_groups,
               tp_tensor **sam_out) {
    const int64_t C = hp->width, P = hp->patch_size;
    tp_tensor *parts[TP_VISION_MAX_GROUPS] = {0};
    for (int gi = 0; gi < n_groups; gi++) {
        const view_group *g = &groups[gi];
        tp_tensor *x = tp_conv2d(ctx, g->pixels, w->patch_w, w->patch_b, (int)P, (int)P, 0, 0);
        tp_tensor *pos = w->pos_embd;
        if (grid_of(hp, g) != hp->pos_grid) pos = gu_resize_grid(ctx, pos, grid_of(hp, g));
        x = tp_add(ctx, x, pos); /* [C, grid, grid, B] + [C, grid, grid, 1] */
        parts[gi] = gu_reshape2(ctx, x, C, (int64_t)grid_of(hp, g) * grid_of(hp, g) * g->n_views);
    }
    tp_tensor *x = gu_concat_n(ctx, parts, n_groups, 1);

    for (int i = 0; i < hp->n_blocks; i++) {
        const sam_block *b = &w->blocks[i];
        tp_tensor *h = tp_layer_norm(ctx, x, b->ln1_w, b->ln1_b, hp->eps);
        tp_tensor *a = b->global ? sam_global(ctx, hp, b, h, groups, n_groups)
                                 : sam_windowed(ctx, hp, b, h, groups, n_groups);
        x = tp_add(ctx, x, a);
        h = tp_layer_norm(ctx, x, b->ln2_w, b->ln2_b, hp->eps);
        h = gu_linear(ctx, tp_linear(ctx, b->mlp1_w, h, b->mlp1_b, TP_ACT_GELU), b->mlp2_w, b->mlp2_b);
        x = tp_add(ctx, x, h);
    }

    int64_t first = 0;
    for (int gi = 0; gi < n_groups; gi++) {
        const view_group *g = &groups[gi];
        int64_t n_tok = (int64_t)grid_of(hp, g) * grid_of(hp, g) * g->n_views;
        tp_tensor *y = gu_cols(ctx, x, first, n_tok);
        y = gu_reshape4(ctx, y, C, grid_of(hp, g), grid_of(hp, g), g->n_views);
        y = tp_conv2d(ctx, y, w->neck0_w, NULL, 1, 1, 0, 0);
        y = tp_layer_norm(ctx, y, w->neck1_w, w->neck1_b, 1e-6f);
        y = tp_conv2d(ctx, y, w->neck2_w, NULL, 1, 1, 1, 1);
        y = tp_layer_norm(ctx, y, w->neck3_w, w->neck3_b, 1e-6f);
        y = tp_conv2d(ctx, y, w->net2_w, NULL, 2, 2, 1, 1);
        sam_out[gi] = tp_conv2d(ctx, y, w->net3_w, NULL, 2, 2, 1, 1);
        first += n_tok;
    }
}
