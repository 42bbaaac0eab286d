/* cuda_bench: the CUDA backend at the study's shapes (issue 10).
 *
 * Model: Qwen2.5-0.5B's config (hidden 896, intermediate 4864, 24 layers, 14 heads / 2 KV
 * heads, vocab 151936, tied), random weights from qwen2_init_philox. Plan "bf16": every
 * GEMM operand bf16 in every phase, bf16 compute in the gradient phase (PyTorch bf16
 * autocast's split: master weights, optimizer state, norms, softmax float32).
 *   training   batch 8 x 1024 tokens, next-token cross-entropy, forward + backward +
 *              AdamW (clipping at 1.0); 2 warm-up steps, median of 5 (each phase timed
 *              between the synchronisations the model API does anyway)
 *   decoding   8 prompts of 128 random tokens + 128 new tokens, sampled (temperature 1,
 *              no top-k / top-p, no stop), KV cache; 1 warm-up, median of 3
 *   ceilings   a device-to-device copy of 2 GiB and an 8192^3 bf16 GEMM through the
 *              backend's own linear layer, measured in the same run (METHOD.md)
 * Peak memory: every cudaMalloc of the backend (be_cuda_mem: buffers, scratch, weight
 * caches, cuBLASLt workspace; CUDA context excluded), each part on a freshly opened
 * backend so that one part's scratch does not count in the next.
 *   attention  forward + backward alone at the training shape, our 16-bit tiles against
 *              cuDNN's fused attention (attn_bench at the end; `cuda_bench --attn` runs
 *              only this part)
 * The PyTorch peer runs from scripts/peer/cuda_peer.py in the same device call
 * (scripts/peer/cuda_device.sh). Prints one table and a JSON line ("cuda_bench_json";
 * the attention part "cuda_bench_attn_json").
 * Then decoding (issue 16; `cuda_bench decode` runs only this part): a decoding step at
 * batch 1, 8, 32, 64 under plans bf16, mxfp8, mxfp6, mxfp4 (every linear layer, lm_head
 * included), bytes per step and the floor at the copy ceiling measured in the same run,
 * ratios to bf16, the rebuild of the packed copies, the old paths (emulated MXFP4, ops one
 * by one), the study's rollout (8 x (128 + 128)) and batch 32, a per-op profile, and a JSON
 * line ("cuda_bench_decode_json"). `cuda_bench gemv`: the step's fused linear ops alone
 * (gemv_bench below).
 * Without CUDA or a GPU it says so and exits 0 (make bench on a CPU machine). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cuda.h"
#include "model/qwen2.h"
#include "util/rng.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const err_t *e)
{
    fprintf(stderr, "cuda_bench: %s\n", e->msg);
    exit(1);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static const char *PLANS =
    "{\"version\": 1, \"plans\": {\"bf16\": {\"description\": \"bf16 GEMM operands everywhere, "
    "bf16 compute in the gradient phase\", \"default\": \"bf16\", \"compute\": \"bf16\"}}}";

static qwen2_config_t qwen05b(void)
{
    qwen2_config_t c = {.hidden = 896, .inter = 4864, .layers = 24, .heads = 14, .kv_heads = 2,
                        .head_dim = 64, .vocab = 151936, .max_pos = 32768, .rope_theta = 1e6,
                        .rms_eps = 1e-6, .tie = true, .dtype = ST_BF16, .bos_id = -1, .pad_id = -1};
    return c;
}

/* warm + reps training steps; times of the timed ones (whole step, forward with the
 * log-probs, backward, optimizer) and the last loss */
static void train_steps(qwen2_model_t *m, const qwen2_batch_t *bt, const int32_t *tgt, float *lp,
                        const float *seed, int count, int warm, int reps, double *ts, double *tf,
                        double *tb, double *to, double *loss)
{
    err_t e = ERR_INIT;
    backend_t *be = qwen2_backend(m);
    const int N = bt->B * bt->T;
    prec_ctx_t ctx = {PREC_GRADIENT, 0, 0};
    qwen2_adamw_t h = {1e-5, 0.9, 0.999, 1e-8, 0.01, 1.0};
    for (int s = 0; s < warm + reps; s++) {
        if (be_sync(be, &e))
            die(&e);
        double t0 = now();
        if (qwen2_forward(m, &ctx, bt, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS, &e) ||
            qwen2_token_logprobs(m, tgt, lp, NULL, &e))
            die(&e);
        double t1 = now();
        qwen2_zero_grads(m);
        qwen2_grad_in_t g = {seed, NULL, NULL, NULL};
        if (qwen2_backward(m, &ctx, &g, &e))
            die(&e);
        double t2 = now();
        qwen2_step_info_t si;
        if (qwen2_optimizer_step(m, &h, &si, &e))
            die(&e);
        double t3 = now();
        double sum = 0;
        for (int i = 0; i < N; i++)
            sum += tgt[i] >= 0 ? lp[i] : 0.0;
        *loss = -sum / count;
        if (!isfinite(*loss))
            fprintf(stderr, "cuda_bench: step %d: loss is %g\n", s, *loss);
        if (s >= warm) {
            ts[s - warm] = t3 - t0, tf[s - warm] = t1 - t0, tb[s - warm] = t2 - t1;
            to[s - warm] = t3 - t2;
        }
    }
}

static void set_plan(qwen2_model_t *m, prec_policies_t *pol)
{
    err_t e = ERR_INIT;
    const prec_plan_t *p;
    if (prec_plan_find(pol, "bf16", &p, &e) || qwen2_set_plan(m, p, "cuda_bench", &e))
        die(&e);
}

/* the two ceilings through the backend: GB/s of a D2D copy (read + write), TFLOP/s of a
 * bf16 GEMM with cached bf16 weights */
