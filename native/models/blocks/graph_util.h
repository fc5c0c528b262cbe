/* graph_util.h - small graph-building helpers the model files share. */
#ifndef TP_GRAPH_UTIL_H
#define TP_GRAPH_UTIL_H

#include "tp_internal.h"

/* x·wᵀ + b (b may be NULL). */
tp_tensor *gu_linear(tp_context *ctx, tp_tensor *x, tp_tensor *w, tp_tensor *b);
tp_tensor *gu_reshape2(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1);
tp_tensor *gu_reshape3(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1, int64_t ne2);
tp_tensor *gu_reshape4(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3);
/* Tokens [C, n] of a contiguous 2-D tensor, columns [first, first + n). */
tp_tensor *gu_cols(tp_context *ctx, tp_tensor *a, int64_t first, int64_t n);
/* Bicubic-antialias resize of a [C, g, g, 1] grid to [C, to, to, 1] (as PyTorch does on NCHW). */
tp_tensor *gu_resize_grid(tp_context *ctx, tp_tensor *grid_cwh, int64_t to);
/* Concatenate n tensors along dim (n may be 1). */
tp_tensor *gu_concat_n(tp_context *ctx, tp_tensor *const *parts, int n, int dim);
/* A decoder's head: RMSNorm(x) (weights norm), then output·x, added to g as an output: [n_vocab, n]. */
tp_tensor *gu_text_logits(tp_context *ctx, tp_graph *g, tp_tensor *x, tp_tensor *norm, tp_tensor *output, float eps);

#endif
