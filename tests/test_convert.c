/* gelan convert: the reparameterization to a single branch (nn/convert.h) and
 * the inference graph it writes, checked against the official code through
 * the golden `reparam.pred` (the official gelan model filled by the official
 * tools/reparameterization.ipynb mapping), against the official gelan YAMLs,
 * and end to end through the standalone runtime (infer/infer.h) and the
 * command line. Tolerance: the README's rtol 1e-4 of max |x|. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/tape.h"
#include "infer/infer.h"
#include "nn/convert.h"
#include "nn/model.h"
#include "tensor/error.h"
#include "tensor/safetensors.h"
#include "tests/testutil.h"
#include "tests/testutil_nn.h"

#define RTOL 1e-4

/* Eval prediction of head `head` (a heap copy). */
static Tensor *eval_pred(Model *m, Tensor *x, int head) {
    Tape *t = tape_new();
    Tensor *y = NULL;
    if (t) {
        tape_set_grad_enabled(t, false);
        ModelOutput o;
        if (model_forward(m, t, x, false, &o) == 0 && o.pred[head]) y = tensor_clone(o.pred[head]);
    }
    tape_free(t);
    return y;
}

/* Runs an inference model on x and compares its output with want. */
static void check_infer(InferModel *im, const Tensor *x, const Tensor *want, const char *what) {
    CU_ASSERT_NONNULL_OK(im);
    if (!im || !want) return;
    InferShape os;
    const float *y = infer_model_run(im, x->data, tN(x), tC(x), tH(x), tW(x), &os);
    CU_ASSERT_NONNULL_OK(y);
    if (!y) return;
    CU_ASSERT_EQUAL(os.ndim, want->ndim);
    size_t n = 1;
    for (int d = 0; d < os.ndim; d++) n *= (size_t)os.shape[d];
    CU_ASSERT_EQUAL(n, want->numel);
    if (n != want->numel) return;
    CU_ASSERT_EQUAL(check_close(what, y, want->data, n, RTOL, 0), 0);
    printf("; %s %.1e", what, rel_error(y, want->data, n));
}

/* Fuses the single-branch model, writes its graph and runs it in-process. */
static void check_graph(Model *single, const Tensor *x, const Tensor *want) {
    CU_ASSERT_OK(model_fuse(single));
    InferGraph g;
    CU_ASSERT_OK(convert_graph(single, &g));
    if (!g.text) return;
    InferModel *im = infer_model_build(g.text, NULL, convert_graph_lookup, &g);
    check_infer(im, x, want, "runtime");
    if (im) {
        CU_ASSERT_EQUAL(infer_model_layers(im), g.nnodes);
        /* the graph holds every parameter of the fused model but the fixed DFL weights */
        CU_ASSERT_EQUAL(infer_model_params(im) + (size_t)single->head.reg_max, model_num_params(single));
    }
    infer_model_free(im);
    convert_graph_free(&g);
}

/* The official mapping (README "Reparameterization"), spelled out independently
 * of convert.c: model.{i} <- model.{i+shift} below the head, and the head's
 * cv2/cv3/dfl <- the main head's cv{2n}/cv{2n+1}/dfl{n} of an n-head model at D. */
static void official_source(const char *name, int shift, int head_new, int D, int nheads, char *buf, size_t len) {
    int i = atoi(name + 6);
    const char *rest = strchr(name + 6, '.') + 1;
    if (i != head_new)
        snprintf(buf, len, "model.%d.%s", i + shift, rest);
    else if (!strncmp(rest, "cv2.", 4))
        snprintf(buf, len, "model.%d.cv%d.%s", D, 2 * nheads, rest + 4);
    else if (!strncmp(rest, "cv3.", 4))
        snprintf(buf, len, "model.%d.cv%d.%s", D, 2 * nheads + 1, rest + 4);
    else
        snprintf(buf, len, "model.%d.dfl%d.%s", D, nheads, rest + 4);
}

