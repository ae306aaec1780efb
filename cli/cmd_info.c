/* gelan info CFG|WEIGHTS [--img N] [--fused] [--cfg CFG]: the official model
 * summary (parse_model's per-layer table and model_info's last line). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "infer/infer.h"
#include "nn/model.h"
#include "nn/textbuf.h"
#include "tensor/error.h"
#include "tensor/safetensors.h"
#include "train/checkpoint.h"

static const char *USAGE = "gelan info CFG.yaml|WEIGHTS.safetensors [--img N] [--fused] [--cfg CFG.yaml]";

static bool is_yaml(const char *path) {
    size_t n = strlen(path);
    return (n > 5 && !strcmp(path + n - 5, ".yaml")) || (n > 4 && !strcmp(path + n - 4, ".yml"));
}

static const char *from_text(const Layer *L, char *buf, size_t len) {
    int o = snprintf(buf, len, "%s", L->from_list ? "[" : "");
    for (int k = 0; k < L->nfrom && o < (int)len; k++) o += snprintf(buf + o, len - o, k ? ", %d" : "%d", L->from[k]);
    if (L->from_list && o < (int)len) snprintf(buf + o, len - o, "]");
    return buf;
}

/* An inference model (gelan convert's default output, format gelan-infer/1):
 * its graph nodes, then the summary line. */
static bool is_infer_model(const char *path) {
    SafeTensors *st = st_open(path);
    const char *f = st ? st_metadata(st, "format") : NULL;
    bool yes = f && !strcmp(f, "gelan-infer/1");
    st_close(st);
    gelan_clear_error(); /* not a safetensors file: the model loader reports it */
    return yes;
}

static int info_infer(const char *path, int img) {
    InferModel *im = infer_model_load(path);
    if (!im) return cli_fail("info");
    char nbuf[32];
    printf("\n%5s  %s\n", "node", "graph line");
    for (int i = 0; i < infer_model_layers(im); i++) printf("%5d  %s\n", i, infer_model_node_desc(im, i));
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    const char *dot = strrchr(b, '.');
    int len = dot && dot != b ? (int)(dot - b) : (int)strlen(b);
    printf("%.*s summary: %d nodes, %s parameters, %.2f GFLOPs (inference model, %d classes)\n", len, b,
           infer_model_layers(im), format_with_commas(infer_model_params(im), nbuf, sizeof nbuf),
           infer_model_flops(im, img, img) / 1e9, infer_model_class_count(im));
    infer_model_free(im);
    return 0;
}

int cmd_info(int argc, char **argv) {
    int img = 640;
    bool fused = false;
    const char *cfg = NULL, *pos[1];
    int npos = 0;
    ArgSpec specs[] = {
        {"--img", ARG_INT, &img, "N: image size for GFLOPs (default 640)"},
        {"--fused", ARG_FLAG, &fused, "report the model after BN folding and RepConvN merging"},
        {"--cfg", ARG_STR, &cfg, "CFG: model YAML for a weights file that carries none"},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    int rc = args_parse(argc, argv, USAGE, specs, nspecs, pos, 1, &npos);
    if (rc) return rc == 1 ? 0 : rc;
    if (npos != 1) {
        fprintf(stderr, "error: give one model config or weights file\n");
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    if (img < 32) {
        fprintf(stderr, "error: --img must be at least 32, got %d\n", img);
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    if (!is_yaml(pos[0]) && is_infer_model(pos[0])) return info_infer(pos[0], img);
    Model *m = NULL;
    if (is_yaml(pos[0])) {
        m = model_build_file(pos[0], NULL);
    } else {
        Checkpoint *ck = ckpt_open(pos[0]);
        m = ck ? ckpt_load_model(ck, cfg, NULL, false, NULL) : NULL;
        ckpt_close(ck);
    }
    if (!m) return cli_fail("info");
    if (fused && model_fuse(m)) {
        model_free(m);
        return cli_fail("info");
    }
    LayerShape *shapes = calloc((size_t)m->nlayers, sizeof *shapes);
    double macs = 0;
    if (!shapes || model_shapes(m, img, img, shapes, &macs, NULL)) {
        free(shapes);
        model_free(m);
        return cli_fail("info");
    }
    printf("\n%3s%18s%3s%10s  %-40s%-30s\n", "", "from", "n", "params", "module", "arguments");
    char fbuf[64], nbuf[32];
    for (int i = 0; i < m->nlayers; i++) {
        const Layer *L = &m->layers[i];
        printf("%3d%18s%3d%10zu  %-40s%-30s\n", i, from_text(L, fbuf, sizeof fbuf), L->n, layer_num_params(m, L),
               L->type, L->args);
    }
    printf("%s summary: %d layers, %s parameters, %.2f GFLOPs\n", m->name, model_num_modules(m),
           format_with_commas(model_num_params(m), nbuf, sizeof nbuf), 2.0 * macs / 1e9);
    free(shapes);
    model_free(m);
    return 0;
}
