/* ONNX export of an inference model (gelan-infer/1, docs/FORMATS.md).
 *
 * The graph becomes an ONNX model (opset 17, IR 8) that computes the same
 * output as the runtime: `conv` -> Conv with bias + the activation (SiLU as
 * Sigmoid and Mul, LeakyRelu, Relu), `maxpool` -> MaxPool, `avgpool` ->
 * AveragePool, `upsample` -> Resize (nearest, asymmetric, floor: PyTorch's
 * F.interpolate 'nearest'), `concat` -> Concat, `split` -> Split, `add` -> Add,
 * and `detect` -> the DFL decode written out (Reshape, Softmax, the 0..R-1
 * expectation, anchors built from the maps' Shape, Sub/Add/Mul, Sigmoid), so
 * the ONNX output `pred` [N, 4+nc, anchors] equals the runtime's. Batch,
 * height and width are dynamic (or height and width fixed by the options).
 * Class names and strides go to metadata_props; docs/ONNX.md has the details.
 *
 * int8 models: a `qconv` becomes QDQ, the form ONNX Runtime and TensorRT
 * quantize from: QuantizeLinear + DequantizeLinear of its input (uint8, the
 * node's sx and zp, per tensor), DequantizeLinear (axis 0) of its int8 weight
 * codes with the per-channel scales ws, then Conv with the fp32 bias and the
 * activation as above: the runtime's int8 arithmetic, which ONNX Runtime
 * evaluates in float. The two agree bit for bit where float is exact, and
 * otherwise up to the codes that float rounding flips, which stays within the
 * model's own quantization error (docs/ONNX.md, "int8 models").
 *
 * The graph is first loaded by the runtime (infer_model_build), so only a
 * model the runtime accepts is exported. An op without an ONNX form is refused
 * naming the op and graph line. The file is written to a temporary next to
 * `path` and renamed: on any failure nothing new is left at `path`, and an
 * existing file there is untouched.
 *
 * Errors: -1 with gelan_last_error() starting "export: ". */
#ifndef GELAN_EXPORT_ONNX_EXPORT_H
#define GELAN_EXPORT_ONNX_EXPORT_H

#include <stddef.h>

#include "infer/infer.h"

#define ONNX_EXPORT_OPSET 17
#define ONNX_EXPORT_IR_VERSION 8

typedef struct {
    /* > 0: the input's height and width are these numbers in the model (batch
     * stays dynamic); 0: both dynamic (any multiple of the largest stride). */
    int img_h, img_w;
} OnnxExportOptions;

/* What was written (for the command line's summary). */
typedef struct {
    int graph_nodes;  /* lines of the gelan graph */
    int onnx_nodes;   /* nodes of the ONNX graph */
    int initializers; /* weights and constants */
    size_t params;    /* values of the weights (int8 codes and biases included, their scales not) */
    size_t bytes;     /* size of the file */
    int input_channels;
    int nc;           /* classes of the detect node, -1 without one */
    char output[256]; /* the output's name ("pred" for detection models) */
    int qconvs;       /* int8 convs written as QDQ (0 for a float model) */
} OnnxExportInfo;

/* Exports graph text + class names (JSON list, may be NULL) + weights (by
 * lookup; the data must stay valid until this returns). opt and info may be
 * NULL. */
int onnx_export_graph(const char *graph, const char *names_json, InferLookup lookup, void *ctx,
                      const OnnxExportOptions *opt, const char *path, OnnxExportInfo *info);

/* Exports an inference model file (format gelan-infer/1). */
int onnx_export_model(const char *model_path, const OnnxExportOptions *opt, const char *path, OnnxExportInfo *info);

#endif
