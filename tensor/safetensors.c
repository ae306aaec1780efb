/* The reader keeps the parsed JSON header alive: tensor names and metadata point
 * into it. The data section lives in its own 64-byte aligned buffer, so F32
 * tensors written at 4-byte multiples can be used in place. All validation happens
 * in parse_header(); the accessors after it trust what it checked. */
#include "tensor/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor/error.h"
#include "tensor/json.h"

#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

struct SafeTensors {
    char *label;
    unsigned char *data; /* data section, 64-byte aligned */
    size_t data_len;
    JsonValue *header;
    int n;
    StTensorInfo *infos;          /* ascending offset */
    const StTensorInfo **by_name; /* ascending name, for st_find */
    int nmeta;
    const char **meta_keys, **meta_vals;
};

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}, [ST_F64] = {"F64", 8}, [ST_I8] = {"I8", 1},
    [ST_U8] = {"U8", 1},   [ST_I16] = {"I16", 2}, [ST_I32] = {"I32", 4},   [ST_I64] = {"I64", 8}, [ST_U16] = {"U16", 2},
    [ST_U32] = {"U32", 4}, [ST_U64] = {"U64", 8}, [ST_BOOL] = {"BOOL", 1},
};
#define N_DTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

size_t st_dtype_size(StDtype d) { return (int)d >= 0 && (int)d < N_DTYPES ? dtypes[d].size : 0; }
const char *st_dtype_name(StDtype d) { return (int)d >= 0 && (int)d < N_DTYPES ? dtypes[d].name : "?"; }

/* numel x elem_size with overflow detection; -1 on overflow. */
static int checked_bytes(int ndim, const int64_t *shape, size_t elem_size, size_t *numel_out, size_t *bytes_out) {
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        size_t d = (size_t)shape[i];
        if ((uint64_t)d != (uint64_t)shape[i]) return -1; /* 32-bit size_t */
        if (d != 0 && numel > SIZE_MAX / d) return -1;
        numel *= d;
    }
    if (elem_size && numel > SIZE_MAX / elem_size) return -1;
    *numel_out = numel;
    *bytes_out = numel * elem_size;
    return 0;
}

size_t st_numel(const StTensorInfo *ti) {
    size_t n = 1;
    for (int i = 0; i < ti->ndim; i++) n *= (size_t)ti->shape[i];
    return n;
}

/* ---- reader -------------------------------------------------------------------- */

void st_close(SafeTensors *st) {
    if (!st) return;
    free(st->label);
    free(st->data);
    json_free(st->header);
    free(st->infos);
    free(st->by_name);
    free(st->meta_keys);
    free(st->meta_vals);
    free(st);
}

/* Aligned, and never a zero-byte request. */
static unsigned char *alloc_data(size_t len) {
    size_t rounded = (len + 63) & ~(size_t)63;
    return aligned_alloc(64, rounded ? rounded : 64);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const StTensorInfo *)a)->name, ((const StTensorInfo *)b)->name);
}

