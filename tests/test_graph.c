/* Suite graph: `gelan graph` (nn/graph_svg.h, cli/cmd_graph.c).
 *
 * Every config in configs/models is drawn at 640 and the SVG is parsed by a
 * small XML well-formedness checker (below; it is tested on broken inputs
 * too): it must have one box per layer, one arrow per `from` and one detect
 * cell per head and level. The roles (what `gelan convert` keeps) are
 * checked against the official reparameterization mapping
 * (tools/reparameterization.ipynb, ../shared/golden/README.md): yolov9-c
 * layers 1-22 become gelan-c layers 0-21, 23-37 are dropped, and what is
 * kept has gelan-c's official parameter count. */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nn/graph_svg.h"
#include "nn/model.h"
#include "tensor/error.h"
#include "tests/testutil.h"

#define CFG_DIR "configs/models/"

/* ---- an XML well-formedness checker ------------------------------------------------
 * Enough of XML 1.0 for machine-written SVG: prolog (declaration, comments,
 * processing instructions), one root element, nested elements with matching
 * end tags, attributes quoted and unique per element, text and attribute
 * values whose `&` starts a valid reference and that hold no `<`, valid
 * UTF-8. No DTDs, no CDATA (gelan graph writes neither: both are errors). */
typedef struct {
    const char *s;
    size_t i, n;
    char err[160];
} Xml;

static int xml_fail(Xml *x, const char *what) {
    snprintf(x->err, sizeof x->err, "offset %zu: %s", x->i, what);
    return -1;
}

static bool name_start(unsigned char c) {
    return c == '_' || c == ':' || ((c | 32) >= 'a' && (c | 32) <= 'z') || c >= 0x80;
}
static bool name_char(unsigned char c) { return name_start(c) || c == '-' || c == '.' || (c >= '0' && c <= '9'); }

static void skip_ws(Xml *x) {
    while (x->i < x->n && strchr(" \t\r\n", x->s[x->i])) x->i++;
}

/* A name at x->i; its length, 0 if none. */
static size_t xml_name(Xml *x) {
    size_t b = x->i;
    if (x->i < x->n && name_start((unsigned char)x->s[x->i]))
        while (x->i < x->n && name_char((unsigned char)x->s[x->i])) x->i++;
    return x->i - b;
}

/* A reference after '&': &name; or &#digits; or &#xhex; */
static int xml_ref(Xml *x) {
    x->i++; /* '&' */
    if (x->i < x->n && x->s[x->i] == '#') {
        x->i++;
        bool hex = x->i < x->n && x->s[x->i] == 'x';
        if (hex) x->i++;
        size_t b = x->i;
        while (x->i < x->n && (hex ? strchr("0123456789abcdefABCDEF", x->s[x->i]) : strchr("0123456789", x->s[x->i])) &&
               x->s[x->i])
            x->i++;
        if (x->i == b) return xml_fail(x, "empty character reference");
    } else {
        size_t b = x->i, len = xml_name(x);
        static const char *known[] = {"amp", "lt", "gt", "quot", "apos"};
        bool ok = false;
        for (int k = 0; k < 5; k++) ok |= len == strlen(known[k]) && !strncmp(x->s + b, known[k], len);
        if (!ok) return xml_fail(x, "unknown entity (no DTD declares any)");
    }
    if (x->i >= x->n || x->s[x->i] != ';') return xml_fail(x, "reference without ';'");
    x->i++;
    return 0;
}

static int xml_utf8(Xml *x) {
    const unsigned char *u = (const unsigned char *)x->s;
    for (size_t i = 0; i < x->n;) {
        int extra = u[i] < 0x80             ? 0
                    : (u[i] & 0xE0) == 0xC0 ? 1
                    : (u[i] & 0xF0) == 0xE0 ? 2
                    : (u[i] & 0xF8) == 0xF0 ? 3
                                            : -1;
        if (extra < 0 || (u[i] < 0x20 && !strchr("\t\r\n", u[i]))) {
            x->i = i;
            return xml_fail(x, "not UTF-8 or a control character");
        }
        for (int k = 1; k <= extra; k++)
            if (i + k >= x->n || (u[i + k] & 0xC0) != 0x80) {
                x->i = i;
                return xml_fail(x, "broken UTF-8 sequence");
            }
        i += 1 + (size_t)extra;
    }
    return 0;
}

