/* The training augmentations (train/augment.h): HSV on OpenCV's 8-bit
 * conventions, flips, the Beta sampler, random_perspective, box_candidates,
 * mixup, and mosaic + affine keeping the boxes on the objects. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor/error.h"
#include "tensor/rng.h"
#include "tests/testutil.h"
#include "train/augment.h"
#include "train/dataset.h"
#include "train/hyp.h"
#include "train/image.h"

static HypAugment default_aug(void) {
    Hyp h;
    hyp_default(&h);
    return h.aug;
}

static void random_image(Image *im, int w, int h, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    image_alloc(im, w, h);
    for (size_t i = 0; i < (size_t)w * h * 3; i++) im->data[i] = (uint8_t)rng_below(&r, 256);
}

/* ---- HSV ------------------------------------------------------------------ */

static void test_hsv_known_values(void) {
    /* expected values: cv2.cvtColor(..., COLOR_RGB2HSV) and back with OpenCV
       4.6, the pixels placed in a 128-pixel row (short rows take OpenCV's
       scalar tail, which rounds where the vectorised body truncates) */
    static const uint8_t rgb[7][3] = {{10, 200, 50},   {255, 0, 0},    {0, 255, 0}, {0, 0, 255},
                                      {128, 128, 128}, {200, 100, 50}, {3, 7, 250}};
    static const uint8_t hsv[7][3] = {{66, 242, 200}, {0, 255, 255},  {60, 255, 255}, {120, 255, 255},
                                      {0, 0, 128},    {10, 191, 200}, {119, 252, 250}};
    static const uint8_t back[7][3] = {{10, 200, 48},   {255, 0, 0},    {0, 255, 0}, {0, 0, 255},
                                       {128, 128, 128}, {200, 100, 50}, {2, 11, 250}};
    for (int i = 0; i < 7; i++) {
        uint8_t h[3], b[3];
        rgb_to_hsv_cv(rgb[i], h);
        hsv_to_rgb_cv(h, b);
        CU_ASSERT(!memcmp(h, hsv[i], 3));
        CU_ASSERT(!memcmp(b, back[i], 3));
        if (memcmp(h, hsv[i], 3) || memcmp(b, back[i], 3))
            fprintf(stderr, "\n  rgb %d,%d,%d -> hsv %d,%d,%d -> %d,%d,%d\n", rgb[i][0], rgb[i][1], rgb[i][2], h[0],
                    h[1], h[2], b[0], b[1], b[2]);
    }
}

static void test_hsv_zero_gains_identity(void) {
    Image a = {0}, b = {0};
    random_image(&a, 37, 23, 1);
    image_copy(&a, &b);
    Rng r;
    rng_seed(&r, 5);
    augment_hsv(&b, 0, 0, 0, &r);
    CU_ASSERT(!memcmp(a.data, b.data, (size_t)37 * 23 * 3));
    /* with gains of exactly 1 the image goes through OpenCV's 8-bit HSV and
       back: that round trip is lossy (H has 180 levels) by at most 6 levels
       over all 2^24 colours (measured with cv2); check a dense subset */
    Image all = {0};
    image_alloc(&all, 86 * 86, 86);
    int k = 0;
    for (int r0 = 0; r0 < 256; r0 += 3)
        for (int g0 = 0; g0 < 256; g0 += 3)
            for (int b0 = 0; b0 < 256; b0 += 3, k++) {
                uint8_t *p = all.data + 3 * k;
                p[0] = (uint8_t)r0, p[1] = (uint8_t)g0, p[2] = (uint8_t)b0;
            }
    Image orig = {0};
    image_copy(&all, &orig);
    hsv_apply_gains(&all, 1, 1, 1);
    int worst = 0;
    for (size_t i = 0; i < (size_t)all.w * all.h * 3; i++) worst = fmax(worst, abs(all.data[i] - orig.data[i]));
    CU_ASSERT(worst <= 6);
    CU_ASSERT(worst > 0); /* a real conversion happened */
    image_free(&a), image_free(&b), image_free(&all), image_free(&orig);
}

