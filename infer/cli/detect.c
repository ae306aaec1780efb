/* gelan-infer detect and gelan detect --model: the official detect.py pipeline
 * on the runtime (letterbox, run, NMS, boxes scaled back to the image),
 * printing the boxes and writing annotated copies. */
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

#include "infer/cli/draw.h"
#include "infer/cli/tools.h"
#include "infer/infer.h"
#include "tensor/error.h"

InferDetectOptions infer_detect_defaults(void) {
    return (InferDetectOptions){.out = "runs/detect", .conf = 0.25f, .iou = 0.45f, .img = 640, .max_det = 1000};
}

const char *infer_detect_check(const InferDetectOptions *o) {
    if (!o->source) return "--source is required";
    if (o->img < 32 || o->max_det < 1) return "needs --img >= 32 and --max-det >= 1";
    if (!(o->conf >= 0 && o->conf <= 1) || !(o->iou >= 0 && o->iou <= 1)) return "--conf and --iou must be in [0, 1]";
    return NULL;
}

static const char *const IMAGE_EXT[] = {".jpg", ".jpeg", ".png", ".bmp", ".tga",
                                        ".gif", ".pnm",  ".ppm", ".pgm", ".psd"};

static int is_image(const char *name) {
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof IMAGE_EXT / sizeof *IMAGE_EXT; i++)
        if (!strcasecmp(dot, IMAGE_EXT[i])) return 1;
    return 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

char **image_files(const char *src, int *count) {
    struct stat sb;
    *count = 0;
    if (stat(src, &sb)) return NULL;
    char **list = NULL;
    if (!S_ISDIR(sb.st_mode)) {
        list = malloc(sizeof *list);
        if (list && (list[0] = strdup(src))) *count = 1;
        return list;
    }
    DIR *d = opendir(src);
    if (!d) return NULL;
    int cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!is_image(e->d_name)) continue;
        if (*count == cap) {
            char **grown = realloc(list, sizeof *list * (size_t)(cap = cap ? 2 * cap : 16));
            if (!grown) break;
            list = grown;
        }
        size_t len = strlen(src) + strlen(e->d_name) + 2;
        if (!(list[*count] = malloc(len))) break;
        snprintf(list[(*count)++], len, "%s/%s", src, e->d_name);
    }
    closedir(d);
    if (list) qsort(list, (size_t)*count, sizeof *list, by_name);
    if (!list) list = malloc(sizeof *list); /* an empty directory: empty list, not an error */
    return list;
}

int make_dirs(const char *path) {
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

static void annotate(RgbImage *im, const InferBox *boxes, int n, const InferModel *m) {
    int thick = (int)lroundf((im->w + im->h) / 2.f * 0.003f);
    if (thick < 2) thick = 2;
    int scale = thick; /* font pixels */
    for (int i = 0; i < n; i++) {
        const InferBox *b = &boxes[i];
        const unsigned char *col = draw_class_color(b->cls);
        int x1 = (int)b->x1, y1 = (int)b->y1, x2 = (int)b->x2, y2 = (int)b->y2;
        draw_box(im, x1, y1, x2, y2, col, thick);
        char label[96];
        const char *name = infer_model_class_name(m, b->cls);
        if (name)
            snprintf(label, sizeof label, "%s %.2f", name, b->score);
        else
            snprintf(label, sizeof label, "%d %.2f", b->cls, b->score);
        int tw = draw_text_width(label, scale) + 2 * scale, th = (DRAW_FONT_H + 2) * scale;
        int ty = y1 - th >= 0 ? y1 - th : y1; /* above the box, or inside when at the top */
        draw_fill(im, x1, ty, x1 + tw, ty + th, col);
        static const unsigned char white[3] = {255, 255, 255};
        draw_text(im, x1 + scale, ty + scale, label, scale, white);
    }
}

/* The annotated copy of image path in out: the same format for .png and .jpg, a PNG
 * next to the name for formats stb cannot write. */
static int write_annotated(const char *prog, const char *out, const char *path, const RgbImage *im) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char dst[1200];
    snprintf(dst, sizeof dst, "%s/%s", out, base);
    const char *dot = strrchr(base, '.');
    int ok;
    if (dot && !strcasecmp(dot, ".png")) {
        ok = stbi_write_png(dst, im->w, im->h, 3, im->px, im->w * 3);
    } else if (dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"))) {
        ok = stbi_write_jpg(dst, im->w, im->h, 3, im->px, 92);
    } else {
        snprintf(dst, sizeof dst, "%s/%s.png", out, base);
        ok = stbi_write_png(dst, im->w, im->h, 3, im->px, im->w * 3);
    }
    if (!ok) fprintf(stderr, "%s: cannot write %s\n", prog, dst);
    return ok ? 0 : 1;
}

