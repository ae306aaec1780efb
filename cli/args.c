#include "cli/args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/error.h"

void args_usage(const char *usage, const ArgSpec *specs, int nspecs, bool to_stdout) {
    FILE *f = to_stdout ? stdout : stderr;
    fprintf(f, "usage: %s\n", usage);
    if (nspecs) fprintf(f, "options:\n");
    for (int i = 0; i < nspecs; i++) fprintf(f, "  %-14s %s\n", specs[i].name, specs[i].help);
    fprintf(f, "  %-14s %s\n", "--help", "print this help");
}

static int bad(const char *usage, const ArgSpec *specs, int nspecs, const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "error: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    args_usage(usage, specs, nspecs, false);
    return 2;
}

int args_parse(int argc, char **argv, const char *usage, const ArgSpec *specs, int nspecs, const char **positional,
               int max_pos, int *npos) {
    int np = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            args_usage(usage, specs, nspecs, true);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (np >= max_pos) return bad(usage, specs, nspecs, "unexpected argument '%s'%s", a, "");
            positional[np++] = a;
            continue;
        }
        /* --name=value or --name value */
        char name[64];
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        if (len >= sizeof name) len = sizeof name - 1;
        memcpy(name, a, len);
        name[len] = '\0';
        const ArgSpec *s = NULL;
        for (int k = 0; k < nspecs; k++)
            if (strcmp(specs[k].name, name) == 0) s = &specs[k];
        if (!s) return bad(usage, specs, nspecs, "unknown option '%s'%s", name, "");
        if (s->kind == ARG_FLAG) {
            if (eq) return bad(usage, specs, nspecs, "option '%s' takes no value%s", name, "");
            *(bool *)s->value = true;
            continue;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) return bad(usage, specs, nspecs, "option '%s' needs a value%s", name, "");
        char *end = NULL;
        errno = 0;
        switch (s->kind) {
            case ARG_STR:
                *(const char **)s->value = v;
                break;
            case ARG_INT: {
                long x = strtol(v, &end, 10);
                if (errno || !*v || *end || x < -2147483647L || x > 2147483647L)
                    return bad(usage, specs, nspecs, "option '%s' wants an integer, got '%s'", name, v);
                *(int *)s->value = (int)x;
                break;
            }
            case ARG_FLOAT: {
                float x = strtof(v, &end);
                if (errno || !*v || *end) return bad(usage, specs, nspecs, "option '%s' wants a number, got '%s'", name, v);
                *(float *)s->value = x;
                break;
            }
            case ARG_FLAG:
                break;
        }
    }
    if (npos) *npos = np;
    return 0;
}

int cli_fail(const char *cmd) {
    fprintf(stderr, "gelan %s: %s\n", cmd, gelan_last_error());
    return 1;
}
