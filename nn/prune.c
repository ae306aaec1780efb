/* Filter importance and structural pruning (nn/prune.h).
 *
 * How pruning finds what belongs together. Every output channel of every conv
 * is an element. A walk over the built model (the same order as the forward)
 * gives each tensor as the list of elements its channels come from: a conv
 * makes new elements, Concat joins lists, chunk/split cut them, pooling and
 * upsampling keep them, the ShuffleNetV2 shuffle interleaves them. On the way
 * it records
 *   - what each conv reads (its input list: the slices to cut from its weight),
 *   - ties: two lists whose channels are added (RepConvN's branches, a
 *     residual, CBFuse's pieces and its last input, a depthwise conv's output
 *     and input) or interleaved (ShuffleNetV2's branches): channel p of one
 *     goes exactly when channel p of the other goes,
 *   - parts: a list later cut into P equal parts (chunk, ADown, a ShuffleNetV2
 *     split, the groups of a grouped conv): each part must keep as many.
 * The elements of each conv are then cut into atoms, runs that every tie and
 * part sees whole (a fixpoint: a boundary seen on one side of a tie is made on
 * the other). Tied atoms form a group: its channel k is one decision, removing
 * filter k of every member. Groups whose parts must keep the same count form a
 * set. Groups that touch something that must stay (the image, the head's final
 * convs, the DFL, an excluded layer) are frozen, and so are lists cut in parts
 * that are not whole atoms (a part mixing several convs' channels, e.g. a
 * shuffled tensor or a Concat split unevenly): nothing there could go without
 * moving the cut. A set keeps a
 * rounded count of its groups' channels, each group its most important ones. */
#include "nn/prune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/cfg_write.h"
#include "tensor/error.h"

/* ---- names and norms ------------------------------------------------------------- */

int prune_norm_parse(const char *s, PruneNorm *out) {
    if (!strcmp(s, "l2"))
        *out = PRUNE_L2;
    else if (!strcmp(s, "l1"))
        *out = PRUNE_L1;
    else if (!strcmp(s, "bn"))
        *out = PRUNE_BN;
    else
        return gelan_error("norm '%s': expected l2, l1 or bn", s);
    return 0;
}

const char *prune_norm_name(PruneNorm n) { return n == PRUNE_L2 ? "l2" : n == PRUNE_L1 ? "l1" : "bn"; }

const char *prune_module_path(const ConvUnit *u, char *buf, size_t len) {
    size_t n = strlen(u->name);
    if (u->conv_module && n > 5 && !strcmp(u->name + n - 5, ".conv"))
        snprintf(buf, len, "%.*s", (int)(n - 5), u->name);
    else
        snprintf(buf, len, "%s", u->name);
    return buf;
}

/* "model.N...." -> N */
static int unit_layer(const ConvUnit *u) { return (int)strtol(u->name + 6, NULL, 10); }

static bool is_dfl(const Model *m, const ConvUnit *u) {
    for (int h = 0; m->detect && h < m->detect->nheads; h++)
        if (m->detect->dfl[h] == u) return true;
    return false;
}

/* The norm of filter f (bn: |gamma_f|). */
static double filter_norm(const ConvUnit *u, int f, PruneNorm norm) {
    if (norm == PRUNE_BN) return fabs((double)u->bn_weight->data[f]);
    size_t per = u->weight->numel / (size_t)u->c2;
    const float *w = u->weight->data + (size_t)f * per;
    double s = 0;
    for (size_t i = 0; i < per; i++) s += norm == PRUNE_L2 ? (double)w[i] * w[i] : fabs((double)w[i]);
    return norm == PRUNE_L2 ? sqrt(s) : s;
}

/* The norm of the whole weight (bn: mean |gamma|). */
static double conv_norm(const ConvUnit *u, PruneNorm norm) {
    double s = 0;
    if (norm == PRUNE_BN) {
        for (int f = 0; f < u->c2; f++) s += fabs((double)u->bn_weight->data[f]);
        return s / u->c2;
    }
    for (size_t i = 0; i < u->weight->numel; i++) {
        double w = u->weight->data[i];
        s += norm == PRUNE_L2 ? w * w : fabs(w);
    }
    return norm == PRUNE_L2 ? sqrt(s) : s;
}

/* ---- importance tables ---------------------------------------------------------- */

typedef enum { WITHIN_ALL, WITHIN_LAYER, WITHIN_TYPE, WITHIN_PATH } WithinKind;

static WithinKind within_kind(const Model *m, const char *within, long *layer) {
    if (!within || !*within) return WITHIN_ALL;
    char *end;
    *layer = strtol(within, &end, 10);
    if (*end == '\0') return WITHIN_LAYER;
    for (int i = 0; i < m->nlayers; i++)
        if (!strcmp(m->layers[i].module, within)) return WITHIN_TYPE;
    return WITHIN_PATH;
}

/* path == prefix, or path starts with prefix + "." */
static bool path_under(const char *path, const char *prefix) {
    size_t n = strlen(prefix);
    return !strncmp(path, prefix, n) && (path[n] == '\0' || path[n] == '.');
}

static bool unit_within(const Model *m, const ConvUnit *u, WithinKind k, long layer, const char *within) {
    char path[160];
    switch (k) {
        case WITHIN_ALL:
            return true;
        case WITHIN_LAYER:
            return unit_layer(u) == layer;
        case WITHIN_TYPE:
            return !strcmp(m->layers[unit_layer(u)].module, within);
        case WITHIN_PATH:
            return path_under(prune_module_path(u, path, sizeof path), within);
    }
    return false;
}

static int cmp_rows(const void *a, const void *b) {
    const ImportanceRow *x = a, *y = b;
    if (x->value != y->value) return x->value < y->value ? -1 : 1;
    if (x->unit != y->unit) return x->unit < y->unit ? -1 : 1;
    return (x->filter > y->filter) - (x->filter < y->filter);
}

