/* test_session.c - the session API (include/tilepass.h "Sessions") from C, on the tiny llama.cpp-written DeepSeek-OCR
 * and PaddleOCR-VL files of ../shared/fixtures (TP_FIXTURES overrides; a missing fixture is a failure):
 *   1. 1,000 create / free cycles over loaded models (no leak under ASan), and a few full cycles (submit, generate);
 *   2. a session that loads its own files: a page in, text out; streamed pieces are whole UTF-8 characters and
 *      join to the result's text; a callback returning false stops; a cancel stops its image encode (the model's
 *      abort callback) and its generation;
 *   3. tp_session_cancel from another thread in the middle of a decode: TP_ERR_ABORTED, fewer tokens than asked,
 *      the session usable afterwards; a cancel before a submit aborts that submit only;
 *   4. PaddleOCR-VL: its chat template rendered in C, 3-D positions, a few tokens;
 *   5. tp_session_generate_batch: three sessions of one model with their own prompts, limits and no-repeat rules give
 *      each the tokens and text it gets alone; streaming per session; a cancel of one (from its own callback) ends
 *      only it; sessions of another model or twice are refused; on_done refills a slot with the next request
 *      (continuous batching) and each request's tokens are those it gets alone; tp_session_submit_ids of the ids a
 *      submit built gives that submit's tokens;
 *   6. bad arguments give clear errors (NULLs, no image, a zero-size image, two <image> for one image, an unknown
 *      image mode, generate without submit, files that do not exist or are swapped).
 * Built against the ASan+UBSan library by `make ctest`. (Parity with the Python path: tests/test_session_native.py.) */
#include "tilepass.h"
#include "tp_check.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char text_path[1024], vision_path[1024];

static bool has(const tp_error *e, const char *what) { return strstr(e->message, what) != NULL; }

/* A 96 x 64 test page (a gradient). */
static uint8_t page_rgb[64][96][3];
static tp_session_image page(void) {
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 96; x++)
            for (int c = 0; c < 3; c++) page_rgb[y][x][c] = (uint8_t)(x * 2 + y * c);
    tp_session_image im = {.rgb = {.rgb = &page_rgb[0][0][0], .width = 96, .height = 64, .stride = 0}};
    return im;
}

static tp_session_params params(void) {
    tp_session_params p = tp_session_default_params();
    p.n_threads = 2;
    p.n_ctx = 512;
    p.image_mode = "tiny";
    return p;
}

static void test_cycles(tp_text_model *t, tp_vision_model *v) {
    tp_session_params p = params();
    tp_error err = {0};
    int ok = 0;
    for (int i = 0; i < 1000; i++) {
        tp_session *s = NULL;
        ok += tp_session_create_from_models(t, v, &p, &s, &err) == TP_OK && s != NULL;
        tp_session_free(s);
    }
    CHECK(ok == 1000, "1000 create / free cycles");
    float *embd = calloc(16 * 32, sizeof(float)); /* 16 image rows of the tiny model's width 32 */
    ok = 0;
    for (int i = 0; i < 5; i++) {
        tp_session *s = NULL;
        tp_session_image im = {.embd = embd, .n_tokens = 16};
        tp_session_gen_params g = tp_session_default_gen_params();
        g.max_tokens = 4;
        tp_session_result r;
        ok += tp_session_create_from_models(t, v, &p, &s, &err) == TP_OK && tp_session_submit(s, NULL, &im, 1, &err) == TP_OK &&
              tp_session_generate(s, &g, &r, &err) == TP_OK && r.n_prompt_tokens > 16 && r.n_generated_tokens <= 4;
        tp_session_free(s);
    }
    CHECK(ok == 5, "create / submit embeddings / generate / free cycles");
    free(embd);
}

typedef struct stream {
    char text[65536];
    size_t len;
    int pieces, stop_after;
    bool split;
    atomic_int seen;
} stream;

static bool on_text(const char *t, size_t len, void *data) {
    stream *s = data;
    unsigned char last = len ? (unsigned char)t[len - 1] : 0;
    s->split = s->split || last >= 0xC0 || (last >= 0x80 && len == 1); /* a piece must not end inside a character */
    if (s->len + len < sizeof s->text) memcpy(s->text + s->len, t, len);
    s->len += len;
    s->pieces++;
    atomic_fetch_add(&s->seen, 1);
    return s->stop_after == 0 || s->pieces < s->stop_after;
}

