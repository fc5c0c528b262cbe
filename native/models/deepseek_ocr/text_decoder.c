/* text_decoder.c - the graph of one DeepSeek-OCR decoder pass over n new tokens:
 *   per layer: RMSNorm -> q/k/v -> NeoX rope over the whole head -> new K/V written into the
 *   cache and causal attention over the n_past + n cached positions (blocks/kv_attention.c) -> output projection
 *   -> residual; RMSNorm -> dense SwiGLU MLP, or MoE (F32 softmax router, top-k, raw probabilities as
 *   weights, each expert evaluated once for all its tokens through tp_mul_mat_id, shared experts
 *   added) -> residual;
 *   then the final RMSNorm and lm_head on the rows whose logits are wanted.
 */
#include "deepseek2_text.h"
#include "../blocks/kv_attention.h"

#include <math.h>

static tp_tensor *reshape2(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1) {
    int64_t ne[2] = {ne0, ne1};
    return tp_reshape(ctx, a, 2, ne);
}

static tp_tensor *reshape3(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1, int64_t ne2) {
    int64_t ne[3] = {ne0, ne1, ne2};
    return tp_reshape(ctx, a, 3, ne);
}

/* SwiGLU MLP: down(silu(gate x) * up x). */
static tp_tensor *mlp(tp_context *ctx, tp_tensor *x, tp_tensor *gate, tp_tensor *up, tp_tensor *down) {
    tp_tensor *g = tp_silu(ctx, tp_mul_mat(ctx, gate, x));
    tp_tensor *u = tp_mul_mat(ctx, up, x);
    return tp_mul_mat(ctx, down, tp_mul(ctx, g, u));
}

static tp_tensor *moe(tp_context *ctx, const text_hparams *hp, const text_layer *ly, tp_tensor *x, int64_t n) {
    const int64_t E = hp->n_expert, k = hp->n_expert_used, C = hp->n_embd;
    tp_tensor *logits = tp_mul_mat(ctx, ly->gate_inp, x);        /* [E, n], F32 router */
    tp_tensor *probs = tp_softmax(ctx, logits, NULL, 1.0f);        /* [E, n] */
    tp_tensor *ids = tp_top_k(ctx, probs, (int)k);                 /* I32 [k, n] */
    tp_tensor *weights = tp_get_rows(ctx, reshape3(ctx, probs, 1, E, n), ids); /* [1, k, n] */
    if (hp->expert_weights_scale != 1.0f) weights = tp_scale(ctx, weights, hp->expert_weights_scale);
    tp_tensor *x3 = reshape3(ctx, x, C, 1, n);
    tp_tensor *g = tp_silu(ctx, tp_mul_mat_id(ctx, ly->gate_exps, x3, ids)); /* [F, k, n] */
    tp_tensor *u = tp_mul_mat_id(ctx, ly->up_exps, x3, ids);
    tp_tensor *d = tp_mul_mat_id(ctx, ly->down_exps, tp_mul(ctx, g, u), ids); /* [C, k, n] */
    d = tp_mul(ctx, d, weights);
    tp_tensor *out = NULL;
    for (int64_t s = 0; s < k && d; s++) {
        int64_t ne[2] = {C, n};
        size_t nb[2] = {sizeof(float), d->nb[2]};
        tp_tensor *slot = tp_view(ctx, d, 2, ne, nb, (size_t)s * d->nb[1]);
        out = out ? tp_add(ctx, out, slot) : (k == 1 ? tp_cont(ctx, slot) : slot);
    }
    if (ly->gate_sh) out = tp_add(ctx, out, mlp(ctx, x, ly->gate_sh, ly->up_sh, ly->down_sh));
    return out;
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
        h = tp_rms_norm(ctx, x, ly->ffn_norm, hp->eps);
        tp_tensor *f = ly->moe ? moe(ctx, hp, ly, h, nq) : mlp(ctx, h, ly->ffn_gate, ly->ffn_up, ly->ffn_down);
        x = tp_add(ctx, x, f);
    }
    if (b->n_out == 0) return NULL;
    x = tp_rms_norm(ctx, x, w->output_norm, hp->eps);
    tp_tensor *logits = tp_mul_mat(ctx, w->output, x);
    tp_graph_add_output(g, logits);
    return logits;
}
