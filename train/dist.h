/* Data-parallel training across processes and machines with MPI (docs/MPI.md).
 *
 * `mpirun -np N gelan train ...` runs the same training loop on N ranks; each
 * builds only its shard of every global batch (train/loader.h,
 * loader_shard_range). What the loop needs from MPI is here:
 *   - sums over the ranks: the loss's target-score sums (tss, so that every
 *     shard is normalised as the whole batch), the BN statistics with
 *     --sync-bn (through autograd's batchnorm2d_set_sync), the gradients at
 *     an optimizer step (in buckets, several in flight) and the loss items;
 *   - broadcasts from rank 0: the run directory, the weights at the start,
 *     the BN running buffers at every optimizer step (as PyTorch DDP);
 *   - rank 0's own work (validation, checkpoints) while the others wait for
 *     its status;
 *   - a checksum that every rank holds the same weights (debug).
 *
 * Failures: MPI errors are returned (MPI_ERRORS_RETURN), never fatal inside
 * MPI, and every wait polls with a deadline: a wait that makes no progress for
 * dist_timeout() seconds asks the other ranks where they are, gives them as
 * long again to answer, then fails with an error naming each rank that did not
 * answer (hung, stopped or dead) or that waits in another operation. A rank
 * answers while it waits in any of these functions, and rank 0 also during its
 * own long work (dist_poll), so a long validation is not taken for a hang.
 * The command line then ends every rank (dist_abort).
 *
 * Built without MPI (make without Open MPI, or MPI=0), or started without
 * mpirun, this is rank 0 of 1 and every sum is the identity. Functions return
 * 0, or -1 with gelan_error; all are for the main thread only. */
#ifndef GELAN_TRAIN_DIST_H
#define GELAN_TRAIN_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor/tensor.h"

/* True when built with MPI (-DGELAN_MPI). */
bool dist_available(void);
/* Starts MPI when the process was launched by mpirun (Open MPI's or a PMI
 * launcher's environment), else stays one process. An error when launched
 * as one of several ranks by a build without MPI. Timeout from
 * GELAN_DIST_TIMEOUT (seconds) when set, else 300. */
int dist_init(void);
/* Ends MPI (after a barrier with the deadline); no-op when not started. */
void dist_finalize(void);
/* Ends every rank at once (MPI_Abort) after an error; for the command line. */
void dist_abort(int code);

int dist_rank(void);
int dist_size(void);
/* Ranks on this machine (for the default thread count). */
int dist_local_size(void);

void dist_set_timeout(double seconds);
double dist_timeout(void);
/* A short text naming where the caller is ("epoch 3 iteration 17"), added to
 * failure messages. Copied. */
void dist_set_context(const char *text);

/* Sums v[0..n) over the ranks, in place. */
int dist_sum_f64(double *v, size_t n, const char *what);
/* Sums the gradients (t->grad, numel floats each; tensors without a grad are
 * skipped, alike on every rank) over the ranks, in buckets of about
 * bucket_bytes (0: 4 MiB) with several in flight. */
int dist_sum_grads(Tensor *const *ts, int n, size_t bucket_bytes);
/* Broadcasts bytes, or the data of tensors, from rank 0. */
int dist_bcast(void *buf, size_t bytes, const char *what);
int dist_bcast_tensors(Tensor *const *ts, int n, const char *what);
/* Every rank passes its status; 0 when all are 0, else -1 with this rank's
 * own message, or one naming the ranks that failed. */
int dist_agree(int status, const char *what);
int dist_barrier(const char *what);

/* Rank 0's own work: rank 0 calls dist_root_done with the work's status (and
 * its error message) when done, the other ranks dist_wait_root, which
 * returns that status (-1 with rank 0's message). While working, rank 0 calls
 * dist_poll now and then so that waiting ranks know it is alive. */
int dist_root_done(int status, const char *what);
int dist_wait_root(const char *what);
void dist_poll(void);

/* 64-bit checksum of the tensors' data (order-sensitive, bit-exact). */
uint64_t dist_checksum(Tensor *const *ts, int n);
/* Compares the checksums of every rank with rank 0's; -1 naming the ranks
 * that differ. */
int dist_check_same(Tensor *const *ts, int n, const char *what);

/* Hooks with the signatures autograd and the loss take: sums over the ranks
 * of BN statistics (BnSyncFn) and of the loss's per-head target scores
 * (LossShard.reduce_tss). ctx is unused. */
int dist_bn_sum(void *ctx, double *values, size_t n);
int dist_tss_sum(void *ctx, double *tsum, int n_heads);

/* Time spent in the functions above (communication, waiting for slower ranks,
 * packing buckets) and the bytes they summed or broadcast. */
typedef struct {
    double seconds;
    double bytes;
    long calls;
} DistStats;
DistStats dist_stats(void);
void dist_stats_reset(void);

#endif
