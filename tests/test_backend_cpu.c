/* Tests for backend/ (the CPU backend): each op against a naive loop or finite
 * differences, the weight cache, determinism across thread counts, sampling. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "support/testutil.h"
#include "util/half.h"
#include "util/rng.h"

static backend_t *be;

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

/* a device buffer holding n floats copied from host (or zeros) */
static be_ptr_t dev(const float *host, size_t n)
{
    err_t e = ERR_INIT;
    be_buf_t *b = be_alloc(be, n * sizeof(float) + 4, &e);
    assert_non_null(b);
    be_ptr_t p = be_ptr(b, 0);
    if (host)
        be_upload(be, p, host, n * sizeof(float));
    else
        be_zero(be, p, n * sizeof(float));
    return p;
}

static be_ptr_t dev_i(const int32_t *host, size_t n)
{
    err_t e = ERR_INIT;
    be_buf_t *b = be_alloc(be, n * sizeof(int32_t) + 4, &e);
    assert_non_null(b);
    be_upload(be, be_ptr(b, 0), host, n * sizeof(int32_t));
    return be_ptr(b, 0);
}

static void get(float *host, be_ptr_t p, size_t n) { be_download(be, host, p, n * sizeof(float)); }
static void put(be_ptr_t p, const float *host, size_t n) { be_upload(be, p, host, n * sizeof(float)); }
static void release(be_ptr_t p) { be_free(be, p.buf); }

static void fill(float *x, size_t n, uint64_t stream, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)rng_normal(42, stream, i) * scale;
}

static void expect_close(const char *what, const float *want, const float *got, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)want[i] - got[i]);
        if (!(d <= tol * (1 + fabs(want[i]))))
            fail_msg("%s[%zu]: expected %.9g, got %.9g (tolerance %g)", what, i, want[i], got[i], tol);
    }
}

static be_linear_t linear_args(be_ptr_t x, be_ptr_t w, be_ptr_t b, int M, int N, int K)
{
    be_linear_t a;
    memset(&a, 0, sizeof a);
    a.x = x, a.w = w, a.b = b, a.M = M, a.N = N, a.K = K;
    for (int o = 0; o < PREC_OPERAND_COUNT; o++)
        a.spec[o] = mx_spec_default(MX_FP32);
    a.compute = PREC_COMPUTE_FP32;
    return a;
}

/* ---- linear ------------------------------------------------------------------------------ */

static void test_linear_forward_matches_naive(void **state)
{
    enum { M = 7, N = 5, K = 9 };
    float x[M * K], w[N * K], b[N], y[M * N], y0[M * N], want[M * N];
    fill(x, M * K, 1, 1), fill(w, N * K, 2, 1), fill(b, N, 3, 1), fill(y0, M * N, 4, 1);
    be_ptr_t dx = dev(x, M * K), dw = dev(w, N * K), db = dev(b, N), dy = dev(y0, M * N);
    be_linear_t a = linear_args(dx, dw, db, M, N, K);
    be_linear_fwd(be, &a, dy, true);
    get(y, dy, M * N);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = b[n];
            for (int k = 0; k < K; k++)
                s += (double)x[m * K + k] * w[n * K + k];
            want[m * N + n] = (float)(s + y0[m * N + n]);
        }
    expect_close("y", want, y, M * N, 1e-5);
    release(dx), release(dw), release(db), release(dy);
}

static void test_linear_backward_matches_naive(void **state)
{
    enum { M = 6, N = 4, K = 5 };
    float x[M * K], w[N * K], g[M * N], dx0[M * K], dw0[N * K], db0[N];
    fill(x, M * K, 1, 1), fill(w, N * K, 2, 1), fill(g, M * N, 3, 1);
    fill(dx0, M * K, 5, 1), fill(dw0, N * K, 6, 1), fill(db0, N, 7, 1);
    be_ptr_t px = dev(x, M * K), pw = dev(w, N * K), pg = dev(g, M * N);
    be_ptr_t pdx = dev(dx0, M * K), pdw = dev(dw0, N * K), pdb = dev(db0, N);
    be_linear_t a = linear_args(px, pw, BE_NULL, M, N, K);
    be_linear_bwd(be, &a, pg, pdx, true, pdw, pdb);
    float dx[M * K], dw[N * K], db[N], wx[M * K], ww[N * K], wb[N];
    get(dx, pdx, M * K), get(dw, pdw, N * K), get(db, pdb, N);
    for (int m = 0; m < M; m++)
        for (int k = 0; k < K; k++) {
            double s = dx0[m * K + k];
            for (int n = 0; n < N; n++)
                s += (double)g[m * N + n] * w[n * K + k];
            wx[m * K + k] = (float)s;
        }
    for (int n = 0; n < N; n++) {
        double sb = db0[n];
        for (int m = 0; m < M; m++)
            sb += g[m * N + n];
        wb[n] = (float)sb;
        for (int k = 0; k < K; k++) {
            double s = dw0[n * K + k];
            for (int m = 0; m < M; m++)
                s += (double)g[m * N + n] * x[m * K + k];
            ww[n * K + k] = (float)s;
        }
    }
    expect_close("dx", wx, dx, M * K, 1e-5);
    expect_close("dw", ww, dw, N * K, 1e-5);
    expect_close("db", wb, db, N, 1e-5);
    release(px), release(pw), release(pg), release(pdx), release(pdw), release(pdb);
}

