/* build/gelan-infer: run, bench and detect with an inference model, using
 * only the runtime library (no OpenBLAS, no libyaml). Exit codes: 0 ok,
 * 1 failure, 2 bad usage. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer/cli/tools.h"
#include "infer/infer.h"
#include "tensor/error.h"
#include "tensor/pool.h"
#include "tensor/safetensors.h"

/* ---- options -------------------------------------------------------------------- */
typedef enum { OPT_STR, OPT_INT, OPT_FLOAT } OptKind;

typedef struct {
    const char *name; /* "--model" */
    OptKind kind;
    void *value;      /* const char **, int *, float * */
    const char *help; /* "M: what" */
} Opt;

static void print_usage(FILE *f, const char *usage, const Opt *opts, int nopts) {
    fprintf(f, "usage: gelan-infer %s\n", usage);
    for (int i = 0; i < nopts; i++) fprintf(f, "  %-12s %s\n", opts[i].name, opts[i].help);
    fprintf(f, "  %-12s %s\n", "--help", "this text");
}

static int opts_usage_error(const char *usage, const Opt *opts, int nopts, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gelan-infer: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    print_usage(stderr, usage, opts, nopts);
    return 2;
}

/* Parses argv[1..] (argv[0] is the subcommand). Returns 0 ok; 1 after printing
 * --help (exit 0); 2 after printing a one-line reason and the usage to stderr (exit 2). */
static int opts_parse(int argc, char **argv, const char *usage, const Opt *opts, int nopts) {
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
static int cmd_run(int argc, char **argv) {
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

/* ---- bench and detect (infer/cli/tools.h) ---------------------------------------------------- */
static int cmd_bench(int argc, char **argv) {
    const char *model = NULL;
    int threads = 0;
    InferBenchOptions o = infer_bench_defaults();
    const Opt opts[] = {
        {"--model", OPT_STR, &model, "M: inference model"},
        {"--runs", OPT_INT, &o.runs, "N: timed runs (default 50)"},
        {"--warmup", OPT_INT, &o.warmup, "N: untimed runs first (default 5)"},
        {"--threads", OPT_INT, &threads, "N: threads (default: GELAN_THREADS or all cores)"},
        {"--img", OPT_INT, &o.img, "N: square input size (default 640)"},
        {"--batch", OPT_INT, &o.batch, "N: batch size (default 1)"},
        {"--profile", OPT_INT, &o.profile, "K: also print the K slowest graph nodes (default 0)"},
    };
    const char *usage = "bench --model M [--runs N --warmup N --threads N --img N --batch N --profile K]";
    int n = (int)(sizeof opts / sizeof *opts), rc = opts_parse(argc, argv, usage, opts, n);
    if (rc) return rc == 1 ? 0 : rc;
    const char *why = model ? infer_bench_check(&o) : "--model is required";
    if (why) return opts_usage_error(usage, opts, n, "bench: %s", why);
    if (pool_init(threads)) return fail("bench");
    rc = infer_bench_run("gelan-infer bench", model, &o);
    pool_shutdown();
    return rc;
}

static int cmd_detect(int argc, char **argv) {
    const char *model = NULL;
    int threads = 0;
    InferDetectOptions o = infer_detect_defaults();
    const Opt opts[] = {
        {"--model", OPT_STR, &model, "M: inference model with a detect node"},
        {"--source", OPT_STR, &o.source, "FILE|DIR: an image, or a directory of images"},
        {"--out", OPT_STR, &o.out, "DIR: where annotated copies go (default runs/detect)"},
        {"--conf", OPT_FLOAT, &o.conf, "X: confidence threshold (default 0.25)"},
        {"--iou", OPT_FLOAT, &o.iou, "X: NMS IoU threshold (default 0.45)"},
        {"--img", OPT_INT, &o.img, "N: inference size (default 640)"},
        {"--max-det", OPT_INT, &o.max_det, "N: boxes per image at most (default 1000)"},
        {"--threads", OPT_INT, &threads, "N: threads (default: GELAN_THREADS or all cores)"},
    };
    const char *usage =
        "detect --model M --source FILE|DIR [--out DIR --conf 0.25 --iou 0.45 --img 640 --max-det 1000]";
    int n = (int)(sizeof opts / sizeof *opts), rc = opts_parse(argc, argv, usage, opts, n);
    if (rc) return rc == 1 ? 0 : rc;
    const char *why = model ? infer_detect_check(&o) : "--model is required";
    if (why) return opts_usage_error(usage, opts, n, "detect: %s", why);
    if (pool_init(threads)) return fail("detect");
    rc = infer_detect_run("gelan-infer detect", model, &o);
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
