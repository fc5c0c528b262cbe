/* tp_avx512.h - small inline helpers shared by the AVX-512 kernel files (included only by files
 * compiled with the AVX-512 flags). Internal. */
#ifndef TP_AVX512_H
#define TP_AVX512_H

#include <immintrin.h>
#include <stdint.h>

/* F16C half -> float (exact, as tp_f16_to_f32), inline. */
static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* the first n lanes (n clamped to 0..16 / 0..32) */
static inline __mmask16 mask16(int n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }
static inline __mmask32 mask32(int64_t n) {
    return n >= 32 ? (__mmask32)0xFFFFFFFFu : n <= 0 ? 0 : (__mmask32)((1u << n) - 1);
}

#endif
