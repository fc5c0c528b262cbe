/* chat_template.c - a GGUF's Jinja chat template rendered as transformers' apply_chat_template renders it
 * (jinja2's ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True), keep_trailing_newline=False),
 * for the subset include/tilepass.h lists. Three passes over the template, all on a copy whose line breaks are
 * "\n" (as jinja2 normalises them) and whose one trailing newline is dropped:
 *   lex     the text between tags (whitespace control, trim_blocks, lstrip_blocks applied as jinja2's lexer
 *           does) and the tokens inside {{ }} and {% %}; comments vanish. A lexing error becomes an ERROR
 *           token, so that errors come out in source order (the parser reports whichever it meets first);
 *   parse   recursive descent (jinja2's precedence) into a small tree;
 *   render  a walk of the tree over values that describe the messages without copying them.
 * Every allocation of a render comes from one arena freed at the end; depth, loop iterations, evaluation
 * steps, variables, memory and output are bounded (chat_template.h, tilepass.h). */
#include "chat_template.h"
#include "tp_internal.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TEMPLATE (1u << 20)   /* template bytes */
#define MAX_ARENA (64u << 20)     /* bytes allocated by one render */
#define MAX_HEIGHT 256            /* height of an expression tree */
#define MAX_STEPS 10000000        /* evaluations of one render */
#define MAX_IMAGES (1 << 20)      /* image parts of one message */

/* ---- render state, arena, errors ---- */

typedef struct block {
    struct block *next;
    size_t used, cap;
    max_align_t data[];
} block;

typedef enum { T_TEXT, T_VAR, T_BLOCK, T_END, T_NAME, T_STR, T_INT, T_OP, T_EOF, T_ERROR } tkind;
typedef struct tok {
    tkind k;
    size_t off;       /* in the template */
    const char *s;    /* text, name, decoded string or operator */
    size_t n;
    int64_t i;        /* integer */
} tok;

typedef enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_STR, V_MSGS, V_MSG, V_PARTS, V_PART, V_LOOP } vkind;
typedef struct value {
    vkind k;
    int32_t m, p;     /* message, part (V_MSG, V_PARTS, V_PART) */
    int64_t i;        /* V_BOOL, V_INT; V_LOOP: index0 */
    const char *s;    /* V_STR */
    size_t n;         /* V_STR: bytes; V_LOOP: length */
} value;

typedef struct var {
    const char *name;
    size_t n;
    value v;
} var;

typedef struct ct {
    const char *src;
    size_t len;
    tp_error *err;
    tp_status status;
    block *arena;
    size_t arena_bytes;
    tok *toks;
    size_t n_toks, cap_toks, pos;
    tp_status lex_status;
    size_t lex_off;
    char lex_msg[160];
    int depth;
    const tp_chat_message *msgs;
    int n_msgs;
    var vars[CHAT_TEMPLATE_MAX_VARS];
    int n_vars, frame;         /* frame: the first variable of the innermost scope */
    int64_t iterations, steps;
    char *out;
    size_t out_n, out_cap;
} ct;

static void linecol(const ct *c, size_t off, int *line, int *col)
{
    *line = 1;
    size_t bol = 0;
    for (size_t i = 0; i < off && i < c->len; i++)
        if (c->src[i] == '\n') (*line)++, bol = i + 1;
    *col = (int)(off - bol) + 1;
}

/* Record the first error, "chat template line L:C: ...". Returns false for `return fail(...)`. */
static bool fail(ct *c, tp_status st, size_t off, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static bool fail(ct *c, tp_status st, size_t off, const char *fmt, ...)
{
    if (c->status != TP_OK) return false;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line, col;
    linecol(c, off, &line, &col);
    c->status = st;
    tp_error_set(c->err, st, "chat template line %d:%d: %s", line, col, msg);
    return false;
}

static void *alloc(ct *c, size_t n, size_t off)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (n > MAX_ARENA || c->arena_bytes > MAX_ARENA - n) {
        fail(c, TP_ERR_UNSUPPORTED, off, "the template needs more than %u bytes of memory", MAX_ARENA);
        return NULL;
    }
    block *b = c->arena;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof(block) + cap);
        if (!b) {
            fail(c, TP_ERR_OUT_OF_MEMORY, off, "out of memory");
            return NULL;
        }
        b->next = c->arena, b->used = 0, b->cap = cap;
        c->arena = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    c->arena_bytes += n;
    return p;
}

/* ---- characters ---- */

/* The length of the whitespace character (Python's str.isspace) at s[i] (i < n), 0 if none. */
static size_t ws_at(const char *s, size_t n, size_t i)
{
    const unsigned char *u = (const unsigned char *)s;
    unsigned b = u[i];
    if (b == ' ' || (b >= '\t' && b <= '\r') || (b >= 0x1c && b <= 0x1f)) return 1;
    if (b == 0xc2 && i + 1 < n && (u[i + 1] == 0x85 || u[i + 1] == 0xa0)) return 2;
    if (i + 2 >= n) return 0;
    unsigned c1 = u[i + 1], c2 = u[i + 2];
    if ((b == 0xe1 && c1 == 0x9a && c2 == 0x80) || (b == 0xe2 && c1 == 0x81 && c2 == 0x9f) ||
        (b == 0xe3 && c1 == 0x80 && c2 == 0x80) ||
        (b == 0xe2 && c1 == 0x80 && (c2 <= 0x8a || c2 == 0xa8 || c2 == 0xa9 || c2 == 0xaf)))
        return c2 >= 0x80 ? 3 : 0;
    return 0;
}

/* The length of the whitespace character that ends at s[end) (not before start), 0 if none. */
static size_t ws_before(const char *s, size_t start, size_t end)
{
    for (size_t l = 1; l <= 3 && l <= end - start; l++)
        if (ws_at(s, end, end - l) == l) return l;
    return 0;
}

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    size_t l;
    while (i < n && (l = ws_at(s, n, i)) > 0) i += l;
    return i;
}

static size_t rstrip(const char *s, size_t start, size_t end)
{
    size_t l;
    while (end > start && (l = ws_before(s, start, end)) > 0) end -= l;
    return end;
}

static bool is_alpha(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_'; }
static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }
static bool eq(const char *s, size_t n, const char *lit) { return strlen(lit) == n && memcmp(s, lit, n) == 0; }

