/* context.c - contexts (tensor metadata, owned buffers, the sticky error) and leaf tensors. */
#include "tp_internal.h"

#include <poll.h>

#include <stdio.h>
#include <stdlib.h>

typedef struct tp_alloc_node {
    struct tp_alloc_node *next;
    /* payload follows, 64-byte aligned */
} tp_alloc_node;

struct tp_context {
    tp_cpu_path path;
    int precision; /* tp_precision */
    tp_status status;
    char message[1024];
    tp_tensor *tensors; /* newest first */
    tp_tensor *last;
    int n_tensors;
    tp_alloc_node *allocs;
    tp_graph *graphs;
    /* A weights context whose leaves this one's ops may read (tp_context_create_child): a model binds
     * its weights once, at load, and each computation builds its graph in a child context. */
    const tp_context *parent;
    /* tp_context_params.abort_callback: asked between the nodes of a computation (graph.c) */
    bool (*abort_callback)(void *data);
    void *abort_callback_data;
};

/* graph.c's compute loop reads it (declared there). */
void tp_ctx_abort_callback(const tp_context *ctx, bool (**callback)(void *data), void **data) {
    *callback = ctx ? ctx->abort_callback : NULL;
    *data = ctx ? ctx->abort_callback_data : NULL;
}

int tp_ctx_n_tensors(const tp_context *ctx) { return ctx->n_tensors; }

void tp_ctx_attach_graph(tp_context *ctx, tp_graph *g) {
    tp_graph_set_next_in_ctx(g, ctx->graphs);
    ctx->graphs = g;
}

void tp_ctx_detach_graph(tp_context *ctx, tp_graph *g) {
    if (ctx->graphs == g) {
        ctx->graphs = tp_graph_next_in_ctx(g);
        return;
    }
    for (tp_graph *cur = ctx->graphs; cur; cur = tp_graph_next_in_ctx(cur)) {
        if (tp_graph_next_in_ctx(cur) == g) {
            tp_graph_set_next_in_ctx(cur, tp_graph_next_in_ctx(g));
            return;
        }
    }
}

const char *tp_version(void) { return TILEPASS_VERSION; }

bool tp_abort_when_readable(void *data) {
    if (!data) return false;
    struct pollfd p = {.fd = *(const int *)data, .events = POLLIN, .revents = 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0;
}

const char *tp_status_string(tp_status status) {
    switch (status) {
    case TP_OK: return "ok";
    case TP_ERR_INVALID_ARGUMENT: return "invalid argument";
    case TP_ERR_SHAPE: return "shape mismatch";
    case TP_ERR_TYPE: return "unsupported type";
    case TP_ERR_OUT_OF_MEMORY: return "out of memory";
    case TP_ERR_IO: return "i/o error";
    case TP_ERR_FORMAT: return "bad file format";
    case TP_ERR_UNSUPPORTED: return "unsupported";
    case TP_ERR_INTERNAL: return "internal error";
    case TP_ERR_ABORTED: return "aborted";
    }
    return "unknown status";
}

void tp_error_set(tp_error *err, tp_status status, const char *fmt, ...) {
    if (!err) return;
    err->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

tp_status tp_ctx_set_error(tp_context *ctx, tp_status status, const char *fmt, ...) {
    if (!ctx || ctx->status != TP_OK) return status;
    ctx->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->message, sizeof(ctx->message), fmt, ap);
    va_end(ap);
    return status;
}

tp_context_params tp_context_default_params(void) {
    tp_context_params p;
    p.cpu_path = -1;
    p.precision = TP_PRECISION_F32;
    p.abort_callback = NULL;
    p.abort_callback_data = NULL;
    return p;
}

static tp_cpu_path path_from_env(tp_cpu_path best) {
    const char *s = getenv("TILEPASS_CPU");
    if (!s) return best;
    tp_cpu_path want = best;
    if (strcmp(s, "scalar") == 0) want = TP_CPU_SCALAR;
    else if (strcmp(s, "avx2") == 0) want = TP_CPU_AVX2;
    else if (strcmp(s, "avx512") == 0) want = TP_CPU_AVX512;
    return want < best ? want : best;
}

tp_status tp_context_create(const tp_context_params *params, tp_context **out, tp_error *err) {
    if (!out) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_context_create: out is NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    tp_context_params p = params ? *params : tp_context_default_params();
    tp_cpu_path best = tp_cpu_best_path();
    if (p.cpu_path < -1 || p.cpu_path > TP_CPU_AVX512) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_context_create: cpu_path %d is not -1..2",
                     p.cpu_path);
        return TP_ERR_INVALID_ARGUMENT;
    }
    if (p.precision != TP_PRECISION_F32 && p.precision != TP_PRECISION_BF16) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_context_create: precision %d is not 0 (f32) or 1 (bf16)",
                     p.precision);
        return TP_ERR_INVALID_ARGUMENT;
    }
    tp_context *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_context_create: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    tp_cpu_path path = p.cpu_path < 0 ? path_from_env(best) : (tp_cpu_path)p.cpu_path;
    ctx->path = path < best ? path : best;
    ctx->precision = p.precision;
    ctx->abort_callback = p.abort_callback;
    ctx->abort_callback_data = p.abort_callback_data;
    *out = ctx;
    return TP_OK;
}

