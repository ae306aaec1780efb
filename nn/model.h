/* A YOLOv9 / GELAN detection model built from an official model YAML.
 *
 * model_build applies the official parse_model rules (models/yolo.py), builds
 * every block with the official parameter names, checks the channel and
 * spatial arithmetic of the whole graph (so a bad config fails here, naming
 * the file, the layer, the module and its `from`, never inside a forward),
 * and initialises the parameters like a fresh PyTorch model (seeded).
 *
 * Parameters and BN buffers are heap tensors owned by the model; per-step
 * activations (every layer's output) come from the tape's arena. */
#ifndef GELAN_NN_MODEL_H
#define GELAN_NN_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/tape.h"
#include "nn/blocks.h"
#include "nn/yaml_cfg.h"
#include "tensor/rng.h"

/* The official smart_optimizer's three groups: weights of convs (decayed),
 * BN weights (no decay), biases (no decay). */
typedef enum { NN_PARAM_WEIGHT, NN_PARAM_BN_WEIGHT, NN_PARAM_BIAS } ParamKind;

typedef struct {
    const char *name; /* official state_dict name, e.g. model.3.cv2.0.m.0.cv1.conv1.conv.weight */
    Tensor *t;        /* t->requires_grad is false only for the fixed DFL weights */
    ParamKind kind;
} NamedParam;

typedef struct {
    const char *name; /* ...bn.running_mean / running_var */
    Tensor *t;
} NamedBuffer;

/* One YAML row. */
typedef struct Layer {
    int index;
    BlockKind kind;
    char *module; /* as written: "Conv", "nn.Upsample" */
    char *type;   /* as the official summary prints it: "models.common.Conv" */
    int nfrom;
    bool from_list; /* `from` was written as a list */
    int *from;      /* as written (-1 = previous layer) */
    int *src;       /* absolute layer indexes; -1 = the input image */
    int n;          /* repeats after depth_multiple */
    Block *blocks;
    int c_out; /* output channels (their sum for CBLinear) */
    int nouts; /* > 1: a tuple (CBLinear pieces) */
    int c_outs[CBLINEAR_MAX_OUTS];
    char *args; /* the module's arguments after parse_model, Python style */
} Layer;

typedef struct {
    int nheads; /* 1: DDetect; 2: DualDDetect (aux, main); 3: TripleDDetect (aux1, aux2, main) */
    int nl;     /* levels per head */
    int nc, reg_max, no;
    float strides[DETECT_MAX_LEVELS];
} HeadInfo;

typedef struct Model {
    char *file; /* YAML file name (messages) */
    char *name; /* its stem, for the summary line */
    char *yaml; /* the YAML text (checkpoints carry it as `cfg`) */
    int nc, ch;
    Act act;
    int nlayers;
    Layer *layers;
    Detect *detect; /* the last layer's head */
    HeadInfo head;
    bool fused;
    /* every unit and RepConvN in construction order (state_dict order) */
    ConvUnit **units;
    int nunits, cap_units;
    RepConvN **reps;
    int nreps, cap_reps;
    /* name tables, rebuilt after construction and after fusing */
    NamedParam *params;
    int nparams;
    NamedBuffer *buffers;
    int nbuffers;
    Rng rng; /* initialisation */
} Model;

typedef struct {
    int nc;        /* > 0: override the YAML's nc */
    uint64_t seed; /* initialisation RNG seed */
} ModelOptions;

/* yaml_text: the YAML; file_name: used in messages and for the model's name. */
Model *model_build(const char *yaml_text, const char *file_name, const ModelOptions *opt);
Model *model_build_file(const char *path, const ModelOptions *opt);
void model_free(Model *m);

/* The model's parameters / buffers in state_dict order (arrays owned by the model). */
int model_params(const Model *m, const NamedParam **out);
int model_buffers(const Model *m, const NamedBuffer **out);
/* A parameter or buffer by name, NULL if none. */
Tensor *model_tensor(const Model *m, const char *name);
/* Total number of parameter elements (the official count, DFL weights included). */
size_t model_num_params(const Model *m);

