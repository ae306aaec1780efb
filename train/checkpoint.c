/* Training checkpoints in safetensors files. */
#include "train/checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/quant.h"
#include "tensor/error.h"
#include "tensor/json.h"
#include "tensor/safetensors.h"

struct Checkpoint {
    SafeTensors *st;
    char *path;
};

/* ---- writing ---------------------------------------------------------------- */

static int add_tensor(StWriter *w, const char *name, const Tensor *t) {
    return st_writer_add_f32(w, name, t->ndim, t->shape, t->data);
}

/* ema_foreach / optim_state_foreach visitor: the name is copied by the writer,
 * the data stays referenced (the tensors outlive the save). */
static int visit_add(void *ctx, const char *name, Tensor *t) { return add_tensor(ctx, name, t); }

static int set_meta_int(StWriter *w, const char *key, long v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%ld", v);
    return st_writer_set_metadata(w, key, buf);
}

int ckpt_save(const char *path, const CkptContents *c) {
    const Model *m = c->model;
    StWriter *w = st_writer_new();
    if (!w) return -1;
    char buf[64];
    int rc = st_writer_set_metadata(w, "format", CKPT_FORMAT);
    if (!rc) rc = st_writer_set_metadata(w, "cfg", m->yaml);
    if (!rc) rc = set_meta_int(w, "nc", m->nc);
    if (!rc && c->hyp_yaml) rc = st_writer_set_metadata(w, "hyp", c->hyp_yaml);
    if (!rc && c->names_json) rc = st_writer_set_metadata(w, "names", c->names_json);
    if (!rc) rc = set_meta_int(w, "epoch", c->epoch);
    if (!rc) {
        snprintf(buf, sizeof buf, "%.17g", c->best_fitness); /* round-trips exactly */
        rc = st_writer_set_metadata(w, "best_fitness", buf);
    }
    if (!rc && c->ema) rc = set_meta_int(w, "ema_updates", c->ema->updates);
    for (int i = 0; !rc && i < c->n_extra; i++) rc = st_writer_set_metadata(w, c->extra[i].key, c->extra[i].value);
    for (int i = 0; !rc && i < m->nparams; i++) rc = add_tensor(w, m->params[i].name, m->params[i].t);
    for (int i = 0; !rc && i < m->nbuffers; i++) rc = add_tensor(w, m->buffers[i].name, m->buffers[i].t);
    if (!rc && c->ema) rc = ema_foreach(c->ema, visit_add, w);
    if (!rc && c->optim) rc = optim_state_foreach(c->optim, visit_add, w);
    /* the observers' state; the foreach only reads it (the cast drops const for the callback type) */
    if (!rc && model_qat_enabled(m)) rc = model_qat_foreach((Model *)m, visit_add, w);
    if (!rc) rc = st_writer_save(w, path);
    st_writer_free(w);
    if (rc) gelan_error_prefix("checkpoint %s", path);
    return rc;
}

/* ---- reading ---------------------------------------------------------------- */

Checkpoint *ckpt_open(const char *path) {
    Checkpoint *ck = calloc(1, sizeof *ck);
    if (!ck || !(ck->path = strdup(path))) {
        free(ck);
        gelan_error("%s: out of memory", path);
        return NULL;
    }
    if (!(ck->st = st_open(path))) {
        ckpt_close(ck);
        return NULL;
    }
    return ck;
}

void ckpt_close(Checkpoint *ck) {
    if (!ck) return;
    st_close(ck->st);
    free(ck->path);
    free(ck);
}

const char *ckpt_path(const Checkpoint *ck) { return ck->path; }
const char *ckpt_meta(const Checkpoint *ck, const char *key) { return st_metadata(ck->st, key); }

bool ckpt_is_training(const Checkpoint *ck) {
    const char *f = ckpt_meta(ck, "format");
    return f && !strcmp(f, CKPT_FORMAT);
}

bool ckpt_has_ema(const Checkpoint *ck) {
    for (int i = 0; i < st_count(ck->st); i++)
        if (!strncmp(st_info(ck->st, i)->name, "ema.", 4)) return true;
    return false;
}

Model *ckpt_build_model(const Checkpoint *ck, const char *cfg_path, const ModelOptions *opt) {
    ModelOptions o = opt ? *opt : (ModelOptions){0};
    const char *nc = ckpt_meta(ck, "nc");
    if (o.nc <= 0 && nc) o.nc = atoi(nc);
    if (cfg_path) return model_build_file(cfg_path, &o);
    const char *cfg = ckpt_meta(ck, "cfg");
    if (!cfg) {
        gelan_error("%s carries no model config (`cfg` metadata): pass --cfg", ck->path);
        return NULL;
    }
    return model_build(cfg, ck->path, &o);
}

static bool same_shape(const StTensorInfo *ti, const Tensor *t) {
    if (ti->ndim != t->ndim) return false;
    for (int i = 0; i < t->ndim; i++)
        if (ti->shape[i] != t->shape[i]) return false;
    return true;
}

/* Tensor i of the model's parameters followed by its buffers. */
static Tensor *model_entry(const Model *m, int i, const char **name) {
    if (i < m->nparams) {
        *name = m->params[i].name;
        return m->params[i].t;
    }
    *name = m->buffers[i - m->nparams].name;
    return m->buffers[i - m->nparams].t;
}

static const char *file_name(char *buf, size_t len, CkptWhich which, const char *name) {
    snprintf(buf, len, "%s%s", which == CKPT_EMA ? "ema." : "", name);
    return buf;
}

