/* study: report.md and its figures from a results directory (study.h). */
#include "report/study.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mx/mx.h"
#include "precision/precision.h"
#include "report/csv_read.h"
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

/* ---- the writer's state --------------------------------------------------------------------- */

typedef struct rep {
    const report_study_opts_t *o;
    FILE *md;
    int figures, present;
    char missing[1024];
    err_t *e;
} rep_t;

static void md(rep_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void md(rep_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(r->md, fmt, ap);
    va_end(ap);
}

static void note_missing(rep_t *r, const char *what)
{
    size_t k = strlen(r->missing);
    snprintf(r->missing + k, sizeof r->missing - k, "%s%s", k ? "; " : "", what);
}

/* The first of root/cand[i] that exists (caller frees), or NULL. */
static char *find(const char *root, const char *const *cand)
{
    for (int i = 0; cand[i]; i++) {
        char *p = fs_join(root, cand[i]);
        if (p && fs_exists(p))
            return p;
        free(p);
    }
    return NULL;
}

static void cands_text(const char *const *cand, char *buf, size_t cap)
{
    size_t at = 0;
    buf[0] = 0;
    for (int i = 0; cand[i] && at + 4 < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s`%s`", i ? ", " : "", cand[i]);
}

static char *out_path(rep_t *r, const char *name) { return fs_join(r->o->out_dir, name); }

static void figure(rep_t *r, const char *name, const char *caption)
{
    md(r, "![%s](%s%s)\n\n*%s*\n\n", caption, r->o->fig_prefix ? r->o->fig_prefix : "", name,
       caption);
    r->figures++;
}

/* Copies a figure a stage drew; false when it is not there. */
static bool copy_figure(rep_t *r, const char *dir, const char *name, const char *caption)
{
    char *src = fs_join(dir, name), *dst = out_path(r, name), *buf = NULL;
    size_t len;
    err_t e = ERR_INIT;
    bool ok = src && dst && fs_exists(src) && !fs_read_all(src, 64u << 20, &buf, &len, &e) &&
              !atomic_write(dst, buf, len, &e);
    if (ok)
        figure(r, name, caption);
    free(buf);
    free(src);
    free(dst);
    return ok;
}

static double cell(const csv_table_t *t, int row, const char *col)
{
    int c = csv_col(t, col);
    double v = NAN;
    err_t e = ERR_INIT;
    if (c < 0 || csv_cell_double(t, row, c, &v, &e))
        return NAN;
    return v;
}

static const char *cell_s(const csv_table_t *t, int row, const char *col)
{
    int c = csv_col(t, col);
    return c < 0 ? "" : csv_cell(t, row, c);
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* "x ± y" (or "x" without an interval); `none` for a missing x. */
static const char *pm(double x, double ci, const char *none, char *buf, size_t cap)
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
static void md_cell(rep_t *r, const char *s)
{
    md(r, " ");
    for (; *s; s++)
        md(r, "%s", *s == '|' ? "\\|" : *s == '\n' ? " " : (char[2]){*s, 0});
    md(r, " |");
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

static int section_energy(rep_t *r, const char *bdir)
{
    md(r, "## 1. Energy by phase (the PPO baseline)\n\n");
    if (!bdir) {
        md(r, "Absent: no `energy.csv` under `baseline/`, `gpu_baseline/` or the results "
              "directory itself (`mxrlhf baseline` or the pipeline's baseline stage writes it).\n\n");
        note_missing(r, "energy.csv");
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
        if (!strcmp(cell_s(&t, i, "phase"), "total")) {
            total = cell(&t, i, "runtime_s");
            source = cell_s(&t, i, "source");
        }
        any_energy |= isfinite(cell(&t, i, "energy_J"));
    }
    md(r, "From `%s`. Power source: %s.\n\n", path, *source ? source : "not recorded");
    if (!any_energy)
        md(r, "**No power sensor answered on this machine, so no energy was measured**: the "
              "energy cells read \"no sensor\" (they are empty in the CSV, never estimated). "
              "Runtimes are measured.\n\n");
    md(r, "| phase | runtime (s) | share of runtime | avg power (W) | energy (J) | ± (J) | method "
          "| windows |\n|---|---:|---:|---:|---:|---:|---|---:|\n");
    double rt[3] = {NAN, NAN, NAN}, en[3] = {NAN, NAN, NAN}, un[3] = {NAN, NAN, NAN};
    for (int i = 0; i < t.nrows; i++) {
        char a[32], b[32], c2[32], d[32], f[32];
        double runtime = cell(&t, i, "runtime_s"), energy = cell(&t, i, "energy_J");
        for (int k = 0; k < 3; k++)
            if (!strcmp(cell_s(&t, i, "phase"), prec_phase_study_name((prec_phase_t)k))) {
                rt[k] = runtime;
                en[k] = energy;
                un[k] = cell(&t, i, "uncertainty_J");
            }
        snprintf(b, sizeof b, "%.1f", 100 * runtime / total);
        md(r, "| %s | %s | %s%% | %s | %s | %s | %s | %s |\n", cell_s(&t, i, "phase"),
           report_fmt(runtime, a), b,
           isfinite(cell(&t, i, "avg_power_W")) ? report_fmt(cell(&t, i, "avg_power_W"), c2)
                                                 : "no sensor",
           isfinite(energy) ? report_fmt(energy, d) : "no sensor",
           isfinite(energy) ? report_fmt(cell(&t, i, "uncertainty_J"), f) : "—",
           cell_s(&t, i, "method"), cell_s(&t, i, "windows"));
    }
    md(r, "\n");
    const char *cats[3] = {prec_phase_label(PREC_ROLLOUT), prec_phase_label(PREC_REWARD),
                           prec_phase_label(PREC_GRADIENT)};
    const char *ser[1] = {"runtime (s)"};
    svg_bar_chart_t bc = {"Runtime by PPO phase (baseline)", "seconds", cats, 3, ser, 1, rt,
                          NULL, false, 0, 0};
    char *fp = out_path(r, "energy_by_phase.svg");
    if (!any_energy) {
        rc = fp ? svg_write_bar_chart(fp, &bc, r->e) : err_set(r->e, ERR_NOMEM, "out of memory");
        if (!rc)
            figure(r, "energy_by_phase.svg", "Runtime of each phase, summed over the baseline's "
                   "PPO steps. No energy bars: no power sensor.");
    } else {
        const char *ser2[1] = {"energy (J)"};
        svg_bar_chart_t be = {"Energy by PPO phase (baseline)", "joules", cats, 3, ser2, 1, en,
                              un, false, 0, 0};
        rc = fp ? svg_write_bar_chart(fp, &be, r->e) : err_set(r->e, ERR_NOMEM, "out of memory");
        if (!rc)
            figure(r, "energy_by_phase.svg", "Measured energy of each phase, summed over the "
                   "baseline's PPO steps, with its ± (energy.csv's uncertainty_J).");
    }
    free(fp);
    if (!rc && !copy_figure(r, bdir, "power_over_time.svg",
                            any_energy ? "Power over the baseline run, the phases shaded."
                                       : "The phase windows over the baseline run (no power "
                                         "readings without a sensor)."))
        md(r, "(`power_over_time.svg` is not in `%s`.)\n\n", bdir);
    csv_table_free(&t);
    free(path);
    return rc;
}

/* ---- 2. training curves ------------------------------------------------------------------------ */

static int section_training(rep_t *r, const char *bdir)
{
    md(r, "## 2. Training curves (the PPO baseline)\n\n");
    char *path = bdir ? fs_join(bdir, "training_stats.json") : NULL;
    if (!path || !fs_exists(path)) {
        md(r, "Absent: no `training_stats.json` beside the baseline's energy.csv.\n\n");
        note_missing(r, "training_stats.json");
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
    md(r, "From `%s`: %d PPO steps.", path, cJSON_GetArraySize(steps));
    if (cJSON_GetArraySize(steps) > 0) {
        char a[32], b[32], c[32], d[32];
        const cJSON *s0 = cJSON_GetArrayItem(steps, 0),
                    *s1 = cJSON_GetArrayItem(steps, cJSON_GetArraySize(steps) - 1);
        md(r, " Batch reward (reward model) %s at step 1, %s at the last step; per-sequence KL "
              "%s and %s.", report_fmt(jnum(s0, "env/reward_mean"), a),
           report_fmt(jnum(s1, "env/reward_mean"), b), report_fmt(jnum(s0, "objective/kl"), c),
           report_fmt(jnum(s1, "objective/kl"), d));
    }
    md(r, "\n\n");
    if (cJSON_GetArraySize(evals) > 0) {
        md(r, "Held-out evaluations (one sample per prompt, the same random numbers each "
              "time):\n\n| step | prompts | reward model | ground truth | KL (nats) | length "
              "|\n|---:|---:|---:|---:|---:|---:|\n");
        for (const cJSON *ev = evals->child; ev; ev = ev->next) {
            char a[32], b[32], c[32], d[32], f[32], g[32];
            md(r, "| %s | %s | %s | %s | %s | %s |\n", report_fmt(jnum(ev, "step"), a),
               report_fmt(jnum(ev, "prompts"), b), report_fmt(jnum(ev, "reward_mean"), c),
               report_fmt(jnum(ev, "data_synth_score"), d), report_fmt(jnum(ev, "kl"), f),
               report_fmt(jnum(ev, "response_len_mean"), g));
        }
        md(r, "\n");
    }
    if (cJSON_IsObject(bon)) {
        char a[32], b[32], c[32], d[32];
        md(r, "Best-of-%s from the initial policy (for comparison): reward model %s, ground "
              "truth %s, at an analytic KL of %s nats.\n\n", report_fmt(jnum(bon, "n"), a),
           report_fmt(jnum(bon, "reward_mean"), b), report_fmt(jnum(bon, "data_synth_score"), c),
           report_fmt(jnum(bon, "kl_analytic"), d));
    }
    copy_figure(r, bdir, "reward_by_step.svg", "Reward by PPO step (batch mean).");
    copy_figure(r, bdir, "kl_by_step.svg", "KL to the reference and the KL coefficient by step.");
    copy_figure(r, bdir, "losses_by_step.svg", "PPO losses by step.");
    cJSON_Delete(j);
    free(path);
    return ERR_OK;
}

/* ---- 3 and 4. sensitivity heat maps ------------------------------------------------------------ */

/* Columns "<canonical format>_g<block>_delta_pct" of a matrix-layout CSV. */
static int delta_columns(const csv_table_t *t, int *cols, char (*labels)[48], int max)
{
    int n = 0;
    for (int c = 0; c < t->ncols && n < max; c++) {
        const char *h = t->header[c];
        size_t len = strlen(h), k = strlen("_delta_pct");
        if (len <= k || strcmp(h + len - k, "_delta_pct"))
            continue;
        char fmt[64];
        int block = 0;
        const char *g = NULL;
        for (const char *p = h; (p = strstr(p, "_g")); p++)
            g = p;
        if (!g || (size_t)(g - h) >= sizeof fmt || sscanf(g, "_g%d_delta_pct", &block) != 1)
            continue;
        snprintf(fmt, sizeof fmt, "%.*s", (int)(g - h), h);
        mx_format_t f;
        if (mx_format_from_name(fmt, &f) || strcmp(mx_format_name(f), fmt))
            continue; /* the study's alias columns (mxfp4_g8 ...) repeat canonical ones */
        snprintf(labels[n], 48, "%s/%d", fmt, block);
        cols[n++] = c;
    }
    return n;
}

static void short_layer(const char *name, char *buf, size_t cap)
{
    int L;
    char rest[96];
    if (sscanf(name, "model.layers.%d.%95s", &L, rest) == 2) {
        const char *dot = strchr(rest, '.');
        snprintf(buf, cap, "%d.%s", L, dot ? dot + 1 : rest);
    } else {
        snprintf(buf, cap, "%s", name);
    }
}

/* A heat map of a matrix-layout CSV (rows: layers; columns: format/block delta_pct). */
static int heatmap(rep_t *r, const csv_table_t *t, const char *fig, const char *title,
                   double threshold, int *ncols_out)
{
    int cols[64];
    char labels[64][48];
    int nc = delta_columns(t, cols, labels, 64), lc = csv_col(t, "layer");
    *ncols_out = nc;
    if (!nc || lc < 0 || !t->nrows)
        return ERR_OK;
    double *v = calloc((size_t)t->nrows * nc, sizeof *v);
    char(*rl)[64] = calloc((size_t)t->nrows, sizeof *rl);
    const char **rows = calloc((size_t)t->nrows, sizeof *rows), *cl[64];
    int rc = v && rl && rows ? ERR_OK : err_set(r->e, ERR_NOMEM, "out of memory");
    for (int i = 0; !rc && i < t->nrows; i++) {
        short_layer(csv_cell(t, i, lc), rl[i], sizeof rl[i]);
        rows[i] = rl[i];
        for (int c = 0; c < nc; c++) {
            err_t e2 = ERR_INIT;
            if (csv_cell_double(t, i, cols[c], &v[(size_t)i * nc + c], &e2))
                v[(size_t)i * nc + c] = NAN;
        }
    }
    for (int c = 0; c < nc; c++)
        cl[c] = labels[c];
    char *fp = out_path(r, fig);
    if (!rc) {
        svg_heatmap_t h = {title, "perplexity change (%)", rows, cl, t->nrows, nc, v, 0, 0, true,
                           false, threshold};
        rc = fp ? svg_write_heatmap(fp, &h, r->e) : err_set(r->e, ERR_NOMEM, "out of memory");
    }
    free(fp);
    free(v);
    free(rl);
    free(rows);
    return rc;
}

static double threshold_of(const char *root)
{
    static const char *const c[] = {"sensitivity/sensitivity_metrics.json",
                                    "sensitivity_metrics.json", NULL};
    char *p = find(root, c);
    cJSON *j = NULL;
    err_t e = ERR_INIT;
    double th = NAN;
    if (p && !json_load_file(p, 16u << 20, &j, &e))
        th = jnum(cJSON_GetObjectItemCaseSensitive(j, "options"), "threshold_pct");
    cJSON_Delete(j);
    free(p);
    return th;
}

static int section_sensitivity(rep_t *r)
{
    static const char *const c[] = {"sensitivity/sensitivity_matrix.csv", "sensitivity_matrix.csv",
                                    NULL};
    md(r, "## 3. Sensitivity: layers × format and block\n\n");
    char *path = find(r->o->results, c);
    if (!path) {
        char l[256];
        cands_text(c, l, sizeof l);
        md(r, "Absent: none of %s.\n\n", l);
        note_missing(r, "sensitivity_matrix.csv");
        return ERR_OK;
    }
    csv_table_t t;
    int rc = csv_load(path, &t, r->e);
    if (rc) {
        free(path);
        return rc;
    }
    r->present++;
    double th = threshold_of(r->o->results);
    bool th_known = isfinite(th);
    if (!th_known)
        th = 2;
    int nc;
    rc = heatmap(r, &t, "sensitivity_heatmap.svg",
                 "Perplexity change with one layer quantized (%)", th, &nc);
    char thb[32];
    md(r, "From `%s`: %d layers, %d format/block pairs. Each cell is the change in perplexity "
          "(%%) when that layer alone has its forward weight and input quantized; outlined "
          "cells exceed the tolerance threshold of %s%%%s.\n\n", path, t.nrows, nc,
       report_fmt(th, thb), th_known ? "" : " (assumed: sensitivity_metrics.json not found)");
    if (!rc && nc) {
        figure(r, "sensitivity_heatmap.svg", "Sensitivity matrix: rows are layers "
               "(block.projection), columns format/block size; colour on a symmetric log scale.");
        /* tolerant counts and worst layer per column */
        int cols[64];
        char labels[64][48];
        delta_columns(&t, cols, labels, 64);
        md(r, "| format/block | tolerant layers | largest change (%%) | at layer |\n"
              "|---|---:|---:|---|\n");
        for (int k = 0; k < nc; k++) {
            int tol = 0, worst = -1;
            double wv = -INFINITY;
            for (int i = 0; i < t.nrows; i++) {
                double v = NAN;
                err_t e2 = ERR_INIT;
                if (csv_cell_double(&t, i, cols[k], &v, &e2))
                    v = NAN;
                if (isfinite(v) && v < th)
                    tol++;
                if (isfinite(v) && v > wv)
                    wv = v, worst = i;
            }
            char a[32];
            md(r, "| %s | %d of %d | %s | %s |\n", labels[k], tol, t.nrows, report_fmt(wv, a),
               worst >= 0 ? cell_s(&t, worst, "layer") : "");
        }
        md(r, "\n(tolerant: change below %s%%, counted from the delta_pct cells.)\n\n", thb);
    }
    csv_table_free(&t);
    free(path);
    return rc;
}

static int section_phase(rep_t *r)
{
    md(r, "## 4. Sensitivity by RLHF phase\n\n");
    int found = 0, rc = ERR_OK;
    double th = threshold_of(r->o->results);
    for (int k = 0; k < 3 && !rc; k++) {
        char n1[64], n2[64], n3[96], n4[96];
        snprintf(n1, sizeof n1, "sensitivity_%s.csv", prec_phase_name((prec_phase_t)k));
        snprintf(n2, sizeof n2, "sensitivity_%s.csv", prec_phase_study_name((prec_phase_t)k));
        snprintf(n3, sizeof n3, "phase_sensitivity/%s", n1);
        snprintf(n4, sizeof n4, "phase_sensitivity/%s", n2);
        const char *c[] = {n3, n4, n1, n2, NULL};
        char *path = find(r->o->results, c);
        if (!path)
            continue;
        csv_table_t t;
        if ((rc = csv_load(path, &t, r->e))) {
            free(path);
            break;
        }
        found++;
        char fig[64], title[128];
        const char *pn = prec_phase_name((prec_phase_t)k);
        snprintf(fig, sizeof fig, "sensitivity_%s_heatmap.svg", pn);
        snprintf(title, sizeof title, "Phase %s: change with one layer quantized (%%)", pn);
        int nc;
        rc = heatmap(r, &t, fig, title, isfinite(th) ? th : 2, &nc);
        md(r, "### Phase: %s\n\nFrom `%s`: %d rows, %d columns.\n\n", pn, path, t.nrows,
           t.ncols);
        if (!rc && nc) {
            figure(r, fig, title);
        } else if (!rc) {
            /* not the matrix's delta layout: the table as it is (first rows and columns) */
            int ncol = t.ncols < 8 ? t.ncols : 8, nrow = t.nrows < 40 ? t.nrows : 40;
            md(r, "|");
            for (int c2 = 0; c2 < ncol; c2++)
                md_cell(r, t.header[c2]);
            md(r, "\n|");
            for (int c2 = 0; c2 < ncol; c2++)
                md(r, "---|");
            md(r, "\n");
            for (int i = 0; i < nrow; i++) {
                md(r, "|");
                for (int c2 = 0; c2 < ncol; c2++)
                    md_cell(r, csv_cell(&t, i, c2));
                md(r, "\n");
            }
            md(r, "\n%s\n", nrow < t.nrows || ncol < t.ncols ? "(first rows and columns only)\n"
                                                           : "");
        }
        csv_table_free(&t);
        free(path);
    }
    if (!rc && !found) {
        md(r, "Absent: no `sensitivity_rollout.csv`, `sensitivity_reward.csv` or "
              "`sensitivity_gradient.csv` (under `phase_sensitivity/` or the results directory). "
              "`mxrlhf sensitivity --phase rollout|reward|gradient` writes them.\n\n");
        note_missing(r, "phase sensitivity CSVs");
    }
    if (found)
        r->present++;
    return rc;
}

/* ---- 5. policies ------------------------------------------------------------------------------- */

static int section_policies(rep_t *r)
{
    static const char *const c[] = {"policies/policies.json", "policies.json", NULL};
    md(r, "## 5. Policies\n\n");
    char *path = find(r->o->results, c);
    if (!path) {
        char l[256];
        cands_text(c, l, sizeof l);
        md(r, "Absent: none of %s.\n\n", l);
        note_missing(r, "policies.json");
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
    md(r, "From `%s`.", path);
    if (cJSON_IsObject(ppl))
    {
        char c2[32];
        md(r, " Unquantized perplexity %s; per-layer threshold %s%%, whole-model budget %s%%.",
           report_fmt(jnum(ppl, "baseline_ppl"), a), report_fmt(jnum(ppl, "threshold_pct"), b),
           report_fmt(jnum(ppl, "budget_pct"), c2));
    }
    md(r, " Combined perplexity: the plan's forward in each phase on the evaluation set "
          "(Δ against unquantized).\n\n| plan | gradient compute | rules | rollout ppl (Δ%%) | "
          "reward ppl (Δ%%) | gradient ppl (Δ%%) | description |\n|---|---|---:|---:|---:|---:|---|\n");
    for (const cJSON *p = cJSON_IsObject(plans) ? plans->child : NULL; p; p = p->next) {
        const char *comp = jstr(p, "compute");
        md(r, "| %s | %s | %d |", p->string, comp ? comp : "fp32",
           cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(p, "rules")));
        const cJSON *pp = cJSON_GetObjectItemCaseSensitive(pplp, p->string);
        for (int k = 0; k < 3; k++) {
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(pp, prec_phase_name((prec_phase_t)k));
            if (cJSON_IsObject(x))
                md(r, " %s (%s%s) |", report_fmt(jnum(x, "ppl"), a),
                   jnum(x, "delta_pct") > 0 ? "+" : "", report_fmt(jnum(x, "delta_pct"), b));
            else
                md(r, " n/a |");
        }
        const char *d = jstr(p, "description");
        md_cell(r, d ? d : "");
        md(r, "\n");
    }
    md(r, "\n");
    cJSON_Delete(j);
    free(path);
    return ERR_OK;
}

/* ---- 6. the comparison ------------------------------------------------------------------------- */

typedef struct plan_row {
    char plan[64];
    int total_row, phase_row[3];
} plan_row_t;

static int section_compare(rep_t *r)
{
    static const char *const c[] = {"compare/policy_comparison.csv", "policy_comparison.csv", NULL};
    md(r, "## 6. The policies under PPO\n\n");
    char *path = find(r->o->results, c);
    if (!path) {
        char l[256];
        cands_text(c, l, sizeof l);
        md(r, "Absent: none of %s (`mxrlhf compare` writes it).\n\n", l);
        note_missing(r, "policy_comparison.csv");
        return ERR_OK;
    }
    char *dir = strdup(path);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash)
        *slash = 0;
    char *jp = dir ? fs_join(dir, "comparison.json") : NULL, *rp = dir ? fs_join(dir, "compare_runs.csv") : NULL;
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
        const char *p = cell_s(&t, i, "plan"), *ph = cell_s(&t, i, "phase");
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
        energy |= isfinite(cell(&t, i, "energy_J"));
    md(r, "From `%s`%s.", path, j ? " and comparison.json" : "");
    const cJSON *opts = j ? cJSON_GetObjectItemCaseSensitive(j, "options") : NULL;
    if (j) {
        const char *note = jstr(j, "note"), *order = jstr(j, "order_rule"),
                   *state = jstr(j, "device_state");
        char a[32];
        md(r, " %s seeds; %s. Run order: %s. Clocks and temperature: %s.", report_fmt(jnum(opts, "seeds"), a),
           note ? note : "", order ? order : "?", state ? state : "?");
    }
    md(r, "\n\n**The comparison runs are shortened PPO runs** (the number of steps is in the "
          "`steps` column), not the baseline's full run: they compare the plans with each other "
          "under identical conditions, not the final quality of a full training.\n\n");
    const cJSON *ck = j ? cJSON_GetObjectItemCaseSensitive(j, "control_check") : NULL;
    if (ck) {
        const char *msg = jstr(ck, "message");
        md(r, "**Control check** (plan `%s`, the unquantized computation under a plan's name): "
              "%s.\n\n", jstr(ck, "plan") ? jstr(ck, "plan") : "?", msg ? msg : "?");
    }
    if (!energy)
        md(r, "No power sensor: energy and energy-ratio cells read \"no sensor\"; quality is "
              "plotted against measured runtime and modelled memory traffic instead.\n\n");
    md(r, "### Totals (mean ± 95%% interval over seeds; ratios to the unquantized run of the "
          "same seed)\n\n| plan | execution | steps | runtime (s) | × runtime | energy (J) | × "
          "energy | modelled traffic (GB) | × bf16 (modelled) | final reward | KL (nats) | RM "
          "accuracy | win rate (judge) | win rate (truth) |\n|---|---|---:|---:|---:|---:|---:|"
          "---:|---:|---:|---:|---:|---:|---:|\n");
    for (int k = 0; k < np; k++) {
        int i = pr[k].total_row;
        if (i < 0)
            continue;
        char b[10][96], g[32];
        md(r, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
           pr[k].plan, cell_s(&t, i, "execution"), cell_s(&t, i, "steps"),
           pm(cell(&t, i, "runtime_s"), cell(&t, i, "runtime_s_ci95"), "n/a", b[0], 96),
           pm(cell(&t, i, "runtime_ratio"), cell(&t, i, "runtime_ratio_ci95"), "n/a", b[1], 96),
           pm(cell(&t, i, "energy_J"), cell(&t, i, "energy_J_ci95"), "no sensor", b[2], 96),
           pm(cell(&t, i, "energy_ratio"), cell(&t, i, "energy_ratio_ci95"), "no sensor", b[3], 96),
           report_fmt(cell(&t, i, "modelled_traffic_bytes") / 1e9, g),
           pm(cell(&t, i, "modelled_traffic_ratio"), NAN, "n/a", b[4], 96),
           pm(cell(&t, i, "final_reward"), cell(&t, i, "final_reward_ci95"), "n/a", b[5], 96),
           pm(cell(&t, i, "kl"), cell(&t, i, "kl_ci95"), "n/a", b[6], 96),
           pm(cell(&t, i, "rm_accuracy"), cell(&t, i, "rm_accuracy_ci95"), "n/a", b[7], 96),
           pm(cell(&t, i, "win_rate_judge"), cell(&t, i, "win_rate_judge_ci95"), "n/a", b[8], 96),
           pm(cell(&t, i, "win_rate_true"), cell(&t, i, "win_rate_true_ci95"), "n/a", b[9], 96));
    }
    md(r, "\nexecution: `emulated` means the plan's MX or 16-bit formats were computed in higher "
          "precision (fake quantization) on this backend, so runtimes and energies measure the "
          "emulation, not MX hardware; the modelled columns say what the formats would move. "
          "Final reward: the trained reward model's mean score of the final held-out samples "
          "(under the plan's reward phase). RM accuracy: the reward model under the plan's "
          "reward phase on rm_eval pairs (binomial interval). Win rates: the plan's final "
          "held-out samples against the unquantized run's of the same seed, judged by the "
          "held-out judge reward model and by the synthetic task's ground truth (ties half).\n\n");
    md(r, "### By phase\n\n| plan | phase | execution | runtime (s) | × runtime | energy (J) | "
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
            double macs = cell(&t, i, "modelled_macs");
            for (int z = 0; z < 5; z++)
                snprintf(w[z], 32, "%.0f%%", macs > 0 ? 100 * cell(&t, i, wc[z]) / macs : 0.0);
            md(r, "| %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s / %s / %s |\n",
               pr[k].plan, prec_phase_study_name((prec_phase_t)q), cell_s(&t, i, "execution"),
               pm(cell(&t, i, "runtime_s"), cell(&t, i, "runtime_s_ci95"), "n/a", b[0], 96),
               pm(cell(&t, i, "runtime_ratio"), cell(&t, i, "runtime_ratio_ci95"), "n/a", b[1], 96),
               pm(cell(&t, i, "energy_J"), cell(&t, i, "energy_J_ci95"), "no sensor", b[2], 96),
               pm(cell(&t, i, "modelled_traffic_ratio"), NAN, "n/a", b[3], 96),
               report_fmt(macs / 1e9, m), w[0], w[1], w[2], w[3], w[4]);
        }
    md(r, "\n");
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
            rt[q * np + ncat] = i >= 0 ? cell(&t, i, "runtime_s") : NAN;
            rte[q * np + ncat] = i >= 0 ? cell(&t, i, "runtime_s_ci95") : NAN;
            en[q * np + ncat] = i >= 0 ? cell(&t, i, "energy_J") : NAN;
            ene[q * np + ncat] = i >= 0 ? cell(&t, i, "energy_J_ci95") : NAN;
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
    char *fp = out_path(r, "runtime_by_plan.svg");
    svg_bar_chart_t bc = {"Runtime by plan and phase (mean over seeds)", "seconds", cats, ncat,
                          phl, 3, rt, NULL, true, 0, 0};
    if (!rc && ncat)
        rc = fp ? svg_write_bar_chart(fp, &bc, r->e) : err_set(r->e, ERR_NOMEM, "out of memory");
    if (!rc && ncat)
        figure(r, "runtime_by_plan.svg", "Runtime of each phase by plan, stacked (mean over "
               "seeds).");
    free(fp);
    if (!rc && energy && ncat) {
        fp = out_path(r, "energy_by_plan.svg");
        svg_bar_chart_t be = {"Energy by plan and phase (mean over seeds)", "joules", cats, ncat,
                              phl, 3, en, NULL, true, 0, 0};
        rc = fp ? svg_write_bar_chart(fp, &be, r->e) : err_set(r->e, ERR_NOMEM, "out of memory");
        if (!rc)
            figure(r, "energy_by_plan.svg", "Measured energy of each phase by plan, stacked.");
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
            svg_point_t q = {lab[n], cell(&t, i, sc[s].x), cell(&t, i, "win_rate_judge"),
                             sc[s].xci ? cell(&t, i, sc[s].xci) : NAN,
                             cell(&t, i, "win_rate_judge_ci95")};
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
        fp = out_path(r, sc[s].fig);
        svg_scatter_t ss = {sc[s].title, sc[s].xlabel, "win rate vs unquantized (judge)", pts, n, 0, 0};
        rc = fp ? svg_write_scatter(fp, &ss, r->e) : err_set(r->e, ERR_NOMEM, "out of memory");
        if (!rc)
            figure(r, sc[s].fig, sc[s].caption);
        free(fp);
    }
    /* the runs in order: drift */
    csv_table_t rt2;
    err_t re = ERR_INIT;
    if (!rc && fs_exists(rp) && !csv_load(rp, &rt2, &re)) {
        bool st = false;
        for (int i = 0; i < rt2.nrows; i++)
            st |= isfinite(cell(&rt2, i, "sm_clock_MHz_start")) ||
                  isfinite(cell(&rt2, i, "temperature_C_start"));
        md(r, "### The runs in the order they ran\n\nFrom `%s`. %s\n\n| # | plan | seed | wall "
              "(s) | total phases (s) | energy (J) | load (1 min) |%s\n|---:|---|---:|---:|---:|"
              "---:|---:|%s\n", rp,
           st ? "Clocks and temperature: the slowest clock and the hottest device, before → after."
              : "No clock or temperature readings (only NVML gives them).",
           st ? " SM clock (MHz) | temperature (°C) |" : "", st ? "---:|---:|" : "");
        double *x = calloc((size_t)rt2.nrows + 1, sizeof *x), *y = calloc((size_t)(rt2.nrows + 1) * np, sizeof *y);
        for (int i = 0; i < rt2.nrows; i++) {
            char a[32], b[32], c2[32], d[32], f[32], g[32], h[32], k2[32], l[32];
            double en2 = cell(&rt2, i, "total_J");
            md(r, "| %s | %s | %s | %s | %s | %s | %s → %s |", cell_s(&rt2, i, "order"),
               cell_s(&rt2, i, "plan"), cell_s(&rt2, i, "seed"),
               report_fmt(cell(&rt2, i, "wall_s"), a), report_fmt(cell(&rt2, i, "total_s"), b),
               isfinite(en2) ? report_fmt(en2, c2) : "no sensor",
               report_fmt(cell(&rt2, i, "load_1min_start"), d),
               report_fmt(cell(&rt2, i, "load_1min_end"), f));
            if (st)
                md(r, " %s → %s | %s → %s |", report_fmt(cell(&rt2, i, "sm_clock_MHz_start"), g),
                   report_fmt(cell(&rt2, i, "sm_clock_MHz_end"), h),
                   report_fmt(cell(&rt2, i, "temperature_C_start"), k2),
                   report_fmt(cell(&rt2, i, "temperature_C_end"), l));
            md(r, "\n");
        }
        md(r, "\n");
        if (x && y) {
            /* each plan's runs as one line (its own points only, so the line joins them) */
            svg_series_t ser[16];
            double *xs = calloc((size_t)(rt2.nrows + 1) * np, sizeof *xs);
            for (int k = 0; xs && k < np; k++) {
                double *xk = xs + (size_t)k * rt2.nrows, *yk = y + (size_t)k * rt2.nrows;
                int m = 0;
                for (int i = 0; i < rt2.nrows; i++)
                    if (!strcmp(cell_s(&rt2, i, "plan"), pr[k].plan)) {
                        xk[m] = cell(&rt2, i, "order");
                        yk[m++] = cell(&rt2, i, "total_s");
                    }
                ser[k] = (svg_series_t){pr[k].plan, xk, yk, NULL, m};
            }
            svg_line_chart_t lc = {"Phase time of each run, in run order", "run (order)",
                                   "seconds in the three phases", ser, np, NULL, 0, 0, 0};
            fp = out_path(r, "runs_in_order.svg");
            rc = fp && xs ? svg_write_line_chart(fp, &lc, r->e) : err_set(r->e, ERR_NOMEM, "oom");
            free(xs);
            if (!rc)
                figure(r, "runs_in_order.svg", "Each run's time in the three phases against its "
                       "position in the run order (drift shows as a trend common to all plans).");
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
                md(r, "## 7. Stage times (from each stage's stage.json)\n\n| stage | wall (s) "
                      "| CPU (s) | finished |\n|---|---:|---:|---|\n");
            char a[32], b[32];
            const char *fin = jstr(j, "finished");
            md(r, "| %s | %s | %s | %s |\n", st[i], report_fmt(jnum(j, "seconds"), a),
               report_fmt(jnum(j, "cpu_seconds"), b), fin ? fin : "");
            tot += isfinite(jnum(j, "seconds")) ? jnum(j, "seconds") : 0;
            cpu += isfinite(jnum(j, "cpu_seconds")) ? jnum(j, "cpu_seconds") : 0;
            n++;
        }
        cJSON_Delete(j);
        free(p);
    }
    if (n) {
        char a[32], b[32];
        md(r, "| all | %s | %s | |\n\n", report_fmt(tot, a), cpu > 0 ? report_fmt(cpu, b) : "n/a");
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
    md(&r, "# mxrlhf study report\n\nGenerated %s from `%s` by mxrlhf. Every number below is "
           "read from the file its section names; regenerate with `mxrlhf report --results %s`."
           "\n\n", when, o->results, o->results);
    char *bdir = baseline_dir(o->results);
    rc = section_energy(&r, bdir);
    if (!rc)
        rc = section_training(&r, bdir);
    if (!rc)
        rc = section_sensitivity(&r);
    if (!rc)
        rc = section_phase(&r);
    if (!rc)
        rc = section_policies(&r);
    if (!rc)
        rc = section_compare(&r);
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
