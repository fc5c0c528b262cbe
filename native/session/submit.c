/* submit.c - a session's request: the images encoded (RGB preprocessed by the session's image mode, all pages in
 * one pass) or taken as given, and the prompt's ids (and M-RoPE positions) built by the vision family's
 * conventions (models/<family>/prompt.c). */
#include "session.h"

#include <stdlib.h>
#include <string.h>

/* The pages of the RGB images, encoded in one pass into rows[k] (malloc'ed); img[k] their sizes and grids. */
static tp_status encode_rgb(tp_session *s, const tp_session_image *images, int32_t n, prompt_image *img,
                            float **rows, tp_error *err) {
    tp_preprocess_params pp;
    const char *mode = s->image_mode;
    if (!mode && s->pf->many_images_mode && n >= s->pf->many_from) mode = s->pf->many_images_mode;
    tp_status st = tp_vision_preprocess_params(s->vision, mode, &pp);
    if (st != TP_OK) {
        tp_error_set(err, st, "tp_session_submit: no image mode '%s'", mode ? mode : "(default)");
        return st;
    }
    tp_page *pages[PROMPT_MAX_IMAGES] = {0};
    tp_page_views views[PROMPT_MAX_IMAGES];
    float *out[PROMPT_MAX_IMAGES] = {0};
    int32_t idx[PROMPT_MAX_IMAGES], n_rgb = 0;
    for (int32_t k = 0; k < n && st == TP_OK; k++) {
        if (!images[k].rgb.rgb) continue;
        tp_error e = {0};
        st = tp_page_from_rgb(&images[k].rgb, &pp, &pages[n_rgb], &e);
        if (st != TP_OK) {
            tp_error_set(err, st, "tp_session_submit: image %d: %s", (int)k, e.message);
            break;
        }
        views[n_rgb] = *tp_page_get_views(pages[n_rgb]);
        int64_t nt = tp_vision_page_n_tokens(s->vision, &views[n_rgb]);
        if (nt <= 0) {
            st = TP_ERR_INVALID_ARGUMENT;
            tp_error_set(err, st, "tp_session_submit: image %d: the vision model cannot encode its views", (int)k);
            n_rgb++;
            break;
        }
        img[k].n_tokens = nt;
        img[k].grid_cols = img[k].grid_rows = 0;
        if (pp.fit == TP_FIT_NATIVE && pp.factor > 0) {
            img[k].grid_cols = views[n_rgb].views[0].width / pp.factor;
            img[k].grid_rows = views[n_rgb].views[0].height / pp.factor;
        }
        out[n_rgb] = malloc((size_t)nt * (size_t)s->vinfo.n_embd * sizeof(float));
        idx[n_rgb++] = k;
        if (!out[n_rgb - 1]) {
            st = TP_ERR_OUT_OF_MEMORY;
            tp_error_set(err, st, "tp_session_submit: out of memory");
        }
    }
    if (st == TP_OK && n_rgb > 0) st = tp_vision_encode(s->vision, views, n_rgb, out, err);
    for (int32_t i = 0; i < n_rgb; i++) {
        tp_page_free(pages[i]);
        if (st == TP_OK)
            rows[idx[i]] = out[i];
        else
            free(out[i]);
    }
    return st;
}

static tp_status check_images(const tp_session *s, const tp_session_image *images, int32_t n, tp_error *err) {
    if (!images || n < 1 || n > s->pf->max_images) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_submit: the %s family takes %d image%s per prompt (got %d%s)",
                     s->vinfo.family, (int)s->pf->max_images, s->pf->max_images == 1 ? "" : "s", (int)n,
                     images ? "" : ", images NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    for (int32_t k = 0; k < n; k++) {
        const tp_session_image *im = &images[k];
        if (im->rgb.rgb) continue; /* tp_page_from_rgb checks the sizes */
        if (!im->embd || im->n_tokens <= 0 || im->n_tokens > INT32_MAX / 4) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_submit: image %d has neither RGB bytes nor "
                         "embeddings (embd %s, n_tokens %lld)", (int)k, im->embd ? "set" : "NULL", (long long)im->n_tokens);
            return TP_ERR_INVALID_ARGUMENT;
        }
    }
    return TP_OK;
}

