/* compare_internal: what the comparison's files share (compare.h is the interface).
 *
 * compare.c         options, plans and their precision tables, the runs in their order
 * compare_record.c  one run's record: its energy and samples, modelled cost, judging and
 *                   win rates
 * compare_output.c  statistics over seeds and the three output files
 */
#ifndef MXRLHF_PIPELINE_COMPARE_INTERNAL_H
#define MXRLHF_PIPELINE_COMPARE_INTERNAL_H

#include <stdio.h>

#include "energy/source.h"
#include "pipeline/compare.h"
#include "precision/precision.h"
#include "profile/compare.h"
#include "profile/modelled.h"

/* the three phases (precision.h's order) and their total */
enum { PH_ROLL = PREC_ROLLOUT, PH_REW = PREC_REWARD, PH_GRAD = PREC_GRADIENT, PH_TOTAL, NPH };
static inline const char *phase_name(int k)
{
    return k < PREC_PHASE_COUNT ? prec_phase_study_name((prec_phase_t)k) : "total";
}

typedef struct sample {
    char *prompt, *response;
    double judge;
    long long num, den;   /* ground truth, exact (den 0: none) */
} sample_t;

typedef struct run_rec {
    int plan;             /* index into the plan table; 0 = unquantized */
    int round;            /* seed index */
    uint64_t seed;
    char dir[640];
    char started[32];
    double wall_s, load0, load1;
    int ndev;
    energy_device_state_t st0[ENERGY_MAX_DEVICES], st1[ENERGY_MAX_DEVICES];
    double runtime[NPH], energy[NPH], unc[NPH];
    char source[512];
    double final_reward, kl, truth_mean, judge_mean;
    double win_judge, win_truth;
    profile_cost_t cost[NPH];
    int nsamples;
    sample_t *samples;
} run_rec_t;

/* ---- plans and their tables -------------------------------------------------------------- */

typedef struct plan_info {
    char name[64];
    char plan[64];       /* the policies.json plan its runs use ("": none, fp32) */
    prec_table_t t_policy, t_ref, t_rm;
    bool have_tables;
    char execution[NPH][16];
    double rm_acc, rm_acc_ci;
    long rm_pairs;
} plan_info_t;

typedef struct plan_stats {
    profile_stat_t runtime[NPH], runtime_ratio[NPH], energy[NPH], energy_ratio[NPH], unc[NPH];
    profile_cost_t cost[NPH];   /* mean over seeds */
    profile_stat_t reward, kl, judge, truth, win_judge, win_truth;
} plan_stats_t;

/* ---- the run ------------------------------------------------------------------------------- */

typedef struct ctx {
    const compare_opts_t *co;
    const pipeline_compare_t *c;
    plan_info_t plans[COMPARE_MAX_PLANS];
    int nplans, control;
    prec_policies_t pol;
    profile_layers_t lp, lr, lm;
    run_rec_t *runs;
    int nruns, *order;
    energy_source_t *state_src;
    char state_note[512];
} ctx_t;

void cmp_run_free(run_rec_t *r);
int cmp_read_energy(run_rec_t *r, err_t *e);
int cmp_each_line(const char *path, int (*fn)(void *ctx, const cJSON *j, err_t *e), void *ctx,
                  err_t *e);
/* cmp_each_line's callback that keeps a run's final samples */
int cmp_add_sample(void *ctx, const cJSON *j, err_t *e);
void cmp_state_summary(const energy_device_state_t *st, int n, energy_device_state_t *out);
cJSON *cmp_num_or_null(double v);
cJSON *cmp_state_json(const energy_device_state_t *st, int n, const energy_source_t *src);
int cmp_run_cost(run_rec_t *r, const plan_info_t *p, const profile_layers_t *lp,
                 const profile_layers_t *lr, const profile_layers_t *lm, const ppo_opts_t *o,
                 err_t *e);
int cmp_judge_runs(const pipeline_compare_t *c, run_rec_t *runs, int nruns, err_t *e);
void cmp_win_rates(run_rec_t *a, const run_rec_t *b, bool synthetic);
void cmp_gather(const run_rec_t *runs, int nruns, int plan, int seeds, double *out,
                size_t off);
void cmp_plan_stats(const run_rec_t *runs, int nruns, int plan, int seeds, plan_stats_t *ps);
int cmp_write_comparison_csv(const char *path, const plan_info_t *plans, int nplans,
                             const run_rec_t *runs, int nruns, const compare_opts_t *co,
                             const char *source, int eval_prompts, err_t *e);
int cmp_write_runs_csv(const char *path, const plan_info_t *plans, const run_rec_t *runs,
                       const int *order, int nruns, err_t *e);
int cmp_write_json(ctx_t *x, const ppo_opts_t *ppo, const profile_control_check_t *chk,
                   const plan_stats_t *cs, double seconds, double judge_s, double rm_s, err_t *e);

#endif
