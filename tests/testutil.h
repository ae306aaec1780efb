/* Shared helpers for the CUnit suites. */
#ifndef GELAN_TESTUTIL_H
#define GELAN_TESTUTIL_H

#include <CUnit/CUnit.h>
#include <stddef.h>

/* ../shared (or $GELAN_SHARED) + "/" + rel, in a static buffer per call site
 * rotation (up to 8 live results). */
const char *shared_path(const char *rel);
/* ../shared/golden/<case>/<file> */
const char *golden_path(const char *gcase, const char *file);
int shared_available(void);

/* max|got - want| <= rtol * max|want| + atol. Prints the worst element when it
 * fails (with name) and returns 0 on success. */
int check_close(const char *name, const float *got, const float *want, size_t n, double rtol, double atol);
/* The measured relative error max|got-want| / max|want|. */
double rel_error(const float *got, const float *want, size_t n);

/* CU_ASSERT with the current gelan_last_error() printed on failure. */
#define CU_ASSERT_OK(expr)                                                                   \
    do {                                                                                     \
        int _rc = (expr);                                                                    \
        if (_rc != 0) fprintf(stderr, "\n  %s failed: %s\n", #expr, gelan_last_error());    \
        CU_ASSERT_EQUAL(_rc, 0);                                                             \
    } while (0)
/* (ptr) is evaluated once, so an op call may be passed directly */
#define CU_ASSERT_NONNULL_OK(ptr)                                                            \
    do {                                                                                     \
        const void *_p = (ptr);                                                              \
        if (!_p) fprintf(stderr, "\n  %s is NULL: %s\n", #ptr, gelan_last_error());         \
        CU_ASSERT_PTR_NOT_NULL(_p);                                                          \
    } while (0)

/* Each tests/test_NAME.c defines `int suite_NAME(void)` that adds its suite
 * (CU_add_suite + CU_add_test) and returns 0. */
#define SUITE_FN(name) int suite_##name(void)

#endif