int prune_importance(const Model *m, bool by_filter, PruneNorm norm, const char *within, ImportanceRow **rows,
                     int *nrows) {
    *rows = NULL;
    *nrows = 0;
    long layer = 0;
    WithinKind wk = within_kind(m, within, &layer);
    if (wk == WITHIN_LAYER && (layer < 0 || layer >= m->nlayers))
        return gelan_error("importance: layer %ld does not exist (%s has layers 0..%d)", layer, m->name,
                           m->nlayers - 1);
    size_t cap = 0;
    for (int i = 0; i < m->nunits; i++)
        if (!m->units[i]->removed) cap += by_filter ? (size_t)m->units[i]->c2 : 1;
    ImportanceRow *r = malloc((cap ? cap : 1) * sizeof *r);
    if (!r) return gelan_error("importance: out of memory");
    int n = 0;
    for (int i = 0; i < m->nunits; i++) {
        const ConvUnit *u = m->units[i];
        if (u->removed || is_dfl(m, u) || (norm == PRUNE_BN && !u->bn_weight)) continue;
        if (!unit_within(m, u, wk, layer, within)) continue;
        for (int f = 0; f < (by_filter ? u->c2 : 1); f++) {
            ImportanceRow *row = &r[n++];
            row->unit = i;
            row->layer = unit_layer(u);
            row->filter = by_filter ? f : -1;
            row->value = by_filter ? filter_norm(u, f, norm) : conv_norm(u, norm);
            prune_module_path(u, row->module, sizeof row->module);
        }
    }
    if (n == 0) {
        free(r);
        if (within && *within)
            return gelan_error(
                "importance: '%s' matches no conv%s of %s (a layer index, a module type such as "
                "RepNCSPELAN4, or a module path such as model.2.cv2)",
                within, norm == PRUNE_BN ? " with BN" : "", m->name);
        return gelan_error("importance: %s has no conv%s", m->name, norm == PRUNE_BN ? " with BN" : "");
    }
    qsort(r, (size_t)n, sizeof *r, cmp_rows);
    *rows = r;
    *nrows = n;
    return 0;
}

/* ---- the channel walk ---------------------------------------------------------- */

typedef struct {
    int u, j; /* unit (nunits = the image) and its output channel */
} Ref;

typedef struct {
    int n;
    Ref *r;
} Val;

typedef struct {
    Val a, b;
} Tie;

typedef struct {
    Val v;
    int p;
} Parts;

typedef struct {
    const Model *m;
    int nu;   /* units; unit nu stands for the image */
    int *off; /* first element of unit u; off[nu + 1] = number of elements */
    Val *in;  /* what unit u reads (n = 0: nothing, the DFL) */
    Tie *ties;
    int nties, capties;
    Parts *parts;
    int nparts, capparts;
    Val *frozen;
    int nfrozen, capfrozen;
    void **mem;
    int nmem, capmem;
    int rc;
} Graph;

static void *galloc(Graph *g, size_t bytes) {
    if (g->rc) return NULL;
    if (g->nmem == g->capmem) {
        int cap = g->capmem ? 2 * g->capmem : 256;
        void **nm = realloc(g->mem, (size_t)cap * sizeof *nm);
        if (!nm) {
            g->rc = gelan_error("prune: out of memory");
            return NULL;
        }
        g->mem = nm;
        g->capmem = cap;
    }
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) {
        g->rc = gelan_error("prune: out of memory");
        return NULL;
    }
    return g->mem[g->nmem++] = p;
}

/* Appends one item to a growing array (a, n, cap of the graph). */
#define PUSH(g, arr, n, cap, item)                                        \
    do {                                                                  \
        if ((g)->rc) break;                                               \
        if ((g)->n == (g)->cap) {                                         \
            int c_ = (g)->cap ? 2 * (g)->cap : 64;                        \
            void *na_ = realloc((g)->arr, (size_t)c_ * sizeof *(g)->arr); \
            if (!na_) {                                                   \
                (g)->rc = gelan_error("prune: out of memory");            \
                break;                                                    \
            }                                                             \
            (g)->arr = na_;                                               \
            (g)->cap = c_;                                                \
        }                                                                 \
        (g)->arr[(g)->n++] = (item);                                      \
    } while (0)

static void graph_free(Graph *g) {
    for (int i = 0; i < g->nmem; i++) free(g->mem[i]);
    free(g->mem);
    free(g->off);
    free(g->in);
    free(g->ties);
    free(g->parts);
    free(g->frozen);
    memset(g, 0, sizeof *g);
}

static int unit_index(const Graph *g, const ConvUnit *u) {
    for (int i = 0; i < g->nu; i++)
        if (g->m->units[i] == u) return i;
    return -1;
}

static Val val_of_unit(Graph *g, int u, int c) {
    Val v = {c, galloc(g, (size_t)c * sizeof(Ref))};
    if (!v.r) return (Val){0, NULL};
    for (int j = 0; j < c; j++) v.r[j] = (Ref){u, j};
    return v;
}

static Val val_slice(Val v, int off, int n) { return (Val){n, v.r + off}; }

static Val val_cat(Graph *g, const Val *vs, int k) {
    int n = 0;
    for (int i = 0; i < k; i++) n += vs[i].n;
    Val v = {n, galloc(g, (size_t)n * sizeof(Ref))};
    if (!v.r) return (Val){0, NULL};
    for (int i = 0, o = 0; i < k; o += vs[i].n, i++) memcpy(v.r + o, vs[i].r, (size_t)vs[i].n * sizeof(Ref));
    return v;
}

static void tie(Graph *g, Val a, Val b) {
    if (g->rc) return;
    if (a.n != b.n) {
        g->rc = gelan_error("prune: internal: adding %d channels to %d", a.n, b.n);
        return;
    }
    PUSH(g, ties, nties, capties, ((Tie){a, b}));
}

static void parts(Graph *g, Val v, int p) { PUSH(g, parts, nparts, capparts, ((Parts){v, p})); }
static void freeze(Graph *g, Val v) { PUSH(g, frozen, nfrozen, capfrozen, v); }

/* A conv reading `in`: records it and returns its output. */
static Val w_conv(Graph *g, const ConvUnit *cu, Val in) {
    if (g->rc) return (Val){0, NULL};
    int u = unit_index(g, cu);
    if (u < 0 || in.n != cu->c1) {
        g->rc = gelan_error("prune: internal: %s reads %d channels, built for %d", cu->name, in.n, cu->c1);
        return (Val){0, NULL};
    }
    g->in[u] = in;
    Val out = val_of_unit(g, u, cu->c2);
    if (cu->g > 1 && cu->g == cu->c1 && cu->g == cu->c2) {
        tie(g, in, out); /* depthwise: output channel j is computed from input channel j alone */
    } else if (cu->g > 1) {
        parts(g, in, cu->g);
        parts(g, out, cu->g);
    }
    return out;
}

