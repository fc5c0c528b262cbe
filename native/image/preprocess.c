/* preprocess.c - images as RGB bytes to the vision encoder's page views, without Python.
 *
 * What the models' reference pipelines do with Pillow (tilepass.h, "Images as RGB bytes"): the whole-image
 * view stretched, padded as ImageOps.pad or fitted and padded as transformers' pad_to_square, the tile
 * grid of DeepSeek-OCR's dynamic_preprocess, and resizes equal to Pillow's Image.resize(BICUBIC) for RGB
 * images pixel for pixel. Pillow's algorithm
 * (libImaging/Resample.c), re-implemented here:
 *   - per axis, output i is centred at (i + 0.5)·scale in input coordinates (scale = in/out); the
 *     filter (bicubic, a = -0.5, support 2) is stretched by max(scale, 1) (antialiasing when
 *     downscaling); the inputs used are [round(centre - support), round(centre + support)) clipped
 *     to the image (rounding as (int)(x + 0.5));
 *   - the weights are normalised to sum 1, then made fixed-point with PRECISION_BITS = 22 fraction
 *     bits (rounded half away from zero);
 *   - two passes, each summing in integers from 1 << 21 (for rounding) and clipping to 0..255 into
 *     an 8-bit intermediate image: horizontal first (over only the rows the vertical pass reads),
 *     unless the height shrinks by more than twice as many pixels as the width (Pillow 13 then
 *     resamples vertically first). An axis whose size does not change is not resampled at all.
 * No global state: every buffer belongs to one call. */
#include "tp_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define PRECISION_BITS (32 - 8 - 2)
#define BICUBIC_SUPPORT 2.0

/* ---------------------------------------------------------------------------------------------
 * Pillow-exact bicubic resampling of RGB8
 * ------------------------------------------------------------------------------------------- */

