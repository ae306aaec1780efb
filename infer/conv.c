/* Convolution as a GEMM on packed panels (the way BLAS libraries block it).
 *
 * Per image and group, out[co][pix] = sum_k W[co][k] * col[k][pix] with
 * k = (ci, ky, kx) and col the im2col of the input. W is packed once at load
 * into panels of MR output channels; col is never materialised whole: each
 * task packs a KC x NC block of it (NC output pixels, KC rows of k) into
 * panels of NR pixels, which then stays in L2 while every weight panel
 * sweeps over it. A K block is small enough that one weight panel (KC x MR)
 * stays in L1 while it meets all pixel panels of the block. The last K block
 * applies bias and activation in registers before the single store.
 *
 * Tasks are (image, group, pixel block, channel chunk); threads take them
 * from an atomic counter. Channel chunks exist only to give every thread
 * work when a map has few pixels (the P5 level).
 *
 * 3x3 stride-1 convs with 16+ channels go to Winograd (winograd.c). The other
 * k > 1 convs (stride 2, the head's grouped convs, the stem) skip im2col: see
 * "direct convolution" below. */
#include <stdlib.h>
#include <string.h>

#include "infer/ops.h"
#include "tensor/error.h"
#include "tensor/pool.h"

/* Block sizes of the GEMM (measured with bench/conv_algo_bench.c and whole models): a
 * B block of 256 x 128 floats (128 KB) leaves room in L2 for the weight panels that
 * stream past it even when a busy neighbour shares the core's caches (384 x 256 was as
 * fast on a quiet core, 7-10% slower on a shared one), and small maps get more tasks to
 * balance (gelan-c's stride-2 convs at 40x40 and 20x20: -20%, two threads). */
#define KC_MAX 256 /* K rows per block */
#define NC_MAX 128 /* output pixels per block (rounded down to a multiple of NR) */
#define DIRECT_KMAX 7 /* largest kernel of the direct convolution (its tap table) */
/* Winograd does 2.25x (F(2x2)) or 4x (F(4x4)) fewer multiplies than a direct 3x3
 * conv, but its transforms cost more than that saves when the conv has few channels,
 * and on small maps its tiles (and the NR-wide GEMM panels of tiles) are mostly
 * padding: a 10x10 map has 9 F(4x4) tiles (bench/conv_algo_bench.c; docs/BENCHMARKS.md).
 * Every conv therefore keeps its plain packing (for the direct convolution, as the
 * fallback, and as the source of Winograd's weights, made on first use), and
 * conv_run picks per call. */
static int direct_beats_winograd(const ConvLayer *L, const Map *in) {
    long cc = (long)L->cin * L->cout, hw = (long)in->h * in->w;
    return cc <= 512 || (cc <= 1024 && hw <= 80 * 80) || (cc <= 2304 && hw <= 40 * 40) ||
           (cc <= 4096 && hw <= 20 * 20) || (hw <= 12 * 12 && pool_threads() > 1);
}
#define BAND_FLOATS 65536 /* per-thread input band of the direct convolution (256 KB, in L2) */

int conv_out_size(int in, int k, int s, int p, int d) {
    if (s <= 0) return 0;
    int span = d * (k - 1) + 1;
    if (in + 2 * p < span) return 0;
    return (in + 2 * p - span) / s + 1;
}

static int winograd_mode = -1; /* -1: not decided yet (environment) */

void conv_set_winograd(int mode) { winograd_mode = mode == 2 || mode == 4 ? mode : mode != 0; }

static int winograd_enabled(void) {
    if (winograd_mode < 0) {
        const char *env = getenv("GELAN_INFER_WINOGRAD");
        winograd_mode = 1;
        if (env && (!strcmp(env, "0") || !strcmp(env, "2") || !strcmp(env, "4"))) winograd_mode = atoi(env);
    }
    return winograd_mode;
}

/* Winograd's output tile for a call: F(4x4,3x3) on big maps, where its 1.78x fewer
 * multiplies than F(2x2) win (7-19% on 40x40 and bigger maps with 128+ channels, 80x80
 * with 64+, one and two threads); F(2x2,3x3) on smaller ones, where F(4x4)'s 4x4 tiles
 * and its 4x larger transformed weights cost more than that (docs/BENCHMARKS.md,
 * bench/conv_algo_bench.c). F(2x2) also has one decimal digit more precision. */
