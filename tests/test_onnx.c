/* ONNX export (export/onnx_export.h): every exported model passes
 * onnx.checker.check_model (Debian's python3-onnx, tools/onnx_check.py) and,
 * run in ONNX Runtime (npm onnxruntime-node, tools/ort_run.mjs), gives the
 * runtime's `pred` within 1e-4 of max |x| (the golden README's tolerance):
 * a hand-written graph with every op and key the exporter maps, the
 * converted golden yolov9-t_64_warm (also against the official reparam.pred,
 * and at a second input size from the same file: dynamic shapes), and a
 * gelan-c with random weights at 640. int8 (`qconv` nodes, exported as QDQ):
 * a hand-written graph whose scales are powers of two, so that ORT's float
 * arithmetic is exact and must give the runtime's bits (rounding ties,
 * saturation at both ends, zero points 0/100/128/255, padding, stride,
 * dilation, groups, a shared quantizer); and a PTQ-quantized gelan-t, whose
 * ORT output must be closer to the runtime's int8 output than that is to the
 * fp32 model (the reasoning at test_int8_model). The command line (float and
 * int8: `gelan quantize` of the golden yolov9-t, then export from the
 * quantized checkpoint and from its converted model); and refusals (an
 * unknown op, a file that is not an inference model), which leave the
 * output path as it was.
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

#include "autograd/tape.h"
#include "export/onnx_export.h"
#include "infer/infer.h"
#include "nn/calibrate.h"
#include "nn/convert.h"
#include "nn/model.h"
#include "nn/blocks.h" /* BN_MOMENTUM */
#include "nn/quant.h"
#include "tensor/error.h"
#include "tensor/rng.h"
#include "tensor/safetensors.h"
#include "tests/testutil.h"

#define RTOL 1e-4

/* ---- helpers -------------------------------------------------------------------- */
static char tmpdir[64];

