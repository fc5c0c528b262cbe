/* test_tokenizer.c - the tokenizer API from C as another runtime uses it: size query, a buffer too small (the
 * count needed, the first ids written), misuse (NULL handles, negative sizes, invalid UTF-8: a status and a
 * message, never a crash), special tokens with and without parse_special, detokenisation back to the text
 * (whole and a buffer too small), the streaming detokenizer (pieces are whole UTF-8 characters and join to the
 * text; an incomplete character held, then U+FFFD at flush; reset), and tp_text_tokenize of a loaded text model.
 * On the llama.cpp-written fixture files of ../shared/fixtures (TP_FIXTURES overrides the folder): a missing
 * fixture is a failure. Built against the ASan+UBSan library by `make ctest`. */
#include "tilepass.h"
#include "tp_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the test text, with a special token of the vocabulary at %s */
static const char *TEXT_FMT = "Héllo wörld 12345 — 日本語のテキスト 😀👍🏽\n\n  %sx <table><tr><td>1.5</td></tr></table>";
static char TEXT[256];

/* Is s[0..n) whole UTF-8 characters (no partial one at either end)? */
static bool whole_utf8(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int len = u[i] < 0x80 ? 1 : (u[i] >> 5) == 6 ? 2 : (u[i] >> 4) == 14 ? 3 : (u[i] >> 3) == 30 ? 4 : 0;
        if (len == 0 || i + (size_t)len > n) return false;
        for (int k = 1; k < len; k++)
            if ((u[i + (size_t)k] & 0xC0) != 0x80) return false;
        i += (size_t)len;
    }
    return true;
}

static void test_misuse(const tp_tokenizer *t) {
    tp_error err;
    int32_t n = -1, ids[4];
    CHECK(tp_tokenize(NULL, "a", 1, true, ids, 4, &n, &err) == TP_ERR_INVALID_ARGUMENT && n == 0, "NULL tokenizer");
    CHECK(strstr(err.message, "tp_tokenize") != NULL, "message names the call");
    CHECK(tp_tokenize(t, "a", 1, true, ids, 4, NULL, &err) == TP_ERR_INVALID_ARGUMENT, "NULL n_ids");
    CHECK(tp_tokenize(t, NULL, 3, true, ids, 4, &n, &err) == TP_ERR_INVALID_ARGUMENT, "NULL text of length 3");
    CHECK(tp_tokenize(t, "a", 1, true, NULL, 4, &n, &err) == TP_ERR_INVALID_ARGUMENT, "NULL ids with max_ids 4");
    CHECK(tp_tokenize(t, "a", 1, true, ids, -1, &n, &err) == TP_ERR_INVALID_ARGUMENT, "negative max_ids");
    CHECK(tp_tokenize(t, NULL, 0, true, NULL, 0, &n, &err) == TP_OK && n == 0, "empty text: no ids");
    CHECK(tp_tokenize(t, "ab\xC3(", 4, true, ids, 4, &n, &err) == TP_ERR_INVALID_ARGUMENT, "invalid UTF-8 refused");
    CHECK(strstr(err.message, "not valid UTF-8 (byte 2") != NULL, "message names the byte");
    CHECK(tp_tokenize(t, "\xED\xA0\x80", 3, true, ids, 4, &n, &err) == TP_ERR_INVALID_ARGUMENT, "a surrogate refused");
    CHECK(tp_tokenize(t, "\xC0\xAF", 2, true, ids, 4, &n, &err) == TP_ERR_INVALID_ARGUMENT, "an overlong form refused");
    size_t nb = 1;
    CHECK(tp_detokenize(t, ids, -1, false, NULL, 0, &nb, &err) == TP_ERR_INVALID_ARGUMENT && nb == 0, "negative n");
    int32_t bad = tp_tokenizer_n_vocab(t);
    CHECK(tp_detokenize(t, &bad, 1, false, NULL, 0, &nb, &err) == TP_ERR_INVALID_ARGUMENT, "id out of range");
    CHECK(strstr(err.message, "out of range") != NULL, "message says out of range");
    size_t len = 1;
    CHECK(tp_tokenizer_token_bytes(t, -1, &len) == NULL && len == 0, "token_bytes of -1");
    CHECK(tp_tokenizer_token_bytes(NULL, 0, &len) == NULL, "token_bytes of NULL");
    CHECK(!tp_tokenizer_is_special(t, -5) && !tp_tokenizer_is_special(NULL, 0), "is_special out of range");
    CHECK(tp_tokenizer_n_vocab(NULL) == 0 && tp_tokenizer_token_id(NULL, "a", 1) == -1, "NULL accessors");
    tp_detokenizer *d = NULL;
    CHECK(tp_detokenizer_create(NULL, false, &d, &err) == TP_ERR_INVALID_ARGUMENT && d == NULL, "NULL tokenizer");
    const char *p;
    CHECK(tp_detokenizer_push(NULL, 0, &p, &len, &err) == TP_ERR_INVALID_ARGUMENT, "push on NULL");
    CHECK(tp_detokenizer_flush(NULL, &p, &len, &err) == TP_ERR_INVALID_ARGUMENT, "flush on NULL");
    tp_detokenizer_free(NULL);
    tp_detokenizer_reset(NULL);
    tp_tokenizer_free(NULL);
}

