/* vision.c - DeepSeek-OCR-2's vision family (projector type "deepseekocr2"): SAM (net_3 to the encoder
 * width) -> a Qwen2-shaped encoder over [SAM tokens ; learned queries] with the causal-flow mask -> the
 * final-normed query positions -> a linear projector. Page layout: [tile_1 ... tile_k ; global ;
 * separator], no newlines. Every view of every page runs in one graph: token-wise layers on one flattened
 * matrix, attention per group of same-size views with the views on the batch dimension. */
#include "../blocks/graph_util.h"
#include "../blocks/sam.h"
#include "../blocks/tiles.h"
#include "names.h"

#include <math.h>
#include <stdlib.h>

#define ENC_MAX_LAYERS 64

typedef struct enc_layer {
    tp_tensor *ln1_w, *ln2_w;                  /* RMSNorm */
    tp_tensor *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w;
    tp_tensor *gate_w, *up_w, *down_w;         /* SwiGLU */
} enc_layer;

typedef struct ocr2_vision {
    sam_hparams sam_hp;
    sam_weights sam;
    tiles_params tiles;
    int width, n_layers, n_head, n_head_kv, head_dim, n_embd;
    float eps, rope_base;
    enc_layer layers[ENC_MAX_LAYERS];
    tp_tensor *post_ln_w;
    tp_tensor *query_small, *query_large; /* [width, n] for a tile / the global view */
    tp_tensor *fc_w, *fc_b, *separator;
} ocr2_vision;

static tp_status load(weights_loader *L, void **out) {
    ocr2_vision *m = calloc(1, sizeof(*m));
    if (!m) {
        tp_error_set(L->err, TP_ERR_OUT_OF_MEMORY, "%s: out of memory", L->path);
        return TP_ERR_OUT_OF_MEMORY;
    }
    *out = m;
    const tp_gguf *g = L->g;
    tp_status st = sam_load(L, &m->sam_hp, &m->sam);
    if (st != TP_OK) return st;
    m->width = m->sam_hp.out_channels;
    m->n_layers = weights_count_blocks(g, TN_V_Q_W, ENC_MAX_LAYERS);
    m->n_embd = (int)weights_tensor_ne(g, TN_MM_FC_W, 1);
    if (m->n_layers == 0 || m->n_embd <= 0) return weights_fail(L, "a DeepSeek-OCR-2 encoder or projector tensor is missing");
    m->n_head = weights_get_int(g, KEY_V_HEAD_COUNT, 1, 4096, 14);
    if (m->width % m->n_head != 0) return weights_fail(L, "the encoder width is not divisible by its head count");
    m->head_dim = m->width / m->n_head;
    /* llama.cpp writes head_count_kv as a constant: the attn_k rows are the truth */
    int64_t k_rows = weights_tensor_nef(g, 1, TN_V_K_W, 0);
    if (k_rows <= 0 || k_rows % m->head_dim != 0) return weights_fail(L, "v.blk.0.attn_k rows are not a multiple of the head size");
    m->n_head_kv = (int)(k_rows / m->head_dim);
    if (m->n_head % m->n_head_kv != 0 || m->head_dim % 2 != 0)
        return weights_fail(L, "the encoder's head counts do not divide, or its head size is odd");
    m->eps = weights_get_float(g, KEY_V_LN_EPS, 0.0f, 1.0f, 1e-6f);
    m->rope_base = weights_get_float(g, KEY_TP_ENCODER_ROPE_BASE, 1.0f, 1e30f, 1e6f);
    tiles_read(g, 768, 6, &m->tiles);
    if (m->sam_hp.image_size % m->sam_hp.downsample != 0 || m->tiles.tile_size % m->sam_hp.downsample != 0)
        return weights_fail(L, "the image or tile size is not a multiple of SAM's patch size times 4");
    const int64_t C = m->width, KV = (int64_t)m->n_head_kv * m->head_dim, E = m->n_embd;
    for (int i = 0; i < m->n_layers && !L->failed; i++) {
        enc_layer *l = &m->layers[i];
        l->ln1_w = weights_loadf_f32(L, C, 1, 1, 1, TN_V_LN1_W, i);
        l->ln2_w = weights_loadf_f32(L, C, 1, 1, 1, TN_V_LN2_W, i);
        l->q_w = weights_loadf(L, C, C, 1, 1, TN_V_Q_W, i);
        l->q_b = weights_loadf_f32(L, C, 1, 1, 1, TN_V_Q_B, i);
        l->k_w = weights_loadf(L, C, KV, 1, 1, TN_V_K_W, i);
        l->k_b = weights_loadf_f32(L, KV, 1, 1, 1, TN_V_K_B, i);
        l->v_w = weights_loadf(L, C, KV, 1, 1, TN_V_V_W, i);
        l->v_b = weights_loadf_f32(L, KV, 1, 1, 1, TN_V_V_B, i);
        l->o_w = weights_loadf(L, C, C, 1, 1, TN_V_OUT_W, i);
        l->gate_w = weights_loadf(L, C, -1, 1, 1, TN_V_FFN_GATE_W, i);
        if (L->failed) break;
        int64_t ffn = l->gate_w->ne[1];
        l->up_w = weights_loadf(L, C, ffn, 1, 1, TN_V_FFN_UP_W, i);
        l->down_w = weights_loadf(L, ffn, C, 1, 1, TN_V_FFN_DOWN_W, i);
    }
    m->post_ln_w = weights_load_f32(L, TN_V_POST_LN_W, C, 1, 1, 1);
    /* the query tables are added to a zero [C, n, B] block: F32 like the other element-wise inputs */
    m->query_small = weights_load_f32(L, TN_V_QUERY_768, C, -1, 1, 1);
    m->query_large = weights_load_f32(L, TN_V_QUERY_1024, C, -1, 1, 1);
    m->fc_w = weights_load(L, TN_MM_FC_W, C, E, 1, 1);
    m->fc_b = weights_load_f32(L, TN_MM_FC_B, E, 1, 1, 1);
    m->separator = weights_load_f32(L, TN_V_SEPARATOR, E, -1, 1, 1);
    return L->failed ? (L->err ? L->err->status : TP_ERR_FORMAT) : TP_OK;
}

