/* 3x3 stride-1 convolution by Winograd's minimal filtering F(m x m, 3x3), m = 2 or 4
 * (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).
 *
 * Each m x m output tile comes from an a x a input patch d (a = m + 2):
 * Y = A^T [U . V] A with U = G g G^T (per weight, once, on the conv's first run) and
 * V = B^T d B; summed over input channels this becomes a*a independent GEMMs,
 * M_xi = U_xi (Cout x Cin) * V_xi (Cin x tiles). Multiplies per output and channel
 * pair: 9 for a direct conv, 16/4 = 4 for F(2x2), 36/16 = 2.25 for F(4x4). The
 * GEMMs run on the same micro-kernels as the direct conv (B read row-major with a
 * stride).
 *
 * F(2x2, 3x3), interpolation points 0, 1, -1, infinity:
 *   B^T = | 1  0 -1  0 |   G = | 1    0    0   |   A^T = | 1  1  1  0 |
 *         | 0  1  1  0 |       | 1/2  1/2  1/2 |         | 0  1 -1 -1 |
 *         | 0 -1  1  0 |       | 1/2 -1/2  1/2 |
 *         | 0  1  0 -1 |       | 0    0    1   |
 *
 * F(4x4, 3x3), points 0, 1, -1, 2, -2, infinity:
 *   B^T = | 4  0 -5  0  1  0 |   G = |  1/4    0     0   |   A^T = | 1  1  1  1  1  0 |
 *         | 0 -4 -4  1  1  0 |       | -1/6  -1/6  -1/6  |         | 0  1 -1  2 -2  0 |
 *         | 0  4 -4 -1  1  0 |       | -1/6   1/6  -1/6  |         | 0  1  1  4  4  0 |
 *         | 0 -2 -1  2  1  0 |       |  1/24  1/12  1/6  |         | 0  1 -1  8 -8  1 |
 *         | 0  2 -1 -2  1  0 |       |  1/24 -1/12  1/6  |
 *         | 0  4  0 -5  0  1 |       |  0     0     1    |
 * F(4x4) does 1.78x fewer multiplies than F(2x2) and its transforms touch fewer
 * values per output, but its larger coefficients cost about one more decimal digit
 * of float precision (rms error 1.5e-6 of the output's scale against 3e-7 for a
 * 256-channel conv; the tests bound it), its transformed weights are 4x the 3x3
 * kernels (F(2x2): 1.78x), and its 4x4 tiles waste more on small maps: conv.c
 * picks m per call from the map size, and transforms the weights on first use.
 *
 * Tasks are (image, block of nb consecutive tiles, chunk of output channels). Per
 * task and block of input channels, V is built for the tiles of the block (row
 * by row, in vector-friendly passes over input rows), the a*a GEMMs accumulate into
 * M, and at the end the output transform adds the bias, writes the m x m tiles and
 * applies the activation to whole output row segments. Every buffer of a task fits
 * in L2. */
#include <stdlib.h>
#include <string.h>

#include "infer/ops.h"
#include "tensor/pool.h"

/* Block sizes, measured on Zen 5 (1 MB L2) by bench/conv_algo_bench.c and A/B runs of
 * single shapes. V is a*a x kcw x nb floats, M is a*a x mcw x nb: F(2x2) 256 KB and 1 MB
 * (mcw 256; 512 KB with several threads, where the chunks halve), F(4x4) 144 KB and
 * 576 KB. F(4x4) with 64 input channels per block was 10% slower on a core whose L2 a
 * busy neighbour shared (same speed otherwise); F(2x2) with 32 was 10% slower. Fewer
 * output channels per task (64) repeat the input transform more and were 30% slower. */
typedef struct {
    int kcw;     /* input channels per block */
    int mcw;     /* output channels per task (one thread) */
    int nbw_min; /* tiles per block, rounded up to a multiple of NR */
} WinoBlocks;
static WinoBlocks blocks_of(int m) { return m == 4 ? (WinoBlocks){32, 128, 32} : (WinoBlocks){64, 256, 64}; }
#define ROW_MAX 256 /* floats of one transformed input or output row: m * nb + 2 */

/* tiles per block: a multiple of nr, at least nbw_min */
static int nbw(const InferKernels *k, int m) {
    int lo = blocks_of(m).nbw_min;
    return (lo + k->nr - 1) / k->nr * k->nr;
}

int winograd_applies(int cin, int cout, int k, int s, int d, int g) {
    return k == 3 && s == 1 && d == 1 && g == 1 && cin >= 16 && cout >= 16;
}

