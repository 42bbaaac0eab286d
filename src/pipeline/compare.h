/* compare: PPO under each precision plan against the unquantized baseline
 * (`mxrlhf compare --policies results/policies.json --output results/`, issue 9).
 *
 * The runs. The unquantized baseline (no plan), the control plan (policies.json's
 * "baseline": the unquantized computation under a plan's name) and the plans A-D are each
 * trained with PPO for `steps` steps from the same SFT policy on the same prompts, for
 * `seeds` seeds (the PPO seed + 0, 1, ...). Each run is pipeline_baseline_run — PPO inside
 * the energy monitor, exactly as `mxrlhf baseline` — into runs/<NN>-<plan>-seed<S>/. Runs
 * are interleaved seed-major: round r runs every plan once with seed r, and the order
 * within a round is rotated by r (round 0: unquantized, control, A, B, C, D; round 1:
 * control, A, B, C, D, unquantized; ...), so slow drift (temperature, clocks, other load)
 * falls on every plan alike and no plan always runs first. Before and after each run the
 * devices' clocks and temperature are read where the source gives them (NVML), and the
 * 1-minute load average always.
 *
 * The measurements, per plan (policy_comparison.csv; docs/compare.md lists the columns):
 *  - runtime and measured energy of each phase (the run's energy.csv), mean and 95%
 *    interval over seeds, and their ratio to the unquantized run of the same seed; energy
 *    cells are empty without a sensor (never estimated);
 *  - whether the plan's formats ran natively or were emulated in higher precision;
 *  - modelled memory traffic and multiply-accumulates at the plan's formats and in bf16
 *    (profile/modelled.h), from the model shapes and each run's token counts;
 *  - final reward (the trained reward model's score, under the plan's reward phase, on the
 *    final evaluation's held-out samples) and KL to the reference (the same samples);
 *  - RM accuracy: the reward model under the plan's reward phase on the first rm_eval_pairs
 *    rm_eval pairs (a property of the plan, not of the PPO seed: its interval is binomial);
 *  - win rate of the plan's final held-out samples against the unquantized run's of the
 *    same seed, prompt by prompt, judged by the held-out judge reward model (unquantized),
 *    and on the synthetic task by the exact ground-truth score; ties count half, identical
 *    texts are ties.
 * The control check (profile/compare.h): the control's win rates must be exactly 0.5 on
 * every seed (failing that is an error: the harness is broken) and its energy ratio near 1
 * (reported; without a sensor, not checked).
 *
 * Files: policy_comparison.csv, compare_runs.csv (one row per run, in run order),
 * comparison.json (options, order, provenance, the control check, per-run records), and
 * runs/ (each run's files; the trained weights and checkpoints are removed unless
 * keep_models).
 */
#ifndef MXRLHF_PIPELINE_COMPARE_H
#define MXRLHF_PIPELINE_COMPARE_H

#include <cJSON.h>
#include <stdbool.h>
#include <stdio.h>

#include "data/data.h"
#include "rlhf/ppo.h"
#include "rlhf/rm.h"
#include "util/err.h"

#define COMPARE_MAX_PLANS 8
#define COMPARE_CSV "policy_comparison.csv"
#define COMPARE_RUNS_CSV "compare_runs.csv"
#define COMPARE_JSON "comparison.json"
#define COMPARE_UNQUANTIZED "unquantized"

typedef enum { COMPARE_ORDER_ROTATE, COMPARE_ORDER_FIXED } compare_order_t;

/* The "compare" section of the configuration file. PPO's own options come from "ppo";
 * steps, seed, eval_prompts, checkpoint_every (0), best_of_n (0) and eval_every (0) are
 * set here. */
typedef struct compare_opts {
    int seeds;
    int steps;                /* shorter than the baseline's, to fit the chain's time */
    char plans[256];          /* plans of policies.json, in order */
    char control[64];         /* the control plan (must be among plans) */
    char reference[64];       /* "": the unquantized runs compute in fp32 with no plan; or a
                               * plan of policies.json they run under instead (on a GPU,
                               * "bf16": the study's baseline is bf16 autocast, and fp32
                               * GEMMs would flatter every 16-bit and MX plan) */
    int order;                /* compare_order_t */
    int eval_prompts;         /* held-out prompts for the final samples */
    long rm_eval_pairs;       /* rm_eval pairs for RM accuracy (0: all) */
    char power_source[128];
    double interval_ms;
    double idle_s;            /* idle power before each run (skipped without a sensor) */
    double tolerance;         /* the control's energy ratio within 1 +- this */
    int warmup_steps;         /* a PPO run of this many steps under the reference's
                               * computation before the rounds, not recorded (a fresh GPU's
                               * first run is slower, and would bias whichever plan ran
                               * first); 0: none */
    bool warmup_each_plan;    /* true: that warm-up once under every plan's computation as
                               * well, so no plan's first recorded run pays its one-time costs
                               * (cuDNN building the plans of a 16-bit attention, decoding
                               * graphs, packed weights) */
    double calibrate_s;       /* 0: off; else each run calibrates each phase's steady power
                               * for this many seconds (mxrlhf baseline --calibrate), so its
                               * energy.csv can use it where the per-step windows are short */
    bool keep_models;         /* false: remove each run's policy/ and checkpoints/ */
} compare_opts_t;

/* The "compare" section (defaults, ranges and help in compare.c's table). */
extern const opt_table_t compare_opts_table;
void compare_opts_default(compare_opts_t *o);

/* What the runs work on. */
typedef struct pipeline_compare {
    backend_t *be;
    const char *backend_name;            /* the device as given ("cpu", "cuda:1"), recorded */
    const char *policy_dir, *reward_dir, *judge_dir;
    const char *policies_path;
    const char *const *prompts;          /* ppo_prompts */
    size_t n_prompts;
    const char *const *eval_prompts;     /* eval_prompts (held out) */
    size_t n_eval;
    const data_pair_t *const *rm_eval;   /* rm_eval pairs (RM accuracy) */
    size_t n_rm_eval;
    bool synthetic;
    const rlhf_rm_opts_t *rm_opts, *judge_opts;  /* batch size, template, lengths */
    const char *devices;                 /* GPUs to measure (NULL: all visible) */
    const char *out_dir;
    FILE *log;                           /* progress (NULL: quiet) */
} pipeline_compare_t;

typedef struct pipeline_compare_result {
    int runs;
    double seconds;
    bool control_ok;
    char control_message[640];
} pipeline_compare_result_t;

/* Runs the comparison and writes its files. ERR_FAIL when the control plan's win rate is
 * not exactly 0.5 (after every file is written); PPO's and the monitor's errors as they
 * come. */
int pipeline_compare_run(const compare_opts_t *co, const ppo_opts_t *ppo,
                         const pipeline_compare_t *c, pipeline_compare_result_t *res, err_t *e);

/* Splits compare_opts_t.plans ("baseline, A,B") into names; returns the count or -1 (and
 * e) for an empty name or more than max. */
int compare_plan_list(const char *list, char names[][64], int max, err_t *e);

#endif
