#include "train/loss.h"

#include <math.h>
#include <string.h>

#include "tensor/error.h"
#include "tensor/pool.h"
#include "train/assigner.h"
#include "train/bbox.h"
#include "train/head.h"

#define LOSS_MAX_HEADS 8

void loss_hyp_default(LossHyp *h) {
    h->box = 7.5f;
    h->cls = 0.5f;
    h->dfl = 1.5f;
    h->topk = 10;
    h->alpha = 0.5f;
    h->beta = 6.0f;
    h->reg_max = 16;
}

typedef struct {
    HeadView view;
    float weight; /* head weight (0.25 for auxiliary heads) */
    double tss;   /* max(sum of target scores, 1) */
    TalResult asg;
} HeadState;

/* Everything the backward needs; lives in the tape's arena. */
typedef struct {
    int n_heads, nl, N, A, nc, R; /* R = reg_max bins */
    double batch;                 /* the total's multiplier: N, or the whole batch of a shard */
    LossHyp hyp;
    float *anchors; /* [A, 2] centres in grid units */
    float *stride;  /* [A] */
    HeadState *heads;
} LossState;

/* ---- inputs ------------------------------------------------------------- */

static int setup_heads(Tape *t, LossState *s, Tensor *const *maps, int n_heads, int nl, const float *head_weights,
                       const float *strides, const LossHyp *hyp, const char *op) {
    if (n_heads < 1 || n_heads > LOSS_MAX_HEADS || nl < 1 || nl > HEAD_MAX_LEVELS)
        return gelan_error("%s: need 1..%d heads of 1..%d levels, got %d heads of %d levels", op, LOSS_MAX_HEADS,
                           HEAD_MAX_LEVELS, n_heads, nl);
    if (!maps || !head_weights || !strides) return gelan_error("%s: maps, head_weights and strides are required", op);
    if (hyp->reg_max < 2 || hyp->reg_max > HEAD_MAX_BINS)
        return gelan_error("%s: reg_max must be in [2, %d], got %d", op, HEAD_MAX_BINS, hyp->reg_max);
    if (hyp->topk < 1) return gelan_error("%s: topk must be >= 1, got %d", op, hyp->topk);
    for (int i = 0; i < n_heads * nl; i++) {
        char sa[64], sb[64], sc[64];
        const Tensor *m = maps[i], *m0 = maps[i % nl];
        if (!m || m->ndim != 4)
            return gelan_error("%s: map %d (head %d, level %d) is not [N,C,H,W]", op, i, i / nl, i % nl);
        if (m->shape[0] != maps[0]->shape[0] || m->shape[1] != maps[0]->shape[1] || m->shape[2] != m0->shape[2] ||
            m->shape[3] != m0->shape[3])
            return gelan_error("%s: map %d (head %d, level %d) has shape %s, expected N and C of %s and H,W of %s", op,
                               i, i / nl, i % nl, tensor_shape_str(m, sa, sizeof sa),
                               tensor_shape_str(maps[0], sb, sizeof sb), tensor_shape_str(m0, sc, sizeof sc));
    }
    int C = maps[0]->shape[1];
    if (C <= 4 * hyp->reg_max)
        return gelan_error("%s: maps have %d channels, need 4*reg_max (%d) + nc with nc >= 1", op, C, 4 * hyp->reg_max);
    for (int k = 0; k < nl; k++)
        if (!(strides[k] > 0)) return gelan_error("%s: stride %d is %g, must be > 0", op, k, (double)strides[k]);

    s->n_heads = n_heads;
    s->nl = nl;
    s->N = maps[0]->shape[0];
    s->R = hyp->reg_max;
    s->nc = C - 4 * hyp->reg_max;
    s->hyp = *hyp;
    int A = 0;
    for (int k = 0; k < nl; k++) A += maps[k]->shape[2] * maps[k]->shape[3];
    s->A = A;

    /* make_anchors: (x + 0.5, y + 0.5) per level, row-major, with the level's stride */
    s->anchors = tape_alloc(t, (size_t)A * 2 * sizeof(float));
    s->stride = tape_alloc(t, (size_t)A * sizeof(float));
    s->heads = tape_alloc(t, (size_t)n_heads * sizeof *s->heads);
    if (!s->anchors || !s->stride || !s->heads) return -1;
    int a = 0;
    for (int k = 0; k < nl; k++)
        for (int y = 0; y < maps[k]->shape[2]; y++)
            for (int x = 0; x < maps[k]->shape[3]; x++, a++) {
                s->anchors[2 * a] = x + 0.5f;
                s->anchors[2 * a + 1] = y + 0.5f;
                s->stride[a] = strides[k];
            }

    for (int h = 0; h < n_heads; h++) {
        HeadState *hs = &s->heads[h];
        memset(hs, 0, sizeof *hs);
        hs->weight = head_weights[h];
        HeadView *v = &hs->view;
        v->N = s->N, v->C = C, v->nc = s->nc, v->reg_max = s->R, v->nl = nl, v->A = A;
        v->anchors = s->anchors, v->stride = s->stride;
        v->first[0] = 0;
        for (int k = 0; k < nl; k++) {
            v->map[k] = maps[h * nl + k]->data;
            v->first[k + 1] = v->first[k] + maps[k]->shape[2] * maps[k]->shape[3];
        }
    }
    return 0;
}

