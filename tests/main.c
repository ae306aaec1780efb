/* The CUnit runner: registers every tests/test_*.c suite (the list is made by
 * the Makefile) and runs all of them, or only those named on the command
 * line. Exits non-zero when any assertion fails. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <string.h>

#include "tensor/pool.h"

#define SUITE(name) int suite_##name(void);
#include "suites.inc"
#undef SUITE

typedef struct {
    const char *name;
    int (*add)(void);
} SuiteEntry;

static const SuiteEntry all_suites[] = {
#define SUITE(name) {#name, suite_##name},
#include "suites.inc"
#undef SUITE
};

int main(int argc, char **argv) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    pool_init(0);
    size_t n = sizeof all_suites / sizeof all_suites[0];
    for (size_t i = 0; i < n; i++) {
        int wanted = argc < 2;
        for (int a = 1; a < argc; a++)
            if (strcmp(argv[a], all_suites[i].name) == 0) wanted = 1;
        if (wanted && all_suites[i].add() != 0) {
            fprintf(stderr, "could not register suite %s\n", all_suites[i].name);
            return 2;
        }
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    pool_shutdown();
    return failed ? 1 : 0;
}
