/* build/gelan-infer: run, bench and detect with an inference model, using
 * only the runtime library (no OpenBLAS, no libyaml). Exit codes: 0 ok,
 * 1 failure, 2 bad usage. */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "infer/cli/cli.h"
#include "infer/infer.h"
#include "tensor/error.h"
#include "tensor/pool.h"
#include "tensor/safetensors.h"

/* ---- options -------------------------------------------------------------------- */
static void print_usage(FILE *f, const char *usage, const Opt *opts, int nopts) {
    fprintf(f, "usage: gelan-infer %s\n", usage);
    for (int i = 0; i < nopts; i++) fprintf(f, "  %-12s %s\n", opts[i].name, opts[i].help);
    fprintf(f, "  %-12s %s\n", "--help", "this text");
}

int opts_usage_error(const char *usage, const Opt *opts, int nopts, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gelan-infer: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    print_usage(stderr, usage, opts, nopts);
    return 2;
}

int opts_parse(int argc, char **argv, const char *usage, const Opt *opts, int nopts) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            print_usage(stdout, usage, opts, nopts);
            return 1;
        }
        const Opt *o = NULL;
        for (int j = 0; j < nopts; j++)
            if (!strcmp(argv[i], opts[j].name)) o = &opts[j];
        if (!o) return opts_usage_error(usage, opts, nopts, "%s: unknown argument '%s'", argv[0], argv[i]);
        if (i + 1 >= argc) return opts_usage_error(usage, opts, nopts, "%s: %s needs a value", argv[0], argv[i]);
        const char *v = argv[++i];
        char *end;
        if (o->kind == OPT_STR) {
            *(const char **)o->value = v;
        } else if (o->kind == OPT_INT) {
            long x = strtol(v, &end, 10);
            if (!*v || *end || x < 0 || x > 1000000)
                return opts_usage_error(usage, opts, nopts, "%s: %s wants a non-negative integer, got '%s'", argv[0],
                                        o->name, v);
            *(int *)o->value = (int)x;
        } else {
            float x = strtof(v, &end);
            if (!*v || *end)
                return opts_usage_error(usage, opts, nopts, "%s: %s wants a number, got '%s'", argv[0], o->name, v);
            *(float *)o->value = x;
        }
    }
    return 0;
}

static int fail(const char *cmd) {
    fprintf(stderr, "gelan-infer %s: %s\n", cmd, gelan_last_error());
    return 1;
}

/* ---- run ------------------------------------------------------------------------------ */
int cmd_run(int argc, char **argv) {
    const char *model = NULL, *in = NULL, *out = NULL;
    int threads = 0;
    const Opt opts[] = {
        {"--model", OPT_STR, &model, "M: inference model (.safetensors, format gelan-infer/1)"},
        {"--in", OPT_STR, &in, "IN: safetensors file with the tensor 'input' [N,C,H,W]"},
        {"--out", OPT_STR, &out, "OUT: where to write 'output.<name>' (output.pred for detection models)"},
        {"--threads", OPT_INT, &threads, "N: threads (default: GELAN_THREADS or all cores)"},
    };
    const char *usage = "run --model M --in IN --out OUT [--threads N]";
    int n = (int)(sizeof opts / sizeof *opts), rc = opts_parse(argc, argv, usage, opts, n);
    if (rc) return rc == 1 ? 0 : rc;
    if (!model || !in || !out) return opts_usage_error(usage, opts, n, "run: --model, --in and --out are required");
    if (pool_init(threads)) return fail("run");
    InferModel *m = infer_model_load(model);
    if (!m) return fail("run");
    SafeTensors *st = st_open(in);
    float *x = NULL;
    rc = 1;
    const StTensorInfo *ti = st ? st_find(st, "input") : NULL;
    if (!st) {
        fail("run");
    } else if (!ti || ti->ndim != 4) {
        fprintf(stderr, "gelan-infer run: %s has no 4-d tensor 'input' [N,C,H,W]\n", in);
    } else if (!(x = malloc(st_numel(ti) * sizeof(float))) || st_read_f32(st, "input", x, st_numel(ti))) {
        fail("run");
    } else {
        InferShape os;
        const float *y =
            infer_model_run(m, x, (int)ti->shape[0], (int)ti->shape[1], (int)ti->shape[2], (int)ti->shape[3], &os);
        char name[300];
        snprintf(name, sizeof name, "output.%s", infer_model_output_name(m));
        StWriter *w = y ? st_writer_new() : NULL;
        if (!y || !w || st_writer_add_f32(w, name, os.ndim, os.shape, y) || st_writer_save(w, out)) {
            fail("run");
        } else {
            printf("%s: %s [", out, name);
            for (int i = 0; i < os.ndim; i++) printf("%s%d", i ? "," : "", os.shape[i]);
            printf("]\n");
            rc = 0;
        }
        st_writer_free(w);
    }
    free(x);
    st_close(st);
    infer_model_free(m);
    pool_shutdown();
    return rc;
}

/* ---- bench ---------------------------------------------------------------------------- */
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Mean of the readable /sys/class/thermal zones in degrees C, or < -100 when none. */
static double cpu_temperature(void) {
    DIR *d = opendir("/sys/class/thermal");
    if (!d) return -1000;
    double sum = 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, "thermal_zone", 12)) continue;
        char path[512];
        snprintf(path, sizeof path, "/sys/class/thermal/%s/temp", e->d_name);
        FILE *f = fopen(path, "r");
        long milli;
        if (f && fscanf(f, "%ld", &milli) == 1) sum += milli / 1000.0, n++;
        if (f) fclose(f);
    }
    closedir(d);
    return n ? sum / n : -1000;
}

/* the progress line only on a terminal, plain output otherwise */
static int isatty_progress(void) { return isatty(2); }

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