static void run_golden(const char *gcase, int shift, int D, size_t gelan_params) {
    if (!shared_available()) {
        fprintf(stderr, "\n  ../shared not found: skipped\n");
        return;
    }
    Model *src = model_build_file(golden_path(gcase, "cfg.yaml"), NULL);
    CU_ASSERT_NONNULL_OK(src);
    if (!src) return;
    CU_ASSERT_OK(model_load_weights(src, golden_path(gcase, "weights.safetensors")));
    Tensor *x = tensor_from_file(golden_path(gcase, "input.safetensors"), "input");
    Tensor *want = tensor_from_file(golden_path(gcase, "expected.safetensors"), "reparam.pred");
    CU_ASSERT_NONNULL_OK(x);
    CU_ASSERT_NONNULL_OK(want);
    Model *dst = convert_single_branch(src, "converted.yaml");
    CU_ASSERT_NONNULL_OK(dst);
    if (dst && x && want) {
        CU_ASSERT_EQUAL(dst->head.nheads, 1);
        CU_ASSERT_EQUAL(model_num_params(dst), gelan_params);
        int head_new = dst->nlayers - 1, mismatched = 0;
        char sname[512];
        for (int i = 0; i < dst->nparams + dst->nbuffers; i++) {
            const char *name = i < dst->nparams ? dst->params[i].name : dst->buffers[i - dst->nparams].name;
            const Tensor *t = i < dst->nparams ? dst->params[i].t : dst->buffers[i - dst->nparams].t;
            official_source(name, shift, head_new, D, src->head.nheads, sname, sizeof sname);
            const Tensor *s = model_tensor(src, sname);
            if (!s || !tensor_same_shape(s, t) || memcmp(s->data, t->data, t->numel * sizeof(float))) {
                if (mismatched++ < 5) fprintf(stderr, "\n  %s is not %s of the source", name, sname);
            }
        }
        CU_ASSERT_EQUAL(mismatched, 0);
        Tensor *y = eval_pred(dst, x, 0);
        CU_ASSERT_NONNULL_OK(y);
        if (y) {
            CU_ASSERT_EQUAL(y->numel, want->numel);
            if (y->numel == want->numel) {
                CU_ASSERT_EQUAL(check_close("reparam.pred", y->data, want->data, y->numel, RTOL, 0), 0);
                printf("\n    %-24s %d -> %d layers, %zu params; unfused %.1e", gcase, src->nlayers, dst->nlayers,
                       model_num_params(dst), rel_error(y->data, want->data, y->numel));
            }
        }
        tensor_free(y);
        check_graph(dst, x, want);
    }
    model_free(dst);
    model_free(src);
    tensor_free(x);
    tensor_free(want);
}

static void test_golden_yolov9_t(void) { run_golden("yolov9-t_64_warm", 0, 29, 2442640); }
static void test_golden_yolov9_c_mini(void) { run_golden("yolov9-c-mini_64", 1, 38, 2315568); }
static void test_golden_triple_mini(void) { run_golden("yolov9-c-triple-mini_64", 1, 53, 2315568); }

