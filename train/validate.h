/* Validation as the official val.py / val_dual.py / val_triple.py: the
 * decoded predictions of the main head, class-aware NMS (conf 0.001, IoU 0.7,
 * at most 300 boxes, multi-label), boxes scaled back to the original image,
 * matched against the labels at IoU 0.50:0.05:0.95, then mAP (train/metrics.h).
 *
 * Also the COCO-format detections file of `val --save-json` and its reader for
 * `val --detections` (scoring detections from any source). */
#ifndef GELAN_TRAIN_VALIDATE_H
#define GELAN_TRAIN_VALIDATE_H

#include <stdbool.h>
#include <stdint.h>

#include "autograd/tape.h"
#include "infer/infer.h"
#include "train/metrics.h"

typedef struct {
    float conf;       /* 0.001 */
    float iou;        /* 0.7 */
    int max_det;      /* 300 */
    bool multi_label; /* true, as val.py calls non_max_suppression */
    bool agnostic;    /* false (single_cls) */
} ValOptions;

void val_options_default(ValOptions *o);

/* One image: pred [4+nc, A] (cx, cy, w, h in network-input pixels, then class
 * scores, channel-major) -> NMS -> boxes in original-image pixels through lb
 * (NULL: left in input pixels). out has room for o->max_det boxes. Returns the
 * number of boxes (sorted by score) or -1. */
int val_image_detections(const float *pred, int nc, int anchors, const Letterbox *lb, const ValOptions *o,
                         InferBox *out);

/* Adds an image's detections (sorted by score) and labels to the statistics. */
int val_add_image(MapStats *s, const InferBox *det, int nd, const GtBox *gt, int ngt);

/* The COCO image id of an image file: its stem as an integer when it is all
 * digits ("000000000009.jpg" -> "9"), else the stem; written into buf. */
const char *val_image_key(const char *path, char *buf, size_t len);

/* ---- COCO-format detection files ------------------------------------------------ */
/* [{"image_id": 9, "category_id": 0, "bbox": [x, y, w, h], "score": 0.87654}, ...]:
 * category_id is the 0-based class index, bbox in original-image pixels rounded
 * to 3 decimals, score to 5 (as val.py's save_one_json). */
typedef struct CocoWriter CocoWriter;
CocoWriter *coco_writer_new(void);
int coco_writer_add(CocoWriter *w, const char *image_path, const InferBox *det, int nd);
/* Writes atomically (temporary file + rename). */
int coco_writer_save(CocoWriter *w, const char *path);
void coco_writer_free(CocoWriter *w);

typedef struct {
    char *image_key; /* as val_image_key gives it */
    Detection d;     /* xyxy pixels, conf, class */
} CocoDet;

/* Reads a detections file; every entry must have image_id (integer or string),
 * category_id (integer >= 0), bbox (4 numbers, w and h >= 0) and score. */
int coco_read(const char *path, CocoDet **dets, int *n);
void coco_free(CocoDet *dets, int n);

/* ---- a whole data set ------------------------------------------------------------- */

struct Model;
struct Loader;
struct Dataset;

typedef struct {
    ValOptions opt;
    CocoWriter *json; /* NULL, or receives every image's detections */
    void (*progress)(void *ctx, long done, long total);
    void *ctx;
} ValRun;

/* Validates the model (eval mode, no grad; the main head's predictions) on
 * every batch of a validation loader (train/loader.h, augment off; rect
 * batches as the official) and computes the metrics into *out. The tape is
 * reset after every batch. */
int validate_dataset(struct Model *m, Tape *t, struct Loader *val, const struct Dataset *ds, const ValRun *v,
                     MapResult *out);

/* Scores a COCO-format detections file (coco_read) against the labels of a
 * data set: each image's detections sorted by score (ties in file order), no
 * NMS and no cap on their number. Detections of images that are not in the
 * data set are a warning. */
int val_score_detections(const char *path, const struct Dataset *ds, MapResult *out);

/* Labels of data set image i as GtBox in original-image pixels (*n boxes,
 * malloc'd). */
int val_image_labels(const struct Dataset *ds, int i, GtBox **gt, int *n);

#endif
