/* text_model.h - what every text model shares: its hyperparameters (the union of what the families
 * read; a family leaves fields it does not use at 0) and its vocabulary as raw bytes (text_vocab.c). The
 * public API (KV cache, batching, tokens) is models/text.c; each family's weights and graph are in its
 * folder. */
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
    int expert_gating;         /* TP_MOE_GATING_SOFTMAX (1; 0 reads as 1) or TP_MOE_GATING_SIGMOID (2), llama.cpp's values */
    bool expert_weights_norm;  /* the chosen experts' weights divided by their sum */
    /* multi-head latent attention (deepseek2; 0 elsewhere): head_dim / head_dim_v are then the cached latent's
     * widths (kv_lora + rope / kv_lora) and n_head_kv 1 */
    int q_lora_rank, kv_lora_rank, rope_dim, head_dim_mla, head_dim_v_mla;
    int bos_id, eos_id, pad_id, image_token_id;
    int n_pos_axes;              /* position axes of the rope (1; M-RoPE: 3); 0 reads as 1 */
    int32_t rope_sections[4];    /* M-RoPE: rotation pairs per axis */
} text_hparams;

/* The layout of one decoder pass over several sequences (models/text.c builds it, the families read it):
 * the token matrix x [n_embd, n_rows] is the concatenation of the segments' rows, in order; segment s has n
 * new tokens after its n_past cached ones, attends only over its own cache (kcache/vcache: its leaves, one
 * per layer), and wants the logits of its last n_out rows (0..n). Everything but attention runs once over
 * all rows; the last layer keeps, per segment, only the rows whose logits are wanted (n_out in total). */
typedef struct text_segment {
    int64_t n_past, n, n_out;
    tp_tensor *const *kcache, *const *vcache; /* [n_layer] leaves [head_dim(_v), n_head_kv, n_ctx of the sequence] */
} text_segment;

typedef struct text_batch {
    int n_layer;
    int64_t n_seg, n_rows, n_out; /* n_rows = Σ n, n_out = Σ n_out */
    const text_segment *seg;
} text_batch;

/* Token strings decoded to raw bytes: token i is bytes[offs[i] .. offs[i + 1]). */
typedef struct text_vocab {
    int64_t n;
    int64_t *offs;
    char *bytes;
} text_vocab;
tp_status text_load_vocab(const tp_gguf *g, const char *path, int64_t n_vocab, text_vocab *v, tp_error *err);
void text_vocab_free(text_vocab *v);

/* The open file of a loaded model (models/text.c): its keys (tokenizer.chat_template) stay readable. */
const tp_gguf *text_model_gguf(const tp_text_model *m);

#endif
