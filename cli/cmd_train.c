/* gelan train: the official training recipe (train/trainer.h) with a progress
 * bar per epoch and one summary line per epoch after validation. Under mpirun
 * (docs/MPI.md) every rank trains its shard of each batch and rank 0 prints;
 * an error on any rank ends them all. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/progress.h"
#include "tensor/error.h"
#include "tensor/pool.h"
#include "train/dist.h"
#include "train/trainer.h"

static const char *USAGE =
    "gelan train --cfg CFG|--weights W --data D [--hyp H --epochs N --batch N --img N --threads N --name NAME "
    "--seed N --resume --workers N --close-mosaic N --cos-lr --optimizer SGD|AdamW --exist-ok --qat --exclude L,... "
    "--sync-bn --dist-check N --dist-timeout S]";

typedef struct {
    Progress bar, vbar;
    bool validating;
    char prefix[64];
} TrainUi;

static void on_start(void *ctx, const TrainStartInfo *s) {
    (void)ctx;
    printf("%s: %s, %zu parameters, %d head%s, %d classes\n", s->resumed ? "resuming" : "training", s->model,
           s->nparams, s->nheads, s->nheads > 1 ? "s" : "", s->nc);
    if (s->transfer_total) printf("transferred %d/%d items from --weights\n", s->transferred, s->transfer_total);
    printf("data: %d train images, %d val images; %ld batches per epoch, accumulate %d, warmup %ld iterations\n",
           s->train_images, s->val_images, s->nb, s->accumulate, s->nw);
    if (s->ranks > 1)
        printf("data-parallel: %d ranks, each a 1/%d shard of every batch, %d threads each, BN statistics %s\n",
               s->ranks, s->ranks, pool_threads(), s->sync_bn ? "over all ranks (--sync-bn)" : "per rank");
    printf("logging results to %s, epochs %d..%d\n", s->dir, s->start_epoch, s->epochs - 1);
    fflush(stdout);
}

static void on_epoch_start(void *ctx, int epoch, int epochs, long nb) {
    TrainUi *ui = ctx;
    snprintf(ui->prefix, sizeof ui->prefix, "epoch %d/%d", epoch, epochs - 1);
    progress_begin(&ui->bar, stdout, ui->prefix, nb);
}

static void on_batch(void *ctx, const TrainBatchInfo *b) {
    TrainUi *ui = ctx;
    char text[128];
    snprintf(text, sizeof text, "box %.4g cls %.4g dfl %.4g inst %d size %d", b->mean.box, b->mean.cls, b->mean.dfl,
             b->instances, b->img);
    progress_update(&ui->bar, b->i + 1, text);
    if (b->i + 1 == b->nb) progress_end(&ui->bar, text);
}

static void on_val(void *ctx, const TrainValInfo *v) {
    TrainUi *ui = ctx;
    if (!ui->validating) {
        progress_begin(&ui->vbar, stdout, "  validating", v->total);
        ui->validating = true;
    }
    if (v->done == 0) return;
    progress_update(&ui->vbar, v->done, NULL);
    if (v->done >= v->total) {
        progress_end(&ui->vbar, NULL);
        ui->validating = false;
    }
}

static void on_epoch(void *ctx, const TrainEpochInfo *e) {
    (void)ctx;
    if (e->val)
        printf(
            "epoch %d/%d: box %.4f cls %.4f dfl %.4f | P %.3f R %.3f mAP50 %.3f mAP50-95 %.3f | fitness %.4f%s | "
            "%.1fs train %.1fs val\n",
            e->epoch, e->epochs - 1, e->mean.box, e->mean.cls, e->mean.dfl, e->val->mp, e->val->mr, e->val->map50,
            e->val->map50_95, e->fitness, e->best ? " (best)" : "", e->train_seconds, e->val_seconds);
    else
        printf("epoch %d/%d: box %.4f cls %.4f dfl %.4f | %.1fs train\n", e->epoch, e->epochs - 1, e->mean.box,
               e->mean.cls, e->mean.dfl, e->train_seconds);
    fflush(stdout);
}

int cmd_train(int argc, char **argv) {
    TrainOptions o;
    train_options_default(&o);
    const char *optimizer = "SGD", *seed_text = NULL;
    int threads = 0, dist_check = 0;
    float dist_timeout = 0;
    bool cos_lr = false;
    ArgSpec specs[] = {
        {"--cfg", ARG_STR, &o.cfg, "CFG: model YAML (configs/models/...)"},
        {"--weights", ARG_STR, &o.weights, "W: start from these weights (checkpoint: its EMA weights when it has them; or converted official)"},
        {"--data", ARG_STR, &o.data, "D: data set YAML (configs/data/...)"},
        {"--hyp", ARG_STR, &o.hyp, "H: hyperparameter YAML (default: the official hyp.scratch-high values)"},
        {"--epochs", ARG_INT, &o.epochs, "N: epochs (default 100)"},
        {"--batch", ARG_INT, &o.batch, "N: batch size (default 16)"},
        {"--nbs", ARG_INT, &o.nbs, "N: nominal batch: gradients accumulate to about N images (default 64)"},
        {"--img", ARG_INT, &o.img, "N: image size (default 640)"},
        {"--threads", ARG_INT, &threads, "N: compute threads (default GELAN_THREADS or all cores)"},
        {"--workers", ARG_INT, &o.workers, "N: data loader threads (default 2)"},
        {"--name", ARG_STR, &o.name, "NAME: run directory runs/NAME (default exp; exp2, exp3... when taken)"},
        {"--project", ARG_STR, &o.project, "DIR: parent of run directories (default runs)"},
        {"--exist-ok", ARG_FLAG, &o.exist_ok, "reuse runs/NAME instead of making a new one"},
        {"--seed", ARG_STR, &seed_text, "N: seed of initialisation, data order and augmentation (default 0)"},
        {"--resume", ARG_FLAG, &o.resume, "continue runs/NAME/last.safetensors exactly"},
        {"--close-mosaic", ARG_INT, &o.close_mosaic, "N: last N epochs without mosaic (default 15; N >= epochs: half)"},
        {"--cos-lr", ARG_FLAG, &cos_lr, "cosine LR schedule (default linear)"},
        {"--optimizer", ARG_STR, &optimizer, "SGD|AdamW (default SGD)"},
        {"--noval", ARG_FLAG, &o.noval, "validate only after the last epoch"},
        {"--max-batches", ARG_INT, &o.max_batches, "N: use only the first N batches of every epoch (quick runs)"},
        {"--qat", ARG_FLAG, &o.qat, "quantization-aware training (fake int8) from --weights (docs/QUANTIZATION.md)"},
        {"--exclude", ARG_STR, &o.qat_exclude, "L,...: with --qat, convs that stay float (7, 22.cv3, first, head-out)"},
        {"--sync-bn", ARG_FLAG, &o.sync_bn, "under mpirun: BN statistics over the global batch (default per rank)"},
        {"--dist-check", ARG_INT, &dist_check, "N: under mpirun, check every N optimizer steps that ranks agree"},
        {"--dist-timeout", ARG_FLOAT, &dist_timeout,
         "S: under mpirun, fail when a rank makes no progress for S seconds (default GELAN_DIST_TIMEOUT or 300)"},
    };
    int nspecs = (int)(sizeof specs / sizeof specs[0]);
    int rc = args_parse(argc, argv, USAGE, specs, nspecs, NULL, 0, NULL);
    if (rc) return rc == 1 ? 0 : rc;
    const char *why = NULL;
    if (!o.resume && !o.data)
        why = "--data is required";
    else if (!o.resume && !o.cfg && !o.weights)
        why = "give --cfg or --weights";
    else if (o.epochs < 1 || o.batch < 1 || o.nbs < 1 || o.img < 32)
        why = "--epochs, --batch, --nbs must be >= 1, --img >= 32";
    else if (threads < 0 || o.workers < 0 || o.close_mosaic < 0 || o.max_batches < 0 || dist_check < 0 ||
             dist_timeout < 0)
        why = "negative count";
    else if (strcmp(optimizer, "SGD") && strcmp(optimizer, "AdamW"))
        why = "--optimizer is SGD or AdamW";
    else if (o.qat_exclude && !o.qat)
        why = "--exclude is an option of --qat";
    if (seed_text) {
        char *end;
        unsigned long long s = strtoull(seed_text, &end, 10);
        if (!*seed_text || *end) why = "--seed wants a non-negative integer";
        o.seed = s;
    }
    if (why) {
        fprintf(stderr, "error: %s\n", why);
        args_usage(USAGE, specs, nspecs, false);
        return 2;
    }
    o.optimizer = strcmp(optimizer, "AdamW") ? OPTIM_SGD : OPTIM_ADAMW;
    o.lr_shape = cos_lr ? LR_COSINE : LR_LINEAR;
    o.dist_check = dist_check;
    if (dist_init()) {
        cli_fail("train");
        dist_abort(1); /* MPI may be half started: end every rank */
        return 1;
    }
    if (dist_timeout > 0) dist_set_timeout(dist_timeout);
    const bool root = dist_rank() == 0;
    /* ranks sharing a machine share its cores */
    if (!threads && dist_local_size() > 1 && !getenv("GELAN_THREADS")) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores / dist_local_size() > 1 ? (int)(cores / dist_local_size()) : 1;
    }
    pool_init(threads);
    TrainUi ui = {0};
    TrainCallbacks cb = {on_start, on_epoch_start, on_batch, on_val, on_epoch, &ui};
    TrainResult res;
    rc = train_run(&o, root ? &cb : NULL, &res);
    if (rc && dist_size() > 1) { /* name the rank, then end every rank: the others may wait for this one */
        fprintf(stderr, "gelan train: rank %d of %d: %s\n", dist_rank(), dist_size(), gelan_last_error());
        fflush(stderr);
        dist_abort(1);
    }
    if (!rc && root) {
        printf(
            "%d epoch%s completed; best fitness %.4f\nresults: %s/results.csv, %s/results.svg\nweights: "
            "%s/last.safetensors, %s/best.safetensors\n",
            res.epochs_done, res.epochs_done == 1 ? "" : "s", res.best_fitness, res.dir, res.dir, res.dir, res.dir);
    }
    map_result_free(&res.last_val);
    pool_shutdown();
    if (!rc) dist_finalize();
    return rc ? cli_fail("train") : 0;
}
