/* Numerical gradient checking.
 *
 * f builds an output from the inputs on a fresh tape. gradcheck takes the
 * scalar L = sum_i out_i * r_i with fixed random weights r (so every output
 * element matters, and a wrong backward cannot hide behind symmetry), gets
 * dL/dx from backward(), and compares every element of every input that
 * requires grad with the central difference (L(x+h) - L(x-h)) / 2h, where L
 * is accumulated in double. The float32 forward limits precision, so the test
 * is |analytic - numeric| <= atol + rtol * max|numeric| over that input;
 * a broken backward (a missing term, a wrong index, a wrong scale) is off by
 * far more than that. Keep inputs away from kinks (ReLU at 0, max-pool ties). */
#ifndef GELAN_GRADCHECK_H
#define GELAN_GRADCHECK_H

#include "autograd/tape.h"

typedef Tensor *(*gradcheck_fn)(Tape *t, Tensor *const *inputs, void *ctx);

typedef struct {
    double eps;       /* finite-difference step (default 1e-2) */
    double rtol;      /* default 1e-2 */
    double atol;      /* default 1e-4 */
    unsigned seed;    /* for the weights r (default 1) */
    size_t max_elems; /* check at most this many elements per input, spread evenly (0 = all) */
} GradcheckOpts;

/* 0 when every checked gradient agrees; -1 with gelan_error naming the input,
 * the element, the analytic and the numerical value. opts may be NULL. */
int gradcheck(const char *name, gradcheck_fn f, Tensor *const *inputs, int n_inputs, void *ctx,
              const GradcheckOpts *opts);

#endif
