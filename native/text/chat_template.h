/* chat_template.h - a Jinja chat template (a GGUF's tokenizer.chat_template) rendered as transformers'
 * apply_chat_template renders it, for the subset include/tilepass.h describes (tp_chat_template_render: the
 * public function; its types tp_chat_message and tp_chat_template_vars are the only copies). Library code
 * includes this header and calls tp_chat_template_render. The implementation: chat_template_parse.c (lexer,
 * parser), chat_template.c (renderer), chat_template_impl.h (what they share). */
#ifndef TP_TEXT_CHAT_TEMPLATE_H
#define TP_TEXT_CHAT_TEMPLATE_H

#include "tilepass.h"

/* Limits on untrusted templates (past one: TP_ERR_UNSUPPORTED naming it). */
#define CHAT_TEMPLATE_MAX_DEPTH 64          /* nesting of blocks and of expressions */
#define CHAT_TEMPLATE_MAX_ITERATIONS 100000 /* loop iterations of one render, all loops together */
#define CHAT_TEMPLATE_MAX_VARS 256          /* names set by the template */

#endif /* TP_TEXT_CHAT_TEMPLATE_H */
