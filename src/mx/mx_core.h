/* mx_core: the MX arithmetic, written once and compiled both as C (src/mx) and by nvcc
 * for the CUDA kernels (util/hostdev.h's HD_INLINE), so that a format or a rounding rule
 * changes in one place and the CPU and the GPU give the same bits:
 *
 * - mxc_fmt: the element-format constants of mx_format_t;
 * - mxc_scale_exp: the block scale rule (floor, rceil) from the largest magnitude's bits;
 * - mxc_elem: the exact rounding of one element at a block scale, every mx_round_t
 *   (stochastic with the element's Philox word), integer and exact-double operations;
 * - mxc_cast_bf16 / mxc_cast_fp16: the plain-cast round trips (util/half.h's casts);
 * - mxc_nblocks / mxc_block_span / mxc_block_of: the blocks of a matrix on either axis,
 *   as mx_fake_quant lays them out.
 *
 * src/mx/mx_quant.c's vectorised kernels compute the same as mxc_elem for the common
 * case and are tested against it (tests/test_mx.c); tests/gpu/test_cuda_math.cu checks
 * nvcc's instantiation against the C one. Semantics: mx.h and docs/mx.md.
 */
#ifndef MXRLHF_MX_MX_CORE_H
#define MXRLHF_MX_MX_CORE_H

#include <float.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "mx/mx.h"
#ifdef __cplusplus
}
#endif
#include "util/hostdev.h"
#include "util/philox.h"

/* Element-format constants used by the kernels. */
typedef struct mxc_fmt {
    int m;             /* trailing mantissa bits (int formats: fraction bits, bits - 2) */
    int emin;          /* exponent of the smallest normal (int formats: 0) */
    int emax;          /* exponent of the largest normal (int formats: 0) */
    float max;         /* largest finite element */
    uint32_t max_mant; /* the float32 trailing mantissa of `max` (for rceil) */
} mxc_fmt_t;

HD_INLINE mxc_fmt_t mxc_fmt_make(int m, int emin, int emax, float max, uint32_t max_mant)
{
    mxc_fmt_t f;
    f.m = m, f.emin = emin, f.emax = emax, f.max = max, f.max_mant = max_mant;
    return f;
}

/* max: e4m3 1.75*2^8 (OCP E4M3 has no Inf; S.1111.111 is NaN), e5m2 1.75*2^15, e3m2
 * 1.75*2^4, e2m3 1.875*2^2, e2m1 1.5*2^2, int8 127/64, int4 7/4; the plain casts too. */
HD_INLINE mxc_fmt_t mxc_fmt(mx_format_t format)
{
    switch (format) {
    case MX_FP8_E4M3: return mxc_fmt_make(3, -6, 8, 448.0f, 0x600000u);
    case MX_FP8_E5M2: return mxc_fmt_make(2, -14, 15, 57344.0f, 0x600000u);
    case MX_FP6_E3M2: return mxc_fmt_make(2, -2, 4, 28.0f, 0x600000u);
    case MX_FP6_E2M3: return mxc_fmt_make(3, 0, 2, 7.5f, 0x700000u);
    case MX_FP4_E2M1: return mxc_fmt_make(1, 0, 2, 6.0f, 0x400000u);
    case MX_INT8: return mxc_fmt_make(6, 0, 0, 127.0f / 64.0f, 0x7e0000u);
    case MX_INT4: return mxc_fmt_make(2, 0, 0, 1.75f, 0x600000u);
    case MX_BF16: return mxc_fmt_make(7, -126, 127, 3.38953138925153547590e38f, 0x7f0000u);
    case MX_FP16: return mxc_fmt_make(10, -14, 15, 65504.0f, 0x7fe000u);
    default: return mxc_fmt_make(23, -126, 127, FLT_MAX, 0x7fffffu); /* fp32 */
    }
}

/* Scale exponent marker of a block that held Inf or NaN (E8M0 byte 0xFF). */
#define MXC_NAN_SCALE 128

/* The scale exponent of a block whose largest magnitude has float32 bits amax (sign
 * cleared): MXC_NAN_SCALE for Inf/NaN, else s in [-127, 127]. */
