/* tp_threadpool.h - running one job on every thread of a pool. */
#ifndef TP_THREADPOOL_H
#define TP_THREADPOOL_H

#include "tp_internal.h"

typedef void (*tp_job_fn)(void *arg, int ith, int nth);
/* Run job(arg, ith, nth) on all nth threads (the caller is thread 0); returns when all finished. */
void tp_threadpool_run(tp_threadpool *pool, tp_job_fn job, void *arg);

#endif
