/* graph.c - graphs: collecting nodes in topological order, planning buffers (intermediates
 * share memory once dead), and computing every node on the thread pool. */
#include "tp_internal.h"
#include "tp_threadpool.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct tp_graph {
    tp_context *ctx;
    tp_tensor **outputs;
    int n_outputs, cap_outputs;

    /* set by planning */
    bool planned;
    tp_tensor **nodes; /* every non-leaf tensor, inputs before users */
    int n_nodes;
    void *buffer;
    size_t arena_bytes, work_bytes, total_bytes;
    void *work;          /* per-op scratch, sized for the thread count of the last compute */
    int work_threads;    /* that thread count (0: not sized yet) */
    bool profile; /* TILEPASS_PROFILE set at plan time: per-op times on stderr after compute */
    int profile_top; /* and the slowest nodes listed: TILEPASS_PROFILE=N, default (or not a number) 10 */
    double *node_ms;

    tp_graph *next_in_ctx;
};

/* ---- construction ---- */

tp_graph *tp_graph_new(tp_context *ctx) {
    if (!ctx) return NULL;
    tp_graph *g = calloc(1, sizeof(*g));
    if (!g) {
        tp_ctx_set_error(ctx, TP_ERR_OUT_OF_MEMORY, "tp_graph_new: out of memory");
        return NULL;
    }
    g->ctx = ctx;
    tp_ctx_attach_graph(ctx, g);
    return g;
}

void tp_graph_destroy(tp_graph *g) {
    free(g->outputs);
    free(g->nodes);
    free(g->buffer);
    free(g->work);
    free(g->node_ms);
    free(g);
}

void tp_graph_free(tp_graph *g) {
    if (!g) return;
    tp_ctx_detach_graph(g->ctx, g);
    tp_graph_destroy(g);
}

tp_graph *tp_graph_next_in_ctx(tp_graph *g) { return g->next_in_ctx; }
void tp_graph_set_next_in_ctx(tp_graph *g, tp_graph *next) { g->next_in_ctx = next; }

tp_status tp_graph_add_output(tp_graph *g, tp_tensor *t) {
    if (!g) return TP_ERR_INVALID_ARGUMENT;
    if (!t)
        return tp_ctx_set_error(g->ctx, TP_ERR_INVALID_ARGUMENT,
                                "tp_graph_add_output: tensor is NULL (did a constructor fail? %s)",
                                tp_context_error(g->ctx));
    if (t->ctx != g->ctx)
        return tp_ctx_set_error(g->ctx, TP_ERR_INVALID_ARGUMENT,
                                "tp_graph_add_output: tensor belongs to another context");
    if (g->n_outputs == g->cap_outputs) {
        int cap = g->cap_outputs ? 2 * g->cap_outputs : 8;
        tp_tensor **o = realloc(g->outputs, (size_t)cap * sizeof(*o));
        if (!o) return tp_ctx_set_error(g->ctx, TP_ERR_OUT_OF_MEMORY, "tp_graph_add_output: out of memory");
        g->outputs = o;
        g->cap_outputs = cap;
    }
    g->outputs[g->n_outputs++] = t;
    g->planned = false;
    return TP_OK;
}

/* ---- topological order (iterative DFS, so deep graphs cannot overflow the C stack) ---- */

