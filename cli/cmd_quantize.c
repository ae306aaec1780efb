/* gelan quantize: post-training quantization. Calibrates the activation ranges
 * of a float checkpoint on a folder of images (no labels), prints a per-layer
 * report, refuses a degenerate calibration (nn/calibrate.h) and writes a
 * quantized weights file (model.* + qat.*; `gelan convert` turns it into an int8
 * inference model). With --data it also validates the float and the quantized
 * model side by side. docs/QUANTIZATION.md. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/progress.h"
#include "infer/cli/tools.h"
#include "train/checkpoint.h" /* first: see its note on nn/model.h */
#include "nn/calibrate.h"
#include "nn/quant.h"
#include "tensor/error.h"
#include "tensor/pool.h"
#include "train/dataset.h"
#include "train/image.h"
#include "train/loader.h"
#include "train/validate.h"

static const char *USAGE =
    "gelan quantize --weights W [--cfg CFG] --calib DIR|D.yaml --out M [--method minmax|percentile|kl] [--percentile "
    "99.99] "
    "[--exclude L,...] [--img 640] [--max-images 128] [--batch 1] [--check 2] [--force] [--data D.yaml]";

/* ---- the calibration images ------------------------------------------------------------- */

/* The images of dir (image_files), sorted by name; NULL + error when there are none. */
static char **list_images(const char *dir, int *n) {
    char **v = image_files(dir, n);
    if (!v) {
        gelan_error("%s: cannot open the calibration folder (%s)", dir, strerror(errno));
    } else if (!*n) {
        free(v);
        v = NULL;
        gelan_error("%s holds no image (.jpg, .jpeg, .png, .bmp, ...)", dir);
    }
    return v;
}

typedef struct {
    char **paths;   /* a folder's images, or */
    DataConfig *dc; /* a data set's train split (labels unused) */
    Dataset *ds;
    int n, batch, img;
    Tensor *x; /* the current batch */
    Image im, lb;
    Progress bar;
    const char *stage;
} Calib;

/* Batch i: letterboxed to img x img (grey 114 borders, as validation), RGB in [0, 1]. */
static int load_batch(void *ctx, int i, Tensor **out) {
    Calib *c = ctx;
    int first = i * c->batch, count = c->n - first < c->batch ? c->n - first : c->batch;
    if (count <= 0) return gelan_error("calibration batch %d is past the %d images", i, c->n);
    if (!c->x || tN(c->x) != count) {
        tensor_free(c->x);
        if (!(c->x = tensor_new4(count, 3, c->img, c->img))) return -1;
    }
    const size_t plane = (size_t)c->img * c->img;
    for (int k = 0; k < count; k++) {
        LetterboxInfo info;
        int rc = c->ds ? dataset_load_image(c->ds, first + k, &c->im) : image_load(&c->im, c->paths[first + k]);
        if (rc || image_letterbox(&c->im, &c->lb, c->img, c->img, false, true, 32, &info)) return -1;
        float *dst = c->x->data + (size_t)k * 3 * plane;
        for (size_t p = 0; p < plane; p++)
            for (int ch = 0; ch < 3; ch++) dst[ch * plane + p] = c->lb.data[3 * p + ch] / 255.f;
    }
    *out = c->x;
    return 0;
}

static void calib_progress(void *ctx, const char *stage, int done, int total) {
    Calib *c = ctx;
    if (c->stage != stage) {
        if (c->stage) progress_end(&c->bar, NULL);
        char prefix[64];
        snprintf(prefix, sizeof prefix, "calibration: %s", stage);
        progress_begin(&c->bar, stderr, prefix, total);
        c->stage = stage;
    }
    progress_update(&c->bar, done, NULL);
}

/* ---- the report --------------------------------------------------------------------------- */

static const char *status_name(CalibStatus s) { return s == CALIB_FAIL ? "FAIL" : s == CALIB_WARN ? "warn" : "ok"; }

static void print_report(const CalibReport *r) {
    printf("\n%5s %-44s %10s %10s %10s %10s %11s %4s %7s  %s\n", "layer", "conv (input quantization)", "min", "max",
           "clip lo", "clip hi", "scale", "zp", "sat%", "status");
    for (int i = 0; i < r->nconvs; i++) {
        const CalibConv *c = &r->convs[i];
        printf("%5d %-44s %10.4g %10.4g %10.4g %10.4g %11.4g %4d %7.3f  %s%s%s\n", c->layer, c->name, c->min, c->max,
               c->lo, c->hi, c->scale, c->zp, 100.0 * c->saturated, status_name(c->status), c->note[0] ? ": " : "",
               c->note);
    }
    if (r->nouts) {
        printf("\n%-24s %10s %12s  %s   (quantized vs float model)\n", "output", "SQNR dB", "var ratio", "status");
        for (int i = 0; i < r->nouts; i++) {
            const CalibOutput *o = &r->outs[i];
            printf("%-24s %10.2f %12.4f  %s%s%s\n", o->name, o->sqnr_db, o->var_ratio, status_name(o->status),
                   o->note[0] ? ": " : "", o->note);
        }
    }
}

