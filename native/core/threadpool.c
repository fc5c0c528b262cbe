/* threadpool.c - persistent workers that run one job on every thread, and the barrier kernels
 * use between phases. Workers spin briefly, then sleep on a condition variable: an idle pool
 * costs no CPU. */
#include "tp_internal.h"
#include "tp_threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TP_PAUSE() _mm_pause()
#else
#define TP_PAUSE() ((void)0)
#endif

/* Waiting: spin with pause for a few microseconds (the common case: the other threads are about to
 * arrive), then yield the CPU for a while (an oversubscribed machine: let the late thread run), then
 * sleep on the condition variable. The spin is short (500 pauses, ~10-30 µs): decode runs ~700
 * barriers per token, and when another process holds a core a long spin burns the time slice the
 * late thread needs (Q4_K decode with 2 threads beside a busy process on 2 cores: 16 tok/s with
 * 4000, 28 with 500; no measurable change on an idle machine). */
#define TP_SPIN_ITERS 500
#define TP_YIELD_ITERS 200

typedef struct worker {
    tp_threadpool *pool;
    int ith;
    pthread_t thread;
} worker;

struct tp_threadpool {
    int n_threads;
    worker *workers; /* n_threads - 1 */
    int n_started;

    pthread_mutex_t mutex;
    pthread_cond_t cond_job;  /* a new job or stop */
    pthread_cond_t cond_done; /* a worker finished */
    pthread_cond_t cond_barrier;

    atomic_int job_gen;    /* incremented per job */
    atomic_int n_done;     /* workers finished with the current job */
    atomic_bool stop;
    tp_job_fn job;
    void *job_arg;

    atomic_int barrier_count;
    atomic_int barrier_gen;
    atomic_int barrier_sleepers; /* threads in (or entering) the barrier's condition wait */
};

tp_threadpool_params tp_threadpool_default_params(void) {
    tp_threadpool_params p;
    p.n_threads = 1;
    return p;
}

int tp_threadpool_n_threads(const tp_threadpool *pool) { return pool ? pool->n_threads : 0; }

static void *worker_main(void *arg) {
    worker *w = arg;
    tp_threadpool *pool = w->pool;
    int seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load(&pool->job_gen) == seen && !atomic_load(&pool->stop) &&
               spins < TP_SPIN_ITERS) {
            TP_PAUSE();
            spins++;
        }
        for (int y = 0; y < TP_YIELD_ITERS && atomic_load(&pool->job_gen) == seen && !atomic_load(&pool->stop); y++)
            sched_yield();
        if (atomic_load(&pool->job_gen) == seen && !atomic_load(&pool->stop)) {
            pthread_mutex_lock(&pool->mutex);
            while (atomic_load(&pool->job_gen) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->cond_job, &pool->mutex);
            pthread_mutex_unlock(&pool->mutex);
        }
        if (atomic_load(&pool->stop)) return NULL;
        seen = atomic_load(&pool->job_gen);
        pool->job(pool->job_arg, w->ith, pool->n_threads);
        pthread_mutex_lock(&pool->mutex);
        atomic_fetch_add(&pool->n_done, 1);
        pthread_cond_signal(&pool->cond_done);
        pthread_mutex_unlock(&pool->mutex);
    }
}