/* Official preprocess: gt [N, M, 5] = (class, x1, y1, x2, y2) in pixels with
 * each image's rows in order and zero padding rows, M = the largest count;
 * valid = mask_gt = (x1 + y1 + x2 + y2 > 0). */
static int preprocess_targets(Tape *t, const LossState *s, const Targets *tg, float img_w, float img_h, float **gt_out,
                              unsigned char **valid_out, int *M_out, const char *op) {
    int N = s->N, n = tg ? tg->n : 0;
    if (n < 0 || (n > 0 && !tg->rows)) return gelan_error("%s: bad targets (n = %d)", op, n);
    int *count = tape_alloc(t, (size_t)N * sizeof(int));
    if (!count) return -1;
    memset(count, 0, (size_t)N * sizeof(int));
    for (int i = 0; i < n; i++) {
        const float *r = tg->rows + 6 * i;
        for (int c = 0; c < 6; c++)
            if (!isfinite(r[c])) return gelan_error("%s: target %d has a non-finite value in column %d", op, i, c);
        if (r[0] < 0 || r[0] >= N || r[0] != floorf(r[0]))
            return gelan_error("%s: target %d has image index %g, the batch has %d images", op, i, (double)r[0], N);
        if (r[1] < 0 || r[1] >= s->nc || r[1] != floorf(r[1]))
            return gelan_error("%s: target %d has class %g, the maps have nc = %d", op, i, (double)r[1], s->nc);
        count[(int)r[0]]++;
    }
    int M = 0;
    for (int b = 0; b < N; b++)
        if (count[b] > M) M = count[b];
    float *gt = tape_alloc(t, ((size_t)N * M * 5 + 1) * sizeof(float));
    unsigned char *valid = tape_alloc(t, (size_t)N * M + 1);
    if (!gt || !valid) return -1;
    memset(gt, 0, (size_t)N * M * 5 * sizeof(float));
    memset(count, 0, (size_t)N * sizeof(int));
    for (int i = 0; i < n; i++) {
        const float *r = tg->rows + 6 * i;
        int b = (int)r[0];
        float *g = gt + ((size_t)b * M + count[b]++) * 5;
        g[0] = r[1];
        float xywh[4] = {r[2] * img_w, r[3] * img_h, r[4] * img_w, r[5] * img_h};
        bbox_xywh_to_xyxy(xywh, g + 1);
    }
    for (size_t j = 0; j < (size_t)N * M; j++) {
        const float *g = gt + 5 * j;
        valid[j] = g[1] + g[2] + g[3] + g[4] > 0;
    }
    *gt_out = gt, *valid_out = valid, *M_out = M;
    return 0;
}

