#include "autograd/tape.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tensor/error.h"

Tape *tape_new(void) {
    Tape *t = calloc(1, sizeof *t);
    if (!t) {
        gelan_error("tape: out of memory");
        return NULL;
    }
    arena_init(&t->arena, 0);
    t->grad_enabled = true;
    return t;
}

void tape_free(Tape *t) {
    if (!t) return;
    arena_destroy(&t->arena);
    free(t->scratch);
    free(t);
}

void tape_reset(Tape *t) {
    t->last = NULL;
    t->n_nodes = 0;
    arena_reset(&t->arena);
}

bool tape_set_grad_enabled(Tape *t, bool enabled) {
    bool old = t->grad_enabled;
    t->grad_enabled = enabled;
    return old;
}

Tensor *tape_tensor(Tape *t, int ndim, const int *shape) { return tensor_arena(&t->arena, ndim, shape); }

Tensor *tape_tensor4(Tape *t, int n, int c, int h, int w) {
    int s[4] = {n, c, h, w};
    return tensor_arena(&t->arena, 4, s);
}

void *tape_alloc(Tape *t, size_t bytes) { return arena_alloc(&t->arena, bytes); }

void *tape_scratch(Tape *t, size_t bytes) {
    if (bytes <= t->scratch_bytes) return t->scratch;
    size_t want = bytes + bytes / 4; /* some headroom: the next layer is often a bit larger */
    void *p = NULL;
    if (posix_memalign(&p, 64, want) != 0) {
        gelan_error("tape: out of memory for %zu bytes of scratch", bytes);
        return NULL;
    }
    free(t->scratch);
    t->scratch = p;
    t->scratch_bytes = want;
    return p;
}

bool tape_wants_grad(const Tape *t, Tensor *const *in, int n_in) {
    if (!t->grad_enabled) return false;
    for (int i = 0; i < n_in; i++)
        if (in[i] && in[i]->requires_grad) return true;
    return false;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static TapeOpStat *op_stat(Tape *t, const char *op) {
    for (int i = 0; i < t->n_stats; i++)
        if (t->stats[i].op == op || strcmp(t->stats[i].op, op) == 0) return &t->stats[i];
    if (t->n_stats == TAPE_MAX_OP_STATS) return NULL;
    TapeOpStat *s = &t->stats[t->n_stats++];
    memset(s, 0, sizeof *s);
    s->op = op;
    return s;
}

void tape_profile(Tape *t, bool on) {
    t->profiling = on;
    t->n_stats = 0;
    t->mark = now_s();
}

void tape_profile_mark(Tape *t) { t->mark = now_s(); }

int tape_profile_stats(const Tape *t, const TapeOpStat **out) {
    *out = t->stats;
    return t->n_stats;
}

TapeNode *tape_record(Tape *t, const char *op, Tensor *out, Tensor *const *in, int n_in, backward_fn fn,
                      size_t saved_bytes, void **saved) {
    if (saved) *saved = NULL;
    if (!tape_wants_grad(t, in, n_in)) return NULL;
    if (t->profiling) {
        double now = now_s();
        TapeOpStat *st = op_stat(t, op);
        if (st) st->fwd_s += now - t->mark, st->fwd_n++;
        t->mark = now;
    }
    TapeNode *node = arena_calloc(&t->arena, sizeof *node);
    Tensor **ins = arena_alloc(&t->arena, (size_t)n_in * sizeof *ins);
    if (!node || !ins) return NULL;
    memcpy(ins, in, (size_t)n_in * sizeof *ins);
    node->op = op;
    node->backward = fn;
    node->out = out;
    node->in = ins;
    node->n_in = n_in;
    if (saved_bytes) {
        node->saved = arena_calloc(&t->arena, saved_bytes);
        if (!node->saved) return NULL;
    }
    if (saved) *saved = node->saved;
    node->prev = t->last;
    t->last = node;
    t->n_nodes++;
    out->requires_grad = true;
    out->node = node;
    return node;
}

float *tape_grad_of(Tape *t, Tensor *x) {
    if (!x || !x->requires_grad) return NULL;
    return tensor_grad(x, &t->arena);
}

static int run_backward(Tape *t) {
    for (TapeNode *n = t->last; n; n = n->prev) {
        if (!n->out->grad) continue; /* nothing downstream used this output */
        double t0 = t->profiling ? now_s() : 0;
        int rc = n->backward(t, n);
        if (t->profiling) {
            TapeOpStat *st = op_stat(t, n->op);
            if (st) st->bwd_s += now_s() - t0, st->bwd_n++;
        }
        if (rc != 0) {
            gelan_error_prefix("backward of %s", n->op);
            return -1;
        }
    }
    return 0;
}

int tape_backward(Tape *t, Tensor *loss) {
    if (loss->numel != 1) {
        char s[64];
        return gelan_error("backward: the loss must have one element, got shape %s",
                           tensor_shape_str(loss, s, sizeof s));
    }
    float one = 1.0f;
    return tape_backward_from(t, loss, &one);
}

int tape_backward_from(Tape *t, Tensor *out, const float *grad_out) {
    if (!out->requires_grad) return gelan_error("backward: the tensor does not depend on anything that requires grad");
    float *g = tensor_grad(out, &t->arena);
    if (!g) return -1;
    for (size_t i = 0; i < out->numel; i++) g[i] += grad_out[i];
    return run_backward(t);
}
