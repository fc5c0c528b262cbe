/* tp_internal.h - what the library's own files share: the tensor struct, the op table, the
 * compute-parameter block handed to kernels, and small helpers. Not installed, not public. */
#ifndef TP_INTERNAL_H
#define TP_INTERNAL_H

#include "tilepass.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TP_MAX_SRC 6
#define TP_MAX_OP_PARAMS 16 /* int32 slots; floats are stored bit-wise */
#define TP_NAME_LEN 64
#define TP_ALIGN 64

typedef enum tp_op {
    TP_OP_NONE = 0, /* a leaf: data set by the user or mapped from a file */
    /* views: no kernel, data aliases view_src */
    TP_OP_VIEW,
    TP_OP_RESHAPE,
    TP_OP_PERMUTE,
    TP_OP_TRANSPOSE,
    /* computing ops */
    TP_OP_CONT,
    TP_OP_ADD,
    TP_OP_MUL,
    TP_OP_SCALE,
    TP_OP_GELU,
    TP_OP_GELU_TANH,
    TP_OP_QUICK_GELU,
    TP_OP_SILU,
    TP_OP_LAYER_NORM,
    TP_OP_RMS_NORM,
    TP_OP_SOFTMAX,
    TP_OP_MUL_MAT,
    TP_OP_IM2COL,
    TP_OP_CONCAT,
    TP_OP_PAD,
    TP_OP_GET_ROWS,
    TP_OP_INTERPOLATE,
    TP_OP_ROPE_NEOX,
    TP_OP_TOP_K,
    TP_OP_ATTENTION,
    TP_OP_MUL_MAT_ID, /* ops_mul_mat_id.c */
    TP_OP_CPY,        /* ops_cpy.c: writes into its destination's storage */
    TP_OP_SIGMOID,
    TP_OP_DIV,
    TP_OP_COUNT
} tp_op;

struct tp_tensor {
    tp_type type;
    int n_dims;
    int64_t ne[TP_MAX_DIMS];
    size_t nb[TP_MAX_DIMS];

    tp_op op;
    int32_t op_params[TP_MAX_OP_PARAMS];
    tp_tensor *src[TP_MAX_SRC];

    tp_tensor *view_src; /* for views: the tensor whose data this one aliases (never a view) */
    size_t view_offs;    /* byte offset into view_src's data */

    void *data;     /* leaves: set at creation; op results: set by the planner */
    bool owns_data; /* data was malloc'd by the context */

    tp_context *ctx;
    int id;         /* creation order within the context */
    tp_tensor *next;
    char name[TP_NAME_LEN];
};

/* What a kernel gets: its thread index, the thread count, a scratch area shared by all threads
 * of this op (wsize bytes, 64-byte aligned), and a barrier for multi-phase kernels. */
typedef struct tp_compute_params {
    int ith;
    int nth;
    void *wdata;
    size_t wsize;
    tp_threadpool *pool;
    tp_cpu_path path;
    int precision; /* tp_precision of the context (tp_mul_mat) */
    /* a kernel that meets bad data (an index out of range) sets this (any thread, atomically) */
    atomic_int *error;
} tp_compute_params;

typedef void (*tp_kernel_fn)(const tp_compute_params *p, tp_tensor *dst);
/* Scratch bytes an op needs for nth threads (all threads together). */
typedef size_t (*tp_work_size_fn)(const tp_tensor *dst, int nth);

typedef struct tp_op_info {
    const char *name;
    tp_kernel_fn kernel;        /* NULL for views */
    tp_work_size_fn work_size;  /* NULL: none */
} tp_op_info;

const tp_op_info *tp_op_get_info(tp_op op);

