/* fuzz_load.c - libFuzzer target: the input bytes as a GGUF file (written to a temporary file: the reader maps
 * files, it has no memory API), through everything a hostile model file reaches:
 *   - tp_gguf_open, and when it opens every accessor on every key and tensor (each tensor byte read);
 *   - tp_vision_load (precision f32, auto or int8 by the input's length) and, when it loads, its modes'
 *     parameters and an encode of a small RGB image in each mode whose views are small, plus pages of one
 *     view of a few small sizes straight through tp_vision_encode;
 *   - tp_text_load (n_ctx 32, batches of 4) and, when it loads, every token's bytes, a prompt with an image
 *     row where the model has an image token, a decode step, a reset;
 *   - tp_tokenizer_load and, when it loads, a multilingual text and the input's first bytes tokenized (with and
 *     without special tokens), detokenized whole and streamed.
 * Any outcome but a crash, a sanitizer report or a hang is fine: a file either works or fails with a status
 * and a message. Built by `make fuzz` with clang's libFuzzer, and by `make fuzz-smoke` with fuzz_smoke_main.c
 * (no libFuzzer) against the ASan/UBSan library. Seeds: tests/fuzz/make_seeds.py. */
#include "tilepass.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Per-process harness state (the library itself keeps none). */
static char g_path[512];
static volatile uint64_t g_sink;

static bool write_input(const uint8_t *data, size_t size) {
    if (!g_path[0]) {
        const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(g_path, sizeof g_path, "%s/tp_fuzz_load_%ld.gguf", dir, (long)getpid());
    }
    int fd = open(g_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) break;
        done += (size_t)w;
    }
    close(fd);
    return done == size;
}

static void exercise_gguf(void) {
    tp_gguf *g = NULL;
    if (tp_gguf_open(g_path, &g, NULL) != TP_OK) return;
    uint64_t sink = 0;
    for (int64_t i = 0; i < tp_gguf_n_kv(g); i++) {
        const char *key = tp_gguf_key(g, i);
        if (!key) abort();
        uint32_t u;
        int64_t v;
        float f;
        bool b;
        const char *s;
        size_t len;
        if (tp_gguf_get_u32(g, key, &u) == TP_OK) sink += u;
        if (tp_gguf_get_i64(g, key, &v) == TP_OK) sink += (uint64_t)v;
        if (tp_gguf_get_f32(g, key, &f) == TP_OK) sink += (uint64_t)(f == f);
        if (tp_gguf_get_bool(g, key, &b) == TP_OK) sink += b;
        if (tp_gguf_get_str(g, key, &s, &len) == TP_OK && len) sink += (uint8_t)s[len - 1];
        if (tp_gguf_kv_type(g, i) == TP_GGUF_ARRAY) {
            const int64_t n = tp_gguf_arr_n(g, i);
            for (int64_t j = 0; j < n && j < 4096; j++) {
                if (tp_gguf_get_arr_i64(g, key, j, &v) == TP_OK) sink += (uint64_t)v;
                if (tp_gguf_get_arr_f32(g, key, j, &f) == TP_OK) sink += (uint64_t)(f == f);
                if (tp_gguf_get_arr_str(g, key, j, &s, &len) == TP_OK && len) sink += (uint8_t)s[len - 1];
            }
            if (tp_gguf_get_arr_i64(g, key, n, &v) == TP_OK) abort(); /* one past the end */
        }
    }
    tp_context *ctx = NULL;
    if (tp_context_create(NULL, &ctx, NULL) == TP_OK) {
        for (int64_t i = 0; i < tp_gguf_n_tensors(g); i++) {
            const uint8_t *p = tp_gguf_tensor_data(g, i);
            const size_t nb = tp_gguf_tensor_nbytes(g, i);
            if (nb && p) sink += p[0] + p[nb - 1];
            tp_tensor *t = tp_gguf_load_tensor(g, ctx, tp_gguf_tensor_name(g, i));
            const int64_t ne = t ? tp_tensor_nelements(t) : 0;
            if (t && ne > 0 && ne <= 4096 && tp_tensor_type(t) != TP_TYPE_I32) {
                float dst[4096];
                if (tp_tensor_get_f32(t, dst, ne) == TP_OK) sink += (uint64_t)(dst[ne - 1] == dst[ne - 1]);
            }
        }
        tp_context_free(ctx);
    }
    g_sink += sink;
    tp_gguf_close(g);
}