/* Keys' cubic convolution kernel with a = -0.5 (Pillow's BICUBIC). */
static double bicubic_kernel(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* The taps of one axis: output i reads inputs first[i] .. first[i] + count[i] - 1 with the
 * fixed-point weights weight[start[i] ..]. */
typedef struct axis_taps {
    int32_t n_out;
    int32_t *first;
    int32_t *count;
    size_t *start;
    int32_t *weight;
} axis_taps;

static void axis_free(axis_taps *ax) {
    free(ax->first);
    free(ax->count);
    free(ax->start);
    free(ax->weight);
    memset(ax, 0, sizeof *ax);
}

/* in_size, out_size >= 1 and at most a few hundred million (all the int arithmetic fits). */
static tp_status axis_build(int32_t in_size, int32_t out_size, axis_taps *ax) {
    memset(ax, 0, sizeof *ax);
    /* Pillow takes the source extent as float box coordinates (box[2] - box[0]) */
    float extent = (float)in_size - 0.0f;
    double scale = (double)extent / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = BICUBIC_SUPPORT * filterscale;
    double inv = 1.0 / filterscale;

    ax->n_out = out_size;
    ax->first = malloc((size_t)out_size * sizeof *ax->first);
    ax->count = malloc((size_t)out_size * sizeof *ax->count);
    ax->start = malloc((size_t)out_size * sizeof *ax->start);
    if (!ax->first || !ax->count || !ax->start) {
        axis_free(ax);
        return TP_ERR_OUT_OF_MEMORY;
    }
    size_t total = 0;
    int32_t max_count = 0;
    for (int32_t i = 0; i < out_size; i++) {
        double center = 0.0 + ((double)i + 0.5) * scale;
        int32_t lo = (int32_t)(center - support + 0.5);
        int32_t hi = (int32_t)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        int32_t n = hi > lo ? hi - lo : 0;
        ax->first[i] = lo;
        ax->count[i] = n;
        ax->start[i] = total;
        total += (size_t)n;
        if (n > max_count) max_count = n;
    }
    double *w = malloc((size_t)(max_count > 0 ? max_count : 1) * sizeof *w);
    ax->weight = malloc((total > 0 ? total : 1) * sizeof *ax->weight);
    if (!w || !ax->weight) {
        free(w);
        axis_free(ax);
        return TP_ERR_OUT_OF_MEMORY;
    }
    const double one = (double)(1 << PRECISION_BITS);
    for (int32_t i = 0; i < out_size; i++) {
        double center = 0.0 + ((double)i + 0.5) * scale;
        int32_t lo = ax->first[i], n = ax->count[i];
        double sum = 0.0;
        for (int32_t t = 0; t < n; t++) {
            w[t] = bicubic_kernel(((double)(t + lo) - center + 0.5) * inv);
            sum += w[t];
        }
        int32_t *k = ax->weight + ax->start[i];
        for (int32_t t = 0; t < n; t++) {
            double v = sum != 0.0 ? w[t] / sum : w[t];
            k[t] = v < 0 ? (int32_t)(-0.5 + v * one) : (int32_t)(0.5 + v * one);
        }
    }
    free(w);
    return TP_OK;
}

static uint8_t clip8(int64_t v) {
    if (v <= 0) return 0;
    v >>= PRECISION_BITS;
    return v > 255 ? 255 : (uint8_t)v;
}

/* Horizontal pass over n_rows source rows starting at row0; dst rows are packed (n_out · 3). */
static void pass_horizontal(const uint8_t *src, size_t src_stride, int32_t row0, int32_t n_rows,
                            const axis_taps *ax, uint8_t *dst) {
    const int64_t half = (int64_t)1 << (PRECISION_BITS - 1);
    for (int32_t r = 0; r < n_rows; r++) {
        const uint8_t *in = src + (size_t)(row0 + r) * src_stride;
        uint8_t *out = dst + (size_t)r * (size_t)ax->n_out * 3;
        for (int32_t o = 0; o < ax->n_out; o++) {
            const int32_t *k = ax->weight + ax->start[o];
            const uint8_t *p = in + (size_t)ax->first[o] * 3;
            int64_t s0 = half, s1 = half, s2 = half;
            for (int32_t t = 0; t < ax->count[o]; t++) {
                s0 += (int64_t)p[3 * t + 0] * k[t];
                s1 += (int64_t)p[3 * t + 1] * k[t];
                s2 += (int64_t)p[3 * t + 2] * k[t];
            }
            out[3 * o + 0] = clip8(s0);
            out[3 * o + 1] = clip8(s1);
            out[3 * o + 2] = clip8(s2);
        }
    }
}

/* Vertical pass: src row j holds image row row0 + j; row_bytes bytes per row; dst packed.
 * acc: scratch of row_bytes int64. */
static void pass_vertical(const uint8_t *src, size_t src_stride, int32_t row0, size_t row_bytes,
                          const axis_taps *ax, uint8_t *dst, int64_t *acc) {
    const int64_t half = (int64_t)1 << (PRECISION_BITS - 1);
    for (int32_t o = 0; o < ax->n_out; o++) {
        const int32_t *k = ax->weight + ax->start[o];
        for (size_t i = 0; i < row_bytes; i++) acc[i] = half;
        for (int32_t t = 0; t < ax->count[o]; t++) {
            const uint8_t *in = src + (size_t)(ax->first[o] + t - row0) * src_stride;
            const int64_t kt = k[t];
            for (size_t i = 0; i < row_bytes; i++) acc[i] += (int64_t)in[i] * kt;
        }
        uint8_t *out = dst + (size_t)o * row_bytes;
        for (size_t i = 0; i < row_bytes; i++) out[i] = clip8(acc[i]);
    }
}

/* Resize w × h (rows `stride` apart) to ow × oh packed into dst. All sizes >= 1, checked by callers.
 * When both axes change, Pillow (13) resamples vertically first if the height shrinks by more than
 * twice as many pixels as the width does, else horizontally first; the order changes the result
 * (the intermediate image is rounded to 8 bits), so it is reproduced. */
static tp_status resize_rgb8(const uint8_t *src, int32_t w, int32_t h, size_t stride, uint8_t *dst,
                             int32_t ow, int32_t oh) {
    const size_t out_row = (size_t)ow * 3, in_row = (size_t)w * 3;
    bool need_h = ow != w, need_v = oh != h;
    if (!need_h && !need_v) {
        for (int32_t y = 0; y < h; y++) memcpy(dst + (size_t)y * out_row, src + (size_t)y * stride, out_row);
        return TP_OK;
    }
    bool vertical_first = need_h && need_v && oh < h && (int64_t)h - oh > 2 * ((int64_t)w - ow);
    tp_status st = TP_OK;
    axis_taps vert = {0}, horiz = {0};
    uint8_t *tmp = NULL;
    int64_t *acc = NULL;
    if (need_v) {
        st = axis_build(h, oh, &vert);
        if (st != TP_OK) goto done;
        /* the vertical pass runs over rows of the output width, or of the input width when first */
        acc = malloc((vertical_first ? in_row : out_row) * sizeof *acc);
        if (!acc) {
            st = TP_ERR_OUT_OF_MEMORY;
            goto done;
        }
    }
    if (need_h) {
        st = axis_build(w, ow, &horiz);
        if (st != TP_OK) goto done;
    }
    if (!need_v) {
        pass_horizontal(src, stride, 0, h, &horiz, dst);
    } else if (!need_h) {
        pass_vertical(src, stride, 0, out_row, &vert, dst, acc);
    } else if (vertical_first) {
        tmp = malloc((size_t)oh * in_row);
        if (!tmp) {
            st = TP_ERR_OUT_OF_MEMORY;
            goto done;
        }
        pass_vertical(src, stride, 0, in_row, &vert, tmp, acc);
        pass_horizontal(tmp, in_row, 0, oh, &horiz, dst);
    } else {
        /* horizontal first, over only the rows the vertical pass reads */
        int32_t row0 = vert.first[0];
        int32_t row1 = vert.first[oh - 1] + vert.count[oh - 1];
        int32_t n_rows = row1 > row0 ? row1 - row0 : 0;
        tmp = malloc((n_rows > 0 ? (size_t)n_rows : 1) * out_row);
        if (!tmp) {
            st = TP_ERR_OUT_OF_MEMORY;
            goto done;
        }
        pass_horizontal(src, stride, row0, n_rows, &horiz, tmp);
        pass_vertical(tmp, out_row, row0, out_row, &vert, dst, acc);
    }
done:
    free(tmp);
    free(acc);
    axis_free(&vert);
    axis_free(&horiz);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * Checks
 * ------------------------------------------------------------------------------------------- */

static tp_status check_image(const char *fn, const tp_rgb_image *im, size_t *stride, tp_error *err) {
    if (!im || !im->rgb) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: NULL image or pixel pointer", fn);
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (im->width <= 0 || im->height <= 0) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: image has zero size (%dx%d)", fn, (int)im->width,
                     (int)im->height);
        return TP_ERR_INVALID_ARGUMENT;
    }
    int64_t n = (int64_t)im->width * im->height;
    if (n > TP_IMAGE_MAX_PIXELS) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                     "%s: image is too large (%dx%d = %lld pixels; the limit is %d pixels)", fn, (int)im->width,
                     (int)im->height, (long long)n, TP_IMAGE_MAX_PIXELS);
        return TP_ERR_INVALID_ARGUMENT;
    }
    size_t row = (size_t)im->width * 3;
    size_t s = im->stride ? im->stride : row;
    if (s < row) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: stride %zu is below width*3 = %zu bytes", fn, s, row);
        return TP_ERR_INVALID_ARGUMENT;
    }
    if ((size_t)(im->height - 1) > (SIZE_MAX - row) / s) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: stride %zu overflows the address space", fn, s);
        return TP_ERR_INVALID_ARGUMENT;
    }
    *stride = s;
    return TP_OK;
}

