/* Pruning (nn/prune.h): the importance tables against a direct computation,
 * and structural pruning checked by equivalence. Filters are made dead by
 * hand (zero weight, zero BN gamma and beta, zero bias: they output exactly 0
 * after any activation, in eval and in train mode) together with every filter
 * the test knows they are added to (RepConvN's two branches, a residual, the
 * CBLinear pieces that CBFuse sums with an ADown output, a depthwise conv),
 * then pruned with `importance <= 0`: the smaller model must compute what the
 * original computes, in eval and train mode, on gelan-t, on a dual model with
 * CBLinear/CBFuse (yolov9-c at width 0.25), on the ShuffleNetV2 variant, and
 * after `convert` on the standalone runtime. The widths the test expects are
 * written out from the block definitions, not taken from the pruner. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/tape.h"
#include "infer/infer.h"
#include "nn/convert.h"
#include "nn/model.h"
#include "nn/prune.h"
#include "tensor/error.h"
#include "tensor/rng.h"
#include "tensor/safetensors.h"
#include "tests/testutil.h"
#include "tests/testutil_nn.h"

#define RTOL 1e-5 /* float rounding: the removed terms are exact zeros, only the summation order changes */

static Model *golden_model(const char *gcase) {
    Model *m = model_build_file(golden_path(gcase, "cfg.yaml"), NULL);
    if (m && model_load_weights(m, golden_path(gcase, "weights.safetensors"))) {
        model_free(m);
        m = NULL;
    }
    return m;
}

/* The unit whose conv tensors are NAME.weight / NAME.bias. */
static ConvUnit *unit(const Model *m, const char *name) {
    for (int i = 0; i < m->nunits; i++)
        if (!strcmp(m->units[i]->name, name)) return m->units[i];
    fprintf(stderr, "\n  no unit %s\n", name);
    return NULL;
}

static int width(const Model *m, const char *name) {
    ConvUnit *u = unit(m, name);
    return u ? u->c2 : -1;
}

/* Filter f of unit NAME outputs exactly 0 from now on (before its activation:
 * conv 0, BN gamma*xhat + beta = 0, bias 0; every activation here maps 0 to 0). */
static void make_dead(Model *m, const char *name, int f) {
    ConvUnit *u = unit(m, name);
    CU_ASSERT_PTR_NOT_NULL(u);
    if (!u) return;
    CU_ASSERT(f >= 0 && f < u->c2);
    size_t per = u->weight->numel / (size_t)u->c2;
    memset(u->weight->data + (size_t)f * per, 0, per * sizeof(float));
    if (u->bias) u->bias->data[f] = 0;
    if (u->bn_weight) u->bn_weight->data[f] = u->bn_bias->data[f] = 0;
}

typedef struct {
    const char *name; /* unit (conv tensor prefix) */
    int c2;           /* its expected width after pruning */
} Expect;

/* Every unit has the expected width: the listed ones theirs, the others their old one. */
static void check_widths(const Model *before, const Model *after, const Expect *e, int n) {
    CU_ASSERT_EQUAL_FATAL(after->nunits, before->nunits);
    for (int i = 0; i < before->nunits; i++) {
        const ConvUnit *a = before->units[i], *b = after->units[i];
        CU_ASSERT_STRING_EQUAL(a->name, b->name);
        int want = a->c2;
        for (int k = 0; k < n; k++)
            if (!strcmp(e[k].name, a->name)) want = e[k].c2;
        if (b->c2 != want) fprintf(stderr, "\n  %s: %d filters, expected %d (was %d)", a->name, b->c2, want, a->c2);
        CU_ASSERT_EQUAL(b->c2, want);
    }
}

/* A forward (no tape gradients); the output's tensors live in the tape. */
static Tape *forward(Model *m, Tensor *x, bool training, ModelOutput *o) {
    Tape *t = tape_new();
    if (!t) return NULL;
    tape_set_grad_enabled(t, false);
    if (model_forward(m, t, x, training, o)) {
        fprintf(stderr, "\n  forward: %s\n", gelan_last_error());
        tape_free(t);
        return NULL;
    }
    return t;
}

/* Largest |a - b| / max|a| over every head's level maps (and eval predictions). */
static double output_diff(const ModelOutput *a, const ModelOutput *b, bool train) {
    double worst = 0;
    for (int h = 0; h < a->nheads; h++)
        for (int l = 0; l <= a->nl; l++) {
            const Tensor *x = l < a->nl ? a->maps[h][l] : train ? NULL : a->pred[h];
            const Tensor *y = l < a->nl ? b->maps[h][l] : train ? NULL : b->pred[h];
            if (!x) continue;
            if (!y || !tensor_same_shape(x, y)) return INFINITY;
            double e = rel_error(y->data, x->data, x->numel);
            worst = e > worst ? e : worst;
        }
    return worst;
}

/* The pruned model computes what the original computes, eval then train mode.
 * "To float rounding" is measured, not assumed: the removed terms are exact
 * zeros, so only the order of the sums changes, and the tolerance is what the
 * original model itself does with an input changed by one float rounding
 * (x * (1 +- 1e-7)). In eval mode that is ~1e-7; in train mode BN divides by
 * batch statistics of a few values at the coarse levels of a 64x64 input (8 per
 * channel at stride 32 for 2 images), which magnifies it up to ~1e-4. */
