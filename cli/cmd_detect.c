/* gelan detect: boxes on images with a checkpoint's (EMA) weights, as the
 * official detect.py: letterbox to --img with stride padding, the main head,
 * NMS (conf 0.25, IoU 0.45, best class per box, at most 1000), boxes back to
 * the original pixels; one line per box and annotated images. With --model
 * instead, an inference model (gelan convert) on the standalone runtime: what
 * gelan-infer detect does, by the same code (infer/cli/detect.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "infer/cli/tools.h"
#include "tensor/error.h"
#include "tensor/pool.h"
#include "train/checkpoint.h"
#include "train/dataset.h"
#include "train/image.h"
#include "train/validate.h"

static const char *USAGE =
    "gelan detect --weights CKPT [--cfg CFG] (--source FILE|DIR | --data D [--count N]) [options]\n"
    "       gelan detect --model M --source FILE|DIR [options]   (an inference model, as gelan-infer detect)";

/* The images of a file or a directory (image_files), an error when there is none. */
static char **list_sources(const char *source, int *n) {
    char **v = image_files(source, n);
    if (!v) {
        gelan_error("%s: %s", source, strerror(errno));
    } else if (!*n) {
        free(v);
        v = NULL;
        gelan_error("%s holds no image (.jpg, .jpeg, .png, .bmp, ...)", source);
    }
    return v;
}

/* One image: letterbox, forward, NMS, boxes to original pixels. */
static int detect_one(Model *m, Tape *t, const Image *im, int img, int stride, const ValOptions *vo, InferBox *dets,
                      int *nd) {
    Image lb = {0};
    LetterboxInfo info;
    int rc = image_letterbox(im, &lb, img, img, true, true, stride, &info);
    Tensor *x = rc ? NULL : tape_tensor4(t, 1, 3, lb.h, lb.w);
    if (!x) rc = -1;
    if (!rc) {
        const size_t plane = (size_t)lb.w * lb.h;
        for (size_t p = 0; p < plane; p++)
            for (int c = 0; c < 3; c++) x->data[c * plane + p] = lb.data[3 * p + c] / 255.f;
        ModelOutput o;
        rc = model_forward(m, t, x, false, &o);
        if (!rc) {
            const Tensor *pred = o.pred[o.nheads - 1];
            /* scale_boxes without ratio_pad: gain and padding from the two shapes */
            Letterbox g = {.src_w = im->w, .src_h = im->h, .out_w = lb.w, .out_h = lb.h};
            g.gain = (float)lb.h / im->h < (float)lb.w / im->w ? (float)lb.h / im->h : (float)lb.w / im->w;
            g.pad_x = (lb.w - im->w * g.gain) / 2, g.pad_y = (lb.h - im->h * g.gain) / 2;
            *nd = val_image_detections(pred->data, m->head.nc, pred->shape[2], &g, vo, dets);
            if (*nd < 0) rc = -1;
        }
    }
    tape_reset(t);
    image_free(&lb);
    return rc;
}

/* --model: the inference model on the runtime, printing what gelan-infer detect prints. */
static int detect_with_model(const char *model, const InferDetectOptions *o, int threads) {
    if (pool_init(threads)) return cli_fail("detect");
    int rc = infer_detect_run("gelan detect", model, o);
    pool_shutdown();
    return rc;
}

