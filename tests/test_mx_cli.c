/* Tests for `mxrlhf mx` as a user drives it: the 63 golden cases through
 * `mx quantize` on raw float32 files, safetensors in and out (dequantized and packed),
 * `mx info`, `mx error`, --help on every verb, and bad input: one line naming the
 * problem, exit code 2, no output file. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx/mx.h"
#include "mx/mx_pack.h"
#include "support/testutil.h"
#include "util/fs.h"
#include "util/half.h"
#include "util/rng.h"
#include "util/safetensors.h"

static void *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* ---- golden cases through the command ----------------------------------------------- */

static void cli_quantize_reproduces_the_golden_cases(void **state)
{
    (void)state;
    const char *path;
    REQUIRE_SHARED(path, "mx-golden/mx_golden.bin");
    size_t len;
    uint8_t *buf = read_file(path, &len), *p = buf + 12;
    uint32_t ncases;
    memcpy(&ncases, buf + 8, 4);
    assert_int_equal(ncases, 63);
    char *dir = test_mkdtemp();
    char *in = fs_join(dir, "in.f32"), *out = fs_join(dir, "out.f32");
    int failed = 0;
    for (uint32_t c = 0; c < ncases; c++) {
        char fmt[64] = {0}, rnd[64] = {0};
        memcpy(fmt, p + 1, *p);
        p += 1 + *p;
        memcpy(rnd, p + 1, *p);
        p += 1 + *p;
        uint32_t block, n;
        memcpy(&block, p, 4);
        memcpy(&n, p + 4, 4);
        p += 8;
        const float *x = (const float *)(const void *)p, *want = x + n;
        test_write_file(in, x, (size_t)n * 4);
        char *log;
        int rc = test_cli(&log, "mx quantize --format %s --block %u --round %s --in %s --out %s",
                          fmt, block, rnd, in, out);
        if (rc != 0)
            fail_msg("golden %s/%s/%u: exit %d: %s", fmt, rnd, block, rc, log);
        free(log);
        size_t olen;
        float *got = read_file(out, &olen);
        assert_int_equal(olen, (size_t)n * 4);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            float w;
            memcpy(&w, want + i, 4);
            if (test_f32_bits(got[i]) != test_f32_bits(w) && !(got[i] == 0 && w == 0) && !bad++)
                print_error("golden %s/%s/%u [%zu]: expected %a got %a\n", fmt, rnd, block, i, w,
                            got[i]);
        }
        failed += bad != 0;
        free(got);
        p += (size_t)n * 8;
    }
    assert_ptr_equal(p, buf + len);
    free(buf);
    free(in);
    free(out);
    test_rmtree(dir);
    free(dir);
    if (failed)
        fail_msg("%d of 63 golden cases differ through mxrlhf mx quantize", failed);
}

/* ---- safetensors ----------------------------------------------------------------- */

/* A file with an F32 [3, 40] tensor "w", a BF16 [2, 6] tensor "b", an I32 [4] tensor
 * "ids", and metadata. */
static void write_model(const char *path, float *w_vals, float *b_vals)
{
    err_t e = ERR_INIT;
    st_writer_t *w = st_writer_new(&e);
    assert_non_null(w);
    for (int i = 0; i < 120; i++)
        w_vals[i] = (float)(rng_normal(3, 0, (uint64_t)i) * (i % 7 == 0 ? 100 : 1));
    uint16_t bf[12];
    for (int i = 0; i < 12; i++) {
        bf[i] = half_f32_to_bf16((float)(i - 6) * 0.37f);
        b_vals[i] = half_bf16_to_f32(bf[i]);
    }
    int32_t ids[4] = {1, 2, 3, 4};
    int64_t sw[2] = {3, 40}, sb[2] = {2, 6}, si[1] = {4};
    assert_int_equal(st_writer_add(w, "w", ST_F32, 2, sw, w_vals, 480, 0, &e), 0);
    assert_int_equal(st_writer_add(w, "b", ST_BF16, 2, sb, bf, 24, 0, &e), 0);
    assert_int_equal(st_writer_add(w, "ids", ST_I32, 1, si, ids, 16, 0, &e), 0);
    assert_int_equal(st_writer_meta(w, "origin", "test", &e), 0);
    assert_int_equal(st_writer_write(w, path, &e), 0);
    st_writer_free(w);
}

