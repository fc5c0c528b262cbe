/* prompt.h - a model family's prompt conventions, in C: how the user's prompt text and a page's image tokens
 * become the decoder's input ids (and, for M-RoPE text models, their positions). Each vision family points at
 * one prompt_family (models/<family>/prompt.c); the shared pieces (growing id lists, DeepSeek's "<image>"
 * split, Qwen2-VL-style M-RoPE positions) are models/prompt.c. The session API (native/session/) calls them;
 * encoder/prompts.py is the Python statement of the same rules. */
#ifndef TP_PROMPT_H
#define TP_PROMPT_H

#include "tilepass.h"

#define PROMPT_IMAGE_TAG "<image>"
#define PROMPT_MAX_IMAGES 16

/* One image of the prompt: its token count and (M-RoPE families) the cols × rows grid they form. */
typedef struct prompt_image {
    int64_t n_tokens;
    int32_t grid_cols, grid_rows;
} prompt_image;

typedef struct prompt_request {
    const tp_tokenizer *tok;
    int32_t bos_id;                 /* -1: none */
    int32_t image_id;               /* the placeholder id the image rows replace */
    const char *chat_template;      /* the text file's tokenizer.chat_template (NULL: none) */
    size_t chat_template_len;
    const char *text;               /* the user's prompt (NUL-terminated UTF-8) */
    const prompt_image *images;
    int32_t n_images;
    int32_t n_pos_axes;             /* of the text model: 1, or 3 (M-RoPE) */
} prompt_request;

/* The ids built (ids[n]) and, when n_pos_axes > 1, positions axis-major (pos[a · n + i]); malloc'ed. */
typedef struct prompt_ids {
    int32_t *ids;
    int32_t n, cap;
    int32_t *pos;
} prompt_ids;

typedef struct prompt_family {
    const char *default_prompt;  /* what a NULL prompt means */
    const char *image_token;     /* the placeholder's text when the text model names none */
    int32_t max_images;          /* images one prompt takes */
    /* the image mode for prompts of at least many_from images when the caller names none (NULL: the default) */
    const char *many_images_mode;
    int32_t many_from;
    const char *text_architectures[3]; /* the text models it decodes with (general.architecture; NULL-ended) */
    tp_status (*build)(const prompt_request *r, prompt_ids *out, tp_error *err);
} prompt_family;

extern const prompt_family deepseek_ocr_prompt;   /* DeepSeek-OCR and DeepSeek-OCR-2 */
extern const prompt_family deepseek_vl2_prompt;
extern const prompt_family paddleocr_vl_prompt;

void prompt_ids_free(prompt_ids *p);
tp_status prompt_push(prompt_ids *p, int32_t id, int64_t count, tp_error *err);
/* The ids of text[0..len) (special tokens matched whole, as the reference tokenizers do), appended. */
tp_status prompt_push_text(prompt_ids *p, const tp_tokenizer *tok, const char *text, size_t len, tp_error *err);
/* Occurrences of "<image>" in text. */
int32_t prompt_count_tags(const char *text);
/* DeepSeek's layout of text (which holds r->n_images "<image>" tags): [bos] + tok(piece 0) + image 0 rows +
 * tok(piece 1) + ...; each piece tokenised on its own, empty pieces giving nothing. */
tp_status prompt_deepseek_split(const prompt_request *r, const char *text, prompt_ids *out, tp_error *err);
/* DeepSeek's normalisation: "<image>\n" put in front of a text that has no tag (one image); a tag count other
 * than the image count is refused. *owned (free()) is set when a new string was made. */
tp_status prompt_deepseek_normalise(const prompt_request *r, const char **text, char **owned, tp_error *err);
/* transformers' get_rope_index for one image block of a cols × rows grid at image_start of n ids. */
tp_status prompt_mrope_positions(prompt_ids *p, int32_t image_start, const prompt_image *img, tp_error *err);

#endif
