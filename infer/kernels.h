/* The compute kernels of the inference runtime, one table per instruction set.
 *
 * Every table has the same functions; the portable-C table is the readable
 * reference that the SIMD tables are tested against. Which table runs is
 * decided once: aarch64 builds use NEON (chosen at compile time); x86-64 builds
 * pick AVX-512, AVX2+FMA or portable C by asking the CPU at run time, so the
 * library needs no -march flag. GELAN_INFER_ISA=c|avx2|avx512|neon or
 * infer_kernels_force() overrides the choice (tests use it to compare paths);
 * a model keeps the table it was packed for, so forcing affects the models
 * loaded afterwards.
 *
 * The conv GEMM: C[m][n] = sum_k A[m][k] * B[k][n] over MR x NR register tiles.
 * A (weights) is packed once at load as panels of MR rows, stored k-major
 * (a[k*MR + i]); B (im2col of the input) is packed per call as panels of NR
 * columns, k-major (b[k*NR + j]), or is any row-major block (Winograd). Rows of C are output channels, columns are
 * output pixels, so C is the NCHW output plane directly. */
#ifndef GELAN_INFER_KERNELS_H
#define GELAN_INFER_KERNELS_H

#include <stddef.h>

enum { ACT_NONE = 0, ACT_RELU, ACT_LEAKY, ACT_SILU };

/* gemm_micro flags */
#define MICRO_ACC 1 /* add to the values already in C (a later K block) */
#define MICRO_EPI 2 /* last K block: add bias[i] to row i, then the activation */

typedef struct {
    const char *name; /* "c", "avx2", "avx512", "neon" */
    int mr, nr;       /* register tile of gemm_micro */
    /* One MR x NR tile of C (row stride ldc) from kc steps of a and b; row k of
     * b starts at b + k*ldb (ldb = NR for packed panels). bias (MR values) is
     * read only with MICRO_EPI; alpha is the LeakyReLU slope. */
    void (*gemm_micro)(int kc, const float *a, const float *b, size_t ldb, float *c, size_t ldc, int flags,
                       const float *bias, int act, float alpha);
    /* One MR x NR tile of a direct convolution: c[i][j] = act(bias[i] + sum over
     * k < kc, t < ntaps of a[(k*ntaps + t)*MR + i] * b[k*ldb + off[t] + j]).
     * Row k of b is input channel k (laid out so that every tap t of the kernel
     * window is a contiguous run starting off[t] floats in); a is a weight panel
     * of gemm_micro's layout, whose K = (channel, tap) is exactly this order. */
    void (*conv_micro)(int kc, int ntaps, const int *off, const float *a, const float *b, size_t ldb, float *c,
                       size_t ldc, const float *bias, int act, float alpha);
    /* Depthwise k x k conv of one channel plane, stride 1, zero padding p on
     * every side: out[oh][ow] = act(bias + sum w[ky][kx] * in[oy-p+ky][ox-p+kx]). */
    void (*dw_s1)(const float *in, int h, int w, float *out, int oh, int ow, const float *wt, int k, int p, float bias,
                  int act, float alpha);
    /* y[i] = act(y[i]) over n values (used by ops that are not GEMMs). */
    void (*activate)(float *y, size_t n, int act, float alpha);
    /* y[i] = exp(y[i]) (the DFL softmax and the class sigmoid of detect). */
    void (*expv)(float *y, size_t n);
} InferKernels;

/* The table in use (chosen on first call). */
const InferKernels *infer_kernels(void);
/* Forces a table by name ("c", "avx2", "avx512", "neon"); -1 + error if this
 * build or CPU does not have it. NULL or "" goes back to the automatic choice. */
int infer_kernels_force(const char *name);
/* A specific table, or NULL when this build or CPU lacks it (for tests). */
const InferKernels *infer_kernels_get(const char *name);

/* The tables themselves; the SIMD ones exist only where they compile. */
extern const InferKernels infer_kernels_c;
#if defined(__x86_64__)
extern const InferKernels infer_kernels_avx2;
extern const InferKernels infer_kernels_avx512;
#endif
#if defined(__aarch64__)
extern const InferKernels infer_kernels_neon;
#endif

#include <math.h>
/* Scalar activation: the definition every table follows. */
static inline float act_scalar(float x, int act, float alpha) {
    switch (act) {
        case ACT_RELU:
            return x > 0.f ? x : 0.f;
        case ACT_LEAKY:
            return x > 0.f ? x : x * alpha;
        case ACT_SILU:
            return x / (1.f + expf(-x));
        default:
            return x;
    }
}

#endif