static void check_same_outputs(Model *orig, Model *pruned, Tensor *x, const char *what) {
    Tensor *xr = tensor_clone(x);
    Rng r;
    rng_seed(&r, 99);
    for (size_t i = 0; xr && i < xr->numel; i++) xr->data[i] *= 1.0f + 1e-7f * rng_range(&r, -1.0f, 1.0f);
    for (int train = 0; xr && train < 2; train++) {
        ModelOutput a, b, c;
        Tape *ta = forward(orig, x, train, &a), *tb = forward(pruned, x, train, &b);
        /* the probe must not move the original's running statistics (both models see the same forwards) */
        Tensor **saved = calloc((size_t)orig->nbuffers, sizeof *saved);
        for (int i = 0; saved && i < orig->nbuffers; i++) saved[i] = tensor_clone(orig->buffers[i].t);
        Tape *tc = forward(orig, xr, train, &c);
        for (int i = 0; saved && i < orig->nbuffers; i++) {
            if (saved[i]) memcpy(orig->buffers[i].t->data, saved[i]->data, saved[i]->numel * sizeof(float));
            tensor_free(saved[i]);
        }
        free(saved);
        CU_ASSERT(ta && tb && tc);
        if (ta && tb && tc) {
            double got = output_diff(&a, &b, train), noise = output_diff(&a, &c, train);
            double tol = fmax(RTOL, 10 * noise);
            if (!(got <= tol))
                fprintf(stderr, "\n  %s %s: pruned differs by %.2e, rounding alone by %.2e", what,
                        train ? "train" : "eval", got, noise);
            CU_ASSERT(got <= tol);
            printf("%s%s %s %.1e (rounding %.1e)", train ? ", " : "; ", what, train ? "train" : "eval", got, noise);
        }
        tape_free(ta);
        tape_free(tb);
        tape_free(tc);
    }
    tensor_free(xr);
}

static Model *prune_dead(const Model *m, PruneStats *st) {
    PruneOptions o;
    prune_options_default(&o);
    o.threshold = 0; /* exactly the dead filters (and what must go with them) */
    o.round = 1;
    Model *p = prune_model(m, &o, st);
    CU_ASSERT_NONNULL_OK(p);
    return p;
}

/* ---- gelan-t ------------------------------------------------------------------------ */

static void test_equivalence_gelan_t(void) {
    if (!shared_available()) return;
    Model *m = golden_model("gelan-t_64");
    Tensor *x = tensor_from_file(golden_path("gelan-t_64", "input.safetensors"), "input");
    CU_ASSERT_NONNULL_OK(m);
    CU_ASSERT_NONNULL_OK(x);
    if (!m || !x) goto done;
    randomize_bn_stats(m, 7, 0.2f);
    /* ELAN1 cv2 (16 filters, read by cv3 and cv4) */
    make_dead(m, "model.2.cv2.conv", 1), make_dead(m, "model.2.cv2.conv", 4), make_dead(m, "model.2.cv2.conv", 9);
    /* RepNCSPELAN4 cv1 (64, chunked in halves of 32): two dead filters in each half */
    make_dead(m, "model.4.cv1.conv", 2), make_dead(m, "model.4.cv1.conv", 7);
    make_dead(m, "model.4.cv1.conv", 33), make_dead(m, "model.4.cv1.conv", 50);
    /* its halves must stay equal: 2 dead in the first half, 1 in the second: one goes from each */
    make_dead(m, "model.6.cv1.conv", 1), make_dead(m, "model.6.cv1.conv", 2), make_dead(m, "model.6.cv1.conv", 50);
    /* RepNCSP's residual stream: cv1 and every bottleneck's cv2 (added to it) */
    const char *res[4] = {"model.4.cv2.0.cv1.conv", "model.4.cv2.0.m.0.cv2.conv", "model.4.cv2.0.m.1.cv2.conv",
                          "model.4.cv2.0.m.2.cv2.conv"};
    for (int k = 0; k < 4; k++) make_dead(m, res[k], 3);
    /* only part of a residual group dead: nothing may go */
    make_dead(m, "model.6.cv3.0.cv1.conv", 5);
    /* RepConvN: both branches */
    make_dead(m, "model.4.cv2.0.m.1.cv1.conv1.conv", 5), make_dead(m, "model.4.cv2.0.m.1.cv1.conv2.conv", 5);
    /* only one branch dead: stays */
    make_dead(m, "model.8.cv3.0.m.0.cv1.conv1.conv", 6);
    /* SPPELAN cv1 (its output is read four times by cv5) */
    make_dead(m, "model.9.cv1.conv", 0), make_dead(m, "model.9.cv1.conv", 10);
    /* a layer output read by AConv 16 and the head (level 0) */
    make_dead(m, "model.15.cv4.conv", 6), make_dead(m, "model.15.cv4.conv", 20), make_dead(m, "model.15.cv4.conv", 21);
    /* AConv read through a Concat */
    make_dead(m, "model.16.cv1.conv", 47);
    /* the head: a class-branch hidden conv, and the box branch whose convs have 4 groups (of 16): one per group */
    make_dead(m, "model.22.cv3.1.0.conv", 100);
    for (int q = 0; q < 4; q++)
        make_dead(m, "model.22.cv2.0.0.conv", 16 * q + 1), make_dead(m, "model.22.cv2.0.1.conv", 16 * q);
    /* a final conv of the head is never pruned */
    make_dead(m, "model.22.cv3.0.2", 3);
    PruneStats st;
    Model *p = prune_dead(m, &st);
    if (!p) goto done;
    const Expect e[] = {
        {"model.2.cv2.conv", 13},
        {"model.4.cv1.conv", 60},
        {"model.6.cv1.conv", 94},
        {"model.4.cv2.0.cv1.conv", 15},
        {"model.4.cv2.0.m.0.cv2.conv", 15},
        {"model.4.cv2.0.m.1.cv2.conv", 15},
        {"model.4.cv2.0.m.2.cv2.conv", 15},
        {"model.4.cv2.0.m.1.cv1.conv1.conv", 15},
        {"model.4.cv2.0.m.1.cv1.conv2.conv", 15},
        {"model.9.cv1.conv", 62},
        {"model.15.cv4.conv", 61},
        {"model.16.cv1.conv", 47},
        {"model.22.cv3.1.0.conv", 127},
        {"model.22.cv2.0.0.conv", 60},
        {"model.22.cv2.0.1.conv", 60},
    };
    check_widths(m, p, e, (int)(sizeof e / sizeof e[0]));
    /* what reads them lost the matching inputs */
    CU_ASSERT_EQUAL(unit(p, "model.2.cv4.conv")->c1, 32 + 13 + 16);
    CU_ASSERT_EQUAL(unit(p, "model.4.cv2.0.cv1.conv")->c1, 30); /* the second half of model.4.cv1 */
    CU_ASSERT_EQUAL(unit(p, "model.4.cv4.conv")->c1, 60 + 32 + 32);
    CU_ASSERT_EQUAL(unit(p, "model.9.cv5.conv")->c1, 4 * 62);
    CU_ASSERT_EQUAL(unit(p, "model.16.cv1.conv")->c1, 61);
    CU_ASSERT_EQUAL(unit(p, "model.22.cv2.0.0.conv")->c1, 61);
    CU_ASSERT_EQUAL(unit(p, "model.22.cv3.0.0.conv")->c1, 61);
    CU_ASSERT_EQUAL(unit(p, "model.18.cv1.conv")->c1, 47 + 96); /* Concat [AConv 16, layer 12] */
    CU_ASSERT_EQUAL(unit(p, "model.22.cv2.0.2")->c1, 60);
    CU_ASSERT_EQUAL(p->layers[15].c_out, 61);
    CU_ASSERT_EQUAL(st.removed, 3 + 4 + 2 + 1 + 1 + 2 + 3 + 1 + 1 + 4 + 4);
    printf("\n    %zu -> %zu parameters", st.params_before, st.params_after);
    check_same_outputs(m, p, x, "gelan-t");
    /* the pruned model's YAML builds on its own */
    Model *q = model_build(p->yaml, "reloaded", NULL);
    CU_ASSERT_NONNULL_OK(q);
    if (q) CU_ASSERT_EQUAL(model_num_params(q), model_num_params(p));
    model_free(q);
    model_free(p);
done:
    model_free(m);
    tensor_free(x);
}

