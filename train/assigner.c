#include "train/assigner.h"

#include <math.h>
#include <string.h>

#include "tensor/error.h"
#include "tensor/pool.h"
#include "train/bbox.h"

#define TAL_EPS 1e-9 /* the assigner's eps: candidate test and score normalisation */

typedef struct {
    const HeadView *head;
    const float *gt;
    const unsigned char *valid;
    int M;
    const TalParams *p;
    TalResult *out;
    /* per-image scratch: [N*A] / [N*A*4] / [N*M] / [N*topk] */
    unsigned char *decoded;
    float *pred;
    int *claims, *owner;
    double *pred_aspect, *metric, *overlap, *gt_aspect, *pos_metric, *pos_overlap;
    int *top_idx;
    double *top_metric;
} AssignJob;

/* Per-image view of the scratch. */
typedef struct {
    const AssignJob *J;
    int n;
    unsigned char *decoded;
    float *pred; /* predicted boxes in pixels, decoded on first use */
    double *pred_aspect;
} Image;

static const float *pred_box(Image *im, int a) {
    float *b = im->pred + 4 * (size_t)a;
    if (!im->decoded[a]) {
        const HeadView *v = im->J->head;
        double prob[4][HEAD_MAX_BINS], dist[4], lse[4];
        head_dfl(v, im->n, a, prob, dist, lse);
        head_box(v, a, dist, b);
        for (int c = 0; c < 4; c++) b[c] *= v->stride[a]; /* (pred_bboxes * stride_tensor) */
        im->pred_aspect[a] = bbox_aspect(b);
        im->decoded[a] = 1;
    }
    return b;
}

/* overlap = max(CIoU(gt, pred), 0), gt as box1 like get_box_metrics */
static double overlap_of(Image *im, const float *gt_row, double gt_aspect, int a) {
    const float *pb = pred_box(im, a);
    double c = bbox_ciou_aspect(gt_row + 1, pb, gt_aspect, im->pred_aspect[a]);
    return c > 0 ? c : 0;
}

/* score^alpha * overlap^beta, score = sigmoid(class logit of the gt's class) */
static double metric_of(const Image *im, int a, const float *gt_row, double overlap) {
    double x = head_class_logit(im->J->head, im->n, a, (int)gt_row[0]);
    double s = 1.0 / (1.0 + exp(-x));
    return pow(s, im->J->p->alpha) * pow(overlap, im->J->p->beta);
}

