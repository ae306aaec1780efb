/* gelan inspect FILE [NAME ...] [--values N] [--nonzero] [--meta KEY] [--diff OTHER]:
 * what is inside a safetensors file (a trace, a checkpoint, a golden file).
 *
 *   no NAME        one line per tensor: name, dtype, shape, min, max, mean;
 *                  and the metadata keys
 *   NAME ...       those tensors (shell patterns: 'loss.*') with their values,
 *                  the last dimension along a line; --nonzero: only the
 *                  nonzero elements with their index, e.g. the foreground
 *                  anchors of assign.main.fg_mask
 *   --diff OTHER   per tensor: the largest difference from OTHER's tensor of
 *                  the same name, absolute and relative to max|OTHER|, as the
 *                  tests compare a trace with the official golden files
 *   --as NAME      with --diff and one tensor: compare it with OTHER's NAME
 *                  (e.g. a runtime's output.pred with a golden eval.pred.main)
 *   --meta KEY     the metadata value KEY in full (e.g. cfg of a checkpoint) */
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "tensor/error.h"
#include "tensor/safetensors.h"

static const char *USAGE =
    "gelan inspect FILE.safetensors [NAME|PATTERN ...] [--values N] [--nonzero] [--meta KEY] [--diff OTHER "
    "[--as NAME]]";

#define MAX_NAMES 32

static const char *shape_text(const StTensorInfo *ti, char *buf, size_t len) {
    int o = snprintf(buf, len, "[");
    for (int d = 0; d < ti->ndim && o < (int)len; d++)
        o += snprintf(buf + o, len - o, d ? ",%lld" : "%lld", (long long)ti->shape[d]);
    if (o < (int)len) snprintf(buf + o, len - o, "]");
    return buf;
}

/* The tensor as floats (malloc'd), NULL + gelan_error. */
static float *read_all(const SafeTensors *st, const StTensorInfo *ti) {
    size_t n = st_numel(ti);
    float *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) {
        gelan_error("out of memory for %s (%zu elements)", ti->name, n);
        return NULL;
    }
    if (st_read_f32(st, ti->name, v, n)) {
        free(v);
        return NULL;
    }
    return v;
}

static void stats(const float *v, size_t n, double *mn, double *mx, double *mean) {
    double a = n ? v[0] : 0, b = a, s = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < a) a = v[i];
        if (v[i] > b) b = v[i];
        s += v[i];
    }
    *mn = a, *mx = b, *mean = n ? s / (double)n : 0;
}

static bool wanted(const char *name, const char **pats, int npats) {
    if (npats == 0) return true;
    for (int i = 0; i < npats; i++)
        if (!fnmatch(pats[i], name, 0)) return true;
    return false;
}

/* "[i,j,k]" of flat index f. */
static void index_text(const StTensorInfo *ti, size_t f, char *buf, size_t len) {
    size_t idx[ST_MAX_DIMS];
    for (int d = ti->ndim - 1; d >= 0; d--) {
        size_t s = (size_t)ti->shape[d];
        idx[d] = s ? f % s : 0;
        f = s ? f / s : 0;
    }
    int o = snprintf(buf, len, "[");
    for (int d = 0; d < ti->ndim && o < (int)len; d++) o += snprintf(buf + o, len - o, d ? ",%zu" : "%zu", idx[d]);
    if (o < (int)len) snprintf(buf + o, len - o, "]");
}

static void print_values(const StTensorInfo *ti, const float *v, int limit, bool nonzero) {
    size_t n = st_numel(ti);
    char ib[96];
    if (nonzero) {
        size_t shown = 0, total = 0;
        for (size_t i = 0; i < n; i++) {
            if (v[i] == 0) continue;
            total++;
            if (limit > 0 && shown >= (size_t)limit) continue;
            index_text(ti, i, ib, sizeof ib);
            printf("  %-16s %.8g\n", ib, v[i]);
            shown++;
        }
        printf("  (%zu nonzero of %zu%s)\n", total, n, shown < total ? "; --values 0 shows all" : "");
        return;
    }
    /* a row: the last dimension that is not 1 (a 1x1 conv weight [c2, c1, 1, 1] prints c1 per line) */
    int d = ti->ndim - 1;
    while (d > 0 && ti->shape[d] == 1) d--;
    size_t row_len = 1, shown = 0;
    for (int k = d; k < ti->ndim; k++) row_len *= (size_t)ti->shape[k];
    for (size_t row = 0; row_len && row * row_len < n; row++) {
        index_text(ti, row * row_len, ib, sizeof ib);
        printf("  %-14s", ib);
        for (size_t j = 0; j < row_len; j++, shown++) {
            if (limit > 0 && shown == (size_t)limit) {
                printf(" ...\n  (%zu of %zu values shown; --values 0 shows all)\n", shown, n);
                return;
            }
            printf(" %.6g", v[row * row_len + j]);
        }
        printf("\n");
    }
}

