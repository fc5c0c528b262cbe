/* tp_tokenizer.h - the tokenizer's internals, shared by the files of native/tokenizer/ (not public; the API is
 * include/tilepass.h's tp_tokenizer / tp_detokenizer):
 *   unicode.c    the generated property table (build/gen/tp_unicode_data.h) looked up by code point
 *   utf8.c       UTF-8 decoding: strict for input text, maximal-subpart for streamed output
 *   hashmap.c    string -> id and (id, id) -> merge hash maps (open addressing, built once)
 *   pretok_deepseek_v3.c, pretok_gpt2.c   the pre-tokenizers, as code
 *   bpe.c        the merge loop (lowest rank first, leftmost on ties) and the word builders
 *   unigram.c    SentencePiece Unigram: the best segmentation by score (Viterbi)
 *   added.c      whole-token matching of control / user-defined tokens
 *   vocab_load.c the tokenizer built from a GGUF's tokenizer.ggml.* keys
 *   piece.c      a token's string as the bytes it stands for (also tp_text_token_bytes', models/text_vocab.c)
 *   tokenize.c   tp_tokenize and the accessors;  detokenize.c  bytes back, whole and streamed */
#ifndef TP_TOKENIZER_H
#define TP_TOKENIZER_H

#include "tp_internal.h"

#include <stdint.h>

/* tokenizer.ggml.token_type values (llama.cpp / gguf.TokenType) */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

typedef enum { TOK_KIND_BYTE_BPE = 0, TOK_KIND_SPM = 1 /* BPE or Unigram: tp_tokenizer.unigram */ } tok_kind;
typedef enum { TOK_PRE_DEEPSEEK_V3 = 0, TOK_PRE_GPT2 = 1 } tok_pre;

/* per-token flags */
#define TOKF_ADDED 1u   /* matched whole in the text (first occurrence of a control / user-defined / unknown string) */
#define TOKF_SPECIAL 2u /* "special": not matched when parse_special is false; left out by skip_special */

/* ---- unicode.c / utf8.c ---- */
unsigned tpu_flags(uint32_t cp); /* TPU_L | TPU_M | TPU_N | TPU_P | TPU_S | TPU_SPACE */
#define TPU_L 1u
#define TPU_M 2u
#define TPU_N 4u
#define TPU_P 8u
#define TPU_S 16u
#define TPU_SPACE 32u
const char *tpu_unicode_version(void);
/* The strict decoding of s[0..n): the code point and its length, or 0 when s does not start with a valid
 * (shortest-form, non-surrogate, <= U+10FFFF) character. */
int tpu_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);
/* For maximal-subpart replacement: how many of s[0..n) bytes (at most the sequence's length) are a valid
 * start of one character; *need receives that character's length (0: s[0] cannot start one). */
int tpu_utf8_prefix(const uint8_t *s, size_t n, int *need);
int tpu_utf8_encode(uint32_t cp, uint8_t out[4]);

/* ---- piece.c ---- */
#define TOK_BYTE_CPS (256 + 68)           /* the code points GPT-2's bytes_to_unicode maps bytes to */
#define TOK_SPM_SPACE "\xE2\x96\x81" /* SentencePiece's "▁" */
/* GPT-2's bytes_to_unicode: printable bytes map to their own code point, the other 68 to 256 + k in byte order. */
uint32_t tok_byte_to_cp(int b);
/* Its inverse: table[cp] = the byte, or -1. */
void tok_cp_to_byte_table(int16_t table[TOK_BYTE_CPS]);
/* The bytes token string s[0..n) of type `type` (TT_*) stands for, written at out (never more than n):
 * control / user-defined tokens (and a SentencePiece vocabulary's unknown) as their text; in a SentencePiece
 * vocabulary (spm) "▁" as a space, <0xXX> BYTE tokens as their byte, UNUSED tokens as nothing; otherwise
 * byte-level symbols back to their bytes, other characters as they are. */
size_t tok_piece_bytes(const char *s, size_t n, int type, bool spm, const int16_t *cp_to_byte, char *out);

/* ---- hashmap.c ---- */
/* String -> id over the tokenizer's token strings (the first id of each string). */
typedef struct tok_slot {
    int32_t id;   /* -1: empty */
    uint32_t tag; /* the key's hash, high half: most probes that miss are told apart without the string */
} tok_slot;
typedef struct tok_strmap {
    tok_slot *slots;
    uint64_t mask;
} tok_strmap;
uint64_t tok_hash_bytes(uint64_t h, const void *p, size_t n);
#define TOK_HASH_SEED 1469598103934665603ull

/* (left id, right id) -> (rank, merged id) */
typedef struct tok_merge_entry {
    uint64_t key; /* (uint64)left << 32 | right, UINT64_MAX: empty */
    uint32_t rank;
    int32_t merged;
} tok_merge_entry;
typedef struct tok_mergemap {
    tok_merge_entry *e;
    uint64_t mask;
    int64_t n;
} tok_mergemap;

