/* rng: Philox4x32-10, see rng.h. Constants from Salmon et al. and Random123. */
#include "util/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t *hi)
{
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

rng_block_t rng_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                              uint32_t k0, uint32_t k1)
{
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = mulhilo(PHILOX_M0, c0, &hi0);
        uint32_t lo1 = mulhilo(PHILOX_M1, c2, &hi1);
        uint32_t n0 = hi1 ^ c1 ^ k0;
        uint32_t n1 = lo1;
        uint32_t n2 = hi0 ^ c3 ^ k1;
        uint32_t n3 = lo0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    rng_block_t b = {{c0, c1, c2, c3}};
    return b;
}

uint32_t rng_u32(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint64_t blk = index >> 2;
    rng_block_t b = rng_philox4x32_10((uint32_t)blk, (uint32_t)(blk >> 32), (uint32_t)stream,
                                      (uint32_t)(stream >> 32), (uint32_t)seed,
                                      (uint32_t)(seed >> 32));
    return b.v[index & 3];
}

float rng_uniform(uint64_t seed, uint64_t stream, uint64_t index)
{
    return (float)(rng_u32(seed, stream, index) >> 8) * 0x1p-24f;
}

double rng_uniform_double(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint64_t a = rng_u32(seed, stream, 2 * index) >> 5;     /* 27 bits */
    uint64_t b = rng_u32(seed, stream, 2 * index + 1) >> 6; /* 26 bits */
    return (double)((a << 26) | b) * 0x1p-53;
}

double rng_normal(uint64_t seed, uint64_t stream, uint64_t index)
{
    /* u1 in (0, 1] so log() is finite. */
    double u1 = 1.0 - rng_uniform_double(seed, stream, 2 * index);
    double u2 = rng_uniform_double(seed, stream, 2 * index + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t rng_stream(const char *name, uint64_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    /* splitmix64 finaliser over (h + n) so nearby n give unrelated streams */
    uint64_t z = h + n * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
