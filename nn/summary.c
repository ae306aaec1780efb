/* Sizes, parameter counts, GFLOPs and the official layer count of a model,
 * computed from its structure alone (no forward), so `gelan info` at 640x640
 * costs nothing and the build can check the spatial arithmetic. */
#include <stdio.h>
#include <string.h>

#include "nn/model.h"
#include "tensor/error.h"

static void same_size_units(ConvUnit *const *u, int n, int h, int w, double *macs) {
    int ho, wo;
    for (int i = 0; i < n; i++) unit_shape(u[i], h, w, &ho, &wo, macs);
}

void block_shape(const Block *b, int h, int w, int *ho, int *wo, double *macs) {
    *ho = h, *wo = w;
    switch (b->kind) {
        case BLOCK_CONV:
            unit_shape(b->u.conv, h, w, ho, wo, macs);
            break;
        case BLOCK_ACONV: /* avg_pool2d(2, 1, 0) takes one pixel off */
            unit_shape(b->u.aconv.cv1, h - 1, w - 1, ho, wo, macs);
            break;
        case BLOCK_ADOWN: {
            int ph = (h - 1 + 2 - 3) / 2 + 1, pw = (w - 1 + 2 - 3) / 2 + 1; /* maxpool 3, s2, p1 */
            unit_shape(b->u.adown.cv1, h - 1, w - 1, ho, wo, macs);
            int h2, w2;
            unit_shape(b->u.adown.cv2, ph, pw, &h2, &w2, macs);
            break;
        }
        case BLOCK_ELAN1: {
            const ELAN1 *e = &b->u.elan1;
            ConvUnit *u[4] = {e->cv1, e->cv2, e->cv3, e->cv4};
            same_size_units(u, 4, h, w, macs);
            break;
        }
        case BLOCK_REPNCSPELAN4: {
            const RepNCSPELAN4 *e = &b->u.elan4;
            ConvUnit *u[4] = {e->cv1, e->cv2_conv, e->cv3_conv, e->cv4};
            same_size_units(u, 4, h, w, macs);
            repncsp_shape(&e->cv2_csp, h, w, macs);
            repncsp_shape(&e->cv3_csp, h, w, macs);
            break;
        }
        case BLOCK_SPPELAN: {
            ConvUnit *u[2] = {b->u.sppelan.cv1, b->u.sppelan.cv5};
            same_size_units(u, 2, h, w, macs);
            break;
        }
        case BLOCK_SHUFFLENETV2: {
            const ShuffleNetV2 *s = &b->u.shuffle;
            int h1, w1, h2, w2;
            if (s->stride > 1) {
                unit_shape(s->b1_dw, h, w, &h1, &w1, macs);
                unit_shape(s->b1_pw, h1, w1, &h2, &w2, macs);
            } else {
                unit_shape(s->b1_pw, h, w, &h1, &w1, macs);
            }
            unit_shape(s->b2_pw1, h, w, &h1, &w1, macs);
            unit_shape(s->b2_dw, h1, w1, &h2, &w2, macs);
            unit_shape(s->b2_pw2, h2, w2, ho, wo, macs);
            break;
        }
        case BLOCK_UPSAMPLE:
            *ho = h * b->u.upsample.scale, *wo = w * b->u.upsample.scale;
            break;
        case BLOCK_MAXPOOL:
            *ho = (h + 2 * b->u.pool.p - b->u.pool.k) / b->u.pool.s + 1;
            *wo = (w + 2 * b->u.pool.p - b->u.pool.k) / b->u.pool.s + 1;
            break;
        default:
            break;
    }
}

static LayerShape src_shape(const Model *m, const LayerShape *shapes, const Layer *L, int k, int h, int w) {
    int s = L->src[k];
    if (s < 0) return (LayerShape){m->ch, h, w};
    return shapes[s];
}

