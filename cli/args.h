/* Tiny command-line helper shared by every subcommand.
 *
 * Options are declared in a table; args_parse fills the values, and on an
 * unknown option, a missing value or a bad number prints a one-line reason
 * plus the usage to stderr and returns 2 (the exit code for bad usage).
 * `--help` prints the usage to stdout and returns 1 (the caller exits 0). */
#ifndef GELAN_CLI_ARGS_H
#define GELAN_CLI_ARGS_H

#include <stdbool.h>

typedef enum { ARG_STR, ARG_INT, ARG_FLOAT, ARG_FLAG } ArgKind;

typedef struct {
    const char *name; /* "--weights" */
    ArgKind kind;
    void *value;      /* const char **, int *, float *, bool * */
    const char *help; /* one line; "VALUE: what" style */
} ArgSpec;

/* usage: the text printed after "usage: " (first line), then each option's help.
 * positional: receives the non-option arguments (up to max_pos), may be NULL. */
int args_parse(int argc, char **argv, const char *usage, const ArgSpec *specs, int nspecs, const char **positional,
               int max_pos, int *npos);
void args_usage(const char *usage, const ArgSpec *specs, int nspecs, bool to_stdout);

/* Reports a library failure: "gelan CMD: message" on stderr; returns 1. */
int cli_fail(const char *cmd);

#endif
