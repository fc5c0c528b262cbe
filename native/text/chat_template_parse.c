/* chat_template_parse.c - a chat template into a tree: the lexer (the text between tags with jinja2's whitespace
 * control, trim_blocks and lstrip_blocks applied as its lexer applies them; the tokens inside {{ }} and {% %};
 * comments dropped) and a recursive-descent parser with jinja2's precedence. A lexing error becomes an ERROR
 * token, so that errors come out in source order: the parser reports whichever it meets first. */
#include "chat_template_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- errors, arena ---- */

static void linecol(const ct *c, size_t off, int *line, int *col)
{
    *line = 1;
    size_t bol = 0;
    for (size_t i = 0; i < off && i < c->len; i++)
        if (c->src[i] == '\n') (*line)++, bol = i + 1;
    *col = (int)(off - bol) + 1;
}

/* Record the first error, "chat template line L:C: ...". Returns false for `return ct_fail(...)`. */
bool ct_fail(ct *c, tp_status st, size_t off, const char *fmt, ...)
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

void *ct_alloc(ct *c, size_t n, size_t off)
{
    if (n <= MAX_ARENA) n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (n > MAX_ARENA || c->arena_bytes > MAX_ARENA - n) {
        ct_fail(c, TP_ERR_UNSUPPORTED, off, "the template needs more than %u bytes of memory", MAX_ARENA);
        return NULL;
    }
    block *b = c->arena;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof(block) + cap);
        if (!b) {
            ct_fail(c, TP_ERR_OUT_OF_MEMORY, off, "out of memory");
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

size_t ct_skip_ws(const char *s, size_t n, size_t i)
{
    size_t l;
    while (i < n && (l = ws_at(s, n, i)) > 0) i += l;
    return i;
}

size_t ct_rstrip(const char *s, size_t start, size_t end)
{
    size_t l;
    while (end > start && (l = ws_before(s, start, end)) > 0) end -= l;
    return end;
}


static bool is_alpha(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_'; }
static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

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
        if (!t) return ct_fail(c, TP_ERR_OUT_OF_MEMORY, off, "out of memory");
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
    char *d = ct_alloc(c, j - i, i);
    if (!d) return false;
    size_t n = 0;
    for (size_t k = i + 1; k < j; k++) {
        if (s[k] != '\\') { d[n++] = s[k]; continue; }
        char e = s[++k];
        static const char simple[] = "\\\\''\"\"a\ab\bf\fn\nr\rt\tv\v";
        const char *m = e ? strchr(simple, e) : NULL;
        if (m && (m - simple) % 2 == 0) { d[n++] = m[1]; continue; }
        if (e == '\n') continue;
        if ((unsigned char)e >= 0x80) return lex_error(c, TP_ERR_UNSUPPORTED, k - 1, "escape sequence of a non-ASCII character");
        if (e == 'N') return lex_error(c, TP_ERR_UNSUPPORTED, k - 1, "escape sequence '\\N' in a string");
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
        if (v > (INT64_MAX - (s[j] - '0')) / 10) big = true;
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
            else if (i + 2 < n && s[i] == '-' && s[i + 1] == e[0] && s[i + 2] == e[1]) end = ct_skip_ws(s, n, i + 3);
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
    return a < b && ct_skip_ws(s, b, a) == b;
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
            te = ct_rstrip(s, p, t);
        } else if (sign != '+' && kind != '{') { /* lstrip_blocks */
            size_t l = t;
            while (l > p && s[l - 1] != '\n') l--;
            if ((l > p || line_starting) && all_ws(s, l, t)) te = l;
        }
        if (te > p && !push_tok(c, T_TEXT, p, s + p, te - p, 0)) return;
        if (kind == '#') {
            size_t j = q;
            while (j + 1 < n && !(s[j] == '#' && s[j + 1] == '}')) j++;
            if (j + 1 >= n && q >= n) break; /* "{#" ending the template: jinja2's lexer just stops */
            if (j + 1 >= n) {
                lex_error(c, TP_ERR_FORMAT, t, "comment not closed (#})");
                return;
            }
            if (j > q && s[j - 1] == '-') p = ct_skip_ws(s, n, j + 2);
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

static const char *const tests[] = {"defined", "undefined", "none", "string", "number"};
static const char *const filters[] = {"trim", "length"};

static tok *peek(ct *c) { return &c->toks[c->pos]; }
static tok *next(ct *c) { tok *t = &c->toks[c->pos]; if (t->k != T_EOF && t->k != T_ERROR) c->pos++; return t; }
static bool is_op(const tok *t, const char *op) { return t->k == T_OP && ct_eq(t->s, t->n, op); }
static bool is_name(const tok *t, const char *name) { return t->k == T_NAME && ct_eq(t->s, t->n, name); }

/* An error at token t: the lexer's own when t is its ERROR token. */
static bool fail_at(ct *c, const tok *t, tp_status st, const char *what)
{
    if (t->k == T_ERROR) return ct_fail(c, c->lex_status, c->lex_off, "%s", c->lex_msg);
    if (t->k == T_EOF) return ct_fail(c, TP_ERR_FORMAT, t->off, "unexpected end of template (%s)", what);
    if (t->k == T_END) return ct_fail(c, st, t->off, "%s, found the end of the tag", what);
    if (!t->s || t->k == T_TEXT) return ct_fail(c, st, t->off, "%s, found a new tag", what);
    return ct_fail(c, st, t->off, "%s, found '%.*s'", what, ct_clip(t->s, t->n), t->s);
}

static node *mk(ct *c, nkind k, size_t off, node *a, node *b)
{
    node *x = ct_alloc(c, sizeof *x, off);
    if (!x) return NULL;
    memset(x, 0, sizeof *x);
    x->k = k, x->off = off, x->a = a, x->b = b;
    x->height = 1 + (a && a->height > (b ? b->height : 0) ? a->height : b ? b->height : 0);
    if (x->height > MAX_HEIGHT) {
        ct_fail(c, TP_ERR_UNSUPPORTED, off, "expression nested deeper than %d", MAX_HEIGHT);
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
            if (ct_eq(t->s, t->n, lits[k])) {
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
            char *d = ct_alloc(c, x->n + u->n + 1, u->off);
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
        if (is_op(peek(c), ",")) return ct_fail(c, TP_ERR_UNSUPPORTED, peek(c)->off, "tuple"), NULL;
        if (!is_op(peek(c), ")")) return fail_at(c, peek(c), TP_ERR_FORMAT, "expected ')'"), NULL;
        next(c);
        return x;
    }
    if (is_op(t, "[")) return ct_fail(c, TP_ERR_UNSUPPORTED, t->off, "list literal"), NULL;
    if (is_op(t, "{")) return ct_fail(c, TP_ERR_UNSUPPORTED, t->off, "dict literal"), NULL;
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
            if (is_op(peek(c), ":")) return ct_fail(c, TP_ERR_UNSUPPORTED, t->off, "slice"), NULL;
            /* x[] is x[()] in jinja2: a key none of our values has, as none */
            node *k = is_op(peek(c), "]") ? mk(c, E_NONE, t->off, NULL, NULL) : parse_expr(c);
            if (!k) return NULL;
            if (is_op(peek(c), ":") || is_op(peek(c), ",")) return ct_fail(c, TP_ERR_UNSUPPORTED, t->off, "slice or tuple subscript"), NULL;
            if (!is_op(peek(c), "]")) return fail_at(c, peek(c), TP_ERR_FORMAT, "expected ']'"), NULL;
            next(c);
            x = mk(c, E_ITEM, t->off, x, k);
        } else if (is_op(t, "(")) {
            return ct_fail(c, TP_ERR_UNSUPPORTED, t->off, "call"), NULL;
        } else if (with_filter && is_op(t, "|")) {
            next(c);
            tok *u = next(c);
            if (u->k != T_NAME) return fail_at(c, u, TP_ERR_FORMAT, "expected a filter name"), NULL;
            int f = -1;
            for (int k = 0; k < 2; k++)
                if (ct_eq(u->s, u->n, filters[k])) f = k;
            if (f < 0) return ct_fail(c, TP_ERR_UNSUPPORTED, u->off, "filter '%.*s'", ct_clip(u->s, u->n), u->s), NULL;
            if (is_op(peek(c), "(")) return ct_fail(c, TP_ERR_UNSUPPORTED, peek(c)->off, "filter arguments"), NULL;
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
                if (ct_eq(u->s, u->n, tests[k])) f = k;
            if (f < 0) return ct_fail(c, TP_ERR_UNSUPPORTED, u->off, "test '%.*s'", ct_clip(u->s, u->n), u->s), NULL;
            tok *a = peek(c);
            if (is_op(a, "(") || is_op(a, "[") || is_op(a, "{") || a->k == T_STR || a->k == T_INT ||
                (a->k == T_NAME && !is_name(a, "else") && !is_name(a, "or") && !is_name(a, "and")))
                return ct_fail(c, TP_ERR_UNSUPPORTED, a->off, "test arguments"), NULL;
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
        return ct_fail(c, TP_ERR_UNSUPPORTED, t->off, "expression nested deeper than %d", CHAT_TEMPLATE_MAX_DEPTH), NULL;
    if (is_op(t, "-") || is_op(t, "+")) {
        next(c);
        x = parse_unary(c, false);
        if (x && (x = mk(c, E_NEG, t->off, x, NULL))) x->i = t->s[0] == '+'; /* i: unary plus */
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
            return ct_fail(c, TP_ERR_UNSUPPORTED, t->off, "expression nested deeper than %d", CHAT_TEMPLATE_MAX_DEPTH), NULL;
        node *x = parse_level(c, 2);
        c->depth--;
        return x ? mk(c, E_NOT, t->off, x, NULL) : NULL;
    }
    if (level == 5) {
        node *x = parse_unary(c, true);
        tok *t = peek(c);
        if (x && t->k == T_OP && (ct_eq(t->s, t->n, "*") || ct_eq(t->s, t->n, "/") || ct_eq(t->s, t->n, "//") ||
                                  ct_eq(t->s, t->n, "%") || ct_eq(t->s, t->n, "**")))
            return ct_fail(c, TP_ERR_UNSUPPORTED, t->off, "operator '%.*s'", (int)t->n, t->s), NULL;
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
            if (op >= 0 && ops++) return ct_fail(c, TP_ERR_UNSUPPORTED, off, "chained comparison"), NULL;
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
    if (x && is_name(peek(c), "if")) return ct_fail(c, TP_ERR_UNSUPPORTED, peek(c)->off, "conditional expression"), NULL;
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
            return ct_fail(c, TP_ERR_UNSUPPORTED, u->off, "%s", u->k == T_END ? "block set" : "set of a tuple or an attribute"), NULL;
        if (!is_op(u, "=")) return fail_at(c, u, TP_ERR_FORMAT, "expected '='"), NULL;
        if (c->in_for && is_name(name, "loop")) return ct_fail(c, TP_ERR_FORMAT, name->off, "assignment to 'loop' in a for loop"), NULL;
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
        if (is_op(peek(c), ",")) return ct_fail(c, TP_ERR_UNSUPPORTED, peek(c)->off, "tuple loop target"), NULL;
        if (is_name(target, "loop")) return ct_fail(c, TP_ERR_FORMAT, target->off, "'loop' as a for loop's target"), NULL;
        tok *in = next(c);
        if (!is_name(in, "in")) return fail_at(c, in, TP_ERR_FORMAT, "expected 'in'"), NULL;
        node *iter = parse_level(c, 0);
        if (!iter) return NULL;
        if (is_name(peek(c), "if") || is_name(peek(c), "recursive"))
            return ct_fail(c, TP_ERR_UNSUPPORTED, peek(c)->off, "loop '%.*s'", (int)peek(c)->n, peek(c)->s), NULL;
        if (!expect_end(c)) return NULL;
        c->in_for++;
        node *body = parse_body(c, "else|endfor|", open->off, &w, &ok);
        if (!ok || !(x = mk(c, N_FOR, t->off, iter, NULL))) return NULL;
        x->b = body, x->s = target->s, x->n = target->n;
        if (is_name(w, "else")) {
            if (!expect_end(c)) return NULL;
            x->c = parse_body(c, "endfor|", open->off, &w, &ok);
            if (!ok) return NULL;
        }
        c->in_for--;
        return expect_end(c) ? x : NULL;
    }
    static const char *const known[] = {"macro", "call", "filter", "include", "import", "from", "extends", "block",
                                        "with", "autoescape", "raw", "break", "continue", "do", "generation", "trans"};
    for (size_t k = 0; k < sizeof known / sizeof *known; k++)
        if (is_name(t, known[k])) return ct_fail(c, TP_ERR_UNSUPPORTED, t->off, "'%s' statement", known[k]), NULL;
    return ct_fail(c, TP_ERR_FORMAT, t->off, "unexpected tag '%.*s'", ct_clip(t->s, t->n), t->s), NULL;
}

static node *parse_body(ct *c, const char *ends, size_t open, tok **which, bool *ok)
{
    node *first = NULL, **slot = &first;
    *ok = false;
    if (++c->depth > CHAT_TEMPLATE_MAX_DEPTH)
        return ct_fail(c, TP_ERR_UNSUPPORTED, open, "blocks nested deeper than %d", CHAT_TEMPLATE_MAX_DEPTH), NULL;
    for (;;) {
        tok *t = next(c);
        node *x;
        if (t->k == T_EOF) {
            if (ends) { /* the last name of ends closes the block */
                const char *e = ends + strlen(ends) - 1;
                while (e > ends && e[-1] != '|') e--;
                return ct_fail(c, TP_ERR_FORMAT, open, "block not closed (no %.*s)", (int)strcspn(e, "|"), e), NULL;
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

node *ct_parse(ct *c)
{
    bool ok;
    lex(c);
    return c->status == TP_OK ? parse_body(c, NULL, 0, NULL, &ok) : NULL;
}
