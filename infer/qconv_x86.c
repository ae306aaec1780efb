/* int8 conv kernels for x86-64: AVX2, AVX-VNNI and AVX-512 VNNI. Each function carries its own
 * target attribute, so the file builds without -march flags; qconv.c calls a path only on a CPU
 * that has its instructions.
 *
 * The products are exact on every path. vpdpbusd (VNNI) multiplies u8 codes by s8 weights and
 * adds each group of four straight into int32. Plain AVX2 has no such instruction: vpmaddubsw
 * would saturate its int16 pair sums (255*127*2 > 32767), so the AVX2 path widens the codes to
 * int16 (vpmovzxbw), keeps the weights as int16 in the packed panels, and uses vpmaddwd, whose
 * int32 pair sums cannot overflow.
 *
 * The epilogue and the quantize step repeat the scalar code of qconv.h operation by operation
 * (vfmadd where it has fmaf, mul then add where it has those, the same clamps and rounding),
 * which is what makes the paths agree bit for bit. Every path here needs FMA besides its named
 * extension. */
#if defined(__x86_64__)
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif
#include <immintrin.h>
#include <string.h>

#include "infer/qconv.h"

#define T_AVX2 __attribute__((target("avx2,fma")))
#define T_AVXVNNI __attribute__((target("avx2,fma,avxvnni")))
#define T_AVX512 __attribute__((target("avx512f,avx512bw,avx512vnni,fma")))

static inline int32_t ld32(const void *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline int64_t ld64(const void *p) {
    int64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* ---- AVX2: epilogue, quantize (shared by the AVX2 and AVX-VNNI paths) ---------------------- */
static inline T_AVX2 __m256 exp_avx2(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f)); /* maxps(x, c) = x > c ? x : c */
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3f));
    __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f));
    __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline T_AVX2 __m256 act_avx2(__m256 y, int act, __m256 alpha) {
    switch (act) {
        case QACT_RELU:
            return _mm256_max_ps(y, _mm256_setzero_ps());
        case QACT_LEAKY:
            return _mm256_blendv_ps(_mm256_mul_ps(y, alpha), y, _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ));
        case QACT_SILU: {
            __m256 e = exp_avx2(_mm256_xor_ps(y, _mm256_set1_ps(-0.f)));
            return _mm256_div_ps(y, _mm256_add_ps(_mm256_set1_ps(1.f), e));
        }
        default:
            return y;
    }
}

static T_AVX2 void epilogue_avx2(const int32_t *acc, int n, int32_t corr, float scale, float bias, int act, float alpha,
                                 float *out) {
    __m256i vc = _mm256_set1_epi32(corr);
    __m256 vs = _mm256_set1_ps(scale), vb = _mm256_set1_ps(bias), va = _mm256_set1_ps(alpha);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256i a = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(acc + j)), vc);
        __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(a), vs), vb);
        _mm256_storeu_ps(out + j, act_avx2(y, act, va));
    }
    for (; j < n; j++) out[j] = qconv_epilogue1(acc[j], corr, scale, bias, act, alpha);
}

static inline T_AVX2 __m256i quant8_avx2(const float *x, __m256 inv, __m256 zp) {
    __m256 v = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x), inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm256_add_ps(v, zp);
    v = _mm256_max_ps(_mm256_min_ps(v, _mm256_set1_ps(255.f)), _mm256_setzero_ps()); /* minps: NaN -> 255 */
    return _mm256_cvttps_epi32(v);
}

static T_AVX2 void quantize_avx2(const float *x, size_t n, float inv_scale, int zp, uint8_t *q) {
    __m256 inv = _mm256_set1_ps(inv_scale), vz = _mm256_set1_ps((float)zp);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i i0 = quant8_avx2(x + i, inv, vz), i1 = quant8_avx2(x + i + 8, inv, vz);
        __m256i i2 = quant8_avx2(x + i + 16, inv, vz), i3 = quant8_avx2(x + i + 24, inv, vz);
        /* the packs work per 128-bit lane; the permute puts the 4-byte groups back in order */
        __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(i0, i1), _mm256_packus_epi32(i2, i3));
        b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(q + i), b);
    }
    for (; i < n; i++) q[i] = qconv_quantize1(x[i], inv_scale, zp);
}

