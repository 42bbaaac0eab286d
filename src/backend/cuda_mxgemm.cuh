/* cuda_mxgemm: the arithmetic and index maps of the MX GEMMs on the tensor cores, written
 * once for host and device (__host__ __device__), so that a machine without a GPU checks
 * them (tests/gpu/test_cuda_mxgemm.cu) and the kernels in cuda_mxgemm.cu run them
 * unchanged.
 *
 * Tensor-core types. Every MX element embeds exactly in a Hopper tensor-core type:
 *   mxfp8_e4m3, mxfp6_e3m2, mxfp6_e2m3, mxfp4_e2m1  ->  E4M3 byte (FP6/FP4 values are
 *                                                      E4M3 values: fewer bits, smaller
 *                                                      range, no subnormal below 2^-9)
 *   mxfp8_e5m2                                      ->  E5M2 byte
 *   mxint8, mxint4                                  ->  int8 (the code: value x 2^6 or
 *                                                      x 2^2, sign-magnitude -> two's
 *                                                      complement, -127..127 / -7..7)
 * An element whose block has scale exponent s and whose byte is q (as a number) is worth
 * q x 2^(s - fb), fb = 6 for mxint8, 2 for mxint4, 0 for the float formats. A block's
 * multiplier 2^(s - fb) is kept as a float ("scale"; NaN for a block holding Inf/NaN,
 * whose bytes are 0).
 *
 * Operand layout ("K-major", what mma.sync's row.col and wgmma want): an operand with
 * `rows` rows and reduction length `red` is bytes (rowsP, Kp), row-major, and scales
 * (rowsP, Kp / g) floats, where
 *   Kp    = red rounded up to MXG_BK (zero bytes after red: a short last block costs
 *           nothing; zeros multiply to zero),
 *   rowsP = rows rounded up to MXG_BM (zero rows, zero scales),
 *   g     = the granule: the largest of 32, 16, 8 dividing the spec's block; block b
 *           covers granules, each holding its block's scale.
 * A GEMM C (M, N) = A (M, red) . B (N, red)^T runs in k steps of min(gA, gB) elements:
 * each step is one tensor-core MMA (m16n8k32, or m16n8k16; k8 as a k16 MMA with half of
 * A's lanes zeroed) whose float32 (int32 for int8) partial sum is scaled by
 * scaleA x scaleB and added into a float32 accumulator.
 */
#ifndef MXRLHF_BACKEND_CUDA_MXGEMM_CUH
#define MXRLHF_BACKEND_CUDA_MXGEMM_CUH

#include <stdint.h>

#include "mx/mx_core.h"

/* ---- tiles (the kernel's and the operand layout's) -------------------------------------- */

#define MXG_BM 128      /* rows of A (and of B) per CTA tile */
#define MXG_BK 64       /* k bytes per pipeline stage */
#define MXG_LDS 80      /* shared-memory row pitch of a stage: 64 + 16 bytes, so that the 8
                           rows one ldmatrix reads land in 8 different 16-byte bank groups */
#define MXG_STAGES 3
#define MXG_THREADS 256 /* 8 warps, 2 (M) x 4 (N), each 64 x 32 of the 128 x 128 tile */

/* tensor-core element types */
enum { MXG_NONE = -1, MXG_E4M3 = 0, MXG_E5M2 = 1, MXG_S8 = 2 };

/* The tensor-core type of an MX element format (mx_format_t's index), MXG_NONE for the
 * plain casts. */
HD_INLINE int mxg_kind(int format)
{
    switch (format) {
    case 0: /* fp8 e4m3 */
    case 2: /* fp6 e3m2 */
    case 3: /* fp6 e2m3 */
    case 4: /* fp4 e2m1 */
        return MXG_E4M3;
    case 1:
        return MXG_E5M2;
    case 5: /* int8 */
    case 6: /* int4 */
        return MXG_S8;
    default:
        return MXG_NONE;
    }
}

/* fraction bits of the int formats' codes (value = code x 2^-fb) */
HD_INLINE int mxg_frac_bits(int format) { return format == 5 ? 6 : format == 6 ? 2 : 0; }

/* the granule of a block size: 32, 16 or 8, 0 when none divides it */
HD_INLINE int mxg_granule(int block)
{
    return block % 32 == 0 ? 32 : block % 16 == 0 ? 16 : block % 8 == 0 ? 8 : 0;
}

HD_INLINE size_t mxg_round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

/* The byte of one element for the tensor cores.
 * u: float32 bits of the element's value as fake quant gives it (mxc_elem; after the
 *    compute type's rounding, which keeps it on the element grid); s: its block's scale
 *    exponent (not the NaN marker); kind: MXG_*; fb: mxg_frac_bits.
 * The value is y x 2^s with y an element of the format, |y| in [2^-16, 57344]; a float32
 * holds every MX value exactly (quanta are >= 2^-143), so y's exponent is u's minus s and
 * its significand is u's (normalised when u is a float32 subnormal). Integer operations
 * only: no 2^-s is ever formed. */
