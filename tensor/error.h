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

#endif
