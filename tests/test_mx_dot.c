/* Tests for src/mx/mx_dot: hand-computed dot products. Every input is exactly an MX
 * value, so quantizing is lossless and the expected results follow from the stated
 * semantics alone (exact products and block sums; exact or p-bit accumulation). */
#include <float.h>
#include <math.h>
#include <string.h>

#include "mx/mx_dot.h"
#include "mx/mx_pack.h"
#include "support/testutil.h"

static float dot(mx_format_t fa, mx_format_t fb, int block, const float *a, const float *b,
                 size_t n, int bits, mx_round_t acc_round)
{
    mx_spec_t sa = {fa, block, MX_ROUND_EVEN, MX_SCALE_FLOOR};
    mx_spec_t sb = {fb, block, MX_ROUND_EVEN, MX_SCALE_FLOOR};
    mx_dot_acc_t acc = {bits, acc_round};
    err_t e = ERR_INIT;
    float out = -1;
    if (mx_dot_f32(a, &sa, b, &sb, n, &acc, &out, &e))
        fail_msg("mx_dot_f32: %s", e.msg);
    return out;
}

#define EXPECT(got, want)                                                                   \
    do {                                                                                    \
        float g_ = (got), w_ = (want);                                                      \
        if (!(g_ == w_ || (isnan(g_) && isnan(w_))))                                        \
            fail_msg("%s: expected %a (%.9g), got %a (%.9g)", #got, w_, w_, g_, g_);        \
    } while (0)

static void one_block_applies_both_scales(void **state)
{
    (void)state;
    /* a: s = -7, elements 192, -256; b: s = -6, elements 256, 32.
     * 2^-13 * (192*256 - 256*32) = 2^-13 * 40960 = 5 */
    float a[] = {1.5f, -2.0f}, b[] = {4.0f, 0.5f};
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 2, a, b, 2, 0, MX_ROUND_EVEN), 5.0f);
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 2, a, b, 2, 24, MX_ROUND_EVEN), 5.0f);
}

static void block_sum_is_exact_where_float_sums_lose_bits(void **state)
{
    (void)state;
    /* one block: 448*448 + 2^-9*2^-9 - 448*448 = 2^-18 exactly (float32 left to right
     * gives 0: 200704 + 2^-18 rounds back to 200704) */
    float a[] = {448.0f, 0x1p-9f, -448.0f}, b[] = {448.0f, 0x1p-9f, 448.0f};
    float naive = a[0] * b[0];
    naive += a[1] * b[1];
    naive += a[2] * b[2];
    EXPECT(naive, 0.0f);
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 4, a, b, 3, 0, MX_ROUND_EVEN), 0x1p-18f);
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 4, a, b, 3, 24, MX_ROUND_EVEN), 0x1p-18f);
}

static void exact_accumulation_keeps_what_an_fp32_accumulator_drops(void **state)
{
    (void)state;
    /* blocks of 1: 2^30 + 1 - 2^30. Exactly 1; an fp32 (24-bit) accumulator rounds
     * 2^30 + 1 to 2^30 and ends at 0. */
    float a[] = {0x1p30f, 1.0f, -0x1p30f}, b[] = {1.0f, 1.0f, 1.0f};
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 1, a, b, 3, 0, MX_ROUND_EVEN), 1.0f);
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 1, a, b, 3, 24, MX_ROUND_EVEN), 0.0f);
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 1, a, b, 3, 32, MX_ROUND_EVEN), 1.0f);
}

static void one_final_rounding_versus_rounding_per_block(void **state)
{
    (void)state;
    /* 1 + 2^-24 is a tie for float32: RNE gives 1. With 2^-30 more the exact sum is
     * above the tie, so one final rounding gives 1 + 2^-23, while a 24-bit accumulator
     * already dropped 2^-24 and stays at 1. */
    float a[] = {1.0f, 0x1p-24f, 0x1p-30f}, b[] = {1.0f, 1.0f, 1.0f};
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 1, a, b, 2, 0, MX_ROUND_EVEN), 1.0f);
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 1, a, b, 3, 0, MX_ROUND_EVEN), 1.0f + 0x1p-23f);
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 1, a, b, 3, 24, MX_ROUND_EVEN), 1.0f);
}

static void narrow_accumulator_roundings(void **state)
{
    (void)state;
    /* blocks of 1: 1 + 2^-8 + 2^-8 with an 8-bit accumulator (bf16-like).
     * exact: 1 + 2^-7. trunc: 1, 1. even: 1 + 2^-8 ties to 1, then again 1.
     * nearest (ties away): 1 + 2^-7, then 1 + 3*2^-8 ties away to 1 + 2^-6. */
    float a[] = {1.0f, 0x1p-8f, 0x1p-8f}, b[] = {1.0f, 1.0f, 1.0f};
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 1, a, b, 3, 0, MX_ROUND_EVEN), 1.0078125f);
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 1, a, b, 3, 8, MX_ROUND_TRUNC), 1.0f);
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 1, a, b, 3, 8, MX_ROUND_EVEN), 1.0f);
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 1, a, b, 3, 8, MX_ROUND_NEAREST), 1.015625f);
    /* truncation is toward zero for negative sums too */
    float na[] = {-1.0f, -0x1p-8f, -0x1p-8f};
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 1, na, b, 3, 8, MX_ROUND_TRUNC), -1.0f);
}

