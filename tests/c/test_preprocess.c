/* test_preprocess.c - RGB bytes -> page views through the public API only, under ASan+UBSan:
 * every mode on awkward sizes (1x1, very wide/tall, padded strides) runs clean; flat images stay flat;
 * padding lands where ImageOps.pad puts it; the spec's tile grids; bad input is refused with a
 * status and a message. (Pixel-exact equality with Pillow is tests/test_c_preprocess.py's job.) */
#include "tilepass.h"
#include "tp_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static float norm(int v) { return ((float)v / 255.0f - 0.5f) / 0.5f; }

/* A w x h image of one colour (rows `stride` bytes apart, padding bytes set to garbage). */
static uint8_t *flat_image(int w, int h, size_t stride, const uint8_t rgb[3]) {
    uint8_t *p = malloc(stride * (size_t)h);
    if (!p) return NULL;
    memset(p, 0xA5, stride * (size_t)h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) memcpy(p + (size_t)y * stride + (size_t)x * 3, rgb, 3);
    return p;
}

static bool all_equal(const float *v, size_t n, const float want[3]) {
    for (size_t i = 0; i < n; i++)
        if (v[i] != want[i % 3]) return false;
    return true;
}

static void test_flat_images_every_mode(void) {
    static const int sizes[][2] = {{1, 1},   {2, 3},    {7, 5},      {640, 640}, {641, 17}, {17, 641},
                                   {1000, 999}, {1920, 1080}, {20000, 1}, {1, 20000}, {3, 4000}};
    const uint8_t colour[3] = {200, 31, 7};
    const float want[3] = {norm(200), norm(31), norm(7)};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int w = sizes[s][0], h = sizes[s][1];
        size_t stride = (size_t)w * 3 + (s % 3) * 5;
        uint8_t *px = flat_image(w, h, stride, colour);
        CHECK(px != NULL, "image allocated");
        if (!px) continue;
        tp_rgb_image img = {px, w, h, stride};
        for (int mode = TP_IMAGE_MODE_TINY; mode <= TP_IMAGE_MODE_AUTO; mode++) {
            tp_preprocess_params p = tp_preprocess_default_params();
            p.mode = mode;
            tp_page *page = NULL;
            tp_error err;
            memset(&err, 0, sizeof err);
            tp_status st = tp_page_from_rgb(&img, &p, &page, &err);
            char what[640];
            snprintf(what, sizeof what, "%dx%d mode %d preprocessed (%s)", w, h, mode, err.message);
            CHECK(st == TP_OK && page != NULL, what);
            if (!page) continue;
            const tp_page_views *v = tp_page_get_views(page);
            int used = tp_page_mode(page);
            CHECK(used != TP_IMAGE_MODE_AUTO && used >= 0, "auto resolved");
            int S = v->global_size;
            CHECK(S == (used == TP_IMAGE_MODE_TINY ? 512 : used == TP_IMAGE_MODE_SMALL ? 640
                        : used == TP_IMAGE_MODE_LARGE ? 1280 : 1024),
                  "view size of the mode");
            if (used == TP_IMAGE_MODE_TINY || used == TP_IMAGE_MODE_SMALL) {
                CHECK(all_equal(v->global_view, (size_t)S * S * 3, want), "a flat image stays flat (stretch)");
            } else {
                /* the centre pixel is the image's colour (the image covers the centre) */
                const float *c = v->global_view + ((size_t)(S / 2) * S + (size_t)(S / 2)) * 3;
                bool thin = (double)w / h * S < 0.5 || (double)h / w * S < 0.5; /* rounds to 0 px */
                const float pad[3] = {norm(127), norm(127), norm(127)};
                CHECK(thin ? all_equal(c, 3, pad) : all_equal(c, 3, want), "centre pixel");
            }
            if (v->n_tiles > 0) {
                CHECK(v->grid_cols * v->grid_rows == v->n_tiles && v->tile_size == 640, "tile grid");
                CHECK(all_equal(v->tiles, (size_t)v->n_tiles * 640 * 640 * 3, want), "flat tiles");
                CHECK(used == TP_IMAGE_MODE_GUNDAM && (w > 640 || h > 640), "tiles only in gundam, over a tile");
            } else {
                CHECK(v->tiles == NULL && v->grid_cols == 0 && v->grid_rows == 0, "no tiles: empty grid");
            }
            tp_page_free(page);
        }
        free(px);
    }
}

