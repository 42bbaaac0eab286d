/* stages_study: the pipeline's last two stages (issue 9), compare and report; their rows are
 * in stages.c's table (stages_study.h). */
#include "pipeline/stages_study.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/compare.h"
#include "report/study.h"
#include "util/fs.h"

/* The prompt texts of one split (the list is freed by the caller; the texts belong to the
 * run). */
static int prompts_of(pipeline_ctx_t *c, data_split_t split, const char ***out, size_t *n,
                      err_t *e)
{
    const data_pair_t **p;
    int rc = pipeline_split_pairs(c, split, &p, n, e);
    if (rc)
        return rc;
    if (!(*out = malloc((*n + 1) * sizeof **out)))
        return err_set(e, ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < *n; i++)
        (*out)[i] = p[i]->prompt;
    return ERR_OK;
}

int pipeline_stage_compare(pipeline_ctx_t *c, err_t *e)
{
    const char **train = NULL, **eval = NULL;
    const data_pair_t **rm_eval = NULL;
    size_t ntrain = 0, neval = 0, nrm = 0;
    backend_t *be = NULL;
    char *pol = fs_join(pipeline_stage_dir(c, "policies"), "policies.json");
    int rc = pol ? prompts_of(c, DATA_SPLIT_PPO, &train, &ntrain, e) : err_set(e, ERR_NOMEM, "oom");
    if (!rc)
        rc = prompts_of(c, DATA_SPLIT_EVAL, &eval, &neval, e);
    if (!rc)
        rc = pipeline_split_pairs(c, DATA_SPLIT_RM_EVAL, &rm_eval, &nrm, e);
    if (!rc)
        rc = pipeline_backend(c, &be, e);
    pipeline_compare_result_t r;
    if (!rc) {
        pipeline_compare_t pc = {
            .be = be, .backend_name = c->opts->backend ? c->opts->backend : "cpu",
            .policy_dir = pipeline_stage_dir(c, "sft"), .reward_dir = pipeline_stage_dir(c, "rm"),
            .judge_dir = pipeline_stage_dir(c, "judge"), .policies_path = pol,
            .prompts = train, .n_prompts = ntrain, .eval_prompts = eval, .n_eval = neval,
            .rm_eval = rm_eval, .n_rm_eval = nrm, .synthetic = !c->opts->data,
            .rm_opts = &c->cfg->rm, .judge_opts = &c->cfg->judge, .out_dir = c->dir,
            .log = c->log->fn ? stderr : NULL};
        rc = pipeline_compare_run(&c->cfg->compare, &c->cfg->ppo, &pc, &r, e);
    }
    if (!rc)
        rlhf_logf(c->log, "%d PPO runs of %d steps in %.1f s: %s, %s, %s; %s", r.runs,
                  c->cfg->compare.steps, r.seconds, COMPARE_CSV, COMPARE_RUNS_CSV, COMPARE_JSON,
                  r.control_message);
    free(train);
    free(eval);
    free(pol);
    return rc;
}

const char *pipeline_report_external(const pipeline_run_opts_t *o, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/phase_sensitivity", o->output);
    return fs_is_dir(buf) ? buf : NULL;
}

int pipeline_stage_report(pipeline_ctx_t *c, err_t *e)
{
    const char *root = c->opts->output;
    char *top = fs_join(root, "report.md");
    if (!top)
        return err_set(e, ERR_NOMEM, "out of memory");
    report_study_result_t r;
    report_study_opts_t o = {root, c->dir, NULL, ""};
    int rc = report_study_write(&o, &r, e);
    /* the same report at the top of the results, its figures linked into report/ */
    report_study_opts_t o2 = {root, c->dir, top, "report/"};
    if (!rc)
        rc = report_study_write(&o2, NULL, e);
    if (!rc)
        rlhf_logf(c->log, "report.md (and %s) with %d figures; %d of 6 data sections present%s%s",
                  top, r.figures, r.sections_present, r.missing[0] ? "; absent: " : "", r.missing);
    free(top);
    return rc;
}