static int winograd_tile(const ConvLayer *L, const Map *out) {
    int mode = winograd_enabled();
    if (mode == 2 || mode == 4) return mode;
    long cc = (long)L->cin * L->cout, hw = (long)out->h * out->w;
    return (hw >= 40 * 40 && cc >= 128 * 128) || (hw >= 80 * 80 && cc >= 64 * 64) ? 4 : 2;
}

static int direct_mode = -1; /* -1: not decided yet (environment) */

void conv_set_direct(int mode) { direct_mode = mode < 0 ? 0 : mode > 2 ? 2 : mode; }

static int direct_enabled(void) {
    if (direct_mode < 0) {
        const char *env = getenv("GELAN_INFER_DIRECT");
        direct_mode = env && !strcmp(env, "0") ? 0 : env && !strcmp(env, "2") ? 2 : 1;
    }
    return direct_mode;
}

int conv_init(ConvLayer *L, const InferKernels *kern, int cin, int cout, int k, int s, int p, int d, int g, int act,
              float alpha, const float *w, const float *b) {
    memset(L, 0, sizeof *L);
    if (cin <= 0 || cout <= 0 || k <= 0 || s <= 0 || p < 0 || d <= 0 || g <= 0 || cin % g || cout % g)
        return gelan_error("conv: bad geometry cin=%d cout=%d k=%d s=%d p=%d d=%d g=%d", cin, cout, k, s, p, d, g);
    *L = (ConvLayer){
        .cin = cin, .cout = cout, .k = k, .s = s, .p = p, .d = d, .g = g, .act = act, .alpha = alpha, .kern = kern};
    int cin_g = cin / g, cout_g = cout / g, kk = k * k;
    L->kdim = cin_g * kk;
    L->depthwise = cin_g == 1 && cout_g == 1;
    if (L->depthwise) {
        L->wpack = malloc(sizeof(float) * (size_t)cout * kk);
        L->bias = calloc((size_t)cout, sizeof(float));
        if (!L->wpack || !L->bias) goto oom;
        memcpy(L->wpack, w, sizeof(float) * (size_t)cout * kk);
        if (b) memcpy(L->bias, b, sizeof(float) * (size_t)cout);
        return 0;
    }
    int mr = kern->mr;
    L->mpanels = (cout_g + mr - 1) / mr;
    /* k > 1: when the input band fits (conv_run); 1x1: the GEMM reads the input in place */
    L->direct = direct_enabled() && ((k > 1 && k <= DIRECT_KMAX && d == 1 && s <= 2) || (k == 1 && s == 1 && p == 0));
    L->bias = calloc((size_t)g * L->mpanels * mr, sizeof(float));
    if (!L->bias) goto oom;
    for (int co = 0; b && co < cout; co++) L->bias[(size_t)(co / cout_g) * L->mpanels * mr + co % cout_g] = b[co];
    /* Winograd's weights come later, from these panels (conv_run) */
    L->winograd = winograd_enabled() && winograd_applies(cin, cout, k, s, d, g);
    size_t per_group = (size_t)L->mpanels * L->kdim * mr;
    L->wpack = calloc(per_group * g, sizeof(float));
    if (!L->wpack) goto oom;
    for (int gi = 0; gi < g; gi++) {
        for (int co = 0; co < cout_g; co++) {
            const float *src = w + (size_t)(gi * cout_g + co) * L->kdim;
            float *panel = L->wpack + gi * per_group + (size_t)(co / mr) * L->kdim * mr;
            for (int kx = 0; kx < L->kdim; kx++) panel[(size_t)kx * mr + co % mr] = src[kx];
        }
    }
    return 0;
oom:
    conv_free(L);
    return gelan_error("conv: out of memory packing weights [%d,%d,%d,%d]", cout, cin_g, k, k);
}

void conv_free(ConvLayer *L) {
    free(L->wpack);
    free(L->wino[0]);
    free(L->wino[1]);
    free(L->bias);
    L->wpack = L->wino[0] = L->wino[1] = L->bias = NULL;
}

static int nc_max(const ConvLayer *L) { return NC_MAX / L->kern->nr * L->kern->nr; }

size_t conv_scratch_floats(const ConvLayer *L) {
    if (L->depthwise) return 0;
    size_t n = 0;
    if (L->winograd) {
        size_t f2 = winograd_scratch_floats(L->kern, 2), f4 = winograd_scratch_floats(L->kern, 4);
        n = f2 > f4 ? f2 : f4;
    }
    { /* im2col blocks, or the direct convolution's input band */
        size_t gemm = (size_t)KC_MAX * nc_max(L);
        if (L->direct && gemm < BAND_FLOATS) gemm = BAND_FLOATS;
        if (gemm > n) n = gemm;
    }
    return n;
}

