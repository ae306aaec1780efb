/* gelan convert: the reparameterization to a single branch and the inference
 * graph (nn/convert.h, docs/CONVERT.md). */
#include "nn/convert.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/cfg_write.h"
#include "nn/quant.h"
#include "tensor/error.h"
#include "tensor/json.h"
#include "tensor/safetensors.h"

/* ---- which layers inference needs ------------------------------------------------- */

/* Silence passes its input through: a reference to it is one to its input. */
static int resolve(const Model *m, int s) {
    while (s >= 0 && m->layers[s].kind == BLOCK_SILENCE) s = m->layers[s].src[0];
    return s;
}

typedef struct {
    int n_old, n_new;
    int *new_of; /* old layer -> new index, -1 when dropped */
    int *old_of; /* new layer -> old index, -1 for the inserted Silence */
    int silence; /* 1 when new layer 0 is a Silence standing for the image */
} Plan;

static void plan_free(Plan *p) {
    free(p->new_of);
    free(p->old_of);
    memset(p, 0, sizeof *p);
}

/* The main head reads detect inputs [(nheads-1)*nl, nheads*nl); every layer they
 * reach through `from` is kept. Layers only ever read earlier layers, so one
 * backward sweep finds the whole closure. */
static int make_plan(const Model *m, Plan *p) {
    memset(p, 0, sizeof *p);
    const int n = m->nlayers, D = n - 1;
    const Layer *H = &m->layers[D];
    if (!m->detect || H->kind != BLOCK_DETECT)
        return gelan_error("convert: the last layer of %s is not a detect head", m->name);
    const Detect *d = m->detect;
    p->n_old = n;
    p->new_of = malloc(sizeof(int) * (size_t)n);
    p->old_of = malloc(sizeof(int) * (size_t)(n + 1));
    bool *keep = calloc((size_t)n, sizeof *keep);
    if (!p->new_of || !p->old_of || !keep) {
        free(keep);
        plan_free(p);
        return gelan_error("convert: out of memory");
    }
    keep[D] = true;
    for (int k = (d->nheads - 1) * d->nl; k < d->nheads * d->nl; k++) {
        int s = resolve(m, H->src[k]);
        if (s >= 0) keep[s] = true;
    }
    bool reads_image_late = false;
    for (int i = D - 1; i >= 0; i--) {
        if (!keep[i]) continue;
        const Layer *L = &m->layers[i];
        for (int k = 0; k < L->nfrom; k++) {
            int s = resolve(m, L->src[k]);
            if (s >= 0) keep[s] = true;
        }
    }
    /* the YAML can name the image only as `-1` of the first layer; any other
     * reader needs a Silence at layer 0 (why yolov9-c has one) */
    int first = -1;
    for (int i = 0; i < D; i++) {
        if (!keep[i]) continue;
        if (first < 0) first = i;
        const Layer *L = &m->layers[i];
        for (int k = 0; k < L->nfrom; k++)
            if (resolve(m, L->src[k]) < 0 && i != first) reads_image_late = true;
    }
    for (int k = (d->nheads - 1) * d->nl; k < d->nheads * d->nl; k++)
        if (resolve(m, H->src[k]) < 0) reads_image_late = true;
    p->silence = reads_image_late;
    int j = 0;
    if (p->silence) p->old_of[j++] = -1;
    for (int i = 0; i < n; i++) {
        p->new_of[i] = keep[i] ? j : -1;
        if (keep[i]) p->old_of[j++] = i;
    }
    p->n_new = j;
    free(keep);
    return 0;
}

/* The new index of what input k of old layer i reads; -1 = the image. */
static int new_source(const Model *m, const Plan *p, int i, int k) {
    int s = resolve(m, m->layers[i].src[k]);
    if (s < 0) return p->silence ? 0 : -1;
    return p->new_of[s];
}

/* ---- the single-branch YAML ------------------------------------------------------- */

/* One `from` entry of new layer j: `-1` where the original was relative and
 * still points at the previous layer, else the absolute new index. */
static void yaml_from(TextBuf *t, const Model *m, const Plan *p, int i, int j, int k) {
    int ns = new_source(m, p, i, k);
    if (ns < 0 || (m->layers[i].from[k] < 0 && ns == j - 1))
        textbuf_add(t, "-1");
    else
        textbuf_add(t, "%d", ns);
}

/* The head's arguments. A pruned model's width overrides (nn/blocks.h) name
 * the head's convs: those of the main head move to cv2/cv3 with it, the
 * auxiliary heads' are dropped with them. */
static void detect_args(TextBuf *t, const CfgValue *args, int nheads) {
    const CfgValue *w = args->n && model_is_width_list(&args->items[args->n - 1]) ? &args->items[args->n - 1] : NULL;
    if (!w || nheads == 1) {
        cfg_write_value(t, args);
        return;
    }
    textbuf_add(t, "[");
    for (int i = 0; i < args->n - 1; i++) {
        cfg_write_value(t, &args->items[i]);
        textbuf_add(t, ", ");
    }
    textbuf_add(t, "[");
    char box[16], cls[16];
    int nb = snprintf(box, sizeof box, "cv%d.", 2 + 2 * (nheads - 1));
    int nc = snprintf(cls, sizeof cls, "cv%d.", 3 + 2 * (nheads - 1));
    bool first = true;
    for (int i = 0; i < w->n; i++) {
        const CfgValue *k = &w->items[i].items[0];
        if (k->kind != CV_STR) continue;
        bool is_box = !strncmp(k->str, box, (size_t)nb), is_cls = !strncmp(k->str, cls, (size_t)nc);
        if (!is_box && !is_cls) continue;
        textbuf_add(t, "%s['cv%d.%s', %ld]", first ? "" : ", ", is_box ? 2 : 3, k->str + (is_box ? nb : nc),
                    w->items[i].items[1].ival);
        first = false;
    }
    textbuf_add(t, "]]");
}

