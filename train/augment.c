#include "train/augment.h"

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/error.h"

/* ---- boxes ---------------------------------------------------------------- */

int boxes_reserve(Boxes *b, int n) {
    if (n <= b->cap) return 0;
    int cap = b->cap ? b->cap : 16;
    while (cap < n) cap *= 2;
    float *v = realloc(b->v, sizeof(float) * 5 * (size_t)cap);
    if (!v) return gelan_error("boxes: out of memory for %d boxes", n);
    b->v = v, b->cap = cap;
    return 0;
}

int boxes_push(Boxes *b, float cls, float a, float c, float d, float e) {
    if (boxes_reserve(b, b->n + 1)) return -1;
    float *r = b->v + 5 * b->n++;
    r[0] = cls, r[1] = a, r[2] = c, r[3] = d, r[4] = e;
    return 0;
}

void boxes_free(Boxes *b) {
    free(b->v);
    b->v = NULL, b->n = b->cap = 0;
}

void boxes_to_xywhn(Boxes *b, int w, int h, float eps) {
    float wmax = w - eps, hmax = h - eps;
    for (int i = 0; i < b->n; i++) {
        float *r = b->v + 5 * i;
        for (int k = 1; k < 5; k++) {
            float hi = k % 2 ? wmax : hmax;
            r[k] = r[k] < 0 ? 0 : r[k] > hi ? hi : r[k];
        }
        float x1 = r[1], y1 = r[2], x2 = r[3], y2 = r[4];
        r[1] = (x1 + x2) / 2 / w, r[2] = (y1 + y2) / 2 / h;
        r[3] = (x2 - x1) / w, r[4] = (y2 - y1) / h;
    }
}

/* ---- random numbers --------------------------------------------------------- */

/* uniform in [lo, hi) with 53 random bits (python's random.uniform) */
static double uni(Rng *r, double lo, double hi) {
    return lo + (hi - lo) * ((double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0));
}

double rng_gamma(Rng *r, double shape) {
    if (shape < 1) {
        /* Gamma(a) = Gamma(a + 1) * U^(1/a) */
        double u = uni(r, 0, 1);
        return rng_gamma(r, shape + 1) * pow(u > 0 ? u : 1e-300, 1.0 / shape);
    }
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = rng_normal(r);
            v = 1.0 + c * x;
        } while (v <= 0);
        v = v * v * v;
        double u = uni(r, 0, 1);
        if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
        if (u > 0 && log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return d * v;
    }
}

double rng_beta(Rng *r, double a, double b) {
    double x = rng_gamma(r, a), y = rng_gamma(r, b);
    return x / (x + y);
}

/* ---- HSV ------------------------------------------------------------------------ */

/* OpenCV's 8-bit RGB->HSV divides through tables in 12-bit fixed point. */
enum { HSV_SHIFT = 12 };
static int sdiv_table[256], hdiv_table[256];
static void hsv_tables(void) {
    for (int i = 1; i < 256; i++) {
        sdiv_table[i] = (int)lrint((255 << HSV_SHIFT) / (1.0 * i));
        hdiv_table[i] = (int)lrint((180 << HSV_SHIFT) / (6.0 * i));
    }
}
static pthread_once_t hsv_once = PTHREAD_ONCE_INIT;

