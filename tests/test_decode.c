/* Tests of the decoding path that need no GPU:
 *  - src/backend/dec_layout.h, the arithmetic the CUDA decode kernels share with the CPU,
 *    against src/mx: reading codes out of packed bytes, their exact values, the code of a
 *    fake-quantized value (what the GPU's packing writes), and the bf16 operand pairs the
 *    GEMV decodes in registers (bit for bit the emulated path's operand), for every MX
 *    format and blocks 8, 16, 32, every rounding and scale rule, scales from tiny to huge;
 *  - the CPU backend's decoding ops: the packed decode copy's values bit for bit
 *    mx_fake_quant's, be_dec_linear bit for bit be_rmsnorm_fwd + be_linear_fwd + the
 *    epilogue (and within float32 summation of a double-precision fake quant + matmul),
 *    be_dec_attn bit for bit be_rope + the cache copies + be_attn_fwd, be_dec_sample against
 *    be_sample_tokens and be_logsoftmax_gather with its bookkeeping. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/dec_layout.h"
#include "mx/mx.h"
#include "mx/mx_pack.h"
#include "support/testutil.h"
#include "util/rng.h"

static const mx_format_t FMTS[] = {MX_FP8_E4M3, MX_FP8_E5M2, MX_FP6_E3M2, MX_FP6_E2M3,
                                   MX_FP4_E2M1, MX_INT8,     MX_INT4};
enum { NFMT = sizeof FMTS / sizeof FMTS[0] };

static uint32_t bits(float f) { return test_f32_bits(f); }

/* rows x cols of weight-like values: normal with a per-row spread of magnitudes, some
 * exact zeros and negative zeros, and rows scaled to the edges of the scale range */
static void weights(float *w, size_t rows, size_t cols, uint64_t stream)
{
    for (size_t r = 0; r < rows; r++) {
        /* rows 0-3 ordinary, then tiny (scales near 2^-127), then huge (near 2^127) */
        float k = r % 8 < 4 ? 0.02f : r % 8 == 4 ? 0x1p-120f : r % 8 == 5 ? 0x1p-100f
                  : r % 8 == 6 ? 0x1p100f : 0x1p-132f;
        for (size_t c = 0; c < cols; c++) {
            size_t i = r * cols + c;
            float v = (float)rng_normal(7, stream, i) * k;
            if (rng_u32(7, stream + 1, i) % 17 == 0)
                v = (rng_u32(7, stream + 2, i) & 1) ? -0.0f : 0.0f;
            w[i] = v;
        }
    }
}

/* ---- dec_layout: codes, values, encoding ------------------------------------------------- */

static void codes_are_read_as_mx_pack_reads_them(void **state)
{
    for (int k = 0; k < NFMT; k++) {
        const size_t n = 200;
        float x[200];
        weights(x, 1, n, 11);
        mx_spec_t s = {FMTS[k], 8, MX_ROUND_EVEN, MX_SCALE_FLOOR};
        uint8_t el[256], sc[32];
        err_t e = ERR_INIT;
        assert_int_equal(mx_pack_encode(x, 1, n, MX_AXIS_ROW, &s, 0, 0, 1, el, sc, &e), ERR_OK);
        assert_int_equal(dl_code_bytes((int)FMTS[k], n), mx_pack_elem_bytes(FMTS[k], n));
        for (size_t i = 0; i < n; i++)
            if (dl_code((int)FMTS[k], el, i) != mx_pack_get(FMTS[k], el, i))
                fail_msg("%s code %zu: %u, mx_pack_get %u", mx_format_name(FMTS[k]), i,
                         dl_code((int)FMTS[k], el, i), mx_pack_get(FMTS[k], el, i));
    }
}

static void values_are_mx_pack_decode(void **state)
{
    const uint32_t sbs[] = {0, 1, 2, 9, 20, 100, 120, 126, 127, 128, 134, 142, 200, 250, 254, 255};
    for (int k = 0; k < NFMT; k++) {
        const mx_format_t f = FMTS[k];
        const int ncodes = f == MX_INT4 ? 256 : 1 << mx_format_info(f)->bits;
        for (size_t si = 0; si < sizeof sbs / sizeof sbs[0]; si++)
            for (int cd = 0; cd < ncodes; cd++) {
                float want = mx_elem_decode(f, (uint8_t)cd) * mx_e8m0_decode((uint8_t)sbs[si]);
                if (sbs[si] == 0xFF)
                    want = mx_e8m0_decode(0xFF);
                uint32_t got = dl_value((int)f, (uint32_t)cd, sbs[si]);
                if (got != bits(want) && !(isnan(want) && isnan(hd_u2f(got))))
                    fail_msg("%s code 0x%02x scale %u: 0x%08x, mx_pack 0x%08x", mx_format_name(f),
                             cd, sbs[si], got, bits(want));
            }
    }
}

static void codes_of_fake_quant_values_are_mx_pack_encode(void **state)
{
    const int blocks[] = {8, 16, 32, 5};
    const size_t rows = 16, cols = 96;
    float *w = malloc(sizeof(float) * rows * cols), *q = malloc(sizeof(float) * rows * cols);
    uint8_t *el = malloc(rows * cols), *sc = malloc(rows * cols);
    long n = 0;
    for (int k = 0; k < NFMT; k++)
        for (size_t bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++)
            for (int r = 0; r < MX_ROUND_COUNT; r++)
                for (int sr = 0; sr < MX_SCALE_COUNT; sr++) {
                    mx_spec_t s = {FMTS[k], blocks[bi], (mx_round_t)r, (mx_scale_rule_t)sr};
                    weights(w, rows, cols, 100 + (uint64_t)k);
                    w[3] = INFINITY; /* a NaN-scale block */
                    err_t e = ERR_INIT;
                    mx_fake_quant(w, q, rows, cols, MX_AXIS_ROW, &s, 5, 9);
                    assert_int_equal(mx_pack_encode(w, rows, cols, MX_AXIS_ROW, &s, 5, 9, 1, el, sc,
                                                    &e), ERR_OK);
                    const size_t nb = (cols + (size_t)s.block - 1) / (size_t)s.block;
                    for (size_t i = 0; i < rows * cols; i++) {
                        const uint8_t sb = sc[i / cols * nb + i % cols / (size_t)s.block];
                        const uint32_t want = mx_pack_get(FMTS[k], el, i);
                        const uint32_t got = sb == 0xFF ? 0 : dl_encode((int)FMTS[k], bits(q[i]), sb - 127);
                        if (got != want)
                            fail_msg("%s/%d round %d scale %d element %zu (%g): code 0x%02x, "
                                     "mx_pack 0x%02x", mx_format_name(FMTS[k]), s.block, r, sr, i,
                                     q[i], got, want);
                        n++;
                    }
                }
    assert_true(n > 100000);
    free(w), free(q), free(el), free(sc);
}