static void yaml_row(TextBuf *t, const Model *m, const ModelCfg *cfg, const Plan *p, int j) {
    int i = p->old_of[j];
    if (i < 0) {
        textbuf_add(t, "   [-1, 1, Silence, []],  # %d: the image, read by more than one layer\n", j);
        return;
    }
    const Layer *L = &m->layers[i];
    const CfgRow *row = &cfg->rows[i];
    textbuf_add(t, "   [");
    if (L->kind == BLOCK_DETECT) {
        const Detect *d = m->detect;
        int k0 = (d->nheads - 1) * d->nl;
        textbuf_add(t, "[");
        for (int k = k0; k < k0 + d->nl; k++) {
            if (k > k0) textbuf_add(t, ", ");
            yaml_from(t, m, p, i, j, k);
        }
        textbuf_add(t, "], %ld, DDetect, ", row->number);
        detect_args(t, &row->args, d->nheads);
        if (d->nheads == 1)
            textbuf_add(t, "],  # %d <- %d\n", j, i);
        else
            textbuf_add(t, "],  # %d <- %d (%s: cv%d/cv%d/dfl%d -> cv2/cv3/dfl)\n", j, i, L->module, 2 * d->nheads,
                        2 * d->nheads + 1, d->nheads);
        return;
    }
    if (L->from_list) textbuf_add(t, "[");
    for (int k = 0; k < L->nfrom; k++) {
        if (k) textbuf_add(t, ", ");
        yaml_from(t, m, p, i, j, k);
    }
    if (L->from_list) textbuf_add(t, "]");
    textbuf_add(t, ", %ld, %s, ", row->number, row->module);
    cfg_write_value(t, &row->args);
    textbuf_add(t, "],  # %d <- %d\n", j, i);
}

static char *single_yaml(const Model *m, const Plan *p) {
    ModelCfg *cfg = cfg_of_model(m, "convert");
    if (!cfg) return NULL;
    TextBuf t = {0};
    textbuf_add(&t, "# Single-branch model made by `gelan convert` from ");
    textbuf_comment(&t, m->file);
    textbuf_add(&t, ": the layers that the main detection\n");
    textbuf_add(&t,
                "# head depends on, renumbered (`# new <- old` on each row); the auxiliary branches are dropped.\n");
    cfg_write_header(&t, m, cfg);
    /* rows keep their section; the inserted Silence opens the backbone */
    textbuf_add(&t, "\nbackbone:\n  [\n");
    int j = 0;
    for (; j < p->n_new && p->old_of[j] < cfg->nbackbone; j++) yaml_row(&t, m, cfg, p, j);
    textbuf_add(&t, "  ]\n\nhead:\n  [\n");
    for (; j < p->n_new; j++) yaml_row(&t, m, cfg, p, j);
    textbuf_add(&t, "  ]\n");
    model_cfg_free(cfg);
    return textbuf_take(&t, "convert");
}

char *convert_single_yaml(const Model *src, int **old_of, int *nlayers) {
    Plan p;
    if (make_plan(src, &p)) return NULL;
    char *y = single_yaml(src, &p);
    if (y && old_of) {
        *old_of = p.old_of;
        p.old_of = NULL;
        if (nlayers) *nlayers = p.n_new;
    }
    plan_free(&p);
    return y;
}

int convert_source_name(const Model *src, const int *old_of, int nlayers, const char *name, char *buf, size_t len) {
    if (strncmp(name, "model.", 6)) return -1;
    char *end;
    long j = strtol(name + 6, &end, 10);
    if (end == name + 6 || *end != '.' || j < 0 || j >= nlayers || old_of[j] < 0) return -1;
    const char *rest = end + 1;
    int old = old_of[j];
    if (src->layers[old].kind != BLOCK_DETECT) {
        snprintf(buf, len, "model.%d.%s", old, rest);
        return 0;
    }
    int h = src->detect->nheads - 1; /* the main head */
    if (!strncmp(rest, "cv2.", 4))
        snprintf(buf, len, "model.%d.cv%d.%s", old, 2 + 2 * h, rest + 4);
    else if (!strncmp(rest, "cv3.", 4))
        snprintf(buf, len, "model.%d.cv%d.%s", old, 3 + 2 * h, rest + 4);
    else if (!strncmp(rest, "dfl.", 4) && h == 0)
        snprintf(buf, len, "model.%d.dfl.%s", old, rest + 4);
    else if (!strncmp(rest, "dfl.", 4))
        snprintf(buf, len, "model.%d.dfl%d.%s", old, h + 1, rest + 4);
    else
        return -1;
    return 0;
}

