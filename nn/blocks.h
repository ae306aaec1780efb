/* The building blocks of YOLOv9 / GELAN models, one struct per official
 * module (models/common.py, models/yolo.py), with the official parameter
 * names. Used by the model builder (nn/model.c) and by code that walks a built
 * model (fuse, summary, convert). Each block has
 *   *_build:   creates its units (parameters registered under `prefix`, in the
 *              official registration order) and checks the channel arithmetic
 *              it relies on;
 *   *_forward: runs on the tape (training: BN batch statistics and running
 *              updates; eval: running statistics).
 * Output sizes and multiply-adds come from block_shape (nn/summary.c). */
#ifndef GELAN_NN_BLOCKS_H
#define GELAN_NN_BLOCKS_H

#include <stdbool.h>

#include "autograd/tape.h"
#include "tensor/rng.h"
#include "tensor/tensor.h"

struct Model;

#define BN_EPS 1e-3f /* set by the official initialize_weights() */
#define BN_MOMENTUM 0.03f
#define DETECT_MAX_LEVELS 8
#define DETECT_MAX_HEADS 3
#define CBLINEAR_MAX_OUTS 8

typedef enum { ACT_NONE, ACT_SILU, ACT_RELU, ACT_LEAKY_RELU } ActKind;

typedef struct {
    ActKind kind;
    float slope; /* LeakyReLU */
} Act;

/* The primitive: Conv2d (+ optional bias) -> optional BatchNorm2d -> activation.
 * The official Conv is a ConvUnit with BN and no bias (names PREFIX.conv.weight,
 * PREFIX.bn.*); a bare nn.Conv2d with bias (detect outputs, CBLinear) is a
 * ConvUnit without BN. Folding the BN (nn/fuse.c) gives it a bias instead. */
typedef struct ConvUnit {
    char *name;    /* prefix of the Conv2d's tensors: NAME.weight, NAME.bias */
    char *bn_name; /* prefix of the BatchNorm2d's tensors, NULL without BN */
    int c1, c2, k, s, p, g;
    Act act;
    Tensor *weight;    /* [c2, c1/g, k, k] */
    Tensor *bias;      /* [c2] or NULL */
    Tensor *bn_weight; /* gamma, beta, running mean/var: [c2] or NULL */
    Tensor *bn_bias;
    Tensor *bn_mean;
    Tensor *bn_var;
    bool conv_module;     /* an official Conv (Conv2d + BN + act in one module), not a bare nn.Conv2d */
    bool frozen;          /* the DFL's fixed 0..15 weight: never trained */
    bool removed;         /* merged away by fusing (RepConvN's 1x1 branch) */
    struct QuantState *q; /* quantization-aware training state (nn/quant.h), NULL: a float conv */
} ConvUnit;

/* RepConvN: act(BN(conv3x3(x)) + BN(conv1x1(x))), no identity branch. After
 * fusing, conv1 holds the merged 3x3 kernel (renamed PREFIX.conv) and conv2 is
 * removed. */
typedef struct RepConvN {
    ConvUnit *conv1, *conv2;
    Act act;
    bool fused;
} RepConvN;

/* RepNBottleneck(c1, c2, shortcut, e=1): x + cv2(cv1(x)) when c1 == c2. */
typedef struct {
    RepConvN *cv1;
    ConvUnit *cv2;
    bool add;
} RepNBottleneck;

/* RepNCSP(c1, c2, n): cv3(cat(m(cv1(x)), cv2(x))). */
typedef struct {
    ConvUnit *cv1, *cv2, *cv3;
    RepNBottleneck *m;
    int n;
} RepNCSP;

/* RepNCSPELAN4(c1, c2, c3, c4, n): the GELAN block. */
typedef struct {
    int c; /* c3 / 2 */
    ConvUnit *cv1;
    RepNCSP cv2_csp;
    ConvUnit *cv2_conv;
    RepNCSP cv3_csp;
    ConvUnit *cv3_conv;
    ConvUnit *cv4;
} RepNCSPELAN4;

/* ELAN1(c1, c2, c3, c4): RepNCSPELAN4 with plain 3x3 Convs as cv2, cv3. */
typedef struct {
    int c;
    ConvUnit *cv1, *cv2, *cv3, *cv4;
} ELAN1;

/* SPPELAN(c1, c2, c3): cv1, three chained SP(5) max pools, cv5. */
typedef struct {
    ConvUnit *cv1, *cv5;
    int k; /* pool size (5) */
} SPPELAN;

typedef struct {
    ConvUnit *cv1;
} AConv;

typedef struct {
    ConvUnit *cv1, *cv2;
} ADown;

