/* generate.c - a session's decode loop (tp_session_generate): prefill the submitted prompt, then one token at a
 * time through the sampler (tp_sampler: the no-repeat rule, greedy / temperature / top-k / top-p) and the stop
 * rules: EOS, max_tokens, the KV cache's end, stop strings and the streamed text (tp_stop), the caller's callback,
 * tp_session_cancel. The order of the checks is encoder/generate.py's SequenceGen.next_token.
 * tp_session_generate_batch runs the same loop for several sessions of one text model: each step evaluates the
 * next token of every running session in one tp_text_eval_batch call. */
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
    p.on_token = NULL;
    p.on_token_data = NULL;
    return p;
}

static tp_status out_of_memory(tp_error *err) {
    tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_session_generate: out of memory");
    return TP_ERR_OUT_OF_MEMORY;
}

static tp_status append_text(tp_session *s, const char *t, size_t len, tp_error *err) {
    if (len > (size_t)INT64_MAX - s->text_len - 1 ||
        !tp_grow((void **)&s->text_buf, &s->text_cap, (int64_t)(s->text_len + len + 1), 1, 4096))
        return out_of_memory(err);
    if (len) memcpy(s->text_buf + s->text_len, t, len);
    s->text_len += len;
    s->text_buf[s->text_len] = '\0';
    return TP_OK;
}

static tp_status append_token(tp_session *s, int32_t id, tp_error *err) {
    if (!tp_grow((void **)&s->tokens, &s->cap_tokens, (int64_t)s->n_tokens + 1, sizeof(*s->tokens), 256))
        return out_of_memory(err);
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

/* One session's generation: its parameters, sampler, stop rules and where it stands. */
typedef struct gen_state {
    tp_session *s;
    tp_session_gen_params p;
    tp_session_result *out;
    tp_sampler *smp;
    tp_stop *stop;
    tp_error err;
    tp_status st;
    int reason;
    bool go_on;
    bool started; /* the request taken (else the result stays zeroed) */
    bool running; /* prefilled, not stopped: its next token is tok */
    int32_t tok;
    double t0, t1;
} gen_state;

/* Check the request and make the sampler and the stop rules (nothing evaluated). */
static tp_status gen_init(gen_state *g, tp_session *s, const tp_session_gen_params *params, tp_session_result *out) {
    memset(g, 0, sizeof(*g));
    g->s = s;
    g->out = out;
    g->reason = TP_SESSION_STOP_EOS;
    g->go_on = true;
    g->err.status = TP_OK;
    memset(out, 0, sizeof(*out));
    g->p = params ? *params : tp_session_default_gen_params();
    tp_error *err = &g->err;
    if (!s->submitted) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_generate: nothing submitted (tp_session_submit first; a "
                     "request is generated once)");
        return g->st = TP_ERR_INVALID_ARGUMENT;
    }
    if (g->p.max_tokens <= 0 || g->p.n_stop_strings < 0 || (g->p.n_stop_strings > 0 && !g->p.stop_strings)) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_generate: max_tokens %d must be > 0 and %d stop strings "
                     "need a non-NULL array", (int)g->p.max_tokens, (int)g->p.n_stop_strings);
        return g->st = TP_ERR_INVALID_ARGUMENT;
    }
    s->submitted = false;
    g->started = true;
    s->text_len = 0;
    s->n_tokens = 0;
    s->grounding.n_spans = s->grounding.n_boxes = 0;
    tp_sampler_params sp;
    tp_stop_params stp = tp_stop_default_params();
    stp.stop_strings = g->p.stop_strings;
    stp.n_stop_strings = g->p.n_stop_strings;
    tp_status st = sampler_params(s, &g->p, &sp, err);
    if (st == TP_OK) st = tp_sampler_create(&sp, &g->smp, err);
    if (st == TP_OK) st = tp_stop_create(s->tok, &stp, &g->stop, err);
    if (st == TP_OK) st = append_text(s, "", 0, err);
    return g->st = st;
}