static int copy_tensor(const Model *src, const int *old_of, int n, const char *name, Tensor *dst) {
    char sname[512];
    if (convert_source_name(src, old_of, n, name, sname, sizeof sname))
        return gelan_error("convert: no source for %s", name);
    const Tensor *s = model_tensor(src, sname);
    if (!s) return gelan_error("convert: %s (source of %s) is not in %s", sname, name, src->name);
    if (!tensor_same_shape(s, dst)) {
        char a[64], b[64];
        return gelan_error("convert: %s is %s but %s is %s", sname, tensor_shape_str(s, a, sizeof a), name,
                           tensor_shape_str(dst, b, sizeof b));
    }
    memcpy(dst->data, s->data, dst->numel * sizeof(float));
    return 0;
}

Model *convert_single_branch(const Model *src, const char *name) {
    if (src->fused) {
        gelan_error("convert: %s is fused; convert the model before fusing it", src->name);
        return NULL;
    }
    int *old_of = NULL, n = 0;
    char *yaml = convert_single_yaml(src, &old_of, &n);
    if (!yaml) return NULL;
    ModelOptions o = {src->nc, 0};
    Model *dst = model_build(yaml, name ? name : src->file, &o);
    free(yaml);
    int rc = dst ? 0 : -1;
    if (!dst) gelan_error_prefix("convert: the single-branch YAML of %s does not build", src->name);
    if (!rc && dst->nlayers != n) rc = gelan_error("convert: internal: %d layers planned, %d built", n, dst->nlayers);
    for (int i = 0; !rc && i < dst->nparams; i++)
        rc = copy_tensor(src, old_of, n, dst->params[i].name, dst->params[i].t);
    for (int i = 0; !rc && i < dst->nbuffers; i++)
        rc = copy_tensor(src, old_of, n, dst->buffers[i].name, dst->buffers[i].t);
    for (int l = 0; !rc && l < dst->head.nl; l++)
        if (dst->head.strides[l] != src->head.strides[l])
            rc = gelan_error("convert: level %d has stride %g, the source's main head %g", l, dst->head.strides[l],
                             src->head.strides[l]);
    free(old_of);
    if (rc) {
        model_free(dst);
        return NULL;
    }
    return dst;
}

typedef struct {
    const Model *src;
    const int *old_of;
    int n;
    int (*read)(void *ctx, const char *name, Tensor *dst);
    void *ctx;
} QatSource;

/* qat.NAME.LEAF of the converted model <- qat.SRC.LEAF, SRC.weight the source of NAME.weight. */
static int read_qat_source(void *ctx, const char *name, Tensor *dst) {
    const QatSource *q = ctx;
    const char *leaf = strrchr(name, '.');
    char weight[512], src[512], file[600];
    if (strncmp(name, "qat.", 4) || !leaf || leaf - name <= 4) return gelan_error("convert: bad qat name %s", name);
    snprintf(weight, sizeof weight, "%.*s.weight", (int)(leaf - name - 4), name + 4);
    if (convert_source_name(q->src, q->old_of, q->n, weight, src, sizeof src)) return -1;
    size_t len = strlen(src);
    if (len < 7 || strcmp(src + len - 7, ".weight")) return gelan_error("convert: %s maps to %s", weight, src);
    snprintf(file, sizeof file, "qat.%.*s%s", (int)(len - 7), src, leaf);
    return q->read(q->ctx, file, dst);
}

int convert_qat_enable(Model *dst, const Model *src, const int *old_of, int nlayers,
                       int (*read)(void *ctx, const char *name, Tensor *dst), void *ctx, int *count) {
    QatSource q = {src, old_of, nlayers, read, ctx};
    return model_qat_enable_from(dst, read_qat_source, &q, count);
}

/* ---- the inference graph ---------------------------------------------------------- */
typedef struct {
    TextBuf t;
    int nnodes;
    char (*vals)[32]; /* value names; id -1 is `input` */
    int nvals, capv;
    GraphTensor *tens;
    unsigned char *int8; /* per tensor (capt entries) */
    int ntens, capt;
    void **own; /* qconv codes and scales */
    int nown, capown;
    int rc;
} Emit;

static const char *vname(const Emit *E, int v) { return v < 0 ? "input" : E->vals[v]; }

static int new_value(Emit *E, const char *name) {
    if (E->nvals == E->capv) {
        int cap = E->capv ? 2 * E->capv : 256;
        char(*v)[32] = realloc(E->vals, (size_t)cap * sizeof *v);
        if (!v) {
            E->rc = gelan_error("convert: out of memory");
            return -2;
        }
        E->vals = v;
        E->capv = cap;
    }
    snprintf(E->vals[E->nvals], sizeof E->vals[0], "%s", name);
    return E->nvals++;
}

static void add_tensor(Emit *E, const char *name, const Tensor *t) {
    if (E->ntens == E->capt) {
        int cap = E->capt ? 2 * E->capt : 256;
        GraphTensor *g = realloc(E->tens, (size_t)cap * sizeof *g);
        if (g) E->tens = g;
        unsigned char *i8 = g ? realloc(E->int8, (size_t)cap) : NULL;
        if (!i8) {
            E->rc = gelan_error("convert: out of memory");
            return;
        }
        E->int8 = i8;
        E->capt = cap;
    }
    E->int8[E->ntens] = 0;
    GraphTensor *g = &E->tens[E->ntens++];
    snprintf(g->name, sizeof g->name, "%s", name);
    g->ndim = t->ndim;
    for (int d = 0; d < t->ndim && d < 4; d++) g->shape[d] = t->shape[d];
    g->data = t->data;
}

