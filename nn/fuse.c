/* Inference-time re-parameterisation (the official model.fuse()):
 *   BN folding: BN(conv(x)) = conv'(x) with w' = w * g/sqrt(var+eps) per output
 *   channel and b' = beta + (b - mean) * g/sqrt(var+eps);
 *   RepConvN merging: BN3(conv3x3(x)) + BN1(conv1x1(x)) is one 3x3 conv whose
 *   kernel is the folded 3x3 plus the folded 1x1 placed at the centre, and
 *   whose bias is the sum of both folded biases. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/model.h"
#include "tensor/error.h"

/* Folds u's BN into its weight and bias (computed in double). */
static int fold_bn(ConvUnit *u) {
    if (!u->bn_weight) return 0;
    int c2 = u->c2;
    if (!u->bias) {
        if (!(u->bias = tensor_new(1, &c2))) return -1;
    }
    size_t per_out = u->weight->numel / (size_t)c2;
    for (int o = 0; o < c2; o++) {
        double scale = (double)u->bn_weight->data[o] / sqrt((double)u->bn_var->data[o] + (double)BN_EPS);
        float *w = u->weight->data + (size_t)o * per_out;
        for (size_t i = 0; i < per_out; i++) w[i] = (float)(w[i] * scale);
        u->bias->data[o] =
            (float)((double)u->bn_bias->data[o] + ((double)u->bias->data[o] - (double)u->bn_mean->data[o]) * scale);
    }
    tensor_free(u->bn_weight);
    tensor_free(u->bn_bias);
    tensor_free(u->bn_mean);
    tensor_free(u->bn_var);
    u->bn_weight = u->bn_bias = u->bn_mean = u->bn_var = NULL;
    free(u->bn_name);
    u->bn_name = NULL;
    return 0;
}

static int merge_repconvn(RepConvN *r) {
    ConvUnit *k3 = r->conv1, *k1 = r->conv2;
    if (fold_bn(k3) || fold_bn(k1)) return -1;
    /* k1 [c2, c1/g, 1, 1] added at the centre (1,1) of k3 [c2, c1/g, 3, 3] */
    size_t n = k1->weight->numel;
    for (size_t i = 0; i < n; i++) k3->weight->data[i * 9 + 4] += k1->weight->data[i];
    for (int o = 0; o < k3->c2; o++) k3->bias->data[o] += k1->bias->data[o];
    /* the merged conv is the official RepConvN.conv: PREFIX.conv1.conv -> PREFIX.conv */
    char *dot = strstr(k3->name, ".conv1.conv");
    if (dot && dot[strlen(".conv1.conv")] == '\0') strcpy(dot, ".conv");
    k3->act = r->act;
    k1->removed = true;
    r->fused = true;
    return 0;
}

int model_fuse(Model *m) {
    if (m->fused) return 0;
    for (int i = 0; i < m->nreps; i++)
        if (merge_repconvn(m->reps[i])) return -1;
    for (int i = 0; i < m->nunits; i++) {
        ConvUnit *u = m->units[i];
        if (u->removed) continue;
        if (fold_bn(u)) return -1;
        /* the official fused convs are requires_grad_(False): an inference model */
        u->weight->requires_grad = false;
        if (u->bias) u->bias->requires_grad = false;
    }
    m->fused = true;
    return model_rebuild_names(m);
}
