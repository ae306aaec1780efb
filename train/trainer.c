/* The training loop (see trainer.h for the recipe). */
#include "train/trainer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nn/quant.h"
#include "autograd/ops.h"
#include "tensor/error.h"
#include "tensor/json.h"
#include "train/dist.h"
#include "train/loader.h"
#include "train/plot.h"
#include "train/validate.h"

/* ---- the optimizer step machinery ------------------------------------------------- */

ParamGroup param_group_of(ParamKind kind) {
    switch (kind) {
        case NN_PARAM_BN_WEIGHT:
            return PARAM_BN_WEIGHT;
        case NN_PARAM_BIAS:
            return PARAM_BIAS;
        case NN_PARAM_WEIGHT:
        default:
            return PARAM_WEIGHT_DECAY;
    }
}

/* model.half().float(): the official loop rounds the fresh model's weights to
 * fp16 once ("pre-reduce anchor precision"), after the EMA has copied them. */
static void round_to_fp16(Model *m) {
#ifdef __FLT16_MAX__
    for (int i = 0; i < m->nparams + m->nbuffers; i++) {
        Tensor *t = i < m->nparams ? m->params[i].t : m->buffers[i - m->nparams].t;
        for (size_t k = 0; k < t->numel; k++) t->data[k] = (float)(_Float16)t->data[k];
    }
#else
    (void)m; /* no fp16 type on this compiler: the weights stay as built */
#endif
}

int train_core_init(TrainCore *c, Model *m, const Hyp *hyp, OptimKind kind, LrShape shape, int epochs, int batch,
                    int nbs, long nb) {
    memset(c, 0, sizeof *c);
    c->model = m;
    c->hyp = *hyp;
    c->hyp.text = NULL; /* not owned */
    c->nb = nb;
    const float hw[3][3] = {{1.f}, {0.25f, 1.f}, {0.25f, 0.25f, 1.f}};
    if (m->head.nheads < 1 || m->head.nheads > 3) return gelan_error("train: %d detect heads", m->head.nheads);
    memcpy(c->head_weights, hw[m->head.nheads - 1], sizeof c->head_weights);
    c->oparams = calloc((size_t)m->nparams, sizeof *c->oparams);
    if (!c->oparams) return gelan_error("train: out of memory");
    for (int i = 0; i < m->nparams; i++)
        c->oparams[c->noparams++] = (OptimParam){
            .name = m->params[i].name, .param = m->params[i].t, .group = param_group_of(m->params[i].kind)};
    /* optim/ has the official nbs = 64 built in; another nominal batch is the
     * same arithmetic with the batch scaled: accumulate = round(nbs / batch),
     * decay x batch * accumulate / nbs */
    if (nbs < 1) return gelan_error("train: nominal batch %d must be >= 1", nbs);
    const int acc_batch = (int)lround((double)batch * OPTIM_NOMINAL_BATCH / nbs);
    const double wd = optim_scaled_weight_decay(hyp->optim.weight_decay, acc_batch > 0 ? acc_batch : 1);
    OptimConfig oc = optim_config(kind, hyp->optim.lr0, hyp->optim.momentum, wd);
    EmaBuffer *eb = calloc((size_t)(m->nbuffers ? m->nbuffers : 1), sizeof *eb);
    if (!eb) return gelan_error("train: out of memory");
    for (int i = 0; i < m->nbuffers; i++) eb[i] = (EmaBuffer){m->buffers[i].name, m->buffers[i].t};
    int rc = (c->optim = optim_new(&oc, c->oparams, c->noparams)) ? 0 : -1;
    if (!rc) rc = (c->ema = ema_new(c->oparams, c->noparams, eb, m->nbuffers, 0.9999, 2000)) ? 0 : -1;
    free(eb);
    if (!rc) rc = schedule_init(&c->sched, &hyp->optim, shape, epochs, nb);
    if (!rc) rc = (c->tape = tape_new()) ? 0 : -1;
    accumulator_init(&c->acc, acc_batch > 0 ? acc_batch : 1);
    return rc;
}

void train_core_free(TrainCore *c) {
    optim_free(c->optim);
    ema_free(c->ema);
    tape_free(c->tape);
    free(c->oparams);
    free(c->has_grad);
    memset(c, 0, sizeof *c);
}

/* ---- data-parallel pieces (train/dist.h) --------------------------------------------- */

int train_core_set_dist(TrainCore *c, bool sync_bn, long check_every) {
    if (dist_size() == 1) return 0;
    if (!(c->has_grad = calloc((size_t)c->noparams + 1, sizeof *c->has_grad))) return gelan_error("out of memory");
    c->dist = true, c->sync_bn = sync_bn, c->dist_check = check_every;
    return 0;
}

typedef struct {
    Tensor **ts;
    int n;
} TensorList;

static int add_tensor(void *ctx, const char *name, Tensor *t) {
    (void)name;
    TensorList *l = ctx;
    l->ts[l->n++] = t;
    return 0;
}

