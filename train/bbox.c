#include "train/bbox.h"

#include <math.h>

#define FOUR_OVER_PI2 0.40528473456935108578 /* 4 / pi^2 */

void bbox_xywh_to_xyxy(const float xywh[4], float xyxy[4]) {
    float hw = xywh[2] / 2, hh = xywh[3] / 2;
    xyxy[0] = xywh[0] - hw;
    xyxy[1] = xywh[1] - hh;
    xyxy[2] = xywh[0] + hw;
    xyxy[3] = xywh[1] + hh;
}

bool bbox_contains(const float box[4], float x, float y, float eps) {
    float d = fminf(fminf(x - box[0], y - box[1]), fminf(box[2] - x, box[3] - y));
    return d > eps;
}

double bbox_aspect(const float b[4]) { return atan(((double)b[2] - b[0]) / ((double)b[3] - b[1] + BBOX_EPS)); }

/* Everything CIoU needs, shared by the value and the gradient. */
typedef struct {
    double w1, h1, w2, h2; /* h with eps, as bbox_iou */
    double iw, ih;         /* intersection sides before clamp(0) */
    double inter, uni, iou;
    double cw, ch, c2;     /* enclosing box */
    double dx, dy, rho2;   /* centre offsets x2 (b - a), squared distance */
    double dasp, v, alpha; /* aspect difference atan(b) - atan(a), v, alpha */
    double ciou;
} Ciou;

static void ciou_eval(const float a[4], const float b[4], double asp_a, double asp_b, Ciou *c) {
    c->w1 = (double)a[2] - a[0];
    c->h1 = (double)a[3] - a[1] + BBOX_EPS;
    c->w2 = (double)b[2] - b[0];
    c->h2 = (double)b[3] - b[1] + BBOX_EPS;
    c->iw = fmin(a[2], b[2]) - fmax(a[0], b[0]);
    c->ih = fmin(a[3], b[3]) - fmax(a[1], b[1]);
    c->inter = fmax(c->iw, 0) * fmax(c->ih, 0);
    c->uni = c->w1 * c->h1 + c->w2 * c->h2 - c->inter + BBOX_EPS;
    c->iou = c->inter / c->uni;
    c->cw = fmax(a[2], b[2]) - fmin(a[0], b[0]);
    c->ch = fmax(a[3], b[3]) - fmin(a[1], b[1]);
    c->c2 = c->cw * c->cw + c->ch * c->ch + BBOX_EPS;
    c->dx = (double)b[0] + b[2] - a[0] - a[2];
    c->dy = (double)b[1] + b[3] - a[1] - a[3];
    c->rho2 = (c->dx * c->dx + c->dy * c->dy) / 4;
    c->dasp = asp_b - asp_a;
    c->v = FOUR_OVER_PI2 * c->dasp * c->dasp;
    c->alpha = c->v / (c->v - c->iou + (1 + BBOX_EPS));
    c->ciou = c->iou - (c->rho2 / c->c2 + c->v * c->alpha);
}

double bbox_ciou_aspect(const float a[4], const float b[4], double aspect_a, double aspect_b) {
    Ciou c;
    ciou_eval(a, b, aspect_a, aspect_b, &c);
    return c.ciou;
}

double bbox_iou(const float a[4], const float b[4]) {
    Ciou c;
    ciou_eval(a, b, 0, 0, &c);
    return c.iou;
}

double bbox_ciou(const float a[4], const float b[4]) { return bbox_ciou_aspect(a, b, bbox_aspect(a), bbox_aspect(b)); }

/* d max(p, q) / dp as torch.maximum: 1 if p > q, 1/2 on a tie, else 0 (min: mirror). */
static double dmax(double p, double q) { return p > q ? 1.0 : p == q ? 0.5 : 0.0; }
static double dmin(double p, double q) { return p < q ? 1.0 : p == q ? 0.5 : 0.0; }

double bbox_ciou_grad(const float a[4], const float b[4], double g[4]) {
    Ciou c;
    ciou_eval(a, b, bbox_aspect(a), bbox_aspect(b), &c);

    /* intersection = clamp(iw,0) * clamp(ih,0); iw = min(ax2,bx2) - max(ax1,bx1) */
    double diw_pass = c.iw >= 0 ? fmax(c.ih, 0) : 0.0; /* d inter / d iw */
    double dih_pass = c.ih >= 0 ? fmax(c.iw, 0) : 0.0; /* d inter / d ih */
    double dinter[4] = {-dmax(a[0], b[0]) * diw_pass, -dmax(a[1], b[1]) * dih_pass, dmin(a[2], b[2]) * diw_pass,
                        dmin(a[3], b[3]) * dih_pass};
    /* area1 = w1 * h1 with w1 = x2 - x1, h1 = y2 - y1 + eps */
    double darea[4] = {-c.h1, -c.w1, c.h1, c.w1};
    /* enclosing box: cw = max(ax2,bx2) - min(ax1,bx1), c2 = cw^2 + ch^2 + eps */
    double dc2[4] = {-2 * c.cw * dmin(a[0], b[0]), -2 * c.ch * dmin(a[1], b[1]), 2 * c.cw * dmax(a[2], b[2]),
                     2 * c.ch * dmax(a[3], b[3])};
    /* rho2 = (dx^2 + dy^2) / 4 with dx = bx1 + bx2 - ax1 - ax2: d rho2 / d ax1 = d / d ax2 = -dx / 2 */
    double drho2[4] = {-c.dx / 2, -c.dy / 2, -c.dx / 2, -c.dy / 2};
    /* v = 4/pi^2 (atan(w2/h2) - atan(w1/h1))^2: d v / d w1 = -8/pi^2 dasp h1 / (w1^2 + h1^2),
       d v / d h1 = 8/pi^2 dasp w1 / (w1^2 + h1^2); w1 = x2 - x1, h1 = y2 - y1 (+eps) */
    double r = 2 * FOUR_OVER_PI2 * c.dasp / (c.w1 * c.w1 + c.h1 * c.h1);
    double dv_dw = -r * c.h1, dv_dh = r * c.w1;
    double dv[4] = {-dv_dw, -dv_dh, dv_dw, dv_dh};

    for (int i = 0; i < 4; i++) {
        /* iou = inter / union, union = area1 + area2 - inter + eps:
           d iou = (d inter (1 + iou) - iou d area1) / union */
        double diou = (dinter[i] * (1 + c.iou) - c.iou * darea[i]) / c.uni;
        /* d (rho2 / c2) = d rho2 / c2 - rho2 d c2 / c2^2 */
        double dpen = drho2[i] / c.c2 - c.rho2 * dc2[i] / (c.c2 * c.c2);
        /* CIoU = iou - rho2/c2 - alpha v, alpha constant (no_grad) */
        g[i] = diou - dpen - c.alpha * dv[i];
    }
    return c.ciou;
}