/* The linear op's three GEMMs give the same bits on 1 and 3 threads, on shapes where a plain
 * multi-threaded OpenBLAS call does not (measured on an AMD EPYC: 20x512x64, 128x128x128,
 * 7x1024x96 differ between 1 and 2 OpenBLAS threads). */
static void test_linear_bits_do_not_depend_on_thread_count(void **state)
{
    static const int shapes[][3] = {{20, 512, 64}, {128, 128, 128}, {7, 1024, 96}, {130, 200, 48}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *x = malloc(sizeof(float) * M * K), *w = malloc(sizeof(float) * N * K),
              *g = malloc(sizeof(float) * M * N), *out[2][3];
        assert_non_null(x), assert_non_null(w), assert_non_null(g);
        fill(x, (size_t)M * K, 11, 1), fill(w, (size_t)N * K, 12, 1), fill(g, (size_t)M * N, 13, 1);
        for (int r = 0; r < 2; r++) {
            omp_set_num_threads(r ? 3 : 1);
            be_ptr_t px = dev(x, (size_t)M * K), pw = dev(w, (size_t)N * K), pg = dev(g, (size_t)M * N);
            be_ptr_t py = dev(NULL, (size_t)M * N), pdx = dev(NULL, (size_t)M * K),
                     pdw = dev(NULL, (size_t)N * K);
            be_linear_t a = linear_args(px, pw, BE_NULL, M, N, K);
            be_linear_fwd(be, &a, py, false);
            be_linear_bwd(be, &a, pg, pdx, false, pdw, BE_NULL);
            out[r][0] = malloc(sizeof(float) * M * N), out[r][1] = malloc(sizeof(float) * M * K);
            out[r][2] = malloc(sizeof(float) * N * K);
            get(out[r][0], py, (size_t)M * N), get(out[r][1], pdx, (size_t)M * K);
            get(out[r][2], pdw, (size_t)N * K);
            release(px), release(pw), release(pg), release(py), release(pdx), release(pdw);
        }
        omp_set_num_threads(2);
        const size_t n[3] = {(size_t)M * N, (size_t)M * K, (size_t)N * K};
        static const char *const what[3] = {"y", "dx", "dW"};
        for (int o = 0; o < 3; o++) {
            if (memcmp(out[0][o], out[1][o], n[o] * sizeof(float)))
                fail_msg("%dx%dx%d: %s differs between 1 and 3 threads", M, N, K, what[o]);
            free(out[0][o]), free(out[1][o]);
        }
        free(x), free(w), free(g);
    }
}

static void test_linear_bf16_compute_rounds_operands_and_output(void **state)
{
    enum { M = 3, N = 4, K = 64 };
    float x[M * K], w[N * K], y[M * N], xr[M * K], wr[N * K];
    fill(x, M * K, 1, 1), fill(w, N * K, 2, 1);
    for (int i = 0; i < M * K; i++)
        xr[i] = half_bf16_to_f32(half_f32_to_bf16(x[i]));
    for (int i = 0; i < N * K; i++)
        wr[i] = half_bf16_to_f32(half_f32_to_bf16(w[i]));
    be_ptr_t px = dev(x, M * K), pw = dev(w, N * K), py = dev(NULL, M * N);
    be_linear_t a = linear_args(px, pw, BE_NULL, M, N, K);
    a.compute = PREC_COMPUTE_BF16;
    be_linear_fwd(be, &a, py, false);
    get(y, py, M * N);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += (double)xr[m * K + k] * wr[n * K + k];
            float want = half_bf16_to_f32(half_f32_to_bf16((float)s));
            float got = y[m * N + n];
            /* the output is a bf16 value, and the bf16 rounding of the exact product sum
             * (float32 accumulation may sit one bf16 step away) */
            assert_true(half_bf16_to_f32(half_f32_to_bf16(got)) == got);
            assert_true(fabsf(got - want) <= fabsf(want) * 0x1p-7f + 1e-6f);
        }
    release(px), release(pw), release(py);
}