/* Skips "<!--...-->" or "<?...?>" at x->i. */
static int xml_misc(Xml *x) {
    if (!strncmp(x->s + x->i, "<!--", 4)) {
        const char *e = strstr(x->s + x->i + 4, "--");
        if (!e || e[2] != '>') return xml_fail(x, "comment not closed by '-->' (or '--' inside)");
        x->i = (size_t)(e - x->s) + 3;
        return 0;
    }
    const char *e = strstr(x->s + x->i + 2, "?>");
    if (!e) return xml_fail(x, "processing instruction not closed");
    x->i = (size_t)(e - x->s) + 2;
    return 0;
}

/* 0 when s is a well-formed XML document; root gets its root element's name. */
static int xml_check(const char *s, char *root, size_t root_len, char *err, size_t err_len) {
    Xml x = {s, 0, strlen(s), ""};
    enum { DEPTH = 64 };
    size_t open_at[DEPTH], open_len[DEPTH];
    int depth = 0, roots = 0, rc = xml_utf8(&x);
    if (root_len) root[0] = '\0';
    while (!rc && x.i < x.n) {
        if (x.s[x.i] != '<') { /* text */
            if (depth == 0 && !strchr(" \t\r\n", x.s[x.i])) {
                rc = xml_fail(&x, "text outside the root element");
            } else if (x.s[x.i] == '&') {
                rc = xml_ref(&x);
            } else {
                if (x.s[x.i] == '>' && x.i >= 2 && !strncmp(x.s + x.i - 2, "]]", 2)) rc = xml_fail(&x, "']]>' in text");
                x.i++;
            }
            continue;
        }
        if (!strncmp(x.s + x.i, "<!--", 4) || !strncmp(x.s + x.i, "<?", 2)) {
            rc = xml_misc(&x);
            continue;
        }
        if (!strncmp(x.s + x.i, "<!", 2)) {
            rc = xml_fail(&x, "DTD or CDATA section");
            continue;
        }
        if (x.s[x.i + 1] == '/') { /* end tag */
            x.i += 2;
            size_t b = x.i, len = xml_name(&x);
            skip_ws(&x);
            if (!len || x.i >= x.n || x.s[x.i] != '>') {
                rc = xml_fail(&x, "bad end tag");
            } else if (depth == 0 || open_len[depth - 1] != len || strncmp(x.s + open_at[depth - 1], x.s + b, len)) {
                rc = xml_fail(&x, "end tag does not match the open element");
            } else {
                depth--;
                x.i++;
            }
            continue;
        }
        /* start tag */
        x.i++;
        size_t b = x.i, len = xml_name(&x);
        if (!len) {
            rc = xml_fail(&x, "'<' not followed by a name");
            continue;
        }
        if (depth == 0 && ++roots > 1) {
            rc = xml_fail(&x, "a second root element");
            continue;
        }
        if (depth == 0 && root_len) snprintf(root, root_len, "%.*s", (int)len, x.s + b);
        size_t attr_at[64], attr_len[64];
        int nattr = 0;
        for (;;) {
            size_t before = x.i;
            skip_ws(&x);
            if (x.i >= x.n) {
                rc = xml_fail(&x, "unterminated start tag");
                break;
            }
            if (x.s[x.i] == '>' || !strncmp(x.s + x.i, "/>", 2)) break;
            if (x.i == before) {
                rc = xml_fail(&x, "attributes must be separated by white space");
                break;
            }
            size_t ab = x.i, al = xml_name(&x);
            if (!al) {
                rc = xml_fail(&x, "bad attribute name");
                break;
            }
            for (int k = 0; k < nattr; k++)
                if (attr_len[k] == al && !strncmp(x.s + attr_at[k], x.s + ab, al))
                    rc = xml_fail(&x, "duplicate attribute");
            if (rc) break;
            if (nattr < 64) attr_at[nattr] = ab, attr_len[nattr++] = al;
            skip_ws(&x);
            if (x.i >= x.n || x.s[x.i] != '=') {
                rc = xml_fail(&x, "attribute without '='");
                break;
            }
            x.i++;
            skip_ws(&x);
            char q = x.i < x.n ? x.s[x.i] : 0;
            if (q != '"' && q != '\'') {
                rc = xml_fail(&x, "attribute value not quoted");
                break;
            }
            x.i++;
            while (!rc && x.i < x.n && x.s[x.i] != q) {
                if (x.s[x.i] == '<')
                    rc = xml_fail(&x, "'<' in an attribute value");
                else if (x.s[x.i] == '&')
                    rc = xml_ref(&x);
                else
                    x.i++;
            }
            if (rc) break;
            if (x.i >= x.n) {
                rc = xml_fail(&x, "unterminated attribute value");
                break;
            }
            x.i++;
        }
        if (rc) continue;
        if (x.s[x.i] == '/') { /* empty element */
            x.i += 2;
            continue;
        }
        x.i++;
        if (depth == DEPTH) {
            rc = xml_fail(&x, "elements nested too deep for this checker");
            continue;
        }
        open_at[depth] = b, open_len[depth++] = len;
    }
    if (!rc && depth) rc = xml_fail(&x, "an element is not closed");
    if (!rc && roots == 0) rc = xml_fail(&x, "no root element");
    if (rc && err_len) snprintf(err, err_len, "%s", x.err);
    return rc;
}