/* GB/s of a 2 GiB device-to-device copy (read + write), median of 7 */
static double copy_rate(backend_t *be)
{
    err_t e = ERR_INIT;
    const size_t bytes = (size_t)2 << 30;
    be_buf_t *a = be_alloc(be, bytes, &e), *b = be_alloc(be, bytes, &e);
    if (!a || !b)
        die(&e);
    be_zero(be, be_ptr(a, 0), bytes);
    double t[7];
    for (int r = 0; r < 7; r++) {
        if (be_sync(be, &e))
            die(&e);
        double t0 = now();
        be_copy(be, be_ptr(b, 0), be_ptr(a, 0), bytes);
        if (be_sync(be, &e))
            die(&e);
        t[r] = now() - t0;
    }
    be_free(be, a);
    be_free(be, b);
    return 2.0 * bytes / median(t, 7) * 1e-9;
}

static void ceilings(backend_t *be, double *gbs, double *tflops)
{
    err_t e = ERR_INIT;
    double t[7];
    *gbs = copy_rate(be);

    const int n = 8192;
    const size_t nn = (size_t)n * n;
    be_buf_t *x = be_alloc(be, nn * 4, &e), *w = be_alloc(be, nn * 4, &e), *y = be_alloc(be, nn * 4, &e);
    if (!x || !w || !y)
        die(&e);
    float *h = malloc(nn * 4);
    for (size_t i = 0; i < nn; i++)
        h[i] = (float)((i * 2654435761u) % 2001) * 1e-3f - 1.0f; /* not zeros (METHOD.md) */
    be_upload(be, be_ptr(x, 0), h, nn * 4);
    be_upload(be, be_ptr(w, 0), h, nn * 4);
    free(h);
    be_linear_t l;
    memset(&l, 0, sizeof l);
    l.x = be_ptr(x, 0), l.w = be_ptr(w, 0), l.M = l.N = l.K = n;
    for (int o = 0; o < PREC_OPERAND_COUNT; o++)
        l.spec[o] = mx_spec_default(MX_BF16);
    l.compute = PREC_COMPUTE_BF16;
    l.wcache = be_wcache_new(be, &e);
    l.wversion = 1;
    for (int r = 0; r < 7; r++) {
        if (be_sync(be, &e))
            die(&e);
        double t0 = now();
        be_linear_fwd(be, &l, be_ptr(y, 0), false);
        if (be_sync(be, &e))
            die(&e);
        t[r] = now() - t0;
    }
    *tflops = 2.0 * n * (double)n * n / median(t + 1, 6) * 1e-12;
    be_wcache_free(be, l.wcache);
    be_free(be, x), be_free(be, w), be_free(be, y);
}

static void attn_bench(void);

/* ---- decoding (issue 16) -------------------------------------------------------------- */

static const char *DEC_PLANS =
    "{\"version\": 1, \"plans\": {"
    "\"bf16\": {\"default\": \"bf16\", \"compute\": \"bf16\"},"
    "\"mxfp8\": {\"default\": \"mxfp8_e4m3/32\"},"
    "\"mxfp6\": {\"default\": \"mxfp6_e3m2/32\"},"
    "\"mxfp4\": {\"default\": \"mxfp4_e2m1/32\"}}}";

/* bytes of every linear layer's weight (lm_head included) as decoding reads it */
static double weight_bytes(const qwen2_config_t *c, int bits)
{
    const double per_layer[7][2] = {{(double)c->heads * c->head_dim, c->hidden},
                                    {(double)c->kv_heads * c->head_dim, c->hidden},
                                    {(double)c->kv_heads * c->head_dim, c->hidden},
                                    {c->hidden, (double)c->heads * c->head_dim},
                                    {c->inter, c->hidden},
                                    {c->inter, c->hidden},
                                    {c->hidden, c->inter}};
    double b = 0;
    for (int i = 0; i < 7; i++) {
        const double N = per_layer[i][0], K = per_layer[i][1];
        b += c->layers * (bits == 16 ? 2 * N * K : N * K * bits / 8 + N * ceil(K / 32));
    }
    const double N = c->vocab, K = c->hidden;
    return b + (bits == 16 ? 2 * N * K : N * K * bits / 8 + N * ceil(K / 32));
}

static double gen_time(qwen2_model_t *m, int B, int PL, int NEW, int reps)
{
    err_t e = ERR_INIT;
    const qwen2_config_t *c = qwen2_config(m);
    int32_t *prompt = malloc(sizeof(int32_t) * B * PL), *out = malloc(sizeof(int32_t) * B * NEW);
    const int32_t **pp = malloc(sizeof *pp * B);
    int *plen = malloc(sizeof(int) * B), *olen = malloc(sizeof(int) * B);
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < PL; t++)
            prompt[b * PL + t] = (int32_t)(((uint64_t)(b * PL + t) * 2246822519u + 7) % (unsigned)c->vocab);
        pp[b] = prompt + b * PL;
        plen[b] = PL;
    }
    prec_ctx_t ctx = {PREC_ROLLOUT, 42, 0};
    qwen2_gen_t g = {NEW, 1.0, 0, 1.0, 42, 0, NULL, 0};
    double t[9];
    for (int r = 0; r <= reps; r++) {
        if (be_sync(qwen2_backend(m), &e))
            die(&e);
        double t0 = now();
        if (qwen2_generate(m, &ctx, B, pp, plen, &g, out, olen, &e))
            die(&e);
        if (r)
            t[r - 1] = now() - t0;
    }
    free(prompt), free(out), free(pp), free(plen), free(olen);
    return median(t, reps);
}

