/* Concatenation, slicing, splitting and reshaping.
 *
 * Along a dimension `dim` any row-major tensor is [outer, size, inner] with
 * outer = product of the dimensions before dim and inner = product of those
 * after it, so a slice [start, start+len) of dim is `outer` contiguous blocks
 * of len*inner floats. Everything here is block copies; the backward passes
 * copy (add) the same blocks the other way. */
#include <string.h>

#include "autograd/ops.h"
#include "tensor/error.h"

static size_t outer_of(const Tensor *x, int dim) { return shape_numel(dim, x->shape); }
static size_t inner_of(const Tensor *x, int dim) { return shape_numel(x->ndim - dim - 1, x->shape + dim + 1); }

static int check_dim(const char *op, const Tensor *x, int dim) {
    char sh[64];
    if (dim < 0 || dim >= x->ndim)
        return gelan_error("%s: dim %d is out of range for shape %s (0..%d)", op, dim,
                           tensor_shape_str(x, sh, sizeof sh), x->ndim - 1);
    return 0;
}

/* ---- concat ---------------------------------------------------------------- */

static int concat_backward(Tape *t, TapeNode *n) {
    int dim = *(const int *)n->saved;
    size_t outer = outer_of(n->out, dim), inner = inner_of(n->out, dim);
    size_t out_row = (size_t)n->out->shape[dim] * inner;
    size_t offset = 0; /* where input i starts inside one output row */
    for (int i = 0; i < n->n_in; i++) {
        size_t row = (size_t)n->in[i]->shape[dim] * inner;
        float *gx = tape_grad_of(t, n->in[i]);
        if (gx)
            for (size_t o = 0; o < outer; o++) {
                const float *gy = n->out->grad + o * out_row + offset;
                for (size_t e = 0; e < row; e++) gx[o * row + e] += gy[e];
            }
        offset += row;
    }
    return 0;
}

Tensor *op_concat(Tape *t, Tensor *const *xs, int n, int dim) {
    char a[64], b[64];
    if (n < 1 || !xs) {
        gelan_error("concat: need at least one input, got %d", n);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!xs[i]) {
            gelan_error("concat: input %d of %d is NULL", i, n);
            return NULL;
        }
    if (check_dim("concat", xs[0], dim)) return NULL;
    int shape[TENSOR_MAX_DIMS];
    memcpy(shape, xs[0]->shape, sizeof shape);
    shape[dim] = 0;
    for (int i = 0; i < n; i++) {
        bool ok = xs[i]->ndim == xs[0]->ndim;
        for (int d = 0; ok && d < xs[0]->ndim; d++) ok = d == dim || xs[i]->shape[d] == xs[0]->shape[d];
        if (!ok) {
            gelan_error("concat: input %d has shape %s, input 0 has %s; only dim %d may differ", i,
                        tensor_shape_str(xs[i], a, sizeof a), tensor_shape_str(xs[0], b, sizeof b), dim);
            return NULL;
        }
        shape[dim] += xs[i]->shape[dim];
    }
    Tensor *y = tape_tensor(t, xs[0]->ndim, shape);
    if (!y) return NULL;
    size_t outer = outer_of(y, dim), inner = inner_of(y, dim);
    size_t out_row = (size_t)shape[dim] * inner;
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        size_t row = (size_t)xs[i]->shape[dim] * inner;
        for (size_t o = 0; o < outer; o++)
            memcpy(y->data + o * out_row + offset, xs[i]->data + o * row, row * sizeof(float));
        offset += row;
    }
    int *saved;
    if (tape_record(t, "concat", y, xs, n, concat_backward, sizeof *saved, (void **)&saved))
        *saved = dim;
    else if (tape_wants_grad(t, xs, n))
        return NULL; /* the arena could not hold the node */
    return y;
}

/* ---- slice (and split, a row of slices) ------------------------------------ */

typedef struct {
    int dim, start;
} SliceSaved;

static int slice_backward(Tape *t, TapeNode *n) {
    float *gx = tape_grad_of(t, n->in[0]);
    if (!gx) return 0;
    const SliceSaved *s = n->saved;
    const Tensor *x = n->in[0];
    size_t outer = outer_of(x, s->dim), inner = inner_of(x, s->dim);
    size_t in_row = (size_t)x->shape[s->dim] * inner, out_row = (size_t)n->out->shape[s->dim] * inner;
    for (size_t o = 0; o < outer; o++) {
        float *g = gx + o * in_row + (size_t)s->start * inner;
        const float *gy = n->out->grad + o * out_row;
        for (size_t e = 0; e < out_row; e++) g[e] += gy[e];
    }
    return 0;
}

