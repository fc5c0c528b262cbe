/* test_hardening.c - cancellation and the thread contract (tilepass.h, "Threads, memory-mapped files, untrusted
 * input"), on the tiny llama.cpp-written files of ../shared/fixtures (TP_FIXTURES overrides; a missing fixture
 * is a failure):
 *   1. the abort callback at the graph level: with 1, 2 and 4 threads, a callback that answers true at its
 *      N-th call stops tp_graph_compute right after that node (exactly N calls, TP_ERR_ABORTED, "aborted"), for
 *      every N from 1 to one past the node count (no deadlock between the pool's threads);
 *   2. a vision encode stopped after a few nodes returns TP_ERR_ABORTED at once (N calls exactly, a small
 *      part of a whole encode's time) and the model then gives tokens identical to an undisturbed encode;
 *   3. a text eval stopped the same way appends nothing (n_past unchanged) and the next eval's logits equal
 *      those of a run that never aborted;
 *   4. one vision model shared by 8 threads encoding pages of two sizes (graphs rebuilt under the lock) for
 *      TP_HARDENING_SECONDS (default 2): every result identical to the one-thread reference, while a ninth
 *      thread reads the model's getters;
 *   5. the text model's contract: an eval that overlaps another call fails at once with
 *      TP_ERR_INVALID_ARGUMENT "model in use by another thread" and changes nothing, tp_text_n_past answers
 *      meanwhile, tp_text_reset waits for the call in progress;
 *   6. non-finite values (what a hostile file's weights make of activations: NaN, +-inf, 1e30) through
 *      tp_mul_mat on quantised weights on every kernel path and through tp_quantize: any numbers, no undefined
 *      behaviour (make fuzz-smoke found the AVX2 activation quantiser summing cvtps_epi32's INT_MIN).
 * Built against the ASan+UBSan library by `make ctest`; build it with -fsanitize=thread against a TSan build
 * of the library to check 4 and 5 for races (README, "Guarantees"). */
#include "tilepass.h"
#include "tp_check.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- a counting abort callback: true from its abort_at-th call on (abort_at 0: never) ---- */

typedef struct counter {
    atomic_int calls;
    atomic_int abort_at;
} counter;

static bool count_and_abort(void *data) {
    counter *c = data;
    int n = atomic_fetch_add(&c->calls, 1) + 1;
    int at = atomic_load(&c->abort_at);
    return at > 0 && n >= at;
}

static void counter_reset(counter *c, int abort_at) {
    atomic_store(&c->calls, 0);
    atomic_store(&c->abort_at, abort_at);
}

/* ---- 1. graph level ---- */

