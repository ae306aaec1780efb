/* The primitive conv unit (Conv2d -> BN -> activation), the official Conv,
 * and RepConvN. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "nn/blocks.h"
#include "nn/model.h"
#include "nn/quant.h"
#include "tensor/error.h"

static char *dupstr(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static Tensor *param_new(int ndim, const int *shape, bool trainable) {
    Tensor *t = tensor_new(ndim, shape);
    if (t) t->requires_grad = trainable;
    return t;
}

/* PyTorch's Conv2d.reset_parameters: kaiming_uniform_(a=sqrt(5)) gives the
 * bound gain*sqrt(3/fan_in) with gain = sqrt(2/(1+5)), i.e. 1/sqrt(fan_in);
 * the bias uses the same bound. */
static void init_uniform(Tensor *t, Rng *rng, float bound) {
    for (size_t i = 0; i < t->numel; i++) t->data[i] = rng_range(rng, -bound, bound);
}

static int register_unit(Model *m, ConvUnit *u) {
    if (m->nunits == m->cap_units) {
        int cap = m->cap_units ? 2 * m->cap_units : 64;
        ConvUnit **nu = realloc(m->units, (size_t)cap * sizeof *nu);
        if (!nu) return gelan_error("model: out of memory");
        m->units = nu;
        m->cap_units = cap;
    }
    m->units[m->nunits++] = u;
    return 0;
}

static void unit_free(ConvUnit *u) {
    if (!u) return;
    qat_state_free(u->q);
    free(u->name);
    free(u->bn_name);
    tensor_free(u->weight);
    tensor_free(u->bias);
    tensor_free(u->bn_weight);
    tensor_free(u->bn_bias);
    tensor_free(u->bn_mean);
    tensor_free(u->bn_var);
    free(u);
}

ConvUnit *unit_new(Model *m, const char *name, const char *bn_name, int c1, int c2, int k, int s, int p, int g,
                   bool bias, Act act) {
    if (c1 <= 0 || c2 <= 0 || k <= 0 || s <= 0 || p < 0 || g <= 0) {
        gelan_error("%s: bad conv arguments (c1 %d, c2 %d, k %d, s %d, p %d, g %d)", name, c1, c2, k, s, p, g);
        return NULL;
    }
    if (c1 % g || c2 % g) {
        gelan_error("%s: %d input and %d output channels are not divisible by groups=%d", name, c1, c2, g);
        return NULL;
    }
    ConvUnit *u = calloc(1, sizeof *u);
    if (!u) goto oom;
    u->name = dupstr(name);
    u->bn_name = dupstr(bn_name);
    u->c1 = c1, u->c2 = c2, u->k = k, u->s = s, u->p = p, u->g = g;
    u->act = act;
    int wshape[4] = {c2, c1 / g, k, k};
    u->weight = param_new(4, wshape, true);
    if (!u->name || (bn_name && !u->bn_name) || !u->weight) goto oom;
    float bound = 1.0f / sqrtf((float)(c1 / g * k * k));
    init_uniform(u->weight, &m->rng, bound);
    if (bias) {
        if (!(u->bias = param_new(1, &c2, true))) goto oom;
        init_uniform(u->bias, &m->rng, bound);
    }
    if (bn_name) {
        u->bn_weight = param_new(1, &c2, true);
        u->bn_bias = param_new(1, &c2, true);
        u->bn_mean = param_new(1, &c2, false);
        u->bn_var = param_new(1, &c2, false);
        if (!u->bn_weight || !u->bn_bias || !u->bn_mean || !u->bn_var) goto oom;
        tensor_fill(u->bn_weight, 1.0f);
        tensor_fill(u->bn_var, 1.0f);
    }
    if (register_unit(m, u)) {
        unit_free(u);
        return NULL;
    }
    return u;
oom:
    unit_free(u);
    gelan_error("%s: out of memory", name);
    return NULL;
}

void model_units_free(Model *m) {
    for (int i = 0; i < m->nunits; i++) unit_free(m->units[i]);
    free(m->units);
    for (int i = 0; i < m->nreps; i++) free(m->reps[i]);
    free(m->reps);
    m->units = NULL;
    m->reps = NULL;
    m->nunits = m->nreps = 0;
}

