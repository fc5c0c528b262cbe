/* act_avx512.c - gelu/gelu_tanh/quick_gelu/silu rows built with the AVX512 flags (FMA contracted by hand). */
#define TP_ACT_MADD(a, b, c) fmaf((a), (b), (c))
#include "tp_act_rows.h"

void tp_act_gelu_row_avx512(float *y, int64_t n) { tp_act_gelu_row(y, n); }
void tp_act_gelu_tanh_row_avx512(float *y, int64_t n) { tp_act_gelu_tanh_row(y, n); }
void tp_act_sigmoid_mul_row_avx512(float *y, int64_t n, float k) { tp_act_sigmoid_mul_row(y, n, k); }