HD_INLINE uint8_t mxg_encode(uint32_t u, int s, int kind, int fb)
{
    const uint32_t a = u & 0x7fffffffu, neg = u >> 31;
    if (a == 0)
        return kind == MXG_S8 ? 0 : (uint8_t)(neg << 7); /* -0 stays -0 in E4M3/E5M2 */
    uint32_t S;
    int ev;
    if (a >> 23) {
        S = (a & 0x7fffffu) | 0x800000u;
        ev = (int)(a >> 23) - 127;
    } else {
        const int p = 31 - hd_clz32(a);
        S = a << (23 - p);
        ev = p - 149;
    }
    const int ey = ev - s; /* floor(log2 |y|) */
    if (kind == MXG_S8) {
        /* |y| x 2^fb is the integer code: S x 2^(ey - 23 + fb) */
        const uint32_t mag = S >> (23 - fb - ey);
        return (uint8_t)(neg ? (uint32_t)(-(int32_t)mag) : mag);
    }
    const int m = kind == MXG_E4M3 ? 3 : 2, emin = kind == MXG_E4M3 ? -6 : -14,
              bias = kind == MXG_E4M3 ? 7 : 15;
    const uint32_t mag = ey >= emin
                             ? ((uint32_t)(ey + bias) << m) | ((S >> (23 - m)) & ((1u << m) - 1))
                             : S >> (23 - m + emin - ey); /* subnormal: units of 2^(emin-m) */
    return (uint8_t)((neg << 7) | mag);
}

/* The value of a tensor-core byte (the inverse of mxg_encode, for the tests): a float in
 * units of 2^-fb for int8. */
HD_INLINE float mxg_decode(uint8_t q, int kind)
{
    if (kind == MXG_S8)
        return (float)(int8_t)q;
    const int m = kind == MXG_E4M3 ? 3 : 2, emin = kind == MXG_E4M3 ? -6 : -14,
              bias = kind == MXG_E4M3 ? 7 : 15;
    const int e = (q & 0x7f) >> m, f = q & ((1 << m) - 1);
    const double v = e ? (double)((1 << m) + f) * hd_pow2d(e - bias - m)
                       : (double)f * hd_pow2d(emin - m);
    return (float)((q & 0x80) ? -v : v);
}

/* float32 bits of 2^e, e in [-149, 127] (subnormals built from the bits) */
HD_INLINE uint32_t mxg_pow2_bits(int e)
{
    return e >= -126 ? (uint32_t)(e + 127) << 23 : 1u << (e + 149);
}

/* A block's multiplier 2^(s - fb) as float32 bits; the quiet NaN for the NaN scale. */
HD_INLINE uint32_t mxg_scale_bits(int s, int fb)
{
    return s == MXC_NAN_SCALE ? 0x7fc00000u : mxg_pow2_bits(s - fb);
}

/* Element (o, kk) of a quantized operand (o: its row, kk: along the reduction) is element
 * (r, c) of the float32 source (rows, cols): MX_AXIS_ROW (blocks along the source's rows,
 * the operand is the source) or MX_AXIS_COL (blocks down its columns, the operand is the
 * source transposed). */
HD_INLINE void mxg_src_of(size_t o, size_t kk, mx_axis_t axis, size_t *r, size_t *c)
{
    *r = axis == MX_AXIS_ROW ? o : kk;
    *c = axis == MX_AXIS_ROW ? kk : o;
}

/* ---- the fold: MX blocks -> cuBLASLt's 128-element FP8 blocks --------------------------- *
 *
 * cuBLASLt runs FP8 GEMMs on Hopper's wgmma with one float32 scale per 128 elements along
 * K (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F). A row's chunk of 128 holds 128 / g granules
 * (MX blocks, or parts of one) with scale exponents s_i; with S = max s_i, element e of
 * granule i becomes e' = e x 2^(s_i - S) and the chunk's scale 2^S, which is the same
 * value exactly when e' is an E4M3 value. E4M3 holds every multiple of 2^-9 up to 448
 * with at most 4 significant bits, and FP4/FP6 elements have at most 4, so for them e' is
 * exact iff e x 2^(s_i - S) is a multiple of 2^-9: always while S - s_i <= 9 + emin - m
 * (mxg_fold_dmax: E2M1 8, E3M2 5, E2M3 6; E4M3 elements lose bits at any shift), and
 * otherwise element by element (zeros, and elements with trailing zero bits, stay exact).
 * The kernels check every element (mxg_fold_byte); a chunk that is not exact is not
 * rounded: the GEMM runs the per-block kernel instead (cuda_mxgemm.cu). */

/* The largest shift at which every element of a float format stays an E4M3 value: the
 * smallest element quantum 2^(emin - m) must stay a multiple of 2^-9. -1 for formats
 * without E4M3 elements. */
