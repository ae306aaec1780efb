#include "tensor/tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/error.h"

size_t shape_numel(int ndim, const int *shape) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    return n;
}

static int check_shape(int ndim, const int *shape) {
    if (ndim < 0 || ndim > TENSOR_MAX_DIMS)
        return gelan_error("tensor: %d dimensions (at most %d)", ndim, TENSOR_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) return gelan_error("tensor: negative size %d in dimension %d", shape[i], i);
    return 0;
}

static void set_shape(Tensor *t, int ndim, const int *shape) {
    t->ndim = ndim;
    for (int i = 0; i < TENSOR_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 1;
    t->numel = shape_numel(ndim, shape);
}

Tensor *tensor_new(int ndim, const int *shape) {
    if (check_shape(ndim, shape)) return NULL;
    Tensor *t = calloc(1, sizeof *t);
    if (!t) goto oom;
    set_shape(t, ndim, shape);
    size_t bytes = (t->numel ? t->numel : 1) * sizeof(float);
    if (posix_memalign((void **)&t->data, 64, bytes) != 0) {
        free(t);
        goto oom;
    }
    memset(t->data, 0, bytes);
    t->owns_data = true;
    return t;
oom:
    gelan_error("tensor: out of memory for %zu elements", shape_numel(ndim, shape));
    return NULL;
}

Tensor *tensor_new4(int n, int c, int h, int w) {
    int s[4] = {n, c, h, w};
    return tensor_new(4, s);
}

Tensor *tensor_new1(int n) { return tensor_new(1, &n); }

Tensor *tensor_clone(const Tensor *src) {
    Tensor *t = tensor_new(src->ndim, src->shape);
    if (t) memcpy(t->data, src->data, src->numel * sizeof(float));
    return t;
}

void tensor_free(Tensor *t) {
    if (!t) return;
    if (t->owns_data) {
        free(t->data);
        free(t->grad);
    }
    free(t);
}

Tensor *tensor_arena(Arena *a, int ndim, const int *shape) {
    if (check_shape(ndim, shape)) return NULL;
    Tensor *t = arena_calloc(a, sizeof *t);
    if (!t) return NULL;
    set_shape(t, ndim, shape);
    t->data = arena_alloc(a, t->numel * sizeof(float));
    return t->data ? t : NULL;
}

float *tensor_grad(Tensor *t, Arena *a) {
    if (t->grad) return t->grad;
    size_t bytes = (t->numel ? t->numel : 1) * sizeof(float);
    if (t->owns_data) {
        if (posix_memalign((void **)&t->grad, 64, bytes) != 0) t->grad = NULL;
    } else if (a) {
        t->grad = arena_alloc(a, bytes);
    }
    if (!t->grad) {
        gelan_error("tensor: out of memory for a gradient of %zu elements", t->numel);
        return NULL;
    }
    memset(t->grad, 0, bytes);
    return t->grad;
}

void tensor_zero_grad(Tensor *t) {
    if (t->grad) memset(t->grad, 0, t->numel * sizeof(float));
}

bool tensor_same_shape(const Tensor *a, const Tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

const char *shape_str(int ndim, const int *shape, char *buf, size_t len) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "[");
    for (int i = 0; i < ndim; i++)
        off += (size_t)snprintf(buf + off, off < len ? len - off : 0, i ? ",%d" : "%d", shape[i]);
    snprintf(buf + off, off < len ? len - off : 0, "]");
    return buf;
}

const char *tensor_shape_str(const Tensor *t, char *buf, size_t len) {
    return shape_str(t->ndim, t->shape, buf, len);
}

void tensor_fill(Tensor *t, float v) {
    for (size_t i = 0; i < t->numel; i++) t->data[i] = v;
}

float tensor_max_abs(const Tensor *t) {
    float m = 0.f;
    for (size_t i = 0; i < t->numel; i++) m = fmaxf(m, fabsf(t->data[i]));
    return m;
}