static void *cancel_soon(void *data) {
    struct timespec ts = {0, 2000000L};
    nanosleep(&ts, NULL);
    tp_session_cancel(data);
    return NULL;
}

static void test_own_files(void) {
    tp_session_params p = params();
    p.image_mode = NULL; /* the default (gundam): a 1024 view, an encode that lasts well past the cancel below */
    tp_session *s = NULL;
    tp_error err = {0};
    CHECK(tp_session_create(text_path, vision_path, &p, &s, &err) == TP_OK, err.message);
    if (!s) return;
    tp_session_image im = page();
    stream st = {.stop_after = 0};
    tp_session_gen_params g = tp_session_default_gen_params();
    g.max_tokens = 12;
    g.on_text = on_text;
    g.on_text_data = &st;
    tp_session_result r;
    CHECK(tp_session_submit(s, "<image>\nFree OCR.", &im, 1, &err) == TP_OK, err.message);
    CHECK(tp_session_generate(s, &g, &r, &err) == TP_OK, err.message);
    CHECK(r.n_generated_tokens >= 1 && r.n_generated_tokens <= 12 && r.vision_s > 0 && r.prefill_s > 0, "counts, timings");
    CHECK(st.len == r.text_len && memcmp(st.text, r.text, r.text_len) == 0 && !st.split, "the streamed pieces join to the text");
    CHECK(tp_session_generate(s, &g, &r, &err) == TP_ERR_INVALID_ARGUMENT && has(&err, "nothing submitted"),
          "a request is generated once");
    stream st2 = {.stop_after = 2};
    g.on_text_data = &st2;
    CHECK(tp_session_submit(s, NULL, &im, 1, &err) == TP_OK, err.message);
    CHECK(tp_session_generate(s, &g, &r, &err) == TP_OK && r.stop_reason == TP_SESSION_STOP_CALLBACK && st2.pieces == 2,
          "a callback returning false stops");
    /* the session loaded the models: a cancel stops the image encode itself (hundreds of ms under ASan) */
    pthread_t th;
    pthread_create(&th, NULL, cancel_soon, s);
    tp_status rc = tp_session_submit(s, NULL, &im, 1, &err);
    pthread_join(th, NULL);
    CHECK(rc == TP_ERR_ABORTED && has(&err, "aborted"), "cancel during the encode of a session's own model");
    CHECK(tp_session_submit(s, NULL, &im, 1, &err) == TP_OK, "the next submit runs");
    g.on_text = NULL;
    g.max_tokens = 400;
    g.ignore_eos = true;
    pthread_create(&th, NULL, cancel_soon, s);
    rc = tp_session_generate(s, &g, &r, &err);
    pthread_join(th, NULL);
    CHECK(rc == TP_ERR_ABORTED && r.n_generated_tokens < 400, "cancel during the prefill / decode");
    tp_session_free(s);
}

typedef struct canceller {
    tp_session *s;
    stream *st;
} canceller;

static void *cancel_later(void *data) {
    canceller *c = data;
    while (atomic_load(&c->st->seen) < 3) {
        struct timespec ts = {0, 200000L};
        nanosleep(&ts, NULL);
    }
    tp_session_cancel(c->s);
    return NULL;
}

static void test_cancel(tp_text_model *t, tp_vision_model *v) {
    tp_session_params p = params();
    tp_session *s = NULL;
    tp_error err = {0};
    CHECK(tp_session_create_from_models(t, v, &p, &s, &err) == TP_OK, err.message);
    if (!s) return;
    tp_session_image im = page();
    stream st = {.stop_after = 0};
    tp_session_gen_params g = tp_session_default_gen_params();
    g.max_tokens = 400;
    g.ignore_eos = true;
    g.on_text = on_text;
    g.on_text_data = &st;
    tp_session_result r;
    CHECK(tp_session_submit(s, NULL, &im, 1, &err) == TP_OK, err.message);
    canceller c = {s, &st};
    pthread_t th;
    pthread_create(&th, NULL, cancel_later, &c);
    tp_status rc = tp_session_generate(s, &g, &r, &err);
    pthread_join(th, NULL);
    CHECK(rc == TP_ERR_ABORTED && has(&err, "aborted"), "cancel from another thread: TP_ERR_ABORTED");
    CHECK(r.n_generated_tokens >= 3 && r.n_generated_tokens < 400, "cancelled mid-decode");
    g.on_text = NULL;
    g.max_tokens = 3;
    CHECK(tp_session_submit(s, NULL, &im, 1, &err) == TP_OK && tp_session_generate(s, &g, &r, &err) == TP_OK &&
              r.n_generated_tokens == 3, "usable after a cancel");
    tp_session_cancel(s);
    CHECK(tp_session_submit(s, NULL, &im, 1, &err) == TP_ERR_ABORTED, "a cancel before a submit aborts it");
    CHECK(tp_session_submit(s, NULL, &im, 1, &err) == TP_OK, "the next submit runs");
    tp_session_free(s);
}

