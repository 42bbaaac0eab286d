/* phase: per-layer MX sensitivity by RLHF phase (issue 9; docs/sensitivity.md, "Phase
 * sensitivity").
 *
 * The perplexity matrix (sensitivity.h) asks how much a layer's forward quantization hurts
 * next-token prediction. The study's question is whether a layer's tolerance depends on
 * the phase of RLHF it is quantized in, so each phase gets the measurement that phase
 * cares about, with one layer at a time quantized in each MX format and block size:
 *
 *   rollout   the policy's layer (forward weight and input, phase rollout) while it
 *             samples responses to fixed prompts with the same random numbers in every
 *             cell: the KL of the quantized policy to the unquantized one on those
 *             samples (per response, summed over its tokens, exact over the vocabulary),
 *             and the unquantized reward model's mean score of the samples;
 *   reward    the reward model's layer (forward weight and input, phase reward): accuracy
 *             on evaluation pairs and the Spearman rank correlation of its scores of every
 *             chosen and rejected sequence with the unquantized model's;
 *   gradient  the policy's layer in the gradient phase (the plan's gradient-phase operands:
 *             all six by default, or the four backward ones): the cosine similarity and
 *             relative error of the raw gradient of the mean token NLL on evaluation tokens
 *             (not an optimizer update) to the float32 gradient.
 *
 * Each phase writes one CSV in the matrix's layout (the study's first seven columns with
 * this phase's metrics in place of ppl and delta_pct, then <format>_g<k>_<metric> ... and
 * <format>_g<k>_tolerant for every pair), a summary (baseline and whole-model rows), a
 * resume record and a run record. Every cell is a pure function of the models, the data
 * and the spec (the CPU backend gives the same bits for any thread count), so the files do
 * not depend on the number of workers and a resumed sweep writes the same files.
 */
#ifndef MXRLHF_PROFILE_PHASE_H
#define MXRLHF_PROFILE_PHASE_H

#include <cJSON.h>
#include <stdbool.h>

#include "data/data.h"
#include "mx/mx.h"
#include "precision/precision.h"
#include "profile/sensitivity.h"
#include "rlhf/ppo.h"
#include "rlhf/rm.h"
#include "util/err.h"

typedef enum phase_grad_operands {
    PHASE_GRAD_ALL,       /* "all": the six gradient-phase operands (forward weight and input
                             of the training forward, and the four backward ones) */
    PHASE_GRAD_BACKWARD   /* "backward": weight_bp, grad_output_dx, input_bp, grad_output_dw */
} phase_grad_operands_t;

/* The stage's options (the "phase_sensitivity" section of the configuration file; defaults,
 * ranges and help in phase.c's table). */
typedef struct phase_sensitivity_opts {
    /* formats, blocks, rounding, scale, workers, backend as the matrix's; its evaluation
       keys (score, template, max_*_tokens, batch_tokens, split, and eval_tokens with a
       smaller default) make the gradient phase's token set, and `split` names the split of
       a split record every phase reads. threshold_pct and two_sided are not keys of this
       section (they keep the matrix's defaults). */
    sensitivity_opts_t sweep;
    int rollout_prompts;              /* prompts sampled per cell */
    int rollout_max_new_tokens;
    double rollout_max_kl;            /* tolerant: kl < this (nats per response) */
    int reward_pairs;                 /* evaluation pairs (0: all) */
    int reward_batch;                 /* pairs per forward */
    double reward_max_accuracy_drop;  /* tolerant: accuracy falls by less (points) ... */
    double reward_min_spearman;       /* ... and spearman > this */
    int gradient_operands;            /* phase_grad_operands_t */
    double gradient_min_cosine;       /* tolerant: cosine > this */
} phase_sensitivity_opts_t;

extern const opt_table_t phase_sensitivity_opts_table;
void phase_sensitivity_opts_default(phase_sensitivity_opts_t *o);
int phase_sensitivity_opts_check(const phase_sensitivity_opts_t *o, const char *ctx, err_t *e);
/* The key of a phase's tolerance threshold (`mxrlhf sensitivity --phase P --threshold X`). */
const char *profile_phase_threshold_key(prec_phase_t ph);

/* ---- what a cell measures ------------------------------------------------------------- */

/* Every cell stores two numbers:
 *   rollout   kl (mean over samples of the per-response KL), reward (mean score)
 *   reward    accuracy (share of pairs with chosen > rejected), spearman
 *   gradient  cosine, rel_error (|g - g32| / |g32|)
 * The CSV derives reward_delta (rollout) and accuracy_delta (reward, in points) from the
 * baseline. */
#define PHASE_NVALUES 2
#define PHASE_MAX_COLUMNS 3

/* The CSV metric names of a phase (ncols of them, e.g. "kl", "reward", "reward_delta"). */
int profile_phase_columns(prec_phase_t ph, const char *const **names);
/* The CSV metrics of a cell from its values and the baseline's. */
void profile_phase_derive(prec_phase_t ph, const double *v, const double *base, double *cols);
/* The phase's tolerance rule (docs/sensitivity.md); non-finite values are never tolerant. */
bool profile_phase_tolerant(const phase_sensitivity_opts_t *o, prec_phase_t ph, const double *v,
                            const double *base);
/* ---- a measuring session -------------------------------------------------------------- */

typedef struct profile_phase_inputs {
    const char *model_dir;            /* the policy (rollout, gradient): HF directory with
                                         tokenizer.json */
    const char *reward_dir;           /* the reward model (rollout scores samples with it,
                                         reward profiles it) */
    const data_pair_t *const *pairs;  /* evaluation pairs: rollout takes their prompts,
                                         reward the pairs, gradient prompt + chosen */
    size_t npairs;
    const ppo_opts_t *ppo;            /* rollout's sampling as PPO's (temperature, top_k,
                                         top_p, min_new_tokens, max_prompt_tokens, template,
                                         seed); NULL: PPO's defaults */
    const rlhf_rm_opts_t *rm;         /* how the reward model reads text (template,
                                         max_prompt/response_tokens); NULL: defaults */
} profile_phase_inputs_t;

