/* vision.c - DeepSeek-VL2's vision family (projector type "deepseekvl2", ours: llama.cpp has none): SigLIP-SO400M
 * at 384 (patch embedding, learned 27×27 position table, pre-LN blocks with fused qkv and tanh-GELU MLPs, final
 * LayerNorm; the attention-pool head unused), the projector (zero-pad 27×27 to 28×28, channel-major 2×2 unfold
 * as F.unfold makes it, Linear, exact GELU, Linear) and the layout: the global view's 14×14 tokens with a
 * newline after each row, the view separator, then the tiles woven into one (14·rows) × (14·cols) grid with a
 * newline after each row. Every view is 384: all views of all pages go through as one batch. */
#include "../blocks/graph_util.h"
#include "../blocks/tiles.h"
#include "../blocks/vit.h"
#include "../vision_family.h"
#include "names.h"

#include <math.h>
#include <stdlib.h>

#define VL2_MAX_LAYERS 64

typedef struct vl2_vision {
    int width, n_heads, n_layers, patch, image_size, grid, merge, out_grid, n_embd;
    float eps;
    tiles_params tiles;
    tp_tensor *patch_w, *patch_b, *pos; /* pos: [width, grid²] */
    vit_layer layers[VL2_MAX_LAYERS];
    tp_tensor *post_w, *post_b, *mm0_w, *mm0_b, *mm2_w, *mm2_b, *newline, *separator;
} vl2_vision;

/* The candidate canvases our tiling makes (tp_tile_rule TP_TILES_BEST_FIT: every m × n of up to max_tiles
 * tiles, in the published order) must be the file's list. */
static bool candidates_match(const tp_gguf *g, int tile, int max_tiles) {
    int64_t key = tp_gguf_find_key(g, KEY_TP_CANDIDATES);
    if (key < 0) return true; /* none stored: the published list */
    int64_t i = 0, n = tp_gguf_arr_n(g, key);
    for (int p = 1; p <= max_tiles; p++)
        for (int a = 1; a * a <= p; a++) {
            if (p % a != 0) continue;
            const int pairs[2][2] = {{a, p / a}, {p / a, a}};
            for (int k = 0; k < (a != p / a ? 2 : 1); k++, i += 2) {
                int64_t w, h;
                if (i + 1 >= n || tp_gguf_get_arr_i64(g, KEY_TP_CANDIDATES, i, &w) != TP_OK ||
                    tp_gguf_get_arr_i64(g, KEY_TP_CANDIDATES, i + 1, &h) != TP_OK || w != (int64_t)tile * pairs[k][0] ||
                    h != (int64_t)tile * pairs[k][1])
                    return false;
            }
        }
    return i == n;
}