HD_INLINE int mxg_fold_dmax(int format)
{
    if (mxg_kind(format) != MXG_E4M3)
        return -1;
    const mxc_fmt_t f = mxc_fmt((mx_format_t)format);
    return 9 + f.emin - f.m;
}

/* E4M3 byte q times 2^-d (d >= 0) into *out; false when that is not an E4M3 value (bits
 * would be lost). The magnitude as an integer multiple of 2^-9: subnormal f, normal
 * (8 + f) << (e - 1). */
HD_INLINE bool mxg_fold_byte(uint8_t q, int d, uint8_t *out)
{
    const uint32_t e = (q & 0x7fu) >> 3, f = q & 7u;
    const uint32_t v = e ? (8u + f) << (e - 1) : f; /* < 2^18 */
    if (d >= 18 ? v != 0 : (v & ((1u << d) - 1)) != 0)
        return false;
    const uint32_t w = d >= 18 ? 0 : v >> d;
    uint32_t mag;
    if (w < 8) {
        mag = w; /* subnormal (or zero) */
    } else {
        const int p = 31 - hd_clz32(w), ee = p - 2; /* w = (8 + f') << (ee - 1) */
        mag = ((uint32_t)ee << 3) | ((w >> (ee - 1)) - 8u);
    }
    *out = (uint8_t)((q & 0x80u) | mag);
    return true;
}

/* The exponent of a power of two given as float32 bits (normal or subnormal, not 0). */
HD_INLINE int mxg_pow2_exp(uint32_t bits)
{
    return bits >> 23 ? (int)(bits >> 23) - 127 : 31 - hd_clz32(bits) - 149;
}

#define MXG_CHUNK 128 /* cuBLASLt's block along K (VEC128_32F) */

/* ---- fragment maps of the GEMM kernel (PTX ISA, "Matrix Fragments for mma.m16n8k32",
 * 8-bit types; the k16 shape is its first half) --------------------------------------- */

/* ldmatrix.x4 over A's 16 x 32-byte sub-tile: the shared-memory row and byte column whose
 * 16 bytes lane `lane` points at. Matrices 0..3 (lanes 8q..8q+7) are rows 0-7 / 8-15 by
 * bytes 0-15 / 16-31 in the order a0, a1, a2, a3 of the fragment. */
HD_INLINE void mxg_ldsm_a(int lane, int *row, int *col)
{
    *row = lane & 15;
    *col = (lane >> 4) * 16;
}

/* ldmatrix.x4 over B's 16 (n) x 32-byte sub-tile holding two n8 tiles: matrices 0..3 are
 * (n 0-7, bytes 0-15), (n 0-7, bytes 16-31), (n 8-15, bytes 0-15), (n 8-15, bytes 16-31):
 * b0, b1 of the first n8 tile, then of the second. */
HD_INLINE void mxg_ldsm_b(int lane, int *row, int *col)
{
    *row = (lane >> 4) * 8 + (lane & 7);
    *col = ((lane >> 3) & 1) * 16;
}

/* The PTX definition: byte j (0..3) of A register i (0..3) of lane `lane` holds
 * A[row][col] of the m16 x k32 tile. */
HD_INLINE void mxg_frag_a(int lane, int i, int j, int *row, int *col)
{
    const int g = lane >> 2, t = lane & 3, e = i * 4 + j; /* element a_e */
    *row = (e < 4 || (e >= 8 && e < 12)) ? g : g + 8;
    *col = t * 4 + (e & 3) + (e >= 8 ? 16 : 0);
}

/* byte j of B register i (0, 1) of lane `lane` holds B[k = row][n = col] of the k32 x n8
 * tile (stored n-major: byte k of row n in shared memory) */
HD_INLINE void mxg_frag_b(int lane, int i, int j, int *k, int *n)
{
    const int g = lane >> 2, t = lane & 3, e = i * 4 + j;
    *k = t * 4 + (e & 3) + (e >= 4 ? 16 : 0);
    *n = g;
}

/* accumulator r (0..3) of lane `lane`: C[row][col] of the m16 x n8 tile */
HD_INLINE void mxg_frag_c(int lane, int r, int *row, int *col)
{
    *row = (lane >> 2) + (r >= 2 ? 8 : 0);
    *col = (lane & 3) * 2 + (r & 1);
}

/* ldmatrix's own map: lane `lane` receives word (lane & 3) of row (lane >> 2) of each of
 * the matrices, register q from matrix q. */
HD_INLINE void mxg_ldsm_dest(int lane, int *row, int *word)
{
    *row = lane >> 2;
    *word = lane & 3;
}

/* For blocks of 8 (a k16 MMA per pair of blocks): the lanes whose A bytes belong to the
 * block q (0: k 0-7, 1: k 8-15 of the k16 half) keep them, the others pass zeros. */
HD_INLINE bool mxg_k8_keep(int lane, int q) { return ((lane & 3) >> 1) == q; }

#endif
