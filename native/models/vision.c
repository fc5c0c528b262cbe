/* vision.c - the public vision API for every family: load a vision GGUF through its family
 * (models/registry.c) with the weights bound once into a weights context, encode pages in one pass (views
 * grouped by size into one graph, built in a child context once per set of sizes and reused), and lay out
 * each page's tokens through the family. A mutex makes one model safe to share between threads: calls on
 * it take turns (each one still uses the model's whole thread pool). */
#include "registry.h"
#include "names.h"
#include "tp_quants.h"
#include "tp_threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

struct tp_vision_model {
    char path[1024];
    tp_vision_params params;
    tp_gguf *gguf;
    const vision_family *family;
    void *model;       /* the family's hyperparameters and weights */
    tp_context *wctx;  /* the weights (and their Q8_0 copies for TP_PRECISION_INT8) */
    tp_threadpool *pool;
    vision_mode modes[TP_VISION_MAX_MODES];
    int n_modes;
    pthread_mutex_t lock;
    bool lock_ready;

    /* the cached graph and what it was built for */
    tp_context *ctx;
    tp_graph *graph;
    int n_groups;
    view_group groups[TP_VISION_MAX_GROUPS];
    vision_graph out;
    /* per view of the last encode: its group and index inside the group */
    int32_t n_views;
    int32_t *view_group_of, *view_index_of;
    _Atomic size_t last_compute_bytes; /* read without the lock */
};

tp_vision_params tp_vision_default_params(void) {
    tp_vision_params p;
    p.n_threads = 1;
    p.cpu_path = -1;
    p.precision = TP_PRECISION_F32;
    p.keep_stages = false;
    p.abort_callback = NULL;
    p.abort_callback_data = NULL;
    return p;
}

/* ---- TP_PRECISION_INT8: the F32/F16/BF16 weight matrices re-stored as Q8_0 once, at load ---- */

typedef struct quantize_job {
    const tp_tensor *src;
    char *dst;
    size_t row_bytes;
    float *scratch; /* nth rows of ne[0] floats */
} quantize_job;

static void quantize_rows(void *arg, int ith, int nth) {
    const quantize_job *j = arg;
    float *row = j->scratch + (size_t)ith * (size_t)j->src->ne[0];
    for (int64_t r = ith; r < j->src->ne[1]; r += nth) {
        tp_row_to_f32(j->src->type, tp_row_ptr(j->src, r, 0, 0), row, j->src->ne[0]);
        tp_quantize_row(TP_TYPE_Q8_0, row, j->dst + (size_t)r * j->row_bytes, j->src->ne[0]);
    }
}

static bool wants_q8(const tp_tensor *t) {
    return (t->type == TP_TYPE_F32 || t->type == TP_TYPE_F16 || t->type == TP_TYPE_BF16) && t->ne[0] % TP_QK == 0 &&
           t->ne[2] == 1 && t->ne[3] == 1;
}

static tp_status make_int8(tp_vision_model *m, tp_error *err) {
    tp_tensor **slots[TP_VISION_MAX_MATRICES];
    const int n = m->family->matrices(m->model, slots, TP_VISION_MAX_MATRICES);
    int64_t widest = 0;
    for (int i = 0; i < n; i++)
        if (wants_q8(*slots[i]) && (*slots[i])->ne[0] > widest) widest = (*slots[i])->ne[0];
    if (widest == 0) return TP_OK;
    float *scratch = malloc((size_t)tp_threadpool_n_threads(m->pool) * (size_t)widest * sizeof(float));
    if (!scratch) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "%s: out of memory for the int8 weights", m->path);
        return TP_ERR_OUT_OF_MEMORY;
    }
    for (int i = 0; i < n; i++) {
        const tp_tensor *t = *slots[i];
        if (!wants_q8(t)) continue;
        const int64_t ne[2] = {t->ne[0], t->ne[1]};
        tp_tensor *q = tp_new_tensor(m->wctx, TP_TYPE_Q8_0, 2, ne);
        if (!q) break;
        quantize_job job = {t, tp_tensor_data(q), tp_type_row_bytes(TP_TYPE_Q8_0, ne[0]), scratch};
        tp_threadpool_run(m->pool, quantize_rows, &job);
        *slots[i] = q;
    }
    free(scratch);
    if (tp_context_status(m->wctx) != TP_OK) {
        tp_error_set(err, tp_context_status(m->wctx), "%s: the int8 weights: %s", m->path, tp_context_error(m->wctx));
        return tp_context_status(m->wctx);
    }
    return TP_OK;
}

