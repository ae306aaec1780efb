/* A small, strict JSON parser (RFC 8259) producing a DOM, and a string escaper.
 *
 * Used for safetensors headers and the JSON values kept in their metadata (e.g.
 * `names`, a list of class names). The parser reads exactly `len` bytes (the text
 * needs no terminating NUL), never reads outside them, and limits nesting to
 * JSON_MAX_DEPTH. It rejects what strict JSON rejects: trailing commas, leading
 * zeros, single quotes, comments, control characters and invalid UTF-8 in strings,
 * bad escapes, lone UTF-16 surrogates, and anything after the top-level value but
 * whitespace. Escapes (\" \\ \/ \b \f \n \r \t \uXXXX, surrogate pairs) become UTF-8.
 *
 * Errors: json_parse returns NULL and records (gelan_error) "json: <what> at byte N".
 * Memory: one json_free(root) releases the whole tree; child pointers stay valid
 * until then.
 *
 *     JsonValue *v = json_parse(text, strlen(text));
 *     const JsonValue *names = json_get(v, "names");       // NULL if absent or v not an object
 *     for (size_t i = 0; names && i < names->count; i++)
 *         if (json_at(names, i)->type == JSON_STRING) puts(json_at(names, i)->str);
 *     json_free(v);
 */
#ifndef GELAN_JSON_H
#define GELAN_JSON_H

#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 64

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

typedef struct JsonValue JsonValue;
struct JsonValue {
    JsonType type;
    int boolean;      /* JSON_BOOL: 0 or 1 */
    double number;    /* JSON_NUMBER: the value (nearest double) */
    int is_int;       /* JSON_NUMBER: written without fraction/exponent and fits int64 ... */
    int64_t integer;  /* ... and then this is its exact value (also beyond 2^53) */
    char *str;        /* JSON_STRING: UTF-8, NUL-terminated; may hold a NUL from \u0000, */
    size_t len;       /*   so `len` is the byte length without the terminator */
    size_t count;     /* JSON_ARRAY / JSON_OBJECT: number of items / members */
    JsonValue *items; /* items (array) or member values (object), in document order */
    char **keys;      /* JSON_OBJECT: member keys, NUL-terminated, in document order */
    size_t *key_lens; /* JSON_OBJECT: byte length of each key (a key may hold \u0000) */
};

/* Parses text[0..len). Duplicate object keys are kept, in order (json_get finds
 * the first); callers for which duplicates matter check for them. */
JsonValue *json_parse(const char *text, size_t len);
void json_free(JsonValue *v);

/* Object member by key (the first one if duplicated); NULL if v is not an object
 * or has no such key. */
const JsonValue *json_get(const JsonValue *v, const char *key);
/* Array item or object member value i; NULL if out of range or v is neither. */
const JsonValue *json_at(const JsonValue *v, size_t i);
const char *json_type_name(JsonType t);

/* Writes `s` (len bytes) as a quoted JSON string literal into dst (at most cap
 * bytes, always NUL-terminated when cap > 0) and returns the full length it needs
 * without the NUL, like snprintf. Escapes " \ and control characters; other bytes
 * (UTF-8) are copied as they are. */
size_t json_escape(char *dst, size_t cap, const char *s, size_t len);
/* The quoted literal of a NUL-terminated string in a malloc'd buffer (NULL when out
 * of memory). */
char *json_quote(const char *s);
/* `["a","b",...]` for n strings, malloc'd (NULL when out of memory). */
char *json_string_list(const char *const *items, size_t n);

#endif
