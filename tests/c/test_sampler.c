/* test_sampler.c - the generation policy's C API as another runtime uses it (tp_sampler, tp_stop): every bad
 * parameter refused with a message naming it, misuse (NULL handles, a logits row of the wrong length, ids out of
 * range, a buffer too small), create/free cycles, a 1,000-step greedy run on a model that wants to loop (no
 * n-gram repeats inside the window afterwards, whitelisted ids excepted), a 1,000-step sampled run (every draw
 * in the kept set; reset replays the same tokens), and the stop rules over a fixture's vocabulary (stop string,
 * EOS, length). Built against the ASan+UBSan library by `make ctest`; a missing fixture is a failure. */
#include "tilepass.h"
#include "tp_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tp_sampler_params base(int32_t n_vocab) {
    tp_sampler_params p = tp_sampler_default_params();
    p.n_vocab = n_vocab;
    return p;
}

static void expect_refused(tp_sampler_params p, const char *field) {
    tp_sampler *s = (tp_sampler *)&p; /* not NULL: must be set to NULL */
    tp_error err;
    CHECK(tp_sampler_create(&p, &s, &err) == TP_ERR_INVALID_ARGUMENT && s == NULL, field);
    CHECK(strstr(err.message, field) != NULL, "the message names the field");
}

static void test_params(void) {
    tp_sampler_params d = tp_sampler_default_params();
    CHECK(d.n_vocab == 0 && d.temperature == 0.0f && d.top_k == 0 && d.top_p == 1.0f && d.no_repeat_ngram == 30 &&
          d.no_repeat_window == 90 && d.no_repeat_scope == TP_NO_REPEAT_GENERATED, "the defaults");
    expect_refused(d, "n_vocab");
    tp_sampler_params p = base(10);
    p.temperature = -0.5f;
    expect_refused(p, "temperature");
    p = base(10);
    p.temperature = INFINITY;
    expect_refused(p, "temperature");
    p = base(10);
    p.top_k = -1;
    expect_refused(p, "top_k");
    p = base(10);
    p.top_p = 0.0f;
    expect_refused(p, "top_p");
    p.top_p = NAN;
    expect_refused(p, "top_p");
    p = base(10);
    p.no_repeat_ngram = -2;
    expect_refused(p, "no_repeat_ngram");
    p = base(10);
    p.no_repeat_scope = 7;
    expect_refused(p, "no_repeat_scope");
    p = base(10);
    p.n_no_repeat_whitelist = 2;
    expect_refused(p, "n_no_repeat_whitelist");
    const int32_t neg[] = {3, -1};
    p.no_repeat_whitelist = neg;
    expect_refused(p, "no_repeat_whitelist[1]");
    tp_error err;
    tp_sampler *s = NULL;
    CHECK(tp_sampler_create(NULL, &s, &err) == TP_ERR_INVALID_ARGUMENT, "NULL params");
    p = base(10);
    CHECK(tp_sampler_create(&p, NULL, &err) == TP_ERR_INVALID_ARGUMENT, "NULL out");
}

