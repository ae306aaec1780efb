/* gelan graph: SVG and DOT drawings of a model (nn/graph_svg.h).
 *
 * Layout. The YAML is a list of chains: a row that reads the row before it
 * continues a chain, any other row starts a new one (the auxiliary backbone
 * of yolov9-c starts at `[0, 1, Conv, ...]`, a CBLinear taps a backbone
 * level). Each chain goes down one column; it starts one row below the layer
 * it first reads (a CBLinear beside it), in the leftmost column of its role
 * (main or auxiliary) to the right of that layer where its rows are free.
 * The detect layer spans the bottom, one cell per head and level.
 *
 * Arrows never cross a box: they leave a box sideways into the gutter
 * between two columns, run along it (each in its own lane), cross to another
 * gutter through the gap between two rows, and enter the target from the
 * side (a chain's next row: straight down; a detect cell: from the top).
 * Arrows are drawn first and boxes over them. */
#include "nn/graph_svg.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/convert.h"
#include "nn/textbuf.h"
#include "tensor/error.h"

/* ---- escapes (text into nn/textbuf.h) ----------------------------------------------- */
/* s escaped for XML text and attribute values (also DOT strings: quote). */
static void put_xml(TextBuf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
            case '&':
                textbuf_add(b, "&amp;");
                break;
            case '<':
                textbuf_add(b, "&lt;");
                break;
            case '>':
                textbuf_add(b, "&gt;");
                break;
            case '"':
                textbuf_add(b, "&quot;");
                break;
            case '\'':
                textbuf_add(b, "&apos;");
                break;
            default:
                if ((unsigned char)*s >= 32) textbuf_add(b, "%c", *s);
        }
    }
}

static void put_dot(TextBuf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            textbuf_add(b, "\\%c", *s);
        else if ((unsigned char)*s >= 32)
            textbuf_add(b, "%c", *s);
    }
}

/* ---- roles and counts --------------------------------------------------------------- */
const char *graph_role_name(GraphRole r) {
    static const char *names[] = {"input", "main", "aux", "head"};
    return (unsigned)r < 4 ? names[r] : "?";
}

static size_t prefix_params(const Model *m, const char *prefix) {
    size_t n = 0, len = strlen(prefix);
    for (int i = 0; i < m->nparams; i++)
        if (!strncmp(m->params[i].name, prefix, len)) n += m->params[i].t->numel;
    return n;
}

size_t graph_head_params(const Model *m, int head, int l) {
    char p[64];
    int D = m->nlayers - 1;
    if (l < 0) {
        if (head == 0)
            snprintf(p, sizeof p, "model.%d.dfl.", D);
        else
            snprintf(p, sizeof p, "model.%d.dfl%d.", D, head + 1);
        return prefix_params(m, p);
    }
    snprintf(p, sizeof p, "model.%d.cv%d.%d.", D, 2 + 2 * head, l);
    size_t n = prefix_params(m, p);
    snprintf(p, sizeof p, "model.%d.cv%d.%d.", D, 3 + 2 * head, l);
    return n + prefix_params(m, p);
}

void graph_info_free(GraphInfo *gi) {
    free(gi->role);
    free(gi->new_index);
    free(gi->shape);
    free(gi->params);
    memset(gi, 0, sizeof *gi);
}

int graph_info(const Model *m, int h, int w, GraphInfo *gi) {
    memset(gi, 0, sizeof *gi);
    int n = m->nlayers;
    if (n < 1 || !m->detect || m->layers[n - 1].kind != BLOCK_DETECT)
        return gelan_error("graph: the last layer of %s is not a detect head", m->name);
    gi->nlayers = n, gi->h = h, gi->w = w;
    gi->role = calloc((size_t)n, sizeof *gi->role);
    gi->new_index = malloc((size_t)n * sizeof *gi->new_index);
    gi->shape = calloc((size_t)n, sizeof *gi->shape);
    gi->params = calloc((size_t)n, sizeof *gi->params);
    if (!gi->role || !gi->new_index || !gi->shape || !gi->params) {
        graph_info_free(gi);
        return gelan_error("graph: out of memory");
    }
    double macs = 0;
    if (model_shapes(m, h, w, gi->shape, &macs, NULL)) {
        graph_info_free(gi);
        return -1;
    }
    gi->gflops = 2.0 * macs / 1e9;
    int *old_of = NULL, n_new = 0;
    char *yaml = convert_single_yaml(m, &old_of, &n_new);
    if (!yaml) {
        gelan_error_prefix("graph: %s", m->name);
        graph_info_free(gi);
        return -1;
    }
    free(yaml);
    for (int i = 0; i < n; i++) gi->new_index[i] = -1;
    for (int j = 0; j < n_new; j++) {
        if (old_of[j] >= 0)
            gi->new_index[old_of[j]] = j;
        else if (m->layers[0].kind == BLOCK_SILENCE)
            gi->new_index[0] = j; /* the Silence put first again */
    }
    free(old_of);
    gi->kept_layers = n_new;
    const Detect *d = m->detect;
    for (int i = 0; i < n; i++) {
        const Layer *L = &m->layers[i];
        gi->params[i] = layer_num_params(m, L);
        gi->total_params += gi->params[i];
        if (L->kind == BLOCK_DETECT)
            gi->role[i] = GRAPH_HEAD;
        else if (L->kind == BLOCK_SILENCE)
            gi->role[i] = GRAPH_INPUT;
        else
            gi->role[i] = gi->new_index[i] >= 0 ? GRAPH_MAIN : GRAPH_AUX;
        if (gi->role[i] == GRAPH_MAIN) gi->kept_params += gi->params[i];
    }
    int main_head = d->nheads - 1;
    for (int l = -1; l < d->nl; l++) gi->kept_params += graph_head_params(m, main_head, l);
    return 0;
}

