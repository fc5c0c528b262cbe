/* Image -> text through the public C API only (include/tilepass.h + libtilepass), no Python.
 *
 *   c_api_example TEXT.gguf VISION.gguf [IMAGE.ppm | -] [N_TOKENS] [PROMPT_ID ...]
 *
 * - loads the text model and the vision model;
 * - takes an RGB image: a binary PPM (P6, 8-bit) file, or "-" / nothing for a generated test page;
 * - builds the page with the simplest preprocessing, DeepSeek-OCR's "base" mode done with bilinear
 *   resampling (the Python side uses PIL bicubic): scale to fit the global view keeping the aspect
 *   ratio, centre on a grey (pad colour) square, normalise (x/255 - mean)/std;
 * - encodes it, builds the input ids [BOS] + [<image>] * n_image_tokens + PROMPT_IDs (default: the
 *   ids of "\n<|grounding|>", looked up in the file's vocabulary; tokenise a longer prompt with
 *   the Python tokenizer and pass its ids), greedy-decodes up to N_TOKENS (default 32) tokens,
 *   stopping at EOS, and prints the UTF-8 text on stdout (token bytes are written as they come;
 *   a character split over tokens is complete once all its bytes are out).
 * Exit status 0 on success, 1 on any error (reported on stderr).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tilepass.h"

typedef struct {
    int w, h;
    unsigned char *rgb; /* w*h*3 */
} image_u8;

static int read_ppm(const char *path, image_u8 *img) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    char magic[3] = {0};
    int maxval = 0;
    if (fscanf(f, "%2s", magic) != 1 || strcmp(magic, "P6") != 0) {
        fprintf(stderr, "%s: not a binary PPM (P6) file\n", path);
        fclose(f);
        return -1;
    }
    /* width, height, maxval, skipping comments */
    int vals[3], nv = 0;
    while (nv < 3) {
        int c = fgetc(f);
        if (c == EOF) break;
        if (c == '#') {
            while (c != '\n' && c != EOF) c = fgetc(f);
        } else if (c >= '0' && c <= '9') {
            ungetc(c, f);
            if (fscanf(f, "%d", &vals[nv]) != 1) break;
            nv++;
        }
    }
    if (nv < 3) {
        fprintf(stderr, "%s: truncated PPM header\n", path);
        fclose(f);
        return -1;
    }
    fgetc(f); /* the single whitespace after maxval */
    img->w = vals[0];
    img->h = vals[1];
    maxval = vals[2];
    if (img->w <= 0 || img->h <= 0 || img->w > 20000 || img->h > 20000 || maxval != 255) {
        fprintf(stderr, "%s: unsupported PPM (%dx%d, maxval %d; need 8-bit, at most 20000 per side)\n", path,
                img->w, img->h, maxval);
        fclose(f);
        return -1;
    }
    size_t n = (size_t)img->w * (size_t)img->h * 3;
    img->rgb = malloc(n);
    if (!img->rgb || fread(img->rgb, 1, n, f) != n) {
        fprintf(stderr, "%s: truncated pixel data\n", path);
        free(img->rgb);
        img->rgb = NULL;
        fclose(f);
        return -1;
    }
    fclose(f);
    return 0;
}

/* A page-like test picture: light paper, dark text lines, a red block. */
static int make_test_page(image_u8 *img) {
    img->w = 600;
    img->h = 800;
    img->rgb = malloc((size_t)img->w * img->h * 3);
    if (!img->rgb) return -1;
    for (int y = 0; y < img->h; y++) {
        for (int x = 0; x < img->w; x++) {
            unsigned char *p = img->rgb + ((size_t)y * img->w + x) * 3;
            int line = (y > 60 && y < 700 && (y % 32) < 10 && x > 40 && x < 560 && ((x / 37) % 5) != 4);
            int block = (x > 350 && x < 520 && y > 420 && y < 560);
            p[0] = block ? 200 : line ? 30 : 245;
            p[1] = block ? 60 : line ? 30 : 243;
            p[2] = block ? 40 : line ? 40 : 238;
        }
    }
    return 0;
}

/* "base" mode: aspect-preserving bilinear resize into size x size, centred, pad colour around;
 * output HWC floats normalised with mean/std. */
