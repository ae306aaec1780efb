/* Quantization-aware training: the QAT state of each conv, its forwards, the
 * checkpoint state and the folding for export (contract and algebra in
 * nn/quant.h and docs/QUANTIZATION.md). */
#include "nn/quant.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "tensor/error.h"
#include "tensor/pool.h"
#include "tensor/safetensors.h"

/* ---- the arithmetic ------------------------------------------------------------ */

void qat_observer_update(float *min, float *max, float batch_min, float batch_max, float c) {
    if (*min == INFINITY && *max == -INFINITY) {
        *min = batch_min;
        *max = batch_max;
    } else {
        *min = *min + c * (batch_min - *min);
        *max = *max + c * (batch_max - *max);
    }
}

/* Every step in float32, as torch's _calculate_qparams on float32 tensors
 * (torch.round is half to even, like nearbyintf). */
void qat_qparams(float lo, float hi, float *scale, int *zp) {
    lo = lo < 0.f ? lo : 0.f;
    hi = hi > 0.f ? hi : 0.f;
    float s = (hi - lo) / 255.0f;
    s = s > FLT_EPSILON ? s : FLT_EPSILON;
    float z = 0.f - nearbyintf(lo / s);
    z = z < 0.f ? 0.f : z > 255.f ? 255.f : z;
    *scale = s;
    *zp = (int)z;
}

/* ---- states ------------------------------------------------------------------- */

static void state_free(QuantState *q) {
    if (!q) return;
    tensor_free(q->minmax);
    tensor_free(q->qparams);
    free(q);
}

void qat_state_free(QuantState *q) { state_free(q); }

static QuantState *state_new(ConvUnit *u, const RepConvN *rep, float averaging_constant) {
    QuantState *q = calloc(1, sizeof *q);
    if (!q || !(q->minmax = tensor_new1(2)) || !(q->qparams = tensor_new1(2))) {
        state_free(q);
        gelan_error("qat: out of memory");
        return NULL;
    }
    q->unit = u;
    q->rep = rep;
    q->minmax->data[0] = INFINITY;
    q->minmax->data[1] = -INFINITY;
    q->averaging_constant = averaging_constant;
    q->observe = true;
    q->fake_quant = true;
    return q;
}

void qat_options_default(QatOptions *o, int epochs) {
    memset(o, 0, sizeof *o);
    o->freeze_bn_epoch = epochs / 2;
    o->freeze_observer_epoch = 3 * epochs / 4 > 1 ? 3 * epochs / 4 : 1;
    o->averaging_constant = QAT_AVERAGING_CONSTANT;
}

/* The layer index of a unit named model.{i}.*, -1 otherwise. */
static int unit_layer(const ConvUnit *u) {
    int i, n = 0;
    if (sscanf(u->name, "model.%d.%n", &i, &n) == 1 && n > 0) return i;
    return -1;
}

static int unit_index(const Model *m, const ConvUnit *u) {
    for (int i = 0; i < m->nunits; i++)
        if (m->units[i] == u) return i;
    return -1;
}

static bool has_prefix(const char *name, const char *prefix) {
    size_t n = strlen(prefix);
    return strncmp(name, prefix, n) == 0 && (name[n] == '\0' || name[n] == '.');
}

/* Silence passes the image through. */
static bool layer_reads_image(const Model *m, const Layer *l) {
    for (int k = 0; k < l->nfrom; k++) {
        int s = l->src[k];
        while (s >= 0 && m->layers[s].kind == BLOCK_SILENCE) s = m->layers[s].src[0];
        if (s < 0) return true;
    }
    return false;
}

static bool is_head_out(const Model *m, const ConvUnit *u) {
    const Detect *d = m->detect;
    if (!d) return false;
    for (int h = 0; h < d->nheads; h++)
        for (int l = 0; l < d->nl; l++)
            if (d->box[h][l][2] == u || d->cls[h][l][2] == u) return true;
    return false;
}

