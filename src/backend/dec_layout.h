/* dec_layout: the arithmetic of the decode kernels that a CPU can check, written once as C
 * for the host and (under nvcc) the device:
 *
 *  - reading MX element codes out of mx_pack's packed bytes (dl_code = mx_pack_get) and
 *    their exact values (dl_value = mx_pack_decode's element times its E8M0 scale);
 *  - the code mx_pack writes for a fake-quantized value (dl_encode = mxq_codes), which the
 *    GPU's packing kernel uses so that its bytes are mx_pack_encode's;
 *  - dl_decode8: eight consecutive codes of one block into the bf16 operand pairs the
 *    decode GEMV multiplies, a few integer operations and one bf16x2 multiply per pair.
 *    Its values are bit for bit the emulated path's bf16 operand (the fake-quantized
 *    float32 value with its low 16 bits dropped, cuda_mx.cu's store of an MX operand);
 *    a block whose scale puts an element outside bf16's normal range returns false and
 *    the caller takes dl_value (exact) instead;
 *  - where the GEMV keeps each element of its activation operand in shared memory
 *    (dl_xpos), so that a thread's 8-byte read is the mma fragment its weights pair with.
 *
 * The GEMV (cuda_decode.cu) multiplies y = x W^T for M <= 64 rows with warp-level
 * mma.m16n8k16 (bf16 operands, float32 accumulation). The weight rows are the mma's A
 * rows and the activation rows its B columns. Its K loop runs in units of DL_UNIT
 * elements per weight row: thread t (of the four threads sharing a row pair g, g + 8)
 * holds elements [32t, 32t + 32) of the unit, four chunks of eight; chunk j feeds mma
 * steps 2j and 2j + 1. Within a chunk the eight elements are paired into four bf16x2
 * registers in an order that suits the format's packing (dl_pairing); the activation
 * operand is stored in shared memory in the same order, so both operands of every
 * product agree on which element of K they are (a sum over K does not care about the
 * order of its terms).
 *
 * Nothing here allocates or touches memory other than its arguments. Tested by
 * tests/test_decode.c against src/mx.
 */
#ifndef MXRLHF_BACKEND_DEC_LAYOUT_H
#define MXRLHF_BACKEND_DEC_LAYOUT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#include <cuda_bf16.h>
#endif
#include "util/hostdev.h"


/* Elements of K per weight row in one GEMV unit (4 threads x 32). */
#define DL_UNIT 128

/* The weight formats of the GEMV: mx_format_t's MX formats (0..6) and bf16 weights. */
enum { DL_E4M3, DL_E5M2, DL_E3M2, DL_E2M3, DL_E2M1, DL_INT8, DL_INT4, DL_BF16, DL_NFMT };

/* 2^k as a float, k in [-149, 127], from the bits */
HD_INLINE float dl_pow2f(int k)
{
    return hd_u2f(k >= -126 ? (uint32_t)(k + 127) << 23 : 1u << (k + 149));
}

/* Facts of a weight format (mx.h's element formats; src/mx's mxq_fmt for m, emin). */
typedef struct dl_fmt {
    int sbits;   /* bits one code takes in mx_pack's storage: 4, 6 or 8 (int4: a byte) */
    int bits;    /* bits of the code itself (sign included) */
    int m;       /* trailing mantissa bits (int: fraction bits) */
    int emin;    /* exponent of the smallest normal (int: 0) */
    int is_int;
} dl_fmt_t;

HD_INLINE dl_fmt_t dl_fmt(int f)
{
    dl_fmt_t r;
    r.is_int = 0;
    switch (f) {
    case DL_E4M3: r.sbits = 8, r.bits = 8, r.m = 3, r.emin = -6; break;
    case DL_E5M2: r.sbits = 8, r.bits = 8, r.m = 2, r.emin = -14; break;
    case DL_E3M2: r.sbits = 6, r.bits = 6, r.m = 2, r.emin = -2; break;
    case DL_E2M3: r.sbits = 6, r.bits = 6, r.m = 3, r.emin = 0; break;
    case DL_E2M1: r.sbits = 4, r.bits = 4, r.m = 1, r.emin = 0; break;
    case DL_INT8: r.sbits = 8, r.bits = 8, r.m = 6, r.emin = 0, r.is_int = 1; break;
    case DL_INT4: r.sbits = 8, r.bits = 4, r.m = 2, r.emin = 0, r.is_int = 1; break;
    default: r.sbits = 16, r.bits = 16, r.m = 7, r.emin = -126; break; /* bf16 */
    }
    return r;
}

