/* phase_internal: what the phase sweep (phase_sweep.c) needs of a measuring session
 * (phase.c) beyond phase.h. Not for other modules. */
#ifndef MXRLHF_PROFILE_PHASE_INTERNAL_H
#define MXRLHF_PROFILE_PHASE_INTERNAL_H

#include "profile/phase.h"

/* Workers the session holds. */
int profile_phase__workers(const profile_phase_t *p);
/* The options it was opened with. */
const phase_sensitivity_opts_t *profile_phase__opts(const profile_phase_t *p);
prec_phase_t profile_phase__phase(const profile_phase_t *p);
/* Of the models, the data and every setting that changes a cell but is not in its spec. */
uint64_t profile_phase__fingerprint(const profile_phase_t *p);
/* Relative cost of a cell of layer i (-1: a whole-model cell), for time estimates. */
double profile_phase__units(const profile_phase_t *p, int layer);
/* Seconds worker w has spent measuring. */
double profile_phase__measure_s(const profile_phase_t *p, int w);

#endif
