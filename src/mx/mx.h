/* mx: OCP Microscaling (MX) number formats, bit-exact, pure C.
 *
 * An MX block is k elements sharing one E8M0 scale 2^s: value_i = elem_i * 2^s.
 * This header is the contract the rest of the project codes against: format names,
 * the spec {format, block, rounding, scale rule}, and quantize-dequantize ("fake
 * quant") of float32 matrices along rows or columns. Packed encode/decode and the
 * reference dot product live in mx_pack.h and mx_dot.h.
 *
 * Semantics (docs/mx.md has the full statement and the golden-vector provenance):
 * - scale rule floor (OCP v1.0): s = floor(log2(amax)) - emax_elem, the exponent read
 *   from the float's bits; rceil: the smallest power of two >= amax / max_elem,
 *   computed exactly. s is clamped to [-127, 127]; a block holding Inf or NaN gets the
 *   NaN scale and dequantizes to NaN; an all-zero block dequantizes to zeros.
 * - elements are x * 2^-s rounded to the element format (subnormals kept) and
 *   saturated to its largest normal; int8/int4 are sign-magnitude fixed point with
 *   emax 0 (int8: multiples of 2^-6 up to 127/64).
 * - bf16, fp16, fp32 are plain element-wise casts (round to nearest even); block,
 *   rounding and scale rule do not apply to them.
 * - an element that rounds to zero keeps its sign (-0 stays -0); a NaN-scale block
 *   dequantizes to the quiet NaN 0x7fc00000.
 * - stochastic rounding rounds up when the top 32 bits of the discarded fraction plus
 *   the element's random word carry out of 32 bits: P(up) = floor(frac * 2^32) / 2^32.
 */
#ifndef MXRLHF_MX_MX_H
#define MXRLHF_MX_MX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef enum mx_format {
    MX_FP8_E4M3,
    MX_FP8_E5M2,
    MX_FP6_E3M2,
    MX_FP6_E2M3,
    MX_FP4_E2M1,
    MX_INT8,
    MX_INT4,       /* microxcaling's extension, not in OCP MX v1.0 */
    MX_BF16,       /* plain casts from here on */
    MX_FP16,
    MX_FP32,
    MX_FORMAT_COUNT
} mx_format_t;

typedef enum mx_round {
    MX_ROUND_NEAREST,    /* ties away from zero (microxcaling's default) */
    MX_ROUND_EVEN,       /* ties to even (OCP) */
    MX_ROUND_TRUNC,      /* toward zero; microxcaling calls it "floor" */
    MX_ROUND_STOCHASTIC, /* up with probability proportional to the distance */
    MX_ROUND_COUNT
} mx_round_t;

typedef enum mx_scale_rule {
    MX_SCALE_FLOOR, /* OCP v1.0 */
    MX_SCALE_RCEIL, /* round the scale up so amax never saturates */
    MX_SCALE_COUNT
} mx_scale_rule_t;

typedef enum mx_axis {
    MX_AXIS_ROW, /* blocks run along each row (contiguous) */
    MX_AXIS_COL  /* blocks run down each column (stride = cols) */
} mx_axis_t;

/* Largest block accepted by mx_spec_check and mx_spec_parse. */
#define MX_BLOCK_MAX (1 << 20)

/* A precision spec: what one GEMM operand is quantized to. */
typedef struct mx_spec {
    mx_format_t format;
    int block;            /* elements per scale (1..MX_BLOCK_MAX); ignored for plain casts */
    mx_round_t round;
    mx_scale_rule_t scale;
} mx_spec_t;

/* Static facts about an element format. */
typedef struct mx_format_info {
    mx_format_t format;
    const char *name;      /* canonical: "mxfp8_e4m3", ..., "bf16", "fp16", "fp32" */
    const char *alias;     /* "mxfp8", "mxfp6", "mxfp4" or NULL */
    const char *elem_name; /* microxcaling's: "fp8_e4m3", ..., "int8", "int4" */
    int bits;              /* element bits */
    int ebits, mbits;      /* exponent and mantissa bits (int: 0 and bits-2) */
    int emax;              /* exponent of the largest normal (int: 0) */
    double max_normal;     /* largest finite element value */
    bool is_mx;            /* block-scaled (false for bf16/fp16/fp32) */
    bool is_int;
    bool is_ocp;           /* in OCP MX v1.0 */
} mx_format_info_t;

const mx_format_info_t *mx_format_info(mx_format_t f);

/* Accepts canonical names, aliases and microxcaling's element names. 0 or -1. */
int mx_format_from_name(const char *name, mx_format_t *out);
const char *mx_format_name(mx_format_t f);

int mx_round_from_name(const char *name, mx_round_t *out); /* "floor" == "trunc" */
const char *mx_round_name(mx_round_t r);
int mx_scale_from_name(const char *name, mx_scale_rule_t *out);
const char *mx_scale_name(mx_scale_rule_t s);

/* The default spec for a format: block 32, round even, scale floor. */
mx_spec_t mx_spec_default(mx_format_t f);

/* Checks the fields; an error names the bad one. */
int mx_spec_check(const mx_spec_t *s, err_t *e);

/* True for fp32: quantizing is the identity. */
bool mx_spec_is_identity(const mx_spec_t *s);

/* True when a and b quantize alike: the same format, block, rounding and scale rule. */
bool mx_spec_equal(const mx_spec_t *a, const mx_spec_t *b);

/* Parses "mxfp4_e2m1", "mxfp4/16", "mxfp8_e4m3/32/nearest/rceil", "bf16":
 * format[/block[/rounding[/scale]]], defaults as mx_spec_default. */
int mx_spec_parse(const char *text, mx_spec_t *out, err_t *e);

/* Writes the canonical text "format/block/rounding/scale" (or just the format for
 * plain casts) into buf. Returns buf. */
char *mx_spec_format(const mx_spec_t *s, char *buf, size_t n);

/* Fake quant: out = dequantize(quantize(in)) for a rows x cols row-major matrix, blocks
 * along `axis`; a row (column) whose length is not a multiple of the block ends in a
 * short block. in == out is allowed. For stochastic rounding the random word of
 * element (r, c) is rng_u32(seed, stream, r * cols + c), so the result is independent
 * of threading and backend; seed and stream are ignored otherwise. Runs on the calling
 * thread; callers parallelise over rows or columns. */
void mx_fake_quant(const float *in, float *out, size_t rows, size_t cols, mx_axis_t axis,
                   const mx_spec_t *spec, uint64_t seed, uint64_t stream);

/* The flat form: blocks of spec->block along n contiguous values (the last may be
 * short); element i's random word is rng_u32(seed, stream, index0 + i). */
void mx_fake_quant_flat(const float *in, float *out, size_t n, const mx_spec_t *spec,
                        uint64_t seed, uint64_t stream, uint64_t index0);

/* The same two functions spread over `threads` OpenMP threads (<= 0: all), split on
 * block boundaries; results are bit-identical to the single-thread ones. Call them
 * from outside a parallel region. The spec must pass mx_spec_check. */
void mx_fake_quant_parallel(const float *in, float *out, size_t rows, size_t cols,
                            mx_axis_t axis, const mx_spec_t *spec, uint64_t seed,
                            uint64_t stream, int threads);
void mx_fake_quant_flat_parallel(const float *in, float *out, size_t n, const mx_spec_t *spec,
                                 uint64_t seed, uint64_t stream, uint64_t index0, int threads);

#endif
