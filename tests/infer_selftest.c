/* The infer suites without CUnit, for targets where CUnit is not at hand
 * (make cross-test runs this aarch64 build under qemu). It provides the few
 * CUnit assertion macros the suites use and includes them; natively the same
 * checks run under CUnit in `make test`. Last line: "N passed, N failed". */
#include <stdio.h>
#include <string.h>

#include "tensor/error.h"
#include "tensor/pool.h"

#define INFER_SELFTEST 1
static int selftest_failed_asserts;

#define CU_ASSERT(cond)                                                \
    do {                                                               \
        if (!(cond)) {                                                 \
            printf("  FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            selftest_failed_asserts++;                                 \
        }                                                              \
    } while (0)
#define CU_ASSERT_EQUAL(a, b) CU_ASSERT((a) == (b))
#define CU_ASSERT_PTR_NULL(p) CU_ASSERT((p) == NULL)
#define CU_ASSERT_PTR_NOT_NULL(p) CU_ASSERT((p) != NULL)
#define CU_ASSERT_STRING_EQUAL(a, b) CU_ASSERT(strcmp((a), (b)) == 0)

#include "tests/test_infer.c"
#define InferTestCase InferTestCase2 /* each file declares the same struct */
#include "tests/test_infer_kernels.c"
#undef InferTestCase

static void run_cases(const char *suite, const char *const *names, void (*const *fns)(void), int n, int *pass,
                      int *fail) {
    for (int i = 0; i < n; i++) {
        int before = selftest_failed_asserts;
        fns[i]();
        int ok = selftest_failed_asserts == before;
        printf("%s: %s ... %s\n", suite, names[i], ok ? "passed" : "FAILED");
        *(ok ? pass : fail) += 1;
    }
}

int main(void) {
    pool_init(0);
    int pass = 0, fail = 0;
    const char *names[64];
    void (*fns[64])(void);
    int n = 0;
    for (const InferTestCase *t = infer_cases; t->name; t++) names[n] = t->name, fns[n++] = t->fn;
    run_cases("infer", names, fns, n, &pass, &fail);
    n = 0;
    for (const InferTestCase2 *t = infer_kernels_cases; t->name; t++) names[n] = t->name, fns[n++] = t->fn;
    run_cases("infer_kernels", names, fns, n, &pass, &fail);
    printf("kernels: %s\n", infer_kernels()->name);
    pool_shutdown();
    printf("%d passed, %d failed\n", pass, fail);
    return fail ? 1 : 0;
}
