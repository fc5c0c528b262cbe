/* deepseek2_text.h - the DeepSeek-OCR text decoder (architecture deepseek2-ocr: DeepSeek-V2-style MoE
 * with plain MHA): its weights and graph builder. Loading is in text_load.c, the graph in text_decoder.c. */
#ifndef TP_DEEPSEEK2_TEXT_H
#define TP_DEEPSEEK2_TEXT_H

#include "../blocks/moe.h"
#include "../text_family.h"

typedef struct text_layer {
    bool moe;
    tp_tensor *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm;
    tp_tensor *ffn_gate, *ffn_up, *ffn_down; /* dense layers */
    moe_weights ffn_moe;                     /* MoE layers (blocks/moe.h) */
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

/* One decoder pass over a batch of sequences: the family's build (text_family.h), over its weights. */
tp_tensor *text_build_graph(tp_context *ctx, tp_graph *g, const text_hparams *hp, const text_weights *w,
                            tp_tensor *x, tp_tensor *pos, const text_batch *b);

#endif