static size_t put_utf8(char *d, uint32_t cp)
{
    if (cp < 0x80) return d[0] = (char)cp, 1;
    if (cp < 0x800) return d[0] = (char)(0xc0 | cp >> 6), d[1] = (char)(0x80 | (cp & 63)), 2;
    if (cp < 0x10000)
        return d[0] = (char)(0xe0 | cp >> 12), d[1] = (char)(0x80 | (cp >> 6 & 63)), d[2] = (char)(0x80 | (cp & 63)), 3;
    d[0] = (char)(0xf0 | cp >> 18), d[1] = (char)(0x80 | (cp >> 12 & 63));
    d[2] = (char)(0x80 | (cp >> 6 & 63)), d[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* ---- lexer ---- */

static bool push_tok(ct *c, tkind k, size_t off, const char *s, size_t n, int64_t i)
{
    if (c->n_toks == c->cap_toks) {
        size_t cap = c->cap_toks ? 2 * c->cap_toks : 256;
        tok *t = realloc(c->toks, cap * sizeof *t);
        if (!t) return fail(c, TP_ERR_OUT_OF_MEMORY, off, "out of memory");
        c->toks = t, c->cap_toks = cap;
    }
    c->toks[c->n_toks++] = (tok){k, off, s, n, i};
    return true;
}

static bool lex_error(ct *c, tp_status st, size_t off, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static bool lex_error(ct *c, tp_status st, size_t off, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->lex_msg, sizeof c->lex_msg, fmt, ap);
    va_end(ap);
    c->lex_status = st, c->lex_off = off;
    push_tok(c, T_ERROR, off, NULL, 0, 0);
    return false;
}

/* A string literal at s[i] (its quote): decoded as jinja2 does (Python's unicode-escape). */
static bool lex_string(ct *c, size_t *pi)
{
    const char *s = c->src;
    size_t i = *pi, j = i + 1;
    while (j < c->len && s[j] != s[i]) j += s[j] == '\\' ? 2 : 1;
    if (j >= c->len) return lex_error(c, TP_ERR_FORMAT, i, "unterminated string");
    char *d = alloc(c, j - i, i);
    if (!d) return false;
    size_t n = 0;
    for (size_t k = i + 1; k < j; k++) {
        if (s[k] != '\\') { d[n++] = s[k]; continue; }
        char e = s[++k];
        static const char simple[] = "\\\\''\"\"a\ab\bf\fn\nr\rt\tv\v";
        const char *m = e ? strchr(simple, e) : NULL;
        if (m && (m - simple) % 2 == 0) { d[n++] = m[1]; continue; }
        if (e == '\n') continue;
        if (e == 'N' || (unsigned char)e >= 0x80)
            return lex_error(c, TP_ERR_UNSUPPORTED, k - 1, "escape sequence '\\%c' in a string", e);
        int nd = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : (e >= '0' && e <= '7') ? 3 : 0;
        if (!nd) { d[n++] = '\\', d[n++] = e; continue; }
        uint32_t cp = 0;
        int got = 0;
        size_t q = e >= '0' && e <= '7' ? k : k + 1;
        for (; got < nd && q < j; got++, q++) {
            char h = s[q];
            int v = nd == 3 ? (h >= '0' && h <= '7' ? h - '0' : -1)
                    : is_digit(h) ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10 : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
            if (v < 0) break;
            cp = cp * (nd == 3 ? 8 : 16) + (uint32_t)v;
        }
        if (nd != 3 && got < nd) return lex_error(c, TP_ERR_FORMAT, k - 1, "truncated '\\%c' escape", e);
        if (cp > 0x10ffff) return lex_error(c, TP_ERR_FORMAT, k - 1, "escape beyond U+10FFFF");
        if (cp >= 0xd800 && cp <= 0xdfff) return lex_error(c, TP_ERR_UNSUPPORTED, k - 1, "surrogate escape");
        n += put_utf8(d + n, cp); /* never longer than the escape */
        k = q - 1;
    }
    *pi = j + 1;
    return push_tok(c, T_STR, i, d, n, 0);
}

static bool lex_number(ct *c, size_t *pi)
{
    const char *s = c->src;
    size_t i = *pi, j = i;
    int64_t v = 0;
    bool big = false;
    for (; j < c->len && (is_digit(s[j]) || (s[j] == '_' && j + 1 < c->len && is_digit(s[j + 1]) && j > i)); j++) {
        if (s[j] == '_') continue;
        if (v > (INT64_MAX - 9) / 10) big = true;
        else v = v * 10 + (s[j] - '0');
    }
    size_t e = j + 1 < c->len && (s[j + 1] == '+' || s[j + 1] == '-') ? j + 2 : j + 1;
    if ((i == 0 || s[i - 1] != '.') && j + 1 < c->len &&
        ((s[j] == '.' && is_digit(s[j + 1])) || ((s[j] == 'e' || s[j] == 'E') && e < c->len && is_digit(s[e]))))
        return lex_error(c, TP_ERR_UNSUPPORTED, i, "float literal");
    if (s[i] == '0' && v != 0) return lex_error(c, TP_ERR_FORMAT, i, "integer with a leading zero");
    if (big) return lex_error(c, TP_ERR_UNSUPPORTED, i, "integer literal beyond 64 bits");
    *pi = j;
    return push_tok(c, T_INT, i, s + i, j - i, v);
}

/* The tokens of a {{ }} or {% %} tag whose opener ends at *pi; *pi becomes the end of its closer
 * (with what trim_blocks and "-" take). Returns false on an error (an ERROR token pushed). */
static bool lex_tag(ct *c, size_t open, bool is_block, size_t *pi)
{
    const char *s = c->src;
    size_t n = c->len, i = *pi;
    char stack[CHAT_TEMPLATE_MAX_DEPTH];
    int depth = 0;
    for (;;) {
        if (i >= n) return lex_error(c, TP_ERR_FORMAT, open, "tag not closed (%s)", is_block ? "%}" : "}}");
        const char *e = is_block ? "%}" : "}}";
        if (depth == 0) {
            size_t end = 0;
            if (is_block && i + 2 < n && s[i] == '+' && s[i + 1] == '%' && s[i + 2] == '}') end = i + 3;
            else if (i + 2 < n && s[i] == '-' && s[i + 1] == e[0] && s[i + 2] == e[1]) end = skip_ws(s, n, i + 3);
            else if (i + 1 < n && s[i] == e[0] && s[i + 1] == e[1]) end = i + 2 + (is_block && i + 2 < n && s[i + 2] == '\n');
            if (end) {
                *pi = end;
                return push_tok(c, T_END, i, NULL, 0, 0);
            }
        }
        size_t l = ws_at(s, n, i);
        if (l) { i += l; continue; }
        char ch = s[i];
        if (is_alpha(ch)) {
            size_t j = i;
            while (j < n && (is_alpha(s[j]) || is_digit(s[j]))) j++;
            if (!push_tok(c, T_NAME, i, s + i, j - i, 0)) return false;
            i = j;
        } else if (is_digit(ch)) {
            if (!lex_number(c, &i)) return false;
        } else if (ch == '"' || ch == '\'') {
            if (!lex_string(c, &i)) return false;
        } else if (ch && strchr("+-/*%~[](){}><=.:|,;!", ch)) {
            static const char *const two[] = {"//", "**", "==", "!=", ">=", "<="};
            size_t len = 1;
            for (int k = 0; k < 6; k++)
                if (i + 1 < n && s[i] == two[k][0] && s[i + 1] == two[k][1]) len = 2;
            if (ch == '!' && len == 1) return lex_error(c, TP_ERR_FORMAT, i, "unexpected character '!'");
            if (len == 1 && strchr("([{", ch)) {
                if (depth == CHAT_TEMPLATE_MAX_DEPTH) return lex_error(c, TP_ERR_UNSUPPORTED, i, "brackets nested too deeply");
                stack[depth++] = ch == '(' ? ')' : ch == '[' ? ']' : '}';
            } else if (len == 1 && strchr(")]}", ch)) {
                if (depth == 0) return lex_error(c, TP_ERR_FORMAT, i, "unexpected '%c'", ch);
                if (stack[--depth] != ch) return lex_error(c, TP_ERR_FORMAT, i, "unexpected '%c', expected '%c'", ch, stack[depth]);
            }
            if (!push_tok(c, T_OP, i, s + i, len, 0)) return false;
            i += len;
        } else if ((unsigned char)ch >= 0x80) {
            return lex_error(c, TP_ERR_UNSUPPORTED, i, "non-ASCII character in a tag");
        } else {
            return lex_error(c, TP_ERR_FORMAT, i, "unexpected character 0x%02x in a tag", (unsigned)(unsigned char)ch);
        }
    }
}

static bool all_ws(const char *s, size_t a, size_t b)
{
    return a < b && skip_ws(s, b, a) == b;
}

/* The whole template into tokens; ends with EOF (or ERROR). */
static void lex(ct *c)
{
    const char *s = c->src;
    size_t n = c->len, p = 0;
    bool line_starting = true;
    while (p < n) {
        size_t t = p;
        while (t + 1 < n && !(s[t] == '{' && (s[t + 1] == '{' || s[t + 1] == '%' || s[t + 1] == '#'))) t++;
        if (t + 1 >= n) {
            push_tok(c, T_TEXT, p, s + p, n - p, 0);
            break;
        }
        char kind = s[t + 1];
        size_t q = t + 2, te = t;
        char sign = q < n && (s[q] == '-' || s[q] == '+') ? s[q++] : 0;
        if (sign == '-') {
            te = rstrip(s, p, t);
        } else if (sign != '+' && kind != '{') { /* lstrip_blocks */
            size_t l = t;
            while (l > p && s[l - 1] != '\n') l--;
            if ((l > p || line_starting) && all_ws(s, l, t)) te = l;
        }
        if (te > p && !push_tok(c, T_TEXT, p, s + p, te - p, 0)) return;
        if (kind == '#') {
            size_t j = q;
            while (j + 1 < n && !(s[j] == '#' && s[j + 1] == '}')) j++;
            if (j + 1 >= n) {
                lex_error(c, TP_ERR_FORMAT, t, "comment not closed (#})");
                return;
            }
            if (j > q && s[j - 1] == '-') p = skip_ws(s, n, j + 2);
            else if (j > q && s[j - 1] == '+') p = j + 2;
            else p = j + 2 + (j + 2 < n && s[j + 2] == '\n');
        } else {
            if (!push_tok(c, kind == '%' ? T_BLOCK : T_VAR, t, NULL, 0, 0) || !lex_tag(c, t, kind == '%', &q)) return;
            p = q;
        }
        line_starting = s[p - 1] == '\n';
    }
    push_tok(c, T_EOF, n, NULL, 0, 0);
}

/* ---- parser ---- */

typedef enum {
    N_TEXT, N_OUT, N_SET, N_IF, N_FOR,                                   /* statements */
    E_STR, E_INT, E_BOOL, E_NONE, E_NAME, E_ATTR, E_ITEM, E_BIN, E_NOT, E_NEG, E_TEST, E_FILTER /* expressions */
} nkind;
enum { OP_ADD, OP_SUB, OP_CAT, OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN, OP_AND, OP_OR };
static const char *const tests[] = {"defined", "undefined", "none", "string", "number"};
static const char *const filters[] = {"trim", "length"};

typedef struct node {
    nkind k;
    int op;             /* E_BIN: OP_*; E_TEST: the test (+ 16 when negated); E_FILTER: the filter */
    int height;
    size_t off;
    const char *s;      /* text, name, string, attribute */
    size_t n;
    int64_t i;
    struct node *a, *b, *c; /* children; N_IF: cond, body, else; N_FOR: iterable, body, else */
    struct node *next;  /* the next statement */
} node;

static tok *peek(ct *c) { return &c->toks[c->pos]; }
static tok *next(ct *c) { tok *t = &c->toks[c->pos]; if (t->k != T_EOF && t->k != T_ERROR) c->pos++; return t; }
static bool is_op(const tok *t, const char *op) { return t->k == T_OP && eq(t->s, t->n, op); }
static bool is_name(const tok *t, const char *name) { return t->k == T_NAME && eq(t->s, t->n, name); }

/* An error at token t: the lexer's own when t is its ERROR token. */
static bool fail_at(ct *c, const tok *t, tp_status st, const char *what)
{
    if (t->k == T_ERROR) return fail(c, c->lex_status, c->lex_off, "%s", c->lex_msg);
    if (t->k == T_EOF) return fail(c, TP_ERR_FORMAT, t->off, "unexpected end of template (%s)", what);
    if (t->k == T_END) return fail(c, st, t->off, "%s, found the end of the tag", what);
    if (!t->s || t->k == T_TEXT) return fail(c, st, t->off, "%s, found a new tag", what);
    return fail(c, st, t->off, "%s, found '%.*s'", what, (int)(t->n > 40 ? 40 : t->n), t->s);
}

static node *mk(ct *c, nkind k, size_t off, node *a, node *b)
{
    node *x = alloc(c, sizeof *x, off);
    if (!x) return NULL;
    memset(x, 0, sizeof *x);
    x->k = k, x->off = off, x->a = a, x->b = b;
    x->height = 1 + (a && a->height > (b ? b->height : 0) ? a->height : b ? b->height : 0);
    if (x->height > MAX_HEIGHT) {
        fail(c, TP_ERR_UNSUPPORTED, off, "expression nested deeper than %d", MAX_HEIGHT);
        return NULL;
    }
    return x;
}

static node *parse_expr(ct *c);

static node *parse_primary(ct *c)
{
    tok *t = next(c);
    node *x;
    if (t->k == T_NAME) {
        static const char *const lits[] = {"true", "True", "false", "False", "none", "None"};
        for (int k = 0; k < 6; k++)
            if (eq(t->s, t->n, lits[k])) {
                if (!(x = mk(c, k < 4 ? E_BOOL : E_NONE, t->off, NULL, NULL))) return NULL;
                x->i = k < 2;
                return x;
            }
        if (!(x = mk(c, E_NAME, t->off, NULL, NULL))) return NULL;
        x->s = t->s, x->n = t->n;
        return x;
    }
    if (t->k == T_STR) {
        if (!(x = mk(c, E_STR, t->off, NULL, NULL))) return NULL;
        x->s = t->s, x->n = t->n;
        while (peek(c)->k == T_STR) { /* adjacent literals are one string */
            tok *u = next(c);
            char *d = alloc(c, x->n + u->n + 1, u->off);
            if (!d) return NULL;
            memcpy(d, x->s, x->n), memcpy(d + x->n, u->s, u->n);
            x->s = d, x->n += u->n;
        }
        return x;
    }
    if (t->k == T_INT) {
        if (!(x = mk(c, E_INT, t->off, NULL, NULL))) return NULL;
        x->i = t->i;
        return x;
    }
    if (is_op(t, "(")) {
        if (!(x = parse_expr(c))) return NULL;
        if (is_op(peek(c), ",")) return fail(c, TP_ERR_UNSUPPORTED, peek(c)->off, "tuple"), NULL;
        if (!is_op(peek(c), ")")) return fail_at(c, peek(c), TP_ERR_FORMAT, "expected ')'"), NULL;
        next(c);
        return x;
    }
    if (is_op(t, "[")) return fail(c, TP_ERR_UNSUPPORTED, t->off, "list literal"), NULL;
    if (is_op(t, "{")) return fail(c, TP_ERR_UNSUPPORTED, t->off, "dict literal"), NULL;
    return fail_at(c, t, TP_ERR_FORMAT, "expected an expression"), NULL;
}

/* a.b, a[x], then filters and tests (jinja2's parse_postfix and parse_filter_expr). */
static node *parse_postfix(ct *c, node *x, bool with_filter)
{
    for (bool filtered = false; x;) { /* after a filter or test: only more filters and tests */
        tok *t = peek(c);
        if (!filtered && is_op(t, ".")) {
            next(c);
            tok *u = next(c);
            if (u->k == T_NAME) {
                if (!(x = mk(c, E_ATTR, t->off, x, NULL))) return NULL;
                x->s = u->s, x->n = u->n;
            } else if (u->k == T_INT) {
                node *k = mk(c, E_INT, u->off, NULL, NULL);
                if (!k) return NULL;
                k->i = u->i;
                x = mk(c, E_ITEM, t->off, x, k);
            } else {
                return fail_at(c, u, TP_ERR_FORMAT, "expected an attribute name"), NULL;
            }
        } else if (!filtered && is_op(t, "[")) {
            next(c);
            if (is_op(peek(c), ":")) return fail(c, TP_ERR_UNSUPPORTED, t->off, "slice"), NULL;
            node *k = parse_expr(c);
            if (!k) return NULL;
            if (is_op(peek(c), ":") || is_op(peek(c), ",")) return fail(c, TP_ERR_UNSUPPORTED, t->off, "slice or tuple subscript"), NULL;
            if (!is_op(peek(c), "]")) return fail_at(c, peek(c), TP_ERR_FORMAT, "expected ']'"), NULL;
            next(c);
            x = mk(c, E_ITEM, t->off, x, k);
        } else if (is_op(t, "(")) {
            return fail(c, TP_ERR_UNSUPPORTED, t->off, "call"), NULL;
        } else if (with_filter && is_op(t, "|")) {
            next(c);
            tok *u = next(c);
            if (u->k != T_NAME) return fail_at(c, u, TP_ERR_FORMAT, "expected a filter name"), NULL;
            int f = -1;
            for (int k = 0; k < 2; k++)
                if (eq(u->s, u->n, filters[k])) f = k;
            if (f < 0) return fail(c, TP_ERR_UNSUPPORTED, u->off, "filter '%.*s'", (int)(u->n > 40 ? 40 : u->n), u->s), NULL;
            if (is_op(peek(c), "(")) return fail(c, TP_ERR_UNSUPPORTED, peek(c)->off, "filter arguments"), NULL;
            if (!(x = mk(c, E_FILTER, u->off, x, NULL))) return NULL;
            x->op = f, filtered = true;
        } else if (with_filter && is_name(t, "is")) {
            next(c);
            bool negate = is_name(peek(c), "not");
            if (negate) next(c);
            tok *u = next(c);
            if (u->k != T_NAME) return fail_at(c, u, TP_ERR_FORMAT, "expected a test name"), NULL;
            int f = -1;
            for (int k = 0; k < 5; k++)
                if (eq(u->s, u->n, tests[k])) f = k;
            if (f < 0) return fail(c, TP_ERR_UNSUPPORTED, u->off, "test '%.*s'", (int)(u->n > 40 ? 40 : u->n), u->s), NULL;
            tok *a = peek(c);
            if (is_op(a, "(") || is_op(a, "[") || is_op(a, "{") || a->k == T_STR || a->k == T_INT ||
                (a->k == T_NAME && !is_name(a, "else") && !is_name(a, "or") && !is_name(a, "and")))
                return fail(c, TP_ERR_UNSUPPORTED, a->off, "test arguments"), NULL;
            if (!(x = mk(c, E_TEST, u->off, x, NULL))) return NULL;
            x->op = f + (negate ? 16 : 0), filtered = true;
        } else {
            return x;
        }
    }
    return NULL;
}

static node *parse_unary(ct *c, bool with_filter)
{
    tok *t = peek(c);
    node *x;
    if (++c->depth > CHAT_TEMPLATE_MAX_DEPTH)
        return fail(c, TP_ERR_UNSUPPORTED, t->off, "expression nested deeper than %d", CHAT_TEMPLATE_MAX_DEPTH), NULL;
    if (is_op(t, "-") || is_op(t, "+")) {
        next(c);
        x = parse_unary(c, false);
        if (x && t->s[0] == '-') x = mk(c, E_NEG, t->off, x, NULL);
    } else {
        x = parse_primary(c);
    }
    x = parse_postfix(c, x, with_filter);
    c->depth--;
    return x;
}

/* Binary levels, loosest first: or, and, (not), comparisons, + -, ~, then * / // % ** (refused). */
static node *parse_level(ct *c, int level)
{
    if (level == 2 && is_name(peek(c), "not")) {
        tok *t = next(c);
        if (++c->depth > CHAT_TEMPLATE_MAX_DEPTH)
            return fail(c, TP_ERR_UNSUPPORTED, t->off, "expression nested deeper than %d", CHAT_TEMPLATE_MAX_DEPTH), NULL;
        node *x = parse_level(c, 2);
        c->depth--;
        return x ? mk(c, E_NOT, t->off, x, NULL) : NULL;
    }
    if (level == 5) {
        node *x = parse_unary(c, true);
        tok *t = peek(c);
        if (x && t->k == T_OP && (eq(t->s, t->n, "*") || eq(t->s, t->n, "/") || eq(t->s, t->n, "//") ||
                                  eq(t->s, t->n, "%") || eq(t->s, t->n, "**")))
            return fail(c, TP_ERR_UNSUPPORTED, t->off, "operator '%.*s'", (int)t->n, t->s), NULL;
        return x;
    }
    node *x = parse_level(c, level + 1);
    for (int ops = 0; x;) {
        tok *t = peek(c);
        int op = -1;
        size_t off = t->off;
        if (level == 0 && is_name(t, "or")) op = OP_OR;
        else if (level == 1 && is_name(t, "and")) op = OP_AND;
        else if (level == 2) {
            static const char *const cmp[] = {"==", "!=", "<", "<=", ">", ">="};
            for (int k = 0; k < 6; k++)
                if (is_op(t, cmp[k])) op = OP_EQ + k;
            if (is_name(t, "in")) op = OP_IN;
            if (is_name(t, "not") && is_name(&c->toks[c->pos + 1], "in")) op = OP_NOTIN, next(c);
            if (op >= 0 && ops++) return fail(c, TP_ERR_UNSUPPORTED, off, "chained comparison"), NULL;
        } else if (level == 3 && (is_op(t, "+") || is_op(t, "-"))) op = t->s[0] == '+' ? OP_ADD : OP_SUB;
        else if (level == 4 && is_op(t, "~")) op = OP_CAT;
        if (op < 0) return x;
        next(c);
        node *y = parse_level(c, level + 1);
        if (!y || !(x = mk(c, E_BIN, off, x, y))) return NULL;
        x->op = op;
    }
    return NULL;
}

static node *parse_expr(ct *c)
{
    node *x = parse_level(c, 0);
    if (x && is_name(peek(c), "if")) return fail(c, TP_ERR_UNSUPPORTED, peek(c)->off, "conditional expression"), NULL;
    return x;
}

static bool expect_end(ct *c)
{
    tok *t = next(c);
    return t->k == T_END ? true : fail_at(c, t, TP_ERR_FORMAT, "expected the end of the tag");
}

/* Statements up to EOF (ends NULL) or up to a {% name %} with name in ends ("a|b|"), after which the parser
 * stands (*which: that name's token). open: the offset of the block that the body belongs to. */
static node *parse_body(ct *c, const char *ends, size_t open, tok **which, bool *ok);

static node *parse_stmt_block(ct *c, tok *open)
{
    tok *t = next(c);
    node *x = NULL;
    bool ok = true;
    if (t->k != T_NAME) return fail_at(c, t, TP_ERR_FORMAT, "expected a tag name"), NULL;
    if (is_name(t, "set")) {
        tok *name = next(c);
        if (name->k != T_NAME) return fail_at(c, name, TP_ERR_FORMAT, "expected a name after 'set'"), NULL;
        tok *u = peek(c);
        if (is_op(u, ",") || is_op(u, ".") || u->k == T_END)
            return fail(c, TP_ERR_UNSUPPORTED, u->off, "%s", u->k == T_END ? "block set" : "set of a tuple or an attribute"), NULL;
        if (!is_op(u, "=")) return fail_at(c, u, TP_ERR_FORMAT, "expected '='"), NULL;
        next(c);
        node *v = parse_expr(c);
        if (!v || !expect_end(c) || !(x = mk(c, N_SET, t->off, v, NULL))) return NULL;
        x->s = name->s, x->n = name->n;
        return x;
    }
    if (is_name(t, "if")) {
        node *first = NULL, **slot = &first;
        for (tok *w = t;;) { /* an elif is an N_IF with i = 1 in its predecessor's else slot */
            node *cond = parse_expr(c);
            if (!cond || !expect_end(c)) return NULL;
            node *body = parse_body(c, "elif|else|endif|", open->off, &w, &ok);
            if (!ok || !(x = mk(c, N_IF, t->off, cond, NULL))) return NULL;
            x->b = body, x->i = first != NULL, *slot = x, slot = &x->c;
            if (is_name(w, "elif")) continue;
            if (is_name(w, "else")) {
                if (!expect_end(c)) return NULL;
                *slot = parse_body(c, "endif|", open->off, &w, &ok);
                if (!ok) return NULL;
            }
            return expect_end(c) ? first : NULL;
        }
    }
    if (is_name(t, "for")) {
        tok *target = next(c), *w;
        if (target->k != T_NAME) return fail_at(c, target, TP_ERR_FORMAT, "expected a name after 'for'"), NULL;
        if (is_op(peek(c), ",")) return fail(c, TP_ERR_UNSUPPORTED, peek(c)->off, "tuple loop target"), NULL;
        tok *in = next(c);
        if (!is_name(in, "in")) return fail_at(c, in, TP_ERR_FORMAT, "expected 'in'"), NULL;
        node *iter = parse_level(c, 0);
        if (!iter) return NULL;
        if (is_name(peek(c), "if") || is_name(peek(c), "recursive"))
            return fail(c, TP_ERR_UNSUPPORTED, peek(c)->off, "loop '%.*s'", (int)peek(c)->n, peek(c)->s), NULL;
        if (!expect_end(c)) return NULL;
        node *body = parse_body(c, "else|endfor|", open->off, &w, &ok);
        if (!ok || !(x = mk(c, N_FOR, t->off, iter, NULL))) return NULL;
        x->b = body, x->s = target->s, x->n = target->n;
        if (is_name(w, "else")) {
            if (!expect_end(c)) return NULL;
            x->c = parse_body(c, "endfor|", open->off, &w, &ok);
            if (!ok) return NULL;
        }
        return expect_end(c) ? x : NULL;
    }
    static const char *const known[] = {"macro", "call", "filter", "include", "import", "from", "extends", "block",
                                        "with", "autoescape", "raw", "break", "continue", "do", "generation", "trans"};
    for (size_t k = 0; k < sizeof known / sizeof *known; k++)
        if (is_name(t, known[k])) return fail(c, TP_ERR_UNSUPPORTED, t->off, "'%s' statement", known[k]), NULL;
    return fail(c, TP_ERR_FORMAT, t->off, "unexpected tag '%.*s'", (int)(t->n > 40 ? 40 : t->n), t->s), NULL;
}

static node *parse_body(ct *c, const char *ends, size_t open, tok **which, bool *ok)
{
    node *first = NULL, **slot = &first;
    *ok = false;
    if (++c->depth > CHAT_TEMPLATE_MAX_DEPTH)
        return fail(c, TP_ERR_UNSUPPORTED, open, "blocks nested deeper than %d", CHAT_TEMPLATE_MAX_DEPTH), NULL;
    for (;;) {
        tok *t = next(c);
        node *x;
        if (t->k == T_EOF) {
            if (ends) { /* the last name of ends closes the block */
                const char *e = ends + strlen(ends) - 1;
                while (e > ends && e[-1] != '|') e--;
                return fail(c, TP_ERR_FORMAT, open, "block not closed (no %.*s)", (int)strcspn(e, "|"), e), NULL;
            }
            break;
        }
        if (t->k == T_TEXT) {
            if (!(x = mk(c, N_TEXT, t->off, NULL, NULL))) return NULL;
            x->s = t->s, x->n = t->n;
        } else if (t->k == T_VAR) {
            node *e = parse_expr(c);
            if (!e || !expect_end(c) || !(x = mk(c, N_OUT, t->off, e, NULL))) return NULL;
        } else if (t->k == T_BLOCK) {
            tok *u = peek(c);
            if (u->k == T_NAME && ends) {
                for (const char *e = ends; *e; e += strcspn(e, "|") + 1)
                    if (u->n == strcspn(e, "|") && memcmp(u->s, e, u->n) == 0) {
                        *which = next(c);
                        c->depth--;
                        *ok = true;
                        return first;
                    }
            }
            if (!(x = parse_stmt_block(c, t))) return NULL;
        } else {
            return fail_at(c, t, TP_ERR_FORMAT, "unexpected token"), NULL;
        }
        *slot = x, slot = &x->next;
    }
    c->depth--;
    *ok = true;
    return first;
}

/* ---- values ---- */

static value mkv(vkind k) { return (value){k, 0, 0, 0, NULL, 0}; }
static value int_v(int64_t i) { value v = mkv(V_INT); v.i = i; return v; }
static value bool_v(bool b) { value v = mkv(V_BOOL); v.i = b; return v; }
static value str_v(const char *s, size_t n) { value v = mkv(V_STR); v.s = s, v.n = n; return v; }

static const char *kind_name(vkind k)
{
    static const char *const names[] = {"undefined", "none", "bool", "int", "string", "list", "dict", "list", "dict", "loop"};
    return names[k];
}

static int n_parts(const ct *c, int m) { return c->msgs[m].n_images + (c->msgs[m].text != NULL); }

static size_t n_chars(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xc0) != 0x80;
    return k;
}

/* The byte length of the character at s[i]. */
static size_t char_len(const char *s, size_t n, size_t i)
{
    size_t j = i + 1;
    while (j < n && ((unsigned char)s[j] & 0xc0) == 0x80) j++;
    return j - i;
}

static bool truthy(const ct *c, value v)
{
    switch (v.k) {
    case V_UNDEF: case V_NONE: return false;
    case V_BOOL: case V_INT: return v.i != 0;
    case V_STR: return v.n > 0;
    case V_MSGS: return c->n_msgs > 0;
    case V_PARTS: return n_parts(c, v.m) > 0;
    default: return true;
    }
}

static bool part_text(const ct *c, value v, const char **s, size_t *n)
{
    if (v.p < c->msgs[v.m].n_images) return false;
    *s = c->msgs[v.m].text, *n = strlen(*s);
    return true;
}

static bool v_eq(const ct *c, value a, value b)
{
    bool ai = a.k == V_INT || a.k == V_BOOL, bi = b.k == V_INT || b.k == V_BOOL;
    if (ai || bi) return ai && bi && a.i == b.i;
    if (a.k != b.k) return false;
    switch (a.k) {
    case V_STR: return a.n == b.n && memcmp(a.s, b.s, a.n) == 0;
    case V_MSG: {
        const tp_chat_message *x = &c->msgs[a.m], *y = &c->msgs[b.m];
        return strcmp(x->role, y->role) == 0 && x->n_images == y->n_images && !x->text == !y->text &&
               (!x->text || strcmp(x->text, y->text) == 0);
    }
    case V_PARTS: {
        const tp_chat_message *x = &c->msgs[a.m], *y = &c->msgs[b.m];
        return x->n_images == y->n_images && !x->text == !y->text && (!x->text || strcmp(x->text, y->text) == 0);
    }
    case V_PART: {
        const char *s, *t;
        size_t n, m;
        bool ta = part_text(c, a, &s, &n), tb = part_text(c, b, &t, &m);
        return ta == tb && (!ta || (n == m && memcmp(s, t, n) == 0));
    }
    case V_LOOP: return a.i == b.i && a.n == b.n;
    default: return true; /* undefined, none, the messages */
    }
}

/* ---- rendering ---- */

static bool emit(ct *c, const char *s, size_t n, size_t off)
{
    if (n > TP_CHAT_TEMPLATE_MAX_OUTPUT - c->out_n)
        return fail(c, TP_ERR_UNSUPPORTED, off, "output longer than %d bytes", TP_CHAT_TEMPLATE_MAX_OUTPUT);
    if (c->out_n + n + 1 > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_n + n + 1) cap *= 2;
        char *o = realloc(c->out, cap);
        if (!o) return fail(c, TP_ERR_OUT_OF_MEMORY, off, "out of memory");
        c->out = o, c->out_cap = cap;
    }
    if (n) memcpy(c->out + c->out_n, s, n);
    c->out_n += n;
    return true;
}