static void test_padding_placement(void) {
    /* 100 x 50 white in base mode: resized to 1024 x 512 (ImageOps.contain), pasted at y = 256 */
    const uint8_t white[3] = {255, 255, 255};
    uint8_t *px = flat_image(100, 50, 300, white);
    CHECK(px != NULL, "image");
    if (!px) return;
    tp_rgb_image img = {px, 100, 50, 0};
    tp_preprocess_params p = tp_preprocess_default_params();
    p.mode = TP_IMAGE_MODE_BASE;
    tp_page *page = NULL;
    CHECK(tp_page_from_rgb(&img, &p, &page, NULL) == TP_OK, "base view");
    if (page) {
        const tp_page_views *v = tp_page_get_views(page);
        const float pad[3] = {norm(127), norm(127), norm(127)}, one[3] = {1.0f, 1.0f, 1.0f};
        const size_t row = 1024 * 3;
        CHECK(all_equal(v->global_view + 255 * row, row, pad), "row 255 is padding");
        CHECK(all_equal(v->global_view + 256 * row, row, one), "row 256 is the image");
        CHECK(all_equal(v->global_view + 767 * row, row, one), "row 767 is the image");
        CHECK(all_equal(v->global_view + 768 * row, row, pad), "row 768 is padding");
        tp_page_free(page);
    }
    /* an odd margin: 1024 - 1001 = 23 columns, round(11.5) = 12 on the left (half to even) */
    free(px);
    px = flat_image(1001, 1024, 3003, white);
    if (!px) return;
    tp_rgb_image img2 = {px, 1001, 1024, 0};
    page = NULL;
    CHECK(tp_page_from_rgb(&img2, &p, &page, NULL) == TP_OK, "base view 1001x1024");
    if (page) {
        const float *r = tp_page_get_views(page)->global_view + 500 * 1024 * 3;
        CHECK(r[11 * 3] == norm(127) && r[12 * 3] == 1.0f && r[1012 * 3] == 1.0f && r[1013 * 3] == norm(127),
              "left margin 12, right margin 11");
        tp_page_free(page);
    }
    free(px);
}

static void test_grids(void) {
    int32_t c = 0, r = 0;
    CHECK(tp_image_tile_grid(1240, 1754, 2, 9, 640, &c, &r, NULL) == TP_OK && c == 2 && r == 3, "1240x1754 -> 2x3");
    CHECK(tp_image_tile_grid(1920, 1080, 2, 9, 640, &c, &r, NULL) == TP_OK && c == 4 && r == 2, "1920x1080 -> 4x2");
    CHECK(tp_image_tile_grid(1920, 1080, 2, 6, 640, &c, &r, NULL) == TP_OK && c == 2 && r == 1, "max 6 -> 2x1");
    CHECK(tp_image_tile_grid(1000, 1000, 2, 9, 640, &c, &r, NULL) == TP_OK && c == 2 && r == 2, "1000x1000 -> 2x2");
    CHECK(tp_image_tile_grid(5, 4, 2, 2, 640, &c, &r, NULL) == TP_OK && c == 1 && r == 2, "tie, small: 1x2");
    CHECK(tp_image_tile_grid(1250, 1000, 2, 2, 640, &c, &r, NULL) == TP_OK && c == 2 && r == 1, "tie, large: 2x1");
    CHECK(tp_image_tile_grid(TP_IMAGE_MAX_PIXELS, 1, 1, TP_IMAGE_MAX_TILES, 640, &c, &r, NULL) == TP_OK && c == 64 &&
              r == 1,
          "very wide -> 64x1");
}

