/* vision.c - PaddleOCR-VL's vision family (projector type "paddleocr"): a NaViT-style SigLIP at each image's
 * own resolution. Patch embedding; the learned 27×27 position table resampled bilinearly to each image's
 * patch grid; pre-LN layers with 2-D RoPE (rows on the first quarter of the rotation pairs' frequencies,
 * columns on the second) and tanh-GELU MLPs; post-LN; the projector (LayerNorm, 2×2 merge, Linear, GELU,
 * Linear). Every image of every page in one graph: token-wise layers on one flattened matrix, attention
 * segmented per image (never across images, never an n×n matrix). One view per page, no layout tokens. */
#include "../blocks/graph_util.h"
#include "../blocks/vit.h"
#include "../vision_family.h"
#include "names.h"

#include <math.h>
#include <stdlib.h>

#define PV_MAX_LAYERS 64

typedef struct pv_vision {
    int width, n_heads, head_dim, n_layers, patch, merge, pos_grid, n_embd;
    float eps, proj_eps, rope_base;
    int64_t min_pixels, max_pixels;
    float mean[3], std[3];
    tp_tensor *patch_w, *patch_b, *pos; /* pos: [width, pos_grid²] */
    vit_layer layers[PV_MAX_LAYERS];
    tp_tensor *post_w, *post_b, *mm_norm_w, *mm_norm_b, *mm1_w, *mm1_b, *mm2_w, *mm2_b;
} pv_vision;

static tp_status load(weights_loader *L, void **out) {
    pv_vision *m = calloc(1, sizeof(*m));
    if (!m) {
        tp_error_set(L->err, TP_ERR_OUT_OF_MEMORY, "%s: out of memory", L->path);
        return TP_ERR_OUT_OF_MEMORY;
    }
    *out = m;
    const tp_gguf *g = L->g;
    m->width = (int)weights_tensor_ne(g, TN_V_PATCH_W, 3);
    m->patch = (int)weights_tensor_ne(g, TN_V_PATCH_W, 0);
    int64_t n_pos = weights_tensor_ne(g, TN_V_POS, 1);
    m->n_layers = weights_count_blocks(g, TN_V_Q_W, PV_MAX_LAYERS);
    m->n_embd = (int)weights_tensor_ne(g, TN_MM_2_W, 1);
    if (m->width <= 0 || m->patch <= 0 || n_pos <= 0 || m->n_layers == 0 || m->n_embd <= 0)
        return weights_fail(L, "a PaddleOCR-VL vision tensor is missing (patch/position embedding, layers or projector)");
    m->pos_grid = (int)lround(sqrt((double)n_pos));
    if ((int64_t)m->pos_grid * m->pos_grid != n_pos) return weights_fail(L, TN_V_POS " does not hold a square of rows");
    m->n_heads = weights_get_int(g, KEY_V_HEAD_COUNT, 1, 4096, 16);
    if (m->width % m->n_heads != 0 || (m->width / m->n_heads) % 4 != 0)
        return weights_fail(L, "the vision width is not divisible by its head count, or the head size by 4 (2-D RoPE)");
    m->head_dim = m->width / m->n_heads;
    m->merge = weights_get_int(g, KEY_TP_MERGE_SIZE, 1, 16, 2);
    m->eps = weights_get_float(g, KEY_V_LN_EPS, 0.0f, 1.0f, 1e-6f);
    m->proj_eps = weights_get_float(g, KEY_TP_PROJ_EPS, 0.0f, 1.0f, 1e-5f);
    m->rope_base = weights_get_float(g, KEY_TP_VISION_ROPE_BASE, 1.0f, 1e30f, 10000.0f);
    m->min_pixels = weights_get_int(g, KEY_V_MIN_PIXELS, 1, TP_IMAGE_MAX_PIXELS, 147384);
    m->max_pixels = weights_get_int(g, KEY_V_MAX_PIXELS, (int)m->min_pixels, TP_IMAGE_MAX_PIXELS, 2822400);
    weights_image_norm(g, m->mean, m->std);
    const int64_t C = m->width, P = m->patch, M4 = (int64_t)C * m->merge * m->merge, E = m->n_embd;
    m->patch_w = weights_load(L, TN_V_PATCH_W, P, P, 3, C);
    m->patch_b = weights_load_f32(L, TN_V_PATCH_B, C, 1, 1, 1);
    m->pos = weights_load_f32(L, TN_V_POS, C, n_pos, 1, 1);
    vit_load_layers(L, C, m->layers, m->n_layers);
    m->post_w = weights_load_f32(L, TN_V_POST_LN_W, C, 1, 1, 1);
    m->post_b = weights_load_f32(L, TN_V_POST_LN_B, C, 1, 1, 1);
    m->mm_norm_w = weights_load_f32(L, TN_MM_INPUT_NORM_W, C, 1, 1, 1);
    m->mm_norm_b = weights_load_f32(L, TN_MM_INPUT_NORM_B, C, 1, 1, 1);
    m->mm1_w = weights_load(L, TN_MM_1_W, M4, M4, 1, 1);
    m->mm1_b = weights_load_f32(L, TN_MM_1_B, M4, 1, 1, 1);
    m->mm2_w = weights_load(L, TN_MM_2_W, M4, E, 1, 1);
    m->mm2_b = weights_load_f32(L, TN_MM_2_B, E, 1, 1, 1);
    return L->failed ? (L->err ? L->err->status : TP_ERR_FORMAT) : TP_OK;
}

