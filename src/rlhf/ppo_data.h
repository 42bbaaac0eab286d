/* ppo_data: the prompts a PPO run trains and is evaluated on, drawn the way every stage
 * draws its data (data/split.h): N pairs with the data seed, split disjoint by prompt; PPO
 * trains on the ppo_prompts split and is evaluated on eval_prompts, so neither overlaps
 * the reward model's training pairs.
 *
 * Sources: an HH-RLHF file (.jsonl or .jsonl.gz), or the synthetic task (data/synth.h),
 * whose pairs are generated into the work directory first. Token counts for the
 * over-long rule come from the policy's tokenizer (rlhf/text.h).
 */
#ifndef MXRLHF_RLHF_PPO_DATA_H
#define MXRLHF_RLHF_PPO_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rlhf/text.h"
#include "util/err.h"

typedef struct ppo_prompts {
    char **train, **eval;      /* prompt texts (HH shape) */
    size_t ntrain, neval;
    bool synthetic;            /* ground-truth scores apply */
    char *pairs_path;          /* the pairs file the split was drawn from */
} ppo_prompts_t;

typedef struct ppo_data_opts {
    const char *data_path;     /* NULL: the synthetic task */
    bool synthetic;            /* data_path holds synthetic-task pairs (mxrlhf data synth) */
    size_t pairs;              /* N drawn (1000) */
    uint64_t seed;             /* data seed (1234, the data layer's default) */
    const char *tokenizer_path;
    rlhf_template_t tmpl;
    const char *work_dir;      /* synthetic pairs and split.json are written here */
} ppo_data_opts_t;

/* Draws, splits, writes work_dir/split.json, and returns the two prompt lists. */
int ppo_prompts_load(const ppo_data_opts_t *o, ppo_prompts_t *out, err_t *e);
void ppo_prompts_free(ppo_prompts_t *p);

#endif
