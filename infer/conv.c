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
 * work when a map has few pixels (the P5 level). */
#include <stdlib.h>
#include <string.h>

#include "infer/ops.h"
#include "tensor/error.h"
#include "tensor/pool.h"

#define KC_MAX 384       /* K rows per block */
#define NC_MAX 256       /* output pixels per block (rounded down to a multiple of NR) */

int conv_out_size(int in, int k, int s, int p, int d) {
    if (s <= 0) return 0;
    int span = d * (k - 1) + 1;
    if (in + 2 * p < span) return 0;
    return (in + 2 * p - span) / s + 1;
}

static int winograd_mode = -1; /* -1: not decided yet (environment) */

void conv_set_winograd(int on) { winograd_mode = on != 0; }

static int winograd_enabled(void) {
    if (winograd_mode < 0) {
        const char *env = getenv("GELAN_INFER_WINOGRAD");
        winograd_mode = !(env && !strcmp(env, "0"));
    }
    return winograd_mode;
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
    if (winograd_enabled() && winograd_applies(cin, cout, k, s, d, g)) {
        L->winograd = 1;
        L->wpack = winograd_pack(kern, cin, cout, w);
        L->bias = calloc((size_t)L->mpanels * mr, sizeof(float));
        if (!L->wpack || !L->bias) goto oom;
        if (b) memcpy(L->bias, b, sizeof(float) * (size_t)cout);
        return 0;
    }
    size_t per_group = (size_t)L->mpanels * L->kdim * mr;
    L->wpack = calloc(per_group * g, sizeof(float));
    L->bias = calloc((size_t)g * L->mpanels * mr, sizeof(float));
    if (!L->wpack || !L->bias) goto oom;
    for (int gi = 0; gi < g; gi++) {
        for (int co = 0; co < cout_g; co++) {
            const float *src = w + (size_t)(gi * cout_g + co) * L->kdim;
            float *panel = L->wpack + gi * per_group + (size_t)(co / mr) * L->kdim * mr;
            for (int kx = 0; kx < L->kdim; kx++) panel[(size_t)kx * mr + co % mr] = src[kx];
            if (b) L->bias[(size_t)gi * L->mpanels * mr + co] = b[gi * cout_g + co];
        }
    }
    return 0;
oom:
    conv_free(L);
    return gelan_error("conv: out of memory packing weights [%d,%d,%d,%d]", cout, cin_g, k, k);
}

void conv_free(ConvLayer *L) {
    free(L->wpack);
    free(L->bias);
    L->wpack = L->bias = NULL;
}

static int nc_max(const ConvLayer *L) { return NC_MAX / L->kern->nr * L->kern->nr; }

size_t conv_scratch_floats(const ConvLayer *L) {
    if (L->winograd) return winograd_scratch_floats(L->kern);
    return L->depthwise ? 0 : (size_t)KC_MAX * nc_max(L);
}

/* ---- im2col packing --------------------------------------------------------- */
typedef struct {
    int h, w, oh, ow, k, s, p, d;
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
    size_t t = task;
    int mchunk = (int)(t % J->mchunks);
    t /= J->mchunks;
    int nb = (int)(t % J->nblocks);
    t /= J->nblocks;
    int gi = (int)(t % L->g);
    int img = (int)(t / L->g);
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
    size_t ldc = (size_t)J->npix;
    float tile[64 * 64];
    for (int k0 = 0; k0 < L->kdim; k0 += kcb) {
        int kc = L->kdim - k0 < kcb ? L->kdim - k0 : kcb;
        int flags = (k0 > 0 ? MICRO_ACC : 0) | (k0 + kc == L->kdim ? MICRO_EPI : 0);
        pack_b(&J->geom, in, k0, kc, n0, ncols, nr, bp);
        /* pixel panels outside, channel panels inside: the B panel (kc x nr)
         * stays in L1 while the weight panels stream from L2 */
        for (int j0 = 0; j0 < ncols; j0 += nr) {
            const float *b = bp + (size_t)(j0 / nr) * kc * nr;
            int nvalid = ncols - j0 < nr ? ncols - j0 : nr;
            for (int mp = mp0; mp < mp1; mp++) {
                const float *a = wg + ((size_t)mp * L->kdim + k0) * mr;
                const float *bias = bg + (size_t)mp * mr;
                int mvalid = cout_g - mp * mr < mr ? cout_g - mp * mr : mr;
                float *c = out + (size_t)mp * mr * ldc + n0 + j0;
                if (mvalid == mr && nvalid == nr) {
                    K->gemm_micro(kc, a, b, (size_t)nr, c, ldc, flags, bias, L->act, L->alpha);
                    continue;
                }
                /* edge tile: compute in a full-size buffer, copy the valid part */
                if (flags & MICRO_ACC)
                    for (int i = 0; i < mvalid; i++) memcpy(tile + i * nr, c + i * ldc, sizeof(float) * nvalid);
                K->gemm_micro(kc, a, b, (size_t)nr, tile, (size_t)nr, flags, bias, L->act, L->alpha);
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

void conv_run(const ConvLayer *L, const Map *in, const Map *out, float *scratch) {
    if (L->winograd) {
        winograd_run(L, in, out, scratch);
        return;
    }
    if (L->depthwise) {
        DwJob J = {L, in, out, out->h, out->w};
        parallel_for((size_t)in->n * L->cout, 1, dw_worker, &J);
        return;
    }
    int nr = L->kern->nr;
    int npix = out->h * out->w;
    int threads = pool_threads();
    /* pixel blocks of equal size, a multiple of nr */
    int nblocks = (npix + nc_max(L) - 1) / nc_max(L);
    int nc = ((npix + nblocks - 1) / nblocks + nr - 1) / nr * nr;
    nblocks = (npix + nc - 1) / nc;
    /* enough tasks for the threads to balance: split channels when pixels are few */
    size_t base = (size_t)in->n * L->g * nblocks;
    int mchunks = 1;
    if (threads > 1 && base < (size_t)4 * threads) {
        mchunks = (int)((4 * (size_t)threads + base - 1) / base);
        if (mchunks > L->mpanels) mchunks = L->mpanels;
    }
    int ppc = (L->mpanels + mchunks - 1) / mchunks;
    mchunks = (L->mpanels + ppc - 1) / ppc;
    ConvJob J = {.L = L,
                 .in = in,
                 .out = out,
                 .geom = {in->h, in->w, out->h, out->w, L->k, L->s, L->p, L->d},
                 .npix = npix,
                 .nc = nc,
                 .nblocks = nblocks,
                 .mchunks = mchunks,
                 .panels_per_chunk = ppc,
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
