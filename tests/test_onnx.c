/* ONNX export (export/onnx_export.h): every exported model passes
 * onnx.checker.check_model (Debian's python3-onnx, tools/onnx_check.py) and,
 * run in ONNX Runtime (npm onnxruntime-node, tools/ort_run.mjs), gives the
 * runtime's `pred` within 1e-4 of max |x| (the golden README's tolerance):
 * a hand-written graph with every op and key the exporter maps, the
 * converted golden yolov9-t_64_warm (also against the official reparam.pred,
 * and at a second input size from the same file: dynamic shapes), and a
 * gelan-c with random weights at 640; the command line; and refusals (an
 * unknown op, int8 `qconv`, which the runtime runs and the exporter has no
 * ONNX form for yet, a file that is not an inference model), which leave the
 * output path untouched.
 *
 * ONNX Runtime comes from `npm install --ignore-scripts` at the repository
 * root (.ci/run does it); without node_modules/onnxruntime-node the ORT
 * comparisons are skipped with a message, the rest still runs. */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "export/onnx_export.h"
#include "infer/infer.h"
#include "nn/convert.h"
#include "nn/model.h"
#include "tensor/error.h"
#include "tensor/rng.h"
#include "tensor/safetensors.h"
#include "tests/testutil.h"

#define RTOL 1e-4

/* ---- helpers -------------------------------------------------------------------- */
static char tmpdir[64];

static const char *tmp_path(const char *name) {
    static char bufs[8][256];
    static int next;
    char *b = bufs[next++ & 7];
    snprintf(b, 256, "%s/%s", tmpdir, name);
    return b;
}

/* Runs a shell command; its exit status, and the tail of stdout+stderr in out. */
static int run(const char *cmd, char *out, size_t len) {
    char full[4096], chunk[1024], *all = NULL;
    size_t n = 0;
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r"), *mem = open_memstream(&all, &n);
    if (!p || !mem) {
        if (p) pclose(p);
        if (mem) fclose(mem);
        free(all);
        return -1;
    }
    for (size_t got; (got = fread(chunk, 1, sizeof chunk, p)) > 0;) fwrite(chunk, 1, got, mem);
    fclose(mem);
    size_t keep = n < len - 1 ? n : len - 1;
    memcpy(out, all + n - keep, keep);
    out[keep] = '\0';
    free(all);
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int ort_available(void) {
    static int avail = -1;
    if (avail < 0) {
        char out[256];
        avail = access("node_modules/onnxruntime-node/package.json", R_OK) == 0 &&
                run("node --version", out, sizeof out) == 0;
        if (!avail)
            fprintf(stderr,
                    "\n  node_modules/onnxruntime-node or node not found (`npm install --ignore-scripts` at the "
                    "repository root): ONNX Runtime comparisons SKIPPED ");
    }
    return avail;
}

/* onnx.checker.check_model with full shape inference; the summary line is printed */
static int onnx_check(const char *path) {
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tools/onnx_check.py %s", path);
    int rc = run(cmd, out, sizeof out);
    if (rc != 0) fprintf(stderr, "\n  onnx_check failed (%d):\n%s", rc, out);
    return rc;
}

static int save_input(const char *path, const float *x, int n, int c, int h, int w) {
    StWriter *wr = st_writer_new();
    int shape[4] = {n, c, h, w};
    int rc = wr ? st_writer_add_f32(wr, "input", 4, shape, x) : -1;
    if (!rc) rc = st_writer_save(wr, path);
    st_writer_free(wr);
    return rc;
}

/* Runs the ONNX model in ONNX Runtime on x [n,c,h,w]; its `output.pred`
 * (malloc'd, *numel values), or NULL. */
static float *ort_pred(const char *onnx, const float *x, int n, int c, int h, int w, size_t *numel) {
    const char *in = tmp_path("ort_in.safetensors"), *outp = tmp_path("ort_out.safetensors");
    if (save_input(in, x, n, c, h, w)) return NULL;
    char cmd[1024], text[4096];
    snprintf(cmd, sizeof cmd, "node tools/ort_run.mjs --model %s --in %s --out %s --threads 2", onnx, in, outp);
    if (run(cmd, text, sizeof text) != 0) {
        fprintf(stderr, "\n  `%s` failed:\n%s", cmd, text);
        return NULL;
    }
    SafeTensors *st = st_open(outp);
    const StTensorInfo *ti = st ? st_find(st, "output.pred") : NULL;
    float *y = ti ? malloc(st_numel(ti) * sizeof *y) : NULL;
    if (y && st_read_f32(st, "output.pred", y, st_numel(ti))) free(y), y = NULL;
    if (y) *numel = st_numel(ti);
    st_close(st);
    unlink(in), unlink(outp);
    return y;
}

/* The ONNX model run in ORT equals the runtime model on x (rtol 1e-4 of max|x|). */
static void compare_ort(const char *onnx, InferModel *im, const float *x, int n, int c, int h, int w,
                        const char *what) {
    if (!ort_available()) return;
    InferShape os;
    const float *want = infer_model_run(im, x, n, c, h, w, &os);
    CU_ASSERT_NONNULL_OK(want);
    size_t numel = 0, expect = 1;
    float *got = ort_pred(onnx, x, n, c, h, w, &numel);
    CU_ASSERT_PTR_NOT_NULL(got);
    if (!want || !got) {
        free(got);
        return;
    }
    for (int d = 0; d < os.ndim; d++) expect *= (size_t)os.shape[d];
    CU_ASSERT_EQUAL(numel, expect);
    if (numel == expect) {
        CU_ASSERT_EQUAL(check_close(what, got, want, numel, RTOL, 0), 0);
        printf("; %s %dx%dx%dx%d %.1e", what, n, c, h, w, rel_error(got, want, numel));
    }
    free(got);
}

static float *random_input(size_t n, uint64_t seed) {
    float *x = malloc(n * sizeof *x);
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; x && i < n; i++) x[i] = rng_uniform(&r);
    return x;
}