static tp_status load(weights_loader *L, void **out) {
    vl2_vision *m = calloc(1, sizeof(*m));
    if (!m) {
        tp_error_set(L->err, TP_ERR_OUT_OF_MEMORY, "%s: out of memory", L->path);
        return TP_ERR_OUT_OF_MEMORY;
    }
    *out = m;
    const tp_gguf *g = L->g;
    m->width = (int)weights_tensor_ne(g, TN_V_PATCH_W, 3);
    m->patch = (int)weights_tensor_ne(g, TN_V_PATCH_W, 0);
    int64_t n_pos = weights_tensor_ne(g, TN_V_POS, 1);
    m->n_layers = weights_count_blocks(g, TN_V_QKV_W, VL2_MAX_LAYERS);
    m->n_embd = (int)weights_tensor_ne(g, TN_MM_2_W, 1);
    if (m->width <= 0 || m->patch <= 0 || n_pos <= 0 || m->n_layers == 0 || m->n_embd <= 0)
        return weights_fail(L, "a DeepSeek-VL2 vision tensor is missing (patch/position embedding, blocks or projector)");
    m->grid = (int)lround(sqrt((double)n_pos));
    if ((int64_t)m->grid * m->grid != n_pos) return weights_fail(L, TN_V_POS " does not hold a square of rows");
    /* the view side (384): its patch grid drops the pixels past the last whole patch (27 · 14 = 378) */
    m->image_size = weights_get_int(g, KEY_V_IMAGE_SIZE, 1, TP_IMAGE_MAX_SIDE, 384);
    if (m->image_size / m->patch != m->grid) return weights_fail(L, "the position table does not fit the image size's patch grid");
    m->n_heads = weights_get_int(g, KEY_V_HEAD_COUNT, 1, 4096, 16);
    if (m->width % m->n_heads != 0) return weights_fail(L, "the vision width is not divisible by its head count");
    m->merge = weights_get_int(g, KEY_TP_DOWNSAMPLE, 1, 16, 2);
    m->out_grid = (m->grid + m->merge - 1) / m->merge;
    m->eps = weights_get_float(g, KEY_V_LN_EPS, 0.0f, 1.0f, 1e-6f);
    tiles_read(g, m->image_size, 9, &m->tiles);
    if (m->tiles.tile_size != m->image_size) return weights_fail(L, "the tile size differs from the vision model's 384 view");
    if (!candidates_match(g, m->tiles.tile_size, m->tiles.max_tiles))
        return weights_fail(L, KEY_TP_CANDIDATES " is not every canvas of up to preproc_max_tiles tiles in the published "
                       "order (the only tiling this build makes)");
    const int64_t C = m->width, P = m->patch, M4 = (int64_t)C * m->merge * m->merge, E = m->n_embd;
    m->patch_w = weights_load(L, TN_V_PATCH_W, P, P, 3, C);
    m->patch_b = weights_load_f32(L, TN_V_PATCH_B, C, 1, 1, 1);
    m->pos = weights_load_f32(L, TN_V_POS, C, n_pos, 1, 1);
    vit_load_layers(L, C, m->layers, m->n_layers);
    m->post_w = weights_load_f32(L, TN_V_POST_LN_W, C, 1, 1, 1);
    m->post_b = weights_load_f32(L, TN_V_POST_LN_B, C, 1, 1, 1);
    m->mm0_w = weights_load(L, TN_MM_0_W, M4, -1, 1, 1);
    if (!L->failed) {
        const int64_t hid = m->mm0_w->ne[1];
        m->mm0_b = weights_load_f32(L, TN_MM_0_B, hid, 1, 1, 1);
        m->mm2_w = weights_load(L, TN_MM_2_W, hid, E, 1, 1);
    }
    m->mm2_b = weights_load_f32(L, TN_MM_2_B, E, 1, 1, 1);
    m->newline = weights_load_f32(L, TN_V_NEWLINE, E, 1, 1, 1);
    m->separator = weights_load_f32(L, TN_V_SEPARATOR, E, -1, 1, 1);
    return L->failed ? (L->err ? L->err->status : TP_ERR_FORMAT) : TP_OK;
}

static void free_model(void *m) { free(m); }

static int64_t n_embd(const void *model) { return ((const vl2_vision *)model)->n_embd; }

/* "auto": the global view (ImageOps.pad to 384) and the best-fit canvas cut into 384 tiles (always at least
 * one, as the official processor); "global": the global view and one tile, as the official processor makes
 * every image of a prompt with more than two images (the tile is the global view again). */
static int modes(const void *model, vision_mode *out, int cap) {
    const vl2_vision *m = model;
    const int32_t S = m->image_size;
    tp_preprocess_params tiled = tiles_preprocess(&m->tiles, TP_FIT_PAD, S, S);
    tiled.tile_rule = TP_TILES_BEST_FIT;
    tp_preprocess_params one = tiled;
    one.max_tiles = 1;
    one.min_tiles = 1;
    const vision_mode all[] = {{"auto", tiled}, {"global", one}};
    int n = (int)(sizeof all / sizeof all[0]);
    for (int i = 0; i < n && i < cap; i++) out[i] = all[i];
    return n;
}

static bool view_ok(const void *model, int width, int height) {
    const vl2_vision *m = model;
    return width == m->image_size && height == m->image_size;
}

/* [global 14×(14 + 1) ; separator ; tiles (14·rows)×(14·cols + 1)]: a page is its tiles then its global view */
static int64_t page_n_tokens(const void *model, const tp_page_views *page) {
    const vl2_vision *m = model;
    if (page->n_views < 2) return -1; /* every page has at least one tile */
    const int64_t n = m->out_grid;
    return n * (n + 1) + 1 + (n * page->grid_rows) * (n * page->grid_cols + 1);
}

