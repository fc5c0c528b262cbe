/* no_repeat.c - the no-repeat n-gram rule over a growing token history (tilepass.h: "Generation policy").
 * Each (n-1)-gram is compared through a polynomial rolling hash (mod 2^64) of the history's prefixes, so a
 * step scans the min(W, history) n-gram starts of the window in O(1) each; a hash hit is checked id by id
 * (exact whatever the collisions) unless its next id is already banned or whitelisted. */
#include "tp_generate.h"

#include <stdlib.h>
#include <string.h>

#define HASH_B 0x100000001B3ull /* odd multiplier */

static uint64_t mix_id(int32_t id) {
    uint64_t z = (uint64_t)(uint32_t)id + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

tp_status tp_no_repeat_init(tp_no_repeat *nr, int32_t ngram, int32_t window, int32_t n_vocab,
                            const uint8_t *whitelist, tp_error *err) {
    memset(nr, 0, sizeof(*nr));
    nr->ngram = ngram;
    nr->window = window;
    nr->n_vocab = n_vocab;
    nr->whitelist = whitelist;
    nr->pow_m = 1; /* B^(ngram - 1) by squaring */
    uint64_t b = HASH_B;
    for (uint32_t e = ngram > 0 ? (uint32_t)(ngram - 1) : 0; e; e >>= 1, b *= b)
        if (e & 1) nr->pow_m *= b;
    nr->cap = 256;
    nr->hist = malloc((size_t)nr->cap * sizeof(*nr->hist));
    nr->pre = malloc((size_t)(nr->cap + 1) * sizeof(*nr->pre));
    nr->ban = malloc((size_t)nr->cap * sizeof(*nr->ban));
    nr->ban_cap = nr->cap;
    nr->stamp = ngram > 0 ? calloc((size_t)n_vocab, sizeof(*nr->stamp)) : NULL;
    if (!nr->hist || !nr->pre || !nr->ban || (ngram > 0 && !nr->stamp)) {
        tp_no_repeat_free(nr);
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_sampler_create: out of memory (history of a %d-token vocabulary)",
                     (int)n_vocab);
        return TP_ERR_OUT_OF_MEMORY;
    }
    nr->pre[0] = 0;
    return TP_OK;
}

void tp_no_repeat_free(tp_no_repeat *nr) {
    free(nr->hist);
    free(nr->pre);
    free(nr->ban);
    free(nr->stamp);
    memset(nr, 0, sizeof(*nr));
}

void tp_no_repeat_clear(tp_no_repeat *nr) {
    nr->n = 0;
    nr->ban_ok = false;
}

tp_status tp_no_repeat_push(tp_no_repeat *nr, int32_t id, tp_error *err) {
    if (nr->n == nr->cap) {
        if (nr->cap > (int64_t)1 << 40) {
            tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_sampler_accept: history too long");
            return TP_ERR_OUT_OF_MEMORY;
        }
        const int64_t cap = nr->cap * 2;
        int32_t *h = realloc(nr->hist, (size_t)cap * sizeof(*h));
        if (!h) goto oom;
        nr->hist = h;
        uint64_t *p = realloc(nr->pre, (size_t)(cap + 1) * sizeof(*p));
        if (!p) goto oom;
        nr->pre = p;
        nr->cap = cap;
    }
    nr->hist[nr->n] = id;
    nr->pre[nr->n + 1] = nr->pre[nr->n] * HASH_B + mix_id(id);
    nr->n++;
    nr->ban_ok = false;
    return TP_OK;
oom:
    tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_sampler_accept: out of memory (history of %lld ids)",
                 (long long)nr->n);
    return TP_ERR_OUT_OF_MEMORY;
}

static int cmp_i32(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static inline uint64_t span_hash(const tp_no_repeat *nr, int64_t i, int32_t m) {
    return nr->pre[i + m] - nr->pre[i] * nr->pow_m;
}

tp_status tp_no_repeat_banned(tp_no_repeat *nr, const int32_t **ids, int32_t *n, tp_error *err) {
    if (nr->ban_ok) {
        *ids = nr->ban;
        *n = nr->n_ban;
        return TP_OK;
    }
    nr->n_ban = 0;
    const int64_t L = nr->n, ng = nr->ngram;
    const int64_t s0 = nr->window > 0 && L > nr->window ? L - nr->window : 0;
    if (ng > 0 && L - s0 >= ng) {
        const int64_t n_start = L - ng - s0 + 1; /* n-gram starts s0 .. L-ng: at most that many bans */
        if (n_start > nr->ban_cap) {
            int32_t *b = realloc(nr->ban, (size_t)n_start * sizeof(*b));
            if (!b) {
                tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_sampler: out of memory (ban set)");
                return TP_ERR_OUT_OF_MEMORY;
            }
            nr->ban = b;
            nr->ban_cap = n_start;
        }
        if (++nr->cur == 0) { /* the stamps wrapped: start over */
            memset(nr->stamp, 0, (size_t)nr->n_vocab * sizeof(*nr->stamp));
            nr->cur = 1;
        }
        const int32_t m = (int32_t)(ng - 1);
        const uint32_t cur = nr->cur;
        const int32_t *h = nr->hist, *suffix = h + (L - m);
        const uint64_t q = span_hash(nr, L - m, m);
        for (int64_t i = s0; i <= L - ng; i++) {
            const int32_t t = h[i + m];
            if (nr->stamp[t] == cur || nr->whitelist[t]) continue;
            if (m > 0 && (span_hash(nr, i, m) != q || memcmp(h + i, suffix, (size_t)m * sizeof(*h)) != 0)) continue;
            nr->stamp[t] = cur;
            nr->ban[nr->n_ban++] = t;
        }
        if (nr->n_ban > 1) qsort(nr->ban, (size_t)nr->n_ban, sizeof(*nr->ban), cmp_i32);
    }
    nr->ban_ok = true;
    *ids = nr->ban;
    *n = nr->n_ban;
    return TP_OK;
}
