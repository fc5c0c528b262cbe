/* tp_matmul.h - what ops_matmul.c (the portable driver) shares with its per-ISA kernels
 * (matmul_avx2.c, matmul_avx512.c). Internal. */
#ifndef TP_MATMUL_H
#define TP_MATMUL_H

#include "tp_quants.h"

/* Packed GEMM geometry (same on every ISA path so that packing code is shared):
 *   activations: panels of TP_MM_NR tokens, [k][NR] floats (F32) or [k/2][NR][2] bf16 pairs;
 *   weights:     micro-panels of TP_MM_MR rows, [k][MR] floats or [k/2][MR][2] bf16 pairs,
 *                packed per thread for blocks of TP_MM_MC rows × TP_MM_KC k. */
#define TP_MM_NR 12
#define TP_MM_MR 32
#define TP_MM_MC 256
#define TP_MM_KC 256      /* F32 k-block */
#define TP_MM_KC_BF16 512 /* BF16 k-block (256 pairs) */

/* CPU features beyond the path (cpu.c). */
bool tp_cpu_has_avx512_bf16(void);
bool tp_cpu_has_avx512_vnni(void);

/* Micro-kernel: C[n*ldc + m] (+)= sum_k B[k*NR + n] * A[k*MR + m] for m < mr, n < nr.
 * A, B packed as above; kc k steps (pairs for bf16); accumulate = add to C instead of storing. */
void tp_mm_kernel_f32_avx512(int64_t kc, const float *A, const float *B, float *C, int64_t ldc, int mr,
                             int nr, bool accumulate);
void tp_mm_kernel_bf16_avx512(int64_t kc2, const uint16_t *A, const uint16_t *B, float *C, int64_t ldc,
                              int mr, int nr, bool accumulate);
void tp_mm_kernel_f32_avx2(int64_t kc, const float *A, const float *B, float *C, int64_t ldc, int mr, int nr,
                           bool accumulate);

/* Dot products of nrows contiguous weight rows (F32/F16/BF16, lda bytes apart) with x (F32, k). */
void tp_mm_dot_rows_avx512(tp_type type, const void *A, size_t lda, int64_t nrows, const float *x,
                           int64_t k, float *out);
void tp_mm_dot_rows_avx2(tp_type type, const void *A, size_t lda, int64_t nrows, const float *x, int64_t k,
                         float *out);

/* Quantised weight rows × activation blocks for ntok tokens (ldx blocks apart):
 * out[n*ldo + r] = dot(row r, token n); weights are unpacked once for every 4 tokens. */
void tp_mm_qdot_avx512(tp_type type, const void *A, size_t lda, int64_t nrows, const tp_block_q8a *x,
                       int64_t ldx, int64_t ntok, int64_t k, float *out, int64_t ldo, bool vnni);
void tp_mm_qdot_avx2(tp_type type, const void *A, size_t lda, int64_t nrows, const tp_block_q8a *x,
                     int64_t k, float *out);

/* Activation quantisation (bit-identical to tp_quantize_row_q8a). */
void tp_quantize_row_q8a_avx512(const float *x, tp_block_q8a *y, int64_t n);
void tp_quantize_row_q8a_avx2(const float *x, tp_block_q8a *y, int64_t n);

#endif