/* ---- validation (--data) ------------------------------------------------------------------ */

static void val_progress(void *ctx, long done, long total) {
    (void)total;
    if (done > 0) progress_update(ctx, done, NULL);
}

static int validate(Model *m, Tape *t, const char *data, int img, MapResult *fp, MapResult *q) {
    DataConfig *dc = data_config_load(data);
    Dataset *ds = dc ? dataset_open(dc, SPLIT_VAL) : NULL;
    Loader *L = NULL;
    int rc = ds ? 0 : -1;
    if (!rc && ds->nc != m->nc) rc = gelan_error("%s has %d classes, the model %d", data, ds->nc, m->nc);
    if (!rc) {
        LoaderOptions lo;
        loader_options_default(&lo, false);
        lo.img_size = img, lo.batch = 8, lo.stride = 32;
        for (int l = 0; l < m->head.nl; l++)
            if (m->head.strides[l] > lo.stride) lo.stride = (int)m->head.strides[l];
        if (!(L = loader_new(ds, &lo))) rc = -1;
    }
    for (int quant = 0; !rc && quant < 2; quant++) {
        model_qat_set_fake_quant(m, quant);
        Progress bar;
        progress_begin(&bar, stderr, quant ? "validating int8 (fake quant)" : "validating fp32", ds->n);
        ValRun v = {.progress = val_progress, .ctx = &bar};
        val_options_default(&v.opt);
        rc = validate_dataset(m, t, L, ds, &v, quant ? q : fp);
        if (!rc) progress_end(&bar, NULL);
    }
    model_qat_set_fake_quant(m, true);
    loader_free(L);
    dataset_free(ds);
    data_config_free(dc);
    return rc;
}

/* Convs that stay float: not quantized, and not a RepConvN branch merged into a quantized conv1. */
static int float_convs(const Model *m) {
    int n = 0;
    for (int i = 0; i < m->nunits; i++) {
        const ConvUnit *u = m->units[i];
        if (u->removed || u->q) continue;
        bool merged = false;
        for (int r = 0; r < m->nreps && !merged; r++)
            merged = !m->reps[r]->fused && m->reps[r]->conv2 == u && m->reps[r]->conv1->q;
        n += !merged;
    }
    return n;
}

/* ---- the command -------------------------------------------------------------------------- */

static char *method_note(const CalibOptions *o, long images, int img) {
    char *s = malloc(160);
    if (!s) return NULL;
    if (o->method == CALIB_PERCENTILE)
        snprintf(s, 160, "ptq method=percentile percentile=%g images=%ld img=%d", o->percentile, images, img);
    else
        snprintf(s, 160, "ptq method=%s images=%ld img=%d", calib_method_name(o->method), images, img);
    return s;
}

