/* study_sens: the report's sections 3 and 4, the sensitivity heat maps of the matrix and of
 * each RLHF phase (study_internal.h). */
#include "report/study_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "precision/precision.h"
#include "report/svg.h"
#include "util/json.h"

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
    char *fp = study_out_path(r, fig);
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
    char *p = study_find(root, c);
    cJSON *j = NULL;
    err_t e = ERR_INIT;
    double th = NAN;
    if (p && !json_load_file(p, 16u << 20, &j, &e))
        th = study_jnum(cJSON_GetObjectItemCaseSensitive(j, "options"), "threshold_pct");
    cJSON_Delete(j);
    free(p);
    return th;
}

int study_section_sensitivity(rep_t *r)
{
    static const char *const c[] = {"sensitivity/sensitivity_matrix.csv", "sensitivity_matrix.csv",
                                    NULL};
    study_md(r, "## 3. Sensitivity: layers × format and block\n\n");
    char *path = study_find(r->o->results, c);
    if (!path) {
        char l[256];
        study_cands_text(c, l, sizeof l);
        study_md(r, "Absent: none of %s.\n\n", l);
        study_note_missing(r, "sensitivity_matrix.csv");
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
    study_md(r,
             "From `%s`: %d layers, %d format/block pairs. Each cell is the change in perplexity "
             "(%%) when that layer alone has its forward weight and input quantized; outlined "
             "cells exceed the tolerance threshold of %s%%%s.\n\n",
             path, t.nrows, nc, report_fmt(th, thb),
             th_known ? "" : " (assumed: sensitivity_metrics.json not found)");
    if (!rc && nc) {
        study_figure(r, "sensitivity_heatmap.svg",
                     "Sensitivity matrix: rows are layers "
                     "(block.projection), columns format/block size; colour on a symmetric log "
                     "scale.");
        /* tolerant counts and worst layer per column */
        int cols[64];
        char labels[64][48];
        delta_columns(&t, cols, labels, 64);
        study_md(r, "| format/block | tolerant layers | largest change (%%) | at layer |\n"
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
            study_md(r, "| %s | %d of %d | %s | %s |\n", labels[k], tol, t.nrows, report_fmt(wv, a),
                     worst >= 0 ? study_cell_s(&t, worst, "layer") : "");
        }
        study_md(r, "\n(tolerant: change below %s%%, counted from the delta_pct cells.)\n\n", thb);
    }
    csv_table_free(&t);
    free(path);
    return rc;
}

/* The layers a phase's table marks not tolerant at MXFP4 (its `mxfp4_tolerant` column), named:
 * the finding a reader looks for in a table too wide to print. */
static bool not_tolerant(const csv_table_t *t, int row, int col)
{
    bool v = true;
    err_t e = ERR_INIT;
    return !csv_cell_bool(t, row, col, &v, &e) && !v;
}

static void phase_not_tolerant(rep_t *r, const csv_table_t *t, const char *phase)
{
    int col = csv_col(t, "mxfp4_tolerant"), lc = csv_col(t, "layer");
    if (col < 0 || lc < 0)
        return;
    int n = 0;
    for (int i = 0; i < t->nrows; i++)
        n += not_tolerant(t, i, col);
    if (!n) {
        study_md(r, "Every layer is tolerant at MXFP4 in the %s phase (column `mxfp4_tolerant`).\n\n",
                 phase);
        return;
    }
    study_md(r, "Not tolerant at MXFP4 in the %s phase (column `mxfp4_tolerant`): %d of %d layers:",
             phase, n, t->nrows);
    for (int i = 0, k = 0; i < t->nrows; i++)
        if (not_tolerant(t, i, col))
            study_md(r, "%s `%s`", k++ ? "," : "", csv_cell(t, i, lc));
    study_md(r, ".\n\n");
}

int study_section_phase(rep_t *r)
{
    study_md(r, "## 4. Sensitivity by RLHF phase\n\n");
    int found = 0, rc = ERR_OK;
    double th = threshold_of(r->o->results);
    for (int k = 0; k < 3 && !rc; k++) {
        char n1[64], n2[64], n3[96], n4[96];
        snprintf(n1, sizeof n1, "sensitivity_%s.csv", prec_phase_name((prec_phase_t)k));
        snprintf(n2, sizeof n2, "sensitivity_%s.csv", prec_phase_study_name((prec_phase_t)k));
        snprintf(n3, sizeof n3, "phase_sensitivity/%s", n1);
        snprintf(n4, sizeof n4, "phase_sensitivity/%s", n2);
        const char *c[] = {n3, n4, n1, n2, NULL};
        char *path = study_find(r->o->results, c);
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
        study_md(r, "### Phase: %s\n\nFrom `%s`: %d rows, %d columns.\n\n", pn, path, t.nrows,
                 t.ncols);
        if (!rc && nc) {
            study_figure(r, fig, title);
        } else if (!rc) {
            /* not the matrix's delta layout: the table as it is (first rows and columns) */
            int ncol = t.ncols < 8 ? t.ncols : 8, nrow = t.nrows < 40 ? t.nrows : 40;
            study_md(r, "|");
            for (int c2 = 0; c2 < ncol; c2++)
                study_md_cell(r, t.header[c2]);
            study_md(r, "\n|");
            for (int c2 = 0; c2 < ncol; c2++)
                study_md(r, "---|");
            study_md(r, "\n");
            for (int i = 0; i < nrow; i++) {
                study_md(r, "|");
                for (int c2 = 0; c2 < ncol; c2++) {
                    /* numbers at six significant digits (a cosine of 0.999947 keeps its
                     * point; the CSV keeps all 17), other cells as they are */
                    double v;
                    char num[32];
                    err_t e2 = ERR_INIT;
                    bool isnum = !csv_cell_double(&t, i, c2, &v, &e2) && !isnan(v);
                    if (isnum)
                        snprintf(num, sizeof num, "%.6g", v);
                    study_md_cell(r, isnum ? num : csv_cell(&t, i, c2));
                }
                study_md(r, "\n");
            }
            study_md(r, "\n%s\n",
                     nrow < t.nrows || ncol < t.ncols ? "(first rows and columns only; the CSV has "
                     "every digit)\n" : "");
            phase_not_tolerant(r, &t, pn);
        }
        csv_table_free(&t);
        free(path);
    }
    if (!rc && !found) {
        study_md(r, "Absent: no `sensitivity_rollout.csv`, `sensitivity_reward.csv` or "
                    "`sensitivity_gradient.csv` (under `phase_sensitivity/` or the results "
                    "directory). "
                    "`mxrlhf sensitivity --phase rollout|reward|gradient` writes them.\n\n");
        study_note_missing(r, "phase sensitivity CSVs");
    }
    if (found)
        r->present++;
    return rc;
}
