/* vision_encode.c - the public vision API: load a vision GGUF, encode pages in one pass (views
 * grouped by size into one graph, built once per set of sizes and reused), projector, and the
 * DeepSeek-OCR v1 token layout (tiles woven into one grid + newlines, global view + newlines,
 * view separator). */
#include "vision.h"
#include "vision_load.h"

#include <stdio.h>
#include <stdlib.h>

#define MAX_GROUPS 8

struct tp_vision_model {
    char path[1024];
    tp_vision_params params;
    tp_gguf *gguf;
    vision_hparams hp;
    tp_threadpool *pool;
    vision_q8 q8; /* TP_PRECISION_INT8: the matrices as Q8_0 (else empty) */

    /* the cached graph and what it was built for */
    tp_context *ctx;
    tp_graph *graph;
    int n_groups;
    view_group groups[MAX_GROUPS];
    tp_tensor *sam_out[MAX_GROUPS], *clip_out[MAX_GROUPS], *proj_out[MAX_GROUPS];
    /* per view of the last encode: its group and index inside the group */
    int32_t n_views;
    int32_t *view_group_of, *view_index_of;
    size_t last_compute_bytes;
};

tp_vision_params tp_vision_default_params(void) {
    tp_vision_params p;
    p.n_threads = 1;
    p.cpu_path = -1;
    p.precision = TP_PRECISION_F32;
    p.keep_stages = false;
    return p;
}

tp_status tp_vision_load(const char *path, const tp_vision_params *params, tp_vision_model **out,
                         tp_error *err) {
    if (!path || !out) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_vision_load: path and out must not be NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    tp_vision_model *m = calloc(1, sizeof(*m));
    if (!m) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_vision_load: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    snprintf(m->path, sizeof m->path, "%s", path);
    m->params = params ? *params : tp_vision_default_params();
    tp_status st = tp_gguf_open(path, &m->gguf, err);
    if (st == TP_OK) st = vision_read_hparams(m->gguf, path, &m->hp, err);
    if (st == TP_OK && m->params.precision != -1 && m->params.precision != TP_PRECISION_F32 &&
        m->params.precision != TP_PRECISION_BF16 && m->params.precision != TP_PRECISION_INT8) {
        st = TP_ERR_INVALID_ARGUMENT;
        tp_error_set(err, st, "tp_vision_load: precision %d is not -1 (auto), 0 (f32), 1 (bf16) or 2 (int8)",
                     m->params.precision);
    }
    if (st == TP_OK) {
        tp_threadpool_params tpp = tp_threadpool_default_params();
        tpp.n_threads = m->params.n_threads;
        st = tp_threadpool_create(&tpp, &m->pool, err);
    }
    if (st == TP_OK) {
        /* check every weight once now, so that encode cannot meet a bad file */
        tp_context *probe = NULL;
        st = tp_context_create(NULL, &probe, err);
        vision_weights w;
        if (st == TP_OK) st = vision_load_weights(m->gguf, path, &m->hp, probe, &w, err);
        /* auto: an F32 file asks for F32 arithmetic; a file already rounded (F16/BF16/quantised) gets
         * the BF16 products, as the KV cache's auto gets F16 (see tilepass.h) */
        if (st == TP_OK && m->params.precision == -1)
            m->params.precision = w.sam[0].qkv_w->type == TP_TYPE_F32 ? TP_PRECISION_F32 : TP_PRECISION_BF16;
        if (st == TP_OK && m->params.precision == TP_PRECISION_INT8)
            st = vision_q8_make(&w, &m->hp, m->pool, &m->q8, err);
        tp_context_free(probe);
    }
    if (st != TP_OK) {
        tp_vision_free(m);
        return st;
    }
    *out = m;
    return TP_OK;
}

static void drop_graph(tp_vision_model *m) {
    tp_context_free(m->ctx); /* frees the graph too */
    m->ctx = NULL;
    m->graph = NULL;
    m->n_groups = 0;
}

void tp_vision_free(tp_vision_model *m) {
    if (!m) return;
    drop_graph(m);
    tp_threadpool_free(m->pool);
    vision_q8_free(&m->q8);
    tp_gguf_close(m->gguf);
    free(m->view_group_of);
    free(m->view_index_of);
    free(m);
}

