/* Gradient accumulation up to the nominal batch of 64, as train_dual.py does:
 * the optimizer steps once the integrated iteration ni is `accumulate` past the
 * last step. During warmup accumulate ramps from 1 to 64 / batch_size
 * (np.interp, then numpy's round, which halves to even like rint). */
#include <math.h>

#include "optim/optim.h"

int accumulate_steps(int batch_size) {
    if (batch_size < 1) return 1;
    const double a = rint((double)OPTIM_NOMINAL_BATCH / batch_size);
    return a > 1 ? (int)a : 1;
}

double optim_scaled_weight_decay(double weight_decay, int batch_size) {
    const int acc = accumulate_steps(batch_size);
    return weight_decay * ((double)batch_size * acc / OPTIM_NOMINAL_BATCH);
}

void accumulator_init(Accumulator *a, int batch_size) {
    a->batch_size = batch_size;
    a->last_opt_step = -1;
}

int accumulator_count(const Accumulator *a, long ni, long nw) {
    if (ni > nw || nw <= 0 || a->batch_size < 1) return accumulate_steps(a->batch_size);
    const double hi = (double)OPTIM_NOMINAL_BATCH / a->batch_size;
    /* np.interp(ni, [0, nw], [1, 64 / batch_size]) */
    const double x = ni <= 0 ? 1.0 : ni >= nw ? hi : (hi - 1.0) / (double)nw * (double)ni + 1.0;
    const double r = rint(x);
    return r > 1 ? (int)r : 1;
}

bool accumulator_should_step(Accumulator *a, long ni, long nw) {
    if (ni - a->last_opt_step < accumulator_count(a, ni, nw)) return false;
    a->last_opt_step = ni;
    return true;
}
