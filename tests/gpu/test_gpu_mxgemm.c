/* GPU tests of the MX GEMMs on the tensor cores (src/backend/cuda_mxgemm.cu) against the
 * CPU backend (fake quant + float32 GEMM).
 *
 * Built by `make test-gpu` only; every test skips when no GPU answers. Outputs written
 * from scratch are poisoned (NaN) first, so an element the kernel forgets fails.
 *   - bit for bit: with an identity as the other operand, each GEMM returns its quantized
 *     operand itself, so the forward (x along K), dx (dy along N, W along N) and dW (dy and
 *     x along M, transposed) operands are checked exactly against mx_fake_quant for every
 *     MX format, blocks of 8, 16, 32 and 64, every rounding mode (stochastic too) and both
 *     scale rules, at ragged shapes (K not a multiple of the block), under fp32 and bf16
 *     compute;
 *   - within tolerance: random GEMMs for every format x block (and the mixed pairs E4M3 x
 *     E5M2, FP4 x E5M2, FP6 x FP8, INT8 x INT4), forward with bias, accumulation, the
 *     backward operands, a NaN in the input; relative L2 error ||gpu - cpu|| / ||cpu||:
 *       int8 kinds (exact int32 block sums)                          1e-5
 *       E4M3 / E5M2 kinds (the FP8 MMA's own accumulation in a block)  1e-2
 *     and the worst per format is printed ("worst"), for docs/engine.md;
 *   - the folded path (mxfp6 / mxfp4 pairs through cuBLASLt's FP8 GEMM, 128-element
 *     chunks): every FP6/FP4 format x block 8/16/32/64, forward and the backward operands,
 *     exact folds (no fallback) within the E4M3 tolerance; rows and weights whose blocks
 *     span more binades than the fold keeps exact take the per-block kernel (counted
 *     from the device) and are still right;
 *   - the dispatch: which GEMMs ran natively (be_cuda_mxgemm_stats) under the modes all
 *     and auto (auto: the folding pairs natively, mxfp8 / mxint emulated), the switch, and
 *     specs without a tensor-core type staying on the emulated path.
 * The tests run in mode all (every mapping pair native) unless they say otherwise. Linear
 * layers of M <= 64 rows may take the packed decode GEMV (cuda_gemv.cu) instead of a GEMM,
 * so the counted cases have M > 64. MXRLHF_GPU_QUICK=1 shrinks the sizes
 * (compute-sanitizer runs). */
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
    if (be_cuda_set_mxgemm_mode(gpu, BE_CUDA_MXG_ALL, &e)) {
        snprintf(skip_why, sizeof skip_why, "%s", e.msg);
        be_close(gpu);
        gpu = NULL;
    }
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

