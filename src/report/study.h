/* study: the study report — report.md with its tables and SVG figures, built only from the
 * files the stages wrote (so every number in it is the number in a CSV or JSON file).
 *
 * Where it looks. A results directory in either layout:
 *   `mxrlhf run`'s:   baseline/, sensitivity/, policies/, phase_sensitivity/, compare/
 *                     (each stage's directory), plus each stage's stage.json for timings;
 *   the study's:      gpu_baseline/ (or the files at the top), sensitivity_matrix.csv,
 *                     policies.json, policy_comparison.csv, sensitivity_<phase>.csv.
 * Each section names the files it read; a missing file makes its section say so instead of
 * failing (the report of a partial chain is still a report). Empty energy cells render as
 * "no sensor", never as 0.
 *
 * Sections: 1 energy by phase (energy.csv; power over time), 2 training curves
 * (training_stats.json), 3 sensitivity heat map (layers x format and block), 4 phase
 * sensitivity, 5 policies (with combined perplexities), 6 the policies under PPO
 * (policy_comparison.csv, comparison.json: totals, phases, the control check, quality against
 * energy), 7 stage times.
 */
#ifndef MXRLHF_REPORT_STUDY_H
#define MXRLHF_REPORT_STUDY_H

#include <stddef.h>

#include "util/err.h"

typedef struct report_study_opts {
    const char *results;     /* the results directory (either layout) */
    const char *out_dir;     /* figures and report.md go here (created) */
    const char *md_path;     /* the markdown file (NULL: out_dir/report.md) */
    const char *fig_prefix;  /* prefix of figure links in the markdown ("" when the
                                markdown sits in out_dir; "report/" for results/report.md) */
} report_study_opts_t;

typedef struct report_study_result {
    int sections_present;    /* of the 6 data sections */
    int figures;
    char missing[1024];      /* what was absent, for the caller's log */
} report_study_result_t;

int report_study_write(const report_study_opts_t *o, report_study_result_t *res, err_t *e);

/* The number format of the report's tables (so tests can state what a cell reads):
 * an integer (below 1e15) without decimals; else |v| >= 1e4: "%.0f"; >= 100: "%.1f";
 * >= 1: "%.3f"; >= 1e-3: "%.4f"; else "%.3g";
 * a non-finite value -> "n/a". buf >= 32 bytes. */
const char *report_fmt(double v, char *buf);

#endif
