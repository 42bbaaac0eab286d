/* Tests for src/mx fake quantization: names and specs, the 63 microxcaling golden
 * cases, the independent vectors in tests/fixtures/mx, the fast kernels against the
 * exact reference, hand-worked edge cases, stochastic rounding statistics, and
 * threading. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx/mx.h"
#include "mx/mx_internal.h"
#include "mx/mx_pack.h"
#include "support/testutil.h"
#include "util/half.h"
#include "util/rng.h"

static float bits_f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static mx_spec_t spec_of(mx_format_t f, int block, mx_round_t r, mx_scale_rule_t s)
{
    mx_spec_t sp = {f, block, r, s};
    return sp;
}

/* Same bits, or both NaN; with zero_sign_free, -0 equals +0. */
static int same_value(float got, float want, int zero_sign_free)
{
    if (isnan(got) || isnan(want))
        return isnan(got) && isnan(want);
    if (zero_sign_free && got == 0 && want == 0)
        return 1;
    return test_f32_bits(got) == test_f32_bits(want);
}

static void *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc((size_t)n);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* A little-endian reader over a fixture buffer that fails the test on overrun. */
typedef struct rd {
    const uint8_t *p, *end;
} rd_t;

static const uint8_t *rd_take(rd_t *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n)
        fail_msg("fixture truncated");
    const uint8_t *q = r->p;
    r->p += n;
    return q;
}

static uint32_t rd_u32(rd_t *r)
{
    uint32_t v;
    memcpy(&v, rd_take(r, 4), 4);
    return v;
}

static uint64_t rd_u64(rd_t *r)
{
    uint64_t v;
    memcpy(&v, rd_take(r, 8), 8);
    return v;
}

static void rd_str(rd_t *r, char *out, size_t cap)
{
    size_t n = *rd_take(r, 1);
    assert_true(n < cap);
    memcpy(out, rd_take(r, n), n);
    out[n] = 0;
}

/* ---- names and specs ------------------------------------------------------------ */