/* ---- a dual model with CBLinear / CBFuse, and the runtime after convert ------------- */

/* convert (drop the aux branch, fuse), build the runtime model, run it on x
 * and compare with want (the original model's main-head eval prediction). */
static void check_runtime(const Model *pruned, const Tensor *x, const Tensor *want) {
    Model *single = convert_single_branch(pruned, "pruned-single");
    CU_ASSERT_NONNULL_OK(single);
    if (!single) return;
    CU_ASSERT_OK(model_fuse(single));
    InferGraph g;
    CU_ASSERT_OK(convert_graph(single, &g));
    InferModel *im = g.text ? infer_model_build(g.text, NULL, convert_graph_lookup, &g) : NULL;
    CU_ASSERT_NONNULL_OK(im);
    if (im) {
        InferShape os;
        const float *y = infer_model_run(im, x->data, tN(x), tC(x), tH(x), tW(x), &os);
        CU_ASSERT_NONNULL_OK(y);
        size_t n = 1;
        for (int d = 0; d < os.ndim; d++) n *= (size_t)os.shape[d];
        CU_ASSERT_EQUAL(n, want->numel);
        if (y && n == want->numel) {
            CU_ASSERT_EQUAL(check_close("runtime", y, want->data, n, 1e-4, 0), 0);
            printf(", runtime %.1e", rel_error(y, want->data, n));
        }
    }
    infer_model_free(im);
    convert_graph_free(&g);
    model_free(single);
}

