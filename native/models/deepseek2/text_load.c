/* text_load.c - reading a deepseek2 text GGUF (multi-head latent attention): the hyperparameters from
 * llama.cpp's deepseek2.* keys, each checked against the tensor shapes it describes (head_count_kv 1,
 * key_length = kv_lora + rope, value_length = kv_lora: the MLA-as-MQA layout llama.cpp writes), the gate keys
 * (expert_gating_func 1 softmax / 2 sigmoid, expert_weights_norm, expert_weights_scale), and every weight with
 * its shape checked; the family's table entry. */
#include "mla_text.h"
#include "names.h"

#include <stdio.h>
#include <stdlib.h>

#define ARCH "deepseek2"

static int get_int(const tp_gguf *g, const char *key, int fallback) {
    return weights_get_int(g, key, 0, (1 << 30) - 1, fallback);
}

static tp_status fail(tp_error *err, tp_status st, const char *path, const char *msg) {
    tp_error_set(err, st, "%s: %s", path, msg);
    return st;
}

static bool str_equals(const char *s, size_t n, const char *want) {
    return n == strlen(want) && memcmp(s, want, n) == 0;
}

/* The attention widths: keys first, checked against attn_kv_a_mqa / attn_k_b / attn_v_b / attn_q(_b). */
static tp_status read_attention(const tp_gguf *g, const char *path, text_hparams *hp, tp_error *err) {
    char msg[256];
    hp->n_head = get_int(g, ARCH KEY_SFX_HEAD_COUNT, 0);
    hp->n_head_kv = get_int(g, ARCH KEY_SFX_HEAD_COUNT_KV, 1);
    if (hp->n_head <= 0) return fail(err, TP_ERR_FORMAT, path, ARCH KEY_SFX_HEAD_COUNT " is missing");
    if (hp->n_head_kv != 1) {
        snprintf(msg, sizeof msg, ARCH KEY_SFX_HEAD_COUNT_KV " is %d: multi-head latent attention files have 1 "
                 "(the latent is one shared head)", hp->n_head_kv);
        return fail(err, TP_ERR_UNSUPPORTED, path, msg);
    }
    const int64_t kv_a_rows = weights_tensor_nef(g, 1, TN_ATTN_KV_A_MQA, 0);
    const int64_t kv_norm = weights_tensor_nef(g, 0, TN_ATTN_KV_A_NORM, 0);
    hp->kv_lora_rank = get_int(g, ARCH KEY_SFX_KV_LORA_RANK, (int)kv_norm);
    hp->rope_dim = get_int(g, ARCH KEY_SFX_ROPE_DIMENSION_COUNT, (int)(kv_a_rows - hp->kv_lora_rank));
    if (kv_a_rows <= 0 || hp->kv_lora_rank <= 0 || hp->kv_lora_rank != kv_norm || hp->rope_dim < 2 ||
        hp->rope_dim % 2 != 0 || kv_a_rows != (int64_t)hp->kv_lora_rank + hp->rope_dim) {
        snprintf(msg, sizeof msg, "blk.0.attn_kv_a_mqa (%lld rows) / attn_kv_a_norm (%lld) disagree with kv_lora_rank "
                 "%d + rope dimension count %d (even, >= 2)", (long long)kv_a_rows, (long long)kv_norm,
                 hp->kv_lora_rank, hp->rope_dim);
        return fail(err, TP_ERR_FORMAT, path, msg);
    }
    const bool lora = weights_has_tensorf(g, TN_ATTN_Q_A, 0);
    const int64_t q_rows = weights_tensor_nef(g, 1, lora ? TN_ATTN_Q_B : TN_ATTN_Q, 0);
    hp->q_lora_rank = lora ? get_int(g, ARCH KEY_SFX_Q_LORA_RANK, (int)weights_tensor_nef(g, 1, TN_ATTN_Q_A, 0)) : 0;
    hp->head_dim_mla = get_int(g, ARCH KEY_SFX_KEY_LENGTH_MLA, q_rows > 0 ? (int)(q_rows / hp->n_head) : 0);
    hp->head_dim_v_mla = get_int(g, ARCH KEY_SFX_VALUE_LENGTH_MLA, (int)weights_tensor_nef(g, 1, TN_ATTN_V_B, 0));
    if (q_rows <= 0 || q_rows != (int64_t)hp->n_head * hp->head_dim_mla || hp->head_dim_mla <= hp->rope_dim ||
        hp->head_dim_v_mla <= 0 || (lora && hp->q_lora_rank <= 0)) {
        snprintf(msg, sizeof msg, "blk.0.%s (%lld rows) disagrees with %d heads of key_length_mla %d (nope + rope, "
                 "rope %d), or value_length_mla %d / q_lora_rank %d is missing", lora ? "attn_q_b" : "attn_q",
                 (long long)q_rows, hp->n_head, hp->head_dim_mla, hp->rope_dim, hp->head_dim_v_mla, hp->q_lora_rank);
        return fail(err, TP_ERR_FORMAT, path, msg);
    }
    /* the cache: ONE head of the latent + the roped key part, values the latent (MQA over the latent) */
    hp->head_dim = hp->kv_lora_rank + hp->rope_dim;
    hp->head_dim_v = hp->kv_lora_rank;
    int key_len = get_int(g, ARCH KEY_SFX_KEY_LENGTH, hp->head_dim), val_len = get_int(g, ARCH KEY_SFX_VALUE_LENGTH, hp->head_dim_v);
    if (key_len != hp->head_dim || val_len != hp->head_dim_v) {
        snprintf(msg, sizeof msg, "key_length %d / value_length %d are not kv_lora + rope %d / kv_lora %d (a legacy "
                 "deepseek2 file with attn_kv_b is not supported)", key_len, val_len, hp->head_dim, hp->head_dim_v);
        return fail(err, TP_ERR_UNSUPPORTED, path, msg);
    }
    const char *scaling = NULL;
    size_t scaling_len = 0;
    if (tp_gguf_get_str(g, ARCH KEY_SFX_ROPE_SCALING_TYPE, &scaling, &scaling_len) == TP_OK &&
        !str_equals(scaling, scaling_len, "none")) {
        snprintf(msg, sizeof msg, "rope scaling '%.*s' is not supported (plain RoPE: no DeepSeek-VL2 config scales)",
                 (int)TP_MIN(scaling_len, (size_t)32), scaling);
        return fail(err, TP_ERR_UNSUPPORTED, path, msg);
    }
    return TP_OK;
}

