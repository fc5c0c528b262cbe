/* bpe.c - the BPE merge loop and the two word builders.
 *
 * Merge loop (as `tokenizers`' Word::merge_all): every adjacent pair with a merge goes into a min-heap keyed
 * (rank, position); the smallest is merged unless it went stale (a side already merged away, or the pair now
 * there merges to another token), and the new pairs with its neighbours go in. So the lowest-ranked pair is
 * always merged first, the leftmost on ties.
 *
 * Byte-level words: each byte's symbol (a byte absent from the vocabulary is dropped, as a BPE without an
 * unknown token drops it). SentencePiece words: each character's token, else its bytes' "<0xXX>" tokens (byte
 * fallback), else the unknown token, consecutive unknowns fused into one (the quirks of `tokenizers`' BPE
 * kept: the byte tokens of a character go before a pending unknown token). */
#include "tp_tokenizer.h"

#include <stdlib.h>

void tok_emit(tok_scratch *s, int32_t id) {
    if (s->n_ids < s->max_ids) s->ids[s->n_ids] = id;
    s->n_ids++;
}

void tok_scratch_free(tok_scratch *s) {
    free(s->sym);
    free(s->heap);
    free(s->cp);
    free(s->off);
    free(s->norm);
    memset(s, 0, sizeof(*s));
}

static bool grow(void **p, int64_t *cap, int64_t need, size_t elem) { return tp_grow(p, cap, need, elem, 64); }

static bool heap_less(const tok_heap_item *a, const tok_heap_item *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(tok_heap_item *h, int64_t *n, tok_heap_item it) {
    int64_t i = (*n)++;
    while (i > 0) {
        const int64_t p = (i - 1) / 2;
        if (!heap_less(&it, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static tok_heap_item heap_pop(tok_heap_item *h, int64_t *n) {
    const tok_heap_item top = h[0];
    const tok_heap_item last = h[--(*n)];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

/* Merges the symbols s->sym[0..n) in place and emits the ids left. The heap holds at most n - 1 + 2 per merge
 * (< 3n) items. */
static tp_status merge_and_emit(const tp_tokenizer *t, tok_scratch *s, int64_t n) {
    if (n == 0) return TP_OK;
    if (!grow((void **)&s->heap, &s->heap_cap, 3 * n, sizeof(tok_heap_item))) return TP_ERR_OUT_OF_MEMORY;
    tok_symbol *sym = s->sym;
    tok_heap_item *heap = s->heap;
    int64_t nh = 0;
    for (int64_t i = 0; i + 1 < n; i++) {
        const tok_merge_entry *e = tok_mergemap_get(&t->merges, sym[i].id, sym[i + 1].id);
        if (e) heap_push(heap, &nh, (tok_heap_item){e->rank, (int32_t)i, e->merged});
    }
    while (nh > 0) {
        const tok_heap_item top = heap_pop(heap, &nh);
        tok_symbol *cur = &sym[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        tok_symbol *right = &sym[cur->next];
        const tok_merge_entry *e = tok_mergemap_get(&t->merges, cur->id, right->id);
        if (!e || e->merged != top.merged) continue; /* stale */
        cur->id = top.merged;
        cur->len += right->len;
        right->len = 0;
        cur->next = right->next;
        if (cur->next >= 0) sym[cur->next].prev = top.pos;
        if (cur->prev >= 0) {
            const tok_merge_entry *p = tok_mergemap_get(&t->merges, sym[cur->prev].id, cur->id);
            if (p) heap_push(heap, &nh, (tok_heap_item){p->rank, cur->prev, p->merged});
        }
        if (cur->next >= 0) {
            const tok_merge_entry *q = tok_mergemap_get(&t->merges, cur->id, sym[cur->next].id);
            if (q) heap_push(heap, &nh, (tok_heap_item){q->rank, top.pos, q->merged});
        }
    }
    for (int64_t i = 0; i >= 0 && i < n; i = sym[i].next) tok_emit(s, sym[i].id);
    return TP_OK;
}

static void add_symbol(tok_scratch *s, int64_t *n, int32_t id, int32_t len) {
    const int64_t i = (*n)++;
    s->sym[i] = (tok_symbol){id, (int32_t)(i - 1), -1, len};
    if (i > 0) s->sym[i - 1].next = (int32_t)i;
}

tp_status tok_bpe_bytes(const tp_tokenizer *t, tok_scratch *s, const uint8_t *bytes, size_t nb) {
    if (nb > INT32_MAX / 4) return TP_ERR_OUT_OF_MEMORY;
    if (!grow((void **)&s->sym, &s->sym_cap, (int64_t)nb, sizeof(tok_symbol))) return TP_ERR_OUT_OF_MEMORY;
    int64_t n = 0;
    for (size_t i = 0; i < nb; i++)
        if (t->byte_sym[bytes[i]] >= 0) add_symbol(s, &n, t->byte_sym[bytes[i]], 1);
    return merge_and_emit(t, s, n);
}

tp_status tok_bpe_spm(const tp_tokenizer *t, tok_scratch *s, const uint8_t *text, size_t nb) {
    if (nb > INT32_MAX / 4) return TP_ERR_OUT_OF_MEMORY;
    if (!grow((void **)&s->sym, &s->sym_cap, (int64_t)nb, sizeof(tok_symbol))) return TP_ERR_OUT_OF_MEMORY;
    int64_t n = 0;
    int32_t unk_len = 0; /* a pending (fused) unknown token's byte length; 0: none */
    for (size_t i = 0; i < nb;) {
        uint32_t cp;
        const int l = tpu_utf8_decode(text + i, nb - i, &cp);
        if (l <= 0) return TP_ERR_INTERNAL; /* the text was validated */
        const int32_t id = tok_strmap_get(t, text + i, (size_t)l);
        if (id >= 0) {
            if (unk_len) add_symbol(s, &n, t->unk_id, unk_len);
            unk_len = 0;
            add_symbol(s, &n, id, l);
        } else {
            bool bytes_ok = t->byte_fallback;
            for (int k = 0; k < l && bytes_ok; k++) bytes_ok = t->byte_sym[text[i + (size_t)k]] >= 0;
            if (bytes_ok) {
                for (int k = 0; k < l; k++) add_symbol(s, &n, t->byte_sym[text[i + (size_t)k]], 1);
            } else if (t->unk_id >= 0) {
                unk_len += l; /* fused with a pending one */
            }
        }
        i += (size_t)l;
    }
    if (unk_len) add_symbol(s, &n, t->unk_id, unk_len);
    return merge_and_emit(t, s, n);
}
