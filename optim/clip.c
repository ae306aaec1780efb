/* torch.nn.utils.clip_grad_norm_(parameters, max_norm), the 2-norm variant:
 * the norm of all gradients taken as one vector, and one common scale factor
 * min(max_norm / (total + 1e-6), 1). The squares are summed in double per
 * fixed chunk and the chunks in order, so the total does not depend on the
 * thread count (torch sums in float per tensor; the two agree to ~1e-7). */
#include <math.h>
#include <stdlib.h>

#include "optim/internal.h"
#include "optim/optim.h"
#include "tensor/error.h"
#include "tensor/pool.h"

typedef struct {
    const OptimParam *params;
    const int *active; /* chunk idx -> index into params */
    const OptimChunk *chunks;
    double *sums;
    float coef;
} ClipCtx;

static void sum_chunks(void *vctx, size_t cb, size_t ce) {
    ClipCtx *c = vctx;
    for (size_t ci = cb; ci < ce; ci++) {
        const OptimChunk *ch = &c->chunks[ci];
        const float *g = c->params[c->active[ch->idx]].param->grad + ch->begin;
        const size_t n = ch->end - ch->begin;
        /* eight independent partial sums (a fixed order, so still deterministic)
         * let the compiler use vector adds instead of one serial chain */
        double lane[8] = {0};
        size_t i = 0;
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; k++) lane[k] += (double)g[i + k] * g[i + k];
        for (; i < n; i++) lane[0] += (double)g[i] * g[i];
        double s = 0;
        for (int k = 0; k < 8; k++) s += lane[k];
        c->sums[ci] = s;
    }
}

static void scale_chunks(void *vctx, size_t cb, size_t ce) {
    ClipCtx *c = vctx;
    for (size_t ci = cb; ci < ce; ci++) {
        const OptimChunk *ch = &c->chunks[ci];
        float *g = c->params[c->active[ch->idx]].param->grad;
        for (size_t i = ch->begin; i < ch->end; i++) g[i] = g[i] * c->coef;
    }
}

int clip_grad_norm(const OptimParam *params, int n, double max_norm, double *total_norm) {
    if (total_norm) *total_norm = 0;
    if (!(max_norm > 0)) return gelan_error("clip_grad_norm: max_norm %g must be positive", max_norm);
    int *active = malloc((n > 0 ? (size_t)n : 1) * sizeof *active);
    size_t *numel = malloc((n > 0 ? (size_t)n : 1) * sizeof *numel);
    if (!active || !numel) {
        free(active);
        free(numel);
        return gelan_error("clip_grad_norm: out of memory for %d parameters", n);
    }
    int na = 0;
    for (int i = 0; i < n; i++)
        if (optim_param_active(params[i].param)) {
            active[na] = i;
            numel[na++] = params[i].param->numel;
        }
    OptimChunk *chunks = NULL;
    int nc = 0;
    int rc = optim_chunks_make(numel, na, &chunks, &nc);
    free(numel);
    double *sums = rc ? NULL : malloc((nc > 0 ? (size_t)nc : 1) * sizeof *sums);
    if (!sums) {
        free(active);
        free(chunks);
        return rc ? -1 : gelan_error("clip_grad_norm: out of memory for %d partial sums", nc);
    }
    ClipCtx c = {.params = params, .active = active, .chunks = chunks, .sums = sums};
    parallel_for((size_t)nc, 4, sum_chunks, &c);
    double sq = 0;
    for (int i = 0; i < nc; i++) sq += sums[i];
    const float total = (float)sqrt(sq);
    /* torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1, in float;
     * a NaN or inf norm propagates into the gradients as it does there */
    float coef = (float)max_norm / (total + 1e-6f);
    if (coef > 1.f) coef = 1.f;
    if (coef != 1.f) {
        c.coef = coef;
        parallel_for((size_t)nc, 4, scale_chunks, &c);
    }
    if (total_norm) *total_norm = total;
    free(active);
    free(chunks);
    free(sums);
    return 0;
}