static void test_equivalence_dual(void) {
    if (!shared_available()) return;
    const char *gcase = "yolov9-c-mini_64";
    Model *m = golden_model(gcase);
    Tensor *x = tensor_from_file(golden_path(gcase, "input.safetensors"), "input");
    CU_ASSERT_NONNULL_OK(m);
    CU_ASSERT_NONNULL_OK(x);
    if (!m || !x) goto done;
    CU_ASSERT_EQUAL(m->head.nheads, 2);
    /* ADown 4 splits layer 3's output (cv4, 64) in halves: one dead filter in each */
    make_dead(m, "model.3.cv4.conv", 0), make_dead(m, "model.3.cv4.conv", 40);
    /* ADown 6 splits layer 5's output (128): two dead in the first half, one in the second: one goes from each */
    make_dead(m, "model.5.cv4.conv", 1), make_dead(m, "model.5.cv4.conv", 2), make_dead(m, "model.5.cv4.conv", 70);
    /* CBFuse 30 sums piece 0 of CBLinear 23, 24, 25 (64 channels each) with ADown 29 (cv1 32 | cv2 32):
     * channel 5 (cv1's 5) and channel 40 (cv2's 8) dead in all four */
    const char *cbl[3] = {"model.23.conv", "model.24.conv", "model.25.conv"};
    for (int k = 0; k < 3; k++) make_dead(m, cbl[k], 5), make_dead(m, cbl[k], 40);
    make_dead(m, "model.29.cv1.conv", 5), make_dead(m, "model.29.cv2.conv", 8);
    /* a piece dead without its partners stays: CBLinear 24's piece 1 (channels 64..191) goes to CBFuse 33 */
    make_dead(m, "model.24.conv", 64 + 3);
    /* the auxiliary backbone, a main-head and an aux-head hidden conv */
    make_dead(m, "model.28.cv2.1.conv", 4);
    make_dead(m, "model.38.cv5.0.1.conv", 9);
    make_dead(m, "model.38.cv3.2.0.conv", 11);
    PruneStats st;
    Model *p = prune_dead(m, &st);
    if (!p) goto done;
    const Expect e[] = {
        {"model.3.cv4.conv", 62},       {"model.5.cv4.conv", 126},   {"model.23.conv", 62},
        {"model.24.conv", 190},         {"model.25.conv", 318},      {"model.29.cv1.conv", 31},
        {"model.29.cv2.conv", 31},      {"model.28.cv2.1.conv", 15}, {"model.38.cv5.0.1.conv", 127},
        {"model.38.cv3.2.0.conv", 127},
    };
    check_widths(m, p, e, (int)(sizeof e / sizeof e[0]));
    CU_ASSERT_EQUAL(unit(p, "model.4.cv1.conv")->c1, 31);
    CU_ASSERT_EQUAL(unit(p, "model.4.cv2.conv")->c1, 31);
    CU_ASSERT_EQUAL(p->layers[30].c_out, 62);
    CU_ASSERT_EQUAL(unit(p, "model.31.cv1.conv")->c1, 62);
    CU_ASSERT_EQUAL(unit(p, "model.6.cv1.conv")->c1, 63);
    CU_ASSERT_EQUAL(st.removed, 2 + 2 + 2 + 1 + 1 + 1);
    printf("\n    %zu -> %zu parameters", st.params_before, st.params_after);
    check_same_outputs(m, p, x, "yolov9-c-mini");
    /* eval pred of the original's main head, after the train forward above updated both models' BN alike */
    ModelOutput o;
    Tape *t = forward(m, x, false, &o);
    if (t) check_runtime(p, x, o.pred[1]);
    tape_free(t);
    model_free(p);
done:
    model_free(m);
    tensor_free(x);
}

/* A triple head: the main head is cv6/cv7; convert moves its pruned widths to cv2/cv3. */
static void test_equivalence_triple(void) {
    if (!shared_available()) return;
    const char *gcase = "yolov9-c-triple-mini_64";
    Model *m = golden_model(gcase);
    Tensor *x = tensor_from_file(golden_path(gcase, "input.safetensors"), "input");
    CU_ASSERT_NONNULL_OK(m);
    CU_ASSERT_NONNULL_OK(x);
    if (!m || !x) goto done;
    CU_ASSERT_EQUAL_FATAL(m->head.nheads, 3);
    int c_main = width(m, "model.53.cv7.0.1.conv"), c_aux = width(m, "model.53.cv3.1.0.conv");
    make_dead(m, "model.53.cv7.0.1.conv", 2);
    make_dead(m, "model.53.cv3.1.0.conv", 5);
    PruneStats st;
    Model *p = prune_dead(m, &st);
    if (!p) goto done;
    const Expect e[] = {{"model.53.cv7.0.1.conv", c_main - 1}, {"model.53.cv3.1.0.conv", c_aux - 1}};
    check_widths(m, p, e, 2);
    printf("\n    %zu -> %zu parameters", st.params_before, st.params_after);
    ModelOutput o;
    Tape *t = forward(m, x, false, &o);
    if (t) check_runtime(p, x, o.pred[2]);
    tape_free(t);
    model_free(p);
done:
    model_free(m);
    tensor_free(x);
}

/* ---- the ShuffleNetV2 variant --------------------------------------------------------- */

