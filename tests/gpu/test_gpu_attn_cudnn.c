/* GPU tests: attention through cuDNN's fused flash attention (src/backend/cuda_cudnn.cu)
 * against our exact float32 kernel on the same device, forward (out, lse) and backward
 * (dq, dk, dv): causal, GQA / MQA / MHA, left padding of several lengths including a
 * fully padded row, lengths that are not multiples of 64, K/V read from a strided KV cache.
 *
 * Tolerances (relative L2 error against the exact kernel, as for our 16-bit tiles in
 * test_gpu_ops.c, since both round the same operands to 16 bits and keep softmax and
 * accumulation in float32; cuDNN also rounds out, dq, dk, dv to 16 bits, 2^-9 / 2^-11
 * relative, well inside):
 *   bf16 compute   out 2e-2, lse 5e-3, dq / dk / dv 5e-2
 *   fp16 compute   out 3e-3, lse 1e-3, dq / dk / dv 1e-2
 * and exactly: padding queries' out rows and dq rows are 0 and their lse -inf, padding
 * keys' dk and dv rows are 0; the backward gives the same bits when run twice (mode FAST:
 * cuDNN's deterministic backward). Every output is poisoned (NaN) before the cuDNN run,
 * and each case checks that cuDNN, not the fallback, ran (its call counters).
 * The fallback test opens a backend with MXRLHF_CUDNN=off and checks it still matches.
 *
 * Built by `make test-gpu`; skips without a GPU, and without cuDNN unless
 * MXRLHF_REQUIRE_CUDNN=1 (then a missing cuDNN fails). MXRLHF_GPU_QUICK=1 drops the
 * 8 x 1024 model-shape case. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda.h"
#include "support/testutil.h"

static backend_t *gpu; /* NULL without a GPU: no_gpu says why */
static char no_gpu[1100];
static int quick;

static int setup(void **state)
{
    err_t e = ERR_INIT;
    quick = getenv("MXRLHF_GPU_QUICK") != NULL;
    if (be_open("cuda", &gpu, &e)) {
        snprintf(no_gpu, sizeof no_gpu, "%s", e.msg);
        gpu = NULL;
    }
    return 0;
}

static int teardown(void **state)
{
    be_close(gpu);
    return 0;
}

/* a GPU, and with `cudnn` cuDNN loaded in gpu: else a skip (a failure when cuDNN is missing
 * under MXRLHF_REQUIRE_CUDNN=1) */
static void need(bool cudnn)
{
    if (!gpu) {
        print_message("skipped: %s\n", no_gpu);
        skip();
    }
    err_t e = ERR_INIT;
    be_cuda_cudnn_t s;
    if (be_cuda_cudnn(gpu, &s, &e))
        fail_msg("%s", e.msg);
    if (!cudnn || s.version)
        return;
    const char *req = getenv("MXRLHF_REQUIRE_CUDNN");
    if (req && !strcmp(req, "1"))
        fail_msg("cuDNN is required (MXRLHF_REQUIRE_CUDNN=1) but not loaded: %s", s.status);
    print_message("skipped: %s\n", s.status);
    skip();
}

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t rstate = 20261207;
static float rnorm(void)
{
    uint64_t z[2];
    for (int k = 0; k < 2; k++) {
        uint64_t x = (rstate += 0x9E3779B97F4A7C15ull);
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
        z[k] = x ^ (x >> 31);
    }
    double u1 = ((z[0] >> 11) + 1) * 0x1p-53, u2 = (z[1] >> 11) * 0x1p-53;
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

static be_buf_t *dev(backend_t *be, const void *host, size_t bytes)
{
    err_t e = ERR_INIT;
    be_buf_t *b = be_alloc(be, bytes, &e);
    if (!b)
        fail_msg("%s", e.msg);
    if (host)
        be_upload(be, be_ptr(b, 0), host, bytes);
    else
        be_zero(be, be_ptr(b, 0), bytes);
    return b;
}

static void poison(backend_t *be, be_buf_t *b, size_t bytes)
{
    unsigned char *h = malloc(bytes);
    memset(h, 0xff, bytes);
    be_upload(be, be_ptr(b, 0), h, bytes);
    free(h);
}

static float *host(backend_t *be, be_buf_t *b, size_t n)
{
    err_t e = ERR_INIT;
    float *h = malloc(n * sizeof *h);
    be_download(be, h, be_ptr(b, 0), n * sizeof *h);
    if (be_sync(be, &e))
        fail_msg("%s", e.msg);
    return h;
}

/* relative L2 error of got against ref; a non-finite value must equal the reference's */
static double rel_l2(const float *ref, const float *got, size_t n, const char *what, double tol)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(ref[i]) || !isfinite(got[i])) {
            if (!(ref[i] == got[i] || (isnan(ref[i]) && isnan(got[i]))))
                fail_msg("%s: [%zu] exact %g, cuDNN %g", what, i, ref[i], got[i]);
            continue;
        }
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    double r = den > 0 ? sqrt(num / den) : sqrt(num);
    if (!(r <= tol))
        fail_msg("%s: relative error %.3g > %.1g (n %zu)", what, r, tol, n);
    return r;
}