/* Bytes of n codes in mx_pack's storage (= mx_pack_elem_bytes); bf16: 2 per element. */
HD_INLINE size_t dl_code_bytes(int f, size_t n)
{
    return (n * (size_t)dl_fmt(f).sbits + 7) / 8;
}

/* Code i of a packed array (= mx_pack_get). */
HD_INLINE uint32_t dl_code(int f, const uint8_t *el, size_t i)
{
    switch (dl_fmt(f).sbits) {
    case 4:
        return (el[i / 2] >> (4 * (i & 1))) & 0xFu;
    case 6: {
        size_t bit = i * 6, byte = bit / 8;
        unsigned sh = (unsigned)(bit % 8);
        unsigned w = el[byte] | (sh > 2 ? (unsigned)el[byte + 1] << 8 : 0u);
        return (w >> sh) & 0x3Fu;
    }
    default:
        return el[i];
    }
}

/* The float value of an element code (= mx_elem_decode; NaN/Inf codes, which packing
 * never writes, as there). */
HD_INLINE float dl_elem(int f, uint32_t code)
{
    const dl_fmt_t q = dl_fmt(f);
    if (q.is_int)
        return (float)(int8_t)(uint8_t)code * dl_pow2f(-q.m);
    const int ebits = q.bits - 1 - q.m, bias = 1 - q.emin;
    const uint32_t sg = (code >> (q.bits - 1)) & 1u;
    const uint32_t E = (code >> q.m) & ((1u << ebits) - 1), M = code & ((1u << q.m) - 1);
    float v;
    if (f == DL_E4M3 && E == 15 && M == 7)
        v = hd_u2f(0x7fc00000u);
    else if (f == DL_E5M2 && E == 31)
        v = M ? hd_u2f(0x7fc00000u) : hd_u2f(0x7f800000u);
    else if (E == 0)
        v = (float)M * dl_pow2f(q.emin - q.m);
    else
        v = (float)((1u << q.m) + M) * dl_pow2f((int)E - bias - q.m);
    return sg ? -v : v;
}

/* The exact float32 bits of code `code` in a block with E8M0 byte sb (= mx_pack_decode:
 * the element's value times 2^(sb - 127), the quiet NaN for sb 0xFF). */
HD_INLINE uint32_t dl_value(int f, uint32_t code, uint32_t sb)
{
    if (sb == 0xFFu)
        return 0x7fc00000u;
    return hd_f2u(dl_elem(f, code) * dl_pow2f((int)sb - 127));
}

/* The code of one element (= src/mx's mxq_codes): u is the element's fake-quantized
 * float32 bits, s its block's scale exponent (not the NaN marker). */
HD_INLINE uint32_t dl_encode(int f, uint32_t u, int s)
{
    const dl_fmt_t q = dl_fmt(f);
    const float inv = dl_pow2f(-s);
    if (q.is_int)
        return (uint8_t)(int8_t)(int32_t)((hd_u2f(u) * inv) * dl_pow2f(q.m));
    /* Under rceil a block near FLT_MAX can hold an element fake quant turned into Inf:
     * Inf's bits minus the scale's exponent are exactly that element. */
    const uint32_t yb = (u & 0x7fffffffu) == 0x7f800000u ? u - ((uint32_t)s << 23)
                                                          : hd_f2u(hd_u2f(u) * inv);
    /* mxq_enc_fp: normal: (e + bias) << m | mantissa; subnormal: the significand shifted
     * down to units of 2^(emin - m) */
    const uint32_t a = yb & 0x7fffffffu;
    const uint32_t sg = (yb >> 31) << (q.bits - 1);
    int32_t ey = (int32_t)(a >> 23) - 127;
    int32_t sh = q.emin - ey;
    sh = sh < 0 ? 0 : sh;
    int32_t tot = 23 - q.m + sh;
    tot = tot > 31 ? 31 : tot;
    const uint32_t S = (a & 0x7fffffu) | 0x800000u;
    int32_t up = ey - q.emin;
    up = up < 0 ? 0 : up;
    const uint32_t mag = (S >> tot) + ((uint32_t)up << q.m);
    return (uint8_t)(sg | (a ? mag : 0u));
}