/* Cancels its session once it has streamed 3 pieces. */
typedef struct cancel_stream {
    stream st;
    tp_session *s;
} cancel_stream;

static bool cancel_on_text(const char *t, size_t len, void *data) {
    cancel_stream *c = data;
    on_text(t, len, &c->st);
    if (c->st.pieces == 3) tp_session_cancel(c->s);
    return true;
}

static void test_batch(tp_text_model *t, tp_vision_model *v) {
    enum { N = 3 };
    static const char *const prompts[N] = {NULL, "<image>\nFree OCR.", "Describe <image> in a few words."};
    static const int32_t max_tokens[N] = {24, 9, 40};
    static const int32_t ngram[N] = {0, -1, 2};
    tp_session_params p = params();
    tp_session_image im = page();
    tp_error err = {0};
    tp_session *s[N] = {0};
    tp_session_gen_params g[N];
    int ok = 0;
    for (int i = 0; i < N; i++) {
        ok += tp_session_create_from_models(t, v, &p, &s[i], &err) == TP_OK;
        g[i] = tp_session_default_gen_params();
        g[i].max_tokens = max_tokens[i];
        g[i].ignore_eos = i != 1;
        g[i].sampler.no_repeat_ngram = ngram[i];
        g[i].sampler.no_repeat_window = 0;
    }
    CHECK(ok == N, err.message);
    if (ok != N) goto out;
    /* each alone */
    int32_t alone[N][64];
    int32_t n_alone[N];
    char alone_text[N][4096];
    for (int i = 0; i < N; i++) {
        tp_session_result r;
        CHECK(tp_session_submit(s[i], prompts[i], &im, 1, &err) == TP_OK && tp_session_generate(s[i], &g[i], &r, &err) == TP_OK,
              err.message);
        n_alone[i] = r.n_generated_tokens;
        memcpy(alone[i], r.tokens, (size_t)r.n_generated_tokens * sizeof(int32_t));
        snprintf(alone_text[i], sizeof alone_text[i], "%s", r.text);
    }
    CHECK(n_alone[0] == 24 && n_alone[2] == 40 && n_alone[1] <= 9, "lengths alone");
    /* together, streaming */
    stream st[N];
    memset(st, 0, sizeof st);
    for (int i = 0; i < N; i++) {
        g[i].on_text = on_text;
        g[i].on_text_data = &st[i];
        CHECK(tp_session_submit(s[i], prompts[i], &im, 1, &err) == TP_OK, err.message);
    }
    tp_session_result r[N];
    tp_error errs[N];
    CHECK(tp_session_generate_batch(s, N, g, r, errs, NULL, NULL, &err) == TP_OK, err.message);
    for (int i = 0; i < N; i++) {
        CHECK(errs[i].status == TP_OK, "each session's status");
        CHECK(r[i].n_generated_tokens == n_alone[i] &&
                  memcmp(r[i].tokens, alone[i], (size_t)n_alone[i] * sizeof(int32_t)) == 0,
              "a session's greedy tokens in a batch are those it gets alone");
        CHECK(strcmp(r[i].text, alone_text[i]) == 0 && st[i].len == r[i].text_len &&
                  memcmp(st[i].text, r[i].text, r[i].text_len) == 0 && !st[i].split,
              "its text and streamed pieces");
        CHECK(r[i].prefill_s > 0 && r[i].decode_s > 0 && r[i].n_prompt_tokens > 16, "timings, prompt count");
    }
    /* a cancel of session 1 ends it only */
    cancel_stream cs = {.s = s[1]};
    g[1].max_tokens = 40;
    g[1].ignore_eos = true;
    g[1].on_text = cancel_on_text;
    g[1].on_text_data = &cs;
    for (int i = 0; i < N; i++) CHECK(tp_session_submit(s[i], prompts[i], &im, 1, &err) == TP_OK, err.message);
    CHECK(tp_session_generate_batch(s, N, g, r, errs, NULL, NULL, &err) == TP_ERR_ABORTED && has(&err, "session 1") &&
              has(&err, "aborted"), err.message);
    CHECK(errs[1].status == TP_ERR_ABORTED && r[1].n_generated_tokens == 3 && errs[0].status == TP_OK &&
              errs[2].status == TP_OK, "the cancelled session stopped after 3 tokens, the others went on");
    CHECK(r[0].n_generated_tokens == n_alone[0] && memcmp(r[0].tokens, alone[0], sizeof(int32_t) * 24) == 0 &&
              r[2].n_generated_tokens == n_alone[2] && memcmp(r[2].tokens, alone[2], sizeof(int32_t) * 40) == 0,
          "the others' tokens unchanged");
    /* refused */
    tp_session *twice[2] = {s[0], s[0]};
    CHECK(tp_session_generate_batch(twice, 2, NULL, r, NULL, NULL, NULL, &err) == TP_ERR_INVALID_ARGUMENT && has(&err, "the same"),
          "a session twice");
    tp_session *own = NULL;
    CHECK(tp_session_create(text_path, vision_path, &p, &own, &err) == TP_OK, err.message);
    tp_session *mixed[2] = {s[0], own};
    CHECK(tp_session_generate_batch(mixed, 2, NULL, r, NULL, NULL, NULL, &err) == TP_ERR_INVALID_ARGUMENT &&
              has(&err, "another text model"), "sessions of two text models");
    tp_session_free(own);
    CHECK(tp_session_generate_batch(NULL, 2, NULL, r, NULL, NULL, NULL, &err) == TP_ERR_INVALID_ARGUMENT &&
              tp_session_generate_batch(s, 0, NULL, r, NULL, NULL, NULL, &err) == TP_ERR_INVALID_ARGUMENT, "NULL, 0 sessions");
    CHECK(tp_session_generate_batch(s, N, NULL, r, errs, NULL, NULL, &err) == TP_ERR_INVALID_ARGUMENT && has(&err, "nothing submitted") &&
              r[0].n_generated_tokens == 0, "nothing submitted");
out:
    for (int i = 0; i < N; i++) tp_session_free(s[i]);
}

