/* pretok_gpt2.c - GPT-2's byte-level pre-tokenizer (tokenizer.ggml.pre "gpt2" / "default"), as code: the
 * isolated split of
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (leftmost match; at one start the first alternative that matches, greedy). */
#include "tp_tokenizer.h"

static int64_t run(const uint32_t *cp, int64_t j, int64_t hi, unsigned any, bool negate) {
    while (j < hi && (((tpu_flags(cp[j]) & any) != 0) != negate)) j++;
    return j;
}

static int64_t match_at(const uint32_t *cp, int64_t i, int64_t hi) {
    const uint32_t c = cp[i];
    if (c == '\'' && i + 1 < hi) {
        static const char *const contractions[] = {"s", "t", "re", "ve", "m", "ll", "d"};
        for (size_t k = 0; k < sizeof contractions / sizeof *contractions; k++) {
            const char *w = contractions[k];
            int64_t j = i + 1;
            while (*w && j < hi && cp[j] == (uint32_t)(unsigned char)*w) {
                w++;
                j++;
            }
            if (!*w) return j;
        }
    }
    /* the optional space: with it first; without it the three alternatives cannot match at a space */
    const int64_t j = c == ' ' && i + 1 < hi ? i + 1 : i;
    const unsigned f = tpu_flags(cp[j]);
    if (f & TPU_L) return run(cp, j + 1, hi, TPU_L, false);
    if (f & TPU_N) return run(cp, j + 1, hi, TPU_N, false);
    if (!(f & (TPU_SPACE | TPU_L | TPU_N))) return run(cp, j + 1, hi, TPU_SPACE | TPU_L | TPU_N, true);
    if (!(tpu_flags(c) & TPU_SPACE)) return -1;
    const int64_t q = run(cp, i + 1, hi, TPU_SPACE, false);
    if (q == hi) return q;    /* \s+(?!\S) */
    if (q - i >= 2) return q - 1;
    return q;                 /* \s+ */
}

int tok_pretok_gpt2(const uint32_t *cp, int64_t n, tok_piece_fn fn, void *ctx) {
    int64_t p = 0;
    int rc;
    while (p < n) {
        int64_t i = p, e = -1;
        for (; i < n; i++)
            if ((e = match_at(cp, i, n)) >= 0) break;
        if (i > p && (rc = fn(ctx, p, i)) != 0) return rc; /* a gap */
        if (i == n) break;
        if ((rc = fn(ctx, i, e)) != 0) return rc;
        p = e;
    }
    return 0;
}