/* Starts a node with one output x{node}: writes "OP x{node} IN" and returns the value. */
static int node1(Emit *E, const char *op, int in) {
    char name[32];
    snprintf(name, sizeof name, "x%d", E->nnodes);
    int v = new_value(E, name);
    if (v < 0) return -1;
    textbuf_add(&E->t, "%s %s %s", op, name, vname(E, in));
    E->nnodes++;
    return v;
}

static const char *act_name(ActKind k) {
    switch (k) {
        case ACT_SILU:
            return "silu";
        case ACT_RELU:
            return "relu";
        case ACT_LEAKY_RELU:
            return "leakyrelu";
        case ACT_NONE:
            break;
    }
    return "none";
}

/* A buffer the graph keeps (freed by convert_graph_free); NULL with E->rc set. */
static void *own_alloc(Emit *E, size_t bytes) {
    if (E->nown == E->capown) {
        int cap = E->capown ? 2 * E->capown : 64;
        void **o = realloc(E->own, (size_t)cap * sizeof *o);
        if (!o) {
            E->rc = gelan_error("convert: out of memory");
            return NULL;
        }
        E->own = o, E->capown = cap;
    }
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        E->rc = gelan_error("convert: out of memory");
    else
        E->own[E->nown++] = p;
    return p;
}

/* A quantized conv (u->q, folded): qconv with the int8 codes n{node}.w [c2, c1/g, k, k]
 * (I8), their scales n{node}.ws [c2], the input's sx and zp, the fp32 bias n{node}.b. */
static int emit_qconv(Emit *E, const ConvUnit *u, int in) {
    int8_t *wq = malloc(u->weight->numel ? u->weight->numel : 1);
    float *wf = own_alloc(E, u->weight->numel * sizeof(float)), *ws = own_alloc(E, (size_t)u->c2 * sizeof(float));
    if (!wq && !E->rc) E->rc = gelan_error("convert: out of memory");
    float sx;
    int zp;
    if (!E->rc && qat_unit_int8(u, wq, ws, &sx, &zp)) {
        gelan_error_prefix("convert");
        E->rc = -1;
    }
    for (size_t i = 0; !E->rc && i < u->weight->numel; i++) wf[i] = wq[i];
    free(wq);
    if (E->rc) return -2;
    int node = E->nnodes;
    int v = node1(E, "qconv", in);
    if (v < 0) return -2;
    char w[32], b[32], s[32];
    snprintf(w, sizeof w, "n%d.w", node);
    snprintf(s, sizeof s, "n%d.ws", node);
    snprintf(b, sizeof b, "n%d.b", node);
    textbuf_add(&E->t, " c=%d k=%d s=%d p=%d g=%d act=%s", u->c2, u->k, u->s, u->p, u->g, act_name(u->act.kind));
    if (u->act.kind == ACT_LEAKY_RELU) textbuf_add(&E->t, " alpha=%.9g", u->act.slope);
    /* %.9g round-trips a float: the runtime gets the very s_x the fake quant used */
    textbuf_add(&E->t, " w=%s ws=%s sx=%.9g zp=%d", w, s, (double)sx, zp);
    Tensor codes = *u->weight;
    codes.data = wf;
    add_tensor(E, w, &codes);
    if (!E->rc) E->int8[E->ntens - 1] = 1;
    Tensor scales = {.ndim = 1, .shape = {u->c2}, .numel = (size_t)u->c2, .data = ws};
    add_tensor(E, s, &scales);
    if (u->bias) {
        textbuf_add(&E->t, " b=%s", b);
        add_tensor(E, b, u->bias);
    }
    textbuf_add(&E->t, "\n");
    return v;
}

static int emit_conv(Emit *E, const ConvUnit *u, int in) {
    if (E->rc || in < -1) return -2;
    if (u->bn_weight || u->removed) {
        E->rc = gelan_error("convert: %s is not fused (BN folding and RepConvN merging come first)", u->name);
        return -2;
    }
    if (u->q) return emit_qconv(E, u, in);
    int node = E->nnodes;
    int v = node1(E, "conv", in);
    if (v < 0) return -2;
    char w[32], b[32];
    snprintf(w, sizeof w, "n%d.w", node);
    snprintf(b, sizeof b, "n%d.b", node);
    textbuf_add(&E->t, " c=%d k=%d s=%d p=%d g=%d act=%s", u->c2, u->k, u->s, u->p, u->g, act_name(u->act.kind));
    if (u->act.kind == ACT_LEAKY_RELU) textbuf_add(&E->t, " alpha=%.9g", u->act.slope);
    textbuf_add(&E->t, " w=%s", w);
    add_tensor(E, w, u->weight);
    if (u->bias) {
        textbuf_add(&E->t, " b=%s", b);
        add_tensor(E, b, u->bias);
    }
    textbuf_add(&E->t, "\n");
    return v;
}

static int emit_pool(Emit *E, const char *op, int in, int k, int s, int p) {
    if (E->rc || in < -1) return -2;
    int v = node1(E, op, in);
    if (v < 0) return -2;
    textbuf_add(&E->t, " k=%d s=%d p=%d\n", k, s, p);
    return v;
}

