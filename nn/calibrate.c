/* Post-training calibration and its degenerate-case checks (nn/calibrate.h). */
#include "nn/calibrate.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/error.h"
#include "tensor/pool.h"

#define KL_LEVELS 256 /* the uint8 codes */

void calib_options_default(CalibOptions *o) {
    memset(o, 0, sizeof *o);
    o->method = CALIB_PERCENTILE;
    o->percentile = 99.99;
    o->bins = 2048;
    o->sat_warn = 0.01;
    o->sat_fail = 0.05;
    o->collapse_ratio = 0.01;
    o->sqnr_warn_db = 5.0;
    o->check_batches = 2;
}

const char *calib_method_name(CalibMethod m) {
    switch (m) {
        case CALIB_MINMAX:
            return "minmax";
        case CALIB_PERCENTILE:
            return "percentile";
        case CALIB_KL:
            return "kl";
    }
    return "?";
}

int calib_method_parse(const char *s, CalibMethod *m) {
    if (!strcmp(s, "minmax"))
        *m = CALIB_MINMAX;
    else if (!strcmp(s, "percentile"))
        *m = CALIB_PERCENTILE;
    else if (!strcmp(s, "kl") || !strcmp(s, "entropy"))
        *m = CALIB_KL;
    else
        return gelan_error("unknown calibration method '%s' (minmax, percentile, kl)", s);
    return 0;
}

void calib_report_free(CalibReport *r) {
    free(r->convs);
    free(r->outs);
    memset(r, 0, sizeof *r);
}

/* ---- histogram ------------------------------------------------------------------------ */

int calib_hist_init(CalibHist *h, int bins, float min, float max) {
    memset(h, 0, sizeof *h);
    if (bins < 2) return gelan_error("calibration histogram: %d bins", bins);
    h->bins = bins;
    h->min = min, h->max = max;
    h->lo = min < 0.f ? min : 0.0;
    h->hi = max > 0.f ? max : 0.0;
    h->count = calloc((size_t)bins, sizeof *h->count);
    return h->count ? 0 : gelan_error("calibration histogram: out of memory");
}

void calib_hist_free(CalibHist *h) {
    free(h->count);
    h->count = NULL;
}

#define HIST_CHUNK 65536

typedef struct {
    CalibHist *h;
    const float *x;
    size_t n;
    pthread_mutex_t lock;
} HistJob;

static void hist_worker(void *ctx, size_t b, size_t e) {
    HistJob *j = ctx;
    CalibHist *h = j->h;
    const int nb = h->bins;
    uint32_t stack[4096], *local = nb <= 4096 ? stack : calloc((size_t)nb, sizeof *local);
    if (!local) return; /* out of memory: these values go uncounted */
    memset(local, 0, (size_t)nb * sizeof *local);
    const double scale = h->hi > h->lo ? nb / (h->hi - h->lo) : 0.0;
    double added = 0;
    for (size_t c = b; c < e; c++) {
        size_t i0 = c * HIST_CHUNK, i1 = i0 + HIST_CHUNK < j->n ? i0 + HIST_CHUNK : j->n;
        for (size_t i = i0; i < i1; i++) {
            float v = j->x[i];
            if (v != v) continue;
            double p = (v - h->lo) * scale;
            int k = p <= 0 ? 0 : p >= nb ? nb - 1 : (int)p;
            local[k]++;
        }
        added += (double)(i1 - i0);
    }
    pthread_mutex_lock(&j->lock);
    for (int k = 0; k < nb; k++) h->count[k] += local[k];
    h->total += added; /* NaN included: they count as neither inside nor outside */
    pthread_mutex_unlock(&j->lock);
    if (local != stack) free(local);
}

void calib_hist_add(CalibHist *h, const float *x, size_t n) {
    HistJob j = {.h = h, .x = x, .n = n};
    pthread_mutex_init(&j.lock, NULL);
    parallel_for((n + HIST_CHUNK - 1) / HIST_CHUNK, 1, hist_worker, &j);
    pthread_mutex_destroy(&j.lock);
}

static double hist_counted(const CalibHist *h) {
    double s = 0;
    for (int k = 0; k < h->bins; k++) s += h->count[k];
    return s;
}

