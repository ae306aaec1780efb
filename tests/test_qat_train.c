/* `gelan train --qat` end to end on the synthetic shapes set: the tiny model,
 * trained in float for one short epoch, fine-tunes with fake quant; the run
 * validates, saves the observers (qat.*) and its QAT options; a run stopped
 * mid-epoch and resumed ends bit-identical to an uninterrupted one, observers
 * included; val/detect's loader opens the file as the quantized model;
 * exclusions reach the model and a bad token fails. And the int8 export:
 * `gelan convert`'s path on the QAT checkpoint writes qconv nodes with I8
 * codes, and the int8 runtime computes what the fake-quant model computes. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "infer/infer.h"
#include "nn/convert.h"
#include "nn/quant.h"
#include "tensor/error.h"
#include "tensor/safetensors.h"
#include "tests/testutil.h"
#include "tests/testutil_nn.h"
#include "train/trainer.h"

/* /tmp/gelan_test_qat_train_<pid>/<name> */
static const char *tmp_path(const char *name) { return tmp_dir_path("qat_train", name); }

static int setup(void) { return tmp_dir_make("qat_train"); }
static int teardown(void) { return tmp_dir_remove("qat_train"); }

/* 16 training and 4 validation shapes images of 64 pixels. */
static const char *data_yaml(void) { return write_shapes_data(tmp_path("shapes.yaml"), 16, 4, 64); }

static void quick_options(TrainOptions *o, const char *data, const char *name) {
    quick_train_options(o, data, tmp_path("runs"), name);
}

static const char *last_of(const TrainResult *r) {
    static char bufs[4][700];
    static int next;
    char *b = bufs[next++ & 3];
    snprintf(b, sizeof bufs[0], "%s/last.safetensors", r->dir);
    return b;
}

/* The float checkpoint QAT starts from: one epoch of two batches. */
static const char *float_weights(const char *data) {
    static char path[700];
    if (*path) return path;
    TrainOptions o;
    quick_options(&o, data, "float");
    o.cfg = "tests/configs/gelan-tiny.yaml";
    o.epochs = 1, o.max_batches = 2;
    TrainResult r;
    if (train_run(&o, NULL, &r)) return NULL;
    map_result_free(&r.last_val);
    snprintf(path, sizeof path, "%s", last_of(&r));
    return path;
}

static int count_prefix(const char *file, const char *prefix) {
    SafeTensors *st = st_open(file);
    int n = 0;
    for (int i = 0; st && i < st_count(st); i++) n += !strncmp(st_info(st, i)->name, prefix, strlen(prefix));
    st_close(st);
    return n;
}

static const char *const QAT_CKPT_KEYS[] = {"epoch", "ema_updates", "last_opt_step", "qat"};

/* Two QAT epochs (BN and observers frozen in the second, qat_options_default
 * for 2 epochs) from the float weights; validation of the fake-quant EMA. */
static char qat_last[700]; /* the QAT checkpoint of test_qat_run, for the export test */

static void test_qat_run(void) {
    const char *data = data_yaml();
    const char *w = float_weights(data);
    CU_ASSERT_NONNULL_OK(w);
    if (!w) return;
    TrainOptions o;
    quick_options(&o, data, "qat");
    o.weights = w, o.qat = true, o.epochs = 2;
    TrainResult r;
    CU_ASSERT_OK(train_run(&o, NULL, &r));
    CU_ASSERT_EQUAL(r.epochs_done, 2);
    CU_ASSERT_EQUAL(r.last_val.images, 4);
    const char *last = last_of(&r);
    snprintf(qat_last, sizeof qat_last, "%s", last);
    CU_ASSERT_EQUAL(count_prefix(w, "qat."), 0);
    /* the QAT file: its options, and two tensors per quantized conv */
    Model *m = ckpt_load_eval_model(last, NULL, NULL);
    CU_ASSERT_NONNULL_OK(m);
    if (m) {
        CU_ASSERT(model_qat_enabled(m));
        CU_ASSERT(model_qat_count(m) > 10);
        CU_ASSERT_EQUAL(count_prefix(last, "qat."), model_qat_state_count(m));
    }
    SafeTensors *st = st_open(last);
    const char *meta = st ? st_metadata(st, "qat") : NULL;
    CU_ASSERT(meta && strstr(meta, "\"freeze_bn_epoch\": 1") && strstr(meta, "\"freeze_observer_epoch\": 1"));
    /* every observer saw the training batches: a positive scale, zp in [0, 255] */
    int seen = 0, total = 0;
    for (int i = 0; st && i < st_count(st); i++) {
        const StTensorInfo *ti = st_info(st, i);
        if (strncmp(ti->name, "qat.", 4) || !strstr(ti->name, "act_qparams")) continue;
        const float *q = st_data(st, ti);
        total++;
        seen += q[0] > 0 && isfinite(q[0]) && q[1] >= 0 && q[1] <= 255 && q[1] == floorf(q[1]);
    }
    CU_ASSERT(total > 0 && seen == total);
    st_close(st);
    /* the float file opens as a float model */
    Model *f = ckpt_load_eval_model(w, NULL, NULL);
    CU_ASSERT_NONNULL_OK(f);
    if (f) CU_ASSERT(!model_qat_enabled(f));
    model_free(f);
    model_free(m);
    map_result_free(&r.last_val);
}