static void build(const void *model, tp_context *ctx, const view_group *groups, int n_groups, bool keep_stages,
                  vision_graph *out) {
    const vl2_vision *m = model;
    const int64_t C = m->width, H = m->n_heads, D = C / H, P = m->patch, g = m->grid, M = m->merge;
    const int64_t G = m->out_grid, gp = G * M; /* the grid zero-padded to a multiple of the merge */
    for (int gi = 0; gi < n_groups; gi++) { /* one group: every view is image_size */
        const view_group *vg = &groups[gi];
        const int64_t B = vg->n_views, n = g * g;
        tp_tensor *x = tp_conv2d(ctx, vg->pixels, m->patch_w, m->patch_b, (int)P, (int)P, 0, 0); /* [C, g, g, B] */
        x = tp_add(ctx, gu_reshape3(ctx, x, C, n, B), m->pos);                                  /* [C, n, B] */
        vit_params vp = {.n_heads = H, .eps = m->eps, .act = VIT_GELU_TANH, .attention = tp_attention_default_opts()};
        vp.attention.scale = 1.0f / sqrtf((float)D);
        for (int i = 0; i < m->n_layers; i++) x = vit_layer_build(ctx, x, &m->layers[i], &vp);
        x = tp_layer_norm(ctx, x, m->post_w, m->post_b, m->eps);
        if (keep_stages) out->stages[0][gi] = x; /* [C, g·g, B] */
        /* zero-pad g×g to gp×gp (bottom, right), then each M×M block's C·M² values channel-major: c·M² + dy·M + dx */
        tp_tensor *y = gu_reshape4(ctx, x, C, g, g, B);
        if (gp != g) {
            int before[4] = {0, 0, 0, 0}, after[4] = {0, (int)(gp - g), (int)(gp - g), 0};
            y = tp_pad(ctx, y, before, after);
        }
        y = gu_reshape4(ctx, y, C, M, G, gp * B);                          /* (c, dx, bx, y·b) */
        y = tp_cont(ctx, tp_permute(ctx, y, 1, 0, 2, 3));                  /* (dx, c, bx, y·b) */
        y = gu_reshape4(ctx, y, M * C, G, M, G * B);                       /* (dx·c, bx, dy, by·b) */
        y = tp_cont(ctx, tp_permute(ctx, y, 0, 2, 1, 3));                  /* (dx·c, dy, bx, by·b) */
        y = gu_reshape4(ctx, y, M, C, M, G * G * B);                       /* (dx, c, dy, blocks) */
        y = tp_cont(ctx, tp_permute(ctx, y, 0, 2, 1, 3));                  /* (dx, dy, c, blocks) */
        y = gu_reshape2(ctx, y, C * M * M, G * G * B);
        y = tp_linear(ctx, m->mm0_w, y, m->mm0_b, TP_ACT_GELU);
        out->tokens[gi] = gu_reshape3(ctx, gu_linear(ctx, y, m->mm2_w, m->mm2_b), m->n_embd, G * G, B);
    }
    if (keep_stages) {
        out->n_stages = 1;
        out->stage_names[0] = "siglip"; /* [729, C] per view: after the final LayerNorm */
    }
}

static void layout(const void *model, const tp_page_views *page, const float *const *view_rows, float *out) {
    const vl2_vision *m = model;
    const int64_t E = m->n_embd, n = m->out_grid;
    const float *newline = tp_tensor_data(m->newline);
    /* [global + newlines ; separator ; tiles woven into one grid + newlines]: the global view FIRST */
    out = tiles_weave(out, view_rows + page->n_views - 1, 1, 1, n, E, newline);
    memcpy(out, tp_tensor_data(m->separator), (size_t)E * sizeof(float));
    tiles_weave(out + E, view_rows, page->grid_cols, page->grid_rows, n, E, newline);
}

static int matrices(void *model, tp_tensor ***slots, int cap) {
    vl2_vision *m = model;
    int n = vit_matrices(m->layers, m->n_layers, slots, cap);
    if (n + 2 <= cap) {
        slots[n++] = &m->mm0_w;
        slots[n++] = &m->mm2_w;
    }
    return n;
}

static const tp_tensor *probe_matrix(const void *model) { return vit_probe(&((const vl2_vision *)model)->layers[0]); }

const vision_family deepseek_vl2_vision = {
    .name = "deepseek_vl2",
    .projector_type = "deepseekvl2",
    .no_repeat_ngram = 0, /* the official runner samples without a no-repeat rule */
    .no_repeat_window = 0,
    .prompt = &deepseek_vl2_prompt,
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