static void test_misuse(void) {
    tp_sampler_params p = base(16);
    p.no_repeat_ngram = 2;
    p.no_repeat_window = 0;
    tp_sampler *s = NULL;
    tp_error err;
    CHECK(tp_sampler_create(&p, &s, &err) == TP_OK && s, "create");
    if (!s) return;
    float row[17] = {0};
    int32_t id = 5;
    CHECK(tp_sampler_sample(s, row, 17, &id, &err) == TP_ERR_INVALID_ARGUMENT && id == -1, "a row of 17 for 16");
    CHECK(strstr(err.message, "n_vocab is 16") != NULL, "message gives n_vocab");
    CHECK(tp_sampler_sample(s, NULL, 16, &id, &err) == TP_ERR_INVALID_ARGUMENT, "NULL logits");
    CHECK(tp_sampler_sample(s, row, 16, NULL, &err) == TP_ERR_INVALID_ARGUMENT, "NULL id");
    CHECK(tp_sampler_sample(NULL, row, 16, &id, &err) == TP_ERR_INVALID_ARGUMENT, "NULL sampler");
    CHECK(tp_sampler_filter(s, row, 3, &err) == TP_ERR_INVALID_ARGUMENT, "filter: wrong length");
    CHECK(tp_sampler_accept(s, 16, &err) == TP_ERR_INVALID_ARGUMENT && strstr(err.message, "out of range"), "id 16");
    CHECK(tp_sampler_accept(s, -1, &err) == TP_ERR_INVALID_ARGUMENT, "id -1");
    CHECK(tp_sampler_accept(NULL, 1, &err) == TP_ERR_INVALID_ARGUMENT, "accept on NULL");
    CHECK(tp_sampler_accept_prompt(s, NULL, 3, &err) == TP_ERR_INVALID_ARGUMENT, "NULL prompt of 3");
    const int32_t ids[] = {4, 9, 4, 9, 4, 7, 4};
    for (int i = 0; i < 7; i++) tp_sampler_accept(s, ids[i], &err);
    int32_t n = -1, out[4];
    CHECK(tp_sampler_banned(s, NULL, 0, &n, &err) == TP_OK && n == 2, "size query: 9 and 7 follow 4");
    CHECK(tp_sampler_banned(s, out, 1, &n, &err) == TP_ERR_INVALID_ARGUMENT && n == 2, "cap 1 too small");
    CHECK(tp_sampler_banned(s, out, 4, &n, &err) == TP_OK && n == 2 && out[0] == 7 && out[1] == 9, "ascending");
    CHECK(tp_sampler_banned(s, out, -1, &n, &err) == TP_ERR_INVALID_ARGUMENT, "negative cap");
    for (int i = 0; i < 16; i++) row[i] = (float)(i == 9 ? 10 : i == 7 ? 9 : 1);
    CHECK(tp_sampler_sample(s, row, 16, &id, &err) == TP_OK && id == 0, "9 and 7 banned: the first of the 1s");
    CHECK(isinf(row[9]) && row[9] < 0 && isinf(row[7]) && row[0] == 1.0f, "the ban written into the row");
    for (int i = 0; i < 16; i++) row[i] = -INFINITY;
    CHECK(tp_sampler_sample(s, row, 16, &id, &err) == TP_OK && id == -1, "nothing left: -1");
    tp_sampler_reset(s);
    CHECK(tp_sampler_n_history(s) == 0 && tp_sampler_banned(s, NULL, 0, &n, &err) == TP_OK && n == 0, "reset");
    CHECK(tp_sampler_n_history(NULL) == 0, "NULL history");
    tp_sampler_reset(NULL);
    tp_sampler_free(NULL);
    tp_sampler_free(s);
}

static void test_cycles(void) {
    for (int i = 0; i < 200; i++) {
        tp_sampler_params p = base(1 + i * 37);
        p.temperature = (float)(i % 3) * 0.5f;
        p.top_k = i % 5;
        p.no_repeat_ngram = i % 4;
        p.no_repeat_window = i % 7;
        const int32_t wl[] = {0, 100000};
        p.no_repeat_whitelist = wl;
        p.n_no_repeat_whitelist = i % 3;
        tp_sampler *s = NULL;
        tp_error err;
        if (tp_sampler_create(&p, &s, &err) != TP_OK) {
            CHECK(0, err.message);
            continue;
        }
        for (int k = 0; k < i; k++) tp_sampler_accept(s, k % p.n_vocab, &err);
        tp_sampler_free(s);
    }
    CHECK(1, "create/free cycles");
}

/* logits of a "model" that wants to loop: the favourite next id is a function of the last one */
static void looping_logits(float *x, int32_t V, int32_t last, uint32_t *rng) {
    for (int32_t i = 0; i < V; i++) {
        *rng = *rng * 1664525u + 1013904223u;
        x[i] = (float)(*rng >> 9) / (float)(1u << 23);
    }
    x[(last * 7 + 3) % 11] += 5.0f;
    x[(last * 3 + 1) % 11] += 4.0f;
}