/* Continuous batching: on_done submits the next of the requests (by prompt index) to the slot that stopped. */
typedef struct refill {
    tp_session **s;
    tp_session_image im;
    const char *const *prompts;
    int next, n_req, done;
    int32_t tokens[8][64];
    int32_t n_tokens[8];
    int slot_req[2];
} refill;

static bool refill_done(int32_t i, const tp_session_result *r, const tp_error *status, tp_session_gen_params *p, void *data) {
    refill *f = data;
    (void)p;
    int k = f->slot_req[i];
    if (status->status == TP_OK && k >= 0) {
        f->n_tokens[k] = r->n_generated_tokens;
        memcpy(f->tokens[k], r->tokens, (size_t)r->n_generated_tokens * sizeof(int32_t));
        f->done++;
    }
    f->slot_req[i] = -1;
    if (f->next >= f->n_req) return false;
    tp_error err = {0};
    if (tp_session_submit(f->s[i], f->prompts[f->next], &f->im, 1, &err) != TP_OK) return false;
    f->slot_req[i] = f->next++;
    return true;
}

static void test_batch_refill_and_ids(tp_text_model *t, tp_vision_model *v) {
    static const char *const prompts[5] = {NULL, "<image>\nFree OCR.", "Describe <image> in a few words.",
                                           "<|grounding|>Locate the table.", "<image>\nWhat is this?"};
    tp_session_params p = params();
    tp_error err = {0};
    tp_session *s[2] = {0};
    tp_session_gen_params g = tp_session_default_gen_params();
    g.max_tokens = 20;
    g.ignore_eos = true;
    g.sampler.no_repeat_ngram = 3;
    g.sampler.no_repeat_window = 0;
    int ok = 0;
    for (int i = 0; i < 2; i++) ok += tp_session_create_from_models(t, v, &p, &s[i], &err) == TP_OK;
    CHECK(ok == 2, err.message);
    if (ok != 2) goto out;
    refill f = {.s = s, .im = page(), .prompts = prompts, .n_req = 5, .slot_req = {0, 1}, .next = 2};
    for (int i = 0; i < 2; i++) CHECK(tp_session_submit(s[i], prompts[i], &f.im, 1, &err) == TP_OK, err.message);
    tp_session_gen_params gs[2] = {g, g};
    tp_session_result r[2];
    CHECK(tp_session_generate_batch(s, 2, gs, r, NULL, refill_done, &f, &err) == TP_OK, err.message);
    CHECK(f.done == 5, "on_done refilled the slots until the 5 requests were done");
    int same = 0;
    for (int k = 0; k < 5; k++) {
        tp_session_result a;
        same += tp_session_submit(s[0], prompts[k], &f.im, 1, &err) == TP_OK && tp_session_generate(s[0], &g, &a, &err) == TP_OK &&
                a.n_generated_tokens == f.n_tokens[k] &&
                memcmp(a.tokens, f.tokens[k], (size_t)a.n_generated_tokens * sizeof(int32_t)) == 0;
    }
    CHECK(same == 5, "each refilled request's tokens are those it gets alone");
    /* tp_session_submit_ids: the ids a submit built, with the same rows, give the same tokens */
    float *embd = calloc(16 * 32, sizeof(float));
    for (int i = 0; i < 16 * 32; i++) embd[i] = (float)((i * 37) % 11) * 0.1f - 0.5f;
    tp_session_image im = {.embd = embd, .n_tokens = 16};
    tp_session_result a, b;
    const int32_t *ids = NULL, *pos = NULL;
    int32_t n = 0;
    int32_t copy[256];
    CHECK(tp_session_submit(s[0], NULL, &im, 1, &err) == TP_OK && tp_session_prompt_ids(s[0], &ids, &n, &pos, NULL) == TP_OK &&
              n <= 256, err.message);
    memcpy(copy, ids, (size_t)n * sizeof(int32_t));
    CHECK(tp_session_generate(s[0], &g, &a, &err) == TP_OK, err.message);
    int32_t ta[64];
    int32_t na = a.n_generated_tokens;
    memcpy(ta, a.tokens, (size_t)na * sizeof(int32_t));
    CHECK(tp_session_submit_ids(s[1], copy, n, NULL, 0, embd, 16, &err) == TP_OK && tp_session_generate(s[1], &g, &b, &err) == TP_OK &&
              b.n_generated_tokens == na && memcmp(b.tokens, ta, (size_t)na * sizeof(int32_t)) == 0 && b.n_prompt_tokens == n,
          "tp_session_submit_ids gives the tokens of the submit that built the ids");
    CHECK(tp_session_submit_ids(s[1], copy, n, NULL, 0, embd, 15, &err) == TP_ERR_INVALID_ARGUMENT &&
              has(&err, "15 image rows for 16 image tokens"), "image rows that do not match the image tokens");
    copy[0] = 1 << 30;
    CHECK(tp_session_submit_ids(s[1], copy, n, NULL, 0, embd, 16, &err) == TP_ERR_INVALID_ARGUMENT &&
              has(&err, "outside the vocabulary"), "an id outside the vocabulary");
    CHECK(tp_session_submit_ids(s[1], NULL, 0, NULL, 0, NULL, 0, &err) == TP_ERR_INVALID_ARGUMENT, "no ids");
    /* a session without a vision model takes ids only, and gives the same tokens */
    tp_session *tonly = NULL;
    tp_session_params tpp = tp_session_default_params();
    CHECK(tp_session_create_from_models(t, NULL, &tpp, &tonly, &err) == TP_OK, err.message);
    copy[0] = ids[0];
    if (tonly) {
        CHECK(tp_session_submit(tonly, NULL, &im, 1, &err) == TP_ERR_INVALID_ARGUMENT && has(&err, "no vision model"),
              "tp_session_submit without a vision model");
        CHECK(tp_session_submit_ids(tonly, copy, n, NULL, 0, embd, 16, &err) == TP_OK &&
                  tp_session_generate(tonly, &g, &b, &err) == TP_OK && b.n_generated_tokens == na &&
                  memcmp(b.tokens, ta, (size_t)na * sizeof(int32_t)) == 0,
              "a text-only session's tokens");
    }
    tp_session_free(tonly);
    free(embd);
out:
    for (int i = 0; i < 2; i++) tp_session_free(s[i]);
}

