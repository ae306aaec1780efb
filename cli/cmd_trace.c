/* gelan trace: runs a model on the tensor `input` of a safetensors file and
 * writes every layer's output and the head outputs under the names of
 * ../shared/golden/README.md (ARCHITECTURE.md section 5), so that a trace can
 * be compared with the official implementation tensor by tensor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/tape.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "nn/model.h"
#include "tensor/error.h"
#include "tensor/pool.h"
#include "tensor/safetensors.h"
#include "train/hyp.h"
#include "train/trace.h"

static const char *USAGE =
    "gelan trace --weights W --in IN --out OUT [--cfg CFG] [--fuse] [--train [--hyp H]] [--threads N]";

/* The tensor `input` [N, ch, H, W] of a safetensors file, as a heap tensor. */
static Tensor *read_input(const char *path, int ch) {
    SafeTensors *st = st_open(path);
    if (!st) return NULL;
    Tensor *x = NULL;
    const StTensorInfo *ti = st_find(st, "input");
    if (!ti) {
        gelan_error("%s has no tensor 'input'", path);
    } else if (ti->ndim != 4 || ti->shape[1] != ch || ti->shape[0] < 1 || ti->shape[2] < 1 || ti->shape[3] < 1) {
        gelan_error("%s: 'input' must be [N,%d,H,W]", path, ch);
    } else {
        int shape[4] = {(int)ti->shape[0], (int)ti->shape[1], (int)ti->shape[2], (int)ti->shape[3]};
        x = tensor_new(4, shape);
        if (x && st_read_f32(st, "input", x->data, x->numel)) {
            tensor_free(x);
            x = NULL;
        }
    }
    st_close(st);
    return x;
}

static int add(StWriter *w, const char *name, const Tensor *t) {
    return st_writer_add_f32(w, name, t->ndim, t->shape, t->data);
}

static int add_named(const char *name, const Tensor *t, void *w) { return add(w, name, t); }

/* The train trace hands out some values that do not outlive the call: copy. */
static int add_copy(const char *name, const Tensor *t, void *w) {
    int64_t shape[TENSOR_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) shape[i] = t->shape[i];
    return st_writer_add(w, name, ST_F32, t->ndim, shape, t->data, t->numel * sizeof(float), 1);
}

/* The tensor `targets` [M, 6] (image, class, cx, cy, w, h) of IN. */
static float *read_targets(const char *path, int *n) {
    SafeTensors *st = st_open(path);
    if (!st) return NULL;
    float *rows = NULL;
    const StTensorInfo *ti = st_find(st, "targets");
    if (!ti) {
        gelan_error("%s has no tensor 'targets' (needed by --train)", path);
    } else if (ti->ndim != 2 || ti->shape[1] != 6) {
        gelan_error("%s: 'targets' must be [M,6] (image, class, cx, cy, w, h)", path);
    } else {
        *n = (int)ti->shape[0];
        rows = malloc((size_t)(*n ? *n : 1) * 6 * sizeof *rows);
        if (rows && st_read_f32(st, "targets", rows, (size_t)*n * 6)) {
            free(rows);
            rows = NULL;
        }
    }
    st_close(st);
    return rows;
}

int cmd_trace(int argc, char **argv) {
    const char *cfg = NULL, *weights = NULL, *in = NULL, *out = NULL;
    const char *hyp_path = NULL;
    bool fuse = false, train = false;
    int threads = 0;
    ArgSpec specs[] = {
        {"--weights", ARG_STR, &weights, "W: model weights (safetensors, official names)"},
        {"--cfg", ARG_STR, &cfg, "CFG: model YAML (default: the weights' `cfg` metadata)"},
        {"--in", ARG_STR, &in, "IN: safetensors file with `input` [N,3,H,W] in [0,1]"},
        {"--out", ARG_STR, &out, "OUT: safetensors file to write"},
        {"--fuse", ARG_FLAG, &fuse, "also write fused.output.pred (after BN folding, RepConvN merging)"},
        {"--train", ARG_FLAG, &train, "also a train-mode step on IN's `targets`: maps, loss, assignment, BN buffers, gradients"},
        {"--hyp", ARG_STR, &hyp_path, "H: hyperparameter YAML for the loss gains (default: the official values)"},
        {"--threads", ARG_INT, &threads, "N: threads (default GELAN_THREADS or all cores)"},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    int rc = args_parse(argc, argv, USAGE, specs, nspecs, NULL, 0, NULL);
    if (rc) return rc == 1 ? 0 : rc;
    if (!weights || !in || !out) {
        fprintf(stderr, "error: --weights, --in and --out are required\n");
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    if (threads < 0) {
        fprintf(stderr, "error: --threads must be >= 0\n");
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    pool_init(threads);

    Model *m = model_load(weights, cfg, NULL);
    Tensor *x = m ? read_input(in, m->ch) : NULL;
    Tape *t = x ? tape_new() : NULL;
    StWriter *w = t ? st_writer_new() : NULL;
    ModelOutput o;
    rc = w ? 0 : -1;
    if (!rc) {
        tape_set_grad_enabled(t, false); /* eval: model.eval() under no_grad */
        rc = model_forward(m, t, x, false, &o);
    }
    if (!rc && !train) rc = model_eval_outputs(m, &o, add_named, w);
    /* the train step runs before fusing (it needs the BN layers) and after the
     * eval outputs were taken (it updates the BN running statistics) */
    Hyp hyp;
    hyp_default(&hyp);
    float *rows = NULL;
    if (!rc && train) {
        Targets tg = {0, NULL};
        rows = read_targets(in, &tg.n);
        tg.rows = rows;
        rc = rows ? 0 : -1;
        if (!rc && hyp_path) rc = hyp_load(&hyp, hyp_path);
        /* eval outputs live in the arena that the train step resets: save them first */
        if (!rc) rc = model_eval_outputs(m, &o, add_copy, w) ? -1 : 0;
        if (!rc) rc = trace_train(m, t, x, &tg, &hyp.loss, add_copy, w, NULL);
    }
    if (!rc && fuse) {
        /* the unfused outputs stay in the tape's arena until the file is written */
        rc = model_fuse(m);
        if (!rc) {
            tape_set_grad_enabled(t, false);
            rc = model_forward(m, t, x, false, &o);
        }
        if (!rc) rc = (train ? add_copy : add_named)("fused.output.pred", o.pred[o.nheads - 1], w);
    }
    if (!rc) rc = st_writer_set_metadata(w, "format", "gelan-trace/1");
    if (!rc) rc = st_writer_save(w, out);
    st_writer_free(w);
    free(rows);
    hyp_free(&hyp);
    tape_free(t);
    tensor_free(x);
    model_free(m);
    pool_shutdown();
    return rc ? cli_fail("trace") : 0;
}