/* An encode of a small page made from pixels of the input, in every mode whose views are small. */
static void exercise_vision(const uint8_t *data, size_t size) {
    tp_vision_params vp = tp_vision_default_params();
    static const int precisions[3] = {TP_PRECISION_F32, -1, TP_PRECISION_INT8};
    vp.precision = precisions[size % 3];
    tp_vision_model *m = NULL;
    tp_error err;
    if (tp_vision_load(g_path, &vp, &m, &err) != TP_OK) {
        if (m || !err.message[0]) abort(); /* a failure leaves no model and says why */
        return;
    }
    tp_vision_info info;
    if (tp_vision_get_info(m, &info) != TP_OK || info.n_embd <= 0 || info.n_modes < 1) abort();
    if (tp_vision_mode_name(m, info.n_modes) != NULL || tp_vision_mode_name(m, -1) != NULL) abort();
    const int32_t w = 1 + (int32_t)(size % 47), h = 1 + (int32_t)((size / 47) % 31);
    uint8_t *rgb = malloc((size_t)w * (size_t)h * 3);
    if (!rgb) abort();
    for (size_t i = 0; i < (size_t)w * (size_t)h * 3; i++) rgb[i] = size ? data[i % size] : 0;
    const tp_rgb_image img = {rgb, w, h, 0};
    for (int32_t mode = 0; mode < info.n_modes; mode++) {
        tp_preprocess_params pp;
        if (tp_vision_preprocess_params(m, tp_vision_mode_name(m, mode), &pp) != TP_OK) abort();
        if (pp.view_size > 64 || pp.tile_size > 64 || (int64_t)info.n_embd > (1 << 16)) continue; /* bounded cost */
        if (pp.fit == TP_FIT_NATIVE) { /* the view follows the file's pixel bounds: keep it small */
            if (pp.min_pixels > 32 * 32) pp.min_pixels = 32 * 32;
            if (pp.max_pixels > 64 * 64) pp.max_pixels = 64 * 64;
            if (pp.max_pixels < pp.min_pixels) pp.max_pixels = pp.min_pixels;
        }
        float *tokens = NULL;
        int64_t n_tokens = 0;
        if (tp_vision_encode_rgb(m, &img, 1, &pp, &tokens, &n_tokens, &err) == TP_OK) {
            if (!tokens || n_tokens <= 0) abort();
            g_sink += (uint64_t)(tokens[n_tokens * info.n_embd - 1] == 0.0f);
            tp_vision_tokens_free(tokens);
        } else if (tokens || n_tokens) {
            abort(); /* a failed call leaves nothing allocated */
        }
    }
    free(rgb);
    /* pages of one view straight through tp_vision_encode */
    static const int32_t sides[4] = {14, 16, 28, 32};
    for (int k = 0; k < 4 && (int64_t)info.n_embd <= (1 << 16); k++) {
        const int32_t s = sides[k];
        float *px = calloc((size_t)s * (size_t)s * 3, sizeof(float));
        if (!px) abort();
        for (size_t i = 0; i < (size_t)s * (size_t)s * 3; i++) px[i] = size ? (float)data[i % size] / 128.0f - 1.0f : 0;
        const tp_image_view view = {px, s, s};
        const tp_page_views page = {&view, 1, 0, 0};
        const int64_t n = tp_vision_page_n_tokens(m, &page);
        if (n > 0 && n <= 4096) {
            float *out = malloc((size_t)n * (size_t)info.n_embd * sizeof(float));
            if (!out) abort();
            if (tp_vision_encode(m, &page, 1, &out, &err) == TP_OK) g_sink += (uint64_t)(out[0] == out[0]);
            free(out);
        }
        free(px);
    }
    (void)tp_vision_last_compute_bytes(m);
    tp_vision_trim(m);
    tp_vision_free(m);
}

