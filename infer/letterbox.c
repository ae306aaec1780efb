/* Letterbox resize and the way back (official utils/augmentations.py letterbox
 * and utils/general.py scale_boxes). Python's round() rounds halves to even,
 * which is rintf() in the default rounding mode. */
#include <math.h>

#include "infer/infer.h"

void infer_letterbox_geometry(int src_w, int src_h, int target, int stride, int auto_pad, Letterbox *lb) {
    double r = fmin((double)target / src_h, (double)target / src_w); /* Python floats are doubles */
    int new_w = (int)rint(src_w * r), new_h = (int)rint(src_h * r);
    double dw = target - new_w, dh = target - new_h;
    if (auto_pad && stride > 0) {
        dw = fmod(dw, stride);
        dh = fmod(dh, stride);
    }
    dw /= 2, dh /= 2;
    int left = (int)rint(dw - 0.1), right = (int)rint(dw + 0.1);
    int top = (int)rint(dh - 0.1), bottom = (int)rint(dh + 0.1);
    *lb = (Letterbox){.src_w = src_w,
                      .src_h = src_h,
                      .new_w = new_w,
                      .new_h = new_h,
                      .out_w = new_w + left + right,
                      .out_h = new_h + top + bottom,
                      .left = left,
                      .top = top};
    /* scale_boxes recomputes gain and padding from the two shapes */
    lb->gain = fminf((float)lb->out_h / src_h, (float)lb->out_w / src_w);
    lb->pad_x = (lb->out_w - src_w * lb->gain) / 2;
    lb->pad_y = (lb->out_h - src_h * lb->gain) / 2;
}

void infer_letterbox(const unsigned char *rgb, const Letterbox *lb, float *chw) {
    size_t plane = (size_t)lb->out_w * lb->out_h;
    const float gray = 114.f / 255.f;
    for (size_t i = 0; i < 3 * plane; i++) chw[i] = gray;
    float sx = (float)lb->src_w / lb->new_w, sy = (float)lb->src_h / lb->new_h;
    for (int y = 0; y < lb->new_h; y++) {
        /* source coordinate of the pixel centre, clamped to the image like cv2 */
        float fy = (y + 0.5f) * sy - 0.5f;
        if (fy < 0) fy = 0;
        int y0 = (int)fy;
        if (y0 > lb->src_h - 1) y0 = lb->src_h - 1;
        int y1 = y0 + 1 < lb->src_h ? y0 + 1 : y0;
        float wy = fy - y0;
        if (wy > 1) wy = 1;
        for (int x = 0; x < lb->new_w; x++) {
            float fx = (x + 0.5f) * sx - 0.5f;
            if (fx < 0) fx = 0;
            int x0 = (int)fx;
            if (x0 > lb->src_w - 1) x0 = lb->src_w - 1;
            int x1 = x0 + 1 < lb->src_w ? x0 + 1 : x0;
            float wx = fx - x0;
            if (wx > 1) wx = 1;
            const unsigned char *p00 = rgb + ((size_t)y0 * lb->src_w + x0) * 3,
                                *p01 = rgb + ((size_t)y0 * lb->src_w + x1) * 3;
            const unsigned char *p10 = rgb + ((size_t)y1 * lb->src_w + x0) * 3,
                                *p11 = rgb + ((size_t)y1 * lb->src_w + x1) * 3;
            size_t o = (size_t)(y + lb->top) * lb->out_w + x + lb->left;
            for (int c = 0; c < 3; c++) {
                float top = p00[c] + (p01[c] - p00[c]) * wx, bot = p10[c] + (p11[c] - p10[c]) * wx;
                chw[c * plane + o] = (top + (bot - top) * wy) / 255.f;
            }
        }
    }
}

void infer_scale_boxes(const Letterbox *lb, InferBox *boxes, int n) {
    for (int i = 0; i < n; i++) {
        InferBox *b = &boxes[i];
        b->x1 = fminf(fmaxf((b->x1 - lb->pad_x) / lb->gain, 0.f), (float)lb->src_w);
        b->x2 = fminf(fmaxf((b->x2 - lb->pad_x) / lb->gain, 0.f), (float)lb->src_w);
        b->y1 = fminf(fmaxf((b->y1 - lb->pad_y) / lb->gain, 0.f), (float)lb->src_h);
        b->y2 = fminf(fmaxf((b->y2 - lb->pad_y) / lb->gain, 0.f), (float)lb->src_h);
    }
}