/* The token after the logits in s->logits: g->running with g->tok set, or stopped (g->reason, or g->st). */
static void gen_pick(gen_state *g) {
    tp_session *s = g->s;
    tp_error *err = &g->err;
    const int32_t n_ctx = s->seq ? tp_text_seq_n_ctx(s->seq) : s->tinfo.n_ctx;
    g->running = false;
    int32_t tok = -1;
    if ((g->st = tp_sampler_sample(g->smp, s->logits, s->tinfo.n_vocab, &tok, err)) != TP_OK) return;
    if (tok < 0) {
        g->reason = TP_SESSION_STOP_NO_CANDIDATES;
        return;
    }
    if (tok == s->eos_id && !g->p.ignore_eos) {
        g->reason = TP_SESSION_STOP_EOS;
        return;
    }
    if ((g->st = append_token(s, tok, err)) != TP_OK || (g->st = tp_sampler_accept(g->smp, tok, err)) != TP_OK) return;
    if (g->p.on_token && g->go_on) g->go_on = g->p.on_token(tok, g->p.on_token_data);
    int why = TP_STOP_NONE;
    const char *t = NULL;
    size_t len = 0;
    if ((g->st = tp_stop_push(g->stop, tok, &why, &t, &len, err)) != TP_OK) return;
    if ((g->st = emit(s, &g->p, t, len, &g->go_on, err)) != TP_OK) return;
    if (why == TP_STOP_STRING) {
        g->reason = TP_SESSION_STOP_STRING;
        return;
    }
    if (!g->go_on) {
        g->reason = TP_SESSION_STOP_CALLBACK;
        return;
    }
    if (s->n_tokens >= g->p.max_tokens) {
        g->reason = TP_SESSION_STOP_LENGTH;
        return;
    }
    if ((int64_t)s->prompt.n + s->n_tokens > n_ctx) {
        g->reason = TP_SESSION_STOP_CONTEXT;
        return;
    }
    if (session_take_cancel(s, err)) {
        g->st = TP_ERR_ABORTED;
        return;
    }
    g->tok = tok;
    g->running = true;
}

/* Prefill the prompt and pick the first token. */
static void gen_prefill(gen_state *g) {
    tp_session *s = g->s;
    g->t0 = g->t1 = session_now();
    if (session_take_cancel(s, &g->err)) g->st = TP_ERR_ABORTED;
    if (g->st == TP_OK) g->st = eval(s, s->prompt.ids, s->prompt.n, s->prompt.pos, s->embd, s->n_embd_rows, &g->err);
    if (g->st == TP_OK) g->st = tp_sampler_accept_prompt(g->smp, s->prompt.ids, s->prompt.n, &g->err);
    g->t1 = session_now();
    if (g->st == TP_OK) gen_pick(g);
}

/* The end of a generation: the held-back text flushed, the result filled in, the sampler and stop rules freed. */
static tp_status gen_finish(gen_state *g) {
    tp_session *s = g->s;
    tp_session_result *out = g->out;
    tp_status st = g->st;
    if (!g->started) return st;
    double t2 = session_now();
    if (g->stop && st == TP_OK && g->reason != TP_SESSION_STOP_STRING) {
        const char *t = NULL;
        size_t len = 0;
        if ((st = tp_stop_flush(g->stop, &t, &len, &g->err)) == TP_OK) st = emit(s, &g->p, t, len, &g->go_on, &g->err);
    }
    tp_sampler_free(g->smp);
    tp_stop_free(g->stop);
    g->smp = NULL;
    g->stop = NULL;
    g->running = false;
    out->text = s->text_buf ? s->text_buf : "";
    out->text_len = s->text_len;
    out->tokens = s->tokens;
    out->n_prompt_tokens = s->prompt.n;
    out->n_generated_tokens = s->n_tokens;
    out->stop_reason = g->reason;
    out->hit_max_tokens = st == TP_OK && g->reason == TP_SESSION_STOP_LENGTH;
    out->vision_s = s->vision_s;
    out->prefill_s = g->t1 - g->t0;
    out->decode_s = g->t1 > 0 ? t2 - g->t1 : 0;
    tp_error gerr = {0};
    if (s->text_len > 0 && grounding_scan(s->text_buf, s->text_len, &s->grounding, &gerr) != TP_OK && st == TP_OK) {
        st = gerr.status;
        tp_error_set(&g->err, st, "%s", gerr.message);
    }
    out->spans = s->grounding.spans;
    out->n_spans = s->grounding.n_spans;
    out->boxes = s->grounding.boxes;
    out->n_boxes = s->grounding.n_boxes;
    return g->st = st;
}

static tp_status gen_status(const gen_state *g, tp_error *err) {
    if (g->st != TP_OK && err) *err = g->err;
    return g->st;
}

tp_status tp_session_generate(tp_session *s, const tp_session_gen_params *params, tp_session_result *out,
                              tp_error *err) {
    if (!s || !out) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_generate: NULL session or result");
        return TP_ERR_INVALID_ARGUMENT;
    }
    gen_state g;
    if (gen_init(&g, s, params, out) == TP_OK) {
        gen_prefill(&g);
        while (g.running) {
            if ((g.st = eval(s, &g.tok, 1, NULL, NULL, 0, &g.err)) != TP_OK) break;
            gen_pick(&g);
        }
    }
    gen_finish(&g);
    return gen_status(&g, err);
}

