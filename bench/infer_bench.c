/* Benchmark of the inference runtime on fused GELAN models, against PyTorch
 * in the same run.
 *
 * `gelan convert` does not exist yet, so this program writes the fused
 * gelan-t and gelan-c graphs itself from the official layer structure
 * (gelan-t.yaml, gelan-c.yaml; after model.fuse(): every Conv is conv + bias
 * + SiLU, each RepConvN a single 3x3 conv + bias + SiLU), with random weights.
 * Latency does not depend on the weight values. For each model it:
 *   1. builds the model and times gelan-infer (batch 1, 640x640, 2 threads);
 *   2. saves the model and one input/output pair, and runs
 *      tools/bench_infer_torch.py, which builds the same network from
 *      torch.nn.functional ops, times it with the same thread count and checks
 *      its output against ours;
 *   3. prints one table row: latency, GFLOP/s, PyTorch latency, the ratio.
 * The rate of our own GEMM (infer/gemm.c: the same micro-kernels, on a
 * 1536^3 product, with the same threads) is printed as the machine's
 * reference peak, and each model's rate as a percentage of it.
 *
 * usage: bench_infer_bench [--runs N] [--threads N] [--img N] [--models t,c] [--isa c|avx2|avx512|neon]
 *        [--no-torch] [--keep DIR] [--profile K]
 * PyTorch: $GELAN_PYTHON, else /usr/bin/python3 (Debian's python3-torch), else python3. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "infer/gemm.h"
#include "infer/infer.h"
#include "infer/kernels.h"
#include "tensor/error.h"
#include "tensor/pool.h"
#include "tensor/safetensors.h"

/* ---- a graph builder ----------------------------------------------------------- */
typedef struct {
    char name[32];
    float *data;
    int ndim, shape[4];
} Weight;

typedef struct {
    char *text;
    size_t len, cap;
    Weight *w;
    int nw, capw;
    int nval, nconv;
    unsigned seed;
} GB;

static void gb_line(GB *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#include <stdarg.h>
static void gb_line(GB *g, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(g->text + g->len, g->cap - g->len, fmt, ap);
        va_end(ap);
        if ((size_t)n + 2 < g->cap - g->len) {
            g->len += (size_t)n;
            g->text[g->len++] = '\n';
            g->text[g->len] = '\0';
            return;
        }
        g->cap = g->cap ? 2 * g->cap : 1 << 16;
        g->text = realloc(g->text, g->cap);
    }
}

static float gb_rand(GB *g) {
    g->seed = g->seed * 1664525u + 1013904223u;
    return (float)(g->seed >> 8) / (float)(1u << 23) - 1.f;
}

static Weight *gb_weight(GB *g, const char *name, int ndim, const int *shape, float scale) {
    if (g->nw == g->capw) g->w = realloc(g->w, sizeof *g->w * (size_t)(g->capw = g->capw ? 2 * g->capw : 64));
    Weight *w = &g->w[g->nw++];
    snprintf(w->name, sizeof w->name, "%s", name);
    w->ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) w->shape[i] = shape[i], n *= (size_t)shape[i];
    w->data = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) w->data[i] = scale * gb_rand(g);
    return w;
}

static const char *vname(int v) {
    static char buf[8][16];
    static int r;
    if (v < 0) return "input";
    r = (r + 1) % 8;
    snprintf(buf[r], sizeof buf[r], "x%d", v);
    return buf[r];
}

/* conv + bias + activation; weights uniform with variance 1/fan_in keep the
 * activations of a deep random SiLU net of order 1 */
static int gb_conv(GB *g, int x, int c1, int c2, int k, int s, int groups, const char *act) {
    int y = g->nval++, id = g->nconv++;
    char wn[32], bn[32];
    snprintf(wn, sizeof wn, "n%d.w", id);
    snprintf(bn, sizeof bn, "n%d.b", id);
    int ws[4] = {c2, c1 / groups, k, k}, bs[1] = {c2};
    gb_weight(g, wn, 4, ws, sqrtf(3.f / (c1 / groups * k * k)));
    gb_weight(g, bn, 1, bs, 0.1f);
    gb_line(g, "conv %s %s c=%d k=%d s=%d p=%d g=%d act=%s w=%s b=%s", vname(y), vname(x), c2, k, s, k / 2, groups, act,
            wn, bn);
    return y;
}
static int Conv(GB *g, int x, int c1, int c2, int k, int s) { return gb_conv(g, x, c1, c2, k, s, 1, "silu"); }

