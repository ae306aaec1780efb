/* infer/: the graph parser (every error message), a hand-written graph end to
 * end against a composition of reference ops, the model file, the DFL
 * decode, NMS and letterbox on hand-computed cases, and garbage graphs.
 * Also built without CUnit by tests/infer_selftest.c (make cross-test). */
#ifndef INFER_SELFTEST
#include <CUnit/CUnit.h>

#include "tests/testutil.h"
#endif
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "infer/infer.h"
#include "infer/ops.h"
#include "tensor/error.h"
#include "tensor/safetensors.h"

/* ---- a small table of named weights -------------------------------------------- */
typedef struct {
    const char *name;
    float *data;
    int ndim;
    int64_t shape[4];
} ItTensor;

typedef struct {
    ItTensor t[24];
    int n;
} ItWeights;

static unsigned it_seed = 99;
static float it_rand(void) {
    it_seed = it_seed * 1664525u + 1013904223u;
    return (float)(it_seed >> 8) / (float)(1u << 23) - 1.f;
}

static float *it_add(ItWeights *W, const char *name, int ndim, int a, int b, int c, int d, float scale) {
    ItTensor *t = &W->t[W->n++];
    int64_t shape[4] = {a, b, c, d};
    size_t n = 1;
    t->name = name, t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i], n *= (size_t)shape[i];
    t->data = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) t->data[i] = scale * it_rand();
    return t->data;
}

static void it_free(ItWeights *W) {
    for (int i = 0; i < W->n; i++) free(W->t[i].data);
    W->n = 0;
}

static int it_lookup(void *ctx, const char *name, InferTensor *out) {
    ItWeights *W = ctx;
    for (int i = 0; i < W->n; i++)
        if (!strcmp(W->t[i].name, name)) {
            out->data = W->t[i].data, out->ndim = W->t[i].ndim;
            for (int d = 0; d < out->ndim; d++) out->shape[d] = W->t[i].shape[d];
            return 0;
        }
    return -1;
}

static const float *it_get(ItWeights *W, const char *name) {
    InferTensor t;
    return it_lookup(W, name, &t) ? NULL : t.data;
}

