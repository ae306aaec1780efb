#include "tensor/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define GELAN_ERROR_MAX 2048

static _Thread_local char last_error[GELAN_ERROR_MAX];

int gelan_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return -1;
}

void gelan_error_prefix(const char *fmt, ...) {
    char prefix[GELAN_ERROR_MAX];
    char old[GELAN_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    /* prefix + ": " + old, cut to the buffer (truncation is fine for a message) */
    size_t n = strlen(prefix);
    if (n > GELAN_ERROR_MAX - 3) n = GELAN_ERROR_MAX - 3;
    memcpy(last_error, prefix, n);
    memcpy(last_error + n, ": ", 2);
    size_t room = GELAN_ERROR_MAX - n - 3;
    size_t m = strlen(old);
    if (m > room) m = room;
    memcpy(last_error + n + 2, old, m);
    last_error[n + 2 + m] = '\0';
}

const char *gelan_last_error(void) { return last_error; }

void gelan_clear_error(void) { last_error[0] = '\0'; }
