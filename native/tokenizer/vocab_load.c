/* vocab_load.c - a tokenizer from a GGUF's tokenizer.ggml.* keys, as llama.cpp writes them (and as
 * encoder/tokenizer.py rebuilds them with `tokenizers`):
 *   model "gpt2" (or absent): byte-level BPE over tokens + merges, pre-tokenizer by tokenizer.ggml.pre
 *     ("deepseek-v3"; "gpt2" / "default" or absent: GPT-2's);
 *   model "llama": SentencePiece, byte fallback when the vocabulary has BYTE pieces, add_space_prefix (default
 *     true). BPE when every NORMAL score is a whole number (sentencepiece gives BPE pieces -rank): merges are
 *     every split of a NORMAL piece into two NORMAL pieces, ordered by the piece's score (highest first, then
 *     id), as transformers' generate_merges orders them; otherwise Unigram (unigram.c).
 * Everything is copied: the tokenizer does not keep the file. */
#include "names.h"
#include "tp_tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>


void tp_tokenizer_free(tp_tokenizer *t) {
    if (!t) return;
    free(t->str);
    free(t->str_off);
    free(t->piece);
    free(t->piece_off);
    free(t->type);
    free(t->flags);
    free(t->vocab.slots);
    tok_mergemap_free(&t->merges);
    free(t->added_len);
    free(t->lat_score);
    free(t->last_id);
    free(t);
}

/* The bytes token `id` stands for, appended at out (room: its string's length). */
static size_t piece_bytes(const tp_tokenizer *t, int32_t id, const int16_t *cp_to_byte, char *out) {
    size_t n;
    const char *s = tok_str(t, id, &n);
    return tok_piece_bytes(s, n, t->type[id], t->kind == TOK_KIND_SPM, cp_to_byte, out);
}

static tp_status load_strings(tp_tokenizer *t, const tp_gguf *g, const char *path, tp_error *err) {
    size_t total = 0;
    for (int32_t i = 0; i < t->n; i++) {
        const char *s;
        size_t len;
        if (tp_gguf_get_arr_str(g, KEY_TOK_TOKENS, i, &s, &len) != TP_OK) {
            tp_error_set(err, TP_ERR_FORMAT, "%s%s: element %d is not a string", path, KEY_TOK_TOKENS, (int)i);
            return TP_ERR_FORMAT;
        }
        total += len;
    }
    t->str = malloc(total + 1);
    t->piece = malloc(total + 1);
    t->str_off = malloc((size_t)(t->n + 1) * sizeof(int64_t));
    t->piece_off = malloc((size_t)(t->n + 1) * sizeof(int64_t));
    t->type = malloc((size_t)t->n);
    t->flags = calloc((size_t)t->n, 1);
    if (!t->str || !t->piece || !t->str_off || !t->piece_off || !t->type || !t->flags) return TP_ERR_OUT_OF_MEMORY;
    size_t pos = 0;
    for (int32_t i = 0; i < t->n; i++) {
        const char *s;
        size_t len;
        tp_gguf_get_arr_str(g, KEY_TOK_TOKENS, i, &s, &len);
        t->str_off[i] = (int64_t)pos;
        if (len) memcpy(t->str + pos, s, len);
        pos += len;
    }
    t->str_off[t->n] = (int64_t)pos;
    /* token types: NORMAL when absent (byte-level BPE only) */
    const int64_t tk = tp_gguf_find_key(g, KEY_TOK_TYPES);
    if (tk < 0 && t->kind == TOK_KIND_SPM) {
        tp_error_set(err, TP_ERR_FORMAT, "%sa SentencePiece (\"llama\") vocabulary needs %s", path, KEY_TOK_TYPES);
        return TP_ERR_FORMAT;
    }
    if (tk >= 0 && tp_gguf_arr_n(g, tk) != t->n) {
        tp_error_set(err, TP_ERR_FORMAT, "%s%d tokens but %lld token types", path, (int)t->n,
                     (long long)tp_gguf_arr_n(g, tk));
        return TP_ERR_FORMAT;
    }
    for (int32_t i = 0; i < t->n; i++) {
        int64_t ty = TT_NORMAL;
        if (tk >= 0 && tp_gguf_get_arr_i64(g, KEY_TOK_TYPES, i, &ty) != TP_OK) {
            tp_error_set(err, TP_ERR_FORMAT, "%s%s: element %d is not an integer", path, KEY_TOK_TYPES, (int)i);
            return TP_ERR_FORMAT;
        }
        t->type[i] = (uint8_t)(ty >= 1 && ty <= 6 ? ty : 0); /* an unknown type: an ordinary token */
    }
    return TP_OK;
}

