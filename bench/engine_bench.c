/* engine_bench: the CPU backend's training step and decoding speed (issue 3).
 *
 * Model: Qwen2 layout, hidden 512, 8 layers, 8 heads (2 KV heads), intermediate 2816,
 * vocab 32768, untied, Philox weights. Training: batch 4 x sequence 256, forward +
 * backward + AdamW, fp32. The peer figure is OpenBLAS itself: the same GEMM shapes a
 * training step runs in its linear layers (forward, dX and dW of every linear layer and
 * the lm_head), timed as bare cblas_sgemm calls in this run; the engine's fraction is
 * that time divided by the step's time (>= 50% is the target: the rest of the step, the
 * attention, norms, losses and optimizer, must not cost more than its GEMMs).
 * Decoding: greedy, prompt 16 tokens, 64 new tokens, batch 1 and 8 (tokens/s counts the
 * new tokens of all rows, prefill included). Memory by kind is printed at start-up. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/qwen2.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const err_t *e)
{
    fprintf(stderr, "engine_bench: %s\n", e->msg);
    exit(1);
}

static void cpu_name(char *buf, size_t n)
{
    snprintf(buf, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *p = strchr(line, ':');
            if (p) {
                snprintf(buf, n, "%s", p + 2);
                buf[strcspn(buf, "\n")] = 0;
            }
            break;
        }
    fclose(f);
}

typedef struct shape {
    int M, N, K;
    int ta, tb; /* transposes as the backend calls them */
} shape_t;

/* the GEMMs of one linear layer y(M,N) = x(M,K) W(N,K)^T, as backend_cpu.c calls them */
static int linear_gemms(shape_t *s, int M, int N, int K)
{
    s[0] = (shape_t){M, N, K, 0, 1}; /* y = x W^T */
    s[1] = (shape_t){M, K, N, 0, 0}; /* dx = dy W */
    s[2] = (shape_t){N, K, M, 1, 0}; /* dW = dy^T x */
    return 3;
}

static double time_sgemms(const shape_t *s, int n, int reps)
{
    size_t maxa = 0, maxb = 0, maxc = 0;
    for (int i = 0; i < n; i++) {
        size_t a = (size_t)s[i].M * s[i].K, b = (size_t)s[i].K * s[i].N, c = (size_t)s[i].M * s[i].N;
        maxa = a > maxa ? a : maxa, maxb = b > maxb ? b : maxb, maxc = c > maxc ? c : maxc;
    }
    float *A = calloc(maxa, 4), *B = calloc(maxb, 4), *C = calloc(maxc, 4);
    for (size_t i = 0; i < maxa; i++)
        A[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < maxb; i++)
        B[i] = (float)(i % 5) * 0.1f;
    double best = 1e300;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        for (int i = 0; i < n; i++) {
            const shape_t *g = &s[i];
            cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans,
                        g->tb ? CblasTrans : CblasNoTrans, g->M, g->N, g->K, 1.0f, A,
                        g->ta ? g->M : g->K, B, g->tb ? g->K : g->N, 0.0f, C, g->N);
        }
        double t = now() - t0;
        best = t < best ? t : best;
    }
    free(A), free(B), free(C);
    return best;
}

