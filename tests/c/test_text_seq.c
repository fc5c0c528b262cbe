/* test_text_seq.c - sequences of a text model (tp_text_seq) and tp_text_eval_batch, from C as another runtime
 * would use them, on the tiny llama.cpp-written text file of ../shared/fixtures (TP_FIXTURES overrides; a
 * missing fixture is a failure):
 *   1. create / free cycles in every order (a sequence freed after its model included: no leak, no
 *      use-after-free under ASan), n_ctx 0 meaning the model's, tp_text_seq_bytes;
 *   2. three sequences of different prompt lengths in one call, prefill then decode steps, give the logits of
 *      each sequence evaluated alone on the model's built-in sequence, and the right n_past each;
 *   3. refused calls append nothing to ANY sequence: a sequence of another model, one sequence twice, a bad id
 *      in one entry, an overflow of one sequence's cache, an abort in the middle of the pass;
 *   4. the thread contract: while a call uses a sequence, a call on it from another thread fails at once with
 *      "in use by another thread", and a call on another sequence of the same model waits its turn and
 *      succeeds.
 * Built against the ASan+UBSan library by `make ctest`. */
#include "tilepass.h"
#include "tp_check.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct slow_abort {
    atomic_int calls;
    atomic_int slow;   /* sleep 1 ms per call while set */
    atomic_int stop_at; /* answer true from this call on (0: never) */
} slow_abort;

static bool on_node(void *data) {
    slow_abort *a = data;
    int n = atomic_fetch_add(&a->calls, 1) + 1;
    if (atomic_load(&a->slow)) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    int at = atomic_load(&a->stop_at);
    return at > 0 && n >= at;
}

static float max_rel(const float *a, const float *b, int64_t n) {
    float d = 0.0f, m = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        d = fmaxf(d, fabsf(a[i] - b[i]));
        m = fmaxf(m, fabsf(b[i]));
    }
    return m > 0.0f ? d / m : d;
}

static tp_text_model *load(const char *path, slow_abort *a) {
    tp_text_params p = tp_text_default_params();
    p.n_threads = 2;
    p.n_ctx = 64;
    p.n_batch = 8; /* prompts span several graphs, entries share them */
    p.abort_callback = a ? on_node : NULL;
    p.abort_callback_data = a;
    tp_text_model *m = NULL;
    tp_error err;
    CHECK(tp_text_load(path, &p, &m, &err) == TP_OK && m != NULL, "model loads");
    return m;
}

static void test_create_free(const char *path) {
    tp_error err;
    tp_text_model *m = load(path, NULL);
    if (!m) return;
    tp_text_info info;
    tp_text_get_info(m, &info);
    tp_text_seq *s[4] = {0};
    for (int cycle = 0; cycle < 3; cycle++) {
        for (int i = 0; i < 4; i++)
            CHECK(tp_text_seq_create(m, i == 0 ? 0 : 16 * i, &s[i], &err) == TP_OK && s[i], "sequence created");
        CHECK(tp_text_seq_n_ctx(s[0]) == info.n_ctx && tp_text_seq_n_ctx(s[2]) == 32, "n_ctx 0 = the model's");
        CHECK(tp_text_seq_n_past(s[1]) == 0, "a new sequence is empty");
        CHECK(tp_text_seq_bytes(m, 32) > 0 && tp_text_seq_bytes(m, 32) * 2 == tp_text_seq_bytes(m, 64) &&
                  tp_text_seq_bytes(m, 0) == tp_text_seq_bytes(m, info.n_ctx),
              "tp_text_seq_bytes grows with n_ctx, 0 meaning the model's");
        for (int i = 0; i < 4; i++) tp_text_seq_free(s[(i + cycle) % 4]); /* any order */
    }
    CHECK(tp_text_seq_create(m, -1, &s[0], &err) == TP_ERR_INVALID_ARGUMENT && strstr(err.message, "n_ctx"),
          "a negative n_ctx is refused");
    CHECK(tp_text_seq_create(NULL, 0, &s[0], &err) == TP_ERR_INVALID_ARGUMENT, "a NULL model is refused");
    tp_text_seq_free(NULL);
    tp_text_seq_reset(NULL);
    CHECK(tp_text_seq_n_past(NULL) == 0 && tp_text_seq_n_ctx(NULL) == 0 && tp_text_seq_bytes(NULL, 0) == 0 &&
              tp_text_seq_bytes(m, -1) == 0,
          "NULL getters answer 0");
    /* a sequence may outlive its model's handle only to be freed */
    CHECK(tp_text_seq_create(m, 8, &s[0], &err) == TP_OK, "sequence created");
    const int32_t ids[3] = {0, 5, 6};
    tp_text_batch_entry e = {s[0], ids, 3, NULL, NULL, 0, NULL, false};
    CHECK(tp_text_eval_batch(m, &e, 1, &err) == TP_OK && tp_text_seq_n_past(s[0]) == 3, "evaluated");
    tp_text_free(m);
    tp_text_seq_free(s[0]);
}

