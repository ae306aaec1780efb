/* mAP: hand-worked cases and the exact official arithmetic (val.py
 * process_batch + utils/metrics.py ap_per_class / compute_ap). */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>

#include "tensor/error.h"
#include "tests/testutil.h"
#include "train/metrics.h"

static GtBox gt_box(float x1, float y1, float x2, float y2, int c) { return (GtBox){x1, y1, x2, y2, c}; }
static Detection det_box(float x1, float y1, float x2, float y2, float conf, int c) {
    return (Detection){x1, y1, x2, y2, conf, c};
}

static MapResult run(const Detection *d, int nd, const GtBox *g, int ng) {
    MapStats s;
    map_stats_init(&s);
    CU_ASSERT_OK(map_stats_add_image(&s, d, nd, g, ng));
    MapResult r;
    CU_ASSERT_OK(map_compute(&s, &r));
    map_stats_free(&s);
    return r;
}

/* Perfect predictions. recall reaches exactly 1 at the last detection, and
 * compute_ap appends the sentinel (recall 1, precision 0); np.interp at x = 1
 * returns the LAST sample with xp == 1, the sentinel's 0, so the trapezoid
 * rule loses half of the last 0.01 step: AP = 0.99 + 0.005 = 0.995. This is
 * the official arithmetic (YOLOv5/YOLOv9 report at most 0.995 per class). */