/* ---- layout ------------------------------------------------------------------------- */
enum {
    BOX_W = 184,
    BOX_H = 50,
    GAP = 28,            /* between rows */
    ROW_H = BOX_H + GAP, /* row pitch */
    GUT = 70,            /* gutter between columns */
    MARGIN = 70,         /* left of column 0: its gutter */
    TOP = 118,           /* title and legend above */
    CELL_W = 176,        /* detect cells */
    CELL_GAP = 12,
    LANE = 7, /* spacing of arrows running side by side */
    MAX_LANES = (GUT - 14) / LANE,
};

#define MAX_COLS 64

typedef struct {
    int col, row;
    double x0, y0; /* top left */
} Place;

typedef struct {
    int head, level, src, k; /* input k of the detect layer */
    double x0, y0;
} Cell;

/* A vertical run in a gutter, for lane allocation. */
typedef struct {
    int gutter, lane;
    double y0, y1;
} Run;

typedef struct {
    const Model *m;
    GraphInfo gi;
    bool image_box; /* a box for the image (no Silence layer reads it for the others) */
    Place image;
    Place *p; /* [nlayers] (the detect layer: unused) */
    int ncols, nrows;
    GraphRole col_role[MAX_COLS];
    int col_nseg[MAX_COLS];
    int (*col_seg)[2]; /* occupied row ranges per column: col * nlayers + s */
    Cell cells[DETECT_MAX_HEADS * DETECT_MAX_LEVELS];
    int ncells;
    double det_x0, det_y0, det_w, det_h, bus_y0;
    double width, height;
    Run *runs;
    int nruns, cap_runs;
    bool oom;
} Layout;

static GraphRole lane_class(GraphRole r) { return r == GRAPH_AUX ? GRAPH_AUX : GRAPH_MAIN; }

static bool col_free(const Layout *Y, int c, int r0, int r1, int reads_row_above) {
    for (int s = 0; s < Y->col_nseg[c]; s++) {
        const int *g = Y->col_seg[c * Y->m->nlayers + s];
        /* a free row between chains, unless the new one reads the box right above it */
        int end = g[1] + (g[1] == reads_row_above ? 0 : 1);
        if (r0 <= end && g[0] <= r1 + 1) return false;
    }
    return true;
}

/* Which layer input k of layer i reads, or -2 for the image when it has no box. */
static int src_box(const Layout *Y, const Layer *L, int k) {
    return L->src[k] >= 0 ? L->src[k] : (Y->image_box ? -1 : -2);
}

static const Place *place_of(const Layout *Y, int s) { return s == -1 ? &Y->image : &Y->p[s]; }