static void test_graph_abort(void) {
    for (int nth = 1; nth <= 4; nth *= 2) {
        counter c;
        counter_reset(&c, 0);
        tp_context_params cp = tp_context_default_params();
        CHECK(cp.abort_callback == NULL && cp.abort_callback_data == NULL, "no abort callback by default");
        cp.abort_callback = count_and_abort;
        cp.abort_callback_data = &c;
        tp_context *ctx = NULL;
        tp_threadpool *pool = NULL;
        tp_threadpool_params tpp = tp_threadpool_default_params();
        tpp.n_threads = nth;
        if (tp_context_create(&cp, &ctx, NULL) != TP_OK || tp_threadpool_create(&tpp, &pool, NULL) != TP_OK) {
            CHECK(false, "context and pool");
            tp_context_free(ctx);
            return;
        }
        /* a chain of 12 computing ops over a 64 x 33 matrix, with a view in the middle (no kernel) */
        const int64_t ne[2] = {64, 33};
        tp_tensor *x = tp_new_tensor(ctx, TP_TYPE_F32, 2, ne);
        float *xd = tp_tensor_data(x);
        for (int64_t i = 0; i < 64 * 33; i++) xd[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
        tp_tensor *y = x;
        for (int k = 0; k < 6; k++) {
            y = tp_gelu(ctx, tp_scale(ctx, y, 0.9f));
            if (k == 2) y = tp_reshape(ctx, y, 2, ne);
        }
        tp_graph *g = tp_graph_new(ctx);
        CHECK(tp_graph_add_output(g, y) == TP_OK && tp_graph_plan(g) == TP_OK, "graph");
        CHECK(tp_graph_compute(g, pool) == TP_OK, "compute with a callback that never aborts");
        const int n_compute = atomic_load(&c.calls);
        CHECK(n_compute == 12, "the callback is asked once per computing node");
        float ref[64 * 33];
        CHECK(tp_tensor_get_f32(y, ref, 64 * 33) == TP_OK, "reference");
        for (int at = 1; at <= n_compute + 1; at++) {
            counter_reset(&c, at);
            tp_context_clear_error(ctx);
            tp_status st = tp_graph_compute(g, pool);
            if (at <= n_compute) {
                CHECK(st == TP_ERR_ABORTED, "aborted");
                CHECK(tp_context_status(ctx) == TP_ERR_ABORTED && strstr(tp_context_error(ctx), "aborted"),
                      "the context records \"aborted\"");
                CHECK(atomic_load(&c.calls) == at, "stopped right after the node whose call said true");
            } else {
                CHECK(st == TP_OK && atomic_load(&c.calls) == n_compute, "a late abort_at never fires");
            }
        }
        /* the graph computes again, the same numbers */
        counter_reset(&c, 0);
        tp_context_clear_error(ctx);
        float again[64 * 33];
        CHECK(tp_graph_compute(g, pool) == TP_OK && tp_tensor_get_f32(y, again, 64 * 33) == TP_OK &&
                  memcmp(ref, again, sizeof ref) == 0,
              "usable after an abort");
        CHECK(strcmp(tp_status_string(TP_ERR_ABORTED), "aborted") == 0, "status string");
        tp_threadpool_free(pool);
        tp_context_free(ctx);
    }
}

/* ---- pages ---- */

/* A w x h RGB test card (gradients and stripes). */
static uint8_t *test_card(int w, int h, int seed) {
    uint8_t *rgb = malloc((size_t)w * (size_t)h * 3);
    if (!rgb) return NULL;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = rgb + ((size_t)y * (size_t)w + (size_t)x) * 3;
            p[0] = (uint8_t)(x * 255 / (w > 1 ? w - 1 : 1));
            p[1] = (uint8_t)(y * 255 / (h > 1 ? h - 1 : 1));
            p[2] = (uint8_t)((((x / 7) + (y / 5) + seed) % 3) * 120);
        }
    return rgb;
}

typedef struct page_case {
    const char *mode;
    tp_page *page;
    const tp_page_views *views;
    int64_t n_tokens;
    float *ref; /* n_tokens x n_embd, from one thread */
} page_case;

static bool make_case(tp_vision_model *m, const char *mode, int w, int h, int seed, page_case *pc) {
    memset(pc, 0, sizeof *pc);
    pc->mode = mode;
    tp_preprocess_params pp;
    if (tp_vision_preprocess_params(m, mode, &pp) != TP_OK) return false;
    uint8_t *rgb = test_card(w, h, seed);
    tp_rgb_image img = {rgb, w, h, 0};
    tp_error err;
    tp_status st = rgb ? tp_page_from_rgb(&img, &pp, &pc->page, &err) : TP_ERR_OUT_OF_MEMORY;
    free(rgb);
    if (st != TP_OK) return false;
    pc->views = tp_page_get_views(pc->page);
    pc->n_tokens = tp_vision_page_n_tokens(m, pc->views);
    return pc->n_tokens > 0;
}

static void free_case(page_case *pc) {
    tp_page_free(pc->page);
    free(pc->ref);
}

static tp_status encode(tp_vision_model *m, const page_case *pc, float *out, tp_error *err) {
    return tp_vision_encode(m, pc->views, 1, &out, err);
}

static tp_vision_model *load_vision(const char *fixtures, const char *dir, int n_threads, counter *c) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/mmproj-f32.gguf", fixtures, dir);
    tp_vision_params vp = tp_vision_default_params();
    CHECK(vp.abort_callback == NULL && vp.abort_callback_data == NULL, "vision: no abort callback by default");
    vp.n_threads = n_threads;
    if (c) {
        vp.abort_callback = count_and_abort;
        vp.abort_callback_data = c;
    }
    tp_vision_model *m = NULL;
    tp_error err;
    tp_status st = tp_vision_load(path, &vp, &m, &err);
    if (st != TP_OK) fprintf(stderr, "%s: %s\n", path, err.message);
    CHECK(st == TP_OK, "vision fixture loads (a missing fixture is a failure)");
    return m;
}

/* ---- 2. vision encode stopped ---- */

