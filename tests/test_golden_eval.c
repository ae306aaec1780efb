/* Eval-mode parity with the official PyTorch YOLOv9 code: every layer output,
 * the level maps and the decoded predictions of the golden cases
 * (../shared/golden/README.md), plus the fused prediction, and the same via
 * `gelan trace` on the command line. Tolerance: the README's rtol 1e-4 of each
 * tensor's max |x| (its measured float32 error is ~1e-6). */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/tape.h"
#include "nn/model.h"
#include "tensor/error.h"
#include "tensor/safetensors.h"
#include "tests/testutil.h"

#define RTOL 1e-4

typedef struct {
    const SafeTensors *expected;
    int compared, failed;
    double worst;
    char worst_name[64];
} Compare;

/* Compares one tensor with the golden tensor of the same name and shape. */
static int compare_one(const char *name, const Tensor *t, void *ctx) {
    Compare *c = ctx;
    const StTensorInfo *ti = st_find(c->expected, name);
    if (!ti) {
        fprintf(stderr, "\n  %s: not in the golden file\n", name);
        c->failed++;
        return 0;
    }
    bool same = ti->ndim == t->ndim;
    for (int i = 0; same && i < t->ndim; i++) same = ti->shape[i] == t->shape[i];
    if (!same) {
        char buf[64];
        fprintf(stderr, "\n  %s: shape %s differs from the golden one\n", name, tensor_shape_str(t, buf, sizeof buf));
        c->failed++;
        return 0;
    }
    float *want = malloc(t->numel * sizeof *want);
    if (!want || st_read_f32(c->expected, name, want, t->numel)) {
        free(want);
        c->failed++;
        return 0;
    }
    double e = rel_error(t->data, want, t->numel);
    if (e > c->worst) {
        c->worst = e;
        snprintf(c->worst_name, sizeof c->worst_name, "%s", name);
    }
    if (check_close(name, t->data, want, t->numel, RTOL, 0)) c->failed++;
    c->compared++;
    free(want);
    return 0;
}

static Tensor *read_input(const char *path) {
    SafeTensors *st = st_open(path);
    if (!st) return NULL;
    const StTensorInfo *ti = st_find(st, "input");
    Tensor *x = NULL;
    if (ti && ti->ndim == 4) {
        x = tensor_new4((int)ti->shape[0], (int)ti->shape[1], (int)ti->shape[2], (int)ti->shape[3]);
        if (x && st_read_f32(st, "input", x->data, x->numel)) {
            tensor_free(x);
            x = NULL;
        }
    }
    st_close(st);
    return x;
}

/* How many golden tensors of the eval kinds (layer., output., eval.) there are. */
static int count_eval_names(const SafeTensors *st) {
    int n = 0;
    for (int i = 0; i < st_count(st); i++) {
        const char *k = st_info(st, i)->name;
        if (!strncmp(k, "layer.", 6) || !strncmp(k, "output.", 7) || !strncmp(k, "eval.", 5)) n++;
    }
    return n;
}

static void run_case(const char *gcase) {
    if (!shared_available()) {
        fprintf(stderr, "\n  ../shared not found: skipped\n");
        return;
    }
    Model *m = model_build_file(golden_path(gcase, "cfg.yaml"), NULL);
    CU_ASSERT_NONNULL_OK(m);
    if (!m) return;
    CU_ASSERT_OK(model_load_weights(m, golden_path(gcase, "weights.safetensors")));
    Tensor *x = read_input(golden_path(gcase, "input.safetensors"));
    SafeTensors *exp = st_open(golden_path(gcase, "expected.safetensors"));
    CU_ASSERT_NONNULL_OK(x);
    CU_ASSERT_NONNULL_OK(exp);
    Tape *t = tape_new();
    if (x && exp && t) {
        tape_set_grad_enabled(t, false);
        ModelOutput o;
        CU_ASSERT_OK(model_forward(m, t, x, false, &o));
        Compare c = {exp, 0, 0, 0, ""};
        CU_ASSERT_OK(model_eval_outputs(m, &o, compare_one, &c));
        CU_ASSERT_EQUAL(c.failed, 0);
        /* every golden eval tensor was produced (and compared) */
        CU_ASSERT_EQUAL(c.compared, count_eval_names(exp));
        printf("\n    %-24s %3d tensors, max rel. error %.2e (%s)", gcase, c.compared, c.worst, c.worst_name);
        if (st_find(exp, "fused.output.pred")) {
            CU_ASSERT_OK(model_fuse(m));
            CU_ASSERT_OK(model_forward(m, t, x, false, &o));
            Compare f = {exp, 0, 0, 0, ""};
            compare_one("fused.output.pred", o.pred[0], &f);
            CU_ASSERT_EQUAL(f.failed, 0);
            printf("; fused.output.pred %.2e", f.worst);
        }
    }
    tape_free(t);
    st_close(exp);
    tensor_free(x);
    model_free(m);
}

