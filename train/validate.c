/* Validation pieces shared by training, `gelan val` and `gelan detect`. */
#include "train/validate.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/yaml_cfg.h"
#include "tensor/error.h"
#include "tensor/json.h"
#include "train/checkpoint.h"
#include "train/dataset.h"
#include "train/loader.h"

void val_options_default(ValOptions *o) {
    *o = (ValOptions){.conf = 0.001f, .iou = 0.7f, .max_det = 300, .multi_label = true, .agnostic = false};
}

int val_image_detections(const float *pred, int nc, int anchors, const Letterbox *lb, const ValOptions *o,
                         InferBox *out) {
    int n = infer_nms(pred, nc, anchors, o->conf, o->iou, o->max_det, o->multi_label, o->agnostic, out);
    if (n < 0) return gelan_error("nms: out of memory (%d anchors, %d classes)", anchors, nc);
    if (lb) infer_scale_boxes(lb, out, n);
    return n;
}

int val_add_image(MapStats *s, const InferBox *det, int nd, const GtBox *gt, int ngt) {
    Detection *d = malloc((size_t)(nd > 0 ? nd : 1) * sizeof *d);
    if (!d) return gelan_error("validate: out of memory for %d detections", nd);
    for (int i = 0; i < nd; i++)
        d[i] = (Detection){det[i].x1, det[i].y1, det[i].x2, det[i].y2, det[i].score, det[i].cls};
    int rc = map_stats_add_image(s, d, nd, gt, ngt);
    free(d);
    return rc;
}

const char *val_image_key(const char *path, char *buf, size_t len) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    bool digits = n > 0 && n < 19;
    for (size_t i = 0; i < n && digits; i++) digits = isdigit((unsigned char)base[i]) != 0;
    if (digits) {
        char tmp[20];
        memcpy(tmp, base, n);
        tmp[n] = '\0';
        snprintf(buf, len, "%lld", strtoll(tmp, NULL, 10)); /* Python int(path.stem) */
    } else {
        snprintf(buf, len, "%.*s", (int)n, base);
    }
    return buf;
}

/* ---- writer ------------------------------------------------------------------------ */

struct CocoWriter {
    char *text;
    size_t len, cap;
    long count;
};

static int append(CocoWriter *w, const char *s, size_t n) {
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (w->len + n + 1 > cap) cap *= 2;
        char *g = realloc(w->text, cap);
        if (!g) return gelan_error("coco json: out of memory");
        w->text = g, w->cap = cap;
    }
    memcpy(w->text + w->len, s, n);
    w->len += n;
    w->text[w->len] = '\0';
    return 0;
}

CocoWriter *coco_writer_new(void) {
    CocoWriter *w = calloc(1, sizeof *w);
    if (!w) gelan_error("coco json: out of memory");
    return w;
}

/* Python's round(x, nd) prints as the shortest repr; %.{nd}f then trimmed zeros
 * gives the same digits for the values written here. */
static int put_num(char *buf, size_t len, double v, int decimals) {
    double scale = pow(10, decimals);
    double r = rint(v * scale) / scale;
    if (r == 0) r = 0; /* no -0 */
    int n = snprintf(buf, len, "%.*f", decimals, r);
    while (n > 1 && buf[n - 1] == '0' && buf[n - 2] != '.') buf[--n] = '\0';
    return n;
}

int coco_writer_add(CocoWriter *w, const char *image_path, const InferBox *det, int nd) {
    char key[256], id[300], line[512], a[4][40], sc[40];
    val_image_key(image_path, key, sizeof key);
    bool numeric = key[0] && strspn(key, "0123456789") == strlen(key);
    if (numeric) {
        snprintf(id, sizeof id, "%s", key);
    } else {
        char *q = json_quote(key);
        if (!q) return gelan_error("coco json: out of memory");
        snprintf(id, sizeof id, "%s", q);
        free(q);
    }
    for (int i = 0; i < nd; i++) {
        const InferBox *b = &det[i];
        put_num(a[0], sizeof a[0], b->x1, 3);
        put_num(a[1], sizeof a[1], b->y1, 3);
        put_num(a[2], sizeof a[2], b->x2 - b->x1, 3);
        put_num(a[3], sizeof a[3], b->y2 - b->y1, 3);
        put_num(sc, sizeof sc, b->score, 5);
        int n = snprintf(line, sizeof line,
                         "%s{\"image_id\": %s, \"category_id\": %d, \"bbox\": [%s, %s, %s, %s], \"score\": %s}",
                         w->count ? ",\n" : "", id, b->cls, a[0], a[1], a[2], a[3], sc);
        if (append(w, line, (size_t)n)) return -1;
        w->count++;
    }
    return 0;
}

