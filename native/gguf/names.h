/* names.h - the one table of GGUF tensor names and keys the model code reads. llama.cpp's names first
 * (its converter's `gguf` constants), then the tilepass.* keys for what llama.cpp hard-codes in its
 * runtime (README "Keys of our own"). Model code names tensors and keys only through these macros;
 * names with a block index are printf formats taking the index. */
#ifndef TP_NAMES_H
#define TP_NAMES_H

/* ---- keys every file has ---- */
#define KEY_ARCHITECTURE "general.architecture"
#define KEY_PROJECTOR_TYPE "clip.projector_type"

/* ---- vision: llama.cpp's clip keys ---- */
#define KEY_V_HEAD_COUNT "clip.vision.attention.head_count"
#define KEY_V_HEAD_COUNT_KV "clip.vision.attention.head_count_kv"
#define KEY_V_LN_EPS "clip.vision.attention.layer_norm_epsilon"
#define KEY_V_IMAGE_MEAN "clip.vision.image_mean"
#define KEY_V_IMAGE_STD "clip.vision.image_std"
#define KEY_V_WINDOW_SIZE "clip.vision.window_size"
#define KEY_V_MIN_TILES "clip.vision.preproc_min_tiles"
#define KEY_V_MAX_TILES "clip.vision.preproc_max_tiles"
#define KEY_V_SAM_HEAD_COUNT "clip.vision.sam.head_count"

/* ---- vision: ours ---- */
#define KEY_TP_SAM_IMAGE_SIZE "tilepass.sam.image_size"
#define KEY_TP_SAM_WINDOW_SIZE "tilepass.sam.window_size"
#define KEY_TP_SAM_EPS "tilepass.sam.layer_norm_epsilon"
#define KEY_TP_CLIP_EPS "tilepass.clip.layer_norm_epsilon"
#define KEY_TP_ENCODER_ROPE_BASE "tilepass.encoder.rope_freq_base"
#define KEY_TP_TILE_SIZE "tilepass.preproc.tile_size"
#define KEY_TP_PAD_COLOR "tilepass.preproc.pad_color"

/* ---- vision tensors: SAM (DeepSeek-OCR v1 and 2) ---- */
#define TN_SAM_PATCH_W "v.sam.patch_embd.weight"
#define TN_SAM_PATCH_B "v.sam.patch_embd.bias"
#define TN_SAM_POS "v.sam.pos_embd.weight"
#define TN_SAM_LN1_W "v.sam.blk.%d.pre_ln.weight"
#define TN_SAM_LN1_B "v.sam.blk.%d.pre_ln.bias"
#define TN_SAM_LN2_W "v.sam.blk.%d.post_ln.weight"
#define TN_SAM_LN2_B "v.sam.blk.%d.post_ln.bias"
#define TN_SAM_QKV_W "v.sam.blk.%d.attn.qkv.weight"
#define TN_SAM_QKV_B "v.sam.blk.%d.attn.qkv.bias"
#define TN_SAM_OUT_W "v.sam.blk.%d.attn.out.weight"
#define TN_SAM_OUT_B "v.sam.blk.%d.attn.out.bias"
#define TN_SAM_POS_H "v.sam.blk.%d.attn.pos_h.weight"
#define TN_SAM_POS_W "v.sam.blk.%d.attn.pos_w.weight"
#define TN_SAM_MLP1_W "v.sam.blk.%d.mlp.lin1.weight"
#define TN_SAM_MLP1_B "v.sam.blk.%d.mlp.lin1.bias"
#define TN_SAM_MLP2_W "v.sam.blk.%d.mlp.lin2.weight"
#define TN_SAM_MLP2_B "v.sam.blk.%d.mlp.lin2.bias"
#define TN_SAM_NECK_W "v.sam.neck.%d.weight"
#define TN_SAM_NECK_B "v.sam.neck.%d.bias"
#define TN_SAM_NET2_W "v.sam.net_2.weight"
#define TN_SAM_NET3_W "v.sam.net_3.weight"

/* ---- vision tensors: the generic encoder ("v.blk.N"), projector and layout tokens ---- */
#define TN_V_CLASS_EMBD "v.class_embd"
#define TN_V_POS "v.position_embd.weight"
#define TN_V_PRE_LN_W "v.pre_ln.weight"
#define TN_V_PRE_LN_B "v.pre_ln.bias"
#define TN_V_POST_LN_W "v.post_ln.weight"
#define TN_V_LN1_W "v.blk.%d.ln1.weight"
#define TN_V_LN1_B "v.blk.%d.ln1.bias"
#define TN_V_LN2_W "v.blk.%d.ln2.weight"
#define TN_V_LN2_B "v.blk.%d.ln2.bias"
#define TN_V_QKV_W "v.blk.%d.attn_qkv.weight"
#define TN_V_QKV_B "v.blk.%d.attn_qkv.bias"
#define TN_V_Q_W "v.blk.%d.attn_q.weight"
#define TN_V_Q_B "v.blk.%d.attn_q.bias"
#define TN_V_K_W "v.blk.%d.attn_k.weight"
#define TN_V_K_B "v.blk.%d.attn_k.bias"
#define TN_V_V_W "v.blk.%d.attn_v.weight"
#define TN_V_V_B "v.blk.%d.attn_v.bias"
#define TN_V_OUT_W "v.blk.%d.attn_out.weight"
#define TN_V_OUT_B "v.blk.%d.attn_out.bias"
#define TN_V_FFN_UP_W "v.blk.%d.ffn_up.weight"
#define TN_V_FFN_UP_B "v.blk.%d.ffn_up.bias"
#define TN_V_FFN_GATE_W "v.blk.%d.ffn_gate.weight"
#define TN_V_FFN_DOWN_W "v.blk.%d.ffn_down.weight"
#define TN_V_FFN_DOWN_B "v.blk.%d.ffn_down.bias"
#define TN_V_QUERY_768 "v.resample_query_768.weight"
#define TN_V_QUERY_1024 "v.resample_query_1024.weight"
#define TN_MM_FC_W "mm.model.fc.weight"
#define TN_MM_FC_B "mm.model.fc.bias"
#define TN_V_NEWLINE "v.image_newline"
#define TN_V_SEPARATOR "v.view_seperator"

#endif
