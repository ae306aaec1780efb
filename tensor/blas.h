/* The only door to OpenBLAS. Row-major single-precision GEMM:
 *   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C
 * with op(X) = X or X^T. Called only outside parallel_for (see pool.h). */
#ifndef GELAN_BLAS_H
#define GELAN_BLAS_H

#include <stdbool.h>

void blas_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc);

/* Sets OpenBLAS's thread count; call with pool_threads() after pool_init. */
void blas_set_threads(int n);

#endif