static int layout(Layout *Y) {
    const Model *m = Y->m;
    int n = m->nlayers, D = n - 1;
    Y->p = calloc((size_t)n, sizeof *Y->p);
    Y->col_seg = malloc(sizeof *Y->col_seg * (size_t)n * MAX_COLS);
    if (!Y->p || !Y->col_seg) return gelan_error("graph: out of memory");
    for (int i = 0; i < D; i++)
        for (int k = 0; k < m->layers[i].nfrom; k++)
            if (m->layers[i].src[k] < 0 && m->layers[i].kind != BLOCK_SILENCE) Y->image_box = true;
    Y->image = (Place){0, 0, 0, 0};
    int i = 0;
    while (i < D) {
        /* the chain starting at i */
        const Layer *L = &m->layers[i];
        GraphRole cls = lane_class(Y->gi.role[i]);
        int j = i + 1;
        if (L->kind != BLOCK_CBLINEAR)
            for (; j < D; j++) {
                const Layer *J = &m->layers[j];
                bool reads_prev = false;
                for (int k = 0; k < J->nfrom; k++) reads_prev |= J->src[k] == j - 1;
                if (!reads_prev || J->kind == BLOCK_CBLINEAR || lane_class(Y->gi.role[j]) != cls) break;
            }
        int first = src_box(Y, L, 0);
        int row0, min_col = 0;
        if (L->kind == BLOCK_SILENCE || first == -2) {
            row0 = 0;
        } else {
            const Place *f = place_of(Y, first);
            row0 = f->row + (L->kind == BLOCK_CBLINEAR ? 0 : 1);
            min_col = f->col + (L->kind == BLOCK_CBLINEAR ? 1 : 0);
        }
        if (Y->image_box && row0 == 0) row0 = 1; /* below the image box */
        int row1 = row0 + (j - i) - 1;
        int c = min_col;
        for (; c < Y->ncols; c++) {
            /* the box it reads may sit right above it in the same column */
            int above = first >= -1 && place_of(Y, first)->col == c ? place_of(Y, first)->row : -100;
            if (lane_class(Y->col_role[c]) == cls && col_free(Y, c, row0, row1, above)) break;
        }
        if (c == Y->ncols) {
            if (Y->ncols == MAX_COLS) return gelan_error("graph: %s needs more than %d columns", m->name, MAX_COLS);
            Y->col_role[Y->ncols++] = cls;
        }
        int *seg = Y->col_seg[c * n + Y->col_nseg[c]++];
        seg[0] = row0, seg[1] = row1;
        for (int q = i; q < j; q++) Y->p[q] = (Place){c, row0 + (q - i), 0, 0};
        if (row1 + 1 > Y->nrows) Y->nrows = row1 + 1;
        i = j;
    }
    if (Y->ncols == 0) Y->ncols = 1;
    for (int q = 0; q < D; q++) {
        Y->p[q].x0 = MARGIN + Y->p[q].col * (BOX_W + GUT);
        Y->p[q].y0 = TOP + Y->p[q].row * ROW_H;
    }
    Y->image.x0 = MARGIN, Y->image.y0 = TOP;
    if (Y->image_box && Y->nrows < 1) Y->nrows = 1;

    /* detect cells, ordered by where their inputs are, then by head and level */
    const Layer *H = &m->layers[D];
    const Detect *d = m->detect;
    Y->ncells = d->nheads * d->nl;
    for (int k = 0; k < Y->ncells; k++) Y->cells[k] = (Cell){k / d->nl, k % d->nl, src_box(Y, H, k), k, 0, 0};
    for (int a = 1; a < Y->ncells; a++) /* insertion sort: a handful of cells */
        for (int b = a; b > 0; b--) {
            Cell *x = &Y->cells[b - 1], *y = &Y->cells[b];
            double xa = x->src >= -1 ? place_of(Y, x->src)->x0 : 0, ya = y->src >= -1 ? place_of(Y, y->src)->x0 : 0;
            if (xa < ya || (xa == ya && x->k < y->k)) break;
            Cell tmp = *x;
            *x = *y, *y = tmp;
        }
    double cols_w = Y->ncols * BOX_W + (Y->ncols - 1) * GUT;
    double cells_w = Y->ncells * CELL_W + (Y->ncells + 1) * CELL_GAP;
    Y->det_w = cols_w > cells_w ? cols_w : cells_w;
    Y->bus_y0 = TOP + Y->nrows * ROW_H - GAP + 8;
    Y->det_x0 = MARGIN;
    Y->det_y0 = Y->bus_y0 + 14 + LANE * Y->ncells;
    Y->det_h = 8 + BOX_H + 50;
    double x = Y->det_x0 + (Y->det_w - cells_w) / 2 + CELL_GAP;
    for (int k = 0; k < Y->ncells; k++, x += CELL_W + CELL_GAP) {
        Y->cells[k].x0 = x;
        Y->cells[k].y0 = Y->det_y0 + 8;
    }
    Y->width = MARGIN + Y->det_w + GUT;
    if (Y->width < 900) Y->width = 900; /* the legend */
    Y->height = Y->det_y0 + Y->det_h + 16;
    return 0;
}

/* ---- arrows ------------------------------------------------------------------------- */
static double gutter_x(int g) { return MARGIN + g * (BOX_W + GUT) - GUT + 7; } /* left edge of gutter g's lanes */

static int lane_for(Layout *Y, int g, double y0, double y1) {
    if (y0 > y1) {
        double t = y0;
        y0 = y1, y1 = t;
    }
    int lane = 0;
    for (; lane < MAX_LANES; lane++) {
        bool clash = false;
        for (int r = 0; r < Y->nruns && !clash; r++) {
            const Run *R = &Y->runs[r];
            clash = R->gutter == g && R->lane == lane && y0 < R->y1 + 6 && R->y0 < y1 + 6;
        }
        if (!clash) break;
    }
    if (lane == MAX_LANES) lane = Y->nruns % MAX_LANES; /* crowded: share */
    if (Y->nruns == Y->cap_runs) {
        int cap = Y->cap_runs ? 2 * Y->cap_runs : 64;
        Run *r = realloc(Y->runs, sizeof *r * (size_t)cap);
        if (!r) {
            Y->oom = true;
            return lane;
        }
        Y->runs = r, Y->cap_runs = cap;
    }
    Y->runs[Y->nruns++] = (Run){g, lane, y0, y1};
    return lane;
}

