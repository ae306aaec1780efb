/* The YOLOv9 anchor-free detection loss (utils/loss_tal.py, loss_tal_dual.py,
 * loss_tal_triple.py): TaskAlignedAssigner + BCE + CIoU + DFL over one, two
 * or three heads, as ONE tape op with a hand-derived backward.
 *
 * Per head h (its own assignment and tss_h = max(sum target_scores, 1)):
 *   cls_h = sum_{n,a,c} BCEWithLogits(x, target_score) / tss_h
 *   box_h = sum_fg (1 - CIoU(pred, target)) * w_a / tss_h       (grid units)
 *   dfl_h = sum_fg mean_side(CE(bins, floor t) wl + CE(bins, floor t + 1) wr) * w_a / tss_h
 * with w_a = the anchor's target score. With head weights v_h (dual: 0.25, 1;
 * triple: 0.25, 0.25, 1; single: 1):
 *   items.box = gain_box * sum_h v_h box_h   (likewise cls, dfl)
 *   total     = (items.box + items.cls + items.dfl) * N
 * items are the official detached `loss_items` vector (after the gains,
 * before the x N); total is the official first return value.
 *
 * Differentiated: the class logits (BCE) and the box logits (through the
 * DFL softmax expectation into CIoU, and the DFL cross-entropies). Constant,
 * as under the official no_grad/detach: the whole assignment (including
 * target_scores, which depend on the predictions), tss, and CIoU's alpha. */
#ifndef GELAN_LOSS_H
#define GELAN_LOSS_H

#include "autograd/tape.h"

typedef struct {
    float box, cls, dfl; /* gains: 7.5, 0.5, 1.5 */
    int topk;            /* assigner: 10 */
    float alpha, beta;   /* assigner: 0.5, 6.0 */
    int reg_max;         /* DFL bins per side: 16 */
} LossHyp;

void loss_hyp_default(LossHyp *h);

/* rows [n, 6]: image index, class, cx, cy, w, h (normalised to [0,1]), as the
 * official dataloader hands them to the loss. An image's rows keep their order. */
typedef struct {
    int n;
    const float *rows;
} Targets;

typedef struct {
    float box, cls, dfl, total;
} LossItems;

/* The assignment of one head, as the official assigner returns it (all F32):
 * target_labels [N, A], target_bboxes [N, A, 4] (pixels, xyxy, before the loss
 * divides by the stride), target_scores [N, A, nc], fg_mask [N, A] (0/1).
 * Anchors are numbered level by level, row-major inside a level. */
typedef struct {
    int N, A, nc;
    float *target_labels, *target_bboxes, *target_scores, *fg_mask;
} LossAssign;

/* maps: n_heads * nl tensors in head order (aux..., main), each
 * [N, 4*reg_max + nc, H_k, W_k] (level k of every head has the same size).
 * head_weights[n_heads], strides[nl] (e.g. 8, 16, 32). The image size is
 * H_0 * strides[0] by W_0 * strides[0].
 * Returns the scalar total, shape [1], recorded on the tape: its backward adds
 * d total / d map into every map that requires grad. items (may be NULL) gets
 * the items; assign (may be NULL) is an array of n_heads that gets each head's
 * assignment in arrays allocated from the tape's arena (valid until
 * tape_reset). hyp NULL = defaults.
 * NULL with gelan_error on: inconsistent map shapes, a target whose class is
 * not an integer in [0, nc) or whose image index is not in [0, N), non-finite
 * targets or maps, out of memory. */
Tensor *yolo_loss(Tape *t, Tensor *const *maps, int n_heads, int nl, const float *head_weights, const float *strides,
                  const Targets *targets, const LossHyp *hyp, LossItems *items, LossAssign *assign);

/* Data-parallel training (train/dist.h): the loss of one process's shard of a
 * global batch, normalised as the loss of the whole batch, so that the items,
 * totals and gradients of all shards SUM to those of the whole batch computed
 * in one process. The assignment is per image and needs nothing from the
 * other shards; the two whole-batch quantities are the multiplier of the total
 * (the batch size, official `* bs`) and each head's tss = max(sum of target
 * scores, 1), which reduce_tss sums over the shards before the max. */
typedef struct {
    int batch; /* images in the whole batch (>= this shard's N) */
    /* replaces tsum[h], this shard's sum of target scores of head h, by the sum
       over all shards (in place); 0, or -1 with gelan_error. NULL: this shard
       is the whole batch as far as tss goes. */
    int (*reduce_tss)(void *ctx, double *tsum, int n_heads);
    void *ctx;
} LossShard;

Tensor *yolo_loss_shard(Tape *t, Tensor *const *maps, int n_heads, int nl, const float *head_weights,
                        const float *strides, const Targets *targets, const LossHyp *hyp, const LossShard *shard,
                        LossItems *items);

/* The same loss with a given assignment per head (given[n_heads], e.g. one
 * captured by yolo_loss, or the official one) instead of running the
 * assigner; the targets are then not needed. target_scores must be zero
 * except at (fg anchor, its label), as the assigner makes them. */
Tensor *yolo_loss_assigned(Tape *t, Tensor *const *maps, int n_heads, int nl, const float *head_weights,
                           const float *strides, const LossAssign *given, const LossHyp *hyp, LossItems *items);

#endif