/* ---- parser and loader errors ------------------------------------------------------ */
static void test_it_graph_errors(void) {
    ItWeights W = {.n = 0};
    it_add(&W, "w3", 4, 8, 3, 3, 3, 0.1f);
    it_add(&W, "w88", 4, 8, 8, 1, 1, 0.1f);
    static const char *const cases[][2] = {
        {"convv x input c=8 k=3 w=w3", "graph line 1: unknown op 'convv'"},
        {"conv x input c=8 k=3 w=w3 z=1", "graph line 1: conv: unknown key 'z'"},
        {"conv x input c=8 k=3", "graph line 1: conv: missing key 'w'"},
        {"conv x input c=8 k=3 w=w3\nconv y q c=8 k=1 w=w88",
         "graph line 2: conv: input 'q' is not defined before this line"},
        {"conv x input c=8 k=3 w=w3\n\n# c\nmaxpool x x k=2", "graph line 4: maxpool: 'x' is already defined"},
        {"conv input input c=8 k=3 w=w3", "graph line 1: conv: 'input' is already defined"},
        {"conv x input c=8 k=3 w=missing", "graph line 1: conv: weight tensor 'missing' not found"},
        {"conv x input c=8 k=1 w=w3", "graph line 1: conv: weight 'w3' has shape [8,3,3,3], expected [8,3,1,1]"},
        {"conv x input c=8 k=3 w=w3\nconv y x c=8 k=1 w=w3",
         "graph line 2: conv: weight 'w3' has shape [8,3,3,3], expected [8,8,1,1]"},
        {"conv x input c=8 k=3 k=3 w=w3", "graph line 1: conv: key 'k' given twice"},
        {"conv x input c=8 k=3 w=w3\nsplit a,b x sizes=3,2",
         "graph line 2: split: sizes add up to 5, input 'x' has 8 channels"},
        {"conv x input c=8 k=3 w=w3 b=w3", "graph line 1: conv: bias 'w3' has shape [8,3,3,3], expected [8]"},
        {"conv x input c=8 k=3 w=w3 b=nob", "graph line 1: conv: bias tensor 'nob' not found"},
        {"conv x input c=8 k=3 w=w3 act=silu alpha=0.2", "graph line 1: conv: alpha=0.2 needs act=leakyrelu"},
        {"conv x input c=8 k=3 w=w3 act=gelu", "graph line 1: conv: unknown act 'gelu'"},
        {"conv x input c=8 k=three w=w3", "graph line 1: conv: k=three is not an integer"},
        {"conv x input c=8 k=3 w=w3 s=0", "graph line 1: conv: s=0 is not an integer in [1, 1048576]"},
        {"# only a comment\n\n   \n", "graph: no nodes"},
        {"conv x input c=8 k=3 w=w3\nadd y x,input", "graph line 2: add: inputs have 8 and 3 channels"},
        {"conv x input c=8 k=3 w=w3\ndetect pred x nc=80 strides=8",
         "graph line 2: detect: input 'x' has 8 channels, expected 4*reg_max+nc = 144"},
        {"conv x input c=8 k=3 w=w3\ndetect p x nc=4 reg_max=1 strides=8\nmaxpool y p k=2",
         "graph line 3: maxpool: input 'p' is a detect output"},
        {"conv x input c=8 k=3 w=w3\ndetect p x nc=4 reg_max=1 strides=8,16",
         "graph line 2: detect: 2 strides for 1 inputs"},
        {"conv x input c=8 k=3 w=w3\nupsample u x", "graph line 2: upsample: give exactly one of scale= and size="},
        {"conv x input c=8 k=3 w=w3\nupsample u x scale=2 size=4,4", "graph line 2: upsample: give exactly one"},
        {"conv x input c=8 k=3 w=w3\nupsample u x size=4", "graph line 2: upsample: size must be H,W"},
        {"conv x input c=8 k=3 w=w3\nsplit a,b x sizes=8", "graph line 2: split: 1 sizes for 2 outputs"},
        {"conv x input c=8 k=3 w=w3\nconcat y", "graph line 2: concat: expected 'concat OUT IN[,IN...] key=value...'"},
        {"conv x input c=8 k=3 g=3 w=w3", "graph line 1: conv: c=8 is not divisible by g=3"},
        {"conv x input c=8 k=3 w=w3\nconv y x c=6 k=1 g=3 w=w88",
         "graph line 2: conv: input 'x' has 8 channels, not divisible by g=3"},
        {"maxpool m input k=2 p=2", "graph line 1: maxpool: p=2 is more than half of k=2"},
        {"conv x,y input c=8 k=3 w=w3", "graph line 1: conv: makes 1..1 outputs, got 2"},
        {"conv x input,input c=8 k=3 w=w3", "graph line 1: conv: takes 1..1 inputs, got 2"},
        {"conv x$ input c=8 k=3 w=w3", "graph line 1: conv: bad output name 'x$'"},
        {"conv x input c=8 k=3 w=w3 junk", "graph line 1: conv: 'junk' is not key=value"},
        {"conv x input c=8 k=3 w=w3\nconcat y x,,x", "graph line 2: concat: bad input name ''"},
        {"add y input", "graph line 1: add: takes 2..2 inputs, got 1"},
        {"conv x input c=8 k=3 w=w3\x01", "graph line 1: control character 0x01"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        gelan_clear_error();
        InferModel *m = infer_model_build(cases[i][0], NULL, it_lookup, &W);
        int ok = m == NULL && strstr(gelan_last_error(), cases[i][1]) != NULL;
        if (!ok)
            printf("\n  graph %zu: expected '%s', got '%s'\n", i, cases[i][1], m ? "(loaded)" : gelan_last_error());
        CU_ASSERT(ok);
        infer_model_free(m);
    }
    it_free(&W);
}

/* Errors that depend on the input size, reported when running. */
static void test_it_run_errors(void) {
    ItWeights W = {.n = 0};
    it_add(&W, "w3", 4, 8, 3, 3, 3, 0.1f);
    float x[4 * 8 * 8] = {0};
    InferShape os;
    static const struct {
        const char *graph;
        int c, h, w;
        const char *msg;
    } cases[] = {
        {"conv x input c=8 k=3 w=w3\nmaxpool m x k=2\nconcat y x,m", 3, 8, 8,
         "graph line 3: concat: input 'm' is 4x4 but 'x' is 8x8"},
        {"conv x input c=8 k=3 p=0 w=w3", 3, 2, 2, "graph line 1: conv: input 2x2 is too small for k=3 s=1 p=0"},
        {"conv x input c=8 k=3 w=w3", 4, 8, 8, "infer: input has 4 channels, the model expects 3"},
        {"conv x input c=8 k=3 w=w3\nmaxpool m x k=2\nadd y m,x", 3, 8, 8,
         "graph line 3: add: input 'x' is 8x8 but 'm' is 4x4"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        InferModel *m = infer_model_build(cases[i].graph, NULL, it_lookup, &W);
        CU_ASSERT_PTR_NOT_NULL(m);
        if (!m) continue;
        const float *y = infer_model_run(m, x, 1, cases[i].c, cases[i].h, cases[i].w, &os);
        int ok = y == NULL && strstr(gelan_last_error(), cases[i].msg);
        if (!ok) printf("\n  run %zu: expected '%s', got '%s'\n", i, cases[i].msg, y ? "(ran)" : gelan_last_error());
        CU_ASSERT(ok);
        infer_model_free(m);
    }
    it_free(&W);
}

/* ---- reference ops on contiguous NCHW arrays -------------------------------------- */
static float *it_ref_pool(const float *x, int n, int c, int h, int w, int k, int s, int p, int is_max, int *oh,
                          int *ow) {
    *oh = (h + 2 * p - k) / s + 1, *ow = (w + 2 * p - k) / s + 1;
    float *y = malloc(sizeof(float) * n * c * *oh * *ow);
    for (int pl = 0; pl < n * c; pl++)
        for (int oy = 0; oy < *oh; oy++)
            for (int ox = 0; ox < *ow; ox++) {
                float m = -INFINITY, sum = 0;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        int iy = oy * s - p + ky, ix = ox * s - p + kx;
                        if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue; /* padding: -inf / 0 */
                        float v = x[((size_t)pl * h + iy) * w + ix];
                        m = fmaxf(m, v), sum += v;
                    }
                y[((size_t)pl * *oh + oy) * *ow + ox] = is_max ? m : sum / (k * k);
            }
    return y;
}

static float *it_ref_concat(int n, int hw, int count, const float *const *xs, const int *cs) {
    int ct = 0;
    for (int i = 0; i < count; i++) ct += cs[i];
    float *y = malloc(sizeof(float) * n * ct * hw);
    for (int b = 0; b < n; b++)
        for (int i = 0, c0 = 0; i < count; c0 += cs[i++])
            memcpy(y + ((size_t)b * ct + c0) * hw, xs[i] + (size_t)b * cs[i] * hw, sizeof(float) * cs[i] * hw);
    return y;
}

static float *it_slice(const float *x, int n, int c, int hw, int c0, int cn) {
    float *y = malloc(sizeof(float) * n * cn * hw);
    for (int b = 0; b < n; b++) memcpy(y + (size_t)b * cn * hw, x + ((size_t)b * c + c0) * hw, sizeof(float) * cn * hw);
    return y;
}

/* A graph that uses every op but detect, in the patterns of GELAN blocks
 * (split halves feeding a concat, pool chains, upsample + concat), against
 * the same network composed from the reference ops. */
static const char *IT_GRAPH =
    "# a small GELAN-like network\n"
    "conv x1 input c=8 k=3 s=2 p=1 act=silu w=c1.w b=c1.b\n"
    "split a,b x1 sizes=4,4\n"
    "conv y b c=6 k=3 act=leakyrelu alpha=0.1 w=c2.w b=c2.b   # p defaults to k/2\n"
    "maxpool m y k=5 s=1 p=2\n"
    "maxpool m2 m k=5 s=1 p=2\n"
    "concat cat a,b,y,m,m2\n"
    "upsample u cat scale=2\n"
    "avgpool ap u k=2 s=1 p=0\n"
    "conv z ap c=4 k=3 g=2 act=relu w=c3.w b=c3.b\n"
    "conv z2 ap c=4 k=1 w=c4.w\n"
    "add out z,z2\n";

static float *it_graph_reference(ItWeights *W, const float *x, int n, int h, int w, int *oh, int *ow) {
    int h1 = (h - 1) / 2 + 1, w1 = (w - 1) / 2 + 1, hw1 = h1 * w1;
    float *x1 = malloc(sizeof(float) * n * 8 * hw1);
    conv_naive(x, n, 3, h, w, it_get(W, "c1.w"), it_get(W, "c1.b"), 8, 3, 2, 1, 1, 1, ACT_SILU, 0, x1);
    float *a = it_slice(x1, n, 8, hw1, 0, 4), *b = it_slice(x1, n, 8, hw1, 4, 4);
    float *y = malloc(sizeof(float) * n * 6 * hw1);
    conv_naive(b, n, 4, h1, w1, it_get(W, "c2.w"), it_get(W, "c2.b"), 6, 3, 1, 1, 1, 1, ACT_LEAKY, 0.1f, y);
    int th, tw;
    float *m = it_ref_pool(y, n, 6, h1, w1, 5, 1, 2, 1, &th, &tw);
    float *m2 = it_ref_pool(m, n, 6, h1, w1, 5, 1, 2, 1, &th, &tw);
    const float *parts[] = {a, b, y, m, m2};
    int cs[] = {4, 4, 6, 6, 6};
    float *cat = it_ref_concat(n, hw1, 5, parts, cs);
    int h2 = 2 * h1, w2 = 2 * w1;
    float *u = malloc(sizeof(float) * n * 26 * h2 * w2);
    for (int pl = 0; pl < n * 26; pl++)
        for (int yy = 0; yy < h2; yy++)
            for (int xx = 0; xx < w2; xx++)
                u[((size_t)pl * h2 + yy) * w2 + xx] = cat[((size_t)pl * h1 + yy / 2) * w1 + xx / 2];
    int h3, w3;
    float *ap = it_ref_pool(u, n, 26, h2, w2, 2, 1, 0, 0, &h3, &w3);
    float *z = malloc(sizeof(float) * n * 4 * h3 * w3), *z2 = malloc(sizeof(float) * n * 4 * h3 * w3);
    conv_naive(ap, n, 26, h3, w3, it_get(W, "c3.w"), it_get(W, "c3.b"), 4, 3, 1, 1, 1, 2, ACT_RELU, 0, z);
    conv_naive(ap, n, 26, h3, w3, it_get(W, "c4.w"), NULL, 4, 1, 1, 0, 1, 1, ACT_NONE, 0, z2);
    for (size_t i = 0; i < (size_t)n * 4 * h3 * w3; i++) z[i] += z2[i];
    free(x1), free(a), free(b), free(y), free(m), free(m2), free(cat), free(u), free(ap), free(z2);
    *oh = h3, *ow = w3;
    return z;
}

static void it_graph_weights(ItWeights *W) {
    it_add(W, "c1.w", 4, 8, 3, 3, 3, 0.3f);
    it_add(W, "c1.b", 1, 8, 0, 0, 0, 0.2f);
    it_add(W, "c2.w", 4, 6, 4, 3, 3, 0.3f);
    it_add(W, "c2.b", 1, 6, 0, 0, 0, 0.2f);
    it_add(W, "c3.w", 4, 4, 13, 3, 3, 0.2f);
    it_add(W, "c3.b", 1, 4, 0, 0, 0, 0.2f);
    it_add(W, "c4.w", 4, 4, 26, 1, 1, 0.2f);
}

static int it_check(const char *what, const float *got, const float *want, size_t n, double tol) {
    double worst = 0, mag = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= worst)) worst = d;
        mag = fmax(mag, fabs(want[i]));
    }
    if (worst <= tol * (1 + mag)) return 1;
    printf("\n  %s: max error %g (max|want| %g)\n", what, worst, mag);
    return 0;
}

