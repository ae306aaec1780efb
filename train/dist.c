/* Data-parallel training over MPI (contract in dist.h).
 *
 * Every collective is non-blocking (MPI_Iallreduce, MPI_Ibcast, ...) and
 * completed by wait_reqs, which polls MPI_Testall and, between polls, answers
 * the other ranks' questions on a second communicator (`ctl`). That is what
 * turns a hang into an error naming a rank: after `timeout` seconds without
 * progress a rank asks every other rank where it is; ranks that wait in any
 * dist call answer at once, rank 0 answers during its own work (dist_poll),
 * and a rank that is stuck in computation, stopped or dead does not answer.
 * Nothing is sent in normal operation, so the watch costs nothing.
 *
 * Every rank calls the same dist functions in the same order (the training
 * loop is the same everywhere), so the count of calls (`seq`) identifies an
 * operation across ranks and shows which rank is elsewhere. */
#include "train/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tensor/error.h"

#ifdef GELAN_MPI
#include <mpi.h>
#endif

#define DEFAULT_TIMEOUT 300.0
#define DEFAULT_BUCKET_BYTES ((size_t)4 << 20)
#define BUCKETS_IN_FLIGHT 4

static struct {
    int rank, size, local_size;
    double timeout;
    char context[128];
    DistStats stats;
    uint64_t seq; /* dist operations started by this rank */
} D = {.rank = 0, .size = 1, .local_size = 1, .timeout = DEFAULT_TIMEOUT};

int dist_rank(void) { return D.rank; }
int dist_size(void) { return D.size; }
int dist_local_size(void) { return D.local_size; }
double dist_timeout(void) { return D.timeout; }
void dist_set_timeout(double seconds) { D.timeout = seconds > 0 ? seconds : DEFAULT_TIMEOUT; }
void dist_set_context(const char *text) { snprintf(D.context, sizeof D.context, "%s", text ? text : ""); }
DistStats dist_stats(void) { return D.stats; }
void dist_stats_reset(void) { memset(&D.stats, 0, sizeof D.stats); }

/* The rank count of the launcher that started this process, -1 when none did. */
static int launcher_size(void) {
    const char *keys[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = getenv(keys[i]);
        if (v && *v) return atoi(v);
    }
    return -1;
}

static void read_timeout_env(void) {
    const char *v = getenv("GELAN_DIST_TIMEOUT");
    if (v && *v) dist_set_timeout(strtod(v, NULL));
}

/* Four independent FNV-1a-style lanes over the 32-bit words (so the multiply
 * chains overlap), folded with the element count of every tensor. */
uint64_t dist_checksum(Tensor *const *ts, int n) {
    const uint64_t prime = 0x100000001b3ull;
    uint64_t h[4] = {0xcbf29ce484222325ull, 0x84222325cbf29ce4ull, 0x9e3779b97f4a7c15ull, 0xc2b2ae3d27d4eb4full};
    for (int i = 0; i < n; i++) {
        if (!ts[i]) continue;
        const float *p = ts[i]->data;
        const size_t m = ts[i]->numel;
        size_t k = 0;
        for (; k + 4 <= m; k += 4)
            for (int j = 0; j < 4; j++) {
                uint32_t w;
                memcpy(&w, p + k + j, sizeof w);
                h[j] = (h[j] ^ w) * prime;
            }
        for (; k < m; k++) {
            uint32_t w;
            memcpy(&w, p + k, sizeof w);
            h[0] = (h[0] ^ w) * prime;
        }
        h[1] = (h[1] ^ (uint64_t)m) * prime;
    }
    return h[0] ^ (h[1] * 3) ^ (h[2] * 5) ^ (h[3] * 7);
}

int dist_bn_sum(void *ctx, double *values, size_t n) {
    (void)ctx;
    return dist_sum_f64(values, n, "sync-bn sums");
}

int dist_tss_sum(void *ctx, double *tsum, int n_heads) {
    (void)ctx;
    return dist_sum_f64(tsum, (size_t)n_heads, "loss target-score sums");
}