static void test_equivalence_shufflenet(void) {
    ModelOptions mo = {0, 11};
    Model *m = model_build_file("configs/models/gelan-c-slim-shufflenet.yaml", &mo);
    CU_ASSERT_NONNULL_OK(m);
    if (!m) return;
    randomize_bn_stats(m, 3, 0.2f);
    Tensor *x = random_image_batch(2, 3, 64, 64, 5);
    /* branch2's first 1x1 conv and the depthwise conv after it (one filter per channel): together */
    make_dead(m, "model.2.branch2.0", 3), make_dead(m, "model.2.branch2.3", 3);
    make_dead(m, "model.2.branch2.0", 9), make_dead(m, "model.2.branch2.3", 9);
    /* a depthwise filter whose input is alive stays, and so does an input whose depthwise filter is alive */
    make_dead(m, "model.2.branch2.3", 20), make_dead(m, "model.2.branch2.0", 21);
    /* the channel shuffle interleaves the branches: filter i of both goes together (unit 8 feeds SPPELAN) */
    make_dead(m, "model.8.branch1.0", 4), make_dead(m, "model.8.branch2.5", 4);
    make_dead(m, "model.8.branch1.0", 7); /* alone: stays */
    /* ... but unit 2's output is split again by ADown 3, where its halves mix both branches: stays */
    make_dead(m, "model.2.branch1.0", 4), make_dead(m, "model.2.branch2.5", 4);
    /* ADown 3's output (cv1 64 | cv2 64) is split in halves by unit 4: as many from each */
    make_dead(m, "model.3.cv1.conv", 1), make_dead(m, "model.3.cv2.conv", 2), make_dead(m, "model.3.cv2.conv", 3);
    PruneStats st;
    Model *p = x ? prune_dead(m, &st) : NULL;
    if (p) {
        const Expect e[] = {{"model.2.branch2.0", 62}, {"model.2.branch2.3", 62},  {"model.3.cv1.conv", 63},
                            {"model.3.cv2.conv", 63},  {"model.8.branch1.0", 127}, {"model.8.branch2.5", 127}};
        check_widths(m, p, e, (int)(sizeof e / sizeof e[0]));
        CU_ASSERT_EQUAL(unit(p, "model.2.branch2.3")->g, 62);
        CU_ASSERT_EQUAL(unit(p, "model.2.branch2.5")->c1, 62);
        CU_ASSERT_EQUAL(unit(p, "model.4.branch1.0")->c1, 63);
        CU_ASSERT_EQUAL(unit(p, "model.9.cv1.conv")->c1, 254);
        CU_ASSERT_EQUAL(p->layers[8].c_out, 254);
        printf("\n    %zu -> %zu parameters", st.params_before, st.params_after);
        check_same_outputs(m, p, x, "shufflenet");
    }
    model_free(p);
    model_free(m);
    tensor_free(x);
}

/* ---- importance -------------------------------------------------------------------- */

static void test_importance(void) {
    if (!shared_available()) return;
    Model *m = golden_model("gelan-t_64");
    CU_ASSERT_NONNULL_OK(m);
    if (!m) return;
    ImportanceRow *r = NULL;
    int n = 0;
    /* per conv, L2 of the whole weight; all convs but the DFL; lowest first */
    CU_ASSERT_OK(prune_importance(m, false, PRUNE_L2, NULL, &r, &n));
    CU_ASSERT_EQUAL(n, m->nunits - 1);
    bool seed_path = false;
    for (int i = 0; i < n; i++) {
        const ConvUnit *u = m->units[r[i].unit];
        double s = 0;
        for (size_t k = 0; k < u->weight->numel; k++) s += (double)u->weight->data[k] * u->weight->data[k];
        CU_ASSERT(fabs(r[i].value - sqrt(s)) <= 1e-12 * sqrt(s));
        if (i) CU_ASSERT(r[i].value >= r[i - 1].value);
        char want[200];
        size_t len = strlen(u->name);
        if (len > 5 && !strcmp(u->name + len - 5, ".conv"))
            snprintf(want, sizeof want, "%.*s", (int)(len - 5), u->name);
        else
            snprintf(want, sizeof want, "%s", u->name);
        CU_ASSERT_STRING_EQUAL(r[i].module, want);
        seed_path |= !strcmp(r[i].module, "model.21.cv2.0.m.0.cv1.conv2"); /* the seed's first row */
    }
    CU_ASSERT(seed_path);
    free(r);
    /* per filter, L1, within a module path */
    CU_ASSERT_OK(prune_importance(m, true, PRUNE_L1, "model.15.cv2", &r, &n));
    int want_n = 0;
    for (int i = 0; i < m->nunits; i++)
        if (!strncmp(m->units[i]->name, "model.15.cv2.", 13)) want_n += m->units[i]->c2;
    CU_ASSERT_EQUAL(n, want_n);
    for (int i = 0; i < n; i++) {
        const ConvUnit *u = m->units[r[i].unit];
        CU_ASSERT(!strncmp(u->name, "model.15.cv2.", 13));
        size_t per = u->weight->numel / (size_t)u->c2;
        double s = 0;
        for (size_t k = 0; k < per; k++) s += fabs((double)u->weight->data[(size_t)r[i].filter * per + k]);
        CU_ASSERT(fabs(r[i].value - s) <= 1e-12 * s);
        if (i) CU_ASSERT(r[i].value >= r[i - 1].value);
    }
    free(r);
    /* per filter, |BN gamma|, within a module type (perturbed so that the values differ) */
    randomize_bn_stats(m, 1, 0.2f);
    CU_ASSERT_OK(prune_importance(m, true, PRUNE_BN, "RepNCSPELAN4", &r, &n));
    want_n = 0;
    for (int i = 0; i < m->nunits; i++)
        if (!strcmp(m->layers[atoi(m->units[i]->name + 6)].module, "RepNCSPELAN4")) want_n += m->units[i]->c2;
    CU_ASSERT_EQUAL(n, want_n);
    for (int i = 0; i < n; i++) {
        const ConvUnit *u = m->units[r[i].unit];
        CU_ASSERT_EQUAL(r[i].value, fabs((double)u->bn_weight->data[r[i].filter]));
        if (i) CU_ASSERT(r[i].value >= r[i - 1].value);
    }
    free(r);
    /* a layer index; and nothing matched is an error */
    CU_ASSERT_OK(prune_importance(m, false, PRUNE_L2, "9", &r, &n));
    CU_ASSERT_EQUAL(n, 2); /* SPPELAN: cv1, cv5 */
    free(r);
    CU_ASSERT_EQUAL(prune_importance(m, false, PRUNE_L2, "model.99", &r, &n), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "model.99"));
    CU_ASSERT_EQUAL(prune_importance(m, false, PRUNE_L2, "23", &r, &n), -1);
    model_free(m);
}

