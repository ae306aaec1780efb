/* int8 conv kernels for aarch64: SDOT where the CPU has the dot-product extension (Cortex-A55,
 * A76 and later: Raspberry Pi 5), plain NEON otherwise (Cortex-A53/A72: Raspberry Pi 3/4).
 * The SDOT function carries its own target attribute and runs only when getauxval reports
 * HWCAP_ASIMDDP, so one binary serves both kinds of CPU.
 *
 * Both paths multiply s8 by s8: the packed codes are x_q ^ 0x80 = x_q - 128 (flip in the
 * path table), and qconv_init folds the 128 * sum(w) this removes into the per-channel
 * correction. The plain path multiplies with vmull_s8 (s8 x s8 -> s16, exact), adds the
 * products of two k-steps in s16 with vmlal_s8 (|sum| <= 2 * 128 * 127 = 32512, which is why
 * weights stop at -127) and folds pairs into int32 with vpadal.
 *
 * The epilogue and the quantize step repeat the scalar code of qconv.h operation by operation
 * (FMLA for its fmaf, FMINNM/FMAXNM for its clamps, which give the same answer for NaN). */
#if defined(__aarch64__)
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif
#include <arm_neon.h>
#include <string.h>
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

#include "infer/qconv.h"

int qconv_cpu_has_dotprod(void);
int qconv_cpu_has_dotprod(void) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
    return 0;
#endif
}

static inline int32_t ld32(const void *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* ---- epilogue and quantize (both paths) ------------------------------------------------------ */
static inline float32x4_t exp_neon(float32x4_t x) {
    x = vmaxnmq_f32(x, vdupq_n_f32(-87.3f));
    x = vminnmq_f32(x, vdupq_n_f32(88.3f));
    float32x4_t t = vmulq_f32(x, vdupq_n_f32(1.44269504088896341f));
    float32x4_t n = vrndnq_f32(t);
    float32x4_t r = vfmaq_f32(x, n, vdupq_n_f32(-0.693359375f)); /* FMLA: x + n * c, one rounding */
    r = vfmaq_f32(r, n, vdupq_n_f32(2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.f)), p, vmulq_f32(r, r));
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

static inline float32x4_t act_neon(float32x4_t y, int act, float alpha) {
    switch (act) {
        case QACT_RELU:
            return vmaxnmq_f32(y, vdupq_n_f32(0.f));
        case QACT_LEAKY:
            return vbslq_f32(vcgtq_f32(y, vdupq_n_f32(0.f)), y, vmulq_f32(y, vdupq_n_f32(alpha)));
        case QACT_SILU:
            return vdivq_f32(y, vaddq_f32(vdupq_n_f32(1.f), exp_neon(vnegq_f32(y))));
        default:
            return y;
    }
}

static void epilogue_neon(const int32_t *acc, int n, int32_t corr, float scale, float bias, int act, float alpha,
                          float *out) {
    int32x4_t vc = vdupq_n_s32(corr);
    float32x4_t vs = vdupq_n_f32(scale), vb = vdupq_n_f32(bias);
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        float32x4_t y = vcvtq_f32_s32(vaddq_s32(vld1q_s32(acc + j), vc));
        y = vaddq_f32(vmulq_f32(y, vs), vb);
        vst1q_f32(out + j, act_neon(y, act, alpha));
    }
    for (; j < n; j++) out[j] = qconv_epilogue1(acc[j], corr, scale, bias, act, alpha);
}

static inline uint32x4_t quant4_neon(const float *x, float32x4_t inv, float32x4_t zp) {
    float32x4_t v = vrndnq_f32(vmulq_f32(vld1q_f32(x), inv));
    v = vaddq_f32(v, zp);
    v = vmaxnmq_f32(vminnmq_f32(v, vdupq_n_f32(255.f)), vdupq_n_f32(0.f));
    return vcvtq_u32_f32(v);
}