/* 1,000 greedy steps with the rule n-gram size rule_ng (0: off); returns the repeats of a 4-gram in a window of 90 */
static int greedy_run(int32_t rule_ng) {
    const int32_t V = 3000, N = 1000, NG = 4, W = 90;
    tp_sampler_params p = base(V);
    p.no_repeat_ngram = rule_ng;
    p.no_repeat_window = W;
    const int32_t wl[] = {5};
    p.no_repeat_whitelist = wl;
    p.n_no_repeat_whitelist = 1;
    tp_sampler *s = NULL;
    tp_error err;
    CHECK(tp_sampler_create(&p, &s, &err) == TP_OK, "create");
    if (!s) return -1;
    float *x = malloc((size_t)V * sizeof(float));
    int32_t *h = malloc((size_t)N * sizeof(int32_t));
    uint32_t rng = 1;
    int32_t last = 0, bad = 0, id = -1;
    for (int32_t j = 0; j < N; j++) {
        looping_logits(x, V, last, &rng);
        if (tp_sampler_sample(s, x, V, &id, &err) != TP_OK || id < 0) {
            bad++;
            break;
        }
        h[j] = last = id;
        tp_sampler_accept(s, id, &err);
    }
    CHECK(bad == 0 && tp_sampler_n_history(s) == N, "1,000 greedy steps");
    /* the n-gram ending at j never equals one starting in [max(0, j - W), j - NG] unless its last id is whitelisted */
    int repeats = 0;
    for (int32_t j = NG - 1; j < N && !bad; j++) {
        if (h[j] == 5) continue;
        for (int32_t i = (j - W > 0 ? j - W : 0); i <= j - NG; i++)
            if (memcmp(h + i, h + j - NG + 1, (size_t)NG * sizeof(int32_t)) == 0) repeats++;
    }
    free(x);
    free(h);
    tp_sampler_free(s);
    return bad ? -1 : repeats;
}

static void test_greedy_run(void) {
    CHECK(greedy_run(0) > 100, "without the rule the model loops");
    CHECK(greedy_run(4) == 0, "with it: no repeated 4-gram inside the window");
}

static void test_sampled_run(void) {
    const int32_t V = 500, N = 1000;
    tp_sampler_params p = base(V);
    p.temperature = 0.8f;
    p.top_k = 40;
    p.top_p = 0.9f;
    p.seed = 1234;
    p.no_repeat_ngram = 3;
    p.no_repeat_window = 0;
    p.no_repeat_scope = TP_NO_REPEAT_ALL;
    tp_sampler *s = NULL;
    tp_error err;
    CHECK(tp_sampler_create(&p, &s, &err) == TP_OK, "create");
    if (!s) return;
    const int32_t prompt[] = {1, 2, 3, -7, 1, 2};
    CHECK(tp_sampler_accept_prompt(s, prompt, 6, &err) == TP_OK && tp_sampler_n_history(s) == 5, "prompt (scope all)");
    float *x = malloc((size_t)V * sizeof(float)), *f = malloc((size_t)V * sizeof(float));
    int32_t *first = malloc((size_t)N * sizeof(int32_t));
    int outside = 0;
    for (int pass = 0; pass < 2; pass++) {
        uint32_t rng = 99;
        int32_t last = 0, same = 0;
        for (int32_t j = 0; j < N; j++) {
            looping_logits(x, V, last, &rng);
            memcpy(f, x, (size_t)V * sizeof(float));
            int32_t id = -1;
            tp_sampler_filter(s, f, V, &err);
            tp_sampler_sample(s, x, V, &id, &err);
            if (id < 0 || !isfinite(f[id])) outside++;
            if (pass == 0) first[j] = id;
            else same += first[j] == id;
            last = id < 0 ? 0 : id;
            tp_sampler_accept(s, last, &err);
        }
        if (pass == 1) CHECK(same == N, "after reset the same seed draws the same 1,000 tokens");
        tp_sampler_reset(s);
        tp_sampler_accept_prompt(s, prompt, 6, &err);
    }
    CHECK(outside == 0, "every draw is in the kept set");
    free(x);
    free(f);
    free(first);
    tp_sampler_free(s);
}

