/* study: report.md and its figures from a results directory (study.h): the writer, its
 * helpers and sections 1, 2, 5 and 7 (study_internal.h says where the others are). */
#include "report/study.h"
#include "report/hw_section.h"
#include "report/study_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "precision/precision.h"
#include "report/svg.h"
#include "util/atomic_file.h"
#include "util/fs.h"
#include "util/json.h"

const char *report_fmt(double v, char *buf)
{
    double a = fabs(v);
    if (!isfinite(v))
        snprintf(buf, 32, "n/a");
    else if (v == floor(v) && a < 1e15)
        snprintf(buf, 32, "%.0f", v);
    else if (a >= 1e4)
        snprintf(buf, 32, "%.0f", v);
    else if (a >= 100)
        snprintf(buf, 32, "%.1f", v);
    else if (a >= 1)
        snprintf(buf, 32, "%.3f", v);
    else if (a >= 1e-3)
        snprintf(buf, 32, "%.4f", v);
    else
        snprintf(buf, 32, "%.3g", v);
    return buf;
}

/* ---- the writer's helpers ---------------------------------------------------------------- */
void study_md(rep_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(r->md, fmt, ap);
    va_end(ap);
}

void study_note_missing(rep_t *r, const char *what)
{
    size_t k = strlen(r->missing);
    snprintf(r->missing + k, sizeof r->missing - k, "%s%s", k ? "; " : "", what);
}

/* The first of root/cand[i] that exists (caller frees), or NULL. */
char *study_find(const char *root, const char *const *cand)
{
    for (int i = 0; cand[i]; i++) {
        char *p = fs_join(root, cand[i]);
        if (p && fs_exists(p))
            return p;
        free(p);
    }
    return NULL;
}

