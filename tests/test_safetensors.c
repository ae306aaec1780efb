/* safetensors reader/writer and the JSON parser under it: round trips, the golden
 * files, and one test per class of malformed input (each must fail with a message
 * naming the file and the offending tensor or value, never read out of bounds). */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor/error.h"
#include "tensor/json.h"
#include "tensor/safetensors.h"
#include "tests/testutil.h"

/* A per-process scratch path, so parallel runs do not collide. */
static const char *tmp_path(const char *name) {
    static char bufs[4][256];
    static int next;
    char *b = bufs[next++ & 3];
    snprintf(b, sizeof bufs[0], "/tmp/gelan_test_st_%ld_%s", (long)getpid(), name);
    return b;
}

static int contains(const char *hay, const char *needle) {
    if (strstr(hay, needle)) return 1;
    fprintf(stderr, "\n  message \"%s\" lacks \"%s\"\n", hay, needle);
    return 0;
}

/* ---- JSON ------------------------------------------------------------------------ */

static void test_json_values(void) {
    const char *text =
        " {\"a\": [1, -2.5e1, true, false, null], \"b\\u00e9\\ud83d\\ude00\": \"x\\\"\\\\\\/\\n\","
        " \"big\": 9007199254740993, \"min\": -9223372036854775808, \"over\": 9223372036854775808,"
        " \"one\": 1.0, \"e\": {}} ";
    JsonValue *v = json_parse(text, strlen(text));
    CU_ASSERT_NONNULL_OK(v);
    if (!v) return;
    CU_ASSERT_EQUAL(v->type, JSON_OBJECT);
    CU_ASSERT_EQUAL(v->count, 7);
    const JsonValue *a = json_get(v, "a");
    CU_ASSERT(a && a->type == JSON_ARRAY && a->count == 5);
    if (a && a->count == 5) {
        CU_ASSERT(json_at(a, 0)->is_int && json_at(a, 0)->integer == 1);
        CU_ASSERT(!json_at(a, 1)->is_int && json_at(a, 1)->number == -25.0);
        CU_ASSERT(json_at(a, 2)->type == JSON_BOOL && json_at(a, 2)->boolean == 1);
        CU_ASSERT(json_at(a, 3)->type == JSON_BOOL && json_at(a, 3)->boolean == 0);
        CU_ASSERT(json_at(a, 4)->type == JSON_NULL);
        CU_ASSERT_PTR_NULL(json_at(a, 5));
    }
    /* key: b, e-acute (C3 A9), U+1F600 (F0 9F 98 80) */
    const JsonValue *s = json_get(v, "b\xC3\xA9\xF0\x9F\x98\x80");
    CU_ASSERT(s && s->type == JSON_STRING && strcmp(s->str, "x\"\\/\n") == 0 && s->len == 5);
    /* 2^53 + 1 is not a double, but the integer is exact */
    const JsonValue *big = json_get(v, "big");
    CU_ASSERT(big && big->is_int && big->integer == 9007199254740993LL);
    const JsonValue *mn = json_get(v, "min");
    CU_ASSERT(mn && mn->is_int && mn->integer == INT64_MIN);
    const JsonValue *over = json_get(v, "over");
    CU_ASSERT(over && !over->is_int && over->number == 9223372036854775808.0);
    const JsonValue *one = json_get(v, "one");
    CU_ASSERT(one && !one->is_int && one->number == 1.0);
    const JsonValue *e = json_get(v, "e");
    CU_ASSERT(e && e->type == JSON_OBJECT && e->count == 0);
    CU_ASSERT_PTR_NULL(json_get(v, "missing"));
    CU_ASSERT_PTR_NULL(json_get(a, "a")); /* not an object */
    json_free(v);

    /* \u0000 is kept, and len tells */
    JsonValue *z = json_parse("\"a\\u0000b\"", 10);
    CU_ASSERT(z && z->len == 3 && z->str[1] == '\0' && z->str[2] == 'b');
    json_free(z);
    /* the parser reads only `len` bytes: "12" out of "123" */
    JsonValue *n = json_parse("123", 2);
    CU_ASSERT(n && n->is_int && n->integer == 12);
    json_free(n);
}

static void expect_json_error(const char *text, const char *want) {
    gelan_clear_error();
    JsonValue *v = json_parse(text, strlen(text));
    CU_ASSERT_PTR_NULL(v);
    if (v) {
        fprintf(stderr, "\n  accepted invalid JSON: %s\n", text);
        json_free(v);
        return;
    }
    CU_ASSERT(contains(gelan_last_error(), want));
}

