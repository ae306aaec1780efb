/* 3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3)
 * (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).
 *
 * Each 2x2 output tile comes from a 4x4 input patch d: Y = A^T [U . V] A with
 * U = G g G^T (per weight, done once at load) and V = B^T d B; summed over
 * input channels this becomes 16 independent GEMMs, M_xi = U_xi (Cout x Cin)
 * * V_xi (Cin x tiles), with 16 multiplies per tile and channel pair instead
 * of 36: 2.25x fewer. The GEMMs run on the same micro-kernels as the direct
 * conv (B read row-major with a stride).
 *
 *   B^T = | 1  0 -1  0 |   G = | 1    0    0   |   A^T = | 1  1  1  0 |
 *         | 0  1  1  0 |       | 1/2  1/2  1/2 |         | 0  1 -1 -1 |
 *         | 0 -1  1  0 |       | 1/2 -1/2  1/2 |
 *         | 0  1  0 -1 |       | 0    0    1   |
 *
 * Tasks are (image, block of NBW consecutive tiles, chunk of MCW output
 * channels). Per task and block of KCW input channels, V is built for the
 * tiles of the block (row by row, in vector-friendly passes over input rows),
 * the 16 GEMMs accumulate into M, and at the end the output transform adds
 * the bias, writes the 2x2 tiles and applies the activation to whole output
 * row segments. Every buffer of a task fits in L2. */
#include <stdlib.h>
#include <string.h>

#include "infer/ops.h"
#include "tensor/pool.h"

/* Block sizes, measured on Zen 5 (1 MB L2): V is 16 x KCW x NBW floats
 * (256 KB), M is 16 x MCW x NBW (1 MB, touched once per input block). */
#define KCW 64     /* input channels per block */
#define MCW 256    /* output channels per task (one thread; half with more) */
#define NBW_MIN 64 /* tiles per block, rounded up to a multiple of NR */

/* tiles per block: a multiple of nr, at least NBW_MIN */
static int nbw(const InferKernels *k) { return (NBW_MIN + k->nr - 1) / k->nr * k->nr; }

int winograd_applies(int cin, int cout, int k, int s, int d, int g) {
    return k == 3 && s == 1 && d == 1 && g == 1 && cin >= 16 && cout >= 16;
}

/* U[xi][panel][ci][mr] with U = G g G^T for every (co, ci) */
float *winograd_pack(const InferKernels *kern, int cin, int cout, const float *w) {
    int mr = kern->mr, mpanels = (cout + mr - 1) / mr;
    size_t per_xi = (size_t)mpanels * cin * mr;
    float *u = calloc(16 * per_xi, sizeof(float));
    if (!u) return NULL;
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++) {
            const float *g = w + ((size_t)co * cin + ci) * 9;
            float t[4][3], U[4][4];
            for (int c = 0; c < 3; c++) { /* G g */
                t[0][c] = g[c];
                t[1][c] = 0.5f * (g[c] + g[3 + c] + g[6 + c]);
                t[2][c] = 0.5f * (g[c] - g[3 + c] + g[6 + c]);
                t[3][c] = g[6 + c];
            }
            for (int r = 0; r < 4; r++) { /* (G g) G^T */
                U[r][0] = t[r][0];
                U[r][1] = 0.5f * (t[r][0] + t[r][1] + t[r][2]);
                U[r][2] = 0.5f * (t[r][0] - t[r][1] + t[r][2]);
                U[r][3] = t[r][2];
            }
            for (int xi = 0; xi < 16; xi++)
                u[xi * per_xi + ((size_t)(co / mr) * cin + ci) * mr + co % mr] = U[xi / 4][xi % 4];
        }
    return u;
}

size_t winograd_scratch_floats(const InferKernels *kern) { return (size_t)16 * (KCW + MCW) * nbw(kern); }

typedef struct {
    const ConvLayer *L;
    const Map *in, *out;
    int tw, tiles, nblocks, mchunks, mcw, nb; /* mcw: output channels per task (<= MCW, a multiple of mr) */
    size_t ntasks;
    float *scratch;
    size_t per_slot;
} WinoJob;

/* V for input channels [ci0, ci0+kc) and tiles [t0, t0+nt) of the block:
 * vbuf[xi][ci-ci0][j], j = tile - t0, row stride nb. */
