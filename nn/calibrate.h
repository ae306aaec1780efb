/* Post-training quantization (PTQ): calibration of the activation ranges of a
 * quantized model (nn/quant.h) on unlabeled images, and the checks that catch a
 * degenerate calibration before it ships.
 *
 * calibrate_model runs the float model over the calibration batches twice:
 * first for the exact min/max of every quantized conv's input, then for a
 * histogram of it over [min(min, 0), max(max, 0)]. The clip range [lo, hi] of
 * each input comes from the method:
 *   minmax      the exact min and max;
 *   percentile  the (100 - p)% and p% quantiles (p = 99.99 by default), read
 *               from the histogram with linear interpolation inside a bin;
 *   kl          the upper end that minimises KL(P || Q) between the histogram
 *               cut at that end (the rest folded into its last bin) and the same
 *               bins quantized to 256 levels (TensorRT's entropy calibration, as
 *               NVIDIA's pytorch-quantization computes it); the lower end stays
 *               the minimum;
 * and the uint8 scale and zero point follow from [lo, hi] as the QAT observers'
 * (qat_qparams: the range always includes 0). Weights need no calibration (per
 * channel, from max|w|).
 *
 * Degenerate calibration (the seed's PTQ gave every output the same value) is
 * detected per conv and per layer output:
 *   - a conv input that is constant over the whole calibration set, or not finite;
 *   - heavy saturation: the share of input values beyond the clip range (from
 *     the histogram) above sat_warn (warning) or sat_fail (failure);
 *   - collapse: on check_batches batches, the quantized model's output of every
 *     layer (and every head map) is compared with the float model's; within-
 *     channel variance falling below collapse_ratio of the float one (outputs
 *     that no longer vary across the image, the seed's symptom) is a failure,
 *     a signal-to-quantization-noise ratio below sqnr_warn_db a warning.
 * Warnings go through gelan_warn. Failures make calibrate_model return -1 with a
 * message naming the first failing conv or layer, unless force is set (then
 * they are warnings too). The report is filled either way. */
#ifndef GELAN_NN_CALIBRATE_H
#define GELAN_NN_CALIBRATE_H

#include <stdbool.h>
#include <stddef.h>

#include "nn/quant.h"

typedef enum { CALIB_MINMAX, CALIB_PERCENTILE, CALIB_KL } CalibMethod;

typedef struct {
    CalibMethod method;
    double percentile;     /* 99.99 */
    int bins;              /* histogram bins: 2048 (at least 512) */
    double sat_warn;       /* 0.01 */
    double sat_fail;       /* 0.05 */
    double collapse_ratio; /* 0.01 */
    double sqnr_warn_db;   /* 5 */
    int check_batches;     /* 2 (0: no collapse check) */
    bool force;            /* degenerate calibration is a warning, not an error */
    /* stage "range", "histogram" or "check": batch done of total */
    void (*progress)(void *ctx, const char *stage, int done, int total);
    void *ctx;
} CalibOptions;

void calib_options_default(CalibOptions *o);
const char *calib_method_name(CalibMethod m);
/* "minmax", "percentile", "kl" (also "entropy"); -1 with a message otherwise. */
int calib_method_parse(const char *s, CalibMethod *m);

typedef enum { CALIB_OK, CALIB_WARN, CALIB_FAIL } CalibStatus;

typedef struct {
    const char *name; /* the conv (the model's string) */
    int layer;        /* its YAML row */
    float min, max;   /* observed over the calibration set */
    float lo, hi;     /* the clip range the method chose */
    float scale;
    int zp;
    double saturated; /* share of values whose code is clamped */
    CalibStatus status;
    char note[200];
} CalibConv;

typedef struct {
    char name[48];    /* as model_eval_outputs names it: layer.7, output.level0, ... */
    double sqnr_db;   /* 10 log10(within-channel variance of the float output / mean squared error) */
    double var_ratio; /* within-channel variance, quantized / float */
    CalibStatus status;
    char note[200];
} CalibOutput;

typedef struct {
    CalibMethod method;
    long images;
    int nconvs;
    CalibConv *convs;
    int nouts; /* 0 without a check */
    CalibOutput *outs;
    int nwarn, nfail;
} CalibReport;

void calib_report_free(CalibReport *r);

/* Batch i (0 <= i < nbatches) of the calibration images, [B, ch, H, W] in [0, 1];
 * the tensor stays the caller's and must live until the next call. 0 or -1. */
typedef int (*CalibBatchFn)(void *ctx, int i, Tensor **images);

/* Calibrates every quantized conv of m (model_qat_enable first: it decides the
 * exclusions) and leaves the model quantized with the new scales and zero
 * points, observers off. t: a tape (reset after every batch). 0, or -1 with a
 * gelan_error (degenerate calibration without force, a failed batch or forward);
 * *rep is filled in both cases (free with calib_report_free). */
int calibrate_model(Model *m, Tape *t, int nbatches, CalibBatchFn batch, void *ctx, const CalibOptions *o,
                    CalibReport *rep);

/* ---- the histogram behind the methods (exposed for tests) -------------------------- */
typedef struct {
    double lo, hi; /* [min(min, 0), max(max, 0)] */
    int bins;
    double *count;
    double total;   /* values added */
    float min, max; /* the range it was made for */
} CalibHist;

/* A histogram for values in [min, max] (from a first pass). 0 or -1. */
int calib_hist_init(CalibHist *h, int bins, float min, float max);
void calib_hist_free(CalibHist *h);
/* Adds n values (NaN skipped; values outside [lo, hi] go to the end bins). Thread-safe
 * against itself for one histogram only if callers serialise; splits over the pool. */
void calib_hist_add(CalibHist *h, const float *x, size_t n);
/* The clip range of a method (minmax: h->min, h->max). */
void calib_hist_range(const CalibHist *h, CalibMethod m, double percentile, float *lo, float *hi);
/* Share of the values below a or above b (linear inside a bin). */
double calib_hist_outside(const CalibHist *h, double a, double b);

#endif