/* ---- dec_layout: the GEMV's operand pairs ------------------------------------------------- */

/* the stored bytes of codes [i0, i0 + 8) as dl_decode8 takes them */
static void raw_of(int f, const uint8_t *el, size_t i0, uint32_t raw[4])
{
    unsigned char b[16] = {0};
    memcpy(b, el + i0 * (size_t)dl_fmt(f).sbits / 8, (size_t)dl_fmt(f).sbits);
    memcpy(raw, b, 16);
}

/* the bf16 operand the emulated path multiplies: the fake-quantized value's top 16 bits
 * (for int formats a zero's sign is not kept by the packed form: both count as +0) */
static uint32_t want16(float q, bool is_int)
{
    uint32_t u = bits(q);
    if (is_int && (u & 0x7fffffffu) == 0)
        u = 0;
    return u >> 16;
}

static void decoded_pairs_are_the_emulated_bf16_operand(void **state)
{
    const int blocks[] = {8, 16, 32};
    const size_t rows = 64, cols = 256;
    float *w = malloc(sizeof(float) * rows * cols), *q = malloc(sizeof(float) * rows * cols);
    uint8_t *el = malloc(rows * cols + 16), *sc = malloc(rows * cols);
    for (int k = 0; k < NFMT; k++) {
        const int f = (int)FMTS[k];
        const bool is_int = dl_fmt(f).is_int;
        long fast = 0, slow = 0;
        for (size_t bi = 0; bi < 3; bi++)
            for (int sr = 0; sr < MX_SCALE_COUNT; sr++) {
                mx_spec_t s = {FMTS[k], blocks[bi], MX_ROUND_EVEN, (mx_scale_rule_t)sr};
                weights(w, rows, cols, 200 + (uint64_t)k);
                w[cols + 9] = NAN;
                err_t e = ERR_INIT;
                mx_fake_quant(w, q, rows, cols, MX_AXIS_ROW, &s, 0, 0);
                memset(el, 0, rows * cols + 16);
                assert_int_equal(mx_pack_encode(w, rows, cols, MX_AXIS_ROW, &s, 0, 0, 1, el, sc, &e),
                                 ERR_OK);
                const size_t nb = cols / (size_t)s.block;
                for (size_t i0 = 0; i0 < rows * cols; i0 += 8) {
                    const uint32_t sb = sc[i0 / cols * nb + i0 % cols / (size_t)s.block];
                    uint32_t raw[4], r[4];
                    raw_of(f, el, i0, raw);
                    const int p = dl_pairing(f);
                    const size_t row = i0 / cols;
                    const bool nan_block = row == 1 && i0 % cols / (size_t)s.block == 9 / (size_t)s.block;
                    const bool ordinary = row % 8 < 4 && !nan_block;
                    if (dl_decode8(f, raw, sb, r)) {
                        fast++;
                        for (int slot = 0; slot < 8; slot++) {
                            const uint32_t got = (r[slot >> 1] >> (16 * (slot & 1))) & 0xffffu;
                            const size_t i = i0 + (size_t)dl_slot(p, slot);
                            if (got != want16(q[i], is_int))
                                fail_msg("%s/%d rule %d element %zu (%g, scale byte %u): bf16 0x%04x, "
                                         "emulated 0x%04x", mx_format_name(FMTS[k]), s.block, sr, i,
                                         q[i], sb, got, want16(q[i], is_int));
                        }
                    } else {
                        slow++;
                        if (ordinary)
                            fail_msg("%s/%d: chunk %zu of an ordinary row (scale byte %u) was not "
                                     "decoded on the fast path", mx_format_name(FMTS[k]), s.block,
                                     i0 / 8, sb);
                        for (size_t j = 0; j < 8; j++) {
                            const uint32_t v = dl_value(f, dl_code(f, el, i0 + j), sb);
                            if (!isnan(q[i0 + j]) && (v >> 16) != want16(q[i0 + j], is_int))
                                fail_msg("%s/%d element %zu (%g): exact path 0x%04x, emulated 0x%04x",
                                         mx_format_name(FMTS[k]), s.block, i0 + j, q[i0 + j], v >> 16,
                                         want16(q[i0 + j], is_int));
                            if (isnan(q[i0 + j]) && !isnan(hd_u2f(v)))
                                fail_msg("%s element %zu: a NaN block decodes to %g",
                                         mx_format_name(FMTS[k]), i0 + j, hd_u2f(v));
                        }
                    }
                }
            }
        /* ordinary weights take the fast path (above); the tiny, huge and NaN blocks the
         * exact one, which must have been tried too */
        if (fast == 0 || slow == 0)
            fail_msg("%s: %ld chunks decoded fast, %ld exactly", mx_format_name(FMTS[k]), fast, slow);
    }
    free(w), free(q), free(el), free(sc);
}

static void bf16_weights_pass_through(void **state)
{
    const uint32_t raw[4] = {0x3f80c000u, 0x00018000u, 0x7f7fff80u, 0x12345678u};
    uint32_t r[4];
    assert_int_equal(dl_decode8(DL_BF16, raw, 0, r), 1);
    assert_memory_equal(r, raw, sizeof r);
}