static void test_json_rejects(void) {
    expect_json_error("", "unexpected end");
    expect_json_error("[1,]", "invalid number");
    expect_json_error("{\"a\":1,}", "object key");
    expect_json_error("[01]", "leading zero");
    expect_json_error("[1.]", "decimal point");
    expect_json_error("[1e]", "exponent");
    expect_json_error("[-]", "invalid number");
    expect_json_error("[1e999]", "out of range");
    expect_json_error("{'a':1}", "object key");
    expect_json_error("{\"a\" 1}", "':'");
    expect_json_error("[1 2]", "',' or ']'");
    expect_json_error("[tru]", "literal");
    expect_json_error("\"abc", "unterminated");
    expect_json_error("\"a\\", "unterminated");
    expect_json_error("\"a\tb\"", "control character");
    expect_json_error("\"\\x\"", "invalid escape");
    expect_json_error("\"\\u12g4\"", "hex digit");
    expect_json_error("\"\\u12\"", "\\u escape");
    expect_json_error("\"\\ud800\"", "high surrogate");
    expect_json_error("\"\\ud800\\u0041\"", "low surrogate");
    expect_json_error("\"\\udc00\"", "lone low surrogate");
    expect_json_error("\"\xC3\"", "UTF-8");
    expect_json_error("\"\xC0\xAF\"", "UTF-8");         /* overlong '/' */
    expect_json_error("\"\xED\xA0\x80\"", "UTF-8");     /* encoded surrogate */
    expect_json_error("\"\xF4\x90\x80\x80\"", "UTF-8"); /* above U+10FFFF */
    expect_json_error("{} x", "after the JSON value");
    expect_json_error("[1] [2]", "after the JSON value");
    /* nesting is capped, so a deep input cannot exhaust the stack */
    char deep[2 * JSON_MAX_DEPTH + 8];
    memset(deep, '[', JSON_MAX_DEPTH + 1);
    memset(deep + JSON_MAX_DEPTH + 1, ']', JSON_MAX_DEPTH + 1);
    deep[2 * JSON_MAX_DEPTH + 2] = '\0';
    expect_json_error(deep, "nesting");
    /* ... while exactly the limit is fine */
    JsonValue *ok = json_parse(deep + 1, 2 * JSON_MAX_DEPTH);
    CU_ASSERT_NONNULL_OK(ok);
    json_free(ok);
}

static void test_json_escape(void) {
    const char raw[] = "a\"b\\c\n\x01\xC3\xA9";
    char buf[64];
    size_t n = json_escape(buf, sizeof buf, raw, strlen(raw));
    CU_ASSERT_STRING_EQUAL(buf, "\"a\\\"b\\\\c\\n\\u0001\xC3\xA9\"");
    CU_ASSERT_EQUAL(n, strlen(buf));
    /* truncation behaves like snprintf */
    char small[5];
    CU_ASSERT_EQUAL(json_escape(small, sizeof small, raw, strlen(raw)), n);
    CU_ASSERT_STRING_EQUAL(small, "\"a\\\"");
    /* the escaper and the parser agree on every byte value */
    char all[127]; /* every ASCII byte but NUL */
    for (int i = 0; i < 127; i++) all[i] = (char)(i + 1);
    size_t m = json_escape(NULL, 0, all, 127);
    char *q = malloc(m + 1);
    json_escape(q, m + 1, all, 127);
    JsonValue *v = json_parse(q, m);
    CU_ASSERT(v && v->type == JSON_STRING && v->len == 127 && memcmp(v->str, all, 127) == 0);
    json_free(v);
    free(q);
    const char *names[] = {"person", "tra\"in", ""};
    char *list = json_string_list(names, 3);
    CU_ASSERT_STRING_EQUAL(list, "[\"person\",\"tra\\\"in\",\"\"]");
    JsonValue *lv = json_parse(list, strlen(list));
    CU_ASSERT(lv && lv->count == 3 && strcmp(json_at(lv, 1)->str, "tra\"in") == 0);
    json_free(lv);
    free(list);
    char *empty = json_string_list(NULL, 0);
    CU_ASSERT_STRING_EQUAL(empty, "[]");
    free(empty);
    char *quoted = json_quote("x");
    CU_ASSERT_STRING_EQUAL(quoted, "\"x\"");
    free(quoted);
}

/* ---- round trip ------------------------------------------------------------------ */