/* ---- the decode GEMV's operand pairs ---------------------------------------------------- */

/* How the eight elements of a chunk are paired into bf16x2 registers r[0..3]: the low half
 * of r[p] is element dl_slot(pairing, 2p), the high half element dl_slot(pairing, 2p + 1).
 * ADJ (bf16, fp6, ints): (0,1) (2,3) (4,5) (6,7); TWO (fp8: bytes 0 and 2 of a word share
 * a register): (0,2) (1,3) (4,6) (5,7); FOUR (fp4: nibbles i and i + 4 of a word, 16 bits
 * apart): (0,4) (1,5) (2,6) (3,7). */
enum { DL_PAIR_ADJ, DL_PAIR_TWO, DL_PAIR_FOUR };

HD_INLINE int dl_pairing(int f)
{
    return f == DL_E2M1 ? DL_PAIR_FOUR : (f == DL_E4M3 || f == DL_E5M2) ? DL_PAIR_TWO
                                                                           : DL_PAIR_ADJ;
}

/* the element of a chunk in slot `slot` (0..7) */
HD_INLINE int dl_slot(int pairing, int slot)
{
    switch (pairing) {
    case DL_PAIR_FOUR: return (slot >> 1) + 4 * (slot & 1);
    case DL_PAIR_TWO: return (slot & 4) + ((slot >> 1) & 1) + 2 * (slot & 1);
    default: return slot;
    }
}

/* the slot of chunk element i (the inverse) */
HD_INLINE int dl_slot_of(int pairing, int i)
{
    switch (pairing) {
    case DL_PAIR_FOUR: return 2 * (i & 3) + (i >> 2);
    case DL_PAIR_TWO: return (i & 4) + 2 * (i & 1) + ((i >> 1) & 1);
    default: return i;
    }
}

/* 32-bit words one thread's span (32 elements of one weight row) takes as stored */
HD_INLINE int dl_span_words(int f)
{
    return f == DL_BF16 ? 16 : f == DL_E2M1 ? 4 : (f == DL_E3M2 || f == DL_E2M3) ? 6 : 8;
}

/* Chunk j (elements 8j .. 8j + 7) of a span's words w as dl_decode8 takes them. */
HD_INLINE void dl_chunk_raw(int f, const uint32_t *w, int j, uint32_t *raw)
{
    if (f == DL_BF16) {
        raw[0] = w[4 * j], raw[1] = w[4 * j + 1], raw[2] = w[4 * j + 2], raw[3] = w[4 * j + 3];
    } else if (f == DL_E2M1) {
        raw[0] = w[j];
    } else if (f == DL_E3M2 || f == DL_E2M3) {
        /* six bytes at 6j: even chunks start on a word, odd ones half-way through one */
        if (j % 2 == 0) {
            raw[0] = w[3 * j / 2], raw[1] = w[3 * j / 2 + 1];
        } else {
            raw[0] = (w[(3 * j - 1) / 2] >> 16) | (w[(3 * j + 1) / 2] << 16);
            raw[1] = w[(3 * j + 1) / 2] >> 16;
        }
    } else {
        raw[0] = w[2 * j], raw[1] = w[2 * j + 1];
    }
}

/* Where element l (0 <= l < DL_UNIT) of a unit of the activation operand lives in the
 * unit's DL_UNIT shared-memory slots: thread t = l / 32's chunk j = (l % 32) / 8 feeds mma
 * steps 2j and 2j + 1 with slots 0-3 and 4-7; step st's four slots of thread t sit at
 * st * 16 + t * 4, so the four threads of a row read 32 consecutive bytes. */
HD_INLINE int dl_xpos(int pairing, int l)
{
    const int t = l >> 5, j = (l >> 3) & 3, slot = dl_slot_of(pairing, l & 7);
    const int st = 2 * j + (slot >> 2);
    return st * 16 + t * 4 + (slot & 3);
}