static void set_flags_and_pieces(tp_tokenizer *t) {
    int16_t cp_to_byte[TOK_BYTE_CPS];
    tok_cp_to_byte_table(cp_to_byte);
    size_t pos = 0;
    for (int32_t i = 0; i < t->n; i++) {
        t->piece_off[i] = (int64_t)pos;
        pos += piece_bytes(t, i, cp_to_byte, t->piece + pos);
        const int ty = t->type[i];
        const bool spm = t->kind == TOK_KIND_SPM;
        const bool special = ty == TT_CONTROL || (spm && ty == TT_UNKNOWN);
        if (special) t->flags[i] |= TOKF_SPECIAL;
        size_t n;
        const char *s = tok_str(t, i, &n);
        if ((special || ty == TT_USER_DEFINED) && n > 0 && tok_strmap_get(t, s, n) == i) t->flags[i] |= TOKF_ADDED;
    }
    t->piece_off[t->n] = (int64_t)pos;
}

static tp_status load_byte_bpe(tp_tokenizer *t, const tp_gguf *g, const char *path, tp_error *err) {
    for (int b = 0; b < 256; b++) {
        uint8_t u[4];
        const int l = tpu_utf8_encode(tok_byte_to_cp(b), u);
        t->byte_sym[b] = tok_strmap_get(t, u, (size_t)l);
    }
    const int64_t mk = tp_gguf_find_key(g, KEY_TOK_MERGES);
    const int64_t nm = mk >= 0 ? tp_gguf_arr_n(g, mk) : 0;
    if (mk >= 0 && tp_gguf_arr_type(g, mk) != TP_GGUF_STRING) {
        tp_error_set(err, TP_ERR_FORMAT, "%s%s is not an array of strings", path, KEY_TOK_MERGES);
        return TP_ERR_FORMAT;
    }
    if (nm > INT32_MAX / 2) {
        tp_error_set(err, TP_ERR_FORMAT, "%s%lld merges: too many", path, (long long)nm);
        return TP_ERR_FORMAT;
    }
    if (tok_mergemap_init(&t->merges, nm) != TP_OK) return TP_ERR_OUT_OF_MEMORY;
    for (int64_t k = 0; k < nm; k++) {
        const char *s;
        size_t len;
        if (tp_gguf_get_arr_str(g, KEY_TOK_MERGES, k, &s, &len) != TP_OK) return TP_ERR_FORMAT;
        /* "left right": at the only space; with several, at the first after position 0 (tokens hold no plain
         * space, but a merge of the byte-level space symbol may be written that way) */
        size_t sp = len, n_sp = 0;
        for (size_t i = 0; i < len; i++)
            if (s[i] == ' ') n_sp++;
        for (size_t i = n_sp == 1 ? 0 : 1; i < len; i++)
            if (s[i] == ' ') {
                sp = i;
                break;
            }
        if (sp >= len) {
            tp_error_set(err, TP_ERR_FORMAT, "%smerge %lld '%.*s' is not two tokens separated by a space", path,
                         (long long)k, (int)(len > 64 ? 64 : len), s);
            return TP_ERR_FORMAT;
        }
        const int32_t a = tok_strmap_get(t, s, sp), b = tok_strmap_get(t, s + sp + 1, len - sp - 1);
        const int32_t ab = tok_strmap_get2(t, s, sp, s + sp + 1, len - sp - 1);
        if (a >= 0 && b >= 0 && ab >= 0) tok_mergemap_put(&t->merges, a, b, (uint32_t)k, ab);
    }
    return TP_OK;
}

/* ---- SentencePiece BPE ---- */
typedef struct {
    float score;
    int32_t id;
} scored;