/* The value below which a share q of the counted values lies. */
static double hist_quantile(const CalibHist *h, double q) {
    const double width = (h->hi - h->lo) / h->bins, target = q * hist_counted(h);
    double acc = 0;
    for (int k = 0; k < h->bins; k++) {
        if (h->count[k] > 0 && acc + h->count[k] >= target) return h->lo + (k + (target - acc) / h->count[k]) * width;
        acc += h->count[k];
    }
    return h->hi;
}

double calib_hist_outside(const CalibHist *h, double a, double b) {
    const double counted = hist_counted(h);
    if (counted <= 0 || h->hi <= h->lo) return 0;
    const double width = (h->hi - h->lo) / h->bins;
    double out = 0;
    for (int k = 0; k < h->bins; k++) {
        double e0 = h->lo + k * width, e1 = e0 + width;
        if (e1 <= a || e0 >= b)
            out += h->count[k];
        else if (e0 < a)
            out += h->count[k] * (a - e0) / width;
        else if (e1 > b)
            out += h->count[k] * (e1 - b) / width;
    }
    return out / counted;
}

/* The upper end minimising KL(P || Q) (see the header); the result is a bin edge. */
static double kl_upper(const CalibHist *h) {
    const int nb = h->bins;
    if (nb <= KL_LEVELS || h->hi <= h->lo) return h->max;
    const double width = (h->hi - h->lo) / nb;
    double *outliers = malloc(sizeof(double) * (nb + 1)), lev[KL_LEVELS];
    int levn[KL_LEVELS];
    if (!outliers) return h->max;
    outliers[nb] = 0;
    for (int k = nb - 1; k >= 0; k--) outliers[k] = outliers[k + 1] + h->count[k];
    const double total = outliers[0];
    double best = INFINITY;
    int best_i = nb;
    for (int i = KL_LEVELS; i <= nb; i++) {
        const double out = outliers[i], inside = total - out;
        if (inside <= 0) continue;
        memset(lev, 0, sizeof lev);
        memset(levn, 0, sizeof levn);
        for (int k = 0; k < i; k++) {
            if (h->count[k] <= 0) continue;
            int l = (int)((long)k * KL_LEVELS / i);
            lev[l] += h->count[k];
            levn[l]++;
        }
        double kl = 0;
        for (int k = 0; k < i; k++) {
            double p = h->count[k] + (k == i - 1 ? out : 0);
            if (p <= 0) continue;
            if (h->count[k] <= 0) { /* P has mass where Q has none */
                kl = INFINITY;
                break;
            }
            int l = (int)((long)k * KL_LEVELS / i);
            double pn = p / total, qn = lev[l] / levn[l] / inside;
            kl += pn * log(pn / qn);
        }
        if (kl < best) best = kl, best_i = i;
    }
    free(outliers);
    double upper = h->lo + best_i * width;
    return upper < h->max ? upper : h->max;
}

void calib_hist_range(const CalibHist *h, CalibMethod m, double percentile, float *lo, float *hi) {
    double a = h->min, b = h->max;
    if (m == CALIB_PERCENTILE && h->hi > h->lo) {
        double p = percentile / 100.0;
        a = hist_quantile(h, 1.0 - p);
        b = hist_quantile(h, p);
    } else if (m == CALIB_KL) {
        b = kl_upper(h);
    }
    /* never wider than what was seen */
    *lo = (float)(a < h->min ? h->min : a > h->max ? h->max : a);
    *hi = (float)(b < h->min ? h->min : b > h->max ? h->max : b);
}

/* ---- calibration ------------------------------------------------------------------------ */

enum { STAGE_RANGE, STAGE_HIST };

typedef struct Calib Calib;

typedef struct {
    Calib *c;
    QuantState *q;
    float min, max;
    bool seen, nonfinite;
    CalibHist hist;
} ConvData;

struct Calib {
    int stage;
    int n;
    ConvData *conv;
    const CalibOptions *o;
};