/* --qat: the observer state (qat.*), which, like the BN running buffers, each rank
 * updates from its own shard; appended to ts[*n...]. */
static void add_qat_state(Model *m, Tensor **ts, int *n) {
    if (!model_qat_enabled(m)) return;
    TensorList l = {ts, *n};
    model_qat_foreach(m, add_tensor, &l);
    *n = l.n;
}

/* The tensors all ranks must hold alike (malloc'd array): parameters, buffers, EMA,
 * optimizer state and QAT observers. */
static Tensor **replicated_tensors(const TrainCore *c, int *n) {
    Model *m = c->model;
    const Optimizer *o = c->optim;
    int cap = m->nparams + m->nbuffers + c->ema->n + 4 * o->n + model_qat_state_count(m), k = 0;
    Tensor **ts = malloc(sizeof *ts * (size_t)(cap + 1));
    if (!ts) return NULL;
    add_qat_state(m, ts, &k);
    for (int i = 0; i < m->nparams; i++) ts[k++] = m->params[i].t;
    for (int i = 0; i < m->nbuffers; i++) ts[k++] = m->buffers[i].t;
    for (int i = 0; i < c->ema->n; i++) ts[k++] = c->ema->ema[i];
    for (int i = 0; i < o->n; i++) {
        for (int j = 0; j < 3; j++)
            if (o->state[i].buf[j]) ts[k++] = o->state[i].buf[j];
        if (o->state[i].step) ts[k++] = o->state[i].step;
    }
    *n = k;
    return ts;
}

int train_core_check_replicas(TrainCore *c, const char *what) {
    if (!c->dist) return 0;
    int n;
    Tensor **ts = replicated_tensors(c, &n);
    if (!ts) return gelan_error("out of memory");
    int rc = dist_check_same(ts, n, what);
    free(ts);
    return rc;
}

/* Before an optimizer step: the gradients summed over the ranks (a parameter has one
 * where any rank's backward reached it, as in one process over the whole batch), and
 * rank 0's BN running buffers (and QAT observers) everywhere. */
static int dist_before_step(TrainCore *c) {
    Model *m = c->model;
    for (int k = 0; k < c->noparams; k++) c->has_grad[k] = c->oparams[k].param->grad != NULL;
    if (dist_sum_f64(c->has_grad, (size_t)c->noparams, "which parameters have gradients")) return -1;
    Tensor **ts = malloc(sizeof *ts * (size_t)(c->noparams + m->nbuffers + model_qat_state_count(m) + 1));
    if (!ts) return gelan_error("out of memory");
    int rc = 0;
    for (int k = 0; k < c->noparams && !rc; k++) {
        ts[k] = c->oparams[k].param;
        if (c->has_grad[k] > 0 && !tensor_grad(ts[k], &c->tape->arena)) rc = gelan_error("out of memory");
    }
    if (!rc) rc = dist_sum_grads(ts, c->noparams, 0);
    int nb = 0;
    for (int k = 0; k < m->nbuffers; k++) ts[nb++] = m->buffers[k].t;
    add_qat_state(m, ts, &nb);
    if (!rc) rc = dist_bcast_tensors(ts, nb, "BN running buffers");
    free(ts);
    return rc;
}

int train_core_step_shard(TrainCore *c, Tensor *images, const Targets *targets, int batch_n, int epoch, long i,
                          LossItems *items, int *instances) {
    Model *m = c->model;
    const long ni = i + c->nb * (long)epoch;
    const int n = images ? images->shape[0] : 0;
    if (!c->dist && (!images || n != batch_n))
        return gelan_error("train: a shard of %d images of %d needs data-parallel training", n, batch_n);
    /* a batch of fewer images than ranks is whole on rank 0 (loader_shard_range): no
       sums inside its forward and backward then */
    const bool split = c->dist && batch_n >= dist_size();
    schedule_apply(&c->sched, c->optim, epoch, i);
    LossItems it = {0};
    int rc = 0;
    if (n > 0) {
        tape_set_grad_enabled(c->tape, true);
        if (split && c->sync_bn) batchnorm2d_set_sync(dist_bn_sum, NULL);
        ModelOutput out;
        rc = model_forward(m, c->tape, images, true, &out);
        Tensor *maps[DETECT_MAX_HEADS * DETECT_MAX_LEVELS];
        for (int h = 0; !rc && h < out.nheads; h++)
            for (int l = 0; l < out.nl; l++) maps[h * out.nl + l] = out.maps[h][l];
        /* every shard normalised as the whole batch: the gradients of the shards sum to its gradient */
        LossShard shard = {.batch = batch_n, .reduce_tss = split ? dist_tss_sum : NULL};
        Tensor *loss = rc ? NULL
                          : yolo_loss_shard(c->tape, maps, out.nheads, out.nl, c->head_weights, m->head.strides,
                                            targets, &c->hyp.loss, &shard, &it);
        rc = loss ? tape_backward(c->tape, loss) : -1;
        batchnorm2d_set_sync(NULL, NULL);
    }
    if (!rc && c->dist) {
        double v[5] = {it.box, it.cls, it.dfl, it.total, instances ? *instances : 0};
        rc = dist_sum_f64(v, 5, "loss items");
        it = (LossItems){.box = (float)v[0], .cls = (float)v[1], .dfl = (float)v[2], .total = (float)v[3]};
        if (instances) *instances = (int)v[4];
    }
    if (!rc && accumulator_should_step(&c->acc, ni, c->sched.nw)) {
        if (c->dist) rc = dist_before_step(c);
        if (!rc) rc = clip_grad_norm(c->oparams, c->noparams, 10.0, NULL);
        if (!rc) rc = optim_step(c->optim);
        optim_zero_grad(c->optim);
        ema_update(c->ema);
        c->steps++;
        if (!rc && c->dist_check > 0 && c->steps % c->dist_check == 0)
            rc = train_core_check_replicas(c, "--dist-check");
    }
    if (items) *items = it;
    tape_reset(c->tape);
    if (rc) gelan_error_prefix("train: epoch %d iteration %ld", epoch, i);
    return rc;
}