/* ---- im2col packing --------------------------------------------------------- */
typedef struct {
    int c, h, w, oh, ow, k, s, p, d; /* c: input channels (of the group) */
} Geom;

/* Packs rows k0..k0+kc of col, pixels n0..n0+ncols, into panels of nr pixels
 * (b[panel][row][nr], pixels past ncols zero). Each row of col is gathered whole
 * for the block first (one long, vectorisable loop per output-row segment: the
 * block's pixels fall into a few output rows, and inside one, with stride 1, the
 * source is a contiguous input run flanked by zero padding), then cut into the
 * panels: short per-panel loops cost more than the copying when a conv has few
 * output channels to spend each packed value on. */
static void pack_b(const Geom *g, const float *in, int k0, int kc, int n0, int ncols, int nr, float *bp) {
    size_t hw = (size_t)g->h * g->w;
    int kk = g->k * g->k;
    int npanels = (ncols + nr - 1) / nr, tail = ncols - (npanels - 1) * nr;
    if (g->k == 1 && g->s == 1 && g->p == 0) { /* pointwise: col row = input plane */
        for (int t = 0; t < kc; t++) {
            const float *src = in + (k0 + t) * hw + n0;
            for (int jp = 0; jp < npanels; jp++) {
                float *d = bp + ((size_t)jp * kc + t) * nr;
                int cnt = jp == npanels - 1 ? tail : nr;
                memcpy(d, src + (size_t)jp * nr, sizeof(float) * cnt);
                if (cnt < nr) memset(d + cnt, 0, sizeof(float) * (nr - cnt));
            }
        }
        return;
    }
    int seg_oy[NC_MAX], seg_ox[NC_MAX], seg_len[NC_MAX], nseg = 0; /* ncols <= NC_MAX */
    for (int off = 0, pix = n0; off < ncols; nseg++) {
        int oy = pix / g->ow, ox = pix % g->ow;
        int len = g->ow - ox < ncols - off ? g->ow - ox : ncols - off;
        seg_oy[nseg] = oy, seg_ox[nseg] = ox, seg_len[nseg] = len;
        pix += len, off += len;
    }
    float row[NC_MAX];
    int ci = k0 / kk, r = k0 % kk, ky = r / g->k, kx = r % g->k;
    for (int t = 0; t < kc; t++) {
        const float *plane = in + ci * hw;
        float *drow = row;
        /* At each new input row, fetch the next one: a block's runs of a row are short (a
         * few hundred floats of a plane), too short for the hardware prefetcher, and the
         * gathers waited on memory (stride-2 convs at 320x320 to 80x80: 7-12% faster). */
        if (kx == 0) {
            int pky = ky + 1, pci = ci + pky / g->k;
            pky %= g->k;
            for (int sgi = 0; sgi < nseg && pci < g->c; sgi++) {
                int iy = seg_oy[sgi] * g->s - g->p + pky * g->d;
                int x0 = seg_ox[sgi] * g->s - g->p, x1 = x0 + seg_len[sgi] * g->s + g->k;
                if (iy < 0 || iy >= g->h) continue;
                const float *src = in + pci * hw + (size_t)iy * g->w;
                for (int x = x0 > 0 ? x0 : 0; x < x1 && x < g->w; x += 16) __builtin_prefetch(src + x);
            }
        }
        for (int sgi = 0; sgi < nseg; sgi++) {
            int len = seg_len[sgi];
            int iy = seg_oy[sgi] * g->s - g->p + ky * g->d;
            int ix0 = seg_ox[sgi] * g->s - g->p + kx * g->d;
            if (iy < 0 || iy >= g->h) {
                memset(drow, 0, sizeof(float) * len);
                drow += len;
                continue;
            }
            /* columns q with 0 <= ix0 + q*s < w are copied, the rest is padding */
            int lo = ix0 < 0 ? (-ix0 + g->s - 1) / g->s : 0;
            int hi = ix0 > g->w - 1 ? 0 : (g->w - 1 - ix0) / g->s + 1;
            if (hi > len) hi = len;
            if (lo > hi) lo = hi;
            const float *src = plane + (size_t)iy * g->w + ix0;
            for (int q = 0; q < lo; q++) drow[q] = 0.f;
            if (g->s == 1) {
                memcpy(drow + lo, src + lo, sizeof(float) * (hi - lo));
            } else if (g->s == 2) { /* a constant stride lets the compiler vectorise the gather */
                for (int q = lo; q < hi; q++) drow[q] = src[2 * q];
            } else {
                for (int q = lo; q < hi; q++) drow[q] = src[q * g->s];
            }
            for (int q = hi; q < len; q++) drow[q] = 0.f;
            drow += len;
        }
        for (int jp = 0; jp < npanels; jp++) {
            float *d = bp + ((size_t)jp * kc + t) * nr;
            int cnt = jp == npanels - 1 ? tail : nr;
            memcpy(d, row + (size_t)jp * nr, sizeof(float) * cnt);
            if (cnt < nr) memset(d + cnt, 0, sizeof(float) * (nr - cnt));
        }
        if (++kx == g->k) {
            kx = 0;
            if (++ky == g->k) ky = 0, ci++;
        }
    }
}