static int by_score(const void *x, const void *y) {
    const scored *a = x, *b = y;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static int next_char_len(const char *s, size_t n) {
    uint32_t cp;
    const int l = tpu_utf8_decode((const uint8_t *)s, n, &cp);
    return l > 0 ? l : 1;
}

/* SentencePiece Unigram (as encoder/tokenizer.py builds it with `tokenizers`' Unigram): every token is in the
 * lattice, NORMAL and USER_DEFINED ones with their score, the others with -1e9; a character no token covers is
 * the unknown token, scored the lowest score minus 10; a string maps to the LAST id that has it. */
static tp_status load_unigram(tp_tokenizer *t, const float *score) {
    t->unigram = true;
    t->lat_score = malloc((size_t)t->n * sizeof(double));
    t->last_id = malloc((size_t)t->n * sizeof(int32_t));
    if (!t->lat_score || !t->last_id) return TP_ERR_OUT_OF_MEMORY;
    double lo = INFINITY;
    t->max_len = 0;
    for (int32_t i = 0; i < t->n; i++) {
        const int ty = t->type[i];
        t->lat_score[i] = ty == TT_NORMAL || ty == TT_USER_DEFINED ? (double)score[i] : -1e9;
        lo = t->lat_score[i] < lo ? t->lat_score[i] : lo;
        size_t n;
        const char *s = tok_str(t, i, &n);
        t->last_id[tok_strmap_get(t, s, n)] = i;
        if ((int64_t)n > t->max_len) t->max_len = (int32_t)(n > INT32_MAX ? INT32_MAX : n);
    }
    t->unk_score = lo - 10.0;
    return TP_OK;
}

static tp_status load_spm(tp_tokenizer *t, const tp_gguf *g, const char *path, tp_error *err) {
    const int64_t sk = tp_gguf_find_key(g, KEY_TOK_SCORES);
    if (sk < 0 || tp_gguf_arr_n(g, sk) != t->n) {
        tp_error_set(err, TP_ERR_FORMAT, "%sa SentencePiece (\"llama\") vocabulary needs %s for its %d tokens", path,
                     KEY_TOK_SCORES, (int)t->n);
        return TP_ERR_FORMAT;
    }
    float *score = malloc((size_t)t->n * sizeof(float));
    uint8_t *normal = calloc((size_t)t->n, 1); /* by first id: the string is some NORMAL token's */
    scored *order = malloc((size_t)t->n * sizeof(scored));
    tp_status st = score && normal && order ? TP_OK : TP_ERR_OUT_OF_MEMORY;
    bool whole = true;
    for (int32_t i = 0; st == TP_OK && i < t->n; i++) {
        if (tp_gguf_get_arr_f32(g, KEY_TOK_SCORES, i, &score[i]) != TP_OK) {
            tp_error_set(err, TP_ERR_FORMAT, "%s%s: element %d is not a float", path, KEY_TOK_SCORES, (int)i);
            st = TP_ERR_FORMAT;
        } else if (t->type[i] == TT_NORMAL) {
            whole = whole && isfinite(score[i]) && score[i] == floorf(score[i]);
            size_t n;
            const char *s = tok_str(t, i, &n);
            normal[tok_strmap_get(t, s, n)] = 1;
        }
    }
    /* (no NORMAL piece at all: nothing to merge, characters and byte fallback only; taken as BPE) */
    if (st == TP_OK && !whole) st = load_unigram(t, score);
    /* BPE: the pieces that merges make, best score first; a bound on the merges: their characters */
    int64_t n_order = 0, bound = 0;
    for (int32_t i = 0; st == TP_OK && !t->unigram && i < t->n; i++) {
        size_t n;
        const char *s = tok_str(t, i, &n);
        if (t->type[i] != TT_NORMAL || tok_strmap_get(t, s, n) != i) continue;
        int64_t chars = 0;
        for (size_t k = 0; k < n; k += (size_t)next_char_len(s + k, n - k)) chars++;
        if (chars < 2) continue;
        order[n_order++] = (scored){score[i], i};
        bound += chars - 1;
    }
    if (st == TP_OK && !t->unigram) {
        qsort(order, (size_t)n_order, sizeof(scored), by_score);
        st = tok_mergemap_init(&t->merges, bound);
    }
    uint32_t rank = 0;
    for (int64_t r = 0; st == TP_OK && r < n_order; r++) {
        const int32_t id = order[r].id;
        size_t n;
        const char *s = tok_str(t, id, &n);
        uint64_t h = TOK_HASH_SEED; /* the prefix's hash, extended a character at a time */
        for (size_t k0 = 0, k = (size_t)next_char_len(s, n); k < n; k0 = k, k += (size_t)next_char_len(s + k, n - k)) {
            h = tok_hash_bytes(h, s + k0, k - k0);
            const int32_t a = tok_strmap_get_hashed(t, h, s, k, "", 0);
            if (a < 0 || !normal[a]) continue;
            const int32_t b = tok_strmap_get(t, s + k, n - k);
            if (b >= 0 && normal[b]) tok_mergemap_put(&t->merges, a, b, rank++, id);
        }
    }
    /* byte fallback, the unknown token, the space prefix */
    t->byte_fallback = false;
    for (int32_t i = 0; i < t->n; i++) t->byte_fallback |= t->type[i] == TT_BYTE;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_sym[b] = tok_strmap_get(t, name, 6);
    }
    int64_t unk = -1;
    if (tp_gguf_get_i64(g, KEY_TOK_UNK, &unk) != TP_OK || unk < 0 || unk >= t->n) {
        unk = -1;
        for (int32_t i = 0; i < t->n && unk < 0; i++)
            if (t->type[i] == TT_UNKNOWN) unk = i;
        if (unk < 0) unk = 0;
    }
    size_t un;
    const char *us = tok_str(t, (int32_t)unk, &un);
    t->unk_id = t->unigram ? (int32_t)unk : tok_strmap_get(t, us, un); /* Unigram: the id; BPE: by its string */
    bool prefix = true;
    if (tp_gguf_get_bool(g, KEY_TOK_ADD_SPACE_PREFIX, &prefix) != TP_OK) prefix = true;
    t->add_space_prefix = prefix;
    free(score);
    free(normal);
    free(order);
    return st;
}

