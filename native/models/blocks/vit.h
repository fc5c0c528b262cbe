/* vit.h - the pre-LN transformer layer of the ViT towers (PaddleOCR-VL's SigLIP, DeepSeek-VL2's SigLIP,
 * DeepSeek-OCR's CLIP): x += out(attention(LN1 x)); x += fc2(act(fc1(LN2 x))), every projection with a bias.
 * The files store q/k/v fused (`qkv`) or split (`attn_q`/`attn_k`/`attn_v`); the loader takes either. */
#ifndef TP_VIT_H
#define TP_VIT_H

#include "../vision_family.h"

typedef struct vit_layer {
    tp_tensor *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    tp_tensor *qkv_w, *qkv_b;                     /* fused [C, 3C] (NULL when split) */
    tp_tensor *q_w, *q_b, *k_w, *k_b, *v_w, *v_b; /* split (NULL when fused) */
    tp_tensor *out_w, *out_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} vit_layer;

typedef enum vit_act { VIT_GELU_TANH, VIT_QUICK_GELU } vit_act;

typedef struct vit_params {
    int64_t n_heads;
    float eps;
    vit_act act;
    tp_attention_opts attention; /* scale, segments */
    /* Optional: turns q and k ([head_dim, n_heads, n, B]) before attention (PaddleOCR-VL's 2-D RoPE). */
    tp_tensor *(*rope)(tp_context *ctx, tp_tensor *qk, const void *data);
    const void *rope_data;
} vit_params;

/* Layers 0 .. n − 1 of width C, shapes checked: fused q/k/v when the file has layer 0's qkv, else split. */
void vit_load_layers(weights_loader *L, int64_t C, vit_layer *layers, int n);
/* One layer over x [C, n] or [C, n, B] (B views of n tokens; attention within each view, and within each
 * segment of p->attention.segments). */
tp_tensor *vit_layer_build(tp_context *ctx, tp_tensor *x, const vit_layer *l, const vit_params *p);
/* The slots of the layers' matrices (the int8 re-quantisation's list), at most cap; returns the count. */
int vit_matrices(vit_layer *layers, int n_layers, tp_tensor ***slots, int cap);
/* A representative matrix of a layer (its q/k/v projection, fused or not). */
const tp_tensor *vit_probe(const vit_layer *l);

#endif