static void cli_quantize_safetensors_rows_and_passes_other_tensors(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *in = fs_join(dir, "m.safetensors"), *out = fs_join(dir, "q.safetensors");
    float wv[120], bv[12], want[120], wantb[12];
    write_model(in, wv, bv);
    char *log;
    int rc = test_cli(&log, "mx quantize --format mxfp6_e2m3 --block 16 --round nearest "
                            "--scale rceil --in %s --out %s", in, out);
    if (rc)
        fail_msg("exit %d: %s", rc, log);
    free(log);
    mx_spec_t s = {MX_FP6_E2M3, 16, MX_ROUND_NEAREST, MX_SCALE_RCEIL};
    mx_fake_quant(wv, want, 3, 40, MX_AXIS_ROW, &s, 0, 0); /* rows of 40: short blocks of 8 */
    mx_fake_quant(bv, wantb, 2, 6, MX_AXIS_ROW, &s, 0, 0);
    st_file_t f;
    err_t e = ERR_INIT;
    assert_int_equal(st_open(&f, out, &e), 0);
    const st_tensor_t *t = st_find(&f, "w");
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_F32);
    assert_memory_equal(t->data, want, 480);
    t = st_find(&f, "b");
    assert_int_equal(t->dtype, ST_F32);
    assert_int_equal(t->shape[0], 2);
    assert_memory_equal(t->data, wantb, 48);
    t = st_find(&f, "ids");
    assert_int_equal(t->dtype, ST_I32);
    assert_int_equal(((const int32_t *)(const void *)t->data)[3], 4);
    assert_string_equal(st_metadata(&f, "mx.spec"), "mxfp6_e2m3/16/nearest/rceil");
    assert_string_equal(st_metadata(&f, "origin"), "test");
    st_close(&f);

    /* --tensor b: only b changes */
    rc = test_cli(&log, "mx quantize --format mxint8 --tensor b --in %s --out %s", in, out);
    assert_int_equal(rc, 0);
    free(log);
    assert_int_equal(st_open(&f, out, &e), 0);
    t = st_find(&f, "w");
    assert_memory_equal(t->data, wv, 480);
    assert_int_equal(st_find(&f, "b")->dtype, ST_F32);
    assert_string_equal(st_metadata(&f, "mx.tensors_quantized"), "1");
    st_close(&f);
    free(in);
    free(out);
    test_rmtree(dir);
    free(dir);
}

static void cli_packed_safetensors_decode_to_fake_quant(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *in = fs_join(dir, "m.safetensors"), *out = fs_join(dir, "p.safetensors");
    float wv[120], bv[12], want[120], got[120];
    write_model(in, wv, bv);
    const char *fmts[] = {"mxfp4", "mxfp6_e3m2", "mxfp8_e5m2", "mxint8"};
    const char *dtypes[] = {"F4", "F6_E3M2", "F8_E5M2", "I8"};
    for (int k = 0; k < 4; k++) {
        char *log;
        int rc = test_cli(&log, "mx quantize --format %s --block 8 --round stochastic --seed 9 "
                                "--tensor w --packed --in %s --out %s", fmts[k], in, out);
        if (rc)
            fail_msg("%s: exit %d: %s", fmts[k], rc, log);
        free(log);
        mx_spec_t s;
        err_t e = ERR_INIT;
        char text[64];
        snprintf(text, sizeof text, "%s/8/stochastic", fmts[k]);
        assert_int_equal(mx_spec_parse(text, &s, &e), 0);
        mx_fake_quant(wv, want, 3, 40, MX_AXIS_ROW, &s, 9, rng_stream("w", 0));
        st_file_t f;
        assert_int_equal(st_open(&f, out, &e), 0);
        const st_tensor_t *t = st_find(&f, "w"), *sc = st_find(&f, "w.scales");
        assert_non_null(t);
        assert_non_null(sc);
        assert_string_equal(st_dtype_name(t->dtype), dtypes[k]);
        assert_int_equal(t->shape[1], 40);
        assert_int_equal(sc->dtype, ST_F8_E8M0);
        assert_int_equal(sc->shape[0], 3);
        assert_int_equal(sc->shape[1], 5);
        assert_int_equal(mx_pack_decode(t->data, sc->data, 3, 40, MX_AXIS_ROW, s.format, 8, got,
                                        &e), 0);
        for (int i = 0; i < 120; i++)
            if (!(got[i] == want[i]))
                fail_msg("%s [%d]: fake quant %a, decoded %a", fmts[k], i, want[i], got[i]);
        assert_non_null(st_metadata(&f, "mx.packing"));
        assert_string_equal(st_metadata(&f, "mx.content"), "packed");
        st_close(&f);
    }
    free(in);
    free(out);
    test_rmtree(dir);
    free(dir);
}