tp_status tp_session_submit(tp_session *s, const char *prompt, const tp_session_image *images, int32_t n_images,
                            tp_error *err) {
    if (!s) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_submit: NULL session");
        return TP_ERR_INVALID_ARGUMENT;
    }
    session_clear(s);
    if (!s->pf) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_submit: the session has no vision model (it takes "
                     "tp_session_submit_ids)");
        return TP_ERR_INVALID_ARGUMENT;
    }
    tp_status st = check_images(s, images, n_images, err);
    if (st != TP_OK) return st;
    if (session_take_cancel(s, err)) return TP_ERR_ABORTED;
    prompt_image img[PROMPT_MAX_IMAGES] = {{0}};
    float *rows[PROMPT_MAX_IMAGES] = {0};
    double t0 = session_now();
    st = encode_rgb(s, images, n_images, img, rows, err);
    if (st == TP_ERR_ABORTED) session_take_cancel(s, err);
    int64_t total = 0;
    for (int32_t k = 0; k < n_images && st == TP_OK; k++) {
        if (!images[k].rgb.rgb) {
            img[k].n_tokens = images[k].n_tokens;
            img[k].grid_cols = images[k].grid_cols;
            img[k].grid_rows = images[k].grid_rows;
        }
        total += img[k].n_tokens;
    }
    if (st == TP_OK && total > INT32_MAX / 4) {
        st = TP_ERR_INVALID_ARGUMENT;
        tp_error_set(err, st, "tp_session_submit: %lld image tokens in all: too many for one prompt", (long long)total);
    }
    const size_t row_bytes = (size_t)s->vinfo.n_embd * sizeof(float);
    if (st == TP_OK && !(s->embd = malloc((size_t)total * row_bytes))) {
        st = TP_ERR_OUT_OF_MEMORY;
        tp_error_set(err, st, "tp_session_submit: out of memory");
    }
    int64_t row = 0;
    for (int32_t k = 0; k < n_images && st == TP_OK; row += img[k].n_tokens, k++)
        memcpy(s->embd + (size_t)row * (size_t)s->vinfo.n_embd, rows[k] ? rows[k] : images[k].embd,
               (size_t)img[k].n_tokens * row_bytes);
    for (int32_t k = 0; k < n_images; k++) free(rows[k]);
    s->n_embd_rows = total;
    s->vision_s = session_now() - t0;
    if (st == TP_OK) {
        prompt_request req = {.tok = s->tok, .bos_id = s->bos_id, .image_id = s->image_id,
                              .chat_template = s->chat_template, .chat_template_len = s->chat_template_len,
                              .text = prompt ? prompt : s->pf->default_prompt, .images = img, .n_images = n_images,
                              .n_pos_axes = s->tinfo.n_pos_axes};
        st = s->pf->build(&req, &s->prompt, err);
    }
    const int32_t n_ctx = s->seq ? tp_text_seq_n_ctx(s->seq) : s->tinfo.n_ctx;
    if (st == TP_OK && s->prompt.n >= n_ctx) {
        st = TP_ERR_INVALID_ARGUMENT;
        tp_error_set(err, st, "tp_session_submit: the prompt (%d tokens with the image) does not fit the context of %d "
                     "tokens (use a smaller image mode or a larger n_ctx)", (int)s->prompt.n, (int)n_ctx);
    }
    if (st != TP_OK) {
        double vs = s->vision_s;
        session_clear(s);
        s->vision_s = vs;
        return st;
    }
    s->submitted = true;
    return TP_OK;
}

tp_status tp_session_submit_ids(tp_session *s, const int32_t *ids, int32_t n, const int32_t *pos, int32_t n_pos_axes,
                                const float *embd, int64_t n_embd_rows, tp_error *err) {
    if (!s) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_submit_ids: NULL session");
        return TP_ERR_INVALID_ARGUMENT;
    }
    session_clear(s);
    const int32_t n_ctx = s->seq ? tp_text_seq_n_ctx(s->seq) : s->tinfo.n_ctx;
    if (!ids || n < 1 || (pos && n_pos_axes != s->tinfo.n_pos_axes) || n_embd_rows < 0 || (n_embd_rows > 0 && !embd)) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_submit_ids: %d ids (ids %s), positions of %d axes (the "
                     "model has %d), %lld image rows (embd %s)", (int)n, ids ? "set" : "NULL", (int)n_pos_axes,
                     (int)s->tinfo.n_pos_axes, (long long)n_embd_rows, embd ? "set" : "NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (n >= n_ctx) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_submit_ids: the prompt (%d tokens with the image) does not "
                     "fit the context of %d tokens", (int)n, (int)n_ctx);
        return TP_ERR_INVALID_ARGUMENT;
    }
    int64_t n_img = 0;
    for (int32_t i = 0; i < n; i++) {
        if (ids[i] == s->image_id) {
            n_img++;
        } else if (ids[i] < 0 || ids[i] >= s->tinfo.n_vocab) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_submit_ids: id %d at %d is outside the vocabulary "
                         "(0..%d)", (int)ids[i], (int)i, (int)s->tinfo.n_vocab - 1);
            return TP_ERR_INVALID_ARGUMENT;
        }
    }
    if (n_img != n_embd_rows) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_submit_ids: %lld image rows for %lld image tokens",
                     (long long)n_embd_rows, (long long)n_img);
        return TP_ERR_INVALID_ARGUMENT;
    }
    const size_t n_pos = pos ? (size_t)n_pos_axes * (size_t)n : 0;
    const size_t embd_bytes = (size_t)n_embd_rows * (size_t)s->tinfo.n_embd * sizeof(float);
    s->prompt.ids = malloc((size_t)n * sizeof(int32_t));
    s->prompt.pos = n_pos ? malloc(n_pos * sizeof(int32_t)) : NULL;
    s->embd = embd_bytes ? malloc(embd_bytes) : NULL;
    if (!s->prompt.ids || (n_pos && !s->prompt.pos) || (embd_bytes && !s->embd)) {
        session_clear(s);
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_session_submit_ids: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    memcpy(s->prompt.ids, ids, (size_t)n * sizeof(int32_t));
    if (n_pos) memcpy(s->prompt.pos, pos, n_pos * sizeof(int32_t));
    if (embd_bytes) memcpy(s->embd, embd, embd_bytes);
    s->prompt.n = s->prompt.cap = n;
    s->n_embd_rows = n_embd_rows;
    s->submitted = true;
    return TP_OK;
}