static tp_status check_tiles(const char *fn, int32_t min_tiles, int32_t max_tiles, tp_error *err) {
    if (min_tiles < 1 || max_tiles < min_tiles || max_tiles > TP_IMAGE_MAX_TILES) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                     "%s: tile limits min %d, max %d out of range (need 1 <= min <= max <= %d)", fn,
                     (int)min_tiles, (int)max_tiles, TP_IMAGE_MAX_TILES);
        return TP_ERR_INVALID_ARGUMENT;
    }
    return TP_OK;
}

static tp_status check_params(const char *fn, const tp_preprocess_params *p, tp_error *err) {
    if (p->tile_rule < TP_TILES_ASPECT || p->tile_rule > TP_TILES_BEST_FIT) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: unknown tile rule %d", fn, p->tile_rule);
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (p->fit < TP_FIT_STRETCH || p->fit > TP_FIT_NATIVE) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: unknown view fit %d", fn, p->fit);
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (p->view_size < 1 || p->view_size > TP_IMAGE_MAX_SIDE || p->tile_size < 0 ||
        p->tile_size > TP_IMAGE_MAX_SIDE) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: view size %d / tile size %d out of range 1..%d", fn,
                     (int)p->view_size, (int)p->tile_size, TP_IMAGE_MAX_SIDE);
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (p->fit == TP_FIT_NATIVE &&
        (p->factor < 1 || p->factor > 1024 || p->min_pixels < 1 || p->max_pixels < p->min_pixels ||
         p->max_pixels > TP_IMAGE_MAX_PIXELS)) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                     "%s: native fit needs 1 <= factor <= 1024 (%d) and 1 <= min_pixels <= max_pixels <= %d (%lld, %lld)",
                     fn, (int)p->factor, TP_IMAGE_MAX_PIXELS, (long long)p->min_pixels, (long long)p->max_pixels);
        return TP_ERR_INVALID_ARGUMENT;
    }
    tp_status st = check_tiles(fn, p->min_tiles, p->max_tiles, err);
    if (st != TP_OK) return st;
    if (p->pad_color < 0 || p->pad_color > 255) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: pad colour %d out of range 0..255", fn, (int)p->pad_color);
        return TP_ERR_INVALID_ARGUMENT;
    }
    for (int c = 0; c < 3; c++) {
        if (!isfinite(p->image_mean[c]) || !isfinite(p->image_std[c]) || p->image_std[c] == 0.0f) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: mean/std of channel %d must be finite, std non-zero",
                         fn, c);
            return TP_ERR_INVALID_ARGUMENT;
        }
    }
    return TP_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Public: parameters, grid, resize
 * ------------------------------------------------------------------------------------------- */