/* ---- the GEMM driver ---------------------------------------------------------- */
typedef struct {
    const ConvLayer *L;
    const Map *in, *out;
    Geom geom;
    int npix, nc, nblocks, mchunks, panels_per_chunk;
    int in_place; /* a 1x1 conv whose GEMM reads the input planes directly */
    size_t ntasks;
    float *scratch;
    size_t scratch_per_slot;
} ConvJob;

static void conv_task(void *ctx, size_t task, size_t slot) {
    ConvJob *J = ctx;
    float *bp = J->scratch + slot * J->scratch_per_slot;
    const ConvLayer *L = J->L;
    const InferKernels *K = L->kern;
    int mr = K->mr, nr = K->nr;
    ConvTask ct = conv_task_decode(task, J->mchunks, J->nblocks, L->g);
    int mchunk = ct.mchunk, nb = ct.block, gi = ct.group, img = ct.img;
    int cin_g = L->cin / L->g, cout_g = L->cout / L->g;
    const float *in = J->in->p + img * J->in->bstride + (size_t)gi * cin_g * J->in->h * J->in->w;
    float *out = J->out->p + img * J->out->bstride + (size_t)gi * cout_g * J->npix;
    const float *wg = L->wpack + (size_t)gi * L->mpanels * L->kdim * mr;
    const float *bg = L->bias + (size_t)gi * L->mpanels * mr;
    int n0 = nb * J->nc;
    int ncols = J->npix - n0 < J->nc ? J->npix - n0 : J->nc;
    int mp0 = mchunk * J->panels_per_chunk;
    int mp1 = mp0 + J->panels_per_chunk < L->mpanels ? mp0 + J->panels_per_chunk : L->mpanels;
    int nkb = (L->kdim + KC_MAX - 1) / KC_MAX;
    int kcb = (L->kdim + nkb - 1) / nkb; /* even K blocks */
    size_t ldc = (size_t)J->npix, hw = (size_t)J->in->h * J->in->w;
    int pointwise = J->in_place;
    float tile[64 * 64];
    for (int k0 = 0; k0 < L->kdim; k0 += kcb) {
        int kc = L->kdim - k0 < kcb ? L->kdim - k0 : kcb;
        int flags = (k0 > 0 ? MICRO_ACC : 0) | (k0 + kc == L->kdim ? MICRO_EPI : 0);
        if (!pointwise) pack_b(&J->geom, in, k0, kc, n0, ncols, nr, bp);
        /* pixel panels outside, channel panels inside: the B panel (kc x nr)
         * stays in L1 while the weight panels stream from L2 */
        for (int j0 = 0; j0 < ncols; j0 += nr) {
            const float *b = bp + (size_t)(j0 / nr) * kc * nr;
            size_t ldb = (size_t)nr;
            int nvalid = ncols - j0 < nr ? ncols - j0 : nr;
            if (pointwise && nvalid == nr) { /* a 1x1 conv's im2col is its input: read it in place */
                b = in + (size_t)k0 * hw + n0 + j0, ldb = hw;
            } else if (pointwise) { /* but a last, partial panel would read past the planes */
                pack_b(&J->geom, in, k0, kc, n0 + j0, nvalid, nr, bp);
                b = bp;
            }
            for (int mp = mp0; mp < mp1; mp++) {
                const float *a = wg + ((size_t)mp * L->kdim + k0) * mr;
                const float *bias = bg + (size_t)mp * mr;
                int mvalid = cout_g - mp * mr < mr ? cout_g - mp * mr : mr;
                float *c = out + (size_t)mp * mr * ldc + n0 + j0;
                if (mvalid == mr && nvalid == nr) {
                    K->gemm_micro(kc, a, b, ldb, c, ldc, flags, bias, L->act, L->alpha);
                    continue;
                }
                /* edge tile: compute in a full-size buffer, copy the valid part */
                if (flags & MICRO_ACC)
                    for (int i = 0; i < mvalid; i++) memcpy(tile + i * nr, c + i * ldc, sizeof(float) * nvalid);
                K->gemm_micro(kc, a, b, ldb, tile, (size_t)nr, flags, bias, L->act, L->alpha);
                for (int i = 0; i < mvalid; i++) memcpy(c + i * ldc, tile + i * nr, sizeof(float) * nvalid);
            }
        }
    }
}

