/* The GELAN blocks: RepNBottleneck, RepNCSP, RepNCSPELAN4, ELAN1, SPPELAN. */
#include <stdio.h>
#include <stdlib.h>

#include "autograd/ops.h"
#include "nn/blocks.h"
#include "nn/model.h"
#include "tensor/error.h"

#define SUB(buf, prefix, fmt, ...) snprintf(buf, sizeof buf, "%s." fmt, prefix, __VA_ARGS__)

/* RepNCSP(c1, c2, n): c_ = c2/2; m is n RepNBottleneck(c_, c_, shortcut, e=1),
 * each x + Conv3x3(RepConvN(x)). Created in the official registration order
 * (cv1, cv2, cv3, m) so that the parameters come out in state_dict order. */
int repncsp_build(RepNCSP *b, Model *m, const char *prefix, int c1, int c2, int n, Act act) {
    char name[256];
    int c_ = c2 / 2;
    if (c_ <= 0) return gelan_error("%s: RepNCSP with %d output channels has no hidden channels", prefix, c2);
    SUB(name, prefix, "%s", "cv1");
    b->cv1 = conv_new(m, name, c1, c_, 1, 1, -1, 1, act);
    SUB(name, prefix, "%s", "cv2");
    b->cv2 = b->cv1 ? conv_new(m, name, c1, c_, 1, 1, -1, 1, act) : NULL;
    SUB(name, prefix, "%s", "cv3");
    /* input widths follow the convs that feed them (they differ from c_ only in a pruned model) */
    b->cv3 = b->cv2 ? conv_new(m, name, b->cv1->c2 + b->cv2->c2, c2, 1, 1, -1, 1, act) : NULL;
    if (!b->cv3) return -1;
    b->n = n;
    b->m = calloc((size_t)n, sizeof *b->m);
    if (!b->m) return gelan_error("model: out of memory");
    int cy = b->cv1->c2; /* the residual stream */
    for (int j = 0; j < n; j++) {
        SUB(name, prefix, "m.%d.cv1", j);
        b->m[j].cv1 = repconvn_new(m, name, cy, c_, act);
        SUB(name, prefix, "m.%d.cv2", j);
        b->m[j].cv2 = b->m[j].cv1 ? conv_new(m, name, b->m[j].cv1->conv1->c2, cy, 3, 1, -1, 1, act) : NULL;
        if (!b->m[j].cv2) return -1;
        if (b->m[j].cv2->c2 != cy)
            return gelan_error("%s: m.%d.cv2 has %d output channels but is added to the %d of cv1", prefix, j,
                               b->m[j].cv2->c2, cy);
        b->m[j].add = true; /* c1 == c2 inside RepNCSP */
    }
    return 0;
}

static Tensor *bottleneck_forward(const RepNBottleneck *b, Tape *t, Tensor *x, bool training) {
    Tensor *y = unit_forward(b->cv2, t, repconvn_forward(b->cv1, t, x, training), training);
    return b->add && y ? op_add(t, x, y) : y;
}

Tensor *repncsp_forward(const RepNCSP *b, Tape *t, Tensor *x, bool training) {
    Tensor *y = unit_forward(b->cv1, t, x, training);
    for (int j = 0; j < b->n && y; j++) y = bottleneck_forward(&b->m[j], t, y, training);
    Tensor *z = y ? unit_forward(b->cv2, t, x, training) : NULL;
    if (!z) return NULL;
    Tensor *cat[2] = {y, z};
    return unit_forward(b->cv3, t, op_concat(t, cat, 2, 1), training);
}

void repncsp_shape(const RepNCSP *b, int h, int w, double *macs) {
    int ho, wo;
    unit_shape(b->cv1, h, w, &ho, &wo, macs);
    unit_shape(b->cv2, h, w, &ho, &wo, macs);
    unit_shape(b->cv3, h, w, &ho, &wo, macs);
    for (int j = 0; j < b->n; j++) {
        repconvn_shape(b->m[j].cv1, h, w, macs);
        unit_shape(b->m[j].cv2, h, w, &ho, &wo, macs);
    }
}

/* torch.chunk(2) along channels: the first piece gets the odd channel. The
 * ELAN blocks feed the second piece (c3/2 channels) on, so an odd c3 is fine. */
static int chunk2(Tape *t, Tensor *x, Tensor **halves) {
    int c = tC(x);
    int sizes[2] = {c - c / 2, c / 2};
    return op_split(t, x, 1, sizes, 2, halves);
}

