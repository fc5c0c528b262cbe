/* text_decoder.c - the graph of one DeepSeek-OCR decoder pass over n new tokens:
 *   per layer: RMSNorm -> q/k/v -> NeoX rope over the whole head -> new K/V written into the
 *   cache and causal attention over the n_past + n cached positions (blocks/kv_attention.c) -> output projection
 *   -> residual; RMSNorm -> dense SwiGLU MLP, or MoE (blocks/moe.c: F32 softmax router, top-k, raw
 *   probabilities as weights, each expert evaluated once for all its tokens through tp_mul_mat_id, shared
 *   experts added) -> residual;
 *   then the final RMSNorm and lm_head on the rows whose logits are wanted.
 */
#include "deepseek2_text.h"
#include "../blocks/graph_util.h"
#include "../blocks/kv_attention.h"

#include <math.h>

static tp_tensor *reshape3(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1, int64_t ne2) {
    int64_t ne[3] = {ne0, ne1, ne2};
    return tp_reshape(ctx, a, 3, ne);
}

tp_tensor *text_build_graph(tp_context *ctx, tp_graph *g, const text_hparams *hp, const text_weights *w,
                            tp_tensor *x, tp_tensor *pos, const text_batch *b) {
    const int64_t D = hp->head_dim, Dv = hp->head_dim_v, H = hp->n_head, Hkv = hp->n_head_kv, n = b->n_rows;
    for (int l = 0; l < hp->n_layer; l++) {
        const text_layer *ly = &w->layers[l];
        tp_tensor *h = tp_rms_norm(ctx, x, ly->attn_norm, hp->eps);
        tp_tensor *q = reshape3(ctx, tp_mul_mat(ctx, ly->wq, h), D, H, n);
        tp_tensor *k = reshape3(ctx, tp_mul_mat(ctx, ly->wk, h), D, Hkv, n);
        tp_tensor *v = reshape3(ctx, tp_mul_mat(ctx, ly->wv, h), Dv, Hkv, n);
        q = tp_rope_neox(ctx, q, pos, (int)D, hp->rope_base);
        k = tp_rope_neox(ctx, k, pos, (int)D, hp->rope_base);

        /* each sequence attends over its own cache; only the wanted rows of the last layer go on */
        tp_tensor *att = kv_attention_batch(ctx, g, q, k, v, b, l, 1.0f / sqrtf((float)D));
        if (l == hp->n_layer - 1 && b->n_out == 0) break; /* nothing reads the last layer's output */
        x = kv_batch_rows(ctx, x, b, l);
        x = tp_add(ctx, x, tp_mul_mat(ctx, ly->wo, att));

        const int64_t nq = l == hp->n_layer - 1 ? b->n_out : n;
        x = moe_layer_ffn(ctx, hp, x, ly->ffn_norm, ly->moe ? &ly->ffn_moe : NULL, ly->ffn_gate, ly->ffn_up,
                          ly->ffn_down, nq);
    }
    return b->n_out == 0 ? NULL : gu_text_logits(ctx, g, x, w->output_norm, w->output, hp->eps);
}
