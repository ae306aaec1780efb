/* aarch64 NEON kernels, chosen at compile time (every aarch64 CPU has NEON).
 * 32 vector registers allow an 8 x 12 register tile: 24 accumulators, 3 B
 * vectors and the 8 A values in 2 vectors used lane by lane. */
#if defined(__aarch64__)
#include <arm_neon.h>

#include "infer/kernels.h"

#define MR 8
#define NR 12

/* exp(x) = 2^n * p(r) with the same Cephes polynomial as the x86 files. */
static inline float32x4_t exp_neon(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.3f)), vdupq_n_f32(88.3f));
    float32x4_t n = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500E-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507E-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073E-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894E-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459E-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201E-1f), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.f)), p, vmulq_f32(r, r));
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

static inline float32x4_t act_neon(float32x4_t v, int act, float alpha) {
    switch (act) {
        case ACT_RELU:
            return vmaxq_f32(v, vdupq_n_f32(0.f));
        case ACT_LEAKY:
            return vbslq_f32(vcltq_f32(v, vdupq_n_f32(0.f)), vmulq_n_f32(v, alpha), v);
        case ACT_SILU:
            return vdivq_f32(v, vaddq_f32(vdupq_n_f32(1.f), exp_neon(vnegq_f32(v))));
        default:
            return v;
    }
}

static void gemm_micro_neon(int kc, const float *a, const float *b, size_t ldb, float *c, size_t ldc, int flags,
                            const float *bias, int act, float alpha) {
    float32x4_t acc[MR][3];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = acc[i][2] = vdupq_n_f32(0.f);
    for (int k = 0; k < kc; k++, a += MR, b += ldb) {
        float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8);
        float32x4_t a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4);
#define ROW(i, av, l)                                  \
    acc[i][0] = vfmaq_laneq_f32(acc[i][0], b0, av, l); \
    acc[i][1] = vfmaq_laneq_f32(acc[i][1], b1, av, l); \
    acc[i][2] = vfmaq_laneq_f32(acc[i][2], b2, av, l);
        ROW(0, a0, 0) ROW(1, a0, 1) ROW(2, a0, 2) ROW(3, a0, 3) ROW(4, a1, 0) ROW(5, a1, 1) ROW(6, a1, 2) ROW(7, a1, 3)
#undef ROW
    }
    for (int i = 0; i < MR; i++) {
        float *row = c + (size_t)i * ldc;
        for (int j = 0; j < 3; j++) {
            float32x4_t v = acc[i][j];
            if (flags & MICRO_ACC) v = vaddq_f32(v, vld1q_f32(row + 4 * j));
            if (flags & MICRO_EPI) v = act_neon(vaddq_f32(v, vdupq_n_f32(bias[i])), act, alpha);
            vst1q_f32(row + 4 * j, v);
        }
    }
}

static void conv_micro_neon(int kc, int ntaps, const int *off, const float *a, const float *b, size_t ldb, float *c,
                            size_t ldc, const float *bias, int act, float alpha) {
    float32x4_t acc[MR][3];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = acc[i][2] = vdupq_n_f32(0.f);
    for (int k = 0; k < kc; k++, b += ldb)
        for (int t = 0; t < ntaps; t++, a += MR) {
            const float *bt = b + off[t];
            float32x4_t b0 = vld1q_f32(bt), b1 = vld1q_f32(bt + 4), b2 = vld1q_f32(bt + 8);
            float32x4_t a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4);
#define ROW(i, av, l)                                  \
    acc[i][0] = vfmaq_laneq_f32(acc[i][0], b0, av, l); \
    acc[i][1] = vfmaq_laneq_f32(acc[i][1], b1, av, l); \
    acc[i][2] = vfmaq_laneq_f32(acc[i][2], b2, av, l);
            ROW(0, a0, 0)
            ROW(1, a0, 1) ROW(2, a0, 2) ROW(3, a0, 3) ROW(4, a1, 0) ROW(5, a1, 1) ROW(6, a1, 2) ROW(7, a1, 3)
#undef ROW
        }
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < 3; j++)
            vst1q_f32(c + (size_t)i * ldc + 4 * j, act_neon(vaddq_f32(acc[i][j], vdupq_n_f32(bias[i])), act, alpha));
}

static void activate_neon(float *y, size_t n, int act, float alpha) {
    if (act == ACT_NONE) return;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, act_neon(vld1q_f32(y + i), act, alpha));
    for (; i < n; i++) y[i] = act_scalar(y[i], act, alpha);
}

static void dw_s1_neon(const float *in, int h, int w, float *out, int oh, int ow, const float *wt, int k, int p,
                       float bias, int act, float alpha) {
    for (int oy = 0; oy < oh; oy++) {
        float *orow = out + (size_t)oy * ow;
        for (int ox = 0; ox < ow; ox++) orow[ox] = bias;
        for (int ky = 0; ky < k; ky++) {
            int iy = oy - p + ky;
            if (iy < 0 || iy >= h) continue;
            const float *irow = in + (size_t)iy * w;
            for (int kx = 0; kx < k; kx++) {
                int lo = p - kx > 0 ? p - kx : 0;
                int hi = w + p - kx < ow ? w + p - kx : ow;
                float wv = wt[ky * k + kx];
                const float *src = irow - p + kx;
                int x = lo;
                for (; x + 4 <= hi; x += 4)
                    vst1q_f32(orow + x, vfmaq_n_f32(vld1q_f32(orow + x), vld1q_f32(src + x), wv));
                for (; x < hi; x++) orow[x] += wv * src[x];
            }
        }
        activate_neon(orow, (size_t)ow, act, alpha);
    }
}

static void expv_neon(float *y, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, exp_neon(vld1q_f32(y + i)));
    for (; i < n; i++) y[i] = expf(y[i]);
}

const InferKernels infer_kernels_neon = {"neon",        MR,       NR, gemm_micro_neon, conv_micro_neon, dw_s1_neon,
                                         activate_neon, expv_neon};
#endif