static void gb_split2(GB *g, int x, int ca, int cb, int *a, int *b) {
    *a = g->nval++, *b = g->nval++;
    gb_line(g, "split %s,%s %s sizes=%d,%d", vname(*a), vname(*b), vname(x), ca, cb);
}

static int gb_concat(GB *g, int n, const int *xs) {
    int y = g->nval++;
    char list[256] = "";
    for (int i = 0; i < n; i++) {
        strcat(list, i ? "," : "");
        strcat(list, vname(xs[i]));
    }
    gb_line(g, "concat %s %s", vname(y), list);
    return y;
}

static int gb_pool(GB *g, const char *op, int x, int k, int s, int p) {
    int y = g->nval++;
    gb_line(g, "%s %s %s k=%d s=%d p=%d", op, vname(y), vname(x), k, s, p);
    return y;
}

static int gb_add(GB *g, int a, int b) {
    int y = g->nval++;
    gb_line(g, "add %s %s,%s", vname(y), vname(a), vname(b));
    return y;
}

static int gb_upsample(GB *g, int x) {
    int y = g->nval++;
    gb_line(g, "upsample %s %s scale=2", vname(y), vname(x));
    return y;
}

/* ---- the fused GELAN blocks (models/common.py) ---------------------------------- */
static int AConv(GB *g, int x, int c1, int c2) { return Conv(g, gb_pool(g, "avgpool", x, 2, 1, 0), c1, c2, 3, 2); }

static int ADown(GB *g, int x, int c1, int c2) {
    int a, b, y = gb_pool(g, "avgpool", x, 2, 1, 0);
    gb_split2(g, y, c1 / 2, c1 / 2, &a, &b);
    int y1 = Conv(g, a, c1 / 2, c2 / 2, 3, 2);
    int y2 = Conv(g, gb_pool(g, "maxpool", b, 3, 2, 1), c1 / 2, c2 / 2, 1, 1);
    return gb_concat(g, 2, (int[]){y1, y2});
}

/* RepNBottleneck after fusing: RepConvN -> one 3x3 conv; residual when c1 == c2 */
static int RepNCSP(GB *g, int x, int c1, int c2, int n) {
    int c_ = c2 / 2;
    int m = Conv(g, x, c1, c_, 1, 1), y2 = Conv(g, x, c1, c_, 1, 1);
    for (int i = 0; i < n; i++) m = gb_add(g, m, Conv(g, Conv(g, m, c_, c_, 3, 1), c_, c_, 3, 1));
    return Conv(g, gb_concat(g, 2, (int[]){m, y2}), 2 * c_, c2, 1, 1);
}

static int RepNCSPELAN4(GB *g, int x, int c1, int c2, int c3, int c4, int n) {
    int a, b;
    gb_split2(g, Conv(g, x, c1, c3, 1, 1), c3 / 2, c3 / 2, &a, &b);
    int y2 = Conv(g, RepNCSP(g, b, c3 / 2, c4, n), c4, c4, 3, 1);
    int y3 = Conv(g, RepNCSP(g, y2, c4, c4, n), c4, c4, 3, 1);
    return Conv(g, gb_concat(g, 4, (int[]){a, b, y2, y3}), c3 + 2 * c4, c2, 1, 1);
}

static int ELAN1(GB *g, int x, int c1, int c2, int c3, int c4) {
    int a, b;
    gb_split2(g, Conv(g, x, c1, c3, 1, 1), c3 / 2, c3 / 2, &a, &b);
    int y2 = Conv(g, b, c3 / 2, c4, 3, 1), y3 = Conv(g, y2, c4, c4, 3, 1);
    return Conv(g, gb_concat(g, 4, (int[]){a, b, y2, y3}), c3 + 2 * c4, c2, 1, 1);
}

static int SPPELAN(GB *g, int x, int c1, int c2, int c3) {
    int y0 = Conv(g, x, c1, c3, 1, 1);
    int y1 = gb_pool(g, "maxpool", y0, 5, 1, 2), y2 = gb_pool(g, "maxpool", y1, 5, 1, 2);
    int y3 = gb_pool(g, "maxpool", y2, 5, 1, 2);
    return Conv(g, gb_concat(g, 4, (int[]){y0, y1, y2, y3}), 4 * c3, c2, 1, 1);
}

/* DDetect: per level a box branch (3x3, 3x3 g=4, 1x1 g=4 to 64) and a class
 * branch (3x3, 3x3, 1x1 to nc); channel widths as the official code */
