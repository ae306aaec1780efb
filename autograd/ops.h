/* Every differentiable op. Each takes the tape, allocates its output from the
 * tape's arena and records its backward when gradients are wanted. All return
 * NULL on bad input with a gelan_error naming the op and the shapes involved,
 * e.g. "conv2d: input has 128 channels, weight expects 256 (weight
 * [64,256,1,1], input [1,128,64,64])". Images are NCHW. One file per op
 * family holds the forward and the backward side by side. */
#ifndef GELAN_OPS_H
#define GELAN_OPS_H

#include <stdbool.h>

#include "autograd/tape.h"

/* ---- autograd/conv2d.c ---------------------------------------------------
 * x [N,Cin,H,W], w [Cout,Cin/groups,kh,kw], b [Cout] or NULL.
 * Output [N,Cout,(H+2p-kh)/s+1,(W+2p-kw)/s+1]. im2col + sgemm; 1x1 stride-1
 * unpadded convs are a plain GEMM. */
Tensor *op_conv2d(Tape *t, Tensor *x, Tensor *w, Tensor *b, int stride, int pad, int groups);

/* ---- autograd/batchnorm.c ------------------------------------------------
 * Training: normalise with the biased batch variance over (N,H,W), and update
 * running = (1-momentum)*running + momentum*batch with the UNBIASED variance
 * (exactly PyTorch). Eval: use the running statistics. running_* may be NULL
 * in training (no update). */
Tensor *op_batchnorm2d(Tape *t, Tensor *x, Tensor *gamma, Tensor *beta, Tensor *running_mean, Tensor *running_var,
                       float eps, float momentum, bool training);
/* Synchronised batch norm (data-parallel --sync-bn, train/dist.h): while a hook
 * is set, training-mode op_batchnorm2d takes its statistics over the global
 * batch of all processes. The hook replaces values[0..n) by their sums over the
 * processes (an allreduce; 0, or -1 with gelan_error). The forward calls it
 * twice (per-channel sums and the value count [C+1], then the squared
 * deviations from the global mean [C]), the backward once (sum(dy) and
 * sum(dy * (x - mean)) per channel [2C]); dgamma and dbeta stay this process's
 * share. NULL (the default): per-process statistics. Process-wide. */
typedef int (*BnSyncFn)(void *ctx, double *values, size_t n);
void batchnorm2d_set_sync(BnSyncFn fn, void *ctx);

/* ---- autograd/activation.c ---------------------------------------------- */
Tensor *op_silu(Tape *t, Tensor *x);
Tensor *op_relu(Tape *t, Tensor *x);
Tensor *op_leaky_relu(Tape *t, Tensor *x, float slope);
Tensor *op_sigmoid(Tape *t, Tensor *x);

/* ---- autograd/pool2d.c ---------------------------------------------------
 * Padding acts as -inf for max pooling; average pooling counts the padding
 * (PyTorch's default count_include_pad=True), floor mode. */
Tensor *op_maxpool2d(Tape *t, Tensor *x, int k, int stride, int pad);
Tensor *op_avgpool2d(Tape *t, Tensor *x, int k, int stride, int pad);

/* ---- autograd/upsample.c -------------------------------------------------
 * Nearest neighbour to [out_h, out_w]: src = floor(dst * in / out), as
 * F.interpolate(mode='nearest'). An integer scale s is out = s * in. */
Tensor *op_upsample_nearest(Tape *t, Tensor *x, int out_h, int out_w);

/* ---- autograd/shape.c ----------------------------------------------------
 * Concatenation and slicing along dimension dim (1 = channels for NCHW). */
Tensor *op_concat(Tape *t, Tensor *const *xs, int n, int dim);
Tensor *op_slice(Tape *t, Tensor *x, int dim, int start, int len);
/* Splits x along dim into pieces of sizes[0..n-1] (which must sum to the
 * dimension) into out[0..n-1]. Returns 0 or -1. */