/* torch.chunk(2): the halves must keep as many channels each. */
static void w_chunk2(Graph *g, Val h, Val *halves) {
    int a = h.n - h.n / 2;
    halves[0] = val_slice(h, 0, a);
    halves[1] = val_slice(h, a, h.n / 2);
    if (h.n % 2)
        freeze(g, h);
    else
        parts(g, h, 2);
}

static Val w_repncsp(Graph *g, const RepNCSP *b, Val x) {
    Val y = w_conv(g, b->cv1, x);
    for (int j = 0; j < b->n; j++) {
        const RepNBottleneck *bt = &b->m[j];
        Val r1 = w_conv(g, bt->cv1->conv1, y);
        Val r2 = w_conv(g, bt->cv1->conv2, y);
        tie(g, r1, r2); /* the two branches are summed */
        Val z = w_conv(g, bt->cv2, r1);
        if (bt->add)
            tie(g, y, z); /* the residual: y + z keeps y's channels */
        else
            y = z;
    }
    Val cat[2] = {y, w_conv(g, b->cv2, x)};
    return w_conv(g, b->cv3, val_cat(g, cat, 2));
}

static Val w_block(Graph *g, const Block *b, Val x) {
    Val h[4];
    switch (b->kind) {
        case BLOCK_CONV:
            return w_conv(g, b->u.conv, x);
        case BLOCK_ACONV:
            return w_conv(g, b->u.aconv.cv1, x);
        case BLOCK_ADOWN: {
            h[0] = val_slice(x, 0, x.n / 2);
            h[1] = val_slice(x, x.n / 2, x.n / 2);
            parts(g, x, 2);
            h[0] = w_conv(g, b->u.adown.cv1, h[0]);
            h[1] = w_conv(g, b->u.adown.cv2, h[1]);
            return val_cat(g, h, 2);
        }
        case BLOCK_ELAN1: {
            const ELAN1 *e = &b->u.elan1;
            w_chunk2(g, w_conv(g, e->cv1, x), h);
            h[2] = w_conv(g, e->cv2, h[1]);
            h[3] = w_conv(g, e->cv3, h[2]);
            return w_conv(g, e->cv4, val_cat(g, h, 4));
        }
        case BLOCK_REPNCSPELAN4: {
            const RepNCSPELAN4 *e = &b->u.elan4;
            w_chunk2(g, w_conv(g, e->cv1, x), h);
            h[2] = w_conv(g, e->cv2_conv, w_repncsp(g, &e->cv2_csp, h[1]));
            h[3] = w_conv(g, e->cv3_conv, w_repncsp(g, &e->cv3_csp, h[2]));
            return w_conv(g, e->cv4, val_cat(g, h, 4));
        }
        case BLOCK_SPPELAN: {
            h[0] = h[1] = h[2] = h[3] = w_conv(g, b->u.sppelan.cv1, x); /* max pools keep the channels */
            return w_conv(g, b->u.sppelan.cv5, val_cat(g, h, 4));
        }
        case BLOCK_SHUFFLENETV2: {
            const ShuffleNetV2 *s = &b->u.shuffle;
            Val x1 = x, x2 = x;
            if (s->stride == 1) {
                x1 = val_slice(x, 0, x.n / 2);
                x2 = val_slice(x, x.n / 2, x.n / 2);
                parts(g, x, 2);
            } else {
                x1 = w_conv(g, s->b1_dw, x);
            }
            Val y1 = w_conv(g, s->b1_pw, x1);
            Val y2 = w_conv(g, s->b2_pw2, w_conv(g, s->b2_dw, w_conv(g, s->b2_pw1, x2)));
            /* channel_shuffle(cat(y1, y2), 2) interleaves the branches: channel i of both goes
             * together (output channels 2i, 2i+1), so that what remains interleaves the same way */
            tie(g, y1, y2);
            if (g->rc) return (Val){0, NULL};
            Val v = {y1.n + y2.n, galloc(g, (size_t)(y1.n + y2.n) * sizeof(Ref))};
            if (!v.r) return (Val){0, NULL};
            for (int o = 0; o < v.n; o++) v.r[o] = o % 2 ? y2.r[o / 2] : y1.r[o / 2];
            return v;
        }
        default: /* Silence, pooling, upsampling: channel by channel */
            return x;
    }
}

typedef struct {
    int n;
    Val v[CBLINEAR_MAX_OUTS];
} LayerVals;

static int walk(Graph *g) {
    const Model *m = g->m;
    LayerVals *outs = calloc((size_t)m->nlayers, sizeof *outs);
    if (!outs) return gelan_error("prune: out of memory");
    Val image = val_of_unit(g, g->nu, m->ch);
    freeze(g, image);
    for (int i = 0; i < m->nlayers && !g->rc; i++) {
        const Layer *L = &m->layers[i];
        Val ins[DETECT_MAX_HEADS * DETECT_MAX_LEVELS];
        if (L->nfrom > DETECT_MAX_HEADS * DETECT_MAX_LEVELS) {
            g->rc = gelan_error("prune: layer %d has %d inputs", i, L->nfrom);
            break;
        }
        for (int k = 0; k < L->nfrom; k++) ins[k] = L->src[k] < 0 ? image : outs[L->src[k]].v[0];
        LayerVals *o = &outs[i];
        o->n = 1;
        switch (L->kind) {
            case BLOCK_CONCAT:
                o->v[0] = val_cat(g, ins, L->nfrom);
                break;
            case BLOCK_CBLINEAR: {
                const CBLinear *c = &L->blocks[0].u.cblinear;
                Val y = w_conv(g, c->conv, ins[0]);
                o->n = c->nout;
                for (int k = 0, off = 0; k < c->nout && !g->rc; off += c->c2s[k], k++)
                    o->v[k] = val_slice(y, off, c->c2s[k]);
                break;
            }
            case BLOCK_CBFUSE: {
                const CBFuse *cf = &L->blocks[0].u.cbfuse;
                Val last = ins[L->nfrom - 1];
                for (int k = 0; k < cf->n; k++) tie(g, outs[L->src[k]].v[cf->idx[k]], last); /* summed */
                o->v[0] = last;
                break;
            }
            case BLOCK_DETECT: {
                const Detect *d = L->blocks[0].u.detect;
                for (int hd = 0; hd < d->nheads; hd++)
                    for (int l = 0; l < d->nl; l++) {
                        Val in = ins[hd * d->nl + l];
                        Val b = w_conv(g, d->box[hd][l][1], w_conv(g, d->box[hd][l][0], in));
                        w_conv(g, d->box[hd][l][2], b);
                        Val c = w_conv(g, d->cls[hd][l][1], w_conv(g, d->cls[hd][l][0], in));
                        w_conv(g, d->cls[hd][l][2], c);
                    }
                o->n = 0;
                break;
            }
            default: {
                Val x = ins[0];
                for (int j = 0; j < L->n; j++) x = w_block(g, &L->blocks[j], x);
                o->v[0] = x;
                break;
            }
        }
        if (g->rc) gelan_error_prefix("layer %d (%s)", i, L->module);
    }
    free(outs);
    return g->rc;
}

