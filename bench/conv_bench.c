/* conv2d speed on the convolutions of gelan-t and gelan-c, against PyTorch in the same run.
 *
 * The shape lists are derived from the official models/detect/gelan-t.yaml and gelan-c.yaml
 * by the module builders below, which follow the official modules (every Conv is k x k with
 * padding k/2): AConv and ADown convolve the (H-1)x(W-1) output of their 2x2 stride-1 average
 * pool, RepConvN has a 3x3 and a 1x1 branch, DDetect has 3x3 convs, grouped (g=4) 3x3 and 1x1
 * convs and biased 1x1 outputs. Identical shapes are timed once and counted as often as the
 * model has them, so the totals are the model's whole convolution time.
 *
 * For each shape: forward (no grad, batch 1) and forward+backward (batch 1; dx, dW and db;
 * the stem conv on the image computes no dx, as in training). Each is timed as the minimum
 * over a few repetitions after one warm-up (other processes share the machine; the minimum is
 * the least disturbed). When `import torch` works, tools/bench_conv_torch.py times the same
 * shapes with the same thread count, each shape right after ours, and the table shows
 * ours/PyTorch.
 *
 * usage: bench_conv_bench [--models t320,t640,c320,c640] [--threads N] [--time SECONDS] [--no-torch]
 *                         [--cpu-time] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "autograd/ops.h"
#include "tensor/error.h"
#include "tensor/pool.h"
#include "tensor/rng.h"

/* ---- shape lists -------------------------------------------------------------------- */

typedef struct {
    int cin, cout, k, s, g, bias, h, w; /* input h, w; padding k/2 */
    int count;                          /* how many convs of the model have this shape */
    char where[40];                     /* the first layer that has it */
    double fwd, fb, t_fwd, t_fb;        /* seconds: ours, PyTorch (< 0: not measured) */
} Shape;

#define MAX_SHAPES 256

typedef struct {
    const char *name;
    Shape v[MAX_SHAPES];
    int n, total;
    const char *layer; /* current label, e.g. "4 RepNCSPELAN4" */
} Model;

static int out_size(int in, int k, int s) { return (in + 2 * (k / 2) - k) / s + 1; }

/* One Conv (or nn.Conv2d with bias) on an h x w input; returns nothing, the caller tracks sizes. */
static void conv(Model *m, int cin, int cout, int k, int s, int g, int bias, int h, int w) {
    m->total++;
    for (int i = 0; i < m->n; i++) {
        Shape *p = &m->v[i];
        if (p->cin == cin && p->cout == cout && p->k == k && p->s == s && p->g == g && p->bias == bias && p->h == h &&
            p->w == w) {
            p->count++;
            return;
        }
    }
    if (m->n == MAX_SHAPES) return;
    m->v[m->n++] = (Shape){cin, cout, k, s, g, bias, h, w, 1, "", -1, -1, -1, -1};
    snprintf(m->v[m->n - 1].where, sizeof m->v[0].where, "%s", m->layer);
}

/* RepNCSP(c1, c2, n): two 1x1 to c_ = c2/2, n RepNBottlenecks (RepConvN = 3x3 + 1x1 branch,
 * then a 3x3), a 1x1 from 2c_ to c2. */
static void repncsp(Model *m, int c1, int c2, int n, int h) {
    int c_ = c2 / 2;
    conv(m, c1, c_, 1, 1, 1, 0, h, h);
    conv(m, c1, c_, 1, 1, 1, 0, h, h);
    for (int i = 0; i < n; i++) {
        conv(m, c_, c_, 3, 1, 1, 0, h, h);
        conv(m, c_, c_, 1, 1, 1, 0, h, h);
        conv(m, c_, c_, 3, 1, 1, 0, h, h);
    }
    conv(m, 2 * c_, c2, 1, 1, 1, 0, h, h);
}

static void repncspelan4(Model *m, int c1, int c2, int c3, int c4, int n, int h) {
    conv(m, c1, c3, 1, 1, 1, 0, h, h);
    repncsp(m, c3 / 2, c4, n, h);
    conv(m, c4, c4, 3, 1, 1, 0, h, h);
    repncsp(m, c4, c4, n, h);
    conv(m, c4, c4, 3, 1, 1, 0, h, h);
    conv(m, c3 + 2 * c4, c2, 1, 1, 1, 0, h, h);
}