static tp_status collect_nodes(tp_graph *g, int n_ids) {
    uint8_t *state = calloc((size_t)n_ids, 1); /* 0 new, 1 on stack, 2 done */
    tp_tensor **stack = malloc((size_t)n_ids * sizeof(*stack));
    int *next_src = malloc((size_t)n_ids * sizeof(int));
    free(g->nodes);
    g->nodes = malloc((size_t)n_ids * sizeof(*g->nodes));
    g->n_nodes = 0;
    if (!state || !stack || !next_src || !g->nodes) {
        free(state);
        free(stack);
        free(next_src);
        return tp_ctx_set_error(g->ctx, TP_ERR_OUT_OF_MEMORY, "tp_graph_plan: out of memory");
    }
    for (int o = 0; o < g->n_outputs; o++) {
        tp_tensor *root = g->outputs[o];
        if (state[root->id]) continue;
        int sp = 0;
        stack[sp++] = root;
        state[root->id] = 1;
        next_src[root->id] = 0;
        while (sp > 0) {
            tp_tensor *t = stack[sp - 1];
            int i = next_src[t->id];
            if (i < TP_MAX_SRC) {
                next_src[t->id] = i + 1;
                tp_tensor *s = t->src[i];
                if (s && s->ctx == g->ctx && state[s->id] == 0) {
                    state[s->id] = 1;
                    next_src[s->id] = 0;
                    stack[sp++] = s;
                }
                continue;
            }
            sp--;
            state[t->id] = 2;
            if (t->op != TP_OP_NONE) g->nodes[g->n_nodes++] = t;
        }
    }
    free(state);
    free(stack);
    free(next_src);
    return TP_OK;
}

/* ---- buffer planning: a simulated arena with a best-fit free list ---- */

typedef struct free_block {
    size_t offset, size;
} free_block;

typedef struct arena {
    free_block *blocks;
    int n, cap;
    size_t top; /* high-water mark */
} arena;

static size_t align_up(size_t x) { return (x + TP_ALIGN - 1) & ~(size_t)(TP_ALIGN - 1); }

static bool arena_alloc(arena *a, size_t size, size_t *offset) {
    size = align_up(size);
    int best = -1;
    for (int i = 0; i < a->n; i++)
        if (a->blocks[i].size >= size && (best < 0 || a->blocks[i].size < a->blocks[best].size)) best = i;
    if (best >= 0) {
        *offset = a->blocks[best].offset;
        a->blocks[best].offset += size;
        a->blocks[best].size -= size;
        if (a->blocks[best].size == 0) a->blocks[best] = a->blocks[--a->n];
        return true;
    }
    /* extend the top; a free block touching the top is merged into the new allocation */
    for (int i = 0; i < a->n; i++) {
        if (a->blocks[i].offset + a->blocks[i].size == a->top) {
            *offset = a->blocks[i].offset;
            a->top = *offset + size;
            a->blocks[i] = a->blocks[--a->n];
            return true;
        }
    }
    *offset = a->top;
    a->top += size;
    return true;
}

static bool arena_free(arena *a, size_t offset, size_t size) {
    size = align_up(size);
    /* merge with neighbours */
    for (int i = 0; i < a->n; i++) {
        if (a->blocks[i].offset + a->blocks[i].size == offset) {
            a->blocks[i].size += size;
            for (int j = 0; j < a->n; j++) {
                if (j != i && a->blocks[j].offset == a->blocks[i].offset + a->blocks[i].size) {
                    a->blocks[i].size += a->blocks[j].size;
                    a->blocks[j] = a->blocks[--a->n];
                    break;
                }
            }
            return true;
        }
        if (offset + size == a->blocks[i].offset) {
            a->blocks[i].offset = offset;
            a->blocks[i].size += size;
            return true;
        }
    }
    if (a->n == a->cap) {
        int cap = a->cap ? 2 * a->cap : 64;
        free_block *b = realloc(a->blocks, (size_t)cap * sizeof(*b));
        if (!b) return false;
        a->blocks = b;
        a->cap = cap;
    }
    a->blocks[a->n].offset = offset;
    a->blocks[a->n].size = size;
    a->n++;
    return true;
}

/* The tensor that owns the memory a tensor reads or writes. */
static tp_tensor *storage_of(tp_tensor *t) { return t->view_src ? t->view_src : t; }

static size_t storage_bytes(const tp_tensor *t) { return tp_tensor_nbytes(t); }

