/* ocr.c - a page image to markdown with libtilepass, through the public header only (include/tilepass.h).
 *
 *   ocr TEXT.gguf VISION.gguf IMAGE.ppm [MAX_TOKENS] [PROMPT]
 *
 * IMAGE is a binary PPM (P6, 8-bit, no comment lines): the library decodes no PNG or JPEG, so convert first, e.g.
 *   python3 -c "from PIL import Image; Image.open('page.png').convert('RGB').save('page.ppm')"
 * The session builds the model family's prompt (PROMPT, or its default when none is given), encodes the image,
 * decodes with the family's defaults (greedy, its no-repeat rule) up to MAX_TOKENS (default 2048) and writes the
 * markdown to stdout: the text less its grounding regions (<|ref|>label<|/ref|><|det|>[[boxes]]<|/det|>), which go
 * to stderr with the timings (a progress dot per streamed piece too). Exit status 0 on success, 1 on any error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tilepass.h"

static unsigned char *read_ppm(const char *path, int *w, int *h) {
    FILE *f = fopen(path, "rb");
    int maxval = 0;
    unsigned char *rgb = NULL;
    if (f && fscanf(f, "P6 %d %d %d", w, h, &maxval) == 3 && fgetc(f) != EOF && maxval == 255 && *w > 0 &&
        *h > 0 && (long long)*w * *h <= TP_IMAGE_MAX_PIXELS) {
        size_t n = (size_t)*w * (size_t)*h * 3;
        rgb = malloc(n);
        if (rgb && fread(rgb, 1, n, f) != n) {
            free(rgb);
            rgb = NULL;
        }
    }
    if (!rgb) fprintf(stderr, "%s: not a readable 8-bit binary PPM (P6) of at most %d pixels\n", path, TP_IMAGE_MAX_PIXELS);
    if (f) fclose(f);
    return rgb;
}

static bool progress(const char *text, size_t len, void *data) { /* whole UTF-8 characters as they come */
    (void)text, (void)len, (void)data;
    fputc('.', stderr);
    return true; /* false would stop the generation here */
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: %s TEXT.gguf VISION.gguf IMAGE.ppm [MAX_TOKENS] [PROMPT]\n", argv[0]);
        return 1;
    }
    int w = 0, h = 0;
    unsigned char *rgb = read_ppm(argv[3], &w, &h);
    if (!rgb) return 1;
    tp_error err = {0};
    tp_session *s = NULL;
    tp_session_params sp = tp_session_default_params();
    tp_session_gen_params gp = tp_session_default_gen_params();
    gp.max_tokens = argc > 4 ? atoi(argv[4]) : 2048;
    gp.on_text = progress;
    tp_session_image image = {.rgb = {.rgb = rgb, .width = w, .height = h, .stride = 0}};
    tp_session_result r;
    tp_status st = tp_session_create(argv[1], argv[2], &sp, &s, &err);
    if (st == TP_OK) st = tp_session_submit(s, argc > 5 ? argv[5] : NULL, &image, 1, &err);
    if (st == TP_OK) st = tp_session_generate(s, &gp, &r, &err);
    free(rgb);
    if (st != TP_OK) {
        fprintf(stderr, "error (%s): %s\n", tp_status_string(st), err.message);
        tp_session_free(s);
        return 1;
    }
    size_t at = 0; /* the markdown: the text between the regions */
    for (int32_t i = 0; i <= r.n_spans; i++) {
        size_t end = i < r.n_spans ? r.spans[i].begin : r.text_len;
        fwrite(r.text + at, 1, end - at, stdout);
        at = i < r.n_spans ? r.spans[i].end : at;
    }
    if (r.text_len == 0 || r.text[r.text_len - 1] != '\n') putchar('\n');
    fprintf(stderr, "\n");
    for (int32_t i = 0; i < r.n_spans; i++) {
        const tp_grounding_span *g = &r.spans[i];
        fprintf(stderr, "region '%.*s'%s:", (int)(g->label_end - g->label_begin), r.text + g->label_begin,
                g->complete ? "" : " (cut off)");
        for (int32_t b = g->first_box; b < g->first_box + g->n_boxes; b++)
            fprintf(stderr, " [%d, %d, %d, %d]", r.boxes[b].x1, r.boxes[b].y1, r.boxes[b].x2, r.boxes[b].y2);
        fprintf(stderr, "\n");
    }
    fprintf(stderr, "%d prompt + %d new tokens%s; vision %.2f s, prefill %.2f s, decode %.2f s\n", r.n_prompt_tokens,
            r.n_generated_tokens, r.hit_max_tokens ? " (hit the limit)" : "", r.vision_s, r.prefill_s, r.decode_s);
    tp_session_free(s);
    return 0;
}