/* Two bf16 values times a bf16 power of two, both halves (f2 holds the factor twice).
 * Exact whenever the products are bf16 normals, which dl_decode8 makes sure of; the
 * device's bf16 multiply (HMUL2.BF16, one instruction a pair) supports subnormal inputs (an
 * element below its format's smallest normal is placed as a bf16 subnormal, and the factor
 * brings it up), which tests/gpu/test_gpu_decode.c checks bit for bit; building with
 * -DDL_MUL_F32 uses two float32 multiplies instead (what the host does). */
HD_INLINE uint32_t dl_mul2(uint32_t pair, uint32_t f2)
{
#if defined(__CUDA_ARCH__) && !defined(DL_MUL_F32) /* DL_MUL_F32: float32 multiplies instead */
    __nv_bfloat162 a, b;
    memcpy(&a, &pair, 4);
    memcpy(&b, &f2, 4);
    __nv_bfloat162 r = __hmul2(a, b);
    uint32_t u;
    memcpy(&u, &r, 4);
    return u;
#else
    const float f = hd_u2f((f2 & 0xffffu) << 16);
    const uint32_t lo = hd_f2u(hd_u2f((pair & 0xffffu) << 16) * f) >> 16;
    const uint32_t hi = hd_f2u(hd_u2f(pair & 0xffff0000u) * f) >> 16;
    return lo | hi << 16;
#endif
}

/* The bf16 pair of a float format's two codes placed side by side: each half is the sign
 * and the code's exponent and mantissa bits at bf16's exponent/mantissa boundary, i.e.
 * the element times 2^-(127 - bias) as a bf16 (a subnormal one when the element is). */
HD_INLINE uint32_t dl_place2(uint32_t c0, uint32_t c1, int bits, int m)
{
    const uint32_t mm = (1u << (bits - 1)) - 1;
    const uint32_t h0 = ((c0 >> (bits - 1)) << 15) | ((c0 & mm) << (7 - m));
    const uint32_t h1 = ((c1 >> (bits - 1)) << 15) | ((c1 & mm) << (7 - m));
    return h0 | h1 << 16;
}

/* Eight consecutive codes of one block (scale byte sb) as the four bf16x2 operand
 * registers r[] of the GEMV, in dl_pairing(f)'s order. raw holds the codes as stored:
 * e2m1 raw[0] (eight nibbles); fp8, int8, int4 raw[0..1] (eight bytes); fp6 raw[0..1]
 * (the low 48 bits of raw[0] | raw[1] << 32); bf16 raw[0..3] (the values themselves,
 * returned as they are). Returns 0 (r[] unset) when the block's scale puts some element
 * outside bf16's normal range or is the NaN scale: the caller decodes each element with
 * dl_value then. */