/* v as {{ }} prints it (into an arena string when it is a number). */
static bool to_str(ct *c, value v, size_t off, const char **s, size_t *n)
{
    char buf[24];
    switch (v.k) {
    case V_STR: *s = v.s, *n = v.n; return true;
    case V_UNDEF: *s = "", *n = 0; return true;
    case V_NONE: *s = "None", *n = 4; return true;
    case V_BOOL: *s = v.i ? "True" : "False", *n = strlen(*s); return true;
    case V_INT: {
        *n = (size_t)snprintf(buf, sizeof buf, "%lld", (long long)v.i);
        char *d = alloc(c, *n, off);
        if (!d) return false;
        memcpy(d, buf, *n);
        *s = d;
        return true;
    }
    default: return fail(c, TP_ERR_UNSUPPORTED, off, "printing a %s", kind_name(v.k));
    }
}

static bool concat(ct *c, const char *a, size_t na, const char *b, size_t nb, size_t off, value *r)
{
    if (na + nb > TP_CHAT_TEMPLATE_MAX_OUTPUT)
        return fail(c, TP_ERR_UNSUPPORTED, off, "string longer than %d bytes", TP_CHAT_TEMPLATE_MAX_OUTPUT);
    char *d = alloc(c, na + nb + 1, off);
    if (!d) return false;
    if (na) memcpy(d, a, na);
    if (nb) memcpy(d + na, b, nb);
    *r = str_v(d, na + nb);
    return true;
}