/* An orthogonal path through pts with rounded corners. */
static void put_path(TextBuf *b, const double *xy, int n) {
    const double R = 6;
    textbuf_add(b, " d=\"M%.1f %.1f", xy[0], xy[1]);
    for (int i = 1; i < n - 1; i++) {
        double px = xy[2 * i], py = xy[2 * i + 1];
        double ax = xy[2 * i - 2], ay = xy[2 * i - 1], bx = xy[2 * i + 2], by = xy[2 * i + 3];
        double la = fabs(px - ax) + fabs(py - ay), lb = fabs(bx - px) + fabs(by - py);
        double r = R;
        if (r > la / 2) r = la / 2;
        if (r > lb / 2) r = lb / 2;
        double ux = la > 0 ? (px - ax) / la : 0, uy = la > 0 ? (py - ay) / la : 0;
        double vx = lb > 0 ? (bx - px) / lb : 0, vy = lb > 0 ? (by - py) / lb : 0;
        textbuf_add(b, " L%.1f %.1f Q%.1f %.1f %.1f %.1f", px - ux * r, py - uy * r, px, py, px + vx * r, py + vy * r);
    }
    textbuf_add(b, " L%.1f %.1f\"", xy[2 * n - 2], xy[2 * n - 1]);
}

static const char *LEVEL_STROKE[] = {"#15803d", "#7e22ce", "#0e7490", "#a16207",
                                     "#be185d", "#4d7c0f", "#1e40af", "#9f1239"};
static const char *LEVEL_FILL[] = {"#dcfce7", "#f3e8ff", "#cffafe", "#fef3c7",
                                   "#fce7f3", "#ecfccb", "#dbeafe", "#ffe4e6"};
#define MAIN_FILL "#dbeafe"
#define MAIN_STROKE "#1d4ed8"
#define AUX_FILL "#ffedd5"
#define AUX_STROKE "#c2410c"
#define INPUT_FILL "#f1f5f9"
#define INPUT_STROKE "#64748b"
#define EDGE_MAIN "#475569"

/* One arrow from box src (-1: the image) into input k of layer dst, or into
 * detect cell `cell` (>= 0). */
static void put_edge(TextBuf *b, Layout *Y, int src, int dst, int k, int cell) {
    const Model *m = Y->m;
    const Place *s = place_of(Y, src);
    double sx0 = s->x0, sx1 = s->x0 + BOX_W, sym = s->y0 + BOX_H / 2.0;
    double xy[12];
    int n = 0;
    if (cell >= 0) {
        const Cell *c = &Y->cells[cell];
        const char *color = LEVEL_STROKE[c->level % 8];
        double cx = c->x0 + CELL_W / 2.0;
        bool right = cx >= sx0 + BOX_W / 2.0;
        int g = right ? s->col + 1 : s->col;
        double bus = Y->bus_y0 + 6 + LANE * cell;
        double gx = gutter_x(g) + LANE * lane_for(Y, g, sym, bus);
        xy[n++] = right ? sx1 : sx0, xy[n++] = sym;
        xy[n++] = gx, xy[n++] = sym;
        xy[n++] = gx, xy[n++] = bus;
        xy[n++] = cx, xy[n++] = bus;
        xy[n++] = cx, xy[n++] = c->y0 - 1;
        textbuf_add(b, "<path class=\"edge\" data-from=\"%d\" data-to=\"%d\" data-input=\"%d\" stroke=\"%s\"", src,
                    m->nlayers - 1, c->k, color);
        put_path(b, xy, n / 2);
        textbuf_add(b, " marker-end=\"url(#arrow-l%d)\"/>\n", c->level % 8);
        return;
    }
    const Place *t = &Y->p[dst];
    const Layer *L = &m->layers[dst];
    GraphRole r = Y->gi.role[dst];
    const char *color = r == GRAPH_AUX ? AUX_STROKE : EDGE_MAIN;
    const char *marker = r == GRAPH_AUX ? "arrow-aux" : "arrow-main";
    if (t->col == s->col && t->row == s->row + 1) { /* the chain: straight down */
        double x = s->x0 + BOX_W / 2.0;
        xy[n++] = x, xy[n++] = s->y0 + BOX_H;
        xy[n++] = x, xy[n++] = t->y0 - 1;
    } else {
        double off = L->nfrom > 1 ? (k - (L->nfrom - 1) / 2.0) * 8 : 0;
        if (off > BOX_H / 2.0 - 5) off = BOX_H / 2.0 - 5;
        if (off < -(BOX_H / 2.0 - 5)) off = -(BOX_H / 2.0 - 5);
        double tym = t->y0 + BOX_H / 2.0 + off;
        bool right = t->col > s->col;
        int g1 = right ? s->col + 1 : s->col;                                       /* gutter the arrow leaves into */
        int g2 = t->col > s->col ? t->col : t->col == s->col ? t->col : t->col + 1; /* and enters from */
        double sx = right ? sx1 : sx0;
        double tx = g2 == t->col ? t->x0 - 1 : t->x0 + BOX_W + 1;
        xy[n++] = sx, xy[n++] = sym;
        if (g1 == g2) {
            double gx = gutter_x(g1) + LANE * lane_for(Y, g1, sym, tym);
            xy[n++] = gx, xy[n++] = sym;
            xy[n++] = gx, xy[n++] = tym;
        } else {
            double yg = t->y0 - GAP / 2.0 + ((k % 3) - 1) * 4;
            double g1x = gutter_x(g1) + LANE * lane_for(Y, g1, sym, yg);
            double g2x = gutter_x(g2) + LANE * lane_for(Y, g2, yg, tym);
            xy[n++] = g1x, xy[n++] = sym;
            xy[n++] = g1x, xy[n++] = yg;
            xy[n++] = g2x, xy[n++] = yg;
            xy[n++] = g2x, xy[n++] = tym;
        }
        xy[n++] = tx, xy[n++] = tym;
    }
    textbuf_add(b, "<path class=\"edge\" data-from=\"%d\" data-to=\"%d\" data-input=\"%d\" stroke=\"%s\"", src, dst, k,
                color);
    put_path(b, xy, n / 2);
    textbuf_add(b, " marker-end=\"url(#%s)\"/>\n", marker);
}

