/* text_family.h - what a text model family gives the generic text API (models/text.c): hyperparameters,
 * weights bound once at load, and the decoder graph over a batch of tokens with the KV cache. */
#ifndef TP_TEXT_FAMILY_H
#define TP_TEXT_FAMILY_H

#include "text_model.h"
#include "weights.h"

typedef struct text_family {
    const char *architecture; /* general.architecture of its files */
    /* Hyperparameters (every field of text_hparams the generic API reads: widths, heads, ids). */
    tp_status (*read_hparams)(const tp_gguf *g, const char *path, text_hparams *hp, tp_error *err);
    /* Every weight as a leaf of L->ctx (the model's weights context), shapes checked. */
    tp_status (*load)(weights_loader *L, const text_hparams *hp, void **weights);
    void (*free)(void *weights);
    /* The token embedding table (read on the host) and a representative matrix (auto KV type). */
    const tp_tensor *(*token_embd)(const void *weights);
    const tp_tensor *(*probe_matrix)(const void *weights);
    /* One decoder pass over a batch of sequences (text_batch in text_model.h):
     *   x:   [n_embd, b->n_rows] input embeddings (a leaf), the segments' rows concatenated;
     *   pos: I32 [b->n_rows] (or [b->n_rows, n_pos_axes], axis-major) the rows' positions (a leaf);
     * attention through kv_attention_batch (blocks/kv_attention.h). Adds to g the cache writes of every layer
     * and (b->n_out > 0) the logits [n_vocab, b->n_out] (the segments' wanted rows in order), returned;
     * NULL when no logits are wanted. */
    tp_tensor *(*build)(tp_context *ctx, tp_graph *g, const text_hparams *hp, const void *weights, tp_tensor *x,
                        tp_tensor *pos, const text_batch *b);
} text_family;

#endif
