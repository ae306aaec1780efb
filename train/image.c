#include "train/image.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tensor/error.h"

/* stb is compiled here only, with static linkage, so these symbols never clash
 * with another copy of stb elsewhere in a program (the runtime CLI has one). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wcast-qual"
#define STB_IMAGE_STATIC
/* stb_image 2.27 declares this static function under a name it never defines */
#define stbi_set_unpremultiply_on_load_thread stbi__unpremultiply_on_load_thread
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_HDR
#define STBI_NO_LINEAR
#include <stb/stb_image.h>
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#include <stb/stb_easy_font.h>
#pragma GCC diagnostic pop

int image_alloc(Image *im, int w, int h) {
    if (w <= 0 || h <= 0 || (size_t)w * (size_t)h > ((size_t)1 << 31))
        return gelan_error("image_alloc: bad size %dx%d", w, h);
    size_t bytes = (size_t)w * h * 3;
    uint8_t *p = im->data && (size_t)im->w * im->h * 3 >= bytes ? im->data : NULL;
    if (!p) {
        free(im->data);
        im->data = NULL;
        p = malloc(bytes);
        if (!p) return gelan_error("image_alloc: out of memory for %dx%d", w, h);
    }
    im->data = p;
    im->w = w;
    im->h = h;
    return 0;
}

void image_fill(Image *im, uint8_t r, uint8_t g, uint8_t b) {
    size_t n = (size_t)im->w * im->h;
    uint8_t *p = im->data;
    if (r == g && g == b) {
        memset(p, r, n * 3);
        return;
    }
    for (size_t i = 0; i < n; i++, p += 3) p[0] = r, p[1] = g, p[2] = b;
}

void image_free(Image *im) {
    if (!im) return;
    free(im->data);
    im->data = NULL;
    im->w = im->h = 0;
}

int image_copy(const Image *src, Image *dst) {
    if (image_alloc(dst, src->w, src->h)) return -1;
    memcpy(dst->data, src->data, (size_t)src->w * src->h * 3);
    return 0;
}

/* ---- files -------------------------------------------------------------- */

int image_probe(const char *path, int *w, int *h, int *channels) {
    int x = 0, y = 0, c = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return gelan_error("%s: cannot open (%s)", path, strerror(errno));
    int ok = stbi_info_from_file(f, &x, &y, &c);
    fclose(f);
    if (!ok) return gelan_error("%s: not a readable image (%s)", path, stbi_failure_reason());
    if (x <= 0 || y <= 0) return gelan_error("%s: image has a zero size (%dx%d)", path, x, y);
    if (w) *w = x;
    if (h) *h = y;
    if (channels) *channels = c;
    return 0;
}

int image_load(Image *im, const char *path) {
    int x, y, c;
    FILE *f = fopen(path, "rb");
    if (!f) return gelan_error("%s: cannot open (%s)", path, strerror(errno));
    /* 4 channels: stb vectorises JPEG's YCbCr->RGB only for RGBA output; gray
       is replicated, a missing alpha filled, 16-bit samples scaled to 8 */
    uint8_t *p = stbi_load_from_file(f, &x, &y, &c, 4);
    fclose(f);
    if (!p) return gelan_error("%s: cannot decode image (%s)", path, stbi_failure_reason());
    if (x <= 0 || y <= 0) {
        stbi_image_free(p);
        return gelan_error("%s: image has a zero size", path);
    }
    /* RGBA -> RGB in place (pixel i moves from 4i to 3i, never ahead of its
       source), dropping alpha as cv2.imread does; stb's buffer comes from
       malloc, so the Image takes it over */
    size_t n = (size_t)x * y;
    for (size_t i = 1; i < n; i++) p[3 * i] = p[4 * i], p[3 * i + 1] = p[4 * i + 1], p[3 * i + 2] = p[4 * i + 2];
    free(im->data);
    im->data = p, im->w = x, im->h = y;
    return 0;
}