static void exercise_text(const uint8_t *data, size_t size) {
    tp_text_params tp = tp_text_default_params();
    tp.n_ctx = 32;
    tp.n_batch = 4;
    tp_text_model *m = NULL;
    tp_error err;
    if (tp_text_load(g_path, &tp, &m, &err) != TP_OK) {
        if (m || !err.message[0]) abort();
        return;
    }
    tp_text_info info;
    if (tp_text_get_info(m, &info) != TP_OK || info.n_vocab <= 0 || info.n_embd <= 0 || info.n_ctx != 32) abort();
    for (int32_t id = 0; id < info.n_vocab && id < 4096; id++) {
        size_t len = 0;
        const char *b = tp_text_token_bytes(m, id, &len);
        if (!b) abort();
        if (len) g_sink += (uint8_t)b[len - 1];
    }
    if (tp_text_token_bytes(m, info.n_vocab, NULL) != NULL) abort();
    if ((int64_t)info.n_vocab * 6 > (1 << 26) || info.n_embd > (1 << 16)) {
        tp_text_free(m);
        return;
    }
    int32_t ids[6];
    int n_img = 0;
    for (int i = 0; i < 6; i++) ids[i] = (int32_t)((size ? data[(size_t)i * 131 % size] : 0) % info.n_vocab);
    if (info.image_token_id >= 0) {
        ids[2] = info.image_token_id;
        for (int i = 0; i < 6; i++) n_img += ids[i] == info.image_token_id;
    }
    float *embd = n_img ? calloc((size_t)n_img * (size_t)info.n_embd, sizeof(float)) : NULL;
    float *logits = malloc((size_t)info.n_vocab * 6 * sizeof(float));
    if (!logits || (n_img && !embd)) abort();
    for (int i = 0; embd && i < n_img * info.n_embd; i++) embd[i] = 0.01f * (float)(i % 7);
    if (tp_text_eval(m, ids, 6, embd, n_img, logits, (size & 1) != 0, &err) == TP_OK) {
        if (tp_text_n_past(m) != 6) abort();
        const int32_t next = ids[5] == info.image_token_id ? 0 : ids[5];
        if (tp_text_eval(m, &next, 1, NULL, 0, logits, false, &err) == TP_OK && tp_text_n_past(m) != 7) abort();
    } else if (tp_text_n_past(m) != 0) {
        abort(); /* a failed eval appends nothing */
    }
    tp_text_reset(m);
    if (tp_text_n_past(m) != 0) abort();
    free(embd);
    free(logits);
    tp_text_free(m);
}

static void exercise_tokenizer(const uint8_t *data, size_t size) {
    tp_tokenizer *t = NULL;
    tp_error err;
    if (tp_tokenizer_load(g_path, &t, &err) != TP_OK) {
        if (t || !err.message[0]) abort();
        return;
    }
    static const char text[] = "Héllo 12345 日本語 😀 <|grounding|><td>x</td>\n\n  ab";
    const char *inputs[2] = {text, (const char *)data};
    const size_t lens[2] = {sizeof text - 1, size < 64 ? size : 64};
    int32_t ids[512];
    for (int k = 0; k < 4; k++) {
        int32_t n = 0;
        const tp_status st = tp_tokenize(t, inputs[k / 2], lens[k / 2], (k & 1) != 0, ids, 512, &n, &err);
        if (st != TP_OK) {
            if (!err.message[0]) abort();
            continue;
        }
        if (n < 0 || n > 512) abort();
        for (int32_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= tp_tokenizer_n_vocab(t)) abort();
        size_t nb = 0;
        if (tp_detokenize(t, ids, n, (k & 2) != 0, NULL, 0, &nb, &err) != TP_OK) abort();
        tp_detokenizer *d = NULL;
        if (tp_detokenizer_create(t, false, &d, &err) != TP_OK) abort();
        const char *p;
        size_t pl;
        for (int32_t i = 0; i < n; i++)
            if (tp_detokenizer_push(d, ids[i], &p, &pl, &err) == TP_OK && pl) g_sink += (uint8_t)p[pl - 1];
        if (tp_detokenizer_flush(d, &p, &pl, &err) != TP_OK) abort();
        tp_detokenizer_free(d);
    }
    tp_tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!write_input(data, size)) return 0;
    exercise_gguf();
    exercise_vision(data, size);
    exercise_text(data, size);
    exercise_tokenizer(data, size);
    return 0;
}
