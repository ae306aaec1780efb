/* One process-wide thread pool for data-parallel loops.
 *
 * pool_init(n) starts n-1 workers (the calling thread is the n-th); n = 0 reads
 * GELAN_THREADS, else uses every online core. parallel_for splits [0, n) into
 * up to 4 contiguous pieces per thread, which the threads take in turn, and
 * returns when all are done. Each piece is one call of fn; which thread runs
 * it is not fixed, so fn must not assume one call per thread. A
 * parallel_for called from inside a worker runs serially, so nesting is safe.
 * The pool is the only scheduler: the GEMMs (infer/gemm.h) run on the calling
 * thread, and their callers split the work over the pool. */
#ifndef GELAN_POOL_H
#define GELAN_POOL_H

#include <stddef.h>

typedef void (*parallel_fn)(void *ctx, size_t begin, size_t end);

int pool_init(int nthreads);
void pool_shutdown(void);
int pool_threads(void);           /* 1 before pool_init */
int pool_in_worker(void);         /* nonzero inside a parallel_for body */

/* Runs fn(ctx, begin, end) over [0, n) in up to pool_threads() pieces.
 * Ranges shorter than min_chunk are not split further (0 = 1). */
void parallel_for(size_t n, size_t min_chunk, parallel_fn fn, void *ctx);

/* Runs fn(ctx, task, slot) for every task in [0, ntasks) on at most `slots`
 * threads. Each thread works under its own slot index in [0, slots) (for
 * per-thread scratch) and takes tasks from a shared counter, so a thread the
 * OS holds up simply takes fewer. Which slot runs which task is not fixed. */
typedef void (*task_fn)(void *ctx, size_t task, size_t slot);
void parallel_tasks(size_t ntasks, size_t slots, task_fn fn, void *ctx);

#endif