typedef struct profile_phase profile_phase_t;

/* Loads the data and `nworkers` copies of the models on the options' backend and measures
 * the unquantized baseline (its reference samples, scores or gradient are kept for the
 * cells). ERR_INPUT for missing models, data or a reward directory without a score head. */
int profile_phase_open(prec_phase_t ph, const phase_sensitivity_opts_t *o,
                       const profile_phase_inputs_t *in, int nworkers, profile_phase_t **out,
                       err_t *e);
void profile_phase_close(profile_phase_t *p);

/* The profiled layers, in table order (the policy's, lm_head included, for rollout and
 * gradient; the reward model's trunk for reward). */
int profile_phase_nlayers(const profile_phase_t *p);
const char *profile_phase_layer(const profile_phase_t *p, int i);
/* The baseline's values (rollout: kl 0 and the reward of the unquantized samples; reward:
 * the unquantized accuracy and spearman 1; gradient: cosine 1, rel_error 0). */
const double *profile_phase_baseline(const profile_phase_t *p);
/* What the session measured on (for the run record). */
cJSON *profile_phase_describe(const profile_phase_t *p);

/* One measurement on worker w: `layer` alone (NULL: every profiled layer) quantized to
 * spec in this phase (spec NULL: nothing quantized); values receives PHASE_NVALUES
 * numbers. The model's table is unquantized again afterwards. */
int profile_phase_measure(profile_phase_t *p, int w, const char *layer, const mx_spec_t *spec,
                          double *values, err_t *e);

/* ---- the sweep ------------------------------------------------------------------------ */

typedef struct profile_phase_progress {
    long done, total, resumed;   /* cells */
    const char *what;            /* the layer, or "whole_model" */
    const char *spec;
    char values[160];            /* "kl 0.0123, reward 0.512 (-0.004)" */
    double elapsed_s, left_s;    /* left: from the work done so far */
} profile_phase_progress_t;

typedef void (*profile_phase_progress_fn)(void *ctx, const profile_phase_progress_t *p);

typedef struct profile_phase_matrix {
    prec_phase_t phase;
    int nlayers;
    char **layers;
    int nformats, nblocks;
    mx_format_t formats[SENS_MAX_FORMATS];
    int blocks[SENS_MAX_BLOCKS];
    mx_round_t round;
    mx_scale_rule_t scale;
    double *v;                   /* [layer][format][block][PHASE_NVALUES] */
    double whole[SENS_MAX_FORMATS][SENS_MAX_BLOCKS][PHASE_NVALUES];
    double base[PHASE_NVALUES];
    uint64_t fingerprint;        /* models, data and settings (the resume record's key) */
    double wall_s, measure_s;    /* this process's work; measure_s summed over workers */
    long cells_run, cells_resumed;
    int workers;
} profile_phase_matrix_t;

void profile_phase_matrix_free(profile_phase_matrix_t *mx);
const double *profile_phase_cell(const profile_phase_matrix_t *mx, int layer, int fi, int bj);

/* Every layer x format x block cell and the whole-model cells, spread over the session's
 * workers; finished cells go to cells_path (JSONL, fsynced per line); with resume, the
 * cells of a record made for the same models, data and settings are reused (another
 * record is ERR_INPUT). */
int profile_phase_sweep(profile_phase_t *p, const char *cells_path, bool resume,
                        profile_phase_progress_fn progress, void *pctx,
                        profile_phase_matrix_t *out, err_t *e);

/* The CSVs (atomically). */
int profile_phase_write_csv(const profile_phase_matrix_t *mx, const phase_sensitivity_opts_t *o,
                            const char *path, err_t *e);
int profile_phase_write_summary(const profile_phase_matrix_t *mx,
                                const phase_sensitivity_opts_t *o, const char *path, err_t *e);

/* ---- the stage ------------------------------------------------------------------------ */

typedef struct profile_phase_paths {
    const char *model_dir;       /* the policy (rollout, gradient) */
    const char *reward_dir;      /* the reward model (rollout, reward) */
    const char *eval_path;       /* HH-RLHF .jsonl(.gz) or split record (its `split`) */
    const data_pair_t *const *pairs;  /* or the pairs, already loaded */
    size_t npairs;
    const char *eval_desc;
    const ppo_opts_t *ppo;       /* NULL: defaults */
    const rlhf_rm_opts_t *rm;    /* NULL: defaults */
    const char *output;          /* sensitivity_<phase>.csv; the others go beside it */
    bool resume;
} profile_phase_paths_t;

typedef struct profile_phase_result {
    int layers, workers;
    long cells_run, cells_resumed;
    double base[PHASE_NVALUES];
    double wall_s, measure_s;
    int tolerant[2];             /* layers tolerant at mxfp4_e2m1/8 and mxfp8_e4m3/8 */
} profile_phase_result_t;

/* The whole stage for one phase: load, measure, write sensitivity_<phase>.csv,
 * sensitivity_<phase>_summary.csv, sensitivity_<phase>_cells.jsonl and
 * sensitivity_<phase>_metrics.json. res may be NULL. */
int profile_phase_run(prec_phase_t ph, const phase_sensitivity_opts_t *o,
                      const profile_phase_paths_t *pa, profile_phase_progress_fn progress,
                      void *pctx, profile_phase_result_t *res, err_t *e);

#endif