static uint64_t rstate = 777;
static uint64_t rnext(void)
{
    uint64_t z = (rstate += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* normal deviates times scale, with some rows 2^10 larger and some 2^-10 smaller, so that
 * blocks get different scales (unless flat_rows: then blocks down the columns do not
 * hinge on the one large element they hold, whose size varies by orders of magnitude) */
static bool flat_rows;
static float *rand_mat(int rows, int cols, float scale)
{
    float *v = malloc((size_t)rows * cols * sizeof *v);
    for (int r = 0; r < rows; r++) {
        float rs = flat_rows ? 1.0f : r % 7 == 3 ? 1024.0f : r % 7 == 5 ? 1.0f / 1024 : 1.0f;
        for (int c = 0; c < cols; c++) {
            double u1 = ((rnext() >> 11) + 1) * 0x1p-53, u2 = (rnext() >> 11) * 0x1p-53;
            v[(size_t)r * cols + c] =
                (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2)) * scale * rs;
        }
    }
    return v;
}

static float *identity(int n)
{
    float *v = calloc((size_t)n * n, sizeof *v);
    for (int i = 0; i < n; i++)
        v[(size_t)i * n + i] = 1.0f;
    return v;
}

typedef struct pair {
    be_buf_t *c, *g;
    size_t n; /* floats */
} pair_t;

static pair_t pair_f(const float *host, size_t n)
{
    err_t e = ERR_INIT;
    pair_t p = {be_alloc(cpu, n * 4, &e), be_alloc(gpu, n * 4, &e), n};
    if (!p.c || !p.g)
        fail_msg("%s", e.msg);
    if (host) {
        be_upload(cpu, be_ptr(p.c, 0), host, n * 4);
        be_upload(gpu, be_ptr(p.g, 0), host, n * 4);
    } else {
        be_zero(cpu, be_ptr(p.c, 0), n * 4);
        be_zero(gpu, be_ptr(p.g, 0), n * 4);
    }
    return p;
}

static void pair_free(pair_t *p)
{
    be_free(cpu, p->c);
    be_free(gpu, p->g);
}

static void poison(pair_t *p)
{
    unsigned char *h = malloc(p->n * 4);
    memset(h, 0xff, p->n * 4);
    be_upload(gpu, be_ptr(p->g, 0), h, p->n * 4);
    free(h);
}

static void sync_both(void)
{
    err_t e = ERR_INIT;
    if (be_sync(cpu, &e) || be_sync(gpu, &e))
        fail_msg("%s", e.msg);
}

static void fetch(pair_t *p, float **a, float **b)
{
    *a = malloc(p->n * 4), *b = malloc(p->n * 4);
    sync_both();
    be_download(cpu, *a, be_ptr(p->c, 0), p->n * 4);
    be_download(gpu, *b, be_ptr(p->g, 0), p->n * 4);
    sync_both();
}

/* relative L2 error; NaN must meet NaN */
static double rel_err(pair_t *p, const char *what, double tol)
{
    float *a, *b;
    fetch(p, &a, &b);
    double num = 0, den = 0;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < p->n; i++) {
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
        fail_msg("%s: relative error %.3g > %.1g (n %zu)", what, r, tol, p->n);
    free(a), free(b);
    return r;
}

/* bit for bit, +0 == -0 */
static void bit_equal(pair_t *p, const char *what)
{
    float *a, *b;
    fetch(p, &a, &b);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < p->n; i++) {
        uint32_t x, y;
        memcpy(&x, &a[i], 4);
        memcpy(&y, &b[i], 4);
        if (x != y && ((x | y) & 0x7fffffffu) && !(isnan(a[i]) && isnan(b[i])) && !bad++)
            first = i;
    }
    if (bad)
        fail_msg("%s: %zu of %zu differ, first [%zu]: cpu %a gpu %a", what, bad, p->n, first,
                 (double)a[first], (double)b[first]);
    free(a), free(b);
}

static be_ptr_t C(pair_t *p) { return be_ptr(p->c, 0); }
static be_ptr_t G(pair_t *p) { return be_ptr(p->g, 0); }

static be_cuda_mxgemm_stats_t stats(void)
{
    err_t e = ERR_INIT;
    be_cuda_mxgemm_stats_t s;
    if (be_cuda_mxgemm_stats(gpu, &s, &e))
        fail_msg("%s", e.msg);
    return s;
}

static mx_spec_t spec(const char *text)
{
    err_t e = ERR_INIT;
    mx_spec_t s;
    if (mx_spec_parse(text, &s, &e))
        fail_msg("%s", e.msg);
    return s;
}

static be_linear_t lin(int M, int N, int K, const mx_spec_t *s6, prec_compute_t ct)
{
    be_linear_t a;
    memset(&a, 0, sizeof a);
    a.M = M, a.N = N, a.K = K;
    for (int o = 0; o < PREC_OPERAND_COUNT; o++)
        a.spec[o] = s6[o];
    a.compute = ct;
    a.wversion = 3;
    a.seed = 4242;
    a.stream = 0x5150;
    return a;
}

static const char *const FORMATS[] = {"mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3",
                                      "mxfp4_e2m1", "mxint8",     "mxint4"};
static const char *const ROUNDS[] = {"even", "nearest", "trunc", "stochastic"};
enum { NFMT = 7 };

/* ---- bit for bit with an identity --------------------------------------------------------- */

/* The three GEMMs of a linear layer, each with an identity as its other operand, on both
 * backends, compared bit for bit. n is the identity's size; M the other dimension. */