static void elan1(Model *m, int c1, int c2, int c3, int c4, int h) {
    conv(m, c1, c3, 1, 1, 1, 0, h, h);
    conv(m, c3 / 2, c4, 3, 1, 1, 0, h, h);
    conv(m, c4, c4, 3, 1, 1, 0, h, h);
    conv(m, c3 + 2 * c4, c2, 1, 1, 1, 0, h, h);
}

/* avg_pool2d(2, 1) then a 3x3 stride-2 conv; returns the output size */
static int aconv(Model *m, int c1, int c2, int h) {
    conv(m, c1, c2, 3, 2, 1, 0, h - 1, h - 1);
    return out_size(h - 1, 3, 2);
}

/* avg_pool2d(2, 1); half the channels through a 3x3 stride-2 conv, half through
 * max_pool(3, 2, 1) and a 1x1 conv */
static int adown(Model *m, int c1, int c2, int h) {
    int ho = out_size(h - 1, 3, 2);
    conv(m, c1 / 2, c2 / 2, 3, 2, 1, 0, h - 1, h - 1);
    conv(m, c1 / 2, c2 / 2, 1, 1, 1, 0, ho, ho);
    return ho;
}

static void sppelan(Model *m, int c1, int c2, int c3, int h) {
    conv(m, c1, c3, 1, 1, 1, 0, h, h);
    conv(m, 4 * c3, c2, 1, 1, 1, 0, h, h);
}

static void ddetect(Model *m, const int ch[3], const int h[3]) {
    const int nc = 80, reg_max = 16;
    int c2 = ch[0] / 4 > 4 * reg_max ? ch[0] / 4 : 4 * reg_max;
    c2 = (c2 + 3) / 4 * 4;
    int c3 = ch[0] > (nc * 2 < 128 ? nc * 2 : 128) ? ch[0] : (nc * 2 < 128 ? nc * 2 : 128);
    for (int i = 0; i < 3; i++) {
        conv(m, ch[i], c2, 3, 1, 1, 0, h[i], h[i]);
        conv(m, c2, c2, 3, 1, 4, 0, h[i], h[i]);
        conv(m, c2, 4 * reg_max, 1, 1, 4, 1, h[i], h[i]);
        conv(m, ch[i], c3, 3, 1, 1, 0, h[i], h[i]);
        conv(m, c3, c3, 3, 1, 1, 0, h[i], h[i]);
        conv(m, c3, nc, 1, 1, 1, 1, h[i], h[i]);
    }
}

#define L(label) (m->layer = (label))

/* models/detect/gelan-t.yaml */
static void gelan_t(Model *m, int S) {
    int p1 = out_size(S, 3, 2), p2 = out_size(p1, 3, 2);
    L("0 Conv"), conv(m, 3, 16, 3, 2, 1, 0, S, S);
    L("1 Conv"), conv(m, 16, 32, 3, 2, 1, 0, p1, p1);
    L("2 ELAN1"), elan1(m, 32, 32, 32, 16, p2);
    L("3 AConv");
    int p3 = aconv(m, 32, 64, p2);
    L("4 RepNCSPELAN4"), repncspelan4(m, 64, 64, 64, 32, 3, p3);
    L("5 AConv");
    int p4 = aconv(m, 64, 96, p3);
    L("6 RepNCSPELAN4"), repncspelan4(m, 96, 96, 96, 48, 3, p4);
    L("7 AConv");
    int p5 = aconv(m, 96, 128, p4);
    L("8 RepNCSPELAN4"), repncspelan4(m, 128, 128, 128, 64, 3, p5);
    L("9 SPPELAN"), sppelan(m, 128, 128, 64, p5);
    L("12 RepNCSPELAN4"), repncspelan4(m, 128 + 96, 96, 96, 48, 3, p4);
    L("15 RepNCSPELAN4"), repncspelan4(m, 96 + 64, 64, 64, 32, 3, p3);
    L("16 AConv"), aconv(m, 64, 48, p3);
    L("18 RepNCSPELAN4"), repncspelan4(m, 48 + 96, 96, 96, 48, 3, p4);
    L("19 AConv"), aconv(m, 96, 64, p4);
    L("21 RepNCSPELAN4"), repncspelan4(m, 64 + 128, 128, 128, 64, 3, p5);
    L("22 DDetect"), ddetect(m, (const int[3]){64, 96, 128}, (const int[3]){p3, p4, p5});
}