/* Prompts of lengths 13, 5 and 21 (ids 3.., no image rows): batched prefill, then 4 decode steps of all three,
 * against each evaluated alone on the built-in sequence. */
static void test_batch_equals_alone(const char *path) {
    tp_error err;
    tp_text_model *m = load(path, NULL);
    if (!m) return;
    tp_text_info info;
    tp_text_get_info(m, &info);
    const int64_t V = info.n_vocab;
    enum { B = 3, STEPS = 4 };
    const int32_t lens[B] = {13, 5, 21};
    int32_t prompt[B][21];
    for (int b = 0; b < B; b++)
        for (int i = 0; i < lens[b]; i++) prompt[b][i] = 3 + (int32_t)((b * 97 + i * 31) % (V - 3));
    float *alone = malloc((size_t)(B * (STEPS + 1) * V) * sizeof(float));
    float *got = malloc((size_t)(B * (STEPS + 1) * V) * sizeof(float));
    int32_t next[B][STEPS];
    for (int b = 0; b < B && alone; b++) {
        tp_text_reset(m);
        CHECK(tp_text_eval(m, prompt[b], lens[b], NULL, 0, alone + (b * (STEPS + 1)) * V, false, &err) == TP_OK,
              "alone: prefill");
        for (int t = 0; t < STEPS; t++) {
            next[b][t] = 3 + (int32_t)((b * 13 + t * 7) % (V - 3)); /* fixed decode tokens */
            CHECK(tp_text_eval(m, &next[b][t], 1, NULL, 0, alone + (b * (STEPS + 1) + t + 1) * V, false, &err) == TP_OK,
                  "alone: step");
        }
    }
    tp_text_seq *s[B] = {0};
    for (int b = 0; b < B; b++) CHECK(tp_text_seq_create(m, 0, &s[b], &err) == TP_OK, "sequence");
    tp_text_batch_entry e[B];
    for (int b = 0; b < B; b++)
        e[b] = (tp_text_batch_entry){s[b], prompt[b], lens[b], NULL, NULL, 0, got + (b * (STEPS + 1)) * V, false};
    CHECK(got && tp_text_eval_batch(m, e, B, &err) == TP_OK, "batched prefill");
    for (int t = 0; t < STEPS; t++) {
        if (t == 1) tp_text_trim(m); /* the weights' pages dropped between steps (as tilepass-cli's vision passes do) */
        for (int b = 0; b < B; b++)
            e[b] = (tp_text_batch_entry){s[b], &next[b][t], 1, NULL, NULL, 0, got + (b * (STEPS + 1) + t + 1) * V, false};
        CHECK(got && tp_text_eval_batch(m, e, B, &err) == TP_OK, "batched step");
    }
    for (int b = 0; b < B; b++) {
        CHECK(tp_text_seq_n_past(s[b]) == lens[b] + STEPS, "each sequence holds its own tokens");
        for (int t = 0; t <= STEPS && alone && got; t++)
            CHECK(max_rel(got + (b * (STEPS + 1) + t) * V, alone + (b * (STEPS + 1) + t) * V, V) < 1e-4f,
                  "batched logits equal the sequence's alone");
    }
    for (int b = 0; b < B; b++) tp_text_seq_free(s[b]);
    free(alone);
    free(got);
    tp_text_free(m);
}