static const char *tmp_path(const char *name) {
    static char bufs[16][256]; /* a test holds up to 16 paths at once */
    static int next;
    char *b = bufs[next++ & 15];
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

/* onnx.checker.check_model with full shape inference (and, for QDQ models, the form of every
 * quantized conv); its output in out (may be NULL) */
static int onnx_check_out(const char *path, char *out, size_t len) {
    char cmd[1024], buf[4096];
    if (!out) out = buf, len = sizeof buf;
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tools/onnx_check.py %s", path);
    int rc = run(cmd, out, len);
    if (rc != 0) fprintf(stderr, "\n  onnx_check failed (%d):\n%s", rc, out);
    return rc;
}
static int onnx_check(const char *path) { return onnx_check_out(path, NULL, 0); }

/* The checker's QDQ line: int8 convs, all convs, QuantizeLinear nodes; -1s without one. */
static void qdq_counts(const char *out, int *int8, int *convs, int *quantizers) {
    const char *p = strstr(out, "qdq: ");
    *int8 = *convs = *quantizers = -1;
    if (p) sscanf(p, "qdq: %d int8 Conv of %d (input: uint8 per tensor, %d QuantizeLinear", int8, convs, quantizers);
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
    if (g.text) CU_ASSERT_OK(onnx_export_graph(g.text, names, convert_graph_lookup, &g, NULL, onnx, &info));
    if (g.text) {
        CU_ASSERT_EQUAL(info.graph_nodes, g.nnodes);
        CU_ASSERT_EQUAL(info.params, (size_t)2407616); /* the fused gelan-t without the fixed DFL weights */
        CU_ASSERT_EQUAL(onnx_check(onnx), 0);
    }
    InferModel *im = g.text ? infer_model_build(g.text, names, convert_graph_lookup, &g) : NULL;
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
    if (g.text) CU_ASSERT_OK(onnx_export_graph(g.text, NULL, convert_graph_lookup, &g, NULL, onnx, &info));
    if (g.text) CU_ASSERT_EQUAL(onnx_check(onnx), 0);
    InferModel *im = g.text ? infer_model_build(g.text, NULL, convert_graph_lookup, &g) : NULL;
    float *x = random_input(3 * 640 * 640, 9);
    printf("\n    ");
    if (im && x) compare_ort(onnx, im, x, 1, 3, 640, 640, "gelan-c random");
    free(x);
    infer_model_free(im);
    convert_graph_free(&g);
    model_free(m);
    unlink(onnx);
}

/* ---- int8: the arithmetic, exactly --------------------------------------------------- */
/* qconv nodes whose every scale is a power of two: then x * (1/sx) (the runtime) and x / sx
 * (QuantizeLinear) are the same exact number, every dequantized value and product is exact, and
 * every partial sum fits the 24-bit float mantissa (conv b, the widest: |sums| < 18 taps x 16 x 1
 * < 2^9 in steps of 2^-4 x 2^-10; a: < 2^8 in steps of 2^-15), so ORT's float Conv over the
 * dequantized codes computes the runtime's int32 accumulator times its scale exactly, in any
 * order, and the bias add is exact too. What is left to differ is the semantics, and the test pins it down bit for
 * bit: round half to even (the input holds exact ties of every quantizer), saturation to [0, 255]
 * (values beyond both ends), the zero points 0, 100, 128 and 255, zero padding as the code zp (the
 * real value 0), per-channel weight scales on axis 0, groups, a depthwise conv with dilation, a
 * stride, fp32 bias and none, relu and leakyrelu (alpha 1/8, exact). The last two convs read the
 * first one's output with one quantizer (shared in the ONNX graph); the SiLU one is the only node
 * whose output is not bit-exact (ORT's sigmoid and the runtime's differ by float rounding). */
static const char *QGRAPH =
    "qconv a input c=8 k=3 s=1 p=1 g=1 act=none w=wa ws=sa b=ba sx=0.03125 zp=100\n"
    "qconv b input c=8 k=3 s=2 p=1 g=2 act=relu w=wb ws=sb b=bb sx=0.0625 zp=0\n"
    "qconv c input c=4 k=3 s=1 p=2 d=2 g=4 act=leakyrelu alpha=0.125 w=wc ws=sc b=bc sx=0.015625 zp=255\n"
    "qconv d a c=8 k=1 act=none w=wd ws=sd b=bd sx=0.125 zp=128\n"
    "qconv e a c=8 k=1 act=silu w=we ws=sd sx=0.125 zp=128\n" /* no bias */
    "upsample bu b scale=2\n"
    "concat pred a,bu,c,d,e\n"; /* [N, 36, 8, 8]: e is channels 28..35 */

enum { QC = 4, QH = 8, QW = 8, QOUT = 36, QSILU = 28 };

static OpsWeight QW_[] = {
    {"wa", 4, {8, 4, 3, 3}, NULL}, {"sa", 1, {8}, NULL}, {"ba", 1, {8}, NULL},
    {"wb", 4, {8, 2, 3, 3}, NULL}, {"sb", 1, {8}, NULL}, {"bb", 1, {8}, NULL},
    {"wc", 4, {4, 1, 3, 3}, NULL}, {"sc", 1, {4}, NULL}, {"bc", 1, {4}, NULL},
    {"wd", 4, {8, 8, 1, 1}, NULL}, {"sd", 1, {8}, NULL}, {"bd", 1, {8}, NULL},
    {"we", 4, {8, 8, 1, 1}, NULL},
};
#define N_QW ((int)(sizeof QW_ / sizeof QW_[0]))

static int q_lookup(void *ctx, const char *name, InferTensor *out) {
    (void)ctx;
    for (int i = 0; i < N_QW; i++) {
        if (strcmp(QW_[i].name, name)) continue;
        out->data = QW_[i].data;
        out->ndim = QW_[i].ndim;
        for (int d = 0; d < out->ndim; d++) out->shape[d] = QW_[i].shape[d];
        return 0;
    }
    return -1;
}

/* How many of n inputs are exact rounding ties of x * inv (inv a power of two), and how many
 * saturate below code 0 / above 255 with zero point zp. */
static void tie_stats(const float *x, size_t n, float inv, int zp, int *ties, int *lo, int *hi) {
    *ties = *lo = *hi = 0;
    for (size_t i = 0; i < n; i++) {
        float v = x[i] * inv; /* exact */
        *ties += v - floorf(v) == 0.5f;
        *lo += nearbyintf(v) + zp < 0;
        *hi += nearbyintf(v) + zp > 255;
    }
}

static void test_qconv_exact(void) {
    Rng r;
    rng_seed(&r, 17);
    for (int i = 0; i < N_QW; i++) {
        size_t n = 1;
        for (int d = 0; d < QW_[i].ndim; d++) n *= (size_t)QW_[i].shape[d];
        float *v = QW_[i].data = malloc(n * sizeof(float));
        for (size_t k = 0; k < n; k++) {
            if (QW_[i].name[0] == 'w') /* codes: integers in [-127, 127] */
                v[k] = (float)((int)rng_below(&r, 255) - 127);
            else if (QW_[i].name[0] == 's') /* per-channel scales 2^-7 .. 2^-10: axis 0 matters */
                v[k] = ldexpf(1.f, -7 - (int)(k % 4));
            else /* biases: multiples of 2^-10 in [-2, 2) */
                v[k] = ldexpf((float)((int)rng_below(&r, 4096) - 2048), -10);
        }
    }
    /* the input: exact ties of each input quantizer (1/32, 1/16, 1/64) in turn, and dyadic values in
       [-4.5, 17.25) that reach past both ends of every range (zp=0 has no lower end to pass, zp=255 no
       upper one) */
    const int N = 2;
    size_t nx = (size_t)N * QC * QH * QW;
    float *x = malloc(nx * sizeof *x);
    const float tie_step[3] = {1.f / 32, 1.f / 16, 1.f / 64};
    for (size_t i = 0; i < nx; i++) {
        if (i % 4 < 3)
            x[i] = ((float)((int)rng_below(&r, 400) - 200) + 0.5f) * tie_step[i % 4];
        else
            x[i] = ldexpf((float)((int)rng_below(&r, 5568) - 1152), -8);
    }
    const float inv[3] = {32.f, 16.f, 64.f};
    const int zps[3] = {100, 0, 255};
    for (int q = 0; q < 3; q++) { /* the test can tell the rounding and the clamping apart */
        int ties, lo, hi;
        tie_stats(x, nx, inv[q], zps[q], &ties, &lo, &hi);
        CU_ASSERT(ties > 20);
        if (zps[q] > 0) CU_ASSERT(lo > 0);
        if (zps[q] < 255) CU_ASSERT(hi > 0);
    }

    const char *onnx = tmp_path("qconv.onnx");
    OnnxExportInfo info;
    char out[4096];
    int int8 = 0, convs = 0, quantizers = 0;
    CU_ASSERT_OK(onnx_export_graph(QGRAPH, NULL, q_lookup, NULL, NULL, onnx, &info));
    CU_ASSERT_EQUAL(info.qconvs, 5);
    CU_ASSERT_EQUAL(info.params, (size_t)(288 + 8 + 144 + 8 + 36 + 4 + 64 + 8 + 64)); /* codes and biases */
    CU_ASSERT_EQUAL(onnx_check_out(onnx, out, sizeof out), 0);
    qdq_counts(out, &int8, &convs, &quantizers);
    CU_ASSERT_EQUAL(int8, 5);
    CU_ASSERT_EQUAL(convs, 5);
    CU_ASSERT_EQUAL(quantizers, 4); /* d and e share theirs */

    InferModel *im = infer_model_build(QGRAPH, NULL, q_lookup, NULL);
    CU_ASSERT_NONNULL_OK(im);
    InferShape os;
    const float *want = im ? infer_model_run(im, x, N, QC, QH, QW, &os) : NULL;
    CU_ASSERT_NONNULL_OK(want);
    size_t numel = 0, expect = (size_t)N * QOUT * QH * QW;
    float *got = want && ort_available() ? ort_pred(onnx, x, N, QC, QH, QW, &numel) : NULL;
    if (want && ort_available()) {
        CU_ASSERT_PTR_NOT_NULL(got);
        CU_ASSERT_EQUAL(numel, expect);
    }
    if (got && numel == expect) {
        size_t exact_diff = 0;
        float silu_max = 0, silu_diff = 0;
        for (size_t i = 0; i < numel; i++) {
            int ch = (int)(i / (QH * QW) % QOUT);
            if (ch < QSILU) {
                exact_diff += got[i] != want[i];
            } else {
                silu_max = fmaxf(silu_max, fabsf(want[i]));
                silu_diff = fmaxf(silu_diff, fabsf(got[i] - want[i]));
            }
        }
        CU_ASSERT_EQUAL(exact_diff, 0);           /* bit for bit */
        CU_ASSERT(silu_diff <= 1e-6f * silu_max); /* float rounding of the sigmoid only */
        printf("\n    int8 arithmetic: %zu of %zu values differ (must be 0), SiLU conv %.1e of max ", exact_diff,
               numel - (size_t)N * (QOUT - QSILU) * QH * QW, silu_max > 0 ? silu_diff / silu_max : 0.0);
    }
    free(got);
    infer_model_free(im);
    free(x);
    for (int i = 0; i < N_QW; i++) free(QW_[i].data), QW_[i].data = NULL;
    unlink(onnx);
}

/* ---- int8: a quantized gelan-t (PTQ) ------------------------------------------------------ */
/* The tolerance. ONNX Runtime runs the QDQ graph in float (Conv over the dequantized codes)
 * where the runtime accumulates the codes exactly in int32 and scales once, and QuantizeLinear
 * divides by sx where the runtime multiplies by 1/sx. Each conv's output therefore differs by
 * float rounding, and wherever that difference straddles a rounding boundary of the next conv's
 * quantizer the code differs by one step. One flipped code moves the next conv's outputs by
 * sx |w| at k*k*c_out places, each of which may flip in turn: in a network whose features fill
 * their quantization ranges the flips multiply from layer to layer, and the two results end up
 * differing in a share of the codes of every deep layer, not in a few. (gelan.c's own fake-quant
 * forward, the same quantization in float with the runtime's x * (1/sx), differs from the
 * runtime by as much: docs/ONNX.md.) A bound of one step per flip does not hold then; what
 * bounds the difference is the quantization error itself: both results are the float model plus
 * rounding errors of at most half a step per code, which coincide wherever the codes agree.
 * So ORT's int8 `pred` is held to the runtime's int8 `pred` within the runtime's own
 * quantization error (int8 minus the fp32 model on the same input), separately for the boxes
 * (pixels) and the class scores, plus the float tolerance of the fp32 tests (RTOL of max|pred|
 * for boxes; for scores RTOL of their range [0, 1], since ORT's sigmoid is accurate to ~1e-7
 * absolute, not relative): rms and max of |ORT - int8| at most those of |int8 - fp32| plus that.
 * (Independent roundings would reach sqrt(2) times the rms; measured: 0.15-0.25 of it, printed.)
 * The exact test above pins the arithmetic to the runtime's; this one shows that a whole model
 * agrees, and that the quantization it compares through is not negligible
 * (max |int8 - fp32| > 10 RTOL max|pred|).
 *
 * The model: gelan-t with random weights, whose features would vanish layer by layer in eval
 * mode (running variance 1 against a conv output variance of about 1/3) and leave `pred` the
 * head's biases; so its BN statistics are set from one batch (a train-mode forward from zeroed
 * buffers, divided by the momentum, variance at least 0.05 for channels that barely vary on 16
 * pixels), as a trained model's would be, and the class biases are 0 instead of the 1e-5 prior. */
static int live_gelan_t(Model *m) {
    const NamedBuffer *buf;
    int nb = model_buffers(m, &buf);
    for (int i = 0; i < nb; i++) memset(buf[i].t->data, 0, buf[i].t->numel * sizeof(float));
    Tensor *x = tensor_new4(4, 3, 128, 128);
    Tape *t = tape_new();
    Rng r;
    rng_seed(&r, 31);
    for (size_t i = 0; x && i < x->numel; i++) x->data[i] = rng_uniform(&r);
    ModelOutput o;
    int rc = x && t ? 0 : -1;
    if (!rc) tape_set_grad_enabled(t, false);
    if (!rc) rc = model_forward(m, t, x, true, &o); /* running = momentum * batch statistic */
    for (int i = 0; !rc && i < nb; i++) {
        int var = strstr(buf[i].name, "running_var") != NULL;
        for (size_t k = 0; k < buf[i].t->numel; k++) {
            float v = buf[i].t->data[k] / BN_MOMENTUM;
            buf[i].t->data[k] = var && v < 0.05f ? 0.05f : v;
        }
    }
    char name[64];
    for (int l = 0; !rc && l < 3; l++) {
        snprintf(name, sizeof name, "model.%d.cv3.%d.2.bias", m->nlayers - 1, l);
        Tensor *b = model_tensor(m, name);
        if (b)
            memset(b->data, 0, b->numel * sizeof(float));
        else
            rc = gelan_error("no %s", name);
    }
    tape_free(t);
    tensor_free(x);
    return rc;
}

typedef struct {
    double rms, max;
} DiffStat;

/* rms and max |a - b| over the box rows (kind 0) or class rows (kind 1) of pred [N, rows, A] */
static DiffStat diff_stat(const float *a, const float *b, size_t numel, int rows, int A, int kind) {
    double s = 0, mx = 0;
    size_t n = 0;
    for (size_t i = 0; i < numel; i++) {
        int row = (int)(i / (size_t)A % (size_t)rows);
        if ((row >= 4) != kind) continue;
        double d = fabs((double)a[i] - b[i]);
        s += d * d, n++;
        mx = fmax(mx, d);
    }
    return (DiffStat){n ? sqrt(s / (double)n) : 0, mx};
}

/* ORT on the int8 model against the runtime's int8 and fp32 models (the rule above); live: the
 * quantization must show in pred (a comparison through it would be vacuous otherwise). */
static void compare_int8(const char *onnx, InferModel *q, InferModel *f, const float *x, int n, int h, int w,
                         int live) {
    if (!ort_available()) return;
    InferShape os, fs;
    const float *y = infer_model_run(q, x, n, 3, h, w, &os);
    CU_ASSERT_NONNULL_OK(y);
    size_t numel = 1;
    for (int d = 0; y && d < os.ndim; d++) numel *= (size_t)os.shape[d];
    float *int8 = y ? malloc(numel * sizeof *int8) : NULL;
    if (int8) memcpy(int8, y, numel * sizeof *int8); /* the next run reuses the model's output memory */
    const float *fp32 = int8 ? infer_model_run(f, x, n, 3, h, w, &fs) : NULL;
    CU_ASSERT_NONNULL_OK(fp32);
    size_t got_n = 0;
    float *ort = fp32 ? ort_pred(onnx, x, n, 3, h, w, &got_n) : NULL;
    if (!ort || got_n != numel || os.ndim != 3) {
        CU_FAIL("ORT output missing or of the wrong size");
        free(ort), free(int8);
        return;
    }
    int rows = os.shape[1], A = os.shape[2];
    float amax = 0;
    for (size_t i = 0; i < numel; i++) amax = fmaxf(amax, fabsf(int8[i]));
    printf("\n    int8 %dx3x%dx%d (max|pred| %.4g):", n, h, w, amax);
    const char *kinds[2] = {"boxes", "scores"};
    for (int k = 0; k < 2; k++) {
        DiffStat e = diff_stat(ort, int8, numel, rows, A, k), qn = diff_stat(int8, fp32, numel, rows, A, k);
        double fl = RTOL * (k ? 1.0 : amax); /* the fp32 tests' float tolerance (scores: of their range) */
        CU_ASSERT(e.rms <= qn.rms + fl);
        CU_ASSERT(e.max <= qn.max + fl);
        printf(" %s |ORT-int8| rms %.2g max %.2g, |int8-fp32| rms %.2g max %.2g, float tol %.2g;", kinds[k], e.rms,
               e.max, qn.rms, qn.max, fl);
        if (k == 0 && live) CU_ASSERT(qn.max > 10 * RTOL * amax);
        if (k == 0) printf(" (|ORT-int8| max %.1e of max|pred|)", e.max / amax);
    }
    free(ort);
    free(int8);
}

static int next_batch(void *ctx, int i, Tensor **images) {
    *images = ((Tensor **)ctx)[i];
    return 0;
}

static void count_warning(const char *msg, void *ctx) {
    (void)msg;
    ++*(int *)ctx;
}

/* lines of a graph text that start with prefix */
static int count_lines(const char *text, const char *prefix) {
    int n = 0;
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        n += !strncmp(p, prefix, strlen(prefix));
    return n;
}

/* gelan-t (made live, above) calibrated as `gelan quantize` does (minmax on random images, every
 * conv but the DFL quantized), folded, and its graph's qconvs exported as QDQ; the fp32 model is
 * the same weights fused. */
static void test_int8_model(void) {
    ModelOptions opt = {.nc = 0, .seed = 3};
    Model *m = model_build_file("configs/models/gelan-t.yaml", &opt), *q = NULL, *f = NULL;
    CU_ASSERT_NONNULL_OK(m);
    int rc = m ? live_gelan_t(m) : -1;
    CU_ASSERT_OK(rc);
    if (!rc) rc = (q = convert_single_branch(m, "gelan-t-int8")) && (f = convert_single_branch(m, "gelan-t")) ? 0 : -1;
    Tensor *calib[2] = {tensor_new4(2, 3, 64, 64), tensor_new4(2, 3, 64, 64)};
    Rng r;
    rng_seed(&r, 23);
    for (int b = 0; b < 2; b++)
        for (size_t i = 0; calib[b] && i < calib[b]->numel; i++) calib[b]->data[i] = rng_uniform(&r);
    Tape *t = tape_new();
    int warnings = 0, nq = 0;
    if (!rc && (!calib[0] || !calib[1] || !t)) rc = gelan_error("out of memory");
    gelan_set_warning_handler(count_warning, &warnings);
    if (!rc) rc = model_qat_enable(q, NULL);
    if (!rc) {
        CalibOptions co;
        calib_options_default(&co);
        CalibReport rep;
        rc = calibrate_model(q, t, 2, next_batch, calib, &co, &rep);
        calib_report_free(&rep);
    }
    gelan_set_warning_handler(NULL, NULL);
    if (!rc) nq = model_qat_count(q);
    if (!rc) rc = model_qat_fold(q);
    if (!rc) rc = model_fuse(f);
    InferGraph g = {0}, gf = {0};
    if (!rc) rc = convert_graph(q, &g);
    if (!rc) rc = convert_graph(f, &gf);
    CU_ASSERT_OK(rc);
    const char *onnx = tmp_path("q.onnx");
    OnnxExportInfo info;
    char out[4096];
    int int8 = 0, convs = 0, quantizers = 0;
    InferModel *im = NULL, *fm = NULL;
    if (!rc) {
        int nconv = count_lines(g.text, "conv "), nqconv = count_lines(g.text, "qconv ");
        CU_ASSERT(nq > 150 && nqconv == nq);
        CU_ASSERT_OK(onnx_export_graph(g.text, NULL, convert_graph_lookup, &g, NULL, onnx, &info));
        CU_ASSERT_EQUAL(info.qconvs, nq);
        CU_ASSERT_EQUAL(onnx_check_out(onnx, out, sizeof out), 0);
        qdq_counts(out, &int8, &convs, &quantizers);
        CU_ASSERT_EQUAL(int8, nq);
        CU_ASSERT_EQUAL(convs, nconv + nqconv);
        CU_ASSERT(quantizers > 0 && quantizers < nq); /* a level's box and class branches share one */
        CU_ASSERT_NONNULL_OK(im = infer_model_build(g.text, NULL, convert_graph_lookup, &g));
        CU_ASSERT_NONNULL_OK(fm = infer_model_build(gf.text, NULL, convert_graph_lookup, &gf));
    }
    if (im && fm) {
        float *x = random_input(2 * 3 * 96 * 128, 5);
        if (x) compare_int8(onnx, im, fm, x, 2, 96, 128, 1);
        free(x);
        x = random_input(3 * 128 * 160, 6); /* another size from the same file */
        if (x) compare_int8(onnx, im, fm, x, 1, 128, 160, 1);
        free(x);
    }
    infer_model_free(im);
    infer_model_free(fm);
    convert_graph_free(&g);
    convert_graph_free(&gf);
    tape_free(t);
    tensor_free(calib[0]);
    tensor_free(calib[1]);
    model_free(q);
    model_free(f);
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
    CU_ASSERT_EQUAL(onnx_export_graph(bad, NULL, convert_graph_lookup, &g, NULL, out, NULL), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "'shuffle'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "export"));
    printf("\n    refused: %s", gelan_last_error());
    CU_ASSERT(file_is(out, "an existing file"));

    /* every op the runtime runs has an ONNX form now (qconv: QDQ), so an op ONNX cannot express is
       one the runtime does not know either: refused and named the same way when nothing is at the
       output path yet, and nothing is left there, not even a temporary */
    const char *fresh = tmp_path("fresh.onnx");
    CU_ASSERT_EQUAL(onnx_export_graph(bad, NULL, convert_graph_lookup, &g, NULL, fresh, NULL), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "'shuffle'"));
    CU_ASSERT_NOT_EQUAL(access(fresh, F_OK), 0);
    CU_ASSERT(no_temporaries());

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
    CU_ASSERT_EQUAL(onnx_export_graph(good, NULL, convert_graph_lookup, &g, NULL, tmp_path("no/such/dir.onnx"), NULL),
                    -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "no/such/dir.onnx"));
    /* and the good graph exports over the existing file */
    CU_ASSERT_OK(onnx_export_graph(good, NULL, convert_graph_lookup, &g, NULL, out, NULL));
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
    snprintf(cmd, sizeof cmd, "%s export --help", gelan);
    CU_ASSERT_EQUAL(run(cmd, text, sizeof text), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "QDQ"));

    /* int8: `gelan quantize` (PTQ on synthetic shapes images), then the export of the quantized
       checkpoint (converted in memory) and of its `gelan convert` output: the same QDQ file */
    const char *data = tmp_path("shapes.yaml"), *ptq = tmp_path("ptq.safetensors"), *q8 = tmp_path("q8.safetensors");
    const char *qa = tmp_path("qa.onnx"), *qb = tmp_path("qb.onnx");
    write_file(data, "synthetic: shapes\ntrain_count: 8\nval_count: 4\nimg: 64\nseed: 0\n");
    snprintf(cmd, sizeof cmd,
             "%s quantize --weights %s --cfg %s --calib %s --img 64 --max-images 8 --batch 4 --threads 2 --out %s",
             gelan, golden_path(gcase, "weights.safetensors"), golden_path(gcase, "cfg.yaml"), data, ptq);
    CU_ASSERT_EQUAL(run(cmd, text, sizeof text), 0);
    snprintf(cmd, sizeof cmd, "%s export --weights %s --out %s", gelan, ptq, qa);
    CU_ASSERT_EQUAL(run(cmd, text, sizeof text), 0);
    const char *line = strstr(text, "\nint8: "); /* the summary line, not "(int8: qat.* state)" */
    int nq = 0, int8 = -1, convs = -1, quantizers = -1;
    CU_ASSERT(line && sscanf(line, "\nint8: %d convs as QDQ", &nq) == 1 && nq > 150);
    snprintf(cmd, sizeof cmd, "%s convert --weights %s --out %s", gelan, ptq, q8);
    CU_ASSERT_EQUAL(run(cmd, text, sizeof text), 0);
    snprintf(cmd, sizeof cmd, "%s export --model %s --out %s", gelan, q8, qb);
    CU_ASSERT_EQUAL(run(cmd, text, sizeof text), 0);
    CU_ASSERT(same_bytes(qa, qb));
    CU_ASSERT_EQUAL(onnx_check_out(qa, text, sizeof text), 0);
    qdq_counts(text, &int8, &convs, &quantizers);
    CU_ASSERT_EQUAL(int8, nq);
    /* and it runs in ORT as gelan-infer runs the int8 model (the rule at test_int8_model; this
       model's predictions hardly depend on its features, so no liveness check) */
    InferModel *q = infer_model_load(q8), *f = infer_model_load(model);
    CU_ASSERT_NONNULL_OK(q);
    CU_ASSERT_NONNULL_OK(f);
    x = read_tensor(golden_path(gcase, "input.safetensors"), "input");
    if (q && f && x) compare_int8(qa, q, f, x->data, tN(x), tH(x), tW(x), 0);
    tensor_free(x);
    infer_model_free(q);
    infer_model_free(f);
    unlink(model), unlink(a), unlink(b), unlink(fixed);
    unlink(data), unlink(ptq), unlink(q8), unlink(qa), unlink(qb);
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
    CU_add_test(s, "int8 qconv as QDQ: the runtime's bits (power-of-two scales)", test_qconv_exact);
    CU_add_test(s, "int8 gelan-t (PTQ) in ONNX Runtime, within its quantization error", test_int8_model);
    CU_add_test(s, "refused: unknown op, not a model; nothing left", test_refused);
    CU_add_test(s, "command line", test_cli);
    return 0;
}
