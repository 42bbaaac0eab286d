/* hostdev: what a header of inline functions needs to be compiled both as C for the CPU
 * and by nvcc for the GPU (host and device), so that one definition serves both: the
 * function qualifier and the float bit casts.
 *
 * HD_INLINE is `__host__ __device__ __forceinline__` under nvcc and `static inline` in C.
 * Headers written with it (util/philox.h, mx/mx_core.h) use only integer and exact
 * floating-point operations, so the CPU and the GPU give the same bits.
 */
#ifndef MXRLHF_UTIL_HOSTDEV_H
#define MXRLHF_UTIL_HOSTDEV_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define HD_INLINE __host__ __device__ __forceinline__
#else
#define HD_INLINE static inline
#endif

/* the bits of a float, and back */
HD_INLINE uint32_t hd_f2u(float f)
{
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
#endif
}

HD_INLINE float hd_u2f(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}

/* leading zero bits of x != 0 */
HD_INLINE int hd_clz32(uint32_t x)
{
#ifdef __CUDA_ARCH__
    return __clz((int)x);
#else
    return __builtin_clz(x);
#endif
}

/* 2^k as a double, k in [-1022, 1023], built from the bits (exact, no libm) */
HD_INLINE double hd_pow2d(int k)
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

/* Order-preserving key of a float: ascending floats <-> ascending keys (-0 < +0; NaN
 * has no place). hd_unfkey inverts it. */
HD_INLINE uint32_t hd_fkey(float f)
{
    uint32_t u = hd_f2u(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

HD_INLINE float hd_unfkey(uint32_t k)
{
    return hd_u2f((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

#endif
