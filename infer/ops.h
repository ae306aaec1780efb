/* The runtime's operators on NCHW float32 maps (internal to infer/).
 *
 * A map is given by its first element, its shape and a batch stride: image i
 * starts at p + i*bstride, and inside an image channels are contiguous planes
 * of h*w floats. The batch stride lets an op read a channel slice of a larger
 * map (split is a view) and write into a channel slice of one (a concat's
 * inputs are computed in place). */
#ifndef GELAN_INFER_OPS_H
#define GELAN_INFER_OPS_H

#include <stddef.h>

#include "infer/kernels.h"

typedef struct {
    float *p;
    int n, c, h, w;
    size_t bstride; /* floats between images (>= c*h*w) */
} Map;

/* Below this many FLOPs a conv runs on the calling thread: handing work to the pool costs a
 * few microseconds while its threads spin between jobs, tens when they sleep. */
#define SERIAL_FLOPS 1e6

/* A conv pass is split into tasks numbered over (image, group, block of pixels
 * or rows, chunk of output channels), the chunk varying fastest. */
typedef struct {
    int img, group, block, mchunk;
} ConvTask;

static inline ConvTask conv_task_decode(size_t task, int mchunks, int nblocks, int groups) {
    ConvTask c;
    c.mchunk = (int)(task % (size_t)mchunks), task /= (size_t)mchunks;
    c.block = (int)(task % (size_t)nblocks), task /= (size_t)nblocks;
    c.group = (int)(task % (size_t)groups), c.img = (int)(task / (size_t)groups);
    return c;
}

/* ---- conv: the weights packed once for one kernel table -------------------- */
typedef struct {
    int cin, cout, k, s, p, d, g;
    int act;
    float alpha;
    const InferKernels *kern;
    int depthwise; /* groups == cin == cout: direct per-channel kernel */
    int winograd;  /* 3x3 stride 1, 16+ channels: may run as Winograd F(2x2) or F(4x4) (winograd.c) */
    int direct;    /* k > 1, stride 1 or 2, no dilation: no im2col (conv.c) when the input band fits */
    int kdim;      /* GEMM K = cin/g * k * k */
    int mpanels;   /* panels of kern->mr output channels per group */
    float *wpack;  /* [g][mpanels][kdim][mr] (zero-padded rows), [cout][k*k] when depthwise */
    float *wino[2]; /* Winograd's transformed weights for F(2x2) and F(4x4) (layout: winograd.c's
                     * u_offset), made from wpack by the first conv_run that uses them (NULL until then) */
    float *bias;   /* [g][mpanels*mr], zero-padded */
} ConvLayer;

/* Packs w [cout, cin/g, k, k] and b [cout] (NULL = no bias) for kern. */
int conv_init(ConvLayer *L, const InferKernels *kern, int cin, int cout, int k, int s, int p, int d, int g, int act,
              float alpha, const float *w, const float *b);
void conv_free(ConvLayer *L);
int conv_out_size(int in, int k, int s, int p, int d); /* <= 0 when the input is too small */
/* floats of scratch one thread needs */
size_t conv_scratch_floats(const ConvLayer *L);
/* out = act(conv(in) + b); scratch holds nthreads * conv_scratch_floats(L) floats
 * (nthreads = pool_threads() at the time of the call). Not const: the first call
 * that runs a Winograd variant adds its weights to L. */
void conv_run(ConvLayer *L, const Map *in, const Map *out, float *scratch);

/* Whether conv_init uses Winograd where it applies: 0 never, 1 with the output
 * tile that pays (the default), 2 or 4 always F(2x2,3x3) or F(4x4,3x3) (tests).
 * The environment variable GELAN_INFER_WINOGRAD=0, 2 or 4 sets the same. */
void conv_set_winograd(int mode);

/* Whether convs use the direct convolution (no im2col): 0 never, 1 where it
 * pays (the default), 2 wherever it applies (tests, comparisons); the environment
 * variable GELAN_INFER_DIRECT=0, 1 or 2 sets the same. Affects the convs initialised
 * afterwards. */
void conv_set_direct(int mode);

/* Winograd F(m x m,3x3), m = 2 or 4 (winograd.c), used by conv for 3x3 stride-1 convs:
 * the transformed weights from conv's panels (wpack, g = 1), and the conv with them. */
int winograd_applies(int cin, int cout, int k, int s, int d, int g);
float *winograd_pack(const InferKernels *kern, int m, int cin, int cout, const float *wpack);
size_t winograd_scratch_floats(const InferKernels *kern, int m);
void winograd_run(const ConvLayer *L, int m, const float *u, const Map *in, const Map *out, float *scratch);

/* Reference conv, straight from the definition (tests). w [cout, cin/g, k, k]. */
void conv_naive(const float *in, int n, int cin, int h, int w, const float *wt, const float *b, int cout, int k, int s,
                int p, int d, int g, int act, float alpha, float *out);

/* ---- the other ops ---------------------------------------------------------- */
/* Max pool (padding never wins) and average pool; oh/ow from conv_out_size(.., d=1).
 * count_include_pad: divide by k*k always (PyTorch's default), else by the
 * number of taps inside the input. */
void maxpool_run(const Map *in, const Map *out, int k, int s, int p);
void avgpool_run(const Map *in, const Map *out, int k, int s, int p, int count_include_pad);
/* Nearest neighbour: src = floor(dst * in / out), as F.interpolate(mode='nearest'). */
void upsample_run(const Map *in, const Map *out);
/* Copies in into out (same shape, different strides). */
void copy_run(const Map *in, const Map *out);
void add_run(const Map *a, const Map *b, const Map *out);

/* DFL decode of the per-level raw maps into pred [n, 4+nc, A] (see detect.c);
 * nl <= 64 levels, reg_max <= 64. */
void detect_run(const InferKernels *kern, const Map *levels, int nl, int nc, int reg_max, const float *strides,
                float *pred);

#endif
