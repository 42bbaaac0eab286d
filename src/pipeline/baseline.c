/* baseline: PPO under the energy monitor, the study's files and the charts (baseline.h). */
#include "pipeline/baseline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "energy/attrib.h"
#include "energy/monitor.h"
#include "energy/run.h"
#include "report/svg.h"
#include "util/fs.h"
#include "util/json.h"

/* ---- options ------------------------------------------------------------------------------- */

#define BO(f) offsetof(pipeline_baseline_opts_t, f)
static const opt_field_t baseline_fields[] = {
    OPT_KEY("calibrate", OPT_BOOL, BO(calibrate), "false", 0, 0,
            "after training, repeat each phase's work under the monitor to measure its steady "
            "power (energy.csv method `calibrated`)", .flag = "calibrate"),
    OPT_KEY("calibrate_s", OPT_DOUBLE, BO(calibrate_s), "10", 1e-3, 3600,
            "steady seconds per phase with calibrate", .flag = "calibrate-s"),
};
const opt_table_t pipeline_baseline_opts_table =
    OPT_TABLE("baseline", pipeline_baseline_opts_t, baseline_fields, NULL);

/* ---- the stage ----------------------------------------------------------------------------- */

static int sync_backend(void *ctx, err_t *e) { return be_sync((backend_t *)ctx, e); }

int pipeline_baseline_run(const ppo_opts_t *o, const pipeline_baseline_t *b,
                          rlhf_ppo_result_t *res, err_t *e)
{
    const int rank = dist_rank(b->comm), size = dist_size(b->comm);
    if (rank > 0) { /* rank 0 measures every rank's GPU; this rank only trains */
        rlhf_ppo_io_t io = {b->be, b->policy_dir, b->ref_dir, b->reward_dir, b->critic_dir,
                            b->out_dir, b->policies_path, b->plan, b->prompts, b->n_prompts,
                            b->eval_prompts, b->n_eval, b->synthetic, NULL, b->resume, NULL,
                            NULL, b->data, b->comm};
        return fs_mkdir_p(b->out_dir, e) ? e->code : rlhf_ppo_run(o, &io, res, e);
    }
    energy_source_t *src = NULL;
    energy_monitor_t *mon = NULL;
    energy_run_t run;
    energy_run_init(&run);
    bool have_run = false;
    /* About ten segments, as energy_calibrate's default 1 s segments give over 10 s;
     * shorter totals (tests) get shorter segments (it keeps them >= 3 settle times). */
    double cs = b->opts.calibrate_s > 0 ? b->opts.calibrate_s : 10;
    energy_calib_opts_t co = {.min_total_s = cs, .segment_s = cs < 10 ? cs / 10 : 0,
                              .seed = o->seed};
    rlhf_ppo_io_t io = {b->be, b->policy_dir, b->ref_dir, b->reward_dir, b->critic_dir,
                        b->out_dir, b->policies_path, b->plan, b->prompts, b->n_prompts,
                        b->eval_prompts, b->n_eval, b->synthetic, NULL, b->resume, b->log,
                        b->opts.calibrate ? &co : NULL, b->data, b->comm};
    char ranks_gpus[DIST_MAX_RANKS * 4] = "";
    for (int r = 0; r < size && size > 1; r++) /* the ranks' GPUs: cuda:0 .. cuda:size-1 */
        snprintf(ranks_gpus + strlen(ranks_gpus), sizeof ranks_gpus - strlen(ranks_gpus),
                 "%s%d", r ? "," : "", r);
    /* nothing written (the power log) for a run that cannot start or resume */
    int rc = rlhf_ppo_check(o, &io, e);
    if (!rc)
        rc = fs_mkdir_p(b->out_dir, e);
    if (!rc) {
        energy_source_opts_t so;
        memset(&so, 0, sizeof so);
        energy_source_opts_from_env(&so);
        so.devices = b->devices ? b->devices : size > 1 ? ranks_gpus : NULL;
        rc = energy_source_open(b->power_source ? b->power_source : "auto", &so, &src, e);
    }
    if (!rc && b->log) {
        char line[1024];
        energy_provenance_line(&src->prov, line, sizeof line);
        fprintf(b->log, "mxrlhf baseline: power source %s\nmxrlhf baseline: %s\n", line,
                src->prov.choice);
    }
    if (!rc) {
        energy_monitor_opts_t mo = {b->interval_s, 0, b->idle_s, b->out_dir, sync_backend, b->be};
        if (b->log && b->idle_s > 0)
            fprintf(b->log, "mxrlhf baseline: measuring idle power for %.1f s\n", b->idle_s);
        rc = energy_monitor_start(&mon, src, &mo, e); /* owns src from here on */
        src = NULL;
    }
    if (!rc) {
        io.monitor = mon;
        if (b->log && b->opts.calibrate)
            fprintf(b->log, "mxrlhf baseline: after training, each phase's work is repeated "
                    "for %.1f s of steady time (calibration)\n", cs);
        rc = rlhf_ppo_run(o, &io, res, e);
        /* the monitor stops in any case; its power log stays even when PPO failed */
        err_t se = ERR_INIT;
        int src_rc = energy_monitor_stop(mon, NAN, &run, &se);
        mon = NULL;
        have_run = !src_rc;
        if (!rc && src_rc) {
            *e = se;
            rc = src_rc;
        }
    }
    if (!rc)
        rc = energy_write_outputs(&run, b->out_dir, b->log, e);
    if (!rc)
        rc = pipeline_baseline_plots(b->out_dir, e);
    /* The most memory the backend held during the run (issue 10's memory target is
     * against PyTorch's peak allocated; be_mem says what each backend counts). */
    if (!rc && b->log)
        fprintf(b->log, "mxrlhf baseline: peak memory held by the %s backend %.2f GiB\n",
                be_name(b->be), (double)be_mem(b->be).peak / (1024.0 * 1024.0 * 1024.0));
    if (have_run)
        energy_run_free(&run);
    energy_source_close(src);
    return rc;
}

