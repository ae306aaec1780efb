/* gelan val: the official validation table (val.py) for a checkpoint, or for
 * a COCO-format detections file from any source. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/progress.h"
#include "tensor/error.h"
#include "tensor/pool.h"
#include "train/checkpoint.h"
#include "train/dataset.h"
#include "train/loader.h"
#include "train/validate.h"

static const char *USAGE =
    "gelan val --weights CKPT [--cfg CFG] --data D [--img 640 --batch 32 --conf 0.001 --iou 0.7 --max-det 300 "
    "--save-json FILE --verbose]\n       gelan val --detections FILE.json --data D [--verbose]";

/* The official table: "%22s" + "%11s" * 6 header, "%22s%11i%11i%11.3g * 4" rows. */
static void print_table(const MapResult *r, const Dataset *ds, bool per_class) {
    printf("%22s%11s%11s%11s%11s%11s%11s\n", "Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95");
    printf("%22s%11i%11i%11.3g%11.3g%11.3g%11.3g\n", "all", r->images, r->instances, r->mp, r->mr, r->map50,
           r->map50_95);
    if (r->instances == 0) fprintf(stderr, "warning: no labels found in the val set, can not compute metrics\n");
    if (!per_class || ds->nc <= 1) return;
    for (int i = 0; i < r->nclasses; i++) {
        const ClassMetrics *c = &r->per_class[i];
        const char *name = c->cls >= 0 && c->cls < ds->nc ? ds->names[c->cls] : "?";
        printf("%22s%11i%11i%11.3g%11.3g%11.3g%11.3g\n", name, r->images, c->instances, c->p, c->r, c->ap50,
               c->ap50_95);
    }
}

static void val_progress(void *ctx, long done, long total) {
    Progress *p = ctx;
    if (done <= 0) return; /* progress_begin already ran */
    (void)total;
    progress_update(p, done, NULL);
}

int cmd_val(int argc, char **argv) {
    const char *weights = NULL, *cfg = NULL, *data = NULL, *json = NULL, *detections = NULL;
    int img = 640, batch = 32, max_det = 300, threads = 0, workers = 2;
    float conf = 0.001f, iou = 0.7f;
    bool verbose = false;
    ArgSpec specs[] = {
        {"--weights", ARG_STR, &weights, "CKPT: checkpoint or weights (the EMA weights are used when present)"},
        {"--cfg", ARG_STR, &cfg, "CFG: model YAML for weights that carry none"},
        {"--data", ARG_STR, &data, "D: data set YAML (its val split is scored)"},
        {"--detections", ARG_STR, &detections, "F.json: score COCO-format detections instead of running a model"},
        {"--img", ARG_INT, &img, "N: inference size (default 640)"},
        {"--batch", ARG_INT, &batch, "N: batch size (default 32)"},
        {"--conf", ARG_FLOAT, &conf, "X: confidence threshold (default 0.001)"},
        {"--iou", ARG_FLOAT, &iou, "X: NMS IoU threshold (default 0.7)"},
        {"--max-det", ARG_INT, &max_det, "N: detections per image (default 300)"},
        {"--save-json", ARG_STR, &json, "FILE: write the detections in COCO format"},
        {"--verbose", ARG_FLAG, &verbose, "a row per class also when nc >= 50"},
        {"--threads", ARG_INT, &threads, "N: compute threads (default GELAN_THREADS or all cores)"},
        {"--workers", ARG_INT, &workers, "N: data loader threads (default 2)"},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    int rc = args_parse(argc, argv, USAGE, specs, nspecs, NULL, 0, NULL);
    if (rc) return rc == 1 ? 0 : rc;
    const char *why = NULL;
    if (!data)
        why = "--data is required";
    else if (!weights == !detections)
        why = "give --weights or --detections (one of them)";
    else if (img < 32 || batch < 1 || max_det < 1 || threads < 0 || workers < 0)
        why = "bad --img/--batch/--max-det";
    else if (!(conf >= 0 && conf < 1) || !(iou > 0 && iou <= 1))
        why = "--conf must be in [0, 1), --iou in (0, 1]";
    if (why) {
        fprintf(stderr, "error: %s\n", why);
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    pool_init(threads);
    DataConfig *dc = data_config_load(data);
    Dataset *ds = dc ? dataset_open(dc, SPLIT_VAL) : NULL;
    Model *m = NULL;
    Loader *L = NULL;
    Tape *t = NULL;
    CocoWriter *cw = NULL;
    MapResult res = {0};
    rc = ds ? 0 : -1;
    double t0 = progress_now();
    if (!rc && detections) {
        rc = val_score_detections(detections, ds, &res);
    } else if (!rc) {
        ModelOptions mo = {0};
        m = ckpt_load_eval_model(weights, cfg, &mo);
        if (!m) rc = -1;
        if (!rc && m->nc != ds->nc)
            rc = gelan_error("%s has %d classes but %s has %d: pass weights trained on this data set", weights, m->nc,
                             data, ds->nc);
        int gs = 32;
        for (int l = 0; !rc && l < m->head.nl; l++)
            if (m->head.strides[l] > gs) gs = (int)m->head.strides[l];
        if (!rc && img % gs) {
            int fixed = (img + gs - 1) / gs * gs;
            fprintf(stderr, "warning: --img %d must be a multiple of max stride %d, updating to %d\n", img, gs, fixed);
            img = fixed;
        }
        LoaderOptions lo;
        loader_options_default(&lo, false);
        lo.img_size = img, lo.batch = batch, lo.workers = workers, lo.stride = gs;
        if (!rc && !(L = loader_new(ds, &lo))) rc = -1;
        if (!rc && !(t = tape_new())) rc = -1;
        if (!rc && json && !(cw = coco_writer_new())) rc = -1;
        if (!rc) {
            Progress bar;
            progress_begin(&bar, stderr, "validating", ds->n);
            ValRun v = {.json = cw, .progress = val_progress, .ctx = &bar};
            val_options_default(&v.opt);
            v.opt.conf = conf, v.opt.iou = iou, v.opt.max_det = max_det;
            rc = validate_dataset(m, t, L, ds, &v, &res);
            if (!rc) progress_end(&bar, NULL);
        }
        if (!rc && cw) rc = coco_writer_save(cw, json);
    }
    if (!rc) {
        print_table(&res, ds, verbose || ds->nc < 50);
        printf("%.1f ms per image (%d images)\n", 1e3 * (progress_now() - t0) / (ds->n ? ds->n : 1), ds->n);
        if (json) printf("detections written to %s\n", json);
    }
    map_result_free(&res);
    coco_writer_free(cw);
    tape_free(t);
    loader_free(L);
    model_free(m);
    dataset_free(ds);
    data_config_free(dc);
    pool_shutdown();
    return rc ? cli_fail("val") : 0;
}
