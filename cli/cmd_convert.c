/* gelan convert --weights CKPT [--cfg CFG] --out MODEL [--no-fuse] [--ema|--no-ema] [--data D]:
 * drops the PGI auxiliary branches, re-maps the main branch onto a
 * single-head model and, by default, fuses it and writes an inference model
 * (nn/convert.h, docs/CONVERT.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "train/checkpoint.h" /* first: see its note on nn/model.h */
#include "nn/convert.h"
#include "nn/quant.h"
#include "nn/textbuf.h"
#include "tensor/error.h"
#include "tensor/json.h"
#include "train/dataset.h"

static const char *USAGE =
    "gelan convert --weights CKPT [--cfg CFG] --out MODEL [--no-fuse] [--ema|--no-ema] [--data DATA.yaml]";

/* "model.0-21 <- model.1-22" style runs of the layer map. */
static void print_mapping(const Model *src, const int *old_of, int n) {
    printf("layers:");
    for (int j = 0; j < n;) {
        if (old_of[j] < 0) {
            printf(" %d = Silence (the image);", j);
            j++;
            continue;
        }
        int k = j;
        while (k + 1 < n && old_of[k + 1] == old_of[k] + 1 && src->layers[old_of[k + 1]].kind != BLOCK_DETECT) k++;
        if (src->layers[old_of[j]].kind == BLOCK_DETECT) {
            int h = src->detect->nheads;
            if (h == 1)
                printf(" %d <- %d (DDetect)", j, old_of[j]);
            else
                printf(" %d (DDetect) <- %d.cv%d/cv%d/dfl%d", j, old_of[j], 2 * h, 2 * h + 1, h);
        } else if (k == j) {
            printf(" %d <- %d;", j, old_of[j]);
        } else {
            printf(" %d-%d <- %d-%d;", j, k, old_of[j], old_of[k]);
        }
        j = k + 1;
    }
    printf("\n");
}

/* QatTensorRead over the checkpoint. */
static int read_ckpt_tensor(void *ctx, const char *name, Tensor *dst) { return ckpt_read_tensor(ctx, name, dst); }

int cmd_convert(int argc, char **argv) {
    const char *weights = NULL, *cfg = NULL, *out = NULL, *data = NULL;
    bool no_fuse = false, ema = false, no_ema = false;
    ArgSpec specs[] = {
        {"--weights", ARG_STR, &weights, "CKPT: checkpoint or weights file (dual, triple or single head)"},
        {"--cfg", ARG_STR, &cfg, "CFG: model YAML (for files without `cfg` metadata, or to override it)"},
        {"--out", ARG_STR, &out, "MODEL: output file (written atomically)"},
        {"--no-fuse", ARG_FLAG, &no_fuse, "write the single-branch checkpoint (model.* + YAML) instead"},
        {"--ema", ARG_FLAG, &ema, "use the ema.* weights (default when the file has them)"},
        {"--no-ema", ARG_FLAG, &no_ema, "use the model.* weights even when the file has ema.*"},
        {"--data", ARG_STR, &data, "DATA.yaml: class names, when the checkpoint carries none"},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    int rc = args_parse(argc, argv, USAGE, specs, nspecs, NULL, 0, NULL);
    if (rc) return rc == 1 ? 0 : rc;
    if (!weights || !out || (ema && no_ema)) {
        fprintf(stderr, "error: %s\n",
                ema && no_ema ? "--ema and --no-ema exclude each other" : "give --weights and --out");
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }

    Checkpoint *ck = ckpt_open(weights);
    if (!ck) return cli_fail("convert");
    Model *src = NULL, *single = NULL;
    char *names = NULL, *yaml = NULL;
    int *old_of = NULL, n = 0;
    InferGraph g = {0};
    bool use_ema = false;
    rc = ema && !ckpt_has_ema(ck) ? gelan_error("%s has no ema.* tensors (--ema)", weights) : 0;
    if (!rc) rc = (src = ckpt_load_model(ck, cfg, NULL, !no_ema, &use_ema)) ? 0 : -1;
    /* class names: the checkpoint's, else the data config's, else class0.. (the official fallback) */
    const char *ck_names = ckpt_meta(ck, "names");
    if (!rc && ck_names) {
        if (!(names = strdup(ck_names))) rc = gelan_error("out of memory");
    } else if (!rc && data) {
        DataConfig *dc = data_config_load(data);
        if (!dc)
            rc = -1;
        else if (dc->nc != src->nc)
            rc = gelan_error("%s has %d classes, the model %d", data, dc->nc, src->nc);
        else if (!(names = json_string_list((const char *const *)dc->names, (size_t)dc->nc)))
            rc = gelan_error("out of memory");
        data_config_free(dc);
    } else if (!rc) {
        rc = (names = convert_default_names(src->nc)) ? 0 : -1;
    }
    if (!rc) rc = (yaml = convert_single_yaml(src, &old_of, &n)) ? 0 : -1;
    if (!rc) rc = (single = convert_single_branch(src, out)) ? 0 : -1;
    if (!rc) {
        char a[32], b[32];
        printf("%s (%s weights): %d layers, %s parameters, %d head%s\n", weights, use_ema ? "ema" : "model",
               src->nlayers, format_with_commas(model_num_params(src), a, sizeof a), src->head.nheads,
               src->head.nheads > 1 ? "s" : "");
        print_mapping(src, old_of, n);
        printf("single branch: %d layers, %s parameters\n", single->nlayers,
               format_with_commas(model_num_params(single), b, sizeof b));
    }
    /* a quantized checkpoint (QAT or `gelan quantize`): the same convs quantized in the
       single-branch model, with the source's observer state */
    int nquant = 0;
    if (!rc) {
        rc = convert_qat_enable(single, src, old_of, n, read_ckpt_tensor, ck, &nquant);
        if (!rc && nquant) printf("quantized: %d int8 convs (qat.* state)\n", nquant);
        if (!rc && nquant && no_fuse)
            rc = gelan_error("--no-fuse of a quantized checkpoint would drop its qat.* state; convert it fused");
    }
    model_free(src);
    src = NULL;
    ConvertMeta meta = {names, weights, use_ema ? "ema" : "model"};
    if (!rc && no_fuse) {
        rc = convert_save_single(single, &meta, out);
        if (!rc) printf("wrote %s (single-branch checkpoint, cfg in its metadata)\n", out);
    } else if (!rc) {
        /* quantized: fold with the fake quant's own float operations (nn/quant.h) */
        rc = nquant ? model_qat_fold(single) : model_fuse(single);
        if (!rc) rc = convert_graph(single, &g);
        if (!rc) rc = convert_save_infer(single, &g, &meta, out);
        if (!rc) {
            char a[32];
            size_t params = 0;
            for (int i = 0; i < g.ntensors; i++) {
                size_t k = 1;
                for (int d = 0; d < g.tensors[i].ndim; d++) k *= (size_t)g.tensors[i].shape[d];
                params += k;
            }
            printf("fused: %s parameters in %d graph nodes\nwrote %s (inference model)\n",
                   format_with_commas(params, a, sizeof a), g.nnodes, out);
        }
    }
    convert_graph_free(&g);
    model_free(single);
    free(old_of);
    free(yaml);
    free(names);
    ckpt_close(ck);
    return rc ? cli_fail("convert") : 0;
}
