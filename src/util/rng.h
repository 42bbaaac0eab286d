/* rng: a counter-based generator, Philox4x32-10 (Salmon et al., SC'11).
 *
 * A random number is a pure function of (seed, stream, index): no state advances, so
 * results do not depend on thread count, work order or backend. The definition is
 * util/philox.h, inline functions compiled both here and into the CUDA kernels.
 *
 * Mapping: key = (seed low 32 bits, seed high 32 bits); counter =
 * (index/4 low, index/4 high, stream low, stream high); the output word is lane
 * index%4 of the Philox block. Streams separate uses (stochastic rounding of one
 * tensor, sampling of one batch row, dropout, data shuffling...).
 */
#ifndef MXRLHF_UTIL_RNG_H
#define MXRLHF_UTIL_RNG_H

#include <stdint.h>

typedef struct rng_block { uint32_t v[4]; } rng_block_t;

/* One Philox4x32-10 block: 4 words for counter (c0,c1,c2,c3) and key (k0,k1). */
rng_block_t rng_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                              uint32_t k0, uint32_t k1);

/* The 32-bit word for (seed, stream, index). */
uint32_t rng_u32(uint64_t seed, uint64_t stream, uint64_t index);

/* Uniform in [0, 1) with 24 random bits: (u32 >> 8) * 2^-24. */
float rng_uniform(uint64_t seed, uint64_t stream, uint64_t index);

/* Uniform in [0, 1) with 53 random bits, from words 2*index and 2*index+1. */
double rng_uniform_double(uint64_t seed, uint64_t stream, uint64_t index);

/* Standard normal (Box-Muller over words 2*index, 2*index+1; the cosine branch). */
double rng_normal(uint64_t seed, uint64_t stream, uint64_t index);

/* Derives a stream id from a name and a number, so uses do not collide by accident:
 * rng_stream("mx.stochastic", tensor_id). FNV-1a over the name, mixed with n. */
uint64_t rng_stream(const char *name, uint64_t n);

#endif
