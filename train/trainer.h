/* The training loop of the official recipe (train.py / train_dual.py /
 * train_triple.py of WongKinYiu/yolov9), for single, dual and triple heads:
 *
 *   nbs = 64, accumulate = max(round(64 / batch), 1), weight decay scaled by
 *   batch * accumulate / 64; SGD (Nesterov, momentum 0.937) or AdamW over the
 *   three parameter groups; warmup over max(round(warmup_epochs * nb), 100)
 *   iterations; LambdaLR linear (default) or cosine, stepped per epoch; per
 *   iteration: train forward, yolo_loss (head weights 1 / 0.25,1 /
 *   0.25,0.25,1), backward of the loss total (already x batch size); when the
 *   accumulator says so: clip the gradient norm at 10, optimizer step, zero
 *   the gradients, EMA update (0.9999, tau 2000). The tape is reset after
 *   every iteration; parameters, gradients and optimizer state are allocated
 *   once. After every epoch: validation of the EMA weights on the main head,
 *   fitness 0.1 mAP50 + 0.9 mAP50-95, results.csv, results.svg, and the
 *   checkpoints runs/NAME/last.safetensors (and best.safetensors).
 *
 * Choices where the official code is silent or not reproducible:
 *   - resume: the data order and every sample's augmentation are drawn from
 *     (seed, epoch, position) (train/loader.h), and the checkpoint keeps
 *     last_opt_step (the official restarts it at -1), so a run killed at any
 *     point and resumed from last.safetensors ends bit-identical to an
 *     uninterrupted one with the same thread count;
 *   - close_mosaic N >= epochs closes mosaic for the last epochs / 2 (the
 *     official would never close it);
 *   - nbs (default 64, the official constant) is a knob for short runs;
 *   - validation of the EMA weights on the main head with rectangular batches
 *     of 2 x batch images (pad 0.5), as train_dual.py calls val_dual.py; no
 *     validation loss (the official dual/triple validators skip it too).
 *
 * The loop is a library: it never prints; progress goes to callbacks. */
#ifndef GELAN_TRAIN_TRAINER_H
#define GELAN_TRAIN_TRAINER_H

#include <stdbool.h>
#include <stdint.h>

#include "train/checkpoint.h"
#include "train/hyp.h"
#include "train/loss.h"
#include "train/metrics.h"

typedef struct {
    const char *cfg;     /* model YAML; NULL: the config of `weights` */
    const char *weights; /* start from these weights (fine-tuning); NULL: from scratch */
    const char *data;    /* data set YAML */
    const char *hyp;     /* hyperparameter YAML; NULL: the official defaults */
    const char *project; /* parent of run directories: "runs" */
    const char *name;    /* run name: "exp" */
    bool exist_ok;       /* reuse runs/NAME instead of NAME2, NAME3, ... */
    bool resume;         /* continue runs/NAME/last.safetensors */
    int epochs;          /* 100 */
    int batch;           /* 16 */
    int nbs;             /* nominal batch: 64 (the official); gradients accumulate to about nbs images */
    int img;             /* 640 (a multiple of the largest stride) */
    int workers;         /* loader threads: 2 */
    int close_mosaic;    /* the last N epochs without mosaic (see trainer_close_mosaic_epoch) */
    uint64_t seed;       /* 0 */
    OptimKind optimizer; /* OPTIM_SGD */
    LrShape lr_shape;    /* LR_LINEAR; --cos-lr: LR_COSINE */
    bool noval;          /* validate only after the last epoch */
    bool fp16_init;      /* round the initial weights to fp16 as the official model.half().float() (default on) */
    long max_iters;      /* > 0: stop like a killed run after this many iterations of this process (tests) */
    long max_batches;    /* > 0: use only the first N batches of each epoch (quick runs, tests) */
    /* data-parallel training under mpirun (train/dist.h, docs/MPI.md) */
    bool sync_bn;    /* --sync-bn: BN statistics over the global batch (default: per rank, as PyTorch DDP) */
    long dist_check; /* --dist-check N: check every N optimizer steps that all ranks hold the same weights */
    /* Quantization-aware training (nn/quant.h, docs/QUANTIZATION.md): fake quant
     * on the model after its weights are loaded, the freezes of
     * qat_options_default(epochs), validation of the fake-quant EMA model, qat.*
     * state and the options (metadata `qat`) in checkpoints for --resume. */
    bool qat;
    const char *qat_exclude; /* comma-separated exclude tokens (nn/quant.h); NULL: none */
} TrainOptions;

void train_options_default(TrainOptions *o);

/* The epoch at which mosaic closes (the official `epoch == epochs -
 * close_mosaic`); N >= epochs is clamped to epochs / 2 so that a short run
 * still starts with mosaic, and 0 keeps mosaic on throughout. Returns epochs
 * when mosaic never closes. */
int trainer_close_mosaic_epoch(int epochs, int close_mosaic);

