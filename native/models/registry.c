/* registry.c - which family runs a file: the vision families by clip.projector_type, the text families by
 * general.architecture. Adding a family is one line here. */
#include "registry.h"
#include "names.h"

extern const vision_family deepseek_ocr_vision;
extern const vision_family deepseek_ocr2_vision;
extern const vision_family paddleocr_vl_vision;
extern const vision_family deepseek_vl2_vision;

static const vision_family *const vision_families[] = {
    &deepseek_ocr_vision,
    &deepseek_ocr2_vision,
    &paddleocr_vl_vision,
    &deepseek_vl2_vision,
};

extern const text_family deepseek2_text;
extern const text_family deepseek2_mla_text;
extern const text_family paddleocr_text;

static const text_family *const text_families[] = {
    &deepseek2_text,
    &deepseek2_mla_text,
    &paddleocr_text,
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const vision_family *vision_family_for(const tp_gguf *g) {
    for (size_t i = 0; i < COUNT(vision_families); i++)
        if (weights_str_equals(g, KEY_PROJECTOR_TYPE, vision_families[i]->projector_type)) return vision_families[i];
    return NULL;
}

const char *vision_family_names(void) { return "deepseekocr, deepseekocr2, paddleocr, deepseekvl2"; }

const text_family *text_family_for(const tp_gguf *g) {
    for (size_t i = 0; i < COUNT(text_families); i++)
        if (weights_str_equals(g, KEY_ARCHITECTURE, text_families[i]->architecture)) return text_families[i];
    return NULL;
}

const char *text_family_names(void) { return "deepseek2-ocr, deepseek2, paddleocr"; }