/* ---- load / free ---- */

static tp_status find_family(tp_vision_model *m, tp_error *err) {
    const char *arch = "";
    size_t n = 0;
    if (tp_gguf_get_str(m->gguf, KEY_ARCHITECTURE, &arch, &n) != TP_OK) {
        tp_error_set(err, TP_ERR_FORMAT, "%s: no general.architecture: not a model file", m->path);
        return TP_ERR_FORMAT;
    }
    if (!weights_str_equals(m->gguf, KEY_ARCHITECTURE, "clip")) {
        tp_error_set(err, TP_ERR_FORMAT, "%s: architecture is '%.*s', not a vision (clip/mmproj) file%s", m->path,
                     (int)(n > 64 ? 64 : n), arch, text_family_for(m->gguf) ? " (it is a text model)" : "");
        return TP_ERR_FORMAT;
    }
    m->family = vision_family_for(m->gguf);
    if (!m->family) {
        const char *pt = "";
        size_t pn = 0;
        tp_gguf_get_str(m->gguf, KEY_PROJECTOR_TYPE, &pt, &pn);
        tp_error_set(err, TP_ERR_UNSUPPORTED, "%s: projector type '%.*s' is not supported (this build runs %s)",
                     m->path, (int)(pn > 64 ? 64 : pn), pt, vision_family_names());
        return TP_ERR_UNSUPPORTED;
    }
    return TP_OK;
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
    tp_status st = TP_OK;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        st = TP_ERR_OUT_OF_MEMORY;
        tp_error_set(err, st, "tp_vision_load: cannot create a mutex");
    } else {
        m->lock_ready = true;
    }
    if (st == TP_OK && m->params.precision != -1 && m->params.precision != TP_PRECISION_F32 &&
        m->params.precision != TP_PRECISION_BF16 && m->params.precision != TP_PRECISION_INT8) {
        st = TP_ERR_INVALID_ARGUMENT;
        tp_error_set(err, st, "tp_vision_load: precision %d is not -1 (auto), 0 (f32), 1 (bf16) or 2 (int8)",
                     m->params.precision);
    }
    if (st == TP_OK) st = tp_gguf_open(path, &m->gguf, err);
    if (st == TP_OK) st = find_family(m, err);
    if (st == TP_OK) {
        tp_threadpool_params tpp = tp_threadpool_default_params();
        tpp.n_threads = m->params.n_threads;
        st = tp_threadpool_create(&tpp, &m->pool, err);
    }
    if (st == TP_OK) st = tp_context_create(NULL, &m->wctx, err);
    if (st == TP_OK) {
        /* every weight bound once, now: encode never meets a bad file and never looks a tensor up again */
        weights_loader L = {m->gguf, m->wctx, m->path, err, false};
        st = m->family->load(&L, &m->model);
    }
    if (st == TP_OK) {
        /* auto: an F32 file asks for F32 arithmetic; a file already rounded (F16/BF16/quantised) gets the
         * BF16 products, as the KV cache's auto gets F16 (see tilepass.h) */
        if (m->params.precision == -1)
            m->params.precision =
                m->family->probe_matrix(m->model)->type == TP_TYPE_F32 ? TP_PRECISION_F32 : TP_PRECISION_BF16;
        if (m->params.precision == TP_PRECISION_INT8) st = make_int8(m, err);
        m->n_modes = m->family->modes(m->model, m->modes, TP_VISION_MAX_MODES);
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
    memset(&m->out, 0, sizeof m->out);
}

