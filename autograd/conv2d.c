/* 2-D convolution, forward and backward (contract in ops.h).
 *
 * For one image and one group the convolution is a matrix product
 *     y_g [Cout/g, P] = W_g [Cout/g, K] * col_g [K, P],    K = (Cin/g)*kh*kw, P = Ho*Wo,
 * where row (c,ky,kx) of `col` ("im2col") holds, for every output position, the input pixel
 * under kernel tap (ky,kx) of channel c, or 0 where the tap falls into the padding. The
 * backward pass is two more products per image and group:
 *     dW_g += dy_g * col_g^T
 *     dcol_g = W_g^T * dy_g,  then dx += col2im(dcol)  (each tap adds back onto its pixel)
 * and db is a sum of dy over images and positions.
 *
 * Special cases:
 * - 1x1, stride 1, no padding: col is x itself, so there is no im2col at all.
 * - one input channel per group (depthwise): each GEMM would have a single row of K = kh*kw,
 *   so a direct loop over image planes on the thread pool is much faster.
 *
 * Memory: the columns are built for a block of output rows at a time, into a scratch buffer
 * of at most ~2 MiB from the tape's arena (which is only reset after the step, so a per-conv
 * buffer of kh*kw times the input would add up to 1 GiB over gelan-c at 640). They are not
 * kept for backward: backward recomputes im2col into the same buffer.
 *
 * Threads: everything runs on the pool: im2col, col2im, the bias and the depthwise loops
 * split over channels or rows here, and blas_sgemm splits each large GEMM by itself. */
#include <string.h>

#include "autograd/ops.h"
#include "tensor/blas.h"
#include "tensor/error.h"
#include "tensor/pool.h"

typedef struct {
    int N, Cin, H, W; /* input */
    int Cout, kh, kw; /* weight [Cout, Cin/groups, kh, kw] */
    int stride, pad, groups;
    int Ho, Wo;   /* output */
    int cig, cog; /* input / output channels per group */
} ConvGeom;

static size_t g_P(const ConvGeom *g) { return (size_t)g->Ho * g->Wo; }
static size_t g_HW(const ConvGeom *g) { return (size_t)g->H * g->W; }
static size_t g_Kg(const ConvGeom *g) { return (size_t)g->cig * g->kh * g->kw; }

static bool is_pointwise(const ConvGeom *g) { return g->kh == 1 && g->kw == 1 && g->stride == 1 && g->pad == 0; }
static bool is_depthwise(const ConvGeom *g) { return g->cig == 1 && g->groups > 1; }

/* ---- argument checking ------------------------------------------------------------- */

static int conv_geometry(const Tensor *x, const Tensor *w, const Tensor *b, int stride, int pad, int groups,
                         ConvGeom *g) {
    char sx[64], sw[64], sb[64];
    if (!x || !w) return gelan_error("conv2d: %s is NULL", x ? "weight" : "input");
    tensor_shape_str(x, sx, sizeof sx);
    tensor_shape_str(w, sw, sizeof sw);
    if (x->ndim != 4) return gelan_error("conv2d: input must be 4-D [N,C,H,W], got %s", sx);
    if (w->ndim != 4) return gelan_error("conv2d: weight must be 4-D [Cout,Cin/groups,kh,kw], got %s", sw);
    if (stride < 1) return gelan_error("conv2d: stride must be >= 1, got %d", stride);
    if (pad < 0) return gelan_error("conv2d: padding must be >= 0, got %d", pad);
    if (groups < 1) return gelan_error("conv2d: groups must be >= 1, got %d", groups);
    *g = (ConvGeom){.N = x->shape[0],
                    .Cin = x->shape[1],
                    .H = x->shape[2],
                    .W = x->shape[3],
                    .Cout = w->shape[0],
                    .kh = w->shape[2],
                    .kw = w->shape[3],
                    .stride = stride,
                    .pad = pad,
                    .groups = groups};
    if (g->Cin % groups)
        return gelan_error("conv2d: groups %d does not divide the %d input channels (input %s)", groups, g->Cin, sx);
    if (g->Cout % groups)
        return gelan_error("conv2d: groups %d does not divide the %d output channels (weight %s)", groups, g->Cout, sw);
    if ((long)w->shape[1] * groups != g->Cin)
        return gelan_error("conv2d: input has %d channels, weight expects %ld (weight %s, input %s)", g->Cin,
                           (long)w->shape[1] * groups, sw, sx);
    if (g->kh < 1 || g->kw < 1) return gelan_error("conv2d: empty kernel (weight %s)", sw);
    if (g->kh > g->H + 2 * pad || g->kw > g->W + 2 * pad)
        return gelan_error("conv2d: kernel %dx%d is larger than the padded input %dx%d (pad %d, weight %s, input %s)",
                           g->kh, g->kw, g->H + 2 * pad, g->W + 2 * pad, pad, sw, sx);
    if (b && b->numel != (size_t)g->Cout)
        return gelan_error("conv2d: bias has %zu elements, weight has %d output channels (bias %s, weight %s)",
                           b->numel, g->Cout, tensor_shape_str(b, sb, sizeof sb), sw);
    g->Ho = (g->H + 2 * pad - g->kh) / stride + 1;
    g->Wo = (g->W + 2 * pad - g->kw) / stride + 1;
    g->cig = g->Cin / groups;
    g->cog = g->Cout / groups;
    return 0;
}