/* A single-head model converts onto itself: same rows, same tensors. */
static void test_single_head_identity(void) {
    if (!shared_available()) {
        fprintf(stderr, "\n  ../shared not found: skipped\n");
        return;
    }
    const char *gcase = "gelan-t_64_calib";
    Model *src = model_build_file(golden_path(gcase, "cfg.yaml"), NULL);
    CU_ASSERT_NONNULL_OK(src);
    if (!src) return;
    CU_ASSERT_OK(model_load_weights(src, golden_path(gcase, "weights.safetensors")));
    Model *dst = convert_single_branch(src, "same.yaml");
    CU_ASSERT_NONNULL_OK(dst);
    if (dst) {
        CU_ASSERT_EQUAL(dst->nlayers, src->nlayers);
        for (int i = 0; i < dst->nlayers && i < src->nlayers; i++) {
            CU_ASSERT_STRING_EQUAL(dst->layers[i].args, src->layers[i].args);
            CU_ASSERT_EQUAL(dst->layers[i].nfrom, src->layers[i].nfrom);
            for (int k = 0; k < dst->layers[i].nfrom && k < src->layers[i].nfrom; k++)
                CU_ASSERT_EQUAL(dst->layers[i].from[k], src->layers[i].from[k]);
        }
        CU_ASSERT_EQUAL(dst->nparams, src->nparams);
        int differ = 0;
        for (int i = 0; i < dst->nparams && i < src->nparams; i++) {
            const Tensor *a = dst->params[i].t, *b = model_tensor(src, dst->params[i].name);
            differ += !b || !tensor_same_shape(a, b) || memcmp(a->data, b->data, a->numel * sizeof(float));
        }
        CU_ASSERT_EQUAL(differ, 0);
        Tensor *x = tensor_from_file(golden_path(gcase, "input.safetensors"), "input");
        Tensor *want = tensor_from_file(golden_path(gcase, "expected.safetensors"), "fused.output.pred");
        CU_ASSERT_NONNULL_OK(x);
        CU_ASSERT_NONNULL_OK(want);
        printf("\n    %s: identity", gcase);
        if (x && want) check_graph(dst, x, want);
        tensor_free(x);
        tensor_free(want);
    }
    model_free(dst);
    model_free(src);
}

/* The seed's triple config at full width with random weights: the converted
 * model reproduces the triple model's main (inference) head. */
static void test_triple_full(void) {
    ModelOptions opt = {0, 7};
    Model *src = model_build_file("configs/models/yolov9-c-triple.yaml", &opt);
    CU_ASSERT_NONNULL_OK(src);
    if (!src) return;
    randomize_bn_stats(src, 11, 0.1f);
    Tensor *x = random_image_batch(1, 3, 64, 64, 5);
    Tensor *want = eval_pred(src, x, 2);
    CU_ASSERT_NONNULL_OK(want);
    Model *dst = convert_single_branch(src, "triple-single.yaml");
    CU_ASSERT_NONNULL_OK(dst);
    size_t src_params = model_num_params(src);
    model_free(src); /* 77M parameters: free them before the rest */
    if (dst && want) {
        CU_ASSERT_EQUAL(src_params, 76865408);
        CU_ASSERT_EQUAL(model_num_params(dst), 25498752); /* gelan-c */
        Tensor *y = eval_pred(dst, x, 0);
        CU_ASSERT_NONNULL_OK(y);
        if (y && y->numel == want->numel) {
            CU_ASSERT_EQUAL(check_close("triple main pred", y->data, want->data, y->numel, RTOL, 0), 0);
            printf("\n    yolov9-c-triple (random) %d -> %d layers; unfused %.1e", 53 + 1, dst->nlayers,
                   rel_error(y->data, want->data, y->numel));
        }
        tensor_free(y);
        check_graph(dst, x, want);
    }
    model_free(dst);
    tensor_free(want);
    tensor_free(x);
}

static int same_value(const CfgValue *a, const CfgValue *b) {
    if (a->kind != b->kind) {
        /* YAML 1.0 vs 1 are the same number to parse_model */
        double x = a->kind == CV_INT ? (double)a->ival : a->fval, y = b->kind == CV_INT ? (double)b->ival : b->fval;
        return (a->kind == CV_INT || a->kind == CV_FLOAT) && (b->kind == CV_INT || b->kind == CV_FLOAT) && x == y;
    }
    switch (a->kind) {
        case CV_NONE:
            return 1;
        case CV_INT:
            return a->ival == b->ival;
        case CV_FLOAT:
            return a->fval == b->fval;
        case CV_STR:
            return !strcmp(a->str, b->str);
        case CV_LIST:
            if (a->n != b->n) return 0;
            for (int i = 0; i < a->n; i++)
                if (!same_value(&a->items[i], &b->items[i])) return 0;
            return 1;
    }
    return 0;
}

/* The converted YAML of each PGI config is the official gelan config: same
 * header values and the same rows [from, number, module, args]. */