static void test_round_trip(const tp_tokenizer *t, const char *name, const char *special) {
    tp_error err;
    const size_t len = strlen(TEXT);
    int32_t n = 0;
    CHECK(tp_tokenize(t, TEXT, len, true, NULL, 0, &n, &err) == TP_OK && n > 10, "size query");
    int32_t *ids = malloc((size_t)n * sizeof(int32_t));
    int32_t *few = malloc(5 * sizeof(int32_t));
    int32_t got = 0;
    CHECK(tp_tokenize(t, TEXT, len, true, ids, n, &got, &err) == TP_OK && got == n, "tokenize into n");
    CHECK(tp_tokenize(t, TEXT, len, true, few, 5, &got, &err) == TP_ERR_INVALID_ARGUMENT && got == n,
          "a buffer too small: the count needed");
    CHECK(strstr(err.message, "needed") != NULL, "message says so");
    CHECK(memcmp(few, ids, 5 * sizeof(int32_t)) == 0, "the first ids written");
    /* the special token: one id with parse_special, several without */
    const int32_t g = tp_tokenizer_token_id(t, special, strlen(special));
    bool found = false;
    for (int32_t i = 0; i < n; i++) found |= ids[i] == g;
    CHECK(g >= 0 && tp_tokenizer_is_special(t, g) && found, "the special token matched whole");
    int32_t n2 = 0;
    CHECK(tp_tokenize(t, TEXT, len, false, NULL, 0, &n2, &err) == TP_OK && n2 > n, "parse_special false: text");
    /* whole detokenisation */
    size_t nb = 0;
    CHECK(tp_detokenize(t, ids, n, false, NULL, 0, &nb, &err) == TP_OK && nb == len, "detokenize size query");
    char *back = malloc(nb + 1);
    CHECK(tp_detokenize(t, ids, n, false, back, nb, &nb, &err) == TP_OK && memcmp(back, TEXT, len) == 0,
          "the text back");
    CHECK(tp_detokenize(t, ids, n, false, back, 3, &nb, &err) == TP_ERR_INVALID_ARGUMENT && nb == len,
          "detokenize into a short buffer: the size needed");
    size_t special_bytes = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t tl = 0;
        tp_tokenizer_token_bytes(t, ids[i], &tl);
        if (tp_tokenizer_is_special(t, ids[i])) special_bytes += tl;
    }
    CHECK(special_bytes >= strlen(special), "special tokens in the text");
    CHECK(tp_detokenize(t, ids, n, true, NULL, 0, &nb, &err) == TP_OK && nb == len - special_bytes, "skip_special");
    /* streamed: whole characters only, joined = the text; at least one token that completes nothing */
    tp_detokenizer *d = NULL;
    CHECK(tp_detokenizer_create(t, false, &d, &err) == TP_OK && d, "detokenizer");
    char *joined = calloc(len + 16, 1);
    size_t at = 0;
    int held = 0;
    bool all_whole = true;
    for (int32_t i = 0; i < n; i++) {
        const char *p;
        size_t pl = 0, tl = 0;
        CHECK(tp_detokenizer_push(d, ids[i], &p, &pl, &err) == TP_OK, "push");
        all_whole &= whole_utf8(p, pl) && p[pl] == 0;
        tp_tokenizer_token_bytes(t, ids[i], &tl);
        held += pl == 0 && tl > 0;
        if (at + pl <= len) memcpy(joined + at, p, pl);
        at += pl;
    }
    const char *p;
    size_t pl = 0;
    CHECK(tp_detokenizer_flush(d, &p, &pl, &err) == TP_OK && pl == 0, "nothing left at flush");
    CHECK(all_whole, "every piece is whole UTF-8 characters, NUL-terminated");
    CHECK(at == len && memcmp(joined, TEXT, len) == 0, "the pieces join to the text");
    CHECK(held > 0, "a character split over tokens was held");
    /* "😀" cut after 2 bytes: held, then U+FFFD at flush; a new stream after it */
    int32_t e[8];
    int32_t ne = 0;
    CHECK(tp_tokenize(t, "\xF0\x9F\x98\x80", 4, true, e, 8, &ne, &err) == TP_OK && ne >= 1, "emoji ids");
    size_t first = 0;
    tp_tokenizer_token_bytes(t, e[0], &first);
    if (first < 4) {
        CHECK(tp_detokenizer_push(d, e[0], &p, &pl, &err) == TP_OK && pl == 0, "a partial character held");
        CHECK(tp_detokenizer_flush(d, &p, &pl, &err) == TP_OK && pl == 3 && memcmp(p, "\xEF\xBF\xBD", 3) == 0,
              "flush: U+FFFD");
        CHECK(tp_detokenizer_push(d, e[0], &p, &pl, &err) == TP_OK && pl == 0, "held again");
        tp_detokenizer_reset(d);
        CHECK(tp_detokenizer_flush(d, &p, &pl, &err) == TP_OK && pl == 0, "reset forgot it");
    }
    CHECK(tp_detokenizer_push(d, tp_tokenizer_n_vocab(t), &p, &pl, &err) == TP_ERR_INVALID_ARGUMENT, "bad id");
    tp_detokenizer_free(d);
    printf("  %s: %d tokens, %d held\n", name, (int)n, held);
    free(ids);
    free(few);
    free(back);
    free(joined);
}

