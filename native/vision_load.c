/* vision_load.c - reading a DeepSeek-OCR v1 vision GGUF: hyperparameters (our keys first, then
 * llama.cpp's keys and tensor shapes, then llama.cpp's hard-coded values) and weight tensors,
 * every shape checked against the hyperparameters. */
#include "vision_load.h"
#include "weights.h"

#include <stdio.h>
#include <stdlib.h>

static int get_int(const tp_gguf *g, const char *key, int fallback) {
    return weights_get_int(g, key, 1, (1 << 24) - 1, fallback);
}

static float get_float(const tp_gguf *g, const char *key, float fallback) {
    return weights_get_float(g, key, 0.0f, 1.0f, fallback);
}

static bool str_equals(const tp_gguf *g, const char *key, const char *want) {
    const char *s;
    size_t n;
    if (tp_gguf_get_str(g, key, &s, &n) != TP_OK) return false;
    return n == strlen(want) && memcmp(s, want, n) == 0;
}

static int count_blocks(const tp_gguf *g, const char *fmt) {
    char name[128];
    int n = 0;
    for (; n < TP_VISION_MAX_BLOCKS; n++) {
        snprintf(name, sizeof name, fmt, n);
        if (tp_gguf_find_tensor(g, name) < 0) break;
    }
    return n;
}

tp_status vision_read_hparams(const tp_gguf *g, const char *path, vision_hparams *hp, tp_error *err) {
    memset(hp, 0, sizeof(*hp));
    const char *arch;
    size_t arch_len;
    if (tp_gguf_get_str(g, "general.architecture", &arch, &arch_len) != TP_OK) {
        tp_error_set(err, TP_ERR_FORMAT, "%s: no general.architecture: not a model file", path);
        return TP_ERR_FORMAT;
    }
    if (!str_equals(g, "general.architecture", "clip")) {
        tp_error_set(err, TP_ERR_FORMAT,
                     "%s: architecture is '%.*s', not a vision (clip/mmproj) file%s", path,
                     (int)(arch_len > 64 ? 64 : arch_len), arch,
                     arch_len >= 8 && memcmp(arch, "deepseek", 8) == 0 ? " (it is a text model)" : "");
        return TP_ERR_FORMAT;
    }
    if (!str_equals(g, "clip.projector_type", "deepseekocr")) {
        const char *pt = "";
        size_t pn = 0;
        tp_gguf_get_str(g, "clip.projector_type", &pt, &pn);
        tp_error_set(err, TP_ERR_UNSUPPORTED,
                     "%s: projector type '%.*s' is not supported (this build runs 'deepseekocr')", path,
                     (int)(pn > 64 ? 64 : pn), pt);
        return TP_ERR_UNSUPPORTED;
    }
    hp->sam_width = (int)weights_tensor_ne(g, "v.sam.patch_embd.weight", 3);
    hp->patch_size = (int)weights_tensor_ne(g, "v.sam.patch_embd.weight", 0);
    hp->sam_pos_grid = (int)weights_tensor_ne(g, "v.sam.pos_embd.weight", 1);
    hp->sam_blocks = count_blocks(g, "v.sam.blk.%d.attn.qkv.weight");
    hp->sam_out = (int)weights_tensor_ne(g, "v.sam.net_3.weight", 3);
    hp->clip_width = (int)weights_tensor_ne(g, "v.position_embd.weight", 0);
    hp->clip_layers = count_blocks(g, "v.blk.%d.attn_qkv.weight");
    int64_t n_pos = weights_tensor_ne(g, "v.position_embd.weight", 1);
    hp->n_embd = (int)weights_tensor_ne(g, "mm.model.fc.weight", 1);
    if (hp->sam_width <= 0 || hp->patch_size <= 0 || hp->sam_pos_grid <= 0 || hp->sam_blocks == 0 ||
        hp->sam_out <= 0 || hp->clip_width <= 0 || hp->clip_layers == 0 || n_pos <= 1 ||
        hp->n_embd <= 0) {
        tp_error_set(err, TP_ERR_FORMAT, "%s: a DeepSeek-OCR vision tensor is missing (SAM, CLIP or projector)",
                     path);
        return TP_ERR_FORMAT;
    }
    int clip_grid = 1;
    while ((int64_t)clip_grid * clip_grid < n_pos - 1) clip_grid++;
    if ((int64_t)clip_grid * clip_grid != n_pos - 1) {
        tp_error_set(err, TP_ERR_FORMAT, "%s: v.position_embd.weight has %lld rows, not 1 + a square",
                     path, (long long)n_pos);
        return TP_ERR_FORMAT;
    }
    hp->clip_pos_grid = clip_grid;
    hp->sam_heads = get_int(g, "clip.vision.sam.head_count", 12);
    hp->clip_heads = get_int(g, "clip.vision.attention.head_count", 16);
    hp->image_size = get_int(g, "tilepass.sam.image_size", hp->sam_pos_grid * hp->patch_size);
    hp->window_size = get_int(g, "tilepass.sam.window_size", get_int(g, "clip.vision.window_size", 14));
    hp->tile_size = get_int(g, "tilepass.preproc.tile_size", 640);
    int64_t pad;
    hp->pad_color = tp_gguf_get_arr_i64(g, "tilepass.preproc.pad_color", 0, &pad) == TP_OK && pad >= 0 && pad < 256
                        ? (int)pad
                        : get_int(g, "tilepass.preproc.pad_color", 127);
    hp->min_tiles = get_int(g, "clip.vision.preproc_min_tiles", 2);
    hp->max_tiles = get_int(g, "clip.vision.preproc_max_tiles", 9);
    hp->sam_eps = get_float(g, "tilepass.sam.layer_norm_epsilon", 1e-6f);
    hp->clip_eps = get_float(g, "tilepass.clip.layer_norm_epsilon", 1e-5f);
    hp->downsample = 4; /* two stride-2 convs (net_2, net_3) */
    for (int c = 0; c < 3; c++) {
        hp->mean[c] = 0.5f;
        hp->std[c] = 0.5f;
        float v;
        if (tp_gguf_get_arr_f32(g, "clip.vision.image_mean", c, &v) == TP_OK) hp->mean[c] = v;
        if (tp_gguf_get_arr_f32(g, "clip.vision.image_std", c, &v) == TP_OK) hp->std[c] = v;
    }
    if (hp->sam_width % hp->sam_heads != 0 || hp->clip_width % hp->clip_heads != 0) {
        tp_error_set(err, TP_ERR_FORMAT, "%s: widths %d/%d are not divisible by head counts %d/%d", path,
                     hp->sam_width, hp->clip_width, hp->sam_heads, hp->clip_heads);
        return TP_ERR_FORMAT;
    }
    if (hp->sam_out != hp->clip_width) {
        tp_error_set(err, TP_ERR_FORMAT, "%s: SAM output width %d differs from CLIP width %d", path,
                     hp->sam_out, hp->clip_width);
        return TP_ERR_FORMAT;
    }
    if (hp->image_size % (hp->patch_size * hp->downsample) != 0 ||
        hp->tile_size % (hp->patch_size * hp->downsample) != 0) {
        tp_error_set(err, TP_ERR_FORMAT, "%s: image size %d / tile size %d not a multiple of %d", path,
                     hp->image_size, hp->tile_size, hp->patch_size * hp->downsample);
        return TP_ERR_FORMAT;
    }
    return TP_OK;
}