int model_shapes(const Model *m, int h, int w, LayerShape *shapes, double *macs, double *layer_macs) {
    double total = 0;
    for (int i = 0; i < m->nlayers; i++) {
        const Layer *L = &m->layers[i];
        double lm = 0;
        LayerShape in = src_shape(m, shapes, L, 0, h, w), out = in;
        switch (L->kind) {
            case BLOCK_CONCAT:
                out.c = 0;
                for (int k = 0; k < L->nfrom; k++) {
                    LayerShape s = src_shape(m, shapes, L, k, h, w);
                    if (s.h != in.h || s.w != in.w)
                        return gelan_error(
                            "layer %d (Concat, inputs %d and %d): sizes %dx%d and %dx%d differ at a "
                            "%dx%d input",
                            i, L->src[0], L->src[k], in.h, in.w, s.h, s.w, h, w);
                    out.c += s.c;
                }
                break;
            case BLOCK_CBLINEAR: {
                const ConvUnit *u = L->blocks[0].u.cblinear.conv;
                unit_shape(u, in.h, in.w, &out.h, &out.w, &lm);
                out.c = L->c_out;
                break;
            }
            case BLOCK_CBFUSE:
                out = src_shape(m, shapes, L, L->nfrom - 1, h, w);
                break;
            case BLOCK_DETECT: {
                const Detect *d = L->blocks[0].u.detect;
                for (int hd = 0; hd < d->nheads; hd++)
                    for (int l = 0; l < d->nl; l++) {
                        LayerShape s = src_shape(m, shapes, L, hd * d->nl + l, h, w);
                        LayerShape s0 = src_shape(m, shapes, L, l, h, w);
                        if (s.h != s0.h || s.w != s0.w)
                            return gelan_error(
                                "layer %d (detect): level %d of head %d is %dx%d, of head 0 %dx%d at a "
                                "%dx%d input",
                                i, l, hd, s.h, s.w, s0.h, s0.w, h, w);
                        for (int j = 0; j < 3; j++) {
                            int ho, wo;
                            unit_shape(d->box[hd][l][j], s.h, s.w, &ho, &wo, &lm);
                            unit_shape(d->cls[hd][l][j], s.h, s.w, &ho, &wo, &lm);
                        }
                    }
                break;
            }
            default:
                for (int j = 0; j < L->n; j++) {
                    int ho, wo;
                    block_shape(&L->blocks[j], out.h, out.w, &ho, &wo, &lm);
                    out.h = ho, out.w = wo;
                }
                out.c = L->c_out;
                break;
        }
        if (out.h < 1 || out.w < 1)
            return gelan_error("layer %d (%s): a %dx%d input shrinks to %dx%d", i, L->module, h, w, out.h, out.w);
        shapes[i] = out;
        if (layer_macs) layer_macs[i] = lm;
        total += lm;
    }
    if (macs) *macs = total;
    return 0;
}

size_t layer_num_params(const Model *m, const Layer *l) {
    char prefix[32];
    int len = snprintf(prefix, sizeof prefix, "model.%d.", l->index);
    size_t n = 0;
    for (int i = 0; i < m->nparams; i++)
        if (!strncmp(m->params[i].name, prefix, (size_t)len)) n += m->params[i].t->numel;
    return n;
}

/* ---- the official layer count: len(list(model.modules())) ----------------------
 * Every nn.Module instance once. Conv.default_act and RepConvN.default_act are
 * class attributes, i.e. one shared activation module each (counted once);
 * Conv(act=False) makes its own nn.Identity. */
static int count_unit(const Model *m, const ConvUnit *u) {
    if (u->conv_module) /* Conv: itself, its Conv2d, its BN (until fused), own Identity */
        return 2 + (u->bn_weight != NULL) + (u->act.kind == ACT_NONE && m->act.kind != ACT_NONE);
    /* bare nn.Conv2d (+ a BatchNorm2d and a ReLU of their own in ShuffleNetV2's Sequentials) */
    return 1 + (u->bn_weight != NULL) + (u->act.kind == ACT_RELU);
}

