/* stop.c - tp_stop: the stop rules of a generated stream: EOS ids, a count of new tokens, and stop strings matched
 * over the text of the streaming detokenizer (whole UTF-8 characters), with the tail that could still begin a
 * stop string held back so that no part of a stop string is ever given out. */
#include "tp_generate.h"

#include <stdlib.h>
#include <string.h>

struct tp_stop {
    const tp_tokenizer *t;
    tp_detokenizer *d;
    int32_t *eos;
    int32_t n_eos, max_new, n_tokens;
    char **stops;
    size_t *stop_len;
    int32_t n_stops;
    bool stopped, dropped; /* dropped: a stop string ended the text */
    char *pend;            /* held text ++ the new piece */
    size_t pend_n, pend_cap;
    char *out;
    size_t out_cap;
};

tp_stop_params tp_stop_default_params(void) {
    tp_stop_params p;
    memset(&p, 0, sizeof(p));
    return p;
}

void tp_stop_free(tp_stop *s) {
    if (!s) return;
    tp_detokenizer_free(s->d);
    free(s->eos);
    for (int32_t i = 0; s->stops && i < s->n_stops; i++) free(s->stops[i]);
    free(s->stops);
    free(s->stop_len);
    free(s->pend);
    free(s->out);
    free(s);
}

tp_status tp_stop_create(const tp_tokenizer *t, const tp_stop_params *p, tp_stop **out, tp_error *err) {
    if (out) *out = NULL;
    if (!p || !out || p->n_eos < 0 || (p->n_eos > 0 && !p->eos_ids) || p->max_new_tokens < 0 ||
        p->n_stop_strings < 0 || (p->n_stop_strings > 0 && !p->stop_strings) || (p->n_stop_strings > 0 && !t)) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_stop_create: params and out must not be NULL; n_eos (%d), "
                     "max_new_tokens (%d) and n_stop_strings (%d) >= 0; eos_ids and stop_strings not NULL when their "
                     "count is > 0; stop strings need a tokenizer", p ? (int)p->n_eos : 0,
                     p ? (int)p->max_new_tokens : 0, p ? (int)p->n_stop_strings : 0);
        return TP_ERR_INVALID_ARGUMENT;
    }
    for (int32_t i = 0; i < p->n_stop_strings; i++)
        if (!p->stop_strings[i] || !p->stop_strings[i][0]) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_stop_create: stop_strings[%d] is NULL or empty", (int)i);
            return TP_ERR_INVALID_ARGUMENT;
        }
    tp_stop *s = calloc(1, sizeof(*s));
    if (!s) goto oom;
    s->t = t;
    s->max_new = p->max_new_tokens;
    if (p->n_eos > 0) {
        if (!(s->eos = malloc((size_t)p->n_eos * sizeof(*s->eos)))) goto oom;
        memcpy(s->eos, p->eos_ids, (size_t)p->n_eos * sizeof(*s->eos));
        s->n_eos = p->n_eos;
    }
    if (p->n_stop_strings > 0) {
        s->stops = calloc((size_t)p->n_stop_strings, sizeof(*s->stops));
        s->stop_len = calloc((size_t)p->n_stop_strings, sizeof(*s->stop_len));
        if (!s->stops || !s->stop_len) goto oom;
        s->n_stops = p->n_stop_strings;
        for (int32_t i = 0; i < p->n_stop_strings; i++) {
            s->stop_len[i] = strlen(p->stop_strings[i]);
            if (!(s->stops[i] = malloc(s->stop_len[i] + 1))) goto oom;
            memcpy(s->stops[i], p->stop_strings[i], s->stop_len[i] + 1);
        }
    }
    if (t) {
        const tp_status st = tp_detokenizer_create(t, p->skip_special, &s->d, err);
        if (st != TP_OK) {
            tp_stop_free(s);
            return st;
        }
    }
    *out = s;
    return TP_OK;
oom:
    tp_stop_free(s);
    tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_stop_create: out of memory");
    return TP_ERR_OUT_OF_MEMORY;
}

void tp_stop_reset(tp_stop *s) {
    if (!s) return;
    if (s->d) tp_detokenizer_reset(s->d);
    s->n_tokens = 0;
    s->stopped = s->dropped = false;
    s->pend_n = 0;
}

int32_t tp_stop_n_tokens(const tp_stop *s) { return s ? s->n_tokens : 0; }