#ifdef GELAN_MPI

/* ==== with MPI =================================================================== */

enum { TAG_QUERY = 7101, TAG_ANSWER, TAG_DONE };
enum { ST_BUSY = 0, ST_WAITING = 1, ST_ROOT_WORK = 2 };

typedef struct {
    uint64_t query; /* the question answered */
    uint64_t seq;   /* the answering rank's operation count */
    int state;
    char what[176];
} Answer;

typedef struct {
    int status;
    char msg[500];
} Status;

static struct {
    bool on;
    MPI_Comm coll, ctl; /* duplicates of MPI_COMM_WORLD: collectives; questions and answers */
    int state;          /* ST_* of this rank */
    const char *what;   /* the operation this rank waits in */
    uint64_t queries;   /* questions asked by this rank */
    Answer *answers;    /* [size] */
    unsigned char *got; /* [size] */
    float *scratch;     /* bucket buffers */
    size_t scratch_len;
} M;

bool dist_available(void) { return true; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void account(double t0, double bytes) {
    D.stats.seconds += now_s() - t0;
    D.stats.bytes += bytes;
    D.stats.calls++;
}

static int mpi_failed(int rc, const char *what) {
    char s[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, s, &len);
    return gelan_error("dist: %s%s%s on rank %d of %d: MPI error: %s", what, *D.context ? ", " : "", D.context, D.rank,
                       D.size, s);
}

int dist_init(void) {
    if (M.on) return 0;
    read_timeout_env();
    if (launcher_size() < 0) return 0; /* not started by mpirun: one process, MPI stays off */
    int provided = 0, rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return gelan_error("dist: MPI_Init_thread failed (error %d)", rc);
    M.on = true;
    if (provided < MPI_THREAD_FUNNELED)
        return gelan_error("dist: the MPI library gives thread level %d, gelan needs MPI_THREAD_FUNNELED", provided);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &D.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &D.size);
    MPI_Comm local;
    if ((rc = MPI_Comm_dup(MPI_COMM_WORLD, &M.coll)) != MPI_SUCCESS ||
        (rc = MPI_Comm_dup(MPI_COMM_WORLD, &M.ctl)) != MPI_SUCCESS ||
        (rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, D.rank, MPI_INFO_NULL, &local)) != MPI_SUCCESS)
        return mpi_failed(rc, "setting up communicators");
    MPI_Comm_size(local, &D.local_size);
    MPI_Comm_free(&local);
    M.answers = calloc((size_t)D.size, sizeof *M.answers);
    M.got = calloc((size_t)D.size, 1);
    if (!M.answers || !M.got) return gelan_error("dist: out of memory");
    M.what = "";
    return 0;
}

/* Answers every pending question: where this rank is. */
static void serve_queries(void) {
    for (;;) {
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_QUERY, M.ctl, &flag, &st) != MPI_SUCCESS || !flag) return;
        uint64_t q;
        if (MPI_Recv(&q, 1, MPI_UINT64_T, st.MPI_SOURCE, TAG_QUERY, M.ctl, MPI_STATUS_IGNORE) != MPI_SUCCESS) return;
        Answer a = {.query = q, .seq = D.seq, .state = M.state};
        snprintf(a.what, sizeof a.what, "%s%s%s", M.what, *D.context ? ", " : "", D.context);
        MPI_Send(&a, (int)sizeof a, MPI_BYTE, st.MPI_SOURCE, TAG_ANSWER, M.ctl); /* small: sent eagerly */
    }
}

/* Takes in the answers to question q. */
static void collect_answers(uint64_t q) {
    for (;;) {
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_ANSWER, M.ctl, &flag, &st) != MPI_SUCCESS || !flag) return;
        Answer a;
        if (MPI_Recv(&a, (int)sizeof a, MPI_BYTE, st.MPI_SOURCE, TAG_ANSWER, M.ctl, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return;
        if (a.query != q) continue; /* a late answer to an earlier question */
        a.what[sizeof a.what - 1] = '\0';
        M.answers[st.MPI_SOURCE] = a;
        M.got[st.MPI_SOURCE] = 1;
    }
}

