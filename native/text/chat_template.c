/* chat_template.c - a GGUF's Jinja chat template rendered as transformers' apply_chat_template renders it
 * (jinja2's ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True), keep_trailing_newline=False),
 * for the subset include/tilepass.h lists: the template, its line breaks made "\n" (as jinja2 normalises them)
 * and one trailing newline dropped, is parsed into a tree (chat_template_parse.c), then rendered here over values
 * that describe the messages without copying them. Every allocation of a render comes from one arena freed at
 * the end; depth, loop iterations, evaluation steps, variables, memory and output are bounded. */
#include "chat_template_impl.h"

#include <stdio.h>
#include <stdlib.h>

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
        return ct_fail(c, TP_ERR_UNSUPPORTED, off, "output longer than %d bytes", TP_CHAT_TEMPLATE_MAX_OUTPUT);
    if (c->out_n + n + 1 > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_n + n + 1) cap *= 2;
        char *o = realloc(c->out, cap);
        if (!o) return ct_fail(c, TP_ERR_OUT_OF_MEMORY, off, "out of memory");
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
        char *d = ct_alloc(c, *n, off);
        if (!d) return false;
        memcpy(d, buf, *n);
        *s = d;
        return true;
    }
    default: return ct_fail(c, TP_ERR_UNSUPPORTED, off, "printing a %s", kind_name(v.k));
    }
}

static bool concat(ct *c, const char *a, size_t na, const char *b, size_t nb, size_t off, value *r)
{
    if (na + nb > TP_CHAT_TEMPLATE_MAX_OUTPUT)
        return ct_fail(c, TP_ERR_UNSUPPORTED, off, "string longer than %d bytes", TP_CHAT_TEMPLATE_MAX_OUTPUT);
    char *d = ct_alloc(c, na + nb + 1, off);
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
        return ct_fail(c, TP_ERR_UNSUPPORTED, off, "more than %d variables", CHAT_TEMPLATE_MAX_VARS);
    c->vars[c->n_vars++] = (var){name, n, v};
    return true;
}

