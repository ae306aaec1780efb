/* The define-by-run tape.
 *
 * Every differentiable op allocates its output from the tape's arena and, when
 * gradients are wanted, records a TapeNode: the output, the inputs, the
 * function that carries the output's gradient back to the inputs, and any
 * state the op saved for that. backward() walks the nodes newest-first, so
 * every node sees the complete gradient of its output before it runs.
 *
 * Gradients accumulate: a parameter (a heap Tensor with requires_grad) keeps
 * its grad across backward() calls until the optimizer zeroes it, which is
 * how gradient accumulation over several batches works. Activations' grads
 * live in the arena and vanish with tape_reset(). */
#ifndef GELAN_TAPE_H
#define GELAN_TAPE_H

#include <stdbool.h>
#include <stddef.h>

#include "tensor/arena.h"
#include "tensor/tensor.h"

typedef struct Tape Tape;
typedef struct TapeNode TapeNode;

/* Carries node->out->grad back into the inputs' grads (accumulating).
 * Returns 0, or -1 with gelan_error. */
typedef int (*backward_fn)(Tape *tape, TapeNode *node);

struct TapeNode {
    const char *op;      /* for error messages: "conv2d", ... */
    backward_fn backward;
    Tensor *out;
    Tensor **in;
    int n_in;
    void *saved;         /* op-specific state, arena memory */
    TapeNode *prev;      /* the node recorded before this one */
};

/* Time spent per op (see tape_profile). */
typedef struct {
    const char *op;
    double fwd_s, bwd_s; /* seconds */
    long fwd_n, bwd_n;   /* calls */
} TapeOpStat;

#define TAPE_MAX_OP_STATS 64

struct Tape {
    Arena arena;
    void *scratch; /* see tape_scratch */
    size_t scratch_bytes;
    TapeNode *last;
    size_t n_nodes;
    bool grad_enabled;
    /* profiling (off unless tape_profile was called) */
    bool profiling;
    double mark;
    int n_stats;
    TapeOpStat stats[TAPE_MAX_OP_STATS];
};

Tape *tape_new(void);
void tape_free(Tape *t);
/* Forgets all nodes and activations (call after each optimizer step). */
void tape_reset(Tape *t);

/* No-grad mode: ops compute outputs but record nothing. Returns the old value. */
bool tape_set_grad_enabled(Tape *t, bool enabled);

/* Temporary memory for the duration of ONE op's forward or backward call (columns, packing
 * buffers): the same 64-byte aligned buffer serves every call, grown when a call needs more,
 * so temporaries do not pile up in the arena over a step. Invalid after the next call of
 * tape_scratch; freed by tape_free. NULL with gelan_error. */
void *tape_scratch(Tape *t, size_t bytes);

/* An uninitialised activation tensor from the arena; NULL with gelan_error. */
Tensor *tape_tensor(Tape *t, int ndim, const int *shape);
Tensor *tape_tensor4(Tape *t, int n, int c, int h, int w);
/* Scratch memory from the arena. */
void *tape_alloc(Tape *t, size_t bytes);

/* True when grad mode is on and any input requires a gradient. */
bool tape_wants_grad(const Tape *t, Tensor *const *in, int n_in);

/* Records out = op(in...) when tape_wants_grad(); marks out as requiring
 * grad. *saved (if not NULL) receives saved_bytes of zeroed arena memory.
 * Returns the node, or NULL when nothing was recorded (not an error). */
TapeNode *tape_record(Tape *t, const char *op, Tensor *out, Tensor *const *in, int n_in, backward_fn fn,
                      size_t saved_bytes, void **saved);

/* The gradient buffer of an input to accumulate into, allocated (zeroed) on
 * first use; NULL if that input does not require a gradient. */
float *tape_grad_of(Tape *t, Tensor *x);

/* Seeds d(loss)/d(loss) = 1 (loss must have one element) and runs every node. */
int tape_backward(Tape *t, Tensor *loss);
/* Seeds out's gradient with grad_out (out->numel floats) and runs backward. */
int tape_backward_from(Tape *t, Tensor *out, const float *grad_out);

/* Profiling for benchmarks: when on, every recorded op is charged the time
 * since the previous recorded op (or since tape_profile_mark), which is its
 * forward time when ops run back to back, and every node's backward is timed.
 * Only recorded ops (grad mode, an input that requires grad) are counted. */
void tape_profile(Tape *t, bool on); /* also clears the statistics */
void tape_profile_mark(Tape *t);     /* "the forward of the next op starts now" */
int tape_profile_stats(const Tape *t, const TapeOpStat **out);

#endif
