/* gelan-infer detect: the official detect.py pipeline on the runtime —
 * letterbox (rectangular, padded to the stride), run, NMS, boxes scaled back
 * to the image — printing the boxes and writing annotated copies. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include "infer/cli/cli.h"
#include "infer/infer.h"
#include "tensor/error.h"
#include "tensor/pool.h"

static const char *const IMAGE_EXT[] = {".jpg", ".jpeg", ".png", ".bmp", ".tga",
                                        ".gif", ".pnm",  ".ppm", ".pgm", ".psd"};

static int is_image(const char *name) {
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof IMAGE_EXT / sizeof *IMAGE_EXT; i++)
        if (!strcasecmp(dot, IMAGE_EXT[i])) return 1;
    return 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The image files of a directory (sorted), or the file itself. */
static char **list_sources(const char *src, int *count) {
    struct stat sb;
    *count = 0;
    if (stat(src, &sb)) return NULL;
    char **list = NULL;
    if (!S_ISDIR(sb.st_mode)) {
        list = malloc(sizeof *list);
        list[0] = strdup(src);
        *count = 1;
        return list;
    }
    DIR *d = opendir(src);
    if (!d) return NULL;
    int cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!is_image(e->d_name)) continue;
        if (*count == cap) list = realloc(list, sizeof *list * (size_t)(cap = cap ? 2 * cap : 16));
        size_t len = strlen(src) + strlen(e->d_name) + 2;
        list[*count] = malloc(len);
        snprintf(list[(*count)++], len, "%s/%s", src, e->d_name);
    }
    closedir(d);
    qsort(list, (size_t)*count, sizeof *list, by_name);
    if (!list) list = malloc(sizeof *list); /* an empty directory: empty list, not an error */
    return list;
}

static int make_dirs(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0755) && errno != EEXIST) return -1;
            if (!c) break;
            *p = c;
        }
    }
    return 0;
}

static void annotate(Image *im, const InferBox *boxes, int n, const InferModel *m) {
    int thick = (int)lroundf((im->w + im->h) / 2.f * 0.003f);
    if (thick < 2) thick = 2;
    int scale = thick; /* font pixels */
    for (int i = 0; i < n; i++) {
        const InferBox *b = &boxes[i];
        const unsigned char *col = class_color(b->cls);
        int x1 = (int)b->x1, y1 = (int)b->y1, x2 = (int)b->x2, y2 = (int)b->y2;
        draw_box(im, x1, y1, x2, y2, col, thick);
        char label[96];
        const char *name = infer_model_class_name(m, b->cls);
        if (name)
            snprintf(label, sizeof label, "%s %.2f", name, b->score);
        else
            snprintf(label, sizeof label, "%d %.2f", b->cls, b->score);
        int tw = text_width(label, scale) + 2 * scale, th = (FONT_H + 2) * scale;
        int ty = y1 - th >= 0 ? y1 - th : y1; /* above the box, or inside when at the top */
        draw_fill(im, x1, ty, x1 + tw, ty + th, col);
        static const unsigned char white[3] = {255, 255, 255};
        draw_text(im, x1 + scale, ty + scale, label, scale, white);
    }
}

