/* Nearest-neighbour upsampling to an explicit output size.
 *
 * The source index is PyTorch's, float arithmetic included:
 * scale = (float)in / out, src = min(floor(dst * scale), in - 1). Doing it in
 * float (not exact integer arithmetic) reproduces F.interpolate bit for bit
 * in the rare sizes where the rounded scale lands a product just below an
 * integer. The backward adds each output gradient into its source pixel. */
#include <math.h>
#include <stdint.h>

#include "autograd/ops.h"
#include "tensor/error.h"
#include "tensor/pool.h"

#define UPSAMPLE_GRAIN 32768

typedef struct {
    int H, W, OH, OW;
    int32_t *src_h, *src_w; /* per output row / column: the input row / column */
    const float *x, *gy;
    float *y, *gx;
} UpsampleJob;

static void source_index(int32_t *src, int in, int out) {
    float scale = (float)in / (float)out;
    for (int d = 0; d < out; d++) {
        int32_t s = (int32_t)floorf((float)d * scale);
        src[d] = s < in - 1 ? s : in - 1;
    }
}

static void upsample_fwd(void *ctx, size_t b, size_t e) {
    const UpsampleJob *j = ctx;
    for (size_t plane = b; plane < e; plane++) {
        const float *x = j->x + plane * (size_t)j->H * j->W;
        float *y = j->y + plane * (size_t)j->OH * j->OW;
        for (int oh = 0; oh < j->OH; oh++) {
            const float *xrow = x + (size_t)j->src_h[oh] * j->W;
            for (int ow = 0; ow < j->OW; ow++) y[(size_t)oh * j->OW + ow] = xrow[j->src_w[ow]];
        }
    }
}

static void upsample_bwd(void *ctx, size_t b, size_t e) {
    const UpsampleJob *j = ctx;
    for (size_t plane = b; plane < e; plane++) {
        float *gx = j->gx + plane * (size_t)j->H * j->W;
        const float *gy = j->gy + plane * (size_t)j->OH * j->OW;
        for (int oh = 0; oh < j->OH; oh++) {
            float *gxrow = gx + (size_t)j->src_h[oh] * j->W;
            for (int ow = 0; ow < j->OW; ow++) gxrow[j->src_w[ow]] += gy[(size_t)oh * j->OW + ow];
        }
    }
}

static size_t planes_per_piece(size_t plane_elems) {
    size_t n = UPSAMPLE_GRAIN / (plane_elems ? plane_elems : 1);
    return n ? n : 1;
}

static int upsample_backward(Tape *t, TapeNode *n) {
    float *gx = tape_grad_of(t, n->in[0]);
    if (!gx) return 0;
    UpsampleJob j = *(const UpsampleJob *)n->saved;
    j.gy = n->out->grad;
    j.gx = gx;
    parallel_for((size_t)tN(n->out) * tC(n->out), planes_per_piece((size_t)j.OH * j.OW), upsample_bwd, &j);
    return 0;
}

Tensor *op_upsample_nearest(Tape *t, Tensor *x, int out_h, int out_w) {
    char sh[64];
    if (!x) {
        gelan_error("upsample_nearest: input is NULL");
        return NULL;
    }
    if (x->ndim != 4) {
        gelan_error("upsample_nearest: expected a 4-D NCHW input, got %s", tensor_shape_str(x, sh, sizeof sh));
        return NULL;
    }
    if (tH(x) < 1 || tW(x) < 1 || out_h < 1 || out_w < 1) {
        gelan_error("upsample_nearest: input and output sizes must be > 0, got input %s, output %dx%d",
                    tensor_shape_str(x, sh, sizeof sh), out_h, out_w);
        return NULL;
    }
    Tensor *y = tape_tensor4(t, tN(x), tC(x), out_h, out_w);
    int32_t *src_h = tape_alloc(t, (size_t)out_h * sizeof *src_h);
    int32_t *src_w = tape_alloc(t, (size_t)out_w * sizeof *src_w);
    if (!y || !src_h || !src_w) return NULL;
    source_index(src_h, tH(x), out_h);
    source_index(src_w, tW(x), out_w);
    UpsampleJob j = {tH(x), tW(x), out_h, out_w, src_h, src_w, x->data, NULL, y->data, NULL};
    parallel_for((size_t)tN(x) * tC(x), planes_per_piece((size_t)out_h * out_w), upsample_fwd, &j);
    UpsampleJob *s;
    if (tape_record(t, "upsample_nearest", y, &x, 1, upsample_backward, sizeof *s, (void **)&s))
        *s = j; /* the index tables live in the arena as long as the node */
    else if (tape_wants_grad(t, &x, 1))
        return NULL; /* the arena could not hold the node */
    return y;
}
