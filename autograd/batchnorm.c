/* 2-D batch normalisation, forward and backward (contract in ops.h).
 *
 * Per channel c, with m = N*H*W values:
 *   training: mean, var = the batch mean and BIASED variance over (N,H,W);
 *             running = (1-momentum)*running + momentum*stat, with var*m/(m-1) (unbiased)
 *             for running_var, as PyTorch does;
 *   eval:     mean, var = the running statistics;
 *   y = gamma * xhat + beta,  xhat = (x - mean) * invstd,  invstd = 1/sqrt(var + eps).
 * Backward (dy -> dx, dgamma, dbeta):
 *   dgamma = sum(dy * xhat), dbeta = sum(dy)
 *   training: dx = gamma*invstd/m * (m*dy - sum(dy) - xhat*sum(dy*xhat))  (mean and var depend on x)
 *   eval:     dx = gamma*invstd * dy                                       (an affine map)
 *
 * The statistics are computed in double with two passes (mean, then squared deviations):
 * a fresh YOLOv9 model has activations around 1e-9 that train-mode BN re-amplifies, and the
 * one-pass E[x^2] - E[x]^2 in float loses everything when |mean| >> std. The work is split
 * over channels on the thread pool; each channel's statistics and gradients belong to one
 * thread, so there is no locking.
 *
 * Synchronised statistics (batchnorm2d_set_sync, data-parallel --sync-bn): the same two passes,
 * each followed by a sum over the processes (per-channel sums and the value count, then the
 * squared deviations from the global mean), so every process normalises with the statistics
 * of the whole global batch; the backward sums sum(dy) and sum(dy * xhat) the same way. */
#include <math.h>

#include "autograd/ops.h"
#include "tensor/error.h"
#include "tensor/pool.h"

typedef struct {
    int N, C, HW;
    bool training;
    bool synced; /* statistics over all processes (the backward syncs too) */
    double m;    /* values per channel the statistics are over (all processes when synced) */
    /* [C] each: the statistics the forward used. The mean is kept as a float pair
     * mean + mean_lo, so that (x - mean) - mean_lo is accurate even when |mean| >> std. */
    float *mean, *mean_lo, *invstd;
} BnSaved;

/* Sum of n floats, and of their deviations, in double (8 independent lanes to vectorise). */
static double sum_f64(const float *p, size_t n) {
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += p[i + j];
    double s = 0;
    for (; i < n; i++) s += p[i];
    for (int j = 0; j < 8; j++) s += acc[j];
    return s;
}

static double sum_sq_dev_f64(const float *p, size_t n, double mean) {
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            double d = p[i + j] - mean;
            acc[j] += d * d;
        }
    double s = 0;
    for (; i < n; i++) s += (p[i] - mean) * (p[i] - mean);
    for (int j = 0; j < 8; j++) s += acc[j];
    return s;
}

/* sum(dy) and sum(dy * ((x - mean) - mean_lo)) */
static void sum_dy_dyxc_f64(const float *dy, const float *x, size_t n, float mean, float mean_lo, double *sdy,
                            double *sdyx) {
    double a[8] = {0}, b[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            a[j] += dy[i + j];
            b[j] += dy[i + j] * (double)((x[i + j] - mean) - mean_lo);
        }
    double s = 0, t = 0;
    for (; i < n; i++) {
        s += dy[i];
        t += dy[i] * (double)((x[i] - mean) - mean_lo);
    }
    for (int j = 0; j < 8; j++) s += a[j], t += b[j];
    *sdy += s;
    *sdyx += t;
}

typedef struct {
    BnSaved *s;
    const float *x, *gamma, *beta;
    float *y;
    float *run_mean, *run_var; /* updated in training when not NULL */
    float eps, momentum;
    /* synced: per-channel partial sums of this process ([C] or [2C]), then the global
       mean and biased variance the forward normalises with */
    double *acc;
    const double *mu, *var;
    /* backward */
    const float *dy;
    float *dx, *dgamma, *dbeta;
} BnCtx;

/* ---- synchronised statistics ------------------------------------------------ */

static BnSyncFn sync_fn;
static void *sync_ctx;

void batchnorm2d_set_sync(BnSyncFn fn, void *ctx) {
    sync_fn = fn;
    sync_ctx = ctx;
}

