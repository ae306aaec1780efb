/* The bench and detect commands of build/gelan-infer, which build/gelan runs too
 * (`gelan bench`, `gelan detect --model`): both programs are linked with every
 * file of infer/cli/ but main.c, so the two print the same table and the same
 * boxes. Each program parses its own options into these structs (defaults from
 * *_defaults, ranges checked by *_check) and owns the thread pool (pool_init
 * before the call, pool_shutdown after). The run functions print their results
 * on stdout and return the exit code: 0, or 1 after "PROG: reason" on stderr. */
#ifndef GELAN_INFER_CLI_TOOLS_H
#define GELAN_INFER_CLI_TOOLS_H

typedef struct {
    int runs;    /* timed runs (default 50) */
    int warmup;  /* untimed runs before them (default 5) */
    int img;     /* square input size (default 640) */
    int batch;   /* images per run (default 1) */
    int profile; /* also print the K slowest graph nodes (default 0: none) */
} InferBenchOptions;

InferBenchOptions infer_bench_defaults(void);
/* NULL when the options are in range, else why not ("--runs ..."). */
const char *infer_bench_check(const InferBenchOptions *o);
/* The seed's latency table of an inference model: average, maximum and minimum
 * latency over o->runs runs, CPU temperature when /sys/class/thermal is
 * readable, parameters, GFLOPs and layers. PROG prefixes error messages. */
int infer_bench_run(const char *prog, const char *model, const InferBenchOptions *o);

typedef struct {
    const char *source; /* an image, or a directory of images */
    const char *out;    /* where the annotated copies go (default runs/detect, created) */
    float conf, iou;    /* confidence and NMS IoU thresholds (default 0.25, 0.45) */
    int img;            /* inference size (default 640) */
    int max_det;        /* boxes per image at most (default 1000) */
} InferDetectOptions;

InferDetectOptions infer_detect_defaults(void);
const char *infer_detect_check(const InferDetectOptions *o);
/* The official detect.py pipeline on the runtime, image by image: letterbox
 * (rectangular, padded to the stride), run, NMS, boxes scaled back to the
 * image; prints "FILE: WxH (wxh input), N boxes" and one line per box (class,
 * score, x1 y1 x2 y2 in the image's pixels), and writes an annotated copy. */
int infer_detect_run(const char *prog, const char *model, const InferDetectOptions *o);

/* Shared with build/gelan's detect and quantize: the image files of a directory (not
 * recursive, by extension: .jpg .jpeg .png .bmp .tga .gif .pnm .ppm .pgm .psd, sorted by
 * name), or the file itself. A malloc'd list of malloc'd paths, *count of them (0 for a
 * directory without images); NULL with errno set when src cannot be read. */
char **image_files(const char *src, int *count);
/* mkdir -p: 0, or -1 with errno set. */
int make_dirs(const char *path);

#endif
