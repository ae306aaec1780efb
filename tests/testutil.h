/* Shared helpers for the CUnit suites. */
#ifndef GELAN_TESTUTIL_H
#define GELAN_TESTUTIL_H

#include <CUnit/CUnit.h>
#include <stdbool.h>
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

/* ---- the command line ------------------------------------------------------------ */

/* $GELAN_BIN, else build/gelan. */
const char *gelan_bin_path(void);
/* Runs cmd through the shell; its exit status (-1 when it did not exit), and
 * the tail of its output (stdout and stderr, the last len-1 bytes) in out. */
int run_command(const char *cmd, char *out, size_t len);
/* run_command() == want; else prints the command, its status and output. */
bool run_command_expect(const char *cmd, int want, char *out, size_t len);

/* ---- temporary files and training data ------------------------------------------- */

/* /tmp/gelan_test_<suite>_<pid>/<name> ("" for the directory), in a static
 * buffer per call (up to 8 live results). */
const char *tmp_dir_path(const char *suite, const char *name);
/* Creates / removes (with everything in it) the suite's directory: a suite's
 * CUnit setup and teardown. */
int tmp_dir_make(const char *suite);
int tmp_dir_remove(const char *suite);
/* Writes a synthetic shapes data YAML (ntrain / nval images of img pixels,
 * seed 0) at path; path, or NULL when it cannot be written. */
const char *write_shapes_data(const char *path, int ntrain, int nval, int img);
/* Two checkpoints hold the same tensors bit for bit and the same values of the
 * given metadata keys; prints the first difference. */
bool same_checkpoint_tensors(const char *a, const char *b, const char *const *keys, int nkeys);

/* Helpers over the library's model, tensor and training types are in
 * tests/testutil_nn.h (not included here: the infer/ suites include
 * infer/kernels.h, whose ActKind clashes with nn/blocks.h's). */

/* Each tests/test_NAME.c defines `int suite_NAME(void)` that adds its suite
 * (CU_add_suite + CU_add_test) and returns 0. */
#define SUITE_FN(name) int suite_##name(void)

#endif