static void test_it_graph_end_to_end(void) {
    ItWeights W = {.n = 0};
    it_graph_weights(&W);
    InferModel *m = infer_model_build(IT_GRAPH, NULL, it_lookup, &W);
    CU_ASSERT_PTR_NOT_NULL(m);
    if (!m) {
        printf("\n  %s\n", gelan_last_error());
        it_free(&W);
        return;
    }
    CU_ASSERT_EQUAL(infer_model_layers(m), 11);
    CU_ASSERT_EQUAL(infer_model_input_channels(m), 3);
    CU_ASSERT_STRING_EQUAL(infer_model_output_name(m), "out");
    CU_ASSERT_EQUAL(infer_model_params(m), (size_t)(8 * 27 + 8 + 6 * 36 + 6 + 4 * 13 * 9 + 4 + 4 * 26));
    CU_ASSERT_EQUAL(infer_model_detect_nc(m), -1);
    /* two sizes and two batch sizes: the plan is redone when they change */
    static const int sizes[][3] = {{1, 13, 17}, {2, 9, 8}, {1, 13, 17}};
    for (int r = 0; r < 3; r++) {
        int n = sizes[r][0], h = sizes[r][1], w = sizes[r][2];
        float *x = malloc(sizeof(float) * n * 3 * h * w);
        for (int i = 0; i < n * 3 * h * w; i++) x[i] = it_rand();
        InferShape os;
        const float *y = infer_model_run(m, x, n, 3, h, w, &os);
        CU_ASSERT_PTR_NOT_NULL(y);
        int oh, ow;
        float *want = it_graph_reference(&W, x, n, h, w, &oh, &ow);
        CU_ASSERT(os.ndim == 4 && os.shape[0] == n && os.shape[1] == 4 && os.shape[2] == oh && os.shape[3] == ow);
        if (y) CU_ASSERT(it_check("graph end to end", y, want, (size_t)n * 4 * oh * ow, 1e-5));
        double flops = infer_model_flops(m, h, w);
        int h1 = (h - 1) / 2 + 1, w1 = (w - 1) / 2 + 1, hw3 = (2 * h1 - 1) * (2 * w1 - 1);
        double want_flops = 2.0 * (8 * 27 * h1 * w1 + 6 * 36 * h1 * w1 + 4 * 13 * 9 * hw3 + 4 * 26 * hw3);
        CU_ASSERT(fabs(flops - want_flops) < 1e-6 * want_flops);
        free(x), free(want);
    }
    infer_model_free(m);
    it_free(&W);
}