int train_core_step(TrainCore *c, Tensor *images, const Targets *targets, int epoch, long i, LossItems *items) {
    return train_core_step_shard(c, images, targets, images ? images->shape[0] : 0, epoch, i, items, NULL);
}

/* ---- options, run directory, results ------------------------------------------------ */

void train_options_default(TrainOptions *o) {
    *o = (TrainOptions){.project = "runs",
                        .name = "exp",
                        .epochs = 100,
                        .batch = 16,
                        .img = 640,
                        .workers = 2,
                        .close_mosaic = 15,
                        .seed = 0,
                        .nbs = 64,
                        .optimizer = OPTIM_SGD,
                        .lr_shape = LR_LINEAR,
                        .fp16_init = true};
}

int trainer_close_mosaic_epoch(int epochs, int close_mosaic) {
    if (close_mosaic <= 0) return epochs;
    if (close_mosaic >= epochs) close_mosaic = epochs / 2;
    return epochs - close_mosaic;
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int mkdirs(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (!is_dir(buf) && mkdir(buf, 0777) && errno != EEXIST)
            return gelan_error("cannot create %s (%s)", buf, strerror(errno));
        *p = '/';
    }
    if (!is_dir(buf) && mkdir(buf, 0777) && errno != EEXIST)
        return gelan_error("cannot create %s (%s)", buf, strerror(errno));
    return 0;
}

/* runs/NAME; as the official increment_path: NAME2, NAME3, ... when taken.
 * Created later (mkdirs), once the config and the data set have been read. */
static int run_dir(const TrainOptions *o, char *dir, size_t len) {
    snprintf(dir, len, "%s/%s", o->project, o->name);
    if (o->resume) {
        if (!is_dir(dir)) return gelan_error("--resume: %s does not exist", dir);
        return 0;
    }
    for (int k = 2; !o->exist_ok && is_dir(dir); k++) snprintf(dir, len, "%s/%s%d", o->project, o->name, k);
    return 0;
}

static const char *const CSV_COLS[] = {
    "epoch",          "train/box_loss",  "train/cls_loss",       "train/dfl_loss", "metrics/precision",
    "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "lr/pg0",         "lr/pg1",
    "lr/pg2"};
#define N_CSV_COLS ((int)(sizeof CSV_COLS / sizeof CSV_COLS[0]))

static int csv_append(const char *path, const TrainEpochInfo *e, bool header) {
    FILE *f = fopen(path, header ? "w" : "a");
    if (!f) return gelan_error("cannot write %s (%s)", path, strerror(errno));
    if (header)
        for (int c = 0; c < N_CSV_COLS; c++) fprintf(f, "%s%s", CSV_COLS[c], c + 1 < N_CSV_COLS ? "," : "\n");
    const MapResult *v = e->val;
    /* lr/pg0..2 as the official logs param_groups 0, 1, 2: biases, BN weights, weights */
    fprintf(f, "%d,%.5g,%.5g,%.5g,%.5g,%.5g,%.5g,%.5g,%.5g,%.5g,%.5g\n", e->epoch, e->mean.box, e->mean.cls,
            e->mean.dfl, v ? v->mp : 0.0, v ? v->mr : 0.0, v ? v->map50 : 0.0, v ? v->map50_95 : 0.0, e->lr[PARAM_BIAS],
            e->lr[PARAM_BN_WEIGHT], e->lr[PARAM_WEIGHT_DECAY]);
    int bad = ferror(f);
    if (fclose(f) || bad) return gelan_error("writing %s failed", path);
    return 0;
}

/* ---- the options a checkpoint carries for --resume ---------------------------------- */

static const char *const LR_NAMES[] = {"linear", "cosine", "flat-cosine", "fixed"};

