/* mx_dot: the reference MX block dot product, exact where a datapath can be exact.
 *
 * Two vectors of n elements, each stored as mx_pack writes a 1 x n row (codes plus
 * ceil(n/k) E8M0 scales), both with block size k. For block j:
 *
 *     P_j = sum over the block of a_i * b_i        (products exact, sum exact: every
 *                                                   element is an integer times the
 *                                                   format's smallest subnormal, so P_j
 *                                                   is a wide fixed-point integer)
 *     C_j = P_j * 2^(sa_j + sb_j)                  (the two scales, exact)
 *
 * and the result is sum_j C_j, accumulated one of two ways (mx_dot_acc_t):
 *  - bits = 0: exactly (a 768-bit fixed-point accumulator), then rounded once to
 *    float32, round to nearest even (overflow to Inf, float32 subnormals kept);
 *  - bits = p > 0: as a datapath with a p-bit floating-point accumulator does: after
 *    each block the running sum acc + C_j (formed exactly) is rounded to p significant
 *    bits with `round` (even, nearest = ties away, or trunc); the exponent range is
 *    unbounded, and the final value is rounded to float32 (RNE). p = 24 is an fp32
 *    accumulator, p = 8 a bf16 one.
 * Blocks are accumulated in order j = 0, 1, ...; a NaN scale (0xFF) or a NaN/Inf
 * element code anywhere makes the result NaN.
 */
#ifndef MXRLHF_MX_MX_DOT_H
#define MXRLHF_MX_MX_DOT_H

#include <stddef.h>
#include <stdint.h>

#include "mx/mx.h"
#include "util/err.h"

typedef struct mx_dot_acc {
    int bits;         /* 0: exact; else significand bits of the running sum (2..64) */
    mx_round_t round; /* of the running sum: MX_ROUND_EVEN, _NEAREST or _TRUNC */
} mx_dot_acc_t;

/* *out = a . b as described above. Errors: plain-cast formats, bad block, bad
 * accumulator. */
int mx_dot(mx_format_t fa, const uint8_t *a_elems, const uint8_t *a_scales, mx_format_t fb,
           const uint8_t *b_elems, const uint8_t *b_scales, size_t n, int block,
           const mx_dot_acc_t *acc, float *out, err_t *e);

/* Convenience: quantizes float vectors a and b with their specs (same block; seed 0,
 * stream 0 for stochastic rounding) and returns mx_dot of the packed results. */
int mx_dot_f32(const float *a, const mx_spec_t *sa, const float *b, const mx_spec_t *sb,
               size_t n, const mx_dot_acc_t *acc, float *out, err_t *e);

#endif