static bool token_matches(const Model *m, const ConvUnit *u, const char *tok) {
    if (!strcmp(tok, "first")) {
        int li = unit_layer(u);
        return li >= 0 && li < m->nlayers && m->layers[li].kind != BLOCK_DETECT && layer_reads_image(m, &m->layers[li]);
    }
    if (!strcmp(tok, "head-out")) return is_head_out(m, u);
    char *end;
    long li = strtol(tok, &end, 10);
    if (*tok && !*end) return unit_layer(u) == li;
    if (has_prefix(u->name, tok)) return true;
    char full[512];
    snprintf(full, sizeof full, "model.%s", tok);
    return has_prefix(u->name, full);
}

/* The RepConvN whose conv1 or conv2 u is (unfused), else NULL. */
static const RepConvN *rep_of(const Model *m, const ConvUnit *u) {
    for (int i = 0; i < m->nreps; i++) {
        const RepConvN *r = m->reps[i];
        if (!r->fused && (r->conv1 == u || r->conv2 == u)) return r;
    }
    return NULL;
}

void model_qat_disable(Model *m) {
    for (int i = 0; i < m->nunits; i++) {
        state_free(m->units[i]->q);
        m->units[i]->q = NULL;
    }
}

/* Which units get a state: eligible (not removed, not the fixed DFL, not a
 * RepConvN's conv2) and not excluded (a RepConvN as a pair). want[i] = 1. */
static int select_units(const Model *m, const QatOptions *o, char *want) {
    for (int i = 0; i < m->nunits; i++) {
        const ConvUnit *u = m->units[i];
        want[i] = !u->removed && !u->frozen;
    }
    for (int k = 0; o && k < o->nexclude; k++) {
        const char *tok = o->exclude[k];
        bool any = false;
        for (int i = 0; i < m->nunits; i++) {
            if (m->units[i]->removed || !token_matches(m, m->units[i], tok)) continue;
            any = true;
            want[i] = 0;
        }
        if (!any) return gelan_error("qat: --exclude '%s' names no conv of %s", tok, m->name);
    }
    for (int i = 0; i < m->nreps; i++) {
        const RepConvN *r = m->reps[i];
        if (r->fused) continue;
        int a = unit_index(m, r->conv1), b = unit_index(m, r->conv2);
        if (a < 0 || b < 0) return gelan_error("qat: a RepConvN of %s is not among its units", m->name);
        want[a] = want[a] && want[b]; /* the pair is one conv */
        want[b] = 0;
    }
    return 0;
}

static int attach(Model *m, const char *want, float averaging_constant) {
    for (int i = 0; i < m->nunits; i++) {
        ConvUnit *u = m->units[i];
        if (want[i] && u->bias && u->bn_weight)
            return gelan_error("qat: %s has both a conv bias and a BN, which QAT does not fold", u->name);
    }
    model_qat_disable(m);
    for (int i = 0; i < m->nunits; i++) {
        if (!want[i]) continue;
        ConvUnit *u = m->units[i];
        if (!(u->q = state_new(u, rep_of(m, u), averaging_constant))) {
            model_qat_disable(m);
            return -1;
        }
    }
    return 0;
}

int model_qat_enable(Model *m, const QatOptions *o) {
    char *want = calloc((size_t)m->nunits + 1, 1);
    if (!want) return gelan_error("qat: out of memory");
    float c = o && o->averaging_constant > 0.f ? o->averaging_constant : QAT_AVERAGING_CONSTANT;
    int rc = select_units(m, o, want);
    if (!rc) rc = attach(m, want, c);
    free(want);
    return rc;
}

bool model_qat_enabled(const Model *m) { return model_qat_count(m) > 0; }

int model_qat_count(const Model *m) {
    int n = 0;
    for (int i = 0; i < m->nunits; i++) n += m->units[i]->q != NULL;
    return n;
}

