#include "train/shapes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/error.h"
#include "tensor/rng.h"

const char *const shapes_class_names[SHAPES_NC] = {"rectangle", "ellipse", "triangle"};

/* splitmix64 finaliser: spreads (seed, split, index) into independent streams */
static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void hsv_to_rgb(float h, float s, float v, uint8_t rgb[3]) {
    float c = v * s, hp = h * 6.f, x = c * (1.f - fabsf(fmodf(hp, 2.f) - 1.f)), m = v - c;
    float r = 0, g = 0, b = 0;
    int k = (int)hp % 6;
    if (k == 0) r = c, g = x;
    if (k == 1) r = x, g = c;
    if (k == 2) g = c, b = x;
    if (k == 3) g = x, b = c;
    if (k == 4) r = x, b = c;
    if (k == 5) r = c, b = x;
    rgb[0] = (uint8_t)lrintf((r + m) * 255.f);
    rgb[1] = (uint8_t)lrintf((g + m) * 255.f);
    rgb[2] = (uint8_t)lrintf((b + m) * 255.f);
}

bool shapes_covers(const ShapeObject *o, int x, int y) {
    const float *p = o->p;
    float px = x + 0.5f, py = y + 0.5f;
    switch (o->cls) {
        case SHAPE_RECTANGLE:
            return x >= (int)p[0] && x < (int)p[2] && y >= (int)p[1] && y < (int)p[3];
        case SHAPE_ELLIPSE: {
            float dx = px - p[0], dy = py - p[1], c = cosf(p[4]), s = sinf(p[4]);
            float u = (dx * c + dy * s) / p[2], v = (-dx * s + dy * c) / p[3];
            return u * u + v * v <= 1.f;
        }
        default: {
            /* the centre is inside when it is on the same side of all three edges */
            float e[3];
            for (int i = 0; i < 3; i++) {
                float ax = p[2 * i], ay = p[2 * i + 1], bx = p[(2 * i + 2) % 6], by = p[(2 * i + 3) % 6];
                e[i] = (bx - ax) * (py - ay) - (by - ay) * (px - ax);
            }
            return (e[0] >= 0 && e[1] >= 0 && e[2] >= 0) || (e[0] <= 0 && e[1] <= 0 && e[2] <= 0);
        }
    }
}

/* Bounding box of the covered pixels inside [x0,x1) x [y0,y1); 0 if none. */
static int covered_box(const ShapeObject *o, int x0, int y0, int x1, int y1, int box[4]) {
    int bx1 = x1, by1 = y1, bx2 = x0 - 1, by2 = y0 - 1;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
            if (shapes_covers(o, x, y)) {
                if (x < bx1) bx1 = x;
                if (x > bx2) bx2 = x;
                if (y < by1) by1 = y;
                if (y > by2) by2 = y;
            }
    if (bx2 < bx1) return 0;
    box[0] = bx1, box[1] = by1, box[2] = bx2 + 1, box[3] = by2 + 1;
    return 1;
}

/* Intersection over the smaller box's area. */
static float overlap_of_smaller(const int a[4], const int b[4]) {
    int iw = (a[2] < b[2] ? a[2] : b[2]) - (a[0] > b[0] ? a[0] : b[0]);
    int ih = (a[3] < b[3] ? a[3] : b[3]) - (a[1] > b[1] ? a[1] : b[1]);
    if (iw <= 0 || ih <= 0) return 0;
    float aa = (float)(a[2] - a[0]) * (a[3] - a[1]), ab = (float)(b[2] - b[0]) * (b[3] - b[1]);
    return (float)iw * ih / (aa < ab ? aa : ab);
}

/* Proposes one object of class cls and longest extent about `ext` pixels,
 * placed fully inside the image; returns its pixel box through o->box. */