static char *options_json(const TrainOptions *o, const char *data) {
    char *d = json_quote(data ? data : ""), *n = json_quote(o->name ? o->name : "");
    char *p = json_quote(o->project ? o->project : "");
    size_t len = 1024 + (d ? strlen(d) : 0) + (n ? strlen(n) : 0) + (p ? strlen(p) : 0);
    char *s = d && n && p ? malloc(len) : NULL;
    if (s)
        snprintf(s, len,
                 "{\"data\": %s, \"project\": %s, \"name\": %s, \"epochs\": %d, \"batch\": %d, \"img\": %d, "
                 "\"nbs\": %d, \"workers\": %d, \"close_mosaic\": %d, \"seed\": %llu, \"optimizer\": \"%s\", \"lr\": "
                 "\"%s\", "
                 "\"noval\": %s, \"fp16_init\": %s, \"max_batches\": %ld}",
                 d, p, n, o->epochs, o->batch, o->img, o->nbs, o->workers, o->close_mosaic, (unsigned long long)o->seed,
                 o->optimizer == OPTIM_ADAMW ? "AdamW" : "SGD", LR_NAMES[o->lr_shape], o->noval ? "true" : "false",
                 o->fp16_init ? "true" : "false", o->max_batches);
    free(d), free(n), free(p);
    return s;
}

static int json_int(const JsonValue *v, const char *key, long *out) {
    const JsonValue *x = json_get(v, key);
    if (!x || x->type != JSON_NUMBER || !x->is_int) return gelan_error("checkpoint options: %s missing", key);
    *out = (long)x->integer;
    return 0;
}

/* Restores the run options from a checkpoint's `opt`; strings point into
 * *keep (freed by the caller). */
static int options_from_json(const char *text, TrainOptions *o, JsonValue **keep) {
    JsonValue *v = json_parse(text, strlen(text));
    if (!v) return -1;
    *keep = v;
    long epochs = 0, batch = 0, img = 0, workers = 0, cm = 0, seed = 0, mb = 0, nbs = 64;
    const JsonValue *data = json_get(v, "data"), *opt = json_get(v, "optimizer"), *lr = json_get(v, "lr");
    const JsonValue *noval = json_get(v, "noval"), *f16 = json_get(v, "fp16_init");
    if (json_int(v, "epochs", &epochs) || json_int(v, "batch", &batch) || json_int(v, "img", &img) ||
        json_int(v, "workers", &workers) || json_int(v, "close_mosaic", &cm) || json_int(v, "seed", &seed))
        return -1;
    json_int(v, "max_batches", &mb);
    json_int(v, "nbs", &nbs);
    o->nbs = (int)nbs;
    if (!data || data->type != JSON_STRING || !opt || opt->type != JSON_STRING || !lr || lr->type != JSON_STRING)
        return gelan_error("checkpoint options: data, optimizer or lr missing");
    o->data = data->str;
    o->epochs = (int)epochs, o->batch = (int)batch, o->img = (int)img, o->workers = (int)workers;
    o->close_mosaic = (int)cm, o->seed = (uint64_t)seed, o->max_batches = mb;
    o->optimizer = !strcmp(opt->str, "AdamW") ? OPTIM_ADAMW : OPTIM_SGD;
    o->lr_shape = LR_LINEAR;
    for (int k = 0; k < 4; k++)
        if (!strcmp(lr->str, LR_NAMES[k])) o->lr_shape = (LrShape)k;
    o->noval = noval && noval->type == JSON_BOOL && noval->boolean;
    o->fp16_init = !f16 || (f16->type == JSON_BOOL && f16->boolean);
    return 0;
}

/* ---- the run --------------------------------------------------------------------------- */

typedef struct {
    TrainOptions o;
    TrainCallbacks cb;
    char dir[1024], last[1100], best[1100], csv[1100], svg[1100];
    Hyp hyp;
    DataConfig *dcfg;
    Dataset *train, *val;
    Loader *tl, *vl;
    Model *model, *eval;
    TrainCore core;
    char *names_json, *opt_json, *hyp_yaml;
    JsonValue *resume_opt; /* strings of o when resuming */
    int start_epoch;
    double best_fitness;
    QatOptions qo; /* when o.qat */
    char *qat_buf; /* o.qat_exclude split at commas (qo.exclude points into it) */
    const char **qat_tokens;
    char *qat_json;        /* metadata `qat`: the options --resume rebuilds */
    JsonValue *resume_qat; /* the checkpoint's `qat` when resuming */
} Run;

static void run_free(Run *r) {
    train_core_free(&r->core);
    loader_free(r->tl);
    loader_free(r->vl);
    dataset_free(r->train);
    dataset_free(r->val);
    data_config_free(r->dcfg);
    model_free(r->model);
    model_free(r->eval);
    hyp_free(&r->hyp);
    free(r->names_json);
    free(r->opt_json);
    free(r->hyp_yaml);
    json_free(r->resume_opt);
    free(r->qat_buf);
    free(r->qat_tokens);
    free(r->qat_json);
    json_free(r->resume_qat);
}