static void operand_slots_are_a_permutation_the_fragments_agree_on(void **state)
{
    for (int p = DL_PAIR_ADJ; p <= DL_PAIR_FOUR; p++) {
        int seen[DL_UNIT] = {0};
        for (int l = 0; l < DL_UNIT; l++) {
            const int pos = dl_xpos(p, l);
            assert_true(pos >= 0 && pos < DL_UNIT);
            seen[pos]++;
        }
        for (int i = 0; i < DL_UNIT; i++)
            assert_int_equal(seen[i], 1);
        for (int slot = 0; slot < 8; slot++)
            assert_int_equal(dl_slot_of(p, dl_slot(p, slot)), slot);
        /* thread t at mma step st reads slots st*16 + 4t + (0..3): the elements its weight
         * registers for that step hold (chunk st/2, slots 4(st%2) .. 4(st%2)+3) */
        for (int t = 0; t < 4; t++)
            for (int st = 0; st < 8; st++)
                for (int q = 0; q < 4; q++) {
                    const int l = 32 * t + 8 * (st / 2) + dl_slot(p, 4 * (st % 2) + q);
                    assert_int_equal(dl_xpos(p, l), st * 16 + 4 * t + q);
                }
    }
    /* the pairings decode8 produces */
    assert_int_equal(dl_pairing(DL_E2M1), DL_PAIR_FOUR);
    assert_int_equal(dl_pairing(DL_E4M3), DL_PAIR_TWO);
    assert_int_equal(dl_pairing(DL_E5M2), DL_PAIR_TWO);
    assert_int_equal(dl_pairing(DL_E3M2), DL_PAIR_ADJ);
    assert_int_equal(dl_pairing(DL_BF16), DL_PAIR_ADJ);
}

/* One warp's unit of the decode GEMV emulated on the CPU: each of the 32 threads (g, t)
 * reads its two rows' spans as the kernel does (the packed bytes at element 32t of rows g
 * and g + 8), dl_chunk_raw + dl_decode8 give its A registers for mma steps 2j and 2j + 1,
 * its B registers are the 8 bytes at st * 16 + 4t of activation row g (laid out by
 * dl_xpos); the registers are put in place by the PTX fragment layout of mma.m16n8k16
 * (.bf16) and multiplied. Over the unit's eight steps that must give every dot product of
 * a weight row and an activation row over the unit's 128 elements: the kernel's index
 * arithmetic (spans, chunks, pairing, fragment registers, operand slots) in one check. */
static double bf(uint32_t h) { return (double)hd_u2f((h & 0xffffu) << 16); }

static void warp_unit_gives_the_dot_products(void **state)
{
    enum { R = 16, C8 = 8, K = DL_UNIT };
    const int fmts[] = {DL_E4M3, DL_E5M2, DL_E3M2, DL_E2M3, DL_E2M1, DL_INT8, DL_INT4, DL_BF16};
    const int blocks[] = {32, 8};
    for (size_t fi = 0; fi < sizeof fmts / sizeof fmts[0]; fi++)
        for (int bi = 0; bi < 2; bi++) {
            const int f = fmts[fi], p = dl_pairing(f), block = blocks[bi], nb = K / block;
            float w[R * K], q[R * K], x[C8 * K];
            uint8_t el[R * K * 2], sc[R * K];
            for (int i = 0; i < R * K; i++)
                w[i] = (float)rng_normal(8, 900 + (uint64_t)fi, (uint64_t)i) * 0.03f;
            for (int i = 0; i < C8 * K; i++)
                x[i] = (float)rng_normal(8, 950, (uint64_t)i);
            if (f == DL_BF16) {
                for (int i = 0; i < R * K; i++) {
                    const uint16_t h = (uint16_t)(bits(w[i]) >> 16);
                    memcpy(el + 2 * i, &h, 2);
                    q[i] = hd_u2f((uint32_t)h << 16);
                }
            } else {
                mx_spec_t s = {(mx_format_t)f, block, MX_ROUND_EVEN, MX_SCALE_FLOOR};
                err_t e = ERR_INIT;
                assert_int_equal(mx_pack_encode(w, R, K, MX_AXIS_ROW, &s, 0, 0, 1, el, sc, &e), 0);
                mx_fake_quant(w, q, R, K, MX_AXIS_ROW, &s, 0, 0);
            }
            /* the activation operand in shared memory: bf16 of x in dl_xpos's slots */
            uint16_t xs[C8][K];
            for (int c = 0; c < C8; c++)
                for (int k = 0; k < K; k++)
                    xs[c][dl_xpos(p, k)] = (uint16_t)(bits(x[c * K + k]) >> 16);
            double acc[R][C8] = {{0}};
            for (int st = 0; st < 8; st++) {
                const int j = st / 2, hh = st % 2;
                double A[16][16] = {{0}}, B[16][8] = {{0}};
                for (int lane = 0; lane < 32; lane++) {
                    const int g = lane >> 2, t = lane & 3;
                    uint32_t a[2][4];
                    for (int h = 0; h < 2; h++) {
                        const int r = g + 8 * h;
                        uint32_t words[16] = {0}, raw[4];
                        memcpy(words, el + (size_t)(r * K + 32 * t) * (size_t)dl_fmt(f).sbits / 8,
                               (size_t)dl_span_words(f) * 4);
                        dl_chunk_raw(f, words, j, raw);
                        const uint32_t sb = f == DL_BF16 ? 0 : sc[r * nb + (32 * t + 8 * j) / block];
                        assert_int_equal(dl_decode8(f, raw, sb, a[h]), 1);
                    }
                    /* A: reg0 (row g, k 2t, 2t+1), reg1 (row g+8), reg2 (row g, k 2t+8, 2t+9),
                     * reg3 (row g+8, k 2t+8, 2t+9) = ag[2hh], ah[2hh], ag[2hh+1], ah[2hh+1] */
                    const uint32_t regs[4] = {a[0][2 * hh], a[1][2 * hh], a[0][2 * hh + 1], a[1][2 * hh + 1]};
                    const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
                    for (int i = 0; i < 4; i++) {
                        A[rows[i]][cols[i]] = bf(regs[i]);
                        A[rows[i]][cols[i] + 1] = bf(regs[i] >> 16);
                    }
                    /* B: the 8 bytes at st * 16 + 4t of row g: (k 2t, 2t+1) and (k 2t+8, 2t+9) */
                    const uint16_t *b = &xs[g][st * 16 + 4 * t];
                    B[2 * t][g] = bf(b[0]), B[2 * t + 1][g] = bf(b[1]);
                    B[2 * t + 8][g] = bf(b[2]), B[2 * t + 9][g] = bf(b[3]);
                }
                for (int r = 0; r < 16; r++)
                    for (int c = 0; c < 8; c++)
                        for (int k = 0; k < 16; k++)
                            acc[r][c] += A[r][k] * B[k][c];
            }
            for (int r = 0; r < R; r++)
                for (int c = 0; c < C8; c++) {
                    double want = 0, mag = 0;
                    for (int k = 0; k < K; k++) {
                        uint32_t wb = bits(q[r * K + k]) & 0xffff0000u;
                        const double v = (double)hd_u2f(wb) * bf(bits(x[c * K + k]) >> 16);
                        want += v;
                        mag += fabs(v);
                    }
                    if (fabs(acc[r][c] - want) > 1e-12 * mag)
                        fail_msg("format %d block %d: row %d column %d: warp %.15g, dot product %.15g",
                                 f, block, r, c, acc[r][c], want);
                }
        }
}

