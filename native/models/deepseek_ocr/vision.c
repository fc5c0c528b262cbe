/* vision.c - DeepSeek-OCR v1's vision family: hyperparameters (our keys first, then llama.cpp's keys and
 * tensor shapes, then llama.cpp's hard-coded values), weights, image modes, the graph (SAM -> CLIP ->
 * projector over [CLIP ; SAM]) and the token layout (tiles woven into one grid + newlines, global view +
 * newlines, view separator). */
#include "deepseek_ocr.h"
#include "../blocks/graph_util.h"
#include "../blocks/tiles.h"
#include "names.h"

#include <stdlib.h>

static int get_int(const tp_gguf *g, const char *key, int fallback) {
    return weights_get_int(g, key, 1, (1 << 24) - 1, fallback);
}

static tp_status load(weights_loader *L, void **out) {
    dsocr_vision *m = calloc(1, sizeof(*m));
    if (!m) {
        tp_error_set(L->err, TP_ERR_OUT_OF_MEMORY, "%s: out of memory", L->path);
        return TP_ERR_OUT_OF_MEMORY;
    }
    *out = m;
    const tp_gguf *g = L->g;
    tp_status st = sam_load(L, &m->sam_hp, &m->sam);
    if (st != TP_OK) return st;
    m->clip_width = (int)weights_tensor_ne(g, TN_V_POS, 0);
    m->clip_layers = weights_count_blocks(g, TN_V_QKV_W, DSOCR_MAX_LAYERS);
    int64_t n_pos = weights_tensor_ne(g, TN_V_POS, 1);
    m->n_embd = (int)weights_tensor_ne(g, TN_MM_FC_W, 1);
    if (m->clip_width <= 0 || m->clip_layers == 0 || n_pos <= 1 || m->n_embd <= 0)
        return weights_fail(L, "a DeepSeek-OCR vision tensor is missing (CLIP or projector)");
    int clip_grid = 1;
    while ((int64_t)clip_grid * clip_grid < n_pos - 1) clip_grid++;
    if ((int64_t)clip_grid * clip_grid != n_pos - 1) return weights_fail(L, TN_V_POS " does not hold 1 + a square of rows");
    m->clip_pos_grid = clip_grid;
    m->clip_heads = get_int(g, KEY_V_HEAD_COUNT, 16);
    m->clip_eps = weights_get_float(g, KEY_TP_CLIP_EPS, 0.0f, 1.0f, 1e-5f);
    tiles_read(g, 640, 9, &m->tiles);
    if (m->clip_width % m->clip_heads != 0) return weights_fail(L, "the CLIP width is not divisible by its head count");
    if (m->sam_hp.out_channels != m->clip_width) return weights_fail(L, "SAM's output width differs from CLIP's width");
    if (m->sam_hp.image_size % m->sam_hp.downsample != 0 || m->tiles.tile_size % m->sam_hp.downsample != 0)
        return weights_fail(L, "the image or tile size is not a multiple of SAM's patch size times 4");
    const int64_t F = m->clip_width, N = m->sam_hp.out_channels, E = m->n_embd;
    m->class_embd = weights_load_f32(L, TN_V_CLASS_EMBD, F, 1, 1, 1);
    m->clip_pos = weights_load_f32(L, TN_V_POS, F, 1 + (int64_t)clip_grid * clip_grid, 1, 1);
    m->pre_ln_w = weights_load_f32(L, TN_V_PRE_LN_W, F, 1, 1, 1);
    m->pre_ln_b = weights_load_f32(L, TN_V_PRE_LN_B, F, 1, 1, 1);
    vit_load_layers(L, F, m->clip, m->clip_layers);
    m->fc_w = weights_load(L, TN_MM_FC_W, F + N, E, 1, 1);
    m->fc_b = weights_load_f32(L, TN_MM_FC_B, E, 1, 1, 1);
    m->newline = weights_load_f32(L, TN_V_NEWLINE, E, 1, 1, 1);
    m->separator = weights_load_f32(L, TN_V_SEPARATOR, E, -1, 1, 1);
    return L->failed ? (L->err ? L->err->status : TP_ERR_FORMAT) : TP_OK;
}

static void free_model(void *m) { free(m); }

static int64_t n_embd(const void *model) { return ((const dsocr_vision *)model)->n_embd; }

/* gundam (the default): the global view plus tiles when the image exceeds a tile; auto makes the same
 * views (a page no larger than a tile gets none: base); tiny/small stretch, base/large pad. */
