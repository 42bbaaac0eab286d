/* stage: what a pipeline stage sees, for whoever adds one.
 *
 * Adding a stage (say, the PPO baseline of issue 7):
 *   1. its options section: a member in pipeline_config_t and a PIPELINE_SECTION row in
 *      config.c (the stage's module provides X_opts_default/from_json/to_json);
 *   2. a function  int stage_baseline(pipeline_ctx_t *c, err_t *e)  that reads what it
 *      needs through the helpers below and writes its files into c->dir;
 *   3. in stages.c, fill in the row that already names the stage: .run, .sections (the
 *      config sections it reads), .after (the stages whose outputs it reads).
 * The runner does the rest: headers, caching, stage.json, run.json, the summary.
 */
#ifndef MXRLHF_PIPELINE_STAGE_H
#define MXRLHF_PIPELINE_STAGE_H

#include <stdbool.h>

#include "backend/backend.h"
#include "data/hh.h"
#include "data/split.h"
#include "pipeline/config.h"
#include "pipeline/pipeline.h"
#include "util/err.h"

typedef struct pipeline_ctx pipeline_ctx_t;

typedef struct pipeline_stage {
    const char *name;      /* its directory under the output, its key in run.json        */
    const char *title;     /* the header line                                             */
    const char *sections;  /* config sections it reads, comma separated ("model,pretrain") */
    const char *after;     /* stages whose outputs it reads, comma separated              */
    bool compute;          /* runs the model: the backend is part of its inputs           */
    int (*run)(pipeline_ctx_t *c, err_t *e);   /* NULL: not built yet                     */
    /* A directory the user gave that replaces this stage's output (the stage is then
     * skipped), or NULL. */
    const char *(*replaced_by)(const pipeline_run_opts_t *o);
    /* A file or directory outside the output that the stage reads (--data, the given
     * model's tokenizer.json) written into buf, or NULL; its fingerprint is an input. */
    const char *(*external)(const pipeline_run_opts_t *o, char *buf, size_t cap);
    const char *later;     /* for a stage not built yet: what it will do and which issue  */
} pipeline_stage_t;

struct pipeline_ctx {
    const pipeline_config_t *cfg;
    const pipeline_run_opts_t *opts;
    const pipeline_stage_t *stage;
    const char *dir;       /* this stage's output directory (created, empty of stale output) */
    const rlhf_log_t *log;
    /* private to the runner */
    backend_t *be;
    bool data_loaded;
    data_hh_t hh;
    data_split_record_t rec;
    const data_pair_t **split[DATA_NSPLITS];  /* cached lists of pipeline_split_pairs */
    size_t nsplit[DATA_NSPLITS];
    char dirs[PIPELINE_MAX_STAGES][512];  /* output directory of each stage, by table index */
};

/* The backend (opened on first use, shared by all stages of the run). */
int pipeline_backend(pipeline_ctx_t *c, backend_t **be, err_t *e);

/* The output directory of an earlier stage (its own, or the directory the user gave in
 * its place); NULL when the stage has not run in this chain. */
const char *pipeline_stage_dir(const pipeline_ctx_t *c, const char *stage);

/* The pairs of one split of the data stage's draw (the list and the pairs belong to the
 * run: valid until it ends; do not free). */
int pipeline_split_pairs(pipeline_ctx_t *c, data_split_t split, const data_pair_t ***pairs,
                         size_t *n, err_t *e);

/* The pairs file the data stage drew from: the --data file or <output>/data/pairs.jsonl. */
const char *pipeline_pairs_path(const pipeline_ctx_t *c, char *buf, size_t cap);

/* The stage table (stages.c) and its length. */
extern const pipeline_stage_t pipeline_stages[];
extern const int pipeline_nstages;

#endif