/* ---- atoms, groups, sets ------------------------------------------------------ */

typedef struct {
    Graph g;
    int ne;
    bool *cut;    /* cut[e]: an atom starts at element e */
    int *atom_of; /* element -> atom */
    int natoms;
    int *a_start; /* first element */
    int *a_len;
    int *a_unit;
    int *a_parent; /* union-find over atoms: ties */
    bool *a_frozen;
    int *s_parent; /* union-find over atoms (used at group roots): parts */
} Plan;

static int find(int *p, int x) {
    while (p[x] != x) x = p[x] = p[p[x]];
    return x;
}

static void unite(int *p, int a, int b) {
    a = find(p, a), b = find(p, b);
    if (a != b) p[a < b ? b : a] = a < b ? a : b;
}

static int elem(const Plan *P, Ref r) { return P->g.off[r.u] + r.j; }

static bool boundary(const Plan *P, Val v, int p) {
    int e = elem(P, v.r[p]);
    return e != elem(P, v.r[p - 1]) + 1 || P->cut[e];
}

static bool add_cut(Plan *P, int e) {
    if (P->cut[e]) return false;
    return P->cut[e] = true;
}

/* Val v is cut before position p (0 < p < n), at both elements around it. */
static bool add_boundary(Plan *P, Val v, int p) {
    bool c = add_cut(P, elem(P, v.r[p]));
    return add_cut(P, elem(P, v.r[p - 1]) + 1) || c;
}

/* Every run of v between boundaries is a whole atom. */
static bool close_val(Plan *P, Val v) {
    if (v.n == 0) return false;
    bool c = add_cut(P, elem(P, v.r[0]));
    c = add_cut(P, elem(P, v.r[v.n - 1]) + 1) || c;
    for (int p = 1; p < v.n; p++)
        if (boundary(P, v, p)) c = add_boundary(P, v, p) || c;
    return c;
}

static int make_atoms(Plan *P) {
    Graph *g = &P->g;
    P->ne = g->off[g->nu + 1];
    P->cut = calloc((size_t)P->ne + 1, sizeof *P->cut);
    P->atom_of = calloc((size_t)P->ne + 1, sizeof *P->atom_of);
    if (!P->cut || !P->atom_of) return gelan_error("prune: out of memory");
    for (int u = 0; u <= g->nu + 1; u++) P->cut[g->off[u]] = true;
    for (int i = 0; i < g->m->nlayers; i++) { /* CBLinear's pieces are tensors of their own */
        const Layer *L = &g->m->layers[i];
        if (L->kind != BLOCK_CBLINEAR) continue;
        const CBLinear *c = &L->blocks[0].u.cblinear;
        int u = unit_index(g, c->conv);
        for (int k = 0, off = 0; k < c->nout; off += c->c2s[k], k++) P->cut[g->off[u] + off] = true;
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (int t = 0; t < g->nties; t++) {
            Val a = g->ties[t].a, b = g->ties[t].b;
            changed = close_val(P, a) || changed;
            changed = close_val(P, b) || changed;
            for (int p = 1; p < a.n; p++)
                if (boundary(P, a, p) != boundary(P, b, p)) {
                    add_boundary(P, a, p);
                    add_boundary(P, b, p);
                    changed = true;
                }
        }
        for (int k = 0; k < g->nparts; k++) {
            Val v = g->parts[k].v;
            int np = g->parts[k].p;
            changed = close_val(P, v) || changed;
            if (v.n % np) continue;
            for (int q = 1; q < np; q++) changed = add_boundary(P, v, q * v.n / np) || changed;
        }
    }
    int na = 0;
    for (int e = 0; e < P->ne; e++) na += P->cut[e];
    P->natoms = na;
    P->a_start = malloc(sizeof(int) * (size_t)na);
    P->a_len = malloc(sizeof(int) * (size_t)na);
    P->a_unit = malloc(sizeof(int) * (size_t)na);
    P->a_parent = malloc(sizeof(int) * (size_t)na);
    P->s_parent = malloc(sizeof(int) * (size_t)na);
    P->a_frozen = calloc((size_t)na, sizeof(bool));
    if (!P->a_start || !P->a_len || !P->a_unit || !P->a_parent || !P->s_parent || !P->a_frozen)
        return gelan_error("prune: out of memory");
    int a = -1, u = 0;
    for (int e = 0; e < P->ne; e++) {
        while (g->off[u + 1] <= e) u++;
        if (P->cut[e]) {
            a++;
            P->a_start[a] = e;
            P->a_len[a] = 0;
            P->a_unit[a] = u;
            P->a_parent[a] = P->s_parent[a] = a;
        }
        P->a_len[a]++;
        P->atom_of[e] = a;
    }
    return 0;
}

static int atom_at(const Plan *P, Ref r) { return P->atom_of[elem(P, r)]; }

