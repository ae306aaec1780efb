/* Hyperparameter YAML -> loss / optimizer / augmentation structs. */
#include "train/hyp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "nn/yaml_cfg.h"
#include "tensor/error.h"

void hyp_default(Hyp *h) {
    memset(h, 0, sizeof *h);
    h->optim = optim_hyp_default();
    loss_hyp_default(&h->loss);
    h->aug = (HypAugment){.hsv_h = 0.015f,
                          .hsv_s = 0.7f,
                          .hsv_v = 0.4f,
                          .degrees = 0.f,
                          .translate = 0.1f,
                          .scale = 0.9f,
                          .shear = 0.f,
                          .perspective = 0.f,
                          .flipud = 0.f,
                          .fliplr = 0.5f,
                          .mosaic = 1.f,
                          .mixup = 0.15f,
                          .copy_paste = 0.3f};
}

typedef enum { K_DOUBLE, K_FLOAT } KeyType;

/* A known key: where it goes and the range the official code can use. */
typedef struct {
    const char *key;
    KeyType type;
    size_t offset;
    double lo, hi;
} HypKey;

#define D(k, f, lo, hi) \
    { k, K_DOUBLE, offsetof(Hyp, f), lo, hi }
#define F(k, f, lo, hi) \
    { k, K_FLOAT, offsetof(Hyp, f), lo, hi }
static const HypKey KEYS[] = {
    D("lr0", optim.lr0, 0, 10),
    D("lrf", optim.lrf, 0, 10),
    D("momentum", optim.momentum, 0, 1),
    D("weight_decay", optim.weight_decay, 0, 1),
    D("warmup_epochs", optim.warmup_epochs, 0, 1e6),
    D("warmup_momentum", optim.warmup_momentum, 0, 1),
    D("warmup_bias_lr", optim.warmup_bias_lr, 0, 10),
    F("box", loss.box, 0, 1e6),
    F("cls", loss.cls, 0, 1e6),
    F("dfl", loss.dfl, 0, 1e6),
    F("hsv_h", aug.hsv_h, 0, 1),
    F("hsv_s", aug.hsv_s, 0, 1),
    F("hsv_v", aug.hsv_v, 0, 1),
    F("degrees", aug.degrees, 0, 180),
    F("translate", aug.translate, 0, 1),
    F("scale", aug.scale, 0, 1),
    F("shear", aug.shear, 0, 90),
    F("perspective", aug.perspective, 0, 0.1),
    F("flipud", aug.flipud, 0, 1),
    F("fliplr", aug.fliplr, 0, 1),
    F("mosaic", aug.mosaic, 0, 1),
    F("mixup", aug.mixup, 0, 1),
    F("copy_paste", aug.copy_paste, 0, 1),
};
#undef D
#undef F
#define NKEYS ((int)(sizeof KEYS / sizeof KEYS[0]))

/* Keys of the official file that the anchor-free recipe does not use. */
static const char *const IGNORED[] = {"cls_pw",   "obj",     "obj_pw",   "iou_t",
                                      "anchor_t", "anchors", "fl_gamma", "label_smoothing"};

static int set_key(Hyp *h, const char *label, int line, const char *key, const char *value) {
    for (int i = 0; i < NKEYS; i++) {
        if (strcmp(KEYS[i].key, key)) continue;
        char *end = NULL;
        double v = strtod(value, &end);
        if (end == value || *end || !isfinite(v))
            return gelan_error("%s:%d: %s must be a number, got '%s'", label, line, key, value);
        if (v < KEYS[i].lo || v > KEYS[i].hi)
            return gelan_error("%s:%d: %s = %g is outside [%g, %g]", label, line, key, v, KEYS[i].lo, KEYS[i].hi);
        char *p = (char *)h + KEYS[i].offset;
        if (KEYS[i].type == K_DOUBLE)
            *(double *)p = v;
        else
            *(float *)p = (float)v;
        return 0;
    }
    for (size_t i = 0; i < sizeof IGNORED / sizeof IGNORED[0]; i++)
        if (!strcmp(IGNORED[i], key)) return 0;
    gelan_warn("%s:%d: unknown hyperparameter '%s' (ignored)", label, line, key);
    return 0;
}

int hyp_parse(Hyp *h, const char *text, const char *label) {
    hyp_default(h);
    yaml_parser_t p;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&p)) return gelan_error("%s: out of memory for the YAML parser", label);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
    if (!yaml_parser_load(&p, &doc)) {
        int rc =
            gelan_error("%s:%zu: YAML error: %s", label, p.problem_mark.line + 1, p.problem ? p.problem : "syntax");
        yaml_parser_delete(&p);
        return rc;
    }
    int rc = 0;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        rc = gelan_error("%s: empty hyperparameter file", label);
    } else if (root->type != YAML_MAPPING_NODE) {
        rc = gelan_error("%s:%zu: a hyperparameter file is a mapping of `key: number`", label,
                         root->start_mark.line + 1);
    } else {
        for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; !rc && pr < root->data.mapping.pairs.top; pr++) {
            yaml_node_t *k = yaml_document_get_node(&doc, pr->key), *v = yaml_document_get_node(&doc, pr->value);
            int line = (int)k->start_mark.line + 1;
            if (k->type != YAML_SCALAR_NODE) {
                rc = gelan_error("%s:%d: keys must be plain names", label, line);
            } else if (v->type != YAML_SCALAR_NODE) {
                rc = gelan_error("%s:%d: %s must be a number", label, line, (const char *)k->data.scalar.value);
            } else {
                rc = set_key(h, label, line, (const char *)k->data.scalar.value, (const char *)v->data.scalar.value);
            }
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&p);
    if (rc) return rc;
    h->text = strdup(text);
    if (!h->text) return gelan_error("%s: out of memory", label);
    return 0;
}

int hyp_load(Hyp *h, const char *path) {
    char *text = read_text_file(path);
    if (!text) {
        hyp_default(h);
        return -1;
    }
    int rc = hyp_parse(h, text, path);
    free(text);
    return rc;
}

char *hyp_to_yaml(const Hyp *h) {
    if (h->text) return strdup(h->text);
    size_t cap = 2048, len = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    s[0] = '\0';
    for (int i = 0; i < NKEYS; i++) {
        const char *p = (const char *)h + KEYS[i].offset;
        double v = KEYS[i].type == K_DOUBLE ? *(const double *)p : (double)*(const float *)p;
        len += (size_t)snprintf(s + len, cap - len, "%s: %.9g\n", KEYS[i].key, v);
    }
    return s;
}

void hyp_free(Hyp *h) {
    free(h->text);
    h->text = NULL;
}