int cmd_quantize(int argc, char **argv) {
    const char *weights = NULL, *cfg = NULL, *calib = NULL, *out = NULL, *method = "percentile", *exclude = NULL,
               *data = NULL;
    float percentile = 99.99f;
    int img = 640, max_images = 128, batch = 1, check = 2, threads = 0;
    bool force = false;
    ArgSpec specs[] = {
        {"--weights", ARG_STR, &weights, "W: float checkpoint or weights (the EMA weights when present)"},
        {"--cfg", ARG_STR, &cfg, "CFG: model YAML for weights that carry none"},
        {"--calib", ARG_STR, &calib, "DIR: calibration images (no labels needed), or a data YAML (its train images)"},
        {"--out", ARG_STR, &out, "M: the quantized weights file (model.* + qat.*, written atomically)"},
        {"--method", ARG_STR, &method, "minmax|percentile|kl: activation range method (default percentile)"},
        {"--percentile", ARG_FLOAT, &percentile, "P: for --method percentile (default 99.99)"},
        {"--exclude", ARG_STR, &exclude, "L,...: convs kept float: layer indexes, module prefixes, first, head-out"},
        {"--img", ARG_INT, &img, "N: calibration image size (default 640)"},
        {"--max-images", ARG_INT, &max_images, "N: calibrate on the first N images by name (default 128)"},
        {"--batch", ARG_INT, &batch, "N: images per forward (default 1)"},
        {"--check", ARG_INT, &check, "N: batches for the collapse check (default 2, 0 = none)"},
        {"--force", ARG_FLAG, &force, "write the model even when the calibration is degenerate"},
        {"--data", ARG_STR, &data, "D.yaml: also validate the float and the quantized model on its val split"},
        {"--threads", ARG_INT, &threads, "N: compute threads (default GELAN_THREADS or all cores)"},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    int rc = args_parse(argc, argv, USAGE, specs, nspecs, NULL, 0, NULL);
    if (rc) return rc == 1 ? 0 : rc;
    CalibOptions co;
    calib_options_default(&co);
    const char *why = NULL;
    if (!weights || !calib || !out)
        why = "give --weights, --calib and --out";
    else if (calib_method_parse(method, &co.method))
        why = gelan_last_error();
    else if (!(percentile > 50.f && percentile <= 100.f))
        why = "--percentile must be in (50, 100]";
    else if (img < 32 || img % 32 || max_images < 1 || batch < 1 || check < 0 || threads < 0)
        why = "bad --img (a multiple of 32), --max-images, --batch, --check or --threads";
    if (why) {
        fprintf(stderr, "error: %s\n", why);
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    co.percentile = percentile;
    co.check_batches = check;
    co.force = force;

    /* --exclude a,b,c */
    char *exbuf = exclude ? strdup(exclude) : NULL;
    const char *ex[64];
    int nex = 0;
    for (char *tok = exbuf ? strtok(exbuf, ",") : NULL; tok && nex < 64; tok = strtok(NULL, ",")) {
        while (isspace((unsigned char)*tok)) tok++;
        if (*tok) ex[nex++] = tok;
    }

    pool_init(threads);
    Calib c = {.batch = batch, .img = img};
    Model *m = NULL;
    Tape *t = NULL;
    CalibReport rep = {0};
    MapResult fp = {0}, q = {0};
    char *note = NULL;
    Checkpoint *ck = NULL;
    double t0 = progress_now();
    size_t clen = strlen(calib);
    if (clen > 5 && (!strcmp(calib + clen - 5, ".yaml") || !strcmp(calib + clen - 4, ".yml"))) {
        c.dc = data_config_load(calib);
        rc = c.dc && (c.ds = dataset_open(c.dc, SPLIT_TRAIN)) ? 0 : -1;
        if (!rc) c.n = c.ds->n;
        if (!rc && !c.n) rc = gelan_error("%s: the train split has no image", calib);
    } else {
        rc = (c.paths = list_images(calib, &c.n)) ? 0 : -1;
        for (int i = max_images; !rc && i < c.n; i++) free(c.paths[i]);
    }
    if (!rc && c.n > max_images) c.n = max_images;
    if (!rc) rc = (ck = ckpt_open(weights)) ? 0 : -1;
    if (!rc) rc = (m = ckpt_load_eval_model(weights, cfg, NULL)) ? 0 : -1;
    QatOptions qo;
    qat_options_default(&qo, 1);
    qo.exclude = ex, qo.nexclude = nex;
    if (!rc) rc = model_qat_enable(m, &qo);
    if (!rc) rc = (t = tape_new()) ? 0 : -1;
    if (!rc) {
        printf("%s: %d convs quantized, %d float (the DFL included), calibrating on %d image%s of %s at %d (%s",
               weights, model_qat_count(m), float_convs(m), c.n, c.n > 1 ? "s" : "", calib, img,
               calib_method_name(co.method));
        if (co.method == CALIB_PERCENTILE) printf(" %g", co.percentile);
        printf(")\n");
        fflush(stdout);
        co.progress = calib_progress, co.ctx = &c;
        int nb = (c.n + batch - 1) / batch;
        rc = calibrate_model(m, t, nb, load_batch, &c, &co, &rep);
        if (c.stage) progress_end(&c.bar, NULL);
        if (rep.nconvs) print_report(&rep);
        printf("\n%d convs, %ld images: %d failure%s, %d warning%s (%.1f s)\n", rep.nconvs, rep.images, rep.nfail,
               rep.nfail == 1 ? "" : "s", rep.nwarn, rep.nwarn == 1 ? "" : "s", progress_now() - t0);
    }
    if (!rc && data) {
        rc = validate(m, t, data, img, &fp, &q);
        if (!rc) {
            printf("\n%-28s%11s%11s\n", "model", "mAP50", "mAP50-95");
            printf("%-28s%11.3g%11.3g\n", "fp32", fp.map50, fp.map50_95);
            char label[64];
            snprintf(label, sizeof label, "int8 %s", calib_method_name(co.method));
            if (co.method == CALIB_PERCENTILE) snprintf(label, sizeof label, "int8 percentile %g", co.percentile);
            printf("%-28s%11.3g%11.3g\n", label, q.map50, q.map50_95);
        }
    }
    if (!rc) {
        note = method_note(&co, rep.images, img);
        const char *keys[] = {"names", "quantization", "source", NULL};
        const char *vals[] = {ckpt_meta(ck, "names"), note, weights};
        rc = note ? model_save_quantized(m, out, keys, vals) : gelan_error("out of memory");
        if (!rc) printf("wrote %s (quantized weights: model.* + qat.*)\n", out);
    }
    free(note);
    map_result_free(&fp);
    map_result_free(&q);
    calib_report_free(&rep);
    tensor_free(c.x);
    image_free(&c.im);
    image_free(&c.lb);
    for (int i = 0; c.paths && i < c.n; i++) free(c.paths[i]);
    free(c.paths);
    dataset_free(c.ds);
    data_config_free(c.dc);
    tape_free(t);
    model_free(m);
    ckpt_close(ck);
    free(exbuf);
    pool_shutdown();
    return rc ? cli_fail("quantize") : 0;
}