/* Every plan dl_plan_make gives covers K with whole units and whole input blocks, fits the
 * shared memory, and splits the small layers of the Qwen2.5-0.5B shape over more than a
 * handful of CTAs while the large ones keep whole rows. */
static void plans_cover_k_and_fit(void **state)
{
    (void)state;
    const int Ks[] = {64, 96, 896, 4864, 1000 * 32};
    const int xblocks[] = {0, 16, 32, 64, 256};
    for (int ki = 0; ki < 5; ki++)
        for (int xi = 0; xi < 5; xi++)
            for (int M = 1; M <= 64; M *= 2)
                for (int sw = 0; sw < 2; sw++) {
                    const int K = Ks[ki], N[3] = {sw ? 4864 : 896, sw ? 4864 : 128, 128};
                    const int smem_max = 227 * 1024 - 2048;
                    dl_plan_t p = dl_plan_make(M, K, N, sw ? 2 : 3, sw, xblocks[xi], 132, M > 16 ? 1 : 2,
                                               2, 0.53, DL_XCOST_US, smem_max, 228 * 1024);
                    if (!p.RT)
                        continue; /* nothing fits: the caller composes the op */
                    assert_true(p.RT == 1 || p.RT == 2 || p.RT == 4 || p.RT == 8);
                    assert_true(!sw || p.RT >= 2);
                    assert_int_equal(p.NT, M <= 8 ? 1 : M <= 16 ? 2 : M <= 32 ? 4 : 8);
                    assert_int_equal(p.KR % DL_UNIT, 0);
                    if (p.S > 1 && xblocks[xi] > DL_UNIT) /* splits end on whole input blocks */
                        assert_int_equal(p.KR % xblocks[xi], 0);
                    assert_true((long)p.S * p.KR >= K && (long)(p.S - 1) * p.KR < K);
                    assert_true(p.smem <= smem_max);
                    assert_int_equal(p.smem, dl_smem(p.NT, p.RT, p.KR));
                    assert_int_equal(p.groups, dl_groups(N, sw ? 2 : 3, sw, p.RT));
                }
    /* Qwen2.5-0.5B at batch 8, bf16 weights (2 bytes, 1 unit a batch): o_proj is split over
     * more than 40 tiles, lm_head needs no split */
    const int o[1] = {896}, lm[1] = {151936};
    dl_plan_t p = dl_plan_make(8, 896, o, 1, 0, 0, 132, 2, 1, 2.0, DL_XCOST_US, 227 * 1024 - 2048,
                               228 * 1024);
    assert_true(p.groups * p.S > 40);
    p = dl_plan_make(8, 896, lm, 1, 0, 0, 132, 2, 1, 2.0, DL_XCOST_US, 227 * 1024 - 2048,
                     228 * 1024);
    assert_int_equal(p.S, 1);
    assert_true(p.groups * p.S > 132);
}

/* ---- the CPU backend's decoding ops -------------------------------------------------------- */

static backend_t *be;

static be_ptr_t dev(const void *host, size_t bytes)
{
    err_t e = ERR_INIT;
    be_buf_t *b = be_alloc(be, bytes + 16, &e);
    assert_non_null(b);
    if (host)
        be_upload(be, be_ptr(b, 0), host, bytes);
    else
        be_zero(be, be_ptr(b, 0), bytes);
    return be_ptr(b, 0);
}
static void get(void *host, be_ptr_t p, size_t bytes) { be_download(be, host, p, bytes); }
static void release(be_ptr_t p) { be_free(be, p.buf); }

static void sync_ok(void)
{
    err_t e = ERR_INIT;
    if (be_sync(be, &e))
        fail_msg("%s", e.msg);
}

static void same(const char *what, const float *want, const float *got, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (bits(want[i]) != bits(got[i]))
            fail_msg("%s[%zu]: want %.9g (0x%08x), got %.9g (0x%08x)", what, i, want[i],
                     bits(want[i]), got[i], bits(got[i]));
}

static be_linear_t linear_of(be_ptr_t w, be_ptr_t b, int N, int K, const char *wspec,
                             const char *xspec, prec_compute_t ct, be_wcache_t *wc)
{
    be_linear_t l;
    memset(&l, 0, sizeof l);
    err_t e = ERR_INIT;
    for (int o = 0; o < PREC_OPERAND_COUNT; o++)
        l.spec[o] = mx_spec_default(MX_FP32);
    if (mx_spec_parse(wspec, &l.spec[PREC_OP_WEIGHT], &e) || mx_spec_parse(xspec, &l.spec[PREC_OP_INPUT], &e))
        fail_msg("%s", e.msg);
    l.w = w, l.b = b, l.N = N, l.K = K, l.compute = ct, l.wcache = wc, l.wversion = 3;
    l.seed = 17, l.stream = 1000;
    return l;
}

