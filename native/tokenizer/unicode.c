/* unicode.c - Unicode properties of a code point from the table gen_unicode.py generates at build time
 * (build/gen/tp_unicode_data.h: general category classes and White_Space, from Python's unicodedata). */
#include "tp_tokenizer.h"

#include "tp_unicode_data.h"

_Static_assert(TPU_GEN_L == TPU_L && TPU_GEN_M == TPU_M && TPU_GEN_N == TPU_N && TPU_GEN_P == TPU_P &&
                   TPU_GEN_S == TPU_S && TPU_GEN_SPACE == TPU_SPACE,
               "tp_unicode_data.h and tp_tokenizer.h disagree on the flag bits: regenerate the table");

unsigned tpu_flags(uint32_t cp) {
    size_t lo = 0, hi = TPU_N_RANGES;
    while (lo < hi) { /* the first range whose hi >= cp */
        size_t mid = lo + (hi - lo) / 2;
        if (tpu_ranges[mid].hi < cp) lo = mid + 1;
        else hi = mid;
    }
    return lo < TPU_N_RANGES && tpu_ranges[lo].lo <= cp ? tpu_ranges[lo].flags : 0u;
}

const char *tpu_unicode_version(void) { return TPU_UNICODE_VERSION; }
