/* The model builder (the official parse_model rules) and the forward pass. */
#include "nn/model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "tensor/error.h"

static char *dupstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---- the module table --------------------------------------------------------
 * scaled: parse_model's width-scaled set ({Conv, AConv, ADown, ELAN1,
 * RepNCSPELAN4, SPPELAN} at the golden commit): c1 = ch[from], c2 =
 * ceil(args[0] * width_multiple / 8) * 8, args = [c1, c2, *args[1:]].
 * ShuffleNetV2 (ShuffleNetV2(inp, oup, stride) in the seed) is treated the same
 * way, since it has the same (c1, c2, ...) signature. */
typedef struct {
    const char *yaml;
    BlockKind kind;
    const char *type;
    bool scaled;
    int min_args, max_args;
} ModuleSpec;

static const ModuleSpec MODULES[] = {
    {"Silence", BLOCK_SILENCE, "models.common.Silence", false, 0, 0},
    {"Conv", BLOCK_CONV, "models.common.Conv", true, 1, 7},
    {"AConv", BLOCK_ACONV, "models.common.AConv", true, 1, 1},
    {"ADown", BLOCK_ADOWN, "models.common.ADown", true, 1, 1},
    {"ELAN1", BLOCK_ELAN1, "models.common.ELAN1", true, 3, 3},
    {"RepNCSPELAN4", BLOCK_REPNCSPELAN4, "models.common.RepNCSPELAN4", true, 3, 4},
    {"SPPELAN", BLOCK_SPPELAN, "models.common.SPPELAN", true, 2, 2},
    {"ShuffleNetV2", BLOCK_SHUFFLENETV2, "models.common.ShuffleNetV2", true, 2, 2},
    {"CBLinear", BLOCK_CBLINEAR, "models.common.CBLinear", false, 1, 5},
    {"CBFuse", BLOCK_CBFUSE, "models.common.CBFuse", false, 1, 1},
    {"Concat", BLOCK_CONCAT, "models.common.Concat", false, 0, 1},
    {"nn.Upsample", BLOCK_UPSAMPLE, "torch.nn.modules.upsampling.Upsample", false, 0, 3},
    {"nn.MaxPool2d", BLOCK_MAXPOOL, "torch.nn.modules.pooling.MaxPool2d", false, 1, 3},
    {"SP", BLOCK_MAXPOOL, "models.common.SP", false, 0, 2},
    {"MP", BLOCK_MAXPOOL, "models.common.MP", false, 0, 1},
    {"DDetect", BLOCK_DETECT, "models.yolo.DDetect", false, 1, 1},
    {"DualDDetect", BLOCK_DETECT, "models.yolo.DualDDetect", false, 1, 1},
    {"TripleDDetect", BLOCK_DETECT, "models.yolo.TripleDDetect", false, 1, 1},
};

static const ModuleSpec *find_module(const char *name) {
    for (size_t i = 0; i < sizeof MODULES / sizeof MODULES[0]; i++)
        if (!strcmp(MODULES[i].yaml, name)) return &MODULES[i];
    return NULL;
}

/* "nn.SiLU()", "nn.ReLU()", "nn.LeakyReLU(0.1)", "nn.LeakyReLU(negative_slope=0.1)", "nn.Identity()" */
static int parse_activation(const char *s, Act *act) {
    act->kind = ACT_SILU;
    act->slope = 0.01f;
    if (!s) return 0;
    const char *open = strchr(s, '(');
    size_t len = open ? (size_t)(open - s) : strlen(s);
    const char *args = open ? open + 1 : "";
    char inner[64] = "";
    if (open) {
        const char *close = strrchr(s, ')');
        if (!close || close < open) return gelan_error("activation '%s': missing ')'", s);
        size_t n = (size_t)(close - args) < sizeof inner - 1 ? (size_t)(close - args) : sizeof inner - 1;
        memcpy(inner, args, n);
        inner[n] = '\0';
    }
#define IS(name) (len == strlen(name) && !strncmp(s, name, len))
    if (IS("nn.SiLU")) {
        act->kind = ACT_SILU;
    } else if (IS("nn.ReLU")) {
        act->kind = ACT_RELU;
    } else if (IS("nn.Identity")) {
        act->kind = ACT_NONE;
    } else if (IS("nn.LeakyReLU")) {
        act->kind = ACT_LEAKY_RELU;
        const char *v = inner;
        const char *eq = strchr(inner, '=');
        if (eq) v = eq + 1;
        char *end;
        double slope = strtod(v, &end);
        if (end != v) act->slope = (float)slope;
    } else {
        return gelan_error("activation '%s' is not supported (nn.SiLU(), nn.ReLU(), nn.LeakyReLU(s), nn.Identity())",
                           s);
    }
#undef IS
    return 0;
}

/* ---- Python-style argument text for the summary table ----------------------- */
typedef struct {
    char buf[512];
    int len;
} StrBuf;

static void sb_add(StrBuf *b, const char *fmt, ...) GELAN_PRINTF(2, 3);
static void sb_add(StrBuf *b, const char *fmt, ...) {
    if (b->len >= (int)sizeof b->buf - 1) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->buf + b->len, sizeof b->buf - b->len, fmt, ap);
    va_end(ap);
    if (n > 0) b->len += n;
    if (b->len > (int)sizeof b->buf - 1) b->len = (int)sizeof b->buf - 1;
}

