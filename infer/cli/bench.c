/* gelan-infer bench and gelan bench: the seed's latency table of an inference
 * model on a synthetic input. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "infer/cli/tools.h"
#include "infer/infer.h"
#include "tensor/error.h"
#include "tensor/pool.h"

InferBenchOptions infer_bench_defaults(void) {
    return (InferBenchOptions){.runs = 50, .warmup = 5, .img = 640, .batch = 1, .profile = 0};
}

const char *infer_bench_check(const InferBenchOptions *o) {
    if (o->runs < 1 || o->img < 1 || o->batch < 1) return "--runs, --img and --batch must be >= 1";
    if (o->warmup < 0 || o->profile < 0) return "--warmup and --profile must be >= 0";
    return NULL;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Mean of the readable /sys/class/thermal zones in degrees C, or < -100 when none. */
static double cpu_temperature(void) {
    DIR *d = opendir("/sys/class/thermal");
    if (!d) return -1000;
    double sum = 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, "thermal_zone", 12)) continue;
        char path[512];
        snprintf(path, sizeof path, "/sys/class/thermal/%s/temp", e->d_name);
        FILE *f = fopen(path, "r");
        long milli;
        if (f && fscanf(f, "%ld", &milli) == 1) sum += milli / 1000.0, n++;
        if (f) fclose(f);
    }
    closedir(d);
    return n ? sum / n : -1000;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static void print_slowest_nodes(const InferModel *m, int k, int runs) {
    const double *p = infer_model_profile(m);
    int L = infer_model_layers(m);
    int *order = malloc(sizeof(int) * (size_t)L);
    if (!p || !order) {
        free(order);
        return;
    }
    for (int i = 0; i < L; i++) order[i] = i;
    for (int i = 0; i < k && i < L; i++) /* selection of the k slowest */
        for (int j = i + 1; j < L; j++)
            if (p[order[j]] > p[order[i]]) {
                int t = order[i];
                order[i] = order[j], order[j] = t;
            }
    printf("\nslowest nodes (ms per run):\n");
    for (int i = 0; i < k && i < L; i++)
        printf("  %8.3f  %s\n", p[order[i]] * 1e3 / runs, infer_model_node_desc(m, order[i]));
    free(order);
}

int infer_bench_run(const char *prog, const char *model, const InferBenchOptions *o) {
    InferModel *m = infer_model_load(model);
    if (!m) {
        fprintf(stderr, "%s: %s\n", prog, gelan_last_error());
        return 1;
    }
    const int c = infer_model_input_channels(m), img = o->img, batch = o->batch;
    const size_t numel = (size_t)batch * c * img * img;
    float *x = malloc(numel * sizeof(float));
    for (size_t i = 0; x && i < numel; i++) x[i] = (float)((i * 2654435761u) >> 8 & 255) / 255.f; /* any image */
    InferShape os;
    int rc = 1;
    const int progress = isatty(2); /* the progress line only on a terminal */
    double sum = 0, mn = 1e30, mx = 0, temp_sum = 0;
    int temp_n = 0;
    if (!x) {
        fprintf(stderr, "%s: out of memory for a %dx%dx%dx%d input\n", prog, batch, c, img, img);
        goto done;
    }
    if (infer_model_prepare(m, batch, img, img, &os)) goto fail;
    for (int i = 0; i < o->warmup; i++)
        if (!infer_model_run(m, x, batch, c, img, img, &os)) goto fail;
    if (o->profile > 0) infer_model_set_profile(m, 1);
    for (int i = 0; i < o->runs; i++) {
        double t0 = now();
        if (!infer_model_run(m, x, batch, c, img, img, &os)) goto fail;
        double t = (now() - t0) * 1e3;
        sum += t, mn = t < mn ? t : mn, mx = t > mx ? t : mx;
        double temp = cpu_temperature();
        if (temp > -100) temp_sum += temp, temp_n++;
        if (progress) fprintf(stderr, "\rrun %d/%d  %.2f ms", i + 1, o->runs, t);
    }
    if (progress) fprintf(stderr, "\r%40s\r", "");
    char temp[64];
    if (temp_n)
        snprintf(temp, sizeof temp, "%.2fC", temp_sum / temp_n);
    else
        snprintf(temp, sizeof temp, "n/a (no readable /sys/class/thermal)");
    printf("| Field | Value |\n|---|---|\n");
    printf("| MODEL NAME | %s |\n", base_name(model));
    printf("| input | %dx%dx%dx%d, %d thread%s, %s kernels |\n", batch, c, img, img, pool_threads(),
           pool_threads() == 1 ? "" : "s", infer_model_kernels(m));
    printf("| avg inference time | %.2fms |\n", sum / o->runs);
    printf("| max inference time | %.2fms |\n", mx);
    printf("| min inference time | %.2fms |\n", mn);
    printf("| avg CPU temp | %s |\n", temp);
    printf("| PARAMS | %zu |\n", infer_model_params(m));
    printf("| GFLOPS | %.1f |\n", infer_model_flops(m, img, img) / 1e9);
    printf("| LAYERS | %d |\n", infer_model_layers(m));
    if (o->profile > 0) print_slowest_nodes(m, o->profile, o->runs);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "%s: %s\n", prog, gelan_last_error());
done:
    free(x);
    infer_model_free(m);
    return rc;
}