static void input_hook(void *ctx, QuantState *q, const Tensor *x) {
    (void)q;
    ConvData *d = ctx;
    if (d->c->stage == STAGE_RANGE) {
        float lo, hi;
        qat_tensor_minmax(x->data, x->numel, &lo, &hi);
        if (!isfinite(lo) || !isfinite(hi)) d->nonfinite = true;
        if (lo <= hi) { /* some value was not NaN */
            d->min = d->seen && d->min < lo ? d->min : lo;
            d->max = d->seen && d->max > hi ? d->max : hi;
            d->seen = true;
        }
    } else {
        calib_hist_add(&d->hist, x->data, x->numel);
    }
}

static const char *const STAGE_NAMES[] = {"range", "histogram"};

static int run_pass(Calib *c, Model *m, Tape *t, int nbatches, CalibBatchFn batch, void *ctx, long *images) {
    for (int i = 0; i < nbatches; i++) {
        Tensor *x = NULL;
        if (batch(ctx, i, &x) || !x) {
            if (!x && !*gelan_last_error()) gelan_error("calibration: batch %d of %d is missing", i, nbatches);
            return -1;
        }
        ModelOutput out;
        int rc = model_forward(m, t, x, false, &out);
        tape_reset(t);
        if (rc) return -1;
        if (images) *images += tN(x);
        if (c->o->progress) c->o->progress(c->o->ctx, STAGE_NAMES[c->stage], i + 1, nbatches);
    }
    return 0;
}

typedef struct {
    Calib *c;
    CalibReport *rep;
} RangeJob;

/* The method's range, qparams and the per-conv checks (KL is the slow part: one conv per task). */
static void range_worker(void *ctx, size_t b, size_t e) {
    const RangeJob *j = ctx;
    const CalibOptions *o = j->c->o;
    for (size_t i = b; i < e; i++) {
        ConvData *d = &j->c->conv[i];
        CalibConv *r = &j->rep->convs[i];
        r->min = d->min, r->max = d->max;
        if (!d->seen || d->nonfinite) {
            r->status = CALIB_FAIL;
            snprintf(r->note, sizeof r->note, "%s",
                     !d->seen ? "never ran in the calibration forwards" : "its input has inf or NaN values");
            continue;
        }
        calib_hist_range(&d->hist, o->method, o->percentile, &r->lo, &r->hi);
        qat_qparams(r->lo, r->hi, &r->scale, &r->zp);
        const double span = (double)(d->max > 0 ? d->max : 0) - (d->min < 0 ? d->min : 0);
        /* codes are clamped beyond half a step outside the representable range */
        r->saturated =
            calib_hist_outside(&d->hist, (-r->zp - 0.5) * (double)r->scale, (255 - r->zp + 0.5) * (double)r->scale);
        if (d->min == d->max) {
            r->status = CALIB_FAIL;
            snprintf(r->note, sizeof r->note, "input is constant (%g) over every calibration image", d->min);
        } else if (span / 255.0 < FLT_EPSILON) {
            r->status = CALIB_FAIL;
            snprintf(r->note, sizeof r->note, "input range %.3g is below the smallest scale (255 x FLT_EPSILON)", span);
        } else if (r->saturated > o->sat_fail || r->saturated > o->sat_warn) {
            r->status = r->saturated > o->sat_fail ? CALIB_FAIL : CALIB_WARN;
            snprintf(r->note, sizeof r->note,
                     "%.2f%% of its input values saturate (clip [%.4g, %.4g], seen [%.4g, %.4g])", 100.0 * r->saturated,
                     r->lo, r->hi, d->min, d->max);
        }
    }
}

/* ---- the collapse check --------------------------------------------------------------- */

typedef struct {
    char name[48];
    int C;
    double *sf, *sf2, *sq, *sq2; /* per channel */
    double n;                    /* values per channel */
    double err;                  /* sum (f - q)^2 */
} OutAcc;

typedef struct {
    int n, cap;
    char (*names)[48];
    const Tensor **t;
} OutList;

static int list_add(const char *name, const Tensor *t, void *ctx) {
    OutList *l = ctx;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char(*nn)[48] = realloc(l->names, (size_t)cap * sizeof *nn);
        if (nn) l->names = nn;
        const Tensor **nt = realloc(l->t, (size_t)cap * sizeof *nt);
        if (nt) l->t = nt;
        if (!nn || !nt) return gelan_error("calibration: out of memory");
        l->cap = cap;
    }
    snprintf(l->names[l->n], sizeof l->names[0], "%s", name);
    l->t[l->n++] = t;
    return 0;
}