static void test_text_model(const char *path) {
    tp_text_params p = tp_text_default_params();
    p.n_ctx = 64;
    tp_text_model *m = NULL;
    tp_error err;
    CHECK(tp_text_load(path, &p, &m, &err) == TP_OK, "text model");
    if (!m) return;
    const tp_tokenizer *t = NULL;
    CHECK(tp_text_get_tokenizer(m, &t, &err) == TP_OK && t, "its tokenizer");
    int32_t a[256], b[256], na = 0, nb = 0;
    CHECK(tp_text_tokenize(m, TEXT, strlen(TEXT), true, a, 256, &na, &err) == TP_OK, "tp_text_tokenize");
    CHECK(t && tp_tokenize(t, TEXT, strlen(TEXT), true, b, 256, &nb, &err) == TP_OK && na == nb &&
              memcmp(a, b, (size_t)na * sizeof(int32_t)) == 0, "the same ids");
    CHECK(tp_text_tokenize(NULL, "a", 1, true, a, 256, &na, &err) == TP_ERR_INVALID_ARGUMENT, "NULL model");
    tp_text_free(m);
}

int main(void) {
    const char *fixtures = getenv("TP_FIXTURES") ? getenv("TP_FIXTURES") : "../shared/fixtures";
    const char *dirs[] = {"llamacpp-tiny-v1", "llamacpp-tiny-paddleocr-vl"};
    const char *specials[] = {"<|grounding|>", "<|IMAGE_START|>"};
    tp_error err;
    printf("tokenizer Unicode tables: %s\n", tp_tokenizer_unicode_version());
    for (size_t i = 0; i < 2; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s/text-f16.gguf", fixtures, dirs[i]);
        tp_tokenizer *t = NULL;
        CHECK(tp_tokenizer_load(path, &t, &err) == TP_OK && t, path);
        if (!t) continue;
        test_misuse(t);
        snprintf(TEXT, sizeof TEXT, TEXT_FMT, specials[i]);
        test_round_trip(t, dirs[i], specials[i]);
        tp_tokenizer_free(t);
        test_text_model(path);
    }
    char mm[1024];
    snprintf(mm, sizeof mm, "%s/llamacpp-tiny-v1/mmproj-f32.gguf", fixtures);
    tp_tokenizer *t = NULL;
    CHECK(tp_tokenizer_load(mm, &t, &err) == TP_ERR_FORMAT && !t && strstr(err.message, "no tokenizer"),
          "a vision file has no tokenizer");
    CHECK(tp_tokenizer_load("/nonexistent.gguf", &t, &err) != TP_OK && !t, "a missing file");
    CHECK(tp_tokenizer_load(NULL, &t, &err) == TP_ERR_INVALID_ARGUMENT, "NULL path");
    printf("test_tokenizer: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
