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

static inline __m512 unpack_lo_pd(__m512 a, __m512 b) {
    return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
}
static inline __m512 unpack_hi_pd(__m512 a, __m512 b) {
    return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
}

/* r[i] holds 16 consecutive 32-bit elements of row i; on return r[j] holds element j of rows 0..15 */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) { /* pairs of rows, interleaved within each 128-bit lane */
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int q = 0; q < 4; q++) { /* rows 4q..4q+3: u[4q + e] holds element 4·lane + e */
        u[4 * q + 0] = unpack_lo_pd(t[4 * q], t[4 * q + 2]);
        u[4 * q + 1] = unpack_hi_pd(t[4 * q], t[4 * q + 2]);
        u[4 * q + 2] = unpack_lo_pd(t[4 * q + 1], t[4 * q + 3]);
        u[4 * q + 3] = unpack_hi_pd(t[4 * q + 1], t[4 * q + 3]);
    }
    for (int e = 0; e < 4; e++) { /* gather the 128-bit lanes: elements e, e+4, e+8, e+12 */
        const __m512 v0 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x88), v1 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xDD);
        const __m512 v2 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x88);
        const __m512 v3 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xDD);
        r[e] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        r[e + 8] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        r[e + 4] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        r[e + 12] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
}

#endif
