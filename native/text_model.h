/* text_model.h - the DeepSeek-OCR text decoder (DeepSeek-V2-style MoE with plain MHA): its
 * hyperparameters, weights and graph builder. Loading is in text_load.c, the graph in
 * text_decoder.c and the public API (KV cache, batching, tokens) in text_api.c. */
#ifndef TP_TEXT_MODEL_H
#define TP_TEXT_MODEL_H

#include "tp_internal.h"

#define TP_TEXT_MAX_LAYERS 256

typedef struct text_hparams {
    int n_vocab, n_embd, n_layer, n_ctx_train;
    int n_head, n_head_kv, head_dim, head_dim_v;
    int n_dense_lead;      /* leading dense layers (informative; each layer's kind comes from its tensors) */
    int n_ff;              /* dense layers' intermediate width */
    int n_expert, n_expert_used, n_expert_shared;
    int n_ff_exp, n_ff_shexp; /* routed / shared (all shared experts fused) widths; 0 when absent */
    float eps, rope_base, expert_weights_scale;
    int bos_id, eos_id, pad_id, image_token_id;
} text_hparams;

typedef struct text_layer {
    bool moe;
    tp_tensor *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm;
    tp_tensor *ffn_gate, *ffn_up, *ffn_down;          /* dense layers */
    tp_tensor *gate_inp, *gate_exps, *up_exps, *down_exps; /* MoE layers */
    tp_tensor *gate_sh, *up_sh, *down_sh;             /* MoE shared experts (NULL if none) */
} text_layer;

typedef struct text_weights {
    tp_tensor *tok_embd, *output_norm, *output;
    text_layer layers[TP_TEXT_MAX_LAYERS];
} text_weights;

/* Architecture check and every hyperparameter (keys first, tensor shapes as fallbacks); errors name
 * the file. */
tp_status text_read_hparams(const tp_gguf *g, const char *path, text_hparams *hp, tp_error *err);
/* Every weight as a leaf of ctx over the mapped file, shapes checked against hp. */
tp_status text_load_weights(tp_gguf *g, const char *path, const text_hparams *hp, tp_context *ctx,
                            text_weights *w, tp_error *err);

/* Token strings decoded to raw bytes: token i is bytes[offs[i] .. offs[i + 1]). */
typedef struct text_vocab {
    int64_t n;
    int64_t *offs;
    char *bytes;
} text_vocab;
tp_status text_load_vocab(const tp_gguf *g, const char *path, int64_t n_vocab, text_vocab *v, tp_error *err);
void text_vocab_free(text_vocab *v);

/* One decoder pass over n tokens at positions n_past .. n_past + n − 1.
 *   x:      [n_embd, n] input embeddings (a leaf);
 *   pos:    I32 [n] positions (a leaf);
 *   kcache, vcache: per layer, leaves [head_dim, n_head_kv, n_ctx] / [head_dim_v, n_head_kv, n_ctx];
 *   n_out:  logits rows wanted: the last n_out positions (1..n), or 0 for none.
 * Adds to g: the cache writes of every layer and (n_out > 0) the logits [n_vocab, n_out], returned. */
tp_tensor *text_build_graph(tp_context *ctx, tp_graph *g, const text_hparams *hp, const text_weights *w,
                            tp_tensor *x, tp_tensor *pos, tp_tensor *const *kcache, tp_tensor *const *vcache,
                            int64_t n_past, int64_t n, int64_t n_out);

#endif
