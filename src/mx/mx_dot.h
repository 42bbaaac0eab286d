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

/* ---- the processing element's operation (docs/hardware.md, "Block result") ------------
 *
 * One block of k element codes of A (format fa, E8M0 scale byte sa) and of B (fb, sb),
 * codes one per byte (the low `bits` bits; int8 and int4 two's complement):
 *
 *     R = round32( sum_i a_i * b_i  *  2^(sa-127) * 2^(sb-127) )
 *
 * the exact sum of the k products, scaled exactly, rounded once to IEEE binary32 with
 * round to nearest even; past the largest float32 it is +-Inf; float32 subnormals are
 * kept; an exact zero sum gives +0 and a non-zero result that rounds to zero keeps its
 * sign. The operands hold finite codes only: scale 0xff (NaN), an FP8 NaN code or an E5M2
 * infinity is ERR_INPUT, as is a code with bits above the format's width. (mx_dot with
 * n = k, block = k and an exact accumulator gives the same R on such inputs.) */
int mx_block_dot(mx_format_t fa, uint8_t sa, const uint8_t *a, mx_format_t fb, uint8_t sb,
                 const uint8_t *b, int k, float *out, err_t *e);

/* Accumulate mode: acc (+) r, IEEE binary32 addition with round to nearest even (so
 * -0 (+) -0 = -0, x (+) -x = +0, Inf (+) -Inf = NaN), every NaN returned as the quiet NaN
 * 0x7fc00000. A chain of blocks R_0, R_1, ... accumulates as R_0 (+) R_1 (+) ... in order
 * (the first block loads the accumulator). */
float mx_block_accumulate(float acc, float r);

/* 0 when `code` is a finite element code of MX format f (the operands mx_block_dot
 * takes), -1 when it is not a code of the format (bits beyond its width, or f is not an
 * MX format), -2 for an FP8 NaN or E5M2 infinity code. */
int mx_block_code_check(mx_format_t f, uint8_t code);

/* The GEMM the PE array runs: y (M, N) with y[m][n] = the accumulate-mode chain over the
 * K / k blocks j = 0, 1, ... of A's row m and B's row n:
 *   a (M, K) codes, a_scales (M, K/k); b (N, K) codes (B is W, one row per output
 *   column), b_scales (N, K/k); K a multiple of k. */
int mx_block_gemm(mx_format_t fa, const uint8_t *a, const uint8_t *a_scales, mx_format_t fb,
                  const uint8_t *b, const uint8_t *b_scales, size_t M, size_t N, size_t K,
                  int k, float *y, err_t *e);

#endif