int cmd_detect(int argc, char **argv) {
    const char *model = NULL, *source = NULL, *out = "runs/detect";
    float conf = 0.25f, iou = 0.45f;
    int img = 640, max_det = 1000, threads = 0;
    const Opt opts[] = {
        {"--model", OPT_STR, &model, "M: inference model with a detect node"},
        {"--source", OPT_STR, &source, "FILE|DIR: an image, or a directory of images"},
        {"--out", OPT_STR, &out, "DIR: where annotated copies go (default runs/detect)"},
        {"--conf", OPT_FLOAT, &conf, "X: confidence threshold (default 0.25)"},
        {"--iou", OPT_FLOAT, &iou, "X: NMS IoU threshold (default 0.45)"},
        {"--img", OPT_INT, &img, "N: inference size (default 640)"},
        {"--max-det", OPT_INT, &max_det, "N: boxes per image at most (default 1000)"},
        {"--threads", OPT_INT, &threads, "N: threads (default: GELAN_THREADS or all cores)"},
    };
    const char *usage =
        "detect --model M --source FILE|DIR [--out DIR --conf 0.25 --iou 0.45 --img 640 --max-det 1000]";
    int nopt = (int)(sizeof opts / sizeof *opts), rc = opts_parse(argc, argv, usage, opts, nopt);
    if (rc) return rc == 1 ? 0 : rc;
    if (!model || !source) return opts_usage_error(usage, opts, nopt, "detect: --model and --source are required");
    if (img < 32 || max_det < 1 || !(conf >= 0 && conf <= 1) || !(iou >= 0 && iou <= 1))
        return opts_usage_error(usage, opts, nopt,
                                "detect: needs --img >= 32, --max-det >= 1, --conf and --iou in [0,1]");
    int nsrc;
    char **srcs = list_sources(source, &nsrc);
    if (!srcs) {
        fprintf(stderr, "gelan-infer detect: cannot read %s: %s\n", source, strerror(errno));
        return 1;
    }
    if (pool_init(threads)) return fprintf(stderr, "gelan-infer detect: %s\n", gelan_last_error()), 1;
    InferModel *m = infer_model_load(model);
    int nc = m ? infer_model_detect_nc(m) : -1;
    rc = 0;
    if (!m) {
        fprintf(stderr, "gelan-infer detect: %s\n", gelan_last_error());
        rc = 1;
    } else if (nc < 0) {
        fprintf(stderr, "gelan-infer detect: %s has no detect node\n", model);
        rc = 1;
    } else if (make_dirs(out)) {
        fprintf(stderr, "gelan-infer detect: cannot create %s: %s\n", out, strerror(errno));
        rc = 1;
    }
    InferBox *boxes = malloc(sizeof *boxes * (size_t)max_det);
    int stride = m ? (int)infer_model_max_stride(m) : 32;
    for (int i = 0; rc == 0 && i < nsrc; i++) {
        int w, h, comp;
        unsigned char *px = stbi_load(srcs[i], &w, &h, &comp, 3);
        if (!px) {
            fprintf(stderr, "gelan-infer detect: %s: %s\n", srcs[i], stbi_failure_reason());
            rc = 1;
            break;
        }
        Letterbox lb;
        infer_letterbox_geometry(w, h, img, stride, 1, &lb);
        float *x = malloc(sizeof(float) * 3 * lb.out_w * lb.out_h);
        infer_letterbox(px, &lb, x);
        InferShape os;
        const float *pred = infer_model_run(m, x, 1, 3, lb.out_h, lb.out_w, &os);
        int n = pred ? infer_nms(pred, nc, os.shape[2], conf, iou, max_det, 0, 0, boxes) : -1;
        if (n < 0) {
            fprintf(stderr, "gelan-infer detect: %s: %s\n", srcs[i], pred ? "out of memory" : gelan_last_error());
            rc = 1;
        } else {
            infer_scale_boxes(&lb, boxes, n);
            printf("%s: %dx%d (%dx%d input), %d box%s\n", srcs[i], w, h, lb.out_w, lb.out_h, n, n == 1 ? "" : "es");
            for (int b = 0; b < n; b++) {
                const char *name = infer_model_class_name(m, boxes[b].cls);
                char num[16];
                snprintf(num, sizeof num, "%d", boxes[b].cls); /* models without names */
                printf("  %-14s %.3f  %7.1f %7.1f %7.1f %7.1f\n", name ? name : num, boxes[b].score, boxes[b].x1,
                       boxes[b].y1, boxes[b].x2, boxes[b].y2);
            }
            Image im = {px, w, h};
            annotate(&im, boxes, n, m);
            const char *base = strrchr(srcs[i], '/');
            base = base ? base + 1 : srcs[i];
            char path[1200];
            snprintf(path, sizeof path, "%s/%s", out, base);
            const char *dot = strrchr(base, '.');
            int ok;
            if (dot && !strcasecmp(dot, ".png")) {
                ok = stbi_write_png(path, w, h, 3, px, w * 3);
            } else if (dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"))) {
                ok = stbi_write_jpg(path, w, h, 3, px, 92);
            } else { /* formats stb cannot write: a PNG next to the name */
                snprintf(path, sizeof path, "%s/%s.png", out, base);
                ok = stbi_write_png(path, w, h, 3, px, w * 3);
            }
            if (!ok) {
                fprintf(stderr, "gelan-infer detect: cannot write %s\n", path);
                rc = 1;
            }
        }
        free(x);
        stbi_image_free(px);
    }
    if (rc == 0) printf("%d image%s, annotated copies in %s\n", nsrc, nsrc == 1 ? "" : "s", out);
    for (int i = 0; i < nsrc; i++) free(srcs[i]);
    free(srcs);
    free(boxes);
    infer_model_free(m);
    pool_shutdown();
    return rc;
}
