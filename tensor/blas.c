#include "tensor/blas.h"

#include <cblas.h>
#include <stddef.h>

#include "tensor/pool.h"

/* Debian's OpenBLAS exports this in every threading flavour. */
void openblas_set_num_threads(int);

/* OpenBLAS runs single-threaded; a large GEMM is split into column (or row)
 * blocks over the thread pool instead. OpenBLAS's own threads busy-wait
 * (sched_yield) after each call, which on a 2-core machine steals the cores
 * from the pool's next parallel_for; with one scheduler for everything,
 * nothing ever runs wider than the pool. Inside a parallel_for body the split
 * runs serially, so blas_sgemm may be called from anywhere. */

typedef struct {
    bool ta, tb, split_n;
    int M, N, K, lda, ldb, ldc, block;
    float alpha, beta;
    const float *A, *B;
    float *C;
} GemmJob;

static void gemm_blocks(void *ctx, size_t begin, size_t end) {
    const GemmJob *j = ctx;
    for (size_t blk = begin; blk < end; blk++) {
        int lo = (int)blk * j->block;
        int hi = lo + j->block < (j->split_n ? j->N : j->M) ? lo + j->block : (j->split_n ? j->N : j->M);
        if (j->split_n) {
            /* C[:, lo:hi] = A * B[:, lo:hi] (op(B) columns: rows of B when transposed) */
            const float *B = j->tb ? j->B + (size_t)lo * j->ldb : j->B + lo;
            cblas_sgemm(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans, j->tb ? CblasTrans : CblasNoTrans, j->M,
                        hi - lo, j->K, j->alpha, j->A, j->lda, B, j->ldb, j->beta, j->C + lo, j->ldc);
        } else {
            /* C[lo:hi, :] = A[lo:hi, :] * B (op(A) rows: columns of A when transposed) */
            const float *A = j->ta ? j->A + lo : j->A + (size_t)lo * j->lda;
            cblas_sgemm(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans, j->tb ? CblasTrans : CblasNoTrans, hi - lo,
                        j->N, j->K, j->alpha, A, j->lda, j->B, j->ldb, j->beta, j->C + (size_t)lo * j->ldc, j->ldc);
        }
    }
}

void blas_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    int threads = pool_threads();
    double flops = 2.0 * M * N * (double)K;
    if (threads <= 1 || pool_in_worker() || flops < 4e6) {
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K,
                    alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    GemmJob j = {trans_a, trans_b, N >= M, M, N, K, lda, ldb, ldc, 0, alpha, beta, A, B, C};
    int along = j.split_n ? N : M;
    /* one block per thread, rounded up to 16 columns/rows for the kernels */
    int block = (along + threads - 1) / threads;
    block = (block + 15) / 16 * 16;
    j.block = block;
    size_t nblocks = (size_t)((along + block - 1) / block);
    parallel_for(nblocks, 1, gemm_blocks, &j);
}

void blas_set_threads(int n) {
    (void)n; /* the pool splits large GEMMs; OpenBLAS itself stays on one thread */
    openblas_set_num_threads(1);
}