typedef struct {
    const char *dir;   /* runs/NAME */
    const char *model; /* model name */
    int nheads;
    size_t nparams;
    int train_images, val_images, nc;
    long nb;        /* batches per epoch */
    long nw;        /* warmup iterations */
    int accumulate; /* nominal accumulation */
    int start_epoch, epochs;
    int transferred, transfer_total; /* --weights: tensors taken / model tensors */
    bool resumed;
    int ranks;    /* data-parallel processes (1: none) */
    bool sync_bn; /* BN statistics over the ranks */
} TrainStartInfo;

typedef struct {
    int epoch, epochs;
    long i, nb;         /* iteration i (0-based) of nb */
    LossItems mean;     /* running mean of the loss items this epoch */
    int instances, img; /* targets in the batch, image size */
} TrainBatchInfo;

typedef struct {
    long done, total; /* images validated / to validate (0 / total when it starts) */
} TrainValInfo;

typedef struct {
    int epoch, epochs;
    LossItems mean;
    const MapResult *val; /* NULL when not validated */
    double fitness, best_fitness;
    bool best; /* this epoch set best_fitness (best.safetensors written) */
    double lr[PARAM_GROUP_COUNT];
    double train_seconds, val_seconds;
    const char *last_path, *best_path;
} TrainEpochInfo;

typedef struct {
    void (*on_start)(void *ctx, const TrainStartInfo *s);
    void (*on_epoch_start)(void *ctx, int epoch, int epochs, long nb);
    void (*on_batch)(void *ctx, const TrainBatchInfo *b);
    void (*on_val)(void *ctx, const TrainValInfo *v);
    void (*on_epoch)(void *ctx, const TrainEpochInfo *e);
    void *ctx;
} TrainCallbacks;

typedef struct {
    char dir[1024];  /* runs/NAME */
    int epochs_done; /* epochs completed in this call */
    bool stopped;    /* stopped by max_iters */
    double best_fitness;
    MapResult last_val; /* of the last validation (free with map_result_free) */
} TrainResult;

/* Runs a training. 0, or -1 with gelan_error (a bad config, data set,
 * checkpoint, or I/O naming the file). */
int train_run(const TrainOptions *o, const TrainCallbacks *cb, TrainResult *res);

/* ---- the pieces (exposed for tests and benchmarks) -------------------------------- */

/* nn's parameter kind -> the optimizer's group. */
ParamGroup param_group_of(ParamKind kind);

/* One model with everything an optimizer step needs. */
typedef struct {
    Model *model;
    Tape *tape;
    Optimizer *optim;
    ModelEMA *ema;
    OptimParam *oparams; /* the optimizer's view of the model's parameters */
    int noparams;
    LrSchedule sched;
    Accumulator acc;
    Hyp hyp;
    float head_weights[3];
    long nb;
    /* data-parallel (train_core_set_dist) */
    bool dist, sync_bn;
    long dist_check, steps; /* check the weights every dist_check optimizer steps; steps taken */
    double *has_grad;       /* [noparams] scratch */
} TrainCore;

/* Sets up the optimizer (weight decay scaled for the batch), schedule over
 * nb batches per epoch, accumulator and EMA for a built model (not owned).
 * nbs: the nominal batch (64 in the official recipe). */
int train_core_init(TrainCore *c, Model *m, const Hyp *hyp, OptimKind kind, LrShape shape, int epochs, int batch,
                    int nbs, long nb);
void train_core_free(TrainCore *c);
/* Iteration i of epoch: schedule, train forward, loss, backward, and (when the
 * accumulator says so) clip + step + zero grad + EMA update; then tape_reset.
 * images [B, 3, S, S] in [0, 1]; targets rows as the loss takes them. */
int train_core_step(TrainCore *c, Tensor *images, const Targets *targets, int epoch, long i, LossItems *items);

/* Data-parallel training over the ranks of train/dist.h: from now on
 * train_core_step_shard sums over the ranks (the loss normalisation, the
 * gradients at an optimizer step, the loss items), every rank takes rank 0's
 * BN running buffers at a step (as DDP's broadcast_buffers), and with sync_bn
 * the BN statistics are those of the global batch. check_every > 0: every that
 * many optimizer steps, an error unless all ranks hold the same parameters,
 * buffers, EMA and optimizer state. No-op on one process. */
int train_core_set_dist(TrainCore *c, bool sync_bn, long check_every);
/* An error unless every rank holds the same parameters, buffers, EMA and
 * optimizer state (a checksum of each compared with rank 0's). */
int train_core_check_replicas(TrainCore *c, const char *what);
/* Iteration i on this rank's shard (images [n, 3, S, S], NULL when n = 0) of a
 * global batch of batch_n images (train/loader.h's loader_shard_range). With
 * train_core_set_dist, the step is the one a single process takes on the whole
 * batch: items are those of the whole batch, *instances (may be NULL; in: this
 * shard's targets) their count over the ranks. Without it, train_core_step. */
int train_core_step_shard(TrainCore *c, Tensor *images, const Targets *targets, int batch_n, int epoch, long i,
                          LossItems *items, int *instances);

#endif