/* Output positions o in [*lo, *hi) for which tap k reads inside the input: 0 <= o*s - p + k < in. */
static void tap_range(int in, int out, int s, int p, int k, int *lo, int *hi) {
    int a = p - k > 0 ? (p - k + s - 1) / s : 0;
    int b = in - 1 + p - k >= 0 ? (in - 1 + p - k) / s + 1 : 0;
    if (b > out) b = out;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

/* Sum of n floats; independent partial sums so the compiler can vectorise it. */
static float sum_f32(const float *p, size_t n) {
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += p[i + j];
    float s = 0;
    for (; i < n; i++) s += p[i];
    for (int j = 0; j < 8; j++) s += acc[j];
    return s;
}

/* Dot product of n floats, with independent partial sums as sum_f32. */
static float dot_f32(const float *a, const float *b, size_t n) {
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float s = 0;
    for (; i < n; i++) s += a[i] * b[i];
    for (int j = 0; j < 8; j++) s += acc[j];
    return s;
}

/* ---- im2col / col2im, one block of output rows of one image at a time ---------------
 * A block is the output rows [oy0, oy0 + rows) of one image, B = rows*Wo positions; its
 * columns are [Cin*kh*kw, B] for all groups at once (row r = (c*kh + ky)*kw + kx). Working
 * by blocks bounds the scratch (see block_rows) and keeps the columns in cache between
 * im2col and the GEMM that reads them, or the GEMM that writes them and col2im. */

typedef struct {
    const ConvGeom *g;
    float *x;      /* one image [Cin,H,W]: read by im2col, accumulated into by col2im */
    float *col;    /* the block's columns [Cin*kh*kw, rows*Wo] */
    int oy0, rows; /* the block */
} ColCtx;

/* Output rows per block, so that a block's columns take at most ~COL_BLOCK_BYTES (one row
 * at least). 2 MiB keeps the GEMMs at full speed (N >= ~100) while bounding the arena
 * scratch of a conv: gelan-c at 640 needs 131 MiB of columns instead of 1 GiB. */
#define COL_BLOCK_BYTES ((size_t)2 << 20)
static int block_rows(const ConvGeom *g) {
    size_t row_bytes = (size_t)g->Cin * g->kh * g->kw * g->Wo * sizeof(float);
    size_t rows = COL_BLOCK_BYTES / (row_bytes ? row_bytes : 1);
    return rows < 1 ? 1 : rows > (size_t)g->Ho ? g->Ho : (int)rows;
}

static void im2col_rows(void *vctx, size_t r0, size_t r1) {
    const ColCtx *c = vctx;
    const ConvGeom *g = c->g;
    const int s = g->stride, p = g->pad, Wo = g->Wo;
    for (size_t r = r0; r < r1; r++) {
        int kx = (int)(r % (size_t)g->kw), ky = (int)(r / (size_t)g->kw % (size_t)g->kh);
        int ch = (int)(r / ((size_t)g->kw * g->kh));
        const float *src = c->x + (size_t)ch * g_HW(g);
        float *dst = c->col + r * c->rows * Wo;
        int ylo, yhi, xlo, xhi;
        tap_range(g->H, g->Ho, s, p, ky, &ylo, &yhi);
        tap_range(g->W, g->Wo, s, p, kx, &xlo, &xhi);
        for (int oy = c->oy0; oy < c->oy0 + c->rows; oy++) {
            float *d = dst + (size_t)(oy - c->oy0) * Wo;
            if (oy < ylo || oy >= yhi || xlo == xhi) { /* the tap reads only padding here */
                memset(d, 0, (size_t)Wo * sizeof *d);
                continue;
            }
            const float *row = src + (size_t)(oy * s - p + ky) * g->W;
            int ix = xlo * s - p + kx; /* first input column read */
            memset(d, 0, (size_t)xlo * sizeof *d);
            if (s == 1) {
                memcpy(d + xlo, row + ix, (size_t)(xhi - xlo) * sizeof *d);
            } else if (s == 2) { /* a constant stride lets the compiler vectorise the gather */
                const float *rr = row + ix;
                for (int o = 0; o < xhi - xlo; o++) d[xlo + o] = rr[2 * o];
            } else {
                for (int ox = xlo; ox < xhi; ox++, ix += s) d[ox] = row[ix];
            }
            memset(d + xhi, 0, (size_t)(Wo - xhi) * sizeof *d);
        }
    }
}

/* dx[c] += the taps of channel c in the block's columns, for channels [c0, c1): channels own
 * disjoint rows of col and disjoint planes of dx, so the split over channels needs no lock. */
static void col2im_channels(void *vctx, size_t c0, size_t c1) {
    const ColCtx *c = vctx;
    const ConvGeom *g = c->g;
    const int s = g->stride, p = g->pad, Wo = g->Wo;
    for (size_t ch = c0; ch < c1; ch++) {
        float *plane = c->x + ch * g_HW(g);
        for (int ky = 0; ky < g->kh; ky++) {
            for (int kx = 0; kx < g->kw; kx++) {
                const float *src = c->col + ((ch * g->kh + ky) * g->kw + kx) * c->rows * Wo;
                int ylo, yhi, xlo, xhi;
                tap_range(g->H, g->Ho, s, p, ky, &ylo, &yhi);
                tap_range(g->W, g->Wo, s, p, kx, &xlo, &xhi);
                if (ylo < c->oy0) ylo = c->oy0;
                if (yhi > c->oy0 + c->rows) yhi = c->oy0 + c->rows;
                if (xlo == xhi) continue; /* the tap reads only padding */
                for (int oy = ylo; oy < yhi; oy++) {
                    float *row = plane + (size_t)(oy * s - p + ky) * g->W;
                    const float *d = src + (size_t)(oy - c->oy0) * Wo;
                    int ix = xlo * s - p + kx;
                    float *rr = row + ix;
                    if (s == 1) {
                        for (int o = 0; o < xhi - xlo; o++) rr[o] += d[xlo + o];
                    } else if (s == 2) {
                        for (int o = 0; o < xhi - xlo; o++) rr[2 * o] += d[xlo + o];
                    } else {
                        for (int ox = xlo; ox < xhi; ox++, ix += s) row[ix] += d[ox];
                    }
                }
            }
        }
    }
}

/* Rows of at least ~16k floats per piece, so small layers do not pay for waking the pool. */
static size_t rows_chunk(size_t row_len) { return row_len >= 16384 ? 1 : 16384 / (row_len ? row_len : 1); }

static void im2col(const ConvGeom *g, const float *x, int oy0, int rows, float *col) {
    ColCtx c = {g, (float *)x, col, oy0, rows};
    parallel_for((size_t)g->Cin * g->kh * g->kw, rows_chunk((size_t)rows * g->Wo), im2col_rows, &c);
}

static void col2im(const ConvGeom *g, const float *col, int oy0, int rows, float *dx) {
    ColCtx c = {g, dx, (float *)col, oy0, rows};
    parallel_for((size_t)g->Cin, rows_chunk((size_t)rows * g->Wo * g->kh * g->kw), col2im_channels, &c);
}

/* ---- bias ---------------------------------------------------------------------------- */

typedef struct {
    const ConvGeom *g;
    float *y; /* forward: output; backward: dy */
    float *b; /* forward: bias; backward: db */
} BiasCtx;

/* forward: rows are (n, co) planes of the output */
static void bias_add_rows(void *vctx, size_t r0, size_t r1) {
    const BiasCtx *c = vctx;
    size_t P = g_P(c->g);
    for (size_t r = r0; r < r1; r++) {
        float v = c->b[r % (size_t)c->g->Cout], *y = c->y + r * P;
        for (size_t i = 0; i < P; i++) y[i] += v;
    }
}

/* backward: db[co] += sum over images and positions of dy */
static void bias_grad_channels(void *vctx, size_t c0, size_t c1) {
    const BiasCtx *c = vctx;
    const ConvGeom *g = c->g;
    for (size_t co = c0; co < c1; co++) {
        double s = 0;
        for (int n = 0; n < g->N; n++) s += sum_f32(c->y + ((size_t)n * g->Cout + co) * g_P(g), g_P(g));
        c->b[co] += (float)s;
    }
}

/* ---- depthwise: one input channel per group, as direct loops --------------------------- */

typedef struct {
    const ConvGeom *g;
    const float *x, *w, *b, *dy;
    float *y, *dx, *dw;
} DwCtx;

/* y planes (n, co) in [r0, r1): y = b + sum over taps of w * shifted x */
static void dw_forward_planes(void *vctx, size_t r0, size_t r1) {
    const DwCtx *c = vctx;
    const ConvGeom *g = c->g;
    const int s = g->stride, p = g->pad;
    for (size_t r = r0; r < r1; r++) {
        int co = (int)(r % (size_t)g->Cout), n = (int)(r / (size_t)g->Cout);
        const float *xp = c->x + ((size_t)n * g->Cin + co / g->cog) * g_HW(g);
        const float *wk = c->w + (size_t)co * g->kh * g->kw;
        float *yp = c->y + r * g_P(g);
        float b = c->b ? c->b[co] : 0.f;
        for (size_t i = 0; i < g_P(g); i++) yp[i] = b;
        for (int ky = 0; ky < g->kh; ky++) {
            for (int kx = 0; kx < g->kw; kx++) {
                float wv = wk[ky * g->kw + kx];
                int ylo, yhi, xlo, xhi;
                tap_range(g->H, g->Ho, s, p, ky, &ylo, &yhi);
                tap_range(g->W, g->Wo, s, p, kx, &xlo, &xhi);
                if (xlo == xhi) continue; /* the tap reads only padding */
                for (int oy = ylo; oy < yhi; oy++) {
                    const float *row = xp + (size_t)(oy * s - p + ky) * g->W + (xlo * s - p + kx);
                    float *out = yp + (size_t)oy * g->Wo;
                    if (s == 1)
                        for (int ox = xlo; ox < xhi; ox++) out[ox] += wv * row[ox - xlo];
                    else
                        for (int ox = xlo; ox < xhi; ox++) out[ox] += wv * row[(ox - xlo) * s];
                }
            }
        }
    }
}

/* dx planes (n, ci) in [r0, r1): each gathers from its cog output channels */
static void dw_dx_planes(void *vctx, size_t r0, size_t r1) {
    const DwCtx *c = vctx;
    const ConvGeom *g = c->g;
    const int s = g->stride, p = g->pad;
    for (size_t r = r0; r < r1; r++) {
        int ci = (int)(r % (size_t)g->Cin), n = (int)(r / (size_t)g->Cin);
        float *dxp = c->dx + r * g_HW(g);
        for (int co = ci * g->cog; co < (ci + 1) * g->cog; co++) {
            const float *dyp = c->dy + ((size_t)n * g->Cout + co) * g_P(g);
            const float *wk = c->w + (size_t)co * g->kh * g->kw;
            for (int ky = 0; ky < g->kh; ky++) {
                for (int kx = 0; kx < g->kw; kx++) {
                    float wv = wk[ky * g->kw + kx];
                    int ylo, yhi, xlo, xhi;
                    tap_range(g->H, g->Ho, s, p, ky, &ylo, &yhi);
                    tap_range(g->W, g->Wo, s, p, kx, &xlo, &xhi);
                    if (xlo == xhi) continue; /* the tap reads only padding */
                    for (int oy = ylo; oy < yhi; oy++) {
                        float *row = dxp + (size_t)(oy * s - p + ky) * g->W + (xlo * s - p + kx);
                        const float *d = dyp + (size_t)oy * g->Wo;
                        if (s == 1)
                            for (int ox = xlo; ox < xhi; ox++) row[ox - xlo] += wv * d[ox];
                        else
                            for (int ox = xlo; ox < xhi; ox++) row[(ox - xlo) * s] += wv * d[ox];
                    }
                }
            }
        }
    }
}

/* dw for output channels [c0, c1): dw[co,ky,kx] += sum over images and positions of dy * x */
static void dw_dw_channels(void *vctx, size_t c0, size_t c1) {
    const DwCtx *c = vctx;
    const ConvGeom *g = c->g;
    const int s = g->stride, p = g->pad;
    for (size_t co = c0; co < c1; co++) {
        for (int ky = 0; ky < g->kh; ky++) {
            for (int kx = 0; kx < g->kw; kx++) {
                int ylo, yhi, xlo, xhi;
                tap_range(g->H, g->Ho, s, p, ky, &ylo, &yhi);
                tap_range(g->W, g->Wo, s, p, kx, &xlo, &xhi);
                if (xlo == xhi) continue; /* the tap reads only padding */
                double acc = 0;
                for (int n = 0; n < g->N; n++) {
                    const float *xp = c->x + ((size_t)n * g->Cin + co / (size_t)g->cog) * g_HW(g);
                    const float *dyp = c->dy + ((size_t)n * g->Cout + co) * g_P(g);
                    for (int oy = ylo; oy < yhi; oy++) {
                        const float *row = xp + (size_t)(oy * s - p + ky) * g->W + (xlo * s - p + kx);
                        const float *d = dyp + (size_t)oy * g->Wo;
                        if (s == 1) {
                            acc += dot_f32(d + xlo, row, (size_t)(xhi - xlo));
                        } else {
                            float a = 0;
                            for (int ox = xlo; ox < xhi; ox++) a += d[ox] * row[(ox - xlo) * s];
                            acc += a;
                        }
                    }
                }
                c->dw[(co * g->kh + ky) * g->kw + kx] += (float)acc;
            }
        }
    }
}

/* Planes of at least ~16k output floats per piece. */
static size_t planes_chunk(const ConvGeom *g) { return rows_chunk(g_P(g) * g->kh * g->kw); }

/* ---- the op -------------------------------------------------------------------------- */

typedef struct {
    ConvGeom g;
    float *col; /* the forward's column scratch, reused by backward (contents not needed) */
} ConvSaved;

static int conv2d_backward(Tape *t, TapeNode *node) {
    const ConvSaved *sv = node->saved;
    const ConvGeom *g = &sv->g;
    Tensor *x = node->in[0], *w = node->in[1], *b = node->n_in > 2 ? node->in[2] : NULL;
    const float *dy = node->out->grad;
    float *dx = tape_grad_of(t, x), *dw = tape_grad_of(t, w), *db = b ? tape_grad_of(t, b) : NULL;
    if ((x->requires_grad && !dx) || (w->requires_grad && !dw) || (b && b->requires_grad && !db)) return -1;
    const size_t P = g_P(g), HW = g_HW(g), Kg = g_Kg(g), cig = (size_t)g->cig, cog = (size_t)g->cog;

    if (db) {
        BiasCtx bc = {g, (float *)dy, db};
        parallel_for((size_t)g->Cout, rows_chunk(P * g->N), bias_grad_channels, &bc);
    }
    if (is_depthwise(g)) {
        DwCtx c = {.g = g, .x = x->data, .w = w->data, .dy = dy, .dx = dx, .dw = dw};
        if (dx) parallel_for((size_t)g->N * g->Cin, planes_chunk(g), dw_dx_planes, &c);
        if (dw) parallel_for((size_t)g->Cout, rows_chunk(P * g->N * g->kh * g->kw), dw_dw_channels, &c);
        return 0;
    }
    for (int n = 0; n < g->N; n++) {
        const float *xn = x->data + (size_t)n * g->Cin * HW;
        const float *dyn = dy + (size_t)n * g->Cout * P;
        float *dxn = dx ? dx + (size_t)n * g->Cin * HW : NULL;
        if (is_pointwise(g)) { /* col = x: dW += dy x^T, dx += W^T dy */
            for (int k = 0; k < g->groups; k++) {
                if (dw)
                    blas_sgemm(false, true, g->cog, g->cig, (int)P, 1.f, dyn + k * cog * P, (int)P, xn + k * cig * HW,
                               (int)P, 1.f, dw + k * cog * cig, g->cig);
                if (dx)
                    blas_sgemm(true, false, g->cig, (int)P, g->cog, 1.f, w->data + k * cog * cig, g->cig,
                               dyn + k * cog * P, (int)P, 1.f, dxn + k * cig * HW, (int)P);
            }
            continue;
        }
        const int rows = block_rows(g);
        for (int oy0 = 0; oy0 < g->Ho; oy0 += rows) {
            const int nb = oy0 + rows <= g->Ho ? rows : g->Ho - oy0, B = nb * g->Wo;
            const float *dyb = dyn + (size_t)oy0 * g->Wo; /* the block's columns of dy, row stride P */
            if (dw) {
                im2col(g, xn, oy0, nb, sv->col);
                for (int k = 0; k < g->groups; k++)
                    blas_sgemm(false, true, g->cog, (int)Kg, B, 1.f, dyb + k * cog * P, (int)P, sv->col + k * Kg * B, B,
                               1.f, dw + k * cog * Kg, (int)Kg);
            }
            if (dx) {
                for (int k = 0; k < g->groups; k++)
                    blas_sgemm(true, false, (int)Kg, B, g->cog, 1.f, w->data + k * cog * Kg, (int)Kg, dyb + k * cog * P,
                               (int)P, 0.f, sv->col + k * Kg * B, B);
                col2im(g, sv->col, oy0, nb, dxn);
            }
        }
    }
    return 0;
}

Tensor *op_conv2d(Tape *t, Tensor *x, Tensor *w, Tensor *b, int stride, int pad, int groups) {
    ConvGeom g;
    if (conv_geometry(x, w, b, stride, pad, groups, &g) != 0) return NULL;
    Tensor *y = tape_tensor4(t, g.N, g.Cout, g.Ho, g.Wo);
    if (!y) return NULL;
    const size_t P = g_P(&g), HW = g_HW(&g), Kg = g_Kg(&g), cog = (size_t)g.cog;
    float *col = NULL;

    if (is_depthwise(&g)) {
        DwCtx c = {.g = &g, .x = x->data, .w = w->data, .b = b ? b->data : NULL, .y = y->data};
        parallel_for((size_t)g.N * g.Cout, planes_chunk(&g), dw_forward_planes, &c);
    } else if (is_pointwise(&g)) {
        for (int n = 0; n < g.N; n++)
            for (int k = 0; k < g.groups; k++)
                blas_sgemm(false, false, g.cog, (int)P, (int)Kg, 1.f, w->data + k * cog * Kg, (int)Kg,
                           x->data + ((size_t)n * g.Cin + k * Kg) * HW, (int)P, 0.f,
                           y->data + ((size_t)n * g.Cout + k * cog) * P, (int)P);
    } else {
        const int rows = block_rows(&g);
        if (!(col = tape_alloc(t, (size_t)g.groups * Kg * rows * g.Wo * sizeof *col))) return NULL;
        for (int n = 0; n < g.N; n++) {
            const float *xn = x->data + (size_t)n * g.Cin * HW;
            for (int oy0 = 0; oy0 < g.Ho; oy0 += rows) {
                const int nb = oy0 + rows <= g.Ho ? rows : g.Ho - oy0, B = nb * g.Wo;
                im2col(&g, xn, oy0, nb, col);
                /* the block's outputs are columns [oy0*Wo, oy0*Wo + B) of y's [Cout, P] rows */
                float *yb = y->data + (size_t)n * g.Cout * P + (size_t)oy0 * g.Wo;
                for (int k = 0; k < g.groups; k++)
                    blas_sgemm(false, false, g.cog, B, (int)Kg, 1.f, w->data + k * cog * Kg, (int)Kg, col + k * Kg * B,
                               B, 0.f, yb + k * cog * P, (int)P);
            }
        }
    }
    if (b && !is_depthwise(&g)) { /* (the depthwise loops add their bias themselves) */
        BiasCtx bc = {&g, y->data, b->data};
        parallel_for((size_t)g.N * g.Cout, rows_chunk(P), bias_add_rows, &bc);
    }

    Tensor *in[3] = {x, w, b};
    int n_in = b ? 3 : 2;
    if (!tape_wants_grad(t, in, n_in)) return y;
    ConvSaved *sv;
    if (!tape_record(t, "conv2d", y, in, n_in, conv2d_backward, sizeof *sv, (void **)&sv)) return NULL;
    sv->g = g;
    sv->col = col; /* backward recomputes im2col into it (NULL for 1x1 and depthwise) */
    return y;
}
