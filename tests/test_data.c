/* Images, data sets, the synthetic shapes set and the loader (train/image.h,
 * train/dataset.h, train/shapes.h, train/loader.h). */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor/error.h"
#include "tests/testutil.h"
#include "train/augment.h"
#include "train/dataset.h"
#include "train/image.h"
#include "train/loader.h"
#include "train/shapes.h"

/* ---- helpers ------------------------------------------------------------------- */

/* Warnings are collected here while a test runs. */
static char warn_buf[16384];
static int warn_n;
static void collect_warning(const char *msg, void *ctx) {
    (void)ctx;
    size_t len = strlen(warn_buf);
    snprintf(warn_buf + len, sizeof warn_buf - len, "%s\n", msg);
    warn_n++;
}
static void capture_warnings(void) {
    warn_buf[0] = 0, warn_n = 0;
    gelan_set_warning_handler(collect_warning, NULL);
}
static void release_warnings(void) { gelan_set_warning_handler(NULL, NULL); }

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void remove_tree(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
}

static void make_png(const char *path, int w, int h, uint8_t v) {
    Image im = {0};
    image_alloc(&im, w, h);
    image_fill(&im, v, (uint8_t)(255 - v), 7);
    image_save(&im, path);
    image_free(&im);
}

static bool have_coco128(void) { return access(shared_path("data/coco128/images/train2017"), R_OK) == 0; }

/* ---- images ------------------------------------------------------------------------ */

static void test_resize_small_cases(void) {
    Image a = {0}, b = {0};
    /* 2 -> 4 pixels, pixel centres aligned: source positions -0.25, 0.25,
       0.75, 1.25 -> 0, 255/4, 3 * 255/4, 255 (edges clamp) */
    image_alloc(&a, 2, 1);
    memset(a.data, 0, 3);
    memset(a.data + 3, 255, 3);
    CU_ASSERT_OK(image_resize(&a, &b, 4, 1, RESIZE_LINEAR));
    CU_ASSERT(b.data[0] == 0 && b.data[3] == 64 && b.data[6] == 191 && b.data[9] == 255);
    /* area: 4x2 -> 2x1 is the mean of each 2x2 block, (sum + 2) >> 2 */
    image_alloc(&a, 4, 2);
    const uint8_t v[8] = {10, 20, 30, 41, 50, 60, 70, 80};
    for (int i = 0; i < 8; i++) a.data[3 * i] = a.data[3 * i + 1] = a.data[3 * i + 2] = v[i];
    CU_ASSERT_OK(image_resize(&a, &b, 2, 1, RESIZE_AREA));
    CU_ASSERT(b.data[0] == (10 + 20 + 50 + 60 + 2) / 4 && b.data[3] == (30 + 41 + 70 + 80 + 2) / 4);
    /* area 3 -> 2: cell 1.5 source pixels, weights 2/3 and 1/3 */
    image_alloc(&a, 3, 1);
    a.data[0] = 0, a.data[3] = 90, a.data[6] = 180;
    CU_ASSERT_OK(image_resize(&a, &b, 2, 1, RESIZE_AREA));
    CU_ASSERT(b.data[0] == 30 && b.data[3] == 150);
    image_free(&a), image_free(&b);
}

static void test_letterbox_geometry(void) {
    Image src = {0}, dst = {0};
    LetterboxInfo lb;
    /* 640 x 480 into 320: r = 0.5, 320 x 240, 40 rows of padding above and below */
    image_alloc(&src, 640, 480);
    image_fill(&src, 9, 9, 9);
    CU_ASSERT_OK(image_letterbox(&src, &dst, 320, 320, false, true, 32, &lb));
    CU_ASSERT(dst.w == 320 && dst.h == 320 && lb.ratio_w == 0.5 && lb.pad_w == 0 && lb.pad_h == 40 && lb.top == 40);
    CU_ASSERT(image_px(&dst, 5, 39)[0] == 114 && image_px(&dst, 5, 40)[0] == 9 && image_px(&dst, 5, 279)[0] == 9 &&
              image_px(&dst, 5, 280)[0] == 114);
    /* auto: padded only up to the next multiple of 32: 240 -> 256 */
    CU_ASSERT_OK(image_letterbox(&src, &dst, 320, 320, true, true, 32, &lb));
    CU_ASSERT(dst.w == 320 && dst.h == 256 && lb.pad_h == 8 && lb.top == 8);
    /* 333 x 500 into 320: r = 0.64, width round(213.12) = 213, dw = 53.5:
       left = round(53.4) = 53, right = round(53.6) = 54 */
    image_alloc(&src, 333, 500);
    image_fill(&src, 9, 9, 9);
    CU_ASSERT_OK(image_letterbox(&src, &dst, 320, 320, false, true, 32, &lb));
    CU_ASSERT(dst.w == 320 && dst.h == 320 && lb.left == 53 && lb.pad_w == 53.5 && lb.top == 0);
    CU_ASSERT(image_px(&dst, 52, 100)[0] == 114 && image_px(&dst, 53, 100)[0] == 9 &&
              image_px(&dst, 265, 100)[0] == 9 && image_px(&dst, 266, 100)[0] == 114);
    /* no scaleup: a small image is padded, not enlarged */
    image_alloc(&src, 100, 50);
    CU_ASSERT_OK(image_letterbox(&src, &dst, 320, 320, false, false, 32, &lb));
    CU_ASSERT(lb.ratio_w == 1 && lb.pad_w == 110 && lb.pad_h == 135);
    image_free(&src), image_free(&dst);
}

