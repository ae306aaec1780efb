/* 8-bit RGB images: loading, saving, resizing, letterboxing, warping and
 * drawing, with the semantics of the OpenCV calls that the official YOLOv9
 * data pipeline makes (cv2.imread, cv2.resize, letterbox, cv2.warpAffine /
 * cv2.warpPerspective, cv2.imwrite).
 *
 * An Image is uint8 RGB, HWC, rows packed (stride = 3 * w). The official code
 * works on BGR; only the channel order differs, every operation here is
 * channel-wise or colour-space aware (see augment.h for HSV).
 *
 * Files go through stb_image / stb_image_write (JPEG, PNG, BMP, TGA, PNM,
 * PSD, GIF first frame; grayscale and RGBA become RGB, alpha is dropped as
 * cv2.imread does). EXIF orientation is NOT applied (cv2.imread does apply
 * it): images with an orientation tag load as stored. */
#ifndef GELAN_TRAIN_IMAGE_H
#define GELAN_TRAIN_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Start Images as {0}; functions that fill one reuse or replace its buffer. */
typedef struct {
    int w, h;
    uint8_t *data; /* h * w * 3 bytes, RGB */
} Image;

#define IMAGE_PAD_VALUE 114 /* the official letterbox / mosaic / warp border grey */

/* Allocates an uninitialised w x h image (frees what *im held). 0 or -1. */
int image_alloc(Image *im, int w, int h);
/* Every pixel = (r, g, b). */
void image_fill(Image *im, uint8_t r, uint8_t g, uint8_t b);
void image_free(Image *im);
int image_copy(const Image *src, Image *dst);
static inline uint8_t *image_px(const Image *im, int x, int y) { return im->data + ((size_t)y * im->w + x) * 3; }

/* Decodes a file into RGB. -1 with a message naming the file on failure. */
int image_load(Image *im, const char *path);
/* Reads only the header: size and channels in the file. -1 if the file is not
 * an image stb can read (or has a zero size). */
int image_probe(const char *path, int *w, int *h, int *channels);
/* Writes .png, .jpg/.jpeg (quality 95) or .bmp, chosen by the extension. */
int image_save(const Image *im, const char *path);

/* Resampling, as cv2.resize: pixel centres aligned ((x + 0.5) * scale - 0.5),
 * edges replicated, fixed-point weights as OpenCV's 8-bit path. */
typedef enum {
    RESIZE_LINEAR, /* cv2.INTER_LINEAR */
    RESIZE_AREA,   /* cv2.INTER_AREA: exact pixel-area average when shrinking;
                      when enlarging it falls back to RESIZE_LINEAR (OpenCV uses a
                      slightly different bilinear there; the pipeline never asks) */
} ResizeMode;
int image_resize(const Image *src, Image *dst, int w, int h, ResizeMode mode);

/* Letterbox (utils/augmentations.py letterbox): scale by
 * r = min(new_h / h, new_w / w) (capped at 1 without scaleup), resize to
 * (round(w r), round(h r)) with RESIZE_LINEAR, pad with 114 to new_w x new_h
 * (or, with `auto`, only to the next multiple of `stride`). The padding is
 * split as the official: dw = (new_w - round(w r)) / 2, left = round(dw - 0.1),
 * right = round(dw + 0.1) (same for the height). */
typedef struct {
    double ratio_w, ratio_h; /* new / old, equal unless scaleFill (unused) */
    double pad_w, pad_h;     /* dw, dh: what the official returns as `pad`; boxes
                                map as x' = x * ratio_w + pad_w */
    int left, top;           /* where the resized image was put (integers) */
} LetterboxInfo;
int image_letterbox(const Image *src, Image *dst, int new_h, int new_w, bool auto_pad, bool scaleup, int stride,
                    LetterboxInfo *info);

/* dst (dst_w x dst_h) = src warped by the 3x3 matrix m (row-major, maps src
 * pixel coordinates to dst coordinates, as cv2.warpAffine/warpPerspective take
 * it), bilinear with 1/32-pixel fixed-point coordinates, border 114. When
 * m[6] = m[7] = 0 and m[8] = 1 it is an affine warp. */
int image_warp(const Image *src, Image *dst, int dst_w, int dst_h, const double m[9]);

/* In-place flips. */
void image_flip_lr(Image *im);
void image_flip_ud(Image *im);

/* Drawing (clipped to the image). Rectangles are given by inclusive pixel
 * corners; `thickness` grows inwards. */
void image_fill_rect(Image *im, int x1, int y1, int x2, int y2, const uint8_t rgb[3]);
void image_draw_rect(Image *im, int x1, int y1, int x2, int y2, const uint8_t rgb[3], int thickness);
/* Text in a built-in bitmap font (stb_easy_font, printable ASCII; other bytes
 * print as '?'), each font pixel drawn as a scale x scale block; (x, y) is the
 * top-left corner. Glyphs are about 7 px tall and 6 px wide per scale unit. */
void image_draw_text(Image *im, int x, int y, const char *text, const uint8_t rgb[3], int scale);
int image_text_width(const char *text, int scale);
int image_text_height(int scale);
/* A detection as the official plots draw it: box outline, and above it (or
 * inside when there is no room) the label on a filled background in the box
 * colour, in white or black text, whichever reads better. */
void image_draw_box_label(Image *im, float x1, float y1, float x2, float y2, const char *label, const uint8_t rgb[3],
                          int thickness);
/* A colour per class index (the official 20-colour palette, cycled). */
void class_color(int cls, uint8_t rgb[3]);

#endif