void study_cands_text(const char *const *cand, char *buf, size_t cap)
{
    size_t at = 0;
    buf[0] = 0;
    for (int i = 0; cand[i] && at + 4 < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s`%s`", i ? ", " : "", cand[i]);
}

char *study_out_path(rep_t *r, const char *name) { return fs_join(r->o->out_dir, name); }

void study_figure(rep_t *r, const char *name, const char *caption)
{
    study_md(r, "![%s](%s%s)\n\n*%s*\n\n", caption, r->o->fig_prefix ? r->o->fig_prefix : "", name,
             caption);
    r->figures++;
}

/* Copies a figure a stage drew; false when it is not there. */
static bool copy_figure(rep_t *r, const char *dir, const char *name, const char *caption)
{
    char *src = fs_join(dir, name), *dst = study_out_path(r, name), *buf = NULL;
    size_t len;
    err_t e = ERR_INIT;
    bool ok = src && dst && fs_exists(src) && !fs_read_all(src, 64u << 20, &buf, &len, &e) &&
              !atomic_write(dst, buf, len, &e);
    if (ok)
        study_figure(r, name, caption);
    free(buf);
    free(src);
    free(dst);
    return ok;
}

double study_cell(const csv_table_t *t, int row, const char *col)
{
    int c = csv_col(t, col);
    double v = NAN;
    err_t e = ERR_INIT;
    if (c < 0 || csv_cell_double(t, row, c, &v, &e))
        return NAN;
    return v;
}

const char *study_cell_s(const csv_table_t *t, int row, const char *col)
{
    int c = csv_col(t, col);
    return c < 0 ? "" : csv_cell(t, row, c);
}

double study_jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

const char *study_jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* "x ± y" (or "x" without an interval); `none` for a missing x. */
const char *study_pm(double x, double ci, const char *none, char *buf, size_t cap)
{
    char a[32], b[32];
    if (!isfinite(x))
        snprintf(buf, cap, "%s", none);
    else if (isfinite(ci))
        snprintf(buf, cap, "%s ± %s", report_fmt(x, a), report_fmt(ci, b));
    else
        snprintf(buf, cap, "%s", report_fmt(x, a));
    return buf;
}

/* A markdown table cell must not break the table. */
void study_md_cell(rep_t *r, const char *s)
{
    study_md(r, " ");
    for (; *s; s++)
        study_md(r, "%s", *s == '|' ? "\\|" : *s == '\n' ? " " : (char[2]){*s, 0});
    study_md(r, " |");
}

/* ---- 1. energy by phase ----------------------------------------------------------------------- */

static const char *const BASELINE_DIRS[] = {"baseline", "gpu_baseline", ".", NULL};

static char *baseline_dir(const char *root)
{
    for (int i = 0; BASELINE_DIRS[i]; i++) {
        char *d = fs_join(root, BASELINE_DIRS[i]), *f = d ? fs_join(d, "energy.csv") : NULL;
        bool ok = f && fs_exists(f);
        free(f);
        if (ok)
            return d;
        free(d);
    }
    return NULL;
}

/* Joules per token from phase_timing.json beside energy.csv (absent in results written
 * before it counted tokens: then nothing). Always 8 lines: test_pin knows the block. */
static int energy_per_token(rep_t *r, const char *bdir, bool any_energy)
{
    char *path = fs_join(bdir, "phase_timing.json");
    cJSON *j = NULL;
    int rc = path ? ERR_OK : err_set(r->e, ERR_NOMEM, "out of memory");
    if (!rc && fs_exists(path))
        rc = json_load_file(path, 256u << 20, &j, r->e);
    const cJSON *tk = cJSON_GetObjectItemCaseSensitive(j, "tokens");
    if (rc || !cJSON_IsObject(tk) || !tk->child) {
        cJSON_Delete(j);
        free(path);
        return rc;
    }
    /* what a token is in each study phase (docs/ppo.md, "Phases and energy") */
    static const char *const what[PREC_PHASE_COUNT] = {"generated", "scored", "trained"};
    study_md(r, "Energy per token (`%s`: `tokens`, `phases.NAME.energy_per_token_J`): a generated "
                "token is a response token the rollout sampled (the end-of-turn id included, no "
                "padding), a scored token one the reward model read (prompt + response, no "
                "padding), a trained token a response token of a minibatch the gradient update "
                "processed, once per epoch.\n\n| phase | token | tokens | energy per token (J) |"
                "\n|---|---|---:|---:|\n", path);
    const cJSON *ph = cJSON_GetObjectItemCaseSensitive(j, "phases");
    for (int k = 0; k < PREC_PHASE_COUNT; k++) {
        const char *name = prec_phase_study_name((prec_phase_t)k);
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(ph, name);
        double n = study_jnum(tk, name), jt = study_jnum(p, "energy_per_token_J");
        char a[32], b[32];
        study_md(r, "| %s | %s | %s | %s |\n", name, what[k],
                 isfinite(n) ? report_fmt(n, a) : "—",
                 isfinite(jt) ? report_fmt(jt, b) : any_energy ? "—" : "no sensor");
    }
    study_md(r, "\n");
    cJSON_Delete(j);
    free(path);
    return ERR_OK;
}

static int section_energy(rep_t *r, const char *bdir)
{
    study_md(r, "## 1. Energy by phase (the PPO baseline)\n\n");
    if (!bdir) {
        study_md(r, "Absent: no `energy.csv` under `baseline/`, `gpu_baseline/` or the results "
                    "directory itself (`mxrlhf baseline` or the pipeline's baseline stage writes "
                    "it).\n\n");
        study_note_missing(r, "energy.csv");
        return ERR_OK;
    }
    char *path = fs_join(bdir, "energy.csv");
    csv_table_t t;
    int rc = path ? csv_load(path, &t, r->e) : err_set(r->e, ERR_NOMEM, "out of memory");
    if (rc) {
        free(path);
        return rc;
    }
    r->present++;
    double total = NAN;
    bool any_energy = false;
    const char *source = "";
    for (int i = 0; i < t.nrows; i++) {
        if (!strcmp(study_cell_s(&t, i, "phase"), "total")) {
            total = study_cell(&t, i, "runtime_s");
            source = study_cell_s(&t, i, "source");
        }
        any_energy |= isfinite(study_cell(&t, i, "energy_J"));
    }
    study_md(r, "From `%s`. Power source: %s.\n\n", path, *source ? source : "not recorded");
    if (!any_energy)
        study_md(r, "**No power sensor answered on this machine, so no energy was measured**: the "
                    "energy cells read \"no sensor\" (they are empty in the CSV, never estimated). "
                    "Runtimes are measured.\n\n");
    study_md(r, "| phase | runtime (s) | share of runtime | avg power (W) | energy (J) | ± (J) | "
                "method "
                "| windows |\n|---|---:|---:|---:|---:|---:|---|---:|\n");
    double rt[3] = {NAN, NAN, NAN}, en[3] = {NAN, NAN, NAN}, un[3] = {NAN, NAN, NAN};
    for (int i = 0; i < t.nrows; i++) {
        char a[32], b[32], c2[32], d[32], f[32];
        double runtime = study_cell(&t, i, "runtime_s"), energy = study_cell(&t, i, "energy_J");
        for (int k = 0; k < 3; k++)
            if (!strcmp(study_cell_s(&t, i, "phase"), prec_phase_study_name((prec_phase_t)k))) {
                rt[k] = runtime;
                en[k] = energy;
                un[k] = study_cell(&t, i, "uncertainty_J");
            }
        snprintf(b, sizeof b, "%.1f", 100 * runtime / total);
        study_md(r, "| %s | %s | %s%% | %s | %s | %s | %s | %s |\n", study_cell_s(&t, i, "phase"),
                 report_fmt(runtime, a), b,
                 isfinite(study_cell(&t, i, "avg_power_W"))
                     ? report_fmt(study_cell(&t, i, "avg_power_W"), c2)
                     : "no sensor",
                 isfinite(energy) ? report_fmt(energy, d) : "no sensor",
                 isfinite(energy) ? report_fmt(study_cell(&t, i, "uncertainty_J"), f) : "—",
                 study_cell_s(&t, i, "method"), study_cell_s(&t, i, "windows"));
    }
    study_md(r, "\n");
    if ((rc = energy_per_token(r, bdir, any_energy))) {
        csv_table_free(&t);
        free(path);
        return rc;
    }
    const char *cats[3] = {prec_phase_label(PREC_ROLLOUT), prec_phase_label(PREC_REWARD),
                           prec_phase_label(PREC_GRADIENT)};
    const char *ser[1] = {"runtime (s)"};
    svg_bar_chart_t bc = {"Runtime by PPO phase (baseline)", "seconds", cats, 3, ser, 1, rt,
                          NULL, false, 0, 0};
    char *fp = study_out_path(r, "energy_by_phase.svg");
    if (!any_energy) {
        rc = fp ? svg_write_bar_chart(fp, &bc, r->e) : err_set(r->e, ERR_NOMEM, "out of memory");
        if (!rc)
            study_figure(r, "energy_by_phase.svg",
                         "Runtime of each phase, summed over the baseline's "
                         "PPO steps. No energy bars: no power sensor.");
    } else {
        const char *ser2[1] = {"energy (J)"};
        svg_bar_chart_t be = {"Energy by PPO phase (baseline)", "joules", cats, 3, ser2, 1, en,
                              un, false, 0, 0};
        rc = fp ? svg_write_bar_chart(fp, &be, r->e) : err_set(r->e, ERR_NOMEM, "out of memory");
        if (!rc)
            study_figure(r, "energy_by_phase.svg", "Measured energy of each phase, summed over the "
                         "baseline's PPO steps, with its ± (energy.csv's uncertainty_J).");
    }
    free(fp);
    if (!rc && !copy_figure(r, bdir, "power_over_time.svg",
                            any_energy ? "Power over the baseline run, the phases shaded."
                                       : "The phase windows over the baseline run (no power "
                                         "readings without a sensor)."))
        study_md(r, "(`power_over_time.svg` is not in `%s`.)\n\n", bdir);
    csv_table_free(&t);
    free(path);
    return rc;
}

/* ---- 2. training curves ------------------------------------------------------------------------ */

static int section_training(rep_t *r, const char *bdir)
{
    study_md(r, "## 2. Training curves (the PPO baseline)\n\n");
    char *path = bdir ? fs_join(bdir, "training_stats.json") : NULL;
    if (!path || !fs_exists(path)) {
        study_md(r, "Absent: no `training_stats.json` beside the baseline's energy.csv.\n\n");
        study_note_missing(r, "training_stats.json");
        free(path);
        return ERR_OK;
    }
    cJSON *j;
    int rc = json_load_file(path, 1u << 30, &j, r->e);
    if (rc) {
        free(path);
        return rc;
    }
    r->present++;
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(j, "steps");
    const cJSON *evals = cJSON_GetObjectItemCaseSensitive(j, "evaluations");
    const cJSON *bon = cJSON_GetObjectItemCaseSensitive(j, "best_of_n");
    study_md(r, "From `%s`: %d PPO steps.", path, cJSON_GetArraySize(steps));
    if (cJSON_GetArraySize(steps) > 0) {
        char a[32], b[32], c[32], d[32];
        const cJSON *s0 = cJSON_GetArrayItem(steps, 0),
                    *s1 = cJSON_GetArrayItem(steps, cJSON_GetArraySize(steps) - 1);
        study_md(r,
                 " Batch reward (reward model) %s at step 1, %s at the last step; per-sequence KL "
                 "%s and %s.",
                 report_fmt(study_jnum(s0, "env/reward_mean"), a),
                 report_fmt(study_jnum(s1, "env/reward_mean"), b),
                 report_fmt(study_jnum(s0, "objective/kl"), c),
                 report_fmt(study_jnum(s1, "objective/kl"), d));
    }
    study_md(r, "\n\n");
    if (cJSON_GetArraySize(evals) > 0) {
        study_md(r, "Held-out evaluations (one sample per prompt, the same random numbers each "
                    "time):\n\n| step | prompts | reward model | ground truth | KL (nats) | length "
                    "|\n|---:|---:|---:|---:|---:|---:|\n");
        for (const cJSON *ev = evals->child; ev; ev = ev->next) {
            char a[32], b[32], c[32], d[32], f[32], g[32];
            study_md(r, "| %s | %s | %s | %s | %s | %s |\n", report_fmt(study_jnum(ev, "step"), a),
                     report_fmt(study_jnum(ev, "prompts"), b),
                     report_fmt(study_jnum(ev, "reward_mean"), c),
                     report_fmt(study_jnum(ev, "data_synth_score"), d),
                     report_fmt(study_jnum(ev, "kl"), f),
                     report_fmt(study_jnum(ev, "response_len_mean"), g));
        }
        study_md(r, "\n");
    }
    if (cJSON_IsObject(bon)) {
        char a[32], b[32], c[32], d[32];
        study_md(r,
                 "Best-of-%s from the initial policy (for comparison): reward model %s, ground "
                 "truth %s, at an analytic KL of %s nats.\n\n",
                 report_fmt(study_jnum(bon, "n"), a), report_fmt(study_jnum(bon, "reward_mean"), b),
                 report_fmt(study_jnum(bon, "data_synth_score"), c),
                 report_fmt(study_jnum(bon, "kl_analytic"), d));
    }
    copy_figure(r, bdir, "reward_by_step.svg", "Reward by PPO step (batch mean).");
    copy_figure(r, bdir, "kl_by_step.svg", "KL to the reference and the KL coefficient by step.");
    copy_figure(r, bdir, "losses_by_step.svg", "PPO losses by step.");
    cJSON_Delete(j);
    free(path);
    return ERR_OK;
}

/* ---- 5. policies ------------------------------------------------------------------------------- */

static int section_policies(rep_t *r)
{
    static const char *const c[] = {"policies/policies.json", "policies.json", NULL};
    study_md(r, "## 5. Policies\n\n");
    char *path = study_find(r->o->results, c);
    if (!path) {
        char l[256];
        study_cands_text(c, l, sizeof l);
        study_md(r, "Absent: none of %s.\n\n", l);
        study_note_missing(r, "policies.json");
        return ERR_OK;
    }
    cJSON *j;
    int rc = json_load_file(path, 64u << 20, &j, r->e);
    if (rc) {
        free(path);
        return rc;
    }
    r->present++;
    const cJSON *plans = cJSON_GetObjectItemCaseSensitive(j, "plans");
    const cJSON *ppl = cJSON_GetObjectItemCaseSensitive(j, "perplexity");
    const cJSON *pplp = cJSON_GetObjectItemCaseSensitive(ppl, "plans");
    char a[32], b[32];
    study_md(r, "From `%s`.", path);
    if (cJSON_IsObject(ppl))
    {
        char c2[32];
        study_md(r,
                 " Unquantized perplexity %s; per-layer threshold %s%%, whole-model budget %s%%.",
                 report_fmt(study_jnum(ppl, "baseline_ppl"), a),
                 report_fmt(study_jnum(ppl, "threshold_pct"), b),
                 report_fmt(study_jnum(ppl, "budget_pct"), c2));
    }
    study_md(r,
             " Combined perplexity: the plan's forward in each phase on the evaluation set "
             "(Δ against unquantized).\n\n| plan | gradient compute | rules | rollout ppl (Δ%%) | "
             "reward ppl (Δ%%) | gradient ppl (Δ%%) | description "
             "|\n|---|---|---:|---:|---:|---:|---|\n");
    for (const cJSON *p = cJSON_IsObject(plans) ? plans->child : NULL; p; p = p->next) {
        const char *comp = study_jstr(p, "compute");
        study_md(r, "| %s | %s | %d |", p->string, comp ? comp : "fp32",
                 cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(p, "rules")));
        const cJSON *pp = cJSON_GetObjectItemCaseSensitive(pplp, p->string);
        for (int k = 0; k < 3; k++) {
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(pp, prec_phase_name((prec_phase_t)k));
            if (cJSON_IsObject(x))
                study_md(r, " %s (%s%s) |", report_fmt(study_jnum(x, "ppl"), a),
                         study_jnum(x, "delta_pct") > 0 ? "+" : "",
                         report_fmt(study_jnum(x, "delta_pct"), b));
            else
                study_md(r, " n/a |");
        }
        const char *d = study_jstr(p, "description");
        study_md_cell(r, d ? d : "");
        study_md(r, "\n");
    }
    study_md(r, "\n");
    cJSON_Delete(j);
    free(path);
    return ERR_OK;
}