static void test_png_round_trip_and_drawing(void) {
    char dir[] = "/tmp/gelan_img_XXXXXX";
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    Image a = {0}, b = {0};
    image_alloc(&a, 50, 30);
    image_fill(&a, 0, 0, 0);
    const uint8_t red[3] = {255, 0, 0}, white[3] = {255, 255, 255};
    image_draw_rect(&a, 10, 5, 20, 15, red, 2);
    CU_ASSERT(image_px(&a, 10, 5)[0] == 255 && image_px(&a, 11, 6)[0] == 255 && image_px(&a, 12, 7)[0] == 0);
    CU_ASSERT(image_px(&a, 20, 15)[0] == 255 && image_px(&a, 15, 10)[0] == 0);
    /* text: some pixels lit, all within the advertised width and height */
    image_draw_text(&a, 25, 10, "Hi 0", white, 1);
    int lit = 0, outside = 0, tw = image_text_width("Hi 0", 1), th = image_text_height(1);
    for (int y = 0; y < 30; y++)
        for (int x = 22; x < 50; x++)
            if (image_px(&a, x, y)[1] == 255) {
                lit++;
                outside += x < 25 || x >= 25 + tw || y < 10 || y > 10 + th + 2;
            }
    CU_ASSERT(lit > 10 && outside == 0);
    image_draw_box_label(&a, 2.f, 20.f, 48.f, 29.f, "cat 0.9", red, 1); /* clipped, no crash */
    char path[128];
    snprintf(path, sizeof path, "%s/a.png", dir);
    CU_ASSERT_OK(image_save(&a, path));
    CU_ASSERT_OK(image_load(&b, path));
    CU_ASSERT(b.w == 50 && b.h == 30 && !memcmp(a.data, b.data, 50 * 30 * 3));
#ifndef __SANITIZE_ADDRESS__
    /* Not under the sanitizers: stb_image_write 1.16's JPEG bit writer shifts
       a signed int into its sign bit (stbiw__jpg_writeBits), which UBSan
       reports; PNG has no such problem. */
    snprintf(path, sizeof path, "%s/a.jpg", dir);
    CU_ASSERT_OK(image_save(&a, path));
    CU_ASSERT_OK(image_load(&b, path));
    CU_ASSERT(b.w == 50 && b.h == 30);
#endif
    snprintf(path, sizeof path, "%s/a.tif", dir);
    CU_ASSERT(image_save(&a, path) == -1);
    image_free(&a), image_free(&b);
    remove_tree(dir);
}

/* ---- coco128 -------------------------------------------------------------------------- */

