/* int8 convolution: the portable C path, path selection, weight packing, the quantize step into
 * the channel-blocked code layout, the im2col packing and the threaded GEMM driver (the SIMD
 * kernels live in qconv_x86.c and qconv_neon.c).
 *
 * Each task is (image, group, pixel block, channel chunk). It packs the im2col of its pixel
 * block over the whole K (a block is sized to stay in L2, so there is no K blocking and no
 * int32 partial sum goes to memory) and sweeps the weight panels of its channels over it;
 * every MR x NR tile goes through the micro-kernel into a small int32 tile, then through the
 * epilogue into the fp32 output. Channel chunks exist only to give every thread work when a
 * map has few pixels. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* GCC never contracts under -std=c11 */
#endif
#include "infer/qconv.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "infer/ops.h"
#include "tensor/error.h"
#include "tensor/pool.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#define B_BUDGET (160 * 1024) /* bytes of packed codes per task: one pixel block over all of K */
#define NC_MAX 512            /* pixels per block at most */
#define MR_MAX 16
#define NR_MAX 64

/* ---- the portable C path: the readable reference ------------------------------------------ */
#define C_MR 4
#define C_NR 8

static void micro_c(int k4, const void *a_, const uint8_t *b, int32_t *c) {
    const int8_t *a = a_;
    int32_t acc[C_MR][C_NR] = {{0}};
    for (int t = 0; t < k4; t++, a += C_MR * 4, b += C_NR * 4)
        for (int i = 0; i < C_MR; i++)
            for (int j = 0; j < C_NR; j++)
                for (int q = 0; q < 4; q++) acc[i][j] += a[i * 4 + q] * b[j * 4 + q];
    memcpy(c, acc, sizeof acc);
}

static void epilogue_c(const int32_t *acc, int n, int32_t corr, float scale, float bias, int act, float alpha,
                       float *out) {
    for (int j = 0; j < n; j++) out[j] = qconv_epilogue1(acc[j], corr, scale, bias, act, alpha);
}

static void quantize_c(const float *x, size_t n, float inv_scale, int zp, uint8_t *q) {
    for (size_t i = 0; i < n; i++) q[i] = qconv_quantize1(x[i], inv_scale, zp);
}

static void quantize4_c(const float *x0, const float *x1, const float *x2, const float *x3, size_t n, float inv_scale,
                        int zp, uint8_t flip, uint32_t *q) {
    uint32_t flip4 = flip * 0x01010101u;
    for (size_t i = 0; i < n; i++) /* byte c of the little-endian word is channel c */
        q[i] = ((uint32_t)qconv_quantize1(x0[i], inv_scale, zp) | (uint32_t)qconv_quantize1(x1[i], inv_scale, zp) << 8 |
                (uint32_t)qconv_quantize1(x2[i], inv_scale, zp) << 16 |
                (uint32_t)qconv_quantize1(x3[i], inv_scale, zp) << 24) ^
               flip4;
}

static const QConvKernels qconv_kernels_c = {"c", C_MR, C_NR, 0, 0, micro_c, epilogue_c, quantize_c, quantize4_c};

/* ---- path selection ----------------------------------------------------------------------- */
#if defined(__x86_64__)
extern const QConvKernels qconv_kernels_avx2, qconv_kernels_avxvnni, qconv_kernels_avx512vnni;
/* CPUID.(7,1):EAX bit 4; asked directly because not every compiler's __builtin_cpu_supports
 * knows "avxvnni" (the OS side, YMM state, is what the avx2 check already covers) */
static int cpu_has_avxvnni(void) {
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 4 & 1);
}
#endif
#if defined(__aarch64__)
extern const QConvKernels qconv_kernels_neon, qconv_kernels_neondot;
int qconv_cpu_has_dotprod(void);
#endif

const char *const qconv_kernel_names[] = {"c", "avx2", "avxvnni", "avx512vnni", "neon", "neondot", NULL};

