/* test_preprocess.c - RGB bytes -> page views through the public API only, under ASan+UBSan:
 * every mode (DeepSeek-OCR v1's as view parameters, DeepSeek-OCR-2's) on awkward sizes (1x1, very
 * wide/tall, padded strides) runs clean; flat images stay flat; padding lands where ImageOps.pad and
 * pad_to_square put it; the spec's tile grids; bad input is refused with a status and a message.
 * (Pixel-exact equality with Pillow and transformers is tests/test_c_preprocess.py's job.) */
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

/* DeepSeek-OCR v1's modes as view parameters (tilepass.h; "auto" makes exactly gundam's views), plus
 * DeepSeek-OCR-2's two (fit and offsets floored as transformers' pad_to_square, 768 tiles). */
typedef struct mode_spec {
    const char *name;
    int fit;
    int32_t view_size, tile_size;
} mode_spec;
static const mode_spec MODES[] = {
    {"tiny", TP_FIT_STRETCH, 512, 0},  {"small", TP_FIT_STRETCH, 640, 0},    {"base", TP_FIT_PAD, 1024, 0},
    {"large", TP_FIT_PAD, 1280, 0},    {"gundam", TP_FIT_PAD, 1024, 640},    {"auto", TP_FIT_PAD, 1024, 640},
    {"ocr2-gundam", TP_FIT_PAD_FLOOR, 1024, 768}, {"ocr2-base", TP_FIT_PAD_FLOOR, 768, 0},
};
enum { N_MODES = (int)(sizeof MODES / sizeof MODES[0]), MODE_BASE = 2 };

static tp_preprocess_params mode_params(const mode_spec *m) {
    tp_preprocess_params p = tp_preprocess_default_params();
    p.fit = m->fit;
    p.view_size = m->view_size;
    p.tile_size = m->tile_size;
    return p;
}

/* Python's round() (half to even) of a double */
static int64_t py_round(double x) {
    double f = floor(x), d = x - f;
    int64_t i = (int64_t)f;
    return d > 0.5 ? i + 1 : d < 0.5 ? i : (i % 2 == 0 ? i : i + 1);
}

