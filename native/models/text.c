/* text.c - the public text-model API: load a text GGUF through its family (models/registry.c), bind its
 * weights once into a weights context, hold one sequence's KV cache, evaluate tokens in batches (one graph
 * per batch of up to n_batch tokens, in a child context of the weights; the embeddings, with image rows
 * spliced in, are assembled on the host), and give token bytes.
 *
 * The KV cache is model-owned memory (F32, F16 or Q8_0, tp_text_params.kv_type), [head_dim, n_head_kv, n_ctx]
 * per layer for K and for V;
 * each graph sees it as leaves over that memory, writes its new rows with tp_cpy and attends over
 * the first n_past + n rows. */
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
    /* The thread contract (tilepass.h): one model holds one sequence, so calls that change it do not take
     * turns silently: tp_text_eval(_pos) takes `busy` with a try-lock and fails with "model in use by another
     * thread" while a call is in progress; tp_text_reset waits for it. n_past is atomic so that
     * tp_text_n_past may be read from any thread at any time. */
    pthread_mutex_t busy;
    bool busy_ready;
    _Atomic int32_t n_past;
    int32_t next_pos; /* the position the next token gets when the caller gives none: 1 + the largest so far */
    tp_type kv_type;          /* TP_TYPE_F32 or TP_TYPE_F16 */
    void **kcache, **vcache; /* [n_layer] */
    /* the token embedding table, read on the host */
    const char *embd_data;
    tp_type embd_type;
    size_t embd_row_bytes;
    /* the weights' address range in the mapping, made resident at the first eval (not at load: a
     * pipeline loads the text model, then encodes images, and its peak must not hold both at once) */
    uintptr_t weights_lo, weights_hi;
    bool weights_resident;
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

