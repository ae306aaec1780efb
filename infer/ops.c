/* Pooling, upsampling, copies and adds: memory-bound ops, split over
 * (image, channel) planes across the pool. */
#include <float.h>
#include <string.h>

#include "infer/ops.h"
#include "tensor/pool.h"

typedef struct {
    const Map *a, *b, *out;
} PlaneJob;

static const float *plane_in(const Map *m, size_t t) {
    return m->p + (t / m->c) * m->bstride + (t % m->c) * (size_t)m->h * m->w;
}
static float *plane_out(const Map *m, size_t t) {
    return m->p + (t / m->c) * m->bstride + (t % m->c) * (size_t)m->h * m->w;
}
/* planes per parallel piece: about 16K floats of work */
static size_t plane_chunk(const Map *m) {
    size_t hw = (size_t)m->h * m->w;
    return hw >= 16384 ? 1 : 16384 / hw;
}

/* ---- pooling -------------------------------------------------------------------------
 * The definition (pool_window): a window's taps in row-major order (ky, then kx), those
 * outside the input skipped; the max starts from -FLT_MAX and keeps the first of equal
 * values (+0 and -0 are equal), the sum starts from +0 and is divided by PyTorch's
 * count. The order is part of the result (the bits of a float sum, the sign of a zero
 * max), and the fast path keeps it: both give the same bits.
 *
 * The fast path streams a plane through a ring of k input rows, padded on both sides
 * with a value that cannot change a result: -FLT_MAX for the max (it never beats a
 * running max that starts there) and +0 for the sum (a sum that starts at +0 is never
 * -0, so adding +0 changes no bit). Every output is then the same k x k taps with no
 * bounds checks, a loop that the compiler unrolls for the common windows and vectorises
 * along the output row. When no window reaches outside the input (no padding, stride
 * 1) the taps are read where they are. Stride-1 max pools (SPPELAN's 5x5) are
 * separable: the ring holds each input row's 1 x k maxima and an output is the max of
 * k of them, 2k compares instead of k*k; the first maximal tap in row-major order is
 * the first maximal row maximum's first maximal tap, so the bits are the same. */
#define POOL_MAXK 32  /* larger windows take pool_window */
#define POOL_BUF 8192 /* floats of stack for a plane's ring (32 KB); wider rows go in tiles */

typedef struct {
    int h, w, oh, ow, k, s, p;
    int is_max, cip;
} PoolGeom;

/* PyTorch's divisor along one axis: with count_include_pad the window clipped to the
 * padded input, else the taps inside the input. */
static int pool_count(int o, int k, int s, int p, int len, int cip) {
    int a = o * s - p, b = a + k;
    if (cip) return (b < len + p ? b : len + p) - a;
    return (b < len ? b : len) - (a > 0 ? a : 0);
}

/* One output, straight from the definition. */
static float pool_window(const PoolGeom *g, const float *src, int oy, int ox) {
    float acc = g->is_max ? -FLT_MAX : 0.f;
    for (int ky = 0; ky < g->k; ky++) {
        int iy = oy * g->s - g->p + ky;
        if (iy < 0 || iy >= g->h) continue;
        for (int kx = 0; kx < g->k; kx++) {
            int ix = ox * g->s - g->p + kx;
            if (ix < 0 || ix >= g->w) continue;
            float v = src[(size_t)iy * g->w + ix];
            acc = g->is_max ? (v > acc ? v : acc) : acc + v;
        }
    }
    if (g->is_max) return acc;
    return acc /
           (float)(pool_count(oy, g->k, g->s, g->p, g->h, g->cip) * pool_count(ox, g->k, g->s, g->p, g->w, g->cip));
}

/* o[x], x < n: the kh x kw taps rows[ky][x*s + kx] folded in row-major order (the sum
 * divided by dv[x]). Inlined with constant kh, kw, s and is_max, the tap loops unroll
 * and the loop over x vectorises. */
static inline __attribute__((always_inline)) void pool_fold(const float *const *rows, int kh, int kw, int s, int is_max,
                                                            const float *dv, float *restrict o, int n) {
    for (int x = 0; x < n; x++) {
        float acc = is_max ? -FLT_MAX : 0.f;
        for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++) {
                float v = rows[ky][x * s + kx];
                acc = is_max ? (v > acc ? v : acc) : acc + v;
            }
        o[x] = is_max ? acc : acc / dv[x];
    }
}