static void check_structure(const char *dual, const char *single) {
    char path[256];
    snprintf(path, sizeof path, "configs/models/%s.yaml", dual);
    Model *src = model_build_file(path, NULL);
    CU_ASSERT_NONNULL_OK(src);
    snprintf(path, sizeof path, "configs/models/%s.yaml", single);
    ModelCfg *want = model_cfg_load(path);
    CU_ASSERT_NONNULL_OK(want);
    char *yaml = src ? convert_single_yaml(src, NULL, NULL) : NULL;
    CU_ASSERT_NONNULL_OK(yaml);
    ModelCfg *got = yaml ? model_cfg_parse(yaml, "converted") : NULL;
    CU_ASSERT_NONNULL_OK(got);
    if (got && want) {
        CU_ASSERT_EQUAL(got->nc, want->nc);
        CU_ASSERT_EQUAL(got->depth_multiple, want->depth_multiple);
        CU_ASSERT_EQUAL(got->width_multiple, want->width_multiple);
        CU_ASSERT((got->activation == NULL) == (want->activation == NULL));
        if (got->activation && want->activation) CU_ASSERT_STRING_EQUAL(got->activation, want->activation);
        CU_ASSERT_EQUAL(got->nrows, want->nrows);
        int bad = 0;
        for (int i = 0; i < got->nrows && i < want->nrows; i++) {
            const CfgRow *a = &got->rows[i], *b = &want->rows[i];
            if (!same_value(&a->from, &b->from) || a->number != b->number || strcmp(a->module, b->module) ||
                !same_value(&a->args, &b->args)) {
                char x[128], y[128];
                if (bad++ < 3)
                    fprintf(stderr, "\n  %s row %d: from %s %s, official %s %s", dual, i,
                            cfg_value_str(&a->from, x, sizeof x), a->module, cfg_value_str(&b->from, y, sizeof y),
                            b->module);
            }
        }
        CU_ASSERT_EQUAL(bad, 0);
        printf("\n    %s -> %s: %d rows as official", dual, single, got->nrows);
    }
    model_cfg_free(got);
    model_cfg_free(want);
    free(yaml);
    model_free(src);
}

static void test_structure_t(void) { check_structure("yolov9-t", "gelan-t"); }
static void test_structure_c(void) { check_structure("yolov9-c", "gelan-c"); }
/* yolov9-e keeps both backbones, its CBLinear/CBFuse and the Silence (two layers read the image) */
static void test_structure_e(void) { check_structure("yolov9-e", "gelan-e"); }
static void test_structure_slim(void) { check_structure("yolov9-c-slim", "gelan-c-slim"); }

/* The seed's Test11: the dual slim model converts to 5,370,080 parameters
 * (gelan-c-slim.yaml) and, fused, to the 5,362,432 the seed reports. */
static void test_slim_params(void) {
    Model *src = model_build_file("configs/models/yolov9-c-slim.yaml", NULL);
    CU_ASSERT_NONNULL_OK(src);
    if (!src) return;
    Model *dst = convert_single_branch(src, "slim.yaml");
    CU_ASSERT_NONNULL_OK(dst);
    if (dst) {
        CU_ASSERT_EQUAL(model_num_params(dst), 5370080);
        CU_ASSERT_OK(model_fuse(dst));
        CU_ASSERT_EQUAL(model_num_params(dst), 5362432);
        InferGraph g;
        CU_ASSERT_OK(convert_graph(dst, &g));
        InferModel *im = g.text ? infer_model_build(g.text, NULL, convert_graph_lookup, &g) : NULL;
        CU_ASSERT_NONNULL_OK(im);
        if (im) CU_ASSERT_EQUAL(infer_model_params(im), 5362432 - 16);
        printf("\n    yolov9-c-slim -> %zu parameters fused, graph %d nodes", model_num_params(dst), g.nnodes);
        infer_model_free(im);
        convert_graph_free(&g);
    }
    model_free(dst);
    model_free(src);
}

/* The ShuffleNetV2 unit's channel shuffle has no graph op; it is written as
 * splits and concats. Checked against the model's own forward. */
