/* Training checkpoints: a save/load round trip of weights, EMA and optimizer
 * state; atomic writes (a failed save leaves the previous file intact); val
 * and detect take the EMA weights; plain weight files; fine-tuning transfer. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "infer/infer.h"
#include "tensor/error.h"
#include "tensor/rng.h"
#include "tensor/safetensors.h"
#include "tests/testutil.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

static const char *TINY = "tests/configs/gelan-tiny.yaml";

static const char *tmp_path(const char *name) {
    static char bufs[4][256];
    static int next;
    char *b = bufs[next++ & 3];
    snprintf(b, sizeof bufs[0], "/tmp/gelan_test_ckpt_%ld_%s", (long)getpid(), name);
    return b;
}

/* A tiny model of nc classes after two training steps on random images, so
 * that weights, BN buffers, EMA and momentum buffers all hold non-trivial
 * values. */
static int trained_core(TrainCore *c, Model **m, uint64_t seed, int nc) {
    ModelOptions mo = {.nc = nc, .seed = seed};
    *m = model_build_file(TINY, &mo);
    if (!*m) return -1;
    Hyp h;
    hyp_default(&h);
    if (train_core_init(c, *m, &h, OPTIM_SGD, LR_LINEAR, 3, 2, 64, 4)) return -1;
    Tensor *x = tensor_new4(2, 3, 64, 64);
    if (!x) return -1;
    Rng r;
    rng_seed(&r, seed + 7);
    for (size_t i = 0; i < x->numel; i++) x->data[i] = rng_uniform(&r);
    const float rows[] = {0, 0, 0.5f, 0.5f, 0.4f, 0.3f, 1, 2, 0.3f, 0.6f, 0.2f, 0.25f};
    Targets tg = {2, rows};
    int rc = 0;
    for (long i = 0; !rc && i < 2; i++) rc = train_core_step(c, x, &tg, 0, i, NULL);
    tensor_free(x);
    return rc;
}

static int same_tensor(const Tensor *a, const Tensor *b) {
    return a->numel == b->numel && memcmp(a->data, b->data, a->numel * sizeof(float)) == 0;
}

static void test_round_trip(void) {
    TrainCore a, b;
    Model *ma = NULL, *mb = NULL;
    CU_ASSERT_OK(trained_core(&a, &ma, 1, 3));
    CU_ASSERT_OK(trained_core(&b, &mb, 2, 3)); /* other weights and state */
    if (!ma || !mb || !a.optim || !b.optim) goto done;
    CU_ASSERT(optim_state_count(a.optim) > 0);
    const char *path = tmp_path("rt.safetensors");
    CkptMeta extra[] = {{"rng", "{\"seed\": 5}"}};
    CkptContents c = {.model = ma,
                      .ema = a.ema,
                      .optim = a.optim,
                      .hyp_yaml = "lr0: 0.01\n",
                      .names_json = "[\"a\",\"b\",\"c\"]",
                      .epoch = 4,
                      .best_fitness = 0.123456789012345,
                      .extra = extra,
                      .n_extra = 1};
    CU_ASSERT_OK(ckpt_save(path, &c));
    Checkpoint *ck = ckpt_open(path);
    CU_ASSERT_NONNULL_OK(ck);
    if (!ck) goto done;
    CU_ASSERT(ckpt_is_training(ck));
    CU_ASSERT(ckpt_has_ema(ck));
    CU_ASSERT_STRING_EQUAL(ckpt_meta(ck, "epoch"), "4");
    CU_ASSERT_EQUAL(strtod(ckpt_meta(ck, "best_fitness"), NULL), 0.123456789012345);
    CU_ASSERT_STRING_EQUAL(ckpt_meta(ck, "hyp"), "lr0: 0.01\n");
    CU_ASSERT_STRING_EQUAL(ckpt_meta(ck, "rng"), "{\"seed\": 5}");
    CU_ASSERT_STRING_EQUAL(ckpt_meta(ck, "cfg"), ma->yaml);
    int nn = 0;
    char **names = names_from_json(ckpt_meta(ck, "names"), &nn);
    CU_ASSERT(names && nn == 3 && !strcmp(names[2], "c"));
    names_free(names, nn);
    CU_ASSERT_OK(ckpt_load_weights(ck, mb, CKPT_MODEL));
    CU_ASSERT_OK(ckpt_load_ema(ck, b.ema));
    CU_ASSERT_OK(ckpt_load_optim(ck, b.optim));
    ckpt_close(ck);
    int bad = 0;
    for (int i = 0; i < ma->nparams; i++) bad += !same_tensor(ma->params[i].t, mb->params[i].t);
    for (int i = 0; i < ma->nbuffers; i++) bad += !same_tensor(ma->buffers[i].t, mb->buffers[i].t);
    for (int i = 0; i < a.ema->n; i++) bad += !same_tensor(a.ema->ema[i], b.ema->ema[i]);
    for (int i = 0; i < a.optim->n; i++)
        if (a.optim->state[i].has_state)
            bad += !b.optim->state[i].has_state || !same_tensor(a.optim->state[i].buf[0], b.optim->state[i].buf[0]);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(a.ema->updates, b.ema->updates);
    remove(path);
done:
    train_core_free(&a);
    train_core_free(&b);
    model_free(ma);
    model_free(mb);
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    *n = b ? fread(b, 1, (size_t)len, f) : 0;
    fclose(f);
    return b;
}

