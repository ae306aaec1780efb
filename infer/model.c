/* Inference model: loading (graph checks, weight packing) and planning and
 * running for one input size.
 *
 * Memory plan. Every value lives in a "storage", a map of some channels at
 * one resolution. A split's outputs are channel views of its input's storage
 * (no copy). A concat asks each input's storage to move inside its own output
 * storage at the right channel offset, so the producers write there directly
 * and the concat copies nothing; an input that cannot move (the model input,
 * one already placed in another concat, a view that would land out of range)
 * is copied instead. The storages that remain on top ("roots") get a place
 * in one arena: each is live from its first writer to its last reader, and
 * two roots share memory only when their lifetimes do not overlap. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infer/graph.h"
#include "infer/infer.h"
#include "infer/ops.h"
#include "infer/qconv.h"
#include "tensor/error.h"
#include "tensor/json.h"
#include "tensor/pool.h"
#include "tensor/safetensors.h"

#define ALIGN_FLOATS 16 /* 64 bytes */

typedef struct {
    int c, h, w;
    int parent, off; /* placed inside storage `parent` at channel `off` (-1: a root) */
    int first, last; /* lifetime of a root, in node indices */
    size_t mem;      /* float offset in the arena (roots) */
} Storage;

typedef struct {
    int h, w;
    int st, off; /* storage and channel offset in it */
} ValuePlan;

struct InferModel {
    Graph g;
    const InferKernels *kern;
    ConvLayer *conv; /* per node; used by conv nodes */
    QConv *qconv;    /* per node; used by qconv nodes */
    int nqconv;
    int *vc; /* channels of each value */
    int in_c, out_value;
    size_t params;
    char **names;
    int nnames;
    /* plan */
    int planned, pn, ph, pw;
    ValuePlan *vp;
    Storage *st;
    int nst;
    float *arena, *scratch, *outbuf;
    size_t scratch_per_thread;
    int scratch_threads;
    void *qscratch; /* the largest qconv_scratch_bytes of the plan (it sizes per-thread buffers itself) */
    int qscratch_threads;
    const float *input;
    InferShape oshape;
    int profile;
    double *prof;
};

/* ---- loading -------------------------------------------------------------------- */
#define NODE_ERR(n, fmt, ...) gelan_error("graph line %d: %s: " fmt, (n)->line, graph_op_name((n)->op), __VA_ARGS__)

static void shape_str(char *buf, size_t cap, const InferTensor *t) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int i = 0; i < t->ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

static int check_conv(InferModel *m, int i, InferLookup lookup, void *ctx) {
    GraphNode *n = &m->g.nodes[i];
    int cin = m->vc[n->in[0]];
    if (cin % n->g)
        return NODE_ERR(n, "input '%s' has %d channels, not divisible by g=%d", m->g.values[n->in[0]].name, cin, n->g);
    InferTensor w, b;
    if (lookup(ctx, n->w, &w)) return NODE_ERR(n, "weight tensor '%s' not found", n->w);
    int64_t want[4] = {n->c, cin / n->g, n->k, n->k};
    int ok = w.ndim == 4;
    for (int d = 0; d < 4 && ok; d++) ok = w.shape[d] == want[d];
    if (!ok) {
        char got[96];
        shape_str(got, sizeof got, &w);
        return NODE_ERR(n, "weight '%s' has shape %s, expected [%d,%d,%d,%d] (c=%d, %d input channels, g=%d, k=%d)",
                        n->w, got, n->c, cin / n->g, n->k, n->k, n->c, cin, n->g, n->k);
    }
    const float *bias = NULL;
    if (n->b) {
        if (lookup(ctx, n->b, &b)) return NODE_ERR(n, "bias tensor '%s' not found", n->b);
        if (b.ndim != 1 || b.shape[0] != n->c) {
            char got[96];
            shape_str(got, sizeof got, &b);
            return NODE_ERR(n, "bias '%s' has shape %s, expected [%d]", n->b, got, n->c);
        }
        bias = b.data;
        m->params += (size_t)n->c;
    }
    m->params += (size_t)n->c * (cin / n->g) * n->k * n->k;
    if (conv_init(&m->conv[i], m->kern, cin, n->c, n->k, n->s, n->p, n->d, n->g, n->act, n->alpha, w.data, bias)) {
        gelan_error_prefix("graph line %d", n->line);
        return -1;
    }
    return 0;
}

