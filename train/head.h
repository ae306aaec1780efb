/* The raw train-mode maps of one detection head, read in place.
 *
 * A head has nl level maps [N, C, H_k, W_k] with C = 4*reg_max + nc: the box
 * logits first (channel side*reg_max + bin, sides l, t, r, b), then the class
 * logits. Anchors are numbered level by level, row-major inside a level, as
 * make_anchors: anchor a of level k sits at position p = a - first[k], its
 * centre is (x + 0.5, y + 0.5) grid cells and its stride strides[k]. */
#ifndef GELAN_HEAD_H
#define GELAN_HEAD_H

#include <stddef.h>

#define HEAD_MAX_LEVELS 8
#define HEAD_MAX_BINS 64

typedef struct {
    int N, C, nc, reg_max, nl, A;
    const float *map[HEAD_MAX_LEVELS]; /* level k: [N, C, first[k+1] - first[k]] */
    int first[HEAD_MAX_LEVELS + 1];
    const float *anchors; /* [A, 2] centres, grid units */
    const float *stride;  /* [A] */
} HeadView;

static inline int head_level(const HeadView *v, int a) {
    int k = 0;
    while (a >= v->first[k + 1]) k++;
    return k;
}

/* Offset in v->map[head_level(v, a)] of channel c of image n at anchor a. */
static inline size_t head_offset(const HeadView *v, int n, int a, int c) {
    int k = head_level(v, a), hw = v->first[k + 1] - v->first[k];
    return ((size_t)n * v->C + c) * hw + (a - v->first[k]);
}

/* Class logit c of image n at anchor a. */
static inline float head_class_logit(const HeadView *v, int n, int a, int c) {
    return v->map[head_level(v, a)][head_offset(v, n, a, 4 * v->reg_max + c)];
}

/* The DFL of anchor a of image n: per side the softmax over the reg_max bins
 * prob[side][bin], its expectation dist[side] = sum_j j prob_j (a distance in
 * grid cells) and the log-sum-exp of the logits lse[side]. */
void head_dfl(const HeadView *v, int n, int a, double prob[4][HEAD_MAX_BINS], double dist[4], double lse[4]);

/* bbox_decode: the predicted box, xyxy in grid units: anchor -/+ the distances. */
void head_box(const HeadView *v, int a, const double dist[4], float box[4]);

#endif
