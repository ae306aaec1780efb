#include "tensor/error.h"

#include <pthread.h>
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

static void default_warning(const char *msg, void *ctx) {
    (void)ctx;
    fprintf(stderr, "warning: %s\n", msg);
}

static pthread_mutex_t warn_lock = PTHREAD_MUTEX_INITIALIZER;
static gelan_warning_handler warn_fn = default_warning;
static void *warn_ctx;
static unsigned long warn_count;

void gelan_set_warning_handler(gelan_warning_handler fn, void *ctx) {
    pthread_mutex_lock(&warn_lock);
    warn_fn = fn ? fn : default_warning;
    warn_ctx = ctx;
    pthread_mutex_unlock(&warn_lock);
}

void gelan_warn(const char *fmt, ...) {
    char msg[GELAN_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&warn_lock);
    warn_count++;
    warn_fn(msg, warn_ctx);
    pthread_mutex_unlock(&warn_lock);
}

unsigned long gelan_warning_count(void) {
    pthread_mutex_lock(&warn_lock);
    unsigned long n = warn_count;
    pthread_mutex_unlock(&warn_lock);
    return n;
}