/* Depthwise: one task per (image, channel). */
typedef struct {
    const ConvLayer *L;
    const Map *in, *out;
    int oh, ow;
} DwJob;

static void dw_generic(const float *in, int h, int w, float *out, int oh, int ow, const float *wt, int k, int s, int p,
                       int d, float bias, int act, float alpha) {
    for (int oy = 0; oy < oh; oy++)
        for (int ox = 0; ox < ow; ox++) {
            float acc = bias;
            for (int ky = 0; ky < k; ky++) {
                int iy = oy * s - p + ky * d;
                if (iy < 0 || iy >= h) continue;
                for (int kx = 0; kx < k; kx++) {
                    int ix = ox * s - p + kx * d;
                    if (ix >= 0 && ix < w) acc += wt[ky * k + kx] * in[(size_t)iy * w + ix];
                }
            }
            out[(size_t)oy * ow + ox] = act_scalar(acc, act, alpha);
        }
}

static void dw_worker(void *ctx, size_t begin, size_t end) {
    DwJob *J = ctx;
    const ConvLayer *L = J->L;
    int h = J->in->h, w = J->in->w;
    for (size_t t = begin; t < end; t++) {
        int img = (int)(t / L->cout), c = (int)(t % L->cout);
        const float *in = J->in->p + img * J->in->bstride + (size_t)c * h * w;
        float *out = J->out->p + img * J->out->bstride + (size_t)c * J->oh * J->ow;
        const float *wt = L->wpack + (size_t)c * L->k * L->k;
        if (L->s == 1 && L->d == 1 && J->oh == h + 2 * L->p - L->k + 1)
            L->kern->dw_s1(in, h, w, out, J->oh, J->ow, wt, L->k, L->p, L->bias[c], L->act, L->alpha);
        else
            dw_generic(in, h, w, out, J->oh, J->ow, wt, L->k, L->s, L->p, L->d, L->bias[c], L->act, L->alpha);
    }
}

/* ---- direct convolution ------------------------------------------------------
 * Output pixel (oy, ox) of a k x k conv with stride s reads, at tap (ky, kx),
 * the zero-padded input at (s*oy + ky, s*ox + kx). Split that input into its
 * s*s phases (row parity x column parity; one phase when s = 1): the tap reads
 * phase (ky % s, kx % s) at (oy + ky/s, ox + kx/s). Give every phase row
 * pw = ow + (k-1)/s columns and number the outputs over the same width (the
 * extra columns of each row are computed and dropped): then output q reads
 * phase element q + (ky/s)*pw + kx/s, so for each tap a run of NR outputs reads
 * a contiguous run of input, and the micro-kernel works on the phases in
 * place. They are one copy of the input, where im2col makes k*k/(s*s) copies;
 * with few output channels to spend each copied value on, the copying is
 * what costs (stride-2 convs, the narrow convs of small models).
 *
 * A task copies the input rows its band of output rows needs (phases, zero
 * padding and all) into its scratch, then sweeps NR-output tiles x MR-channel
 * panels; each tile goes through a small buffer into the output rows it covers. */
typedef struct {
    const ConvLayer *L;
    const Map *in, *out;
    int pw, halo, rows, nbands, mchunks, panels_per_chunk;
    int off[DIRECT_KMAX * DIRECT_KMAX]; /* tap t = ky*k + kx: where its input run starts */
    float *scratch;
    size_t scratch_per_slot;
} DirectJob;

