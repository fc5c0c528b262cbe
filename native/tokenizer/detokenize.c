/* detokenize.c - token ids back to bytes: whole (tp_detokenize: the tokens' bytes joined) and streamed
 * (tp_detokenizer: only complete UTF-8 characters come out; the bytes of a character split over tokens wait
 * for the token that completes it; invalid bytes become U+FFFD, one per maximal subpart, as Python's
 * errors="replace" decodes; flush ends an incomplete remainder as one U+FFFD). */
#include "tp_tokenizer.h"

#include <stdlib.h>

struct tp_detokenizer {
    const tp_tokenizer *t;
    bool skip_special;
    uint8_t pend[4]; /* a valid but incomplete character's first bytes */
    int n_pend;
    uint8_t *in;     /* pend ++ the token's bytes */
    size_t in_cap;
    char *out;
    size_t out_cap, out_n;
};

tp_status tp_detokenize(const tp_tokenizer *t, const int32_t *ids, int32_t n, bool skip_special, char *out,
                        size_t max_bytes, size_t *n_bytes, tp_error *err) {
    if (n_bytes) *n_bytes = 0;
    if (!t || !n_bytes || n < 0 || (!ids && n > 0) || (!out && max_bytes > 0)) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                     "tp_detokenize: tokenizer and n_bytes must not be NULL, ids only when n is 0, out only when "
                     "max_bytes is 0 (a size query), n >= 0 (got %d)", (int)n);
        return TP_ERR_INVALID_ARGUMENT;
    }
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_detokenize: id %d (at %d) is out of range 0..%d",
                         (int)ids[i], (int)i, (int)t->n - 1);
            return TP_ERR_INVALID_ARGUMENT;
        }
        if (skip_special && (t->flags[ids[i]] & TOKF_SPECIAL)) continue;
        const size_t l = (size_t)(t->piece_off[ids[i] + 1] - t->piece_off[ids[i]]);
        if (total + l <= max_bytes) memcpy(out + total, t->piece + t->piece_off[ids[i]], l);
        total += l;
    }
    *n_bytes = total;
    if (total > max_bytes && !(out == NULL && max_bytes == 0)) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_detokenize: %zu bytes but out holds %zu (*n_bytes says how "
                     "many are needed)", total, max_bytes);
        return TP_ERR_INVALID_ARGUMENT;
    }
    return TP_OK;
}

tp_status tp_detokenizer_create(const tp_tokenizer *t, bool skip_special, tp_detokenizer **out, tp_error *err) {
    if (!t || !out) {
        if (out) *out = NULL;
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_detokenizer_create: tokenizer and out must not be NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    *out = calloc(1, sizeof(**out));
    if (!*out) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_detokenizer_create: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    (*out)->t = t;
    (*out)->skip_special = skip_special;
    return TP_OK;
}

void tp_detokenizer_free(tp_detokenizer *d) {
    if (!d) return;
    free(d->in);
    free(d->out);
    free(d);
}

void tp_detokenizer_reset(tp_detokenizer *d) {
    if (!d) return;
    d->n_pend = 0;
    d->out_n = 0;
}

static bool reserve(void **p, size_t *cap, size_t need) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

/* Decodes pend ++ bytes into out; keeps an incomplete last character unless final. */
static bool run(tp_detokenizer *d, const char *bytes, size_t n, bool final) {
    const size_t total = (size_t)d->n_pend + n;
    if (!reserve((void **)&d->in, &d->in_cap, total + 1) || !reserve((void **)&d->out, &d->out_cap, 3 * total + 1))
        return false;
    memcpy(d->in, d->pend, (size_t)d->n_pend);
    if (n) memcpy(d->in + d->n_pend, bytes, n);
    d->n_pend = 0;
    d->out_n = 0;
    for (size_t i = 0; i < total;) {
        int need;
        const int k = tpu_utf8_prefix(d->in + i, total - i, &need);
        if (need > 0 && k == need) {
            memcpy(d->out + d->out_n, d->in + i, (size_t)need);
            d->out_n += (size_t)need;
            i += (size_t)need;
        } else if (need > 0 && i + (size_t)k == total && !final) {
            memcpy(d->pend, d->in + i, (size_t)k);
            d->n_pend = k;
            break;
        } else {
            memcpy(d->out + d->out_n, "\xEF\xBF\xBD", 3);
            d->out_n += 3;
            i += need > 0 ? (size_t)k : 1;
        }
    }
    d->out[d->out_n] = 0;
    return true;
}

tp_status tp_detokenizer_push(tp_detokenizer *d, int32_t id, const char **bytes, size_t *len, tp_error *err) {
    if (bytes) *bytes = "";
    if (len) *len = 0;
    if (!d || !bytes || !len) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_detokenizer_push: d, bytes and len must not be NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (id < 0 || id >= d->t->n) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_detokenizer_push: id %d is out of range 0..%d", (int)id,
                     (int)d->t->n - 1);
        return TP_ERR_INVALID_ARGUMENT;
    }
    size_t n = 0;
    const char *p = "";
    if (!(d->skip_special && (d->t->flags[id] & TOKF_SPECIAL))) p = tp_tokenizer_token_bytes(d->t, id, &n);
    if (!run(d, p, n, false)) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_detokenizer_push: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    *bytes = d->out;
    *len = d->out_n;
    return TP_OK;
}

tp_status tp_detokenizer_flush(tp_detokenizer *d, const char **bytes, size_t *len, tp_error *err) {
    if (bytes) *bytes = "";
    if (len) *len = 0;
    if (!d || !bytes || !len) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_detokenizer_flush: d, bytes and len must not be NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (!run(d, NULL, 0, true)) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_detokenizer_flush: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    *bytes = d->out;
    *len = d->out_n;
    return TP_OK;
}
