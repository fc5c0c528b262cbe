/* quants.c - STUB written by the lead so the library links; the quantisation helper replaces it. */
#include "tp_quants.h"

bool tp_is_quantized(tp_type type) {
    TP_UNUSED(type);
    return false;
}
void tp_dequantize_row(tp_type type, const void *src, float *dst, int64_t n) {
    TP_UNUSED(type);
    TP_UNUSED(src);
    memset(dst, 0, (size_t)n * sizeof(float));
}
void tp_quantize_row(tp_type type, const float *src, void *dst, int64_t n) {
    TP_UNUSED(type);
    TP_UNUSED(src);
    TP_UNUSED(dst);
    TP_UNUSED(n);
}
tp_status tp_quantize(int type, const float *src, int64_t n_rows, int64_t n_per_row, void *dst,
                      size_t dst_size, size_t *written, tp_error *err) {
    TP_UNUSED(type); TP_UNUSED(src); TP_UNUSED(n_rows); TP_UNUSED(n_per_row); TP_UNUSED(dst);
    TP_UNUSED(dst_size); TP_UNUSED(written);
    tp_error_set(err, TP_ERR_UNSUPPORTED, "tp_quantize: not implemented yet");
    return TP_ERR_UNSUPPORTED;
}
tp_status tp_dequantize(int type, const void *src, size_t src_size, int64_t n_rows, int64_t n_per_row,
                        float *dst, tp_error *err) {
    TP_UNUSED(type); TP_UNUSED(src); TP_UNUSED(src_size); TP_UNUSED(n_rows); TP_UNUSED(n_per_row);
    TP_UNUSED(dst);
    tp_error_set(err, TP_ERR_UNSUPPORTED, "tp_dequantize: not implemented yet");
    return TP_ERR_UNSUPPORTED;
}