/* ---- bad input ------------------------------------------------------------------------ */

static void expect_bad_input(const char *dir, const char *out, const char *args,
                             const char *needle)
{
    char *log;
    int rc = test_cli(&log, "%s", args);
    if (rc != 2 || !strstr(log, needle) || count_lines(log) != 1)
        fail_msg("`mxrlhf %s`: expected exit 2 and one line naming \"%s\"; got exit %d: %s", args,
                 needle, rc, log);
    free(log);
    if (fs_exists(out))
        fail_msg("`mxrlhf %s` left %s behind", args, out);
    (void)dir;
}

static void cli_bad_input_exits_2_with_one_line_and_no_output(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *raw = fs_join(dir, "x.f32"), *odd = fs_join(dir, "odd.f32"),
         *lie = fs_join(dir, "lie.safetensors"), *model = fs_join(dir, "m.safetensors"),
         *out = fs_join(dir, "out.bin"), *outst = fs_join(dir, "out.safetensors");
    float x[5] = {1, 2, 3, 4, 5};
    test_write_file(raw, x, sizeof x);
    test_write_file(odd, x, 10);
    /* header length claims 1000 bytes in a 40-byte file */
    uint8_t lying[40] = {0};
    uint64_t hl = 1000;
    memcpy(lying, &hl, 8);
    memcpy(lying + 8, "{\"a\":{}}", 8);
    test_write_file(lie, lying, sizeof lying);
    float wv[120], bv[12];
    write_model(model, wv, bv);
    char args[2048];
    snprintf(args, sizeof args, "mx quantize --format mxfp5 --in %s --out %s", raw, out);
    expect_bad_input(dir, out, args, "unknown format \"mxfp5\"");
    snprintf(args, sizeof args, "mx quantize --format mxfp4 --block 0 --in %s --out %s", raw, out);
    expect_bad_input(dir, out, args, "--block 0");
    snprintf(args, sizeof args, "mx quantize --format mxfp4 --round up --in %s --out %s", raw, out);
    expect_bad_input(dir, out, args, "unknown rounding \"up\"");
    snprintf(args, sizeof args, "mx quantize --format mxfp4 --in %s --out %s", odd, out);
    expect_bad_input(dir, out, args, "not a whole number of float32");
    snprintf(args, sizeof args, "mx quantize --format mxfp4 --in %s/missing.f32 --out %s", dir, out);
    expect_bad_input(dir, out, args, "missing.f32");
    snprintf(args, sizeof args, "mx quantize --format mxfp4 --in %s --out %s", lie, outst);
    expect_bad_input(dir, outst, args, "header length 1000");
    snprintf(args, sizeof args, "mx quantize --format mxfp4 --tensor nope --in %s --out %s", model,
             outst);
    expect_bad_input(dir, outst, args, "no tensor \"nope\"");
    snprintf(args, sizeof args, "mx quantize --format mxfp4 --tensor ids --in %s --out %s", model,
             outst);
    expect_bad_input(dir, outst, args, "dtype I32");
    snprintf(args, sizeof args, "mx quantize --format mxfp4 --packed --in %s --out %s", raw, out);
    expect_bad_input(dir, out, args, "needs a .safetensors input");
    snprintf(args, sizeof args, "mx quantize --format mxfp4 --in %s", raw);
    expect_bad_input(dir, out, args, "--out is required");
    snprintf(args, sizeof args, "mx error --format mxfp4 --block 0");
    expect_bad_input(dir, out, args, "--block 0");
    snprintf(args, sizeof args, "mx error --format nope");
    expect_bad_input(dir, out, args, "unknown format");
    snprintf(args, sizeof args, "mx error --format mxfp4 --in %s", odd);
    expect_bad_input(dir, out, args, "multiple of 4");
    snprintf(args, sizeof args, "mx frobnicate");
    expect_bad_input(dir, out, args, "unknown verb");
    /* a 6-element row cannot be stored as F6 (four codes per three bytes) */
    {
        err_t e = ERR_INIT;
        st_writer_t *w = st_writer_new(&e);
        int64_t sh[1] = {6};
        float six_vals[6] = {1, 2, 3, 4, 5, 6};
        assert_int_equal(st_writer_add(w, "v", ST_F32, 1, sh, six_vals, 24, 0, &e), 0);
        char *six = fs_join(dir, "six.safetensors");
        assert_int_equal(st_writer_write(w, six, &e), 0);
        st_writer_free(w);
        snprintf(args, sizeof args, "mx quantize --format mxfp6 --packed --in %s --out %s", six,
                 outst);
        expect_bad_input(dir, outst, args, "whole number of bytes");
        free(six);
    }
    free(raw);
    free(odd);
    free(lie);
    free(model);
    free(out);
    free(outst);
    test_rmtree(dir);
    free(dir);
}

