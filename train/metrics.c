#include "train/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/error.h"

const float map_iou_thresholds[MAP_NIOU] = {0.50f, 0.55f, 0.60f, 0.65f, 0.70f, 0.75f, 0.80f, 0.85f, 0.90f, 0.95f};

float box_iou_xyxy(float ax1, float ay1, float ax2, float ay2, float bx1, float by1, float bx2, float by2) {
    float iw = fminf(ax2, bx2) - fmaxf(ax1, bx1);
    float ih = fminf(ay2, by2) - fmaxf(ay1, by1);
    float inter = fmaxf(iw, 0.f) * fmaxf(ih, 0.f);
    float area_a = (ax2 - ax1) * (ay2 - ay1), area_b = (bx2 - bx1) * (by2 - by1);
    return inter / (area_a + area_b - inter + 1e-7f);
}

typedef struct {
    int label, det;
    float iou;
} Match;

/* Highest IoU first; ties keep the candidate order (label-major, as torch.where). */
static int by_iou_desc(const void *a, const void *b) {
    const Match *x = a, *y = b;
    if (x->iou != y->iou) return x->iou < y->iou ? 1 : -1;
    if (x->label != y->label) return x->label - y->label;
    return x->det - y->det;
}

int match_detections(const Detection *det, int nd, const GtBox *gt, int ngt, uint8_t *correct) {
    memset(correct, 0, (size_t)nd * MAP_NIOU);
    if (nd == 0 || ngt == 0) return 0;
    float *iou = malloc((size_t)nd * ngt * sizeof *iou);
    Match *m = malloc((size_t)nd * ngt * sizeof *m);
    int *best_of_det = malloc((size_t)nd * sizeof *best_of_det);
    int *taken = malloc((size_t)ngt * sizeof *taken);
    if (!iou || !m || !best_of_det || !taken) {
        free(iou), free(m), free(best_of_det), free(taken);
        return gelan_error("match_detections: out of memory (%d detections, %d labels)", nd, ngt);
    }
    for (int l = 0; l < ngt; l++)
        for (int d = 0; d < nd; d++)
            iou[(size_t)l * nd + d] = box_iou_xyxy(gt[l].x1, gt[l].y1, gt[l].x2, gt[l].y2, det[d].x1, det[d].y1,
                                                   det[d].x2, det[d].y2);
    for (int k = 0; k < MAP_NIOU; k++) {
        int nm = 0;
        for (int l = 0; l < ngt; l++)
            for (int d = 0; d < nd; d++) {
                float v = iou[(size_t)l * nd + d];
                if (v >= map_iou_thresholds[k] && gt[l].cls == det[d].cls) m[nm++] = (Match){l, d, v};
            }
        if (nm == 0) continue;
        qsort(m, (size_t)nm, sizeof *m, by_iou_desc);
        /* each detection keeps its first (highest-IoU) candidate */
        for (int d = 0; d < nd; d++) best_of_det[d] = -1;
        for (int i = 0; i < nm; i++)
            if (best_of_det[m[i].det] < 0) best_of_det[m[i].det] = m[i].label;
        /* np.unique orders the survivors by detection index; each label then
         * keeps the first, i.e. the lowest detection index */
        for (int l = 0; l < ngt; l++) taken[l] = 0;
        for (int d = 0; d < nd; d++) {
            int l = best_of_det[d];
            if (l >= 0 && !taken[l]) {
                taken[l] = 1;
                correct[(size_t)d * MAP_NIOU + k] = 1;
            }
        }
    }
    free(iou), free(m), free(best_of_det), free(taken);
    return 0;
}

void map_stats_init(MapStats *s) { memset(s, 0, sizeof *s); }

