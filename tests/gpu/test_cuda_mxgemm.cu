/* Tests for src/backend/cuda_mxgemm.cuh on the host (no GPU needed): the arithmetic and
 * index maps the MX GEMM kernels run, instantiated for the CPU.
 *   - re-encoding: every MX element of every format, rounding mode and scale rule becomes
 *     a tensor-core byte (E4M3 / E5M2 / int8) whose value times the block's multiplier is
 *     exactly mx_fake_quant's value; for E4M3, E5M2, int8 and int4 the byte is also
 *     src/mx's packed code (mx_pack's layout);
 *   - the operand layout: the quantize kernel's per-element steps replayed over whole
 *     matrices (both axes, short blocks, padding, blocks 8..96, stochastic rounding)
 *     rebuild mx_fake_quant bit for bit;
 *   - the fragment maps: ldmatrix's addressing as the kernel computes it delivers, lane by
 *     lane, the bytes the PTX ISA's m16n8k32 / m16n8k16 fragments hold, and the masks for
 *     blocks of 8 split a k16 MMA exactly into its two blocks;
 *   - the fold to cuBLASLt's 128-element blocks: every E4M3 byte at every shift 0..40
 *     folds exactly when (and only when) its value times 2^-d is an E4M3 value, and every
 *     element of E2M1 / E3M2 / E2M3 folds at every shift up to mxg_fold_dmax (8 / 5 / 6),
 *     one more failing for some element. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "mx/mx.h"
#include "mx/mx_internal.h"
#include "support/testutil.h"
}

#include "backend/cuda_mxgemm.cuh"

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* a float with a random sign, significand and an exponent in [e0, e0 + span) */
static float rand_float(uint64_t *st, int e0, int span)
{
    uint64_t r = mix(st);
    if (r % 16 == 0)
        return (r & 32) ? -0.0f : 0.0f;
    int e = e0 + (int)((r >> 8) % (uint64_t)span);
    uint32_t u = ((uint32_t)(r >> 40) & 0x807fffffu);
    if (e <= -127) /* a float32 subnormal */
        return hd_u2f(u & 0x807fffffu);
    return hd_u2f(u | ((uint32_t)(e + 127) << 23));
}

static double value_of(uint8_t q, int kind, int s, int fb)
{
    return (double)mxg_decode(q, kind) * ldexp(1.0, s - fb);
}

static void encode_gives_fake_quant_values_and_packed_codes(void **state)
{
    (void)state;
    uint64_t st = 7;
    enum { N = 256 };
    float in[N], out[N];
    uint8_t scales[N], codes[N];
    long checked = 0;
    for (int fmt = 0; fmt < 7; fmt++)
        for (int round = 0; round < 4; round++)
            for (int rule = 0; rule < 2; rule++)
                for (int rep = 0; rep < 40; rep++) {
                    /* magnitudes from float32 subnormals to 2^100, a few binades per row */
                    int e0 = -150 + (int)(mix(&st) % 250);
                    int span = 1 + (int)(mix(&st) % 24);
                    for (int i = 0; i < N; i++)
                        in[i] = rand_float(&st, e0, span);
                    mx_spec_t sp = {(mx_format_t)fmt, 32, (mx_round_t)round, (mx_scale_rule_t)rule};
                    mxq_flat(in, out, N, &sp, 11, 22, 0, scales, codes);
                    const int kind = mxg_kind(fmt), fb = mxg_frac_bits(fmt);
                    for (int i = 0; i < N; i++) {
                        const uint8_t sb = scales[i / 32];
                        if (sb == 0xFF)
                            continue;
                        const int s = (int)sb - 127;
                        const uint32_t u = hd_f2u(out[i]);
                        if ((u & 0x7fffffffu) == 0x7f800000u)
                            continue; /* rceil past float32's range (docs/mx.md) */
                        const uint8_t q = mxg_encode(u, s, kind, fb);
                        const double v = value_of(q, kind, s, fb);
                        if (v != (double)out[i] || (kind != MXG_S8 && signbit(v) != signbit(out[i])))
                            fail_msg("format %d round %d rule %d: %a (s %d) -> byte %02x = %a", fmt,
                                     round, rule, (double)out[i], s, q, v);
                        if ((fmt == MX_FP8_E4M3 || fmt == MX_FP8_E5M2 || fmt == MX_INT8 ||
                             fmt == MX_INT4) && q != codes[i] && (q | codes[i]) != 0x80)
                            fail_msg("format %d: byte %02x, mx_pack code %02x (value %a)", fmt, q,
                                     codes[i], (double)out[i]);
                        checked++;
                    }
                }
    assert_true(checked > 400000);
}

