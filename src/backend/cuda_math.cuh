/* cuda_math: bit-level arithmetic the CUDA kernels share with the CPU definitions, written
 * once for host and device (__host__ __device__), so that it can be checked on a machine
 * without a GPU (tests/gpu/test_gpu_math.cu compares the host instantiation with src/mx
 * and util/rng) and runs unchanged in the kernels.
 *
 * - Philox4x32-10 and the word/uniform mappings of util/rng.h;
 * - the MX scale rule (mxq_scale_exp) and the exact element rounding (mxq_elem_ref) of
 *   src/mx/mx_quant.c, integer and exact-double operations only, so every rounding mode,
 *   stochastic included, gives the same bits as the CPU;
 * - the bf16 and fp16 round trips (mxq_cast_bf16 / mxq_cast_fp16; half.h's conversions).
 */
#ifndef MXRLHF_BACKEND_CUDA_MATH_CUH
#define MXRLHF_BACKEND_CUDA_MATH_CUH

#include <stdint.h>
#include <string.h>

#define CM_HD __host__ __device__ __forceinline__

CM_HD uint32_t cm_f2u(float f)
{
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
#endif
}

CM_HD float cm_u2f(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}

CM_HD int cm_clz32(uint32_t x) /* x != 0 */
{
#ifdef __CUDA_ARCH__
    return __clz((int)x);
#else
    return __builtin_clz(x);
#endif
}

/* 2^k as a double, k in [-1022, 1023] */
CM_HD double cm_pow2d(int k)
{
    uint64_t b = (uint64_t)(k + 1023) << 52;
#ifdef __CUDA_ARCH__
    return __longlong_as_double((long long)b);
#else
    double d;
    memcpy(&d, &b, 8);
    return d;
#endif
}

/* ---- Philox4x32-10 (util/rng.c) ------------------------------------------------------ */

CM_HD void cm_philox(uint32_t c[4], uint32_t k0, uint32_t k1)
{
    uint32_t c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    c[0] = c0, c[1] = c1, c[2] = c2, c[3] = c3;
}

/* rng_u32(seed, stream, index) */
CM_HD uint32_t cm_rng_u32(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint64_t blk = index >> 2;
    uint32_t c[4] = {(uint32_t)blk, (uint32_t)(blk >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)};
    cm_philox(c, (uint32_t)seed, (uint32_t)(seed >> 32));
    uint32_t l = (uint32_t)(index & 3);
    return l == 0 ? c[0] : l == 1 ? c[1] : l == 2 ? c[2] : c[3];
}

/* rng_uniform_double(seed, stream, index): words 2i and 2i+1 (one Philox block) */
CM_HD double cm_rng_uniform_double(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint64_t a = cm_rng_u32(seed, stream, 2 * index) >> 5;
    uint64_t b = cm_rng_u32(seed, stream, 2 * index + 1) >> 6;
    return (double)((a << 26) | b) * 0x1p-53;
}

/* ---- MX (src/mx/mx_quant.c) ---------------------------------------------------------- */

/* mxq_fmt_t of src/mx/mx.c for the seven MX element formats (indices of mx_format_t) */
typedef struct cm_mxf {
    int m, emin, emax;
    float max;
    uint32_t max_mant;
} cm_mxf_t;

CM_HD cm_mxf_t cm_mx_fmt(int format)
{
    cm_mxf_t f;
    switch (format) {
    case 0: f = {3, -6, 8, 448.0f, 0x600000u}; break;          /* fp8 e4m3 */
    case 1: f = {2, -14, 15, 57344.0f, 0x600000u}; break;      /* fp8 e5m2 */
    case 2: f = {2, -2, 4, 28.0f, 0x600000u}; break;           /* fp6 e3m2 */
    case 3: f = {3, 0, 2, 7.5f, 0x700000u}; break;             /* fp6 e2m3 */
    case 4: f = {1, 0, 2, 6.0f, 0x400000u}; break;             /* fp4 e2m1 */
    case 5: f = {6, 0, 0, 127.0f / 64.0f, 0x7e0000u}; break;   /* int8 */
    default: f = {2, 0, 0, 1.75f, 0x600000u}; break;           /* int4 */
    }
    return f;
}

#define CM_NAN_SCALE 128

/* mxq_scale_exp: rule 0 floor, 1 rceil */
CM_HD int cm_mx_scale_exp(const cm_mxf_t &f, int rule, uint32_t amax)
{
    if (amax >= 0x7f800000u)
        return CM_NAN_SCALE;
    if (amax == 0)
        return -127;
    int E = (int)(amax >> 23), s;
    if (rule == 0) {
        s = (E ? E - 127 : -127) - f.emax;
    } else {
        int e;
        uint32_t mant;
        if (E) {
            e = E - 127;
            mant = amax & 0x7fffffu;
        } else {
            int p = 31 - cm_clz32(amax);
            e = p - 149;
            mant = (amax << (23 - p)) & 0x7fffffu;
        }
        s = e - f.emax + (mant > f.max_mant);
    }
    return s < -127 ? -127 : s > 127 ? 127 : s;
}