static void free_model(void *m) { free(m); }

static int64_t n_embd(const void *model) { return ((const pv_vision *)model)->n_embd; }

/* One mode, "auto": the image at its own aspect (smart_resize to multiples of patch · merge). */
static int modes(const void *model, vision_mode *out, int cap) {
    const pv_vision *m = model;
    if (cap < 1) return 1;
    tp_preprocess_params p = tp_preprocess_default_params();
    p.fit = TP_FIT_NATIVE;
    p.factor = m->patch * m->merge;
    p.view_size = p.factor;
    p.tile_size = 0;
    p.min_pixels = m->min_pixels;
    p.max_pixels = m->max_pixels;
    memcpy(p.image_mean, m->mean, sizeof p.image_mean);
    memcpy(p.image_std, m->std, sizeof p.image_std);
    out[0] = (vision_mode){"auto", p};
    return 1;
}

static bool view_ok(const void *model, int width, int height) {
    const pv_vision *m = model;
    const int unit = m->patch * m->merge;
    return width > 0 && height > 0 && width % unit == 0 && height % unit == 0 &&
           (int64_t)width * height <= TP_IMAGE_MAX_PIXELS;
}

static int64_t page_n_tokens(const void *model, const tp_page_views *page) {
    const pv_vision *m = model;
    if (page->n_views != 1) return -1;
    const int unit = m->patch * m->merge;
    return (int64_t)(page->views[0].width / unit) * (page->views[0].height / unit);
}

/* The position table resampled (bilinear, align_corners=False) to a gw × gh patch grid: [C, gw, gh]. */
static tp_tensor *positions(tp_context *ctx, const pv_vision *m, int64_t gw, int64_t gh) {
    const int64_t C = m->width, g = m->pos_grid;
    tp_tensor *grid = gu_reshape4(ctx, m->pos, C, g, g, 1);
    if (gw == g && gh == g) return grid;
    tp_tensor *whc = tp_cont(ctx, tp_permute(ctx, grid, 2, 0, 1, 3)); /* [g, g, C] */
    tp_tensor *r = tp_interpolate(ctx, whc, gw, gh, TP_INTERP_BILINEAR);
    return tp_cont(ctx, tp_permute(ctx, r, 1, 2, 0, 3));
}

/* 2-D RoPE: pairs 0..D/4 turn with the row, D/4..D/2 with the column, both on base^(-2j/(D/2)) */
typedef struct pv_rope {
    tp_tensor *pos; /* I32 [n_tok, 2]: each patch's row, then column */
    int head_dim;
    float base;
} pv_rope;

static tp_tensor *rope_2d(tp_context *ctx, tp_tensor *qk, const void *data) {
    const pv_rope *r = data;
    const int32_t sections[2] = {r->head_dim / 4, r->head_dim / 4};
    return tp_rope_multi(ctx, qk, r->pos, r->head_dim, r->base, sections, 2, r->head_dim / 2, true);
}