static T_AVX2 void quantize4_avx2(const float *x0, const float *x1, const float *x2, const float *x3, size_t n,
                                  float inv_scale, int zp, uint8_t flip, uint32_t *q) {
    __m256 inv = _mm256_set1_ps(inv_scale), vz = _mm256_set1_ps((float)zp);
    __m256i vf = _mm256_set1_epi32((int32_t)(flip * 0x01010101u));
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { /* byte c of each word is channel c */
        __m256i w = _mm256_or_si256(quant8_avx2(x0 + i, inv, vz), _mm256_slli_epi32(quant8_avx2(x1 + i, inv, vz), 8));
        w = _mm256_or_si256(w, _mm256_slli_epi32(quant8_avx2(x2 + i, inv, vz), 16));
        w = _mm256_or_si256(w, _mm256_slli_epi32(quant8_avx2(x3 + i, inv, vz), 24));
        _mm256_storeu_si256((__m256i *)(q + i), _mm256_xor_si256(w, vf));
    }
    for (; i < n; i++)
        q[i] = ((uint32_t)qconv_quantize1(x0[i], inv_scale, zp) | (uint32_t)qconv_quantize1(x1[i], inv_scale, zp) << 8 |
                (uint32_t)qconv_quantize1(x2[i], inv_scale, zp) << 16 |
                (uint32_t)qconv_quantize1(x3[i], inv_scale, zp) << 24) ^
               (flip * 0x01010101u);
}

/* ---- AVX2 micro-kernel: 4 channels x 8 pixels, vpmaddwd on int16 ---------------------------- */
/* acc[i][h] holds, for pixels 4h..4h+3, the pair sums k0k1 and k2k3 side by side; a horizontal
 * add at the end folds each pair into the pixel's total. */
static T_AVX2 void micro_avx2(int k4, const void *a_, const uint8_t *b, int32_t *c) {
    const int16_t *a = a_;
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    for (int t = 0; t < k4; t++, a += 16, b += 32) {
        __m256i x0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)b));
        __m256i x1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(b + 16)));
        __m256i w;
#define ROW(i)                                                     \
    w = _mm256_set1_epi64x(ld64(a + 4 * i));                       \
    c##i##0 = _mm256_add_epi32(c##i##0, _mm256_madd_epi16(x0, w)); \
    c##i##1 = _mm256_add_epi32(c##i##1, _mm256_madd_epi16(x1, w));
        ROW(0) ROW(1) ROW(2) ROW(3)
#undef ROW
    }
#define STORE(i) \
    _mm256_storeu_si256((__m256i *)(c + 8 * i), _mm256_permute4x64_epi64(_mm256_hadd_epi32(c##i##0, c##i##1), 0xD8));
    STORE(0) STORE(1) STORE(2) STORE(3)
#undef STORE
}

const QConvKernels qconv_kernels_avx2 = {"avx2", 4, 8, 1, 0, micro_avx2, epilogue_avx2, quantize_avx2, quantize4_avx2};

/* ---- AVX-VNNI micro-kernel: 4 channels x 24 pixels, 12 ymm accumulators ------------------- */
static T_AVXVNNI void micro_avxvnni(int k4, const void *a_, const uint8_t *b, int32_t *c) {
    const int8_t *a = a_;
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
    __m256i c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
    for (int t = 0; t < k4; t++, a += 16, b += 96) {
        __m256i b0 = _mm256_loadu_si256((const __m256i *)b), b1 = _mm256_loadu_si256((const __m256i *)(b + 32)),
                b2 = _mm256_loadu_si256((const __m256i *)(b + 64));
        __m256i w;
#define ROW(i)                                         \
    w = _mm256_set1_epi32(ld32(a + 4 * i));            \
    c##i##0 = _mm256_dpbusd_avx_epi32(c##i##0, b0, w); \
    c##i##1 = _mm256_dpbusd_avx_epi32(c##i##1, b1, w); \
    c##i##2 = _mm256_dpbusd_avx_epi32(c##i##2, b2, w);
        ROW(0) ROW(1) ROW(2) ROW(3)
#undef ROW
    }
#define STORE(i)                                               \
    _mm256_storeu_si256((__m256i *)(c + 24 * i), c##i##0);     \
    _mm256_storeu_si256((__m256i *)(c + 24 * i + 8), c##i##1); \
    _mm256_storeu_si256((__m256i *)(c + 24 * i + 16), c##i##2);
    STORE(0) STORE(1) STORE(2) STORE(3)
#undef STORE
}

const QConvKernels qconv_kernels_avxvnni = {"avxvnni",     4, 24, 0, 0, micro_avxvnni, epilogue_avx2, quantize_avx2,
                                            quantize4_avx2};

/* ---- AVX-512 VNNI: 8 channels x 48 pixels, 24 zmm accumulators ------------------------------- */
static inline T_AVX512 __m512 exp_avx512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    x = _mm512_min_ps(x, _mm512_set1_ps(88.3f));
    __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
    return _mm512_scalef_ps(p, n); /* p * 2^n, the same correctly rounded product */
}

static inline T_AVX512 __m512 act_avx512(__m512 y, int act, __m512 alpha) {
    switch (act) {
        case QACT_RELU:
            return _mm512_max_ps(y, _mm512_setzero_ps());
        case QACT_LEAKY:
            return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_mul_ps(y, alpha),
                                        y);
        case QACT_SILU: {
            __m512 e = exp_avx512(
                _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(y), _mm512_set1_epi32((int32_t)0x80000000u))));
            return _mm512_div_ps(y, _mm512_add_ps(_mm512_set1_ps(1.f), e));
        }
        default:
            return y;
    }
}

static T_AVX512 void epilogue_avx512(const int32_t *acc, int n, int32_t corr, float scale, float bias, int act,
                                     float alpha, float *out) {
    __m512i vc = _mm512_set1_epi32(corr);
    __m512 vs = _mm512_set1_ps(scale), vb = _mm512_set1_ps(bias), va = _mm512_set1_ps(alpha);
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512i a = _mm512_add_epi32(_mm512_loadu_si512(acc + j), vc);
        __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), vs), vb);
        _mm512_storeu_ps(out + j, act_avx512(y, act, va));
    }
    if (j < n) { /* the tail under a mask: the same lanes arithmetic */
        __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
        __m512i a = _mm512_add_epi32(_mm512_maskz_loadu_epi32(m, acc + j), vc);
        __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), vs), vb);
        _mm512_mask_storeu_ps(out + j, m, act_avx512(y, act, va));
    }
}

