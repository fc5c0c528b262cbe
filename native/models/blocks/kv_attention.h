/* kv_attention.h - causal self-attention of a batch of new tokens over a decoder layer's KV cache, the
 * piece every text family's layer shares. */
#ifndef TP_KV_ATTENTION_H
#define TP_KV_ATTENTION_H

#include "text_model.h"

/* q: [D, H, n], k: [D, Hkv, n], v: [Dv, Hkv, n] (roped already) for n tokens after n_past cached ones;
 * kc, vc: the layer's cache leaves [D, Hkv, n_ctx] / [Dv, Hkv, n_ctx]. The new keys and values are written
 * at rows n_past.. (tp_cpy, added to g as outputs); the last n_rows queries (n_rows <= n) attend causally
 * over all n_past + n positions. Returns [Dv·H, n_rows]; NULL (and no error) when n_rows is 0: only the
 * cache writes then. */
tp_tensor *kv_attention(tp_context *ctx, tp_graph *g, tp_tensor *q, tp_tensor *k, tp_tensor *v, tp_tensor *kc,
                        tp_tensor *vc, int64_t n_past, int64_t n_rows, float scale);

/* Attention of a batch of sequences (text_batch, text_model.h): q [D, H, b->n_rows], k [D, Hkv, b->n_rows],
 * v [Dv, Hkv, b->n_rows] (roped already) for all rows; each segment's rows go through kv_attention over its
 * own cache of layer `layer`. In the last layer (layer == b->n_layer − 1) a segment keeps only its last
 * n_out query rows. Returns the segments' outputs concatenated, [Dv·H, rows kept]; NULL (no error) when no
 * row is kept (the last layer of a pass that wants no logits: the cache writes are in g all the same). */
tp_tensor *kv_attention_batch(tp_context *ctx, tp_graph *g, tp_tensor *q, tp_tensor *k, tp_tensor *v,
                              const text_batch *b, int layer, float scale);

/* The rows of x [C, b->n_rows] that stay after attention of layer `layer`: all of them, or in the last
 * layer each segment's last n_out rows (concatenated), as kv_attention_batch keeps them. */
tp_tensor *kv_batch_rows(tp_context *ctx, tp_tensor *x, const text_batch *b, int layer);

/* The last n_rows columns of x [C, n] (all of them when n_rows == n). */
tp_tensor *kv_last_rows(tp_context *ctx, tp_tensor *x, int64_t n_rows);

#endif