static void test_perfect(void) {
    GtBox g[2] = {gt_box(10, 10, 50, 50, 0), gt_box(60, 60, 90, 100, 1)};
    Detection d[2] = {det_box(10, 10, 50, 50, 0.9f, 0), det_box(60, 60, 90, 100, 0.8f, 1)};
    MapResult r = run(d, 2, g, 2);
    CU_ASSERT_EQUAL(r.nclasses, 2);
    CU_ASSERT_DOUBLE_EQUAL(r.map50, 0.995, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(r.map50_95, 0.995, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(r.mp, 1.0, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(r.mr, 1.0, 1e-6);
    map_result_free(&r);
}

/* One of two boxes found: recall [0.5], precision [1]. Envelope over recall
 * [0, 0.5, 1] = [1, 1, 0]: 1 up to recall 0.5, then linear down to 0 at 1.
 * Area = 0.5 + 0.25 = 0.75 (the trapezoid rule is exact on a line). */
static void test_missed_box(void) {
    GtBox g[2] = {gt_box(10, 10, 50, 50, 0), gt_box(60, 60, 90, 100, 0)};
    Detection d[1] = {det_box(10, 10, 50, 50, 0.9f, 0)};
    MapResult r = run(d, 1, g, 2);
    CU_ASSERT_DOUBLE_EQUAL(r.map50, 0.75, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(r.mr, 0.5, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(r.mp, 1.0, 1e-6);
    map_result_free(&r);
}

/* Two detections of one box: the higher-confidence one is the TP, the other
 * an FP. recall [1, 1], precision [1, 0.5]; envelope [1, 1, 0.5, 0] at
 * recall [0, 1, 1, 1] -> 1 on [0, 1), 0 at 1: AP 0.995 as for a perfect class,
 * but precision at the best-F1 confidence is lower. */
static void test_duplicates(void) {
    GtBox g[1] = {gt_box(10, 10, 50, 50, 0)};
    Detection d[2] = {det_box(10, 10, 50, 50, 0.9f, 0), det_box(11, 10, 50, 50, 0.8f, 0)};
    uint8_t correct[2 * MAP_NIOU];
    CU_ASSERT_OK(match_detections(d, 2, g, 1, correct));
    CU_ASSERT_EQUAL(correct[0], 1);
    CU_ASSERT_EQUAL(correct[MAP_NIOU], 0); /* the duplicate is a false positive */
    MapResult r = run(d, 2, g, 1);
    CU_ASSERT_DOUBLE_EQUAL(r.map50, 0.995, 1e-6);
    map_result_free(&r);
}

/* Threshold membership. IoU of [0,0,10,10] with [0,0,10,5.8] is 58/100 = 0.58:
 * TP at 0.50 and 0.55 only. With [0,0,10,6] the IoU is 60/(100 + 1e-7) which
 * rounds to 0.6f in float32, and the official thresholds are
 * torch.linspace(0.5, 0.95, 10) in float32, whose third value is also 0.6f:
 * so an IoU of exactly 0.6 counts at 0.60 as well (checked against torch). */
static void test_iou_thresholds(void) {
    GtBox g[1] = {gt_box(0, 0, 10, 10, 3)};
    Detection d058[1] = {det_box(0, 0, 10, 5.8f, 0.5f, 3)};
    Detection d060[1] = {det_box(0, 0, 10, 6, 0.5f, 3)};
    uint8_t c[MAP_NIOU];
    CU_ASSERT_OK(match_detections(d058, 1, g, 1, c));
    for (int k = 0; k < MAP_NIOU; k++) CU_ASSERT_EQUAL(c[k], k < 2);
    CU_ASSERT_OK(match_detections(d060, 1, g, 1, c));
    for (int k = 0; k < MAP_NIOU; k++) CU_ASSERT_EQUAL(c[k], k < 3);
    /* a wrong class never matches */
    Detection wrong[1] = {det_box(0, 0, 10, 10, 0.5f, 4)};
    CU_ASSERT_OK(match_detections(wrong, 1, g, 1, c));
    for (int k = 0; k < MAP_NIOU; k++) CU_ASSERT_EQUAL(c[k], 0);
}

/* A class with predictions but no ground truth is not a row (ap_per_class
 * loops over the classes of the labels); a class with ground truth but no
 * prediction is a row with zeros. */
static void test_class_without_gt(void) {
    GtBox g[2] = {gt_box(10, 10, 50, 50, 0), gt_box(60, 60, 90, 100, 1)};
    Detection d[2] = {det_box(10, 10, 50, 50, 0.9f, 0), det_box(0, 0, 5, 5, 0.95f, 7)};
    MapResult r = run(d, 2, g, 2);
    CU_ASSERT_EQUAL(r.nclasses, 2);
    CU_ASSERT_EQUAL(r.per_class[0].cls, 0);
    CU_ASSERT_EQUAL(r.per_class[1].cls, 1);
    CU_ASSERT_DOUBLE_EQUAL(r.per_class[0].ap50, 0.995, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(r.per_class[1].ap50, 0.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(r.map50, 0.4975, 1e-6);
    map_result_free(&r);
}

/* No true positive at all: the official summary stays at zero. */
static void test_no_tp(void) {
    GtBox g[1] = {gt_box(10, 10, 50, 50, 0)};
    Detection d[1] = {det_box(60, 60, 90, 90, 0.9f, 0)};
    MapResult r = run(d, 1, g, 1);
    CU_ASSERT_EQUAL(r.map50, 0);
    CU_ASSERT_EQUAL(r.mp, 0);
    CU_ASSERT_EQUAL(r.per_class[0].instances, 1);
    map_result_free(&r);
}

/* The exact official arithmetic on a fixed list.
 * Class 0, three boxes, five detections by falling confidence
 * TP FP TP FP TP (.9 .8 .7 .6 .5):
 *   recall    1/3 1/3 2/3 2/3 1      precision 1 1/2 2/3 1/2 3/5
 *   envelope over recall [0,1/3,1/3,2/3,2/3,1,1] = [1,1,2/3,2/3,.6,.6,0]
 *   101-point samples: 1 for x <= .33, 2/3 for .34-.66, .6 for .67-.99, 0 at 1
 *   trapz: .33 + (1+2/3)/2*.01 + .32*2/3 + (2/3+.6)/2*.01 + .32*.6 + .6/2*.01 = 0.753
 *   F1 is largest at the lowest confidence (p .6, r 1): P .6, R 1. */
static void test_official_arithmetic_one_class(void) {
    GtBox g[3] = {gt_box(0, 0, 10, 10, 0), gt_box(20, 0, 30, 10, 0), gt_box(40, 0, 50, 10, 0)};
    Detection d[5] = {det_box(0, 0, 10, 10, .9f, 0), det_box(100, 0, 110, 10, .8f, 0), det_box(20, 0, 30, 10, .7f, 0),
                      det_box(200, 0, 210, 10, .6f, 0), det_box(40, 0, 50, 10, .5f, 0)};
    MapResult r = run(d, 5, g, 3);
    CU_ASSERT_DOUBLE_EQUAL(r.map50, 0.753, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(r.map50_95, 0.753, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(r.mp, 0.6, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(r.mr, 1.0, 1e-6);
    map_result_free(&r);
}

/* Two images, two classes plus a class with no labels.
 * class 0 (2 boxes): .9 TP, .4 FP -> recall [.5,.5], precision [1,.5];
 *   envelope at recall [0,.5,.5,1] = [1,1,.5,0]; at x = .5 np.interp takes the
 *   last sample with xp = .5 (0.5); then a line from .5 to 0:
 *   AP = .49 + (1+.5)/2*.01 + .125 = 0.6225.
 * class 1 (1 box): .6 TP, .3 FP -> AP 0.995. mAP50 = 0.80875.
 * class 2 has a detection (.8) but no label: not a row.
 * P, R: the mean F1 over classes 0,1, sampled at 1000 confidences and smoothed
 * with a 101-tap box filter, peaks at sample 549 (confidence 549/999 = .54955,
 * the middle of the plateau between .4 and .6 where class 0 has r .5 and
 * class 1 has r 1). There precision is linear in confidence between the
 * detections: class 0: 1 - (.9 - .54955)/.5 * .5 = .64955; class 1:
 * 1 - (.6 - .54955)/.3 * .5 = .91592. P = .78273, R = .75. */
static void test_official_arithmetic_two_images(void) {
    MapStats s;
    map_stats_init(&s);
    GtBox g1[2] = {gt_box(0, 0, 10, 10, 0), gt_box(20, 0, 30, 10, 1)};
    Detection d1[3] = {det_box(0, 0, 10, 10, .9f, 0), det_box(50, 50, 60, 60, .8f, 2), det_box(20, 0, 30, 10, .6f, 1)};
    GtBox g2[1] = {gt_box(0, 0, 10, 10, 0)};
    Detection d2[2] = {det_box(30, 30, 40, 40, .4f, 0), det_box(30, 30, 40, 40, .3f, 1)};
    CU_ASSERT_OK(map_stats_add_image(&s, d1, 3, g1, 2));
    CU_ASSERT_OK(map_stats_add_image(&s, d2, 2, g2, 1));
    MapResult r;
    CU_ASSERT_OK(map_compute(&s, &r));
    CU_ASSERT_EQUAL(r.images, 2);
    CU_ASSERT_EQUAL(r.instances, 3);
    CU_ASSERT_EQUAL(r.nclasses, 2);
    CU_ASSERT_DOUBLE_EQUAL(r.per_class[0].ap50, 0.6225, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(r.per_class[1].ap50, 0.995, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(r.map50, 0.80875, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(r.per_class[0].p, 0.64954955, 1e-5);
    CU_ASSERT_DOUBLE_EQUAL(r.per_class[1].p, 0.91591592, 1e-5);
    CU_ASSERT_DOUBLE_EQUAL(r.mr, 0.75, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(map_fitness(&r), 0.1 * r.map50 + 0.9 * r.map50_95, 1e-7);
    map_result_free(&r);
    map_stats_free(&s);
}

/* process_batch's order of resolution: each detection first keeps its best
 * label; then a label keeps the lowest-index detection. Label A is the best
 * match of both detections 0 and 1, so detection 1 does not fall back to
 * label B even though it overlaps B above the threshold. */
static void test_matching_order(void) {
    GtBox g[2] = {gt_box(0, 0, 10, 10, 0), gt_box(4, 0, 14, 10, 0)};
    Detection d[2] = {det_box(0, 0, 10, 10, .9f, 0), det_box(1, 0, 11, 10, .8f, 0)};
    uint8_t c[2 * MAP_NIOU];
    CU_ASSERT_OK(match_detections(d, 2, g, 2, c));
    CU_ASSERT_EQUAL(c[0], 1);
    CU_ASSERT_EQUAL(c[MAP_NIOU + 0], 0);
}

static void test_np_interp(void) {
    double xp[4] = {0, 0.5, 0.5, 1}, fp[4] = {1, 1, 0.5, 0};
    CU_ASSERT_DOUBLE_EQUAL(np_interp(0.5, xp, fp, 4, 9, 9), 0.5, 1e-12); /* last tie */
    CU_ASSERT_DOUBLE_EQUAL(np_interp(0.75, xp, fp, 4, 9, 9), 0.25, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(np_interp(-1, xp, fp, 4, 9, 8), 9, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(np_interp(2, xp, fp, 4, 9, 8), 8, 1e-12);
}

SUITE_FN(metrics) {
    CU_pSuite s = CU_add_suite("metrics", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "perfect predictions", test_perfect);
    CU_add_test(s, "a missed box", test_missed_box);
    CU_add_test(s, "duplicate detections", test_duplicates);
    CU_add_test(s, "IoU thresholds", test_iou_thresholds);
    CU_add_test(s, "class without ground truth", test_class_without_gt);
    CU_add_test(s, "no true positive", test_no_tp);
    CU_add_test(s, "official arithmetic, one class", test_official_arithmetic_one_class);
    CU_add_test(s, "official arithmetic, two images", test_official_arithmetic_two_images);
    CU_add_test(s, "matching order of process_batch", test_matching_order);
    CU_add_test(s, "np.interp semantics", test_np_interp);
    return 0;
}
