/* sampler.c - tp_sampler: the parameters, the history (no_repeat.c), the ban applied to a logits row, then greedy
 * or a seeded draw after the warpers (filter.c). */
#include "tp_generate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tp_sampler {
    tp_sampler_params p; /* no_repeat_whitelist not kept (copied into wl) */
    uint8_t *wl;         /* n_vocab flags: never banned */
    tp_no_repeat nr;
    tp_rng rng;
    tp_filter_work work;
};

tp_sampler_params tp_sampler_default_params(void) {
    tp_sampler_params p;
    memset(&p, 0, sizeof(p));
    p.n_vocab = 0;
    p.temperature = 0.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.seed = 0;
    p.no_repeat_ngram = 30;
    p.no_repeat_window = 90;
    p.no_repeat_scope = TP_NO_REPEAT_GENERATED;
    p.no_repeat_whitelist = NULL;
    p.n_no_repeat_whitelist = 0;
    return p;
}

static tp_status bad(tp_error *err, const char *what) {
    tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_sampler_create: %s", what);
    return TP_ERR_INVALID_ARGUMENT;
}

void tp_sampler_free(tp_sampler *s) {
    if (!s) return;
    tp_no_repeat_free(&s->nr);
    free(s->wl);
    free(s->work.val);
    free(s->work.idx);
    free(s->work.tmp);
    free(s->work.pairs);
    free(s);
}

tp_status tp_sampler_create(const tp_sampler_params *params, tp_sampler **out, tp_error *err) {
    if (out) *out = NULL;
    if (!params || !out) return bad(err, "params and out must not be NULL");
    const tp_sampler_params *p = params;
    char msg[200];
    if (p->n_vocab <= 0) {
        snprintf(msg, sizeof(msg), "n_vocab must be > 0 (got %d)", (int)p->n_vocab);
        return bad(err, msg);
    }
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature)) {
        snprintf(msg, sizeof(msg), "temperature must be a finite number >= 0 (got %g)", (double)p->temperature);
        return bad(err, msg);
    }
    if (p->top_k < 0) {
        snprintf(msg, sizeof(msg), "top_k must be >= 0 (got %d)", (int)p->top_k);
        return bad(err, msg);
    }
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) {
        snprintf(msg, sizeof(msg), "top_p must be in (0, 1] (got %g)", (double)p->top_p);
        return bad(err, msg);
    }
    if (p->no_repeat_ngram < 0 || p->no_repeat_window < 0) {
        snprintf(msg, sizeof(msg), "no_repeat_ngram and no_repeat_window must be >= 0 (got %d, %d)",
                 (int)p->no_repeat_ngram, (int)p->no_repeat_window);
        return bad(err, msg);
    }
    if (p->no_repeat_scope != TP_NO_REPEAT_GENERATED && p->no_repeat_scope != TP_NO_REPEAT_ALL) {
        snprintf(msg, sizeof(msg), "no_repeat_scope must be TP_NO_REPEAT_GENERATED or TP_NO_REPEAT_ALL (got %d)",
                 p->no_repeat_scope);
        return bad(err, msg);
    }
    if (p->n_no_repeat_whitelist < 0 || (p->n_no_repeat_whitelist > 0 && !p->no_repeat_whitelist)) {
        snprintf(msg, sizeof(msg), "n_no_repeat_whitelist must be >= 0, with no_repeat_whitelist not NULL when > 0 "
                 "(got %d)", (int)p->n_no_repeat_whitelist);
        return bad(err, msg);
    }
    for (int32_t i = 0; i < p->n_no_repeat_whitelist; i++)
        if (p->no_repeat_whitelist[i] < 0) {
            snprintf(msg, sizeof(msg), "no_repeat_whitelist[%d] is negative (%d)", (int)i,
                     (int)p->no_repeat_whitelist[i]);
            return bad(err, msg);
        }
    tp_sampler *s = calloc(1, sizeof(*s));
    if (!s) goto oom;
    s->p = *p;
    s->p.no_repeat_whitelist = NULL;
    const size_t nv = (size_t)p->n_vocab;
    s->wl = calloc(nv, 1);
    s->work.val = malloc(nv * sizeof(float));
    s->work.idx = malloc(nv * sizeof(int32_t));
    s->work.tmp = malloc(nv * sizeof(float));
    s->work.pairs = malloc(nv * sizeof(tp_logit_pair));
    if (!s->wl || !s->work.val || !s->work.idx || !s->work.tmp || !s->work.pairs) {
        tp_sampler_free(s);
        goto oom;
    }
    for (int32_t i = 0; i < p->n_no_repeat_whitelist; i++)
        if (p->no_repeat_whitelist[i] < p->n_vocab) s->wl[p->no_repeat_whitelist[i]] = 1;
    const tp_status st = tp_no_repeat_init(&s->nr, p->no_repeat_ngram, p->no_repeat_window, p->n_vocab, s->wl, err);
    if (st != TP_OK) {
        tp_sampler_free(s);
        return st;
    }
    tp_rng_seed(&s->rng, p->seed);
    *out = s;
    return TP_OK;
