/* ops_table.c - the op table: name, kernel and scratch-size function of every tp_op. */
#include "tp_kernels.h"

static const tp_op_info op_table[TP_OP_COUNT] = {
    [TP_OP_NONE] = {"none", NULL, NULL},
    [TP_OP_VIEW] = {"view", NULL, NULL},
    [TP_OP_RESHAPE] = {"reshape", NULL, NULL},
    [TP_OP_PERMUTE] = {"permute", NULL, NULL},
    [TP_OP_TRANSPOSE] = {"transpose", NULL, NULL},
    [TP_OP_CONT] = {"cont", tp_kernel_cont, NULL},
    [TP_OP_ADD] = {"add", tp_kernel_add, NULL},
    [TP_OP_MUL] = {"mul", tp_kernel_mul, NULL},
    [TP_OP_SCALE] = {"scale", tp_kernel_scale, NULL},
    [TP_OP_GELU] = {"gelu", tp_kernel_gelu, NULL},
    [TP_OP_GELU_TANH] = {"gelu_tanh", tp_kernel_gelu_tanh, NULL},
    [TP_OP_QUICK_GELU] = {"quick_gelu", tp_kernel_quick_gelu, NULL},
    [TP_OP_SILU] = {"silu", tp_kernel_silu, NULL},
    [TP_OP_LAYER_NORM] = {"layer_norm", tp_kernel_layer_norm, NULL},
    [TP_OP_RMS_NORM] = {"rms_norm", tp_kernel_rms_norm, NULL},
    [TP_OP_SOFTMAX] = {"softmax", tp_kernel_softmax, NULL},
    [TP_OP_MUL_MAT] = {"mul_mat", tp_kernel_mul_mat, tp_work_size_mul_mat},
    [TP_OP_IM2COL] = {"im2col", tp_kernel_im2col, NULL},
    [TP_OP_CONCAT] = {"concat", tp_kernel_concat, NULL},
    [TP_OP_PAD] = {"pad", tp_kernel_pad, NULL},
    [TP_OP_GET_ROWS] = {"get_rows", tp_kernel_get_rows, NULL},
    [TP_OP_INTERPOLATE] = {"interpolate", tp_kernel_interpolate, tp_work_size_interpolate},
    [TP_OP_ROPE_NEOX] = {"rope_neox", tp_kernel_rope_neox, NULL},
    [TP_OP_TOP_K] = {"top_k", tp_kernel_top_k, NULL},
    [TP_OP_ATTENTION] = {"attention", tp_kernel_attention, tp_work_size_attention},
    [TP_OP_MUL_MAT_ID] = {"mul_mat_id", tp_kernel_mul_mat_id, tp_work_size_mul_mat_id},
    [TP_OP_CPY] = {"cpy", tp_kernel_cpy, NULL},
    [TP_OP_SIGMOID] = {"sigmoid", tp_kernel_sigmoid, NULL},
    [TP_OP_DIV] = {"div", tp_kernel_div, NULL},
};

const tp_op_info *tp_op_get_info(tp_op op) {
    if ((int)op < 0 || op >= TP_OP_COUNT) return NULL;
    return &op_table[op];
}