tp_preprocess_params tp_preprocess_default_params(void) {
    tp_preprocess_params p;
    memset(&p, 0, sizeof p);
    p.fit = TP_FIT_PAD;
    p.view_size = 1024;
    p.tile_size = 640;
    p.min_tiles = 2;
    p.max_tiles = 9;
    p.pad_color = 127;
    p.factor = 28;
    p.min_pixels = 147384;
    p.max_pixels = 2822400;
    for (int c = 0; c < 3; c++) {
        p.image_mean[c] = 0.5f;
        p.image_std[c] = 0.5f;
    }
    return p;
}

static void choose_grid(int32_t width, int32_t height, int32_t min_tiles, int32_t max_tiles, int32_t tile,
                        int32_t *cols, int32_t *rows) {
    const double aspect = (double)width / (double)height;
    const double area = (double)((int64_t)width * height); /* exact: below 2^53 */
    double best_diff = INFINITY;
    int32_t bc = 1, br = 1;
    /* candidates ordered by tile count, then by cols (the reference's stable sort of a cols-major list) */
    for (int32_t n = min_tiles; n <= max_tiles; n++) {
        for (int32_t c = 1; c <= n; c++) {
            if (n % c != 0) continue;
            int32_t r = n / c;
            double diff = fabs(aspect - (double)c / (double)r);
            if (diff < best_diff) {
                best_diff = diff;
                bc = c;
                br = r;
            } else if (diff == best_diff) {
                if (area > 0.5 * tile * tile * c * r) {
                    bc = c;
                    br = r;
                }
            }
        }
    }
    *cols = bc;
    *rows = br;
}

tp_status tp_image_tile_grid(int32_t width, int32_t height, int32_t min_tiles, int32_t max_tiles,
                             int32_t tile_size, int32_t *cols, int32_t *rows, tp_error *err) {
    static const char fn[] = "tp_image_tile_grid";
    if (!cols || !rows) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: NULL output", fn);
        return TP_ERR_INVALID_ARGUMENT;
    }
    *cols = *rows = 0;
    if (width <= 0 || height <= 0) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: image has zero size (%dx%d)", fn, (int)width, (int)height);
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (tile_size < 1 || tile_size > TP_IMAGE_MAX_SIDE) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: tile size %d out of range 1..%d", fn, (int)tile_size,
                     TP_IMAGE_MAX_SIDE);
        return TP_ERR_INVALID_ARGUMENT;
    }
    tp_status st = check_tiles(fn, min_tiles, max_tiles, err);
    if (st != TP_OK) return st;
    choose_grid(width, height, min_tiles, max_tiles, tile_size, cols, rows);
    return TP_OK;
}

