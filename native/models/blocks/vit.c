/* vit.c - see vit.h. */
#include "vit.h"
#include "graph_util.h"
#include "names.h"

void vit_load_layers(weights_loader *L, int64_t C, vit_layer *layers, int n) {
    const bool fused = weights_has_tensorf(L->g, TN_V_QKV_W, 0);
    for (int i = 0; i < n && !L->failed; i++) {
        vit_layer *l = &layers[i];
        l->ln1_w = weights_loadf_f32(L, C, 1, 1, 1, TN_V_LN1_W, i);
        l->ln1_b = weights_loadf_f32(L, C, 1, 1, 1, TN_V_LN1_B, i);
        l->ln2_w = weights_loadf_f32(L, C, 1, 1, 1, TN_V_LN2_W, i);
        l->ln2_b = weights_loadf_f32(L, C, 1, 1, 1, TN_V_LN2_B, i);
        if (fused) {
            l->qkv_w = weights_loadf(L, C, 3 * C, 1, 1, TN_V_QKV_W, i);
            l->qkv_b = weights_loadf_f32(L, 3 * C, 1, 1, 1, TN_V_QKV_B, i);
        } else {
            l->q_w = weights_loadf(L, C, C, 1, 1, TN_V_Q_W, i);
            l->q_b = weights_loadf_f32(L, C, 1, 1, 1, TN_V_Q_B, i);
            l->k_w = weights_loadf(L, C, C, 1, 1, TN_V_K_W, i);
            l->k_b = weights_loadf_f32(L, C, 1, 1, 1, TN_V_K_B, i);
            l->v_w = weights_loadf(L, C, C, 1, 1, TN_V_V_W, i);
            l->v_b = weights_loadf_f32(L, C, 1, 1, 1, TN_V_V_B, i);
        }
        l->out_w = weights_loadf(L, C, C, 1, 1, TN_V_OUT_W, i);
        l->out_b = weights_loadf_f32(L, C, 1, 1, 1, TN_V_OUT_B, i);
        l->fc1_w = weights_loadf(L, C, -1, 1, 1, TN_V_FFN_UP_W, i);
        if (L->failed) break;
        const int64_t ffn = l->fc1_w->ne[1];
        l->fc1_b = weights_loadf_f32(L, ffn, 1, 1, 1, TN_V_FFN_UP_B, i);
        l->fc2_w = weights_loadf(L, ffn, C, 1, 1, TN_V_FFN_DOWN_W, i);
        l->fc2_b = weights_loadf_f32(L, C, 1, 1, 1, TN_V_FFN_DOWN_B, i);
    }
}

tp_tensor *vit_layer_build(tp_context *ctx, tp_tensor *x, const vit_layer *l, const vit_params *p) {
    if (!x) return NULL;
    const int64_t C = x->ne[0], n = x->ne[1], B = x->ne[2], H = p->n_heads, D = C / H;
    tp_tensor *h = tp_layer_norm(ctx, x, l->ln1_w, l->ln1_b, p->eps);
    tp_tensor *q, *k, *v;
    if (l->qkv_w) { /* [3C, n, B]: q | k | v, viewed per head */
        tp_tensor *qkv = gu_linear(ctx, h, l->qkv_w, l->qkv_b);
        if (!qkv) return NULL;
        int64_t ne[4] = {D, H, n, B};
        size_t nb[4] = {sizeof(float), (size_t)D * sizeof(float), qkv->nb[1], qkv->nb[1] * (size_t)n};
        q = tp_view(ctx, qkv, 4, ne, nb, 0);
        k = tp_view(ctx, qkv, 4, ne, nb, (size_t)C * sizeof(float));
        v = tp_view(ctx, qkv, 4, ne, nb, (size_t)(2 * C) * sizeof(float));
    } else {
        q = gu_reshape4(ctx, gu_linear(ctx, h, l->q_w, l->q_b), D, H, n, B);
        k = gu_reshape4(ctx, gu_linear(ctx, h, l->k_w, l->k_b), D, H, n, B);
        v = gu_reshape4(ctx, gu_linear(ctx, h, l->v_w, l->v_b), D, H, n, B);
    }
    if (p->rope) {
        q = p->rope(ctx, q, p->rope_data);
        k = p->rope(ctx, k, p->rope_data);
    }
    /* k and v made contiguous per head: every query tile streams all of a head's keys, and rows a head
     * apart (C floats: 4.6 KB at 1152) spread a key block over a page each (11,088 keys on an A4 page);
     * the copy is a few ms a layer and changes no value; on an A4 page the AVX2 attention ran 1.3x faster */
    tp_tensor *o = tp_attention(ctx, tp_permute(ctx, q, 0, 2, 1, 3), tp_cont(ctx, tp_permute(ctx, k, 0, 2, 1, 3)),
                                tp_cont(ctx, tp_permute(ctx, v, 0, 2, 1, 3)), &p->attention); /* [D, H, n, B] */
    if (!o) return NULL;
    int64_t xne[3] = {C, n, B};
    tp_tensor *attn = gu_linear(ctx, tp_reshape(ctx, o, x->n_dims, xne), l->out_w, l->out_b);
    x = tp_add(ctx, x, attn);
    h = tp_layer_norm(ctx, x, l->ln2_w, l->ln2_b, p->eps);
    h = tp_linear(ctx, l->fc1_w, h, l->fc1_b, p->act == VIT_QUICK_GELU ? TP_ACT_QUICK_GELU : TP_ACT_GELU_TANH);
    return tp_add(ctx, x, gu_linear(ctx, h, l->fc2_w, l->fc2_b));
}

int vit_matrices(vit_layer *layers, int n_layers, tp_tensor ***slots, int cap) {
    int n = 0;
    for (int i = 0; i < n_layers; i++) {
        vit_layer *l = &layers[i];
        tp_tensor **mine[] = {&l->qkv_w, &l->q_w, &l->k_w, &l->v_w, &l->out_w, &l->fc1_w, &l->fc2_w};
        for (size_t j = 0; j < sizeof mine / sizeof mine[0]; j++)
            if (*mine[j] && n < cap) slots[n++] = mine[j];
    }
    return n;
}

const tp_tensor *vit_probe(const vit_layer *l) { return l->qkv_w ? l->qkv_w : l->q_w; }
