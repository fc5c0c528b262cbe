/* tiles.c - see tiles.h. */
#include "tiles.h"
#include "names.h"
#include "weights.h"

void tiles_read(const tp_gguf *g, int default_tile, int default_max_tiles, tiles_params *out) {
    out->tile_size = weights_get_int(g, KEY_TP_TILE_SIZE, 1, TP_IMAGE_MAX_SIDE, default_tile);
    int64_t pad;
    out->pad_color = tp_gguf_get_arr_i64(g, KEY_TP_PAD_COLOR, 0, &pad) == TP_OK && pad >= 0 && pad < 256
                         ? (int)pad
                         : weights_get_int(g, KEY_TP_PAD_COLOR, 0, 255, 127);
    out->min_tiles = weights_get_int(g, KEY_V_MIN_TILES, 1, TP_IMAGE_MAX_TILES, 2);
    out->max_tiles = weights_get_int(g, KEY_V_MAX_TILES, out->min_tiles, TP_IMAGE_MAX_TILES,
                                     default_max_tiles < out->min_tiles ? out->min_tiles : default_max_tiles);
    weights_image_norm(g, out->mean, out->std);
}

tp_preprocess_params tiles_preprocess(const tiles_params *t, int fit, int32_t view_size, int32_t tile_size) {
    tp_preprocess_params p = tp_preprocess_default_params();
    p.fit = fit;
    p.view_size = view_size;
    p.tile_size = tile_size;
    p.min_tiles = t->min_tiles;
    p.max_tiles = t->max_tiles;
    p.pad_color = t->pad_color;
    memcpy(p.image_mean, t->mean, sizeof p.image_mean);
    memcpy(p.image_std, t->std, sizeof p.image_std);
    return p;
}

float *tiles_weave(float *out, const float *const *views, int32_t cols, int32_t rows, int64_t side, int64_t n_embd,
                   const float *newline) {
    const size_t row = (size_t)n_embd * sizeof(float);
    for (int32_t r = 0; r < rows; r++) {
        for (int64_t y = 0; y < side; y++) {
            for (int32_t c = 0; c < cols; c++) {
                memcpy(out, views[r * cols + c] + y * side * n_embd, (size_t)side * row);
                out += side * n_embd;
            }
            memcpy(out, newline, row);
            out += n_embd;
        }
    }
    return out;
}