tp_status tp_rgb_resize(const tp_rgb_image *src, int32_t out_width, int32_t out_height, uint8_t *dst,
                        size_t dst_size, tp_error *err) {
    static const char fn[] = "tp_rgb_resize";
    size_t stride = 0;
    tp_status st = check_image(fn, src, &stride, err);
    if (st != TP_OK) return st;
    if (out_width <= 0 || out_height <= 0 || (int64_t)out_width * out_height > TP_IMAGE_MAX_PIXELS) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: output size %dx%d out of range (1 to %d pixels)", fn,
                     (int)out_width, (int)out_height, TP_IMAGE_MAX_PIXELS);
        return TP_ERR_INVALID_ARGUMENT;
    }
    size_t need = (size_t)out_width * (size_t)out_height * 3;
    if (!dst || dst_size < need) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: destination of %zu bytes, need %zu", fn, dst ? dst_size : 0,
                     need);
        return TP_ERR_INVALID_ARGUMENT;
    }
    st = resize_rgb8(src->rgb, src->width, src->height, stride, dst, out_width, out_height);
    if (st != TP_OK) tp_error_set(err, st, "%s: out of memory", fn);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * Pages
 * ------------------------------------------------------------------------------------------- */

struct tp_page {
    tp_page_views views;
    tp_image_view view[TP_IMAGE_MAX_TILES + 1];
    float *pixels; /* every view's, one after the other */
};

void tp_page_free(tp_page *page) {
    if (!page) return;
    free(page->pixels);
    free(page);
}

const tp_page_views *tp_page_get_views(const tp_page *page) { return page ? &page->views : NULL; }

/* Python's round() of a double: half to even. */
static int64_t round_half_even(double x) {
    double f = floor(x);
    double d = x - f;
    int64_t i = (int64_t)f;
    if (d > 0.5) return i + 1;
    if (d < 0.5) return i;
    return (i % 2 == 0) ? i : i + 1;
}

/* n pixels of uint8 RGB to normalised floats, the float32 operations of ToTensor + Normalize
 * (x / 255, - mean, / std) through a per-channel table of the 256 values. */
static void normalise_rgb(const uint8_t *src, size_t n_pixels, const float table[3][256], float *dst) {
    for (size_t i = 0; i < n_pixels; i++) {
        dst[3 * i + 0] = table[0][src[3 * i + 0]];
        dst[3 * i + 1] = table[1][src[3 * i + 1]];
        dst[3 * i + 2] = table[2][src[3 * i + 2]];
    }
}

/* fit TP_FIT_PAD, ImageOps.pad(image, (S, S), BICUBIC, color): aspect-preserving resize
 * (ImageOps.contain), then centred on the pad colour with offsets rounded half to even.
 * fit TP_FIT_PAD_FLOOR, transformers' fit + pad_to_square: scale = S / max(w, h), sizes round(w · scale)
 * and round(h · scale), centred with offsets floored. dst: S × S × 3 packed. */
static tp_status pad_view_wh(const tp_rgb_image *im, size_t stride, int fit, int32_t SW, int32_t SH, int32_t pad,
                             uint8_t *dst) {
    const int32_t w = im->width, h = im->height;
    int64_t nw = SW, nh = SH;
    double im_ratio = (double)w / (double)h;
    double dest_ratio = (double)SW / (double)SH;
    if (fit == TP_FIT_PAD_FLOOR) { /* square views only (DeepSeek-OCR-2) */
        double scale = (double)SW / (double)(w > h ? w : h);
        nw = round_half_even((double)w * scale);
        nh = round_half_even((double)h * scale);
    } else if (im_ratio != dest_ratio) {
        if (im_ratio > dest_ratio) {
            int64_t v = round_half_even((double)h / (double)w * (double)SW);
            if (v != SH) nh = v;
        } else {
            int64_t v = round_half_even((double)w / (double)h * (double)SH);
            if (v != SW) nw = v;
        }
    }
    if (nw == SW && nh == SH) return resize_rgb8(im->rgb, w, h, stride, dst, SW, SH);

    memset(dst, pad, (size_t)SW * (size_t)SH * 3);
    if (nw <= 0 || nh <= 0) return TP_OK; /* Pillow pastes an empty image: all padding */
    if (nw > SW || nh > SH) return TP_ERR_INTERNAL; /* cannot happen: contain never grows a side past the view */
    int64_t x = 0, y = 0;
    if (fit == TP_FIT_PAD_FLOOR) {
        x = (SW - nw) / 2;
        y = (SH - nh) / 2;
    } else if (nw != SW) {
        x = round_half_even((double)(SW - nw) * 0.5);
    } else {
        y = round_half_even((double)(SH - nh) * 0.5);
    }
    if (x < 0 || y < 0 || x + nw > SW || y + nh > SH) return TP_ERR_INTERNAL;
    uint8_t *tmp = malloc((size_t)nw * (size_t)nh * 3);
    if (!tmp) return TP_ERR_OUT_OF_MEMORY;
    tp_status st = resize_rgb8(im->rgb, w, h, stride, tmp, (int32_t)nw, (int32_t)nh);
    if (st == TP_OK) {
        for (int64_t r = 0; r < nh; r++)
            memcpy(dst + ((size_t)(y + r) * (size_t)SW + (size_t)x) * 3, tmp + (size_t)r * (size_t)nw * 3,
                   (size_t)nw * 3);
    }
    free(tmp);
    return st;
}

