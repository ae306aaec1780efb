/* Test helpers over the library's model, tensor and training types (defined
 * in tests/testutil.c, like those of tests/testutil.h). For the suites that
 * use nn/ and train/; not for those that include infer/kernels.h (its ActKind
 * clashes with nn/blocks.h's). */
#ifndef GELAN_TESTUTIL_NN_H
#define GELAN_TESTUTIL_NN_H

#include <stdint.h>

#include "nn/model.h"
#include "train/trainer.h"

/* Tensor `name` of a safetensors file as a heap F32 tensor; NULL when the file
 * or the tensor is missing. */
Tensor *tensor_from_file(const char *path, const char *name);
/* An [n, c, h, w] tensor of uniform values in [0, 1) from seed. */
Tensor *random_image_batch(int n, int c, int h, int w, uint64_t seed);
/* BN running statistics and affine parameters away from their fresh values
 * (gamma in [0.5, 1.5), beta in [-0.2, 0.2), mean in [-mean_range, mean_range),
 * var in [0.5, 2)), so that folding or evaluating BN is not the identity. */
void randomize_bn_stats(Model *m, uint64_t seed, float mean_range);
/* train_options_default with a short run's settings: data, project/name
 * (exist_ok), 64-pixel images, batch 4, one loader thread, no close-mosaic. */
void quick_train_options(TrainOptions *o, const char *data, const char *project, const char *name);

#endif
