/* Image -> text through the public C API only (include/tilepass.h + libtilepass), no Python.
 *
 *   c_api_example [--mode NAME] TEXT.gguf VISION.gguf [IMAGE.ppm | -] [N_TOKENS] [PROMPT_ID ...]
 *
 * - loads the text model and the vision model;
 * - takes an RGB image: a binary PPM (P6, 8-bit) file, or "-" / nothing for a generated test page;
 * - hands its RGB bytes and size to tp_vision_encode_rgb, which preprocesses it as the model family's
 *   reference pipeline does (the image mode named by --mode, by default the model's default mode, e.g.
 *   DeepSeek-OCR's gundam: a 1024 view plus 640 tiles for a page larger than a tile; sizes, tile limits,
 *   pad colour and normalisation from the vision file) and encodes all its views in one pass; the token
 *   array it returns belongs to us (tp_vision_tokens_free);
 * - builds the input ids [BOS] + [<image>] * n_image_tokens + PROMPT_IDs (default: the
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
    /* the library refuses images over TP_IMAGE_MAX_PIXELS: check before allocating the pixels */
    if (img->w <= 0 || img->h <= 0 || (int64_t)img->w * img->h > TP_IMAGE_MAX_PIXELS || maxval != 255) {
        fprintf(stderr, "%s: unsupported PPM (%dx%d, maxval %d; need 8-bit, at most %d pixels)\n", path,
                img->w, img->h, maxval, TP_IMAGE_MAX_PIXELS);
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
    const char *mode = NULL; /* NULL: the model's default image mode */
    if (argc > 2 && strcmp(argv[1], "--mode") == 0) {
        mode = argv[2];
        argc -= 2;
        argv += 2;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: %s [--mode M] TEXT.gguf VISION.gguf [IMAGE.ppm | -] [N_TOKENS] [PROMPT_ID ...]\n",
                argv[0]);
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
    float *embd = NULL, *logits = NULL; /* embd: from tp_vision_encode_rgb, freed with tp_vision_tokens_free */
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

    /* RGB bytes + size in, image tokens out: the model's preprocessing values for the mode */
    tp_preprocess_params pp;
    if (tp_vision_preprocess_params(vm, mode, &pp) != TP_OK) {
        fprintf(stderr, "%s model: no image mode '%s'; its modes:", vi.family, mode ? mode : "(default)");
        for (int32_t i = 0; i < vi.n_modes; i++) fprintf(stderr, " %s", tp_vision_mode_name(vm, i));
        fputc('\n', stderr);
        goto done;
    }
    tp_rgb_image rgb = {img.rgb, img.w, img.h, (size_t)img.w * 3};
    int64_t n_img = 0;
    if (tp_vision_encode_rgb(vm, &rgb, 1, &pp, &embd, &n_img, &err) != TP_OK) {
        fprintf(stderr, "encode: %s\n", err.message);
        goto done;
    }
    free(img.rgb); /* the library keeps no pointer to the pixels */
    img.rgb = NULL;

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
    fprintf(stderr, "%s, mode %s: image %dx%d -> %lld image tokens; prompt %lld ids\n", vi.family,
            mode ? mode : tp_vision_mode_name(vm, 0), img.w, img.h, (long long)n_img, (long long)n_ids);

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
    tp_vision_tokens_free(embd);
    free(img.rgb);
    tp_text_free(tm);
    tp_vision_free(vm);
    return rc;
}