/* Output that is a view (a split half) is returned as a contiguous array. */
static void test_it_output_view(void) {
    ItWeights W = {.n = 0};
    const float *w1 = it_add(&W, "w", 4, 4, 2, 1, 1, 1.f);
    InferModel *m = infer_model_build("conv x input c=4 k=1 w=w\nsplit a,b x sizes=1,3", NULL, it_lookup, &W);
    CU_ASSERT_PTR_NOT_NULL(m);
    if (m) {
        float x[2 * 2 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}; /* n=2, c=2, 1x3 */
        InferShape os;
        const float *y = infer_model_run(m, x, 2, 2, 1, 3, &os);
        CU_ASSERT(y && os.shape[0] == 2 && os.shape[1] == 1 && os.shape[2] == 1 && os.shape[3] == 3);
        int ok = y != NULL;
        for (int b = 0; y && b < 2; b++)
            for (int p = 0; p < 3; p++) { /* channel 0 of the conv = a */
                float want = w1[0] * x[b * 6 + p] + w1[1] * x[b * 6 + 3 + p];
                ok &= fabsf(y[b * 3 + p] - want) < 1e-5f;
            }
        CU_ASSERT(ok);
    }
    infer_model_free(m);
    it_free(&W);
}

/* ---- pooling, bit for bit ------------------------------------------------------------ */
/* The runtime's pools by their definition, one output at a time: the taps in row-major
 * order, those outside the input skipped; the max starts from -FLT_MAX and keeps the
 * first of equal values, the sum starts from +0 and is divided by PyTorch's count (with
 * count_include_pad the taps inside the padded input, else those inside the input). */
static float it_pool_def(const float *x, int h, int w, int oy, int ox, int k, int s, int p, int is_max, int cip) {
    float acc = is_max ? -FLT_MAX : 0.f;
    int count = 0;
    for (int ky = 0; ky < k; ky++)
        for (int kx = 0; kx < k; kx++) {
            int iy = oy * s - p + ky, ix = ox * s - p + kx;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) {
                count += cip && iy < h + p && ix < w + p;
                continue;
            }
            float v = x[(size_t)iy * w + ix];
            acc = is_max ? (v > acc ? v : acc) : acc + v;
            count++;
        }
    return is_max ? acc : acc / (float)count;
}

static int it_same_bits(float a, float b) { return (isnan(a) && isnan(b)) || !memcmp(&a, &b, sizeof a); }

