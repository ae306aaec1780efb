#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nn/convert.h"
#include "tensor/rng.h"
#include "tensor/safetensors.h"
#include "tests/testutil_nn.h"

static const char *shared_root(void) {
    const char *env = getenv("GELAN_SHARED");
    return env && *env ? env : "../shared";
}

const char *shared_path(const char *rel) {
    static char bufs[8][1024];
    static int next;
    char *b = bufs[next++ & 7];
    snprintf(b, 1024, "%s/%s", shared_root(), rel);
    return b;
}

const char *golden_path(const char *gcase, const char *file) {
    char rel[512];
    snprintf(rel, sizeof rel, "golden/%s/%s", gcase, file);
    return shared_path(rel);
}

int shared_available(void) { return access(shared_path("golden/README.md"), R_OK) == 0; }

double rel_error(const float *got, const float *want, size_t n) {
    double maxw = 0, maxd = 0;
    for (size_t i = 0; i < n; i++) {
        maxw = fmax(maxw, fabs((double)want[i]));
        maxd = fmax(maxd, fabs((double)got[i] - (double)want[i]));
    }
    return maxw > 0 ? maxd / maxw : maxd;
}

int check_close(const char *name, const float *got, const float *want, size_t n, double rtol, double atol) {
    double maxw = 0, maxd = 0;
    size_t worst = 0;
    int nonfinite = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) nonfinite = 1;
        maxw = fmax(maxw, fabs((double)want[i]));
        double d = fabs((double)got[i] - (double)want[i]);
        if (d > maxd || (isnan(d) && !isnan(maxd))) {
            maxd = d;
            worst = i;
        }
    }
    double tol = rtol * maxw + atol;
    if (!nonfinite && maxd <= tol) return 0;
    fprintf(stderr, "\n  %s: max |diff| %.3g > tol %.3g (max|want| %.3g) at [%zu]: got %.7g want %.7g\n", name, maxd,
            tol, maxw, worst, n ? got[worst] : 0.f, n ? want[worst] : 0.f);
    return -1;
}

/* ---- models, tensors, training options (tests/testutil_nn.h) --------------------- */

Tensor *tensor_from_file(const char *path, const char *name) {
    SafeTensors *st = st_open(path);
    if (!st) return NULL;
    const StTensorInfo *ti = st_find(st, name);
    Tensor *x = NULL;
    if (ti && ti->ndim >= 1 && ti->ndim <= TENSOR_MAX_DIMS) {
        int shape[TENSOR_MAX_DIMS];
        for (int d = 0; d < ti->ndim; d++) shape[d] = (int)ti->shape[d];
        x = tensor_new(ti->ndim, shape);
        if (x && st_read_f32(st, name, x->data, x->numel)) {
            tensor_free(x);
            x = NULL;
        }
    }
    st_close(st);
    return x;
}

Tensor *random_image_batch(int n, int c, int h, int w, uint64_t seed) {
    Tensor *x = tensor_new4(n, c, h, w);
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; x && i < x->numel; i++) x->data[i] = rng_uniform(&r);
    return x;
}

void randomize_bn_stats(Model *m, uint64_t seed, float mean_range) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < m->nunits; i++) {
        ConvUnit *u = m->units[i];
        if (!u->bn_weight) continue;
        for (int c = 0; c < u->c2; c++) {
            u->bn_weight->data[c] = rng_range(&r, 0.5f, 1.5f);
            u->bn_bias->data[c] = rng_range(&r, -0.2f, 0.2f);
            u->bn_mean->data[c] = rng_range(&r, -mean_range, mean_range);
            u->bn_var->data[c] = rng_range(&r, 0.5f, 2.0f);
        }
    }
}


void quick_train_options(TrainOptions *o, const char *data, const char *project, const char *name) {
    train_options_default(o);
    o->data = data;
    o->project = project;
    o->name = name;
    o->exist_ok = true;
    o->img = 64;
    o->batch = 4;
    o->workers = 1;
    o->close_mosaic = 0;
}

/* ---- the command line ------------------------------------------------------------ */

const char *gelan_bin_path(void) {
    const char *g = getenv("GELAN_BIN");
    return g && *g ? g : "build/gelan";
}

int run_command(const char *cmd, char *out, size_t len) {
    char full[4096], chunk[1024];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t used = 0, got, room = len - 1;
    while ((got = fread(chunk, 1, sizeof chunk, p)) > 0) {
        if (used + got > room) { /* keep the tail */
            size_t drop = used + got - room < used ? used + got - room : used;
            memmove(out, out + drop, used - drop);
            used -= drop;
        }
        size_t take = got < room - used ? got : room - used;
        memcpy(out + used, chunk + got - take, take);
        used += take;
    }
    out[used] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

bool run_command_expect(const char *cmd, int want, char *out, size_t len) {
    int rc = run_command(cmd, out, len);
    if (rc != want) fprintf(stderr, "\n  `%s` exited with %d, expected %d:\n%s", cmd, rc, want, out);
    return rc == want;
}

/* ---- temporary files and training data ------------------------------------------- */

const char *tmp_dir_path(const char *suite, const char *name) {
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ & 7];
    snprintf(b, sizeof bufs[0], "/tmp/gelan_test_%s_%ld%s%s", suite, (long)getpid(), *name ? "/" : "", name);
    return b;
}

int tmp_dir_make(const char *suite) {
    mkdir(tmp_dir_path(suite, ""), 0700);
    return 0;
}

int tmp_dir_remove(const char *suite) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir_path(suite, ""));
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmp_dir_path(suite, ""));
    return 0;
}

const char *write_shapes_data(const char *path, int ntrain, int nval, int img) {
    FILE *f = fopen(path, "w");
    if (!f) return NULL;
    fprintf(f, "synthetic: shapes\ntrain_count: %d\nval_count: %d\nimg: %d\nseed: 0\n", ntrain, nval, img);
    return fclose(f) ? NULL : path;
}

bool same_checkpoint_tensors(const char *a, const char *b, const char *const *keys, int nkeys) {
    SafeTensors *x = st_open(a), *y = st_open(b);
    bool same = x && y && st_count(x) == st_count(y);
    for (int i = 0; same && i < st_count(x); i++) {
        const StTensorInfo *ti = st_info(x, i), *tj = st_find(y, ti->name);
        if (!tj || ti->nbytes != tj->nbytes || memcmp(st_data(x, ti), st_data(y, tj), ti->nbytes)) {
            fprintf(stderr, "\n  %s differs\n", ti->name);
            same = false;
        }
    }
    for (int k = 0; same && k < nkeys; k++) {
        const char *u = st_metadata(x, keys[k]), *v = st_metadata(y, keys[k]);
        if (!u || !v || strcmp(u, v)) {
            fprintf(stderr, "\n  metadata %s differs: %s vs %s\n", keys[k], u ? u : "-", v ? v : "-");
            same = false;
        }
    }
    st_close(x);
    st_close(y);
    return same;
}