static void identity_case(const char *sp_text, prec_compute_t ct, int M, int n)
{
    mx_spec_t s = spec(sp_text), s6[PREC_OPERAND_COUNT];
    for (int o = 0; o < PREC_OPERAND_COUNT; o++)
        s6[o] = s;
    char what[200];
    float *I = identity(n), *x = rand_mat(M, n, 1.0f), *dy = rand_mat(M, n, 0.01f);
    pair_t PI = pair_f(I, (size_t)n * n), X = pair_f(x, (size_t)M * n), DY = pair_f(dy, (size_t)M * n);
    pair_t Y = pair_f(NULL, (size_t)M * n), DX = pair_f(NULL, (size_t)M * n);
    pair_t DW = pair_f(NULL, (size_t)n * n);
    be_cuda_mxgemm_stats_t s0 = stats();
    /* forward: y = q(x) q(I)^T = q(x along K); dx = q(dy along N) q(I along N) = q(dy) */
    be_linear_t a = lin(M, n, n, s6, ct);
    poison(&Y), poison(&DX);
    a.x = C(&X), a.w = C(&PI);
    be_linear_fwd(cpu, &a, C(&Y), false);
    be_linear_bwd(cpu, &a, C(&DY), C(&DX), false, BE_NULL, BE_NULL);
    a.x = G(&X), a.w = G(&PI);
    be_linear_fwd(gpu, &a, G(&Y), false);
    be_linear_bwd(gpu, &a, G(&DY), G(&DX), false, BE_NULL, BE_NULL);
    snprintf(what, sizeof what, "%s %s: forward x (M %d K %d)", sp_text, prec_compute_name(ct), M, n);
    bit_equal(&Y, what);
    snprintf(what, sizeof what, "%s %s: dx's dy (M %d N %d)", sp_text, prec_compute_name(ct), M, n);
    bit_equal(&DX, what);
    /* dW = q(dy along M)^T q(x along M): x = I gives q(dy)^T (M = n); dy = I gives q(x) */
    be_linear_t b = lin(n, M, n, s6, ct); /* dy (n, M), x = I (n, n): dW (M, n) */
    pair_t DW2 = pair_f(NULL, (size_t)M * n), DYT = pair_f(dy, (size_t)n * M);
    b.x = C(&PI), b.w = C(&DW2);
    be_linear_bwd(cpu, &b, C(&DYT), BE_NULL, false, C(&DW2), BE_NULL);
    b.x = G(&PI), b.w = G(&DW2);
    be_linear_bwd(gpu, &b, G(&DYT), BE_NULL, false, G(&DW2), BE_NULL);
    snprintf(what, sizeof what, "%s %s: dW's dy (M %d N %d)", sp_text, prec_compute_name(ct), n, M);
    bit_equal(&DW2, what);
    be_linear_t d = lin(n, n, M, s6, ct); /* dy = I (n, n), x (n, M): dW (n, M) = q(x) */
    pair_t XT = pair_f(x, (size_t)n * M), DW3 = pair_f(NULL, (size_t)n * M);
    d.x = C(&XT), d.w = C(&DW3);
    be_linear_bwd(cpu, &d, C(&PI), BE_NULL, false, C(&DW3), BE_NULL);
    d.x = G(&XT), d.w = G(&DW3);
    be_linear_bwd(gpu, &d, G(&PI), BE_NULL, false, G(&DW3), BE_NULL);
    snprintf(what, sizeof what, "%s %s: dW's x (M %d K %d)", sp_text, prec_compute_name(ct), n, M);
    bit_equal(&DW3, what);
    be_cuda_mxgemm_stats_t s1 = stats();
    assert_int_equal(s1.native - s0.native, 4);
    assert_int_equal(s1.emulated, s0.emulated);
    pair_free(&PI), pair_free(&X), pair_free(&DY), pair_free(&Y), pair_free(&DX), pair_free(&DW);
    pair_free(&DW2), pair_free(&DYT), pair_free(&XT), pair_free(&DW3);
    free(I), free(x), free(dy);
}

static void quantized_operands_are_fake_quant_bit_for_bit(void **state)
{
    NEED_GPU();
    const int blocks[] = {8, 16, 32, 64};
    int k = 0;
    for (int f = 0; f < NFMT; f++)
        for (int b = 0; b < 4; b++, k++) {
            char t[96];
            snprintf(t, sizeof t, "%s/%d/%s/%s", FORMATS[f], blocks[b], ROUNDS[k % 4],
                     k % 3 == 1 ? "rceil" : "floor");
            /* ragged: neither dimension a multiple of the block or the tile */
            identity_case(t, k % 5 == 2 ? PREC_COMPUTE_BF16 : PREC_COMPUTE_FP32, quick ? 69 : 77 + k,
                          quick ? 45 : 83 + 2 * k);
        }
}