static void test_gelan_t(void) { run_case("gelan-t_64"); }
static void test_gelan_t_calib(void) { run_case("gelan-t_64_calib"); }
static void test_yolov9_t_warm(void) { run_case("yolov9-t_64_warm"); }
static void test_yolov9_c_mini(void) { run_case("yolov9-c-mini_64"); }
static void test_yolov9_c_triple_mini(void) { run_case("yolov9-c-triple-mini_64"); }

/* Train mode (what the loss and the trainer use): the raw maps of every head
 * and every BN running buffer after one train-mode forward, with the tape
 * recording. README tolerance for both: rtol 1e-3. */
static void run_train_case(const char *gcase, const char *weights_case) {
    if (!shared_available()) {
        fprintf(stderr, "\n  ../shared not found: skipped\n");
        return;
    }
    Model *m = model_build_file(golden_path(gcase, "cfg.yaml"), NULL);
    CU_ASSERT_NONNULL_OK(m);
    if (!m) return;
    CU_ASSERT_OK(model_load_weights(m, golden_path(weights_case, "weights.safetensors")));
    Tensor *x = read_input(golden_path(gcase, "input.safetensors"));
    SafeTensors *exp = st_open(golden_path(gcase, "expected.safetensors"));
    Tape *t = tape_new();
    CU_ASSERT_NONNULL_OK(x);
    CU_ASSERT_NONNULL_OK(exp);
    if (x && exp && t) {
        ModelOutput o;
        CU_ASSERT_OK(model_forward(m, t, x, true, &o));
        CU_ASSERT_PTR_NULL(o.pred[0]);
        Compare c = {exp, 0, 0, 0, ""}, r = {exp, 0, 0, 0, ""};
        char name[300];
        for (int h = 0; h < o.nheads; h++)
            for (int l = 0; l < o.nl; l++) {
                snprintf(name, sizeof name, "train.level.%s%d", model_head_name(m, h), l);
                CU_ASSERT_PTR_NOT_NULL(o.maps[h][l]);
                if (!o.maps[h][l]) continue;
                const StTensorInfo *ti = st_find(exp, name);
                CU_ASSERT_PTR_NOT_NULL(ti);
                float *want = ti ? malloc(o.maps[h][l]->numel * sizeof *want) : NULL;
                if (want && !st_read_f32(exp, name, want, o.maps[h][l]->numel)) {
                    double e = rel_error(o.maps[h][l]->data, want, o.maps[h][l]->numel);
                    if (e > c.worst) c.worst = e, snprintf(c.worst_name, sizeof c.worst_name, "%s", name);
                    CU_ASSERT_EQUAL(check_close(name, o.maps[h][l]->data, want, o.maps[h][l]->numel, 1e-3, 0), 0);
                    c.compared++;
                }
                free(want);
            }
        const NamedBuffer *bufs;
        int nb = model_buffers(m, &bufs);
        for (int i = 0; i < nb; i++) {
            snprintf(name, sizeof name, "running.%s", bufs[i].name);
            const StTensorInfo *ti = st_find(exp, name);
            CU_ASSERT_PTR_NOT_NULL(ti);
            float *want = ti ? malloc(bufs[i].t->numel * sizeof *want) : NULL;
            if (want && !st_read_f32(exp, name, want, bufs[i].t->numel)) {
                double e = rel_error(bufs[i].t->data, want, bufs[i].t->numel);
                if (e > r.worst) r.worst = e, snprintf(r.worst_name, sizeof r.worst_name, "%s", name);
                if (check_close(name, bufs[i].t->data, want, bufs[i].t->numel, 1e-3, 0)) r.failed++;
                r.compared++;
            }
            free(want);
        }
        CU_ASSERT_EQUAL(r.failed, 0);
        CU_ASSERT_EQUAL(c.compared, o.nheads * o.nl);
        printf("\n    %-24s train maps %d, max rel. error %.2e (%s); running buffers %d, %.2e (%s)", gcase, c.compared,
               c.worst, c.worst_name, r.compared, r.worst, r.worst_name);
    }
    tape_free(t);
    st_close(exp);
    tensor_free(x);
    model_free(m);
}

