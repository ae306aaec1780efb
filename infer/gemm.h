/* General single-precision matrix product on the runtime's micro-kernels.
 *
 *     C  = op(A) op(B)     (accumulate false)
 *     C += op(A) op(B)     (accumulate true)
 *
 * op(A) is M x K and op(B) is K x N; every matrix is row-major with its own
 * leading dimension, and op(X) is X or its transpose. One call runs on the
 * calling thread only: callers that want threads split the product
 * themselves (autograd/conv2d.c gives each thread its own images or
 * channels, gemm_f32_parallel splits columns or rows), so nothing here ever
 * waits on another thread.
 *
 * The training framework's convolutions use this instead of a BLAS library:
 * the same AVX-512 / AVX2 / NEON / portable-C micro-kernels as the runtime's
 * inference convs (infer/kernels.h), chosen by CPU at run time. */
#ifndef GELAN_INFER_GEMM_H
#define GELAN_INFER_GEMM_H

#include <stdbool.h>
#include <stddef.h>

#include "infer/kernels.h"

/* Floats of scratch one gemm_f32 call needs (packed blocks of A and B). */
size_t gemm_scratch_floats(const InferKernels *kern);

void gemm_f32(const InferKernels *kern, bool trans_a, bool trans_b, int M, int N, int K, const float *A, int lda,
              const float *B, int ldb, bool accumulate, float *C, int ldc, float *scratch);

/* The same product split over the thread pool (by columns of C, or by rows
 * when C has few columns). Allocates its scratch; -1 + error when it cannot. */
int gemm_f32_parallel(const InferKernels *kern, bool trans_a, bool trans_b, int M, int N, int K, const float *A,
                      int lda, const float *B, int ldb, bool accumulate, float *C, int ldc);

#endif