void tp_vision_free(tp_vision_model *m) {
    if (!m) return;
    drop_graph(m);
    if (m->family && m->model) m->family->free(m->model);
    tp_context_free(m->wctx);
    tp_threadpool_free(m->pool);
    tp_gguf_close(m->gguf);
    if (m->lock_ready) pthread_mutex_destroy(&m->lock);
    free(m->view_group_of);
    free(m->view_index_of);
    free(m);
}

tp_status tp_vision_get_info(const tp_vision_model *m, tp_vision_info *out) {
    if (!m || !out) return TP_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof(*out));
    out->n_embd = (int32_t)m->family->n_embd(m->model);
    out->precision = m->params.precision;
    out->n_modes = m->n_modes;
    out->no_repeat_ngram = m->family->no_repeat_ngram;
    out->no_repeat_window = m->family->no_repeat_window;
    snprintf(out->family, sizeof out->family, "%s", m->family->name);
    snprintf(out->projector_type, sizeof out->projector_type, "%s", m->family->projector_type);
    return TP_OK;
}

const char *tp_vision_mode_name(const tp_vision_model *m, int32_t mode) {
    return m && mode >= 0 && mode < m->n_modes ? m->modes[mode].name : NULL;
}

tp_status tp_vision_preprocess_params(const tp_vision_model *m, const char *mode, tp_preprocess_params *out) {
    if (!m || !out) return TP_ERR_INVALID_ARGUMENT;
    for (int i = 0; i < m->n_modes; i++) {
        if (!mode || strcmp(mode, m->modes[i].name) == 0) {
            *out = m->modes[i].params;
            return TP_OK;
        }
    }
    return TP_ERR_INVALID_ARGUMENT;
}

/* ---- pages ---- */

static bool valid_page(const tp_vision_model *m, const tp_page_views *p) {
    if (!p || !p->views || p->n_views < 1 || p->n_views > TP_IMAGE_MAX_TILES + 1) return false;
    for (int32_t i = 0; i < p->n_views; i++)
        if (!p->views[i].pixels || !m->family->view_ok(m->model, p->views[i].width, p->views[i].height)) return false;
    if (p->n_views == 1) return p->grid_cols == 0 && p->grid_rows == 0;
    return p->grid_cols > 0 && p->grid_rows > 0 && (int64_t)p->grid_cols * p->grid_rows == p->n_views - 1;
}

int64_t tp_vision_page_n_tokens(const tp_vision_model *m, const tp_page_views *page) {
    if (!m || !valid_page(m, page)) return -1;
    return m->family->page_n_tokens(m->model, page);
}