static void test_shufflenet_graph(void) {
    ModelOptions opt = {0, 3};
    Model *m = model_build_file("configs/models/gelan-c-slim-shufflenet.yaml", &opt);
    CU_ASSERT_NONNULL_OK(m);
    if (!m) return;
    randomize_bn_stats(m, 4, 0.1f);
    Tensor *x = random_image_batch(1, 3, 64, 64, 9);
    Tensor *want = eval_pred(m, x, 0);
    CU_ASSERT_NONNULL_OK(want);
    Model *dst = convert_single_branch(m, "shuffle.yaml");
    CU_ASSERT_NONNULL_OK(dst);
    if (dst && want) {
        printf("\n    gelan-c-slim-shufflenet");
        check_graph(dst, x, want);
    }
    model_free(dst);
    model_free(m);
    tensor_free(want);
    tensor_free(x);
}

/* yolov9-e at width 0.25 (hidden widths and CBLinear lists divided by 4 as
 * in the golden c-mini), 5 classes, ReLU: its main branch keeps the second
 * backbone with CBLinear/CBFuse (upsample + add in the graph) and needs a
 * Silence at layer 0, since two layers read the image. */
static const char *MINI_E =
    "nc: 5\ndepth_multiple: 1.0\nwidth_multiple: 0.25\nactivation: nn.ReLU()\nanchors: 3\n"
    "backbone:\n  [\n"
    "   [-1, 1, Silence, []],\n"
    "   [-1, 1, Conv, [64, 3, 2]],\n"
    "   [-1, 1, Conv, [128, 3, 2]],\n"
    "   [-1, 1, RepNCSPELAN4, [256, 32, 16, 2]],\n"
    "   [-1, 1, ADown, [256]],\n"
    "   [-1, 1, RepNCSPELAN4, [512, 64, 32, 2]],\n"
    "   [-1, 1, ADown, [512]],\n"
    "   [-1, 1, RepNCSPELAN4, [1024, 128, 64, 2]],\n"
    "   [-1, 1, ADown, [1024]],\n"
    "   [-1, 1, RepNCSPELAN4, [1024, 128, 64, 2]],\n"
    "   [1, 1, CBLinear, [[16]]],\n"
    "   [3, 1, CBLinear, [[16, 32]]],\n"
    "   [5, 1, CBLinear, [[16, 32, 64]]],\n"
    "   [7, 1, CBLinear, [[16, 32, 64, 128]]],\n"
    "   [9, 1, CBLinear, [[16, 32, 64, 128, 256]]],\n"
    "   [0, 1, Conv, [64, 3, 2]],\n"
    "   [[10, 11, 12, 13, 14, -1], 1, CBFuse, [[0, 0, 0, 0, 0]]],\n"
    "   [-1, 1, Conv, [128, 3, 2]],\n"
    "   [[11, 12, 13, 14, -1], 1, CBFuse, [[1, 1, 1, 1]]],\n"
    "   [-1, 1, RepNCSPELAN4, [256, 32, 16, 2]],\n"
    "   [-1, 1, ADown, [256]],\n"
    "   [[12, 13, 14, -1], 1, CBFuse, [[2, 2, 2]]],\n"
    "   [-1, 1, RepNCSPELAN4, [512, 64, 32, 2]],\n"
    "   [-1, 1, ADown, [512]],\n"
    "   [[13, 14, -1], 1, CBFuse, [[3, 3]]],\n"
    "   [-1, 1, RepNCSPELAN4, [1024, 128, 64, 2]],\n"
    "   [-1, 1, ADown, [1024]],\n"
    "   [[14, -1], 1, CBFuse, [[4]]],\n"
    "   [-1, 1, RepNCSPELAN4, [1024, 128, 64, 2]],\n"
    "  ]\n"
    "head:\n  [\n"
    "   [9, 1, SPPELAN, [512, 64]],\n"
    "   [-1, 1, nn.Upsample, [None, 2, 'nearest']],\n"
    "   [[-1, 7], 1, Concat, [1]],\n"
    "   [-1, 1, RepNCSPELAN4, [512, 128, 64, 2]],\n"
    "   [-1, 1, nn.Upsample, [None, 2, 'nearest']],\n"
    "   [[-1, 5], 1, Concat, [1]],\n"
    "   [-1, 1, RepNCSPELAN4, [256, 64, 32, 2]],\n"
    "   [28, 1, SPPELAN, [512, 64]],\n"
    "   [-1, 1, nn.Upsample, [None, 2, 'nearest']],\n"
    "   [[-1, 25], 1, Concat, [1]],\n"
    "   [-1, 1, RepNCSPELAN4, [512, 128, 64, 2]],\n"
    "   [-1, 1, nn.Upsample, [None, 2, 'nearest']],\n"
    "   [[-1, 22], 1, Concat, [1]],\n"
    "   [-1, 1, RepNCSPELAN4, [256, 64, 32, 2]],\n"
    "   [-1, 1, ADown, [256]],\n"
    "   [[-1, 39], 1, Concat, [1]],\n"
    "   [-1, 1, RepNCSPELAN4, [512, 128, 64, 2]],\n"
    "   [-1, 1, ADown, [512]],\n"
    "   [[-1, 36], 1, Concat, [1]],\n"
    "   [-1, 1, RepNCSPELAN4, [512, 256, 128, 2]],\n"
    "   [[35, 32, 29, 42, 45, 48], 1, DualDDetect, [nc]],\n"
    "  ]\n";

