/* tp_matmul.h - what ops_matmul.c (the portable driver) shares with its per-ISA kernels
 * (matmul_avx2.c, matmul_avx512.c, qmatmul_avx512.c). Internal. */
#ifndef TP_MATMUL_H
#define TP_MATMUL_H

#include "tp_quants.h"

/* Packed GEMM geometry (same on every ISA path so that packing code is shared):
 *   activations: panels of TP_MM_NR tokens, [k][NR] floats (F32) or [k/2][NR][2] bf16 pairs;
 *   weights:     micro-panels of TP_MM_MR rows, [k][MR] floats or [k/2][MR][2] bf16 pairs,
 *                packed per thread for blocks of TP_MM_MC rows × TP_MM_KC k (AVX2: _AVX2 sizes). */
#define TP_MM_NR 12
#define TP_MM_MR 32
#define TP_MM_MC 256
#define TP_MM_KC 512       /* F32 k-block */
#define TP_MM_KC_BF16 1024 /* BF16 k-block (512 pairs): K <= 1024 in one pass, no C reloads */
#define TP_MM_MC_AVX2 256 /* AVX2 (16×6 register tiles) weight block rows: MC × KC floats = 256 KiB in L2 */
#define TP_MM_KC_AVX2 256 /* AVX2 k-block: a 12-token panel of 12 KiB stays in L1 beside the streamed weights */

/* CPU features beyond the path (cpu.c). */
bool tp_cpu_has_avx512_bf16(void);
bool tp_cpu_has_avx512_vnni(void);
/* The CPU's vendor is Intel (kernels whose best prefetch distance differs by vendor ask). */
bool tp_cpu_is_intel(void);
/* AMX-BF16 tiles usable by this process (amx.c): CPUID amx-bf16 + amx-tile, AVX512-BF16, and the
 * kernel's permission for tile data (requested once); the environment TILEPASS_AMX=0 says no. */
bool tp_cpu_amx_usable(void);

/* AMX BF16 GEMM (matmul_amx.c), TP_PRECISION_BF16 with many tokens:
 *   activations: bf16 A tiles, Np = N rounded up to TP_AMX_NB tokens, Kp = K rounded up to TP_AMX_KT,
 *                zero padded (packed once per op by all threads): token n, element k at
 *                [((n/16)·(Kp/32) + k/32)·512 + (n%16)·32 + k%32], so each 16×32 tile is 1 KiB contiguous;
 *   weights:     packed per thread, blocks of mc rows × Kp into 16-row × 32-k VNNI tiles. */
#define TP_AMX_NB 32 /* tokens per block (2 A tiles of 16 rows) */
#define TP_AMX_MB 32 /* weight rows per block (2 B tiles of 16 columns) */
#define TP_AMX_KT 32 /* k per tile (32 bf16 = 64 bytes) */
/* Weight rows per packed block for this Kp (a multiple of TP_AMX_MB; the block stays in L2). */
int64_t tp_amx_block_rows(int64_t Kp);
/* Scratch bytes per thread for tp_mm_amx_thread. */
size_t tp_amx_thread_bytes(int64_t K, int64_t Kp);
/* One F32 row of k values to bf16 (round to nearest even), zero padded to kp. */
void tp_amx_row_to_bf16(const float *src, int64_t k, int64_t kp, uint16_t *dst);
/* The same into A-tile layout: 32-element chunks 512 bf16 apart (dst = the row's first chunk). */
void tp_amx_row_to_tiles(const float *src, int64_t k, int64_t kp, uint16_t *dst);
/* One thread's part of C = B·Aᵀ for one batch: weight rows [m0, m1) of `a` (F32/F16/BF16, at batch
 * indices ia2, ia3) × tokens [n0, n1) (n0 a multiple of TP_AMX_NB) of acts (the batch's packed tiles);
 * C rows are tokens (ldc = M floats apart). scratch: tp_amx_thread_bytes, 64-byte aligned. */
void tp_mm_amx_thread(const struct tp_tensor *a, int64_t ia2, int64_t ia3, int64_t m0, int64_t m1,
                      const uint16_t *acts, int64_t Kp, int64_t n0, int64_t n1, float *C, int64_t ldc,
                      void *scratch);

/* Pack TP_MM_MR weight rows (type F32/F16/BF16, elements contiguous; rows[r] NULL: a zero row) for
 * k in [k0, k0 + kc) into the F32 kernel's panel [kc][MR] floats, or (bf16) the BF16 kernel's
 * [(kc+1)/2][MR][2] values rounded to BF16 (bf16 needs AVX512-BF16). Elements at k >= K read as zero. */
