#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char *shared_root(void) {
    const char *env = getenv("GELAN_SHARED");
    return env && *env ? env : "../shared";
}

const char *shared_path(const char *rel) {
    static char bufs[8][1024];
    static int next;
    char *b = bufs[next++ & 7];
    snprintf(b, 1024, "%s/%s", shared_root(), rel);
    return b;
}

const char *golden_path(const char *gcase, const char *file) {
    char rel[512];
    snprintf(rel, sizeof rel, "golden/%s/%s", gcase, file);
    return shared_path(rel);
}

int shared_available(void) { return access(shared_path("golden/README.md"), R_OK) == 0; }

double rel_error(const float *got, const float *want, size_t n) {
    double maxw = 0, maxd = 0;
    for (size_t i = 0; i < n; i++) {
        maxw = fmax(maxw, fabs((double)want[i]));
        maxd = fmax(maxd, fabs((double)got[i] - (double)want[i]));
    }
    return maxw > 0 ? maxd / maxw : maxd;
}

int check_close(const char *name, const float *got, const float *want, size_t n, double rtol, double atol) {
    double maxw = 0, maxd = 0;
    size_t worst = 0;
    int nonfinite = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) nonfinite = 1;
        maxw = fmax(maxw, fabs((double)want[i]));
        double d = fabs((double)got[i] - (double)want[i]);
        if (d > maxd || (isnan(d) && !isnan(maxd))) {
            maxd = d;
            worst = i;
        }
    }
    double tol = rtol * maxw + atol;
    if (!nonfinite && maxd <= tol) return 0;
    fprintf(stderr, "\n  %s: max |diff| %.3g > tol %.3g (max|want| %.3g) at [%zu]: got %.7g want %.7g\n", name, maxd,
            tol, maxw, worst, n ? got[worst] : 0.f, n ? want[worst] : 0.f);
    return -1;
}
