/* text.c - the public text-model API: load a text GGUF through its family (models/registry.c), bind its
 * weights once into a weights context, hold sequences (each its own KV cache; the model has a built-in one for
 * tp_text_eval), evaluate tokens of one or several sequences in batches (one graph per batch of up to n_batch
 * rows, in a child context of the weights, the sequences' rows side by side: text_batch in text_model.h; the
 * embeddings, with image rows spliced in, are assembled on the host), and give token bytes.
 *
 * A sequence's KV cache is memory it owns (F32, F16 or Q8_0, tp_text_params.kv_type), [head_dim, n_head_kv,
 * n_ctx] per layer for K and for V; each graph sees it as leaves over that memory, writes its new rows with
 * tp_cpy and attends over the first n_past + n rows. */
#define _DEFAULT_SOURCE /* madvise(MADV_POPULATE_READ) */
#include "names.h"
#include "registry.h"
#include "tp_tokenizer.h"
#include "tp_quants.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

struct tp_text_model {
    char path[1024];
    tp_text_params params;
    tp_gguf *gguf;
    const text_family *family;
    text_hparams hp;
    tp_context *wctx; /* the weights, bound once at load */
    void *weights;
    text_vocab vocab;
    /* the tokenizer, built from the file's vocabulary at the first tp_text_get_tokenizer / tp_text_tokenize
     * (under tok_lock: those may be called from any thread); NULL with tok_err when the vocabulary is not one it
     * supports */
    pthread_mutex_t tok_lock;
    bool tok_lock_ready, tok_tried;
    tp_tokenizer *tok;
    tp_error tok_err;
    tp_threadpool *pool;
    int32_t n_ctx, n_batch;
    /* The thread contract (tilepass.h): calls that change a sequence do not take turns silently: an eval takes
     * each of its sequences' `busy` with a try-lock and fails ("in use by another thread") while another call
     * holds one; the computations themselves take turns on `compute` (one pool, one graph at a time). */
    pthread_mutex_t compute;
    bool compute_ready;
    tp_text_seq *seq0; /* the built-in sequence of tp_text_eval / tp_text_reset / tp_text_n_past */
    tp_type kv_type;   /* TP_TYPE_F32, TP_TYPE_F16 or TP_TYPE_Q8_0 */
    /* the token embedding table, read on the host */
    const char *embd_data;
    tp_type embd_type;
    size_t embd_row_bytes;
    /* the weights' address range in the mapping, made resident at the first eval (not at load: a
     * pipeline loads the text model, then encodes images, and its peak must not hold both at once) */
    uintptr_t weights_lo, weights_hi;
    bool weights_resident;
};

/* One sequence: its KV cache, tokens and next position. Freed without its model (nothing of the model is
 * read), so the two may go in either order. n_past is atomic so that it may be read at any time. */
struct tp_text_seq {
    const tp_text_model *model;
    int n_layer;
    int32_t n_ctx;
    tp_type kv_type;
    int64_t head_dim, head_dim_v, n_head_kv;
    pthread_mutex_t busy;
    _Atomic int32_t n_past;
    int32_t next_pos; /* the position the next token gets when the caller gives none: 1 + the largest so far */
    void **kcache, **vcache; /* [n_layer] */
};

/* Map every weight page before the first batch (as llama.cpp's MAP_POPULATE does), so that it does not
 * pay the page faults of the whole file one by one: the weights' address range is populated in one
 * call where the kernel can (Linux 5.14+), else touched page by page. */
/* Bytes of one layer's K or V cache: n_ctx positions × n_head_kv rows of `dim` elements. */
static size_t cache_bytes(tp_type type, int64_t dim, int64_t n_head_kv, int64_t n_ctx) {
    return tp_type_row_bytes(type, dim) * (size_t)n_head_kv * (size_t)n_ctx;
}

