/* Recursive descent over a length-bounded buffer. The recursion depth is capped at
 * JSON_MAX_DEPTH, so hostile input cannot exhaust the stack; every read goes
 * through peek()/the `pos < len` checks, so it cannot leave the buffer either.
 * Non-integer numbers go through strtod, which assumes the default "C" LC_NUMERIC
 * locale (no gelan program changes it). */
#include "tensor/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/error.h"

typedef struct {
    const unsigned char *s;
    size_t len, pos;
    int depth;
} Parser;

static int fail(const Parser *p, const char *what) { return gelan_error("json: %s at byte %zu", what, p->pos); }

static int peek(const Parser *p) { return p->pos < p->len ? p->s[p->pos] : -1; }

static void skip_ws(Parser *p) {
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static void free_contents(JsonValue *v) {
    switch (v->type) {
        case JSON_STRING:
            free(v->str);
            break;
        case JSON_OBJECT:
            for (size_t i = 0; i < v->count; i++) free(v->keys[i]);
            free(v->keys);
            free(v->key_lens);
            /* fall through */
        case JSON_ARRAY:
            for (size_t i = 0; i < v->count; i++) free_contents(&v->items[i]);
            free(v->items);
            break;
        default:
            break;
    }
}

void json_free(JsonValue *v) {
    if (!v) return;
    free_contents(v);
    free(v);
}

static int literal(Parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) return fail(p, "invalid literal");
    p->pos += n;
    return 0;
}

static int hex4(Parser *p, unsigned *out) {
    if (p->len - p->pos < 4) return fail(p, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int c = p->s[p->pos + i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return fail(p, "invalid hex digit in \\u escape");
        v = v * 16 + (unsigned)d;
    }
    p->pos += 4;
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence starting at s[0] (a byte >= 0x80), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t avail) {
    unsigned char c = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0; /* no overlong forms */
        if (c == 0xED) hi = 0x9F; /* no UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F; /* nothing above U+10FFFF */
    } else
        return 0;
    if (avail < n || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return n;
}

/* Parses a string literal at p->pos (the opening quote) into a malloc'd buffer. */
static int parse_string(Parser *p, char **out, size_t *out_len) {
    p->pos++; /* opening quote */
    /* Find the closing quote first: the decoded string is never longer than the
     * literal, so that bounds the allocation. */
    size_t end = p->pos;
    while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->len) return fail(p, "unterminated string");
    char *buf = malloc(end - p->pos + 1);
    if (!buf) return fail(p, "out of memory");
    size_t n = 0;
    while (p->pos < end) {
        unsigned char c = p->s[p->pos];
        if (c < 0x20) {
            free(buf);
            return fail(p, "control character in string");
        }
        if (c >= 0x80) {
            size_t k = utf8_seq(p->s + p->pos, end - p->pos);
            if (!k) {
                free(buf);
                return fail(p, "invalid UTF-8 in string");
            }
            memcpy(buf + n, p->s + p->pos, k);
            n += k;
            p->pos += k;
            continue;
        }
        if (c != '\\') {
            buf[n++] = (char)c;
            p->pos++;
            continue;
        }
        p->pos++; /* backslash; the scan above guarantees one more byte */
        c = p->s[p->pos++];
        const char *simple = strchr("\"\\/bfnrt", c);
        if (c && simple) {
            static const char repl[] = "\"\\/\b\f\n\r\t";
            buf[n++] = repl[simple - "\"\\/bfnrt"];
            continue;
        }
        if (c != 'u') {
            p->pos--;
            free(buf);
            return fail(p, "invalid escape in string");
        }
        unsigned cp, lo;
        if (hex4(p, &cp) != 0) {
            free(buf);
            return -1;
        }
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
            free(buf);
            return fail(p, "lone low surrogate in \\u escape");
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                free(buf);
                return fail(p, "high surrogate not followed by a \\u low surrogate");
            }
            p->pos += 2;
            if (hex4(p, &lo) != 0) {
                free(buf);
                return -1;
            }
            if (lo < 0xDC00 || lo > 0xDFFF) {
                free(buf);
                return fail(p, "high surrogate not followed by a low surrogate");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        n += put_utf8(buf + n, cp);
    }
    p->pos = end + 1;
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return 0;
}

static int is_digit(int c) { return c >= '0' && c <= '9'; }

