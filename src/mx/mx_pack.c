/* mx_pack: packed encode/decode (see mx_pack.h).
 *
 * Encoding runs the fake-quant kernels (which also report each block's scale) and
 * then reads every code off the dequantized value: y = v * 2^-s is exactly an element
 * of the format, so its float32 exponent and top mantissa bits are the code. The round
 * trip therefore equals fake quant by construction rather than by a second rounding.
 */
#include "mx/mx_pack.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "mx/mx_internal.h"


const char *mx_pack_dtype(mx_format_t f)
{
    switch (f) {
    case MX_FP8_E4M3: return "F8_E4M3";
    case MX_FP8_E5M2: return "F8_E5M2";
    case MX_FP6_E3M2: return "F6_E3M2";
    case MX_FP6_E2M3: return "F6_E2M3";
    case MX_FP4_E2M1: return "F4";
    case MX_INT8:
    case MX_INT4: return "I8";
    default: return NULL;
    }
}

/* Bits one code occupies in storage. */
static int store_bits(mx_format_t f)
{
    switch (f) {
    case MX_FP6_E3M2:
    case MX_FP6_E2M3: return 6;
    case MX_FP4_E2M1: return 4;
    default: return 8;
    }
}

size_t mx_pack_elem_bytes(mx_format_t f, size_t n)
{
    return (n * (size_t)store_bits(f) + 7) / 8;
}

void mx_pack_scale_shape(size_t rows, size_t cols, mx_axis_t axis, int block, size_t *srows,
                         size_t *scols)
{
    size_t k = (size_t)block;
    if (axis == MX_AXIS_ROW) {
        *srows = rows;
        *scols = (cols + k - 1) / k;
    } else {
        *srows = (rows + k - 1) / k;
        *scols = cols;
    }
}

/* ---- single codes -------------------------------------------------------------- */

uint8_t mx_elem_encode(mx_format_t f, float y)
{
    const mxc_fmt_t q = mxc_fmt(f);
    if (f == MX_INT8 || f == MX_INT4)
        return (uint8_t)(int8_t)(int32_t)(y * mxq_pow2f(q.m));
    return mxq_enc_fp(hd_f2u(y), q.m, q.emin, mx_format_info(f)->bits);
}

float mx_elem_decode(mx_format_t f, uint8_t code)
{
    const mxc_fmt_t q = mxc_fmt(f);
    if (f == MX_INT8 || f == MX_INT4)
        return (float)(int8_t)code * mxq_pow2f(-q.m);
    int bits = mx_format_info(f)->bits, m = q.m;
    int ebits = bits - 1 - m;
    uint32_t sign = (code >> (bits - 1)) & 1;
    uint32_t E = (code >> m) & ((1u << ebits) - 1), M = code & ((1u << m) - 1);
    float v;
    if (f == MX_FP8_E4M3 && E == 15 && M == 7)
        v = hd_u2f(0x7fc00000u);
    else if (f == MX_FP8_E5M2 && E == 31)
        v = M ? hd_u2f(0x7fc00000u) : hd_u2f(0x7f800000u);
    else if (E == 0)
        v = (float)M * mxq_pow2f(q.emin - m);
    else
        v = (float)((1u << m) + M) * mxq_pow2f((int)E - 1 + q.emin - m);
    return sign ? -v : v;
}

float mx_e8m0_decode(uint8_t b)
{
    return b == 0xFF ? hd_u2f(0x7fc00000u) : mxq_pow2f((int)b - 127);
}

uint8_t mx_pack_get(mx_format_t f, const uint8_t *elems, size_t i)
{
    switch (store_bits(f)) {
    case 4:
        return (elems[i / 2] >> (4 * (i & 1))) & 0xF;
    case 6: {
        size_t bit = i * 6, byte = bit / 8;
        unsigned sh = (unsigned)(bit % 8);
        unsigned w = elems[byte] | (sh > 2 ? (unsigned)elems[byte + 1] << 8 : 0);
        return (uint8_t)((w >> sh) & 0x3F);
    }
    default:
        return elems[i];
    }
}

/* ---- whole arrays ---------------------------------------------------------------- */

/* Packs n one-per-byte codes into out, which starts at a code index that is a
 * multiple of 4 (so every format starts on a byte). */
static void pack_codes(mx_format_t f, const uint8_t *codes, size_t n, uint8_t *out)
{
    switch (store_bits(f)) {
    case 4: {
        size_t i = 0;
        for (; i + 2 <= n; i += 2)
            out[i / 2] = (uint8_t)((codes[i] & 0xF) | (codes[i + 1] & 0xF) << 4);
        if (i < n)
            out[i / 2] = codes[i] & 0xF;
        return;
    }
    case 6: {
        size_t i = 0, o = 0;
        for (; i + 4 <= n; i += 4, o += 3) {
            uint32_t w = (uint32_t)(codes[i] & 0x3F) | (uint32_t)(codes[i + 1] & 0x3F) << 6 |
                         (uint32_t)(codes[i + 2] & 0x3F) << 12 |
                         (uint32_t)(codes[i + 3] & 0x3F) << 18;
            out[o] = (uint8_t)w;
            out[o + 1] = (uint8_t)(w >> 8);
            out[o + 2] = (uint8_t)(w >> 16);
        }
        if (i < n) {
            uint32_t w = 0;
            for (size_t t = 0; i + t < n; t++)
                w |= (uint32_t)(codes[i + t] & 0x3F) << (6 * t);
            size_t nb = ((n - i) * 6 + 7) / 8;
            for (size_t t = 0; t < nb; t++)
                out[o + t] = (uint8_t)(w >> (8 * t));
        }
        return;
    }
    default:
        memcpy(out, codes, n);
        return;
    }
}