/* A qconv node: int8 codes w (read as floats, integers in [-127, 127]), per-channel
 * scales ws, fp32 bias b, input scale sx and zero point zp -> qconv_init. */
static int check_qconv(InferModel *m, int i, InferLookup lookup, void *ctx) {
    GraphNode *n = &m->g.nodes[i];
    int cin = m->vc[n->in[0]];
    if (cin % n->g)
        return NODE_ERR(n, "input '%s' has %d channels, not divisible by g=%d", m->g.values[n->in[0]].name, cin, n->g);
    InferTensor w, ws, b;
    if (lookup(ctx, n->w, &w)) return NODE_ERR(n, "weight tensor '%s' not found", n->w);
    int64_t want[4] = {n->c, cin / n->g, n->k, n->k};
    int ok = w.ndim == 4;
    for (int d = 0; d < 4 && ok; d++) ok = w.shape[d] == want[d];
    if (!ok) {
        char got[96];
        shape_str(got, sizeof got, &w);
        return NODE_ERR(n, "weight '%s' has shape %s, expected [%d,%d,%d,%d]", n->w, got, n->c, cin / n->g, n->k, n->k);
    }
    if (lookup(ctx, n->ws, &ws)) return NODE_ERR(n, "weight scale tensor '%s' not found", n->ws);
    if (ws.ndim != 1 || ws.shape[0] != n->c) return NODE_ERR(n, "weight scales '%s' are not [%d]", n->ws, n->c);
    const float *bias = NULL;
    if (n->b) {
        if (lookup(ctx, n->b, &b)) return NODE_ERR(n, "bias tensor '%s' not found", n->b);
        if (b.ndim != 1 || b.shape[0] != n->c) return NODE_ERR(n, "bias '%s' is not [%d]", n->b, n->c);
        bias = b.data;
        m->params += (size_t)n->c;
    }
    size_t nw = (size_t)n->c * (cin / n->g) * n->k * n->k;
    int8_t *wq = malloc(nw ? nw : 1);
    if (!wq) return gelan_error("infer: out of memory");
    for (size_t j = 0; j < nw; j++) {
        float v = w.data[j];
        if (!(v >= -127 && v <= 127) || v != (float)(int)v) {
            free(wq);
            return NODE_ERR(n, "weight '%s'[%zu] = %g is not an int8 code in [-127, 127]", n->w, j, v);
        }
        wq[j] = (int8_t)v;
    }
    m->params += nw;
    int rc = qconv_init(&m->qconv[i], qconv_kernels(), cin, n->c, n->k, n->s, n->p, n->d, n->g, n->act, n->alpha, wq,
                        ws.data, bias, n->sx, n->zp);
    free(wq);
    if (rc) {
        gelan_error_prefix("graph line %d", n->line);
        return -1;
    }
    m->nqconv++;
    return 0;
}