static inline T_AVX512 __m512i quant16_avx512(__mmask16 m, const float *x, __m512 inv, __m512 zp) {
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x), inv);
    v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm512_add_ps(v, zp);
    v = _mm512_max_ps(_mm512_min_ps(v, _mm512_set1_ps(255.f)), _mm512_setzero_ps());
    return _mm512_cvttps_epi32(v);
}

static T_AVX512 void quantize_avx512(const float *x, size_t n, float inv_scale, int zp, uint8_t *q) {
    __m512 inv = _mm512_set1_ps(inv_scale), vz = _mm512_set1_ps((float)zp);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_cvtepi32_storeu_epi8(q + i, m, quant16_avx512(m, x + i, inv, vz));
    }
}

static T_AVX512 void quantize4_avx512(const float *x0, const float *x1, const float *x2, const float *x3, size_t n,
                                      float inv_scale, int zp, uint8_t flip, uint32_t *q) {
    __m512 inv = _mm512_set1_ps(inv_scale), vz = _mm512_set1_ps((float)zp);
    __m512i vf = _mm512_set1_epi32((int32_t)(flip * 0x01010101u));
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512i w = _mm512_or_si512(quant16_avx512(m, x0 + i, inv, vz),
                                    _mm512_slli_epi32(quant16_avx512(m, x1 + i, inv, vz), 8));
        w = _mm512_or_si512(w, _mm512_slli_epi32(quant16_avx512(m, x2 + i, inv, vz), 16));
        w = _mm512_or_si512(w, _mm512_slli_epi32(quant16_avx512(m, x3 + i, inv, vz), 24));
        _mm512_mask_storeu_epi32(q + i, m, _mm512_xor_si512(w, vf));
    }
}

static T_AVX512 void micro_avx512vnni(int k4, const void *a_, const uint8_t *b, int32_t *c) {
    const int8_t *a = a_;
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
    __m512i c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
    __m512i c40 = c00, c41 = c00, c42 = c00, c50 = c00, c51 = c00, c52 = c00;
    __m512i c60 = c00, c61 = c00, c62 = c00, c70 = c00, c71 = c00, c72 = c00;
    for (int t = 0; t < k4; t++, a += 32, b += 192) {
        __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 64), b2 = _mm512_loadu_si512(b + 128);
        __m512i w;
#define ROW(i)                                     \
    w = _mm512_set1_epi32(ld32(a + 4 * i));        \
    c##i##0 = _mm512_dpbusd_epi32(c##i##0, b0, w); \
    c##i##1 = _mm512_dpbusd_epi32(c##i##1, b1, w); \
    c##i##2 = _mm512_dpbusd_epi32(c##i##2, b2, w);
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7)
#undef ROW
    }
#define STORE(i)                                   \
    _mm512_storeu_si512(c + 48 * i, c##i##0);      \
    _mm512_storeu_si512(c + 48 * i + 16, c##i##1); \
    _mm512_storeu_si512(c + 48 * i + 32, c##i##2);
    STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7)
#undef STORE
}

const QConvKernels qconv_kernels_avx512vnni = {
    "avx512vnni", 8, 48, 0, 0, micro_avx512vnni, epilogue_avx512, quantize_avx512, quantize4_avx512};
#endif