typedef struct acase {
    const char *name;
    int B, T, H, Hkv, D;
    int pad[8];
    int S; /* > T: K/V in a cache of S rows per batch row (prefill), else rows of T */
    prec_compute_t ct;
} acase_t;

/* the op's outputs for one run */
typedef struct aout {
    float *out, *lse, *dq, *dk, *dv;
} aout_t;

static void aout_free(aout_t *o) { free(o->out), free(o->lse), free(o->dq), free(o->dk), free(o->dv); }

typedef struct abufs {
    be_buf_t *q, *k, *v, *out, *lse, *dout, *dq, *dk, *dv, *pad;
    size_t nq, nkv, nl;
    be_attn_t a;
} abufs_t;

static abufs_t bufs_new(backend_t *be, const acase_t *c)
{
    abufs_t b;
    const int S = c->S > c->T ? c->S : c->T;
    const size_t kvd = (size_t)c->Hkv * c->D;
    b.nq = (size_t)c->B * c->T * c->H * c->D;
    b.nkv = (size_t)c->B * S * kvd;
    b.nl = (size_t)c->B * c->H * c->T;
    float *q = malloc(b.nq * 4), *k = malloc(b.nkv * 4), *v = malloc(b.nkv * 4),
          *dout = malloc(b.nq * 4);
    for (size_t i = 0; i < b.nq; i++)
        q[i] = rnorm(), dout[i] = rnorm();
    for (size_t i = 0; i < b.nkv; i++)
        k[i] = rnorm(), v[i] = rnorm();
    b.q = dev(be, q, b.nq * 4), b.k = dev(be, k, b.nkv * 4), b.v = dev(be, v, b.nkv * 4);
    b.dout = dev(be, dout, b.nq * 4);
    b.out = dev(be, NULL, b.nq * 4), b.lse = dev(be, NULL, b.nl * 4);
    b.dq = dev(be, NULL, b.nq * 4), b.dk = dev(be, NULL, b.nkv * 4), b.dv = dev(be, NULL, b.nkv * 4);
    b.pad = dev(be, c->pad, sizeof(int32_t) * c->B);
    free(q), free(k), free(v), free(dout);
    memset(&b.a, 0, sizeof b.a);
    b.a.q = be_ptr(b.q, 0), b.a.k = be_ptr(b.k, 0), b.a.v = be_ptr(b.v, 0);
    b.a.out = be_ptr(b.out, 0), b.a.lse = be_ptr(b.lse, 0), b.a.pad_left = be_ptr(b.pad, 0);
    b.a.kv_sb = (size_t)S * kvd, b.a.kv_st = kvd, b.a.kv_sh = (size_t)c->D;
    b.a.B = c->B, b.a.Tq = c->T, b.a.Tk = c->T, b.a.H = c->H, b.a.Hkv = c->Hkv, b.a.D = c->D;
    b.a.q0 = 0;
    b.a.scale = 1.0f / sqrtf((float)c->D);
    return b;
}

static void bufs_free(backend_t *be, abufs_t *b)
{
    be_buf_t *all[] = {b->q, b->k, b->v, b->out, b->lse, b->dout, b->dq, b->dk, b->dv, b->pad};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        be_free(be, all[i]);
}