/* Copies the EMA (parameters then buffers, the order train_core_init gave
 * it) into the evaluation model: the official validates ema.ema. */
static void load_ema_into(const ModelEMA *e, Model *eval) {
    for (int i = 0; i < eval->nparams + eval->nbuffers && i < e->n; i++) {
        Tensor *t = i < eval->nparams ? eval->params[i].t : eval->buffers[i - eval->nparams].t;
        memcpy(t->data, e->ema[i]->data, t->numel * sizeof(float));
    }
}

/* The image size as check_img_size: a multiple of the grid size
 * gs = max(largest stride, 32), at least 2 gs. */
static int grid_size(const Model *m) {
    float s = 32;
    for (int l = 0; l < m->head.nl; l++)
        if (m->head.strides[l] > s) s = m->head.strides[l];
    return (int)s;
}

/* --resume: the options, hyp and data of runs/NAME/last.safetensors. */
static int resume_options(Run *r, Checkpoint **ck) {
    if (!(*ck = ckpt_open(r->last))) return -1;
    if (!ckpt_is_training(*ck)) return gelan_error("%s is not a training checkpoint (format %s)", r->last, CKPT_FORMAT);
    const char *opt = ckpt_meta(*ck, "opt");
    if (!opt) return gelan_error("%s carries no training options (`opt`)", r->last);
    const TrainOptions keep = r->o;
    if (options_from_json(opt, &r->o, &r->resume_opt)) {
        gelan_error_prefix("%s", r->last);
        return -1;
    }
    /* what only this process decides */
    r->o.resume = true, r->o.project = keep.project, r->o.name = keep.name, r->o.max_iters = keep.max_iters;
    r->o.sync_bn = keep.sync_bn, r->o.dist_check = keep.dist_check; /* free to change with the number of ranks */
    if (keep.workers > 0) r->o.workers = keep.workers;
    const char *hyp = ckpt_meta(*ck, "hyp");
    if (hyp) return hyp_parse(&r->hyp, hyp, r->last);
    hyp_default(&r->hyp);
    return 0;
}

static int open_data(Run *r) {
    if (!(r->dcfg = data_config_load(r->o.data))) return -1;
    if (!(r->train = dataset_open(r->dcfg, SPLIT_TRAIN))) return -1;
    if (!(r->val = dataset_open(r->dcfg, SPLIT_VAL))) return -1;
    r->names_json = json_string_list((const char *const *)r->train->names, (size_t)r->train->nc);
    return r->names_json ? 0 : gelan_error("out of memory");
}

static int build_model(Run *r, Checkpoint *resume, int *transferred, int *total) {
    ModelOptions mo = {.nc = r->train->nc, .seed = r->o.seed};
    if (resume) {
        r->model = ckpt_build_model(resume, NULL, &mo);
    } else if (r->o.weights) {
        Checkpoint *w = ckpt_open(r->o.weights);
        if (!w) return -1;
        r->model = ckpt_build_model(w, r->o.cfg, &mo);
        /* intersect_dicts: what matches by name and shape (a head for another nc does not) */
        int rc = r->model ? ckpt_transfer(w, r->model, transferred, total) : -1;
        ckpt_close(w);
        if (rc) return -1;
    } else {
        if (!r->o.cfg) return gelan_error("give a model config (--cfg) or weights to start from (--weights)");
        r->model = model_build_file(r->o.cfg, &mo);
    }
    if (!r->model) return -1;
    ModelOptions eo = {.nc = r->model->nc, .seed = r->o.seed};
    if (!(r->eval = model_build(r->model->yaml, r->model->file, &eo))) return -1;
    return 0;
}

static int open_loaders(Run *r) {
    LoaderOptions lo;
    loader_options_default(&lo, true);
    lo.img_size = r->o.img, lo.batch = r->o.batch, lo.workers = r->o.workers, lo.seed = r->o.seed;
    lo.hyp = r->hyp.aug;
    lo.shard = dist_rank(), lo.shards = dist_size(); /* data-parallel: this rank's part of every batch */
    if (!(r->tl = loader_new(r->train, &lo))) return -1;
    LoaderOptions vo;
    loader_options_default(&vo, false);
    /* the official validates with batch_size * 2 */
    vo.img_size = r->o.img, vo.batch = 2 * r->o.batch, vo.workers = r->o.workers, vo.stride = grid_size(r->model);
    return (r->vl = loader_new(r->val, &vo)) ? 0 : -1;
}

