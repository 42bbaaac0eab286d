/* hw_section: report.md's section "The MX datapath" (docs/hardware.md): the processing
 * elements' synthesis results (hw/synthesis.csv, written by `make hw-synth` and copied into
 * the results by the hw stage), the projected accelerator energy per policy and phase
 * (hw/hw_projection.csv) beside the measured baseline, and the cited figures the
 * projection rests on. A missing file makes its part of the section say so. */
#ifndef MXRLHF_REPORT_HW_SECTION_H
#define MXRLHF_REPORT_HW_SECTION_H

#include <stdio.h>

#include "util/err.h"

/* Appends the section to md; results is the results directory (`mxrlhf run`'s layout, hw/,
 * or the files at its top). */
int report_hw_section(FILE *md, const char *results, err_t *e);

/* The synthesis table's file name, in the hw stage's directory and under hw/synth/. */
#define REPORT_HW_SYNTHESIS_CSV "synthesis.csv"

#endif
