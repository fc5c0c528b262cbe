/* generate.c - a session's decode loop (tp_session_generate): prefill the submitted prompt, then one token at a
 * time through the sampler (tp_sampler: the no-repeat rule, greedy / temperature / top-k / top-p) and the stop
 * rules: EOS, max_tokens, the KV cache's end, stop strings and the streamed text (tp_stop), the caller's callback,
 * tp_session_cancel. The order of the checks is encoder/generate.py's SequenceGen.next_token. */
#include "session.h"

#include <stdlib.h>
#include <string.h>

tp_session_gen_params tp_session_default_gen_params(void) {
    tp_session_gen_params p;
    memset(&p, 0, sizeof(p));
    p.max_tokens = 8192;
    p.sampler = tp_sampler_default_params();
    p.sampler.no_repeat_ngram = -1;
    p.sampler.no_repeat_window = -1;
    p.sampler.no_repeat_scope = TP_NO_REPEAT_GENERATED;
    p.sampler.no_repeat_whitelist = NULL;
    p.sampler.n_no_repeat_whitelist = -1;
    p.stop_strings = NULL;
    p.n_stop_strings = 0;
    p.ignore_eos = false;
    p.on_text = NULL;
    p.on_text_data = NULL;
    return p;
}

static tp_status append_text(tp_session *s, const char *t, size_t len, tp_error *err) {
    if (s->text_len + len + 1 > s->text_cap) {
        size_t cap = s->text_cap ? s->text_cap : 4096;
        while (cap < s->text_len + len + 1) cap *= 2;
        char *b = realloc(s->text_buf, cap);
        if (!b) {
            tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_session_generate: out of memory");
            return TP_ERR_OUT_OF_MEMORY;
        }
        s->text_buf = b;
        s->text_cap = cap;
    }
    if (len) memcpy(s->text_buf + s->text_len, t, len);
    s->text_len += len;
    s->text_buf[s->text_len] = '\0';
    return TP_OK;
}

static tp_status append_token(tp_session *s, int32_t id, tp_error *err) {
    if (s->n_tokens == s->cap_tokens) {
        int32_t cap = s->cap_tokens ? 2 * s->cap_tokens : 256;
        int32_t *t = realloc(s->tokens, (size_t)cap * sizeof(*t));
        if (!t) {
            tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_session_generate: out of memory");
            return TP_ERR_OUT_OF_MEMORY;
        }
        s->tokens = t;
        s->cap_tokens = cap;
    }
    s->tokens[s->n_tokens++] = id;
    return TP_OK;
}

static tp_status eval(tp_session *s, const int32_t *ids, int32_t n, const int32_t *pos, const float *embd, int64_t rows,
                      tp_error *err) {
    tp_text_batch_entry e = {.seq = s->seq, .ids = ids, .n = n, .pos = pos, .embd = rows > 0 ? embd : NULL,
                             .n_embd_rows = rows, .logits = s->logits, .all_logits = false};
    tp_status st = tp_text_eval_batch(s->text, &e, 1, err);
    if (st == TP_ERR_ABORTED) session_take_cancel(s, err);
    return st;
}

/* The sampler's parameters: the session's vocabulary, the family's no-repeat rule and <td> </td> where asked. */
static tp_status sampler_params(const tp_session *s, const tp_session_gen_params *p, tp_sampler_params *sp,
                                tp_error *err) {
    *sp = p->sampler;
    sp->n_vocab = s->tinfo.n_vocab;
    if (sp->no_repeat_ngram < 0) sp->no_repeat_ngram = s->vinfo.no_repeat_ngram;
    if (sp->no_repeat_window < 0) sp->no_repeat_window = s->vinfo.no_repeat_window;
    if (sp->n_no_repeat_whitelist < 0) {
        if (sp->no_repeat_whitelist) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_generate: n_no_repeat_whitelist < 0 with a whitelist");
            return TP_ERR_INVALID_ARGUMENT;
        }
        sp->no_repeat_whitelist = s->td_ids;
        sp->n_no_repeat_whitelist = s->n_td;
    }
    return TP_OK;
}

/* Text to the buffer and to the callback (unless it has said stop). */
static tp_status emit(tp_session *s, const tp_session_gen_params *p, const char *t, size_t len, bool *go_on,
                      tp_error *err) {
    tp_status st = append_text(s, t, len, err);
    if (st == TP_OK && len > 0 && p->on_text && *go_on) *go_on = p->on_text(t, len, p->on_text_data);
    return st;
}

