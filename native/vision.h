/* vision.h - the DeepSeek-OCR v1 vision encoder's weights, hyperparameters and graph pieces.
 * Loading is in vision_load.c, SAM in vision_sam.c, CLIP in vision_clip.c, and the page-level
 * pass (grouping views by size, projector, layout) in vision_encode.c. */
#ifndef TP_VISION_H
#define TP_VISION_H

#include "tp_internal.h"

#define TP_VISION_MAX_BLOCKS 64

typedef struct sam_block {
    tp_tensor *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    tp_tensor *qkv_w, *qkv_b, *out_w, *out_b;
    tp_tensor *pos_h, *pos_w; /* [head_dim, 2·size − 1] */
    tp_tensor *mlp1_w, *mlp1_b, *mlp2_w, *mlp2_b;
    bool global; /* attends over the whole grid (else 14×14 windows) */
} sam_block;

typedef struct clip_layer {
    tp_tensor *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    tp_tensor *qkv_w, *qkv_b, *out_w, *out_b;
    tp_tensor *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} clip_layer;

typedef struct vision_hparams {
    int image_size, tile_size, patch_size, window_size, downsample;
    int min_tiles, max_tiles, pad_color;
    float mean[3], std[3];
    int sam_width, sam_heads, sam_blocks, sam_pos_grid; /* pos-embed grid (64) */
    int sam_out;                                         /* net_3 channels (= CLIP width) */
    float sam_eps;
    int clip_width, clip_heads, clip_layers, clip_pos_grid; /* pos grid (16) */
    float clip_eps;
    int n_embd; /* projector output */
} vision_hparams;

/* The weight tensors, created in whatever context they are imported into. */
typedef struct vision_weights {
    tp_tensor *patch_w, *patch_b, *pos_embd;
    sam_block sam[TP_VISION_MAX_BLOCKS];
    tp_tensor *neck0_w, *neck1_w, *neck1_b, *neck2_w, *neck3_w, *neck3_b, *net2_w, *net3_w;
    tp_tensor *class_embd, *clip_pos, *pre_ln_w, *pre_ln_b;
    clip_layer clip[TP_VISION_MAX_BLOCKS];
    tp_tensor *fc_w, *fc_b;
    tp_tensor *newline, *separator;
} vision_weights;

/* A group of same-size views inside one graph: their tokens lie contiguously. */
typedef struct view_group {
    int side;      /* pixels */
    int n_views;
    int grid;      /* side / patch */
    int out_grid;  /* grid / downsample */
    tp_tensor *pixels; /* [3, side, side, n_views] input leaf */
} view_group;

/* SAM over every group; returns one [sam_out, out_grid, out_grid, n_views] tensor per group. */
void vision_build_sam(tp_context *ctx, const vision_hparams *hp, const vision_weights *w,
                      view_group *groups, int n_groups, tp_tensor **sam_out);

/* CLIP over every group, fed by SAM features; returns one [clip_width, 1 + hw, n_views] per group. */
void vision_build_clip(tp_context *ctx, const vision_hparams *hp, const vision_weights *w,
                       const view_group *groups, int n_groups, tp_tensor *const *sam_out,
                       tp_tensor **clip_out);

/* Helpers shared by the builders (vision_sam.c). */
tp_tensor *vision_linear(tp_context *ctx, tp_tensor *x, tp_tensor *w, tp_tensor *b);
tp_tensor *vision_reshape2(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1);
tp_tensor *vision_reshape3(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1, int64_t ne2);
tp_tensor *vision_reshape4(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1, int64_t ne2,
                           int64_t ne3);
/* Tokens [C, n] of a contiguous 2-D tensor, columns [first, first + n). */
tp_tensor *vision_cols(tp_context *ctx, tp_tensor *a, int64_t first, int64_t n);
/* Bicubic-antialias resize of a [C, g, g, 1] grid to [C, to, to, 1] (as PyTorch does on NCHW). */
tp_tensor *vision_resize_grid(tp_context *ctx, tp_tensor *grid_cwh, int64_t to);
/* Concatenate n tensors along dim (n may be 1). */
tp_tensor *vision_concat_n(tp_context *ctx, tp_tensor *const *parts, int n, int dim);

#endif