void model_qat_freeze_bn(Model *m, bool frozen) {
    for (int i = 0; i < m->nunits; i++)
        if (m->units[i]->q) m->units[i]->q->bn_frozen = frozen;
}

void model_qat_freeze_observers(Model *m, bool frozen) {
    for (int i = 0; i < m->nunits; i++)
        if (m->units[i]->q) m->units[i]->q->observe = !frozen;
}

void model_qat_set_fake_quant(Model *m, bool on) {
    for (int i = 0; i < m->nunits; i++)
        if (m->units[i]->q) m->units[i]->q->fake_quant = on;
}

void model_qat_apply_epoch(Model *m, const QatOptions *o, int epoch) {
    model_qat_freeze_bn(m, o->freeze_bn_epoch >= 0 && epoch >= o->freeze_bn_epoch);
    model_qat_freeze_observers(m, o->freeze_observer_epoch >= 0 && epoch >= o->freeze_observer_epoch);
}

/* ---- observing --------------------------------------------------------------- */

#define MINMAX_CHUNK 65536

typedef struct {
    const float *x;
    size_t n;
    float *mins, *maxs; /* one slot per chunk */
} MinMaxJob;

static void minmax_chunk(void *ctx, size_t b, size_t e) {
    const MinMaxJob *j = ctx;
    for (size_t c = b; c < e; c++) {
        size_t i0 = c * MINMAX_CHUNK, i1 = i0 + MINMAX_CHUNK < j->n ? i0 + MINMAX_CHUNK : j->n;
        float lo = INFINITY, hi = -INFINITY;
        for (size_t i = i0; i < i1; i++) {
            lo = fminf(lo, j->x[i]); /* fminf/fmaxf skip NaN */
            hi = fmaxf(hi, j->x[i]);
        }
        j->mins[c] = lo;
        j->maxs[c] = hi;
    }
}

void qat_tensor_minmax(const float *x, size_t n, float *min, float *max) {
    size_t chunks = (n + MINMAX_CHUNK - 1) / MINMAX_CHUNK;
    float stack_lo[64], stack_hi[64];
    float *lo = stack_lo, *hi = stack_hi;
    if (chunks > 64) {
        lo = malloc(chunks * sizeof *lo);
        hi = malloc(chunks * sizeof *hi);
    }
    *min = INFINITY, *max = -INFINITY;
    if (!lo || !hi) { /* serially, without the slots */
        for (size_t i = 0; i < n; i++) *min = fminf(*min, x[i]), *max = fmaxf(*max, x[i]);
    } else {
        MinMaxJob j = {x, n, lo, hi};
        parallel_for(chunks, 1, minmax_chunk, &j);
        for (size_t c = 0; c < chunks; c++) *min = fminf(*min, lo[c]), *max = fmaxf(*max, hi[c]);
    }
    if (lo != stack_lo) free(lo);
    if (hi != stack_hi) free(hi);
}

static void observe(QuantState *q, const Tensor *x) {
    float lo, hi;
    qat_tensor_minmax(x->data, x->numel, &lo, &hi);
    if (!(lo <= hi)) return; /* nothing finite in the batch */
    float *mm = q->minmax->data;
    qat_observer_update(&mm[0], &mm[1], lo, hi, q->averaging_constant);
    int zp;
    qat_qparams(mm[0], mm[1], &q->qparams->data[0], &zp);
    q->qparams->data[1] = (float)zp;
}

/* The conv's input as the int8 conv sees it. */
static Tensor *quant_input(QuantState *q, Tape *t, Tensor *x) {
    if (q->input_hook) q->input_hook(q->hook_ctx, q, x);
    if (q->observe && tape_wants_grad(t, &q->unit->weight, 1)) observe(q, x);
    if (!q->fake_quant || !(q->qparams->data[0] > 0.f)) return x;
    return op_fake_quant_act(t, x, q->qparams->data[0], (int)q->qparams->data[1]);
}