static void test_round_trip(void) {
    const char *path = tmp_path("rt.safetensors");
    float a[6] = {1, -2, 3.5f, 4, 5, 1e-30f};
    int ashape[2] = {2, 3};
    float scalar = 42.0f;
    /* F16 bit patterns and their values (IEEE 754 binary16): 1, -2, 65504 (max),
     * 2^-24 (smallest subnormal), 2^-14 (smallest normal), +inf, 1/3 rounded */
    uint16_t h[7] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x0400, 0x7C00, 0x3555};
    const float hwant[7] = {1.0f, -2.0f, 65504.0f, 0x1p-24f, 0x1p-14f, INFINITY, 0.333251953125f};
    /* BF16 is the top half of an F32: 1, -0.5, 3.140625 (0x4049) */
    uint16_t bf[3] = {0x3F80, 0xBF00, 0x4049};
    const float bfwant[3] = {1.0f, -0.5f, 3.140625f};
    double f64[2] = {0.25, -1e10};
    int32_t i32[3] = {-7, 0, 123456};
    uint8_t u8[5] = {0, 1, 255, 7, 9};
    uint8_t bools[3] = {0, 1, 2};
    int64_t s1[1] = {7}, s3[1] = {3}, s2[1] = {2}, s5[1] = {5}, s0[2] = {4, 0};

    StWriter *w = st_writer_new();
    CU_ASSERT_OK(st_writer_add_f32(w, "z.weight", 2, ashape, a));
    CU_ASSERT_OK(st_writer_add_f32(w, "scalar", 0, NULL, &scalar));
    CU_ASSERT_OK(st_writer_add(w, "half", ST_F16, 1, s1, h, sizeof h, 1));
    CU_ASSERT_OK(st_writer_add(w, "bf", ST_BF16, 1, s3, bf, sizeof bf, 0));
    CU_ASSERT_OK(st_writer_add(w, "f64", ST_F64, 1, s2, f64, sizeof f64, 0));
    CU_ASSERT_OK(st_writer_add(w, "i32", ST_I32, 1, s3, i32, sizeof i32, 0));
    CU_ASSERT_OK(st_writer_add(w, "u8", ST_U8, 1, s5, u8, sizeof u8, 0));
    CU_ASSERT_OK(st_writer_add(w, "mask", ST_BOOL, 1, s3, bools, sizeof bools, 0));
    CU_ASSERT_OK(st_writer_add(w, "empty", ST_F32, 2, s0, NULL, 0, 0));
    CU_ASSERT_OK(st_writer_add(w, "caf\xC3\xA9 \"q\"", ST_F32, 0, NULL, &scalar, 4, 0));
    CU_ASSERT_OK(st_writer_set_metadata(w, "format", "gelan-ckpt/1"));
    CU_ASSERT_OK(st_writer_set_metadata(w, "names", "[\"a\",\"b\\\"\"]"));
    CU_ASSERT_OK(st_writer_set_metadata(w, "cfg", "line1\n\tline2 \"quoted\" \\ back"));
    CU_ASSERT_OK(st_writer_set_metadata(w, "format", "gelan-ckpt/2")); /* replaces */
    memset(h, 0, sizeof h);                                            /* "half" was copied */
    CU_ASSERT_OK(st_writer_save(w, path));
    st_writer_free(w);

    SafeTensors *st = st_open(path);
    CU_ASSERT_NONNULL_OK(st);
    if (!st) return;
    CU_ASSERT_EQUAL(st_count(st), 10);
    CU_ASSERT_EQUAL(st_metadata_count(st), 3);
    CU_ASSERT_STRING_EQUAL(st_metadata(st, "format"), "gelan-ckpt/2");
    CU_ASSERT_STRING_EQUAL(st_metadata(st, "cfg"), "line1\n\tline2 \"quoted\" \\ back");
    CU_ASSERT_STRING_EQUAL(st_metadata_key(st, 0), "format");
    CU_ASSERT_STRING_EQUAL(st_metadata_value(st, 1), "[\"a\",\"b\\\"\"]");
    CU_ASSERT_PTR_NULL(st_metadata(st, "nope"));
    CU_ASSERT_PTR_NULL(st_metadata_key(st, 3));

    /* file order: ascending offsets, contiguous, each tensor naturally aligned */
    size_t end = 0;
    for (int i = 0; i < st_count(st); i++) {
        const StTensorInfo *ti = st_info(st, i);
        CU_ASSERT_EQUAL(ti->offset, end);
        CU_ASSERT_EQUAL(ti->nbytes, st_numel(ti) * st_dtype_size(ti->dtype));
        CU_ASSERT_EQUAL((size_t)st_data(st, ti) % st_dtype_size(ti->dtype), 0);
        end = ti->offset + ti->nbytes;
    }
    CU_ASSERT_PTR_NULL(st_info(st, 10));
    CU_ASSERT_PTR_NULL(st_find(st, "absent"));

    const StTensorInfo *ti = st_find(st, "z.weight");
    CU_ASSERT(ti && ti->dtype == ST_F32 && ti->ndim == 2 && ti->shape[0] == 2 && ti->shape[1] == 3);
    float got[7];
    CU_ASSERT_OK(st_read_f32(st, "z.weight", got, 6));
    CU_ASSERT(memcmp(got, a, sizeof a) == 0);
    ti = st_find(st, "scalar");
    CU_ASSERT(ti && ti->ndim == 0 && st_numel(ti) == 1 && ti->nbytes == 4);
    CU_ASSERT_OK(st_read_f32(st, "scalar", got, 1));
    CU_ASSERT_EQUAL(got[0], 42.0f);
    CU_ASSERT_OK(st_read_f32(st, "half", got, 7));
    CU_ASSERT(memcmp(got, hwant, sizeof hwant) == 0);
    CU_ASSERT_OK(st_read_f32(st, "bf", got, 3));
    CU_ASSERT(memcmp(got, bfwant, sizeof bfwant) == 0);
    CU_ASSERT_OK(st_read_f32(st, "f64", got, 2));
    CU_ASSERT(got[0] == 0.25f && got[1] == -1e10f);
    CU_ASSERT_OK(st_read_f32(st, "i32", got, 3));
    CU_ASSERT(got[0] == -7 && got[1] == 0 && got[2] == 123456);
    CU_ASSERT_OK(st_read_f32(st, "u8", got, 5));
    CU_ASSERT(got[2] == 255 && got[4] == 9);
    CU_ASSERT_OK(st_read_f32(st, "mask", got, 3));
    CU_ASSERT(got[0] == 0 && got[1] == 1 && got[2] == 1);
    ti = st_find(st, "empty");
    CU_ASSERT(ti && ti->ndim == 2 && ti->shape[1] == 0 && ti->nbytes == 0 && st_numel(ti) == 0);
    CU_ASSERT_OK(st_read_f32(st, "empty", got, 0));
    CU_ASSERT_PTR_NOT_NULL(st_find(st, "caf\xC3\xA9 \"q\""));
    const uint8_t *raw = st_data(st, st_find(st, "u8"));
    CU_ASSERT(raw && memcmp(raw, u8, 5) == 0);

    /* a wrong count names the file, the tensor and both counts */
    CU_ASSERT_EQUAL(st_read_f32(st, "z.weight", got, 5), -1);
    CU_ASSERT(contains(gelan_last_error(), path) && contains(gelan_last_error(), "z.weight") &&
              contains(gelan_last_error(), "6 elements") && contains(gelan_last_error(), "expects 5"));
    CU_ASSERT_EQUAL(st_read_f32(st, "absent", got, 1), -1);
    CU_ASSERT(contains(gelan_last_error(), "absent"));
    st_close(st);

    /* the header is JSON padded with spaces to a multiple of 8, F64 first (the
     * official layout: larger dtypes first, then by name) */
    FILE *f = fopen(path, "rb");
    unsigned char len8[8];
    CU_ASSERT_EQUAL(fread(len8, 1, 8, f), 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | len8[i];
    CU_ASSERT_EQUAL(hlen % 8, 0);
    char *hdr = malloc(hlen + 1);
    CU_ASSERT_EQUAL(fread(hdr, 1, hlen, f), hlen);
    hdr[hlen] = '\0';
    fclose(f);
    CU_ASSERT(strstr(hdr, "\"f64\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}") != NULL);
    JsonValue *hv = json_parse(hdr, hlen);
    CU_ASSERT(hv && hv->type == JSON_OBJECT && strcmp(hv->keys[0], "__metadata__") == 0);
    json_free(hv);
    free(hdr);
    unlink(path);
}