static void test_bad_arguments(tp_text_model *t, tp_vision_model *v) {
    tp_session_params p = params();
    tp_session *s = NULL;
    tp_error err = {0};
    tp_session_image im = page();
    CHECK(tp_session_create_from_models(NULL, v, &p, &s, &err) == TP_ERR_INVALID_ARGUMENT && s == NULL, "NULL text model");
    CHECK(tp_session_create(text_path, NULL, &p, &s, &err) == TP_ERR_INVALID_ARGUMENT, "NULL vision path");
    CHECK(tp_session_create(text_path, "/nonexistent.gguf", &p, &s, &err) == TP_ERR_IO && s == NULL, "missing file");
    CHECK(tp_session_create(vision_path, text_path, &p, &s, &err) != TP_OK && s == NULL, "swapped files");
    tp_session_params bad = p;
    bad.n_threads = 0;
    CHECK(tp_session_create_from_models(t, v, &bad, &s, &err) == TP_ERR_INVALID_ARGUMENT && has(&err, "n_threads"), "n_threads 0");
    bad = p;
    bad.image_mode = "nope";
    CHECK(tp_session_create_from_models(t, v, &bad, &s, &err) == TP_ERR_INVALID_ARGUMENT && has(&err, "nope"), "unknown mode");
    CHECK(tp_session_create_from_models(t, v, &p, &s, &err) == TP_OK, err.message);
    if (!s) return;
    CHECK(tp_session_submit(NULL, NULL, &im, 1, &err) == TP_ERR_INVALID_ARGUMENT, "NULL session");
    CHECK(tp_session_submit(s, NULL, NULL, 1, &err) == TP_ERR_INVALID_ARGUMENT && has(&err, "images NULL"), "NULL images");
    CHECK(tp_session_submit(s, NULL, &im, 0, &err) == TP_ERR_INVALID_ARGUMENT && has(&err, "1 image per prompt"), "no image");
    tp_session_image two[2] = {im, im};
    CHECK(tp_session_submit(s, NULL, two, 2, &err) == TP_ERR_INVALID_ARGUMENT && has(&err, "got 2"), "two images");
    tp_session_image empty = im;
    empty.rgb.width = 0;
    CHECK(tp_session_submit(s, NULL, &empty, 1, &err) == TP_ERR_INVALID_ARGUMENT && has(&err, "image 0"), "zero-size image");
    tp_session_image none = {0};
    CHECK(tp_session_submit(s, NULL, &none, 1, &err) == TP_ERR_INVALID_ARGUMENT && has(&err, "neither RGB"), "no pixels");
    CHECK(tp_session_submit(s, "<image> and <image>", &im, 1, &err) == TP_ERR_INVALID_ARGUMENT &&
              has(&err, "2 <image> tags for 1 image"), "two <image> for one image");
    CHECK(tp_session_submit(s, "\xff bad UTF-8", &im, 1, &err) == TP_ERR_INVALID_ARGUMENT, "invalid UTF-8 prompt");
    tp_session_result r;
    CHECK(tp_session_generate(s, NULL, &r, &err) == TP_ERR_INVALID_ARGUMENT && has(&err, "nothing submitted"),
          "generate without a submit");
    CHECK(tp_session_generate(s, NULL, NULL, &err) == TP_ERR_INVALID_ARGUMENT, "NULL result");
    tp_session_gen_params g = tp_session_default_gen_params();
    g.max_tokens = 0;
    CHECK(tp_session_submit(s, NULL, &im, 1, &err) == TP_OK, err.message);
    CHECK(tp_session_generate(s, &g, &r, &err) == TP_ERR_INVALID_ARGUMENT && has(&err, "max_tokens"), "max_tokens 0");
    const int32_t *ids = NULL, *pos = NULL;
    int32_t n = 0;
    CHECK(tp_session_prompt_ids(s, &ids, &n, &pos, NULL) == TP_OK && n > 0 && pos == NULL, "prompt ids kept");
    tp_session_reset(s);
    CHECK(tp_session_prompt_ids(s, &ids, &n, &pos, NULL) == TP_ERR_INVALID_ARGUMENT, "reset forgets the request");
    CHECK(strcmp(tp_session_default_prompt(s), "<|grounding|>Convert the document to markdown.") == 0, "default prompt");
    int32_t ns = 0, nb = 0;
    CHECK(tp_grounding_parse(NULL, 3, NULL, 0, &ns, NULL, 0, &nb, &err) == TP_ERR_INVALID_ARGUMENT, "grounding NULL text");
    tp_session_free(s);
    tp_session_free(NULL);
    tp_session_cancel(NULL);
    tp_session_reset(NULL);
}

