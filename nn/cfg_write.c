/* Writing model YAML (nn/cfg_write.h). */
#include "nn/cfg_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/error.h"

/* The shortest decimal that reads back as x, always with a '.' or exponent
 * (so that the YAML reader keeps it a float). */
static void fmt_double(char *buf, size_t len, double x) {
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
    if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", len - strlen(buf) - 1);
}

void cfg_write_str(TextBuf *t, const char *s, bool quote) {
    /* flow-context plain scalars cannot hold these */
    if (!quote && *s && s[0] != ' ' && !strpbrk(s, ",[]{}#:'\"")) {
        textbuf_add(t, "%s", s);
        return;
    }
    textbuf_add(t, "'");
    for (const char *c = s; *c; c++) textbuf_add(t, *c == '\'' ? "''" : "%c", *c);
    textbuf_add(t, "'");
}

void cfg_write_value(TextBuf *t, const CfgValue *v) {
    char num[40];
    switch (v->kind) {
        case CV_NONE:
            textbuf_add(t, "None");
            break;
        case CV_INT:
            textbuf_add(t, "%ld", v->ival);
            break;
        case CV_FLOAT:
            fmt_double(num, sizeof num, v->fval);
            textbuf_add(t, "%s", num);
            break;
        case CV_STR:
            cfg_write_str(t, v->str, v->quoted);
            break;
        case CV_LIST:
            textbuf_add(t, "[");
            for (int i = 0; i < v->n; i++) {
                if (i) textbuf_add(t, ", ");
                cfg_write_value(t, &v->items[i]);
            }
            textbuf_add(t, "]");
            break;
    }
}

ModelCfg *cfg_of_model(const Model *m, const char *who) {
    ModelCfg *cfg = model_cfg_parse(m->yaml, m->file);
    if (cfg && cfg->nrows != m->nlayers) {
        gelan_error("%s: %s has %d YAML rows but %d layers", who, m->file, cfg->nrows, m->nlayers);
        model_cfg_free(cfg);
        return NULL;
    }
    return cfg;
}

void cfg_write_header(TextBuf *t, const Model *m, const ModelCfg *cfg) {
    char num[40];
    textbuf_add(t, "nc: %d\n", m->nc);
    fmt_double(num, sizeof num, cfg->depth_multiple);
    textbuf_add(t, "depth_multiple: %s\n", num);
    fmt_double(num, sizeof num, cfg->width_multiple);
    textbuf_add(t, "width_multiple: %s\n", num);
    if (cfg->activation) {
        textbuf_add(t, "activation: ");
        cfg_write_str(t, cfg->activation, true);
        textbuf_add(t, "\n");
    }
    if (cfg->na > 0) textbuf_add(t, "anchors: %d\n", cfg->na);
    if (cfg->ch != 3) textbuf_add(t, "ch: %d\n", cfg->ch);
}
