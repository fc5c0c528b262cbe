/* sam.h - SAM ViT-B, the first stage of DeepSeek-OCR v1 and 2: patch + position embedding, windowed and
 * global blocks with decomposed relative positions, neck and the two stride-2 compressor convs. */
#ifndef TP_SAM_H
#define TP_SAM_H

#include "../vision_family.h"

#define SAM_MAX_BLOCKS 64

typedef struct sam_block {
    tp_tensor *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    tp_tensor *qkv_w, *qkv_b, *out_w, *out_b;
    tp_tensor *pos_h, *pos_w; /* [head_dim, 2·size − 1] */
    tp_tensor *mlp1_w, *mlp1_b, *mlp2_w, *mlp2_b;
    bool global; /* attends over the whole grid (else window×window windows) */
} sam_block;

typedef struct sam_hparams {
    int width, heads, n_blocks;
    int patch_size, window_size, pos_grid; /* pos-embed grid (64) */
    int image_size;                        /* the view its tables are made for (1024) */
    int out_channels;                      /* net_3's */
    int downsample;                        /* view pixels per output token: patch · 4 */
    float eps;
} sam_hparams;

typedef struct sam_weights {
    tp_tensor *patch_w, *patch_b, *pos_embd;
    sam_block blocks[SAM_MAX_BLOCKS];
    tp_tensor *neck0_w, *neck1_w, *neck1_b, *neck2_w, *neck3_w, *neck3_b, *net2_w, *net3_w;
} sam_weights;

/* Hyperparameters (our keys, llama.cpp's keys, tensor shapes, llama.cpp's hard-coded values) and every
 * weight, shapes checked. */
tp_status sam_load(weights_loader *L, sam_hparams *hp, sam_weights *w);
/* The output grid side of a view of `side` pixels, 0 when SAM cannot take it. */
int sam_out_grid(const sam_hparams *hp, int side);
/* SAM over every group (square views); out[g]: [out_channels, grid, grid, n_views] per group. */
void sam_build(tp_context *ctx, const sam_hparams *hp, const sam_weights *w, const view_group *groups, int n_groups,
               tp_tensor **out);
/* Slots of SAM's matrices (for TP_PRECISION_INT8); returns the count written (at most cap). */
int sam_matrices(sam_weights *w, const sam_hparams *hp, tp_tensor ***slots, int cap);

#endif
