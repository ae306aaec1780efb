#include "cli/progress.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BAR_WIDTH 24
#define REDRAW_SECONDS 0.1
#define PLAIN_STEP_PCT 25 /* plain mode: a line at 25%, 50%, 75% and the end */

double progress_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void progress_begin(Progress *p, FILE *f, const char *prefix, long total) {
    memset(p, 0, sizeof *p);
    p->f = f;
    p->tty = isatty(fileno(f)) != 0;
    p->total = total > 0 ? total : 1;
    p->t0 = progress_now();
    p->last_draw = -1;
    p->next_plain_pct = PLAIN_STEP_PCT;
    snprintf(p->prefix, sizeof p->prefix, "%s", prefix ? prefix : "");
}

double progress_elapsed(const Progress *p) { return progress_now() - p->t0; }

/* "1:05" or "1:02:03" */
static void hms(double s, char *buf, size_t len) {
    long t = s > 0 ? (long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

static void draw(Progress *p, const char *text, bool final) {
    double el = progress_elapsed(p);
    double rate = el > 0 ? p->done / el : 0;
    char eta[32], spent[32];
    hms(rate > 0 ? (p->total - p->done) / rate : 0, eta, sizeof eta);
    hms(el, spent, sizeof spent);
    int pct = (int)(100.0 * p->done / p->total);
    if (p->tty) {
        char bar[BAR_WIDTH + 1];
        int fill = (int)((double)BAR_WIDTH * p->done / p->total);
        for (int i = 0; i < BAR_WIDTH; i++) bar[i] = i < fill ? '#' : '.';
        bar[BAR_WIDTH] = '\0';
        fprintf(p->f, "\r\033[K%s %3d%% |%s| %ld/%ld %s %s<%s %.2fit/s", p->prefix, pct, bar, p->done, p->total,
                text ? text : "", spent, eta, rate);
        if (final) fputc('\n', p->f);
    } else {
        fprintf(p->f, "%s %3d%% %ld/%ld %s %s<%s %.2fit/s\n", p->prefix, pct, p->done, p->total, text ? text : "",
                spent, eta, rate);
    }
    fflush(p->f);
}

void progress_update(Progress *p, long done, const char *text) {
    p->done = done > p->total ? p->total : done;
    if (p->tty) {
        double now = progress_now();
        if (now - p->last_draw < REDRAW_SECONDS && p->done < p->total) return;
        p->last_draw = now;
        draw(p, text, false);
        return;
    }
    int pct = (int)(100.0 * p->done / p->total);
    if (pct < p->next_plain_pct || p->done == p->total) return; /* the end prints in progress_end */
    while (p->next_plain_pct <= pct) p->next_plain_pct += PLAIN_STEP_PCT;
    draw(p, text, false);
}

void progress_end(Progress *p, const char *text) { draw(p, text, true); }