/* CBLinear(c1, c2s): one 1x1 conv with bias, output split into len(c2s) pieces. */
typedef struct {
    ConvUnit *conv;
    int nout;
    int c2s[CBLINEAR_MAX_OUTS];
} CBLinear;

/* CBFuse(idx): piece idx[i] of the i-th CBLinear input, resized (nearest) to
 * the last input, all summed with the last input. */
typedef struct {
    int n;
    int idx[CBLINEAR_MAX_OUTS];
} CBFuse;

/* nn.Upsample(None, scale, 'nearest'). */
typedef struct {
    int scale;
} Upsample;

/* nn.MaxPool2d / SP / MP. */
typedef struct {
    int k, s, p;
    bool sp_wrapper; /* SP/MP wrap an nn.MaxPool2d (one more module in the count) */
} MaxPool;

/* The seed's ShuffleNetV2 unit (nn/shufflenet.c): stride 1: split channels
 * in halves, cat(branch1(x1), branch2(x2)); stride s: cat(branch1(x),
 * branch2(x)); then a channel shuffle with 2 groups. branch1 = 1x1-BN
 * (stride 1) or dw3x3-BN, 1x1-BN-ReLU; branch2 = 1x1-BN-ReLU, dw3x3-BN,
 * 1x1-BN-ReLU. */
typedef struct {
    int stride, c1, c2;
    ConvUnit *b1_dw; /* stride > 1 only */
    ConvUnit *b1_pw;
    ConvUnit *b2_pw1, *b2_dw, *b2_pw2;
} ShuffleNetV2;

/* DDetect / DualDDetect / TripleDDetect. Head h (0 = first written) has box
 * branch cv{2+2h}[l] (Conv3x3, Conv3x3 g=4, Conv2d 1x1 g=4 -> 4*reg_max) and
 * class branch cv{3+2h}[l] (Conv3x3, Conv3x3, Conv2d 1x1 -> nc), and its DFL
 * (dfl, dfl2, dfl3). The last head is the main one. */
typedef struct {
    int nheads, nl, nc, reg_max, no;
    float stride[DETECT_MAX_LEVELS];
    ConvUnit *box[DETECT_MAX_HEADS][DETECT_MAX_LEVELS][3];
    ConvUnit *cls[DETECT_MAX_HEADS][DETECT_MAX_LEVELS][3];
    ConvUnit *dfl[DETECT_MAX_HEADS];
} Detect;

typedef enum {
    BLOCK_SILENCE,
    BLOCK_CONV,
    BLOCK_ACONV,
    BLOCK_ADOWN,
    BLOCK_ELAN1,
    BLOCK_REPNCSPELAN4,
    BLOCK_SPPELAN,
    BLOCK_CBLINEAR,
    BLOCK_CBFUSE,
    BLOCK_CONCAT,
    BLOCK_UPSAMPLE,
    BLOCK_MAXPOOL,
    BLOCK_SHUFFLENETV2,
    BLOCK_DETECT,
} BlockKind;

/* One instance of a module (a YAML row with n > 1 holds n of them). */
typedef struct Block {
    BlockKind kind;
    union {
        ConvUnit *conv;
        AConv aconv;
        ADown adown;
        ELAN1 elan1;
        RepNCSPELAN4 elan4;
        SPPELAN sppelan;
        CBLinear cblinear;
        CBFuse cbfuse;
        Upsample upsample;
        MaxPool pool;
        ShuffleNetV2 shuffle;
        Detect *detect;
    } u;
} Block;

/* ---- pruned widths (nn/model.c; docs/FORMATS.md "Pruned widths") -------------
 * A row of a pruned model's YAML may end its arguments with a list of
 * [path, channels] pairs (path relative to the row's model.N, '.' = the row's
 * own module). While model_build builds that row, the conv modules it names get
 * that many output channels instead of the count derived from the arguments:
 * conv_new and repconvn_new (by their prefix) and the ShuffleNetV2 convs (by
 * their name) ask here; every input width follows from what actually feeds it.
 * Returns dflt when the row names no width for prefix (always, outside a build). */
int model_width_override(const char *prefix, int dflt);
/* Whether a YAML value is such a list of [path, channels] pairs. */
struct CfgValue;
bool model_is_width_list(const struct CfgValue *v);

/* ---- units (nn/conv.c) ------------------------------------------------------ */

/* Creates and registers a unit with fresh PyTorch-like initialisation (conv:
 * kaiming-uniform a=sqrt(5), i.e. U(+-1/sqrt(fan_in)); bias U(+-1/sqrt(fan_in));
 * BN: gamma 1, beta 0, mean 0, var 1). name/bn_name are copied; bn_name NULL =
 * no BN. NULL with gelan_error when the channels do not divide by the groups. */
ConvUnit *unit_new(struct Model *m, const char *name, const char *bn_name, int c1, int c2, int k, int s, int p, int g,
                   bool bias, Act act);