/* ---- the SVG -------------------------------------------------------------------------- */
static void level_name(const Model *m, int l, char *buf, size_t len) {
    float s = m->head.strides[l];
    int p = 0;
    while ((1 << p) < (int)(s + 0.5f)) p++;
    snprintf(buf, len, "P%d/%d", p, (int)(s + 0.5f));
}

static void put_text(TextBuf *b, double x, double y, const char *attrs, const char *text) {
    textbuf_add(b, "<text x=\"%.1f\" y=\"%.1f\"%s%s>", x, y, attrs ? " " : "", attrs ? attrs : "");
    put_xml(b, text);
    textbuf_add(b, "</text>\n");
}

static void put_box(TextBuf *b, const Layout *Y, int i) {
    const Model *m = Y->m;
    const Layer *L = &m->layers[i];
    const Place *p = &Y->p[i];
    GraphRole r = Y->gi.role[i];
    const LayerShape *sh = &Y->gi.shape[i];
    const char *fill = r == GRAPH_AUX ? AUX_FILL : r == GRAPH_INPUT ? INPUT_FILL : MAIN_FILL;
    const char *stroke = r == GRAPH_AUX ? AUX_STROKE : r == GRAPH_INPUT ? INPUT_STROKE : MAIN_STROKE;
    bool routing = L->kind == BLOCK_CBLINEAR || L->kind == BLOCK_CBFUSE;
    char buf[512], num[32], from[128];
    int o = 0;
    for (int k = 0; k < L->nfrom && o < (int)sizeof from - 8; k++)
        o += snprintf(from + o, sizeof from - o, k ? ", %d" : "%d", L->from[k]);
    textbuf_add(b, "<g id=\"layer-%d\" class=\"layer %s\">\n<title>", i, graph_role_name(r));
    snprintf(buf, sizeof buf, "layer %d: %s %s, from %s%s%s; output %dx%dx%d; %s parameters; ", i, L->module, L->args,
             L->nfrom > 1 ? "[" : "", from, L->nfrom > 1 ? "]" : "", sh->c, sh->h, sh->w,
             format_with_commas(Y->gi.params[i], num, sizeof num));
    put_xml(b, buf);
    if (r == GRAPH_AUX)
        put_xml(b, "auxiliary branch: dropped by gelan convert");
    else if (Y->gi.new_index[i] >= 0) {
        snprintf(buf, sizeof buf, "%s: layer %d after gelan convert", r == GRAPH_INPUT ? "the image" : "main branch",
                 Y->gi.new_index[i]);
        put_xml(b, buf);
    } else
        put_xml(b, "the image (dropped by gelan convert: nothing else reads it)");
    textbuf_add(b, "</title>\n");
    textbuf_add(b,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" rx=\"7\" fill=\"%s\" stroke=\"%s\" "
                "stroke-width=\"%s\"/>\n",
                p->x0, p->y0, BOX_W, BOX_H, fill, stroke, routing ? "3" : "1.4");
    snprintf(buf, sizeof buf, "%d  %s", i, L->module);
    put_text(b, p->x0 + 8, p->y0 + 16, "class=\"name\"", buf);
    bool renumbered = Y->gi.kept_layers != m->nlayers || Y->gi.new_index[i] != i;
    if (Y->gi.new_index[i] >= 0 && renumbered) {
        snprintf(buf, sizeof buf, "\xe2\x86\x92 %d", Y->gi.new_index[i]); /* U+2192 */
        put_text(b, p->x0 + BOX_W - 7, p->y0 + 16, "class=\"new\" text-anchor=\"end\"", buf);
    }
    if (L->nouts > 1) { /* CBLinear's pieces */
        o = 0;
        for (int j = 0; j < L->nouts; j++) o += snprintf(buf + o, sizeof buf - o, "%s%d", j ? "+" : "", L->c_outs[j]);
        snprintf(buf + o, sizeof buf - o, " \xc3\x97%d\xc3\x97%d", sh->h, sh->w); /* U+00D7 */
    } else {
        snprintf(buf, sizeof buf, "%d\xc3\x97%d\xc3\x97%d", sh->c, sh->h, sh->w);
    }
    put_text(b, p->x0 + 8, p->y0 + 31, "class=\"shape\"", buf);
    if (Y->gi.params[i]) {
        snprintf(buf, sizeof buf, "%s params", format_with_commas(Y->gi.params[i], num, sizeof num));
        put_text(b, p->x0 + 8, p->y0 + 45, "class=\"params\"", buf);
    }
    textbuf_add(b, "</g>\n");
}