static void DDetect(GB *g, const int *xs, const int *ch, int nc) {
    int c2 = ch[0] / 4 > 64 ? ch[0] / 4 : 64,
        c3 = ch[0] > (nc * 2 < 128 ? nc * 2 : 128) ? ch[0] : (nc * 2 < 128 ? nc * 2 : 128);
    c2 = (c2 + 3) / 4 * 4;
    int lv[3];
    for (int i = 0; i < 3; i++) {
        int box = Conv(g, xs[i], ch[i], c2, 3, 1);
        box = gb_conv(g, box, c2, c2, 3, 1, 4, "silu");
        box = gb_conv(g, box, c2, 64, 1, 1, 4, "none");
        int cls = Conv(g, Conv(g, xs[i], ch[i], c3, 3, 1), c3, c3, 3, 1);
        cls = gb_conv(g, cls, c3, nc, 1, 1, 1, "none");
        lv[i] = gb_concat(g, 2, (int[]){box, cls});
    }
    gb_line(g, "detect pred %s,%s,%s nc=%d reg_max=16 strides=8,16,32", vname(lv[0]), vname(lv[1]), vname(lv[2]), nc);
}

static void gelan_t(GB *g) {
    int x = Conv(g, -1, 3, 16, 3, 2);
    x = Conv(g, x, 16, 32, 3, 2);
    x = ELAN1(g, x, 32, 32, 32, 16);
    x = AConv(g, x, 32, 64);
    int p3 = RepNCSPELAN4(g, x, 64, 64, 64, 32, 3);
    x = AConv(g, p3, 64, 96);
    int p4 = RepNCSPELAN4(g, x, 96, 96, 96, 48, 3);
    x = AConv(g, p4, 96, 128);
    x = RepNCSPELAN4(g, x, 128, 128, 128, 64, 3);
    int l9 = SPPELAN(g, x, 128, 128, 64);
    x = gb_concat(g, 2, (int[]){gb_upsample(g, l9), p4});
    int l12 = RepNCSPELAN4(g, x, 224, 96, 96, 48, 3);
    x = gb_concat(g, 2, (int[]){gb_upsample(g, l12), p3});
    int l15 = RepNCSPELAN4(g, x, 160, 64, 64, 32, 3);
    x = gb_concat(g, 2, (int[]){AConv(g, l15, 64, 48), l12});
    int l18 = RepNCSPELAN4(g, x, 144, 96, 96, 48, 3);
    x = gb_concat(g, 2, (int[]){AConv(g, l18, 96, 64), l9});
    int l21 = RepNCSPELAN4(g, x, 192, 128, 128, 64, 3);
    DDetect(g, (int[]){l15, l18, l21}, (int[]){64, 96, 128}, 80);
}

static void gelan_c(GB *g) {
    int x = Conv(g, -1, 3, 64, 3, 2);
    x = Conv(g, x, 64, 128, 3, 2);
    x = RepNCSPELAN4(g, x, 128, 256, 128, 64, 1);
    x = ADown(g, x, 256, 256);
    int p3 = RepNCSPELAN4(g, x, 256, 512, 256, 128, 1);
    x = ADown(g, p3, 512, 512);
    int p4 = RepNCSPELAN4(g, x, 512, 512, 512, 256, 1);
    x = ADown(g, p4, 512, 512);
    x = RepNCSPELAN4(g, x, 512, 512, 512, 256, 1);
    int l9 = SPPELAN(g, x, 512, 512, 256);
    x = gb_concat(g, 2, (int[]){gb_upsample(g, l9), p4});
    int l12 = RepNCSPELAN4(g, x, 1024, 512, 512, 256, 1);
    x = gb_concat(g, 2, (int[]){gb_upsample(g, l12), p3});
    int l15 = RepNCSPELAN4(g, x, 1024, 256, 256, 128, 1);
    x = gb_concat(g, 2, (int[]){ADown(g, l15, 256, 256), l12});
    int l18 = RepNCSPELAN4(g, x, 768, 512, 512, 256, 1);
    x = gb_concat(g, 2, (int[]){ADown(g, l18, 512, 512), l9});
    int l21 = RepNCSPELAN4(g, x, 1024, 512, 512, 256, 1);
    DDetect(g, (int[]){l15, l18, l21}, (int[]){256, 512, 512}, 80);
}

static int gb_lookup(void *ctx, const char *name, InferTensor *out) {
    GB *g = ctx;
    for (int i = 0; i < g->nw; i++)
        if (!strcmp(g->w[i].name, name)) {
            out->data = g->w[i].data, out->ndim = g->w[i].ndim;
            for (int d = 0; d < out->ndim; d++) out->shape[d] = g->w[i].shape[d];
            return 0;
        }
    return -1;
}

static void gb_free(GB *g) {
    for (int i = 0; i < g->nw; i++) free(g->w[i].data);
    free(g->w);
    free(g->text);
}