int ckpt_load_weights(const Checkpoint *ck, Model *m, CkptWhich which) {
    const int total = m->nparams + m->nbuffers;
    char key[1024], list[1024] = "";
    int bad = 0;
    size_t used = 0;
    /* check everything first so that a bad file changes nothing */
    for (int i = 0; i < total; i++) {
        const char *name;
        Tensor *t = model_entry(m, i, &name);
        const StTensorInfo *ti = st_find(ck->st, file_name(key, sizeof key, which, name));
        if (ti && same_shape(ti, t)) continue;
        if (bad++ < 6 && used < sizeof list)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s (%s)", bad > 1 ? ", " : "", key,
                                     ti ? "another shape" : "missing");
    }
    if (bad)
        return gelan_error("%s does not fit the model %s: %d of %d tensors missing or mis-shaped: %s%s", ck->path,
                           m->name, bad, total, list, bad > 6 ? ", ..." : "");
    for (int i = 0; i < total; i++) {
        const char *name;
        Tensor *t = model_entry(m, i, &name);
        if (st_read_f32(ck->st, file_name(key, sizeof key, which, name), t->data, t->numel)) return -1;
    }
    return 0;
}

int ckpt_transfer(const Checkpoint *ck, Model *m, int *transferred, int *total) {
    const int n = m->nparams + m->nbuffers;
    /* a training checkpoint's EMA weights are the ones its validation scored; the
     * official trainer makes them the `model` of every finished checkpoint
     * (strip_optimizer), so a fine-tuning starts from them */
    const bool ema = ckpt_has_ema(ck);
    int done = 0;
    for (int i = 0; i < n; i++) {
        const char *name;
        Tensor *t = model_entry(m, i, &name);
        char key[512];
        snprintf(key, sizeof key, "%s%s", ema ? "ema." : "", name);
        const StTensorInfo *ti = st_find(ck->st, key);
        if (!ti || !same_shape(ti, t)) continue;
        if (st_read_f32(ck->st, key, t->data, t->numel)) return -1;
        done++;
    }
    if (transferred) *transferred = done;
    if (total) *total = n;
    return 0;
}

/* OptimTensorRead over the checkpoint: 1 when absent. */
static int read_tensor(void *ctx, const char *name, Tensor *dst) {
    const Checkpoint *ck = ctx;
    const StTensorInfo *ti = st_find(ck->st, name);
    if (!ti) return 1;
    if (!same_shape(ti, dst)) {
        char a[64];
        return gelan_error("%s: %s has another shape than the model's %s", ck->path, name,
                           tensor_shape_str(dst, a, sizeof a));
    }
    return st_read_f32(ck->st, name, dst->data, dst->numel);
}

int ckpt_read_tensor(const Checkpoint *ck, const char *name, Tensor *dst) { return read_tensor((void *)ck, name, dst); }

int ckpt_load_ema(const Checkpoint *ck, ModelEMA *e) {
    const char *u = ckpt_meta(ck, "ema_updates");
    if (!u) return gelan_error("%s has no ema_updates", ck->path);
    if (ema_load(e, read_tensor, (void *)ck)) {
        gelan_error_prefix("%s", ck->path);
        return -1;
    }
    e->updates = atol(u);
    return 0;
}

int ckpt_load_optim(const Checkpoint *ck, Optimizer *o) {
    if (optim_state_load(o, read_tensor, (void *)ck)) {
        gelan_error_prefix("%s", ck->path);
        return -1;
    }
    return 0;
}

int ckpt_load_qat(const Checkpoint *ck, Model *m) {
    if (model_qat_load(m, read_tensor, (void *)ck)) {
        gelan_error_prefix("%s", ck->path);
        return -1;
    }
    return 0;
}

Model *ckpt_load_model(const Checkpoint *ck, const char *cfg_path, const ModelOptions *opt, bool prefer_ema,
                       bool *used_ema) {
    bool ema = prefer_ema && ckpt_has_ema(ck);
    if (used_ema) *used_ema = ema;
    Model *m = ckpt_build_model(ck, cfg_path, opt);
    if (m && ckpt_load_weights(ck, m, ema ? CKPT_EMA : CKPT_MODEL)) {
        model_free(m);
        return NULL;
    }
    return m;
}

Model *ckpt_load_eval_model(const char *path, const char *cfg_path, const ModelOptions *opt) {
    Checkpoint *ck = ckpt_open(path);
    if (!ck) return NULL;
    Model *m = ckpt_build_model(ck, cfg_path, opt);
    int rc = m ? ckpt_load_weights(ck, m, ckpt_has_ema(ck) ? CKPT_EMA : CKPT_MODEL) : -1;
    if (!rc && model_qat_enable_from(m, read_tensor, ck, NULL)) {
        gelan_error_prefix("%s", path);
        rc = -1;
    }
    if (m && rc) {
        model_free(m);
        m = NULL;
    }
    ckpt_close(ck);
    return m;
}

/* ---- class names --------------------------------------------------------------- */

char **names_from_json(const char *json, int *n) {
    JsonValue *v = json_parse(json, strlen(json));
    if (!v) {
        gelan_error_prefix("class names");
        return NULL;
    }
    char **names = NULL;
    if (v->type != JSON_ARRAY) {
        gelan_error("class names: expected a JSON list, got %s", json_type_name(v->type));
        goto done;
    }
    names = calloc(v->count ? v->count : 1, sizeof *names);
    for (size_t i = 0; names && i < v->count; i++) {
        const JsonValue *s = json_at(v, i);
        if (s->type != JSON_STRING || !(names[i] = strdup(s->str))) {
            gelan_error("class names: item %zu is not a string", i);
            names_free(names, (int)i);
            names = NULL;
        }
    }
    if (names) *n = (int)v->count;
done:
    json_free(v);
    return names;
}

void names_free(char **names, int n) {
    if (!names) return;
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}
