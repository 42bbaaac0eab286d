/* Tests for src/mx/mx_core.h and util/philox.h as nvcc compiles them, on the host (no GPU
 * needed): the arithmetic the CUDA kernels run, instantiated by nvcc and compared with
 * the same definitions compiled as C into the library — util/rng (Philox words, uniform
 * doubles), src/mx (scale rule, exact element rounding with every rounding mode, and
 * its fast form mxc_elem_fast, bf16/fp16 casts) — and the block layout of the two-pass MX kernels replayed serially
 * against mx_fake_quant (the CPU's vectorised kernels) on both axes with short blocks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "mx/mx.h"
#include "mx/mx_internal.h"
#include "support/testutil.h"
#include "util/rng.h"
}

#include "mx/mx_core.h"

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void philox_words_match_util_rng(void **state)
{
    (void)state;
    uint64_t st = 1;
    for (int i = 0; i < 200000; i++) {
        uint64_t seed = mix(&st), stream = mix(&st), index = mix(&st) >> (i % 64);
        uint32_t want = rng_u32(seed, stream, index), got = philox_u32(seed, stream, index);
        if (want != got)
            fail_msg("rng_u32(%llx, %llx, %llx): expected %08x got %08x", (unsigned long long)seed,
                     (unsigned long long)stream, (unsigned long long)index, want, got);
        double wd = rng_uniform_double(seed, stream, index >> 1);
        double gd = philox_uniform_double(seed, stream, index >> 1);
        if (memcmp(&wd, &gd, 8))
            fail_msg("rng_uniform_double: expected %a got %a", wd, gd);
    }
}

/* random float bits over the whole range, with zeros, subnormals, Inf and NaN */
static uint32_t any_bits(uint64_t *st)
{
    uint64_t r = mix(st);
    switch (r % 8) {
    case 0:
        return (uint32_t)(r >> 32) & 0x807fffffu;  /* zero or subnormal */
    case 1:
        return (r & 0x100) ? 0x7f800000u : 0xff800000u;
    case 2:
        return 0x7f800001u | (uint32_t)(r >> 40);  /* NaN */
    default:
        return (uint32_t)(r >> 32);
    }
}

static void scale_rule_matches_src_mx(void **state)
{
    (void)state;
    uint64_t st = 2;
    for (int f = 0; f < 7; f++) {
        const mxc_fmt_t rf = mxq_fmt((mx_format_t)f), *ref = &rf;
        mxc_fmt_t cf = mxc_fmt((mx_format_t)f);
        assert_int_equal(cf.m, ref->m);
        assert_int_equal(cf.emin, ref->emin);
        assert_int_equal(cf.emax, ref->emax);
        assert_true(cf.max == ref->max);
        assert_int_equal(cf.max_mant, ref->max_mant);
        for (int i = 0; i < 100000; i++) {
            uint32_t a = any_bits(&st) & 0x7fffffffu;
            for (int rule = 0; rule < 2; rule++) {
                int want = mxq_scale_exp(ref, (mx_scale_rule_t)rule, a);
                int got = mxc_scale_exp(&cf, (mx_scale_rule_t)rule, a);
                if (want != got)
                    fail_msg("format %d rule %d amax %08x: expected %d got %d", f, rule, a, want, got);
            }
        }
    }
}

static void element_rounding_matches_src_mx_in_every_mode(void **state)
{
    (void)state;
    uint64_t st = 3;
    for (int f = 0; f < 7; f++) {
        const mxc_fmt_t rf = mxq_fmt((mx_format_t)f), *ref = &rf;
        mxc_fmt_t cf = mxc_fmt((mx_format_t)f);
        for (int i = 0; i < 200000; i++) {
            uint32_t u = any_bits(&st);
            uint64_t r = mix(&st);
            int s = i % 97 == 0 ? MXC_NAN_SCALE : (int)(r % 255) - 127;
            /* scales near the element's own exponent exercise the normal region */
            if (i % 3 == 0 && (u & 0x7f800000u) && (u & 0x7f800000u) != 0x7f800000u) {
                int e = (int)((u >> 23) & 0xff) - 127 - cf.emax + (int)(r % 5) - 2;
                s = e < -127 ? -127 : e > 127 ? 127 : e;
            }
            uint32_t rnd = (uint32_t)(r >> 32);
            for (int mode = 0; mode < 4; mode++) {
                uint32_t want = mxq_elem_ref(ref, (mx_round_t)mode, s, u, rnd);
                uint32_t got = mxc_elem(&cf, (mx_round_t)mode, s, u, rnd);
                if (want != got)
                    fail_msg("format %d mode %d s %d x %08x rnd %08x: expected %08x got %08x", f,
                             mode, s, u, rnd, want, got);
                got = mxc_elem_fast(&cf, (mx_round_t)mode, s, u, rnd); /* the kernels' form */
                if (want != got)
                    fail_msg("fast form: format %d mode %d s %d x %08x rnd %08x: expected %08x "
                             "got %08x", f, mode, s, u, rnd, want, got);
            }
        }
    }
}

