/* compare_output: statistics over seeds and the comparison's files (compare_internal.h):
 * policy_comparison.csv, compare_runs.csv, comparison.json. */
#include "pipeline/compare_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "report/csv.h"
#include "util/fs.h"
#include "util/json.h"

/* ---- output ------------------------------------------------------------------------------- */

static const char *const csv_columns[] = {
    "plan", "phase", "seeds", "steps", "execution",
    "runtime_s", "runtime_s_ci95", "runtime_ratio", "runtime_ratio_ci95",
    "energy_J", "energy_J_ci95", "energy_uncertainty_J", "energy_ratio", "energy_ratio_ci95",
    "avg_power_W",
    "modelled_traffic_bytes", "modelled_traffic_bf16_bytes", "modelled_traffic_ratio",
    "modelled_macs", "modelled_macs_4bit", "modelled_macs_6bit", "modelled_macs_8bit",
    "modelled_macs_16bit", "modelled_macs_32bit",
    "final_reward", "final_reward_ci95", "kl", "kl_ci95",
    "judge_score", "judge_score_ci95", "true_score", "true_score_ci95",
    "win_rate_judge", "win_rate_judge_ci95", "win_rate_true", "win_rate_true_ci95",
    "rm_accuracy", "rm_accuracy_ci95", "rm_eval_pairs", "eval_prompts", "energy_source", NULL};

void cmp_gather(const run_rec_t *runs, int nruns, int plan, int seeds, double *out,
                size_t off)
{
    for (int s = 0; s < seeds; s++)
        out[s] = NAN;
    for (int i = 0; i < nruns; i++)
        if (runs[i].plan == plan)
            out[runs[i].round] = *(const double *)((const char *)&runs[i] + off);
}

void cmp_plan_stats(const run_rec_t *runs, int nruns, int plan, int seeds, plan_stats_t *ps)
{
    double x[seeds], base[seeds];
    memset(ps, 0, sizeof *ps);
    for (int k = 0; k < NPH; k++) {
        cmp_gather(runs, nruns, plan, seeds, x, offsetof(run_rec_t, runtime) + k * sizeof(double));
        cmp_gather(runs, nruns, 0, seeds, base, offsetof(run_rec_t, runtime) + k * sizeof(double));
        ps->runtime[k] = profile_stat(x, seeds);
        ps->runtime_ratio[k] = profile_ratio_stat(x, base, seeds);
        cmp_gather(runs, nruns, plan, seeds, x, offsetof(run_rec_t, energy) + k * sizeof(double));
        cmp_gather(runs, nruns, 0, seeds, base, offsetof(run_rec_t, energy) + k * sizeof(double));
        ps->energy[k] = profile_stat(x, seeds);
        ps->energy_ratio[k] = profile_ratio_stat(x, base, seeds);
        cmp_gather(runs, nruns, plan, seeds, x, offsetof(run_rec_t, unc) + k * sizeof(double));
        ps->unc[k] = profile_stat(x, seeds);
        int n = 0;
        for (int i = 0; i < nruns; i++)
            if (runs[i].plan == plan) {
                profile_cost_add(&ps->cost[k], &runs[i].cost[k], 1);
                n++;
            }
        if (n) {
            profile_cost_t z = {0};
            profile_cost_add(&z, &ps->cost[k], 1.0 / n);
            ps->cost[k] = z;
        }
    }
    cmp_gather(runs, nruns, plan, seeds, x, offsetof(run_rec_t, final_reward));
    ps->reward = profile_stat(x, seeds);
    cmp_gather(runs, nruns, plan, seeds, x, offsetof(run_rec_t, kl));
    ps->kl = profile_stat(x, seeds);
    cmp_gather(runs, nruns, plan, seeds, x, offsetof(run_rec_t, judge_mean));
    ps->judge = profile_stat(x, seeds);
    cmp_gather(runs, nruns, plan, seeds, x, offsetof(run_rec_t, truth_mean));
    ps->truth = profile_stat(x, seeds);
    cmp_gather(runs, nruns, plan, seeds, x, offsetof(run_rec_t, win_judge));
    ps->win_judge = profile_stat(x, seeds);
    cmp_gather(runs, nruns, plan, seeds, x, offsetof(run_rec_t, win_truth));
    ps->win_truth = profile_stat(x, seeds);
}