HD_INLINE int dl_decode8(int f, const uint32_t *raw, uint32_t sb, uint32_t *r)
{
    if (f == DL_BF16) {
        r[0] = raw[0], r[1] = raw[1], r[2] = raw[2], r[3] = raw[3];
        return 1;
    }
    if (sb == 0xFFu)
        return 0;
    const dl_fmt_t q = dl_fmt(f);
    const int s = (int)sb - 127;
    if (q.is_int) {
        /* code * 2^(s - m): at most 7 significant bits and above 2^-133, so exact in
         * float32, and a bf16 after dropping 16 zero bits unless below 2^-126 */
        if (s - q.m < -126)
            return 0;
        const float sc = dl_pow2f(s - q.m);
        for (int p = 0; p < 4; p++) {
            const uint32_t w = raw[p >> 1] >> (16 * (p & 1));
            const float a = (float)(int8_t)(uint8_t)(w & 0xffu) * sc;
            const float b = (float)(int8_t)(uint8_t)((w >> 8) & 0xffu) * sc;
            r[p] = (hd_f2u(a) >> 16) | (hd_f2u(b) & 0xffff0000u);
        }
        return 1;
    }
    const int bias = 1 - q.emin;
    /* every nonzero element (>= 2^(emin - m)) times 2^s a bf16 normal, and the factor
     * 2^(127 - bias + s) a finite bf16 */
    if (s > bias || q.emin - q.m + s < -126)
        return 0;
    const uint32_t fac = (uint32_t)(254 - bias + s) << 7;
    const uint32_t f2 = fac | fac << 16;
    if (f == DL_E2M1) {
        const uint32_t w = raw[0];
        for (int p = 0; p < 4; p++) {
            /* nibbles p and p + 4 to bits 12-15 and 28-31: signs at 15 and 31, the
             * three magnitude bits moved to 6-8 and 22-24 */
            const uint32_t t = w << (12 - 4 * p);
            r[p] = dl_mul2((t & 0x80008000u) | ((t >> 6) & 0x01C001C0u), f2);
        }
        return 1;
    }
    if (f == DL_E4M3 || f == DL_E5M2) {
        /* the seven magnitude bits at 8-14 of a half go down to 7 - m */
        const int sh = 1 + q.m;
        const uint32_t mask = f == DL_E4M3 ? 0x07F007F0u : 0x0FE00FE0u;
        for (int p = 0; p < 4; p++) {
            /* bytes (0, 2) or (1, 3) of a word to bits 8-15 and 24-31 */
            const uint32_t t = (p & 1) ? raw[p >> 1] : raw[p >> 1] << 8;
            r[p] = dl_mul2((t & 0x80008000u) | ((t >> sh) & mask), f2);
        }
        return 1;
    }
    /* fp6: four codes per 24 bits */
    const uint64_t v = (uint64_t)raw[0] | (uint64_t)raw[1] << 32;
    for (int p = 0; p < 4; p++) {
        const uint32_t c0 = (uint32_t)(v >> (12 * p)) & 0x3Fu, c1 = (uint32_t)(v >> (12 * p + 6)) & 0x3Fu;
        r[p] = dl_mul2(dl_place2(c0, c1, 6, q.m), f2);
    }
    return 1;
}

/* ---- the GEMV's work split ------------------------------------------------------------------ */

/* How one decode GEMV launch is cut up. A CTA of 8 warps works on a tile: RT row tiles of
 * 16 weight rows (for SwiGLU RT/2 of gate and RT/2 of up rows, the same output columns),
 * over one of S splits of K (KR elements each, whole DL_UNITs); its 8 / RT warps per row
 * tile share the split's units and add up in shared memory, and the S splits of a row
 * group add up through global memory (the last CTA to arrive sums them in split order). */
typedef struct dl_plan {
    int NT;     /* 8-row column tiles of the activation operand: 1, 2, 4 or 8 (M <= 8 NT) */
    int RT;     /* row tiles per CTA tile: 1, 2, 4 or 8 (SwiGLU: 2, 4, 8) */
    int S;      /* splits of K */
    int KR;     /* elements of K per split, a multiple of DL_UNIT */
    int groups; /* row groups (CTA tiles per split) over all segments */
    int smem;   /* dynamic shared memory of a CTA, bytes */
} dl_plan_t;

/* row groups of segments N[0..nseg) at RT row tiles per group */
HD_INLINE int dl_groups(const int *N, int nseg, int swiglu, int RT)
{
    if (swiglu)
        return (N[0] + 8 * RT - 1) / (8 * RT);
    int g = 0;
    for (int i = 0; i < nseg; i++)
        g += (N[i] + 16 * RT - 1) / (16 * RT);
    return g;
}

/* Row pitch, floats, of a warp's partial sums (16 weight rows of 8 NT activation rows): one
 * more than a row. The sum over warps reads down a column (16 rows in 16 banks, not 4 as
 * with a pitch of 8 NT = 32); a warp's fragment writes meet a bank at most 4 times (8 at
 * NT = 4 with a pitch of 32). */
HD_INLINE int dl_red_pitch(int NT) { return 8 * NT + 1; }

/* shared memory of a CTA: the activation operand (8 NT rows of KR bf16 in DL_UNIT slots,
 * rows 32 bytes apart beyond a multiple of 128, so that the four row groups of a half-warp
 * read distinct banks), the 8 warps' partial sums and the tile's sums */
HD_INLINE int dl_smem(int NT, int RT, int KR)
{
    const int kr = (KR + DL_UNIT - 1) / DL_UNIT * DL_UNIT;
    return 8 * NT * (2 * kr + 32) + 8 * 16 * dl_red_pitch(NT) * 4 + RT * 16 * 8 * NT * 4;
}

