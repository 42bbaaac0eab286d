/* Tests for the processing element's operation in the C library (src/mx/mx_dot.h:
 * mx_block_dot, mx_block_accumulate, mx_block_gemm), the reference the SystemC and
 * Verilog PEs are held to (docs/hardware.md, "Block result").
 *
 * The expected values come from computations written here, not from src/mx: element
 * codes are decoded from each format's sign/exponent/mantissa definition (bias, mantissa
 * bits) into an integer N times 2^q, the block sum is a 128-bit integer, and it is rounded
 * to binary32 by comparing the remainder with half an ulp (round_exact below). Where the
 * exact sum fits a double (every format but E5M2 at k <= 32), the double sum cast to
 * float, which rounds once in the FPU, is a second, independent check. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "mx/mx_dot.h"
#include "support/testutil.h"
#include "util/rng.h"

typedef __int128 i128;
typedef unsigned __int128 u128;

/* ---- the independent model ------------------------------------------------------------ */

typedef struct fmt_def {
    mx_format_t f;
    int bits, ebits, m, bias; /* ebits 0: two's complement integer with m fraction bits */
} fmt_def_t;

static const fmt_def_t defs[] = {
    {MX_FP8_E4M3, 8, 4, 3, 7},  {MX_FP8_E5M2, 8, 5, 2, 15}, {MX_FP6_E3M2, 6, 3, 2, 3},
    {MX_FP6_E2M3, 6, 2, 3, 1},  {MX_FP4_E2M1, 4, 2, 1, 1},  {MX_INT8, 8, 0, 6, 0},
};
#define NDEFS ((int)(sizeof defs / sizeof defs[0]))

/* value of code = N * 2^q, with q = 1 - bias - m for floats and -m for ints */
static int64_t decode_n(const fmt_def_t *d, uint8_t code)
{
    if (!d->ebits)
        return (int8_t)code;
    int sign = (code >> (d->bits - 1)) & 1;
    int E = (code >> d->m) & ((1 << d->ebits) - 1), M = code & ((1 << d->m) - 1);
    int64_t mag = E == 0 ? M : ((int64_t)((1 << d->m) | M)) << (E - 1);
    return sign ? -mag : mag;
}

static int decode_q(const fmt_def_t *d)
{
    return d->ebits ? 1 - d->bias - d->m : -d->m;
}

static bool finite_code(const fmt_def_t *d, uint8_t code)
{
    if (d->f == MX_FP8_E4M3)
        return (code & 0x7f) != 0x7f;
    if (d->f == MX_FP8_E5M2)
        return ((code >> 2) & 0x1f) != 0x1f;
    return true;
}

/* S * 2^X rounded once to binary32, nearest even, as bits. */
static uint32_t round_exact(i128 S, int X)
{
    if (S == 0)
        return 0;
    uint32_t sign = S < 0 ? 0x80000000u : 0;
    u128 mag = S < 0 ? (u128)(-S) : (u128)S;
    int h = 127;
    while (!((mag >> h) & 1))
        h--;
    int t = h + X - 23 > -149 ? h + X - 23 : -149; /* exponent of the result's last bit */
    u128 q;
    if (t <= X) {
        q = mag << (X - t); /* exact: fewer than 24 bits */
    } else {
        int d = t - X;
        if (d > 127) {
            q = 0; /* far below half of the smallest subnormal */
        } else {
            q = mag >> d;
            u128 rem = mag - (q << d), half = (u128)1 << (d - 1);
            if (rem > half || (rem == half && (q & 1)))
                q++;
        }
    }
    /* q <= 2^24; value q * 2^t */
    if (q == 0)
        return sign;
    int e = 127;
    while (!((q >> e) & 1))
        e--;
    int E = e + t + 127; /* biased exponent of the leading bit */
    if (E >= 255)
        return sign | 0x7f800000u;
    if (E <= 0) /* subnormal: t == -149, q < 2^23 */
        return sign | (uint32_t)q;
    u128 frac = e <= 23 ? q << (23 - e) : q >> (e - 23); /* q = 2^24 after a carry */
    return sign | (uint32_t)E << 23 | (uint32_t)(frac & 0x7fffff);
}