/* ---- within tolerance -------------------------------------------------------------------- */

typedef struct worst {
    double fwd, dx, dw;
} worst_t;

/* forward twice (stored, then accumulated; the second time from the weight caches), dx and
 * dW: 6 GEMMs */
static void random_case(const mx_spec_t *s6, prec_compute_t ct, int M, int N, int K, bool nan,
                        double tol, const char *name, worst_t *w, float xscale)
{
    char what[256];
    float *x = rand_mat(M, K, xscale), *wt = rand_mat(N, K, 0.05f), *bias = rand_mat(1, N, 1.0f);
    float *dy = rand_mat(M, N, 0.01f), *y0 = rand_mat(M, N, 1.0f), *dw0 = rand_mat(N, K, 0.1f);
    if (nan)
        x[(size_t)(M / 2) * K + K / 3] = NAN;
    pair_t X = pair_f(x, (size_t)M * K), W = pair_f(wt, (size_t)N * K), B = pair_f(bias, N);
    pair_t DY = pair_f(dy, (size_t)M * N), Y = pair_f(y0, (size_t)M * N);
    pair_t YA = pair_f(y0, (size_t)M * N), DX = pair_f(NULL, (size_t)M * K);
    pair_t DW = pair_f(dw0, (size_t)N * K);
    err_t e = ERR_INIT;
    be_wcache_t *wc = be_wcache_new(cpu, &e), *wg = be_wcache_new(gpu, &e);
    be_linear_t a = lin(M, N, K, s6, ct);
    for (int pass = 0; pass < 2; pass++) { /* the second pass reads the weight caches */
        poison(&Y);
        a.x = C(&X), a.w = C(&W), a.b = C(&B), a.wcache = wc;
        be_linear_fwd(cpu, &a, C(&Y), false);
        be_linear_fwd(cpu, &a, C(&YA), true);
        a.x = G(&X), a.w = G(&W), a.b = G(&B), a.wcache = wg;
        be_linear_fwd(gpu, &a, G(&Y), false);
        be_linear_fwd(gpu, &a, G(&YA), true);
        snprintf(what, sizeof what, "%s: y (M %d N %d K %d, bias, pass %d)", name, M, N, K, pass);
        double r = rel_err(&Y, what, tol);
        w->fwd = r > w->fwd ? r : w->fwd;
        snprintf(what, sizeof what, "%s: y += (M %d N %d K %d, pass %d)", name, M, N, K, pass);
        rel_err(&YA, what, tol);
    }
    poison(&DX);
    a.x = C(&X), a.w = C(&W), a.b = BE_NULL, a.wcache = wc;
    be_linear_bwd(cpu, &a, C(&DY), C(&DX), false, C(&DW), BE_NULL);
    a.x = G(&X), a.w = G(&W), a.wcache = wg;
    be_linear_bwd(gpu, &a, G(&DY), G(&DX), false, G(&DW), BE_NULL);
    snprintf(what, sizeof what, "%s: dx (M %d N %d K %d)", name, M, N, K);
    double r = rel_err(&DX, what, tol);
    w->dx = r > w->dx ? r : w->dx;
    snprintf(what, sizeof what, "%s: dW (M %d N %d K %d)", name, M, N, K);
    r = rel_err(&DW, what, tol);
    w->dw = r > w->dw ? r : w->dw;
    be_wcache_free(cpu, wc);
    be_wcache_free(gpu, wg);
    pair_free(&X), pair_free(&W), pair_free(&B), pair_free(&DY), pair_free(&Y), pair_free(&YA);
    pair_free(&DX), pair_free(&DW);
    free(x), free(wt), free(bias), free(dy), free(y0), free(dw0);
}

/* the six operands' specs: format/block, rounding modes in turn from `shift` */
static void specs6(mx_spec_t *s6, const char *fmt, int block, int shift)
{
    for (int o = 0; o < PREC_OPERAND_COUNT; o++) {
        char t[96];
        snprintf(t, sizeof t, "%s/%d/%s", fmt, block, ROUNDS[(o + shift) % 4]);
        s6[o] = spec(t);
    }
}