static void quantize_neon(const float *x, size_t n, float inv_scale, int zp, uint8_t *q) {
    float32x4_t inv = vdupq_n_f32(inv_scale), vz = vdupq_n_f32((float)zp);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint16x8_t lo =
            vcombine_u16(vmovn_u32(quant4_neon(x + i, inv, vz)), vmovn_u32(quant4_neon(x + i + 4, inv, vz)));
        uint16x8_t hi =
            vcombine_u16(vmovn_u32(quant4_neon(x + i + 8, inv, vz)), vmovn_u32(quant4_neon(x + i + 12, inv, vz)));
        vst1q_u8(q + i, vcombine_u8(vmovn_u16(lo), vmovn_u16(hi)));
    }
    for (; i < n; i++) q[i] = qconv_quantize1(x[i], inv_scale, zp);
}

static void quantize4_neon(const float *x0, const float *x1, const float *x2, const float *x3, size_t n,
                           float inv_scale, int zp, uint8_t flip, uint32_t *q) {
    float32x4_t inv = vdupq_n_f32(inv_scale), vz = vdupq_n_f32((float)zp);
    uint32x4_t vf = vdupq_n_u32(flip * 0x01010101u);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) { /* byte c of each word is channel c */
        uint32x4_t w = vorrq_u32(quant4_neon(x0 + i, inv, vz), vshlq_n_u32(quant4_neon(x1 + i, inv, vz), 8));
        w = vorrq_u32(w, vshlq_n_u32(quant4_neon(x2 + i, inv, vz), 16));
        w = vorrq_u32(w, vshlq_n_u32(quant4_neon(x3 + i, inv, vz), 24));
        vst1q_u32(q + i, veorq_u32(w, vf));
    }
    for (; i < n; i++)
        q[i] = ((uint32_t)qconv_quantize1(x0[i], inv_scale, zp) | (uint32_t)qconv_quantize1(x1[i], inv_scale, zp) << 8 |
                (uint32_t)qconv_quantize1(x2[i], inv_scale, zp) << 16 |
                (uint32_t)qconv_quantize1(x3[i], inv_scale, zp) << 24) ^
               (flip * 0x01010101u);
}

/* ---- plain NEON: 4 channels x 8 pixels -------------------------------------------------------- */
/* c{i}{h} (h = 0..3) holds pixels 2h, 2h+1 as pair sums (k0k1, k2k3); vpaddq folds them. */
/* GCC's pre-allocation scheduler hoists every weight broadcast and spills the accumulators;
 * without it the 16 accumulators, 4 code and 2 weight registers fit the 32. */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_SCHED __attribute__((optimize("no-schedule-insns")))