static void test_flat_images_every_mode(void) {
    static const int sizes[][2] = {{1, 1},   {2, 3},    {7, 5},      {640, 640}, {641, 17}, {17, 641},
                                   {1000, 999}, {1920, 1080}, {20000, 1}, {1, 20000}, {3, 4000}};
    const uint8_t colour[3] = {200, 31, 7};
    const float want[3] = {norm(200), norm(31), norm(7)};
    const float pad[3] = {norm(127), norm(127), norm(127)};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int w = sizes[s][0], h = sizes[s][1];
        size_t stride = (size_t)w * 3 + (s % 3) * 5;
        uint8_t *px = flat_image(w, h, stride, colour);
        CHECK(px != NULL, "image allocated");
        if (!px) continue;
        tp_rgb_image img = {px, w, h, stride};
        tp_page *base = NULL; /* base's views: what auto and gundam must make for an image within a tile */
        for (int mi = 0; mi < N_MODES; mi++) {
            const mode_spec *m = &MODES[mi];
            tp_preprocess_params p = mode_params(m);
            tp_page *page = NULL;
            tp_error err;
            memset(&err, 0, sizeof err);
            tp_status st = tp_page_from_rgb(&img, &p, &page, &err);
            char what[640];
            snprintf(what, sizeof what, "%dx%d mode %s preprocessed (%s)", w, h, m->name, err.message);
            CHECK(st == TP_OK && page != NULL, what);
            if (!page) continue;
            const tp_page_views *v = tp_page_get_views(page);
            CHECK(v->n_views >= 1 && v->views != NULL, "at least one view");
            const tp_image_view *whole = &v->views[v->n_views - 1];
            int S = whole->width;
            CHECK(S == m->view_size && whole->height == m->view_size, "view size of the mode");
            if (m->fit == TP_FIT_STRETCH) {
                CHECK(all_equal(whole->pixels, (size_t)S * S * 3, want), "a flat image stays flat (stretch)");
            } else if (m->fit == TP_FIT_PAD) {
                /* the centre pixel is the image's colour (the image covers the centre) */
                const float *c = whole->pixels + ((size_t)(S / 2) * S + (size_t)(S / 2)) * 3;
                bool thin = (double)w / h * S < 0.5 || (double)h / w * S < 0.5; /* rounds to 0 px */
                CHECK(thin ? all_equal(c, 3, pad) : all_equal(c, 3, want), "centre pixel");
            } else {
                /* pad_to_square: the longer side fills the view, the other is round(side · S / longer),
                 * centred with offsets floored; every pixel is the colour inside that box, padding outside */
                double scale = (double)S / (w > h ? w : h);
                int64_t nw = py_round(w * scale), nh = py_round(h * scale), x0 = (S - nw) / 2, y0 = (S - nh) / 2;
                size_t bad = 0;
                for (int64_t y = 0; y < S; y++)
                    for (int64_t x = 0; x < S; x++) {
                        bool in = x >= x0 && x < x0 + nw && y >= y0 && y < y0 + nh;
                        if (!all_equal(whole->pixels + ((size_t)y * S + (size_t)x) * 3, 3, in ? want : pad)) bad++;
                    }
                snprintf(what, sizeof what, "%dx%d %s: image box %lldx%lld at (%lld, %lld), %zu pixels off", w, h,
                         m->name, (long long)nw, (long long)nh, (long long)x0, (long long)y0, bad);
                CHECK(bad == 0, what);
            }
            const int32_t n_tiles = v->n_views - 1, T = m->tile_size;
            if (n_tiles > 0) {
                bool sizes_ok = true;
                for (int32_t i = 0; i < n_tiles; i++)
                    sizes_ok = sizes_ok && v->views[i].width == T && v->views[i].height == T &&
                               all_equal(v->views[i].pixels, (size_t)T * T * 3, want);
                CHECK(v->grid_cols * v->grid_rows == n_tiles && v->grid_cols > 0 && v->grid_rows > 0, "tile grid");
                CHECK(sizes_ok, "flat tiles of the tile size");
                CHECK(T > 0 && (w > T || h > T), "tiles only in a tiled mode, over a tile");
            } else {
                CHECK(v->n_views == 1 && v->grid_cols == 0 && v->grid_rows == 0, "no tiles: one view, empty grid");
            }
            if (mi == MODE_BASE) {
                base = page;
                continue;
            }
            /* old "auto": gundam when the image exceeds a tile, else exactly base's views */
            if (m->tile_size == 640 && m->fit == TP_FIT_PAD) {
                bool within = w <= 640 && h <= 640;
                CHECK(within ? n_tiles == 0 : n_tiles >= 2, "gundam/auto: tiles iff over a tile (min 2)");
                if (within && base) {
                    const tp_image_view *b = &tp_page_get_views(base)->views[0];
                    CHECK(n_tiles == 0 && b->width == S &&
                              memcmp(b->pixels, whole->pixels, (size_t)S * S * 3 * sizeof(float)) == 0,
                          "gundam/auto within a tile: base's view");
                }
            }
            tp_page_free(page);
        }
        tp_page_free(base);
        free(px);
    }
}

/* The whole-image view of a page (its last view). */
static const float *whole_view(const tp_page *page) {
    const tp_page_views *v = tp_page_get_views(page);
    return v->views[v->n_views - 1].pixels;
}

