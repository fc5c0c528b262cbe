/* piece.c - a token's string as the bytes it stands for (see tp_tokenizer.h): the tokenizer's pieces and the
 * text model's tp_text_token_bytes both come from here. */
#include "tp_tokenizer.h"

#include <string.h>

static bool byte_is_printable(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }

uint32_t tok_byte_to_cp(int b) {
    if (byte_is_printable(b)) return (uint32_t)b;
    int k = 0;
    for (int x = 0; x < b; x++) k += !byte_is_printable(x);
    return 256u + (uint32_t)k;
}

void tok_cp_to_byte_table(int16_t table[TOK_BYTE_CPS]) {
    for (int i = 0; i < TOK_BYTE_CPS; i++) table[i] = -1;
    for (int b = 0; b < 256; b++) table[tok_byte_to_cp(b)] = (int16_t)b;
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

size_t tok_piece_bytes(const char *s, size_t n, int type, bool spm, const int16_t *cp_to_byte, char *out) {
    if (type == TT_CONTROL || type == TT_USER_DEFINED || (spm && type == TT_UNKNOWN)) {
        memcpy(out, s, n);
        return n;
    }
    size_t o = 0;
    if (spm) {
        if (type == TT_BYTE && n == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>' && hexval(s[3]) >= 0 &&
            hexval(s[4]) >= 0) {
            out[0] = (char)(hexval(s[3]) * 16 + hexval(s[4]));
            return 1;
        }
        if (type == TT_UNUSED) return 0;
        for (size_t i = 0; i < n;) {
            if (i + 3 <= n && memcmp(s + i, TOK_SPM_SPACE, 3) == 0) {
                out[o++] = ' ';
                i += 3;
            } else {
                out[o++] = s[i++];
            }
        }
        return o;
    }
    for (size_t i = 0; i < n;) { /* byte-level symbols back to bytes; other characters as they are */
        uint32_t cp;
        int l = tpu_utf8_decode((const uint8_t *)s + i, n - i, &cp);
        if (l > 0 && cp < TOK_BYTE_CPS && cp_to_byte[cp] >= 0) {
            out[o++] = (char)cp_to_byte[cp];
        } else {
            if (l <= 0) l = 1;
            memcpy(out + o, s + i, (size_t)l);
            o += (size_t)l;
        }
        i += (size_t)l;
    }
    return o;
}