/* ---- charts -------------------------------------------------------------------------------- */

typedef struct column {
    const char *key, *label;
} column_t;

/* One line chart of training_stats.json's per-step values. */
static int step_chart(const cJSON *steps, const char *path, const char *title, const char *ylabel,
                      const column_t *cols, int ncols, err_t *e)
{
    int n = cJSON_GetArraySize(steps);
    double *x = calloc((size_t)n + 1, sizeof *x), *y = calloc((size_t)(n + 1) * ncols, sizeof *y);
    svg_series_t ser[8];
    int ns = 0, rc = ERR_OK;
    if (!x || !y) {
        free(x);
        free(y);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    for (int c = 0; c < ncols && c < 8; c++) {
        bool any = false;
        for (int i = 0; i < n; i++) {
            const cJSON *s = cJSON_GetArrayItem(steps, i);
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(s, "step");
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, cols[c].key);
            x[i] = cJSON_IsNumber(st) ? st->valuedouble : i + 1;
            y[(size_t)c * n + i] = cJSON_IsNumber(v) ? v->valuedouble : NAN;
            any |= cJSON_IsNumber(v);
        }
        if (any)
            ser[ns++] = (svg_series_t){cols[c].label, x, y + (size_t)c * n, NULL, n};
    }
    svg_line_chart_t ch = {title, "PPO step", ylabel, ser, ns, NULL, 0, 0, 0};
    rc = svg_write_line_chart(path, &ch, e);
    free(x);
    free(y);
    return rc;
}