static void test_padding_placement(void) {
    /* 100 x 50 white in base mode: resized to 1024 x 512 (ImageOps.contain), pasted at y = 256 */
    const uint8_t white[3] = {255, 255, 255};
    uint8_t *px = flat_image(100, 50, 300, white);
    CHECK(px != NULL, "image");
    if (!px) return;
    tp_rgb_image img = {px, 100, 50, 0};
    tp_preprocess_params p = mode_params(&MODES[MODE_BASE]);
    tp_page *page = NULL;
    CHECK(tp_page_from_rgb(&img, &p, &page, NULL) == TP_OK, "base view");
    if (page) {
        const tp_page_views *v = tp_page_get_views(page);
        CHECK(v->n_views == 1 && v->views[0].width == 1024 && v->views[0].height == 1024, "one 1024 view");
        const float *g = whole_view(page);
        const float pad[3] = {norm(127), norm(127), norm(127)}, one[3] = {1.0f, 1.0f, 1.0f};
        const size_t row = 1024 * 3;
        CHECK(all_equal(g + 255 * row, row, pad), "row 255 is padding");
        CHECK(all_equal(g + 256 * row, row, one), "row 256 is the image");
        CHECK(all_equal(g + 767 * row, row, one), "row 767 is the image");
        CHECK(all_equal(g + 768 * row, row, pad), "row 768 is padding");
        tp_page_free(page);
    }
    /* an odd margin: 1024 - 1001 = 23 columns, round(11.5) = 12 on the left (half to even); pad_to_square
     * (TP_FIT_PAD_FLOOR) floors it: 11 on the left, 12 on the right */
    free(px);
    px = flat_image(1001, 1024, 3003, white);
    if (!px) return;
    tp_rgb_image img2 = {px, 1001, 1024, 0};
    page = NULL;
    CHECK(tp_page_from_rgb(&img2, &p, &page, NULL) == TP_OK, "base view 1001x1024");
    if (page) {
        const float *r = whole_view(page) + 500 * 1024 * 3;
        CHECK(r[11 * 3] == norm(127) && r[12 * 3] == 1.0f && r[1012 * 3] == 1.0f && r[1013 * 3] == norm(127),
              "left margin 12, right margin 11");
        tp_page_free(page);
    }
    tp_preprocess_params pf = p;
    pf.fit = TP_FIT_PAD_FLOOR;
    page = NULL;
    CHECK(tp_page_from_rgb(&img2, &pf, &page, NULL) == TP_OK, "pad-floor view 1001x1024");
    if (page) {
        const float *r = whole_view(page) + 500 * 1024 * 3;
        CHECK(r[10 * 3] == norm(127) && r[11 * 3] == 1.0f && r[1011 * 3] == 1.0f && r[1012 * 3] == norm(127),
              "pad floor: left margin 11, right margin 12");
        tp_page_free(page);
    }
    free(px);
    /* the same margin on top: 1024 x 1001, floored to 11 rows above */
    px = flat_image(1024, 1001, 3072, white);
    if (!px) return;
    tp_rgb_image img3 = {px, 1024, 1001, 0};
    page = NULL;
    CHECK(tp_page_from_rgb(&img3, &pf, &page, NULL) == TP_OK, "pad-floor view 1024x1001");
    if (page) {
        const float *g = whole_view(page), pad[3] = {norm(127), norm(127), norm(127)}, one[3] = {1.0f, 1.0f, 1.0f};
        const size_t row = 1024 * 3;
        CHECK(all_equal(g + 10 * row, row, pad) && all_equal(g + 11 * row, row, one) &&
                  all_equal(g + 1011 * row, row, one) && all_equal(g + 1012 * row, row, pad),
              "pad floor: top margin 11, bottom margin 12");
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
    p.fit = 42;
    CHECK(tp_page_from_rgb(&ok, &p, &page, &err) == TP_ERR_INVALID_ARGUMENT, "unknown fit");
    CHECK(strstr(err.message, "fit") != NULL, "message names the fit");
    p = tp_preprocess_default_params();
    p.tile_size = -1;
    CHECK(tp_page_from_rgb(&ok, &p, &page, &err) == TP_ERR_INVALID_ARGUMENT, "negative tile size");
    p = tp_preprocess_default_params();
    p.view_size = 0;
    CHECK(tp_page_from_rgb(&ok, &p, &page, &err) == TP_ERR_INVALID_ARGUMENT, "view size 0");
    p = tp_preprocess_default_params();
    p.image_std[2] = 0.0f;
    CHECK(tp_page_from_rgb(&ok, &p, &page, &err) == TP_ERR_INVALID_ARGUMENT, "std 0");
    CHECK(tp_page_from_rgb(&ok, NULL, &page, NULL) == TP_OK && page != NULL, "4x4 works, err optional");
    tp_page_free(page);
    tp_page_free(NULL);
    CHECK(tp_page_get_views(NULL) == NULL, "NULL page accessor");

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
    CHECK(tp_vision_preprocess_params(NULL, NULL, &p) == TP_ERR_INVALID_ARGUMENT, "params of a NULL model");
    CHECK(tp_vision_preprocess_params(NULL, "gundam", &p) == TP_ERR_INVALID_ARGUMENT, "named mode of a NULL model");
    CHECK(tp_vision_mode_name(NULL, 0) == NULL, "mode name of a NULL model");
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