static int cmp_offset(const void *a, const void *b) {
    const StTensorInfo *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_name_ptr(const void *a, const void *b) {
    return strcmp((*(const StTensorInfo *const *)a)->name, (*(const StTensorInfo *const *)b)->name);
}

/* The entry's member `key`: NULL with an error if absent or repeated. */
static const JsonValue *entry_field(const char *label, const char *name, const JsonValue *entry, const char *key) {
    const JsonValue *found = NULL;
    for (size_t i = 0; i < entry->count; i++) {
        if (strcmp(entry->keys[i], key) != 0) continue;
        if (found) {
            gelan_error("%s: tensor \"%.200s\": \"%s\" appears twice", label, name, key);
            return NULL;
        }
        found = &entry->items[i];
    }
    if (!found) gelan_error("%s: tensor \"%.200s\": missing \"%s\"", label, name, key);
    return found;
}

/* A non-negative JSON integer; `what` names it in the error. */
static int get_index(const char *label, const char *name, const char *what, const JsonValue *v, int64_t *out) {
    if (v->type != JSON_NUMBER)
        return gelan_error("%s: tensor \"%.200s\": %s is a %s, not an integer", label, name, what,
                           json_type_name(v->type));
    if (!v->is_int)
        return gelan_error("%s: tensor \"%.200s\": %s %.17g is not an integer (or is too large)", label, name, what,
                           v->number);
    if (v->integer < 0)
        return gelan_error("%s: tensor \"%.200s\": %s %lld is negative", label, name, what, (long long)v->integer);
    *out = v->integer;
    return 0;
}

static int parse_tensor(SafeTensors *st, const char *name, const JsonValue *entry, StTensorInfo *ti) {
    const char *label = st->label;
    if (entry->type != JSON_OBJECT)
        return gelan_error("%s: tensor \"%.200s\": entry is a %s, not an object", label, name,
                           json_type_name(entry->type));
    const JsonValue *dt = entry_field(label, name, entry, "dtype");
    const JsonValue *shape = entry_field(label, name, entry, "shape");
    const JsonValue *offs = entry_field(label, name, entry, "data_offsets");
    if (!dt || !shape || !offs) return -1;

    if (dt->type != JSON_STRING)
        return gelan_error("%s: tensor \"%.200s\": dtype is a %s, not a string", label, name, json_type_name(dt->type));
    int d = 0;
    while (d < N_DTYPES && strcmp(dtypes[d].name, dt->str) != 0) d++;
    if (d == N_DTYPES || strlen(dt->str) != dt->len)
        return gelan_error("%s: tensor \"%.200s\": unknown dtype \"%.40s\"", label, name, dt->str);

    if (shape->type != JSON_ARRAY)
        return gelan_error("%s: tensor \"%.200s\": shape is a %s, not an array", label, name,
                           json_type_name(shape->type));
    if (shape->count > ST_MAX_DIMS)
        return gelan_error("%s: tensor \"%.200s\": shape has %zu dims, at most %d are supported", label, name,
                           shape->count, ST_MAX_DIMS);
    ti->name = name;
    ti->dtype = (StDtype)d;
    ti->ndim = (int)shape->count;
    for (int i = 0; i < ti->ndim; i++)
        if (get_index(label, name, "shape entry", &shape->items[i], &ti->shape[i]) != 0) return -1;

    if (offs->type != JSON_ARRAY || offs->count != 2)
        return gelan_error("%s: tensor \"%.200s\": data_offsets must be an array [begin, end]", label, name);
    int64_t begin = 0, end = 0;
    if (get_index(label, name, "data_offsets begin", &offs->items[0], &begin) != 0 ||
        get_index(label, name, "data_offsets end", &offs->items[1], &end) != 0)
        return -1;
    if (begin > end)
        return gelan_error("%s: tensor \"%.200s\": data_offsets begin %lld > end %lld", label, name, (long long)begin,
                           (long long)end);
    if ((uint64_t)end > st->data_len)
        return gelan_error("%s: tensor \"%.200s\": data_offsets end %lld is beyond the data section (%zu bytes)", label,
                           name, (long long)end, st->data_len);

    size_t numel, nbytes;
    if (checked_bytes(ti->ndim, ti->shape, dtypes[d].size, &numel, &nbytes) != 0)
        return gelan_error("%s: tensor \"%.200s\": element count of the shape times %zu bytes overflows", label, name,
                           dtypes[d].size);
    ti->offset = (size_t)begin;
    ti->nbytes = (size_t)(end - begin);
    if (nbytes != ti->nbytes)
        return gelan_error(
            "%s: tensor \"%.200s\": shape has %zu elements of %s (%zu bytes) but data_offsets [%lld, %lld] "
            "span %zu bytes",
            label, name, numel, dtypes[d].name, nbytes, (long long)begin, (long long)end, ti->nbytes);
    return 0;
}

static int parse_metadata(SafeTensors *st, const JsonValue *m) {
    if (st->meta_keys) return gelan_error("%s: __metadata__ appears twice", st->label);
    if (m->type != JSON_OBJECT)
        return gelan_error("%s: __metadata__ is a %s, not an object", st->label, json_type_name(m->type));
    st->meta_keys = malloc((m->count + 1) * sizeof *st->meta_keys);
    st->meta_vals = malloc((m->count + 1) * sizeof *st->meta_vals);
    if (!st->meta_keys || !st->meta_vals) return gelan_error("%s: out of memory", st->label);
    for (size_t i = 0; i < m->count; i++) {
        const char *key = m->keys[i];
        const JsonValue *v = &m->items[i];
        if (strlen(key) != m->key_lens[i])
            return gelan_error("%s: __metadata__ key \"%.200s\" contains a NUL character", st->label, key);
        if (v->type != JSON_STRING)
            return gelan_error("%s: __metadata__ value for \"%.200s\" is a %s, not a string", st->label, key,
                               json_type_name(v->type));
        if (strlen(v->str) != v->len)
            return gelan_error("%s: __metadata__ value for \"%.200s\" contains a NUL character", st->label, key);
        for (size_t j = 0; j < i; j++)
            if (strcmp(st->meta_keys[j], key) == 0)
                return gelan_error("%s: __metadata__ key \"%.200s\" appears twice", st->label, key);
        st->meta_keys[i] = key;
        st->meta_vals[i] = v->str;
    }
    st->nmeta = (int)m->count;
    return 0;
}

static int parse_header(SafeTensors *st, const char *text, size_t len) {
    st->header = json_parse(text, len);
    if (!st->header) {
        gelan_error_prefix("%s: header is not valid JSON", st->label);
        return -1;
    }
    const JsonValue *h = st->header;
    if (h->type != JSON_OBJECT)
        return gelan_error("%s: header is a JSON %s, not an object", st->label, json_type_name(h->type));
    if (h->count > (size_t)1 << 30) return gelan_error("%s: header has too many entries", st->label);
    st->infos = malloc((h->count + 1) * sizeof *st->infos);
    if (!st->infos) return gelan_error("%s: out of memory", st->label);
    for (size_t i = 0; i < h->count; i++) {
        const char *key = h->keys[i];
        if (strlen(key) != h->key_lens[i])
            return gelan_error("%s: tensor name \"%.200s\" contains a NUL character", st->label, key);
        if (strcmp(key, "__metadata__") == 0) {
            if (parse_metadata(st, &h->items[i]) != 0) return -1;
            continue;
        }
        if (parse_tensor(st, key, &h->items[i], &st->infos[st->n]) != 0) return -1;
        st->n++;
    }

    /* Sorted by name, duplicates are adjacent. */
    qsort(st->infos, (size_t)st->n, sizeof *st->infos, cmp_name);
    for (int i = 1; i < st->n; i++)
        if (strcmp(st->infos[i].name, st->infos[i - 1].name) == 0)
            return gelan_error("%s: duplicate tensor name \"%.200s\"", st->label, st->infos[i].name);

    /* File order; then no two non-empty ranges may share a byte. The official
     * format also wants the ranges to tile the data section without gaps; gaps
     * are harmless, so they are accepted. */
    qsort(st->infos, (size_t)st->n, sizeof *st->infos, cmp_offset);
    const StTensorInfo *prev = NULL;
    for (int i = 0; i < st->n; i++) {
        const StTensorInfo *ti = &st->infos[i];
        if (ti->nbytes == 0) continue;
        if (prev && ti->offset < prev->offset + prev->nbytes)
            return gelan_error("%s: tensors \"%.200s\" [%zu, %zu) and \"%.200s\" [%zu, %zu) overlap", st->label,
                               prev->name, prev->offset, prev->offset + prev->nbytes, ti->name, ti->offset,
                               ti->offset + ti->nbytes);
        prev = ti;
    }

    /* infos stay put from here on, so st_find can index them by pointer. */
    st->by_name = malloc(((size_t)st->n + 1) * sizeof *st->by_name);
    if (!st->by_name) return gelan_error("%s: out of memory", st->label);
    for (int i = 0; i < st->n; i++) st->by_name[i] = &st->infos[i];
    qsort(st->by_name, (size_t)st->n, sizeof *st->by_name, cmp_name_ptr);
    return 0;
}

static SafeTensors *st_new(const char *label) {
    SafeTensors *st = calloc(1, sizeof *st);
    if (st) st->label = strdup(label ? label : "<memory>");
    if (!st || !st->label) {
        free(st);
        gelan_error("%s: out of memory", label ? label : "<memory>");
        return NULL;
    }
    return st;
}

static uint64_t read_le64(const unsigned char *b) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

/* Checks the 8-byte prefix against the total size; the header length on success. */
static int check_prefix(const char *label, const unsigned char *prefix, uint64_t total, size_t *header_len) {
    if (total < 8)
        return gelan_error("%s: file is %llu bytes, shorter than the 8-byte header length", label,
                           (unsigned long long)total);
    uint64_t n = read_le64(prefix);
    if (n > ST_MAX_HEADER)
        return gelan_error("%s: header length %llu is absurd (more than 100 MB)", label, (unsigned long long)n);
    if (n > total - 8)
        return gelan_error("%s: header length %llu exceeds the %llu bytes after the length field (truncated file?)",
                           label, (unsigned long long)n, (unsigned long long)(total - 8));
    *header_len = (size_t)n;
    return 0;
}

/* A tiny all-text file is most likely a symlink that was checked out as a plain
 * file (git with core.symlinks=false); saying so saves a puzzled look at the
 * "absurd header length". Appends to the current error. */
static void add_text_hint(const unsigned char *b, size_t n) {
    if (n < 8 || n > 1024) return;
    for (size_t i = 0; i < n; i++)
        if (b[i] < 0x20 || b[i] > 0x7E) return;
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", gelan_last_error());
    gelan_error("%s; the file is the text \"%.*s\" - a symlink stored as a plain file?", msg, (int)n, (const char *)b);
}

SafeTensors *st_from_memory(const void *buf, size_t len, const char *label) {
    SafeTensors *st = st_new(label);
    if (!st) return NULL;
    const unsigned char *b = buf;
    size_t hlen = 0;
    if (check_prefix(st->label, b, len, &hlen) != 0) {
        add_text_hint(b, len);
        goto fail;
    }
    st->data_len = len - 8 - hlen;
    st->data = alloc_data(st->data_len);
    if (!st->data) {
        gelan_error("%s: out of memory for %zu bytes of data", st->label, st->data_len);
        goto fail;
    }
    if (st->data_len) memcpy(st->data, b + 8 + hlen, st->data_len);
    if (parse_header(st, (const char *)b + 8, hlen) != 0) goto fail;
    return st;
fail:
    st_close(st);
    return NULL;
}

static int read_exact(FILE *f, void *dst, size_t n, const char *path) {
    if (n && fread(dst, 1, n, f) != n)
        return gelan_error("%s: read failed: %s", path, ferror(f) ? strerror(errno) : "file shrank while reading");
    return 0;
}

SafeTensors *st_open(const char *path) {
    SafeTensors *st = st_new(path);
    if (!st) return NULL;
    char *header = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        gelan_error("%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        gelan_error("%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        gelan_error("%s: not a regular file", path);
        goto fail;
    }
    unsigned char prefix[8] = {0};
    size_t hlen = 0;
    uint64_t total = (uint64_t)sb.st_size;
    if (total >= 8 && read_exact(f, prefix, 8, path) != 0) goto fail;
    if (check_prefix(path, prefix, total, &hlen) != 0) {
        unsigned char small[1024];
        memcpy(small, prefix, 8);
        if (total >= 8 && total <= sizeof small && read_exact(f, small + 8, (size_t)total - 8, path) == 0) {
            check_prefix(path, prefix, total, &hlen); /* restore its message */
            add_text_hint(small, (size_t)total);
        }
        goto fail;
    }
    if (total - 8 - hlen > SIZE_MAX - 64) {
        gelan_error("%s: file too large", path);
        goto fail;
    }
    st->data_len = (size_t)(total - 8 - hlen);
    header = malloc(hlen + 1);
    st->data = alloc_data(st->data_len);
    if (!header || !st->data) {
        gelan_error("%s: out of memory for %zu header + %zu data bytes", path, hlen, st->data_len);
        goto fail;
    }
    if (read_exact(f, header, hlen, path) != 0 || read_exact(f, st->data, st->data_len, path) != 0) goto fail;
    fclose(f);
    f = NULL;
    if (parse_header(st, header, hlen) != 0) goto fail;
    free(header);
    return st;
fail:
    if (f) fclose(f);
    free(header);
    st_close(st);
    return NULL;
}

int st_count(const SafeTensors *st) { return st->n; }

const StTensorInfo *st_info(const SafeTensors *st, int i) { return i >= 0 && i < st->n ? &st->infos[i] : NULL; }

const StTensorInfo *st_find(const SafeTensors *st, const char *name) {
    int lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const StTensorInfo *ti = st->by_name[mid];
        int c = strcmp(name, ti->name);
        if (c == 0) return ti;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

const void *st_data(const SafeTensors *st, const StTensorInfo *ti) { return st->data + ti->offset; }

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
    if (exp == 0) {
        float f = (float)mant * 0x1p-24f; /* zero or subnormal: mant * 2^-24 exactly */
        return sign ? -f : f;
    }
    if (exp == 31)
        bits = sign | 0x7F800000u | (mant << 13); /* inf / nan */
    else
        bits = sign | ((exp + 112) << 23) | (mant << 13); /* rebias 15 -> 127 */
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16; /* bf16 is the top half of an f32 */
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int st_read_f32(const SafeTensors *st, const char *name, float *dst, size_t n) {
    const StTensorInfo *ti = st_find(st, name);
    if (!ti) return gelan_error("%s: no tensor \"%.200s\"", st->label, name);
    size_t numel = st_numel(ti);
    if (n != numel)
        return gelan_error("%s: tensor \"%.200s\" has %zu elements, the caller expects %zu", st->label, name, numel, n);
    const unsigned char *src = st_data(st, ti);
    /* memcpy per element: the data need not be aligned for its type */
#define CONVERT(T, expr)                          \
    for (size_t i = 0; i < n; i++) {              \
        T v;                                      \
        memcpy(&v, src + i * sizeof v, sizeof v); \
        dst[i] = (float)(expr);                   \
    }
    switch (ti->dtype) {
        case ST_F32:
            if (n) memcpy(dst, src, n * sizeof(float));
            break;
        case ST_F16:
            CONVERT(uint16_t, half_to_float(v));
            break;
        case ST_BF16:
            CONVERT(uint16_t, bf16_to_float(v));
            break;
        case ST_F64:
            CONVERT(double, v);
            break;
        case ST_I8:
            CONVERT(int8_t, v);
            break;
        case ST_U8:
            CONVERT(uint8_t, v);
            break;
        case ST_BOOL:
            CONVERT(uint8_t, v != 0);
            break;
        case ST_I16:
            CONVERT(int16_t, v);
            break;
        case ST_U16:
            CONVERT(uint16_t, v);
            break;
        case ST_I32:
            CONVERT(int32_t, v);
            break;
        case ST_U32:
            CONVERT(uint32_t, v);
            break;
        case ST_I64:
            CONVERT(int64_t, v);
            break;
        case ST_U64:
            CONVERT(uint64_t, v);
            break;
    }
#undef CONVERT
    return 0;
}

const char *st_metadata(const SafeTensors *st, const char *key) {
    for (int i = 0; i < st->nmeta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_vals[i];
    return NULL;
}
int st_metadata_count(const SafeTensors *st) { return st->nmeta; }
const char *st_metadata_key(const SafeTensors *st, int i) { return i >= 0 && i < st->nmeta ? st->meta_keys[i] : NULL; }
const char *st_metadata_value(const SafeTensors *st, int i) {
    return i >= 0 && i < st->nmeta ? st->meta_vals[i] : NULL;
}

/* ---- writer -------------------------------------------------------------------- */

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
    void *owned; /* the copy, when copy != 0 */
} StEntry;

struct StWriter {
    StEntry *e;
    size_t n, cap;
    char **mkeys, **mvals;
    size_t nmeta, mcap;
};

StWriter *st_writer_new(void) {
    StWriter *w = calloc(1, sizeof *w);
    if (!w) gelan_error("st_writer_new: out of memory");
    return w;
}

void st_writer_free(StWriter *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) {
        free(w->e[i].name);
        free(w->e[i].owned);
    }
    for (size_t i = 0; i < w->nmeta; i++) {
        free(w->mkeys[i]);
        free(w->mvals[i]);
    }
    free(w->e);
    free(w->mkeys);
    free(w->mvals);
    free(w);
}

int st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape, const void *data,
                  size_t nbytes, int copy) {
    if (!name || !*name) return gelan_error("st_writer_add: empty tensor name");
    if (strcmp(name, "__metadata__") == 0) return gelan_error("st_writer_add: \"__metadata__\" is not a tensor name");
    if ((int)dtype < 0 || (int)dtype >= N_DTYPES)
        return gelan_error("st_writer_add: tensor \"%.200s\": invalid dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        return gelan_error("st_writer_add: tensor \"%.200s\": %d dims, at most %d are supported", name, ndim,
                           ST_MAX_DIMS);
    size_t numel, want;
    if (checked_bytes(ndim, shape, dtypes[dtype].size, &numel, &want) != 0)
        return gelan_error("st_writer_add: tensor \"%.200s\": negative or overflowing shape", name);
    if (want != nbytes)
        return gelan_error("st_writer_add: tensor \"%.200s\": %zu elements of %s need %zu bytes, got %zu", name, numel,
                           dtypes[dtype].name, want, nbytes);
    if (nbytes && !data) return gelan_error("st_writer_add: tensor \"%.200s\": NULL data", name);
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 64;
        StEntry *e = realloc(w->e, nc * sizeof *e);
        if (!e) return gelan_error("st_writer_add: out of memory");
        w->e = e;
        w->cap = nc;
    }
    StEntry *en = &w->e[w->n];
    memset(en, 0, sizeof *en);
    en->name = strdup(name);
    if (copy && nbytes) {
        en->owned = malloc(nbytes);
        if (en->owned) memcpy(en->owned, data, nbytes);
    }
    if (!en->name || (copy && nbytes && !en->owned)) {
        free(en->name);
        free(en->owned);
        return gelan_error("st_writer_add: tensor \"%.200s\": out of memory", name);
    }
    en->dtype = dtype;
    en->ndim = ndim;
    for (int i = 0; i < ndim; i++) en->shape[i] = shape[i];
    en->data = en->owned ? en->owned : data;
    en->nbytes = nbytes;
    w->n++;
    return 0;
}

