/* text_load.c - reading a DeepSeek-OCR text GGUF (general.architecture = deepseek2-ocr):
 * hyperparameters (the deepseek2-ocr.* keys, then tensor shapes, then llama.cpp's defaults: rope θ
 * 10000 when absent, expert weights scale 1.0, no renormalisation, softmax gating), the weight
 * tensors with every shape checked, and the token strings decoded to raw bytes. */
#include "deepseek2_text.h"
#include "tp_quants.h"
#include "names.h"
#include "weights.h"

#include <stdio.h>
#include <stdlib.h>

#define ARCH "deepseek2-ocr"

static int get_int(const tp_gguf *g, const char *key, int fallback) {
    return weights_get_int(g, key, 0, (1 << 30) - 1, fallback);
}

static float get_float(const tp_gguf *g, const char *key, float fallback) {
    float v;
    if (tp_gguf_get_f32(g, key, &v) == TP_OK && v == v) return v;
    return fallback;
}

static bool str_equals(const char *s, size_t n, const char *want) {
    return n == strlen(want) && memcmp(s, want, n) == 0;
}

tp_status text_read_hparams(const tp_gguf *g, const char *path, text_hparams *hp, tp_error *err) {
    memset(hp, 0, sizeof(*hp));
    const char *arch;
    size_t arch_len;
    if (tp_gguf_get_str(g, "general.architecture", &arch, &arch_len) != TP_OK) {
        tp_error_set(err, TP_ERR_FORMAT, "%s: no general.architecture: not a model file", path);
        return TP_ERR_FORMAT;
    }
    if (!str_equals(arch, arch_len, ARCH)) {
        bool vision = str_equals(arch, arch_len, "clip");
        tp_error_set(err, TP_ERR_FORMAT, "%s: architecture is '%.*s', not a text model ('" ARCH "')%s", path,
                     (int)(arch_len > 64 ? 64 : arch_len), arch,
                     vision ? " (it is a vision/mmproj file)" : "");
        return TP_ERR_FORMAT;
    }
    hp->n_embd = (int)weights_tensor_ne(g, TN_TOKEN_EMBD, 0);
    hp->n_vocab = (int)weights_tensor_ne(g, TN_TOKEN_EMBD, 1);
    if (hp->n_embd <= 0 || hp->n_vocab <= 0) {
        tp_error_set(err, TP_ERR_FORMAT, "%s: tensor 'token_embd.weight' is missing", path);
        return TP_ERR_FORMAT;
    }
    int counted = 0;
    while (counted < TP_TEXT_MAX_LAYERS && weights_has_tensorf(g, TN_ATTN_NORM, counted)) counted++;
    hp->n_layer = get_int(g, ARCH KEY_SFX_BLOCK_COUNT, counted);
    if (hp->n_layer <= 0 || hp->n_layer > TP_TEXT_MAX_LAYERS) {
        tp_error_set(err, TP_ERR_FORMAT, "%s: block count %d is out of range 1..%d", path, hp->n_layer,
                     TP_TEXT_MAX_LAYERS);
        return TP_ERR_FORMAT;
    }
    hp->n_ctx_train = get_int(g, ARCH KEY_SFX_CONTEXT_LENGTH, 8192);
    hp->n_head = get_int(g, ARCH KEY_SFX_HEAD_COUNT, 0);
    hp->n_head_kv = get_int(g, ARCH KEY_SFX_HEAD_COUNT_KV, hp->n_head);
    if (hp->n_head <= 0 || hp->n_head_kv <= 0 || hp->n_head % hp->n_head_kv != 0) {
        tp_error_set(err, TP_ERR_FORMAT, "%s: head counts %d / %d (kv) are missing or invalid", path, hp->n_head,
                     hp->n_head_kv);
        return TP_ERR_FORMAT;
    }
    int64_t q_rows = weights_tensor_nef(g, 1, TN_ATTN_Q, 0), v_rows = weights_tensor_nef(g, 1, TN_ATTN_V, 0);
    if (q_rows <= 0 || v_rows <= 0 || q_rows % hp->n_head != 0 || v_rows % hp->n_head_kv != 0) {
        tp_error_set(err, TP_ERR_FORMAT, "%s: blk.0.attn_q/attn_v are missing or not divisible by the head counts",
                     path);
        return TP_ERR_FORMAT;
    }
    hp->head_dim = (int)(q_rows / hp->n_head);
    hp->head_dim_v = (int)(v_rows / hp->n_head_kv);
    if (hp->head_dim % 2 != 0) {
        tp_error_set(err, TP_ERR_FORMAT, "%s: head dimension %d is odd (NeoX rope needs pairs)", path, hp->head_dim);
        return TP_ERR_FORMAT;
    }
    hp->eps = get_float(g, ARCH KEY_SFX_RMS_EPS, 1e-6f);
    hp->rope_base = get_float(g, ARCH KEY_SFX_ROPE_FREQ_BASE, 10000.0f);
    if (!(hp->eps > 0.0f && hp->eps < 1.0f) || !(hp->rope_base > 1.0f)) {
        tp_error_set(err, TP_ERR_FORMAT, "%s: rms epsilon %g or rope base %g is invalid", path, (double)hp->eps,
                     (double)hp->rope_base);
        return TP_ERR_FORMAT;
    }
    /* the first MoE layer gives the expert shapes; each layer's kind comes from its own tensors */
    int first_moe = -1;
    for (int l = 0; l < hp->n_layer && first_moe < 0; l++)
        if (weights_has_tensorf(g, TN_FFN_GATE_INP, l)) first_moe = l;
    hp->n_dense_lead = get_int(g, ARCH KEY_SFX_LEADING_DENSE, first_moe < 0 ? hp->n_layer : first_moe);
    for (int l = 0; l < hp->n_layer; l++)
        if (!weights_has_tensorf(g, TN_FFN_GATE_INP, l)) {
            hp->n_ff = (int)weights_tensor_nef(g, 1, TN_FFN_GATE, l);
            break;
        }
    if (first_moe >= 0) {
        hp->n_expert = (int)weights_tensor_nef(g, 2, TN_FFN_GATE_EXPS, first_moe);
        hp->n_ff_exp = (int)weights_tensor_nef(g, 1, TN_FFN_GATE_EXPS, first_moe);
        hp->n_ff_shexp = weights_has_tensorf(g, TN_FFN_GATE_SHEXP, first_moe)
                             ? (int)weights_tensor_nef(g, 1, TN_FFN_GATE_SHEXP, first_moe)
                             : 0;
        hp->n_expert_used = get_int(g, ARCH KEY_SFX_EXPERT_USED_COUNT, 0);
        hp->n_expert_shared = get_int(g, ARCH KEY_SFX_EXPERT_SHARED_COUNT, hp->n_ff_shexp > 0 ? 1 : 0);
        if (hp->n_expert <= 0 || hp->n_ff_exp <= 0) {
            tp_error_set(err, TP_ERR_FORMAT, "%s: layer %d has a router but no stacked experts", path, first_moe);
            return TP_ERR_FORMAT;
        }
        if (hp->n_expert_used <= 0 || hp->n_expert_used > hp->n_expert) {
            tp_error_set(err, TP_ERR_FORMAT, "%s: " ARCH KEY_SFX_EXPERT_USED_COUNT " %d is missing or not in 1..%d", path,
                         hp->n_expert_used, hp->n_expert);
            return TP_ERR_FORMAT;
        }
        hp->expert_weights_scale = get_float(g, ARCH KEY_SFX_EXPERT_WEIGHTS_SCALE, 1.0f);
        bool norm = false;
        hp->expert_weights_norm = tp_gguf_get_bool(g, ARCH KEY_SFX_EXPERT_WEIGHTS_NORM, &norm) == TP_OK && norm;
        hp->expert_gating = get_int(g, ARCH KEY_SFX_EXPERT_GATING_FUNC, TP_MOE_GATING_SOFTMAX);
        if (!moe_gating_supported(hp->expert_gating)) {
            tp_error_set(err, TP_ERR_UNSUPPORTED,
                         "%s: expert gating function %d is not supported (1 softmax, 2 sigmoid)", path,
                         hp->expert_gating);
            return TP_ERR_UNSUPPORTED;
        }
        int groups = get_int(g, ARCH KEY_SFX_EXPERT_GROUP_COUNT, 1), groups_used = get_int(g, ARCH KEY_SFX_EXPERT_GROUP_USED_COUNT, groups);
        if (groups > 1 && groups_used < groups) {
            tp_error_set(err, TP_ERR_UNSUPPORTED, "%s: group-limited expert routing (%d of %d groups) is not supported",
                         path, groups_used, groups);
            return TP_ERR_UNSUPPORTED;
        }
    } else {
        hp->expert_weights_scale = 1.0f;
    }
    hp->bos_id = weights_token_id(g, KEY_TOK_BOS, hp->n_vocab, -1);
    hp->eos_id = weights_token_id(g, KEY_TOK_EOS, hp->n_vocab, -1);
    hp->pad_id = weights_token_id(g, KEY_TOK_PAD, hp->n_vocab, -1);
    hp->image_token_id = weights_token_id(g, KEY_TP_IMAGE_TOKEN_ID, hp->n_vocab, -1);
    if (hp->image_token_id < 0) hp->image_token_id = weights_find_token(g, "<image>", hp->n_vocab);
    return TP_OK;
}

