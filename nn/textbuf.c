/* A growing text buffer (nn/textbuf.h). */
#include "nn/textbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void textbuf_add(TextBuf *t, const char *fmt, ...) {
    if (t->oom) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        t->oom = true;
        return;
    }
    if (t->len + (size_t)n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + (size_t)n + 1) cap *= 2;
        char *s = realloc(t->s, cap);
        if (!s) {
            t->oom = true;
            return;
        }
        t->s = s;
        t->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

void textbuf_comment(TextBuf *t, const char *s) {
    for (; *s; s++) {
        if ((unsigned char)*s < 32)
            textbuf_add(t, "?");
        else
            textbuf_add(t, "%c", *s);
    }
}

char *textbuf_take(TextBuf *t, const char *who) {
    if (t->oom || !t->s) {
        free(t->s);
        *t = (TextBuf){0};
        gelan_error("%s: out of memory", who);
        return NULL;
    }
    char *s = t->s;
    *t = (TextBuf){0};
    return s;
}

const char *format_with_commas(size_t v, char *buf, size_t len) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%zu", v), o = 0;
    for (int i = 0; i < n && o + 2 < (int)len; i++) {
        if (i && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
    return buf;
}