static int save_checkpoint(Run *r, const char *path, int epoch) {
    dist_poll(); /* data-parallel: rank 0 writes alone; the waiting ranks see it alive */
    char los[32], seed[32];
    snprintf(los, sizeof los, "%ld", r->core.acc.last_opt_step);
    snprintf(seed, sizeof seed, "{\"seed\": %llu}", (unsigned long long)r->o.seed);
    char img[16], batch[16];
    snprintf(img, sizeof img, "%d", r->o.img);
    snprintf(batch, sizeof batch, "%d", r->o.batch);
    CkptMeta extra[] = {{"opt", r->opt_json}, {"last_opt_step", los}, {"rng", seed},       {"data", r->o.data},
                        {"img", img},         {"batch", batch},       {"qat", r->qat_json}};
    CkptContents c = {.model = r->model,
                      .ema = r->core.ema,
                      .optim = r->core.optim,
                      .hyp_yaml = r->hyp_yaml,
                      .names_json = r->names_json,
                      .epoch = epoch,
                      .best_fitness = r->best_fitness,
                      .extra = extra,
                      .n_extra = (int)(sizeof extra / sizeof extra[0]) - (r->qat_json ? 0 : 1)};
    return ckpt_save(path, &c);
}

/* --qat: fake quant on the training and the evaluation model, after the
 * float weights are final (--weights, fp16 rounding); a resumed run takes its
 * options from the checkpoint's `qat` metadata and its observers from qat.*. */