/* Channel counts of every value, weight shapes, packing. */
static int check_graph(InferModel *m, InferLookup lookup, void *ctx) {
    Graph *g = &m->g;
    m->in_c = 3; /* unless a conv reading the input says otherwise */
    for (int i = 0; i < g->nnodes; i++) {
        GraphNode *n = &g->nodes[i];
        InferTensor w;
        if ((n->op == OP_CONV || n->op == OP_QCONV) && n->in[0] == 0 && !lookup(ctx, n->w, &w) && w.ndim == 4) {
            m->in_c = (int)w.shape[1] * n->g;
            break;
        }
    }
    m->vc[0] = m->in_c;
    for (int i = 0; i < g->nnodes; i++) {
        GraphNode *n = &g->nodes[i];
        for (int j = 0; j < n->nin; j++) {
            int p = g->values[n->in[j]].producer;
            if (p >= 0 && g->nodes[p].op == OP_DETECT)
                return NODE_ERR(n, "input '%s' is a detect output, which only ends a graph", g->values[n->in[j]].name);
        }
        int c0 = m->vc[n->in[0]], sum = 0;
        switch (n->op) {
            case OP_CONV:
                if (check_conv(m, i, lookup, ctx)) return -1;
                m->vc[n->out[0]] = n->c;
                break;
            case OP_QCONV:
                if (check_qconv(m, i, lookup, ctx)) return -1;
                m->vc[n->out[0]] = n->c;
                break;
            case OP_MAXPOOL:
            case OP_AVGPOOL:
            case OP_UPSAMPLE:
                m->vc[n->out[0]] = c0;
                break;
            case OP_CONCAT:
                for (int j = 0; j < n->nin; j++) sum += m->vc[n->in[j]];
                m->vc[n->out[0]] = sum;
                break;
            case OP_SPLIT:
                for (int j = 0; j < n->nsizes; j++) sum += n->sizes[j];
                if (sum != c0)
                    return NODE_ERR(n, "sizes add up to %d, input '%s' has %d channels", sum, g->values[n->in[0]].name,
                                    c0);
                for (int j = 0; j < n->nout; j++) m->vc[n->out[j]] = n->sizes[j];
                break;
            case OP_ADD:
                if (m->vc[n->in[1]] != c0) return NODE_ERR(n, "inputs have %d and %d channels", c0, m->vc[n->in[1]]);
                m->vc[n->out[0]] = c0;
                break;
            case OP_DETECT:
                for (int j = 0; j < n->nin; j++)
                    if (m->vc[n->in[j]] != 4 * n->reg_max + n->nc)
                        return NODE_ERR(n, "input '%s' has %d channels, expected 4*reg_max+nc = %d",
                                        g->values[n->in[j]].name, m->vc[n->in[j]], 4 * n->reg_max + n->nc);
                m->vc[n->out[0]] = 4 + n->nc;
                break;
        }
    }
    m->out_value = g->nodes[g->nnodes - 1].out[0];
    return 0;
}

static int parse_names(InferModel *m, const char *json) {
    JsonValue *v = json_parse(json, strlen(json));
    if (!v) {
        gelan_error_prefix("names");
        return -1;
    }
    int rc = 0;
    if (v->type != JSON_ARRAY) {
        rc = gelan_error("names: expected a JSON list of strings, got a %s", json_type_name(v->type));
    } else {
        m->names = calloc(v->count ? v->count : 1, sizeof *m->names);
        for (size_t i = 0; m->names && i < v->count && rc == 0; i++) {
            const JsonValue *s = json_at(v, i);
            if (s->type != JSON_STRING)
                rc = gelan_error("names: item %zu is a %s, not a string", i, json_type_name(s->type));
            else if (!(m->names[m->nnames++] = strdup(s->str)))
                rc = gelan_error("names: out of memory");
        }
        if (!m->names) rc = gelan_error("names: out of memory");
    }
    json_free(v);
    return rc;
}

InferModel *infer_model_build(const char *graph, const char *names_json, InferLookup lookup, void *ctx) {
    InferModel *m = calloc(1, sizeof *m);
    if (!m) return gelan_error("infer: out of memory"), NULL;
    m->kern = infer_kernels();
    if (graph_parse(graph, &m->g)) return free(m), NULL;
    m->conv = calloc((size_t)m->g.nnodes, sizeof *m->conv);
    m->qconv = calloc((size_t)m->g.nnodes, sizeof *m->qconv);
    m->vc = calloc((size_t)m->g.nvalues, sizeof *m->vc);
    if (!m->conv || !m->qconv || !m->vc) {
        gelan_error("infer: out of memory");
        infer_model_free(m);
        return NULL;
    }
    if (check_graph(m, lookup, ctx) || (names_json && parse_names(m, names_json))) {
        infer_model_free(m);
        return NULL;
    }
    return m;
}

