/* AVX-512 kernels (x86-64). Compiled with a target attribute per function, so
 * the build needs no -march flag; kernels.c calls them only on CPUs that have
 * AVX-512F. Register tile 8 x 32: 16 accumulators of 16 floats. */
#if defined(__x86_64__)
#include <immintrin.h>

#include "infer/kernels.h"

#define TARGET __attribute__((target("avx512f")))
#define MR 8
#define NR 32

/* exp(x) for x in float range: 2^n * p(r), r = x - n ln2, Cephes' degree-6
 * polynomial (about 1 ulp); scalef applies 2^n without integer tricks. */
static inline TARGET __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
    return _mm512_scalef_ps(p, n);
}

static inline TARGET __m512 act512(__m512 v, int act, float alpha) {
    switch (act) {
        case ACT_RELU:
            return _mm512_max_ps(v, _mm512_setzero_ps());
        case ACT_LEAKY: {
            __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
            return _mm512_mask_mul_ps(v, neg, v, _mm512_set1_ps(alpha));
        }
        case ACT_SILU: { /* v / (1 + e^-v): a 14-bit reciprocal and one Newton step (2^-28), cheaper than a divide */
            __m512 d = _mm512_add_ps(_mm512_set1_ps(1.f), exp512(_mm512_sub_ps(_mm512_setzero_ps(), v)));
            __m512 r = _mm512_rcp14_ps(d);
            r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.f)));
            return _mm512_mul_ps(v, r);
        }
        default:
            return v;
    }
}

static TARGET void gemm_micro_avx512(int kc, const float *a, const float *b, size_t ldb, float *c, size_t ldc,
                                     int flags, const float *bias, int act, float alpha) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    __m512 c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    for (int k = 0; k < kc; k++, a += MR, b += ldb) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        __m512 av;
#define ROW(i)                                  \
    av = _mm512_set1_ps(a[i]);                  \
    c##i##0 = _mm512_fmadd_ps(av, b0, c##i##0); \
    c##i##1 = _mm512_fmadd_ps(av, b1, c##i##1);
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7)
#undef ROW
    }
    __m512 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                         {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
    for (int i = 0; i < MR; i++) {
        float *row = c + (size_t)i * ldc;
        __m512 v0 = acc[i][0], v1 = acc[i][1];
        if (flags & MICRO_ACC) {
            v0 = _mm512_add_ps(v0, _mm512_loadu_ps(row));
            v1 = _mm512_add_ps(v1, _mm512_loadu_ps(row + 16));
        }
        if (flags & MICRO_EPI) {
            __m512 bv = _mm512_set1_ps(bias[i]);
            v0 = act512(_mm512_add_ps(v0, bv), act, alpha);
            v1 = act512(_mm512_add_ps(v1, bv), act, alpha);
        }
        _mm512_storeu_ps(row, v0);
        _mm512_storeu_ps(row + 16, v1);
    }
}

static TARGET void conv_micro_avx512(int kc, int ntaps, const int *off, const float *a, const float *b, size_t ldb,
                                     float *c, size_t ldc, const float *bias, int act, float alpha) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    __m512 c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    for (int k = 0; k < kc; k++, b += ldb)
        for (int t = 0; t < ntaps; t++, a += MR) {
            const float *bt = b + off[t];
            __m512 b0 = _mm512_loadu_ps(bt), b1 = _mm512_loadu_ps(bt + 16);
            __m512 av;
#define ROW(i)                                  \
    av = _mm512_set1_ps(a[i]);                  \
    c##i##0 = _mm512_fmadd_ps(av, b0, c##i##0); \
    c##i##1 = _mm512_fmadd_ps(av, b1, c##i##1);
            ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7)
#undef ROW
        }
    __m512 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                         {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
    for (int i = 0; i < MR; i++) {
        __m512 bv = _mm512_set1_ps(bias[i]);
        _mm512_storeu_ps(c + (size_t)i * ldc, act512(_mm512_add_ps(acc[i][0], bv), act, alpha));
        _mm512_storeu_ps(c + (size_t)i * ldc + 16, act512(_mm512_add_ps(acc[i][1], bv), act, alpha));
    }
}

/* out[lo..hi) += wv * src[lo..hi) */
static inline TARGET void axpy512(float *out, const float *src, float wv, int lo, int hi) {
    __m512 w = _mm512_set1_ps(wv);
    int x = lo;
    for (; x + 16 <= hi; x += 16)
        _mm512_storeu_ps(out + x, _mm512_fmadd_ps(w, _mm512_loadu_ps(src + x), _mm512_loadu_ps(out + x)));
    if (x < hi) {
        __mmask16 m = (__mmask16)((1u << (hi - x)) - 1);
        __m512 o = _mm512_maskz_loadu_ps(m, out + x);
        _mm512_mask_storeu_ps(out + x, m, _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m, src + x), o));
    }
}

static TARGET void activate_avx512(float *y, size_t n, int act, float alpha) {
    if (act == ACT_NONE) return;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, act512(_mm512_loadu_ps(y + i), act, alpha));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, act512(_mm512_maskz_loadu_ps(m, y + i), act, alpha));
    }
}

static TARGET void dw_s1_avx512(const float *in, int h, int w, float *out, int oh, int ow, const float *wt, int k,
                                int p, float bias, int act, float alpha) {
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
                if (lo < hi) axpy512(orow, irow - p + kx, wt[ky * k + kx], lo, hi);
            }
        }
        activate_avx512(orow, (size_t)ow, act, alpha);
    }
}

static TARGET void expv_avx512(float *y, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, exp512(_mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, exp512(_mm512_maskz_loadu_ps(m, y + i)));
    }
}

const InferKernels infer_kernels_avx512 = {
    "avx512", MR, NR, gemm_micro_avx512, conv_micro_avx512, dw_s1_avx512, activate_avx512, expv_avx512};
#endif