static void test_refusals(const char *path) {
    tp_error err;
    slow_abort ab;
    atomic_init(&ab.calls, 0);
    atomic_init(&ab.slow, 0);
    atomic_init(&ab.stop_at, 0);
    tp_text_model *m = load(path, &ab), *other = load(path, NULL);
    if (!m || !other) {
        tp_text_free(m);
        tp_text_free(other);
        return;
    }
    tp_text_info info;
    tp_text_get_info(m, &info);
    tp_text_seq *a = NULL, *b = NULL, *small = NULL, *foreign = NULL;
    CHECK(tp_text_seq_create(m, 0, &a, &err) == TP_OK && tp_text_seq_create(m, 0, &b, &err) == TP_OK &&
              tp_text_seq_create(m, 6, &small, &err) == TP_OK && tp_text_seq_create(other, 0, &foreign, &err) == TP_OK,
          "sequences");
    const int32_t ids[5] = {0, 7, 8, 9, 10};
    int32_t bad[2] = {0, info.n_vocab};
    tp_text_batch_entry pre[3] = {{a, ids, 3, NULL, NULL, 0, NULL, false},
                                  {b, ids, 2, NULL, NULL, 0, NULL, false},
                                  {small, ids, 4, NULL, NULL, 0, NULL, false}};
    CHECK(tp_text_eval_batch(m, pre, 3, &err) == TP_OK, "a first call");
#define UNCHANGED (tp_text_seq_n_past(a) == 3 && tp_text_seq_n_past(b) == 2 && tp_text_seq_n_past(small) == 4)
    CHECK(tp_text_eval_batch(m, NULL, 1, &err) == TP_ERR_INVALID_ARGUMENT, "entries NULL");
    CHECK(tp_text_eval_batch(m, pre, 0, &err) == TP_ERR_INVALID_ARGUMENT, "no entries");
    CHECK(tp_text_eval_batch(NULL, pre, 1, &err) == TP_ERR_INVALID_ARGUMENT, "model NULL");
    tp_text_trim(NULL); /* ignored */
    tp_text_batch_entry e[3] = {{a, ids, 1, NULL, NULL, 0, NULL, false}, {foreign, ids, 1, NULL, NULL, 0, NULL, false}};
    CHECK(tp_text_eval_batch(m, e, 2, &err) == TP_ERR_INVALID_ARGUMENT && strstr(err.message, "another model") &&
              strstr(err.message, "entry 1"),
          "a sequence of another model is refused, naming the entry");
    e[1].seq = a;
    CHECK(tp_text_eval_batch(m, e, 2, &err) == TP_ERR_INVALID_ARGUMENT && strstr(err.message, "same sequence"),
          "one sequence twice is refused");
    e[1] = (tp_text_batch_entry){b, bad, 2, NULL, NULL, 0, NULL, false};
    CHECK(tp_text_eval_batch(m, e, 2, &err) == TP_ERR_INVALID_ARGUMENT && strstr(err.message, "entry 1") &&
              strstr(err.message, "outside"),
          "a bad id in one entry is refused");
    e[1] = (tp_text_batch_entry){b, ids, 1, NULL, NULL, 0, NULL, false};
    e[2] = (tp_text_batch_entry){small, ids, 3, NULL, NULL, 0, NULL, false}; /* 4 + 3 > 6 */
    CHECK(tp_text_eval_batch(m, e, 3, &err) == TP_ERR_INVALID_ARGUMENT && strstr(err.message, "overflow") &&
              strstr(err.message, "entry 2"),
          "an overflow of one sequence's cache is refused");
    CHECK(UNCHANGED, "refused calls append nothing to any sequence");
    e[2].n = 2; /* fits exactly: 4 + 2 = 6 */
    atomic_store(&ab.calls, 0);
    atomic_store(&ab.stop_at, 5);
    CHECK(tp_text_eval_batch(m, e, 3, &err) == TP_ERR_ABORTED && strstr(err.message, "aborted"), "an aborted call");
    CHECK(UNCHANGED, "an aborted call appends nothing to any sequence");
    atomic_store(&ab.stop_at, 0);
    CHECK(tp_text_eval_batch(m, e, 3, &err) == TP_OK && tp_text_seq_n_past(a) == 4 && tp_text_seq_n_past(b) == 3 &&
              tp_text_seq_n_past(small) == 6,
          "the same call after the abort appends to every sequence");
#undef UNCHANGED
    tp_text_seq_free(a);
    tp_text_seq_free(b);
    tp_text_seq_free(small);
    tp_text_seq_free(foreign);
    tp_text_free(other);
    tp_text_free(m);
}