static uint32_t model_block(const fmt_def_t *da, uint8_t sa, const uint8_t *a,
                            const fmt_def_t *db, uint8_t sb, const uint8_t *b, int k)
{
    i128 S = 0;
    for (int i = 0; i < k; i++)
        S += (i128)decode_n(da, a[i]) * decode_n(db, b[i]);
    return round_exact(S, decode_q(da) + decode_q(db) + sa + sb - 254);
}

/* The second check: the sum in double (exact when it has at most 53 bits), one cast. */
static bool double_block(const fmt_def_t *da, uint8_t sa, const uint8_t *a,
                         const fmt_def_t *db, uint8_t sb, const uint8_t *b, int k, float *out)
{
    i128 S = 0;
    for (int i = 0; i < k; i++)
        S += (i128)decode_n(da, a[i]) * decode_n(db, b[i]);
    if (S > ((i128)1 << 53) || S < -((i128)1 << 53))
        return false;
    double v = ldexp((double)(int64_t)S, decode_q(da) + decode_q(db) + sa + sb - 254);
    *out = (float)v;
    return true;
}

/* ---- helpers ------------------------------------------------------------------------- */

static uint32_t block_bits(mx_format_t f, uint8_t sa, const uint8_t *a, uint8_t sb,
                           const uint8_t *b, int k)
{
    float r = -1;
    err_t e = ERR_INIT;
    if (mx_block_dot(f, sa, a, f, sb, b, k, &r, &e))
        fail_msg("mx_block_dot: %s", e.msg);
    return test_f32_bits(r);
}

