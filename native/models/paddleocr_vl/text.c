/* text.c - PaddleOCR-VL's text family (architecture "paddleocr": ERNIE-4.5-0.3B): a dense decoder, RMSNorm,
 * GQA attention with 3-D M-RoPE (the rotation pairs cut into t / h / w sections, NeoX halves), SwiGLU MLP,
 * the output head tied to the token embedding when the file has no output.weight. Positions come from the
 * caller (tp_text_eval_pos: image tokens at (s, s + row, s + col)); the KV caches and batching (several
 * sequences per pass: blocks/kv_attention.c) are the generic API's (models/text.c). */
#include "../blocks/graph_util.h"
#include "../blocks/kv_attention.h"
#include "../text_family.h"
#include "names.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define ARCH "paddleocr"

typedef struct ernie_layer {
    tp_tensor *attn_norm, *wq, *wk, *wv, *wo, *wo_b, *ffn_norm, *ffn_gate, *ffn_up, *ffn_down;
} ernie_layer;

typedef struct ernie_weights {
    tp_tensor *tok_embd, *output_norm, *output; /* output == tok_embd when tied */
    ernie_layer layers[TP_TEXT_MAX_LAYERS];
} ernie_weights;

static int get_int(const tp_gguf *g, const char *key, int fallback) {
    return weights_get_int(g, key, 0, (1 << 30) - 1, fallback);
}

static tp_status fail(tp_error *err, const char *path, const char *msg) {
    tp_error_set(err, TP_ERR_FORMAT, "%s: %s", path, msg);
    return TP_ERR_FORMAT;
}

static tp_status read_hparams(const tp_gguf *g, const char *path, text_hparams *hp, tp_error *err) {
    memset(hp, 0, sizeof(*hp));
    hp->n_embd = (int)weights_tensor_ne(g, TN_TOKEN_EMBD, 0);
    hp->n_vocab = (int)weights_tensor_ne(g, TN_TOKEN_EMBD, 1);
    if (hp->n_embd <= 0 || hp->n_vocab <= 0) return fail(err, path, "tensor 'token_embd.weight' is missing");
    hp->n_layer = get_int(g, ARCH ".block_count", weights_count_blocks(g, TN_ATTN_NORM, TP_TEXT_MAX_LAYERS));
    if (hp->n_layer <= 0 || hp->n_layer > TP_TEXT_MAX_LAYERS) return fail(err, path, "block count out of range");
    hp->n_ctx_train = get_int(g, ARCH ".context_length", 131072);
    hp->n_head = get_int(g, ARCH ".attention.head_count", 0);
    hp->n_head_kv = get_int(g, ARCH ".attention.head_count_kv", hp->n_head);
    if (hp->n_head <= 0 || hp->n_head_kv <= 0 || hp->n_head % hp->n_head_kv != 0)
        return fail(err, path, "head counts are missing or invalid");
    int64_t q_rows = weights_tensor_nef(g, 1, TN_ATTN_Q, 0), v_rows = weights_tensor_nef(g, 1, TN_ATTN_V, 0);
    if (q_rows <= 0 || v_rows <= 0 || q_rows % hp->n_head != 0 || v_rows % hp->n_head_kv != 0)
        return fail(err, path, "blk.0.attn_q/attn_v are missing or not divisible by the head counts");
    hp->head_dim = get_int(g, ARCH ".attention.key_length", (int)(q_rows / hp->n_head));
    hp->head_dim_v = get_int(g, ARCH ".attention.value_length", (int)(v_rows / hp->n_head_kv));
    if (hp->head_dim * hp->n_head != q_rows || hp->head_dim_v * hp->n_head_kv != v_rows || hp->head_dim % 2 != 0)
        return fail(err, path, "the key/value lengths disagree with attn_q/attn_v, or the head size is odd");
    hp->eps = weights_get_float(g, ARCH ".attention.layer_norm_rms_epsilon", 0.0f, 1.0f, 1e-5f);
    hp->rope_base = weights_get_float(g, ARCH ".rope.freq_base", 1.0f, 1e30f, 500000.0f);
    hp->n_ff = (int)weights_tensor_nef(g, 1, TN_FFN_GATE, 0);
    if (hp->n_ff <= 0) return fail(err, path, "blk.0.ffn_gate is missing");
    /* M-RoPE: t / h / w sections in rotation pairs, summing to head_dim / 2 */
    int64_t sum = 0;
    for (int a = 0; a < 3; a++) {
        int64_t v = 0;
        if (tp_gguf_get_arr_i64(g, ARCH ".rope.dimension_sections", a, &v) != TP_OK || v < 0 || v > hp->head_dim)
            return fail(err, path, ARCH ".rope.dimension_sections is missing or invalid");
        hp->rope_sections[a] = (int)v;
        sum += v;
    }
    if (2 * sum != hp->head_dim) return fail(err, path, "the M-RoPE sections do not cover the head");
    hp->n_pos_axes = 3;
    hp->bos_id = weights_token_id(g, KEY_TOK_BOS, hp->n_vocab, -1);
    hp->eos_id = weights_token_id(g, KEY_TOK_EOS, hp->n_vocab, -1);
    hp->pad_id = weights_token_id(g, KEY_TOK_PAD, hp->n_vocab, -1);
    hp->image_token_id = weights_token_id(g, KEY_TP_IMAGE_TOKEN_ID, hp->n_vocab, weights_find_token(g, "<|IMAGE_PLACEHOLDER|>", hp->n_vocab));
    hp->expert_weights_scale = 1.0f;
    return TP_OK;
}