const QConvKernels *qconv_kernels_get(const char *name) {
    if (!name) return NULL;
    if (!strcmp(name, "c")) return &qconv_kernels_c;
#if defined(__x86_64__)
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!strcmp(name, "avx2") && avx2) return &qconv_kernels_avx2;
    if (!strcmp(name, "avxvnni") && avx2 && cpu_has_avxvnni()) return &qconv_kernels_avxvnni;
    if (!strcmp(name, "avx512vnni") && avx2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni"))
        return &qconv_kernels_avx512vnni;
#endif
#if defined(__aarch64__)
    if (!strcmp(name, "neon")) return &qconv_kernels_neon;
    if (!strcmp(name, "neondot") && qconv_cpu_has_dotprod()) return &qconv_kernels_neondot;
#endif
    return NULL;
}

static const QConvKernels *qconv_best(void) {
    static const char *const order[] = {"avx512vnni", "avxvnni", "avx2", "neondot", "neon"};
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        const QConvKernels *k = qconv_kernels_get(order[i]);
        if (k) return k;
    }
    return &qconv_kernels_c;
}

static const QConvKernels *_Atomic qconv_active;

const QConvKernels *qconv_kernels(void) {
    const QConvKernels *k = atomic_load(&qconv_active);
    if (!k) {
        const char *env = getenv("GELAN_QCONV_ISA");
        k = env && *env ? qconv_kernels_get(env) : NULL;
        if (!k) k = qconv_best();
        atomic_store(&qconv_active, k);
    }
    return k;
}

int qconv_kernels_force(const char *name) {
    if (!name || !*name) {
        atomic_store(&qconv_active, NULL);
        qconv_kernels();
        return 0;
    }
    const QConvKernels *k = qconv_kernels_get(name);
    if (!k)
        return gelan_error(
            "qconv: kernel path '%s' is not available on this build/CPU "
            "(c, avx2, avxvnni, avx512vnni, neon, neondot)",
            name);
    atomic_store(&qconv_active, k);
    return 0;
}

/* ---- quantization ------------------------------------------------------------------------- */
void qconv_quantize_weights(const float *w, int cout, size_t per_channel, int8_t *wq, float *scale) {
    for (int c = 0; c < cout; c++) {
        const float *wc = w + (size_t)c * per_channel;
        float m = 0.f;
        for (size_t i = 0; i < per_channel; i++) m = fabsf(wc[i]) > m ? fabsf(wc[i]) : m;
        float s = m > 0.f ? m / 127.f : 1.f;
        float inv = 1.f / s;
        for (size_t i = 0; i < per_channel; i++) {
            float v = nearbyintf(wc[i] * inv);
            v = v < 127.f ? v : 127.f;
            v = v > -127.f ? v : -127.f;
            wq[(size_t)c * per_channel + i] = (int8_t)v;
        }
        scale[c] = s;
    }
}

/* The quantize step over the thread pool. A task is a chunk of one plane (NCHW codes) or of
 * one block of 4 channels (channel-blocked codes). */
typedef struct {
    const QConvKernels *kern;
    const float *x;
    size_t x_bstride;
    int c, g, blocks_per_group, blocked; /* channels, groups, 4-channel blocks per group, layout */
    size_t hw, chunk, chunks;            /* chunks per plane or block */
    float inv_scale;
    int zp;
    uint8_t *q;
} QuantJob;

static void quantize_worker(void *ctx, size_t begin, size_t end) {
    const QuantJob *J = ctx;
    const QConvKernels *K = J->kern;
    for (size_t t = begin; t < end; t++) {
        size_t plane = t / J->chunks, i0 = t % J->chunks * J->chunk; /* plane: (image, channel or block) */
        size_t cnt = J->hw - i0 < J->chunk ? J->hw - i0 : J->chunk;
        if (!J->blocked) {
            size_t img = plane / J->c, ch = plane % J->c;
            K->quantize(J->x + img * J->x_bstride + ch * J->hw + i0, cnt, J->inv_scale, J->zp,
                        J->q + plane * J->hw + i0);
            continue;
        }
        int nblocks = J->g * J->blocks_per_group, cin_g = J->c / J->g;
        size_t img = plane / nblocks;
        int gi = (int)(plane % nblocks) / J->blocks_per_group, cb = (int)(plane % nblocks) % J->blocks_per_group;
        const float *x = J->x + img * J->x_bstride + i0;
        const float *src[4];
        int real = 4;
        for (int q = 0; q < 4; q++) {
            int ci = cb * 4 + q;
            if (ci >= cin_g && real == 4) real = q;
            src[q] = x + (size_t)(gi * cin_g + (ci < cin_g ? ci : 0)) * J->hw;
        }
        uint32_t *dst = (uint32_t *)(void *)J->q + plane * J->hw + i0;
        if (real == 4) {
            K->quantize4(src[0], src[1], src[2], src[3], cnt, J->inv_scale, J->zp, K->flip, dst);
            continue;
        }
        for (size_t i = 0; i < cnt; i++) { /* the last block of a group whose channels are not a multiple of 4 */
            uint32_t word = 0;
            for (int q = 0; q < 4; q++) {
                uint8_t code = q < real ? qconv_quantize1(src[q][i], J->inv_scale, J->zp) : (uint8_t)J->zp;
                word |= (uint32_t)(code ^ K->flip) << 8 * q;
            }
            dst[i] = word;
        }
    }
}

