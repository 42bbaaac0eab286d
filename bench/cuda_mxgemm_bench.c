/* cuda_mxgemm_bench: MX GEMMs on the tensor cores (issue 17) against the bf16 cuBLASLt GEMM,
 * at the study's shapes, with joules from NVML.
 *
 * Part 1, GEMMs: y (M, N) = x (M, K) W^T through the backend's own linear layer, W cached
 * in its weight cache, for bf16 (cuBLASLt, float32 output: the floor); mxfp6 (both) and
 * mxfp4 folded (mode auto: cuBLASLt's FP8 GEMM with 128-element block scales, "fold");
 * mxfp8_e4m3 and mxint8 on the per-block mma.sync kernel (mode all, "block"); and mxfp8,
 * mxint8 and mxfp4 emulated (mode off: fake quant + bf16 GEMM, "emul"). A folded row says
 * "fell back" when the fold was not exact and the per-block kernel ran.
 * Two timings each: "GEMM", the operand x
 * already prepared (the kernel alone), and "+quant", x prepared afresh every call (a
 * new activation, as in a model), whose energy NVML's counter measures (J per call, over
 * at least 0.6 s). Shapes: Qwen2.5-0.5B's projections at 8 x 1024 tokens (q/o 896 x 896,
 * k/v 128 x 896, gate/up 4864 x 896, down 896 x 4864, lm_head 151936 x 896), M 1536,
 * and the weight-gradient shape (reduction over the 8192 tokens).
 * Part 2, training steps: the Qwen2.5-0.5B shape, 8 x 1024 tokens, forward + backward +
 * AdamW, plan bf16 (bf16 operands and compute) against the MX gradient plans: every GEMM
 * operand mxfp8_e4m3 (per-block kernel) or mxfp4_e2m1 (folded) under fp32 compute (plan C's
 * compute), mxfp8 under bf16 compute, and mxfp8 / mxfp4 emulated; milliseconds and joules
 * per step.
 * Prints tables and a JSON line ("cuda_mxgemm_bench_json"). Without CUDA or a GPU it
 * says so and exits 0 (make bench on a CPU machine). --gemm-only skips part 2. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cuda.h"
#include "energy/source.h"
#include "model/qwen2.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const err_t *e)
{
    fprintf(stderr, "cuda_mxgemm_bench: %s\n", e->msg);
    exit(1);
}

/* the CUDA device's cumulative energy counter (J), NAN without one */
static double energy_J(energy_source_t *s)
{
    if (!s)
        return NAN;
    energy_sample_t buf[ENERGY_MAX_DEVICES];
    int n = 0;
    err_t e = ERR_INIT;
    if (s->ops->read(s->impl, 0, ENERGY_READ_COUNTER, buf, ENERGY_MAX_DEVICES, &n, &e) || n < 1)
        return NAN;
    return buf[0].energy_J;
}

/* ---- part 1: GEMMs ----------------------------------------------------------------------- */

typedef struct fmt {
    const char *name, *spec;
    be_cuda_mxg_t mode;
} fmt_t;

static const fmt_t FMTS[] = {
    {"bf16", "bf16", BE_CUDA_MXG_OFF},
    {"e3m2 fold", "mxfp6_e3m2", BE_CUDA_MXG_AUTO},
    {"e2m3 fold", "mxfp6_e2m3", BE_CUDA_MXG_AUTO},
    {"fp4 fold", "mxfp4_e2m1", BE_CUDA_MXG_AUTO},
    {"fp4 emul", "mxfp4_e2m1", BE_CUDA_MXG_OFF},
    {"fp8 block", "mxfp8_e4m3", BE_CUDA_MXG_ALL},
    {"fp8 emul", "mxfp8_e4m3", BE_CUDA_MXG_OFF},
    {"int8 block", "mxint8", BE_CUDA_MXG_ALL},
    {"int8 emul", "mxint8", BE_CUDA_MXG_OFF},
};
enum { NF = sizeof FMTS / sizeof FMTS[0] };