static void sb_value(StrBuf *b, const CfgValue *v) {
    switch (v->kind) {
        case CV_NONE:
            sb_add(b, "None");
            break;
        case CV_INT:
            sb_add(b, "%ld", v->ival);
            break;
        case CV_FLOAT:
            if (v->fval == floor(v->fval) && fabs(v->fval) < 1e15)
                sb_add(b, "%.1f", v->fval);
            else
                sb_add(b, "%.10g", v->fval);
            break;
        case CV_STR:
            sb_add(b, "'%s'", v->str);
            break;
        case CV_LIST:
            sb_add(b, "[");
            for (int i = 0; i < v->n; i++) {
                if (i) sb_add(b, ", ");
                sb_value(b, &v->items[i]);
            }
            sb_add(b, "]");
            break;
    }
}

static void sb_ints(StrBuf *b, const int *v, int n) {
    sb_add(b, "[");
    for (int i = 0; i < n; i++) sb_add(b, i ? ", %d" : "%d", v[i]);
    sb_add(b, "]");
}

/* ---- building ------------------------------------------------------------------ */

typedef struct {
    Model *m;
    const ModelCfg *cfg;
    int no; /* parse_model's `no` = na*(nc+5): a c2 equal to it is not scaled */
} Builder;

/* Arguments are small integers (channels, kernel sizes, ...); anything beyond
 * ARG_MAX is a config error rather than an int overflow later on. */
#define ARG_MAX (1L << 24)

static int arg_int(const CfgValue *args, int i, int dflt, const char *what, long *out) {
    if (i >= args->n || args->items[i].kind == CV_NONE) {
        *out = dflt;
        return 0;
    }
    const CfgValue *v = &args->items[i];
    char tmp[128];
    double x = v->kind == CV_INT ? (double)v->ival : v->kind == CV_FLOAT ? v->fval : NAN;
    if (!(x == floor(x)))
        return gelan_error("argument %d (%s) must be an integer, got %s", i, what, cfg_value_str(v, tmp, sizeof tmp));
    if (fabs(x) > (double)ARG_MAX) return gelan_error("argument %d (%s) = %.0f is out of range", i, what, x);
    *out = (long)x;
    return 0;
}

/* parse_model's eval of string arguments: `nc` becomes the number of classes,
 * other names (e.g. 'nearest') stay strings. */
static void eval_args(CfgValue *args, int nc) {
    for (int i = 0; i < args->n; i++) {
        CfgValue *v = &args->items[i];
        if (v->kind == CV_STR && !strcmp(v->str, "nc")) {
            free(v->str);
            v->str = NULL;
            v->kind = CV_INT;
            v->ival = nc;
        }
    }
}

static int make_divisible8(double x) { return (int)ceil(x / 8.0) * 8; }

/* Builds one block instance of a single-input module. */
static int build_block(Builder *bd, const ModuleSpec *spec, Block *b, const char *prefix, int c1, int c2,
                       const CfgValue *args) {
    Model *m = bd->m;
    long k = 0, s = 0, p = 0, g = 0, d = 0, v3 = 0, v4 = 0;
    b->kind = spec->kind;
    switch (spec->kind) {
        case BLOCK_CONV: {
            /* Conv(c1, c2, k=1, s=1, p=None, g=1, d=1, act=True) */
            if (arg_int(args, 1, 1, "k", &k) || arg_int(args, 2, 1, "s", &s) || arg_int(args, 3, -1, "p", &p) ||
                arg_int(args, 4, 1, "g", &g) || arg_int(args, 5, 1, "d", &d))
                return -1;
            if (d != 1) return gelan_error("dilation %ld is not supported", d);
            Act act = m->act;
            if (args->n > 6) {
                const CfgValue *a = &args->items[6];
                if (a->kind == CV_INT)
                    act.kind = a->ival ? m->act.kind : ACT_NONE;
                else if (a->kind == CV_STR) {
                    if (parse_activation(a->str, &act)) return -1;
                } else
                    return gelan_error("argument 6 (act) must be True, False or an activation");
            }
            return (b->u.conv = conv_new(m, prefix, c1, c2, (int)k, (int)s, (int)p, (int)g, act)) ? 0 : -1;
        }
        case BLOCK_ACONV:
            return aconv_build(&b->u.aconv, m, prefix, c1, c2, m->act);
        case BLOCK_ADOWN:
            return adown_build(&b->u.adown, m, prefix, c1, c2, m->act);
        case BLOCK_ELAN1:
            if (arg_int(args, 1, 0, "c3", &v3) || arg_int(args, 2, 0, "c4", &v4)) return -1;
            return elan1_build(&b->u.elan1, m, prefix, c1, c2, (int)v3, (int)v4, m->act);
        case BLOCK_REPNCSPELAN4: {
            long n = 0;
            if (arg_int(args, 1, 0, "c3", &v3) || arg_int(args, 2, 0, "c4", &v4) || arg_int(args, 3, 1, "c5", &n))
                return -1;
            return elan4_build(&b->u.elan4, m, prefix, c1, c2, (int)v3, (int)v4, (int)n, m->act);
        }
        case BLOCK_SPPELAN:
            if (arg_int(args, 1, 0, "c3", &v3)) return -1;
            return sppelan_build(&b->u.sppelan, m, prefix, c1, c2, (int)v3, m->act);
        case BLOCK_SHUFFLENETV2:
            if (arg_int(args, 1, 1, "stride", &s)) return -1;
            return shufflenet_build(&b->u.shuffle, m, prefix, c1, c2, (int)s);
        case BLOCK_UPSAMPLE: {
            /* nn.Upsample(size=None, scale_factor=None, mode='nearest') */
            if (args->n > 0 && args->items[0].kind != CV_NONE)
                return gelan_error("nn.Upsample with a fixed size is not supported (use [None, scale, 'nearest'])");
            if (args->n > 2 && (args->items[2].kind != CV_STR || strcmp(args->items[2].str, "nearest")))
                return gelan_error("nn.Upsample: only mode 'nearest' is supported");
            if (arg_int(args, 1, 0, "scale_factor", &s)) return -1;
            if (s < 1) return gelan_error("nn.Upsample needs an integer scale_factor >= 1");
            b->u.upsample.scale = (int)s;
            return 0;
        }
        case BLOCK_MAXPOOL: {
            MaxPool *mp = &b->u.pool;
            if (!strcmp(spec->yaml, "SP")) { /* SP(k=3, s=1): padding k//2 */
                if (arg_int(args, 0, 3, "k", &k) || arg_int(args, 1, 1, "s", &s)) return -1;
                p = k / 2;
                mp->sp_wrapper = true;
            } else if (!strcmp(spec->yaml, "MP")) { /* MP(k=2): stride k */
                if (arg_int(args, 0, 2, "k", &k)) return -1;
                s = k, p = 0;
                mp->sp_wrapper = true;
            } else { /* nn.MaxPool2d(kernel_size, stride=None -> kernel_size, padding=0) */
                if (arg_int(args, 0, 0, "kernel_size", &k) || arg_int(args, 1, (int)k, "stride", &s) ||
                    arg_int(args, 2, 0, "padding", &p))
                    return -1;
            }
            if (k < 1 || s < 1 || p < 0 || 2 * p > k)
                return gelan_error("bad max pool (kernel %ld, stride %ld, padding %ld)", k, s, p);
            mp->k = (int)k, mp->s = (int)s, mp->p = (int)p;
            return 0;
        }
        case BLOCK_SILENCE:
            return 0;
        default:
            break;
    }
    return gelan_error("internal: not a single-input module");
}