/* ---- forwards ------------------------------------------------------------------ */

/* conv -> BN -> act exactly as nn/conv.c's unit_forward, without the activation. */
static Tensor *plain_conv_bn(const ConvUnit *u, Tape *t, Tensor *x, bool training) {
    Tensor *y = op_conv2d(t, x, u->weight, u->bias, u->s, u->p, u->g);
    if (y && u->bn_weight)
        y = op_batchnorm2d(t, y, u->bn_weight, u->bn_bias, u->bn_mean, u->bn_var, BN_EPS, BN_MOMENTUM, training);
    return y;
}

/* The folded weight (and, when asked, bias) of a unit: BN folded with the
 * running variance; a unit without BN as it is. *f: the factor, NULL without BN. */
static int fold_unit(const ConvUnit *u, Tape *t, bool want_bias, Tensor **w, Tensor **f, Tensor **b) {
    if (!u->bn_weight) {
        *w = u->weight, *f = NULL, *b = u->bias;
        return 0;
    }
    *b = NULL;
    if (!(*f = op_bn_fold_factor(t, u->bn_weight, u->bn_var, BN_EPS))) return -1;
    if (!(*w = op_scale_channels(t, u->weight, *f, 0, false))) return -1;
    if (want_bias && !(*b = op_bn_fold_bias(t, u->bn_bias, u->bias, u->bn_mean, *f))) return -1;
    return 0;
}

/* One ConvBn on an already quantized input. Batch statistics (training, BN not
 * frozen): BN_batch(conv(x, fq(w f)) / f); else conv(x, fq(w f)) + b_fold. */
static Tensor *qat_conv_bn(const QuantState *q, const ConvUnit *u, Tape *t, Tensor *xq, bool training) {
    const bool batch_stats = training && u->bn_weight && !q->bn_frozen;
    Tensor *w, *f, *b;
    if (fold_unit(u, t, !batch_stats, &w, &f, &b)) return NULL;
    Tensor *wq = op_fake_quant_weight(t, w, NULL);
    if (!wq) return NULL;
    if (!batch_stats) return op_conv2d(t, xq, wq, b, u->s, u->p, u->g);
    Tensor *y = op_conv2d(t, xq, wq, NULL, u->s, u->p, u->g);
    if (y) y = op_scale_channels(t, y, f, 1, true);
    return y ? op_batchnorm2d(t, y, u->bn_weight, u->bn_bias, u->bn_mean, u->bn_var, BN_EPS, BN_MOMENTUM, true) : NULL;
}

Tensor *qat_unit_forward(const ConvUnit *u, Tape *t, Tensor *x, bool training) {
    if (!x) return NULL;
    QuantState *q = u->q;
    Tensor *y;
    if (!q->fake_quant) {
        if (q->input_hook) q->input_hook(q->hook_ctx, q, x);
        y = plain_conv_bn(u, t, x, training);
    } else {
        Tensor *xq = quant_input(q, t, x);
        y = xq ? qat_conv_bn(q, u, t, xq, training) : NULL;
    }
    y = act_forward(u->act, t, y);
    if (!y) gelan_error_prefix("%s", u->name);
    return y;
}

/* The merged kernel and bias of an unfused RepConvN, each branch BN folded with
 * its running statistics: merge(w3 f3, w1 f1), b3 + b1 (what convert emits). */
static int repconvn_merged(const RepConvN *r, Tape *t, Tensor **w, Tensor **b) {
    Tensor *w3, *f3, *b3, *w1, *f1, *b1;
    if (fold_unit(r->conv1, t, true, &w3, &f3, &b3) || fold_unit(r->conv2, t, true, &w1, &f1, &b1)) return -1;
    if (!(*w = op_merge_center(t, w3, w1))) return -1;
    if (b3 && b1)
        *b = op_add(t, b3, b1);
    else
        *b = b3 ? b3 : b1;
    return (b3 || b1) && !*b ? -1 : 0;
}