int coco_writer_save(CocoWriter *w, const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return gelan_error("cannot write %s (%s)", tmp, strerror(errno));
    fputs("[", f);
    if (w->len) fwrite(w->text, 1, w->len, f);
    fputs("]\n", f);
    int bad = ferror(f);
    if (fclose(f) || bad) {
        remove(tmp);
        return gelan_error("writing %s failed", tmp);
    }
    if (rename(tmp, path)) {
        remove(tmp);
        return gelan_error("cannot rename %s to %s (%s)", tmp, path, strerror(errno));
    }
    return 0;
}

void coco_writer_free(CocoWriter *w) {
    if (!w) return;
    free(w->text);
    free(w);
}

/* ---- reader ------------------------------------------------------------------------ */

static bool get_number(const JsonValue *o, const char *key, double *v) {
    const JsonValue *x = json_get(o, key);
    if (!x || x->type != JSON_NUMBER || !isfinite(x->number)) return false;
    *v = x->number;
    return true;
}

int coco_read(const char *path, CocoDet **dets, int *n) {
    *dets = NULL;
    *n = 0;
    char *text = read_text_file(path);
    if (!text) return -1;
    JsonValue *root = json_parse(text, strlen(text));
    free(text);
    if (!root) {
        gelan_error_prefix("%s", path);
        return -1;
    }
    int rc = 0;
    CocoDet *d = NULL;
    if (root->type != JSON_ARRAY) {
        rc = gelan_error("%s: expected a JSON list of detections, got %s", path, json_type_name(root->type));
        goto done;
    }
    d = calloc(root->count ? root->count : 1, sizeof *d);
    if (!d) {
        rc = gelan_error("%s: out of memory for %zu detections", path, root->count);
        goto done;
    }
    for (size_t i = 0; i < root->count; i++) {
        const JsonValue *e = json_at(root, i), *id = json_get(e, "image_id"), *bbox = json_get(e, "bbox");
        const JsonValue *cat = json_get(e, "category_id");
        double score, b[4];
        char key[64];
        if (e->type != JSON_OBJECT) {
            rc = gelan_error("%s: detection %zu is not an object", path, i);
            goto done;
        }
        if (!id || (id->type != JSON_STRING && !(id->type == JSON_NUMBER && id->is_int))) {
            rc = gelan_error("%s: detection %zu: image_id must be an integer or a string", path, i);
            goto done;
        }
        if (!cat || cat->type != JSON_NUMBER || !cat->is_int || cat->integer < 0 || cat->integer > 1000000) {
            rc = gelan_error("%s: detection %zu: category_id must be a class index (integer >= 0)", path, i);
            goto done;
        }
        if (!bbox || bbox->type != JSON_ARRAY || bbox->count != 4) {
            rc = gelan_error("%s: detection %zu: bbox must be [x, y, w, h]", path, i);
            goto done;
        }
        for (int k = 0; k < 4; k++) {
            const JsonValue *x = json_at(bbox, (size_t)k);
            if (x->type != JSON_NUMBER || !isfinite(x->number)) {
                rc = gelan_error("%s: detection %zu: bbox[%d] is not a number", path, i, k);
                goto done;
            }
            b[k] = x->number;
        }
        if (b[2] < 0 || b[3] < 0) {
            rc = gelan_error("%s: detection %zu: bbox has a negative width or height", path, i);
            goto done;
        }
        if (!get_number(e, "score", &score)) {
            rc = gelan_error("%s: detection %zu: score must be a number", path, i);
            goto done;
        }
        if (id->type == JSON_STRING)
            d[i].image_key = strdup(id->str);
        else {
            snprintf(key, sizeof key, "%lld", (long long)id->integer);
            d[i].image_key = strdup(key);
        }
        if (!d[i].image_key) {
            rc = gelan_error("%s: out of memory", path);
            goto done;
        }
        d[i].d = (Detection){(float)b[0],          (float)b[1],  (float)(b[0] + b[2]),
                             (float)(b[1] + b[3]), (float)score, (int)cat->integer};
        *n = (int)i + 1;
    }
done:
    json_free(root);
    if (rc) {
        coco_free(d, *n);
        *n = 0;
        return rc;
    }
    *dets = d;
    return 0;
}

void coco_free(CocoDet *dets, int n) {
    if (!dets) return;
    for (int i = 0; i < n; i++) free(dets[i].image_key);
    free(dets);
}

/* ---- a whole data set ------------------------------------------------------------- */

int val_image_labels(const Dataset *ds, int i, GtBox **gt, int *n) {
    const DataItem *it = &ds->items[i];
    *n = 0;
    *gt = malloc((size_t)(it->n > 0 ? it->n : 1) * sizeof **gt);
    if (!*gt) return gelan_error("validate: out of memory");
    for (int k = 0; k < it->n; k++) {
        const float *r = it->labels + 5 * k;
        float cx = r[1] * it->w, cy = r[2] * it->h, w = r[3] * it->w, h = r[4] * it->h;
        (*gt)[k] = (GtBox){cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, (int)r[0]};
    }
    *n = it->n;
    return 0;
}