/* Power per device over the run, the phase windows shaded. */
static int power_chart(const char *dir, const char *path, err_t *e)
{
    char *lp = fs_join(dir, ENERGY_POWER_LOG_NAME), *tp = fs_join(dir, ENERGY_TIMING_NAME);
    energy_run_t run;
    energy_run_init(&run);
    int rc = lp && tp ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc && (!fs_exists(lp) || !fs_exists(tp))) {
        free(lp);
        free(tp);
        return ERR_OK; /* no measured run here: no power chart */
    }
    if (!rc)
        rc = energy_run_load(lp, tp, &run, e);
    double *x = NULL, *y = NULL;
    svg_band_t *bands = NULL;
    if (!rc) {
        size_t n = run.n_samples ? run.n_samples : 1;
        int nd = run.prov.ndev;
        x = calloc(n * (nd ? nd : 1), sizeof *x);
        y = calloc(n * (nd ? nd : 1), sizeof *y);
        bands = calloc(run.n_windows ? run.n_windows : 1, sizeof *bands);
        if (!x || !y || !bands)
            rc = err_set(e, ERR_NOMEM, "out of memory");
    }
    if (!rc) {
        svg_series_t ser[ENERGY_MAX_DEVICES];
        int ns = 0;
        for (int d = 0; d < run.prov.ndev; d++) {
            double *xd = x + (size_t)d * run.n_samples, *yd = y + (size_t)d * run.n_samples;
            int k = 0;
            for (size_t i = 0; i < run.n_samples; i++)
                if (run.samples[i].dev == d && isfinite(run.samples[i].power_W)) {
                    xd[k] = run.samples[i].t;
                    yd[k] = run.samples[i].power_W;
                    k++;
                }
            if (k)
                ser[ns++] = (svg_series_t){run.prov.dev[d].label, xd, yd, NULL, k};
        }
        int nb = 0;
        for (size_t i = 0; i < run.n_windows; i++)
            if (run.windows[i].depth == 0)
                bands[nb++] = (svg_band_t){run.windows[i].begin, run.windows[i].end,
                                           run.windows[i].name};
        char title[160];
        snprintf(title, sizeof title, ns ? "Power over the run (%s)"
                                         : "Phases over the run (%s: no power readings)",
                 run.prov.kind);
        svg_line_chart_t ch = {title, "time (s)", "power (W)", ser, ns, bands, nb, 0, 0};
        rc = svg_write_line_chart(path, &ch, e);
    }
    free(x);
    free(y);
    free(bands);
    energy_run_free(&run);
    free(lp);
    free(tp);
    return rc;
}

int pipeline_baseline_plots(const char *dir, err_t *e)
{
    char *sp = fs_join(dir, PPO_STATS_JSON);
    char *p1 = fs_join(dir, "reward_by_step.svg"), *p2 = fs_join(dir, "kl_by_step.svg"),
         *p3 = fs_join(dir, "losses_by_step.svg"), *p4 = fs_join(dir, "power_over_time.svg");
    cJSON *root = NULL;
    int rc = sp && p1 && p2 && p3 && p4 ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc)
        rc = json_load_file(sp, 1u << 30, &root, e);
    const cJSON *steps = root ? cJSON_GetObjectItemCaseSensitive(root, "steps") : NULL;
    if (!rc && !cJSON_IsArray(steps))
        rc = err_set(e, ERR_INPUT, "%s: field \"steps\" is missing (expected an array)", sp);
    if (!rc) {
        column_t c[] = {{"env/reward_mean", "reward model score"},
                        {"data_synth_score", "ground truth (synthetic task)"}};
        rc = step_chart(steps, p1, "Reward by PPO step (mean over the batch)", "score", c, 2, e);
    }
    if (!rc) {
        column_t c[] = {{"objective/kl", "KL per sequence (nats)"},
                        {"objective/kl_coef", "KL coefficient"}};
        rc = step_chart(steps, p2, "KL to the reference by PPO step", "nats / coefficient", c, 2, e);
    }
    if (!rc) {
        column_t c[] = {{"ppo/loss/policy", "policy loss"},
                        {"ppo/loss/value", "value loss"},
                        {"ppo/loss/total", "total loss"}};
        rc = step_chart(steps, p3, "PPO losses by step (mean over minibatches)", "loss", c, 3, e);
    }
    if (!rc)
        rc = power_chart(dir, p4, e);
    cJSON_Delete(root);
    free(sp);
    free(p1);
    free(p2);
    free(p3);
    free(p4);
    return rc;
}