static bool well_formed(const char *s) {
    char root[32], err[200];
    return xml_check(s, root, sizeof root, err, sizeof err) == 0;
}

static void test_xml_checker(void) {
    char root[32], err[200];
    CU_ASSERT_EQUAL(xml_check("<?xml version=\"1.0\"?>\n<!-- c --><svg a=\"1\" b='x &amp; &#215; &#xD7;'><g/>"
                              "<text>a &lt; b</text></svg>\n",
                              root, sizeof root, err, sizeof err),
                    0);
    CU_ASSERT_STRING_EQUAL(root, "svg");
    const char *bad[] = {
        "<svg><g></svg>",              /* not closed */
        "<svg></g>",                   /* wrong end tag */
        "<svg a=1></svg>",             /* unquoted */
        "<svg a=\"1\" a=\"2\"></svg>", /* duplicate attribute */
        "<svg a=\"<\"></svg>",         /* < in a value */
        "<svg>a & b</svg>",            /* bare & */
        "<svg>&nbsp;</svg>",           /* undeclared entity */
        "<svg/><svg/>",                /* two roots */
        "text<svg/>",                  /* text outside */
        "<svg a=\"1\"b=\"2\"/>",       /* no space between attributes */
        "<svg><!-- a -- b --></svg>",  /* -- in a comment */
        "<svg>\xe2\x86</svg>",         /* broken UTF-8 */
        "",                            /* nothing */
        "<svg><![CDATA[x]]></svg>",    /* CDATA: not written by us */
        "<svg",                        /* cut off */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bool rejected = xml_check(bad[i], root, sizeof root, err, sizeof err) != 0;
        if (!rejected) fprintf(stderr, "\n  accepted: %s\n", bad[i]);
        CU_ASSERT(rejected);
    }
}