/* The error after a wait made no progress: who did not answer, who is elsewhere. */
static int hang_error(const char *what, double waited) {
    char list[1024] = "";
    size_t o = 0;
    for (int r = 0; r < D.size && o < sizeof list; r++) {
        if (r == D.rank) continue;
        const Answer *a = &M.answers[r];
        if (!M.got[r])
            o += (size_t)snprintf(list + o, sizeof list - o, "; rank %d did not answer (hung, stopped or dead)", r);
        else if (a->seq != D.seq || a->state != ST_WAITING)
            o += (size_t)snprintf(list + o, sizeof list - o, "; rank %d is at operation #%llu (%s%s)", r,
                                  (unsigned long long)a->seq, a->state == ST_ROOT_WORK ? "working: " : "waiting in ",
                                  a->what);
    }
    if (!*list) snprintf(list, sizeof list, "; every rank waits in it, but MPI made no progress");
    return gelan_error("dist: %s (operation #%llu%s%s) on rank %d of %d made no progress for %.0f s%s", what,
                       (unsigned long long)D.seq, *D.context ? ", " : "", D.context, D.rank, D.size, waited, list);
}

/* Completes the requests, answering questions meanwhile; fails after the
 * deadline protocol of dist.h. */
static int wait_reqs(int n, MPI_Request *reqs, const char *what) {
    const int state0 = M.state;
    const char *what0 = M.what;
    M.state = ST_WAITING, M.what = what;
    double since = now_s(), asked_at = 0;
    uint64_t q = 0;
    long spins = 0;
    int rc;
    for (;;) {
        int done = 0;
        rc = MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) {
            rc = mpi_failed(rc, what);
            break;
        }
        if (done) break;
        serve_queries();
        const double t = now_s();
        if (!q && t - since > D.timeout) { /* ask everyone where they are */
            q = ((uint64_t)D.rank << 40) + ++M.queries;
            memset(M.got, 0, (size_t)D.size);
            for (int r = 0; r < D.size; r++)
                if (r != D.rank) MPI_Send(&q, 1, MPI_UINT64_T, r, TAG_QUERY, M.ctl);
            asked_at = t;
        } else if (q) {
            collect_answers(q);
            bool all = true, root_working = false;
            for (int r = 0; r < D.size; r++) {
                if (r == D.rank) continue;
                all &= M.got[r] != 0;
                root_working |= M.got[r] && M.answers[r].state == ST_ROOT_WORK;
            }
            if (root_working) { /* rank 0 is alive and working (validation): wait on */
                since = t, q = 0;
            } else if (all || t - asked_at > D.timeout) {
                rc = hang_error(what, t - since);
                break;
            }
        }
        /* spin briefly (collectives of small sums finish in microseconds), then sleep */
        if (++spins > 2000) {
            struct timespec ts = {0, spins > 200000 ? 1000000 : 20000};
            nanosleep(&ts, NULL);
        }
    }
    M.state = state0, M.what = what0;
    return rc;
}

void dist_poll(void) {
    if (!M.on || D.size == 1) return;
    const int state0 = M.state;
    M.state = ST_ROOT_WORK;
    serve_queries();
    M.state = state0;
}

int dist_sum_f64(double *v, size_t n, const char *what) {
    if (D.size == 1) return 0;
    if (n > (size_t)1 << 30) return gelan_error("dist: %s: %zu values are too many for one sum", what, n);
    const double t0 = now_s();
    D.seq++;
    MPI_Request r;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, v, (int)n, MPI_DOUBLE, MPI_SUM, M.coll, &r);
    rc = rc != MPI_SUCCESS ? mpi_failed(rc, what) : wait_reqs(1, &r, what);
    account(t0, (double)n * sizeof *v);
    return rc;
}

/* ---- tensors in buckets ------------------------------------------------------------ */