static void test_vision_abort(const char *fixtures, const char *dir, const char *mode) {
    counter c;
    counter_reset(&c, 0);
    tp_vision_model *m = load_vision(fixtures, dir, 2, &c);
    if (!m) return;
    tp_vision_info info;
    tp_vision_get_info(m, &info);
    page_case pc;
    if (!make_case(m, mode, 900, 1300, 1, &pc)) {
        CHECK(false, "page");
        tp_vision_free(m);
        return;
    }
    const size_t n = (size_t)pc.n_tokens * (size_t)info.n_embd;
    float *ref = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float));
    tp_error err;
    double t0 = now_s();
    CHECK(encode(m, &pc, ref, &err) == TP_OK, "encode");
    const double full_s = now_s() - t0;
    const int n_calls = atomic_load(&c.calls);
    CHECK(n_calls > 50, "the callback is asked between the nodes of an encode");
    /* stop at the 5th node; then at the last one; each time the model must come back whole */
    const int stops[2] = {5, n_calls};
    for (int k = 0; k < 2; k++) {
        counter_reset(&c, stops[k]);
        for (size_t i = 0; i < n; i++) out[i] = -12345.0f;
        t0 = now_s();
        tp_status st = encode(m, &pc, out, &err);
        const double stop_s = now_s() - t0;
        CHECK(st == TP_ERR_ABORTED && strstr(err.message, "aborted") != NULL, "encode aborted, message says so");
        CHECK(atomic_load(&c.calls) == stops[k], "no node after the one whose call said true");
        CHECK(out[0] == -12345.0f && out[n - 1] == -12345.0f, "an aborted encode writes no tokens");
        if (k == 0) {
            CHECK(stop_s < 0.5 * full_s + 0.05, "an early abort returns in a fraction of an encode's time");
            printf("  %s %s: whole encode %.3f s (%d nodes asked), stopped at node 5 after %.4f s\n", dir, mode, full_s,
                   n_calls, stop_s);
        }
        counter_reset(&c, 0);
        CHECK(encode(m, &pc, out, &err) == TP_OK && memcmp(out, ref, n * sizeof(float)) == 0,
              "after an abort the model encodes the same tokens");
    }
    free(ref);
    free(out);
    free_case(&pc);
    tp_vision_free(m);
}

/* ---- 3. text eval stopped ---- */

static tp_text_model *load_text(const char *fixtures, const char *dir, counter *c) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/text-f16.gguf", fixtures, dir);
    tp_text_params tp = tp_text_default_params();
    CHECK(tp.abort_callback == NULL && tp.abort_callback_data == NULL, "text: no abort callback by default");
    tp.n_threads = 2;
    tp.n_ctx = 64;
    tp.n_batch = 4; /* several batch graphs per call: an abort in a later batch must undo the earlier ones */
    if (c) {
        tp.abort_callback = count_and_abort;
        tp.abort_callback_data = c;
    }
    tp_text_model *m = NULL;
    tp_error err;
    tp_status st = tp_text_load(path, &tp, &m, &err);
    if (st != TP_OK) fprintf(stderr, "%s: %s\n", path, err.message);
    CHECK(st == TP_OK, "text fixture loads (a missing fixture is a failure)");
    return m;
}

static const int32_t PROMPT[10] = {0, 17, 400, 9, 1200, 77, 5, 3000, 42, 11};

