/* The official YOLOv9 training augmentations (utils/augmentations.py and
 * LoadImagesAndLabels in utils/dataloaders.py) and the per-sample pipelines
 * built from them.
 *
 * Training sample (sample_train), as __getitem__ with augment=True:
 *   with probability hyp.mosaic (and mosaic not closed):
 *     load_mosaic: 4 images (this one and 3 drawn uniformly with replacement,
 *       in shuffled order) resized by load_image, tiled around a centre drawn
 *       in [s/2, 3s/2]^2 on a 2s x 2s canvas of 114, boxes clipped to [0, 2s],
 *       then random_perspective with border -s/2 (output s x s);
 *     with probability hyp.mixup: mixup with a second mosaic (of an image drawn
 *       uniformly), ratio ~ Beta(32, 32), labels concatenated;
 *   else: load_image, letterbox to s x s (no stride padding, scaleup), then
 *     random_perspective without border;
 *   then boxes to normalised cx, cy, w, h clipped to [0, s - 1e-3];
 *   augment_hsv; flip up-down (hyp.flipud); flip left-right (hyp.fliplr).
 * Not done: Albumentations (the official uses it only when the package is
 * installed: blur, median blur, gray, CLAHE at p = 0.01) and copy_paste (it
 * needs polygon labels; on box labels the official does nothing either).
 *
 * All randomness comes from the Rng handed in, so a sample is a pure
 * function of (data set, index, size, hyp, mosaic flag, Rng state). */
#ifndef GELAN_TRAIN_AUGMENT_H
#define GELAN_TRAIN_AUGMENT_H

#include <stdbool.h>

#include "infer/infer.h"
#include "tensor/rng.h"
#include "train/dataset.h"
#include "train/hyp.h"
#include "train/image.h"

/* The augmentation parameters are HypAugment (train/hyp.h), read from the
 * hyp file; hyp_default gives hyp.scratch-high.yaml's. */

/* A growing list of boxes, 5 floats a row. During augmentation a row is
 * [class, x1, y1, x2, y2] in pixels; the pipelines return
 * [class, cx, cy, w, h] normalised. */
typedef struct {
    int n, cap;
    float *v;
} Boxes;
int boxes_reserve(Boxes *b, int n);
int boxes_push(Boxes *b, float cls, float a, float c, float d, float e);
void boxes_free(Boxes *b);

/* Gamma(shape, 1) (Marsaglia-Tsang) and Beta(a, b) = X / (X + Y). */
double rng_gamma(Rng *r, double shape);
double rng_beta(Rng *r, double a, double b);

/* HSV on OpenCV's 8-bit conventions (H in [0, 180), S and V in [0, 255], the
 * fixed-point RGB->HSV and float HSV->RGB of cv2.cvtColor), with lookup tables
 * hue' = (hue * gh) mod 180, sat' = clip(sat * gs), val' = clip(val * gv),
 * truncated to integers as numpy's astype(uint8). */
void hsv_apply_gains(Image *im, double gh, double gs, double gv);
/* augment_hsv: gains 1 + uniform(-1, 1) * (hgain, sgain, vgain); nothing at
 * all (no conversion) when the three are 0. */
void augment_hsv(Image *im, float hgain, float sgain, float vgain, Rng *r);
/* One pixel through OpenCV's RGB->HSV (8-bit) and HSV->RGB (8-bit). */
void rgb_to_hsv_cv(const uint8_t rgb[3], uint8_t hsv[3]);
void hsv_to_rgb_cv(const uint8_t hsv[3], uint8_t rgb[3]);

/* The random_perspective matrix M = T S R P C (maps input pixels to output
 * pixels) for an in_w x in_h input and out_w x out_h output; *scale gets the
 * drawn scale s (box_candidates needs it). */
void random_perspective_matrix(int in_w, int in_h, int out_w, int out_h, const HypAugment *h, Rng *r, double m[9],
                               double *scale);
/* random_perspective: dst (in - 2|border| on each axis; border <= 0) = src
 * warped by a random matrix; boxes ([cls, x1, y1, x2, y2] pixels) moved
 * with it (corners transformed, enclosing box, clipped to the output) and
 * filtered by box_candidates. dst must differ from src. */
int random_perspective(const Image *src, Image *dst, Boxes *b, const HypAugment *h, int border, Rng *r);
/* Moves boxes by m into a w x h image and keeps the candidates (above). */
void warp_boxes(Boxes *b, const double m[9], double scale, int w, int h);
/* box_candidates: a box kept after augmentation is wider and taller than
 * wh_thr pixels, keeps more than area_thr of its (scaled) area, and has an
 * aspect ratio below ar_thr. before/after are x1, y1, x2, y2. */
bool box_candidate(const float before[4], const float after[4], float wh_thr, float ar_thr, float area_thr);

/* im = im * r + im2 * (1 - r) (truncated), r ~ Beta(32, 32); b += b2. */
int mixup(Image *im, Boxes *b, const Image *im2, const Boxes *b2, Rng *r);
/* load_mosaic (see above): an s x s image and its boxes in pixels. */
int load_mosaic(const Dataset *ds, int index, int s, const HypAugment *h, Rng *r, Image *out, Boxes *b);

/* [cls, x1, y1, x2, y2] pixels -> [cls, cx, cy, w, h] normalised by w x h,
 * after clipping to [0, w - eps] x [0, h - eps] (xyxy2xywhn clip=True). */
void boxes_to_xywhn(Boxes *b, int w, int h, float eps);

/* The whole training pipeline for one sample (see the top of this file): an
 * s x s image and normalised boxes. */
int sample_train(const Dataset *ds, int index, int s, const HypAugment *h, bool mosaic, Rng *r, Image *out, Boxes *b);

/* Validation / no-augmentation pipeline: load_image (area when shrinking),
 * letterbox to out_w x out_h without enlarging (scaleup=False), boxes
 * normalised to the letterboxed image and clipped as xyxy2xywhn. *lb gets
 * what maps boxes back to the original image as val.py does (scale_boxes with
 * ratio_pad = ((h/h0, w/w0), pad): gain = h/h0 for both axes, pad = the
 * letterbox's dw, dh): infer_scale_boxes for predictions, labels_to_original
 * for the labels. */
int sample_eval(const Dataset *ds, int index, int s, int out_w, int out_h, Image *out, Boxes *b, Letterbox *lb);

/* val.py's labels in original pixels: rows [class, cx, cy, w, h] normalised to
 * the lb->out_w x lb->out_h input (as a Batch holds them, at `stride` floats
 * apart starting at the class) -> xyxy (4 floats per row) through
 * scale_boxes. */
void labels_to_original(const float *rows, int n, int stride, const Letterbox *lb, float *xyxy);

#endif