static void packed_decode_copy_is_fake_quant(void **state)
{
    const int blocks[] = {8, 16, 32};
    const int N = 24, K = 96;
    float *w = malloc(sizeof(float) * N * K), *q = malloc(sizeof(float) * N * K),
          *got = malloc(sizeof(float) * N * K);
    weights(w, N, K, 300);
    be_ptr_t dw = dev(w, sizeof(float) * N * K), dout = dev(NULL, sizeof(float) * N * K);
    err_t e = ERR_INIT;
    for (int k = 0; k < NFMT; k++)
        for (int bi = 0; bi < 3; bi++)
            for (int r = 0; r < MX_ROUND_COUNT; r++) {
                char spec[64];
                snprintf(spec, sizeof spec, "%s/%d/%s", mx_format_name(FMTS[k]), blocks[bi],
                         mx_round_name((mx_round_t)r));
                be_wcache_t *wc = be_wcache_new(be, &e);
                be_linear_t l = linear_of(dw, BE_NULL, N, K, spec, "bf16", PREC_COMPUTE_FP32, wc);
                be_dec_weight(be, &l, dout);
                get(got, dout, sizeof(float) * N * K);
                sync_ok();
                mx_fake_quant(w, q, N, K, MX_AXIS_ROW, &l.spec[PREC_OP_WEIGHT], l.seed,
                              l.stream + PREC_OP_WEIGHT);
                for (size_t i = 0; i < (size_t)N * K; i++) {
                    uint32_t a = bits(q[i]), b = bits(got[i]);
                    if (mx_format_info(FMTS[k])->is_int && !(a & 0x7fffffffu))
                        a = 0; /* the packed form has no -0 for ints (mx_pack.h) */
                    if (a != b)
                        fail_msg("%s element %zu: decode copy %.9g, fake quant %.9g", spec, i,
                                 got[i], q[i]);
                }
                /* the cache holds the packed bytes */
                size_t sr, sc;
                mx_pack_scale_shape(N, K, MX_AXIS_ROW, blocks[bi], &sr, &sc);
                assert_true(be_wcache_bytes(be, wc) >= mx_pack_elem_bytes(FMTS[k], (size_t)N * K) + sr * sc);
                be_wcache_free(be, wc);
            }
    release(dw), release(dout);
    free(w), free(q), free(got);
}

/* be_dec_linear against the ops it fuses, bit for bit, and against a double-precision
 * fake quant + matmul within float32 summation */
