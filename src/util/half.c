/* half: see half.h. fp16 conversion done on the bits so it is exact and portable. */
#include "util/half.h"

float half_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) /* inf / nan */
        return half_bits_f32(sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0));
    if (exp == 0) {
        if (man == 0)
            return half_bits_f32(sign);
        /* subnormal: man * 2^-24, exact in float32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return half_bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t half_f32_to_f16(float f)
{
    uint32_t u = half_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return sign | 0x7e00; /* quiet NaN */
    if (a >= 0x477ff000u)     /* >= 65520 rounds to inf (max half is 65504) */
        return sign | 0x7c00;
    if (a < 0x38800000u) {    /* below 2^-14: fp16 subnormal or zero */
        if (a < 0x33000000u)  /* below 2^-25: rounds to zero (2^-25 is a tie -> 0) */
            return sign;
        uint32_t e = a >> 23, m = (a & 0x7fffff) | 0x800000;
        int shift = 126 - (int)e; /* value = m * 2^(e-150); unit 2^-24 -> shift by 126-e */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++;
        return sign | (uint16_t)q;
    }
    /* normal: rebias exponent, round 13 dropped bits to nearest even */
    uint32_t r = a - 0x38000000u; /* (e-112) << 23 */
    r += 0xfffu + ((r >> 13) & 1);
    return sign | (uint16_t)(r >> 13);
}
