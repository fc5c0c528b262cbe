/* vision_load.h - reading a vision GGUF into hyperparameters and weight tensors. */
#ifndef TP_VISION_LOAD_H
#define TP_VISION_LOAD_H

#include "vision.h"

/* Architecture/projector checks and every hyperparameter; errors name the file. */
tp_status vision_read_hparams(const tp_gguf *g, const char *path, vision_hparams *hp, tp_error *err);
/* Every weight as a leaf of ctx over the mapped file, shapes checked against hp. */
tp_status vision_load_weights(tp_gguf *g, const char *path, const vision_hparams *hp, tp_context *ctx,
                              vision_weights *w, tp_error *err);

/* TP_PRECISION_INT8 (vision_int8.c): Q8_0 copies of the weight matrices, made once at load. */
#define VISION_Q8_MAX (8 * TP_VISION_MAX_BLOCKS + 1)
typedef struct vision_q8 {
    char *data;                    /* every copy, one after the other */
    size_t offset[VISION_Q8_MAX];  /* of matrix i in vision_int8.c's order; SIZE_MAX: kept as it is */
    int n;
} vision_q8;

/* Quantise the F32/F16/BF16 matrices of w (loaded in any context) on the pool's threads. */
tp_status vision_q8_make(vision_weights *w, const vision_hparams *hp, tp_threadpool *pool, vision_q8 *q,
                         tp_error *err);
/* Point w's matrices at the copies, as tensors of ctx. */
void vision_q8_apply(tp_context *ctx, vision_weights *w, const vision_hparams *hp, const vision_q8 *q);
void vision_q8_free(vision_q8 *q);

#endif