/* pool_fold with YOLOv9's windows as constants: max 5x5 s1 (SPPELAN, separable: 1x5
 * then 5x1), max 3x3 s2 (ADown), avg 2x2 s1 (ADown, AConv), and their neighbours. */
static void pool_fold_any(const float *const *rows, int kh, int kw, int s, int is_max, const float *dv, float *o,
                          int n) {
#define POOL_CASE(MAX, KH, KW, S)                          \
    if (is_max == MAX && kh == KH && kw == KW && s == S) { \
        pool_fold(rows, KH, KW, S, MAX, dv, o, n);         \
        return;                                            \
    }
    POOL_CASE(1, 1, 5, 1);
    POOL_CASE(1, 5, 1, 1);
    POOL_CASE(1, 1, 3, 1);
    POOL_CASE(1, 3, 1, 1);
    POOL_CASE(1, 1, 2, 1);
    POOL_CASE(1, 2, 1, 1);
    POOL_CASE(1, 3, 3, 2);
    POOL_CASE(1, 2, 2, 2);
    POOL_CASE(0, 2, 2, 1);
    POOL_CASE(0, 2, 2, 2);
    POOL_CASE(0, 3, 3, 1);
    POOL_CASE(0, 3, 3, 2);
#undef POOL_CASE
    pool_fold(rows, kh, kw, s, is_max, dv, o, n);
}

static void pool_plane(const PoolGeom *g, const float *src, float *dst) {
    const int k = g->k, s = g->s, p = g->p, h = g->h, w = g->w, is_max = g->is_max;
    const int separable = is_max && s == 1;
    const int in_place = !separable && s == 1 && p == 0;
    const float pad = is_max ? -FLT_MAX : 0.f;
    /* For a tile of n outputs of a row: the input columns under them (RAW), the width of
     * a ring row (those columns, or their maxima), and the floats for the ring of k rows
     * and a row of padding, the padded input row of the separable max, the divisors. */
#define RAW(n) (((n)-1) * s + k)
#define RING_W(n) (separable ? (n) : RAW(n))
#define NEED(n) ((in_place ? 0 : (k + 1) * RING_W(n)) + (separable ? RAW(n) : 0) + (n))
    int tile = g->ow;
    while (k <= POOL_MAXK && tile > 1 && NEED(tile) > POOL_BUF) tile = (tile + 1) / 2;
    if (k > POOL_MAXK || NEED(tile) > POOL_BUF) {
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) dst[(size_t)oy * g->ow + ox] = pool_window(g, src, oy, ox);
        return;
    }
    float buf[POOL_BUF];
    for (int x0 = 0; x0 < g->ow; x0 += tile) {
        const int n = g->ow - x0 < tile ? g->ow - x0 : tile, rw = RING_W(n), raw = RAW(n);
        float *ring = buf, *pad_row = ring + (size_t)k * rw, *in_row = pad_row + rw;
        float *dv = in_place ? buf : separable ? in_row + raw : in_row;
        const int ix0 = x0 * s - p;              /* input column of the tile's first tap */
        int a = ix0 < 0 ? -ix0 : 0, b = w - ix0; /* [a, b): the columns inside the input */
        a = a < raw ? a : raw, b = b < raw ? b : raw, b = b > a ? b : a;
        for (int j = 0; !in_place && j < rw; j++) pad_row[j] = pad;
        int next = 0, ycnt = -1; /* the next input row to load; the rows counted in dv */
        for (int oy = 0; oy < g->oh; oy++) {
            const float *rows[POOL_MAXK];
            for (int ky = 0; ky < k; ky++) {
                const int iy = oy * s - p + ky;
                if (in_place) {
                    rows[ky] = src + (size_t)iy * w + ix0;
                } else if (iy < 0 || iy >= h) {
                    rows[ky] = pad_row;
                } else {
                    float *slot = ring + (size_t)(iy % k) * rw;
                    if (iy >= next) { /* first use of the row: pad it (and take its maxima) */
                        float *r = separable ? in_row : slot;
                        for (int j = 0; j < a; j++) r[j] = pad;
                        memcpy(r + a, src + (size_t)iy * w + ix0 + a, sizeof(float) * (size_t)(b - a));
                        for (int j = b; j < raw; j++) r[j] = pad;
                        const float *in_rows[1] = {in_row};
                        if (separable) pool_fold_any(in_rows, 1, k, 1, 1, dv, slot, n);
                        next = iy + 1;
                    }
                    rows[ky] = slot;
                }
            }
            if (!is_max && ycnt != pool_count(oy, k, s, p, h, g->cip)) {
                ycnt = pool_count(oy, k, s, p, h, g->cip);
                for (int x = 0; x < n; x++) dv[x] = (float)(ycnt * pool_count(x0 + x, k, s, p, w, g->cip));
            }
            float *o = dst + (size_t)oy * g->ow + x0;
            if (separable)
                pool_fold_any(rows, k, 1, 1, 1, dv, o, n);
            else
                pool_fold_any(rows, k, k, s, is_max, dv, o, n);
        }
    }