static int qat_setup(Run *r, Checkpoint *resume) {
    long fbn = -1, fobs = -1;
    double avg = QAT_AVERAGING_CONSTANT;
    if (resume) {
        const char *meta = ckpt_meta(resume, "qat");
        r->o.qat = meta != NULL;
        if (meta) {
            if (!(r->resume_qat = json_parse(meta, strlen(meta)))) return -1;
            const JsonValue *ex = json_get(r->resume_qat, "exclude"), *ac = json_get(r->resume_qat, "averaging");
            if (!ex || ex->type != JSON_STRING || !ac || ac->type != JSON_NUMBER ||
                json_int(r->resume_qat, "freeze_bn_epoch", &fbn) ||
                json_int(r->resume_qat, "freeze_observer_epoch", &fobs))
                return gelan_error("%s: bad `qat` metadata %s", r->last, meta);
            r->o.qat_exclude = ex->str;
            avg = ac->number;
        }
    }
    if (!r->o.qat) return 0;
    qat_options_default(&r->qo, r->o.epochs);
    if (resume) {
        r->qo.freeze_bn_epoch = (int)fbn, r->qo.freeze_observer_epoch = (int)fobs;
        r->qo.averaging_constant = (float)avg;
    }
    const char *ex = r->o.qat_exclude ? r->o.qat_exclude : "";
    size_t n = strlen(ex);
    if (!(r->qat_buf = strdup(ex)) || !(r->qat_tokens = calloc(n / 2 + 1, sizeof *r->qat_tokens)))
        return gelan_error("out of memory");
    char *save = NULL;
    for (char *tok = strtok_r(r->qat_buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        r->qat_tokens[r->qo.nexclude++] = tok;
    r->qo.exclude = r->qat_tokens;
    if (model_qat_enable(r->model, &r->qo) || model_qat_enable(r->eval, &r->qo)) {
        gelan_error_prefix("--qat");
        return -1;
    }
    if (resume && ckpt_load_qat(resume, r->model)) return -1;
    char *q = json_quote(ex);
    size_t len = (q ? strlen(q) : 0) + 160;
    if (q && (r->qat_json = malloc(len)))
        snprintf(r->qat_json, len,
                 "{\"exclude\": %s, \"freeze_bn_epoch\": %d, \"freeze_observer_epoch\": %d, \"averaging\": %.9g}", q,
                 r->qo.freeze_bn_epoch, r->qo.freeze_observer_epoch, (double)r->qo.averaging_constant);
    free(q);
    return r->qat_json ? 0 : gelan_error("out of memory");
}

static int setup(Run *r, TrainStartInfo *si) {
    Checkpoint *ck = NULL;
    int rc = run_dir(&r->o, r->dir, sizeof r->dir);
    snprintf(r->last, sizeof r->last, "%s/last.safetensors", r->dir);
    snprintf(r->best, sizeof r->best, "%s/best.safetensors", r->dir);
    snprintf(r->csv, sizeof r->csv, "%s/results.csv", r->dir);
    snprintf(r->svg, sizeof r->svg, "%s/results.svg", r->dir);
    if (!rc) rc = r->o.resume ? resume_options(r, &ck) : r->o.hyp ? hyp_load(&r->hyp, r->o.hyp) : 0;
    if (!rc && !r->o.resume && !r->o.hyp) hyp_default(&r->hyp);
    if (!rc && !r->o.data) rc = gelan_error("give a data set (--data)");
    if (!rc && (r->o.epochs < 1 || r->o.batch < 1))
        rc = gelan_error("epochs (%d) and batch (%d) must be >= 1", r->o.epochs, r->o.batch);
    if (!rc) rc = open_data(r);
    if (!rc) rc = build_model(r, ck, &si->transferred, &si->transfer_total);
    if (!rc) {
        const int gs = grid_size(r->model);
        int img = (r->o.img + gs - 1) / gs * gs;
        if (img < 2 * gs) img = 2 * gs;
        if (img != r->o.img)
            gelan_warn("--img %d must be a multiple of max stride %d, updating to %d", r->o.img, gs, img);
        r->o.img = img;
    }
    if (!rc) rc = open_loaders(r);
    if (!rc && !r->o.resume && dist_rank() == 0) rc = mkdirs(r->dir); /* rank 0 writes the run */
    long nb = rc ? 0 : loader_num_batches(r->tl);
    if (r->o.max_batches > 0 && nb > r->o.max_batches) nb = r->o.max_batches;
    if (!rc)
        rc = train_core_init(&r->core, r->model, &r->hyp, r->o.optimizer, r->o.lr_shape, r->o.epochs, r->o.batch,
                             r->o.nbs, nb);
    if (!rc && ck) {
        const char *ep = ckpt_meta(ck, "epoch"), *bf = ckpt_meta(ck, "best_fitness");
        const char *los = ckpt_meta(ck, "last_opt_step");
        rc = ckpt_load_weights(ck, r->model, CKPT_MODEL);
        if (!rc) rc = ckpt_load_ema(ck, r->core.ema);
        if (!rc) rc = ckpt_load_optim(ck, r->core.optim);
        if (!rc && (!ep || !bf)) rc = gelan_error("%s has no epoch or best_fitness", r->last);
        if (!rc) {
            r->start_epoch = atoi(ep) + 1;
            r->best_fitness = strtod(bf, NULL);
            /* the official restarts last_opt_step at -1; keeping it makes a
               resumed run step exactly where an uninterrupted one does */
            r->core.acc.last_opt_step = los ? atol(los) : -1;
            if (r->start_epoch >= r->o.epochs)
                rc = gelan_error("%s: training to %d epochs is finished, nothing to resume", r->last, r->o.epochs);
        }
    } else if (!rc && r->o.fp16_init) {
        round_to_fp16(r->model);
    }
    if (!rc) rc = qat_setup(r, ck);
    ckpt_close(ck);
    if (!rc)
        rc = (r->opt_json = options_json(&r->o, r->o.data)) && (r->hyp_yaml = hyp_to_yaml(&r->hyp))
                 ? 0
                 : gelan_error("out of memory");
    if (rc) return -1;
    *si = (TrainStartInfo){.dir = r->dir,
                           .model = r->model->name,
                           .nheads = r->model->head.nheads,
                           .nparams = model_num_params(r->model),
                           .train_images = r->train->n,
                           .val_images = r->val->n,
                           .nc = r->model->nc,
                           .nb = nb,
                           .nw = r->core.sched.nw,
                           .accumulate = accumulate_steps(r->core.acc.batch_size),
                           .start_epoch = r->start_epoch,
                           .epochs = r->o.epochs,
                           .transferred = si->transferred,
                           .transfer_total = si->transfer_total,
                           .resumed = r->o.resume};
    return 0;
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void val_progress(void *ctx, long done, long total) {
    const Run *r = ctx;
    dist_poll(); /* rank 0 validates alone: tells waiting ranks it is alive */
    if (r->cb.on_val) r->cb.on_val(r->cb.ctx, &(TrainValInfo){done, total});
}

/* One epoch of iterations; *stopped when max_iters ran out. */
static int train_epoch(Run *r, int epoch, LossItems *mean, long *iters, bool *stopped) {
    TrainCore *c = &r->core;
    *mean = (LossItems){0};
    const int close = trainer_close_mosaic_epoch(r->o.epochs, r->o.close_mosaic);
    loader_set_mosaic(r->tl, epoch < close);
    if (loader_start_epoch(r->tl, epoch)) return -1;
    if (r->cb.on_epoch_start) r->cb.on_epoch_start(r->cb.ctx, epoch, r->o.epochs, c->nb);
    optim_zero_grad(c->optim);
    for (long i = 0; i < c->nb; i++) {
        const Batch *b;
        int got = loader_next(r->tl, &b);
        if (got <= 0) return got < 0 ? -1 : gelan_error("train: the loader ended after %ld of %ld batches", i, c->nb);
        LossItems it;
        int instances = b->targets.n;
        if (dist_size() > 1) { /* named in a failure message */
            char where[64];
            snprintf(where, sizeof where, "epoch %d iteration %ld", epoch, i);
            dist_set_context(where);
        }
        if (train_core_step_shard(c, b->images, &b->targets, b->batch_n, epoch, i, &it, &instances)) return -1;
        /* mloss = (mloss * i + loss_items) / (i + 1) */
        mean->box = (mean->box * i + it.box) / (i + 1);
        mean->cls = (mean->cls * i + it.cls) / (i + 1);
        mean->dfl = (mean->dfl * i + it.dfl) / (i + 1);
        if (r->cb.on_batch)
            r->cb.on_batch(r->cb.ctx, &(TrainBatchInfo){epoch, r->o.epochs, i, c->nb, *mean, instances, b->w});
        if (r->o.max_iters > 0 && ++*iters >= r->o.max_iters) {
            *stopped = true;
            return 0;
        }
    }
    return 0;
}

/* Data-parallel start, on every rank after setup: all set up (else the failing rank's
 * message), rank 0's run directory, weights and EMA everywhere (as DDP broadcasts the
 * module), then a check that every rank holds the same state (a resume reads the
 * checkpoint on every rank: it must be the same file). */
static int dist_start(Run *r, int rc) {
    if (dist_size() == 1) return rc;
    dist_set_context("start");
    if (dist_agree(rc, "setup")) return -1;
    if (dist_bcast(r->dir, sizeof r->dir, "run directory")) return -1;
    if (train_core_set_dist(&r->core, r->o.sync_bn, r->o.dist_check)) return -1;
    const Model *m = r->model;
    const int cap = m->nparams + m->nbuffers + r->core.ema->n + model_qat_state_count(m);
    Tensor **ts = malloc(sizeof *ts * (size_t)(cap + 1));
    if (!ts) return gelan_error("out of memory");
    int n = 0;
    add_qat_state(r->model, ts, &n);
    for (int i = 0; i < m->nparams; i++) ts[n++] = m->params[i].t;
    for (int i = 0; i < m->nbuffers; i++) ts[n++] = m->buffers[i].t;
    for (int i = 0; i < r->core.ema->n; i++) ts[n++] = r->core.ema->ema[i];
    rc = dist_bcast_tensors(ts, n, "weights from rank 0");
    free(ts);
    return rc ? rc : train_core_check_replicas(&r->core, "start (same checkpoint on every rank?)");
}

int train_run(const TrainOptions *opts, const TrainCallbacks *cb, TrainResult *res) {
    memset(res, 0, sizeof *res);
    Run r;
    memset(&r, 0, sizeof r);
    r.o = *opts;
    if (cb) r.cb = *cb;
    TrainStartInfo si = {0};
    int rc = dist_start(&r, setup(&r, &si));
    si.ranks = dist_size(), si.sync_bn = r.o.sync_bn && dist_size() > 1;
    const bool root = dist_rank() == 0; /* validates, writes the run and reports */
    snprintf(res->dir, sizeof res->dir, "%s", r.dir);
    if (!rc && r.cb.on_start) r.cb.on_start(r.cb.ctx, &si);
    long iters = 0;
    for (int epoch = r.start_epoch; !rc && epoch < r.o.epochs; epoch++) {
        TrainEpochInfo e = {.epoch = epoch, .epochs = r.o.epochs, .last_path = r.last, .best_path = r.best};
        double t0 = seconds_now();
        if (r.o.qat) model_qat_apply_epoch(r.model, &r.qo, epoch);
        rc = train_epoch(&r, epoch, &e.mean, &iters, &res->stopped);
        if (rc || res->stopped) break;
        for (int g = 0; g < PARAM_GROUP_COUNT; g++) e.lr[g] = r.core.optim->group[g].lr;
        e.train_seconds = seconds_now() - t0;
        t0 = seconds_now();
        MapResult val = {0};
        const bool final = epoch + 1 == r.o.epochs;
        if (root && (!r.o.noval || final)) {
            ValRun vr = {.progress = val_progress, .ctx = &r};
            val_options_default(&vr.opt);
            load_ema_into(r.core.ema, r.eval);
            /* QAT: the EMA weights with the training model's observers, as fake quant */
            if (r.o.qat && (rc = model_qat_copy_state(r.eval, r.model))) break;
            rc = validate_dataset(r.eval, r.core.tape, r.vl, r.val, &vr, &val);
            if (rc) break;
            e.val = &val;
            e.fitness = map_fitness(&val);
        }
        e.val_seconds = seconds_now() - t0;
        if (e.fitness > r.best_fitness) r.best_fitness = e.fitness;
        e.best_fitness = r.best_fitness;
        e.best = r.best_fitness == e.fitness;
        if (root) rc = csv_append(r.csv, &e, epoch == 0 || access(r.csv, F_OK) != 0);
        if (!rc && root) rc = save_checkpoint(&r, r.last, epoch);
        if (!rc && root && e.best) rc = save_checkpoint(&r, r.best, epoch);
        if (!rc && root) rc = plot_results_csv(r.csv, r.svg, NULL);
        if (!rc && r.cb.on_epoch) r.cb.on_epoch(r.cb.ctx, &e);
        if (dist_size() > 1) /* the other ranks wait for rank 0's validation and checkpoints */
            rc = root ? dist_root_done(rc, "validation and checkpoints")
                      : dist_wait_root("rank 0's validation and checkpoints");
        res->epochs_done++;
        map_result_free(&res->last_val);
        res->last_val = val;
    }
    res->best_fitness = r.best_fitness;
    run_free(&r);
    return rc;
}
