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
 * The products run on gemm_f32 (infer/gemm.h): the inference runtime's AVX-512 / AVX2 / NEON /
 * portable micro-kernels with BLAS-style packing. The forward pass is the runtime's own conv
 * (infer/conv.c, which also uses Winograd F(2x2,3x3) for 3x3 stride-1 layers) on this step's
 * weights, so training and the deployed model share one convolution.
 *
 * Memory: the columns are built for a block of output rows at a time (at most ~1 MiB), in the
 * tape's scratch buffer, which every op call reuses (a per-conv buffer of kh*kw times the input
 * would add up to 1 GiB over gelan-c at 640). Backward recomputes im2col rather than keeping
 * columns alive.
 *
 * Threads: see "the op: tasks for the threads" below; the bias and depthwise loops split over
 * channels or planes. */
#include <string.h>

#include "autograd/ops.h"
#include "infer/gemm.h"
#include "infer/ops.h"
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
 * A block is the output rows [oy0, oy0 + rows) of one image, B = rows*Wo positions, and the
 * input channels [c0, c1) (one group's, or a share of them); its columns are
 * [(c1-c0)*kh*kw, B] (row r = ((c-c0)*kh + ky)*kw + kx). Working by blocks bounds the
 * scratch (see block_rows) and keeps the columns in cache between im2col and the GEMM that
 * reads them, or the GEMM that writes them and col2im. Both run on the calling thread: the
 * op gives each thread whole tasks (images, blocks, channel shares) instead. */

/* Output rows per block, so that a block's columns take at most ~COL_BLOCK_BYTES (one row
 * at least): the GEMMs run at full speed on such blocks (B >= ~100) and the arena scratch
 * of a conv stays small (a per-conv buffer of kh*kw times the input would add up to 1 GiB
 * over gelan-c at 640). */
#define COL_BLOCK_BYTES ((size_t)1 << 20)
static int block_rows(const ConvGeom *g) {
    size_t row_bytes = g_Kg(g) * g->Wo * sizeof(float);
    size_t rows = COL_BLOCK_BYTES / (row_bytes ? row_bytes : 1);
    return rows < 1 ? 1 : rows > (size_t)g->Ho ? g->Ho : (int)rows;
}

static void im2col_block(const ConvGeom *g, const float *x, int c0, int c1, int oy0, int rows, float *col) {
    const int s = g->stride, p = g->pad, Wo = g->Wo;
    const size_t taps = (size_t)g->kh * g->kw, B = (size_t)rows * Wo;
    for (size_t r = 0; r < (size_t)(c1 - c0) * taps; r++) {
        int kx = (int)(r % (size_t)g->kw), ky = (int)(r / (size_t)g->kw % (size_t)g->kh);
        const float *src = x + (c0 + r / taps) * g_HW(g);
        float *dst = col + r * B;
        int ylo, yhi, xlo, xhi;
        tap_range(g->H, g->Ho, s, p, ky, &ylo, &yhi);
        tap_range(g->W, g->Wo, s, p, kx, &xlo, &xhi);
        for (int oy = oy0; oy < oy0 + rows; oy++) {
            float *d = dst + (size_t)(oy - oy0) * Wo;
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

/* dx[c] += the taps of channel c in the block's columns, for c in [c0, c1). */
static void col2im_block(const ConvGeom *g, const float *col, int c0, int c1, int oy0, int rows, float *dx) {
    const int s = g->stride, p = g->pad, Wo = g->Wo;
    const size_t B = (size_t)rows * Wo;
    for (int ch = c0; ch < c1; ch++) {
        float *plane = dx + (size_t)ch * g_HW(g);
        for (int ky = 0; ky < g->kh; ky++) {
            for (int kx = 0; kx < g->kw; kx++) {
                const float *src = col + (((size_t)(ch - c0) * g->kh + ky) * g->kw + kx) * B;
                int ylo, yhi, xlo, xhi;
                tap_range(g->H, g->Ho, s, p, ky, &ylo, &yhi);
                tap_range(g->W, g->Wo, s, p, kx, &xlo, &xhi);
                if (ylo < oy0) ylo = oy0;
                if (yhi > oy0 + rows) yhi = oy0 + rows;
                if (xlo == xhi) continue; /* the tap reads only padding */
                for (int oy = ylo; oy < yhi; oy++) {
                    float *row = plane + (size_t)(oy * s - p + ky) * g->W;
                    const float *d = src + (size_t)(oy - oy0) * Wo;
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

/* ---- the op: tasks for the threads -------------------------------------------------------
 * Forward, dW and dx each wake the pool once: one "slot" per thread, with its own scratch,
 * runs whole tasks: (image, group, block of output rows) for the forward and dW, (image,
 * group, share of the group's input channels) for dx. A task runs its im2col, GEMM
 * (infer/gemm.h, on the calling thread) and col2im alone, so a conv costs one wake-up per pass
 * instead of one per GEMM. dx tasks own disjoint channel planes of dx; dW tasks add into their
 * slot's own copy of dW, each slot a fixed run of tasks, summed into the gradient in slot
 * order at the end, so the result does not depend on the timing. */

typedef struct {
    const ConvGeom *g;
    const InferKernels *kern;
    const float *x, *w, *dy;
    float *y, *dx;
    float *scratch; /* slots x per_slot floats: the slot's columns, then its GEMM packing */
    size_t per_slot, col_floats;
    float *dw_acc;    /* dW tasks add into dw_acc + slot * dw_stride (stride 0: all into one) */
    size_t dw_stride;
    int rows, nblocks; /* output rows per block, blocks per image (forward, dW) */
    int share, shares; /* input channels per share, shares per group (dx) */
    size_t ntasks, slots;
} ConvJob;

static float *slot_col(const ConvJob *J, size_t slot) { return J->scratch + slot * J->per_slot; }
static float *slot_gemm(const ConvJob *J, size_t slot) { return slot_col(J, slot) + J->col_floats; }

/* Blocks of output rows such that there are at least two tasks per thread when a layer has
 * few images and groups (a batch-1 benchmark), each block bounded by block_rows. */
static void plan_blocks(ConvJob *J, int threads) {
    const ConvGeom *g = J->g;
    int rows = block_rows(g);
    int per_img = (int)((2 * (size_t)threads + (size_t)g->N * g->groups - 1) / ((size_t)g->N * g->groups));
    int want = (g->Ho + per_img - 1) / per_img;
    if (want < rows) rows = want < 1 ? 1 : want;
    J->rows = rows;
    J->nblocks = (g->Ho + rows - 1) / rows;
}

/* A forward or dW task (image, group, block of output rows): where its block lies in y / dy,
 * and its columns (x itself for a 1x1 stride-1 conv, else im2col in the slot's scratch). */
typedef struct {
    int k, B;          /* group, output positions in the block */
    size_t out_off;    /* the block in y / dy: image n, group k's first channel, row oy0 */
    const float *cols; /* [Kg, B] with row stride ld */
    int ld;
} BlockTask;

static BlockTask block_task(const ConvJob *J, size_t task, size_t slot) {
    const ConvGeom *g = J->g;
    int blk = (int)(task % (size_t)J->nblocks), k = (int)(task / J->nblocks % (size_t)g->groups);
    int n = (int)(task / J->nblocks / (size_t)g->groups);
    int oy0 = blk * J->rows, nb = oy0 + J->rows <= g->Ho ? J->rows : g->Ho - oy0;
    BlockTask b = {k, nb * g->Wo, ((size_t)n * g->Cout + (size_t)k * g->cog) * g_P(g) + (size_t)oy0 * g->Wo, NULL, 0};
    const float *xn = J->x + (size_t)n * g->Cin * g_HW(g);
    if (is_pointwise(g)) {
        b.cols = xn + (size_t)k * g->cig * g_HW(g) + (size_t)oy0 * g->Wo;
        b.ld = (int)g_P(g);
    } else {
        im2col_block(g, xn, k * g->cig, (k + 1) * g->cig, oy0, nb, slot_col(J, slot));
        b.cols = slot_col(J, slot);
        b.ld = b.B;
    }
    return b;
}

/* forward task: y block = W_g * columns */
static void fwd_task(void *ctx, size_t task, size_t slot) {
    ConvJob *J = ctx;
    const ConvGeom *g = J->g;
    const int Kg = (int)g_Kg(g);
    BlockTask b = block_task(J, task, slot);
    gemm_f32(J->kern, false, false, g->cog, b.B, Kg, J->w + (size_t)b.k * g->cog * Kg, Kg, b.cols, b.ld, false,
             J->y + b.out_off, (int)g_P(g), slot_gemm(J, slot));
}

/* dW task: the slot's dW_g += dy block * columns^T */
static void dw_task(void *ctx, size_t task, size_t slot) {
    ConvJob *J = ctx;
    const ConvGeom *g = J->g;
    const int Kg = (int)g_Kg(g);
    BlockTask b = block_task(J, task, slot);
    float *dwk = J->dw_acc + slot * J->dw_stride + (size_t)b.k * g->cog * Kg;
    gemm_f32(J->kern, false, true, g->cog, Kg, b.B, J->dy + b.out_off, (int)g_P(g), b.cols, b.ld, true, dwk, Kg,
             slot_gemm(J, slot));
}

/* dx task (image, group, share of input channels): dx[share] += col2im(W_g[:, share]^T * dy) */
static void dx_task(void *ctx, size_t task, size_t slot) {
    ConvJob *J = ctx;
    const ConvGeom *g = J->g;
    const size_t P = g_P(g), Kg = g_Kg(g), cog = (size_t)g->cog, taps = (size_t)g->kh * g->kw;
    int sh = (int)(task % (size_t)J->shares), k = (int)(task / J->shares % (size_t)g->groups);
    int n = (int)(task / J->shares / (size_t)g->groups);
    int c0 = sh * J->share, c1 = c0 + J->share < g->cig ? c0 + J->share : g->cig;
    if (c0 >= c1) return;
    const int ca = k * g->cig + c0; /* first channel of the share in dx */
    const float *dyn = J->dy + ((size_t)n * g->Cout + k * cog) * P;
    float *dxn = J->dx + (size_t)n * g->Cin * g_HW(g);
    const float *wk = J->w + k * cog * Kg + (size_t)c0 * taps; /* W_g^T rows of the share */
    if (is_pointwise(g)) {
        gemm_f32(J->kern, true, false, c1 - c0, (int)P, g->cog, wk, (int)Kg, dyn, (int)P, true,
                 dxn + (size_t)ca * g_HW(g), (int)P, slot_gemm(J, slot));
        return;
    }
    const int rows = block_rows(g);
    for (int oy0 = 0; oy0 < g->Ho; oy0 += rows) {
        const int nb = oy0 + rows <= g->Ho ? rows : g->Ho - oy0, B = nb * g->Wo;
        gemm_f32(J->kern, true, false, (int)((c1 - c0) * taps), B, g->cog, wk, (int)Kg, dyn + (size_t)oy0 * g->Wo,
                 (int)P, false, slot_col(J, slot), B, slot_gemm(J, slot));
        col2im_block(g, slot_col(J, slot), ca, ca + (c1 - c0), oy0, nb, dxn);
    }
}

/* dW tasks sum into their slot's copy of dW: each slot gets a fixed run of tasks instead of
 * taking them from parallel_tasks' shared counter, so the sum, thus the training run, does
 * not depend on the timing. (Forward and dx tasks write disjoint outputs and use the counter.) */
typedef struct {
    ConvJob *J;
    task_fn fn;
} FixedRun;

static void run_fixed(void *ctx, size_t s0, size_t s1) {
    const FixedRun *r = ctx;
    const size_t n = r->J->ntasks, slots = r->J->slots;
    for (size_t slot = s0; slot < s1; slot++)
        for (size_t task = slot * n / slots; task < (slot + 1) * n / slots; task++) r->fn(r->J, task, slot);
}

static size_t slots_for(const ConvJob *J, int threads) {
    return (size_t)threads < J->ntasks ? (size_t)threads : J->ntasks > 0 ? J->ntasks : 1;
}

/* Runs J->ntasks tasks of fn over `slots` slots, each with col_floats floats of columns and
 * the GEMM's packing scratch, all in the tape's scratch after `keep` floats (which the
 * caller uses, e.g. for the slots' dW copies). Returns the scratch (for the caller's part). */
static float *run_tasks(Tape *t, ConvJob *J, task_fn fn, size_t slots, size_t col_floats, size_t keep) {
    J->slots = slots;
    J->col_floats = (col_floats + 15) & ~(size_t)15; /* keeps every part 64-byte aligned */
    J->per_slot = J->col_floats + ((gemm_scratch_floats(J->kern) + 15) & ~(size_t)15);
    keep = (keep + 15) & ~(size_t)15;
    float *mem = tape_scratch(t, (keep + J->per_slot * slots) * sizeof(float));
    if (!mem) return NULL;
    J->scratch = mem + keep;
    if (J->dw_stride) J->dw_acc = mem; /* the slots' own dW copies */
    if (keep) memset(mem, 0, keep * sizeof(float));
    if (J->dw_acc) {
        FixedRun r = {J, fn};
        parallel_for(slots, 1, run_fixed, &r);
    } else {
        parallel_tasks(J->ntasks, slots, fn, J);
    }
    return mem;
}

/* Threads for a conv: one below ~3 MFLOP (waking the pool costs more), none extra inside a
 * parallel region. */
static int conv_threads(const ConvGeom *g) {
    double flops = 2.0 * g->N * g->Cout * (double)g_Kg(g) * (double)g_P(g);
    return pool_in_worker() || flops < 3e6 ? 1 : pool_threads();
}

typedef struct {
    ConvGeom g;
} ConvSaved;

typedef struct {
    const float *parts;
    size_t nparts, stride;
    float *out;
} SumCtx;

/* out[i] += sum over parts of parts[p*stride + i], parts in order */
static void sum_parts(void *vctx, size_t i0, size_t i1) {
    const SumCtx *c = vctx;
    for (size_t p = 0; p < c->nparts; p++) {
        const float *src = c->parts + p * c->stride;
        for (size_t i = i0; i < i1; i++) c->out[i] += src[i];
    }
}

static int conv2d_backward(Tape *t, TapeNode *node) {
    const ConvSaved *sv = node->saved;
    const ConvGeom *g = &sv->g;
    Tensor *x = node->in[0], *w = node->in[1], *b = node->n_in > 2 ? node->in[2] : NULL;
    const float *dy = node->out->grad;
    float *dx = tape_grad_of(t, x), *dw = tape_grad_of(t, w), *db = b ? tape_grad_of(t, b) : NULL;
    if ((x->requires_grad && !dx) || (w->requires_grad && !dw) || (b && b->requires_grad && !db)) return -1;
    const size_t P = g_P(g), Kg = g_Kg(g), taps = (size_t)g->kh * g->kw;

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
    const int threads = conv_threads(g);
    if (dw) {
        ConvJob J = {.g = g, .kern = infer_kernels(), .x = x->data, .w = w->data, .dy = dy};
        plan_blocks(&J, threads);
        J.ntasks = (size_t)g->N * g->groups * J.nblocks;
        const size_t wn = (size_t)g->Cout * Kg, slots = slots_for(&J, threads);
        /* one slot adds straight into the gradient; several add into copies summed at the end */
        J.dw_acc = dw, J.dw_stride = slots > 1 ? (wn + 15) & ~(size_t)15 : 0;
        size_t cols = is_pointwise(g) ? 0 : Kg * (size_t)J.rows * g->Wo;
        if (!run_tasks(t, &J, dw_task, slots, cols, J.dw_stride * slots)) return -1;
        if (slots > 1) {
            SumCtx sc = {J.dw_acc, slots, J.dw_stride, dw};
            parallel_for(wn, 16384, sum_parts, &sc);
        }
    }
    if (dx) {
        ConvJob J = {.g = g, .kern = infer_kernels(), .w = w->data, .dy = dy, .dx = dx};
        size_t per_group = (size_t)g->N * g->groups;
        int shares = (int)((2 * (size_t)threads + per_group - 1) / per_group);
        if (threads == 1) shares = 1;
        if (shares > g->cig / 8) shares = g->cig / 8 > 1 ? g->cig / 8 : 1; /* >= 8 channels a share */
        J.share = (g->cig + shares - 1) / shares;
        J.shares = (g->cig + J.share - 1) / J.share;
        J.ntasks = per_group * J.shares;
        size_t cols = is_pointwise(g) ? 0 : (size_t)J.share * taps * block_rows(g) * g->Wo;
        if (!run_tasks(t, &J, dx_task, slots_for(&J, threads), cols, 0)) return -1;
    }
    return 0;
}

/* Forward on the inference runtime's convolution (infer/conv.c: im2col fused into the GEMM's
 * packing, Winograd for 3x3 stride 1, bias in the GEMM's epilogue) with this step's weights
 * packed on the spot; non-square kernels take the im2col + GEMM tasks above. */
static int conv_forward(Tape *t, const ConvGeom *g, const Tensor *x, const Tensor *w, const Tensor *b, Tensor *y) {
    const int threads = conv_threads(g);
    if (g->kh == g->kw) {
        ConvLayer L;
        if (conv_init(&L, infer_kernels(), g->Cin, g->Cout, g->kh, g->stride, g->pad, 1, g->groups, ACT_NONE, 0.f,
                      w->data, b ? b->data : NULL))
            return -1;
        float *scratch = tape_scratch(t, conv_scratch_floats(&L) * (size_t)pool_threads() * sizeof(float));
        if (!scratch) {
            conv_free(&L);
            return -1;
        }
        Map in = {x->data, g->N, g->Cin, g->H, g->W, (size_t)g->Cin * g_HW(g)};
        Map out = {y->data, g->N, g->Cout, g->Ho, g->Wo, (size_t)g->Cout * g_P(g)};
        conv_run(&L, &in, &out, scratch);
        conv_free(&L);
        return 0;
    }
    ConvJob J = {.g = g, .kern = infer_kernels(), .x = x->data, .w = w->data, .y = y->data};
    plan_blocks(&J, threads);
    J.ntasks = (size_t)g->N * g->groups * J.nblocks;
    if (!run_tasks(t, &J, fwd_task, slots_for(&J, threads), is_pointwise(g) ? 0 : g_Kg(g) * (size_t)J.rows * g->Wo, 0))
        return -1;
    if (b) {
        BiasCtx bc = {g, y->data, b->data};
        parallel_for((size_t)g->N * g->Cout, rows_chunk(g_P(g)), bias_add_rows, &bc);
    }
    return 0;
}

Tensor *op_conv2d(Tape *t, Tensor *x, Tensor *w, Tensor *b, int stride, int pad, int groups) {
    ConvGeom g;
    if (conv_geometry(x, w, b, stride, pad, groups, &g) != 0) return NULL;
    Tensor *y = tape_tensor4(t, g.N, g.Cout, g.Ho, g.Wo);
    if (!y) return NULL;
    if (is_depthwise(&g)) {
        DwCtx c = {.g = &g, .x = x->data, .w = w->data, .b = b ? b->data : NULL, .y = y->data};
        parallel_for((size_t)g.N * g.Cout, planes_chunk(&g), dw_forward_planes, &c);
    } else if (conv_forward(t, &g, x, w, b, y)) {
        gelan_error_prefix("conv2d %s", "forward");
        return NULL;
    }
    Tensor *in[3] = {x, w, b};
    int n_in = b ? 3 : 2;
    if (!tape_wants_grad(t, in, n_in)) return y;
    ConvSaved *sv;
    if (!tape_record(t, "conv2d", y, in, n_in, conv2d_backward, sizeof *sv, (void **)&sv)) return NULL;
    sv->g = g;
    return y;
}
