/* config: the one configuration file of a run. It aggregates every stage's options
 * section; `mxrlhf config` prints the defaults and every run saves the one it used.
 *
 *   {"format": "mxrlhf-config", "version": 1,
 *    "data": {...}, "tokenizer": {...}, "model": {...}, "pretrain": {...},
 *    "sft": {...}, "rm": {...}, "judge": {...}}
 *
 * A file may name a preset ("preset": "gpu", pipeline/preset.h): reading it then starts
 * again from the defaults and that preset, and the file's sections apply over them.
 *
 * The sections are a table (pipeline_sections): each row names a member of
 * pipeline_config_t and the section's options table (util/opts.h), which lives in the
 * stage's own module (rlhf_sft_opts_table, ...) and holds every key's type, default, range
 * and help. Adding a stage's section is one member in pipeline_config_t and one SECTION row
 * in config.c. Reading a file: missing sections and keys keep their defaults; an unknown
 * or repeated section or key, a wrong type or a value out of range is ERR_INPUT naming the
 * file, the section and the key.
 */
#ifndef MXRLHF_PIPELINE_CONFIG_H
#define MXRLHF_PIPELINE_CONFIG_H

#include <cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "data/split.h"
#include "dist/dist.h"
#include "pipeline/baseline.h"
#include "pipeline/compare.h"
#include "profile/phase.h"
#include "profile/policies.h"
#include "profile/sensitivity.h"
#include "rlhf/ppo.h"
#include "rlhf/rm.h"
#include "rlhf/sft.h"
#include "util/err.h"
#include "util/opts.h"

#define PIPELINE_CONFIG_FORMAT "mxrlhf-config"
#define PIPELINE_CONFIG_VERSION 1

/* "data": what the data stage draws (data/split.h, data/synth.h). */
typedef struct pipeline_data_opts {
    long pairs;                 /* HH-RLHF file: pairs drawn                              */
    long synth_pairs;           /* embedded default: synthetic pairs generated            */
    long corpus_docs;           /* embedded default: pretraining documents generated      */
    uint64_t seed;
    long max_prompt_tokens, max_response_tokens;  /* over-long rule, in whitespace words  */
    double fractions[DATA_NSPLITS];               /* rm_train, rm_eval, judge_train, ...  */
    bool skip_bad;              /* count malformed lines of an HH file instead of failing */
} pipeline_data_opts_t;

extern const opt_table_t pipeline_data_opts_table;

/* "tokenizer": the BPE vocabulary trained for the embedded default (tokenizer.h). */
typedef struct pipeline_tokenizer_opts {
    long vocab_size;     /* total, the 3 special tokens included */
    long min_frequency;
} pipeline_tokenizer_opts_t;

extern const opt_table_t pipeline_tokenizer_opts_table;

/* Every section. Later stages (ppo, sensitivity, policies, compare) add theirs here. */
typedef struct pipeline_config {
    pipeline_data_opts_t data;
    pipeline_tokenizer_opts_t tokenizer;
    rlhf_model_opts_t model;
    rlhf_pretrain_opts_t pretrain;
    rlhf_sft_opts_t sft;
    rlhf_rm_opts_t rm;
    rlhf_rm_opts_t judge;
    ppo_opts_t ppo;
    pipeline_baseline_opts_t baseline;
    sensitivity_opts_t sensitivity;
    phase_sensitivity_opts_t phase_sensitivity;
    policies_opts_t policies;
    compare_opts_t compare;
    dist_opts_t dist;
    char preset[16];   /* the preset the values started from (pipeline/preset.h); "": the
                        * built-in defaults ("cpu"). Written to and read from the file as
                        * "preset" when not empty. */
} pipeline_config_t;

typedef struct pipeline_section {
    const char *name;          /* key in the file */
    const char *what;          /* one line for `mxrlhf config --help` and docs */
    size_t off;                /* offsetof(pipeline_config_t, member) */
    const opt_table_t *table;  /* its keys (util/opts.h) */
} pipeline_section_t;

extern const pipeline_section_t pipeline_sections[];
extern const int pipeline_nsections;

const pipeline_section_t *pipeline_section_find(const char *name);

void pipeline_config_default(pipeline_config_t *c);

/* Reads a whole config document over the current values (start from defaults). */
int pipeline_config_from_json(const cJSON *root, const char *ctx, pipeline_config_t *c, err_t *e);
int pipeline_config_load(const char *path, pipeline_config_t *c, err_t *e);

cJSON *pipeline_config_to_json(const pipeline_config_t *c);
int pipeline_config_write(const char *path, const pipeline_config_t *c, err_t *e);

/* One section as JSON (NULL for an unknown name). */
cJSON *pipeline_section_json(const pipeline_config_t *c, const char *name);

/* Applies one "section.key=value" override (value parsed as JSON, or taken as a string
 * when it is not JSON), as `--set` on the command line does. */
int pipeline_config_set(pipeline_config_t *c, const char *assignment, err_t *e);

#endif