static int parse_number(Parser *p, JsonValue *v) {
    size_t start = p->pos;
    int integral = 1;
    if (peek(p) == '-') p->pos++;
    if (peek(p) == '0') {
        p->pos++;
        if (is_digit(peek(p))) return fail(p, "leading zero in number");
    } else if (is_digit(peek(p))) {
        while (is_digit(peek(p))) p->pos++;
    } else
        return fail(p, "invalid number");
    if (peek(p) == '.') {
        integral = 0;
        p->pos++;
        if (!is_digit(peek(p))) return fail(p, "digit expected after decimal point");
        while (is_digit(peek(p))) p->pos++;
    }
    if (peek(p) == 'e' || peek(p) == 'E') {
        integral = 0;
        p->pos++;
        if (peek(p) == '+' || peek(p) == '-') p->pos++;
        if (!is_digit(peek(p))) return fail(p, "digit expected in exponent");
        while (is_digit(peek(p))) p->pos++;
    }
    size_t n = p->pos - start;
    v->type = JSON_NUMBER;
    if (integral) {
        /* Exact int64 by accumulating negatively, so INT64_MIN fits too. */
        const unsigned char *d = p->s + start;
        int neg = d[0] == '-';
        int64_t acc = 0;
        int fits = 1;
        for (size_t i = (size_t)neg; i < n && fits; i++) {
            int digit = d[i] - '0';
            if (acc < (INT64_MIN + digit) / 10)
                fits = 0;
            else
                acc = acc * 10 - digit;
        }
        if (fits && !neg && acc == INT64_MIN) fits = 0;
        if (fits) {
            v->is_int = 1;
            v->integer = neg ? acc : -acc;
        }
    }
    char small[64];
    char *tmp = n < sizeof small ? small : malloc(n + 1);
    if (!tmp) return fail(p, "out of memory");
    memcpy(tmp, p->s + start, n);
    tmp[n] = '\0';
    v->number = strtod(tmp, NULL);
    if (tmp != small) free(tmp);
    if (!isfinite(v->number)) {
        p->pos = start;
        return fail(p, "number out of range");
    }
    return 0;
}

static int parse_value(Parser *p, JsonValue *v);

/* Grows the item (and key) arrays of v to hold one more member. */
static int grow(Parser *p, JsonValue *v, size_t *cap) {
    if (v->count < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 4;
    JsonValue *items = realloc(v->items, nc * sizeof *items);
    if (!items) return fail(p, "out of memory");
    v->items = items;
    if (v->type == JSON_OBJECT) {
        char **keys = realloc(v->keys, nc * sizeof *keys);
        if (!keys) return fail(p, "out of memory");
        v->keys = keys;
        size_t *lens = realloc(v->key_lens, nc * sizeof *lens);
        if (!lens) return fail(p, "out of memory");
        v->key_lens = lens;
    }
    *cap = nc;
    return 0;
}

/* Array or object after its opening bracket. On error v stays freeable: `count`
 * only covers members that are complete. */
static int parse_container(Parser *p, JsonValue *v, int is_object) {
    char close = is_object ? '}' : ']';
    v->type = is_object ? JSON_OBJECT : JSON_ARRAY;
    if (++p->depth > JSON_MAX_DEPTH) return fail(p, "nesting deeper than JSON_MAX_DEPTH");
    p->pos++;
    size_t cap = 0;
    skip_ws(p);
    if (peek(p) == close) {
        p->pos++;
        p->depth--;
        return 0;
    }
    for (;;) {
        if (grow(p, v, &cap) != 0) return -1;
        char *key = NULL;
        size_t key_len = 0;
        if (is_object) {
            skip_ws(p);
            if (peek(p) != '"') return fail(p, "object key (a string) expected");
            if (parse_string(p, &key, &key_len) != 0) return -1;
            skip_ws(p);
            if (peek(p) != ':') {
                free(key);
                return fail(p, "':' expected after object key");
            }
            p->pos++;
        }
        JsonValue *item = &v->items[v->count];
        memset(item, 0, sizeof *item);
        if (parse_value(p, item) != 0) {
            free_contents(item);
            free(key);
            return -1;
        }
        if (is_object) {
            v->keys[v->count] = key;
            v->key_lens[v->count] = key_len;
        }
        v->count++;
        skip_ws(p);
        int c = peek(p);
        if (c == ',') {
            p->pos++;
            continue;
        }
        if (c == close) {
            p->pos++;
            p->depth--;
            return 0;
        }
        return fail(p, is_object ? "',' or '}' expected in object" : "',' or ']' expected in array");
    }
}

static int parse_value(Parser *p, JsonValue *v) {
    skip_ws(p);
    switch (peek(p)) {
        case '{':
            return parse_container(p, v, 1);
        case '[':
            return parse_container(p, v, 0);
        case '"':
            v->type = JSON_STRING;
            return parse_string(p, &v->str, &v->len);
        case 't':
            v->type = JSON_BOOL;
            v->boolean = 1;
            return literal(p, "true");
        case 'f':
            v->type = JSON_BOOL;
            return literal(p, "false");
        case 'n':
            v->type = JSON_NULL;
            return literal(p, "null");
        case -1:
            return fail(p, "unexpected end of input");
        default:
            return parse_number(p, v);
    }
}

JsonValue *json_parse(const char *text, size_t len) {
    Parser p = {(const unsigned char *)text, len, 0, 0};
    JsonValue *v = calloc(1, sizeof *v);
    if (!v) {
        gelan_error("json: out of memory");
        return NULL;
    }
    if (parse_value(&p, v) != 0) {
        json_free(v);
        return NULL;
    }
    skip_ws(&p);
    if (p.pos != p.len) {
        fail(&p, "unexpected data after the JSON value");
        json_free(v);
        return NULL;
    }
    return v;
}

const JsonValue *json_get(const JsonValue *v, const char *key) {
    if (!v || v->type != JSON_OBJECT) return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < v->count; i++)
        if (v->key_lens[i] == n && memcmp(v->keys[i], key, n) == 0) return &v->items[i];
    return NULL;
}

