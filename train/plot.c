/* SVG line plots. Coordinates are computed here; the SVG is plain text. */
#include "train/plot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/error.h"

#define PANEL_W 260
#define PANEL_H 190
#define MARGIN_L 52
#define MARGIN_R 12
#define MARGIN_T 26
#define MARGIN_B 30

/* A "nice" axis range covering [lo, hi]. */
static void axis_range(double *lo, double *hi) {
    if (!(*hi > *lo)) {
        double c = *lo;
        *lo = c - (fabs(c) > 0 ? fabs(c) * 0.1 : 0.5);
        *hi = c + (fabs(c) > 0 ? fabs(c) * 0.1 : 0.5);
    }
    double pad = (*hi - *lo) * 0.05;
    *lo -= pad;
    *hi += pad;
}

/* XML-escapes a short text. */
static void put_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else
            fputc(*s, f);
    }
}

static void panel(FILE *f, int ox, int oy, const double *x, int n, const PlotSeries *s) {
    const int pw = PANEL_W - MARGIN_L - MARGIN_R, ph = PANEL_H - MARGIN_T - MARGIN_B;
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    int pts = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(s->y[i]) || !isfinite(x[i])) continue;
        xlo = fmin(xlo, x[i]), xhi = fmax(xhi, x[i]);
        ylo = fmin(ylo, s->y[i]), yhi = fmax(yhi, s->y[i]);
        pts++;
    }
    fprintf(f, "<g transform=\"translate(%d,%d)\">\n", ox, oy);
    fprintf(f, "<text x=\"%d\" y=\"16\" font-size=\"12\" text-anchor=\"middle\">", PANEL_W / 2);
    put_text(f, s->title);
    fprintf(f, "</text>\n<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#888\"/>\n",
            MARGIN_L, MARGIN_T, pw, ph);
    if (!pts) {
        fprintf(f, "</g>\n");
        return;
    }
    const double dxlo = xlo, dxhi = xhi;
    axis_range(&xlo, &xhi);
    axis_range(&ylo, &yhi);
    /* y ticks: low, middle, high; x ticks: first and last */
    for (int k = 0; k <= 2; k++) {
        double v = ylo + (yhi - ylo) * k / 2;
        double py = MARGIN_T + ph - (v - ylo) / (yhi - ylo) * ph;
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"9\" text-anchor=\"end\">%.3g</text>\n", MARGIN_L - 3, py + 3,
                v);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", MARGIN_L, py, MARGIN_L + pw,
                py);
    }
    for (int k = 0; k <= 1; k++) { /* the first and last x of the data */
        double v = k ? dxhi : dxlo;
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"9\" text-anchor=\"middle\">%g</text>\n",
                MARGIN_L + (v - xlo) / (xhi - xlo) * pw, MARGIN_T + ph + 12, v);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"9\" text-anchor=\"middle\">epoch</text>\n", MARGIN_L + pw / 2,
            PANEL_H - 6);
    fprintf(f, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"");
    for (int i = 0; i < n; i++) {
        if (!isfinite(s->y[i]) || !isfinite(x[i])) continue;
        fprintf(f, "%.1f,%.1f ", MARGIN_L + (x[i] - xlo) / (xhi - xlo) * pw,
                MARGIN_T + ph - (s->y[i] - ylo) / (yhi - ylo) * ph);
    }
    fprintf(f, "\"/>\n");
    for (int i = 0; i < n; i++) {
        if (!isfinite(s->y[i]) || !isfinite(x[i])) continue;
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2\" fill=\"#1f77b4\"/>\n",
                MARGIN_L + (x[i] - xlo) / (xhi - xlo) * pw, MARGIN_T + ph - (s->y[i] - ylo) / (yhi - ylo) * ph);
    }
    fprintf(f, "</g>\n");
}

int plot_svg(const char *path, const double *x, int n, const PlotSeries *panels, int npanels, int cols) {
    if (cols < 1) cols = 1;
    int rows = (npanels + cols - 1) / cols;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return gelan_error("plot: cannot write %s (%s)", tmp, strerror(errno));
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
            "height=\"%d\" font-family=\"sans-serif\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            cols * PANEL_W, rows * PANEL_H);
    for (int i = 0; i < npanels; i++) panel(f, (i % cols) * PANEL_W, (i / cols) * PANEL_H, x, n, &panels[i]);
    fprintf(f, "</svg>\n");
    int bad = ferror(f);
    if (fclose(f) || bad) {
        remove(tmp);
        return gelan_error("plot: writing %s failed", tmp);
    }
    if (rename(tmp, path)) {
        remove(tmp);
        return gelan_error("plot: cannot rename %s to %s (%s)", tmp, path, strerror(errno));
    }
    return 0;
}

#define MAX_COLS 64

int plot_results_csv(const char *csv_path, const char *svg_path, const char *skip_prefix) {
    FILE *f = fopen(csv_path, "r");
    if (!f) return gelan_error("plot: cannot open %s (%s)", csv_path, strerror(errno));
    char line[8192];
    char *names[MAX_COLS];
    int ncols = 0, rc = -1, nrows = 0, cap = 0;
    double *vals = NULL; /* [nrows][ncols] */
    if (!fgets(line, sizeof line, f)) {
        fclose(f);
        return gelan_error("plot: %s is empty", csv_path);
    }
    line[strcspn(line, "\r\n")] = '\0';
    for (char *tok = strtok(line, ","); tok && ncols < MAX_COLS; tok = strtok(NULL, ",")) {
        while (*tok == ' ') tok++;
        names[ncols++] = strdup(tok);
    }
    while (fgets(line, sizeof line, f)) {
        if (nrows == cap) {
            cap = cap ? 2 * cap : 64;
            double *g = realloc(vals, (size_t)cap * ncols * sizeof *vals);
            if (!g) goto done;
            vals = g;
        }
        char *p = line;
        for (int c = 0; c < ncols; c++) {
            char *end;
            double v = strtod(p, &end);
            vals[(size_t)nrows * ncols + c] = end == p ? NAN : v;
            p = strchr(end, ',');
            if (!p) {
                for (int k = c + 1; k < ncols; k++) vals[(size_t)nrows * ncols + k] = NAN;
                break;
            }
            p++;
        }
        nrows++;
    }
    {
        double *x = malloc((size_t)(nrows ? nrows : 1) * sizeof *x);
        double *cols = malloc((size_t)(nrows ? nrows : 1) * ncols * sizeof *cols);
        PlotSeries series[MAX_COLS];
        int np = 0;
        if (!x || !cols) {
            free(x), free(cols);
            gelan_error("plot: out of memory");
            goto done;
        }
        for (int r = 0; r < nrows; r++) x[r] = vals[(size_t)r * ncols];
        for (int c = 1; c < ncols; c++) {
            if (skip_prefix && !strncmp(names[c], skip_prefix, strlen(skip_prefix))) continue;
            double *y = cols + (size_t)c * nrows;
            for (int r = 0; r < nrows; r++) y[r] = vals[(size_t)r * ncols + c];
            series[np++] = (PlotSeries){names[c], y};
        }
        rc = plot_svg(svg_path, x, nrows, series, np, 4);
        free(x);
        free(cols);
    }
done:
    for (int c = 0; c < ncols; c++) free(names[c]);
    free(vals);
    fclose(f);
    return rc;
}
