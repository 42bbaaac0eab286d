/* mx_internal: what mx.c, mx_quant.c, mx_pack.c and mx_dot.c share, and nobody else.
 *
 * The quantizer works on float32 bit patterns. A block is reduced to one scale
 * exponent s (mxc_scale_exp in mx_core.h), which fixes a few per-block constants;
 * every element of the block is then rounded with integer operations only
 * (mxq_elems). Packing reuses exactly that path, so a packed round trip equals fake
 * quant by construction. The definitions shared with CUDA are in mx_core.h.
 */
#ifndef MXRLHF_MX_MX_INTERNAL_H
#define MXRLHF_MX_MX_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "mx/mx.h"
#include "mx/mx_core.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* The E8M0 byte of a scale exponent (s + 127, or 0xFF for MXC_NAN_SCALE). */
static inline uint8_t mxq_scale_byte(int s)
{
    return s == MXC_NAN_SCALE ? 0xFF : (uint8_t)(s + 127);
}

/* mxc_fmt, mxc_scale_exp and mxc_elem as compiled for the CPU, out of line: the
 * reference the tests hold the fast kernels and nvcc's instantiation
 * (tests/gpu/test_cuda_math.cu) to. */
mxc_fmt_t mxq_fmt(mx_format_t f);
int mxq_scale_exp(const mxc_fmt_t *f, mx_scale_rule_t rule, uint32_t amax);
uint32_t mxq_elem_ref(const mxc_fmt_t *f, mx_round_t round, int s, uint32_t u, uint32_t rnd);

/* 2^k as a float for k in [-149, 127], built from the bits (exact, no libm). */
static inline float mxq_pow2f(int k)
{
    return mxc_pow2f(k);
}

/* The code of a float element y (float32 bits yb, a value of the format) for a format
 * with m mantissa bits, smallest normal exponent emin and `bits` bits in all. */
static inline uint8_t mxq_enc_fp(uint32_t yb, int m, int emin, int bits)
{
    uint32_t a = yb & 0x7fffffffu;
    uint32_t sg = (yb >> 31) << (bits - 1);
    int32_t ey = (int32_t)(a >> 23) - 127;
    int32_t sh = emin - ey;
    sh = sh < 0 ? 0 : sh;
    int32_t tot = 23 - m + sh;
    tot = tot > 31 ? 31 : tot;
    uint32_t S = (a & 0x7fffffu) | 0x800000u;
    int32_t up = ey - emin;
    up = up < 0 ? 0 : up;
    /* normal: (2^m + mantissa) + (ey - emin) << m == (ey + bias) << m | mantissa;
     * subnormal: the significand shifted down to units of 2^(emin - m) */
    uint32_t mag = (S >> tot) + ((uint32_t)up << m);
    return (uint8_t)(sg | (a ? mag : 0));
}

/* Largest magnitude (bits, sign cleared) of n values; NaN compares above Inf. */
uint32_t mxq_amax(const uint32_t *in, size_t n);
uint32_t mxq_amax_strided(const uint32_t *in, size_t n, size_t stride);

/* Where stochastic rounding takes its random words: element i of the call uses
 * rng_u32(seed, stream, index0 + i * stride). */
typedef struct mxq_rand {
    uint64_t seed, stream, index0, stride;
} mxq_rand_t;

/* Rounds n elements of one block (scale exponent s, NaN marker allowed) from `in` to
 * `out` (float32 bits; may alias). `rand` is used only for stochastic rounding. */
void mxq_elems(const mxc_fmt_t *f, mx_round_t round, int s, const uint32_t *in, uint32_t *out,
               size_t n, const mxq_rand_t *rand);

/* Plain casts: bf16 and fp16 round trips on the bits (RNE, overflow to Inf). */
void mxq_cast_bf16(const uint32_t *in, uint32_t *out, size_t n);
void mxq_cast_fp16(const uint32_t *in, uint32_t *out, size_t n);

/* One contiguous block: scale, then elements. Returns the scale exponent. */
int mxq_block(const mxc_fmt_t *f, const mx_spec_t *spec, const uint32_t *in, uint32_t *out,
              size_t n, const mxq_rand_t *rand);

/* MX fake quant of n contiguous values in blocks (spec->format must be MX), writing
 * block b's E8M0 byte to scales[b] and element i's code to codes[i] (one per byte)
 * when those are not NULL. */
void mxq_flat(const float *in, float *out, size_t n, const mx_spec_t *spec, uint64_t seed,
              uint64_t stream, uint64_t index0, uint8_t *scales, uint8_t *codes);

/* Codes (one per byte) of n dequantized values all in one block with E8M0 byte sb. */
void mxq_codes(mx_format_t f, const float *v, size_t n, uint8_t sb, uint8_t *codes);

/* Column-axis fake quant of rows [r0, r1) (r0 a multiple of the block) of a rows x cols
 * matrix; the byte of the block (group g, column c) goes to scales[g * cols + c]. */
void mxq_cols(const float *in, float *out, size_t rows, size_t cols, const mx_spec_t *spec,
              uint64_t seed, uint64_t stream, size_t r0, size_t r1, uint8_t *scales);

#endif