static void test_weight_cache_reused_until_version_changes(void **state)
{
    enum { M = 2, N = 3, K = 32 };
    float x[M * K], w[N * K], y1[M * N], y2[M * N], y3[M * N];
    fill(x, M * K, 1, 1), fill(w, N * K, 2, 1);
    be_ptr_t px = dev(x, M * K), pw = dev(w, N * K), py = dev(NULL, M * N);
    err_t e = ERR_INIT;
    be_wcache_t *wc = be_wcache_new(be, &e);
    be_linear_t a = linear_args(px, pw, BE_NULL, M, N, K);
    a.spec[PREC_OP_WEIGHT] = mx_spec_default(MX_BF16);
    a.wcache = wc;
    a.wversion = 1;
    be_linear_fwd(be, &a, py, false);
    get(y1, py, M * N);
    assert_int_equal(be_wcache_bytes(be, wc), N * K * sizeof(float));
    /* the weight changes but its version does not: the cached copy is used */
    for (int i = 0; i < N * K; i++)
        w[i] *= 2;
    put(pw, w, N * K);
    be_linear_fwd(be, &a, py, false);
    get(y2, py, M * N);
    assert_memory_equal(y1, y2, sizeof y1);
    a.wversion = 2;
    be_linear_fwd(be, &a, py, false);
    get(y3, py, M * N);
    for (int i = 0; i < M * N; i++)
        assert_true(fabsf(y3[i] - 2 * y1[i]) <= 1e-5f * (1 + fabsf(y1[i])));
    be_wcache_free(be, wc);
    release(px), release(pw), release(py);
}

static void test_fake_quant_op_equals_whole_matrix_library_call(void **state)
{
    /* the backend splits the work over rows or 32-row bands; the result must be the
     * library's own whole-matrix answer, bit for bit */
    enum { R = 70, C = 45 };
    float in[R * C], want[R * C], got[R * C];
    fill(in, R * C, 9, 3);
    in[5] = 0, in[100] = 1e-30f;
    mx_spec_t s = mx_spec_default(MX_FP4_E2M1);
    be_ptr_t pi = dev(in, R * C), po = dev(NULL, R * C);
    for (int axis = 0; axis < 2; axis++) {
        mx_fake_quant(in, want, R, C, (mx_axis_t)axis, &s, 0, 0);
        be_fake_quant(be, po, pi, R, C, (mx_axis_t)axis, &s, 0, 0);
        get(got, po, R * C);
        assert_memory_equal(want, got, sizeof want);
    }
    release(pi), release(po);
}

/* ---- rmsnorm, rope, swiglu, embedding ----------------------------------------------------- */

/* loss = sum c * y, for finite differences */
static double dot(const float *c, const float *y, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)c[i] * y[i];
    return s;
}

static void test_rmsnorm_backward_matches_finite_differences(void **state)
{
    enum { N = 3, C = 8 };
    float x[N * C], w[C], c[N * C], y[N * C], dx[N * C], dw[C] = {0};
    fill(x, N * C, 1, 1), fill(w, C, 2, 1), fill(c, N * C, 3, 1);
    be_ptr_t px = dev(x, N * C), pw = dev(w, C), py = dev(NULL, N * C), pr = dev(NULL, N);
    be_ptr_t pc = dev(c, N * C), pdx = dev(NULL, N * C), pdw = dev(dw, C);
    be_rmsnorm_fwd(be, py, pr, px, pw, N, C, 1e-6f);
    get(y, py, N * C);
    for (int n = 0; n < N; n++) { /* forward as transformers writes it */
        double ss = 0;
        for (int i = 0; i < C; i++)
            ss += (double)x[n * C + i] * x[n * C + i];
        float r = 1.0f / sqrtf((float)(ss / C) + 1e-6f);
        for (int i = 0; i < C; i++)
            assert_true(fabsf(y[n * C + i] - w[i] * (x[n * C + i] * r)) < 1e-6f);
    }
    be_rmsnorm_bwd(be, pdx, false, pdw, pc, px, pw, pr, N, C);
    get(dx, pdx, N * C), get(dw, pdw, C);
    const float h = 1e-2f;
    for (int i = 0; i < N * C; i++) {
        float s = x[i];
        x[i] = s + h, put(px, x, N * C), be_rmsnorm_fwd(be, py, pr, px, pw, N, C, 1e-6f), get(y, py, N * C);
        double lp = dot(c, y, N * C);
        x[i] = s - h, put(px, x, N * C), be_rmsnorm_fwd(be, py, pr, px, pw, N, C, 1e-6f), get(y, py, N * C);
        double lm = dot(c, y, N * C);
        x[i] = s, put(px, x, N * C);
        double fd = (lp - lm) / (2 * h);
        if (fabs(fd - dx[i]) > 2e-3 * (1 + fabs(fd)))
            fail_msg("dx[%d]: finite difference %.6g, backward %.6g", i, fd, dx[i]);
    }
    for (int i = 0; i < C; i++) {
        float s = w[i];
        w[i] = s + h, put(pw, w, C), be_rmsnorm_fwd(be, py, pr, px, pw, N, C, 1e-6f), get(y, py, N * C);
        double lp = dot(c, y, N * C);
        w[i] = s - h, put(pw, w, C), be_rmsnorm_fwd(be, py, pr, px, pw, N, C, 1e-6f), get(y, py, N * C);
        double lm = dot(c, y, N * C);
        w[i] = s, put(pw, w, C);
        double fd = (lp - lm) / (2 * h);
        if (fabs(fd - dw[i]) > 2e-3 * (1 + fabs(fd)))
            fail_msg("dw[%d]: finite difference %.6g, backward %.6g", i, fd, dw[i]);
    }
    release(px), release(pw), release(py), release(pr), release(pc), release(pdx), release(pdw);
}

