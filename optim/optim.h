/* The optimizer stack of the official YOLOv9 training loop (train_dual.py with
 * utils/torch_utils.py): SGD with Nesterov momentum or AdamW over the three
 * official parameter groups, warmup and LR schedules, gradient accumulation,
 * gradient clipping by global norm and the model EMA.
 *
 * Every update follows PyTorch 1.13's float32 arithmetic (torch.optim.SGD,
 * torch.optim.AdamW, clip_grad_norm_) so that a run matches the official one
 * step for step. optim/ depends on tensor/ only: parameters are plain Tensors
 * whose `grad` holds the gradient. A parameter takes part in a step or a clip
 * only when it has `requires_grad` and a `grad` (PyTorch skips `grad is None`),
 * so frozen tensors such as the DFL conv weight are left alone. */
#ifndef GELAN_OPTIM_H
#define GELAN_OPTIM_H

#include <stdbool.h>

#include "tensor/tensor.h"

/* ---- parameters and groups ---------------------------------------------------- */

/* The official smart_optimizer groups, numbered as its g[0], g[1], g[2]:
 * the `bias` of any module -> PARAM_BIAS; the `weight` of a normalisation layer
 * (BatchNorm2d) -> PARAM_BN_WEIGHT; every other parameter (conv weights, ...)
 * -> PARAM_WEIGHT_DECAY, the only group with weight decay. Note that torch's
 * param_groups[0] is g[2], the biases: that is the group the warmup starts at
 * warmup_bias_lr. */
typedef enum { PARAM_WEIGHT_DECAY = 0, PARAM_BN_WEIGHT = 1, PARAM_BIAS = 2 } ParamGroup;
#define PARAM_GROUP_COUNT 3

/* One trainable tensor; name is its official state_dict name. */
typedef struct {
    const char *name;
    Tensor *param; /* param->grad is the gradient */
    ParamGroup group;
} OptimParam;

/* True if the parameter takes part in a step / clip (requires_grad and a grad). */
bool optim_param_active(const Tensor *p);

/* Visits one named tensor (name is only valid during the call); a nonzero
 * return stops the walk and is passed back. */
typedef int (*OptimTensorVisit)(void *ctx, const char *name, Tensor *t);
/* Fills dst (already of the expected shape) with the saved tensor `name`.
 * Returns 0 when filled, 1 when the source has no such tensor, -1 with a
 * gelan_error on a failure (shape mismatch, I/O). */
typedef int (*OptimTensorRead)(void *ctx, const char *name, Tensor *dst);

/* ---- hyperparameters ------------------------------------------------------------ */

/* The optimizer keys of a hyp YAML file. */
typedef struct {
    double lr0;             /* initial learning rate */
    double lrf;             /* final lr = lr0 * lrf */
    double momentum;        /* SGD momentum / AdamW beta1 */
    double weight_decay;    /* as written in the file (before optim_scaled_weight_decay) */
    double warmup_epochs;   /* fractions allowed */
    double warmup_momentum; /* momentum at iteration 0 */
    double warmup_bias_lr;  /* bias lr at iteration 0 */
} OptimHyp;

/* Official data/hyps/hyp.scratch-high.yaml: 0.01, 0.01, 0.937, 0.0005, 3.0, 0.8, 0.1. */
OptimHyp optim_hyp_default(void);

/* ---- optimizers ----------------------------------------------------------------- */

typedef enum { OPTIM_SGD = 0, OPTIM_ADAMW = 1 } OptimKind;

typedef struct {
    OptimKind kind;
    double lr;           /* lr0 */
    double momentum;     /* SGD momentum; AdamW beta1 */
    double weight_decay; /* of PARAM_WEIGHT_DECAY (the other groups have none) */
    bool nesterov;       /* SGD (dampening is always 0) */
    double beta2, eps;   /* AdamW */
    bool amsgrad;        /* AdamW */
} OptimConfig;

/* What smart_optimizer(model, name, lr, momentum, decay) builds: SGD with
 * nesterov=True, or AdamW with betas (momentum, 0.999), eps 1e-8 and
 * amsgrad=True (as the official yolov9 code has it). */
