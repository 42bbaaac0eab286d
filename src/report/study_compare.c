/* study_compare: the report's section 6, PPO under each plan against the unquantized
 * baseline: tables by plan and by phase, and their figures (study_internal.h; docs/compare.md). */
#include "report/study_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "precision/precision.h"
#include "report/svg.h"
#include "util/fs.h"
#include "util/json.h"

/* ---- 6. the comparison ------------------------------------------------------------------------- */

typedef struct plan_row {
    char plan[64];
    int total_row, phase_row[3];
} plan_row_t;

int study_section_compare(rep_t *r)
{
    static const char *const c[] = {"compare/policy_comparison.csv", "policy_comparison.csv", NULL};
    study_md(r, "## 6. The policies under PPO\n\n");
    char *path = study_find(r->o->results, c);
    if (!path) {
        char l[256];
        study_cands_text(c, l, sizeof l);
        study_md(r, "Absent: none of %s (`mxrlhf compare` writes it).\n\n", l);
        study_note_missing(r, "policy_comparison.csv");
        return ERR_OK;
    }
    char *dir = strdup(path);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash)
        *slash = 0;
    char *jp = dir ? fs_join(dir, "comparison.json") : NULL,
         *rp = dir ? fs_join(dir, "compare_runs.csv") : NULL;
    csv_table_t t;
    cJSON *j = NULL;
    int rc = jp && rp ? csv_load(path, &t, r->e) : err_set(r->e, ERR_NOMEM, "out of memory");
    if (rc) {
        free(path), free(dir), free(jp), free(rp);
        return rc;
    }
    r->present++;
    err_t je = ERR_INIT;
    if (fs_exists(jp) && json_load_file(jp, 64u << 20, &j, &je))
        j = NULL;
    /* plans in file order */
    plan_row_t pr[16];
    int np = 0;
    for (int i = 0; i < t.nrows; i++) {
        const char *p = study_cell_s(&t, i, "plan"), *ph = study_cell_s(&t, i, "phase");
        int k = 0;
        while (k < np && strcmp(pr[k].plan, p))
            k++;
        if (k == np) {
            if (np == 16)
                continue;
            memset(&pr[np], 0xff, sizeof pr[np]);
            snprintf(pr[np].plan, sizeof pr[np].plan, "%s", p);
            np++;
        }
        if (!strcmp(ph, "total"))
            pr[k].total_row = i;
        for (int q = 0; q < 3; q++)
            if (!strcmp(ph, prec_phase_study_name((prec_phase_t)q)))
                pr[k].phase_row[q] = i;
    }
    bool energy = false;
    for (int i = 0; i < t.nrows; i++)
        energy |= isfinite(study_cell(&t, i, "energy_J"));
    study_md(r, "From `%s`%s.", path, j ? " and comparison.json" : "");
    const cJSON *opts = j ? cJSON_GetObjectItemCaseSensitive(j, "options") : NULL;
    if (j) {
        const char *note = study_jstr(j, "note"), *order = study_jstr(j, "order_rule"),
                   *state = study_jstr(j, "device_state");
        char a[32];
        study_md(r, " %s seeds; %s. Run order: %s. Clocks and temperature: %s.",
                 report_fmt(study_jnum(opts, "seeds"), a), note ? note : "", order ? order : "?",
                 state ? state : "?");
        /* TRL's PPO unless the runs weighted their rollouts (docs/compare.md) */
        const cJSON *ppo = cJSON_GetObjectItemCaseSensitive(j, "ppo");
        const char *corr = study_jstr(ppo, "rollout_correction");
        if (corr && strcmp(corr, "none"))
            study_md(r, " Every run's policy loss carries the rollout correction `%s` (truncated "
                     "importance weights, cap %s; `rollout_corr/*` in its training_stats.json).",
                     corr, report_fmt(study_jnum(ppo, "tis_cap"), a));
    }
    study_md(r,
             "\n\n**The comparison runs are shortened PPO runs** (the number of steps is in the "
             "`steps` column), not the baseline's full run: they compare the plans with each other "
             "under identical conditions, not the final quality of a full training.\n\n");
    const cJSON *ck = j ? cJSON_GetObjectItemCaseSensitive(j, "control_check") : NULL;
    if (ck) {
        const char *msg = study_jstr(ck, "message");
        study_md(r,
                 "**Control check** (plan `%s`, the unquantized computation under a plan's name): "
                 "%s.\n\n",
                 study_jstr(ck, "plan") ? study_jstr(ck, "plan") : "?", msg ? msg : "?");
    }
    if (!energy)
        study_md(r, "No power sensor: energy and energy-ratio cells read \"no sensor\"; quality is "
                    "plotted against measured runtime and modelled memory traffic instead.\n\n");
    study_md(r,
             "### Totals (mean ± 95%% interval over seeds; ratios to the unquantized run of the "
             "same seed)\n\n| plan | execution | steps | runtime (s) | × runtime | energy (J) | × "
             "energy | modelled traffic (GB) | × bf16 (modelled) | final reward | KL (nats) | RM "
             "accuracy | win rate (judge) | win rate (truth) |\n|---|---|---:|---:|---:|---:|---:|"
             "---:|---:|---:|---:|---:|---:|---:|\n");
    for (int k = 0; k < np; k++) {
        int i = pr[k].total_row;
        if (i < 0)
            continue;
        char b[10][96], g[32];
        study_md(r, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                 pr[k].plan, study_cell_s(&t, i, "execution"), study_cell_s(&t, i, "steps"),
                 study_pm(study_cell(&t, i, "runtime_s"), study_cell(&t, i, "runtime_s_ci95"),
                          "n/a", b[0], 96),
                 study_pm(study_cell(&t, i, "runtime_ratio"),
                          study_cell(&t, i, "runtime_ratio_ci95"), "n/a", b[1], 96),
                 study_pm(study_cell(&t, i, "energy_J"), study_cell(&t, i, "energy_J_ci95"),
                          "no sensor", b[2], 96),
                 study_pm(study_cell(&t, i, "energy_ratio"), study_cell(&t, i, "energy_ratio_ci95"),
                          "no sensor", b[3], 96),
                 report_fmt(study_cell(&t, i, "modelled_traffic_bytes") / 1e9, g),
                 study_pm(study_cell(&t, i, "modelled_traffic_ratio"), NAN, "n/a", b[4], 96),
                 study_pm(study_cell(&t, i, "final_reward"), study_cell(&t, i, "final_reward_ci95"),
                          "n/a", b[5], 96),
                 study_pm(study_cell(&t, i, "kl"), study_cell(&t, i, "kl_ci95"), "n/a", b[6], 96),
                 study_pm(study_cell(&t, i, "rm_accuracy"), study_cell(&t, i, "rm_accuracy_ci95"),
                          "n/a", b[7], 96),
                 study_pm(study_cell(&t, i, "win_rate_judge"),
                          study_cell(&t, i, "win_rate_judge_ci95"), "n/a", b[8], 96),
                 study_pm(study_cell(&t, i, "win_rate_true"),
                          study_cell(&t, i, "win_rate_true_ci95"), "n/a", b[9], 96));
    }
    study_md(r, "\nexecution: `emulated` means the plan's MX or 16-bit formats were computed in "
                "higher precision (fake quantization) on this backend, so runtimes and energies "
                "measure the emulation, not MX hardware; `native-weights`: decoding read MX "
                "weights packed (real bytes) and multiplied exactly; the modelled columns say "
                "what the formats would move. Final reward: the trained reward model's mean "
                "score of the final held-out samples (under the plan's reward phase). RM "
                "accuracy: the reward model under the plan's reward phase on rm_eval pairs "
                "(binomial interval). Win rates: the plan's final held-out samples against the "
                "unquantized run's of the same seed, judged by the held-out judge reward model "
                "and by the synthetic task's ground truth (ties half).\n\n");
    study_md(r,
             "### By phase\n\n| plan | phase | execution | runtime (s) | × runtime | energy (J) | "
             "modelled traffic × bf16 | modelled GMAC | of which 4 / 6 / 8 / 16 / 32-bit |\n"
             "|---|---|---|---:|---:|---:|---:|---:|---|\n");
    for (int k = 0; k < np; k++)
        for (int q = 0; q < 3; q++) {
            int i = pr[k].phase_row[q];
            if (i < 0)
                continue;
            char b[4][96], w[5][32], m[32];
            static const char *const wc[5] = {"modelled_macs_4bit", "modelled_macs_6bit",
                                              "modelled_macs_8bit", "modelled_macs_16bit",
                                              "modelled_macs_32bit"};
            double macs = study_cell(&t, i, "modelled_macs");
            for (int z = 0; z < 5; z++)
                snprintf(w[z], 32, "%.0f%%",
                         macs > 0 ? 100 * study_cell(&t, i, wc[z]) / macs : 0.0);
            study_md(r, "| %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s / %s / %s |\n",
                     pr[k].plan, prec_phase_study_name((prec_phase_t)q),
                     study_cell_s(&t, i, "execution"),
                     study_pm(study_cell(&t, i, "runtime_s"), study_cell(&t, i, "runtime_s_ci95"),
                              "n/a", b[0], 96),
                     study_pm(study_cell(&t, i, "runtime_ratio"),
                              study_cell(&t, i, "runtime_ratio_ci95"), "n/a", b[1], 96),
                     study_pm(study_cell(&t, i, "energy_J"), study_cell(&t, i, "energy_J_ci95"),
                              "no sensor", b[2], 96),
                     study_pm(study_cell(&t, i, "modelled_traffic_ratio"), NAN, "n/a", b[3], 96),
                     report_fmt(macs / 1e9, m), w[0], w[1], w[2], w[3], w[4]);
        }
    study_md(r, "\n");
    /* figures */
    const char *cats[16], *phl[3] = {prec_phase_label(PREC_ROLLOUT), prec_phase_label(PREC_REWARD),
                                     prec_phase_label(PREC_GRADIENT)};
    double rt[3 * 16], rte[3 * 16], en[3 * 16], ene[3 * 16];
    int ncat = 0;
    for (int k = 0; k < np; k++) {
        if (pr[k].total_row < 0)
            continue;
        cats[ncat] = pr[k].plan;
        for (int q = 0; q < 3; q++) {
            int i = pr[k].phase_row[q];
            rt[q * np + ncat] = i >= 0 ? study_cell(&t, i, "runtime_s") : NAN;
            rte[q * np + ncat] = i >= 0 ? study_cell(&t, i, "runtime_s_ci95") : NAN;
            en[q * np + ncat] = i >= 0 ? study_cell(&t, i, "energy_J") : NAN;
            ene[q * np + ncat] = i >= 0 ? study_cell(&t, i, "energy_J_ci95") : NAN;
        }
        ncat++;
    }
    /* the value arrays are laid out with stride np; compact them to ncat */
    for (int q = 0; q < 3; q++)
        for (int k = 0; k < ncat; k++) {
            rt[q * ncat + k] = rt[q * np + k];
            rte[q * ncat + k] = rte[q * np + k];
            en[q * ncat + k] = en[q * np + k];
            ene[q * ncat + k] = ene[q * np + k];
        }
    char *fp = study_out_path(r, "runtime_by_plan.svg");
    svg_bar_chart_t bc = {"Runtime by plan and phase (mean over seeds)", "seconds", cats, ncat,
                          phl, 3, rt, NULL, true, 0, 0};
    if (!rc && ncat)
        rc = fp ? svg_write_bar_chart(fp, &bc, r->e) : err_set(r->e, ERR_NOMEM, "out of memory");
    if (!rc && ncat)
        study_figure(r, "runtime_by_plan.svg", "Runtime of each phase by plan, stacked (mean over "
                     "seeds).");
    free(fp);
    if (!rc && energy && ncat) {
        fp = study_out_path(r, "energy_by_plan.svg");
        svg_bar_chart_t be = {"Energy by plan and phase (mean over seeds)", "joules", cats, ncat,
                              phl, 3, en, NULL, true, 0, 0};
        rc = fp ? svg_write_bar_chart(fp, &be, r->e) : err_set(r->e, ERR_NOMEM, "out of memory");
        if (!rc)
            study_figure(r, "energy_by_plan.svg",
                         "Measured energy of each phase by plan, stacked.");
        free(fp);
    }
    (void)rte;
    (void)ene;
    /* quality against energy (or, without a sensor, against runtime and modelled traffic) */
    struct { const char *fig, *title, *x, *xci, *xlabel, *caption; bool need_energy; } sc[3] = {
        {"quality_vs_energy.svg", "Quality against energy", "energy_ratio", "energy_ratio_ci95",
         "measured energy / unquantized (same seed)",
         "Quality against measured energy: win rate of each plan's samples against the "
         "unquantized run's (judge) vs its total energy ratio; bars are 95% intervals.", true},
        {"quality_vs_runtime.svg", "Quality against runtime", "runtime_ratio", "runtime_ratio_ci95",
         "measured runtime / unquantized (same seed)",
         "Quality against measured runtime (win rate, judge).", false},
        {"quality_vs_traffic.svg", "Quality against modelled memory traffic",
         "modelled_traffic_ratio", NULL,
         "modelled memory traffic / bf16 (modelled)",
         "Quality against modelled memory traffic at the plan's formats (a model, not a "
         "measurement).", false}};
    for (int s = 0; !rc && s < 3; s++) {
        if (sc[s].need_energy && !energy)
            continue;
        svg_point_t pts[16];
        char lab[16][160];
        int n = 0;
        for (int k = 0; k < np; k++) {
            int i = pr[k].total_row;
            if (i < 0)
                continue;
            svg_point_t q = {lab[n], study_cell(&t, i, sc[s].x),
                             study_cell(&t, i, "win_rate_judge"),
                             sc[s].xci ? study_cell(&t, i, sc[s].xci) : NAN,
                             study_cell(&t, i, "win_rate_judge_ci95")};
            /* plans at the same point (the control on the unquantized run) share one label */
            int same = -1;
            for (int m = 0; m < n; m++)
                if (pts[m].x == q.x && pts[m].y == q.y)
                    same = m;
            if (same >= 0) {
                size_t at = strlen(lab[same]);
                snprintf(lab[same] + at, sizeof lab[same] - at, " = %s", pr[k].plan);
                continue;
            }
            snprintf(lab[n], sizeof lab[n], "%s", pr[k].plan);
            pts[n++] = q;
        }
        /* labels of points closer than 15% of the x range and 5% of the y range would
         * overprint (a label is about that wide): the first carries both names, the
         * second none */
        double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
        for (int m = 0; m < n; m++)
            if (isfinite(pts[m].x) && isfinite(pts[m].y)) {
                x0 = fmin(x0, pts[m].x), x1 = fmax(x1, pts[m].x);
                y0 = fmin(y0, pts[m].y), y1 = fmax(y1, pts[m].y);
            }
        for (int m = 0; m < n; m++)
            for (int q2 = m + 1; q2 < n; q2++) {
                if (!lab[m][0] || !lab[q2][0] ||
                    !(fabs(pts[m].x - pts[q2].x) <= 0.15 * (x1 - x0)) ||
                    !(fabs(pts[m].y - pts[q2].y) <= 0.05 * (y1 - y0)))
                    continue;
                char other[160];
                size_t at = strlen(lab[m]);
                memcpy(other, lab[q2], sizeof other);
                snprintf(lab[m] + at, sizeof lab[m] - at, ", %s", other);
                lab[q2][0] = 0;
            }
        fp = study_out_path(r, sc[s].fig);
        svg_scatter_t ss =
            {sc[s].title, sc[s].xlabel, "win rate vs unquantized (judge)", pts, n, 0, 0};
        rc = fp ? svg_write_scatter(fp, &ss, r->e) : err_set(r->e, ERR_NOMEM, "out of memory");
        if (!rc)
            study_figure(r, sc[s].fig, sc[s].caption);
        free(fp);
    }
    /* the runs in order: drift */
    csv_table_t rt2;
    err_t re = ERR_INIT;
    if (!rc && fs_exists(rp) && !csv_load(rp, &rt2, &re)) {
        bool st = false;
        for (int i = 0; i < rt2.nrows; i++)
            st |= isfinite(study_cell(&rt2, i, "sm_clock_MHz_start")) ||
                  isfinite(study_cell(&rt2, i, "temperature_C_start"));
        study_md(r,
                 "### The runs in the order they ran\n\nFrom `%s`. %s\n\n| # | plan | seed | wall "
                 "(s) | total phases (s) | energy (J) | load (1 min) |%s\n|---:|---|---:|---:|---:|"
                 "---:|---:|%s\n",
                 rp,
                 st ? "Clocks and temperature: the slowest clock and the hottest device, before → "
                      "after."
                    : "No clock or temperature readings (only NVML gives them).",
                 st ? " SM clock (MHz) | temperature (°C) |" : "", st ? "---:|---:|" : "");
        double *x = calloc((size_t)rt2.nrows + 1, sizeof *x),
               *y = calloc((size_t)(rt2.nrows + 1) * np, sizeof *y);
        for (int i = 0; i < rt2.nrows; i++) {
            char a[32], b[32], c2[32], d[32], f[32], g[32], h[32], k2[32], l[32];
            double en2 = study_cell(&rt2, i, "total_J");
            study_md(r, "| %s | %s | %s | %s | %s | %s | %s → %s |", study_cell_s(&rt2, i, "order"),
                     study_cell_s(&rt2, i, "plan"), study_cell_s(&rt2, i, "seed"),
                     report_fmt(study_cell(&rt2, i, "wall_s"), a),
                     report_fmt(study_cell(&rt2, i, "total_s"), b),
                     isfinite(en2) ? report_fmt(en2, c2) : "no sensor",
                     report_fmt(study_cell(&rt2, i, "load_1min_start"), d),
                     report_fmt(study_cell(&rt2, i, "load_1min_end"), f));
            if (st)
                study_md(r, " %s → %s | %s → %s |",
                         report_fmt(study_cell(&rt2, i, "sm_clock_MHz_start"), g),
                         report_fmt(study_cell(&rt2, i, "sm_clock_MHz_end"), h),
                         report_fmt(study_cell(&rt2, i, "temperature_C_start"), k2),
                         report_fmt(study_cell(&rt2, i, "temperature_C_end"), l));
            study_md(r, "\n");
        }
        study_md(r, "\n");
        if (x && y) {
            /* each plan's runs as one line (its own points only, so the line joins them) */
            svg_series_t ser[16];
            double *xs = calloc((size_t)(rt2.nrows + 1) * np, sizeof *xs);
            for (int k = 0; xs && k < np; k++) {
                double *xk = xs + (size_t)k * rt2.nrows, *yk = y + (size_t)k * rt2.nrows;
                int m = 0;
                for (int i = 0; i < rt2.nrows; i++)
                    if (!strcmp(study_cell_s(&rt2, i, "plan"), pr[k].plan)) {
                        xk[m] = study_cell(&rt2, i, "order");
                        yk[m++] = study_cell(&rt2, i, "total_s");
                    }
                ser[k] = (svg_series_t){pr[k].plan, xk, yk, NULL, m};
            }
            svg_line_chart_t lc = {"Phase time of each run, in run order", "run (order)",
                                   "seconds in the three phases", ser, np, NULL, 0, 0, 0};
            fp = study_out_path(r, "runs_in_order.svg");
            rc = fp && xs ? svg_write_line_chart(fp, &lc, r->e) : err_set(r->e, ERR_NOMEM, "oom");
            free(xs);
            if (!rc)
                study_figure(r, "runs_in_order.svg",
                             "Each run's time in the three phases against its "
                             "position in the run order (drift shows as a trend common to all "
                             "plans).");
            free(fp);
        }
        free(x);
        free(y);
        csv_table_free(&rt2);
    }
    cJSON_Delete(j);
    csv_table_free(&t);
    free(path), free(dir), free(jp), free(rp);
    return rc;
}