static void every_format_and_block_matches_cpu_within_tolerance(void **state)
{
    NEED_GPU();
    const int blocks[] = {8, 16, 32, 64};
    const int shapes[][3] = {{130, 72, 200}, {97, 100, 40}, {257, 136, 96}, {512, 384, 896}};
    const int nshape = quick ? 2 : 4;
    worst_t wf[NFMT];
    memset(wf, 0, sizeof wf);
    be_cuda_mxgemm_stats_t s0 = stats();
    long gemms = 0;
    for (int f = 0; f < NFMT; f++) {
        const double tol = f >= 5 ? 1e-5 : 1e-2;
        for (int b = 0; b < 4; b++)
            for (int sh = 0; sh < nshape; sh++) {
                mx_spec_t s6[PREC_OPERAND_COUNT];
                char name[128];
                specs6(s6, FORMATS[f], blocks[b], sh);
                snprintf(name, sizeof name, "%s/%d", FORMATS[f], blocks[b]);
                prec_compute_t ct = sh == 1 ? PREC_COMPUTE_BF16 : PREC_COMPUTE_FP32;
                random_case(s6, ct, shapes[sh][0], shapes[sh][1], shapes[sh][2], sh == 2,
                            ct == PREC_COMPUTE_BF16 ? 1e-2 : tol, name, &wf[f], 1.0f);
                gemms += 6;
            }
    }
    be_cuda_mxgemm_stats_t s1 = stats();
    assert_int_equal(s1.native - s0.native, gemms);
    print_message("worst relative L2 error against the CPU (fake quant + fp32 GEMM), over blocks "
                  "8/16/32/64 and %d shapes:\n", nshape);
    for (int f = 0; f < NFMT; f++)
        print_message("  worst %-11s forward %.2e  dx %.2e  dW %.2e\n", FORMATS[f], wf[f].fwd,
                      wf[f].dx, wf[f].dw);
}

static void mixed_pairs_run_natively(void **state)
{
    NEED_GPU();
    /* weight, input, weight_bp, grad_dx, input_bp, grad_dw */
    static const char *const PAIRS[][6] = {
        {"mxfp8_e4m3", "mxfp8_e5m2", "mxfp8_e5m2", "mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e5m2"},
        {"mxfp4_e2m1", "mxfp8_e5m2", "mxfp6_e2m3/16", "mxfp8_e5m2/32", "mxfp6_e3m2/8", "mxfp8_e4m3/64"},
        {"mxint8", "mxint4/16", "mxint4", "mxint8/8", "mxint8/64", "mxint4/32/stochastic"},
    };
    worst_t w = {0, 0, 0};
    for (int p = 0; p < 3; p++) {
        mx_spec_t s6[PREC_OPERAND_COUNT];
        for (int o = 0; o < PREC_OPERAND_COUNT; o++)
            s6[o] = spec(PAIRS[p][o]);
        be_cuda_mxgemm_stats_t s0 = stats();
        random_case(s6, PREC_COMPUTE_FP32, 200, 136, 160, false, p == 2 ? 1e-5 : 1e-2, PAIRS[p][1], &w,
                    1.0f);
        assert_int_equal(stats().native - s0.native, 6);
    }
    print_message("worst mixed pairs: forward %.2e  dx %.2e  dW %.2e\n", w.fwd, w.dx, w.dw);
}