/* gelan-t_64_train's weights.safetensors is a link to the calib case's */
static void test_train_gelan_t(void) { run_train_case("gelan-t_64_train", "gelan-t_64_calib"); }
static void test_train_yolov9_t(void) { run_train_case("yolov9-t_64_warm", "yolov9-t_64_warm"); }
static void test_train_yolov9_c_mini(void) { run_train_case("yolov9-c-mini_64", "yolov9-c-mini_64"); }

/* The same through the command line: `gelan trace` ($GELAN_BIN, default
 * build/gelan), then its file compared with the golden one. */
static void test_trace_cli(void) {
    const char *gelan = getenv("GELAN_BIN");
    if (!gelan || !*gelan) gelan = "build/gelan";
    if (access(gelan, X_OK) != 0 || !shared_available()) {
        fprintf(stderr, "\n  no %s or ../shared: skipped\n", gelan);
        return;
    }
    const char *gcase = "gelan-t_64_calib";
    char out[] = "/tmp/gelan_trace_XXXXXX";
    int fd = mkstemp(out);
    CU_ASSERT(fd >= 0);
    if (fd < 0) return;
    close(fd);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s trace --cfg %s --weights %s --in %s --out %s --fuse --threads 1", gelan,
             golden_path(gcase, "cfg.yaml"), golden_path(gcase, "weights.safetensors"),
             golden_path(gcase, "input.safetensors"), out);
    CU_ASSERT_EQUAL(system(cmd), 0);
    SafeTensors *got = st_open(out), *exp = st_open(golden_path(gcase, "expected.safetensors"));
    CU_ASSERT_NONNULL_OK(got);
    CU_ASSERT_NONNULL_OK(exp);
    if (got && exp) {
        /* every golden tensor of this case (eval + fused) is in the trace and agrees */
        Compare c = {exp, 0, 0, 0, ""};
        for (int i = 0; i < st_count(exp); i++) {
            const StTensorInfo *ti = st_info(exp, i);
            const StTensorInfo *gi = st_find(got, ti->name);
            CU_ASSERT_PTR_NOT_NULL(gi);
            if (!gi) {
                fprintf(stderr, "\n  %s missing from the trace\n", ti->name);
                continue;
            }
            int shape[ST_MAX_DIMS];
            for (int d = 0; d < gi->ndim; d++) shape[d] = (int)gi->shape[d];
            Tensor *t = tensor_new(gi->ndim, shape);
            CU_ASSERT_OK(st_read_f32(got, gi->name, t->data, t->numel));
            compare_one(gi->name, t, &c);
            tensor_free(t);
        }
        CU_ASSERT_EQUAL(c.failed, 0);
        CU_ASSERT_EQUAL(c.compared, st_count(exp));
        printf("\n    gelan trace (%s) %d tensors, max rel. error %.2e (%s)", gcase, c.compared, c.worst, c.worst_name);
    }
    st_close(got);
    st_close(exp);
    unlink(out);
}

SUITE_FN(golden_eval) {
    CU_pSuite s = CU_add_suite("golden_eval", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "gelan-t_64 (fresh)", test_gelan_t);
    CU_add_test(s, "gelan-t_64_calib", test_gelan_t_calib);
    CU_add_test(s, "yolov9-t_64_warm (dual)", test_yolov9_t_warm);
    CU_add_test(s, "yolov9-c-mini_64 (dual, CBLinear/CBFuse)", test_yolov9_c_mini);
    CU_add_test(s, "yolov9-c-triple-mini_64 (triple)", test_yolov9_c_triple_mini);
    CU_add_test(s, "train mode: gelan-t_64_train maps and BN buffers", test_train_gelan_t);
    CU_add_test(s, "train mode: yolov9-t_64_warm maps and BN buffers", test_train_yolov9_t);
    CU_add_test(s, "train mode: yolov9-c-mini_64 maps and BN buffers", test_train_yolov9_c_mini);
    CU_add_test(s, "gelan trace on the command line", test_trace_cli);
    return 0;
}
