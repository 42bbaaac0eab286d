/* GPU tests: every op of the CUDA backend against the CPU backend on random inputs.
 *
 * Built by `make test-gpu` only (optimised, with CUDA); every test skips when no GPU
 * answers. Each output buffer is poisoned (NaN) before the op, so an element the
 * kernel forgets to write fails the comparison. Tolerances (relative L2 error
 * ||gpu - cpu|| / ||cpu||, unless said otherwise):
 *   float32 ops (norms, RoPE, SwiGLU, losses, AdamW)      1e-5  (summation order only)
 *   float32 GEMMs (fp32 specs: true fp32, no TF32)         1e-5
 *   GEMMs on MX / bf16 / fp16 operands, fp32 compute       1e-5  (operands bit-identical,
 *                                                                 accumulation order only)
 *   bf16 compute (the CPU also rounds outputs to bf16)     1e-2
 *   fp16 compute (outputs rounded on both sides)           5e-3
 *   attention, exact kernel                                1e-5
 *   attention, tensor-core tiles in 3xTF32 (fp32 compute)  2e-5
 *   attention, tensor-core tiles in TF32                   5e-3 output, 1e-2 gradients
 *   attention, bf16 tiles (bf16 compute; the CPU: fp32)    2e-2 output, 5e-2 gradients
 *   attention, fp16 tiles (fp16 compute)                   3e-3 output, 1e-2 gradients
 * and bit-exact: MX fake quant (golden file, fixture vectors, random inputs with
 * specials, both axes, short blocks, stochastic rounding), embedding gather, sampled
 * token ids (same seed, same logits -> same ids).
 * MXRLHF_GPU_QUICK=1 shrinks the sizes (compute-sanitizer runs). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda.h"
#include "support/testutil.h"

static backend_t *cpu, *gpu;
static int quick;
static char skip_why[1100];

static int setup(void **state)
{
    err_t e = ERR_INIT;
    quick = getenv("MXRLHF_GPU_QUICK") != NULL;
    if (be_open("cpu", &cpu, &e))
        return -1;
    if (be_open("cuda", &gpu, &e)) {
        snprintf(skip_why, sizeof skip_why, "%s", e.msg);
        gpu = NULL;
        return 0;
    }
    /* linear layers here test the emulated MX path (fake quant + cuBLASLt, operands
     * bit-identical: 1e-5); the tensor-core path has its own, test_gpu_mxgemm.c */
    if (be_cuda_set_mxgemm(gpu, false, &e))
        return -1;
    be_cuda_info_t info;
    if (!be_cuda_info(gpu, &info, &e))
        print_message("GPU: %s, compute capability %d.%d, %d SMs, runtime %d, driver %d\n",
                      info.name, info.cc_major, info.cc_minor, info.sms, info.runtime_version,
                      info.driver_version);
    return 0;
}

static int teardown(void **state)
{
    be_close(gpu);
    be_close(cpu);
    return 0;
}

#define NEED_GPU()                                                                       \
    do {                                                                                 \
        if (!gpu) {                                                                      \
            print_message("skipped: %s\n", skip_why);                                    \
            skip();                                                                      \
        }                                                                                \
    } while (0)

/* ---- helpers ----------------------------------------------------------------------------- */

static uint64_t rstate = 12345;
static uint64_t rnext(void)
{
    uint64_t z = (rstate += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float rnorm(void)
{
    double u1 = ((rnext() >> 11) + 1) * 0x1p-53, u2 = (rnext() >> 11) * 0x1p-53;
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

static float *rand_vec(size_t n, float scale)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = rnorm() * scale;
    return v;
}

/* the same host data on both backends */
typedef struct pair {
    be_buf_t *c, *g;
    size_t bytes;
} pair_t;

static pair_t pair_new(const void *host, size_t bytes)
{
    err_t e = ERR_INIT;
    pair_t p = {be_alloc(cpu, bytes, &e), be_alloc(gpu, bytes, &e), bytes};
    if (!p.c || !p.g)
        fail_msg("%s", e.msg);
    if (host) {
        be_upload(cpu, be_ptr(p.c, 0), host, bytes);
        be_upload(gpu, be_ptr(p.g, 0), host, bytes);
    } else {
        be_zero(cpu, be_ptr(p.c, 0), bytes);
        be_zero(gpu, be_ptr(p.g, 0), bytes);
    }
    return p;
}

static pair_t pair_f(const float *host, size_t n) { return pair_new(host, n * 4); }

static void pair_free(pair_t *p)
{
    be_free(cpu, p->c);
    be_free(gpu, p->g);
}

/* NaN everywhere on the GPU side */
static void poison(pair_t *p)
{
    unsigned char *h = malloc(p->bytes);
    memset(h, 0xff, p->bytes);
    be_upload(gpu, be_ptr(p->g, 0), h, p->bytes);
    free(h);
}

static void sync_both(void)
{
    err_t e = ERR_INIT;
    if (be_sync(cpu, &e) || be_sync(gpu, &e))
        fail_msg("%s", e.msg);
}

/* relative L2 error of the GPU copy against the CPU copy over n floats from float offset
 * off; NaN/Inf mismatches count as failures */
static double rel_err(pair_t *p, size_t off, size_t n, const char *what, double tol)
{
    float *a = malloc(n * 4), *b = malloc(n * 4);
    sync_both();
    be_download(cpu, a, be_ptr(p->c, off * 4), n * 4);
    be_download(gpu, b, be_ptr(p->g, off * 4), n * 4);
    sync_both();
    double num = 0, den = 0;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) {
            bool same = (isnan(a[i]) && isnan(b[i])) || a[i] == b[i];
            if (!same && !bad++)
                first = i;
            continue;
        }
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)a[i] * a[i];
    }
    double r = den > 0 ? sqrt(num / den) : sqrt(num);
    if (bad)
        fail_msg("%s: %zu non-finite mismatches, first [%zu]: cpu %g gpu %g", what, bad, first,
                 a[first], b[first]);
    if (!(r <= tol))
        fail_msg("%s: relative error %.3g > %.1g (n %zu)", what, r, tol, n);
    free(a), free(b);
    return r;
}

