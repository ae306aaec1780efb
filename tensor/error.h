/* Error reporting for library code.
 *
 * Library functions return 0 (or a non-NULL pointer) on success and record a
 * human-readable message on failure; only cli/ decides how to report it.
 * The message is thread-local, so worker threads never clobber each other. */
#ifndef GELAN_ERROR_H
#define GELAN_ERROR_H

#if defined(__GNUC__)
#define GELAN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define GELAN_PRINTF(a, b)
#endif

/* Records the message and returns -1, so `return gelan_error(...)` reads well. */
int gelan_error(const char *fmt, ...) GELAN_PRINTF(1, 2);

/* Prepends "context: " to the current message (for adding the layer, file...). */
void gelan_error_prefix(const char *fmt, ...) GELAN_PRINTF(1, 2);

/* The last message recorded on this thread ("" if none). */
const char *gelan_last_error(void);

void gelan_clear_error(void);

/* Warnings: a problem that the library works around (a bad label line that is
 * skipped, a degenerate calibration...). They go to the handler that cli/
 * installs; the default handler writes "warning: MSG" to stderr. Thread-safe:
 * the handler is called under a lock. */
typedef void (*gelan_warning_handler)(const char *msg, void *ctx);
void gelan_set_warning_handler(gelan_warning_handler fn, void *ctx);
void gelan_warn(const char *fmt, ...) GELAN_PRINTF(1, 2);
/* Number of warnings issued since the start (for tests and summaries). */
unsigned long gelan_warning_count(void);

#endif
