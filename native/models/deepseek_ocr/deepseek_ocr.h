/* deepseek_ocr.h - DeepSeek-OCR v1's vision model (projector type "deepseekocr"): SAM -> CLIP-L fed by
 * SAM features -> linear projector over [CLIP ; SAM] tokens; tiles woven into one grid with a newline
 * after each row, then the global view with newlines, then the view separator. */
#ifndef TP_DEEPSEEK_OCR_H
#define TP_DEEPSEEK_OCR_H

#include "../blocks/sam.h"
#include "../blocks/tiles.h"
#include "../blocks/vit.h"

#define DSOCR_MAX_LAYERS 64

typedef struct dsocr_vision {
    sam_hparams sam_hp;
    sam_weights sam;
    int clip_width, clip_heads, clip_layers, clip_pos_grid; /* pos grid (16) */
    float clip_eps;
    int n_embd;
    tiles_params tiles;
    tp_tensor *class_embd, *clip_pos, *pre_ln_w, *pre_ln_b;
    vit_layer clip[DSOCR_MAX_LAYERS];
    tp_tensor *fc_w, *fc_b;
    tp_tensor *newline, *separator; /* [n_embd] F32 */
} dsocr_vision;

/* CLIP over every group, fed by SAM features; out[g]: [clip_width, 1 + hw, n_views]. */
void dsocr_build_clip(tp_context *ctx, const dsocr_vision *m, const view_group *groups, int n_groups,
                      tp_tensor *const *sam_out, tp_tensor **clip_out);

#endif
