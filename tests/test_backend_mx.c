/* The MX matmul against PyTorch: one linear layer with every operand in one MX format
 * (mxfp8_e4m3, and mxfp4_e2m1; block 32, round to nearest even, OCP floor scale), forward
 * and both backward GEMMs, against microxcaling-style fake quantization written in
 * PyTorch and computed in float64 (tests/fixtures/model/mx_linear*.safetensors, made by
 * scripts/peer/engine_peer.py; the spec is in each file's metadata).
 * The quantized operands must agree bit for bit; the GEMM results to 1e-5 of their
 * largest magnitude (float32 accumulation against float64). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "support/testutil.h"
#include "util/safetensors.h"


static float *read2(const st_file_t *f, const char *name, int64_t r, int64_t c)
{
    int64_t shape[2] = {r, c};
    float *x = malloc(sizeof(float) * (size_t)(r * c));
    err_t e = ERR_INIT;
    if (st_read_f32(f, name, c ? 2 : 1, shape, x, &e))
        fail_msg("%s", e.msg);
    return x;
}

static be_ptr_t dev(backend_t *be, const float *x, size_t n)
{
    err_t e = ERR_INIT;
    be_buf_t *b = be_alloc(be, n * sizeof(float), &e);
    assert_non_null(b);
    if (x)
        be_upload(be, be_ptr(b, 0), x, n * sizeof(float));
    else
        be_zero(be, be_ptr(b, 0), n * sizeof(float));
    return be_ptr(b, 0);
}

static void close_to(const char *what, const float *want, const float *got, size_t n)
{
    double amax = 0;
    for (size_t i = 0; i < n; i++)
        amax = fabs(want[i]) > amax ? fabs(want[i]) : amax;
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)want[i] - got[i]) <= 1e-5 * amax))
            fail_msg("%s[%zu]: PyTorch %.9g, engine %.9g (max |%s| %.3g)", what, i, want[i], got[i],
                     what, amax);
}

static void same_bits(const char *what, const float *want, const float *got, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&want[i], &got[i], 4))
            fail_msg("quantized %s[%zu]: PyTorch %.9g, engine %.9g", what, i, want[i], got[i]);
}

static void check_linear(const char *path)
{
    st_file_t f;
    err_t e = ERR_INIT;
    if (st_open(&f, path, &e))
        fail_msg("%s", e.msg);
    const st_tensor_t *tx = st_find(&f, "x"), *tw = st_find(&f, "w");
    assert_non_null(tx);
    assert_non_null(tw);
    const int M = (int)tx->shape[0], K = (int)tx->shape[1], N = (int)tw->shape[0];
    float *x = read2(&f, "x", M, K), *w = read2(&f, "w", N, K), *dy = read2(&f, "dy", M, N);
    int64_t nb = N;
    float *b = malloc(sizeof(float) * N);
    if (st_read_f32(&f, "b", 1, &nb, b, &e))
        fail_msg("%s", e.msg);
    backend_t *be;
    assert_int_equal(be_open("cpu", &be, &e), ERR_OK);
    mx_spec_t s;
    const char *spec = st_metadata(&f, "spec");
    assert_non_null(spec);
    if (mx_spec_parse(spec, &s, &e))
        fail_msg("%s: %s", path, e.msg);

    /* the operands, quantized along each GEMM's reduction axis */
    struct { const char *name; const float *in; int r, c; mx_axis_t axis; } q[] = {
        {"x_q_rows", x, M, K, MX_AXIS_ROW},   {"w_q_rows", w, N, K, MX_AXIS_ROW},
        {"w_q_cols", w, N, K, MX_AXIS_COL},   {"dy_q_rows", dy, M, N, MX_AXIS_ROW},
        {"dy_q_cols", dy, M, N, MX_AXIS_COL}, {"x_q_cols", x, M, K, MX_AXIS_COL}};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        size_t n = (size_t)q[i].r * q[i].c;
        float *want = read2(&f, q[i].name, q[i].r, q[i].c), *got = malloc(n * sizeof *got);
        be_ptr_t pi = dev(be, q[i].in, n), po = dev(be, NULL, n);
        be_fake_quant(be, po, pi, q[i].r, q[i].c, q[i].axis, &s, 0, 0);
        be_download(be, got, po, n * sizeof *got);
        same_bits(q[i].name, want, got, n);
        be_free(be, pi.buf), be_free(be, po.buf), free(want), free(got);
    }

    be_ptr_t px = dev(be, x, (size_t)M * K), pw = dev(be, w, (size_t)N * K), pb = dev(be, b, N),
             pdy = dev(be, dy, (size_t)M * N), py = dev(be, NULL, (size_t)M * N),
             pdx = dev(be, NULL, (size_t)M * K), pdw = dev(be, NULL, (size_t)N * K);
    be_linear_t a;
    memset(&a, 0, sizeof a);
    a.x = px, a.w = pw, a.b = pb, a.M = M, a.N = N, a.K = K;
    for (int o = 0; o < PREC_OPERAND_COUNT; o++)
        a.spec[o] = s;
    a.compute = PREC_COMPUTE_FP32;
    be_linear_fwd(be, &a, py, false);
    be_linear_bwd(be, &a, pdy, pdx, false, pdw, BE_NULL);
    assert_int_equal(be_sync(be, &e), ERR_OK);
    float *y = malloc(sizeof(float) * M * N), *dx = malloc(sizeof(float) * M * K),
          *dw = malloc(sizeof(float) * N * K);
    be_download(be, y, py, sizeof(float) * M * N);
    be_download(be, dx, pdx, sizeof(float) * M * K);
    be_download(be, dw, pdw, sizeof(float) * N * K);
    float *wy = read2(&f, "y", M, N), *wdx = read2(&f, "dx", M, K), *wdw = read2(&f, "dw", N, K);
    close_to("y", wy, y, (size_t)M * N);
    close_to("dx", wdx, dx, (size_t)M * K);
    close_to("dw", wdw, dw, (size_t)N * K);
    free(y), free(dx), free(dw), free(wy), free(wdx), free(wdw);
    be_free(be, px.buf), be_free(be, pw.buf), be_free(be, pb.buf), be_free(be, pdy.buf);
    be_free(be, py.buf), be_free(be, pdx.buf), be_free(be, pdw.buf);
    free(x), free(w), free(dy), free(b);
    st_close(&f);
    be_close(be);
}

static void test_mxfp8_e4m3_linear_matches_pytorch_fake_quant(void **state)
{
    check_linear("tests/fixtures/model/mx_linear.safetensors");
}

static void test_mxfp4_e2m1_linear_matches_pytorch_fake_quant(void **state)
{
    check_linear("tests/fixtures/model/mx_linear_fp4.safetensors");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mxfp8_e4m3_linear_matches_pytorch_fake_quant),
        cmocka_unit_test(test_mxfp4_e2m1_linear_matches_pytorch_fake_quant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