static void scale_multipliers_are_exact_powers_of_two(void **state)
{
    (void)state;
    for (int s = -127; s <= 127; s++)
        for (int fb = 0; fb <= 6; fb += 2) {
            float f = hd_u2f(mxg_scale_bits(s, fb));
            assert_true((double)f == ldexp(1.0, s - fb));
        }
    assert_true(isnan(hd_u2f(mxg_scale_bits(MXC_NAN_SCALE, 0))));
    assert_int_equal(mxg_granule(32), 32);
    assert_int_equal(mxg_granule(64), 32);
    assert_int_equal(mxg_granule(48), 16);
    assert_int_equal(mxg_granule(8), 8);
    assert_int_equal(mxg_granule(40), 8);
    assert_int_equal(mxg_granule(12), 0);
    assert_int_equal(mxg_kind(MX_FP4_E2M1), MXG_E4M3);
    assert_int_equal(mxg_kind(MX_FP8_E5M2), MXG_E5M2);
    assert_int_equal(mxg_kind(MX_INT4), MXG_S8);
    assert_int_equal(mxg_kind(MX_BF16), MXG_NONE);
}

/* The quantize kernel's per-element steps (k_mxg_codes), serially: bytes and multipliers
 * of the operand of source `in` (rows, cols) with blocks along `axis`. */
static void host_quantize(const float *in, size_t rows, size_t cols, mx_axis_t axis,
                          const mx_spec_t *sp, uint64_t seed, uint64_t stream, uint8_t **codes,
                          float **sc, size_t *orows, size_t *red, size_t *Kp, size_t *ldsc, int *g)
{
    *orows = axis == MX_AXIS_ROW ? rows : cols;
    *red = axis == MX_AXIS_ROW ? cols : rows;
    const size_t rowsP = mxg_round_up(*orows, MXG_BM);
    *Kp = mxg_round_up(*red, MXG_BK);
    *g = mxg_granule(sp->block);
    *ldsc = *Kp / (size_t)*g;
    *codes = (uint8_t *)calloc(rowsP * *Kp, 1);
    *sc = (float *)calloc(rowsP * *ldsc, sizeof(float));
    const mxc_fmt_t f = mxc_fmt(sp->format);
    const size_t nb = mxc_nblocks(rows, cols, axis, sp->block);
    int *sexp = (int *)malloc(nb * sizeof(int));
    for (size_t b = 0; b < nb; b++) {
        size_t start, len, stride;
        mxc_block_span(b, rows, cols, axis, sp->block, &start, &len, &stride);
        uint32_t m = 0;
        for (size_t i = 0; i < len; i++) {
            uint32_t a = hd_f2u(in[start + i * stride]) & 0x7fffffffu;
            m = a > m ? a : m;
        }
        sexp[b] = mxc_scale_exp(&f, sp->scale, m);
    }
    const int kind = mxg_kind((int)sp->format), fb = mxg_frac_bits((int)sp->format);
    for (size_t o = 0; o < *orows; o++)
        for (size_t kk = 0; kk < *red; kk++) {
            size_t r, c;
            mxg_src_of(o, kk, axis, &r, &c);
            const int s = sexp[mxc_block_of(r, c, cols, axis, sp->block)];
            if (kk % (size_t)*g == 0)
                (*sc)[o * *ldsc + kk / (size_t)*g] = hd_u2f(mxg_scale_bits(s, fb));
            if (s == MXC_NAN_SCALE)
                continue;
            const uint32_t rnd = sp->round == MX_ROUND_STOCHASTIC
                                     ? philox_u32(seed, stream, r * cols + c) : 0;
            const uint32_t v = mxc_elem(&f, sp->round, s, hd_f2u(in[r * cols + c]), rnd);
            (*codes)[o * *Kp + kk] = mxg_encode(v, s, kind, fb);
        }
    free(sexp);
}