static void put_detect(TextBuf *b, const Layout *Y) {
    const Model *m = Y->m;
    int D = m->nlayers - 1;
    const Layer *L = &m->layers[D];
    const Detect *d = m->detect;
    char buf[512], num[32], lv[32];
    textbuf_add(b, "<g id=\"layer-%d\" class=\"layer head\">\n<title>", D);
    snprintf(buf, sizeof buf, "layer %d: %s %s; %s parameters", D, L->module, L->args,
             format_with_commas(Y->gi.params[D], num, sizeof num));
    put_xml(b, buf);
    textbuf_add(b, "</title>\n");
    textbuf_add(
        b,
        "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" rx=\"9\" fill=\"#ffffff\" stroke=\"#334155\" "
        "stroke-width=\"1.6\"/>\n",
        Y->det_x0, Y->det_y0, Y->det_w, Y->det_h);
    for (int k = 0; k < Y->ncells; k++) {
        const Cell *c = &Y->cells[k];
        bool aux = c->head < d->nheads - 1;
        level_name(m, c->level, lv, sizeof lv);
        textbuf_add(b, "<g class=\"cell %s\" data-head=\"%d\" data-level=\"%d\">\n", aux ? "aux" : "main", c->head,
                    c->level);
        textbuf_add(b,
                    "<rect x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" rx=\"6\" fill=\"%s\" stroke=\"%s\" "
                    "stroke-width=\"%s\"%s/>\n",
                    c->x0, c->y0, CELL_W, BOX_H, aux ? "#ffffff" : LEVEL_FILL[c->level % 8], LEVEL_STROKE[c->level % 8],
                    aux ? "2" : "1.6", aux ? " stroke-dasharray=\"5 3\"" : "");
        snprintf(buf, sizeof buf, "%s %s", model_head_name(m, c->head), lv);
        put_text(b, c->x0 + 8, c->y0 + 16, "class=\"name\"", buf);
        const LayerShape *in = c->src >= 0 ? &Y->gi.shape[c->src] : NULL;
        if (in)
            snprintf(buf, sizeof buf, "%d\xc3\x97%d\xc3\x97%d", d->no, in->h, in->w);
        else
            snprintf(buf, sizeof buf, "%d channels", d->no);
        put_text(b, c->x0 + 8, c->y0 + 31, "class=\"shape\"", buf);
        snprintf(buf, sizeof buf, "%s params%s",
                 format_with_commas(graph_head_params(m, c->head, c->level), num, sizeof num), aux ? ", dropped" : "");
        put_text(b, c->x0 + 8, c->y0 + 45, "class=\"params\"", buf);
        textbuf_add(b, "</g>\n");
    }
    double ty = Y->det_y0 + 8 + BOX_H + 20;
    snprintf(buf, sizeof buf, "%d  %s: %d head%s x %d levels, %d classes, maps of 4x%d box + %d class channels", D,
             L->module, d->nheads, d->nheads > 1 ? "s" : "", d->nl, d->nc, d->reg_max, d->nc);
    put_text(b, Y->det_x0 + 12, ty, "class=\"name\"", buf);
    if (d->nheads > 1) {
        int h = d->nheads - 1;
        snprintf(buf, sizeof buf,
                 "main head cv%d/cv%d/dfl%d becomes DDetect cv2/cv3/dfl (layer %d); dashed: auxiliary heads, dropped",
                 2 + 2 * h, 3 + 2 * h, h + 1, Y->gi.new_index[D]);
    } else {
        snprintf(buf, sizeof buf, "one head (cv2 box, cv3 class, dfl): what inference runs");
    }
    put_text(b, Y->det_x0 + 12, ty + 17, "class=\"note\"", buf);
    textbuf_add(b, "</g>\n");
}

typedef struct {
    const char *fill, *stroke, *text;
    double w;
} LegendItem;

