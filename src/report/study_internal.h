/* study_internal: what the report's files share (study.h is the interface).
 *
 * study.c          the writer and its helpers; sections 1 (energy by phase), 2 (training
 *                  curves), 5 (policies) and 7 (stage times); report_study_write
 * study_sens.c     sections 3 and 4: the sensitivity heat maps, the matrix's and each phase's
 * study_compare.c  section 6: PPO under each plan against the unquantized baseline
 */
#ifndef MXRLHF_REPORT_STUDY_INTERNAL_H
#define MXRLHF_REPORT_STUDY_INTERNAL_H

#include <cJSON.h>
#include <stdbool.h>
#include <stdio.h>

#include "report/csv_read.h"
#include "report/study.h"

/* ---- the writer's state --------------------------------------------------------------------- */

typedef struct rep {
    const report_study_opts_t *o;
    FILE *md;
    int figures, present;
    char missing[1024];
    err_t *e;
} rep_t;

/* report.md text */
void study_md(rep_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void study_note_missing(rep_t *r, const char *what);
/* the first of cand[] (NULL-terminated paths under root) that exists, or NULL */
char *study_find(const char *root, const char *const *cand);
void study_cands_text(const char *const *cand, char *buf, size_t cap);
char *study_out_path(rep_t *r, const char *name);
void study_figure(rep_t *r, const char *name, const char *caption);
/* a CSV cell as a number (NAN when empty or absent) or as text */
double study_cell(const csv_table_t *t, int row, const char *col);
const char *study_cell_s(const csv_table_t *t, int row, const char *col);
/* a JSON member as a number (NAN) or as text (NULL) */
double study_jnum(const cJSON *o, const char *k);
const char *study_jstr(const cJSON *o, const char *k);
/* "x ± ci", or `none` */
const char *study_pm(double x, double ci, const char *none, char *buf, size_t cap);
void study_md_cell(rep_t *r, const char *s);
/* the sections in study_sens.c and study_compare.c */
int study_section_sensitivity(rep_t *r);
int study_section_phase(rep_t *r);
int study_section_compare(rep_t *r);

#endif
