/* unigram.c - SentencePiece Unigram, as `tokenizers`' Unigram model segments a normalised text (its optimised
 * Viterbi, after sentencepiece's): for each character boundary in order, every token that starts there extends
 * the best path to where it ends (a later candidate replaces the one there only with a strictly higher
 * score); a character that no one-character token covers is the unknown token, scored unk_score. The best path
 * is read back from the end; consecutive unknowns are fused into one string, which becomes its token if the
 * vocabulary has it, else its bytes' <0xXX> tokens (byte fallback, when every one exists), else the unknown
 * token. Token strings map to the LAST id that has them, as the model's string -> id table does. */
#include "tp_tokenizer.h"

#include <stdlib.h>

typedef struct node {
    double score;
    int64_t start; /* -1: not reached */
    int32_t id;
} node;

static void emit_string(const tp_tokenizer *t, tok_scratch *s, const uint8_t *p, size_t n) {
    const int32_t first = tok_strmap_get(t, p, n);
    if (first >= 0) {
        tok_emit(s, t->last_id[first]);
        return;
    }
    if (t->byte_fallback) {
        bool all = true;
        for (size_t i = 0; i < n && all; i++) all = t->byte_sym[p[i]] >= 0;
        if (all) {
            for (size_t i = 0; i < n; i++) tok_emit(s, t->last_id[t->byte_sym[p[i]]]);
            return;
        }
    }
    tok_emit(s, t->unk_id);
}

tp_status tok_unigram_spm(const tp_tokenizer *t, tok_scratch *s, const uint8_t *text, size_t size) {
    node *best = malloc((size + 1) * sizeof(node));
    int64_t *seg = malloc((size + 1) * 2 * sizeof(int64_t)); /* the path's segments, last first: start, end */
    if (!best || !seg) {
        free(best);
        free(seg);
        return TP_ERR_OUT_OF_MEMORY;
    }
    for (size_t i = 0; i <= size; i++) best[i] = (node){0.0, -1, 0};
    for (size_t at = 0; at < size;) {
        uint32_t cp;
        const int mblen = tpu_utf8_decode(text + at, size - at, &cp);
        if (mblen <= 0) {
            free(best);
            free(seg);
            return TP_ERR_INTERNAL; /* validated */
        }
        const double base = best[at].score;
        bool single = false;
        uint64_t h = TOK_HASH_SEED;
        for (size_t len = 1; len <= (size_t)t->max_len && at + len <= size; len++) {
            h = tok_hash_bytes(h, text + at + len - 1, 1);
            const int32_t first = tok_strmap_get_hashed(t, h, text + at, len, "", 0);
            if (first < 0) continue;
            const int32_t id = t->last_id[first];
            const double cand = t->lat_score[id] + base;
            node *target = &best[at + len];
            if (target->start < 0 || cand > target->score) *target = (node){cand, (int64_t)at, id};
            single |= len == (size_t)mblen;
        }
        if (!single) {
            const double cand = t->unk_score + base;
            node *target = &best[at + (size_t)mblen];
            if (target->start < 0 || cand > target->score) *target = (node){cand, (int64_t)at, t->unk_id};
        }
        at += (size_t)mblen;
    }
    /* back from the end: segments (unknowns fused), then emitted in text order */
    int64_t n_seg = 0;
    for (int64_t end = (int64_t)size; end > 0;) {
        const node *nd = &best[end];
        const int64_t start = nd->start;
        const bool unk = nd->id == t->unk_id;
        if (unk && n_seg > 0 && seg[2 * (n_seg - 1) + 1] < 0) {
            seg[2 * (n_seg - 1)] = start; /* fused with the unknown after it */
        } else {
            seg[2 * n_seg] = start;
            seg[2 * n_seg + 1] = unk ? -end : end; /* negative end: an unknown run */
            n_seg++;
        }
        end = start;
    }
    for (int64_t k = n_seg - 1; k >= 0; k--) {
        const int64_t a = seg[2 * k], b = seg[2 * k + 1] < 0 ? -seg[2 * k + 1] : seg[2 * k + 1];
        if (seg[2 * k + 1] < 0) emit_string(t, s, text + a, (size_t)(b - a));
        else tok_emit(s, best[b].id);
    }
    free(best);
    free(seg);
    return TP_OK;
}