Tensor *qat_repconvn_forward(const RepConvN *r, Tape *t, Tensor *x, bool training) {
    if (!x) return NULL;
    QuantState *q = r->conv1->q;
    Tensor *y = NULL;
    if (!q->fake_quant) {
        if (q->input_hook) q->input_hook(q->hook_ctx, q, x);
        Tensor *a = plain_conv_bn(r->conv1, t, x, training);
        Tensor *b = a ? plain_conv_bn(r->conv2, t, x, training) : NULL;
        y = b ? op_add(t, a, b) : NULL;
    } else {
        Tensor *xq = quant_input(q, t, x);
        if (xq && training && !q->bn_frozen) {
            /* each branch a ConvBn with batch statistics */
            Tensor *a = qat_conv_bn(q, r->conv1, t, xq, true);
            Tensor *b = a ? qat_conv_bn(q, r->conv2, t, xq, true) : NULL;
            y = b ? op_add(t, a, b) : NULL;
        } else if (xq) {
            Tensor *w, *b, *wq;
            if (!repconvn_merged(r, t, &w, &b) && (wq = op_fake_quant_weight(t, w, NULL)))
                y = op_conv2d(t, xq, wq, b, r->conv1->s, r->conv1->p, r->conv1->g);
        }
    }
    y = act_forward(r->act, t, y);
    if (!y) gelan_error_prefix("%s", r->conv1->name);
    return y;
}

/* ---- checkpoint state ---------------------------------------------------------- */

static const char *state_name(const ConvUnit *u, const char *leaf, char *buf, size_t len) {
    snprintf(buf, len, "qat.%s.%s", u->name, leaf);
    return buf;
}

int model_qat_state_count(const Model *m) { return 2 * model_qat_count(m); }

int model_qat_foreach(Model *m, QatTensorVisit visit, void *ctx) {
    char name[600];
    for (int i = 0; i < m->nunits; i++) {
        ConvUnit *u = m->units[i];
        if (!u->q) continue;
        if (visit(ctx, state_name(u, "act_minmax", name, sizeof name), u->q->minmax)) return -1;
        if (visit(ctx, state_name(u, "act_qparams", name, sizeof name), u->q->qparams)) return -1;
    }
    return 0;
}

static int check_qparams(const ConvUnit *u, const float *qp) {
    float s = qp[0], z = qp[1];
    if (!(s >= 0.f) || !isfinite(s) || !(z >= 0.f && z <= 255.f) || z != nearbyintf(z))
        return gelan_error("qat.%s.act_qparams: scale %g and zero point %g are not a uint8 quantization", u->name, s,
                           z);
    return 0;
}

/* Reads both tensors of u into mm, qp; 1 when both are absent. */
static int read_state(const ConvUnit *u, QatTensorRead read, void *ctx, Tensor *mm, Tensor *qp) {
    char name[600];
    int a = read(ctx, state_name(u, "act_minmax", name, sizeof name), mm);
    if (a < 0) return -1;
    int b = read(ctx, state_name(u, "act_qparams", name, sizeof name), qp);
    if (b < 0) return -1;
    if (a != b) return gelan_error("qat.%s: has only one of act_minmax and act_qparams", u->name);
    if (a == 1) return 1;
    return check_qparams(u, qp->data) ? -1 : 0;
}

