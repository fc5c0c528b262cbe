/* fuzz_image.c - libFuzzer target: image preprocessing with sizes, strides and parameters taken from the input.
 * The first 20 bytes choose (missing bytes read as 0):
 *   0, 1   width, height: 1 + b % 96 (flag 0x40 of byte 15: 0 or a negative size instead)
 *   2      fit: b % 5 (4 is not a fit: refused)
 *   3      flags: 0x01 rows padded (stride > width·3), 0x02 stride below width·3 (refused), 0x04 NULL params
 *          (the defaults, the real gundam mode: only for images of at most 32 x 32), 0x08 view size 0 or above
 *          TP_IMAGE_MAX_SIDE (refused), 0x10 pad colour out of range, 0x20 NULL pixels
 *   4      view_size: 1 + b % 64       5  tile_size: b % 48
 *   6, 7   min_tiles: b % 6, max_tiles: b % 12 (0 and min > max are refused)
 *   8      pad_color                   9-11  mean (b - 128) / 128     12-14  std (b - 128) / 64 (0 is refused)
 *   15     the output size of a tp_rgb_resize, and flag 0x40 above
 *   16-19  TP_FIT_NATIVE's factor: b16 % 70 (0 is refused), min_pixels: 1 + (b17 | b18 << 8) % 8192 (0 when
 *          b19 is 255: refused), max_pixels: min_pixels + 64 · b19 (kept small: a view of at most ~24k pixels)
 * the rest: the pixels (repeated to fill the image). Calls tp_image_tile_grid, tp_rgb_resize (into a buffer of
 * exactly the output size) and tp_page_from_rgb, checks what a success promises (view sizes, the grid, finite
 * pixels where mean and std are) and reads every byte it returns. Seeds: tests/fuzz/make_seeds.py. */
#include "tilepass.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t b[20] = {0};
    memcpy(b, data, size < 20 ? size : 20);
    const uint8_t *px = size > 20 ? data + 20 : NULL;
    const size_t n_px = size > 20 ? size - 20 : 0;
    const uint8_t flags = b[3];
    int32_t w = 1 + b[0] % 96, h = 1 + b[1] % 96;
    if (b[15] & 0x40) {
        if (b[0] & 1) w = -(int32_t)b[0];
        else h = 0;
    }
    const size_t row = w > 0 ? (size_t)w * 3 : 0;
    size_t stride = flags & 0x01 ? row + 1 + b[2] % 7 : 0;
    if (flags & 0x02 && row > 1) stride = row - 1;
    const size_t stride_used = stride ? stride : row;
    const size_t n_bytes = h > 0 && w > 0 ? stride_used * (size_t)(h - 1) + row : 1;
    uint8_t *rgb = malloc(n_bytes);
    if (!rgb) abort();
    for (size_t i = 0; i < n_bytes; i++) rgb[i] = n_px ? px[i % n_px] : (uint8_t)i;
    const tp_rgb_image img = {flags & 0x20 ? NULL : rgb, w, h, stride};

    tp_preprocess_params p = tp_preprocess_default_params();
    p.fit = b[2] % 5;
    p.view_size = flags & 0x08 ? (b[4] & 1 ? 0 : TP_IMAGE_MAX_SIDE + 1) : 1 + b[4] % 64;
    p.tile_size = b[5] % 48;
    p.min_tiles = b[6] % 6;
    p.max_tiles = b[7] % 12;
    p.pad_color = flags & 0x10 ? 256 + b[8] : b[8];
    for (int c = 0; c < 3; c++) {
        p.image_mean[c] = (float)(b[9 + c] - 128) / 128.0f;
        p.image_std[c] = (float)(b[12 + c] - 128) / 64.0f;
    }
    p.factor = b[16] % 70;
    p.min_pixels = b[19] == 255 ? 0 : 1 + (b[17] | b[18] << 8) % 8192;
    p.max_pixels = p.min_pixels + 64 * (int64_t)b[19];
    const bool defaults = (flags & 0x04) && w > 0 && h > 0 && w <= 32 && h <= 32;
    const tp_preprocess_params *pp = defaults ? NULL : &p;
    const tp_preprocess_params eff = defaults ? tp_preprocess_default_params() : p;
    tp_error err;

    int32_t cols = 0, rows = 0;
    if (tp_image_tile_grid(w, h, p.min_tiles, p.max_tiles, p.tile_size, &cols, &rows, &err) == TP_OK) {
        if (cols < 1 || rows < 1 || cols * rows < p.min_tiles || cols * rows > p.max_tiles) abort();
    }

    const int32_t ow = 1 + b[15] % 80, oh = 1 + (b[15] * 7 + b[0]) % 80;
    uint8_t *dst = malloc((size_t)ow * (size_t)oh * 3);
    if (!dst) abort();
    if (tp_rgb_resize(&img, ow, oh, dst, (size_t)ow * (size_t)oh * 3, &err) == TP_OK) {
        uint64_t s = 0;
        for (size_t i = 0; i < (size_t)ow * (size_t)oh * 3; i++) s += dst[i];
        g_sink += s;
    }
    /* one byte short must be refused, never written past */
    if (tp_rgb_resize(&img, ow, oh, dst, (size_t)ow * (size_t)oh * 3 - 1, &err) == TP_OK) abort();
    free(dst);

    tp_page *page = NULL;
    if (tp_page_from_rgb(&img, pp, &page, &err) == TP_OK) {
        const tp_page_views *v = tp_page_get_views(page);
        if (!v || v->n_views < 1 || v->n_views > TP_IMAGE_MAX_TILES + 1) abort();
        if (v->n_views == 1 ? (v->grid_cols != 0 || v->grid_rows != 0)
                            : (int64_t)v->grid_cols * v->grid_rows != v->n_views - 1)
            abort();
        bool finite_ok = true;
        for (int c = 0; c < 3; c++) finite_ok = finite_ok && fabsf(eff.image_std[c]) >= 1.0f / 64;
        for (int32_t i = 0; i < v->n_views; i++) {
            const tp_image_view *view = &v->views[i];
            if (!view->pixels || view->width < 1 || view->height < 1 || view->width > TP_IMAGE_MAX_SIDE ||
                view->height > TP_IMAGE_MAX_SIDE)
                abort();
            if (i + 1 < v->n_views && (view->width != eff.tile_size || view->height != eff.tile_size)) abort();
            double s = 0;
            for (size_t k = 0; k < (size_t)view->width * (size_t)view->height * 3; k++) {
                if (finite_ok && !isfinite(view->pixels[k])) abort();
                s += view->pixels[k];
            }
            g_sink += (uint64_t)(s == s);
        }
        tp_page_free(page);
    } else if (page) {
        abort(); /* a failure leaves no page */
    }
    free(rgb);
    return 0;
}
