#include "autograd/gradcheck.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/error.h"
#include "tensor/rng.h"

/* L = sum out * r, in double. Returns NAN when f fails. */
static double eval_loss(Tape *t, gradcheck_fn f, Tensor *const *in, void *ctx, const float *r, size_t *nout) {
    tape_reset(t);
    bool old = tape_set_grad_enabled(t, false);
    Tensor *out = f(t, in, ctx);
    tape_set_grad_enabled(t, old);
    if (!out) return NAN;
    if (nout) *nout = out->numel;
    double L = 0;
    for (size_t i = 0; i < out->numel; i++) L += (double)out->data[i] * r[i];
    return L;
}

int gradcheck(const char *name, gradcheck_fn f, Tensor *const *inputs, int n_inputs, void *ctx,
              const GradcheckOpts *opts) {
    GradcheckOpts o = {1e-2, 1e-2, 1e-4, 1, 0};
    if (opts) {
        if (opts->eps > 0) o.eps = opts->eps;
        if (opts->rtol > 0) o.rtol = opts->rtol;
        if (opts->atol > 0) o.atol = opts->atol;
        if (opts->seed) o.seed = opts->seed;
        o.max_elems = opts->max_elems;
    }
    Tape *t = tape_new();
    if (!t) return -1;
    int rc = -1;
    float *r = NULL;

    /* analytic gradients */
    for (int i = 0; i < n_inputs; i++) tensor_zero_grad(inputs[i]);
    Tensor *out = f(t, inputs, ctx);
    if (!out) {
        gelan_error_prefix("gradcheck %s: forward", name);
        goto done;
    }
    r = malloc((out->numel ? out->numel : 1) * sizeof *r);
    if (!r) goto done;
    Rng rng;
    rng_seed(&rng, o.seed);
    for (size_t i = 0; i < out->numel; i++) r[i] = rng_range(&rng, -1.f, 1.f);
    if (!out->requires_grad) {
        gelan_error("gradcheck %s: the output does not require grad", name);
        goto done;
    }
    if (tape_backward_from(t, out, r) != 0) goto done;

    for (int i = 0; i < n_inputs; i++) {
        Tensor *x = inputs[i];
        if (!x->requires_grad) continue;
        size_t n = x->numel;
        size_t step = (o.max_elems && n > o.max_elems) ? n / o.max_elems : 1;
        float *analytic = malloc(n * sizeof *analytic);
        double *numeric = malloc(n * sizeof *numeric);
        if (!analytic || !numeric) {
            free(analytic);
            free(numeric);
            gelan_error("gradcheck %s: out of memory", name);
            goto done;
        }
        if (x->grad)
            memcpy(analytic, x->grad, n * sizeof *analytic);
        else
            memset(analytic, 0, n * sizeof *analytic);
        double maxnum = 0;
        for (size_t e = 0; e < n; e += step) {
            float saved = x->data[e];
            x->data[e] = (float)(saved + o.eps);
            double lp = eval_loss(t, f, inputs, ctx, r, NULL);
            x->data[e] = (float)(saved - o.eps);
            double lm = eval_loss(t, f, inputs, ctx, r, NULL);
            x->data[e] = saved;
            /* the step actually taken in float32 */
            double h = ((double)(float)(saved + o.eps) - (double)(float)(saved - o.eps)) / 2;
            numeric[e] = (lp - lm) / (2 * h);
            if (fabs(numeric[e]) > maxnum) maxnum = fabs(numeric[e]);
        }
        double tol = o.atol + o.rtol * maxnum;
        for (size_t e = 0; e < n; e += step) {
            double d = fabs(analytic[e] - numeric[e]);
            if (!(d <= tol)) {
                char s[64];
                gelan_error("gradcheck %s: input %d %s element %zu: analytic %.6g, numeric %.6g (|diff| %.3g > tol %.3g)",
                            name, i, tensor_shape_str(x, s, sizeof s), e, analytic[e], numeric[e], d, tol);
                free(analytic);
                free(numeric);
                goto done;
            }
        }
        free(analytic);
        free(numeric);
    }
    rc = 0;
done:
    free(r);
    tape_free(t);
    return rc;
}
