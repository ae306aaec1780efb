/* SVG line plots of a training run, drawn by the project (no plotting
 * library): one small panel per quantity against the epoch, like the
 * official results.png (losses, precision, recall, mAP50, mAP50-95). */
#ifndef GELAN_TRAIN_PLOT_H
#define GELAN_TRAIN_PLOT_H

typedef struct {
    const char *title; /* e.g. "train/box_loss" */
    const double *y;   /* n values (NaN = no point) */
} PlotSeries;

/* Writes an SVG of npanels panels (cols per row) sharing the x values x[n]. */
int plot_svg(const char *path, const double *x, int n, const PlotSeries *panels, int npanels, int cols);

/* Reads a results.csv (a header of column names, then one row of numbers per
 * epoch; the first column is the x axis) and plots every other column whose
 * name does not start with skip_prefix (NULL: none). */
int plot_results_csv(const char *csv_path, const char *svg_path, const char *skip_prefix);

#endif
