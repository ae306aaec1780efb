/* int8 convolution of the inference runtime: u8 activations x s8 weights -> int32 -> fp32.
 *
 * The quantization scheme (the QAT fake-quant nodes simulate exactly this):
 *
 *   weights, per output channel c, symmetric int8 in [-127, 127]:
 *       s_w[c] = max|w_c| / 127        (1 for a channel of zeros)
 *       w_q    = clamp(nearbyintf(w * (1.0f / s_w[c])), -127, 127)
 *   activations (every conv input), per tensor, asymmetric uint8 in [0, 255]:
 *       x_q    = clamp(nearbyintf(x * (1.0f / s_x)) + zp, 0, 255),   zp an integer in [0, 255]
 *       real value of a code: (x_q - zp) * s_x; the conv's zero padding is the code zp.
 *   Rounding is half to even (nearbyintf in the default rounding mode) and the input is
 *   multiplied by the reciprocal scale, both exactly as torch.fake_quantize_per_tensor_affine
 *   and _per_channel_affine (PyTorch 1.13) compute. A NaN input becomes code 255.
 *   conv, per output channel c and pixel:
 *       acc = sum_k w_q[c,k] * (x_q[k] - zp)          exact in int32 (K = cin/g*k*k <= 65536)
 *       y   = (float)acc * scale[c] + bias[c]          scale[c] = s_x * s_w[c] (one fp32 product,
 *                                                      formed at init), a multiply then an add
 *                                                      (never fused), bias fp32
 *       out = act(y)                                   none, ReLU, LeakyReLU(alpha) or SiLU, fp32;
 *                                                      SiLU is y / (1 + qconv_exp(-y)) with the
 *                                                      polynomial exp below (within 2 ulp of expf;
 *                                                      its fused multiply-adds are fmaf, so every
 *                                                      path's FMA instruction gives the same bits)
 *   The output is fp32; the next conv quantizes its own input.
 *
 * Every kernel path (portable C, AVX2, AVX-VNNI, AVX-512 VNNI, NEON, NEON SDOT) computes the
 * same int32 accumulators exactly and the same fp32 epilogue operation by operation, so all
 * paths give bit-identical outputs; the portable C path is the readable reference.
 *
 * Layout. A conv is a GEMM per image and group, out[c][pix] = sum_k W[c][k] col[k][pix], on
 * operands packed in groups of 4 consecutive k, the operand shape of vpdpbusd and sdot. The
 * groups are 4 input channels at one tap, k4 = (ci/4, ky, kx), so the conv's input codes are
 * stored channel-blocked, [n][g][cin_g4/4][h][w][4] with cin_g4 = cin/g rounded up to 4 (the
 * padding channels hold zp and meet zero weights): then the im2col of a 4-group over a run of
 * pixels is a copy of 4-byte words, and a 1x1 stride-1 conv reads its input rows as they are.
 * Weights are packed once at init as panels of MR channels, a[k4][MR][4]; each task packs its
 * block of pixels as panels of NR pixels, b[k4][NR][4]. Depthwise convs keep NCHW codes and run
 * a direct loop.
 */
#ifndef GELAN_INFER_QCONV_H
#define GELAN_INFER_QCONV_H

#include <stddef.h>
#include <stdint.h>

#define QCONV_KMAX 65536 /* cin/g * k * k: keeps every int32 sum exact */

enum { QACT_NONE = 0, QACT_RELU, QACT_LEAKY, QACT_SILU }; /* same values as infer/kernels.h's ACT_* */