/* The official Conv(c1, c2, k, s, p=None -> k/2, g) under PREFIX: PREFIX.conv, PREFIX.bn. */
ConvUnit *conv_new(struct Model *m, const char *prefix, int c1, int c2, int k, int s, int p, int g, Act act);
Tensor *unit_forward(const ConvUnit *u, Tape *t, Tensor *x, bool training);
/* Output size and multiply-adds of the conv (bias excluded) for an input hxw. */
void unit_shape(const ConvUnit *u, int h, int w, int *ho, int *wo, double *macs);
Tensor *act_forward(Act act, Tape *t, Tensor *x);

RepConvN *repconvn_new(struct Model *m, const char *prefix, int c1, int c2, Act act);
Tensor *repconvn_forward(const RepConvN *r, Tape *t, Tensor *x, bool training);
void repconvn_shape(const RepConvN *r, int h, int w, double *macs);

/* ---- blocks ------------------------------------------------------------------
 * Build functions return 0, or -1 with a gelan_error describing the channel
 * problem (the builder prefixes file, layer, module and `from`). */
int repncsp_build(RepNCSP *b, struct Model *m, const char *prefix, int c1, int c2, int n, Act act);
Tensor *repncsp_forward(const RepNCSP *b, Tape *t, Tensor *x, bool training);
void repncsp_shape(const RepNCSP *b, int h, int w, double *macs);

int elan4_build(RepNCSPELAN4 *b, struct Model *m, const char *prefix, int c1, int c2, int c3, int c4, int n, Act act);
Tensor *elan4_forward(const RepNCSPELAN4 *b, Tape *t, Tensor *x, bool training);
int elan1_build(ELAN1 *b, struct Model *m, const char *prefix, int c1, int c2, int c3, int c4, Act act);
Tensor *elan1_forward(const ELAN1 *b, Tape *t, Tensor *x, bool training);
int sppelan_build(SPPELAN *b, struct Model *m, const char *prefix, int c1, int c2, int c3, Act act);
Tensor *sppelan_forward(const SPPELAN *b, Tape *t, Tensor *x, bool training);

int aconv_build(AConv *b, struct Model *m, const char *prefix, int c1, int c2, Act act);
Tensor *aconv_forward(const AConv *b, Tape *t, Tensor *x, bool training);
int adown_build(ADown *b, struct Model *m, const char *prefix, int c1, int c2, Act act);
Tensor *adown_forward(const ADown *b, Tape *t, Tensor *x, bool training);

int cblinear_build(CBLinear *b, struct Model *m, const char *prefix, int c1, const int *c2s, int n, int k, int s, int p,
                   int g);
int cblinear_forward(const CBLinear *b, Tape *t, Tensor *x, Tensor **out);
/* pieces[0..n-1] are the selected CBLinear outputs, last the main input. */
Tensor *cbfuse_forward(Tape *t, Tensor *const *pieces, int n, Tensor *last);

int shufflenet_build(ShuffleNetV2 *b, struct Model *m, const char *prefix, int c1, int c2, int stride);
Tensor *shufflenet_forward(const ShuffleNetV2 *b, Tape *t, Tensor *x, bool training);
/* out channel j = in channel (j % groups) * (C / groups) + j / groups (view, transpose, flatten). */
Tensor *channel_shuffle(Tape *t, Tensor *x, int groups);

/* nheads 1/2/3, ch[nheads*nl] input channels. Bias initialisation needs the
 * strides: detect_bias_init after they are known. */
Detect *detect_build(struct Model *m, const char *prefix, int nheads, int nc, const int *ch, int nch, Act act);
void detect_free(Detect *d);
void detect_bias_init(Detect *d);
/* maps[h][l] = cat(box, cls) of head h, level l; inputs x[h*nl + l]. */
int detect_forward(const Detect *d, Tape *t, Tensor *const *x, bool training, Tensor *maps[][DETECT_MAX_LEVELS]);
/* The official eval decode of one head's level maps: [N, 4+nc, A] (cx, cy, w, h
 * in pixels, then class probabilities). Not differentiable (eval only). */
Tensor *detect_decode(const Detect *d, int head, Tape *t, Tensor *const *maps);

/* Output spatial size and multiply-adds of one block for single-input blocks. */
void block_shape(const Block *b, int h, int w, int *ho, int *wo, double *macs);

/* Frees the heap parts of a block (units belong to the model). */
void block_free(Block *b);
/* Frees every unit and RepConvN registered in the model (nn/conv.c). */
void model_units_free(struct Model *m);
/* Rebuilds the model's parameter and buffer name tables from its units
 * (nn/model.c; after building and after fusing). */
int model_rebuild_names(struct Model *m);

#endif