static void test_rope_rotates_and_inverse_restores(void **state)
{
    enum { N = 3, NH = 2, D = 8, P = 5 };
    float x[N * NH * D], y[N * NH * D], cs[P * D / 2], sn[P * D / 2];
    int32_t pos[N] = {0, 4, 2};
    fill(x, N * NH * D, 1, 1);
    for (int p = 0; p < P; p++)
        for (int i = 0; i < D / 2; i++) {
            cs[p * D / 2 + i] = cosf(p * (i + 1) * 0.3f);
            sn[p * D / 2 + i] = sinf(p * (i + 1) * 0.3f);
        }
    be_ptr_t px = dev(x, N * NH * D), pc = dev(cs, P * D / 2), ps = dev(sn, P * D / 2),
             pp = dev_i(pos, N);
    be_rope(be, px, pp, pc, ps, N, NH, D, false);
    get(y, px, N * NH * D);
    /* row 1 (position 4), head 1, pair i = 2: x'[i] = x[i] cos - x[i+D/2] sin */
    int base = 1 * NH * D + 1 * D, i = 2;
    float c = cs[4 * D / 2 + i], s = sn[4 * D / 2 + i];
    assert_true(fabsf(y[base + i] - (x[base + i] * c - x[base + i + D / 2] * s)) < 1e-6f);
    assert_true(fabsf(y[base + i + D / 2] - (x[base + i + D / 2] * c + x[base + i] * s)) < 1e-6f);
    /* position 0 is the identity */
    assert_memory_equal(x, y, NH * D * sizeof(float));
    be_rope(be, px, pp, pc, ps, N, NH, D, true);
    get(y, px, N * NH * D);
    expect_close("restored", x, y, N * NH * D, 1e-6);
    release(px), release(pc), release(ps), release(pp);
}

static void test_swiglu_backward_matches_finite_differences(void **state)
{
    enum { n = 16 };
    float g[n], u[n], d[n], dg[n], du[n], out[n];
    fill(g, n, 1, 2), fill(u, n, 2, 1), fill(d, n, 3, 1);
    be_ptr_t pg = dev(g, n), pu = dev(u, n), pd = dev(d, n), pdg = dev(NULL, n), pdu = dev(NULL, n),
             po = dev(NULL, n);
    be_swiglu_fwd(be, po, pg, pu, n);
    get(out, po, n);
    for (int i = 0; i < n; i++)
        assert_true(fabsf(out[i] - g[i] / (1 + expf(-g[i])) * u[i]) < 1e-6f);
    be_swiglu_bwd(be, pdg, pdu, pd, pg, pu, n);
    get(dg, pdg, n), get(du, pdu, n);
    for (int i = 0; i < n; i++) {
        double h = 1e-3, gp = g[i] + h, gm = g[i] - h;
        double fp = gp / (1 + exp(-gp)) * u[i], fm = gm / (1 + exp(-gm)) * u[i];
        assert_true(fabs((fp - fm) / (2 * h) * d[i] - dg[i]) < 1e-3 * (1 + fabs(dg[i])));
        assert_true(fabs(g[i] / (1 + exp(-g[i])) * d[i] - du[i]) < 1e-5 * (1 + fabs(du[i])));
    }
    release(pg), release(pu), release(pd), release(pdg), release(pdu), release(po);
}

static void test_embedding_gathers_and_scatters_in_order(void **state)
{
    enum { V = 5, C = 3, N = 4 };
    float t[V * C], out[N * C], d[N * C], dt[V * C];
    int32_t ids[N] = {2, 0, 2, -1};
    fill(t, V * C, 1, 1), fill(d, N * C, 2, 1);
    be_ptr_t pt = dev(t, V * C), po = dev(NULL, N * C), pi = dev_i(ids, N), pd = dev(d, N * C),
             pdt = dev(NULL, V * C);
    be_embed_fwd(be, po, pt, pi, 3, C); /* the -1 (padding) row is not read */
    get(out, po, 3 * C);
    assert_memory_equal(out, t + 2 * C, C * sizeof(float));
    assert_memory_equal(out + C, t, C * sizeof(float));
    be_embed_bwd(be, pdt, pd, pi, N, C, V);
    get(dt, pdt, V * C);
    for (int c = 0; c < C; c++) {
        assert_true(dt[2 * C + c] == d[c] + d[2 * C + c]);
        assert_true(dt[0 * C + c] == d[C + c]);
        assert_true(dt[1 * C + c] == 0 && dt[4 * C + c] == 0);
    }
    release(pt), release(po), release(pi), release(pd), release(pdt);
}

/* ---- attention ------------------------------------------------------------------------------ */