/* Slices without checking: op_slice and op_split check in their own words. */
static Tensor *slice(Tape *t, Tensor *x, int dim, int start, int len) {
    int shape[TENSOR_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[dim] = len;
    Tensor *y = tape_tensor(t, x->ndim, shape);
    if (!y) return NULL;
    size_t outer = outer_of(x, dim), inner = inner_of(x, dim);
    size_t in_row = (size_t)x->shape[dim] * inner, out_row = (size_t)len * inner;
    for (size_t o = 0; o < outer; o++)
        memcpy(y->data + o * out_row, x->data + o * in_row + (size_t)start * inner, out_row * sizeof(float));
    SliceSaved *s;
    if (tape_record(t, "slice", y, &x, 1, slice_backward, sizeof *s, (void **)&s))
        *s = (SliceSaved){dim, start};
    else if (tape_wants_grad(t, &x, 1))
        return NULL; /* the arena could not hold the node */
    return y;
}

Tensor *op_slice(Tape *t, Tensor *x, int dim, int start, int len) {
    char sh[64];
    if (!x) {
        gelan_error("slice: input is NULL");
        return NULL;
    }
    if (check_dim("slice", x, dim)) return NULL;
    if (start < 0 || len < 0 || start > x->shape[dim] - len) {
        gelan_error("slice: [%d, %d+%d) is outside dim %d of size %d (input %s)", start, start, len, dim, x->shape[dim],
                    tensor_shape_str(x, sh, sizeof sh));
        return NULL;
    }
    return slice(t, x, dim, start, len);
}

int op_split(Tape *t, Tensor *x, int dim, const int *sizes, int n, Tensor **out) {
    char sh[64];
    if (!x) return gelan_error("split: input is NULL");
    if (n < 1 || !sizes || !out) return gelan_error("split: need at least one piece, got %d", n);
    if (check_dim("split", x, dim)) return -1;
    long total = 0;
    for (int i = 0; i < n; i++) {
        if (sizes[i] < 0) return gelan_error("split: piece %d has negative size %d", i, sizes[i]);
        total += sizes[i];
    }
    if (total != x->shape[dim])
        return gelan_error("split: piece sizes add up to %ld, dim %d of %s has %d", total, dim,
                           tensor_shape_str(x, sh, sizeof sh), x->shape[dim]);
    for (int i = 0, start = 0; i < n; start += sizes[i], i++) {
        out[i] = slice(t, x, dim, start, sizes[i]);
        if (!out[i]) return -1;
    }
    return 0;
}

/* ---- reshape --------------------------------------------------------------- */

static int reshape_backward(Tape *t, TapeNode *n) {
    float *gx = tape_grad_of(t, n->in[0]);
    if (!gx) return 0;
    for (size_t i = 0; i < n->out->numel; i++) gx[i] += n->out->grad[i];
    return 0;
}

Tensor *op_reshape(Tape *t, Tensor *x, int ndim, const int *shape) {
    char a[64], b[64];
    if (!x) {
        gelan_error("reshape: input is NULL");
        return NULL;
    }
    if (ndim < 0 || ndim > TENSOR_MAX_DIMS || (ndim > 0 && !shape)) {
        gelan_error("reshape: cannot reshape %s to %d dimensions%s (at most %d)", tensor_shape_str(x, a, sizeof a),
                    ndim, ndim > 0 && !shape ? " with no shape" : "", TENSOR_MAX_DIMS);
        return NULL;
    }
    bool ok = true;
    for (int d = 0; d < ndim; d++) ok &= shape[d] >= 0;
    if (!ok || shape_numel(ndim, shape) != x->numel) {
        gelan_error("reshape: cannot reshape %s (%zu elements) to %s", tensor_shape_str(x, a, sizeof a), x->numel,
                    shape_str(ndim, shape, b, sizeof b));
        return NULL;
    }
    Tensor *y = tape_tensor(t, ndim, shape);
    if (!y) return NULL;
    memcpy(y->data, x->data, x->numel * sizeof(float));
    if (!tape_record(t, "reshape", y, &x, 1, reshape_backward, 0, NULL) && tape_wants_grad(t, &x, 1))
        return NULL; /* the arena could not hold the node */
    return y;
}