/* G x for one column x = (x0, x1, x2) of a 3x3 kernel: the a values out[0], out[stride], ... */
static void g_apply(int m, float x0, float x1, float x2, float *out, int stride) {
    if (m == 2) {
        out[0] = x0, out[stride] = 0.5f * (x0 + x1 + x2), out[2 * stride] = 0.5f * (x0 - x1 + x2);
        out[3 * stride] = x2;
        return;
    }
    out[0] = x0 / 4, out[stride] = -(x0 + x1 + x2) / 6, out[2 * stride] = -(x0 - x1 + x2) / 6;
    out[3 * stride] = x0 / 24 + x1 / 12 + x2 / 6, out[4 * stride] = x0 / 24 - x1 / 12 + x2 / 6;
    out[5 * stride] = x2;
}

/* U = G g G^T, a x a (row-major), for one 3x3 kernel g (row-major) */
static void weight_transform(int m, const float *g, float *U) {
    int a = m + 2;
    float t[6][3];                 /* G g */
    for (int c = 0; c < 3; c++) g_apply(m, g[c], g[3 + c], g[6 + c], &t[0][c], 3);
    for (int r = 0; r < a; r++) g_apply(m, t[r][0], t[r][1], t[r][2], U + r * a, 1); /* (G g) G^T */
}

/* Input channels per block: blocks of even size, at most kcw */
static int kblock(int m, int cin) {
    int kcw = blocks_of(m).kcw, nkb = (cin + kcw - 1) / kcw;
    return (cin + nkb - 1) / nkb;
}

/* Where U's panel mp (mr output channels) starts for the input-channel block [ci0, ci0+kc) and
 * GEMM xi: block by block, within a block GEMM by GEMM, within a GEMM panel by panel, each panel
 * kc x mr. A task reads its panels for one block and every xi in this order: long runs that the
 * hardware prefetcher follows. In a model the weights come from memory (each conv's once per
 * inference): with panels cin floats apart, a 256-channel conv on a 20x20 map with cold caches
 * took 1.78 ms (2 threads) and 3.0 ms (1 thread), against 1.67 and 2.0 in this order; gelan-c
 * with 2 threads -2% at 320, -5% at 640. */
static size_t u_offset(int aa, int mpanels, int mr, int ci0, int kc, int xi, int mp) {
    return ((size_t)ci0 * aa * mpanels + ((size_t)xi * mpanels + mp) * kc) * mr;
}

/* U = G g G^T for every (co, ci), laid out as u_offset says, from conv's panels: the 3x3 kernel
 * of (co, ci) is at wpack[((co/mr * cin + ci) * 9 + tap) * mr + co%mr] */
float *winograd_pack(const InferKernels *kern, int m, int cin, int cout, const float *wpack) {
    int mr = kern->mr, mpanels = (cout + mr - 1) / mr, aa = (m + 2) * (m + 2), kcb = kblock(m, cin);
    float *u = calloc((size_t)aa * mpanels * cin * mr, sizeof(float));
    if (!u) return NULL;
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++) {
            const float *src = wpack + ((size_t)(co / mr) * cin + ci) * 9 * mr + co % mr;
            int ci0 = ci / kcb * kcb, kc = cin - ci0 < kcb ? cin - ci0 : kcb;
            float g[9], U[36];
            for (int t = 0; t < 9; t++) g[t] = src[(size_t)t * mr];
            weight_transform(m, g, U);
            for (int xi = 0; xi < aa; xi++)
                u[u_offset(aa, mpanels, mr, ci0, kc, xi, co / mr) + (size_t)(ci - ci0) * mr + co % mr] = U[xi];
        }
    return u;
}

size_t winograd_scratch_floats(const InferKernels *kern, int m) {
    int a = m + 2;
    WinoBlocks bl = blocks_of(m);
    return (size_t)a * a * (bl.kcw + bl.mcw) * nbw(kern, m);
}

typedef struct {
    const ConvLayer *L;
    const Map *in, *out;
    const float *u;                    /* the transformed weights */
    int m, a;                          /* output tile m x m, input patch a x a */
    int tw, tiles, nblocks, mchunks, nb;
    int mcw;                           /* output channels per task (a multiple of mr) */
    size_t ntasks;
    float *scratch;
    size_t per_slot, mbuf_xi;          /* floats per slot; M's stride between GEMMs */
} WinoJob;

/* F(4x4)'s 1-D transforms over n independent columns: out_i = sum_j B^T[i][j] in_j and
 * out_i = sum_j A^T[i][j] in_j (+ bias). Each array is its own row (restrict), which is
 * what lets the compiler vectorise the loop across them. */