/* The feed-forward widths and the gate: dense layers' n_ff, the experts' shapes from the first MoE layer. */
static tp_status read_ffn(const tp_gguf *g, const char *path, text_hparams *hp, tp_error *err) {
    char msg[256];
    int first_moe = -1;
    for (int l = 0; l < hp->n_layer && first_moe < 0; l++)
        if (weights_has_tensorf(g, TN_FFN_GATE_INP, l)) first_moe = l;
    hp->n_dense_lead = get_int(g, ARCH KEY_SFX_LEADING_DENSE, first_moe < 0 ? hp->n_layer : first_moe);
    for (int l = 0; l < hp->n_layer; l++)
        if (!weights_has_tensorf(g, TN_FFN_GATE_INP, l)) {
            hp->n_ff = (int)weights_tensor_nef(g, 1, TN_FFN_GATE, l);
            if (hp->n_ff <= 0) {
                snprintf(msg, sizeof msg, "dense layer %d has no ffn_gate", l);
                return fail(err, TP_ERR_FORMAT, path, msg);
            }
            break;
        }
    hp->expert_weights_scale = 1.0f;
    hp->expert_gating = TP_MOE_GATING_SOFTMAX;
    if (first_moe < 0) return TP_OK;
    hp->n_expert = (int)weights_tensor_nef(g, 2, TN_FFN_GATE_EXPS, first_moe);
    hp->n_ff_exp = (int)weights_tensor_nef(g, 1, TN_FFN_GATE_EXPS, first_moe);
    hp->n_ff_shexp = weights_has_tensorf(g, TN_FFN_GATE_SHEXP, first_moe)
                         ? (int)weights_tensor_nef(g, 1, TN_FFN_GATE_SHEXP, first_moe)
                         : 0;
    hp->n_expert_used = get_int(g, ARCH KEY_SFX_EXPERT_USED_COUNT, 0);
    hp->n_expert_shared = get_int(g, ARCH KEY_SFX_EXPERT_SHARED_COUNT, hp->n_ff_shexp > 0 ? 1 : 0);
    if (hp->n_expert <= 0 || hp->n_ff_exp <= 0 || get_int(g, ARCH KEY_SFX_EXPERT_COUNT, hp->n_expert) != hp->n_expert) {
        snprintf(msg, sizeof msg, "layer %d's stacked experts are missing or disagree with " ARCH KEY_SFX_EXPERT_COUNT,
                 first_moe);
        return fail(err, TP_ERR_FORMAT, path, msg);
    }
    if (hp->n_expert_used <= 0 || hp->n_expert_used > hp->n_expert) {
        snprintf(msg, sizeof msg, ARCH KEY_SFX_EXPERT_USED_COUNT " %d is missing or not in 1..%d", hp->n_expert_used,
                 hp->n_expert);
        return fail(err, TP_ERR_FORMAT, path, msg);
    }
    hp->expert_weights_scale = weights_get_float(g, ARCH KEY_SFX_EXPERT_WEIGHTS_SCALE, 0.0f, 1e6f, 1.0f);
    bool norm = false;
    hp->expert_weights_norm = tp_gguf_get_bool(g, ARCH KEY_SFX_EXPERT_WEIGHTS_NORM, &norm) == TP_OK && norm;
    hp->expert_gating = get_int(g, ARCH KEY_SFX_EXPERT_GATING_FUNC, TP_MOE_GATING_SOFTMAX);
    if (!moe_gating_supported(hp->expert_gating)) {
        snprintf(msg, sizeof msg, "expert gating function %d is not supported (1 softmax, 2 sigmoid)", hp->expert_gating);
        return fail(err, TP_ERR_UNSUPPORTED, path, msg);
    }
    int groups = get_int(g, ARCH KEY_SFX_EXPERT_GROUP_COUNT, 1);
    int groups_used = get_int(g, ARCH KEY_SFX_EXPERT_GROUP_USED_COUNT, groups);
    if (groups > 1 && groups_used < groups) {
        snprintf(msg, sizeof msg, "group-limited expert routing (%d of %d groups) is not supported", groups_used, groups);
        return fail(err, TP_ERR_UNSUPPORTED, path, msg);
    }
    return TP_OK;
}

