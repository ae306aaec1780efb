/* AVX2 + FMA kernels (x86-64), compiled with a target attribute per function
 * and called only on CPUs that have both. AVX2 has 16 vector registers, so
 * the register tile is 4 x 24: 12 accumulators, 3 B vectors, 1 broadcast. */
#if defined(__x86_64__)
#include <immintrin.h>

#include "infer/kernels.h"

#define TARGET __attribute__((target("avx2,fma")))
#define MR 4
#define NR 24

/* exp(x) = 2^n * p(r) as in the AVX-512 file; 2^n is built in the exponent
 * bits, which the clamp keeps in the normal range. */
static inline TARGET __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500E-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline TARGET __m256 act256(__m256 v, int act, float alpha) {
    switch (act) {
        case ACT_RELU:
            return _mm256_max_ps(v, _mm256_setzero_ps());
        case ACT_LEAKY: {
            __m256 neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
            return _mm256_blendv_ps(v, _mm256_mul_ps(v, _mm256_set1_ps(alpha)), neg);
        }
        case ACT_SILU: {
            __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), v));
            return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.f), e));
        }
        default:
            return v;
    }
}

static TARGET void gemm_micro_avx2(int kc, const float *a, const float *b, size_t ldb, float *c, size_t ldc, int flags,
                                   const float *bias, int act, float alpha) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
    __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
    for (int k = 0; k < kc; k++, a += MR, b += ldb) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), b2 = _mm256_loadu_ps(b + 16);
        __m256 av;
#define ROW(i)                                  \
    av = _mm256_broadcast_ss(a + i);            \
    c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0); \
    c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1); \
    c##i##2 = _mm256_fmadd_ps(av, b2, c##i##2);
        ROW(0) ROW(1) ROW(2) ROW(3)
#undef ROW
    }
    __m256 acc[MR][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32}};
    for (int i = 0; i < MR; i++) {
        float *row = c + (size_t)i * ldc;
        for (int j = 0; j < 3; j++) {
            __m256 v = acc[i][j];
            if (flags & MICRO_ACC) v = _mm256_add_ps(v, _mm256_loadu_ps(row + 8 * j));
            if (flags & MICRO_EPI) v = act256(_mm256_add_ps(v, _mm256_set1_ps(bias[i])), act, alpha);
            _mm256_storeu_ps(row + 8 * j, v);
        }
    }
}

static TARGET void conv_micro_avx2(int kc, int ntaps, const int *off, const float *a, const float *b, size_t ldb,
                                   float *c, size_t ldc, const float *bias, int act, float alpha) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
    __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
    for (int k = 0; k < kc; k++, b += ldb)
        for (int t = 0; t < ntaps; t++, a += MR) {
            const float *bt = b + off[t];
            __m256 b0 = _mm256_loadu_ps(bt), b1 = _mm256_loadu_ps(bt + 8), b2 = _mm256_loadu_ps(bt + 16);
            __m256 av;
#define ROW(i)                                  \
    av = _mm256_broadcast_ss(a + i);            \
    c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0); \
    c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1); \
    c##i##2 = _mm256_fmadd_ps(av, b2, c##i##2);
            ROW(0) ROW(1) ROW(2) ROW(3)
#undef ROW
        }
    __m256 acc[MR][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32}};
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < 3; j++)
            _mm256_storeu_ps(c + (size_t)i * ldc + 8 * j,
                             act256(_mm256_add_ps(acc[i][j], _mm256_set1_ps(bias[i])), act, alpha));
}

static inline TARGET __m256i tail_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline TARGET void axpy256(float *out, const float *src, float wv, int lo, int hi) {
    __m256 w = _mm256_set1_ps(wv);
    int x = lo;
    for (; x + 8 <= hi; x += 8)
        _mm256_storeu_ps(out + x, _mm256_fmadd_ps(w, _mm256_loadu_ps(src + x), _mm256_loadu_ps(out + x)));
    if (x < hi) {
        __m256i m = tail_mask(hi - x);
        __m256 o = _mm256_maskload_ps(out + x, m);
        _mm256_maskstore_ps(out + x, m, _mm256_fmadd_ps(w, _mm256_maskload_ps(src + x, m), o));
    }
}

static TARGET void activate_avx2(float *y, size_t n, int act, float alpha) {
    if (act == ACT_NONE) return;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, act256(_mm256_loadu_ps(y + i), act, alpha));
    if (i < n) {
        __m256i m = tail_mask((int)(n - i));
        _mm256_maskstore_ps(y + i, m, act256(_mm256_maskload_ps(y + i, m), act, alpha));
    }
}

static TARGET void dw_s1_avx2(const float *in, int h, int w, float *out, int oh, int ow, const float *wt, int k, int p,
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
                if (lo < hi) axpy256(orow, irow - p + kx, wt[ky * k + kx], lo, hi);
            }
        }
        activate_avx2(orow, (size_t)ow, act, alpha);
    }
}

static TARGET void expv_avx2(float *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp256(_mm256_loadu_ps(y + i)));
    if (i < n) {
        __m256i m = tail_mask((int)(n - i));
        _mm256_maskstore_ps(y + i, m, exp256(_mm256_maskload_ps(y + i, m)));
    }
}

const InferKernels infer_kernels_avx2 = {"avx2",        MR,       NR, gemm_micro_avx2, conv_micro_avx2, dw_s1_avx2,
                                         activate_avx2, expv_avx2};
#endif