/* Weights straight from the file when they are aligned F32, else converted. */
typedef struct {
    SafeTensors *st;
    float **tmp;
    int ntmp;
} StLookup;

static int st_lookup(void *ctx, const char *name, InferTensor *out) {
    StLookup *L = ctx;
    const StTensorInfo *ti = st_find(L->st, name);
    if (!ti || ti->ndim > 8) return -1;
    out->ndim = ti->ndim;
    for (int i = 0; i < ti->ndim; i++) out->shape[i] = ti->shape[i];
    const void *data = st_data(L->st, ti);
    if (ti->dtype == ST_F32 && (size_t)data % sizeof(float) == 0) {
        out->data = data;
        return 0;
    }
    float **grown = realloc(L->tmp, (size_t)(L->ntmp + 1) * sizeof *grown);
    if (!grown) return -1;
    L->tmp = grown;
    size_t n = st_numel(ti);
    float *buf = malloc((n ? n : 1) * sizeof(float));
    if (!buf || st_read_f32(L->st, name, buf, n)) return free(buf), -1;
    L->tmp[L->ntmp++] = buf;
    out->data = buf;
    return 0;
}

InferModel *infer_model_load(const char *path) {
    SafeTensors *st = st_open(path);
    if (!st) return NULL;
    InferModel *m = NULL;
    const char *format = st_metadata(st, "format"), *graph = st_metadata(st, "graph");
    if (!format || strcmp(format, "gelan-infer/1"))
        gelan_error("%s: not an inference model (metadata format is '%s', expected 'gelan-infer/1')", path,
                    format ? format : "(none)");
    else if (!graph)
        gelan_error("%s: no 'graph' in the metadata", path);
    else {
        StLookup L = {st, NULL, 0};
        m = infer_model_build(graph, st_metadata(st, "names"), st_lookup, &L);
        if (!m) gelan_error_prefix("%s", path);
        for (int i = 0; i < L.ntmp; i++) free(L.tmp[i]);
        free(L.tmp);
    }
    st_close(st);
    return m;
}

static void free_plan(InferModel *m) {
    free(m->vp), free(m->st), free(m->arena), free(m->scratch), free(m->outbuf), free(m->qscratch);
    m->vp = NULL, m->st = NULL, m->arena = m->scratch = m->outbuf = NULL, m->qscratch = NULL;
    m->planned = 0;
}

void infer_model_free(InferModel *m) {
    if (!m) return;
    free_plan(m);
    for (int i = 0; m->conv && i < m->g.nnodes; i++) conv_free(&m->conv[i]);
    for (int i = 0; m->qconv && i < m->g.nnodes; i++)
        if (m->g.nodes[i].op == OP_QCONV) qconv_free(&m->qconv[i]);
    free(m->conv);
    free(m->qconv);
    free(m->vc);
    for (int i = 0; i < m->nnames; i++) free(m->names[i]);
    free(m->names);
    free(m->prof);
    graph_free(&m->g);
    free(m);
}