int model_qat_load(Model *m, QatTensorRead read, void *ctx) {
    Tensor *mm = tensor_new1(2), *qp = tensor_new1(2);
    int rc = mm && qp ? 0 : gelan_error("qat: out of memory");
    /* read all first: a failure leaves the states untouched */
    float *vals = rc ? NULL : calloc((size_t)m->nunits * 4 + 1, sizeof *vals);
    if (!rc && !vals) rc = gelan_error("qat: out of memory");
    for (int i = 0; !rc && i < m->nunits; i++) {
        const ConvUnit *u = m->units[i];
        if (!u->q) continue;
        int r = read_state(u, read, ctx, mm, qp);
        if (r == 1) rc = gelan_error("qat: the checkpoint has no state for %s (qat.%s.act_qparams)", u->name, u->name);
        if (r < 0) rc = -1;
        if (!rc) memcpy(vals + 4 * i, mm->data, 2 * sizeof *vals), memcpy(vals + 4 * i + 2, qp->data, 2 * sizeof *vals);
    }
    for (int i = 0; !rc && i < m->nunits; i++) {
        QuantState *q = m->units[i]->q;
        if (!q) continue;
        memcpy(q->minmax->data, vals + 4 * i, 2 * sizeof *vals);
        memcpy(q->qparams->data, vals + 4 * i + 2, 2 * sizeof *vals);
    }
    free(vals);
    tensor_free(mm);
    tensor_free(qp);
    return rc;
}

int model_qat_enable_from(Model *m, QatTensorRead read, void *ctx, int *count) {
    if (count) *count = 0;
    char *want = calloc((size_t)m->nunits + 1, 1);
    if (!want) return gelan_error("qat: out of memory");
    int rc = select_units(m, NULL, want);
    Tensor *mm = tensor_new1(2), *qp = tensor_new1(2);
    if (!rc && (!mm || !qp)) rc = gelan_error("qat: out of memory");
    for (int i = 0; !rc && i < m->nunits; i++) {
        if (!want[i]) continue;
        int r = read_state(m->units[i], read, ctx, mm, qp);
        if (r < 0) rc = -1;
        want[i] = r == 0;
    }
    if (!rc) rc = attach(m, want, QAT_AVERAGING_CONSTANT);
    if (!rc) rc = model_qat_load(m, read, ctx);
    if (!rc && count) *count = model_qat_count(m);
    tensor_free(mm);
    tensor_free(qp);
    free(want);
    return rc;
}

int model_qat_copy_state(Model *dst, const Model *src) {
    if (dst->nunits != src->nunits) return gelan_error("qat: copying state between different models");
    for (int i = 0; i < dst->nunits; i++) {
        const QuantState *s = src->units[i]->q;
        QuantState *d = dst->units[i]->q;
        if (!s != !d || strcmp(src->units[i]->name, dst->units[i]->name))
            return gelan_error("qat: %s is quantized in only one of the two models", dst->units[i]->name);
    }
    for (int i = 0; i < dst->nunits; i++) {
        const QuantState *s = src->units[i]->q;
        QuantState *d = dst->units[i]->q;
        if (!s) continue;
        memcpy(d->minmax->data, s->minmax->data, 2 * sizeof(float));
        memcpy(d->qparams->data, s->qparams->data, 2 * sizeof(float));
        d->observe = s->observe, d->bn_frozen = s->bn_frozen, d->fake_quant = s->fake_quant;
        d->averaging_constant = s->averaging_constant;
    }
    return 0;
}

/* ---- export ------------------------------------------------------------------------ */

static void drop_bn(ConvUnit *u) {
    tensor_free(u->bn_weight);
    tensor_free(u->bn_bias);
    tensor_free(u->bn_mean);
    tensor_free(u->bn_var);
    u->bn_weight = u->bn_bias = u->bn_mean = u->bn_var = NULL;
    free(u->bn_name);
    u->bn_name = NULL;
}

/* Replaces u's weight and bias by w and b (tape tensors of the same shapes). */
static int store_folded(ConvUnit *u, const Tensor *w, const Tensor *b) {
    memcpy(u->weight->data, w->data, w->numel * sizeof(float));
    if (b) {
        if (!u->bias && !(u->bias = tensor_new1(u->c2))) return -1;
        if (b != u->bias) memcpy(u->bias->data, b->data, b->numel * sizeof(float));
    }
    drop_bn(u);
    return 0;
}