typedef struct res {
    double ms, ms_q, J;
} res_t;

/* mean seconds per call over at least `min_s` (and 3 calls); `bump` re-prepares x each
 * call (a 4-byte write: every op but the linear layers starts a new generation) */
static double timed(backend_t *be, be_linear_t *l, be_ptr_t y, be_buf_t *dummy, bool bump,
                    double min_s, energy_source_t *src, double *joules)
{
    err_t e = ERR_INIT;
    if (be_sync(be, &e))
        die(&e);
    const double e0 = energy_J(src), t0 = now();
    long n = 0;
    do {
        if (bump)
            be_zero(be, be_ptr(dummy, 0), 4);
        be_linear_fwd(be, l, y, false);
        if (++n % 4 == 0 && be_sync(be, &e))
            die(&e);
    } while (n < 3 || now() - t0 < min_s);
    if (be_sync(be, &e))
        die(&e);
    const double t = now() - t0;
    if (joules)
        *joules = (energy_J(src) - e0) / n;
    return t / n;
}

static void gemms(backend_t *be, energy_source_t *src, FILE *js)
{
    static const int SH[][3] = {{8192, 896, 896},   {8192, 128, 896},   {8192, 4864, 896},
                                {8192, 896, 4864},  {8192, 151936, 896}, {1536, 4864, 896},
                                {896, 4864, 8192}};
    static const char *const SN[] = {"q/o", "k/v", "gate/up", "down", "lm_head", "M 1536", "dW"};
    enum { NS = sizeof SH / sizeof SH[0] };
    err_t e = ERR_INIT;
    size_t mx_x = 0, mx_w = 0, mx_y = 0;
    for (int s = 0; s < NS; s++) {
        size_t M = SH[s][0], N = SH[s][1], K = SH[s][2];
        mx_x = M * K > mx_x ? M * K : mx_x;
        mx_w = N * K > mx_w ? N * K : mx_w;
        mx_y = M * N > mx_y ? M * N : mx_y;
    }
    be_buf_t *x = be_alloc(be, mx_x * 4, &e), *w = be_alloc(be, mx_w * 4, &e);
    be_buf_t *y = be_alloc(be, mx_y * 4, &e), *dummy = be_alloc(be, 4, &e);
    if (!x || !w || !y || !dummy)
        die(&e);
    float *h = malloc((mx_x > mx_w ? mx_x : mx_w) * 4);
    for (size_t i = 0; i < mx_x; i++) /* not zeros, varied magnitudes (METHOD.md) */
        h[i] = (float)((i * 2654435761u) % 2001) * 1e-3f - 1.0f;
    be_upload(be, be_ptr(x, 0), h, mx_x * 4);
    for (size_t i = 0; i < mx_w; i++)
        h[i] = ((float)((i * 40503u + 7) % 1999) * 1e-3f - 1.0f) * 0.05f;
    be_upload(be, be_ptr(w, 0), h, mx_w * 4);
    free(h);

    printf("\nGEMMs y = x W^T (float32 y); GEMM: x prepared once; +quant: x prepared every call\n");
    printf("%-8s %-24s %-10s %9s %8s %7s %9s %8s %7s %10s %7s\n", "shape", "M x N x K", "format",
           "GEMM ms", "TFLOP/s", "x bf16", "+quant ms", "TFLOP/s", "x bf16", "J/call", "x bf16");
    fprintf(js, "\"gemms\": [");
    res_t r[NS][NF];
    for (int s = 0; s < NS; s++) {
        const int M = SH[s][0], N = SH[s][1], K = SH[s][2];
        const double flop = 2.0 * M * (double)N * K;
        for (int f = 0; f < NF; f++) {
            be_linear_t l;
            memset(&l, 0, sizeof l);
            l.x = be_ptr(x, 0), l.w = be_ptr(w, 0), l.M = M, l.N = N, l.K = K;
            mx_spec_t sp;
            if (mx_spec_parse(FMTS[f].spec, &sp, &e))
                die(&e);
            for (int o = 0; o < PREC_OPERAND_COUNT; o++)
                l.spec[o] = sp;
            l.compute = PREC_COMPUTE_FP32;
            l.wcache = be_wcache_new(be, &e);
            l.wversion = 1;
            if (be_cuda_set_mxgemm_mode(be, FMTS[f].mode, &e) && FMTS[f].mode != BE_CUDA_MXG_OFF)
                die(&e);
            be_cuda_mxgemm_stats_t s0, s1;
            be_cuda_mxgemm_stats(be, &s0, &e);
            timed(be, &l, be_ptr(y, 0), dummy, true, 0.0, NULL, NULL); /* warm: caches, plans */
            r[s][f].ms = timed(be, &l, be_ptr(y, 0), dummy, false, 0.25, NULL, NULL) * 1e3;
            r[s][f].ms_q = timed(be, &l, be_ptr(y, 0), dummy, true, 0.6, src, &r[s][f].J) * 1e3;
            be_cuda_mxgemm_stats(be, &s1, &e);
            const bool native = FMTS[f].mode != BE_CUDA_MXG_OFF && f;
            if (native && s1.native == s0.native) {
                fprintf(stderr, "cuda_mxgemm_bench: %s did not run on the tensor cores\n", FMTS[f].name);
                exit(1);
            }
            const bool fold = FMTS[f].mode == BE_CUDA_MXG_AUTO;
            const char *how = !fold ? ""
                              : s1.folded == s0.folded ? "  (not folded: no cuBLASLt plan)"
                              : s1.fold_fallbacks != s0.fold_fallbacks ? "  (fell back)" : "";
            be_wcache_free(be, l.wcache);
            const res_t *b = &r[s][0], *q = &r[s][f];
            char dims[48] = "";
            if (!f)
                snprintf(dims, sizeof dims, "%d x %d x %d", M, N, K);
            printf("%-8s %-24s %-10s %9.3f %8.0f %7.2f %9.3f %8.0f %7.2f %10.4g %7.2f%s\n",
                   f ? "" : SN[s], dims, FMTS[f].name, q->ms, flop / q->ms * 1e-9, b->ms / q->ms,
                   q->ms_q, flop / q->ms_q * 1e-9, b->ms_q / q->ms_q, q->J, q->J / b->J, how);
            fprintf(js, "%s{\"shape\": \"%s\", \"M\": %d, \"N\": %d, \"K\": %d, \"format\": \"%s\", "
                    "\"ms\": %.5f, \"ms_quant\": %.5f, \"J\": %.6g}", s || f ? ", " : "", SN[s], M, N,
                    K, FMTS[f].name, q->ms, q->ms_q, isfinite(q->J) ? q->J : -1.0);
        }
    }
    fprintf(js, "], ");
    if (be_cuda_set_mxgemm(be, true, &e))
        die(&e);
    /* geometric means over the shapes */
    printf("\ngeometric mean over the %d shapes, against bf16:\n", NS);
    for (int f = 1; f < NF; f++) {
        double g = 0, gq = 0, gj = 0;
        for (int s = 0; s < NS; s++) {
            g += log(r[s][0].ms / r[s][f].ms);
            gq += log(r[s][0].ms_q / r[s][f].ms_q);
            gj += log(r[s][f].J / r[s][0].J);
        }
        printf("  %-10s throughput x %.2f (GEMM), x %.2f (+quant); energy per call x %.2f\n",
               FMTS[f].name, exp(g / NS), exp(gq / NS), exp(gj / NS));
    }
    be_free(be, x), be_free(be, w), be_free(be, y), be_free(be, dummy);
}