/* The address range of every tensor of the file (the weights are all of them). */
static void weights_span(const tp_gguf *g, uintptr_t *lo_out, uintptr_t *hi_out) {
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int64_t i = 0; i < tp_gguf_n_tensors(g); i++) {
        uintptr_t a = (uintptr_t)tp_gguf_tensor_data(g, i);
        lo = TP_MIN(lo, a);
        hi = TP_MAX(hi, a + tp_gguf_tensor_nbytes(g, i));
    }
    *lo_out = lo;
    *hi_out = hi;
}

static void populate_range(uintptr_t lo, uintptr_t hi) {
    if (hi <= lo) return;
    const long page_l = sysconf(_SC_PAGESIZE);
    const uintptr_t page = page_l > 0 ? (uintptr_t)page_l : 4096;
    lo &= ~(page - 1);
#ifdef MADV_POPULATE_READ
    if (madvise((void *)lo, hi - lo, MADV_POPULATE_READ) == 0) return;
#endif
    volatile unsigned char sink = 0;
    for (uintptr_t a = lo; a < hi; a += page) sink ^= *(const volatile unsigned char *)a;
    (void)sink;
}

void tp_text_trim(tp_text_model *m) {
    if (!m) return;
    pthread_mutex_lock(&m->compute);
    tp_gguf_drop_pages(m->gguf);
    m->weights_resident = false; /* the next eval populates the range again, in one call */
    pthread_mutex_unlock(&m->compute);
}

tp_text_params tp_text_default_params(void) {
    tp_text_params p;
    p.n_threads = 1;
    p.cpu_path = -1;
    p.n_ctx = 0;
    p.n_batch = 0;
    p.kv_type = -1;
    p.abort_callback = NULL;
    p.abort_callback_data = NULL;
    return p;
}

void tp_text_seq_free(tp_text_seq *s) {
    if (!s) return;
    for (int l = 0; l < s->n_layer; l++) {
        if (s->kcache) free(s->kcache[l]);
        if (s->vcache) free(s->vcache[l]);
    }
    free(s->kcache);
    free(s->vcache);
    pthread_mutex_destroy(&s->busy);
    free(s);
}

tp_status tp_text_seq_create(tp_text_model *m, int32_t n_ctx, tp_text_seq **out, tp_error *err) {
    if (!m || !out || n_ctx < 0) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_text_seq_create: model and out must not be NULL, n_ctx %d >= 0",
                     (int)n_ctx);
        return TP_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    tp_text_seq *s = calloc(1, sizeof(*s));
    if (!s || pthread_mutex_init(&s->busy, NULL) != 0) {
        free(s);
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_text_seq_create: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    s->model = m;
    s->n_ctx = n_ctx > 0 ? n_ctx : m->n_ctx;
    s->kv_type = m->kv_type;
    s->head_dim = m->hp.head_dim;
    s->head_dim_v = m->hp.head_dim_v;
    s->n_head_kv = m->hp.n_head_kv;
    atomic_init(&s->n_past, 0);
    s->kcache = calloc((size_t)m->hp.n_layer, sizeof(void *));
    s->vcache = calloc((size_t)m->hp.n_layer, sizeof(void *));
    if (s->kcache && s->vcache) s->n_layer = m->hp.n_layer;
    const size_t kn = cache_bytes(s->kv_type, s->head_dim, s->n_head_kv, s->n_ctx);
    const size_t vn = cache_bytes(s->kv_type, s->head_dim_v, s->n_head_kv, s->n_ctx);
    bool ok = s->n_layer == m->hp.n_layer;
    for (int l = 0; l < s->n_layer && ok; l++) {
        s->kcache[l] = calloc(kn, 1);
        s->vcache[l] = calloc(vn, 1);
        ok = s->kcache[l] && s->vcache[l];
    }
    if (!ok) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_text_seq_create: %s: cannot allocate the KV cache (%d tokens)",
                     m->path, (int)s->n_ctx);
        tp_text_seq_free(s);
        return TP_ERR_OUT_OF_MEMORY;
    }
    *out = s;
    return TP_OK;
}

