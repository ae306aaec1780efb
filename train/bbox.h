/* Box utilities of the YOLOv9 loss: xywh -> xyxy, the anchor-in-box test of
 * the assigner, and CIoU (utils/metrics.py bbox_iou(xywh=False, CIoU=True))
 * with its gradient.
 *
 * Boxes are float[4] = (x1, y1, x2, y2). CIoU is evaluated in double from the
 * float coordinates. Its `alpha` = v / (v - iou + 1 + eps) is computed under
 * torch.no_grad() in the official code, so the gradient treats it as a
 * constant, exactly like the official autograd does. */
#ifndef GELAN_BBOX_H
#define GELAN_BBOX_H

#include <stdbool.h>

#define BBOX_EPS 1e-7 /* bbox_iou's eps: added to the heights, the union and c^2 */

/* (cx, cy, w, h) -> (cx - w/2, cy - h/2, cx + w/2, cy + h/2), in float as xywh2xyxy. */
void bbox_xywh_to_xyxy(const float xywh[4], float xyxy[4]);

/* The assigner's candidate test: min(x - x1, y - y1, x2 - x, y2 - y) > eps,
 * evaluated in float like select_candidates_in_gts (eps 1e-9). */
bool bbox_contains(const float box[4], float x, float y, float eps);

/* Plain IoU as bbox_iou(xywh=False) without the penalty terms: inter / (w1 h1 + w2 h2 - inter + eps), heights + eps. */
double bbox_iou(const float a[4], const float b[4]);

/* atan(w / (h + eps)), the aspect term of CIoU (precomputable per box). */
double bbox_aspect(const float box[4]);

/* CIoU(a, b) with the aspect terms given (bbox_aspect of a and of b). */
double bbox_ciou_aspect(const float a[4], const float b[4], double aspect_a, double aspect_b);
double bbox_ciou(const float a[4], const float b[4]);

/* CIoU(a, b) and, in grad_a, d CIoU / d a (x1, y1, x2, y2), alpha constant.
 * Where torch.maximum/minimum see equal arguments the gradient is split in
 * halves, and clamp(min=0) passes the gradient at exactly 0, as in PyTorch. */
double bbox_ciou_grad(const float a[4], const float b[4], double grad_a[4]);

#endif
