/* libFuzzer target for the safetensors reader (and the JSON parser under it).
 * Every input must either load - and then every byte of every tensor must be
 * readable and convertible - or fail with a message; ASan catches the rest.
 * Build and run: make fuzz (see the Makefile).
 *
 * Compiled with -DFUZZ_SEED_MAIN (and without libFuzzer) it is instead a small
 * program that writes the seed corpus with the real writer, plus a dictionary:
 *     fuzz_seed CORPUS_DIR DICT_FILE */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/error.h"
#include "tensor/json.h"
#include "tensor/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* The raw bytes as a JSON document too: the parser sees more shapes this way. */
    gelan_clear_error();
    JsonValue *j = json_parse((const char *)data, size);
    json_free(j);

    gelan_clear_error();
    SafeTensors *st = st_from_memory(data, size, "fuzz");
    if (!st) {
        if (gelan_last_error()[0] == '\0') abort(); /* a failure must say why */
        return 0;
    }
    for (int i = 0; i < st_count(st); i++) {
        const StTensorInfo *ti = st_info(st, i);
        if (st_find(st, ti->name) != ti) abort(); /* names are unique */
        if (strlen(ti->name) > size) abort();
        size_t n = st_numel(ti);
        if (n * st_dtype_size(ti->dtype) != ti->nbytes || ti->offset + ti->nbytes > size) abort();
        /* touches every byte of the range (ASan checks memcpy's source) */
        unsigned char *copy = malloc(ti->nbytes ? ti->nbytes : 1);
        float *f = malloc(n ? n * sizeof *f : 1);
        if (copy && f) {
            memcpy(copy, st_data(st, ti), ti->nbytes);
            if (st_read_f32(st, ti->name, f, n) != 0) abort();
            if (ti->dtype == ST_F32 && memcmp(f, copy, ti->nbytes) != 0) abort();
        }
        free(copy);
        free(f);
    }
    for (int i = 0; i < st_metadata_count(st); i++) {
        const char *k = st_metadata_key(st, i);
        if (st_metadata(st, k) == NULL || strlen(k) > size || strlen(st_metadata_value(st, i)) > size) abort();
    }
    st_close(st);
    return 0;
}

#ifdef FUZZ_SEED_MAIN
static int save_seed(StWriter *w, const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = st_writer_save(w, path);
    if (rc != 0) fprintf(stderr, "fuzz_seed: %s\n", gelan_last_error());
    st_writer_free(w);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fuzz_seed CORPUS_DIR DICT_FILE\n");
        return 2;
    }
    /* one tensor of every dtype, a scalar, an empty tensor, metadata with escapes */
    static const unsigned char bytes[64] = {0, 60, 0, 192, 255, 123, 1, 0, 128, 63, 0, 191, 73, 64, 7, 9};
    int64_t s3[1] = {3}, s22[2] = {2, 2}, s0[2] = {4, 0};
    StWriter *w = st_writer_new();
    for (int d = ST_F32; d <= ST_BOOL; d++) {
        char name[32];
        snprintf(name, sizeof name, "t.%s", st_dtype_name((StDtype)d));
        if (st_writer_add(w, name, (StDtype)d, 1, s3, bytes, 3 * st_dtype_size((StDtype)d), 0) != 0) return 1;
    }
    float one = 1.0f;
    if (st_writer_add(w, "scalar", ST_F32, 0, NULL, &one, 4, 0) != 0 ||
        st_writer_add(w, "empty", ST_F32, 2, s0, NULL, 0, 0) != 0 ||
        st_writer_set_metadata(w, "format", "gelan-ckpt/1") != 0 ||
        st_writer_set_metadata(w, "names", "[\"person\",\"caf\xC3\xA9\"]") != 0 ||
        st_writer_set_metadata(w, "cfg", "nc: 80\n\tdepth: \"1.0\"\x01") != 0)
        return 1;
    if (save_seed(w, argv[1], "seed_all_dtypes.safetensors") != 0) return 1;
    /* the common case: a few F32 tensors, sorted, contiguous */
    w = st_writer_new();
    if (st_writer_add(w, "model.0.conv.weight", ST_F32, 2, s22, bytes, 16, 0) != 0 ||
        st_writer_add(w, "model.0.bn.bias", ST_F32, 1, s3, bytes + 16, 12, 0) != 0)
        return 1;
    if (save_seed(w, argv[1], "seed_f32.safetensors") != 0) return 1;

    FILE *f = fopen(argv[2], "w");
    if (!f) return 1;
    /* libFuzzer dictionary: kwN="token", with " and \\ escaped */
    static const char *const tokens[] = {
        "\"dtype\"",
        "\"shape\"",
        "\"data_offsets\"",
        "\"__metadata__\"",
        "\"F32\"",
        "\"F16\"",
        "\"BF16\"",
        "\"F64\"",
        "\"I64\"",
        "\"U64\"",
        "\"BOOL\"",
        "\\u",
        "\\ud83d\\ude00",
        "18446744073709551615",
        "9223372036854775807",
        "-1",
        "1e308",
        "[]",
        "{}",
        "true",
        "null",
        "\\\"",
    };
    for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
        fprintf(f, "kw%zu=\"", i);
        for (const char *c = tokens[i]; *c; c++) fprintf(f, *c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
        fprintf(f, "\"\n");
    }
    return fclose(f) == 0 ? 0 : 1;
}
#endif