void tp_mm_pack_panel_avx512(tp_type type, const char *const rows[TP_MM_MR], int64_t K, int64_t k0, int64_t kc,
                             bool bf16, void *panel);
/* One activation panel of TP_MM_NR token rows (F32, K contiguous floats; rows[j] NULL: a zero token) in
 * the GEMM's layout: [K][NR] floats, or (bf16) [Kp/2][NR] pairs of BF16 values (k ≥ K zero). */
void tp_mm_pack_tokens_avx512(const char *const rows[TP_MM_NR], int64_t K, int64_t Kp, bool bf16, void *panel);

/* The same F32 panels on AVX2 (F16 widened by F16C): TP_MM_MR weight rows (F32/F16/BF16, elements
 * contiguous; rows[r] NULL: a zero row), k in [k0, k0 + kc) (k >= K reads as zero), into [kc][MR]
 * floats; and TP_MM_NR token rows (F32, K contiguous floats; NULL: a zero token) into [K][NR] floats. */
void tp_mm_pack_panel_avx2(tp_type type, const char *const rows[TP_MM_MR], int64_t K, int64_t k0, int64_t kc,
                           float *panel);
void tp_mm_pack_tokens_avx2(const char *const rows[TP_MM_NR], int64_t K, float *panel);

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
/* Q8_0 / Q4_K / Q5_K / Q6_K rows (tp_mm_qdot4_avx2_type_ok) against 4 tokens at once (x: token t's blocks at
 * x + t * x_stride; out: token t's at out + t * ldo): each weight block loaded and unpacked once for the 4, every
 * token's sum in the same order as tp_mm_qdot_avx2 (the same bits). */
bool tp_mm_qdot4_avx2_type_ok(tp_type type);
void tp_mm_qdot4_avx2(tp_type type, const void *A, size_t lda, int64_t nrows, const tp_block_q8a *x, int64_t x_stride,
                      int64_t k, float *out, int64_t ldo);

/* Activation quantisation (bit-identical to tp_quantize_row_q8a). */
void tp_quantize_row_q8a_avx512(const float *x, tp_block_q8a *y, int64_t n);
void tp_quantize_row_q8a_avx2(const float *x, tp_block_q8a *y, int64_t n);

/* Int8 GEMM for quantised weights on VNNI (qmatmul_avx512.c): weight rows are packed into panels of
 * TP_QG_ROWS rows (row-interleaved unsigned levels with per-32-block float scale and bias), then
 * every panel is multiplied with the tokens' activation blocks by vpdpbusd.
 *   tp_qgemm_type_ok:       Q8_0, Q4_0, Q4_K, Q5_K;
 *   tp_qgemm_panel_bytes:   bytes of one panel for rows of k (64-byte multiple);
 *   tp_qgemm_pack_avx512:   nrows <= TP_QG_ROWS rows (lda bytes apart) into panel (64-byte aligned;
 *                           missing rows zero); tmp: tp_qgemm_pack_tmp_bytes(k) bytes;
 *   tp_qgemm_avx512:        nrows rows of consecutive panels of weights of type × ntok tokens:
 *                           x [ntok][k/32] blocks,
 *                           xs [ntok][k/32] = d·(s[0] + s[1]) per block; token n's results go to
 *                           out + (out_idx ? out_idx[n] : n)·ldo, rows contiguous; ep (NULL: none) is
 *                           applied to each stored segment, these rows being m0.. of the weights. */
#define TP_QG_ROWS 32

/* tp_linear's epilogue: out[i] = act(out[i] + bias[m0 + i]) over n outputs of one token row (bias NULL:
 * none; act a tp_act). The kernels that fuse it call tp_mm_epilogue_row on each stored row segment. */
typedef struct tp_mm_epilogue {
    const float *bias;
    int act;
    tp_cpu_path path;
} tp_mm_epilogue;
void tp_mm_epilogue_row(const tp_mm_epilogue *ep, float *out, int64_t m0, int64_t n);

bool tp_qgemm_type_ok(tp_type type);
size_t tp_qgemm_panel_bytes(int64_t k);
size_t tp_qgemm_pack_tmp_bytes(int64_t k);
void tp_qgemm_pack_avx512(tp_type type, const void *A, size_t lda, int64_t nrows, int64_t k, uint8_t *panel,
                          void *tmp);
void tp_qgemm_avx512(tp_type type, const uint8_t *panels, int64_t nrows, int64_t k, const tp_block_q8a *x,
                     const float *xs, int64_t ntok, float *out, int64_t ldo, const int32_t *out_idx,
                     const tp_mm_epilogue *ep, int64_t m0);

#endif
