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
    for (int c = 0; c < 3; c++) {
        out->mean[c] = 0.5f;
        out->std[c] = 0.5f;
        float v;
        if (tp_gguf_get_arr_f32(g, KEY_V_IMAGE_MEAN, c, &v) == TP_OK && v == v) out->mean[c] = v;
        if (tp_gguf_get_arr_f32(g, KEY_V_IMAGE_STD, c, &v) == TP_OK && v == v && v != 0.0f) out->std[c] = v;
    }
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