static float *base_view(const image_u8 *img, int size, int pad, const float mean[3], const float std_[3]) {
    float *out = malloc((size_t)size * size * 3 * sizeof(float));
    if (!out) return NULL;
    double scale = (double)size / (img->w > img->h ? img->w : img->h);
    int nw = (int)(img->w * scale + 0.5), nh = (int)(img->h * scale + 0.5);
    if (nw < 1) nw = 1;
    if (nh < 1) nh = 1;
    int ox = (size - nw) / 2, oy = (size - nh) / 2;
    for (int y = 0; y < size; y++) {
        for (int x = 0; x < size; x++) {
            float rgb[3] = {(float)pad, (float)pad, (float)pad};
            int ix = x - ox, iy = y - oy;
            if (ix >= 0 && ix < nw && iy >= 0 && iy < nh) {
                /* sample centre of the target pixel in source coordinates */
                double sx = (ix + 0.5) * img->w / (double)nw - 0.5, sy = (iy + 0.5) * img->h / (double)nh - 0.5;
                if (sx < 0) sx = 0;
                if (sy < 0) sy = 0;
                int x0 = (int)sx, y0 = (int)sy;
                int x1 = x0 + 1 < img->w ? x0 + 1 : x0, y1 = y0 + 1 < img->h ? y0 + 1 : y0;
                double fx = sx - x0, fy = sy - y0;
                for (int c = 0; c < 3; c++) {
                    double a = img->rgb[((size_t)y0 * img->w + x0) * 3 + c], b = img->rgb[((size_t)y0 * img->w + x1) * 3 + c];
                    double d = img->rgb[((size_t)y1 * img->w + x0) * 3 + c], e = img->rgb[((size_t)y1 * img->w + x1) * 3 + c];
                    rgb[c] = (float)((a * (1 - fx) + b * fx) * (1 - fy) + (d * (1 - fx) + e * fx) * fy);
                }
            }
            for (int c = 0; c < 3; c++)
                out[((size_t)y * size + x) * 3 + c] = (rgb[c] / 255.0f - mean[c]) / std_[c];
        }
    }
    return out;
}

