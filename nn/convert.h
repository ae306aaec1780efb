/* `gelan convert`: from a PGI training model to what inference runs.
 *
 * 1. Reparameterization (convert_single_branch). A dual (DualDDetect) or
 *    triple (TripleDDetect) model trains auxiliary branches that inference
 *    never uses. Walking `from` backwards from the inputs of the main head
 *    (the last nl inputs of the detect layer) finds every layer that inference
 *    depends on; the others (the auxiliary backbone and neck, their CBLinear
 *    and CBFuse, Silence) are dropped, the kept layers renumbered, their
 *    `from` re-mapped, and the main head's cv{2+2h}/cv{3+2h}/dfl{h+1} become a
 *    single DDetect's cv2/cv3/dfl. The result is an ordinary single-head
 *    model in the official YAML syntax: for yolov9-c it is gelan-c (layer i
 *    <- layer i+1, head <- model.38.cv4/cv5/dfl2), the mapping of the official
 *    tools/reparameterization.ipynb. Generic: no table per config. A model
 *    that already has a single head maps onto itself.
 * 2. The inference graph (convert_graph) of a fused single-head model (BN
 *    folded, RepConvN merged: model_fuse): one `conv` per fused conv with its
 *    activation, `split`/`concat` for the ELAN chunks and ADown halves,
 *    pooling, upsampling, `add` for residuals and CBFuse, and a final `detect`
 *    over the per-level maps cat(box 4*reg_max, class nc). The text format is
 *    docs/FORMATS.md; docs/CONVERT.md describes how each block is written. */
#ifndef GELAN_NN_CONVERT_H
#define GELAN_NN_CONVERT_H

#include "infer/infer.h"
#include "nn/model.h"

/* The single-branch YAML of src (malloc'd text; official syntax, same nc,
 * multipliers, activation and rows as written, `from` re-mapped). When
 * old_of is not NULL, *old_of (malloc'd, *nlayers entries) gives for each new
 * layer its layer in src (-1 for a Silence put first because several layers
 * read the image). NULL + gelan_error on failure. */
char *convert_single_yaml(const Model *src, int **old_of, int *nlayers);

/* The single-branch model of src with src's weights copied over (src is an
 * unfused model and is not changed). name is the new model's file name for
 * messages and summaries (its stem is the model name). */
Model *convert_single_branch(const Model *src, const char *name);

/* The name, in the source model, of a parameter or buffer of the converted
 * model: model.{j}.* <- model.{old_of[j]}.*, and for the head cv2/cv3/dfl <-
 * the main head's cv{2+2h}/cv{3+2h}/dfl{h+1}. 0, or -1 if name is not one of
 * the converted model's. */
int convert_source_name(const Model *src, const int *old_of, int nlayers, const char *name, char *buf, size_t len);

/* Quantizes the convs of the single-branch model dst that are quantized in its
 * source (a QAT or `gelan quantize` file): model_qat_enable_from on dst with
 * read called for the source's names (qat.SRC.act_minmax / act_qparams, SRC
 * the source Conv2d prefix per convert_source_name). read has nn/quant.h's
 * QatTensorRead contract (0 read, 1 absent, -1 error). *count: quantized convs
 * (0: the source is a float model and dst stays float). */
int convert_qat_enable(Model *dst, const Model *src, const int *old_of, int nlayers,
                       int (*read)(void *ctx, const char *name, Tensor *dst), void *ctx, int *count);

/* ---- the inference graph ----------------------------------------------------------- */
typedef struct {
    char name[32]; /* n{node}.w, n{node}.b */
    int ndim;
    int shape[4];
    const float *data; /* the fused model's tensor: valid while the model lives */
} GraphTensor;

typedef struct {
    char *text; /* one node per line, `#` comments name the model layers */
    int nnodes;
    GraphTensor *tensors;
    int ntensors;
    unsigned char *int8; /* [ntensors] or NULL: 1 for a qconv's weight codes (integers in [-127, 127]
                            held as floats for lookups), written to the file as I8 */
    void **owned;        /* buffers the graph made (qconv codes and scales), freed with it */
    int nowned;
} InferGraph;

/* The graph of a fused single-head model. A quantized model (nn/quant.h,
 * folded with model_qat_fold instead of model_fuse) gives a `qconv` node
 * (int8 codes, per-channel scales, s_x, zp, fp32 bias) for every quantized conv,
 * `conv` for the others. 0, or -1 + gelan_error (an unfused
 * or multi-head model, a CBFuse that would have to shrink a map, a DFL whose
 * weights are not 0..reg_max-1, which `detect` assumes). */
int convert_graph(const Model *fused, InferGraph *g);
void convert_graph_free(InferGraph *g);
/* An InferLookup (infer/infer.h) over the InferGraph passed as ctx: its tensor
 * `name`, for infer_model_build and onnx_export_graph. 0, or -1 when the graph
 * has no such tensor. */
int convert_graph_lookup(void *ctx, const char *name, InferTensor *out);

/* Metadata of a convert output besides format and cfg. */
typedef struct {
    const char *names_json; /* JSON list of nc class names (required for the inference model) */
    const char *source;     /* the checkpoint converted (NULL: not written) */
    const char *weights;    /* "ema" or "model" (NULL: not written) */
} ConvertMeta;

/* The inference model: safetensors with the graph's tensors (F32) and
 * __metadata__ format=gelan-infer/1, names, graph, cfg (the single-branch
 * YAML), nc, plus source and weights when given. Atomic. */
int convert_save_infer(const Model *fused, const InferGraph *g, const ConvertMeta *meta, const char *path);

/* The unfused single-branch checkpoint: model.* tensors and metadata
 * format=gelan-weights/1, cfg, nc, names (as model_save_weights, plus the
 * names). Loads with model_load / ckpt_load_eval_model. Atomic. */
int convert_save_single(const Model *m, const ConvertMeta *meta, const char *path);

/* A JSON list "class0".."class{nc-1}" (malloc'd): the official fallback names. */
char *convert_default_names(int nc);

#endif
