/* tp_attention.h - the attention op's per-ISA microkernels (attention_avx2.c, attention_avx512.c,
 * attention_amx.c), declared once for the driver (ops_attention.c) and the kernel files. The
 * contracts are documented at the scalar versions in ops_attention.c. */
#ifndef TP_ATTENTION_H
#define TP_ATTENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void tp_attn_qk_avx512(const float *K, size_t ldk, const float *Qt, int ldq, float *St, int lds, int nc, int nq, int D);
void tp_attn_pv_avx512(const float *Pt, int ldp, const float *V, size_t ldv, float *Ot, int ldo, int nc, int nq, int Dv);
void tp_attn_softmax_avx512(float *St, int lds, int nc, int nq, float *m, float *l, float *Ot, int ldo, int Dv);
void tp_attn_qk_avx2(const float *K, size_t ldk, const float *Qt, int ldq, float *St, int lds, int nc, int nq, int D);
void tp_attn_pv_avx2(const float *Pt, int ldp, const float *V, size_t ldv, float *Ot, int ldo, int nc, int nq, int Dv);
void tp_attn_softmax_avx2(float *St, int lds, int nc, int nq, float *m, float *l, float *Ot, int ldo, int Dv);
/* St[c][r] += RHt[jh][r] + RWt[jw][r] for key j0 + c = jh·Kw + jw (SAM's decomposed rel-pos), r < nq (a
 * multiple of 16); (jh, jw) of c = 0 given */
void tp_attn_add_rel_avx512(float *St, int lds, int nc, int nq, const float *RHt, const float *RWt, int ldr, int jh,
                            int jw, int Kw);
/* the single-query forms (decode): dot products along D, V rows along Dv */
void tp_attn_qk1_avx512(const float *K, size_t ldk, const float *q, float *St, int lds, int nc, int D);
void tp_attn_pv1_avx512(const float *Pt, int ldp, const float *V, size_t ldv, float *Ot, int ldo, int nc, int Dv);
void tp_attn_qk1_avx2(const float *K, size_t ldk, const float *q, float *St, int lds, int nc, int D);
void tp_attn_pv1_avx2(const float *Pt, int ldp, const float *V, size_t ldv, float *Ot, int ldo, int nc, int Dv);
/* AMX (attention_amx.c) */
void tp_attn_amx_begin(void);
void tp_attn_amx_end(void);
void tp_attn_amx_qk(const uint16_t *Kb, size_t ldk, const uint16_t *Qp, float *St, int lds, int nc, int nq, int D);
void tp_attn_amx_pv(const uint16_t *Vt, size_t ldvt, const uint16_t *Pp, float *Ot, int ldo, int nc, int nq, int Dv);
/* BF16 precision operands (attention_avx512.c, AVX512-BF16) and the vdpbf16ps products without AMX */
void tp_attn_bf16_rows(const float *src, int64_t n, uint16_t *dst);
/* the tile's transposes (rows of unit-stride floats, ld* apart):
 *   load_qt:   Qt[d][r] = scale · q[i0 + r][d] for r < nr, 0 for nr <= r < nq (nq a multiple of 16);
 *   store_out: out[r][e] = Ot[e][r] / l[r] (0 where l[r] = 0), r < nr;
 *   bf16_vt:   vt[e][c] = bf16(v[c][e]) for c0 <= c < c1, rows c >= n as 0 */
void tp_attn_load_qt_avx512(const float *q, size_t ldq, int64_t i0, int nr, int nq, int D, float scale, float *Qt,
                            int ldt);
void tp_attn_store_out_avx512(const float *Ot, int ldo, const float *l, int nr, int Dv, float *out, size_t ldout);
void tp_attn_bf16_vt_avx512(const float *v, size_t ldv, int64_t n, int64_t c0, int64_t c1, int Dv, uint16_t *vt,
                            size_t ldvt);
void tp_attn_bf16_pack_pairs(const float *src, int lds, int nrows, int nrows_pad, int nq, uint16_t *dst);
void tp_attn_bf16_softmax_pack(const float *St, int lds, int nc, int nq, float *m, float *l, float *Ot, int ldo,
                               int Dv, uint16_t *Pp);
void tp_attn_bf16_qk_avx512(const uint16_t *Kb, size_t ldk, const uint16_t *Qp, float *St, int lds, int nc, int nq,
                            int D);
void tp_attn_bf16_pv_avx512(const uint16_t *Vt, size_t ldvt, const uint16_t *Pp, float *Ot, int ldo, int nc, int nq,
                            int Dv);
/* decode (one query per head, KV split across threads) */
void tp_attn_dec_qk_avx512(const float *K, size_t ldk, size_t ldh, int group, const float *Q, float *St, int lds,
                           int nc, int H, int nq, int D);
void tp_attn_dec_pv_avx512(const float *Pt, int ldp, const float *V, size_t ldv, size_t ldh, int group, float *O,
                           int nc, int H, int Dv);
/* AVX2: K / V rows of F32, or F16 with f16 (ldk, ldv, ldh in elements) */
void tp_attn_dec_qk_avx2(const void *K, bool f16, size_t ldk, size_t ldh, int group, const float *Q, float *St,
                         int lds, int nc, int H, int nq, int D);
void tp_attn_dec_pv_avx2(const float *Pt, int ldp, const void *V, bool f16, size_t ldv, size_t ldh, int group,
                         float *O, int nc, int H, int Dv);
/* the same over an F16 KV cache (ldk, ldv, ldh in elements), and F16 rows to F32 (F16C) */
void tp_attn_dec_qk_f16_avx512(const uint16_t *K, size_t ldk, size_t ldh, int group, const float *Q, float *St, int lds,
                               int nc, int H, int nq, int D);
void tp_attn_dec_pv_f16_avx512(const float *Pt, int ldp, const uint16_t *V, size_t ldv, size_t ldh, int group, float *O,
                               int nc, int H, int Dv);
void tp_attn_f16_to_f32_avx512(const uint16_t *src, float *dst, int n);
/* the same over a Q8_0 KV cache (ldk, ldv, ldh in bytes; D, Dv multiples of 32), and Q8_0 blocks to floats */
void tp_attn_dec_qk_q8_avx512(const uint8_t *K, size_t ldk, size_t ldh, int group, const float *Q, float *St, int lds,
                              int nc, int H, int nq, int D);
void tp_attn_dec_pv_q8_avx512(const float *Pt, int ldp, const uint8_t *V, size_t ldv, size_t ldh, int group, float *O,
                              int nc, int H, int Dv);
void tp_attn_q8_0_to_f32_avx512(const void *src, float *dst, int n);
void tp_attn_f16_to_f32_avx2(const uint16_t *src, float *dst, int n);

#endif
