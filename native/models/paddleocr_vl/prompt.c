/* prompt.c - PaddleOCR-VL's prompt: the chat template stored in the text GGUF (tokenizer.chat_template), rendered
 * for one user message [image, text] with the generation prompt (never a hard-coded string); its single image
 * placeholder becomes the page's image rows; positions as transformers' get_rope_index (M-RoPE: t, h, w). */
#include "prompt.h"
#include "tp_internal.h"

#include <stdlib.h>
#include <string.h>

static tp_status build(const prompt_request *r, prompt_ids *out, tp_error *err) {
    if (strstr(r->text, PROMPT_IMAGE_TAG)) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "a PaddleOCR-VL prompt is the task text; the image goes where the "
                     "chat template puts it (remove %s)", PROMPT_IMAGE_TAG);
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (!r->chat_template) {
        tp_error_set(err, TP_ERR_FORMAT, "the text model stores no chat template (tokenizer.chat_template)");
        return TP_ERR_FORMAT;
    }
    if (r->n_images != 1 || r->n_pos_axes != 3) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "a PaddleOCR-VL prompt takes one image and an M-RoPE text model");
        return TP_ERR_INVALID_ARGUMENT;
    }
    tp_chat_message msg = {.role = "user", .n_images = 1, .text = r->text};
    tp_chat_template_vars vars = {.bos_token = NULL, .eos_token = NULL, .add_generation_prompt = true};
    char *text = NULL;
    size_t len = 0;
    tp_error e = {0};
    tp_status st = tp_chat_template_render(r->chat_template, r->chat_template_len, &msg, 1, &vars, &text, &len, &e);
    if (st != TP_OK) {
        tp_error_set(err, st, "the model's chat template cannot be rendered: %s", e.message);
        return st;
    }
    prompt_ids raw = {0};
    st = prompt_push_text(&raw, r->tok, text, len, err);
    free(text);
    int32_t at = -1, n_at = 0;
    for (int32_t i = 0; st == TP_OK && i < raw.n; i++)
        if (raw.ids[i] == r->image_id) {
            at = i;
            n_at++;
        }
    if (st == TP_OK && n_at != 1) {
        tp_error_set(err, TP_ERR_FORMAT, "the chat template rendered %d image placeholders for one image", n_at);
        st = TP_ERR_FORMAT;
    }
    for (int32_t i = 0; st == TP_OK && i < raw.n; i++)
        st = prompt_push(out, raw.ids[i], i == at ? r->images[0].n_tokens : 1, err);
    prompt_ids_free(&raw);
    if (st == TP_OK) st = prompt_mrope_positions(out, at, &r->images[0], err);
    return st;
}

const prompt_family paddleocr_vl_prompt = {
    .default_prompt = "OCR:",
    .image_token = "<|IMAGE_PLACEHOLDER|>",
    .max_images = 1,
    .text_architectures = {"paddleocr"},
    .build = build,
};