static void build(const void *model, tp_context *ctx, const view_group *groups, int n_groups, bool keep_stages,
                  vision_graph *out) {
    const pv_vision *m = model;
    const int64_t C = m->width, D = m->head_dim, H = m->n_heads, P = m->patch, M = m->merge;
    tp_tensor *parts[TP_VISION_MAX_GROUPS] = {0};
    int64_t n_tok = 0, n_views = 0;
    for (int gi = 0; gi < n_groups; gi++) {
        n_tok += (int64_t)(groups[gi].width / P) * (groups[gi].height / P) * groups[gi].n_views;
        n_views += groups[gi].n_views;
    }
    /* every patch's (row, col), and each image's token range */
    int64_t pne[2] = {n_tok, 2}, n_seg = n_views + 1;
    tp_tensor *pos = tp_new_tensor(ctx, TP_TYPE_I32, 2, pne);
    tp_tensor *segments = tp_new_tensor(ctx, TP_TYPE_I32, 1, &n_seg);
    if (!pos || !segments) return;
    int32_t *pd = tp_tensor_data(pos), *seg = tp_tensor_data(segments);
    int64_t t = 0, s = 0;
    seg[s++] = 0;
    for (int gi = 0; gi < n_groups; gi++) {
        const view_group *g = &groups[gi];
        const int64_t gw = g->width / P, gh = g->height / P;
        tp_tensor *x = tp_conv2d(ctx, g->pixels, m->patch_w, m->patch_b, (int)P, (int)P, 0, 0); /* [C, gw, gh, B] */
        x = tp_add(ctx, x, positions(ctx, m, gw, gh));
        if (keep_stages) out->stages[0][gi] = x;
        parts[gi] = gu_reshape2(ctx, x, C, gw * gh * g->n_views);
        for (int64_t v = 0; v < g->n_views; v++) {
            for (int64_t r = 0; r < gh; r++)
                for (int64_t c = 0; c < gw; c++, t++) {
                    pd[t] = (int32_t)r;
                    pd[n_tok + t] = (int32_t)c;
                }
            seg[s++] = (int32_t)t;
        }
    }
    tp_tensor *x = gu_concat_n(ctx, parts, n_groups, 1); /* [C, n_tok] */
    const pv_rope rope = {pos, (int)D, m->rope_base};
    vit_params vp = {.n_heads = H, .eps = m->eps, .act = VIT_GELU_TANH, .attention = tp_attention_default_opts(),
                     .rope = rope_2d, .rope_data = &rope};
    vp.attention.scale = 1.0f / sqrtf((float)D);
    vp.attention.segments = n_views > 1 ? segments : NULL;
    for (int i = 0; i < m->n_layers; i++) x = vit_layer_build(ctx, x, &m->layers[i], &vp);
    x = tp_layer_norm(ctx, x, m->post_w, m->post_b, m->eps);
    /* the projector, per group: LayerNorm, then each M×M block's patches side by side, row by row */
    int64_t first = 0;
    for (int gi = 0; gi < n_groups; gi++) {
        const view_group *g = &groups[gi];
        const int64_t gw = g->width / P, gh = g->height / P, B = g->n_views, n = gw * gh * B;
        tp_tensor *enc = gu_cols(ctx, x, first, n);
        if (keep_stages) out->stages[1][gi] = gu_reshape3(ctx, tp_cont(ctx, enc), C, gw * gh, B);
        tp_tensor *y = tp_layer_norm(ctx, tp_cont(ctx, enc), m->mm_norm_w, m->mm_norm_b, m->proj_eps);
        y = gu_reshape4(ctx, y, C * M, gw / M, M, (gh / M) * B);   /* [M·C (columns), gw/M, M (rows), gh/M·B] */
        y = tp_cont(ctx, tp_permute(ctx, y, 0, 2, 1, 3));          /* [M·C, M, gw/M, gh/M·B] */
        y = gu_reshape2(ctx, y, C * M * M, (gw / M) * (gh / M) * B);
        y = tp_linear(ctx, m->mm1_w, y, m->mm1_b, TP_ACT_GELU);
        out->tokens[gi] = gu_reshape3(ctx, gu_linear(ctx, y, m->mm2_w, m->mm2_b), m->n_embd, (gw / M) * (gh / M), B);
        first += n;
    }
    if (keep_stages) {
        out->n_stages = 2;
        out->stage_names[0] = "embed";   /* [gh·gw, C] per view: patch + position embeddings */
        out->stage_names[1] = "encoder"; /* [gh·gw, C] per view: after the post-LayerNorm */
    }
}

static void layout(const void *model, const tp_page_views *page, const float *const *view_rows, float *out) {
    const pv_vision *m = model;
    memcpy(out, view_rows[0], (size_t)page_n_tokens(m, page) * (size_t)m->n_embd * sizeof(float));
}

static int matrices(void *model, tp_tensor ***slots, int cap) {
    pv_vision *m = model;
    int n = vit_matrices(m->layers, m->n_layers, slots, cap);
    if (n + 2 <= cap) {
        slots[n++] = &m->mm1_w;
        slots[n++] = &m->mm2_w;
    }
    return n;
}

static const tp_tensor *probe_matrix(const void *model) { return vit_probe(&((const pv_vision *)model)->layers[0]); }

const vision_family paddleocr_vl_vision = {
    .name = "paddleocr_vl",
    .projector_type = "paddleocr",
    .no_repeat_ngram = 0, /* the official runner decodes greedily without a no-repeat rule */
    .no_repeat_window = 0,
    .prompt = &paddleocr_vl_prompt,
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
