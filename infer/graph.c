/* Parser of the text graph. Strict on purpose: a model is written by a tool
 * (gelan convert), so anything unexpected is a bug worth stopping for, and
 * every message names the line. */
#include "infer/graph.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer/kernels.h"
#include "tensor/error.h"

#define MAX_TOKENS 64
#define MAX_NAME 255

typedef struct {
    const char *name;
    int min_in, max_in, min_out, max_out;
    const char *keys[14]; /* allowed keys, NULL-terminated */
    const char *required[8];
} OpSpec;

static const OpSpec SPECS[] = {
    [OP_CONV] = {"conv", 1, 1, 1, 1, {"c", "k", "s", "p", "d", "g", "act", "alpha", "w", "b"}, {"c", "k", "w"}},
    [OP_MAXPOOL] = {"maxpool", 1, 1, 1, 1, {"k", "s", "p"}, {"k"}},
    [OP_AVGPOOL] = {"avgpool", 1, 1, 1, 1, {"k", "s", "p", "count_include_pad"}, {"k"}},
    [OP_UPSAMPLE] = {"upsample", 1, 1, 1, 1, {"scale", "size"}, {NULL}},
    [OP_CONCAT] = {"concat", 1, GRAPH_MAX_LIST, 1, 1, {NULL}, {NULL}},
    [OP_SPLIT] = {"split", 1, 1, 1, GRAPH_MAX_LIST, {"sizes"}, {"sizes"}},
    [OP_ADD] = {"add", 2, 2, 1, 1, {NULL}, {NULL}},
    [OP_DETECT] = {"detect", 1, GRAPH_MAX_LIST, 1, 1, {"nc", "reg_max", "strides"}, {"nc", "strides"}},
    /* int8 conv (infer/qconv.h): w int8 codes, ws their per-channel scales, input scale sx, zero point zp */
    [OP_QCONV] = {"qconv",
                  1,
                  1,
                  1,
                  1,
                  {"c", "k", "s", "p", "d", "g", "act", "alpha", "w", "b", "ws", "sx", "zp"},
                  {"c", "k", "w", "ws", "sx", "zp"}},
};
#define NOPS ((int)(sizeof SPECS / sizeof *SPECS))

const char *graph_op_name(OpType op) { return (int)op >= 0 && (int)op < NOPS ? SPECS[op].name : "?"; }

static int valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > MAX_NAME) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

static int find_value(const Graph *g, const char *name) {
    for (int i = 0; i < g->nvalues; i++)
        if (!strcmp(g->values[i].name, name)) return i;
    return -1;
}

/* Splits s at commas in place; each piece must be a non-empty item. */
static int split_list(char *s, char **items, int max) {
    int n = 0;
    for (char *p = s;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = '\0';
        if (n == max) return -1;
        items[n++] = p;
        if (!comma) break;
        p = comma + 1;
    }
    return n;
}