/* ---- the drawings -------------------------------------------------------------------- */
static int count_of(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* One box per layer, one arrow per `from` (into a detect cell for the head),
 * one cell per head and level, the main cells solid and the others not. */
static void check_drawing(const Model *m, const char *svg, const char *dot, const char *file) {
    char root[32], err[200], key[160];
    int rc = xml_check(svg, root, sizeof root, err, sizeof err);
    if (rc) fprintf(stderr, "\n  %s: SVG not well formed: %s\n", file, err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_STRING_EQUAL(root, "svg");
    int D = m->nlayers - 1, missing = 0;
    bool image_box = false;
    for (int i = 0; i < m->nlayers; i++) {
        const Layer *L = &m->layers[i];
        snprintf(key, sizeof key, "<g id=\"layer-%d\" ", i);
        if (count_of(svg, key) != 1 && missing++ < 5) fprintf(stderr, "\n  %s: box of layer %d\n", file, i);
        snprintf(key, sizeof key, i < D ? ">%d  %s</text>" : ">%d  %s: ", i, L->module);
        if (count_of(svg, key) != 1 && missing++ < 5) fprintf(stderr, "\n  %s: label of layer %d\n", file, i);
        if (L->kind == BLOCK_SILENCE) continue;
        for (int k = 0; k < L->nfrom; k++) {
            int s = L->src[k] >= 0 ? L->src[k] : -1;
            image_box |= s < 0 && L->kind != BLOCK_DETECT;
            snprintf(key, sizeof key, "data-from=\"%d\" data-to=\"%d\" data-input=\"%d\"", s, i, k);
            if (count_of(svg, key) != 1 && missing++ < 5) fprintf(stderr, "\n  %s: arrow %s\n", file, key);
            if (i == D) continue;
            snprintf(key, sizeof key, s < 0 ? "image -> L%d" : "L%d -> L%d", s < 0 ? i : s, i);
            if (!strstr(dot, key) && missing++ < 5) fprintf(stderr, "\n  %s: DOT edge %s\n", file, key);
        }
        snprintf(key, sizeof key, "  L%d [label=\"%d %s", i, i, L->module);
        if (i < D && !strstr(dot, key) && missing++ < 5) fprintf(stderr, "\n  %s: DOT node %d\n", file, i);
    }
    CU_ASSERT_EQUAL(missing, 0);
    CU_ASSERT_EQUAL(count_of(svg, "<g id=\"image\" "), image_box ? 1 : 0);
    int nh = m->head.nheads, nl = m->head.nl;
    CU_ASSERT_EQUAL(count_of(svg, "<g class=\"cell main\""), nl);
    CU_ASSERT_EQUAL(count_of(svg, "<g class=\"cell aux\""), (nh - 1) * nl);
    CU_ASSERT_EQUAL(count_of(svg, "class=\"edge\""), count_of(svg, "marker-end="));
    /* DOT: balanced braces, one statement block */
    CU_ASSERT_EQUAL(count_of(dot, "{"), count_of(dot, "}"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dot, "digraph \""));
}

static void test_every_config(void) {
    DIR *dir = opendir(CFG_DIR);
    CU_ASSERT_PTR_NOT_NULL(dir);
    if (!dir) return;
    int drawn = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".yaml")) continue;
        char path[512];
        snprintf(path, sizeof path, CFG_DIR "%s", e->d_name);
        Model *m = model_build_file(path, NULL);
        CU_ASSERT_NONNULL_OK(m);
        if (!m) continue;
        char *svg = graph_svg(m, 640, 640), *dot = graph_dot(m, 640, 640);
        CU_ASSERT_NONNULL_OK(svg);
        CU_ASSERT_NONNULL_OK(dot);
        if (svg && dot) check_drawing(m, svg, dot, e->d_name);
        drawn += svg && dot;
        free(svg);
        free(dot);
        model_free(m);
    }
    closedir(dir);
    CU_ASSERT(drawn >= 14); /* the 10 official and 4 seed configs */
}

/* Roles and counts against the official reparameterization mapping. */
typedef struct {
    const char *file;
    int first_aux, last_aux; /* the dropped layers (-1: none) */
    int shift;               /* kept layer i becomes i - shift (below first_aux) */
    size_t kept_params;      /* the official count of the gelan model it converts to */
    int kept_layers;
} RoleCase;