/* ---- the tokenizer ---- */
struct tp_tokenizer {
    tok_kind kind;
    tok_pre pre;
    int32_t n;             /* tokens */
    char *str;             /* token strings as in the file, concatenated: token i is str[str_off[i] .. str_off[i+1]) */
    int64_t *str_off;
    char *piece;           /* the bytes each token stands for (detokenisation), same layout */
    int64_t *piece_off;
    uint8_t *type;         /* token types (TT_*) */
    uint8_t *flags;        /* TOKF_* */
    tok_strmap vocab;      /* string -> first id */
    tok_mergemap merges;
    int32_t byte_sym[256]; /* byte-level BPE: the id of each byte's symbol; SPM: the id of "<0xXX>"; -1: none */
    int32_t unk_id;        /* SPM: the unknown token, -1: none */
    bool add_space_prefix; /* SPM: "▁" before each piece of text */
    bool byte_fallback;    /* SPM: the vocabulary has BYTE tokens */
    /* SPM Unigram (scores not all whole numbers): the lattice's scores (NORMAL / USER_DEFINED pieces their
     * score, the others -1e9: never chosen while anything else fits), the unknown token's score (the lowest
     * minus 10), the last id of each string (by first id) and the longest token in bytes */
    bool unigram;
    double *lat_score;
    double unk_score;
    int32_t *last_id;
    int32_t max_len;
    /* added tokens by their first byte: the distinct lengths, longest first */
    int32_t *added_len;    /* all lists, concatenated */
    int32_t added_len_off[257];
};

int32_t tok_strmap_get(const tp_tokenizer *t, const void *s, size_t n);
/* The first id of the string a ++ b (-1 if none). */
int32_t tok_strmap_get2(const tp_tokenizer *t, const void *a, size_t na, const void *b, size_t nb);
/* The same with the FNV state of a ++ b given (tok_hash_bytes from TOK_HASH_SEED). */
int32_t tok_strmap_get_hashed(const tp_tokenizer *t, uint64_t fnv, const void *a, size_t na, const void *b, size_t nb);
tp_status tok_strmap_build(tp_tokenizer *t);
tp_status tok_mergemap_init(tok_mergemap *m, int64_t capacity);
/* Inserts or overwrites (a later duplicate pair takes the later rank, as a hash map built from the list does). */
void tok_mergemap_put(tok_mergemap *m, int32_t a, int32_t b, uint32_t rank, int32_t merged);
const tok_merge_entry *tok_mergemap_get(const tok_mergemap *m, int32_t a, int32_t b);
void tok_mergemap_free(tok_mergemap *m);

static inline const char *tok_str(const tp_tokenizer *t, int32_t id, size_t *len) {
    *len = (size_t)(t->str_off[id + 1] - t->str_off[id]);
    return t->str + t->str_off[id];
}

/* ---- pre-tokenizers: text (code points cp[0..n), with byte offsets off[0..n]) into pieces ---- */
typedef int (*tok_piece_fn)(void *ctx, int64_t lo, int64_t hi); /* code point range; non-zero stops */
int tok_pretok_deepseek_v3(const uint32_t *cp, int64_t n, tok_piece_fn fn, void *ctx);
int tok_pretok_gpt2(const uint32_t *cp, int64_t n, tok_piece_fn fn, void *ctx);

/* ---- bpe.c ---- */
typedef struct tok_symbol {
    int32_t id;
    int32_t prev, next; /* -1: none */
    int32_t len;        /* 0: merged away */
} tok_symbol;
typedef struct tok_heap_item {
    uint32_t rank;
    int32_t pos;
    int32_t merged;
} tok_heap_item;
/* Per-call scratch, grown as needed. */
typedef struct tok_scratch {
    tok_symbol *sym;
    int64_t sym_cap;
    tok_heap_item *heap;
    int64_t heap_cap;
    uint32_t *cp;
    int64_t *off;
    int64_t cp_cap;
    uint8_t *norm; /* SPM: the normalised text */
    int64_t norm_cap;
    /* the output */
    int32_t *ids;
    int64_t max_ids, n_ids;
} tok_scratch;
void tok_scratch_free(tok_scratch *s);
/* Byte-level BPE of one pre-token's bytes; SPM BPE of one normalised text segment. Ids go to s->ids (counted
 * past max_ids). TP_ERR_OUT_OF_MEMORY on failure. */
tp_status tok_bpe_bytes(const tp_tokenizer *t, tok_scratch *s, const uint8_t *bytes, size_t n);
tp_status tok_bpe_spm(const tp_tokenizer *t, tok_scratch *s, const uint8_t *text, size_t n);
/* unigram.c: SentencePiece Unigram of one normalised text segment. */
tp_status tok_unigram_spm(const tp_tokenizer *t, tok_scratch *s, const uint8_t *text, size_t n);
void tok_emit(tok_scratch *s, int32_t id);

/* ---- added.c ---- */
tp_status tok_added_build(tp_tokenizer *t);
/* The leftmost-longest added token in text[from..n): its id; its start and byte length in *start, *len; -1 if
 * none. */
int32_t tok_added_find(const tp_tokenizer *t, const uint8_t *text, size_t n, size_t from, size_t *start, size_t *len);

/* ---- vocab_load.c ---- */
/* path: a prefix for messages ("file: " or ""). */
tp_status tok_load(const tp_gguf *g, const char *path, tp_tokenizer **out, tp_error *err);

#endif