size_t tp_text_seq_bytes(const tp_text_model *m, int32_t n_ctx) {
    if (!m || n_ctx < 0) return 0;
    const int64_t n = n_ctx > 0 ? n_ctx : m->n_ctx;
    return (size_t)m->hp.n_layer * (cache_bytes(m->kv_type, m->hp.head_dim, m->hp.n_head_kv, n) +
                                     cache_bytes(m->kv_type, m->hp.head_dim_v, m->hp.n_head_kv, n));
}

void tp_text_seq_reset(tp_text_seq *s) {
    if (!s) return;
    pthread_mutex_lock(&s->busy); /* after an eval in progress on another thread */
    s->n_past = 0;
    s->next_pos = 0;
    pthread_mutex_unlock(&s->busy);
}

int32_t tp_text_seq_n_past(const tp_text_seq *s) { return s ? s->n_past : 0; }

int32_t tp_text_seq_n_ctx(const tp_text_seq *s) { return s ? s->n_ctx : 0; }

void tp_text_free(tp_text_model *m) {
    if (!m) return;
    tp_text_seq_free(m->seq0);
    text_vocab_free(&m->vocab);
    tp_tokenizer_free(m->tok);
    if (m->tok_lock_ready) pthread_mutex_destroy(&m->tok_lock);
    if (m->family && m->weights) m->family->free(m->weights);
    tp_context_free(m->wctx);
    tp_threadpool_free(m->pool);
    tp_gguf_close(m->gguf);
    if (m->compute_ready) pthread_mutex_destroy(&m->compute);
    free(m);
}

static tp_status fail(tp_text_model *m, tp_error *err, tp_status st, const char *msg) {
    tp_error_set(err, st, "tp_text_load: %s: %s", m->path, msg);
    return st;
}