static tp_status decode(tp_session *s, const tp_session_gen_params *p, tp_sampler *smp, tp_stop *stop, int *reason,
                        tp_error *err) {
    const int32_t n_ctx = s->seq ? tp_text_seq_n_ctx(s->seq) : s->tinfo.n_ctx;
    bool go_on = true;
    tp_status st = TP_OK;
    for (;;) {
        int32_t tok = -1;
        if ((st = tp_sampler_sample(smp, s->logits, s->tinfo.n_vocab, &tok, err)) != TP_OK) return st;
        if (tok < 0) {
            *reason = TP_SESSION_STOP_NO_CANDIDATES;
            break;
        }
        if (tok == s->eos_id && !p->ignore_eos) {
            *reason = TP_SESSION_STOP_EOS;
            break;
        }
        if ((st = append_token(s, tok, err)) != TP_OK || (st = tp_sampler_accept(smp, tok, err)) != TP_OK) return st;
        int why = TP_STOP_NONE;
        const char *t = NULL;
        size_t len = 0;
        if ((st = tp_stop_push(stop, tok, &why, &t, &len, err)) != TP_OK) return st;
        if ((st = emit(s, p, t, len, &go_on, err)) != TP_OK) return st;
        if (why == TP_STOP_STRING) {
            *reason = TP_SESSION_STOP_STRING;
            break;
        }
        if (!go_on) {
            *reason = TP_SESSION_STOP_CALLBACK;
            break;
        }
        if (s->n_tokens >= p->max_tokens) {
            *reason = TP_SESSION_STOP_LENGTH;
            break;
        }
        if ((int64_t)s->prompt.n + s->n_tokens > n_ctx) {
            *reason = TP_SESSION_STOP_CONTEXT;
            break;
        }
        if (session_take_cancel(s, err)) return TP_ERR_ABORTED;
        if ((st = eval(s, &tok, 1, NULL, NULL, 0, err)) != TP_OK) return st;
    }
    if (*reason != TP_SESSION_STOP_STRING) {
        const char *t = NULL;
        size_t len = 0;
        if ((st = tp_stop_flush(stop, &t, &len, err)) == TP_OK) st = emit(s, p, t, len, &go_on, err);
    }
    return st;
}

tp_status tp_session_generate(tp_session *s, const tp_session_gen_params *params, tp_session_result *out,
                              tp_error *err) {
    if (!s || !out) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_generate: NULL session or result");
        return TP_ERR_INVALID_ARGUMENT;
    }
    memset(out, 0, sizeof(*out));
    tp_session_gen_params p = params ? *params : tp_session_default_gen_params();
    if (!s->submitted) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_generate: nothing submitted (tp_session_submit first; a "
                     "request is generated once)");
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (p.max_tokens <= 0 || p.n_stop_strings < 0 || (p.n_stop_strings > 0 && !p.stop_strings)) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_generate: max_tokens %d must be > 0 and %d stop strings "
                     "need a non-NULL array", (int)p.max_tokens, (int)p.n_stop_strings);
        return TP_ERR_INVALID_ARGUMENT;
    }
    s->submitted = false;
    s->text_len = 0;
    s->n_tokens = 0;
    s->grounding.n_spans = s->grounding.n_boxes = 0;
    tp_sampler_params sp;
    tp_stop_params stp = tp_stop_default_params();
    stp.stop_strings = p.stop_strings;
    stp.n_stop_strings = p.n_stop_strings;
    tp_sampler *smp = NULL;
    tp_stop *stop = NULL;
    tp_status st = sampler_params(s, &p, &sp, err);
    if (st == TP_OK) st = tp_sampler_create(&sp, &smp, err);
    if (st == TP_OK) st = tp_stop_create(s->tok, &stp, &stop, err);
    if (st == TP_OK) st = append_text(s, "", 0, err);
    int reason = TP_SESSION_STOP_EOS;
    double t0 = session_now(), t1 = t0;
    if (st == TP_OK && session_take_cancel(s, err)) st = TP_ERR_ABORTED;
    if (st == TP_OK) st = eval(s, s->prompt.ids, s->prompt.n, s->prompt.pos, s->embd, s->n_embd_rows, err);
    if (st == TP_OK) st = tp_sampler_accept_prompt(smp, s->prompt.ids, s->prompt.n, err);
    t1 = session_now();
    if (st == TP_OK) st = decode(s, &p, smp, stop, &reason, err);
    double t2 = session_now();
    tp_sampler_free(smp);
    tp_stop_free(stop);
    out->text = s->text_buf ? s->text_buf : "";
    out->text_len = s->text_len;
    out->tokens = s->tokens;
    out->n_prompt_tokens = s->prompt.n;
    out->n_generated_tokens = s->n_tokens;
    out->stop_reason = reason;
    out->hit_max_tokens = st == TP_OK && reason == TP_SESSION_STOP_LENGTH;
    out->vision_s = s->vision_s;
    out->prefill_s = t1 - t0;
    out->decode_s = t2 - t1;
    tp_error gerr = {0};
    if (s->text_len > 0 && grounding_scan(s->text_buf, s->text_len, &s->grounding, &gerr) != TP_OK && st == TP_OK) {
        st = gerr.status;
        tp_error_set(err, st, "%s", gerr.message);
    }
    out->spans = s->grounding.spans;
    out->n_spans = s->grounding.n_spans;
    out->boxes = s->grounding.boxes;
    out->n_boxes = s->grounding.n_boxes;
    return st;
}