/* PaddleOCR-VL: the chat template of the text file rendered in C, M-RoPE positions, a few tokens. */
static void test_paddle(const char *fixtures) {
    char tp[1024], vp[1024];
    snprintf(tp, sizeof tp, "%s/llamacpp-tiny-paddleocr-vl/text-f16.gguf", fixtures);
    snprintf(vp, sizeof vp, "%s/llamacpp-tiny-paddleocr-vl/mmproj-f32.gguf", fixtures);
    tp_session_params p = tp_session_default_params();
    p.n_threads = 2;
    p.n_ctx = 1024;
    tp_session *s = NULL;
    tp_error err = {0};
    CHECK(tp_session_create(text_path, vp, &p, &s, &err) == TP_ERR_INVALID_ARGUMENT && s == NULL &&
              has(&err, "do not belong to the same model"), "a DeepSeek-OCR text model with a PaddleOCR-VL vision model");
    CHECK(tp_session_create(tp, vp, &p, &s, &err) == TP_OK, err.message);
    if (!s) return;
    tp_session_image im = page();
    CHECK(strcmp(tp_session_default_prompt(s), "OCR:") == 0, "PaddleOCR-VL's default task");
    CHECK(tp_session_submit(s, "<image>OCR:", &im, 1, &err) == TP_ERR_INVALID_ARGUMENT && has(&err, "task text"),
          "no <image> in a PaddleOCR-VL prompt");
    CHECK(tp_session_submit(s, NULL, &im, 1, &err) == TP_OK, err.message);
    const int32_t *ids = NULL, *pos = NULL;
    int32_t n = 0, axes = 0;
    CHECK(tp_session_prompt_ids(s, &ids, &n, &pos, &axes) == TP_OK && axes == 3 && pos != NULL && n > 4, "3-D positions");
    bool ok = pos != NULL;
    for (int32_t i = 1; ok && i < n; i++) ok = pos[i] >= pos[i - 1] && pos[n + i] >= 0 && pos[2 * n + i] >= 0;
    CHECK(ok && pos[0] == 0, "temporal positions ascend from 0");
    tp_session_gen_params g = tp_session_default_gen_params();
    g.max_tokens = 3;
    tp_session_result r;
    CHECK(tp_session_generate(s, &g, &r, &err) == TP_OK && r.n_prompt_tokens == n && r.n_generated_tokens <= 3, err.message);
    tp_session_free(s);
}

int main(void) {
    const char *fixtures = getenv("TP_FIXTURES") ? getenv("TP_FIXTURES") : "../shared/fixtures";
    snprintf(text_path, sizeof text_path, "%s/llamacpp-tiny-v1/text-f16.gguf", fixtures);
    snprintf(vision_path, sizeof vision_path, "%s/llamacpp-tiny-v1/mmproj-f32.gguf", fixtures);
    tp_text_params tp = tp_text_default_params();
    tp.n_threads = 2;
    tp.n_ctx = 512;
    tp_vision_params vp = tp_vision_default_params();
    vp.n_threads = 2;
    tp_text_model *t = NULL;
    tp_vision_model *v = NULL;
    tp_error err = {0};
    CHECK(tp_text_load(text_path, &tp, &t, &err) == TP_OK, err.message);
    CHECK(tp_vision_load(vision_path, &vp, &v, &err) == TP_OK, err.message);
    if (t && v) {
        test_cycles(t, v);
        test_own_files();
        test_cancel(t, v);
        test_batch(t, v);
        test_batch_refill_and_ids(t, v);
        test_bad_arguments(t, v);
    }
    test_paddle(fixtures);
    tp_text_free(t);
    tp_vision_free(v);
    printf("test_session: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
