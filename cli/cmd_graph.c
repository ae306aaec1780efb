/* gelan graph CFG|WEIGHTS [--img N] --out FILE.svg [--dot] [--cfg CFG]: draws
 * a model (nn/graph_svg.h) and prints, layer by layer, what the drawing
 * shows: role (main, aux, input, head), output shape, parameters and the
 * layer's index after `gelan convert`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "nn/graph_svg.h"
#include "nn/model.h"
#include "nn/textbuf.h"
#include "tensor/error.h"
#include "train/checkpoint.h"

static const char *USAGE = "gelan graph CFG.yaml|WEIGHTS.safetensors --out FILE.svg [--img N] [--dot] [--cfg CFG.yaml]";

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

static void print_table(const Model *m, const GraphInfo *gi) {
    char f[96], num[32], shape[48];
    printf("%5s  %-5s  %-26s %-14s %-16s %12s  %s\n", "layer", "role", "from", "module", "output", "params",
           "after convert");
    for (int i = 0; i < m->nlayers; i++) {
        const Layer *L = &m->layers[i];
        const LayerShape *s = &gi->shape[i];
        if (L->kind == BLOCK_DETECT)
            snprintf(shape, sizeof shape, "%d head%s", m->detect->nheads, m->detect->nheads > 1 ? "s" : "");
        else
            snprintf(shape, sizeof shape, "%dx%dx%d", s->c, s->h, s->w);
        char after[32];
        if (gi->new_index[i] >= 0)
            snprintf(after, sizeof after, "%d", gi->new_index[i]);
        else
            snprintf(after, sizeof after, "dropped");
        printf("%5d  %-5s  %-26s %-14s %-16s %12s  %s\n", i, graph_role_name(gi->role[i]), from_text(L, f, sizeof f),
               L->module, shape, format_with_commas(gi->params[i], num, sizeof num), after);
    }
    /* the head, head by head and level by level */
    const Detect *d = m->detect;
    const Layer *H = &m->layers[m->nlayers - 1];
    for (int k = 0; k < H->nfrom; k++) {
        int hd = k / d->nl, l = k % d->nl, s = H->src[k];
        char name[48];
        int stride = (int)(m->head.strides[l] + 0.5f), p = 0;
        while ((1 << p) < stride) p++;
        snprintf(name, sizeof name, "%s P%d/%d", model_head_name(m, hd), p, stride);
        snprintf(shape, sizeof shape, "%dx%dx%d", d->no, s >= 0 ? gi->shape[s].h : gi->h,
                 s >= 0 ? gi->shape[s].w : gi->w);
        char from[16];
        snprintf(from, sizeof from, "%d", H->from[k]);
        printf("%5s  %-5s  %-26s %-14s %-16s %12s  %s\n", "", "", from, name, shape,
               format_with_commas(graph_head_params(m, hd, l), num, sizeof num),
               hd == d->nheads - 1 ? "kept" : "dropped");
    }
    char a[32], b[32];
    printf("%s: %d layers, %s parameters, %.2f GFLOPs at %dx%d; gelan convert keeps %d layers, %s parameters\n",
           m->name, m->nlayers, format_with_commas(gi->total_params, a, sizeof a), gi->gflops, gi->w, gi->h,
           gi->kept_layers, format_with_commas(gi->kept_params, b, sizeof b));
}

int cmd_graph(int argc, char **argv) {
    int img = 640;
    bool dot = false;
    const char *out = NULL, *cfg = NULL, *pos[1];
    int npos = 0;
    ArgSpec specs[] = {
        {"--out", ARG_STR, &out, "FILE: the drawing to write (SVG, or DOT with --dot)"},
        {"--img", ARG_INT, &img, "N: image size for the shapes (default 640)"},
        {"--dot", ARG_FLAG, &dot, "write Graphviz DOT instead of SVG (dot -Tsvg FILE.dot draws it)"},
        {"--cfg", ARG_STR, &cfg, "CFG: model YAML for a weights file that carries none"},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    int rc = args_parse(argc, argv, USAGE, specs, nspecs, pos, 1, &npos);
    if (rc) return rc == 1 ? 0 : rc;
    if (npos != 1 || !out) {
        fprintf(stderr, "error: give one model config or weights file and --out\n");
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    if (img < 32 || img % 32) {
        fprintf(stderr, "error: --img must be a multiple of 32, got %d\n", img);
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    Model *m = NULL;
    if (is_yaml(pos[0])) {
        m = model_build_file(pos[0], NULL);
    } else { /* only the architecture is drawn: the weights are not read */
        Checkpoint *ck = ckpt_open(pos[0]);
        m = ck ? ckpt_build_model(ck, cfg, NULL) : NULL;
        ckpt_close(ck);
    }
    if (!m) return cli_fail("graph");
    GraphInfo gi;
    char *text = NULL;
    if (graph_info(m, img, img, &gi)) {
        model_free(m);
        return cli_fail("graph");
    }
    print_table(m, &gi);
    graph_info_free(&gi);
    text = dot ? graph_dot(m, img, img) : graph_svg(m, img, img);
    model_free(m);
    if (!text) return cli_fail("graph");
    FILE *f = fopen(out, "wb");
    size_t len = strlen(text);
    bool ok = f && fwrite(text, 1, len, f) == len;
    if (f && fclose(f)) ok = false;
    free(text);
    if (!ok) {
        fprintf(stderr, "gelan graph: cannot write %s\n", out);
        return 1;
    }
    printf("wrote %s\n", out);
    return 0;
}