static size_t lcm4(size_t k)
{
    return k % 4 == 0 ? k : k % 2 == 0 ? 2 * k : 4 * k;
}

int mx_pack_encode(const float *in, size_t rows, size_t cols, mx_axis_t axis,
                   const mx_spec_t *spec, uint64_t seed, uint64_t stream, int threads,
                   uint8_t *elems, uint8_t *scales, err_t *e)
{
    if (mx_spec_check(spec, e))
        return e ? e->code : ERR_INPUT;
    mx_format_t f = spec->format;
    if (!mx_format_info(f)->is_mx)
        return err_set(e, ERR_INPUT, "pack: %s is a plain cast, not an MX format",
                       mx_format_name(f));
    if (threads <= 0)
        threads = omp_get_max_threads();
    size_t k = (size_t)spec->block, n = rows * cols;
    int bits = store_bits(f);
    int failed = 0;

    if (axis == MX_AXIS_ROW && (cols % k == 0 || rows == 1)) {
        /* blocks run along the flat array: chunks of whole blocks, 4-code aligned */
        size_t L = lcm4(k), C = L * (L < 4096 ? 4096 / L : 1);
        long nchunks = (long)((n + C - 1) / C);
#pragma omp parallel num_threads(nchunks > 1 ? threads : 1)
        {
            float *tmp = malloc(C * sizeof *tmp);
            uint8_t *codes = malloc(C);
            if (!tmp || !codes) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(static)
            for (long c = 0; c < nchunks; c++) {
                if (!tmp || !codes)
                    continue;
                size_t b = (size_t)c * C, len = n - b < C ? n - b : C;
                if (bits == 8) { /* one code per byte: write the codes in place */
                    mxq_flat(in + b, tmp, len, spec, seed, stream, b, scales + b / k, elems + b);
                } else {
                    mxq_flat(in + b, tmp, len, spec, seed, stream, b, scales + b / k, codes);
                    pack_codes(f, codes, len, elems + b * (size_t)bits / 8);
                }
            }
            free(tmp);
            free(codes);
        }
        return failed ? err_set(e, ERR_NOMEM, "pack: out of memory for %zu-element chunks", C)
                      : ERR_OK;
    }

    /* short rows or column blocks: quantize everything, then code and pack */
    float *tmp = err_malloc(e, n * sizeof *tmp, "pack: dequantized values");
    uint8_t *codes = tmp ? err_malloc(e, n ? n : 1, "pack: codes") : NULL;
    if (!codes) {
        free(tmp);
        return e ? e->code : ERR_NOMEM;
    }
    if (axis == MX_AXIS_ROW) {
        size_t nb = (cols + k - 1) / k;
#pragma omp parallel for schedule(static) num_threads(threads)
        for (long r = 0; r < (long)rows; r++) {
            size_t o = (size_t)r * cols;
            mxq_flat(in + o, tmp + o, cols, spec, seed, stream, o, scales + (size_t)r * nb,
                     codes + o);
        }
    } else {
        long groups = (long)((rows + k - 1) / k);
#pragma omp parallel for schedule(static) num_threads(threads)
        for (long g = 0; g < groups; g++) {
            size_t r0 = (size_t)g * k, r1 = r0 + k < rows ? r0 + k : rows;
            mxq_cols(in, tmp, rows, cols, spec, seed, stream, r0, r1, scales);
            for (size_t r = r0; r < r1; r++)
                for (size_t c = 0; c < cols; c++)
                    mxq_codes(f, tmp + r * cols + c, 1, scales[(size_t)g * cols + c],
                              codes + r * cols + c);
        }
    }
    pack_codes(f, codes, n, elems);
    free(tmp);
    free(codes);
    return ERR_OK;
}

int mx_pack_decode(const uint8_t *elems, const uint8_t *scales, size_t rows, size_t cols,
                   mx_axis_t axis, mx_format_t format, int block, float *out, err_t *e)
{
    if ((unsigned)format >= MX_FORMAT_COUNT || !mx_format_info(format)->is_mx)
        return err_set(e, ERR_INPUT, "unpack: format %s is not an MX format",
                       mx_format_name(format));
    if (block < 1 || block > MX_BLOCK_MAX)
        return err_set(e, ERR_INPUT, "unpack: block %d out of range (expected 1..%d)", block,
                       MX_BLOCK_MAX);
    float table[256];
    for (int c = 0; c < 256; c++)
        table[c] = mx_elem_decode(format, (uint8_t)c);
    size_t k = (size_t)block, nb = (cols + k - 1) / k;
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) {
            uint8_t sb = axis == MX_AXIS_ROW ? scales[r * nb + c / k] : scales[r / k * cols + c];
            float v = table[mx_pack_get(format, elems, r * cols + c)];
            out[r * cols + c] = sb == 0xFF ? hd_u2f(0x7fc00000u) : v * mx_e8m0_decode(sb);
        }
    return ERR_OK;
}