int cmd_inspect(int argc, char **argv) {
    int limit = 64;
    bool nonzero = false;
    const char *meta = NULL, *diff = NULL, *as = NULL, *pos[MAX_NAMES + 1];
    int npos = 0;
    ArgSpec specs[] = {
        {"--values", ARG_INT, &limit, "N: print at most N values per tensor (default 64; 0: all)"},
        {"--nonzero", ARG_FLAG, &nonzero, "print only the nonzero elements, with their index"},
        {"--meta", ARG_STR, &meta, "KEY: print this metadata value in full"},
        {"--diff", ARG_STR, &diff, "OTHER: compare with the tensors of the same name in OTHER"},
        {"--as", ARG_STR, &as, "NAME: with --diff and one tensor NAME0: compare NAME0 with OTHER's NAME"},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    int rc = args_parse(argc, argv, USAGE, specs, nspecs, pos, MAX_NAMES + 1, &npos);
    if (rc) return rc == 1 ? 0 : rc;
    if (npos < 1) {
        fprintf(stderr, "error: give a safetensors file\n");
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    if (limit < 0) {
        fprintf(stderr, "error: --values must be >= 0\n");
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    if (as && (!diff || npos != 2 || strpbrk(pos[1], "*?["))) {
        fprintf(stderr, "error: --as needs --diff and exactly one tensor name\n");
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    SafeTensors *st = st_open(pos[0]);
    if (!st) return cli_fail("inspect");
    const char **pats = pos + 1;
    int npats = npos - 1;
    if (meta) {
        const char *v = st_metadata(st, meta);
        if (!v) {
            fprintf(stderr, "gelan inspect: %s has no metadata key '%s'\n", pos[0], meta);
            st_close(st);
            return 1;
        }
        printf("%s\n", v);
        st_close(st);
        return 0;
    }
    SafeTensors *other = NULL;
    if (diff && !(other = st_open(diff))) {
        st_close(st);
        return cli_fail("inspect");
    }
    if (npats == 0 && !diff) {
        printf("%s: %d tensors\n", pos[0], st_count(st));
        for (int i = 0; i < st_metadata_count(st); i++) {
            const char *v = st_metadata_value(st, i);
            size_t len = strcspn(v, "\n");
            printf("  metadata %-14s %.*s%s\n", st_metadata_key(st, i), len > 60 ? 60 : (int)len, v,
                   len > 60 || v[len] ? " ..." : "");
        }
    }
    int matched = 0;
    rc = 0;
    /* list in name order (the tests and the golden README use the names) */
    int n = st_count(st);
    const StTensorInfo **order = malloc(sizeof *order * (size_t)(n ? n : 1));
    if (!order) rc = gelan_error("out of memory");
    for (int i = 0; !rc && i < n; i++) order[i] = st_info(st, i);
    for (int i = 1; !rc && i < n; i++)
        for (int j = i; j > 0 && strcmp(order[j - 1]->name, order[j]->name) > 0; j--) {
            const StTensorInfo *t = order[j - 1];
            order[j - 1] = order[j], order[j] = t;
        }
    for (int i = 0; !rc && i < n; i++) {
        const StTensorInfo *ti = order[i];
        if (!wanted(ti->name, pats, npats)) continue;
        char sb[96];
        float *v = read_all(st, ti);
        if (!v) {
            rc = -1;
            break;
        }
        size_t numel = st_numel(ti);
        double mn, mx, mean;
        stats(v, numel, &mn, &mx, &mean);
        if (diff) {
            const StTensorInfo *oi = st_find(other, as ? as : ti->name);
            if (!oi && as) {
                free(v);
                rc = gelan_error("%s has no tensor %s", diff, as);
                break;
            }
            if (!oi) {
                free(v);
                continue;
            }
            matched++;
            float *w = st_numel(oi) == numel ? read_all(other, oi) : NULL;
            if (!w) {
                char sb2[96];
                printf("%-48s %s in %s, %s in %s\n", ti->name, shape_text(ti, sb, sizeof sb), pos[0],
                       shape_text(oi, sb2, sizeof sb2), diff);
                free(v);
                continue;
            }
            double dmax = 0, wmax = 0;
            for (size_t k = 0; k < numel; k++) {
                double d = fabs((double)v[k] - w[k]);
                if (d > dmax || isnan(d)) dmax = d;
                if (fabs(w[k]) > wmax) wmax = fabs(w[k]);
            }
            char label[160];
            snprintf(label, sizeof label, "%s%s%s", ti->name, as ? " vs " : "", as ? as : "");
            printf("%-48s max|a-b| %.3g  relative to max|b| %.3g\n", label, dmax, wmax > 0 ? dmax / wmax : dmax);
            free(w);
            free(v);
            continue;
        }
        matched++;
        if (ti->ndim == 0) /* a scalar: its value */
            printf("%-40s %s %-14s = %.8g\n", ti->name, st_dtype_name(ti->dtype), "[]", v[0]);
        else
            printf("%-40s %s %-14s min %.6g max %.6g mean %.6g\n", ti->name, st_dtype_name(ti->dtype),
                   shape_text(ti, sb, sizeof sb), mn, mx, mean);
        if (npats && ti->ndim > 0) print_values(ti, v, limit, nonzero);
        free(v);
    }
    free(order);
    if (!rc && npats && !matched) rc = gelan_error("%s: no tensor matches%s%s", pos[0], npats ? " " : "", pats[0]);
    st_close(st);
    st_close(other);
    return rc ? cli_fail("inspect") : 0;
}