tp_status tp_text_load(const char *path, const tp_text_params *params, tp_text_model **out, tp_error *err) {
    if (!path || !out) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_text_load: path and out must not be NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    tp_text_params p = params ? *params : tp_text_default_params();
    if (p.n_threads < 1 || p.n_threads > 64 || p.n_ctx < 0 || p.n_batch < 0) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                     "tp_text_load: n_threads %d must be in 1..64, n_ctx %d and n_batch %d must be >= 0", p.n_threads,
                     p.n_ctx, p.n_batch);
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (p.kv_type != -1 && p.kv_type != TP_TYPE_F32 && p.kv_type != TP_TYPE_F16 && p.kv_type != TP_TYPE_Q8_0) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                     "tp_text_load: kv_type %d must be TP_TYPE_F32 (%d), TP_TYPE_F16 (%d), TP_TYPE_Q8_0 (%d) or -1 (auto)",
                     (int)p.kv_type, (int)TP_TYPE_F32, (int)TP_TYPE_F16, (int)TP_TYPE_Q8_0);
        return TP_ERR_INVALID_ARGUMENT;
    }
    tp_text_model *m = calloc(1, sizeof(*m));
    if (!m) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_text_load: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    snprintf(m->path, sizeof m->path, "%s", path);
    m->params = p;
    if (pthread_mutex_init(&m->compute, NULL) != 0) {
        free(m);
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_text_load: cannot create a mutex");
        return TP_ERR_OUT_OF_MEMORY;
    }
    m->compute_ready = true;
    tp_status st = tp_gguf_open(path, &m->gguf, err);
    if (st == TP_OK) {
        m->family = text_family_for(m->gguf);
        if (!m->family) {
            const char *arch = "";
            size_t n = 0;
            tp_gguf_get_str(m->gguf, KEY_ARCHITECTURE, &arch, &n);
            st = TP_ERR_FORMAT;
            if (n == 0)
                tp_error_set(err, st, "%s: no general.architecture: not a model file", path);
            else
                tp_error_set(err, st, "%s: architecture is '%.*s', not a text model this build runs (%s)%s", path,
                             (int)(n > 64 ? 64 : n), arch, text_family_names(),
                             weights_str_equals(m->gguf, KEY_ARCHITECTURE, "clip") ? " (it is a vision/mmproj file)" : "");
        }
    }
    if (st == TP_OK) st = m->family->read_hparams(m->gguf, path, &m->hp, err);
    if (st == TP_OK) {
        /* every weight bound once, now, so that eval cannot meet a bad file and never looks one up again */
        tp_context_params cp = tp_context_default_params();
        cp.cpu_path = p.cpu_path;
        st = tp_context_create(&cp, &m->wctx, err);
        weights_loader L = {m->gguf, m->wctx, path, err, false};
        if (st == TP_OK) st = m->family->load(&L, &m->hp, &m->weights);
        if (st == TP_OK) {
            weights_span(m->gguf, &m->weights_lo, &m->weights_hi);
            const tp_tensor *embd = m->family->token_embd(m->weights);
            m->embd_type = embd->type;
            m->embd_data = tp_tensor_data(embd);
            m->embd_row_bytes = embd->nb[1];
            /* auto: an F32 cache for F32 weights (float-reference parity), else F16 */
            m->kv_type = p.kv_type >= 0 ? (tp_type)p.kv_type
                         : m->family->probe_matrix(m->weights)->type == TP_TYPE_F32 ? TP_TYPE_F32 : TP_TYPE_F16;
        }
    }
    if (st == TP_OK && m->kv_type == TP_TYPE_Q8_0 && (m->hp.head_dim % 32 != 0 || m->hp.head_dim_v % 32 != 0)) {
        char msg[160];
        snprintf(msg, sizeof msg, "kv_type Q8_0 needs head sizes that are multiples of 32 (this model: %d and %d)",
                 (int)m->hp.head_dim, (int)m->hp.head_dim_v);
        st = fail(m, err, TP_ERR_INVALID_ARGUMENT, msg);
    }
    if (st == TP_OK) st = text_load_vocab(m->gguf, path, m->hp.n_vocab, &m->vocab, err);
    if (st == TP_OK) {
        if (pthread_mutex_init(&m->tok_lock, NULL) == 0) m->tok_lock_ready = true;
        else st = fail(m, err, TP_ERR_OUT_OF_MEMORY, "cannot create a mutex");
    }
    if (st == TP_OK) {
        m->n_ctx = p.n_ctx > 0 ? p.n_ctx : m->hp.n_ctx_train;
        m->n_batch = p.n_batch > 0 ? p.n_batch : 512;
        if (m->n_ctx <= 0) st = fail(m, err, TP_ERR_INVALID_ARGUMENT, "the context length is 0");
    }
    if (st == TP_OK && tp_text_seq_create(m, m->n_ctx, &m->seq0, NULL) != TP_OK) {
        char msg[128];
        snprintf(msg, sizeof msg, "cannot allocate the KV cache (%d tokens)", m->n_ctx);
        st = fail(m, err, TP_ERR_OUT_OF_MEMORY, msg);
    }
    if (st == TP_OK) {
        tp_threadpool_params tpp = tp_threadpool_default_params();
        tpp.n_threads = p.n_threads;
        st = tp_threadpool_create(&tpp, &m->pool, err);
    }
    if (st != TP_OK) {
        tp_text_free(m);
        return st;
    }
    *out = m;
    return TP_OK;
}

tp_status tp_text_get_info(const tp_text_model *m, tp_text_info *out) {
    if (!m || !out) return TP_ERR_INVALID_ARGUMENT;
    out->n_vocab = m->hp.n_vocab;
    out->n_embd = m->hp.n_embd;
    out->n_layer = m->hp.n_layer;
    out->n_ctx = m->n_ctx;
    out->n_ctx_train = m->hp.n_ctx_train;
    out->bos_id = m->hp.bos_id;
    out->eos_id = m->hp.eos_id;
    out->pad_id = m->hp.pad_id;
    out->image_token_id = m->hp.image_token_id;
    out->n_pos_axes = TP_MAX(m->hp.n_pos_axes, 1);
    return TP_OK;
}

void tp_text_reset(tp_text_model *m) {
    if (m) tp_text_seq_reset(m->seq0);
}

int32_t tp_text_n_past(const tp_text_model *m) { return m ? tp_text_seq_n_past(m->seq0) : 0; }