static void list_free(OutList *l) {
    free(l->names);
    free(l->t);
    memset(l, 0, sizeof *l);
}

static int forward_outputs(Model *m, Tape *t, Tensor *x, bool quantized, OutList *l) {
    model_qat_set_fake_quant(m, quantized);
    ModelOutput out;
    l->n = 0;
    if (model_forward(m, t, x, false, &out)) return -1;
    return model_eval_outputs(m, &out, list_add, l);
}

static void acc_free(OutAcc *a, int n) {
    for (int i = 0; a && i < n; i++) free(a[i].sf);
    free(a);
}

static int accumulate(OutAcc *a, const Tensor *f, const Tensor *q) {
    if (f->numel != q->numel || f->ndim < 2) return gelan_error("calibration check: %s changed shape", a->name);
    const int C = f->shape[1];
    if (!a->sf) {
        a->C = C;
        if (!(a->sf = calloc((size_t)4 * C, sizeof(double)))) return gelan_error("calibration: out of memory");
        a->sf2 = a->sf + C, a->sq = a->sf + 2 * C, a->sq2 = a->sf + 3 * C;
    }
    if (a->C != C) return gelan_error("calibration check: %s changed shape", a->name);
    const size_t inner = f->numel / ((size_t)f->shape[0] * C);
    for (int n = 0; n < f->shape[0]; n++)
        for (int c = 0; c < C; c++) {
            const float *pf = f->data + ((size_t)n * C + c) * inner, *pq = q->data + ((size_t)n * C + c) * inner;
            double s1 = 0, s2 = 0, t1 = 0, t2 = 0, e = 0;
            for (size_t i = 0; i < inner; i++) {
                double vf = pf[i], vq = pq[i];
                s1 += vf, s2 += vf * vf, t1 += vq, t2 += vq * vq, e += (vf - vq) * (vf - vq);
            }
            a->sf[c] += s1, a->sf2[c] += s2, a->sq[c] += t1, a->sq2[c] += t2, a->err += e;
        }
    a->n += (double)f->shape[0] * inner;
    return 0;
}

static void judge_output(const OutAcc *a, const CalibOptions *o, CalibOutput *r) {
    double vf = 0, vq = 0;
    for (int c = 0; c < a->C; c++) {
        double mf = a->sf[c] / a->n, mq = a->sq[c] / a->n;
        vf += fmax(a->sf2[c] / a->n - mf * mf, 0.0);
        vq += fmax(a->sq2[c] / a->n - mq * mq, 0.0);
    }
    snprintf(r->name, sizeof r->name, "%s", a->name);
    const double mse = a->err / (a->n * a->C);
    if (vf <= 0) { /* the float output itself does not vary: nothing to compare */
        r->var_ratio = vq > 0 ? INFINITY : 1.0;
        r->sqnr_db = mse > 0 ? -INFINITY : INFINITY;
        return;
    }
    r->var_ratio = vq / vf;
    r->sqnr_db = mse > 0 ? 10.0 * log10(vf / a->C / mse) : INFINITY;
    if (r->var_ratio < o->collapse_ratio) {
        r->status = CALIB_FAIL;
        snprintf(r->note, sizeof r->note,
                 "collapsed: its values vary %.3g%% as much as the float model's (within-channel variance)",
                 100.0 * r->var_ratio);
    } else if (r->sqnr_db < o->sqnr_warn_db) {
        r->status = CALIB_WARN;
        snprintf(r->note, sizeof r->note, "quantization noise is %.1f dB below its signal (SQNR)", r->sqnr_db);
    }
}

