/* philox: Philox4x32-10 (Salmon et al., SC'11; constants from Random123) and the
 * word/uniform mappings of util/rng.h, as inline functions compiled for the CPU (C) and
 * for CUDA (util/hostdev.h): the one definition of the project's random numbers.
 * util/rng.c exports them as rng_u32 / rng_uniform / rng_uniform_double; the CUDA
 * kernels and the CPU's MX stochastic rounding call them directly.
 *
 * Mapping (rng.h): key = (seed low 32 bits, seed high 32 bits); counter = (index/4 low,
 * index/4 high, stream low, stream high); the word is lane index%4 of the block.
 */
#ifndef MXRLHF_UTIL_PHILOX_H
#define MXRLHF_UTIL_PHILOX_H

#include <stdint.h>

#include "util/hostdev.h"

#define PHILOX_M0 0xD2511F53u /* round multipliers */
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u /* key schedule (Weyl) increments */
#define PHILOX_W1 0xBB67AE85u

/* One block: the counter c[0..3] becomes the 4 output words for key (k0, k1). */
HD_INLINE void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1)
{
    uint32_t c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    c[0] = c0, c[1] = c1, c[2] = c2, c[3] = c3;
}

/* rng_u32: the 32-bit word for (seed, stream, index) */
HD_INLINE uint32_t philox_u32(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint64_t blk = index >> 2;
    uint32_t c[4] = {(uint32_t)blk, (uint32_t)(blk >> 32), (uint32_t)stream,
                     (uint32_t)(stream >> 32)};
    philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
    uint32_t l = (uint32_t)(index & 3);
    return l == 0 ? c[0] : l == 1 ? c[1] : l == 2 ? c[2] : c[3];
}

/* rng_uniform: [0, 1) with 24 random bits, (u32 >> 8) * 2^-24 */
HD_INLINE float philox_uniform(uint64_t seed, uint64_t stream, uint64_t index)
{
    return (float)(philox_u32(seed, stream, index) >> 8) * 0x1p-24f;
}

/* rng_uniform_double: [0, 1) with 53 random bits from words 2i and 2i+1 (one block) */
HD_INLINE double philox_uniform_double(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint64_t a = philox_u32(seed, stream, 2 * index) >> 5;     /* 27 bits */
    uint64_t b = philox_u32(seed, stream, 2 * index + 1) >> 6; /* 26 bits */
    return (double)((a << 26) | b) * 0x1p-53;
}

#endif
