/* prompt.c - DeepSeek-VL2's "deepseek" conversation for one user turn: [bos] + "<|User|>: " + question +
 * "\n\n<|Assistant|>:", the question stripped of surrounding whitespace and given "<image>\n" in front when it
 * has no tag; the text between image tags tokenised piece by piece (prompt_deepseek_split), one tag per image
 * (several images in one prompt: the official processor's build of the inputs). */
#include "prompt.h"
#include "tp_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Python's str.strip() over ASCII: the C0 whitespace and the separators 0x1c..0x1f */
static bool is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }

static tp_status build(const prompt_request *r, prompt_ids *out, tp_error *err) {
    const char *q = r->text;
    char *owned = NULL;
    tp_status st = prompt_deepseek_normalise(r, &q, &owned, err);
    if (st != TP_OK) return st;
    size_t b = 0, e = strlen(q);
    while (b < e && is_space(q[b])) b++;
    while (e > b && is_space(q[e - 1])) e--;
    static const char head[] = "<|User|>: ", tail[] = "\n\n<|Assistant|>:";
    size_t len = sizeof head - 1 + (e - b) + sizeof tail - 1;
    char *text = malloc(len + 1);
    if (!text) {
        free(owned);
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "prompt: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    snprintf(text, len + 1, "%s%.*s%s", head, (int)(e - b), q + b, tail);
    st = prompt_deepseek_split(r, text, out, err);
    free(text);
    free(owned);
    return st;
}

const prompt_family deepseek_vl2_prompt = {
    .default_prompt = "Convert the document to markdown.",
    .image_token = "<image>",
    .max_images = PROMPT_MAX_IMAGES,
    .many_images_mode = "global", /* the official processor: no tiles for more than two images */
    .many_from = 3,
    .text_architectures = {"deepseek2-ocr", "deepseek2"},
    .build = build,
};
