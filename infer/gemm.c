/* General matrix product blocked as BLAS libraries do (Goto's scheme), on the
 * micro-kernels of infer/kernels.h.
 *
 *   for each block of NC columns of C
 *     for each block of KC steps of K
 *       pack op(B)[k-block, columns] into panels of NR columns, k-major
 *       for each block of MC rows of C
 *         pack op(A)[rows, k-block] into panels of MR rows, k-major
 *         for each NR panel, for each MR panel: one micro-kernel call
 *
 * A packed B panel (KC x NR) stays in L1 while the MR panels of the A block
 * (MC x KC, in L2) stream past it; the B block waits in L2/L3. Packing pads
 * the last panels with zeros, so the micro-kernel always computes a full
 * MR x NR tile; edge tiles go through a small buffer. The first K block
 * stores (or, with accumulate, adds to C); later K blocks add. */
#include "infer/gemm.h"

#include <stdlib.h>
#include <string.h>

#include "tensor/error.h"
#include "tensor/pool.h"

#define KC 256
#define MC_FLOATS 128  /* rows of an A block (rounded down to a multiple of MR) */
#define NC_FLOATS 1024 /* columns of a B block (rounded down to a multiple of NR) */
#define TILE_MAX (16 * 64)

static int mc_of(const InferKernels *k) { return MC_FLOATS / k->mr * k->mr; }
static int nc_of(const InferKernels *k) { return NC_FLOATS / k->nr * k->nr; }

size_t gemm_scratch_floats(const InferKernels *kern) {
    return (size_t)KC * nc_of(kern) + (size_t)mc_of(kern) * KC;
}

/* Rows [i0, i0+mc) x steps [p0, p0+kc) of op(A) into panels of mr rows:
 * dst[(panel*kc + k)*mr + i]; rows past M are zero. */
static void pack_a(bool ta, const float *A, int lda, int M, int i0, int mc, int p0, int kc, int mr, float *dst) {
    for (int ip = 0; ip < mc; ip += mr, dst += (size_t)kc * mr) {
        int rows = M - (i0 + ip) < mr ? M - (i0 + ip) : mr;
        if (ta) { /* op(A)[i][k] = A[k][i]: mr contiguous floats per step */
            for (int k = 0; k < kc; k++) {
                const float *src = A + (size_t)(p0 + k) * lda + i0 + ip;
                float *d = dst + (size_t)k * mr;
                memcpy(d, src, sizeof(float) * rows);
                memset(d + rows, 0, sizeof(float) * (mr - rows));
            }
        } else { /* op(A)[i][k] = A[i][k]: read each row once, write strided */
            for (int i = 0; i < rows; i++) {
                const float *src = A + (size_t)(i0 + ip + i) * lda + p0;
                for (int k = 0; k < kc; k++) dst[(size_t)k * mr + i] = src[k];
            }
            for (int i = rows; i < mr; i++)
                for (int k = 0; k < kc; k++) dst[(size_t)k * mr + i] = 0.f;
        }
    }
}

/* Steps [p0, p0+kc) x columns [j0, j0+nc) of op(B) into panels of nr columns:
 * dst[(panel*kc + k)*nr + j]; columns past N are zero. */
static void pack_b(bool tb, const float *B, int ldb, int N, int p0, int kc, int j0, int nc, int nr, float *dst) {
    for (int jp = 0; jp < nc; jp += nr, dst += (size_t)kc * nr) {
        int cols = N - (j0 + jp) < nr ? N - (j0 + jp) : nr;
        if (!tb) { /* op(B)[k][j] = B[k][j]: nr contiguous floats per step */
            for (int k = 0; k < kc; k++) {
                const float *src = B + (size_t)(p0 + k) * ldb + j0 + jp;
                float *d = dst + (size_t)k * nr;
                memcpy(d, src, sizeof(float) * cols);
                memset(d + cols, 0, sizeof(float) * (nr - cols));
            }
        } else { /* op(B)[k][j] = B[j][k]: read each row of B once, write strided */
            for (int j = 0; j < cols; j++) {
                const float *src = B + (size_t)(j0 + jp + j) * ldb + p0;
                for (int k = 0; k < kc; k++) dst[(size_t)k * nr + j] = src[k];
            }
            for (int j = cols; j < nr; j++)
                for (int k = 0; k < kc; k++) dst[(size_t)k * nr + j] = 0.f;
        }
    }
}

