/* The ShuffleNetV2 unit the seed team tried in place of low-importance
 * RepNCSPELAN4s (weekly report, week 14), built on the unit of Ma et al.,
 * "ShuffleNet V2" (2018):
 *   stride 1: x1, x2 = chunk(x, 2); out = cat(branch1(x1), branch2(x2))
 *   stride s: out = cat(branch1(x), branch2(x))
 * then a channel shuffle with 2 groups, so that the halves mix in the next unit.
 *   branch2 = [1x1, BN, ReLU, dw3x3 s, BN, 1x1, BN, ReLU] (the paper's)
 *   branch1, stride 1 = [1x1, BN]: the seed's version; the paper passes x1
 *     through unchanged, the seed projects it, so c2 may differ from c1;
 *   branch1, stride s = [dw3x3 s, BN, 1x1, BN, ReLU]: the paper's / torchvision's
 *     (the seed's listing is inconsistent here: a BatchNorm2d(c1/2) after a
 *     depthwise conv with c1 outputs, and branch2 expecting c1/2 inputs).
 * Convs have no bias; parameter names are the nn.Sequential indices of the
 * seed's listing (branch1.0, branch1.1, branch2.0, ..., branch2.6). The ReLUs
 * are part of the unit (not the YAML's activation). In a YAML it is a
 * width-scaled module like Conv: [from, n, ShuffleNetV2, [c2, stride]]. */
#include <stdio.h>

#include "autograd/ops.h"
#include "nn/blocks.h"
#include "nn/model.h"
#include "tensor/error.h"

static ConvUnit *seq_conv(Model *m, const char *prefix, const char *branch, int conv_i, int c1, int c2, int k, int s,
                          int g, bool relu) {
    char name[256], bn[256];
    snprintf(name, sizeof name, "%s.%s.%d", prefix, branch, conv_i);
    snprintf(bn, sizeof bn, "%s.%s.%d", prefix, branch, conv_i + 1);
    c2 = model_width_override(name, c2); /* a pruned model's width */
    Act act = {relu ? ACT_RELU : ACT_NONE, 0};
    return unit_new(m, name, bn, c1, c2, k, s, k / 2, g, false, act);
}

int shufflenet_build(ShuffleNetV2 *b, Model *m, const char *prefix, int c1, int c2, int stride) {
    if (stride < 1 || stride > 3) return gelan_error("illegal stride value %d (1..3)", stride);
    if (c2 % 2) return gelan_error("an odd c2 = %d gives %d output channels", c2, c2 / 2 * 2);
    int bf = c2 / 2;
    b->stride = stride, b->c1 = c1, b->c2 = c2;
    if (stride == 1) {
        /* torch.chunk gives x1 the odd channel, which branch1 (built for c1/2) rejects */
        if (c1 % 2)
            return gelan_error("input has %d channels: chunk(2) gives %d and %d, but branch1 expects %d", c1,
                               c1 - c1 / 2, c1 / 2, c1 / 2);
        if (!(b->b1_pw = seq_conv(m, prefix, "branch1", 0, c1 / 2, bf, 1, 1, 1, false))) return -1;
    } else {
        if (!(b->b1_dw = seq_conv(m, prefix, "branch1", 0, c1, c1, 3, stride, c1, false))) return -1;
        if (!(b->b1_pw = seq_conv(m, prefix, "branch1", 2, c1, bf, 1, 1, 1, true))) return -1;
    }
    if (!(b->b2_pw1 = seq_conv(m, prefix, "branch2", 0, stride > 1 ? c1 : c1 / 2, bf, 1, 1, 1, true))) return -1;
    int cw = b->b2_pw1->c2; /* bf, or a pruned model's width: the depthwise conv follows it */
    if (!(b->b2_dw = seq_conv(m, prefix, "branch2", 3, cw, cw, 3, stride, cw, false))) return -1;
    if (!(b->b2_pw2 = seq_conv(m, prefix, "branch2", 5, b->b2_dw->c2, bf, 1, 1, 1, true))) return -1;
    if (b->b2_pw2->c2 != b->b1_pw->c2)
        return gelan_error("%s: the branches give %d and %d channels; the channel shuffle needs equal halves", prefix,
                           b->b1_pw->c2, b->b2_pw2->c2);
    return 0;
}

Tensor *channel_shuffle(Tape *t, Tensor *x, int groups) {
    if (!x) return NULL;
    int c = tC(x);
    if (groups <= 0 || c % groups) {
        gelan_error("channel_shuffle: %d channels do not split into %d groups", c, groups);
        return NULL;
    }
    int *idx = tape_alloc(t, (size_t)c * sizeof *idx);
    if (!idx) return NULL;
    for (int o = 0; o < c; o++) idx[o] = (o % groups) * (c / groups) + o / groups;
    return op_index_select(t, x, 1, idx, c);
}

Tensor *shufflenet_forward(const ShuffleNetV2 *b, Tape *t, Tensor *x, bool training) {
    Tensor *y[2], *in2 = x;
    if (b->stride == 1) {
        Tensor *half[2];
        int sizes[2] = {tC(x) / 2, tC(x) / 2};
        if (op_split(t, x, 1, sizes, 2, half)) return NULL;
        y[0] = unit_forward(b->b1_pw, t, half[0], training);
        in2 = half[1];
    } else {
        y[0] = unit_forward(b->b1_pw, t, unit_forward(b->b1_dw, t, x, training), training);
    }
    if (!y[0]) return NULL;
    Tensor *h = unit_forward(b->b2_pw1, t, in2, training);
    h = unit_forward(b->b2_dw, t, h, training);
    y[1] = unit_forward(b->b2_pw2, t, h, training);
    if (!y[1]) return NULL;
    return channel_shuffle(t, op_concat(t, y, 2, 1), 2);
}
