/* tiles.h - the preprocessing values of tiled-view models (a whole-image view plus a grid of tiles),
 * read from the vision file: our tile size and pad colour keys, llama.cpp's tile limits, mean and std. */
#ifndef TP_TILES_H
#define TP_TILES_H

#include "tp_internal.h"

typedef struct tiles_params {
    int tile_size, min_tiles, max_tiles, pad_color;
    float mean[3], std[3];
} tiles_params;

/* The file's values, with the given defaults where it has none (a file llama.cpp wrote). */
void tiles_read(const tp_gguf *g, int default_tile, int default_max_tiles, tiles_params *out);
/* Preprocessing parameters: the whole view made with `fit` at `view_size`, tiles of `tile_size` (0: none). */
tp_preprocess_params tiles_preprocess(const tiles_params *t, int fit, int32_t view_size, int32_t tile_size);

/* The token layout of tiled models: views' side × side token grids woven into one (rows·side) × (cols·side) grid
 * (view r·cols + c at row block r, column block c), a newline vector after each of its rows; out must hold
 * rows·side·(cols·side + 1) rows of n_embd floats. Returns the end of what was written. A single view is a
 * 1 × 1 grid. */
float *tiles_weave(float *out, const float *const *views, int32_t cols, int32_t rows, int64_t side, int64_t n_embd,
                   const float *newline);

#endif
