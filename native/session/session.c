/* session.c - making, resetting and freeing a session (include/tilepass.h "Sessions"): the models (loaded and
 * owned, or borrowed), the family's prompt conventions, the tokenizer, the ids the conventions need and the
 * session's own sequence of the text model. */
#include "session.h"
#include "names.h"
#include "text_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

tp_session_params tp_session_default_params(void) {
    tp_session_params p;
    p.n_threads = 4;
    p.n_ctx = 0;
    p.kv_type = -1;
    p.vision_precision = -1;
    p.image_mode = NULL;
    p.builtin_sequence = false;
    return p;
}

double session_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool session_abort(void *data) { return atomic_load(&((tp_session *)data)->cancel); }

bool session_take_cancel(tp_session *s, tp_error *err) {
    if (!atomic_exchange(&s->cancel, false)) return false;
    tp_error_set(err, TP_ERR_ABORTED, "aborted by tp_session_cancel");
    return true;
}

void tp_session_cancel(tp_session *s) {
    if (s) atomic_store(&s->cancel, true);
}

void session_clear(tp_session *s) {
    s->submitted = false;
    prompt_ids_free(&s->prompt);
    free(s->embd);
    s->embd = NULL;
    s->n_embd_rows = 0;
    s->vision_s = 0;
    s->text_len = 0;
    if (s->text_buf) s->text_buf[0] = '\0';
    s->n_tokens = 0;
    s->grounding.n_spans = s->grounding.n_boxes = 0;
    if (s->seq)
        tp_text_seq_reset(s->seq);
    else if (s->text && (s->owns_models || s->params.builtin_sequence))
        tp_text_reset(s->text);
}

void tp_session_reset(tp_session *s) {
    if (!s) return;
    session_clear(s);
    atomic_store(&s->cancel, false);
}

void tp_session_free(tp_session *s) {
    if (!s) return;
    session_clear(s);
    tp_text_seq_free(s->seq);
    if (s->owns_models) {
        tp_text_free(s->text);
        tp_vision_free(s->vision);
    }
    grounding_list_free(&s->grounding);
    free(s->text_buf);
    free(s->tokens);
    free(s->logits);
    free(s->image_mode);
    free(s);
}

static tp_status check_params(const tp_session_params *p, tp_error *err) {
    if (p->n_threads < 1 || p->n_threads > 64 || p->n_ctx < 0) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_params: n_threads %d must be in 1..64 and n_ctx %d >= 0",
                     p->n_threads, (int)p->n_ctx);
        return TP_ERR_INVALID_ARGUMENT;
    }
    return TP_OK;
}

/* The logits row and the sequence. */
static tp_status session_bind_seq(tp_session *s, tp_error *err) {
    s->logits = malloc((size_t)s->tinfo.n_vocab * sizeof(float));
    if (!s->logits) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_session: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    /* a session that owns its text model decodes in the model's built-in sequence; borrowed: its own, unless asked */
    if (s->owns_models || s->params.builtin_sequence) return TP_OK;
    return tp_text_seq_create(s->text, s->params.n_ctx, &s->seq, err);
}

/* A session without a vision model: no family (no prompt conventions, no no-repeat defaults), ids from the text
 * file; it takes tp_session_submit_ids only. */
static tp_status session_bind_text_only(tp_session *s, tp_error *err) {
    if (s->params.image_mode) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session: an image mode ('%s') needs a vision model",
                     s->params.image_mode);
        return TP_ERR_INVALID_ARGUMENT;
    }
    tp_status st = tp_text_get_tokenizer(s->text, &s->tok, err);
    if (st != TP_OK) return st;
    snprintf(s->vinfo.family, sizeof s->vinfo.family, "%s", "(none)");
    s->bos_id = s->tinfo.bos_id >= 0 ? s->tinfo.bos_id : 0;
    s->eos_id = s->tinfo.eos_id >= 0 ? s->tinfo.eos_id : 1;
    s->image_id = s->tinfo.image_token_id; /* -1: prompts without image rows */
    static const char *const td[2] = {"<td>", "</td>"};
    for (int i = 0; i < 2; i++) {
        int32_t id = tp_tokenizer_token_id(s->tok, td[i], strlen(td[i]));
        if (id >= 0) s->td_ids[s->n_td++] = id;
    }
    return session_bind_seq(s, err);
}