/* Rows oy0.. of the output need phase rows oy0 .. oy0 + nrows + halo - 1;
 * the band holds rows + halo of them per phase (zeros past the last). */
static void direct_band(const DirectJob *J, const float *in, int oy0, int nrows, float *band) {
    const ConvLayer *L = J->L;
    int s = L->s, p = L->p, h = J->in->h, w = J->in->w, pw = J->pw, bh = J->rows + J->halo;
    int cin_g = L->cin / L->g;
    for (int ci = 0; ci < cin_g; ci++)
        for (int py = 0; py < s; py++)
            for (int px = 0; px < s; px++) {
                float *dst = band + ((size_t)(ci * s + py) * s + px) * bh * pw;
                /* phase column c is input column s*c + px - p: inside [lo, hi) */
                int lo = px >= p ? 0 : (p - px + s - 1) / s;
                int hi = w - 1 + p - px < 0 ? 0 : (w - 1 + p - px) / s + 1;
                if (hi > pw) hi = pw;
                if (lo > hi) lo = hi;
                int x0 = s * lo + px - p; /* input column of phase column lo */
                for (int r = 0; r < bh; r++, dst += pw) {
                    int iy = s * (oy0 + r) + py - p;
                    if (r >= nrows + J->halo || iy < 0 || iy >= h) {
                        memset(dst, 0, sizeof(float) * pw);
                        continue;
                    }
                    const float *src = in + ((size_t)ci * h + iy) * w + x0;
                    memset(dst, 0, sizeof(float) * lo);
                    if (s == 1)
                        memcpy(dst + lo, src, sizeof(float) * (hi - lo));
                    else
                        for (int c = 0; c < hi - lo; c++) dst[lo + c] = src[2 * c];
                    memset(dst + hi, 0, sizeof(float) * (pw - hi));
                }
            }
    /* the last tile of the last channel reads up to halo + NR floats past the phases */
    memset(band + (size_t)cin_g * s * s * bh * pw, 0, sizeof(float) * (J->halo + L->kern->nr));
}

static void direct_task(void *ctx, size_t task, size_t slot) {
    DirectJob *J = ctx;
    const ConvLayer *L = J->L;
    const InferKernels *K = L->kern;
    int mr = K->mr, nr = K->nr;
    ConvTask ct = conv_task_decode(task, J->mchunks, J->nbands, L->g);
    int mchunk = ct.mchunk, band = ct.block, gi = ct.group, img = ct.img;
    int cin_g = L->cin / L->g, cout_g = L->cout / L->g, oh = J->out->h, ow = J->out->w, pw = J->pw;
    const float *in = J->in->p + img * J->in->bstride + (size_t)gi * cin_g * J->in->h * J->in->w;
    float *out = J->out->p + img * J->out->bstride + (size_t)gi * cout_g * oh * ow;
    const float *wg = L->wpack + (size_t)gi * L->mpanels * L->kdim * mr;
    const float *bg = L->bias + (size_t)gi * L->mpanels * mr;
    int oy0 = band * J->rows, nrows = oh - oy0 < J->rows ? oh - oy0 : J->rows;
    float *bandbuf = J->scratch + slot * J->scratch_per_slot;
    direct_band(J, in, oy0, nrows, bandbuf);
    size_t ldb = (size_t)L->s * L->s * (J->rows + J->halo) * pw, ldc = (size_t)oh * ow;
    int mp0 = mchunk * J->panels_per_chunk;
    int mp1 = mp0 + J->panels_per_chunk < L->mpanels ? mp0 + J->panels_per_chunk : L->mpanels;
    int nout = nrows * pw;
    float tile[64 * 64];
    for (int j0 = 0; j0 < nout; j0 += nr) {
        /* the tile's outputs, as runs inside output rows (extra columns dropped) */
        int seg_src[64 + 1], seg_dst[64 + 1], seg_len[64 + 1], nseg = 0;
        int jend = j0 + nr < nout ? j0 + nr : nout;
        for (int j = j0; j < jend;) {
            int r = j / pw, c = j % pw, run = pw - c < jend - j ? pw - c : jend - j;
            if (c < ow) {
                seg_src[nseg] = j - j0, seg_dst[nseg] = (oy0 + r) * ow + c;
                seg_len[nseg++] = ow - c < run ? ow - c : run;
            }
            j += run;
        }
        for (int mp = mp0; mp < mp1; mp++) {
            K->conv_micro(cin_g, L->k * L->k, J->off, wg + (size_t)mp * L->kdim * mr, bandbuf + j0, ldb, tile,
                          (size_t)nr, bg + (size_t)mp * mr, L->act, L->alpha);
            int mvalid = cout_g - mp * mr < mr ? cout_g - mp * mr : mr;
            for (int i = 0; i < mvalid; i++) {
                float *orow = out + (size_t)(mp * mr + i) * ldc;
                for (int sg = 0; sg < nseg; sg++)
                    memcpy(orow + seg_dst[sg], tile + i * nr + seg_src[sg], sizeof(float) * seg_len[sg]);
            }
        }
    }
}