/* Stopped 2 iterations into epoch 1 (4 batches per epoch) and resumed: the
 * same weights, EMA, optimizer state and observers, bit for bit, as one run
 * (the resumed run rebuilds QAT from the checkpoint's `qat` alone). */
static void test_qat_resume(void) {
    const char *data = data_yaml();
    const char *w = float_weights(data);
    CU_ASSERT_NONNULL_OK(w);
    if (!w) return;
    TrainOptions o;
    TrainResult ra, rb, rc;
    quick_options(&o, data, "qat-straight");
    o.weights = w, o.qat = true, o.qat_exclude = "first", o.epochs = 2;
    CU_ASSERT_OK(train_run(&o, NULL, &ra));
    quick_options(&o, data, "qat-stopped");
    o.weights = w, o.qat = true, o.qat_exclude = "first", o.epochs = 2, o.max_iters = 6;
    CU_ASSERT_OK(train_run(&o, NULL, &rb));
    CU_ASSERT(rb.stopped);
    TrainOptions r;
    train_options_default(&r);
    r.project = tmp_path("runs"), r.name = "qat-stopped", r.resume = true, r.workers = 1;
    CU_ASSERT_OK(train_run(&r, NULL, &rc));
    CU_ASSERT_EQUAL(rc.epochs_done, 1);
    CU_ASSERT(count_prefix(last_of(&rc), "qat.") > 0);
    CU_ASSERT(same_checkpoint_tensors(last_of(&ra), last_of(&rc), QAT_CKPT_KEYS, 4));
    /* --exclude first left the stem float: fewer quantized convs than without */
    Model *a = ckpt_load_eval_model(last_of(&ra), NULL, NULL), *all = ckpt_load_eval_model(last_of(&ra), NULL, NULL);
    CU_ASSERT(a && all);
    if (a && all) {
        QatOptions q;
        qat_options_default(&q, 2);
        CU_ASSERT_OK(model_qat_enable(all, &q));
        CU_ASSERT(model_qat_count(a) > 0 && model_qat_count(a) < model_qat_count(all));
    }
    model_free(a);
    model_free(all);
    map_result_free(&ra.last_val);
    map_result_free(&rb.last_val);
    map_result_free(&rc.last_val);
}

static void test_qat_bad_exclude(void) {
    const char *data = data_yaml();
    const char *w = float_weights(data);
    CU_ASSERT_NONNULL_OK(w);
    if (!w) return;
    TrainOptions o;
    quick_options(&o, data, "qat-bad");
    o.weights = w, o.qat = true, o.qat_exclude = "first,99", o.epochs = 1;
    TrainResult r;
    CU_ASSERT_EQUAL(train_run(&o, NULL, &r), -1);
    CU_ASSERT(strstr(gelan_last_error(), "99") != NULL);
    map_result_free(&r.last_val);
}

/* ---- int8 export -------------------------------------------------------------------- */

static int read_ckpt(void *ctx, const char *name, Tensor *dst) { return ckpt_read_tensor(ctx, name, dst); }

/* The QAT checkpoint (EMA weights, observers frozen by the run's second
 * epoch) converted as `gelan convert` does: single branch, qat state mapped,
 * model_qat_fold, graph with qconv nodes, file with I8 codes. The int8
 * runtime's decoded predictions equal the fake-quant eval forward's. */