static void test_coco128_counts(void) {
    if (!have_coco128()) {
        fprintf(stderr, "\n  skipped: %s not found\n", shared_path("data/coco128"));
        return;
    }
    const char *src[1] = {shared_path("data/coco128/images/train2017")};
    unsigned long w0 = gelan_warning_count();
    Dataset *ds = dataset_from_sources(src, 1, 80, NULL);
    CU_ASSERT_NONNULL_OK(ds);
    if (!ds) return;
    /* shared/data/coco128/README.md: 128 images, 2 without a label file
       (000000000250, 000000000508), 929 boxes for the images that exist, no
       malformed line, 254 boxes of class 0 (person) */
    CU_ASSERT_EQUAL(ds->n, 128);
    CU_ASSERT_EQUAL(ds->n_boxes, 929);
    CU_ASSERT_EQUAL(ds->n_negatives, 2);
    CU_ASSERT_EQUAL(ds->n_missing, 2);
    CU_ASSERT_EQUAL(ds->n_bad_images + ds->n_bad_lines + ds->n_duplicates, 0);
    CU_ASSERT_EQUAL(gelan_warning_count(), w0);
    int person = 0, gray = -1;
    for (int i = 0; i < ds->n; i++) {
        for (int k = 0; k < ds->items[i].n; k++) person += ds->items[i].labels[5 * k] == 0;
        if (strstr(ds->items[i].path, "000000000250.jpg") || strstr(ds->items[i].path, "000000000508.jpg"))
            CU_ASSERT_EQUAL(ds->items[i].n, 0);
        if (strstr(ds->items[i].path, "000000000086.jpg")) gray = i;
    }
    CU_ASSERT_EQUAL(person, 254);
    /* the grayscale JPEG loads as RGB with equal channels */
    CU_ASSERT_FATAL(gray >= 0);
    int w, h, c;
    CU_ASSERT_OK(image_probe(ds->items[gray].path, &w, &h, &c));
    CU_ASSERT_EQUAL(c, 1);
    Image im = {0};
    CU_ASSERT_OK(dataset_load_image(ds, gray, &im));
    CU_ASSERT(im.w == w && im.h == h && (long)w * h == 512L * 640);
    int equal = 1;
    for (size_t i = 0; i < (size_t)im.w * im.h; i++)
        equal &= im.data[3 * i] == im.data[3 * i + 1] && im.data[3 * i] == im.data[3 * i + 2];
    CU_ASSERT(equal);
    /* load_image: the longer side becomes the size */
    CU_ASSERT_OK(dataset_load_resized(ds, gray, 320, false, &im, &w, &h));
    CU_ASSERT(im.w == 256 && im.h == 320 && w == 512 && h == 640);
    image_free(&im);
    dataset_free(ds);
}

static void test_coco128_yaml(void) {
    /* configs/data/coco128.yaml, read from the repository root as the tests
       run: `path: ../shared/data/coco128` resolves from there */
    if (access("configs/data/coco128.yaml", R_OK) || access("../shared/data/coco128/images", R_OK)) {
        fprintf(stderr, "\n  skipped: not run from the repository root next to ../shared\n");
        return;
    }
    DataConfig *cfg = data_config_load("configs/data/coco128.yaml");
    CU_ASSERT_NONNULL_OK(cfg);
    if (!cfg) return;
    CU_ASSERT_EQUAL(cfg->nc, 80);
    CU_ASSERT_STRING_EQUAL(cfg->names[0], "person");
    CU_ASSERT_STRING_EQUAL(cfg->names[79], "toothbrush");
    CU_ASSERT(cfg->n_train == 1 && cfg->n_val == 1);
    Dataset *ds = dataset_open(cfg, SPLIT_VAL);
    CU_ASSERT_NONNULL_OK(ds);
    if (ds) {
        CU_ASSERT(ds->n == 128 && ds->n_boxes == 929);
        /* the first 10 images (000000000009 ... 000000000071) have label
           files of 8+2+2+1+2+1+9+5+4+16 = 50 lines */
        dataset_keep_first(ds, 10);
        CU_ASSERT(ds->n == 10 && ds->n_negatives == 0 && ds->n_boxes == 50);
    }
    dataset_free(ds);
    data_config_free(cfg);
}

/* ---- bad inputs ------------------------------------------------------------------------ */

