#include "tensor/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "tensor/error.h"

#define POOL_MAX 256

/* How long a thread busy-waits for the next job (or for the others to finish) before it
 * sleeps on a condition variable: a training step runs thousands of short parallel_for
 * calls back to back, and a futex wake-up costs 5-50 us in a VM, more than many of the
 * jobs themselves. Bounded, so an idle pool sleeps and leaves the cores to other threads
 * (the data loaders) within ~50 us. */
#define SPIN_ROUNDS 4000

static struct {
    int nthreads;
    pthread_t tid[POOL_MAX];
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    atomic_ulong generation; /* bumped for each parallel_for */
    atomic_int pending;      /* workers still busy in this generation */
    atomic_int quit;
    int sleepers;            /* workers waiting on work_cv (under mu) */
    int waiting;             /* the caller waits on done_cv (under mu) */
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

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

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

/* Waits until the generation differs from `seen` (or quit): spins, then sleeps. */
static unsigned long wait_for_job(unsigned long seen) {
    for (int i = 0; i < SPIN_ROUNDS; i++) {
        unsigned long g = atomic_load(&P.generation);
        if (g != seen || atomic_load(&P.quit)) return g;
        cpu_relax();
    }
    pthread_mutex_lock(&P.mu);
    P.sleepers++;
    while (!atomic_load(&P.quit) && atomic_load(&P.generation) == seen) pthread_cond_wait(&P.work_cv, &P.mu);
    P.sleepers--;
    unsigned long g = atomic_load(&P.generation);
    pthread_mutex_unlock(&P.mu);
    return g;
}

static void *worker_main(void *arg) {
    (void)arg;
    unsigned long seen = 0;
    in_worker = 1;
    for (;;) {
        seen = wait_for_job(seen);
        if (atomic_load(&P.quit)) return NULL;
        run_pieces();
        if (atomic_fetch_sub(&P.pending, 1) == 1) { /* the last one out tells a sleeping caller */
            pthread_mutex_lock(&P.mu);
            if (P.waiting) pthread_cond_signal(&P.done_cv);
            pthread_mutex_unlock(&P.mu);
        }
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
    atomic_store(&P.quit, 0);
    P.nthreads = 1;
    atomic_store(&P.generation, 0); /* new workers start having seen generation 0: no stale job */
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
    atomic_store(&P.quit, 1);
    pthread_cond_broadcast(&P.work_cv);
    pthread_mutex_unlock(&P.mu);
    for (int i = 1; i < P.nthreads; i++) pthread_join(P.tid[i], NULL);
    P.nthreads = 1;
    atomic_store(&P.quit, 0);
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
    P.fn = fn;
    P.ctx = ctx;
    P.n = n;
    P.chunk = (n + pieces - 1) / pieces;
    P.pieces = (n + P.chunk - 1) / P.chunk;
    atomic_store(&P.next, 0);
    atomic_store(&P.pending, P.nthreads - 1);
    atomic_fetch_add(&P.generation, 1); /* publishes the job to spinning workers */
    pthread_mutex_lock(&P.mu);
    if (P.sleepers) pthread_cond_broadcast(&P.work_cv);
    pthread_mutex_unlock(&P.mu);
    in_worker = 1;
    run_pieces();
    in_worker = 0;
    for (int i = 0; i < SPIN_ROUNDS && atomic_load(&P.pending) > 0; i++) cpu_relax();
    if (atomic_load(&P.pending) > 0) {
        pthread_mutex_lock(&P.mu);
        P.waiting = 1;
        while (atomic_load(&P.pending) > 0) pthread_cond_wait(&P.done_cv, &P.mu);
        P.waiting = 0;
        pthread_mutex_unlock(&P.mu);
    }
}

typedef struct {
    task_fn fn;
    void *ctx;
    size_t ntasks;
    atomic_size_t next;
} TaskJob;

static void task_slots(void *vctx, size_t s0, size_t s1) {
    TaskJob *J = vctx;
    for (size_t slot = s0; slot < s1; slot++)
        for (size_t task; (task = atomic_fetch_add(&J->next, 1)) < J->ntasks;) J->fn(J->ctx, task, slot);
}

void parallel_tasks(size_t ntasks, size_t slots, task_fn fn, void *ctx) {
    if (ntasks == 0) return;
    if (slots < 1) slots = 1;
    TaskJob J = {.fn = fn, .ctx = ctx, .ntasks = ntasks};
    atomic_init(&J.next, 0);
    parallel_for(slots, 1, task_slots, &J);
}