/* ---- part 2: training steps ----------------------------------------------------------------- */

static const char *PLANS =
    "{\"version\": 1, \"plans\": {"
    "\"bf16\": {\"description\": \"bf16 operands, bf16 compute\", \"default\": \"bf16\", "
    "\"compute\": \"bf16\"},"
    "\"mxfp8\": {\"description\": \"mxfp8_e4m3 operands, fp32 compute\", \"default\": "
    "\"mxfp8_e4m3\", \"compute\": \"fp32\"},"
    "\"mxfp4\": {\"description\": \"mxfp4_e2m1 operands, fp32 compute\", \"default\": "
    "\"mxfp4_e2m1\", \"compute\": \"fp32\"},"
    "\"mxfp8 bf16\": {\"description\": \"mxfp8_e4m3 operands, bf16 compute\", \"default\": "
    "\"mxfp8_e4m3\", \"compute\": \"bf16\"}}}";

static void training(backend_t *be, energy_source_t *src, FILE *js)
{
    err_t e = ERR_INIT;
    prec_policies_t pol;
    if (prec_policies_parse(PLANS, strlen(PLANS), "cuda_mxgemm_bench plans", &pol, &e))
        die(&e);
    const int B = 8, T = 1024, N = B * T;
    qwen2_config_t c = {.hidden = 896, .inter = 4864, .layers = 24, .heads = 14, .kv_heads = 2,
                        .head_dim = 64, .vocab = 151936, .max_pos = 32768, .rope_theta = 1e6,
                        .rms_eps = 1e-6, .tie = true, .dtype = ST_BF16, .bos_id = -1, .pad_id = -1};
    qwen2_opts_t o = {.max_batch = B, .max_seq = T, .training = true};
    qwen2_model_t *m;
    if (qwen2_new(be, &c, &o, &m, &e) || qwen2_init_philox(m, 1, 0.02f, &e))
        die(&e);
    int32_t *ids = malloc(sizeof(int32_t) * N), *tgt = malloc(sizeof(int32_t) * N);
    float *lp = malloc(sizeof(float) * N), *seed = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)(((uint64_t)i * 2654435761u) % (unsigned)c.vocab);
    qwen2_batch_t bt = {B, T, ids, NULL, NULL};
    qwen2_next_token_targets(&bt, tgt);
    int count = 0;
    for (int i = 0; i < N; i++)
        count += tgt[i] >= 0;
    for (int i = 0; i < N; i++)
        seed[i] = tgt[i] >= 0 ? -1.0f / count : 0.0f;
    static const char *const RUN[] = {"bf16", "mxfp8", "mxfp4", "mxfp8 bf16", "mxfp8", "mxfp4"};
    static const be_cuda_mxg_t MODE[] = {BE_CUDA_MXG_OFF, BE_CUDA_MXG_ALL, BE_CUDA_MXG_AUTO,
                                         BE_CUDA_MXG_ALL, BE_CUDA_MXG_OFF, BE_CUDA_MXG_OFF};
    enum { NR = 6, WARM = 2, REPS = 5 };
    double ms[NR], J[NR];
    printf("\ntraining steps: Qwen2.5-0.5B shape, %d x %d tokens, forward + backward + AdamW, "
           "mean of %d after %d warm-up\n", B, T, REPS, WARM);
    printf("%-26s %10s %7s %10s %7s %16s\n", "plan", "ms/step", "x bf16", "J/step", "x bf16",
           "MX GEMMs native");
    fprintf(js, "\"training\": [");
    for (int p = 0; p < NR; p++) {
        const bool emul = p >= NR - 2;
        const prec_plan_t *pl;
        if (prec_plan_find(&pol, RUN[p], &pl, &e) || qwen2_set_plan(m, pl, "cuda_mxgemm_bench", &e) ||
            be_cuda_set_mxgemm_mode(be, MODE[p], &e))
            die(&e);
        prec_ctx_t ctx = {PREC_GRADIENT, 0, 0};
        qwen2_adamw_t h = {1e-5, 0.9, 0.999, 1e-8, 0.01, 1.0};
        be_cuda_mxgemm_stats_t s0, s1;
        be_cuda_mxgemm_stats(be, &s0, &e);
        double t0 = 0, e0 = 0;
        for (int s = 0; s < WARM + REPS; s++) {
            if (s == WARM) {
                if (be_sync(be, &e))
                    die(&e);
                t0 = now(), e0 = energy_J(src);
            }
            qwen2_zero_grads(m);
            qwen2_grad_in_t g = {seed, NULL, NULL, NULL};
            qwen2_step_info_t si;
            if (qwen2_forward(m, &ctx, &bt, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS, &e) ||
                qwen2_token_logprobs(m, tgt, lp, NULL, &e) || qwen2_backward(m, &ctx, &g, &e) ||
                qwen2_optimizer_step(m, &h, &si, &e))
                die(&e);
        }
        if (be_sync(be, &e))
            die(&e);
        ms[p] = (now() - t0) / REPS * 1e3;
        J[p] = (energy_J(src) - e0) / REPS;
        be_cuda_mxgemm_stats(be, &s1, &e);
        char name[64];
        snprintf(name, sizeof name, "%s%s", RUN[p],
                 emul ? " (emulated)" : MODE[p] == BE_CUDA_MXG_AUTO ? " (folded)" : p ? " (block)" : "");
        printf("%-26s %10.1f %7.2f %10.2f %7.2f %7ld of %-7ld\n", name, ms[p], ms[p] / ms[0], J[p],
               J[p] / J[0], s1.native - s0.native,
               s1.native - s0.native + s1.emulated - s0.emulated);
        if (MODE[p] == BE_CUDA_MXG_AUTO)
            printf("%-26s %ld GEMMs folded, %ld of them fell back to the per-block kernel\n", "",
                   s1.folded - s0.folded, s1.fold_fallbacks - s0.fold_fallbacks);
        fprintf(js, "%s{\"plan\": \"%s\", \"ms\": %.3f, \"J\": %.4g}", p ? ", " : "", name, ms[p],
                isfinite(J[p]) ? J[p] : -1.0);
    }
    fprintf(js, "]");
    if (be_cuda_set_mxgemm(be, true, &e))
        die(&e);
    qwen2_free(m);
    prec_policies_free(&pol);
    free(ids), free(tgt), free(lp), free(seed);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* a run cut short by a time limit keeps its lines */
    err_t e = ERR_INIT;
    backend_t *be;
    if (be_open("cuda", &be, &e)) {
        printf("cuda_mxgemm_bench: skipped: %s\n", e.msg);
        return 0;
    }
    be_cuda_info_t info;
    if (be_cuda_info(be, &info, &e))
        die(&e);
    printf("cuda_mxgemm_bench: %s (cc %d.%d, %d SMs), CUDA runtime %d, driver %d\n", info.name,
           info.cc_major, info.cc_minor, info.sms, info.runtime_version, info.driver_version);
    energy_source_opts_t so;
    memset(&so, 0, sizeof so);
    energy_source_opts_from_env(&so);
    energy_source_t *src = NULL;
    if (energy_source_open("nvml", &so, &src, &e)) {
        printf("energy: NVML unavailable (%s): joules left out\n", e.msg);
        src = NULL;
    } else if (!src->prov.ndev || !src->prov.dev[0].has_counter) {
        printf("energy: %s has no energy counter: joules left out\n",
               src->prov.ndev ? src->prov.dev[0].name : "NVML");
    }
    char *jbuf = NULL;
    size_t jlen = 0;
    FILE *js = open_memstream(&jbuf, &jlen);
    fprintf(js, "{\"device\": \"%s\", ", info.name);
    gemms(be, src, js);
    if (!(argc > 1 && !strcmp(argv[1], "--gemm-only")))
        training(be, src, js);
    else
        fprintf(js, "\"training\": []");
    fprintf(js, "}");
    fclose(js);
    printf("cuda_mxgemm_bench_json %s\n", jbuf);
    free(jbuf);
    energy_source_close(src);
    be_close(be);
    return 0;
}