void map_stats_free(MapStats *s) {
    free(s->correct), free(s->conf), free(s->pred_cls), free(s->target_cls);
    memset(s, 0, sizeof *s);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

int map_stats_add_image(MapStats *s, const Detection *det, int nd, const GtBox *gt, int ngt) {
    size_t dcap = s->cap, tcap = s->tcap;
    size_t need = s->n + (size_t)nd;
    if (grow((void **)&s->conf, &dcap, need, sizeof *s->conf)) goto oom;
    dcap = s->cap;
    if (grow((void **)&s->pred_cls, &dcap, need, sizeof *s->pred_cls)) goto oom;
    dcap = s->cap;
    if (grow((void **)&s->correct, &dcap, need, MAP_NIOU)) goto oom;
    s->cap = dcap;
    if (grow((void **)&s->target_cls, &tcap, s->nt + (size_t)ngt, sizeof *s->target_cls)) goto oom;
    s->tcap = tcap;
    if (match_detections(det, nd, gt, ngt, s->correct + s->n * MAP_NIOU)) return -1;
    for (int d = 0; d < nd; d++) {
        s->conf[s->n + d] = det[d].conf;
        s->pred_cls[s->n + d] = det[d].cls;
    }
    s->n += (size_t)nd;
    for (int l = 0; l < ngt; l++) s->target_cls[s->nt++] = gt[l].cls;
    s->images++;
    return 0;
oom:
    return gelan_error("map_stats: out of memory adding %d detections", nd);
}

double np_interp(double x, const double *xp, const double *fp, size_t n, double left, double right) {
    if (n == 0) return left;
    if (x < xp[0]) return left;
    if (x > xp[n - 1]) return right;
    if (x == xp[n - 1]) return fp[n - 1];
    /* rightmost j with xp[j] <= x (so xp[j] <= x < xp[j+1]) */
    size_t lo = 0, hi = n - 1;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (xp[mid] <= x)
            lo = mid;
        else
            hi = mid;
    }
    if (xp[lo] == x) return fp[lo];
    double slope = (fp[lo + 1] - fp[lo]) / (xp[lo + 1] - xp[lo]);
    return slope * (x - xp[lo]) + fp[lo];
}

/* compute_ap: precision envelope, then 101-point interpolation and the
 * trapezoid rule over recall 0, 0.01, ..., 1 (np.trapz). */
static double compute_ap(const double *recall, const double *precision, size_t n, double *mrec, double *mpre) {
    mrec[0] = 0.0, mpre[0] = 1.0;
    for (size_t i = 0; i < n; i++) mrec[i + 1] = recall[i], mpre[i + 1] = precision[i];
    mrec[n + 1] = 1.0, mpre[n + 1] = 0.0;
    for (size_t i = n + 1; i-- > 0;) mpre[i] = fmax(mpre[i], mpre[i + 1]);
    double ap = 0, prev = np_interp(0.0, mrec, mpre, n + 2, mpre[0], mpre[n + 1]);
    for (int k = 1; k <= 100; k++) {
        double x = k / 100.0;
        double y = np_interp(x, mrec, mpre, n + 2, mpre[0], mpre[n + 1]);
        ap += (y + prev) * 0.5 * 0.01;
        prev = y;
    }
    return ap;
}