static void test_hsv_gains(void) {
    /* hue LUT: pure green has H = 60; x 2 -> 120 = pure blue */
    Image im = {0};
    image_alloc(&im, 2, 1);
    uint8_t *p = im.data;
    p[0] = 0, p[1] = 255, p[2] = 0;     /* green */
    p[3] = 255, p[4] = 255, p[5] = 255; /* white: V = 255 */
    hsv_apply_gains(&im, 2.0, 1.0, 0.5);
    /* green -> blue at V = trunc(255 * 0.5) = 127; white -> gray 127 */
    CU_ASSERT(p[0] == 0 && p[1] == 0 && p[2] == 127);
    CU_ASSERT(p[3] == 127 && p[4] == 127 && p[5] == 127);
    /* hue wraps modulo 180: H 120 (blue) x 1.75 = 210 -> 30 (yellow-ish: r 255, g 255 * 30/60 ...) */
    p[0] = 0, p[1] = 0, p[2] = 255;
    hsv_apply_gains(&im, 1.75, 1.0, 1.0);
    uint8_t h[3];
    rgb_to_hsv_cv(p, h);
    CU_ASSERT_EQUAL(h[0], 30);
    image_free(&im);
}

/* ---- flips ------------------------------------------------------------------- */

static void test_flip_twice_identity(void) {
    Image a = {0}, b = {0};
    random_image(&a, 31, 17, 2);
    image_copy(&a, &b);
    image_flip_lr(&b);
    CU_ASSERT(memcmp(a.data, b.data, (size_t)31 * 17 * 3) != 0);
    CU_ASSERT(!memcmp(image_px(&a, 0, 3), image_px(&b, 30, 3), 3));
    image_flip_lr(&b);
    CU_ASSERT(!memcmp(a.data, b.data, (size_t)31 * 17 * 3));
    image_flip_ud(&b);
    CU_ASSERT(!memcmp(image_px(&a, 4, 0), image_px(&b, 4, 16), 3));
    image_flip_ud(&b);
    CU_ASSERT(!memcmp(a.data, b.data, (size_t)31 * 17 * 3));
    image_free(&a), image_free(&b);
}

/* ---- random numbers ------------------------------------------------------------ */

static void moments(double a, double b, int n, double *mean, double *var) {
    Rng r;
    rng_seed(&r, 123);
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++) {
        double x = rng_beta(&r, a, b);
        s += x, s2 += x * x;
    }
    *mean = s / n;
    *var = s2 / n - *mean * *mean;
}

static void test_beta_sampler(void) {
    double m, v;
    /* Beta(32, 32): mean 1/2, variance ab / ((a+b)^2 (a+b+1)) = 1 / 260 */
    moments(32, 32, 40000, &m, &v);
    CU_ASSERT(fabs(m - 0.5) < 0.002);
    CU_ASSERT(fabs(v - 1.0 / 260) < 0.05 / 260 * 2);
    /* Beta(2, 5): mean 2/7, variance 10 / (49 * 8) */
    moments(2, 5, 40000, &m, &v);
    CU_ASSERT(fabs(m - 2.0 / 7) < 0.004);
    CU_ASSERT(fabs(v - 10.0 / 392) < 0.1 * 10.0 / 392);
    /* Gamma(0.5) (the shape < 1 branch): mean 0.5 */
    Rng r;
    rng_seed(&r, 7);
    double s = 0;
    for (int i = 0; i < 40000; i++) s += rng_gamma(&r, 0.5);
    CU_ASSERT(fabs(s / 40000 - 0.5) < 0.015);
}

/* ---- geometry ------------------------------------------------------------------ */

static void test_box_candidates(void) {
    float before[4] = {0, 0, 10, 10};
    float ok[4] = {0, 0, 5, 5};          /* 25% of the area, 5 px */
    float narrow[4] = {0, 0, 2, 50};     /* 2 px wide: not > 2 */
    float small[4] = {0, 0, 3.1f, 3.1f}; /* 9.6% of the area */
    float thin[4] = {0, 0, 3, 400};      /* aspect 133 */
    CU_ASSERT(box_candidate(before, ok, 2, 100, 0.1f));
    CU_ASSERT(!box_candidate(before, narrow, 2, 100, 0.1f));
    CU_ASSERT(!box_candidate(before, small, 2, 100, 0.1f));
    float big_before[4] = {0, 0, 10, 1000};
    CU_ASSERT(!box_candidate(big_before, thin, 2, 100, 0.1f));
}