static void test_text_abort(const char *fixtures) {
    counter c;
    counter_reset(&c, 0);
    tp_text_model *m = load_text(fixtures, "llamacpp-tiny-v1", &c);
    if (!m) return;
    tp_text_info info;
    tp_text_get_info(m, &info);
    float *ref = malloc((size_t)info.n_vocab * sizeof(float)), *out = malloc((size_t)info.n_vocab * sizeof(float));
    float *ref2 = malloc((size_t)info.n_vocab * sizeof(float));
    tp_error err;
    CHECK(tp_text_eval(m, PROMPT, 10, NULL, 0, ref, false, &err) == TP_OK, "eval");
    const int per_prompt = atomic_load(&c.calls);
    const int32_t next = 7;
    CHECK(tp_text_eval(m, &next, 1, NULL, 0, ref2, false, &err) == TP_OK && tp_text_n_past(m) == 11, "one more");
    /* the same again, stopped first in the first batch, then in the last one (earlier batches done) */
    const int stops[2] = {3, per_prompt - 2};
    for (int k = 0; k < 2; k++) {
        tp_text_reset(m);
        counter_reset(&c, stops[k]);
        tp_status st = tp_text_eval(m, PROMPT, 10, NULL, 0, out, false, &err);
        CHECK(st == TP_ERR_ABORTED && strstr(err.message, "aborted") != NULL, "eval aborted, message says so");
        CHECK(atomic_load(&c.calls) == stops[k], "no node after the one whose call said true");
        CHECK(tp_text_n_past(m) == 0, "an aborted eval appends nothing");
        counter_reset(&c, 0);
        CHECK(tp_text_eval(m, PROMPT, 10, NULL, 0, out, false, &err) == TP_OK &&
                  memcmp(out, ref, (size_t)info.n_vocab * sizeof(float)) == 0,
              "after an abort the same logits");
        /* an abort with tokens in the cache keeps them */
        counter_reset(&c, 2);
        CHECK(tp_text_eval(m, &next, 1, NULL, 0, out, false, &err) == TP_ERR_ABORTED && tp_text_n_past(m) == 10,
              "an aborted decode step keeps the cache");
        counter_reset(&c, 0);
        CHECK(tp_text_eval(m, &next, 1, NULL, 0, out, false, &err) == TP_OK &&
                  memcmp(out, ref2, (size_t)info.n_vocab * sizeof(float)) == 0,
              "and the next step continues as if nothing happened");
    }
    free(ref);
    free(ref2);
    free(out);
    tp_text_free(m);
}

/* ---- 4. one vision model, 8 threads ---- */

#define N_SHARED 8

typedef struct shared_run {
    tp_vision_model *m;
    page_case *cases;
    int n_cases;
    size_t n_embd;
    double until;
    atomic_int n_encodes, n_bad;
    atomic_bool stop_readers;
} shared_run;

typedef struct worker_arg {
    shared_run *run;
    int id;
} worker_arg;

static void *encode_worker(void *p) {
    worker_arg *a = p;
    shared_run *r = a->run;
    size_t cap = 0;
    for (int i = 0; i < r->n_cases; i++) cap = cap > (size_t)r->cases[i].n_tokens ? cap : (size_t)r->cases[i].n_tokens;
    float *out = malloc(cap * r->n_embd * sizeof(float));
    if (!out) {
        atomic_fetch_add(&r->n_bad, 1);
        return NULL;
    }
    int k = a->id;
    do {
        const page_case *pc = &r->cases[k++ % r->n_cases];
        tp_error err;
        if (encode(r->m, pc, out, &err) != TP_OK ||
            memcmp(out, pc->ref, (size_t)pc->n_tokens * r->n_embd * sizeof(float)) != 0)
            atomic_fetch_add(&r->n_bad, 1);
        atomic_fetch_add(&r->n_encodes, 1);
    } while (now_s() < r->until);
    free(out);
    return NULL;
}

static void *getter_worker(void *p) {
    shared_run *r = p;
    while (!atomic_load(&r->stop_readers)) {
        tp_vision_info info;
        tp_preprocess_params pp;
        bool ok = tp_vision_get_info(r->m, &info) == TP_OK && (size_t)info.n_embd == r->n_embd &&
                  tp_vision_mode_name(r->m, 0) != NULL && tp_vision_preprocess_params(r->m, NULL, &pp) == TP_OK &&
                  tp_vision_page_n_tokens(r->m, r->cases[0].views) == r->cases[0].n_tokens;
        (void)tp_vision_last_compute_bytes(r->m);
        if (!ok) atomic_fetch_add(&r->n_bad, 1);
        sleep_ms(1);
    }
    return NULL;
}