/* ---- ratios, rounding, identity, bad input --------------------------------------------- */

static bool same_tensors(const Model *a, const Model *b) {
    /* the YAML is regenerated (its comments differ); the tensors must be the same */
    for (int i = 0; i < a->nparams + a->nbuffers; i++) {
        const char *name = i < a->nparams ? a->params[i].name : a->buffers[i - a->nparams].name;
        const Tensor *x = i < a->nparams ? a->params[i].t : a->buffers[i - a->nparams].t;
        const Tensor *y = model_tensor(b, name);
        if (!y || !tensor_same_shape(x, y) || memcmp(x->data, y->data, x->numel * sizeof(float))) return false;
    }
    return a->nparams == b->nparams && a->nbuffers == b->nbuffers;
}

static void test_identity(void) {
    if (!shared_available()) return;
    Model *m = golden_model("gelan-t_64");
    CU_ASSERT_NONNULL_OK(m);
    if (!m) return;
    for (int scope = 0; scope < 2; scope++) {
        PruneOptions o;
        prune_options_default(&o);
        o.ratio = 0;
        o.global = scope;
        PruneStats st;
        Model *p = prune_model(m, &o, &st);
        CU_ASSERT_NONNULL_OK(p);
        if (!p) continue;
        CU_ASSERT_EQUAL(st.removed, 0);
        CU_ASSERT(same_tensors(m, p));
        CU_ASSERT(same_tensors(p, m));
        CU_ASSERT_PTR_NULL(strstr(p->yaml, "[['")); /* no width overrides */
        model_free(p);
    }
    model_free(m);
}

static void check_rounded(const Model *m, const Model *p, int R) {
    for (int i = 0; i < m->nunits; i++) {
        int a = m->units[i]->c2, b = p->units[i]->c2;
        if (a != b) {
            CU_ASSERT(b % R == 0 && b >= R && b < a);
            if (b % R || b < R || b >= a) fprintf(stderr, "\n  %s: %d -> %d", m->units[i]->name, a, b);
        }
    }
    /* the head's outputs and the DFL never change */
    const Detect *d = p->detect;
    for (int h = 0; h < d->nheads; h++)
        for (int l = 0; l < d->nl; l++) {
            CU_ASSERT_EQUAL(d->box[h][l][2]->c2, 4 * d->reg_max);
            CU_ASSERT_EQUAL(d->cls[h][l][2]->c2, d->nc);
        }
}

static void test_ratio_and_rounding(void) {
    if (!shared_available()) return;
    Model *m = golden_model("gelan-t_64");
    Tensor *x = tensor_from_file(golden_path("gelan-t_64", "input.safetensors"), "input");
    CU_ASSERT_NONNULL_OK(m);
    if (!m || !x) goto done;
    size_t last = model_num_params(m);
    const double ratios[3] = {0.25, 0.5, 0.75};
    for (int scope = 0; scope < 2; scope++) {
        last = model_num_params(m);
        for (int k = 0; k < 3; k++) {
            PruneOptions o;
            prune_options_default(&o);
            o.ratio = ratios[k];
            o.global = scope;
            PruneStats st;
            Model *p = prune_model(m, &o, &st);
            CU_ASSERT_NONNULL_OK(p);
            if (!p) continue;
            check_rounded(m, p, 8);
            CU_ASSERT(model_num_params(p) < last);
            last = model_num_params(p);
            /* about the asked share of the prunable filters goes (rounding to 8 moves it) */
            double share = (double)st.removed / st.channels;
            CU_ASSERT(share > ratios[k] - 0.15 && share < ratios[k] + 0.15);
            printf("%s%s %.2f: %.2f of filters, %zu params", k || scope ? "; " : "\n    ", scope ? "global" : "local",
                   ratios[k], share, model_num_params(p));
            ModelOutput o1;
            Tape *t = forward(p, x, false, &o1);
            CU_ASSERT_PTR_NOT_NULL(t);
            if (t) CU_ASSERT_EQUAL(o1.pred[0]->shape[1], 84);
            tape_free(t);
            model_free(p);
        }
    }
    /* --round 16 */
    PruneOptions o;
    prune_options_default(&o);
    o.ratio = 0.5;
    o.round = 16;
    Model *p = prune_model(m, &o, NULL);
    CU_ASSERT_NONNULL_OK(p);
    if (p) check_rounded(m, p, 16);
    model_free(p);
    /* |BN gamma| and L1 rank differently but obey the same rules */
    o.round = 8;
    for (int nm = 0; nm < 2; nm++) {
        o.norm = nm ? PRUNE_BN : PRUNE_L1;
        p = prune_model(m, &o, NULL);
        CU_ASSERT_NONNULL_OK(p);
        if (p) check_rounded(m, p, 8);
        model_free(p);
    }
done:
    model_free(m);
    tensor_free(x);
}

