/* Training checkpoints (ARCHITECTURE.md section 3): one safetensors file with
 *   model.*  the trained parameters and BN buffers (official state_dict names),
 *   ema.*    the EMA of the same tensors ("ema." + name),
 *   optim.*  per-parameter optimizer state keyed by parameter name,
 * and __metadata__ format = gelan-ckpt/1, cfg (model YAML text), nc, hyp (YAML
 * text), names (JSON list), epoch (last completed, 0-based), best_fitness,
 * ema_updates, plus whatever the caller adds (run options, RNG state...).
 * Writes are atomic (temporary file, fsync, rename): a failed write leaves the
 * previous file untouched.
 *
 * Reading also accepts plain weight files (nn's model_save_weights,
 * tools/pt2safetensors.py): model.* only, maybe without cfg (then the caller
 * must give a config). */
#ifndef GELAN_TRAIN_CHECKPOINT_H
#define GELAN_TRAIN_CHECKPOINT_H

#include <stdbool.h>

#include "nn/model.h"
#include "optim/optim.h"

#define CKPT_FORMAT "gelan-ckpt/1"

typedef struct {
    const char *key, *value;
} CkptMeta;

typedef struct {
    const Model *model;     /* model.* (required) */
    ModelEMA *ema;          /* ema.* and ema_updates; NULL: none */
    Optimizer *optim;       /* optim.*; NULL: none */
    const char *hyp_yaml;   /* NULL: none */
    const char *names_json; /* JSON list of class names; NULL: none */
    int epoch;              /* last completed epoch (0-based) */
    double best_fitness;
    const CkptMeta *extra; /* more metadata (keys must not clash with the above) */
    int n_extra;
} CkptContents;

int ckpt_save(const char *path, const CkptContents *c);

typedef struct Checkpoint Checkpoint;

Checkpoint *ckpt_open(const char *path);
void ckpt_close(Checkpoint *ck);
const char *ckpt_path(const Checkpoint *ck);
/* A metadata value, NULL if absent. */
const char *ckpt_meta(const Checkpoint *ck, const char *key);
/* format == gelan-ckpt/1 (a training checkpoint, resumable). */
bool ckpt_is_training(const Checkpoint *ck);
bool ckpt_has_ema(const Checkpoint *ck);

/* Builds the model of the checkpoint: from cfg_path when given, else from its
 * `cfg` (an error telling to pass --cfg when it has none). nc: opt->nc when
 * > 0, else the checkpoint's `nc`, else the YAML's. Weights are not loaded. */
Model *ckpt_build_model(const Checkpoint *ck, const char *cfg_path, const ModelOptions *opt);

typedef enum { CKPT_MODEL, CKPT_EMA } CkptWhich;
/* Loads every parameter and buffer of m from model.* or ema.*; a missing or
 * mis-shaped tensor is an error listing them (m unchanged then). */
int ckpt_load_weights(const Checkpoint *ck, Model *m, CkptWhich which);
/* The model of a checkpoint or weights file with its weights: built by
 * ckpt_build_model (so with the checkpoint's nc: a run on a data set whose
 * class count is not the YAML's nc saves such a checkpoint), then loaded from
 * ema.* when prefer_ema and the file has them, else from model.*; *used_ema
 * (may be NULL) tells which. The loader of the commands that read a
 * checkpoint's model to change or describe it (info, convert, prune,
 * importance); val, detect and quantize use ckpt_load_eval_model, which builds
 * the model the same way. */
Model *ckpt_load_model(const Checkpoint *ck, const char *cfg_path, const ModelOptions *opt, bool prefer_ema,
                       bool *used_ema);
/* The official intersect_dicts: copies the model.* tensors (ema.model.* when
 * the file has EMA weights) whose name and shape match a tensor of m, leaves
 * the others; *transferred / *total count. */
int ckpt_transfer(const Checkpoint *ck, Model *m, int *transferred, int *total);
/* Restores the EMA tensors and its update count. */
int ckpt_load_ema(const Checkpoint *ck, ModelEMA *e);
/* Restores the optimizer state (see optim_state_load). */
int ckpt_load_optim(const Checkpoint *ck, Optimizer *o);

/* Reads tensor `name` of the file into dst (of the same shape): 0, 1 when
 * absent, -1 on a shape mismatch or read error (the OptimTensorRead /
 * QatTensorRead contract). */
int ckpt_read_tensor(const Checkpoint *ck, const char *name, Tensor *dst);

/* Restores the qat.* state (nn/quant.h) of a model whose QAT is enabled with
 * the run's options (--resume); a missing tensor is an error. */
int ckpt_load_qat(const Checkpoint *ck, Model *m);

/* What val and detect evaluate: the model of a checkpoint or weights file
 * with the EMA weights when present (as the official attempt_load takes
 * ckpt['ema'] before ckpt['model']). cfg_path may be NULL. A file with qat.*
 * state (QAT checkpoint, `gelan quantize` output) gives the quantized model
 * (model_qat_enable_from): it evaluates as fake quant, i.e. as the int8 model. */
Model *ckpt_load_eval_model(const char *path, const char *cfg_path, const ModelOptions *opt);

/* Class names from a JSON list text: *n names, malloc'd (free with
 * names_free); NULL with gelan_error if the text is not a list of strings. */
char **names_from_json(const char *json, int *n);
void names_free(char **names, int n);

#endif