static void test_roles(void) {
    const RoleCase cases[] = {
        /* gelan-t 2,442,640 and gelan-c 25,498,752: ../shared/golden/README.md, official model.info() */
        {"yolov9-t.yaml", 22, 28, 0, 2442640, 23},
        {"yolov9-c.yaml", 23, 37, 1, 25498752, 23},
        {"yolov9-c-triple.yaml", 23, 52, 1, 25498752, 23},
        {"gelan-c.yaml", -1, -1, 0, 25498752, 23},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const RoleCase *k = &cases[c];
        char path[256];
        snprintf(path, sizeof path, CFG_DIR "%s", k->file);
        Model *m = model_build_file(path, NULL);
        CU_ASSERT_NONNULL_OK(m);
        if (!m) continue;
        GraphInfo gi;
        CU_ASSERT_OK(graph_info(m, 640, 640, &gi));
        int D = m->nlayers - 1, wrong = 0;
        for (int i = 0; i < m->nlayers && gi.role; i++) {
            GraphRole want;
            int want_new;
            if (i == D) {
                want = GRAPH_HEAD, want_new = k->kept_layers - 1;
            } else if (m->layers[i].kind == BLOCK_SILENCE) {
                want = GRAPH_INPUT, want_new = -1;
            } else if (i >= k->first_aux && i <= k->last_aux) {
                want = GRAPH_AUX, want_new = -1;
            } else {
                want = GRAPH_MAIN, want_new = i - k->shift;
            }
            if ((gi.role[i] != want || gi.new_index[i] != want_new) && wrong++ < 5)
                fprintf(stderr, "\n  %s layer %d: %s -> %d, expected %s -> %d\n", k->file, i,
                        graph_role_name(gi.role[i]), gi.new_index[i], graph_role_name(want), want_new);
        }
        CU_ASSERT_EQUAL(wrong, 0);
        CU_ASSERT_EQUAL(gi.kept_params, k->kept_params);
        CU_ASSERT_EQUAL(gi.kept_layers, k->kept_layers);
        CU_ASSERT_EQUAL(gi.total_params, model_num_params(m));
        /* the head's cells add up to the detect layer */
        size_t head = 0;
        for (int h = 0; h < m->head.nheads; h++)
            for (int l = -1; l < m->head.nl; l++) head += graph_head_params(m, h, l);
        CU_ASSERT_EQUAL(head, gi.params[D]);
        graph_info_free(&gi);
        model_free(m);
    }
    /* yolov9-e keeps its first backbone and the CBLinear/CBFuse that feed the second one
     * (the official notebook: gelan-e i <- i for i < 29, i <- i+7 for 29 <= i < 42) */
    Model *m = model_build_file(CFG_DIR "yolov9-e.yaml", NULL);
    CU_ASSERT_NONNULL_OK(m);
    if (!m) return;
    GraphInfo gi;
    CU_ASSERT_OK(graph_info(m, 640, 640, &gi));
    if (gi.role) {
        CU_ASSERT_EQUAL(gi.role[0], GRAPH_INPUT);
        CU_ASSERT_EQUAL(gi.new_index[0], 0); /* a Silence again: layer 15 reads the image */
        for (int i = 1; i < 29; i++) CU_ASSERT(gi.role[i] == GRAPH_MAIN && gi.new_index[i] == i);
        for (int i = 29; i < 36; i++) CU_ASSERT(gi.role[i] == GRAPH_AUX && gi.new_index[i] == -1);
        for (int i = 36; i < 49; i++) CU_ASSERT(gi.role[i] == GRAPH_MAIN && gi.new_index[i] == i - 7);
        CU_ASSERT_EQUAL(gi.kept_params, 58114432); /* gelan-e, docs/CONFIGS.md */
    }
    graph_info_free(&gi);
    model_free(m);
}