tp_status tp_vision_get_info(const tp_vision_model *m, tp_vision_info *out) {
    if (!m || !out) return TP_ERR_INVALID_ARGUMENT;
    const vision_hparams *hp = &m->hp;
    out->image_size = hp->image_size;
    out->tile_size = hp->tile_size;
    out->patch_size = hp->patch_size;
    out->window_size = hp->window_size;
    out->downsample = hp->downsample;
    out->min_tiles = hp->min_tiles;
    out->max_tiles = hp->max_tiles;
    out->pad_color = hp->pad_color;
    out->n_embd = hp->n_embd;
    for (int c = 0; c < 3; c++) {
        out->image_mean[c] = hp->mean[c];
        out->image_std[c] = hp->std[c];
    }
    out->precision = m->params.precision;
    return TP_OK;
}

/* A view side is valid when it is a positive multiple of patch·downsample, up to 4096 pixels. */
static bool valid_side(const vision_hparams *hp, int32_t side) {
    int unit = hp->patch_size * hp->downsample;
    return side > 0 && side <= 4096 && side % unit == 0;
}

static bool valid_page(const vision_hparams *hp, const tp_page_views *p) {
    if (!p || !p->global_view || !valid_side(hp, p->global_size)) return false;
    if (p->n_tiles < 0 || p->n_tiles > 64) return false;
    if (p->n_tiles == 0) return true;
    return p->tiles && valid_side(hp, p->tile_size) && p->grid_cols > 0 && p->grid_rows > 0 &&
           p->grid_cols * p->grid_rows == p->n_tiles;
}

int64_t tp_vision_page_n_tokens(const tp_vision_model *m, const tp_page_views *page) {
    if (!m || !valid_page(&m->hp, page)) return -1;
    int unit = m->hp.patch_size * m->hp.downsample;
    int64_t g = page->global_size / unit;
    int64_t n = g * (g + 1) + 1;
    if (page->n_tiles > 0) {
        int64_t t = page->tile_size / unit;
        n += (page->grid_rows * t) * (page->grid_cols * t + 1);
    }
    return n;
}

/* Group the views of the pages by side (in order of first appearance) and number them. */
static tp_status plan_groups(tp_vision_model *m, const tp_page_views *pages, int32_t n_pages,
                             view_group *groups, int *n_groups, tp_error *err) {
    int32_t n_views = 0;
    for (int32_t p = 0; p < n_pages; p++) n_views += pages[p].n_tiles + 1;
    int32_t *gof = realloc(m->view_group_of, (size_t)n_views * sizeof(int32_t));
    if (gof) m->view_group_of = gof;
    int32_t *iof = gof ? realloc(m->view_index_of, (size_t)n_views * sizeof(int32_t)) : NULL;
    if (iof) m->view_index_of = iof;
    if (!gof || !iof) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_vision_encode: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    m->n_views = n_views;
    *n_groups = 0;
    int32_t v = 0;
    for (int32_t p = 0; p < n_pages; p++) {
        for (int32_t t = 0; t <= pages[p].n_tiles; t++, v++) {
            int32_t side = t < pages[p].n_tiles ? pages[p].tile_size : pages[p].global_size;
            int gi = 0;
            while (gi < *n_groups && groups[gi].side != side) gi++;
            if (gi == *n_groups) {
                if (gi == MAX_GROUPS) {
                    tp_error_set(err, TP_ERR_UNSUPPORTED, "tp_vision_encode: more than %d view sizes in one call",
                                 MAX_GROUPS);
                    return TP_ERR_UNSUPPORTED;
                }
                memset(&groups[gi], 0, sizeof(groups[gi]));
                groups[gi].side = side;
                groups[gi].grid = side / m->hp.patch_size;
                groups[gi].out_grid = groups[gi].grid / m->hp.downsample;
                (*n_groups)++;
            }
            m->view_group_of[v] = gi;
            m->view_index_of[v] = groups[gi].n_views++;
        }
    }
    return TP_OK;
}