/* Ties join atoms into groups; parts join groups into sets; frozen spreads. */
static int make_groups(Plan *P) {
    Graph *g = &P->g;
    for (int t = 0; t < g->nties; t++) {
        Val a = g->ties[t].a, b = g->ties[t].b;
        for (int p = 0; p < a.n; p++) {
            if (p > 0 && !boundary(P, a, p)) continue;
            int x = atom_at(P, a.r[p]), y = atom_at(P, b.r[p]);
            if (P->a_len[x] != P->a_len[y] || elem(P, a.r[p]) != P->a_start[x] || elem(P, b.r[p]) != P->a_start[y])
                return gelan_error("prune: internal: tied channels do not line up");
            unite(P->a_parent, x, y);
        }
    }
    for (int f = 0; f < g->nfrozen; f++)
        for (int p = 0; p < g->frozen[f].n; p++) P->a_frozen[atom_at(P, g->frozen[f].r[p])] = true;
    for (int a = 0; a < P->natoms; a++) {
        const ConvUnit *cu = P->a_unit[a] < g->nu ? g->m->units[P->a_unit[a]] : NULL;
        if (!cu || cu->frozen) P->a_frozen[a] = true;
    }
    /* parts: each part one whole atom, else everything in the list stays */
    for (int k = 0; k < g->nparts; k++) {
        Val v = g->parts[k].v;
        int np = g->parts[k].p, len = v.n / np;
        bool ok = v.n % np == 0;
        for (int q = 0; ok && q < np; q++) {
            Ref r = v.r[q * len];
            int a = atom_at(P, r);
            ok = P->a_len[a] == len && elem(P, r) == P->a_start[a] &&
                 elem(P, v.r[q * len + len - 1]) == elem(P, r) + len - 1;
        }
        if (ok) {
            for (int q = 1; q < np; q++)
                unite(P->s_parent, find(P->a_parent, atom_at(P, v.r[0])), find(P->a_parent, atom_at(P, v.r[q * len])));
        } else {
            for (int p = 0; p < v.n; p++) P->a_frozen[atom_at(P, v.r[p])] = true;
        }
    }
    /* frozen: atom -> group -> set (two passes settle it: a set only joins group roots) */
    bool *g_frozen = calloc((size_t)P->natoms, sizeof(bool));
    if (!g_frozen) return gelan_error("prune: out of memory");
    for (int a = 0; a < P->natoms; a++)
        if (P->a_frozen[a]) g_frozen[find(P->a_parent, a)] = true;
    for (int a = 0; a < P->natoms; a++) {
        int r = find(P->a_parent, a);
        if (r == a && g_frozen[a]) g_frozen[find(P->s_parent, a)] = true;
    }
    for (int a = 0; a < P->natoms; a++) {
        int r = find(P->a_parent, a);
        P->a_frozen[a] = g_frozen[r] || g_frozen[find(P->s_parent, r)];
    }
    free(g_frozen);
    return 0;
}

static void plan_free(Plan *P) {
    graph_free(&P->g);
    free(P->cut);
    free(P->atom_of);
    free(P->a_start);
    free(P->a_len);
    free(P->a_unit);
    free(P->a_parent);
    free(P->s_parent);
    free(P->a_frozen);
}

/* ---- choosing ------------------------------------------------------------------ */

typedef struct {
    double value;
    int group, k;
} Entry;

static int cmp_entry(const void *a, const void *b) {
    const Entry *x = a, *y = b;
    if (x->value != y->value) return x->value < y->value ? -1 : 1;
    if (x->group != y->group) return x->group < y->group ? -1 : 1;
    return (x->k > y->k) - (x->k < y->k);
}

/* The importance of channel k of each group (indexed by the group's root atom):
 * over its members (the tied filters), the root mean square of their L2 norms,
 * the mean of their L1 norms, or the mean |gamma| of those with BN (a group
 * without BN falls back to L2). */
static double **group_values(Plan *P, PruneNorm norm) {
    Graph *g = &P->g;
    double **val = calloc((size_t)P->natoms, sizeof *val);
    int *nmem = calloc((size_t)P->natoms, sizeof *nmem);
    int *nbn = calloc((size_t)P->natoms, sizeof *nbn);
    bool ok = val && nmem && nbn;
    for (int a = 0; ok && a < P->natoms; a++) {
        int r = find(P->a_parent, a);
        if (!val[r]) ok = (val[r] = calloc((size_t)P->a_len[r], sizeof(double))) != NULL;
        if (P->a_unit[a] < g->nu && g->m->units[P->a_unit[a]]->bn_weight) nbn[r]++;
    }
    for (int a = 0; ok && a < P->natoms; a++) {
        if (P->a_unit[a] >= g->nu) continue;
        const ConvUnit *u = g->m->units[P->a_unit[a]];
        int r = find(P->a_parent, a), f0 = P->a_start[a] - g->off[P->a_unit[a]];
        PruneNorm n = norm == PRUNE_BN && !nbn[r] ? PRUNE_L2 : norm;
        if (n == PRUNE_BN && !u->bn_weight) continue;
        nmem[r]++;
        for (int k = 0; k < P->a_len[a]; k++) {
            double s = filter_norm(u, f0 + k, n);
            val[r][k] += n == PRUNE_L2 ? s * s : s;
        }
    }
    for (int a = 0; ok && a < P->natoms; a++) {
        if (find(P->a_parent, a) != a || !nmem[a]) continue;
        bool l2 = norm == PRUNE_L2 || (norm == PRUNE_BN && !nbn[a]);
        for (int k = 0; k < P->a_len[a]; k++) val[a][k] = l2 ? sqrt(val[a][k] / nmem[a]) : val[a][k] / nmem[a];
    }
    free(nmem);
    free(nbn);
    if (!ok) {
        for (int a = 0; val && a < P->natoms; a++) free(val[a]);
        free(val);
        gelan_error("prune: out of memory");
        return NULL;
    }
    return val;
}

/* The kept width for a target: a multiple of R, at least R; all when that is
 * not below the width (or the width is not above R). Up: never more removed
 * than asked (threshold); else the nearest multiple. */
static int round_keep(double target, int c, int R, bool up) {
    if (c <= R || target >= c) return c;
    int k = up ? (int)ceil(target / R - 1e-9) * R : (int)floor(target / R + 0.5) * R;
    if (k < R) k = R;
    return k >= c ? c : k;
}