/* Output channel chunks so that a job of `base` tasks gives every thread work. */
static int channel_chunks(const ConvLayer *L, size_t base, int threads) {
    int mchunks = 1;
    if (threads > 1 && base < (size_t)4 * threads) {
        mchunks = (int)((4 * (size_t)threads + base - 1) / base);
        if (mchunks > L->mpanels) mchunks = L->mpanels;
    }
    int ppc = (L->mpanels + mchunks - 1) / mchunks;
    return (L->mpanels + ppc - 1) / ppc;
}

/* Where the direct convolution beats im2col + GEMM (bench/conv_algo_bench.c, one
 * thread; the table is in docs/BENCHMARKS.md): reading a 1x1 conv's input planes in
 * place pays on maps up to 80x80 with up to 128 input channels (on bigger ones the
 * strided rows cost more than a packed copy); the direct stride-2 conv pays for
 * narrow convs (few multiplies per im2col copy), while wide ones on small maps do
 * better on packed panels. */
static int direct_pays(const ConvLayer *L, const Map *in, const Map *out) {
    if (direct_mode == 2) return 1;
    int cin_g = L->cin / L->g, cout_g = L->cout / L->g;
    if (L->k == 1) return (long)in->h * in->w <= 80 * 80 && cin_g <= 128;
    if (L->s == 2) return (long)cin_g * cout_g <= 64 * 64 && (long)out->h * out->w >= 20 * 20;
    return 1;
}

/* Runs the conv directly when one output row's input band fits the scratch; 0 if not. */
static int direct_run(const ConvLayer *L, const Map *in, const Map *out, float *scratch) {
    int s = L->s, k = L->k, threads = pool_threads();
    int halo = (k - 1) / s, pw = out->w + halo, nr = L->kern->nr;
    size_t per_row = (size_t)(L->cin / L->g) * s * s * pw, slack = (size_t)halo + nr;
    size_t per_slot = conv_scratch_floats(L);
    if (per_row * (1 + halo) + slack > per_slot) return 0;
    int rows = (int)((per_slot - slack) / per_row) - halo;
    if (rows > out->h) rows = out->h;
    /* bands of at least two rows (each repeats halo rows of input), enough of them to balance;
     * on small maps only one per thread (channel chunks make the rest): a band of a few short
     * rows fills its last NR tile poorly (20x20: 3 rows are 66 outputs in 96) */
    size_t per_band = (size_t)in->n * L->g;
    size_t per_thread = (long)out->h * out->w <= 20 * 20 ? 1 : 4;
    int want = (int)((per_thread * threads + per_band - 1) / per_band);
    int balanced = (out->h + want - 1) / want;
    if (balanced < 2) balanced = 2;
    if (balanced < rows) rows = balanced;
    DirectJob J = {.L = L,
                   .in = in,
                   .out = out,
                   .pw = pw,
                   .halo = halo,
                   .rows = rows,
                   .scratch = scratch,
                   .scratch_per_slot = per_slot};
    J.nbands = (out->h + rows - 1) / rows;
    J.mchunks = channel_chunks(L, per_band * J.nbands, threads);
    J.panels_per_chunk = (L->mpanels + J.mchunks - 1) / J.mchunks;
    size_t phase = (size_t)(rows + halo) * pw;
    for (int ky = 0; ky < k; ky++)
        for (int kx = 0; kx < k; kx++)
            J.off[ky * k + kx] = (int)(((ky % s) * s + kx % s) * phase + (size_t)(ky / s) * pw + kx / s);
    size_t ntasks = per_band * J.nbands * J.mchunks;
    size_t slots = (size_t)threads < ntasks ? (size_t)threads : ntasks;
    double flops = 2.0 * in->n * L->cout * L->kdim * out->h * out->w;
    if (flops < SERIAL_FLOPS) slots = 1;
    parallel_tasks(ntasks, slots, direct_task, &J);
    return 1;
}