int main(void)
{
    const int B = 4, T = 256;
    qwen2_config_t c = {.hidden = 512, .inter = 2816, .layers = 8, .heads = 8, .kv_heads = 2,
                        .head_dim = 64, .vocab = 32768, .max_pos = 4096, .rope_theta = 1e6,
                        .rms_eps = 1e-6, .tie = false, .dtype = ST_F32, .bos_id = -1, .pad_id = -1};
    err_t e = ERR_INIT;
    backend_t *be;
    if (be_open("cpu", &be, &e))
        die(&e);
    char cpu[256];
    cpu_name(cpu, sizeof cpu);
    printf("engine_bench: %s, %d OpenMP threads, OpenBLAS %s\n", cpu, omp_get_max_threads(),
           openblas_get_config());
    printf("model: hidden %d, %d layers, %d heads (%d KV), intermediate %d, vocab %d, %zu parameters\n",
           c.hidden, c.layers, c.heads, c.kv_heads, c.inter, c.vocab, qwen2_config_nparams(&c));

    qwen2_opts_t o = {.max_batch = B, .max_seq = T, .training = true, .kv_batch = 8, .kv_len = 80};
    qwen2_model_t *m;
    if (qwen2_new(be, &c, &o, &m, &e) || qwen2_init_philox(m, 1, 0.05f, &e))
        die(&e);
    qwen2_mem_t mem;
    qwen2_memory(m, &mem);
    printf("\nmemory at start-up (MiB)\n");
    printf("  %-12s %10.1f\n  %-12s %10.1f\n  %-12s %10.1f\n  %-12s %10.1f\n  %-12s %10.1f\n",
           "parameters", mem.params / 1048576.0, "gradients", mem.grads / 1048576.0,
           "optimizer", mem.optimizer / 1048576.0, "activations", mem.activations / 1048576.0,
           "KV cache", mem.kv_cache / 1048576.0);

    /* ---- training step ---- */
    int32_t *ids = malloc(sizeof(int32_t) * B * T), *tgt = malloc(sizeof(int32_t) * B * T);
    float *lp = malloc(sizeof(float) * B * T), *seed = malloc(sizeof(float) * B * T);
    for (int i = 0; i < B * T; i++)
        ids[i] = (int32_t)((i * 2654435761u) % (unsigned)c.vocab);
    qwen2_batch_t bt = {B, T, ids, NULL, NULL};
    qwen2_next_token_targets(&bt, tgt);
    int count = 0;
    for (int i = 0; i < B * T; i++)
        count += tgt[i] >= 0;
    for (int i = 0; i < B * T; i++)
        seed[i] = tgt[i] >= 0 ? -1.0f / count : 0;
    prec_ctx_t ctx = {PREC_GRADIENT, 0, 0};
    qwen2_adamw_t h = {1e-4, 0.9, 0.999, 1e-8, 0.01, 1.0};
    const int steps = 3;
    double best = 1e300, tf = 0, tb = 0, to = 0;
    for (int s = 0; s <= steps; s++) { /* step 0 warms up (scratch allocation) */
        double t0 = now();
        if (qwen2_forward(m, &ctx, &bt, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS, &e) ||
            qwen2_token_logprobs(m, tgt, lp, NULL, &e))
            die(&e);
        double t1 = now();
        qwen2_zero_grads(m);
        qwen2_grad_in_t g = {seed, NULL, NULL, NULL};
        if (qwen2_backward(m, &ctx, &g, &e))
            die(&e);
        double t2 = now();
        qwen2_step_info_t info;
        if (qwen2_optimizer_step(m, &h, &info, &e))
            die(&e);
        double t3 = now();
        if (s && t3 - t0 < best)
            best = t3 - t0, tf = t1 - t0, tb = t2 - t1, to = t3 - t2;
    }
    const int M = B * T, H = c.hidden, qd = c.heads * c.head_dim, kvd = c.kv_heads * c.head_dim;
    shape_t sh[64];
    int ns = 0;
    const int NK[7][2] = {{qd, H}, {kvd, H}, {kvd, H}, {H, qd}, {c.inter, H}, {c.inter, H}, {H, c.inter}};
    for (int l = 0; l < 7; l++)
        ns += linear_gemms(sh + ns, M, NK[l][0], NK[l][1]);
    int nl = ns;
    ns += linear_gemms(sh + ns, M, c.vocab, H); /* lm_head */
    double gemm_flops = 0;
    for (int i = 0; i < ns; i++)
        gemm_flops += 2.0 * sh[i].M * sh[i].N * sh[i].K * (i < nl ? c.layers : 1);
    /* bare sgemm time for one step's linear GEMMs: the per-layer set times layers, + head */
    double t_layer = time_sgemms(sh, nl, 3), t_head = time_sgemms(sh + nl, ns - nl, 3);
    double t_sgemm = t_layer * c.layers + t_head;
    printf("\ntraining step, batch %d x sequence %d = %d tokens (fp32; best of %d)\n", B, T, M, steps);
    printf("  %-34s %12s %12s\n", "", "engine", "OpenBLAS");
    printf("  %-34s %12.3f %12.3f\n", "step time / its linear GEMMs (s)", best, t_sgemm);
    printf("  %-34s %12.0f %12s\n", "tokens/s", M / best, "");
    printf("  %-34s %12.1f %12.1f\n", "linear-GEMM GFLOP/s", gemm_flops / best * 1e-9,
           gemm_flops / t_sgemm * 1e-9);
    printf("  %-34s %11.0f%% %12s\n", "fraction of the sgemm rate", 100 * t_sgemm / best, "(>= 50%)");
    printf("  split: forward %.3f s, backward %.3f s, AdamW %.3f s\n", tf, tb, to);

    /* ---- decoding ---- */
    printf("\ngreedy decoding, prompt 16 tokens, 64 new tokens (fp32, KV cache)\n");
    printf("  %-8s %12s %12s\n", "batch", "tokens/s", "ms/step");
    int32_t prompt[8][16], out[8 * 64];
    const int32_t *pp[8];
    int plen[8], olen[8];
    for (int b = 0; b < 8; b++) {
        for (int t = 0; t < 16; t++)
            prompt[b][t] = (b * 31 + t * 7) % c.vocab;
        pp[b] = prompt[b];
        plen[b] = 16;
    }
    prec_ctx_t rctx = {PREC_ROLLOUT, 0, 0};
    qwen2_gen_t g = {64, 0.0, 0, 1.0, 0, 0, NULL, 0};
    const int bs[2] = {1, 8};
    for (int i = 0; i < 2; i++) {
        double bestd = 1e300;
        for (int r = 0; r < 3; r++) {
            double t0 = now();
            if (qwen2_generate(m, &rctx, bs[i], pp, plen, &g, out, olen, &e))
                die(&e);
            double t = now() - t0;
            bestd = t < bestd ? t : bestd;
        }
        printf("  %-8d %12.1f %12.2f\n", bs[i], bs[i] * 64 / bestd, bestd / 64 * 1e3);
    }
    qwen2_free(m);
    be_close(be);
    free(ids), free(tgt), free(lp), free(seed);
    return 0;
}