/* ---- pruned widths ------------------------------------------------------------
 * The [path, channels] pairs that end a row's arguments (blocks.h). They are
 * detached from the arguments before the module reads them and consulted by
 * the unit constructors through model_width_override while that row is built
 * (thread-local: builds in different threads do not see each other's rows). */
#define MAX_WIDTHS 256

typedef struct {
    const CfgValue *list; /* the pairs */
    char prefix[32];      /* "model.N" */
    bool used[MAX_WIDTHS];
} RowWidths;

static _Thread_local RowWidths *row_widths;

static const char *width_key(const CfgValue *k, char *buf, size_t len) {
    if (k->kind == CV_INT) snprintf(buf, len, "%ld", k->ival);
    return k->kind == CV_INT ? buf : k->str;
}

int model_width_override(const char *prefix, int dflt) {
    RowWidths *w = row_widths;
    if (!w) return dflt;
    size_t lp = strlen(w->prefix);
    if (strncmp(prefix, w->prefix, lp) || (prefix[lp] && prefix[lp] != '.')) return dflt;
    const char *rel = prefix[lp] ? prefix + lp + 1 : ".";
    char buf[32];
    for (int i = 0; i < w->list->n; i++) {
        const CfgValue *pair = &w->list->items[i];
        if (strcmp(width_key(&pair->items[0], buf, sizeof buf), rel)) continue;
        w->used[i] = true;
        return (int)pair->items[1].ival;
    }
    return dflt;
}

/* A list of [path, int] pairs (no official argument looks like that). */
bool model_is_width_list(const CfgValue *v) {
    if (v->kind != CV_LIST || v->n < 1) return false;
    for (int i = 0; i < v->n; i++) {
        const CfgValue *p = &v->items[i];
        if (p->kind != CV_LIST || p->n != 2 || (p->items[0].kind != CV_STR && p->items[0].kind != CV_INT) ||
            p->items[1].kind != CV_INT)
            return false;
    }
    return true;
}

static int check_widths(const CfgValue *v) {
    char a[32], b[32];
    if (v->n > MAX_WIDTHS) return gelan_error("more than %d width overrides", MAX_WIDTHS);
    for (int i = 0; i < v->n; i++) {
        const CfgValue *p = &v->items[i];
        if (p->items[1].ival < 1 || p->items[1].ival > ARG_MAX)
            return gelan_error("width override '%s': %ld channels is out of range",
                               width_key(&p->items[0], a, sizeof a), p->items[1].ival);
        for (int j = 0; j < i; j++)
            if (!strcmp(width_key(&p->items[0], a, sizeof a), width_key(&v->items[j].items[0], b, sizeof b)))
                return gelan_error("width override '%s' is given twice", a);
    }
    return 0;
}

/* Output channels of a built block whose input has c_in channels. */
static int block_out_channels(const Block *b, int c_in) {
    switch (b->kind) {
        case BLOCK_CONV:
            return b->u.conv->c2;
        case BLOCK_ACONV:
            return b->u.aconv.cv1->c2;
        case BLOCK_ADOWN:
            return b->u.adown.cv1->c2 + b->u.adown.cv2->c2;
        case BLOCK_ELAN1:
            return b->u.elan1.cv4->c2;
        case BLOCK_REPNCSPELAN4:
            return b->u.elan4.cv4->c2;
        case BLOCK_SPPELAN:
            return b->u.sppelan.cv5->c2;
        case BLOCK_SHUFFLENETV2:
            return b->u.shuffle.b1_pw->c2 + b->u.shuffle.b2_pw2->c2;
        default:
            return c_in; /* Silence, pooling, upsampling */
    }
}