/* ---- kernel paths -------------------------------------------------------------------------- */
typedef struct {
    const char *name; /* "c", "avx2", "avxvnni", "avx512vnni", "neon", "neondot" */
    int mr, nr;       /* register tile: MR channels x NR pixels */
    int a_wide;       /* weights packed as int16 instead of int8 (vpmaddwd path) */
    uint8_t flip;     /* packed codes are x_q ^ flip: 0x80 turns them into s8 x_q - 128 */
    /* c[i*NR + j] = sum_{t<4*k4} a[t/4][i][t%4] * b[t/4][j][t%4] for one MR x NR tile, where b
     * is read as u8 (flip 0) or s8 (flip 0x80). */
    void (*micro)(int k4, const void *a, const uint8_t *b, int32_t *c);
    /* out[j] = act((float)(acc[j] + corr) * scale + bias) for j < n (the rule above). */
    void (*epilogue)(const int32_t *acc, int n, int32_t corr, float scale, float bias, int act, float alpha,
                     float *out);
    /* q[i] = x_q of x[i] for i < n (the rule above, inv_scale = 1.0f / s_x). */
    void (*quantize)(const float *x, size_t n, float inv_scale, int zp, uint8_t *q);
    /* The channel-blocked form: byte c of q[i] is (x_q of xc[i]) ^ flip, for 4 planes x0..x3. */
    void (*quantize4)(const float *x0, const float *x1, const float *x2, const float *x3, size_t n, float inv_scale,
                      int zp, uint8_t flip, uint32_t *q);
} QConvKernels;

/* Every path name this library knows, NULL-terminated (not all exist on every build/CPU). */
extern const char *const qconv_kernel_names[];
/* The path in use: GELAN_QCONV_ISA if set and available, else the fastest this CPU has. */
const QConvKernels *qconv_kernels(void);
/* A path by name, or NULL when this build or CPU lacks it (tests compare every path). */
const QConvKernels *qconv_kernels_get(const char *name);
/* Makes `name` the path qconv_kernels() returns (NULL or "" = automatic); -1 if unavailable. */
int qconv_kernels_force(const char *name);

/* ---- one quantized conv layer -------------------------------------------------------------- */
typedef struct {
    int cin, cout, k, s, p, d, g, act;
    float alpha;   /* LeakyReLU slope */
    float x_scale; /* s_x */
    int x_zp;      /* zp */
    const QConvKernels *kern;
    int depthwise; /* cin/g == cout/g == 1: direct loop */
    int kdim;      /* K = cin/g*k*k */
    int cin_g4;    /* cin/g rounded up to a multiple of 4 */
    int k4;        /* 4-groups of k: cin_g4/4 * k*k */
    int mpanels;   /* panels of kern->mr channels per group */
    void *wpack;   /* [g][mpanels][k4][mr][4] int8 (int16 if a_wide), k4 = (ci/4, ky, kx); depthwise:
                    * [cout][k*k] int8 */
    float *scale;  /* [g*mpanels*mr] s_x * s_w[c], zero-padded */
    float *bias;   /* [g*mpanels*mr] */
    int32_t *corr; /* [g*mpanels*mr] -(zp - flip) * sum_k w_q[c,k]: turns the packed product into acc */
} QConv;

/* Packs w_q [cout, cin/g, k, k] (every value in [-127, 127]) with its per-channel scales
 * w_scale [cout], bias [cout] (NULL = 0) and the input's s_x and zp for kern (NULL = the path in
 * use). d is the dilation. -1 with a message on bad arguments or out of memory. */
int qconv_init(QConv *L, const QConvKernels *kern, int cin, int cout, int k, int s, int p, int d, int g, int act,
               float alpha, const int8_t *wq, const float *w_scale, const float *bias, float x_scale, int x_zp);
void qconv_free(QConv *L);
int qconv_out_size(int in, int k, int s, int p, int d); /* <= 0 when the input is too small */

/* Bytes of scratch qconv_forward needs for n images of h x w: the codes (qconv_codes_bytes)
 * plus per-thread packing buffers for pool_threads() threads. */
size_t qconv_scratch_bytes(const QConv *L, int n, int h, int w);
size_t qconv_codes_bytes(const QConv *L, int n, int h, int w);

/* out = act(conv(quantize(in)) * scale + bias). in: n images [cin, h, w], image i at
 * in + i*in_bstride floats; out likewise [cout, oh, ow] at out_bstride (so either can be a
 * channel slice of a larger map). scratch: qconv_scratch_bytes() bytes (64-byte aligned is
 * best, 4 required), or NULL to allocate.
 * -1 with a message if the input is smaller than the kernel or memory runs out. */