static void format_names_aliases_and_element_names_parse(void **state)
{
    (void)state;
    struct {
        const char *name;
        mx_format_t f;
    } cases[] = {
        {"mxfp8_e4m3", MX_FP8_E4M3}, {"mxfp8", MX_FP8_E4M3}, {"fp8_e4m3", MX_FP8_E4M3},
        {"mxfp8_e5m2", MX_FP8_E5M2}, {"fp8_e5m2", MX_FP8_E5M2}, {"mxfp6_e3m2", MX_FP6_E3M2},
        {"mxfp6", MX_FP6_E3M2},      {"mxfp6_e2m3", MX_FP6_E2M3}, {"fp6_e2m3", MX_FP6_E2M3},
        {"mxfp4_e2m1", MX_FP4_E2M1}, {"mxfp4", MX_FP4_E2M1}, {"fp4_e2m1", MX_FP4_E2M1},
        {"mxint8", MX_INT8},         {"int8", MX_INT8},     {"mxint4", MX_INT4},
        {"int4", MX_INT4},           {"bf16", MX_BF16},     {"fp16", MX_FP16},
        {"fp32", MX_FP32},           {"MXFP4", MX_FP4_E2M1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mx_format_t f = MX_FORMAT_COUNT;
        if (mx_format_from_name(cases[i].name, &f) != 0 || f != cases[i].f)
            fail_msg("%s: expected format %d, got %d", cases[i].name, cases[i].f, f);
    }
    mx_format_t f;
    assert_int_equal(mx_format_from_name("mxfp5", &f), -1);
    assert_int_equal(mx_format_from_name("", &f), -1);
    for (int i = 0; i < MX_FORMAT_COUNT; i++) {
        assert_int_equal(mx_format_from_name(mx_format_name((mx_format_t)i), &f), 0);
        assert_int_equal(f, i);
        assert_int_equal(mx_format_info((mx_format_t)i)->format, i);
    }
    assert_false(mx_format_info(MX_INT4)->is_ocp);
    assert_true(mx_format_info(MX_INT8)->is_ocp);
}

static void rounding_floor_is_trunc_and_scale_names_parse(void **state)
{
    (void)state;
    mx_round_t r;
    assert_int_equal(mx_round_from_name("floor", &r), 0);
    assert_int_equal(r, MX_ROUND_TRUNC);
    assert_int_equal(mx_round_from_name("trunc", &r), 0);
    assert_int_equal(r, MX_ROUND_TRUNC);
    assert_int_equal(mx_round_from_name("nearest", &r), 0);
    assert_int_equal(r, MX_ROUND_NEAREST);
    assert_int_equal(mx_round_from_name("even", &r), 0);
    assert_int_equal(r, MX_ROUND_EVEN);
    assert_int_equal(mx_round_from_name("stochastic", &r), 0);
    assert_int_equal(r, MX_ROUND_STOCHASTIC);
    assert_int_equal(mx_round_from_name("up", &r), -1);
    mx_scale_rule_t s;
    assert_int_equal(mx_scale_from_name("rceil", &s), 0);
    assert_int_equal(s, MX_SCALE_RCEIL);
    assert_int_equal(mx_scale_from_name("floor", &s), 0);
    assert_int_equal(s, MX_SCALE_FLOOR);
    assert_int_equal(mx_scale_from_name("ceil", &s), -1);
}

static void spec_parse_defaults_and_round_trips(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    mx_spec_t s;
    char buf[64];
    assert_int_equal(mx_spec_parse("mxfp4", &s, &e), 0);
    assert_string_equal(mx_spec_format(&s, buf, sizeof buf), "mxfp4_e2m1/32/even/floor");
    assert_int_equal(mx_spec_parse("mxfp4/16", &s, &e), 0);
    assert_string_equal(mx_spec_format(&s, buf, sizeof buf), "mxfp4_e2m1/16/even/floor");
    assert_int_equal(mx_spec_parse("mxfp8_e4m3/32/nearest/rceil", &s, &e), 0);
    assert_string_equal(mx_spec_format(&s, buf, sizeof buf), "mxfp8_e4m3/32/nearest/rceil");
    assert_int_equal(mx_spec_parse("int8/8/floor", &s, &e), 0);
    assert_string_equal(mx_spec_format(&s, buf, sizeof buf), "mxint8/8/trunc/floor");
    assert_int_equal(mx_spec_parse("bf16", &s, &e), 0);
    assert_string_equal(mx_spec_format(&s, buf, sizeof buf), "bf16");
    assert_false(mx_spec_is_identity(&s));
    assert_int_equal(mx_spec_parse("fp32", &s, &e), 0);
    assert_true(mx_spec_is_identity(&s));
    mx_spec_t d = mx_spec_default(MX_FP6_E2M3);
    assert_int_equal(d.block, 32);
    assert_int_equal(d.round, MX_ROUND_EVEN);
    assert_int_equal(d.scale, MX_SCALE_FLOOR);
    assert_int_equal(mx_spec_check(&d, &e), 0);
}

static void spec_parse_errors_name_the_bad_field(void **state)
{
    (void)state;
    struct {
        const char *text, *needle;
    } bad[] = {
        {"mxfp5", "unknown format \"mxfp5\""}, {"mxfp4/0", "block \"0\""},
        {"mxfp4/x", "block \"x\""},            {"mxfp4/32/up", "unknown rounding \"up\""},
        {"mxfp4/32/even/ceil", "unknown scale rule \"ceil\""},
        {"mxfp4/32/even/floor/1", "too many fields"}, {"bf16/32", "plain cast"},
        {"", "empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_t e = ERR_INIT;
        mx_spec_t s;
        assert_int_equal(mx_spec_parse(bad[i].text, &s, &e), ERR_INPUT);
        if (!strstr(e.msg, bad[i].needle))
            fail_msg("\"%s\": expected the message to contain %s, got: %s", bad[i].text,
                     bad[i].needle, e.msg);
    }
    err_t e = ERR_INIT;
    mx_spec_t s = spec_of(MX_INT8, 0, MX_ROUND_EVEN, MX_SCALE_FLOOR);
    assert_int_equal(mx_spec_check(&s, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "block 0"));
    s.format = MX_BF16; /* block is not used by plain casts */
    err_clear(&e);
    assert_int_equal(mx_spec_check(&s, &e), 0);
}

static void format_table_max_is_the_largest_code(void **state)
{
    (void)state;
    /* The info table and the element decoder agree on the largest finite value. */
    for (int f = 0; f < MX_FORMAT_COUNT; f++) {
        const mx_format_info_t *fi = mx_format_info((mx_format_t)f);
        if (!fi->is_mx)
            continue;
        float best = 0;
        for (int c = 0; c < (1 << (fi->bits == 4 && !fi->is_int ? 4 : fi->bits)); c++) {
            float v = mx_elem_decode((mx_format_t)f, (uint8_t)c);
            if (isfinite(v) && v > best && !(fi->is_int && (int8_t)c == -128))
                best = v;
        }
        if (f == MX_INT4)
            best = 1.75f; /* int4 codes live in a byte; only -7..7 are int4 */
        if ((double)best != fi->max_normal)
            fail_msg("%s: table max %g, largest code %g", fi->name, fi->max_normal, best);
    }
}

/* ---- golden vectors (microxcaling) ------------------------------------------------ */

static void golden_cases_match_bit_for_bit(void **state)
{
    (void)state;
    const char *path;
    REQUIRE_SHARED(path, "mx-golden/mx_golden.bin");
    size_t len;
    uint8_t *buf = read_all(path, &len);
    rd_t r = {buf, buf + len};
    assert_memory_equal(rd_take(&r, 4), "MXGV", 4);
    assert_int_equal(rd_u32(&r), 1);
    uint32_t ncases = rd_u32(&r);
    assert_int_equal(ncases, 63);
    int failed = 0;
    for (uint32_t c = 0; c < ncases; c++) {
        char fmt[64], rnd[64];
        rd_str(&r, fmt, sizeof fmt);
        rd_str(&r, rnd, sizeof rnd);
        uint32_t block = rd_u32(&r), n = rd_u32(&r);
        float *in = malloc(n * 4), *want = malloc(n * 4), *got = malloc(n * 4);
        memcpy(in, rd_take(&r, n * 4), n * 4);
        memcpy(want, rd_take(&r, n * 4), n * 4);
        mx_spec_t s = {MX_FORMAT_COUNT, (int)block, MX_ROUND_COUNT, MX_SCALE_FLOOR};
        assert_int_equal(mx_format_from_name(fmt, &s.format), 0);
        assert_int_equal(mx_round_from_name(rnd, &s.round), 0);
        mx_fake_quant_flat(in, got, n, &s, 0, 0, 0);
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < n; i++)
            if (!same_value(got[i], want[i], 1) && !bad++)
                first = i;
        if (bad) {
            failed++;
            print_error("golden %s/%s/%u: %zu of %u differ; first [%zu] in %a expected %a got %a\n",
                        fmt, rnd, block, bad, n, first, in[first], want[first], got[first]);
        }
        free(in);
        free(want);
        free(got);
    }
    assert_ptr_equal(r.p, r.end);
    free(buf);
    if (failed)
        fail_msg("%d of 63 golden cases differ", failed);
}

/* ---- independent vectors (tests/fixtures/mx) ------------------------------------- */

static void fixture_vectors_match_values_scales_and_bytes(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = read_all("tests/fixtures/mx/mx_vectors.bin", &len);
    rd_t r = {buf, buf + len};
    assert_memory_equal(rd_take(&r, 4), "MXTV", 4);
    assert_int_equal(rd_u32(&r), 1);
    uint32_t ncases = rd_u32(&r);
    assert_true(ncases >= 150);
    int failed = 0, casts = 0, cols_cases = 0, sto = 0;
    for (uint32_t c = 0; c < ncases; c++) {
        char name[128], fmt[32], rnd[32], rule[32];
        rd_str(&r, name, sizeof name);
        rd_str(&r, fmt, sizeof fmt);
        rd_str(&r, rnd, sizeof rnd);
        rd_str(&r, rule, sizeof rule);
        uint32_t block = rd_u32(&r);
        uint8_t axis = *rd_take(&r, 1);
        uint32_t rows = rd_u32(&r), cols = rd_u32(&r);
        uint64_t seed = rd_u64(&r), stream = rd_u64(&r);
        size_t n = (size_t)rows * cols;
        const uint8_t *in_p = rd_take(&r, n * 4), *want_p = rd_take(&r, n * 4);
        uint32_t nsc = rd_u32(&r);
        const uint8_t *want_sc = rd_take(&r, nsc);
        uint32_t nel = rd_u32(&r);
        const uint8_t *want_el = rd_take(&r, nel);
        float *in = malloc(n * 4), *want = malloc(n * 4), *got = malloc(n * 4);
        memcpy(in, in_p, n * 4);
        memcpy(want, want_p, n * 4);
        mx_spec_t s = {MX_FORMAT_COUNT, (int)block, MX_ROUND_COUNT, MX_SCALE_COUNT};
        assert_int_equal(mx_format_from_name(fmt, &s.format), 0);
        assert_int_equal(mx_round_from_name(rnd, &s.round), 0);
        assert_int_equal(mx_scale_from_name(rule, &s.scale), 0);
        mx_axis_t ax = axis ? MX_AXIS_COL : MX_AXIS_ROW;
        cols_cases += axis == 1;
        sto += s.round == MX_ROUND_STOCHASTIC;
        int bad = 0;
        mx_fake_quant(in, got, rows, cols, ax, &s, seed, stream);
        for (size_t i = 0; i < n; i++)
            if (!same_value(got[i], want[i], 0)) {
                if (!bad++)
                    print_error("%s: [%zu] in %a expected %a got %a\n", name, i, in[i], want[i],
                                got[i]);
            }
        if (!mx_format_info(s.format)->is_mx) {
            casts++;
            assert_int_equal(nel, n * 2);
            for (size_t i = 0; i < n; i++) {
                uint16_t code = (uint16_t)(want_el[2 * i] | want_el[2 * i + 1] << 8);
                uint16_t ours = s.format == MX_BF16 ? half_f32_to_bf16(in[i])
                                                    : half_f32_to_f16(in[i]);
                float a = s.format == MX_BF16 ? half_bf16_to_f32(code) : half_f16_to_f32(code);
                if (code != ours && !(isnan(a) && isnan(in[i])) && !bad++)
                    print_error("%s: [%zu] in %a code expected %04x got %04x\n", name, i, in[i],
                                code, ours);
            }
        } else {
            size_t srows, scols;
            mx_pack_scale_shape(rows, cols, ax, (int)block, &srows, &scols);
            assert_int_equal(srows * scols, nsc);
            assert_int_equal(mx_pack_elem_bytes(s.format, n), nel);
            uint8_t *sc = malloc(nsc), *el = malloc(nel);
            err_t e = ERR_INIT;
            assert_int_equal(mx_pack_encode(in, rows, cols, ax, &s, seed, stream, 2, el, sc, &e), 0);
            if (memcmp(sc, want_sc, nsc) && !bad++)
                print_error("%s: scale bytes differ\n", name);
            for (size_t i = 0; i < nel; i++)
                if (el[i] != want_el[i]) {
                    if (!bad++)
                        print_error("%s: element byte %zu expected %02x got %02x\n", name, i,
                                    want_el[i], el[i]);
                    break;
                }
            assert_int_equal(mx_pack_decode(want_el, want_sc, rows, cols, ax, s.format,
                                            (int)block, got, &e), 0);
            for (size_t i = 0; i < n; i++)
                if (!same_value(got[i], want[i], mx_format_info(s.format)->is_int) && !bad++)
                    print_error("%s: decode [%zu] expected %a got %a\n", name, i, want[i], got[i]);
            free(sc);
            free(el);
        }
        failed += bad != 0;
        free(in);
        free(want);
        free(got);
    }
    assert_ptr_equal(r.p, r.end);
    free(buf);
    assert_int_equal(casts, 2);
    assert_true(cols_cases > 40);
    assert_true(sto > 20);
    if (failed)
        fail_msg("%d of %u fixture cases differ", failed, ncases);
}

/* ---- the fast kernels against the reference -------------------------------------- */

static void fast_kernels_equal_reference_on_random_inputs(void **state)
{
    (void)state;
    enum { N = 4096 };
    uint32_t *in = malloc(N * 4), *got = malloc(N * 4);
    int mismatches = 0;
    for (int f = 0; f < MX_INT4 + 1; f++) {
        const mxc_fmt_t qf = mxc_fmt((mx_format_t)f), *q = &qf;
        for (int rnd = 0; rnd < MX_ROUND_COUNT; rnd++)
            for (int trial = 0; trial < 12; trial++) {
                uint64_t key = (uint64_t)(f * 100 + rnd * 10 + trial);
                /* a scale anywhere in range, elements from far below to a bit above it */
                int s = (int)(rng_u32(1, key, 0) % 255) - 127;
                for (size_t i = 0; i < N; i++) {
                    uint32_t w = rng_u32(2, key, i), w2 = rng_u32(3, key, i);
                    int e = s + q->emax + 1 - (int)(w2 % 40) + 127;
                    if (i % 17 == 0)
                        e = (int)(w2 % 255);
                    e = e < 0 ? 0 : e > 254 ? 254 : e;
                    in[i] = (w & 0x807fffffu) | (uint32_t)e << 23;
                    if (i % 29 == 0) /* ties and short mantissas */
                        in[i] &= 0xffff0000u | (w2 & 0x0000f000u);
                }
                mxq_rand_t rand = {77, key, 5, 1};
                mxq_elems(q, (mx_round_t)rnd, s, in, got, N, &rand);
                for (size_t i = 0; i < N; i++) {
                    uint32_t want = mxq_elem_ref(q, (mx_round_t)rnd, s, in[i], rng_u32(77, key, 5 + i));
                    if (want != got[i] && mismatches++ < 5)
                        print_error("%s %s s=%d: in %a expected %a got %a\n",
                                    mx_format_name((mx_format_t)f), mx_round_name((mx_round_t)rnd),
                                    s, bits_f(in[i]), bits_f(want), bits_f(got[i]));
                }
            }
    }
    free(in);
    free(got);
    assert_int_equal(mismatches, 0);
}

static void bf16_and_fp16_casts_match_util_half(void **state)
{
    (void)state;
    /* Every 16-bit code and its neighbourhood (the codes' midpoints, one float32 ulp
     * either side), plus random patterns: the rounding boundaries all lie there. */
    enum { N = 65536 * 6 + 65536 };
    uint32_t *in = malloc(N * 4), *got = malloc(N * 4);
    for (int which = 0; which < 2; which++) {
        size_t n = 0;
        for (uint32_t h = 0; h < 65536; h++) {
            float a = which ? half_f16_to_f32((uint16_t)h) : half_bf16_to_f32((uint16_t)h);
            float b = which ? half_f16_to_f32((uint16_t)(h + 1)) : half_bf16_to_f32((uint16_t)(h + 1));
            uint32_t ua = test_f32_bits(a);
            float mid = (float)(((double)a + (double)b) / 2);
            uint32_t um = test_f32_bits(mid);
            in[n++] = ua;
            in[n++] = ua + 1;
            in[n++] = ua - 1;
            in[n++] = um;
            in[n++] = um + 1;
            in[n++] = um - 1;
            in[n++] = rng_u32(9, (uint64_t)which, h);
        }
        if (which)
            mxq_cast_fp16(in, got, n);
        else
            mxq_cast_bf16(in, got, n);
        for (size_t i = 0; i < n; i++) {
            float x = bits_f(in[i]);
            float want = which ? half_f16_to_f32(half_f32_to_f16(x))
                               : half_bf16_to_f32(half_f32_to_bf16(x));
            if (test_f32_bits(want) != got[i])
                fail_msg("%s cast of %a (%08x): expected %08x got %08x", which ? "fp16" : "bf16", x,
                         in[i], test_f32_bits(want), got[i]);
        }
    }
    free(in);
    free(got);
}

/* ---- hand-worked cases -------------------------------------------------------------- */

static void check_block(mx_format_t f, mx_round_t r, mx_scale_rule_t rule, int block,
                        const float *in, const float *want, size_t n)
{
    mx_spec_t s = spec_of(f, block, r, rule);
    float got[64];
    mx_fake_quant_flat(in, got, n, &s, 0, 0, 0);
    for (size_t i = 0; i < n; i++)
        if (!same_value(got[i], want[i], 1))
            fail_msg("%s/%d/%s/%s [%zu]: in %a expected %a got %a", mx_format_name(f), block,
                     mx_round_name(r), mx_scale_name(rule), i, in[i], want[i], got[i]);
}

static void ties_round_away_even_or_toward_zero(void **state)
{
    (void)state;
    /* fp4 block with max 4: s = 0, grid 0 .5 1 1.5 2 3 4 6. 2.5 ties 2|3, 0.25 ties 0|.5 */
    float in[] = {4, 2.5f, 0.25f, -2.5f, 5, -0.75f};
    float near[] = {4, 3, 0.5f, -3, 6, -1};
    float even[] = {4, 2, 0, -2, 4, -1};
    float trunc[] = {4, 2, 0, -2, 4, -0.5f};
    check_block(MX_FP4_E2M1, MX_ROUND_NEAREST, MX_SCALE_FLOOR, 8, in, near, 6);
    check_block(MX_FP4_E2M1, MX_ROUND_EVEN, MX_SCALE_FLOOR, 8, in, even, 6);
    check_block(MX_FP4_E2M1, MX_ROUND_TRUNC, MX_SCALE_FLOOR, 8, in, trunc, 6);
}

static void floor_saturates_and_rceil_does_not(void **state)
{
    (void)state;
    /* amax 7.9: floor s = 2 - 2 = 0, 7.9 clamps to 6; rceil s = ceil(log2(7.9/6)) = 1,
     * 7.9/2 = 3.95 -> 4 (even) -> 8, 1/2 = 0.5 -> 1 */
    float in[] = {7.9f, 1};
    float fl[] = {6, 1}, rc[] = {8, 1}, rc_trunc[] = {6, 1};
    check_block(MX_FP4_E2M1, MX_ROUND_EVEN, MX_SCALE_FLOOR, 2, in, fl, 2);
    check_block(MX_FP4_E2M1, MX_ROUND_EVEN, MX_SCALE_RCEIL, 2, in, rc, 2);
    check_block(MX_FP4_E2M1, MX_ROUND_TRUNC, MX_SCALE_RCEIL, 2, in, rc_trunc, 2);
}

static void rceil_is_the_smallest_power_of_two_not_below_amax_over_max(void **state)
{
    (void)state;
    const mxc_fmt_t qf = mxc_fmt(MX_FP8_E4M3), *q = &qf; /* max 448 = 1.75 * 2^8 */
    struct {
        float amax;
        int floor_s, rceil_s;
    } c[] = {
        {448, 0, 0},   {nextafterf(448, 1000), 0, 1}, {nextafterf(448, 0), 0, 0},
        {449, 0, 1},   {256, 0, 0},                   {224, -1, -1},
        {1, -8, -8},   {1.75f, -8, -8},               {nextafterf(1.75f, 2), -8, -7},
        {0, -127, -127}, {FLT_MAX, 119, 120},
        /* tiny maxima: floor clamps at -127; rceil reaches -126 one ulp above 448*2^-127 */
        {0x1p-140f, -127, -127}, {448 * 0x1p-127f, -127, -127},
        {nextafterf(448 * 0x1p-127f, 1), -127, -126},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        uint32_t a = test_f32_bits(c[i].amax);
        int sf = mxq_scale_exp(q, MX_SCALE_FLOOR, a), sr = mxq_scale_exp(q, MX_SCALE_RCEIL, a);
        if (sf != c[i].floor_s || sr != c[i].rceil_s)
            fail_msg("amax %a: expected floor %d rceil %d, got %d %d", c[i].amax, c[i].floor_s,
                     c[i].rceil_s, sf, sr);
        /* the defining property, checked in double: 2^s >= amax/max > 2^(s-1) */
        if (c[i].amax > 0 && sr > -127 && sr < 127) {
            double ratio = c[i].amax / 448.0;
            assert_true(ldexp(1, sr) >= ratio && ldexp(1, sr - 1) < ratio);
        }
    }
    assert_int_equal(mxq_scale_exp(q, MX_SCALE_RCEIL, 0x7f800000u), MXC_NAN_SCALE);
    assert_int_equal(mxq_scale_exp(q, MX_SCALE_FLOOR, 0x7fc00000u), MXC_NAN_SCALE);
}

static void block_max_just_below_a_power_of_two_uses_the_bits(void **state)
{
    (void)state;
    /* amax = 2 - 2^-23: floor(log2) is 0 (log2f would round it up to 1), s = -8, and
     * the element 512 - 2^-15 rounds to 512, which saturates to 448: 1.75. */
    float x = nextafterf(2, 0);
    float in[] = {x, 0.5f}, want[] = {1.75f, 0.5f};
    check_block(MX_FP8_E4M3, MX_ROUND_EVEN, MX_SCALE_FLOOR, 2, in, want, 2);
    float in2[] = {-x, 1}, want2[] = {-1.75f, 1};
    check_block(MX_FP8_E4M3, MX_ROUND_NEAREST, MX_SCALE_FLOOR, 2, in2, want2, 2);
}

static void all_zero_blocks_stay_zero_with_scale_byte_zero(void **state)
{
    (void)state;
    float in[] = {0, -0.0f, 0, 0, 1, 0, 0, 0};
    float got[8];
    uint8_t el[8], sc[2];
    for (int f = 0; f <= MX_INT4; f++) {
        mx_spec_t s = spec_of((mx_format_t)f, 4, MX_ROUND_EVEN, MX_SCALE_FLOOR);
        mx_fake_quant_flat(in, got, 8, &s, 0, 0, 0);
        for (int i = 0; i < 8; i++)
            assert_true(same_value(got[i], in[i], 0) || (f >= MX_INT8 && got[i] == in[i]));
        err_t e = ERR_INIT;
        assert_int_equal(mx_pack_encode(in, 1, 8, MX_AXIS_ROW, &s, 0, 0, 1, el, sc, &e), 0);
        assert_int_equal(sc[0], 0x00);
    }
}

static void inf_or_nan_poisons_only_its_own_block(void **state)
{
    (void)state;
    float in[] = {1, NAN, 2, 3, INFINITY, 0.5f, -INFINITY, 4, 5};
    float got[9];
    for (int rule = 0; rule < MX_SCALE_COUNT; rule++) {
        mx_spec_t s = spec_of(MX_FP8_E4M3, 3, MX_ROUND_EVEN, (mx_scale_rule_t)rule);
        mx_fake_quant_flat(in, got, 9, &s, 0, 0, 0);
        for (int i = 0; i < 9; i++)
            assert_true(isnan(got[i]));
        s.block = 2; /* blocks {1,NaN} {2,3} {Inf,.5} {-Inf,4} {5} */
        mx_fake_quant_flat(in, got, 9, &s, 0, 0, 0);
        assert_true(isnan(got[0]) && isnan(got[1]) && isnan(got[4]) && isnan(got[5]) &&
                    isnan(got[6]) && isnan(got[7]));
        assert_true(got[2] == 2 && got[3] == 3 && got[8] == 5);
        uint8_t el[9], sc[5];
        err_t e = ERR_INIT;
        assert_int_equal(mx_pack_encode(in, 1, 9, MX_AXIS_ROW, &s, 0, 0, 1, el, sc, &e), 0);
        assert_int_equal(sc[0], 0xFF);
        assert_int_equal(sc[2], 0xFF);
        assert_int_equal(sc[3], 0xFF);
        assert_int_not_equal(sc[1], 0xFF);
        assert_int_equal(el[0] | el[1], 0);
    }
}

static void short_final_block_gets_its_own_scale(void **state)
{
    (void)state;
    /* blocks of 4 over 6 values: the last block {0.001, 0.002} is scaled by itself */
    float in[] = {100, 1, 2, 3, 0.001f, 0.002f};
    float got[6], ref[2];
    mx_spec_t s = spec_of(MX_FP8_E4M3, 4, MX_ROUND_EVEN, MX_SCALE_FLOOR);
    mx_fake_quant_flat(in, got, 6, &s, 0, 0, 0);
    mx_fake_quant_flat(in + 4, ref, 2, &s, 0, 0, 0);
    assert_true(got[4] == ref[0] && got[5] == ref[1]);
    assert_true(got[4] != 0 && fabsf(got[5] - 0.002f) < 0.0002f);
}

static void huge_and_subnormal_inputs(void **state)
{
    (void)state;
    /* FLT_MAX: s = 127 - 8, element (2 - 2^-23) * 2^8 rounds to 512, saturates: 1.75*2^127 */
    float in[] = {FLT_MAX, -FLT_MAX, 1e30f};
    float want[] = {0x1.cp127f, -0x1.cp127f, 0};
    check_block(MX_FP8_E4M3, MX_ROUND_EVEN, MX_SCALE_FLOOR, 4, in, want, 3);
    /* int8 on float32 subnormals: s clamps to -127; quantum 2^-133 */
    float sub[] = {0x1.8p-130f, 0x1p-140f, 0x3p-134f, -0x1p-149f};
    float sub_want[] = {0x1.8p-130f, 0, 0x4p-134f, 0};
    check_block(MX_INT8, MX_ROUND_EVEN, MX_SCALE_FLOOR, 4, sub, sub_want, 4);
    float sub_near[] = {0x1.8p-130f, 0, 0x4p-134f, -0.0f};
    check_block(MX_INT8, MX_ROUND_NEAREST, MX_SCALE_FLOOR, 4, sub, sub_near, 4);
    /* e4m3 on subnormals: elements keep ~4 bits down to 2^-136 */
    float e4[] = {0x1.fp-127f, 0x1p-136f, 0x1.8p-137f};
    float e4_want[] = {0x1p-126f, 0x1p-136f, 0x1p-136f};
    check_block(MX_FP8_E4M3, MX_ROUND_NEAREST, MX_SCALE_FLOOR, 4, e4, e4_want, 3);
}

static void int_formats_are_fixed_point_and_saturate(void **state)
{
    (void)state;
    float in[] = {1.0f, 0.01f, -0.5f, 1.99f, 1.999f, -1.999f, 0.0078125f, 0.0234375f};
    float near[] = {1.0f, 0.015625f, -0.5f, 1.984375f, 1.984375f, -1.984375f, 0.015625f, 0.03125f};
    float even[] = {1.0f, 0.015625f, -0.5f, 1.984375f, 1.984375f, -1.984375f, 0, 0.03125f};
    float trunc[] = {1.0f, 0, -0.5f, 1.984375f, 1.984375f, -1.984375f, 0, 0.015625f};
    check_block(MX_INT8, MX_ROUND_NEAREST, MX_SCALE_FLOOR, 8, in, near, 8);
    check_block(MX_INT8, MX_ROUND_EVEN, MX_SCALE_FLOOR, 8, in, even, 8);
    check_block(MX_INT8, MX_ROUND_TRUNC, MX_SCALE_FLOOR, 8, in, trunc, 8);
    /* int4: quantum 1/4, max 7/4; s from amax 3 is 1 */
    float in4[] = {3, 1.2f, -3.9f, 0.25f};
    float want4[] = {3, 1.0f, -3.5f, 0};
    check_block(MX_INT4, MX_ROUND_EVEN, MX_SCALE_FLOOR, 4, in4, want4, 4);
}

static void plain_casts_ignore_block_and_fp32_is_identity(void **state)
{
    (void)state;
    float in[] = {1.00390625f, 3.0e38f, 65519.0f, 65520.0f, 1e-7f, NAN};
    float got[6];
    mx_spec_t s = spec_of(MX_FP16, 0, MX_ROUND_STOCHASTIC, MX_SCALE_RCEIL);
    mx_fake_quant_flat(in, got, 6, &s, 1, 2, 3);
    assert_true(got[0] == 1.00390625f && isinf(got[1]) && got[2] == 65504.0f && isinf(got[3]));
    assert_true(got[4] == half_f16_to_f32(half_f32_to_f16(1e-7f)) && got[4] > 0 && isnan(got[5]));
    s.format = MX_BF16;
    mx_fake_quant_flat(in, got, 6, &s, 0, 0, 0);
    assert_true(got[0] == 1.0f); /* tie 1 + 2^-8 rounds to even */
    s.format = MX_FP32;
    mx_fake_quant_flat(in, got, 6, &s, 0, 0, 0);
    assert_memory_equal(in, got, 5 * 4);
}

/* ---- matrices, threads, in place ----------------------------------------------------- */

static float *random_matrix(size_t n, uint64_t key)
{
    float *m = malloc(n * 4);
    for (size_t i = 0; i < n; i++)
        m[i] = (float)(rng_normal(key, 1, i) * ldexp(1, (int)(rng_u32(key, 2, i) % 24) - 12));
    return m;
}

static void column_blocks_equal_row_blocks_of_the_transpose(void **state)
{
    (void)state;
    size_t shapes[][2] = {{37, 5}, {64, 17}, {9, 300}, {100, 3}};
    int blocks[] = {1, 8, 16, 32, 7};
    for (size_t sh = 0; sh < 4; sh++)
        for (size_t b = 0; b < 5; b++) {
            size_t R = shapes[sh][0], C = shapes[sh][1], n = R * C;
            float *a = random_matrix(n, sh * 10 + b), *t = malloc(n * 4), *qa = malloc(n * 4),
                  *qt = malloc(n * 4);
            for (size_t r = 0; r < R; r++)
                for (size_t c = 0; c < C; c++)
                    t[c * R + r] = a[r * C + c];
            mx_spec_t s = spec_of(MX_FP6_E2M3, blocks[b], MX_ROUND_NEAREST, MX_SCALE_RCEIL);
            mx_fake_quant(a, qa, R, C, MX_AXIS_COL, &s, 0, 0);
            mx_fake_quant(t, qt, C, R, MX_AXIS_ROW, &s, 0, 0);
            for (size_t r = 0; r < R; r++)
                for (size_t c = 0; c < C; c++)
                    if (!same_value(qa[r * C + c], qt[c * R + r], 0))
                        fail_msg("%zux%zu block %d (%zu,%zu): col %a, transposed row %a", R, C,
                                 blocks[b], r, c, qa[r * C + c], qt[c * R + r]);
            free(a);
            free(t);
            free(qa);
            free(qt);
        }
}

static void long_column_blocks_take_the_strided_path_correctly(void **state)
{
    (void)state;
    /* a block longer than the column buffer (4096) against the transpose */
    size_t R = 5000, C = 3, n = R * C;
    float *a = random_matrix(n, 99), *t = malloc(n * 4), *qa = malloc(n * 4), *qt = malloc(n * 4);
    for (size_t r = 0; r < R; r++)
        for (size_t c = 0; c < C; c++)
            t[c * R + r] = a[r * C + c];
    mx_spec_t s = spec_of(MX_FP8_E5M2, 4500, MX_ROUND_EVEN, MX_SCALE_FLOOR);
    mx_fake_quant(a, qa, R, C, MX_AXIS_COL, &s, 0, 0);
    mx_fake_quant(t, qt, C, R, MX_AXIS_ROW, &s, 0, 0);
    for (size_t r = 0; r < R; r++)
        for (size_t c = 0; c < C; c++)
            assert_true(same_value(qa[r * C + c], qt[c * R + r], 0));
    free(a);
    free(t);
    free(qa);
    free(qt);
}

static void parallel_and_in_place_results_equal_serial(void **state)
{
    (void)state;
    size_t R = 70, C = 1000, n = R * C;
    float *a = random_matrix(n, 5), *ser = malloc(n * 4), *par = malloc(n * 4);
    mx_axis_t axes[] = {MX_AXIS_ROW, MX_AXIS_COL};
    int blocks[] = {32, 24};
    for (int ax = 0; ax < 2; ax++)
        for (int b = 0; b < 2; b++)
            for (int rnd = 0; rnd < MX_ROUND_COUNT; rnd++) {
                mx_spec_t s = spec_of(MX_FP8_E4M3, blocks[b], (mx_round_t)rnd, MX_SCALE_FLOOR);
                mx_fake_quant(a, ser, R, C, axes[ax], &s, 11, 12);
                for (int th = 2; th <= 3; th++) {
                    mx_fake_quant_parallel(a, par, R, C, axes[ax], &s, 11, 12, th);
                    assert_memory_equal(ser, par, n * 4);
                }
                memcpy(par, a, n * 4);
                mx_fake_quant_parallel(par, par, R, C, axes[ax], &s, 11, 12, 2);
                assert_memory_equal(ser, par, n * 4);
                if (axes[ax] == MX_AXIS_ROW) {
                    mx_fake_quant_flat_parallel(a, par, n, &s, 11, 12, 0, 3);
                    mx_fake_quant_flat(a, ser, n, &s, 11, 12, 0);
                    assert_memory_equal(ser, par, n * 4);
                }
            }
    free(a);
    free(ser);
    free(par);
}

/* ---- stochastic rounding ------------------------------------------------------------- */

static void stochastic_mean_over_seeds_is_unbiased(void **state)
{
    (void)state;
    /* fp4 block {4, x}: s = 0, x between grid points lo and hi. Over many seeds the mean
     * of q(x) is x; the standard error is (hi-lo) sqrt(p(1-p)/N). */
    const float xs[] = {1.3f, 2.2f, 0.1f, -5.5f, 0.3f};
    enum { N = 20000 };
    for (size_t k = 0; k < sizeof xs / sizeof xs[0]; k++) {
        float in[2] = {4, xs[k]}, out[2];
        double sum = 0;
        mx_spec_t s = spec_of(MX_FP4_E2M1, 2, MX_ROUND_STOCHASTIC, MX_SCALE_FLOOR);
        for (uint64_t seed = 0; seed < N; seed++) {
            mx_fake_quant_flat(in, out, 2, &s, seed, 3, 0);
            sum += out[1];
        }
        double mean = sum / N, se = 2.0 * 0.5 / sqrt(N); /* grid step <= 2, p(1-p) <= 1/4 */
        if (fabs(mean - xs[k]) > 5 * se)
            fail_msg("x = %g: mean over %d seeds %g (allowed +-%g)", xs[k], N, mean, 5 * se);
    }
}

static void stochastic_round_up_probability_is_the_distance(void **state)
{
    (void)state;
    /* Many copies of x in one call (different element indices), in the normal region
     * (e4m3, grid step 1/8 at [1,2)) and in the element-subnormal region (e4m3
     * quantum 2^-9 at scale 0), and for int8. */
    struct {
        mx_format_t f;
        float amax, lo, step;
    } setups[] = {
        {MX_FP8_E4M3, 256, 1.0f, 0.125f},     /* s = 0: [1,2) step 2^-3 */
        {MX_FP8_E4M3, 256, 0x1p-9f, 0x1p-9f}, /* subnormal grid */
        {MX_INT8, 1.5f, 0.25f, 0x1p-6f},
    };
    const double fr[] = {0.03, 0.25, 0.5, 0.7, 0.97};
    enum { B = 64, NB = 1500 };
    float *in = malloc(B * NB * 4), *out = malloc(B * NB * 4);
    for (size_t su = 0; su < 3; su++)
        for (size_t k = 0; k < 5; k++) {
            float x = setups[su].lo + (float)fr[k] * setups[su].step;
            for (size_t i = 0; i < (size_t)B * NB; i++)
                in[i] = i % B == 0 ? setups[su].amax : x;
            mx_spec_t s = spec_of(setups[su].f, B, MX_ROUND_STOCHASTIC, MX_SCALE_FLOOR);
            mx_fake_quant_flat(in, out, (size_t)B * NB, &s, 42, su * 10 + k, 0);
            size_t up = 0, total = 0;
            for (size_t i = 0; i < (size_t)B * NB; i++) {
                if (i % B == 0)
                    continue;
                total++;
                if (out[i] == setups[su].lo + setups[su].step)
                    up++;
                else if (out[i] != setups[su].lo)
                    fail_msg("x = %a rounded to %a, neither neighbour", x, out[i]);
            }
            double p = (double)up / total, want = (double)(x - setups[su].lo) / setups[su].step;
            double se = sqrt(want * (1 - want) / total);
            if (fabs(p - want) > 5 * se + 1e-9)
                fail_msg("%s x = %a: P(up) %g, expected %g (+-%g)", mx_format_name(setups[su].f), x,
                         p, want, 5 * se);
        }
    free(in);
    free(out);
}

static void stochastic_depends_on_seed_stream_and_index_only(void **state)
{
    (void)state;
    size_t n = 4096;
    float *a = random_matrix(n, 8), *o1 = malloc(n * 4), *o2 = malloc(n * 4);
    mx_spec_t s = spec_of(MX_FP6_E3M2, 16, MX_ROUND_STOCHASTIC, MX_SCALE_FLOOR);
    mx_fake_quant_flat(a, o1, n, &s, 5, 6, 0);
    mx_fake_quant_flat(a, o2, n, &s, 5, 6, 0);
    assert_memory_equal(o1, o2, n * 4);
    /* the second half alone, with index0 = n/2, equals the second half of the whole */
    mx_fake_quant_flat(a + n / 2, o2, n / 2, &s, 5, 6, n / 2);
    assert_memory_equal(o1 + n / 2, o2, n / 2 * 4);
    /* another seed or stream changes something */
    mx_fake_quant_flat(a, o2, n, &s, 6, 6, 0);
    assert_true(memcmp(o1, o2, n * 4) != 0);
    mx_fake_quant_flat(a, o2, n, &s, 5, 7, 0);
    assert_true(memcmp(o1, o2, n * 4) != 0);
    /* element (r, c) of a matrix uses index r*cols + c: the flat call agrees */
    mx_fake_quant(a, o2, 64, 64, MX_AXIS_ROW, &s, 5, 6);
    assert_memory_equal(o1, o2, n * 4);
    free(a);
    free(o1);
    free(o2);
}

static void stochastic_words_are_rng_u32_across_counter_wraps(void **state)
{
    (void)state;
    /* Element i must use rng_u32(seed, stream, index0 + i) whichever generator path
     * runs (8 Philox blocks at a time, or one), including where the block counter's
     * low word wraps (index0 near 4 * 2^32) and at unaligned starts. */
    const uint64_t starts[] = {0, 3, ((1ull << 32) - 9) * 4 + 1, (1ull << 34) - 13, 12345678901ull};
    enum { N = 700 };
    float in[N], out[N];
    for (int i = 0; i < N; i++)
        in[i] = i % 32 == 0 ? 256.0f : 1.0f + (float)(i % 7) / 64.0f; /* s = 0, grid 1/8 */
    const mxc_fmt_t qf = mxc_fmt(MX_FP8_E4M3), *q = &qf;
    for (size_t k = 0; k < sizeof starts / sizeof starts[0]; k++) {
        mx_spec_t s = spec_of(MX_FP8_E4M3, 32, MX_ROUND_STOCHASTIC, MX_SCALE_FLOOR);
        mx_fake_quant_flat(in, out, N, &s, 0xABCDEF12345ull, 77, starts[k]);
        for (int i = 0; i < N; i++) {
            uint32_t want = mxq_elem_ref(q, MX_ROUND_STOCHASTIC, 0, test_f32_bits(in[i]),
                                         rng_u32(0xABCDEF12345ull, 77, starts[k] + (uint64_t)i));
            if (want != test_f32_bits(out[i]))
                fail_msg("index0 %llu, element %d: expected %a got %a",
                         (unsigned long long)starts[k], i, bits_f(want), out[i]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(format_names_aliases_and_element_names_parse),
        cmocka_unit_test(rounding_floor_is_trunc_and_scale_names_parse),
        cmocka_unit_test(spec_parse_defaults_and_round_trips),
        cmocka_unit_test(spec_parse_errors_name_the_bad_field),
        cmocka_unit_test(format_table_max_is_the_largest_code),
        cmocka_unit_test(golden_cases_match_bit_for_bit),
        cmocka_unit_test(fixture_vectors_match_values_scales_and_bytes),
        cmocka_unit_test(fast_kernels_equal_reference_on_random_inputs),
        cmocka_unit_test(bf16_and_fp16_casts_match_util_half),
        cmocka_unit_test(ties_round_away_even_or_toward_zero),
        cmocka_unit_test(floor_saturates_and_rceil_does_not),
        cmocka_unit_test(rceil_is_the_smallest_power_of_two_not_below_amax_over_max),
        cmocka_unit_test(block_max_just_below_a_power_of_two_uses_the_bits),
        cmocka_unit_test(all_zero_blocks_stay_zero_with_scale_byte_zero),
        cmocka_unit_test(inf_or_nan_poisons_only_its_own_block),
        cmocka_unit_test(short_final_block_gets_its_own_scale),
        cmocka_unit_test(huge_and_subnormal_inputs),
        cmocka_unit_test(int_formats_are_fixed_point_and_saturate),
        cmocka_unit_test(plain_casts_ignore_block_and_fp32_is_identity),
        cmocka_unit_test(column_blocks_equal_row_blocks_of_the_transpose),
        cmocka_unit_test(long_column_blocks_take_the_strided_path_correctly),
        cmocka_unit_test(parallel_and_in_place_results_equal_serial),
        cmocka_unit_test(stochastic_mean_over_seeds_is_unbiased),
        cmocka_unit_test(stochastic_round_up_probability_is_the_distance),
        cmocka_unit_test(stochastic_depends_on_seed_stream_and_index_only),
        cmocka_unit_test(stochastic_words_are_rng_u32_across_counter_wraps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