static int modes(const void *model, vision_mode *out, int cap) {
    const dsocr_vision *m = model;
    const int32_t S = m->sam_hp.image_size, T = m->tiles.tile_size;
    const tiles_params *t = &m->tiles;
    const vision_mode all[] = {
        {"gundam", tiles_preprocess(t, TP_FIT_PAD, S, T)},  {"tiny", tiles_preprocess(t, TP_FIT_STRETCH, 512, 0)},
        {"small", tiles_preprocess(t, TP_FIT_STRETCH, 640, 0)}, {"base", tiles_preprocess(t, TP_FIT_PAD, S, 0)},
        {"large", tiles_preprocess(t, TP_FIT_PAD, 1280, 0)}, {"auto", tiles_preprocess(t, TP_FIT_PAD, S, T)},
    };
    int n = (int)(sizeof all / sizeof all[0]);
    for (int i = 0; i < n && i < cap; i++) out[i] = all[i];
    return n;
}

static bool view_ok(const void *model, int width, int height) {
    const dsocr_vision *m = model;
    return width == height && sam_out_grid(&m->sam_hp, width) > 0;
}

static int64_t page_n_tokens(const void *model, const tp_page_views *page) {
    const dsocr_vision *m = model;
    const int unit = m->sam_hp.downsample;
    const tp_image_view *global = &page->views[page->n_views - 1];
    int64_t g = global->width / unit;
    int64_t n = g * (g + 1) + 1;
    if (page->n_views > 1) {
        int64_t t = page->views[0].width / unit;
        for (int32_t i = 1; i < page->n_views - 1; i++)
            if (page->views[i].width != page->views[0].width) return -1;
        n += (page->grid_rows * t) * (page->grid_cols * t + 1);
    }
    return n;
}

static void build(const void *model, tp_context *ctx, const view_group *groups, int n_groups, bool keep_stages,
                  vision_graph *out) {
    const dsocr_vision *m = model;
    tp_tensor *sam_out[TP_VISION_MAX_GROUPS] = {0}, *clip_out[TP_VISION_MAX_GROUPS] = {0};
    sam_build(ctx, &m->sam_hp, &m->sam, groups, n_groups, sam_out);
    dsocr_build_clip(ctx, m, groups, n_groups, sam_out, clip_out);
    const int64_t F = m->clip_width;
    for (int gi = 0; gi < n_groups; gi++) {
        const view_group *g = &groups[gi];
        const int out_grid = sam_out_grid(&m->sam_hp, g->width);
        int64_t hw = (int64_t)out_grid * out_grid;
        tp_tensor *c = clip_out[gi], *patches = NULL, *sam = NULL;
        if (c) {
            /* CLIP tokens without CLS, then SAM's, side by side: [F + N, hw, B] */
            int64_t ne[3] = {F, hw, g->n_views};
            size_t nb[3] = {c->nb[0], c->nb[1], c->nb[2]};
            patches = tp_view(ctx, c, 3, ne, nb, c->nb[1]);
            sam = gu_reshape3(ctx, sam_out[gi], m->sam_hp.out_channels, hw, g->n_views);
        }
        out->tokens[gi] = gu_linear(ctx, tp_concat(ctx, patches, sam, 0), m->fc_w, m->fc_b);
        if (keep_stages) {
            out->stages[0][gi] = sam_out[gi];
            out->stages[1][gi] = clip_out[gi];
        }
    }
    if (keep_stages) {
        out->n_stages = 2;
        out->stage_names[0] = "sam";  /* [h·w, C_sam] per view */
        out->stage_names[1] = "clip"; /* [1 + h·w, C_clip] per view, CLS first */
    }
}

static void layout(const void *model, const tp_page_views *page, const float *const *view_rows, float *out) {
    const dsocr_vision *m = model;
    const int64_t E = m->n_embd;
    const float *newline = tp_tensor_data(m->newline);
    const int unit = m->sam_hp.downsample;
    /* [tiles woven into one grid + newlines ; global + newlines ; separator] */
    if (page->n_views > 1)
        out = tiles_weave(out, view_rows, page->grid_cols, page->grid_rows, page->views[0].width / unit, E, newline);
    out = tiles_weave(out, view_rows + page->n_views - 1, 1, 1, page->views[page->n_views - 1].width / unit, E, newline);
    memcpy(out, tp_tensor_data(m->separator), (size_t)E * sizeof(float));
}

static int matrices(void *model, tp_tensor ***slots, int cap) {
    dsocr_vision *m = model;
    int n = sam_matrices(&m->sam, &m->sam_hp, slots, cap);
    n += vit_matrices(m->clip, m->clip_layers, slots + n, cap - n);
    if (n < cap) slots[n++] = &m->fc_w;
    return n;
}

static const tp_tensor *probe_matrix(const void *model) {
    return ((const dsocr_vision *)model)->sam.blocks[0].qkv_w;
}

const vision_family deepseek_ocr_vision = {
    .name = "deepseek_ocr",
    .projector_type = "deepseekocr",
    .no_repeat_ngram = 30,
    .no_repeat_window = 90,
    .prompt = &deepseek_ocr_prompt,
    .load = load,
    .free = free_model,
    .n_embd = n_embd,
    .modes = modes,
    .view_ok = view_ok,
    .page_n_tokens = page_n_tokens,
    .build = build,
    .layout = layout,
    .matrices = matrices,
    .probe_matrix = probe_matrix,
};