static void input_transform(const WinoJob *J, const float *in, int ci0, int kc, int t0, int nt, float *vbuf) {
    int h = J->in->h, w = J->in->w, p = J->L->p, nb = J->nb;
    size_t xi_stride = (size_t)kc * nb;
    float rows[4][2 * NBW_MIN + 8 + 64], u[4][2 * NBW_MIN + 8 + 64]; /* 2 * tiles + 2 (nb <= NBW_MIN + 31) */
    for (int c = 0; c < kc; c++) {
        const float *plane = in + (size_t)(ci0 + c) * h * w;
        for (int t = t0; t < t0 + nt;) { /* one tile-row segment at a time */
            int ty = t / J->tw, tx0 = t % J->tw;
            int len = J->tw - tx0 < t0 + nt - t ? J->tw - tx0 : t0 + nt - t;
            int x0 = 2 * tx0 - p, n = 2 * len + 2; /* input columns x0 .. x0+n-1 */
            for (int r = 0; r < 4; r++) {
                int iy = 2 * ty - p + r;
                if (iy < 0 || iy >= h) {
                    memset(rows[r], 0, sizeof(float) * n);
                    continue;
                }
                const float *src = plane + (size_t)iy * w;
                int lo = x0 < 0 ? -x0 : 0, hi = w - x0 < n ? w - x0 : n;
                for (int i = 0; i < lo; i++) rows[r][i] = 0.f;
                memcpy(rows[r] + lo, src + x0 + lo, sizeof(float) * (hi - lo));
                for (int i = hi; i < n; i++) rows[r][i] = 0.f;
            }
            for (int i = 0; i < n; i++) { /* B^T d: combinations of the 4 rows */
                u[0][i] = rows[0][i] - rows[2][i];
                u[1][i] = rows[1][i] + rows[2][i];
                u[2][i] = rows[2][i] - rows[1][i];
                u[3][i] = rows[1][i] - rows[3][i];
            }
            int j0 = t - t0;
            for (int a = 0; a < 4; a++) { /* (B^T d) B: combinations of columns 2tx .. 2tx+3 */
                float *v0 = vbuf + (size_t)(4 * a) * xi_stride + (size_t)c * nb + j0;
                float *v1 = v0 + xi_stride, *v2 = v1 + xi_stride, *v3 = v2 + xi_stride;
                const float *ua = u[a];
                for (int q = 0; q < len; q++) {
                    v0[q] = ua[2 * q] - ua[2 * q + 2];
                    v1[q] = ua[2 * q + 1] + ua[2 * q + 2];
                    v2[q] = ua[2 * q + 2] - ua[2 * q + 1];
                    v3[q] = ua[2 * q + 1] - ua[2 * q + 3];
                }
            }
            t += len;
        }
        for (int xi = 0; xi < 16; xi++) /* tiles past the end: zeros, never output */
            memset(vbuf + xi * xi_stride + (size_t)c * nb + nt, 0, sizeof(float) * (nb - nt));
    }
}

/* Y = A^T M A + bias for output channels [co0, co0+mc), then the activation */
static void output_transform(const WinoJob *J, const float *mbuf, int co0, int mc, int t0, int nt, float *out) {
    const ConvLayer *L = J->L;
    int oh = J->out->h, ow = J->out->w, nb = J->nb;
    size_t xi_stride = (size_t)MCW * nb;
    float y[4][NBW_MIN + 32];
    for (int c = 0; c < mc; c++) {
        int co = co0 + c;
        float bias = L->bias[co];
        float *plane = out + (size_t)co * oh * ow;
        for (int t = t0; t < t0 + nt;) {
            int ty = t / J->tw, tx0 = t % J->tw;
            int len = J->tw - tx0 < t0 + nt - t ? J->tw - tx0 : t0 + nt - t;
            const float *m = mbuf + (size_t)c * nb + (t - t0);
            for (int q = 0; q < len; q++) {
                float s[4], d[4];
                for (int b = 0; b < 4; b++) {
                    float m0 = m[(size_t)b * xi_stride + q], m1 = m[(size_t)(4 + b) * xi_stride + q];
                    float m2 = m[(size_t)(8 + b) * xi_stride + q], m3 = m[(size_t)(12 + b) * xi_stride + q];
                    s[b] = m0 + m1 + m2;
                    d[b] = m1 - m2 - m3;
                }
                y[0][q] = s[0] + s[1] + s[2] + bias;
                y[1][q] = s[1] - s[2] - s[3] + bias;
                y[2][q] = d[0] + d[1] + d[2] + bias;
                y[3][q] = d[1] - d[2] - d[3] + bias;
            }
            int x0 = 2 * tx0, n = (2 * (tx0 + len) < ow ? 2 * (tx0 + len) : ow) - x0;
            for (int dy = 0; dy < 2 && 2 * ty + dy < oh; dy++) {
                float *r = plane + (size_t)(2 * ty + dy) * ow + x0;
                const float *even = y[2 * dy], *odd = y[2 * dy + 1];
                for (int q = 0; q < n / 2; q++) r[2 * q] = even[q], r[2 * q + 1] = odd[q];
                if (n & 1) r[n - 1] = even[n / 2]; /* an odd width ends on half a tile */
                L->kern->activate(r, (size_t)n, L->act, L->alpha);
            }
            t += len;
        }
    }
}