void tp_text_free(tp_text_model *m) {
    if (!m) return;
    if (m->kcache)
        for (int l = 0; l < m->hp.n_layer; l++) free(m->kcache[l]);
    if (m->vcache)
        for (int l = 0; l < m->hp.n_layer; l++) free(m->vcache[l]);
    free(m->kcache);
    free(m->vcache);
    text_vocab_free(&m->vocab);
    tp_tokenizer_free(m->tok);
    if (m->tok_lock_ready) pthread_mutex_destroy(&m->tok_lock);
    if (m->family && m->weights) m->family->free(m->weights);
    tp_context_free(m->wctx);
    tp_threadpool_free(m->pool);
    tp_gguf_close(m->gguf);
    if (m->busy_ready) pthread_mutex_destroy(&m->busy);
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
    atomic_init(&m->n_past, 0);
    if (pthread_mutex_init(&m->busy, NULL) != 0) {
        free(m);
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_text_load: cannot create a mutex");
        return TP_ERR_OUT_OF_MEMORY;
    }
    m->busy_ready = true;
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
    if (st == TP_OK) {
        m->kcache = calloc((size_t)m->hp.n_layer, sizeof(void *));
        m->vcache = calloc((size_t)m->hp.n_layer, sizeof(void *));
        const size_t kn = cache_bytes(m->kv_type, m->hp.head_dim, m->hp.n_head_kv, m->n_ctx);
        const size_t vn = cache_bytes(m->kv_type, m->hp.head_dim_v, m->hp.n_head_kv, m->n_ctx);
        if (!m->kcache || !m->vcache) st = fail(m, err, TP_ERR_OUT_OF_MEMORY, "out of memory");
        for (int l = 0; l < m->hp.n_layer && st == TP_OK; l++) {
            m->kcache[l] = calloc(kn, 1);
            m->vcache[l] = calloc(vn, 1);
            if (!m->kcache[l] || !m->vcache[l]) {
                char msg[128];
                snprintf(msg, sizeof msg, "cannot allocate the KV cache (%d tokens)", m->n_ctx);
                st = fail(m, err, TP_ERR_OUT_OF_MEMORY, msg);
            }
        }
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
    if (!m) return;
    pthread_mutex_lock(&m->busy); /* after a tp_text_eval in progress on another thread */
    m->n_past = 0;
    m->next_pos = 0;
    pthread_mutex_unlock(&m->busy);
}

int32_t tp_text_n_past(const tp_text_model *m) { return m ? m->n_past : 0; }

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

/* One batch: tokens [i0, i0 + n) of the call, image rows from *img_row on; pos (NULL: next_pos + i on every
 * axis) holds the call's positions axis-major with stride n_call. */
static tp_status eval_batch(tp_text_model *m, const int32_t *ids, int64_t n, const int32_t *pos_in, int64_t n_call,
                            const float *embd, int64_t *img_row, int64_t n_out, float *logits, tp_error *err) {
    const text_hparams *hp = &m->hp;
    const int64_t C = hp->n_embd;
    tp_context_params cp = tp_context_default_params();
    cp.cpu_path = m->params.cpu_path;
    cp.abort_callback = m->params.abort_callback; /* asked between nodes by tp_graph_compute */
    cp.abort_callback_data = m->params.abort_callback_data;
    tp_context *ctx = NULL;
    tp_status st = tp_context_create_child(&cp, m->wctx, &ctx, err);
    if (st != TP_OK) return st;
    tp_tensor **kc = calloc((size_t)hp->n_layer, sizeof(*kc));
    tp_tensor **vc = calloc((size_t)hp->n_layer, sizeof(*vc));
    if (!kc || !vc) {
        st = TP_ERR_OUT_OF_MEMORY;
        tp_error_set(err, st, "tp_text_eval: out of memory");
        goto done;
    }
    int64_t xne[2] = {C, n};
    tp_tensor *x = tp_new_tensor(ctx, TP_TYPE_F32, 2, xne);
    const int64_t n_axes = hp->n_pos_axes > 0 ? hp->n_pos_axes : 1;
    int64_t pne[2] = {n, n_axes};
    tp_tensor *pos = tp_new_tensor(ctx, TP_TYPE_I32, n_axes > 1 ? 2 : 1, pne);
    int32_t next_pos = m->next_pos;
    if (x && pos) {
        float *xd = tp_tensor_data(x);
        int32_t *pd = tp_tensor_data(pos);
        for (int64_t i = 0; i < n; i++) {
            for (int64_t a = 0; a < n_axes; a++) {
                pd[a * n + i] = pos_in ? pos_in[a * n_call + i] : (int32_t)(m->next_pos + i);
                next_pos = TP_MAX(next_pos, pd[a * n + i] + 1);
            }
            if (embd && ids[i] == hp->image_token_id) {
                memcpy(xd + i * C, embd + (*img_row)++ * C, (size_t)C * sizeof(float));
            } else {
                tp_row_to_f32(m->embd_type, m->embd_data + (size_t)ids[i] * m->embd_row_bytes, xd + i * C, C);
            }
        }
    }
    for (int l = 0; l < hp->n_layer; l++) {
        int64_t kne[3] = {hp->head_dim, hp->n_head_kv, m->n_ctx}, vne[3] = {hp->head_dim_v, hp->n_head_kv, m->n_ctx};
        kc[l] = tp_new_tensor_external(ctx, m->kv_type, 3, kne, m->kcache[l],
                                       cache_bytes(m->kv_type, hp->head_dim, hp->n_head_kv, m->n_ctx));
        vc[l] = tp_new_tensor_external(ctx, m->kv_type, 3, vne, m->vcache[l],
                                       cache_bytes(m->kv_type, hp->head_dim_v, hp->n_head_kv, m->n_ctx));
    }
    tp_graph *g = tp_graph_new(ctx);
    tp_tensor *out = NULL;
    if (g && x && pos) out = m->family->build(ctx, g, hp, m->weights, x, pos, kc, vc, m->n_past, n, n_out);
    st = tp_context_status(ctx);
    if (st == TP_OK && (!g || (n_out > 0 && !out))) st = TP_ERR_INTERNAL;
    if (st == TP_OK) st = tp_graph_compute(g, m->pool);
    if (st != TP_OK) {
        tp_error_set(err, st, "tp_text_eval: %s", tp_context_error(ctx)[0] ? tp_context_error(ctx) : "graph failed");
        goto done;
    }
    if (n_out > 0 && logits)
        memcpy(logits, tp_tensor_data(out), (size_t)n_out * (size_t)hp->n_vocab * sizeof(float));
    m->n_past += (int32_t)n;
    m->next_pos = next_pos;
done:
    free(kc);
    free(vc);
    tp_context_free(ctx);
    return st;
}

tp_status tp_text_eval(tp_text_model *m, const int32_t *ids, int32_t n, const float *embd, int64_t n_embd_rows,
                       float *logits, bool all_logits, tp_error *err) {
    return tp_text_eval_pos(m, ids, n, NULL, embd, n_embd_rows, logits, all_logits, err);
}

static tp_status eval_locked(tp_text_model *m, const int32_t *ids, int32_t n, const int32_t *pos, const float *embd,
                             int64_t n_embd_rows, float *logits, bool all_logits, tp_error *err) {
    if (n <= 0 || !ids) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_text_eval: need n >= 1 token ids (n = %d%s)", (int)n,
                     ids ? "" : ", ids NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    if ((int64_t)m->n_past + n > m->n_ctx) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                     "tp_text_eval: %d tokens after %d would overflow the KV cache of %d (reset, or load with a larger n_ctx)",
                     (int)n, (int)m->n_past, (int)m->n_ctx);
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (!m->weights_resident) {
        populate_range(m->weights_lo, m->weights_hi);
        m->weights_resident = true;
    }
    int64_t n_img = 0;
    for (int32_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= m->hp.n_vocab) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_text_eval: token %d at position %d is outside 0..%d",
                         (int)ids[i], (int)i, m->hp.n_vocab - 1);
            return TP_ERR_INVALID_ARGUMENT;
        }
        if (ids[i] == m->hp.image_token_id) n_img++;
    }
    if (embd ? n_embd_rows != n_img : n_embd_rows != 0) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                     "tp_text_eval: %lld embedding rows given for %lld image-token positions (id %d)%s",
                     (long long)n_embd_rows, (long long)n_img, m->hp.image_token_id, embd ? "" : " with embd NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    for (int64_t i = 0; pos && i < (int64_t)n * TP_MAX(m->hp.n_pos_axes, 1); i++) {
        if (pos[i] < 0 || pos[i] > INT32_MAX - n) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_text_eval_pos: position %d (entry %lld) is out of range",
                         (int)pos[i], (long long)i);
            return TP_ERR_INVALID_ARGUMENT;
        }
    }
    const int32_t n_past0 = m->n_past, next_pos0 = m->next_pos;
    int64_t img_row = 0;
    tp_status st = TP_OK;
    for (int64_t i0 = 0; i0 < n && st == TP_OK; i0 += m->n_batch) {
        int64_t nb = TP_MIN((int64_t)m->n_batch, (int64_t)n - i0);
        bool last = i0 + nb == n;
        int64_t n_out = !logits ? 0 : all_logits ? nb : last ? 1 : 0;
        float *dst = !logits ? NULL : all_logits ? logits + (size_t)i0 * (size_t)m->hp.n_vocab : logits;
        st = eval_batch(m, ids + i0, nb, pos ? pos + i0 : NULL, n, embd, &img_row, n_out, dst, err);
    }
    if (st != TP_OK) { /* nothing appended */
        m->n_past = n_past0;
        m->next_pos = next_pos0;
    }
    return st;
}

tp_status tp_text_eval_pos(tp_text_model *m, const int32_t *ids, int32_t n, const int32_t *pos, const float *embd,
                           int64_t n_embd_rows, float *logits, bool all_logits, tp_error *err) {
    if (!m) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_text_eval: the model is NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    /* one sequence per model: a second caller is refused at once, never interleaved into the first's cache */
    if (pthread_mutex_trylock(&m->busy) != 0) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                     "tp_text_eval: model in use by another thread (a text model holds one sequence: use one model "
                     "per thread, or take turns under your own lock)");
        return TP_ERR_INVALID_ARGUMENT;
    }
    tp_status st = eval_locked(m, ids, n, pos, embd, n_embd_rows, logits, all_logits, err);
    pthread_mutex_unlock(&m->busy);
    return st;
}
