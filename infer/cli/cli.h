/* build/gelan-infer: shared pieces of its subcommands. */
#ifndef GELAN_INFER_CLI_H
#define GELAN_INFER_CLI_H

#include <stddef.h>

typedef enum { OPT_STR, OPT_INT, OPT_FLOAT } OptKind;

typedef struct {
    const char *name; /* "--model" */
    OptKind kind;
    void *value;      /* const char **, int *, float * */
    const char *help; /* "M: what" */
} Opt;

/* Parses argv[1..] (argv[0] is the subcommand). Returns 0 ok; 1 after
 * printing --help (exit 0); 2 after printing a one-line reason and the usage
 * to stderr (exit 2). */
int opts_parse(int argc, char **argv, const char *usage, const Opt *opts, int nopts);
int opts_usage_error(const char *usage, const Opt *opts, int nopts, const char *fmt, ...);

int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_detect(int argc, char **argv);

/* ---- drawing on RGB images (draw.c) ---- */
typedef struct {
    unsigned char *px; /* h x w x 3 */
    int w, h;
} Image;

void draw_box(Image *im, int x1, int y1, int x2, int y2, const unsigned char rgb[3], int thickness);
void draw_fill(Image *im, int x1, int y1, int x2, int y2, const unsigned char rgb[3]);
/* Text in the built-in 3x5 font (letters shown as capitals), each font pixel
 * scale x scale; returns the width drawn. text_width measures without drawing. */
int draw_text(Image *im, int x, int y, const char *text, int scale, const unsigned char rgb[3]);
int text_width(const char *text, int scale);
#define FONT_H 5
/* The colour of class c (the Ultralytics palette). */
const unsigned char *class_color(int c);

#endif
