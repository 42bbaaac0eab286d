/* half: bf16 and fp16 <-> float32, round to nearest even, NaN kept quiet.
 * Plain casts used by safetensors I/O and by the mx layer's bf16/fp16 "formats". */
#ifndef MXRLHF_UTIL_HALF_H
#define MXRLHF_UTIL_HALF_H

#include <stdint.h>
#include <string.h>

static inline uint32_t half_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float half_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float half_bf16_to_f32(uint16_t h)
{
    return half_bits_f32((uint32_t)h << 16);
}

static inline uint16_t half_f32_to_bf16(float f)
{
    uint32_t u = half_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN, sign kept */
    u += 0x7fffu + ((u >> 16) & 1);           /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float half_f16_to_f32(uint16_t h);
uint16_t half_f32_to_f16(float f);

#endif
