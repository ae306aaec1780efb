/* The train-mode half of `gelan trace --train` (ARCHITECTURE.md section 5):
 * one train-mode forward, the official loss, one backward, and every tensor
 * the golden files name, handed to a callback:
 *   train.level.{head}{k}           raw train-mode maps
 *   loss.box, loss.cls, loss.dfl,   the loss items (scalars, shape [])
 *   loss.total
 *   assign.{head}.target_labels, .target_bboxes, .target_scores, .fg_mask
 *   running.{buffer}                every BN buffer after the forward
 *   grad.{param}                    d loss.total / d param (trainable params)
 * Heads are `main`; `aux`, `main`; or `aux1`, `aux2`, `main`. */
#ifndef GELAN_TRAIN_TRACE_H
#define GELAN_TRAIN_TRACE_H

#include "nn/model.h"
#include "train/loss.h"

/* The official head weights: {1}, {0.25, 1} (loss_tal_dual.py) or
 * {0.25, 0.25, 1} (loss_tal_triple.py). */
void loss_head_weights(int nheads, float *w);

/* Zeroes the parameters' gradients, runs the step on the tape t (reset first)
 * and emits the tensors. hyp NULL = official defaults. items may be NULL. */
int trace_train(Model *m, Tape *t, Tensor *input, const Targets *targets, const LossHyp *hyp, NamedTensorFn emit,
                void *ctx, LossItems *items);

#endif
