/* gelan bench: the latency table of an inference model (written by gelan
 * convert), the same table as gelan-infer bench prints: both programs run
 * infer/cli/bench.c. */
#include <stdio.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "infer/cli/tools.h"
#include "tensor/pool.h"

static const char *USAGE = "gelan bench --model M [--runs 50 --warmup 5 --threads N --img 640 --batch 1 --profile K]";

int cmd_bench(int argc, char **argv) {
    const char *model = NULL;
    int threads = 0;
    InferBenchOptions o = infer_bench_defaults();
    ArgSpec specs[] = {
        {"--model", ARG_STR, &model, "M: inference model (gelan convert's output)"},
        {"--runs", ARG_INT, &o.runs, "N: timed runs (default 50)"},
        {"--warmup", ARG_INT, &o.warmup, "N: untimed runs first (default 5)"},
        {"--threads", ARG_INT, &threads, "N: compute threads (default GELAN_THREADS or all cores)"},
        {"--img", ARG_INT, &o.img, "N: square input size (default 640)"},
        {"--batch", ARG_INT, &o.batch, "N: batch size (default 1)"},
        {"--profile", ARG_INT, &o.profile, "K: also print the K slowest graph nodes (default 0)"},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    int rc = args_parse(argc, argv, USAGE, specs, nspecs, NULL, 0, NULL);
    if (rc) return rc == 1 ? 0 : rc;
    const char *why = !model ? "--model is required" : threads < 0 ? "--threads must be >= 0" : infer_bench_check(&o);
    if (why) {
        fprintf(stderr, "error: %s\n", why);
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    if (pool_init(threads)) return cli_fail("bench");
    rc = infer_bench_run("gelan bench", model, &o);
    pool_shutdown();
    return rc;
}
