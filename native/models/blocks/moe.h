/* moe.h - the DeepSeek-V2-style feed-forward blocks the text families share: the SwiGLU MLP and the
 * mixture of experts (router, top-k, stacked experts through tp_mul_mat_id, shared experts). */
#ifndef TP_MOE_H
#define TP_MOE_H

#include "../text_model.h"

/* llama.cpp's expert_gating_func values */
#define TP_MOE_GATING_SOFTMAX 1
#define TP_MOE_GATING_SIGMOID 2

typedef struct moe_weights {
    tp_tensor *gate_inp;                        /* router [C, E] (F32) */
    tp_tensor *exp_probs_b;                     /* sigmoid noaux_tc: selection bias [E] (NULL: none) */
    tp_tensor *gate_exps, *up_exps, *down_exps; /* [C, F, E], [C, F, E], [F, C, E] */
    tp_tensor *gate_sh, *up_sh, *down_sh;       /* shared experts fused (NULL: none) */
} moe_weights;

/* SwiGLU MLP: down(silu(gate x) * up x). */
tp_tensor *moe_mlp(tp_context *ctx, tp_tensor *x, tp_tensor *gate, tp_tensor *up, tp_tensor *down);

/* The MoE FFN of x [C, n]. The router: logits = gate_inp·x in F32; scores = softmax (hp->expert_gating 0 / 1)
 * or sigmoid (2) of them; the top n_expert_used of scores (+ exp_probs_b when given: the bias chooses, it
 * never weighs); weights = the chosen scores, divided by their sum when hp->expert_weights_norm, times
 * hp->expert_weights_scale. Returns Σ weights·expert(x) + the shared experts' MLP, [C, n]. */
tp_tensor *moe_ffn(tp_context *ctx, const text_hparams *hp, const moe_weights *w, tp_tensor *x, int64_t n);

/* A DeepSeek layer's feed-forward half over the n rows of x: x + FFN(RMSNorm(x)), FFN the MoE when moe is not
 * NULL, else the dense SwiGLU MLP (gate, up, down). */
tp_tensor *moe_layer_ffn(tp_context *ctx, const text_hparams *hp, tp_tensor *x, tp_tensor *norm, const moe_weights *moe,
                         tp_tensor *gate, tp_tensor *up, tp_tensor *down, int64_t n);

/* The key value of llama.cpp's expert_gating_func that a family accepts: 0 (absent in old files) or 1 is
 * softmax, 2 sigmoid; anything else is refused by the family. */
static inline bool moe_gating_supported(int gating) {
    return gating == 0 || gating == TP_MOE_GATING_SOFTMAX || gating == TP_MOE_GATING_SIGMOID;
}

#endif