static void operand_layout_rebuilds_fake_quant(void **state)
{
    (void)state;
    uint64_t st = 99;
    const int blocks[] = {8, 16, 24, 32, 48, 64, 96};
    for (int it = 0; it < 120; it++) {
        const size_t rows = 1 + mix(&st) % 150, cols = 1 + mix(&st) % 150;
        const mx_axis_t axis = (mx_axis_t)(mix(&st) & 1);
        mx_spec_t sp = {(mx_format_t)(mix(&st) % 7), blocks[mix(&st) % 7],
                        (mx_round_t)(mix(&st) % 4), (mx_scale_rule_t)(mix(&st) % 2)};
        if (!mxg_granule(sp.block))
            continue;
        float *in = (float *)malloc(rows * cols * 4), *ref = (float *)malloc(rows * cols * 4);
        const int e0 = -130 + (int)(mix(&st) % 200);
        for (size_t i = 0; i < rows * cols; i++)
            in[i] = rand_float(&st, e0, 1 + (int)(mix(&st) % 12));
        if (it % 10 == 3)
            in[mix(&st) % (rows * cols)] = NAN;
        mx_fake_quant(in, ref, rows, cols, axis, &sp, 5, 6);
        uint8_t *codes;
        float *sc;
        size_t orows, red, Kp, ldsc;
        int g;
        host_quantize(in, rows, cols, axis, &sp, 5, 6, &codes, &sc, &orows, &red, &Kp, &ldsc, &g);
        const int kind = mxg_kind((int)sp.format);
        for (size_t o = 0; o < mxg_round_up(orows, MXG_BM); o++)
            for (size_t kk = 0; kk < Kp; kk++) {
                const uint8_t q = codes[o * Kp + kk];
                const float m = sc[o * ldsc + kk / (size_t)g];
                if (o >= orows || kk >= red) { /* padding: zero bytes, zero multipliers */
                    assert_int_equal(q, 0);
                    if (kk % (size_t)g == 0 && (o >= orows || kk >= red))
                        assert_true(m == 0.0f);
                    continue;
                }
                size_t r, c;
                mxg_src_of(o, kk, axis, &r, &c);
                const float want = ref[r * cols + c];
                const double got = (double)mxg_decode(q, kind) * (double)m;
                if (isnan(want)) {
                    assert_true(isnan(m) && q == 0);
                    continue;
                }
                if (isinf(want))
                    continue; /* rceil past float32's range */
                if (got != (double)want)
                    fail_msg("format %d block %d round %d axis %d (%zu x %zu) [%zu,%zu]: "
                             "expected %a got %a", (int)sp.format, sp.block, (int)sp.round, axis,
                             rows, cols, r, c, (double)want, got);
            }
        free(codes), free(sc), free(in), free(ref);
    }
}

/* ldmatrix (PTX): lane L (8q <= L < 8q + 8) gives the address of row L - 8q of matrix q;
 * lane l receives in register q the 32-bit word (l & 3) of row (l >> 2) of matrix q. */
static uint8_t ldsm_byte(const uint8_t *smem, void (*addr)(int, int *, int *), int lane, int q,
                         int j)
{
    int row, word, r, c;
    mxg_ldsm_dest(lane, &row, &word);
    addr(8 * q + row, &r, &c);
    return smem[r * MXG_LDS + c + 4 * word + j];
}

static void fragment_maps_match_the_ptx_layouts(void **state)
{
    (void)state;
    uint8_t smem[16 * MXG_LDS];
    for (int i = 0; i < 16 * MXG_LDS; i++)
        smem[i] = (uint8_t)(i * 131 + 7);
    for (int lane = 0; lane < 32; lane++) {
        /* A: 16 rows x 32 bytes at the tile's origin */
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                int row, col;
                mxg_frag_a(lane, i, j, &row, &col);
                assert_int_equal(ldsm_byte(smem, mxg_ldsm_a, lane, i, j), smem[row * MXG_LDS + col]);
            }
        /* B: two n8 tiles (rows n 0-7 and 8-15) x 32 bytes of k */
        for (int tile = 0; tile < 2; tile++)
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 4; j++) {
                    int k, n;
                    mxg_frag_b(lane, i, j, &k, &n);
                    assert_int_equal(ldsm_byte(smem, mxg_ldsm_b, lane, 2 * tile + i, j),
                                     smem[(tile * 8 + n) * MXG_LDS + k]);
                }
    }
    /* the k16 shape is the k32 fragment's halves: registers (2h, 2h+1) of A and h of B
     * hold k in [16h, 16h + 16), a k16 fragment (a0-a3 row g, a4-a7 row g + 8, col 4t + i;
     * b0-b3 k 4t + i) shifted by 16h */
    for (int lane = 0; lane < 32; lane++)
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++) {
                int row, col, k, n;
                const int g = lane >> 2, t = lane & 3;
                mxg_frag_a(lane, 2 * h, j, &row, &col);
                assert_int_equal(row, g);
                assert_int_equal(col, 16 * h + 4 * t + j);
                mxg_frag_a(lane, 2 * h + 1, j, &row, &col);
                assert_int_equal(row, g + 8);
                assert_int_equal(col, 16 * h + 4 * t + j);
                mxg_frag_b(lane, h, j, &k, &n);
                assert_int_equal(k, 16 * h + 4 * t + j);
                assert_int_equal(n, g);
            }
    /* blocks of 8: the kept lanes of block q hold exactly k in [8q, 8q + 8) of the k16 half,
     * for both rows of every group */
    for (int q = 0; q < 2; q++) {
        int seen[16][16] = {{0}};
        for (int lane = 0; lane < 32; lane++) {
            if (!mxg_k8_keep(lane, q))
                continue;
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 4; j++) {
                    int row, col;
                    mxg_frag_a(lane, i, j, &row, &col);
                    assert_true(col >= 8 * q && col < 8 * q + 8);
                    seen[row][col]++;
                }
        }
        for (int row = 0; row < 16; row++)
            for (int col = 8 * q; col < 8 * q + 8; col++)
                assert_int_equal(seen[row][col], 1);
    }
    /* the accumulators tile the 16 x 8 output once */
    int cover[16][8] = {{0}};
    for (int lane = 0; lane < 32; lane++)
        for (int r = 0; r < 4; r++) {
            int row, col;
            mxg_frag_c(lane, r, &row, &col);
            cover[row][col]++;
        }
    for (int row = 0; row < 16; row++)
        for (int col = 0; col < 8; col++)
            assert_int_equal(cover[row][col], 1);
    /* ldmatrix rows of a stage land in 8 distinct 16-byte bank groups (no conflicts) */
    for (int q = 0; q < 4; q++) {
        int used = 0;
        for (int i = 0; i < 8; i++) {
            int r, c;
            mxg_ldsm_a(8 * q + i, &r, &c);
            used |= 1 << (((r * MXG_LDS + c) / 16) % 8);
        }
        assert_int_equal(used, 0xff);
    }
}


