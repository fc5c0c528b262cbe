/* weights.c - see weights.h. */
#include "weights.h"
#include "names.h"

#include <stdio.h>

int weights_get_int(const tp_gguf *g, const char *key, int64_t lo, int64_t hi, int fallback) {
    int64_t v;
    if (tp_gguf_get_i64(g, key, &v) == TP_OK && v >= lo && v <= hi) return (int)v;
    return fallback;
}

float weights_get_float(const tp_gguf *g, const char *key, float lo, float hi, float fallback) {
    float v;
    if (tp_gguf_get_f32(g, key, &v) == TP_OK && v > lo && v < hi) return v;
    return fallback;
}

int64_t weights_tensor_ne(const tp_gguf *g, const char *name, int dim) {
    int64_t i = tp_gguf_find_tensor(g, name);
    return i < 0 ? -1 : tp_gguf_tensor_ne(g, i, dim);
}

int64_t weights_tensor_nef(const tp_gguf *g, int dim, const char *fmt, int i) {
    char name[128];
    snprintf(name, sizeof name, fmt, i);
    return weights_tensor_ne(g, name, dim);
}

bool weights_has_tensorf(const tp_gguf *g, const char *fmt, int i) {
    return weights_tensor_nef(g, 0, fmt, i) >= 0;
}

tp_tensor *weights_load(weights_loader *L, const char *name, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3) {
    if (L->failed) return NULL;
    int64_t idx = tp_gguf_find_tensor(L->g, name);
    if (idx < 0) {
        tp_error_set(L->err, TP_ERR_FORMAT, "%s: tensor '%s' is missing", L->path, name);
        L->failed = true;
        return NULL;
    }
    int64_t want[4] = {ne0, ne1, ne2, ne3};
    for (int d = 0; d < 4; d++) {
        int64_t have = tp_gguf_tensor_ne(L->g, idx, d);
        if (want[d] >= 0 && have != want[d]) {
            tp_error_set(L->err, TP_ERR_FORMAT, "%s: tensor '%s' has ne[%d] = %lld, the model needs %lld", L->path,
                         name, d, (long long)have, (long long)want[d]);
            L->failed = true;
            return NULL;
        }
    }
    tp_tensor *t = tp_gguf_load_tensor(L->g, L->ctx, name);
    if (!t) {
        tp_error_set(L->err, TP_ERR_FORMAT, "%s: %s", L->path, tp_context_error(L->ctx));
        L->failed = true;
    }
    return t;
}

tp_tensor *weights_loadf(weights_loader *L, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3, const char *fmt,
                         int i) {
    char name[128];
    snprintf(name, sizeof name, fmt, i);
    return weights_load(L, name, ne0, ne1, ne2, ne3);
}

void weights_need_f32(weights_loader *L, const tp_tensor *t) {
    if (L->failed || !t || t->type == TP_TYPE_F32) return;
    tp_error_set(L->err, TP_ERR_FORMAT, "%s: tensor '%s' is %s, expected f32", L->path, t->name,
                 tp_type_name(t->type));
    L->failed = true;
}

tp_tensor *weights_load_f32(weights_loader *L, const char *name, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3) {
    tp_tensor *t = weights_load(L, name, ne0, ne1, ne2, ne3);
    if (!t || t->type == TP_TYPE_F32) return t;
    if (t->type == TP_TYPE_I32) {
        tp_error_set(L->err, TP_ERR_FORMAT, "%s: tensor '%s' is i32; the model needs floating-point values", L->path,
                     name);
        L->failed = true;
        return NULL;
    }
    tp_tensor *f = tp_new_tensor(L->ctx, TP_TYPE_F32, t->n_dims, t->ne);
    if (!f || tp_tensor_get_f32(t, tp_tensor_data(f), tp_nelements(f)) != TP_OK) {
        tp_error_set(L->err, TP_ERR_FORMAT, "%s: tensor '%s' (%s) cannot be read as f32: %s", L->path, name,
                     tp_type_name(t->type), tp_context_error(L->ctx));
        L->failed = true;
        return NULL;
    }
    tp_tensor_set_name(f, name);
    return f;
}

tp_tensor *weights_loadf_f32(weights_loader *L, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3, const char *fmt,
                             int i) {
    char name[128];
    snprintf(name, sizeof name, fmt, i);
    return weights_load_f32(L, name, ne0, ne1, ne2, ne3);
}

bool weights_str_equals(const tp_gguf *g, const char *key, const char *want) {
    const char *s;
    size_t n;
    if (tp_gguf_get_str(g, key, &s, &n) != TP_OK) return false;
    return n == strlen(want) && memcmp(s, want, n) == 0;
}

int weights_count_blocks(const tp_gguf *g, const char *fmt, int max) {
    int n = 0;
    while (n < max && weights_has_tensorf(g, fmt, n)) n++;
    return n;
}

tp_status weights_fail(weights_loader *L, const char *msg) {
    if (!L->failed) tp_error_set(L->err, TP_ERR_FORMAT, "%s: %s", L->path, msg);
    L->failed = true;
    return TP_ERR_FORMAT;
}

void weights_image_norm(const tp_gguf *g, float mean[3], float std[3]) {
    for (int c = 0; c < 3; c++) {
        mean[c] = 0.5f;
        std[c] = 0.5f;
        float v;
        if (tp_gguf_get_arr_f32(g, KEY_V_IMAGE_MEAN, c, &v) == TP_OK && v == v) mean[c] = v;
        if (tp_gguf_get_arr_f32(g, KEY_V_IMAGE_STD, c, &v) == TP_OK && v == v && v != 0.0f) std[c] = v;
    }
}

int weights_find_token(const tp_gguf *g, const char *text, int64_t n_vocab) {
    const int64_t key = tp_gguf_find_key(g, KEY_TOK_TOKENS);
    const int64_t n = key >= 0 ? TP_MIN(tp_gguf_arr_n(g, key), n_vocab) : 0;
    const size_t want = strlen(text);
    for (int64_t i = n - 1; i >= 0; i--) {
        const char *s;
        size_t len;
        if (tp_gguf_get_arr_str(g, KEY_TOK_TOKENS, i, &s, &len) == TP_OK && len == want && memcmp(s, text, len) == 0)
            return (int)i;
    }
    return -1;
}

int weights_token_id(const tp_gguf *g, const char *key, int64_t n_vocab, int fallback) {
    int64_t v;
    return tp_gguf_get_i64(g, key, &v) == TP_OK && v >= 0 && v < n_vocab ? (int)v : fallback;
}