static void bit_equal(pair_t *p, size_t n, const char *what, bool zero_sign_free)
{
    uint32_t *a = malloc(n * 4), *b = malloc(n * 4);
    sync_both();
    be_download(cpu, a, be_ptr(p->c, 0), n * 4);
    be_download(gpu, b, be_ptr(p->g, 0), n * 4);
    sync_both();
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        bool same = a[i] == b[i];
        if (!same && zero_sign_free && !((a[i] | b[i]) & 0x7fffffffu))
            same = true;
        if (!same && ((a[i] & 0x7fffffffu) > 0x7f800000u) && ((b[i] & 0x7fffffffu) > 0x7f800000u))
            same = true; /* both NaN */
        if (!same && !bad++)
            first = i;
    }
    if (bad)
        fail_msg("%s: %zu of %zu differ, first [%zu]: cpu %08x gpu %08x", what, bad, n, first,
                 a[first], b[first]);
    free(a), free(b);
}

static be_ptr_t C(pair_t *p) { return be_ptr(p->c, 0); }
static be_ptr_t G(pair_t *p) { return be_ptr(p->g, 0); }

/* ---- memory -------------------------------------------------------------------------------- */

static void memory_ops_round_trip_and_range_errors_are_reported(void **state)
{
    NEED_GPU();
    err_t e = ERR_INIT;
    enum { N = 1000 };
    float *h = rand_vec(N, 1), out[N];
    pair_t p = pair_f(h, N), q = pair_f(NULL, N);
    be_copy(gpu, be_ptr(q.g, 40), be_ptr(p.g, 0), 400);
    be_copy(cpu, be_ptr(q.c, 40), be_ptr(p.c, 0), 400);
    be_copy2d(gpu, be_ptr(q.g, 2000), 64, be_ptr(p.g, 100), 48, 20, 10);
    be_copy2d(cpu, be_ptr(q.c, 2000), 64, be_ptr(p.c, 100), 48, 20, 10);
    be_zero(gpu, be_ptr(q.g, 3000), 100);
    be_zero(cpu, be_ptr(q.c, 3000), 100);
    bit_equal(&q, N, "copy, copy2d, zero", false);
    be_download(gpu, out, G(&p), sizeof out);
    assert_memory_equal(out, h, sizeof out);
    /* a copy outside the buffer is an error at the next sync, then cleared */
    be_copy(gpu, be_ptr(q.g, 3996), G(&p), 8);
    assert_int_equal(be_sync(gpu, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "outside its buffer"));
    err_t e2 = ERR_INIT;
    assert_int_equal(be_sync(gpu, &e2), ERR_OK);
    assert_null(be_host_addr(gpu, G(&p)));
    pair_free(&p), pair_free(&q);
    free(h);
}

/* ---- linear layers ------------------------------------------------------------------------ */

typedef struct lin_case {
    const char *name;
    const char *spec[PREC_OPERAND_COUNT]; /* weight input weight_bp grad_dx input_bp grad_dw */
    prec_compute_t compute;
    double tol;
} lin_case_t;

static void run_linear(const lin_case_t *lc, int M, int N, int K, bool bias, bool acc, bool cache)
{
    err_t e = ERR_INIT;
    float *x = rand_vec((size_t)M * K, 1), *w = rand_vec((size_t)N * K, 0.1f), *b = rand_vec(N, 1);
    float *y0 = rand_vec((size_t)M * N, 1), *dy = rand_vec((size_t)M * N, 1);
    float *dx0 = rand_vec((size_t)M * K, 1), *dw0 = rand_vec((size_t)N * K, 1), *db0 = rand_vec(N, 1);
    pair_t X = pair_f(x, (size_t)M * K), W = pair_f(w, (size_t)N * K), Bi = pair_f(b, N);
    pair_t Y = pair_f(y0, (size_t)M * N), DY = pair_f(dy, (size_t)M * N);
    pair_t DX = pair_f(dx0, (size_t)M * K), DW = pair_f(dw0, (size_t)N * K), DB = pair_f(db0, N);
    be_linear_t a;
    memset(&a, 0, sizeof a);
    a.M = M, a.N = N, a.K = K;
    for (int o = 0; o < PREC_OPERAND_COUNT; o++)
        if (mx_spec_parse(lc->spec[o], &a.spec[o], &e))
            fail_msg("%s", e.msg);
    a.compute = lc->compute;
    a.wversion = 7;
    a.seed = 99;
    a.stream = 0x1230;
    be_wcache_t *wc_c = cache ? be_wcache_new(cpu, &e) : NULL, *wc_g = cache ? be_wcache_new(gpu, &e) : NULL;
    char what[256];
    for (int rep = 0; rep < (cache ? 2 : 1); rep++) { /* the second pass reads the caches */
        if (!acc)
            poison(&Y);
        a.x = C(&X), a.w = C(&W), a.b = bias ? C(&Bi) : BE_NULL, a.wcache = wc_c;
        be_linear_fwd(cpu, &a, C(&Y), acc);
        a.x = G(&X), a.w = G(&W), a.b = bias ? G(&Bi) : BE_NULL, a.wcache = wc_g;
        be_linear_fwd(gpu, &a, G(&Y), acc);
        snprintf(what, sizeof what, "%s y (M %d N %d K %d%s%s, pass %d)", lc->name, M, N, K,
                 bias ? ", bias" : "", acc ? ", acc" : "", rep);
        rel_err(&Y, 0, (size_t)M * N, what, lc->tol);
    }
    for (int dxacc = 0; dxacc < 2; dxacc++) {
        if (!dxacc)
            poison(&DX);
        a.x = C(&X), a.w = C(&W), a.b = bias ? C(&Bi) : BE_NULL, a.wcache = wc_c;
        be_linear_bwd(cpu, &a, C(&DY), C(&DX), dxacc, C(&DW), bias ? C(&DB) : BE_NULL);
        a.x = G(&X), a.w = G(&W), a.b = bias ? G(&Bi) : BE_NULL, a.wcache = wc_g;
        be_linear_bwd(gpu, &a, G(&DY), G(&DX), dxacc, G(&DW), bias ? G(&DB) : BE_NULL);
        snprintf(what, sizeof what, "%s dx (M %d N %d K %d, acc %d)", lc->name, M, N, K, dxacc);
        rel_err(&DX, 0, (size_t)M * K, what, lc->tol);
        snprintf(what, sizeof what, "%s dW (M %d N %d K %d)", lc->name, M, N, K);
        rel_err(&DW, 0, (size_t)N * K, what, lc->tol);
        if (bias) {
            snprintf(what, sizeof what, "%s db (M %d N %d)", lc->name, M, N);
            rel_err(&DB, 0, N, what, lc->compute == PREC_COMPUTE_FP32 ? 1e-5 : 1e-3);
        }
    }
    if (cache) {
        assert_true(be_wcache_bytes(gpu, wc_g) > 0 || (!strcmp(lc->spec[0], "fp32") &&
                                                       lc->compute == PREC_COMPUTE_FP32));
        be_wcache_free(cpu, wc_c);
        be_wcache_free(gpu, wc_g);
    }
    pair_free(&X), pair_free(&W), pair_free(&Bi), pair_free(&Y), pair_free(&DY);
    pair_free(&DX), pair_free(&DW), pair_free(&DB);
    free(x), free(w), free(b), free(y0), free(dy), free(dx0), free(dw0), free(db0);
}

