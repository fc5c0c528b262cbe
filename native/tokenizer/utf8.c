/* utf8.c - UTF-8: strict decoding of input text, and the "maximal subpart" view of invalid bytes that
 * detokenisation uses (Unicode's recommended practice, as Python's errors="replace" decodes). */
#include "tp_tokenizer.h"

int tpu_utf8_prefix(const uint8_t *s, size_t n, int *need) {
    if (n == 0) {
        *need = 0;
        return 0;
    }
    const uint8_t c = s[0];
    int len;
    uint8_t lo2 = 0x80, hi2 = 0xBF; /* the second byte's range */
    if (c < 0x80) len = 1;
    else if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo2 = 0xA0;        /* no overlong forms */
        else if (c == 0xED) hi2 = 0x9F;   /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo2 = 0x90;
        else if (c == 0xF4) hi2 = 0x8F;   /* <= U+10FFFF */
    } else {
        *need = 0;
        return 0;
    }
    *need = len;
    int k = 1;
    for (; k < len && (size_t)k < n; k++) {
        const uint8_t lo = k == 1 ? lo2 : 0x80, hi = k == 1 ? hi2 : 0xBF;
        if (s[k] < lo || s[k] > hi) break;
    }
    return k;
}

int tpu_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
    int need;
    const int k = tpu_utf8_prefix(s, n, &need);
    if (need == 0 || k < need) return 0;
    uint32_t v = need == 1 ? s[0] : need == 2 ? (s[0] & 0x1Fu) : need == 3 ? (s[0] & 0x0Fu) : (s[0] & 0x07u);
    for (int i = 1; i < need; i++) v = (v << 6) | (s[i] & 0x3Fu);
    *cp = v;
    return need;
}

int tpu_utf8_encode(uint32_t cp, uint8_t out[4]) {
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}
