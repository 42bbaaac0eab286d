/* mx_pack: MX tensors as stored bytes: element codes plus one E8M0 scale per block.
 *
 * A rows x cols float32 matrix quantized along `axis` with block k is stored as
 *  - elements: rows x cols codes in row-major order (the input's order), as the
 *    safetensors dtype mx_pack_dtype(format):
 *      mxfp8_e4m3 F8_E4M3 (OCP E4M3: bias 7, S.1111.111 is NaN, no Inf)
 *      mxfp8_e5m2 F8_E5M2 (bias 15, IEEE-like Inf/NaN)
 *      mxfp6_e3m2 F6_E3M2 (bias 3), mxfp6_e2m3 F6_E2M3 (bias 1): four codes in three
 *        bytes, code i in bits [6i, 6i+6) of the little-endian bit stream
 *      mxfp4_e2m1 F4 (bias 1): two codes per byte, code 2i in the low nibble
 *        (PyTorch's float4_e2m1fn_x2)
 *      mxint8 I8: two's complement, value = code * 2^-6 (code in -127..127)
 *      mxint4 I8, one code per byte: value = code * 2^-2 (code in -7..7). int4 is not
 *        OCP and safetensors has no 4-bit integer type; a byte per code keeps the
 *        shape and needs no convention of ours.
 *    The sign bit of a float code is its top bit; -0 is kept (int codes have no -0).
 *  - scales: one F8_E8M0 byte per block, value 2^(byte - 127), 0xFF = NaN (the block
 *    held Inf or NaN; its element codes are 0). Shape [rows][ceil(cols/k)] for row
 *    blocks, [ceil(rows/k)][cols] for column blocks.
 * Decoding gives element * 2^scale exactly, so decode(encode(x)) is bit for bit the
 * fake quant of x (-0 and +0 aside for int formats).
 */
#ifndef MXRLHF_MX_MX_PACK_H
#define MXRLHF_MX_MX_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "mx/mx.h"
#include "util/err.h"

/* The safetensors dtype name of an MX format's elements ("F8_E4M3", ..., "I8");
 * NULL for the plain casts. The scale dtype is always "F8_E8M0". (A name rather than
 * util/safetensors.h's enum keeps this layer free of the JSON library.) */
const char *mx_pack_dtype(mx_format_t f);

/* Bytes holding n element codes: ceil(n * bits / 8) (int4: n). */
size_t mx_pack_elem_bytes(mx_format_t f, size_t n);

/* Shape of the scale tensor. */
void mx_pack_scale_shape(size_t rows, size_t cols, mx_axis_t axis, int block, size_t *srows,
                         size_t *scols);

/* Quantizes `in` (rows x cols) with spec (an MX format) and writes the codes to elems
 * (mx_pack_elem_bytes(format, rows*cols) bytes) and the scales to scales (srows*scols
 * bytes). Stochastic rounding uses the same random words as mx_fake_quant. `threads`
 * as in mx_fake_quant_parallel (1: the calling thread only). */
int mx_pack_encode(const float *in, size_t rows, size_t cols, mx_axis_t axis,
                   const mx_spec_t *spec, uint64_t seed, uint64_t stream, int threads,
                   uint8_t *elems, uint8_t *scales, err_t *e);

/* The inverse: out[r*cols + c] = element * 2^scale (NaN where the scale is 0xFF or the
 * code is a NaN/Inf code of the element format, which encode never writes). */
int mx_pack_decode(const uint8_t *elems, const uint8_t *scales, size_t rows, size_t cols,
                   mx_axis_t axis, mx_format_t format, int block, float *out, err_t *e);

/* One element: the code of y, which must be a value of the format (for example a fake
 * quant output times 2^-scale); and the value of a code. */
uint8_t mx_elem_encode(mx_format_t f, float y);
float mx_elem_decode(mx_format_t f, uint8_t code);

/* 2^(b - 127) (b = 0 gives the float32 subnormal 2^-127); NaN for 0xFF. */
float mx_e8m0_decode(uint8_t b);

/* Code i of a packed element array (one code per byte for 8-bit and int4 storage). */
uint8_t mx_pack_get(mx_format_t f, const uint8_t *elems, size_t i);

#endif
