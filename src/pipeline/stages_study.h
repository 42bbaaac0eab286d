/* stages_study: the study's last two stages (issue 9), kept apart from stages.c so that
 * stages added beside them do not touch their code; stages.c's table names them.
 *
 *   compare  reads data (splits), sft, rm, judge and policies: PPO under each plan against
 *            the unquantized baseline (pipeline/compare.h) into <output>/compare/;
 *   report   reads baseline, sensitivity, policies, compare and, when present,
 *            phase_sensitivity: report.md and its figures (report/study.h) into
 *            <output>/report/, and the same report.md at <output>/report.md with its figure
 *            links into report/.
 */
#ifndef MXRLHF_PIPELINE_STAGES_STUDY_H
#define MXRLHF_PIPELINE_STAGES_STUDY_H

#include "pipeline/stage.h"

int pipeline_stage_compare(pipeline_ctx_t *c, err_t *e);
int pipeline_stage_report(pipeline_ctx_t *c, err_t *e);

/* The phase_sensitivity stage's directory when it exists: an input of the report (its
 * fingerprint), so the report is redone when those files change, whether or not that stage
 * is in the table. */
const char *pipeline_report_external(const pipeline_run_opts_t *o, char *buf, size_t cap);

#endif
