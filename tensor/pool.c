#include "tensor/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "tensor/error.h"

#define POOL_MAX 256

static struct {
    int nthreads;
    pthread_t tid[POOL_MAX];
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    unsigned long generation;  /* bumped for each parallel_for */
    int pending;               /* workers still busy in this generation */
    int quit;
    /* current job: pieces [i*chunk, (i+1)*chunk) handed out in order */
    parallel_fn fn;
    void *ctx;
    size_t n, chunk, pieces;
    atomic_size_t next;
} P = {.nthreads = 1,
       .mu = PTHREAD_MUTEX_INITIALIZER,
       .work_cv = PTHREAD_COND_INITIALIZER,
       .done_cv = PTHREAD_COND_INITIALIZER};

static _Thread_local int in_worker;

/* Takes pieces until none is left: a thread that the OS descheduled for a
 * while simply takes fewer, instead of stalling the whole loop. */
static void run_pieces(void) {
    for (;;) {
        size_t idx = atomic_fetch_add(&P.next, 1);
        if (idx >= P.pieces) return;
        size_t begin = idx * P.chunk;
        size_t end = begin + P.chunk < P.n ? begin + P.chunk : P.n;
        P.fn(P.ctx, begin, end);
    }
}

static void *worker_main(void *arg) {
    (void)arg;
    unsigned long seen = 0;
    in_worker = 1;
    for (;;) {
        pthread_mutex_lock(&P.mu);
        while (!P.quit && P.generation == seen) pthread_cond_wait(&P.work_cv, &P.mu);
        if (P.quit) {
            pthread_mutex_unlock(&P.mu);
            return NULL;
        }
        seen = P.generation;
        pthread_mutex_unlock(&P.mu);
        run_pieces();
        pthread_mutex_lock(&P.mu);
        if (--P.pending == 0) pthread_cond_signal(&P.done_cv);
        pthread_mutex_unlock(&P.mu);
    }
}

int pool_init(int nthreads) {
    if (P.nthreads > 1) pool_shutdown();
    if (nthreads <= 0) {
        const char *env = getenv("GELAN_THREADS");
        nthreads = env ? atoi(env) : 0;
        if (nthreads <= 0) nthreads = (int)sysconf(_SC_NPROCESSORS_ONLN);
        if (nthreads <= 0) nthreads = 1;
    }
    if (nthreads > POOL_MAX) nthreads = POOL_MAX;
    P.quit = 0;
    P.nthreads = 1;
    P.generation = 0; /* new workers start having seen generation 0: no stale job */
    for (int i = 1; i < nthreads; i++) {
        if (pthread_create(&P.tid[i], NULL, worker_main, (void *)(size_t)i) != 0) {
            return gelan_error("pool: could not start thread %d of %d", i + 1, nthreads);
        }
        P.nthreads = i + 1;
    }
    return 0;
}

void pool_shutdown(void) {
    pthread_mutex_lock(&P.mu);
    P.quit = 1;
    pthread_cond_broadcast(&P.work_cv);
    pthread_mutex_unlock(&P.mu);
    for (int i = 1; i < P.nthreads; i++) pthread_join(P.tid[i], NULL);
    P.nthreads = 1;
    P.quit = 0;
}

int pool_threads(void) { return P.nthreads; }
int pool_in_worker(void) { return in_worker; }

void parallel_for(size_t n, size_t min_chunk, parallel_fn fn, void *ctx) {
    if (n == 0) return;
    if (min_chunk == 0) min_chunk = 1;
    /* up to 4 pieces per thread, none shorter than min_chunk */
    size_t pieces = (size_t)P.nthreads * 4;
    if (pieces > (n + min_chunk - 1) / min_chunk) pieces = (n + min_chunk - 1) / min_chunk;
    if (pieces <= 1 || P.nthreads <= 1 || in_worker) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&P.mu);
    P.fn = fn;
    P.ctx = ctx;
    P.n = n;
    P.chunk = (n + pieces - 1) / pieces;
    P.pieces = (n + P.chunk - 1) / P.chunk;
    atomic_store(&P.next, 0);
    P.pending = P.nthreads - 1;
    P.generation++;
    pthread_cond_broadcast(&P.work_cv);
    pthread_mutex_unlock(&P.mu);
    in_worker = 1;
    run_pieces();
    in_worker = 0;
    pthread_mutex_lock(&P.mu);
    while (P.pending > 0) pthread_cond_wait(&P.done_cv, &P.mu);
    pthread_mutex_unlock(&P.mu);
}
