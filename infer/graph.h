/* The text graph of an inference model (internal to infer/; the format is
 * documented in docs/FORMATS.md).
 *
 * One node per line: `OP OUT[,OUT...] IN[,IN...] key=value...`; `#` starts a
 * comment. Values are named; `input` is the model input, every other name is
 * defined exactly once, before its first use. graph_parse checks the syntax,
 * the keys of each op and the names; channel counts and weights are checked
 * by the model loader. */
#ifndef GELAN_INFER_GRAPH_H
#define GELAN_INFER_GRAPH_H

typedef enum { OP_CONV, OP_MAXPOOL, OP_AVGPOOL, OP_UPSAMPLE, OP_CONCAT, OP_SPLIT, OP_ADD, OP_DETECT, OP_QCONV } OpType;

#define GRAPH_MAX_LIST 64 /* inputs, outputs or list items of one node */

typedef struct {
    OpType op;
    int line;   /* 1-based line in the graph text */
    char *text; /* the line as written (for messages and profiles) */
    int nin, nout;
    int in[GRAPH_MAX_LIST], out[GRAPH_MAX_LIST]; /* value ids */
    /* keys (those the op does not take keep their defaults) */
    int c, k, s, p, d, g, act;
    float alpha;
    int count_include_pad;
    int scale, size_h, size_w; /* upsample: scale > 0, or size */
    int nsizes, sizes[GRAPH_MAX_LIST];
    int nc, reg_max, nstrides;
    float strides[GRAPH_MAX_LIST];
    char *w, *b; /* weight and bias tensor names (conv, qconv) */
    char *ws;    /* qconv: per-output-channel weight scales (w holds the int8 codes) */
    float sx;    /* qconv: input scale s_x */
    int zp;      /* qconv: input zero point, 0..255 */
} GraphNode;

typedef struct {
    char *name;
    int producer; /* node index; -1 for `input` */
} GraphValue;

typedef struct {
    GraphNode *nodes;
    int nnodes;
    GraphValue *values; /* values[0] is `input` */
    int nvalues;
} Graph;

/* 0, or -1 with "graph line N: ..." */
int graph_parse(const char *text, Graph *g);
void graph_free(Graph *g);
const char *graph_op_name(OpType op);

#endif