static void quantize_run(QuantJob *J, size_t planes) {
    J->chunk = 16384;
    J->chunks = (J->hw + J->chunk - 1) / J->chunk;
    parallel_for(planes * J->chunks, 1, quantize_worker, J);
}

void qconv_quantize(const QConvKernels *kern, const float *x, size_t n, float x_scale, int zp, uint8_t *q) {
    QuantJob J = {.kern = kern ? kern : qconv_kernels(),
                  .x = x,
                  .c = 1,
                  .g = 1,
                  .hw = n,
                  .inv_scale = 1.f / x_scale,
                  .zp = zp,
                  .q = q};
    quantize_run(&J, 1);
}

void qconv_quantize_input(const QConv *L, const float *in, size_t in_bstride, int n, int h, int w, uint8_t *codes) {
    QuantJob J = {.kern = L->kern,
                  .x = in,
                  .x_bstride = in_bstride,
                  .c = L->cin,
                  .g = L->g,
                  .blocks_per_group = L->cin_g4 / 4,
                  .blocked = !L->depthwise,
                  .hw = (size_t)h * w,
                  .inv_scale = 1.f / L->x_scale,
                  .zp = L->x_zp,
                  .q = codes};
    quantize_run(&J, (size_t)n * (L->depthwise ? L->cin : L->g * J.blocks_per_group));
}

/* ---- the layer ---------------------------------------------------------------------------- */
int qconv_out_size(int in, int k, int s, int p, int d) {
    if (s <= 0) return 0;
    int span = d * (k - 1) + 1;
    if (in + 2 * p < span) return 0;
    return (in + 2 * p - span) / s + 1;
}

