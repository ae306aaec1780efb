/* A growing text buffer for the text files the library writes (model YAML,
 * the inference graph). Appends never fail on their own: an allocation
 * failure is remembered and reported once, by textbuf_take, so that a writer
 * can append freely and check at the end. Also the count format of the
 * summaries. */
#ifndef GELAN_NN_TEXTBUF_H
#define GELAN_NN_TEXTBUF_H

#include <stdbool.h>
#include <stddef.h>

#include "tensor/error.h"

typedef struct {
    char *s; /* NUL-terminated once anything was added */
    size_t len, cap;
    bool oom; /* an append ran out of memory: the text is incomplete */
} TextBuf;

/* Appends printf-style. */
void textbuf_add(TextBuf *t, const char *fmt, ...) GELAN_PRINTF(2, 3);
/* Appends s for a `#` comment: a control character (a newline would end the
 * comment) becomes '?'. */
void textbuf_comment(TextBuf *t, const char *s);
/* The text (malloc'd, the caller frees it), or NULL + gelan_error("WHO: out
 * of memory") when an append failed; the buffer is given up either way. */
char *textbuf_take(TextBuf *t, const char *who);

/* v with thousands separators, as the official summaries print counts:
 * 2442640 -> "2,442,640" (into buf, which is returned). */
const char *format_with_commas(size_t v, char *buf, size_t len);

#endif
