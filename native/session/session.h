/* session.h - the session API's object (include/tilepass.h "Sessions"): session.c makes and frees it, submit.c
 * takes a request (images encoded, the prompt built by the vision family's conventions), generate.c runs the
 * decode loop, grounding.c finds the grounding regions of a text. */
#ifndef TP_SESSION_H
#define TP_SESSION_H

#include "prompt.h"
#include "tp_internal.h"
#include "vision_family.h"

#include <stdatomic.h>

/* Growing arrays of grounding regions and their boxes. */
typedef struct grounding_list {
    tp_grounding_span *spans;
    int32_t n_spans;
    int64_t cap_spans;
    tp_grounding_box *boxes;
    int32_t n_boxes;
    int64_t cap_boxes;
} grounding_list;

/* The regions of text[0..len), appended to out (grounding.c). */
tp_status grounding_scan(const char *text, size_t len, grounding_list *out, tp_error *err);
void grounding_list_free(grounding_list *g);

struct tp_session {
    tp_text_model *text;
    tp_vision_model *vision;
    bool owns_models;
    tp_session_params params;
    char *image_mode;               /* params.image_mode copied (NULL: the default) */
    tp_text_info tinfo;
    tp_vision_info vinfo;
    const prompt_family *pf;
    const tp_tokenizer *tok;
    const char *chat_template;      /* in the text file's mapping (NULL: none) */
    size_t chat_template_len;
    tp_text_seq *seq;
    int32_t bos_id, eos_id, image_id;
    int32_t td_ids[2];
    int32_t n_td;
    atomic_bool cancel;

    /* the request */
    bool submitted;
    prompt_ids prompt;
    float *embd;
    int64_t n_embd_rows;
    double vision_s;

    /* the result */
    char *text_buf;
    size_t text_len;
    int64_t text_cap;
    int32_t *tokens;
    int32_t n_tokens;
    int64_t cap_tokens;
    grounding_list grounding;
    float *logits;
};

/* Whether cancellation was asked (and, if so, clear it: the call that sees it reports TP_ERR_ABORTED). */
bool session_take_cancel(tp_session *s, tp_error *err);
/* The request and the result forgotten (the sequence too). */
void session_clear(tp_session *s);
double session_now(void);

#endif
