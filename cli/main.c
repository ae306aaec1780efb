/* build/gelan: the training-side command line. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

/* A command is listed here when its cmd_*.c exists. */
static const Command commands[] = {
    {"info", cmd_info, "per-layer table, parameters and GFLOPs of a model config or checkpoint"},
    {"train", cmd_train, "train a model (official recipe; runs/NAME/ gets checkpoints, results.csv and a plot)"},
    {"val", cmd_val, "validation table and mAP of a checkpoint, or of a COCO-format detections file"},
    {"detect", cmd_detect, "boxes on images (checkpoint or inference model): a line per box and annotated images"},
    {"convert", cmd_convert, "drop the PGI auxiliary branches, re-map to one head, fuse: an inference model"},
    {"bench", cmd_bench,
     "the seed's latency table of an inference model: avg/min/max ms, CPU temp, params, GFLOPs, layers"},
    {"quantize", cmd_quantize, "post-training quantization: calibrate on images, per-layer report, quantized weights"},
    {"export", cmd_export, "the fused inference model as ONNX (opset 17, dynamic batch and image size)"},
    {"importance", cmd_importance, "conv and filter importance tables (L2, L1, |BN gamma|), lowest first"},
    {"prune", cmd_prune, "remove low-importance filters through every block: a smaller model that trains and runs"},
    {"trace", cmd_trace, "run a model on an input file and write every layer's output (and gradients)"},
    {"graph", cmd_graph, "draw a model (SVG or Graphviz DOT): main branch, auxiliary branch, detection levels"},
    {"inspect", cmd_inspect, "tensors and metadata of a safetensors file (traces, checkpoints, golden files)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: gelan COMMAND [options]   (gelan COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "gelan: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