/* Runs the conv as Winograd, transforming its weights on first use; 0 when out of
 * memory for them. */
static int winograd_try(ConvLayer *L, const Map *in, const Map *out, float *scratch) {
    int m = winograd_tile(L, out);
    float **u = &L->wino[m == 4];
    if (!*u && !(*u = winograd_pack(L->kern, m, L->cin, L->cout, L->wpack))) return 0;
    winograd_run(L, m, *u, in, out, scratch);
    return 1;
}

void conv_run(ConvLayer *L, const Map *in, const Map *out, float *scratch) {
    if (L->winograd) {
        if (L->direct && direct_beats_winograd(L, in) && direct_run(L, in, out, scratch)) return;
        if (winograd_try(L, in, out, scratch)) return;
        /* out of memory for the transformed weights: the GEMM below needs none */
    }
    if (L->depthwise) {
        DwJob J = {L, in, out, out->h, out->w};
        parallel_for((size_t)in->n * L->cout, 1, dw_worker, &J);
        return;
    }
    int direct = L->direct && direct_pays(L, in, out);
    if (direct && L->k > 1 && direct_run(L, in, out, scratch)) return;
    int nr = L->kern->nr;
    int npix = out->h * out->w;
    int threads = pool_threads();
    /* pixel blocks of equal size, a multiple of nr; on small maps, enough of them (down to
     * one panel each) for the threads to balance, before channels are split too: every
     * channel chunk of a block packs the block again, where smaller blocks only re-read
     * the weights (gelan-c's 3x3 stride-2 convs to 10x10 took 4x ONNX Runtime's time
     * with 8 chunks of one packed block) */
    int nblocks = (npix + nc_max(L) - 1) / nc_max(L), npanels = (npix + nr - 1) / nr;
    size_t per_block = (size_t)in->n * L->g, want = threads > 1 ? 4 * (size_t)threads : 1;
    if (per_block * nblocks < want) {
        nblocks = (int)((want + per_block - 1) / per_block);
        if (nblocks > npanels) nblocks = npanels;
    }
    int nc = ((npix + nblocks - 1) / nblocks + nr - 1) / nr * nr;
    nblocks = (npix + nc - 1) / nc;
    /* and if there are still too few tasks, chunks of output channels */
    size_t base = per_block * nblocks;
    int mchunks = channel_chunks(L, base, threads);
    int ppc = (L->mpanels + mchunks - 1) / mchunks;
    ConvJob J = {.L = L,
                 .in = in,
                 .out = out,
                 .geom = {L->cin / L->g, in->h, in->w, out->h, out->w, L->k, L->s, L->p, L->d},
                 .npix = npix,
                 .nc = nc,
                 .nblocks = nblocks,
                 .mchunks = mchunks,
                 .panels_per_chunk = ppc,
                 .in_place = direct && L->k == 1,
                 .ntasks = base * mchunks,
                 .scratch = scratch,
                 .scratch_per_slot = conv_scratch_floats(L)};
    size_t slots = (size_t)threads < J.ntasks ? (size_t)threads : J.ntasks;
    /* waking the pool costs about as much as a MFLOP of work: tiny convs run here */
    double flops = 2.0 * in->n * L->cout * L->kdim * npix;
    if (flops < SERIAL_FLOPS) slots = 1;
    parallel_tasks(J.ntasks, slots, conv_task, &J);
}

void conv_naive(const float *in, int n, int cin, int h, int w, const float *wt, const float *b, int cout, int k, int s,
                int p, int d, int g, int act, float alpha, float *out) {
    int oh = conv_out_size(h, k, s, p, d), ow = conv_out_size(w, k, s, p, d);
    int cin_g = cin / g, cout_g = cout / g;
    for (int img = 0; img < n; img++)
        for (int co = 0; co < cout; co++) {
            int gi = co / cout_g;
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    double acc = b ? b[co] : 0.0;
                    for (int ci = 0; ci < cin_g; ci++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * s - p + ky * d, ix = ox * s - p + kx * d;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                acc += (double)wt[((size_t)(co * cin_g + ci) * k + ky) * k + kx] *
                                       in[(((size_t)img * cin + gi * cin_g + ci) * h + iy) * w + ix];
                            }
                    out[(((size_t)img * cout + co) * oh + oy) * ow + ox] = act_scalar((float)acc, act, alpha);
                }
        }
}