static const lin_case_t LIN_CASES[] = {
    {"fp32", {"fp32", "fp32", "fp32", "fp32", "fp32", "fp32"}, PREC_COMPUTE_FP32, 1e-5},
    {"bf16 compute", {"fp32", "fp32", "fp32", "fp32", "fp32", "fp32"}, PREC_COMPUTE_BF16, 1e-2},
    {"fp16 compute", {"fp32", "fp32", "fp32", "fp32", "fp32", "fp32"}, PREC_COMPUTE_FP16, 5e-3},
    {"bf16 specs", {"bf16", "bf16", "bf16", "bf16", "bf16", "bf16"}, PREC_COMPUTE_FP32, 1e-5},
    {"fp16 specs", {"fp16", "fp16", "fp16", "fp16", "fp16", "fp16"}, PREC_COMPUTE_FP32, 1e-5},
    {"mxfp8 all operands",
     {"mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp8_e4m3", "mxfp8_e5m2"},
     PREC_COMPUTE_FP32, 1e-5},
    {"mxfp4 stochastic rceil, mxint8, mxfp6",
     {"mxfp4_e2m1/32/stochastic/rceil", "mxfp6_e3m2/16", "mxint8/32/nearest",
      "mxfp4_e2m1/32/stochastic", "mxfp6_e2m3/8/trunc/rceil", "mxint4/32/stochastic"},
     PREC_COMPUTE_FP32, 1e-5},
    {"mxfp8 weight, fp32 input (fp32 GEMM)",
     {"mxfp8_e4m3", "fp32", "mxfp8_e4m3", "fp32", "fp32", "fp32"}, PREC_COMPUTE_FP32, 1e-5},
    {"mxfp8 under bf16 compute",
     {"mxfp8_e4m3", "mxfp8_e4m3", "fp32", "fp32", "fp32", "fp32"}, PREC_COMPUTE_BF16, 1e-2},
    {"mxfp4 under fp16 compute",
     {"mxfp4_e2m1", "mxfp4_e2m1", "mxfp4_e2m1", "mxfp4_e2m1", "mxfp4_e2m1", "mxfp4_e2m1"},
     PREC_COMPUTE_FP16, 5e-3},
};

static void linear_layers_match_cpu_for_every_precision(void **state)
{
    NEED_GPU();
    for (size_t i = 0; i < sizeof LIN_CASES / sizeof LIN_CASES[0]; i++) {
        run_linear(&LIN_CASES[i], 37, 48, 72, true, false, true);
        run_linear(&LIN_CASES[i], 1, 40, 64, false, true, true);
        if (!quick)
            run_linear(&LIN_CASES[i], 130, 200, 96, true, true, false);
    }
}

/* ---- norms, rotary, element-wise ---------------------------------------------------------- */

static void rmsnorm_forward_and_backward_match_cpu(void **state)
{
    NEED_GPU();
    const int shapes[][2] = {{33, 896}, {5, 64}, {130, 40}};
    for (size_t s = 0; s < 3; s++) {
        int N = shapes[s][0], Cc = shapes[s][1];
        float *x = rand_vec((size_t)N * Cc, 2), *w = rand_vec(Cc, 1), *dy = rand_vec((size_t)N * Cc, 1);
        float *dx0 = rand_vec((size_t)N * Cc, 1), *dw0 = rand_vec(Cc, 1);
        pair_t X = pair_f(x, (size_t)N * Cc), W = pair_f(w, Cc), Y = pair_f(NULL, (size_t)N * Cc);
        pair_t R = pair_f(NULL, N), DY = pair_f(dy, (size_t)N * Cc), DX = pair_f(dx0, (size_t)N * Cc);
        pair_t DW = pair_f(dw0, Cc);
        poison(&Y), poison(&R);
        be_rmsnorm_fwd(cpu, C(&Y), C(&R), C(&X), C(&W), N, Cc, 1e-6f);
        be_rmsnorm_fwd(gpu, G(&Y), G(&R), G(&X), G(&W), N, Cc, 1e-6f);
        rel_err(&Y, 0, (size_t)N * Cc, "rmsnorm y", 1e-5);
        rel_err(&R, 0, N, "rmsnorm rstd", 1e-5);
        for (int acc = 0; acc < 2; acc++) {
            if (!acc)
                poison(&DX);
            be_rmsnorm_bwd(cpu, C(&DX), acc, C(&DW), C(&DY), C(&X), C(&W), C(&R), N, Cc);
            be_rmsnorm_bwd(gpu, G(&DX), acc, G(&DW), G(&DY), G(&X), G(&W), G(&R), N, Cc);
            rel_err(&DX, 0, (size_t)N * Cc, "rmsnorm dx", 1e-5);
            rel_err(&DW, 0, Cc, "rmsnorm dw", 1e-5);
        }
        pair_free(&X), pair_free(&W), pair_free(&Y), pair_free(&R), pair_free(&DY);
        pair_free(&DX), pair_free(&DW);
        free(x), free(w), free(dy), free(dx0), free(dw0);
    }
}