static int graph_lookup(void *ctx, const char *name, InferTensor *out) {
    const InferGraph *g = ctx;
    for (int i = 0; i < g->ntensors; i++) {
        if (strcmp(g->tensors[i].name, name)) continue;
        out->data = g->tensors[i].data;
        out->ndim = g->tensors[i].ndim;
        for (int d = 0; d < out->ndim; d++) out->shape[d] = g->tensors[i].shape[d];
        return 0;
    }
    return -1;
}

static Tensor *read_tensor(const char *path, const char *name) {
    SafeTensors *st = st_open(path);
    const StTensorInfo *ti = st ? st_find(st, name) : NULL;
    Tensor *x = NULL;
    if (ti && ti->ndim >= 1 && ti->ndim <= TENSOR_MAX_DIMS) {
        int shape[TENSOR_MAX_DIMS];
        for (int d = 0; d < ti->ndim; d++) shape[d] = (int)ti->shape[d];
        x = tensor_new(ti->ndim, shape);
        if (x && st_read_f32(st, name, x->data, x->numel)) tensor_free(x), x = NULL;
    }
    st_close(st);
    return x;
}

/* ---- every op and key: a hand-written graph ----------------------------------------- */
/* Ops and keys that `gelan convert` never writes for GELAN (relu, leakyrelu, no
 * bias, dilation, groups, padded pools, count_include_pad=0, upsample size=, a
 * detect with reg_max 4, three levels of different sizes, a fractional stride). */
static const char *OPS_GRAPH =
    "conv x1 input c=8 k=3 s=2 p=1 act=relu w=w1 b=b1\n"                 /* 16x24 -> 8x12 */
    "conv x2 x1 c=8 k=3 p=2 d=2 g=2 act=leakyrelu alpha=0.1 w=w2 b=b2\n" /* dilated, grouped */
    "avgpool x3 x2 k=3 s=1 p=1 count_include_pad=0\n"
    "avgpool x4 x2 k=3 s=2 p=1\n" /* count_include_pad=1 with padding: 4x6 */
    "maxpool x5 x2 k=3 s=2 p=1\n"
    "upsample x6 x4 size=6,9\n" /* 4x6 -> 6x9 */
    "split x7,x8 x5 sizes=3,5\n"
    "upsample x9 x8 scale=2\n" /* 4x6 -> 8x12 */
    "add x10 x3,x1\n"
    "conv x11 x10 c=8 k=1 w=w3\n" /* no bias, no activation */
    "concat x12 x11,x9\n"
    "conv x13 x12 c=18 k=1 act=silu w=w4 b=b4\n" /* the levels: 4*reg_max + nc = 18 channels */
    "conv x14 x7 c=18 k=3 w=w5 b=b5\n"
    "conv x15 x6 c=18 k=1 w=w6 b=b6\n"
    "detect pred x13,x14,x15 nc=2 reg_max=4 strides=2,4,2.5\n";

