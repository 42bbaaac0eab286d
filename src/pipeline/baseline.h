/* baseline: the study's step 1 (`mxrlhf baseline --steps 100 --output results/gpu_baseline`):
 * PPO (rlhf/ppo.h) with the energy monitor around it, so that rollout, reward inference
 * and gradient update are measured phase by phase, then the study's files and plots.
 *
 * Writes into the output directory, besides what rlhf_ppo_run writes
 * (training_stats.json ...): power_log_baseline.csv, phase_timing.json and energy.csv
 * (the energy layer's, docs/energy.md), and four SVG charts: reward_by_step.svg (reward
 * model score, and the ground truth on the synthetic task), kl_by_step.svg (per-sequence KL
 * and the KL coefficient), losses_by_step.svg (policy, value, total loss) and
 * power_over_time.svg (power per device with the phase windows shaded).
 *
 * With calibration (option calibrate), once PPO has written its outputs and while the
 * monitor still runs, each phase's work is repeated for calibrate_s seconds of steady
 * time (rlhf_ppo_io_t.calibrate), so energy.csv can use the phases' steady power where
 * the per-step windows are too short to measure (docs/energy.md, "Calibration").
 */
#ifndef MXRLHF_PIPELINE_BASELINE_H
#define MXRLHF_PIPELINE_BASELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cJSON.h>

#include "rlhf/ppo.h"
#include "util/err.h"

/* The "baseline" section of the configuration file: what the baseline stage adds to the
 * "ppo" section's options. Off by default: calibration adds about 3 x calibrate_s. */
typedef struct pipeline_baseline_opts {
    bool calibrate;
    double calibrate_s;   /* steady time per phase */
} pipeline_baseline_opts_t;

extern const opt_table_t pipeline_baseline_opts_table;

typedef struct pipeline_baseline {
    backend_t *be;                        /* where the models run (the caller opens it) */
    const char *policy_dir, *reward_dir;  /* the SFT policy and the reward model */
    const char *ref_dir, *critic_dir;     /* NULL: the policy / the reward model */
    const char *const *prompts;           /* PPO prompts (the data's ppo_prompts split) */
    size_t n_prompts;
    const char *const *eval_prompts;      /* held-out prompts (eval_prompts split) */
    size_t n_eval;
    bool synthetic;                       /* the synthetic task: ground-truth scores */
    const char *out_dir;
    const char *power_source;             /* auto, nvml, rapl, none, replay:FILE */
    const char *devices;                  /* GPUs to measure (NULL: all visible) */
    double interval_s;                    /* sampling interval (0: 0.02) */
    double idle_s;                        /* idle power measured before the run */
    const char *policies_path, *plan;     /* precision plan for every phase, or NULL */
    pipeline_baseline_opts_t opts;        /* all zero: no calibration */
    bool resume;
    FILE *log;                            /* progress (NULL: quiet) */
    const ppo_data_opts_t *data;          /* how the prompts were drawn (rlhf_ppo_io_t) */
    /* ranks (NULL: this process alone): rank 0 runs the monitor over every rank's GPU
     * (devices NULL: CUDA indices 0 .. ranks-1, matched to NVML by PCI bus id) and writes the
     * energy files, summed over the GPUs with per-GPU columns in phase_timing.json; ranks
     * r > 0 train without a monitor (docs/distributed.md) */
    dist_comm_t *comm;
} pipeline_baseline_t;

/* Runs the stage. ERR_UNAVAILABLE when an explicitly named power source is missing; the
 * PPO run's own errors otherwise. */
int pipeline_baseline_run(const ppo_opts_t *o, const pipeline_baseline_t *b,
                          rlhf_ppo_result_t *res, err_t *e);

/* The four charts from a results directory holding training_stats.json and, for the power
 * chart, power_log_baseline.csv + phase_timing.json (skipped when absent). */
int pipeline_baseline_plots(const char *dir, err_t *e);

#endif