static int propose(Rng *r, int cls, float ext, int size, ShapeObject *o) {
    o->cls = cls;
    memset(o->p, 0, sizeof o->p);
    float lo[2], hi[2]; /* extent of the shape around its reference point */
    if (cls == SHAPE_RECTANGLE) {
        int w = (int)lrintf(ext * rng_range(r, 0.4f, 1.f)), h = (int)lrintf(ext * rng_range(r, 0.4f, 1.f));
        if (w < 4) w = 4;
        if (h < 4) h = 4;
        if (w > size || h > size) return 0;
        int x0 = (int)rng_below(r, (uint32_t)(size - w + 1)), y0 = (int)rng_below(r, (uint32_t)(size - h + 1));
        o->p[0] = (float)x0, o->p[1] = (float)y0, o->p[2] = (float)(x0 + w), o->p[3] = (float)(y0 + h);
        return covered_box(o, x0, y0, x0 + w, y0 + h, o->box);
    }
    float cx, cy;
    if (cls == SHAPE_ELLIPSE) {
        float rx = 0.5f * ext * rng_range(r, 0.5f, 1.f), ry = 0.5f * ext * rng_range(r, 0.5f, 1.f);
        if (rx < 2.5f) rx = 2.5f;
        if (ry < 2.5f) ry = 2.5f;
        float a = rng_range(r, 0.f, (float)M_PI), c = cosf(a), s = sinf(a);
        float ex = sqrtf(rx * rx * c * c + ry * ry * s * s), ey = sqrtf(rx * rx * s * s + ry * ry * c * c);
        o->p[2] = rx, o->p[3] = ry, o->p[4] = a;
        lo[0] = -ex, hi[0] = ex, lo[1] = -ey, hi[1] = ey;
    } else {
        /* a jittered equilateral triangle: never degenerate */
        float rad = 0.5f * ext, a0 = rng_range(r, 0.f, 2.f * (float)M_PI);
        if (rad < 3.f) rad = 3.f;
        lo[0] = lo[1] = 1e9f, hi[0] = hi[1] = -1e9f;
        for (int i = 0; i < 3; i++) {
            float a = a0 + i * 2.f * (float)M_PI / 3.f + rng_range(r, -0.35f, 0.35f);
            float rr = rad * rng_range(r, 0.75f, 1.f);
            float vx = rr * cosf(a), vy = rr * sinf(a);
            o->p[2 * i] = vx, o->p[2 * i + 1] = vy;
            lo[0] = fminf(lo[0], vx), hi[0] = fmaxf(hi[0], vx), lo[1] = fminf(lo[1], vy), hi[1] = fmaxf(hi[1], vy);
        }
    }
    float span_x = size - (hi[0] - lo[0]) - 2.f, span_y = size - (hi[1] - lo[1]) - 2.f;
    if (span_x < 0 || span_y < 0) return 0;
    cx = 1.f - lo[0] + rng_range(r, 0.f, span_x);
    cy = 1.f - lo[1] + rng_range(r, 0.f, span_y);
    if (cls == SHAPE_ELLIPSE) {
        o->p[0] = cx, o->p[1] = cy;
    } else {
        for (int i = 0; i < 3; i++) o->p[2 * i] += cx, o->p[2 * i + 1] += cy;
    }
    int x0 = (int)floorf(cx + lo[0]) - 1, x1 = (int)ceilf(cx + hi[0]) + 1;
    int y0 = (int)floorf(cy + lo[1]) - 1, y1 = (int)ceilf(cy + hi[1]) + 1;
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > size) x1 = size;
    if (y1 > size) y1 = size;
    if (!covered_box(o, x0, y0, x1, y1, o->box)) return 0;
    /* thin slivers make poor objects */
    return o->box[2] - o->box[0] >= 4 && o->box[3] - o->box[1] >= 4;
}

void shapes_scene(uint64_t seed, int split, int index, int size, ShapesScene *sc) {
    Rng r;
    rng_seed(&r, mix64(mix64(seed ^ 0x5348415045530000ull) ^ ((uint64_t)split << 32) ^ (uint64_t)(uint32_t)index));
    memset(sc, 0, sizeof *sc);
    sc->size = size;

    /* background: muted colours, so objects stand out but not trivially */
    sc->bg_kind = (int)rng_below(&r, 3);
    hsv_to_rgb(rng_uniform(&r), rng_range(&r, 0.f, 0.35f), rng_range(&r, 0.2f, 0.9f), sc->bg_a);
    hsv_to_rgb(rng_uniform(&r), rng_range(&r, 0.f, 0.35f), rng_range(&r, 0.2f, 0.9f), sc->bg_b);
    sc->bg_angle = rng_range(&r, 0.f, (float)M_PI);
    sc->bg_period = rng_range(&r, 6.f, 28.f);
    sc->noise_seed = rng_u64(&r);

    int want = rng_uniform(&r) < 0.08f ? 0 : 1 + (int)rng_below(&r, SHAPES_MAX_OBJECTS);
    float lmin = logf(0.05f), lmax = logf(0.45f);
    for (int tries = 0; sc->n < want && tries < 50 * SHAPES_MAX_OBJECTS; tries++) {
        ShapeObject o;
        int cls = (int)rng_below(&r, SHAPES_NC);
        float ext = size * expf(rng_range(&r, lmin, lmax));
        if (!propose(&r, cls, ext, size, &o)) continue;
        int ok = 1;
        for (int j = 0; j < sc->n && ok; j++)
            if (overlap_of_smaller(o.box, sc->obj[j].box) > 0.4f) ok = 0;
        if (!ok) continue;
        hsv_to_rgb(rng_uniform(&r), rng_range(&r, 0.55f, 1.f), rng_range(&r, 0.45f, 1.f), o.rgb);
        sc->obj[sc->n++] = o;
    }
}