static void test_vision_shared(const char *fixtures, double seconds) {
    tp_vision_model *m = load_vision(fixtures, "llamacpp-tiny-v1", 2, NULL);
    if (!m) return;
    tp_vision_info info;
    tp_vision_get_info(m, &info);
    /* two view sizes (tiny: 512, small: 640): threads alternating between them make the model rebuild its graph */
    page_case cases[2];
    bool ok = make_case(m, "tiny", 640, 480, 2, &cases[0]) && make_case(m, "small", 500, 700, 3, &cases[1]);
    CHECK(ok, "pages");
    for (int i = 0; ok && i < 2; i++) {
        cases[i].ref = malloc((size_t)cases[i].n_tokens * (size_t)info.n_embd * sizeof(float));
        tp_error err;
        ok = cases[i].ref && encode(m, &cases[i], cases[i].ref, &err) == TP_OK;
    }
    CHECK(ok, "one-thread references");
    if (ok) {
        shared_run r;
        memset(&r, 0, sizeof r);
        r.m = m;
        r.cases = cases;
        r.n_cases = 2;
        r.n_embd = (size_t)info.n_embd;
        r.until = now_s() + seconds;
        atomic_init(&r.n_encodes, 0);
        atomic_init(&r.n_bad, 0);
        atomic_init(&r.stop_readers, false);
        pthread_t th[N_SHARED], reader;
        worker_arg args[N_SHARED];
        int started = 0;
        for (int i = 0; i < N_SHARED; i++) {
            args[i].run = &r;
            args[i].id = i;
            if (pthread_create(&th[i], NULL, encode_worker, &args[i]) == 0) started++;
        }
        bool reader_ok = pthread_create(&reader, NULL, getter_worker, &r) == 0;
        for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
        atomic_store(&r.stop_readers, true);
        if (reader_ok) pthread_join(reader, NULL);
        CHECK(started == N_SHARED && reader_ok, "threads start");
        CHECK(atomic_load(&r.n_bad) == 0, "every encode from 8 threads equals the one-thread result");
        CHECK(atomic_load(&r.n_encodes) >= N_SHARED, "every thread encoded");
        printf("  8 threads on one vision model: %d encodes in %.1f s, %d differing\n", atomic_load(&r.n_encodes),
               seconds, atomic_load(&r.n_bad));
    }
    free_case(&cases[0]);
    free_case(&cases[1]);
    tp_vision_free(m);
}

/* ---- 5. the text model's contract ---- */

typedef struct hold {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool inside, release;
} hold;

/* The abort callback of the held model: the first call announces that an eval is running and waits for the
 * release; later calls return at once. */
static bool hold_eval(void *data) {
    hold *h = data;
    pthread_mutex_lock(&h->mu);
    if (!h->inside) {
        h->inside = true;
        pthread_cond_broadcast(&h->cv);
    }
    while (!h->release) pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    return false;
}

typedef struct text_call {
    tp_text_model *m;
    tp_status st;
    float *logits;
} text_call;

static void *eval_thread(void *p) {
    text_call *c = p;
    tp_error err;
    c->st = tp_text_eval(c->m, PROMPT, 10, NULL, 0, c->logits, false, &err);
    return NULL;
}

static void *reset_thread(void *p) {
    tp_text_reset(((text_call *)p)->m);
    return NULL;
}

static void test_text_contract(const char *fixtures) {
    char path[1024];
    snprintf(path, sizeof path, "%s/llamacpp-tiny-v1/text-f16.gguf", fixtures);
    hold h;
    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    h.inside = false;
    h.release = false;
    tp_text_params tp = tp_text_default_params();
    tp.n_ctx = 64;
    tp.abort_callback = hold_eval;
    tp.abort_callback_data = &h;
    tp_text_model *m = NULL;
    tp_error err;
    CHECK(tp_text_load(path, &tp, &m, &err) == TP_OK, "text fixture loads");
    if (!m) return;
    tp_text_info info;
    tp_text_get_info(m, &info);
    float *a = malloc((size_t)info.n_vocab * sizeof(float)), *b = malloc((size_t)info.n_vocab * sizeof(float));
    text_call first = {m, TP_ERR_INTERNAL, a};
    pthread_t t1, t2;
    CHECK(pthread_create(&t1, NULL, eval_thread, &first) == 0, "thread");
    pthread_mutex_lock(&h.mu);
    while (!h.inside) pthread_cond_wait(&h.cv, &h.mu);
    pthread_mutex_unlock(&h.mu);
    /* the first eval is now inside its graph: a second one is refused at once, nothing changes */
    const int32_t one = 5;
    tp_status st = tp_text_eval(m, &one, 1, NULL, 0, b, false, &err);
    CHECK(st == TP_ERR_INVALID_ARGUMENT && strstr(err.message, "model in use by another thread") != NULL,
          "an overlapping eval is refused with a clear message");
    CHECK(tp_text_n_past(m) == 0, "n_past answers while an eval runs");
    CHECK(tp_text_get_info(m, &info) == TP_OK && tp_text_token_bytes(m, 3, NULL) != NULL, "getters answer meanwhile");
    /* a reset from another thread waits for the eval in progress */
    text_call second = {m, TP_OK, NULL};
    CHECK(pthread_create(&t2, NULL, reset_thread, &second) == 0, "thread");
    sleep_ms(50);
    pthread_mutex_lock(&h.mu);
    h.release = true;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    CHECK(first.st == TP_OK, "the first eval completes");
    CHECK(tp_text_n_past(m) == 0, "the reset ran after it (it waited)");
    /* and the model still works from this thread, the same numbers */
    CHECK(tp_text_eval(m, PROMPT, 10, NULL, 0, b, false, &err) == TP_OK &&
              memcmp(a, b, (size_t)info.n_vocab * sizeof(float)) == 0,
          "same logits afterwards");
    free(a);
    free(b);
    tp_text_free(m);
    pthread_mutex_destroy(&h.mu);
    pthread_cond_destroy(&h.cv);
}