void rgb_to_hsv_cv(const uint8_t rgb[3], uint8_t hsv[3]) {
    pthread_once(&hsv_once, hsv_tables);
    int r = rgb[0], g = rgb[1], b = rgb[2];
    int v = r > g ? r : g, vmin = r < g ? r : g;
    v = v > b ? v : b, vmin = vmin < b ? vmin : b;
    int diff = v - vmin;
    int s = (diff * sdiv_table[v] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
    int h = v == r ? g - b : v == g ? b - r + 2 * diff : r - g + 4 * diff;
    h = (h * hdiv_table[diff] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
    if (h < 0) h += 180;
    hsv[0] = (uint8_t)h, hsv[1] = (uint8_t)s, hsv[2] = (uint8_t)v;
}

/* OpenCV's 8-bit HSV->RGB truncates x * 255 (its vectorised body does, which
 * converts all but the last few pixels of an image). */
static uint8_t sat_u8(float x) { return (uint8_t)(x < 0 ? 0 : x > 255 ? 255 : x); }

void hsv_to_rgb_cv(const uint8_t hsv[3], uint8_t rgb[3]) {
    float h = hsv[0], s = hsv[1] * (1.f / 255.f), v = hsv[2] * (1.f / 255.f);
    float r, g, b;
    if (s == 0) {
        r = g = b = v;
    } else {
        /* sector -> which of v, v(1-s), v(1-s f), v(1-s(1-f)) each channel takes */
        static const int sector_data[6][3] = {{1, 3, 0}, {1, 0, 2}, {3, 0, 1}, {0, 2, 1}, {0, 1, 3}, {2, 1, 0}};
        h *= 6.f / 180.f;
        h = fmodf(h, 6.f);
        int sector = (int)floorf(h);
        h -= sector;
        if ((unsigned)sector >= 6u) sector = 0, h = 0;
        float tab[4] = {v, v * (1.f - s), v * (1.f - s * h), v * (1.f - s * (1.f - h))};
        b = tab[sector_data[sector][0]];
        g = tab[sector_data[sector][1]];
        r = tab[sector_data[sector][2]];
    }
    rgb[0] = sat_u8(r * 255.f), rgb[1] = sat_u8(g * 255.f), rgb[2] = sat_u8(b * 255.f);
}

void hsv_apply_gains(Image *im, double gh, double gs, double gv) {
    uint8_t lut_h[256], lut_s[256], lut_v[256];
    for (int x = 0; x < 256; x++) {
        double h = fmod(x * gh, 180.0), s = x * gs, v = x * gv;
        if (h < 0) h += 180.0; /* python's % is never negative */
        lut_h[x] = (uint8_t)h;
        lut_s[x] = (uint8_t)(s < 0 ? 0 : s > 255 ? 255 : s);
        lut_v[x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    size_t n = (size_t)im->w * im->h;
    uint8_t *p = im->data;
    for (size_t i = 0; i < n; i++, p += 3) {
        uint8_t hsv[3];
        rgb_to_hsv_cv(p, hsv);
        hsv[0] = lut_h[hsv[0]], hsv[1] = lut_s[hsv[1]], hsv[2] = lut_v[hsv[2]];
        hsv_to_rgb_cv(hsv, p);
    }
}

void augment_hsv(Image *im, float hgain, float sgain, float vgain, Rng *r) {
    if (!hgain && !sgain && !vgain) return;
    double gh = uni(r, -1, 1) * hgain + 1, gs = uni(r, -1, 1) * sgain + 1, gv = uni(r, -1, 1) * vgain + 1;
    hsv_apply_gains(im, gh, gs, gv);
}

/* ---- random_perspective ---------------------------------------------------------- */

static void matmul3(const double a[9], const double b[9], double out[9]) {
    double t[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) t[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
    memcpy(out, t, sizeof t);
}

void random_perspective_matrix(int in_w, int in_h, int out_w, int out_h, const HypAugment *h, Rng *r, double m[9],
                               double *scale) {
    const double deg = M_PI / 180.0;
    double C[9] = {1, 0, -in_w / 2.0, 0, 1, -in_h / 2.0, 0, 0, 1}; /* centre at the origin */
    double P[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    P[6] = uni(r, -h->perspective, h->perspective);
    P[7] = uni(r, -h->perspective, h->perspective);
    double a = uni(r, -h->degrees, h->degrees), s = uni(r, 1 - h->scale, 1 + h->scale);
    /* cv2.getRotationMatrix2D(angle=a, center=(0, 0), scale=s) */
    double al = s * cos(a * deg), be = s * sin(a * deg);
    double R[9] = {al, be, 0, -be, al, 0, 0, 0, 1};
    double S[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    S[1] = tan(uni(r, -h->shear, h->shear) * deg);
    S[3] = tan(uni(r, -h->shear, h->shear) * deg);
    double T[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    T[2] = uni(r, 0.5 - h->translate, 0.5 + h->translate) * out_w;
    T[5] = uni(r, 0.5 - h->translate, 0.5 + h->translate) * out_h;
    /* M = T @ S @ R @ P @ C, applied right to left */
    matmul3(P, C, m);
    matmul3(R, m, m);
    matmul3(S, m, m);
    matmul3(T, m, m);
    *scale = s;
}

bool box_candidate(const float before[4], const float after[4], float wh_thr, float ar_thr, float area_thr) {
    const float eps = 1e-16f;
    float w1 = before[2] - before[0], h1 = before[3] - before[1];
    float w2 = after[2] - after[0], h2 = after[3] - after[1];
    float ar = fmaxf(w2 / (h2 + eps), h2 / (w2 + eps));
    return w2 > wh_thr && h2 > wh_thr && w2 * h2 / (w1 * h1 + eps) > area_thr && ar < ar_thr;
}

void warp_boxes(Boxes *b, const double m[9], double scale, int w, int h) {
    bool persp = m[6] != 0 || m[7] != 0 || m[8] != 1;
    int kept = 0;
    for (int i = 0; i < b->n; i++) {
        float *row = b->v + 5 * i;
        /* corners x1y1, x2y2, x1y2, x2y1 */
        double cx[4] = {row[1], row[3], row[1], row[3]}, cy[4] = {row[2], row[4], row[4], row[2]};
        double xmin = INFINITY, ymin = INFINITY, xmax = -INFINITY, ymax = -INFINITY;
        for (int k = 0; k < 4; k++) {
            double X = m[0] * cx[k] + m[1] * cy[k] + m[2], Y = m[3] * cx[k] + m[4] * cy[k] + m[5];
            if (persp) {
                double W = m[6] * cx[k] + m[7] * cy[k] + m[8];
                X /= W, Y /= W;
            }
            xmin = fmin(xmin, X), xmax = fmax(xmax, X), ymin = fmin(ymin, Y), ymax = fmax(ymax, Y);
        }
        float after[4] = {(float)fmin(fmax(xmin, 0), w), (float)fmin(fmax(ymin, 0), h), (float)fmin(fmax(xmax, 0), w),
                          (float)fmin(fmax(ymax, 0), h)};
        float before[4] = {(float)(row[1] * scale), (float)(row[2] * scale), (float)(row[3] * scale),
                           (float)(row[4] * scale)};
        if (!box_candidate(before, after, 2, 100, 0.1f)) continue;
        float *o = b->v + 5 * kept++;
        o[0] = row[0];
        memcpy(o + 1, after, sizeof after);
    }
    b->n = kept;
}

int random_perspective(const Image *src, Image *dst, Boxes *b, const HypAugment *h, int border, Rng *r) {
    int out_h = src->h + 2 * border, out_w = src->w + 2 * border;
    if (out_h <= 0 || out_w <= 0)
        return gelan_error("random_perspective: border %d too large for %dx%d", border, src->w, src->h);
    double m[9], s;
    random_perspective_matrix(src->w, src->h, out_w, out_h, h, r, m, &s);
    static const double eye[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    int rc = border == 0 && !memcmp(m, eye, sizeof eye) ? image_copy(src, dst) : image_warp(src, dst, out_w, out_h, m);
    if (rc) return -1;
    if (b->n) warp_boxes(b, m, s, out_w, out_h);
    return 0;
}

/* ---- mixup and mosaic ------------------------------------------------------------- */

int mixup(Image *im, Boxes *b, const Image *im2, const Boxes *b2, Rng *r) {
    if (im->w != im2->w || im->h != im2->h)
        return gelan_error("mixup: images differ in size (%dx%d and %dx%d)", im->w, im->h, im2->w, im2->h);
    double ratio = rng_beta(r, 32.0, 32.0);
    size_t n = (size_t)im->w * im->h * 3;
    for (size_t i = 0; i < n; i++) im->data[i] = (uint8_t)(im->data[i] * ratio + im2->data[i] * (1 - ratio));
    if (!b2->n) return 0;
    if (boxes_reserve(b, b->n + b2->n)) return -1;
    memcpy(b->v + 5 * b->n, b2->v, sizeof(float) * 5 * b2->n);
    b->n += b2->n;
    return 0;
}

/* python's floor division, for the mosaic border -s // 2 */
static int floor_div(int a, int b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

int load_mosaic(const Dataset *ds, int index, int s, const HypAugment *h, Rng *r, Image *out, Boxes *b) {
    int border = floor_div(-s, 2);
    int yc = (int)uni(r, -border, 2 * s + border), xc = (int)uni(r, -border, 2 * s + border);
    int idx[4] = {index, (int)rng_below(r, (uint32_t)ds->n), (int)rng_below(r, (uint32_t)ds->n),
                  (int)rng_below(r, (uint32_t)ds->n)};
    for (int i = 3; i > 0; i--) { /* random.shuffle */
        int j = (int)rng_below(r, (uint32_t)i + 1), t = idx[i];
        idx[i] = idx[j], idx[j] = t;
    }
    Image canvas = {0}, img = {0};
    int rc = image_alloc(&canvas, 2 * s, 2 * s);
    if (!rc) image_fill(&canvas, IMAGE_PAD_VALUE, IMAGE_PAD_VALUE, IMAGE_PAD_VALUE);
    b->n = 0;
    for (int i = 0; i < 4 && !rc; i++) {
        if ((rc = dataset_load_resized(ds, idx[i], s, true, &img, NULL, NULL))) break;
        int w = img.w, hh = img.h, x1a, y1a, x2a, y2a, x1b, y1b, x2b, y2b;
        if (i == 0) { /* top left */
            x1a = xc - w > 0 ? xc - w : 0, y1a = yc - hh > 0 ? yc - hh : 0, x2a = xc, y2a = yc;
            x1b = w - (x2a - x1a), y1b = hh - (y2a - y1a), x2b = w, y2b = hh;
        } else if (i == 1) { /* top right */
            x1a = xc, y1a = yc - hh > 0 ? yc - hh : 0, x2a = xc + w < 2 * s ? xc + w : 2 * s, y2a = yc;
            x1b = 0, y1b = hh - (y2a - y1a), x2b = w < x2a - x1a ? w : x2a - x1a, y2b = hh;
        } else if (i == 2) { /* bottom left */
            x1a = xc - w > 0 ? xc - w : 0, y1a = yc, x2a = xc, y2a = yc + hh < 2 * s ? yc + hh : 2 * s;
            x1b = w - (x2a - x1a), y1b = 0, x2b = w, y2b = y2a - y1a < hh ? y2a - y1a : hh;
        } else { /* bottom right */
            x1a = xc, y1a = yc, x2a = xc + w < 2 * s ? xc + w : 2 * s, y2a = yc + hh < 2 * s ? yc + hh : 2 * s;
            x1b = 0, y1b = 0, x2b = w < x2a - x1a ? w : x2a - x1a, y2b = y2a - y1a < hh ? y2a - y1a : hh;
        }
        (void)x2b, (void)y2b;
        for (int y = 0; y < y2a - y1a; y++)
            memcpy(image_px(&canvas, x1a, y1a + y), image_px(&img, x1b, y1b + y), (size_t)(x2a - x1a) * 3);
        int padw = x1a - x1b, padh = y1a - y1b;
        const DataItem *it = &ds->items[idx[i]];
        for (int k = 0; k < it->n && !rc; k++) {
            const float *l = it->labels + 5 * k;
            /* xywhn2xyxy, then clipped to the canvas */
            float v[4] = {w * (l[1] - l[3] / 2) + padw, hh * (l[2] - l[4] / 2) + padh, w * (l[1] + l[3] / 2) + padw,
                          hh * (l[2] + l[4] / 2) + padh};
            for (int q = 0; q < 4; q++) v[q] = v[q] < 0 ? 0 : v[q] > 2 * s ? 2 * s : v[q];
            rc = boxes_push(b, l[0], v[0], v[1], v[2], v[3]);
        }
    }
    if (!rc) rc = random_perspective(&canvas, out, b, h, border, r);
    image_free(&canvas), image_free(&img);
    return rc;
}

/* ---- pipelines ------------------------------------------------------------------------ */

/* Normalised labels of item i onto a w x h image placed with ratio and padding. */
static int labels_to_pixels(const DataItem *it, double w, double h, double padw, double padh, Boxes *b) {
    b->n = 0;
    if (boxes_reserve(b, it->n)) return -1;
    for (int k = 0; k < it->n; k++) {
        const float *l = it->labels + 5 * k;
        boxes_push(b, l[0], (float)(w * (l[1] - l[3] / 2) + padw), (float)(h * (l[2] - l[4] / 2) + padh),
                   (float)(w * (l[1] + l[3] / 2) + padw), (float)(h * (l[2] + l[4] / 2) + padh));
    }
    return 0;
}

int sample_train(const Dataset *ds, int index, int s, const HypAugment *h, bool mosaic, Rng *r, Image *out, Boxes *b) {
    if (index < 0 || index >= ds->n) return gelan_error("sample_train: index %d out of range [0, %d)", index, ds->n);
    int rc = 0;
    if (mosaic && uni(r, 0, 1) < h->mosaic) {
        rc = load_mosaic(ds, index, s, h, r, out, b);
        if (!rc && uni(r, 0, 1) < h->mixup) {
            Image im2 = {0};
            Boxes b2 = {0};
            rc = load_mosaic(ds, (int)rng_below(r, (uint32_t)ds->n), s, h, r, &im2, &b2);
            if (!rc) rc = mixup(out, b, &im2, &b2, r);
            image_free(&im2), boxes_free(&b2);
        }
    } else {
        Image img = {0}, lb = {0};
        LetterboxInfo info;
        rc = dataset_load_resized(ds, index, s, true, &img, NULL, NULL);
        if (!rc) rc = image_letterbox(&img, &lb, s, s, false, true, 0, &info);
        if (!rc)
            rc = labels_to_pixels(&ds->items[index], info.ratio_w * img.w, info.ratio_h * img.h, info.pad_w, info.pad_h,
                                  b);
        if (!rc) rc = random_perspective(&lb, out, b, h, 0, r);
        image_free(&img), image_free(&lb);
    }
    if (rc) return -1;
    boxes_to_xywhn(b, out->w, out->h, 1e-3f);
    augment_hsv(out, h->hsv_h, h->hsv_s, h->hsv_v, r);
    if (uni(r, 0, 1) < h->flipud) {
        image_flip_ud(out);
        for (int i = 0; i < b->n; i++) b->v[5 * i + 2] = 1 - b->v[5 * i + 2];
    }
    if (uni(r, 0, 1) < h->fliplr) {
        image_flip_lr(out);
        for (int i = 0; i < b->n; i++) b->v[5 * i + 1] = 1 - b->v[5 * i + 1];
    }
    return 0;
}

int sample_eval(const Dataset *ds, int index, int s, int out_w, int out_h, Image *out, Boxes *b, Letterbox *lb) {
    if (index < 0 || index >= ds->n) return gelan_error("sample_eval: index %d out of range [0, %d)", index, ds->n);
    Image img = {0};
    LetterboxInfo info;
    int w0, h0;
    int rc = dataset_load_resized(ds, index, s, false, &img, &w0, &h0);
    if (!rc) rc = image_letterbox(&img, out, out_h, out_w, false, false, 0, &info);
    if (!rc)
        rc = labels_to_pixels(&ds->items[index], info.ratio_w * img.w, info.ratio_h * img.h, info.pad_w, info.pad_h, b);
    if (!rc) {
        boxes_to_xywhn(b, out->w, out->h, 1e-3f);
        if (lb) {
            *lb = (Letterbox){
                .src_w = w0, .src_h = h0, .out_w = out->w, .out_h = out->h, .left = info.left, .top = info.top};
            lb->new_w = (int)rint(img.w * info.ratio_w), lb->new_h = (int)rint(img.h * info.ratio_h);
            /* val.py: shapes = (h0, w0), ((h / h0, w / w0), pad); scale_boxes takes gain = h / h0 */
            lb->gain = (float)(info.ratio_h * img.h / h0);
            lb->pad_x = (float)info.pad_w, lb->pad_y = (float)info.pad_h;
        }
    }
    image_free(&img);
    return rc;
}

void labels_to_original(const float *rows, int n, int stride, const Letterbox *lb, float *xyxy) {
    for (int i = 0; i < n; i++) {
        const float *r = rows + (size_t)i * stride;
        float cx = r[1] * lb->out_w, cy = r[2] * lb->out_h, w = r[3] * lb->out_w, h = r[4] * lb->out_h;
        float b[4] = {cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2};
        for (int k = 0; k < 4; k++) {
            float v = (b[k] - (k % 2 ? lb->pad_y : lb->pad_x)) / lb->gain, hi = (float)(k % 2 ? lb->src_h : lb->src_w);
            xyxy[4 * i + k] = v < 0 ? 0 : v > hi ? hi : v;
        }
    }
}