static tp_status pad_view(const tp_rgb_image *im, size_t stride, int fit, int32_t S, int32_t pad, uint8_t *dst) {
    return pad_view_wh(im, stride, fit, S, S, pad, dst);
}

/* LLaVA-style tiling (DeepSeek-VL2's select_best_resolution): of the canvases (tile·m, tile·n), m·n <= max_tiles,
 * in the published order (by tile count; for each count its divisor pairs a <= count/a, (a, count/a) then
 * (count/a, a)), the one that keeps the most of the image's pixels when it is fitted inside (sides truncated),
 * then the one that wastes the least area, then the earlier one. */
static void best_fit_grid(int32_t w, int32_t h, int32_t tile, int32_t max_tiles, int32_t *cols, int32_t *rows) {
    int64_t best_eff = 0;
    double best_waste = INFINITY;
    *cols = *rows = 1;
    for (int32_t p = 1; p <= max_tiles; p++) {
        for (int32_t a = 1; (int64_t)a * a <= p; a++) {
            if (p % a != 0) continue;
            const int32_t pairs[2][2] = {{a, p / a}, {p / a, a}};
            for (int k = 0; k < (a != p / a ? 2 : 1); k++) {
                const double cw = (double)tile * pairs[k][0], ch = (double)tile * pairs[k][1];
                const double s = fmin(cw / (double)w, ch / (double)h);
                int64_t eff = (int64_t)((double)w * s) * (int64_t)((double)h * s);
                if (eff > (int64_t)w * h) eff = (int64_t)w * h;
                const double waste = cw * ch - (double)eff;
                if (eff > best_eff || (eff == best_eff && waste < best_waste)) {
                    best_eff = eff;
                    best_waste = waste;
                    *cols = pairs[k][0];
                    *rows = pairs[k][1];
                }
            }
        }
    }
}

/* transformers' smart_resize (Qwen2-VL / PaddleOCR-VL), in doubles with Python's rounding: sides below the
 * factor scaled up to it, both rounded to multiples of it, then the area brought within [min, max] pixels.
 * False when the aspect ratio exceeds 200 (the reference refuses such images). */
static bool smart_resize(int64_t h, int64_t w, int64_t factor, int64_t min_px, int64_t max_px, int64_t *h_out,
                         int64_t *w_out) {
    const double f = (double)factor;
    if (h < factor) {
        w = round_half_even((double)(w * factor) / (double)h);
        h = factor;
    }
    if (w < factor) {
        h = round_half_even((double)(h * factor) / (double)w);
        w = factor;
    }
    if ((double)TP_MAX(h, w) / (double)TP_MIN(h, w) > 200.0) return false;
    int64_t hb = round_half_even((double)h / f) * factor, wb = round_half_even((double)w / f) * factor;
    if (hb * wb > max_px) {
        double beta = sqrt((double)(h * w) / (double)max_px);
        hb = TP_MAX(factor, (int64_t)floor((double)h / beta / f) * factor);
        wb = TP_MAX(factor, (int64_t)floor((double)w / beta / f) * factor);
    } else if (hb * wb < min_px) {
        double beta = sqrt((double)min_px / (double)(h * w));
        hb = (int64_t)ceil((double)h * beta / f) * factor;
        wb = (int64_t)ceil((double)w * beta / f) * factor;
    }
    *h_out = hb;
    *w_out = wb;
    return true;
}