/* ---- golden files ------------------------------------------------------------------- */

static void test_golden_input(void) {
    SafeTensors *st = st_open(golden_path("gelan-t_64", "input.safetensors"));
    CU_ASSERT_NONNULL_OK(st);
    if (!st) return;
    const StTensorInfo *ti = st_find(st, "input");
    CU_ASSERT_PTR_NOT_NULL(ti);
    if (ti) {
        CU_ASSERT_EQUAL(ti->dtype, ST_F32);
        CU_ASSERT_EQUAL(ti->ndim, 4);
        CU_ASSERT(ti->shape[0] == 2 && ti->shape[1] == 3 && ti->shape[2] == 64 && ti->shape[3] == 64);
        size_t n = st_numel(ti);
        float *x = malloc(n * sizeof *x);
        CU_ASSERT_OK(st_read_f32(st, "input", x, n));
        /* uniform [0,1): all in range, mean 0.5 +- 0.01 (std of the mean ~0.002) */
        double sum = 0;
        int in_range = 1;
        for (size_t i = 0; i < n; i++) {
            in_range &= x[i] >= 0.0f && x[i] < 1.0f;
            sum += x[i];
        }
        CU_ASSERT(in_range);
        CU_ASSERT(fabs(sum / (double)n - 0.5) < 0.01);
        CU_ASSERT(memcmp(x, st_data(st, ti), n * sizeof *x) == 0);
        free(x);
    }
    CU_ASSERT_STRING_EQUAL(st_metadata(st, "case"), "gelan-t_64");
    st_close(st);
}