static void test_perspective_identity_and_shift(void) {
    /* scale 0 and translate 0: M = T C = I, the image and boxes are unchanged */
    HypAugment h = default_aug();
    h.scale = 0, h.translate = 0;
    Image a = {0}, b = {0};
    random_image(&a, 40, 30, 3);
    Boxes bx = {0};
    boxes_push(&bx, 1, 5, 6, 20, 25);
    Rng r;
    rng_seed(&r, 9);
    CU_ASSERT_OK(random_perspective(&a, &b, &bx, &h, 0, &r));
    CU_ASSERT(b.w == 40 && b.h == 30 && !memcmp(a.data, b.data, (size_t)40 * 30 * 3));
    CU_ASSERT(bx.n == 1 && bx.v[1] == 5 && bx.v[2] == 6 && bx.v[3] == 20 && bx.v[4] == 25);
    /* a border of -10 crops the centre: 20 x 10 output showing a[10.., 10..] */
    CU_ASSERT_OK(random_perspective(&a, &b, &bx, &h, -10, &r));
    CU_ASSERT(b.w == 20 && b.h == 10);
    int same = 1;
    for (int y = 0; y < 10; y++) same &= !memcmp(image_px(&b, 0, y), image_px(&a, 10, y + 10), 20 * 3);
    CU_ASSERT(same);
    /* the box moved by -10, -10 and was clipped to the 20 x 10 output */
    CU_ASSERT(bx.n == 1);
    if (bx.n == 1) CU_ASSERT(bx.v[1] == 0 && bx.v[2] == 0 && bx.v[3] == 10 && bx.v[4] == 10);
    image_free(&a), image_free(&b), boxes_free(&bx);
}

static void test_mixup(void) {
    Image a = {0}, b = {0};
    image_alloc(&a, 8, 8), image_alloc(&b, 8, 8);
    image_fill(&a, 200, 200, 200), image_fill(&b, 100, 100, 100);
    Boxes ba = {0}, bb = {0};
    boxes_push(&ba, 0, 1, 1, 2, 2);
    boxes_push(&bb, 3, 4, 4, 6, 6);
    boxes_push(&bb, 2, 0, 0, 1, 1);
    Rng r;
    rng_seed(&r, 11);
    CU_ASSERT_OK(mixup(&a, &ba, &b, &bb, &r));
    /* 200 r + 100 (1 - r) with r ~ Beta(32, 32): near 150, same everywhere */
    CU_ASSERT(a.data[0] > 120 && a.data[0] < 180);
    CU_ASSERT(a.data[0] == a.data[8 * 8 * 3 - 1]);
    CU_ASSERT(ba.n == 3 && ba.v[5] == 3 && ba.v[10] == 2);
    image_free(&a), image_free(&b), boxes_free(&ba), boxes_free(&bb);
}

/* ---- mosaic and affine keep boxes on their objects --------------------------- */

static const uint8_t obj_color[4][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {255, 255, 0}};

/* A temp data set of 4 images: dark background, one filled box of a unique
 * colour per image, labelled exactly, class = image number. */
static Dataset *colour_dataset(char *dir) {
    strcpy(dir, "/tmp/gelan_aug_XXXXXX");
    if (!mkdtemp(dir)) return NULL;
    char p[512];
    snprintf(p, sizeof p, "%s/images", dir), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/labels", dir), mkdir(p, 0755);
    static const int sz[4][2] = {{200, 150}, {160, 220}, {300, 300}, {120, 90}};
    static const int bx[4][4] = {{40, 30, 120, 100}, {20, 50, 90, 200}, {100, 60, 260, 150}, {10, 10, 60, 80}};
    for (int k = 0; k < 4; k++) {
        Image im = {0};
        image_alloc(&im, sz[k][0], sz[k][1]);
        image_fill(&im, 30, 30, 30);
        image_fill_rect(&im, bx[k][0], bx[k][1], bx[k][2] - 1, bx[k][3] - 1, obj_color[k]);
        snprintf(p, sizeof p, "%s/images/%d.png", dir, k);
        image_save(&im, p);
        image_free(&im);
        snprintf(p, sizeof p, "%s/labels/%d.txt", dir, k);
        FILE *f = fopen(p, "w");
        double W = sz[k][0], H = sz[k][1];
        fprintf(f, "%d %.9f %.9f %.9f %.9f\n", k, (bx[k][0] + bx[k][2]) / 2 / W, (bx[k][1] + bx[k][3]) / 2 / H,
                (bx[k][2] - bx[k][0]) / W, (bx[k][3] - bx[k][1]) / H);
        fclose(f);
    }
    snprintf(p, sizeof p, "%s/images", dir);
    const char *src[1] = {p};
    return dataset_from_sources(src, 1, 4, NULL);
}

