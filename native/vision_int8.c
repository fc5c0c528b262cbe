/* vision_int8.c - TP_PRECISION_INT8 for the vision encoder: the weight matrices of a file stored as
 * F32/F16/BF16 are quantised to Q8_0 once, at load, with the converter's quantiser (ggml's Q8_0), so
 * that every product runs the int8 GEMM of a Q8_0 file (8-bit activation blocks, VNNI); the graph of
 * each set of view sizes then takes them as external tensors instead of the mapped originals. */
#include "vision_load.h"
#include "tp_quants.h"
#include "tp_threadpool.h"

#include <stdint.h>
#include <stdlib.h>

/* The matrices the encoder multiplies, in a fixed order (convolution kernels are not among them). */
static int matrix_slots(vision_weights *w, const vision_hparams *hp, tp_tensor **slot[VISION_Q8_MAX]) {
    int n = 0;
    for (int i = 0; i < hp->sam_blocks; i++) {
        slot[n++] = &w->sam[i].qkv_w;
        slot[n++] = &w->sam[i].out_w;
        slot[n++] = &w->sam[i].mlp1_w;
        slot[n++] = &w->sam[i].mlp2_w;
    }
    for (int i = 0; i < hp->clip_layers; i++) {
        slot[n++] = &w->clip[i].qkv_w;
        slot[n++] = &w->clip[i].out_w;
        slot[n++] = &w->clip[i].fc1_w;
        slot[n++] = &w->clip[i].fc2_w;
    }
    slot[n++] = &w->fc_w;
    return n;
}

static bool wants_q8(const tp_tensor *t) {
    return (t->type == TP_TYPE_F32 || t->type == TP_TYPE_F16 || t->type == TP_TYPE_BF16) &&
           t->ne[0] % TP_QK == 0 && t->ne[2] == 1 && t->ne[3] == 1;
}

typedef struct {
    const tp_tensor *src;
    char *dst;
    size_t row_bytes;
    float *scratch; /* nth rows of ne[0] floats */
} quantize_job;

static void quantize_rows(void *arg, int ith, int nth) {
    const quantize_job *j = arg;
    float *row = j->scratch + (size_t)ith * (size_t)j->src->ne[0];
    for (int64_t r = ith; r < j->src->ne[1]; r += nth) {
        tp_row_to_f32(j->src->type, tp_row_ptr(j->src, r, 0, 0), row, j->src->ne[0]);
        tp_quantize_row(TP_TYPE_Q8_0, row, j->dst + (size_t)r * j->row_bytes, j->src->ne[0]);
    }
}

tp_status vision_q8_make(vision_weights *w, const vision_hparams *hp, tp_threadpool *pool, vision_q8 *q,
                         tp_error *err) {
    memset(q, 0, sizeof(*q));
    tp_tensor **slot[VISION_Q8_MAX];
    const int n = matrix_slots(w, hp, slot);
    size_t total = 0;
    int64_t widest = 0;
    for (int i = 0; i < n; i++) {
        const tp_tensor *t = *slot[i];
        q->offset[i] = SIZE_MAX;
        if (!wants_q8(t)) continue;
        q->offset[i] = total;
        total += tp_type_row_bytes(TP_TYPE_Q8_0, t->ne[0]) * (size_t)t->ne[1];
        widest = t->ne[0] > widest ? t->ne[0] : widest;
    }
    q->n = n;
    if (total == 0) return TP_OK;
    q->data = malloc(total);
    float *scratch = malloc((size_t)tp_threadpool_n_threads(pool) * (size_t)widest * sizeof(float));
    if (!q->data || !scratch) {
        free(scratch);
        vision_q8_free(q);
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_vision_load: cannot allocate %zu bytes for the int8 weights", total);
        return TP_ERR_OUT_OF_MEMORY;
    }
    for (int i = 0; i < n; i++) {
        if (q->offset[i] == SIZE_MAX) continue;
        quantize_job job = {*slot[i], q->data + q->offset[i], tp_type_row_bytes(TP_TYPE_Q8_0, (*slot[i])->ne[0]),
                            scratch};
        tp_threadpool_run(pool, quantize_rows, &job);
    }
    free(scratch);
    return TP_OK;
}

void vision_q8_apply(tp_context *ctx, vision_weights *w, const vision_hparams *hp, const vision_q8 *q) {
    tp_tensor **slot[VISION_Q8_MAX];
    const int n = matrix_slots(w, hp, slot);
    for (int i = 0; i < n && i < q->n; i++) {
        if (q->offset[i] == SIZE_MAX) continue;
        const tp_tensor *t = *slot[i];
        const int64_t ne[2] = {t->ne[0], t->ne[1]};
        const size_t bytes = tp_type_row_bytes(TP_TYPE_Q8_0, ne[0]) * (size_t)ne[1];
        *slot[i] = tp_new_tensor_external(ctx, TP_TYPE_Q8_0, 2, ne, q->data + q->offset[i], bytes);
    }
}

void vision_q8_free(vision_q8 *q) {
    free(q->data);
    q->data = NULL;
    q->n = 0;
}
