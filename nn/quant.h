/* Quantization-aware training (QAT) and the quantized model's state.
 *
 * The scheme is the int8 runtime's (infer/qconv.h): every quantized conv
 * quantizes its input per tensor to uint8 (scale s_x, integer zero point zp)
 * and its weight per output channel to int8 (s_w[c] = max|w_c| / 127), and
 * computes y = act(conv(x_q, w_q) * s_x * s_w + bias) in fp32. The fake-quant
 * forward simulates exactly that (autograd/fakequant.c). docs/QUANTIZATION.md
 * has the algebra; in short, for a Conv+BN unit (PyTorch's ConvBn QAT recipe):
 *
 *   f      = gamma / sqrtf(running_var + eps)           (per output channel)
 *   w_q    = fake_quant_weight(w * f)                    the folded weight, quantized
 *   eval, or training with BN frozen:
 *     y = conv(fq(x), w_q) + (bias - running_mean) * f + beta
 *   training, BN not frozen:
 *     y = BN_batch(conv(fq(x), w_q) / f)                 batch statistics; running ones update
 *
 * The eval form is what the int8 model computes (its weight is w * f
 * quantized, its bias the folded one), so validation during QAT, a frozen
 * model, and the exported int8 model agree to float rounding. An unfused
 * RepConvN (3x3 + 1x1 branches, each with BN) is one quantized conv: its input
 * is quantized once; in eval / frozen form its weight is merge(w3*f3, w1*f1)
 * quantized as one kernel (what convert emits); while its BNs still train,
 * each branch is a ConvBn as above. The DFL conv is never quantized.
 *
 * Observers (PyTorch's MovingAverageMinMaxObserver, averaging constant 0.01):
 * first batch min/max, then min += c * (batch_min - min) (max likewise), and
 * qparams from them. They update only in forwards that record gradients for
 * the conv's weight (training steps); validation, calibration and export
 * forwards never change them. A conv whose observer has not seen a batch yet
 * (scale 0) leaves its input in float.
 *
 * Checkpoint state (ARCHITECTURE.md: qat.*), per quantized conv NAME (the
 * Conv2d prefix, e.g. model.3.cv1.conv; a RepConvN's conv1 prefix):
 *   qat.NAME.act_minmax  [2]  observer min, max (+inf, -inf before any batch)
 *   qat.NAME.act_qparams [2]  input scale s_x and zero point zp in use
 * The weight scales are not state: they follow from the weights. */
#ifndef GELAN_NN_QUANT_H
#define GELAN_NN_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "nn/model.h"

#define QAT_AVERAGING_CONSTANT 0.01f

typedef struct QuantState {
    ConvUnit *unit;      /* the quantized conv (a RepConvN's conv1) */
    const RepConvN *rep; /* the unfused RepConvN this conv1 stands for, else NULL */
    Tensor *minmax;      /* [2] observer state */
    Tensor *qparams;     /* [2] s_x, zp */
    float averaging_constant;
    bool observe;    /* observers on (model_qat_freeze_observers) */
    bool bn_frozen;  /* training forwards use the running statistics and leave them */
    bool fake_quant; /* off: the conv runs in plain float (a calibration reference) */
    /* When set, called with the conv's float input in every forward (calibration). */
    void (*input_hook)(void *ctx, struct QuantState *q, const Tensor *x);
    void *hook_ctx;
} QuantState;

/* ---- enabling ------------------------------------------------------------------------------
 * exclude: tokens naming convs that stay float (besides the DFL, always float):
 *   "7"           every conv of layer 7 (model.7.*)
 *   "model.22.cv3" or "22.cv3"   every conv under that module prefix (dot boundary)
 *   "first"       the convs of every layer that reads the input image
 *   "head-out"    the final 1x1 convs of every detect head (cv2/cv3... .{l}.2)
 * A RepConvN stays float as a pair when either of its convs is named. A token
 * that names no conv is an error (a typo must not silently quantize). */
typedef struct {
    const char *const *exclude;
    int nexclude;
    int freeze_bn_epoch;       /* BN statistics frozen from this epoch on (0-based); -1 never */
    int freeze_observer_epoch; /* observers frozen from this epoch on; -1 never */
    float averaging_constant;  /* QAT_AVERAGING_CONSTANT */
} QatOptions;

/* No exclusions; for a run of `epochs`: BN frozen from epochs/2 on, observers
 * from max(1, 3*epochs/4) on (a one-epoch run keeps its observers on). */
void qat_options_default(QatOptions *o, int epochs);

/* Attaches a QuantState (observers on, BN not frozen, fake quant on) to every
 * conv but the excluded ones and the DFL. The model's ordinary forward (train
 * and eval) then fake-quantizes them. Fails, changing nothing, on an exclude
 * token that names no conv or a conv with both a bias and a BN (none of the
 * YOLOv9 modules has one). Enabling again replaces the states. */