tp_status mla_read_hparams(const tp_gguf *g, const char *path, text_hparams *hp, tp_error *err) {
    memset(hp, 0, sizeof(*hp));
    hp->n_embd = (int)weights_tensor_ne(g, TN_TOKEN_EMBD, 0);
    hp->n_vocab = (int)weights_tensor_ne(g, TN_TOKEN_EMBD, 1);
    if (hp->n_embd <= 0 || hp->n_vocab <= 0) return fail(err, TP_ERR_FORMAT, path, "tensor 'token_embd.weight' is missing");
    hp->n_layer = get_int(g, ARCH KEY_SFX_BLOCK_COUNT, weights_count_blocks(g, TN_ATTN_NORM, TP_TEXT_MAX_LAYERS));
    if (hp->n_layer <= 0 || hp->n_layer > TP_TEXT_MAX_LAYERS) {
        char msg[96];
        snprintf(msg, sizeof msg, "block count %d is out of range 1..%d", hp->n_layer, TP_TEXT_MAX_LAYERS);
        return fail(err, TP_ERR_FORMAT, path, msg);
    }
    hp->n_ctx_train = get_int(g, ARCH KEY_SFX_CONTEXT_LENGTH, 4096);
    hp->eps = weights_get_float(g, ARCH KEY_SFX_RMS_EPS, 0.0f, 1.0f, 1e-6f);
    hp->rope_base = weights_get_float(g, ARCH KEY_SFX_ROPE_FREQ_BASE, 1.0f, 1e30f, 10000.0f);
    tp_status st = read_attention(g, path, hp, err);
    if (st == TP_OK) st = read_ffn(g, path, hp, err);
    if (st != TP_OK) return st;
    hp->bos_id = weights_token_id(g, KEY_TOK_BOS, hp->n_vocab, -1);
    hp->eos_id = weights_token_id(g, KEY_TOK_EOS, hp->n_vocab, -1);
    hp->pad_id = weights_token_id(g, KEY_TOK_PAD, hp->n_vocab, -1);
    hp->image_token_id = weights_token_id(g, KEY_TP_IMAGE_TOKEN_ID, hp->n_vocab, -1);
    if (hp->image_token_id < 0) hp->image_token_id = weights_find_token(g, "<image>", hp->n_vocab);
    return TP_OK;
}

/* ---- weights ---- */

static tp_tensor *loadf(weights_loader *L, int64_t ne0, int64_t ne1, int64_t ne2, const char *fmt, int l) {
    return weights_loadf(L, ne0, ne1, ne2, 1, fmt, l);
}

static tp_tensor *loadf_f32(weights_loader *L, int64_t ne0, const char *fmt, int l) {
    return weights_loadf_f32(L, ne0, 1, 1, 1, fmt, l);
}