static void bn_sum_channels(void *vctx, size_t c0, size_t c1) {
    const BnCtx *k = vctx;
    const size_t HW = (size_t)k->s->HW, CHW = (size_t)k->s->C * HW;
    for (size_t c = c0; c < c1; c++) {
        double sum = 0;
        for (int n = 0; n < k->s->N; n++) sum += sum_f64(k->x + c * HW + n * CHW, HW);
        k->acc[c] = sum;
    }
}

static void bn_sq_dev_channels(void *vctx, size_t c0, size_t c1) {
    const BnCtx *k = vctx;
    const size_t HW = (size_t)k->s->HW, CHW = (size_t)k->s->C * HW;
    for (size_t c = c0; c < c1; c++) {
        double sq = 0;
        for (int n = 0; n < k->s->N; n++) sq += sum_sq_dev_f64(k->x + c * HW + n * CHW, HW, k->mu[c]);
        k->acc[c] = sq;
    }
}

static size_t channel_chunk(const BnSaved *s);

static int sync_failed(const char *what) {
    gelan_error_prefix("batchnorm2d: summing the %s over the processes", what);
    return -1;
}

/* The global mean and biased variance per channel: two passes, each summed over the
 * processes by the hook (the first also sums the value counts). */
static int bn_sync_stats(Tape *t, BnCtx *k) {
    BnSaved *s = k->s;
    const size_t C = (size_t)s->C;
    double *buf = tape_alloc(t, (3 * C + 1) * sizeof(double));
    if (!buf) return -1;
    double *mu = buf + C + 1, *var = mu + C;
    k->acc = buf;
    parallel_for(C, channel_chunk(s), bn_sum_channels, k);
    buf[C] = (double)s->N * s->HW;
    if (sync_fn(sync_ctx, buf, C + 1)) return sync_failed("statistics");
    s->m = buf[C];
    for (size_t c = 0; c < C; c++) mu[c] = buf[c] / s->m;
    k->mu = mu;
    parallel_for(C, channel_chunk(s), bn_sq_dev_channels, k);
    if (sync_fn(sync_ctx, buf, C)) return sync_failed("statistics");
    for (size_t c = 0; c < C; c++) var[c] = buf[c] / s->m;
    k->var = var;
    return 0;
}

static void bn_forward_channels(void *vctx, size_t c0, size_t c1) {
    const BnCtx *k = vctx;
    const BnSaved *s = k->s;
    const size_t HW = (size_t)s->HW, CHW = (size_t)s->C * HW;
    for (size_t c = c0; c < c1; c++) {
        const float *xc = k->x + c * HW;
        float mean, mean_lo = 0, invstd;
        if (s->training) {
            const double m = s->m;
            double mu, var;
            if (k->mu) { /* synced: computed over all processes */
                mu = k->mu[c], var = k->var[c];
            } else {
                double sum = 0, sq = 0;
                for (int n = 0; n < s->N; n++) sum += sum_f64(xc + n * CHW, HW);
                mu = sum / m;
                for (int n = 0; n < s->N; n++) sq += sum_sq_dev_f64(xc + n * CHW, HW, mu);
                var = sq / m;
            }
            mean = (float)mu;
            mean_lo = (float)(mu - mean);
            invstd = (float)(1.0 / sqrt(var + k->eps));
            if (k->run_mean) {
                k->run_mean[c] = (float)((1.0 - k->momentum) * k->run_mean[c] + k->momentum * mu);
                k->run_var[c] = (float)((1.0 - k->momentum) * k->run_var[c] + k->momentum * var * m / (m - 1));
            }
        } else {
            mean = k->run_mean[c];
            invstd = (float)(1.0 / sqrt((double)k->run_var[c] + k->eps));
        }
        s->mean[c] = mean;
        s->mean_lo[c] = mean_lo;
        s->invstd[c] = invstd;
        const float scale = k->gamma[c] * invstd, shift = k->beta[c];
        for (int n = 0; n < s->N; n++) {
            const float *xi = xc + n * CHW;
            float *yi = k->y + c * HW + n * CHW;
            for (size_t i = 0; i < HW; i++) yi[i] = ((xi[i] - mean) - mean_lo) * scale + shift;
        }
    }
}