HD_INLINE int mxc_scale_exp(const mxc_fmt_t *f, mx_scale_rule_t rule, uint32_t amax)
{
    if (amax >= 0x7f800000u)
        return MXC_NAN_SCALE;
    if (amax == 0)
        return -127; /* all zeros: any scale works; the smallest (E8M0 byte 0x00) */
    int E = (int)(amax >> 23), s;
    if (rule == MX_SCALE_FLOOR) {
        /* floor(log2 amax) - emax. A float32 subnormal amax has floor(log2) <= -127,
         * so using -127 for it lands on the same clamped value. */
        s = (E ? E - 127 : -127) - f->emax;
    } else {
        /* rceil: smallest s with 2^s >= amax / max. With amax = ma * 2^e and
         * max = mm * 2^emax (ma, mm in [1, 2)), ma / mm lies in (1/2, 2), so
         * s = e - emax + (ma > mm): an exact comparison of trailing mantissas. */
        int e;
        uint32_t mant;
        if (E) {
            e = E - 127;
            mant = amax & 0x7fffffu;
        } else {
            int p = 31 - hd_clz32(amax);
            e = p - 149;
            mant = (amax << (23 - p)) & 0x7fffffu;
        }
        s = e - f->emax + (mant > f->max_mant);
    }
    return s < -127 ? -127 : s > 127 ? 127 : s;
}

/* The exact rounding of one element (float32 bits u) at scale exponent s (MXC_NAN_SCALE
 * allowed): q(x * 2^-s) * 2^s with q rounding to the element grid (quantum
 * 2^(max(floor(log2|y|), emin) - m), subnormals kept) and saturating at the largest
 * normal. `rnd` is the element's random word (stochastic only): it rounds up when the
 * top 32 bits of the discarded fraction plus rnd carry out of 32 bits. */
HD_INLINE uint32_t mxc_elem(const mxc_fmt_t *f, mx_round_t round, int s, uint32_t u,
                            uint32_t rnd)
{
    if (s == MXC_NAN_SCALE)
        return 0x7fc00000u;
    uint32_t a = u & 0x7fffffffu, sg = u & 0x80000000u;
    if (a == 0)
        return sg;
    /* |x| = S * 2^k0 with S a 24-bit significand (top bit set). */
    uint64_t S;
    int k0;
    if (a >> 23) {
        S = (a & 0x7fffffu) | 0x800000u;
        k0 = (int)(a >> 23) - 150;
    } else {
        int p = 31 - hd_clz32(a);
        S = (uint64_t)a << (23 - p);
        k0 = p - 172;
    }
    int ex = k0 + 23;                                          /* floor(log2|x|) */
    int qe = (ex > f->emin + s ? ex : f->emin + s) - f->m;     /* quantum exponent */
    int d = qe - k0;                                           /* >= 1 always */
    uint64_t q = d < 64 ? S >> d : 0;
    uint64_t rem = d < 64 ? S & ((1ull << d) - 1) : S;         /* remainder / 2^d */
    int cmp = d - 1 >= 64 ? -1 : (rem > (1ull << (d - 1))) - (rem < (1ull << (d - 1)));
    switch (round) {
    case MX_ROUND_NEAREST:
        q += cmp >= 0;
        break;
    case MX_ROUND_EVEN:
        q += cmp > 0 || (cmp == 0 && (q & 1));
        break;
    case MX_ROUND_TRUNC:
        break;
    default: { /* MX_ROUND_STOCHASTIC: P(up) = floor(frac * 2^32) / 2^32 */
        uint64_t frac32 = d <= 32 ? rem << (32 - d) : (d - 32 < 64 ? S >> (d - 32) : 0);
        q += (frac32 + rnd) >> 32;
        break;
    }
    }
    double v = (double)q * hd_pow2d(qe);
    double mx = (double)f->max * hd_pow2d(s);
    if (v > mx)
        v = mx;
    return hd_f2u((float)v) | sg; /* exact: v is a multiple of 2^-143 below 2^128 */
}

/* ---- the fast form of mxc_elem ---------------------------------------------------------------
 * For a block whose element format's smallest normal 2^(emin + s) is a normal float32
 * (mxc_fast_ok), mxc_elem's rounding takes a few 32-bit integer operations on the element's
 * bits, without forming x * 2^-s: in the "normal region" (|x| >= 2^(emin + s)) the quantum
 * is 2^(e - m) with e the float32's own exponent, so rounding is adding a bias and masking
 * (a carry moves into the exponent by itself); below it the quantum is the block constant
 * Q = 2^(emin + s - m), and the 24-bit significand is shifted right by a per-element amount,
 * rounded, and the small integer result converted back as r * Q (exact). The result is then
 * clamped to max * 2^s by an integer compare (bit patterns of non-negative floats order like
 * the numbers). Selections are masks, so loops over it vectorise. mx_quant.c's kernels and
 * the CUDA kernels use these; tests/test_mx.c holds them to mxc_elem. */