static void test_int8_export(void) {
    if (!*qat_last) {
        CU_FAIL("no QAT checkpoint (the first test failed)");
        return;
    }
    Model *fq = ckpt_load_eval_model(qat_last, NULL, NULL);
    CU_ASSERT_NONNULL_OK(fq);
    if (!fq) return;
    const int S = 64;
    Tensor *x = tensor_new(4, (int[]){1, 3, S, S});
    uint32_t st = 12345;
    for (size_t i = 0; x && i < x->numel; i++) { /* an image-like input in [0, 1] */
        st = st * 1664525u + 1013904223u;
        x->data[i] = (float)(st >> 8) / 16777216.0f;
    }
    Tape *t = tape_new();
    tape_set_grad_enabled(t, false);
    ModelOutput o;
    CU_ASSERT_OK(model_forward(fq, t, x, false, &o));
    const Tensor *ref = o.pred[0];

    Checkpoint *ck = ckpt_open(qat_last);
    Model *src = ck ? ckpt_build_model(ck, NULL, NULL) : NULL, *single = NULL;
    CU_ASSERT_NONNULL_OK(src);
    int *old_of = NULL, n = 0, nq = 0;
    char *yaml = NULL, *names = NULL;
    InferGraph g = {0};
    InferModel *im = NULL;
    const char *out = tmp_path("qat-int8.safetensors");
    int rc = src ? ckpt_load_weights(ck, src, CKPT_EMA) : -1;
    if (!rc) rc = (yaml = convert_single_yaml(src, &old_of, &n)) ? 0 : -1;
    if (!rc) rc = (single = convert_single_branch(src, "single")) ? 0 : -1;
    if (!rc) rc = convert_qat_enable(single, src, old_of, n, read_ckpt, ck, &nq);
    CU_ASSERT_OK(rc);
    CU_ASSERT_EQUAL(nq, model_qat_count(fq));
    if (!rc) rc = model_qat_fold(single);
    if (!rc) rc = convert_graph(single, &g);
    if (!rc) rc = (names = convert_default_names(single->nc)) ? 0 : -1;
    if (!rc) rc = convert_save_infer(single, &g, &(ConvertMeta){names, NULL, NULL}, out);
    CU_ASSERT_OK(rc);
    if (!rc) {
        /* one qconv node and one I8 tensor per quantized conv */
        int nodes = 0, i8 = 0;
        for (const char *p = g.text; (p = strstr(p, "\nqconv ")); p++) nodes++;
        SafeTensors *f = st_open(out);
        for (int i = 0; f && i < st_count(f); i++) i8 += st_info(f, i)->dtype == ST_I8;
        st_close(f);
        CU_ASSERT_EQUAL(nodes, nq);
        CU_ASSERT_EQUAL(i8, nq);
        im = infer_model_load(out);
        CU_ASSERT_NONNULL_OK(im);
    }
    if (im && ref) {
        InferShape os;
        const float *y = infer_model_run(im, x->data, 1, 3, S, S, &os);
        CU_ASSERT_NONNULL_OK(y);
        CU_ASSERT(os.ndim == 3 && os.shape[1] == ref->shape[1] && os.shape[2] == ref->shape[2]);
        if (y && (size_t)os.shape[1] * os.shape[2] == ref->numel) {
            /* boxes (rows 0..3, pixels) and class scores (rows 4.., [0, 1]) each to 1e-4 of their own range */
            const size_t A = (size_t)os.shape[2], split = 4 * A;
            float amax[2] = {0, 0}, dmax[2] = {0, 0};
            for (size_t i = 0; i < ref->numel; i++) {
                int part = i >= split;
                float a = fabsf(ref->data[i]), d = fabsf(ref->data[i] - y[i]);
                amax[part] = a > amax[part] ? a : amax[part];
                dmax[part] = d > dmax[part] ? d : dmax[part];
            }
            printf("\n    int8 runtime vs fake quant: max |diff| boxes %.3g of %.3g, scores %.3g of %.3g (%d qconv) ",
                   dmax[0], amax[0], dmax[1], amax[1], nq);
            CU_ASSERT(amax[0] > 0 && dmax[0] <= 1e-4f * amax[0]);
            CU_ASSERT(amax[1] > 0 && dmax[1] <= 1e-4f * amax[1]);
            /* the comparison can fail: the float model (fake quant off) is far from both */
            const size_t numel = ref->numel; /* ref lives on the tape, reset next */
            model_qat_set_fake_quant(fq, false);
            ModelOutput fo;
            tape_reset(t);
            CU_ASSERT_OK(model_forward(fq, t, x, false, &fo));
            float fdiff = 0;
            for (size_t i = 0; fo.pred[0] && fo.pred[0]->numel == numel && i < numel; i++) {
                float d = fabsf(fo.pred[0]->data[i] - y[i]);
                fdiff = d > fdiff ? d : fdiff;
            }
            printf("float model vs int8 %.3g ", fdiff);
            CU_ASSERT(fdiff > 100 * (dmax[0] > dmax[1] ? dmax[0] : dmax[1]));
        }
    }
    infer_model_free(im);
    convert_graph_free(&g);
    free(names);
    free(yaml);
    free(old_of);
    model_free(single);
    model_free(src);
    ckpt_close(ck);
    tape_free(t);
    tensor_free(x);
    model_free(fq);
}