static bool str_is(const char *s, size_t n, const char *lit) { return n == strlen(lit) && memcmp(s, lit, n) == 0; }

tp_status tok_load(const tp_gguf *g, const char *path, tp_tokenizer **out, tp_error *err) {
    *out = NULL;
    const int64_t key = tp_gguf_find_key(g, KEY_TOK_TOKENS);
    if (key < 0 || tp_gguf_arr_type(g, key) != TP_GGUF_STRING || tp_gguf_arr_n(g, key) < 1) {
        tp_error_set(err, TP_ERR_FORMAT, "%sno tokenizer: %s is absent or not an array of strings", path,
                     KEY_TOK_TOKENS);
        return TP_ERR_FORMAT;
    }
    const int64_t n = tp_gguf_arr_n(g, key);
    if (n > INT32_MAX / 4) {
        tp_error_set(err, TP_ERR_FORMAT, "%s%lld tokens: too many", path, (long long)n);
        return TP_ERR_FORMAT;
    }
    const char *model = "gpt2", *pre = "default";
    size_t model_n = 4, pre_n = 7;
    if (tp_gguf_get_str(g, KEY_TOK_MODEL, &model, &model_n) != TP_OK) {
        model = "gpt2";
        model_n = 4;
    }
    if (tp_gguf_get_str(g, KEY_TOK_PRE, &pre, &pre_n) != TP_OK) {
        pre = "default";
        pre_n = 7;
    }
    tp_tokenizer *t = calloc(1, sizeof(*t));
    if (!t) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "%sout of memory", path);
        return TP_ERR_OUT_OF_MEMORY;
    }
    t->n = (int32_t)n;
    t->unk_id = -1;
    tp_status st = TP_OK;
    if (str_is(model, model_n, "gpt2")) {
        t->kind = TOK_KIND_BYTE_BPE;
        if (str_is(pre, pre_n, "deepseek-v3")) t->pre = TOK_PRE_DEEPSEEK_V3;
        else if (str_is(pre, pre_n, "gpt2") || str_is(pre, pre_n, "default")) t->pre = TOK_PRE_GPT2;
        else {
            tp_error_set(err, TP_ERR_UNSUPPORTED,
                         "%s%s = '%.*s' is not supported (known: deepseek-v3, gpt2, default)", path, KEY_TOK_PRE,
                         (int)(pre_n > 64 ? 64 : pre_n), pre);
            st = TP_ERR_UNSUPPORTED;
        }
    } else if (str_is(model, model_n, "llama")) {
        t->kind = TOK_KIND_SPM;
    } else {
        tp_error_set(err, TP_ERR_UNSUPPORTED,
                     "%s%s = '%.*s' is not supported: only byte-level BPE (\"gpt2\") and SentencePiece BPE "
                     "(\"llama\")", path, KEY_TOK_MODEL, (int)(model_n > 64 ? 64 : model_n), model);
        st = TP_ERR_UNSUPPORTED;
    }
    if (st == TP_OK) st = load_strings(t, g, path, err);
    if (st == TP_OK) st = tok_strmap_build(t);
    if (st == TP_OK) set_flags_and_pieces(t);
    if (st == TP_OK) st = t->kind == TOK_KIND_SPM ? load_spm(t, g, path, err) : load_byte_bpe(t, g, path, err);
    if (st == TP_OK) st = tok_added_build(t);
    if (st != TP_OK) {
        if (st == TP_ERR_OUT_OF_MEMORY) tp_error_set(err, st, "%sout of memory building the tokenizer", path);
        tp_tokenizer_free(t);
        return st;
    }
    *out = t;
    return TP_OK;
}

tp_status tp_tokenizer_from_gguf(const tp_gguf *g, tp_tokenizer **out, tp_error *err) {
    if (!g || !out) {
        if (out) *out = NULL;
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_tokenizer_from_gguf: g and out must not be NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    return tok_load(g, "tp_tokenizer_from_gguf: ", out, err);
}

tp_status tp_tokenizer_load(const char *path, tp_tokenizer **out, tp_error *err) {
    if (!path || !out) {
        if (out) *out = NULL;
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_tokenizer_load: path and out must not be NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    tp_gguf *g = NULL;
    tp_status st = tp_gguf_open(path, &g, err);
    if (st != TP_OK) return st;
    char prefix[1100];
    snprintf(prefix, sizeof prefix, "%s: ", path);
    st = tok_load(g, prefix, out, err);
    tp_gguf_close(g);
    return st;
}