static int src_channels(Builder *bd, const Layer *L, int k, int *c) {
    int s = L->src[k];
    if (s < 0) {
        *c = bd->m->ch;
        return 0;
    }
    const Layer *S = &bd->m->layers[s];
    if (S->nouts > 1)
        return gelan_error("layer %d (%s) returns %d tensors; only CBFuse can take its output", s, S->module, S->nouts);
    if (S->kind == BLOCK_DETECT) return gelan_error("layer %d is a detect head and has no feature output", s);
    *c = S->c_out;
    return 0;
}

static int build_layer(Builder *bd, int i, CfgRow *row) {
    Model *m = bd->m;
    const ModelCfg *cfg = bd->cfg;
    Layer *L = &m->layers[i];
    L->index = i;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "model.%d", i);

    const ModuleSpec *spec = find_module(row->module);
    if (!spec) {
        return gelan_error(
            "unknown module '%s' (known: Silence, Conv, AConv, ADown, ELAN1, RepNCSPELAN4, SPPELAN, "
            "ShuffleNetV2, CBLinear, CBFuse, Concat, nn.Upsample, nn.MaxPool2d, SP, MP, DDetect, "
            "DualDDetect, TripleDDetect)",
            row->module);
    }
    L->kind = spec->kind;
    L->module = dupstr(row->module);
    L->type = dupstr(spec->type);

    /* from: an int or a list; negative = relative to this layer; layer 0's -1 is the image */
    L->nfrom = row->from.kind == CV_LIST ? row->from.n : 1;
    L->from_list = row->from.kind == CV_LIST;
    L->from = calloc((size_t)L->nfrom, sizeof *L->from);
    L->src = calloc((size_t)L->nfrom, sizeof *L->src);
    if (!L->module || !L->type || !L->from || !L->src) return gelan_error("model: out of memory");
    for (int k = 0; k < L->nfrom; k++) {
        long f = row->from.kind == CV_LIST ? row->from.items[k].ival : row->from.ival;
        L->from[k] = (int)f;
        if (i == 0) {
            if (f != -1) return gelan_error("layer 0 can only take the image (-1), not %ld", f);
            L->src[k] = -1;
        } else {
            if (f < -i || f >= i)
                return gelan_error("'from' index %ld is out of range: layer %d can take layers %d..%d (or %d..-1)", f,
                                   i, 0, i - 1, -i);
            L->src[k] = (int)(f < 0 ? i + f : f);
        }
    }

    /* n = max(round(n * depth_multiple), 1) if n > 1 (Python's round: half to even) */
    long n = row->number;
    if (n < 1 || n > 1000) return gelan_error("the number of repeats must be 1..1000, got %ld", n);
    if (n > 1) n = (long)fmax(nearbyint((double)n * cfg->depth_multiple), 1.0);
    if (n > 1000) return gelan_error("%ld repeats after depth_multiple (at most 1000)", n);
    L->n = (int)n;

    CfgValue *args = &row->args;
    eval_args(args, m->nc);
    if (args->n < spec->min_args || args->n > spec->max_args) {
        if (spec->min_args == spec->max_args)
            return gelan_error("takes %d argument%s, got %d", spec->min_args, spec->min_args == 1 ? "" : "s", args->n);
        return gelan_error("takes %d to %d arguments, got %d", spec->min_args, spec->max_args, args->n);
    }
    bool single_in = spec->kind != BLOCK_CONCAT && spec->kind != BLOCK_CBFUSE && spec->kind != BLOCK_DETECT;
    if (single_in && L->nfrom != 1) return gelan_error("takes one input, 'from' lists %d", L->nfrom);
    if (L->n > 1 && !single_in) return gelan_error("cannot be repeated (n = %d)", L->n);
    if (L->n > 1 && spec->kind == BLOCK_CBLINEAR) return gelan_error("cannot be repeated (n = %d)", L->n);

    StrBuf a = {.len = 0};
    L->nouts = 1;
    if (single_in && spec->kind != BLOCK_CBLINEAR) {
        int c1 = 0, c2 = 0;
        if (src_channels(bd, L, 0, &c1)) return -1;
        if (spec->scaled) {
            long raw = 0;
            if (arg_int(args, 0, 0, "c2", &raw)) return -1;
            c2 = raw == bd->no ? (int)raw : make_divisible8((double)raw * cfg->width_multiple);
            if (c2 <= 0) return gelan_error("output channels %ld scale to %d", raw, c2);
        } else {
            c2 = c1;
            sb_value(&a, args);
        }
        L->blocks = calloc((size_t)L->n, sizeof *L->blocks);
        if (!L->blocks) return gelan_error("model: out of memory");
        int c_in = c1; /* what block j actually receives (differs from c1/c2 only in a pruned model) */
        for (int j = 0; j < L->n; j++) {
            char bprefix[96];
            if (L->n > 1)
                snprintf(bprefix, sizeof bprefix, "%s.%d", prefix, j);
            else
                snprintf(bprefix, sizeof bprefix, "%s", prefix);
            /* every repeat gets the same arguments (nn.Sequential of n copies), so from
             * the second on the input has c2 channels where c1 were built for */
            if (j > 0 && spec->scaled && c1 != c2)
                return gelan_error("repeat %d is built for %d input channels (c1) but repeat %d gives it %d (c2)", j,
                                   c1, j - 1, c2);
            if (build_block(bd, spec, &L->blocks[j], bprefix, c_in, c2, args)) {
                if (L->n > 1) gelan_error_prefix("repeat %d", j);
                return -1;
            }
            c_in = block_out_channels(&L->blocks[j], c_in);
        }
        L->c_out = c_in;
        if (spec->scaled) { /* parse_model's [c1, c2, *args[1:]], c2 as built */
            sb_add(&a, "[%d, %d", c1, L->c_out);
            for (int k = 1; k < args->n; k++) {
                sb_add(&a, ", ");
                sb_value(&a, &args->items[k]);
            }
            sb_add(&a, "]");
        }
    } else if (spec->kind == BLOCK_CBLINEAR) {
        int c1 = 0;
        if (src_channels(bd, L, 0, &c1)) return -1;
        const CfgValue *lst = &args->items[0];
        if (lst->kind != CV_LIST || lst->n < 1 || lst->n > CBLINEAR_MAX_OUTS)
            return gelan_error("argument 0 must be a list of 1..%d output channel counts", CBLINEAR_MAX_OUTS);
        int c2s[CBLINEAR_MAX_OUTS];
        for (int k = 0; k < lst->n; k++) {
            long c = 0;
            if (arg_int(lst, k, 0, "output size", &c)) return -1;
            c2s[k] = (int)c; /* not width-scaled (the official rule) */
        }
        long kk = 0, ss = 0, pp = 0, gg = 0;
        if (arg_int(args, 1, 1, "k", &kk) || arg_int(args, 2, 1, "s", &ss) || arg_int(args, 3, -1, "p", &pp) ||
            arg_int(args, 4, 1, "g", &gg))
            return -1;
        L->blocks = calloc(1, sizeof *L->blocks);
        if (!L->blocks) return gelan_error("model: out of memory");
        L->blocks[0].kind = BLOCK_CBLINEAR;
        if (cblinear_build(&L->blocks[0].u.cblinear, m, prefix, c1, c2s, lst->n, (int)kk, (int)ss, (int)pp, (int)gg))
            return -1;
        L->nouts = lst->n;
        L->c_out = 0;
        for (int k = 0; k < lst->n; k++) L->c_out += L->c_outs[k] = c2s[k];
        sb_add(&a, "[%d, ", c1);
        sb_ints(&a, c2s, lst->n);
        for (int k = 1; k < args->n; k++) {
            sb_add(&a, ", ");
            sb_value(&a, &args->items[k]);
        }
        sb_add(&a, "]");
    } else if (spec->kind == BLOCK_CONCAT) {
        long dim = 0;
        if (arg_int(args, 0, 1, "dimension", &dim)) return -1;
        if (dim != 1) return gelan_error("only dimension 1 (channels) is supported, got %ld", dim);
        L->c_out = 0;
        for (int k = 0; k < L->nfrom; k++) {
            int c = 0;
            if (src_channels(bd, L, k, &c)) return -1;
            L->c_out += c;
        }
        L->blocks = calloc(1, sizeof *L->blocks);
        if (!L->blocks) return gelan_error("model: out of memory");
        L->blocks[0].kind = BLOCK_CONCAT;
        sb_value(&a, args);
    } else if (spec->kind == BLOCK_CBFUSE) {
        const CfgValue *lst = &args->items[0];
        if (lst->kind != CV_LIST || lst->n != L->nfrom - 1 || lst->n > CBLINEAR_MAX_OUTS)
            return gelan_error("argument 0 must list one piece index per CBLinear input (%d), got %s", L->nfrom - 1,
                               lst->kind == CV_LIST ? "a list of another length" : "no list");
        int clast = 0;
        if (src_channels(bd, L, L->nfrom - 1, &clast)) return -1;
        L->blocks = calloc(1, sizeof *L->blocks);
        if (!L->blocks) return gelan_error("model: out of memory");
        L->blocks[0].kind = BLOCK_CBFUSE;
        CBFuse *cf = &L->blocks[0].u.cbfuse;
        cf->n = lst->n;
        for (int k = 0; k < lst->n; k++) {
            int s = L->src[k];
            const Layer *S = s >= 0 ? &m->layers[s] : NULL;
            if (!S || S->kind != BLOCK_CBLINEAR)
                return gelan_error("input %d (from %d) must be a CBLinear layer", k, L->from[k]);
            if (lst->items[k].kind != CV_INT || lst->items[k].ival < 0 || lst->items[k].ival >= S->nouts)
                return gelan_error("piece index %d for layer %d is out of range (it has %d pieces)", k, s, S->nouts);
            cf->idx[k] = (int)lst->items[k].ival;
            int cp = S->c_outs[cf->idx[k]];
            if (cp != clast)
                return gelan_error(
                    "piece %d of layer %d (CBLinear) has %d channels, but the last input (layer %d) has "
                    "%d: they are summed, so they must agree",
                    cf->idx[k], s, cp, L->src[L->nfrom - 1], clast);
        }
        L->c_out = clast;
        sb_value(&a, args);
    } else { /* detect heads: args = [nc, [ch[x] for x in f]] */
        long nc = 0;
        if (arg_int(args, 0, 0, "nc", &nc)) return -1;
        if (nc < 1) return gelan_error("nc must be >= 1, got %ld", nc);
        if (i != cfg->nrows - 1) return gelan_error("a detect head must be the last layer");
        int nheads = !strcmp(spec->yaml, "DDetect") ? 1 : !strcmp(spec->yaml, "DualDDetect") ? 2 : 3;
        int ch[DETECT_MAX_HEADS * DETECT_MAX_LEVELS];
        if (L->nfrom > DETECT_MAX_HEADS * DETECT_MAX_LEVELS || L->nfrom % nheads)
            return gelan_error("%s takes a multiple of %d inputs (at most %d), 'from' lists %d", spec->yaml, nheads,
                               nheads * DETECT_MAX_LEVELS, L->nfrom);
        for (int k = 0; k < L->nfrom; k++)
            if (src_channels(bd, L, k, &ch[k])) return -1;
        L->blocks = calloc(1, sizeof *L->blocks);
        if (!L->blocks) return gelan_error("model: out of memory");
        L->blocks[0].kind = BLOCK_DETECT;
        if (!(m->detect = L->blocks[0].u.detect = detect_build(m, prefix, nheads, (int)nc, ch, L->nfrom, m->act)))
            return -1;
        L->c_out = 0;
        sb_add(&a, "[%ld, ", nc);
        sb_ints(&a, ch, L->nfrom);
        sb_add(&a, "]");
    }
    L->args = dupstr(a.buf);
    return L->args ? 0 : gelan_error("model: out of memory");
}

