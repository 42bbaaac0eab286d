/* pipeline: `mxrlhf run` — the chain of stages on the embedded default (the synthetic
 * task and a tiny model pretrained from scratch) or on a user's HH-RLHF file and model
 * directory, each stage's output cached in its own directory.
 *
 *   data -> tokenizer -> pretrain -> sft -> rm -> judge -> (baseline, sensitivity,
 *   policies, compare, report: later issues)
 *
 * Caching. A stage's inputs are its config sections, the outputs of the stages it reads
 * and the external files it reads (--data, --model). Their digest is kept with the stage's
 * output fingerprints in <output>/<stage>/stage.json. A stage is reused when that file
 * exists, records the same input digest, and every file it lists is still there with the
 * same size and CRC-32; otherwise it runs again (its old stage.json removed first, so an
 * interrupted stage is never mistaken for a finished one). A stage's output digest is
 * taken over its product files (everything in its directory except stage.json,
 * train_log.csv and *metrics.json, which hold timings): a stage that re-runs and produces
 * the same files leaves the later stages' inputs unchanged.
 *
 * Stages are rows of a table (stages.c, pipeline/stage.h); a row whose run function is
 * NULL is a stage not built yet, which `mxrlhf run` names at the end.
 */
#ifndef MXRLHF_PIPELINE_PIPELINE_H
#define MXRLHF_PIPELINE_PIPELINE_H

#include <stdbool.h>

#include "pipeline/config.h"
#include "rlhf/train_common.h"
#include "util/err.h"

typedef struct pipeline_run_opts {
    const char *output;      /* results directory ("results")                              */
    const char *data;        /* an HH-RLHF .jsonl(.gz), or NULL: the synthetic task        */
    const char *model;       /* a base model directory (no pretraining), or NULL           */
    const char *sft_model;   /* a fine-tuned model directory (no pretraining, no SFT)       */
    const char *until;       /* last stage to run, or NULL: every built stage              */
    const char *backend;     /* "cpu" (NULL: "cpu")                                        */
    bool force;              /* run every stage even when its output is valid              */
    double stop_after_s;     /* > 0: start no stage after this many seconds of the run (a
                                stage whose cached output is valid is still reused), so that
                                a call with a time limit ends between stages; 0: no limit  */
    rlhf_log_t log;          /* progress lines                                             */
} pipeline_run_opts_t;

typedef enum pipeline_status {
    PIPELINE_RAN,
    PIPELINE_REUSED,
    PIPELINE_SKIPPED,      /* replaced by a directory the user gave (--model, --sft-model) */
    PIPELINE_NOT_REACHED,  /* after --until, or not started after --stop-after's time         */
    PIPELINE_NOT_BUILT,    /* a later issue builds it                                        */
    PIPELINE_FAILED        /* the stage that stopped the run (its stage.json is not written) */
} pipeline_status_t;

const char *pipeline_status_name(pipeline_status_t s); /* "ran", "reused", ... */

#define PIPELINE_MAX_STAGES 24

typedef struct pipeline_stage_report {
    const char *name, *title;
    pipeline_status_t status;
    double seconds;          /* of this run (ran) or of the run that made it (reused)     */
    double cpu_seconds;      /* CPU time (user + system, all threads) of that run          */
    char dir[512];           /* where its output is                                       */
    char note[256];          /* why skipped / which issue builds it                        */
} pipeline_stage_report_t;

typedef struct pipeline_report {
    int n;
    pipeline_stage_report_t stage[PIPELINE_MAX_STAGES];
} pipeline_report_t;

/* Runs the chain. Writes <output>/config.json (the configuration used) first and
 * <output>/run.json (the report) last. On failure the report covers the stages up to the
 * failing one. */
int pipeline_run(const pipeline_config_t *cfg, const pipeline_run_opts_t *o,
                 pipeline_report_t *rep, err_t *e);

/* Stage names in table order (for --until and help texts); NULL-terminated. */
const char *const *pipeline_stage_names(void);

#endif