static bool lookup(ct *c, const char *name, size_t n, value *v)
{
    for (int k = c->n_vars - 1; k >= 0; k--)
        if (c->vars[k].n == n && memcmp(c->vars[k].name, name, n) == 0) return *v = c->vars[k].v, true;
    return false;
}

/* Assign in the innermost scope (jinja2: a set inside a loop lasts one iteration). */
static bool assign(ct *c, const char *name, size_t n, value v, size_t off)
{
    for (int k = c->n_vars - 1; k >= c->frame; k--)
        if (c->vars[k].n == n && memcmp(c->vars[k].name, name, n) == 0) return c->vars[k].v = v, true;
    if (c->n_vars == CHAT_TEMPLATE_MAX_VARS)
        return fail(c, TP_ERR_UNSUPPORTED, off, "more than %d variables", CHAT_TEMPLATE_MAX_VARS);
    c->vars[c->n_vars++] = (var){name, n, v};
    return true;
}

/* obj.name / obj["name"] / obj[i] as jinja2's sandbox resolves them on our data. */
static bool get_item(ct *c, value o, value key, size_t off, value *r)
{
    *r = mkv(V_UNDEF);
    if (o.k == V_UNDEF) return fail(c, TP_ERR_FORMAT, off, "attribute or item of an undefined value");
    if (key.k == V_INT || key.k == V_BOOL) {
        int64_t len = o.k == V_MSGS ? c->n_msgs : o.k == V_PARTS ? n_parts(c, o.m) : o.k == V_STR ? (int64_t)n_chars(o.s, o.n) : -1;
        int64_t i = key.i < 0 ? key.i + len : key.i;
        if (len < 0 || i < 0 || i >= len) return true;
        if (o.k == V_MSGS) r->k = V_MSG, r->m = (int32_t)i;
        else if (o.k == V_PARTS) r->k = V_PART, r->m = o.m, r->p = (int32_t)i;
        else {
            size_t b = 0;
            for (int64_t k = 0; k < i; k++) b += char_len(o.s, o.n, b);
            *r = str_v(o.s + b, char_len(o.s, o.n, b));
        }
        return true;
    }
    if (key.k != V_STR) return true;
    const char *k = key.s;
    size_t n = key.n;
    static const char *const methods[] = {"get", "items", "keys", "values", "pop", "update", "copy", "clear",
                                          "setdefault", "popitem", "fromkeys", "append", "extend", "index",
                                          "count", "insert", "remove", "reverse", "sort"};
    for (size_t m = 0; m < sizeof methods / sizeof *methods; m++)
        if ((o.k == V_MSGS || o.k == V_MSG || o.k == V_PARTS || o.k == V_PART) && eq(k, n, methods[m]))
            return fail(c, TP_ERR_UNSUPPORTED, off, "method '%s' of a %s", methods[m], kind_name(o.k));
    if (o.k == V_STR) return fail(c, TP_ERR_UNSUPPORTED, off, "attribute '%.*s' of a string", (int)(n > 40 ? 40 : n), k);
    if (o.k == V_MSG && eq(k, n, "role")) *r = str_v(c->msgs[o.m].role, strlen(c->msgs[o.m].role));
    else if (o.k == V_MSG && eq(k, n, "content")) r->k = V_PARTS, r->m = o.m;
    else if (o.k == V_PART && eq(k, n, "type"))
        *r = o.p < c->msgs[o.m].n_images ? str_v("image", 5) : str_v("text", 4);
    else if (o.k == V_PART && eq(k, n, "text") && o.p >= c->msgs[o.m].n_images)
        *r = str_v(c->msgs[o.m].text, strlen(c->msgs[o.m].text));
    else if (o.k == V_LOOP) {
        static const char *const attrs[] = {"index0", "index", "revindex0", "revindex", "first", "last", "length"};
        int64_t vals[] = {o.i, o.i + 1, (int64_t)o.n - o.i - 1, (int64_t)o.n - o.i, o.i == 0, o.i + 1 == (int64_t)o.n, (int64_t)o.n};
        for (int a = 0; a < 7; a++)
            if (eq(k, n, attrs[a])) return *r = a == 4 || a == 5 ? bool_v(vals[a] != 0) : int_v(vals[a]), true;
        return fail(c, TP_ERR_UNSUPPORTED, off, "loop.%.*s", (int)(n > 40 ? 40 : n), k);
    }
    return true;
}

