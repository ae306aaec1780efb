/* safetensors files: a bounds-checked reader and an atomic writer.
 *
 * Format: an 8-byte little-endian header length N, N bytes of JSON
 * `{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}, ...}`,
 * then the data section; offsets are relative to its start. Data is little-endian,
 * as on every machine gelan.c runs on (x86-64, aarch64); no byte swapping is done.
 *
 * The reader loads and validates the whole file up front; after st_open succeeds,
 * every StTensorInfo is known to lie inside the data section with a byte range that
 * matches dtype x shape and overlaps no other tensor. Anything else (truncation,
 * bad JSON, unknown dtype, ...) fails with a gelan_error naming the file and the
 * offending tensor and values, never with an out-of-bounds read.
 *
 * The data section starts 64-byte aligned in memory, so a tensor's data is as
 * aligned as its offset (writers that follow the official layout, including ours,
 * keep every tensor naturally aligned). st_read_f32 works for any alignment. */
#ifndef GELAN_SAFETENSORS_H
#define GELAN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

typedef enum {
    ST_F32,
    ST_F16,
    ST_BF16,
    ST_F64,
    ST_I8,
    ST_U8,
    ST_I16,
    ST_I32,
    ST_I64,
    ST_U16,
    ST_U32,
    ST_U64,
    ST_BOOL
} StDtype;

typedef struct {
    const char *name;
    StDtype dtype;
    int ndim; /* 0 for scalars */
    int64_t shape[ST_MAX_DIMS];
    size_t offset; /* into the data section */
    size_t nbytes;
} StTensorInfo;

typedef struct SafeTensors SafeTensors;

/* Reads and validates the whole file; NULL + gelan_error naming the file. */
SafeTensors *st_open(const char *path);
/* The same from a buffer (copied; the caller keeps ownership); label names it in errors. */
SafeTensors *st_from_memory(const void *buf, size_t len, const char *label);
void st_close(SafeTensors *st);

int st_count(const SafeTensors *st);
/* Tensor i in file order (ascending offset); NULL if i is out of range. */
const StTensorInfo *st_info(const SafeTensors *st, int i);
/* NULL if absent (records no error). */
const StTensorInfo *st_find(const SafeTensors *st, const char *name);
/* ti->nbytes bytes, valid until st_close. */
const void *st_data(const SafeTensors *st, const StTensorInfo *ti);
size_t st_numel(const StTensorInfo *ti); /* 1 for scalars */
size_t st_dtype_size(StDtype d);
const char *st_dtype_name(StDtype d); /* "F32", "BF16", ... as in the file */

/* Converts tensor `name` (any dtype: floats, integers, BOOL as 0/1) to float into
 * dst. n must equal its element count; the error names the file, the tensor and
 * both counts. Also an error if the tensor is absent. */
int st_read_f32(const SafeTensors *st, const char *name, float *dst, size_t n);

/* __metadata__ (string -> string), in file order. st_metadata is NULL if the key is
 * absent; key/value i are NULL if i is out of range. */
const char *st_metadata(const SafeTensors *st, const char *key);
int st_metadata_count(const SafeTensors *st);
const char *st_metadata_key(const SafeTensors *st, int i);
const char *st_metadata_value(const SafeTensors *st, int i);

/* ---- writer ------------------------------------------------------------------ */
typedef struct StWriter StWriter;

StWriter *st_writer_new(void);
/* Copies name and shape; data (nbytes, which must equal numel x dtype size) is
 * referenced - the caller keeps it alive until save/free - unless copy != 0. */
int st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape, const void *data,
                  size_t nbytes, int copy);
/* An F32 tensor with an int shape; data is referenced. */
int st_writer_add_f32(StWriter *w, const char *name, int ndim, const int *shape, const float *data);
/* Copies both; setting a key again replaces its value. */
int st_writer_set_metadata(StWriter *w, const char *key, const char *value);
/* Writes PATH.tmp.<pid>, fsyncs, renames over path; on any failure nothing new is
 * left at path (an existing file is untouched) and the temporary is removed.
 * Tensors are laid out like the official writer: by dtype size (largest first,
 * which keeps each one aligned), then by name; the header is padded with spaces
 * to a multiple of 8. Duplicate names are an error. The writer can be saved again. */
int st_writer_save(StWriter *w, const char *path);
void st_writer_free(StWriter *w);

#endif
