/* prompt.c - DeepSeek-OCR's (and DeepSeek-OCR-2's) prompt: [bos] + tok(text before <image>) + image rows +
 * tok(text after <image>), "<image>\n" put in front of a prompt without one; positions 0 .. n-1. */
#include "prompt.h"

#include <stdlib.h>

static tp_status build(const prompt_request *r, prompt_ids *out, tp_error *err) {
    const char *text = r->text;
    char *owned = NULL;
    tp_status st = prompt_deepseek_normalise(r, &text, &owned, err);
    if (st == TP_OK) st = prompt_deepseek_split(r, text, out, err);
    free(owned);
    return st;
}

const prompt_family deepseek_ocr_prompt = {
    .default_prompt = "<|grounding|>Convert the document to markdown.",
    .image_token = "<image>",
    .max_images = 1,
    .text_architectures = {"deepseek2-ocr"},
    .build = build,
};