enum { AB = 2, AT = 6, AH = 4, AHKV = 2, AD = 4 };

/* naive causal GQA attention over row-layout q (B,T,H*D), k/v (B,T,Hkv*D) */
static void attn_naive(const float *q, const float *k, const float *v, const int32_t *padl,
                       float *out)
{
    const float sc = 1.0f / sqrtf(AD);
    memset(out, 0, sizeof(float) * AB * AT * AH * AD);
    for (int b = 0; b < AB; b++)
        for (int h = 0; h < AH; h++) {
            int g = h / (AH / AHKV);
            for (int i = 0; i < AT; i++) {
                double s[AT], mx = -1e300, sum = 0;
                if (i < padl[b])
                    continue;
                for (int j = padl[b]; j <= i; j++) {
                    double d = 0;
                    for (int t = 0; t < AD; t++)
                        d += (double)q[((b * AT + i) * AH + h) * AD + t] * k[((b * AT + j) * AHKV + g) * AD + t];
                    s[j] = d * sc;
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int j = padl[b]; j <= i; j++)
                    sum += (s[j] = exp(s[j] - mx));
                for (int t = 0; t < AD; t++) {
                    double o = 0;
                    for (int j = padl[b]; j <= i; j++)
                        o += s[j] / sum * v[((b * AT + j) * AHKV + g) * AD + t];
                    out[((b * AT + i) * AH + h) * AD + t] = (float)o;
                }
            }
        }
}

static be_attn_t attn_args(be_ptr_t q, be_ptr_t k, be_ptr_t v, be_ptr_t out, be_ptr_t lse, be_ptr_t padl)
{
    be_attn_t a = {.q = q, .k = k, .v = v, .out = out, .lse = lse, .pad_left = padl,
                   .kv_sb = AT * AHKV * AD, .kv_st = AHKV * AD, .kv_sh = AD,
                   .B = AB, .Tq = AT, .Tk = AT, .H = AH, .Hkv = AHKV, .D = AD, .q0 = 0,
                   .scale = 1.0f / sqrtf(AD)};
    return a;
}

static void test_attention_forward_matches_naive_with_left_padding(void **state)
{
    const int NQ = AB * AT * AH * AD, NK = AB * AT * AHKV * AD;
    float q[NQ], k[NK], v[NK], out[NQ], want[NQ];
    int32_t padl[AB] = {0, 2}; /* row 1 left-padded: its first two queries see nothing */
    fill(q, NQ, 1, 1), fill(k, NK, 2, 1), fill(v, NK, 3, 1);
    be_ptr_t pq = dev(q, NQ), pk = dev(k, NK), pv = dev(v, NK), po = dev(NULL, NQ),
             pl = dev(NULL, AB * AH * AT), pp = dev_i(padl, AB);
    be_attn_t a = attn_args(pq, pk, pv, po, pl, pp);
    be_attn_fwd(be, &a);
    get(out, po, NQ);
    attn_naive(q, k, v, padl, want);
    expect_close("out", want, out, NQ, 1e-5);
    release(pq), release(pk), release(pv), release(po), release(pl), release(pp);
}

static void test_attention_decode_step_reads_cache_layout(void **state)
{
    /* one query at key index t over a (B, S, Hkv*D) cache equals row t of full attention */
    enum { S = 9 };
    const int NQ = AB * AT * AH * AD, NK = AB * AT * AHKV * AD, KVD = AHKV * AD;
    float q[NQ], k[NK], v[NK], full[NQ], kc[AB * S * KVD], vc[AB * S * KVD], qd[AB * AH * AD], od[AB * AH * AD];
    int32_t padl[AB] = {1, 0};
    fill(q, NQ, 1, 1), fill(k, NK, 2, 1), fill(v, NK, 3, 1), fill(kc, AB * S * KVD, 4, 1);
    memcpy(vc, kc, sizeof vc);
    attn_naive(q, k, v, padl, full);
    const int t = AT - 1;
    for (int b = 0; b < AB; b++) {
        memcpy(kc + b * S * KVD, k + b * AT * KVD, sizeof(float) * AT * KVD);
        memcpy(vc + b * S * KVD, v + b * AT * KVD, sizeof(float) * AT * KVD);
        memcpy(qd + b * AH * AD, q + (b * AT + t) * AH * AD, sizeof(float) * AH * AD);
    }
    be_ptr_t pq = dev(qd, AB * AH * AD), pk = dev(kc, AB * S * KVD), pv = dev(vc, AB * S * KVD),
             po = dev(NULL, AB * AH * AD), pp = dev_i(padl, AB);
    be_attn_t a = {.q = pq, .k = pk, .v = pv, .out = po, .lse = BE_NULL, .pad_left = pp,
                   .kv_sb = S * KVD, .kv_st = KVD, .kv_sh = AD, .B = AB, .Tq = 1, .Tk = t + 1,
                   .H = AH, .Hkv = AHKV, .D = AD, .q0 = t, .scale = 1.0f / sqrtf(AD)};
    be_attn_fwd(be, &a);
    get(od, po, AB * AH * AD);
    for (int b = 0; b < AB; b++)
        expect_close("decode", full + (b * AT + t) * AH * AD, od + b * AH * AD, AH * AD, 1e-5);
    release(pq), release(pk), release(pv), release(po), release(pp);
}