/* The writer goes through PATH.tmp.<pid>: a directory of that name makes the
 * save fail after the whole file was prepared; the old file must stay. */
static void test_atomic_write(void) {
    TrainCore a;
    Model *m = NULL;
    CU_ASSERT_OK(trained_core(&a, &m, 3, 3));
    if (!m || !a.optim) goto done;
    const char *path = tmp_path("atomic.safetensors");
    CkptContents c = {.model = m, .ema = a.ema, .optim = a.optim, .epoch = 0};
    CU_ASSERT_OK(ckpt_save(path, &c));
    size_t n0 = 0, n1 = 0;
    unsigned char *before = read_all(path, &n0);
    char blocker[512];
    snprintf(blocker, sizeof blocker, "%s.tmp.%ld", path, (long)getpid());
    CU_ASSERT_EQUAL(mkdir(blocker, 0700), 0);
    m->params[0].t->data[0] += 1.f;
    c.epoch = 1;
    CU_ASSERT_EQUAL(ckpt_save(path, &c), -1);
    CU_ASSERT(strstr(gelan_last_error(), path) != NULL);
    unsigned char *after = read_all(path, &n1);
    CU_ASSERT(before && after && n0 == n1 && n0 > 0 && memcmp(before, after, n0) == 0);
    rmdir(blocker);
    Checkpoint *ck = ckpt_open(path);
    CU_ASSERT(ck && !strcmp(ckpt_meta(ck, "epoch"), "0"));
    ckpt_close(ck);
    free(before);
    free(after);
    remove(path);
done:
    train_core_free(&a);
    model_free(m);
}