/* ---- errors ---- */
/* Record an error in the context (kept only if it is the first). Returns the status. */
tp_status tp_ctx_set_error(tp_context *ctx, tp_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void tp_error_set(tp_error *err, tp_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- tensor construction helpers for op constructors ---- */
/* A new op-result tensor: contiguous, of `type`, with op and sources set; NULL + error on failure. */
tp_tensor *tp_new_op_tensor(tp_context *ctx, tp_type type, int n_dims, const int64_t *ne, tp_op op,
                            tp_tensor *src0, tp_tensor *src1, tp_tensor *src2);
/* Checks at the top of an op constructor: ctx non-NULL, every listed input non-NULL and from ctx.
 * Returns false (error recorded unless a NULL input signals an earlier failure). */
bool tp_check_inputs(tp_context *ctx, const char *op_name, int n, tp_tensor *const *inputs);
#define TP_CHECK_INPUTS(ctx, name, ...)                                                            \
    tp_check_inputs((ctx), (name), (int)(sizeof((tp_tensor *[]){__VA_ARGS__}) / sizeof(tp_tensor *)), \
                    (tp_tensor *[]){__VA_ARGS__})

void tp_set_op_param_f32(tp_tensor *t, int i, float v);
float tp_get_op_param_f32(const tp_tensor *t, int i);

/* ---- tensor helpers ---- */
int64_t tp_nelements(const tp_tensor *t);
bool tp_is_contiguous(const tp_tensor *t);
/* Contiguous rows: dim 0 has stride = element size (rows may be strided). */
bool tp_rows_contiguous(const tp_tensor *t);
bool tp_same_shape(const tp_tensor *a, const tp_tensor *b);
/* b can be broadcast to a: each b->ne[i] is a->ne[i] or 1. */
bool tp_can_broadcast(const tp_tensor *a, const tp_tensor *b);
/* Address of element (i0, i1, i2, i3) (valid for non-block types). */
static inline void *tp_elem_ptr(const tp_tensor *t, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    return (char *)t->data + i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
}
/* Address of row (i1, i2, i3) (valid for every type, blocks included). */
static inline void *tp_row_ptr(const tp_tensor *t, int64_t i1, int64_t i2, int64_t i3) {
    return (char *)t->data + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
}
/* Format "[a, b, c, d]" of ne into buf. */
const char *tp_shape_str(const tp_tensor *t, char *buf, size_t size);

/* ---- types ---- */
/* Convert one row of n elements of `type` to floats / from floats. */
void tp_row_to_f32(tp_type type, const void *src, float *dst, int64_t n);
void tp_row_from_f32(tp_type type, const float *src, void *dst, int64_t n);
float tp_f16_to_f32(uint16_t h);
uint16_t tp_f32_to_f16(float f);

/* BF16 <-> F32 inline: they sit in the inner loops of packing for the BF16 GEMM and attention. */
static inline float tp_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

/* Round to nearest even, NaN kept (quiet). */
static inline uint16_t tp_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* Split n items over nth threads: [*start, *end) for thread ith. */
static inline void tp_split_range(int64_t n, int ith, int nth, int64_t *start, int64_t *end) {
    int64_t per = (n + nth - 1) / nth;
    int64_t s = per * ith;
    int64_t e = s + per;
    *start = s < n ? s : n;
    *end = e < n ? e : n;
}

/* A growable array: *p (of *cap elements of elem bytes) made to hold at least need, its capacity doubled from
 * first (realloc keeps what it held). False, with *p and *cap unchanged, when memory or the size runs out. */
static inline bool tp_grow(void **p, int64_t *cap, int64_t need, size_t elem, int64_t first) {
    if (need <= *cap) return true;
    int64_t c = *cap > 0 ? *cap : first;
    while (c < need) {
        if (c > INT64_MAX / 2) return false;
        c *= 2;
    }
    if ((uint64_t)c > SIZE_MAX / elem) return false;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

/* ---- thread pool ---- */
/* All nth threads of the current computation wait here. */
void tp_barrier(tp_threadpool *pool);

/* Let the OS drop the resident pages of a GGUF mapping (gguf.c). */
void tp_gguf_drop_pages(tp_gguf *g);

/* ---- context internals used by graphs ---- */
/* Threads a computation may use (scratch sizes are planned for this many). */
#define TP_MAX_THREADS_PLAN 64
/* A context whose op constructors also take the leaves of `parent` (a model's weights, bound once at
 * load) as inputs; parent must outlive it and is never written through it. */
tp_status tp_context_create_child(const tp_context_params *params, const tp_context *parent, tp_context **out,
                                  tp_error *err);
/* The abort callback (and its data) a context computes with (tp_context_params.abort_callback). */
void tp_ctx_abort_callback(const tp_context *ctx, bool (**callback)(void *data), void **data);
void *tp_ctx_alloc(tp_context *ctx, size_t size); /* zeroed, owned by ctx, freed with it */
int tp_ctx_n_tensors(const tp_context *ctx);
int tp_context_precision(const tp_context *ctx); /* tp_precision */
void tp_ctx_attach_graph(tp_context *ctx, tp_graph *g);
void tp_ctx_detach_graph(tp_context *ctx, tp_graph *g);
void tp_graph_destroy(tp_graph *g); /* frees without detaching */
tp_graph *tp_graph_next_in_ctx(tp_graph *g);
void tp_graph_set_next_in_ctx(tp_graph *g, tp_graph *next);
size_t tp_graph_work_bytes(const tp_graph *g, int n_threads); /* the per-op scratch for n_threads (planned graph) */
/* what tp_graph_peak_bytes will report once computed with n_threads: the intermediates plus that scratch */
size_t tp_graph_planned_bytes(const tp_graph *g, int n_threads);
/* A kernel that meets bad data (e.g. an index out of range) calls this; compute then fails. */
static inline void tp_report_bad_data(const tp_compute_params *p) {
    int expected = 0;
    atomic_compare_exchange_strong(p->error, &expected, -1);
}

#define TP_UNUSED(x) (void)(x)
#define TP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TP_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif /* TP_INTERNAL_H */