/* Per channel: sum(dy) and sum(dy * (x - mean)) of this process, and dgamma, dbeta. */
static void bn_backward_sums(const BnCtx *k, size_t c, double *sdy, double *sdyx) {
    const BnSaved *s = k->s;
    const size_t HW = (size_t)s->HW, CHW = (size_t)s->C * HW;
    *sdy = 0, *sdyx = 0;
    for (int n = 0; n < s->N; n++)
        sum_dy_dyxc_f64(k->dy + c * HW + n * CHW, k->x + c * HW + n * CHW, HW, s->mean[c], s->mean_lo[c], sdy, sdyx);
    if (k->dgamma) k->dgamma[c] += (float)(*sdyx * s->invstd[c]);
    if (k->dbeta) k->dbeta[c] += (float)*sdy;
}

/* synced, first pass: this process's sums into acc[2c], acc[2c + 1] */
static void bn_backward_sum_channels(void *vctx, size_t c0, size_t c1) {
    const BnCtx *k = vctx;
    for (size_t c = c0; c < c1; c++) bn_backward_sums(k, c, &k->acc[2 * c], &k->acc[2 * c + 1]);
}

/* dx (and, unless synced, the sums first); synced: acc holds the sums over all processes */
static void bn_backward_channels(void *vctx, size_t c0, size_t c1) {
    const BnCtx *k = vctx;
    const BnSaved *s = k->s;
    const size_t HW = (size_t)s->HW, CHW = (size_t)s->C * HW;
    for (size_t c = c0; c < c1; c++) {
        const float mean = s->mean[c], mean_lo = s->mean_lo[c], invstd = s->invstd[c];
        double sdy, sdyx; /* sum(dy), sum(dy * (x - mean)) */
        if (k->acc)
            sdy = k->acc[2 * c], sdyx = k->acc[2 * c + 1];
        else
            bn_backward_sums(k, c, &sdy, &sdyx);
        double sdy_xhat = sdyx * invstd;
        if (!k->dx) continue;
        const float g = k->gamma[c] * invstd;
        if (s->training) {
            /* dx = g * (dy - mean(dy) - xhat * mean(dy*xhat)) with xhat = (x - mean)*invstd */
            const double m = s->m;
            const float a = (float)(sdy / m), bcoef = (float)(sdy_xhat / m * invstd);
            for (int n = 0; n < s->N; n++) {
                const float *dyi = k->dy + c * HW + n * CHW, *xi = k->x + c * HW + n * CHW;
                float *dxi = k->dx + c * HW + n * CHW;
                for (size_t i = 0; i < HW; i++) dxi[i] += g * (dyi[i] - a - ((xi[i] - mean) - mean_lo) * bcoef);
            }
        } else {
            for (int n = 0; n < s->N; n++) {
                const float *dyi = k->dy + c * HW + n * CHW;
                float *dxi = k->dx + c * HW + n * CHW;
                for (size_t i = 0; i < HW; i++) dxi[i] += g * dyi[i];
            }
        }
    }
}

/* Channels per pool piece: at least ~16k values each. */
static size_t channel_chunk(const BnSaved *s) {
    size_t per = (size_t)s->N * s->HW;
    return per >= 16384 ? 1 : 16384 / (per ? per : 1);
}

static int batchnorm2d_backward(Tape *t, TapeNode *node) {
    BnSaved *s = node->saved;
    Tensor *x = node->in[0], *gamma = node->in[1], *beta = node->in[2];
    BnCtx k = {.s = s, .x = x->data, .gamma = gamma->data, .dy = node->out->grad};
    k.dx = tape_grad_of(t, x);
    k.dgamma = tape_grad_of(t, gamma);
    k.dbeta = tape_grad_of(t, beta);
    if ((x->requires_grad && !k.dx) || (gamma->requires_grad && !k.dgamma) || (beta->requires_grad && !k.dbeta))
        return -1;
    if (s->synced) {
        /* dgamma and dbeta stay this process's share (the gradient allreduce adds them up);
           dx needs the sums over the whole batch */
        if (!(k.acc = tape_alloc(t, 2 * (size_t)s->C * sizeof(double)))) return -1;
        parallel_for((size_t)s->C, channel_chunk(s), bn_backward_sum_channels, &k);
        if (!sync_fn) return gelan_error("batchnorm2d: synced forward, but the sync hook was removed before backward");
        if (sync_fn(sync_ctx, k.acc, 2 * (size_t)s->C)) return sync_failed("gradient sums");
    }
    parallel_for((size_t)s->C, channel_chunk(s), bn_backward_channels, &k);
    return 0;
}

