#include "train/dataset.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <yaml.h>

#include "nn/yaml_cfg.h"
#include "tensor/error.h"
#include "train/shapes.h"

/* ---- small string helpers ------------------------------------------------- */

typedef struct {
    char **v;
    int n, cap;
} StrList;

static int strlist_push(StrList *l, const char *s) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **v = realloc(l->v, sizeof(char *) * cap);
        if (!v) return gelan_error("out of memory");
        l->v = v, l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(s))) return gelan_error("out of memory");
    l->n++;
    return 0;
}

static void strlist_free(StrList *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL, l->n = l->cap = 0;
}

static char *join_path(const char *a, const char *b) {
    if (!a || !*a || b[0] == '/') return strdup(b);
    size_t la = strlen(a);
    char *s = malloc(la + strlen(b) + 2);
    if (!s) return NULL;
    sprintf(s, a[la - 1] == '/' ? "%s%s" : "%s/%s", a, b);
    return s;
}

/* The folder part of a path ("." when there is none). */
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static bool path_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static const char *extension(const char *path) {
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    return dot && (!slash || dot > slash) ? dot + 1 : "";
}

/* Formats both the official loader and stb_image read. */
static bool readable_format(const char *path) {
    const char *e = extension(path);
    return !strcasecmp(e, "jpg") || !strcasecmp(e, "jpeg") || !strcasecmp(e, "png") || !strcasecmp(e, "bmp");
}

/* Formats the official loader takes that stb_image cannot decode. */
static bool unreadable_format(const char *path) {
    static const char *const ex[] = {"dng", "mpo", "tif", "tiff", "webp", "pfm"};
    const char *e = extension(path);
    for (size_t i = 0; i < sizeof ex / sizeof *ex; i++)
        if (!strcasecmp(e, ex[i])) return true;
    return false;
}

char *label_path_for(const char *image_path) {
    /* sb.join(x.rsplit(sa, 1)).rsplit('.', 1)[0] + '.txt' */
    size_t n = strlen(image_path);
    char *s = malloc(n + 8);
    if (!s) return NULL;
    strcpy(s, image_path);
    char *at = NULL;
    for (char *p = strstr(s, "/images/"); p; p = strstr(p + 1, "/images/")) at = p;
    if (at) memcpy(at, "/labels/", 8);
    char *dot = strrchr(s, '.');
    if (dot) *dot = 0;
    strcat(s, ".txt");
    return s;
}

/* ---- the data YAML ---------------------------------------------------------- */

static const char *scalar(const yaml_node_t *n) {
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int scalar_long(const yaml_node_t *n, long *out) {
    const char *s = scalar(n);
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end || errno) return -1;
    *out = v;
    return 0;
}

/* A YAML value that is a string or a list of strings, appended to out. */
static int string_or_list(yaml_document_t *doc, yaml_node_t *n, const char *file, const char *key, StrList *out) {
    int line = (int)n->start_mark.line + 1;
    if (n->type == YAML_SCALAR_NODE) return strlist_push(out, scalar(n));
    if (n->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
            const char *s = scalar(yaml_document_get_node(doc, *it));
            if (!s) return gelan_error("%s:%d: `%s` must be a path or a list of paths", file, line, key);
            if (strlist_push(out, s)) return -1;
        }
        return 0;
    }
    return gelan_error("%s:%d: `%s` must be a path or a list of paths", file, line, key);
}

static int read_names(yaml_document_t *doc, yaml_node_t *n, const char *file, StrList *names) {
    int line = (int)n->start_mark.line + 1;
    if (n->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
            const char *s = scalar(yaml_document_get_node(doc, *it));
            if (!s) return gelan_error("%s:%d: `names` entries must be strings", file, line);
            if (strlist_push(names, s)) return -1;
        }
        return 0;
    }
    if (n->type != YAML_MAPPING_NODE)
        return gelan_error("%s:%d: `names` must be a list or a mapping {0: name, ...}", file, line);
    int count = (int)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    for (int i = 0; i < count; i++) strlist_push(names, "");
    if (names->n != count) return -1;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        const char *v = scalar(yaml_document_get_node(doc, p->value));
        long idx;
        int kl = (int)k->start_mark.line + 1;
        if (scalar_long(k, &idx) || idx < 0 || idx >= count)
            return gelan_error("%s:%d: `names` keys must be the integers 0..%d", file, kl, count - 1);
        if (!v) return gelan_error("%s:%d: name of class %ld must be a string", file, kl, idx);
        if (names->v[idx][0]) return gelan_error("%s:%d: class %ld is named twice", file, kl, idx);
        free(names->v[idx]);
        if (!(names->v[idx] = strdup(v))) return gelan_error("out of memory");
        if (!*v) return gelan_error("%s:%d: class %ld has an empty name", file, kl, idx);
    }
    return 0;
}