static void free_model(void *m) { free(m); }

static int64_t n_embd(const void *model) { return ((const ocr2_vision *)model)->n_embd; }

/* gundam (the default, transformers' crop_to_patches=True): the global view plus tiles when the image
 * exceeds a tile; base (crop_to_patches=False): one view at the tile size. Both fit the longer side and
 * pad with offsets floored (transformers' pad_to_square). */
static int modes(const void *model, vision_mode *out, int cap) {
    const ocr2_vision *m = model;
    const int32_t S = m->sam_hp.image_size, T = m->tiles.tile_size;
    const vision_mode all[] = {
        {"gundam", tiles_preprocess(&m->tiles, TP_FIT_PAD_FLOOR, S, T)},
        {"base", tiles_preprocess(&m->tiles, TP_FIT_PAD_FLOOR, T, 0)},
    };
    int n = (int)(sizeof all / sizeof all[0]);
    for (int i = 0; i < n && i < cap; i++) out[i] = all[i];
    return n;
}

/* The query table for a view whose SAM grid has n tokens (NULL: none fits). */
static tp_tensor *queries_for(const ocr2_vision *m, int64_t n) {
    if (m->query_small && m->query_small->ne[1] == n) return m->query_small;
    if (m->query_large && m->query_large->ne[1] == n) return m->query_large;
    return NULL;
}

static int64_t view_tokens(const ocr2_vision *m, int side) {
    int64_t g = sam_out_grid(&m->sam_hp, side);
    return g * g;
}

static bool view_ok(const void *model, int width, int height) {
    const ocr2_vision *m = model;
    return width == height && sam_out_grid(&m->sam_hp, width) > 0 && queries_for(m, view_tokens(m, width));
}