static void put_legend(TextBuf *b, const Layout *Y) {
    const Model *m = Y->m;
    const GraphInfo *gi = &Y->gi;
    char buf[512], a[32], c[32];
    snprintf(buf, sizeof buf, "%s: %d layers at %dx%d, %s parameters, %.2f GFLOPs", m->name, m->nlayers, gi->w, gi->h,
             format_with_commas(gi->total_params, a, sizeof a), gi->gflops);
    put_text(b, MARGIN, 28, "class=\"title\"", buf);
    if (gi->kept_params < gi->total_params)
        snprintf(buf, sizeof buf,
                 "gelan convert keeps the main branch and head: %d layers, %s parameters; it drops %s parameters "
                 "(orange, dashed)",
                 gi->kept_layers, format_with_commas(gi->kept_params, a, sizeof a),
                 format_with_commas(gi->total_params - gi->kept_params, c, sizeof c));
    else
        snprintf(buf, sizeof buf, "a single-branch model: gelan convert keeps every layer (%s parameters)",
                 format_with_commas(gi->kept_params, a, sizeof a));
    put_text(b, MARGIN, 50, "class=\"sub\"", buf);
    LegendItem items[12];
    int n = 0;
    items[n++] = (LegendItem){MAIN_FILL, MAIN_STROKE, "main branch (kept)", 1.4};
    bool has_aux = false, has_input = false;
    for (int i = 0; i < m->nlayers; i++) {
        has_aux |= gi->role[i] == GRAPH_AUX;
        has_input |= gi->role[i] == GRAPH_INPUT;
    }
    if (has_aux) items[n++] = (LegendItem){AUX_FILL, AUX_STROKE, "auxiliary branch (dropped)", 1.4};
    if (has_input || Y->image_box) items[n++] = (LegendItem){INPUT_FILL, INPUT_STROKE, "image", 1.4};
    bool has_routing = false;
    for (int i = 0; i < m->nlayers; i++)
        has_routing |= m->layers[i].kind == BLOCK_CBLINEAR || m->layers[i].kind == BLOCK_CBFUSE;
    if (has_routing) items[n++] = (LegendItem){"#ffffff", "#334155", "thick border: CBLinear/CBFuse", 3};
    static char lvl[8][24];
    for (int l = 0; l < m->detect->nl && l < 8 && n < 11; l++) {
        level_name(m, l, lvl[l], sizeof lvl[l]);
        items[n++] = (LegendItem){LEVEL_FILL[l], LEVEL_STROKE[l], lvl[l], 1.6};
    }
    double x = MARGIN;
    for (int k = 0; k < n; k++) {
        textbuf_add(b,
                    "<rect x=\"%.1f\" y=\"66\" width=\"22\" height=\"14\" rx=\"3\" fill=\"%s\" stroke=\"%s\" "
                    "stroke-width=\"%.1f\"/>\n",
                    x, items[k].fill, items[k].stroke, items[k].w);
        put_text(b, x + 28, 78, "class=\"legend\"", items[k].text);
        x += 40 + 7.2 * (double)strlen(items[k].text);
    }
    put_text(b, MARGIN, 100, "class=\"note\"",
             "box: index, module, output channels x height x width, parameters; \xe2\x86\x92 n: its layer after gelan "
             "convert; "
             "arrows: each `from`");
}

