/* The qconv suite without CUnit, for targets where CUnit is not at hand: `make
 * cross-test-qconv` runs an aarch64 build of it under qemu, once on a CPU with the dot-product
 * extension and once on one without, so both NEON paths are checked against the portable one.
 * Last line: "N passed, N failed". */
#include <stdio.h>
#include <string.h>

#include "tensor/pool.h"

#define QCONV_SELFTEST 1
static int selftest_failed_asserts;

#define CU_ASSERT(cond)                                                \
    do {                                                               \
        if (!(cond)) {                                                 \
            printf("  FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            selftest_failed_asserts++;                                 \
        }                                                              \
    } while (0)
#define CU_ASSERT_EQUAL(a, b) CU_ASSERT((a) == (b))
#define CU_ASSERT_PTR_NOT_NULL(p) CU_ASSERT((p) != NULL)
#define CU_ASSERT_STRING_EQUAL(a, b) CU_ASSERT(strcmp((a), (b)) == 0)
#define CU_ASSERT_OK(expr)                                                    \
    do {                                                                      \
        int _rc = (expr);                                                     \
        if (_rc != 0) printf("  %s failed: %s\n", #expr, gelan_last_error()); \
        CU_ASSERT(_rc == 0);                                                  \
    } while (0)

#include "tests/test_qconv.c"

/* usage: qconv_selftest [--expect PATH]: with --expect, also fails unless PATH is the path this
 * CPU selects (so a CI run notices when qemu stops offering the CPU feature it is meant to test) */
int main(int argc, char **argv) {
    pool_init(0);
    int pass = 0, fail = 0;
    printf("qconv paths on this CPU:");
    for (const char *const *nm = qconv_kernel_names; *nm; nm++)
        if (qconv_kernels_get(*nm)) printf(" %s", *nm);
    printf(" (default %s)\n", qconv_kernels()->name);
    if (argc == 3 && !strcmp(argv[1], "--expect")) {
        int ok = !strcmp(qconv_kernels()->name, argv[2]);
        printf("qconv: the selected path is %s ... %s\n", argv[2], ok ? "passed" : "FAILED");
        *(ok ? &pass : &fail) += 1;
    }
    for (const QconvTestCase *t = qconv_cases; t->name; t++) {
        int before = selftest_failed_asserts;
        t->fn();
        int ok = selftest_failed_asserts == before;
        printf("qconv: %s ... %s\n", t->name, ok ? "passed" : "FAILED");
        *(ok ? &pass : &fail) += 1;
    }
    pool_shutdown();
    printf("%d passed, %d failed\n", pass, fail);
    return fail ? 1 : 0;
}
