/* gelan prune --weights W [--cfg CFG] --ratio R|--threshold T [--norm l2|l1|bn]
 * [--scope global|local] [--exclude LAYERS] [--round 8] [--no-ema] --out CKPT:
 * structural filter pruning (nn/prune.h). The output is a weights file whose
 * cfg records the new widths; it trains (`gelan train --weights`), validates,
 * converts and runs like any other. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "train/checkpoint.h" /* first: see its note on nn/model.h */
#include "nn/prune.h"
#include "nn/textbuf.h"
#include "tensor/error.h"

static const char *USAGE =
    "gelan prune --weights W [--cfg CFG] --ratio R|--threshold T [--norm l2|l1|bn] [--scope global|local] "
    "[--exclude LAYERS] [--round 8] [--no-ema] --out CKPT";

/* GFLOPs at 640x640 (2 x the conv multiply-adds, as `gelan info`). */
static double gflops(const Model *m, double *layer_macs) {
    LayerShape *s = calloc((size_t)m->nlayers, sizeof *s);
    double macs = 0;
    int rc = s ? model_shapes(m, 640, 640, s, &macs, layer_macs) : -1;
    free(s);
    return rc ? 0 : 2.0 * macs / 1e9;
}

/* The layers whose size changed: output channels, parameters and GFLOPs. */
static void print_changes(const Model *a, const Model *b) {
    double *la = calloc((size_t)a->nlayers, sizeof *la), *lb = calloc((size_t)b->nlayers, sizeof *lb);
    double ga = gflops(a, la), gb = gflops(b, lb);
    char x[32], y[32];
    printf("%5s  %-14s %15s %23s %17s\n", "layer", "module", "out channels", "parameters", "GFLOPs@640");
    for (int i = 0; la && lb && i < a->nlayers && i < b->nlayers; i++) {
        size_t pa = layer_num_params(a, &a->layers[i]), pb = layer_num_params(b, &b->layers[i]);
        if (pa == pb && a->layers[i].c_out == b->layers[i].c_out) continue;
        printf("%5d  %-14s %6d -> %-6d %10s -> %-10s %6.2f -> %-6.2f\n", i, a->layers[i].module, a->layers[i].c_out,
               b->layers[i].c_out, format_with_commas(pa, x, sizeof x), format_with_commas(pb, y, sizeof y),
               la ? 2 * la[i] / 1e9 : 0, lb ? 2 * lb[i] / 1e9 : 0);
    }
    size_t pa = model_num_params(a), pb = model_num_params(b);
    printf("parameters %s -> %s (%.1f%% fewer), GFLOPs %.2f -> %.2f (%.1f%% fewer)\n",
           format_with_commas(pa, x, sizeof x), format_with_commas(pb, y, sizeof y),
           100.0 * (1.0 - (double)pb / (double)pa), ga, gb, ga > 0 ? 100.0 * (1.0 - gb / ga) : 0.0);
    free(la);
    free(lb);
}

int cmd_prune(int argc, char **argv) {
    const char *weights = NULL, *cfg = NULL, *out = NULL, *norm_s = "l2", *scope = "global", *exclude = NULL;
    float ratio = NAN, threshold = NAN; /* NaN: not given */
    int round = 8;
    bool no_ema = false;
    ArgSpec specs[] = {
        {"--weights", ARG_STR, &weights, "W: checkpoint or weights file (unfused)"},
        {"--cfg", ARG_STR, &cfg, "CFG: model YAML for weights that carry none"},
        {"--ratio", ARG_FLOAT, &ratio, "R: fraction of the prunable filters to remove, in [0, 1)"},
        {"--threshold", ARG_FLOAT, &threshold, "T: instead of --ratio, remove the filters with importance <= T"},
        {"--norm", ARG_STR, &norm_s, "l2|l1|bn: the importance (default l2; bn = |BN gamma|)"},
        {"--scope", ARG_STR, &scope, "global|local: one ranking over the model (default), or R within each group"},
        {"--exclude", ARG_STR, &exclude, "LAYERS: comma-separated layer indices or module paths to leave whole"},
        {"--round", ARG_INT, &round, "N: kept widths are multiples of N, never below N (default 8)"},
        {"--no-ema", ARG_FLAG, &no_ema, "prune the model.* weights even when the file has ema.*"},
        {"--out", ARG_STR, &out, "CKPT: the pruned weights file (written only on success)"},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    int rc = args_parse(argc, argv, USAGE, specs, nspecs, NULL, 0, NULL);
    if (rc) return rc == 1 ? 0 : rc;
    PruneOptions o;
    prune_options_default(&o);
    char why[160] = "";
    if (!weights || !out)
        snprintf(why, sizeof why, "give --weights and --out");
    else if (!isnan(ratio) && !isnan(threshold))
        snprintf(why, sizeof why, "--ratio and --threshold exclude each other");
    else if (isnan(ratio) && isnan(threshold))
        snprintf(why, sizeof why, "give --ratio (or --threshold)");
    else if (!isnan(ratio) && !(ratio >= 0 && ratio < 1))
        snprintf(why, sizeof why, "--ratio must be in [0, 1), got %g", ratio);
    else if (!isnan(threshold) && !(threshold >= 0))
        snprintf(why, sizeof why, "--threshold must be >= 0, got %g", threshold);
    else if (prune_norm_parse(norm_s, &o.norm))
        snprintf(why, sizeof why, "--norm must be l2, l1 or bn, got '%s'", norm_s);
    else if (strcmp(scope, "global") && strcmp(scope, "local"))
        snprintf(why, sizeof why, "--scope must be global or local, got '%s'", scope);
    else if (round < 1)
        snprintf(why, sizeof why, "--round must be at least 1, got %d", round);
    if (why[0]) {
        fprintf(stderr, "error: %s\n", why);
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    o.ratio = isnan(ratio) ? 0 : ratio;
    o.threshold = isnan(threshold) ? -1 : threshold;
    o.global = !strcmp(scope, "global");
    o.round = round;
    o.exclude = exclude;

    Checkpoint *ck = ckpt_open(weights);
    if (!ck) return cli_fail("prune");
    bool ema = false;
    Model *m = ckpt_load_model(ck, cfg, NULL, !no_ema, &ema), *p = NULL;
    PruneStats st;
    rc = m ? 0 : -1;
    if (!rc) rc = (p = prune_model(m, &o, &st)) ? 0 : -1;
    char how[200];
    if (!isnan(threshold))
        snprintf(how, sizeof how, "%s importance <= %g, round %d%s%s", norm_s, threshold, round,
                 exclude ? ", exclude " : "", exclude ? exclude : "");
    else
        snprintf(how, sizeof how, "ratio %g, %s %s, round %d%s%s", ratio, scope, norm_s, round,
                 exclude ? ", exclude " : "", exclude ? exclude : "");
    if (!rc) {
        printf("%s (%s weights): %s\n", weights, ema ? "ema" : "model", how);
        printf(
            "%d groups of coupled filters, %d of them kept whole (head outputs, excluded, split unevenly); "
            "removed %d of the %d filters of the others\n",
            st.groups, st.frozen_groups, st.removed, st.channels);
        print_changes(m, p);
        rc = prune_save(p, ckpt_meta(ck, "names"), weights, how, out);
        if (!rc) printf("wrote %s\n", out);
    }
    model_free(p);
    model_free(m);
    ckpt_close(ck);
    return rc ? cli_fail("prune") : 0;
}