typedef struct {
    const char *name;
    int ndim, shape[4];
    float *data;
} OpsWeight;

static OpsWeight OPS_W[] = {
    {"w1", 4, {8, 3, 3, 3}, NULL},  {"b1", 1, {8}, NULL},           {"w2", 4, {8, 4, 3, 3}, NULL},
    {"b2", 1, {8}, NULL},           {"w3", 4, {8, 8, 1, 1}, NULL},  {"w4", 4, {18, 13, 1, 1}, NULL},
    {"b4", 1, {18}, NULL},          {"w5", 4, {18, 3, 3, 3}, NULL}, {"b5", 1, {18}, NULL},
    {"w6", 4, {18, 8, 1, 1}, NULL}, {"b6", 1, {18}, NULL},
};
#define N_OPS_W ((int)(sizeof OPS_W / sizeof OPS_W[0]))

static int ops_lookup(void *ctx, const char *name, InferTensor *out) {
    (void)ctx;
    for (int i = 0; i < N_OPS_W; i++) {
        if (strcmp(OPS_W[i].name, name)) continue;
        out->data = OPS_W[i].data;
        out->ndim = OPS_W[i].ndim;
        for (int d = 0; d < out->ndim; d++) out->shape[d] = OPS_W[i].shape[d];
        return 0;
    }
    return -1;
}

static void test_ops(void) {
    Rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < N_OPS_W; i++) {
        size_t n = 1;
        for (int d = 0; d < OPS_W[i].ndim; d++) n *= (size_t)OPS_W[i].shape[d];
        OPS_W[i].data = malloc(n * sizeof(float));
        for (size_t k = 0; k < n; k++) OPS_W[i].data[k] = 2.f * rng_uniform(&r) - 1.f; /* logits of several units */
    }
    const char *onnx = tmp_path("ops.onnx");
    OnnxExportInfo info;
    CU_ASSERT_OK(onnx_export_graph(OPS_GRAPH, "[\"a\",\"b\"]", ops_lookup, NULL, NULL, onnx, &info));
    CU_ASSERT_EQUAL(info.graph_nodes, 15);
    CU_ASSERT_EQUAL(info.nc, 2);
    CU_ASSERT_STRING_EQUAL(info.output, "pred");
    CU_ASSERT_EQUAL(info.input_channels, 3);
    CU_ASSERT_EQUAL(onnx_check(onnx), 0);
    InferModel *im = infer_model_build(OPS_GRAPH, NULL, ops_lookup, NULL);
    CU_ASSERT_NONNULL_OK(im);
    float *x = random_input(2 * 3 * 16 * 24, 11);
    printf("\n    ");
    if (im && x) compare_ort(onnx, im, x, 2, 3, 16, 24, "every op");
    free(x);
    infer_model_free(im);
    for (int i = 0; i < N_OPS_W; i++) free(OPS_W[i].data), OPS_W[i].data = NULL;
    unlink(onnx);
}