/* keep[root atom][k]: which channels of each group stay. */
static int choose(Plan *P, const PruneOptions *o, double **val, bool **keep, PruneStats *st) {
    int na = P->natoms, R = o->round;
    int *below = calloc((size_t)na, sizeof *below);
    int *set_keep = calloc((size_t)na, sizeof *set_keep);
    Entry *ent = NULL;
    int rc = below && set_keep ? 0 : gelan_error("prune: out of memory");
    /* groups are roots of a_parent; sets are roots of s_parent among groups */
    int nent = 0;
    for (int a = 0; !rc && a < na; a++)
        if (find(P->a_parent, a) == a && !P->a_frozen[a] && P->a_len[a] > R) nent += P->a_len[a];
    if (!rc && !(ent = malloc(sizeof *ent * (size_t)(nent ? nent : 1)))) rc = gelan_error("prune: out of memory");
    nent = 0;
    for (int a = 0; !rc && a < na; a++) {
        if (find(P->a_parent, a) != a) continue;
        st->groups++;
        if (P->a_frozen[a]) {
            st->frozen_groups++;
            continue;
        }
        st->channels += P->a_len[a];
        if (P->a_len[a] <= R) continue;
        for (int k = 0; k < P->a_len[a]; k++) {
            ent[nent++] = (Entry){val[a][k], a, k};
            if (o->threshold >= 0 && val[a][k] <= o->threshold) below[a]++;
        }
    }
    if (!rc && o->threshold < 0 && o->global) {
        qsort(ent, (size_t)nent, sizeof *ent, cmp_entry);
        int nrem = (int)floor(o->ratio * nent);
        for (int i = 0; i < nrem; i++) below[ent[i].group]++;
    }
    /* each set: the target width of its groups (all the same size) */
    for (int a = 0; !rc && a < na; a++) {
        if (find(P->a_parent, a) != a || find(P->s_parent, a) != a) continue;
        int c = P->a_len[a], n = 0, mn = c;
        double sum = 0;
        bool same = true;
        for (int b = 0; b < na; b++) {
            if (find(P->a_parent, b) != b || find(P->s_parent, b) != a) continue;
            same = same && P->a_len[b] == c;
            n++;
            sum += below[b];
            mn = below[b] < mn ? below[b] : mn;
        }
        double target = o->threshold >= 0 ? c - mn : o->global ? c - sum / n : (1.0 - o->ratio) * c;
        set_keep[a] = P->a_frozen[a] || !same ? c : round_keep(target, c, R, o->threshold >= 0);
    }
    /* each group keeps its most important channels */
    for (int a = 0; !rc && a < na; a++) {
        if (find(P->a_parent, a) != a) continue;
        int c = P->a_len[a], s = find(P->s_parent, a);
        bool same = P->a_len[s] == c;
        int k = P->a_frozen[a] || !same ? c : set_keep[s];
        if (k > c) k = c;
        keep[a] = calloc((size_t)c, sizeof(bool));
        int *idx = malloc(sizeof(int) * (size_t)c);
        if (!keep[a] || !idx) {
            free(idx);
            rc = gelan_error("prune: out of memory");
            break;
        }
        for (int i = 0; i < c; i++) idx[i] = i;
        /* sort channel indexes by importance, most important first (stable by index) */
        for (int i = 1; i < c; i++) {
            int x = idx[i], j = i - 1;
            while (j >= 0 && (val[a][idx[j]] < val[a][x] || (val[a][idx[j]] == val[a][x] && idx[j] > x))) {
                idx[j + 1] = idx[j];
                j--;
            }
            idx[j + 1] = x;
        }
        for (int i = 0; i < k; i++) keep[a][idx[i]] = true;
        if (!P->a_frozen[a]) st->removed += c - k;
        free(idx);
    }
    free(below);
    free(set_keep);
    free(ent);
    return rc;
}

/* ---- the pruned YAML -------------------------------------------------------------- */

/* The width key of a unit (relative to model.N; '.' = the row's module), or
 * NULL when its width is not a free choice of the builder (detect outputs,
 * CBLinear, the DFL) or it is RepConvN's conv2 (keyed with conv1). */
static const char *width_key(const Model *m, const ConvUnit *u, int layer, char *buf, size_t len) {
    char path[200];
    if (!u->conv_module && !u->bn_name) return NULL;
    prune_module_path(u, path, sizeof path);
    for (int r = 0; r < m->nreps; r++) {
        if (m->reps[r]->conv2 == u) return NULL;
        if (m->reps[r]->conv1 == u) path[strlen(path) - 6] = '\0'; /* drop ".conv1" */
    }
    char pre[32];
    int n = snprintf(pre, sizeof pre, "model.%d", layer);
    if (!strcmp(path, pre))
        snprintf(buf, len, ".");
    else
        snprintf(buf, len, "%s", path + n + 1);
    return buf;
}

static bool old_key(const CfgValue *list, const char *key) {
    char b[32];
    for (int i = 0; list && i < list->n; i++) {
        const CfgValue *k = &list->items[i].items[0];
        if (k->kind == CV_INT) snprintf(b, sizeof b, "%ld", k->ival);
        if (!strcmp(k->kind == CV_INT ? b : k->str, key)) return true;
    }
    return false;
}

/* c2n/c1n: every unit's new widths; pieces[layer * CBLINEAR_MAX_OUTS + p]: the
 * new size of a CBLinear layer's piece p. */