int cmd_detect(int argc, char **argv) {
    const char *weights = NULL, *model = NULL, *cfg = NULL, *source = NULL, *data = NULL, *out = "runs/detect";
    int img = 640, max_det = 1000, threads = 0, count = -1; /* -1: not given */
    float conf = 0.25f, iou = 0.45f;
    ArgSpec specs[] = {
        {"--weights", ARG_STR, &weights, "CKPT: checkpoint or weights (the EMA weights are used when present)"},
        {"--model", ARG_STR, &model, "M: instead of --weights, an inference model (gelan convert's output)"},
        {"--cfg", ARG_STR, &cfg, "CFG: model YAML for weights that carry none"},
        {"--source", ARG_STR, &source, "FILE|DIR: an image or a directory of images"},
        {"--data", ARG_STR, &data, "D: instead of --source, the first --count images of a data set's val split"},
        {"--count", ARG_INT, &count, "N: images taken with --data (default 8)"},
        {"--out", ARG_STR, &out, "DIR: where annotated images go (default runs/detect)"},
        {"--conf", ARG_FLOAT, &conf, "X: confidence threshold (default 0.25)"},
        {"--iou", ARG_FLOAT, &iou, "X: NMS IoU threshold (default 0.45)"},
        {"--img", ARG_INT, &img, "N: inference size (default 640)"},
        {"--max-det", ARG_INT, &max_det, "N: boxes per image (default 1000)"},
        {"--threads", ARG_INT, &threads, "N: compute threads (default GELAN_THREADS or all cores)"},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    int rc = args_parse(argc, argv, USAGE, specs, nspecs, NULL, 0, NULL);
    if (rc) return rc == 1 ? 0 : rc;
    InferDetectOptions mo = {.source = source, .out = out, .conf = conf, .iou = iou, .img = img, .max_det = max_det};
    const char *why = NULL;
    if (!weights == !model)
        why = "one of --weights and --model is required";
    else if (threads < 0)
        why = "--threads must be >= 0";
    else if (model)
        why = cfg || data || count != -1 ? "--cfg, --data and --count go with --weights; --model takes --source"
                                         : infer_detect_check(&mo);
    else if (!source == !data)
        why = "--weights needs one of --source and --data";
    else if (img < 32 || max_det < 1 || count == 0 || count < -1)
        why = "bad --img, --max-det or --count";
    else if (!(conf >= 0 && conf < 1) || !(iou > 0 && iou <= 1))
        why = "--conf must be in [0, 1), --iou in (0, 1]";
    if (why) {
        fprintf(stderr, "error: %s\n", why);
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    if (model) return detect_with_model(model, &mo, threads);
    if (count == -1) count = 8;
    pool_init(threads);
    int nsrc = 0, nnames = 0;
    char **src = NULL, **names = NULL;
    DataConfig *dc = NULL;
    Dataset *ds = NULL;
    if (source) {
        src = list_sources(source, &nsrc);
    } else if ((dc = data_config_load(data)) && (ds = dataset_open(dc, SPLIT_VAL))) {
        /* the images by index; synthetic ones (no file) are named val_NNNN.png */
        nsrc = count < ds->n ? count : ds->n;
        src = calloc((size_t)nsrc, sizeof *src);
        for (int i = 0; src && i < nsrc; i++) {
            char name[32];
            snprintf(name, sizeof name, "val_%04d.png", i);
            src[i] = strdup(ds->items[i].path ? ds->items[i].path : name);
        }
    }
    Model *m = src ? ckpt_load_eval_model(weights, cfg, NULL) : NULL;
    Tape *t = m ? tape_new() : NULL;
    InferBox *dets = malloc((size_t)max_det * sizeof *dets);
    rc = t && dets ? make_dirs(out) : -1;
    if (rc && t && dets) gelan_error("cannot create %s (%s)", out, strerror(errno));
    if (!rc) {
        Checkpoint *ck = ckpt_open(weights);
        const char *nj = ck ? ckpt_meta(ck, "names") : NULL;
        if (nj) names = names_from_json(nj, &nnames);
        ckpt_close(ck);
    }
    int stride = 32;
    for (int l = 0; m && l < m->head.nl; l++)
        if (m->head.strides[l] > stride) stride = (int)m->head.strides[l];
    if (!rc && img % stride) img = (img + stride - 1) / stride * stride;
    ValOptions vo = {.conf = conf, .iou = iou, .max_det = max_det, .multi_label = false, .agnostic = false};
    long total = 0;
    for (int i = 0; !rc && i < nsrc; i++) {
        Image im = {0};
        int nd = 0;
        if (ds ? dataset_load_image(ds, i, &im) : image_load(&im, src[i])) {
            fprintf(stderr, "warning: %s\n", gelan_last_error());
            continue;
        }
        rc = detect_one(m, t, &im, img, stride, &vo, dets, &nd);
        for (int k = 0; !rc && k < nd; k++) {
            char cname[32], label[96];
            const char *name = dets[k].cls < nnames ? names[dets[k].cls] : NULL;
            if (!name) snprintf(cname, sizeof cname, "class%d", dets[k].cls), name = cname;
            printf("%s %s %.3f %.1f %.1f %.1f %.1f\n", src[i], name, dets[k].score, dets[k].x1, dets[k].y1, dets[k].x2,
                   dets[k].y2);
            snprintf(label, sizeof label, "%s %.2f", name, dets[k].score);
            uint8_t rgb[3];
            class_color(dets[k].cls, rgb);
            int thick = (im.w + im.h) / 600 > 1 ? (im.w + im.h) / 600 : 1;
            image_draw_box_label(&im, dets[k].x1, dets[k].y1, dets[k].x2, dets[k].y2, label, rgb, thick);
        }
        total += nd;
        if (!rc) {
            const char *base = strrchr(src[i], '/');
            char path[2048];
            snprintf(path, sizeof path, "%s/%s", out, base ? base + 1 : src[i]);
            rc = image_save(&im, path);
        }
        image_free(&im);
    }
    if (!rc) fprintf(stderr, "%ld boxes on %d images; annotated images in %s/\n", total, nsrc, out);
    for (int i = 0; src && i < nsrc; i++) free(src[i]);
    free(src);
    dataset_free(ds);
    data_config_free(dc);
    names_free(names, nnames);
    free(dets);
    tape_free(t);
    model_free(m);
    pool_shutdown();
    return rc ? cli_fail("detect") : 0;
}