static void test_bad_labels_and_images(void) {
    char dir[] = "/tmp/gelan_data_XXXXXX", p[256];
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    snprintf(p, sizeof p, "%s/images", dir), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/labels", dir), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/images/sub", dir), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/labels/sub", dir), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/images/a.png", dir), make_png(p, 40, 30, 10);
    snprintf(p, sizeof p, "%s/images/sub/b.png", dir), make_png(p, 20, 20, 20); /* no label: a negative */
    snprintf(p, sizeof p, "%s/images/corrupt.jpg", dir), write_file(p, "this is not a JPEG");
    snprintf(p, sizeof p, "%s/images/empty.png", dir), write_file(p, "");
    snprintf(p, sizeof p, "%s/images/tiny.png", dir), make_png(p, 9, 40, 1);
    snprintf(p, sizeof p, "%s/labels/orphan.txt", dir), write_file(p, "0 0.5 0.5 0.1 0.1\n"); /* no image */
    snprintf(p, sizeof p, "%s/labels/a.txt", dir);
    write_file(p,
               "2 0.5 0.5 0.2 0.2\n"          /* 1: good */
               "1 0.5 0.5 0.2\n"              /* 2: 4 fields */
               "1 0.5 abc 0.2 0.2\n"          /* 3: not a number */
               "3 0.5 0.5 0.2 0.2\n"          /* 4: class 3 with nc = 3 */
               "0 1.01 0.5 0.2 0.2\n"         /* 5: outside [0, 1] */
               "0 0.5 0.5 -0.1 0.2\n"         /* 6: negative */
               "2 0.5 0.5 0.2 0.2\n"          /* 7: duplicate of line 1 */
               "\n"                           /* 8: blank, ignored */
               "1 0.25 0.25 0.5 0.5\r\n"      /* 9: good, CRLF */
               "1.5 0.5 0.5 0.1 0.1\n"        /* 10: class not an integer */
               "0 1.00000001 0.5 0.2 0.2\n"); /* 11: 1.00000001 is 1.0 as float32, as numpy reads it */
    snprintf(p, sizeof p, "%s/images", dir);
    const char *src[1] = {p};
    const char *names[3] = {"x", "y", "z"};
    capture_warnings();
    Dataset *ds = dataset_from_sources(src, 1, 3, names);
    release_warnings();
    CU_ASSERT_NONNULL_OK(ds);
    if (!ds) return;
    CU_ASSERT_EQUAL(ds->n, 2); /* a.png and sub/b.png */
    CU_ASSERT_EQUAL(ds->n_bad_images, 3);
    CU_ASSERT_EQUAL(ds->n_bad_lines, 6);
    CU_ASSERT_EQUAL(ds->n_duplicates, 1);
    CU_ASSERT_EQUAL(ds->n_negatives, 1);
    CU_ASSERT_EQUAL(ds->n_missing, 1);
    CU_ASSERT_EQUAL(ds->n_boxes, 3);
    char want[300];
    const int bad_lines[] = {2, 3, 4, 5, 6, 10};
    for (size_t i = 0; i < sizeof bad_lines / sizeof *bad_lines; i++) {
        snprintf(want, sizeof want, "%s/labels/a.txt:%d:", dir, bad_lines[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(warn_buf, want));
    }
    snprintf(want, sizeof want, "%s/labels/a.txt:1:", dir);
    CU_ASSERT_PTR_NULL(strstr(warn_buf, want));
    snprintf(want, sizeof want, "%s/labels/a.txt: 1 duplicate", dir);
    CU_ASSERT_PTR_NOT_NULL(strstr(warn_buf, want));
    snprintf(want, sizeof want, "%s/images/corrupt.jpg", dir);
    CU_ASSERT_PTR_NOT_NULL(strstr(warn_buf, want));
    snprintf(want, sizeof want, "%s/images/empty.png", dir);
    CU_ASSERT_PTR_NOT_NULL(strstr(warn_buf, want));
    snprintf(want, sizeof want, "%s/images/tiny.png", dir);
    CU_ASSERT_PTR_NOT_NULL(strstr(warn_buf, want));
    CU_ASSERT_PTR_NULL(strstr(warn_buf, "orphan"));
    /* duplicates removed as np.unique: the remaining rows sorted */
    const DataItem *a = &ds->items[0];
    CU_ASSERT_PTR_NOT_NULL(strstr(a->path, "/images/a.png"));
    CU_ASSERT_EQUAL(a->n, 3);
    if (a->n == 3) {
        CU_ASSERT(a->labels[0] == 0 && a->labels[1] == 1.0f);
        CU_ASSERT(a->labels[5] == 1 && a->labels[6] == 0.25f);
        CU_ASSERT(a->labels[10] == 2 && a->labels[11] == 0.5f);
    }
    CU_ASSERT(a->w == 40 && a->h == 30);
    dataset_free(ds);

    /* a .txt list (./ is relative to the list) and a folder with nothing usable */
    snprintf(p, sizeof p, "%s/list.txt", dir);
    write_file(p, "./images/a.png\n\n./images/sub/b.png\n");
    src[0] = p;
    capture_warnings();
    ds = dataset_from_sources(src, 1, 3, NULL);
    release_warnings();
    CU_ASSERT_NONNULL_OK(ds);
    if (ds) CU_ASSERT(ds->n == 2 && ds->n_boxes == 3 && !strcmp(ds->names[2], "class2"));
    dataset_free(ds);

    snprintf(p, sizeof p, "%s/images/a.png", dir), unlink(p);
    snprintf(p, sizeof p, "%s/images/sub/b.png", dir), unlink(p);
    snprintf(p, sizeof p, "%s/images", dir);
    src[0] = p;
    capture_warnings();
    ds = dataset_from_sources(src, 1, 3, NULL);
    release_warnings();
    CU_ASSERT_PTR_NULL(ds);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "no usable image"));
    dataset_free(ds);
    snprintf(p, sizeof p, "%s/labels", dir);
    ds = dataset_from_sources(src, 1, 3, NULL);
    CU_ASSERT_PTR_NULL(ds);
    snprintf(p, sizeof p, "%s/nowhere", dir);
    CU_ASSERT_PTR_NULL(dataset_from_sources(src, 1, 3, NULL));
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "does not exist"));
    remove_tree(dir);
}

static void test_label_paths(void) {
    char *s = label_path_for("/d/images/x/images/a.b.jpg");
    CU_ASSERT_STRING_EQUAL(s, "/d/images/x/labels/a.b.txt");
    free(s);
    s = label_path_for("pics/a.PNG");
    CU_ASSERT_STRING_EQUAL(s, "pics/a.txt");
    free(s);
}