static void test_exclude_and_errors(void) {
    if (!shared_available()) return;
    Model *m = golden_model("gelan-t_64");
    CU_ASSERT_NONNULL_OK(m);
    if (!m) return;
    PruneOptions o;
    prune_options_default(&o);
    const double bad[3] = {1.0, -0.1, NAN};
    for (int k = 0; k < 3; k++) {
        o.ratio = bad[k];
        CU_ASSERT_PTR_NULL(prune_model(m, &o, NULL));
        CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "[0, 1)"));
    }
    o.ratio = 0.5;
    const char *missing[3] = {"23", "4,model.9.cv9", "nothing"};
    for (int k = 0; k < 3; k++) {
        o.exclude = missing[k];
        CU_ASSERT_PTR_NULL(prune_model(m, &o, NULL));
        CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "--exclude"));
    }
    /* excluded layers and modules keep every filter; their inputs may still shrink */
    o.exclude = "4, model.15.cv4";
    Model *p = prune_model(m, &o, NULL);
    CU_ASSERT_NONNULL_OK(p);
    for (int i = 0; p && i < m->nunits; i++) {
        const char *n = m->units[i]->name;
        if (!strncmp(n, "model.4.", 8) || !strcmp(n, "model.15.cv4.conv"))
            CU_ASSERT_EQUAL(p->units[i]->c2, m->units[i]->c2);
    }
    if (p) CU_ASSERT(model_num_params(p) < model_num_params(m));
    model_free(p);
    /* a fused model cannot be pruned */
    CU_ASSERT_OK(model_fuse(m));
    o.exclude = NULL;
    CU_ASSERT_PTR_NULL(prune_model(m, &o, NULL));
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "fused"));
    model_free(m);
}

/* ---- the YAML extension ------------------------------------------------------------------ */

/* tests/configs/gelan-tiny.yaml with `row` (a substring of one row) replaced by `with`. */
static Model *tiny_with(const char *row, const char *with) {
    char *text = read_text_file("tests/configs/gelan-tiny.yaml");
    if (!text) return NULL;
    char *at = strstr(text, row);
    CU_ASSERT_PTR_NOT_NULL(at);
    Model *m = NULL;
    if (at) {
        size_t n = strlen(text) + strlen(with) + 1;
        char *t2 = malloc(n);
        snprintf(t2, n, "%.*s%s%s", (int)(at - text), text, with, at + strlen(row));
        m = model_build(t2, "tiny-widths.yaml", NULL);
        free(t2);
    }
    free(text);
    return m;
}

static void test_yaml_widths(void) {
    /* a width for the row's Conv itself ('.') and inside blocks; inputs follow */
    Model *m = tiny_with("[-1, 1, Conv, [32, 3, 2]]", "[-1, 1, Conv, [32, 3, 2, [['.', 24]]]]");
    CU_ASSERT_NONNULL_OK(m);
    if (m) {
        CU_ASSERT_EQUAL(width(m, "model.1.conv"), 24);
        CU_ASSERT_EQUAL(unit(m, "model.2.cv1.conv")->c1, 24);
    }
    model_free(m);
    m = tiny_with("[-1, 1, RepNCSPELAN4, [48, 48, 24, 1]],  # 4",
                  "[-1, 1, RepNCSPELAN4, [48, 48, 24, 1, [['cv1', 40], ['cv2.0.cv1', 8], ['cv2.0.m.0.cv1', 4], "
                  "['cv2.1', 16], ['cv4', 40]]]],  # 4");
    CU_ASSERT_NONNULL_OK(m);
    if (m) {
        CU_ASSERT_EQUAL(unit(m, "model.4.cv2.0.cv1.conv")->c1, 20); /* half of cv1 */
        CU_ASSERT_EQUAL(width(m, "model.4.cv2.0.m.0.cv1.conv1.conv"), 4);
        CU_ASSERT_EQUAL(width(m, "model.4.cv2.0.m.0.cv1.conv2.conv"), 4);
        CU_ASSERT_EQUAL(width(m, "model.4.cv2.0.m.0.cv2.conv"), 8); /* tied to cv1 by the residual */
        CU_ASSERT_EQUAL(unit(m, "model.4.cv2.0.cv3.conv")->c1, 8 + 12);
        CU_ASSERT_EQUAL(unit(m, "model.4.cv3.0.cv1.conv")->c1, 16);
        CU_ASSERT_EQUAL(unit(m, "model.4.cv4.conv")->c1, 40 + 16 + 24);
        CU_ASSERT_EQUAL(m->layers[4].c_out, 40);
        CU_ASSERT_EQUAL(unit(m, "model.5.cv1.conv")->c1, 40);
        Tensor *x = tensor_new4(1, 3, 64, 64);
        ModelOutput o;
        Tape *t = x ? forward(m, x, false, &o) : NULL;
        CU_ASSERT_PTR_NOT_NULL(t);
        tape_free(t);
        tensor_free(x);
    }
    model_free(m);
    /* errors: a path that names nothing, a residual or RepConvN whose halves disagree, a key twice */
    const char *bad[4][2] = {
        {"['cv9', 8]", "cv9"},
        {"['cv2.0.cv1', 8], ['cv2.0.m.0.cv2', 12]", "added"},
        {"['cv2.0.m.0.cv1.conv1', 8]", "RepConvN"},
        {"['cv1', 8], ['cv1', 16]", "twice"},
    };
    for (int k = 0; k < 4; k++) {
        char row[256];
        snprintf(row, sizeof row, "[-1, 1, RepNCSPELAN4, [48, 48, 24, 1, [%s]]],  # 4", bad[k][0]);
        m = tiny_with("[-1, 1, RepNCSPELAN4, [48, 48, 24, 1]],  # 4", row);
        CU_ASSERT_PTR_NULL(m);
        if (!m) CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), bad[k][1]));
        if (m) fprintf(stderr, "\n  %s built", bad[k][0]);
        model_free(m);
    }
}