/* build_layer with the row's width overrides (if any) detached from its
 * arguments and in force; an override that names no conv module is an error. */
static int build_row(Builder *bd, int i, CfgRow *row) {
    CfgValue *args = &row->args;
    if (args->n == 0 || !model_is_width_list(&args->items[args->n - 1])) return build_layer(bd, i, row);
    RowWidths *w = calloc(1, sizeof *w);
    if (!w) return gelan_error("model: out of memory");
    w->list = &args->items[args->n - 1];
    snprintf(w->prefix, sizeof w->prefix, "model.%d", i);
    int rc = check_widths(w->list);
    args->n--; /* hidden from the module, restored below (the list still owns it) */
    row_widths = w;
    if (!rc) rc = build_layer(bd, i, row);
    row_widths = NULL;
    args->n++;
    char buf[32];
    for (int k = 0; !rc && k < w->list->n; k++)
        if (!w->used[k])
            rc = gelan_error(
                "width override '%s' names no conv module of this layer (paths are relative to %s, "
                "e.g. 'cv1', 'cv2.0.m.0.cv1'; '.' for a Conv row itself)",
                width_key(&w->list->items[k].items[0], buf, sizeof buf), w->prefix);
    free(w);
    return rc;
}

static void free_names(Model *m) {
    for (int i = 0; i < m->nparams; i++) free((char *)m->params[i].name);
    for (int i = 0; i < m->nbuffers; i++) free((char *)m->buffers[i].name);
    free(m->params);
    free(m->buffers);
    m->params = NULL;
    m->buffers = NULL;
    m->nparams = m->nbuffers = 0;
}

