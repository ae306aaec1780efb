/* gelan export --model M | --weights CKPT [--cfg CFG] [--no-ema] --out F.onnx [--img N]:
 * the fused inference model as ONNX (export/onnx_export.h, docs/ONNX.md). A
 * checkpoint is converted in memory first, as `gelan convert` does
 * (nn/convert.h): main branch only, BN folded, RepConvN merged; a quantized
 * one (qat.* state, from QAT or `gelan quantize`) becomes the int8 model, its
 * quantized convs exported as QDQ. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "train/checkpoint.h" /* first: see its note on nn/model.h */
#include "export/onnx_export.h"
#include "nn/convert.h"
#include "nn/quant.h"
#include "nn/textbuf.h"
#include "tensor/error.h"

static const char *USAGE = "gelan export --model M | --weights CKPT [--cfg CFG] [--no-ema] --out F.onnx [--img N]";

static int read_ckpt_tensor(void *ctx, const char *name, Tensor *dst) { return ckpt_read_tensor(ctx, name, dst); }

/* The checkpoint's main branch, fused (int8 where it is quantized), as an inference graph, exported. */
static int export_checkpoint(const char *weights, const char *cfg, bool no_ema, const OnnxExportOptions *opt,
                             const char *out, OnnxExportInfo *info) {
    Checkpoint *ck = ckpt_open(weights);
    if (!ck) return -1;
    Model *src = ckpt_build_model(ck, cfg, NULL), *single = NULL;
    InferGraph g = {0};
    char *default_names = NULL, *yaml = NULL;
    int *old_of = NULL, nlayers = 0, nquant = 0;
    bool use_ema = ckpt_has_ema(ck) && !no_ema; /* the official export takes ckpt['ema'] when present */
    int rc = src ? ckpt_load_weights(ck, src, use_ema ? CKPT_EMA : CKPT_MODEL) : -1;
    const char *names = ckpt_meta(ck, "names");
    if (!rc && !names) rc = (names = default_names = convert_default_names(src->nc)) ? 0 : -1;
    if (!rc) rc = (yaml = convert_single_yaml(src, &old_of, &nlayers)) ? 0 : -1;
    if (!rc) rc = (single = convert_single_branch(src, weights)) ? 0 : -1;
    /* as `gelan convert`: the source's quantized convs stay quantized, folded with the fake quant's arithmetic */
    if (!rc) rc = convert_qat_enable(single, src, old_of, nlayers, read_ckpt_tensor, ck, &nquant);
    if (!rc) rc = nquant ? model_qat_fold(single) : model_fuse(single);
    if (!rc) rc = convert_graph(single, &g);
    if (!rc) {
        printf("%s (%s weights): %d layers, %d head%s -> fused single branch%s, %d graph nodes\n", weights,
               use_ema ? "ema" : "model", src->nlayers, src->head.nheads, src->head.nheads > 1 ? "s" : "",
               nquant ? " (int8: qat.* state)" : "", g.nnodes);
        rc = onnx_export_graph(g.text, names, convert_graph_lookup, &g, opt, out, info);
    }
    convert_graph_free(&g);
    model_free(single);
    model_free(src);
    free(default_names);
    free(yaml);
    free(old_of);
    ckpt_close(ck);
    return rc;
}

int cmd_export(int argc, char **argv) {
    const char *model = NULL, *weights = NULL, *cfg = NULL, *out = NULL;
    bool no_ema = false;
    int img = 0;
    ArgSpec specs[] = {
        {"--model", ARG_STR, &model,
         "M: inference model (gelan convert output, format gelan-infer/1; int8 qconv nodes become QDQ)"},
        {"--weights", ARG_STR, &weights,
         "CKPT: training checkpoint or weights file instead, converted first (qat.* state: int8, QDQ)"},
        {"--cfg", ARG_STR, &cfg, "CFG: model YAML for --weights without `cfg` metadata"},
        {"--no-ema", ARG_FLAG, &no_ema, "with --weights: the model.* weights even when the file has ema.*"},
        {"--out", ARG_STR, &out, "F.onnx: output (written atomically)"},
        {"--img", ARG_INT, &img, "N: fix the input to NxN (batch stays dynamic); default: any size"},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    int rc = args_parse(argc, argv, USAGE, specs, nspecs, NULL, 0, NULL);
    if (rc) return rc == 1 ? 0 : rc;
    const char *why = !out                       ? "give --out"
                      : !model == !weights       ? "give one of --model and --weights"
                      : model && (cfg || no_ema) ? "--cfg and --no-ema go with --weights"
                      : img < 0                  ? "--img must be positive"
                                                 : NULL;
    if (why) {
        fprintf(stderr, "error: %s\n", why);
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    OnnxExportOptions opt = {img, img};
    OnnxExportInfo info;
    rc = model ? onnx_export_model(model, &opt, out, &info) : export_checkpoint(weights, cfg, no_ema, &opt, out, &info);
    if (rc) { /* the library's messages start with "export: " already */
        const char *msg = gelan_last_error();
        if (strncmp(msg, "export: ", 8)) return cli_fail("export");
        fprintf(stderr, "gelan %s\n", msg);
        return 1;
    }
    char size[32], params[32];
    if (img > 0)
        snprintf(size, sizeof size, "%d, %d", img, img);
    else
        snprintf(size, sizeof size, "height, width");
    printf("wrote %s: ONNX opset %d, %d nodes (from %d graph nodes), %s parameters, %.1f MB\n", out, ONNX_EXPORT_OPSET,
           info.onnx_nodes, info.graph_nodes, format_with_commas(info.params, params, sizeof params),
           (double)info.bytes / 1e6);
    printf("input: input [batch, %d, %s] float32; output: %s", info.input_channels, size, info.output);
    if (info.nc >= 0) printf(" [batch, %d, anchors]", 4 + info.nc);
    printf("\n");
    if (info.qconvs)
        printf(
            "int8: %d convs as QDQ (QuantizeLinear/DequantizeLinear uint8 per tensor on the input, "
            "DequantizeLinear int8 per channel on the weight)\n",
            info.qconvs);
    return 0;
}