static void wino_task(void *ctx, size_t task, size_t slot) {
    WinoJob *J = ctx;
    float *scratch = J->scratch + slot * J->per_slot;
    const ConvLayer *L = J->L;
    const InferKernels *K = L->kern;
    int mr = K->mr, nr = K->nr, nb = J->nb;
    int mchunk = (int)(task % J->mchunks);
    size_t rest = task / J->mchunks;
    int blk = (int)(rest % J->nblocks), img = (int)(rest / J->nblocks);
    int t0 = blk * nb, nt = J->tiles - t0 < nb ? J->tiles - t0 : nb;
    int co0 = mchunk * J->mcw, mc = L->cout - co0 < J->mcw ? L->cout - co0 : J->mcw;
    int mp0 = co0 / mr, mpn = (mc + mr - 1) / mr;
    const float *in = J->in->p + img * J->in->bstride;
    float *out = J->out->p + img * J->out->bstride;
    float *vbuf = scratch, *mbuf = scratch + (size_t)16 * KCW * nb;
    size_t per_xi = (size_t)L->mpanels * L->cin * mr;
    int nkb = (L->cin + KCW - 1) / KCW, kcb = (L->cin + nkb - 1) / nkb;
    for (int ci0 = 0; ci0 < L->cin; ci0 += kcb) {
        int kc = L->cin - ci0 < kcb ? L->cin - ci0 : kcb;
        input_transform(J, in, ci0, kc, t0, nt, vbuf);
        for (int xi = 0; xi < 16; xi++) {
            const float *u = L->wino + xi * per_xi;
            const float *v = vbuf + (size_t)xi * kc * nb;
            float *m = mbuf + (size_t)xi * MCW * nb;
            for (int mp = 0; mp < mpn; mp++)
                for (int j = 0; j < nb; j += nr)
                    K->gemm_micro(kc, u + ((size_t)(mp0 + mp) * L->cin + ci0) * mr, v + j, (size_t)nb,
                                  m + (size_t)mp * mr * nb + j, (size_t)nb, ci0 ? MICRO_ACC : 0, NULL, ACT_NONE, 0.f);
        }
    }
    output_transform(J, mbuf, co0, mc, t0, nt, out);
}

void winograd_run(const ConvLayer *L, const Map *in, const Map *out, float *scratch) {
    int th = (out->h + 1) / 2, tw = (out->w + 1) / 2, nr = L->kern->nr;
    /* a block of at most nbw tiles; fewer on small maps (a 10x10 output has 25 tiles:
     * one NR panel instead of a 64-tile block that would be 60% padding) */
    int nb = nbw(L->kern), all = (th * tw + nr - 1) / nr * nr;
    if (all < nb) nb = all;
    WinoJob J = {.L = L,
                 .in = in,
                 .out = out,
                 .tw = tw,
                 .tiles = th * tw,
                 .nb = nb,
                 .scratch = scratch,
                 .per_slot = winograd_scratch_floats(L->kern)};
    J.nblocks = (J.tiles + nb - 1) / nb;
    /* Small maps (20x20, 10x10) have one or two blocks of tiles: split the output channels
     * finer so that every thread has work (two tasks per thread), in whole panels. */
    /* With several threads, chunks of MCW/2 channels: each thread's M buffer halves (two
     * threads share the cache and memory system) and a map has twice the tasks to balance.
     * Measured against ONNX Runtime in alternating runs (docs/BENCHMARKS.md): gelan-c at 640,
     * 2 threads, 3% faster; with one thread the full MCW is faster (one input transform). */
    int threads = pool_threads(), mr = L->kern->mr, mcw = threads > 1 ? MCW / 2 : MCW;
    size_t base = (size_t)in->n * J.nblocks;
    if (base * ((L->cout + mcw - 1) / mcw) < 2 * (size_t)threads) {
        int want = (int)((2 * (size_t)threads + base - 1) / base); /* chunks wanted */
        mcw = ((L->cout + want - 1) / want + mr - 1) / mr * mr;
        if (mcw > MCW) mcw = MCW;
        if (mcw < mr) mcw = mr;
    }
    J.mcw = mcw;
    J.mchunks = (L->cout + mcw - 1) / mcw;
    J.ntasks = (size_t)in->n * J.nblocks * J.mchunks;
    size_t slots = (size_t)pool_threads() < J.ntasks ? (size_t)pool_threads() : J.ntasks;
    if (2.0 * in->n * L->cout * L->cin * 9 * out->h * out->w < SERIAL_FLOPS) slots = 1;
    parallel_tasks(J.ntasks, slots, wino_task, &J);
}
