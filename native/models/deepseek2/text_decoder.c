/* text_decoder.c - the graph of one deepseek2 decoder pass over a batch of sequences' new tokens, multi-head latent attention
 * in llama.cpp's absorbed form:
 *   q = attn_q·h, or attn_q_b·RMSNorm(attn_q_a·h) (q LoRA), per head [q_nope | q_pe];
 *   attn_kv_a_mqa·h = [c (kv_lora) | k_pe (rope, one head shared by all)], c = RMSNorm(c);
 *   q_pe and k_pe roped over adjacent pairs (2i, 2i+1) turning by θ^(−2i/rope): the pairs are first
 *   de-interleaved to [evens | odds] and NeoX-rotated, exactly as the official code does; q and k are both
 *   left in that order, so their dot products are those of the pairwise rotation;
 *   k_b absorbed into q: q_abs = attn_k_b·q_nope per head ([kv_lora]), query [q_abs | q_pe];
 *   the cache gets ONE head per token: key [c | k_pe], value c (blocks/kv_attention.c, n_head_kv 1);
 *   attention scaled by 1/√(nope + rope) gives [kv_lora] per head; v_b applied after it (attn_v_b per head),
 *   then attn_output -> residual;
 *   RMSNorm -> dense SwiGLU MLP or MoE (blocks/moe.c: softmax or sigmoid + exp_probs_b router) -> residual;
 *   the final RMSNorm and the output head on the rows whose logits are wanted. */
#include "mla_text.h"
#include "../blocks/graph_util.h"
#include "../blocks/kv_attention.h"

#include <math.h>

/* RoPE of the adjacent pairs of x [rope, heads, n] (a view: element i of head h of token t at
 * x->nb[0]·i + nb1·h + nb2·t): reorder to [x0 x2 … | x1 x3 …], then rotate halves. Returns [rope, heads, n]. */
static tp_tensor *rope_pairs(tp_context *ctx, tp_tensor *src, size_t offs, int64_t rope, int64_t heads, int64_t n,
                             size_t nb1, size_t nb2, tp_tensor *pos, float base) {
    int64_t ne[4] = {2, rope / 2, heads, n};
    size_t nb[4] = {sizeof(float), 2 * sizeof(float), nb1, nb2};
    tp_tensor *pairs = tp_view(ctx, src, 4, ne, nb, offs);
    tp_tensor *halves = tp_cont(ctx, tp_permute(ctx, pairs, 1, 0, 2, 3)); /* [rope/2, 2, heads, n] */
    return tp_rope_neox(ctx, gu_reshape3(ctx, halves, rope, heads, n), pos, (int)rope, base);
}

/* [a, b, c] -> [a, c, b], contiguous. */
static tp_tensor *swap12(tp_context *ctx, tp_tensor *a) { return tp_cont(ctx, tp_permute(ctx, a, 0, 2, 1, 3)); }

/* Returns attn_output of the rows kept in layer l (kv_attention_batch); NULL when none is kept. */
static tp_tensor *attention(tp_context *ctx, tp_graph *g, const text_hparams *hp, const mla_layer *ly, tp_tensor *h,
                            tp_tensor *pos, const text_batch *b, int l) {
    const int64_t H = hp->n_head, R = hp->kv_lora_rank, rope = hp->rope_dim, Dk = hp->head_dim_mla, n = b->n_rows;
    const int64_t nq = l == hp->n_layer - 1 ? b->n_out : n;
    const int64_t nope = Dk - rope, Dv = hp->head_dim_v_mla;
    tp_tensor *q = ly->wq ? tp_mul_mat(ctx, ly->wq, h)
                          : tp_mul_mat(ctx, ly->wq_b, tp_rms_norm(ctx, tp_mul_mat(ctx, ly->wq_a, h), ly->wq_a_norm, hp->eps));
    q = gu_reshape3(ctx, q, Dk, H, n); /* per head [q_nope | q_pe] */
    if (!q) return NULL;
    const size_t qnb1 = q->nb[1], qnb2 = q->nb[2];
    tp_tensor *q_pe = rope_pairs(ctx, q, (size_t)nope * sizeof(float), rope, H, n, qnb1, qnb2, pos, hp->rope_base);
    int64_t nne[3] = {nope, H, n};
    size_t nnb[3] = {sizeof(float), qnb1, qnb2};
    tp_tensor *q_nope = swap12(ctx, tp_view(ctx, q, 3, nne, nnb, 0));               /* [nope, n, H] */
    tp_tensor *q_abs = tp_permute(ctx, tp_mul_mat(ctx, ly->wk_b, q_nope), 0, 2, 1, 3); /* [R, H, n] */
    tp_tensor *q_full = tp_concat(ctx, q_abs, q_pe, 0);                              /* [R + rope, H, n] */

    tp_tensor *kv = tp_mul_mat(ctx, ly->wkv_a_mqa, h); /* [R + rope, n] */
    if (!kv) return NULL;
    int64_t cne[2] = {R, n};
    size_t cnb[2] = {sizeof(float), kv->nb[1]};
    tp_tensor *c = tp_rms_norm(ctx, tp_view(ctx, kv, 2, cne, cnb, 0), ly->wkv_a_norm, hp->eps);
    c = gu_reshape3(ctx, c, R, 1, n);
    tp_tensor *k_pe = rope_pairs(ctx, kv, (size_t)R * sizeof(float), rope, 1, n, kv->nb[1], kv->nb[1], pos, hp->rope_base);
    tp_tensor *k = tp_concat(ctx, c, k_pe, 0); /* [R + rope, 1, n] */

    tp_tensor *att = kv_attention_batch(ctx, g, q_full, k, c, b, l, 1.0f / sqrtf((float)Dk)); /* [R·H, nq] */
    if (!att) return NULL;
    att = swap12(ctx, gu_reshape3(ctx, att, R, H, nq));                               /* [R, nq, H] */
    tp_tensor *o = swap12(ctx, tp_mul_mat(ctx, ly->wv_b, att));                       /* [Dv, H, nq] */
    return tp_mul_mat(ctx, ly->wo, gu_reshape2(ctx, o, Dv * H, nq));
}

tp_tensor *mla_build_graph(tp_context *ctx, tp_graph *g, const text_hparams *hp, const mla_weights *w,
                           tp_tensor *x, tp_tensor *pos, const text_batch *b) {
    for (int l = 0; l < hp->n_layer; l++) {
        const mla_layer *ly = &w->layers[l];
        tp_tensor *h = tp_rms_norm(ctx, x, ly->attn_norm, hp->eps);
        /* each sequence attends over its own cache; only the wanted rows of the last layer go on */
        tp_tensor *att = attention(ctx, g, hp, ly, h, pos, b, l);
        if (l == hp->n_layer - 1 && b->n_out == 0) break; /* nothing reads the last layer's output */
        x = tp_add(ctx, kv_batch_rows(ctx, x, b, l), att);
        const int64_t nq = l == hp->n_layer - 1 ? b->n_out : b->n_rows;
        x = moe_layer_ffn(ctx, hp, x, ly->ffn_norm, ly->moe ? &ly->ffn_moe : NULL, ly->ffn_gate, ly->ffn_up,
                          ly->ffn_down, nq);
    }
    return b->n_out == 0 ? NULL : gu_text_logits(ctx, g, x, w->output_norm, w->output, hp->eps);
}