static char *join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (s) {
        memcpy(s, a, la);
        s[la] = '.';
        memcpy(s + la + 1, b, lb + 1);
    }
    return s;
}

/* The name tables, walking the units in construction (= state_dict) order. */
int model_rebuild_names(Model *m) {
    free_names(m);
    m->params = calloc((size_t)m->nunits * 4 + 1, sizeof *m->params);
    m->buffers = calloc((size_t)m->nunits * 2 + 1, sizeof *m->buffers);
    if (!m->params || !m->buffers) return gelan_error("model: out of memory");
#define ADD_P(prefix, leaf, tensor, k)                                                    \
    do {                                                                                  \
        NamedParam *np = &m->params[m->nparams];                                          \
        if (!(np->name = join(prefix, leaf))) return gelan_error("model: out of memory"); \
        np->t = tensor, np->kind = k;                                                     \
        m->nparams++;                                                                     \
    } while (0)
#define ADD_B(prefix, leaf, tensor)                                                       \
    do {                                                                                  \
        NamedBuffer *nb = &m->buffers[m->nbuffers];                                       \
        if (!(nb->name = join(prefix, leaf))) return gelan_error("model: out of memory"); \
        nb->t = tensor;                                                                   \
        m->nbuffers++;                                                                    \
    } while (0)
    for (int i = 0; i < m->nunits; i++) {
        ConvUnit *u = m->units[i];
        if (u->removed) continue;
        ADD_P(u->name, "weight", u->weight, NN_PARAM_WEIGHT);
        if (u->bias) ADD_P(u->name, "bias", u->bias, NN_PARAM_BIAS);
        if (u->bn_weight) {
            ADD_P(u->bn_name, "weight", u->bn_weight, NN_PARAM_BN_WEIGHT);
            ADD_P(u->bn_name, "bias", u->bn_bias, NN_PARAM_BIAS);
            ADD_B(u->bn_name, "running_mean", u->bn_mean);
            ADD_B(u->bn_name, "running_var", u->bn_var);
        }
    }
#undef ADD_P
#undef ADD_B
    return 0;
}

static char *stem(const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    char *s = dupstr(b);
    if (!s) return NULL;
    char *dot = strrchr(s, '.');
    if (dot && dot != s) *dot = '\0';
    return s;
}

void model_free(Model *m) {
    if (!m) return;
    for (int i = 0; i < m->nlayers; i++) {
        Layer *L = &m->layers[i];
        if (L->blocks)
            for (int j = 0; j < L->n; j++) block_free(&L->blocks[j]);
        free(L->blocks);
        free(L->module);
        free(L->type);
        free(L->from);
        free(L->src);
        free(L->args);
    }
    free(m->layers);
    free_names(m);
    model_units_free(m);
    free(m->file);
    free(m->name);
    free(m->yaml);
    free(m);
}

void block_free(Block *b) {
    if (b->kind == BLOCK_REPNCSPELAN4) {
        free(b->u.elan4.cv2_csp.m);
        free(b->u.elan4.cv3_csp.m);
    } else if (b->kind == BLOCK_DETECT) {
        detect_free(b->u.detect);
    }
    memset(b, 0, sizeof *b);
}