static bool eval(ct *c, const node *x, value *r);

static bool eval_bin(ct *c, const node *x, value *r)
{
    value a, b;
    if (!eval(c, x->a, &a)) return false;
    if (x->op == OP_AND || x->op == OP_OR) { /* short-circuit: the value of the deciding operand */
        if (truthy(c, a) == (x->op == OP_OR)) return *r = a, true;
        return eval(c, x->b, r);
    }
    if (!eval(c, x->b, &b)) return false;
    bool ai = a.k == V_INT || a.k == V_BOOL, bi = b.k == V_INT || b.k == V_BOOL;
    const char *sa, *sb;
    size_t na, nb;
    switch (x->op) {
    case OP_CAT:
        return to_str(c, a, x->off, &sa, &na) && to_str(c, b, x->off, &sb, &nb) && concat(c, sa, na, sb, nb, x->off, r);
    case OP_ADD: case OP_SUB:
        if (a.k == V_UNDEF || b.k == V_UNDEF) return fail(c, TP_ERR_FORMAT, x->off, "arithmetic on an undefined value");
        if (x->op == OP_ADD && a.k == V_STR && b.k == V_STR) return concat(c, a.s, a.n, b.s, b.n, x->off, r);
        if (!ai || !bi) return fail(c, TP_ERR_FORMAT, x->off, "'%c' on a %s and a %s", x->op == OP_ADD ? '+' : '-', kind_name(a.k), kind_name(b.k));
        if (x->op == OP_ADD ? __builtin_add_overflow(a.i, b.i, &r->i) : __builtin_sub_overflow(a.i, b.i, &r->i))
            return fail(c, TP_ERR_UNSUPPORTED, x->off, "integer beyond 64 bits");
        return *r = int_v(r->i), true;
    case OP_EQ: case OP_NE:
        return *r = bool_v(v_eq(c, a, b) == (x->op == OP_EQ)), true;
    case OP_LT: case OP_LE: case OP_GT: case OP_GE: {
        if (a.k == V_UNDEF || b.k == V_UNDEF) return fail(c, TP_ERR_FORMAT, x->off, "comparison with an undefined value");
        int d;
        if (ai && bi) d = (a.i > b.i) - (a.i < b.i);
        else if (a.k == V_STR && b.k == V_STR) {
            d = memcmp(a.s, b.s, a.n < b.n ? a.n : b.n);
            if (!d) d = (a.n > b.n) - (a.n < b.n);
        } else return fail(c, TP_ERR_FORMAT, x->off, "ordering of a %s and a %s", kind_name(a.k), kind_name(b.k));
        bool t = x->op == OP_LT ? d < 0 : x->op == OP_LE ? d <= 0 : x->op == OP_GT ? d > 0 : d >= 0;
        return *r = bool_v(t), true;
    }
    default: { /* in, not in */
        bool found = false;
        if (b.k == V_STR) {
            if (a.k != V_STR) return fail(c, TP_ERR_FORMAT, x->off, "'in <string>' needs a string, not a %s", kind_name(a.k));
            for (size_t i = 0; !found && i + a.n <= b.n; i++) found = memcmp(b.s + i, a.s, a.n) == 0;
        } else if (b.k == V_MSGS || b.k == V_PARTS) {
            int len = b.k == V_MSGS ? c->n_msgs : n_parts(c, b.m);
            for (int i = 0; !found && i < len; i++) {
                value e = b;
                e.k = b.k == V_MSGS ? V_MSG : V_PART;
                if (b.k == V_MSGS) e.m = i; else e.p = i;
                found = v_eq(c, a, e);
            }
        } else if (b.k == V_MSG || b.k == V_PART) {
            found = a.k == V_STR && (b.k == V_MSG ? eq(a.s, a.n, "role") || eq(a.s, a.n, "content")
                                                   : eq(a.s, a.n, "type") || (eq(a.s, a.n, "text") && b.p >= c->msgs[b.m].n_images));
        } else if (b.k != V_UNDEF) {
            return fail(c, b.k == V_LOOP ? TP_ERR_UNSUPPORTED : TP_ERR_FORMAT, x->off, "'in' a %s", kind_name(b.k));
        }
        return *r = bool_v(found == (x->op == OP_IN)), true;
    }
    }
}