static int emit_upsample(Emit *E, int in, int scale) {
    if (E->rc || in < -1) return -2;
    int v = node1(E, "upsample", in);
    if (v < 0) return -2;
    textbuf_add(&E->t, " scale=%d\n", scale);
    return v;
}

static int emit_multi_in(Emit *E, const char *op, const int *ins, int n) {
    if (E->rc) return -2;
    for (int i = 0; i < n; i++)
        if (ins[i] < -1) return -2;
    char name[32];
    snprintf(name, sizeof name, "x%d", E->nnodes);
    int v = new_value(E, name);
    if (v < 0) return -2;
    textbuf_add(&E->t, "%s %s ", op, name);
    for (int i = 0; i < n; i++) textbuf_add(&E->t, "%s%s", i ? "," : "", vname(E, ins[i]));
    textbuf_add(&E->t, "\n");
    E->nnodes++;
    return v;
}

#define MAX_LIST 64 /* inputs of a concat, outputs of a split (infer/graph.h GRAPH_MAX_LIST) */

/* concat of any number of values: groups of MAX_LIST concatenated again. */
static int emit_concat(Emit *E, const int *ins, int n) {
    if (n <= MAX_LIST) return emit_multi_in(E, "concat", ins, n);
    int ngroups = (n + MAX_LIST - 1) / MAX_LIST, parts[MAX_LIST];
    if (ngroups > MAX_LIST) {
        E->rc = gelan_error("convert: a concat of %d values is too large", n);
        return -2;
    }
    for (int g = 0; g < ngroups; g++) {
        int cnt = n - g * MAX_LIST < MAX_LIST ? n - g * MAX_LIST : MAX_LIST;
        parts[g] = emit_multi_in(E, "concat", ins + g * MAX_LIST, cnt);
    }
    return emit_multi_in(E, "concat", parts, ngroups);
}

static int emit_add(Emit *E, int a, int b) {
    int ins[2] = {a, b};
    return emit_multi_in(E, "add", ins, 2);
}

/* split into n <= MAX_LIST pieces: outs x{node}_{k}. */
static int emit_split(Emit *E, int in, const int *sizes, int n, int *outs) {
    if (E->rc || in < -1) return -1;
    int node = E->nnodes++;
    textbuf_add(&E->t, "split ");
    for (int k = 0; k < n; k++) {
        char name[32];
        snprintf(name, sizeof name, "x%d_%d", node, k);
        if ((outs[k] = new_value(E, name)) < 0) return -1;
        textbuf_add(&E->t, "%s%s", k ? "," : "", name);
    }
    textbuf_add(&E->t, " %s sizes=", vname(E, in));
    for (int k = 0; k < n; k++) textbuf_add(&E->t, "%s%d", k ? "," : "", sizes[k]);
    textbuf_add(&E->t, "\n");
    return 0;
}

/* Splits a c-channel value into its single channels (chunks of MAX_LIST first). */
static int emit_channels(Emit *E, int in, int c, int *outs) {
    int ones[MAX_LIST];
    for (int k = 0; k < MAX_LIST; k++) ones[k] = 1;
    if (c <= MAX_LIST) return emit_split(E, in, ones, c, outs);
    int nchunks = (c + MAX_LIST - 1) / MAX_LIST, sizes[MAX_LIST] = {0}, chunks[MAX_LIST] = {0};
    if (nchunks > MAX_LIST) return E->rc = gelan_error("convert: a channel shuffle of %d channels is too large", c);
    for (int k = 0; k < nchunks; k++) sizes[k] = c - k * MAX_LIST < MAX_LIST ? c - k * MAX_LIST : MAX_LIST;
    if (emit_split(E, in, sizes, nchunks, chunks)) return -1;
    for (int k = 0; k < nchunks; k++)
        if (emit_split(E, chunks[k], ones, sizes[k], outs + k * MAX_LIST)) return -1;
    return 0;
}

/* channel_shuffle(cat(a, b), 2) for a, b of c channels each: output channel
 * 2i is a[i], 2i+1 is b[i]. The graph has no shuffle op, so the channels are
 * split apart and concatenated in the interleaved order (views and copies
 * only; no arithmetic). */
static int emit_shuffle2(Emit *E, int a, int b, int c) {
    if (E->rc || a < -1 || b < -1) return -2;
    int *ch = malloc(sizeof(int) * (size_t)c * 4);
    if (!ch) {
        E->rc = gelan_error("convert: out of memory");
        return -2;
    }
    int *ca = ch, *cb = ch + c, *order = ch + 2 * c, v = -2;
    if (!emit_channels(E, a, c, ca) && !emit_channels(E, b, c, cb)) {
        for (int i = 0; i < c; i++) order[2 * i] = ca[i], order[2 * i + 1] = cb[i];
        v = emit_concat(E, order, 2 * c);
    }
    free(ch);
    return v;
}

/* torch.chunk(x, 2) along channels: the first piece gets the odd channel. */
static int emit_chunk2(Emit *E, int in, int c, int *halves) {
    int sizes[2] = {c - c / 2, c / 2};
    return emit_split(E, in, sizes, 2, halves);
}