static void assign_image(AssignJob *J, int n) {
    const HeadView *h = J->head;
    int A = h->A, M = J->M, topk = J->p->topk;
    size_t nA = (size_t)n * A, nM = (size_t)n * M;
    Image im = {J, n, J->decoded + nA, J->pred + 4 * nA, J->pred_aspect + nA};
    const float *gt = J->gt + 5 * nM;
    const unsigned char *valid = J->valid + nM;
    int *claims = J->claims + nA, *owner = J->owner + nA;
    double *metric = J->metric + nA, *overlap = J->overlap + nA;
    double *gasp = J->gt_aspect + nM, *pos_m = J->pos_metric + nM, *pos_o = J->pos_overlap + nM;
    int *top_idx = J->top_idx + (size_t)n * topk;
    double *top_m = J->top_metric + (size_t)n * topk;

    memset(im.decoded, 0, (size_t)A);
    memset(claims, 0, (size_t)A * sizeof *claims);
    for (int j = 0; j < M; j++) gasp[j] = bbox_aspect(gt + 5 * j + 1);

    /* topk candidates per gt: the in-box anchors of largest metric */
    for (int j = 0; j < M; j++) {
        if (!valid[j]) continue;
        const float *g = gt + 5 * j;
        int cnt = 0;
        for (int a = 0; a < A; a++) {
            float st = h->stride[a], ax = h->anchors[2 * a] * st, ay = h->anchors[2 * a + 1] * st;
            if (!bbox_contains(g + 1, ax, ay, (float)TAL_EPS)) continue;
            double ov = overlap_of(&im, g, gasp[j], a);
            if (ov <= 0) continue;
            double m = metric_of(&im, a, g, ov);
            if (!(m > 0)) continue;
            int pos = cnt;
            while (pos > 0 && top_m[pos - 1] < m) pos--; /* after equal metrics: lower index first */
            if (pos >= topk) continue;
            int last = cnt < topk ? cnt : topk - 1;
            for (int i = last; i > pos; i--) top_idx[i] = top_idx[i - 1], top_m[i] = top_m[i - 1];
            top_idx[pos] = a;
            top_m[pos] = m;
            if (cnt < topk) cnt++;
        }
        for (int i = 0; i < cnt; i++) claims[top_idx[i]]++, owner[top_idx[i]] = j;
    }

    /* an anchor claimed by several gts goes to the row of largest overlap among all M rows */
    for (int a = 0; a < A; a++) {
        if (claims[a] == 0) {
            owner[a] = -1;
        } else if (claims[a] > 1) {
            int best = 0;
            double best_ov = -1;
            for (int j = 0; j < M; j++) {
                double ov = overlap_of(&im, gt + 5 * j, gasp[j], a);
                if (ov > best_ov) best_ov = ov, best = j;
            }
            owner[a] = best;
        }
    }

    /* normalisation: per gt the largest metric and overlap over its anchors */
    for (int j = 0; j < M; j++) pos_m[j] = pos_o[j] = 0;
    for (int a = 0; a < A; a++) {
        int j = owner[a];
        if (j < 0) continue;
        const float *g = gt + 5 * j;
        overlap[a] = overlap_of(&im, g, gasp[j], a);
        metric[a] = metric_of(&im, a, g, overlap[a]);
        if (metric[a] > pos_m[j]) pos_m[j] = metric[a];
        if (overlap[a] > pos_o[j]) pos_o[j] = overlap[a];
    }

    TalResult *o = J->out;
    for (int a = 0; a < A; a++) {
        int j = owner[a];
        const float *g = j >= 0 ? gt + 5 * j : M > 0 ? gt : NULL; /* background: row 0 */
        o->fg[nA + a] = j >= 0;
        o->label[nA + a] = g ? (int)g[0] : h->nc;
        for (int c = 0; c < 4; c++) o->box[(nA + a) * 4 + c] = g ? g[1 + c] : 0.0f;
        o->score[nA + a] = j >= 0 ? (float)(metric[a] * pos_o[j] / (pos_m[j] + TAL_EPS)) : 0.0f;
    }
}

static void assign_range(void *ctx, size_t begin, size_t end) {
    for (size_t n = begin; n < end; n++) assign_image(ctx, (int)n);
}

int tal_assign(const HeadView *head, const float *gt, const unsigned char *valid, int M, const TalParams *p,
               Arena *arena, TalResult *out) {
    if (p->topk < 1) return gelan_error("tal_assign: topk must be >= 1, got %d", p->topk);
    if (head->reg_max > HEAD_MAX_BINS)
        return gelan_error("tal_assign: reg_max %d exceeds %d", head->reg_max, HEAD_MAX_BINS);
    size_t NA = (size_t)head->N * head->A, NM = (size_t)head->N * M + 1, NK = (size_t)head->N * p->topk;
    AssignJob J = {.head = head, .gt = gt, .valid = valid, .M = M, .p = p, .out = out};
    J.decoded = arena_alloc(arena, NA);
    J.pred = arena_alloc(arena, NA * 4 * sizeof(float));
    J.claims = arena_alloc(arena, NA * sizeof(int));
    J.owner = arena_alloc(arena, NA * sizeof(int));
    J.pred_aspect = arena_alloc(arena, NA * sizeof(double));
    J.metric = arena_alloc(arena, NA * sizeof(double));
    J.overlap = arena_alloc(arena, NA * sizeof(double));
    J.gt_aspect = arena_alloc(arena, NM * sizeof(double));
    J.pos_metric = arena_alloc(arena, NM * sizeof(double));
    J.pos_overlap = arena_alloc(arena, NM * sizeof(double));
    J.top_idx = arena_alloc(arena, NK * sizeof(int));
    J.top_metric = arena_alloc(arena, NK * sizeof(double));
    if (!J.decoded || !J.pred || !J.claims || !J.owner || !J.pred_aspect || !J.metric || !J.overlap || !J.gt_aspect ||
        !J.pos_metric || !J.pos_overlap || !J.top_idx || !J.top_metric) {
        gelan_error_prefix("tal_assign");
        return -1;
    }
    parallel_for((size_t)head->N, 1, assign_range, &J);
    return 0;
}