/* ---- per-anchor pieces -------------------------------------------------- */

/* (1 - CIoU) and the DFL term of one foreground anchor (unweighted). With
 * grad (the level maps' gradient buffers, NULL entries skipped) it also adds
 * kb * d(1 - CIoU)/dz + kd * d(dfl)/dz for the anchor's 4*R box logits z. */
static void anchor_box_terms(const LossState *s, const HeadView *v, int n, int a, const float tbox_px[4],
                             float *const *grad, double kb, double kd, double *box, double *dfl) {
    int R = s->R, k = head_level(v, a), hw = v->first[k + 1] - v->first[k];
    size_t z0 = head_offset(v, n, a, 0);
    const float *z = v->map[k] + z0;
    double prob[4][HEAD_MAX_BINS], dist[4], lse[4];
    head_dfl(v, n, a, prob, dist, lse);

    /* dist2bbox in grid units; the target divided by the stride, as the official loss */
    float ax = s->anchors[2 * a], ay = s->anchors[2 * a + 1], st = s->stride[a];
    float pb[4];
    head_box(v, a, dist, pb);
    float tb[4] = {tbox_px[0] / st, tbox_px[1] / st, tbox_px[2] / st, tbox_px[3] / st};
    double dciou[4];
    *box = 1.0 - bbox_ciou_grad(pb, tb, dciou);

    /* bbox2dist: target distances clamped to [0, R - 1 - 0.01]; tl = floor, tr = tl + 1,
       wl = tr - t, wr = 1 - wl (float, as torch) */
    float lim = (float)(R - 1 - 0.01);
    float td[4] = {ax - tb[0], ay - tb[1], tb[2] - ax, tb[3] - ay};
    int tl[4];
    float wl[4], wr[4];
    double d = 0;
    for (int side = 0; side < 4; side++) {
        float tv = fminf(fmaxf(td[side], 0.0f), lim);
        tl[side] = (int)tv;
        wl[side] = (float)(tl[side] + 1) - tv;
        wr[side] = 1.0f - wl[side];
        /* CE(z, i) = logsumexp(z) - z_i */
        double ce_l = lse[side] - z[(size_t)(side * R + tl[side]) * hw];
        double ce_r = lse[side] - z[(size_t)(side * R + tl[side] + 1) * hw];
        d += ce_l * wl[side] + ce_r * wr[side];
    }
    *dfl = d / 4;

    if (!grad || !grad[k]) return;
    float *g = grad[k] + z0;
    /* pred = (ax - d_l, ay - d_t, ax + d_r, ay + d_b) and L = kb (1 - CIoU):
       dL/dd_l = kb dCIoU/dx1, dL/dd_t = kb dCIoU/dy1, dL/dd_r = -kb dCIoU/dx2, dL/dd_b = -kb dCIoU/dy2 */
    double gdist[4] = {kb * dciou[0], kb * dciou[1], -kb * dciou[2], -kb * dciou[3]};
    for (int side = 0; side < 4; side++) {
        double wsum = (double)wl[side] + wr[side];
        for (int j = 0; j < R; j++) {
            double p = prob[side][j];
            /* expectation d = sum_j j p_j through the softmax: dd/dz_j = p_j (j - d) */
            double gj = gdist[side] * p * (j - dist[side]);
            /* DFL (mean over 4 sides): d CE(z, i)/dz_j = p_j - [j == i] */
            double gd = p * wsum - (j == tl[side] ? wl[side] : 0.0) - (j == tl[side] + 1 ? wr[side] : 0.0);
            g[(size_t)(side * R + j) * hw] += (float)(gj + kd / 4 * gd);
        }
    }
}