/* val/detect evaluate the EMA of a checkpoint, and model.* of a plain file. */
static void test_eval_weights(void) {
    TrainCore a;
    Model *m = NULL, *e = NULL, *w = NULL;
    CU_ASSERT_OK(trained_core(&a, &m, 4, 3));
    if (!m || !a.optim) goto done;
    const char *ck = tmp_path("eval.safetensors"), *plain = tmp_path("plain.safetensors");
    CkptContents c = {.model = m, .ema = a.ema, .optim = a.optim};
    CU_ASSERT_OK(ckpt_save(ck, &c));
    CU_ASSERT_OK(model_save_weights(m, plain));
    e = ckpt_load_eval_model(ck, NULL, NULL);
    w = ckpt_load_eval_model(plain, NULL, NULL);
    CU_ASSERT_NONNULL_OK(e);
    CU_ASSERT_NONNULL_OK(w);
    if (!e || !w) goto done;
    CU_ASSERT_EQUAL(e->nc, 3);
    int ema_bad = 0, model_bad = 0, differ = 0;
    for (int i = 0; i < m->nparams; i++) {
        const Tensor *avg = ema_find(a.ema, m->params[i].name);
        ema_bad += !avg || !same_tensor(e->params[i].t, avg);
        model_bad += !same_tensor(w->params[i].t, m->params[i].t);
        differ += avg && !same_tensor(avg, m->params[i].t);
    }
    CU_ASSERT_EQUAL(ema_bad, 0);
    CU_ASSERT_EQUAL(model_bad, 0);
    CU_ASSERT(differ > 0); /* the EMA really is another set of weights */
    remove(ck);
    remove(plain);
done:
    model_free(e);
    model_free(w);
    train_core_free(&a);
    model_free(m);
}

/* A weights file without `cfg` (tools/pt2safetensors.py without --cfg) needs
 * a config; a model of another shape is refused without being changed. */
static void test_cfg_and_mismatch(void) {
    ModelOptions mo = {.nc = 3, .seed = 1}, mo5 = {.nc = 5, .seed = 9};
    Model *m = model_build_file(TINY, &mo), *m5 = model_build_file(TINY, &mo5);
    CU_ASSERT_NONNULL_OK(m);
    CU_ASSERT_NONNULL_OK(m5);
    if (!m || !m5) goto done;
    const char *path = tmp_path("nocfg.safetensors");
    StWriter *w = st_writer_new();
    for (int i = 0; i < m->nparams; i++)
        st_writer_add_f32(w, m->params[i].name, m->params[i].t->ndim, m->params[i].t->shape, m->params[i].t->data);
    for (int i = 0; i < m->nbuffers; i++)
        st_writer_add_f32(w, m->buffers[i].name, m->buffers[i].t->ndim, m->buffers[i].t->shape, m->buffers[i].t->data);
    CU_ASSERT_OK(st_writer_save(w, path));
    st_writer_free(w);
    Checkpoint *ck = ckpt_open(path);
    CU_ASSERT_NONNULL_OK(ck);
    if (!ck) goto done;
    CU_ASSERT(!ckpt_is_training(ck));
    CU_ASSERT_PTR_NULL(ckpt_build_model(ck, NULL, NULL));
    CU_ASSERT(strstr(gelan_last_error(), "--cfg") != NULL);
    Model *b = ckpt_build_model(ck, TINY, &mo);
    CU_ASSERT_NONNULL_OK(b);
    if (b) {
        CU_ASSERT_OK(ckpt_load_weights(ck, b, CKPT_MODEL));
        CU_ASSERT(same_tensor(b->params[b->nparams - 1].t, m->params[m->nparams - 1].t));
        /* no ema.* in the file */
        CU_ASSERT_EQUAL(ckpt_load_weights(ck, b, CKPT_EMA), -1);
    }
    model_free(b);
    /* 5 classes: the class convs do not fit; nothing is loaded */
    float before = m5->params[0].t->data[0];
    CU_ASSERT_EQUAL(ckpt_load_weights(ck, m5, CKPT_MODEL), -1);
    CU_ASSERT(strstr(gelan_last_error(), "another shape") != NULL);
    CU_ASSERT_EQUAL(m5->params[0].t->data[0], before);
    /* fine-tuning transfer (intersect_dicts): everything but the class outputs */
    int done = 0, total = 0;
    CU_ASSERT_OK(ckpt_transfer(ck, m5, &done, &total));
    CU_ASSERT(done > 0 && done < total);
    CU_ASSERT(same_tensor(m5->params[0].t, m->params[0].t));
    ckpt_close(ck);
    remove(path);
    /* a file with EMA weights: the transfer takes them, not the raw model.* ones */
    ModelOptions mo2 = {.nc = 3, .seed = 2};
    Model *e = model_build_file(TINY, &mo2), *into = model_build_file(TINY, &mo);
    CU_ASSERT_NONNULL_OK(e);
    CU_ASSERT_NONNULL_OK(into);
    if (e && into) {
        w = st_writer_new();
        for (int i = 0; i < m->nparams; i++) {
            char ema[256];
            snprintf(ema, sizeof ema, "ema.%s", m->params[i].name);
            const Tensor *t = m->params[i].t, *te = e->params[i].t;
            st_writer_add_f32(w, m->params[i].name, t->ndim, t->shape, t->data);
            st_writer_add_f32(w, ema, te->ndim, te->shape, te->data);
        }
        CU_ASSERT_OK(st_writer_save(w, path));
        st_writer_free(w);
        ck = ckpt_open(path);
        CU_ASSERT_NONNULL_OK(ck);
        if (ck) {
            CU_ASSERT_OK(ckpt_transfer(ck, into, &done, &total));
            CU_ASSERT_EQUAL(done, into->nparams);
            CU_ASSERT(same_tensor(into->params[0].t, e->params[0].t));
            CU_ASSERT(!same_tensor(into->params[0].t, m->params[0].t));
            ckpt_close(ck);
        }
        remove(path);
    }
    model_free(e);
    model_free(into);
done:
    model_free(m);
    model_free(m5);
}