/* ---- the command line ------------------------------------------------------------------ */
static const char *gelan_bin(void) {
    const char *g = getenv("GELAN_BIN");
    return g && *g ? g : "build/gelan";
}

static int run_status(const char *cmd) {
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s) s[n] = '\0';
    fclose(f);
    return s;
}

static void test_cli(void) {
    const char *g = gelan_bin();
    if (access(g, X_OK) != 0) {
        fprintf(stderr, "\n  no %s: skipped\n", g);
        return;
    }
    char dir[] = "/tmp/gelan_graph_XXXXXX";
    CU_ASSERT_PTR_NOT_NULL(mkdtemp(dir));
    char cmd[2048], svg[300], dot[300], table[300];
    snprintf(svg, sizeof svg, "%s/t.svg", dir);
    snprintf(dot, sizeof dot, "%s/t.dot", dir);
    snprintf(table, sizeof table, "%s/table.txt", dir);
    snprintf(cmd, sizeof cmd, "%s graph " CFG_DIR "yolov9-t.yaml --img 320 --out %s > %s", g, svg, table);
    CU_ASSERT_EQUAL(run_status(cmd), 0);
    char *s = read_file(svg), *t = read_file(table);
    CU_ASSERT(s && well_formed(s));
    CU_ASSERT(s && strstr(s,
                          "16\xc3\x97"
                          "160\xc3\x97"
                          "160")); /* layer 0 at 320: 16x160x160 */
    CU_ASSERT(t && strstr(t, "gelan convert keeps 23 layers, 2,442,640 parameters"));
    CU_ASSERT(t && strstr(t, "   22  aux "));
    free(s);
    free(t);
    snprintf(cmd, sizeof cmd, "%s graph " CFG_DIR "gelan-t.yaml --dot --out %s > /dev/null", g, dot);
    CU_ASSERT_EQUAL(run_status(cmd), 0);
    s = read_file(dot);
    CU_ASSERT(s && !strncmp(s, "digraph \"gelan-t\"", 17));
    free(s);
    /* a weights file: its architecture (golden weights carry no cfg: --cfg) */
    if (shared_available()) {
        snprintf(cmd, sizeof cmd, "%s graph %s --cfg %s --out %s > /dev/null", g,
                 golden_path("yolov9-c-mini_64", "weights.safetensors"), golden_path("yolov9-c-mini_64", "cfg.yaml"),
                 svg);
        CU_ASSERT_EQUAL(run_status(cmd), 0);
        s = read_file(svg);
        CU_ASSERT(s && well_formed(s) && strstr(s, "id=\"layer-38\""));
        free(s);
    }
    /* usage errors: 2; a config that does not exist: 1 */
    snprintf(cmd, sizeof cmd, "%s graph " CFG_DIR "gelan-t.yaml 2>/dev/null", g);
    CU_ASSERT_EQUAL(run_status(cmd), 2);
    snprintf(cmd, sizeof cmd, "%s graph " CFG_DIR "gelan-t.yaml --img 100 --out %s 2>/dev/null", g, svg);
    CU_ASSERT_EQUAL(run_status(cmd), 2);
    snprintf(cmd, sizeof cmd, "%s graph " CFG_DIR "nonexistent.yaml --out %s 2>/dev/null", g, svg);
    CU_ASSERT_EQUAL(run_status(cmd), 1);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (run_status(cmd)) fprintf(stderr, "could not remove %s\n", dir);
}

SUITE_FN(graph) {
    CU_pSuite s = CU_add_suite("graph", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "the XML checker rejects what is not well formed", test_xml_checker);
    CU_add_test(s, "every config: well-formed SVG and DOT with every layer, arrow and head cell", test_every_config);
    CU_add_test(s, "roles and counts = the official reparameterization", test_roles);
    CU_add_test(s, "gelan graph on the command line", test_cli);
    return 0;
}