/* ---- forward passes (parallel over images, fixed-order sums) ------------ */

typedef struct {
    const LossState *s;
    const HeadState *hs;
    double *sum;    /* [N] */
    int *nonfinite; /* [N] first bad channel + 1, or 0 */
} PassJob;

/* sum over the image's class logits of BCE(x, 0) = max(x, 0) + log(1 + exp(-|x|)),
   and a scan of every channel for non-finite values. The logs are summed as the
   log of a product (one log per 512 terms instead of one per term): each factor
   1 + exp(-|x|) lies in (1, 2], so 512 of them cannot overflow a double. */
static void bce0_range(void *ctx, size_t begin, size_t end) {
    PassJob *J = ctx;
    const HeadView *v = &J->hs->view;
    int cls0 = 4 * v->reg_max;
    for (size_t n = begin; n < end; n++) {
        double sum = 0, prod = 1;
        int nprod = 0;
        J->nonfinite[n] = 0;
        for (int k = 0; k < v->nl; k++) {
            int hw = v->first[k + 1] - v->first[k];
            for (int c = 0; c < v->C; c++) {
                const float *x = v->map[k] + (n * v->C + c) * hw;
                int bad = 0;
                if (c < cls0) {
                    for (int p = 0; p < hw; p++) bad |= !isfinite(x[p]);
                } else {
                    for (int p = 0; p < hw; p++) {
                        bad |= !isfinite(x[p]);
                        sum += fmaxf(x[p], 0.0f);
                        prod *= 1.0 + expf(-fabsf(x[p]));
                        if (++nprod == 512) sum += log(prod), prod = 1, nprod = 0;
                    }
                }
                if (bad) J->nonfinite[n] = c + 1;
            }
        }
        J->sum[n] = sum + log(prod);
    }
}

/* box and dfl sums of the image's foreground anchors, weighted by their scores */
typedef struct {
    const LossState *s;
    const HeadState *hs;
    double *box, *dfl, *xt; /* [N]; xt = sum_fg x[label] * score (the -x t part of BCE) */
} FgJob;

static void fg_range(void *ctx, size_t begin, size_t end) {
    FgJob *J = ctx;
    const LossState *s = J->s;
    const HeadView *v = &J->hs->view;
    const TalResult *r = &J->hs->asg;
    for (size_t n = begin; n < end; n++) {
        double box = 0, dfl = 0, xt = 0;
        for (int a = 0; a < s->A; a++) {
            size_t i = n * s->A + a;
            if (!r->fg[i]) continue;
            xt += (double)head_class_logit(v, (int)n, a, r->label[i]) * r->score[i];
            double b, d;
            anchor_box_terms(s, v, (int)n, a, r->box + 4 * i, NULL, 0, 0, &b, &d);
            box += b * r->score[i];
            dfl += d * r->score[i];
        }
        J->box[n] = box, J->dfl[n] = dfl, J->xt[n] = xt;
    }
}

/* ---- backward ------------------------------------------------------------ */

typedef struct {
    const LossState *s;
    float **grad;         /* [n_heads * nl] */
    double *kc, *kb, *kd; /* per head: d total / d (cls_h sum), (box_h sum), (dfl_h sum) */
} BackJob;