static void decode_bench(double gbs)
{
    err_t e = ERR_INIT;
    backend_t *be;
    if (be_open("cuda", &be, &e))
        die(&e);
    be_cuda_info_t info;
    if (be_cuda_info(be, &info, &e))
        die(&e);
    prec_policies_t pol;
    if (prec_policies_parse(DEC_PLANS, strlen(DEC_PLANS), "cuda_bench decode plans", &pol, &e))
        die(&e);
    const int MB = 64, PL = 64, STEPS = 64, RL = 128; /* kv_len 256 >= PL + 2 STEPS + 2 */
    qwen2_config_t c = qwen05b();
    qwen2_opts_t o = {.max_batch = MB, .max_seq = RL, .kv_batch = MB, .kv_len = RL + RL};
    qwen2_model_t *m;
    if (qwen2_new(be, &c, &o, &m, &e) || qwen2_init_philox(m, 1, 0.02f, &e))
        die(&e);
    const char *plans[4] = {"bf16", "mxfp8", "mxfp6", "mxfp4"};
    const int bits[4] = {16, 8, 6, 4}, Bs[4] = {1, 8, 32, 64};
    double step[4][4], pack_ms[4], wb[4];
    printf("\ndecoding step (issue 16): Qwen2.5-0.5B shape, prompts of %d tokens, %d steps timed "
           "(generate %d - generate 66 new tokens), median of 3; every linear layer (lm_head too) "
           "in the plan's format, weights and inputs\n", PL, STEPS, 2 * STEPS + 2);
    printf("  %-6s %5s %10s %11s %10s %8s %9s\n", "plan", "batch", "ms/step", "GB/step", "floor ms",
           "x floor", "x bf16");
    for (int p = 0; p < 4; p++) {
        const prec_plan_t *pl;
        if (prec_plan_find(&pol, plans[p], &pl, &e) || qwen2_set_plan(m, pl, "cuda_bench", &e))
            die(&e);
        prec_ctx_t ctx = {PREC_ROLLOUT, 42, 0};
        if (qwen2_decode_weights(m, &ctx, &e))
            die(&e);
        double tp[3];
        for (int r = 0; r < 3; r++) { /* the rebuild after an optimizer step: time it */
            qwen2_params_touched(m);
            double t0 = now();
            if (qwen2_decode_weights(m, &ctx, &e))
                die(&e);
            tp[r] = now() - t0;
        }
        pack_ms[p] = median(tp, 3) * 1e3;
        wb[p] = weight_bytes(&c, bits[p]);
        for (int bi = 0; bi < 4; bi++) {
            const int B = Bs[bi];
            /* the difference of two runs that both record the step once */
            const double t2 = gen_time(m, B, PL, STEPS + 2, 3), tn = gen_time(m, B, PL, 2 * STEPS + 2, 3);
            step[p][bi] = (tn - t2) / STEPS;
            /* K and V of every layer at the mean cache length, read once; the logits written */
            const double kv = (double)B * (PL + 1.5 * STEPS) * c.layers * 2 * c.kv_heads * c.head_dim * 4;
            const double bytes = wb[p] + kv + (double)B * c.vocab * 4;
            const double floor_s = bytes / (gbs * 1e9);
            printf("  %-6s %5d %10.3f %11.3f %10.3f %8.2f %9.2f\n", plans[p], B, step[p][bi] * 1e3,
                   bytes * 1e-9, floor_s * 1e3, step[p][bi] / floor_s, step[p][bi] / step[0][bi]);
        }
    }
    printf("  rebuilding the decode copies after a parameter update: bf16 %.1f ms, mxfp8 %.1f ms, "
           "mxfp6 %.1f ms, mxfp4 %.1f ms\n", pack_ms[0], pack_ms[1], pack_ms[2], pack_ms[3]);
    printf("  %s\n", be_cuda_decode_note(be)[0] ? be_cuda_decode_note(be) : "every step recorded as one graph");

    /* what the old paths cost: emulated MXFP4 (fake-quantized bf16 weights through cuBLASLt)
     * and bf16 with the ops run one by one, batch 8 */
    const prec_plan_t *pl;
    if (prec_plan_find(&pol, "mxfp4", &pl, &e) || qwen2_set_plan(m, pl, "cuda_bench", &e) ||
        be_cuda_set_decode(be, BE_CUDA_DEC_EMULATED, &e))
        die(&e);
    const double emu4 = (gen_time(m, 8, PL, 2 * STEPS + 2, 3) - gen_time(m, 8, PL, STEPS + 2, 3)) / STEPS;
    if (be_cuda_set_decode(be, BE_CUDA_DEC_PACKED, &e) || prec_plan_find(&pol, "bf16", &pl, &e) ||
        qwen2_set_plan(m, pl, "cuda_bench", &e) || be_cuda_set_graphs(be, false, &e))
        die(&e);
    const double ungraphed = (gen_time(m, 8, PL, 2 * STEPS + 2, 3) - gen_time(m, 8, PL, STEPS + 2, 3)) / STEPS;
    if (be_cuda_set_graphs(be, true, &e))
        die(&e);
    printf("  batch 8: mxfp4 emulated (the old path) %.3f ms/step; bf16 ops one by one (no graph) "
           "%.3f ms/step\n", emu4 * 1e3, ungraphed * 1e3);

    /* the study's rollout and batch 32: prompts of 128 tokens, 128 new tokens, sampled */
    const double roll_bf16 = gen_time(m, 8, RL, RL, 3), b32_bf16 = gen_time(m, 32, RL, RL, 3);
    if (prec_plan_find(&pol, "mxfp4", &pl, &e) || qwen2_set_plan(m, pl, "cuda_bench", &e))
        die(&e);
    const double roll_mx4 = gen_time(m, 8, RL, RL, 3), b32_mx4 = gen_time(m, 32, RL, RL, 3);
    printf("  rollout 8 x (%d + %d): bf16 %.3f s (%.0f new tokens/s), mxfp4 %.3f s (%.0f new "
           "tokens/s)\n", RL, RL, roll_bf16, 8 * RL / roll_bf16, roll_mx4, 8 * RL / roll_mx4);
    printf("  batch 32 x (%d + %d): bf16 %.0f new tokens/s, mxfp4 %.0f new tokens/s\n", RL, RL,
           32 * RL / b32_bf16, 32 * RL / b32_mx4);
    be_cuda_mem_t mem;
    be_cuda_mem(be, &mem, &e);

    /* where a step's time goes: 8 steps of batch 8 with every op synchronised */
    if (prec_plan_find(&pol, "bf16", &pl, &e) || qwen2_set_plan(m, pl, "cuda_bench", &e) ||
        be_cuda_profile(be, true, &e))
        die(&e);
    double tq = gen_time(m, 8, PL, 10, 1);
    printf("\nprofile of prefill + 9 decoding steps, bf16, batch 8 (each op synchronised: %.1f ms "
           "in all)\n", tq * 1e3);
    be_cuda_profile_print(be, stdout);
    if (be_cuda_profile(be, false, &e))
        die(&e);
    printf("cuda_bench_decode_json {\"device\": \"%s\", \"copy_gbs\": %.1f", info.name, gbs);
    for (int p = 0; p < 4; p++)
        for (int bi = 0; bi < 4; bi++)
            printf(", \"step_%s_b%d_s\": %.6f", plans[p], Bs[bi], step[p][bi]);
    for (int p = 0; p < 4; p++)
        printf(", \"weight_bytes_%s\": %.0f, \"pack_%s_ms\": %.2f", plans[p], wb[p], plans[p], pack_ms[p]);
    printf(", \"step_mxfp4_emulated_b8_s\": %.6f, \"step_bf16_ungraphed_b8_s\": %.6f, "
           "\"rollout_bf16_s\": %.5f, \"rollout_mxfp4_s\": %.5f, \"b32_bf16_tokens_per_s\": %.1f, "
           "\"b32_mxfp4_tokens_per_s\": %.1f, \"rollout_tokens_per_s\": %.1f, \"peak_bytes\": %zu, "
           "\"graph_note\": \"%s\"}\n", emu4, ungraphed, roll_bf16, roll_mx4, 32 * RL / b32_bf16,
           32 * RL / b32_mx4, 8 * RL / roll_bf16, mem.peak, be_cuda_decode_note(be));
    qwen2_free(m);
    prec_policies_free(&pol);
    be_close(be);
}