static void rope_and_its_inverse_match_cpu(void **state)
{
    NEED_GPU();
    const int N = 37, nh = 14, D = 64, P = 300, h = D / 2;
    float *x = rand_vec((size_t)N * nh * D, 1), *ct = malloc(sizeof(float) * P * h), *st = malloc(sizeof(float) * P * h);
    int32_t pos[37];
    for (int p = 0; p < P; p++)
        for (int i = 0; i < h; i++) {
            float ang = (float)p / powf(10000.0f, (float)(2 * i) / D);
            ct[p * h + i] = cosf(ang), st[p * h + i] = sinf(ang);
        }
    for (int n = 0; n < N; n++)
        pos[n] = (int32_t)(rnext() % P);
    pair_t X = pair_f(x, (size_t)N * nh * D), CT = pair_f(ct, (size_t)P * h), ST = pair_f(st, (size_t)P * h);
    pair_t PO = pair_new(pos, sizeof pos);
    for (int inv = 0; inv < 2; inv++) {
        be_rope(cpu, C(&X), C(&PO), C(&CT), C(&ST), N, nh, D, inv);
        be_rope(gpu, G(&X), G(&PO), G(&CT), G(&ST), N, nh, D, inv);
        rel_err(&X, 0, (size_t)N * nh * D, inv ? "rope inverse" : "rope", 1e-6);
    }
    pair_free(&X), pair_free(&CT), pair_free(&ST), pair_free(&PO);
    free(x), free(ct), free(st);
}

static void swiglu_and_embedding_match_cpu(void **state)
{
    NEED_GPU();
    const size_t n = 10007;
    float *g = rand_vec(n, 3), *u = rand_vec(n, 1), *d = rand_vec(n, 1);
    pair_t Gt = pair_f(g, n), U = pair_f(u, n), D = pair_f(d, n), O = pair_f(NULL, n);
    pair_t DG = pair_f(NULL, n), DU = pair_f(NULL, n);
    poison(&O), poison(&DG), poison(&DU);
    be_swiglu_fwd(cpu, C(&O), C(&Gt), C(&U), n);
    be_swiglu_fwd(gpu, G(&O), G(&Gt), G(&U), n);
    rel_err(&O, 0, n, "swiglu", 1e-6);
    be_swiglu_bwd(cpu, C(&DG), C(&DU), C(&D), C(&Gt), C(&U), n);
    be_swiglu_bwd(gpu, G(&DG), G(&DU), G(&D), G(&Gt), G(&U), n);
    rel_err(&DG, 0, n, "swiglu dgate", 1e-6);
    rel_err(&DU, 0, n, "swiglu dup", 1e-6);
    pair_free(&Gt), pair_free(&U), pair_free(&D), pair_free(&O), pair_free(&DG), pair_free(&DU);
    free(g), free(u), free(d);

    /* embedding: gather, and a scatter-add with repeated and negative ids */
    const int V = 500, Cc = 96, N = 300;
    float *tab = rand_vec((size_t)V * Cc, 1), *dout = rand_vec((size_t)N * Cc, 1);
    int32_t ids[300], gids[300];
    for (int i = 0; i < N; i++) {
        ids[i] = (int32_t)(rnext() % 40); /* many repeats */
        gids[i] = i % 17 == 0 ? -1 : ids[i];
    }
    pair_t T = pair_f(tab, (size_t)V * Cc), OUT = pair_f(NULL, (size_t)N * Cc), ID = pair_new(ids, sizeof ids);
    pair_t GI = pair_new(gids, sizeof gids), DO = pair_f(dout, (size_t)N * Cc);
    poison(&OUT);
    be_embed_fwd(cpu, C(&OUT), C(&T), C(&ID), N, Cc);
    be_embed_fwd(gpu, G(&OUT), G(&T), G(&ID), N, Cc);
    bit_equal(&OUT, (size_t)N * Cc, "embedding gather", false);
    be_embed_bwd(cpu, C(&T), C(&DO), C(&GI), N, Cc, V);
    be_embed_bwd(gpu, G(&T), G(&DO), G(&GI), N, Cc, V);
    rel_err(&T, 0, (size_t)V * Cc, "embedding scatter-add", 1e-6);
    pair_free(&T), pair_free(&OUT), pair_free(&ID), pair_free(&GI), pair_free(&DO);
    free(tab), free(dout);
}

/* ---- losses, optimizer, reductions ------------------------------------------------------------- */