static int check_collapse(Model *m, Tape *t, int nbatches, CalibBatchFn batch, void *ctx, const CalibOptions *o,
                          CalibReport *rep) {
    const int nb = o->check_batches < nbatches ? o->check_batches : nbatches;
    OutList lf = {0}, lq = {0};
    OutAcc *acc = NULL;
    int nacc = 0, rc = 0;
    for (int b = 0; !rc && b < nb; b++) {
        Tensor *x = NULL;
        rc = batch(ctx, b, &x) || !x ? -1 : 0;
        if (!rc) rc = forward_outputs(m, t, x, false, &lf);
        if (!rc) rc = forward_outputs(m, t, x, true, &lq);
        if (!rc && lf.n != lq.n) rc = gelan_error("calibration check: the two forwards differ in outputs");
        if (!rc && !acc) {
            nacc = lf.n;
            if (!(acc = calloc((size_t)nacc + 1, sizeof *acc))) rc = gelan_error("calibration: out of memory");
            for (int i = 0; !rc && i < nacc; i++) snprintf(acc[i].name, sizeof acc[i].name, "%s", lf.names[i]);
        }
        for (int i = 0; !rc && i < nacc && i < lf.n; i++) rc = accumulate(&acc[i], lf.t[i], lq.t[i]);
        tape_reset(t);
        if (!rc && o->progress) o->progress(o->ctx, "check", b + 1, nb);
    }
    if (!rc && nacc) {
        if (!(rep->outs = calloc((size_t)nacc, sizeof *rep->outs))) rc = gelan_error("calibration: out of memory");
        for (int i = 0; !rc && i < nacc; i++) judge_output(&acc[i], o, &rep->outs[i]);
        if (!rc) rep->nouts = nacc;
    }
    acc_free(acc, nacc);
    list_free(&lf);
    list_free(&lq);
    return rc;
}

/* The convs of the model layer an output name refers to ("layer.7" -> model.7.*). */
static void layer_convs(const CalibReport *rep, const char *out_name, char *buf, size_t len) {
    int layer;
    buf[0] = '\0';
    if (sscanf(out_name, "layer.%d", &layer) != 1) return;
    size_t used = 0;
    int listed = 0;
    for (int i = 0; i < rep->nconvs && listed < 3; i++) {
        if (rep->convs[i].layer != layer) continue;
        int w = snprintf(buf + used, len - used, "%s%s (scale %.3g, zp %d)",
                         listed ? ", " : "; its convs: ", rep->convs[i].name, rep->convs[i].scale, rep->convs[i].zp);
        if (w < 0 || (size_t)w >= len - used) break;
        used += (size_t)w;
        listed++;
    }
}

static int conv_layer(const char *name) {
    int l;
    return sscanf(name, "model.%d.", &l) == 1 ? l : -1;
}