static int emit_repncsp(Emit *E, const RepNCSP *b, int in) {
    int y = emit_conv(E, b->cv1, in);
    for (int j = 0; j < b->n; j++) {
        const RepNBottleneck *bt = &b->m[j];
        if (!bt->cv1->fused) {
            E->rc = gelan_error("convert: %s is not merged (fuse the model first)", bt->cv1->conv1->name);
            return -2;
        }
        int z = emit_conv(E, bt->cv2, emit_conv(E, bt->cv1->conv1, y));
        y = bt->add ? emit_add(E, y, z) : z;
    }
    int cat[2] = {y, emit_conv(E, b->cv2, in)};
    return emit_conv(E, b->cv3, emit_concat(E, cat, 2));
}

static int emit_block(Emit *E, const Block *b, int in) {
    int h[4];
    switch (b->kind) {
        case BLOCK_SILENCE:
            return in;
        case BLOCK_CONV:
            return emit_conv(E, b->u.conv, in);
        case BLOCK_ACONV:
            return emit_conv(E, b->u.aconv.cv1, emit_pool(E, "avgpool", in, 2, 1, 0));
        case BLOCK_ADOWN: {
            const ADown *a = &b->u.adown;
            int p = emit_pool(E, "avgpool", in, 2, 1, 0);
            int sizes[2] = {a->cv1->c1, a->cv2->c1};
            if (emit_split(E, p, sizes, 2, h)) return -2;
            h[0] = emit_conv(E, a->cv1, h[0]);
            h[1] = emit_conv(E, a->cv2, emit_pool(E, "maxpool", h[1], 3, 2, 1));
            return emit_concat(E, h, 2);
        }
        case BLOCK_ELAN1: {
            const ELAN1 *e = &b->u.elan1;
            if (emit_chunk2(E, emit_conv(E, e->cv1, in), e->cv1->c2, h)) return -2;
            h[2] = emit_conv(E, e->cv2, h[1]);
            h[3] = emit_conv(E, e->cv3, h[2]);
            return emit_conv(E, e->cv4, emit_concat(E, h, 4));
        }
        case BLOCK_REPNCSPELAN4: {
            const RepNCSPELAN4 *e = &b->u.elan4;
            if (emit_chunk2(E, emit_conv(E, e->cv1, in), e->cv1->c2, h)) return -2;
            h[2] = emit_conv(E, e->cv2_conv, emit_repncsp(E, &e->cv2_csp, h[1]));
            h[3] = emit_conv(E, e->cv3_conv, emit_repncsp(E, &e->cv3_csp, h[2]));
            return emit_conv(E, e->cv4, emit_concat(E, h, 4));
        }
        case BLOCK_SPPELAN: {
            const SPPELAN *s = &b->u.sppelan;
            h[0] = emit_conv(E, s->cv1, in);
            for (int i = 1; i < 4; i++) h[i] = emit_pool(E, "maxpool", h[i - 1], s->k, 1, s->k / 2);
            return emit_conv(E, s->cv5, emit_concat(E, h, 4));
        }
        case BLOCK_SHUFFLENETV2: {
            const ShuffleNetV2 *s = &b->u.shuffle;
            int x1 = in, x2 = in;
            if (s->stride == 1) {
                if (emit_chunk2(E, in, s->c1, h)) return -2;
                x1 = h[0], x2 = h[1];
            } else {
                x1 = emit_conv(E, s->b1_dw, in);
            }
            int y1 = emit_conv(E, s->b1_pw, x1);
            int y2 = emit_conv(E, s->b2_pw2, emit_conv(E, s->b2_dw, emit_conv(E, s->b2_pw1, x2)));
            return emit_shuffle2(E, y1, y2, s->b1_pw->c2);
        }
        case BLOCK_UPSAMPLE:
            return emit_upsample(E, in, b->u.upsample.scale);
        case BLOCK_MAXPOOL:
            return emit_pool(E, "maxpool", in, b->u.pool.k, b->u.pool.s, b->u.pool.p);
        default:
            break;
    }
    E->rc = gelan_error("convert: internal: block kind %d has no graph form", (int)b->kind);
    return -2;
}

typedef struct {
    int n;
    int v[CBLINEAR_MAX_OUTS];
} LayerVals;

/* Output sizes of every layer at two input sizes: CBFuse's resize factors
 * must not depend on the size. */
typedef struct {
    LayerShape *at[2];
    int img[2];
} Sizes;

/* The integer factor by which CBFuse input k of layer L is enlarged (the
 * official F.interpolate(size=...), nearest, is an integer upsampling here). */
static int cbfuse_scale(const Sizes *sz, const Layer *L, int k) {
    int s = L->src[k], t = L->src[L->nfrom - 1], scale = 0;
    for (int r = 0; r < 2; r++) {
        LayerShape a = sz->at[r][s];
        LayerShape b = t < 0 ? (LayerShape){0, sz->img[r], sz->img[r]} : sz->at[r][t];
        int f = b.h / a.h;
        if (b.h % a.h || b.w % a.w || b.w / a.w != f || (scale && f != scale))
            return gelan_error(
                "convert: layer %d (CBFuse) resizes layer %d's %dx%d map to %dx%d: only an integer enlargement, "
                "the same at every input size, has a graph form",
                L->index, s, a.h, a.w, b.h, b.w);
        scale = f;
    }
    return scale;
}