Model *model_build(const char *yaml_text, const char *file_name, const ModelOptions *opt) {
    ModelOptions defaults = {0, 0};
    if (!opt) opt = &defaults;
    if (!file_name) file_name = "<model yaml>";
    ModelCfg *cfg = model_cfg_parse(yaml_text, file_name);
    if (!cfg) return NULL;
    Model *m = calloc(1, sizeof *m);
    if (!m) {
        model_cfg_free(cfg);
        gelan_error("model: out of memory");
        return NULL;
    }
    m->file = dupstr(file_name);
    m->name = stem(file_name);
    m->yaml = dupstr(yaml_text);
    m->nc = opt->nc > 0 ? opt->nc : cfg->nc;
    m->ch = cfg->ch;
    rng_seed(&m->rng, opt->seed);
    Builder bd = {m, cfg, cfg->na > 0 ? cfg->na * (m->nc + 5) : -1};
    int rc = 0;
    if (!m->file || !m->name || !m->yaml) rc = gelan_error("model: out of memory");
    if (!rc &&
        !(cfg->depth_multiple > 0 && cfg->depth_multiple < 100 && cfg->width_multiple > 0 && cfg->width_multiple < 100))
        rc = gelan_error("%s: depth_multiple %g and width_multiple %g must be in (0, 100)", file_name,
                         cfg->depth_multiple, cfg->width_multiple);
    if (!rc && m->nc > 100000) rc = gelan_error("%s: nc %d is out of range", file_name, m->nc);
    if (!rc && parse_activation(cfg->activation, &m->act)) rc = -1, gelan_error_prefix("%s", file_name);
    if (!rc && cfg->ch < 1) rc = gelan_error("%s: ch must be >= 1", file_name);
    if (!rc && !(m->layers = calloc((size_t)cfg->nrows, sizeof *m->layers))) rc = gelan_error("model: out of memory");
    for (int i = 0; !rc && i < cfg->nrows; i++) {
        m->nlayers = i + 1;
        if (build_row(&bd, i, &cfg->rows[i])) {
            char fbuf[128];
            gelan_error_prefix("%s:%d: layer %d (%s, from %s)", file_name, cfg->rows[i].line, i, cfg->rows[i].module,
                               cfg_value_str(&cfg->rows[i].from, fbuf, sizeof fbuf));
            rc = -1;
        }
    }
    if (!rc && !m->detect)
        rc = gelan_error("%s: the last layer must be a detect head (DDetect, DualDDetect, TripleDDetect)", file_name);
    if (!rc) {
        /* the official build probes the strides with a 256x256 forward; the shape
         * pass does the same without computing anything, and also checks that
         * concatenated maps agree in size */
        LayerShape *shapes = calloc((size_t)m->nlayers, sizeof *shapes);
        double macs = 0;
        if (!shapes)
            rc = gelan_error("model: out of memory");
        else if (model_shapes(m, 256, 256, shapes, &macs, NULL))
            rc = -1, gelan_error_prefix("%s", file_name);
        if (!rc) {
            Detect *d = m->detect;
            const Layer *L = &m->layers[m->nlayers - 1];
            for (int l = 0; l < d->nl; l++) {
                int s = L->src[l];
                int hin = s < 0 ? 256 : shapes[s].h;
                d->stride[l] = 256.0f / (float)hin;
            }
            detect_bias_init(d);
            m->head.nheads = d->nheads;
            m->head.nl = d->nl;
            m->head.nc = d->nc;
            m->head.reg_max = d->reg_max;
            m->head.no = d->no;
            for (int l = 0; l < d->nl; l++) m->head.strides[l] = d->stride[l];
            m->nc = d->nc;
        }
        free(shapes);
    }
    if (!rc) rc = model_rebuild_names(m);
    model_cfg_free(cfg);
    if (rc) {
        model_free(m);
        return NULL;
    }
    return m;
}

Model *model_build_file(const char *path, const ModelOptions *opt) {
    char *text = read_text_file(path);
    if (!text) return NULL;
    Model *m = model_build(text, path, opt);
    free(text);
    return m;
}

int model_params(const Model *m, const NamedParam **out) {
    *out = m->params;
    return m->nparams;
}

int model_buffers(const Model *m, const NamedBuffer **out) {
    *out = m->buffers;
    return m->nbuffers;
}

Tensor *model_tensor(const Model *m, const char *name) {
    for (int i = 0; i < m->nparams; i++)
        if (!strcmp(m->params[i].name, name)) return m->params[i].t;
    for (int i = 0; i < m->nbuffers; i++)
        if (!strcmp(m->buffers[i].name, name)) return m->buffers[i].t;
    return NULL;
}

size_t model_num_params(const Model *m) {
    size_t n = 0;
    for (int i = 0; i < m->nparams; i++) n += m->params[i].t->numel;
    return n;
}

const char *model_head_name(const Model *m, int head) {
    static const char *names[3][3] = {{"main"}, {"aux", "main"}, {"aux1", "aux2", "main"}};
    int nh = m->head.nheads;
    if (nh < 1 || nh > 3 || head < 0 || head >= nh) return "?";
    return names[nh - 1][head];
}

/* ---- forward ------------------------------------------------------------------- */

static Tensor *block_forward(const Block *b, Tape *t, Tensor *x, bool training) {
    switch (b->kind) {
        case BLOCK_SILENCE:
            return x;
        case BLOCK_CONV:
            return unit_forward(b->u.conv, t, x, training);
        case BLOCK_ACONV:
            return aconv_forward(&b->u.aconv, t, x, training);
        case BLOCK_ADOWN:
            return adown_forward(&b->u.adown, t, x, training);
        case BLOCK_ELAN1:
            return elan1_forward(&b->u.elan1, t, x, training);
        case BLOCK_REPNCSPELAN4:
            return elan4_forward(&b->u.elan4, t, x, training);
        case BLOCK_SPPELAN:
            return sppelan_forward(&b->u.sppelan, t, x, training);
        case BLOCK_SHUFFLENETV2:
            return shufflenet_forward(&b->u.shuffle, t, x, training);
        case BLOCK_UPSAMPLE:
            return op_upsample_nearest(t, x, tH(x) * b->u.upsample.scale, tW(x) * b->u.upsample.scale);
        case BLOCK_MAXPOOL:
            return op_maxpool2d(t, x, b->u.pool.k, b->u.pool.s, b->u.pool.p);
        default:
            gelan_error("internal: block kind %d is not single-input", (int)b->kind);
            return NULL;
    }
}