/* ---- the converted golden yolov9-t ---------------------------------------------------- */
static void test_golden_t(void) {
    if (!shared_available()) {
        fprintf(stderr, "\n  ../shared not found: skipped");
        return;
    }
    const char *gcase = "yolov9-t_64_warm";
    Model *src = model_build_file(golden_path(gcase, "cfg.yaml"), NULL), *single = NULL;
    CU_ASSERT_NONNULL_OK(src);
    if (!src) return;
    CU_ASSERT_OK(model_load_weights(src, golden_path(gcase, "weights.safetensors")));
    CU_ASSERT_NONNULL_OK(single = convert_single_branch(src, "gelan-t"));
    InferGraph g = {0};
    if (single) CU_ASSERT_OK(model_fuse(single));
    if (single) CU_ASSERT_OK(convert_graph(single, &g));
    const char *onnx = tmp_path("t.onnx");
    char *names = convert_default_names(80);
    OnnxExportInfo info;
    if (g.text) CU_ASSERT_OK(onnx_export_graph(g.text, names, graph_lookup, &g, NULL, onnx, &info));
    if (g.text) {
        CU_ASSERT_EQUAL(info.graph_nodes, g.nnodes);
        CU_ASSERT_EQUAL(info.params, (size_t)2407616); /* the fused gelan-t without the fixed DFL weights */
        CU_ASSERT_EQUAL(onnx_check(onnx), 0);
    }
    InferModel *im = g.text ? infer_model_build(g.text, names, graph_lookup, &g) : NULL;
    Tensor *x = read_tensor(golden_path(gcase, "input.safetensors"), "input");
    Tensor *want = read_tensor(golden_path(gcase, "expected.safetensors"), "reparam.pred");
    CU_ASSERT_NONNULL_OK(x);
    CU_ASSERT_NONNULL_OK(want);
    printf("\n    ");
    if (im && x && want && ort_available()) {
        compare_ort(onnx, im, x->data, tN(x), tC(x), tH(x), tW(x), "yolov9-t -> gelan-t vs runtime");
        size_t n = 0; /* and against the official code */
        float *got = ort_pred(onnx, x->data, tN(x), tC(x), tH(x), tW(x), &n);
        CU_ASSERT(got && n == want->numel);
        if (got && n == want->numel) {
            CU_ASSERT_EQUAL(check_close("ONNX vs reparam.pred", got, want->data, n, RTOL, 0), 0);
            printf("; vs official reparam.pred %.1e", rel_error(got, want->data, n));
        }
        free(got);
        /* the same file at another size and batch: dynamic shapes */
        float *x2 = random_input(1 * 3 * 96 * 160, 5);
        if (x2) compare_ort(onnx, im, x2, 1, 3, 96, 160, "same file");
        free(x2);
    }
    tensor_free(x);
    tensor_free(want);
    infer_model_free(im);
    free(names);
    convert_graph_free(&g);
    model_free(single);
    model_free(src);
    unlink(onnx);
}

/* ---- gelan-c with random weights at 640 ------------------------------------------------ */
static void test_gelan_c_640(void) {
    ModelOptions opt = {.nc = 0, .seed = 3};
    Model *m = model_build_file("configs/models/gelan-c.yaml", &opt);
    CU_ASSERT_NONNULL_OK(m);
    if (!m) return;
    InferGraph g = {0};
    CU_ASSERT_OK(model_fuse(m));
    CU_ASSERT_OK(convert_graph(m, &g));
    const char *onnx = tmp_path("c.onnx");
    OnnxExportInfo info;
    if (g.text) CU_ASSERT_OK(onnx_export_graph(g.text, NULL, graph_lookup, &g, NULL, onnx, &info));
    if (g.text) CU_ASSERT_EQUAL(onnx_check(onnx), 0);
    InferModel *im = g.text ? infer_model_build(g.text, NULL, graph_lookup, &g) : NULL;
    float *x = random_input(3 * 640 * 640, 9);
    printf("\n    ");
    if (im && x) compare_ort(onnx, im, x, 1, 3, 640, 640, "gelan-c random");
    free(x);
    infer_model_free(im);
    convert_graph_free(&g);
    model_free(m);
    unlink(onnx);
}

/* ---- refusals ---------------------------------------------------------------------- */
static int no_temporaries(void) {
    DIR *d = opendir(tmpdir);
    int clean = d != NULL;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.")) {
            fprintf(stderr, "\n  left behind: %s", e->d_name);
            clean = 0;
        }
    if (d) closedir(d);
    return clean;
}

static int file_is(const char *path, const char *text) {
    char buf[256] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    return n == strlen(text) && !memcmp(buf, text, n);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) fputs(text, f), fclose(f);
}