/* ---- the command line ----------------------------------------------------------------------- */

static void test_cli(void) {
    const char *gelan = gelan_bin_path();
    if (access(gelan, X_OK) != 0 || !shared_available()) {
        fprintf(stderr, "\n  no %s or ../shared: skipped\n", gelan);
        return;
    }
    const char *gcase = "gelan-t_64";
    char dir[] = "/tmp/gelan_prune_XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    char out[300], infer[300], cmd[4096], text[8192];
    snprintf(out, sizeof out, "%s/p.safetensors", dir);
    snprintf(infer, sizeof infer, "%s/p-infer.safetensors", dir);
    const char *w = golden_path(gcase, "weights.safetensors"), *cfg = golden_path(gcase, "cfg.yaml");

    /* bad input: a clear error, nothing written */
    snprintf(cmd, sizeof cmd, "%s prune --weights %s --ratio 0.25 --out %s", gelan, w, out);
    CU_ASSERT(run_command_expect(cmd, 1, text, sizeof text));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "--cfg"));
    CU_ASSERT_NOT_EQUAL(access(out, F_OK), 0);
    snprintf(cmd, sizeof cmd, "%s prune --weights %s --cfg %s --ratio 1 --out %s", gelan, w, cfg, out);
    CU_ASSERT(run_command_expect(cmd, 2, text, sizeof text));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "[0, 1)"));
    CU_ASSERT_NOT_EQUAL(access(out, F_OK), 0);
    snprintf(cmd, sizeof cmd, "%s prune --weights %s --cfg %s --ratio 0.5 --exclude 4,99 --out %s", gelan, w, cfg, out);
    CU_ASSERT(run_command_expect(cmd, 1, text, sizeof text));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "layer 99 does not exist"));
    CU_ASSERT_NOT_EQUAL(access(out, F_OK), 0);

    /* prune, then the file works everywhere a checkpoint does */
    snprintf(cmd, sizeof cmd, "%s prune --weights %s --cfg %s --ratio 0.25 --scope local --out %s", gelan, w, cfg, out);
    CU_ASSERT(run_command_expect(cmd, 0, text, sizeof text));
    Model *p = model_load(out, NULL, NULL);
    CU_ASSERT_NONNULL_OK(p);
    if (p) CU_ASSERT(model_num_params(p) < 2442640);
    snprintf(cmd, sizeof cmd, "%s info %s", gelan, out);
    CU_ASSERT(run_command_expect(cmd, 0, text, sizeof text));
    char want[64];
    snprintf(want, sizeof want, "parameters");
    CU_ASSERT_PTR_NOT_NULL(strstr(text, want));
    snprintf(cmd, sizeof cmd, "%s importance --weights %s --by filter --top 3 --csv", gelan, out);
    CU_ASSERT(run_command_expect(cmd, 0, text, sizeof text));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "rank,module,layer,filter,importance\n1,model."));
    snprintf(cmd, sizeof cmd, "%s convert --weights %s --out %s", gelan, out, infer);
    CU_ASSERT(run_command_expect(cmd, 0, text, sizeof text));
    InferModel *im = infer_model_load(infer);
    Tensor *x = tensor_from_file(golden_path(gcase, "input.safetensors"), "input");
    CU_ASSERT_NONNULL_OK(im);
    if (im && p && x) {
        ModelOutput o;
        Tape *t = forward(p, x, false, &o);
        InferShape os;
        const float *y = infer_model_run(im, x->data, tN(x), tC(x), tH(x), tW(x), &os);
        CU_ASSERT_NONNULL_OK(y);
        if (t && y) CU_ASSERT_EQUAL(check_close("cli runtime", y, o.pred[0]->data, o.pred[0]->numel, 1e-4, 0), 0);
        tape_free(t);
    }
    infer_model_free(im);
    tensor_free(x);
    model_free(p);
    remove(out);
    remove(infer);
    rmdir(dir);
}

SUITE_FN(prune) {
    CU_pSuite s = CU_add_suite("prune", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "importance tables = direct computation", test_importance);
    CU_add_test(s, "pruning 0% is the identity", test_identity);
    CU_add_test(s, "dead filters pruned: gelan-t eval/train equal", test_equivalence_gelan_t);
    CU_add_test(s, "dead filters pruned: dual model (CBLinear/CBFuse) + runtime", test_equivalence_dual);
    CU_add_test(s, "dead filters pruned: triple head, runtime after convert", test_equivalence_triple);
    CU_add_test(s, "dead filters pruned: ShuffleNetV2 variant", test_equivalence_shufflenet);
    CU_add_test(s, "ratios, scopes, norms, rounding", test_ratio_and_rounding);
    CU_add_test(s, "--exclude, bad ratios, fused models", test_exclude_and_errors);
    CU_add_test(s, "YAML width overrides", test_yaml_widths);
    CU_add_test(s, "gelan prune / importance / info / convert", test_cli);
    return 0;
}
