/* The anchor-free detection heads DDetect, DualDDetect and TripleDDetect.
 *
 * Each head predicts, per level and grid cell, a distribution over 16
 * distances for each box side (left, top, right, bottom: DFL) and nc class
 * logits. Dual and triple heads are the PGI auxiliary heads: the same head
 * again on the auxiliary branch's features, used only in training. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "autograd/ops.h"
#include "nn/blocks.h"
#include "nn/model.h"
#include "tensor/error.h"

static int make_divisible(double x, int d) { return (int)ceil(x / d) * d; }
static int imax(int a, int b) { return a > b ? a : b; }
static int imin(int a, int b) { return a < b ? a : b; }

/* dfl, dfl2, dfl3 */
static void dfl_name(char *buf, size_t len, const char *prefix, int h) {
    if (h == 0)
        snprintf(buf, len, "%s.dfl.conv", prefix);
    else
        snprintf(buf, len, "%s.dfl%d.conv", prefix, h + 1);
}

Detect *detect_build(Model *m, const char *prefix, int nheads, int nc, const int *ch, int nch, Act act) {
    if (nheads < 1 || nheads > DETECT_MAX_HEADS || nch % nheads || nch / nheads < 1 ||
        nch / nheads > DETECT_MAX_LEVELS) {
        gelan_error("a head with %d inputs cannot be split into %d heads of 1..%d levels", nch, nheads,
                    DETECT_MAX_LEVELS);
        return NULL;
    }
    Detect *d = calloc(1, sizeof *d);
    if (!d) {
        gelan_error("model: out of memory");
        return NULL;
    }
    d->nheads = nheads;
    d->nl = nch / nheads;
    d->nc = nc;
    d->reg_max = 16;
    d->no = nc + 4 * d->reg_max;
    Act none = {ACT_NONE, 0};
    char name[256];
    /* official registration order: cv2, cv3, (cv4, cv5, (cv6, cv7)), then the DFLs */
    for (int h = 0; h < nheads; h++) {
        int c0 = ch[h * d->nl];
        int c2 = make_divisible(imax(imax(c0 / 4, 4 * d->reg_max), 16), 4);
        int c3 = imax(c0, imin(nc * 2, 128));
        for (int l = 0; l < d->nl; l++) {
            int cin = ch[h * d->nl + l];
            ConvUnit **b = d->box[h][l];
            snprintf(name, sizeof name, "%s.cv%d.%d.0", prefix, 2 + 2 * h, l);
            if (!(b[0] = conv_new(m, name, cin, c2, 3, 1, -1, 1, act))) goto fail;
            snprintf(name, sizeof name, "%s.cv%d.%d.1", prefix, 2 + 2 * h, l);
            if (!(b[1] = conv_new(m, name, b[0]->c2, c2, 3, 1, -1, 4, act))) goto fail;
            snprintf(name, sizeof name, "%s.cv%d.%d.2", prefix, 2 + 2 * h, l);
            if (!(b[2] = unit_new(m, name, NULL, b[1]->c2, 4 * d->reg_max, 1, 1, 0, 4, true, none))) goto fail;
        }
        for (int l = 0; l < d->nl; l++) {
            int cin = ch[h * d->nl + l];
            ConvUnit **c = d->cls[h][l];
            snprintf(name, sizeof name, "%s.cv%d.%d.0", prefix, 3 + 2 * h, l);
            if (!(c[0] = conv_new(m, name, cin, c3, 3, 1, -1, 1, act))) goto fail;
            snprintf(name, sizeof name, "%s.cv%d.%d.1", prefix, 3 + 2 * h, l);
            if (!(c[1] = conv_new(m, name, c[0]->c2, c3, 3, 1, -1, 1, act))) goto fail;
            snprintf(name, sizeof name, "%s.cv%d.%d.2", prefix, 3 + 2 * h, l);
            if (!(c[2] = unit_new(m, name, NULL, c[1]->c2, nc, 1, 1, 0, 1, true, none))) goto fail;
        }
    }
    for (int h = 0; h < nheads; h++) {
        /* DFL: a frozen 1x1 conv 16 -> 1 with weights 0..15 (the expectation) */
        dfl_name(name, sizeof name, prefix, h);
        if (!(d->dfl[h] = unit_new(m, name, NULL, d->reg_max, 1, 1, 1, 0, 1, false, none))) goto fail;
        for (int i = 0; i < d->reg_max; i++) d->dfl[h]->weight->data[i] = (float)i;
        d->dfl[h]->weight->requires_grad = false;
        d->dfl[h]->frozen = true;
    }
    return d;
fail:
    free(d);
    return NULL;
}