static char *pruned_yaml(const Model *m, const int *c2n, const int *c1n, const int *pieces, const char *how) {
    ModelCfg *cfg = cfg_of_model(m, "prune");
    if (!cfg) return NULL;
    TextBuf t = {0};
    textbuf_add(&t, "# Pruned by `gelan prune` (%s) from %s.\n", how, m->name);
    textbuf_add(&t, "# Rows end with [path, channels] width overrides (docs/FORMATS.md, \"Pruned widths\").\n");
    cfg_write_header(&t, m, cfg);
    textbuf_add(&t, "\nbackbone:\n  [\n");
    for (int i = 0; i < m->nlayers; i++) {
        if (i == cfg->nbackbone) textbuf_add(&t, "  ]\n\nhead:\n  [\n");
        const CfgRow *row = &cfg->rows[i];
        const Layer *L = &m->layers[i];
        const CfgValue *args = &row->args;
        const CfgValue *olds =
            args->n && model_is_width_list(&args->items[args->n - 1]) ? &args->items[args->n - 1] : NULL;
        int nargs = args->n - (olds != NULL);
        textbuf_add(&t, "   [");
        cfg_write_value(&t, &row->from);
        textbuf_add(&t, ", %ld, %s, [", row->number, row->module);
        for (int k = 0; k < nargs; k++) {
            if (k) textbuf_add(&t, ", ");
            if (k == 0 && L->kind == BLOCK_CBLINEAR) { /* the pieces' new sizes (not width-scaled) */
                const int *pc = &pieces[(size_t)i * CBLINEAR_MAX_OUTS];
                textbuf_add(&t, "[");
                for (int p = 0; p < L->blocks[0].u.cblinear.nout; p++) textbuf_add(&t, p ? ", %d" : "%d", pc[p]);
                textbuf_add(&t, "]");
                continue;
            }
            cfg_write_value(&t, &args->items[k]);
        }
        /* the widths: changed ones, earlier overrides, and a detect head's hidden
         * convs when its inputs changed (their default depends on them) */
        bool head_moved = false;
        for (int x = 0; x < m->nunits && L->kind == BLOCK_DETECT; x++)
            if (unit_layer(m->units[x]) == i && c1n[x] != m->units[x]->c1) head_moved = true;
        bool any = false;
        char key[200];
        for (int x = 0; x < m->nunits; x++) {
            const ConvUnit *u = m->units[x];
            if (u->removed || unit_layer(u) != i || !width_key(m, u, i, key, sizeof key)) continue;
            if (c2n[x] == u->c2 && !old_key(olds, key) && !(head_moved && !is_dfl(m, u))) continue;
            textbuf_add(&t, "%s[", any ? ", " : nargs ? ", [" : "[");
            cfg_write_str(&t, key, true);
            textbuf_add(&t, ", %d]", c2n[x]);
            any = true;
        }
        if (any) textbuf_add(&t, "]");
        textbuf_add(&t, "]],  # %d\n", i);
    }
    textbuf_add(&t, "  ]\n");
    model_cfg_free(cfg);
    return textbuf_take(&t, "prune");
}

/* ---- pruning ---------------------------------------------------------------------- */

void prune_options_default(PruneOptions *o) {
    memset(o, 0, sizeof *o);
    o->threshold = -1;
    o->norm = PRUNE_L2;
    o->global = true;
    o->round = 8;
}

/* --exclude: the outputs of every conv of the listed layers / under the listed
 * module paths stay. */
static int exclude_units(Graph *g, const char *list) {
    const Model *m = g->m;
    char *s = list ? strdup(list) : NULL;
    if (list && !s) return gelan_error("prune: out of memory");
    int rc = 0;
    for (char *save = NULL, *tok = s ? strtok_r(s, ",", &save) : NULL; tok && !rc; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        for (char *e = tok + strlen(tok); e > tok && e[-1] == ' ';) *--e = '\0';
        if (!*tok) continue;
        char *end, path[160];
        long layer = strtol(tok, &end, 10);
        bool is_layer = *end == '\0';
        if (is_layer && (layer < 0 || layer >= m->nlayers)) {
            rc = gelan_error("--exclude: layer %ld does not exist (%s has layers 0..%d)", layer, m->name,
                             m->nlayers - 1);
            break;
        }
        int hits = 0;
        for (int u = 0; u < g->nu; u++) {
            const ConvUnit *cu = m->units[u];
            if (is_layer ? unit_layer(cu) != layer : !path_under(prune_module_path(cu, path, sizeof path), tok))
                continue;
            freeze(g, val_of_unit(g, u, cu->c2));
            hits++;
        }
        if (!hits && !is_layer)
            rc = gelan_error(
                "--exclude: '%s' is neither a layer index nor the path of a conv module of %s (e.g. 21 "
                "or model.21.cv2)",
                tok, m->name);
    }
    free(s);
    return rc ? rc : g->rc;
}

static bool kept(const Plan *P, bool *const *keep, Ref r) {
    int e = elem(P, r), a = P->atom_of[e];
    return keep[find(P->a_parent, a)][e - P->a_start[a]];
}

/* Copies the kept slices of unit u of the source into dst (already built with
 * the new widths). Output filter o of a conv with g groups reads input
 * positions [G*c1/g, (G+1)*c1/g), G = o / (c2/g); g = 1 and depthwise are the
 * two ends of that. */
static int copy_unit(const Plan *P, bool *const *keep, int u, const ConvUnit *s, ConvUnit *d) {
    const Val in = P->g.in[u];
    int cin_g = s->c1 / s->g, cout_g = s->c2 / s->g, kk = s->k * s->k;
    int *ins = malloc(sizeof(int) * (size_t)(cin_g ? cin_g : 1));
    if (!ins) return gelan_error("prune: out of memory");
    int o2 = 0, rc = 0;
    for (int o = 0; o < s->c2 && !rc; o++) {
        if (!kept(P, keep, (Ref){u, o})) continue;
        int G = o / cout_g, ni = 0;
        for (int i = 0; i < cin_g; i++)
            if (in.n == 0 || kept(P, keep, in.r[G * cin_g + i])) ins[ni++] = i;
        if (o2 >= d->c2 || ni != d->c1 / d->g) {
            rc = gelan_error("prune: internal: %s keeps filter %d reading %d inputs, the pruned conv is [%d, %d]",
                             s->name, o, ni, d->c2, d->c1 / d->g);
            break;
        }
        for (int i = 0; i < ni; i++)
            memcpy(d->weight->data + ((size_t)o2 * ni + i) * kk, s->weight->data + ((size_t)o * cin_g + ins[i]) * kk,
                   sizeof(float) * (size_t)kk);
        if (s->bias) d->bias->data[o2] = s->bias->data[o];
        if (s->bn_weight) {
            d->bn_weight->data[o2] = s->bn_weight->data[o];
            d->bn_bias->data[o2] = s->bn_bias->data[o];
            d->bn_mean->data[o2] = s->bn_mean->data[o];
            d->bn_var->data[o2] = s->bn_var->data[o];
        }
        o2++;
    }
    if (!rc && o2 != d->c2)
        rc = gelan_error("prune: internal: %s keeps %d filters, the pruned conv has %d", s->name, o2, d->c2);
    free(ins);
    return rc;
}