tp_status tp_context_create_child(const tp_context_params *params, const tp_context *parent, tp_context **out,
                                   tp_error *err) {
    tp_status st = tp_context_create(params, out, err);
    if (st == TP_OK) (*out)->parent = parent;
    return st;
}

void tp_context_free(tp_context *ctx) {
    if (!ctx) return;
    tp_graph *g = ctx->graphs;
    while (g) {
        tp_graph *next = tp_graph_next_in_ctx(g);
        tp_graph_destroy(g);
        g = next;
    }
    tp_tensor *t = ctx->tensors;
    while (t) {
        tp_tensor *next = t->next;
        free(t);
        t = next;
    }
    tp_alloc_node *a = ctx->allocs;
    while (a) {
        tp_alloc_node *next = a->next;
        free(a);
        a = next;
    }
    free(ctx);
}

tp_status tp_context_status(const tp_context *ctx) {
    return ctx ? ctx->status : TP_ERR_INVALID_ARGUMENT;
}

const char *tp_context_error(const tp_context *ctx) {
    return ctx ? ctx->message : "tp_context_error: context is NULL";
}

void tp_context_clear_error(tp_context *ctx) {
    if (!ctx) return;
    ctx->status = TP_OK;
    ctx->message[0] = '\0';
}

tp_cpu_path tp_context_cpu_path(const tp_context *ctx) {
    return ctx ? ctx->path : TP_CPU_SCALAR;
}

int tp_context_precision(const tp_context *ctx) { return ctx ? ctx->precision : TP_PRECISION_F32; }

void *tp_ctx_alloc(tp_context *ctx, size_t size) {
    if (size > SIZE_MAX - 2 * TP_ALIGN) return NULL;
    size_t header = TP_ALIGN; /* keeps the payload 64-byte aligned */
    tp_alloc_node *node = NULL;
    if (posix_memalign((void **)&node, TP_ALIGN, header + size) != 0) return NULL;
    memset(node, 0, header + size);
    node->next = ctx->allocs;
    ctx->allocs = node;
    return (char *)node + header;
}

/* ---- tensors ---- */