/* ---- `cuda_bench gemv`: the decoding step's fused linear ops alone ------------------------------
 * Each of a layer's four fused ops (q/k/v after the norm; o_proj added to the residual;
 * gate/up after the norm with SwiGLU; down_proj added to the residual) at the Qwen2.5-0.5B
 * shape, recorded 24 times in a row over 24 distinct weights (as the 24 layers: nothing
 * stays in L2 between two of them) and replayed as one graph; time per op, its weight bytes,
 * their rate and the op's time over its floor (weight bytes at the copy ceiling). Weight
 * formats bf16, MXFP8, MXFP6, MXFP4 (blocks of 32), inputs cast to bf16 or quantized to the
 * weights' MX format, at batch 1, 8 and 32. */
typedef struct gemv_op {
    const char *name;
    int nlin, N[3], K;
    bool norm, bias;
    be_dec_epi_t epi;
} gemv_op_t;

static be_ptr_t gb_buf(backend_t *be, const float *host, size_t n)
{
    err_t e = ERR_INIT;
    be_buf_t *b = be_alloc(be, n * sizeof(float), &e);
    if (!b)
        die(&e);
    be_ptr_t p = be_ptr(b, 0);
    if (host)
        be_upload(be, p, host, n * sizeof(float));
    return p;
}

