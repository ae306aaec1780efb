/* blas_sgemm: every transpose combination, small (one call) and large (split
 * over the pool into column or row blocks), against a plain triple loop. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdlib.h>

#include "tensor/blas.h"
#include "tensor/rng.h"
#include "tests/testutil.h"

static void check_gemm(int M, int N, int K, bool ta, bool tb) {
    Rng r;
    rng_seed(&r, (uint64_t)(M * 131 + N * 7 + K));
    int lda = ta ? M + 3 : K + 2, ldb = tb ? K + 1 : N + 5, ldc = N + 4;
    float *A = malloc(sizeof(float) * (size_t)lda * (ta ? K : M));
    float *B = malloc(sizeof(float) * (size_t)ldb * (tb ? N : K));
    float *C = malloc(sizeof(float) * (size_t)ldc * M), *R = malloc(sizeof(float) * (size_t)ldc * M);
    for (int i = 0; i < lda * (ta ? K : M); i++) A[i] = rng_range(&r, -1, 1);
    for (int i = 0; i < ldb * (tb ? N : K); i++) B[i] = rng_range(&r, -1, 1);
    for (int i = 0; i < ldc * M; i++) C[i] = R[i] = rng_range(&r, -1, 1);
    float alpha = 0.75f, beta = 0.5f;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double acc = 0;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[k * lda + m] : A[m * lda + k];
                float b = tb ? B[n * ldb + k] : B[k * ldb + n];
                acc += (double)a * b;
            }
            R[m * ldc + n] = (float)(alpha * acc + beta * R[m * ldc + n]);
        }
    blas_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    CU_ASSERT_EQUAL(check_close("sgemm", C, R, (size_t)ldc * M, 1e-5, 1e-5), 0);
    free(A), free(B), free(C), free(R);
}

static void test_sgemm(void) {
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        check_gemm(5, 7, 3, ta, tb);        /* one call */
        check_gemm(64, 1000, 96, ta, tb);   /* split along N */
        check_gemm(700, 33, 200, ta, tb);   /* split along M */
        check_gemm(67, 131, 1001, ta, tb);  /* odd sizes, split */
    }
}

SUITE_FN(blas) {
    CU_pSuite s = CU_add_suite("blas", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "sgemm: transposes, splits over the pool", test_sgemm);
    return 0;
}