static void bt6(const float *restrict d0, const float *restrict d1, const float *restrict d2, const float *restrict d3,
                const float *restrict d4, const float *restrict d5, int n, float *restrict o0, float *restrict o1,
                float *restrict o2, float *restrict o3, float *restrict o4, float *restrict o5) {
    for (int x = 0; x < n; x++) {
        o0[x] = 4 * d0[x] - 5 * d2[x] + d4[x];
        o1[x] = (d3[x] + d4[x]) - 4 * (d1[x] + d2[x]);
        o2[x] = (d4[x] - d3[x]) + 4 * (d1[x] - d2[x]);
        o3[x] = (d4[x] - d2[x]) + 2 * (d3[x] - d1[x]);
        o4[x] = (d4[x] - d2[x]) - 2 * (d3[x] - d1[x]);
        o5[x] = 4 * d1[x] - 5 * d3[x] + d5[x];
    }
}

static void at4(const float *restrict s0, const float *restrict s1, const float *restrict s2, const float *restrict s3,
                const float *restrict s4, const float *restrict s5, int n, float bias, float *restrict o0,
                float *restrict o1, float *restrict o2, float *restrict o3) {
    for (int x = 0; x < n; x++) {
        float p12 = s1[x] + s2[x], d12 = s1[x] - s2[x], p34 = s3[x] + s4[x], d34 = s3[x] - s4[x];
        o0[x] = s0[x] + p12 + p34 + bias;
        o1[x] = d12 + 2 * d34 + bias;
        o2[x] = p12 + 4 * p34 + bias;
        o3[x] = d12 + 8 * d34 + s5[x] + bias;
    }
}

/* B^T d for the a input rows of a tile row, n columns each: u[i][x] */
static void rows_transform(int m, float rows[][ROW_MAX], float u[][ROW_MAX], int n) {
    if (m == 2) {
        for (int x = 0; x < n; x++) {
            float d0 = rows[0][x], d1 = rows[1][x], d2 = rows[2][x], d3 = rows[3][x];
            u[0][x] = d0 - d2, u[1][x] = d1 + d2, u[2][x] = d2 - d1, u[3][x] = d1 - d3;
        }
        return;
    }
    bt6(rows[0], rows[1], rows[2], rows[3], rows[4], rows[5], n, u[0], u[1], u[2], u[3], u[4], u[5]);
}

/* (B^T d) B for one transformed row ui and tiles q < len (columns m*q .. m*q + a - 1):
 * the a results of tile q go to v[j * xi_stride + q]. F(4x4) first splits the row into
 * its 4 column phases, so that every combination below is a contiguous, vectorisable
 * loop over tiles (tile q reads phases 0-3 at q and phases 0-1 at q + 1). */
static void cols_transform(int m, const float *ui, int len, float *v, size_t xi_stride) {
    float *v0 = v, *v1 = v0 + xi_stride, *v2 = v1 + xi_stride, *v3 = v2 + xi_stride;
    if (m == 2) {
        for (int q = 0; q < len; q++) {
            const float *d = ui + 2 * q;
            v0[q] = d[0] - d[2], v1[q] = d[1] + d[2], v2[q] = d[2] - d[1], v3[q] = d[1] - d[3];
        }
        return;
    }
    float e[4][ROW_MAX / 4 + 1];
    for (int q = 0; q < len; q++)
        e[0][q] = ui[4 * q], e[1][q] = ui[4 * q + 1], e[2][q] = ui[4 * q + 2], e[3][q] = ui[4 * q + 3];
    e[0][len] = ui[4 * len], e[1][len] = ui[4 * len + 1];
    bt6(e[0], e[1], e[2], e[3], e[0] + 1, e[1] + 1, len, v0, v1, v2, v3, v3 + xi_stride, v3 + 2 * xi_stride);
}

/* V for input channels [ci0, ci0+kc) and tiles [t0, t0+nt) of the block:
 * vbuf[xi][ci-ci0][j], j = tile - t0, row stride nb. */
