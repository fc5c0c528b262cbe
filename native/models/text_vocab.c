/* text_vocab.c - the token strings of a text GGUF decoded to raw bytes, as the tokenizer decodes them
 * (tok_piece_bytes, native/tokenizer/piece.c): built at load, without the tokenizer's merge tables. */
#include "text_model.h"

#include "names.h"
#include "tp_tokenizer.h"
#include "weights.h"

#include <stdlib.h>

tp_status text_load_vocab(const tp_gguf *g, const char *path, int64_t n_vocab, text_vocab *v, tp_error *err) {
    memset(v, 0, sizeof(*v));
    int64_t key = tp_gguf_find_key(g, KEY_TOK_TOKENS);
    int64_t n_tok = key >= 0 ? tp_gguf_arr_n(g, key) : 0;
    if (key >= 0 && tp_gguf_arr_type(g, key) != TP_GGUF_STRING) n_tok = 0;
    int64_t type_key = tp_gguf_find_key(g, KEY_TOK_TYPES);
    int64_t n_types = type_key >= 0 ? tp_gguf_arr_n(g, type_key) : 0;
    /* total size: decoded bytes never exceed the UTF-8 length */
    size_t total = 0;
    for (int64_t i = 0; i < n_tok && i < n_vocab; i++) {
        const char *s;
        size_t len;
        if (tp_gguf_get_arr_str(g, KEY_TOK_TOKENS, i, &s, &len) == TP_OK) total += len;
    }
    v->n = n_vocab;
    v->offs = malloc((size_t)(n_vocab + 1) * sizeof(int64_t));
    v->bytes = malloc(total + 1);
    if (!v->offs || !v->bytes) {
        text_vocab_free(v);
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "%s: out of memory reading the vocabulary", path);
        return TP_ERR_OUT_OF_MEMORY;
    }
    int16_t cp_to_byte[TOK_BYTE_CPS];
    tok_cp_to_byte_table(cp_to_byte);
    const bool spm = weights_str_equals(g, KEY_TOK_MODEL, "llama");
    size_t pos = 0;
    for (int64_t i = 0; i < n_vocab; i++) {
        v->offs[i] = (int64_t)pos;
        const char *s;
        size_t len;
        if (i >= n_tok || tp_gguf_get_arr_str(g, KEY_TOK_TOKENS, i, &s, &len) != TP_OK) continue;
        int64_t type = TT_NORMAL;
        if (i < n_types) tp_gguf_get_arr_i64(g, KEY_TOK_TYPES, i, &type);
        if (type < 0 || type > 255) type = TT_NORMAL;
        pos += tok_piece_bytes(s, len, (int)type, spm, cp_to_byte, v->bytes + pos);
    }
    v->offs[n_vocab] = (int64_t)pos;
    return TP_OK;
}

void text_vocab_free(text_vocab *v) {
    free(v->offs);
    free(v->bytes);
    v->offs = NULL;
    v->bytes = NULL;
    v->n = 0;
}