/* maxpool_run / avgpool_run against it_pool_def, every bit: odd sizes, a row wide enough
 * to be cut in tiles, windows past the fast path's largest, every k/s/p the configs use
 * and their neighbours, both divisors; the input a channel slice of a larger map and the
 * output written into one (the neighbouring channels stay untouched); the values include
 * +0, -0 and infinities (and NaN for the max), where the order of the taps shows. */
static void test_it_pools_exact(void) {
    static const int sizes[][2] = {{7, 9}, {13, 5}, {20, 20}, {1, 1}, {2, 3}, {3, 2500}};
    static const int win[][3] = {{2, 1, 0}, {2, 2, 0}, {2, 1, 1}, {3, 1, 1}, {3, 2, 1}, {3, 2, 0},  {3, 3, 1},
                                 {5, 1, 2}, {5, 2, 2}, {5, 1, 0}, {4, 3, 2}, {7, 1, 3}, {17, 1, 8}, {18, 2, 0}};
    const int n = 2, c = 3, cin = 5, cout = 4, c0 = 1; /* channels c0 .. c0+c-1 of cin / cout */
    int bad = 0, checked = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        int h = sizes[si][0], w = sizes[si][1];
        size_t hw = (size_t)h * w;
        float *x = malloc(sizeof(float) * n * cin * hw);
        for (size_t i = 0; i < n * cin * hw; i++) x[i] = it_rand();
        for (int is_max = 0; is_max < 2; is_max++) {
            static const float special[] = {0.f, -0.f, INFINITY, -INFINITY, NAN};
            int nspecial = is_max ? 5 : 2; /* NaN payloads are not compared, infinities make NaN in a sum */
            for (size_t i = 0; i < n * cin * hw; i += 3) x[i] = special[(i / 3) % nspecial];
            for (size_t wi = 0; wi < sizeof win / sizeof *win; wi++) {
                int k = win[wi][0], s = win[wi][1], p = win[wi][2];
                int oh = conv_out_size(h, k, s, p, 1), ow = conv_out_size(w, k, s, p, 1);
                if (oh <= 0 || ow <= 0) continue;
                size_t ohw = (size_t)oh * ow, on = (size_t)n * cout * ohw;
                float *y = malloc(sizeof(float) * on);
                for (int cip = 0; cip < 2 - is_max; cip++) {
                    for (size_t i = 0; i < on; i++) y[i] = 12345.f;
                    Map in = {x + c0 * hw, n, c, h, w, cin * hw}, out = {y + c0 * ohw, n, c, oh, ow, cout * ohw};
                    if (is_max)
                        maxpool_run(&in, &out, k, s, p);
                    else
                        avgpool_run(&in, &out, k, s, p, cip);
                    for (int b = 0; b < n; b++)
                        for (int ch = 0; ch < cout; ch++)
                            for (size_t i = 0; i < ohw; i++) {
                                float got = y[((size_t)b * cout + ch) * ohw + i], want = 12345.f;
                                if (ch >= c0 && ch < c0 + c)
                                    want = it_pool_def(x + ((size_t)b * cin + ch) * hw, h, w, (int)(i / ow),
                                                       (int)(i % ow), k, s, p, is_max, cip);
                                if (!it_same_bits(got, want) && bad++ < 5)
                                    printf("\n  %s k=%d s=%d p=%d%s %dx%d: image %d channel %d output %zu: %g, want %g",
                                           is_max ? "maxpool" : "avgpool", k, s, p, cip ? " count_include_pad" : "", h,
                                           w, b, ch, i, got, want);
                                checked++;
                            }
                }
                free(y);
            }
        }
        free(x);
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(checked > 100000);
}

/* ---- model file ---------------------------------------------------------------------- */
static int it_write_model(const char *path, ItWeights *W, const char *format, const char *graph, const char *names) {
    StWriter *w = st_writer_new();
    for (int i = 0; i < W->n; i++) {
        int shape[4];
        for (int d = 0; d < W->t[i].ndim; d++) shape[d] = (int)W->t[i].shape[d];
        st_writer_add_f32(w, W->t[i].name, W->t[i].ndim, shape, W->t[i].data);
    }
    if (format) st_writer_set_metadata(w, "format", format);
    if (graph) st_writer_set_metadata(w, "graph", graph);
    if (names) st_writer_set_metadata(w, "names", names);
    int rc = st_writer_save(w, path);
    st_writer_free(w);
    return rc;
}