static void remove_tree(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
}

static bool is_colour(const uint8_t *p, const uint8_t *c) {
    return abs(p[0] - c[0]) < 40 && abs(p[1] - c[1]) < 40 && abs(p[2] - c[2]) < 40;
}

/* Checks boxes against the objects' colours. Each 4-connected region of an
 * object's colour must lie inside a box of its class (expanded by tol), or
 * else be one that box_candidates drops: cut by the image border or at most
 * 3 pixels thin. When `tight` (no rotation or shear), each box's edges must
 * also be within tol of the extent of its colour inside it. Returns the number
 * of failures. */
static int check_boxes(const Image *im, const Boxes *b, bool normalised, bool tight, float tol) {
    int W = im->w, H = im->h, bad = 0;
    float *px = malloc(sizeof(float) * 5 * (b->n ? b->n : 1));
    int *seen = calloc((size_t)W * H, sizeof(int)), *queue = malloc(sizeof(int) * (size_t)W * H);
    for (int i = 0; i < b->n; i++) {
        const float *r = b->v + 5 * i;
        float *o = px + 5 * i;
        o[0] = r[0];
        if (normalised) {
            o[1] = (r[1] - r[3] / 2) * W, o[2] = (r[2] - r[4] / 2) * H;
            o[3] = (r[1] + r[3] / 2) * W, o[4] = (r[2] + r[4] / 2) * H;
        } else {
            memcpy(o + 1, r + 1, 4 * sizeof(float));
        }
    }
    for (int k = 0; k < 4; k++) {
        for (int start = 0; start < W * H; start++) {
            if (seen[start] & (1 << k) || !is_colour(im->data + 3 * start, obj_color[k])) continue;
            /* flood-fill one region, tracking its extent */
            int head = 0, tail = 0, x1 = W, y1 = H, x2 = -1, y2 = -1;
            queue[tail++] = start, seen[start] |= 1 << k;
            while (head < tail) {
                int q = queue[head++], x = q % W, y = q / W;
                x1 = x < x1 ? x : x1, x2 = x > x2 ? x : x2, y1 = y < y1 ? y : y1, y2 = y > y2 ? y : y2;
                int nb[4] = {x > 0 ? q - 1 : -1, x < W - 1 ? q + 1 : -1, y > 0 ? q - W : -1, y < H - 1 ? q + W : -1};
                for (int j = 0; j < 4; j++)
                    if (nb[j] >= 0 && !(seen[nb[j]] & (1 << k)) && is_colour(im->data + 3 * nb[j], obj_color[k]))
                        seen[nb[j]] |= 1 << k, queue[tail++] = nb[j];
            }
            int inside = 0;
            for (int i = 0; i < b->n && !inside; i++) {
                const float *o = px + 5 * i;
                inside = (int)o[0] == k && x1 >= o[1] - tol && x2 + 1 <= o[3] + tol && y1 >= o[2] - tol &&
                         y2 + 1 <= o[4] + tol;
            }
            bool dropped = x1 == 0 || y1 == 0 || x2 == W - 1 || y2 == H - 1 || x2 - x1 < 3 || y2 - y1 < 3;
            if (!inside && !dropped && bad++ < 3)
                fprintf(stderr, "\n  region [%d %d %d %d] of class %d is in no box", x1, y1, x2 + 1, y2 + 1, k);
        }
    }
    for (int i = 0; tight && i < b->n; i++) {
        const float *o = px + 5 * i;
        int k = (int)o[0], x1 = W, y1 = H, x2 = -1, y2 = -1;
        for (int y = (int)fmaxf(0, o[2] - tol); y < fminf(H, o[4] + tol); y++)
            for (int x = (int)fmaxf(0, o[1] - tol); x < fminf(W, o[3] + tol); x++)
                if (is_colour(image_px(im, x, y), obj_color[k])) {
                    x1 = x < x1 ? x : x1, x2 = x > x2 ? x : x2, y1 = y < y1 ? y : y1, y2 = y > y2 ? y : y2;
                }
        if (x2 < 0) {
            if (bad++ < 3) fprintf(stderr, "\n  box %d of class %d holds none of its colour", i, k);
            continue;
        }
        if ((fabsf(x1 - o[1]) > tol || fabsf(y1 - o[2]) > tol || fabsf(x2 + 1 - o[3]) > tol ||
             fabsf(y2 + 1 - o[4]) > tol) &&
            bad++ < 3)
            fprintf(stderr, "\n  box %d class %d [%.1f %.1f %.1f %.1f], its colour spans [%d %d %d %d]", i, k, o[1],
                    o[2], o[3], o[4], x1, y1, x2 + 1, y2 + 1);
    }
    free(px), free(seen), free(queue);
    return bad;
}