int model_qat_enable(Model *m, const QatOptions *o);
/* Detaches and frees every state: the model is a float model again. */
void model_qat_disable(Model *m);
bool model_qat_enabled(const Model *m);
/* Number of quantized convs. */
int model_qat_count(const Model *m);

void model_qat_freeze_bn(Model *m, bool frozen);
void model_qat_freeze_observers(Model *m, bool frozen);
/* Fake quant on or off for every quantized conv (off: the float model). */
void model_qat_set_fake_quant(Model *m, bool on);
/* The freezes of o for epoch (call at the start of every epoch, resumes too). */
void model_qat_apply_epoch(Model *m, const QatOptions *o, int epoch);

/* Frees one state (nn/conv.c, when the unit goes). */
void qat_state_free(QuantState *q);

/* ---- the arithmetic (exposed for tests and calibration) ----------------------------------- */
/* PyTorch's MovingAverageMinMaxObserver step (the first batch, *min = +inf, sets both). */
void qat_observer_update(float *min, float *max, float batch_min, float batch_max, float averaging_constant);
/* calculate_qparams for quint8 [0, 255] in float32: the range [min(lo, 0), max(hi, 0)],
 * scale = (hi - lo) / 255 (at least FLT_EPSILON), zp = clamp(0 - nearbyintf(lo / scale), 0, 255). */
void qat_qparams(float lo, float hi, float *scale, int *zp);

/* min and max of n floats (NaN skipped; +inf, -inf when none), over the thread pool. */
void qat_tensor_minmax(const float *x, size_t n, float *min, float *max);

/* ---- checkpoint state (same callback shapes as optim_state_foreach / _load) --------------- */
typedef int (*QatTensorVisit)(void *ctx, const char *name, Tensor *t);
/* Fills dst (of the expected shape); 0 filled, 1 absent, -1 error. */
typedef int (*QatTensorRead)(void *ctx, const char *name, Tensor *dst);

/* Number of qat.* tensors (2 per quantized conv). */
int model_qat_state_count(const Model *m);
/* Visits qat.NAME.act_minmax and qat.NAME.act_qparams for every quantized conv;
 * the tensors belong to the model (valid until it is freed or disabled). */
int model_qat_foreach(Model *m, QatTensorVisit visit, void *ctx);
/* Restores every quantized conv's state (resume); a missing tensor is an error. */
int model_qat_load(Model *m, QatTensorRead read, void *ctx);
/* Enables QAT on exactly the convs whose state read finds (others stay float)
 * and loads it: how a quantized checkpoint (QAT or `gelan quantize`) is opened
 * for evaluation or export without knowing its exclusions. *count (may be
 * NULL) receives the number of quantized convs; 0 leaves a float model. */
int model_qat_enable_from(Model *m, QatTensorRead read, void *ctx, int *count);
/* Copies the qat state of src into dst (two builds of one config with the same
 * convs quantized: the training model and its EMA / evaluation model). */
int model_qat_copy_state(Model *dst, const Model *src);

/* ---- forwards (nn/conv.c calls these for units whose q is set) ---------------------------- */
Tensor *qat_unit_forward(const ConvUnit *u, Tape *t, Tensor *x, bool training);
Tensor *qat_repconvn_forward(const RepConvN *r, Tape *t, Tensor *x, bool training);

/* ---- export --------------------------------------------------------------------------------
 * model_qat_fold is model_fuse for a quantized model: every BN is folded and
 * every RepConvN merged with the fake-quant forward's own float operations (not
 * fuse.c's double ones), so the folded weight of a quantized conv is bit for bit
 * the one its eval forward quantized; the states stay attached and the folded
 * model's forward is conv(fq(x), fq(w)) + b, equal to the unfolded eval
 * forward. Names change as model_fuse's. Irreversible. */
int model_qat_fold(Model *m);
/* The int8 form of a quantized conv of a folded model: codes wq [cout][cin/g*k*k]
 * and w_scale [cout] (infer/qconv.h's rule; identical to qconv_quantize_weights),
 * the input's s_x and zp. The bias is u->bias (fp32, may be NULL = 0), the
 * activation u->act. -1 if u is not quantized, not folded, or never observed. */
int qat_unit_int8(const ConvUnit *u, int8_t *wq, float *w_scale, float *x_scale, int *x_zp);

/* A quantized weights file: model.* (the float parameters and buffers) plus
 * qat.*, metadata format=gelan-weights/1, cfg, nc, and the given extra pairs
 * (names, quantization method...; keys[i] NULL-terminated list). Atomic. */
int model_save_quantized(const Model *m, const char *path, const char *const *keys, const char *const *values);

#endif