static bool valid_shape(tp_context *ctx, const char *who, int type, int n_dims, const int64_t *ne) {
    if (!tp_type_is_valid(type)) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "%s: unknown tensor type %d", who, type);
        return false;
    }
    if (n_dims < 1 || n_dims > TP_MAX_DIMS || !ne) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "%s: n_dims %d is not 1..4", who, n_dims);
        return false;
    }
    int64_t total = 1;
    for (int i = 0; i < n_dims; i++) {
        if (ne[i] < 1 || ne[i] > ((int64_t)1 << 40)) {
            tp_ctx_set_error(ctx, TP_ERR_SHAPE, "%s: ne[%d] = %lld is out of range", who, i,
                             (long long)ne[i]);
            return false;
        }
        if (total > ((int64_t)1 << 46) / ne[i]) {
            tp_ctx_set_error(ctx, TP_ERR_OUT_OF_MEMORY, "%s: tensor too large", who);
            return false;
        }
        total *= ne[i];
    }
    if (ne[0] % tp_type_block_elements(type) != 0) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "%s: ne[0] = %lld is not a multiple of %s's block of %lld",
                         who, (long long)ne[0], tp_type_name(type),
                         (long long)tp_type_block_elements(type));
        return false;
    }
    return true;
}

/* Metadata of a contiguous tensor, no data. */
static tp_tensor *new_tensor_meta(tp_context *ctx, tp_type type, int n_dims, const int64_t *ne) {
    tp_tensor *t = calloc(1, sizeof(*t));
    if (!t) {
        tp_ctx_set_error(ctx, TP_ERR_OUT_OF_MEMORY, "out of memory creating a tensor");
        return NULL;
    }
    t->type = type;
    t->n_dims = n_dims;
    for (int i = 0; i < TP_MAX_DIMS; i++) t->ne[i] = i < n_dims ? ne[i] : 1;
    t->nb[0] = tp_type_block_bytes(type);
    t->nb[1] = tp_type_row_bytes(type, t->ne[0]);
    for (int i = 2; i < TP_MAX_DIMS; i++) t->nb[i] = t->nb[i - 1] * (size_t)t->ne[i - 1];
    t->ctx = ctx;
    t->id = ctx->n_tensors++;
    /* append, so that iteration runs in creation order */
    if (ctx->last) ctx->last->next = t;
    else ctx->tensors = t;
    ctx->last = t;
    return t;
}

tp_tensor *tp_new_tensor(tp_context *ctx, int type, int n_dims, const int64_t *ne) {
    if (!ctx) return NULL;
    if (!valid_shape(ctx, "tp_new_tensor", type, n_dims, ne)) return NULL;
    tp_tensor *t = new_tensor_meta(ctx, (tp_type)type, n_dims, ne);
    if (!t) return NULL;
    t->data = tp_ctx_alloc(ctx, tp_tensor_nbytes(t));
    if (!t->data) {
        tp_ctx_set_error(ctx, TP_ERR_OUT_OF_MEMORY, "tp_new_tensor: cannot allocate %zu bytes",
                         tp_tensor_nbytes(t));
        return NULL;
    }
    t->owns_data = true;
    return t;
}

tp_tensor *tp_new_tensor_external(tp_context *ctx, int type, int n_dims, const int64_t *ne,
                                  void *data, size_t nbytes) {
    if (!ctx) return NULL;
    if (!data) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_new_tensor_external: data is NULL");
        return NULL;
    }
    if (!valid_shape(ctx, "tp_new_tensor_external", type, n_dims, ne)) return NULL;
    tp_tensor *t = new_tensor_meta(ctx, (tp_type)type, n_dims, ne);
    if (!t) return NULL;
    if (tp_tensor_nbytes(t) > nbytes) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE,
                         "tp_new_tensor_external: the shape needs %zu bytes, the buffer has %zu",
                         tp_tensor_nbytes(t), nbytes);
        return NULL;
    }
    t->data = data;
    return t;
}

tp_tensor *tp_new_op_tensor(tp_context *ctx, tp_type type, int n_dims, const int64_t *ne, tp_op op,
                            tp_tensor *src0, tp_tensor *src1, tp_tensor *src2) {
    if (!valid_shape(ctx, tp_op_get_info(op)->name, type, n_dims, ne)) return NULL;
    tp_tensor *t = new_tensor_meta(ctx, type, n_dims, ne);
    if (!t) return NULL;
    t->op = op;
    t->src[0] = src0;
    t->src[1] = src1;
    t->src[2] = src2;
    return t;
}