static bool eval(ct *c, const node *x, value *r)
{
    if (++c->steps > MAX_STEPS) return fail(c, TP_ERR_UNSUPPORTED, x->off, "more than %d evaluation steps", MAX_STEPS);
    value a;
    switch (x->k) {
    case E_STR: return *r = str_v(x->s, x->n), true;
    case E_INT: return *r = int_v(x->i), true;
    case E_BOOL: return *r = bool_v(x->i != 0), true;
    case E_NONE: return *r = mkv(V_NONE), true;
    case E_NAME: if (!lookup(c, x->s, x->n, r)) *r = mkv(V_UNDEF); return true;
    case E_ATTR: return eval(c, x->a, &a) && get_item(c, a, str_v(x->s, x->n), x->off, r);
    case E_ITEM: {
        value k;
        return eval(c, x->a, &a) && eval(c, x->b, &k) && get_item(c, a, k, x->off, r);
    }
    case E_BIN: return eval_bin(c, x, r);
    case E_NOT: return eval(c, x->a, &a) && (*r = bool_v(!truthy(c, a)), true);
    case E_NEG:
        if (!eval(c, x->a, &a)) return false;
        if ((a.k != V_INT && a.k != V_BOOL) || a.i == INT64_MIN)
            return fail(c, a.k == V_INT ? TP_ERR_UNSUPPORTED : TP_ERR_FORMAT, x->off, "unary '-' on a %s", kind_name(a.k));
        return *r = int_v(-a.i), true;
    case E_TEST: {
        if (!eval(c, x->a, &a)) return false;
        int t = x->op & 15;
        bool v = t == 0 ? a.k != V_UNDEF : t == 1 ? a.k == V_UNDEF : t == 2 ? a.k == V_NONE : t == 3 ? a.k == V_STR
                                                                                                    : a.k == V_INT || a.k == V_BOOL;
        return *r = bool_v(v != (x->op >= 16)), true;
    }
    case E_FILTER: {
        if (!eval(c, x->a, &a)) return false;
        if (x->op == 0) { /* trim: Python's str.strip() */
            const char *s;
            size_t n;
            if (!to_str(c, a, x->off, &s, &n)) return false;
            size_t b = skip_ws(s, n, 0), e = rstrip(s, b, n);
            return *r = str_v(s + b, e - b), true;
        }
        int64_t len = a.k == V_STR ? (int64_t)n_chars(a.s, a.n) : a.k == V_MSGS ? c->n_msgs : a.k == V_PARTS ? n_parts(c, a.m)
                      : a.k == V_MSG ? 2 : a.k == V_PART ? 1 + (a.p >= c->msgs[a.m].n_images) : a.k == V_UNDEF ? 0 : -1;
        if (len < 0) return fail(c, a.k == V_LOOP ? TP_ERR_UNSUPPORTED : TP_ERR_FORMAT, x->off, "length of a %s", kind_name(a.k));
        return *r = int_v(len), true;
    }
    default: return fail(c, TP_ERR_INTERNAL, x->off, "node %d in an expression", (int)x->k);
    }
}