static void test_stop(const char *fixtures) {
    char path[1024];
    snprintf(path, sizeof path, "%s/llamacpp-tiny-v1/text-f16.gguf", fixtures);
    tp_tokenizer *t = NULL;
    tp_error err;
    CHECK(tp_tokenizer_load(path, &t, &err) == TP_OK && t, path);
    if (!t) return;
    const char *text = "Zelle 日本語のテキスト</td> danach";
    int32_t ids[64], n = 0;
    CHECK(tp_tokenize(t, text, strlen(text), false, ids, 64, &n, &err) == TP_OK, "tokenize");
    const char *stops[] = {"テキ", "nie"};
    tp_stop_params sp = tp_stop_default_params();
    sp.stop_strings = stops;
    sp.n_stop_strings = 2;
    const int32_t eos[] = {1};
    sp.eos_ids = eos;
    sp.n_eos = 1;
    tp_stop *st = NULL;
    CHECK(tp_stop_create(t, &sp, &st, &err) == TP_OK, "create");
    char got[256] = {0};
    size_t got_n = 0;
    int reason = TP_STOP_NONE;
    for (int32_t k = 0; k < n && st && reason == TP_STOP_NONE; k++) {
        const char *piece;
        size_t len;
        if (tp_stop_push(st, ids[k], &reason, &piece, &len, &err) != TP_OK) break;
        if (got_n + len < sizeof got) memcpy(got + got_n, piece, len);
        got_n += len;
    }
    CHECK(reason == TP_STOP_STRING && got_n == strlen("Zelle 日本語の") && memcmp(got, "Zelle 日本語の", got_n) == 0,
          "the text stops before the stop string");
    const char *piece;
    size_t len;
    CHECK(tp_stop_push(st, ids[0], &reason, &piece, &len, &err) == TP_ERR_INVALID_ARGUMENT, "push after a stop");
    CHECK(tp_stop_flush(st, &piece, &len, &err) == TP_OK && len == 0, "nothing after a stop string");
    tp_stop_reset(st);
    CHECK(tp_stop_push(st, ids[0], &reason, &piece, &len, &err) == TP_OK && reason == TP_STOP_NONE, "reset");
    CHECK(tp_stop_push(st, 1, &reason, &piece, &len, &err) == TP_OK && reason == TP_STOP_EOS && len == 0, "EOS");
    CHECK(tp_stop_n_tokens(st) == 1, "EOS not counted");
    tp_stop_free(st);
    sp = tp_stop_default_params();
    sp.max_new_tokens = 3;
    st = NULL;
    CHECK(tp_stop_create(NULL, &sp, &st, &err) == TP_OK, "no tokenizer, no text");
    for (int k = 0; k < 3 && st; k++) tp_stop_push(st, 5, &reason, &piece, &len, &err);
    CHECK(reason == TP_STOP_LENGTH && tp_stop_n_tokens(st) == 3, "length");
    tp_stop_free(st);
    sp.stop_strings = stops;
    sp.n_stop_strings = 1;
    CHECK(tp_stop_create(NULL, &sp, &st, &err) == TP_ERR_INVALID_ARGUMENT && !st, "stop strings need a tokenizer");
    const char *empty[] = {""};
    sp.stop_strings = empty;
    CHECK(tp_stop_create(t, &sp, &st, &err) == TP_ERR_INVALID_ARGUMENT && strstr(err.message, "empty"), "empty stop");
    sp.max_new_tokens = -1;
    CHECK(tp_stop_create(t, &sp, &st, &err) == TP_ERR_INVALID_ARGUMENT, "negative max_new_tokens");
    CHECK(tp_stop_push(NULL, 1, &reason, &piece, &len, &err) == TP_ERR_INVALID_ARGUMENT, "push on NULL");
    tp_stop_free(NULL);
    tp_stop_reset(NULL);
    tp_tokenizer_free(t);
}

int main(void) {
    const char *fixtures = getenv("TP_FIXTURES") ? getenv("TP_FIXTURES") : "../shared/fixtures";
    test_params();
    test_misuse();
    test_cycles();
    test_greedy_run();
    test_sampled_run();
    test_stop(fixtures);
    printf("test_sampler: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