static void test_attention_backward_matches_finite_differences(void **state)
{
    const int NQ = AB * AT * AH * AD, NK = AB * AT * AHKV * AD;
    float q[NQ], k[NK], v[NK], c[NQ], out[NQ], dq[NQ], dk[NK], dv[NK];
    int32_t padl[AB] = {0, 1};
    fill(q, NQ, 1, 1), fill(k, NK, 2, 1), fill(v, NK, 3, 1), fill(c, NQ, 4, 1);
    for (int i = 0; i < AH * AD; i++) /* no gradient from the padding query */
        c[(1 * AT + 0) * AH * AD + i] = 0;
    be_ptr_t pq = dev(q, NQ), pk = dev(k, NK), pv = dev(v, NK), po = dev(NULL, NQ),
             pl = dev(NULL, AB * AH * AT), pp = dev_i(padl, AB), pc = dev(c, NQ),
             pdq = dev(NULL, NQ), pdk = dev(NULL, NK), pdv = dev(NULL, NK);
    be_attn_t a = attn_args(pq, pk, pv, po, pl, pp);
    be_attn_fwd(be, &a);
    be_attn_bwd(be, &a, pc, pdq, pdk, pdv);
    get(dq, pdq, NQ), get(dk, pdk, NK), get(dv, pdv, NK);
    struct { float *x, *g; be_ptr_t p; int n; const char *name; } in[3] = {
        {q, dq, pq, NQ, "dq"}, {k, dk, pk, NK, "dk"}, {v, dv, pv, NK, "dv"}};
    const float h = 1e-2f;
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < in[s].n; i += 3) {
            float x0 = in[s].x[i];
            in[s].x[i] = x0 + h, put(in[s].p, in[s].x, in[s].n), be_attn_fwd(be, &a), get(out, po, NQ);
            double lp = dot(c, out, NQ);
            in[s].x[i] = x0 - h, put(in[s].p, in[s].x, in[s].n), be_attn_fwd(be, &a), get(out, po, NQ);
            double lm = dot(c, out, NQ);
            in[s].x[i] = x0, put(in[s].p, in[s].x, in[s].n);
            double fd = (lp - lm) / (2 * h);
            if (fabs(fd - in[s].g[i]) > 3e-3 * (1 + fabs(fd)))
                fail_msg("%s[%d]: finite difference %.6g, backward %.6g", in[s].name, i, fd, in[s].g[i]);
        }
    release(pq), release(pk), release(pv), release(po), release(pl), release(pp), release(pc);
    release(pdq), release(pdk), release(pdv);
}

/* ---- losses ---------------------------------------------------------------------------------- */

static void test_logsoftmax_entropy_and_their_gradient(void **state)
{
    enum { N = 3, V = 11 };
    float l[N * V], lp[N], lse[N], ent[N], d[N * V], dlp[N] = {0.7f, -1.3f, 0.4f},
          dent[N] = {0.2f, 0.5f, -0.9f};
    int32_t ids[N] = {3, -1, 10};
    fill(l, N * V, 1, 3);
    be_ptr_t pl = dev(l, N * V), plp = dev(NULL, N), pls = dev(NULL, N), pe = dev(NULL, N),
             pi = dev_i(ids, N), pd = dev(NULL, N * V), pdl = dev(dlp, N), pde = dev(dent, N);
    be_logsoftmax_gather(be, plp, pls, pl, pi, N, V);
    be_entropy(be, pe, pl, pls, N, V);
    get(lp, plp, N), get(lse, pls, N), get(ent, pe, N);
    for (int n = 0; n < N; n++) {
        double mx = -1e300, s = 0, h = 0;
        for (int j = 0; j < V; j++)
            mx = l[n * V + j] > mx ? l[n * V + j] : mx;
        for (int j = 0; j < V; j++)
            s += exp(l[n * V + j] - mx);
        double L = mx + log(s);
        for (int j = 0; j < V; j++)
            h -= exp(l[n * V + j] - L) * (l[n * V + j] - L);
        assert_true(fabs(lse[n] - L) < 1e-5);
        assert_true(fabs(ent[n] - h) < 1e-5);
        assert_true(ids[n] < 0 ? lp[n] == 0 : fabs(lp[n] - (l[n * V + ids[n]] - L)) < 1e-5);
    }
    be_logits_bwd(be, pd, pl, pls, pe, pi, pdl, pde, N, V);
    get(d, pd, N * V);
    /* loss = sum dlp * logp + dent * entropy, by finite differences in double */
    for (int n = 0; n < N; n++)
        for (int j = 0; j < V; j++) {
            double fd[2];
            for (int sgn = 0; sgn < 2; sgn++) {
                double x[V], mx = -1e300, s = 0, h = 0;
                for (int t = 0; t < V; t++)
                    x[t] = l[n * V + t];
                x[j] += sgn ? -1e-4 : 1e-4;
                for (int t = 0; t < V; t++)
                    mx = x[t] > mx ? x[t] : mx;
                for (int t = 0; t < V; t++)
                    s += exp(x[t] - mx);
                double L = mx + log(s);
                for (int t = 0; t < V; t++)
                    h -= exp(x[t] - L) * (x[t] - L);
                fd[sgn] = (ids[n] >= 0 ? dlp[n] * (x[ids[n]] - L) : 0) + dent[n] * h;
            }
            double g = (fd[0] - fd[1]) / 2e-4;
            if (fabs(g - d[n * V + j]) > 1e-4 * (1 + fabs(g)))
                fail_msg("dlogits[%d,%d]: finite difference %.7g, backward %.7g", n, j, g, d[n * V + j]);
        }
    /* in place: the gradient may overwrite the logits */
    be_logits_bwd(be, pl, pl, pls, pe, pi, pdl, pde, N, V);
    float d2[N * V];
    get(d2, pl, N * V);
    assert_memory_equal(d, d2, sizeof d);
    release(pl), release(plp), release(pls), release(pe), release(pi), release(pd), release(pdl), release(pde);
}