static double ratio(double a, double b) { return isfinite(a) && isfinite(b) && b > 0 ? a / b : NAN; }

int cmp_write_comparison_csv(const char *path, const plan_info_t *plans, int nplans,
                             const run_rec_t *runs, int nruns, const compare_opts_t *co,
                             const char *source, int eval_prompts, err_t *e)
{
    csv_writer_t w;
    int rc = csv_open(&w, path, e);
    if (rc)
        return rc;
    csv_header(&w, csv_columns);
    for (int p = 0; p < nplans; p++) {
        plan_stats_t ps;
        cmp_plan_stats(runs, nruns, p, co->seeds, &ps);
        for (int k = 0; k < NPH; k++) {
            bool tot = k == PH_TOTAL;
            const profile_cost_t *c = &ps.cost[k];
            csv_str(&w, plans[p].name);
            csv_str(&w, phase_name(k));
            csv_int(&w, ps.runtime[k].n);
            csv_int(&w, co->steps);
            csv_str(&w, plans[p].execution[k]);
            csv_num(&w, ps.runtime[k].mean);
            csv_num(&w, ps.runtime[k].ci95);
            csv_num(&w, ps.runtime_ratio[k].mean);
            csv_num(&w, ps.runtime_ratio[k].ci95);
            csv_num(&w, ps.energy[k].mean);
            csv_num(&w, ps.energy[k].ci95);
            csv_num(&w, ps.unc[k].mean);
            csv_num(&w, ps.energy_ratio[k].mean);
            csv_num(&w, ps.energy_ratio[k].ci95);
            csv_num(&w, ratio(ps.energy[k].mean, ps.runtime[k].mean));
            csv_num(&w, c->bytes);
            csv_num(&w, c->bytes_bf16);
            csv_num(&w, ratio(c->bytes, c->bytes_bf16));
            csv_num(&w, c->macs);
            for (int b = 0; b < PROFILE_NWIDTHS; b++)
                csv_num(&w, c->macs_by_width[b]);
            csv_num(&w, tot ? ps.reward.mean : NAN);
            csv_num(&w, tot ? ps.reward.ci95 : NAN);
            csv_num(&w, tot ? ps.kl.mean : NAN);
            csv_num(&w, tot ? ps.kl.ci95 : NAN);
            csv_num(&w, tot ? ps.judge.mean : NAN);
            csv_num(&w, tot ? ps.judge.ci95 : NAN);
            csv_num(&w, tot ? ps.truth.mean : NAN);
            csv_num(&w, tot ? ps.truth.ci95 : NAN);
            csv_num(&w, tot ? ps.win_judge.mean : NAN);
            csv_num(&w, tot ? ps.win_judge.ci95 : NAN);
            csv_num(&w, tot ? ps.win_truth.mean : NAN);
            csv_num(&w, tot ? ps.win_truth.ci95 : NAN);
            csv_num(&w, tot ? plans[p].rm_acc : NAN);
            csv_num(&w, tot ? plans[p].rm_acc_ci : NAN);
            if (tot)
                csv_int(&w, plans[p].rm_pairs);
            else
                csv_str(&w, NULL);
            if (tot)
                csv_int(&w, eval_prompts);
            else
                csv_str(&w, NULL);
            csv_str(&w, source);
            csv_endrow(&w);
        }
    }
    return csv_commit(&w, e);
}