static void test_it_model_file(void) {
    ItWeights W = {.n = 0};
    it_graph_weights(&W);
    char path[64];
    snprintf(path, sizeof path, "/tmp/gelan_infer_test_%d.safetensors", (int)getpid());
    CU_ASSERT(it_write_model(path, &W, "gelan-infer/1", IT_GRAPH, "[\"cat\", \"dog\"]") == 0);
    InferModel *m = infer_model_load(path);
    CU_ASSERT_PTR_NOT_NULL(m);
    if (m) {
        CU_ASSERT_EQUAL(infer_model_class_count(m), 2);
        CU_ASSERT_STRING_EQUAL(infer_model_class_name(m, 1), "dog");
        CU_ASSERT_PTR_NULL(infer_model_class_name(m, 2));
        float x[3 * 10 * 10];
        for (int i = 0; i < 300; i++) x[i] = it_rand();
        InferShape os;
        const float *y = infer_model_run(m, x, 1, 3, 10, 10, &os);
        int oh, ow;
        float *want = it_graph_reference(&W, x, 1, 10, 10, &oh, &ow);
        CU_ASSERT(y && it_check("model file", y, want, (size_t)4 * oh * ow, 1e-5));
        free(want);
        infer_model_free(m);
    }
    static const struct {
        const char *format, *graph, *names, *msg;
    } bad[] = {
        {NULL, "conv x input c=8 k=3 w=c1.w", NULL, "not an inference model (metadata format is '(none)'"},
        {"gelan-ckpt/1", "conv x input c=8 k=3 w=c1.w", NULL,
         "metadata format is 'gelan-ckpt/1', expected 'gelan-infer/1'"},
        {"gelan-infer/1", NULL, NULL, "no 'graph' in the metadata"},
        {"gelan-infer/1", "conv x input c=8 k=3 w=c1.w", "{\"a\": 1}", "names: expected a JSON list of strings"},
        {"gelan-infer/1", "conv x input c=8 k=3 w=c1.w", "[\"a\", 2]", "names: item 1 is a number"},
        {"gelan-infer/1", "conv x input c=8 k=3 w=c1.w", "[\"a\"", "names"},
        {"gelan-infer/1", "conv x input c=9 k=3 w=c1.w", NULL, "graph line 1: conv: weight 'c1.w' has shape [8,3,3,3]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CU_ASSERT(it_write_model(path, &W, bad[i].format, bad[i].graph, bad[i].names) == 0);
        InferModel *mb = infer_model_load(path);
        int ok = mb == NULL && strstr(gelan_last_error(), bad[i].msg) && strstr(gelan_last_error(), path);
        if (!ok) printf("\n  file %zu: expected '%s', got '%s'\n", i, bad[i].msg, mb ? "(loaded)" : gelan_last_error());
        CU_ASSERT(ok);
        infer_model_free(mb);
    }
    CU_ASSERT_PTR_NULL(infer_model_load("/nonexistent/model.safetensors"));
    unlink(path);
    it_free(&W);
}

/* ---- detect decode ------------------------------------------------------------------------ */
/* reg_max 2, one class. Level 0 (stride 8) is 1x2, level 1 (stride 16) is 1x1.
 * With bin logits (0, ln 3) the bin probabilities are (1/4, 3/4): distance 0.75;
 * with (0, 0) it is 0.5. Anchor centres: (0.5,0.5), (1.5,0.5); (0.5,0.5). */
static void test_it_detect_decode(void) {
    const float L3 = logf(3.f);
    float lv0[9 * 2] = {0}, lv1[9] = {0};
    /* anchor 0: t side (channels 2,3) = (0, ln3); class logit 0 */
    lv0[3 * 2 + 0] = L3;
    /* anchor 1: all sides 0.5; class logit ln 3 -> sigmoid 0.75 */
    lv0[8 * 2 + 1] = L3;
    /* level 1 anchor: r side (channels 4,5) = (ln3, 0) -> 0.25; class logit -ln 3 -> 0.25 */
    lv1[4] = L3, lv1[8] = -L3;
    Map levels[2] = {{lv0, 1, 9, 1, 2, 18}, {lv1, 1, 9, 1, 1, 9}};
    float strides[2] = {8, 16}, pred[5 * 3];
    detect_run(infer_kernels(), levels, 2, 1, 2, strides, pred);
    /* anchor 0: x1 = 0.5-0.5 = 0, y1 = 0.5-0.75 = -0.25, x2 = 1, y2 = 1 */
    /* anchor 1: x1 = 1, y1 = 0, x2 = 2, y2 = 1;  anchor 2: x1 = 0, y1 = 0, x2 = 0.75, y2 = 1 */
    const float want[5 * 3] = {
        0.5f * 8,   1.5f * 8, 0.375f * 16, /* cx */
        0.375f * 8, 0.5f * 8, 0.5f * 16,   /* cy */
        1 * 8,      1 * 8,    0.75f * 16,  /* w */
        1.25f * 8,  1 * 8,    1 * 16,      /* h */
        0.5f,       0.75f,    0.25f,       /* class 0 */
    };
    CU_ASSERT(it_check("detect decode", pred, want, 15, 1e-6));
}

/* ---- NMS -------------------------------------------------------------------------------- */
/* pred [4+nc, A] from boxes given as x1,y1,x2,y2 and per-class scores */
static void it_pred(float *pred, int A, int nc, int a, float x1, float y1, float x2, float y2, const float *scores) {
    pred[a] = (x1 + x2) / 2, pred[A + a] = (y1 + y2) / 2, pred[2 * A + a] = x2 - x1, pred[3 * A + a] = y2 - y1;
    for (int c = 0; c < nc; c++) pred[(4 + c) * A + a] = scores[c];
}

static void test_it_nms(void) {
    enum { A = 6, NC = 2 };
    float pred[(4 + NC) * A];
    it_pred(pred, A, NC, 0, 0, 0, 10, 10, (float[]){0.9f, 0.1f});    /* kept */
    it_pred(pred, A, NC, 1, 1, 1, 11, 11, (float[]){0.8f, 0.0f});    /* IoU 81/119 = 0.68 with 0: suppressed */
    it_pred(pred, A, NC, 2, 5, 0, 15, 10, (float[]){0.7f, 0.0f});    /* IoU 50/150 = 0.33 with 0: kept */
    it_pred(pred, A, NC, 3, 0, 0, 10, 10, (float[]){0.1f, 0.6f});    /* same box, other class: kept */
    it_pred(pred, A, NC, 4, 50, 50, 60, 60, (float[]){0.2f, 0.2f});  /* below conf */
    it_pred(pred, A, NC, 5, 50, 50, 60, 60, (float[]){0.3f, 0.26f}); /* barely above */
    InferBox out[8];
    int n = infer_nms(pred, NC, A, 0.25f, 0.45f, 300, 0, 0, out);
    CU_ASSERT_EQUAL(n, 4);
    if (n == 4) {
        CU_ASSERT(out[0].score == 0.9f && out[0].cls == 0 && out[0].x1 == 0 && out[0].y2 == 10);
        CU_ASSERT(out[1].score == 0.7f && out[1].cls == 0 && out[1].x1 == 5);
        CU_ASSERT(out[2].score == 0.6f && out[2].cls == 1);
        CU_ASSERT(out[3].score == 0.3f && out[3].cls == 0 && out[3].x1 == 50);
    }
    /* a lower IoU threshold also removes box 2; class-agnostic removes box 3 */
    CU_ASSERT_EQUAL(infer_nms(pred, NC, A, 0.25f, 0.3f, 300, 0, 0, out), 3);
    CU_ASSERT_EQUAL(infer_nms(pred, NC, A, 0.25f, 0.45f, 300, 0, 1, out), 3);
    /* max_det keeps the best */
    CU_ASSERT_EQUAL(infer_nms(pred, NC, A, 0.25f, 0.45f, 2, 0, 0, out), 2);
    CU_ASSERT(out[0].score == 0.9f && out[1].score == 0.7f);
    /* multi-label: anchor 5 also gives class 1 (0.26), which the class-0 box does not suppress */
    n = infer_nms(pred, NC, A, 0.25f, 0.45f, 300, 1, 0, out);
    CU_ASSERT_EQUAL(n, 5);
    /* nothing above conf */
    CU_ASSERT_EQUAL(infer_nms(pred, NC, A, 0.95f, 0.45f, 300, 0, 0, out), 0);
    InferBox a = {0, 0, 10, 10, 1, 0}, b = {5, 0, 15, 10, 1, 0}, c = {20, 20, 30, 30, 1, 0};
    CU_ASSERT(fabsf(infer_box_iou(&a, &b) - 50.f / 150.f) < 1e-6f);
    CU_ASSERT(infer_box_iou(&a, &c) == 0.f);
}

/* ---- letterbox -------------------------------------------------------------------------- */
static void test_it_letterbox(void) {
    Letterbox lb;
    infer_letterbox_geometry(1280, 720, 640, 32, 0, &lb); /* r = 0.5: 640x360, 140 rows above and below */
    CU_ASSERT(lb.new_w == 640 && lb.new_h == 360 && lb.out_w == 640 && lb.out_h == 640 && lb.left == 0 &&
              lb.top == 140);
    CU_ASSERT(lb.gain == 0.5f && lb.pad_x == 0.f && lb.pad_y == 140.f);
    infer_letterbox_geometry(1280, 720, 640, 32, 1, &lb); /* auto: 280 % 32 = 24 -> 12 + 12 */
    CU_ASSERT(lb.out_w == 640 && lb.out_h == 384 && lb.top == 12);
    infer_letterbox_geometry(500, 375, 640, 32, 1, &lb); /* r = 1.28: 640x480, no padding */
    CU_ASSERT(lb.new_w == 640 && lb.new_h == 480 && lb.out_h == 480 && lb.top == 0);
    infer_letterbox_geometry(100, 61, 64, 32, 0, &lb); /* r = 0.64: 64x39, 25 rows: 12 above, 13 below */
    CU_ASSERT(lb.new_h == 39 && lb.top == 12 && lb.out_h == 64);

    /* pixels: a 4x4 horizontal ramp (60 per column) doubled to 8x8; cv2 samples
     * at (x + 0.5) / 2 - 0.5, clamped to the image */
    unsigned char img[4 * 4 * 3];
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++)
            for (int c = 0; c < 3; c++) img[(y * 4 + x) * 3 + c] = (unsigned char)(60 * x + c);
    infer_letterbox_geometry(4, 4, 8, 32, 0, &lb);
    float chw[3 * 64];
    infer_letterbox(img, &lb, chw);
    int ok = 1;
    for (int c = 0; c < 3; c++)
        for (int x = 0; x < 8; x++) {
            float fx = fminf(fmaxf((x + 0.5f) / 2 - 0.5f, 0.f), 3.f);
            ok &= fabsf(chw[c * 64 + 5 * 8 + x] * 255 - (60 * fx + c)) < 1e-3f;
        }
    CU_ASSERT(ok);
    /* a 2x1 image in a 4x4 box: rows 0 and 3 are gray padding */
    unsigned char img2[2 * 3] = {200, 200, 200, 200, 200, 200};
    infer_letterbox_geometry(2, 1, 4, 32, 0, &lb);
    float chw2[3 * 16];
    infer_letterbox(img2, &lb, chw2);
    CU_ASSERT(lb.top == 1 && lb.new_h == 2);
    CU_ASSERT(fabsf(chw2[0] - 114.f / 255) < 1e-6f && fabsf(chw2[15] - 114.f / 255) < 1e-6f);
    CU_ASSERT(fabsf(chw2[4] - 200.f / 255) < 1e-6f && fabsf(chw2[16 + 11] - 200.f / 255) < 1e-6f);

    infer_letterbox_geometry(1280, 720, 640, 32, 0, &lb);
    InferBox boxes[2] = {{100, 200, 300, 400, 1, 0}, {-10, 100, 700, 650, 1, 0}};
    infer_scale_boxes(&lb, boxes, 2);
    CU_ASSERT(boxes[0].x1 == 200 && boxes[0].y1 == 120 && boxes[0].x2 == 600 && boxes[0].y2 == 520);
    CU_ASSERT(boxes[1].x1 == 0 && boxes[1].y2 == 720 && boxes[1].x2 == 1280); /* clipped */
}

