/* rng: Philox4x32-10, see rng.h; the arithmetic is util/philox.h (shared with CUDA). */
#include "util/rng.h"

#include <math.h>

#include "util/philox.h"

rng_block_t rng_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                              uint32_t k0, uint32_t k1)
{
    rng_block_t b = {{c0, c1, c2, c3}};
    philox4x32_10(b.v, k0, k1);
    return b;
}

uint32_t rng_u32(uint64_t seed, uint64_t stream, uint64_t index)
{
    return philox_u32(seed, stream, index);
}

float rng_uniform(uint64_t seed, uint64_t stream, uint64_t index)
{
    return philox_uniform(seed, stream, index);
}

double rng_uniform_double(uint64_t seed, uint64_t stream, uint64_t index)
{
    return philox_uniform_double(seed, stream, index);
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
