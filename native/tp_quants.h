/* tp_quants.h - block-quantised row conversion shared by the type layer and kernels. */
#ifndef TP_QUANTS_H
#define TP_QUANTS_H

#include "tp_internal.h"

/* Whether the type is a block-quantised type this build implements. */
bool tp_is_quantized(tp_type type);
/* One row of n elements (a multiple of the block size). */
void tp_dequantize_row(tp_type type, const void *src, float *dst, int64_t n);
void tp_quantize_row(tp_type type, const float *src, void *dst, int64_t n);

#endif