int st_writer_add_f32(StWriter *w, const char *name, int ndim, const int *shape, const float *data) {
    int64_t s[ST_MAX_DIMS];
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        return gelan_error("st_writer_add: tensor \"%.200s\": %d dims, at most %d are supported", name ? name : "",
                           ndim, ST_MAX_DIMS);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        numel *= shape[i] > 0 ? (size_t)shape[i] : 0;
    }
    return st_writer_add(w, name, ST_F32, ndim, s, data, numel * sizeof(float), 0);
}

int st_writer_set_metadata(StWriter *w, const char *key, const char *value) {
    if (!key || !value) return gelan_error("st_writer_set_metadata: NULL key or value");
    char *v = strdup(value);
    if (!v) return gelan_error("st_writer_set_metadata: out of memory for \"%.200s\"", key);
    for (size_t i = 0; i < w->nmeta; i++)
        if (strcmp(w->mkeys[i], key) == 0) {
            free(w->mvals[i]);
            w->mvals[i] = v;
            return 0;
        }
    if (w->nmeta == w->mcap) {
        size_t nc = w->mcap ? w->mcap * 2 : 16;
        char **k = realloc(w->mkeys, nc * sizeof *k);
        if (k) w->mkeys = k;
        char **vv = k ? realloc(w->mvals, nc * sizeof *vv) : NULL;
        if (vv) w->mvals = vv;
        if (!k || !vv) {
            free(v);
            return gelan_error("st_writer_set_metadata: out of memory");
        }
        w->mcap = nc;
    }
    w->mkeys[w->nmeta] = strdup(key);
    if (!w->mkeys[w->nmeta]) {
        free(v);
        return gelan_error("st_writer_set_metadata: out of memory");
    }
    w->mvals[w->nmeta++] = v;
    return 0;
}

