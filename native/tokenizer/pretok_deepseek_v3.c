/* pretok_deepseek_v3.c - DeepSeek-V3's pre-tokenizer (its tokenizer.json; llama.cpp's "deepseek-v3"), as code:
 * three regex splits, each "isolated" (every match and every gap between matches is a piece) and each applied
 * to the pieces of the previous one:
 *   1. \p{N}{1,3}
 *   2. [\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+
 *   3. [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+ | [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
 *      | ?[\p{P}\p{S}]+[\r\n]* | \s*[\r\n]+ | \s+(?!\S) | \s+
 * The regex engine (Oniguruma, in `tokenizers`) takes the leftmost match, and at one start the first
 * alternative that matches, each with greedy backtracking; the matchers below give what that gives. A piece is
 * its own input: the lookahead of \s+(?!\S) sees its end as the end of the text. */
#include "tp_tokenizer.h"

/* A stage takes each piece of the split before it: it splits it further for the next stage, or (the last)
 * hands it to the caller. */
typedef struct stage {
    int (*fn)(const struct stage *self, const uint32_t *cp, int64_t lo, int64_t hi);
    const struct stage *next;
    tok_piece_fn out;
    void *ctx;
} stage;

static bool is_cjk(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FA5) || (c >= 0x3040 && c <= 0x309F) || (c >= 0x30A0 && c <= 0x30FF);
}
static bool is_ascii_alpha(uint32_t c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
static bool is_ascii_punct(uint32_t c) {
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
}
static bool is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

/* split 1: \p{N}{1,3} */
static bool match_digits(const uint32_t *cp, int64_t p, int64_t hi, int64_t *ms, int64_t *me) {
    for (int64_t i = p; i < hi; i++) {
        if (tpu_flags(cp[i]) & TPU_N) {
            int64_t j = i + 1;
            while (j < hi && j < i + 3 && (tpu_flags(cp[j]) & TPU_N)) j++;
            *ms = i;
            *me = j;
            return true;
        }
    }
    return false;
}

/* split 2: the CJK ideograph and kana ranges, one or more */
static bool match_cjk(const uint32_t *cp, int64_t p, int64_t hi, int64_t *ms, int64_t *me) {
    for (int64_t i = p; i < hi; i++) {
        if (is_cjk(cp[i])) {
            int64_t j = i + 1;
            while (j < hi && is_cjk(cp[j])) j++;
            *ms = i;
            *me = j;
            return true;
        }
    }
    return false;
}

/* split 3 at one start i: the end of the first alternative that matches, or -1 */
static int64_t match_main_at(const uint32_t *cp, int64_t i, int64_t hi) {
    const uint32_t c = cp[i];
    const unsigned f = tpu_flags(c);
    /* [!"#...~][A-Za-z]+ */
    if (is_ascii_punct(c) && i + 1 < hi && is_ascii_alpha(cp[i + 1])) {
        int64_t j = i + 2;
        while (j < hi && is_ascii_alpha(cp[j])) j++;
        return j;
    }
    /* [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ : with the optional character, else without */
    if (!is_crlf(c) && !(f & (TPU_L | TPU_P | TPU_S)) && i + 1 < hi && (tpu_flags(cp[i + 1]) & (TPU_L | TPU_M))) {
        int64_t j = i + 2;
        while (j < hi && (tpu_flags(cp[j]) & (TPU_L | TPU_M))) j++;
        return j;
    }
    if (f & (TPU_L | TPU_M)) {
        int64_t j = i + 1;
        while (j < hi && (tpu_flags(cp[j]) & (TPU_L | TPU_M))) j++;
        return j;
    }
    /*  ?[\p{P}\p{S}]+[\r\n]* */
    int64_t j = -1;
    if (c == ' ' && i + 1 < hi && (tpu_flags(cp[i + 1]) & (TPU_P | TPU_S))) j = i + 1;
    else if (f & (TPU_P | TPU_S)) j = i;
    if (j >= 0) {
        while (j < hi && (tpu_flags(cp[j]) & (TPU_P | TPU_S))) j++;
        while (j < hi && is_crlf(cp[j])) j++;
        return j;
    }
    if (!(f & TPU_SPACE)) return -1;
    int64_t q = i + 1; /* the whitespace run [i, q) */
    while (q < hi && (tpu_flags(cp[q]) & TPU_SPACE)) q++;
    /* \s*[\r\n]+ : up to the run's last CR or LF */
    for (int64_t k = q - 1; k >= i; k--)
        if (is_crlf(cp[k])) return k + 1;
    /* \s+(?!\S) : the run up to the end, else all but its last character */
    if (q == hi) return q;
    if (q - i >= 2) return q - 1;
    /* \s+ */
    return q;
}

static bool match_main(const uint32_t *cp, int64_t p, int64_t hi, int64_t *ms, int64_t *me) {
    for (int64_t i = p; i < hi; i++) {
        const int64_t e = match_main_at(cp, i, hi);
        if (e >= 0) {
            *ms = i;
            *me = e;
            return true;
        }
    }
    return false;
}

typedef bool (*matcher)(const uint32_t *cp, int64_t p, int64_t hi, int64_t *ms, int64_t *me);

/* An isolated split of [lo, hi): matches and the gaps between them, in order, to the stage `to`. */
static int split(matcher m, const uint32_t *cp, int64_t lo, int64_t hi, const stage *to) {
    int64_t p = lo, ms, me;
    int rc;
    while (p < hi && m(cp, p, hi, &ms, &me)) {
        if (ms > p && (rc = to->fn(to, cp, p, ms)) != 0) return rc;
        if ((rc = to->fn(to, cp, ms, me)) != 0) return rc;
        p = me;
    }
    if (p < hi) return to->fn(to, cp, p, hi);
    return 0;
}

static int stage_out(const stage *self, const uint32_t *cp, int64_t lo, int64_t hi) {
    (void)cp;
    return self->out(self->ctx, lo, hi);
}
static int stage_main(const stage *self, const uint32_t *cp, int64_t lo, int64_t hi) {
    return split(match_main, cp, lo, hi, self->next);
}
static int stage_cjk(const stage *self, const uint32_t *cp, int64_t lo, int64_t hi) {
    return split(match_cjk, cp, lo, hi, self->next);
}

int tok_pretok_deepseek_v3(const uint32_t *cp, int64_t n, tok_piece_fn fn, void *ctx) {
    const stage out = {stage_out, NULL, fn, ctx};
    const stage main_split = {stage_main, &out, NULL, NULL};
    const stage cjk_split = {stage_cjk, &main_split, NULL, NULL};
    return split(match_digits, cp, 0, n, &cjk_split);
}
