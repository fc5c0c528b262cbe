/* vision_family.h - what a vision model family gives the generic vision API (models/vision.c): its
 * hyperparameters and weights bound once at load, its image modes (how a page becomes views), the graph
 * over groups of same-size views, and the page's token layout. One family per folder
 * (models/<family>/vision.c); models/registry.c maps a file's projector type to its family. */
#ifndef TP_VISION_FAMILY_H
#define TP_VISION_FAMILY_H

#include "tp_internal.h"
#include "prompt.h"
#include "weights.h"

#define TP_VISION_MAX_GROUPS 64
#define TP_VISION_MAX_STAGES 4
#define TP_VISION_MAX_MODES 8
#define TP_VISION_MAX_MATRICES 1024

/* Views of one size inside one graph: their pixels lie in one [3, width, height, n_views] leaf. */
typedef struct view_group {
    int width, height;
    int n_views;
    tp_tensor *pixels;
} view_group;

/* What a family's graph gives, per group. Every tensor is contiguous with the view as its last dim. */
typedef struct vision_graph {
    tp_tensor *tokens[TP_VISION_MAX_GROUPS]; /* [n_embd, tokens of one view, n_views]: projected tokens */
    int n_stages;
    const char *stage_names[TP_VISION_MAX_STAGES];
    tp_tensor *stages[TP_VISION_MAX_STAGES][TP_VISION_MAX_GROUPS];
} vision_graph;

/* An image mode: its name and how an image becomes the views of a page. */
typedef struct vision_mode {
    const char *name;
    tp_preprocess_params params;
} vision_mode;

typedef struct vision_family {
    const char *name;           /* folder name, e.g. "deepseek_ocr" */
    const char *projector_type; /* clip.projector_type of its files */
    /* the no-repeat rule of the family's official runner: n-gram size in a window of generated tokens */
    int no_repeat_ngram, no_repeat_window;
    /* how its prompts are built around a page's image tokens (models/<family>/prompt.c) */
    const prompt_family *prompt;
    /* Read hyperparameters and bind every weight as a leaf of L->ctx (the model's weights context). */
    tp_status (*load)(weights_loader *L, void **model);
    void (*free)(void *model);
    int64_t (*n_embd)(const void *model);
    /* Image modes (the first is the default); returns their count. */
    int (*modes)(const void *model, vision_mode *out, int cap);
    /* Whether a view of this size can be encoded. */
    bool (*view_ok)(const void *model, int width, int height);
    /* Laid-out tokens of a page whose views are valid; -1 if the page's arrangement is not one this
     * family makes. */
    int64_t (*page_n_tokens)(const void *model, const tp_page_views *page);
    /* The graph over every group (into ctx, a child of the weights context). */
    void (*build)(const void *model, tp_context *ctx, const view_group *groups, int n_groups, bool keep_stages,
                  vision_graph *out);
    /* One page's tokens from its views' projected rows (row-major [tokens of the view, n_embd] each). */
    void (*layout)(const void *model, const tp_page_views *page, const float *const *view_rows, float *out);
    /* The weight matrices the graph multiplies (TP_PRECISION_INT8 re-stores them as Q8_0): slots
     * into the family's weights; returns the count. */
    int (*matrices)(void *model, tp_tensor ***slots, int cap);
    /* A representative matrix (what auto precision looks at). */
    const tp_tensor *(*probe_matrix)(const void *model);
} vision_family;

/* The family of a loaded model (models/vision.c). */
const vision_family *vision_model_family(const tp_vision_model *m);

#endif