static void losses_match_cpu(void **state)
{
    NEED_GPU();
    const int shapes[][2] = {{9, 5000}, {3, 151936}, {1, 7}};
    for (size_t s = 0; s < 3; s++) {
        int N = shapes[s][0], V = shapes[s][1];
        if (quick && V > 10000)
            continue;
        float *l = rand_vec((size_t)N * V, 3), *dlp = rand_vec(N, 1), *den = rand_vec(N, 1);
        int32_t *ids = malloc(sizeof(int32_t) * N);
        for (int i = 0; i < N; i++)
            ids[i] = i == 1 ? -1 : (int32_t)(rnext() % V);
        pair_t L = pair_f(l, (size_t)N * V), ID = pair_new(ids, sizeof(int32_t) * N);
        pair_t LP = pair_f(NULL, N), LSE = pair_f(NULL, N), ENT = pair_f(NULL, N);
        pair_t DLP = pair_f(dlp, N), DEN = pair_f(den, N), DL = pair_f(NULL, (size_t)N * V);
        poison(&LP), poison(&LSE), poison(&ENT), poison(&DL);
        be_logsoftmax_gather(cpu, C(&LP), C(&LSE), C(&L), C(&ID), N, V);
        be_logsoftmax_gather(gpu, G(&LP), G(&LSE), G(&L), G(&ID), N, V);
        rel_err(&LP, 0, N, "log-softmax gather", 1e-5);
        rel_err(&LSE, 0, N, "log-sum-exp", 1e-6);
        be_entropy(cpu, C(&ENT), C(&L), C(&LSE), N, V);
        be_entropy(gpu, G(&ENT), G(&L), G(&LSE), N, V);
        rel_err(&ENT, 0, N, "entropy", 1e-5);
        be_logits_bwd(cpu, C(&DL), C(&L), C(&LSE), C(&ENT), C(&ID), C(&DLP), C(&DEN), N, V);
        be_logits_bwd(gpu, G(&DL), G(&L), G(&LSE), G(&ENT), G(&ID), G(&DLP), G(&DEN), N, V);
        rel_err(&DL, 0, (size_t)N * V, "logits backward", 1e-5);
        /* in place (the model's use), dlogp only */
        be_logits_bwd(cpu, C(&L), C(&L), C(&LSE), BE_NULL, C(&ID), C(&DLP), BE_NULL, N, V);
        be_logits_bwd(gpu, G(&L), G(&L), G(&LSE), BE_NULL, G(&ID), G(&DLP), BE_NULL, N, V);
        rel_err(&L, 0, (size_t)N * V, "logits backward in place", 1e-5);
        pair_free(&L), pair_free(&ID), pair_free(&LP), pair_free(&LSE), pair_free(&ENT);
        pair_free(&DLP), pair_free(&DEN), pair_free(&DL);
        free(l), free(dlp), free(den), free(ids);
    }
}

static void adamw_sumsq_and_scale_match_cpu(void **state)
{
    NEED_GPU();
    const size_t n = quick ? 10007 : 300007;
    float *p = rand_vec(n, 1), *g = rand_vec(n, 1), *m = rand_vec(n, 0.1f), *v = rand_vec(n, 0.1f);
    for (size_t i = 0; i < n; i++)
        v[i] = fabsf(v[i]);
    pair_t P = pair_f(p, n), Gr = pair_f(g, n), M = pair_f(m, n), Vv = pair_f(v, n);
    be_adamw_t h = {1e-3, 0.9, 0.999, 1e-8, 0.01, 3, 0.5};
    for (int step = 0; step < 3; step++) {
        h.step = 3 + step;
        be_adamw(cpu, C(&P), C(&Gr), C(&M), C(&Vv), n, &h);
        be_adamw(gpu, G(&P), G(&Gr), G(&M), G(&Vv), n, &h);
    }
    rel_err(&P, 0, n, "adamw parameters", 1e-6);
    rel_err(&M, 0, n, "adamw m", 1e-6);
    rel_err(&Vv, 0, n, "adamw v", 1e-6);
    double a = be_sumsq(cpu, C(&Gr), n), b = be_sumsq(gpu, G(&Gr), n);
    if (!(fabs(a - b) <= 1e-12 * a))
        fail_msg("sumsq: cpu %.17g gpu %.17g", a, b);
    assert_true(be_sumsq(gpu, G(&Gr), n) == b); /* the same bits run to run */
    float inf = INFINITY;
    be_upload(gpu, be_ptr(Gr.g, 4 * (n / 2)), &inf, 4);
    assert_false(isfinite(be_sumsq(gpu, G(&Gr), n)));
    be_upload(cpu, be_ptr(Gr.c, 4 * (n / 2)), &g[n / 2], 4);
    be_upload(gpu, be_ptr(Gr.g, 4 * (n / 2)), &g[n / 2], 4);
    be_scale(cpu, C(&Gr), 0.37f, n);
    be_scale(gpu, G(&Gr), 0.37f, n);
    bit_equal(&Gr, n, "scale", false);
    pair_free(&P), pair_free(&Gr), pair_free(&M), pair_free(&Vv);
    free(p), free(g), free(m), free(v);
}

/* ---- attention ----------------------------------------------------------------------------- */

typedef struct attn_case {
    const char *name;
    int B, Tq, Tk, H, Hkv, D, q0;
    int padl[4];
    bool cache; /* K/V in a cache of S rows (strided), else row layout */
    int S;
} attn_case_t;

