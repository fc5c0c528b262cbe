/* tp_generate.h - the generation policy's internals (native/generate/): the seeded PRNG, the incremental
 * no-repeat n-gram rule over a token history, and the sampling filters (temperature, top-k, top-p, the draw).
 * The public API (tp_sampler_*, tp_stop_*) is in tilepass.h. */
#ifndef TP_GENERATE_H
#define TP_GENERATE_H

#include "tilepass.h"
#include "tp_internal.h"

#include <stdbool.h>
#include <stdint.h>

/* ---- rng.c: xoshiro256** seeded by splitmix64 (Blackman & Vigna), exact on every platform ---- */
typedef struct tp_rng {
    uint64_t s[4];
} tp_rng;
void tp_rng_seed(tp_rng *r, uint64_t seed);
uint64_t tp_rng_next(tp_rng *r);
/* uniform in [0, 1): the top 53 bits */
double tp_rng_uniform(tp_rng *r);

/* ---- no_repeat.c: the history and its ban set ---- */
typedef struct tp_no_repeat {
    int32_t ngram, window, n_vocab;
    const uint8_t *whitelist; /* n_vocab flags, owned by the sampler */
    int32_t *hist;            /* the ids accepted */
    uint64_t *pre;            /* pre[k]: the rolling hash of hist[0..k) (n + 1 entries) */
    int64_t n, cap;
    uint64_t pow_m;           /* B^(ngram - 1) */
    uint32_t *stamp, cur;     /* stamp[t] == cur: t is in the ban set being built */
    int32_t *ban;             /* the ban set of the current history (ascending), valid when ban_ok */
    int32_t n_ban;
    int64_t ban_cap;
    bool ban_ok;
} tp_no_repeat;

tp_status tp_no_repeat_init(tp_no_repeat *nr, int32_t ngram, int32_t window, int32_t n_vocab,
                            const uint8_t *whitelist, tp_error *err);
void tp_no_repeat_free(tp_no_repeat *nr);
void tp_no_repeat_clear(tp_no_repeat *nr);
tp_status tp_no_repeat_push(tp_no_repeat *nr, int32_t id, tp_error *err);
/* The ban set of the current history (computed once per history), ascending. */
tp_status tp_no_repeat_banned(tp_no_repeat *nr, const int32_t **ids, int32_t *n, tp_error *err);

/* ---- filter.c: greedy and the warpers ---- */
/* The first index of the largest logit (NaN and -inf never chosen); -1 if none. */
int32_t tp_argmax_first(const float *x, int32_t n);
/* Scratch of n_vocab entries for the warpers. */
typedef struct tp_logit_pair {
    float v;
    int32_t id;
} tp_logit_pair;
typedef struct tp_filter_work {
    float *val;           /* scaled logits of the candidates */
    int32_t *idx;         /* their ids */
    float *tmp;           /* selection scratch */
    tp_logit_pair *pairs; /* top-p's sorted head */
} tp_filter_work;
/* Candidates of logits[0..n) after temperature, top-k, top-p: ids ascending in work->idx, scaled values in
 * work->val; returns their count (0: nothing finite). */
int32_t tp_filter_candidates(const float *logits, int32_t n, float temperature, int32_t top_k, float top_p,
                             tp_filter_work *work);
/* A draw from the softmax of the n candidates (work->val) with u in [0, 1): the index into work->idx. */
int32_t tp_filter_draw(tp_filter_work *work, int32_t n, double u);

#endif