/* forward and backward under `mode` and compute type ct, outputs poisoned first */
static aout_t run(backend_t *be, abufs_t *b, be_cuda_attn_t mode, prec_compute_t ct)
{
    err_t e = ERR_INIT;
    if (be_cuda_set_attn(be, mode, &e))
        fail_msg("%s", e.msg);
    poison(be, b->out, b->nq * 4), poison(be, b->lse, b->nl * 4), poison(be, b->dq, b->nq * 4);
    poison(be, b->dk, b->nkv * 4), poison(be, b->dv, b->nkv * 4);
    b->a.compute = ct;
    be_attn_fwd(be, &b->a);
    be_attn_bwd(be, &b->a, be_ptr(b->dout, 0), be_ptr(b->dq, 0), be_ptr(b->dk, 0),
                be_ptr(b->dv, 0));
    aout_t o = {host(be, b->out, b->nq), host(be, b->lse, b->nl), host(be, b->dq, b->nq),
                host(be, b->dk, b->nkv), host(be, b->dv, b->nkv)};
    be_cuda_set_attn(be, BE_CUDA_ATTN_FAST, &e);
    return o;
}

static long calls(backend_t *be, long *bwd)
{
    err_t e = ERR_INIT;
    be_cuda_cudnn_t s;
    if (be_cuda_cudnn(be, &s, &e))
        fail_msg("%s", e.msg);
    *bwd = s.bwd_calls;
    return s.fwd_calls;
}

/* padding queries: out and dq rows 0, lse -inf; padding keys: dk, dv rows 0 */
static void padding_rows_exact(const acase_t *c, const abufs_t *b, const aout_t *o)
{
    const int D = c->D, H = c->H, Hkv = c->Hkv;
    for (int bb = 0; bb < c->B; bb++) {
        const int p = c->pad[bb] < c->T ? c->pad[bb] : c->T;
        for (int i = 0; i < p; i++) {
            for (int x = 0; x < H * D; x++) {
                const size_t at = ((size_t)bb * c->T + i) * H * D + x;
                if (o->out[at] != 0.0f || o->dq[at] != 0.0f)
                    fail_msg("%s: padding query (%d, %d): out %g, dq %g (want 0)", c->name, bb, i,
                             o->out[at], o->dq[at]);
            }
            for (int h = 0; h < H; h++) {
                const float l = o->lse[((size_t)bb * H + h) * c->T + i];
                if (!(isinf(l) && l < 0))
                    fail_msg("%s: padding query (%d, %d) head %d: lse %g (want -inf)", c->name, bb,
                             i, h, l);
            }
            for (int x = 0; x < Hkv * D; x++) {
                const size_t at = bb * b->a.kv_sb + (size_t)i * b->a.kv_st + x;
                if (o->dk[at] != 0.0f || o->dv[at] != 0.0f)
                    fail_msg("%s: padding key (%d, %d): dk %g, dv %g (want 0)", c->name, bb, i,
                             o->dk[at], o->dv[at]);
            }
        }
    }
}

/* rows past Tk of a KV cache are not the op's: compare the first Tk rows of each batch row */
static void kv_rows(const acase_t *c, const abufs_t *b, const float *x, float *dst)
{
    const size_t row = (size_t)c->Hkv * c->D;
    for (int bb = 0; bb < c->B; bb++)
        memcpy(dst + (size_t)bb * c->T * row, x + bb * b->a.kv_sb, (size_t)c->T * row * 4);
}