static void test_golden_weights(void) {
    SafeTensors *st = st_open(golden_path("gelan-t_64", "weights.safetensors"));
    CU_ASSERT_NONNULL_OK(st);
    if (!st) return;
    const StTensorInfo *ti = st_find(st, "model.22.dfl.conv.weight");
    CU_ASSERT(ti && ti->ndim == 4 && ti->shape[0] == 1 && ti->shape[1] == 16 && ti->shape[2] == 1 && ti->shape[3] == 1);
    float dfl[16];
    CU_ASSERT_OK(st_read_f32(st, "model.22.dfl.conv.weight", dfl, 16));
    int ok = 1;
    for (int i = 0; i < 16; i++) ok &= dfl[i] == (float)i;
    CU_ASSERT(ok);
    /* The golden README gives gelan-t 2,442,640 parameters (BN running stats are
     * buffers, not parameters); official files tile the data section exactly. */
    size_t params = 0, end = 0;
    int contiguous = 1;
    for (int i = 0; i < st_count(st); i++) {
        const StTensorInfo *t = st_info(st, i);
        size_t len = strlen(t->name);
        int running = len > 13 && (strcmp(t->name + len - 13, ".running_mean") == 0 ||
                                   strcmp(t->name + len - 12, ".running_var") == 0);
        if (!running) params += st_numel(t);
        contiguous &= t->offset == end;
        end = t->offset + t->nbytes;
    }
    CU_ASSERT_EQUAL(params, 2442640);
    CU_ASSERT(contiguous);
    st_close(st);
}

/* ---- malformed input ------------------------------------------------------------------ */

/* A file image: 8-byte little-endian length, the header text, data_len bytes. */
static unsigned char *image(const char *header, size_t data_len, size_t *len) {
    size_t h = strlen(header);
    *len = 8 + h + data_len;
    unsigned char *b = calloc(1, *len);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    return b;
}

/* st_from_memory must fail with a message naming the file and containing want
 * (and want2 when given). */
static void expect_bad(const char *header, size_t data_len, const char *want, const char *want2) {
    size_t len;
    unsigned char *b = image(header, data_len, &len);
    gelan_clear_error();
    SafeTensors *st = st_from_memory(b, len, "bad.safetensors");
    free(b);
    CU_ASSERT_PTR_NULL(st);
    if (st) {
        fprintf(stderr, "\n  accepted: %s\n", header);
        st_close(st);
        return;
    }
    const char *e = gelan_last_error();
    CU_ASSERT(contains(e, "bad.safetensors") && contains(e, want) && (!want2 || contains(e, want2)));
}

#define T(name, dt, shape, b, e) \
    "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" b "," e "]}"

static void test_bad_prefix(void) {
    unsigned char b[16] = {0};
    SafeTensors *st = st_from_memory(b, 7, "short.safetensors");
    CU_ASSERT_PTR_NULL(st);
    CU_ASSERT(contains(gelan_last_error(), "short.safetensors") && contains(gelan_last_error(), "7 bytes"));
    /* header length 9, but only 8 bytes follow */
    b[0] = 9;
    st = st_from_memory(b, 16, "trunc.safetensors");
    CU_ASSERT_PTR_NULL(st);
    CU_ASSERT(contains(gelan_last_error(), "trunc.safetensors") && contains(gelan_last_error(), "header length 9") &&
              contains(gelan_last_error(), "8 bytes"));
    /* absurd: 2^40 */
    memset(b, 0, 8);
    b[5] = 1;
    st = st_from_memory(b, 16, "huge.safetensors");
    CU_ASSERT_PTR_NULL(st);
    CU_ASSERT(contains(gelan_last_error(), "huge.safetensors") && contains(gelan_last_error(), "1099511627776") &&
              contains(gelan_last_error(), "absurd"));
    /* a symlink checked out as a text file gets a hint */
    const char *txt = "../gelan-t_64_calib/weights.safetensors";
    st = st_from_memory(txt, strlen(txt), "link.safetensors");
    CU_ASSERT_PTR_NULL(st);
    CU_ASSERT(contains(gelan_last_error(), "symlink"));
    /* an empty header is not JSON */
    expect_bad("", 0, "not valid JSON", NULL);
}

