/* registry.h - the model families this build runs (models/registry.c). */
#ifndef TP_REGISTRY_H
#define TP_REGISTRY_H

#include "text_family.h"
#include "vision_family.h"

const vision_family *vision_family_for(const tp_gguf *g);
const char *vision_family_names(void);
const text_family *text_family_for(const tp_gguf *g);
const char *text_family_names(void);

#endif