#undef RAW
#undef RING_W
#undef NEED
}

typedef struct {
    const Map *in, *out;
    PoolGeom g;
} PoolJob;

static void pool_planes(void *ctx, size_t begin, size_t end) {
    const PoolJob *J = ctx;
    for (size_t t = begin; t < end; t++) pool_plane(&J->g, plane_in(J->in, t), plane_out(J->out, t));
}

static void pool_run(const Map *in, const Map *out, int k, int s, int p, int is_max, int cip) {
    PoolJob J = {in, out, {in->h, in->w, out->h, out->w, k, s, p, is_max, cip}};
    parallel_for((size_t)in->n * in->c, plane_chunk(out), pool_planes, &J);
}

void maxpool_run(const Map *in, const Map *out, int k, int s, int p) { pool_run(in, out, k, s, p, 1, 0); }

void avgpool_run(const Map *in, const Map *out, int k, int s, int p, int count_include_pad) {
    pool_run(in, out, k, s, p, 0, count_include_pad != 0);
}

static void upsample_planes(void *ctx, size_t begin, size_t end) {
    PlaneJob *J = ctx;
    const Map *in = J->a, *out = J->out;
    for (size_t t = begin; t < end; t++) {
        const float *src = plane_in(in, t);
        float *dst = plane_out(out, t);
        for (int oy = 0; oy < out->h; oy++) {
            int iy = (int)((long long)oy * in->h / out->h);
            const float *row = src + (size_t)iy * in->w;
            float *orow = dst + (size_t)oy * out->w;
            if (out->w % in->w == 0) { /* integer factor: repeat each value */
                int f = out->w / in->w;
                for (int ix = 0; ix < in->w; ix++)
                    for (int q = 0; q < f; q++) orow[ix * f + q] = row[ix];
            } else {
                for (int ox = 0; ox < out->w; ox++) orow[ox] = row[(long long)ox * in->w / out->w];
            }
        }
    }
}

void upsample_run(const Map *in, const Map *out) {
    PlaneJob J = {.a = in, .out = out};
    parallel_for((size_t)in->n * in->c, plane_chunk(out), upsample_planes, &J);
}

static void copy_planes(void *ctx, size_t begin, size_t end) {
    PlaneJob *J = ctx;
    size_t hw = (size_t)J->a->h * J->a->w;
    for (size_t t = begin; t < end; t++) memcpy(plane_out(J->out, t), plane_in(J->a, t), sizeof(float) * hw);
}

void copy_run(const Map *in, const Map *out) {
    PlaneJob J = {.a = in, .out = out};
    parallel_for((size_t)in->n * in->c, plane_chunk(in), copy_planes, &J);
}

static void add_planes(void *ctx, size_t begin, size_t end) {
    PlaneJob *J = ctx;
    size_t hw = (size_t)J->a->h * J->a->w;
    for (size_t t = begin; t < end; t++) {
        const float *x = plane_in(J->a, t), *y = plane_in(J->b, t);
        float *o = plane_out(J->out, t);
        for (size_t i = 0; i < hw; i++) o[i] = x[i] + y[i];
    }
}

void add_run(const Map *a, const Map *b, const Map *out) {
    PlaneJob J = {.a = a, .b = b, .out = out};
    parallel_for((size_t)a->n * a->c, plane_chunk(a), add_planes, &J);
}