static void test_refused(void) {
    const char *out = tmp_path("keep.onnx");
    write_file(out, "an existing file");
    /* an op nobody knows: refused by the runtime's parser, named */
    const char *bad = "conv x1 input c=4 k=1 w=w b=b\nshuffle x2 x1 groups=2\n";
    float w[12] = {0}, b[4] = {0};
    InferGraph g = {0};
    GraphTensor t[2] = {{.name = "w", .ndim = 4, .shape = {4, 3, 1, 1}, .data = w},
                        {.name = "b", .ndim = 1, .shape = {4}, .data = b}};
    g.tensors = t, g.ntensors = 2;
    CU_ASSERT_EQUAL(onnx_export_graph(bad, NULL, graph_lookup, &g, NULL, out, NULL), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "'shuffle'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "export"));
    printf("\n    refused: %s", gelan_last_error());
    CU_ASSERT(file_is(out, "an existing file"));

    /* an op the runtime runs and the exporter has no ONNX form for (yet): int8 qconv */
    const char *q = "qconv x1 input c=4 k=1 w=w ws=ws b=b sx=0.02 zp=128\n";
    float scales[4] = {0.01f, 0.01f, 0.01f, 0.01f};
    GraphTensor qt[3] = {t[0], t[1], {.name = "ws", .ndim = 1, .shape = {4}, .data = scales}};
    InferGraph qg = {.tensors = qt, .ntensors = 3};
    InferModel *im = infer_model_build(q, NULL, graph_lookup, &qg);
    CU_ASSERT_NONNULL_OK(im); /* the runtime takes it */
    infer_model_free(im);
    CU_ASSERT_EQUAL(onnx_export_graph(q, NULL, graph_lookup, &qg, NULL, out, NULL), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "op 'qconv' has no ONNX form"));
    printf("; %s", gelan_last_error());
    CU_ASSERT(file_is(out, "an existing file"));

    /* the unknown op as a model file, through onnx_export_model */
    const char *model = tmp_path("bad.safetensors");
    StWriter *wr = st_writer_new();
    int ws[4] = {4, 3, 1, 1}, bs[1] = {4};
    CU_ASSERT_OK(st_writer_set_metadata(wr, "format", "gelan-infer/1"));
    CU_ASSERT_OK(st_writer_set_metadata(wr, "graph", bad));
    CU_ASSERT_OK(st_writer_add_f32(wr, "w", 4, ws, w));
    CU_ASSERT_OK(st_writer_add_f32(wr, "b", 1, bs, b));
    CU_ASSERT_OK(st_writer_save(wr, model));
    CU_ASSERT_EQUAL(onnx_export_model(model, NULL, out, NULL), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "'shuffle'"));
    CU_ASSERT(file_is(out, "an existing file"));

    /* not an inference model */
    CU_ASSERT_OK(st_writer_set_metadata(wr, "format", "gelan-ckpt/1"));
    CU_ASSERT_OK(st_writer_save(wr, model));
    st_writer_free(wr);
    CU_ASSERT_EQUAL(onnx_export_model(model, NULL, out, NULL), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "gelan-ckpt/1"));
    CU_ASSERT(file_is(out, "an existing file"));

    /* a directory that does not exist: an error, nothing created */
    const char *good = "conv x1 input c=4 k=1 w=w b=b\n";
    CU_ASSERT_EQUAL(onnx_export_graph(good, NULL, graph_lookup, &g, NULL, tmp_path("no/such/dir.onnx"), NULL), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "no/such/dir.onnx"));
    /* and the good graph exports over the existing file */
    CU_ASSERT_OK(onnx_export_graph(good, NULL, graph_lookup, &g, NULL, out, NULL));
    CU_ASSERT_FALSE(file_is(out, "an existing file"));
    CU_ASSERT_EQUAL(onnx_check(out), 0);
    CU_ASSERT(no_temporaries());
    unlink(out), unlink(model);
}

/* ---- the command line ----------------------------------------------------------------- */
static const char *gelan_bin(void) {
    const char *g = getenv("GELAN_BIN");
    return g && *g ? g : "build/gelan";
}