static tp_status batch_check(tp_session *const *sessions, int32_t n, const tp_session_result *out, tp_error *err) {
    if (!sessions || !out || n < 1) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT,
                     "tp_session_generate_batch: NULL sessions or results, or %d sessions", (int)n);
        return TP_ERR_INVALID_ARGUMENT;
    }
    for (int32_t i = 0; i < n; i++) {
        if (!sessions[i]) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_generate_batch: session %d is NULL", (int)i);
            return TP_ERR_INVALID_ARGUMENT;
        }
        if (sessions[i]->text != sessions[0]->text) {
            tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_generate_batch: session %d decodes with another "
                         "text model than session 0 (a batch shares one)", (int)i);
            return TP_ERR_INVALID_ARGUMENT;
        }
        for (int32_t j = 0; j < i; j++)
            if (sessions[j] == sessions[i] || sessions[j]->seq == sessions[i]->seq) {
                tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_session_generate_batch: sessions %d and %d %s", (int)j,
                             (int)i, sessions[j] == sessions[i] ? "are the same" : "share a sequence");
                return TP_ERR_INVALID_ARGUMENT;
            }
    }
    return TP_OK;
}

/* Start session i's request: check it, prefill, pick its first token. */
static void batch_start(gen_state *g, tp_session *s, const tp_session_gen_params *p, tp_session_result *out) {
    if (gen_init(g, s, p, out) == TP_OK) gen_prefill(g);
}

tp_status tp_session_generate_batch(tp_session *const *sessions, int32_t n, const tp_session_gen_params *params,
                                    tp_session_result *out, tp_error *errs, tp_session_batch_done_fn on_done,
                                    void *on_done_data, tp_error *err) {
    tp_status st = batch_check(sessions, n, out, err);
    if (st != TP_OK) return st;
    gen_state *g = calloc((size_t)n, sizeof(*g));
    tp_session_gen_params *par = calloc((size_t)n, sizeof(*par));
    tp_text_batch_entry *e = calloc((size_t)n, sizeof(*e));
    int32_t *which = calloc((size_t)n, sizeof(*which));
    bool *ended = calloc((size_t)n, sizeof(*ended));
    if (!g || !par || !e || !which || !ended) {
        free(g);
        free(par);
        free(e);
        free(which);
        free(ended);
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_session_generate_batch: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    for (int32_t i = 0; i < n; i++) { /* prefill each alone (compute-bound: nothing to share) */
        par[i] = params ? params[i] : tp_session_default_gen_params();
        batch_start(&g[i], sessions[i], &par[i], &out[i]);
    }
    for (;;) {
        int32_t m = 0;
        for (int32_t i = 0; i < n; i++) {
            while (!g[i].running && !ended[i]) { /* stopped: its result, then (on_done) maybe the next request */
                ended[i] = true;
                gen_finish(&g[i]);
                if (errs) {
                    errs[i] = g[i].err;
                    errs[i].status = g[i].st;
                    if (g[i].st == TP_OK) errs[i].message[0] = '\0';
                }
                if (on_done && on_done(i, &out[i], errs ? &errs[i] : &g[i].err, &par[i], on_done_data)) {
                    ended[i] = false;
                    batch_start(&g[i], sessions[i], &par[i], &out[i]);
                }
            }
            if (!g[i].running) continue;
            e[m] = (tp_text_batch_entry){.seq = sessions[i]->seq, .ids = &g[i].tok, .n = 1,
                                         .logits = sessions[i]->logits};
            which[m++] = i;
        }
        if (m == 0) break;
        tp_error berr = {0};
        tp_status bst = tp_text_eval_batch(sessions[0]->text, e, m, &berr);
        for (int32_t k = 0; k < m; k++) {
            gen_state *gi = &g[which[k]];
            if (bst == TP_OK) {
                gen_pick(gi);
                continue;
            }
            gi->running = false; /* nothing was appended: every session of the step ends with the error */
            gi->st = bst;
            gi->err = berr;
            if (bst == TP_ERR_ABORTED) session_take_cancel(gi->s, &gi->err);
        }
    }
    st = TP_OK;
    for (int32_t i = 0; i < n && st == TP_OK; i++)
        if ((st = g[i].st) != TP_OK)
            tp_error_set(err, st, "tp_session_generate_batch: session %d: %s", (int)i, g[i].err.message);
    free(g);
    free(par);
    free(e);
    free(which);
    free(ended);
    return st;
}