/* ---- the fold ---------------------------------------------------------------------------- */

/* is v (>= 0) an E4M3 magnitude: a multiple of 2^-9, at most 448, at most 4 significant
 * bits (3 trailing) */
static bool is_e4m3(double v)
{
    for (int q = 0; q < 0x7f; q++)
        if (mxg_decode((uint8_t)q, MXG_E4M3) == v)
            return true;
    return false;
}

static void fold_is_exact_and_its_bounds_hold(void **state)
{
    long folded = 0;
    for (int q = 0; q < 256; q++) {
        if ((q & 0x7f) == 0x7f)
            continue; /* NaN: never folded (a NaN block's bytes are 0) */
        const double v = mxg_decode((uint8_t)q, MXG_E4M3);
        for (int d = 0; d <= 40; d++) {
            uint8_t o = 0xff;
            const bool ok = mxg_fold_byte((uint8_t)q, d, &o);
            const double want = v * ldexp(1.0, -d);
            if (ok != is_e4m3(fabs(want)))
                fail_msg("byte 0x%02x shift %d: fold says %d", q, d, (int)ok);
            if (ok) {
                folded++;
                if (mxg_decode(o, MXG_E4M3) != want || (o & 0x80) != (q & 0x80))
                    fail_msg("byte 0x%02x shift %d: %g, want %g", q, d,
                             (double)mxg_decode(o, MXG_E4M3), want);
            }
        }
    }
    assert_true(folded > 1000);
    /* every element of the FP4/FP6 formats, as the E4M3 byte mxg_encode gives it */
    const int fmts[] = {MX_FP4_E2M1, MX_FP6_E3M2, MX_FP6_E2M3}, dmax[] = {8, 5, 6};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(mxg_fold_dmax(fmts[i]), dmax[i]);
        const mxc_fmt_t f = mxc_fmt((mx_format_t)fmts[i]);
        bool fails_above = false;
        for (int e = f.emin - f.m; e <= f.emax; e++) /* quantum exponents */
            for (int k = 1; k < 16; k++) {
                const double y = k * ldexp(1.0, e);
                if (y > f.max)
                    continue;
                /* on the format's grid: the quantum at y's binade divides it */
                const int be = (int)floor(log2(y));
                const int qe = (be > f.emin ? be : f.emin) - f.m;
                if (fmod(y, ldexp(1.0, qe)) != 0)
                    continue;
                uint32_t u;
                float yf = (float)y;
                memcpy(&u, &yf, 4);
                const uint8_t b = mxg_encode(u, 0, MXG_E4M3, 0);
                uint8_t o;
                for (int d = 0; d <= dmax[i]; d++)
                    if (!mxg_fold_byte(b, d, &o))
                        fail_msg("format %d element %g fails at shift %d <= %d", fmts[i], y, d,
                                 dmax[i]);
                fails_above = fails_above || !mxg_fold_byte(b, dmax[i] + 1, &o);
            }
        assert_true(fails_above); /* the bound is tight */
    }
    assert_int_equal(mxg_fold_dmax(MX_FP8_E5M2), -1);
    assert_int_equal(mxg_pow2_exp(mxg_pow2_bits(-127)), -127);
    assert_int_equal(mxg_pow2_exp(mxg_pow2_bits(127)), 127);
    assert_int_equal(mxg_pow2_exp(mxg_pow2_bits(-3)), -3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encode_gives_fake_quant_values_and_packed_codes),
        cmocka_unit_test(scale_multipliers_are_exact_powers_of_two),
        cmocka_unit_test(operand_layout_rebuilds_fake_quant),
        cmocka_unit_test(fragment_maps_match_the_ptx_layouts),
        cmocka_unit_test(fold_is_exact_and_its_bounds_hold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