/* A position in the virtual concatenation of the tensors' data (or grads). */
typedef struct {
    Tensor *const *ts;
    int n, i;
    size_t off;
    bool grad;
} Cursor;

static float *cursor_ptr(const Cursor *c, int i) { return c->grad ? c->ts[i]->grad : c->ts[i]->data; }

/* Copies up to cap floats from (pack) or to (unpack) buf, advancing c; the count. */
static size_t cursor_copy(Cursor *c, float *buf, size_t cap, bool pack) {
    size_t done = 0;
    while (done < cap && c->i < c->n) {
        float *p = c->ts[c->i] ? cursor_ptr(c, c->i) : NULL;
        if (!p) {
            c->i++, c->off = 0;
            continue;
        }
        size_t take = c->ts[c->i]->numel - c->off;
        if (take > cap - done) take = cap - done;
        if (pack)
            memcpy(buf + done, p + c->off, take * sizeof(float));
        else
            memcpy(p + c->off, buf + done, take * sizeof(float));
        done += take, c->off += take;
        if (c->off == c->ts[c->i]->numel) c->i++, c->off = 0;
    }
    return done;
}

/* Sums (grad) or broadcasts from rank 0 (data) every tensor, in buckets of
 * `cap` floats with up to BUCKETS_IN_FLIGHT in flight. */
static int bucketed(Tensor *const *ts, int n, bool grad, size_t bucket_bytes, const char *what) {
    const double t0 = now_s();
    D.seq++;
    size_t cap = (bucket_bytes ? bucket_bytes : DEFAULT_BUCKET_BYTES) / sizeof(float);
    if (cap < 1024) cap = 1024;
    if (M.scratch_len < cap * BUCKETS_IN_FLIGHT) {
        free(M.scratch);
        M.scratch_len = 0;
        if (!(M.scratch = malloc(cap * BUCKETS_IN_FLIGHT * sizeof(float))))
            return gelan_error("dist: %s: out of memory for %d buckets of %zu floats", what, BUCKETS_IN_FLIGHT, cap);
        M.scratch_len = cap * BUCKETS_IN_FLIGHT;
    }
    struct {
        Cursor at; /* where the bucket's values belong */
        size_t len;
        long k; /* launch order */
        MPI_Request req;
        bool busy;
    } b[BUCKETS_IN_FLIGHT] = {0};
    Cursor pc = {.ts = ts, .n = n, .grad = grad};
    int rc = 0;
    double bytes = 0;
    char desc[160];
    /* launch buckets round robin; a slot is emptied (waited for, unpacked) before reuse */
    for (long k = 0;; k++) {
        const int s = (int)(k % BUCKETS_IN_FLIGHT);
        float *buf = M.scratch + (size_t)s * cap;
        if (b[s].busy) {
            snprintf(desc, sizeof desc, "%s, bucket %ld", what, k - BUCKETS_IN_FLIGHT);
            b[s].busy = false;
            if ((rc = wait_reqs(1, &b[s].req, desc))) break;
            cursor_copy(&b[s].at, buf, b[s].len, false);
        }
        b[s].at = pc;
        if (!(b[s].len = cursor_copy(&pc, buf, cap, true))) break;
        rc = grad ? MPI_Iallreduce(MPI_IN_PLACE, buf, (int)b[s].len, MPI_FLOAT, MPI_SUM, M.coll, &b[s].req)
                  : MPI_Ibcast(buf, (int)b[s].len, MPI_FLOAT, 0, M.coll, &b[s].req);
        if (rc != MPI_SUCCESS) {
            rc = mpi_failed(rc, what);
            break;
        }
        b[s].busy = true, b[s].k = k;
        bytes += (double)b[s].len * sizeof(float);
    }
    /* the rest, oldest first; after an error the run ends (dist_abort), so the
       buckets still in flight are left to MPI */
    for (int j = 0; !rc && j < BUCKETS_IN_FLIGHT; j++) {
        int s = -1;
        for (int i = 0; i < BUCKETS_IN_FLIGHT; i++)
            if (b[i].busy && (s < 0 || b[i].k < b[s].k)) s = i;
        if (s < 0) break;
        b[s].busy = false;
        snprintf(desc, sizeof desc, "%s, bucket %ld", what, b[s].k);
        if (!(rc = wait_reqs(1, &b[s].req, desc))) cursor_copy(&b[s].at, M.scratch + (size_t)s * cap, b[s].len, false);
    }
    account(t0, bytes);
    return rc;
}