#define EXPECT_BITS(got, want)                                                               \
    do {                                                                                     \
        uint32_t g_ = (got), w_ = (want);                                                    \
        if (g_ != w_)                                                                        \
            fail_msg("%s: expected %08x, got %08x", #got, w_, g_);                           \
    } while (0)

static const fmt_def_t *def_of(mx_format_t f)
{
    for (int i = 0; i < NDEFS; i++)
        if (defs[i].f == f)
            return &defs[i];
    return NULL;
}

/* ---- hand-computed cases -------------------------------------------------------------- */

static void scales_apply_and_one_rounding(void **state)
{
    (void)state;
    /* e4m3 0x38 = 1.0, 0x40 = 2.0; scales 2^1 and 2^-1: (1*2 + 2*1) * 2^0 = 4 */
    uint8_t a[] = {0x38, 0x40}, b[] = {0x40, 0x38};
    EXPECT_BITS(block_bits(MX_FP8_E4M3, 128, a, 126, b, 2), 0x40800000u);
    /* int8: 64 * 64 * 2^-12 = 1, times 2^(130-127 + 120-127) = 2^-4 */
    uint8_t c[] = {64}, d[] = {64};
    EXPECT_BITS(block_bits(MX_INT8, 130, c, 120, d, 1), 0x3d800000u);
    /* fp4: 6 * 6 + 0.5 * -0.5 = 35.75 */
    uint8_t f[] = {0x7, 0x1}, g[] = {0x7, 0x9};
    EXPECT_BITS(block_bits(MX_FP4_E2M1, 127, f, 127, g, 2), test_f32_bits(35.75f));
}

static void exact_zero_is_plus_zero(void **state)
{
    (void)state;
    /* all-zero blocks, -0 codes included, and products that cancel exactly */
    uint8_t z[32] = {0}, nz[32];
    memset(nz, 0x80, sizeof nz);
    EXPECT_BITS(block_bits(MX_FP8_E4M3, 0, z, 254, z, 32), 0x00000000u);
    EXPECT_BITS(block_bits(MX_FP8_E4M3, 200, nz, 200, z, 32), 0x00000000u);
    uint8_t z4[8] = {0x8, 0x8, 0x8, 0x8, 0x8, 0x8, 0x8, 0x8}, one4[8] = {2, 2, 2, 2, 2, 2, 2, 2};
    EXPECT_BITS(block_bits(MX_FP4_E2M1, 127, z4, 127, one4, 8), 0x00000000u);
    uint8_t a[] = {0x7e, 0xfe}, b[] = {0x7e, 0x7e}; /* 448*448 - 448*448 */
    EXPECT_BITS(block_bits(MX_FP8_E4M3, 254, a, 254, b, 2), 0x00000000u);
}

static void underflow_keeps_the_sign(void **state)
{
    (void)state;
    /* e4m3 smallest subnormal 2^-9, squared 2^-18, scales 2^-127 each: 2^-272 -> +-0 */
    uint8_t p[] = {0x01}, n[] = {0x81};
    EXPECT_BITS(block_bits(MX_FP8_E4M3, 0, p, 0, p, 1), 0x00000000u);
    EXPECT_BITS(block_bits(MX_FP8_E4M3, 0, n, 0, p, 1), 0x80000000u);
    /* 2^-150 is a tie between 0 and 2^-149: even -> 0, with its sign.
     * 2^-18 * 2^(sa + sb - 254) = 2^-150: sa + sb = 122 */
    EXPECT_BITS(block_bits(MX_FP8_E4M3, 61, n, 61, p, 1), 0x80000000u);
    /* 3 * 2^-18 * 2^(122 - 254) = 1.5 * 2^-149: a tie between 2^-149 and 2^-148 -> even */
    uint8_t three[] = {0x03};
    EXPECT_BITS(block_bits(MX_FP8_E4M3, 61, three, 61, p, 1), 0x00000002u);
    EXPECT_BITS(block_bits(MX_FP8_E4M3, 61, n, 62, p, 1), 0x80000001u); /* exactly 2^-149 */
}

static void overflow_goes_to_infinity(void **state)
{
    (void)state;
    /* e5m2 57344 (0x7b) squared, 32 times: 2^37.6 * 2^(254 - 254 + ...) */
    uint8_t a[32], na[32];
    memset(a, 0x7b, sizeof a);
    memset(na, 0xfb, sizeof na);
    EXPECT_BITS(block_bits(MX_FP8_E5M2, 254, a, 254, a, 32), 0x7f800000u);
    EXPECT_BITS(block_bits(MX_FP8_E5M2, 254, na, 254, a, 32), 0xff800000u);
    /* the largest finite: fp4 6*6 = 36 = 1.125 * 2^5 times 2^122 is 1.125 * 2^127, finite;
     * times 2^123 is 1.125 * 2^128: Inf */
    uint8_t s[] = {0x7};
    EXPECT_BITS(block_bits(MX_FP4_E2M1, 249, s, 127, s, 1), 0x7f100000u);
    EXPECT_BITS(block_bits(MX_FP4_E2M1, 250, s, 127, s, 1), 0x7f800000u);
}

static void tie_to_even_at_24_bits(void **state)
{
    (void)state;
    /* S = 2^24 + 1 (units 2^-18, e4m3 x e4m3): 256 * 65536 + 1 * 1; 256 = 2^8 -> code for
     * N = 256: (8+0) << 5 -> E = 6, M = 0 -> 0x30; 65536 = (8+0) << 13 -> E = 14 -> 0x70 */
    uint8_t a[] = {0x30, 0x01}, b[] = {0x70, 0x01};
    /* value (2^24 + 1) * 2^-18 * 2^(sa+sb-254), sa = sb = 127: 2^6 + 2^-18: a tie -> 2^6 */
    EXPECT_BITS(block_bits(MX_FP8_E4M3, 127, a, 127, b, 2), test_f32_bits(64.0f));
    /* S = 2^24 + 3 (add 2 * 1): tie -> up to 2^24 + 4 */
    uint8_t a3[] = {0x30, 0x01, 0x02}, b3[] = {0x70, 0x01, 0x01};
    EXPECT_BITS(block_bits(MX_FP8_E4M3, 127, a3, 127, b3, 3), test_f32_bits(64.0f + 0x1p-16f));
}

static void int8_minus_128_is_accepted(void **state)
{
    (void)state;
    uint8_t a[] = {0x80}, b[] = {0x80};
    /* (-128)^2 * 2^-12 = 4 */
    EXPECT_BITS(block_bits(MX_INT8, 127, a, 127, b, 1), test_f32_bits(4.0f));
}

static void bad_operands_are_errors(void **state)
{
    (void)state;
    uint8_t ok[] = {0x38}, nan8[] = {0x7f}, inf5[] = {0x7c}, wide6[] = {0x40}, wide4[] = {0x10};
    float r;
    err_t e = ERR_INIT;
    assert_int_equal(mx_block_dot(MX_FP8_E4M3, 255, ok, MX_FP8_E4M3, 127, ok, 1, &r, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "scale 0xff"));
    err_clear(&e);
    assert_int_equal(mx_block_dot(MX_FP8_E4M3, 127, nan8, MX_FP8_E4M3, 127, ok, 1, &r, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "NaN or infinity"));
    err_clear(&e);
    assert_int_equal(mx_block_dot(MX_FP8_E5M2, 127, ok, MX_FP8_E5M2, 127, inf5, 1, &r, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "operand b, element 1"));
    err_clear(&e);
    assert_int_equal(mx_block_dot(MX_FP6_E3M2, 127, wide6, MX_FP6_E3M2, 127, ok, 1, &r, &e), ERR_INPUT);
    err_clear(&e);
    assert_int_equal(mx_block_dot(MX_FP4_E2M1, 127, wide4, MX_FP4_E2M1, 127, wide4, 1, &r, &e), ERR_INPUT);
    err_clear(&e);
    assert_int_equal(mx_block_dot(MX_BF16, 127, ok, MX_FP8_E4M3, 127, ok, 1, &r, &e), ERR_INPUT);
    err_clear(&e);
    assert_int_equal(mx_block_dot(MX_FP8_E4M3, 127, ok, MX_FP8_E4M3, 127, ok, 0, &r, &e), ERR_INPUT);
    /* the same checks one code at a time */
    assert_int_equal(mx_block_code_check(MX_FP8_E4M3, 0xff), -2);
    assert_int_equal(mx_block_code_check(MX_FP8_E4M3, 0xfe), 0);
    assert_int_equal(mx_block_code_check(MX_FP8_E5M2, 0x7b), 0);
    assert_int_equal(mx_block_code_check(MX_FP8_E5M2, 0xfd), -2);
    assert_int_equal(mx_block_code_check(MX_FP6_E2M3, 0x3f), 0);
    assert_int_equal(mx_block_code_check(MX_FP6_E2M3, 0x40), -1);
    assert_int_equal(mx_block_code_check(MX_FP4_E2M1, 0xf), 0);
    assert_int_equal(mx_block_code_check(MX_FP4_E2M1, 0x10), -1);
    assert_int_equal(mx_block_code_check(MX_INT8, 0x80), 0);
    assert_int_equal(mx_block_code_check(MX_FP32, 0), -1);
}

/* ---- the random sweep: every format, k 8/16/32, edge-heavy codes and scales ---------- */

static uint8_t random_code(const fmt_def_t *d, uint64_t seed, uint64_t idx)
{
    for (uint64_t t = 0;; t++) {
        uint32_t u = rng_u32(seed, 1, idx * 16 + t);
        uint8_t c;
        switch (u % 4) {
        case 0: /* the largest magnitudes */
            c = (uint8_t)((u >> 8 & 1) << (d->bits - 1)) |
                (uint8_t)((1u << (d->bits - 1)) - 1 - (u >> 9) % 3);
            if (!d->ebits)
                c = (uint8_t)(u >> 8 & 1 ? 0x80 + (u >> 9) % 3 : 0x7f - (u >> 9) % 3);
            break;
        case 1: /* zeros and the smallest */
            c = (uint8_t)((u >> 8 & 1) << (d->bits - 1) | (u >> 9) % 3);
            break;
        default:
            c = (uint8_t)((u >> 8) & ((1u << d->bits) - 1));
        }
        if (finite_code(d, c))
            return c;
    }
}

static uint8_t random_scale(uint64_t seed, uint64_t idx)
{
    uint32_t u = rng_u32(seed, 2, idx);
    switch (u % 5) {
    case 0: return (uint8_t)(254 - (u >> 8) % 4);  /* overflow territory */
    case 1: return (uint8_t)((u >> 8) % 4);        /* underflow territory */
    default: return (uint8_t)((u >> 8) % 255);     /* anything but 0xff */
    }
}

static void random_blocks_match_the_model(void **state)
{
    (void)state;
    const int ks[] = {8, 16, 32};
    long checked = 0, doubles = 0, specials = 0;
    for (int fi = 0; fi < NDEFS; fi++)
        for (int ki = 0; ki < 3; ki++)
            for (int t = 0; t < 3000; t++) {
                const fmt_def_t *d = &defs[fi];
                int k = ks[ki];
                uint64_t id = ((uint64_t)fi * 3 + (uint64_t)ki) * 100000 + (uint64_t)t;
                uint8_t a[32], b[32];
                for (int i = 0; i < k; i++) {
                    a[i] = random_code(d, 7, id * 64 + (uint64_t)i);
                    b[i] = random_code(d, 7, id * 64 + 32 + (uint64_t)i);
                }
                uint8_t sa = random_scale(7, id * 2), sb = random_scale(7, id * 2 + 1);
                uint32_t want = model_block(d, sa, a, d, sb, b, k);
                uint32_t got = block_bits(d->f, sa, a, sb, b, k);
                if (got != want)
                    fail_msg("%s k=%d case %d: scales %02x %02x: expected %08x, got %08x",
                             mx_format_name(d->f), k, t, sa, sb, want, got);
                float dv;
                if (double_block(d, sa, a, d, sb, b, k, &dv)) {
                    if (test_f32_bits(dv) != want)
                        fail_msg("%s k=%d case %d: the double check gives %08x, the model %08x",
                                 mx_format_name(d->f), k, t, test_f32_bits(dv), want);
                    doubles++;
                }
                uint32_t ex = want & 0x7f800000u;
                specials += ex == 0x7f800000u || ex == 0;
                checked++;
            }
    /* the sweep reaches the edges it is meant to */
    assert_true(checked == 6 * 3 * 3000);
    assert_true(doubles > checked / 2);
    assert_true(specials > checked / 20);
}

static void mixed_formats_follow_the_model(void **state)
{
    (void)state;
    for (int t = 0; t < 2000; t++) {
        const fmt_def_t *da = &defs[t % NDEFS], *db = &defs[(t / NDEFS) % NDEFS];
        uint8_t a[16], b[16];
        for (int i = 0; i < 16; i++) {
            a[i] = random_code(da, 9, (uint64_t)t * 64 + (uint64_t)i);
            b[i] = random_code(db, 9, (uint64_t)t * 64 + 32 + (uint64_t)i);
        }
        uint8_t sa = random_scale(9, (uint64_t)t * 2), sb = random_scale(9, (uint64_t)t * 2 + 1);
        float r;
        err_t e = ERR_INIT;
        assert_int_equal(mx_block_dot(da->f, sa, a, db->f, sb, b, 16, &r, &e), 0);
        EXPECT_BITS(test_f32_bits(r), model_block(da, sa, a, db, sb, b, 16));
    }
}

/* ---- accumulate mode and the GEMM ---------------------------------------------------- */

static float f_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void accumulate_is_ieee_addition(void **state)
{
    (void)state;
    EXPECT_BITS(test_f32_bits(mx_block_accumulate(-0.0f, -0.0f)), 0x80000000u);
    EXPECT_BITS(test_f32_bits(mx_block_accumulate(-0.0f, 0.0f)), 0x00000000u);
    EXPECT_BITS(test_f32_bits(mx_block_accumulate(1.5f, -1.5f)), 0x00000000u);
    EXPECT_BITS(test_f32_bits(mx_block_accumulate(-0.0f, -3.0f)), test_f32_bits(-3.0f));
    /* 1 + 2^-24 ties to 1; 1 + 3 * 2^-24 ties up to 1 + 2^-22 */
    EXPECT_BITS(test_f32_bits(mx_block_accumulate(1.0f, 0x1p-24f)), test_f32_bits(1.0f));
    EXPECT_BITS(test_f32_bits(mx_block_accumulate(1.0f + 0x1p-23f, 0x1p-24f)),
                test_f32_bits(1.0f + 0x1p-22f));
    /* overflow, infinities, NaN */
    EXPECT_BITS(test_f32_bits(mx_block_accumulate(FLT_MAX, FLT_MAX)), 0x7f800000u);
    EXPECT_BITS(test_f32_bits(mx_block_accumulate(f_of(0x7f800000u), f_of(0xff800000u))),
                0x7fc00000u);
    EXPECT_BITS(test_f32_bits(mx_block_accumulate(f_of(0xffc00001u), 1.0f)), 0x7fc00000u);
    /* subnormals are kept: 2^-149 + 2^-149 */
    EXPECT_BITS(test_f32_bits(mx_block_accumulate(f_of(1), f_of(1))), 0x00000002u);
}

static void gemm_is_the_chain_of_blocks(void **state)
{
    (void)state;
    /* M = 3, N = 2, K = 64, k = 32: y[m][n] = R0 (+) R1, checked against the model */
    enum { M = 3, N = 2, K = 64, k = 32, NB = K / k };
    const fmt_def_t *d = def_of(MX_FP6_E2M3);
    uint8_t a[M * K], b[N * K], as[M * NB], bs[N * NB];
    for (int i = 0; i < M * K; i++)
        a[i] = random_code(d, 11, (uint64_t)i);
    for (int i = 0; i < N * K; i++)
        b[i] = random_code(d, 12, (uint64_t)i);
    for (int i = 0; i < M * NB; i++)
        as[i] = (uint8_t)(120 + i);
    for (int i = 0; i < N * NB; i++)
        bs[i] = (uint8_t)(130 - i);
    float y[M * N];
    err_t e = ERR_INIT;
    assert_int_equal(mx_block_gemm(d->f, a, as, d->f, b, bs, M, N, K, k, y, &e), 0);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float r0 = f_of(model_block(d, as[m * NB], a + m * K, d, bs[n * NB], b + n * K, k));
            float r1 = f_of(model_block(d, as[m * NB + 1], a + m * K + k, d, bs[n * NB + 1],
                                        b + n * K + k, k));
            EXPECT_BITS(test_f32_bits(y[m * N + n]), test_f32_bits(r0 + r1));
        }
    assert_int_equal(mx_block_gemm(d->f, a, as, d->f, b, bs, M, N, 48, k, y, &e), ERR_INPUT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scales_apply_and_one_rounding),
        cmocka_unit_test(exact_zero_is_plus_zero),
        cmocka_unit_test(underflow_keeps_the_sign),
        cmocka_unit_test(overflow_goes_to_infinity),
        cmocka_unit_test(tie_to_even_at_24_bits),
        cmocka_unit_test(int8_minus_128_is_accepted),
        cmocka_unit_test(bad_operands_are_errors),
        cmocka_unit_test(random_blocks_match_the_model),
        cmocka_unit_test(mixed_formats_follow_the_model),
        cmocka_unit_test(accumulate_is_ieee_addition),
        cmocka_unit_test(gemm_is_the_chain_of_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