static void mixed_formats_int8_times_fp4(void **state)
{
    (void)state;
    /* a int8: s = 2, codes 64 (1.0) and -127 (-127/64). b fp4: s = -1, elements 6, 0.5.
     * 2^(2-1) * (1*6 - 127/64 * 0.5) = 2 * 5.0078125 = 10.015625 */
    float a[] = {4.0f, -127.0f / 16.0f}, b[] = {3.0f, 0.25f};
    EXPECT(dot(MX_INT8, MX_FP4_E2M1, 2, a, b, 2, 0, MX_ROUND_EVEN), 10.015625f);
    EXPECT(dot(MX_FP4_E2M1, MX_INT8, 2, b, a, 2, 0, MX_ROUND_EVEN), 10.015625f);
}

static void short_final_block_and_other_formats(void **state)
{
    (void)state;
    /* blocks {1,2} {3,4} {5}: 1 + 2 + 3 + 4 + 5 */
    float a[] = {1, 2, 3, 4, 5}, ones[] = {1, 1, 1, 1, 1};
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 2, a, ones, 5, 0, MX_ROUND_EVEN), 15.0f);
    EXPECT(dot(MX_FP6_E3M2, MX_FP6_E2M3, 2, a, ones, 5, 0, MX_ROUND_EVEN), 15.0f);
    EXPECT(dot(MX_FP8_E5M2, MX_INT4, 2, a, ones, 5, 0, MX_ROUND_EVEN), 15.0f);
}

static void overflow_and_subnormal_results(void **state)
{
    (void)state;
    /* 1.75*2^127 * 2 = 1.75*2^128: past float32 -> Inf */
    float a[] = {0x1.cp127f}, b[] = {2.0f};
    float r = dot(MX_FP8_E4M3, MX_FP8_E4M3, 1, a, b, 1, 0, MX_ROUND_EVEN);
    assert_true(isinf(r) && r > 0);
    /* 1.5*2^-130 * 2^-19 = 1.5*2^-149: a tie between subnormals 2^-149 and 2^-148 -> 2^-148 */
    float c[] = {0x1.8p-130f}, d[] = {0x1p-19f};
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 1, c, d, 1, 0, MX_ROUND_EVEN), 0x1p-148f);
    /* 1.25*2^-140 is representable: no rounding */
    float f[] = {0x1.4p-120f}, g[] = {0x1p-20f};
    EXPECT(dot(MX_FP8_E4M3, MX_FP8_E4M3, 1, f, g, 1, 0, MX_ROUND_EVEN), 0x1.4p-140f);
}

static void nan_scale_makes_the_result_nan(void **state)
{
    (void)state;
    float a[] = {1, INFINITY, 2, 3}, b[] = {1, 1, 1, 1};
    assert_true(isnan(dot(MX_FP8_E4M3, MX_FP8_E4M3, 2, a, b, 4, 0, MX_ROUND_EVEN)));
}

static void codes_level_api_and_errors(void **state)
{
    (void)state;
    /* e4m3 codes by hand: 0x38 = 1.0, 0x40 = 2.0, scales 2^1 and 2^-1 -> 1*2 * 1 = 2... */
    uint8_t ae[] = {0x38, 0x40}, be[] = {0x40, 0x38}, as[] = {128}, bs[] = {126};
    mx_dot_acc_t acc = {0, MX_ROUND_EVEN};
    err_t e = ERR_INIT;
    float out;
    assert_int_equal(mx_dot(MX_FP8_E4M3, ae, as, MX_FP8_E4M3, be, bs, 2, 2, &acc, &out, &e), 0);
    EXPECT(out, 4.0f); /* 2^(1-1) * (1*2 + 2*1) */
    uint8_t nan_code[] = {0x7F, 0x38};
    assert_int_equal(mx_dot(MX_FP8_E4M3, nan_code, as, MX_FP8_E4M3, be, bs, 2, 2, &acc, &out, &e), 0);
    assert_true(isnan(out));
    assert_int_equal(mx_dot(MX_BF16, ae, as, MX_FP8_E4M3, be, bs, 2, 2, &acc, &out, &e), ERR_INPUT);
    err_clear(&e);
    mx_dot_acc_t bad = {1, MX_ROUND_EVEN};
    assert_int_equal(mx_dot(MX_FP8_E4M3, ae, as, MX_FP8_E4M3, be, bs, 2, 2, &bad, &out, &e), ERR_INPUT);
    err_clear(&e);
    mx_dot_acc_t sto = {24, MX_ROUND_STOCHASTIC};
    assert_int_equal(mx_dot(MX_FP8_E4M3, ae, as, MX_FP8_E4M3, be, bs, 2, 2, &sto, &out, &e), ERR_INPUT);
    err_clear(&e);
    float a[] = {1, 2};
    mx_spec_t s8 = {MX_FP8_E4M3, 8, MX_ROUND_EVEN, MX_SCALE_FLOOR}, s4 = s8;
    s4.block = 4;
    assert_int_equal(mx_dot_f32(a, &s8, a, &s4, 2, &acc, &out, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "blocks differ"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_block_applies_both_scales),
        cmocka_unit_test(block_sum_is_exact_where_float_sums_lose_bits),
        cmocka_unit_test(exact_accumulation_keeps_what_an_fp32_accumulator_drops),
        cmocka_unit_test(one_final_rounding_versus_rounding_per_block),
        cmocka_unit_test(narrow_accumulator_roundings),
        cmocka_unit_test(mixed_formats_int8_times_fp4),
        cmocka_unit_test(short_final_block_and_other_formats),
        cmocka_unit_test(overflow_and_subnormal_results),
        cmocka_unit_test(nan_scale_makes_the_result_nan),
        cmocka_unit_test(codes_level_api_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
