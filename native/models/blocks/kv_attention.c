/* kv_attention.c - see kv_attention.h. The KV cache of a layer is [head_dim, n_head_kv, n_ctx] (F32, F16 or
 * Q8_0; tp_cpy rounds the new rows and attention reads them directly): a token's keys are contiguous, so the
 * n new tokens are one contiguous block. */
#include "kv_attention.h"

tp_tensor *kv_attention(tp_context *ctx, tp_graph *g, tp_tensor *q, tp_tensor *k, tp_tensor *v, tp_tensor *kc,
                        tp_tensor *vc, int64_t n_past, int64_t n_rows, float scale) {
    if (!q || !k || !v || !kc || !vc) return NULL;
    const int64_t D = q->ne[0], H = q->ne[1], n = q->ne[2], Dv = v->ne[0], Hkv = k->ne[1], n_kv = n_past + n;
    /* write the new keys/values at rows n_past.. of the cache */
    int64_t kne[3] = {D, Hkv, n}, vne[3] = {Dv, Hkv, n};
    size_t knb[3] = {kc->nb[0], kc->nb[1], kc->nb[2]}, vnb[3] = {vc->nb[0], vc->nb[1], vc->nb[2]};
    tp_tensor *kw = tp_cpy(ctx, k, tp_view(ctx, kc, 3, kne, knb, (size_t)n_past * kc->nb[2]));
    tp_tensor *vw = tp_cpy(ctx, v, tp_view(ctx, vc, 3, vne, vnb, (size_t)n_past * vc->nb[2]));
    tp_graph_add_output(g, kw);
    tp_graph_add_output(g, vw);

    /* attend over all n_kv cached positions: [D, n_kv, Hkv] views ordered after the writes */
    int64_t kall_ne[3] = {D, n_kv, Hkv}, vall_ne[3] = {Dv, n_kv, Hkv};
    size_t kall_nb[3] = {kc->nb[0], kc->nb[2], kc->nb[1]}, vall_nb[3] = {vc->nb[0], vc->nb[2], vc->nb[1]};
    tp_tensor *kall = tp_view(ctx, kc, 3, kall_ne, kall_nb, 0);
    tp_tensor *vall = tp_view(ctx, vc, 3, vall_ne, vall_nb, 0);
    if (!kall || !vall || !kw || !vw) return NULL;
    kall->src[1] = kw;
    vall->src[1] = vw;
    if (n_rows == 0) return NULL;
    tp_tensor *qp = tp_permute(ctx, q, 0, 2, 1, 3); /* [D, n, H] */
    if (n_rows < n) {
        int64_t qne[3] = {D, n_rows, H};
        size_t qnb[3] = {sizeof(float), qp->nb[1], qp->nb[2]};
        qp = tp_view(ctx, qp, 3, qne, qnb, (size_t)(n - n_rows) * qp->nb[1]);
    }
    tp_attention_opts ao = tp_attention_default_opts();
    ao.scale = scale;
    ao.causal = true;
    tp_tensor *att = tp_attention(ctx, qp, kall, vall, &ao); /* [Dv, H, n_rows] */
    int64_t ne[2] = {Dv * H, n_rows};
    return tp_reshape(ctx, att, 2, ne);
}

tp_tensor *kv_last_rows(tp_context *ctx, tp_tensor *x, int64_t n_rows) {
    if (!x || n_rows == x->ne[1]) return x;
    int64_t ne[2] = {x->ne[0], n_rows};
    size_t nb[2] = {sizeof(float), x->nb[1]};
    return tp_view(ctx, x, 2, ne, nb, (size_t)(x->ne[1] - n_rows) * x->nb[1]);
}

/* Rows [r0, r0 + n) of a [.., .., N] tensor (its last dimension). */
static tp_tensor *rows3(tp_context *ctx, tp_tensor *a, int64_t r0, int64_t n) {
    if (!a || (r0 == 0 && n == a->ne[2])) return a;
    int64_t ne[3] = {a->ne[0], a->ne[1], n};
    size_t nb[3] = {a->nb[0], a->nb[1], a->nb[2]};
    return tp_view(ctx, a, 3, ne, nb, (size_t)r0 * a->nb[2]);
}

static tp_tensor *join_rows(tp_context *ctx, tp_tensor *acc, tp_tensor *a) {
    if (!a) return acc;
    return acc ? tp_concat(ctx, acc, a, 1) : a;
}

tp_tensor *kv_attention_batch(tp_context *ctx, tp_graph *g, tp_tensor *q, tp_tensor *k, tp_tensor *v,
                              const text_batch *b, int layer, float scale) {
    if (!q || !k || !v || !b) return NULL;
    const bool last = layer == b->n_layer - 1;
    tp_tensor *out = NULL;
    int64_t r0 = 0;
    for (int64_t s = 0; s < b->n_seg; s++) {
        const text_segment *sg = &b->seg[s];
        const int64_t keep = last ? sg->n_out : sg->n;
        tp_tensor *att = kv_attention(ctx, g, rows3(ctx, q, r0, sg->n), rows3(ctx, k, r0, sg->n),
                                      rows3(ctx, v, r0, sg->n), sg->kcache[layer], sg->vcache[layer], sg->n_past, keep,
                                      scale);
        out = join_rows(ctx, out, att);
        r0 += sg->n;
    }
    return out;
}

tp_tensor *kv_batch_rows(tp_context *ctx, tp_tensor *x, const text_batch *b, int layer) {
    if (!x || layer != b->n_layer - 1 || b->n_out == b->n_rows) return x;
    tp_tensor *out = NULL;
    int64_t r0 = 0;
    for (int64_t s = 0; s < b->n_seg; s++) {
        const text_segment *sg = &b->seg[s];
        if (sg->n_out > 0) {
            int64_t ne[2] = {x->ne[0], sg->n_out};
            size_t nb[2] = {x->nb[0], x->nb[1]};
            out = join_rows(ctx, out, tp_view(ctx, x, 2, ne, nb, (size_t)(r0 + sg->n - sg->n_out) * x->nb[1]));
        }
        r0 += sg->n;
    }
    return out;
}