static void backward_range(void *ctx, size_t begin, size_t end) {
    BackJob *J = ctx;
    const LossState *s = J->s;
    for (size_t n = begin; n < end; n++)
        for (int h = 0; h < s->n_heads; h++) {
            const HeadState *hs = &s->heads[h];
            const HeadView *v = &hs->view;
            float *const *grad = J->grad + h * s->nl;
            float kc = (float)J->kc[h];
            /* BCE: d/dx [max(x,0) - x t + log(1 + exp(-|x|))] = sigmoid(x) - t; the -t part below */
            for (int k = 0; k < s->nl; k++) {
                if (!grad[k]) continue;
                int hw = v->first[k + 1] - v->first[k];
                for (int c = 0; c < s->nc; c++) {
                    size_t off = (n * v->C + 4 * s->R + c) * hw;
                    const float *x = v->map[k] + off;
                    float *g = grad[k] + off;
                    for (int p = 0; p < hw; p++) g[p] += kc / (1.0f + expf(-x[p]));
                }
            }
            const TalResult *r = &hs->asg;
            for (int a = 0; a < s->A; a++) {
                size_t i = n * s->A + a;
                if (!r->fg[i]) continue;
                int k = head_level(v, a);
                if (grad[k]) grad[k][head_offset(v, (int)n, a, 4 * s->R + r->label[i])] -= kc * r->score[i];
                double b, d;
                anchor_box_terms(s, v, (int)n, a, r->box + 4 * i, grad, J->kb[h] * r->score[i], J->kd[h] * r->score[i],
                                 &b, &d);
            }
        }
}

static int loss_backward(Tape *t, TapeNode *node) {
    const LossState *s = node->saved;
    double up = node->out->grad[0];
    int nm = s->n_heads * s->nl;
    BackJob J = {.s = s};
    J.grad = tape_alloc(t, (size_t)nm * sizeof *J.grad);
    J.kc = tape_alloc(t, (size_t)s->n_heads * 3 * sizeof(double));
    if (!J.grad || !J.kc) return -1;
    J.kb = J.kc + s->n_heads, J.kd = J.kb + s->n_heads;
    for (int i = 0; i < nm; i++) {
        J.grad[i] = tape_grad_of(t, node->in[i]);
        if (node->in[i]->requires_grad && !J.grad[i]) return -1;
    }
    /* total = N (g_box sum_h v_h box_h + g_cls sum_h v_h cls_h + g_dfl sum_h v_h dfl_h), each term / tss_h */
    for (int h = 0; h < s->n_heads; h++) {
        double k = up * s->batch * s->heads[h].weight / s->heads[h].tss;
        J.kc[h] = k * s->hyp.cls, J.kb[h] = k * s->hyp.box, J.kd[h] = k * s->hyp.dfl;
    }
    parallel_for((size_t)s->N, 1, backward_range, &J);
    return 0;
}

/* ---- the op --------------------------------------------------------------- */

static int import_assignment(const LossState *s, const LossAssign *g, HeadState *hs, int h, const char *op) {
    size_t NA = (size_t)s->N * s->A;
    if (g->N != s->N || g->A != s->A || g->nc != s->nc)
        return gelan_error("%s: given assignment %d is N=%d A=%d nc=%d, the maps have N=%d A=%d nc=%d", op, h, g->N,
                           g->A, g->nc, s->N, s->A, s->nc);
    if (!g->target_labels || !g->target_bboxes || !g->target_scores || !g->fg_mask)
        return gelan_error("%s: given assignment %d lacks an array", op, h);
    for (size_t i = 0; i < NA; i++) {
        int fg = g->fg_mask[i] != 0, lab = (int)g->target_labels[i];
        if (fg && (lab < 0 || lab >= s->nc))
            return gelan_error("%s: given assignment %d: anchor %zu is foreground with label %g", op, h, i,
                               (double)g->target_labels[i]);
        for (int c = 0; c < s->nc; c++) {
            float v = g->target_scores[i * s->nc + c];
            if (v != 0 && !(fg && c == lab))
                return gelan_error("%s: given assignment %d: anchor %zu has score %g for class %d (label %d, fg %d)",
                                   op, h, i, (double)v, c, lab, fg);
        }
        hs->asg.fg[i] = (unsigned char)fg;
        hs->asg.label[i] = lab;
        hs->asg.score[i] = fg ? g->target_scores[i * s->nc + lab] : 0.0f;
        memcpy(hs->asg.box + 4 * i, g->target_bboxes + 4 * i, 4 * sizeof(float));
    }
    return 0;
}