oom:
    tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_sampler_create: out of memory (n_vocab %d)", (int)p->n_vocab);
    return TP_ERR_OUT_OF_MEMORY;
}

void tp_sampler_reset(tp_sampler *s) {
    if (!s) return;
    tp_no_repeat_clear(&s->nr);
    tp_rng_seed(&s->rng, s->p.seed);
}

tp_status tp_sampler_accept(tp_sampler *s, int32_t id, tp_error *err) {
    if (!s) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_sampler_accept: sampler is NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (id < 0 || id >= s->p.n_vocab) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_sampler_accept: id %d is out of range 0..%d", (int)id,
                     (int)s->p.n_vocab - 1);
        return TP_ERR_INVALID_ARGUMENT;
    }
    return tp_no_repeat_push(&s->nr, id, err);
}

tp_status tp_sampler_accept_prompt(tp_sampler *s, const int32_t *ids, int32_t n, tp_error *err) {
    if (!s || n < 0 || (!ids && n > 0)) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_sampler_accept_prompt: sampler must not be NULL, n >= 0 "
                     "(got %d), ids not NULL when n > 0", (int)n);
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (s->p.no_repeat_scope != TP_NO_REPEAT_ALL) return TP_OK;
    for (int32_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= s->p.n_vocab) continue;
        const tp_status st = tp_no_repeat_push(&s->nr, ids[i], err);
        if (st != TP_OK) return st;
    }
    return TP_OK;
}

int64_t tp_sampler_n_history(const tp_sampler *s) { return s ? s->nr.n : 0; }

tp_status tp_sampler_banned(tp_sampler *s, int32_t *out, int32_t cap, int32_t *n, tp_error *err) {
    if (n) *n = 0;
    if (!s || !n || cap < 0 || (!out && cap > 0)) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_sampler_banned: sampler and n must not be NULL, cap >= 0 "
                     "(got %d), out not NULL when cap > 0", (int)cap);
        return TP_ERR_INVALID_ARGUMENT;
    }
    const int32_t *ban;
    int32_t nb;
    const tp_status st = tp_no_repeat_banned(&s->nr, &ban, &nb, err);
    if (st != TP_OK) return st;
    *n = nb;
    if (out && nb > cap) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_sampler_banned: %d ids but out holds %d (*n says how many)",
                     (int)nb, (int)cap);
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (out && nb > 0) memcpy(out, ban, (size_t)nb * sizeof(*ban));
    return TP_OK;
}

/* check the call and set the banned logits to -inf */
static tp_status apply_ban(tp_sampler *s, float *logits, int32_t n_vocab, const char *fn, tp_error *err) {
    if (!s || !logits) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: sampler and logits must not be NULL", fn);
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (n_vocab != s->p.n_vocab) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: a row of %d logits but the sampler's n_vocab is %d", fn,
                     (int)n_vocab, (int)s->p.n_vocab);
        return TP_ERR_INVALID_ARGUMENT;
    }
    const int32_t *ban;
    int32_t nb;
    const tp_status st = tp_no_repeat_banned(&s->nr, &ban, &nb, err);
    if (st != TP_OK) return st;
    for (int32_t i = 0; i < nb; i++) logits[ban[i]] = -INFINITY;
    return TP_OK;
}

tp_status tp_sampler_sample(tp_sampler *s, float *logits, int32_t n_vocab, int32_t *id, tp_error *err) {
    if (id) *id = -1;
    if (!id) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_sampler_sample: id must not be NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    const tp_status st = apply_ban(s, logits, n_vocab, "tp_sampler_sample", err);
    if (st != TP_OK) return st;
    if (s->p.temperature == 0.0f) {
        *id = tp_argmax_first(logits, n_vocab);
        return TP_OK;
    }
    const int32_t c = tp_filter_candidates(logits, n_vocab, s->p.temperature, s->p.top_k, s->p.top_p, &s->work);
    if (c == 0) return TP_OK;
    *id = s->work.idx[tp_filter_draw(&s->work, c, tp_rng_uniform(&s->rng))];
    return TP_OK;
}

tp_status tp_sampler_filter(tp_sampler *s, float *logits, int32_t n_vocab, tp_error *err) {
    const tp_status st = apply_ban(s, logits, n_vocab, "tp_sampler_filter", err);
    if (st != TP_OK || s->p.temperature == 0.0f) return st;
    const int32_t c = tp_filter_candidates(logits, n_vocab, s->p.temperature, s->p.top_k, s->p.top_p, &s->work);
    int32_t j = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        if (j < c && s->work.idx[j] == i) logits[i] = s->work.val[j++];
        else logits[i] = -INFINITY;
    }
    return TP_OK;
}