int calibrate_model(Model *m, Tape *t, int nbatches, CalibBatchFn batch, void *ctx, const CalibOptions *opt,
                    CalibReport *rep) {
    CalibOptions o;
    if (opt)
        o = *opt;
    else
        calib_options_default(&o);
    memset(rep, 0, sizeof *rep);
    rep->method = o.method;
    const int n = model_qat_count(m);
    if (n == 0) return gelan_error("calibration: %s has no quantized conv (enable quantization first)", m->name);
    if (nbatches < 1) return gelan_error("calibration: no calibration images");
    if (o.bins < 2 * KL_LEVELS)
        return gelan_error("calibration: %d histogram bins (at least %d)", o.bins, 2 * KL_LEVELS);
    if (o.method == CALIB_PERCENTILE && !(o.percentile > 50.0 && o.percentile <= 100.0))
        return gelan_error("calibration: percentile %g is not in (50, 100]", o.percentile);

    Calib c = {.n = n, .o = &o};
    c.conv = calloc((size_t)n, sizeof *c.conv);
    rep->convs = calloc((size_t)n, sizeof *rep->convs);
    if (!c.conv || !rep->convs) {
        free(c.conv);
        return gelan_error("calibration: out of memory");
    }
    rep->nconvs = n;
    for (int i = 0, k = 0; i < m->nunits; i++) {
        QuantState *q = m->units[i]->q;
        if (!q) continue;
        c.conv[k] = (ConvData){.c = &c, .q = q};
        q->input_hook = input_hook;
        q->hook_ctx = &c.conv[k];
        rep->convs[k].name = m->units[i]->name;
        rep->convs[k].layer = conv_layer(m->units[i]->name);
        k++;
    }
    const bool grad = tape_set_grad_enabled(t, false);
    model_qat_set_fake_quant(m, false);

    c.stage = STAGE_RANGE;
    int rc = run_pass(&c, m, t, nbatches, batch, ctx, &rep->images);
    for (int i = 0; !rc && i < n; i++) {
        ConvData *d = &c.conv[i];
        rc = calib_hist_init(&d->hist, o.bins, d->seen ? d->min : 0.f, d->seen ? d->max : 0.f);
    }
    c.stage = STAGE_HIST;
    if (!rc) rc = run_pass(&c, m, t, nbatches, batch, ctx, NULL);
    for (int i = 0; i < n; i++) c.conv[i].q->input_hook = NULL, c.conv[i].q->hook_ctx = NULL;
    if (!rc) {
        RangeJob j = {&c, rep};
        parallel_for((size_t)n, 1, range_worker, &j);
        for (int i = 0; i < n; i++) {
            QuantState *q = c.conv[i].q;
            const CalibConv *r = &rep->convs[i];
            q->minmax->data[0] = r->lo, q->minmax->data[1] = r->hi;
            q->qparams->data[0] = r->scale, q->qparams->data[1] = (float)r->zp;
            q->observe = false; /* calibrated: a later training forward must not move them */
        }
    }
    for (int i = 0; i < n; i++) calib_hist_free(&c.conv[i].hist);
    free(c.conv);
    if (!rc && o.check_batches > 0) rc = check_collapse(m, t, nbatches, batch, ctx, &o, rep);
    model_qat_set_fake_quant(m, true);
    tape_set_grad_enabled(t, grad);
    if (rc) return -1;

    /* loud: every problem is a warning; failures also stop the calibration */
    char first[600] = "";
    for (int i = 0; i < rep->nconvs; i++) {
        CalibConv *r = &rep->convs[i];
        if (r->status == CALIB_OK) continue;
        if (r->status == CALIB_FAIL)
            rep->nfail++;
        else
            rep->nwarn++;
        gelan_warn("calibration (%s): %s: %s", calib_method_name(o.method), r->name, r->note);
        if (r->status == CALIB_FAIL && !first[0]) snprintf(first, sizeof first, "%s: %s", r->name, r->note);
    }
    /* a collapse propagates to every later layer: warn about the first one, count the rest */
    int first_out = -1, later = 0, noisy = 0;
    char noisy_names[300] = "";
    for (int i = 0; i < rep->nouts; i++) {
        const CalibOutput *r = &rep->outs[i];
        if (r->status == CALIB_FAIL) {
            rep->nfail++;
            if (first_out < 0)
                first_out = i;
            else
                later++;
        } else if (r->status == CALIB_WARN) {
            rep->nwarn++;
            size_t used = strlen(noisy_names);
            if (noisy++ < 6)
                snprintf(noisy_names + used, sizeof noisy_names - used, "%s%s (%.1f dB)", used ? ", " : "", r->name,
                         r->sqnr_db);
        }
    }
    if (first_out >= 0) {
        const CalibOutput *r = &rep->outs[first_out];
        char convs[300], tail[64] = "";
        layer_convs(rep, r->name, convs, sizeof convs);
        if (later) snprintf(tail, sizeof tail, " (and %d later output%s)", later, later > 1 ? "s" : "");
        gelan_warn("calibration (%s): %s output: %s%s%s", calib_method_name(o.method), r->name, r->note, convs, tail);
        if (!first[0]) snprintf(first, sizeof first, "%s output: %s%s", r->name, r->note, convs);
    }
    if (noisy)
        gelan_warn("calibration (%s): quantization noise within %.1f dB of the signal in %d output%s: %s%s",
                   calib_method_name(o.method), o.sqnr_warn_db, noisy, noisy > 1 ? "s" : "", noisy_names,
                   noisy > 6 ? ", ..." : "");
    if (rep->nfail && !o.force)
        return gelan_error("calibration (%s) is degenerate, %d problem%s; first: %s (--force writes the model anyway)",
                           calib_method_name(o.method), rep->nfail, rep->nfail > 1 ? "s" : "", first);
    return 0;
}
