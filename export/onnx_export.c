/* ONNX export of an inference graph (export/onnx_export.h, docs/ONNX.md).
 *
 * The protobuf structs and the encoder are protoc-c's, generated at build
 * time from the onnx.proto of Debian's python3-onnx ($(B)/onnx/onnx.pb-c.h).
 * Every struct, string and array of the model is allocated through Ex and
 * freed in one go; the weights are referenced, not copied, and the encoder
 * streams the model straight into the file. */
#include "export/onnx_export.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "infer/graph.h"
#include "infer/kernels.h" /* ACT_* */
#include "onnx/onnx.pb-c.h"
#include "tensor/error.h"
#include "tensor/safetensors.h"

typedef Onnx__NodeProto Node;
typedef Onnx__TensorProto TensorProto;

#define MAX_ATTRS 6 /* Conv has the most: kernel_shape, strides, pads, dilations, group */
#define F32 ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT
#define I64 ONNX__TENSOR_PROTO__DATA_TYPE__INT64
#define I8 ONNX__TENSOR_PROTO__DATA_TYPE__INT8
#define U8 ONNX__TENSOR_PROTO__DATA_TYPE__UINT8

/* ---- the model under construction ------------------------------------------------ */
typedef struct { /* one QuantizeLinear/DequantizeLinear pair: value quantized with sx, zp */
    int value;
    float sx;
    int zp;
    const char *dq; /* the dequantized value's name */
} Quantizer;

typedef struct {
    void **mem; /* every allocation, freed by ex_free */
    size_t nmem, capmem;
    Node **nodes;
    size_t nnodes, capnodes;
    TensorProto **inits;
    size_t ninits, capinits;
    int oom; /* sticky: an allocation failed (helpers then do nothing; nothing is written) */
    const Graph *g;
    const char *doc;  /* the graph line being exported: doc_string of its nodes */
    size_t params;    /* values of the weights (int8 codes and biases included, scales not) */
    int qconvs;       /* qconv nodes written as QDQ */
    Quantizer *quant; /* the QuantizeLinear/DequantizeLinear pairs written */
    size_t nquant, capquant;
    InferLookup lookup;
    void *ctx;
} Ex;

/* arr with room for need elements (NULL when out of memory; arr is then unchanged) */
static void *grown(void *arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return arr;
    size_t c = *cap ? 2 * *cap : 64;
    while (c < need) c *= 2;
    void *p = realloc(arr, c * elem);
    if (p) *cap = c;
    return p;
}

static void *ex_alloc(Ex *ex, size_t size) {
    if (ex->oom) return NULL;
    void *p = calloc(1, size ? size : 1);
    void **mem = grown(ex->mem, &ex->capmem, ex->nmem + 1, sizeof *mem);
    if (!p || !mem) {
        free(p);
        ex->oom = 1;
        return NULL;
    }
    ex->mem = mem;
    ex->mem[ex->nmem++] = p;
    return p;
}

static void ex_free(Ex *ex) {
    for (size_t i = 0; i < ex->nmem; i++) free(ex->mem[i]);
    free(ex->mem);
    free(ex->nodes);
    free(ex->inits);
    free(ex->quant);
}