void detect_free(Detect *d) { free(d); }

/* The official bias_init: box outputs start at 1.0 (a few bins apart), class
 * logits at log(5 / nc / (640 / s)^2): about 5 objects of nc classes per
 * 640x640 image, spread over that level's cells. */
void detect_bias_init(Detect *d) {
    for (int h = 0; h < d->nheads; h++)
        for (int l = 0; l < d->nl; l++) {
            tensor_fill(d->box[h][l][2]->bias, 1.0f);
            double cells = (640.0 / d->stride[l]) * (640.0 / d->stride[l]);
            tensor_fill(d->cls[h][l][2]->bias, (float)log(5.0 / d->nc / cells));
        }
}

static Tensor *branch(ConvUnit *const *u, Tape *t, Tensor *x, bool training) {
    for (int i = 0; i < 3 && x; i++) x = unit_forward(u[i], t, x, training);
    return x;
}

int detect_forward(const Detect *d, Tape *t, Tensor *const *x, bool training, Tensor *maps[][DETECT_MAX_LEVELS]) {
    for (int h = 0; h < d->nheads; h++)
        for (int l = 0; l < d->nl; l++) {
            Tensor *in = x[h * d->nl + l];
            Tensor *bc[2] = {branch(d->box[h][l], t, in, training), NULL};
            bc[1] = bc[0] ? branch(d->cls[h][l], t, in, training) : NULL;
            if (!bc[1] || !(maps[h][l] = op_concat(t, bc, 2, 1))) return -1;
        }
    return 0;
}

Tensor *detect_decode(const Detect *d, int head, Tape *t, Tensor *const *maps) {
    const int R = d->reg_max, nc = d->nc, N = tN(maps[0]);
    int A = 0;
    for (int l = 0; l < d->nl; l++) {
        if (tC(maps[l]) != d->no || tN(maps[l]) != N) {
            gelan_error("detect decode: level %d map has %d channels (expected %d)", l, tC(maps[l]), d->no);
            return NULL;
        }
        A += tH(maps[l]) * tW(maps[l]);
    }
    int shape[3] = {N, 4 + nc, A};
    Tensor *y = tape_tensor(t, 3, shape);
    if (!y) return NULL;
    const float *dflw = d->dfl[head]->weight->data; /* 0..15 */
    for (int n = 0; n < N; n++) {
        int a0 = 0;
        for (int l = 0; l < d->nl; l++) {
            const Tensor *mp = maps[l];
            int H = tH(mp), W = tW(mp), HW = H * W;
            const float *base = mp->data + (size_t)n * d->no * HW;
            float s = d->stride[l];
            for (int p = 0; p < HW; p++) {
                float dist[4];
                for (int side = 0; side < 4; side++) {
                    /* softmax over the 16 bins, then the expectation (the DFL conv) */
                    const float *v = base + (size_t)side * R * HW + p;
                    float mx = v[0];
                    for (int b = 1; b < R; b++) mx = fmaxf(mx, v[(size_t)b * HW]);
                    float e[32], sum = 0;
                    for (int b = 0; b < R; b++) sum += e[b] = expf(v[(size_t)b * HW] - mx);
                    float acc = 0;
                    for (int b = 0; b < R; b++) acc += dflw[b] * (e[b] / sum);
                    dist[side] = acc;
                }
                float ax = (float)(p % W) + 0.5f, ay = (float)(p / W) + 0.5f;
                float x1 = ax - dist[0], y1 = ay - dist[1], x2 = ax + dist[2], y2 = ay + dist[3];
                float *out = y->data + (size_t)n * (4 + nc) * A + a0 + p;
                out[0] = (x1 + x2) / 2 * s;
                out[(size_t)A] = (y1 + y2) / 2 * s;
                out[(size_t)2 * A] = (x2 - x1) * s;
                out[(size_t)3 * A] = (y2 - y1) * s;
                for (int c = 0; c < nc; c++) {
                    float z = base[(size_t)(4 * R + c) * HW + p];
                    out[(size_t)(4 + c) * A] = 1.0f / (1.0f + expf(-z));
                }
            }
            a0 += HW;
        }
    }
    return y;
}