const char *tp_text_token_bytes(const tp_text_model *m, int32_t id, size_t *len) {
    if (!m || id < 0 || id >= m->vocab.n) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = (size_t)(m->vocab.offs[id + 1] - m->vocab.offs[id]);
    return m->vocab.bytes + m->vocab.offs[id];
}

tp_status tp_text_get_tokenizer(const tp_text_model *mc, const tp_tokenizer **out, tp_error *err) {
    if (out) *out = NULL;
    if (!mc || !out) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_text_get_tokenizer: m and out must not be NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    /* built once, at the first call (a cache: the model was created non-const by tp_text_load) */
    tp_text_model *m = (tp_text_model *)mc;
    pthread_mutex_lock(&m->tok_lock);
    if (!m->tok_tried) {
        char prefix[1100];
        snprintf(prefix, sizeof prefix, "%s: ", m->path);
        if (tok_load(m->gguf, prefix, &m->tok, &m->tok_err) == TP_ERR_OUT_OF_MEMORY) m->tok = NULL;
        else m->tok_tried = true; /* out of memory: tried again next time */
    }
    const tp_tokenizer *t = m->tok;
    const tp_error why = m->tok_err;
    pthread_mutex_unlock(&m->tok_lock);
    if (!t) {
        tp_error_set(err, why.status, "%s", why.message);
        return why.status;
    }
    *out = t;
    return TP_OK;
}

tp_status tp_text_tokenize(const tp_text_model *m, const char *text, size_t len, bool parse_special, int32_t *ids,
                           int32_t max_ids, int32_t *n_ids, tp_error *err) {
    const tp_tokenizer *t;
    if (n_ids) *n_ids = 0;
    const tp_status st = tp_text_get_tokenizer(m, &t, err);
    if (st != TP_OK) return st;
    return tp_tokenize(t, text, len, parse_special, ids, max_ids, n_ids, err);
}

/* One entry of a call as it is worked through: tokens [off, n) are left; n_past / next_pos are the
 * sequence's as staged by this call (committed when the whole call succeeds). */
typedef struct entry_state {
    const tp_text_batch_entry *e;
    tp_text_seq *seq;
    int64_t off, img_row;
    int32_t n_past, next_pos;
} entry_state;

/* One segment of a graph: `take` tokens of entry es from es->off on, n_out logits rows wanted. */
typedef struct seg_plan {
    entry_state *es;
    int64_t take, n_out;
} seg_plan;

