/* CBLinear and CBFuse: how PGI's auxiliary reversible branch feeds the main
 * backbone's features into the auxiliary one (CBNet-style composite links). */
#include <stdio.h>

#include "autograd/ops.h"
#include "nn/blocks.h"
#include "nn/model.h"
#include "tensor/error.h"

int cblinear_build(CBLinear *b, Model *m, const char *prefix, int c1, const int *c2s, int n, int k, int s, int p,
                   int g) {
    char name[256];
    if (n <= 0 || n > CBLINEAR_MAX_OUTS)
        return gelan_error("CBLinear takes 1..%d output sizes, got %d", CBLINEAR_MAX_OUTS, n);
    int sum = 0;
    for (int i = 0; i < n; i++) {
        if (c2s[i] <= 0) return gelan_error("CBLinear output size %d is not positive", c2s[i]);
        b->c2s[i] = c2s[i];
        sum += c2s[i];
    }
    b->nout = n;
    snprintf(name, sizeof name, "%s.conv", prefix);
    Act none = {ACT_NONE, 0};
    return (b->conv = unit_new(m, name, NULL, c1, sum, k, s, p < 0 ? k / 2 : p, g, true, none)) ? 0 : -1;
}

int cblinear_forward(const CBLinear *b, Tape *t, Tensor *x, Tensor **out) {
    Tensor *y = unit_forward(b->conv, t, x, false);
    if (!y) return -1;
    return op_split(t, y, 1, b->c2s, b->nout, out);
}

/* The official sum is torch.sum(torch.stack(resized + [last]), 0): same order here. */
Tensor *cbfuse_forward(Tape *t, Tensor *const *pieces, int n, Tensor *last) {
    Tensor *acc = NULL;
    for (int i = 0; i < n; i++) {
        Tensor *p = pieces[i];
        if (tH(p) != tH(last) || tW(p) != tW(last)) p = op_upsample_nearest(t, p, tH(last), tW(last));
        if (!p) return NULL;
        acc = acc ? op_add(t, acc, p) : p;
        if (!acc) return NULL;
    }
    return acc ? op_add(t, acc, last) : last;
}
