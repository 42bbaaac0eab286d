/* Tests for src/mx/mx_pack: the byte layouts worked by hand, E8M0, every code's round
 * trip, and decode(encode(x)) == fake quant(x) for every format, axis and rounding. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx/mx.h"
#include "mx/mx_pack.h"
#include "support/testutil.h"
#include "util/rng.h"

static mx_spec_t spec_of(mx_format_t f, int block, mx_round_t r, mx_scale_rule_t s)
{
    mx_spec_t sp = {f, block, r, s};
    return sp;
}

static void encode_row(mx_format_t f, const float *x, size_t n, uint8_t *el, uint8_t *sc)
{
    mx_spec_t s = spec_of(f, (int)n, MX_ROUND_EVEN, MX_SCALE_FLOOR);
    err_t e = ERR_INIT;
    assert_int_equal(mx_pack_encode(x, 1, n, MX_AXIS_ROW, &s, 0, 0, 1, el, sc, &e), 0);
}

static void fp4_two_codes_per_byte_low_nibble_first(void **state)
{
    (void)state;
    /* amax 6: s = 0. 1.0 = 0b0010, -2.0 = 0b1100, 0.5 (subnormal) = 0b0001, 6 = 0b0111 */
    float x[] = {1.0f, -2.0f, 0.5f, 6.0f};
    uint8_t el[2], sc[1];
    encode_row(MX_FP4_E2M1, x, 4, el, sc);
    assert_int_equal(sc[0], 127);
    assert_int_equal(el[0], 0xC2);
    assert_int_equal(el[1], 0x71);
    assert_string_equal(mx_pack_dtype(MX_FP4_E2M1), "F4");
    assert_int_equal(mx_pack_elem_bytes(MX_FP4_E2M1, 5), 3);
}

static void fp6_four_codes_in_three_bytes_little_endian(void **state)
{
    (void)state;
    /* e2m3, amax 7.5: s = 0. 1 = 0x08, 2 = 0x10, 3 = 0x14, 7.5 = 0x1F;
     * 0x08 | 0x10 << 6 | 0x14 << 12 | 0x1F << 18 = 0x7D4408 */
    float x[] = {1.0f, 2.0f, 3.0f, 7.5f};
    uint8_t el[3], sc[1];
    encode_row(MX_FP6_E2M3, x, 4, el, sc);
    assert_int_equal(el[0], 0x08);
    assert_int_equal(el[1], 0x44);
    assert_int_equal(el[2], 0x7D);
    assert_int_equal(mx_pack_get(MX_FP6_E2M3, el, 2), 0x14);
    assert_int_equal(mx_pack_get(MX_FP6_E2M3, el, 3), 0x1F);
    assert_string_equal(mx_pack_dtype(MX_FP6_E3M2), "F6_E3M2");
    assert_int_equal(mx_pack_elem_bytes(MX_FP6_E3M2, 4), 3);
    assert_int_equal(mx_pack_elem_bytes(MX_FP6_E3M2, 5), 4);
}

static void int8_is_twos_complement_in_units_of_2_to_minus_6(void **state)
{
    (void)state;
    float x[] = {1.0f, -1.0f, -0.015625f, 1.984375f};
    uint8_t el[4], sc[1];
    encode_row(MX_INT8, x, 4, el, sc);
    assert_int_equal(sc[0], 127);
    assert_int_equal(el[0], 64);
    assert_int_equal(el[1], 0xC0);
    assert_int_equal(el[2], 0xFF);
    assert_int_equal(el[3], 0x7F);
    assert_string_equal(mx_pack_dtype(MX_INT8), "I8");
    assert_null(mx_pack_dtype(MX_BF16));
}

static void fp8_codes_and_scale_bytes(void **state)
{
    (void)state;
    /* e4m3, amax 448 * 2^3: s = 3. Elements 448, -448, 2^-9 (smallest subnormal), 1 */
    float x[] = {3584.0f, -3584.0f, 0x1p-6f, 8.0f};
    uint8_t el[4], sc[1];
    encode_row(MX_FP8_E4M3, x, 4, el, sc);
    assert_int_equal(sc[0], 130);
    assert_int_equal(el[0], 0x7E);
    assert_int_equal(el[1], 0xFE);
    assert_int_equal(el[2], 0x01);
    assert_int_equal(el[3], 0x38);
    float y[] = {57344.0f, -0x1p-16f};
    encode_row(MX_FP8_E5M2, y, 2, el, sc);
    assert_int_equal(sc[0], 127);
    assert_int_equal(el[0], 0x7B);
    assert_int_equal(el[1], 0x81);
}