static void gemv_bench(double gbs)
{
    err_t e = ERR_INIT;
    backend_t *be;
    if (be_open("cuda", &be, &e))
        die(&e);
    enum { L = 24, REPS = 20 };
    const gemv_op_t ops[4] = {
        {"q,k,v + norm", 3, {896, 128, 128}, 896, true, true, BE_DEC_STORE},
        {"o + residual", 1, {896, 0, 0}, 896, false, false, BE_DEC_RESIDUAL},
        {"gate,up + norm, SwiGLU", 2, {4864, 4864, 0}, 896, true, false, BE_DEC_SWIGLU},
        {"down + residual", 1, {896, 0, 0}, 4864, false, false, BE_DEC_RESIDUAL}};
    const char *wspec[4] = {"bf16", "mxfp8_e4m3/32", "mxfp6_e3m2/32", "mxfp4_e2m1/32"};
    const int wbits[4] = {16, 8, 6, 4}, Ms[3] = {1, 8, 32};
    /* one layer's weights, uploaded into each layer's own buffers */
    const size_t KMAX = 4864, NMAX = 4864;
    float *h = malloc(sizeof(float) * KMAX * NMAX), *hx = malloc(sizeof(float) * 64 * KMAX);
    for (size_t i = 0; i < KMAX * NMAX; i++)
        h[i] = (float)rng_normal(5, 1, i) * 0.02f;
    for (size_t i = 0; i < 64 * KMAX; i++)
        hx[i] = (float)rng_normal(5, 2, i);
    be_ptr_t x = gb_buf(be, hx, 64 * KMAX), nw = gb_buf(be, hx, KMAX), out[3];
    for (int i = 0; i < 3; i++)
        out[i] = gb_buf(be, hx, 64 * NMAX);
    be_ptr_t w[4][L][3], bias[L][3];
    be_wcache_t *wc[4][L][3];
    for (int o = 0; o < 4; o++)
        for (int l = 0; l < L; l++)
            for (int i = 0; i < ops[o].nlin; i++) {
                w[o][l][i] = gb_buf(be, h, (size_t)ops[o].N[i] * ops[o].K);
                if (!(wc[o][l][i] = be_wcache_new(be, &e)))
                    die(&e);
                if (o == 0)
                    bias[l][i] = gb_buf(be, h, (size_t)ops[o].N[i]);
            }
    printf("\ndecode GEMV ops alone (issue 16): Qwen2.5-0.5B shape, each op %d times over %d distinct "
           "weights as one graph, median of 3 x %d replays; weight bytes (codes + scales) over the "
           "copy ceiling %.0f GB/s\n", L, L, REPS, gbs);
    printf("  %-24s %-14s %-14s %5s %9s %9s %9s %8s\n", "op", "weights", "inputs", "batch",
           "us/op", "MB/op", "GB/s", "x floor");
    double layer_us[4][2][3];
    memset(layer_us, 0, sizeof layer_us);
    for (int f = 0; f < 4; f++)
        for (int xi = 0; xi < (f ? 2 : 1); xi++)
            for (int mi = 0; mi < 3; mi++) {
                const int M = Ms[mi];
                const char *xs = xi ? wspec[f] : "bf16";
                for (int o = 0; o < 4; o++) {
                    const gemv_op_t *op = &ops[o];
                    be_dec_linear_t d[L];
                    double bytes = 0;
                    for (int l = 0; l < L; l++) {
                        memset(&d[l], 0, sizeof d[l]);
                        d[l].x = x, d[l].norm_w = op->norm ? nw : BE_NULL, d[l].eps = 1e-6f;
                        d[l].M = M, d[l].K = op->K, d[l].nlin = op->nlin, d[l].epi = op->epi;
                        for (int i = 0; i < op->nlin; i++) {
                            be_linear_t *ln = &d[l].lin[i];
                            for (int q = 0; q < PREC_OPERAND_COUNT; q++)
                                ln->spec[q] = mx_spec_default(MX_FP32);
                            if (mx_spec_parse(wspec[f], &ln->spec[PREC_OP_WEIGHT], &e) ||
                                mx_spec_parse(xs, &ln->spec[PREC_OP_INPUT], &e))
                                die(&e);
                            ln->w = w[o][l][i], ln->b = op->bias ? bias[l][i] : BE_NULL;
                            ln->N = op->N[i], ln->K = op->K, ln->compute = PREC_COMPUTE_FP32;
                            ln->wcache = wc[o][l][i], ln->wversion = 1 + (uint64_t)f;
                            ln->seed = 42, ln->stream = 100 * (uint64_t)(l * 3 + i);
                            d[l].out[i] = op->epi == BE_DEC_STORE || i == 0 ? out[i] : BE_NULL;
                            if (l == 0)
                                bytes += (double)op->N[i] * op->K *
                                         (f ? wbits[f] / 8.0 + 1.0 / 32 : 2.0);
                        }
                    }
                    for (int l = 0; l < L; l++) /* builds the decode copies */
                        be_dec_linear(be, &d[l]);
                    if (be_sync(be, &e))
                        die(&e);
                    be_graph_t *g = NULL;
                    if (!be_graph_begin(be, &e)) {
                        for (int l = 0; l < L; l++)
                            be_dec_linear(be, &d[l]);
                        if (be_graph_end(be, &g, &e))
                            g = NULL;
                    }
                    e = (err_t)ERR_INIT;
                    double t[3];
                    for (int r = 0; r <= 3; r++) {
                        if (be_sync(be, &e))
                            die(&e);
                        const double t0 = now();
                        for (int k = 0; k < REPS; k++) {
                            if (g)
                                be_graph_launch(be, g);
                            else
                                for (int l = 0; l < L; l++)
                                    be_dec_linear(be, &d[l]);
                        }
                        if (be_sync(be, &e))
                            die(&e);
                        if (r)
                            t[r - 1] = (now() - t0) / (REPS * L);
                    }
                    be_graph_free(be, g);
                    const double us = median(t, 3) * 1e6;
                    layer_us[f][xi][mi] += us;
                    printf("  %-24s %-14s %-14s %5d %9.2f %9.2f %9.0f %8.2f%s\n", op->name, wspec[f], xs,
                           M, us, bytes / 1e6, bytes / (us * 1e3), us / (bytes / (gbs * 1e3)),
                           g ? "" : " (no graph)");
                }
            }
    printf("  a layer's four ops (us):");
    for (int f = 0; f < 4; f++)
        for (int xi = 0; xi < (f ? 2 : 1); xi++)
            printf("  %s/%s b1 %.1f b8 %.1f b32 %.1f", wspec[f], xi ? "mx" : "bf16", layer_us[f][xi][0],
                   layer_us[f][xi][1], layer_us[f][xi][2]);
    printf("\n");
    for (int o = 0; o < 4; o++)
        for (int l = 0; l < L; l++)
            for (int i = 0; i < ops[o].nlin; i++) {
                be_wcache_free(be, wc[o][l][i]);
                be_free(be, w[o][l][i].buf);
                if (o == 0)
                    be_free(be, bias[l][i].buf);
            }
    be_free(be, x.buf), be_free(be, nw.buf);
    for (int i = 0; i < 3; i++)
        be_free(be, out[i].buf);
    free(h), free(hx);
    be_close(be);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* a run cut short by a time limit keeps its lines */
    err_t e = ERR_INIT;
    backend_t *be;
    if (be_open("cuda", &be, &e)) {
        printf("cuda_bench: skipped: %s\n", e.msg);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "--attn")) {
        be_close(be);
        attn_bench();
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "gemv")) { /* the decoding step's linear ops alone */
        const double gbs = copy_rate(be);
        be_close(be);
        printf("cuda_bench gemv: ceiling: device copy %.0f GB/s (read + write)\n", gbs);
        gemv_bench(gbs);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "decode")) { /* the decoding part alone */
        be_cuda_info_t info;
        if (be_cuda_info(be, &info, &e))
            die(&e);
        printf("cuda_bench decode: %s (cc %d.%d, %d SMs), CUDA runtime %d, driver %d\n", info.name,
               info.cc_major, info.cc_minor, info.sms, info.runtime_version, info.driver_version);
        const double gbs = copy_rate(be);
        be_close(be);
        printf("ceiling: device copy %.0f GB/s (read + write)\n", gbs);
        decode_bench(gbs);
        return 0;
    }
    be_cuda_info_t info;
    if (be_cuda_info(be, &info, &e))
        die(&e);
    printf("cuda_bench: %s (cc %d.%d, %d SMs, %.1f GiB), CUDA runtime %d, driver %d\n", info.name,
           info.cc_major, info.cc_minor, info.sms, info.total_mem / 1073741824.0,
           info.runtime_version, info.driver_version);
    prec_policies_t pol;
    if (prec_policies_parse(PLANS, strlen(PLANS), "cuda_bench plans", &pol, &e))
        die(&e);

    double gbs, tfl;
    ceilings(be, &gbs, &tfl);
    printf("ceilings: device copy %.0f GB/s (read + write), bf16 GEMM 8192^3 %.0f TFLOP/s\n", gbs, tfl);
    be_close(be);
    if (be_open("cuda", &be, &e))
        die(&e);

    /* ---- training ---- */
    const int B = 8, T = 1024, N = B * T;
    qwen2_config_t c = qwen05b();
    qwen2_opts_t o = {.max_batch = B, .max_seq = T, .training = true};
    qwen2_model_t *m;
    if (qwen2_new(be, &c, &o, &m, &e) || qwen2_init_philox(m, 1, 0.02f, &e))
        die(&e);
    set_plan(m, &pol);
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
    enum { WARM = 2, REPS = 5 };
    double ts[REPS], tf[REPS], tb[REPS], to[REPS], loss = 0;
    train_steps(m, &bt, tgt, lp, seed, count, WARM, REPS, ts, tf, tb, to, &loss);
    double t_step = median(ts, REPS), t_f = median(tf, REPS), t_b = median(tb, REPS),
           t_o = median(to, REPS);
    /* the other attention kernels, for comparison: one warm-up step and three timed */
    double tv[3], dummy[3][3], lv;
    double t_tf32 = 0, t_acc = 0, t_exact = 0;
    if (be_cuda_set_attn(be, BE_CUDA_ATTN_ACCURATE, &e))
        die(&e);
    train_steps(m, &bt, tgt, lp, seed, count, 1, 3, tv, dummy[0], dummy[1], dummy[2], &lv);
    t_acc = median(tv, 3);
    if (be_cuda_set_attn(be, BE_CUDA_ATTN_TF32, &e))
        die(&e);
    train_steps(m, &bt, tgt, lp, seed, count, 1, 3, tv, dummy[0], dummy[1], dummy[2], &lv);
    t_tf32 = median(tv, 3);
    if (be_cuda_set_attn(be, BE_CUDA_ATTN_EXACT, &e))
        die(&e);
    train_steps(m, &bt, tgt, lp, seed, count, 0, 1, tv, dummy[0], dummy[1], dummy[2], &lv);
    t_exact = tv[0];
    if (be_cuda_set_attn(be, BE_CUDA_ATTN_FAST, &e))
        die(&e);
    /* where the time goes: one step with every op timed on its own */
    if (be_cuda_profile(be, true, &e))
        die(&e);
    train_steps(m, &bt, tgt, lp, seed, count, 0, 1, tv, dummy[0], dummy[1], dummy[2], &lv);
    printf("\nprofile of one training step (each op synchronised: %.1f ms in all)\n", tv[0] * 1e3);
    be_cuda_profile_print(be, stdout);
    if (be_cuda_profile(be, false, &e))
        die(&e);
    be_cuda_mem_t mem_train;
    be_cuda_mem(be, &mem_train, &e);
    qwen2_mem_t qm;
    qwen2_memory(m, &qm);
    /* FLOPs of one step: 6 x (GEMM parameters) x tokens for the linear layers and the
     * lm_head, plus attention (causal: half the full QK^T and PV products; backward 2x) */
    const double P_lin = (double)c.layers *
                             ((double)c.hidden * c.heads * c.head_dim * 2 +
                              2.0 * c.hidden * c.kv_heads * c.head_dim + 3.0 * c.hidden * c.inter) +
                         (double)c.hidden * c.vocab;
    const double f_lin = 6.0 * P_lin * N;
    const double f_att = 3.0 * 0.5 * 4.0 * B * (double)T * T * c.heads * c.head_dim * c.layers;
    qwen2_free(m);
    printf("\ntraining: Qwen2.5-0.5B shape, %d x %d tokens, plan bf16, forward + backward + AdamW\n",
           B, T);
    printf("  step %.1f ms (forward %.1f, backward %.1f, optimizer %.1f), median of %d\n",
           t_step * 1e3, t_f * 1e3, t_b * 1e3, t_o * 1e3, REPS);
    printf("  %.0f tokens/s, loss %.4f (random weights: about log V = %.2f)\n", N / t_step, loss,
           log((double)c.vocab));
    printf("  attention kernels: the default (cuDNN's fused attention under bf16 compute, when "
           "loaded; else bf16 tiles) above; 3xTF32 tiles "
           "%.1f ms/step, TF32 tiles %.1f ms/step, exact float32 %.1f ms/step\n", t_acc * 1e3,
           t_tf32 * 1e3, t_exact * 1e3);
    printf("  GEMM work %.1f TFLOP + attention %.1f TFLOP per step = %.0f%% of the measured bf16 "
           "GEMM rate over the whole step\n", f_lin * 1e-12, f_att * 1e-12,
           100.0 * (f_lin + f_att) / t_step * 1e-12 / tfl);
    printf("  device memory: peak %.2f GiB (parameters %.2f, gradients %.2f, AdamW %.2f, "
           "activations %.2f, weight cache %.2f GiB)\n",
           mem_train.peak / 1073741824.0, qm.params / 1073741824.0,
           qm.grads / 1073741824.0, qm.optimizer / 1073741824.0, qm.activations / 1073741824.0,
           qm.weight_cache / 1073741824.0);

    /* ---- decoding ---- */
    be_close(be);
    if (be_open("cuda", &be, &e))
        die(&e);
    const int DB = 8, PL = 128, NEW = 128;
    qwen2_opts_t od = {.max_batch = DB, .max_seq = PL, .kv_batch = DB, .kv_len = PL + NEW};
    if (qwen2_new(be, &c, &od, &m, &e) || qwen2_init_philox(m, 1, 0.02f, &e))
        die(&e);
    set_plan(m, &pol);
    int32_t prompt[8][128], *out = malloc(sizeof(int32_t) * DB * NEW);
    const int32_t *pp[8];
    int plen[8], olen[8];
    for (int b = 0; b < DB; b++) {
        for (int t = 0; t < PL; t++)
            prompt[b][t] = (int32_t)(((uint64_t)(b * PL + t) * 2246822519u + 7) % (unsigned)c.vocab);
        pp[b] = prompt[b];
        plen[b] = PL;
    }
    prec_ctx_t rctx = {PREC_ROLLOUT, 42, 0};
    qwen2_gen_t g = {NEW, 1.0, 0, 1.0, 42, 0, NULL, 0};
    double td[3];
    for (int r = 0; r < 4; r++) {
        if (be_sync(be, &e))
            die(&e);
        double t0 = now();
        if (qwen2_generate(m, &rctx, DB, pp, plen, &g, out, olen, &e))
            die(&e);
        if (r)
            td[r - 1] = now() - t0;
    }
    double t_dec = median(td, 3);
    /* prefill alone: one forward over the prompts (for the split) */
    qwen2_gen_t g1 = g;
    g1.max_new = 1;
    double tp[3];
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        if (qwen2_generate(m, &rctx, DB, pp, plen, &g1, out, olen, &e))
            die(&e);
        tp[r] = now() - t0;
    }
    double t_pre = median(tp, 3);
    be_cuda_mem_t mem_dec;
    be_cuda_mem(be, &mem_dec, &e);
    qwen2_gen_t g16 = g;
    g16.max_new = 16;
    if (be_cuda_profile(be, true, &e))
        die(&e);
    double tq0 = now();
    if (qwen2_generate(m, &rctx, DB, pp, plen, &g16, out, olen, &e))
        die(&e);
    double tq = now() - tq0;
    qwen2_free(m);
    /* bytes per decoding step: every weight once in bf16 (the lm_head is the embedding) */
    const double w_bytes = 2.0 * (P_lin);
    const double t_step_dec = (t_dec - t_pre) / (NEW - 1);
    printf("\ndecoding: batch %d, prompt %d + %d new tokens, sampled, plan bf16, KV cache\n", DB,
           PL, NEW);
    printf("  %.3f s (prefill + first token %.1f ms, then %.2f ms per step), %.0f new tokens/s\n",
           t_dec, t_pre * 1e3, t_step_dec * 1e3, DB * NEW / t_dec);
    printf("  per step: %.2f GB of bf16 weights = %.2f ms at the copy ceiling; device memory "
           "peak %.2f GiB\n", w_bytes * 1e-9, w_bytes / (gbs * 1e9) * 1e3,
           mem_dec.peak / 1073741824.0);
    printf("\nprofile of prefill + 16 decoding steps (each op synchronised: %.1f ms in all)\n",
           tq * 1e3);
    be_cuda_profile_print(be, stdout);
    printf("cuda_bench_json {\"device\": \"%s\", \"copy_gbs\": %.1f, \"gemm_tflops\": %.1f, "
           "\"train_step_s\": %.5f, \"train_fwd_s\": %.5f, \"train_bwd_s\": %.5f, "
           "\"train_opt_s\": %.5f, \"train_tokens_per_s\": %.1f, \"train_peak_bytes\": %zu, "
           "\"train_3xtf32_step_s\": %.5f, \"train_tf32_step_s\": %.5f, \"train_exact_step_s\": %.5f, "
           "\"train_loss\": %.5f, \"decode_s\": %.5f, \"decode_prefill_s\": %.5f, "
           "\"decode_tokens_per_s\": %.1f, \"decode_peak_bytes\": %zu}\n",
           info.name, gbs, tfl, t_step, t_f, t_b, t_o, N / t_step, mem_train.peak, t_acc, t_tf32, t_exact,
           loss, t_dec, t_pre, DB * NEW / t_dec, mem_dec.peak);
    prec_policies_free(&pol);
    be_close(be);
    free(ids), free(tgt), free(lp), free(seed), free(out);
    attn_bench();
    decode_bench(gbs);
    return 0;
}