tp_status tp_threadpool_create(const tp_threadpool_params *params, tp_threadpool **out, tp_error *err) {
    if (!out) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_threadpool_create: out is NULL");
        return TP_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    tp_threadpool_params p = params ? *params : tp_threadpool_default_params();
    if (p.n_threads < 1 || p.n_threads > TP_MAX_THREADS_PLAN) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_threadpool_create: n_threads %d is not 1..%d",
                     p.n_threads, TP_MAX_THREADS_PLAN);
        return TP_ERR_INVALID_ARGUMENT;
    }
    tp_threadpool *pool = calloc(1, sizeof(*pool));
    if (!pool) {
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_threadpool_create: out of memory");
        return TP_ERR_OUT_OF_MEMORY;
    }
    pool->n_threads = p.n_threads;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->cond_job, NULL);
    pthread_cond_init(&pool->cond_done, NULL);
    pthread_cond_init(&pool->cond_barrier, NULL);
    if (p.n_threads > 1) {
        pool->workers = calloc((size_t)p.n_threads - 1, sizeof(worker));
        if (!pool->workers) {
            tp_threadpool_free(pool);
            tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "tp_threadpool_create: out of memory");
            return TP_ERR_OUT_OF_MEMORY;
        }
        for (int i = 0; i < p.n_threads - 1; i++) {
            pool->workers[i].pool = pool;
            pool->workers[i].ith = i + 1;
            if (pthread_create(&pool->workers[i].thread, NULL, worker_main, &pool->workers[i]) != 0) {
                tp_threadpool_free(pool);
                tp_error_set(err, TP_ERR_OUT_OF_MEMORY,
                             "tp_threadpool_create: cannot start thread %d of %d", i + 2, p.n_threads);
                return TP_ERR_OUT_OF_MEMORY;
            }
            pool->n_started++;
        }
    }
    *out = pool;
    return TP_OK;
}

void tp_threadpool_free(tp_threadpool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mutex);
    atomic_store(&pool->stop, true);
    pthread_cond_broadcast(&pool->cond_job);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 0; i < pool->n_started; i++) pthread_join(pool->workers[i].thread, NULL);
    free(pool->workers);
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->cond_job);
    pthread_cond_destroy(&pool->cond_done);
    pthread_cond_destroy(&pool->cond_barrier);
    free(pool);
}

void tp_threadpool_run(tp_threadpool *pool, tp_job_fn job, void *arg) {
    if (pool->n_threads == 1) {
        job(arg, 0, 1);
        return;
    }
    pool->job = job;
    pool->job_arg = arg;
    atomic_store(&pool->n_done, 0);
    atomic_store(&pool->barrier_count, 0);
    pthread_mutex_lock(&pool->mutex);
    atomic_fetch_add(&pool->job_gen, 1);
    pthread_cond_broadcast(&pool->cond_job);
    pthread_mutex_unlock(&pool->mutex);

    job(arg, 0, pool->n_threads);

    int want = pool->n_threads - 1;
    int spins = 0;
    while (atomic_load(&pool->n_done) < want && spins < TP_SPIN_ITERS) {
        TP_PAUSE();
        spins++;
    }
    if (atomic_load(&pool->n_done) < want) {
        pthread_mutex_lock(&pool->mutex);
        while (atomic_load(&pool->n_done) < want) pthread_cond_wait(&pool->cond_done, &pool->mutex);
        pthread_mutex_unlock(&pool->mutex);
    }
}

void tp_barrier(tp_threadpool *pool) {
    if (!pool || pool->n_threads == 1) return;
    int gen = atomic_load(&pool->barrier_gen);
    if (atomic_fetch_add(&pool->barrier_count, 1) == pool->n_threads - 1) {
        atomic_store(&pool->barrier_count, 0);
        atomic_fetch_add(&pool->barrier_gen, 1);
        /* the mutex and broadcast only when a thread went to sleep: a sleeper counts itself before it
         * checks the generation (both sequentially consistent), so either it sees the new generation
         * or we see it counted and wake it under the mutex it holds until it waits */
        if (atomic_load(&pool->barrier_sleepers) > 0) {
            pthread_mutex_lock(&pool->mutex);
            pthread_cond_broadcast(&pool->cond_barrier);
            pthread_mutex_unlock(&pool->mutex);
        }
        return;
    }
    for (int spins = 0; spins < TP_SPIN_ITERS; spins++) {
        if (atomic_load(&pool->barrier_gen) != gen) return;
        TP_PAUSE();
    }
    for (int y = 0; y < TP_YIELD_ITERS; y++) {
        if (atomic_load(&pool->barrier_gen) != gen) return;
        sched_yield();
    }
    pthread_mutex_lock(&pool->mutex);
    atomic_fetch_add(&pool->barrier_sleepers, 1);
    while (atomic_load(&pool->barrier_gen) == gen) pthread_cond_wait(&pool->cond_barrier, &pool->mutex);
    atomic_fetch_sub(&pool->barrier_sleepers, 1);
    pthread_mutex_unlock(&pool->mutex);
}
