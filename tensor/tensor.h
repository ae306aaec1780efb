/* float32 tensors, row-major (NCHW for images).
 *
 * A Tensor is a shape plus a data pointer. Its storage either belongs to the
 * tensor (parameters, buffers: tensor_new / tensor_free) or to an Arena
 * (per-step activations: tensor_arena). The autograd fields are here so that
 * any tensor can take part in a tape without a wrapper type: `grad` is the
 * accumulated gradient (same shape as data, NULL until needed), `node` is the
 * tape entry that produced it (NULL for leaves such as parameters). */
#ifndef GELAN_TENSOR_H
#define GELAN_TENSOR_H

#include <stdbool.h>
#include <stddef.h>

#include "tensor/arena.h"

#define TENSOR_MAX_DIMS 6

struct TapeNode;

typedef struct Tensor {
    int ndim;
    int shape[TENSOR_MAX_DIMS];
    size_t numel;
    float *data;
    float *grad;            /* d(loss)/d(data) or NULL */
    bool requires_grad;     /* leaves: set for trainable parameters */
    bool owns_data;         /* data (and grad) were malloc'ed by tensor_new */
    struct TapeNode *node;  /* producer on the tape, NULL for leaves */
} Tensor;

/* Heap tensor, zero-filled. NULL with gelan_error on a bad shape or OOM. */
Tensor *tensor_new(int ndim, const int *shape);
Tensor *tensor_new4(int n, int c, int h, int w);
Tensor *tensor_new1(int n);
/* Heap copy of data and shape (no grad). */
Tensor *tensor_clone(const Tensor *t);
void tensor_free(Tensor *t);

/* Arena tensor, uninitialised data, no grad. */
Tensor *tensor_arena(Arena *a, int ndim, const int *shape);

/* Allocates (zeroed) t->grad if missing: heap for owning tensors, else the arena. */
float *tensor_grad(Tensor *t, Arena *a);
void tensor_zero_grad(Tensor *t);

size_t shape_numel(int ndim, const int *shape);
bool tensor_same_shape(const Tensor *a, const Tensor *b);
/* "[2,3,64,64]" into buf (also returns buf). */
const char *tensor_shape_str(const Tensor *t, char *buf, size_t len);
const char *shape_str(int ndim, const int *shape, char *buf, size_t len);

/* Convenience for NCHW tensors. */
static inline int tN(const Tensor *t) { return t->shape[0]; }
static inline int tC(const Tensor *t) { return t->shape[1]; }
static inline int tH(const Tensor *t) { return t->shape[2]; }
static inline int tW(const Tensor *t) { return t->shape[3]; }

void tensor_fill(Tensor *t, float v);
float tensor_max_abs(const Tensor *t);

#endif