/* ---- 7. stage times --------------------------------------------------------------------------- */

static void section_times(rep_t *r)
{
    static const char *const st[] = {"data", "tokenizer", "pretrain", "sft", "rm", "judge",
                                     "baseline", "sensitivity", "phase_sensitivity", "policies",
                                     "compare", NULL};
    int n = 0;
    double tot = 0, cpu = 0;
    for (int i = 0; st[i]; i++) {
        char rel[96];
        snprintf(rel, sizeof rel, "%s/stage.json", st[i]);
        char *p = fs_join(r->o->results, rel);
        cJSON *j = NULL;
        err_t e = ERR_INIT;
        if (p && fs_exists(p) && !json_load_file(p, 16u << 20, &j, &e)) {
            if (!n)
                study_md(r,
                         "## 7. Stage times (from each stage's stage.json)\n\n| stage | wall (s) "
                         "| CPU (s) | finished |\n|---|---:|---:|---|\n");
            char a[32], b[32];
            const char *fin = study_jstr(j, "finished");
            study_md(r, "| %s | %s | %s | %s |\n", st[i], report_fmt(study_jnum(j, "seconds"), a),
                     report_fmt(study_jnum(j, "cpu_seconds"), b), fin ? fin : "");
            tot += isfinite(study_jnum(j, "seconds")) ? study_jnum(j, "seconds") : 0;
            cpu += isfinite(study_jnum(j, "cpu_seconds")) ? study_jnum(j, "cpu_seconds") : 0;
            n++;
        }
        cJSON_Delete(j);
        free(p);
    }
    if (n) {
        char a[32], b[32];
        study_md(r, "| all | %s | %s | |\n\n", report_fmt(tot, a),
                 cpu > 0 ? report_fmt(cpu, b) : "n/a");
    }
}