/* ---- attention alone (issue 17) ----------------------------------------------------------- */

/* n values in [-1, 1] that are not zeros (METHOD.md), a different pattern per salt */
static void attn_fill(float *h, size_t n, unsigned salt)
{
    for (size_t i = 0; i < n; i++)
        h[i] = (float)(((i + salt) * 2654435761u) % 2001) * 1e-3f - 1.0f;
}

/* Attention at the training shape (8 x 1024 tokens, 14 query heads, 2 KV heads, head_dim 64,
 * causal, no padding, bf16 compute) through be_attn_fwd / be_attn_bwd: our 16-bit tiles
 * (mode TILES) against cuDNN's fused attention (FAST: deterministic backward; FAST_NONDET).
 * FLOPs as flash attention counts causal attention: forward 4 B H T^2 D / 2 (QK^T and PV over
 * half the square), backward 2.5 x the forward. The op's time includes the float32 <-> bf16
 * copies around cuDNN; "cuDNN's kernels alone" is the time inside cuDNN's executions (cuda
 * events). Per mode: 3 warm-up calls (plans are built then), then 20 timed, forward alone
 * and forward + backward; a fresh backend. */
static void attn_bench(void)
{
    err_t e = ERR_INIT;
    backend_t *be;
    if (be_open("cuda", &be, &e))
        die(&e);
    const int B = 8, T = 1024, H = 14, Hkv = 2, D = 64, WARM = 3, REPS = 20;
    const size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * Hkv * D, nl = (size_t)B * H * T;
    be_buf_t *q = be_alloc(be, nq * 4, &e), *k = be_alloc(be, nk * 4, &e), *v = be_alloc(be, nk * 4, &e),
             *o = be_alloc(be, nq * 4, &e), *l = be_alloc(be, nl * 4, &e), *dout = be_alloc(be, nq * 4, &e),
             *dq = be_alloc(be, nq * 4, &e), *dk = be_alloc(be, nk * 4, &e), *dv = be_alloc(be, nk * 4, &e),
             *pad = be_alloc(be, sizeof(int32_t) * B, &e);
    if (!q || !k || !v || !o || !l || !dout || !dq || !dk || !dv || !pad)
        die(&e);
    float *h = malloc(nq * sizeof *h);
    attn_fill(h, nq, 0), be_upload(be, be_ptr(q, 0), h, nq * 4);
    attn_fill(h, nq, 7), be_upload(be, be_ptr(dout, 0), h, nq * 4);
    attn_fill(h, nk, 3), be_upload(be, be_ptr(k, 0), h, nk * 4);
    attn_fill(h, nk, 5), be_upload(be, be_ptr(v, 0), h, nk * 4);
    be_zero(be, be_ptr(pad, 0), sizeof(int32_t) * B);
    free(h);
    be_attn_t a = {.q = be_ptr(q, 0), .k = be_ptr(k, 0), .v = be_ptr(v, 0), .out = be_ptr(o, 0),
                   .lse = be_ptr(l, 0), .pad_left = be_ptr(pad, 0), .kv_sb = (size_t)T * Hkv * D,
                   .kv_st = (size_t)Hkv * D, .kv_sh = (size_t)D, .B = B, .Tq = T, .Tk = T, .H = H,
                   .Hkv = Hkv, .D = D, .q0 = 0, .scale = 0.125f, .compute = PREC_COMPUTE_BF16};
    const double f_fwd = 4.0 * B * H * (double)T * T * D / 2, f_bwd = 2.5 * f_fwd;
    be_cuda_cudnn_t dn;
    if (be_cuda_cudnn(be, &dn, &e))
        die(&e);
    const struct {
        be_cuda_attn_t mode;
        const char *name, *key;
    } modes[] = {{BE_CUDA_ATTN_TILES, "bf16 tiles (ours)", "tiles"},
                 {BE_CUDA_ATTN_FAST, "cuDNN, deterministic bwd", "cudnn"},
                 {BE_CUDA_ATTN_FAST_NONDET, "cuDNN, non-deterministic bwd", "cudnn_nondet"}};
    double ms[3][4] = {{0}}; /* per call: op fwd, op fwd+bwd, cuDNN's fwd, cuDNN's bwd */
    printf("\nattention alone: %d x %d tokens, %d/%d heads, head_dim %d, causal, bf16 compute; "
           "FLOPs forward 4BHT^2D/2 = %.1f G, backward 2.5x = %.1f G\n  %s\n", B, T, H, Hkv, D,
           f_fwd * 1e-9, f_bwd * 1e-9, dn.status);
    printf("  %-30s %9s %8s %9s %8s %12s %8s\n", "kernels", "fwd ms", "TFLOP/s", "bwd ms",
           "TFLOP/s", "fwd+bwd ms", "TFLOP/s");
    for (int m = 0; m < 3 && (m == 0 || dn.version); m++) {
        if (be_cuda_set_attn(be, modes[m].mode, &e))
            die(&e);
        for (int pass = 0; pass < 2; pass++) { /* forward alone, then forward + backward */
            for (int r = 0; r < WARM + REPS; r++) {
                if (r == WARM && (be_sync(be, &e) || be_cuda_cudnn_timing(be, true, &e)))
                    die(&e);
                if (r == WARM)
                    ms[m][pass] = now();
                be_attn_fwd(be, &a);
                if (pass)
                    be_attn_bwd(be, &a, be_ptr(dout, 0), be_ptr(dq, 0), be_ptr(dk, 0), be_ptr(dv, 0));
            }
            if (be_sync(be, &e))
                die(&e);
            ms[m][pass] = (now() - ms[m][pass]) * 1e3 / REPS;
            if (be_cuda_cudnn(be, &dn, &e) || be_cuda_cudnn_timing(be, false, &e))
                die(&e);
            if (pass && dn.fwd_calls && dn.bwd_calls)
                ms[m][2] = dn.fwd_ms / dn.fwd_calls, ms[m][3] = dn.bwd_ms / dn.bwd_calls;
        }
        const double fw = ms[m][0], fb = ms[m][1], bw = fb - fw;
        printf("  %-30s %9.3f %8.0f %9.3f %8.0f %12.3f %8.0f\n", modes[m].name, fw,
               f_fwd / fw * 1e-9, bw, f_bwd / bw * 1e-9, fb, (f_fwd + f_bwd) / fb * 1e-9);
        if (ms[m][2] > 0)
            printf("  %-30s %9.3f %8.0f %9.3f %8.0f %12.3f %8.0f\n", "  cuDNN's kernels alone",
                   ms[m][2], f_fwd / ms[m][2] * 1e-9, ms[m][3], f_bwd / ms[m][3] * 1e-9,
                   ms[m][2] + ms[m][3], (f_fwd + f_bwd) / (ms[m][2] + ms[m][3]) * 1e-9);
    }
    printf("  cuDNN plans:\n");
    be_cuda_cudnn_print(be, stdout);
    be_cuda_mem_t mem;
    be_cuda_mem(be, &mem, &e);
    printf("  device memory: peak %.2f GiB (the op's float32 inputs and outputs %.2f GiB)\n",
           mem.peak / 1073741824.0, (5.0 * nq + 4.0 * nk + nl) * 4 / 1073741824.0);
    printf("cuda_bench_attn_json {\"cudnn\": %d, \"gflop_fwd\": %.3f, \"gflop_bwd\": %.3f",
           dn.version, f_fwd * 1e-9, f_bwd * 1e-9);
    for (int m = 0; m < 3; m++)
        printf(", \"%s_fwd_ms\": %.4f, \"%s_fwd_bwd_ms\": %.4f, \"%s_kernel_fwd_ms\": %.4f, "
               "\"%s_kernel_bwd_ms\": %.4f", modes[m].key, ms[m][0], modes[m].key, ms[m][1],
               modes[m].key, ms[m][2], modes[m].key, ms[m][3]);
    printf("}\n");
    be_buf_t *all[] = {q, k, v, o, l, dout, dq, dk, dv, pad};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        be_free(be, all[i]);
    be_close(be);
}
