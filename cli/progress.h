/* Progress of long work (training epochs, validation): on a terminal one line
 * redrawn in place (a bar, done/total, it/s, ETA and a caller's text); when
 * the stream is not a terminal, plain lines at 25%, 50%, 75% and at the end,
 * so logs stay short and readable. */
#ifndef GELAN_CLI_PROGRESS_H
#define GELAN_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdio.h>

typedef struct {
    FILE *f;
    bool tty;
    long total;
    long done;
    double t0, last_draw;
    int next_plain_pct; /* plain mode: next percentage that prints a line */
    char prefix[128];
} Progress;

/* Starts a progress of `total` steps with a prefix (e.g. "epoch 3/10"). */
void progress_begin(Progress *p, FILE *f, const char *prefix, long total);
/* Records `done` steps; text (may be NULL) follows the counters. */
void progress_update(Progress *p, long done, const char *text);
/* Ends the line (terminal) after a final update. */
void progress_end(Progress *p, const char *text);
/* Seconds since progress_begin. */
double progress_elapsed(const Progress *p);
/* Wall-clock seconds (monotonic). */
double progress_now(void);

#endif