/* Smooth noise: random values on a coarse grid, bilinearly interpolated. */
static float grid_value(uint64_t seed, int gx, int gy) {
    uint64_t h = mix64(seed ^ ((uint64_t)(uint32_t)gx << 32 | (uint32_t)gy));
    return (float)(h >> 40) * (1.f / 16777216.f);
}

int shapes_render(const ShapesScene *sc, Image *im) {
    int n = sc->size;
    if (image_alloc(im, n, n)) return -1;
    float ca = cosf(sc->bg_angle), sa = sinf(sc->bg_angle), per = sc->bg_period;
    for (int y = 0; y < n; y++) {
        uint8_t *p = image_px(im, 0, y);
        for (int x = 0; x < n; x++, p += 3) {
            float t;
            float proj = (x - 0.5f * n) * ca + (y - 0.5f * n) * sa;
            if (sc->bg_kind == 0) {
                t = 0.5f + proj / (1.4143f * n);
            } else if (sc->bg_kind == 1) {
                t = fmodf(proj + 4.f * n, per) < 0.5f * per ? 0.f : 1.f;
            } else {
                float gx = x / per, gy = y / per;
                int ix = (int)gx, iy = (int)gy;
                float fx = gx - ix, fy = gy - iy;
                float v00 = grid_value(sc->noise_seed, ix, iy), v01 = grid_value(sc->noise_seed, ix + 1, iy);
                float v10 = grid_value(sc->noise_seed, ix, iy + 1), v11 = grid_value(sc->noise_seed, ix + 1, iy + 1);
                t = (v00 * (1 - fx) + v01 * fx) * (1 - fy) + (v10 * (1 - fx) + v11 * fx) * fy;
            }
            /* +-10 grey levels of per-pixel noise on top */
            int jitter = (int)(mix64(sc->noise_seed + (uint64_t)y * 65536u + (uint64_t)x) % 21u) - 10;
            for (int c = 0; c < 3; c++) {
                int v = (int)lrintf(sc->bg_a[c] + (sc->bg_b[c] - sc->bg_a[c]) * t) + jitter;
                p[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
    for (int k = 0; k < sc->n; k++) {
        const ShapeObject *o = &sc->obj[k];
        for (int y = o->box[1]; y < o->box[3]; y++)
            for (int x = o->box[0]; x < o->box[2]; x++)
                if (shapes_covers(o, x, y)) {
                    uint8_t *p = image_px(im, x, y);
                    p[0] = o->rgb[0], p[1] = o->rgb[1], p[2] = o->rgb[2];
                }
    }
    return 0;
}

void shapes_mask(const ShapesScene *sc, int k, uint8_t *mask) {
    int n = sc->size;
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++) mask[(size_t)y * n + x] = shapes_covers(&sc->obj[k], x, y);
}

void shapes_labels(const ShapesScene *sc, float *rows) {
    float s = (float)sc->size;
    for (int k = 0; k < sc->n; k++) {
        const int *b = sc->obj[k].box;
        float *r = rows + 5 * k;
        r[0] = (float)sc->obj[k].cls;
        r[1] = 0.5f * (b[0] + b[2]) / s;
        r[2] = 0.5f * (b[1] + b[3]) / s;
        r[3] = (b[2] - b[0]) / s;
        r[4] = (b[3] - b[1]) / s;
    }
}
