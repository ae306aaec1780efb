#include "nn/yaml_cfg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "tensor/error.h"

char *read_text_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        gelan_error("%s: cannot open (%s)", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (cap - len - 1 == 0) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) free(buf);
            buf = nb;
            cap *= 2;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (!buf || err) {
        free(buf);
        gelan_error("%s: read failed", path);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

static char *dupstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void value_free(CfgValue *v) {
    if (v->kind == CV_STR) free(v->str);
    if (v->kind == CV_LIST) {
        for (int i = 0; i < v->n; i++) value_free(&v->items[i]);
        free(v->items);
    }
    memset(v, 0, sizeof *v);
}

void model_cfg_free(ModelCfg *cfg) {
    if (!cfg) return;
    for (int i = 0; i < cfg->nrows; i++) {
        value_free(&cfg->rows[i].from);
        value_free(&cfg->rows[i].args);
        free(cfg->rows[i].module);
    }
    free(cfg->rows);
    free(cfg->activation);
    free(cfg->file);
    free(cfg->text);
    free(cfg);
}

/* A plain scalar as Python's yaml.safe_load + parse_model's eval would see it:
 * integers, floats, None; anything else stays a string (eval of a name such as
 * `nc` is resolved later by the builder). Quoted scalars are always strings. */
static int scalar_value(const yaml_node_t *node, CfgValue *v) {
    const char *s = (const char *)node->data.scalar.value;
    v->line = (int)node->start_mark.line + 1;
    bool plain = node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (plain) {
        if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "None")) {
            v->kind = CV_NONE;
            return 0;
        }
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "false") || !strcmp(s, "False")) {
            v->kind = CV_INT; /* Python bools are ints (act=True) */
            v->ival = s[0] == 't' || s[0] == 'T';
            return 0;
        }
        char *end;
        errno = 0;
        long iv = strtol(s, &end, 10);
        if (*end == '\0' && errno == 0) {
            v->kind = CV_INT;
            v->ival = iv;
            return 0;
        }
        double dv = strtod(s, &end);
        if (*end == '\0' && strpbrk(s, "0123456789")) {
            v->kind = CV_FLOAT;
            v->fval = dv;
            return 0;
        }
    }
    v->kind = CV_STR;
    v->quoted = !plain;
    v->str = dupstr(s);
    return v->str ? 0 : gelan_error("yaml: out of memory");
}

/* YAML aliases can make a small file expand into a huge tree ("billion
 * laughs"); a model needs a few thousand values, so the expansion is capped. */
#define MAX_VALUES 200000

static int node_value(yaml_document_t *doc, yaml_node_t *node, CfgValue *v, const char *file, int depth, long *budget) {
    memset(v, 0, sizeof *v);
    if (!node) return gelan_error("%s: missing YAML node", file);
    if (depth > 16) return gelan_error("%s:%d: lists nested too deeply", file, (int)node->start_mark.line + 1);
    if (--*budget < 0) return gelan_error("%s: more than %d values (alias expansion?)", file, MAX_VALUES);
    v->line = (int)node->start_mark.line + 1;
    switch (node->type) {
        case YAML_SCALAR_NODE:
            return scalar_value(node, v);
        case YAML_SEQUENCE_NODE: {
            int n = (int)(node->data.sequence.items.top - node->data.sequence.items.start);
            v->kind = CV_LIST;
            v->items = calloc(n ? n : 1, sizeof *v->items);
            if (!v->items) return gelan_error("yaml: out of memory");
            for (int i = 0; i < n; i++) {
                yaml_node_t *c = yaml_document_get_node(doc, node->data.sequence.items.start[i]);
                if (node_value(doc, c, &v->items[i], file, depth + 1, budget)) {
                    v->n = i + 1;
                    return -1;
                }
            }
            v->n = n;
            return 0;
        }
        default:
            return gelan_error("%s:%d: a mapping where a value or list was expected", file, v->line);
    }
}

static int want_int(const CfgValue *v, const char *file, const char *what, long *out) {
    if (v->kind == CV_INT) {
        *out = v->ival;
        return 0;
    }
    return gelan_error("%s:%d: %s must be an integer", file, v->line, what);
}