static tp_status load(weights_loader *L, const text_hparams *hp, void **out) {
    ernie_weights *w = calloc(1, sizeof(*w));
    if (!w) {
        tp_error_set(L->err, TP_ERR_OUT_OF_MEMORY, "%s: out of memory", L->path);
        return TP_ERR_OUT_OF_MEMORY;
    }
    *out = w;
    const int64_t C = hp->n_embd, V = hp->n_vocab, F = hp->n_ff;
    const int64_t Q = (int64_t)hp->n_head * hp->head_dim, KV = (int64_t)hp->n_head_kv * hp->head_dim;
    const int64_t VV = (int64_t)hp->n_head_kv * hp->head_dim_v, O = (int64_t)hp->n_head * hp->head_dim_v;
    w->tok_embd = weights_load(L, TN_TOKEN_EMBD, C, V, 1, 1);
    w->output_norm = weights_load_f32(L, TN_OUTPUT_NORM, C, 1, 1, 1);
    w->output = tp_gguf_find_tensor(L->g, TN_OUTPUT) >= 0 ? weights_load(L, TN_OUTPUT, C, V, 1, 1) : w->tok_embd;
    for (int l = 0; l < hp->n_layer && !L->failed; l++) {
        ernie_layer *ly = &w->layers[l];
        ly->attn_norm = weights_loadf_f32(L, C, 1, 1, 1, TN_ATTN_NORM, l);
        ly->ffn_norm = weights_loadf_f32(L, C, 1, 1, 1, TN_FFN_NORM, l);
        ly->wq = weights_loadf(L, C, Q, 1, 1, TN_ATTN_Q, l);
        ly->wk = weights_loadf(L, C, KV, 1, 1, TN_ATTN_K, l);
        ly->wv = weights_loadf(L, C, VV, 1, 1, TN_ATTN_V, l);
        ly->wo = weights_loadf(L, O, C, 1, 1, TN_ATTN_OUT, l);
        if (weights_has_tensorf(L->g, TN_ATTN_OUT_B, l)) ly->wo_b = weights_loadf_f32(L, C, 1, 1, 1, TN_ATTN_OUT_B, l);
        ly->ffn_gate = weights_loadf(L, C, F, 1, 1, TN_FFN_GATE, l);
        ly->ffn_up = weights_loadf(L, C, F, 1, 1, TN_FFN_UP, l);
        ly->ffn_down = weights_loadf(L, F, C, 1, 1, TN_FFN_DOWN, l);
    }
    return L->failed ? (L->err ? L->err->status : TP_ERR_FORMAT) : TP_OK;
}

static void free_weights(void *w) { free(w); }

static const tp_tensor *token_embd(const void *w) { return ((const ernie_weights *)w)->tok_embd; }

static const tp_tensor *probe_matrix(const void *w) { return ((const ernie_weights *)w)->layers[0].wq; }

static tp_tensor *reshape3(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1, int64_t ne2) {
    int64_t ne[3] = {ne0, ne1, ne2};
    return tp_reshape(ctx, a, 3, ne);
}

static tp_tensor *build(tp_context *ctx, tp_graph *g, const text_hparams *hp, const void *weights, tp_tensor *x,
                        tp_tensor *pos, const text_batch *b) {
    const ernie_weights *w = weights;
    const int64_t D = hp->head_dim, Dv = hp->head_dim_v, H = hp->n_head, Hkv = hp->n_head_kv, n = b->n_rows;
    const int32_t *sections = hp->rope_sections;
    for (int l = 0; l < hp->n_layer; l++) {
        const ernie_layer *ly = &w->layers[l];
        tp_tensor *h = tp_rms_norm(ctx, x, ly->attn_norm, hp->eps);
        tp_tensor *q = reshape3(ctx, tp_mul_mat(ctx, ly->wq, h), D, H, n);
        tp_tensor *k = reshape3(ctx, tp_mul_mat(ctx, ly->wk, h), D, Hkv, n);
        tp_tensor *v = reshape3(ctx, tp_mul_mat(ctx, ly->wv, h), Dv, Hkv, n);
        q = tp_rope_multi(ctx, q, pos, (int)D, hp->rope_base, sections, 3, (int)D, false);
        k = tp_rope_multi(ctx, k, pos, (int)D, hp->rope_base, sections, 3, (int)D, false);
        /* each sequence attends over its own cache; only the wanted rows of the last layer go on */
        tp_tensor *att = kv_attention_batch(ctx, g, q, k, v, b, l, 1.0f / sqrtf((float)D));
        if (l == hp->n_layer - 1 && b->n_out == 0) break; /* nothing reads the last layer's output */
        x = kv_batch_rows(ctx, x, b, l);
        x = tp_add(ctx, x, tp_linear(ctx, ly->wo, att, ly->wo_b, TP_ACT_NONE));
        h = tp_rms_norm(ctx, x, ly->ffn_norm, hp->eps);
        tp_tensor *act = tp_mul(ctx, tp_silu(ctx, tp_mul_mat(ctx, ly->ffn_gate, h)), tp_mul_mat(ctx, ly->ffn_up, h));
        x = tp_add(ctx, x, tp_mul_mat(ctx, ly->ffn_down, act));
    }
    return b->n_out == 0 ? NULL : gu_text_logits(ctx, g, x, w->output_norm, w->output, hp->eps);
}

const text_family paddleocr_text = {
    .architecture = ARCH,
    .read_hparams = read_hparams,
    .load = load,
    .free = free_weights,
    .token_embd = token_embd,
    .probe_matrix = probe_matrix,
    .build = build,
};
