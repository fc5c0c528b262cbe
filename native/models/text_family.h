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
    /* One decoder pass, as text_build_graph in text_model.h. */
    tp_tensor *(*build)(tp_context *ctx, tp_graph *g, const text_hparams *hp, const void *weights, tp_tensor *x,
                        tp_tensor *pos, tp_tensor *const *kcache, tp_tensor *const *vcache, int64_t n_past, int64_t n,
                        int64_t n_out);
} text_family;

#endif
