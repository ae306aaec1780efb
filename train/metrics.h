/* Detection metrics exactly as the official YOLOv9 val.py / utils/metrics.py:
 * matching of detections to labels at IoU 0.50:0.05:0.95 (process_batch),
 * then per-class precision/recall curves, 101-point interpolated AP
 * (compute_ap), and P and R at the confidence of the best smoothed mean F1
 * (ap_per_class). Boxes are xyxy in the same (original-image) pixel space. */
#ifndef GELAN_METRICS_H
#define GELAN_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define MAP_NIOU 10

typedef struct {
    float x1, y1, x2, y2, conf;
    int cls;
} Detection;

typedef struct {
    float x1, y1, x2, y2;
    int cls;
} GtBox;

/* IoU thresholds 0.50, 0.55, ..., 0.95 */
extern const float map_iou_thresholds[MAP_NIOU];

/* box_iou of the official code (eps 1e-7 in the denominator). */
float box_iou_xyxy(float ax1, float ay1, float ax2, float ay2, float bx1, float by1, float bx2, float by2);

/* correct[d * MAP_NIOU + k] = 1 when detection d is a true positive at
 * threshold k. Mirrors process_batch: candidates are (label, detection) pairs
 * with IoU >= threshold and the same class; each detection keeps its highest
 * IoU label, then each label keeps the detection with the lowest index among
 * those (detections come sorted by confidence from NMS). */
int match_detections(const Detection *det, int nd, const GtBox *gt, int ngt, uint8_t *correct);

/* Accumulates the statistics of a whole data set, one image at a time. */
typedef struct {
    size_t n, cap;        /* detections */
    uint8_t *correct;     /* [n, MAP_NIOU] */
    float *conf;
    int *pred_cls;
    size_t nt, tcap;      /* ground-truth boxes */
    int *target_cls;
    int images;           /* images seen */
} MapStats;

void map_stats_init(MapStats *s);
void map_stats_free(MapStats *s);
/* Adds one image: its detections (any order of confidence is fine; they are
 * matched in the given order, so pass them sorted by confidence as NMS gives). */
int map_stats_add_image(MapStats *s, const Detection *det, int nd, const GtBox *gt, int ngt);

typedef struct {
    int cls;            /* class index */
    int instances;      /* ground-truth boxes of this class */
    float p, r;         /* at the best mean-F1 confidence */
    float ap[MAP_NIOU]; /* AP at each IoU threshold */
    float ap50, ap50_95;
} ClassMetrics;

typedef struct {
    int images, instances;
    float mp, mr, map50, map50_95;
    int nclasses;           /* classes that have ground truth */
    ClassMetrics *per_class; /* [nclasses], ascending class index; caller frees with map_result_free */
} MapResult;

/* ap_per_class + the summary of val.py. Everything 0 when no detection is a
 * true positive at IoU 0.5 (as the official code). */
int map_compute(const MapStats *s, MapResult *out);
void map_result_free(MapResult *r);

/* fitness = 0.1 * mAP50 + 0.9 * mAP50-95 (utils/metrics.py fitness) */
float map_fitness(const MapResult *r);

/* numpy.interp for increasing xp (ties allowed): exposed for the tests. */
double np_interp(double x, const double *xp, const double *fp, size_t n, double left, double right);

#endif
