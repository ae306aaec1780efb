/* The learning-rate and momentum schedule of train_dual.py.
 *
 * During the first nw integrated iterations the official loop overwrites,
 * before each forward, lr with np.interp(ni, [0, nw], [start, initial_lr *
 * lf(epoch)]) where start is warmup_bias_lr for param_groups[0] (the biases)
 * and 0 for the other groups, and momentum with np.interp(ni, [0, nw],
 * [warmup_momentum, momentum]).
 *
 * After the warmup nothing but LambdaLR touches lr, once per epoch, and it
 * runs one epoch behind: its constructor already steps to lf(0), then the
 * loop sets scheduler.last_epoch = start_epoch - 1 ("do not move"), so the
 * scheduler.step() at the end of epoch e - 1 writes initial_lr * lf(e - 1),
 * which is what epoch e trains with. The epoch in which the warmup ends keeps
 * the warmup's final value initial_lr * lf(epoch) until its end. A resumed run
 * restores the lr saved after that scheduler.step(), so all of this is a pure
 * function of (epoch, ni), the same with or without --resume. */
#include <math.h>

#include "optim/optim.h"
#include "tensor/error.h"

/* np.interp(x, [0, x1], [a, b]) for x1 > 0, with numpy's arithmetic:
 * the end points exactly, slope * x + a in between. */
static double interp(long x, long x1, double a, double b) {
    if (x <= 0) return a;
    if (x >= x1) return b;
    return (b - a) / (double)x1 * (double)x + a;
}

int schedule_init(LrSchedule *s, const OptimHyp *hyp, LrShape shape, int epochs, long nb) {
    if (epochs < 1) return gelan_error("schedule: %d epochs (need at least 1)", epochs);
    if (nb < 1) return gelan_error("schedule: %ld iterations per epoch (need at least 1)", nb);
    if ((unsigned)shape > LR_FIXED) return gelan_error("schedule: unknown LR shape %d", shape);
    if (!(hyp->warmup_epochs >= 0)) return gelan_error("schedule: warmup_epochs %g is negative", hyp->warmup_epochs);
    s->hyp = *hyp;
    s->shape = shape;
    s->epochs = epochs;
    s->nb = nb;
    /* max(round(warmup_epochs * nb), 100); Python's round halves to even, as rint */
    double w = rint(hyp->warmup_epochs * (double)nb);
    s->nw = w > 100 ? (long)w : 100;
    return 0;
}

double schedule_lf(const LrSchedule *s, int epoch) {
    const double x = epoch, lrf = s->hyp.lrf, n = s->epochs;
    switch (s->shape) {
        case LR_COSINE: /* one_cycle(1, lrf, epochs) */
            return ((1 - cos(x * M_PI / n)) / 2) * (lrf - 1.0) + 1.0;
        case LR_FLAT_COSINE: { /* one_flat_cycle(1, lrf, epochs): flat for the first epochs // 2 */
            const int half = s->epochs / 2;
            if (epoch <= half) return 1.0;
            return ((1 - cos((x - half) * M_PI / half)) / 2) * (lrf - 1.0) + 1.0;
        }
        case LR_FIXED:
            return 1.0;
        case LR_LINEAR:
        default:
            return (1 - x / n) * (1.0 - lrf) + lrf;
    }
}

static double lr_at(const LrSchedule *s, ParamGroup g, int epoch, long i, double initial_lr) {
    const long ni = i + s->nb * (long)epoch;
    if (ni <= s->nw)
        return interp(ni, s->nw, g == PARAM_BIAS ? s->hyp.warmup_bias_lr : 0.0, initial_lr * schedule_lf(s, epoch));
    if (s->nb * (long)epoch <= s->nw) return initial_lr * schedule_lf(s, epoch); /* warmup ended this epoch */
    return initial_lr * schedule_lf(s, epoch > 0 ? epoch - 1 : 0);
}

double schedule_lr(const LrSchedule *s, ParamGroup g, int epoch, long i) { return lr_at(s, g, epoch, i, s->hyp.lr0); }

double schedule_momentum(const LrSchedule *s, int epoch, long i) {
    const long ni = i + s->nb * (long)epoch;
    if (ni > s->nw) return s->hyp.momentum;
    return interp(ni, s->nw, s->hyp.warmup_momentum, s->hyp.momentum);
}

void schedule_apply(const LrSchedule *s, Optimizer *o, int epoch, long i) {
    for (int g = 0; g < PARAM_GROUP_COUNT; g++) {
        o->group[g].lr = lr_at(s, (ParamGroup)g, epoch, i, o->group[g].initial_lr);
        if (o->cfg.kind == OPTIM_SGD) o->group[g].momentum = schedule_momentum(s, epoch, i);
    }
}
