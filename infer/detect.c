/* The detection head's eval decode (DFL), NMS and letterbox, each following
 * the official YOLOv9 code (models/yolo.py DDetect, utils/general.py
 * non_max_suppression and scale_boxes, utils/augmentations.py letterbox). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "infer/infer.h"
#include "infer/ops.h"
#include "tensor/pool.h"

/* ---- DFL decode ----------------------------------------------------------------- */
/* Works on rows of up to CHUNK anchors of one level: every channel of a map is
 * a contiguous row over the anchors, so the softmax, the expectation and the
 * sigmoid are vector loops (with the kernel table's exp). */
#define CHUNK 256

typedef struct {
    const InferKernels *kern;
    const Map *levels;
    int nl, nc, reg_max, anchors, chunks_per_img;
    const int *level_chunk0; /* first chunk of each level */
    const float *strides;
    float *pred;
} DetectJob;

static void detect_chunk(const DetectJob *J, int img, int l, int a0, int n) {
    const Map *m = &J->levels[l];
    int R = J->reg_max, hw = m->h * m->w, base = 0;
    for (int i = 0; i < l; i++) base += J->levels[i].h * J->levels[i].w;
    const float *src = m->p + img * m->bstride + a0;
    float *dst = J->pred + (size_t)img * (4 + J->nc) * J->anchors + base + a0;
    float dist[4][CHUNK], mx[CHUNK], sum[CHUNK], e[CHUNK];
    for (int side = 0; side < 4; side++) {
        const float *logit = src + (size_t)side * R * hw;
        for (int j = 0; j < n; j++) mx[j] = logit[j], sum[j] = 0.f, dist[side][j] = 0.f;
        for (int b = 1; b < R; b++)
            for (int j = 0; j < n; j++) mx[j] = logit[(size_t)b * hw + j] > mx[j] ? logit[(size_t)b * hw + j] : mx[j];
        for (int b = 0; b < R; b++) { /* softmax over the bins, expectation with weights 0..R-1 */
            for (int j = 0; j < n; j++) e[j] = logit[(size_t)b * hw + j] - mx[j];
            J->kern->expv(e, (size_t)n);
            for (int j = 0; j < n; j++) sum[j] += e[j], dist[side][j] += (float)b * e[j];
        }
        for (int j = 0; j < n; j++) dist[side][j] /= sum[j];
    }
    /* anchors are cell centres (x+0.5, y+0.5) in grid units, row-major */
    float s = J->strides[l];
    size_t A = (size_t)J->anchors;
    for (int j = 0; j < n; j++) {
        int pix = a0 + j;
        float ax = (float)(pix % m->w) + 0.5f, ay = (float)(pix / m->w) + 0.5f;
        float x1 = ax - dist[0][j], y1 = ay - dist[1][j], x2 = ax + dist[2][j], y2 = ay + dist[3][j];
        dst[j] = (x1 + x2) / 2 * s;
        dst[A + j] = (y1 + y2) / 2 * s;
        dst[2 * A + j] = (x2 - x1) * s;
        dst[3 * A + j] = (y2 - y1) * s;
    }
    for (int c = 0; c < J->nc; c++) { /* sigmoid = 1 / (1 + exp(-z)) */
        const float *z = src + (size_t)(4 * R + c) * hw;
        float *out = dst + (4 + c) * A;
        for (int j = 0; j < n; j++) e[j] = -z[j];
        J->kern->expv(e, (size_t)n);
        for (int j = 0; j < n; j++) out[j] = 1.f / (1.f + e[j]);
    }
}

static void detect_tasks(void *ctx, size_t begin, size_t end) {
    const DetectJob *J = ctx;
    for (size_t t = begin; t < end; t++) {
        int img = (int)(t / J->chunks_per_img), c = (int)(t % J->chunks_per_img), l = 0;
        while (l + 1 < J->nl && c >= J->level_chunk0[l + 1]) l++;
        int a0 = (c - J->level_chunk0[l]) * CHUNK, hw = J->levels[l].h * J->levels[l].w;
        detect_chunk(J, img, l, a0, hw - a0 < CHUNK ? hw - a0 : CHUNK);
    }
}