static void load_layer(weights_loader *L, const text_hparams *hp, int l, mla_layer *ly) {
    const int64_t C = hp->n_embd, H = hp->n_head, R = hp->kv_lora_rank, rope = hp->rope_dim;
    const int64_t nope = hp->head_dim_mla - rope, Dv = hp->head_dim_v_mla, Q = H * hp->head_dim_mla;
    ly->attn_norm = loadf_f32(L, C, TN_ATTN_NORM, l);
    ly->ffn_norm = loadf_f32(L, C, TN_FFN_NORM, l);
    if (hp->q_lora_rank > 0) {
        ly->wq_a = loadf(L, C, hp->q_lora_rank, 1, TN_ATTN_Q_A, l);
        ly->wq_a_norm = loadf_f32(L, hp->q_lora_rank, TN_ATTN_Q_A_NORM, l);
        ly->wq_b = loadf(L, hp->q_lora_rank, Q, 1, TN_ATTN_Q_B, l);
    } else {
        ly->wq = loadf(L, C, Q, 1, TN_ATTN_Q, l);
    }
    ly->wkv_a_mqa = loadf(L, C, R + rope, 1, TN_ATTN_KV_A_MQA, l);
    ly->wkv_a_norm = loadf_f32(L, R, TN_ATTN_KV_A_NORM, l);
    ly->wk_b = loadf(L, nope, R, H, TN_ATTN_K_B, l);
    ly->wv_b = loadf(L, R, Dv, H, TN_ATTN_V_B, l);
    ly->wo = loadf(L, H * Dv, C, 1, TN_ATTN_OUT, l);
    ly->moe = weights_has_tensorf(L->g, TN_FFN_GATE_INP, l);
    if (!ly->moe) {
        if (hp->n_ff <= 0) {
            char msg[64];
            snprintf(msg, sizeof msg, "dense layer %d has no ffn_gate", l);
            weights_fail(L, msg);
            return;
        }
        ly->ffn_gate = loadf(L, C, hp->n_ff, 1, TN_FFN_GATE, l);
        ly->ffn_up = loadf(L, C, hp->n_ff, 1, TN_FFN_UP, l);
        ly->ffn_down = loadf(L, hp->n_ff, C, 1, TN_FFN_DOWN, l);
        return;
    }
    if (hp->n_expert <= 0) return; /* read_ffn found the first MoE layer: never here */
    const int64_t E = hp->n_expert, F = hp->n_ff_exp;
    moe_weights *m = &ly->ffn_moe;
    m->gate_inp = loadf(L, C, E, 1, TN_FFN_GATE_INP, l);
    if (weights_has_tensorf(L->g, TN_FFN_EXP_PROBS_B, l)) m->exp_probs_b = loadf_f32(L, E, TN_FFN_EXP_PROBS_B, l);
    m->gate_exps = loadf(L, C, F, E, TN_FFN_GATE_EXPS, l);
    m->up_exps = loadf(L, C, F, E, TN_FFN_UP_EXPS, l);
    m->down_exps = loadf(L, F, C, E, TN_FFN_DOWN_EXPS, l);
    if (hp->n_ff_shexp > 0) {
        m->gate_sh = loadf(L, C, hp->n_ff_shexp, 1, TN_FFN_GATE_SHEXP, l);
        m->up_sh = loadf(L, C, hp->n_ff_shexp, 1, TN_FFN_UP_SHEXP, l);
        m->down_sh = loadf(L, hp->n_ff_shexp, C, 1, TN_FFN_DOWN_SHEXP, l);
    }
}

tp_status mla_load_weights(weights_loader *L, const text_hparams *hp, mla_weights *w) {
    memset(w, 0, sizeof(*w));
    const int64_t C = hp->n_embd, V = hp->n_vocab;
    w->tok_embd = weights_load(L, TN_TOKEN_EMBD, C, V, 1, 1);
    w->output_norm = weights_load_f32(L, TN_OUTPUT_NORM, C, 1, 1, 1);
    w->output = tp_gguf_find_tensor(L->g, TN_OUTPUT) >= 0 ? weights_load(L, TN_OUTPUT, C, V, 1, 1) : w->tok_embd;
    for (int l = 0; l < hp->n_layer && !L->failed; l++) load_layer(L, hp, l, &w->layers[l]);
    return L->failed ? (L->err ? L->err->status : TP_ERR_FORMAT) : TP_OK;
}

/* ---- the family ---- */

static tp_status family_load(weights_loader *L, const text_hparams *hp, void **out) {
    mla_weights *w = malloc(sizeof(*w));
    if (!w) {
        tp_error_set(L->err, TP_ERR_OUT_OF_MEMORY, "%s: out of memory", L->path);
        return TP_ERR_OUT_OF_MEMORY;
    }
    *out = w;
    return mla_load_weights(L, hp, w);
}

static void family_free(void *w) { free(w); }

static const tp_tensor *token_embd(const void *w) { return ((const mla_weights *)w)->tok_embd; }

static const tp_tensor *probe_matrix(const void *w) { return ((const mla_weights *)w)->layers[0].wkv_a_mqa; }

static tp_tensor *family_build(tp_context *ctx, tp_graph *g, const text_hparams *hp, const void *w, tp_tensor *x,
                               tp_tensor *pos, const text_batch *b) {
    return mla_build_graph(ctx, g, hp, w, x, pos, b);
}

const text_family deepseek2_mla_text = {
    .architecture = ARCH,
    .read_hparams = mla_read_hparams,
    .load = family_load,
    .free = family_free,
    .token_embd = token_embd,
    .probe_matrix = probe_matrix,
    .build = family_build,
};
