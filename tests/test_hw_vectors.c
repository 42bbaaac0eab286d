/* Tests for src/mx/mx_hwvec: the PE vector format and GEMM cases (docs/hardware.md):
 * the writer and the parser agree, hand-written lines parse to what they say, every
 * malformed field is refused with its line and field named, the random writer reaches
 * the edge cases it promises, and vectors drawn from real matrices are the quantized
 * operands' blocks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx/mx_dot.h"
#include "mx/mx_hwvec.h"
#include "mx/mx_pack.h"
#include "support/testutil.h"
#include "util/rng.h"

static void parse_ok(const char *line, mx_hwvec_t *v)
{
    bool got = false;
    err_t e = ERR_INIT;
    if (mx_hwvec_parse_line(line, strlen(line), "t.vec", 3, v, &got, &e))
        fail_msg("\"%s\": %s", line, e.msg);
    assert_true(got);
}

/* The error message for a line, which must be refused. */
static const char *parse_err(const char *line)
{
    static err_t e;
    err_clear(&e);
    mx_hwvec_t v;
    bool got;
    int rc = mx_hwvec_parse_line(line, strlen(line), "t.vec", 7, &v, &got, &e);
    if (rc != ERR_INPUT)
        fail_msg("\"%s\" was accepted (rc %d)", line, rc);
    assert_non_null(strstr(e.msg, "t.vec:7: "));
    return e.msg;
}

/* A hand-written k = 8 line of each width. */
static const char *fp4_line = "mxfp4_e2m1 8 7f 7 1 0 8 f 2 3 4 7f 7 9 0 0 1 1 1 1 420c0000";
static const char *e4m3_line =
    "mxfp8_e4m3 8 80 38 40 00 00 00 00 00 00 7e 40 38 00 00 00 00 00 00 40800000";

static void hand_written_lines_parse(void **state)
{
    (void)state;
    mx_hwvec_t v, w;
    err_t e = ERR_INIT;
    float r;
    parse_ok(fp4_line, &v);
    assert_int_equal(v.format, MX_FP4_E2M1);
    assert_int_equal(v.k, 8);
    assert_int_equal(v.sa, 0x7f);
    assert_int_equal(v.a[0], 0x7);
    assert_int_equal(v.a[4], 0xf);
    assert_int_equal(v.b[1], 0x9);
    assert_int_equal(v.expected, 0x420c0000u);
    /* by hand: 6*6 + 0.5*(-0.5) + 0*0 + (-0)*0 + (-6)*0.5 + 1*0.5 + 1.5*0.5 + 2*0.5 = 35,
     * scales 2^0: 35.0 = 0x420c0000; the reference agrees */
    w = v;
    assert_int_equal(mx_hwvec_compute(&w, &e), 0);
    memcpy(&r, &w.expected, 4);
    assert_true(r == 35.0f);
    parse_ok(e4m3_line, &v);
    assert_int_equal(v.sa, 0x80);
    assert_int_equal(v.sb, 0x7e);
    assert_int_equal(v.a[1], 0x40);
    assert_int_equal(v.b[0], 0x40);
    /* (1*2 + 2*1) * 2^1 * 2^-1 = 4 = 0x40800000 */
    w = v;
    assert_int_equal(mx_hwvec_compute(&w, &e), 0);
    assert_int_equal(w.expected, 0x40800000u);
    assert_int_equal(v.expected, 0x40800000u);
}

