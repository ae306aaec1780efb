/* Portable-C kernels: the reference every SIMD table is tested against, and
 * the path on CPUs without one. Written for clarity first; the fixed-size
 * inner loops still let the compiler vectorise them. */
#include "infer/kernels.h"

#define MR 4
#define NR 16

static void gemm_micro_c(int kc, const float *a, const float *b, size_t ldb, float *c, size_t ldc, int flags,
                         const float *bias, int act, float alpha) {
    float acc[MR][NR] = {{0}};
    for (int k = 0; k < kc; k++) {
        for (int i = 0; i < MR; i++) {
            float ai = a[k * MR + i];
            for (int j = 0; j < NR; j++) acc[i][j] += ai * b[k * ldb + j];
        }
    }
    for (int i = 0; i < MR; i++) {
        float *row = c + (size_t)i * ldc;
        for (int j = 0; j < NR; j++) {
            float v = acc[i][j];
            if (flags & MICRO_ACC) v += row[j];
            if (flags & MICRO_EPI) v = act_scalar(v + bias[i], act, alpha);
            row[j] = v;
        }
    }
}

static void conv_micro_c(int kc, int ntaps, const int *off, const float *a, const float *b, size_t ldb, float *c,
                         size_t ldc, const float *bias, int act, float alpha) {
    float acc[MR][NR] = {{0}};
    for (int k = 0; k < kc; k++, b += ldb)
        for (int t = 0; t < ntaps; t++, a += MR) {
            const float *bt = b + off[t];
            for (int i = 0; i < MR; i++)
                for (int j = 0; j < NR; j++) acc[i][j] += a[i] * bt[j];
        }
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) c[(size_t)i * ldc + j] = act_scalar(acc[i][j] + bias[i], act, alpha);
}

/* Depthwise conv, stride 1: each (ky,kx) tap adds a shifted input row to the
 * output row; the valid output range of a tap keeps the inner loop free of
 * bounds checks. */
static void dw_s1_c(const float *in, int h, int w, float *out, int oh, int ow, const float *wt, int k, int p,
                    float bias, int act, float alpha) {
    for (int oy = 0; oy < oh; oy++) {
        float *orow = out + (size_t)oy * ow;
        for (int ox = 0; ox < ow; ox++) orow[ox] = bias;
        for (int ky = 0; ky < k; ky++) {
            int iy = oy - p + ky;
            if (iy < 0 || iy >= h) continue;
            const float *irow = in + (size_t)iy * w;
            for (int kx = 0; kx < k; kx++) {
                int lo = p - kx > 0 ? p - kx : 0;           /* first ox with ix >= 0 */
                int hi = w + p - kx < ow ? w + p - kx : ow; /* first ox with ix >= w */
                float wv = wt[ky * k + kx];
                const float *src = irow - p + kx;
                for (int ox = lo; ox < hi; ox++) orow[ox] += wv * src[ox];
            }
        }
        for (int ox = 0; ox < ow; ox++) orow[ox] = act_scalar(orow[ox], act, alpha);
    }
}

static void activate_c(float *y, size_t n, int act, float alpha) {
    if (act == ACT_NONE) return;
    for (size_t i = 0; i < n; i++) y[i] = act_scalar(y[i], act, alpha);
}

static void expv_c(float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = expf(y[i]);
}

const InferKernels infer_kernels_c = {"c", MR, NR, gemm_micro_c, conv_micro_c, dw_s1_c, activate_c, expv_c};
