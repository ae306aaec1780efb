/* gelan importance --weights W [--cfg CFG] [--by layer|filter] [--norm l2|l1|bn]
 * [--top K] [--within MODULE] [--csv] [--no-ema]: the seed team's importance
 * tables (weekly report, week 14, "Pruning"), lowest first, with the official
 * module paths (nn/prune.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "train/checkpoint.h" /* first: see its note on nn/model.h */
#include "nn/prune.h"
#include "tensor/error.h"

static const char *USAGE =
    "gelan importance --weights W [--cfg CFG] [--by layer|filter] [--norm l2|l1|bn] [--top K] [--within MODULE] "
    "[--csv] [--no-ema]";

static const char *norm_text(PruneNorm n, bool by_filter) {
    switch (n) {
        case PRUNE_L2:
            return by_filter ? "L2 norm of the filter" : "L2 norm of the weight";
        case PRUNE_L1:
            return by_filter ? "L1 norm of the filter" : "L1 norm of the weight";
        case PRUNE_BN:
            return by_filter ? "|BN gamma| of the filter" : "mean |BN gamma|";
    }
    return "?";
}

int cmd_importance(int argc, char **argv) {
    const char *weights = NULL, *cfg = NULL, *by = "layer", *norm_s = "l2", *within = NULL;
    int top = 10;
    bool csv = false, no_ema = false;
    ArgSpec specs[] = {
        {"--weights", ARG_STR, &weights, "W: checkpoint or weights file"},
        {"--cfg", ARG_STR, &cfg, "CFG: model YAML for weights that carry none"},
        {"--by", ARG_STR, &by, "layer|filter: one row per conv (default) or per output filter"},
        {"--norm", ARG_STR, &norm_s, "l2|l1|bn: L2 (default), L1, or |BN gamma| (network slimming)"},
        {"--top", ARG_INT, &top, "K: the K lowest rows (default 10; 0 = all)"},
        {"--within", ARG_STR, &within, "MODULE: a layer index, a module type (RepNCSPELAN4) or a path (model.21.cv2)"},
        {"--csv", ARG_FLAG, &csv, "machine-readable: rank,module,layer,filter,importance"},
        {"--no-ema", ARG_FLAG, &no_ema, "use the model.* weights even when the file has ema.*"},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    int rc = args_parse(argc, argv, USAGE, specs, nspecs, NULL, 0, NULL);
    if (rc) return rc == 1 ? 0 : rc;
    PruneNorm norm;
    const char *why = !weights                                      ? "give --weights"
                      : strcmp(by, "layer") && strcmp(by, "filter") ? "--by must be layer or filter"
                      : prune_norm_parse(norm_s, &norm)             ? "--norm must be l2, l1 or bn"
                      : top < 0                                     ? "--top must be >= 0"
                                                                    : NULL;
    if (why) {
        fprintf(stderr, "error: %s\n", why);
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    bool by_filter = !strcmp(by, "filter");
    Checkpoint *ck = ckpt_open(weights);
    if (!ck) return cli_fail("importance");
    bool ema = false;
    Model *m = ckpt_load_model(ck, cfg, NULL, !no_ema, &ema);
    ImportanceRow *rows = NULL;
    int n = 0;
    rc = m ? 0 : -1;
    if (!rc) rc = prune_importance(m, by_filter, norm, within, &rows, &n);
    if (!rc) {
        int shown = top > 0 && top < n ? top : n;
        if (csv) {
            printf("rank,module,layer,filter,importance\n");
            for (int i = 0; i < shown; i++) {
                char f[16] = ""; /* empty in the per-conv table */
                if (rows[i].filter >= 0) snprintf(f, sizeof f, "%d", rows[i].filter);
                printf("%d,%s,%d,%s,%.10g\n", i + 1, rows[i].module, rows[i].layer, f, rows[i].value);
            }
        } else {
            printf("%s of %s%s%s by %s (%s weights), lowest first: %d of %d\n", by_filter ? "Filters" : "Convs",
                   m->name, within ? " within " : "", within ? within : "", norm_text(norm, by_filter),
                   ema ? "ema" : "model", shown, n);
            printf("%5s  %-14s  %s%s\n", "rank", "importance", by_filter ? "filter  " : "", "module");
            for (int i = 0; i < shown; i++) {
                if (by_filter)
                    printf("%5d  %-14.10g  %6d  %s\n", i + 1, rows[i].value, rows[i].filter, rows[i].module);
                else
                    printf("%5d  %-14.10g  %s\n", i + 1, rows[i].value, rows[i].module);
            }
        }
    }
    free(rows);
    model_free(m);
    ckpt_close(ck);
    return rc ? cli_fail("importance") : 0;
}