/* ---- optimizer ------------------------------------------------------------------------------- */

static void test_adamw_follows_torch_formula(void **state)
{
    enum { n = 5 };
    float p[n], g[n], got[n];
    fill(p, n, 1, 1), fill(g, n, 2, 1);
    be_ptr_t pp = dev(p, n), pg = dev(g, n), pm = dev(NULL, n), pv = dev(NULL, n);
    double P[n], Mo[n] = {0}, Ve[n] = {0};
    for (int i = 0; i < n; i++)
        P[i] = p[i];
    const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1, gm = 0.5;
    for (long step = 1; step <= 3; step++) {
        be_adamw_t h = {lr, b1, b2, eps, wd, step, gm};
        be_adamw(be, pp, pg, pm, pv, n, &h);
        for (int i = 0; i < n; i++) {
            double gi = g[i] * gm;
            P[i] *= 1 - lr * wd;
            Mo[i] = b1 * Mo[i] + (1 - b1) * gi;
            Ve[i] = b2 * Ve[i] + (1 - b2) * gi * gi;
            double mh = Mo[i] / (1 - pow(b1, step)), vh = Ve[i] / (1 - pow(b2, step));
            P[i] -= lr * mh / (sqrt(vh) + eps);
        }
    }
    get(got, pp, n);
    for (int i = 0; i < n; i++)
        assert_true(fabs(got[i] - P[i]) < 1e-5);
    release(pp), release(pg), release(pm), release(pv);
}

static void test_sumsq_is_exact_order_and_flags_inf(void **state)
{
    enum { n = 200003 };
    float *x = malloc(n * sizeof *x);
    fill(x, n, 1, 1);
    be_ptr_t p = dev(x, n);
    double want = 0;
    for (int c = 0; c < n; c += 65536) { /* the documented order: 65536-element chunks */
        double s = 0;
        for (int i = c; i < n && i < c + 65536; i++)
            s += (double)x[i] * x[i];
        want += s;
    }
    omp_set_num_threads(1);
    double one = be_sumsq(be, p, n);
    omp_set_num_threads(2);
    double two = be_sumsq(be, p, n);
    assert_true(one == want && two == want);
    x[777] = INFINITY;
    put(p, x, n);
    assert_false(isfinite(be_sumsq(be, p, n)));
    free(x);
    release(p);
}

/* ---- sampling ---------------------------------------------------------------------------------- */

static void test_sampling_greedy_topk_and_determinism(void **state)
{
    enum { B = 3, V = 50 };
    float l[B * V];
    fill(l, B * V, 1, 2);
    be_ptr_t pl = dev(l, B * V);
    int32_t z[B] = {0};
    be_ptr_t po = dev_i(z, B);
    int32_t got[B], again[B];
    be_sample_t greedy = {0, 0, 1, 7, 0, 0};
    be_sample_tokens(be, po, pl, V, B, V, &greedy);
    be_download(be, got, po, sizeof got);
    for (int b = 0; b < B; b++) {
        int best = 0;
        for (int j = 1; j < V; j++)
            best = l[b * V + j] > l[b * V + best] ? j : best;
        assert_int_equal(got[b], best);
    }
    be_sample_t k1 = {1.0, 1, 1, 7, 0, 5};
    be_sample_tokens(be, po, pl, V, B, V, &k1);
    be_download(be, again, po, sizeof again);
    assert_memory_equal(got, again, sizeof got);
    be_sample_t p0 = {1.0, 0, 1e-6, 7, 0, 5}; /* a tiny nucleus keeps only the top token */
    be_sample_tokens(be, po, pl, V, B, V, &p0);
    be_download(be, again, po, sizeof again);
    assert_memory_equal(got, again, sizeof got);
    be_sample_t s = {0.8, 10, 0.9, 7, 100, 3};
    omp_set_num_threads(1);
    be_sample_tokens(be, po, pl, V, B, V, &s);
    be_download(be, got, po, sizeof got);
    omp_set_num_threads(2);
    be_sample_tokens(be, po, pl, V, B, V, &s);
    be_download(be, again, po, sizeof again);
    assert_memory_equal(got, again, sizeof got);
    for (int b = 0; b < B; b++) { /* top-k 10: the draw is among the 10 largest */
        int larger = 0;
        for (int j = 0; j < V; j++)
            larger += l[b * V + j] > l[b * V + got[b]];
        assert_true(larger < 10);
    }
    release(pl), release(po);
}