static bool render(ct *c, const node *x);

static bool render_for(ct *c, const node *x)
{
    value it;
    if (!eval(c, x->a, &it)) return false;
    int64_t len;
    switch (it.k) {
    case V_UNDEF: len = 0; break;
    case V_MSGS: len = c->n_msgs; break;
    case V_PARTS: len = n_parts(c, it.m); break;
    case V_STR: len = (int64_t)n_chars(it.s, it.n); break;
    case V_NONE: case V_BOOL: case V_INT: return fail(c, TP_ERR_FORMAT, x->a->off, "a %s is not iterable", kind_name(it.k));
    default: return fail(c, TP_ERR_UNSUPPORTED, x->a->off, "iterating over a %s", kind_name(it.k));
    }
    size_t byte = 0;
    for (int64_t i = 0; i < len; i++) {
        if (++c->iterations > CHAT_TEMPLATE_MAX_ITERATIONS)
            return fail(c, TP_ERR_UNSUPPORTED, x->off, "more than %d loop iterations", CHAT_TEMPLATE_MAX_ITERATIONS);
        value e = it, loop = mkv(V_LOOP);
        if (it.k == V_MSGS) e.k = V_MSG, e.m = (int32_t)i;
        else if (it.k == V_PARTS) e.k = V_PART, e.p = (int32_t)i;
        else e = str_v(it.s + byte, char_len(it.s, it.n, byte)), byte += e.n;
        loop.i = i, loop.n = (size_t)len;
        int saved_n = c->n_vars, saved_frame = c->frame;
        c->frame = c->n_vars;
        bool ok = assign(c, x->s, x->n, e, x->off) && assign(c, "loop", 4, loop, x->off) && render(c, x->b);
        c->n_vars = saved_n, c->frame = saved_frame;
        if (!ok) return false;
    }
    if (len == 0 && x->c) {
        int saved_n = c->n_vars, saved_frame = c->frame;
        c->frame = c->n_vars;
        bool ok = render(c, x->c);
        c->n_vars = saved_n, c->frame = saved_frame;
        return ok;
    }
    return true;
}