static void test_bad_json(void) {
    expect_bad("{\"a\":{\"dtype\":\"F32\",", 0, "not valid JSON", "byte");
    expect_bad("{\"a\":1,}", 0, "not valid JSON", NULL);
    expect_bad("[1,2]", 0, "not an object", "array");
    expect_bad("\"x\"", 0, "not an object", "string");
}

static void test_bad_entry(void) {
    expect_bad("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"w\"", "missing \"dtype\"");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "\"w\"", "missing \"shape\"");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "\"w\"", "missing \"data_offsets\"");
    expect_bad("{\"w\":[1]}", 4, "\"w\"", "not an object");
    expect_bad("{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"w\"", "dtype is a number");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4, "\"w\"", "shape is a string");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "\"w\"", "data_offsets");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", 4, "\"w\"", "data_offsets");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4, "\"w\"", "string");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"w\"",
               "twice");
}

static void test_bad_dtype(void) {
    expect_bad("{" T("w", "F8_E4M3", "[1]", "0", "1") "}", 1, "\"w\"", "unknown dtype \"F8_E4M3\"");
    expect_bad("{" T("w", "f32", "[1]", "0", "4") "}", 4, "\"w\"", "unknown dtype \"f32\"");
}

static void test_bad_shape(void) {
    expect_bad("{" T("w", "F32", "[2,-1]", "0", "4") "}", 4, "\"w\"", "shape entry -1 is negative");
    expect_bad("{" T("w", "F32", "[2.5]", "0", "4") "}", 4, "\"w\"", "2.5 is not an integer");
    expect_bad("{" T("w", "F32", "[1.0]", "0", "4") "}", 4, "\"w\"", "not an integer");
    expect_bad("{" T("w", "F32", "[null]", "0", "4") "}", 4, "\"w\"", "null");
    expect_bad("{" T("w", "F32", "[1,1,1,1,1,1,1,1,1]", "0", "4") "}", 4, "\"w\"", "9 dims");
    /* 2^32 * 2^32 elements overflow size_t; so do 2^62 F32 elements in bytes */
    expect_bad("{" T("w", "F32", "[4294967296,4294967296]", "0", "4") "}", 4, "\"w\"", "overflows");
    expect_bad("{" T("w", "F32", "[4611686018427387904]", "0", "4") "}", 4, "\"w\"", "overflows");
    expect_bad("{" T("w", "F32", "[99999999999999999999]", "0", "4") "}", 4, "\"w\"", "not an integer");
}

static void test_bad_offsets(void) {
    /* 2x3 F32 = 24 bytes, the range says 20 */
    expect_bad("{" T("w", "F32", "[2,3]", "0", "20") "}", 24, "\"w\"", "6 elements of F32 (24 bytes)");
    expect_bad("{" T("w", "F32", "[1]", "8", "4") "}", 8, "\"w\"", "begin 8 > end 4");
    expect_bad("{" T("w", "F32", "[2]", "0", "8") "}", 4, "\"w\"", "end 8 is beyond the data section (4 bytes)");
    expect_bad("{" T("w", "F32", "[1]", "-4", "0") "}", 4, "\"w\"", "-4 is negative");
    expect_bad("{" T("w", "F32", "[1]", "0", "18446744073709551620") "}", 4, "\"w\"", "not an integer");
    /* overlap: [0,8) and [4,12) */
    expect_bad("{" T("a", "F32", "[2]", "0", "8") "," T("b", "F32", "[2]", "4", "12") "}", 12, "overlap",
               "\"a\" [0, 8) and \"b\" [4, 12)");
    /* a range inside another one */
    expect_bad("{" T("a", "F32", "[4]", "0", "16") "," T("b", "F32", "[1]", "4", "8") "}", 16, "overlap", "\"b\"");
    /* identical ranges */
    expect_bad("{" T("a", "F32", "[1]", "0", "4") "," T("b", "F32", "[1]", "0", "4") "}", 4, "overlap", NULL);
}