static void run_attention(const attn_case_t *ac, be_cuda_attn_t mode, prec_compute_t ct)
{
    err_t e = ERR_INIT;
    if (be_cuda_set_attn(gpu, mode, &e))
        fail_msg("%s", e.msg);
    const int B = ac->B, Tq = ac->Tq, H = ac->H, Hkv = ac->Hkv, D = ac->D;
    const size_t qrow = (size_t)H * D, kvd = (size_t)Hkv * D;
    const int S = ac->cache ? ac->S : ac->Tk;
    const size_t nq = (size_t)B * Tq * qrow, nkv = (size_t)B * S * kvd, nl = (size_t)B * H * Tq;
    float *q = rand_vec(nq, 1), *k = rand_vec(nkv, 1), *v = rand_vec(nkv, 1), *dout = rand_vec(nq, 1);
    pair_t Q = pair_f(q, nq), K = pair_f(k, nkv), Vv = pair_f(v, nkv), O = pair_f(NULL, nq);
    pair_t L = pair_f(NULL, nl), DO = pair_f(dout, nq), DQ = pair_f(NULL, nq);
    pair_t DK = pair_f(NULL, nkv), DV = pair_f(NULL, nkv);
    pair_t PL = pair_new(ac->padl, sizeof(int32_t) * B);
    be_attn_t a = {.kv_sb = (size_t)S * kvd, .kv_st = kvd, .kv_sh = (size_t)D, .B = B, .Tq = Tq,
                   .Tk = ac->Tk, .H = H, .Hkv = Hkv, .D = D, .q0 = ac->q0,
                   .scale = 1.0f / sqrtf((float)D), .compute = ct};
    poison(&O), poison(&L), poison(&DQ);
    if (ac->Tk < S) /* rows past Tk are not the op's: both sides start from zeros there */
        ;
    else
        poison(&DK), poison(&DV);
    a.q = C(&Q), a.k = C(&K), a.v = C(&Vv), a.out = C(&O), a.lse = C(&L), a.pad_left = C(&PL);
    be_attn_fwd(cpu, &a);
    be_attn_bwd(cpu, &a, C(&DO), C(&DQ), C(&DK), C(&DV));
    a.q = G(&Q), a.k = G(&K), a.v = G(&Vv), a.out = G(&O), a.lse = G(&L), a.pad_left = G(&PL);
    be_attn_fwd(gpu, &a);
    be_attn_bwd(gpu, &a, G(&DO), G(&DQ), G(&DK), G(&DV));
    char what[256];
    /* which kernel serves: 16-bit tiles only under TILES (or FAST without cuDNN: cuDNN's
     * path has its own test, test_gpu_attn_cudnn.c) with bf16/fp16 compute */
    const bool h16 = (mode == BE_CUDA_ATTN_FAST || mode == BE_CUDA_ATTN_TILES) &&
                     ct != PREC_COMPUTE_FP32;
    const char *mn = mode == BE_CUDA_ATTN_TF32 ? "tf32 tiles"
                     : h16 ? (ct == PREC_COMPUTE_BF16 ? "bf16 tiles" : "fp16 tiles")
                     : mode == BE_CUDA_ATTN_EXACT ? "exact" : "3xtf32 tiles";
    double to, tg, tl;
    if (mode == BE_CUDA_ATTN_TF32)
        to = 5e-3, tg = 1e-2, tl = 1e-3;
    else if (h16 && ct == PREC_COMPUTE_BF16)
        to = 2e-2, tg = 5e-2, tl = 5e-3;
    else if (h16)
        to = 3e-3, tg = 1e-2, tl = 1e-3;
    else if (mode == BE_CUDA_ATTN_EXACT)
        to = tg = 1e-5, tl = 1e-6;
    else
        to = tg = 2e-5, tl = 1e-6;
    snprintf(what, sizeof what, "%s (%s): out", ac->name, mn);
    rel_err(&O, 0, nq, what, to);
    snprintf(what, sizeof what, "%s (%s): lse", ac->name, mn);
    rel_err(&L, 0, nl, what, tl);
    snprintf(what, sizeof what, "%s (%s): dq", ac->name, mn);
    rel_err(&DQ, 0, nq, what, tg);
    snprintf(what, sizeof what, "%s (%s): dk", ac->name, mn);
    rel_err(&DK, 0, nkv, what, tg);
    snprintf(what, sizeof what, "%s (%s): dv", ac->name, mn);
    rel_err(&DV, 0, nkv, what, tg);
    pair_free(&Q), pair_free(&K), pair_free(&Vv), pair_free(&O), pair_free(&L), pair_free(&DO);
    pair_free(&DQ), pair_free(&DK), pair_free(&DV), pair_free(&PL);
    free(q), free(k), free(v), free(dout);
    be_cuda_set_attn(gpu, BE_CUDA_ATTN_FAST, &e);
}

static const attn_case_t ATTN_CASES[] = {
    {"training GQA, left padding incl. one real token", 3, 80, 80, 4, 2, 64, 0, {0, 5, 79}, false, 0},
    {"training MQA head_dim 16", 2, 20, 20, 4, 1, 16, 0, {0, 3}, false, 0},
    {"training MHA head_dim 32, 3 tiles", 1, 130, 130, 2, 2, 32, 0, {0}, false, 0},
    {"training head_dim 128", 2, 70, 70, 2, 1, 128, 0, {2, 0}, false, 0},
    {"head_dim 8 (exact only)", 2, 24, 24, 4, 2, 8, 0, {0, 1}, false, 0},
    {"prefill into a cache", 2, 16, 16, 4, 2, 64, 0, {0, 9}, true, 40},
    {"decode step from a cache", 2, 1, 33, 4, 2, 64, 32, {0, 9}, true, 40},
    {"a row that is all padding", 2, 18, 18, 2, 2, 16, 0, {0, 18}, false, 0},
};

static void attention_forward_and_backward_match_cpu(void **state)
{
    NEED_GPU();
    for (size_t i = 0; i < sizeof ATTN_CASES / sizeof ATTN_CASES[0]; i++) {
        run_attention(&ATTN_CASES[i], BE_CUDA_ATTN_EXACT, PREC_COMPUTE_FP32);
        run_attention(&ATTN_CASES[i], BE_CUDA_ATTN_FAST, PREC_COMPUTE_FP32);
        run_attention(&ATTN_CASES[i], BE_CUDA_ATTN_TF32, PREC_COMPUTE_FP32);
        run_attention(&ATTN_CASES[i], BE_CUDA_ATTN_TILES, PREC_COMPUTE_BF16);
        run_attention(&ATTN_CASES[i], BE_CUDA_ATTN_TILES, PREC_COMPUTE_FP16);
        run_attention(&ATTN_CASES[i], BE_CUDA_ATTN_ACCURATE, PREC_COMPUTE_BF16);
    }
}

/* ---- sampling ---------------------------------------------------------------------------- */