/* ---- 6. non-finite values ---- */

static void test_nonfinite(void) {
    const float specials[4] = {NAN, INFINITY, -INFINITY, 1e30f};
    const int64_t K = 64, M = 32, N = 33; /* enough rows and tokens for the GEMM paths (8-bit activation blocks) */
    float *w = malloc((size_t)(K * M) * sizeof(float)), *x = malloc((size_t)(K * N) * sizeof(float));
    for (int64_t i = 0; i < K * M; i++) w[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
    for (int64_t i = 0; i < K * N; i++) x[i] = (float)((i * 5) % 11) / 11.0f - 0.5f;
    for (int s = 0; s < 4; s++) {
        x[3] = x[4] = specials[s];                   /* token 0, first half of the first block */
        x[K + 40] = x[K + 41] = specials[(s + 1) % 4]; /* token 1, second block */
        w[5] = specials[s];              /* a weight too (quantised by tp_tensor_set_f32) */
        for (int path = 0; path <= 2; path++) {
            const int types[3] = {TP_TYPE_Q8_0, TP_TYPE_Q4_0, TP_TYPE_F16};
            for (int t = 0; t < 3; t++) {
                tp_context_params cp = tp_context_default_params();
                cp.cpu_path = path;
                tp_context *ctx = NULL;
                tp_threadpool *pool = NULL;
                if (tp_context_create(&cp, &ctx, NULL) != TP_OK || tp_threadpool_create(NULL, &pool, NULL) != TP_OK) {
                    CHECK(false, "context");
                    tp_context_free(ctx);
                    continue;
                }
                const int64_t wne[2] = {K, M}, xne[2] = {K, N};
                tp_tensor *tw = tp_new_tensor(ctx, types[t], 2, wne), *tx = tp_new_tensor(ctx, TP_TYPE_F32, 2, xne);
                CHECK(tp_tensor_set_f32(tw, w, K * M) == TP_OK && tp_tensor_set_f32(tx, x, K * N) == TP_OK,
                      "non-finite values are stored (quantised)");
                tp_tensor *y = tp_mul_mat(ctx, tw, tx);
                tp_graph *g = tp_graph_new(ctx);
                CHECK(tp_graph_add_output(g, y) == TP_OK, "graph");
                (void)tp_graph_compute(g, pool); /* any numbers; the sanitizers watch */
                float out[32 * 33];
                CHECK(tp_tensor_get_f32(y, out, M * N) == TP_OK, "read back");
                tp_threadpool_free(pool);
                tp_context_free(ctx);
            }
        }
        uint8_t q[4 * 34 + 64];
        size_t written = 0;
        CHECK(tp_quantize(TP_TYPE_Q8_0, x, 1, K, q, sizeof q, &written, NULL) == TP_OK, "tp_quantize of non-finite");
    }
    free(w);
    free(x);
}

int main(void) {
    const char *fixtures = getenv("TP_FIXTURES") ? getenv("TP_FIXTURES") : "../shared/fixtures";
    const char *secs = getenv("TP_HARDENING_SECONDS");
    const double seconds = secs && atof(secs) > 0 ? atof(secs) : 2.0;
    double t0 = now_s();
    test_graph_abort();
    test_vision_abort(fixtures, "llamacpp-tiny-v1", "tiny");
    test_vision_abort(fixtures, "llamacpp-tiny-ocr2", "base");
    test_text_abort(fixtures);
    test_vision_shared(fixtures, seconds);
    test_text_contract(fixtures);
    test_nonfinite();
    printf("test_hardening: %d passed, %d failed (%.1f s)\n", n_pass, n_fail, now_s() - t0);
    return n_fail ? 1 : 0;
}