OptimConfig optim_config(OptimKind kind, double lr, double momentum, double weight_decay);

/* One torch param_group: the schedule writes lr and momentum before each step. */
typedef struct {
    double lr;
    double initial_lr; /* LambdaLR's base lr (lr0) */
    double momentum;   /* SGD; AdamW keeps beta1 here, the warmup leaves it alone */
    double weight_decay;
} OptimGroup;

/* Per-parameter state, allocated once by optim_new. */
typedef struct {
    Tensor *buf[3];  /* SGD: momentum_buffer; AdamW: exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad) */
    Tensor *step;    /* AdamW: [1], the step count as torch keeps it (float) */
    bool has_state;  /* false until the first step touches it (torch: state[p] is empty) */
    float step_size; /* AdamW scratch: lr / bias_correction1 for the current step */
    float bc2_sqrt;  /* AdamW scratch: sqrt(bias_correction2) */
} OptimParamState;

typedef struct OptimChunk OptimChunk;

typedef struct Optimizer {
    OptimConfig cfg;
    OptimGroup group[PARAM_GROUP_COUNT]; /* indexed by ParamGroup */
    int n;
    OptimParam *params; /* own copy of the array and of the names */
    OptimParamState *state;
    OptimChunk *chunks; /* fixed element ranges for the parallel update */
    int n_chunks;
} Optimizer;

/* Copies the parameter array (names included); the tensors stay the caller's
 * and must outlive the optimizer. Every group starts at lr = initial_lr =
 * cfg->lr and momentum = cfg->momentum. NULL + gelan_error on duplicate names
 * or a bad config. */
Optimizer *optim_new(const OptimConfig *cfg, const OptimParam *params, int n);
void optim_free(Optimizer *o);

/* One optimizer.step() with the groups' current lr / momentum / weight_decay. */
int optim_step(Optimizer *o);
/* optimizer.zero_grad(): every existing grad set to 0. */
void optim_zero_grad(Optimizer *o);
/* Index of a parameter by name, -1 if absent. */
int optim_find(const Optimizer *o, const char *name);

/* Checkpoint state, keyed by parameter name: "optim.<param>.momentum_buffer"
 * (SGD); "optim.<param>.exp_avg", ".exp_avg_sq", ".max_exp_avg_sq" (amsgrad),
 * ".step" (AdamW). Only parameters that have state (have been stepped) are
 * visited, as torch's state_dict holds only those. */
int optim_state_count(const Optimizer *o);
int optim_state_foreach(Optimizer *o, OptimTensorVisit visit, void *ctx);
/* Restores what optim_state_foreach wrote: a parameter whose tensors are all
 * absent starts fresh; a partial set, a shape mismatch or state of the other
 * optimizer kind is an error, after which every parameter starts fresh. */
int optim_state_load(Optimizer *o, OptimTensorRead read, void *ctx);

/* ---- schedule (warmup + LambdaLR) ------------------------------------------------ */

typedef enum {
    LR_LINEAR = 0,      /* default: (1 - x/epochs) * (1 - lrf) + lrf */
    LR_COSINE = 1,      /* --cos-lr: one_cycle(1, lrf, epochs) */
    LR_FLAT_COSINE = 2, /* --flat-cos-lr: 1 for the first half, then cosine to lrf */
    LR_FIXED = 3        /* --fixed-lr */
} LrShape;

typedef struct {
    OptimHyp hyp;
    LrShape shape;
    int epochs;
    long nb; /* iterations (batches) per epoch */
    long nw; /* warmup iterations: max(round(warmup_epochs * nb), 100) */
} LrSchedule;

int schedule_init(LrSchedule *s, const OptimHyp *hyp, LrShape shape, int epochs, long nb);
/* lf(epoch), the LambdaLR factor. */
double schedule_lf(const LrSchedule *s, int epoch);
/* What the official loop sets for group g at iteration i of `epoch`
 * (ni = i + nb * epoch): during warmup (ni <= nw) np.interp from
 * warmup_bias_lr (PARAM_BIAS) or 0 (the others) to lr0 * lf(epoch), and
 * momentum from warmup_momentum to momentum. Afterwards momentum, and
 * lr0 * lf(epoch) for the rest of the epoch in which the warmup ends, then
 * lr0 * lf(epoch - 1): the official LambdaLR runs one epoch behind
 * (scheduler.last_epoch = start_epoch - 1 after its constructor stepped). */