#else
#define NO_SCHED
#endif
static NO_SCHED void micro_neon(int k4, const void *a_, const uint8_t *b_, int32_t *c) {
    const int8_t *a = a_, *b = (const int8_t *)b_;
    int32x4_t c00 = vdupq_n_s32(0), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    int32x4_t c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    int t = 0;
    for (; t + 2 <= k4; t += 2, a += 32, b += 64) { /* two k-steps share one s16 sum */
        int8x16_t x0 = vld1q_s8(b), x1 = vld1q_s8(b + 16), y0 = vld1q_s8(b + 32), y1 = vld1q_s8(b + 48);
        int8x16_t w, v;
#define ROW(i)                                                                                                      \
    w = vreinterpretq_s8_s32(vdupq_n_s32(ld32(a + 4 * i)));                                                         \
    v = vreinterpretq_s8_s32(vdupq_n_s32(ld32(a + 16 + 4 * i)));                                                    \
    c##i##0 =                                                                                                       \
        vpadalq_s16(c##i##0, vmlal_s8(vmull_s8(vget_low_s8(x0), vget_low_s8(w)), vget_low_s8(y0), vget_low_s8(v))); \
    c##i##1 = vpadalq_s16(c##i##1, vmlal_high_s8(vmull_high_s8(x0, w), y0, v));                                     \
    c##i##2 =                                                                                                       \
        vpadalq_s16(c##i##2, vmlal_s8(vmull_s8(vget_low_s8(x1), vget_low_s8(w)), vget_low_s8(y1), vget_low_s8(v))); \
    c##i##3 = vpadalq_s16(c##i##3, vmlal_high_s8(vmull_high_s8(x1, w), y1, v));
        ROW(0) ROW(1) ROW(2) ROW(3)
#undef ROW
    }
    if (t < k4) {
        int8x16_t x0 = vld1q_s8(b), x1 = vld1q_s8(b + 16);
        int8x16_t w;
#define ROW(i)                                                                 \
    w = vreinterpretq_s8_s32(vdupq_n_s32(ld32(a + 4 * i)));                    \
    c##i##0 = vpadalq_s16(c##i##0, vmull_s8(vget_low_s8(x0), vget_low_s8(w))); \
    c##i##1 = vpadalq_s16(c##i##1, vmull_high_s8(x0, w));                      \
    c##i##2 = vpadalq_s16(c##i##2, vmull_s8(vget_low_s8(x1), vget_low_s8(w))); \
    c##i##3 = vpadalq_s16(c##i##3, vmull_high_s8(x1, w));
        ROW(0) ROW(1) ROW(2) ROW(3)
#undef ROW
    }
#define STORE(i)                                        \
    vst1q_s32(c + 8 * i, vpaddq_s32(c##i##0, c##i##1)); \
    vst1q_s32(c + 8 * i + 4, vpaddq_s32(c##i##2, c##i##3));
    STORE(0) STORE(1) STORE(2) STORE(3)
#undef STORE
}

const QConvKernels qconv_kernels_neon = {"neon",        4, 8, 0, 0x80, micro_neon, epilogue_neon, quantize_neon,
                                         quantize4_neon};

/* ---- SDOT: 8 channels x 12 pixels, 24 accumulators ------------------------------------------ */
#define T_DOT __attribute__((target("arch=armv8.2-a+dotprod")))

static T_DOT void micro_neondot(int k4, const void *a_, const uint8_t *b_, int32_t *c) {
    const int8_t *a = a_, *b = (const int8_t *)b_;
    int32x4_t c00 = vdupq_n_s32(0), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
    int32x4_t c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
    int32x4_t c40 = c00, c41 = c00, c42 = c00, c50 = c00, c51 = c00, c52 = c00;
    int32x4_t c60 = c00, c61 = c00, c62 = c00, c70 = c00, c71 = c00, c72 = c00;
    for (int t = 0; t < k4; t++, a += 32, b += 48) {
        int8x16_t b0 = vld1q_s8(b), b1 = vld1q_s8(b + 16), b2 = vld1q_s8(b + 32);
        int8x16_t w0 = vld1q_s8(a), w1 = vld1q_s8(a + 16); /* channels 0-3 and 4-7, 4 k each */
#define ROW(i, w, lane)                              \
    c##i##0 = vdotq_laneq_s32(c##i##0, b0, w, lane); \
    c##i##1 = vdotq_laneq_s32(c##i##1, b1, w, lane); \
    c##i##2 = vdotq_laneq_s32(c##i##2, b2, w, lane);
        ROW(0, w0, 0) ROW(1, w0, 1) ROW(2, w0, 2) ROW(3, w0, 3) ROW(4, w1, 0) ROW(5, w1, 1) ROW(6, w1, 2) ROW(7, w1, 3)
#undef ROW
    }
#define STORE(i)                        \
    vst1q_s32(c + 12 * i, c##i##0);     \
    vst1q_s32(c + 12 * i + 4, c##i##1); \
    vst1q_s32(c + 12 * i + 8, c##i##2);
    STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7)
#undef STORE
}

const QConvKernels qconv_kernels_neondot = {"neondot",     8, 12, 0, 0x80, micro_neondot, epilogue_neon, quantize_neon,
                                            quantize4_neon};
#endif