static void sampling_gives_the_cpu_ids_for_the_same_seed(void **state)
{
    NEED_GPU();
    const int shapes[][2] = {{16, 1000}, {4, 151936}};
    const be_sample_t cfg[] = {
        {0.0, 0, 1.0, 1, 0, 0},  {1.0, 0, 1.0, 2, 10, 0}, {0.7, 50, 1.0, 3, 0, 0},
        {1.0, 0, 0.9, 4, 0, 0},  {0.8, 40, 0.8, 5, 7, 0}, {1.3, 1, 1.0, 6, 0, 0},
        {1.0, 0, 0.3, 7, 0, 0},
    };
    for (size_t s = 0; s < 2; s++) {
        int B = shapes[s][0], V = shapes[s][1];
        if (quick && V > 10000)
            continue;
        float *l = rand_vec((size_t)B * V, 2);
        /* planted ties at the top for greedy: ids 5 and 9 of row 0 share the maximum */
        l[5] = l[9] = 50.0f;
        pair_t L = pair_f(l, (size_t)B * V), OUT = pair_new(NULL, sizeof(int32_t) * B);
        int32_t *a = malloc(sizeof(int32_t) * B), *b = malloc(sizeof(int32_t) * B);
        for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++)
            for (uint64_t step = 0; step < 6; step++) {
                be_sample_t sp = cfg[c];
                sp.index = step;
                be_sample_tokens(cpu, C(&OUT), C(&L), (size_t)V, B, V, &sp);
                be_download(cpu, a, C(&OUT), sizeof(int32_t) * B);
                poison(&OUT);
                be_sample_tokens(gpu, G(&OUT), G(&L), (size_t)V, B, V, &sp);
                be_download(gpu, b, G(&OUT), sizeof(int32_t) * B);
                sync_both();
                for (int r = 0; r < B; r++)
                    if (a[r] != b[r])
                        fail_msg("V %d config %zu (T %g, top-k %d, top-p %g) step %llu row %d: cpu %d "
                                 "gpu %d", V, c, sp.temperature, sp.top_k, sp.top_p,
                                 (unsigned long long)step, r, a[r], b[r]);
                if (c == 0)
                    assert_int_equal(b[0], 5);
            }
        pair_free(&L), pair_free(&OUT);
        free(l), free(a), free(b);
    }
}

/* ---- MX fake quant ------------------------------------------------------------------------ */

static void *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc((size_t)n);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

typedef struct rd {
    const uint8_t *p, *end;
} rd_t;

static const uint8_t *take(rd_t *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n)
        fail_msg("fixture truncated");
    const uint8_t *p = r->p;
    r->p += n;
    return p;
}
static uint32_t u32(rd_t *r)
{
    uint32_t v;
    memcpy(&v, take(r, 4), 4);
    return v;
}
static uint64_t u64(rd_t *r)
{
    uint64_t v;
    memcpy(&v, take(r, 8), 8);
    return v;
}
static void str(rd_t *r, char *out, size_t cap)
{
    uint8_t n = *take(r, 1);
    if (n >= cap)
        fail_msg("fixture string too long");
    memcpy(out, take(r, n), n);
    out[n] = 0;
}

/* GPU fake quant of host data; returns the output (caller frees) */
static float *gpu_quant(const float *in, size_t rows, size_t cols, mx_axis_t axis,
                        const mx_spec_t *s, uint64_t seed, uint64_t stream, bool in_place)
{
    err_t e = ERR_INIT;
    size_t n = rows * cols;
    be_buf_t *bi = be_alloc(gpu, n * 4, &e), *bo = in_place ? bi : be_alloc(gpu, n * 4, &e);
    be_upload(gpu, be_ptr(bi, 0), in, n * 4);
    if (!in_place) {
        unsigned char *h = malloc(n * 4);
        memset(h, 0xff, n * 4);
        be_upload(gpu, be_ptr(bo, 0), h, n * 4);
        free(h);
    }
    be_fake_quant(gpu, be_ptr(bo, 0), be_ptr(bi, 0), rows, cols, axis, s, seed, stream);
    float *out = malloc(n * 4);
    be_download(gpu, out, be_ptr(bo, 0), n * 4);
    if (be_sync(gpu, &e))
        fail_msg("%s", e.msg);
    be_free(gpu, bi);
    if (!in_place)
        be_free(gpu, bo);
    return out;
}

static bool same_val(uint32_t a, uint32_t b, bool zero_sign_free)
{
    if (a == b)
        return true;
    if (((a & 0x7fffffffu) > 0x7f800000u) && ((b & 0x7fffffffu) > 0x7f800000u))
        return true;
    return zero_sign_free && !((a | b) & 0x7fffffffu);
}

static void mx_golden_vectors_bit_exact_on_gpu(void **state)
{
    NEED_GPU();
    const char *path;
    REQUIRE_SHARED(path, "mx-golden/mx_golden.bin");
    size_t len;
    uint8_t *buf = read_all(path, &len);
    rd_t r = {buf, buf + len};
    assert_memory_equal(take(&r, 4), "MXGV", 4);
    assert_int_equal(u32(&r), 1);
    uint32_t ncases = u32(&r);
    int failed = 0;
    for (uint32_t c = 0; c < ncases; c++) {
        char fmt[64], rnd[64];
        str(&r, fmt, sizeof fmt);
        str(&r, rnd, sizeof rnd);
        uint32_t block = u32(&r), n = u32(&r);
        float *in = malloc(n * 4), *want = malloc(n * 4);
        memcpy(in, take(&r, n * 4), n * 4);
        memcpy(want, take(&r, n * 4), n * 4);
        mx_spec_t s = {MX_FORMAT_COUNT, (int)block, MX_ROUND_COUNT, MX_SCALE_FLOOR};
        assert_int_equal(mx_format_from_name(fmt, &s.format), 0);
        assert_int_equal(mx_round_from_name(rnd, &s.round), 0);
        float *got = gpu_quant(in, 1, n, MX_AXIS_ROW, &s, 0, 0, c % 2);
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < n; i++)
            if (!same_val(test_f32_bits(got[i]), test_f32_bits(want[i]), true) && !bad++)
                first = i;
        if (bad) {
            failed++;
            print_error("golden %s/%s/%u: %zu of %u differ; first [%zu] in %a expected %a got %a\n",
                        fmt, rnd, block, bad, n, first, in[first], want[first], got[first]);
        }
        free(in), free(want), free(got);
    }
    free(buf);
    assert_int_equal(ncases, 63);
    if (failed)
        fail_msg("%d of 63 golden cases differ on the GPU", failed);
}