/* models/detect/gelan-c.yaml */
static void gelan_c(Model *m, int S) {
    int p1 = out_size(S, 3, 2), p2 = out_size(p1, 3, 2);
    L("0 Conv"), conv(m, 3, 64, 3, 2, 1, 0, S, S);
    L("1 Conv"), conv(m, 64, 128, 3, 2, 1, 0, p1, p1);
    L("2 RepNCSPELAN4"), repncspelan4(m, 128, 256, 128, 64, 1, p2);
    L("3 ADown");
    int p3 = adown(m, 256, 256, p2);
    L("4 RepNCSPELAN4"), repncspelan4(m, 256, 512, 256, 128, 1, p3);
    L("5 ADown");
    int p4 = adown(m, 512, 512, p3);
    L("6 RepNCSPELAN4"), repncspelan4(m, 512, 512, 512, 256, 1, p4);
    L("7 ADown");
    int p5 = adown(m, 512, 512, p4);
    L("8 RepNCSPELAN4"), repncspelan4(m, 512, 512, 512, 256, 1, p5);
    L("9 SPPELAN"), sppelan(m, 512, 512, 256, p5);
    L("12 RepNCSPELAN4"), repncspelan4(m, 512 + 512, 512, 512, 256, 1, p4);
    L("15 RepNCSPELAN4"), repncspelan4(m, 512 + 512, 256, 256, 128, 1, p3);
    L("16 ADown"), adown(m, 256, 256, p3);
    L("18 RepNCSPELAN4"), repncspelan4(m, 256 + 512, 512, 512, 256, 1, p4);
    L("19 ADown"), adown(m, 512, 512, p4);
    L("21 RepNCSPELAN4"), repncspelan4(m, 512 + 512, 512, 512, 256, 1, p5);
    L("22 DDetect"), ddetect(m, (const int[3]){256, 512, 512}, (const int[3]){p3, p4, p5});
}

/* ---- timing -------------------------------------------------------------------------- */

/* --cpu-time: process CPU time instead of wall time. With --threads 1 this is immune to
 * other processes taking the core (on a shared machine); with more threads it is not
 * meaningful (it adds up the threads and counts their spinning). */
static clockid_t clock_id = CLOCK_MONOTONIC;

