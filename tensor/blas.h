/* The only door to OpenBLAS. Row-major single-precision GEMM:
 *   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C
 * with op(X) = X or X^T. Large products are split over the thread pool;
 * inside a parallel_for body the call runs on the calling thread. */
#ifndef GELAN_BLAS_H
#define GELAN_BLAS_H

#include <stdbool.h>

void blas_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc);

/* Call after pool_init: keeps OpenBLAS on one thread (the pool splits big
 * GEMMs; see blas.c for why). */
void blas_set_threads(int n);

#endif