/* One image of a batch: NMS on its slice of pred, boxes back to original
 * pixels (val.py's scale_boxes with the loader's ratio and pad), matching. */
static int val_one(const Tensor *pred, int k, int nc, const Batch *b, const Dataset *ds, const ValRun *v,
                   InferBox *dets, MapStats *stats) {
    const int A = pred->shape[2], idx = b->index[k];
    int nd = val_image_detections(pred->data + (size_t)k * (4 + nc) * A, nc, A, NULL, &v->opt, dets);
    if (nd < 0) return -1;
    infer_scale_boxes(&b->letterbox[k], dets, nd);
    GtBox *gt = NULL;
    int ngt = 0;
    int rc = val_image_labels(ds, idx, &gt, &ngt);
    if (!rc) rc = val_add_image(stats, dets, nd, gt, ngt);
    free(gt);
    if (!rc && v->json) {
        char key[32];
        const char *path = ds->items[idx].path;
        if (!path) snprintf(key, sizeof key, "%d", idx); /* synthetic images: their index */
        rc = coco_writer_add(v->json, path ? path : key, dets, nd);
    }
    return rc;
}

int validate_dataset(Model *m, Tape *t, Loader *val, const Dataset *ds, const ValRun *v, MapResult *out) {
    memset(out, 0, sizeof *out);
    const int nc = m->head.nc;
    InferBox *dets = malloc((size_t)(v->opt.max_det > 0 ? v->opt.max_det : 1) * sizeof *dets);
    MapStats stats;
    map_stats_init(&stats);
    int rc = dets ? loader_start_epoch(val, 0) : gelan_error("validate: out of memory");
    const bool grad = tape_set_grad_enabled(t, false);
    const Batch *b;
    long done = 0;
    int got;
    if (!rc && v->progress) v->progress(v->ctx, 0, ds->n);
    while (!rc && (got = loader_next(val, &b)) != 0) {
        if (got < 0) {
            rc = -1;
            break;
        }
        ModelOutput o;
        rc = model_forward(m, t, b->images, false, &o);
        const Tensor *pred = rc ? NULL : o.pred[o.nheads - 1]; /* the main head */
        for (int k = 0; !rc && k < b->n; k++) rc = val_one(pred, k, nc, b, ds, v, dets, &stats);
        tape_reset(t);
        done += b->n;
        if (!rc && v->progress) v->progress(v->ctx, done, ds->n);
    }
    tape_set_grad_enabled(t, grad);
    if (!rc) rc = map_compute(&stats, out);
    map_stats_free(&stats);
    free(dets);
    if (rc) gelan_error_prefix("validate");
    return rc;
}

/* Orders entry indexes by image key, then confidence (highest first), then
 * file order, so that every image's detections come as NMS would give them. */
static int by_key_conf(const void *a, const void *b, void *ctx) {
    const CocoDet *d = ctx;
    const int x = *(const int *)a, y = *(const int *)b;
    int c = strcmp(d[x].image_key, d[y].image_key);
    if (c) return c;
    if (d[x].d.conf != d[y].d.conf) return d[x].d.conf > d[y].d.conf ? -1 : 1;
    return x - y;
}

/* Scores a detections file against the labels of the data set's val split. */
int val_score_detections(const char *path, const Dataset *ds, MapResult *out) {
    CocoDet *d = NULL;
    int n = 0, rc = coco_read(path, &d, &n);
    if (rc) return -1;
    MapStats s;
    map_stats_init(&s);
    Detection *dets = malloc((size_t)(n ? n : 1) * sizeof *dets);
    int *ix = malloc((size_t)(n ? n : 1) * sizeof *ix);
    int matched = 0;
    if (!dets || !ix) rc = gelan_error("out of memory");
    for (int i = 0; !rc && i < n; i++) ix[i] = i;
    if (!rc) qsort_r(ix, (size_t)n, sizeof *ix, by_key_conf, d);
    for (int i = 0; !rc && i < ds->n; i++) {
        char key[256];
        if (ds->items[i].path)
            val_image_key(ds->items[i].path, key, sizeof key);
        else
            snprintf(key, sizeof key, "%d", i); /* synthetic images: their index */
        int lo = 0, hi = n;                     /* the first entry of this key */
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (strcmp(d[ix[mid]].image_key, key) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        int nd = 0;
        for (int k = lo; k < n && !strcmp(d[ix[k]].image_key, key); k++) dets[nd++] = d[ix[k]].d;
        matched += nd;
        GtBox *gt = NULL;
        int ngt = 0;
        rc = val_image_labels(ds, i, &gt, &ngt);
        if (!rc) rc = map_stats_add_image(&s, dets, nd, gt, ngt);
        free(gt);
    }
    if (!rc && matched < n)
        gelan_warn("%s: %d of %d detections name images that are not in the val set (ignored)", path, n - matched, n);
    if (!rc) rc = map_compute(&s, out);
    map_stats_free(&s);
    free(dets);
    free(ix);
    coco_free(d, n);
    return rc;
}
