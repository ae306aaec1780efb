/* The subcommands of build/gelan. Each takes the arguments after its name
 * and returns the process exit code (0 ok, 1 failure, 2 bad usage). */
#ifndef GELAN_CLI_COMMANDS_H
#define GELAN_CLI_COMMANDS_H

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Command;

/* Defined in cli/main.c: the table. Each cmd_*.c defines one run function. */
int cmd_info(int argc, char **argv);
int cmd_trace(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_val(int argc, char **argv);
int cmd_detect(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_graph(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_importance(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
