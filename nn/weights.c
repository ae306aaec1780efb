/* Model weights in safetensors files, by official name. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/model.h"
#include "tensor/error.h"
#include "tensor/safetensors.h"

/* A bounded message listing up to LIST_MAX problems of each kind. */
#define LIST_MAX 8

typedef struct {
    char text[4096];
    int len;
} Msg;

static void msg_add(Msg *m, const char *s) {
    int room = (int)sizeof m->text - m->len;
    if (room <= 1) return;
    int n = snprintf(m->text + m->len, (size_t)room, "%s", s);
    m->len += n < room ? n : room - 1;
}

static const char *st_shape_str(const StTensorInfo *ti, char *buf, size_t len) {
    int used = snprintf(buf, len, "[");
    for (int i = 0; i < ti->ndim && used < (int)len; i++)
        used += snprintf(buf + used, len - (size_t)used, i ? ",%lld" : "%lld", (long long)ti->shape[i]);
    if (used < (int)len) snprintf(buf + used, len - (size_t)used, "]");
    return buf;
}

static bool same_shape(const StTensorInfo *ti, const Tensor *t) {
    if (ti->ndim != t->ndim) return false;
    for (int i = 0; i < t->ndim; i++)
        if (ti->shape[i] != t->shape[i]) return false;
    return true;
}

static const char *name_of(const Model *m, int i, Tensor **t) {
    if (i < m->nparams) {
        *t = m->params[i].t;
        return m->params[i].name;
    }
    *t = m->buffers[i - m->nparams].t;
    return m->buffers[i - m->nparams].name;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static int load_from(Model *m, const SafeTensors *st, const char *path) {
    int total = m->nparams + m->nbuffers;
    int nmissing = 0, nshape = 0, nunexpected = 0;
    Msg missing = {.len = 0}, shape = {.len = 0}, unexpected = {.len = 0};
    char line[512], a[96], b[96];
    for (int i = 0; i < total; i++) {
        Tensor *t;
        const char *name = name_of(m, i, &t);
        const StTensorInfo *ti = st_find(st, name);
        if (!ti) {
            if (nmissing++ < LIST_MAX) {
                snprintf(line, sizeof line, "%s%s", nmissing > 1 ? ", " : "", name);
                msg_add(&missing, line);
            }
        } else if (!same_shape(ti, t)) {
            if (nshape++ < LIST_MAX) {
                snprintf(line, sizeof line, "%s%s (file %s, model %s)", nshape > 1 ? ", " : "", name,
                         st_shape_str(ti, a, sizeof a), tensor_shape_str(t, b, sizeof b));
                msg_add(&shape, line);
            }
        }
    }
    /* `model.*` tensors the model does not have; BN's num_batches_tracked (kept
     * by a plain torch state_dict) is not used here and ignored */
    for (int i = 0; i < st_count(st); i++) {
        const StTensorInfo *ti = st_info(st, i);
        if (strncmp(ti->name, "model.", 6) || ends_with(ti->name, ".num_batches_tracked")) continue;
        if (model_tensor(m, ti->name)) continue;
        if (nunexpected++ < LIST_MAX) {
            snprintf(line, sizeof line, "%s%s", nunexpected > 1 ? ", " : "", ti->name);
            msg_add(&unexpected, line);
        }
    }
    if (nmissing || nshape || nunexpected) {
        return gelan_error(
            "%s does not fit the model %s: %d missing%s%s%s; %d with another shape%s%s%s; %d "
            "unexpected%s%s%s",
            path, m->name, nmissing, nmissing ? " (" : "", missing.text,
            nmissing > LIST_MAX ? ", ...)"
            : nmissing          ? ")"
                                : "",
            nshape, nshape ? " (" : "", shape.text,
            nshape > LIST_MAX ? ", ...)"
            : nshape          ? ")"
                              : "",
            nunexpected, nunexpected ? " (" : "", unexpected.text,
            nunexpected > LIST_MAX ? ", ...)"
            : nunexpected          ? ")"
                                   : "");
    }
    for (int i = 0; i < total; i++) {
        Tensor *t;
        const char *name = name_of(m, i, &t);
        if (st_read_f32(st, name, t->data, t->numel)) return -1;
    }
    return 0;
}

int model_load_weights(Model *m, const char *path) {
    SafeTensors *st = st_open(path);
    if (!st) return -1;
    int rc = load_from(m, st, path);
    st_close(st);
    return rc;
}

int model_save_weights_meta(const Model *m, const ModelMeta *meta, int nmeta, const char *path) {
    StWriter *w = st_writer_new();
    if (!w) return -1;
    char nc[32];
    snprintf(nc, sizeof nc, "%d", m->nc);
    int rc = st_writer_set_metadata(w, "format", "gelan-weights/1");
    if (!rc) rc = st_writer_set_metadata(w, "cfg", m->yaml);
    if (!rc) rc = st_writer_set_metadata(w, "nc", nc);
    for (int i = 0; !rc && i < nmeta; i++)
        if (meta[i].value) rc = st_writer_set_metadata(w, meta[i].key, meta[i].value);
    for (int i = 0; !rc && i < m->nparams; i++)
        rc = st_writer_add_f32(w, m->params[i].name, m->params[i].t->ndim, m->params[i].t->shape, m->params[i].t->data);
    for (int i = 0; !rc && i < m->nbuffers; i++)
        rc = st_writer_add_f32(w, m->buffers[i].name, m->buffers[i].t->ndim, m->buffers[i].t->shape,
                               m->buffers[i].t->data);
    if (!rc) rc = st_writer_save(w, path);
    st_writer_free(w);
    return rc;
}

int model_save_weights(const Model *m, const char *path) { return model_save_weights_meta(m, NULL, 0, path); }

Model *model_load(const char *weights_path, const char *cfg_path, const ModelOptions *opt) {
    SafeTensors *st = st_open(weights_path);
    if (!st) return NULL;
    Model *m = NULL;
    /* A checkpoint of a run on a data set whose class count is not the YAML's nc records
     * its nc: the model is built with it unless the caller sets one. */
    ModelOptions o = opt ? *opt : (ModelOptions){0};
    const char *nc_meta = st_metadata(st, "nc");
    if (o.nc <= 0 && nc_meta && atoi(nc_meta) > 0) o.nc = atoi(nc_meta);
    if (cfg_path) {
        m = model_build_file(cfg_path, &o);
    } else {
        const char *cfg = st_metadata(st, "cfg");
        if (cfg)
            m = model_build(cfg, weights_path, &o);
        else
            gelan_error("%s carries no model config (`cfg` metadata): pass --cfg", weights_path);
    }
    if (m && load_from(m, st, weights_path)) {
        model_free(m);
        m = NULL;
    }
    st_close(st);
    return m;
}