static void test_mosaic_keeps_boxes(void) {
    char dir[64];
    Dataset *ds = colour_dataset(dir);
    CU_ASSERT_NONNULL_OK(ds);
    if (!ds) return;
    HypAugment h = default_aug();
    Image out = {0};
    Boxes b = {0};
    int total_boxes = 0, bad = 0;
    for (int seed = 0; seed < 12; seed++) {
        Rng r;
        rng_seed(&r, 1000 + seed);
        CU_ASSERT_OK(load_mosaic(ds, seed % 4, 128, &h, &r, &out, &b));
        CU_ASSERT(out.w == 128 && out.h == 128);
        total_boxes += b.n;
        /* boxes in pixels; edges within 2 px of the (interpolated) colour */
        bad += check_boxes(&out, &b, false, true, 2.0f);
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(total_boxes >= 12); /* most objects survive the crop */
    /* the whole pipeline, rotation and shear included: boxes enclose their
       objects (the enclosing box of a rotated box is not tight) */
    h.degrees = 10, h.shear = 5, h.mixup = 0, h.hsv_h = h.hsv_s = h.hsv_v = 0;
    for (int seed = 0; seed < 8; seed++) {
        Rng r;
        rng_seed(&r, 2000 + seed);
        CU_ASSERT_OK(sample_train(ds, seed % 4, 96, &h, seed % 2 == 0, &r, &out, &b));
        CU_ASSERT(out.w == 96 && out.h == 96);
        for (int i = 0; i < b.n; i++)
            for (int k = 1; k < 5; k++) CU_ASSERT(b.v[5 * i + k] >= 0 && b.v[5 * i + k] <= 1);
        CU_ASSERT_EQUAL(check_boxes(&out, &b, true, false, 2.0f), 0);
    }
    image_free(&out), boxes_free(&b);
    dataset_free(ds);
    remove_tree(dir);
}

static void test_train_sample_deterministic(void) {
    char dir[64];
    Dataset *ds = colour_dataset(dir);
    CU_ASSERT_NONNULL_OK(ds);
    if (!ds) return;
    HypAugment h = default_aug();
    h.mixup = 1; /* exercise mixup too */
    Image a = {0}, b = {0};
    Boxes ba = {0}, bb = {0};
    Rng r1, r2;
    rng_seed(&r1, 77), rng_seed(&r2, 77);
    CU_ASSERT_OK(sample_train(ds, 1, 64, &h, true, &r1, &a, &ba));
    CU_ASSERT_OK(sample_train(ds, 1, 64, &h, true, &r2, &b, &bb));
    CU_ASSERT(a.w == 64 && !memcmp(a.data, b.data, 64 * 64 * 3));
    CU_ASSERT(ba.n == bb.n && (!ba.n || !memcmp(ba.v, bb.v, sizeof(float) * 5 * ba.n)));
    image_free(&a), image_free(&b), boxes_free(&ba), boxes_free(&bb);
    dataset_free(ds);
    remove_tree(dir);
}

SUITE_FN(augment) {
    CU_pSuite s = CU_add_suite("augment", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "HSV matches OpenCV on known colours", test_hsv_known_values);
    CU_add_test(s, "HSV with gains 0 is the identity", test_hsv_zero_gains_identity);
    CU_add_test(s, "HSV lookup tables (hue mod 180, truncation)", test_hsv_gains);
    CU_add_test(s, "flip twice is the identity", test_flip_twice_identity);
    CU_add_test(s, "Beta and Gamma samplers", test_beta_sampler);
    CU_add_test(s, "box_candidates thresholds", test_box_candidates);
    CU_add_test(s, "random_perspective identity and border crop", test_perspective_identity_and_shift);
    CU_add_test(s, "mixup blends and concatenates", test_mixup);
    CU_add_test(s, "mosaic and affine keep boxes on their objects", test_mosaic_keeps_boxes);
    CU_add_test(s, "a training sample is a function of its seed", test_train_sample_deterministic);
    return 0;
}
