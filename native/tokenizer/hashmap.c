/* hashmap.c - the tokenizer's two lookup tables, open addressing with linear probing, built once at load and
 * read-only afterwards: token string -> first id, and (left id, right id) -> merge rank and merged id. */
#include "tp_tokenizer.h"

#include <stdlib.h>

uint64_t tok_hash_bytes(uint64_t h, const void *p, size_t n) { /* FNV-1a, 64-bit */
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t mix(uint64_t h) { /* spreads FNV's low bits before masking */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static uint64_t capacity_for(int64_t n) {
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2) cap <<= 1;
    return cap;
}

tp_status tok_strmap_build(tp_tokenizer *t) {
    const uint64_t cap = capacity_for(t->n);
    t->vocab.slots = malloc(cap * sizeof(tok_slot));
    if (!t->vocab.slots) return TP_ERR_OUT_OF_MEMORY;
    t->vocab.mask = cap - 1;
    for (uint64_t i = 0; i < cap; i++) t->vocab.slots[i] = (tok_slot){-1, 0};
    for (int32_t id = 0; id < t->n; id++) {
        size_t n;
        const char *s = tok_str(t, id, &n);
        if (tok_strmap_get(t, s, n) >= 0) continue; /* a later duplicate: the first id stays */
        const uint64_t m = mix(tok_hash_bytes(TOK_HASH_SEED, s, n));
        uint64_t h = m & t->vocab.mask;
        while (t->vocab.slots[h].id >= 0) h = (h + 1) & t->vocab.mask;
        t->vocab.slots[h] = (tok_slot){id, (uint32_t)(m >> 32)};
    }
    return TP_OK;
}

int32_t tok_strmap_get2(const tp_tokenizer *t, const void *a, size_t na, const void *b, size_t nb) {
    return tok_strmap_get_hashed(t, tok_hash_bytes(tok_hash_bytes(TOK_HASH_SEED, a, na), b, nb), a, na, b, nb);
}

int32_t tok_strmap_get_hashed(const tp_tokenizer *t, uint64_t fnv, const void *a, size_t na, const void *b, size_t nb) {
    const uint64_t m = mix(fnv);
    const uint32_t tag = (uint32_t)(m >> 32);
    for (uint64_t h = m & t->vocab.mask;; h = (h + 1) & t->vocab.mask) {
        const int32_t o = t->vocab.slots[h].id;
        if (o < 0) return -1;
        if (t->vocab.slots[h].tag != tag) continue;
        size_t on;
        const char *os = tok_str(t, o, &on);
        if (on == na + nb && (na == 0 || memcmp(os, a, na) == 0) && (nb == 0 || memcmp(os + na, b, nb) == 0))
            return o;
    }
}

int32_t tok_strmap_get(const tp_tokenizer *t, const void *s, size_t n) { return tok_strmap_get2(t, s, n, "", 0); }

static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

tp_status tok_mergemap_init(tok_mergemap *m, int64_t capacity) {
    const uint64_t cap = capacity_for(capacity);
    m->e = malloc(cap * sizeof(*m->e));
    if (!m->e) return TP_ERR_OUT_OF_MEMORY;
    m->mask = cap - 1;
    m->n = 0;
    for (uint64_t i = 0; i < cap; i++) m->e[i].key = UINT64_MAX;
    return TP_OK;
}

void tok_mergemap_put(tok_mergemap *m, int32_t a, int32_t b, uint32_t rank, int32_t merged) {
    const uint64_t key = pair_key(a, b);
    for (uint64_t h = mix(key) & m->mask;; h = (h + 1) & m->mask) {
        if (m->e[h].key == UINT64_MAX || m->e[h].key == key) {
            if (m->e[h].key == UINT64_MAX) m->n++;
            m->e[h].key = key;
            m->e[h].rank = rank;
            m->e[h].merged = merged;
            return;
        }
    }
}

const tok_merge_entry *tok_mergemap_get(const tok_mergemap *m, int32_t a, int32_t b) {
    if (!m->e) return NULL;
    const uint64_t key = pair_key(a, b);
    for (uint64_t h = mix(key) & m->mask;; h = (h + 1) & m->mask) {
        if (m->e[h].key == key) return &m->e[h];
        if (m->e[h].key == UINT64_MAX) return NULL;
    }
}

void tok_mergemap_free(tok_mergemap *m) {
    free(m->e);
    m->e = NULL;
    m->n = 0;
}