void detect_run(const InferKernels *kern, const Map *levels, int nl, int nc, int reg_max, const float *strides,
                float *pred) {
    int anchors = 0, chunks = 0, chunk0[64];
    for (int l = 0; l < nl; l++) {
        int hw = levels[l].h * levels[l].w;
        chunk0[l] = chunks;
        chunks += (hw + CHUNK - 1) / CHUNK;
        anchors += hw;
    }
    DetectJob J = {kern, levels, nl, nc, reg_max, anchors, chunks, chunk0, strides, pred};
    parallel_for((size_t)levels[0].n * chunks, 1, detect_tasks, &J);
}

/* ---- NMS ---------------------------------------------------------------------------- */
#define MAX_NMS 30000 /* official max_nms: boxes into NMS at most */

float infer_box_iou(const InferBox *a, const InferBox *b) {
    float iw = fminf(a->x2, b->x2) - fmaxf(a->x1, b->x1);
    float ih = fminf(a->y2, b->y2) - fmaxf(a->y1, b->y1);
    if (iw <= 0.f || ih <= 0.f) return 0.f;
    float inter = iw * ih;
    float ua = (a->x2 - a->x1) * (a->y2 - a->y1) + (b->x2 - b->x1) * (b->y2 - b->y1) - inter;
    return ua > 0.f ? inter / ua : 0.f;
}

typedef struct {
    InferBox box;
    int order; /* ties in score keep the candidate order, so results are deterministic */
} Cand;

static int by_score(const void *pa, const void *pb) {
    const Cand *a = pa, *b = pb;
    if (a->box.score != b->box.score) return a->box.score > b->box.score ? -1 : 1;
    return a->order - b->order;
}

static int push_cand(Cand **c, size_t *n, size_t *cap, const float *pred, int anchors, int a, float score, int cls) {
    if (*n == *cap) {
        Cand *grown = realloc(*c, 2 * *cap * sizeof **c);
        if (!grown) return -1;
        *c = grown, *cap *= 2;
    }
    float cx = pred[a], cy = pred[(size_t)anchors + a];
    float w = pred[(size_t)2 * anchors + a], h = pred[(size_t)3 * anchors + a];
    (*c)[*n] = (Cand){{cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score, cls}, (int)*n};
    (*n)++;
    return 0;
}

int infer_nms(const float *pred, int nc, int anchors, float conf, float iou, int max_det, int multi_label, int agnostic,
              InferBox *out) {
    size_t cap = 1024, n = 0;
    Cand *c = malloc(cap * sizeof *c);
    if (!c) return -1;
    for (int a = 0; a < anchors; a++) {
        int best_c = 0;
        float best = -1.f;
        for (int k = 0; k < nc; k++) {
            float s = pred[(size_t)(4 + k) * anchors + a];
            if (multi_label && s > conf && push_cand(&c, &n, &cap, pred, anchors, a, s, k)) return free(c), -1;
            if (s > best) best = s, best_c = k;
        }
        if (!multi_label && best > conf && push_cand(&c, &n, &cap, pred, anchors, a, best, best_c)) return free(c), -1;
    }
    qsort(c, n, sizeof *c, by_score);
    if (n > MAX_NMS) n = MAX_NMS;
    int kept = 0;
    for (size_t i = 0; i < n && kept < max_det; i++) {
        int keep = 1;
        for (int j = 0; j < kept && keep; j++)
            if ((agnostic || out[j].cls == c[i].box.cls) && infer_box_iou(&out[j], &c[i].box) > iou) keep = 0;
        if (keep) out[kept++] = c[i].box;
    }
    free(c);
    return kept;
}
