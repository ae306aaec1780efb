/* Batches for training and validation, prepared by loader threads while the
 * model computes (the official DataLoader with its collate_fn).
 *
 *   LoaderOptions o;
 *   loader_options_default(&o, true);  // training: augment, shuffle
 *   o.img_size = 320, o.batch = 16, o.seed = seed, o.hyp = hyp.aug;
 *   Loader *L = loader_new(ds, &o);
 *   for (epoch ...) {
 *       if (epoch == epochs - close_mosaic) loader_set_mosaic(L, false);
 *       loader_start_epoch(L, epoch);
 *       const Batch *b;
 *       int rc;
 *       while ((rc = loader_next(L, &b)) == 1) { ... b->images, b->targets ... }
 *       if (rc < 0) ... gelan_last_error() ...
 *   }
 *   loader_free(L);
 *
 * Epoch order: a permutation drawn from (seed, epoch) when shuffling, else
 * the data set order (or, with rect, the aspect-ratio order). Every image
 * appears once per epoch; the last batch may be short (drop_last=False).
 * Each sample's augmentation draws from its own generator seeded by (seed,
 * epoch, position in the epoch), so batches do not depend on the number of
 * threads or on timing.
 *
 * Threads: `workers` pthreads (not the compute pool) each build whole
 * batches, up to `prefetch` batches ahead of the one the caller holds. A
 * batch stays valid until the next loader_next / loader_start_epoch /
 * loader_free. Most of a training sample's time is JPEG decoding (mosaic
 * reads 4 images, mixup 4 more): dataset_cache_resized (the official
 * --cache ram) removes it when the images fit in memory. */
#ifndef GELAN_TRAIN_LOADER_H
#define GELAN_TRAIN_LOADER_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor/tensor.h"
#include "train/augment.h"
#include "train/dataset.h"
#include "train/loss.h"

typedef struct {
    int img_size; /* s: training images are s x s; validation fits the longer side to s */
    int batch;    /* images per batch (capped at the data set size, as the official) */
    int workers;  /* loader threads; 0 builds each batch in loader_next */
    int prefetch; /* batches prepared ahead (2) */
    uint64_t seed;
    bool augment; /* training pipeline (sample_train) or validation (sample_eval) */
    bool shuffle; /* new order every epoch */
    /* validation only: rectangular batches as the official val loader
       (rect=True, pad=0.5): images sorted by aspect ratio h/w, each batch
       letterboxed to ceil(shape * s / stride + pad) * stride, where shape is
       (max ratio, 1) if all images of the batch are wider than tall, (1, 1 /
       min ratio) if all are taller than wide, else (1, 1). Off: s x s. */
    bool rect;
    int stride;     /* 32 */
    float pad;      /* 0.5 */
    HypAugment hyp; /* training augmentation */
    /* data-parallel training (train/dist.h): this process builds only part
       `shard` of `shards` of every batch (loader_shard_range); the images,
       their order and their augmentation are those of the whole batch, so
       the parts of all processes together are exactly the batch one process
       would build. 0 of 1 (default): whole batches. */
    int shard, shards;
} LoaderOptions;

/* train: augment, shuffle, 2 workers, prefetch 2, hyp.scratch-high, s 640,
 * batch 16. val: no augmentation, no shuffle, rect with stride 32, pad 0.5,
 * batch 32. */
void loader_options_default(LoaderOptions *o, bool train);

typedef struct {
    int n;                      /* images in this batch */
    int h, w;                   /* image size of the batch */
    Tensor *images;             /* [n, 3, h, w] float32 RGB in [0, 1] (pixel / 255) */
    Targets targets;            /* rows [image index in batch, class, cx, cy, w, h], normalised to w x h */
    const int *index;           /* n data set indices */
    const Letterbox *letterbox; /* validation: n entries mapping boxes back to original pixels; NULL when training */
    int batch_index;            /* position in the epoch */
    int batch_n;                /* images of the whole batch (= n unless sharded); images is NULL when n = 0 */
} Batch;

typedef struct Loader Loader;

/* NULL with gelan_error on bad options or when threads cannot start. The
 * data set must outlive the loader. */
Loader *loader_new(const Dataset *ds, const LoaderOptions *o);
/* Batches per epoch: ceil(n / batch). */
int loader_num_batches(const Loader *L);
/* Starts epoch `epoch` (any earlier epoch still in flight is abandoned). */
int loader_start_epoch(Loader *L, int epoch);
/* 1 and *out = the next batch; 0 at the end of the epoch; -1 on error (a
 * sample that could not be built; the message names the image). */
int loader_next(Loader *L, const Batch **out);
/* close_mosaic: mosaic (and so mixup) on or off from the next
 * loader_start_epoch on. On at first when augmenting. */
void loader_set_mosaic(Loader *L, bool on);
void loader_free(Loader *L);

/* The part [*lo, *hi) of a batch of n images that shard k of `shards` builds:
 * contiguous runs, the first n % shards of them one image longer; a batch of
 * fewer images than shards goes whole to shard 0. */
void loader_shard_range(int n, int k, int shards, int *lo, int *hi);

/* The epoch order the loader uses (n entries), for tests and for resuming. */
int loader_epoch_order(const Loader *L, int epoch, int *order);

#endif