tp_status tp_page_from_rgb(const tp_rgb_image *image, const tp_preprocess_params *params, tp_page **out,
                           tp_error *err) {
    static const char fn[] = "tp_page_from_rgb";
    if (!out) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: out must not be NULL", fn);
        return TP_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    tp_preprocess_params p = params ? *params : tp_preprocess_default_params();
    size_t stride = 0;
    tp_status st = check_image(fn, image, &stride, err);
    if (st == TP_OK) st = check_params(fn, &p, err);
    if (st != TP_OK) return st;

    const int32_t w = image->width, h = image->height, T = p.fit == TP_FIT_NATIVE ? 0 : p.tile_size;
    int32_t S = p.view_size, VW = S, VH = S; /* the whole-image view's width and height */
    if (p.fit == TP_FIT_NATIVE) {
        int64_t vh = 0, vw = 0;
        if (!smart_resize(h, w, p.factor, p.min_pixels, p.max_pixels, &vh, &vw)) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: a %dx%d image has an aspect ratio over 200", fn, (int)w,
                         (int)h);
            return TP_ERR_INVALID_ARGUMENT;
        }
        if (vw * vh > TP_IMAGE_MAX_PIXELS) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: a %dx%d image becomes a view of %lldx%lld pixels, over %d", fn,
                         (int)w, (int)h, (long long)vw, (long long)vh, TP_IMAGE_MAX_PIXELS);
            return TP_ERR_INVALID_ARGUMENT;
        }
        VW = (int32_t)vw;
        VH = (int32_t)vh;
    }
    float table[3][256];
    for (int c = 0; c < 3; c++) {
        for (int v = 0; v < 256; v++) {
            float x = (float)v / 255.0f;
            x = x - p.image_mean[c];
            x = x / p.image_std[c];
            table[c][v] = x;
        }
    }
    int32_t cols = 0, rows = 0;
    const bool best_fit = T > 0 && p.tile_rule == TP_TILES_BEST_FIT;
    if (best_fit) {
        best_fit_grid(w, h, T, p.max_tiles, &cols, &rows); /* always tiles, a 1 × 1 grid included */
    } else if (T > 0 && (w > T || h > T)) {
        choose_grid(w, h, p.min_tiles, p.max_tiles, T, &cols, &rows);
        if (cols == 1 && rows == 1) cols = rows = 0; /* a 1 × 1 grid: no tiles */
    }
    const size_t ts = (size_t)T, tile_px = ts * ts, n_tiles = (size_t)cols * (size_t)rows;
    const size_t view_px = (size_t)VW * (size_t)VH;

    tp_page *page = calloc(1, sizeof *page);
    uint8_t *u8 = NULL;
    if (!page) {
        st = TP_ERR_OUT_OF_MEMORY;
        goto fail;
    }
    page->pixels = malloc((n_tiles * tile_px + view_px) * 3 * sizeof(float));
    if (!page->pixels) {
        st = TP_ERR_OUT_OF_MEMORY;
        goto fail;
    }
    page->views.views = page->view;
    page->views.n_views = (int32_t)n_tiles + 1;
    page->views.grid_cols = cols;
    page->views.grid_rows = rows;

    /* the tiles: the whole image resized to the grid's canvas, cut in raster order (tile (r, c) is rows
     * r·T.., columns c·T.. of the canvas) */
    if (n_tiles > 0) {
        const int32_t cw = T * cols, ch = T * rows; /* <= 4096 · 64 */
        u8 = malloc((size_t)cw * (size_t)ch * 3);
        if (!u8) {
            st = TP_ERR_OUT_OF_MEMORY;
            goto fail;
        }
        /* the whole image resized to the canvas (DeepSeek-OCR's dynamic_preprocess), or fitted inside it and
         * padded (ImageOps.pad: DeepSeek-VL2) */
        st = best_fit ? pad_view_wh(image, stride, TP_FIT_PAD, cw, ch, p.pad_color, u8)
                      : resize_rgb8(image->rgb, w, h, stride, u8, cw, ch);
        if (st != TP_OK) goto fail;
        for (int32_t r = 0; r < rows; r++) {
            for (int32_t c = 0; c < cols; c++) {
                const size_t i = (size_t)r * (size_t)cols + (size_t)c;
                float *tile = page->pixels + i * tile_px * 3;
                for (int32_t y = 0; y < T; y++) {
                    const uint8_t *src = u8 + (((size_t)r * ts + (size_t)y) * (size_t)cw + (size_t)c * ts) * 3;
                    normalise_rgb(src, ts, (const float(*)[256])table, tile + (size_t)y * ts * 3);
                }
                page->view[i] = (tp_image_view){tile, T, T};
            }
        }
        free(u8);
        u8 = NULL;
    }

    /* the whole-image view, last */
    u8 = malloc(view_px * 3);
    if (!u8) {
        st = TP_ERR_OUT_OF_MEMORY;
        goto fail;
    }
    st = p.fit == TP_FIT_STRETCH || p.fit == TP_FIT_NATIVE ? resize_rgb8(image->rgb, w, h, stride, u8, VW, VH)
                                                           : pad_view(image, stride, p.fit, S, p.pad_color, u8);
    if (st != TP_OK) goto fail;
    float *whole = page->pixels + n_tiles * tile_px * 3;
    normalise_rgb(u8, view_px, (const float(*)[256])table, whole);
    free(u8);
    u8 = NULL;
    page->view[n_tiles] = (tp_image_view){whole, VW, VH};
    *out = page;
    return TP_OK;

