/* Pooling, upsampling, copies and adds: memory-bound ops, split over
 * (image, channel) planes across the pool. */
#include <float.h>
#include <string.h>

#include "infer/ops.h"
#include "tensor/pool.h"

typedef struct {
    const Map *a, *b, *out;
    int k, s, p, flag;
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

/* Pooling row by row: for each tap (ky, kx) that lands inside the input, one
 * pass over the output row, over the range of ox whose tap is in bounds, so
 * the inner loops have no bounds checks and vectorise (stride 1). */
static void ox_range(int kx, int s, int p, int w, int ow, int *lo, int *hi) {
    /* 0 <= ox*s - p + kx < w */
    int a = p - kx;
    *lo = a <= 0 ? 0 : (a + s - 1) / s;
    int b = w - 1 + p - kx; /* ox*s <= b */
    *hi = b < 0 ? 0 : b / s + 1;
    if (*hi > ow) *hi = ow;
    if (*lo > *hi) *lo = *hi;
}

static void pool_planes(void *ctx, size_t begin, size_t end) {
    PlaneJob *J = ctx;
    const Map *in = J->a, *out = J->out;
    int k = J->k, s = J->s, p = J->p, is_max = J->flag < 0, cip = J->flag == 1;
    for (size_t t = begin; t < end; t++) {
        const float *src = plane_in(in, t);
        float *dst = plane_out(out, t);
        for (int oy = 0; oy < out->h; oy++) {
            float *orow = dst + (size_t)oy * out->w;
            for (int ox = 0; ox < out->w; ox++) orow[ox] = is_max ? -FLT_MAX : 0.f;
            int y0 = oy * s - p, rows = 0;
            for (int ky = 0; ky < k; ky++) {
                int iy = y0 + ky;
                if (iy < 0 || iy >= in->h) continue;
                rows++;
                const float *irow = src + (size_t)iy * in->w;
                for (int kx = 0; kx < k; kx++) {
                    int lo, hi;
                    ox_range(kx, s, p, in->w, out->w, &lo, &hi);
                    const float *tap = irow - p + kx;
                    if (is_max && s == 1)
                        for (int ox = lo; ox < hi; ox++) orow[ox] = tap[ox] > orow[ox] ? tap[ox] : orow[ox];
                    else if (is_max)
                        for (int ox = lo; ox < hi; ox++) orow[ox] = tap[ox * s] > orow[ox] ? tap[ox * s] : orow[ox];
                    else if (s == 1)
                        for (int ox = lo; ox < hi; ox++) orow[ox] += tap[ox];
                    else
                        for (int ox = lo; ox < hi; ox++) orow[ox] += tap[ox * s];
                }
            }
            if (is_max) continue;
            /* PyTorch's divisor: with count_include_pad the window clipped to the
             * padded input, else only the taps inside the input */
            int ycnt = cip ? (y0 + k < in->h + p ? y0 + k : in->h + p) - y0 : rows;
            for (int ox = 0; ox < out->w; ox++) {
                int x0 = ox * s - p, x1 = x0 + k;
                int xcnt = cip ? (x1 < in->w + p ? x1 : in->w + p) - x0 : (x1 < in->w ? x1 : in->w) - (x0 > 0 ? x0 : 0);
                orow[ox] /= (float)(ycnt * xcnt);
            }
        }
    }
}

void maxpool_run(const Map *in, const Map *out, int k, int s, int p) {
    PlaneJob J = {.a = in, .out = out, .k = k, .s = s, .p = p, .flag = -1};
    parallel_for((size_t)in->n * in->c, plane_chunk(out), pool_planes, &J);
}

void avgpool_run(const Map *in, const Map *out, int k, int s, int p, int count_include_pad) {
    PlaneJob J = {.a = in, .out = out, .k = k, .s = s, .p = p, .flag = count_include_pad ? 1 : 0};
    parallel_for((size_t)in->n * in->c, plane_chunk(out), pool_planes, &J);
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