ConvUnit *conv_new(Model *m, const char *prefix, int c1, int c2, int k, int s, int p, int g, Act act) {
    char name[300], bn[300];
    c2 = model_width_override(prefix, c2); /* a pruned model's width */
    snprintf(name, sizeof name, "%s.conv", prefix);
    snprintf(bn, sizeof bn, "%s.bn", prefix);
    ConvUnit *u = unit_new(m, name, bn, c1, c2, k, s, p < 0 ? k / 2 : p, g, false, act);
    if (u) u->conv_module = true;
    return u;
}

Tensor *act_forward(Act act, Tape *t, Tensor *x) {
    if (!x) return NULL;
    switch (act.kind) {
        case ACT_SILU:
            return op_silu(t, x);
        case ACT_RELU:
            return op_relu(t, x);
        case ACT_LEAKY_RELU:
            return op_leaky_relu(t, x, act.slope);
        case ACT_NONE:
            break;
    }
    return x;
}

Tensor *unit_forward(const ConvUnit *u, Tape *t, Tensor *x, bool training) {
    if (!x) return NULL;
    if (u->q) return qat_unit_forward(u, t, x, training); /* fake-quantized */
    Tensor *y = op_conv2d(t, x, u->weight, u->bias, u->s, u->p, u->g);
    if (y && u->bn_weight)
        y = op_batchnorm2d(t, y, u->bn_weight, u->bn_bias, u->bn_mean, u->bn_var, BN_EPS, BN_MOMENTUM, training);
    y = act_forward(u->act, t, y);
    if (!y) gelan_error_prefix("%s", u->name);
    return y;
}

void unit_shape(const ConvUnit *u, int h, int w, int *ho, int *wo, double *macs) {
    *ho = (h + 2 * u->p - u->k) / u->s + 1;
    *wo = (w + 2 * u->p - u->k) / u->s + 1;
    if (macs) *macs += (double)(*ho) * (*wo) * u->c2 * (u->c1 / u->g) * u->k * u->k;
}

RepConvN *repconvn_new(Model *m, const char *prefix, int c1, int c2, Act act) {
    char name[256];
    Act none = {ACT_NONE, 0};
    RepConvN *r = calloc(1, sizeof *r);
    if (!r) {
        gelan_error("model: out of memory");
        return NULL;
    }
    if (m->nreps == m->cap_reps) {
        int cap = m->cap_reps ? 2 * m->cap_reps : 32;
        RepConvN **nr = realloc(m->reps, (size_t)cap * sizeof *nr);
        if (!nr) {
            free(r);
            gelan_error("model: out of memory");
            return NULL;
        }
        m->reps = nr;
        m->cap_reps = cap;
    }
    m->reps[m->nreps++] = r; /* owned by the model from here on */
    r->act = act;
    c2 = model_width_override(prefix, c2); /* both branches: their outputs are summed */
    snprintf(name, sizeof name, "%s.conv1", prefix);
    r->conv1 = conv_new(m, name, c1, c2, 3, 1, 1, 1, none);
    snprintf(name, sizeof name, "%s.conv2", prefix);
    r->conv2 = r->conv1 ? conv_new(m, name, c1, c2, 1, 1, 0, 1, none) : NULL;
    if (r->conv2 && r->conv1->c2 != r->conv2->c2) {
        gelan_error("%s: RepConvN branches conv1 and conv2 have %d and %d output channels; they are summed", prefix,
                    r->conv1->c2, r->conv2->c2);
        return NULL;
    }
    return r->conv2 ? r : NULL;
}

Tensor *repconvn_forward(const RepConvN *r, Tape *t, Tensor *x, bool training) {
    if (r->fused) return unit_forward(r->conv1, t, x, training);     /* conv1 carries the act then */
    if (r->conv1->q) return qat_repconvn_forward(r, t, x, training); /* quantized as the merged conv */
    Tensor *a = unit_forward(r->conv1, t, x, training);
    Tensor *b = a ? unit_forward(r->conv2, t, x, training) : NULL;
    return b ? act_forward(r->act, t, op_add(t, a, b)) : NULL;
}

void repconvn_shape(const RepConvN *r, int h, int w, double *macs) {
    int ho, wo;
    unit_shape(r->conv1, h, w, &ho, &wo, macs);
    if (!r->fused) unit_shape(r->conv2, h, w, &ho, &wo, macs);
}