/* One graph over the planned segments (their rows side by side); on success advances each entry. */
static tp_status eval_graph(tp_text_model *m, seg_plan *plan, int64_t n_seg, const char *fn, tp_error *err) {
    const text_hparams *hp = &m->hp;
    const int64_t C = hp->n_embd, V = hp->n_vocab, L = hp->n_layer;
    const int64_t n_axes = hp->n_pos_axes > 0 ? hp->n_pos_axes : 1;
    tp_context_params cp = tp_context_default_params();
    cp.cpu_path = m->params.cpu_path;
    cp.abort_callback = m->params.abort_callback; /* asked between nodes by tp_graph_compute */
    cp.abort_callback_data = m->params.abort_callback_data;
    tp_context *ctx = NULL;
    tp_status st = tp_context_create_child(&cp, m->wctx, &ctx, err);
    if (st != TP_OK) return st;
    int64_t R = 0, n_out = 0;
    for (int64_t s = 0; s < n_seg; s++) {
        R += plan[s].take;
        n_out += plan[s].n_out;
    }
    tp_tensor **caches = calloc((size_t)(2 * L * n_seg), sizeof(*caches));
    text_segment *segs = calloc((size_t)n_seg, sizeof(*segs));
    int32_t *next_pos = calloc((size_t)n_seg, sizeof(*next_pos));
    if (!caches || !segs || !next_pos) {
        st = TP_ERR_OUT_OF_MEMORY;
        tp_error_set(err, st, "%s: out of memory", fn);
        goto done;
    }
    int64_t xne[2] = {C, R}, pne[2] = {R, n_axes};
    tp_tensor *x = tp_new_tensor(ctx, TP_TYPE_F32, 2, xne);
    tp_tensor *pos = tp_new_tensor(ctx, TP_TYPE_I32, n_axes > 1 ? 2 : 1, pne);
    int64_t r = 0;
    for (int64_t s = 0; s < n_seg && x && pos; s++) {
        entry_state *es = plan[s].es;
        const tp_text_batch_entry *e = es->e;
        tp_text_seq *sq = es->seq;
        float *xd = tp_tensor_data(x);
        int32_t *pd = tp_tensor_data(pos);
        next_pos[s] = es->next_pos;
        for (int64_t i = 0; i < plan[s].take; i++, r++) {
            const int64_t t = es->off + i; /* the token's index in its entry */
            for (int64_t a = 0; a < n_axes; a++) {
                pd[a * R + r] = e->pos ? e->pos[a * e->n + t] : (int32_t)(es->next_pos + t - es->off);
                next_pos[s] = TP_MAX(next_pos[s], pd[a * R + r] + 1);
            }
            const int32_t id = e->ids[t];
            if (e->embd && id == hp->image_token_id)
                memcpy(xd + r * C, e->embd + es->img_row++ * C, (size_t)C * sizeof(float));
            else
                tp_row_to_f32(m->embd_type, m->embd_data + (size_t)id * m->embd_row_bytes, xd + r * C, C);
        }
        tp_tensor **kc = caches + 2 * L * s, **vc = kc + L;
        int64_t kne[3] = {hp->head_dim, hp->n_head_kv, sq->n_ctx}, vne[3] = {hp->head_dim_v, hp->n_head_kv, sq->n_ctx};
        for (int64_t l = 0; l < L; l++) {
            kc[l] = tp_new_tensor_external(ctx, sq->kv_type, 3, kne, sq->kcache[l],
                                           cache_bytes(sq->kv_type, hp->head_dim, hp->n_head_kv, sq->n_ctx));
            vc[l] = tp_new_tensor_external(ctx, sq->kv_type, 3, vne, sq->vcache[l],
                                           cache_bytes(sq->kv_type, hp->head_dim_v, hp->n_head_kv, sq->n_ctx));
        }
        segs[s] = (text_segment){es->n_past, plan[s].take, plan[s].n_out, kc, vc};
    }
    const text_batch b = {hp->n_layer, n_seg, R, n_out, segs};
    tp_graph *g = tp_graph_new(ctx);
    tp_tensor *out = NULL;
    if (g && x && pos) out = m->family->build(ctx, g, hp, m->weights, x, pos, &b);
    st = tp_context_status(ctx);
    if (st == TP_OK && (!g || (n_out > 0 && !out))) st = TP_ERR_INTERNAL;
    if (st == TP_OK) st = tp_graph_compute(g, m->pool);
    if (st != TP_OK) {
        tp_error_set(err, st, "%s: %s", fn, tp_context_error(ctx)[0] ? tp_context_error(ctx) : "graph failed");
        goto done;
    }
    const float *od = n_out > 0 ? tp_tensor_data(out) : NULL;
    for (int64_t s = 0; s < n_seg; s++) {
        entry_state *es = plan[s].es;
        if (plan[s].n_out > 0) {
            float *dst = es->e->all_logits ? es->e->logits + (size_t)es->off * (size_t)V : es->e->logits;
            memcpy(dst, od, (size_t)plan[s].n_out * (size_t)V * sizeof(float));
            od += plan[s].n_out * V;
        }
        es->off += plan[s].take;
        es->n_past += (int32_t)plan[s].take;
        es->next_pos = next_pos[s];
    }
done:
    free(caches);
    free(segs);
    free(next_pos);
    tp_context_free(ctx);
    return st;
}