static void dec_linear_is_norm_linear_and_epilogue(void **state)
{
    const int M = 5, K = 64, N0 = 48, N1 = 16, N2 = 16, NS = 40;
    const size_t MK = (size_t)M * K;
    float *x = malloc(sizeof(float) * MK), *nw = malloc(sizeof(float) * K);
    float *w0 = malloc(sizeof(float) * N0 * K), *w1 = malloc(sizeof(float) * N1 * K),
          *w2 = malloc(sizeof(float) * N2 * K), *b0 = malloc(sizeof(float) * N0);
    for (size_t i = 0; i < MK; i++)
        x[i] = (float)rng_normal(3, 1, i);
    for (int i = 0; i < K; i++)
        nw[i] = 1.0f + 0.1f * (float)rng_normal(3, 2, (uint64_t)i);
    for (int i = 0; i < N0; i++)
        b0[i] = 0.1f * (float)rng_normal(3, 3, (uint64_t)i);
    for (int i = 0; i < N0 * K; i++)
        w0[i] = (float)rng_normal(3, 4, (uint64_t)i) * 0.05f;
    for (int i = 0; i < N1 * K; i++)
        w1[i] = (float)rng_normal(3, 5, (uint64_t)i) * 0.05f, w2[i] = (float)rng_normal(3, 6, (uint64_t)i) * 0.05f;
    be_ptr_t dx = dev(x, sizeof(float) * MK), dn = dev(nw, sizeof(float) * K);
    be_ptr_t dw0 = dev(w0, sizeof(float) * N0 * K), dw1 = dev(w1, sizeof(float) * N1 * K),
             dw2 = dev(w2, sizeof(float) * N2 * K), db0 = dev(b0, sizeof(float) * N0);
    be_ptr_t dxn = dev(NULL, sizeof(float) * MK);
    be_ptr_t o[3], want[3];
    const int Ns[3] = {N0, N1, N2};
    for (int i = 0; i < 3; i++)
        o[i] = dev(NULL, sizeof(float) * M * N0), want[i] = dev(NULL, sizeof(float) * M * N0);
    err_t e = ERR_INIT;
    be_wcache_t *wc[3] = {be_wcache_new(be, &e), be_wcache_new(be, &e), be_wcache_new(be, &e)};
    const prec_compute_t cts[2] = {PREC_COMPUTE_FP32, PREC_COMPUTE_BF16};
    float *a = malloc(sizeof(float) * M * N0), *b = malloc(sizeof(float) * M * N0);
    for (int ci = 0; ci < 2; ci++) {
        be_dec_linear_t d;
        memset(&d, 0, sizeof d);
        d.x = dx, d.norm_w = dn, d.eps = 1e-6f, d.M = M, d.K = K, d.nlin = 3, d.epi = BE_DEC_STORE;
        d.lin[0] = linear_of(dw0, db0, N0, K, "mxfp4_e2m1/32", "mxfp4_e2m1/32", cts[ci], wc[0]);
        d.lin[1] = linear_of(dw1, BE_NULL, N1, K, "mxfp8_e4m3/16", "mxfp8_e5m2/8/stochastic", cts[ci], wc[1]);
        d.lin[2] = linear_of(dw2, BE_NULL, N2, K, "bf16", "mxint8/32", cts[ci], wc[2]);
        for (int i = 0; i < 3; i++)
            d.out[i] = o[i];
        be_dec_linear(be, &d);
        /* the same through the ops it fuses */
        be_rmsnorm_fwd(be, dxn, BE_NULL, dx, dn, M, K, 1e-6f);
        for (int i = 0; i < 3; i++) {
            be_linear_t l = d.lin[i];
            l.x = dxn, l.M = M, l.K = K;
            be_linear_fwd(be, &l, want[i], false);
        }
        for (int i = 0; i < 3; i++) {
            get(a, want[i], sizeof(float) * M * Ns[i]);
            get(b, o[i], sizeof(float) * M * Ns[i]);
            sync_ok();
            same("store", a, b, (size_t)M * Ns[i]);
        }
        /* a double-precision reference for layer 0: fake quant of both operands */
        if (ci == 0) {
            float *xn = malloc(sizeof(float) * MK), *xq = malloc(sizeof(float) * MK),
                  *wq = malloc(sizeof(float) * N0 * K);
            get(xn, dxn, sizeof(float) * MK);
            sync_ok();
            mx_fake_quant(xn, xq, M, K, MX_AXIS_ROW, &d.lin[0].spec[PREC_OP_INPUT], 0, 0);
            mx_fake_quant(w0, wq, N0, K, MX_AXIS_ROW, &d.lin[0].spec[PREC_OP_WEIGHT], 0, 0);
            get(b, o[0], sizeof(float) * M * N0);
            sync_ok();
            for (int m = 0; m < M; m++)
                for (int n = 0; n < N0; n++) {
                    double s = b0[n], mag = fabs(b0[n]);
                    for (int k = 0; k < K; k++) {
                        s += (double)xq[m * K + k] * wq[n * K + k];
                        mag += fabs((double)xq[m * K + k] * wq[n * K + k]);
                    }
                    if (fabs(s - b[m * N0 + n]) > 1e-6 * mag + 1e-30)
                        fail_msg("row %d col %d: %.9g, double reference %.12g", m, n, b[m * N0 + n], s);
                }
            free(xn), free(xq), free(wq);
        }
    }
    /* RESIDUAL in place on the input, and SWIGLU */
    be_dec_linear_t r;
    memset(&r, 0, sizeof r);
    be_ptr_t dr = dev(x, sizeof(float) * M * NS), dr2 = dev(x, sizeof(float) * M * NS);
    float *ws = malloc(sizeof(float) * NS * NS);
    for (int i = 0; i < NS * NS; i++)
        ws[i] = (float)rng_normal(3, 7, (uint64_t)i) * 0.1f;
    be_ptr_t dws = dev(ws, sizeof(float) * NS * NS);
    be_wcache_t *wr = be_wcache_new(be, &e);
    r.x = dr, r.M = M, r.K = NS, r.nlin = 1, r.epi = BE_DEC_RESIDUAL, r.out[0] = dr;
    r.lin[0] = linear_of(dws, BE_NULL, NS, NS, "mxfp6_e3m2/32", "mxfp6_e2m3/32", PREC_COMPUTE_FP32, wr);
    be_dec_linear(be, &r);
    be_ptr_t dt = dev(NULL, sizeof(float) * M * NS);
    be_linear_t l = r.lin[0];
    l.x = dr2, l.M = M, l.K = NS;
    be_copy(be, dt, dr2, sizeof(float) * M * NS);
    be_linear_fwd(be, &l, dt, true);
    get(a, dt, sizeof(float) * M * NS);
    get(b, dr, sizeof(float) * M * NS);
    sync_ok();
    same("residual", a, b, (size_t)M * NS);

    release(dr), release(dr2), release(dt), release(dws);
    be_wcache_free(be, wr);
    free(ws);
    {
        be_dec_linear_t g;
        memset(&g, 0, sizeof g);
        g.x = dx, g.norm_w = dn, g.eps = 1e-5f, g.M = M, g.K = K, g.nlin = 2, g.epi = BE_DEC_SWIGLU;
        g.lin[0] = linear_of(dw1, BE_NULL, N1, K, "mxfp4_e2m1/16", "bf16", PREC_COMPUTE_FP32, wc[1]);
        g.lin[1] = linear_of(dw2, BE_NULL, N2, K, "mxfp4_e2m1/16", "bf16", PREC_COMPUTE_FP32, wc[2]);
        g.out[0] = o[0];
        be_dec_linear(be, &g);
        be_rmsnorm_fwd(be, dxn, BE_NULL, dx, dn, M, K, 1e-5f);
        for (int i = 0; i < 2; i++) {
            be_linear_t li = g.lin[i];
            li.x = dxn, li.M = M, li.K = K;
            be_linear_fwd(be, &li, want[1 + i], false);
        }
        be_swiglu_fwd(be, want[0], want[1], want[2], (size_t)M * N1);
        get(a, want[0], sizeof(float) * M * N1);
        get(b, o[0], sizeof(float) * M * N1);
        sync_ok();
        same("swiglu", a, b, (size_t)M * N1);
    }
    for (int i = 0; i < 3; i++) {
        be_wcache_free(be, wc[i]);
        release(o[i]), release(want[i]);
    }
    release(dx), release(dn), release(dw0), release(dw1), release(dw2), release(db0), release(dxn);
    free(x), free(nw), free(w0), free(w1), free(w2), free(b0), free(a), free(b);
}