/* ---- shapes ---------------------------------------------------------------------- */
/* Spatial size of every value for input h x w (vh, vw per value). */
static int infer_shapes(const InferModel *m, int h, int w, int *vh, int *vw) {
    const Graph *g = &m->g;
    vh[0] = h, vw[0] = w;
    for (int i = 0; i < g->nnodes; i++) {
        const GraphNode *n = &g->nodes[i];
        int ih = vh[n->in[0]], iw = vw[n->in[0]], oh = ih, ow = iw;
        switch (n->op) {
            case OP_CONV:
            case OP_QCONV:
            case OP_MAXPOOL:
            case OP_AVGPOOL: {
                int d = n->op == OP_CONV || n->op == OP_QCONV ? n->d : 1;
                oh = conv_out_size(ih, n->k, n->s, n->p, d), ow = conv_out_size(iw, n->k, n->s, n->p, d);
                if (oh <= 0 || ow <= 0)
                    return NODE_ERR(n, "input %dx%d is too small for k=%d s=%d p=%d", ih, iw, n->k, n->s, n->p);
                break;
            }
            case OP_UPSAMPLE:
                if (n->scale)
                    oh = ih * n->scale, ow = iw * n->scale;
                else
                    oh = n->size_h, ow = n->size_w;
                if ((long long)oh * ow > (1LL << 28)) return NODE_ERR(n, "output %dx%d is too large", oh, ow);
                break;
            case OP_CONCAT:
            case OP_ADD:
                for (int j = 1; j < n->nin; j++)
                    if (vh[n->in[j]] != ih || vw[n->in[j]] != iw)
                        return NODE_ERR(n, "input '%s' is %dx%d but '%s' is %dx%d", g->values[n->in[j]].name,
                                        vh[n->in[j]], vw[n->in[j]], g->values[n->in[0]].name, ih, iw);
                break;
            case OP_SPLIT:
                break;
            case OP_DETECT: {
                long long a = 0;
                for (int j = 0; j < n->nin; j++) a += (long long)vh[n->in[j]] * vw[n->in[j]];
                if (a > INT_MAX / 128) return NODE_ERR(n, "%lld anchors is too many", a);
                oh = 1, ow = (int)a;
                break;
            }
        }
        for (int j = 0; j < n->nout; j++) vh[n->out[j]] = oh, vw[n->out[j]] = ow;
    }
    return 0;
}

double infer_model_flops(const InferModel *m, int h, int w) {
    int *vh = malloc(sizeof(int) * m->g.nvalues), *vw = malloc(sizeof(int) * m->g.nvalues);
    double f = -1;
    if (vh && vw && infer_shapes(m, h, w, vh, vw) == 0) {
        f = 0;
        for (int i = 0; i < m->g.nnodes; i++) {
            const GraphNode *n = &m->g.nodes[i];
            if (n->op != OP_CONV && n->op != OP_QCONV) continue;
            double macs = (double)n->c * (m->vc[n->in[0]] / n->g) * n->k * n->k * vh[n->out[0]] * vw[n->out[0]];
            f += 2 * macs;
        }
    }
    free(vh), free(vw);
    return f;
}

/* ---- planning ------------------------------------------------------------------------ */
static int root_of(const Storage *st, int s, int *off) {
    int o = 0;
    while (st[s].parent >= 0) o += st[s].off, s = st[s].parent;
    if (off) *off = o;
    return s;
}

static int new_storage(InferModel *m, int c, int h, int w) {
    m->st[m->nst] = (Storage){c, h, w, -1, 0, INT_MAX, -1, 0};
    return m->nst++;
}

/* Moves the storages of a concat's inputs inside its output storage S where
 * that is consistent (see the top of the file). */
static void place_concat(InferModel *m, const GraphNode *n, int S) {
    int slot[GRAPH_MAX_LIST];
    for (int j = 0, o = 0; j < n->nin; j++) slot[j] = o, o += m->vc[n->in[j]];
    for (int j = 0; j < n->nin; j++) {
        int a, r = root_of(m->st, m->vp[n->in[j]].st, &a);
        a += m->vp[n->in[j]].off;
        int base = slot[j] - a;
        if (r == 0 || r == S || base < 0 || base + m->st[r].c > m->st[S].c) continue; /* 0: the model input */
        int ok = 1;
        for (int q = 0; q < n->nin && ok; q++) { /* every slot under r's extent must be r's own data */
            int lo = slot[q], hi = slot[q] + m->vc[n->in[q]];
            if (hi <= base || lo >= base + m->st[r].c) continue;
            int aq, rq = root_of(m->st, m->vp[n->in[q]].st, &aq);
            ok = rq == r && aq + m->vp[n->in[q]].off + base == slot[q];
        }
        if (!ok) continue;
        m->st[r].parent = S;
        m->st[r].off = base;
    }
}

