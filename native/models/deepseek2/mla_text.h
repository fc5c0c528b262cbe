/* mla_text.h - the DeepSeek-V2 text decoder with multi-head latent attention (architecture deepseek2, as
 * llama.cpp's converter writes DeepSeek-V2 / DeepSeek-VL2 small and base): its weights and graph builder.
 * Hyperparameters and weights are read in text_load.c, the graph is built in text_decoder.c. */
#ifndef TP_DEEPSEEK2_MLA_TEXT_H
#define TP_DEEPSEEK2_MLA_TEXT_H

#include "../blocks/moe.h"
#include "../text_family.h"

typedef struct mla_layer {
    bool moe;
    tp_tensor *attn_norm, *ffn_norm;
    tp_tensor *wq;                       /* [C, H·(nope + rope)], or NULL with a q LoRA: */
    tp_tensor *wq_a, *wq_a_norm, *wq_b;  /* [C, q_lora], [q_lora], [q_lora, H·(nope + rope)] */
    tp_tensor *wkv_a_mqa, *wkv_a_norm;   /* [C, kv_lora + rope], [kv_lora] */
    tp_tensor *wk_b, *wv_b;              /* [nope, kv_lora, H], [kv_lora, v, H] */
    tp_tensor *wo;                       /* [H·v, C] */
    tp_tensor *ffn_gate, *ffn_up, *ffn_down; /* dense layers */
    moe_weights ffn_moe;                 /* MoE layers */
} mla_layer;

typedef struct mla_weights {
    tp_tensor *tok_embd, *output_norm, *output;
    mla_layer layers[TP_TEXT_MAX_LAYERS];
} mla_weights;

/* Every hyperparameter (the deepseek2.* keys, checked against the tensor shapes); errors name the file. */
tp_status mla_read_hparams(const tp_gguf *g, const char *path, text_hparams *hp, tp_error *err);
/* Every weight as a leaf of L->ctx over the mapped file, shapes checked against hp. */
tp_status mla_load_weights(weights_loader *L, const text_hparams *hp, mla_weights *w);

/* One decoder pass over a batch of sequences (the family's build, text_family.h). The caches hold, per token,
 * ONE head: [kv_lora + rope] (the normalised latent and the roped shared key part) and [kv_lora] (the latent
 * again, the values before v_b). */
tp_tensor *mla_build_graph(tp_context *ctx, tp_graph *g, const text_hparams *hp, const mla_weights *w,
                           tp_tensor *x, tp_tensor *pos, const text_batch *b);

#endif
