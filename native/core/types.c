/* types.c - type traits and conversions between F32 and the storage types. */
#include "tp_internal.h"
#include "tp_quants.h"

typedef struct type_traits {
    const char *name;
    int64_t block_elements;
    size_t block_bytes;
} type_traits;

static const type_traits *traits_of(int type) {
    static const type_traits f32 = {"f32", 1, 4}, f16 = {"f16", 1, 2}, bf16 = {"bf16", 1, 2},
                             i32 = {"i32", 1, 4}, q4_0 = {"q4_0", 32, 18}, q4_1 = {"q4_1", 32, 20},
                             q5_0 = {"q5_0", 32, 22}, q5_1 = {"q5_1", 32, 24}, q8_0 = {"q8_0", 32, 34},
                             q4_k = {"q4_K", 256, 144}, q5_k = {"q5_K", 256, 176},
                             q6_k = {"q6_K", 256, 210};
    switch (type) {
    case TP_TYPE_F32: return &f32;
    case TP_TYPE_F16: return &f16;
    case TP_TYPE_BF16: return &bf16;
    case TP_TYPE_I32: return &i32;
    case TP_TYPE_Q4_0: return &q4_0;
    case TP_TYPE_Q4_1: return &q4_1;
    case TP_TYPE_Q5_0: return &q5_0;
    case TP_TYPE_Q5_1: return &q5_1;
    case TP_TYPE_Q8_0: return &q8_0;
    case TP_TYPE_Q4_K: return &q4_k;
    case TP_TYPE_Q5_K: return &q5_k;
    case TP_TYPE_Q6_K: return &q6_k;
    default: return NULL;
    }
}

bool tp_type_is_valid(int type) { return traits_of(type) != NULL; }
const char *tp_type_name(int type) {
    const type_traits *t = traits_of(type);
    return t ? t->name : "unknown";
}
int64_t tp_type_block_elements(int type) {
    const type_traits *t = traits_of(type);
    return t ? t->block_elements : 0;
}
size_t tp_type_block_bytes(int type) {
    const type_traits *t = traits_of(type);
    return t ? t->block_bytes : 0;
}
size_t tp_type_row_bytes(int type, int64_t n) {
    const type_traits *t = traits_of(type);
    if (!t || n < 0 || n % t->block_elements != 0) return 0;
    return (size_t)(n / t->block_elements) * t->block_bytes;
}

/* IEEE half <-> float, exact for every half value, round-to-nearest-even the other way. */
float tp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

uint16_t tp_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t exp = (x >> 23) & 0xff;
    uint32_t man = x & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 | (man >> 13) : 0));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++; /* may carry into exp: correct */
    return (uint16_t)(sign | half);
}

void tp_row_to_f32(tp_type type, const void *src, float *dst, int64_t n) {
    switch (type) {
    case TP_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return;
    case TP_TYPE_F16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = tp_f16_to_f32(s[i]);
        return;
    }
    case TP_TYPE_BF16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = tp_bf16_to_f32(s[i]);
        return;
    }
    case TP_TYPE_I32: {
        const int32_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
        return;
    }
    default: tp_dequantize_row(type, src, dst, n); return;
    }
}

void tp_row_from_f32(tp_type type, const float *src, void *dst, int64_t n) {
    switch (type) {
    case TP_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return;
    case TP_TYPE_F16: {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = tp_f32_to_f16(src[i]);
        return;
    }
    case TP_TYPE_BF16: {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = tp_f32_to_bf16(src[i]);
        return;
    }
    case TP_TYPE_I32: {
        int32_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = (int32_t)src[i];
        return;
    }
    default: tp_quantize_row(type, src, dst, n); return;
    }
}
