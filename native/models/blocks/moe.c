/* moe.c - see moe.h. Each routed expert is evaluated once for all the tokens sent to it (tp_mul_mat_id);
 * the k slot outputs are summed through views. */
#include "moe.h"
#include "graph_util.h"

tp_tensor *moe_mlp(tp_context *ctx, tp_tensor *x, tp_tensor *gate, tp_tensor *up, tp_tensor *down) {
    tp_tensor *g = tp_silu(ctx, tp_mul_mat(ctx, gate, x));
    tp_tensor *u = tp_mul_mat(ctx, up, x);
    return tp_mul_mat(ctx, down, tp_mul(ctx, g, u));
}

/* The sum over dim 1 of a [ne0, k, n] tensor: [ne0, n] (a view when k == 1 unless cont asked for). */
static tp_tensor *sum_slots(tp_context *ctx, tp_tensor *d, int64_t k, bool cont_single) {
    tp_tensor *out = NULL;
    for (int64_t s = 0; s < k && d; s++) {
        int64_t ne[2] = {d->ne[0], d->ne[2]};
        size_t nb[2] = {d->nb[0], d->nb[2]};
        tp_tensor *slot = tp_view(ctx, d, 2, ne, nb, (size_t)s * d->nb[1]);
        out = out ? tp_add(ctx, out, slot) : (k == 1 && cont_single ? tp_cont(ctx, slot) : slot);
    }
    return out;
}

tp_tensor *moe_ffn(tp_context *ctx, const text_hparams *hp, const moe_weights *w, tp_tensor *x, int64_t n) {
    const int64_t E = hp->n_expert, k = hp->n_expert_used, C = hp->n_embd;
    tp_tensor *logits = tp_mul_mat(ctx, w->gate_inp, x); /* [E, n], F32 router */
    const bool sigmoid = hp->expert_gating == TP_MOE_GATING_SIGMOID;
    tp_tensor *probs = sigmoid ? tp_sigmoid(ctx, logits) : tp_softmax(ctx, logits, NULL, 1.0f); /* [E, n] */
    tp_tensor *choice = w->exp_probs_b ? tp_add(ctx, probs, w->exp_probs_b) : probs;
    tp_tensor *ids = tp_top_k(ctx, choice, (int)k);                                      /* I32 [k, n] */
    tp_tensor *weights = tp_get_rows(ctx, gu_reshape3(ctx, probs, 1, E, n), ids);        /* [1, k, n] */
    if (hp->expert_weights_norm && k > 1) {
        tp_tensor *sum = sum_slots(ctx, weights, k, false);                              /* [1, n] */
        weights = tp_div(ctx, weights, gu_reshape3(ctx, sum, 1, 1, n));
    }
    if (hp->expert_weights_scale != 1.0f) weights = tp_scale(ctx, weights, hp->expert_weights_scale);
    tp_tensor *x3 = gu_reshape3(ctx, x, C, 1, n);
    tp_tensor *g = tp_silu(ctx, tp_mul_mat_id(ctx, w->gate_exps, x3, ids)); /* [F, k, n] */
    tp_tensor *u = tp_mul_mat_id(ctx, w->up_exps, x3, ids);
    tp_tensor *d = tp_mul_mat_id(ctx, w->down_exps, tp_mul(ctx, g, u), ids); /* [C, k, n] */
    d = tp_mul(ctx, d, weights);
    tp_tensor *out = sum_slots(ctx, d, k, true);
    if (w->gate_sh) out = tp_add(ctx, out, moe_mlp(ctx, x, w->gate_sh, w->up_sh, w->down_sh));
    return out;
}

tp_tensor *moe_layer_ffn(tp_context *ctx, const text_hparams *hp, tp_tensor *x, tp_tensor *norm, const moe_weights *moe,
                         tp_tensor *gate, tp_tensor *up, tp_tensor *down, int64_t n) {
    tp_tensor *h = tp_rms_norm(ctx, x, norm, hp->eps);
    return tp_add(ctx, x, moe ? moe_ffn(ctx, hp, moe, h, n) : moe_mlp(ctx, h, gate, up, down));
}