/* The data set root: `path` as given when absolute or present from the
 * current directory, else relative to the YAML's folder. */
static char *resolve_root(const char *path, const char *yaml_file) {
    if (path[0] == '/' || is_dir(path)) return strdup(path);
    char *d = dir_of(yaml_file);
    char *alt = d ? join_path(d, path) : NULL;
    free(d);
    if (alt && is_dir(alt)) return alt;
    free(alt);
    return strdup(path); /* reported when the sources are opened */
}

static int resolve_sources(const char *root, StrList *in, char ***out, int *n) {
    *out = calloc(in->n ? (size_t)in->n : 1, sizeof(char *));
    if (!*out) return gelan_error("out of memory");
    for (int i = 0; i < in->n; i++) {
        char *x = join_path(root, in->v[i]);
        if (x && !path_exists(x) && !strncmp(in->v[i], "../", 3)) { /* the official's second chance */
            char *y = join_path(root, in->v[i] + 3);
            if (y && path_exists(y))
                free(x), x = y;
            else
                free(y);
        }
        if (!x) return gelan_error("out of memory");
        (*out)[(*n)++] = x;
    }
    return 0;
}

DataConfig *data_config_load(const char *yaml_path) {
    char *text = read_text_file(yaml_path);
    if (!text) return NULL;
    DataConfig *cfg = calloc(1, sizeof *cfg);
    StrList train = {0}, val = {0}, names = {0};
    char *path = NULL;
    long nc = -1;
    int rc = 0;
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
    if (!cfg || !(cfg->file = strdup(yaml_path))) {
        yaml_parser_delete(&parser);
        free(text), free(cfg);
        gelan_error("out of memory");
        return NULL;
    }
    if (!yaml_parser_load(&parser, &doc)) {
        gelan_error("%s:%d: %s", yaml_path, (int)parser.problem_mark.line + 1,
                    parser.problem ? parser.problem : "YAML syntax error");
        yaml_parser_delete(&parser);
        free(text), free(cfg->file), free(cfg);
        return NULL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || root->type != YAML_MAPPING_NODE) rc = gelan_error("%s: a data YAML must be a mapping", yaml_path);
    for (yaml_node_pair_t *p = root && !rc ? root->data.mapping.pairs.start : NULL;
         p && p < root->data.mapping.pairs.top && !rc; p++) {
        yaml_node_t *kn = yaml_document_get_node(&doc, p->key), *vn = yaml_document_get_node(&doc, p->value);
        const char *k = scalar(kn);
        int line = (int)vn->start_mark.line + 1;
        long v;
        if (!k) continue;
        if (!strcmp(k, "path")) {
            if (!scalar(vn))
                rc = gelan_error("%s:%d: `path` must be a string", yaml_path, line);
            else if (!(path = strdup(scalar(vn))))
                rc = gelan_error("out of memory");
        } else if (!strcmp(k, "train")) {
            rc = string_or_list(&doc, vn, yaml_path, "train", &train);
        } else if (!strcmp(k, "val")) {
            rc = string_or_list(&doc, vn, yaml_path, "val", &val);
        } else if (!strcmp(k, "names")) {
            rc = read_names(&doc, vn, yaml_path, &names);
        } else if (!strcmp(k, "nc")) {
            if (scalar_long(vn, &nc) || nc <= 0)
                rc = gelan_error("%s:%d: `nc` must be a positive integer", yaml_path, line);
        } else if (!strcmp(k, "synthetic")) {
            if (!scalar(vn) || strcmp(scalar(vn), "shapes"))
                rc = gelan_error("%s:%d: unknown synthetic data set '%s' (the built-in one is `shapes`)", yaml_path,
                                 line, scalar(vn) ? scalar(vn) : "?");
            cfg->synthetic = true;
        } else if (!strcmp(k, "train_count") || !strcmp(k, "val_count") || !strcmp(k, "img") || !strcmp(k, "seed")) {
            if (scalar_long(vn, &v) || v < 0 || v > (1L << 30))
                rc = gelan_error("%s:%d: `%s` must be a non-negative integer", yaml_path, line, k);
            else if (!strcmp(k, "train_count"))
                cfg->train_count = (int)v;
            else if (!strcmp(k, "val_count"))
                cfg->val_count = (int)v;
            else if (!strcmp(k, "img"))
                cfg->img = (int)v;
            else
                cfg->seed = (uint64_t)v;
        }
    }
    if (!rc) {
        if (nc >= 0 && names.n && nc != names.n)
            rc = gelan_error("%s: nc is %ld but %d names are given", yaml_path, nc, names.n);
        else if (cfg->synthetic && names.n && names.n != SHAPES_NC)
            rc = gelan_error("%s: the shapes data set has %d classes, %d names are given", yaml_path, SHAPES_NC,
                             names.n);
        else if (cfg->synthetic && nc >= 0 && nc != SHAPES_NC)
            rc = gelan_error("%s: the shapes data set has %d classes, not nc=%ld", yaml_path, SHAPES_NC, nc);
        else if (!cfg->synthetic && nc < 0 && !names.n)
            rc = gelan_error("%s: neither `names` nor `nc` is given", yaml_path);
    }
    if (!rc && cfg->synthetic) {
        if (!cfg->img) cfg->img = 256;
        if (cfg->img < 32) rc = gelan_error("%s: `img` must be at least 32 for the shapes data set", yaml_path);
        if (!cfg->train_count && !cfg->val_count) cfg->train_count = 256, cfg->val_count = 64;
        if (!names.n)
            for (int i = 0; !rc && i < SHAPES_NC; i++) rc = strlist_push(&names, shapes_class_names[i]);
        cfg->nc = SHAPES_NC;
    } else if (!rc) {
        if (!train.n && !val.n) rc = gelan_error("%s: neither `train` nor `val` is given", yaml_path);
        cfg->nc = names.n ? names.n : (int)nc;
        char buf[32];
        if (!names.n)
            for (int i = 0; !rc && i < cfg->nc; i++) {
                snprintf(buf, sizeof buf, "class%d", i);
                rc = strlist_push(&names, buf);
            }
        if (!rc) cfg->root = resolve_root(path ? path : ".", yaml_path);
        if (!rc && !cfg->root) rc = gelan_error("out of memory");
        if (!rc) rc = resolve_sources(cfg->root, &train, &cfg->train, &cfg->n_train);
        if (!rc) rc = resolve_sources(cfg->root, &val, &cfg->val, &cfg->n_val);
    }
    if (!rc) {
        cfg->names = names.v;
        names.v = NULL, names.n = names.cap = 0;
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    free(text), free(path);
    strlist_free(&train), strlist_free(&val), strlist_free(&names);
    if (rc) {
        data_config_free(cfg);
        return NULL;
    }
    return cfg;
}

void data_config_free(DataConfig *cfg) {
    if (!cfg) return;
    for (int i = 0; i < cfg->n_train; i++) free(cfg->train[i]);
    for (int i = 0; i < cfg->n_val; i++) free(cfg->val[i]);
    for (int i = 0; cfg->names && i < cfg->nc; i++) free(cfg->names[i]);
    free(cfg->train), free(cfg->val), free(cfg->names), free(cfg->root), free(cfg->file);
    free(cfg);
}

/* ---- finding the images ------------------------------------------------------ */

typedef struct {
    int n;
    const char *example;
} Unreadable;

static int walk_dir(const char *dir, StrList *out, StrList *unreadable) {
    DIR *d = opendir(dir);
    if (!d) return gelan_error("%s: cannot open folder (%s)", dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue; /* glob's ** skips hidden entries too */
        char *p = join_path(dir, e->d_name);
        if (!p) {
            rc = gelan_error("out of memory");
            break;
        }
        if (is_dir(p))
            rc = walk_dir(p, out, unreadable);
        else if (readable_format(p))
            rc = strlist_push(out, p);
        else if (unreadable_format(p))
            rc = strlist_push(unreadable, p);
        free(p);
    }
    closedir(d);
    return rc;
}

static int read_list_file(const char *file, StrList *out, StrList *unreadable) {
    char *text = read_text_file(file);
    if (!text) return -1;
    char *parent = dir_of(file);
    int rc = parent ? 0 : gelan_error("out of memory");
    char *save = NULL;
    for (char *line = strtok_r(text, "\r\n", &save); line && !rc; line = strtok_r(NULL, "\r\n", &save)) {
        while (*line == ' ' || *line == '\t') line++;
        size_t len = strlen(line);
        while (len && (line[len - 1] == ' ' || line[len - 1] == '\t')) line[--len] = 0;
        if (!len) continue;
        char *p;
        if (!strncmp(line, "./", 2))
            p = join_path(parent, line + 2);
        else if (line[0] == '/' || path_exists(line))
            p = strdup(line);
        else
            p = join_path(parent, line);
        if (!p)
            rc = gelan_error("out of memory");
        else if (readable_format(p))
            rc = strlist_push(out, p);
        else if (unreadable_format(p))
            rc = strlist_push(unreadable, p);
        free(p);
    }
    free(parent), free(text);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* ---- labels -------------------------------------------------------------------- */

static int cmp_row(const void *a, const void *b) {
    const float *x = a, *y = b;
    for (int k = 0; k < 5; k++)
        if (x[k] != y[k]) return x[k] < y[k] ? -1 : 1;
    return 0;
}

/* Parses one label file. Returns 0 (rows may be NULL with n = 0) or -1 on OOM;
 * *missing is set when there is no file. */
static int read_labels(const char *lpath, int nc, float **rows_out, int *n_out, bool *missing, Dataset *ds) {
    *rows_out = NULL, *n_out = 0, *missing = false;
    FILE *f = fopen(lpath, "rb");
    if (!f) {
        if (errno == ENOENT || errno == ENOTDIR)
            *missing = true;
        else
            gelan_warn("%s: cannot read label file (%s); image used as a negative", lpath, strerror(errno));
        return 0;
    }
    size_t cap = 0, len = 0;
    char *text = NULL;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 8192;
            char *t = realloc(text, cap);
            if (!t) {
                free(text), fclose(f);
                return gelan_error("out of memory reading %s", lpath);
            }
            text = t;
        }
        size_t got = fread(text + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    fclose(f);
    if (!text) return 0;
    text[len] = 0;

    int n = 0, rcap = 16;
    float *rows = malloc(sizeof(float) * 5 * rcap);
    if (!rows) {
        free(text);
        return gelan_error("out of memory");
    }
    int lineno = 0;
    char *p = text, *end = text + len;
    while (p < end) {
        /* one line: up to \n, \r\n or \r (Python splitlines) */
        char *q = p;
        while (q < end && *q != '\n' && *q != '\r') q++;
        char *next = q < end ? (q[0] == '\r' && q + 1 < end && q[1] == '\n' ? q + 2 : q + 1) : end;
        *q = 0;
        lineno++;
        char *tok[8];
        int nt = 0;
        char *save = NULL;
        for (char *s = strtok_r(p, " \t\v\f", &save); s; s = strtok_r(NULL, " \t\v\f", &save)) {
            if (nt < 8) tok[nt] = s;
            nt++;
        }
        p = next;
        if (!nt) continue; /* blank lines are skipped, as the official does */
        if (nt != 5) {
            gelan_warn("%s:%d: expected 5 fields (class cx cy w h), found %d; box skipped", lpath, lineno, nt);
            ds->n_bad_lines++;
            continue;
        }
        float v[5];
        int bad = 0;
        for (int k = 0; k < 5 && !bad; k++) {
            char *e;
            /* numpy parses the text as a double, then rounds it to float32 */
            double d = strtod(tok[k], &e);
            if (*e || e == tok[k]) {
                gelan_warn("%s:%d: '%s' is not a number; box skipped", lpath, lineno, tok[k]);
                bad = 1;
            }
            v[k] = (float)d;
        }
        if (!bad && !(v[0] >= 0 && v[0] < nc && v[0] == floorf(v[0]))) {
            gelan_warn("%s:%d: class %s is not an integer in [0, %d); box skipped", lpath, lineno, tok[0], nc);
            bad = 1;
        }
        for (int k = 1; k < 5 && !bad; k++)
            if (!(v[k] >= 0.f && v[k] <= 1.f)) {
                gelan_warn("%s:%d: %s %s is outside [0, 1] (labels are normalised); box skipped", lpath, lineno,
                           k == 1   ? "cx"
                           : k == 2 ? "cy"
                           : k == 3 ? "w"
                                    : "h",
                           tok[k]);
                bad = 1;
            }
        if (bad) {
            ds->n_bad_lines++;
            continue;
        }
        if (n == rcap) {
            rcap *= 2;
            float *t = realloc(rows, sizeof(float) * 5 * rcap);
            if (!t) {
                free(rows), free(text);
                return gelan_error("out of memory");
            }
            rows = t;
        }
        memcpy(rows + 5 * n, v, sizeof v);
        n++;
    }
    free(text);
    /* duplicates: np.unique(lb, axis=0) keeps one of each and sorts the rows */
    if (n > 1) {
        float *s = malloc(sizeof(float) * 5 * n);
        if (!s) {
            free(rows);
            return gelan_error("out of memory");
        }
        memcpy(s, rows, sizeof(float) * 5 * n);
        qsort(s, (size_t)n, sizeof(float) * 5, cmp_row);
        int u = 1;
        for (int i = 1; i < n; i++)
            if (cmp_row(s + 5 * i, s + 5 * (u - 1))) memmove(s + 5 * u++, s + 5 * i, sizeof(float) * 5);
        if (u < n) {
            gelan_warn("%s: %d duplicate labels removed", lpath, n - u);
            ds->n_duplicates += n - u;
            free(rows);
            rows = s, n = u;
        } else {
            free(s);
        }
    }
    if (!n) free(rows), rows = NULL;
    *rows_out = rows, *n_out = n;
    return 0;
}

/* ---- data sets -------------------------------------------------------------------- */

static Dataset *dataset_alloc(int nc, const char *const *names) {
    Dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return NULL;
    ds->nc = nc;
    ds->names = calloc((size_t)nc, sizeof(char *));
    if (!ds->names) return free(ds), NULL;
    for (int i = 0; i < nc; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "class%d", i);
        ds->names[i] = strdup(names && names[i] ? names[i] : buf);
        if (!ds->names[i]) return dataset_free(ds), NULL;
    }
    return ds;
}

Dataset *dataset_from_sources(const char *const *sources, int n_sources, int nc, const char *const *names) {
    if (nc <= 0) {
        gelan_error("dataset: nc must be positive (got %d)", nc);
        return NULL;
    }
    StrList files = {0}, unreadable = {0};
    int rc = 0;
    for (int i = 0; i < n_sources && !rc; i++) {
        const char *s = sources[i];
        if (is_dir(s))
            rc = walk_dir(s, &files, &unreadable);
        else if (!path_exists(s))
            rc = gelan_error("dataset: %s does not exist", s);
        else if (readable_format(s))
            rc = strlist_push(&files, s);
        else if (unreadable_format(s))
            rc = strlist_push(&unreadable, s);
        else
            rc = read_list_file(s, &files, &unreadable);
    }
    if (!rc && unreadable.n)
        gelan_warn("%d image%s in formats stb_image cannot decode (tif, webp, ...) skipped, e.g. %s", unreadable.n,
                   unreadable.n > 1 ? "s" : "", unreadable.v[0]);
    Dataset *ds = rc ? NULL : dataset_alloc(nc, names);
    if (!rc && !ds) rc = gelan_error("out of memory");
    if (!rc) {
        if (files.n) qsort(files.v, (size_t)files.n, sizeof(char *), cmp_str);
        ds->n_bad_images = unreadable.n;
        ds->items = calloc(files.n ? (size_t)files.n : 1, sizeof(DataItem));
        if (!ds->items) rc = gelan_error("out of memory");
    }
    for (int i = 0; !rc && i < files.n; i++) {
        int w, h, c;
        if (image_probe(files.v[i], &w, &h, &c)) {
            gelan_warn("%s: ignoring corrupt image: %s", files.v[i], gelan_last_error());
            ds->n_bad_images++;
            continue;
        }
        if (w < 10 || h < 10) {
            gelan_warn("%s: ignoring image of size %dx%d (<10 pixels)", files.v[i], w, h);
            ds->n_bad_images++;
            continue;
        }
        DataItem *it = &ds->items[ds->n];
        char *lp = label_path_for(files.v[i]);
        bool missing;
        if (!lp || !(it->path = strdup(files.v[i]))) {
            free(lp);
            rc = gelan_error("out of memory");
            break;
        }
        it->w = w, it->h = h;
        rc = read_labels(lp, nc, &it->labels, &it->n, &missing, ds);
        free(lp);
        ds->n++;
        ds->n_missing += missing;
        ds->n_negatives += it->n == 0;
        ds->n_boxes += it->n;
    }
    if (!rc && ds->n == 0) {
        if (files.n || unreadable.n)
            rc = gelan_error("dataset: no usable image in %s%s (%d found, all unreadable)", sources[0],
                             n_sources > 1 ? ", ..." : "", files.n + unreadable.n);
        else
            rc = gelan_error("dataset: no images (.jpg, .jpeg, .png, .bmp) found in %s%s", n_sources ? sources[0] : "",
                             n_sources > 1 ? ", ..." : "");
    }
    strlist_free(&files), strlist_free(&unreadable);
    if (rc) {
        dataset_free(ds);
        return NULL;
    }
    return ds;
}

static Dataset *shapes_dataset(const DataConfig *cfg, DataSplit split) {
    int count = split == SPLIT_TRAIN ? cfg->train_count : cfg->val_count;
    if (count <= 0) {
        gelan_error("%s: the shapes data set has no %s images (%s_count is 0)", cfg->file,
                    split == SPLIT_TRAIN ? "train" : "val", split == SPLIT_TRAIN ? "train" : "val");
        return NULL;
    }
    Dataset *ds = dataset_alloc(cfg->nc, (const char *const *)cfg->names);
    if (!ds || !(ds->items = calloc((size_t)count, sizeof(DataItem)))) {
        dataset_free(ds);
        gelan_error("out of memory");
        return NULL;
    }
    ds->synthetic = true;
    ds->seed = cfg->seed, ds->split = split, ds->img = cfg->img;
    for (int i = 0; i < count; i++) {
        ShapesScene sc;
        shapes_scene(cfg->seed, split, i, cfg->img, &sc);
        DataItem *it = &ds->items[i];
        it->w = it->h = cfg->img;
        it->n = sc.n;
        if (sc.n) {
            if (!(it->labels = malloc(sizeof(float) * 5 * sc.n))) {
                ds->n = i;
                dataset_free(ds);
                gelan_error("out of memory");
                return NULL;
            }
            shapes_labels(&sc, it->labels);
        }
        ds->n_boxes += sc.n;
        ds->n_negatives += sc.n == 0;
    }
    ds->n = count;
    return ds;
}

Dataset *dataset_open(const DataConfig *cfg, DataSplit split) {
    if (cfg->synthetic) return shapes_dataset(cfg, split);
    char **src = split == SPLIT_TRAIN ? cfg->train : cfg->val;
    int n = split == SPLIT_TRAIN ? cfg->n_train : cfg->n_val;
    const char *which = split == SPLIT_TRAIN ? "train" : "val";
    if (!n) {
        gelan_error("%s: no `%s` images given", cfg->file, which);
        return NULL;
    }
    Dataset *ds = dataset_from_sources((const char *const *)src, n, cfg->nc, (const char *const *)cfg->names);
    if (!ds) gelan_error_prefix("%s (%s)", cfg->file, which);
    return ds;
}

static void drop_cache(Dataset *ds) {
    for (int i = 0; ds->cache && i < ds->n; i++) image_free(&ds->cache[i]);
    free(ds->cache);
    ds->cache = NULL, ds->cache_size = 0;
}

void dataset_free(Dataset *ds) {
    if (!ds) return;
    drop_cache(ds);
    for (int i = 0; ds->items && i < ds->n; i++) free(ds->items[i].path), free(ds->items[i].labels);
    for (int i = 0; ds->names && i < ds->nc; i++) free(ds->names[i]);
    free(ds->items), free(ds->names);
    free(ds);
}

void dataset_keep_first(Dataset *ds, int n) {
    if (n < 0 || n >= ds->n) return;
    for (int i = n; i < ds->n; i++) {
        if (ds->cache) image_free(&ds->cache[i]);
        free(ds->items[i].path), free(ds->items[i].labels);
        ds->items[i].path = NULL, ds->items[i].labels = NULL;
    }
    ds->n = n;
    ds->n_boxes = ds->n_negatives = 0;
    for (int i = 0; i < n; i++) ds->n_boxes += ds->items[i].n, ds->n_negatives += ds->items[i].n == 0;
}

int dataset_load_image(const Dataset *ds, int i, Image *out) {
    if (i < 0 || i >= ds->n) return gelan_error("dataset: image index %d out of range [0, %d)", i, ds->n);
    if (ds->synthetic) {
        ShapesScene sc;
        shapes_scene(ds->seed, ds->split, i, ds->img, &sc);
        return shapes_render(&sc, out);
    }
    return image_load(out, ds->items[i].path);
}

/* load_image's size: the longer side becomes img_size, int() as Python. */
static void resized_size(int w0, int h0, int img_size, int *w, int *h) {
    double r = (double)img_size / (h0 > w0 ? h0 : w0);
    *w = (int)(w0 * r), *h = (int)(h0 * r);
    if (*w < 1) *w = 1;
    if (*h < 1) *h = 1;
}

size_t dataset_resized_bytes(const Dataset *ds, int img_size) {
    size_t total = 0;
    for (int i = 0; i < ds->n; i++) {
        int w, h;
        resized_size(ds->items[i].w, ds->items[i].h, img_size, &w, &h);
        total += (size_t)w * h * 3;
    }
    return total;
}

int dataset_cache_resized(Dataset *ds, int img_size, bool augment) {
    drop_cache(ds);
    Image *cache = calloc((size_t)ds->n, sizeof(Image));
    if (!cache) return gelan_error("dataset: out of memory for the image cache");
    for (int i = 0; i < ds->n; i++)
        if (dataset_load_resized(ds, i, img_size, augment, &cache[i], NULL, NULL)) {
            for (int j = 0; j <= i; j++) image_free(&cache[j]);
            free(cache);
            return -1;
        }
    ds->cache = cache, ds->cache_size = img_size, ds->cache_augment = augment;
    return 0;
}

int dataset_load_resized(const Dataset *ds, int i, int img_size, bool augment, Image *out, int *w0_out, int *h0_out) {
    if (ds->cache && img_size == ds->cache_size && augment == ds->cache_augment && i >= 0 && i < ds->n) {
        if (w0_out) *w0_out = ds->items[i].w;
        if (h0_out) *h0_out = ds->items[i].h;
        return image_copy(&ds->cache[i], out);
    }
    Image im = {0};
    if (dataset_load_image(ds, i, &im)) return -1;
    int h0 = im.h, w0 = im.w;
    if (w0_out) *w0_out = w0;
    if (h0_out) *h0_out = h0;
    double r = (double)img_size / (h0 > w0 ? h0 : w0);
    if (r == 1) {
        image_free(out);
        *out = im;
        return 0;
    }
    int w, h;
    resized_size(w0, h0, img_size, &w, &h);
    int rc = image_resize(&im, out, w, h, augment || r > 1 ? RESIZE_LINEAR : RESIZE_AREA);
    image_free(&im);
    return rc;
}