static bool reserve(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    char *b = realloc(*buf, c);
    if (!b) return false;
    *buf = b;
    *cap = c;
    return true;
}

/* out = pend[0..n) + NUL; pend keeps pend[n..) */
static bool emit(tp_stop *s, size_t n, size_t keep_from, const char **text, size_t *len) {
    if (!reserve(&s->out, &s->out_cap, n + 1)) return false;
    memcpy(s->out, s->pend, n);
    s->out[n] = 0;
    memmove(s->pend, s->pend + keep_from, s->pend_n - keep_from);
    s->pend_n -= keep_from;
    *text = s->out;
    *len = n;
    return true;
}

/* the earliest start of a stop string in pend (SIZE_MAX if none) */
static size_t find_stop(const tp_stop *s) {
    size_t best = SIZE_MAX;
    for (int32_t k = 0; k < s->n_stops; k++) {
        const size_t l = s->stop_len[k];
        for (size_t i = 0; i + l <= s->pend_n && i < best; i++)
            if (memcmp(s->pend + i, s->stops[k], l) == 0) {
                best = i;
                break;
            }
    }
    return best;
}

/* the length of the longest tail of pend that is a proper prefix of a stop string */
static size_t held_tail(const tp_stop *s) {
    size_t best = 0;
    for (int32_t k = 0; k < s->n_stops; k++) {
        const size_t l = s->stop_len[k];
        for (size_t h = (l - 1 < s->pend_n ? l - 1 : s->pend_n); h > best; h--)
            if (memcmp(s->pend + s->pend_n - h, s->stops[k], h) == 0) {
                best = h;
                break;
            }
    }
    return best;
}

tp_status tp_stop_push(tp_stop *s, int32_t id, int *reason, const char **text, size_t *len, tp_error *err) {
    if (text) *text = "";
    if (len) *len = 0;
    if (reason) *reason = TP_STOP_NONE;
    if (!s || !reason || !text || !len) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_stop_push: s, reason, text and len must not be NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (s->stopped) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_stop_push: the sequence has stopped (tp_stop_reset starts a "
                     "new one)");
        return TP_ERR_INVALID_ARGUMENT;
    }
    for (int32_t i = 0; i < s->n_eos; i++)
        if (s->eos[i] == id) {
            s->stopped = true;
            *reason = TP_STOP_EOS;
            return TP_OK;
        }
    if (s->d) {
        const char *piece;
        size_t n;
        const tp_status st = tp_detokenizer_push(s->d, id, &piece, &n, err);
        if (st != TP_OK) return st;
        if (!reserve(&s->pend, &s->pend_cap, s->pend_n + n + 1)) goto oom;
        memcpy(s->pend + s->pend_n, piece, n);
        s->pend_n += n;
        const size_t at = find_stop(s);
        if (at != SIZE_MAX) {
            if (!emit(s, at, s->pend_n, text, len)) goto oom;
            s->n_tokens++;
            s->stopped = s->dropped = true;
            *reason = TP_STOP_STRING;
            return TP_OK;
        }
        const size_t give = s->pend_n - held_tail(s);
        if (!emit(s, give, give, text, len)) goto oom;
    }
    s->n_tokens++;
    if (s->max_new > 0 && s->n_tokens >= s->max_new) {
        s->stopped = true;
        *reason = TP_STOP_LENGTH;
    }
    return TP_OK;
oom:
    tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_stop_push: out of memory");
    return TP_ERR_OUT_OF_MEMORY;
}

tp_status tp_stop_flush(tp_stop *s, const char **text, size_t *len, tp_error *err) {
    if (text) *text = "";
    if (len) *len = 0;
    if (!s || !text || !len) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_stop_flush: s, text and len must not be NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (!s->d || s->dropped) return TP_OK;
    const char *rest;
    size_t n;
    const tp_status st = tp_detokenizer_flush(s->d, &rest, &n, err);
    if (st != TP_OK) return st;
    if (!reserve(&s->pend, &s->pend_cap, s->pend_n + n + 1)) goto oom;
    memcpy(s->pend + s->pend_n, rest, n);
    s->pend_n += n;
    if (!emit(s, s->pend_n, s->pend_n, text, len)) goto oom;
    return TP_OK;
oom:
    tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_stop_flush: out of memory");
    return TP_ERR_OUT_OF_MEMORY;
}