static void e8m0_decodes_powers_of_two_and_nan(void **state)
{
    (void)state;
    assert_true(mx_e8m0_decode(127) == 1.0f);
    assert_true(mx_e8m0_decode(0) == 0x1p-127f);
    assert_true(mx_e8m0_decode(254) == 0x1p127f);
    assert_true(mx_e8m0_decode(100) == 0x1p-27f);
    assert_true(isnan(mx_e8m0_decode(255)));
}

static void every_code_decodes_and_encodes_back(void **state)
{
    (void)state;
    for (int f = 0; f <= MX_INT4; f++) {
        const mx_format_info_t *fi = mx_format_info((mx_format_t)f);
        int ncodes = fi->is_int ? 256 : 1 << fi->bits;
        for (int c = 0; c < ncodes; c++) {
            float v = mx_elem_decode((mx_format_t)f, (uint8_t)c);
            if (isnan(v) || isinf(v))
                continue; /* e4m3 NaN; e5m2 Inf/NaN */
            if (fi->is_int && (fabsf(v) > fi->max_normal))
                continue; /* -128 (int8), codes outside int4 */
            uint8_t back = mx_elem_encode((mx_format_t)f, v);
            if (back != (uint8_t)c)
                fail_msg("%s: code %02x -> %a -> %02x", fi->name, c, v, back);
        }
    }
    assert_true(isnan(mx_elem_decode(MX_FP8_E4M3, 0x7F)));
    assert_true(isinf(mx_elem_decode(MX_FP8_E5M2, 0x7C)));
    assert_true(mx_elem_decode(MX_FP6_E3M2, 0x1F) == 28.0f);
    assert_true(mx_elem_decode(MX_FP4_E2M1, 0xF) == -6.0f);
}

static void round_trip_equals_fake_quant(void **state)
{
    (void)state;
    size_t shapes[][2] = {{13, 37}, {8, 64}, {1, 101}, {40, 3}};
    int blocks[] = {8, 32, 5};
    mx_round_t rounds[] = {MX_ROUND_EVEN, MX_ROUND_STOCHASTIC, MX_ROUND_NEAREST};
    for (int f = 0; f <= MX_INT4; f++)
        for (size_t sh = 0; sh < 4; sh++)
            for (int b = 0; b < 3; b++)
                for (int ax = 0; ax < 2; ax++) {
                    size_t R = shapes[sh][0], C = shapes[sh][1], n = R * C;
                    mx_axis_t axis = ax ? MX_AXIS_COL : MX_AXIS_ROW;
                    mx_spec_t s = spec_of((mx_format_t)f, blocks[b], rounds[(sh + b) % 3],
                                          ax ? MX_SCALE_RCEIL : MX_SCALE_FLOOR);
                    float *x = malloc(n * 4), *fq = malloc(n * 4), *dec = malloc(n * 4);
                    for (size_t i = 0; i < n; i++)
                        x[i] = (float)(rng_normal(7, (uint64_t)f, i) *
                                       ldexp(1, (int)(rng_u32(8, sh, i) % 30) - 15));
                    x[n / 2] = INFINITY; /* one NaN-scale block */
                    size_t sr, scn;
                    mx_pack_scale_shape(R, C, axis, blocks[b], &sr, &scn);
                    uint8_t *el = malloc(mx_pack_elem_bytes((mx_format_t)f, n) + 1),
                            *sc = malloc(sr * scn);
                    err_t e = ERR_INIT;
                    mx_fake_quant(x, fq, R, C, axis, &s, 3, 4);
                    for (int th = 1; th <= 2; th++) {
                        assert_int_equal(mx_pack_encode(x, R, C, axis, &s, 3, 4, th, el, sc, &e), 0);
                        assert_int_equal(mx_pack_decode(el, sc, R, C, axis, (mx_format_t)f,
                                                        blocks[b], dec, &e), 0);
                        for (size_t i = 0; i < n; i++) {
                            int same = (isnan(fq[i]) && isnan(dec[i])) || fq[i] == dec[i];
                            if (!same)
                                fail_msg("%s %zux%zu block %d axis %d threads %d [%zu]: x %a fake "
                                         "quant %a decoded %a", mx_format_name((mx_format_t)f),
                                         R, C, blocks[b], ax, th, i, x[i], fq[i], dec[i]);
                        }
                    }
                    free(x);
                    free(fq);
                    free(dec);
                    free(el);
                    free(sc);
                }
}