/* A growable string for the header. */
typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} Buf;

static void buf_reserve(Buf *b, size_t extra) {
    if (b->oom || b->len + extra + 1 <= b->cap) return;
    size_t nc = b->cap ? b->cap : 4096;
    while (nc < b->len + extra + 1) nc *= 2;
    char *s = realloc(b->s, nc);
    if (!s) {
        b->oom = 1;
        return;
    }
    b->s = s;
    b->cap = nc;
}

static void buf_add(Buf *b, const char *s) {
    size_t n = strlen(s);
    buf_reserve(b, n);
    if (b->oom) return;
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

static void buf_quote(Buf *b, const char *s) {
    size_t n = strlen(s);
    size_t need = json_escape(NULL, 0, s, n);
    buf_reserve(b, need);
    if (b->oom) return;
    json_escape(b->s + b->len, need + 1, s, n);
    b->len += need;
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp((*(const StEntry *const *)a)->name, (*(const StEntry *const *)b)->name);
}

/* Official layout: larger dtypes first (keeps every tensor aligned), then name. */
static int cmp_entry_layout(const void *a, const void *b) {
    const StEntry *x = *(const StEntry *const *)a, *y = *(const StEntry *const *)b;
    size_t sx = dtypes[x->dtype].size, sy = dtypes[y->dtype].size;
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* The header JSON, padded with spaces to a multiple of 8. NULL when out of memory. */
static char *build_header(StWriter *w, StEntry **order, size_t *len_out) {
    Buf b = {0};
    char num[64];
    buf_add(&b, "{");
    if (w->nmeta) {
        buf_add(&b, "\"__metadata__\":{");
        for (size_t i = 0; i < w->nmeta; i++) {
            if (i) buf_add(&b, ",");
            buf_quote(&b, w->mkeys[i]);
            buf_add(&b, ":");
            buf_quote(&b, w->mvals[i]);
        }
        buf_add(&b, "}");
    }
    size_t offset = 0;
    for (size_t i = 0; i < w->n; i++) {
        const StEntry *e = order[i];
        if (i || w->nmeta) buf_add(&b, ",");
        buf_quote(&b, e->name);
        buf_add(&b, ":{\"dtype\":\"");
        buf_add(&b, dtypes[e->dtype].name);
        buf_add(&b, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            snprintf(num, sizeof num, d ? ",%lld" : "%lld", (long long)e->shape[d]);
            buf_add(&b, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", offset, offset + e->nbytes);
        buf_add(&b, num);
        offset += e->nbytes;
    }
    buf_add(&b, "}");
    while (!b.oom && b.len % 8) buf_add(&b, " ");
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    *len_out = b.len;
    return b.s;
}

/* Best effort: makes the rename itself durable. */
static void fsync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if ((size_t)(slash - path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    else
        return;
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int st_writer_save(StWriter *w, const char *path) {
    StEntry **order = malloc((w->n + 1) * sizeof *order);
    if (!order) return gelan_error("%s: out of memory", path);
    for (size_t i = 0; i < w->n; i++) order[i] = &w->e[i];
    qsort(order, w->n, sizeof *order, cmp_entry_name);
    for (size_t i = 1; i < w->n; i++)
        if (strcmp(order[i]->name, order[i - 1]->name) == 0) {
            gelan_error("%s: duplicate tensor name \"%.200s\"", path, order[i]->name);
            free(order);
            return -1;
        }
    qsort(order, w->n, sizeof *order, cmp_entry_layout);

    size_t hlen = 0;
    char *header = build_header(w, order, &hlen);
    if (!header) {
        free(order);
        return gelan_error("%s: out of memory for the header", path);
    }

    char *tmp = malloc(strlen(path) + 32);
    if (!tmp) {
        free(header);
        free(order);
        return gelan_error("%s: out of memory", path);
    }
    sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) {
        gelan_error("%s: cannot create %s: %s", path, tmp, strerror(errno));
        goto done;
    }
    unsigned char prefix[8];
    for (int i = 0; i < 8; i++) prefix[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    int ok = write_all(fd, prefix, 8) == 0 && write_all(fd, header, hlen) == 0;
    for (size_t i = 0; ok && i < w->n; i++) ok = write_all(fd, order[i]->data, order[i]->nbytes) == 0;
    if (!ok || fsync(fd) != 0) {
        gelan_error("%s: writing %s failed: %s", path, tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    if (close(fd) != 0) {
        gelan_error("%s: closing %s failed: %s", path, tmp, strerror(errno));
        unlink(tmp);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        gelan_error("%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
        unlink(tmp);
        goto done;
    }
    fsync_parent_dir(path);
    rc = 0;
done:
    free(tmp);
    free(header);
    free(order);
    return rc;
}