static int emit_layer(Emit *E, const Model *m, const Sizes *sz, LayerVals *outs, int i) {
    const Layer *L = &m->layers[i];
    LayerVals *o = &outs[i];
    int ins[MAX_LIST];
    if (L->nfrom > MAX_LIST) return E->rc = gelan_error("convert: layer %d has more than %d inputs", i, MAX_LIST);
    for (int k = 0; k < L->nfrom; k++) ins[k] = L->src[k] < 0 ? -1 : outs[L->src[k]].v[0];
    o->n = 1;
    textbuf_add(&E->t, "# layer %d: %s ", i, L->module);
    textbuf_comment(&E->t, L->args ? L->args : "");
    textbuf_add(&E->t, "\n");
    switch (L->kind) {
        case BLOCK_CONCAT:
            o->v[0] = emit_concat(E, ins, L->nfrom);
            break;
        case BLOCK_CBLINEAR: {
            const CBLinear *c = &L->blocks[0].u.cblinear;
            int y = emit_conv(E, c->conv, ins[0]);
            o->n = c->nout;
            if (c->nout == 1)
                o->v[0] = y;
            else if (emit_split(E, y, c->c2s, c->nout, o->v))
                return -1;
            break;
        }
        case BLOCK_CBFUSE: {
            const CBFuse *cf = &L->blocks[0].u.cbfuse;
            int acc = -2;
            for (int k = 0; k < cf->n; k++) {
                int piece = outs[L->src[k]].v[cf->idx[k]];
                int scale = cbfuse_scale(sz, L, k);
                if (scale < 0) return E->rc = -1;
                if (scale > 1) piece = emit_upsample(E, piece, scale);
                acc = k == 0 ? piece : emit_add(E, acc, piece);
            }
            o->v[0] = cf->n ? emit_add(E, acc, ins[L->nfrom - 1]) : ins[L->nfrom - 1];
            break;
        }
        case BLOCK_DETECT: {
            const Detect *d = L->blocks[0].u.detect;
            if (d->nheads != 1) return E->rc = gelan_error("convert: the graph takes a single head; convert first");
            /* the EMA averages the fixed DFL weights too (as the official ModelEMA
             * does), which can move them by a rounding error: allow that much */
            for (int r = 0; r < d->reg_max; r++)
                if (fabsf(d->dfl[0]->weight->data[r] - (float)r) > 1e-4f * (r + 1))
                    return E->rc = gelan_error("convert: %s.weight[%d] is %.9g, not %d: `detect` assumes the fixed DFL",
                                               d->dfl[0]->name, r, d->dfl[0]->weight->data[r], r);
            int levels[DETECT_MAX_LEVELS];
            for (int l = 0; l < d->nl; l++) {
                int bc[2] = {ins[l], ins[l]};
                for (int u = 0; u < 3; u++) bc[0] = emit_conv(E, d->box[0][l][u], bc[0]);
                for (int u = 0; u < 3; u++) bc[1] = emit_conv(E, d->cls[0][l][u], bc[1]);
                levels[l] = emit_concat(E, bc, 2);
            }
            if (E->rc) return -1;
            for (int l = 0; l < d->nl; l++)
                if (levels[l] < 0) return E->rc = gelan_error("convert: internal: detect level %d has no value", l);
            textbuf_add(&E->t, "detect pred ");
            for (int l = 0; l < d->nl; l++) textbuf_add(&E->t, "%s%s", l ? "," : "", vname(E, levels[l]));
            textbuf_add(&E->t, " nc=%d reg_max=%d strides=", d->nc, d->reg_max);
            for (int l = 0; l < d->nl; l++) textbuf_add(&E->t, "%s%g", l ? "," : "", d->stride[l]);
            textbuf_add(&E->t, "\n");
            E->nnodes++;
            o->n = 0;
            break;
        }
        default: {
            int x = ins[0];
            for (int j = 0; j < L->n; j++) x = emit_block(E, &L->blocks[j], x);
            o->v[0] = x;
            break;
        }
    }
    if (E->rc) return -1;
    if (o->n > 0 && o->v[0] < -1) return E->rc = gelan_error("convert: internal: layer %d has no value", i);
    return 0;
}

int convert_graph(const Model *m, InferGraph *g) {
    memset(g, 0, sizeof *g);
    if (!m->fused) return gelan_error("convert: %s is not fused (model_fuse first)", m->name);
    if (m->head.nheads != 1)
        return gelan_error("convert: %s has %d heads; the graph takes one", m->name, m->head.nheads);
    Emit E = {0};
    LayerVals *outs = calloc((size_t)m->nlayers, sizeof *outs);
    Sizes sz = {{calloc((size_t)m->nlayers, sizeof(LayerShape)), calloc((size_t)m->nlayers, sizeof(LayerShape))},
                {0, 0}};
    if (!outs || !sz.at[0] || !sz.at[1]) E.rc = gelan_error("convert: out of memory");
    int smax = 1;
    for (int l = 0; l < m->head.nl; l++) smax = smax > (int)m->head.strides[l] ? smax : (int)m->head.strides[l];
    sz.img[0] = 8 * smax, sz.img[1] = 20 * smax;
    for (int r = 0; r < 2 && !E.rc; r++)
        if (model_shapes(m, sz.img[r], sz.img[r], sz.at[r], NULL, NULL)) E.rc = -1;
    if (!E.rc) {
        textbuf_add(&E.t, "# gelan-infer/1 graph of ");
        textbuf_comment(&E.t, m->name);
        textbuf_add(&E.t, " (gelan convert): BN folded, RepConvN merged\n");
        for (int i = 0; i < m->nlayers && !E.rc; i++) emit_layer(&E, m, &sz, outs, i);
    }
    free(outs);
    free(sz.at[0]);
    free(sz.at[1]);
    free(E.vals);
    char *text = E.rc ? NULL : textbuf_take(&E.t, "convert");
    if (!text) {
        if (E.rc) free(E.t.s);
        free(E.tens);
        free(E.int8);
        for (int i = 0; i < E.nown; i++) free(E.own[i]);
        free(E.own);
        return -1;
    }
    g->text = text;
    g->nnodes = E.nnodes;
    g->tensors = E.tens;
    g->ntensors = E.ntens;
    g->int8 = E.int8;
    g->owned = E.own;
    g->nowned = E.nown;
    return 0;
}

