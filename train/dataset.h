/* Data sets in the YOLO format, described by a data YAML, and the built-in
 * synthetic set.
 *
 * Data YAML (the official keys; others, e.g. `test` or `download`, are ignored):
 *   path:  the data set root. Relative paths are taken from the current
 *          directory (the official resolves them against its repository root,
 *          which is where its commands run; ours run from the repository root
 *          too, so `path: ../shared/data/coco128` works from there); when that
 *          folder does not exist, the YAML file's folder is tried as the base
 *          instead. Default ".".
 *   train, val: relative to `path` (or absolute): a folder (searched
 *          recursively for .jpg/.jpeg/.png/.bmp), a .txt file listing image
 *          paths (one a line; "./x" is relative to the list's folder, other
 *          relative lines to the current directory, then to the list's folder),
 *          a single image file, or a YAML list of any of these. As the official,
 *          a missing "../x" is also tried as "x".
 *   names: a list, or a mapping {0: name, 1: name, ...} with keys 0..nc-1.
 *   nc:    optional; must equal the number of names. Without names, the
 *          classes are called class0, class1, ...
 * The synthetic set (train/shapes.h) instead says
 *   synthetic: shapes
 *   train_count: 256    val_count: 64    img: 256    seed: 0
 *   names: [rectangle, ellipse, triangle]   (optional, must have 3 entries)
 *
 * Labels: for an image .../images/.../NAME.EXT the label file is found by
 * replacing the last "/images/" with "/labels/" and the extension with
 * ".txt" (official img2label_paths). One box per line, `class cx cy w h`,
 * normalised. An image without a label file (or whose file holds no valid
 * line) is a negative; label files without an image are never looked at.
 *
 * Problems that are worked around are warnings (gelan_warn) and the run goes
 * on: a bad label line (not 5 fields, not numbers, class not an integer in
 * [0, nc), a coordinate outside [0, 1] — the official check, exact, on the
 * float32 value) names the file and line and that box is dropped (the
 * official drops the whole image instead); duplicate rows are removed as the
 * official does (np.unique: the remaining rows come out sorted); an image
 * that cannot be read, is smaller than 10 pixels on a side, or has a format
 * stb_image cannot decode (tif, webp, ...) names the file and is skipped.
 * A data set with no usable image is an error. */
#ifndef GELAN_TRAIN_DATASET_H
#define GELAN_TRAIN_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "train/image.h"

typedef enum { SPLIT_TRAIN = 0, SPLIT_VAL = 1 } DataSplit;

typedef struct {
    char *file;   /* the YAML's path */
    char *root;   /* resolved `path` (NULL for the synthetic set) */
    char **train; /* resolved sources */
    int n_train;
    char **val;
    int n_val;
    int nc;
    char **names; /* nc names */
    /* synthetic: shapes */
    bool synthetic;
    int train_count, val_count, img;
    uint64_t seed;
} DataConfig;

/* NULL with gelan_error naming the file (and line) on a problem. */
DataConfig *data_config_load(const char *yaml_path);
void data_config_free(DataConfig *cfg);

typedef struct {
    char *path;    /* the image file; NULL for synthetic images */
    int w, h;      /* original size in pixels */
    int n;         /* boxes */
    float *labels; /* n rows [class, cx, cy, w, h], normalised to the original size */
} DataItem;

typedef struct Dataset {
    int n; /* usable images */
    DataItem *items;
    int nc;
    char **names;
    /* what the scan found (for the trainer's summary line) */
    long n_boxes;
    int n_negatives;  /* images with no box (no label file, an empty one, or no valid line) */
    int n_missing;    /* images without a label file */
    int n_bad_images; /* skipped */
    int n_bad_lines;  /* label lines skipped */
    int n_duplicates; /* duplicate label rows removed */
    /* synthetic set */
    bool synthetic;
    uint64_t seed;
    int split, img;
    /* load_image results kept in memory (dataset_cache_resized), or NULL */
    Image *cache;
    int cache_size;
    bool cache_augment;
} Dataset;

/* The split of a data YAML. NULL with gelan_error when the sources do not
 * exist or no usable image is found. */
Dataset *dataset_open(const DataConfig *cfg, DataSplit split);
/* From explicit sources (folders, list files or images, as in the YAML but
 * already resolved) with nc classes; names may be NULL (class0...). */
Dataset *dataset_from_sources(const char *const *sources, int n_sources, int nc, const char *const *names);
void dataset_free(Dataset *ds);
/* Keeps only the first n images (quick runs: validate on a few); the counts
 * are recomputed. n >= ds->n changes nothing. */
void dataset_keep_first(Dataset *ds, int n);

/* Image i at its original size, RGB. */
int dataset_load_image(const Dataset *ds, int i, Image *out);
/* The official load_image: image i resized so that its longer side is
 * img_size (r = img_size / max(h0, w0); new size (int(w0 r), int(h0 r));
 * bilinear when augmenting or enlarging, area averaging when shrinking for
 * validation). w0, h0 (may be NULL) receive the original size. */
int dataset_load_resized(const Dataset *ds, int i, int img_size, bool augment, Image *out, int *w0, int *h0);

/* The official --cache ram: runs load_image (dataset_load_resized with these
 * img_size and augment) for every image now and keeps the results, so later
 * calls with the same arguments copy from memory instead of decoding (mosaic
 * reads 4 to 8 images per sample). Call it before loaders start (the cache is
 * read without locks). dataset_resized_bytes tells the memory it takes. */
int dataset_cache_resized(Dataset *ds, int img_size, bool augment);
size_t dataset_resized_bytes(const Dataset *ds, int img_size);

/* The label path of an image path (official img2label_paths), malloc'ed. */
char *label_path_for(const char *image_path);

#endif