/* One image: letterbox, run, NMS, boxes to the image; prints them and writes the copy. */
static int detect_one(const char *prog, InferModel *m, const char *path, const InferDetectOptions *o, InferBox *boxes) {
    int w, h, comp, nc = infer_model_detect_nc(m);
    unsigned char *px = stbi_load(path, &w, &h, &comp, 3);
    if (!px) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, stbi_failure_reason());
        return 1;
    }
    Letterbox lb;
    infer_letterbox_geometry(w, h, o->img, (int)infer_model_max_stride(m), 1, &lb);
    float *x = malloc(sizeof(float) * 3 * lb.out_w * lb.out_h);
    InferShape os;
    const float *pred = NULL;
    if (x) {
        infer_letterbox(px, &lb, x);
        pred = infer_model_run(m, x, 1, 3, lb.out_h, lb.out_w, &os);
    }
    int n = pred ? infer_nms(pred, nc, os.shape[2], o->conf, o->iou, o->max_det, 0, 0, boxes) : -1;
    int rc = 1;
    if (n < 0) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, pred || !x ? "out of memory" : gelan_last_error());
    } else {
        infer_scale_boxes(&lb, boxes, n);
        printf("%s: %dx%d (%dx%d input), %d box%s\n", path, w, h, lb.out_w, lb.out_h, n, n == 1 ? "" : "es");
        for (int b = 0; b < n; b++) {
            const char *name = infer_model_class_name(m, boxes[b].cls);
            char num[16];
            snprintf(num, sizeof num, "%d", boxes[b].cls); /* models without names */
            printf("  %-14s %.3f  %7.1f %7.1f %7.1f %7.1f\n", name ? name : num, boxes[b].score, boxes[b].x1,
                   boxes[b].y1, boxes[b].x2, boxes[b].y2);
        }
        RgbImage im = {px, w, h};
        annotate(&im, boxes, n, m);
        rc = write_annotated(prog, o->out, path, &im);
    }
    free(x);
    stbi_image_free(px);
    return rc;
}

int infer_detect_run(const char *prog, const char *model, const InferDetectOptions *o) {
    int nsrc;
    char **srcs = image_files(o->source, &nsrc);
    if (!srcs) {
        fprintf(stderr, "%s: cannot read %s: %s\n", prog, o->source, strerror(errno));
        return 1;
    }
    InferModel *m = infer_model_load(model);
    InferBox *boxes = malloc(sizeof *boxes * (size_t)o->max_det);
    int rc = 1;
    if (!m)
        fprintf(stderr, "%s: %s\n", prog, gelan_last_error());
    else if (infer_model_detect_nc(m) < 0)
        fprintf(stderr, "%s: %s has no detect node\n", prog, model);
    else if (make_dirs(o->out))
        fprintf(stderr, "%s: cannot create %s: %s\n", prog, o->out, strerror(errno));
    else if (!boxes)
        fprintf(stderr, "%s: out of memory\n", prog);
    else
        rc = 0;
    for (int i = 0; rc == 0 && i < nsrc; i++) rc = detect_one(prog, m, srcs[i], o, boxes);
    if (rc == 0) printf("%d image%s, annotated copies in %s\n", nsrc, nsrc == 1 ? "" : "s", o->out);
    for (int i = 0; i < nsrc; i++) free(srcs[i]);
    free(srcs);
    free(boxes);
    infer_model_free(m);
    return rc;
}
