/* gelan-infer against ONNX Runtime (and PyTorch) on the fused gelan-t and
 * gelan-c, batch 1, in one run.
 *
 * Each model is built from configs/models (seeded random weights: latency does
 * not depend on them), fused and written as an inference graph by the same
 * code as `gelan convert` (nn/convert.h), then exported with
 * export/onnx_export.h. For every model, image size and thread count:
 *   - gelan-infer fp32 runs in-process (infer/infer.h, the pool sized to the
 *     threads) and ONNX Runtime on the exported model in a co-process
 *     (tools/ort_run.mjs --serve: npm onnxruntime-node, all graph
 *     optimizations, intra-op threads = threads), ALTERNATING: --burst B runs
 *     of one (the last is timed: warm caches), then B of the other, --runs
 *     times. On a machine shared with other jobs both then see the same load;
 *     the ratio is the median of the per-pair ratios;
 *   - gelan-infer int8: the same model quantized as `gelan quantize` + `gelan
 *     convert` do (percentile ranges from 2 random images), timed in the same
 *     bursts right after the fp32 model; the last column is int8 / fp32;
 *   - PyTorch: tools/bench_model_torch.py (python3-torch, the official fuse()),
 *     median of its runs, started right after.
 * Times are medians over --runs runs (after --warmup) of every --rounds round;
 * the load average is printed. --profile K adds per-op-type and slowest-node
 * times of both runtimes at the first size and the last thread count.
 *
 * usage: bench_ort_bench [--models t,c] [--imgs 640,320] [--threads 1,2] [--runs N] [--warmup N]
 *        [--burst B] [--rounds R] [--no-torch] [--no-ort] [--profile K] [--keep DIR]
 * ONNX Runtime: `npm install --ignore-scripts` at the repository root (skipped with a note when absent).
 * PyTorch: $GELAN_PYTHON, else /usr/bin/python3 (Debian's python3-torch). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "autograd/tape.h"
#include "export/onnx_export.h"
#include "infer/infer.h"
#include "nn/calibrate.h"
#include "nn/convert.h"
#include "nn/model.h"
#include "nn/quant.h"
#include "tensor/rng.h"
#include "tensor/error.h"
#include "tensor/pool.h"

#define MAX_LIST 8
#define MAX_ROUNDS 16
#define MAX_RUNS 64
#define PAUSE_US 20000 /* between the two runtimes: lets the other's threads go idle */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* median of v[0..n) (n >= 1; v is sorted in place); < 0 entries are failures and left out */
static double median(double *v, int n) {
    int k = 0;
    for (int i = 0; i < n; i++)
        if (v[i] >= 0) v[k++] = v[i];
    if (!k) return -1;
    qsort(v, (size_t)k, sizeof *v, cmp_double);
    return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

static int parse_list(const char *s, int *out) {
    int n = 0;
    for (const char *p = s; *p && n < MAX_LIST;) {
        out[n++] = atoi(p);
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    return n;
}

static double load_average(void) {
    double l[1] = {-1};
    return getloadavg(l, 1) == 1 ? l[0] : -1;
}

static const char *python(void) {
    const char *p = getenv("GELAN_PYTHON");
    if (p && *p) return p;
    return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

/* Runs cmd; the number after `key` in its output ("ort_ms median=12.3"), or -1. */
static double run_median(const char *cmd, const char *key) {
    FILE *f = popen(cmd, "r");
    char line[4096], last[4096] = "";
    double v = -1;
    while (f && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, key);
        if (p && (p = strstr(p, "median="))) v = atof(p + 7);
        snprintf(last, sizeof last, "%s", line);
    }
    int status = f ? pclose(f) : -1;
    if (status != 0 || v < 0) {
        fprintf(stderr, "failed (status %d): %s\n  %s", status, cmd, last);
        return -1;
    }
    return v;
}

/* ---- the models ------------------------------------------------------------------ */
typedef struct {
    const char *name, *cfg;
    Model *model;
    InferGraph graph, graph8; /* fp32, int8 */
    char onnx[512];
} Net;

static int net_build(Net *n, const char *dir) {
    ModelOptions opt = {.nc = 0, .seed = 2024};
    n->model = model_build_file(n->cfg, &opt);
    if (!n->model || model_fuse(n->model) || convert_graph(n->model, &n->graph)) return -1;
    snprintf(n->onnx, sizeof n->onnx, "%s/%s.onnx", dir, n->name);
    return onnx_export_graph(n->graph.text, NULL, convert_graph_lookup, &n->graph, NULL, n->onnx, NULL);
}

/* Calibration batches for the int8 model: random images (the speed of an int8 model does
 * not depend on its scales; force accepts whatever ranges random weights give). */
static int random_batch(void *ctx, int i, Tensor **images) {
    Tensor **t = ctx;
    Rng r;
    rng_seed(&r, 100 + (uint64_t)i);
    for (size_t j = 0; j < (*t)->numel; j++) (*t)->data[j] = rng_uniform(&r);
    *images = *t;
    return 0;
}

/* The same model quantized the way `gelan quantize` + `gelan convert` do it (default
 * exclusions, percentile calibration on 2 random 160x160 images), as an int8 graph. */
static int net_build_int8(Net *n) {
    ModelOptions opt = {.nc = 0, .seed = 2024};
    Model *m = model_build_file(n->cfg, &opt);
    Tape *t = tape_new();
    int shape[4] = {1, 3, 160, 160};
    Tensor *img = tensor_new(4, shape);
    QatOptions qo;
    qat_options_default(&qo, 1);
    CalibOptions co;
    calib_options_default(&co);
    co.force = true;
    CalibReport rep = {0};
    int rc = m && t && img ? 0 : -1;
    if (!rc) rc = model_qat_enable(m, &qo);
    if (!rc) rc = calibrate_model(m, t, 2, random_batch, &img, &co, &rep);
    if (!rc) rc = model_qat_fold(m);
    if (!rc) rc = convert_graph(m, &n->graph8);
    calib_report_free(&rep);
    tensor_free(img);
    tape_free(t);
    model_free(m);
    return rc;
}

/* ---- gelan-infer in-process ------------------------------------------------------------ */
static float *make_input(int img) {
    size_t numel = (size_t)3 * img * img;
    float *x = malloc(numel * sizeof *x);
    for (size_t i = 0; x && i < numel; i++) x[i] = (float)((i * 2654435761u) >> 8 & 255) / 255.f; /* any image */
    return x;
}

/* one run in ms, -1 on failure */
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One run: wall ms (-1 on failure), and the process's CPU ms in *cpu (may be NULL). */
static double ours_once(InferModel *m, const float *x, int img, double *cpu) {
    InferShape os;
    double t0 = now(), c0 = cpu_now();
    if (!infer_model_run(m, x, 1, 3, img, img, &os)) {
        fprintf(stderr, "gelan-infer: %s\n", gelan_last_error());
        return -1;
    }
    if (cpu) *cpu = (cpu_now() - c0) * 1e3;
    return (now() - t0) * 1e3;
}

/* warmup runs, then runs with the per-node profile on */
static int profile_runs(InferModel *m, int img, int runs, int warmup) {
    float *x = make_input(img);
    int ok = x != NULL;
    for (int i = 0; ok && i < warmup; i++) ok = ours_once(m, x, img, NULL) >= 0;
    infer_model_set_profile(m, 1);
    for (int i = 0; ok && i < runs; i++) ok = ours_once(m, x, img, NULL) >= 0;
    free(x);
    return ok ? 0 : -1;
}

/* the installed onnxruntime-node version, from its package.json */
static const char *ort_version(void) {
    static char v[32] = "?";
    FILE *f = fopen("node_modules/onnxruntime-node/package.json", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "\"version\"");
        if (p && (p = strchr(p + 9, '"')) && sscanf(p + 1, "%31[^\"]", v) == 1) break;
    }
    if (f) fclose(f);
    return v;
}

/* ---- ONNX Runtime in a co-process ---------------------------------------------------------- */
typedef struct {
    pid_t pid;
    FILE *to, *from;
} Coproc;

static int ort_start(Coproc *c, const char *onnx, int img, int threads) {
    char shape[64], thr[16];
    snprintf(shape, sizeof shape, "1,3,%d,%d", img, img);
    snprintf(thr, sizeof thr, "%d", threads);
    char *argv[] = {"node", "tools/ort_run.mjs", "--model", (char *)onnx, "--shape",
                    shape,  "--threads",         thr,       "--serve",    NULL};
    int in[2], out[2];
    if (pipe(in)) return -1;
    if (pipe(out)) return close(in[0]), close(in[1]), -1;
    fflush(NULL);
    c->pid = fork();
    if (c->pid == 0) {
        dup2(in[0], 0), dup2(out[1], 1);
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(in[0]), close(out[1]);
    c->to = fdopen(in[1], "w"), c->from = fdopen(out[0], "r");
    return c->pid > 0 && c->to && c->from ? 0 : -1;
}

/* k runs; the time of the last in ms, -1 on failure */
/* k runs; the wall ms of the last (-1 on failure) and its CPU ms in *cpu */
static double ort_runs(Coproc *c, int k, double *cpu) {
    char line[8192];
    double wall = -1;
    if (fprintf(c->to, "run %d\n", k) < 0 || fflush(c->to) || !fgets(line, sizeof line, c->from) ||
        strncmp(line, "ms ", 3) || sscanf(strrchr(line, ' ') + 1, "%lf/%lf", &wall, cpu) != 2)
        return -1;
    return wall;
}

static void ort_stop(Coproc *c) {
    if (c->to) fputs("quit\n", c->to), fclose(c->to);
    if (c->from) fclose(c->from);
    if (c->pid > 0) waitpid(c->pid, NULL, 0);
    *c = (Coproc){0};
}

/* Our per-node times grouped like ORT's op types: conv by kernel, stride and
 * groups (the activation is inside our conv; ORT runs SiLU as Sigmoid + Mul). */
static void print_our_profile(FILE *f, InferModel *m, int runs, int top) {
    const double *p = infer_model_profile(m);
    int L = infer_model_layers(m);
    char keys[32][48];
    double sum[32] = {0}, total = 0;
    int count[32] = {0}, nk = 0;
    for (int i = 0; i < L; i++) {
        const char *d = infer_model_node_desc(m, i);
        char key[48];
        int k = 1, s = 1, g = 1, c = 0;
        const char *q;
        if (!strncmp(d, "conv ", 5)) {
            if ((q = strstr(d, " k="))) k = atoi(q + 3);
            if ((q = strstr(d, " s="))) s = atoi(q + 3);
            if ((q = strstr(d, " g="))) g = atoi(q + 3);
            if ((q = strstr(d, " c="))) c = atoi(q + 3);
            snprintf(key, sizeof key, "conv %dx%d s%d%s", k, k, s, g > 1 ? (g == c ? " depthwise" : " grouped") : "");
        } else {
            snprintf(key, sizeof key, "%.*s", (int)strcspn(d, " "), d);
        }
        int j = 0;
        while (j < nk && strcmp(keys[j], key)) j++;
        if (j == nk && nk < 32) snprintf(keys[nk++], sizeof keys[0], "%s", key);
        if (j < 32) sum[j] += p[i], count[j]++;
        total += p[i];
    }
    fprintf(f, "\ngelan-infer profile: %.3f ms per run in graph nodes\n  %-22s %8s %7s %6s\n", total * 1e3 / runs, "op",
            "ms/run", "share", "nodes");
    for (int done = 0; done < nk; done++) { /* by time, largest first */
        int b = -1;
        for (int j = 0; j < nk; j++)
            if (count[j] >= 0 && (b < 0 || sum[j] > sum[b])) b = j;
        fprintf(f, "  %-22s %8.3f %6.1f%% %6d\n", keys[b], sum[b] * 1e3 / runs, 100 * sum[b] / total, count[b]);
        count[b] = -1;
    }
    fprintf(f, "slowest nodes (ms per run):\n");
    double *copy = malloc((size_t)L * sizeof *copy);
    if (!copy) return;
    memcpy(copy, p, (size_t)L * sizeof *copy);
    for (int r = 0; r < top && r < L; r++) {
        int b = 0;
        for (int i = 1; i < L; i++)
            if (copy[i] > copy[b]) b = i;
        fprintf(f, "  %8.3f  %s\n", copy[b] * 1e3 / runs, infer_model_node_desc(m, b));
        copy[b] = -1;
    }
    free(copy);
}

/* *text += add */
static void concat(char **text, const char *add) {
    size_t a = *text ? strlen(*text) : 0, b = strlen(add);
    char *t = realloc(*text, a + b + 1);
    if (!t) return;
    memcpy(t + a, add, b + 1);
    *text = t;
}

static void profile_ours(InferModel *m, int img, int runs, int warmup, int top, char **text) {
    char *add = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&add, &len);
    if (!f) return;
    if (profile_runs(m, img, runs, warmup) == 0) print_our_profile(f, m, runs, top);
    infer_model_set_profile(m, 0);
    fclose(f);
    concat(text, add);
    free(add);
}

/* Appends the output of a command (stdout and stderr). */
static void append_output(const char *cmd, char **text) {
    FILE *p = popen(cmd, "r");
    char line[4096];
    while (p && fgets(line, sizeof line, p)) concat(text, line);
    if (!p || pclose(p) != 0) fprintf(stderr, "failed: %s\n", cmd);
}

int main(int argc, char **argv) {
    const char *models = "t,c", *keep = NULL;
    int imgs[MAX_LIST] = {640, 320}, nimg = 2, threads[MAX_LIST] = {1, 2}, nthr = 2;
    int runs = 5, warmup = 2, rounds = 1, burst = 2, torch = 1, ort = 1, profile = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--models") && v)
            models = v, i++;
        else if (!strcmp(a, "--imgs") && v)
            nimg = parse_list(v, imgs), i++;
        else if (!strcmp(a, "--threads") && v)
            nthr = parse_list(v, threads), i++;
        else if (!strcmp(a, "--runs") && v)
            runs = atoi(v), i++;
        else if (!strcmp(a, "--warmup") && v)
            warmup = atoi(v), i++;
        else if (!strcmp(a, "--burst") && v)
            burst = atoi(v), i++;
        else if (!strcmp(a, "--rounds") && v)
            rounds = atoi(v), i++;
        else if (!strcmp(a, "--profile") && v)
            profile = atoi(v), i++;
        else if (!strcmp(a, "--keep") && v)
            keep = v, i++;
        else if (!strcmp(a, "--no-torch"))
            torch = 0;
        else if (!strcmp(a, "--no-ort"))
            ort = 0;
        else {
            fprintf(stderr,
                    "usage: %s [--models t,c] [--imgs 640,320] [--threads 1,2] [--runs N] [--warmup N] [--burst B] "
                    "[--rounds R] "
                    "[--no-torch] [--no-ort] [--profile K] [--keep DIR]\n",
                    argv[0]);
            return 2;
        }
    }
    int bad =
        runs < 1 || runs > MAX_RUNS || burst < 1 || warmup < 0 || rounds < 1 || rounds > MAX_ROUNDS || !nimg || !nthr;
    for (int i = 0; i < nimg; i++) bad |= imgs[i] < 32 || imgs[i] % 32;
    for (int i = 0; i < nthr; i++) bad |= threads[i] < 1;
    if (bad)
        return fprintf(stderr, "bad --runs (1..%d)/--warmup/--rounds (1..%d)/--imgs (multiples of 32)/--threads\n",
                       MAX_RUNS, MAX_ROUNDS),
               2;
    if (ort && access("node_modules/onnxruntime-node/package.json", R_OK) != 0) {
        printf("ONNX Runtime: node_modules/onnxruntime-node not found (`npm install --ignore-scripts`): not timed\n");
        ort = 0;
    }

    Net nets[2];
    int nn = 0;
    if (strchr(models, 't')) nets[nn++] = (Net){.name = "gelan-t", .cfg = "configs/models/gelan-t.yaml"};
    if (strchr(models, 'c')) nets[nn++] = (Net){.name = "gelan-c", .cfg = "configs/models/gelan-c.yaml"};
    char dir[256];
    if (keep)
        snprintf(dir, sizeof dir, "%s", keep);
    else
        snprintf(dir, sizeof dir, "/tmp/gelan_ort_bench_%d", (int)getpid());
    mkdir(dir, 0755);
    int rc = 0;
    for (int i = 0; i < nn; i++)
        if (net_build(&nets[i], dir) || net_build_int8(&nets[i])) {
            fprintf(stderr, "%s: %s\n", nets[i].name, gelan_last_error());
            return 1;
        }

    /* every timed pair of each cell [net][img][threads], and PyTorch's median per round */
    typedef struct {
        double ours[MAX_ROUNDS * MAX_RUNS], ort[MAX_ROUNDS * MAX_RUNS], ratio[MAX_ROUNDS * MAX_RUNS];
        double ours8[MAX_ROUNDS * MAX_RUNS]; /* gelan-infer int8 */
        double ours_cpu[MAX_ROUNDS * MAX_RUNS], ort_cpu[MAX_ROUNDS * MAX_RUNS], cpu_ratio[MAX_ROUNDS * MAX_RUNS];
        double torch[MAX_ROUNDS];
    } Cell;
    static Cell cells[2][MAX_LIST][MAX_LIST];
    char *profiles[2] = {NULL, NULL}; /* printed after the table */
    double load_min = 1e9, load_max = -1;
    const char *kernels = "?";
    /* one pool per thread count, each started once */
    for (int t = 0; t < nthr; t++) {
        pool_init(threads[t]);
        InferModel *ms[2] = {NULL, NULL}, *ms8[2] = {NULL, NULL};
        for (int k = 0; k < nn; k++)
            if (!(ms[k] = infer_model_build(nets[k].graph.text, NULL, convert_graph_lookup, &nets[k].graph)) ||
                !(ms8[k] = infer_model_build(nets[k].graph8.text, NULL, convert_graph_lookup, &nets[k].graph8))) {
                fprintf(stderr, "%s: %s\n", nets[k].name, gelan_last_error());
                return 1;
            }
        kernels = infer_model_kernels(ms[0]);
        for (int r = 0; r < rounds; r++)
            for (int k = 0; k < nn; k++)
                for (int s = 0; s < nimg; s++) {
                    Cell *C = &cells[k][s][t];
                    int img = imgs[s], i0 = r * runs;
                    double l = load_average();
                    load_min = l < load_min ? l : load_min, load_max = l > load_max ? l : load_max;
                    float *in = make_input(img);
                    Coproc c = {0};
                    int have_ort = ort && ort_start(&c, nets[k].onnx, img, threads[t]) == 0;
                    if (ort && !have_ort) fprintf(stderr, "ONNX Runtime co-process failed to start\n");
                    double cpu;
                    for (int i = 0; in && i < warmup; i++) ours_once(ms[k], in, img, &cpu), ours_once(ms8[k], in, img, &cpu);
                    if (have_ort && warmup && ort_runs(&c, warmup, &cpu) < 0) have_ort = 0;
                    for (int i = i0; i < i0 + runs; i++) { /* a burst of each, the last run timed (warm caches) */
                        C->ours[i] = C->ort[i] = C->ratio[i] = C->ours_cpu[i] = C->ort_cpu[i] = C->cpu_ratio[i] = -1;
                        C->ours8[i] = -1;
                        for (int j = 0; in && j < burst; j++) C->ours[i] = ours_once(ms[k], in, img, &C->ours_cpu[i]);
                        for (int j = 0; in && j < burst; j++) C->ours8[i] = ours_once(ms8[k], in, img, &cpu);
                        if (!have_ort) continue;
                        usleep(PAUSE_US);
                        C->ort[i] = ort_runs(&c, burst, &C->ort_cpu[i]);
                        if (C->ort[i] > 0 && C->ours[i] > 0) {
                            C->ratio[i] = C->ours[i] / C->ort[i];
                            C->cpu_ratio[i] = C->ours_cpu[i] / C->ort_cpu[i];
                        }
                        usleep(PAUSE_US);
                    }
                    if (ort && (!have_ort || C->ort[i0] < 0))
                        fprintf(stderr, "ONNX Runtime failed (%s)\n", nets[k].onnx);
                    ort_stop(&c);
                    free(in);
                    C->torch[r] = -1;
                    if (torch) {
                        char cmd[2048];
                        snprintf(cmd, sizeof cmd,
                                 "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} %s tools/bench_model_torch.py --cfg %s "
                                 "--img %d --threads %d --runs %d --warmup %d 2>&1",
                                 python(), nets[k].cfg, img, threads[t], runs, warmup);
                        C->torch[r] = run_median(cmd, "torch_infer_ms");
                    }
                    double om[MAX_RUNS], xm[MAX_RUNS];
                    memcpy(om, C->ours + i0, (size_t)runs * sizeof *om);
                    memcpy(xm, C->ort + i0, (size_t)runs * sizeof *xm);
                    fprintf(stderr, "round %d/%d %s %d %dt: ours %.1f ort %.1f torch %.1f ms (load %.1f)\n", r + 1,
                            rounds, nets[k].name, img, threads[t], median(om, runs), median(xm, runs), C->torch[r], l);
                }
        if (profile > 0 && t == nthr - 1) /* where the time goes: first size, last thread count */
            for (int k = 0; k < nn; k++) {
                char head[256];
                snprintf(head, sizeof head, "\n### %s, %dx%d, %d threads\n", nets[k].name, imgs[0], imgs[0],
                         threads[t]);
                concat(&profiles[k], head);
                profile_ours(ms[k], imgs[0], runs, warmup, profile, &profiles[k]);
                if (ort) {
                    char cmd[2048];
                    snprintf(cmd, sizeof cmd,
                             "node tools/ort_run.mjs --model %s --shape 1,3,%d,%d --bench %d --warmup %d --threads %d "
                             "--profile %d 2>&1",
                             nets[k].onnx, imgs[0], imgs[0], runs, warmup, threads[t], profile);
                    append_output(cmd, &profiles[k]);
                }
            }
        for (int k = 0; k < nn; k++) infer_model_free(ms[k]), infer_model_free(ms8[k]);
        pool_shutdown();
    }

    printf(
        "gelan-infer (%s kernels) vs ONNX Runtime %s (onnxruntime-node, our exported fp32 model), alternating\n"
        "in bursts of %d runs (the last timed), vs PyTorch (python3-torch, official fuse()): fused models, random\n"
        "weights, batch 1; medians of %d round%s x %d runs after %d warm-up; load average %.1f-%.1f on %d cores\n"
        "during the run (other processes share them). Ratios are medians of the per-pair ratios. CPU ms: the\n"
        "process's CPU time per run (all its threads; ORT's intra-op threads spin while waiting), which the load\n"
        "does not inflate; with 1 thread it is the measure of per-core speed.\n\n",
        kernels, ort ? ort_version() : "(not run)", burst, rounds, rounds > 1 ? "s" : "", runs, warmup, load_min,
        load_max, (int)sysconf(_SC_NPROCESSORS_ONLN));
    printf(
        "| model | img | threads | GFLOPs | gelan-infer ms | ORT ms | gelan-infer / ORT | gelan-infer CPU ms | "
        "ORT CPU ms | CPU ratio | PyTorch ms | gelan-infer / PyTorch | gelan-infer int8 ms | int8 / fp32 |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    int n = rounds * runs;
    for (int k = 0; k < nn; k++) {
        InferModel *m = infer_model_build(nets[k].graph.text, NULL, convert_graph_lookup, &nets[k].graph);
        for (int s = 0; s < nimg; s++)
            for (int t = 0; t < nthr; t++) {
                Cell *C = &cells[k][s][t];
                double o = median(C->ours, n), x = median(C->ort, n), q = median(C->ratio, n);
                double oc = median(C->ours_cpu, n), xc = median(C->ort_cpu, n), qc = median(C->cpu_ratio, n);
                double p = median(C->torch, rounds);
                char xs[96] = "- | - | - | -", ps[48] = "- | -";
                if (x > 0)
                    snprintf(xs, sizeof xs, "%.1f | **%.2f** | %.1f | %.1f | %.2f", x, q, oc, xc, qc);
                else
                    snprintf(xs, sizeof xs, "- | - | %.1f | - | -", oc);
                if (p > 0) snprintf(ps, sizeof ps, "%.1f | %.2f", p, o / p);
                double o8 = median(C->ours8, n);
                printf("| %s | %d | %d | %.1f | %.1f | %s | %s | %.1f | %.2f |\n", nets[k].name, imgs[s], threads[t],
                       m ? infer_model_flops(m, imgs[s], imgs[s]) / 1e9 : 0, o, xs, ps, o8, o8 / o);
                if (o < 0) rc = 1;
            }
        infer_model_free(m);
    }

    for (int k = 0; k < nn; k++)
        if (profiles[k]) fputs(profiles[k], stdout), free(profiles[k]);

    for (int k = 0; k < nn; k++) {
        if (!keep) unlink(nets[k].onnx);
        convert_graph_free(&nets[k].graph);
        convert_graph_free(&nets[k].graph8);
        model_free(nets[k].model);
    }
    if (!keep) rmdir(dir);
    return rc;
}