const JsonValue *json_at(const JsonValue *v, size_t i) {
    if (!v || (v->type != JSON_ARRAY && v->type != JSON_OBJECT) || i >= v->count) return NULL;
    return &v->items[i];
}

const char *json_type_name(JsonType t) {
    switch (t) {
        case JSON_NULL:
            return "null";
        case JSON_BOOL:
            return "boolean";
        case JSON_NUMBER:
            return "number";
        case JSON_STRING:
            return "string";
        case JSON_ARRAY:
            return "array";
        case JSON_OBJECT:
            return "object";
    }
    return "?";
}

size_t json_escape(char *dst, size_t cap, const char *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
#define EMIT(ch)                        \
    do {                                \
        if (n + 1 < cap) dst[n] = (ch); \
        n++;                            \
    } while (0)
    EMIT('"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *short_esc = NULL;
        switch (c) {
            case '"':
                short_esc = "\\\"";
                break;
            case '\\':
                short_esc = "\\\\";
                break;
            case '\b':
                short_esc = "\\b";
                break;
            case '\f':
                short_esc = "\\f";
                break;
            case '\n':
                short_esc = "\\n";
                break;
            case '\r':
                short_esc = "\\r";
                break;
            case '\t':
                short_esc = "\\t";
                break;
            default:
                break;
        }
        if (short_esc) {
            EMIT(short_esc[0]);
            EMIT(short_esc[1]);
        } else if (c < 0x20) {
            EMIT('\\');
            EMIT('u');
            EMIT('0');
            EMIT('0');
            EMIT(hex[c >> 4]);
            EMIT(hex[c & 15]);
        } else
            EMIT((char)c);
    }
    EMIT('"');
#undef EMIT
    if (cap) dst[n < cap ? n : cap - 1] = '\0';
    return n;
}

char *json_quote(const char *s) {
    size_t len = strlen(s);
    size_t need = json_escape(NULL, 0, s, len);
    char *out = malloc(need + 1);
    if (out) json_escape(out, need + 1, s, len);
    return out;
}

char *json_string_list(const char *const *items, size_t n) {
    size_t need = 2 + (n ? n - 1 : 0); /* brackets and commas */
    for (size_t i = 0; i < n; i++) need += json_escape(NULL, 0, items[i], strlen(items[i]));
    char *out = malloc(need + 1);
    if (!out) return NULL;
    size_t k = 0;
    out[k++] = '[';
    for (size_t i = 0; i < n; i++) {
        if (i) out[k++] = ',';
        k += json_escape(out + k, need + 1 - k, items[i], strlen(items[i]));
    }
    out[k++] = ']';
    out[k] = '\0';
    return out;
}