static void comments_empty_lines_and_crlf(void **state)
{
    (void)state;
    char text[1024];
    snprintf(text, sizeof text, "# a comment\n\n%s\r\n#another\n%s", fp4_line, e4m3_line);
    mx_hwvec_t *v;
    size_t n;
    err_t e = ERR_INIT;
    assert_int_equal(mx_hwvec_parse(text, strlen(text), "t.vec", &v, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_int_equal(v[0].format, MX_FP4_E2M1);
    assert_int_equal(v[1].format, MX_FP8_E4M3);
    free(v);
    /* an error names the line it is on */
    snprintf(text, sizeof text, "# c\n%s\n%s x\n", fp4_line, fp4_line);
    assert_int_equal(mx_hwvec_parse(text, strlen(text), "t.vec", &v, &n, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "t.vec:3: "));
    assert_null(v);
}

static void malformed_fields_are_refused(void **state)
{
    (void)state;
    assert_non_null(strstr(parse_err("mxfp8 8 7f 7 1 0 8 f 2 3 4 7f 7 9 0 0 1 1 1 1 4210f000"),
                           "field 1 (format)"));
    assert_non_null(strstr(parse_err("mxfp4_e2m1 12 7f 7 1 0 8 f 2 3 4 7f 7 9 0 0 1 1 1 1 00000000"),
                           "field 2 (k)"));
    assert_non_null(strstr(parse_err("mxfp4_e2m1 8 ff 7 1 0 8 f 2 3 4 7f 7 9 0 0 1 1 1 1 4210f000"),
                           "NaN scale"));
    assert_non_null(strstr(parse_err("mxfp4_e2m1 8 7F 7 1 0 8 f 2 3 4 7f 7 9 0 0 1 1 1 1 4210f000"),
                           "lowercase hex"));
    assert_non_null(strstr(parse_err("mxfp4_e2m1 8 7f 07 1 0 8 f 2 3 4 7f 7 9 0 0 1 1 1 1 4210f000"),
                           "field 4 (a_1)"));
    assert_non_null(strstr(parse_err("mxfp4_e2m1 8 7f 7  1 0 8 f 2 3 4 7f 7 9 0 0 1 1 1 1 4210f000"),
                           "empty"));
    assert_non_null(strstr(parse_err("mxfp4_e2m1 8 7f 7 1 0 8 f 2 3 4 7f 7 9 0 0 1 1 1 1 4210f000 "),
                           "trailing space"));
    assert_non_null(strstr(parse_err("mxfp4_e2m1 8 7f 7 1 0 8 f 2 3 4 7f 7 9 0 0 1 1 1 1"),
                           "missing"));
    assert_non_null(strstr(parse_err("mxfp4_e2m1 8 7f 7 1 0 8 f 2 3 4 7f 7 9 0 0 1 1 1 1 4210f000 1"),
                           "more than"));
    assert_non_null(strstr(parse_err("mxfp4_e2m1 8 7f 7 1 0 8 f 2 3 4 7f 7 9 0 0 1 1 1 1 4210f00"),
                           "field 21 (expected)"));
    assert_non_null(strstr(parse_err("mxfp4_e2m1\t8 7f 7 1 0 8 f 2 3 4 7f 7 9 0 0 1 1 1 1 4210f000"),
                           "field 1"));
    /* codes outside the format, NaN and infinity codes */
    assert_non_null(strstr(parse_err("mxfp6_e3m2 8 7f 40 00 00 00 00 00 00 00 7f 00 00 00 00 00 "
                                     "00 00 00 00000000"), "not a 6-bit"));
    assert_non_null(strstr(parse_err("mxfp8_e4m3 8 7f ff 00 00 00 00 00 00 00 7f 00 00 00 00 00 "
                                     "00 00 00 00000000"), "NaN or infinity"));
    assert_non_null(strstr(parse_err("mxfp8_e5m2 8 7f 00 00 00 00 00 00 00 00 7f 7c 00 00 00 00 "
                                     "00 00 00 00000000"), "field 13 (b_1)"));
}

static void writer_and_parser_agree_for_every_format_and_k(void **state)
{
    (void)state;
    const int ks[] = {8, 16, 32};
    char line[MX_HWVEC_LINE_MAX];
    for (int f = 0; f < MX_HWVEC_NFORMATS; f++)
        for (int ki = 0; ki < 3; ki++)
            for (uint64_t i = 0; i < 40; i++) {
                mx_hwvec_t v, w;
                err_t e = ERR_INIT;
                assert_int_equal(mx_hwvec_random(mx_hwvec_formats[f], ks[ki], 5, 0, i, &v, &e), 0);
                int n = mx_hwvec_format_line(&v, line, sizeof line);
                assert_true(n > 0 && n < MX_HWVEC_LINE_MAX && (size_t)n == strlen(line));
                int spaces = 0;
                for (int c = 0; c < n; c++)
                    spaces += line[c] == ' ';
                assert_int_equal(spaces, 2 * ks[ki] + 4); /* 2k + 5 fields */
                parse_ok(line, &w);
                assert_memory_equal(&v, &w, sizeof v);
            }
}

static void random_vectors_reach_the_edges(void **state)
{
    (void)state;
    int zeros = 0, plus_zero_blocks = 0, infs = 0, subnormal_or_zero = 0, n = 0;
    for (int f = 0; f < MX_HWVEC_NFORMATS; f++)
        for (uint64_t i = 0; i < 400; i++) {
            mx_hwvec_t v;
            err_t e = ERR_INIT;
            assert_int_equal(mx_hwvec_random(mx_hwvec_formats[f], 32, 9, 1, i, &v, &e), 0);
            uint32_t ex = v.expected & 0x7f800000u;
            n++;
            if (i % 8 == 0) {
                plus_zero_blocks += v.expected == 0; /* a zero block is +0 */
                zeros++;
            }
            if (i % 8 == 2)
                infs += ex == 0x7f800000u;
            if (i % 8 == 3)
                subnormal_or_zero += ex == 0;
            /* every vector is the reference's result */
            mx_hwvec_t w = v;
            assert_int_equal(mx_hwvec_compute(&w, &e), 0);
            assert_int_equal(w.expected, v.expected);
        }
    assert_int_equal(plus_zero_blocks, zeros);
    assert_true(infs > 6 * 50 / 4);              /* most overflow cases overflow */
    assert_true(subnormal_or_zero > 6 * 50 / 4); /* most underflow cases underflow */
    /* the same index gives the same vector; another seed another */
    mx_hwvec_t a, b, c;
    err_t e = ERR_INIT;
    mx_hwvec_random(MX_FP8_E5M2, 16, 1, 2, 77, &a, &e);
    mx_hwvec_random(MX_FP8_E5M2, 16, 1, 2, 77, &b, &e);
    mx_hwvec_random(MX_FP8_E5M2, 16, 2, 2, 77, &c, &e);
    assert_memory_equal(&a, &b, sizeof a);
    assert_true(memcmp(&a, &c, sizeof a) != 0);
}

/* Equal as numbers (+0 == -0: int codes have no -0) */
static bool same_values(const float *a, const float *b, int n)
{
    for (int i = 0; i < n; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

static void vectors_from_matrices_are_quantized_blocks(void **state)
{
    (void)state;
    enum { M = 5, N = 3, K = 64 };
    float x[M * K], w[N * K];
    for (int i = 0; i < M * K; i++)
        x[i] = (float)rng_normal(3, 0, (uint64_t)i) * (i % 7 == 0 ? 40.0f : 1.0f);
    for (int i = 0; i < N * K; i++)
        w[i] = (float)rng_normal(3, 1, (uint64_t)i) * 0.05f;
    for (int f = 0; f < MX_HWVEC_NFORMATS; f++) {
        mx_format_t fmt = mx_hwvec_formats[f];
        mx_hwvec_t v[20];
        err_t e = ERR_INIT;
        assert_int_equal(mx_hwvec_from_matrices(x, M, w, N, K, fmt, 16, 4, 0, 20, v, &e), 0);
        mx_spec_t spec = {fmt, 16, MX_ROUND_EVEN, MX_SCALE_FLOOR};
        float xq[M * K], wq[N * K];
        mx_fake_quant(x, xq, M, K, MX_AXIS_ROW, &spec, 0, 0);
        mx_fake_quant(w, wq, N, K, MX_AXIS_ROW, &spec, 0, 0);
        for (int i = 0; i < 20; i++) {
            /* the a operand decodes to one 16-element block of a fake-quantized row of x */
            float dec[16];
            for (int t = 0; t < 16; t++)
                dec[t] = mx_elem_decode(fmt, v[i].a[t]) * mx_e8m0_decode(v[i].sa);
            bool found = false;
            for (int m = 0; m < M && !found; m++)
                for (int j = 0; j < K / 16 && !found; j++)
                    found = same_values(dec, xq + m * K + j * 16, 16);
            assert_true(found);
            for (int t = 0; t < 16; t++)
                dec[t] = mx_elem_decode(fmt, v[i].b[t]) * mx_e8m0_decode(v[i].sb);
            found = false;
            for (int n = 0; n < N && !found; n++)
                for (int j = 0; j < K / 16 && !found; j++)
                    found = same_values(dec, wq + n * K + j * 16, 16);
            assert_true(found);
            mx_hwvec_t c = v[i];
            assert_int_equal(mx_hwvec_compute(&c, &e), 0);
            assert_int_equal(c.expected, v[i].expected);
        }
    }
    mx_hwvec_t v;
    err_t e = ERR_INIT;
    assert_int_equal(mx_hwvec_from_matrices(x, M, w, N, 60, MX_FP4_E2M1, 16, 4, 0, 1, &v, &e),
                     ERR_INPUT);
}

static void files_round_trip(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char path[512];
    snprintf(path, sizeof path, "%s/v.txt", dir);
    mx_hwvec_t v[12];
    err_t e = ERR_INIT;
    for (int i = 0; i < 12; i++)
        assert_int_equal(mx_hwvec_random(mx_hwvec_formats[i % 6], 8 << (i % 3), 1, 0,
                                         (uint64_t)i, &v[i], &e), 0);
    assert_int_equal(mx_hwvec_write(path, "made by a test\nsecond line", v, 12, &e), 0);
    mx_hwvec_t *r;
    size_t n;
    assert_int_equal(mx_hwvec_load(path, &r, &n, &e), 0);
    assert_int_equal(n, 12);
    assert_memory_equal(r, v, sizeof v);
    free(r);
    test_rmtree(dir);
    free(dir);
}

/* ---- GEMM cases ----------------------------------------------------------------------- */

static const char *small_gemm =
    "# a hand-written case: 2 x 1 x 16, k = 8\n"
    "gemm mxfp4_e2m1 mxint8 8 2 1 16\n"
    "a 7f 2 2 2 2 2 2 2 2 7f 0 0 0 0 0 0 0 0\n"
    "\n"
    "a 80 7 0 0 0 0 0 0 0 7f 8 0 0 0 0 0 0 0\n"
    "b 7f 40 40 40 40 40 40 40 40 7f 00 00 00 00 00 00 00 00\n"
    "y 41000000\n"
    "y 41400000\n";

static void gemm_cases_parse_and_check(void **state)
{
    (void)state;
    mx_hwgemm_t g;
    err_t e = ERR_INIT;
    assert_int_equal(mx_hwgemm_parse(small_gemm, strlen(small_gemm), "g.txt", &g, &e), 0);
    assert_int_equal(g.M, 2);
    assert_int_equal(g.N, 1);
    assert_int_equal(g.K, 16);
    assert_int_equal(g.fa, MX_FP4_E2M1);
    assert_int_equal(g.fb, MX_INT8);
    /* row 0: 8 * 1.0 * 1.0 = 8; row 1: 2 * 6 * 1.0 = 12 */
    size_t ok;
    long bad;
    assert_int_equal(mx_hwgemm_check(&g, &ok, &bad, &e), 0);
    assert_int_equal(ok, 2);
    assert_int_equal(bad, -1);
    g.y[1] ^= 1;
    assert_int_equal(mx_hwgemm_check(&g, &ok, &bad, &e), 0);
    assert_int_equal(ok, 1);
    assert_int_equal(bad, 1);
    mx_hwgemm_free(&g);
    /* errors: a missing line, an extra line, a wrong tag, a bad shape */
    const char *cut = "gemm mxfp4_e2m1 mxint8 8 2 1 16\na 7f 2 2 2 2 2 2 2 2 7f 0 0 0 0 0 0 0 0\n";
    assert_int_equal(mx_hwgemm_parse(cut, strlen(cut), "g.txt", &g, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "ends after"));
    err_clear(&e);
    char more[1024];
    snprintf(more, sizeof more, "%sy 00000000\n", small_gemm);
    assert_int_equal(mx_hwgemm_parse(more, strlen(more), "g.txt", &g, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "g.txt:9: a line after the last y line"));
    err_clear(&e);
    const char *tag = "gemm mxfp4_e2m1 mxint8 8 1 1 8\nb 7f 2 2 2 2 2 2 2 2\n";
    assert_int_equal(mx_hwgemm_parse(tag, strlen(tag), "g.txt", &g, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "expected \"a\" here"));
    err_clear(&e);
    const char *shape = "gemm mxfp4_e2m1 mxint8 8 1 1 12\n";
    assert_int_equal(mx_hwgemm_parse(shape, strlen(shape), "g.txt", &g, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "not a multiple"));
    err_clear(&e);
    const char *huge = "gemm mxfp4_e2m1 mxint8 8 65536 65536 65536\n";
    assert_int_equal(mx_hwgemm_parse(huge, strlen(huge), "g.txt", &g, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "more than"));
}

static void gemm_cases_from_matrices_round_trip(void **state)
{
    (void)state;
    enum { M = 4, N = 6, K = 64 };
    float x[M * K], w[N * K];
    for (int i = 0; i < M * K; i++)
        x[i] = (float)rng_normal(8, 0, (uint64_t)i);
    for (int i = 0; i < N * K; i++)
        w[i] = (float)rng_normal(8, 1, (uint64_t)i) * 0.1f;
    mx_spec_t sa = {MX_FP8_E4M3, 32, MX_ROUND_EVEN, MX_SCALE_FLOOR};
    mx_spec_t sb = {MX_FP4_E2M1, 32, MX_ROUND_EVEN, MX_SCALE_FLOOR};
    mx_hwgemm_t g, r;
    err_t e = ERR_INIT;
    assert_int_equal(mx_hwgemm_from_matrices(x, M, w, N, K, &sa, &sb, &g, &e), 0);
    /* close to the float32 GEMM of the fake-quantized operands */
    float xq[M * K], wq[N * K];
    mx_fake_quant(x, xq, M, K, MX_AXIS_ROW, &sa, 0, 0);
    mx_fake_quant(w, wq, N, K, MX_AXIS_ROW, &sb, 0, 0);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int t = 0; t < K; t++)
                s += (double)xq[m * K + t] * wq[n * K + t];
            float y;
            memcpy(&y, &g.y[m * N + n], 4);
            assert_true(fabs(y - s) <= 1e-6 * (1 + fabs(s)));
        }
    char *dir = test_mkdtemp();
    char path[512];
    snprintf(path, sizeof path, "%s/g.txt", dir);
    assert_int_equal(mx_hwgemm_write(path, "test case", &g, &e), 0);
    assert_int_equal(mx_hwgemm_load(path, &r, &e), 0);
    assert_int_equal(r.M, M);
    assert_memory_equal(r.a, g.a, M * K);
    assert_memory_equal(r.bs, g.bs, N * K / 32);
    assert_memory_equal(r.y, g.y, M * N * 4);
    mx_hwgemm_free(&r);
    mx_hwgemm_free(&g);
    sb.block = 16;
    assert_int_equal(mx_hwgemm_from_matrices(x, M, w, N, K, &sa, &sb, &g, &e), ERR_INPUT);
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hand_written_lines_parse),
        cmocka_unit_test(comments_empty_lines_and_crlf),
        cmocka_unit_test(malformed_fields_are_refused),
        cmocka_unit_test(writer_and_parser_agree_for_every_format_and_k),
        cmocka_unit_test(random_vectors_reach_the_edges),
        cmocka_unit_test(vectors_from_matrices_are_quantized_blocks),
        cmocka_unit_test(files_round_trip),
        cmocka_unit_test(gemm_cases_parse_and_check),
        cmocka_unit_test(gemm_cases_from_matrices_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