/* The runtime's checks of a qconv node: keys, ranges and codes, each error naming the line. */
typedef struct {
    const char *names[3];
    const float *data[3];
    int shape[3][4], ndim[3];
} Lookup3;

static int lookup3(void *ctx, const char *name, InferTensor *out) {
    const Lookup3 *L = ctx;
    for (int i = 0; i < 3; i++) {
        if (strcmp(L->names[i], name)) continue;
        out->ndim = L->ndim[i];
        for (int d = 0; d < L->ndim[i]; d++) out->shape[d] = L->shape[i][d];
        out->data = L->data[i];
        return 0;
    }
    return -1;
}

static void test_qconv_node_checks(void) {
    float w[12] = {1, -2, 3, 127, -127, 0, 5, 6, 7, 8, 9, 10}, ws[4] = {0.01f, 0.02f, 0.03f, 0.04f}, b[4] = {0};
    Lookup3 L = {{"w", "ws", "b"}, {w, ws, b}, {{4, 3, 1, 1}, {4}, {4}}, {4, 1, 1}};
    InferModel *m = infer_model_build("qconv y input c=4 k=1 w=w ws=ws b=b sx=0.05 zp=3\n", NULL, lookup3, &L);
    CU_ASSERT_NONNULL_OK(m);
    if (m) { /* one pixel by hand: x = 0.5 -> x_q = 10 + 3, acc = sum w (x_q - zp) = 10 * sum w */
        float x[3] = {0.5f, 0.5f, 0.5f};
        InferShape os;
        const float *y = infer_model_run(m, x, 1, 3, 1, 1, &os);
        CU_ASSERT_NONNULL_OK(y);
        for (int c = 0; y && c < 4; c++) {
            float acc = 10.f * (w[3 * c] + w[3 * c + 1] + w[3 * c + 2]);
            const float want = acc * (0.05f * ws[c]);
            CU_ASSERT_OK(check_close("qconv pixel", &y[c], &want, 1, 1e-6, 1e-6));
        }
    }
    infer_model_free(m);
    const char *bad[][2] = {{"qconv y input c=4 k=1 w=w b=b sx=0.05 zp=3\n", "missing key 'ws'"},
                            {"qconv y input c=4 k=1 w=w ws=ws sx=0.05 zp=256\n", "zp=256"},
                            {"qconv y input c=4 k=1 w=w ws=ws sx=0 zp=3\n", "sx=0"},
                            {"qconv y input c=4 k=1 w=w ws=b sx=0.05 zp=3\n", "weight scale"}};
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_PTR_NULL(infer_model_build(bad[i][0], NULL, lookup3, &L));
        if (!strstr(gelan_last_error(), "graph line 1") || !strstr(gelan_last_error(), bad[i][1]))
            printf("\n    case %d: %s", i, gelan_last_error());
        CU_ASSERT(strstr(gelan_last_error(), "graph line 1") && strstr(gelan_last_error(), bad[i][1]));
    }
    w[5] = 0.5f; /* not a code */
    CU_ASSERT_PTR_NULL(infer_model_build("qconv y input c=4 k=1 w=w ws=ws sx=0.05 zp=3\n", NULL, lookup3, &L));
    CU_ASSERT(strstr(gelan_last_error(), "not an int8 code") != NULL);
}

SUITE_FN(qat_train) {
    CU_pSuite s = CU_add_suite("qat_train", setup, teardown);
    if (!s) return -1;
    CU_add_test(s, "QAT trains, validates, saves qat.*", test_qat_run);
    CU_add_test(s, "QAT resume equals an uninterrupted run", test_qat_resume);
    CU_add_test(s, "a bad --exclude token fails", test_qat_bad_exclude);
    CU_add_test(s, "int8 export computes the fake-quant model", test_int8_export);
    CU_add_test(s, "qconv node: hand-worked pixel, bad keys and codes", test_qconv_node_checks);
    return 0;
}