double schedule_lr(const LrSchedule *s, ParamGroup g, int epoch, long i);
double schedule_momentum(const LrSchedule *s, int epoch, long i);
/* Writes every group's lr (with the group's initial_lr in place of lr0, as the
 * official x['initial_lr']) and, for SGD, momentum (torch's Adam groups have no
 * 'momentum' key, so the warmup leaves beta1 alone). */
void schedule_apply(const LrSchedule *s, Optimizer *o, int epoch, long i);

/* ---- gradient accumulation ----------------------------------------------------------- */

#define OPTIM_NOMINAL_BATCH 64

/* max(round(64 / batch_size), 1) */
int accumulate_steps(int batch_size);
/* hyp weight_decay * batch_size * accumulate / 64, as train_dual.py rescales it. */
double optim_scaled_weight_decay(double weight_decay, int batch_size);

typedef struct {
    int batch_size;
    long last_opt_step; /* -1 before the first step, as in train_dual.py (also after --resume) */
} Accumulator;

void accumulator_init(Accumulator *a, int batch_size);
/* The accumulate count in force at integrated iteration ni: during warmup
 * (ni <= nw) max(1, round(interp(ni, [0, nw], [1, 64 / batch_size]))). */
int accumulator_count(const Accumulator *a, long ni, long nw);
/* True when the official loop steps after the backward of iteration ni
 * (ni - last_opt_step >= accumulate); the step is then recorded. */
bool accumulator_should_step(Accumulator *a, long ni, long nw);

/* ---- gradient clipping ------------------------------------------------------------ */

/* torch.nn.utils.clip_grad_norm_: total = L2 norm of all active grads taken
 * together; every grad is multiplied by min(max_norm / (total + 1e-6), 1).
 * Stores total in *total_norm (may be NULL). The sum is deterministic for any
 * thread count. */
int clip_grad_norm(const OptimParam *params, int n, double max_norm, double *total_norm);

/* ---- EMA -------------------------------------------------------------------------- */

/* A buffer that the EMA follows (BN running_mean / running_var; floating-point
 * state_dict entries only: torch skips num_batches_tracked). */
typedef struct {
    const char *name;
    Tensor *t;
} EmaBuffer;

typedef struct ModelEMA {
    double decay; /* 0.9999 */
    double tau;   /* 2000 */
    long updates; /* number of ema_update calls, saved in checkpoints */
    int n;
    char **names;   /* state_dict names (without the "ema." prefix) */
    Tensor **model; /* the live tensors (the caller's) */
    Tensor **ema;   /* the averages (owned) */
    OptimChunk *chunks;
    int n_chunks;
} ModelEMA;

/* ModelEMA(model): copies the current values of every parameter and buffer.
 * The live tensors must outlive the EMA. */
ModelEMA *ema_new(const OptimParam *params, int n_params, const EmaBuffer *buffers, int n_buffers, double decay,
                  double tau);
void ema_free(ModelEMA *e);
/* d(updates) = decay * (1 - exp(-updates / tau)) */
double ema_decay(const ModelEMA *e, long updates);
/* updates += 1; ema = d * ema + (1 - d) * model, for every tensor. */
void ema_update(ModelEMA *e);
/* The averaged tensor of a state_dict name, NULL if absent. */
Tensor *ema_find(const ModelEMA *e, const char *name);
/* Visits "ema.<name>" for every tensor. */
int ema_foreach(ModelEMA *e, OptimTensorVisit visit, void *ctx);
/* Restores every "ema.<name>" (all must be present; updates is set by the
 * caller). On an error some averages may already be overwritten. */
int ema_load(ModelEMA *e, OptimTensorRead read, void *ctx);

#endif