static int same_bytes(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

static void test_cli(void) {
    const char *gelan = gelan_bin();
    if (access(gelan, X_OK) != 0 || !shared_available()) {
        fprintf(stderr, "\n  no %s or ../shared: skipped", gelan);
        return;
    }
    const char *gcase = "yolov9-t_64_warm";
    const char *model = tmp_path("t.safetensors"), *a = tmp_path("a.onnx"), *b = tmp_path("b.onnx");
    const char *fixed = tmp_path("fixed.onnx");
    char cmd[2048], text[8192];
    /* a checkpoint (dual head, converted in memory) and its `gelan convert` output give the same file */
    snprintf(cmd, sizeof cmd, "%s export --weights %s --cfg %s --out %s", gelan,
             golden_path(gcase, "weights.safetensors"), golden_path(gcase, "cfg.yaml"), a);
    CU_ASSERT_EQUAL(run(cmd, text, sizeof text), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "output: pred [batch, 84, anchors]"));
    snprintf(cmd, sizeof cmd, "%s convert --weights %s --cfg %s --out %s", gelan,
             golden_path(gcase, "weights.safetensors"), golden_path(gcase, "cfg.yaml"), model);
    CU_ASSERT_EQUAL(run(cmd, text, sizeof text), 0);
    snprintf(cmd, sizeof cmd, "%s export --model %s --out %s", gelan, model, b);
    CU_ASSERT_EQUAL(run(cmd, text, sizeof text), 0);
    CU_ASSERT(same_bytes(a, b));
    CU_ASSERT_EQUAL(onnx_check(a), 0);
    /* --img: a fixed size in the declared shapes (the checker's shape inference must agree) */
    snprintf(cmd, sizeof cmd, "%s export --model %s --out %s --img 64", gelan, model, fixed);
    CU_ASSERT_EQUAL(run(cmd, text, sizeof text), 0);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tools/onnx_check.py %s", fixed);
    CU_ASSERT_EQUAL(run(cmd, text, sizeof text), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "input input [batch,3,64,64], output pred [batch,84,84]"));
    Tensor *x = read_tensor(golden_path(gcase, "input.safetensors"), "input");
    Tensor *want = read_tensor(golden_path(gcase, "expected.safetensors"), "reparam.pred");
    if (x && want && ort_available()) {
        size_t n = 0;
        float *got = ort_pred(fixed, x->data, tN(x), tC(x), tH(x), tW(x), &n);
        CU_ASSERT(got && n == want->numel);
        if (got && n == want->numel) CU_ASSERT_EQUAL(check_close("--img 64", got, want->data, n, RTOL, 0), 0);
        free(got);
    }
    tensor_free(x);
    tensor_free(want);
    /* usage errors: exit 2; a failure: exit 1 with the reason, nothing written */
    snprintf(cmd, sizeof cmd, "%s export --model %s", gelan, model);
    CU_ASSERT_EQUAL(run(cmd, text, sizeof text), 2);
    snprintf(cmd, sizeof cmd, "%s export --model %s --weights %s --out %s", gelan, model, model, b);
    CU_ASSERT_EQUAL(run(cmd, text, sizeof text), 2);
    snprintf(cmd, sizeof cmd, "%s export --model %s --out %s", gelan, golden_path(gcase, "weights.safetensors"),
             tmp_path("never.onnx"));
    CU_ASSERT_EQUAL(run(cmd, text, sizeof text), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "not an inference model"));
    CU_ASSERT_NOT_EQUAL(access(tmp_path("never.onnx"), F_OK), 0);
    unlink(model), unlink(a), unlink(b), unlink(fixed);
}

static int setup(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gelan_onnx_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void) { return rmdir(tmpdir); }

SUITE_FN(onnx) {
    CU_pSuite s = CU_add_suite("onnx", setup, teardown);
    if (!s) return -1;
    CU_add_test(s, "every op and key, in ONNX Runtime", test_ops);
    CU_add_test(s, "golden yolov9-t converted, two sizes", test_golden_t);
    CU_add_test(s, "gelan-c random weights at 640", test_gelan_c_640);
    CU_add_test(s, "refused: unknown op, qconv, not a model", test_refused);
    CU_add_test(s, "command line", test_cli);
    return 0;
}