void convert_graph_free(InferGraph *g) {
    free(g->text);
    free(g->tensors);
    free(g->int8);
    for (int i = 0; i < g->nowned; i++) free(g->owned[i]);
    free(g->owned);
    memset(g, 0, sizeof *g);
}

int convert_graph_lookup(void *ctx, const char *name, InferTensor *out) {
    const InferGraph *g = ctx;
    for (int i = 0; i < g->ntensors; i++) {
        if (strcmp(g->tensors[i].name, name)) continue;
        out->data = g->tensors[i].data;
        out->ndim = g->tensors[i].ndim;
        for (int d = 0; d < out->ndim; d++) out->shape[d] = g->tensors[i].shape[d];
        return 0;
    }
    return -1;
}

/* ---- files -------------------------------------------------------------------------- */

char *convert_default_names(int nc) {
    char **names = calloc((size_t)(nc > 0 ? nc : 1), sizeof *names);
    char *json = NULL;
    int ok = names != NULL;
    for (int i = 0; ok && i < nc; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "class%d", i);
        ok = (names[i] = strdup(buf)) != NULL;
    }
    if (ok) json = json_string_list((const char *const *)names, (size_t)nc);
    for (int i = 0; names && i < nc; i++) free(names[i]);
    free(names);
    if (!json) gelan_error("convert: out of memory");
    return json;
}

/* names must be a JSON list of nc strings. */
static int check_names(const char *json, int nc) {
    if (!json) return gelan_error("convert: no class names");
    JsonValue *v = json_parse(json, strlen(json));
    if (!v) {
        gelan_error_prefix("convert: class names");
        return -1;
    }
    int rc = 0;
    if (v->type != JSON_ARRAY)
        rc = gelan_error("convert: class names: expected a JSON list, got %s", json_type_name(v->type));
    for (size_t i = 0; !rc && i < v->count; i++)
        if (json_at(v, i)->type != JSON_STRING) rc = gelan_error("convert: class name %zu is not a string", i);
    if (!rc && (int)v->count != nc) rc = gelan_error("convert: %zu class names for a model with nc = %d", v->count, nc);
    json_free(v);
    return rc;
}

static int set_common_meta(StWriter *w, const Model *m, const ConvertMeta *meta) {
    char nc[32];
    snprintf(nc, sizeof nc, "%d", m->nc);
    int rc = st_writer_set_metadata(w, "cfg", m->yaml);
    if (!rc) rc = st_writer_set_metadata(w, "nc", nc);
    if (!rc && meta && meta->names_json) rc = st_writer_set_metadata(w, "names", meta->names_json);
    if (!rc && meta && meta->source) rc = st_writer_set_metadata(w, "source", meta->source);
    if (!rc && meta && meta->weights) rc = st_writer_set_metadata(w, "weights", meta->weights);
    return rc;
}

int convert_save_infer(const Model *fused, const InferGraph *g, const ConvertMeta *meta, const char *path) {
    if (check_names(meta ? meta->names_json : NULL, fused->nc)) return -1;
    StWriter *w = st_writer_new();
    if (!w) return -1;
    int rc = st_writer_set_metadata(w, "format", "gelan-infer/1");
    if (!rc) rc = st_writer_set_metadata(w, "graph", g->text);
    if (!rc) rc = set_common_meta(w, fused, meta);
    for (int i = 0; !rc && i < g->ntensors; i++) {
        const GraphTensor *t = &g->tensors[i];
        if (g->int8 && g->int8[i]) { /* a qconv's weight codes, exact integers */
            int64_t shape[4];
            size_t n = 1;
            for (int d = 0; d < t->ndim; d++) shape[d] = t->shape[d], n *= (size_t)t->shape[d];
            int8_t *q = malloc(n ? n : 1);
            if (!q) {
                rc = gelan_error("convert: out of memory");
                break;
            }
            for (size_t k = 0; k < n; k++) q[k] = (int8_t)t->data[k];
            rc = st_writer_add(w, t->name, ST_I8, t->ndim, shape, q, n, 1);
            free(q);
        } else {
            rc = st_writer_add_f32(w, t->name, t->ndim, t->shape, t->data);
        }
    }
    if (!rc) rc = st_writer_save(w, path);
    st_writer_free(w);
    return rc;
}

int convert_save_single(const Model *m, const ConvertMeta *meta, const char *path) {
    if (meta && meta->names_json && check_names(meta->names_json, m->nc)) return -1;
    ModelMeta extra[] = {{"names", meta ? meta->names_json : NULL},
                         {"source", meta ? meta->source : NULL},
                         {"weights", meta ? meta->weights : NULL}};
    return model_save_weights_meta(m, extra, 3, path);
}