static int64_t page_n_tokens(const void *model, const tp_page_views *page) {
    const ocr2_vision *m = model;
    /* the tiles (all but the last view) share one size, the one with the small query table */
    for (int32_t i = 0; i + 1 < page->n_views; i++)
        if (page->views[i].width != page->views[0].width || queries_for(m, view_tokens(m, page->views[i].width)) !=
                                                                   m->query_small)
            return -1;
    int64_t n = 1; /* the separator */
    for (int32_t i = 0; i < page->n_views; i++) n += view_tokens(m, page->views[i].width);
    return n;
}

/* The causal-flow mask of one view of n SAM tokens: SAM tokens see every SAM token and no query;
 * query i sees every SAM token and the queries up to i. [2n (keys), 2n (queries)] additive. */
static tp_tensor *flow_mask(tp_context *ctx, int64_t n) {
    int64_t ne[2] = {2 * n, 2 * n};
    tp_tensor *mask = tp_new_tensor(ctx, TP_TYPE_F32, 2, ne);
    if (!mask) return NULL;
    float *v = tp_tensor_data(mask);
    for (int64_t q = 0; q < 2 * n; q++)
        for (int64_t k = 0; k < 2 * n; k++) v[q * 2 * n + k] = (k < n || (q >= n && k <= q)) ? 0.0f : -INFINITY;
    return mask;
}

/* Self-attention of one group: x [C, 2n·B] of its views. */
static tp_tensor *group_attention(tp_context *ctx, const ocr2_vision *m, const enc_layer *l, tp_tensor *h,
                                  int64_t n2, int64_t B, tp_tensor *pos, tp_tensor *mask) {
    const int64_t D = m->head_dim, H = m->n_head, Hkv = m->n_head_kv;
    tp_tensor *q = gu_reshape4(ctx, gu_linear(ctx, h, l->q_w, l->q_b), D, H, n2, B);
    tp_tensor *k = gu_reshape4(ctx, gu_linear(ctx, h, l->k_w, l->k_b), D, Hkv, n2, B);
    tp_tensor *v = gu_reshape4(ctx, gu_linear(ctx, h, l->v_w, l->v_b), D, Hkv, n2, B);
    q = tp_rope_neox(ctx, q, pos, (int)D, m->rope_base);
    k = tp_rope_neox(ctx, k, pos, (int)D, m->rope_base);
    tp_attention_opts opts = tp_attention_default_opts();
    opts.scale = 1.0f / sqrtf((float)D);
    opts.bias = mask;
    tp_tensor *o = tp_attention(ctx, tp_permute(ctx, q, 0, 2, 1, 3), tp_permute(ctx, k, 0, 2, 1, 3),
                                tp_permute(ctx, v, 0, 2, 1, 3), &opts); /* [D, H, 2n, B] */
    return gu_reshape2(ctx, o, D * H, n2 * B);
}

