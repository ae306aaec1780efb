/* exp and sigmoid that the compiler can vectorise: branch-free, no libm call.
 *
 * gelan_expf is the Cephes single-precision algorithm: x = n ln2 + r with
 * |r| <= ln2/2 (ln2 split in two parts so n ln2 is exact), a degree-6
 * polynomial for e^r, and 2^n applied as two powers of two built in the
 * exponent bits (so results down in the subnormal range, and the underflow to
 * 0, round as they should). Relative error about 2 ulp for normal results;
 * x is clamped to [-104, 88.3] (e^-104 rounds to 0; above 88.3 the result
 * saturates at about 2.2e38 instead of inf). The loops of SiLU and
 * sigmoid over millions of elements turn into SIMD code with it; libm's expf
 * is a scalar call per element. */
#ifndef GELAN_FASTMATH_H
#define GELAN_FASTMATH_H

#include <stdint.h>
#include <string.h>

static inline float gelan_expf(float x) {
    x = x < -104.0f ? -104.0f : x > 88.3f ? 88.3f : x;
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;  /* ln2, high part (exact product) */
    r = r + n * 2.12194440e-4f;      /* ln2, low part */
    float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    int32_t ni = (int32_t)n, n1 = ni / 2, n2 = ni - n1; /* each in [-75, 64] */
    int32_t b1 = (n1 + 127) << 23, b2 = (n2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return p * s1 * s2;
}

/* 1/(1 + e^-x), with e^-|x| only (never large): for x < 0 it is e/(1+e), so
 * far negative inputs give their tiny value (or 0) instead of 1/huge. */
static inline float gelan_sigmoidf(float x) {
    float e = gelan_expf(-__builtin_fabsf(x));
    float r = 1.0f / (1.0f + e);
    return x >= 0 ? r : e * r;
}

#endif