/* The checks of one entry that need no sequence state; `who` prefixes messages ("" or "entry i: "). */
static tp_status check_entry(const tp_text_model *m, const tp_text_batch_entry *e, const char *fn, const char *who,
                             tp_error *err) {
    if (e->n <= 0 || !e->ids) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: %sneed n >= 1 token ids (n = %d%s)", fn, who, (int)e->n,
                     e->ids ? "" : ", ids NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    int64_t n_img = 0;
    for (int32_t i = 0; i < e->n; i++) {
        if (e->ids[i] < 0 || e->ids[i] >= m->hp.n_vocab) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: %stoken %d at position %d is outside 0..%d", fn, who,
                         (int)e->ids[i], (int)i, m->hp.n_vocab - 1);
            return TP_ERR_INVALID_ARGUMENT;
        }
        if (e->ids[i] == m->hp.image_token_id) n_img++;
    }
    if (e->embd ? e->n_embd_rows != n_img : e->n_embd_rows != 0) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                     "%s: %s%lld embedding rows given for %lld image-token positions (id %d)%s", fn, who,
                     (long long)e->n_embd_rows, (long long)n_img, m->hp.image_token_id, e->embd ? "" : " with embd NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    for (int64_t i = 0; e->pos && i < (int64_t)e->n * TP_MAX(m->hp.n_pos_axes, 1); i++) {
        if (e->pos[i] < 0 || e->pos[i] > INT32_MAX - e->n) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: %sposition %d (entry %lld) is out of range",
                         who[0] ? fn : "tp_text_eval_pos", who, (int)e->pos[i], (long long)i);
            return TP_ERR_INVALID_ARGUMENT;
        }
    }
    return TP_OK;
}

/* The call with its sequences locked: overflow checks, then graphs of up to n_batch rows (the entries'
 * tokens in order, several entries per graph), then the sequences' new lengths, all or nothing. */
static tp_status eval_locked(tp_text_model *m, entry_state *es, int32_t n_e, bool batch, const char *fn,
                             tp_error *err) {
    for (int32_t i = 0; i < n_e; i++) {
        const tp_text_seq *sq = es[i].seq;
        if ((int64_t)sq->n_past + es[i].e->n > sq->n_ctx) {
            char who[32] = "";
            if (batch) snprintf(who, sizeof who, "entry %d: ", (int)i);
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                         "%s: %s%d tokens after %d would overflow the KV cache of %d (reset, or %s)", fn, who,
                         (int)es[i].e->n, (int)sq->n_past, (int)sq->n_ctx,
                         batch ? "use a sequence with a larger n_ctx" : "load with a larger n_ctx");
            return TP_ERR_INVALID_ARGUMENT;
        }
        es[i].n_past = sq->n_past;
        es[i].next_pos = sq->next_pos;
    }
    seg_plan *plan = calloc((size_t)n_e, sizeof(*plan));
    if (!plan) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
        return TP_ERR_OUT_OF_MEMORY;
    }
    pthread_mutex_lock(&m->compute); /* the pool computes one graph at a time: calls take turns here */
    if (!m->weights_resident) {
        populate_range(m->weights_lo, m->weights_hi);
        m->weights_resident = true;
    }
    tp_status st = TP_OK;
    for (;;) {
        int64_t n_seg = 0, used = 0;
        for (int32_t i = 0; i < n_e && used < m->n_batch; i++) {
            const tp_text_batch_entry *e = es[i].e;
            const int64_t left = e->n - es[i].off;
            if (left == 0) continue;
            const int64_t take = TP_MIN(left, (int64_t)m->n_batch - used);
            const bool last = es[i].off + take == e->n;
            plan[n_seg++] = (seg_plan){&es[i], take, !e->logits ? 0 : e->all_logits ? take : last ? 1 : 0};
            used += take;
        }
        if (n_seg == 0) break;
        st = eval_graph(m, plan, n_seg, fn, err);
        if (st != TP_OK) break;
    }
    if (st == TP_OK) /* every entry done: the sequences take their new tokens */
        for (int32_t i = 0; i < n_e; i++) {
            es[i].seq->n_past = es[i].n_past;
            es[i].seq->next_pos = es[i].next_pos;
        }
    pthread_mutex_unlock(&m->compute);
    free(plan);
    return st;
}

