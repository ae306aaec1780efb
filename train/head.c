#include "train/head.h"

#include <math.h>

void head_dfl(const HeadView *v, int n, int a, double prob[4][HEAD_MAX_BINS], double dist[4], double lse[4]) {
    int k = head_level(v, a), hw = v->first[k + 1] - v->first[k], R = v->reg_max;
    const float *z = v->map[k] + head_offset(v, n, a, 0);
    for (int side = 0; side < 4; side++) {
        const float *zs = z + (size_t)side * R * hw;
        double mx = -INFINITY, sum = 0, e = 0;
        for (int j = 0; j < R; j++) mx = fmax(mx, zs[(size_t)j * hw]);
        for (int j = 0; j < R; j++) sum += prob[side][j] = exp(zs[(size_t)j * hw] - mx);
        for (int j = 0; j < R; j++) e += j * (prob[side][j] /= sum);
        dist[side] = e;
        lse[side] = mx + log(sum);
    }
}

void head_box(const HeadView *v, int a, const double dist[4], float box[4]) {
    float ax = v->anchors[2 * a], ay = v->anchors[2 * a + 1];
    box[0] = ax - (float)dist[0];
    box[1] = ay - (float)dist[1];
    box[2] = ax + (float)dist[2];
    box[3] = ay + (float)dist[3];
}
