/* gelan.c's standalone inference runtime.
 *
 * An inference model is a safetensors file whose __metadata__ holds
 * format = "gelan-infer/1", names (JSON list of class names) and graph (the
 * line-oriented text graph of docs/FORMATS.md); its tensors are the weights.
 * Loading parses and checks the graph, infers channel counts, checks every
 * weight's shape and packs the weights once for the kernels of this CPU.
 * Running on an input size plans the activation memory once for that size
 * (shapes, in-place concat and split, buffer reuse) and re-plans only when
 * the size changes.
 *
 *     InferModel *m = infer_model_load("gelan-t.safetensors");
 *     InferShape os;
 *     const float *pred = infer_model_run(m, input, 1, 3, 640, 640, &os);
 *     ... pred is [1, 84, 8400] for 80 classes ...
 *     infer_model_free(m);
 *
 * Errors: NULL/-1 with gelan_last_error() naming the file, graph line and values.
 * Threads: the tensor/pool.h pool (pool_init before the first run). */
#ifndef GELAN_INFER_H
#define GELAN_INFER_H

#include <stddef.h>
#include <stdint.h>

typedef struct InferModel InferModel;

typedef struct {
    int ndim;
    int shape[4];
} InferShape;

/* A weight as the builder needs it: float32, row-major; data stays valid
 * until infer_model_build returns (the weights are packed into new memory). */
typedef struct {
    const float *data;
    int ndim;
    int64_t shape[8];
} InferTensor;
/* Looks a weight up by name: 0 and *out filled, or -1 when absent. */
typedef int (*InferLookup)(void *ctx, const char *name, InferTensor *out);

InferModel *infer_model_load(const char *path);
/* The same from graph text, class names (JSON list, NULL = none) and a weight lookup. */
InferModel *infer_model_build(const char *graph, const char *names_json, InferLookup lookup, void *ctx);
void infer_model_free(InferModel *m);

/* Runs on input [n, c, h, w] (contiguous). The result (shape in *out) stays
 * valid until the next run or free; NULL + error on failure. */
const float *infer_model_run(InferModel *m, const float *input, int n, int c, int h, int w, InferShape *out);
/* Plans for an input size without running (also gives the output shape). */
int infer_model_prepare(InferModel *m, int n, int h, int w, InferShape *out);

int infer_model_input_channels(const InferModel *m);
const char *infer_model_output_name(const InferModel *m);    /* OUT of the last graph line, e.g. "pred" */
int infer_model_layers(const InferModel *m);                 /* graph nodes */
size_t infer_model_params(const InferModel *m);              /* weight and bias values */
double infer_model_flops(const InferModel *m, int h, int w); /* 2 x multiply-adds of the convs, batch 1 */
int infer_model_class_count(const InferModel *m);            /* number of names (0 without names) */
const char *infer_model_class_name(const InferModel *m, int i);
const char *infer_model_kernels(const InferModel *m); /* "avx512", "avx2", "neon" or "c" */
/* nc of the detect node, or -1 when the graph has none */
int infer_model_detect_nc(const InferModel *m);
/* The largest stride of the detect node (what letterbox pads to), 0 without one. */
float infer_model_max_stride(const InferModel *m);

/* Per-node timing: when on, each run adds node times (seconds) to an array of
 * infer_model_layers() entries returned by infer_model_profile (NULL when off). */
void infer_model_set_profile(InferModel *m, int on);
const double *infer_model_profile(const InferModel *m);
const char *infer_model_node_desc(const InferModel *m, int i); /* the graph line of node i */

/* ---- post-processing ---------------------------------------------------------- */
typedef struct {
    float x1, y1, x2, y2; /* pixels of the network input (or, after scaling, the original image) */
    float score;
    int cls;
} InferBox;

/* Non-maximum suppression of one image's pred [4+nc, A] (channel-major, row
 * stride A; boxes cx,cy,w,h), as the official non_max_suppression: candidates
 * with score > conf (the best class per anchor; every class above conf when
 * multi_label), at most 30000 by score, suppression of boxes of the same class
 * (any class when agnostic) whose IoU with a kept one exceeds iou, at most
 * max_det kept, sorted by score. Returns the number of boxes written to out
 * (room for max_det), or -1 when out of memory. */
int infer_nms(const float *pred, int nc, int anchors, float conf, float iou, int max_det, int multi_label, int agnostic,
              InferBox *out);
float infer_box_iou(const InferBox *a, const InferBox *b);

/* Letterbox as the official LetterBox: scale by r = min(target/h, target/w)
 * keeping the aspect, pad with gray 114 to target x target, or with auto to
 * the smallest multiple of stride; padding split evenly (left/top get the
 * smaller half). */
typedef struct {
    int src_w, src_h;         /* original image */
    int new_w, new_h;         /* resized image inside the padded one */
    int out_w, out_h;         /* network input */
    int left, top;            /* padding before the image */
    float gain, pad_x, pad_y; /* for scaling boxes back, as the official scale_boxes */
} Letterbox;

void infer_letterbox_geometry(int src_w, int src_h, int target, int stride, int auto_pad, Letterbox *lb);
/* rgb: src_h x src_w x 3 bytes; chw: 3 x out_h x out_w floats in [0,1].
 * Bilinear resize with pixel-centre alignment (cv2 INTER_LINEAR). */
void infer_letterbox(const unsigned char *rgb, const Letterbox *lb, float *chw);
/* Boxes from network-input pixels to original-image pixels, clipped to it. */
void infer_scale_boxes(const Letterbox *lb, InferBox *boxes, int n);

#endif