int dist_sum_grads(Tensor *const *ts, int n, size_t bucket_bytes) {
    return D.size == 1 ? 0 : bucketed(ts, n, true, bucket_bytes, "gradient sum");
}

int dist_bcast_tensors(Tensor *const *ts, int n, const char *what) {
    return D.size == 1 ? 0 : bucketed(ts, n, false, 0, what);
}

int dist_bcast(void *buf, size_t bytes, const char *what) {
    if (D.size == 1) return 0;
    if (bytes > (size_t)1 << 30) return gelan_error("dist: %s: %zu bytes are too many for one broadcast", what, bytes);
    const double t0 = now_s();
    D.seq++;
    MPI_Request r;
    int rc = MPI_Ibcast(buf, (int)bytes, MPI_BYTE, 0, M.coll, &r);
    rc = rc != MPI_SUCCESS ? mpi_failed(rc, what) : wait_reqs(1, &r, what);
    account(t0, (double)bytes);
    return rc;
}

int dist_barrier(const char *what) {
    if (D.size == 1) return 0;
    const double t0 = now_s();
    D.seq++;
    MPI_Request r;
    int rc = MPI_Ibarrier(M.coll, &r);
    rc = rc != MPI_SUCCESS ? mpi_failed(rc, what) : wait_reqs(1, &r, what);
    account(t0, 0);
    return rc;
}

int dist_agree(int status, const char *what) {
    if (D.size == 1) return status ? -1 : 0;
    const double t0 = now_s();
    D.seq++;
    Status mine = {.status = status ? -1 : 0};
    if (status) snprintf(mine.msg, sizeof mine.msg, "%s", gelan_last_error());
    Status *all = calloc((size_t)D.size, sizeof *all);
    if (!all) return gelan_error("dist: %s: out of memory", what);
    MPI_Request r;
    int rc = MPI_Iallgather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE, M.coll, &r);
    rc = rc != MPI_SUCCESS ? mpi_failed(rc, what) : wait_reqs(1, &r, what);
    if (!rc && status) {
        gelan_error("%s", mine.msg); /* this rank's own message, as it was */
        rc = -1;
    } else if (!rc) {
        for (int k = 0; k < D.size; k++)
            if (all[k].status) {
                all[k].msg[sizeof all[k].msg - 1] = '\0';
                rc = gelan_error("dist: %s failed on rank %d: %s", what, k, all[k].msg);
                break;
            }
    }
    free(all);
    account(t0, 0);
    return rc;
}

int dist_root_done(int status, const char *what) {
    if (D.size == 1) return status ? -1 : 0;
    const double t0 = now_s();
    D.seq++;
    Status st = {.status = status ? -1 : 0};
    if (status) snprintf(st.msg, sizeof st.msg, "%s", gelan_last_error());
    MPI_Request *r = malloc(sizeof *r * (size_t)D.size);
    if (!r) return gelan_error("dist: %s: out of memory", what);
    int n = 0, rc = 0;
    for (int k = 1; k < D.size && !rc; k++) {
        int e = MPI_Isend(&st, (int)sizeof st, MPI_BYTE, k, TAG_DONE, M.ctl, &r[n]);
        if (e != MPI_SUCCESS)
            rc = mpi_failed(e, what);
        else
            n++;
    }
    int w = wait_reqs(n, r, what);
    if (!rc) rc = w;
    free(r);
    account(t0, 0);
    if (status) {
        gelan_error("%s", st.msg);
        return -1;
    }
    return rc;
}

