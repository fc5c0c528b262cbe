/* vision_load.h - reading a vision GGUF into hyperparameters and weight tensors. */
#ifndef TP_VISION_LOAD_H
#define TP_VISION_LOAD_H

#include "vision.h"

/* Architecture/projector checks and every hyperparameter; errors name the file. */
tp_status vision_read_hparams(const tp_gguf *g, const char *path, vision_hparams *hp, tp_error *err);
/* Every weight as a leaf of ctx over the mapped file, shapes checked against hp. */
tp_status vision_load_weights(tp_gguf *g, const char *path, const vision_hparams *hp, tp_context *ctx,
                              vision_weights *w, tp_error *err);

#endif