int model_qat_fold(Model *m) {
    if (m->fused) return 0;
    Tape *t = tape_new();
    if (!t) return -1;
    tape_set_grad_enabled(t, false);
    int rc = 0;
    for (int i = 0; !rc && i < m->nreps; i++) {
        RepConvN *r = m->reps[i];
        if (r->fused) continue;
        Tensor *w, *b;
        rc = repconvn_merged(r, t, &w, &b) || store_folded(r->conv1, w, b) ? -1 : 0;
        if (!rc) {
            char *dot = strstr(r->conv1->name, ".conv1.conv");
            if (dot && dot[strlen(".conv1.conv")] == '\0') strcpy(dot, ".conv");
            r->conv1->act = r->act;
            r->conv2->removed = true;
            drop_bn(r->conv2);
            r->fused = true;
            if (r->conv1->q) r->conv1->q->rep = NULL;
        }
        tape_reset(t);
    }
    for (int i = 0; !rc && i < m->nunits; i++) {
        ConvUnit *u = m->units[i];
        if (u->removed) continue;
        if (u->bn_weight) {
            Tensor *w, *f, *b;
            rc = fold_unit(u, t, true, &w, &f, &b) || store_folded(u, w, b) ? -1 : 0;
            tape_reset(t);
        }
        u->weight->requires_grad = false;
        if (u->bias) u->bias->requires_grad = false;
    }
    tape_free(t);
    if (rc) {
        gelan_error_prefix("qat fold");
        return -1;
    }
    m->fused = true;
    return model_rebuild_names(m);
}

int qat_unit_int8(const ConvUnit *u, int8_t *wq, float *w_scale, float *x_scale, int *x_zp) {
    if (!u->q) return gelan_error("%s is not quantized", u->name);
    if (u->bn_weight || (u->q->rep && !u->q->rep->fused))
        return gelan_error("%s: fold the model first (model_qat_fold)", u->name);
    if (!(u->q->qparams->data[0] > 0.f)) return gelan_error("%s: its input range was never observed", u->name);
    fake_quant_weight_codes(u->weight->data, u->c2, u->weight->numel / (size_t)u->c2, wq, w_scale);
    *x_scale = u->q->qparams->data[0];
    *x_zp = (int)u->q->qparams->data[1];
    return 0;
}

static int visit_add(void *ctx, const char *name, Tensor *t) {
    return st_writer_add_f32(ctx, name, t->ndim, t->shape, t->data);
}

int model_save_quantized(const Model *m, const char *path, const char *const *keys, const char *const *values) {
    StWriter *w = st_writer_new();
    if (!w) return -1;
    char nc[16];
    snprintf(nc, sizeof nc, "%d", m->nc);
    int rc = st_writer_set_metadata(w, "format", "gelan-weights/1");
    if (!rc) rc = st_writer_set_metadata(w, "cfg", m->yaml);
    if (!rc) rc = st_writer_set_metadata(w, "nc", nc);
    for (int i = 0; !rc && keys && keys[i]; i++)
        if (values[i]) rc = st_writer_set_metadata(w, keys[i], values[i]);
    for (int i = 0; !rc && i < m->nparams; i++)
        rc = st_writer_add_f32(w, m->params[i].name, m->params[i].t->ndim, m->params[i].t->shape, m->params[i].t->data);
    for (int i = 0; !rc && i < m->nbuffers; i++)
        rc = st_writer_add_f32(w, m->buffers[i].name, m->buffers[i].t->ndim, m->buffers[i].t->shape,
                               m->buffers[i].t->data);
    if (!rc) rc = model_qat_foreach((Model *)m, visit_add, w);
    if (!rc) rc = st_writer_save(w, path);
    st_writer_free(w);
    if (rc) gelan_error_prefix("%s", path);
    return rc;
}
