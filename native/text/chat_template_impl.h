/* chat_template_impl.h - what the two halves of the chat template renderer share (private to native/text/):
 * chat_template_parse.c turns the template into a tree (lexer, parser), chat_template.c renders the tree. */
#ifndef TP_TEXT_CHAT_TEMPLATE_IMPL_H
#define TP_TEXT_CHAT_TEMPLATE_IMPL_H

#include "chat_template.h"
#include "tp_internal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAX_TEMPLATE (1u << 20)   /* template bytes */
#define MAX_ARENA (64u << 20)     /* bytes allocated by one render */
#define MAX_HEIGHT 256            /* height of an expression tree */
#define MAX_STEPS 10000000        /* evaluations of one render */
#define MAX_IMAGES (1 << 20)      /* image parts of one message */

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
    int in_for;                /* parsing the body or else of that many for loops */
    const tp_chat_message *msgs;
    int n_msgs;
    var vars[CHAT_TEMPLATE_MAX_VARS];
    int n_vars, frame;         /* frame: the first variable of the innermost scope */
    int64_t iterations, steps;
    char *out;
    size_t out_n, out_cap;
} ct;

typedef enum {
    N_TEXT, N_OUT, N_SET, N_IF, N_FOR,                                   /* statements */
    E_STR, E_INT, E_BOOL, E_NONE, E_NAME, E_ATTR, E_ITEM, E_BIN, E_NOT, E_NEG, E_TEST, E_FILTER /* expressions */
} nkind;
enum { OP_ADD, OP_SUB, OP_CAT, OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN, OP_AND, OP_OR };

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

/* Record the first error as "chat template line L:C: ..." (off: a byte offset in c->src). Returns false. */
bool ct_fail(ct *c, tp_status st, size_t off, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* n bytes from the render's arena (NULL and an error past MAX_ARENA in all). */
void *ct_alloc(ct *c, size_t n, size_t off);
/* The first non-whitespace byte of s[i..n) / the end of s[start..end) without its trailing whitespace
 * (whitespace: Python's str.isspace, as jinja2's lexer and str.strip see it). */
size_t ct_skip_ws(const char *s, size_t n, size_t i);
size_t ct_rstrip(const char *s, size_t start, size_t end);
/* Lex and parse c->src: the statement list (NULL when empty or on error: c->status says). */
node *ct_parse(ct *c);

static inline bool ct_eq(const char *s, size_t n, const char *lit) { return strlen(lit) == n && memcmp(s, lit, n) == 0; }

/* At most 40 bytes of s[0..n) for a message, not cutting a UTF-8 character. */
static inline int ct_clip(const char *s, size_t n)
{
    if (n <= 40) return (int)n;
    n = 40;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) n--;
    return (int)n;
}

#endif /* TP_TEXT_CHAT_TEMPLATE_IMPL_H */