static void test_bad_names_and_metadata(void) {
    expect_bad("{" T("w", "F32", "[1]", "0", "4") "," T("w", "F32", "[1]", "4", "8") "}", 8,
               "duplicate tensor name \"w\"", NULL);
    expect_bad("{\"__metadata__\":{\"k\":1}," T("w", "F32", "[1]", "0", "4") "}", 4, "__metadata__",
               "\"k\" is a number");
    expect_bad("{\"__metadata__\":{\"k\":[\"a\"]}}", 0, "__metadata__", "array");
    expect_bad("{\"__metadata__\":\"x\"}", 0, "__metadata__ is a string", NULL);
    expect_bad("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ appears twice", NULL);
    expect_bad("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, "\"k\" appears twice", NULL);
    expect_bad("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "NUL", NULL);
}

/* What the format allows must load: escapes in names, gaps, empty tensors. */
static void test_lenient_accepts(void) {
    const char *hdr =
        "{\"__metadata__\":{\"n\\u00e4me\":\"\\ud83d\\ude00\"},"
        "\"caf\\u00e9\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
        "\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
        "\"z\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}   ";
    size_t len;
    unsigned char *b = image(hdr, 12, &len);
    b[8 + strlen(hdr)] = 5;                             /* z */
    memcpy(b + 8 + strlen(hdr) + 8, &(float){2.5f}, 4); /* café */
    SafeTensors *st = st_from_memory(b, len, "ok.safetensors");
    free(b);
    CU_ASSERT_NONNULL_OK(st);
    if (!st) return;
    CU_ASSERT_EQUAL(st_count(st), 3);
    CU_ASSERT_STRING_EQUAL(st_info(st, 0)->name, "z"); /* offset order */
    CU_ASSERT_STRING_EQUAL(st_info(st, 2)->name, "caf\xC3\xA9");
    float v;
    CU_ASSERT_OK(st_read_f32(st, "caf\xC3\xA9", &v, 1));
    CU_ASSERT_EQUAL(v, 2.5f);
    CU_ASSERT_OK(st_read_f32(st, "z", &v, 1));
    CU_ASSERT_EQUAL(v, 5.0f);
    CU_ASSERT_STRING_EQUAL(st_metadata(st, "n\xC3\xA4me"), "\xF0\x9F\x98\x80");
    st_close(st);
}

static void test_open_errors(void) {
    CU_ASSERT_PTR_NULL(st_open("/nonexistent/dir/x.safetensors"));
    CU_ASSERT(contains(gelan_last_error(), "/nonexistent/dir/x.safetensors") &&
              contains(gelan_last_error(), "No such file"));
    CU_ASSERT_PTR_NULL(st_open("/tmp"));
    CU_ASSERT(contains(gelan_last_error(), "not a regular file"));

    /* a real file cut short: the last tensor now ends past the data section */
    const char *path = tmp_path("cut.safetensors");
    float a[4] = {1, 2, 3, 4};
    int shape[1] = {4};
    StWriter *w = st_writer_new();
    CU_ASSERT_OK(st_writer_add_f32(w, "a", 1, shape, a));
    CU_ASSERT_OK(st_writer_add_f32(w, "b", 1, shape, a));
    CU_ASSERT_OK(st_writer_save(w, path));
    st_writer_free(w);
    struct stat sb;
    CU_ASSERT_EQUAL(stat(path, &sb), 0);
    CU_ASSERT_EQUAL(truncate(path, sb.st_size - 1), 0);
    CU_ASSERT_PTR_NULL(st_open(path));
    CU_ASSERT(contains(gelan_last_error(), path) && contains(gelan_last_error(), "\"b\"") &&
              contains(gelan_last_error(), "end 32 is beyond the data section (31 bytes)"));
    /* cut inside the header */
    CU_ASSERT_EQUAL(truncate(path, 20), 0);
    CU_ASSERT_PTR_NULL(st_open(path));
    CU_ASSERT(contains(gelan_last_error(), "exceeds the 12 bytes"));
    unlink(path);
}

/* ---- writer ----------------------------------------------------------------------------- */

static void test_writer_errors(void) {
    float a[2] = {1, 2};
    int s2[1] = {2};
    int64_t big[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    StWriter *w = st_writer_new();
    CU_ASSERT_EQUAL(st_writer_add(w, "x", ST_F32, 1, (int64_t[]){3}, a, 8, 0), -1);
    CU_ASSERT(contains(gelan_last_error(), "\"x\"") && contains(gelan_last_error(), "need 12 bytes, got 8"));
    CU_ASSERT_EQUAL(st_writer_add(w, "x", ST_F32, 9, big, a, 4, 0), -1);
    CU_ASSERT(contains(gelan_last_error(), "9 dims"));
    CU_ASSERT_EQUAL(st_writer_add(w, "x", ST_F32, 1, (int64_t[]){-1}, a, 0, 0), -1);
    CU_ASSERT(contains(gelan_last_error(), "negative"));
    CU_ASSERT_EQUAL(st_writer_add_f32(w, "__metadata__", 1, s2, a), -1);
    CU_ASSERT_EQUAL(st_writer_add_f32(w, "", 1, s2, a), -1);

    /* duplicates fail at save, and leave nothing behind */
    const char *path = tmp_path("dup.safetensors");
    CU_ASSERT_OK(st_writer_add_f32(w, "x", 1, s2, a));
    CU_ASSERT_OK(st_writer_add(w, "x", ST_I32, 1, (int64_t[]){2}, a, 8, 0));
    CU_ASSERT_EQUAL(st_writer_save(w, path), -1);
    CU_ASSERT(contains(gelan_last_error(), "duplicate tensor name \"x\""));
    CU_ASSERT_NOT_EQUAL(access(path, F_OK), 0);
    st_writer_free(w);
}

/* The tmp file of this process for path. */
static const char *tmp_of(const char *path) {
    static char b[512];
    snprintf(b, sizeof b, "%s.tmp.%ld", path, (long)getpid());
    return b;
}

static void test_atomic_write(void) {
    float a[2] = {1, 2}, b2[2] = {3, 4};
    int s2[1] = {2};
    StWriter *w = st_writer_new();
    CU_ASSERT_OK(st_writer_add_f32(w, "x", 1, s2, a));

    /* a directory that does not exist: clean failure, nothing created */
    const char *nodir = tmp_path("nodir/out.safetensors");
    CU_ASSERT_EQUAL(st_writer_save(w, nodir), -1);
    CU_ASSERT(contains(gelan_last_error(), nodir));
    CU_ASSERT_NOT_EQUAL(access(tmp_path("nodir"), F_OK), 0);

    /* overwriting an existing file replaces it */
    const char *path = tmp_path("atomic.safetensors");
    CU_ASSERT_OK(st_writer_save(w, path));
    StWriter *w2 = st_writer_new();
    CU_ASSERT_OK(st_writer_add_f32(w2, "x", 1, s2, b2));
    CU_ASSERT_OK(st_writer_save(w2, path));
    float got[2];
    SafeTensors *st = st_open(path);
    CU_ASSERT_NONNULL_OK(st);
    if (st) {
        CU_ASSERT_OK(st_read_f32(st, "x", got, 2));
        CU_ASSERT(got[0] == 3 && got[1] == 4);
        st_close(st);
    }

    /* the temporary cannot be created (a directory sits at its name): the old
     * file stays as it was */
    CU_ASSERT_EQUAL(mkdir(tmp_of(path), 0700), 0);
    CU_ASSERT_EQUAL(st_writer_save(w, path), -1);
    CU_ASSERT(contains(gelan_last_error(), "cannot create"));
    CU_ASSERT_EQUAL(rmdir(tmp_of(path)), 0);
    st = st_open(path);
    CU_ASSERT_NONNULL_OK(st);
    if (st) {
        CU_ASSERT_OK(st_read_f32(st, "x", got, 2));
        CU_ASSERT(got[0] == 3 && got[1] == 4);
        st_close(st);
    }
    unlink(path);

    /* the rename fails (a non-empty directory sits at path): the directory is
     * untouched and the written temporary is removed */
    const char *dirpath = tmp_path("isdir.safetensors");
    char inner[600];
    snprintf(inner, sizeof inner, "%s/keep", dirpath);
    CU_ASSERT_EQUAL(mkdir(dirpath, 0700), 0);
    FILE *f = fopen(inner, "w");
    CU_ASSERT_PTR_NOT_NULL(f);
    if (f) fclose(f);
    CU_ASSERT_EQUAL(st_writer_save(w, dirpath), -1);
    CU_ASSERT(contains(gelan_last_error(), "cannot rename"));
    CU_ASSERT_NOT_EQUAL(access(tmp_of(dirpath), F_OK), 0);
    CU_ASSERT_EQUAL(access(inner, F_OK), 0);
    unlink(inner);
    rmdir(dirpath);

    st_writer_free(w);
    st_writer_free(w2);
}

SUITE_FN(safetensors) {
    CU_pSuite s = CU_add_suite("safetensors", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "json values", test_json_values);
    CU_add_test(s, "json rejects", test_json_rejects);
    CU_add_test(s, "json escape", test_json_escape);
    CU_add_test(s, "round trip", test_round_trip);
    CU_add_test(s, "golden input", test_golden_input);
    CU_add_test(s, "golden weights", test_golden_weights);
    CU_add_test(s, "bad prefix", test_bad_prefix);
    CU_add_test(s, "bad json", test_bad_json);
    CU_add_test(s, "bad entry", test_bad_entry);
    CU_add_test(s, "bad dtype", test_bad_dtype);
    CU_add_test(s, "bad shape", test_bad_shape);
    CU_add_test(s, "bad offsets", test_bad_offsets);
    CU_add_test(s, "bad names and metadata", test_bad_names_and_metadata);
    CU_add_test(s, "lenient accepts", test_lenient_accepts);
    CU_add_test(s, "open errors", test_open_errors);
    CU_add_test(s, "writer errors", test_writer_errors);
    CU_add_test(s, "atomic write", test_atomic_write);
    return 0;
}