char *graph_svg(const Model *m, int h, int w) {
    Layout Y;
    memset(&Y, 0, sizeof Y);
    Y.m = m;
    if (graph_info(m, h, w, &Y.gi)) return NULL;
    TextBuf b = {0};
    if (layout(&Y)) goto fail;
    textbuf_add(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    textbuf_add(&b,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">\n",
                Y.width, Y.height, Y.width, Y.height);
    textbuf_add(&b, "<title>");
    put_xml(&b, m->name);
    textbuf_add(&b,
                " (gelan graph)</title>\n<style>\n"
                "text { font-family: 'DejaVu Sans', Helvetica, Arial, sans-serif; font-size: 11.5px; fill: #0f172a; }\n"
                ".name { font-weight: bold; } .new { fill: #1d4ed8; font-weight: bold; } .shape { fill: #334155; }\n"
                ".params { fill: #475569; font-size: 10.5px; } .title { font-size: 17px; font-weight: bold; }\n"
                ".sub { font-size: 13px; } .legend { font-size: 12px; } .note { font-size: 11px; fill: #475569; }\n"
                "path.edge { fill: none; stroke-width: 1.4; }\n</style>\n<defs>\n");
    const char *mk[][2] = {{"arrow-main", EDGE_MAIN}, {"arrow-aux", AUX_STROKE}};
    for (int k = 0; k < 2; k++)
        textbuf_add(
            &b,
            "<marker id=\"%s\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" "
            "orient=\"auto\"><path d=\"M0 1 L10 5 L0 9 z\" fill=\"%s\"/></marker>\n",
            mk[k][0], mk[k][1]);
    for (int l = 0; l < 8; l++)
        textbuf_add(
            &b,
            "<marker id=\"arrow-l%d\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" "
            "orient=\"auto\"><path d=\"M0 1 L10 5 L0 9 z\" fill=\"%s\"/></marker>\n",
            l, LEVEL_STROKE[l]);
    textbuf_add(&b, "</defs>\n<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n");
    put_legend(&b, &Y);
    int D = m->nlayers - 1;
    textbuf_add(&b, "<g class=\"edges\">\n");
    for (int i = 0; i < D; i++) {
        const Layer *L = &m->layers[i];
        if (L->kind == BLOCK_SILENCE) continue;
        for (int k = 0; k < L->nfrom; k++) {
            int s = src_box(&Y, L, k);
            if (s >= -1) put_edge(&b, &Y, s, i, k, -1);
        }
    }
    for (int c = 0; c < Y.ncells; c++)
        if (Y.cells[c].src >= -1) put_edge(&b, &Y, Y.cells[c].src, D, Y.cells[c].k, c);
    textbuf_add(&b, "</g>\n");
    if (Y.image_box) {
        char buf[64];
        textbuf_add(
            &b,
            "<g id=\"image\" class=\"layer input\">\n<rect x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" rx=\"7\" "
            "fill=\"%s\" stroke=\"%s\" stroke-width=\"1.4\"/>\n",
            Y.image.x0, Y.image.y0, BOX_W, BOX_H, INPUT_FILL, INPUT_STROKE);
        put_text(&b, Y.image.x0 + 8, Y.image.y0 + 16, "class=\"name\"", "image");
        snprintf(buf, sizeof buf, "%d\xc3\x97%d\xc3\x97%d", m->ch, h, w);
        put_text(&b, Y.image.x0 + 8, Y.image.y0 + 31, "class=\"shape\"", buf);
        textbuf_add(&b, "</g>\n");
    }
    for (int i = 0; i < D; i++) put_box(&b, &Y, i);
    put_detect(&b, &Y);
    textbuf_add(&b, "</svg>\n");
    if (Y.oom) b.oom = true;
    free(Y.p);
    free(Y.col_seg);
    free(Y.runs);
    graph_info_free(&Y.gi);
    return textbuf_take(&b, "graph");
fail:
    free(Y.p);
    free(Y.col_seg);
    free(Y.runs);
    free(b.s);
    graph_info_free(&Y.gi);
    return NULL;
}

/* ---- DOT ------------------------------------------------------------------------------ */
char *graph_dot(const Model *m, int h, int w) {
    GraphInfo gi;
    if (graph_info(m, h, w, &gi)) return NULL;
    TextBuf b = {0};
    char buf[512], num[32], num2[32], lv[32];
    int D = m->nlayers - 1;
    const Detect *d = m->detect;
    textbuf_add(&b, "digraph \"");
    put_dot(&b, m->name);
    snprintf(buf, sizeof buf, "%s: %d layers at %dx%d, %s parameters; gelan convert keeps %d layers, %s parameters",
             m->name, m->nlayers, w, h, format_with_commas(gi.total_params, num, sizeof num), gi.kept_layers,
             format_with_commas(gi.kept_params, num2, sizeof num2));
    textbuf_add(&b, "\" {\n  label=\"");
    put_dot(&b, buf);
    textbuf_add(
        &b,
        "\\nblue: main branch (kept), orange: auxiliary branch (dropped), dashed: auxiliary heads (dropped)\";\n"
        "  labelloc=t;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10];\n"
        "  edge [color=\"" EDGE_MAIN "\"];\n");
    bool image_node = false;
    for (int i = 0; i < D; i++) {
        const Layer *L = &m->layers[i];
        GraphRole r = gi.role[i];
        const LayerShape *s = &gi.shape[i];
        const char *fill = r == GRAPH_AUX ? AUX_FILL : r == GRAPH_INPUT ? INPUT_FILL : MAIN_FILL;
        const char *stroke = r == GRAPH_AUX ? AUX_STROKE : r == GRAPH_INPUT ? INPUT_STROKE : MAIN_STROKE;
        int o = snprintf(buf, sizeof buf, "%d %s", i, L->module);
        if (gi.new_index[i] >= 0 && gi.kept_layers != m->nlayers)
            o += snprintf(buf + o, sizeof buf - o, " -> %d", gi.new_index[i]);
        o += snprintf(buf + o, sizeof buf - o, "\\n%dx%dx%d", s->c, s->h, s->w);
        if (gi.params[i])
            snprintf(buf + o, sizeof buf - o, "\\n%s params", format_with_commas(gi.params[i], num, sizeof num));
        textbuf_add(&b, "  L%d [label=\"%s\", fillcolor=\"%s\", color=\"%s\"%s];\n", i, buf, fill, stroke,
                    L->kind == BLOCK_CBLINEAR || L->kind == BLOCK_CBFUSE ? ", penwidth=3" : "");
        if (L->kind == BLOCK_SILENCE) continue;
        for (int k = 0; k < L->nfrom; k++) {
            if (L->src[k] < 0) image_node = true;
            if (L->src[k] < 0)
                textbuf_add(&b, "  image -> L%d", i);
            else
                textbuf_add(&b, "  L%d -> L%d", L->src[k], i);
            textbuf_add(&b, "%s;\n", r == GRAPH_AUX ? " [color=\"" AUX_STROKE "\"]" : "");
        }
    }
    if (image_node)
        textbuf_add(&b, "  image [label=\"image\\n%dx%dx%d\", fillcolor=\"%s\", color=\"%s\"];\n", m->ch, h, w,
                    INPUT_FILL, INPUT_STROKE);
    const Layer *H = &m->layers[D];
    for (int k = 0; k < H->nfrom; k++) {
        int hd = k / d->nl, l = k % d->nl;
        bool aux = hd < d->nheads - 1;
        level_name(m, l, lv, sizeof lv);
        textbuf_add(&b,
                    "  L%d_%d [label=\"%d %s\\n%s %s\\n%s params\", fillcolor=\"%s\", color=\"%s\", "
                    "style=\"rounded,filled%s\"];\n",
                    D, k, D, H->module, model_head_name(m, hd), lv,
                    format_with_commas(graph_head_params(m, hd, l), num, sizeof num),
                    aux ? "#ffffff" : LEVEL_FILL[l % 8], LEVEL_STROKE[l % 8], aux ? ",dashed" : "");
        if (H->src[k] < 0)
            textbuf_add(&b, "  image -> L%d_%d [color=\"%s\"];\n", D, k, LEVEL_STROKE[l % 8]);
        else
            textbuf_add(&b, "  L%d -> L%d_%d [color=\"%s\"];\n", H->src[k], D, k, LEVEL_STROKE[l % 8]);
    }
    textbuf_add(&b, "}\n");
    graph_info_free(&gi);
    return textbuf_take(&b, "graph");
}
