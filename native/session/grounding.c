/* grounding.c - the grounding regions of a generated text, <|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|>,
 * with their byte offsets: encoder/grounding.py's GroundingParser (its state machine over tags and text, the whole
 * text at once) ported to bytes, less the markdown it writes. The text is lexed into tags (the grounding tags, the
 * dropped ones, the replaced ones) and the text between them; a partial tag at the very end is dropped. Characters
 * are UTF-8; "whitespace" is Python's str.isspace(). */
#include "session.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LABEL 256  /* characters */
#define MAX_DET 4096   /* characters */

enum { T_REF_O, T_REF_C, T_DET_O, T_DET_C, T_DROPPED, T_REPLACED };
typedef struct pattern {
    const char *s;
    int kind;
} pattern;
/* longest first, as the Python lexer's alternation */
static const pattern PATTERNS[] = {
    {"<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", T_DROPPED},
    {"<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", T_DROPPED},
    {"<\xef\xbd\x9c\xe2\x96\x81pad\xe2\x96\x81\xef\xbd\x9c>", T_DROPPED},
    {"<|grounding|>", T_DROPPED},
    {"\\coloneqq", T_REPLACED},
    {"\\eqqcolon", T_REPLACED},
    {"<|/ref|>", T_REF_C},
    {"<|/det|>", T_DET_C},
    {"<|ref|>", T_REF_O},
    {"<|det|>", T_DET_O},
};
#define N_PATTERNS ((int)(sizeof PATTERNS / sizeof PATTERNS[0]))

enum { S_TEXT, S_LABEL, S_AFTER_REF, S_DET };

typedef struct parser {
    grounding_list *out;
    int state;
    size_t begin, label_begin, label_end;
    int64_t label_chars;
    char det[4 * MAX_DET + 8];
    size_t det_len;
    int64_t det_chars, depth;
    bool opened, closed;
} parser;

/* The code point at s[0..n) and its length (invalid bytes: one byte, U+FFFD). */
static uint32_t utf8_at(const char *s, size_t n, size_t *len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t k = u[0] < 0x80 ? 1 : (u[0] >> 5) == 6 ? 2 : (u[0] >> 4) == 14 ? 3 : (u[0] >> 3) == 30 ? 4 : 1;
    if (k > n) k = 1;
    for (size_t i = 1; i < k; i++)
        if ((u[i] & 0xC0) != 0x80) k = 1;
    *len = k;
    if (k == 1) return u[0] < 0x80 ? u[0] : 0xFFFD;
    uint32_t c = u[0] & (0x7F >> k);
    for (size_t i = 1; i < k; i++) c = (c << 6) | (u[i] & 0x3F);
    return c;
}

/* Python's str.isspace() */
static bool is_space(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static size_t skip_space(const char *s, size_t n, size_t i) {
    while (i < n) {
        size_t k;
        if (!is_space(utf8_at(s + i, n - i, &k))) break;
        i += k;
    }
    return i;
}

/* One number of a box: \s*(-?\d+(?:\.\d*)?)\s* then `end` (',' or ']'); its value in *v (+-inf past the double
 * range). */
static bool box_number(const char *s, size_t n, size_t *i, char end, double *v) {
    size_t j = skip_space(s, n, *i), a = j;
    if (j < n && s[j] == '-') j++;
    if (j >= n || !is_digit(s[j])) return false;
    while (j < n && is_digit(s[j])) j++;
    if (j < n && s[j] == '.') {
        j++;
        while (j < n && is_digit(s[j])) j++;
    }
    size_t b = j;
    j = skip_space(s, n, j);
    if (j >= n || s[j] != end) return false;
    char small[64], *buf = b - a < sizeof small ? small : malloc(b - a + 1);
    if (!buf) return false;
    memcpy(buf, s + a, b - a);
    buf[b - a] = '\0';
    *v = strtod(buf, NULL); /* +-HUGE_VAL past the double range: Python's float() gives inf there */
    if (buf != small) free(buf);
    *i = j + 1;
    return true;
}

static tp_status out_of_memory(tp_error *err) {
    tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "grounding: out of memory");
    return TP_ERR_OUT_OF_MEMORY;
}

static int32_t clamp999(double v) { return v < 0 ? 0 : v > 999 ? 999 : (int32_t)v; }

static tp_status push_box(grounding_list *g, const double v[4], tp_error *err) {
    if (!tp_grow((void **)&g->boxes, &g->cap_boxes, (int64_t)g->n_boxes + 1, sizeof(*g->boxes), 16))
        return out_of_memory(err);
    int32_t x1 = clamp999(rint(v[0])), y1 = clamp999(rint(v[1])), x2 = clamp999(rint(v[2])), y2 = clamp999(rint(v[3]));
    tp_grounding_box *b = &g->boxes[g->n_boxes++];
    b->x1 = x1 < x2 ? x1 : x2;
    b->x2 = x1 < x2 ? x2 : x1;
    b->y1 = y1 < y2 ? y1 : y2;
    b->y2 = y1 < y2 ? y2 : y1;
    return TP_OK;
}