static size_t root_floats(const InferModel *m, const Storage *s) {
    size_t f = (size_t)m->pn * s->c * s->h * s->w;
    return (f + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

static int by_size_desc(const void *a, const void *b, void *ctx) {
    const InferModel *m = ctx;
    size_t fa = root_floats(m, &m->st[*(const int *)a]), fb = root_floats(m, &m->st[*(const int *)b]);
    return fa < fb ? 1 : fa > fb ? -1 : *(const int *)a - *(const int *)b;
}

/* First-fit offsets for the roots, largest first; returns the arena size. */
static size_t assign_memory(InferModel *m, int *roots, int nroots) {
    qsort_r(roots, (size_t)nroots, sizeof *roots, by_size_desc, m);
    size_t total = 0;
    for (int i = 0; i < nroots; i++) {
        Storage *s = &m->st[roots[i]];
        size_t need = root_floats(m, s), off = 0;
        for (int moved = 1; moved;) { /* bump past every live-overlapping block that collides */
            moved = 0;
            for (int j = 0; j < i; j++) {
                const Storage *t = &m->st[roots[j]];
                if (t->last < s->first || s->last < t->first) continue;
                size_t tsz = root_floats(m, t);
                if (off < t->mem + tsz && t->mem < off + need) off = t->mem + tsz, moved = 1;
            }
        }
        s->mem = off;
        if (off + need > total) total = off + need;
    }
    return total;
}

static int plan(InferModel *m, int n, int h, int w) {
    free_plan(m);
    Graph *g = &m->g;
    int *vh = malloc(sizeof(int) * g->nvalues), *vw = malloc(sizeof(int) * g->nvalues);
    int *roots = malloc(sizeof(int) * g->nvalues);
    m->vp = calloc((size_t)g->nvalues, sizeof *m->vp);
    m->st = calloc((size_t)g->nvalues, sizeof *m->st);
    int rc = 0;
    if (!vh || !vw || !roots || !m->vp || !m->st) {
        rc = gelan_error("infer: out of memory planning");
        goto done;
    }
    if ((rc = infer_shapes(m, h, w, vh, vw))) goto done;
    m->pn = n, m->ph = h, m->pw = w, m->nst = 0;
    for (int v = 0; v < g->nvalues; v++) m->vp[v].h = vh[v], m->vp[v].w = vw[v];
    m->vp[0].st = new_storage(m, m->in_c, h, w); /* storage 0: the caller's input */
    for (int i = 0; i < g->nnodes; i++) {
        const GraphNode *nd = &g->nodes[i];
        if (nd->op == OP_SPLIT) {
            for (int j = 0, off = m->vp[nd->in[0]].off; j < nd->nout; off += nd->sizes[j++]) {
                m->vp[nd->out[j]].st = m->vp[nd->in[0]].st;
                m->vp[nd->out[j]].off = off;
            }
            continue;
        }
        int o = nd->out[0];
        m->vp[o].st = new_storage(m, m->vc[o], vh[o], vw[o]);
        if (nd->op == OP_CONCAT) place_concat(m, nd, m->vp[o].st);
    }
    /* lifetimes of the roots: first writer .. last reader */
    for (int i = 0; i < g->nnodes; i++) {
        const GraphNode *nd = &g->nodes[i];
        for (int j = 0; j < nd->nout; j++) {
            Storage *r = &m->st[root_of(m->st, m->vp[nd->out[j]].st, NULL)];
            if (i < r->first) r->first = i;
            if (i > r->last) r->last = i;
        }
        for (int j = 0; j < nd->nin; j++) {
            Storage *r = &m->st[root_of(m->st, m->vp[nd->in[j]].st, NULL)];
            if (i > r->last) r->last = i;
        }
    }
    m->st[root_of(m->st, m->vp[m->out_value].st, NULL)].last = INT_MAX; /* the result outlives the run */
    int nroots = 0;
    for (int s = 1; s < m->nst; s++)
        if (m->st[s].parent < 0) roots[nroots++] = s;
    size_t total = assign_memory(m, roots, nroots);
    m->arena = aligned_alloc(64, (total ? total : ALIGN_FLOATS) * sizeof(float));
    m->scratch_per_thread = 0;
    for (int i = 0; i < g->nnodes; i++) {
        size_t f = g->nodes[i].op == OP_CONV ? conv_scratch_floats(&m->conv[i]) : 0;
        if (f > m->scratch_per_thread) m->scratch_per_thread = f;
    }
    m->scratch_threads = pool_threads();
    m->scratch = malloc((m->scratch_per_thread * m->scratch_threads + 1) * sizeof(float));
    size_t qbytes = 0;
    for (int i = 0; i < g->nnodes; i++) {
        if (g->nodes[i].op != OP_QCONV) continue;
        size_t b = qconv_scratch_bytes(&m->qconv[i], n, vh[g->nodes[i].in[0]], vw[g->nodes[i].in[0]]);
        if (b > qbytes) qbytes = b;
    }
    m->qscratch_threads = pool_threads();
    m->qscratch = qbytes ? aligned_alloc(64, (qbytes + 63) / 64 * 64) : NULL;
    if (qbytes && !m->qscratch) {
        rc = gelan_error("infer: out of memory for int8 conv scratch (%zu MB)", qbytes >> 20);
        goto done;
    }
    size_t out_floats = (size_t)n * m->vc[m->out_value] * vh[m->out_value] * vw[m->out_value];
    m->outbuf = malloc((out_floats ? out_floats : 1) * sizeof(float));
    if (!m->arena || !m->scratch || !m->outbuf) {
        rc = gelan_error("infer: out of memory for activations (%zu MB)", total * sizeof(float) >> 20);
        goto done;
    }
    const GraphNode *last = &g->nodes[g->nnodes - 1];
    m->oshape.ndim = last->op == OP_DETECT ? 3 : 4;
    int *sh = m->oshape.shape, ov = m->out_value;
    if (last->op == OP_DETECT)
        sh[0] = n, sh[1] = m->vc[ov], sh[2] = vw[ov], sh[3] = 0;
    else
        sh[0] = n, sh[1] = m->vc[ov], sh[2] = vh[ov], sh[3] = vw[ov];
    m->planned = 1;
done:
    free(vh), free(vw), free(roots);
    if (rc) free_plan(m);
    return rc;
}

int infer_model_prepare(InferModel *m, int n, int h, int w, InferShape *out) {
    if (n <= 0 || h <= 0 || w <= 0) return gelan_error("infer: bad input size n=%d h=%d w=%d", n, h, w);
    /* qconv scratch holds per-thread buffers: a grown pool needs a new plan */
    int q_stale = m->nqconv && m->qscratch_threads != pool_threads();
    if (!(m->planned && m->pn == n && m->ph == h && m->pw == w && !q_stale) && plan(m, n, h, w)) return -1;
    if (m->scratch_threads < pool_threads()) { /* the pool grew since planning */
        float *s = realloc(m->scratch, (m->scratch_per_thread * pool_threads() + 1) * sizeof(float));
        if (!s) return gelan_error("infer: out of memory for conv scratch");
        m->scratch = s, m->scratch_threads = pool_threads();
    }
    if (out) *out = m->oshape;
    return 0;
}

/* ---- running ---------------------------------------------------------------------------- */
static Map value_map(const InferModel *m, int v) {
    int off, r = root_of(m->st, m->vp[v].st, &off);
    const Storage *s = &m->st[r];
    size_t hw = (size_t)s->h * s->w;
    float *base = r == 0 ? (float *)m->input : m->arena + s->mem; /* the input is only read */
    return (Map){base + (size_t)(off + m->vp[v].off) * hw, m->pn, m->vc[v], m->vp[v].h, m->vp[v].w, (size_t)s->c * hw};
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int run_node(InferModel *m, int i) {
    const GraphNode *n = &m->g.nodes[i];
    Map in = value_map(m, n->in[0]), out = value_map(m, n->out[0]);
    switch (n->op) {
        case OP_CONV:
            conv_run(&m->conv[i], &in, &out, m->scratch);
            break;
        case OP_QCONV:
            if (qconv_forward(&m->qconv[i], in.p, in.bstride, in.n, in.h, in.w, out.p, out.bstride, m->qscratch)) {
                gelan_error_prefix("graph line %d", n->line);
                return -1;
            }
            break;
        case OP_MAXPOOL:
            maxpool_run(&in, &out, n->k, n->s, n->p);
            break;
        case OP_AVGPOOL:
            avgpool_run(&in, &out, n->k, n->s, n->p, n->count_include_pad);
            break;
        case OP_UPSAMPLE:
            upsample_run(&in, &out);
            break;
        case OP_SPLIT:
            break; /* views */
        case OP_ADD: {
            Map b = value_map(m, n->in[1]);
            add_run(&in, &b, &out);
            break;
        }
        case OP_CONCAT:
            for (int j = 0, c0 = 0; j < n->nin; c0 += m->vc[n->in[j++]]) {
                Map src = value_map(m, n->in[j]), dst = out;
                dst.p += (size_t)c0 * dst.h * dst.w;
                dst.c = src.c;
                if (src.p != dst.p) copy_run(&src, &dst); /* not produced in place */
            }
            break;
        case OP_DETECT: {
            Map levels[GRAPH_MAX_LIST];
            for (int j = 0; j < n->nin; j++) levels[j] = value_map(m, n->in[j]);
            detect_run(m->kern, levels, n->nin, n->nc, n->reg_max, n->strides, out.p);
            break;
        }
    }
    return 0;
}

const float *infer_model_run(InferModel *m, const float *input, int n, int c, int h, int w, InferShape *out) {
    if (c != m->in_c) return gelan_error("infer: input has %d channels, the model expects %d", c, m->in_c), NULL;
    if (infer_model_prepare(m, n, h, w, out)) return NULL;
    m->input = input;
    for (int i = 0; i < m->g.nnodes; i++) {
        double t0 = m->profile ? now() : 0;
        if (run_node(m, i)) return NULL;
        if (m->profile) m->prof[i] += now() - t0;
    }
    /* the result as one contiguous array (it may be a view inside a larger map) */
    Map o = value_map(m, m->out_value);
    size_t per = (size_t)o.c * o.h * o.w;
    if (o.bstride == per) return o.p;
    for (int i = 0; i < o.n; i++) memcpy(m->outbuf + i * per, o.p + i * o.bstride, per * sizeof(float));
    return m->outbuf;
}

/* ---- information ---------------------------------------------------------------------------- */
int infer_model_input_channels(const InferModel *m) { return m->in_c; }
const char *infer_model_output_name(const InferModel *m) { return m->g.values[m->out_value].name; }
int infer_model_layers(const InferModel *m) { return m->g.nnodes; }
size_t infer_model_params(const InferModel *m) { return m->params; }
int infer_model_class_count(const InferModel *m) { return m->nnames; }
const char *infer_model_class_name(const InferModel *m, int i) { return i >= 0 && i < m->nnames ? m->names[i] : NULL; }
const char *infer_model_kernels(const InferModel *m) { return m->kern->name; }
const char *infer_model_node_desc(const InferModel *m, int i) {
    return i >= 0 && i < m->g.nnodes ? m->g.nodes[i].text : NULL;
}

int infer_model_detect_nc(const InferModel *m) {
    for (int i = 0; i < m->g.nnodes; i++)
        if (m->g.nodes[i].op == OP_DETECT) return m->g.nodes[i].nc;
    return -1;
}

float infer_model_max_stride(const InferModel *m) {
    float s = 0;
    for (int i = 0; i < m->g.nnodes; i++)
        for (int j = 0; m->g.nodes[i].op == OP_DETECT && j < m->g.nodes[i].nstrides; j++)
            if (m->g.nodes[i].strides[j] > s) s = m->g.nodes[i].strides[j];
    return s;
}

void infer_model_set_profile(InferModel *m, int on) {
    free(m->prof);
    m->prof = on ? calloc((size_t)m->g.nnodes, sizeof *m->prof) : NULL;
    m->profile = m->prof != NULL;
}

const double *infer_model_profile(const InferModel *m) { return m->prof; }