static void test_sampling_frequencies_follow_softmax(void **state)
{
    enum { V = 4, DRAWS = 4000 };
    float l[V] = {0.0f, 1.0f, -1.0f, 0.5f};
    be_ptr_t pl = dev(l, V);
    int32_t z = 0, got;
    be_ptr_t po = dev_i(&z, 1);
    int count[V] = {0};
    for (int i = 0; i < DRAWS; i++) {
        be_sample_t s = {1.0, 0, 1.0, 11, 0, (uint64_t)i};
        be_sample_tokens(be, po, pl, V, 1, V, &s);
        be_download(be, &got, po, sizeof got);
        count[got]++;
    }
    double Z = 0;
    for (int j = 0; j < V; j++)
        Z += exp(l[j]);
    for (int j = 0; j < V; j++) {
        double p = exp(l[j]) / Z, sd = sqrt(DRAWS * p * (1 - p));
        if (fabs(count[j] - DRAWS * p) > 5 * sd)
            fail_msg("token %d: drawn %d times, expected %.1f +- %.1f", j, count[j], DRAWS * p, sd);
    }
    release(pl), release(po);
}

/* ---- memory --------------------------------------------------------------------------------- */

static void test_copy2d_and_out_of_range_error(void **state)
{
    float src[12], dst[8] = {0};
    for (int i = 0; i < 12; i++)
        src[i] = (float)i;
    be_ptr_t ps = dev(src, 12), pd = dev(dst, 8);
    /* two rows of 2 floats: from pitch 5 floats (offset 0) to pitch 4 floats */
    be_copy2d(be, pd, 16, be_f32(ps, 0), 20, 8, 2);
    get(dst, pd, 8);
    float want2[8] = {0, 1, 0, 0, 5, 6, 0, 0};
    assert_memory_equal(dst, want2, sizeof dst);
    err_t e = ERR_INIT;
    assert_int_equal(be_sync(be, &e), ERR_OK);
    be_download(be, dst, be_f32(pd, 4), 100 * sizeof(float));
    assert_int_equal(be_sync(be, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "outside"));
    err_clear(&e);
    assert_int_equal(be_sync(be, &e), ERR_OK); /* reported once */
    release(ps), release(pd);
}

static void test_unknown_backend_is_bad_input_cuda_unavailable(void **state)
{
    backend_t *b;
    err_t e = ERR_INIT;
    assert_int_equal(be_open("tpu", &b, &e), ERR_INPUT);
    err_clear(&e);
    assert_int_equal(be_open("cuda", &b, &e), ERR_UNAVAILABLE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_forward_matches_naive),
        cmocka_unit_test(test_linear_backward_matches_naive),
        cmocka_unit_test(test_linear_bits_do_not_depend_on_thread_count),
        cmocka_unit_test(test_linear_bf16_compute_rounds_operands_and_output),
        cmocka_unit_test(test_weight_cache_reused_until_version_changes),
        cmocka_unit_test(test_fake_quant_op_equals_whole_matrix_library_call),
        cmocka_unit_test(test_rmsnorm_backward_matches_finite_differences),
        cmocka_unit_test(test_rope_rotates_and_inverse_restores),
        cmocka_unit_test(test_swiglu_backward_matches_finite_differences),
        cmocka_unit_test(test_embedding_gathers_and_scatters_in_order),
        cmocka_unit_test(test_attention_forward_matches_naive_with_left_padding),
        cmocka_unit_test(test_attention_decode_step_reads_cache_layout),
        cmocka_unit_test(test_attention_backward_matches_finite_differences),
        cmocka_unit_test(test_logsoftmax_entropy_and_their_gradient),
        cmocka_unit_test(test_adamw_follows_torch_formula),
        cmocka_unit_test(test_sumsq_is_exact_order_and_flags_inf),
        cmocka_unit_test(test_sampling_greedy_topk_and_determinism),
        cmocka_unit_test(test_sampling_frequencies_follow_softmax),
        cmocka_unit_test(test_copy2d_and_out_of_range_error),
        cmocka_unit_test(test_unknown_backend_is_bad_input_cuda_unavailable),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