static void build(const void *model, tp_context *ctx, const view_group *groups, int n_groups, bool keep_stages,
                  vision_graph *out) {
    const ocr2_vision *m = model;
    const int64_t C = m->width;
    tp_tensor *sam_out[TP_VISION_MAX_GROUPS] = {0}, *parts[TP_VISION_MAX_GROUPS] = {0};
    tp_tensor *pos[TP_VISION_MAX_GROUPS] = {0}, *mask[TP_VISION_MAX_GROUPS] = {0};
    int64_t n_of[TP_VISION_MAX_GROUPS] = {0};
    sam_build(ctx, &m->sam_hp, &m->sam, groups, n_groups, sam_out);
    /* every view's [SAM tokens ; queries], all groups side by side: [C, Σ 2n·B] */
    for (int gi = 0; gi < n_groups; gi++) {
        const int64_t n = view_tokens(m, groups[gi].width), B = groups[gi].n_views, n2 = 2 * n;
        n_of[gi] = n;
        int64_t zne[3] = {C, n, B};
        tp_tensor *queries = tp_add(ctx, tp_new_tensor(ctx, TP_TYPE_F32, 3, zne), queries_for(m, n));
        tp_tensor *x = tp_concat(ctx, gu_reshape3(ctx, sam_out[gi], C, n, B), queries, 1);
        parts[gi] = gu_reshape2(ctx, x, C, n2 * B);
        pos[gi] = tp_new_tensor(ctx, TP_TYPE_I32, 1, &n2);
        if (pos[gi])
            for (int64_t i = 0; i < n2; i++) ((int32_t *)tp_tensor_data(pos[gi]))[i] = (int32_t)i;
        mask[gi] = flow_mask(ctx, n);
    }
    tp_tensor *x = gu_concat_n(ctx, parts, n_groups, 1);
    for (int i = 0; i < m->n_layers; i++) {
        const enc_layer *l = &m->layers[i];
        tp_tensor *h = tp_rms_norm(ctx, x, l->ln1_w, m->eps);
        int64_t first = 0;
        for (int gi = 0; gi < n_groups; gi++) {
            const int64_t n2 = 2 * n_of[gi], B = groups[gi].n_views;
            tp_tensor *hg = tp_cont(ctx, gu_cols(ctx, h, first, n2 * B));
            parts[gi] = group_attention(ctx, m, l, hg, n2, B, pos[gi], mask[gi]);
            first += n2 * B;
        }
        x = tp_add(ctx, x, gu_linear(ctx, gu_concat_n(ctx, parts, n_groups, 1), l->o_w, NULL));
        h = tp_rms_norm(ctx, x, l->ln2_w, m->eps);
        tp_tensor *act = tp_mul(ctx, tp_silu(ctx, gu_linear(ctx, h, l->gate_w, NULL)), gu_linear(ctx, h, l->up_w, NULL));
        x = tp_add(ctx, x, gu_linear(ctx, act, l->down_w, NULL));
    }
    /* each view's query positions, final norm, projector */
    int64_t first = 0;
    for (int gi = 0; gi < n_groups; gi++) {
        const int64_t n = n_of[gi], B = groups[gi].n_views;
        int64_t ne[3] = {C, n, B};
        size_t nb[3] = {x->nb[0], x->nb[1], x->nb[1] * (size_t)(2 * n)};
        tp_tensor *q = tp_cont(ctx, tp_view(ctx, x, 3, ne, nb, (size_t)(first + n) * x->nb[1]));
        tp_tensor *enc = tp_rms_norm(ctx, q, m->post_ln_w, m->eps);
        out->tokens[gi] = gu_linear(ctx, enc, m->fc_w, m->fc_b);
        if (keep_stages) {
            out->stages[0][gi] = sam_out[gi];
            out->stages[1][gi] = enc;
        }
        first += 2 * n * B;
    }
    if (keep_stages) {
        out->n_stages = 2;
        out->stage_names[0] = "sam";     /* [n, C] per view, row-major grid */
        out->stage_names[1] = "encoder"; /* [n, C] per view: the final-normed query positions */
    }
}

static void layout(const void *model, const tp_page_views *page, const float *const *view_rows, float *out) {
    const ocr2_vision *m = model;
    const int64_t E = m->n_embd;
    for (int32_t i = 0; i < page->n_views; i++) {
        int64_t n = view_tokens(m, page->views[i].width);
        memcpy(out, view_rows[i], (size_t)(n * E) * sizeof(float));
        out += n * E;
    }
    memcpy(out, tp_tensor_data(m->separator), (size_t)E * sizeof(float));
}

static int matrices(void *model, tp_tensor ***slots, int cap) {
    ocr2_vision *m = model;
    int n = sam_matrices(&m->sam, &m->sam_hp, slots, cap);
    for (int i = 0; i < m->n_layers && n + 7 <= cap; i++) {
        enc_layer *l = &m->layers[i];
        tp_tensor **mine[] = {&l->q_w, &l->k_w, &l->v_w, &l->o_w, &l->gate_w, &l->up_w, &l->down_w};
        for (size_t j = 0; j < sizeof mine / sizeof mine[0]; j++) slots[n++] = mine[j];
    }
    if (n < cap) slots[n++] = &m->fc_w;
    return n;
}

static const tp_tensor *probe_matrix(const void *model) {
    return ((const ocr2_vision *)model)->sam.blocks[0].qkv_w;
}

const vision_family deepseek_ocr2_vision = {
    .name = "deepseek_ocr2",
    .projector_type = "deepseekocr2",
    .no_repeat_ngram = 20,
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
