/* Drawings of a model (`gelan graph`): one box per layer with its index,
 * module, output shape at a given image size and parameter count, an arrow
 * from each `from`, and colours that say what `gelan convert` does with the
 * layer: the main branch (kept, renumbered), the auxiliary reversible branch
 * of PGI (CBLinear/CBFuse and every layer only the auxiliary heads need:
 * dropped), and the detection levels (P3, P4, P5...) of every head, the
 * auxiliary heads marked as dropped.
 *
 * Which layers are kept is what convert_single_yaml (nn/convert.h) computes,
 * so the drawing and the conversion cannot disagree. The SVG is plain text
 * written here (no Graphviz); graph_dot writes the same graph for Graphviz. */
#ifndef GELAN_NN_GRAPH_SVG_H
#define GELAN_NN_GRAPH_SVG_H

#include <stddef.h>

#include "nn/model.h"

typedef enum {
    GRAPH_INPUT, /* Silence: the image itself */
    GRAPH_MAIN,  /* kept by gelan convert */
    GRAPH_AUX,   /* dropped by gelan convert: only the auxiliary heads need it */
    GRAPH_HEAD,  /* the detect layer */
} GraphRole;

typedef struct {
    int nlayers, h, w;
    GraphRole *role;     /* [nlayers] */
    int *new_index;      /* [nlayers]: the layer's index in the converted model, -1 when dropped */
    LayerShape *shape;   /* [nlayers]: output at h x w (the detect layer's: its first input) */
    size_t *params;      /* [nlayers] */
    size_t total_params; /* the model's */
    size_t kept_params;  /* what convert keeps: the main layers and the main head */
    int kept_layers;     /* layers of the converted model */
    double gflops;       /* at h x w, 2 x conv multiply-adds */
} GraphInfo;

/* Roles, shapes and counts of every layer for an h x w image. 0, or -1 with
 * gelan_error (sizes that do not fit, a model whose last layer is no head). */
int graph_info(const Model *m, int h, int w, GraphInfo *gi);
void graph_info_free(GraphInfo *gi);
/* "input", "main", "aux", "head" */
const char *graph_role_name(GraphRole r);

/* Parameters of head `head` (0 = the first written; the last is the main
 * one) at level l of the detect layer, or of its DFL when l < 0. */
size_t graph_head_params(const Model *m, int head, int l);

/* The drawing as SVG text or Graphviz DOT text (malloc'd, NUL-terminated).
 * NULL with gelan_error. */
char *graph_svg(const Model *m, int h, int w);
char *graph_dot(const Model *m, int h, int w);

#endif
