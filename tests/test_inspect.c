/* Suite inspect: `gelan inspect` (cli/cmd_inspect.c) on small files written
 * here, whose contents are known exactly. */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tensor/error.h"
#include "tensor/safetensors.h"
#include "tests/testutil.h"

static const char *gelan_bin(void) {
    const char *g = getenv("GELAN_BIN");
    return g && *g ? g : "build/gelan";
}

/* Exit status of cmd; its stdout (up to len-1 bytes) in out. */
static int run(const char *cmd, char *out, size_t len) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    while (fgetc(p) != EOF) {
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int write_file(const char *path, float m12) {
    StWriter *w = st_writer_new();
    float x = 2.5f, m[6] = {0, 1, 0, 0, 0, m12}, b[4] = {-1, 2, -3, 4};
    int shape_m[2] = {2, 3}, shape_b[1] = {4};
    int rc = w ? 0 : -1;
    if (!rc) rc = st_writer_add_f32(w, "a.x", 0, NULL, &x);
    if (!rc) rc = st_writer_add_f32(w, "a.m", 2, shape_m, m);
    if (!rc) rc = st_writer_add_f32(w, "b", 1, shape_b, b);
    if (!rc) rc = st_writer_set_metadata(w, "format", "test/1");
    if (!rc) rc = st_writer_save(w, path);
    st_writer_free(w);
    return rc;
}

static void expect(const char *text, const char *want) {
    if (!strstr(text, want)) fprintf(stderr, "\n  missing \"%s\" in:\n%s\n", want, text);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, want));
}

static void test_inspect(void) {
    const char *g = gelan_bin();
    if (access(g, X_OK) != 0) {
        fprintf(stderr, "\n  no %s: skipped\n", g);
        return;
    }
    char dir[] = "/tmp/gelan_inspect_XXXXXX";
    CU_ASSERT_PTR_NOT_NULL(mkdtemp(dir));
    char f1[300], f2[300], cmd[1024], out[8192];
    snprintf(f1, sizeof f1, "%s/a.safetensors", dir);
    snprintf(f2, sizeof f2, "%s/b.safetensors", dir);
    CU_ASSERT_OK(write_file(f1, 7.0f));
    CU_ASSERT_OK(write_file(f2, 7.5f));

    snprintf(cmd, sizeof cmd, "%s inspect %s", g, f1); /* the list */
    CU_ASSERT_EQUAL(run(cmd, out, sizeof out), 0);
    expect(out, ": 3 tensors");
    expect(out, "metadata format");
    expect(out, "a.m                                      F32 [2,3]          min 0 max 7 mean 1.33333");
    expect(out, "a.x                                      F32 []             = 2.5");
    expect(out, "b                                        F32 [4]            min -3 max 4 mean 0.5");

    snprintf(cmd, sizeof cmd, "%s inspect %s 'a.*'", g, f1); /* values, last dimension on a line */
    CU_ASSERT_EQUAL(run(cmd, out, sizeof out), 0);
    expect(out, "  [0,0]          0 1 0\n  [1,0]          0 0 7\n");
    CU_ASSERT_PTR_NULL(strstr(out, "\nb "));

    snprintf(cmd, sizeof cmd, "%s inspect %s a.m --nonzero", g, f1);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof out), 0);
    expect(out, "  [0,1]            1\n  [1,2]            7\n  (2 nonzero of 6)");

    snprintf(cmd, sizeof cmd, "%s inspect %s b --values 2", g, f1); /* the limit counts values, not rows */
    CU_ASSERT_EQUAL(run(cmd, out, sizeof out), 0);
    expect(out, "  [0]            -1 2 ...\n  (2 of 4 values shown; --values 0 shows all)\n");

    snprintf(cmd, sizeof cmd, "%s inspect %s --diff %s", g, f1, f2); /* 7 vs 7.5: 0.5 / 7.5 */
    CU_ASSERT_EQUAL(run(cmd, out, sizeof out), 0);
    expect(out, "a.m                                              max|a-b| 0.5  relative to max|b| 0.0667");
    expect(out, "a.x                                              max|a-b| 0  relative to max|b| 0");

    snprintf(cmd, sizeof cmd, "%s inspect %s a.m --diff %s --as b 2>&1", g, f1, f2); /* shapes differ */
    CU_ASSERT_EQUAL(run(cmd, out, sizeof out), 0);
    expect(out, "[2,3] in ");
    snprintf(cmd, sizeof cmd, "%s inspect %s b --diff %s --as b", g, f1, f2);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof out), 0);
    expect(out, "b vs b ");
    snprintf(cmd, sizeof cmd, "%s inspect %s --diff %s --as b 2>/dev/null", g, f1, f2); /* no tensor named */
    CU_ASSERT_EQUAL(run(cmd, out, sizeof out), 2);

    snprintf(cmd, sizeof cmd, "%s inspect %s --meta format", g, f1);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "test/1\n");

    snprintf(cmd, sizeof cmd, "%s inspect %s nothing.here 2>/dev/null", g, f1);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof out), 1);
    snprintf(cmd, sizeof cmd, "%s inspect %s/none.safetensors 2>/dev/null", g, dir);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof out), 1);
    snprintf(cmd, sizeof cmd, "%s inspect 2>/dev/null", g);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof out), 2);
    remove(f1);
    remove(f2);
    rmdir(dir);
}

SUITE_FN(inspect) {
    CU_pSuite s = CU_add_suite("inspect", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "gelan inspect: list, values, nonzero, diff, metadata, errors", test_inspect);
    return 0;
}
