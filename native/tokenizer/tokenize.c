/* tokenize.c - tp_tokenize: added tokens matched whole first (leftmost-longest), then each stretch of text
 * between them pre-tokenized and merged (byte-level BPE), or normalised ("▁" for spaces, a leading "▁" with
 * add_space_prefix) and merged as one word (SentencePiece BPE) or segmented by score (SentencePiece Unigram);
 * and the tokenizer's accessors. */
#include "tp_tokenizer.h"

#include <stdlib.h>

typedef struct piece_ctx {
    const tp_tokenizer *t;
    tok_scratch *s;
    const uint8_t *text;
    tp_status st;
} piece_ctx;

static int on_piece(void *ctx, int64_t lo, int64_t hi) {
    piece_ctx *c = ctx;
    const int64_t a = c->s->off[lo], b = c->s->off[hi];
    c->st = tok_bpe_bytes(c->t, c->s, c->text + a, (size_t)(b - a));
    return c->st != TP_OK;
}

static bool grow(void **p, int64_t *cap, int64_t need, size_t elem) { return tp_grow(p, cap, need, elem, 256); }

/* Text with no added token in it (valid UTF-8). */
static tp_status encode_text(const tp_tokenizer *t, tok_scratch *s, const uint8_t *text, size_t n) {
    if (n == 0) return TP_OK;
    if (t->kind == TOK_KIND_SPM) {
        size_t spaces = 0;
        for (size_t i = 0; i < n; i++) spaces += text[i] == ' ';
        const size_t need = n + 2 * spaces + 3;
        if (!grow((void **)&s->norm, &s->norm_cap, (int64_t)need, 1)) return TP_ERR_OUT_OF_MEMORY;
        size_t o = 0;
        if (t->add_space_prefix) {
            memcpy(s->norm, "\xE2\x96\x81", 3);
            o = 3;
        }
        for (size_t i = 0; i < n; i++) {
            if (text[i] == ' ') {
                memcpy(s->norm + o, "\xE2\x96\x81", 3);
                o += 3;
            } else {
                s->norm[o++] = text[i];
            }
        }
        return t->unigram ? tok_unigram_spm(t, s, s->norm, o) : tok_bpe_spm(t, s, s->norm, o);
    }
    if ((int64_t)n + 1 > s->cp_cap) { /* code points and their byte offsets, one capacity for both */
        int64_t cap = s->cp_cap, cap2 = s->cp_cap;
        if (!grow((void **)&s->cp, &cap, (int64_t)n + 1, sizeof(uint32_t)) ||
            !grow((void **)&s->off, &cap2, (int64_t)n + 1, sizeof(int64_t)))
            return TP_ERR_OUT_OF_MEMORY;
        s->cp_cap = cap < cap2 ? cap : cap2;
    }
    int64_t m = 0;
    for (size_t i = 0; i < n;) {
        const int l = tpu_utf8_decode(text + i, n - i, &s->cp[m]);
        if (l <= 0) return TP_ERR_INTERNAL; /* validated by the caller */
        s->off[m++] = (int64_t)i;
        i += (size_t)l;
    }
    s->off[m] = (int64_t)n;
    piece_ctx c = {t, s, text, TP_OK};
    if (t->pre == TOK_PRE_DEEPSEEK_V3) tok_pretok_deepseek_v3(s->cp, m, on_piece, &c);
    else tok_pretok_gpt2(s->cp, m, on_piece, &c);
    return c.st;
}

static tp_status tokenize(const tp_tokenizer *t, tok_scratch *s, const uint8_t *text, size_t len, bool parse_special) {
    size_t pos = 0, from = 0, ms, ml;
    tp_status st = TP_OK;
    int32_t id;
    while (st == TP_OK && (id = tok_added_find(t, text, len, from, &ms, &ml)) >= 0) {
        from = ms + ml;
        if (!parse_special && (t->flags[id] & TOKF_SPECIAL)) continue; /* its text stays text */
        st = encode_text(t, s, text + pos, ms - pos);
        tok_emit(s, id);
        pos = from;
    }
    if (st == TP_OK) st = encode_text(t, s, text + pos, len - pos);
    return st;
}

tp_status tp_tokenize(const tp_tokenizer *t, const char *text, size_t len, bool parse_special, int32_t *ids,
                      int32_t max_ids, int32_t *n_ids, tp_error *err) {
    if (n_ids) *n_ids = 0;
    if (!t || !n_ids || (!text && len > 0) || max_ids < 0 || (!ids && max_ids > 0)) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                     "tp_tokenize: tokenizer and n_ids must not be NULL, text only when len is 0, ids only when "
                     "max_ids is 0 (a size query), max_ids >= 0 (got %d)", (int)max_ids);
        return TP_ERR_INVALID_ARGUMENT;
    }
    const uint8_t *u = (const uint8_t *)text;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        const int l = tpu_utf8_decode(u + i, len - i, &cp);
        if (l <= 0) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_tokenize: the text is not valid UTF-8 (byte %zu: 0x%02X)",
                         i, u[i]);
            return TP_ERR_INVALID_ARGUMENT;
        }
        i += (size_t)l;
    }
    tok_scratch s;
    memset(&s, 0, sizeof s);
    s.ids = ids;
    s.max_ids = max_ids;
    tp_status st = len ? tokenize(t, &s, u, len, parse_special) : TP_OK;
    const int64_t n = s.n_ids;
    tok_scratch_free(&s);
    if (st == TP_ERR_OUT_OF_MEMORY) {
        tp_error_set(err, st, "tp_tokenize: out of memory (%zu bytes of text)", len);
        return st;
    }
    if (st != TP_OK) {
        tp_error_set(err, st, "tp_tokenize: internal error");
        return st;
    }
    if (n > INT32_MAX) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_tokenize: %lld tokens: more than an int32_t counts",
                     (long long)n);
        return TP_ERR_INVALID_ARGUMENT;
    }
    *n_ids = (int32_t)n;
    if (n > max_ids && !(ids == NULL && max_ids == 0)) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_tokenize: the text has %lld tokens but ids holds %d (*n_ids "
                     "says how many are needed)", (long long)n, (int)max_ids);
        return TP_ERR_INVALID_ARGUMENT;
    }
    return TP_OK;
}

int32_t tp_tokenizer_n_vocab(const tp_tokenizer *t) { return t ? t->n : 0; }

const char *tp_tokenizer_token_bytes(const tp_tokenizer *t, int32_t id, size_t *len) {
    if (!t || id < 0 || id >= t->n) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = (size_t)(t->piece_off[id + 1] - t->piece_off[id]);
    return t->piece + t->piece_off[id];
}

bool tp_tokenizer_is_special(const tp_tokenizer *t, int32_t id) {
    return t && id >= 0 && id < t->n && (t->flags[id] & TOKF_SPECIAL);
}

int32_t tp_tokenizer_token_id(const tp_tokenizer *t, const char *text, size_t len) {
    if (!t || (!text && len > 0)) return -1;
    return tok_strmap_get(t, text ? text : "", len);
}

const char *tp_tokenizer_unicode_version(void) { return tpu_unicode_version(); }