static void test_mini_e(void) {
    ModelOptions opt = {0, 21};
    Model *src = model_build(MINI_E, "yolov9-e-mini.yaml", &opt);
    CU_ASSERT_NONNULL_OK(src);
    if (!src) return;
    randomize_bn_stats(src, 22, 0.1f);
    Tensor *x = random_image_batch(2, 3, 64, 96, 23);
    Tensor *want = eval_pred(src, x, 1);
    CU_ASSERT_NONNULL_OK(want);
    int *old_of = NULL, n = 0;
    char *yaml = convert_single_yaml(src, &old_of, &n);
    CU_ASSERT_NONNULL_OK(yaml);
    /* layers 0-28 stay (Silence first), the main neck 36-48 becomes 29-41, the head 42 */
    CU_ASSERT_EQUAL(n, 43);
    if (yaml && n == 43) {
        int ok = old_of[0] == 0 || old_of[0] == -1;
        for (int j = 1; j < 29; j++) ok &= old_of[j] == j;
        for (int j = 29; j < 43; j++) ok &= old_of[j] == j + 7;
        CU_ASSERT(ok);
    }
    Model *dst = convert_single_branch(src, "e-mini-single.yaml");
    CU_ASSERT_NONNULL_OK(dst);
    if (dst && want) {
        CU_ASSERT_EQUAL(dst->layers[0].kind, BLOCK_SILENCE);
        CU_ASSERT_EQUAL(dst->act.kind, ACT_RELU);
        CU_ASSERT_EQUAL(dst->nc, 5);
        Tensor *y = eval_pred(dst, x, 0);
        CU_ASSERT_NONNULL_OK(y);
        if (y && y->numel == want->numel) {
            CU_ASSERT_EQUAL(check_close("e-mini main pred", y->data, want->data, y->numel, RTOL, 0), 0);
            printf("\n    yolov9-e-mini (random) %d -> %d layers; unfused %.1e", src->nlayers, dst->nlayers,
                   rel_error(y->data, want->data, y->numel));
        }
        tensor_free(y);
        check_graph(dst, x, want);
    }
    free(yaml);
    free(old_of);
    model_free(dst);
    model_free(src);
    tensor_free(want);
    tensor_free(x);
}

/* ---- the command line -------------------------------------------------------------- */

/* A training-style checkpoint: ema.* = the golden weights, model.* = zeros
 * (but the fixed DFL weights, which every model has). */
