/* Internal to optim/: the per-kind step functions, and fixed-size element
 * ranges over a list of tensors.
 *
 * The optimizers, the clip and the EMA walk millions of floats spread over a
 * few hundred tensors of very different sizes. Cutting every tensor into
 * ranges of at most OPTIM_CHUNK elements once, and handing parallel_for the
 * list of ranges, balances the threads; and because the ranges do not depend
 * on the thread count, a reduction summed per range and then in range order
 * gives the same bits with any number of threads. */
#ifndef GELAN_OPTIM_INTERNAL_H
#define GELAN_OPTIM_INTERNAL_H

#include <stddef.h>

#include "optim/optim.h"

#define OPTIM_CHUNK 16384

struct OptimChunk {
    int idx;      /* which tensor of the list */
    size_t begin; /* element range [begin, end) inside it */
    size_t end;
};

/* Ranges for tensors 0..n-1 of element counts numel[i]; tensors with
 * numel 0 get none. *out is malloc'ed (NULL when there are no ranges). */
int optim_chunks_make(const size_t *numel, int n, OptimChunk **out, int *count);

/* One optimizer.step() of each kind (optim_step dispatches). */
int sgd_step(Optimizer *o);
int adamw_step(Optimizer *o);

#endif