/* Id of a token whose stored text is exactly `text` ("Ċ" is byte-level BPE's "\n"), or -1. */
static int32_t find_token(const char *gguf_path, const char *text) {
    tp_gguf *g = NULL;
    tp_error err = {0};
    if (tp_gguf_open(gguf_path, &g, &err) != TP_OK) return -1;
    int32_t found = -1;
    int64_t k = tp_gguf_find_key(g, "tokenizer.ggml.tokens");
    if (k >= 0) {
        int64_t n = tp_gguf_arr_n(g, k);
        size_t want = strlen(text);
        for (int64_t j = 0; j < n && found < 0; j++) {
            const char *s = NULL;
            size_t len = 0;
            if (tp_gguf_get_arr_str(g, "tokenizer.ggml.tokens", j, &s, &len) == TP_OK && len == want &&
                memcmp(s, text, len) == 0)
                found = (int32_t)j;
        }
    }
    tp_gguf_close(g);
    return found;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TEXT.gguf VISION.gguf [IMAGE.ppm | -] [N_TOKENS] [PROMPT_ID ...]\n", argv[0]);
        return 1;
    }
    const char *text_path = argv[1], *vision_path = argv[2];
    const char *image_path = argc > 3 ? argv[3] : "-";
    int n_new = argc > 4 ? atoi(argv[4]) : 32;
    if (n_new < 1) n_new = 1;

    int rc = 1;
    tp_error err = {0};
    tp_vision_model *vm = NULL;
    tp_text_model *tm = NULL;
    image_u8 img = {0};
    float *view = NULL, *embd = NULL, *logits = NULL;
    int32_t *ids = NULL;

    tp_vision_params vp = tp_vision_default_params();
    vp.n_threads = 2;
    if (tp_vision_load(vision_path, &vp, &vm, &err) != TP_OK) {
        fprintf(stderr, "vision model %s: %s\n", vision_path, err.message);
        goto done;
    }
    tp_text_params tpar = tp_text_default_params();
    tpar.n_threads = 2;
    if (tp_text_load(text_path, &tpar, &tm, &err) != TP_OK) {
        fprintf(stderr, "text model %s: %s\n", text_path, err.message);
        goto done;
    }
    tp_vision_info vi;
    tp_text_info ti;
    tp_vision_get_info(vm, &vi);
    tp_text_get_info(tm, &ti);
    if (vi.n_embd != ti.n_embd) {
        fprintf(stderr, "the vision output width %d differs from the text width %d\n", vi.n_embd, ti.n_embd);
        goto done;
    }
    if (ti.image_token_id < 0) {
        fprintf(stderr, "%s: the vocabulary has no <image> token\n", text_path);
        goto done;
    }

    if (strcmp(image_path, "-") == 0 ? make_test_page(&img) : read_ppm(image_path, &img)) goto done;
    view = base_view(&img, vi.image_size, vi.pad_color, vi.image_mean, vi.image_std);
    if (!view) goto done;

    tp_page_views page;
    memset(&page, 0, sizeof page);
    page.global_view = view;
    page.global_size = vi.image_size;
    page.n_tiles = 0;
    page.tiles = NULL;
    int64_t n_img = tp_vision_page_n_tokens(vm, &page);
    if (n_img <= 0) {
        fprintf(stderr, "the model cannot encode a %dx%d view\n", vi.image_size, vi.image_size);
        goto done;
    }
    embd = malloc((size_t)n_img * vi.n_embd * sizeof(float));
    if (!embd) goto done;
    float *outs[1] = {embd};
    if (tp_vision_encode(vm, &page, 1, outs, &err) != TP_OK) {
        fprintf(stderr, "encode: %s\n", err.message);
        goto done;
    }

    /* input ids */
    int n_prompt = argc > 5 ? argc - 5 : 2;
    int64_t n_ids = 1 + n_img + n_prompt;
    ids = malloc((size_t)n_ids * sizeof(int32_t));
    if (!ids) goto done;
    int64_t k = 0;
    ids[k++] = ti.bos_id >= 0 ? ti.bos_id : 0;
    for (int64_t i = 0; i < n_img; i++) ids[k++] = ti.image_token_id;
    if (argc > 5) {
        for (int i = 5; i < argc; i++) ids[k++] = (int32_t)atol(argv[i]);
    } else {
        int32_t nl = find_token(text_path, "\xc4\x8a"); /* "Ċ" = "\n" */
        int32_t gr = find_token(text_path, "<|grounding|>");
        if (nl >= 0) ids[k++] = nl;
        if (gr >= 0) ids[k++] = gr;
    }
    n_ids = k;
    fprintf(stderr, "image %dx%d -> %lld image tokens; prompt %lld ids\n", img.w, img.h, (long long)n_img,
            (long long)n_ids);

    logits = malloc((size_t)ti.n_vocab * sizeof(float));
    if (!logits) goto done;
    if (tp_text_eval(tm, ids, (int32_t)n_ids, embd, n_img, logits, false, &err) != TP_OK) {
        fprintf(stderr, "prefill: %s\n", err.message);
        goto done;
    }
    int n_out = 0;
    for (;;) {
        int32_t best = 0;
        for (int32_t v = 1; v < ti.n_vocab; v++)
            if (logits[v] > logits[best]) best = v;
        if (best == ti.eos_id) break;
        size_t len = 0;
        const char *bytes = tp_text_token_bytes(tm, best, &len);
        if (bytes) fwrite(bytes, 1, len, stdout);
        fflush(stdout);
        if (++n_out >= n_new) break;
        if (tp_text_n_past(tm) + 1 > ti.n_ctx) break;
        if (tp_text_eval(tm, &best, 1, NULL, 0, logits, false, &err) != TP_OK) {
            fprintf(stderr, "\ndecode: %s\n", err.message);
            goto done;
        }
    }
    fputc('\n', stdout);
    fprintf(stderr, "%d tokens generated\n", n_out);
    rc = 0;

done:
    free(logits);
    free(ids);
    free(embd);
    free(view);
    free(img.rgb);
    tp_text_free(tm);
    tp_vision_free(vm);
    return rc;
}