/* Every [a, b, c, d] of the box list (grounding.py's parse_boxes). */
static tp_status parse_boxes(const char *s, size_t n, grounding_list *g, tp_error *err) {
    for (size_t i = 0; i < n;) {
        if (s[i] != '[') {
            i++;
            continue;
        }
        size_t j = i + 1;
        double v[4];
        bool ok = true;
        for (int k = 0; k < 4 && ok; k++) ok = box_number(s, n, &j, k < 3 ? ',' : ']', &v[k]);
        if (!ok) {
            i++;
            continue;
        }
        i = j;
        if (isinf(v[0]) || isinf(v[1]) || isinf(v[2]) || isinf(v[3])) continue; /* Python: OverflowError, skipped */
        tp_status st = push_box(g, v, err);
        if (st != TP_OK) return st;
    }
    return TP_OK;
}

static void trim(const char *text, size_t *b, size_t *e) {
    size_t k;
    while (*b < *e && is_space(utf8_at(text + *b, *e - *b, &k))) *b += k;
    while (*e > *b) {
        size_t p = *e - 1;
        while (p > *b && ((unsigned char)text[p] & 0xC0) == 0x80) p--;
        if (!is_space(utf8_at(text + p, *e - p, &k))) break;
        *e = p;
    }
}

static tp_status close_region(parser *P, const char *text, size_t end, bool complete, tp_error *err) {
    grounding_list *g = P->out;
    if (!tp_grow((void **)&g->spans, &g->cap_spans, (int64_t)g->n_spans + 1, sizeof(*g->spans), 16))
        return out_of_memory(err);
    tp_grounding_span sp = {.begin = P->begin, .end = end, .label_begin = P->label_begin, .label_end = P->label_end,
                            .first_box = g->n_boxes, .complete = complete};
    trim(text, &sp.label_begin, &sp.label_end);
    tp_status st = parse_boxes(P->det, P->det_len, g, err);
    sp.n_boxes = g->n_boxes - sp.first_box;
    g->spans[g->n_spans++] = sp;
    P->state = S_TEXT;
    return st;
}

static void start_det(parser *P) {
    P->state = S_DET;
    P->det_len = 0;
    P->det_chars = P->depth = 0;
    P->opened = P->closed = false;
}

static void start_label(parser *P, size_t tag, size_t tag_end) {
    P->state = S_LABEL;
    P->begin = tag;
    P->label_begin = P->label_end = tag_end;
    P->label_chars = 0;
}

/* Text at text[off .. off + n) in the det state, character by character (grounding.py's _det_text). */
static tp_status det_text(parser *P, const char *text, size_t off, size_t n, tp_error *err) {
    for (size_t i = off; i < off + n;) {
        size_t k;
        uint32_t c = utf8_at(text + i, off + n - i, &k);
        if (P->closed) {
            if (!is_space(c)) return close_region(P, text, i, true, err); /* the rest is text */
            i += k; /* whitespace after the list: nothing a box could use, not kept (unbounded) */
            continue;
        }
        if (P->det_chars >= MAX_DET || (!P->opened && !(c == '[' || c == ' ' || c == '\t' || c == '\r' || c == '\n')) ||
                   (P->opened && c == '\n')) {
            return close_region(P, text, i, false, err);
        }
        memcpy(P->det + P->det_len, text + i, k);
        P->det_len += k;
        P->det_chars++;
        if (c == '[') {
            P->depth++;
            P->opened = true;
        } else if (c == ']' && !P->closed && --P->depth <= 0) {
            P->closed = true;
        }
        i += k;
    }
    return TP_OK;
}

