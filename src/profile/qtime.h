/* qtime: a backend that forwards every op to another one and times the MX quantization
 * of forward GEMM operands on the way, so the sensitivity profiler can say how much of
 * its time went into quantizing and how much into the rest of the forward passes.
 *
 * A linear layer's forward with an MX (or cast) spec on its weight or input is split in
 * two: the wrapper quantizes the operand(s) itself with the inner backend's fake_quant op
 * along K (the weight once per (parameter version, spec), as the inner weight cache
 * would), timed, then calls the inner linear_fwd with those operands marked fp32. The
 * inner backend quantizes through the same function, so the results are bit-identical
 * to running on the inner backend alone (tested). Everything else, backward included,
 * passes straight through.
 *
 * Timing brackets the quantization with the inner backend's sync, so it is correct on
 * asynchronous backends too; an error a sync reports is kept and returned by the next
 * be_sync, as the backend contract says.
 */
#ifndef MXRLHF_PROFILE_QTIME_H
#define MXRLHF_PROFILE_QTIME_H

#include "backend/backend.h"
#include "util/err.h"

/* Wraps `inner` (borrowed; close the wrapper first). */
int profile_qtime_open(backend_t *inner, backend_t **out, err_t *e);

/* Seconds spent quantizing GEMM operands, and how many operands were quantized, since
 * the wrapper was opened. */
double profile_qtime_seconds(const backend_t *be);
long profile_qtime_count(const backend_t *be);

#endif