static const float *sort_conf; /* qsort context for ordering by confidence */
static int by_conf_desc(const void *a, const void *b) {
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    if (sort_conf[i] != sort_conf[j]) return sort_conf[i] < sort_conf[j] ? 1 : -1;
    return i < j ? -1 : i > j; /* stable: ties keep input order */
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

#define NPX 1000

int map_compute(const MapStats *s, MapResult *out) {
    memset(out, 0, sizeof *out);
    out->images = s->images;
    out->instances = (int)s->nt;
    int any_tp = 0;
    for (size_t i = 0; i < s->n; i++) any_tp |= s->correct[i * MAP_NIOU];
    /* unique ground-truth classes and their counts */
    int *cls = malloc((s->nt ? s->nt : 1) * sizeof *cls);
    size_t *order = malloc((s->n ? s->n : 1) * sizeof *order);
    double *f1sum = calloc(NPX, sizeof(double));
    double *rec = malloc((s->n + 2) * sizeof(double)), *pre = malloc((s->n + 2) * sizeof(double));
    double *mrec = malloc((s->n + 2) * sizeof(double)), *mpre = malloc((s->n + 2) * sizeof(double));
    double *xc = malloc((s->n + 2) * sizeof(double));
    double *curves = NULL;
    int rc = -1;
    if (!cls || !order || !f1sum || !rec || !pre || !mrec || !mpre || !xc) goto done;
    memcpy(cls, s->target_cls, s->nt * sizeof *cls);
    qsort(cls, s->nt, sizeof *cls, cmp_int);
    int nc = 0;
    for (size_t i = 0; i < s->nt; i++)
        if (i == 0 || cls[i] != cls[i - 1]) cls[nc++] = cls[i];
    out->nclasses = nc;
    out->per_class = calloc(nc ? (size_t)nc : 1, sizeof *out->per_class);
    curves = calloc((size_t)(nc ? nc : 1) * 2 * NPX, sizeof *curves); /* p and r per class at px */
    if (!out->per_class || !curves) goto done;
    if (!any_tp) { /* the official summary stays at zero */
        for (int c = 0; c < nc; c++) out->per_class[c].cls = cls[c];
        for (size_t i = 0; i < s->nt; i++)
            for (int c = 0; c < nc; c++)
                if (s->target_cls[i] == cls[c]) out->per_class[c].instances++;
        rc = 0;
        goto done;
    }
    for (size_t i = 0; i < s->n; i++) order[i] = i;
    sort_conf = s->conf;
    qsort(order, s->n, sizeof *order, by_conf_desc);

    for (int c = 0; c < nc; c++) {
        ClassMetrics *cm = &out->per_class[c];
        double *pc = curves + (size_t)c * 2 * NPX, *rcv = pc + NPX;
        cm->cls = cls[c];
        for (size_t i = 0; i < s->nt; i++) cm->instances += s->target_cls[i] == cls[c];
        size_t np_ = 0;
        for (size_t i = 0; i < s->n; i++) np_ += s->pred_cls[order[i]] == cls[c];
        if (np_ == 0) continue; /* p = r = ap = 0 for this class */
        for (int k = 0; k < MAP_NIOU; k++) {
            double tpc = 0, fpc = 0;
            size_t j = 0;
            for (size_t i = 0; i < s->n; i++) {
                size_t d = order[i];
                if (s->pred_cls[d] != cls[c]) continue;
                if (s->correct[d * MAP_NIOU + k])
                    tpc += 1;
                else
                    fpc += 1;
                rec[j] = tpc / (cm->instances + 1e-16);
                pre[j] = tpc / (tpc + fpc);
                xc[j] = -(double)s->conf[d];
                j++;
            }
            if (k == 0) { /* p and r curves over confidence at IoU 0.5 */
                for (int q = 0; q < NPX; q++) {
                    double x = -(double)q / (NPX - 1);
                    rcv[q] = np_interp(x, xc, rec, np_, 0.0, rec[np_ - 1]);
                    pc[q] = np_interp(x, xc, pre, np_, 1.0, pre[np_ - 1]);
                }
            }
            cm->ap[k] = (float)compute_ap(rec, pre, np_, mrec, mpre);
        }
    }
    /* the confidence index of the best mean F1, smoothed with a box filter of
     * 101 taps (smooth(f1.mean(0), 0.1)), edges padded with the end values */
    for (int q = 0; q < NPX; q++) {
        double sum = 0;
        for (int c = 0; c < nc; c++) {
            double p = curves[(size_t)c * 2 * NPX + q], r = curves[(size_t)c * 2 * NPX + NPX + q];
            sum += 2 * p * r / (p + r + 1e-16);
        }
        f1sum[q] = sum / nc;
    }
    const int nf = 101, half = nf / 2;
    int best = 0;
    double best_v = -1;
    for (int q = 0; q < NPX; q++) {
        double acc = 0;
        for (int t = q - half; t <= q + half; t++) acc += f1sum[t < 0 ? 0 : t >= NPX ? NPX - 1 : t];
        acc /= nf;
        if (acc > best_v) best_v = acc, best = q;
    }
    double sp = 0, sr = 0, s50 = 0, sall = 0;
    for (int c = 0; c < nc; c++) {
        ClassMetrics *cm = &out->per_class[c];
        cm->p = (float)curves[(size_t)c * 2 * NPX + best];
        cm->r = (float)curves[(size_t)c * 2 * NPX + NPX + best];
        double a = 0;
        for (int k = 0; k < MAP_NIOU; k++) a += cm->ap[k];
        cm->ap50 = cm->ap[0];
        cm->ap50_95 = (float)(a / MAP_NIOU);
        sp += cm->p, sr += cm->r, s50 += cm->ap50, sall += a / MAP_NIOU;
    }
    if (nc) {
        out->mp = (float)(sp / nc), out->mr = (float)(sr / nc);
        out->map50 = (float)(s50 / nc), out->map50_95 = (float)(sall / nc);
    }
    rc = 0;
done:
    if (rc) gelan_error("map_compute: out of memory (%zu detections)", s->n);
    free(cls), free(order), free(f1sum), free(rec), free(pre), free(mrec), free(mpre),
        free(xc), free(curves);
    if (rc) map_result_free(out);
    return rc;
}

void map_result_free(MapResult *r) {
    free(r->per_class);
    r->per_class = NULL;
    r->nclasses = 0;
}

float map_fitness(const MapResult *r) { return 0.1f * r->map50 + 0.9f * r->map50_95; }