static int want_number(const CfgValue *v, const char *file, const char *what, double *out) {
    if (v->kind == CV_INT || v->kind == CV_FLOAT) {
        *out = v->kind == CV_INT ? (double)v->ival : v->fval;
        return 0;
    }
    return gelan_error("%s:%d: %s must be a number", file, v->line, what);
}

/* A backbone/head list: rows of [from, number, module, args]. */
static int read_rows(ModelCfg *cfg, CfgValue *list, const char *section) {
    const char *file = cfg->file;
    if (list->kind != CV_LIST) return gelan_error("%s:%d: '%s' must be a list of layers", file, list->line, section);
    CfgRow *rows = realloc(cfg->rows, (size_t)(cfg->nrows + list->n + 1) * sizeof *rows);
    if (!rows) return gelan_error("yaml: out of memory");
    cfg->rows = rows;
    for (int i = 0; i < list->n; i++) {
        CfgValue *r = &list->items[i];
        int idx = cfg->nrows;
        if (r->kind != CV_LIST || r->n != 4)
            return gelan_error("%s:%d: layer %d: a row must be [from, number, module, args]", file, r->line, idx);
        CfgRow *row = &cfg->rows[idx];
        memset(row, 0, sizeof *row);
        row->line = r->line;
        const CfgValue *f = &r->items[0];
        if (f->kind == CV_LIST) {
            if (f->n == 0) return gelan_error("%s:%d: layer %d: empty 'from' list", file, f->line, idx);
            for (int j = 0; j < f->n; j++)
                if (f->items[j].kind != CV_INT)
                    return gelan_error("%s:%d: layer %d: 'from' entries must be integers", file, f->line, idx);
        } else if (f->kind != CV_INT) {
            return gelan_error("%s:%d: layer %d: 'from' must be an integer or a list of integers", file, f->line, idx);
        }
        if (want_int(&r->items[1], file, "the number of repeats", &row->number)) return -1;
        if (r->items[2].kind != CV_STR)
            return gelan_error("%s:%d: layer %d: the module must be a name", file, r->items[2].line, idx);
        if (r->items[3].kind != CV_LIST)
            return gelan_error("%s:%d: layer %d: the arguments must be a list", file, r->items[3].line, idx);
        /* move the values out of the parsed list (they are freed with the row) */
        row->from = r->items[0];
        row->module = r->items[2].str;
        row->args = r->items[3];
        memset(&r->items[0], 0, sizeof(CfgValue));
        memset(&r->items[2], 0, sizeof(CfgValue));
        memset(&r->items[3], 0, sizeof(CfgValue));
        cfg->nrows++;
    }
    return 0;
}

