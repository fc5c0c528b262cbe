/* prompt.c - PaddleOCR-VL's prompt: the chat template stored in the text GGUF (tokenizer.chat_template), rendered
 * for one user message [image, text] with the generation prompt (never a hard-coded string); its single image
 * placeholder becomes the page's image rows; positions as transformers' get_rope_index (M-RoPE: t, h, w). */
#include "prompt.h"
#include "tp_internal.h"

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
    tp_error_set(err, TP_ERR_UNSUPPORTED, "PaddleOCR-VL prompts need the C chat-template renderer (tp_chat_template_render), not in this build yet");
    (void)out;
    return TP_ERR_UNSUPPORTED;
}

const prompt_family paddleocr_vl_prompt = {
    .default_prompt = "OCR:",
    .image_token = "<|IMAGE_PLACEHOLDER|>",
    .max_images = 1,
    .text_architectures = {"paddleocr"},
    .build = build,
};