static int parse_int(const char *s, long lo, long hi, int *out) {
    if (!*s) return -1;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || errno || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int parse_float(const char *s, float *out) {
    if (!*s) return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (*end || errno || !isfinite(v) || fabs(v) > 1e30) return -1;
    *out = (float)v;
    return 0;
}

#define LINE_ERR(fmt, ...) gelan_error("graph line %d: " fmt, line, __VA_ARGS__)

/* One key=value of node n (op already known). */
static int parse_key(GraphNode *n, const char *key, char *val, int line) {
    const char *op = SPECS[n->op].name;
    const int BIG = 1 << 20;
    int *ip = NULL;
    long lo = 0;
    if (!strcmp(key, "c"))
        ip = &n->c, lo = 1;
    else if (!strcmp(key, "k"))
        ip = &n->k, lo = 1;
    else if (!strcmp(key, "s"))
        ip = &n->s, lo = 1;
    else if (!strcmp(key, "p"))
        ip = &n->p, lo = 0;
    else if (!strcmp(key, "d"))
        ip = &n->d, lo = 1;
    else if (!strcmp(key, "g"))
        ip = &n->g, lo = 1;
    else if (!strcmp(key, "nc"))
        ip = &n->nc, lo = 1;
    else if (!strcmp(key, "scale"))
        ip = &n->scale, lo = 1;
    if (ip) {
        if (parse_int(val, lo, BIG, ip))
            return LINE_ERR("%s: %s=%s is not an integer in [%ld, %d]", op, key, val, lo, BIG);
        return 0;
    }
    if (!strcmp(key, "reg_max")) {
        if (parse_int(val, 1, 64, &n->reg_max)) return LINE_ERR("%s: reg_max=%s is not an integer in [1, 64]", op, val);
        return 0;
    }
    if (!strcmp(key, "count_include_pad")) {
        if (parse_int(val, 0, 1, &n->count_include_pad))
            return LINE_ERR("%s: count_include_pad=%s must be 0 or 1", op, val);
        return 0;
    }
    if (!strcmp(key, "act")) {
        if (!strcmp(val, "none"))
            n->act = ACT_NONE;
        else if (!strcmp(val, "relu"))
            n->act = ACT_RELU;
        else if (!strcmp(val, "leakyrelu"))
            n->act = ACT_LEAKY;
        else if (!strcmp(val, "silu"))
            n->act = ACT_SILU;
        else
            return LINE_ERR("%s: unknown act '%s' (none, relu, leakyrelu, silu)", op, val);
        return 0;
    }
    if (!strcmp(key, "alpha")) {
        if (parse_float(val, &n->alpha)) return LINE_ERR("%s: alpha=%s is not a number", op, val);
        return 0;
    }
    if (!strcmp(key, "zp")) {
        if (parse_int(val, 0, 255, &n->zp)) return LINE_ERR("%s: zp=%s is not an integer in [0, 255]", op, val);
        return 0;
    }
    if (!strcmp(key, "sx")) {
        if (parse_float(val, &n->sx) || !(n->sx > 0)) return LINE_ERR("%s: sx=%s is not a positive number", op, val);
        return 0;
    }
    if (!strcmp(key, "w") || !strcmp(key, "b") || !strcmp(key, "ws")) {
        if (!valid_name(val)) return LINE_ERR("%s: %s=%s is not a tensor name", op, key, val);
        char **dst = !strcmp(key, "ws") ? &n->ws : key[0] == 'w' ? &n->w : &n->b;
        *dst = strdup(val);
        return *dst ? 0 : gelan_error("graph: out of memory");
    }
    char *items[GRAPH_MAX_LIST];
    int cnt = split_list(val, items, GRAPH_MAX_LIST);
    if (cnt < 0) return LINE_ERR("%s: %s has more than %d items", op, key, GRAPH_MAX_LIST);
    if (!strcmp(key, "size")) {
        if (cnt != 2 || parse_int(items[0], 1, BIG, &n->size_h) || parse_int(items[1], 1, BIG, &n->size_w))
            return LINE_ERR("%s: size must be H,W (positive integers)", op);
        return 0;
    }
    if (!strcmp(key, "sizes")) {
        for (int i = 0; i < cnt; i++)
            if (parse_int(items[i], 1, BIG, &n->sizes[i]))
                return LINE_ERR("%s: sizes item '%s' is not a positive integer", op, items[i]);
        n->nsizes = cnt;
        return 0;
    }
    if (!strcmp(key, "strides")) {
        for (int i = 0; i < cnt; i++)
            if (parse_float(items[i], &n->strides[i]) || n->strides[i] <= 0)
                return LINE_ERR("%s: strides item '%s' is not a positive number", op, items[i]);
        n->nstrides = cnt;
        return 0;
    }
    return LINE_ERR("%s: unknown key '%s'", op, key);
}

/* Checks between keys, once the whole line is read. */
static int check_node(GraphNode *n, int seen_alpha, int seen_s, int seen_p, int line) {
    switch (n->op) {
        case OP_CONV:
        case OP_QCONV:
            if (n->c % n->g) return LINE_ERR("%s: c=%d is not divisible by g=%d", SPECS[n->op].name, n->c, n->g);
            if (seen_alpha && n->act != ACT_LEAKY)
                return LINE_ERR("%s: alpha=%g needs act=leakyrelu", SPECS[n->op].name, n->alpha);
            if (!seen_p) n->p = (n->d * (n->k - 1) + 1) / 2; /* the official autopad */
            break;
        case OP_MAXPOOL:
        case OP_AVGPOOL:
            if (!seen_s) n->s = n->k;
            if (2 * n->p > n->k) return LINE_ERR("%s: p=%d is more than half of k=%d", SPECS[n->op].name, n->p, n->k);
            break;
        case OP_UPSAMPLE:
            if ((n->scale > 0) == (n->size_h > 0))
                return LINE_ERR("upsample: give exactly one of scale= and size=%s", "");
            break;
        case OP_SPLIT:
            if (n->nsizes != n->nout) return LINE_ERR("split: %d sizes for %d outputs", n->nsizes, n->nout);
            break;
        case OP_DETECT:
            if (n->nstrides != n->nin) return LINE_ERR("detect: %d strides for %d inputs", n->nstrides, n->nin);
            break;
        default:
            break;
    }
    return 0;
}

static int add_value(Graph *g, const char *name, int producer) {
    GraphValue *v = realloc(g->values, (size_t)(g->nvalues + 1) * sizeof *v);
    if (!v) return -1;
    g->values = v;
    v[g->nvalues].name = strdup(name);
    v[g->nvalues].producer = producer;
    if (!v[g->nvalues].name) return -1;
    g->nvalues++;
    return 0;
}

static int parse_line(Graph *g, char *text, const char *orig, int line) {
    char *tok[MAX_TOKENS];
    int nt = 0;
    for (char *p = strtok(text, " \t"); p; p = strtok(NULL, " \t")) {
        if (nt == MAX_TOKENS) return LINE_ERR("more than %d fields", MAX_TOKENS);
        tok[nt++] = p;
    }
    int op = -1;
    for (int i = 0; i < NOPS; i++)
        if (!strcmp(tok[0], SPECS[i].name)) op = i;
    if (op < 0) return LINE_ERR("unknown op '%.40s'", tok[0]);
    const OpSpec *spec = &SPECS[op];
    if (nt < 3) return LINE_ERR("%s: expected '%s OUT IN[,IN...] key=value...'", spec->name, spec->name);
    GraphNode *nodes = realloc(g->nodes, (size_t)(g->nnodes + 1) * sizeof *nodes);
    if (!nodes) return gelan_error("graph: out of memory");
    g->nodes = nodes;
    GraphNode *n = &nodes[g->nnodes++];
    *n = (GraphNode){.op = (OpType)op,
                     .line = line,
                     .k = 1,
                     .s = 1,
                     .d = 1,
                     .g = 1,
                     .act = ACT_NONE,
                     .alpha = 0.01f,
                     .count_include_pad = 1,
                     .reg_max = 16};
    n->text = strdup(orig);
    if (!n->text) return gelan_error("graph: out of memory");

    char *outs[GRAPH_MAX_LIST], *ins[GRAPH_MAX_LIST];
    int nout = split_list(tok[1], outs, GRAPH_MAX_LIST), nin = split_list(tok[2], ins, GRAPH_MAX_LIST);
    if (nout < 0 || nin < 0) return LINE_ERR("%s: more than %d inputs or outputs", spec->name, GRAPH_MAX_LIST);
    if (nin < spec->min_in || nin > spec->max_in)
        return LINE_ERR("%s: takes %d..%d inputs, got %d", spec->name, spec->min_in, spec->max_in, nin);
    if (nout < spec->min_out || nout > spec->max_out)
        return LINE_ERR("%s: makes %d..%d outputs, got %d", spec->name, spec->min_out, spec->max_out, nout);
    for (int i = 0; i < nin; i++) {
        if (!valid_name(ins[i])) return LINE_ERR("%s: bad input name '%.40s'", spec->name, ins[i]);
        int v = find_value(g, ins[i]);
        if (v < 0) return LINE_ERR("%s: input '%s' is not defined before this line", spec->name, ins[i]);
        n->in[i] = v;
    }
    n->nin = nin;
    n->nout = nout;
    /* keys, before the outputs are defined so that a bad line leaves no names behind */
    int seen_alpha = 0, seen_s = 0, seen_p = 0;
    char seen_keys[MAX_TOKENS][24];
    int nseen = 0;
    for (int i = 3; i < nt; i++) {
        char *eq = strchr(tok[i], '=');
        if (!eq || eq == tok[i]) return LINE_ERR("%s: '%.40s' is not key=value", spec->name, tok[i]);
        *eq = '\0';
        const char *key = tok[i];
        int allowed = 0;
        for (int j = 0; j < 14 && spec->keys[j]; j++) allowed |= !strcmp(spec->keys[j], key);
        if (!allowed) return LINE_ERR("%s: unknown key '%.40s'", spec->name, key);
        for (int j = 0; j < nseen; j++)
            if (!strcmp(seen_keys[j], key)) return LINE_ERR("%s: key '%s' given twice", spec->name, key);
        snprintf(seen_keys[nseen++], sizeof seen_keys[0], "%s", key);
        if (parse_key(n, key, eq + 1, line)) return -1;
        seen_alpha |= !strcmp(key, "alpha");
        seen_s |= !strcmp(key, "s");
        seen_p |= !strcmp(key, "p");
    }
    for (int j = 0; j < 8 && spec->required[j]; j++) {
        int found = 0;
        for (int i = 0; i < nseen; i++) found |= !strcmp(seen_keys[i], spec->required[j]);
        if (!found) return LINE_ERR("%s: missing key '%s'", spec->name, spec->required[j]);
    }
    if (check_node(n, seen_alpha, seen_s, seen_p, line)) return -1;
    for (int i = 0; i < nout; i++) {
        if (!valid_name(outs[i])) return LINE_ERR("%s: bad output name '%.40s'", spec->name, outs[i]);
        if (find_value(g, outs[i]) >= 0) return LINE_ERR("%s: '%s' is already defined", spec->name, outs[i]);
        if (add_value(g, outs[i], g->nnodes - 1)) return gelan_error("graph: out of memory");
        n->out[i] = g->nvalues - 1;
    }
    return 0;
}

int graph_parse(const char *text, Graph *g) {
    memset(g, 0, sizeof *g);
    if (add_value(g, "input", -1)) return gelan_error("graph: out of memory");
    size_t len = strlen(text);
    char *buf = malloc(len + 1), *orig = malloc(len + 1);
    if (!buf || !orig) {
        free(buf), free(orig);
        graph_free(g);
        return gelan_error("graph: out of memory");
    }
    int line = 0, rc = 0;
    for (const char *p = text; *p && rc == 0;) {
        const char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p) : strlen(p);
        line++;
        memcpy(buf, p, n);
        buf[n] = '\0';
        p += n + (eol ? 1 : 0);
        char *hash = strchr(buf, '#');
        if (hash) *hash = '\0';
        size_t m = strlen(buf);
        while (m && (buf[m - 1] == '\r' || buf[m - 1] == ' ' || buf[m - 1] == '\t')) buf[--m] = '\0';
        char *start = buf + strspn(buf, " \t");
        if (!*start) continue;
        for (char *c = start; *c; c++)
            if ((unsigned char)*c < 32 && *c != '\t') {
                rc = gelan_error("graph line %d: control character 0x%02x", line, (unsigned char)*c);
                break;
            }
        if (rc) break;
        strcpy(orig, start);
        rc = parse_line(g, start, orig, line);
    }
    free(buf), free(orig);
    if (rc == 0 && g->nnodes == 0) rc = gelan_error("graph: no nodes");
    if (rc) graph_free(g);
    return rc;
}

void graph_free(Graph *g) {
    for (int i = 0; i < g->nnodes; i++) {
        free(g->nodes[i].text);
        free(g->nodes[i].w);
        free(g->nodes[i].b);
        free(g->nodes[i].ws);
    }
    for (int i = 0; i < g->nvalues; i++) free(g->values[i].name);
    free(g->nodes);
    free(g->values);
    memset(g, 0, sizeof *g);
}
