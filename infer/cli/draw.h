/* Boxes and labels on RGB images for gelan-infer detect (draw.c), with a tiny
 * built-in bitmap font so that the runtime needs no font files. */
#ifndef GELAN_INFER_CLI_DRAW_H
#define GELAN_INFER_CLI_DRAW_H

typedef struct {
    unsigned char *px; /* h x w x 3 */
    int w, h;
} RgbImage;

void draw_box(RgbImage *im, int x1, int y1, int x2, int y2, const unsigned char rgb[3], int thickness);
void draw_fill(RgbImage *im, int x1, int y1, int x2, int y2, const unsigned char rgb[3]);
/* Text in the built-in 3x5 font (letters shown as capitals), each font pixel
 * scale x scale; returns the width drawn. draw_text_width measures without drawing. */
int draw_text(RgbImage *im, int x, int y, const char *text, int scale, const unsigned char rgb[3]);
int draw_text_width(const char *text, int scale);
#define DRAW_FONT_H 5
/* The colour of class c (the Ultralytics palette). */
const unsigned char *draw_class_color(int c);

#endif