/* Validate, lock the sequences (try-locks: a sequence busy in another call fails this one at once), evaluate,
 * unlock. */
static tp_status eval_entries(tp_text_model *m, const tp_text_batch_entry *entries, int32_t n_e, bool batch,
                              tp_error *err) {
    const char *fn = batch ? "tp_text_eval_batch" : "tp_text_eval";
    if (!m) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: the model is NULL", fn);
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (n_e < 1 || !entries) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: need n_entries >= 1 entries (n_entries = %d%s)", fn, (int)n_e,
                     entries ? "" : ", entries NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    entry_state *es = calloc((size_t)n_e, sizeof(*es));
    if (!es) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
        return TP_ERR_OUT_OF_MEMORY;
    }
    tp_status st = TP_OK;
    int32_t n_locked = 0;
    for (int32_t i = 0; i < n_e && st == TP_OK; i++) {
        char who[32] = "";
        if (batch) snprintf(who, sizeof who, "entry %d: ", (int)i);
        es[i].e = &entries[i];
        es[i].seq = entries[i].seq ? entries[i].seq : m->seq0;
        const tp_text_seq *sq = es[i].seq;
        if (sq->model != m || sq->n_layer != m->hp.n_layer || sq->kv_type != m->kv_type ||
            sq->head_dim != m->hp.head_dim || sq->head_dim_v != m->hp.head_dim_v || sq->n_head_kv != m->hp.n_head_kv) {
            st = TP_ERR_INVALID_ARGUMENT;
            tp_error_set(err, st, "%s: %sthe sequence belongs to another model", fn, who);
            break;
        }
        for (int32_t j = 0; j < i && st == TP_OK; j++)
            if (es[j].seq == es[i].seq) {
                st = TP_ERR_INVALID_ARGUMENT;
                tp_error_set(err, st, "%s: %sthe same sequence as entry %d (one entry per sequence per call)", fn, who,
                             (int)j);
            }
        if (st == TP_OK) st = check_entry(m, &entries[i], fn, who, err);
    }
    for (; st == TP_OK && n_locked < n_e; n_locked++) {
        if (pthread_mutex_trylock(&es[n_locked].seq->busy) != 0) {
            st = TP_ERR_INVALID_ARGUMENT;
            if (es[n_locked].seq == m->seq0)
                tp_error_set(err, st,
                             "%s: model in use by another thread (a text model's own sequence takes one call at a "
                             "time: use one model or sequence per thread, or take turns under your own lock)",
                             fn);
            else
                tp_error_set(err, st, "%s: entry %d: sequence in use by another thread (one call at a time per sequence)",
                             fn, (int)n_locked);
            break;
        }
    }
    if (st == TP_OK) st = eval_locked(m, es, n_e, batch, fn, err);
    for (int32_t i = 0; i < n_locked; i++) pthread_mutex_unlock(&es[i].seq->busy);
    free(es);
    return st;
}

tp_status tp_text_eval_batch(tp_text_model *m, const tp_text_batch_entry *entries, int32_t n_entries, tp_error *err) {
    return eval_entries(m, entries, n_entries, true, err);
}

tp_status tp_text_eval(tp_text_model *m, const int32_t *ids, int32_t n, const float *embd, int64_t n_embd_rows,
                       float *logits, bool all_logits, tp_error *err) {
    return tp_text_eval_pos(m, ids, n, NULL, embd, n_embd_rows, logits, all_logits, err);
}

tp_status tp_text_eval_pos(tp_text_model *m, const int32_t *ids, int32_t n, const int32_t *pos, const float *embd,
                           int64_t n_embd_rows, float *logits, bool all_logits, tp_error *err) {
    const tp_text_batch_entry e = {NULL, ids, n, pos, embd, n_embd_rows, logits, all_logits};
    return eval_entries(m, &e, 1, false, err);
}

const tp_gguf *text_model_gguf(const tp_text_model *m) { return m ? m->gguf : NULL; }
