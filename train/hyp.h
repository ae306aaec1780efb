/* The hyperparameter file of the official training recipe
 * (data/hyps/hyp.scratch-high.yaml): one flat YAML mapping of numbers, read
 * with libyaml into the structs of the loss (train/loss.h), the optimizer
 * stack (optim/optim.h) and the augmentations. Missing keys keep the official
 * defaults; an unknown key is a warning (the official code keeps any key); a
 * known key with a value that is not a number, or out of its range, is an
 * error naming the file and line. The text is kept, as checkpoints carry it. */
#ifndef GELAN_TRAIN_HYP_H
#define GELAN_TRAIN_HYP_H

#include "optim/optim.h"
#include "train/loss.h"

/* The augmentation keys, as the official dataloader reads them. */
typedef struct {
    float hsv_h, hsv_s, hsv_v; /* HSV gains (fractions): 0.015, 0.7, 0.4 */
    float degrees;             /* rotation +/- degrees: 0 */
    float translate;           /* +/- fraction: 0.1 */
    float scale;               /* +/- gain: 0.9 */
    float shear;               /* +/- degrees: 0 */
    float perspective;         /* +/- fraction: 0 */
    float flipud, fliplr;      /* probabilities: 0, 0.5 */
    float mosaic, mixup;       /* probabilities: 1, 0.15 */
    float copy_paste;          /* 0.3 in the file; needs segments, which detection labels do not have */
} HypAugment;

typedef struct {
    OptimHyp optim; /* lr0 lrf momentum weight_decay warmup_epochs warmup_momentum warmup_bias_lr */
    LossHyp loss;   /* box cls dfl (gains); topk, alpha, beta, reg_max keep the loss's defaults */
    HypAugment aug;
    char *text; /* the YAML text as read (NULL for the built-in defaults) */
} Hyp;

/* The official hyp.scratch-high.yaml values; text = NULL. */
void hyp_default(Hyp *h);
/* Defaults overridden by the keys of a YAML text; label names it in errors. */
int hyp_parse(Hyp *h, const char *text, const char *label);
int hyp_load(Hyp *h, const char *path);
/* The text a checkpoint stores: h->text, or the defaults written out as YAML
 * (malloc'd either way). */
char *hyp_to_yaml(const Hyp *h);
void hyp_free(Hyp *h);

#endif
