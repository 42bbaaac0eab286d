/* stages_hw: the pipeline's hw stage (after compare): the projected energy of an MX
 * accelerator per policy and PPO phase (report/hw_project.h) into <output>/hw/
 * hw_projection.csv, and the PE synthesis table (hw/synth/synthesis.csv, when the working
 * directory has it: an external input of the stage) beside it for the report. */
#ifndef MXRLHF_PIPELINE_STAGES_HW_H
#define MXRLHF_PIPELINE_STAGES_HW_H

#include "pipeline/stage.h"

int pipeline_stage_hw(pipeline_ctx_t *c, err_t *e);

/* hw/synth/synthesis.csv when it exists (the repository's committed synthesis results). */
const char *pipeline_hw_external(const pipeline_run_opts_t *o, char *buf, size_t cap);

#endif