static void test_data_yaml(void) {
    char dir[] = "/tmp/gelan_yaml_XXXXXX", p[256], q[256];
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    snprintf(p, sizeof p, "%s/set", dir), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/set/images", dir), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/set/images/1.png", dir), make_png(p, 16, 16, 3);
    /* names as a mapping, `path` relative to the YAML's folder (it does not
       exist relative to the current directory), nc agreeing */
    snprintf(q, sizeof q, "%s/d.yaml", dir);
    write_file(q, "path: set\ntrain: images\nval: [images, images]\nnc: 2\nnames:\n  1: dog\n  0: cat\n");
    DataConfig *cfg = data_config_load(q);
    CU_ASSERT_NONNULL_OK(cfg);
    if (cfg) {
        CU_ASSERT(cfg->nc == 2 && !strcmp(cfg->names[0], "cat") && !strcmp(cfg->names[1], "dog"));
        CU_ASSERT(cfg->n_val == 2);
        Dataset *ds = dataset_open(cfg, SPLIT_VAL);
        CU_ASSERT_NONNULL_OK(ds);
        if (ds) CU_ASSERT(ds->n == 2 && ds->n_negatives == 2); /* the folder listed twice */
        dataset_free(ds);
        data_config_free(cfg);
    }
    /* errors name the file */
    write_file(q, "path: set\ntrain: images\nnc: 3\nnames: [a, b]\n");
    CU_ASSERT_PTR_NULL(data_config_load(q));
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "d.yaml"));
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "nc is 3"));
    write_file(q, "train: images\nnames: {0: a, 2: b}\n");
    CU_ASSERT_PTR_NULL(data_config_load(q));
    write_file(q, "train: [images\n");
    CU_ASSERT_PTR_NULL(data_config_load(q));
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "d.yaml:"));
    write_file(q, "path: nowhere\ntrain: images\nnames: [a]\n");
    cfg = data_config_load(q);
    CU_ASSERT_NONNULL_OK(cfg);
    if (cfg) {
        CU_ASSERT_PTR_NULL(dataset_open(cfg, SPLIT_TRAIN));
        CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "does not exist"));
        CU_ASSERT_PTR_NULL(dataset_open(cfg, SPLIT_VAL)); /* no val given */
        data_config_free(cfg);
    }
    remove_tree(dir);
}

/* ---- shapes ------------------------------------------------------------------------------ */

static DataConfig *shapes_config(const char *dir, const char *extra) {
    char q[256], text[512];
    snprintf(q, sizeof q, "%s/shapes.yaml", dir);
    snprintf(text, sizeof text, "synthetic: shapes\ntrain_count: 40\nval_count: 12\nimg: 128\n%s", extra);
    write_file(q, text);
    return data_config_load(q);
}

static void test_shapes_yaml_file(void) {
    if (access("configs/data/shapes.yaml", R_OK)) return;
    DataConfig *cfg = data_config_load("configs/data/shapes.yaml");
    CU_ASSERT_NONNULL_OK(cfg);
    if (!cfg) return;
    CU_ASSERT(cfg->synthetic && cfg->nc == 3 && !strcmp(cfg->names[2], "triangle"));
    CU_ASSERT(cfg->train_count > 0 && cfg->val_count > 0 && cfg->img >= 64);
    data_config_free(cfg);
}