/* A statement list. */
static bool render(ct *c, const node *x)
{
    for (; x; x = x->next) {
        value v;
        const char *s;
        size_t n;
        switch (x->k) {
        case N_TEXT: if (!emit(c, x->s, x->n, x->off)) return false; break;
        case N_OUT: if (!eval(c, x->a, &v) || !to_str(c, v, x->off, &s, &n) || !emit(c, s, n, x->off)) return false; break;
        case N_SET: if (!eval(c, x->a, &v) || !assign(c, x->s, x->n, v, x->off)) return false; break;
        case N_IF: {
            const node *b = x, *body;
            for (;;) { /* the if, then each elif (an N_IF with i = 1 in the else slot), then the else body */
                if (!eval(c, b->a, &v)) return false;
                if (truthy(c, v)) { body = b->b; break; }
                if (b->c && b->c->k == N_IF && b->c->i == 1) { b = b->c; continue; }
                body = b->c;
                break;
            }
            if (body && !render(c, body)) return false;
            break;
        }
        case N_FOR: if (!render_for(c, x)) return false; break;
        default: return fail(c, TP_ERR_INTERNAL, x->off, "node %d as a statement", (int)x->k);
        }
    }
    return true;
}

tp_status tp_chat_template_render(const char *tmpl, size_t tmpl_len, const tp_chat_message *messages, int n_messages,
                                  const tp_chat_template_vars *vars, char **out, size_t *out_len, tp_error *err)
{
    if (out) *out = NULL;
    if (out_len) *out_len = 0;
    if ((!tmpl && tmpl_len) || !out || n_messages < 0 || (n_messages > 0 && !messages)) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_chat_template_render: NULL template, out or messages, or a negative count");
        return TP_ERR_INVALID_ARGUMENT;
    }
    for (int i = 0; i < n_messages; i++)
        if (!messages[i].role || messages[i].n_images < 0 || messages[i].n_images > MAX_IMAGES) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_chat_template_render: message %d has no role or %d images (0..%d)",
                         i, messages[i].n_images, MAX_IMAGES);
            return TP_ERR_INVALID_ARGUMENT;
        }
    if (tmpl_len > MAX_TEMPLATE) {
        tp_error_set(err, TP_ERR_UNSUPPORTED, "tp_chat_template_render: a template of %zu bytes (at most %u)", tmpl_len, MAX_TEMPLATE);
        return TP_ERR_UNSUPPORTED;
    }
    ct *c = calloc(1, sizeof *c);
    char *src = malloc(tmpl_len + 1);
    if (!c || !src) {
        free(c), free(src);
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_chat_template_render: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    size_t n = 0; /* line breaks as "\n" (jinja2's lexer), one trailing newline dropped */
    for (size_t i = 0; i < tmpl_len; i++) {
        if (tmpl[i] == '\r') {
            src[n++] = '\n';
            if (i + 1 < tmpl_len && tmpl[i + 1] == '\n') i++;
        } else {
            src[n++] = tmpl[i];
        }
    }
    if (n && src[n - 1] == '\n') n--;
    c->src = src, c->len = n, c->err = err, c->msgs = messages, c->n_msgs = n_messages;
    /* the variables transformers' render_jinja_template passes (tools and documents: None) */
    assign(c, "messages", 8, mkv(V_MSGS), 0);
    assign(c, "tools", 5, mkv(V_NONE), 0);
    assign(c, "documents", 9, mkv(V_NONE), 0);
    assign(c, "add_generation_prompt", 21, bool_v(vars && vars->add_generation_prompt), 0);
    if (vars && vars->bos_token) assign(c, "bos_token", 9, str_v(vars->bos_token, strlen(vars->bos_token)), 0);
    if (vars && vars->eos_token) assign(c, "eos_token", 9, str_v(vars->eos_token, strlen(vars->eos_token)), 0);
    lex(c);
    bool ok;
    node *root = c->status == TP_OK ? parse_body(c, NULL, 0, NULL, &ok) : NULL;
    if (c->status == TP_OK && render(c, root) && emit(c, "", 0, 0)) {
        c->out[c->out_n] = '\0';
        *out = c->out, c->out = NULL;
        if (out_len) *out_len = c->out_n;
    }
    tp_status st = c->status;
    for (block *b = c->arena, *nb; b; b = nb) nb = b->next, free(b);
    free(c->toks), free(c->out), free(src), free(c);
    return st;
}