int op_split(Tape *t, Tensor *x, int dim, const int *sizes, int n, Tensor **out);
/* Same data, new shape (element counts must agree). */
Tensor *op_reshape(Tape *t, Tensor *x, int ndim, const int *shape);

/* ---- autograd/elementwise.c ----------------------------------------------
 * Same-shape add and multiply; scale by a constant. */
Tensor *op_add(Tape *t, Tensor *a, Tensor *b);
Tensor *op_mul(Tape *t, Tensor *a, Tensor *b);
Tensor *op_scale(Tape *t, Tensor *x, float s);

/* ---- autograd/reduce.c ---------------------------------------------------
 * Sum / mean of all elements (a one-element tensor of shape [1]). */
Tensor *op_sum(Tape *t, Tensor *x);
Tensor *op_mean(Tape *t, Tensor *x);

/* ---- autograd/softmax.c --------------------------------------------------
 * Along dimension dim, numerically stable. */
Tensor *op_softmax(Tape *t, Tensor *x, int dim);
Tensor *op_log_softmax(Tape *t, Tensor *x, int dim);

/* ---- autograd/lossops.c --------------------------------------------------
 * Elementwise BCE-with-logits against constant targets (same shape):
 * max(x,0) - x*t + log(1+exp(-|x|)). */
Tensor *op_bce_with_logits(Tape *t, Tensor *logits, const Tensor *target);
/* out[..., i, ...] = x[..., idx[i], ...] along dim (index_select). */
Tensor *op_index_select(Tape *t, Tensor *x, int dim, const int *idx, int n);

/* ---- autograd/fakequant.c (quantization-aware training; section added by qat) ----
 * Fake quantization simulates in fp32 the int8 scheme of infer/qconv.h with the
 * runtime's float operations (same codes): activations per tensor asymmetric
 * uint8 [0, 255], weights per output channel symmetric int8 [-127, 127] with
 * scale max|w_c| / 127. Gradients: the straight-through estimator, zero where
 * the code before clamping, nearbyintf(x/s) + zp, falls outside [0, 255]
 * (torch.fake_quantize_per_tensor_affine); scales get no gradient. */
#include <stdint.h>

/* out = (clamp(nearbyintf(x * (1/scale)) + zp, 0, 255) - zp) * scale. */
Tensor *op_fake_quant_act(Tape *t, Tensor *x, float scale, int zp);
/* w [Cout, ...]: out = clamp(nearbyintf(w * (1/s_c)), -127, 127) * s_c, s_c = max|w_c|/127
 * (1 for a zero channel). scale_out [Cout] receives s_c when not NULL. */
Tensor *op_fake_quant_weight(Tape *t, Tensor *w, float *scale_out);
/* The codes and scales op_fake_quant_weight simulates (for export): w [cout][per_channel]. */
void fake_quant_weight_codes(const float *w, int cout, size_t per_channel, int8_t *codes, float *scale);
/* f = gamma / sqrtf(running_var + eps), [C]; gradient to gamma only. */
Tensor *op_bn_fold_factor(Tape *t, Tensor *gamma, const Tensor *running_var, float eps);
/* out = x * s[c] (divide: x / s[c], 0 where s[c] == 0) with c the index along dim;
 * s has x->shape[dim] elements. Gradients to x and s. */
Tensor *op_scale_channels(Tape *t, Tensor *x, Tensor *s, int dim, bool divide);
/* out = (bias - running_mean) * factor + beta, [C]; bias may be NULL (0). */
Tensor *op_bn_fold_bias(Tape *t, Tensor *beta, Tensor *bias, const Tensor *running_mean, Tensor *factor);
/* wk [C,I,k,k] (k odd) with w1 [C,I,1,1] added at the centre tap: RepConvN's merge. */
Tensor *op_merge_center(Tape *t, Tensor *wk, Tensor *w1);

#endif