/* A per-channel vector (gamma, beta, running stats) must have C elements. */
static int check_vec(const char *what, const Tensor *v, const Tensor *x) {
    char sv[64], sx[64];
    if (v->numel != (size_t)x->shape[1])
        return gelan_error("batchnorm2d: %s has %zu elements, input has %d channels (%s %s, input %s)", what, v->numel,
                           x->shape[1], what, tensor_shape_str(v, sv, sizeof sv), tensor_shape_str(x, sx, sizeof sx));
    return 0;
}

static int bn_check(const Tensor *x, const Tensor *gamma, const Tensor *beta, const Tensor *running_mean,
                    const Tensor *running_var, float eps, float momentum, bool training) {
    char sx[64];
    if (!x || !gamma || !beta) return gelan_error("batchnorm2d: %s is NULL", !x ? "input" : !gamma ? "gamma" : "beta");
    tensor_shape_str(x, sx, sizeof sx);
    if (x->ndim != 4) return gelan_error("batchnorm2d: input must be 4-D [N,C,H,W], got %s", sx);
    if (!(eps >= 0)) return gelan_error("batchnorm2d: eps must be >= 0, got %g", eps);
    if (!(momentum >= 0 && momentum <= 1))
        return gelan_error("batchnorm2d: momentum must be in [0,1], got %g", momentum);
    if (check_vec("gamma", gamma, x) || check_vec("beta", beta, x)) return -1;
    if (!running_mean != !running_var)
        return gelan_error("batchnorm2d: running_mean and running_var must both be given or both be NULL");
    if (running_mean && (check_vec("running_mean", running_mean, x) || check_vec("running_var", running_var, x)))
        return -1;
    if (!training && !running_mean)
        return gelan_error("batchnorm2d: eval mode needs running_mean and running_var (input %s)", sx);
    if (training && (size_t)x->shape[0] * x->shape[2] * x->shape[3] < 2)
        return gelan_error("batchnorm2d: training needs more than one value per channel, got input %s", sx);
    return 0;
}

Tensor *op_batchnorm2d(Tape *t, Tensor *x, Tensor *gamma, Tensor *beta, Tensor *running_mean, Tensor *running_var,
                       float eps, float momentum, bool training) {
    if (bn_check(x, gamma, beta, running_mean, running_var, eps, momentum, training) != 0) return NULL;
    Tensor *y = tape_tensor(t, 4, x->shape);
    if (!y) return NULL;
    Tensor *in[3] = {x, gamma, beta};
    /* the per-channel statistics live in the node when recording (backward needs them) */
    BnSaved tmp, *s = &tmp;
    if (tape_wants_grad(t, in, 3) &&
        !tape_record(t, "batchnorm2d", y, in, 3, batchnorm2d_backward, sizeof *s, (void **)&s))
        return NULL;
    *s = (BnSaved){.N = x->shape[0],
                   .C = x->shape[1],
                   .HW = x->shape[2] * x->shape[3],
                   .training = training,
                   .synced = training && sync_fn};
    s->m = (double)s->N * s->HW;
    s->mean = tape_alloc(t, 3 * (size_t)s->C * sizeof(float));
    if (!s->mean) return NULL;
    s->mean_lo = s->mean + s->C;
    s->invstd = s->mean_lo + s->C;

    BnCtx k = {.s = s,
               .x = x->data,
               .gamma = gamma->data,
               .beta = beta->data,
               .y = y->data,
               .run_mean = running_mean ? running_mean->data : NULL,
               .run_var = running_var ? running_var->data : NULL,
               .eps = eps,
               .momentum = momentum};
    if (s->synced && bn_sync_stats(t, &k)) return NULL;
    parallel_for((size_t)s->C, channel_chunk(s), bn_forward_channels, &k);
    return y;
}