typedef struct mxc_kp {
    int32_t T;     /* biased float32 exponent of 2^(emin + s): the region boundary */
    float Q;       /* 2^(emin + s - m): the subnormal-region quantum */
    uint32_t maxb; /* bits of max * 2^s */
} mxc_kp_t;

/* 2^k as a float for k in [-149, 127], from the bits (exact, no libm) */
HD_INLINE float mxc_pow2f(int k)
{
    return hd_u2f(k >= -126 ? (uint32_t)(k + 127) << 23 : 1u << (k + 149));
}

HD_INLINE int mxc_fast_ok(const mxc_fmt_t *f, int s)
{
    return s != MXC_NAN_SCALE && f->emin + s + 127 >= 1;
}

HD_INLINE mxc_kp_t mxc_kparams(const mxc_fmt_t *f, int s)
{
    mxc_kp_t p;
    p.T = f->emin + s + 127;
    const int qe = f->emin + s - f->m;
    p.Q = mxc_pow2f(qe < -149 ? -149 : qe); /* qe >= -143 whenever T >= 1 */
    p.maxb = hd_f2u(f->max * mxc_pow2f(s));
    return p;
}

/* mxc_elem for the deterministic roundings (nearest, even, trunc) where mxc_fast_ok */
HD_INLINE uint32_t mxc_elem_det(const mxc_fmt_t *f, mx_round_t R, int32_t T, float Q, uint32_t maxb,
                                uint32_t u)
{
    const int dbase = 23 - f->m;
    const uint32_t nmask = ~((1u << dbase) - 1), half = 1u << (dbase - 1);
    const uint32_t a = u & 0x7fffffffu, sg = u & 0x80000000u;
    const int32_t E = (int32_t)(a >> 23);
    /* normal region */
    const uint32_t bias = R == MX_ROUND_NEAREST ? half
                          : R == MX_ROUND_EVEN  ? half - 1 + ((a >> dbase) & 1)
                                                : 0;
    const uint32_t rn = (a + bias) & nmask;
    /* subnormal region */
    const int32_t Eeff = E > 1 ? E : 1;
    const uint32_t S = (a & 0x7fffffu) | (E ? 0x800000u : 0);
    int32_t d = dbase + T - Eeff;
    d = d < 1 ? 1 : d > 31 ? 31 : d;
    const uint32_t h = 1u << (d - 1);
    const uint32_t bs = R == MX_ROUND_NEAREST ? h : R == MX_ROUND_EVEN ? h - 1 + ((S >> d) & 1) : 0;
    const uint32_t r = (S + bs) >> d;
    const uint32_t rs = hd_f2u((float)(int32_t)r * Q);
    const uint32_t sel = (uint32_t) - (int32_t)(E >= T); /* a mask, not ?:, so it vectorises */
    uint32_t res = (rn & sel) | (rs & ~sel);
    res = res < maxb ? res : maxb;
    return res | sg;
}

/* mxc_elem for stochastic rounding with the element's random word rnd where mxc_fast_ok */
HD_INLINE uint32_t mxc_elem_sto(const mxc_fmt_t *f, int32_t T, float Q, uint32_t maxb, uint32_t u,
                                uint32_t rnd)
{
    const int dbase = 23 - f->m;
    const uint32_t nmask = ~((1u << dbase) - 1);
    const uint32_t a = u & 0x7fffffffu, sg = u & 0x80000000u;
    const int32_t E = (int32_t)(a >> 23);
    /* adding the top dbase random bits to the dbase dropped bits carries exactly when
     * frac * 2^32 + rnd >= 2^32 */
    const uint32_t rn = (a + (rnd >> (32 - dbase))) & nmask;
    const int32_t Eeff = E > 1 ? E : 1;
    const uint32_t S = (a & 0x7fffffu) | (E ? 0x800000u : 0);
    int32_t d = dbase + T - Eeff;
    d = d < 1 ? 1 : d > 63 ? 63 : d;
    /* the top 32 bits of the discarded fraction S mod 2^d, over 2^d: for d <= 32 the 32-bit
     * shift left drops the kept bits by itself; beyond, S >> (d - 32) */
    const uint32_t lo = S << ((32 - d) & 31), hi = S >> ((d - 32) & 31);
    const uint32_t le32 = (uint32_t) - (int32_t)(d <= 32);
    const uint32_t frac32 = (lo & le32) | (hi & ~le32);
    const uint32_t sum = frac32 + rnd;
    const uint32_t r = (S >> (d < 31 ? d : 31)) + (sum < rnd); /* + carry */
    const uint32_t rs = hd_f2u((float)(int32_t)r * Q);
    const uint32_t sel = (uint32_t) - (int32_t)(E >= T);
    uint32_t res = (rn & sel) | (rs & ~sel);
    res = res < maxb ? res : maxb;
    return res | sg;
}