/* A CTA's time to stage one element of the activation operand, microseconds (dl_plan_make's
 * xcost; MXRLHF_CUDA_GEMV_XCOST overrides it, in nanoseconds, for A/B runs) */
#define DL_XCOST_US 3e-4

/* The split of one launch: M rows of K, segments N[], xblock the input spec's MX block (0
 * for casts), sms multiprocessors, smem_max bytes per CTA and smem_sm per multiprocessor,
 * per_sm CTAs a multiprocessor holds by registers, ub units a warp loads at once, wbytes
 * bytes per weight element (scales included), xcost microseconds a CTA takes to stage one
 * element of the activation operand (normalise, quantize, store: instructions, not bytes).
 * Every (RT, S) is costed by a small model of a bandwidth-bound launch, and the cheapest
 * taken: the busiest multiprocessor's bytes (weights, plus the activation operand it
 * stages from L2 at a quarter of the cost) at its share of DRAM bandwidth, against the
 * latency of its rounds of CTAs (a round: the warps' batches of ub units, one load
 * latency each, the staging of M x KR elements and the sums, the global sum of splits).
 * Split boundaries fall on whole units and whole input blocks. RT = 0 when nothing fits
 * (the caller composes the op instead). */
static inline dl_plan_t dl_plan_make(int M, int K, const int *N, int nseg, int swiglu, int xblock,
                                     int sms, int per_sm, int ub, double wbytes, double xcost,
                                     int smem_max, int smem_sm)
{
    dl_plan_t best;
    memset(&best, 0, sizeof best);
    const int NT = M <= 8 ? 1 : M <= 16 ? 2 : M <= 32 ? 4 : 8;
    const int nu = (K + DL_UNIT - 1) / DL_UNIT;
    /* split boundaries fall on multiples of L: whole units and whole input blocks */
    int L = DL_UNIT;
    if (xblock > 0 && xblock % DL_UNIT != 0 && DL_UNIT % xblock != 0)
        L = 0;
    else if (xblock > DL_UNIT)
        L = xblock;
    double best_cost = 0;
    for (int RT = 8; RT >= (swiglu ? 2 : 1); RT /= 2) {
        const int groups = dl_groups(N, nseg, swiglu, RT), KSW = 8 / RT;
        int prevS = 0;
        for (int s = 1; s <= (L ? nu : 1); s++) {
            int KR = s <= 1 ? nu * DL_UNIT : ((K + s - 1) / s + L - 1) / L * L;
            if (KR > nu * DL_UNIT)
                KR = nu * DL_UNIT;
            const int S = (K + KR - 1) / KR;
            if (S == prevS)
                continue;
            prevS = S;
            const int smem = dl_smem(NT, RT, KR);
            if (smem > smem_max)
                continue;
            int fit = per_sm, by_smem = smem_sm / (smem + 1024);
            fit = fit < by_smem ? fit : by_smem;
            fit = fit < 1 ? 1 : fit;
            const long tiles = (long)groups * S;
            const int upw = ((KR + DL_UNIT - 1) / DL_UNIT + KSW - 1) / KSW;
            const int batches = (upw + ub - 1) / ub;
            const long rounds = (tiles + (long)sms * fit - 1) / ((long)sms * fit);
            const long busiest = (tiles + sms - 1) / sms;
            const double bytes = (double)busiest * (16.0 * RT * KR * wbytes + 0.25 * 4.0 * M * KR);
            const double t_bw = bytes / 25e3; /* microseconds at ~3.3 TB/s over 132 SMs */
            const double t_lat =
                (double)rounds * (batches + 1.5 + (S > 1 ? 0.7 : 0.0) + xcost * M * KR);
            const double cost = (t_bw > t_lat ? t_bw : t_lat) + 0.01 * (double)rounds;
            if (!best.RT || cost < best_cost) {
                best.NT = NT, best.RT = RT, best.S = S, best.KR = KR, best.groups = groups;
                best.smem = smem;
                best_cost = cost;
            }
        }
    }
    return best;
}

#endif
