/* policies: the study's precision policies A-D, derived from a sensitivity matrix and
 * written as precision plans in policies.json (docs/policies.md; the rules in
 * docs/sensitivity.md).
 *
 * The study's table, and what this module makes of it (block size B, default 32):
 *
 *   plan      rollout                reward                 gradient
 *   A         MXFP8 all              MXFP8 all              FP16 all
 *   B         MXFP4 tolerant,        as rollout             FP16 all
 *             MXFP8 sensitive
 *   C         MXFP4 all              MXFP4 all              MXFP8 sensitive, MXFP4 rest
 *   D         MXFP4 (most)           MXFP8 (most)           FP16 (most)
 *   baseline  unquantized            unquantized            fp32 (the control)
 *
 * MXFP8 is mxfp8_e4m3/B, MXFP4 mxfp4_e2m1/B, each with the options' rounding and scale
 * rule; in rollout and reward they apply to the forward weight and input of every
 * linear layer (the matrix's layers: q, k, v, o, gate, up, down of each block and the
 * lm_head). "FP16" is the gradient phase's compute type fp16 with dynamic loss scaling
 * (bf16 selectable), MX not used; "(most)" means: the same rule as B's split, and for
 * the gradient phase the mixed-precision reading (GEMMs in FP16, everything else fp32).
 *
 * Per-layer tolerance does not compose, so the splits are built greedily under a
 * whole-model budget (whole-model delta_pct < budget_factor x threshold):
 *   G4 (B's rollout/reward, C's gradient, D's rollout): start with every layer MXFP8; try
 *      the layers whose own MXFP4 delta is tolerant, smallest delta first (ties: table
 *      order), each moved to MXFP4 if the whole model stays within budget. The layers
 *      left at MXFP8 are the "sensitive" ones.
 *   G8 (D's reward): start unquantized; try the MXFP8-tolerant layers the same way.
 * Every plan's combined perplexity, per phase, is measured (forward passes with the
 * plan's forward operands and compute type) and written beside the plans.
 */
#ifndef MXRLHF_PROFILE_POLICIES_H
#define MXRLHF_PROFILE_POLICIES_H

#include <cJSON.h>
#include <stdbool.h>

#include "mx/mx.h"
#include "precision/precision.h"
#include "profile/evalset.h"
#include "profile/sensitivity.h"
#include "util/err.h"

/* The stage's options (the "policies" section of the configuration file). */
typedef struct policies_opts {
    profile_eval_opts_t eval;         /* the evaluation set (as the sensitivity stage's) */
    int block;                        /* MX block size of every plan */
    double threshold_pct;             /* per-layer tolerance: delta_pct < threshold */
    bool two_sided;                   /* |delta_pct| < threshold, budget too */
    double budget_factor;             /* whole-model budget: delta_pct < factor x threshold */
    prec_compute_t fp16_compute;      /* the study's "FP16": fp16 (dynamic loss scaling) or bf16 */
    prec_compute_t mx_gradient_compute; /* C's gradient GEMMs on MX operands */
    mx_round_t round;                 /* element rounding of the MX specs */
    mx_scale_rule_t scale;            /* scale rule */
    char backend[16];                 /* the device of the measurements ("backend" key) */
} policies_opts_t;

/* The "policies" section (defaults, ranges and help in policies.c's table). */
extern const opt_table_t policies_opts_table;
void policies_opts_default(policies_opts_t *o);
int policies_opts_check(const policies_opts_t *o, const char *ctx, err_t *e);

/* The part of a sensitivity matrix the policies need, for one block size. */
typedef struct profile_sens {
    int n;
    char **layers;
    double *d4, *d8;   /* delta_pct of mxfp4_e2m1_g<block> and mxfp8_e4m3_g<block> (NaN: empty) */
    int block;
} profile_sens_t;

/* Reads sensitivity_matrix.csv; a missing column is ERR_INPUT naming it. */
int profile_sens_read(const char *path, int block, profile_sens_t *out, err_t *e);
void profile_sens_free(profile_sens_t *s);

/* Measures the perplexity with every layer's forward weight and input in fmt[layer]
 * (MX_FP32: unquantized; MX formats at the options' block, rounding and scale) under a
 * compute type (fp32: the rollout phase; otherwise the gradient phase with it). */
typedef int (*profile_measure_fn)(void *ctx, prec_compute_t compute, const mx_format_t *fmt,
                                  double *ppl, err_t *e);

enum { POLICY_BASELINE, POLICY_A, POLICY_B, POLICY_C, POLICY_D, POLICY_COUNT };

typedef struct profile_policy {
    const char *name;                       /* "baseline", "A", ... */
    char description[640];
    prec_compute_t compute;                 /* of the gradient phase */
    mx_format_t *fmt[PREC_PHASE_COUNT];     /* per layer; gradient: all six operands */
    double ppl[PREC_PHASE_COUNT];           /* combined perplexity of each phase's forward */
} profile_policy_t;

typedef struct profile_greedy_step {
    int layer;
    double single_delta_pct;   /* the layer alone (from the matrix) */
    double ppl;                /* the whole model with it added */
    bool accepted;
} profile_greedy_step_t;

typedef struct profile_greedy {
    profile_greedy_step_t *steps;
    int nsteps;
    bool *in;                  /* per layer: in the lower-precision set at the end */
    double start_ppl, end_ppl;
} profile_greedy_t;

typedef struct profile_policies {
    const profile_sens_t *sens;  /* borrowed */
    policies_opts_t opts;
    double base_ppl;
    profile_policy_t plan[POLICY_COUNT];
    profile_greedy_t g4, g8;
    int measurements;
} profile_policies_t;

/* Derives the five plans (measure is called for each distinct configuration once). */
int profile_policies_derive(const profile_sens_t *s, const policies_opts_t *o,
                            profile_measure_fn measure, void *mctx, profile_policies_t *out,
                            err_t *e);
void profile_policies_free(profile_policies_t *p);

/* One plan as a policies.json plan object (docs/policies.md). */
cJSON *profile_policy_to_json(const profile_policies_t *p, int which);

/* The whole policies.json document: version, plans, and the top-level "perplexity" and
 * "derivation" records (the reader ignores them). `extra` (may be NULL) is moved into
 * "derivation". */
cJSON *profile_policies_to_json(const profile_policies_t *p, cJSON *extra);

/* Where the stage reads and writes. */
typedef struct policies_paths {
    const char *sensitivity;   /* sensitivity_matrix.csv */
    const char *model_dir;     /* the model the matrix was measured on, with tokenizer.json */
    const char *eval_path;     /* the evaluation data (as for the sensitivity stage) */
    const data_pair_t *const *pairs;   /* or pairs already loaded (then eval_path unused) */
    size_t npairs;
    const char *eval_desc;
    const char *output;        /* policies.json */
} policies_paths_t;

/* What a stage run found, for its caller's log. */
typedef struct profile_policies_result {
    int layers, sensitive, measurements;
    double baseline_ppl;
    double ppl[POLICY_COUNT][PREC_PHASE_COUNT];   /* plans in POLICY_* order */
} profile_policies_result_t;

/* The whole stage: read the matrix, load the model and set, derive, write policies.json.
 * Progress: one call per measurement (what = the configuration measured). res may be
 * NULL. */
int profile_policies_run(const policies_opts_t *o, const policies_paths_t *paths,
                         profile_progress_fn progress, void *pctx,
                         profile_policies_result_t *res, err_t *e);

#endif