static void check_case(const acase_t *c, be_cuda_attn_t mode)
{
    const bool f16 = c->ct == PREC_COMPUTE_FP16;
    const double to = f16 ? 3e-3 : 2e-2, tl = f16 ? 1e-3 : 5e-3, tg = f16 ? 1e-2 : 5e-2;
    abufs_t b = bufs_new(gpu, c);
    aout_t ref = run(gpu, &b, BE_CUDA_ATTN_EXACT, PREC_COMPUTE_FP32);
    long b0, b1, f0 = calls(gpu, &b0);
    aout_t got = run(gpu, &b, mode, c->ct);
    long f1 = calls(gpu, &b1);
    if (f1 != f0 + 1 || b1 != b0 + 1)
        fail_msg("%s: cuDNN ran %ld forward and %ld backward calls (want 1 and 1): it fell back "
                 "to the built-in kernels (stderr says why)", c->name, f1 - f0, b1 - b0);
    char w[5][300];
    const char *ms = mode == BE_CUDA_ATTN_FAST ? "" : " (non-deterministic backward)";
    const char *parts[5] = {"out", "lse", "dq", "dk", "dv"};
    for (int i = 0; i < 5; i++)
        snprintf(w[i], sizeof w[i], "%s%s: %s", c->name, ms, parts[i]);
    const size_t nk = (size_t)c->B * c->T * c->Hkv * c->D;
    float *rk = malloc(nk * 4), *gk = malloc(nk * 4), *rv = malloc(nk * 4), *gv = malloc(nk * 4);
    kv_rows(c, &b, ref.dk, rk), kv_rows(c, &b, got.dk, gk);
    kv_rows(c, &b, ref.dv, rv), kv_rows(c, &b, got.dv, gv);
    double e[5] = {rel_l2(ref.out, got.out, b.nq, w[0], to), rel_l2(ref.lse, got.lse, b.nl, w[1], tl),
                   rel_l2(ref.dq, got.dq, b.nq, w[2], tg), rel_l2(rk, gk, nk, w[3], tg),
                   rel_l2(rv, gv, nk, w[4], tg)};
    padding_rows_exact(c, &b, &got);
    print_message("%-58s %s%s: out %.1e  lse %.1e  dq %.1e  dk %.1e  dv %.1e\n", c->name,
                  f16 ? "fp16" : "bf16", mode == BE_CUDA_ATTN_FAST ? "" : " nondet", e[0], e[1],
                  e[2], e[3], e[4]);
    free(rk), free(gk), free(rv), free(gv);
    aout_free(&ref), aout_free(&got);
    bufs_free(gpu, &b);
}

/* ---- tests -------------------------------------------------------------------------------- */

static const acase_t CASES[] = {
    {"GQA 14/2 D64, B 4 x T 256, left padding 0/37/1/255", 4, 256, 14, 2, 64, {0, 37, 1, 255}, 0,
     PREC_COMPUTE_BF16},
    {"T 200 (not a multiple of 64), a fully padded row", 3, 200, 4, 2, 64, {0, 200, 13}, 0,
     PREC_COMPUTE_BF16},
    {"MHA 2/2 D32, T 130", 2, 130, 2, 2, 32, {0, 64}, 0, PREC_COMPUTE_BF16},
    {"MQA 4/1 D128, T 77", 2, 77, 4, 1, 128, {3, 0}, 0, PREC_COMPUTE_BF16},
    {"D16, T 16 (the smallest block)", 1, 16, 2, 1, 16, {0}, 0, PREC_COMPUTE_BF16},
    {"prefill: K/V in a cache of 160 rows, T 96", 2, 96, 14, 2, 64, {0, 40}, 160,
     PREC_COMPUTE_BF16},
    {"GQA 14/2 D64, B 2 x T 128, fp16", 2, 128, 14, 2, 64, {5, 0}, 0, PREC_COMPUTE_FP16},
};

static const acase_t MODEL = {"model shape: GQA 14/2 D64, 8 x 1024", 8, 1024, 14, 2, 64,
                              {0, 100, 0, 517, 0, 0, 1000, 3}, 0, PREC_COMPUTE_BF16};

static void cudnn_is_loaded_and_says_from_where(void **state)
{
    need(false);
    err_t e = ERR_INIT;
    be_cuda_cudnn_t s;
    if (be_cuda_cudnn(gpu, &s, &e))
        fail_msg("%s", e.msg);
    print_message("%s\n", s.status);
    need(true);
    assert_true(s.version >= 91002);
}

static void cudnn_attention_matches_the_exact_kernel(void **state)
{
    need(true);
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        check_case(&CASES[i], BE_CUDA_ATTN_FAST);
    check_case(&CASES[0], BE_CUDA_ATTN_FAST_NONDET);
    if (!quick) {
        check_case(&MODEL, BE_CUDA_ATTN_FAST);
        check_case(&MODEL, BE_CUDA_ATTN_FAST_NONDET);
    }
}