static void test_bad_input(void) {
    uint8_t px[64] = {0};
    tp_error err;
    tp_page *page = (tp_page *)&err; /* must be reset to NULL on failure */
    memset(&err, 0, sizeof err);
    tp_rgb_image zero = {px, 0, 4, 0};
    CHECK(tp_page_from_rgb(&zero, NULL, &page, &err) == TP_ERR_INVALID_ARGUMENT && page == NULL, "zero width");
    CHECK(strstr(err.message, "zero size") != NULL, "message says zero size");
    tp_rgb_image huge = {px, 8000, 5001, 0}; /* 64 bytes behind it: must not be read */
    CHECK(tp_page_from_rgb(&huge, NULL, &page, &err) == TP_ERR_INVALID_ARGUMENT, "too many pixels");
    CHECK(strstr(err.message, "too large") != NULL && strstr(err.message, "40000000") != NULL,
          "message names the limit");
    tp_rgb_image widest = {px, 2147483647, 2147483647, 0};
    CHECK(tp_page_from_rgb(&widest, NULL, &page, &err) == TP_ERR_INVALID_ARGUMENT, "INT32_MAX sides");
    tp_rgb_image null_px = {NULL, 4, 4, 0};
    CHECK(tp_page_from_rgb(&null_px, NULL, &page, &err) == TP_ERR_INVALID_ARGUMENT, "NULL pixels");
    CHECK(tp_page_from_rgb(NULL, NULL, &page, &err) == TP_ERR_INVALID_ARGUMENT, "NULL image");
    tp_rgb_image ok = {px, 4, 4, 0};
    CHECK(tp_page_from_rgb(&ok, NULL, NULL, &err) == TP_ERR_INVALID_ARGUMENT, "NULL out");
    tp_rgb_image short_stride = {px, 4, 4, 11};
    CHECK(tp_page_from_rgb(&short_stride, NULL, &page, &err) == TP_ERR_INVALID_ARGUMENT, "stride < width*3");
    CHECK(strstr(err.message, "stride") != NULL, "message names the stride");
    tp_preprocess_params p = tp_preprocess_default_params();
    p.max_tiles = TP_IMAGE_MAX_TILES + 1;
    CHECK(tp_page_from_rgb(&ok, &p, &page, &err) == TP_ERR_INVALID_ARGUMENT, "max_tiles over the limit");
    p = tp_preprocess_default_params();
    p.mode = 42;
    CHECK(tp_page_from_rgb(&ok, &p, &page, &err) == TP_ERR_INVALID_ARGUMENT, "unknown mode");
    p = tp_preprocess_default_params();
    p.image_std[2] = 0.0f;
    CHECK(tp_page_from_rgb(&ok, &p, &page, &err) == TP_ERR_INVALID_ARGUMENT, "std 0");
    CHECK(tp_page_from_rgb(&ok, NULL, &page, NULL) == TP_OK && page != NULL, "4x4 works, err optional");
    tp_page_free(page);
    tp_page_free(NULL);
    CHECK(tp_page_get_views(NULL) == NULL && tp_page_mode(NULL) == -1, "NULL page accessors");

    uint8_t out[12];
    CHECK(tp_rgb_resize(&ok, 2, 2, out, sizeof out - 1, &err) == TP_ERR_INVALID_ARGUMENT, "resize: small dst");
    CHECK(tp_rgb_resize(&ok, 2, 2, out, sizeof out, &err) == TP_OK, "resize 4x4 -> 2x2");
    CHECK(tp_rgb_resize(&huge, 2, 2, out, sizeof out, &err) == TP_ERR_INVALID_ARGUMENT, "resize: huge source");
    int32_t c, r;
    CHECK(tp_image_tile_grid(0, 1, 2, 9, 640, &c, &r, &err) == TP_ERR_INVALID_ARGUMENT, "grid: zero size");
    CHECK(tp_image_tile_grid(5, 5, 3, 2, 640, &c, &r, &err) == TP_ERR_INVALID_ARGUMENT, "grid: min > max");

    float *toks[1] = {NULL};
    int64_t n[1] = {0};
    CHECK(tp_vision_encode_rgb(NULL, &ok, 1, NULL, toks, n, &err) == TP_ERR_INVALID_ARGUMENT, "encode: NULL model");
    CHECK(tp_vision_preprocess_params(NULL, &p) == TP_ERR_INVALID_ARGUMENT, "params of a NULL model");
    tp_vision_tokens_free(NULL);
}

int main(void) {
    test_flat_images_every_mode();
    test_padding_placement();
    test_grids();
    test_bad_input();
    printf("test_preprocess: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