ModelCfg *model_cfg_parse(const char *text, const char *file_name) {
    if (!file_name) file_name = "<model yaml>";
    ModelCfg *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        gelan_error("yaml: out of memory");
        return NULL;
    }
    cfg->file = dupstr(file_name);
    cfg->text = dupstr(text);
    cfg->ch = 3;
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
    if (!yaml_parser_load(&parser, &doc)) {
        gelan_error("%s:%d: YAML syntax error: %s%s%s", file_name, (int)parser.problem_mark.line + 1,
                    parser.problem ? parser.problem : "?", parser.context ? " " : "",
                    parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        model_cfg_free(cfg);
        return NULL;
    }
    int rc = 0;
    long budget = MAX_VALUES;
    bool have_nc = false, have_gd = false, have_gw = false;
    CfgValue backbone = {0}, head = {0};
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || root->type != YAML_MAPPING_NODE) {
        rc = gelan_error("%s: not a model YAML (expected a mapping with nc, backbone, head)", file_name);
        goto done;
    }
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top && !rc; p++) {
        yaml_node_t *k = yaml_document_get_node(&doc, p->key);
        if (!k || k->type != YAML_SCALAR_NODE) continue;
        const char *key = (const char *)k->data.scalar.value;
        static const char *known[] = {"nc",         "depth_multiple", "width_multiple", "ch",
                                      "activation", "anchors",        "backbone",       "head"};
        bool wanted = false;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) wanted |= !strcmp(key, known[i]);
        if (!wanted) continue; /* other keys are ignored, as by the official code */
        CfgValue v;
        if (node_value(&doc, yaml_document_get_node(&doc, p->value), &v, file_name, 0, &budget)) {
            value_free(&v);
            rc = -1;
            break;
        }
        long iv = 0;
        if (!strcmp(key, "nc")) {
            rc = want_int(&v, file_name, "nc", &iv);
            if (!rc && (iv <= 0 || iv > 100000))
                rc = gelan_error("%s:%d: nc must be 1..100000, got %ld", file_name, v.line, iv);
            cfg->nc = (int)iv;
            have_nc = true;
        } else if (!strcmp(key, "depth_multiple")) {
            rc = want_number(&v, file_name, "depth_multiple", &cfg->depth_multiple);
            have_gd = true;
        } else if (!strcmp(key, "width_multiple")) {
            rc = want_number(&v, file_name, "width_multiple", &cfg->width_multiple);
            have_gw = true;
        } else if (!strcmp(key, "ch")) {
            rc = want_int(&v, file_name, "ch", &iv);
            if (!rc && (iv <= 0 || iv > 4096))
                rc = gelan_error("%s:%d: ch must be 1..4096, got %ld", file_name, v.line, iv);
            cfg->ch = (int)iv;
        } else if (!strcmp(key, "activation")) {
            if (v.kind == CV_STR) {
                cfg->activation = v.str;
                v.str = NULL;
            } else if (v.kind != CV_NONE) {
                rc = gelan_error("%s:%d: activation must be a name such as nn.SiLU()", file_name, v.line);
            }
        } else if (!strcmp(key, "anchors")) {
            /* official: a number of anchors, or a list of per-level anchor lists */
            if (v.kind == CV_INT && v.ival >= 0 && v.ival <= 1000)
                cfg->na = (int)v.ival;
            else if (v.kind == CV_LIST && v.n > 0 && v.items[0].kind == CV_LIST)
                cfg->na = v.items[0].n / 2;
        } else if (!strcmp(key, "backbone")) {
            value_free(&backbone);
            backbone = v;
            continue;
        } else if (!strcmp(key, "head")) {
            value_free(&head);
            head = v;
            continue;
        }
        value_free(&v);
    }
    if (rc) goto done;
    if (!have_nc || !have_gd || !have_gw || backbone.kind == CV_NONE || head.kind == CV_NONE) {
        rc = gelan_error("%s: missing %s", file_name,
                         !have_nc                   ? "nc"
                         : !have_gd                 ? "depth_multiple"
                         : !have_gw                 ? "width_multiple"
                         : backbone.kind == CV_NONE ? "backbone"
                                                    : "head");
        goto done;
    }
    if (read_rows(cfg, &backbone, "backbone")) {
        rc = -1;
        goto done;
    }
    cfg->nbackbone = cfg->nrows;
    if (read_rows(cfg, &head, "head")) rc = -1;
    if (!rc && cfg->nrows == 0) rc = gelan_error("%s: the model has no layers", file_name);
done:
    value_free(&backbone);
    value_free(&head);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (rc) {
        model_cfg_free(cfg);
        return NULL;
    }
    return cfg;
}

ModelCfg *model_cfg_load(const char *path) {
    char *text = read_text_file(path);
    if (!text) return NULL;
    ModelCfg *cfg = model_cfg_parse(text, path);
    free(text);
    return cfg;
}

const char *cfg_value_str(const CfgValue *v, char *buf, int len) {
    if (len <= 0) return buf;
    buf[0] = '\0';
    int used = 0;
    switch (v->kind) {
        case CV_NONE:
            snprintf(buf, len, "None");
            break;
        case CV_INT:
            snprintf(buf, len, "%ld", v->ival);
            break;
        case CV_FLOAT:
            snprintf(buf, len, "%g", v->fval);
            break;
        case CV_STR:
            snprintf(buf, len, v->quoted ? "'%s'" : "%s", v->str);
            break;
        case CV_LIST:
            used = snprintf(buf, len, "[");
            for (int i = 0; i < v->n && used < len; i++) {
                if (i) used += snprintf(buf + used, len - used, ", ");
                if (used >= len) break;
                cfg_value_str(&v->items[i], buf + used, len - used);
                used += (int)strlen(buf + used);
            }
            if (used < len) snprintf(buf + used, len - used, "]");
            break;
    }
    return buf;
}