int elan4_build(RepNCSPELAN4 *b, Model *m, const char *prefix, int c1, int c2, int c3, int c4, int n, Act act) {
    char name[256];
    if (c3 < 2 || c4 <= 0 || n <= 0)
        return gelan_error("RepNCSPELAN4 needs c3 >= 2, c4 > 0 and n > 0 (got c3 %d, c4 %d, n %d)", c3, c4, n);
    SUB(name, prefix, "%s", "cv1");
    if (!(b->cv1 = conv_new(m, name, c1, c3, 1, 1, -1, 1, act))) return -1;
    /* input widths follow the convs that feed them (they differ from c3, c4 only in a pruned model) */
    int h = b->cv1->c2;
    b->c = h / 2;
    SUB(name, prefix, "%s", "cv2.0");
    if (repncsp_build(&b->cv2_csp, m, name, h / 2, c4, n, act)) return -1;
    SUB(name, prefix, "%s", "cv2.1");
    if (!(b->cv2_conv = conv_new(m, name, b->cv2_csp.cv3->c2, c4, 3, 1, -1, 1, act))) return -1;
    SUB(name, prefix, "%s", "cv3.0");
    if (repncsp_build(&b->cv3_csp, m, name, b->cv2_conv->c2, c4, n, act)) return -1;
    SUB(name, prefix, "%s", "cv3.1");
    if (!(b->cv3_conv = conv_new(m, name, b->cv3_csp.cv3->c2, c4, 3, 1, -1, 1, act))) return -1;
    SUB(name, prefix, "%s", "cv4");
    return (b->cv4 = conv_new(m, name, h + b->cv2_conv->c2 + b->cv3_conv->c2, c2, 1, 1, -1, 1, act)) ? 0 : -1;
}

Tensor *elan4_forward(const RepNCSPELAN4 *b, Tape *t, Tensor *x, bool training) {
    Tensor *y[4];
    Tensor *h = unit_forward(b->cv1, t, x, training);
    if (!h || chunk2(t, h, y)) return NULL;
    y[2] = unit_forward(b->cv2_conv, t, repncsp_forward(&b->cv2_csp, t, y[1], training), training);
    y[3] = y[2] ? unit_forward(b->cv3_conv, t, repncsp_forward(&b->cv3_csp, t, y[2], training), training) : NULL;
    if (!y[3]) return NULL;
    return unit_forward(b->cv4, t, op_concat(t, y, 4, 1), training);
}

int elan1_build(ELAN1 *b, Model *m, const char *prefix, int c1, int c2, int c3, int c4, Act act) {
    char name[256];
    if (c3 < 2 || c4 <= 0) return gelan_error("ELAN1 needs c3 >= 2 and c4 > 0 (got c3 %d, c4 %d)", c3, c4);
    SUB(name, prefix, "%s", "cv1");
    if (!(b->cv1 = conv_new(m, name, c1, c3, 1, 1, -1, 1, act))) return -1;
    int h = b->cv1->c2; /* c3, or a pruned model's width */
    b->c = h / 2;
    SUB(name, prefix, "%s", "cv2");
    if (!(b->cv2 = conv_new(m, name, h / 2, c4, 3, 1, -1, 1, act))) return -1;
    SUB(name, prefix, "%s", "cv3");
    if (!(b->cv3 = conv_new(m, name, b->cv2->c2, c4, 3, 1, -1, 1, act))) return -1;
    SUB(name, prefix, "%s", "cv4");
    return (b->cv4 = conv_new(m, name, h + b->cv2->c2 + b->cv3->c2, c2, 1, 1, -1, 1, act)) ? 0 : -1;
}

Tensor *elan1_forward(const ELAN1 *b, Tape *t, Tensor *x, bool training) {
    Tensor *y[4];
    Tensor *h = unit_forward(b->cv1, t, x, training);
    if (!h || chunk2(t, h, y)) return NULL;
    y[2] = unit_forward(b->cv2, t, y[1], training);
    y[3] = unit_forward(b->cv3, t, y[2], training);
    if (!y[3]) return NULL;
    return unit_forward(b->cv4, t, op_concat(t, y, 4, 1), training);
}

int sppelan_build(SPPELAN *b, Model *m, const char *prefix, int c1, int c2, int c3, Act act) {
    char name[256];
    if (c3 <= 0) return gelan_error("SPPELAN needs c3 > 0 (got %d)", c3);
    b->k = 5;
    SUB(name, prefix, "%s", "cv1");
    if (!(b->cv1 = conv_new(m, name, c1, c3, 1, 1, -1, 1, act))) return -1;
    SUB(name, prefix, "%s", "cv5");
    return (b->cv5 = conv_new(m, name, 4 * b->cv1->c2, c2, 1, 1, -1, 1, act)) ? 0 : -1;
}

Tensor *sppelan_forward(const SPPELAN *b, Tape *t, Tensor *x, bool training) {
    Tensor *y[4];
    y[0] = unit_forward(b->cv1, t, x, training);
    for (int i = 1; i < 4; i++) y[i] = y[i - 1] ? op_maxpool2d(t, y[i - 1], b->k, 1, b->k / 2) : NULL;
    if (!y[3]) return NULL;
    return unit_forward(b->cv5, t, op_concat(t, y, 4, 1), training);
}