static int write_ema_ckpt(const char *gcase, const char *path) {
    SafeTensors *st = st_open(golden_path(gcase, "weights.safetensors"));
    char *cfg = read_text_file(golden_path(gcase, "cfg.yaml"));
    StWriter *w = st_writer_new();
    int rc = st && cfg && w ? 0 : -1;
    if (!rc) rc = st_writer_set_metadata(w, "format", "gelan-ckpt/1");
    if (!rc) rc = st_writer_set_metadata(w, "cfg", cfg);
    for (int i = 0; !rc && i < st_count(st); i++) {
        const StTensorInfo *ti = st_info(st, i);
        char name[512];
        snprintf(name, sizeof name, "ema.%s", ti->name);
        rc = st_writer_add(w, name, ti->dtype, ti->ndim, ti->shape, st_data(st, ti), ti->nbytes, 1);
        void *zeros = calloc(1, ti->nbytes ? ti->nbytes : 1);
        const void *data = strstr(ti->name, ".dfl") ? st_data(st, ti) : zeros;
        if (!rc) rc = zeros ? st_writer_add(w, ti->name, ti->dtype, ti->ndim, ti->shape, data, ti->nbytes, 1) : -1;
        free(zeros);
    }
    if (!rc) rc = st_writer_save(w, path);
    st_writer_free(w);
    free(cfg);
    st_close(st);
    return rc;
}

static void test_cli(void) {
    const char *gelan = gelan_bin_path();
    if (access(gelan, X_OK) != 0 || !shared_available()) {
        fprintf(stderr, "\n  no %s or ../shared: skipped\n", gelan);
        return;
    }
    const char *gcase = "yolov9-t_64_warm";
    char dir[] = "/tmp/gelan_convert_XXXXXX";
    CU_ASSERT_PTR_NOT_NULL(mkdtemp(dir));
    char out[300], single[300], ckpt[300], cmd[4096], text[8192];
    snprintf(out, sizeof out, "%s/t.safetensors", dir);
    snprintf(single, sizeof single, "%s/t-single.safetensors", dir);
    snprintf(ckpt, sizeof ckpt, "%s/ckpt.safetensors", dir);
    Tensor *x = tensor_from_file(golden_path(gcase, "input.safetensors"), "input");
    Tensor *want = tensor_from_file(golden_path(gcase, "expected.safetensors"), "reparam.pred");
    CU_ASSERT_NONNULL_OK(x);
    CU_ASSERT_NONNULL_OK(want);

    /* the golden weights carry no cfg: a clear error, nothing written */
    snprintf(cmd, sizeof cmd, "%s convert --weights %s --out %s", gelan, golden_path(gcase, "weights.safetensors"),
             out);
    CU_ASSERT(run_command_expect(cmd, 1, text, sizeof text));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "--cfg"));
    CU_ASSERT_NOT_EQUAL(access(out, F_OK), 0);

    /* inference model */
    snprintf(cmd, sizeof cmd, "%s convert --weights %s --cfg %s --out %s", gelan,
             golden_path(gcase, "weights.safetensors"), golden_path(gcase, "cfg.yaml"), out);
    CU_ASSERT(run_command_expect(cmd, 0, text, sizeof text));
    InferModel *im = infer_model_load(out);
    printf("\n    gelan convert");
    if (x && want) check_infer(im, x, want, "inference model");
    if (im) {
        CU_ASSERT_EQUAL(infer_model_class_count(im), 80);
        CU_ASSERT_STRING_EQUAL(infer_model_class_name(im, 79), "class79");
    }
    infer_model_free(im);
    snprintf(cmd, sizeof cmd, "%s info %s", gelan, out);
    CU_ASSERT(run_command_expect(cmd, 0, text, sizeof text));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "2,407,616 parameters"));

    /* single-branch checkpoint */
    snprintf(cmd, sizeof cmd, "%s convert --weights %s --cfg %s --out %s --no-fuse", gelan,
             golden_path(gcase, "weights.safetensors"), golden_path(gcase, "cfg.yaml"), single);
    CU_ASSERT(run_command_expect(cmd, 0, text, sizeof text));
    Model *m = model_load(single, NULL, NULL);
    CU_ASSERT_NONNULL_OK(m);
    if (m && x && want) {
        CU_ASSERT_EQUAL(model_num_params(m), 2442640);
        Tensor *y = eval_pred(m, x, 0);
        CU_ASSERT_NONNULL_OK(y);
        if (y) CU_ASSERT_EQUAL(check_close("--no-fuse pred", y->data, want->data, y->numel, RTOL, 0), 0);
        tensor_free(y);
    }
    model_free(m);
    snprintf(cmd, sizeof cmd, "%s info %s", gelan, single);
    CU_ASSERT(run_command_expect(cmd, 0, text, sizeof text));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "2,442,640 parameters"));

    /* a checkpoint with EMA: the EMA weights by default, the raw ones with --no-ema */
    CU_ASSERT_OK(write_ema_ckpt(gcase, ckpt));
    snprintf(cmd, sizeof cmd, "%s convert --weights %s --out %s", gelan, ckpt, out);
    CU_ASSERT(run_command_expect(cmd, 0, text, sizeof text));
    im = infer_model_load(out);
    if (x && want) check_infer(im, x, want, "from ema.*");
    infer_model_free(im);
    snprintf(cmd, sizeof cmd, "%s convert --weights %s --out %s --no-ema", gelan, ckpt, out);
    CU_ASSERT(run_command_expect(cmd, 0, text, sizeof text));
    /* the zero model.* weights fold into a zero first conv */
    SafeTensors *st = st_open(out);
    CU_ASSERT_NONNULL_OK(st);
    const StTensorInfo *ti = st ? st_find(st, "n0.w") : NULL;
    CU_ASSERT_PTR_NOT_NULL(ti);
    if (ti) {
        const float *w = st_data(st, ti);
        float mx = 0;
        for (size_t i = 0; i < st_numel(ti); i++) mx = fabsf(w[i]) > mx ? fabsf(w[i]) : mx;
        CU_ASSERT_EQUAL(mx, 0.0f);
        CU_ASSERT_STRING_EQUAL(st_metadata(st, "weights"), "model");
    }
    st_close(st);
    /* --ema on a file without ema.* is an error */
    snprintf(cmd, sizeof cmd, "%s convert --weights %s --out %s/none.safetensors --ema", gelan, single, dir);
    CU_ASSERT(run_command_expect(cmd, 1, text, sizeof text));

    unlink(out);
    unlink(single);
    unlink(ckpt);
    rmdir(dir);
    tensor_free(x);
    tensor_free(want);
}