/* be_dec_attn against be_rope + the cache copies + be_attn_fwd, bit for bit */
static void dec_attn_is_rope_cache_write_and_attention(void **state)
{
    const int B = 3, H = 4, Hkv = 2, D = 8, S = 10, P = 16, t = 6;
    const int qd = H * D, kvd = Hkv * D;
    const int32_t padl[3] = {0, 2, 5}, pos[3] = {t - 0, t - 2, t - 5};
    float *q = malloc(sizeof(float) * B * qd), *k = malloc(sizeof(float) * B * kvd),
          *v = malloc(sizeof(float) * B * kvd), *cache = malloc(sizeof(float) * B * S * kvd),
          *cs = malloc(sizeof(float) * P * D / 2), *sn = malloc(sizeof(float) * P * D / 2);
    for (int i = 0; i < B * qd; i++)
        q[i] = (float)rng_normal(5, 1, (uint64_t)i);
    for (int i = 0; i < B * kvd; i++)
        k[i] = (float)rng_normal(5, 2, (uint64_t)i), v[i] = (float)rng_normal(5, 3, (uint64_t)i);
    for (int i = 0; i < B * S * kvd; i++)
        cache[i] = (float)rng_normal(5, 4, (uint64_t)i);
    for (int p = 0; p < P; p++)
        for (int i = 0; i < D / 2; i++) {
            double a = p / pow(10000.0, 2.0 * i / D);
            cs[p * D / 2 + i] = (float)cos(a), sn[p * D / 2 + i] = (float)sin(a);
        }
    be_ptr_t dq = dev(q, sizeof(float) * B * qd), dk = dev(k, sizeof(float) * B * kvd),
             dv = dev(v, sizeof(float) * B * kvd);
    be_ptr_t kc = dev(cache, sizeof(float) * B * S * kvd), vc = dev(cache, sizeof(float) * B * S * kvd);
    be_ptr_t kc2 = dev(cache, sizeof(float) * B * S * kvd), vc2 = dev(cache, sizeof(float) * B * S * kvd);
    be_ptr_t dcs = dev(cs, sizeof(float) * P * D / 2), dsn = dev(sn, sizeof(float) * P * D / 2);
    be_ptr_t dpos = dev(pos, sizeof pos), dpad = dev(padl, sizeof padl), dt = dev(&t, sizeof t);
    be_ptr_t out = dev(NULL, sizeof(float) * B * qd), want = dev(NULL, sizeof(float) * B * qd);
    be_dec_attn_t a = {.q = dq, .k = dk, .v = dv, .kc = kc, .vc = vc, .out = out, .pos = dpos,
                       .pad_left = dpad, .t = dt, .cos_t = dcs, .sin_t = dsn, .B = B, .H = H,
                       .Hkv = Hkv, .D = D, .S = S, .scale = 1.0f / sqrtf((float)D)};
    be_dec_attn(be, &a);
    /* the inputs are left as they were */
    float *chk = malloc(sizeof(float) * B * qd);
    get(chk, dq, sizeof(float) * B * qd);
    sync_ok();
    same("q unchanged", q, chk, (size_t)B * qd);
    /* composition */
    be_ptr_t q2 = dev(q, sizeof(float) * B * qd), k2 = dev(k, sizeof(float) * B * kvd);
    be_rope(be, q2, dpos, dcs, dsn, B, H, D, false);
    be_rope(be, k2, dpos, dcs, dsn, B, Hkv, D, false);
    const size_t pitch = (size_t)S * kvd * sizeof(float), w = (size_t)kvd * sizeof(float);
    be_copy2d(be, be_f32(kc2, (size_t)t * kvd), pitch, k2, w, w, (size_t)B);
    be_copy2d(be, be_f32(vc2, (size_t)t * kvd), pitch, dv, w, w, (size_t)B);
    be_attn_t at = {.q = q2, .k = kc2, .v = vc2, .out = want, .lse = BE_NULL, .pad_left = dpad,
                    .kv_sb = (size_t)S * kvd, .kv_st = (size_t)kvd, .kv_sh = (size_t)D, .B = B,
                    .Tq = 1, .Tk = t + 1, .H = H, .Hkv = Hkv, .D = D, .q0 = t, .scale = a.scale};
    be_attn_fwd(be, &at);
    float *g1 = malloc(sizeof(float) * B * S * kvd), *g2 = malloc(sizeof(float) * B * S * kvd);
    get(chk, want, sizeof(float) * B * qd);
    float *o1 = malloc(sizeof(float) * B * qd);
    get(o1, out, sizeof(float) * B * qd);
    sync_ok();
    same("attention", chk, o1, (size_t)B * qd);
    get(g1, kc, sizeof(float) * B * S * kvd), get(g2, kc2, sizeof(float) * B * S * kvd);
    sync_ok();
    same("K cache", g2, g1, (size_t)B * S * kvd);
    get(g1, vc, sizeof(float) * B * S * kvd), get(g2, vc2, sizeof(float) * B * S * kvd);
    sync_ok();
    same("V cache", g2, g1, (size_t)B * S * kvd);
    release(dq), release(dk), release(dv), release(kc), release(vc), release(kc2), release(vc2);
    release(dcs), release(dsn), release(dpos), release(dpad), release(dt), release(out);
    release(want), release(q2), release(k2);
    free(q), free(k), free(v), free(cache), free(cs), free(sn), free(chk), free(g1), free(g2), free(o1);
}

/* be_dec_sample: the draw of be_sample_tokens at the device's step, the stop ids masked
 * while step < min_new (and put back), the log-prob of the unmasked logits, the record */