static void column_scales_are_laid_out_per_row_group(void **state)
{
    (void)state;
    /* 3 x 2 matrix, column blocks of 2: scales [2][2]; column 1 is 16x column 0 */
    float x[] = {1, 16, 0.5f, 8, 2, 32};
    uint8_t el[6], sc[4];
    mx_spec_t s = spec_of(MX_FP8_E4M3, 2, MX_ROUND_EVEN, MX_SCALE_FLOOR);
    err_t e = ERR_INIT;
    assert_int_equal(mx_pack_encode(x, 3, 2, MX_AXIS_COL, &s, 0, 0, 1, el, sc, &e), 0);
    assert_int_equal(sc[0], 127 - 8);     /* rows 0-1, column 0: amax 1 */
    assert_int_equal(sc[1], 127 + 4 - 8); /* rows 0-1, column 1: amax 16 */
    assert_int_equal(sc[2], 127 + 1 - 8); /* row 2, column 0: amax 2 */
    assert_int_equal(sc[3], 127 + 5 - 8); /* row 2, column 1: amax 32 */
}

static void rceil_block_at_the_float_limit_keeps_its_element(void **state)
{
    (void)state;
    /* fp4 rceil: amax 3.3e38 gives s = 126 and the element 3.3e38 / 2^126 = 3.88 -> 4;
     * 4 * 2^126 = 2^128 is past float32, so fake quant says Inf; the packed element is
     * still 4 (0x6) with scale byte 253. */
    float x[] = {3.3e38f, 1e38f};
    float fq[2];
    mx_spec_t s = spec_of(MX_FP4_E2M1, 2, MX_ROUND_EVEN, MX_SCALE_RCEIL);
    mx_fake_quant_flat(x, fq, 2, &s, 0, 0, 0);
    assert_true(isinf(fq[0]) && fq[0] > 0);
    uint8_t el[1], sc[1];
    err_t e = ERR_INIT;
    assert_int_equal(mx_pack_encode(x, 1, 2, MX_AXIS_ROW, &s, 0, 0, 1, el, sc, &e), 0);
    assert_int_equal(sc[0], 253);
    assert_int_equal(el[0] & 0xF, 0x6);
    assert_int_equal(el[0] >> 4, 0x2); /* 1e38 / 2^126 = 1.17 -> 1 */
}

static void encode_rejects_plain_casts(void **state)
{
    (void)state;
    float x[2] = {1, 2};
    uint8_t el[8], sc[1];
    mx_spec_t s = spec_of(MX_BF16, 32, MX_ROUND_EVEN, MX_SCALE_FLOOR);
    err_t e = ERR_INIT;
    assert_int_equal(mx_pack_encode(x, 1, 2, MX_AXIS_ROW, &s, 0, 0, 1, el, sc, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "plain cast"));
    err_clear(&e);
    float out[2];
    assert_int_equal(mx_pack_decode(el, sc, 1, 2, MX_AXIS_ROW, MX_FP8_E4M3, 0, out, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "block 0"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fp4_two_codes_per_byte_low_nibble_first),
        cmocka_unit_test(fp6_four_codes_in_three_bytes_little_endian),
        cmocka_unit_test(int8_is_twos_complement_in_units_of_2_to_minus_6),
        cmocka_unit_test(fp8_codes_and_scale_bytes),
        cmocka_unit_test(e8m0_decodes_powers_of_two_and_nan),
        cmocka_unit_test(every_code_decodes_and_encodes_back),
        cmocka_unit_test(round_trip_equals_fake_quant),
        cmocka_unit_test(column_scales_are_laid_out_per_row_group),
        cmocka_unit_test(rceil_block_at_the_float_limit_keeps_its_element),
        cmocka_unit_test(encode_rejects_plain_casts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