tp_status tp_graph_plan(tp_graph *g) {
    if (!g) return TP_ERR_INVALID_ARGUMENT;
    tp_context *ctx = g->ctx;
    if (tp_context_status(ctx) != TP_OK) return tp_context_status(ctx);
    if (g->n_outputs == 0)
        return tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_graph_plan: the graph has no output");
    int n_ids = tp_ctx_n_tensors(ctx);
    tp_status st = collect_nodes(g, n_ids);
    if (st != TP_OK) return st;

    int *last_use = malloc((size_t)n_ids * sizeof(int));
    size_t *offset = calloc((size_t)n_ids, sizeof(size_t));
    uint8_t *keep = calloc((size_t)n_ids, 1);
    arena a = {0};
    if (!last_use || !offset || !keep) {
        free(last_use);
        free(offset);
        free(keep);
        return tp_ctx_set_error(ctx, TP_ERR_OUT_OF_MEMORY, "tp_graph_plan: out of memory");
    }
    for (int i = 0; i < n_ids; i++) last_use[i] = -1;
    for (int o = 0; o < g->n_outputs; o++)
        if (storage_of(g->outputs[o])->ctx == ctx) keep[storage_of(g->outputs[o])->id] = 1;
    for (int n = 0; n < g->n_nodes; n++) {
        tp_tensor *t = g->nodes[n];
        for (int s = 0; s < TP_MAX_SRC; s++)
            if (t->src[s] && storage_of(t->src[s])->ctx == ctx) last_use[storage_of(t->src[s])->id] = n;
        if (t->view_src && t->view_src->ctx == ctx) last_use[t->view_src->id] = TP_MAX(last_use[t->view_src->id], n);
    }

    size_t total = 0;
    tp_cpu_path path = tp_context_cpu_path(ctx);
    TP_UNUSED(path);
    bool ok = true;
    for (int n = 0; n < g->n_nodes && ok; n++) {
        tp_tensor *t = g->nodes[n];
        const tp_op_info *info = tp_op_get_info(t->op);
        if (info->kernel && !t->view_src) { /* an op writing into another tensor (cpy) needs no buffer */
            size_t bytes = storage_bytes(t);
            ok = arena_alloc(&a, bytes, &offset[t->id]);
            total += align_up(bytes);
        }
        /* free what dies here (inputs whose last reader is this node) */
        for (int s = 0; s < TP_MAX_SRC && ok; s++) {
            tp_tensor *src = t->src[s];
            if (!src) continue;
            tp_tensor *st_t = storage_of(src);
            if (st_t->ctx != ctx || st_t->op == TP_OP_NONE || keep[st_t->id] || last_use[st_t->id] != n) continue;
            last_use[st_t->id] = -2; /* freed once */
            ok = arena_free(&a, offset[st_t->id], storage_bytes(st_t));
        }
    }
    if (!ok) {
        free(last_use);
        free(offset);
        free(keep);
        free(a.blocks);
        return tp_ctx_set_error(ctx, TP_ERR_OUT_OF_MEMORY, "tp_graph_plan: out of memory");
    }
    g->arena_bytes = a.top;
    g->work_threads = 0; /* scratch is sized at compute time, for the pool's threads */
    g->total_bytes = total;
    free(g->buffer);
    g->buffer = NULL;
    size_t need = g->arena_bytes;
    if (need > 0 && posix_memalign(&g->buffer, TP_ALIGN, need) != 0) {
        g->buffer = NULL;
        free(last_use);
        free(offset);
        free(keep);
        free(a.blocks);
        return tp_ctx_set_error(ctx, TP_ERR_OUT_OF_MEMORY,
                                "tp_graph_plan: cannot allocate the compute buffer of %zu bytes", need);
    }
    for (int n = 0; n < g->n_nodes; n++) {
        tp_tensor *t = g->nodes[n];
        if (tp_op_get_info(t->op)->kernel && !t->view_src) t->data = (char *)g->buffer + offset[t->id];
    }
    for (int n = 0; n < g->n_nodes; n++) {
        tp_tensor *t = g->nodes[n];
        if (t->view_src) t->data = (char *)t->view_src->data + t->view_offs;
    }
    free(last_use);
    free(offset);
    free(keep);
    free(a.blocks);
    const char *profile_env = getenv("TILEPASS_PROFILE");
    g->profile = profile_env != NULL;
    const long top = profile_env ? strtol(profile_env, NULL, 10) : 0;
    g->profile_top = top > 0 && top < INT_MAX ? (int)top : 10;
    free(g->node_ms);
    g->node_ms = g->profile ? calloc((size_t)g->n_nodes, sizeof(double)) : NULL;
    g->profile = g->node_ms != NULL;
    g->planned = true;
    return TP_OK;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Sum of node times per op name, largest first, on stderr. */
static void print_profile(const tp_graph *g) {
    double per_op[TP_OP_COUNT] = {0};
    int count[TP_OP_COUNT] = {0};
    double total = 0;
    for (int n = 0; n < g->n_nodes; n++) {
        per_op[g->nodes[n]->op] += g->node_ms[n];
        count[g->nodes[n]->op]++;
        total += g->node_ms[n];
    }
    fprintf(stderr, "tilepass profile: %d nodes, %.1f ms\n", g->n_nodes, total);
    for (;;) {
        int best = -1;
        for (int op = 0; op < TP_OP_COUNT; op++)
            if (count[op] && (best < 0 || per_op[op] > per_op[best])) best = op;
        if (best < 0 || per_op[best] <= 0.0) break;
        fprintf(stderr, "  %-12s %5d nodes %10.1f ms %5.1f%%\n", tp_op_get_info((tp_op)best)->name, count[best],
                per_op[best], 100.0 * per_op[best] / (total > 0 ? total : 1));
        count[best] = 0;
    }
    /* the slowest nodes, with their shapes */
    for (int k = 0; k < g->profile_top && k < g->n_nodes; k++) {
        int best = -1;
        for (int n = 0; n < g->n_nodes; n++)
            if (g->node_ms[n] >= 0.0 && (best < 0 || g->node_ms[n] > g->node_ms[best])) best = n;
        if (best < 0) break;
        const tp_tensor *t = g->nodes[best];
        char s0[96] = "", s1[96] = "", d[96];
        if (t->src[0]) tp_shape_str(t->src[0], s0, sizeof s0);
        if (t->src[1]) tp_shape_str(t->src[1], s1, sizeof s1);
        fprintf(stderr, "  #%d %-10s %8.1f ms  %s <- %s %s %s\n", best, tp_op_get_info(t->op)->name,
                g->node_ms[best], tp_shape_str(t, d, sizeof d), s0,
                t->src[0] ? tp_type_name(t->src[0]->type) : "", s1);
        g->node_ms[best] = -1.0;
    }
}

/* ---- compute ---- */

typedef struct compute_job {
    tp_graph *g;
    tp_threadpool *pool;
    atomic_int error; /* 1 + index of the first node that reported bad data, or 0 */
    /* Cancellation: the context's abort callback, asked by thread 0 after its share of each computing node
     * (before that node's barrier); the first time it answers true, aborted_at = 1 + that node's index.
     * Every thread reads aborted_at after the barrier and stops when it is set and not past the node it
     * just finished: a value stored before barrier n is seen by all threads after barrier n, and thread 0
     * can only store later values (>= n + 2) once it has passed barrier n, so all threads stop after the
     * same node and no thread is left waiting at a barrier the others never reach. */
    bool (*abort_callback)(void *data);
    void *abort_callback_data;
    atomic_int aborted_at;
} compute_job;

static void compute_worker(void *arg, int ith, int nth) {
    compute_job *job = arg;
    tp_graph *g = job->g;
    tp_compute_params p;
    p.ith = ith;
    p.nth = nth;
    p.wdata = g->work;
    p.wsize = g->work_bytes;
    p.pool = job->pool;
    p.path = tp_context_cpu_path(g->ctx);
    p.precision = tp_context_precision(g->ctx);
    p.error = &job->error;
    for (int n = 0; n < g->n_nodes; n++) {
        tp_tensor *t = g->nodes[n];
        const tp_op_info *info = tp_op_get_info(t->op);
        if (!info->kernel) continue;
        int before = atomic_load(&job->error);
        double t0 = g->profile && ith == 0 ? now_ms() : 0.0;
        info->kernel(&p, t);
        if (before == 0 && atomic_load(&job->error) == -1) {
            int expected = -1;
            atomic_compare_exchange_strong(&job->error, &expected, n + 1);
        }
        if (ith == 0 && job->abort_callback && atomic_load(&job->aborted_at) == 0 &&
            job->abort_callback(job->abort_callback_data))
            atomic_store(&job->aborted_at, n + 1);
        tp_barrier(job->pool);
        if (g->profile && ith == 0) g->node_ms[n] += now_ms() - t0;
        const int stop = atomic_load(&job->aborted_at);
        if (stop != 0 && stop <= n + 1) break;
    }
}

tp_status tp_graph_compute(tp_graph *g, tp_threadpool *pool) {
    if (!g) return TP_ERR_INVALID_ARGUMENT;
    if (!pool) return tp_ctx_set_error(g->ctx, TP_ERR_INVALID_ARGUMENT, "tp_graph_compute: pool is NULL");
    if (tp_threadpool_n_threads(pool) > TP_MAX_THREADS_PLAN)
        return tp_ctx_set_error(g->ctx, TP_ERR_INVALID_ARGUMENT,
                                "tp_graph_compute: at most %d threads", TP_MAX_THREADS_PLAN);
    if (!g->planned) {
        tp_status st = tp_graph_plan(g);
        if (st != TP_OK) return st;
    }
    compute_job job;
    job.g = g;
    job.pool = pool;
    atomic_init(&job.error, 0);
    tp_ctx_abort_callback(g->ctx, &job.abort_callback, &job.abort_callback_data);
    atomic_init(&job.aborted_at, 0);
    int nth = tp_threadpool_n_threads(pool);
    if (g->work_threads != nth) {
        free(g->work);
        g->work = NULL;
        g->work_bytes = tp_graph_work_bytes(g, nth);
        if (g->work_bytes > 0 && posix_memalign(&g->work, TP_ALIGN, g->work_bytes) != 0) {
            g->work = NULL;
            g->work_threads = 0;
            return tp_ctx_set_error(g->ctx, TP_ERR_OUT_OF_MEMORY,
                                    "tp_graph_compute: cannot allocate %zu bytes of scratch", g->work_bytes);
        }
        g->work_threads = nth;
    }
    if (g->profile) memset(g->node_ms, 0, (size_t)g->n_nodes * sizeof(double));
    tp_threadpool_run(pool, compute_worker, &job);
    if (g->profile) print_profile(g);
    const int aborted = atomic_load(&job.aborted_at);
    if (aborted != 0)
        return tp_ctx_set_error(g->ctx, TP_ERR_ABORTED, "aborted (by the abort callback, after node %d of %d)",
                                aborted, g->n_nodes);
    int e = atomic_load(&job.error);
    if (e != 0) {
        const char *name = e > 0 ? tp_op_get_info(g->nodes[e - 1]->op)->name : "an op";
        return tp_ctx_set_error(g->ctx, TP_ERR_INVALID_ARGUMENT,
                                "tp_graph_compute: %s met an index out of range", name);
    }
    return TP_OK;
}

int tp_graph_n_nodes(const tp_graph *g) { return g ? g->n_nodes : 0; }
size_t tp_graph_peak_bytes(const tp_graph *g) { return g ? g->arena_bytes + g->work_bytes : 0; }

size_t tp_graph_work_bytes(const tp_graph *g, int n_threads) {
    size_t work = 0;
    for (int n = 0; g && n < g->n_nodes; n++) {
        const tp_op_info *info = tp_op_get_info(g->nodes[n]->op);
        if (info->kernel && info->work_size) work = TP_MAX(work, info->work_size(g->nodes[n], n_threads));
    }
    return align_up(work);
}

size_t tp_graph_planned_bytes(const tp_graph *g, int n_threads) {
    return g ? g->arena_bytes + tp_graph_work_bytes(g, n_threads) : 0;
}
size_t tp_graph_total_intermediate_bytes(const tp_graph *g) { return g ? g->total_bytes : 0; }
