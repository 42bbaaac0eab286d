/* hw_project: the energy an MX accelerator would spend on a run's PPO step, per policy and
 * phase (hw_projection.csv; docs/hardware.md, "Energy projection").
 *
 * A projection, never a measurement: each GEMM the modelled counts hold (profile/modelled:
 * multiply-accumulates per format, bytes moved at the plan's formats) is charged an energy
 * per MAC and per off-chip bit taken from published silicon, each figure cited in
 * report_hw_sources. Where sources disagree the figure is a range and the projection two
 * columns: `_low` with every figure at its most efficient end, `_high` at its least.
 *
 *   per PPO step   the mean step of the baseline run: its training_stats.json (mean query
 *                  and response tokens), the longest response per step from samples.jsonl
 *                  when there (else ppo.max_new_tokens), batch, epochs and minibatches from
 *                  its config.json; profile_cost_ppo_step at that shape, which is the mean
 *                  of the per-step costs (they are affine in the token counts)
 *   MAC energy     by profile_mac_format; bf16, fp16 and fp32 MACs run on the accelerator's
 *                  16-bit units (the all-bf16 accelerator's), charged the 16-bit figure; a
 *                  format with no cited figure (mxint4) leaves the joules empty and its MACs
 *                  in uncited_macs
 *   byte energy    off-chip (HBM) energy per bit times the modelled bytes; on-chip movement
 *                  is inside the cited MX and 16-bit figures (cluster- or system-level)
 *   all-bf16       every MAC at the 16-bit figure and bytes_bf16 at the same energy per bit
 *   GPU            the baseline's energy.csv energy_J of the phase divided by its steps
 */
#ifndef MXRLHF_REPORT_HW_PROJECT_H
#define MXRLHF_REPORT_HW_PROJECT_H

#include <stdbool.h>

#include "mx/mx.h"
#include "profile/modelled.h"
#include "rlhf/ppo.h"
#include "util/err.h"

/* One cited figure. */
typedef struct report_hw_source {
    const char *key;        /* "mxdotp", ... (docs/hardware.md cites it under this key) */
    const char *what;       /* what was measured, node, voltage, frequency */
    const char *cite;       /* authors, title, venue or where it was reported */
    const char *url;
    const char *formats;    /* which of our formats it is applied to */
    double lo, hi;          /* GOPS/W (ops per MAC: 2), or pJ/bit for memory */
    bool per_bit;           /* lo/hi are pJ per off-chip bit */
} report_hw_source_t;

extern const report_hw_source_t report_hw_sources[];
extern const int report_hw_nsources;

/* Energy per MAC of format f in pJ, the range over the cited sources; NaN (both) when no
 * source covers f. bf16, fp16 and fp32 give the 16-bit units' figure. */
void report_hw_mac_pj(mx_format_t f, double *lo, double *hi);
/* Off-chip energy per bit in pJ (the range over the memory sources). */
void report_hw_bit_pj(double *lo, double *hi);

/* The projection of one modelled cost. */
typedef struct report_hw_energy {
    double joules_low, joules_high;          /* MACs + off-chip bytes (NaN with uncited MACs) */
    double mac_joules_low, mac_joules_high;
    double byte_joules_low, byte_joules_high;
    double bf16_joules_low, bf16_joules_high; /* the all-bf16 accelerator */
    double uncited_macs;
} report_hw_energy_t;

void report_hw_energy(const profile_cost_t *c, report_hw_energy_t *out);

typedef struct report_hw_project_opts {
    const ppo_opts_t *ppo;     /* the run's PPO options, or NULL: read config_path's "ppo" */
    const char *config_path;   /* the run's config.json (with ppo NULL) */
    const char *sft_dir;       /* the policy's config.json */
    const char *rm_dir;        /* the reward model's config.json (absent: the sft shape) */
    const char *baseline_dir;  /* training_stats.json, samples.jsonl */
    const char *policies;      /* policies.json */
    const char *energy;        /* the measured energy.csv; NULL or absent: GPU columns empty */
    const char *output;        /* hw_projection.csv */
} report_hw_project_opts_t;

/* The paths of a results directory in `mxrlhf run`'s layout: config.json, sft/, rm/,
 * baseline/ (and its energy.csv), policies/policies.json, hw/hw_projection.csv. buf holds
 * the strings (>= 6 x 1100 bytes). */
void report_hw_project_paths(const char *results, report_hw_project_opts_t *o, char *buf,
                             size_t cap);

typedef struct report_hw_project_result {
    char output[1024];
    int plans, phases;
    char summary[512];      /* one line: the total ratios of the plans to all-bf16 */
} report_hw_project_result_t;

/* Writes hw_projection.csv (columns: docs/hardware.md): one row per plan (the unquantized
 * run first, "unquantized", then the plans of policies.json in order) and phase
 * (rollout, reward_inference, gradient_update, total). */
int report_hw_project(const report_hw_project_opts_t *o, report_hw_project_result_t *r,
                      err_t *e);

/* The CSV's file name. */
#define REPORT_HW_PROJECTION_CSV "hw_projection.csv"

#endif