static Model *apply(Plan *P, bool *const *keep, const PruneOptions *o) {
    const Model *m = P->g.m;
    int nu = m->nunits;
    int *c2n = calloc((size_t)nu, sizeof *c2n), *c1n = calloc((size_t)nu, sizeof *c1n);
    int *pieces = calloc((size_t)m->nlayers * CBLINEAR_MAX_OUTS, sizeof *pieces);
    char *yaml = NULL;
    Model *p = NULL;
    int rc = c2n && c1n && pieces ? 0 : gelan_error("prune: out of memory");
    for (int u = 0; !rc && u < nu; u++) {
        const ConvUnit *cu = m->units[u];
        for (int j = 0; j < cu->c2; j++) c2n[u] += kept(P, keep, (Ref){u, j});
        const Val in = P->g.in[u];
        if (in.n == 0) c1n[u] = cu->c1;
        for (int q = 0; q < in.n; q++) c1n[u] += kept(P, keep, in.r[q]);
    }
    for (int i = 0; !rc && i < m->nlayers; i++) {
        const Layer *L = &m->layers[i];
        if (L->kind != BLOCK_CBLINEAR) continue;
        const CBLinear *c = &L->blocks[0].u.cblinear;
        int u = unit_index(&P->g, c->conv);
        for (int k = 0, off = 0; k < c->nout; off += c->c2s[k], k++)
            for (int j = off; j < off + c->c2s[k]; j++) pieces[i * CBLINEAR_MAX_OUTS + k] += kept(P, keep, (Ref){u, j});
    }
    char how[160];
    if (o->threshold >= 0)
        snprintf(how, sizeof how, "%s importance <= %g, round %d", prune_norm_name(o->norm), o->threshold, o->round);
    else
        snprintf(how, sizeof how, "ratio %g, %s %s, round %d", o->ratio, o->global ? "global" : "local",
                 prune_norm_name(o->norm), o->round);
    if (!rc) rc = (yaml = pruned_yaml(m, c2n, c1n, pieces, how)) ? 0 : -1;
    if (!rc) {
        ModelOptions mo = {m->nc, 0};
        p = model_build(yaml, m->file, &mo);
        if (!p) rc = -1, gelan_error_prefix("prune: internal: the pruned YAML does not build");
    }
    if (!rc && p->nunits != nu) rc = gelan_error("prune: internal: %d convs, the pruned model has %d", nu, p->nunits);
    for (int u = 0; !rc && u < nu; u++) {
        const ConvUnit *s = m->units[u];
        ConvUnit *d = p->units[u];
        if (strcmp(s->name, d->name) || d->c2 != c2n[u] || d->c1 != c1n[u])
            rc = gelan_error("prune: internal: %s [%d, %d] became %s [%d, %d], planned [%d, %d]", s->name, s->c2, s->c1,
                             d->name, d->c2, d->c1, c2n[u], c1n[u]);
        else
            rc = copy_unit(P, keep, u, s, d);
    }
    free(c2n);
    free(c1n);
    free(pieces);
    free(yaml);
    if (rc) {
        model_free(p);
        return NULL;
    }
    return p;
}

Model *prune_model(const Model *m, const PruneOptions *opt, PruneStats *stats) {
    PruneOptions o;
    if (opt)
        o = *opt;
    else
        prune_options_default(&o);
    PruneStats st = {0};
    if (o.threshold < 0 && !(o.ratio >= 0 && o.ratio < 1)) {
        gelan_error("prune: the ratio must be in [0, 1), got %g", o.ratio);
        return NULL;
    }
    if (o.round < 1) {
        gelan_error("prune: --round must be at least 1, got %d", o.round);
        return NULL;
    }
    if (m->fused) {
        gelan_error("prune: %s is fused (BN folded); prune the unfused model", m->name);
        return NULL;
    }
    for (int u = 0; u < m->nunits; u++)
        if (m->units[u]->removed) {
            gelan_error("prune: %s has merged RepConvN branches; prune the unfused model", m->name);
            return NULL;
        }
    Plan P = {0};
    Graph *g = &P.g;
    g->m = m;
    g->nu = m->nunits;
    g->off = calloc((size_t)g->nu + 2, sizeof *g->off);
    g->in = calloc((size_t)g->nu + 1, sizeof *g->in);
    double **val = NULL;
    bool **keep = NULL;
    Model *p = NULL;
    int rc = g->off && g->in ? 0 : gelan_error("prune: out of memory");
    for (int u = 0; !rc && u <= g->nu; u++) g->off[u + 1] = g->off[u] + (u < g->nu ? m->units[u]->c2 : m->ch);
    if (!rc) rc = walk(g);
    /* the head's final convs never lose a filter (the DFL is frozen by its flag) */
    for (int h = 0; !rc && h < m->detect->nheads; h++)
        for (int l = 0; l < m->detect->nl; l++) {
            const ConvUnit *f[2] = {m->detect->box[h][l][2], m->detect->cls[h][l][2]};
            for (int k = 0; k < 2; k++) freeze(g, val_of_unit(g, unit_index(g, f[k]), f[k]->c2));
        }
    if (!rc) rc = exclude_units(g, o.exclude);
    if (!rc) rc = g->rc;
    if (!rc) rc = make_atoms(&P);
    if (!rc) rc = make_groups(&P);
    if (!rc) rc = (val = group_values(&P, o.norm)) ? 0 : -1;
    if (!rc) rc = (keep = calloc((size_t)P.natoms, sizeof *keep)) ? 0 : gelan_error("prune: out of memory");
    if (!rc) rc = choose(&P, &o, val, keep, &st);
    if (!rc) rc = (p = apply(&P, keep, &o)) ? 0 : -1;
    for (int a = 0; a < P.natoms; a++) {
        if (val) free(val[a]);
        if (keep) free(keep[a]);
    }
    free(val);
    free(keep);
    plan_free(&P);
    if (rc) return NULL;
    st.params_before = model_num_params(m);
    st.params_after = model_num_params(p);
    if (stats) *stats = st;
    return p;
}

int prune_save(const Model *m, const char *names_json, const char *source, const char *how, const char *path) {
    ModelMeta meta[] = {{"names", names_json}, {"pruned_from", source}, {"prune", how}};
    return model_save_weights_meta(m, meta, 3, path);
}