static int count_rep(const Model *m, const RepConvN *r) {
    if (r->fused) return 2; /* RepConvN + its merged Conv2d (+ the shared act) */
    return 1 + count_unit(m, r->conv1) + count_unit(m, r->conv2);
}

static int count_repncsp(const Model *m, const RepNCSP *c) {
    int n = 1 + count_unit(m, c->cv1) + count_unit(m, c->cv2) + count_unit(m, c->cv3) + 1; /* + Sequential m */
    for (int j = 0; j < c->n; j++) n += 1 + count_rep(m, c->m[j].cv1) + count_unit(m, c->m[j].cv2);
    return n;
}

static int count_block(const Model *m, const Block *b) {
    switch (b->kind) {
        case BLOCK_CONV:
            return count_unit(m, b->u.conv);
        case BLOCK_ACONV:
            return 1 + count_unit(m, b->u.aconv.cv1);
        case BLOCK_ADOWN:
            return 1 + count_unit(m, b->u.adown.cv1) + count_unit(m, b->u.adown.cv2);
        case BLOCK_ELAN1: {
            const ELAN1 *e = &b->u.elan1;
            return 1 + count_unit(m, e->cv1) + count_unit(m, e->cv2) + count_unit(m, e->cv3) + count_unit(m, e->cv4);
        }
        case BLOCK_REPNCSPELAN4: {
            const RepNCSPELAN4 *e = &b->u.elan4;
            return 1 + count_unit(m, e->cv1) + 1 + count_repncsp(m, &e->cv2_csp) + count_unit(m, e->cv2_conv) + 1 +
                   count_repncsp(m, &e->cv3_csp) + count_unit(m, e->cv3_conv) + count_unit(m, e->cv4);
        }
        case BLOCK_SPPELAN: /* + three SP, each wrapping an nn.MaxPool2d */
            return 1 + count_unit(m, b->u.sppelan.cv1) + 6 + count_unit(m, b->u.sppelan.cv5);
        case BLOCK_CBLINEAR:
            return 1 + count_unit(m, b->u.cblinear.conv);
        case BLOCK_MAXPOOL:
            return b->u.pool.sp_wrapper ? 2 : 1;
        case BLOCK_SHUFFLENETV2: {
            const ShuffleNetV2 *s = &b->u.shuffle;
            int n = 1 + 1 + 1; /* unit, branch1 and branch2 Sequentials */
            if (s->stride > 1) n += count_unit(m, s->b1_dw);
            n += count_unit(m, s->b1_pw);
            return n + count_unit(m, s->b2_pw1) + count_unit(m, s->b2_dw) + count_unit(m, s->b2_pw2);
        }
        case BLOCK_DETECT: {
            const Detect *d = b->u.detect;
            int n = 1;
            for (int h = 0; h < d->nheads; h++) {
                n += 2; /* the box and class ModuleLists */
                for (int l = 0; l < d->nl; l++) {
                    n += 2; /* one Sequential per branch */
                    for (int j = 0; j < 3; j++) n += count_unit(m, d->box[h][l][j]) + count_unit(m, d->cls[h][l][j]);
                }
                n += 1 + count_unit(m, d->dfl[h]); /* DFL + its Conv2d */
            }
            return n;
        }
        default: /* Silence, Concat, CBFuse, nn.Upsample */
            return 1;
    }
}

int model_num_modules(const Model *m) {
    int n = 2; /* DetectionModel and its Sequential */
    for (int i = 0; i < m->nlayers; i++) {
        const Layer *L = &m->layers[i];
        if (L->n > 1) n += 1; /* nn.Sequential of the repeats */
        for (int j = 0; j < L->n; j++) n += count_block(m, &L->blocks[j]);
    }
    bool shared_conv_act = false;
    for (int i = 0; i < m->nunits; i++) {
        const ConvUnit *u = m->units[i];
        if (!u->removed && u->conv_module && u->act.kind != ACT_NONE) shared_conv_act = true;
    }
    return n + shared_conv_act + (m->nreps > 0);
}