/* ---- weights ---- */

tp_status vision_load_weights(tp_gguf *g, const char *path, const vision_hparams *hp, tp_context *ctx,
                              vision_weights *w, tp_error *err) {
    memset(w, 0, sizeof(*w));
    weights_loader L = {g, ctx, path, err, false};
    const int64_t C = hp->sam_width, P = hp->patch_size, D = C / hp->sam_heads;
    const int64_t F = hp->clip_width, E = hp->n_embd;
    w->patch_w = weights_load(&L, "v.sam.patch_embd.weight", P, P, 3, C);
    w->patch_b = weights_load(&L, "v.sam.patch_embd.bias", C, 1, 1, 1);
    w->pos_embd = weights_load(&L, "v.sam.pos_embd.weight", C, hp->sam_pos_grid, hp->sam_pos_grid, 1);
    const int64_t win_rows = 2 * hp->window_size - 1, global_rows = 2 * hp->sam_pos_grid - 1;
    for (int i = 0; i < hp->sam_blocks && !L.failed; i++) {
        sam_block *b = &w->sam[i];
        b->ln1_w = weights_loadf(&L, C, 1, 1, 1, "v.sam.blk.%d.pre_ln.weight", i);
        b->ln1_b = weights_loadf(&L, C, 1, 1, 1, "v.sam.blk.%d.pre_ln.bias", i);
        b->ln2_w = weights_loadf(&L, C, 1, 1, 1, "v.sam.blk.%d.post_ln.weight", i);
        b->ln2_b = weights_loadf(&L, C, 1, 1, 1, "v.sam.blk.%d.post_ln.bias", i);
        b->qkv_w = weights_loadf(&L, C, 3 * C, 1, 1, "v.sam.blk.%d.attn.qkv.weight", i);
        b->qkv_b = weights_loadf(&L, 3 * C, 1, 1, 1, "v.sam.blk.%d.attn.qkv.bias", i);
        b->out_w = weights_loadf(&L, C, C, 1, 1, "v.sam.blk.%d.attn.out.weight", i);
        b->out_b = weights_loadf(&L, C, 1, 1, 1, "v.sam.blk.%d.attn.out.bias", i);
        b->pos_h = weights_loadf(&L, D, -1, 1, 1, "v.sam.blk.%d.attn.pos_h.weight", i);
        b->pos_w = weights_loadf(&L, D, -1, 1, 1, "v.sam.blk.%d.attn.pos_w.weight", i);
        b->mlp1_w = weights_loadf(&L, C, -1, 1, 1, "v.sam.blk.%d.mlp.lin1.weight", i);
        b->mlp1_b = weights_loadf(&L, -1, 1, 1, 1, "v.sam.blk.%d.mlp.lin1.bias", i);
        if (L.failed) break;
        int64_t mlp = b->mlp1_w->ne[1];
        b->mlp2_w = weights_loadf(&L, mlp, C, 1, 1, "v.sam.blk.%d.mlp.lin2.weight", i);
        b->mlp2_b = weights_loadf(&L, C, 1, 1, 1, "v.sam.blk.%d.mlp.lin2.bias", i);
        if (L.failed) break;
        /* a block is global when its relative-position table spans the whole grid */
        int64_t rows = b->pos_h->ne[1];
        if ((rows != win_rows && rows != global_rows) || b->pos_w->ne[1] != rows || b->mlp1_b->ne[0] != mlp) {
            tp_error_set(err, TP_ERR_FORMAT,
                         "%s: SAM block %d: relative-position table of %lld rows (expected %lld or %lld)",
                         path, i, (long long)rows, (long long)win_rows, (long long)global_rows);
            return TP_ERR_FORMAT;
        }
        b->global = rows != win_rows || win_rows == global_rows;
    }
    const int64_t N = hp->sam_out;
    const int64_t neck = hp->sam_blocks > 0 ? weights_tensor_ne(g, "v.sam.neck.0.weight", 3) : -1;
    const int64_t mid = weights_tensor_ne(g, "v.sam.net_2.weight", 3);
    w->neck0_w = weights_load(&L, "v.sam.neck.0.weight", 1, 1, C, neck);
    w->neck1_w = weights_load(&L, "v.sam.neck.1.weight", neck, 1, 1, 1);
    w->neck1_b = weights_load(&L, "v.sam.neck.1.bias", neck, 1, 1, 1);
    w->neck2_w = weights_load(&L, "v.sam.neck.2.weight", 3, 3, neck, neck);
    w->neck3_w = weights_load(&L, "v.sam.neck.3.weight", neck, 1, 1, 1);
    w->neck3_b = weights_load(&L, "v.sam.neck.3.bias", neck, 1, 1, 1);
    w->net2_w = weights_load(&L, "v.sam.net_2.weight", 3, 3, neck, mid);
    w->net3_w = weights_load(&L, "v.sam.net_3.weight", 3, 3, mid, N);
    w->class_embd = weights_load(&L, "v.class_embd", F, 1, 1, 1);
    w->clip_pos = weights_load(&L, "v.position_embd.weight", F, 1 + (int64_t)hp->clip_pos_grid * hp->clip_pos_grid, 1, 1);
    w->pre_ln_w = weights_load(&L, "v.pre_ln.weight", F, 1, 1, 1);
    w->pre_ln_b = weights_load(&L, "v.pre_ln.bias", F, 1, 1, 1);
    for (int i = 0; i < hp->clip_layers && !L.failed; i++) {
        clip_layer *l = &w->clip[i];
        l->ln1_w = weights_loadf(&L, F, 1, 1, 1, "v.blk.%d.ln1.weight", i);
        l->ln1_b = weights_loadf(&L, F, 1, 1, 1, "v.blk.%d.ln1.bias", i);
        l->ln2_w = weights_loadf(&L, F, 1, 1, 1, "v.blk.%d.ln2.weight", i);
        l->ln2_b = weights_loadf(&L, F, 1, 1, 1, "v.blk.%d.ln2.bias", i);
        l->qkv_w = weights_loadf(&L, F, 3 * F, 1, 1, "v.blk.%d.attn_qkv.weight", i);
        l->qkv_b = weights_loadf(&L, 3 * F, 1, 1, 1, "v.blk.%d.attn_qkv.bias", i);
        l->out_w = weights_loadf(&L, F, F, 1, 1, "v.blk.%d.attn_out.weight", i);
        l->out_b = weights_loadf(&L, F, 1, 1, 1, "v.blk.%d.attn_out.bias", i);
        l->fc1_w = weights_loadf(&L, F, -1, 1, 1, "v.blk.%d.ffn_up.weight", i);
        if (L.failed) break;
        int64_t ffn = l->fc1_w->ne[1];
        l->fc1_b = weights_loadf(&L, ffn, 1, 1, 1, "v.blk.%d.ffn_up.bias", i);
        l->fc2_w = weights_loadf(&L, ffn, F, 1, 1, "v.blk.%d.ffn_down.weight", i);
        l->fc2_b = weights_loadf(&L, F, 1, 1, 1, "v.blk.%d.ffn_down.bias", i);
    }
    w->fc_w = weights_load(&L, "mm.model.fc.weight", F + N, E, 1, 1);
    w->fc_b = weights_load(&L, "mm.model.fc.bias", E, 1, 1, 1);
    w->newline = weights_load(&L, "v.image_newline", E, 1, 1, 1);
    w->separator = weights_load(&L, "v.view_seperator", E, -1, 1, 1);
    if (L.failed) return err ? err->status : TP_ERR_FORMAT;
    return TP_OK;
}