SUITE_FN(convert) {
    CU_pSuite s = CU_add_suite("convert", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "yolov9-t_64_warm = reparam.pred (unfused and runtime)", test_golden_yolov9_t);
    CU_add_test(s, "yolov9-c-mini_64 = reparam.pred (unfused and runtime)", test_golden_yolov9_c_mini);
    CU_add_test(s, "yolov9-c-triple-mini_64 = reparam.pred (unfused and runtime)", test_golden_triple_mini);
    CU_add_test(s, "single head: identity + fuse", test_single_head_identity);
    CU_add_test(s, "yolov9-t -> gelan-t rows", test_structure_t);
    CU_add_test(s, "yolov9-c -> gelan-c rows", test_structure_c);
    CU_add_test(s, "yolov9-e -> gelan-e rows (Silence, CBLinear, CBFuse kept)", test_structure_e);
    CU_add_test(s, "yolov9-c-slim -> gelan-c-slim rows", test_structure_slim);
    CU_add_test(s, "Test11: 5,362,432 parameters fused", test_slim_params);
    CU_add_test(s, "yolov9-c-triple (full width, random) main head", test_triple_full);
    CU_add_test(s, "yolov9-e-mini (random): CBLinear/CBFuse kept, Silence", test_mini_e);
    CU_add_test(s, "ShuffleNetV2 graph (channel shuffle)", test_shufflenet_graph);
    CU_add_test(s, "gelan convert / info on the command line", test_cli);
    return 0;
}