static void other_specs_and_the_switch_keep_the_emulation(void **state)
{
    NEED_GPU();
    err_t e = ERR_INIT;
    /* no tensor-core type in common, a block of 12, fp16 compute, an MX operand against
     * bf16: emulated, counted as such */
    static const char *const CASES[][2] = {{"mxint8", "mxfp8_e4m3"},
                                           {"mxfp8_e4m3/12", "mxfp8_e4m3"},
                                           {"mxfp4_e2m1", "bf16"}};
    for (int i = 0; i < 4; i++) {
        mx_spec_t s6[PREC_OPERAND_COUNT];
        for (int o = 0; o < PREC_OPERAND_COUNT; o++)
            s6[o] = spec(i == 3 ? "mxfp8_e4m3" : CASES[i][o & 1]);
        assert_false(be_cuda_mxgemm_native(&s6[0], &s6[1], i == 3 ? PREC_COMPUTE_FP16
                                                                  : PREC_COMPUTE_FP32));
        be_cuda_mxgemm_stats_t s0 = stats();
        worst_t w = {0, 0, 0};
        random_case(s6, i == 3 ? PREC_COMPUTE_FP16 : PREC_COMPUTE_FP32, 72, 48, 96, false,
                    i == 3 ? 5e-3 : 1e-5, i == 3 ? "mxfp8 fp16 compute" : CASES[i][0], &w,
                    i == 3 ? 0.01f : 1.0f); /* fp16: no overflow near 65504 */
        be_cuda_mxgemm_stats_t s1 = stats();
        assert_int_equal(s1.native, s0.native);
        assert_int_equal(s1.emulated - s0.emulated, 6);
    }
    /* the labels follow the environment's mode: off (the default) runs nothing natively,
     * auto and all run mxfp4 natively, auto leaves mxfp8 to the emulation */
    const char *env = getenv("MXRLHF_CUDA_MXGEMM");
    const bool all = env && !strcmp(env, "all"), on = all || (env && !strcmp(env, "auto"));
    mx_spec_t f4 = spec("mxfp4_e2m1"), f8 = spec("mxfp8_e4m3");
    assert_true(be_cuda_mxgemm_native(&f4, &f4, PREC_COMPUTE_FP32) == on);
    assert_true(be_cuda_mxgemm_native(&f8, &f8, PREC_COMPUTE_FP32) == all);
    /* switched off: the emulation, as accurate as before (operands bit-identical) */
    mx_spec_t s6[PREC_OPERAND_COUNT];
    for (int o = 0; o < PREC_OPERAND_COUNT; o++)
        s6[o] = spec("mxfp8_e4m3");
    assert_int_equal(be_cuda_set_mxgemm(gpu, false, &e), ERR_OK);
    be_cuda_mxgemm_stats_t s0 = stats();
    worst_t w = {0, 0, 0};
    random_case(s6, PREC_COMPUTE_FP32, 100, 64, 128, false, 1e-5, "mxfp8 switched off", &w, 1.0f);
    assert_int_equal(stats().native, s0.native);
    /* auto: mxfp8 emulated, mxfp4 native (folded) */
    assert_int_equal(be_cuda_set_mxgemm(gpu, true, &e), ERR_OK);
    s0 = stats();
    random_case(s6, PREC_COMPUTE_FP32, 100, 64, 128, false, 1e-5, "mxfp8 auto", &w, 1.0f);
    be_cuda_mxgemm_stats_t s1 = stats();
    assert_int_equal(s1.native, s0.native);
    assert_int_equal(s1.emulated - s0.emulated, 6);
    for (int o = 0; o < PREC_OPERAND_COUNT; o++)
        s6[o] = f4;
    random_case(s6, PREC_COMPUTE_FP32, 128, 256, 384, false, 1e-2, "mxfp4 auto", &w, 1.0f);
    be_cuda_mxgemm_stats_t s2 = stats();
    assert_int_equal(s2.native - s1.native, 6);
    assert_int_equal(s2.folded - s1.folded, 6);
    assert_int_equal(be_cuda_set_mxgemm_mode(gpu, BE_CUDA_MXG_ALL, &e), ERR_OK);
    assert_int_equal(be_cuda_mxgemm_stats(cpu, &s0, &e), ERR_INPUT);
}

/* ---- the folded path --------------------------------------------------------------------- */

static const char *const FOLDING[] = {"mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1"};

/* Every FP6/FP4 format x block at a shape cuBLASLt's FP8 GEMM takes (dimensions multiples
 * of 128): the six GEMMs of random_case all fold, none falls back (Gaussian data without
 * the row spread: the blocks of a chunk stay within the fold's range; with it, blocks
 * down the columns can differ by 2^10 and fall back, which the every-format test runs). */