static void casts_match_src_mx(void **state)
{
    (void)state;
    uint64_t st = 4;
    for (int i = 0; i < 1000000; i++) {
        uint32_t u = any_bits(&st), wb, wh;
        mxq_cast_bf16(&u, &wb, 1);
        mxq_cast_fp16(&u, &wh, 1);
        if (wb != mxc_cast_bf16(u) || wh != mxc_cast_fp16(u))
            fail_msg("cast of %08x: bf16 expected %08x got %08x, fp16 expected %08x got %08x", u,
                     wb, mxc_cast_bf16(u), wh, mxc_cast_fp16(u));
    }
}

static void float_keys_order_like_floats(void **state)
{
    (void)state;
    uint64_t st = 5;
    for (int i = 0; i < 200000; i++) {
        uint32_t a = any_bits(&st), b = any_bits(&st);
        float fa = hd_u2f(a), fb = hd_u2f(b);
        if (isnan(fa) || isnan(fb))
            continue;
        assert_int_equal(hd_f2u(hd_unfkey(hd_fkey(fa))), a);
        if (fa < fb)
            assert_true(hd_fkey(fa) < hd_fkey(fb));
        if (fa > fb)
            assert_true(hd_fkey(fa) > hd_fkey(fb));
    }
}

/* The kernels' algorithm, serially: scales per block (mxc_block_span), then every
 * element with its block's scale (mxc_block_of) and the word of its index. */
static void replay(const float *in, float *out, size_t rows, size_t cols, mx_axis_t axis,
                   const mx_spec_t *sp, uint64_t seed, uint64_t stream)
{
    mxc_fmt_t f = mxc_fmt(sp->format);
    size_t nb = mxc_nblocks(rows, cols, axis, sp->block);
    int *sexp = (int *)malloc(nb * sizeof *sexp);
    const uint32_t *u = (const uint32_t *)(const void *)in;
    for (size_t b = 0; b < nb; b++) {
        size_t start, len, stride;
        mxc_block_span(b, rows, cols, axis, sp->block, &start, &len, &stride);
        uint32_t m = 0;
        for (size_t i = 0; i < len; i++) {
            uint32_t a = u[start + i * stride] & 0x7fffffffu;
            m = a > m ? a : m;
        }
        sexp[b] = mxc_scale_exp(&f, sp->scale, m);
    }
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) {
            size_t i = r * cols + c;
            uint32_t rnd = sp->round == MX_ROUND_STOCHASTIC ? philox_u32(seed, stream, i) : 0;
            uint32_t v = mxc_elem(&f, sp->round, sexp[mxc_block_of(r, c, cols, axis, sp->block)],
                                  u[i], rnd);
            memcpy(&out[i], &v, 4);
        }
    free(sexp);
}

static void kernel_layout_replays_mx_fake_quant_on_both_axes(void **state)
{
    (void)state;
    uint64_t st = 6;
    const int shapes[][2] = {{1, 37}, {5, 64}, {7, 45}, {33, 9}, {64, 96}, {3, 200}};
    const int blocks[] = {1, 8, 16, 32, 7, 100};
    int cases = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        size_t rows = (size_t)shapes[si][0], cols = (size_t)shapes[si][1], n = rows * cols;
        float *in = (float *)malloc(n * 4), *want = (float *)malloc(n * 4), *got = (float *)malloc(n * 4);
        for (size_t i = 0; i < n; i++) {
            uint64_t r = mix(&st);
            float v = (float)((double)(int64_t)r / 9.2e18) * ldexpf(1.0f, (int)(r % 40) - 20);
            in[i] = i % 29 == 3 ? 0.0f : v;
        }
        for (int f = 0; f < 7; f++)
            for (size_t bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++)
                for (int mode = 0; mode < 4; mode++)
                    for (int axis = 0; axis < 2; axis++) {
                        mx_spec_t sp = {(mx_format_t)f, blocks[bi], (mx_round_t)mode,
                                        (mx_scale_rule_t)((f + mode) % 2)};
                        mx_fake_quant(in, want, rows, cols, axis ? MX_AXIS_COL : MX_AXIS_ROW, &sp,
                                      11, 22);
                        replay(in, got, rows, cols, axis ? MX_AXIS_COL : MX_AXIS_ROW, &sp, 11, 22);
                        for (size_t i = 0; i < n; i++)
                            if (test_f32_bits(got[i]) != test_f32_bits(want[i]))
                                fail_msg("%zux%zu format %d block %d mode %d axis %d: [%zu] of %a "
                                         "expected %a got %a", rows, cols, f, blocks[bi], mode, axis,
                                         i, in[i], want[i], got[i]);
                        cases++;
                    }
        free(in);
        free(want);
        free(got);
    }
    assert_int_equal(cases, 6 * 7 * 6 * 4 * 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(philox_words_match_util_rng),
        cmocka_unit_test(scale_rule_matches_src_mx),
        cmocka_unit_test(element_rounding_matches_src_mx_in_every_mode),
        cmocka_unit_test(casts_match_src_mx),
        cmocka_unit_test(float_keys_order_like_floats),
        cmocka_unit_test(kernel_layout_replays_mx_fake_quant_on_both_axes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