static char *ex_fmt(Ex *ex, const char *fmt, ...) GELAN_PRINTF(2, 3);
static char *ex_fmt(Ex *ex, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = ex_alloc(ex, (size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* A node reading in[0..nin) and writing out[0..nout); it is named after its
 * first output (outputs are unique, so node names are). */
static Node *ex_node(Ex *ex, const char *op, const char *const *in, int nin, const char *const *out, int nout) {
    Node *n = ex_alloc(ex, sizeof *n);
    char **ins = ex_alloc(ex, (size_t)nin * sizeof *ins), **outs = ex_alloc(ex, (size_t)nout * sizeof *outs);
    Onnx__AttributeProto **attrs = ex_alloc(ex, MAX_ATTRS * sizeof *attrs);
    Node **nodes = n && ins && outs && attrs ? grown(ex->nodes, &ex->capnodes, ex->nnodes + 1, sizeof *nodes) : NULL;
    if (!nodes) {
        ex->oom = 1;
        return NULL;
    }
    ex->nodes = nodes;
    onnx__node_proto__init(n);
    for (int i = 0; i < nin; i++) ins[i] = (char *)in[i];
    for (int i = 0; i < nout; i++) outs[i] = (char *)out[i];
    n->op_type = (char *)op;
    n->name = outs[0];
    n->n_input = (size_t)nin, n->input = ins;
    n->n_output = (size_t)nout, n->output = outs;
    n->attribute = attrs;
    n->doc_string = (char *)ex->doc;
    ex->nodes[ex->nnodes++] = n;
    for (int i = 0; i < nin; i++) /* a NULL name means an allocation failed on the way here */
        if (!in[i]) ex->oom = 1;
    for (int i = 0; i < nout; i++)
        if (!out[i]) ex->oom = 1;
    return n;
}

/* y = op(a) / op(a, b) */
static Node *op1(Ex *ex, const char *op, const char *y, const char *a) { return ex_node(ex, op, &a, 1, &y, 1); }
static Node *op2(Ex *ex, const char *op, const char *y, const char *a, const char *b) {
    const char *in[2] = {a, b};
    return ex_node(ex, op, in, 2, &y, 1);
}

static Onnx__AttributeProto *attr_new(Ex *ex, Node *n, const char *name, Onnx__AttributeProto__AttributeType type) {
    if (!n) return NULL;
    Onnx__AttributeProto *a = ex_alloc(ex, sizeof *a);
    if (!a) return NULL;
    onnx__attribute_proto__init(a);
    a->name = (char *)name;
    a->has_type = 1, a->type = type;
    n->attribute[n->n_attribute++] = a; /* at most MAX_ATTRS: fixed by the ops below */
    return a;
}

static void attr_int(Ex *ex, Node *n, const char *name, int64_t v) {
    Onnx__AttributeProto *a = attr_new(ex, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (a) a->has_i = 1, a->i = v;
}

static void attr_float(Ex *ex, Node *n, const char *name, float v) {
    Onnx__AttributeProto *a = attr_new(ex, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (a) a->has_f = 1, a->f = v;
}

static void attr_str(Ex *ex, Node *n, const char *name, const char *v) {
    Onnx__AttributeProto *a = attr_new(ex, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    if (a) a->has_s = 1, a->s.len = strlen(v), a->s.data = (uint8_t *)v;
}

/* an INTS attribute of n copies of v (kernel_shape, strides, pads, dilations) */
static void attr_ints_rep(Ex *ex, Node *n, const char *name, int count, int64_t v) {
    Onnx__AttributeProto *a = attr_new(ex, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    int64_t *vals = a ? ex_alloc(ex, (size_t)count * sizeof *vals) : NULL;
    if (!vals) return;
    for (int i = 0; i < count; i++) vals[i] = v;
    a->n_ints = (size_t)count, a->ints = vals;
}

/* ---- initializers ------------------------------------------------------------------ */
static TensorProto *find_init(const Ex *ex, const char *name) {
    for (size_t i = 0; i < ex->ninits; i++)
        if (!strcmp(ex->inits[i]->name, name)) return ex->inits[i];
    return NULL;
}

/* An initializer; data (nbytes) is copied when copy, else referenced. */
static const char *add_init(Ex *ex, const char *name, int32_t dtype, int ndim, const int64_t *dims, const void *data,
                            size_t nbytes, int copy) {
    TensorProto *t = ex_alloc(ex, sizeof *t);
    int64_t *d = ex_alloc(ex, (size_t)ndim * sizeof *d);
    void *bytes = copy ? ex_alloc(ex, nbytes) : (void *)data;
    TensorProto **inits =
        t && d && bytes && name ? grown(ex->inits, &ex->capinits, ex->ninits + 1, sizeof *inits) : NULL;
    if (!inits) {
        ex->oom = 1;
        return NULL;
    }
    ex->inits = inits;
    if (copy) memcpy(bytes, data, nbytes);
    onnx__tensor_proto__init(t);
    if (ndim) memcpy(d, dims, (size_t)ndim * sizeof *d);
    t->name = (char *)name;
    t->n_dims = (size_t)ndim, t->dims = d;
    t->has_data_type = 1, t->data_type = dtype;
    t->has_raw_data = 1, t->raw_data.len = nbytes, t->raw_data.data = bytes; /* little-endian, as ONNX wants */
    ex->inits[ex->ninits++] = t;
    return name;
}

static const char *dtype_name(int32_t dtype) {
    return dtype == F32 ? "f32" : dtype == I64 ? "i64" : dtype == I8 ? "i8" : "u8";
}
static size_t dtype_size(int32_t dtype) { return dtype == F32 ? 4 : dtype == I64 ? 8 : 1; }

/* A small constant, named after its type, shape and values (so equal constants
 * are one initializer, and a viewer shows what they are). ndim 0 is a scalar. */
static const char *constant(Ex *ex, int32_t dtype, int ndim, const int64_t *dims, const void *vals) {
    char name[512];
    size_t n = 1, len = (size_t)snprintf(name, sizeof name, "const/%s[", dtype_name(dtype));
    for (int d = 0; d < ndim; d++) {
        n *= (size_t)dims[d];
        len += (size_t)snprintf(name + len, sizeof name - len, d ? "x%lld" : "%lld", (long long)dims[d]);
    }
    len += (size_t)snprintf(name + len, sizeof name - len, "]");
    for (size_t i = 0; i < n && len < sizeof name; i++) {
        const char *sep = i ? "," : ":";
        if (dtype == F32)
            len += (size_t)snprintf(name + len, sizeof name - len, "%s%.9g", sep, ((const float *)vals)[i]);
        else if (dtype == I64)
            len +=
                (size_t)snprintf(name + len, sizeof name - len, "%s%lld", sep, (long long)((const int64_t *)vals)[i]);
        else if (dtype == I8)
            len += (size_t)snprintf(name + len, sizeof name - len, "%s%d", sep, ((const int8_t *)vals)[i]);
        else
            len += (size_t)snprintf(name + len, sizeof name - len, "%s%d", sep, ((const uint8_t *)vals)[i]);
    }
    size_t nbytes = n * dtype_size(dtype);
    if (len >= sizeof name) /* too many values for a readable name (e.g. a 64-way split): a unique one */
        return add_init(ex, ex_fmt(ex, "const/%zu", ex->ninits), dtype, ndim, dims, vals, nbytes, 1);
    TensorProto *t = find_init(ex, name);
    if (t) return t->name;
    return add_init(ex, ex_fmt(ex, "%s", name), dtype, ndim, dims, vals, nbytes, 1);
}

static const char *i64_vec(Ex *ex, int n, const int64_t *v) {
    int64_t dim = n;
    return constant(ex, I64, 1, &dim, v);
}
static const char *i64_scalar(Ex *ex, int64_t v) { return constant(ex, I64, 0, NULL, &v); }
static const char *f32_scalar(Ex *ex, float v) { return constant(ex, F32, 0, NULL, &v); }

/* A weight of the graph, added once. It keeps its name, unless a value of the
 * graph has that name (values and tensors share one namespace in ONNX).
 * dtype F32: the data is referenced; I8: the lookup's floats are int8 codes
 * (the runtime checked them at load) and are stored as such. A weight counts
 * towards ex->params unless it is a scale (count 0). */
static const char *weight(Ex *ex, const char *name, int line, int32_t dtype, int count) {
    const char *oname = name;
    for (int i = 0; i < ex->g->nvalues; i++)
        if (!strcmp(ex->g->values[i].name, name)) oname = ex_fmt(ex, "weight/%s", name);
    if (!oname) return NULL;
    TensorProto *t = find_init(ex, oname);
    if (t) return t->name;
    InferTensor w;
    if (ex->lookup(ex->ctx, name, &w)) {
        gelan_error("export: graph line %d: no tensor '%s'", line, name);
        return NULL;
    }
    int64_t dims[8];
    size_t n = 1;
    for (int d = 0; d < w.ndim; d++) dims[d] = w.shape[d], n *= (size_t)w.shape[d];
    if (count) ex->params += n;
    if (dtype == F32) return add_init(ex, oname, F32, w.ndim, dims, w.data, n * sizeof(float), 0);
    int8_t *codes = ex_alloc(ex, n);
    if (!codes) return NULL;
    for (size_t i = 0; i < n; i++) codes[i] = (int8_t)w.data[i];
    return add_init(ex, oname, I8, w.ndim, dims, codes, n, 0); /* codes live in ex's memory */
}

/* ---- ops ------------------------------------------------------------------------ */
#define VAL(id) (ex->g->values[(id)].name)

/* y = act(Conv(x, w, b)) for a conv or qconv node n */
static int conv_act(Ex *ex, const GraphNode *n, const char *x, const char *w, const char *b) {
    const char *y = VAL(n->out[0]);
    const char *conv = n->act == ACT_NONE ? y : ex_fmt(ex, "%s/conv", y);
    const char *in[3] = {x, w, b};
    Node *c = ex_node(ex, "Conv", in, b ? 3 : 2, &conv, 1);
    attr_ints_rep(ex, c, "kernel_shape", 2, n->k);
    attr_ints_rep(ex, c, "strides", 2, n->s);
    attr_ints_rep(ex, c, "pads", 4, n->p);
    attr_ints_rep(ex, c, "dilations", 2, n->d);
    attr_int(ex, c, "group", n->g);
    switch (n->act) {
        case ACT_NONE:
            break;
        case ACT_RELU:
            op1(ex, "Relu", y, conv);
            break;
        case ACT_LEAKY:
            attr_float(ex, op1(ex, "LeakyRelu", y, conv), "alpha", n->alpha);
            break;
        case ACT_SILU: { /* x * sigmoid(x): the form PyTorch exports nn.SiLU as */
            const char *s = ex_fmt(ex, "%s/sigmoid", y);
            op1(ex, "Sigmoid", s, conv);
            op2(ex, "Mul", y, conv, s);
            break;
        }
        default:
            return gelan_error("export: graph line %d: conv activation %d has no ONNX form (%s)", n->line, n->act,
                               n->text);
    }
    return 0;
}

static int export_conv(Ex *ex, const GraphNode *n) {
    const char *w = weight(ex, n->w, n->line, F32, 1), *b = n->b ? weight(ex, n->b, n->line, F32, 1) : NULL;
    if (!w || (n->b && !b)) return -1;
    return conv_act(ex, n, VAL(n->in[0]), w, b);
}

/* DequantizeLinear(QuantizeLinear(x, sx, zp), sx, zp): the real values of x's uint8 codes.
 * Convs that read one value with the same quantizer (e.g. the box and class branches of a
 * detect level) share one pair, as quantization tools write it; it is named after the first. */
static const char *quantized_input(Ex *ex, const GraphNode *n) {
    for (size_t i = 0; i < ex->nquant; i++)
        if (ex->quant[i].value == n->in[0] && ex->quant[i].sx == n->sx && ex->quant[i].zp == n->zp)
            return ex->quant[i].dq;
    Quantizer *q = grown(ex->quant, &ex->capquant, ex->nquant + 1, sizeof *q);
    if (!q) {
        ex->oom = 1;
        return NULL;
    }
    ex->quant = q;
    uint8_t zp = (uint8_t)n->zp;
    const char *y = VAL(n->out[0]), *sx = f32_scalar(ex, n->sx), *zpn = constant(ex, U8, 0, NULL, &zp);
    const char *xq = ex_fmt(ex, "%s/x_q", y), *xdq = ex_fmt(ex, "%s/x_dq", y);
    const char *q_in[3] = {VAL(n->in[0]), sx, zpn}, *dq_in[3] = {xq, sx, zpn};
    ex_node(ex, "QuantizeLinear", q_in, 3, &xq, 1);
    ex_node(ex, "DequantizeLinear", dq_in, 3, &xdq, 1);
    ex->quant[ex->nquant++] = (Quantizer){n->in[0], n->sx, n->zp, xdq};
    return xdq;
}

/* The int8 conv of infer/qconv.h in QDQ form (docs/ONNX.md, "int8 models"):
 *   x_dq = DequantizeLinear(QuantizeLinear(x, sx, zp), sx, zp)     uint8 codes, per tensor
 *   w_dq = DequantizeLinear(w_q, ws, axis=0)                       int8 codes, per output channel
 *   y    = act(Conv(x_dq, w_dq, b))                                fp32 bias, fp32 output
 * which is the runtime's act(acc * (sx * ws[c]) + b[c]) with acc = sum w_q (x_q - zp): the
 * dequantized operands are the codes times their scales, and Conv's zero padding is the real
 * value of the code zp, as the runtime pads. QuantizeLinear rounds half to even and saturates
 * to [0, 255] as the runtime does; it divides by sx where the runtime multiplies by 1/sx. */
static int export_qconv(Ex *ex, const GraphNode *n) {
    const char *w = weight(ex, n->w, n->line, I8, 1), *ws = weight(ex, n->ws, n->line, F32, 0);
    const char *b = n->b ? weight(ex, n->b, n->line, F32, 1) : NULL;
    if (!w || !ws || (n->b && !b)) return -1;
    const char *xdq = quantized_input(ex, n), *wdq = ex_fmt(ex, "%s/w_dq", VAL(n->out[0]));
    const char *wdq_in[2] = {w, ws};
    attr_int(ex, ex_node(ex, "DequantizeLinear", wdq_in, 2, &wdq, 1), "axis", 0);
    ex->qconvs++;
    return conv_act(ex, n, xdq, wdq, b);
}

static int export_pool(Ex *ex, const GraphNode *n) {
    Node *p = op1(ex, n->op == OP_MAXPOOL ? "MaxPool" : "AveragePool", VAL(n->out[0]), VAL(n->in[0]));
    attr_ints_rep(ex, p, "kernel_shape", 2, n->k);
    attr_ints_rep(ex, p, "strides", 2, n->s);
    attr_ints_rep(ex, p, "pads", 4, n->p);
    /* floor mode in both; with it every window lies inside the padded input, so
     * ONNX's count_include_pad=1 divisor (k*k) is PyTorch's (the window clipped
     * to the padded input) */
    if (n->op == OP_AVGPOOL) attr_int(ex, p, "count_include_pad", n->count_include_pad);
    return 0;
}

/* Nearest as F.interpolate(mode='nearest'): source index floor(dst / scale). */
static int export_upsample(Ex *ex, const GraphNode *n) {
    const char *x = VAL(n->in[0]), *y = VAL(n->out[0]);
    Node *r;
    if (n->scale > 0) {
        float s[4] = {1.f, 1.f, (float)n->scale, (float)n->scale};
        int64_t four = 4;
        const char *in[3] = {x, "", constant(ex, F32, 1, &four, s)};
        r = ex_node(ex, "Resize", in, 3, &y, 1);
    } else { /* sizes = (N, C) of x, then (H, W) */
        int64_t hw[2] = {n->size_h, n->size_w};
        const char *nc = ex_fmt(ex, "%s/nc", y), *sizes = ex_fmt(ex, "%s/sizes", y);
        Node *sh = op1(ex, "Shape", nc, x);
        attr_int(ex, sh, "start", 0);
        attr_int(ex, sh, "end", 2);
        Node *cat = op2(ex, "Concat", sizes, nc, i64_vec(ex, 2, hw));
        attr_int(ex, cat, "axis", 0);
        const char *in[4] = {x, "", "", sizes};
        r = ex_node(ex, "Resize", in, 4, &y, 1);
    }
    attr_str(ex, r, "mode", "nearest");
    attr_str(ex, r, "coordinate_transformation_mode", "asymmetric");
    attr_str(ex, r, "nearest_mode", "floor");
    return 0;
}

static int export_concat(Ex *ex, const GraphNode *n) {
    const char *in[GRAPH_MAX_LIST], *y = VAL(n->out[0]);
    for (int i = 0; i < n->nin; i++) in[i] = VAL(n->in[i]);
    attr_int(ex, ex_node(ex, "Concat", in, n->nin, &y, 1), "axis", 1);
    return 0;
}

static int export_split(Ex *ex, const GraphNode *n) {
    const char *out[GRAPH_MAX_LIST];
    int64_t sizes[GRAPH_MAX_LIST];
    for (int i = 0; i < n->nout; i++) out[i] = VAL(n->out[i]), sizes[i] = n->sizes[i];
    const char *in[2] = {VAL(n->in[0]), i64_vec(ex, n->nout, sizes)};
    attr_int(ex, ex_node(ex, "Split", in, 2, out, n->nout), "axis", 1);
    return 0;
}

/* The eval decode of the official DDetect, as the runtime does it (docs/FORMATS.md):
 *   x      = cat over levels of map_l.view(N, C, H_l*W_l)          [N, 4R+nc, A]
 *   box, cls = split(x, (4R, nc), 1)
 *   dist   = Σ_b b * softmax_b(box.view(N, 4, R, A))               [N, 4, A]
 *   lt, rb = split(dist, 2, 1)
 *   x1y1   = anchors - lt,  x2y2 = anchors + rb                   anchors [2, A]
 *   pred   = cat(cat((x1y1 + x2y2) / 2, x2y2 - x1y1) * strides, sigmoid(cls))
 * The anchors (cell centres) and per-anchor strides are built from each map's
 * Shape, so the model runs at any input size. */
static int export_detect(Ex *ex, const GraphNode *n) {
    int L = n->nin, R = n->reg_max, C = 4 * R + n->nc;
    const char *flat[GRAPH_MAX_LIST], *anc[GRAPH_MAX_LIST], *str[GRAPH_MAX_LIST];
    int64_t flat_shape[3] = {0, C, -1}, row[2] = {1, -1}, one = 1;
    for (int l = 0; l < L; l++) {
        const char *x = VAL(n->in[l]);
#define T(suffix) ex_fmt(ex, "detect/%d/%s", l, suffix)
        flat[l] = T("flat");
        op2(ex, "Reshape", flat[l], x, i64_vec(ex, 3, flat_shape));
        const char *hw = T("hw"), *h = T("h"), *w = T("w");
        attr_int(ex, op1(ex, "Shape", hw, x), "start", 2); /* [H, W] */
        op2(ex, "Gather", h, hw, i64_scalar(ex, 0));
        op2(ex, "Gather", w, hw, i64_scalar(ex, 1));
        /* cell centres x + 0.5 and y + 0.5, as the official make_anchors */
        const char *ix = T("ix"), *iy = T("iy"), *fx = T("fx"), *fy = T("fy"), *sx = T("sx"), *sy = T("sy");
        const char *rx[3] = {i64_scalar(ex, 0), w, i64_scalar(ex, 1)}, *ry[3] = {rx[0], h, rx[2]};
        ex_node(ex, "Range", rx, 3, &ix, 1);
        ex_node(ex, "Range", ry, 3, &iy, 1);
        attr_int(ex, op1(ex, "Cast", fx, ix), "to", F32);
        attr_int(ex, op1(ex, "Cast", fy, iy), "to", F32);
        op2(ex, "Add", sx, fx, f32_scalar(ex, 0.5f));
        op2(ex, "Add", sy, fy, f32_scalar(ex, 0.5f));
        const char *sy1 = T("sy_col"), *gx = T("grid_x"), *gy = T("grid_y"), *ax = T("ax"), *ay = T("ay");
        op2(ex, "Unsqueeze", sy1, sy, i64_vec(ex, 1, &one)); /* [H, 1] */
        op2(ex, "Expand", gx, sx, hw);                       /* [H, W]: x varies along a row */
        op2(ex, "Expand", gy, sy1, hw);
        op2(ex, "Reshape", ax, gx, i64_vec(ex, 2, row)); /* [1, HW], row-major */
        op2(ex, "Reshape", ay, gy, i64_vec(ex, 2, row));
        anc[l] = T("anchors");
        attr_int(ex, op2(ex, "Concat", anc[l], ax, ay), "axis", 0); /* [2, HW] */
        /* this level's stride for each of its anchors */
        float s = n->strides[l];
        int64_t one_one[2] = {1, 1};
        const char *sg = T("stride_grid");
        op2(ex, "Expand", sg, constant(ex, F32, 2, one_one, &s), hw);
        str[l] = T("strides");
        op2(ex, "Reshape", str[l], sg, i64_vec(ex, 2, row)); /* [1, HW] */
#undef T
    }
    const char *x = "detect/x", *anchors = "detect/anchors", *strides = "detect/strides";
    attr_int(ex, ex_node(ex, "Concat", flat, L, &x, 1), "axis", 2);
    attr_int(ex, ex_node(ex, "Concat", anc, L, &anchors, 1), "axis", 1);
    attr_int(ex, ex_node(ex, "Concat", str, L, &strides, 1), "axis", 1);

    int64_t split_bc[2] = {4 * R, n->nc}, split_d[2] = {2, 2};
    const char *bc[2] = {"detect/box", "detect/cls"}, *split_in[2] = {x, i64_vec(ex, 2, split_bc)};
    attr_int(ex, ex_node(ex, "Split", split_in, 2, bc, 2), "axis", 1);

    /* DFL: the expectation over R bins, the fixed 1x1 conv with weights 0..R-1 */
    int64_t box4[4] = {0, 4, R, -1}, bins_shape[4] = {1, 1, R, 1}, axis2 = 2;
    float *bins = ex_alloc(ex, (size_t)R * sizeof *bins);
    if (!bins) return -1;
    for (int b = 0; b < R; b++) bins[b] = (float)b;
    op2(ex, "Reshape", "detect/box4", bc[0], i64_vec(ex, 4, box4));
    attr_int(ex, op1(ex, "Softmax", "detect/prob", "detect/box4"), "axis", 2);
    op2(ex, "Mul", "detect/weighted", "detect/prob", constant(ex, F32, 4, bins_shape, bins));
    attr_int(ex, op2(ex, "ReduceSum", "detect/dist", "detect/weighted", i64_vec(ex, 1, &axis2)), "keepdims", 0);

    const char *lr[2] = {"detect/lt", "detect/rb"}, *sd_in[2] = {"detect/dist", i64_vec(ex, 2, split_d)};
    attr_int(ex, ex_node(ex, "Split", sd_in, 2, lr, 2), "axis", 1);
    op2(ex, "Sub", "detect/x1y1", anchors, lr[0]);
    op2(ex, "Add", "detect/x2y2", anchors, lr[1]);
    op2(ex, "Add", "detect/sum", "detect/x1y1", "detect/x2y2");
    op2(ex, "Div", "detect/cxy", "detect/sum", f32_scalar(ex, 2.f));
    op2(ex, "Sub", "detect/wh", "detect/x2y2", "detect/x1y1");
    attr_int(ex, op2(ex, "Concat", "detect/xywh", "detect/cxy", "detect/wh"), "axis", 1);
    op2(ex, "Mul", "detect/dbox", "detect/xywh", strides);
    op1(ex, "Sigmoid", "detect/scores", bc[1]);
    attr_int(ex, op2(ex, "Concat", VAL(n->out[0]), "detect/dbox", "detect/scores"), "axis", 1);
    return 0;
}

static int export_node(Ex *ex, const GraphNode *n) {
    ex->doc = n->text;
    switch (n->op) {
        case OP_CONV:
            return export_conv(ex, n);
        case OP_QCONV:
            return export_qconv(ex, n);
        case OP_MAXPOOL:
        case OP_AVGPOOL:
            return export_pool(ex, n);
        case OP_UPSAMPLE:
            return export_upsample(ex, n);
        case OP_CONCAT:
            return export_concat(ex, n);
        case OP_SPLIT:
            return export_split(ex, n);
        case OP_ADD:
            op2(ex, "Add", VAL(n->out[0]), VAL(n->in[0]), VAL(n->in[1]));
            return 0;
        case OP_DETECT:
            return export_detect(ex, n);
        default: /* an op the runtime has and this exporter does not: none today, a guard for new ones */
            return gelan_error("export: graph line %d: op '%s' has no ONNX form (%s)", n->line, graph_op_name(n->op),
                               n->text);
    }
}

/* ---- the model ------------------------------------------------------------------- */
static Onnx__ValueInfoProto *value_info(Ex *ex, const char *name, int ndim, const int64_t *dims,
                                        const char *const *params, const char *doc) {
    Onnx__ValueInfoProto *v = ex_alloc(ex, sizeof *v);
    Onnx__TypeProto *tp = ex_alloc(ex, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = ex_alloc(ex, sizeof *tt);
    Onnx__TensorShapeProto *sh = ex_alloc(ex, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dd = ex_alloc(ex, (size_t)ndim * sizeof *dd);
    if (!v || !tp || !tt || !sh || !dd) return NULL;
    onnx__value_info_proto__init(v);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sh);
    for (int d = 0; d < ndim; d++) {
        if (!(dd[d] = ex_alloc(ex, sizeof **dd))) return NULL;
        onnx__tensor_shape_proto__dimension__init(dd[d]);
        if (params[d]) { /* dynamic: a named dimension */
            dd[d]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            dd[d]->dim_param = (char *)params[d];
        } else {
            dd[d]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dd[d]->dim_value = dims[d];
        }
    }
    sh->n_dim = (size_t)ndim, sh->dim = dd;
    tt->has_elem_type = 1, tt->elem_type = F32;
    tt->shape = sh;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE, tp->tensor_type = tt;
    v->name = (char *)name, v->type = tp, v->doc_string = (char *)doc;
    return v;
}

static Onnx__StringStringEntryProto *meta_entry(Ex *ex, const char *key, const char *value) {
    Onnx__StringStringEntryProto *e = ex_alloc(ex, sizeof *e);
    if (!e || !value) return NULL;
    onnx__string_string_entry_proto__init(e);
    e->key = (char *)key, e->value = (char *)value;
    return e;
}

/* The encoder's output goes straight to the file. */
typedef struct {
    ProtobufCBuffer base;
    FILE *f;
    int failed;
    size_t bytes;
} FileSink;

static void sink_append(ProtobufCBuffer *b, size_t len, const uint8_t *data) {
    FileSink *s = (FileSink *)b;
    if (s->failed) return;
    if (fwrite(data, 1, len, s->f) != len) s->failed = errno ? errno : EIO;
    s->bytes += len;
}

/* PATH.tmp.<pid>.<n>, fsync, rename over path; on failure the temporary is removed. */
static int write_atomic(const Onnx__ModelProto *model, const char *path, size_t *bytes) {
    static int counter;
    size_t len = strlen(path) + 64;
    char *tmp = malloc(len);
    if (!tmp) return gelan_error("export: out of memory");
    snprintf(tmp, len, "%s.tmp.%ld.%d", path, (long)getpid(), __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        int e = errno;
        if (fd >= 0) close(fd), unlink(tmp);
        gelan_error("export: cannot create %s: %s", tmp, strerror(e));
        free(tmp);
        return -1;
    }
    FileSink sink = {{sink_append}, f, 0, 0};
    errno = 0;
    onnx__model_proto__pack_to_buffer(model, &sink.base);
    int e = sink.failed;
    if (!e && fflush(f)) e = errno;
    if (!e && fsync(fileno(f))) e = errno;
    if (fclose(f) && !e) e = errno;
    if (!e && rename(tmp, path)) e = errno;
    if (e) {
        unlink(tmp);
        gelan_error("export: cannot write %s: %s", path, strerror(e));
    }
    free(tmp);
    *bytes = sink.bytes;
    return e ? -1 : 0;
}

/* Channels of value v (the model input has C): what the output's declared shape needs. */
static int value_channels(const Graph *g, int C, int v) {
    int *ch = malloc((size_t)g->nvalues * sizeof *ch), result = -1;
    if (!ch) return -1;
    ch[0] = C;
    for (int i = 0; i < g->nnodes; i++) {
        const GraphNode *n = &g->nodes[i];
        int sum = 0;
        for (int j = 0; j < n->nin; j++) sum += ch[n->in[j]];
        switch (n->op) {
            case OP_CONV:
            case OP_QCONV:
                ch[n->out[0]] = n->c;
                break;
            case OP_CONCAT:
                ch[n->out[0]] = sum;
                break;
            case OP_SPLIT:
                for (int j = 0; j < n->nout; j++) ch[n->out[j]] = n->sizes[j];
                break;
            case OP_DETECT:
                ch[n->out[0]] = 4 + n->nc;
                break;
            default: /* pools, upsample, add keep the channels */
                ch[n->out[0]] = ch[n->in[0]];
                break;
        }
    }
    result = ch[v];
    free(ch);
    return result;
}

/* "[8,16,32]" */
static char *strides_json(Ex *ex, const GraphNode *det) {
    char buf[GRAPH_MAX_LIST * 24];
    size_t len = 0;
    for (int i = 0; i < det->nstrides; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%.9g", i ? "," : "[", det->strides[i]);
    snprintf(buf + len, sizeof buf - len, "]");
    return ex_fmt(ex, "%s", buf);
}

int onnx_export_graph(const char *graph, const char *names_json, InferLookup lookup, void *ctx,
                      const OnnxExportOptions *opt, const char *path, OnnxExportInfo *info) {
    OnnxExportOptions none = {0, 0};
    if (!opt) opt = &none;
    if (!path || !*path) return gelan_error("export: no output path");
    if ((opt->img_h > 0) != (opt->img_w > 0) || opt->img_h < 0 || opt->img_w < 0)
        return gelan_error("export: give both image height and width (%d, %d) or neither", opt->img_h, opt->img_w);
    /* the runtime checks the graph, the channel counts and every weight's shape */
    InferModel *im = infer_model_build(graph, names_json, lookup, ctx);
    if (!im) {
        gelan_error_prefix("export");
        return -1;
    }
    InferShape os = {0};
    if (opt->img_h > 0 && infer_model_prepare(im, 1, opt->img_h, opt->img_w, &os)) {
        gelan_error_prefix("export: at %dx%d", opt->img_h, opt->img_w);
        infer_model_free(im);
        return -1;
    }
    Graph g = {0};
    Ex ex = {0};
    ex.lookup = lookup, ex.ctx = ctx, ex.g = &g;
    int rc = graph_parse(graph, &g);
    if (rc) gelan_error_prefix("export");
    const GraphNode *det = NULL;
    for (int i = 0; !rc && i < g.nnodes; i++) {
        rc = export_node(&ex, &g.nodes[i]);
        if (g.nodes[i].op == OP_DETECT) det = &g.nodes[i];
    }
    if (ex.oom) rc = gelan_error("export: out of memory");

    int C = infer_model_input_channels(im), nc = infer_model_detect_nc(im);
    const char *out_name = g.nnodes ? g.values[g.nodes[g.nnodes - 1].out[0]].name : "input";
    Onnx__ModelProto model = ONNX__MODEL_PROTO__INIT;
    Onnx__GraphProto gp = ONNX__GRAPH_PROTO__INIT;
    Onnx__OperatorSetIdProto opset = ONNX__OPERATOR_SET_ID_PROTO__INIT;
    Onnx__OperatorSetIdProto *opsets[1] = {&opset};
    Onnx__ValueInfoProto *in_vi = NULL, *out_vi = NULL;
    Onnx__StringStringEntryProto *meta[8];
    size_t nmeta = 0;
    if (!rc) {
        int fixed = opt->img_h > 0;
        int64_t in_dims[4] = {1, C, opt->img_h, opt->img_w};
        const char *in_params[4] = {"batch", NULL, fixed ? NULL : "height", fixed ? NULL : "width"};
        in_vi = value_info(&ex, "input", 4, in_dims, in_params,
                           "images, NCHW float32 RGB in [0,1] (letterboxed); height and width multiples of the "
                           "largest stride");
        if (det) { /* [N, 4+nc, anchors]: cx, cy, w, h in input pixels, then the class scores */
            int64_t out_dims[3] = {1, 4 + det->nc, fixed ? os.shape[2] : 0};
            const char *out_params[3] = {"batch", NULL, fixed ? NULL : "anchors"};
            out_vi = value_info(&ex, out_name, 3, out_dims, out_params,
                                "cx, cy, w, h in input pixels, then the nc class scores, per anchor");
        } else { /* a map [N, C, H', W'] */
            int64_t out_dims[4] = {1, value_channels(&g, C, g.nodes[g.nnodes - 1].out[0]), 0, 0};
            if (fixed) out_dims[2] = os.shape[2], out_dims[3] = os.shape[3];
            const char *out_params[4] = {"batch", NULL, fixed ? NULL : "out_height", fixed ? NULL : "out_width"};
            out_vi = value_info(&ex, out_name, 4, out_dims, out_params, NULL);
        }
        if (names_json) meta[nmeta++] = meta_entry(&ex, "names", names_json);
        if (det) {
            float smax = 0;
            for (int i = 0; i < det->nstrides; i++) smax = det->strides[i] > smax ? det->strides[i] : smax;
            meta[nmeta++] = meta_entry(&ex, "strides", strides_json(&ex, det));
            meta[nmeta++] = meta_entry(&ex, "stride", ex_fmt(&ex, "%.9g", smax));
            meta[nmeta++] = meta_entry(&ex, "nc", ex_fmt(&ex, "%d", det->nc));
            meta[nmeta++] = meta_entry(&ex, "reg_max", ex_fmt(&ex, "%d", det->reg_max));
        }
        meta[nmeta++] = meta_entry(&ex, "source_format", "gelan-infer/1");
        if (ex.oom) rc = gelan_error("export: out of memory");
    }
    if (!rc) {
        opset.domain = "", opset.has_version = 1, opset.version = ONNX_EXPORT_OPSET;
        gp.name = "gelan";
        gp.n_node = ex.nnodes, gp.node = ex.nodes;
        gp.n_initializer = ex.ninits, gp.initializer = ex.inits;
        gp.n_input = 1, gp.input = &in_vi;
        gp.n_output = 1, gp.output = &out_vi;
        model.has_ir_version = 1, model.ir_version = ONNX_EXPORT_IR_VERSION;
        model.n_opset_import = 1, model.opset_import = opsets;
        model.producer_name = "gelan.c";
        model.producer_version = "1";
        model.doc_string = "a gelan.c inference model (gelan-infer/1) exported by `gelan export`";
        model.graph = &gp;
        model.n_metadata_props = nmeta, model.metadata_props = meta;
        size_t bytes = 0;
        rc = write_atomic(&model, path, &bytes);
        if (!rc && info) {
            *info = (OnnxExportInfo){.graph_nodes = g.nnodes,
                                     .onnx_nodes = (int)ex.nnodes,
                                     .initializers = (int)ex.ninits,
                                     .params = ex.params,
                                     .qconvs = ex.qconvs,
                                     .bytes = bytes,
                                     .input_channels = C,
                                     .nc = nc};
            snprintf(info->output, sizeof info->output, "%s", out_name);
        }
    }
    ex_free(&ex);
    graph_free(&g);
    infer_model_free(im);
    return rc;
}

/* ---- from a file ------------------------------------------------------------------ */
typedef struct {
    SafeTensors *st;
    const char *path;
    float **data; /* converted to float32 on first use, by tensor index */
} FileWeights;

static int file_lookup(void *ctx, const char *name, InferTensor *out) {
    FileWeights *fw = ctx;
    const StTensorInfo *ti = st_find(fw->st, name);
    if (!ti || ti->ndim > 8) return -1;
    int idx = 0;
    while (st_info(fw->st, idx) != ti) idx++;
    size_t n = st_numel(ti);
    if (!fw->data[idx]) {
        float *buf = malloc((n ? n : 1) * sizeof *buf);
        if (!buf || st_read_f32(fw->st, name, buf, n)) {
            free(buf);
            return -1;
        }
        fw->data[idx] = buf;
    }
    out->data = fw->data[idx];
    out->ndim = ti->ndim;
    for (int d = 0; d < ti->ndim; d++) out->shape[d] = ti->shape[d];
    return 0;
}

int onnx_export_model(const char *model_path, const OnnxExportOptions *opt, const char *path, OnnxExportInfo *info) {
    FileWeights fw = {st_open(model_path), model_path, NULL};
    if (!fw.st) {
        gelan_error_prefix("export");
        return -1;
    }
    const char *format = st_metadata(fw.st, "format"), *graph = st_metadata(fw.st, "graph");
    int rc = 0;
    if (!format || strcmp(format, "gelan-infer/1"))
        rc = gelan_error(
            "export: %s is not an inference model (format '%s', expected 'gelan-infer/1'; "
            "`gelan convert` makes one, or pass a checkpoint with --weights)",
            model_path, format ? format : "(none)");
    else if (!graph)
        rc = gelan_error("export: %s has no graph in its metadata", model_path);
    else if (!(fw.data = calloc((size_t)st_count(fw.st) + 1, sizeof *fw.data)))
        rc = gelan_error("export: out of memory");
    if (!rc) rc = onnx_export_graph(graph, st_metadata(fw.st, "names"), file_lookup, &fw, opt, path, info);
    for (int i = 0; fw.data && i < st_count(fw.st); i++) free(fw.data[i]);
    free(fw.data);
    st_close(fw.st);
    return rc;
}
