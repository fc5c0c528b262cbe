/* prompt.c - the pieces the families' prompt conventions share (prompt.h): growing id lists, DeepSeek's
 * "<image>" normalisation and split, and M-RoPE positions as transformers' get_rope_index gives them. */
#include "prompt.h"
#include "tp_internal.h"

#include <stdlib.h>
#include <string.h>

void prompt_ids_free(prompt_ids *p) {
    if (!p) return;
    free(p->ids);
    free(p->pos);
    memset(p, 0, sizeof(*p));
}

static tp_status reserve(prompt_ids *p, int64_t more, tp_error *err) {
    if (more < 0 || (int64_t)p->n + more > INT32_MAX / 2) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "prompt: %lld more ids do not fit a prompt", (long long)more);
        return TP_ERR_INVALID_ARGUMENT;
    }
    int64_t need = (int64_t)p->n + more;
    if (need <= p->cap) return TP_OK;
    int64_t cap = p->cap > 0 ? p->cap : 64;
    while (cap < need) cap *= 2;
    int32_t *ids = realloc(p->ids, (size_t)cap * sizeof(*ids));
    if (!ids) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "prompt: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    p->ids = ids;
    p->cap = (int32_t)cap;
    return TP_OK;
}

tp_status prompt_push(prompt_ids *p, int32_t id, int64_t count, tp_error *err) {
    tp_status st = reserve(p, count, err);
    if (st != TP_OK) return st;
    for (int64_t i = 0; i < count; i++) p->ids[p->n++] = id;
    return TP_OK;
}

tp_status prompt_push_text(prompt_ids *p, const tp_tokenizer *tok, const char *text, size_t len, tp_error *err) {
    if (len == 0) return TP_OK;
    int32_t n = 0;
    tp_status st = tp_tokenize(tok, text, len, true, NULL, 0, &n, err);
    if (st != TP_OK) return st;
    if ((st = reserve(p, n, err)) != TP_OK) return st;
    int32_t got = 0;
    st = tp_tokenize(tok, text, len, true, p->ids + p->n, n, &got, err);
    if (st != TP_OK) return st;
    p->n += got;
    return TP_OK;
}

int32_t prompt_count_tags(const char *text) {
    int32_t n = 0;
    for (const char *s = strstr(text, PROMPT_IMAGE_TAG); s; s = strstr(s + strlen(PROMPT_IMAGE_TAG), PROMPT_IMAGE_TAG))
        n++;
    return n;
}

tp_status prompt_deepseek_normalise(const prompt_request *r, const char **text, char **owned, tp_error *err) {
    *owned = NULL;
    int32_t n = prompt_count_tags(*text);
    if (n == 0 && r->n_images == 1) {
        size_t len = strlen(*text);
        char *s = malloc(len + sizeof(PROMPT_IMAGE_TAG "\n"));
        if (!s) {
            tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "prompt: out of memory");
            return TP_ERR_OUT_OF_MEMORY;
        }
        memcpy(s, PROMPT_IMAGE_TAG "\n", sizeof(PROMPT_IMAGE_TAG "\n") - 1);
        memcpy(s + sizeof(PROMPT_IMAGE_TAG "\n") - 1, *text, len + 1);
        *text = *owned = s;
        return TP_OK;
    }
    if (n != r->n_images) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "the prompt holds %d %s tags for %d image%s", n, PROMPT_IMAGE_TAG,
                     r->n_images, r->n_images == 1 ? "" : "s");
        return TP_ERR_INVALID_ARGUMENT;
    }
    return TP_OK;
}

tp_status prompt_deepseek_split(const prompt_request *r, const char *text, prompt_ids *out, tp_error *err) {
    tp_status st = r->bos_id >= 0 ? prompt_push(out, r->bos_id, 1, err) : TP_OK;
    const char *s = text;
    for (int32_t k = 0; st == TP_OK && k <= r->n_images; k++) {
        const char *tag = k < r->n_images ? strstr(s, PROMPT_IMAGE_TAG) : NULL;
        size_t len = tag ? (size_t)(tag - s) : strlen(s);
        if (k < r->n_images && !tag) {
            tp_error_set(err, TP_ERR_INTERNAL, "prompt: image tag %d missing", k);
            return TP_ERR_INTERNAL;
        }
        st = prompt_push_text(out, r->tok, s, len, err);
        if (st == TP_OK && tag) {
            st = prompt_push(out, r->image_id, r->images[k].n_tokens, err);
            s = tag + strlen(PROMPT_IMAGE_TAG);
        }
    }
    return st;
}

tp_status prompt_mrope_positions(prompt_ids *p, int32_t image_start, const prompt_image *img, tp_error *err) {
    const int64_t cols = img->grid_cols, rows = img->grid_rows, n_img = img->n_tokens, n = p->n;
    if (cols <= 0 || rows <= 0 || cols * rows != n_img) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%lld image tokens for a %lldx%lld grid", (long long)n_img,
                     (long long)cols, (long long)rows);
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (image_start < 0 || image_start + n_img > n) {
        tp_error_set(err, TP_ERR_INTERNAL, "prompt: image block outside the prompt");
        return TP_ERR_INTERNAL;
    }
    free(p->pos);
    p->pos = malloc((size_t)(3 * n) * sizeof(*p->pos));
    if (!p->pos) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "prompt: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    int32_t *t = p->pos, *h = p->pos + n, *w = p->pos + 2 * n;
    const int64_t s = image_start, after = s + (rows > cols ? rows : cols);
    for (int64_t i = 0; i < n; i++) {
        if (i < s) {
            t[i] = h[i] = w[i] = (int32_t)i;
        } else if (i < s + n_img) {
            t[i] = (int32_t)s;
            h[i] = (int32_t)(s + (i - s) / cols);
            w[i] = (int32_t)(s + (i - s) % cols);
        } else {
            t[i] = h[i] = w[i] = (int32_t)(after + (i - s - n_img));
        }
    }
    return TP_OK;
}