int dist_wait_root(const char *what) {
    if (D.size == 1) return 0;
    const double t0 = now_s();
    D.seq++;
    Status st;
    MPI_Request r;
    int rc = MPI_Irecv(&st, (int)sizeof st, MPI_BYTE, 0, TAG_DONE, M.ctl, &r);
    rc = rc != MPI_SUCCESS ? mpi_failed(rc, what) : wait_reqs(1, &r, what);
    account(t0, 0);
    if (rc) return rc;
    st.msg[sizeof st.msg - 1] = '\0';
    return st.status ? gelan_error("dist: %s failed on rank 0: %s", what, st.msg) : 0;
}

int dist_check_same(Tensor *const *ts, int n, const char *what) {
    if (D.size == 1) return 0;
    const uint64_t mine = dist_checksum(ts, n);
    const double t0 = now_s();
    D.seq++;
    uint64_t *all = malloc(sizeof *all * (size_t)D.size);
    if (!all) return gelan_error("dist: %s: out of memory", what);
    MPI_Request r;
    int rc = MPI_Iallgather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, M.coll, &r);
    rc = rc != MPI_SUCCESS ? mpi_failed(rc, what) : wait_reqs(1, &r, what);
    account(t0, 0);
    if (!rc) {
        char list[512] = "";
        size_t o = 0;
        for (int k = 1; k < D.size && o < sizeof list; k++)
            if (all[k] != all[0])
                o += (size_t)snprintf(list + o, sizeof list - o, "%s%d (%016llx)", o ? ", " : "", k,
                                      (unsigned long long)all[k]);
        if (*list)
            rc = gelan_error(
                "dist: %s%s%s: the ranks no longer hold the same values: rank 0 has checksum %016llx, "
                "rank %s",
                what, *D.context ? ", " : "", D.context, (unsigned long long)all[0], list);
    }
    free(all);
    return rc;
}

void dist_finalize(void) {
    if (!M.on) return;
    if (D.size > 1) dist_barrier("the end of the run");
    MPI_Comm_free(&M.coll);
    MPI_Comm_free(&M.ctl);
    MPI_Finalize();
    free(M.scratch), free(M.answers), free(M.got);
    memset(&M, 0, sizeof M);
    D.rank = 0, D.size = 1, D.local_size = 1;
}

void dist_abort(int code) {
    if (M.on) MPI_Abort(MPI_COMM_WORLD, code);
}

#else /* ==== without MPI: one process ==================================================== */

bool dist_available(void) { return false; }

int dist_init(void) {
    read_timeout_env();
    int n = launcher_size();
    if (n > 1)
        return gelan_error(
            "dist: started as one of %d ranks, but this gelan was built without MPI (install Open MPI "
            "and build with make MPI=1)",
            n);
    return 0;
}

void dist_finalize(void) {}
void dist_abort(int code) { (void)code; }
void dist_poll(void) {}

int dist_sum_f64(double *v, size_t n, const char *what) {
    (void)v, (void)n, (void)what;
    return 0;
}
int dist_sum_grads(Tensor *const *ts, int n, size_t bucket_bytes) {
    (void)ts, (void)n, (void)bucket_bytes;
    return 0;
}
int dist_bcast(void *buf, size_t bytes, const char *what) {
    (void)buf, (void)bytes, (void)what;
    return 0;
}
int dist_bcast_tensors(Tensor *const *ts, int n, const char *what) {
    (void)ts, (void)n, (void)what;
    return 0;
}
int dist_agree(int status, const char *what) {
    (void)what;
    return status ? -1 : 0;
}
int dist_barrier(const char *what) {
    (void)what;
    return 0;
}
int dist_root_done(int status, const char *what) {
    (void)what;
    return status ? -1 : 0;
}
int dist_wait_root(const char *what) {
    (void)what;
    return 0;
}
int dist_check_same(Tensor *const *ts, int n, const char *what) {
    (void)ts, (void)n, (void)what;
    return 0;
}

#endif