static double now(void) {
    struct timespec ts;
    clock_gettime(clock_id, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int output_hw(const Shape *s, int *ho, int *wo) {
    *ho = out_size(s->h, s->k, s->s);
    *wo = out_size(s->w, s->k, s->s);
    return *ho * *wo;
}

/* multiply-adds x 2 of the forward */
static double fwd_flops(const Shape *s) {
    int ho, wo;
    return 2.0 * s->cout * output_hw(s, &ho, &wo) * (double)(s->cin / s->g) * s->k * s->k;
}

/* forward + dW, plus dx unless this is the stem (on the image) */
static int needs_dx(const Shape *s) { return s->cin != 3; }
static double fb_flops(const Shape *s) { return fwd_flops(s) * (needs_dx(s) ? 3 : 2); }

/* Runs fn until `budget` seconds or 10 repetitions (at least 2) after a warm-up; the minimum. */
typedef int (*run_fn)(void *ctx);
static double time_min(run_fn fn, void *ctx, double budget) {
    if (fn(ctx)) return -1;
    double best = 1e30, start = now();
    for (int r = 0; r < 10 && (r < 2 || now() - start < budget); r++) {
        double t0 = now();
        if (fn(ctx)) return -1;
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

typedef struct {
    Tape *tape;
    Tensor *x, *w, *b;
    const Shape *s;
    float *gy;
} ConvRun;

static int run_fwd(void *vctx) {
    ConvRun *c = vctx;
    tape_set_grad_enabled(c->tape, false);
    Tensor *y = op_conv2d(c->tape, c->x, c->w, c->b, c->s->s, c->s->k / 2, c->s->g);
    tape_set_grad_enabled(c->tape, true);
    tape_reset(c->tape);
    return y ? 0 : -1;
}

static int run_fb(void *vctx) {
    ConvRun *c = vctx;
    /* x stands for an activation: its gradient comes fresh (zeroed) from the arena each step */
    c->x->grad = NULL;
    c->x->node = NULL;
    Tensor *y = op_conv2d(c->tape, c->x, c->w, c->b, c->s->s, c->s->k / 2, c->s->g);
    int rc = y ? tape_backward_from(c->tape, y, c->gy) : -1;
    tape_reset(c->tape);
    return rc;
}

static int time_ours(Shape *s, double budget) {
    Rng r;
    rng_seed(&r, 1);
    int ho, wo;
    size_t ny = (size_t)s->cout * output_hw(s, &ho, &wo);
    float *xdata = malloc((size_t)s->cin * s->h * s->w * sizeof *xdata), *gy = malloc(ny * sizeof *gy);
    Tensor x = {.ndim = 4, .shape = {1, s->cin, s->h, s->w}, .numel = (size_t)s->cin * s->h * s->w, .data = xdata};
    Tensor *w = tensor_new4(s->cout, s->cin / s->g, s->k, s->k), *b = s->bias ? tensor_new1(s->cout) : NULL;
    Tape *t = tape_new();
    int rc = -1;
    if (!xdata || !gy || !w || (s->bias && !b) || !t) goto done;
    for (size_t i = 0; i < x.numel; i++) xdata[i] = rng_range(&r, -1, 1);
    for (size_t i = 0; i < w->numel; i++) w->data[i] = rng_range(&r, -0.1f, 0.1f);
    for (size_t i = 0; i < ny; i++) gy[i] = rng_range(&r, -1, 1);
    ConvRun c = {t, &x, w, b, s, gy};
    s->fwd = time_min(run_fwd, &c, budget);
    x.requires_grad = needs_dx(s);
    w->requires_grad = true;
    if (b) b->requires_grad = true;
    s->fb = time_min(run_fb, &c, budget);
    rc = s->fwd < 0 || s->fb < 0 ? -1 : 0;
done:
    tape_free(t);
    tensor_free(w);
    tensor_free(b);
    free(xdata);
    free(gy);
    return rc;
}

/* ---- PyTorch: tools/bench_conv_torch.py as a co-process ------------------------------
 * We send it one shape per line and read back its two times, so that ours and PyTorch's
 * timings of a shape are taken moments apart (the machine is shared; its load drifts). */

typedef struct {
    FILE *to, *from;
    pid_t pid;
} Torch;

static void torch_stop(Torch *t) {
    if (t->to) fclose(t->to); /* EOF ends the script */
    if (t->from) fclose(t->from);
    if (t->pid > 0) waitpid(t->pid, NULL, 0);
    *t = (Torch){0};
}

/* Starts `py script`; 0 once it has imported torch and said "ready". */
static int torch_start_with(Torch *t, const char *py, const char *script, int threads, double budget) {
    const char *cpu = clock_id == CLOCK_PROCESS_CPUTIME_ID ? "--cpu-time" : NULL;
    int in[2], out[2];
    if (pipe(in) != 0) return -1;
    if (pipe(out) != 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    char th[16], bu[32];
    snprintf(th, sizeof th, "%d", threads);
    snprintf(bu, sizeof bu, "%g", budget);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        /* PyTorch's OpenMP threads spin between parallel regions; with other processes on
         * the cores that made it 10-100x slower here. Passive waiting is what our pool does. */
        if (!getenv("OMP_WAIT_POLICY")) setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
        execlp(py, py, script, "--threads", th, "--time", bu, cpu, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    *t = (Torch){fdopen(in[1], "w"), fdopen(out[0], "r"), pid};
    char line[256];
    if (pid > 0 && t->to && t->from && fgets(line, sizeof line, t->from) && !strncmp(line, "ready ", 6)) {
        printf("PyTorch %s", line + 6);
        return 0;
    }
    torch_stop(t);
    return -1;
}

static int torch_start(Torch *t, const char *script, int threads, double budget) {
    if (access(script, R_OK) != 0) {
        printf("(%s not found: run from the repository root; no PyTorch comparison)\n", script);
        return -1;
    }
    const char *env = getenv("GELAN_PYTHON");
    const char *cands[2] = {env && *env ? env : "python3", "/usr/bin/python3"};
    for (int i = 0; i < 2; i++)
        if (torch_start_with(t, cands[i], script, threads, budget) == 0) return 0;
    printf("(PyTorch is not importable: no comparison)\n");
    return -1;
}

static int torch_time(Torch *t, Shape *s) {
    fprintf(t->to, "%d %d %d %d %d %d %d %d %d\n", s->cin, s->h, s->w, s->cout, s->k, s->s, s->g, s->bias, needs_dx(s));
    fflush(t->to);
    char line[256];
    if (!fgets(line, sizeof line, t->from) || sscanf(line, "%lf %lf", &s->t_fwd, &s->t_fb) != 2) return -1;
    return 0;
}

/* ---- report -------------------------------------------------------------------------- */

/* Other processes distort timings on a shared machine: say how busy it was. */
static void print_load(const char *when) {
    FILE *f = fopen("/proc/loadavg", "r");
    double l1;
    if (f && fscanf(f, "%lf", &l1) == 1)
        printf("load average %s: %.2f (%ld cores)\n", when, l1, sysconf(_SC_NPROCESSORS_ONLN));
    if (f) fclose(f);
}

/* One "sum" row over the shapes with kernel size in [kmin, kmax], each counted n times. */
static void print_sum(const Model *m, int have_torch, const char *label, int kmin, int kmax) {
    double sf = 0, sfb = 0, tf = 0, tfb = 0, flf = 0, flfb = 0;
    for (int i = 0; i < m->n; i++) {
        const Shape *s = &m->v[i];
        if (s->k < kmin || s->k > kmax) continue;
        sf += s->count * s->fwd;
        sfb += s->count * s->fb;
        tf += s->count * s->t_fwd;
        tfb += s->count * s->t_fb;
        flf += s->count * fwd_flops(s);
        flfb += s->count * fb_flops(s);
    }
    printf("%-56s | %8.2f %6.1f", label, sf * 1e3, flf / sf * 1e-9);
    if (have_torch) printf(" %8.2f %6.2f", tf * 1e3, sf / tf);
    printf(" | %8.2f %6.1f", sfb * 1e3, flfb / sfb * 1e-9);
    if (have_torch) printf(" %8.2f %6.2f", tfb * 1e3, sfb / tfb);
    printf("\n");
}

static void print_model(const Model *m, int have_torch) {
    printf("\n%s: %d convolutions, %d distinct shapes (batch 1; n = how many the model has)\n", m->name, m->total,
           m->n);
    printf("%-16s %5s %5s %2s %2s %2s %9s %3s | %8s %6s", "first layer", "cin", "cout", "k", "s", "g", "input", "n",
           "fwd ms", "GF/s");
    if (have_torch) printf(" %8s %6s", "torch ms", "ratio");
    printf(" | %8s %6s", "f+b ms", "GF/s");
    if (have_torch) printf(" %8s %6s", "torch ms", "ratio");
    printf("\n");
    for (int i = 0; i < m->n; i++) {
        const Shape *s = &m->v[i];
        char in[24];
        snprintf(in, sizeof in, "%dx%d", s->h, s->w);
        printf("%-16s %5d %5d %2d %2d %2d %9s %3d | %8.3f %6.1f", s->where, s->cin, s->cout, s->k, s->s, s->g, in,
               s->count, s->fwd * 1e3, fwd_flops(s) / s->fwd * 1e-9);
        if (have_torch) printf(" %8.3f %6.2f", s->t_fwd * 1e3, s->fwd / s->t_fwd);
        printf(" | %8.3f %6.1f", s->fb * 1e3, fb_flops(s) / s->fb * 1e-9);
        if (have_torch) printf(" %8.3f %6.2f", s->t_fb * 1e3, s->fb / s->t_fb);
        printf("\n");
    }
    print_sum(m, have_torch, "sum of the 1x1 convs (times n)", 1, 1);
    print_sum(m, have_torch, "sum of the 3x3 convs (times n)", 3, 3);
    print_sum(m, have_torch, "sum (times n)", 1, 1 << 30);
}

int main(int argc, char **argv) {
    const char *models_arg = "t320,t640,c320,c640";
    int threads = 0, use_torch = 1;
    double budget = 0.05;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--models") && i + 1 < argc)
            models_arg = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--time") && i + 1 < argc)
            budget = atof(argv[++i]);
        else if (!strcmp(argv[i], "--no-torch"))
            use_torch = 0;
        else if (!strcmp(argv[i], "--cpu-time"))
            clock_id = CLOCK_PROCESS_CPUTIME_ID;
        else {
            fprintf(stderr,
                    "usage: %s [--models t320,t640,c320,c640] [--threads N] [--time SECONDS] [--no-torch] "
                    "[--cpu-time]\n",
                    argv[0]);
            return 2;
        }
    }
    if (pool_init(threads) != 0) {
        fprintf(stderr, "%s\n", gelan_last_error());
        return 1;
    }
    signal(SIGPIPE, SIG_IGN); /* a dead PyTorch script must not kill the benchmark */

    static Model models[4];
    int nm = 0;
    char buf[64];
    snprintf(buf, sizeof buf, "%s", models_arg);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int size = atoi(tok + 1);
        if ((tok[0] != 't' && tok[0] != 'c') || (size != 320 && size != 640) || nm == 4) {
            fprintf(stderr, "unknown model '%s' (up to four of t320, t640, c320, c640)\n", tok);
            return 2;
        }
        Model *m = &models[nm++];
        static const char *names[2][2] = {{"gelan-t @320", "gelan-t @640"}, {"gelan-c @320", "gelan-c @640"}};
        m->name = names[tok[0] == 'c'][size == 640];
        (tok[0] == 't' ? gelan_t : gelan_c)(m, size);
    }

    printf("conv2d benchmark: %d threads, up to %.2f s of repetitions per shape, %s\n",
           pool_threads(), budget, clock_id == CLOCK_MONOTONIC ? "wall time" : "process CPU time");
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    if (coretype) /* our convs use no BLAS, but PyTorch's may run on OpenBLAS */
        printf("OPENBLAS_CORETYPE=%s: PyTorch's OpenBLAS uses the kernels of that CPU type\n", coretype);
    print_load("before");
    Torch torch = {0};
    int have_torch = use_torch && torch_start(&torch, "tools/bench_conv_torch.py", pool_threads(), budget) == 0;
    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    for (int m = 0; m < nm; m++)
        for (int i = 0; i < models[m].n; i++) {
            Shape *s = &models[m].v[i];
            if (time_ours(s, budget) != 0) {
                fprintf(stderr, "conv2d failed on %s %s: %s\n", models[m].name, s->where, gelan_last_error());
                torch_stop(&torch);
                return 1;
            }
            if (have_torch && torch_time(&torch, s) != 0) {
                printf("(the PyTorch script stopped answering: no comparison)\n");
                have_torch = 0;
            }
        }
    torch_stop(&torch);
    clock_gettime(CLOCK_MONOTONIC, &w1);
    printf("timing took %.1f s; ", (double)(w1.tv_sec - w0.tv_sec) + (w1.tv_nsec - w0.tv_nsec) * 1e-9);
    print_load("after");
    for (int m = 0; m < nm; m++) print_model(&models[m], have_torch);
    if (have_torch) {
        printf("\n");
        for (int m = 0; m < nm; m++) {
            double ours = 0, theirs = 0;
            for (int i = 0; i < models[m].n; i++) {
                ours += models[m].v[i].count * models[m].v[i].fb;
                theirs += models[m].v[i].count * models[m].v[i].t_fb;
            }
            printf(
                "%s: conv2d forward+backward summed over the model's convs: %.1f ms, PyTorch %.1f ms, "
                "ours/PyTorch %.2f\n",
                models[m].name, ours * 1e3, theirs * 1e3, ours / theirs);
        }
    }
    pool_shutdown();
    return 0;
}