int qconv_forward(const QConv *L, const float *in, size_t in_bstride, int n, int h, int w, float *out,
                  size_t out_bstride, void *scratch);
/* The two halves of qconv_forward, for callers that keep the codes: the layer's quantize step
 * into its code layout (channel-blocked, or NCHW when depthwise; qconv_codes_bytes() bytes),
 * then the conv of those codes (scratch: qconv_scratch_bytes() - qconv_codes_bytes() bytes, or
 * NULL). Codes and scratch must be 4-byte aligned (64 is best). */
void qconv_quantize_input(const QConv *L, const float *in, size_t in_bstride, int n, int h, int w, uint8_t *codes);
int qconv_run_codes(const QConv *L, const uint8_t *codes, int n, int h, int w, float *out, size_t out_bstride,
                    void *scratch);

/* ---- quantization ------------------------------------------------------------------------- */
/* The "quantize" step: q = x_q of x (n values, rule above) with kern's vector code (NULL = the
 * path in use), split over the thread pool. */
void qconv_quantize(const QConvKernels *kern, const float *x, size_t n, float x_scale, int zp, uint8_t *q);
/* Weight quantization by the rule above: w [cout][per_channel] -> wq, scale [cout]. */
void qconv_quantize_weights(const float *w, int cout, size_t per_channel, int8_t *wq, float *scale);

/* ---- the scalar arithmetic every path reproduces ----------------------------------------- */
/* e^x from Cephes' expf polynomial on r = x - n ln2 (ln2 split in two), evaluated with fmaf:
 * a fused multiply-add is correctly rounded by definition, so vfmadd/FMLA in a vector version
 * give the same bits (a non-fused a*b+c would too, but costs a third more on the epilogue's
 * critical resource). The input is clamped to [-87.3, 88.3] so that 2^n stays a normal float. */
static inline float qconv_exp(float x) {
    x = x > -87.3f ? x : -87.3f;
    x = x < 88.3f ? x : 88.3f;
    float t = x * 1.44269504088896341f;
    float n = __builtin_nearbyintf(t);
    float r = __builtin_fmaf(n, -0.693359375f, x);
    r = __builtin_fmaf(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = __builtin_fmaf(p, r, 1.3981999507e-3f);
    p = __builtin_fmaf(p, r, 8.3334519073e-3f);
    p = __builtin_fmaf(p, r, 4.1665795894e-2f);
    p = __builtin_fmaf(p, r, 1.6666665459e-1f);
    p = __builtin_fmaf(p, r, 5.0000001201e-1f);
    float r2 = r * r;
    float r1 = r + 1.f;
    p = __builtin_fmaf(p, r2, r1);
    union {
        uint32_t u;
        float f;
    } pow2 = {.u = (uint32_t)((int)n + 127) << 23};
    return p * pow2.f;
}

static inline float qconv_act(float y, int act, float alpha) {
    switch (act) {
        case QACT_RELU:
            return y > 0.f ? y : 0.f;
        case QACT_LEAKY:
            return y > 0.f ? y : y * alpha;
        case QACT_SILU: {
            float e = qconv_exp(-y);
            float den = 1.f + e;
            return y / den;
        }
        default:
            return y;
    }
}

/* The epilogue of one accumulator (acc + corr wraps like the int32 SIMD add; the true sum fits). */
static inline float qconv_epilogue1(int32_t acc, int32_t corr, float scale, float bias, int act, float alpha) {
    int32_t a = (int32_t)((uint32_t)acc + (uint32_t)corr);
    float y = (float)a * scale;
    y = y + bias;
    return qconv_act(y, act, alpha);
}

static inline uint8_t qconv_quantize1(float x, float inv_scale, int zp) {
    float v = x * inv_scale;
    v = __builtin_nearbyintf(v);
    v = v + (float)zp;
    v = v < 255.f ? v : 255.f; /* NaN -> 255, as minps(v, 255) */
    v = v > 0.f ? v : 0.f;
    return (uint8_t)(int)v;
}

#endif