/* Group the views of the pages by size (in order of first appearance) and number them. */
static tp_status plan_groups(tp_vision_model *m, const tp_page_views *pages, int32_t n_pages, view_group *groups,
                             int *n_groups, tp_error *err) {
    int32_t n_views = 0;
    for (int32_t p = 0; p < n_pages; p++) n_views += pages[p].n_views;
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
        for (int32_t i = 0; i < pages[p].n_views; i++, v++) {
            const tp_image_view *view = &pages[p].views[i];
            int gi = 0;
            while (gi < *n_groups && (groups[gi].width != view->width || groups[gi].height != view->height)) gi++;
            if (gi == *n_groups) {
                if (gi == TP_VISION_MAX_GROUPS) {
                    tp_error_set(err, TP_ERR_UNSUPPORTED, "tp_vision_encode: more than %d view sizes in one call",
                                 TP_VISION_MAX_GROUPS);
                    return TP_ERR_UNSUPPORTED;
                }
                memset(&groups[gi], 0, sizeof(groups[gi]));
                groups[gi].width = view->width;
                groups[gi].height = view->height;
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
    /* cancellation: tp_graph_compute asks the callback between nodes (an aborted encode drops the graph) */
    cp.abort_callback = m->params.abort_callback;
    cp.abort_callback_data = m->params.abort_callback_data;
    tp_status st = tp_context_create_child(&cp, m->wctx, &m->ctx, err);
    if (st != TP_OK) return st;
    tp_context *ctx = m->ctx;
    for (int gi = 0; gi < n_groups; gi++) {
        m->groups[gi] = groups[gi];
        int64_t ne[4] = {3, groups[gi].width, groups[gi].height, groups[gi].n_views};
        m->groups[gi].pixels = tp_new_tensor(ctx, TP_TYPE_F32, 4, ne);
    }
    m->family->build(m->model, ctx, m->groups, n_groups, m->params.keep_stages, &m->out);
    m->graph = tp_graph_new(ctx);
    for (int gi = 0; gi < n_groups; gi++) {
        tp_graph_add_output(m->graph, m->out.tokens[gi]);
        for (int s = 0; s < m->out.n_stages; s++) tp_graph_add_output(m->graph, m->out.stages[s][gi]);
    }
    st = tp_context_status(ctx);
    if (st == TP_OK) st = tp_graph_plan(m->graph);
    if (st != TP_OK) {
        tp_error_set(err, st, "%s: building the vision graph: %s", m->path, tp_context_error(ctx));
        drop_graph(m);
        return st;
    }
    m->n_groups = n_groups;
    return TP_OK;
}

static bool same_groups(const tp_vision_model *m, const view_group *groups, int n_groups) {
    if (!m->graph || m->n_groups != n_groups) return false;
    for (int gi = 0; gi < n_groups; gi++)
        if (m->groups[gi].width != groups[gi].width || m->groups[gi].height != groups[gi].height ||
            m->groups[gi].n_views != groups[gi].n_views)
            return false;
    return true;
}

/* One view's projected tokens, row-major [tokens of the view, n_embd]. */
static const float *view_rows(const tp_vision_model *m, int32_t view) {
    const tp_tensor *p = m->out.tokens[m->view_group_of[view]];
    return (const float *)((const char *)p->data + (size_t)m->view_index_of[view] * p->nb[2]);
}

/* Check the pages and have the graph for them (the cached one when their views group as last time). */
static tp_status plan_locked(tp_vision_model *m, const tp_page_views *pages, int32_t n_pages,
                             float *const *out_tokens, tp_error *err) {
    for (int32_t p = 0; p < n_pages; p++) {
        if (!valid_page(m, &pages[p]) || (out_tokens && !out_tokens[p])) {
            const tp_image_view *v = pages[p].views && pages[p].n_views > 0 ? &pages[p].views[pages[p].n_views - 1] : NULL;
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                         "tp_vision_encode: page %d: views this model cannot encode (%d views, the last %dx%d px, "
                         "grid %dx%d)",
                         (int)p, (int)pages[p].n_views, v ? (int)v->width : 0, v ? (int)v->height : 0,
                         (int)pages[p].grid_cols, (int)pages[p].grid_rows);
            return TP_ERR_INVALID_ARGUMENT;
        }
    }
    view_group groups[TP_VISION_MAX_GROUPS];
    int n_groups = 0;
    tp_status st = plan_groups(m, pages, n_pages, groups, &n_groups, err);
    if (st == TP_OK && !same_groups(m, groups, n_groups)) st = build_graph(m, groups, n_groups, err);
    return st;
}

static tp_status encode_locked(tp_vision_model *m, const tp_page_views *pages, int32_t n_pages,
                               float *const *out_tokens, tp_error *err) {
    tp_status st = plan_locked(m, pages, n_pages, out_tokens, err);
    if (st != TP_OK) return st;
    /* pixels into the group inputs */
    int32_t v = 0;
    for (int32_t p = 0; p < n_pages; p++) {
        for (int32_t i = 0; i < pages[p].n_views; i++, v++) {
            const view_group *g = &m->groups[m->view_group_of[v]];
            size_t n = (size_t)3 * g->width * g->height;
            memcpy((float *)g->pixels->data + (size_t)m->view_index_of[v] * n, pages[p].views[i].pixels,
                   n * sizeof(float));
        }
    }
    st = tp_graph_compute(m->graph, m->pool);
    if (st != TP_OK) {
        tp_error_set(err, st, "%s: encoding: %s", m->path, tp_context_error(m->ctx));
        drop_graph(m); /* a failed computation leaves nothing half-valid behind */
        return st;
    }
    m->last_compute_bytes = tp_graph_peak_bytes(m->graph);
    int32_t first = 0;
    for (int32_t p = 0; p < n_pages; p++) {
        const float *rows[TP_IMAGE_MAX_TILES + 1];
        for (int32_t i = 0; i < pages[p].n_views; i++) rows[i] = view_rows(m, first + i);
        m->family->layout(m->model, &pages[p], rows, out_tokens[p]);
        first += pages[p].n_views;
    }
    return TP_OK;
}

tp_status tp_vision_encode(tp_vision_model *m, const tp_page_views *pages, int32_t n_pages,
                           float *const *out_tokens, tp_error *err) {
    if (!m || !pages || !out_tokens || n_pages <= 0) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_vision_encode: NULL argument or no pages");
        return TP_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&m->lock);
    tp_status st = encode_locked(m, pages, n_pages, out_tokens, err);
    pthread_mutex_unlock(&m->lock);
    return st;
}

