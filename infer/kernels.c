/* Choosing the kernel table: compile-time on aarch64, CPU detection on x86-64. */
#include "infer/kernels.h"

#include <stdlib.h>
#include <string.h>

#include "tensor/error.h"

static const InferKernels *active;

const InferKernels *infer_kernels_get(const char *name) {
    if (!name) return NULL;
    if (!strcmp(name, "c")) return &infer_kernels_c;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (!strcmp(name, "avx512") && __builtin_cpu_supports("avx512f")) return &infer_kernels_avx512;
    if (!strcmp(name, "avx2") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return &infer_kernels_avx2;
#endif
#if defined(__aarch64__)
    if (!strcmp(name, "neon")) return &infer_kernels_neon;
#endif
    return NULL;
}

static const InferKernels *best(void) {
    const char *order[] = {"neon", "avx512", "avx2"};
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        const InferKernels *k = infer_kernels_get(order[i]);
        if (k) return k;
    }
    return &infer_kernels_c;
}

const InferKernels *infer_kernels(void) {
    if (!active) {
        const char *env = getenv("GELAN_INFER_ISA");
        const InferKernels *k = env && *env ? infer_kernels_get(env) : NULL;
        active = k ? k : best();
    }
    return active;
}

int infer_kernels_force(const char *name) {
    if (!name || !*name) { /* back to the automatic choice (GELAN_INFER_ISA, then the CPU) */
        active = NULL;
        infer_kernels();
        return 0;
    }
    const InferKernels *k = infer_kernels_get(name);
    if (!k)
        return gelan_error("infer: kernel set '%s' is not available on this build/CPU (c, avx2, avx512, neon)", name);
    active = k;
    return 0;
}