int cmp_write_runs_csv(const char *path, const plan_info_t *plans, const run_rec_t *runs,
                       const int *order, int nruns, err_t *e)
{
    static const char *const cols[] = {
        "order", "plan", "seed", "dir", "started_utc", "wall_s", "load_1min_start",
        "load_1min_end", "rollout_s", "reward_inference_s", "gradient_update_s", "total_s",
        "rollout_J", "reward_inference_J", "gradient_update_J", "total_J", "final_reward", "kl",
        "judge_score", "true_score", "win_rate_judge", "win_rate_true", "sm_clock_MHz_start",
        "sm_clock_MHz_end", "mem_clock_MHz_start", "mem_clock_MHz_end", "temperature_C_start",
        "temperature_C_end", "throttle_reasons_start", "throttle_reasons_end", NULL};
    csv_writer_t w;
    int rc = csv_open(&w, path, e);
    if (rc)
        return rc;
    csv_header(&w, cols);
    for (int k = 0; k < nruns; k++) {
        const run_rec_t *r = &runs[order[k]];
        energy_device_state_t a, b;
        cmp_state_summary(r->st0, r->ndev, &a);
        cmp_state_summary(r->st1, r->ndev, &b);
        csv_int(&w, k + 1);
        csv_str(&w, plans[r->plan].name);
        csv_int(&w, (long long)r->seed);
        csv_str(&w, r->dir);
        csv_str(&w, r->started);
        csv_num(&w, r->wall_s);
        csv_num(&w, r->load0);
        csv_num(&w, r->load1);
        for (int p = 0; p < NPH; p++)
            csv_num(&w, r->runtime[p]);
        for (int p = 0; p < NPH; p++)
            csv_num(&w, r->energy[p]);
        csv_num(&w, r->final_reward);
        csv_num(&w, r->kl);
        csv_num(&w, r->judge_mean);
        csv_num(&w, r->truth_mean);
        csv_num(&w, r->win_judge);
        csv_num(&w, r->win_truth);
        csv_num(&w, a.sm_clock_MHz);
        csv_num(&w, b.sm_clock_MHz);
        csv_num(&w, a.mem_clock_MHz);
        csv_num(&w, b.mem_clock_MHz);
        csv_num(&w, a.temperature_C);
        csv_num(&w, b.temperature_C);
        csv_num(&w, a.throttle_reasons);
        csv_num(&w, b.throttle_reasons);
        csv_endrow(&w);
    }
    return csv_commit(&w, e);
}

static cJSON *stat_json(const profile_stat_t *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n", s->n);
    cJSON_AddItemToObject(o, "mean", cmp_num_or_null(s->mean));
    cJSON_AddItemToObject(o, "ci95", cmp_num_or_null(s->ci95));
    return o;
}