typedef struct busy_call {
    tp_text_model *m;
    tp_text_seq *s;
    tp_status st;
} busy_call;

static void *run_busy(void *arg) {
    busy_call *c = arg;
    static const int32_t ids[6] = {0, 11, 12, 13, 14, 15};
    tp_error err;
    tp_text_batch_entry e = {c->s, ids, 6, NULL, NULL, 0, NULL, false};
    c->st = tp_text_eval_batch(c->m, &e, 1, &err);
    return NULL;
}

static void test_threads(const char *path) {
    tp_error err;
    slow_abort ab;
    atomic_init(&ab.calls, 0);
    atomic_init(&ab.slow, 1);
    atomic_init(&ab.stop_at, 0);
    tp_text_model *m = load(path, &ab);
    if (!m) return;
    tp_text_seq *s1 = NULL, *s2 = NULL;
    CHECK(tp_text_seq_create(m, 0, &s1, &err) == TP_OK && tp_text_seq_create(m, 0, &s2, &err) == TP_OK, "sequences");
    busy_call c = {m, s1, TP_ERR_INTERNAL};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, run_busy, &c) == 0, "thread started");
    while (atomic_load(&ab.calls) < 3) {
        struct timespec ts = {0, 200000L};
        nanosleep(&ts, NULL);
    }
    const int32_t id = 4;
    tp_text_batch_entry e = {s1, &id, 1, NULL, NULL, 0, NULL, false};
    CHECK(tp_text_eval_batch(m, &e, 1, &err) == TP_ERR_INVALID_ARGUMENT && strstr(err.message, "in use by another thread"),
          "a sequence busy in another call is refused at once");
    e.seq = s2;
    CHECK(tp_text_eval_batch(m, &e, 1, &err) == TP_OK && tp_text_seq_n_past(s2) == 1,
          "another sequence of the model waits its turn and succeeds");
    pthread_join(th, NULL);
    CHECK(c.st == TP_OK && tp_text_seq_n_past(s1) == 6, "the busy call completed");
    tp_text_seq_free(s1);
    tp_text_seq_free(s2);
    tp_text_free(m);
}

int main(void) {
    const char *fixtures = getenv("TP_FIXTURES") ? getenv("TP_FIXTURES") : "../shared/fixtures";
    char path[1024];
    snprintf(path, sizeof path, "%s/llamacpp-tiny-v1/text-f16.gguf", fixtures);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "the fixture llamacpp-tiny-v1/text-f16.gguf is there");
    if (f) {
        fclose(f);
        test_create_free(path);
        test_batch_equals_alone(path);
        test_refusals(path);
        test_threads(path);
    }
    printf("test_text_seq: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
