/* build/gelan's commands that run gelan-infer's code, against gelan-infer
 * itself: `gelan detect --model` prints the same boxes and writes the same
 * annotated images as `gelan-infer detect`, and `gelan bench` prints the same
 * table as `gelan-infer bench`, on a model made by `gelan convert`. The binaries
 * are $GELAN_BIN (default build/gelan) and gelan-infer next to it; the model is
 * gelan-t from ../shared/golden with its class biases set to 0, so that the
 * scores are about 0.5 and NMS keeps boxes of many places and sizes (the golden
 * weights' initial biases put every score near 1e-5, and no box above --conf). */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tensor/error.h"
#include "tensor/safetensors.h"
#include "tests/testutil.h"

#define SUITE "cli_infer"
#define GCASE "gelan-t_64"

static char gelan[512], gelan_infer[512];
static const char *const IMAGES[] = {"000000000110.jpg", "000000000049.jpg"}; /* 640x480, 381x500 */

static int setup(void) {
    snprintf(gelan, sizeof gelan, "%s", gelan_bin_path());
    const char *slash = strrchr(gelan, '/');
    snprintf(gelan_infer, sizeof gelan_infer, "%.*sgelan-infer", slash ? (int)(slash - gelan + 1) : 0, gelan);
    return tmp_dir_make(SUITE);
}
static int teardown(void) { return tmp_dir_remove(SUITE); }

static bool have_inputs(void) {
    if (access(gelan, X_OK) || access(gelan_infer, X_OK) || !shared_available() ||
        access(shared_path("data/coco128/images/train2017"), R_OK)) {
        fprintf(stderr, "\n  skipped: needs %s, %s and ../shared (golden, coco128)\n", gelan, gelan_infer);
        return false;
    }
    return true;
}

/* The golden gelan-t weights with the biases of the class convs (model.22.cv3.*.2.bias) at 0. */
static int write_spread_weights(const char *path) {
    SafeTensors *st = st_open(golden_path(GCASE, "weights.safetensors"));
    StWriter *w = st_writer_new();
    int rc = st && w ? 0 : -1, zeroed = 0;
    for (int i = 0; !rc && i < st_count(st); i++) {
        const StTensorInfo *ti = st_info(st, i);
        const void *data = st_data(st, ti);
        void *zeros = NULL;
        if (!strncmp(ti->name, "model.22.cv3.", 13) && strstr(ti->name, ".2.bias")) {
            data = zeros = calloc(1, ti->nbytes);
            zeroed++;
        }
        rc = data ? st_writer_add(w, ti->name, ti->dtype, ti->ndim, ti->shape, data, ti->nbytes, 1) : -1;
        free(zeros);
    }
    if (!rc && zeroed != 3) rc = gelan_error("%s: %d class biases, expected 3", GCASE, zeroed);
    if (!rc) rc = st_writer_save(w, path);
    st_writer_free(w);
    st_close(st);
    return rc;
}

/* The converted model (made once for the suite), or NULL. */
static const char *model_path(void) {
    static char path[512];
    static int state; /* 0 not yet, 1 made, -1 failed */
    if (state) return state > 0 ? path : NULL;
    state = -1;
    snprintf(path, sizeof path, "%s", tmp_dir_path(SUITE, "gelan-t.infer.safetensors"));
    char cmd[4096], out[4096];
    const char *weights = tmp_dir_path(SUITE, "gelan-t-spread.safetensors");
    CU_ASSERT_OK(write_spread_weights(weights));
    snprintf(cmd, sizeof cmd, "%s convert --weights %s --cfg %s --out %s", gelan, weights,
             golden_path(GCASE, "cfg.yaml"), path);
    if (run_command_expect(cmd, 0, out, sizeof out)) state = 1;
    return state > 0 ? path : NULL;
}

/* Runs cmd; its output (stdout and stderr) in out, which holds it whole. */
static bool run_ok(const char *cmd, char *out, size_t len) {
    bool ok = run_command_expect(cmd, 0, out, len);
    CU_ASSERT(ok);
    CU_ASSERT(strlen(out) + 1 < len);
    return ok;
}