/* mxc_elem, through the fast form where it applies: the same bits, every rounding */
HD_INLINE uint32_t mxc_elem_fast(const mxc_fmt_t *f, mx_round_t round, int s, uint32_t u, uint32_t rnd)
{
    if (!mxc_fast_ok(f, s))
        return mxc_elem(f, round, s, u, rnd);
    const mxc_kp_t p = mxc_kparams(f, s);
    return round == MX_ROUND_STOCHASTIC ? mxc_elem_sto(f, p.T, p.Q, p.maxb, u, rnd)
                                        : mxc_elem_det(f, round, p.T, p.Q, p.maxb, u);
}

/* bf16 round trip on the bits (half_f32_to_bf16 then back): RNE, NaN kept quiet. */
HD_INLINE uint32_t mxc_cast_bf16(uint32_t u)
{
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1)) & 0xffff0000u;
    uint32_t nan = (u & 0xffff0000u) | 0x00400000u;
    return (u & 0x7fffffffu) > 0x7f800000u ? nan : r;
}

/* fp16 round trip on the bits (half_f32_to_f16 then half_f16_to_f32): the element
 * format m = 10, emin = -14 at scale 1, overflowing to Inf instead of saturating.
 * Selections are masks, not branches, so the CPU's loops over it vectorise. */
HD_INLINE uint32_t mxc_cast_fp16(uint32_t u)
{
    uint32_t a = u & 0x7fffffffu, sg = u & 0x80000000u;
    int32_t E = (int32_t)(a >> 23);
    uint32_t rn = (a + 0xfffu + ((a >> 13) & 1)) & ~0x1fffu;
    rn = rn > 0x477fe000u ? 0x7f800000u : rn; /* above 65504 after rounding: Inf */
    int32_t Eeff = E > 1 ? E : 1;
    uint32_t S = (a & 0x7fffffu) | (E ? 0x800000u : 0);
    int32_t d = 126 - Eeff; /* below 2^-14: quantum 2^-24 */
    d = d < 1 ? 1 : d > 31 ? 31 : d;
    uint32_t r = (S + (1u << (d - 1)) - 1 + ((S >> d) & 1)) >> d;
    uint32_t rs = hd_f2u((float)(int32_t)r * 0x1p-24f);
    uint32_t sel = (uint32_t) - (int32_t)(E >= 113);
    uint32_t res = (rn & sel) | (rs & ~sel);
    uint32_t nan = (uint32_t) - (int32_t)(a > 0x7f800000u);
    res = (0x7fc00000u & nan) | (res & ~nan);
    return res | sg;
}

/* Blocks of k elements of a (rows, cols) row-major matrix, as mx_fake_quant lays them
 * out: along rows (MX_AXIS_ROW), ceil(cols / k) blocks per row, the last one short;
 * down columns (MX_AXIS_COL), ceil(rows / k) groups of k rows times cols blocks, the
 * bottom group short. */
HD_INLINE size_t mxc_nblocks(size_t rows, size_t cols, mx_axis_t axis, int k)
{
    return axis == MX_AXIS_ROW ? rows * ((cols + (size_t)k - 1) / (size_t)k)
                               : ((rows + (size_t)k - 1) / (size_t)k) * cols;
}

/* block b: its first element, length and element stride */
HD_INLINE void mxc_block_span(size_t b, size_t rows, size_t cols, mx_axis_t axis, int k,
                              size_t *start, size_t *len, size_t *stride)
{
    if (axis == MX_AXIS_ROW) {
        const size_t nbc = (cols + (size_t)k - 1) / (size_t)k;
        size_t r = b / nbc, c0 = (b % nbc) * (size_t)k;
        *start = r * cols + c0;
        *len = cols - c0 < (size_t)k ? cols - c0 : (size_t)k;
        *stride = 1;
    } else {
        size_t c = b % cols, r0 = (b / cols) * (size_t)k;
        *start = r0 * cols + c;
        *len = rows - r0 < (size_t)k ? rows - r0 : (size_t)k;
        *stride = cols;
    }
}

/* the block of element (r, c) */
HD_INLINE size_t mxc_block_of(size_t r, size_t c, size_t cols, mx_axis_t axis, int k)
{
    return axis == MX_AXIS_ROW ? r * ((cols + (size_t)k - 1) / (size_t)k) + c / (size_t)k
                               : (r / (size_t)k) * cols + c;
}

#endif