/* ---- info, error, help ------------------------------------------------------------- */

static void cli_info_lists_every_format(void **state)
{
    (void)state;
    char *log;
    assert_int_equal(test_cli(&log, "mx info"), 0);
    for (int i = 0; i < MX_FORMAT_COUNT; i++)
        if (!strstr(log, mx_format_name((mx_format_t)i)))
            fail_msg("mx info does not list %s:\n%s", mx_format_name((mx_format_t)i), log);
    assert_non_null(strstr(log, "F8_E4M3"));
    assert_non_null(strstr(log, "57344"));
    free(log);
}

static double field(const char *log, const char *key)
{
    const char *p = strstr(log, key);
    if (!p)
        fail_msg("no %s in:\n%s", key, log);
    return strtod(p + strlen(key), NULL);
}

static void cli_error_orders_formats_and_is_exact_on_mx_values(void **state)
{
    (void)state;
    char *l8, *l6, *l4;
    assert_int_equal(test_cli(&l8, "mx error --format mxfp8 --n 65536"), 0);
    assert_int_equal(test_cli(&l6, "mx error --format mxfp6 --n 65536"), 0);
    assert_int_equal(test_cli(&l4, "mx error --format mxfp4 --n 65536"), 0);
    double s8 = field(l8, "sqnr_db"), s6 = field(l6, "sqnr_db"), s4 = field(l4, "sqnr_db");
    /* roughly 6 dB per mantissa bit: e4m3 ~ 31, e3m2 ~ 25, e2m1 ~ 18 on normal data */
    if (!(s8 > s6 + 3 && s6 > s4 + 3 && s4 > 12 && s8 < 40))
        fail_msg("SQNR e4m3 %g, e3m2 %g, e2m1 %g: not the expected ladder", s8, s6, s4);
    free(l8);
    free(l6);
    free(l4);
    /* values already on the grid: no error */
    char *dir = test_mkdtemp(), *raw = fs_join(dir, "g.f32"), *log;
    float x[8] = {1, 0.5f, -2, 4, 0, 3, -6, 1.5f};
    test_write_file(raw, x, sizeof x);
    assert_int_equal(test_cli(&log, "mx error --format mxfp4 --block 8 --in %s", raw), 0);
    assert_non_null(strstr(log, "sqnr_db           inf"));
    assert_true(field(log, "max_rel_err") == 0);
    free(log);
    /* nothing usable (all NaN or Inf): said so, not "inf (no error)" */
    float bad[8] = {NAN, INFINITY, -INFINITY, NAN, NAN, NAN, NAN, NAN};
    test_write_file(raw, bad, sizeof bad);
    assert_int_equal(test_cli(&log, "mx error --format mxfp4 --block 8 --in %s", raw), 2);
    if (!strstr(log, "g.f32 (raw float32): no usable values (8 non-finite or in NaN blocks "
                     "skipped)"))
        fail_msg("expected the file named with no usable values, got: %s", log);
    assert_null(strstr(log, "sqnr_db"));
    free(log);
    free(raw);
    test_rmtree(dir);
    free(dir);
}

static void cli_help_on_every_verb(void **state)
{
    (void)state;
    const char *cmds[] = {"mx --help", "mx quantize --help", "mx info --help", "mx error --help"};
    const char *needles[] = {"quantize", "--format F", "mx info", "sqnr_db"};
    for (int i = 0; i < 4; i++) {
        char *log;
        int rc = test_cli(&log, "%s", cmds[i]);
        if (rc != 0 || !strstr(log, needles[i]))
            fail_msg("`mxrlhf %s`: exit %d, output:\n%s", cmds[i], rc, log);
        free(log);
    }
    char *log;
    assert_int_equal(test_cli(&log, "--help"), 0);
    assert_non_null(strstr(log, "mx "));
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cli_quantize_reproduces_the_golden_cases),
        cmocka_unit_test(cli_quantize_safetensors_rows_and_passes_other_tensors),
        cmocka_unit_test(cli_packed_safetensors_decode_to_fake_quant),
        cmocka_unit_test(cli_bad_input_exits_2_with_one_line_and_no_output),
        cmocka_unit_test(cli_info_lists_every_format),
        cmocka_unit_test(cli_error_orders_formats_and_is_exact_on_mx_values),
        cmocka_unit_test(cli_help_on_every_verb),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