/* Everything but the models: the family, the ids, the tokenizer, the sequence. */
static tp_status session_bind(tp_session *s, tp_error *err) {
    tp_status st = TP_OK;
    tp_text_get_info(s->text, &s->tinfo);
    if (!s->vision) return session_bind_text_only(s, err);
    tp_vision_get_info(s->vision, &s->vinfo);
    const vision_family *vf = vision_model_family(s->vision);
    s->pf = vf ? vf->prompt : NULL;
    if (!s->pf) {
        tp_error_set(err, TP_ERR_UNSUPPORTED, "the %s vision family has no prompt conventions", s->vinfo.family);
        return TP_ERR_UNSUPPORTED;
    }
    if (s->vinfo.n_embd != s->tinfo.n_embd) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "the vision model's output width (%d) differs from the text "
                     "model's embedding width (%d): these files do not belong to the same model",
                     (int)s->vinfo.n_embd, (int)s->tinfo.n_embd);
        return TP_ERR_INVALID_ARGUMENT;
    }
    const tp_gguf *g = text_model_gguf(s->text);
    const char *arch = NULL;
    size_t arch_len = 0;
    if (g && tp_gguf_get_str(g, KEY_ARCHITECTURE, &arch, &arch_len) == TP_OK) {
        bool ok = false;
        for (int i = 0; i < 3 && s->pf->text_architectures[i]; i++)
            ok = ok || (strlen(s->pf->text_architectures[i]) == arch_len &&
                        memcmp(s->pf->text_architectures[i], arch, arch_len) == 0);
        if (!ok) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "a '%.*s' text model does not go with the %s vision model "
                         "(it needs %s)", (int)(arch_len > 64 ? 64 : arch_len), arch, s->vinfo.family,
                         s->pf->text_architectures[0]);
            return TP_ERR_INVALID_ARGUMENT;
        }
    }
    if (g && tp_gguf_get_str(g, KEY_TOK_CHAT_TEMPLATE, &s->chat_template, &s->chat_template_len) != TP_OK) {
        s->chat_template = NULL;
        s->chat_template_len = 0;
    }
    if ((st = tp_text_get_tokenizer(s->text, &s->tok, err)) != TP_OK) return st;
    s->bos_id = s->tinfo.bos_id >= 0 ? s->tinfo.bos_id : 0; /* as encoder/pipeline.py */
    s->eos_id = s->tinfo.eos_id >= 0 ? s->tinfo.eos_id : 1;
    s->image_id = s->tinfo.image_token_id >= 0
                      ? s->tinfo.image_token_id
                      : tp_tokenizer_token_id(s->tok, s->pf->image_token, strlen(s->pf->image_token));
    if (s->image_id < 0) {
        tp_error_set(err, TP_ERR_FORMAT, "the text model's vocabulary has no %s token", s->pf->image_token);
        return TP_ERR_FORMAT;
    }
    static const char *const td[2] = {"<td>", "</td>"};
    for (int i = 0; i < 2; i++) {
        int32_t id = tp_tokenizer_token_id(s->tok, td[i], strlen(td[i]));
        if (id >= 0) s->td_ids[s->n_td++] = id;
    }
    if (s->params.image_mode) {
        tp_preprocess_params pp;
        if (tp_vision_preprocess_params(s->vision, s->params.image_mode, &pp) != TP_OK) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "the %s vision model has no image mode '%s'", s->vinfo.family,
                         s->params.image_mode);
            return TP_ERR_INVALID_ARGUMENT;
        }
    }
    return session_bind_seq(s, err);
}

static tp_status session_new(const tp_session_params *params, tp_session **out, tp_error *err) {
    tp_session_params p = params ? *params : tp_session_default_params();
    tp_status st = check_params(&p, err);
    if (st != TP_OK) return st;
    tp_session *s = calloc(1, sizeof(*s));
    if (s && p.image_mode && !(s->image_mode = strdup(p.image_mode))) {
        free(s);
        s = NULL;
    }
    if (!s) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_session: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    p.image_mode = s->image_mode;
    s->params = p;
    atomic_init(&s->cancel, false);
    *out = s;
    return TP_OK;
}

tp_status tp_session_create_from_models(tp_text_model *text, tp_vision_model *vision, const tp_session_params *params,
                                        tp_session **out, tp_error *err) {
    if (out) *out = NULL;
    if (!text || !out) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_create_from_models: text and out must not be NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    tp_session *s = NULL;
    tp_status st = session_new(params, &s, err);
    if (st != TP_OK) return st;
    s->text = text;
    s->vision = vision;
    if ((st = session_bind(s, err)) != TP_OK) {
        tp_session_free(s);
        return st;
    }
    *out = s;
    return TP_OK;
}

tp_status tp_session_create(const char *text_path, const char *vision_path, const tp_session_params *params,
                            tp_session **out, tp_error *err) {
    if (out) *out = NULL;
    if (!text_path || !vision_path || !out) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_create: text_path, vision_path and out must not be NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    tp_session *s = NULL;
    tp_status st = session_new(params, &s, err);
    if (st != TP_OK) return st;
    s->owns_models = true;
    tp_vision_params vp = tp_vision_default_params();
    vp.n_threads = s->params.n_threads;
    vp.precision = s->params.vision_precision;
    vp.abort_callback = session_abort;
    vp.abort_callback_data = s;
    tp_text_params tparams = tp_text_default_params();
    tparams.n_threads = s->params.n_threads;
    tparams.n_ctx = s->params.n_ctx;
    tparams.kv_type = s->params.kv_type;
    tparams.abort_callback = session_abort;
    tparams.abort_callback_data = s;
    st = tp_vision_load(vision_path, &vp, &s->vision, err);
    if (st == TP_OK) st = tp_text_load(text_path, &tparams, &s->text, err);
    if (st == TP_OK) st = session_bind(s, err);
    if (st != TP_OK) {
        tp_session_free(s);
        return st;
    }
    *out = s;
    return TP_OK;
}

const char *tp_session_default_prompt(const tp_session *s) { return s && s->pf ? s->pf->default_prompt : NULL; }

tp_status tp_session_prompt_ids(const tp_session *s, const int32_t **ids, int32_t *n, const int32_t **pos,
                                int32_t *n_pos_axes) {
    if (!s || !ids || !n || !pos || !s->submitted) return TP_ERR_INVALID_ARGUMENT;
    *ids = s->prompt.ids;
    *n = s->prompt.n;
    *pos = s->prompt.pos;
    if (n_pos_axes) *n_pos_axes = s->prompt.pos ? 3 : 1;
    return TP_OK;
}