static int export_assignment(Tape *t, const LossState *s, const HeadState *hs, LossAssign *o) {
    size_t NA = (size_t)s->N * s->A;
    o->N = s->N, o->A = s->A, o->nc = s->nc;
    o->target_labels = tape_alloc(t, NA * sizeof(float));
    o->target_bboxes = tape_alloc(t, NA * 4 * sizeof(float));
    o->target_scores = tape_alloc(t, NA * s->nc * sizeof(float));
    o->fg_mask = tape_alloc(t, NA * sizeof(float));
    if (!o->target_labels || !o->target_bboxes || !o->target_scores || !o->fg_mask) return -1;
    memset(o->target_scores, 0, NA * s->nc * sizeof(float));
    for (size_t i = 0; i < NA; i++) {
        o->target_labels[i] = (float)hs->asg.label[i];
        o->fg_mask[i] = hs->asg.fg[i];
        memcpy(o->target_bboxes + 4 * i, hs->asg.box + 4 * i, 4 * sizeof(float));
        if (hs->asg.fg[i]) o->target_scores[i * s->nc + hs->asg.label[i]] = hs->asg.score[i];
    }
    return 0;
}

static Tensor *loss_run(Tape *t, Tensor *const *maps, int n_heads, int nl, const float *head_weights,
                        const float *strides, const Targets *targets, const LossAssign *given, const LossHyp *hyp_in,
                        const LossShard *shard, LossItems *items, LossAssign *assign_out, const char *op) {
    LossHyp hyp;
    if (hyp_in)
        hyp = *hyp_in;
    else
        loss_hyp_default(&hyp);
    LossState s;
    memset(&s, 0, sizeof s);
    if (setup_heads(t, &s, maps, n_heads, nl, head_weights, strides, &hyp, op)) return NULL;
    size_t N = (size_t)s.N, NA = N * s.A;
    s.batch = shard ? shard->batch : s.N;
    if (shard && shard->batch < s.N) {
        gelan_error("%s: a shard of %d images cannot belong to a batch of %d", op, s.N, shard->batch);
        return NULL;
    }

    float *gt = NULL;
    unsigned char *valid = NULL;
    int M = 0;
    if (!given && preprocess_targets(t, &s, targets, maps[0]->shape[3] * strides[0], maps[0]->shape[2] * strides[0],
                                     &gt, &valid, &M, op))
        return NULL;

    double *sums = tape_alloc(t, N * 3 * sizeof(double)); /* per-image partial sums, reused per pass */
    int *nonfinite = tape_alloc(t, N * sizeof(int));
    if (!sums || !nonfinite) return NULL;
    TalParams tp = {.topk = hyp.topk, .alpha = hyp.alpha, .beta = hyp.beta};
    /* per head: sum of target scores, and the cls, box, dfl sums before the division by tss */
    double tsum[LOSS_MAX_HEADS], raw[LOSS_MAX_HEADS][3];

    for (int h = 0; h < n_heads; h++) {
        HeadState *hs = &s.heads[h];
        PassJob P = {.s = &s, .hs = hs, .sum = sums, .nonfinite = nonfinite};
        parallel_for(N, 1, bce0_range, &P);
        double bce0 = 0;
        for (size_t n = 0; n < N; n++) {
            if (nonfinite[n]) {
                gelan_error("%s: map of head %d, image %zu, channel %d has a non-finite value", op, h, n,
                            nonfinite[n] - 1);
                return NULL;
            }
            bce0 += sums[n];
        }

        TalResult *r = &hs->asg;
        r->fg = tape_alloc(t, NA);
        r->label = tape_alloc(t, NA * sizeof(int));
        r->box = tape_alloc(t, NA * 4 * sizeof(float));
        r->score = tape_alloc(t, NA * sizeof(float));
        if (!r->fg || !r->label || !r->box || !r->score) return NULL;
        if (given) {
            if (import_assignment(&s, &given[h], hs, h, op)) return NULL;
        } else {
            if (tal_assign(&hs->view, gt, valid, M, &tp, &t->arena, r)) return NULL;
        }

        tsum[h] = 0;
        for (size_t i = 0; i < NA; i++) tsum[h] += r->score[i];

        FgJob F = {.s = &s, .hs = hs, .box = sums, .dfl = sums + N, .xt = sums + 2 * N};
        parallel_for(N, 1, fg_range, &F);
        double box = 0, dfl = 0, xt = 0;
        for (size_t n = 0; n < N; n++) box += F.box[n], dfl += F.dfl[n], xt += F.xt[n];
        /* BCE(x, t) = BCE(x, 0) - x t */
        raw[h][0] = bce0 - xt, raw[h][1] = box, raw[h][2] = dfl;
    }
    /* a shard is normalised by the target scores of the whole batch */
    if (shard && shard->reduce_tss && shard->reduce_tss(shard->ctx, tsum, n_heads)) {
        gelan_error_prefix("%s: summing the target scores of the batch", op);
        return NULL;
    }
    double box_sum = 0, cls_sum = 0, dfl_sum = 0;
    for (int h = 0; h < n_heads; h++) {
        HeadState *hs = &s.heads[h];
        hs->tss = tsum[h] > 1 ? tsum[h] : 1; /* official max(target_scores.sum(), 1) */
        cls_sum += hs->weight * raw[h][0] / hs->tss;
        box_sum += hs->weight * raw[h][1] / hs->tss;
        dfl_sum += hs->weight * raw[h][2] / hs->tss;
    }

    LossItems it = {
        .box = (float)(hyp.box * box_sum), .cls = (float)(hyp.cls * cls_sum), .dfl = (float)(hyp.dfl * dfl_sum)};
    double total = (hyp.box * box_sum + hyp.cls * cls_sum + hyp.dfl * dfl_sum) * s.batch;
    it.total = (float)total;
    if (items) *items = it;
    if (assign_out)
        for (int h = 0; h < n_heads; h++)
            if (export_assignment(t, &s, &s.heads[h], &assign_out[h])) return NULL;

    int one = 1;
    Tensor *out = tape_tensor(t, 1, &one);
    if (!out) return NULL;
    out->data[0] = it.total;
    void *saved = NULL;
    if (tape_record(t, op, out, maps, n_heads * nl, loss_backward, sizeof s, &saved)) {
        if (!saved) return NULL;
        memcpy(saved, &s, sizeof s);
    } else if (tape_wants_grad(t, maps, n_heads * nl)) {
        return NULL; /* recording failed: out of memory */
    }
    return out;
}

Tensor *yolo_loss(Tape *t, Tensor *const *maps, int n_heads, int nl, const float *head_weights, const float *strides,
                  const Targets *targets, const LossHyp *hyp, LossItems *items, LossAssign *assign) {
    return loss_run(t, maps, n_heads, nl, head_weights, strides, targets, NULL, hyp, NULL, items, assign, "yolo_loss");
}

Tensor *yolo_loss_shard(Tape *t, Tensor *const *maps, int n_heads, int nl, const float *head_weights,
                        const float *strides, const Targets *targets, const LossHyp *hyp, const LossShard *shard,
                        LossItems *items) {
    return loss_run(t, maps, n_heads, nl, head_weights, strides, targets, NULL, hyp, shard, items, NULL,
                    "yolo_loss_shard");
}

Tensor *yolo_loss_assigned(Tape *t, Tensor *const *maps, int n_heads, int nl, const float *head_weights,
                           const float *strides, const LossAssign *given, const LossHyp *hyp, LossItems *items) {
    if (!given) {
        gelan_error("yolo_loss_assigned: no assignment given");
        return NULL;
    }
    return loss_run(t, maps, n_heads, nl, head_weights, strides, NULL, given, hyp, NULL, items, NULL,
                    "yolo_loss_assigned");
}