/* ---- garbage in ------------------------------------------------------------------------------ */
static void it_try_graph(ItWeights *W, const char *text) {
    InferModel *m = infer_model_build(text, NULL, it_lookup, W);
    if (!m) {
        CU_ASSERT(strlen(gelan_last_error()) > 0);
        return;
    }
    float x[3 * 12 * 12];
    for (int i = 0; i < 3 * 12 * 12; i++) x[i] = it_rand();
    InferShape os;
    if (infer_model_input_channels(m) == 3) infer_model_run(m, x, 1, 3, 12, 12, &os); /* may fail, must not crash */
    infer_model_free(m);
}

static void test_it_fuzz(void) {
    ItWeights W = {.n = 0};
    it_graph_weights(&W);
    it_add(&W, "d.w", 4, 9, 3, 1, 1, 0.3f);
    char buf[512];
    /* random bytes */
    for (int i = 0; i < 200; i++) {
        int n = (int)((it_rand() + 1) * 100);
        for (int j = 0; j < n; j++) buf[j] = (char)(1 + (it_seed >> 9) % 255), it_rand();
        buf[n] = '\0';
        it_try_graph(&W, buf);
    }
    /* token soup from the graph vocabulary, with small numbers */
    static const char *const vocab[] = {
        "conv",    "maxpool",  "avgpool",   "upsample", "concat",    "split",     "add",       "detect",
        "input",   "x",        "y",         "x,y",      "input,x",   "c=8",       "k=3",       "k=1",
        "s=2",     "p=1",      "g=2",       "act=silu", "w=c1.w",    "b=c1.b",    "w=d.w",     "c=9",
        "scale=2", "size=3,3", "sizes=4,4", "sizes=3",  "nc=1",      "reg_max=2", "strides=8", "\n",
        "\n",      "#",        "=",         ",",        "alpha=0.1", "d=2"};
    int nv = (int)(sizeof vocab / sizeof *vocab);
    for (int i = 0; i < 400; i++) {
        buf[0] = '\0';
        int n = 1 + (int)((it_rand() + 1) * 12);
        for (int j = 0; j < n; j++) {
            int v = (int)((it_rand() + 1) / 2 * nv) % nv;
            strncat(buf, vocab[v], sizeof buf - strlen(buf) - 2);
            strncat(buf, " ", sizeof buf - strlen(buf) - 1);
        }
        it_try_graph(&W, buf);
    }
    /* mutations of a valid graph: one character replaced, dropped or doubled */
    size_t len = strlen(IT_GRAPH);
    for (int i = 0; i < 300 && len < sizeof buf - 2; i++) {
        size_t at = (size_t)((it_rand() + 1) / 2 * len) % len;
        int kind = (int)((it_rand() + 1) * 1.5f) % 3;
        if (kind == 0) {
            memcpy(buf, IT_GRAPH, len + 1);
            buf[at] = " ,=x019\n#"[(it_seed >> 12) % 9];
        } else if (kind == 1) {
            memcpy(buf, IT_GRAPH, at);
            memcpy(buf + at, IT_GRAPH + at + 1, len - at);
        } else {
            memcpy(buf, IT_GRAPH, at + 1);
            memcpy(buf + at + 1, IT_GRAPH + at, len - at + 1);
        }
        it_try_graph(&W, buf);
    }
    it_free(&W);
}

typedef struct {
    const char *name;
    void (*fn)(void);
} InferTestCase;

static const InferTestCase infer_cases[] = {
    {"graph parse and load errors name the line", test_it_graph_errors},
    {"size-dependent errors at run time", test_it_run_errors},
    {"hand-written graph end to end vs reference ops", test_it_graph_end_to_end},
    {"max and avg pooling bit for bit against their definition", test_it_pools_exact},
    {"output that is a view comes back contiguous", test_it_output_view},
    {"model file: load, run, metadata errors", test_it_model_file},
    {"detect: DFL decode on a hand-computed case", test_it_detect_decode},
    {"NMS on hand cases", test_it_nms},
    {"letterbox geometry, pixels and scale-back", test_it_letterbox},
    {"garbage graphs are rejected without crashing", test_it_fuzz},
    {NULL, NULL},
};

#ifndef INFER_SELFTEST
SUITE_FN(infer) {
    CU_pSuite s = CU_add_suite("infer", NULL, NULL);
    if (!s) return -1;
    for (const InferTestCase *t = infer_cases; t->name; t++) CU_add_test(s, t->name, t->fn);
    return 0;
}
#endif