static tp_status build_graph(tp_vision_model *m, const view_group *groups, int n_groups, tp_error *err) {
    drop_graph(m);
    tp_context_params cp = tp_context_default_params();
    cp.cpu_path = m->params.cpu_path;
    /* int8: Q8_0 matrices take the int8 GEMM whatever the context's precision; the rest is BF16 */
    cp.precision = m->params.precision == TP_PRECISION_INT8 ? TP_PRECISION_BF16 : m->params.precision;
    tp_status st = tp_context_create(&cp, &m->ctx, err);
    if (st != TP_OK) return st;
    tp_context *ctx = m->ctx;
    vision_weights w;
    st = vision_load_weights(m->gguf, m->path, &m->hp, ctx, &w, err);
    if (st != TP_OK) return st;
    if (m->params.precision == TP_PRECISION_INT8) vision_q8_apply(ctx, &w, &m->hp, &m->q8);
    m->n_groups = n_groups;
    for (int gi = 0; gi < n_groups; gi++) {
        m->groups[gi] = groups[gi];
        int64_t ne[4] = {3, groups[gi].side, groups[gi].side, groups[gi].n_views};
        m->groups[gi].pixels = tp_new_tensor(ctx, TP_TYPE_F32, 4, ne);
    }
    vision_build_sam(ctx, &m->hp, &w, m->groups, n_groups, m->sam_out);
    vision_build_clip(ctx, &m->hp, &w, m->groups, n_groups, m->sam_out, m->clip_out);
    const int64_t F = m->hp.clip_width;
    m->graph = tp_graph_new(ctx);
    for (int gi = 0; gi < n_groups; gi++) {
        const view_group *g = &m->groups[gi];
        tp_tensor *c = m->clip_out[gi];
        int64_t hw = (int64_t)g->out_grid * g->out_grid;
        tp_tensor *patches = NULL, *sam = NULL;
        if (c) {
            /* CLIP tokens without CLS, then SAM's, side by side: [F + N, hw, B] */
            int64_t ne[3] = {F, hw, g->n_views};
            size_t nb[3] = {c->nb[0], c->nb[1], c->nb[2]};
            patches = tp_view(ctx, c, 3, ne, nb, c->nb[1]);
            sam = vision_reshape3(ctx, m->sam_out[gi], m->hp.sam_out, hw, g->n_views);
        }
        tp_tensor *features = tp_concat(ctx, patches, sam, 0);
        m->proj_out[gi] = vision_linear(ctx, features, w.fc_w, w.fc_b);
        tp_graph_add_output(m->graph, m->proj_out[gi]);
        if (m->params.keep_stages) {
            tp_graph_add_output(m->graph, m->sam_out[gi]);
            tp_graph_add_output(m->graph, m->clip_out[gi]);
        }
    }
    st = tp_context_status(ctx);
    if (st == TP_OK) st = tp_graph_plan(m->graph);
    if (st != TP_OK) {
        tp_error_set(err, st, "%s: building the vision graph: %s", m->path, tp_context_error(ctx));
        drop_graph(m);
        return st;
    }
    return TP_OK;
}

static bool same_groups(const tp_vision_model *m, const view_group *groups, int n_groups) {
    if (!m->graph || m->n_groups != n_groups) return false;
    for (int gi = 0; gi < n_groups; gi++)
        if (m->groups[gi].side != groups[gi].side || m->groups[gi].n_views != groups[gi].n_views) return false;
    return true;
}

/* Copy one view's [n, n_embd] projected tokens into place. */
static const float *proj_rows(const tp_vision_model *m, int32_t view) {
    int gi = m->view_group_of[view];
    const tp_tensor *p = m->proj_out[gi];
    return (const float *)((const char *)p->data + (size_t)m->view_index_of[view] * p->nb[2]);
}

static void layout_page(const tp_vision_model *m, const tp_page_views *page, int32_t first_view,
                        const float *newline, const float *separator, float *out) {
    const int64_t E = m->hp.n_embd;
    const size_t row = (size_t)E * sizeof(float);
    if (page->n_tiles > 0) {
        int unit = m->hp.patch_size * m->hp.downsample;
        int64_t t = page->tile_size / unit;
        for (int32_t r = 0; r < page->grid_rows; r++) {
            for (int64_t y = 0; y < t; y++) {
                for (int32_t c = 0; c < page->grid_cols; c++) {
                    const float *src = proj_rows(m, first_view + r * page->grid_cols + c) + y * t * E;
                    memcpy(out, src, (size_t)t * row);
                    out += t * E;
                }
                memcpy(out, newline, row);
                out += E;
            }
        }
    }
    int32_t gv = first_view + page->n_tiles;
    int64_t g = m->groups[m->view_group_of[gv]].out_grid;
    const float *src = proj_rows(m, gv);
    for (int64_t y = 0; y < g; y++) {
        memcpy(out, src + y * g * E, (size_t)g * row);
        out += g * E;
        memcpy(out, newline, row);
        out += E;
    }
    memcpy(out, separator, row);
}

