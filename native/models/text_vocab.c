/* text_vocab.c - the token strings of a text GGUF decoded to raw bytes (GPT-2 byte-level BPE strings back
 * to bytes; in a SentencePiece ("llama") vocabulary "▁" as a space, <0xXX> BYTE tokens as their byte, UNUSED
 * tokens as nothing; control and user-defined tokens (and SentencePiece's unknown) as their text). */
#include "text_model.h"

#include "names.h"
#include "weights.h"

#include <stdlib.h>

/* ---- vocabulary: GPT-2 byte-level BPE strings back to bytes ---- */

/* bytes_to_unicode: printable bytes map to their own code point, the other 68 bytes to 256 + k in
 * byte order. Returns the byte for code point cp, or -1 if cp is not a byte-level character. */
static int byte_of_codepoint(uint32_t cp, const int16_t *inverse) {
    if (cp < 256 + 68) return inverse[cp];
    return -1;
}

static void build_inverse(int16_t *inverse) {
    for (int i = 0; i < 256 + 68; i++) inverse[i] = -1;
    int k = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        if (printable) inverse[b] = (int16_t)b;
        else inverse[256 + k++] = (int16_t)b;
    }
}

/* Decode one UTF-8 code point at s (n bytes left); returns its length (1 for an invalid byte). */
static int utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned char c = s[0];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || (size_t)len > n) {
        *cp = 0xFFFFFFFFu;
        return 1;
    }
    uint32_t v = len == 1 ? c : len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = 0xFFFFFFFFu;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3Fu);
    }
    *cp = v;
    return len;
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A SentencePiece piece's bytes (never longer than the piece). */
static size_t spm_piece(const char *s, size_t len, int64_t type, char *out) {
    if (type == 6 && len == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>' && hexval(s[3]) >= 0 &&
        hexval(s[4]) >= 0) {
        out[0] = (char)(hexval(s[3]) * 16 + hexval(s[4]));
        return 1;
    }
    if (type == 5) return 0;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        if (i + 3 <= len && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
            out[o++] = ' ';
            i += 3;
        } else {
            out[o++] = s[i++];
        }
    }
    return o;
}

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
    int16_t inverse[256 + 68];
    build_inverse(inverse);
    const bool spm = weights_str_equals(g, KEY_TOK_MODEL, "llama");
    size_t pos = 0;
    for (int64_t i = 0; i < n_vocab; i++) {
        v->offs[i] = (int64_t)pos;
        const char *s;
        size_t len;
        if (i >= n_tok || tp_gguf_get_arr_str(g, KEY_TOK_TOKENS, i, &s, &len) != TP_OK) continue;
        int64_t type = 1;
        if (i < n_types) tp_gguf_get_arr_i64(g, KEY_TOK_TYPES, i, &type);
        if (type == 3 || type == 4 || (spm && type == 2)) { /* control / user-defined (/ unknown): the text */
            memcpy(v->bytes + pos, s, len);
            pos += len;
            continue;
        }
        if (spm) {
            pos += spm_piece(s, len, type, v->bytes + pos);
            continue;
        }
        const unsigned char *u = (const unsigned char *)s;
        size_t j = 0;
        while (j < len) {
            uint32_t cp;
            int l = utf8_next(u + j, len - j, &cp);
            int b = cp == 0xFFFFFFFFu ? -1 : byte_of_codepoint(cp, inverse);
            if (b >= 0) {
                v->bytes[pos++] = (char)b;
            } else { /* not a byte-level character: keep its UTF-8 as is */
                memcpy(v->bytes + pos, u + j, (size_t)l);
                pos += (size_t)l;
            }
            j += (size_t)l;
        }
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