static void input_transform(const WinoJob *J, const float *in, int ci0, int kc, int t0, int nt, float *vbuf) {
    int h = J->in->h, w = J->in->w, p = J->L->p, nb = J->nb, m = J->m, a = J->a;
    size_t xi_stride = (size_t)kc * nb;
    float rows[6][ROW_MAX], u[6][ROW_MAX];
    for (int c = 0; c < kc; c++) {
        const float *plane = in + (size_t)(ci0 + c) * h * w;
        for (int t = t0; t < t0 + nt;) { /* one tile-row segment at a time */
            int ty = t / J->tw, tx0 = t % J->tw;
            int len = J->tw - tx0 < t0 + nt - t ? J->tw - tx0 : t0 + nt - t;
            int x0 = m * tx0 - p, n = m * len + 2; /* input columns x0 .. x0+n-1 */
            for (int r = 0; r < a; r++) {
                int iy = m * ty - p + r;
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
            rows_transform(m, rows, u, n);
            for (int i = 0; i < a; i++)
                cols_transform(m, u[i], len, vbuf + (size_t)(a * i) * xi_stride + (size_t)c * nb + (t - t0), xi_stride);
            t += len;
        }
        for (int xi = 0; xi < a * a; xi++) /* tiles past the end: zeros, never output */
            memset(vbuf + xi * xi_stride + (size_t)c * nb + nt, 0, sizeof(float) * (nb - nt));
    }
}

/* A^T M A + bias for tiles q < len of one output channel: M of tile q at
 * mb[xi * xi_stride + q], output row r of the tiles in y[r][m*q ..]. Each step is a
 * loop over the tiles, reading M's rows contiguously (vectorisable). */
static void tiles_output(int m, const float *mb, size_t xi_stride, int len, float bias, float y[][ROW_MAX]) {
    if (m == 2) {
        for (int q = 0; q < len; q++) {
            float s[4], d[4];
            for (int b = 0; b < 4; b++) { /* A^T M, column b */
                float m0 = mb[b * xi_stride + q], m1 = mb[(4 + b) * xi_stride + q];
                float m2 = mb[(8 + b) * xi_stride + q], m3 = mb[(12 + b) * xi_stride + q];
                s[b] = m0 + m1 + m2;
                d[b] = m1 - m2 - m3;
            }
            y[0][2 * q] = s[0] + s[1] + s[2] + bias, y[0][2 * q + 1] = s[1] - s[2] - s[3] + bias;
            y[1][2 * q] = d[0] + d[1] + d[2] + bias, y[1][2 * q + 1] = d[1] - d[2] - d[3] + bias;
        }
        return;
    }
    enum { TQ = ROW_MAX / 4 };
    float t[4][6][TQ]; /* A^T M: row r, column b, tile q */
    for (int b = 0; b < 6; b++) {
        const float *m0 = mb + b * xi_stride;
        size_t r = 6 * xi_stride;
        at4(m0, m0 + r, m0 + 2 * r, m0 + 3 * r, m0 + 4 * r, m0 + 5 * r, len, 0.f, t[0][b], t[1][b], t[2][b], t[3][b]);
    }
    for (int r = 0; r < 4; r++) { /* (A^T M) A, row r: four outputs per tile */
        float o[4][TQ];
        at4(t[r][0], t[r][1], t[r][2], t[r][3], t[r][4], t[r][5], len, bias, o[0], o[1], o[2], o[3]);
        float *yr = y[r];
        for (int q = 0; q < len; q++)
            yr[4 * q] = o[0][q], yr[4 * q + 1] = o[1][q], yr[4 * q + 2] = o[2][q], yr[4 * q + 3] = o[3][q];
    }
}

/* Y for output channels [co0, co0+mc), then the activation */
static void output_transform(const WinoJob *J, const float *mbuf, int co0, int mc, int t0, int nt, float *out) {
    const ConvLayer *L = J->L;
    int oh = J->out->h, ow = J->out->w, nb = J->nb, m = J->m;
    float y[4][ROW_MAX];
    for (int c = 0; c < mc; c++) {
        int co = co0 + c;
        float *plane = out + (size_t)co * oh * ow;
        for (int t = t0; t < t0 + nt;) {
            int ty = t / J->tw, tx0 = t % J->tw;
            int len = J->tw - tx0 < t0 + nt - t ? J->tw - tx0 : t0 + nt - t;
            tiles_output(m, mbuf + (size_t)c * nb + (t - t0), J->mbuf_xi, len, L->bias[co], y);
            int x0 = m * tx0, n = (m * (tx0 + len) < ow ? m * (tx0 + len) : ow) - x0; /* the last tile may stick out */
            for (int dy = 0; dy < m && m * ty + dy < oh; dy++) {
                float *r = plane + (size_t)(m * ty + dy) * ow + x0;
                memcpy(r, y[dy], sizeof(float) * n);
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
    int mr = K->mr, nr = K->nr, nb = J->nb, aa = J->a * J->a;
    int mchunk = (int)(task % J->mchunks);
    size_t rest = task / J->mchunks;
    int blk = (int)(rest % J->nblocks), img = (int)(rest / J->nblocks);
    int t0 = blk * nb, nt = J->tiles - t0 < nb ? J->tiles - t0 : nb;
    int co0 = mchunk * J->mcw, mc = L->cout - co0 < J->mcw ? L->cout - co0 : J->mcw;
    int mp0 = co0 / mr, mpn = (mc + mr - 1) / mr;
    const float *in = J->in->p + img * J->in->bstride;
    float *out = J->out->p + img * J->out->bstride;
    int kcw = blocks_of(J->m).kcw;
    float *vbuf = scratch, *mbuf = scratch + (size_t)aa * kcw * nb;
    int kcb = kblock(J->m, L->cin);
    for (int ci0 = 0; ci0 < L->cin; ci0 += kcb) {
        int kc = L->cin - ci0 < kcb ? L->cin - ci0 : kcb;
        input_transform(J, in, ci0, kc, t0, nt, vbuf);
        for (int xi = 0; xi < aa; xi++) {
            const float *u = J->u + u_offset(aa, L->mpanels, mr, ci0, kc, xi, mp0);
            const float *v = vbuf + (size_t)xi * kc * nb;
            float *mx = mbuf + (size_t)xi * J->mbuf_xi;
            for (int mp = 0; mp < mpn; mp++)
                for (int j = 0; j < nb; j += nr)
                    K->gemm_micro(kc, u + (size_t)mp * kc * mr, v + j, (size_t)nb, mx + (size_t)mp * mr * nb + j,
                                  (size_t)nb, ci0 ? MICRO_ACC : 0, NULL, ACT_NONE, 0.f);
        }
    }
    output_transform(J, mbuf, co0, mc, t0, nt, out);
}

void winograd_run(const ConvLayer *L, int m, const float *u, const Map *in, const Map *out, float *scratch) {
    int nr = L->kern->nr;
    int th = (out->h + m - 1) / m, tw = (out->w + m - 1) / m;
    /* a block of at most nbw tiles; fewer on small maps (a 10x10 output has 25 F(2x2)
     * tiles: one NR panel instead of a 64-tile block that would be 60% padding) */
    int nb = nbw(L->kern, m), all = (th * tw + nr - 1) / nr * nr;
    if (all < nb) nb = all;
    WinoBlocks bl = blocks_of(m);
    WinoJob J = {.L = L,
                 .in = in,
                 .out = out,
                 .u = u,
                 .m = m,
                 .a = m + 2,
                 .tw = tw,
                 .tiles = th * tw,
                 .nb = nb,
                 .scratch = scratch,
                 .per_slot = winograd_scratch_floats(L->kern, m)};
    J.nblocks = (J.tiles + nb - 1) / nb;
    /* F(2x2) with several threads: chunks of half the output channels: each thread's M buffer
     * halves (two threads share the cache and memory system) and a map has twice the tasks
     * to balance. Measured against ONNX Runtime in alternating runs (docs/BENCHMARKS.md):
     * gelan-c at 640, 2 threads, 3% faster; with one thread the full chunk is faster (one
     * input transform). F(4x4)'s 128 is the chunk for any thread count (64 repeated the input
     * transform too often: +30%). Small maps (20x20, 10x10) have one or two blocks of tiles: split the
     * output channels finer so that every thread has work (two tasks per thread), in whole
     * panels. */
    int threads = pool_threads(), mr = L->kern->mr, mcw = threads > 1 && m == 2 ? bl.mcw / 2 : bl.mcw;
    size_t base = (size_t)in->n * J.nblocks;
    if (base * ((L->cout + mcw - 1) / mcw) < 2 * (size_t)threads) {
        int want = (int)((2 * (size_t)threads + base - 1) / base); /* chunks wanted */
        mcw = ((L->cout + want - 1) / want + mr - 1) / mr * mr;
        if (mcw > bl.mcw) mcw = bl.mcw;
        if (mcw < mr) mcw = mr;
    }
    J.mcw = mcw;
    J.mbuf_xi = (size_t)mcw * nb;
    J.mchunks = (L->cout + mcw - 1) / mcw;
    J.ntasks = (size_t)in->n * J.nblocks * J.mchunks;
    size_t slots = (size_t)threads < J.ntasks ? (size_t)threads : J.ntasks;
    if (2.0 * in->n * L->cout * L->cin * 9 * out->h * out->w < SERIAL_FLOPS) slots = 1;
    parallel_tasks(J.ntasks, slots, wino_task, &J);
}
