/* Reading an official YOLOv9 model YAML (libyaml) into plain C values.
 *
 * The official parse_model gets a Python dict from yaml.safe_load and then
 * eval()s module names and string arguments. Here the YAML is read into a
 * small value tree (int, float, string, None, list) and kept close to the
 * text, so that the builder (nn/model.c) can apply the parse_model rules and
 * name the file and line in its errors. Only what model YAMLs use is read:
 * nc, depth_multiple, width_multiple, activation, anchors, ch, backbone, head. */
#ifndef GELAN_NN_YAML_CFG_H
#define GELAN_NN_YAML_CFG_H

#include <stdbool.h>

typedef enum { CV_NONE, CV_INT, CV_FLOAT, CV_STR, CV_LIST } CfgKind;

typedef struct CfgValue {
    CfgKind kind;
    long ival;
    double fval;
    char *str;              /* CV_STR: the text, without quotes */
    bool quoted;            /* CV_STR written in quotes ('nearest') */
    struct CfgValue *items; /* CV_LIST */
    int n;
    int line; /* 1-based line of the value in the file */
} CfgValue;

/* One row [from, number, module, args]. */
typedef struct {
    CfgValue from; /* CV_INT or CV_LIST of CV_INT */
    long number;
    char *module;  /* as written, e.g. "nn.Upsample" */
    CfgValue args; /* CV_LIST */
    int line;
} CfgRow;

typedef struct {
    char *file; /* name used in messages */
    int nc;
    double depth_multiple, width_multiple;
    char *activation; /* NULL when absent: SiLU */
    int na;           /* anchors per level (the `anchors` entry), 0 when absent */
    int ch;           /* input channels (`ch`, default 3) */
    CfgRow *rows;     /* backbone rows followed by head rows */
    int nrows;
    int nbackbone;
    char *text; /* the YAML text itself (for checkpoints' `cfg`) */
} ModelCfg;

/* Parses YAML text; file_name is only used in messages. NULL with gelan_error
 * ("FILE:LINE: ...") on a syntax error or a missing/ill-typed entry. */
ModelCfg *model_cfg_parse(const char *text, const char *file_name);
/* Reads and parses a file. */
ModelCfg *model_cfg_load(const char *path);
void model_cfg_free(ModelCfg *cfg);

/* Python-like text of a value ("[None, 2, 'nearest']"), into buf. */
const char *cfg_value_str(const CfgValue *v, char *buf, int len);

/* Reads a whole file into a NUL-terminated heap string (NULL + gelan_error). */
char *read_text_file(const char *path);

#endif
