/* tp_kernels.h - every op's compute kernel (and scratch-size function where it needs one).
 * Each op lives in one file beside its constructor; ops_table.c ties them to tp_op values. */
#ifndef TP_KERNELS_H
#define TP_KERNELS_H

#include "tp_internal.h"

void tp_kernel_cont(const tp_compute_params *p, tp_tensor *dst);       /* ops_layout.c */
void tp_kernel_concat(const tp_compute_params *p, tp_tensor *dst);     /* ops_copy.c */
void tp_kernel_pad(const tp_compute_params *p, tp_tensor *dst);        /* ops_copy.c */
void tp_kernel_get_rows(const tp_compute_params *p, tp_tensor *dst);   /* ops_copy.c */

void tp_kernel_add(const tp_compute_params *p, tp_tensor *dst);        /* ops_elementwise.c */
void tp_kernel_mul(const tp_compute_params *p, tp_tensor *dst);
void tp_kernel_scale(const tp_compute_params *p, tp_tensor *dst);
void tp_kernel_gelu(const tp_compute_params *p, tp_tensor *dst);
/* gelu (erf) / quick_gelu / silu in place over n floats, on the given path (ops_elementwise.c; also
 * tp_linear's epilogue) */
typedef enum { TP_ACT_ROW_GELU, TP_ACT_ROW_GELU_TANH, TP_ACT_ROW_QUICK_GELU, TP_ACT_ROW_SILU } tp_act_row_kind;
void tp_act_row(tp_act_row_kind act, float *y, int64_t n, tp_cpu_path path);
void tp_kernel_gelu_tanh(const tp_compute_params *p, tp_tensor *dst);
void tp_kernel_quick_gelu(const tp_compute_params *p, tp_tensor *dst);
void tp_kernel_silu(const tp_compute_params *p, tp_tensor *dst);
void tp_kernel_sigmoid(const tp_compute_params *p, tp_tensor *dst);
void tp_kernel_div(const tp_compute_params *p, tp_tensor *dst);

void tp_kernel_layer_norm(const tp_compute_params *p, tp_tensor *dst); /* ops_norm.c */
void tp_kernel_rms_norm(const tp_compute_params *p, tp_tensor *dst);
void tp_kernel_softmax(const tp_compute_params *p, tp_tensor *dst);

void tp_kernel_mul_mat(const tp_compute_params *p, tp_tensor *dst);    /* ops_matmul.c */
size_t tp_work_size_mul_mat(const tp_tensor *dst, int nth);

void tp_kernel_im2col(const tp_compute_params *p, tp_tensor *dst);     /* ops_conv.c */
void tp_kernel_interpolate(const tp_compute_params *p, tp_tensor *dst);/* ops_interpolate.c */
size_t tp_work_size_interpolate(const tp_tensor *dst, int nth);

void tp_kernel_rope_neox(const tp_compute_params *p, tp_tensor *dst);  /* ops_rope_topk.c */
void tp_kernel_top_k(const tp_compute_params *p, tp_tensor *dst);

void tp_kernel_attention(const tp_compute_params *p, tp_tensor *dst);  /* ops_attention.c */
size_t tp_work_size_attention(const tp_tensor *dst, int nth);

void tp_kernel_mul_mat_id(const tp_compute_params *p, tp_tensor *dst); /* ops_mul_mat_id.c */
size_t tp_work_size_mul_mat_id(const tp_tensor *dst, int nth);
void tp_kernel_cpy(const tp_compute_params *p, tp_tensor *dst);        /* ops_cpy.c */

#endif