static bool same_bits(const float *a, const float *b, size_t n, size_t *first)
{
    for (size_t i = 0; i < n; i++)
        if (test_f32_bits(a[i]) != test_f32_bits(b[i])) {
            *first = i;
            return false;
        }
    return true;
}

/* mode FAST: the same bits twice (asserted); FAST_NONDET: reported */
static void cudnn_backward_gives_the_same_bits_twice(void **state)
{
    need(true);
    const acase_t *c = quick ? &CASES[0] : &MODEL;
    abufs_t b = bufs_new(gpu, c);
    for (int m = 0; m < 2; m++) {
        const be_cuda_attn_t mode = m ? BE_CUDA_ATTN_FAST_NONDET : BE_CUDA_ATTN_FAST;
        aout_t x = run(gpu, &b, mode, c->ct), y = run(gpu, &b, mode, c->ct);
        const float *xs[5] = {x.out, x.lse, x.dq, x.dk, x.dv}, *ys[5] = {y.out, y.lse, y.dq, y.dk, y.dv};
        const size_t ns[5] = {b.nq, b.nl, b.nq, b.nkv, b.nkv};
        const char *names[5] = {"out", "lse", "dq", "dk", "dv"};
        for (int i = 0; i < 5; i++) {
            size_t at = 0;
            const bool same = same_bits(xs[i], ys[i], ns[i], &at);
            if (!m && !same)
                fail_msg("%s: %s differs between two runs at [%zu]: %g, %g", c->name, names[i], at,
                         xs[i][at], ys[i][at]);
            if (m)
                print_message("non-deterministic backward, %s: %s\n", names[i],
                              same ? "same bits in two runs" : "differs between runs");
        }
        aout_free(&x), aout_free(&y);
    }
    bufs_free(gpu, &b);
}

static void without_cudnn_the_builtin_kernels_still_match(void **state)
{
    need(false);
    err_t e = ERR_INIT;
    backend_t *be;
    setenv("MXRLHF_CUDNN", "off", 1);
    int rc = be_open("cuda", &be, &e);
    unsetenv("MXRLHF_CUDNN");
    if (rc)
        fail_msg("%s", e.msg);
    be_cuda_cudnn_t s;
    if (be_cuda_cudnn(be, &s, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(s.version, 0);
    assert_non_null(strstr(s.status, "MXRLHF_CUDNN=off"));
    const acase_t *c = &CASES[0];
    abufs_t b = bufs_new(be, c);
    aout_t ref = run(be, &b, BE_CUDA_ATTN_EXACT, PREC_COMPUTE_FP32);
    aout_t got = run(be, &b, BE_CUDA_ATTN_FAST, c->ct);
    rel_l2(ref.out, got.out, b.nq, "fallback: out", 2e-2);
    rel_l2(ref.lse, got.lse, b.nl, "fallback: lse", 5e-3);
    rel_l2(ref.dq, got.dq, b.nq, "fallback: dq", 5e-2);
    rel_l2(ref.dk, got.dk, b.nkv, "fallback: dk", 5e-2);
    rel_l2(ref.dv, got.dv, b.nkv, "fallback: dv", 5e-2);
    padding_rows_exact(c, &b, &got);
    if (be_cuda_cudnn(be, &s, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(s.fwd_calls + s.bwd_calls, 0);
    aout_free(&ref), aout_free(&got);
    bufs_free(be, &b);
    be_close(be);
}

static void plans_are_listed(void **state)
{
    need(false);
    be_cuda_cudnn_print(gpu, stdout);
    need(true);
    err_t e = ERR_INIT;
    be_cuda_cudnn_t s;
    if (be_cuda_cudnn(gpu, &s, &e))
        fail_msg("%s", e.msg);
    print_message("cuDNN: %d plans built, %d shapes without a plan\n", s.plans, s.failed);
    assert_int_equal(s.failed, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cudnn_is_loaded_and_says_from_where),
        cmocka_unit_test(cudnn_attention_matches_the_exact_kernel),
        cmocka_unit_test(cudnn_backward_gives_the_same_bits_twice),
        cmocka_unit_test(without_cudnn_the_builtin_kernels_still_match),
        cmocka_unit_test(plans_are_listed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
