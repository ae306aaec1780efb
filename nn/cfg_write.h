/* Writing model YAML, the other direction of nn/yaml_cfg.h: what `gelan
 * convert` (the single-branch config) and `gelan prune` (the config with the
 * pruned widths) need to write a config derived from a built model's. Values
 * are written in flow syntax so that model_cfg_parse reads back the same
 * values: a float keeps its '.', a string is quoted when it was written quoted
 * or would not survive unquoted. */
#ifndef GELAN_NN_CFG_WRITE_H
#define GELAN_NN_CFG_WRITE_H

#include <stdbool.h>

#include "nn/model.h"
#include "nn/textbuf.h"

/* One value: None, an integer, a float, a string or a list. */
void cfg_write_value(TextBuf *t, const CfgValue *v);
/* A string, quoted ('...', a ' doubled) when quote is set or when plain YAML
 * would read it otherwise. */
void cfg_write_str(TextBuf *t, const char *s, bool quote);
/* The config of m (its YAML text parsed), checked to hold one row per layer.
 * who prefixes the errors ("convert", "prune"). NULL + gelan_error. */
ModelCfg *cfg_of_model(const Model *m, const char *who);
/* The top-level keys of a config derived from m's: nc (m's, which may differ
 * from the YAML's), then depth_multiple, width_multiple, activation, anchors
 * and ch as cfg has them (the last three only when set). */
void cfg_write_header(TextBuf *t, const Model *m, const ModelCfg *cfg);

#endif