tp_status tp_vision_encode(tp_vision_model *m, const tp_page_views *pages, int32_t n_pages,
                           float *const *out_tokens, tp_error *err) {
    if (!m || !pages || !out_tokens || n_pages <= 0) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_vision_encode: NULL argument or no pages");
        return TP_ERR_INVALID_ARGUMENT;
    }
    for (int32_t p = 0; p < n_pages; p++) {
        if (!valid_page(&m->hp, &pages[p]) || !out_tokens[p]) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                         "tp_vision_encode: page %d: invalid views (global %d px, %d tiles of %d px, grid %dx%d; "
                         "sides must be multiples of %d up to 4096)",
                         p, pages[p].global_size, pages[p].n_tiles, pages[p].tile_size, pages[p].grid_cols,
                         pages[p].grid_rows, m->hp.patch_size * m->hp.downsample);
            return TP_ERR_INVALID_ARGUMENT;
        }
    }
    view_group groups[MAX_GROUPS];
    int n_groups = 0;
    tp_status st = plan_groups(m, pages, n_pages, groups, &n_groups, err);
    if (st != TP_OK) return st;
    if (!same_groups(m, groups, n_groups)) {
        st = build_graph(m, groups, n_groups, err);
        if (st != TP_OK) return st;
    }
    /* pixels into the group inputs */
    int32_t v = 0;
    for (int32_t p = 0; p < n_pages; p++) {
        for (int32_t t = 0; t <= pages[p].n_tiles; t++, v++) {
            const view_group *g = &m->groups[m->view_group_of[v]];
            size_t n = (size_t)3 * g->side * g->side;
            const float *src = t < pages[p].n_tiles ? pages[p].tiles + (size_t)t * n : pages[p].global_view;
            memcpy((float *)g->pixels->data + (size_t)m->view_index_of[v] * n, src, n * sizeof(float));
        }
    }
    st = tp_graph_compute(m->graph, m->pool);
    if (st != TP_OK) {
        tp_error_set(err, st, "%s: encoding: %s", m->path, tp_context_error(m->ctx));
        return st;
    }
    m->last_compute_bytes = tp_graph_peak_bytes(m->graph);
    /* newline and separator as floats (they may be stored as F16 in some files) */
    const int64_t E = m->hp.n_embd;
    float *specials = malloc(2 * (size_t)E * sizeof(float));
    if (!specials) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_vision_encode: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    int64_t inl = tp_gguf_find_tensor(m->gguf, "v.image_newline");
    int64_t isep = tp_gguf_find_tensor(m->gguf, "v.view_seperator");
    tp_row_to_f32((tp_type)tp_gguf_tensor_type(m->gguf, inl), tp_gguf_tensor_data(m->gguf, inl), specials, E);
    tp_row_to_f32((tp_type)tp_gguf_tensor_type(m->gguf, isep), tp_gguf_tensor_data(m->gguf, isep), specials + E, E);
    int32_t first = 0;
    for (int32_t p = 0; p < n_pages; p++) {
        layout_page(m, &pages[p], first, specials, specials + E, out_tokens[p]);
        first += pages[p].n_tiles + 1;
    }
    free(specials);
    return TP_OK;
}

tp_status tp_vision_get_stage(const tp_vision_model *m, const char *stage, int32_t view, float *dst,
                              int64_t n, int64_t *n_out, tp_error *err) {
    if (!m || !stage) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_vision_get_stage: NULL argument");
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (!m->graph || !m->params.keep_stages || view < 0 || view >= m->n_views) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                     "tp_vision_get_stage: no stage outputs for view %d (encode with keep_stages first)", view);
        return TP_ERR_INVALID_ARGUMENT;
    }
    int gi = m->view_group_of[view];
    int64_t idx = m->view_index_of[view];
    const tp_tensor *t;
    if (strcmp(stage, "sam") == 0) t = m->sam_out[gi];
    else if (strcmp(stage, "clip") == 0) t = m->clip_out[gi];
    else if (strcmp(stage, "proj") == 0) t = m->proj_out[gi];
    else {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_vision_get_stage: unknown stage '%s'", stage);
        return TP_ERR_INVALID_ARGUMENT;
    }
    /* every stage tensor is contiguous with the view as its last dim */
    int64_t per_view = tp_nelements(t) / t->ne[t->n_dims - 1];
    if (n_out) *n_out = per_view;
    if (!dst) return TP_OK;
    if (n < per_view) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_vision_get_stage: buffer of %lld floats, need %lld",
                     (long long)n, (long long)per_view);
        return TP_ERR_INVALID_ARGUMENT;
    }
    memcpy(dst, (const float *)t->data + idx * per_view, (size_t)per_view * sizeof(float));
    return TP_OK;
}

size_t tp_vision_last_compute_bytes(const tp_vision_model *m) { return m ? m->last_compute_bytes : 0; }

void tp_vision_trim(tp_vision_model *m) {
    if (!m) return;
    drop_graph(m);
    m->n_views = 0;
    tp_gguf_drop_pages(m->gguf);
}