fail:
    free(u8);
    tp_page_free(page);
    if (st == TP_ERR_OUT_OF_MEMORY)
        tp_error_set(err, st, "%s: out of memory for a %dx%d image", fn, (int)w, (int)h);
    else
        tp_error_set(err, st, "%s: internal error", fn);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * One call: RGB pages -> image tokens
 * ------------------------------------------------------------------------------------------- */

void tp_vision_tokens_free(float *tokens) { free(tokens); }

tp_status tp_vision_encode_rgb(tp_vision_model *m, const tp_rgb_image *images, int32_t n_images,
                               const tp_preprocess_params *params, float **out_tokens,
                               int64_t *out_n_tokens, tp_error *err) {
    static const char fn[] = "tp_vision_encode_rgb";
    if (!m || !images || !out_tokens || !out_n_tokens || n_images <= 0) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: NULL argument or no images", fn);
        return TP_ERR_INVALID_ARGUMENT;
    }
    for (int32_t i = 0; i < n_images; i++) {
        out_tokens[i] = NULL;
        out_n_tokens[i] = 0;
    }
    tp_preprocess_params p;
    if (params) p = *params;
    else if (tp_vision_preprocess_params(m, NULL, &p) != TP_OK) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "%s: cannot read the model's preprocessing values", fn);
        return TP_ERR_INVALID_ARGUMENT;
    }
    tp_vision_info info;
    tp_vision_get_info(m, &info);

    tp_status st = TP_OK;
    tp_error local;
    memset(&local, 0, sizeof local);
    tp_page **pages = calloc((size_t)n_images, sizeof *pages);
    tp_page_views *views = calloc((size_t)n_images, sizeof *views);
    if (!pages || !views) {
        st = TP_ERR_OUT_OF_MEMORY;
        tp_error_set(err, st, "%s: out of memory", fn);
        goto done;
    }
    for (int32_t i = 0; i < n_images; i++) {
        st = tp_page_from_rgb(&images[i], &p, &pages[i], &local);
        if (st != TP_OK) {
            tp_error_set(err, st, "%s: image %d: %s", fn, (int)i, local.message);
            goto done;
        }
        views[i] = *tp_page_get_views(pages[i]);
        int64_t n = tp_vision_page_n_tokens(m, &views[i]);
        if (n <= 0 || info.n_embd <= 0 || (uint64_t)n > SIZE_MAX / sizeof(float) / (uint64_t)info.n_embd) {
            st = TP_ERR_INVALID_ARGUMENT;
            tp_error_set(err, st, "%s: image %d: the model cannot encode views of %d px (tiles of %d px)", fn,
                         (int)i, (int)p.view_size, (int)p.tile_size);
            goto done;
        }
        out_tokens[i] = malloc((size_t)n * (size_t)info.n_embd * sizeof(float));
        if (!out_tokens[i]) {
            st = TP_ERR_OUT_OF_MEMORY;
            tp_error_set(err, st, "%s: image %d: out of memory for %lld tokens", fn, (int)i, (long long)n);
            goto done;
        }
        out_n_tokens[i] = n;
    }
    st = tp_vision_encode(m, views, n_images, out_tokens, &local);
    if (st != TP_OK) tp_error_set(err, st, "%s", local.message);

done:
    if (pages) {
        for (int32_t i = 0; i < n_images; i++) tp_page_free(pages[i]);
    }
    free(pages);
    free(views);
    if (st != TP_OK) {
        for (int32_t i = 0; i < n_images; i++) {
            free(out_tokens[i]);
            out_tokens[i] = NULL;
            out_n_tokens[i] = 0;
        }
    }
    return st;
}