void gemm_f32(const InferKernels *kern, bool trans_a, bool trans_b, int M, int N, int K, const float *A, int lda,
              const float *B, int ldb, bool accumulate, float *C, int ldc, float *scratch) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* an empty sum: C = 0, or C unchanged */
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, sizeof(float) * N);
        return;
    }
    const int mr = kern->mr, nr = kern->nr, MC = mc_of(kern), NC = nc_of(kern);
    float *bpack = scratch, *apack = scratch + (size_t)KC * NC;
    float tile[TILE_MAX];
    for (int j0 = 0; j0 < N; j0 += NC) {
        int nc = N - j0 < NC ? N - j0 : NC;
        for (int p0 = 0; p0 < K; p0 += KC) {
            int kc = K - p0 < KC ? K - p0 : KC;
            int flags = (p0 > 0 || accumulate) ? MICRO_ACC : 0;
            pack_b(trans_b, B, ldb, N, p0, kc, j0, nc, nr, bpack);
            for (int i0 = 0; i0 < M; i0 += MC) {
                int mc = M - i0 < MC ? M - i0 : MC;
                pack_a(trans_a, A, lda, M, i0, mc, p0, kc, mr, apack);
                for (int jp = 0; jp < nc; jp += nr) {
                    const float *b = bpack + (size_t)(jp / nr) * kc * nr;
                    int cols = nc - jp < nr ? nc - jp : nr;
                    for (int ip = 0; ip < mc; ip += mr) {
                        const float *a = apack + (size_t)(ip / mr) * kc * mr;
                        int rows = mc - ip < mr ? mc - ip : mr;
                        float *c = C + (size_t)(i0 + ip) * ldc + j0 + jp;
                        if (rows == mr && cols == nr) {
                            kern->gemm_micro(kc, a, b, (size_t)nr, c, (size_t)ldc, flags, NULL, ACT_NONE, 0.f);
                            continue;
                        }
                        if (flags & MICRO_ACC)
                            for (int i = 0; i < rows; i++) memcpy(tile + i * nr, c + (size_t)i * ldc, sizeof(float) * cols);
                        kern->gemm_micro(kc, a, b, (size_t)nr, tile, (size_t)nr, flags, NULL, ACT_NONE, 0.f);
                        for (int i = 0; i < rows; i++) memcpy(c + (size_t)i * ldc, tile + i * nr, sizeof(float) * cols);
                    }
                }
            }
        }
    }
}

/* ---- split over the pool ------------------------------------------------------ */

typedef struct {
    const InferKernels *kern;
    bool ta, tb, acc, by_cols;
    int M, N, K, lda, ldb, ldc, step;
    const float *A, *B;
    float *C, *scratch;
    size_t per_slot;
} GemmSplit;

/* task t: columns (or rows) [t*step, t*step + step) of C */
static void gemm_split_task(void *ctx, size_t t, size_t slot) {
    GemmSplit *J = ctx;
    float *scratch = J->scratch + slot * J->per_slot;
    int lo = (int)t * J->step;
    if (J->by_cols) {
        int n = J->N - lo < J->step ? J->N - lo : J->step;
        const float *B = J->tb ? J->B + (size_t)lo * J->ldb : J->B + lo;
        gemm_f32(J->kern, J->ta, J->tb, J->M, n, J->K, J->A, J->lda, B, J->ldb, J->acc, J->C + lo, J->ldc, scratch);
    } else {
        int m = J->M - lo < J->step ? J->M - lo : J->step;
        const float *A = J->ta ? J->A + lo : J->A + (size_t)lo * J->lda;
        gemm_f32(J->kern, J->ta, J->tb, m, J->N, J->K, A, J->lda, J->B, J->ldb, J->acc, J->C + (size_t)lo * J->ldc,
                 J->ldc, scratch);
    }
}

int gemm_f32_parallel(const InferKernels *kern, bool trans_a, bool trans_b, int M, int N, int K, const float *A,
                      int lda, const float *B, int ldb, bool accumulate, float *C, int ldc) {
    if (M <= 0 || N <= 0) return 0;
    int threads = pool_in_worker() ? 1 : pool_threads();
    double flops = 2.0 * M * N * (double)(K > 0 ? K : 1);
    if (flops < 4e6) threads = 1; /* waking the pool costs more than it saves */
    /* columns when there are enough for every thread (in whole NR panels), else rows */
    bool by_cols = N >= M || N / kern->nr >= 2 * threads;
    int along = by_cols ? N : M, unit = by_cols ? kern->nr : kern->mr;
    int pieces = threads > 1 ? 2 * threads : 1;
    int step = ((along + pieces - 1) / pieces + unit - 1) / unit * unit;
    size_t ntasks = (size_t)((along + step - 1) / step);
    size_t slots = (size_t)threads < ntasks ? (size_t)threads : ntasks;
    GemmSplit J = {.kern = kern, .ta = trans_a, .tb = trans_b, .acc = accumulate, .by_cols = by_cols,
                   .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb, .ldc = ldc, .step = step,
                   .A = A, .B = B, .C = C, .per_slot = gemm_scratch_floats(kern)};
    if (!(J.scratch = malloc(sizeof(float) * J.per_slot * slots)))
        return gelan_error("gemm: out of memory for %zu scratch floats", J.per_slot * slots);
    parallel_tasks(ntasks, slots, gemm_split_task, &J);
    free(J.scratch);
    return 0;
}