/* The summary line of `gelan info` without the model's name (what follows "summary:"), or "". */
static const char *summary_of(const char *out) {
    const char *s = strstr(out, " summary: ");
    return s ? s : "";
}

/* A run on a data set whose class count is not its YAML's nc (gelan-tiny.yaml
 * says 3; the data set has 5) saves the data set's nc in the checkpoint, next
 * to the YAML text as written. Every loader builds the model with the
 * checkpoint's nc: in-process, and on the command line info (with and without
 * --cfg), convert, importance and prune, whose output must be the model of the
 * same YAML with nc: 5. */
static void test_nc_differs_from_yaml(void) {
    TrainCore a = {0};
    Model *m = NULL;
    CU_ASSERT_OK(trained_core(&a, &m, 5, 5));
    if (!m || !a.optim) goto done;
    const char *ck_path = tmp_path("nc5.safetensors"), *yaml5 = tmp_path("tiny-nc5.yaml");
    const char *infer = tmp_path("nc5-infer.safetensors"), *pruned = tmp_path("nc5-pruned.safetensors");
    CkptContents c = {.model = m, .ema = a.ema, .optim = a.optim, .names_json = "[\"a\",\"b\",\"c\",\"d\",\"e\"]"};
    CU_ASSERT_OK(ckpt_save(ck_path, &c));
    Checkpoint *ck = ckpt_open(ck_path);
    CU_ASSERT_NONNULL_OK(ck);
    if (!ck) goto done;
    CU_ASSERT(strstr(ckpt_meta(ck, "cfg"), "nc: 3") != NULL);
    bool ema = false;
    Model *l = ckpt_load_model(ck, NULL, NULL, true, &ema);
    CU_ASSERT_NONNULL_OK(l);
    if (l) {
        CU_ASSERT_EQUAL(l->nc, 5);
        CU_ASSERT(ema);
        const Tensor *avg = ema_find(a.ema, l->params[0].name);
        CU_ASSERT(avg && same_tensor(l->params[0].t, avg));
    }
    model_free(l);
    l = ckpt_load_model(ck, TINY, NULL, false, &ema); /* --cfg: the YAML file still says 3 */
    CU_ASSERT_NONNULL_OK(l);
    if (l) {
        CU_ASSERT_EQUAL(l->nc, 5);
        CU_ASSERT(!ema);
        CU_ASSERT(same_tensor(l->params[0].t, m->params[0].t));
    }
    model_free(l);
    ckpt_close(ck);
    l = ckpt_load_eval_model(ck_path, NULL, NULL); /* val, detect, quantize */
    CU_ASSERT_NONNULL_OK(l);
    if (l) CU_ASSERT_EQUAL(l->nc, 5);
    model_free(l);

    const char *gelan = gelan_bin_path();
    if (access(gelan, X_OK) != 0) {
        fprintf(stderr, "\n  no %s: command line skipped\n", gelan);
        goto done;
    }
    /* the same YAML with nc: 5, the model the checkpoint holds */
    char *text = read_text_file(TINY), *nc = text ? strstr(text, "nc: 3") : NULL;
    CU_ASSERT_PTR_NOT_NULL(nc);
    if (nc) nc[4] = '5';
    FILE *f = nc ? fopen(yaml5, "w") : NULL;
    if (f) fputs(text, f);
    CU_ASSERT(f && fclose(f) == 0);
    free(text);
    char cmd[2048], want[8192], got[8192];
    snprintf(cmd, sizeof cmd, "%s info %s", gelan, yaml5);
    CU_ASSERT(run_command_expect(cmd, 0, want, sizeof want));
    CU_ASSERT(strstr(want, "parameters") != NULL);
    snprintf(cmd, sizeof cmd, "%s info %s", gelan, ck_path);
    CU_ASSERT(run_command_expect(cmd, 0, got, sizeof got));
    CU_ASSERT_STRING_EQUAL(summary_of(got), summary_of(want));
    snprintf(cmd, sizeof cmd, "%s info %s --cfg %s", gelan, ck_path, TINY);
    CU_ASSERT(run_command_expect(cmd, 0, got, sizeof got));
    CU_ASSERT_STRING_EQUAL(summary_of(got), summary_of(want));
    snprintf(cmd, sizeof cmd, "%s convert --weights %s --out %s", gelan, ck_path, infer);
    CU_ASSERT(run_command_expect(cmd, 0, got, sizeof got));
    /* the inference model predicts [1, 4 + 5, anchors] and names the 5 classes */
    InferModel *im = infer_model_load(infer);
    CU_ASSERT_NONNULL_OK(im);
    static float image[3 * 64 * 64];
    InferShape os = {0};
    const float *y = im ? infer_model_run(im, image, 1, 3, 64, 64, &os) : NULL;
    CU_ASSERT_NONNULL_OK(y);
    CU_ASSERT(os.ndim == 3 && os.shape[1] == 4 + 5);
    if (im) CU_ASSERT_STRING_EQUAL(infer_model_class_name(im, 4), "e");
    infer_model_free(im);
    snprintf(cmd, sizeof cmd, "%s importance --weights %s --top 1", gelan, ck_path);
    CU_ASSERT(run_command_expect(cmd, 0, got, sizeof got));
    snprintf(cmd, sizeof cmd, "%s prune --weights %s --ratio 0.25 --out %s", gelan, ck_path, pruned);
    CU_ASSERT(run_command_expect(cmd, 0, got, sizeof got));
    Model *p = model_load(pruned, NULL, NULL); /* the pruned YAML carries nc: 5 */
    CU_ASSERT_NONNULL_OK(p);
    if (p) CU_ASSERT_EQUAL(p->nc, 5);
    model_free(p);
    remove(yaml5);
    remove(infer);
    remove(pruned);
done:
    remove(tmp_path("nc5.safetensors"));
    train_core_free(&a);
    model_free(m);
}

SUITE_FN(checkpoint) {
    CU_pSuite s = CU_add_suite("checkpoint", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "save/load weights, EMA and optimizer state", test_round_trip);
    CU_add_test(s, "a failed save leaves the previous file", test_atomic_write);
    CU_add_test(s, "val/detect use the EMA weights", test_eval_weights);
    CU_add_test(s, "files without cfg, mismatched models, transfer", test_cfg_and_mismatch);
    CU_add_test(s, "a checkpoint whose nc is not its YAML's: every loader", test_nc_differs_from_yaml);
    return 0;
}