tp_status tp_vision_plan_bytes(tp_vision_model *m, const tp_page_views *pages, int32_t n_pages, size_t *out_bytes,
                               tp_error *err) {
    if (out_bytes) *out_bytes = 0;
    if (!m || !pages || !out_bytes || n_pages <= 0) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_vision_plan_bytes: NULL argument or no pages");
        return TP_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&m->lock);
    tp_status st = plan_locked(m, pages, n_pages, NULL, err);
    if (st == TP_OK) *out_bytes = tp_graph_planned_bytes(m->graph, tp_threadpool_n_threads(m->pool));
    pthread_mutex_unlock(&m->lock);
    return st;
}

tp_status tp_vision_get_stage(tp_vision_model *m, const char *stage, int32_t view, float *dst, int64_t n,
                              int64_t *n_out, tp_error *err) {
    if (!m || !stage) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_vision_get_stage: NULL argument");
        return TP_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&m->lock);
    tp_status st = TP_OK;
    const tp_tensor *t = NULL;
    if (!m->graph || !m->params.keep_stages || view < 0 || view >= m->n_views) {
        st = TP_ERR_INVALID_ARGUMENT;
        tp_error_set(err, st, "tp_vision_get_stage: no stage outputs for view %d (encode with keep_stages first)",
                     (int)view);
    } else {
        int gi = m->view_group_of[view];
        if (strcmp(stage, "proj") == 0) t = m->out.tokens[gi];
        for (int s = 0; s < m->out.n_stages && !t; s++)
            if (strcmp(stage, m->out.stage_names[s]) == 0) t = m->out.stages[s][gi];
        if (!t) {
            st = TP_ERR_INVALID_ARGUMENT;
            tp_error_set(err, st, "tp_vision_get_stage: this model has no stage '%s'", stage);
        }
    }
    if (st == TP_OK) {
        /* every stage tensor is contiguous with the view as its last dim */
        int64_t per_view = tp_nelements(t) / t->ne[t->n_dims - 1];
        if (n_out) *n_out = per_view;
        if (dst && n < per_view) {
            st = TP_ERR_INVALID_ARGUMENT;
            tp_error_set(err, st, "tp_vision_get_stage: buffer of %lld floats, need %lld", (long long)n,
                         (long long)per_view);
        } else if (dst) {
            memcpy(dst, (const float *)t->data + m->view_index_of[view] * per_view, (size_t)per_view * sizeof(float));
        }
    }
    pthread_mutex_unlock(&m->lock);
    return st;
}

size_t tp_vision_last_compute_bytes(const tp_vision_model *m) { return m ? m->last_compute_bytes : 0; }

void tp_vision_trim(tp_vision_model *m) {
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    drop_graph(m);
    tp_gguf_drop_pages(m->gguf);
    pthread_mutex_unlock(&m->lock);
}

const vision_family *vision_model_family(const tp_vision_model *m) { return m ? m->family : NULL; }