static bool same_file(const char *a, const char *b) {
    char cmd[2048], out[256];
    snprintf(cmd, sizeof cmd, "cmp %s %s", a, b);
    return run_command(cmd, out, sizeof out) == 0;
}

static void test_detect_model(void) {
    if (!have_inputs()) return;
    const char *model = model_path();
    CU_ASSERT_PTR_NOT_NULL(model);
    if (!model) return;
    /* a directory with a landscape and a portrait image (letterbox both ways) */
    const char *src = tmp_dir_path(SUITE, "images");
    char cmd[4096], a[16384], b[16384];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", src);
    for (size_t i = 0; i < sizeof IMAGES / sizeof *IMAGES; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "data/coco128/images/train2017/%s", IMAGES[i]);
        snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " && cp %s %s/", shared_path(rel), src);
    }
    CU_ASSERT_EQUAL(run_command(cmd, a, sizeof a), 0);
    const char *opts = "--img 160 --conf 0.4 --iou 0.6 --max-det 12";
    snprintf(cmd, sizeof cmd, "%s detect --model %s --source %s --out %s %s --threads 1", gelan, model, src,
             tmp_dir_path(SUITE, "out-gelan"), opts);
    if (!run_ok(cmd, a, sizeof a)) return;
    snprintf(cmd, sizeof cmd, "%s detect --model %s --source %s --out %s %s --threads 2", gelan_infer, model, src,
             tmp_dir_path(SUITE, "out-gelan-infer"), opts);
    if (!run_ok(cmd, b, sizeof b)) return;

    /* every line but the last (which names the output directory) is the same */
    char *end_a = strstr(a, " images, annotated copies in "), *end_b = strstr(b, " images, annotated copies in ");
    CU_ASSERT(end_a && end_b);
    if (!end_a || !end_b) return;
    *end_a = *end_b = '\0';
    CU_ASSERT_STRING_EQUAL(a, b);
    if (strcmp(a, b)) fprintf(stderr, "\n  gelan detect --model:\n%s\n  gelan-infer detect:\n%s", a, b);

    /* the comparison has something to compare: both images, with boxes of different sizes */
    int boxes = 0, images = 0;
    char x1[32] = "", first_x1[32] = "";
    bool distinct = false;
    for (char *line = strtok(a, "\n"); line; line = strtok(NULL, "\n")) {
        float s, c1, c2, c3, c4;
        char cls[64];
        if (strstr(line, ".jpg: 640x480 (160x128 input), ") || strstr(line, ".jpg: 381x500 (128x160 input), "))
            images++;
        else if (sscanf(line, "%63s %f %f %f %f %f", cls, &s, &c1, &c2, &c3, &c4) == 6 && s > 0.4f && s <= 1.f) {
            boxes++;
            snprintf(x1, sizeof x1, "%.1f", c1);
            if (!*first_x1) snprintf(first_x1, sizeof first_x1, "%s", x1);
            distinct |= strcmp(x1, first_x1) != 0;
        }
    }
    CU_ASSERT_EQUAL(images, 2);
    CU_ASSERT(boxes >= 4);
    CU_ASSERT(distinct);
    printf("\n    %d boxes on %d images, the same from both programs", boxes, images);

    /* the same annotated images */
    for (size_t i = 0; i < sizeof IMAGES / sizeof *IMAGES; i++) {
        char p1[600], p2[600];
        snprintf(p1, sizeof p1, "%s/%s", tmp_dir_path(SUITE, "out-gelan"), IMAGES[i]);
        snprintf(p2, sizeof p2, "%s/%s", tmp_dir_path(SUITE, "out-gelan-infer"), IMAGES[i]);
        CU_ASSERT(same_file(p1, p2));
    }
}

/* The value of a "| FIELD | VALUE |" row of the table, or "" */
static const char *table_value(const char *table, const char *field, char *buf, size_t len) {
    char key[96];
    snprintf(key, sizeof key, "| %s | ", field);
    const char *p = strstr(table, key);
    buf[0] = '\0';
    if (p) {
        p += strlen(key);
        const char *e = strstr(p, " |");
        snprintf(buf, len, "%.*s", e ? (int)(e - p) : 0, p);
    }
    return buf;
}