static void test_shapes_deterministic_and_exact(void) {
    char dir[] = "/tmp/gelan_shapes_XXXXXX";
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    DataConfig *cfg = shapes_config(dir, "seed: 5\n");
    CU_ASSERT_NONNULL_OK(cfg);
    if (!cfg) return;
    Dataset *tr = dataset_open(cfg, SPLIT_TRAIN), *va = dataset_open(cfg, SPLIT_VAL);
    CU_ASSERT_NONNULL_OK(tr);
    CU_ASSERT_NONNULL_OK(va);
    if (!tr || !va) return;
    CU_ASSERT(tr->n == 40 && va->n == 12 && tr->nc == 3 && !strcmp(tr->names[1], "ellipse"));
    Image a = {0}, b = {0};
    /* same seed, same bytes; train and val differ */
    CU_ASSERT_OK(dataset_load_image(tr, 3, &a));
    CU_ASSERT_OK(dataset_load_image(tr, 3, &b));
    CU_ASSERT(a.w == 128 && a.h == 128 && !memcmp(a.data, b.data, 128 * 128 * 3));
    CU_ASSERT_OK(dataset_load_image(va, 3, &b));
    CU_ASSERT(memcmp(a.data, b.data, 128 * 128 * 3) != 0);
    /* each label is exactly the bounding box of its shape's pixels, and
       every pixel of a shape not covered by a later one has its colour */
    uint8_t *mask = malloc(128 * 128), *later = malloc(128 * 128), *tmp = malloc(128 * 128);
    int objects = 0, empty = 0, small = 0, overlapping = 0, classes[3] = {0, 0, 0}, bad = 0;
    for (int i = 0; i < tr->n; i++) {
        ShapesScene sc;
        shapes_scene(5, SPLIT_TRAIN, i, 128, &sc);
        CU_ASSERT_EQUAL(sc.n, tr->items[i].n);
        CU_ASSERT(sc.n <= 6);
        empty += sc.n == 0;
        CU_ASSERT_OK(dataset_load_image(tr, i, &a));
        for (int k = 0; k < sc.n; k++) {
            const float *l = tr->items[i].labels + 5 * k;
            shapes_mask(&sc, k, mask);
            memset(later, 0, 128 * 128);
            for (int j = k + 1; j < sc.n; j++) {
                shapes_mask(&sc, j, tmp);
                for (int q = 0; q < 128 * 128; q++) later[q] |= tmp[q];
            }
            int x1 = 128, y1 = 128, x2 = -1, y2 = -1, hidden = 0;
            for (int y = 0; y < 128; y++)
                for (int x = 0; x < 128; x++) {
                    if (!mask[y * 128 + x]) continue;
                    x1 = x < x1 ? x : x1, x2 = x > x2 ? x : x2, y1 = y < y1 ? y : y1, y2 = y > y2 ? y : y2;
                    if (later[y * 128 + x]) {
                        hidden = 1;
                        continue;
                    }
                    bad += memcmp(image_px(&a, x, y), sc.obj[k].rgb, 3) != 0;
                }
            overlapping += hidden;
            /* the label in pixels: [x1, x2 + 1) x [y1, y2 + 1) */
            bad += fabsf((l[1] - l[3] / 2) * 128 - x1) > 1e-3f || fabsf((l[1] + l[3] / 2) * 128 - (x2 + 1)) > 1e-3f;
            bad += fabsf((l[2] - l[4] / 2) * 128 - y1) > 1e-3f || fabsf((l[2] + l[4] / 2) * 128 - (y2 + 1)) > 1e-3f;
            bad += l[0] != sc.obj[k].cls;
            small += x2 - x1 + 1 < 16 && y2 - y1 + 1 < 16;
            classes[sc.obj[k].cls]++;
            objects++;
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(objects > 60 && classes[0] > 10 && classes[1] > 10 && classes[2] > 10);
    CU_ASSERT(empty >= 1 && small >= 5 && overlapping >= 1);
    if (!(empty >= 1 && small >= 5 && overlapping >= 1))
        fprintf(stderr, "\n  objects %d empty %d small %d overlapping %d\n", objects, empty, small, overlapping);
    /* another seed, another set */
    data_config_free(cfg);
    cfg = shapes_config(dir, "seed: 6\n");
    Dataset *other = cfg ? dataset_open(cfg, SPLIT_TRAIN) : NULL;
    CU_ASSERT_NONNULL_OK(other);
    if (other) {
        CU_ASSERT_OK(dataset_load_image(tr, 3, &a));
        CU_ASSERT_OK(dataset_load_image(other, 3, &b));
        CU_ASSERT(memcmp(a.data, b.data, 128 * 128 * 3) != 0);
    }
    free(mask), free(later), free(tmp);
    image_free(&a), image_free(&b);
    dataset_free(tr), dataset_free(va), dataset_free(other);
    data_config_free(cfg);
    remove_tree(dir);
}

/* ---- validation pipeline --------------------------------------------------------------------- */

static void test_eval_sample_maps_back(void) {
    if (!have_coco128()) return;
    const char *src[1] = {shared_path("data/coco128/images/train2017")};
    Dataset *ds = dataset_from_sources(src, 1, 80, NULL);
    CU_ASSERT_NONNULL_OK(ds);
    if (!ds) return;
    Image im = {0};
    Boxes b = {0};
    Letterbox lb;
    float worst = 0;
    for (int i = 0; i < ds->n; i += 9) {
        const DataItem *it = &ds->items[i];
        CU_ASSERT_OK(sample_eval(ds, i, 320, 320, 320, &im, &b, &lb));
        CU_ASSERT(im.w == 320 && im.h == 320 && lb.src_w == it->w && lb.src_h == it->h);
        CU_ASSERT_EQUAL(b.n, it->n);
        float *xyxy = malloc(sizeof(float) * 4 * (b.n + 1));
        labels_to_original(b.v, b.n, 5, &lb, xyxy);
        for (int k = 0; k < b.n && k < it->n; k++) {
            const float *l = it->labels + 5 * k;
            float want[4] = {(l[1] - l[3] / 2) * it->w, (l[2] - l[4] / 2) * it->h, (l[1] + l[3] / 2) * it->w,
                             (l[2] + l[4] / 2) * it->h};
            /* x was scaled by w/w0 and is unscaled by h/h0; w = int(w0 r) is
               at most one pixel short, so that costs up to 1/r original pixels */
            for (int q = 0; q < 4; q++) worst = fmaxf(worst, fabsf(xyxy[4 * k + q] - want[q]) - 1.f / lb.gain);
        }
        free(xyxy);
    }
    /* the official round trip (load_image's int() sizes, gain h/h0 for both
       axes, the half-pixel letterbox pad) is exact but for that */
    CU_ASSERT(worst < 0.01f);
    if (worst >= 0.01f) fprintf(stderr, "\n  worst excess %.3f px\n", worst);
    image_free(&im), boxes_free(&b);
    dataset_free(ds);
}

/* ---- loader ------------------------------------------------------------------------------------- */

static void check_epoch(Loader *L, const Dataset *ds, int epoch, int s, bool rect, int *batches) {
    int *seen = calloc((size_t)ds->n, sizeof(int));
    const Batch *b;
    int rc, nb = 0, bad = 0;
    CU_ASSERT_OK(loader_start_epoch(L, epoch));
    while ((rc = loader_next(L, &b)) == 1) {
        CU_ASSERT_EQUAL(b->batch_index, nb);
        nb++;
        CU_ASSERT(b->images->ndim == 4 && b->images->shape[0] == b->n && b->images->shape[1] == 3);
        CU_ASSERT(b->images->shape[2] == b->h && b->images->shape[3] == b->w);
        if (!rect) CU_ASSERT(b->h == s && b->w == s);
        if (rect) CU_ASSERT(b->h % 32 == 0 && b->w % 32 == 0 && b->h <= s + 32 && b->w <= s + 32 && b->letterbox);
        for (int k = 0; k < b->n; k++) seen[b->index[k]]++;
        for (int t = 0; t < b->targets.n; t++) {
            const float *r = b->targets.rows + 6 * t;
            bad += r[0] < 0 || r[0] >= b->n || r[1] < 0 || r[1] >= ds->nc || r[1] != floorf(r[1]);
            for (int q = 2; q < 6; q++) bad += !(r[q] >= 0 && r[q] <= 1);
            if (t) bad += r[0] < r[-6]; /* grouped by image */
        }
        for (size_t q = 0; q < b->images->numel; q += 97) bad += !(b->images->data[q] >= 0 && b->images->data[q] <= 1);
    }
    CU_ASSERT_EQUAL(rc, 0);
    if (rc < 0) fprintf(stderr, "\n  loader: %s\n", gelan_last_error());
    CU_ASSERT_EQUAL(bad, 0);
    int once = 1;
    for (int i = 0; i < ds->n; i++) once &= seen[i] == 1;
    CU_ASSERT(once);
    *batches = nb;
    free(seen);
}

static void test_loader_epochs(void) {
    char dir[] = "/tmp/gelan_loader_XXXXXX";
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    DataConfig *cfg = shapes_config(dir, "seed: 1\n");
    CU_ASSERT_NONNULL_OK(cfg);
    Dataset *ds = cfg ? dataset_open(cfg, SPLIT_TRAIN) : NULL;
    CU_ASSERT_NONNULL_OK(ds);
    if (!ds) return;
    LoaderOptions o;
    loader_options_default(&o, true);
    o.img_size = 96, o.batch = 16, o.seed = 3, o.workers = 2;
    Loader *L = loader_new(ds, &o);
    CU_ASSERT_NONNULL_OK(L);
    if (!L) return;
    int nb;
    CU_ASSERT_EQUAL(loader_num_batches(L), 3); /* 40 images: 16 + 16 + 8, the last kept */
    check_epoch(L, ds, 0, 96, false, &nb);
    CU_ASSERT_EQUAL(nb, 3);
    loader_set_mosaic(L, false); /* close_mosaic */
    check_epoch(L, ds, 1, 96, false, &nb);
    /* the order changes with the epoch */
    int *o0 = malloc(sizeof(int) * ds->n), *o1 = malloc(sizeof(int) * ds->n);
    loader_epoch_order(L, 0, o0), loader_epoch_order(L, 1, o1);
    CU_ASSERT(memcmp(o0, o1, sizeof(int) * ds->n) != 0);
    /* leaving an epoch half-way and starting another is fine */
    const Batch *b;
    CU_ASSERT_OK(loader_start_epoch(L, 2));
    CU_ASSERT_EQUAL(loader_next(L, &b), 1);
    check_epoch(L, ds, 3, 96, false, &nb);
    /* and so is freeing the loader while batches are being prepared */
    CU_ASSERT_OK(loader_start_epoch(L, 4));
    CU_ASSERT_EQUAL(loader_next(L, &b), 1);
    loader_free(L);
    free(o0), free(o1);

    /* validation batches: rect shapes, every image once */
    Dataset *va = dataset_open(cfg, SPLIT_VAL);
    loader_options_default(&o, false);
    o.img_size = 96, o.batch = 5, o.workers = 1;
    L = loader_new(va, &o);
    CU_ASSERT_NONNULL_OK(L);
    if (L) {
        check_epoch(L, va, 0, 96, true, &nb);
        CU_ASSERT_EQUAL(nb, 3);
        loader_free(L);
    }
    dataset_free(va);
    dataset_free(ds);
    data_config_free(cfg);
    remove_tree(dir);
}

/* The same seed gives the same batches whatever the number of threads. */
static void test_loader_reproducible(void) {
    char dir[] = "/tmp/gelan_loader_XXXXXX";
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    DataConfig *cfg = shapes_config(dir, "seed: 2\n");
    Dataset *ds = cfg ? dataset_open(cfg, SPLIT_TRAIN) : NULL;
    CU_ASSERT_NONNULL_OK(ds);
    if (!ds) return;
    LoaderOptions o;
    loader_options_default(&o, true);
    o.img_size = 64, o.batch = 8, o.seed = 11;
    o.hyp.mixup = 0.5f;
    Loader *L[2];
    o.workers = 0, L[0] = loader_new(ds, &o);
    o.workers = 3, L[1] = loader_new(ds, &o);
    CU_ASSERT_FATAL(L[0] && L[1]);
    for (int epoch = 0; epoch < 2; epoch++) {
        loader_start_epoch(L[0], epoch), loader_start_epoch(L[1], epoch);
        const Batch *a, *b;
        int same = 1, n = 0;
        while (loader_next(L[0], &a) == 1 && loader_next(L[1], &b) == 1) {
            same &= a->n == b->n && a->targets.n == b->targets.n &&
                    !memcmp(a->images->data, b->images->data, sizeof(float) * a->images->numel) &&
                    !memcmp(a->targets.rows, b->targets.rows, sizeof(float) * 6 * a->targets.n);
            n++;
        }
        CU_ASSERT(same && n == 5);
    }
    /* the image cache changes nothing but the speed */
    Dataset *cached = dataset_open(cfg, SPLIT_TRAIN);
    CU_ASSERT_FATAL(cached != NULL);
    CU_ASSERT_OK(dataset_cache_resized(cached, 64, true));
    CU_ASSERT(cached->cache && dataset_resized_bytes(cached, 64) == (size_t)40 * 64 * 64 * 3);
    o.workers = 2;
    Loader *C = loader_new(cached, &o);
    CU_ASSERT_FATAL(C != NULL);
    loader_start_epoch(C, 1), loader_start_epoch(L[0], 1);
    const Batch *a, *b;
    int same = 1, n = 0;
    while (loader_next(L[0], &a) == 1 && loader_next(C, &b) == 1) {
        same &= a->n == b->n && !memcmp(a->images->data, b->images->data, sizeof(float) * a->images->numel);
        n++;
    }
    CU_ASSERT(same && n == 5);
    loader_free(C);
    dataset_free(cached);
    loader_free(L[0]), loader_free(L[1]);
    dataset_free(ds);
    data_config_free(cfg);
    remove_tree(dir);
}

SUITE_FN(data) {
    CU_pSuite s = CU_add_suite("data", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "resize: bilinear and area on small cases", test_resize_small_cases);
    CU_add_test(s, "letterbox geometry", test_letterbox_geometry);
    CU_add_test(s, "PNG round trip, rectangles and text", test_png_round_trip_and_drawing);
    CU_add_test(s, "coco128: images, boxes, negatives, grayscale", test_coco128_counts);
    CU_add_test(s, "coco128 data YAML from the repository root", test_coco128_yaml);
    CU_add_test(s, "bad label lines and bad images are skipped with warnings", test_bad_labels_and_images);
    CU_add_test(s, "label paths", test_label_paths);
    CU_add_test(s, "data YAML forms and errors", test_data_yaml);
    CU_add_test(s, "configs/data/shapes.yaml", test_shapes_yaml_file);
    CU_add_test(s, "shapes: deterministic, exact labels", test_shapes_deterministic_and_exact);
    CU_add_test(s, "validation samples map back to original pixels", test_eval_sample_maps_back);
    CU_add_test(s, "loader: every image once per epoch, threads, shutdown", test_loader_epochs);
    CU_add_test(s, "loader: same batches for any number of threads", test_loader_reproducible);
    return 0;
}