/* Input k of layer L: the image or an earlier layer's (first) output. */
static Tensor *input_of(const LayerOut *outs, Tensor *image, const Layer *L, int k) {
    int s = L->src[k];
    return s < 0 ? image : outs[s].t[0];
}

static int layer_forward(Model *m, Tape *t, Tensor *image, LayerOut *outs, int i, bool training, ModelOutput *out) {
    const Layer *L = &m->layers[i];
    LayerOut *o = &outs[i];
    o->n = L->nouts;
    o->t = tape_alloc(t, sizeof(Tensor *) * (size_t)(L->nouts > 0 ? L->nouts : 1));
    if (!o->t) return -1;
    switch (L->kind) {
        case BLOCK_CONCAT: {
            Tensor **xs = tape_alloc(t, sizeof(Tensor *) * (size_t)L->nfrom);
            if (!xs) return -1;
            for (int k = 0; k < L->nfrom; k++) xs[k] = input_of(outs, image, L, k);
            return (o->t[0] = op_concat(t, xs, L->nfrom, 1)) ? 0 : -1;
        }
        case BLOCK_CBLINEAR:
            return cblinear_forward(&L->blocks[0].u.cblinear, t, input_of(outs, image, L, 0), o->t);
        case BLOCK_CBFUSE: {
            const CBFuse *cf = &L->blocks[0].u.cbfuse;
            Tensor *pieces[CBLINEAR_MAX_OUTS];
            for (int k = 0; k < cf->n; k++) pieces[k] = outs[L->src[k]].t[cf->idx[k]];
            return (o->t[0] = cbfuse_forward(t, pieces, cf->n, input_of(outs, image, L, L->nfrom - 1))) ? 0 : -1;
        }
        case BLOCK_DETECT: {
            Tensor *xs[DETECT_MAX_HEADS * DETECT_MAX_LEVELS];
            for (int k = 0; k < L->nfrom; k++) xs[k] = input_of(outs, image, L, k);
            o->n = 0;
            const Detect *d = L->blocks[0].u.detect;
            if (detect_forward(d, t, xs, training, out->maps)) return -1;
            if (!training)
                for (int h = 0; h < d->nheads; h++)
                    if (!(out->pred[h] = detect_decode(d, h, t, out->maps[h]))) return -1;
            return 0;
        }
        default: {
            Tensor *x = input_of(outs, image, L, 0);
            for (int j = 0; j < L->n && x; j++) x = block_forward(&L->blocks[j], t, x, training);
            return (o->t[0] = x) ? 0 : -1;
        }
    }
}

int model_forward(Model *m, Tape *t, Tensor *input, bool training, ModelOutput *out) {
    memset(out, 0, sizeof *out);
    if (input->ndim != 4 || tC(input) != m->ch) {
        char buf[64];
        return gelan_error("%s: the input must be [N,%d,H,W], got %s", m->name, m->ch,
                           tensor_shape_str(input, buf, sizeof buf));
    }
    out->nlayers = m->nlayers;
    out->nheads = m->head.nheads;
    out->nl = m->head.nl;
    out->layers = tape_alloc(t, sizeof(LayerOut) * (size_t)m->nlayers);
    if (!out->layers) return -1;
    memset(out->layers, 0, sizeof(LayerOut) * (size_t)m->nlayers);
    for (int i = 0; i < m->nlayers; i++) {
        if (layer_forward(m, t, input, out->layers, i, training, out)) {
            gelan_error_prefix("%s: layer %d (%s)", m->name, i, m->layers[i].module);
            return -1;
        }
    }
    return 0;
}

int model_eval_outputs(const Model *m, const ModelOutput *o, NamedTensorFn fn, void *ctx) {
    char name[64];
    int rc;
    for (int i = 0; i < m->nlayers && i < o->nlayers; i++) {
        const Layer *L = &m->layers[i];
        const LayerOut *lo = &o->layers[i];
        if (L->kind == BLOCK_DETECT) continue;
        for (int j = 0; j < lo->n; j++) {
            if (L->kind == BLOCK_CBLINEAR) /* a tuple even with one piece */
                snprintf(name, sizeof name, "layer.%d.%d", i, j);
            else
                snprintf(name, sizeof name, "layer.%d", i);
            if ((rc = fn(name, lo->t[j], ctx))) return rc;
        }
    }
    for (int h = 0; h < o->nheads; h++) {
        const char *hn = model_head_name(m, h);
        if (o->pred[h]) {
            if (o->nheads == 1)
                snprintf(name, sizeof name, "output.pred");
            else
                snprintf(name, sizeof name, "eval.pred.%s", hn);
            if ((rc = fn(name, o->pred[h], ctx))) return rc;
        }
        for (int l = 0; l < o->nl; l++) {
            if (o->nheads == 1)
                snprintf(name, sizeof name, "output.level%d", l);
            else
                snprintf(name, sizeof name, "eval.level.%s%d", hn, l);
            if ((rc = fn(name, o->maps[h][l], ctx))) return rc;
        }
    }
    return 0;
}