static void test_bench_model(void) {
    if (!have_inputs()) return;
    const char *model = model_path();
    CU_ASSERT_PTR_NOT_NULL(model);
    if (!model) return;
    char cmd[4096], a[8192], b[8192];
    const char *opts = "--runs 3 --warmup 1 --img 96 --batch 2 --threads 1 --profile 3";
    snprintf(cmd, sizeof cmd, "%s bench --model %s %s", gelan, model, opts);
    if (!run_ok(cmd, a, sizeof a)) return;
    snprintf(cmd, sizeof cmd, "%s bench --model %s %s", gelan_infer, model, opts);
    if (!run_ok(cmd, b, sizeof b)) return;
    /* the rows that do not depend on timing are equal; the timed ones are there */
    static const char *const same[] = {"MODEL NAME", "input", "PARAMS", "GFLOPS", "LAYERS"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        char va[256], vb[256];
        table_value(a, same[i], va, sizeof va), table_value(b, same[i], vb, sizeof vb);
        CU_ASSERT(*va != '\0');
        CU_ASSERT_STRING_EQUAL(va, vb);
    }
    static const char *const timed[] = {"avg inference time", "max inference time", "min inference time",
                                        "avg CPU temp"};
    for (size_t i = 0; i < sizeof timed / sizeof *timed; i++) {
        char va[256], vb[256];
        CU_ASSERT(*table_value(a, timed[i], va, sizeof va) != '\0');
        CU_ASSERT(*table_value(b, timed[i], vb, sizeof vb) != '\0');
    }
    char v[256];
    CU_ASSERT_STRING_EQUAL(table_value(a, "PARAMS", v, sizeof v), "2407616"); /* gelan-t fused, as gelan info */
    CU_ASSERT_PTR_NOT_NULL(strstr(table_value(a, "input", v, sizeof v), "2x3x96x96, 1 thread"));
    CU_ASSERT_PTR_NOT_NULL(strstr(a, "slowest nodes (ms per run):"));
}

static void test_usage_errors(void) {
    if (!have_inputs()) return;
    const char *model = model_path();
    if (!model) return;
    char cmd[4096], out[8192];
    static const struct {
        const char *args, *says;
        int status;
    } cases[] = {
        {"bench", "--model is required", 2},
        {"bench --model %s --runs 0", "--runs", 2},
        {"bench --model /nonexistent.safetensors", "/nonexistent.safetensors", 1},
        {"detect --model %s", "--source is required", 2},
        {"detect --model %s --weights w.safetensors --source x.jpg", "one of --weights and --model", 2},
        {"detect --model %s --data configs/data/shapes.yaml", "--model takes --source", 2},
        {"detect --model %s --source x.jpg --conf 1.5", "--conf", 2},
        {"detect --model %s --source /nonexistent.jpg", "/nonexistent.jpg", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char args[1024];
        snprintf(args, sizeof args, cases[i].args, model);
        snprintf(cmd, sizeof cmd, "%s %s --out %s", gelan, args, tmp_dir_path(SUITE, "out-errors"));
        if (!strncmp(args, "bench", 5)) snprintf(cmd, sizeof cmd, "%s %s", gelan, args);
        CU_ASSERT(run_command_expect(cmd, cases[i].status, out, sizeof out));
        if (!strstr(out, cases[i].says)) fprintf(stderr, "\n  `%s` does not say '%s':\n%s", cmd, cases[i].says, out);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, cases[i].says));
    }
}

SUITE_FN(cli_infer) {
    CU_pSuite s = CU_add_suite(SUITE, setup, teardown);
    if (!s) return -1;
    CU_add_test(s, "gelan detect --model: the boxes and images of gelan-infer detect", test_detect_model);
    CU_add_test(s, "gelan bench: the table of gelan-infer bench", test_bench_model);
    CU_add_test(s, "gelan bench / detect --model: usage and file errors", test_usage_errors);
    return 0;
}