/* Per-layer output(s) of a forward. */
typedef struct {
    int n; /* 1, or the number of CBLinear pieces */
    Tensor **t;
} LayerOut;

typedef struct {
    int nlayers;
    LayerOut *layers; /* every layer's output; the detect layer's is empty */
    int nheads, nl;
    Tensor *maps[DETECT_MAX_HEADS][DETECT_MAX_LEVELS]; /* raw level maps [N, no, H_l, W_l] per head */
    Tensor *pred[DETECT_MAX_HEADS];                    /* eval only: decoded [N, 4+nc, A] per head, else NULL */
} ModelOutput;

/* input [N, ch, H, W] (H, W multiples of the largest stride). Training: BN uses
 * batch statistics and updates its running buffers, the output holds only the
 * maps (what the loss takes). Eval: running statistics, maps and decoded
 * predictions for every head (the official TripleDDetect returns only the main
 * one; here all three are decoded the same way). Records on the tape when it
 * has grad enabled. Returns 0 or -1 with gelan_error naming the layer. */
int model_forward(Model *m, Tape *t, Tensor *input, bool training, ModelOutput *out);

/* "main"; "aux", "main"; or "aux1", "aux2", "main". */
const char *model_head_name(const Model *m, int head);

/* Calls fn(name, tensor, ctx) for every output of an eval forward under the
 * names of ../shared/golden/README.md: layer.{i} (layer.{i}.{j} for CBLinear's
 * tuple) for every layer but the head; then output.pred, output.level{k} for a
 * single head, or eval.pred.{head}, eval.level.{head}{k}. Stops at (and
 * returns) the first nonzero return of fn. */
typedef int (*NamedTensorFn)(const char *name, const Tensor *t, void *ctx);
int model_eval_outputs(const Model *m, const ModelOutput *o, NamedTensorFn fn, void *ctx);

/* Folds every BN into its conv and merges each RepConvN's 1x1 branch into its
 * 3x3 (the official model.fuse()); parameter names change as in the official
 * fused model (PREFIX.conv.bias, RepConvN's PREFIX.conv.weight). Irreversible. */
int model_fuse(Model *m);

/* ---- sizes, parameter counts, GFLOPs (nn/summary.c) ----------------------- */
typedef struct {
    int c, h, w;
} LayerShape;

/* Output shape of every layer (shapes[nlayers], the detect layer's = its
 * first input) for an input of h x w, and the conv multiply-adds (bias and BN
 * excluded) of one image. Fails (naming the layer) when sizes disagree. */
int model_shapes(const Model *m, int h, int w, LayerShape *shapes, double *macs, double *layer_macs);
/* Number of parameter elements of one layer. */
size_t layer_num_params(const Model *m, const Layer *l);
/* The official layer count: len(list(model.modules())) of the PyTorch model. */
int model_num_modules(const Model *m);

/* ---- weights (nn/weights.c) ---------------------------------------------- */
/* Loads every `model.*` tensor of a safetensors file by name (other names are
 * ignored). Missing, unexpected and mis-shaped tensors are all listed in the
 * error; nothing is changed then. */
int model_load_weights(Model *m, const char *path);
/* Writes the model's parameters and buffers as `model.*` F32 tensors with
 * metadata format=gelan-weights/1, cfg=<the YAML text> and nc. */
int model_save_weights(const Model *m, const char *path);
/* A model from a weights file: its `cfg` metadata when present, else cfg_path
 * (which may also override it). */
Model *model_load(const char *weights_path, const char *cfg_path, const ModelOptions *opt);

/* A metadata entry of a weights file. */
typedef struct {
    const char *key, *value;
} ModelMeta;
/* model_save_weights for a model made from another (convert --no-fuse,
 * prune): format=gelan-weights/1, cfg, nc, then meta[] in order (an entry
 * whose value is NULL is left out). Atomic. */
int model_save_weights_meta(const Model *m, const ModelMeta *meta, int nmeta, const char *path);

#endif