/* obj.name / obj["name"] / obj[i] as jinja2's sandbox resolves them on our data. */
static bool get_item(ct *c, value o, value key, size_t off, value *r)
{
    *r = mkv(V_UNDEF);
    if (o.k == V_UNDEF) return ct_fail(c, TP_ERR_FORMAT, off, "attribute or item of an undefined value");
    if (key.k == V_INT || key.k == V_BOOL) {
        int64_t len = o.k == V_MSGS ? c->n_msgs : o.k == V_PARTS ? n_parts(c, o.m) : o.k == V_STR ? (int64_t)n_chars(o.s, o.n) : -1;
        if (len < 0) return true;
        int64_t i = key.i < 0 ? key.i + len : key.i; /* Python's negative indices */
        if (i < 0 || i >= len) return true;
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
        if ((o.k == V_MSGS || o.k == V_MSG || o.k == V_PARTS || o.k == V_PART) && ct_eq(k, n, methods[m]))
            return ct_fail(c, TP_ERR_UNSUPPORTED, off, "method '%s' of a %s", methods[m], kind_name(o.k));
    if (o.k == V_STR) return ct_fail(c, TP_ERR_UNSUPPORTED, off, "attribute '%.*s' of a string", ct_clip(k, n), k);
    if (o.k == V_MSG && ct_eq(k, n, "role")) *r = str_v(c->msgs[o.m].role, strlen(c->msgs[o.m].role));
    else if (o.k == V_MSG && ct_eq(k, n, "content")) r->k = V_PARTS, r->m = o.m;
    else if (o.k == V_PART && ct_eq(k, n, "type"))
        *r = o.p < c->msgs[o.m].n_images ? str_v("image", 5) : str_v("text", 4);
    else if (o.k == V_PART && ct_eq(k, n, "text") && o.p >= c->msgs[o.m].n_images)
        *r = str_v(c->msgs[o.m].text, strlen(c->msgs[o.m].text));
    else if (o.k == V_LOOP) {
        static const char *const attrs[] = {"index0", "index", "revindex0", "revindex", "first", "last", "length"};
        int64_t vals[] = {o.i, o.i + 1, (int64_t)o.n - o.i - 1, (int64_t)o.n - o.i, o.i == 0, o.i + 1 == (int64_t)o.n, (int64_t)o.n};
        for (int a = 0; a < 7; a++)
            if (ct_eq(k, n, attrs[a])) return *r = a == 4 || a == 5 ? bool_v(vals[a] != 0) : int_v(vals[a]), true;
        static const char *const refused[] = {"cycle", "depth", "depth0", "previtem", "nextitem", "changed"};
        for (int a = 0; a < 6; a++)
            if (ct_eq(k, n, refused[a])) return ct_fail(c, TP_ERR_UNSUPPORTED, off, "loop.%s", refused[a]);
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
        if (a.k == V_UNDEF || b.k == V_UNDEF) return ct_fail(c, TP_ERR_FORMAT, x->off, "arithmetic on an undefined value");
        if (x->op == OP_ADD && a.k == V_STR && b.k == V_STR) return concat(c, a.s, a.n, b.s, b.n, x->off, r);
        if (!ai || !bi) return ct_fail(c, TP_ERR_FORMAT, x->off, "'%c' on a %s and a %s", x->op == OP_ADD ? '+' : '-', kind_name(a.k), kind_name(b.k));
        if (x->op == OP_ADD ? __builtin_add_overflow(a.i, b.i, &r->i) : __builtin_sub_overflow(a.i, b.i, &r->i))
            return ct_fail(c, TP_ERR_UNSUPPORTED, x->off, "integer beyond 64 bits");
        return *r = int_v(r->i), true;
    case OP_EQ: case OP_NE:
        return *r = bool_v(v_eq(c, a, b) == (x->op == OP_EQ)), true;
    case OP_LT: case OP_LE: case OP_GT: case OP_GE: {
        if (a.k == V_UNDEF || b.k == V_UNDEF) return ct_fail(c, TP_ERR_FORMAT, x->off, "comparison with an undefined value");
        int d;
        if (ai && bi) d = (a.i > b.i) - (a.i < b.i);
        else if (a.k == V_STR && b.k == V_STR) {
            d = memcmp(a.s, b.s, a.n < b.n ? a.n : b.n);
            if (!d) d = (a.n > b.n) - (a.n < b.n);
        } else return ct_fail(c, TP_ERR_FORMAT, x->off, "ordering of a %s and a %s", kind_name(a.k), kind_name(b.k));
        bool t = x->op == OP_LT ? d < 0 : x->op == OP_LE ? d <= 0 : x->op == OP_GT ? d > 0 : d >= 0;
        return *r = bool_v(t), true;
    }
    default: { /* in, not in */
        bool found = false;
        if (b.k == V_STR) {
            if (a.k != V_STR) return ct_fail(c, TP_ERR_FORMAT, x->off, "'in <string>' needs a string, not a %s", kind_name(a.k));
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
            found = a.k == V_STR && (b.k == V_MSG ? ct_eq(a.s, a.n, "role") || ct_eq(a.s, a.n, "content")
                                                   : ct_eq(a.s, a.n, "type") || (ct_eq(a.s, a.n, "text") && b.p >= c->msgs[b.m].n_images));
        } else if (b.k != V_UNDEF) {
            return ct_fail(c, b.k == V_LOOP ? TP_ERR_UNSUPPORTED : TP_ERR_FORMAT, x->off, "'in' a %s", kind_name(b.k));
        }
        return *r = bool_v(found == (x->op == OP_IN)), true;
    }
    }
}

static bool eval(ct *c, const node *x, value *r)
{
    if (++c->steps > MAX_STEPS) return ct_fail(c, TP_ERR_UNSUPPORTED, x->off, "more than %d evaluation steps", MAX_STEPS);
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
            return ct_fail(c, a.k == V_INT ? TP_ERR_UNSUPPORTED : TP_ERR_FORMAT, x->off, "unary '%c' on a %s", x->i ? '+' : '-', kind_name(a.k));
        return *r = int_v(x->i ? a.i : -a.i), true;
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
            size_t b = ct_skip_ws(s, n, 0), e = ct_rstrip(s, b, n);
            return *r = str_v(s + b, e - b), true;
        }
        int64_t len = a.k == V_STR ? (int64_t)n_chars(a.s, a.n) : a.k == V_MSGS ? c->n_msgs : a.k == V_PARTS ? n_parts(c, a.m)
                      : a.k == V_MSG ? 2 : a.k == V_PART ? 1 + (a.p >= c->msgs[a.m].n_images) : a.k == V_UNDEF ? 0 : -1;
        if (len < 0) return ct_fail(c, a.k == V_LOOP ? TP_ERR_UNSUPPORTED : TP_ERR_FORMAT, x->off, "length of a %s", kind_name(a.k));
        return *r = int_v(len), true;
    }
    default: return ct_fail(c, TP_ERR_INTERNAL, x->off, "node %d in an expression", (int)x->k);
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
    case V_NONE: case V_BOOL: case V_INT: return ct_fail(c, TP_ERR_FORMAT, x->a->off, "a %s is not iterable", kind_name(it.k));
    default: return ct_fail(c, TP_ERR_UNSUPPORTED, x->a->off, "iterating over a %s", kind_name(it.k));
    }
    size_t byte = 0;
    for (int64_t i = 0; i < len; i++) {
        if (++c->iterations > CHAT_TEMPLATE_MAX_ITERATIONS)
            return ct_fail(c, TP_ERR_UNSUPPORTED, x->off, "more than %d loop iterations", CHAT_TEMPLATE_MAX_ITERATIONS);
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
        default: return ct_fail(c, TP_ERR_INTERNAL, x->off, "node %d as a statement", (int)x->k);
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
    node *root = ct_parse(c);
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