int cmd_bench(int argc, char **argv) {
    const char *model = NULL;
    int runs = 50, warmup = 5, threads = 0, img = 640, batch = 1, profile = 0;
    const Opt opts[] = {
        {"--model", OPT_STR, &model, "M: inference model"},
        {"--runs", OPT_INT, &runs, "N: timed runs (default 50)"},
        {"--warmup", OPT_INT, &warmup, "N: untimed runs first (default 5)"},
        {"--threads", OPT_INT, &threads, "N: threads (default: GELAN_THREADS or all cores)"},
        {"--img", OPT_INT, &img, "N: square input size (default 640)"},
        {"--batch", OPT_INT, &batch, "N: batch size (default 1)"},
        {"--profile", OPT_INT, &profile, "K: also print the K slowest graph nodes (default 0)"},
    };
    const char *usage = "bench --model M [--runs N --warmup N --threads N --img N --batch N --profile K]";
    int n = (int)(sizeof opts / sizeof *opts), rc = opts_parse(argc, argv, usage, opts, n);
    if (rc) return rc == 1 ? 0 : rc;
    if (!model) return opts_usage_error(usage, opts, n, "bench: --model is required");
    if (runs < 1 || img < 1 || batch < 1)
        return opts_usage_error(usage, opts, n, "bench: --runs, --img and --batch must be >= 1");
    if (pool_init(threads)) return fail("bench");
    InferModel *m = infer_model_load(model);
    if (!m) return fail("bench");
    int c = infer_model_input_channels(m);
    size_t numel = (size_t)batch * c * img * img;
    float *x = malloc(numel * sizeof(float));
    for (size_t i = 0; x && i < numel; i++) x[i] = (float)((i * 2654435761u) >> 8 & 255) / 255.f; /* any image */
    InferShape os;
    rc = 1;
    if (!x || infer_model_prepare(m, batch, img, img, &os)) {
        fail("bench");
        goto done;
    }
    for (int i = 0; i < warmup; i++)
        if (!infer_model_run(m, x, batch, c, img, img, &os)) {
            fail("bench");
            goto done;
        }
    if (profile > 0) infer_model_set_profile(m, 1);
    double sum = 0, mn = 1e30, mx = 0, temp_sum = 0;
    int temp_n = 0;
    for (int i = 0; i < runs; i++) {
        double t0 = now();
        if (!infer_model_run(m, x, batch, c, img, img, &os)) {
            fail("bench");
            goto done;
        }
        double t = (now() - t0) * 1e3;
        sum += t, mn = t < mn ? t : mn, mx = t > mx ? t : mx;
        double temp = cpu_temperature();
        if (temp > -100) temp_sum += temp, temp_n++;
        if (isatty_progress()) fprintf(stderr, "\rrun %d/%d  %.2f ms", i + 1, runs, t);
    }
    if (isatty_progress()) fprintf(stderr, "\r%40s\r", "");
    char temp[64];
    if (temp_n)
        snprintf(temp, sizeof temp, "%.2fC", temp_sum / temp_n);
    else
        snprintf(temp, sizeof temp, "n/a (no readable /sys/class/thermal)");
    printf("| Field | Value |\n|---|---|\n");
    printf("| MODEL NAME | %s |\n", base_name(model));
    printf("| input | %dx%dx%dx%d, %d thread%s, %s kernels |\n", batch, c, img, img, pool_threads(),
           pool_threads() == 1 ? "" : "s", infer_model_kernels(m));
    printf("| avg inference time | %.2fms |\n", sum / runs);
    printf("| max inference time | %.2fms |\n", mx);
    printf("| min inference time | %.2fms |\n", mn);
    printf("| avg CPU temp | %s |\n", temp);
    printf("| PARAMS | %zu |\n", infer_model_params(m));
    printf("| GFLOPS | %.1f |\n", infer_model_flops(m, img, img) / 1e9);
    printf("| LAYERS | %d |\n", infer_model_layers(m));
    if (profile > 0) {
        const double *p = infer_model_profile(m);
        int L = infer_model_layers(m);
        int *order = malloc(sizeof(int) * L);
        for (int i = 0; i < L; i++) order[i] = i;
        for (int i = 0; i < L; i++) /* selection of the K slowest */
            for (int j = i + 1; j < L; j++)
                if (p[order[j]] > p[order[i]]) {
                    int t = order[i];
                    order[i] = order[j], order[j] = t;
                }
        printf("\nslowest nodes (ms per run):\n");
        for (int i = 0; i < profile && i < L; i++)
            printf("  %8.3f  %s\n", p[order[i]] * 1e3 / runs, infer_model_node_desc(m, order[i]));
        free(order);
    }
    rc = 0;
done:
    free(x);
    infer_model_free(m);
    pool_shutdown();
    return rc;
}

/* ---- dispatch ----------------------------------------------------------------------------- */
static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *summary;
} COMMANDS[] = {
    {"run", cmd_run, "write output.pred for the tensor 'input' of a safetensors file"},
    {"bench", cmd_bench, "latency table: average/min/max ms, CPU temperature, params, GFLOPs, layers"},
    {"detect", cmd_detect, "boxes for images: printed, and drawn into annotated copies"},
};

static void main_usage(FILE *f) {
    fprintf(f, "usage: gelan-infer COMMAND [options]   (gelan-infer COMMAND --help for its options)\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
        fprintf(f, "  %-8s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "environment: GELAN_THREADS (threads), GELAN_INFER_ISA=c|avx2|avx512|neon (force kernels)\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "gelan-infer: missing command\n");
        main_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        main_usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "gelan-infer: unknown command '%s'\n", argv[1]);
    main_usage(stderr);
    return 2;
}
