/* qtime: a backend that forwards every op to another one and times the MX quantization
 * of forward GEMM operands on the way, so the sensitivity profiler can say how much of
 * its time went into quantizing and how much into the rest of the forward passes.
 *
 * On the CPU backend, a linear layer's forward with an MX (or cast) spec on its weight or
 * input is split in two: the wrapper quantizes the operand(s) itself with the inner
 * backend's fake_quant op along K (the weight once per (parameter version, spec), as the
 * inner weight cache would), timed, then calls the inner linear_fwd with those operands
 * marked fp32. The CPU backend quantizes through the same function and runs the same
 * float32 GEMM either way, so the results are bit-identical to running on it alone
 * (tested). Other backends choose their GEMM by the operands' specs (CUDA: a bf16
 * tensor-core GEMM for MX operands, float32 for fp32 ones), so there the split would
 * change the arithmetic: on them every op passes straight through and the quantizing
 * time is not measured (profile_qtime_measures says so). Backward always passes
 * through.
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

/* Whether this wrapper times quantization (the inner backend is the CPU one). */
bool profile_qtime_measures(const backend_t *be);

/* Seconds spent quantizing GEMM operands, and how many operands were quantized, since
 * the wrapper was opened (NaN and 0 when it does not measure). */
double profile_qtime_seconds(const backend_t *be);
long profile_qtime_count(const backend_t *be);

#endif