static void dec_sample_draws_masks_and_records(void **state)
{
    const int B = 3, V = 50, MAXN = 6, NSTOP = 3;
    const int32_t stop[3] = {7, 13, 7};
    float *l = malloc(sizeof(float) * B * V), *chk = malloc(sizeof(float) * B * V);
    for (int i = 0; i < B * V; i++)
        l[i] = (float)rng_normal(9, 1, (uint64_t)i);
    l[0 * V + 7] = 9.0f;  /* row 0's best is a stop id */
    l[2 * V + 13] = 9.0f; /* row 2's too */
    int32_t st[BE_DEC_STATE_WORDS] = {0};
    st[BE_DEC_T] = 11, st[BE_DEC_STEP] = 1;
    const int32_t pos0[3] = {3, 4, 5}, zero3[3] = {0, 0, 0};
    be_ptr_t dl = dev(l, sizeof(float) * B * V), dst = dev(st, sizeof st), dids = dev(NULL, 4 * B),
             dpos = dev(pos0, sizeof pos0), ddone = dev(zero3, sizeof zero3),
             dlen = dev(zero3, sizeof zero3), dout = dev(NULL, 4 * B * MAXN),
             dlp = dev(NULL, 4 * B * MAXN), lse = dev(NULL, 4 * B), lp = dev(NULL, 4 * B),
             dstop = dev(stop, sizeof stop), save = dev(NULL, 4 * B * NSTOP);
    be_dec_sample_t s = {.logits = dl, .ld = (size_t)V, .B = B, .V = V, .temperature = 0.0,
                         .top_k = 0, .top_p = 1.0, .seed = 5, .stream = 77, .state = dst,
                         .ids = dids, .pos = dpos, .done = ddone, .len = dlen, .out = dout,
                         .out_logp = dlp, .lse = lse, .lp = lp, .stop = dstop, .save = save,
                         .max_new = MAXN, .nstop = NSTOP, .min_new = 2};
    /* step 1 < min_new: greedy picks the best id that is not a stop id */
    be_dec_sample(be, &s);
    int32_t ids[3], out[3 * 6], len[3], done[3], pos[3], st2[BE_DEC_STATE_WORDS];
    float lpv[3 * 6];
    get(ids, dids, sizeof ids), get(chk, dl, sizeof(float) * B * V), get(st2, dst, sizeof st2);
    get(out, dout, sizeof out), get(len, dlen, sizeof len), get(done, ddone, sizeof done);
    get(pos, dpos, sizeof pos), get(lpv, dlp, sizeof lpv);
    sync_ok();
    same("logits put back", l, chk, (size_t)B * V);
    for (int b = 0; b < B; b++) {
        int best = -1;
        double mx = -INFINITY, z = 0;
        for (int j = 0; j < V; j++)
            if (j != 7 && j != 13 && l[b * V + j] > mx)
                mx = l[b * V + j], best = j;
        double m2 = -INFINITY;
        for (int j = 0; j < V; j++)
            m2 = l[b * V + j] > m2 ? l[b * V + j] : m2;
        for (int j = 0; j < V; j++)
            z += exp((double)l[b * V + j] - m2);
        assert_int_equal(ids[b], best);
        assert_int_equal(out[b * MAXN + 1], best);
        assert_int_equal(len[b], 2);
        assert_int_equal(done[b], 0);
        assert_int_equal(pos[b], pos0[b] + 1);
        assert_true(fabs(lpv[b * MAXN + 1] - ((double)l[b * V + best] - m2 - log(z))) < 1e-5);
    }
    assert_int_equal(st2[BE_DEC_T], 12);
    assert_int_equal(st2[BE_DEC_STEP], 2);
    assert_int_equal(st2[BE_DEC_NDONE], 0);
    /* step 2 = min_new: rows 0 and 2 draw their stop ids and are done */
    be_dec_sample(be, &s);
    get(ids, dids, sizeof ids), get(out, dout, sizeof out), get(len, dlen, sizeof len);
    get(done, ddone, sizeof done), get(st2, dst, sizeof st2);
    sync_ok();
    assert_int_equal(ids[0], 7);
    assert_int_equal(ids[2], 13);
    assert_int_equal(out[0 * MAXN + 2], 7);
    assert_int_equal(done[0], 1);
    assert_int_equal(done[1], 0);
    assert_int_equal(done[2], 1);
    assert_int_equal(len[0], 3);
    assert_int_equal(st2[BE_DEC_NDONE], 2);
    /* step 3: done rows keep their record; the others go on */
    out[0 * MAXN + 3] = -5;
    be_upload(be, dout, out, sizeof out);
    be_dec_sample(be, &s);
    get(out, dout, sizeof out), get(len, dlen, sizeof len), get(st2, dst, sizeof st2);
    sync_ok();
    assert_int_equal(out[0 * MAXN + 3], -5);
    assert_int_equal(len[0], 3);
    assert_int_equal(len[1], 4);
    assert_int_equal(st2[BE_DEC_STEP], 4);
    assert_int_equal(st2[BE_DEC_NDONE], 2);
    /* sampled draws are be_sample_tokens' at the device's step */
    s.temperature = 0.7, s.top_k = 20, s.top_p = 0.9, s.min_new = 0, s.out_logp = BE_NULL;
    be_upload(be, ddone, zero3, sizeof zero3);
    be_dec_sample(be, &s);
    be_ptr_t want = dev(NULL, 4 * B);
    be_sample_t sp = {0.7, 20, 0.9, 5, 77, 4};
    be_sample_tokens(be, want, dl, (size_t)V, B, V, &sp);
    int32_t w2[3];
    get(ids, dids, sizeof ids), get(w2, want, sizeof w2);
    sync_ok();
    assert_memory_equal(ids, w2, sizeof ids);
    release(want);
    release(dl), release(dst), release(dids), release(dpos), release(ddone), release(dlen);
    release(dout), release(dlp), release(lse), release(lp), release(dstop), release(save);
    free(l), free(chk);
}

/* the rule the CUDA decode path and the report's `execution` label share */
static void native_decoding_needs_bf16_exact_operands(void **state)
{
    const mx_spec_t m4 = mx_spec_default(MX_FP4_E2M1), m8 = mx_spec_default(MX_FP8_E4M3),
                    b16 = mx_spec_default(MX_BF16), f16 = mx_spec_default(MX_FP16),
                    f32 = mx_spec_default(MX_FP32);
    assert_true(be_dec_native(&m4, &m4, PREC_COMPUTE_FP32));
    assert_true(be_dec_native(&m4, &m8, PREC_COMPUTE_FP32));
    assert_true(be_dec_native(&m8, &b16, PREC_COMPUTE_FP32));
    assert_true(be_dec_native(&b16, &b16, PREC_COMPUTE_FP32));
    assert_true(be_dec_native(&f32, &f32, PREC_COMPUTE_BF16));  /* both rounded to bf16 */
    assert_false(be_dec_native(&m4, &f32, PREC_COMPUTE_FP32));  /* a float32 activation */
    assert_false(be_dec_native(&f16, &b16, PREC_COMPUTE_FP32)); /* fp16 values are no bf16 */
    assert_false(be_dec_native(&m4, &m4, PREC_COMPUTE_FP16));   /* outputs rounded to fp16 */
}

static int setup(void **state)
{
    err_t e = ERR_INIT;
    return be_open("cpu", &be, &e);
}

static int teardown(void **state)
{
    be_close(be);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(codes_are_read_as_mx_pack_reads_them),
        cmocka_unit_test(values_are_mx_pack_decode),
        cmocka_unit_test(codes_of_fake_quant_values_are_mx_pack_encode),
        cmocka_unit_test(decoded_pairs_are_the_emulated_bf16_operand),
        cmocka_unit_test(bf16_weights_pass_through),
        cmocka_unit_test(operand_slots_are_a_permutation_the_fragments_agree_on),
        cmocka_unit_test(warp_unit_gives_the_dot_products),
        cmocka_unit_test(plans_cover_k_and_fit),
        cmocka_unit_test(packed_decode_copy_is_fake_quant),
        cmocka_unit_test(dec_linear_is_norm_linear_and_epilogue),
        cmocka_unit_test(dec_attn_is_rope_cache_write_and_attention),
        cmocka_unit_test(dec_sample_draws_masks_and_records),
        cmocka_unit_test(native_decoding_needs_bf16_exact_operands),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
