/* weights.h - reading model hyperparameters and weight tensors from a GGUF: typed key lookups with
 * fallbacks, and a loader that checks each tensor's shape and records the first failure (naming the
 * file and the tensor). Shared by the vision and text model loaders. */
#ifndef TP_WEIGHTS_H
#define TP_WEIGHTS_H

#include "tp_internal.h"

/* An integer key in [lo, hi], else fallback. */
int weights_get_int(const tp_gguf *g, const char *key, int64_t lo, int64_t hi, int fallback);
/* A float key in (lo, hi), else fallback. */
float weights_get_float(const tp_gguf *g, const char *key, float lo, float hi, float fallback);
/* ne[dim] of a tensor, -1 when it is absent; the f variant formats the name with one int. */
int64_t weights_tensor_ne(const tp_gguf *g, const char *name, int dim);
int64_t weights_tensor_nef(const tp_gguf *g, int dim, const char *fmt, int i);
bool weights_has_tensorf(const tp_gguf *g, const char *fmt, int i);

typedef struct weights_loader {
    tp_gguf *g;
    tp_context *ctx;
    const char *path;
    tp_error *err;
    bool failed; /* after the first failure every load returns NULL */
} weights_loader;

/* A leaf of L->ctx over the mapped tensor `name`, its ne checked against ne0..ne3 (-1 = any). */
tp_tensor *weights_load(weights_loader *L, const char *name, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3);
tp_tensor *weights_loadf(weights_loader *L, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3, const char *fmt,
                         int i);
/* Fail unless t is F32 (tensors used element-wise: norms, biases). */
void weights_need_f32(weights_loader *L, const tp_tensor *t);
/* As weights_load(f), for tensors used element-wise or reshaped (norms, biases, position and rel-pos
 * tables, layout vectors): a file may store them as F16, BF16 or even quantised (plain llama-quantize
 * quantises every 2-D table), so anything but F32 is dequantised once, here, into an F32 leaf of L->ctx. */
tp_tensor *weights_load_f32(weights_loader *L, const char *name, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3);
tp_tensor *weights_loadf_f32(weights_loader *L, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3, const char *fmt,
                             int i);
/* Record a format error about the file (the first one only), naming it; returns TP_ERR_FORMAT. */
tp_status weights_fail(weights_loader *L, const char *msg);
/* The image normalisation (llama.cpp's image_mean / image_std keys; 0.5 where absent or unusable). */
void weights_image_norm(const tp_gguf *g, float mean[3], float std[3]);
/* A string key equal to `want`. */
bool weights_str_equals(const tp_gguf *g, const char *key, const char *want);
/* The id of token `text` in tokenizer.ggml.tokens (the first n_vocab), searched from the end (special tokens
 * sit there); -1 when absent. */
int weights_find_token(const tp_gguf *g, const char *text, int64_t n_vocab);
/* A token id stored under `key` when it names one of the first n_vocab tokens, else fallback. */
int weights_token_id(const tp_gguf *g, const char *key, int64_t n_vocab, int fallback);
/* Tensors fmt % 0, fmt % 1, ... present, counted up to `max`. */
int weights_count_blocks(const tp_gguf *g, const char *fmt, int max);

#endif