/* ---- the report -------------------------------------------------------------------------------- */

int report_study_write(const report_study_opts_t *o, report_study_result_t *res, err_t *e)
{
    if (!fs_is_dir(o->results))
        return err_set(e, ERR_INPUT, "%s: not a directory", o->results);
    int rc = fs_mkdir_p(o->out_dir, e);
    if (rc)
        return rc;
    char *buf = NULL;
    size_t len = 0;
    rep_t r = {o, open_memstream(&buf, &len), 0, 0, "", e};
    if (!r.md)
        return err_set(e, ERR_NOMEM, "out of memory");
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
    study_md(&r,
             "# mxrlhf study report\n\nGenerated %s from `%s` by mxrlhf. Every number below is "
             "read from the file its section names; regenerate with `mxrlhf report --results %s`."
             "\n\n",
             when, o->results, o->results);
    char *bdir = baseline_dir(o->results);
    rc = section_energy(&r, bdir);
    if (!rc)
        rc = section_training(&r, bdir);
    if (!rc)
        rc = study_section_sensitivity(&r);
    if (!rc)
        rc = study_section_phase(&r);
    if (!rc)
        rc = section_policies(&r);
    if (!rc)
        rc = study_section_compare(&r);
    rc = rc ? rc : report_hw_section(r.md, o->results, e);
    if (!rc)
        section_times(&r);
    free(bdir);
    fclose(r.md);
    char *mp = o->md_path ? strdup(o->md_path) : fs_join(o->out_dir, "report.md");
    if (!rc)
        rc = mp ? atomic_write(mp, buf, len, e) : err_set(e, ERR_NOMEM, "out of memory");
    free(mp);
    free(buf);
    if (!rc && res) {
        res->sections_present = r.present;
        res->figures = r.figures;
        snprintf(res->missing, sizeof res->missing, "%s", r.missing);
    }
    return rc;
}