static int64_t n_chars(const char *s, size_t n) {
    int64_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static tp_status on_text(parser *P, const char *text, size_t off, size_t n, tp_error *err) {
    switch (P->state) {
    case S_LABEL:
        P->label_end = off + n;
        P->label_chars += n_chars(text + off, n);
        if (P->label_chars > MAX_LABEL) P->state = S_TEXT;
        return TP_OK;
    case S_AFTER_REF:
        for (size_t i = off, k; i < off + n; i += k)
            if (!is_space(utf8_at(text + i, off + n - i, &k))) {
                P->state = S_TEXT;
                break;
            }
        return TP_OK;
    case S_DET:
        return det_text(P, text, off, n, err);
    default:
        return TP_OK;
    }
}

static tp_status on_tag(parser *P, const char *text, int kind, size_t at, size_t end, tp_error *err) {
    if (kind == T_DROPPED) return TP_OK;
    if (kind == T_REPLACED) return P->state == S_TEXT ? TP_OK : on_text(P, text, at, end - at, err);
    switch (P->state) {
    case S_TEXT:
        if (kind == T_REF_O) start_label(P, at, end);
        if (kind == T_DET_O) {
            P->begin = P->label_begin = P->label_end = at;
            start_det(P);
        }
        return TP_OK;
    case S_LABEL:
        if (kind == T_REF_O) start_label(P, at, end); /* nested: the outer text is content */
        if (kind == T_REF_C) P->state = S_AFTER_REF;
        if (kind == T_DET_O) start_det(P);
        return TP_OK;
    case S_AFTER_REF:
        if (kind == T_DET_O) start_det(P);
        if (kind == T_REF_O) start_label(P, at, end);
        return TP_OK;
    default: /* S_DET */
        if (kind == T_DET_C) return close_region(P, text, end, P->opened && P->closed, err);
        if (kind == T_REF_O) {
            tp_status st = close_region(P, text, at, false, err);
            start_label(P, at, end);
            return st;
        }
        return TP_OK;
    }
}

static int match_at(const char *text, size_t len, size_t i) {
    if (text[i] != '<' && text[i] != '\\') return -1; /* every pattern starts with one of these */
    for (int p = 0; p < N_PATTERNS; p++) {
        size_t n = strlen(PATTERNS[p].s);
        if (n <= len - i && memcmp(text + i, PATTERNS[p].s, n) == 0) return p;
    }
    return -1;
}

/* The length of the longest tail of text[from..len) (whole characters) that is a proper prefix of a pattern; *tag
 * whether it is a prefix of a tag (not only of a replaced string). */
static size_t held_tail(const char *text, size_t from, size_t len, bool *tag) {
    *tag = false;
    for (size_t t = from; t < len; t++) {
        if (((unsigned char)text[t] & 0xC0) == 0x80) continue;
        size_t k = len - t;
        bool any = false;
        for (int p = 0; p < N_PATTERNS; p++) {
            size_t n = strlen(PATTERNS[p].s);
            if (k < n && memcmp(text + t, PATTERNS[p].s, k) == 0) {
                any = true;
                *tag = *tag || PATTERNS[p].kind != T_REPLACED;
            }
        }
        if (any) return k;
    }
    return 0;
}

tp_status grounding_scan(const char *text, size_t len, grounding_list *out, tp_error *err) {
    parser *P = calloc(1, sizeof(*P));
    if (!P) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "grounding: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    P->out = out;
    P->state = S_TEXT;
    tp_status st = TP_OK;
    size_t run = 0; /* start of the text since the last tag */
    for (size_t i = 0; i < len && st == TP_OK;) {
        int p = match_at(text, len, i);
        if (p < 0) {
            i++;
            continue;
        }
        size_t end = i + strlen(PATTERNS[p].s);
        if (i > run) st = on_text(P, text, run, i - run, err);
        if (st == TP_OK) st = on_tag(P, text, PATTERNS[p].kind, i, end, err);
        i = run = end;
    }
    bool tag = false;
    size_t hold = st == TP_OK ? held_tail(text, run, len, &tag) : 0, stop = len - hold;
    if (st == TP_OK && stop > run) st = on_text(P, text, run, stop - run, err);
    if (st == TP_OK && hold > 0 && !tag) st = on_text(P, text, stop, hold, err);
    if (st == TP_OK && P->state == S_DET) st = close_region(P, text, tag ? stop : len, P->opened && P->closed, err);
    free(P);
    return st;
}

void grounding_list_free(grounding_list *g) {
    free(g->spans);
    free(g->boxes);
    memset(g, 0, sizeof(*g));
}

tp_status tp_grounding_parse(const char *text, size_t len, tp_grounding_span *spans, int32_t span_cap,
                             int32_t *n_spans, tp_grounding_box *boxes, int32_t box_cap, int32_t *n_boxes,
                             tp_error *err) {
    if ((!text && len > 0) || !n_spans || !n_boxes || span_cap < 0 || box_cap < 0 || (span_cap > 0 && !spans) ||
        (box_cap > 0 && !boxes)) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_grounding_parse: NULL text, counts or arrays with caps > 0");
        return TP_ERR_INVALID_ARGUMENT;
    }
    grounding_list g = {0};
    tp_status st = len > 0 ? grounding_scan(text, len, &g, err) : TP_OK;
    *n_spans = g.n_spans;
    *n_boxes = g.n_boxes;
    if (st == TP_OK) {
        const int32_t ns = g.n_spans < span_cap ? g.n_spans : span_cap, nb = g.n_boxes < box_cap ? g.n_boxes : box_cap;
        if (ns > 0) memcpy(spans, g.spans, (size_t)ns * sizeof(*spans));
        if (nb > 0) memcpy(boxes, g.boxes, (size_t)nb * sizeof(*boxes));
        bool query = !spans && !boxes && span_cap == 0 && box_cap == 0;
        if (!query && (g.n_spans > span_cap || g.n_boxes > box_cap)) {
            st = TP_ERR_INVALID_ARGUMENT;
            tp_error_set(err, st, "tp_grounding_parse: %d spans and %d boxes do not fit caps of %d and %d",
                         (int)g.n_spans, (int)g.n_boxes, (int)span_cap, (int)box_cap);
        }
    }
    grounding_list_free(&g);
    return st;
}
