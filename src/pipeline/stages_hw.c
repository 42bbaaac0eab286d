/* stages_hw: the hw stage (stages_hw.h); its row is in stages.c's table. */
#include "pipeline/stages_hw.h"

#include <stdio.h>
#include <stdlib.h>

#include "report/hw_project.h"
#include "report/hw_section.h"
#include "util/atomic_file.h"
#include "util/fs.h"

#define SYNTH_SRC "hw/synth/" REPORT_HW_SYNTHESIS_CSV

const char *pipeline_hw_external(const pipeline_run_opts_t *o, char *buf, size_t cap)
{
    (void)o;
    snprintf(buf, cap, "%s", SYNTH_SRC);
    return fs_exists(buf) ? buf : NULL;
}

int pipeline_stage_hw(pipeline_ctx_t *c, err_t *e)
{
    char *pol = fs_join(pipeline_stage_dir(c, "policies"), "policies.json");
    char *en = fs_join(pipeline_stage_dir(c, "baseline"), "energy.csv");
    char *out = fs_join(c->dir, REPORT_HW_PROJECTION_CSV);
    char *syn = fs_join(c->dir, REPORT_HW_SYNTHESIS_CSV);
    int rc = pol && en && out && syn ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    report_hw_project_result_t r;
    if (!rc) {
        report_hw_project_opts_t o = {
            .ppo = &c->cfg->ppo, .sft_dir = pipeline_stage_dir(c, "sft"),
            .rm_dir = pipeline_stage_dir(c, "rm"), .baseline_dir = pipeline_stage_dir(c, "baseline"),
            .policies = pol, .energy = en, .output = out};
        rc = report_hw_project(&o, &r, e);
    }
    /* the synthesis results the repository holds, for the report */
    char *text = NULL;
    size_t len;
    bool copied = false;
    if (!rc && fs_exists(SYNTH_SRC) && !(rc = fs_read_all(SYNTH_SRC, 1u << 20, &text, &len, e)))
        copied = !(rc = atomic_write(syn, text, len, e));
    free(text);
    if (!rc)
        rlhf_logf(c->log, "%s: %d plans x %d phases; %s%s", REPORT_HW_PROJECTION_CSV, r.plans,
                  r.phases, r.summary, copied ? "; " REPORT_HW_SYNTHESIS_CSV " copied from "
                  SYNTH_SRC : "");
    free(pol);
    free(en);
    free(out);
    free(syn);
    return rc;
}
