/* The built-in synthetic data set "shapes": coloured rectangles, ellipses and
 * triangles (classes 0, 1, 2) on textured backgrounds (gradients, stripes,
 * smooth noise, all with pixel noise), so that training, validation and the
 * demo run with no download.
 *
 * Every image is a pure function of (seed, split, index): nothing is stored,
 * the same seed gives the same bytes. Objects are drawn without
 * anti-aliasing (a pixel belongs to a shape when its centre does), so the
 * labels are exact: each box is the bounding box of the pixels of its shape.
 * Scenes hold 1 to 6 objects (about 8% hold none), from about 5% to 45% of
 * the image side, fully inside the image; a shape may partly cover one drawn
 * before it, but never more than 40% of either box overlaps the other, so no
 * object is hidden. Shapes are flat-coloured, with random hues, and the class
 * never depends on the colour. */
#ifndef GELAN_TRAIN_SHAPES_H
#define GELAN_TRAIN_SHAPES_H

#include <stdbool.h>
#include <stdint.h>

#include "train/image.h"

enum { SHAPE_RECTANGLE, SHAPE_ELLIPSE, SHAPE_TRIANGLE, SHAPES_NC };
#define SHAPES_MAX_OBJECTS 6

extern const char *const shapes_class_names[SHAPES_NC]; /* "rectangle", "ellipse", "triangle" */

typedef struct {
    int cls;
    uint8_t rgb[3];
    /* geometry in pixels: rectangle x0, y0, x1, y1 (integers, x1/y1 exclusive);
       ellipse cx, cy, rx, ry, angle; triangle x0, y0, x1, y1, x2, y2 */
    float p[6];
    int box[4]; /* bounding box of the shape's pixels: x1, y1 inclusive, x2, y2 exclusive */
} ShapeObject;

typedef struct {
    int size; /* images are size x size */
    int n;
    ShapeObject obj[SHAPES_MAX_OBJECTS];
    int bg_kind; /* 0 gradient, 1 stripes, 2 smooth noise */
    uint8_t bg_a[3], bg_b[3];
    float bg_angle, bg_period;
    uint64_t noise_seed;
} ShapesScene;

/* The scene of image `index` of split `split` (0 train, 1 val). */
void shapes_scene(uint64_t seed, int split, int index, int size, ShapesScene *sc);
/* Does object o cover pixel (x, y)? (its centre is inside the shape) */
bool shapes_covers(const ShapeObject *o, int x, int y);
/* Draws the scene into im (allocated size x size). */
int shapes_render(const ShapesScene *sc, Image *im);
/* mask[y * size + x] = 1 where object k covers the pixel, else 0. */
void shapes_mask(const ShapesScene *sc, int k, uint8_t *mask);
/* n rows [class, cx, cy, w, h], normalised by the image size. */
void shapes_labels(const ShapesScene *sc, float *rows);

#endif