static void mx_fixture_vectors_bit_exact_on_gpu(void **state)
{
    NEED_GPU();
    size_t len;
    uint8_t *buf = read_all(test_fixture_path("mx/mx_vectors.bin"), &len);
    rd_t r = {buf, buf + len};
    assert_memory_equal(take(&r, 4), "MXTV", 4);
    assert_int_equal(u32(&r), 1);
    uint32_t ncases = u32(&r);
    int failed = 0;
    for (uint32_t c = 0; c < ncases; c++) {
        char name[128], fmt[32], rnd[32], rule[32];
        str(&r, name, sizeof name);
        str(&r, fmt, sizeof fmt);
        str(&r, rnd, sizeof rnd);
        str(&r, rule, sizeof rule);
        uint32_t block = u32(&r);
        uint8_t axis = *take(&r, 1);
        uint32_t rows = u32(&r), cols = u32(&r);
        uint64_t seed = u64(&r), stream = u64(&r);
        size_t n = (size_t)rows * cols;
        float *in = malloc(n * 4), *want = malloc(n * 4);
        memcpy(in, take(&r, n * 4), n * 4);
        memcpy(want, take(&r, n * 4), n * 4);
        uint32_t nsc = u32(&r);
        take(&r, nsc);
        uint32_t nel = u32(&r);
        take(&r, nel);
        mx_spec_t s = {MX_FORMAT_COUNT, (int)block, MX_ROUND_COUNT, MX_SCALE_COUNT};
        assert_int_equal(mx_format_from_name(fmt, &s.format), 0);
        assert_int_equal(mx_round_from_name(rnd, &s.round), 0);
        assert_int_equal(mx_scale_from_name(rule, &s.scale), 0);
        float *got = gpu_quant(in, rows, cols, axis ? MX_AXIS_COL : MX_AXIS_ROW, &s, seed, stream, false);
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < n; i++)
            if (!same_val(test_f32_bits(got[i]), test_f32_bits(want[i]), false) && !bad++)
                first = i;
        if (bad) {
            failed++;
            print_error("vector %s: %zu of %zu differ; first [%zu] in %a expected %a got %a\n", name,
                        bad, n, first, in[first], want[first], got[first]);
        }
        free(in), free(want), free(got);
    }
    assert_ptr_equal(r.p, r.end);
    free(buf);
    if (failed)
        fail_msg("%d of %u fixture vectors differ on the GPU", failed, ncases);
}

static void mx_random_inputs_bit_exact_against_src_mx(void **state)
{
    NEED_GPU();
    const int shapes[][2] = {{7, 45}, {64, 96}, {33, 9}, {1, 1000}, {200, 130}};
    const int blocks[] = {32, 8, 16, 7, 1};
    int cases = 0;
    for (size_t si = 0; si < 5; si++) {
        size_t rows = (size_t)shapes[si][0], cols = (size_t)shapes[si][1], n = rows * cols;
        float *in = malloc(n * 4), *want = malloc(n * 4);
        for (size_t i = 0; i < n; i++) {
            uint64_t b = rnext();
            float v = rnorm() * ldexpf(1.0f, (int)(b % 60) - 30);
            switch (b >> 60) {
            case 0: v = 0.0f; break;
            case 1: v = -0.0f; break;
            case 2: v = rnorm() * 1e-40f; break; /* subnormal */
            case 3: v = rnorm() * 1e37f; break;
            default: break;
            }
            in[i] = v;
        }
        if (si == 1) {
            in[5] = INFINITY; /* one block with Inf, one with NaN */
            in[300] = NAN;
        }
        for (int f = 0; f < MX_FORMAT_COUNT; f++)
            for (size_t bi = 0; bi < 5; bi++)
                for (int mode = 0; mode < MX_ROUND_COUNT; mode++)
                    for (int rule = 0; rule < MX_SCALE_COUNT; rule++)
                        for (int axis = 0; axis < 2; axis++) {
                            if (!mx_format_info((mx_format_t)f)->is_mx && (bi || mode || rule || axis))
                                continue; /* casts: one case each */
                            if (quick && (mode + rule + axis) % 3)
                                continue;
                            mx_spec_t s = {(mx_format_t)f, blocks[bi], (mx_round_t)mode,
                                           (mx_scale_rule_t)rule};
                            mx_axis_t ax = axis ? MX_AXIS_COL : MX_AXIS_ROW;
                            mx_fake_quant(in, want, rows, cols, ax, &s, 5, 77);
                            float *got = gpu_quant(in, rows, cols, ax, &s, 5, 77, (cases % 3) == 0);
                            for (size_t i = 0; i < n; i++)
                                if (!same_val(test_f32_bits(got[i]), test_f32_bits(want[i]), false))
                                    fail_msg("%zux%zu %s/%d/%s/%s axis %d: [%zu] of %a: cpu %a gpu %a",
                                             rows, cols, mx_format_name(s.format), s.block,
                                             mx_round_name(s.round), mx_scale_name(s.scale), axis, i,
                                             in[i], want[i], got[i]);
                            free(got);
                            cases++;
                        }
        free(in), free(want);
    }
    print_message("%d random fake-quant cases bit-exact\n", cases);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(memory_ops_round_trip_and_range_errors_are_reported),
        cmocka_unit_test(linear_layers_match_cpu_for_every_precision),
        cmocka_unit_test(rmsnorm_forward_and_backward_match_cpu),
        cmocka_unit_test(rope_and_its_inverse_match_cpu),
        cmocka_unit_test(swiglu_and_embedding_match_cpu),
        cmocka_unit_test(losses_match_cpu),
        cmocka_unit_test(adamw_sumsq_and_scale_match_cpu),
        cmocka_unit_test(attention_forward_and_backward_match_cpu),
        cmocka_unit_test(sampling_gives_the_cpu_ids_for_the_same_seed),
        cmocka_unit_test(mx_golden_vectors_bit_exact_on_gpu),
        cmocka_unit_test(mx_fixture_vectors_bit_exact_on_gpu),
        cmocka_unit_test(mx_random_inputs_bit_exact_against_src_mx),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