static void folded_gemms_match_cpu_without_fallback(void **state)
{
    NEED_GPU();
    const int blocks[] = {8, 16, 32, 64};
    worst_t wf[3];
    memset(wf, 0, sizeof wf);
    flat_rows = true;
    for (int f = 0; f < 3; f++)
        for (int b = 0; b < 4; b++) {
            mx_spec_t s6[PREC_OPERAND_COUNT];
            char name[128];
            specs6(s6, FOLDING[f], blocks[b], b);
            snprintf(name, sizeof name, "folded %s/%d", FOLDING[f], blocks[b]);
            be_cuda_mxgemm_stats_t s0 = stats();
            random_case(s6, b == 1 ? PREC_COMPUTE_BF16 : PREC_COMPUTE_FP32, quick ? 128 : 256,
                        quick ? 128 : 384, quick ? 256 : 512, false, 1e-2, name, &wf[f], 1.0f);
            be_cuda_mxgemm_stats_t s1 = stats();
            assert_int_equal(s1.native - s0.native, 6);
            assert_int_equal(s1.folded - s0.folded, 6);
            if (s1.fold_fallbacks != s0.fold_fallbacks)
                fail_msg("%s: %ld of 6 folded GEMMs fell back", name,
                         s1.fold_fallbacks - s0.fold_fallbacks);
        }
    flat_rows = false;
    print_message("worst relative L2 error of the folded path (cuBLASLt FP8, VEC128) against the "
                  "CPU, blocks 8/16/32/64:\n");
    for (int f = 0; f < 3; f++)
        print_message("  worst folded %-11s forward %.2e  dx %.2e  dW %.2e\n", FOLDING[f],
                      wf[f].fwd, wf[f].dx, wf[f].dw);
}

/* A row of x whose first block is 2^12 above the rest of its 128-chunk (beyond every
 * format's fold range, with odd small elements that would lose bits) and a weight row the
 * same: those GEMMs take the per-block kernel (counted on the device) and stay right;
 * the ragged shape (K 200: chunks padded with zeros) too. */
static void wide_chunks_fall_back_and_stay_right(void **state)
{
    NEED_GPU();
    const int M = 256, N = 256, K = 384;
    for (int f = 0; f < 3; f++)
        for (int wide = 0; wide < 2; wide++) { /* 0: x's row, 1: W's row */
            mx_spec_t s6[PREC_OPERAND_COUNT];
            for (int o = 0; o < PREC_OPERAND_COUNT; o++)
                s6[o] = spec(FOLDING[f]);
            float *x = rand_mat(M, K, 1.0f), *wt = rand_mat(N, K, 0.05f), *y0 = rand_mat(M, N, 1.0f);
            float *v = wide ? wt : x;
            for (int c = 0; c < 32; c++)
                v[(size_t)6 * K + c] *= 4096.0f; /* row 6 (a 1x row of rand_mat), block 0 */
            pair_t X = pair_f(x, (size_t)M * K), W = pair_f(wt, (size_t)N * K), Y = pair_f(y0, (size_t)M * N);
            be_linear_t a = lin(M, N, K, s6, PREC_COMPUTE_FP32);
            be_cuda_mxgemm_stats_t s0 = stats();
            poison(&Y);
            a.x = C(&X), a.w = C(&W);
            be_linear_fwd(cpu, &a, C(&Y), false);
            a.x = G(&X), a.w = G(&W);
            be_linear_fwd(gpu, &a, G(&Y), false);
            char what[128];
            snprintf(what, sizeof what, "%s: y with a wide %s row", FOLDING[f], wide ? "W" : "x");
            double r = rel_err(&Y, what, 1e-2);
            be_cuda_mxgemm_stats_t s1 = stats();
            assert_int_equal(s1.folded - s0.folded, 1);
            assert_int_equal(s1.fold_fallbacks - s0.fold_fallbacks, 1);
            print_message("%s: fell back, relative error %.2e\n", what, r);
            pair_free(&X), pair_free(&W), pair_free(&Y);
            free(x), free(wt), free(y0);
        }
    /* ragged K (200: the last chunk half padding) and M, N not multiples of 128 */
    mx_spec_t s6[PREC_OPERAND_COUNT];
    for (int o = 0; o < PREC_OPERAND_COUNT; o++)
        s6[o] = spec("mxfp4_e2m1/16");
    worst_t w = {0, 0, 0};
    random_case(s6, PREC_COMPUTE_FP32, 130, 136, 200, true, 1e-2, "folded mxfp4/16 ragged, NaN", &w, 1.0f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(quantized_operands_are_fake_quant_bit_for_bit),
        cmocka_unit_test(every_format_and_block_matches_cpu_within_tolerance),
        cmocka_unit_test(mixed_pairs_run_natively),
        cmocka_unit_test(other_specs_and_the_switch_keep_the_emulation),
        cmocka_unit_test(folded_gemms_match_cpu_without_fallback),
        cmocka_unit_test(wide_chunks_fall_back_and_stay_right),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