/* ---- timing ---------------------------------------------------------------------------- */
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double cpu_now(void) { /* CPU time of all threads of the process */
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* GFLOP/s of our GEMM on a GEMM_PEAK_N^3 product over the pool (best of 5 after a
 * warm-up), or -1 + error. */
#define GEMM_PEAK_N 1536
static double gemm_peak_gflops(void) {
    const int n = GEMM_PEAK_N;
    const InferKernels *kern = infer_kernels();
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    double best = 1e30;
    if (!a || !b || !c) best = gelan_error("out of memory for three %dx%d matrices", n, n);
    for (int i = 0; best > 0 && i < n * n; i++) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
    for (int r = 0; best > 0 && r <= 5; r++) { /* r == 0 is the warm-up */
        double t0 = now();
        if (gemm_f32_parallel(kern, false, false, n, n, n, a, n, b, n, false, c, n) != 0) best = -1;
        double t = now() - t0;
        if (r > 0 && best > 0 && t < best) best = t;
    }
    free(a), free(b), free(c);
    return best > 0 ? 2.0 * n * n * n / best / 1e9 : -1;
}

static const char *python(void) {
    const char *p = getenv("GELAN_PYTHON");
    if (p && *p) return p;
    return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

typedef struct {
    double avg, min, max, diff, mag;
    int ok;
} TorchResult;

static TorchResult run_torch(const char *model, const char *io, int threads, int runs) {
    TorchResult r = {0};
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s tools/bench_infer_torch.py --model %s --io %s --threads %d --runs %d 2>&1", python(),
             model, io, threads, runs);
    FILE *f = popen(cmd, "r");
    char line[4096], last[4096] = "";
    while (f && fgets(line, sizeof line, f)) snprintf(last, sizeof last, "%s", line);
    int status = f ? pclose(f) : -1;
    const char *p = strstr(last, "\"avg_ms\"");
    if (status == 0 && p &&
        sscanf(p, "\"avg_ms\": %lf, \"min_ms\": %lf, \"max_ms\": %lf, \"max_abs_diff\": %lf, \"max_abs\": %lf", &r.avg,
               &r.min, &r.max, &r.diff, &r.mag) == 5)
        r.ok = 1;
    else
        fprintf(stderr, "PyTorch reference failed (%s): %s", cmd, last);
    return r;
}

static int save_model(const GB *g, const char *path) {
    StWriter *w = st_writer_new();
    for (int i = 0; i < g->nw; i++) st_writer_add_f32(w, g->w[i].name, g->w[i].ndim, g->w[i].shape, g->w[i].data);
    st_writer_set_metadata(w, "format", "gelan-infer/1");
    st_writer_set_metadata(w, "graph", g->text);
    int rc = st_writer_save(w, path);
    st_writer_free(w);
    return rc;
}

int main(int argc, char **argv) {
    int runs = 10, threads = 2, img = 640, torch = 1, profile = 0;
    const char *models = "t,c", *isa = NULL, *keep = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--img") && i + 1 < argc)
            img = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--models") && i + 1 < argc)
            models = argv[++i];
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc)
            isa = argv[++i];
        else if (!strcmp(argv[i], "--keep") && i + 1 < argc)
            keep = argv[++i];
        else if (!strcmp(argv[i], "--profile") && i + 1 < argc)
            profile = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-torch"))
            torch = 0;
        else {
            fprintf(stderr,
                    "usage: %s [--runs N] [--threads N] [--img N] [--models t,c] [--isa c|avx2|avx512|neon] "
                    "[--no-torch] [--keep DIR] [--profile K]\n",
                    argv[0]);
            return 2;
        }
    }
    if (runs < 1 || threads < 1 || img < 32) return fprintf(stderr, "bad --runs/--threads/--img\n"), 2;
    if (isa && infer_kernels_force(isa)) return fprintf(stderr, "%s\n", gelan_last_error()), 2;
    pool_init(threads);
    double peak = gemm_peak_gflops();
    if (peak <= 0) return fprintf(stderr, "GEMM peak: %s\n", gelan_last_error()), 1;
    char dir[256];
    if (keep)
        snprintf(dir, sizeof dir, "%s", keep), mkdir(dir, 0755);
    else
        snprintf(dir, sizeof dir, "/tmp/gelan_infer_bench_%d", (int)getpid()), mkdir(dir, 0755);

    printf("gelan-infer vs PyTorch: fused models, random weights, batch 1, %dx%d, %d threads, kernels %s\n", img, img,
           threads, infer_kernels()->name);
    printf("reference peak, our GEMM (infer/gemm.c, %d^3, %d threads): %.1f GFLOP/s\n\n", GEMM_PEAK_N, threads, peak);
    double load[1] = {0};
    if (getloadavg(load, 1) == 1)
        printf("load average at start: %.2f (other processes share the %d cores)\n\n", load[0],
               (int)sysconf(_SC_NPROCESSORS_ONLN));
    printf(
        "| model | params | GFLOPs | gelan-infer avg / min ms | CPU ms per run | GFLOP/s (min) | %% of GEMM peak | PyTorch "
        "avg / min ms | ratio (avg) | max |diff| / max |y| |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    int rc = 0;
    for (const char *p = models; *p; p++) {
        if (*p != 't' && *p != 'c') continue;
        GB g = {.seed = 2024};
        const char *name = *p == 't' ? "gelan-t" : "gelan-c";
        if (*p == 't')
            gelan_t(&g);
        else
            gelan_c(&g);
        InferModel *m = infer_model_build(g.text, NULL, gb_lookup, &g);
        if (!m) {
            fprintf(stderr, "%s: %s\n", name, gelan_last_error());
            rc = 1;
            gb_free(&g);
            continue;
        }
        size_t numel = (size_t)3 * img * img;
        float *x = malloc(numel * sizeof(float));
        for (size_t i = 0; i < numel; i++) x[i] = (gb_rand(&g) + 1) / 2;
        InferShape os;
        const float *y = infer_model_run(m, x, 1, 3, img, img, &os); /* also the warm-up */
        infer_model_run(m, x, 1, 3, img, img, &os);
        if (profile) infer_model_set_profile(m, 1);
        double sum = 0, mn = 1e30, cpu0 = cpu_now();
        for (int r = 0; r < runs; r++) {
            double t0 = now();
            y = infer_model_run(m, x, 1, 3, img, img, &os);
            double t = (now() - t0) * 1e3;
            sum += t, mn = t < mn ? t : mn;
        }
        double cpu = (cpu_now() - cpu0) * 1e3 / runs;
        double flops = infer_model_flops(m, img, img), avg = sum / runs;
        char mpath[512], iopath[512];
        snprintf(mpath, sizeof mpath, "%s/%s.safetensors", dir, name);
        snprintf(iopath, sizeof iopath, "%s/%s_io.safetensors", dir, name);
        TorchResult tr = {0};
        if (torch) {
            StWriter *w = st_writer_new();
            st_writer_add_f32(w, "input", 4, (int[]){1, 3, img, img}, x);
            st_writer_add_f32(w, "output.pred", os.ndim, os.shape, y);
            if (save_model(&g, mpath) || st_writer_save(w, iopath))
                fprintf(stderr, "%s\n", gelan_last_error());
            else
                tr = run_torch(mpath, iopath, threads, runs);
            st_writer_free(w);
            if (!keep) unlink(mpath), unlink(iopath);
        } else if (keep) {
            save_model(&g, mpath);
        }
        printf("| %s | %zu | %.1f | %.1f / %.1f | %.1f | %.0f | %.0f%% |", name, infer_model_params(m), flops / 1e9,
               avg, mn, cpu, flops / (mn / 1e3) / 1e9, 100 * flops / (mn / 1e3) / 1e9 / peak);
        if (tr.ok)
            printf(" %.1f / %.1f | %.2f | %.1e |\n", tr.avg, tr.min, avg / tr.avg, tr.diff / (tr.mag > 0 ? tr.mag : 1));
        else
            printf(" - | - | - |\n");
        printf("    (issue 6 reference, official PyTorch 1.13 fused: %s; ratio to it %.2f)\n",
               *p == 't' ? "62 ms" : "378 ms", avg / (*p == 't' ? 62.0 : 378.0));
        if (tr.ok && !(tr.diff <= 1e-4 * tr.mag)) {
            fprintf(stderr, "%s: gelan-infer and PyTorch differ by %g (max |y| %g)\n", name, tr.diff, tr.mag);
            rc = 1;
        }
        if (profile) {
            const double *prof = infer_model_profile(m);
            for (int k = 0; k < profile; k++) {
                int best = -1;
                for (int i = 0; i < infer_model_layers(m); i++)
                    if (prof[i] >= 0 && (best < 0 || prof[i] > prof[best])) best = i;
                if (best < 0) break;
                printf("    %7.3f ms  %s\n", prof[best] * 1e3 / runs, infer_model_node_desc(m, best));
                ((double *)prof)[best] = -1;
            }
        }
        free(x);
        infer_model_free(m);
        gb_free(&g);
    }
    if (!keep) rmdir(dir);
    pool_shutdown();
    return rc;
}
