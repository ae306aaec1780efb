/* Filter importance and structural pruning (`gelan importance`, `gelan prune`).
 *
 * Importance is the seed team's measure (weekly report, week 14, "Pruning"):
 * the norm of a conv's whole weight (one value per conv), or of one output
 * filter's slice weight[f] (one value per filter), lowest = least important;
 * with L1 and |BN gamma| ("network slimming") as alternatives.
 *
 * Pruning removes output filters for real. A filter cannot always go alone:
 * channels that are added together (RepConvN's two branches, the residual of
 * RepNBottleneck, the CBLinear pieces summed by CBFuse, a depthwise conv and
 * its input, the two branches that ShuffleNetV2's channel shuffle interleaves)
 * are removed together; a tensor that is later cut in equal parts
 * (the chunk of RepNCSPELAN4/ELAN1, ADown's and ShuffleNetV2's halves, the
 * groups of a grouped conv) loses the same number of channels in each part;
 * and every conv that reads a removed channel loses that input slice, through
 * Concat offsets, pooling and upsampling. prune_model finds these couplings
 * by following every channel through the built model, so it works on any
 * config the builder accepts. Channels it cannot remove consistently are
 * kept: the detection head's final convs and the DFL, the image, --exclude'd
 * layers, and a tensor cut in parts that do not each come from one conv (a
 * shuffled tensor split again, a Concat split across its inputs). The result
 * is a new model whose YAML records the new
 * widths (docs/FORMATS.md, "Pruned widths"), with the kept weights copied. */
#ifndef GELAN_NN_PRUNE_H
#define GELAN_NN_PRUNE_H

#include <stdbool.h>
#include <stddef.h>

#include "nn/model.h"

typedef enum { PRUNE_L2, PRUNE_L1, PRUNE_BN } PruneNorm;

/* "l2", "l1", "bn" */
int prune_norm_parse(const char *s, PruneNorm *out);
const char *prune_norm_name(PruneNorm n);

/* The module path of a unit as the official model names its modules: an
 * official Conv without its ".conv" (model.21.cv2.0.m.0.cv1.conv2), a bare
 * Conv2d by its own name (model.22.cv2.0.2). */
const char *prune_module_path(const ConvUnit *u, char *buf, size_t len);

typedef struct {
    int unit;   /* index in m->units */
    int layer;  /* the YAML row */
    int filter; /* output channel; -1 in a per-conv table */
    double value;
    char module[160];
} ImportanceRow;

/* One row per conv (by_filter false: L2 / L1 norm of the whole weight, bn: the
 * mean |gamma|) or per output filter (L2 / L1 norm of weight[f], bn: |gamma_f|),
 * sorted lowest first (equal values in model order). The fixed DFL convs are
 * left out, and so are convs without BN from bn tables. within (NULL: all): a
 * layer index ("21"), a module type ("RepNCSPELAN4"), or a module path prefix
 * ("model.21.cv2"); an error when it matches no conv. *rows is malloc'd. */
int prune_importance(const Model *m, bool by_filter, PruneNorm norm, const char *within, ImportanceRow **rows,
                     int *nrows);

typedef struct {
    double ratio;        /* [0, 1): the fraction of prunable filters to remove */
    double threshold;    /* >= 0: instead of ratio, remove filters whose importance is <= this */
    PruneNorm norm;      /* the importance used to choose */
    bool global;         /* one ranking over the whole model; else ratio within each coupled group */
    int round;           /* kept widths are multiples of this (>= 1; 8 by default), never below it */
    const char *exclude; /* NULL, or comma-separated layer indices / module paths whose filters stay */
} PruneOptions;

void prune_options_default(PruneOptions *o);

typedef struct {
    int groups;        /* sets of filters removed together (coupled groups) */
    int frozen_groups; /* of which cannot be pruned (head outputs, excluded, ...) */
    int channels;      /* filters (one per coupled channel) in prunable groups */
    int removed;       /* of which removed */
    size_t params_before, params_after;
} PruneStats;

/* The pruned model (a new model; m is not changed). m must be unfused. A
 * ratio of 0 (or a threshold below every importance) gives the same model.
 * NULL + gelan_error on bad options (ratio outside [0, 1), an --exclude entry
 * that names no layer or module). */
Model *prune_model(const Model *m, const PruneOptions *o, PruneStats *stats);

/* Writes a pruned model as a weights file (format gelan-weights/1, cfg = its
 * YAML with the new widths, nc, and names / pruned_from / prune when given).
 * Atomic. */
int prune_save(const Model *m, const char *names_json, const char *source, const char *how, const char *path);

#endif