bool tp_check_inputs(tp_context *ctx, const char *op_name, int n, tp_tensor *const *inputs) {
    if (!ctx) return false;
    for (int i = 0; i < n; i++) {
        if (!inputs[i]) {
            /* an earlier constructor failed (its error is already recorded), or a NULL argument */
            tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "%s: input %d is NULL", op_name, i);
            return false;
        }
        if (inputs[i]->ctx != ctx && !(ctx->parent && inputs[i]->ctx == ctx->parent && inputs[i]->op == TP_OP_NONE)) {
            tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT,
                             "%s: input %d belongs to another context", op_name, i);
            return false;
        }
    }
    return true;
}

void tp_set_op_param_f32(tp_tensor *t, int i, float v) { memcpy(&t->op_params[i], &v, sizeof(v)); }
float tp_get_op_param_f32(const tp_tensor *t, int i) {
    float v;
    memcpy(&v, &t->op_params[i], sizeof(v));
    return v;
}

int64_t tp_nelements(const tp_tensor *t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }

bool tp_is_contiguous(const tp_tensor *t) {
    size_t expect = tp_type_block_bytes(t->type);
    if (t->nb[0] != expect) return false;
    expect = tp_type_row_bytes(t->type, t->ne[0]);
    for (int i = 1; i < TP_MAX_DIMS; i++) {
        if (t->ne[i] > 1 && t->nb[i] != expect) return false;
        expect *= (size_t)t->ne[i];
    }
    return true;
}

bool tp_rows_contiguous(const tp_tensor *t) { return t->nb[0] == tp_type_block_bytes(t->type); }

bool tp_same_shape(const tp_tensor *a, const tp_tensor *b) {
    for (int i = 0; i < TP_MAX_DIMS; i++)
        if (a->ne[i] != b->ne[i]) return false;
    return true;
}

bool tp_can_broadcast(const tp_tensor *a, const tp_tensor *b) {
    for (int i = 0; i < TP_MAX_DIMS; i++)
        if (b->ne[i] != a->ne[i] && b->ne[i] != 1) return false;
    return true;
}

const char *tp_shape_str(const tp_tensor *t, char *buf, size_t size) {
    snprintf(buf, size, "[%lld, %lld, %lld, %lld]", (long long)t->ne[0], (long long)t->ne[1],
             (long long)t->ne[2], (long long)t->ne[3]);
    return buf;
}

/* ---- public accessors ---- */

int tp_tensor_type(const tp_tensor *t) { return t ? (int)t->type : -1; }
int tp_tensor_n_dims(const tp_tensor *t) { return t ? t->n_dims : 0; }
int64_t tp_tensor_ne(const tp_tensor *t, int dim) {
    if (!t || dim < 0) return 0;
    return dim < TP_MAX_DIMS ? t->ne[dim] : 1;
}
size_t tp_tensor_nb(const tp_tensor *t, int dim) {
    if (!t || dim < 0 || dim >= TP_MAX_DIMS) return 0;
    return t->nb[dim];
}
int64_t tp_tensor_nelements(const tp_tensor *t) { return t ? tp_nelements(t) : 0; }

size_t tp_tensor_nbytes(const tp_tensor *t) {
    if (!t) return 0;
    size_t blck = (size_t)tp_type_block_elements(t->type);
    size_t bytes = (size_t)(t->ne[0] / (int64_t)blck) * t->nb[0];
    for (int i = 1; i < TP_MAX_DIMS; i++) bytes += (size_t)(t->ne[i] - 1) * t->nb[i];
    return bytes;
}

bool tp_tensor_is_contiguous(const tp_tensor *t) { return t && tp_is_contiguous(t); }
void *tp_tensor_data(const tp_tensor *t) { return t ? t->data : NULL; }

void tp_tensor_set_name(tp_tensor *t, const char *name) {
    if (!t || !name) return;
    snprintf(t->name, sizeof(t->name), "%s", name);
}
const char *tp_tensor_name(const tp_tensor *t) { return t ? t->name : ""; }