/* ---- weights ---- */

/* Shapes with three checked dims (the fourth is always 1 here). */
static tp_tensor *loadf(weights_loader *L, int64_t ne0, int64_t ne1, int64_t ne2, const char *fmt, int l) {
    return weights_loadf(L, ne0, ne1, ne2, 1, fmt, l);
}

static tp_tensor *load(weights_loader *L, const char *name, int64_t ne0, int64_t ne1, int64_t ne2) {
    return weights_load(L, name, ne0, ne1, ne2, 1);
}

tp_status text_load_weights(tp_gguf *g, const char *path, const text_hparams *hp, tp_context *ctx,
                            text_weights *w, tp_error *err) {
    memset(w, 0, sizeof(*w));
    weights_loader L = {g, ctx, path, err, false};
    const int64_t C = hp->n_embd, V = hp->n_vocab;
    const int64_t Q = (int64_t)hp->n_head * hp->head_dim, KV = (int64_t)hp->n_head_kv * hp->head_dim;
    const int64_t VV = (int64_t)hp->n_head_kv * hp->head_dim_v, O = (int64_t)hp->n_head * hp->head_dim_v;
    w->tok_embd = load(&L, TN_TOKEN_EMBD, C, V, 1);
    /* norms are element-wise: any stored type (llama.cpp accepts F16 norms) is made F32 once, here */
    w->output_norm = weights_load_f32(&L, TN_OUTPUT_NORM, C, 1, 1, 1);
    w->output = load(&L, TN_OUTPUT, C, V, 1);
    for (int l = 0; l < hp->n_layer && !L.failed; l++) {
        text_layer *ly = &w->layers[l];
        ly->attn_norm = weights_loadf_f32(&L, C, 1, 1, 1, TN_ATTN_NORM, l);
        ly->ffn_norm = weights_loadf_f32(&L, C, 1, 1, 1, TN_FFN_NORM, l);
        ly->wq = loadf(&L, C, Q, 1, TN_ATTN_Q, l);
        ly->wk = loadf(&L, C, KV, 1, TN_ATTN_K, l);
        ly->wv = loadf(&L, C, VV, 1, TN_ATTN_V, l);
        ly->wo = loadf(&L, O, C, 1, TN_ATTN_OUT, l);
        ly->moe = weights_has_tensorf(g, TN_FFN_GATE_INP, l);
        if (!ly->moe) {
            ly->ffn_gate = loadf(&L, C, hp->n_ff, 1, TN_FFN_GATE, l);
            ly->ffn_up = loadf(&L, C, hp->n_ff, 1, TN_FFN_UP, l);
            ly->ffn_down = loadf(&L, hp->n_ff, C, 1, TN_FFN_DOWN, l);
            continue;
        }
        const int64_t E = hp->n_expert, F = hp->n_ff_exp;
        moe_weights *m = &ly->ffn_moe;
        m->gate_inp = loadf(&L, C, E, 1, TN_FFN_GATE_INP, l);
        if (weights_has_tensorf(g, TN_FFN_EXP_PROBS_B, l))
            m->exp_probs_b = weights_loadf_f32(&L, E, 1, 1, 1, TN_FFN_EXP_PROBS_B, l);
        m->gate_exps = loadf(&L, C, F, E, TN_FFN_GATE_EXPS, l);
        m->up_exps = loadf(&L, C, F, E, TN_FFN_UP_EXPS, l);
        m->down_exps = loadf(&L, F, C, E, TN_FFN_DOWN_EXPS, l);
        if (hp->n_ff_shexp > 0) {
            m->gate_sh = loadf(&L, C, hp->n_ff_shexp, 1, TN_FFN_GATE_SHEXP, l);
            m->up_sh = loadf(&L, C, hp->n_ff_shexp, 1, TN_FFN_UP_SHEXP, l);
            m->down_sh = loadf(&L, hp->n_ff_shexp, C, 1, TN_FFN_DOWN_SHEXP, l);
        }
    }
    if (L.failed) return err ? err->status : TP_ERR_FORMAT;
    if (hp->n_ff <= 0)
        for (int l = 0; l < hp->n_layer; l++)
            if (!w->layers[l].moe) {
                tp_error_set(err, TP_ERR_FORMAT, "%s: dense layer %d has no ffn_gate", path, l);
                return TP_ERR_FORMAT;
            }
    return TP_OK;
}


/* ---- the family ---- */

static tp_status family_load(weights_loader *L, const text_hparams *hp, void **out) {
    text_weights *w = malloc(sizeof(*w));
    if (!w) {
        tp_error_set(L->err, TP_ERR_OUT_OF_MEMORY, "%s: out of memory", L->path);
        return TP_ERR_OUT_OF_MEMORY;
    }
    *out = w;
    return text_load_weights(L->g, L->path, hp, L->ctx, w, L->err);
}

static void family_free(void *w) { free(w); }

static const tp_tensor *token_embd(const void *w) { return ((const text_weights *)w)->tok_embd; }

static const tp_tensor *probe_matrix(const void *w) { return ((const text_weights *)w)->layers[0].wq; }

static tp_tensor *family_build(tp_context *ctx, tp_graph *g, const text_hparams *hp, const void *w, tp_tensor *x,
                               tp_tensor *pos, const text_batch *b) {
    return text_build_graph(ctx, g, hp, w, x, pos, b);
}

const text_family deepseek2_text = {
    .architecture = ARCH,
    .read_hparams = text_read_hparams,
    .load = family_load,
    .free = family_free,
    .token_embd = token_embd,
    .probe_matrix = probe_matrix,
    .build = family_build,
};
