/* kv_attention.h - causal self-attention of a batch of new tokens over a decoder layer's KV cache, the
 * piece every text family's layer shares. */
#ifndef TP_KV_ATTENTION_H
#define TP_KV_ATTENTION_H

#include "tp_internal.h"

/* q: [D, H, n], k: [D, Hkv, n], v: [Dv, Hkv, n] (roped already) for n tokens after n_past cached ones;
 * kc, vc: the layer's cache leaves [D, Hkv, n_ctx] / [Dv, Hkv, n_ctx]. The new keys and values are written
 * at rows n_past.. (tp_cpy, added to g as outputs); the last n_rows queries (n_rows <= n) attend causally
 * over all n_past + n positions. Returns [Dv·H, n_rows]. */
tp_tensor *kv_attention(tp_context *ctx, tp_graph *g, tp_tensor *q, tp_tensor *k, tp_tensor *v, tp_tensor *kc,
                        tp_tensor *vc, int64_t n_past, int64_t n_rows, float scale);

/* The last n_rows columns of x [C, n] (all of them when n_rows == n). */
tp_tensor *kv_last_rows(tp_context *ctx, tp_tensor *x, int64_t n_rows);

#endif
