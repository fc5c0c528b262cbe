/* added.c - the tokens matched whole in the text before pre-tokenisation (control, user-defined and, in a
 * SentencePiece vocabulary, unknown tokens: `tokenizers`' added tokens): leftmost match, the longest at that
 * start. Indexed by first byte: the distinct lengths of the added tokens starting with it, longest first; a
 * candidate is one hash lookup. */
#include "tp_tokenizer.h"

#include <stdlib.h>

static int by_len_desc(const void *x, const void *y) {
    const int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    return (a < b) - (a > b);
}

tp_status tok_added_build(tp_tokenizer *t) {
    int32_t count[256] = {0};
    for (int32_t i = 0; i < t->n; i++)
        if (t->flags[i] & TOKF_ADDED) count[(uint8_t)t->str[t->str_off[i]]]++;
    t->added_len_off[0] = 0;
    for (int b = 0; b < 256; b++) t->added_len_off[b + 1] = t->added_len_off[b] + count[b];
    t->added_len = malloc((size_t)(t->added_len_off[256] + 1) * sizeof(int32_t));
    if (!t->added_len) return TP_ERR_OUT_OF_MEMORY;
    int32_t fill[256];
    memcpy(fill, t->added_len_off, sizeof fill);
    for (int32_t i = 0; i < t->n; i++)
        if (t->flags[i] & TOKF_ADDED)
            t->added_len[fill[(uint8_t)t->str[t->str_off[i]]]++] = (int32_t)(t->str_off[i + 1] - t->str_off[i]);
    /* per first byte: sorted, duplicates dropped (the list shrinks in place; the offsets stay, -1 ends a list) */
    for (int b = 0; b < 256; b++) {
        int32_t *l = t->added_len + t->added_len_off[b];
        const int32_t n = t->added_len_off[b + 1] - t->added_len_off[b];
        if (n == 0) continue;
        qsort(l, (size_t)n, sizeof(int32_t), by_len_desc);
        int32_t k = 1;
        for (int32_t i = 1; i < n; i++)
            if (l[i] != l[k - 1]) l[k++] = l[i];
        for (int32_t i = k; i < n; i++) l[i] = -1;
    }
    return TP_OK;
}

int32_t tok_added_find(const tp_tokenizer *t, const uint8_t *text, size_t n, size_t from, size_t *start, size_t *len) {
    if (t->added_len_off[256] == 0) return -1;
    for (size_t p = from; p < n; p++) {
        const int b = text[p];
        for (int32_t k = t->added_len_off[b]; k < t->added_len_off[b + 1] && t->added_len[k] > 0; k++) {
            const size_t l = (size_t)t->added_len[k];
            if (l > n - p) continue;
            const int32_t id = tok_strmap_get(t, text + p, l);
            if (id >= 0 && (t->flags[id] & TOKF_ADDED)) {
                *start = p;
                *len = l;
                return id;
            }
        }
    }
    return -1;
}
