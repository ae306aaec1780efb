/* TaskAlignedAssigner of YOLOv9 (utils/tal/assigner.py), one head.
 *
 * For every ground-truth box j of an image and every anchor a:
 *   overlap[j,a] = max(CIoU(gt_j, pred_a), 0)      (pixels)
 *   metric[j,a]  = score[a, class_j]^alpha * overlap[j,a]^beta
 * Each gt takes the topk anchors of largest metric among those whose centre
 * lies strictly inside it; an anchor taken by several gts goes to the gt of
 * largest overlap over ALL the image's gt rows (padding rows included, first
 * index on ties); its target score is
 *   metric[j,a] * max_{a' of j} overlap[j,a'] / (max_{a' of j} metric[j,a'] + 1e-9).
 * Background anchors get the label and box of the image's gt row 0 (class
 * 0 and a zero box for a padding row), score 0, as the official code.
 *
 * Ties in torch.topk are implementation-defined; here equal metrics are taken
 * in increasing anchor order, and anchors whose metric is exactly 0 are never
 * taken (torch may fill spare slots with arbitrary zero-metric anchors, which
 * weigh 0 in every loss term, so the loss and its gradient do not change).
 *
 * Scores are sigmoid(class logits) and predicted boxes the DFL decode of the
 * box logits (x stride, pixels), both read from the head's maps in place and
 * only for anchors inside some gt box: the others cannot be assigned.
 * Runs in double; parallel over images. Computed "under no_grad": nothing of
 * it is differentiated. */
#ifndef GELAN_ASSIGNER_H
#define GELAN_ASSIGNER_H

#include "tensor/arena.h"
#include "train/head.h"

typedef struct {
    int topk;     /* 10 */
    double alpha; /* 0.5: exponent of the class score */
    double beta;  /* 6.0: exponent of the overlap */
} TalParams;

/* The assignment of one head, [N*A] arrays (box: [N*A*4]). */
typedef struct {
    unsigned char *fg; /* anchor has a gt (fg_mask) */
    int *label;        /* target class (background: see above; nc when the batch has no targets) */
    float *box;        /* target box, pixels xyxy (background: see above; 0 without targets) */
    float *score;      /* target score of `label` (target_scores is one-hot(label) * score); 0 for background */
} TalResult;

/* gt: [N, M, 5] rows (class, x1, y1, x2, y2) in pixels, valid: [N*M] mask_gt
 * (0 for padding rows). M may be 0. out arrays ([N*A], box [N*A*4]) are the
 * caller's; scratch comes from arena. Returns 0, or -1 (out of memory) with
 * gelan_error. */
int tal_assign(const HeadView *head, const float *gt, const unsigned char *valid, int M, const TalParams *p,
               Arena *arena, TalResult *out);

#endif
