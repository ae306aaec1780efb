/* ModelEMA of utils/torch_utils.py: an exponential moving average of every
 * floating-point entry of the model's state_dict (parameters and BN running
 * statistics), with the decay ramped up over the first updates,
 * d = decay * (1 - exp(-updates / tau)), so early averages follow the model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim/internal.h"
#include "optim/optim.h"
#include "tensor/error.h"
#include "tensor/pool.h"

static int add_entry(ModelEMA *e, const char *name, Tensor *t) {
    if (!name || !t) return gelan_error("ema: entry %d has no %s", e->n, name ? "tensor" : "name");
    for (int j = 0; j < e->n; j++)
        if (strcmp(e->names[j], name) == 0) return gelan_error("ema: %s is listed twice", name);
    e->model[e->n] = t;
    e->names[e->n] = strdup(name);
    e->ema[e->n] = tensor_clone(t);
    e->n++; /* counted before the checks so that ema_free releases it */
    if (!e->names[e->n - 1] || !e->ema[e->n - 1]) return gelan_error("ema: out of memory for %s", name);
    return 0;
}

ModelEMA *ema_new(const OptimParam *params, int n_params, const EmaBuffer *buffers, int n_buffers, double decay,
                  double tau) {
    if (n_params < 0 || n_buffers < 0 || !(decay >= 0 && decay <= 1) || !(tau > 0)) {
        gelan_error("ema: bad arguments (%d parameters, %d buffers, decay %g, tau %g)", n_params, n_buffers, decay,
                    tau);
        return NULL;
    }
    const size_t total = (size_t)n_params + (size_t)n_buffers;
    ModelEMA *e = calloc(1, sizeof *e);
    if (!e) goto oom;
    e->decay = decay;
    e->tau = tau;
    e->names = calloc(total ? total : 1, sizeof *e->names);
    e->model = calloc(total ? total : 1, sizeof *e->model);
    e->ema = calloc(total ? total : 1, sizeof *e->ema);
    size_t *numel = malloc((total ? total : 1) * sizeof *numel);
    if (!e->names || !e->model || !e->ema || !numel) {
        free(numel);
        goto oom;
    }
    for (int i = 0; i < n_params; i++)
        if (add_entry(e, params[i].name, params[i].param)) goto fail_numel;
    for (int i = 0; i < n_buffers; i++)
        if (add_entry(e, buffers[i].name, buffers[i].t)) goto fail_numel;
    for (int i = 0; i < e->n; i++) numel[i] = e->ema[i]->numel;
    if (optim_chunks_make(numel, e->n, &e->chunks, &e->n_chunks)) goto fail_numel;
    free(numel);
    return e;
fail_numel:
    free(numel);
    ema_free(e);
    return NULL;
oom:
    gelan_error("ema: out of memory for %zu tensors", total);
    ema_free(e);
    return NULL;
}

void ema_free(ModelEMA *e) {
    if (!e) return;
    for (int i = 0; i < e->n; i++) {
        free(e->names[i]);
        tensor_free(e->ema[i]);
    }
    free(e->names);
    free(e->model);
    free(e->ema);
    free(e->chunks);
    free(e);
}

double ema_decay(const ModelEMA *e, long updates) { return e->decay * (1 - exp(-(double)updates / e->tau)); }

typedef struct {
    ModelEMA *e;
    float d, one_minus_d;
} EmaCtx;

static void ema_chunks(void *vctx, size_t cb, size_t ce) {
    const EmaCtx *c = vctx;
    for (size_t ci = cb; ci < ce; ci++) {
        const OptimChunk *ch = &c->e->chunks[ci];
        float *v = c->e->ema[ch->idx]->data;
        const float *m = c->e->model[ch->idx]->data;
        /* torch: v *= d; v += (1 - d) * msd[k] */
        for (size_t i = ch->begin; i < ch->end; i++) {
            const float t = c->one_minus_d * m[i];
            v[i] = v[i] * c->d + t;
        }
    }
}

void ema_update(ModelEMA *e) {
    e->updates++;
    const double d = ema_decay(e, e->updates);
    EmaCtx c = {.e = e, .d = (float)d, .one_minus_d = (float)(1 - d)};
    parallel_for((size_t)e->n_chunks, 4, ema_chunks, &c);
}

Tensor *ema_find(const ModelEMA *e, const char *name) {
    for (int i = 0; i < e->n; i++)
        if (strcmp(e->names[i], name) == 0) return e->ema[i];
    return NULL;
}

static int ema_name(char *buf, size_t len, const char *name) {
    int w = snprintf(buf, len, "ema.%s", name);
    if (w < 0 || (size_t)w >= len) return gelan_error("ema: name %s is too long", name);
    return 0;
}

int ema_foreach(ModelEMA *e, OptimTensorVisit visit, void *ctx) {
    char name[1024];
    for (int i = 0; i < e->n; i++) {
        if (ema_name(name, sizeof name, e->names[i])) return -1;
        int rc = visit(ctx, name, e->ema[i]);
        if (rc) return rc;
    }
    return 0;
}

int ema_load(ModelEMA *e, OptimTensorRead read, void *ctx) {
    char name[1024];
    for (int i = 0; i < e->n; i++) {
        if (ema_name(name, sizeof name, e->names[i])) return -1;
        int rc = read(ctx, name, e->ema[i]);
        if (rc < 0) {
            gelan_error_prefix("ema: reading %s", name);
            return -1;
        }
        if (rc) return gelan_error("ema: the checkpoint has no %s", name);
    }
    return 0;
}