int cmp_write_json(ctx_t *x, const ppo_opts_t *ppo, const profile_control_check_t *chk,
                   const plan_stats_t *cs, double seconds, double judge_s, double rm_s, err_t *e)
{
    const pipeline_compare_t *c = x->c;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "format", "mxrlhf.comparison/1");
    cJSON_AddItemToObject(j, "options", opts_to_json(&compare_opts_table, x->co));
    ppo_opts_t o = *ppo;
    o.steps = x->co->steps;
    o.checkpoint_every = 0;
    o.best_of_n = 0;
    o.eval_every = 0;
    o.eval_prompts = x->co->eval_prompts;
    cJSON_AddItemToObject(j, "ppo", opts_to_json(&ppo_opts_table, &o));
    char note[256];
    snprintf(note, sizeof note, "each comparison run is PPO for %d steps (the baseline stage "
             "runs %d); seeds %llu to %llu", x->co->steps, ppo->steps,
             (unsigned long long)ppo->seed, (unsigned long long)(ppo->seed + x->co->seeds - 1));
    cJSON_AddStringToObject(j, "note", note);
    cJSON_AddStringToObject(j, "backend", c->backend_name ? c->backend_name : "cpu");
    cJSON_AddStringToObject(j, "policies", c->policies_path);
    cJSON *models = cJSON_AddObjectToObject(j, "models");
    cJSON_AddStringToObject(models, "policy", c->policy_dir);
    cJSON_AddStringToObject(models, "reward", c->reward_dir);
    cJSON_AddStringToObject(models, "judge", c->judge_dir);
    cJSON *pl = cJSON_AddArrayToObject(j, "plans");
    for (int p = 0; p < x->nplans; p++) {
        cJSON *o2 = cJSON_CreateObject();
        cJSON_AddStringToObject(o2, "plan", x->plans[p].name);
        cJSON_AddBoolToObject(o2, "control", p == x->control);
        cJSON *ex = cJSON_AddObjectToObject(o2, "execution");
        for (int k = 0; k < NPH; k++)
            cJSON_AddStringToObject(ex, phase_name(k), x->plans[p].execution[k]);
        cJSON_AddItemToObject(o2, "rm_accuracy", cmp_num_or_null(x->plans[p].rm_acc));
        cJSON_AddItemToArray(pl, o2);
    }
    cJSON_AddStringToObject(j, "order_rule", x->co->order == COMPARE_ORDER_ROTATE
                                                 ? "seed-major rounds, each rotated by its index"
                                                 : "seed-major rounds, plans in list order");
    cJSON_AddStringToObject(j, "device_state", x->state_note);
    cJSON *ck = cJSON_AddObjectToObject(j, "control_check");
    cJSON_AddStringToObject(ck, "plan", x->plans[x->control].name);
    cJSON_AddBoolToObject(ck, "ok", chk->ok);
    cJSON_AddBoolToObject(ck, "win_ok", chk->win_ok);
    cJSON_AddBoolToObject(ck, "energy_measured", chk->energy_measured);
    cJSON_AddBoolToObject(ck, "energy_ok", chk->energy_ok);
    cJSON_AddBoolToObject(ck, "runtime_ok", chk->runtime_ok);
    cJSON_AddItemToObject(ck, "win_rate_judge", stat_json(&cs->win_judge));
    cJSON_AddItemToObject(ck, "win_rate_true", stat_json(&cs->win_truth));
    cJSON_AddItemToObject(ck, "energy_ratio", stat_json(&cs->energy_ratio[PH_TOTAL]));
    cJSON_AddItemToObject(ck, "runtime_ratio", stat_json(&cs->runtime_ratio[PH_TOTAL]));
    cJSON_AddNumberToObject(ck, "tolerance", x->co->tolerance);
    cJSON_AddStringToObject(ck, "message", chk->message);
    cJSON *runs = cJSON_AddArrayToObject(j, "runs");
    for (int k = 0; k < x->nruns; k++) {
        const run_rec_t *r = &x->runs[x->order[k]];
        cJSON *o2 = cJSON_CreateObject();
        cJSON_AddNumberToObject(o2, "order", k + 1);
        cJSON_AddStringToObject(o2, "plan", x->plans[r->plan].name);
        cJSON_AddNumberToObject(o2, "seed", (double)r->seed);
        cJSON_AddStringToObject(o2, "dir", r->dir);
        cJSON_AddStringToObject(o2, "started", r->started);
        cJSON_AddNumberToObject(o2, "wall_s", r->wall_s);
        cJSON_AddItemToObject(o2, "load_1min", cJSON_CreateDoubleArray((double[]){r->load0, r->load1}, 2));
        if (x->state_src && r->ndev) {
            cJSON_AddItemToObject(o2, "device_state_start",
                                  cmp_state_json(r->st0, r->ndev, x->state_src));
            cJSON_AddItemToObject(o2, "device_state_end",
                                  cmp_state_json(r->st1, r->ndev, x->state_src));
        }
        cJSON_AddItemToArray(runs, o2);
    }
    cJSON *tm = cJSON_AddObjectToObject(j, "timing");
    cJSON_AddNumberToObject(tm, "seconds", seconds);
    cJSON_AddNumberToObject(tm, "judge_s", judge_s);
    cJSON_AddNumberToObject(tm, "rm_accuracy_s", rm_s);
    char *path = fs_join(c->out_dir, COMPARE_JSON);
    int rc = path ? json_write_file(path, j, true, e) : err_set(e, ERR_NOMEM, "out of memory");
    free(path);
    cJSON_Delete(j);
    return rc;
}