/* mxq_elem_ref: round 0 nearest (ties away), 1 even, 2 trunc, 3 stochastic (word rnd) */
CM_HD uint32_t cm_mx_elem(const cm_mxf_t &f, int round, int s, uint32_t u, uint32_t rnd)
{
    if (s == CM_NAN_SCALE)
        return 0x7fc00000u;
    uint32_t a = u & 0x7fffffffu, sg = u & 0x80000000u;
    if (a == 0)
        return sg;
    uint64_t S;
    int k0;
    if (a >> 23) {
        S = (a & 0x7fffffu) | 0x800000u;
        k0 = (int)(a >> 23) - 150;
    } else {
        int p = 31 - cm_clz32(a);
        S = (uint64_t)a << (23 - p);
        k0 = p - 172;
    }
    int ex = k0 + 23;
    int qe = (ex > f.emin + s ? ex : f.emin + s) - f.m;
    int d = qe - k0;
    uint64_t q = d < 64 ? S >> d : 0;
    uint64_t rem = d < 64 ? S & ((1ull << d) - 1) : S;
    int cmp = d - 1 >= 64 ? -1 : (rem > (1ull << (d - 1))) - (rem < (1ull << (d - 1)));
    switch (round) {
    case 0:
        q += cmp >= 0;
        break;
    case 1:
        q += cmp > 0 || (cmp == 0 && (q & 1));
        break;
    case 2:
        break;
    default: {
        uint64_t frac32 = d <= 32 ? rem << (32 - d) : (d - 32 < 64 ? S >> (d - 32) : 0);
        q += (frac32 + rnd) >> 32;
        break;
    }
    }
    double v = (double)q * cm_pow2d(qe);
    double mx = (double)f.max * cm_pow2d(s);
    if (v > mx)
        v = mx;
    return cm_f2u((float)v) | sg;
}

/* Blocks of a (rows, cols) matrix, as mx_fake_quant lays them out: axis 0 (rows) has
 * ceil(cols / k) blocks per row, the last one short; axis 1 (columns) has ceil(rows / k)
 * groups of k rows times cols blocks, the bottom group short. */
CM_HD size_t cm_mx_nblocks(size_t rows, size_t cols, int axis, int k)
{
    return axis == 0 ? rows * ((cols + (size_t)k - 1) / (size_t)k)
                     : ((rows + (size_t)k - 1) / (size_t)k) * cols;
}

/* block b: its first element, length and element stride */
CM_HD void cm_mx_block_span(size_t b, size_t rows, size_t cols, int axis, int k, size_t *start,
                            size_t *len, size_t *stride)
{
    if (axis == 0) {
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
CM_HD size_t cm_mx_block_of(size_t r, size_t c, size_t cols, int axis, int k)
{
    return axis == 0 ? r * ((cols + (size_t)k - 1) / (size_t)k) + c / (size_t)k
                     : (r / (size_t)k) * cols + c;
}

/* mxq_cast_bf16 (= half_f32_to_bf16 and back) */
CM_HD uint32_t cm_cast_bf16(uint32_t u)
{
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1)) & 0xffff0000u;
    uint32_t nan = (u & 0xffff0000u) | 0x00400000u;
    return (u & 0x7fffffffu) > 0x7f800000u ? nan : r;
}

/* mxq_cast_fp16 (= half_f32_to_f16 and back) */
CM_HD uint32_t cm_cast_fp16(uint32_t u)
{
    uint32_t a = u & 0x7fffffffu, sg = u & 0x80000000u;
    int32_t E = (int32_t)(a >> 23);
    uint32_t rn = (a + 0xfffu + ((a >> 13) & 1)) & ~0x1fffu;
    rn = rn > 0x477fe000u ? 0x7f800000u : rn;
    int32_t Eeff = E > 1 ? E : 1;
    uint32_t S = (a & 0x7fffffu) | (E ? 0x800000u : 0);
    int32_t d = 126 - Eeff;
    d = d < 1 ? 1 : d > 31 ? 31 : d;
    uint32_t r = (S + (1u << (d - 1)) - 1 + ((S >> d) & 1)) >> d;
    uint32_t rs = cm_f2u((float)(int32_t)r * 0x1p-24f);
    uint32_t res = E >= 113 ? rn : rs;
    if (a > 0x7f800000u)
        res = 0x7fc00000u;
    return res | sg;
}

/* Order-preserving key of a float (ascending floats <-> ascending keys; -0 < +0). */
CM_HD uint32_t cm_fkey(float f)
{
    uint32_t u = cm_f2u(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

CM_HD float cm_unfkey(uint32_t k)
{
    return cm_u2f((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

#endif