int qconv_init(QConv *L, const QConvKernels *kern, int cin, int cout, int k, int s, int p, int d, int g, int act,
               float alpha, const int8_t *wq, const float *w_scale, const float *bias, float x_scale, int x_zp) {
    memset(L, 0, sizeof *L);
    if (!kern) kern = qconv_kernels();
    if (cin <= 0 || cout <= 0 || k <= 0 || s <= 0 || p < 0 || d <= 0 || g <= 0 || cin % g || cout % g)
        return gelan_error("qconv: bad geometry cin=%d cout=%d k=%d s=%d p=%d d=%d g=%d", cin, cout, k, s, p, d, g);
    if ((long)(cin / g) * k * k > QCONV_KMAX)
        return gelan_error("qconv: K = cin/g*k*k = %ld exceeds %d (int32 sums would overflow)", (long)(cin / g) * k * k,
                           QCONV_KMAX);
    if (!(x_scale > 0.f) || !isfinite(x_scale) || x_zp < 0 || x_zp > 255)
        return gelan_error("qconv: bad input quantization scale=%g zero_point=%d (want scale > 0, zp in [0,255])",
                           (double)x_scale, x_zp);
    if (act < QACT_NONE || act > QACT_SILU) return gelan_error("qconv: unknown activation %d", act);
    int cin_g = cin / g, cout_g = cout / g, kk = k * k;
    size_t nw = (size_t)cout * cin_g * kk;
    for (size_t i = 0; i < nw; i++)
        if (wq[i] == -128)
            return gelan_error("qconv: weight %zu of [%d,%d,%d,%d] is -128; int8 weights must be in [-127, 127]", i,
                               cout, cin_g, k, k);
    for (int c = 0; c < cout; c++)
        if (!(w_scale[c] > 0.f) || !isfinite(w_scale[c]))
            return gelan_error("qconv: weight scale of channel %d is %g (want > 0)", c, (double)w_scale[c]);
    *L = (QConv){.cin = cin,
                 .cout = cout,
                 .k = k,
                 .s = s,
                 .p = p,
                 .d = d,
                 .g = g,
                 .act = act,
                 .alpha = alpha,
                 .x_scale = x_scale,
                 .x_zp = x_zp,
                 .kern = kern};
    L->kdim = cin_g * kk;
    L->cin_g4 = (cin_g + 3) / 4 * 4;
    L->k4 = L->cin_g4 / 4 * kk;
    L->depthwise = cin_g == 1 && cout_g == 1;
    int mr = L->depthwise ? 1 : kern->mr;
    L->mpanels = (cout_g + mr - 1) / mr;
    size_t nchan = (size_t)g * L->mpanels * mr;
    size_t esize = kern->a_wide ? 2 : 1;
    size_t wbytes = L->depthwise ? nw : nchan * L->k4 * 4 * esize;
    L->wpack = calloc(wbytes, 1);
    L->scale = calloc(nchan, sizeof(float));
    L->bias = calloc(nchan, sizeof(float));
    L->corr = calloc(nchan, sizeof(int32_t));
    if (!L->wpack || !L->scale || !L->bias || !L->corr) {
        qconv_free(L);
        return gelan_error("qconv: out of memory packing weights [%d,%d,%d,%d]", cout, cin_g, k, k);
    }
    /* the depthwise loop subtracts zp itself; the GEMM kernels see codes ^ flip */
    int zp_eff = L->depthwise ? 0 : x_zp - (kern->flip ? 128 : 0);
    for (int c = 0; c < cout; c++) {
        int gi = c / cout_g, co = c % cout_g;
        size_t slot = (size_t)gi * L->mpanels * mr + co; /* panel co/mr, row co%mr */
        const int8_t *src = wq + (size_t)c * L->kdim;
        int32_t sum = 0;
        for (int t = 0; t < L->kdim; t++) sum += src[t];
        L->scale[slot] = x_scale * w_scale[c];
        L->bias[slot] = bias ? bias[c] : 0.f;
        L->corr[slot] = -zp_eff * sum;
        if (L->depthwise) {
            memcpy((int8_t *)L->wpack + (size_t)c * kk, src, (size_t)kk);
            continue;
        }
        size_t panel = ((size_t)gi * L->mpanels + co / mr) * L->k4 * mr * 4;
        for (int ci = 0; ci < cin_g; ci++)
            for (int tap = 0; tap < kk; tap++) {
                size_t t4 = (size_t)(ci / 4) * kk + tap; /* the 4-group: channel block, tap */
                size_t at = panel + (t4 * mr + co % mr) * 4 + ci % 4;
                if (kern->a_wide)
                    ((int16_t *)L->wpack)[at] = src[ci * kk + tap];
                else
                    ((int8_t *)L->wpack)[at] = src[ci * kk + tap];
            }
    }
    return 0;
}

void qconv_free(QConv *L) {
    free(L->wpack);
    free(L->scale);
    free(L->bias);
    free(L->corr);
    L->wpack = NULL;
    L->scale = L->bias = NULL;
    L->corr = NULL;
}