tp_status tp_tensor_set_f32(tp_tensor *t, const float *src, int64_t n) {
    if (!t || !src) return TP_ERR_INVALID_ARGUMENT;
    if (!t->data || t->op != TP_OP_NONE)
        return tp_ctx_set_error(t->ctx, TP_ERR_INVALID_ARGUMENT,
                                "tp_tensor_set_f32: '%s' is not a leaf with data", t->name);
    if (n != tp_nelements(t))
        return tp_ctx_set_error(t->ctx, TP_ERR_SHAPE,
                                "tp_tensor_set_f32: %lld values for a tensor of %lld", (long long)n,
                                (long long)tp_nelements(t));
    if (!tp_is_contiguous(t))
        return tp_ctx_set_error(t->ctx, TP_ERR_INVALID_ARGUMENT,
                                "tp_tensor_set_f32: tensor is not contiguous");
    if (t->type == TP_TYPE_I32)
        return tp_ctx_set_error(t->ctx, TP_ERR_TYPE, "tp_tensor_set_f32: tensor is I32");
    int64_t rows = n / t->ne[0];
    size_t row_bytes = tp_type_row_bytes(t->type, t->ne[0]);
    for (int64_t r = 0; r < rows; r++)
        tp_row_from_f32(t->type, src + r * t->ne[0], (char *)t->data + (size_t)r * row_bytes, t->ne[0]);
    return TP_OK;
}

tp_status tp_tensor_set_i32(tp_tensor *t, const int32_t *src, int64_t n) {
    if (!t || !src) return TP_ERR_INVALID_ARGUMENT;
    if (!t->data || t->op != TP_OP_NONE || t->type != TP_TYPE_I32 || !tp_is_contiguous(t))
        return tp_ctx_set_error(t->ctx, TP_ERR_TYPE,
                                "tp_tensor_set_i32: '%s' is not a contiguous I32 leaf", t->name);
    if (n != tp_nelements(t))
        return tp_ctx_set_error(t->ctx, TP_ERR_SHAPE,
                                "tp_tensor_set_i32: %lld values for a tensor of %lld", (long long)n,
                                (long long)tp_nelements(t));
    memcpy(t->data, src, (size_t)n * sizeof(int32_t));
    return TP_OK;
}

tp_status tp_tensor_get_f32(const tp_tensor *t, float *dst, int64_t n) {
    if (!t || !dst) return TP_ERR_INVALID_ARGUMENT;
    if (!t->data)
        return tp_ctx_set_error(t->ctx, TP_ERR_INVALID_ARGUMENT,
                                "tp_tensor_get_f32: '%s' has no data (not computed yet?)", t->name);
    if (n != tp_nelements(t))
        return tp_ctx_set_error(t->ctx, TP_ERR_SHAPE,
                                "tp_tensor_get_f32: %lld values for a tensor of %lld", (long long)n,
                                (long long)tp_nelements(t));
    int64_t ne0 = t->ne[0];
    bool block = tp_type_block_elements(t->type) > 1;
    for (int64_t i3 = 0; i3 < t->ne[3]; i3++)
        for (int64_t i2 = 0; i2 < t->ne[2]; i2++)
            for (int64_t i1 = 0; i1 < t->ne[1]; i1++) {
                float *out = dst + ((i3 * t->ne[2] + i2) * t->ne[1] + i1) * ne0;
                const char *row = tp_row_ptr(t, i1, i2, i3);
                if (block || tp_rows_contiguous(t)) {
                    if (t->type == TP_TYPE_I32) {
                        for (int64_t i0 = 0; i0 < ne0; i0++) out[i0] = (float)((const int32_t *)row)[i0];
                    } else {
                        tp_row_to_f32(t->type, row, out, ne0);
                    }
                } else {
                    for (int64_t i0 = 0; i0 < ne0; i0++) {
                        const char *e = row + i0 * t->nb[0];
                        if (t->type == TP_TYPE_I32) out[i0] = (float)*(const int32_t *)e;
                        else tp_row_to_f32(t->type, e, &out[i0], 1);
                    }
                }
            }
    return TP_OK;
}