int image_save(const Image *im, const char *path) {
    const char *dot = strrchr(path, '.');
    int ok;
    if (!dot) return gelan_error("image_save: %s has no extension (.png, .jpg or .bmp)", path);
    if (!strcasecmp(dot, ".png"))
        ok = stbi_write_png(path, im->w, im->h, 3, im->data, im->w * 3);
    else if (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"))
        ok = stbi_write_jpg(path, im->w, im->h, 3, im->data, 95);
    else if (!strcasecmp(dot, ".bmp"))
        ok = stbi_write_bmp(path, im->w, im->h, 3, im->data);
    else
        return gelan_error("image_save: %s: unsupported extension %s (use .png, .jpg or .bmp)", path, dot);
    if (!ok) return gelan_error("image_save: cannot write %s", path);
    return 0;
}

/* ---- resize --------------------------------------------------------------- */

/* OpenCV's 8-bit INTER_LINEAR works in fixed point: 11-bit weights per axis,
 * the horizontal pass keeps ints, the vertical pass rounds (sum + 2^21) >> 22. */
enum { COEF_BITS = 11, COEF_ONE = 1 << COEF_BITS };

/* Source index and weights for each destination coordinate (half-pixel
 * centres, clamped at the edges: there the whole weight goes to the edge). */
static void linear_tab(int ssize, int dsize, int *idx, int16_t *a0, int16_t *a1) {
    double scale = (double)ssize / dsize;
    for (int d = 0; d < dsize; d++) {
        float f = (float)((d + 0.5) * scale - 0.5);
        int s = (int)floorf(f);
        f -= s;
        if (s < 0) f = 0, s = 0;
        if (s >= ssize - 1) f = 0, s = ssize - 1;
        idx[d] = s;
        a0[d] = (int16_t)lrintf((1.f - f) * COEF_ONE);
        a1[d] = (int16_t)lrintf(f * COEF_ONE);
    }
}

static void hresize_row(const uint8_t *src, int sw, int dw, const int *xi, const int16_t *xa0, const int16_t *xa1,
                        int32_t *out) {
    for (int x = 0; x < dw; x++) {
        const uint8_t *p = src + xi[x] * 3;
        const uint8_t *q = xi[x] + 1 < sw ? p + 3 : p;
        for (int c = 0; c < 3; c++) out[x * 3 + c] = p[c] * xa0[x] + q[c] * xa1[x];
    }
}

static int resize_linear(const Image *src, Image *dst, int w, int h) {
    int *xi = malloc(sizeof(int) * (w + h));
    int16_t *wa = malloc(sizeof(int16_t) * 2 * (w + h));
    int32_t *rows = malloc(sizeof(int32_t) * 2 * w * 3);
    if (!xi || !wa || !rows) {
        free(xi), free(wa), free(rows);
        return gelan_error("image_resize: out of memory");
    }
    int *yi = xi + w;
    int16_t *xa0 = wa, *xa1 = wa + w, *ya0 = wa + 2 * w, *ya1 = wa + 2 * w + h;
    linear_tab(src->w, w, xi, xa0, xa1);
    linear_tab(src->h, h, yi, ya0, ya1);
    int32_t *r[2] = {rows, rows + w * 3};
    int have[2] = {-1, -1}; /* source row held in r[0], r[1] */
    for (int y = 0; y < h; y++) {
        int s0 = yi[y], s1 = s0 + 1 < src->h ? s0 + 1 : s0;
        /* reuse rows already resampled horizontally (consecutive y share them) */
        if (have[0] != s0) {
            if (have[1] == s0) {
                int32_t *t = r[0];
                r[0] = r[1], r[1] = t;
                have[0] = s0, have[1] = -1;
            } else {
                hresize_row(image_px(src, 0, s0), src->w, w, xi, xa0, xa1, r[0]);
                have[0] = s0;
            }
        }
        if (have[1] != s1) {
            hresize_row(image_px(src, 0, s1), src->w, w, xi, xa0, xa1, r[1]);
            have[1] = s1;
        }
        uint8_t *d = image_px(dst, 0, y);
        int b0 = ya0[y], b1 = ya1[y];
        /* OpenCV's vectorised rounding: 16-bit high products, then (x0 + x1 + 2) >> 2 */
        for (int i = 0; i < w * 3; i++) {
            int v = ((((r[0][i] >> 4) * b0) >> 16) + (((r[1][i] >> 4) * b1) >> 16) + 2) >> 2;
            d[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    free(xi), free(wa), free(rows);
    return 0;
}

/* Area weights along one axis: destination cell d covers the source interval
 * [d * scale, (d + 1) * scale); each source pixel contributes its overlap
 * divided by the cell width (cv2.INTER_AREA, which also ignores slivers of
 * 1e-3 pixel or less). When shrinking, a source pixel meets at most two cells,
 * so the table is kept per source pixel: (cell, weight) twice. */
typedef struct {
    int d[2];
    float w[2];
    int n;
} AreaTab;

static void area_tab(int ssize, int dsize, AreaTab *tab) {
    double scale = (double)ssize / dsize;
    for (int s = 0; s < ssize; s++) tab[s].n = 0;
    for (int d = 0; d < dsize; d++) {
        double f1 = d * scale, f2 = fmin(f1 + scale, (double)ssize);
        double cell = f2 - f1;
        for (int s = (int)floor(f1); s < ssize && s < f2; s++) {
            double ov = fmin(f2, s + 1.0) - fmax(f1, (double)s);
            if (ov <= 1e-3 || tab[s].n == 2) continue;
            tab[s].d[tab[s].n] = d;
            tab[s].w[tab[s].n++] = (float)(ov / cell);
        }
    }
}

static int resize_area(const Image *src, Image *dst, int w, int h) {
    int sw = src->w, sh = src->h;
    AreaTab *xt = malloc(sizeof(AreaTab) * ((size_t)sw + sh));
    float *hrow = malloc(sizeof(float) * (size_t)w * 3);
    float *acc = calloc((size_t)w * h * 3, sizeof(float));
    if (!xt || !hrow || !acc) {
        free(xt), free(hrow), free(acc);
        return gelan_error("image_resize: out of memory");
    }
    AreaTab *yt = xt + sw;
    area_tab(sw, w, xt);
    area_tab(sh, h, yt);
    for (int sy = 0; sy < sh; sy++) {
        if (!yt[sy].n) continue;
        memset(hrow, 0, sizeof(float) * (size_t)w * 3);
        const uint8_t *p = image_px(src, 0, sy);
        for (int sx = 0; sx < sw; sx++, p += 3)
            for (int k = 0; k < xt[sx].n; k++) {
                float *o = hrow + xt[sx].d[k] * 3, wx = xt[sx].w[k];
                o[0] += p[0] * wx, o[1] += p[1] * wx, o[2] += p[2] * wx;
            }
        for (int k = 0; k < yt[sy].n; k++) {
            float *o = acc + (size_t)yt[sy].d[k] * w * 3, wy = yt[sy].w[k];
            for (int i = 0; i < w * 3; i++) o[i] += hrow[i] * wy;
        }
    }
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        long v = lrintf(acc[i]);
        dst->data[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    free(xt), free(hrow), free(acc);
    return 0;
}

/* Shrinking by whole factors: plain block means, rounded as OpenCV's fast
 * path ((sum + 2) >> 2 for 2 x 2 blocks, else round(sum / area)). */
static int resize_area_int(const Image *src, Image *dst, int w, int h) {
    int fx = src->w / w, fy = src->h / h, area = fx * fy;
    float inv = 1.f / area;
    for (int y = 0; y < h; y++) {
        uint8_t *d = image_px(dst, 0, y);
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                int sum = 0;
                for (int j = 0; j < fy; j++) {
                    const uint8_t *p = image_px(src, x * fx, y * fy + j) + c;
                    for (int i = 0; i < fx; i++) sum += p[3 * i];
                }
                d[3 * x + c] = (uint8_t)(area == 4 ? (sum + 2) >> 2 : lrintf(sum * inv));
            }
    }
    return 0;
}

int image_resize(const Image *src, Image *dst, int w, int h, ResizeMode mode) {
    if (src == dst) return gelan_error("image_resize: source and destination must differ");
    if (w <= 0 || h <= 0) return gelan_error("image_resize: bad size %dx%d", w, h);
    if (image_alloc(dst, w, h)) return -1;
    if (w == src->w && h == src->h) {
        memcpy(dst->data, src->data, (size_t)w * h * 3);
        return 0;
    }
    if (mode == RESIZE_AREA && w <= src->w && h <= src->h) {
        if (src->w % w == 0 && src->h % h == 0) return resize_area_int(src, dst, w, h);
        return resize_area(src, dst, w, h);
    }
    return resize_linear(src, dst, w, h);
}

/* ---- letterbox ------------------------------------------------------------ */

int image_letterbox(const Image *src, Image *dst, int new_h, int new_w, bool auto_pad, bool scaleup, int stride,
                    LetterboxInfo *info) {
    if (src == dst) return gelan_error("image_letterbox: source and destination must differ");
    /* Python's round() is round-half-even, as rint() in the default mode. */
    double r = fmin((double)new_h / src->h, (double)new_w / src->w);
    if (!scaleup) r = fmin(r, 1.0);
    int uw = (int)rint(src->w * r), uh = (int)rint(src->h * r);
    double dw = new_w - uw, dh = new_h - uh;
    if (auto_pad && stride > 0) dw = fmod(dw, stride), dh = fmod(dh, stride);
    dw /= 2, dh /= 2;
    int top = (int)rint(dh - 0.1), bottom = (int)rint(dh + 0.1);
    int left = (int)rint(dw - 0.1), right = (int)rint(dw + 0.1);
    Image tmp = {0};
    const Image *res = src;
    if (uw != src->w || uh != src->h) {
        if (image_resize(src, &tmp, uw, uh, RESIZE_LINEAR)) return -1;
        res = &tmp;
    }
    if (image_alloc(dst, uw + left + right, uh + top + bottom)) {
        image_free(&tmp);
        return -1;
    }
    image_fill(dst, IMAGE_PAD_VALUE, IMAGE_PAD_VALUE, IMAGE_PAD_VALUE);
    for (int y = 0; y < uh; y++) memcpy(image_px(dst, left, top + y), image_px(res, 0, y), (size_t)uw * 3);
    image_free(&tmp);
    if (info) {
        info->ratio_w = info->ratio_h = r;
        info->pad_w = dw, info->pad_h = dh;
        info->left = left, info->top = top;
    }
    return 0;
}

/* ---- warp ----------------------------------------------------------------- */

static int invert3(const double m[9], double inv[9]) {
    double a = m[0], b = m[1], c = m[2], d = m[3], e = m[4], f = m[5], g = m[6], h = m[7], i = m[8];
    double A = e * i - f * h, B = -(d * i - f * g), C = d * h - e * g;
    double det = a * A + b * B + c * C;
    if (fabs(det) < 1e-300) return -1;
    double s = 1.0 / det;
    inv[0] = A * s, inv[1] = -(b * i - c * h) * s, inv[2] = (b * f - c * e) * s;
    inv[3] = B * s, inv[4] = (a * i - c * g) * s, inv[5] = -(a * f - c * d) * s;
    inv[6] = C * s, inv[7] = -(a * h - b * g) * s, inv[8] = (a * e - b * d) * s;
    return 0;
}

/* One output pixel from source position (xi, yi) in 1/32 pixels: four taps
 * with 15-bit weights (cv2.remap's INTER_LINEAR table), taps outside the
 * image read the border value 114. */
static void bilinear_tap(const Image *src, int xi, int yi, uint8_t *d) {
    static const uint8_t border[3] = {IMAGE_PAD_VALUE, IMAGE_PAD_VALUE, IMAGE_PAD_VALUE};
    int ix = xi >> 5, iy = yi >> 5, fx = xi & 31, fy = yi & 31;
    const int sw = src->w, sh = src->h;
    if (ix >= sw || ix + 1 < 0 || iy >= sh || iy + 1 < 0) {
        d[0] = d[1] = d[2] = IMAGE_PAD_VALUE;
        return;
    }
    int w00 = (32 - fx) * (32 - fy), w01 = fx * (32 - fy), w10 = (32 - fx) * fy, w11 = fx * fy;
    bool x0in = ix >= 0, x1in = ix + 1 < sw, y0in = iy >= 0, y1in = iy + 1 < sh;
    const uint8_t *p00 = y0in && x0in ? image_px(src, ix, iy) : border;
    const uint8_t *p01 = y0in && x1in ? image_px(src, ix + 1, iy) : border;
    const uint8_t *p10 = y1in && x0in ? image_px(src, ix, iy + 1) : border;
    const uint8_t *p11 = y1in && x1in ? image_px(src, ix + 1, iy + 1) : border;
    for (int c = 0; c < 3; c++) {
        int v = (p00[c] * w00 + p01[c] * w01 + p10[c] * w10 + p11[c] * w11) * 32; /* weights of 2^15 */
        v = (v + (1 << 14)) >> 15;
        d[c] = (uint8_t)(v > 255 ? 255 : v);
    }
}

static int clamp_int(double v) { return v < INT_MIN ? INT_MIN : v > INT_MAX ? INT_MAX : (int)lrint(v); }

/* Output pixels read the source at the inverse-mapped position, computed as
 * OpenCV does: for an affine map in 10-bit fixed point per row and column
 * (then rounded to 1/32 pixel), for a perspective map in doubles. */
int image_warp(const Image *src, Image *dst, int dst_w, int dst_h, const double m[9]) {
    if (src == dst) return gelan_error("image_warp: source and destination must differ");
    bool affine = m[6] == 0 && m[7] == 0 && m[8] == 1;
    double inv[9];
    if (affine) { /* cv::invertAffineTransform */
        double D = m[0] * m[4] - m[1] * m[3];
        if (D == 0) return gelan_error("image_warp: the matrix is singular");
        D = 1.0 / D;
        double a11 = m[4] * D, a22 = m[0] * D, a12 = -m[1] * D, a21 = -m[3] * D;
        double b1 = -a11 * m[2] - a12 * m[5], b2 = -a21 * m[2] - a22 * m[5];
        double t[9] = {a11, a12, b1, a21, a22, b2, 0, 0, 1};
        memcpy(inv, t, sizeof t);
    } else if (invert3(m, inv)) {
        return gelan_error("image_warp: the matrix is singular");
    }
    if (image_alloc(dst, dst_w, dst_h)) return -1;
    enum { AB_BITS = 10, AB_SCALE = 1 << AB_BITS, ROUND_DELTA = AB_SCALE / 32 / 2 };
    int *adelta = affine ? malloc(sizeof(int) * 2 * (size_t)dst_w) : NULL;
    if (affine && !adelta) return gelan_error("image_warp: out of memory");
    for (int x = 0; affine && x < dst_w; x++) {
        adelta[x] = clamp_int(inv[0] * x * AB_SCALE);
        adelta[dst_w + x] = clamp_int(inv[3] * x * AB_SCALE);
    }
    for (int y = 0; y < dst_h; y++) {
        uint8_t *d = image_px(dst, 0, y);
        if (affine) {
            int X0 = clamp_int((inv[1] * y + inv[2]) * AB_SCALE) + ROUND_DELTA;
            int Y0 = clamp_int((inv[4] * y + inv[5]) * AB_SCALE) + ROUND_DELTA;
            for (int x = 0; x < dst_w; x++, d += 3)
                bilinear_tap(src, (X0 + adelta[x]) >> (AB_BITS - 5), (Y0 + adelta[dst_w + x]) >> (AB_BITS - 5), d);
        } else {
            for (int x = 0; x < dst_w; x++, d += 3) {
                double W = inv[6] * x + inv[7] * y + inv[8];
                W = W != 0 ? 32.0 / W : 0;
                double X = (inv[0] * x + inv[1] * y + inv[2]) * W, Y = (inv[3] * x + inv[4] * y + inv[5]) * W;
                bilinear_tap(src, clamp_int(X), clamp_int(Y), d);
            }
        }
    }
    free(adelta);
    return 0;
}

void image_flip_lr(Image *im) {
    for (int y = 0; y < im->h; y++) {
        uint8_t *a = image_px(im, 0, y), *b = image_px(im, im->w - 1, y);
        for (; a < b; a += 3, b -= 3)
            for (int c = 0; c < 3; c++) {
                uint8_t t = a[c];
                a[c] = b[c], b[c] = t;
            }
    }
}

void image_flip_ud(Image *im) {
    size_t row = (size_t)im->w * 3;
    uint8_t *tmp = malloc(row);
    if (!tmp) {
        /* byte-wise swap needs no buffer */
        for (int y = 0; y < im->h / 2; y++) {
            uint8_t *a = image_px(im, 0, y), *b = image_px(im, 0, im->h - 1 - y);
            for (size_t i = 0; i < row; i++) {
                uint8_t t = a[i];
                a[i] = b[i], b[i] = t;
            }
        }
        return;
    }
    for (int y = 0; y < im->h / 2; y++) {
        uint8_t *a = image_px(im, 0, y), *b = image_px(im, 0, im->h - 1 - y);
        memcpy(tmp, a, row), memcpy(a, b, row), memcpy(b, tmp, row);
    }
    free(tmp);
}

/* ---- drawing -------------------------------------------------------------- */

void image_fill_rect(Image *im, int x1, int y1, int x2, int y2, const uint8_t rgb[3]) {
    if (x1 > x2) {
        int t = x1;
        x1 = x2, x2 = t;
    }
    if (y1 > y2) {
        int t = y1;
        y1 = y2, y2 = t;
    }
    if (x1 < 0) x1 = 0;
    if (y1 < 0) y1 = 0;
    if (x2 >= im->w) x2 = im->w - 1;
    if (y2 >= im->h) y2 = im->h - 1;
    for (int y = y1; y <= y2; y++) {
        uint8_t *p = image_px(im, x1, y);
        for (int x = x1; x <= x2; x++, p += 3) p[0] = rgb[0], p[1] = rgb[1], p[2] = rgb[2];
    }
}

void image_draw_rect(Image *im, int x1, int y1, int x2, int y2, const uint8_t rgb[3], int thickness) {
    if (thickness < 1) thickness = 1;
    if (x1 > x2) {
        int t = x1;
        x1 = x2, x2 = t;
    }
    if (y1 > y2) {
        int t = y1;
        y1 = y2, y2 = t;
    }
    for (int t = 0; t < thickness && x1 + t <= x2 - t && y1 + t <= y2 - t; t++) {
        image_fill_rect(im, x1 + t, y1 + t, x2 - t, y1 + t, rgb);
        image_fill_rect(im, x1 + t, y2 - t, x2 - t, y2 - t, rgb);
        image_fill_rect(im, x1 + t, y1 + t, x1 + t, y2 - t, rgb);
        image_fill_rect(im, x2 - t, y1 + t, x2 - t, y2 - t, rgb);
    }
}

/* stb_easy_font indexes a table by (char - 32): only printable ASCII may reach it. */
static void printable(const char *text, char *buf, size_t len) {
    size_t i = 0;
    for (; text[i] && i + 1 < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        buf[i] = ch >= 32 && ch < 127 ? (char)ch : '?';
    }
    buf[i] = 0;
}

int image_text_width(const char *text, int scale) {
    char buf[256];
    printable(text, buf, sizeof buf);
    return stb_easy_font_width(buf) * (scale < 1 ? 1 : scale);
}

int image_text_height(int scale) { return 7 * (scale < 1 ? 1 : scale); }

void image_draw_text(Image *im, int x, int y, const char *text, const uint8_t rgb[3], int scale) {
    char buf[256];
    printable(text, buf, sizeof buf);
    if (scale < 1) scale = 1;
    /* each quad is 4 vertices of 16 bytes (x, y, z floats and a colour) */
    static const int max_quads = 2048;
    float *vb = malloc((size_t)max_quads * 64);
    if (!vb) return;
    int nq = stb_easy_font_print(0, 0, buf, NULL, vb, max_quads * 64);
    for (int q = 0; q < nq; q++) {
        const float *v = vb + q * 16; /* vertex j at v + 4 * j */
        int qx0 = (int)v[0], qy0 = (int)v[1], qx1 = (int)v[8], qy1 = (int)v[9];
        image_fill_rect(im, x + qx0 * scale, y + qy0 * scale, x + qx1 * scale - 1, y + qy1 * scale - 1, rgb);
    }
    free(vb);
}

void class_color(int cls, uint8_t rgb[3]) {
    /* utils/plots.py Colors */
    static const uint32_t pal[20] = {0xFF3838, 0xFF9D97, 0xFF701F, 0xFFB21D, 0xCFD231, 0x48F90A, 0x92CC17,
                                     0x3DDB86, 0x1A9334, 0x00D4BB, 0x2C99A8, 0x00C2FF, 0x344593, 0x6473FF,
                                     0x0018EC, 0x8438FF, 0x520085, 0xCB38FF, 0xFF95C8, 0xFF37C7};
    uint32_t c = pal[(cls < 0 ? -cls : cls) % 20];
    rgb[0] = (uint8_t)(c >> 16), rgb[1] = (uint8_t)(c >> 8), rgb[2] = (uint8_t)c;
}

void image_draw_box_label(Image *im, float x1, float y1, float x2, float y2, const char *label, const uint8_t rgb[3],
                          int thickness) {
    int ix1 = (int)lrintf(x1), iy1 = (int)lrintf(y1), ix2 = (int)lrintf(x2) - 1, iy2 = (int)lrintf(y2) - 1;
    image_draw_rect(im, ix1, iy1, ix2, iy2, rgb, thickness);
    if (!label || !*label) return;
    int scale = im->w >= 1000 || im->h >= 1000 ? 2 : 1;
    int tw = image_text_width(label, scale) + 2 * scale, th = image_text_height(scale) + 3 * scale;
    /* above the box when it fits, else inside its top edge */
    int ty = iy1 - th >= 0 ? iy1 - th : iy1;
    image_fill_rect(im, ix1, ty, ix1 + tw - 1, ty + th - 1, rgb);
    /* Rec. 601 luma decides between white and black text */
    int luma = (299 * rgb[0] + 587 * rgb[1] + 114 * rgb[2]) / 1000;
    const uint8_t white[3] = {255, 255, 255}, black[3] = {0, 0, 0};
    image_draw_text(im, ix1 + scale, ty + 2 * scale, label, luma > 150 ? black : white, scale);
}