/* pixels per task block: a multiple of NR whose packed codes fit B_BUDGET (at least NR) */
static int block_pixels(const QConv *L) {
    int nr = L->kern->nr;
    size_t fit = B_BUDGET / ((size_t)L->k4 * 4);
    int nc = (int)(fit < NC_MAX ? fit : NC_MAX) / nr * nr;
    return nc < nr ? nr : nc;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static size_t pack_bytes(const QConv *L) { return L->depthwise ? 0 : align64((size_t)block_pixels(L) * L->k4 * 4); }

size_t qconv_codes_bytes(const QConv *L, int n, int h, int w) {
    size_t channels = L->depthwise ? (size_t)L->cin : (size_t)L->g * L->cin_g4;
    return align64((size_t)n * channels * h * w);
}

size_t qconv_scratch_bytes(const QConv *L, int n, int h, int w) {
    return qconv_codes_bytes(L, n, h, w) + (size_t)pool_threads() * pack_bytes(L);
}

/* ---- im2col of channel-blocked codes ---------------------------------------------------- */
typedef struct {
    int h, w, oh, ow, k, s, p, d;
} Geom;

/* The NR-pixel panel starting at pixel pix0 (cnt valid) crosses a few output rows; each
 * "segment" is a run of pixels on one output row. */
typedef struct {
    int oy, ox, len;
} Seg;

static int panel_segments(const Geom *g, int pix0, int cnt, Seg *seg) {
    int nseg = 0;
    for (int off = 0, pix = pix0; off < cnt; nseg++) {
        int oy = pix / g->ow, ox = pix % g->ow;
        int len = g->ow - ox < cnt - off ? g->ow - ox : cnt - off;
        seg[nseg] = (Seg){oy, ox, len};
        pix += len, off += len;
    }
    return nseg;
}

static inline void fill_words(uint32_t *dst, int n, uint32_t v) {
    for (int i = 0; i < n; i++) dst[i] = v;
}

/* One packed row: the words of one 4-channel block at tap (ky, kx) for the panel's pixels;
 * taps in the padding get the pad word. */
static void col_row(const Geom *g, const uint32_t *plane, int ky, int kx, const Seg *seg, int nseg, uint32_t pad,
                    uint32_t *dst) {
    for (int si = 0; si < nseg; si++) {
        int len = seg[si].len;
        int iy = seg[si].oy * g->s - g->p + ky * g->d;
        int ix0 = seg[si].ox * g->s - g->p + kx * g->d;
        if (iy < 0 || iy >= g->h) {
            fill_words(dst, len, pad);
        } else if (g->s == 1) {
            const uint32_t *src = plane + (size_t)iy * g->w + ix0;
            int lo = ix0 < 0 ? -ix0 : 0; /* [lo, hi) of the run lies inside the row */
            int hi = g->w - ix0 < len ? g->w - ix0 : len;
            if (lo > len) lo = len; /* padding wider than the run */
            if (hi < lo) hi = lo;
            fill_words(dst, lo, pad);
            memcpy(dst + lo, src + lo, sizeof(uint32_t) * (hi - lo));
            fill_words(dst + hi, len - hi, pad);
        } else {
            const uint32_t *row = plane + (size_t)iy * g->w;
            for (int q = 0; q < len; q++) {
                int ix = ix0 + q * g->s;
                dst[q] = (unsigned)ix < (unsigned)g->w ? row[ix] : pad;
            }
        }
        dst += len;
    }
}

/* Packs the im2col of pixels [n0, n0+ncols) over all K into panels b[panel][k4][nr] of words
 * (the codes of one group, [cin_g4/4][h][w] words). Pixels past ncols get the pad word (their
 * results are discarded). */
static void pack_b(const Geom *g, const QConv *L, const uint32_t *codes, int n0, int ncols, uint32_t *bp) {
    int nr = L->kern->nr, kk = g->k * g->k;
    uint32_t pad = (uint32_t)(L->x_zp ^ L->kern->flip) * 0x01010101u;
    size_t hw = (size_t)g->h * g->w;
    int pointwise = g->k == 1 && g->s == 1 && g->p == 0;
    Seg seg[NR_MAX];
    for (int j0 = 0; j0 < ncols; j0 += nr) {
        uint32_t *dst = bp + (size_t)(j0 / nr) * L->k4 * nr;
        int cnt = ncols - j0 < nr ? ncols - j0 : nr;
        int nseg = pointwise ? 0 : panel_segments(g, n0 + j0, cnt, seg);
        for (int t4 = 0; t4 < L->k4; t4++, dst += nr) {
            if (pointwise)
                memcpy(dst, codes + t4 * hw + n0 + j0, sizeof(uint32_t) * cnt); /* the input row as it is */
            else
                col_row(g, codes + (size_t)(t4 / kk) * hw, t4 % kk / g->k, t4 % g->k, seg, nseg, pad, dst);
            fill_words(dst + cnt, nr - cnt, pad);
        }
    }
}

/* ---- the GEMM driver ---------------------------------------------------------------------- */
typedef struct {
    const QConv *L;
    const uint8_t *codes;
    float *out;
    size_t out_bstride;
    Geom geom;
    int npix, nc, nblocks, mchunks, panels_per_chunk;
    size_t ntasks;
    uint8_t *pack;
    size_t pack_per_slot;
} QJob;

static void gemm_task(void *ctx, size_t task, size_t slot) {
    QJob *J = ctx;
    uint8_t *bp = J->pack + slot * J->pack_per_slot;
    const QConv *L = J->L;
    const QConvKernels *K = L->kern;
    int mr = K->mr, nr = K->nr;
    ConvTask ct = conv_task_decode(task, J->mchunks, J->nblocks, L->g);
    int mchunk = ct.mchunk, nb = ct.block, gi = ct.group, img = ct.img;
    int cout_g = L->cout / L->g;
    size_t hw = (size_t)J->geom.h * J->geom.w;
    const uint32_t *codes = (const uint32_t *)(const void *)J->codes + ((size_t)img * L->g + gi) * (L->cin_g4 / 4) * hw;
    float *out = J->out + img * J->out_bstride + (size_t)gi * cout_g * J->npix;
    size_t esize = K->a_wide ? 2 : 1;
    size_t panel_bytes = (size_t)L->k4 * mr * 4 * esize;
    const uint8_t *wg = (const uint8_t *)L->wpack + (size_t)gi * L->mpanels * panel_bytes;
    size_t ch0 = (size_t)gi * L->mpanels * mr;
    int n0 = nb * J->nc;
    int ncols = J->npix - n0 < J->nc ? J->npix - n0 : J->nc;
    int mp0 = mchunk * J->panels_per_chunk;
    int mp1 = mp0 + J->panels_per_chunk < L->mpanels ? mp0 + J->panels_per_chunk : L->mpanels;
    pack_b(&J->geom, L, codes, n0, ncols, (uint32_t *)(void *)bp);
    _Alignas(64) int32_t tile[MR_MAX * NR_MAX];
    for (int mp = mp0; mp < mp1; mp++) {
        const void *a = wg + (size_t)mp * panel_bytes;
        int mvalid = cout_g - mp * mr < mr ? cout_g - mp * mr : mr;
        for (int j0 = 0; j0 < ncols; j0 += nr) {
            int nvalid = ncols - j0 < nr ? ncols - j0 : nr;
            K->micro(L->k4, a, bp + (size_t)(j0 / nr) * L->k4 * nr * 4, tile);
            for (int i = 0; i < mvalid; i++) {
                size_t c = ch0 + (size_t)mp * mr + i;
                K->epilogue(tile + i * nr, nvalid, L->corr[c], L->scale[c], L->bias[c], L->act, L->alpha,
                            out + (size_t)(mp * mr + i) * J->npix + n0 + j0);
            }
        }
    }
}

/* Depthwise: one task per (image, channel) on NCHW codes; acc = sum w (x - zp) over the taps
 * inside the input (padding taps are zp and add nothing). */
typedef struct {
    const QConv *L;
    const uint8_t *codes;
    float *out;
    size_t out_bstride;
    int h, w, oh, ow;
} DwJob;

static void dw_worker(void *ctx, size_t begin, size_t end) {
    const DwJob *J = ctx;
    const QConv *L = J->L;
    int k = L->k, zp = L->x_zp;
    int32_t acc[256];
    for (size_t t = begin; t < end; t++) {
        int img = (int)(t / L->cout), c = (int)(t % L->cout);
        const uint8_t *in = J->codes + ((size_t)img * L->cin + c) * J->h * J->w;
        const int8_t *wt = (const int8_t *)L->wpack + (size_t)c * k * k;
        float *out = J->out + img * J->out_bstride + (size_t)c * J->oh * J->ow;
        for (int oy = 0; oy < J->oh; oy++)
            for (int ox0 = 0; ox0 < J->ow; ox0 += 256) {
                int n = J->ow - ox0 < 256 ? J->ow - ox0 : 256;
                for (int j = 0; j < n; j++) {
                    int32_t a = 0;
                    for (int ky = 0; ky < k; ky++) {
                        int iy = oy * L->s - L->p + ky * L->d;
                        if (iy < 0 || iy >= J->h) continue;
                        for (int kx = 0; kx < k; kx++) {
                            int ix = (ox0 + j) * L->s - L->p + kx * L->d;
                            if (ix >= 0 && ix < J->w) a += wt[ky * k + kx] * (in[(size_t)iy * J->w + ix] - zp);
                        }
                    }
                    acc[j] = a;
                }
                L->kern->epilogue(acc, n, 0, L->scale[c], L->bias[c], L->act, L->alpha, out + (size_t)oy * J->ow + ox0);
            }
    }
}

int qconv_run_codes(const QConv *L, const uint8_t *codes, int n, int h, int w, float *out, size_t out_bstride,
                    void *scratch) {
    int oh = qconv_out_size(h, L->k, L->s, L->p, L->d), ow = qconv_out_size(w, L->k, L->s, L->p, L->d);
    if (oh <= 0 || ow <= 0)
        return gelan_error("qconv: input %dx%d is smaller than the kernel (k=%d s=%d p=%d d=%d)", h, w, L->k, L->s,
                           L->p, L->d);
    if (n <= 0) return 0;
    if (L->depthwise) {
        DwJob J = {L, codes, out, out_bstride, h, w, oh, ow};
        parallel_for((size_t)n * L->cout, 1, dw_worker, &J);
        return 0;
    }
    int threads = pool_threads();
    void *owned = NULL;
    if (!scratch) {
        scratch = owned = aligned_alloc(64, (size_t)threads * pack_bytes(L));
        if (!owned) return gelan_error("qconv: out of memory for %d packing buffers", threads);
    }
    int nr = L->kern->nr, npix = oh * ow, ncmax = block_pixels(L);
    /* pixel blocks of equal size, a multiple of nr */
    int nblocks = (npix + ncmax - 1) / ncmax;
    int nc = ((npix + nblocks - 1) / nblocks + nr - 1) / nr * nr;
    nblocks = (npix + nc - 1) / nc;
    /* enough tasks for the threads to balance: split channels when pixels are few */
    size_t base = (size_t)n * L->g * nblocks;
    int mchunks = 1;
    if (threads > 1 && base < (size_t)4 * threads) {
        mchunks = (int)((4 * (size_t)threads + base - 1) / base);
        if (mchunks > L->mpanels) mchunks = L->mpanels;
    }
    int ppc = (L->mpanels + mchunks - 1) / mchunks;
    mchunks = (L->mpanels + ppc - 1) / ppc;
    QJob J = {.L = L,
              .codes = codes,
              .out = out,
              .out_bstride = out_bstride,
              .geom = {h, w, oh, ow, L->k, L->s, L->p, L->d},
              .npix = npix,
              .nc = nc,
              .nblocks = nblocks,
              .mchunks = mchunks,
              .panels_per_chunk = ppc,
              .ntasks = base * mchunks,
              .pack = scratch,
              .pack_per_slot = pack_bytes(L)};
    size_t slots = (size_t)threads < J.ntasks ? (size_t)threads : J.ntasks;
    parallel_tasks(J.ntasks, slots, gemm_task, &J);
    free(owned);
    return 0;
}

int qconv_forward(const QConv *L, const float *in, size_t in_bstride, int n, int h, int w, float *out,
                  size_t out_bstride, void *scratch) {
    void *owned = NULL;
    if (!scratch) {
        scratch = owned = aligned_alloc(64, qconv_scratch_bytes(L, n, h, w));
        if (!owned) return gelan_error("qconv: out of memory for the codes of %d x [%d,%d,%d]", n, L->cin, h, w);
    }
    uint8_t *codes = scratch;
    qconv_quantize_input(L, in, in_bstride, n, h, w, codes);
    int rc = qconv_run_codes(L, codes, n, h, w, out, out_bstride, codes + qconv_codes_bytes(L, n, h, w));
    free(owned);
    return rc;
}
