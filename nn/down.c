/* The GELAN down-sampling blocks AConv and ADown. Both start with
 * avg_pool2d(k=2, s=1, p=0), a small blur that shrinks the map by one pixel
 * before the stride-2 conv. */
#include <stdio.h>

#include "autograd/ops.h"
#include "nn/blocks.h"
#include "nn/model.h"
#include "tensor/error.h"

int aconv_build(AConv *b, Model *m, const char *prefix, int c1, int c2, Act act) {
    char name[256];
    snprintf(name, sizeof name, "%s.cv1", prefix);
    return (b->cv1 = conv_new(m, name, c1, c2, 3, 2, 1, 1, act)) ? 0 : -1;
}

Tensor *aconv_forward(const AConv *b, Tape *t, Tensor *x, bool training) {
    return unit_forward(b->cv1, t, op_avgpool2d(t, x, 2, 1, 0), training);
}

/* ADown(c1, c2): halves x1, x2 of the blurred input; x1 -> Conv3x3 s2,
 * x2 -> maxpool 3x3 s2 -> Conv1x1; cat. torch.chunk gives x1 the odd channel,
 * which cv1 (built for c1/2) would reject, and an odd c2 would give c2-1
 * output channels: both are config errors. */
int adown_build(ADown *b, Model *m, const char *prefix, int c1, int c2, Act act) {
    char name[256];
    if (c1 % 2)
        return gelan_error("input has %d channels: chunk(2) gives %d and %d, but cv1 expects %d", c1, c1 - c1 / 2,
                           c1 / 2, c1 / 2);
    if (c2 % 2) return gelan_error("an odd c2 = %d gives %d output channels", c2, c2 / 2 * 2);
    snprintf(name, sizeof name, "%s.cv1", prefix);
    if (!(b->cv1 = conv_new(m, name, c1 / 2, c2 / 2, 3, 2, 1, 1, act))) return -1;
    snprintf(name, sizeof name, "%s.cv2", prefix);
    return (b->cv2 = conv_new(m, name, c1 / 2, c2 / 2, 1, 1, 0, 1, act)) ? 0 : -1;
}

Tensor *adown_forward(const ADown *b, Tape *t, Tensor *x, bool training) {
    Tensor *p = op_avgpool2d(t, x, 2, 1, 0);
    Tensor *h[2];
    if (!p) return NULL;
    int sizes[2] = {tC(p) / 2, tC(p) / 2};
    if (op_split(t, p, 1, sizes, 2, h)) return NULL;
    h[0] = unit_forward(b->cv1, t, h[0], training);
    h[1] = unit_forward(b->cv2, t, op_maxpool2d(t, h[1], 3, 2, 1), training);
    if (!h[0] || !h[1]) return NULL;
    return op_concat(t, h, 2, 1);
}
