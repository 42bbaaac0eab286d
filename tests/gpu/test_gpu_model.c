/* GPU tests of the whole model on the CUDA backend: the transformers fixtures
 * (tests/fixtures/model/: log-probs, loss, gradients, greedy continuations), the
 * Qwen2.5-0.5B-config Philox checkpoint, a training step (forward, backward, AdamW)
 * against the CPU backend under fp32 / bf16 / MX plans, generation against the CPU, and
 * the --device option of the commands.
 *
 * Tolerances. fp32 plan: GEMMs are true float32 on both sides and attention runs in
 * 3xTF32 tiles or the exact kernel, so log-probs against transformers' float64 are held
 * to 1e-3 absolute (the CPU: 1e-4), gradients to 5e-3 relative per tensor (CPU: 1e-3);
 * against the CPU backend, forward outputs to 1e-3 relative L2. bf16 plan: within 5e-2
 * of the CPU's own bf16 emulation (which also rounds GEMM outputs to bf16; the GPU keeps
 * the float32 accumulator) and 1e-1 of transformers' float64. After one AdamW step the
 * parameters agree to 1e-2 relative L2: Adam's normalised step turns a gradient whose
 * sign differs by rounding into a +-lr difference. Greedy and sampled ids: identical.
 * Built by `make test-gpu`; skips without a GPU. MXRLHF_GPU_QUICK=1 leaves out the
 * full-size checkpoint. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda.h"
#include "model/qwen2.h"
#include "support/testutil.h"
#include "util/json.h"
#include "util/safetensors.h"

/* a file under tests/fixtures/model, from any working directory */
#define FIX(rel) test_fixture_path("model/" rel)

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

static const prec_ctx_t GRAD = {PREC_GRADIENT, 3, 1};

static prec_policies_t plans(void)
{
    const char *text =
        "{\"version\": 1, \"plans\": {"
        "\"F\": {\"default\": \"fp32\"},"
        "\"Z\": {\"default\": \"bf16\", \"compute\": \"bf16\"},"
        "\"M\": {\"default\": \"fp32\", \"rules\": ["
        "  {\"phase\": \"gradient\", \"operand\": [\"weight\", \"input\", \"weight_bp\", \"input_bp\"],"
        "   \"spec\": \"mxfp8_e4m3/32\"},"
        "  {\"phase\": \"gradient\", \"operand\": [\"grad_output_dx\", \"grad_output_dw\"],"
        "   \"spec\": \"mxfp8_e5m2/32/stochastic\"},"
        "  {\"phase\": \"rollout\", \"spec\": \"mxfp4_e2m1\"}]}}}";
    prec_policies_t p;
    err_t e = ERR_INIT;
    if (prec_policies_parse(text, strlen(text), "gpu-test-policies.json", &p, &e))
        fail_msg("%s", e.msg);
    return p;
}

static const prec_plan_t *plan(prec_policies_t *p, const char *name)
{
    const prec_plan_t *pl;
    err_t e = ERR_INIT;
    if (prec_plan_find(p, name, &pl, &e))
        fail_msg("%s", e.msg);
    return pl;
}

static cJSON *load_json(const char *path)
{
    cJSON *j;
    err_t e = ERR_INIT;
    if (json_load_file(path, 64 << 20, &j, &e))
        fail_msg("%s", e.msg);
    return j;
}

static int32_t *ints2d(const cJSON *a, int *B, int *T)
{
    *B = cJSON_GetArraySize(a);
    *T = cJSON_GetArraySize(a->child);
    int32_t *out = malloc(sizeof(int32_t) * (size_t)*B * *T);
    int b = 0;
    for (const cJSON *r = a->child; r; r = r->next, b++) {
        int t = 0;
        for (const cJSON *v = r->child; v; v = v->next, t++)
            out[b * *T + t] = (int32_t)v->valuedouble;
    }
    return out;
}

static void mask_to_padding(const int32_t *mask, int B, int T, int32_t *padl, int32_t *len)
{
    for (int b = 0; b < B; b++) {
        padl[b] = 0;
        while (padl[b] < T && !mask[b * T + padl[b]])
            padl[b]++;
        len[b] = 0;
        while (padl[b] + len[b] < T && mask[b * T + padl[b] + len[b]])
            len[b]++;
    }
}

static double rel_l2(const float *got, const float *want, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    return sqrt(num / (den > 0 ? den : 1e-300));
}

/* ---- the transformers fixtures ------------------------------------------------------------- */

static void check_fixture(const char *name)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/%s", FIX(""), name);
    snprintf(path, sizeof path, "%s/ref.json", dir);
    cJSON *ref = load_json(path);
    err_t e = ERR_INIT;
    prec_policies_t pol = plans();
    for (const cJSON *bj = cJSON_GetObjectItem(ref, "batches")->child; bj; bj = bj->next) {
        int B, T;
        int32_t *ids = ints2d(cJSON_GetObjectItem(bj, "ids"), &B, &T);
        int32_t *mask = ints2d(cJSON_GetObjectItem(bj, "mask"), &B, &T);
        int32_t padl[16], len[16], *tgt = malloc(sizeof(int32_t) * B * T);
        float *lp = malloc(sizeof(float) * B * T), *lp_cpu = malloc(sizeof(float) * B * T);
        mask_to_padding(mask, B, T, padl, len);
        qwen2_batch_t b = {B, T, ids, padl, len};
        qwen2_next_token_targets(&b, tgt);
        qwen2_opts_t o = {.max_batch = B, .max_seq = T, .training = true};
        for (int p = 0; p < 2; p++) {
            const char *pn = p ? "Z" : "F";
            qwen2_model_t *m, *mc = NULL;
            if (qwen2_open_dir(dir, gpu, &o, &m, &e) || qwen2_set_plan(m, plan(&pol, pn), "t", &e) ||
                qwen2_forward(m, &GRAD, &b, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS, &e) ||
                qwen2_token_logprobs(m, tgt, lp, NULL, &e))
                fail_msg("%s: %s", name, e.msg);
            if (p) { /* the CPU's own bf16 emulation */
                if (qwen2_open_dir(dir, cpu, &o, &mc, &e) ||
                    qwen2_set_plan(mc, plan(&pol, pn), "t", &e) ||
                    qwen2_forward(mc, &GRAD, &b, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS, &e) ||
                    qwen2_token_logprobs(mc, tgt, lp_cpu, NULL, &e))
                    fail_msg("%s: %s", name, e.msg);
            }
            double worst = 0, worst_cpu = 0, s = 0;
            int count = 0, r = 0;
            for (const cJSON *row = cJSON_GetObjectItem(bj, "next_token_logprobs")->child; row;
                 row = row->next, r++) {
                int t = 0;
                for (const cJSON *v = row->child; v; v = v->next, t++) {
                    int i = r * T + t;
                    if (tgt[i] < 0)
                        continue;
                    double d = fabs(v->valuedouble - lp[i]);
                    worst = d > worst ? d : worst;
                    if (p)
                        worst_cpu = fmax(worst_cpu, fabs((double)lp_cpu[i] - lp[i]));
                    s += lp[i];
                    count++;
                }
            }
            print_message("%s/%s plan %s: max |logp - transformers| %.3g%s%.3g\n", name, bj->string,
                          pn, worst, p ? ", vs the CPU's bf16 " : "", p ? worst_cpu : 0.0);
            if (!(worst <= (p ? 1e-1 : 1e-3)) || (p && !(worst_cpu <= 5e-2)))
                fail_msg("%s/%s plan %s: log-probs off (transformers %.3g, cpu %.3g)", name,
                         bj->string, pn, worst, worst_cpu);
            double loss = -s / count, want = cJSON_GetObjectItem(bj, "loss")->valuedouble;
            if (!p && !(fabs(loss - want) <= 1e-4))
                fail_msg("%s/%s: loss transformers %.9g, gpu %.9g", name, bj->string, want, loss);
            if (!p && cJSON_GetObjectItem(bj, "grads")) {
                float *seed = malloc(sizeof(float) * B * T);
                for (int i = 0; i < B * T; i++)
                    seed[i] = tgt[i] >= 0 ? -1.0f / count : 0.0f;
                qwen2_zero_grads(m);
                qwen2_grad_in_t g = {seed, NULL, NULL, NULL};
                if (qwen2_backward(m, &GRAD, &g, &e))
                    fail_msg("%s", e.msg);
                snprintf(path, sizeof path, "%s/grads.safetensors", dir);
                st_file_t f;
                if (st_open(&f, path, &e))
                    fail_msg("%s", e.msg);
                double wrel = 0;
                for (int i = 0; i < qwen2_ntensors(m); i++) {
                    const qwen2_tensor_t *t = qwen2_tensor(m, i);
                    float *w = malloc(sizeof(float) * t->numel), *got = malloc(sizeof(float) * t->numel);
                    if (st_read_f32(&f, t->name, t->ndim, t->shape, w, &e) ||
                        qwen2_grads_get(m, t->off, got, t->numel, &e))
                        fail_msg("%s", e.msg);
                    double rel = rel_l2(got, w, t->numel);
                    wrel = rel > wrel ? rel : wrel;
                    if (!(rel <= 5e-3))
                        fail_msg("%s: gradient of %s: relative error %.3g", name, t->name, rel);
                    free(w), free(got);
                }
                print_message("%s/%s: worst gradient relative error %.3g\n", name, bj->string, wrel);
                st_close(&f);
                free(seed);
            }
            qwen2_free(m);
            qwen2_free(mc);
        }
        free(ids), free(mask), free(tgt), free(lp), free(lp_cpu);
    }
    const cJSON *gj = cJSON_GetObjectItem(ref, "greedy");
    if (gj) {
        const cJSON *pr = cJSON_GetObjectItem(gj, "prompts");
        int B = cJSON_GetArraySize(pr), max_new = cJSON_GetObjectItem(gj, "max_new")->valueint;
        int32_t *pp[8], plen[8], out[8 * 16];
        int out_len[8], Lmax = 0, b = 0;
        for (const cJSON *p = pr->child; p; p = p->next, b++) {
            plen[b] = cJSON_GetArraySize(p);
            pp[b] = malloc(sizeof(int32_t) * plen[b]);
            int t = 0;
            for (const cJSON *v = p->child; v; v = v->next)
                pp[b][t++] = v->valueint;
            Lmax = plen[b] > Lmax ? plen[b] : Lmax;
        }
        qwen2_opts_t o = {.max_batch = B, .max_seq = Lmax, .kv_batch = B, .kv_len = Lmax + max_new};
        qwen2_model_t *m;
        qwen2_gen_t g = {max_new, 0.0, 0, 1.0, 0, 0, NULL, 0};
        prec_ctx_t ctx = {PREC_ROLLOUT, 0, 0};
        if (qwen2_open_dir(dir, gpu, &o, &m, &e) ||
            qwen2_generate(m, &ctx, B, (const int32_t *const *)pp, plen, &g, out, out_len, &e))
            fail_msg("%s", e.msg);
        b = 0;
        for (const cJSON *row = cJSON_GetObjectItem(gj, "new_ids")->child; row; row = row->next, b++) {
            assert_int_equal(out_len[b], max_new);
            int t = 0;
            for (const cJSON *v = row->child; v; v = v->next, t++)
                if (out[b * max_new + t] != v->valueint)
                    fail_msg("%s: greedy row %d step %d: transformers %d, gpu %d", name, b, t,
                             v->valueint, out[b * max_new + t]);
        }
        for (b = 0; b < B; b++)
            free(pp[b]);
        qwen2_free(m);
    }
    prec_policies_free(&pol);
    cJSON_Delete(ref);
}

static void transformers_fixtures_hold_on_gpu(void **state)
{
    NEED_GPU();
    check_fixture("tiny_tied_gqa_f32");
    check_fixture("tiny_untied_mha_bf16");
    check_fixture("tiny_untied_mqa_f16_sharded");
}

static void reward_scores_hold_on_gpu(void **state)
{
    NEED_GPU();
    cJSON *ref = load_json(FIX("tiny_reward/ref.json"));
    int B, T;
    int32_t *ids = ints2d(cJSON_GetObjectItem(ref, "ids"), &B, &T);
    int32_t *mask = ints2d(cJSON_GetObjectItem(ref, "mask"), &B, &T);
    int32_t padl[16], len[16];
    mask_to_padding(mask, B, T, padl, len);
    qwen2_opts_t o = {.max_batch = B, .max_seq = T, .heads = QWEN2_HEAD_SCORE};
    qwen2_model_t *m;
    err_t e = ERR_INIT;
    float sc[16];
    qwen2_batch_t b = {B, T, ids, padl, len};
    prec_ctx_t ctx = {PREC_REWARD, 0, 0};
    if (qwen2_open_dir(FIX("tiny_reward"), gpu, &o, &m, &e) ||
        qwen2_forward(m, &ctx, &b, QWEN2_FWD_SCORES, &e) || qwen2_scores_get(m, sc, &e))
        fail_msg("%s", e.msg);
    int i = 0;
    for (const cJSON *v = cJSON_GetObjectItem(ref, "scores")->child; v; v = v->next, i++)
        if (!(fabs(v->valuedouble - sc[i]) <= 1e-3))
            fail_msg("score %d: transformers %.9g, gpu %.9g", i, v->valuedouble, sc[i]);
    assert_int_equal(i, B);
    qwen2_free(m);
    free(ids), free(mask);
    cJSON_Delete(ref);
}

static void qwen05b_philox_checkpoint_holds_on_gpu(void **state)
{
    NEED_GPU();
    if (quick)
        skip();
    cJSON *ref = load_json(FIX("qwen05b_philox.json"));
    err_t e = ERR_INIT;
    char *text = cJSON_PrintUnformatted(cJSON_GetObjectItem(ref, "config"));
    qwen2_config_t c;
    if (qwen2_config_parse(text, strlen(text), "qwen05b_philox.json: config", &c, &e))
        fail_msg("%s", e.msg);
    free(text);
    int B, T;
    int32_t *tok = ints2d(cJSON_GetObjectItem(ref, "ids"), &B, &T);
    int32_t *tgt = malloc(sizeof(int32_t) * B * T);
    float *lp = malloc(sizeof(float) * B * T);
    qwen2_opts_t o = {.max_batch = B, .max_seq = T};
    qwen2_model_t *m;
    const cJSON *ph = cJSON_GetObjectItem(ref, "philox");
    if (qwen2_new(gpu, &c, &o, &m, &e) ||
        qwen2_init_philox(m, (uint64_t)cJSON_GetObjectItem(ph, "seed")->valuedouble,
                          (float)cJSON_GetObjectItem(ph, "range")->valuedouble, &e))
        fail_msg("%s", e.msg);
    qwen2_batch_t bt = {B, T, tok, NULL, NULL};
    qwen2_next_token_targets(&bt, tgt);
    prec_ctx_t ctx = {PREC_REWARD, 0, 0};
    if (qwen2_forward(m, &ctx, &bt, QWEN2_FWD_LOGITS, &e) || qwen2_token_logprobs(m, tgt, lp, NULL, &e))
        fail_msg("%s", e.msg);
    double worst = 0;
    int b = 0;
    for (const cJSON *r = cJSON_GetObjectItem(ref, "next_token_logprobs")->child; r; r = r->next, b++) {
        int t = 0;
        for (const cJSON *v = r->child; v; v = v->next, t++)
            worst = fmax(worst, fabs(v->valuedouble - lp[b * T + t]));
    }
    print_message("Qwen2.5-0.5B config, Philox weights, fp32 plan on the GPU: max |logp - "
                  "transformers fp64| = %.3g\n", worst);
    if (!(worst <= 1e-3))
        fail_msg("0.5B log-probs: worst difference %.3g", worst);
    qwen2_free(m);
    free(tok), free(tgt), free(lp);
    cJSON_Delete(ref);
}

/* ---- training step and generation against the CPU --------------------------------------------- */

static qwen2_model_t *small_model(backend_t *be, int B, int T, bool training)
{
    qwen2_config_t c = {.hidden = 128, .inter = 256, .layers = 2, .heads = 4, .kv_heads = 2,
                        .head_dim = 32, .vocab = 512, .max_pos = 256, .rope_theta = 10000,
                        .rms_eps = 1e-6, .tie = false, .dtype = ST_F32, .bos_id = -1, .pad_id = -1};
    qwen2_opts_t o = {.max_batch = B, .max_seq = T, .training = training,
                      .heads = QWEN2_HEAD_LM | QWEN2_HEAD_VALUE, .kv_batch = B, .kv_len = T + 16,
                      .head_seed = 5};
    qwen2_model_t *m;
    err_t e = ERR_INIT;
    if (qwen2_new(be, &c, &o, &m, &e) || qwen2_init_philox(m, 21, 0.08f, &e))
        fail_msg("%s", e.msg);
    return m;
}

static void training_step_on_gpu_matches_cpu(void **state)
{
    NEED_GPU();
    enum { B = 3, T = 40 };
    int32_t ids[B * T], len[B] = {40, 31, 17}, tgt[B * T];
    for (int i = 0; i < B * T; i++)
        ids[i] = (int32_t)((i * 7919u + 13) % 512);
    qwen2_batch_t b = {B, T, ids, NULL, len};
    qwen2_next_token_targets(&b, tgt);
    int count = 0;
    for (int i = 0; i < B * T; i++)
        count += tgt[i] >= 0;
    float dlogp[B * T], dent[B * T], dval[B * T];
    for (int i = 0; i < B * T; i++) {
        dlogp[i] = tgt[i] >= 0 ? -1.0f / count : 0.0f;
        dent[i] = tgt[i] >= 0 ? 0.01f / count : 0.0f;
        dval[i] = (float)((i % 11) - 5) * 0.01f;
    }
    prec_policies_t pol = plans();
    const char *names[] = {"F", "Z", "M"};
    /* plan M quantizes every gradient-phase operand to 8-bit MX: a last-bit difference in
     * an operand (attention's or the GEMMs' summation order) that crosses a rounding
     * boundary moves that element by a whole quantum, and the change cascades through
     * the later quantizations, so the GPU's and the CPU's gradients part by several
     * percent although every quantizer is bit-exact (test_gpu_ops holds them to 1e-5 on
     * identical inputs). bf16 plan: bf16 attention and unrounded GEMM outputs on the GPU. */
    const double tol_g[] = {1e-2, 3e-2, 1e-1};
    err_t e = ERR_INIT;
    for (int p = 0; p < 3; p++) {
        qwen2_model_t *mc = small_model(cpu, B, T, true), *mg = small_model(gpu, B, T, true);
        qwen2_model_t *ms[2] = {mc, mg};
        float lp[2][B * T], en[2][B * T], va[2][B * T];
        qwen2_step_info_t info[2];
        size_t n = qwen2_nparams(mc);
        float *gr[2] = {malloc(n * 4), malloc(n * 4)}, *pa[2] = {malloc(n * 4), malloc(n * 4)};
        for (int s = 0; s < 2; s++) {
            qwen2_model_t *m = ms[s];
            qwen2_adamw_t h = {1e-3, 0.9, 0.999, 1e-8, 0.01, 1.0};
            qwen2_grad_in_t g = {dlogp, dent, dval, NULL};
            if (qwen2_set_plan(m, plan(&pol, names[p]), "t", &e) ||
                qwen2_forward(m, &GRAD, &b, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS | QWEN2_FWD_VALUES, &e) ||
                qwen2_token_logprobs(m, tgt, lp[s], en[s], &e) || qwen2_values_get(m, va[s], &e))
                fail_msg("plan %s: %s", names[p], e.msg);
            qwen2_zero_grads(m);
            if (qwen2_backward(m, &GRAD, &g, &e) || qwen2_grads_get(m, 0, gr[s], n, &e) ||
                qwen2_optimizer_step(m, &h, &info[s], &e) || qwen2_params_get(m, 0, pa[s], n, &e))
                fail_msg("plan %s: %s", names[p], e.msg);
        }
        double el = rel_l2(lp[1], lp[0], B * T), ee = rel_l2(en[1], en[0], B * T);
        double ev = rel_l2(va[1], va[0], B * T), eg = rel_l2(gr[1], gr[0], n);
        double ep = rel_l2(pa[1], pa[0], n);
        print_message("plan %s: log-probs %.2g, entropy %.2g, values %.2g, gradients %.2g, "
                      "parameters after AdamW %.2g (relative L2); grad norm cpu %.6g gpu %.6g\n",
                      names[p], el, ee, ev, eg, ep, info[0].grad_norm, info[1].grad_norm);
        double tl = p == 0 ? 1e-3 : 1e-2;
        if (!(el <= tl && ee <= tl && ev <= tl))
            fail_msg("plan %s: forward outputs differ (%.3g %.3g %.3g)", names[p], el, ee, ev);
        if (!(eg <= tol_g[p]))
            fail_msg("plan %s: gradients differ by %.3g", names[p], eg);
        if (!(ep <= 1e-2))
            fail_msg("plan %s: parameters after the step differ by %.3g", names[p], ep);
        if (!(fabs(info[1].grad_norm - info[0].grad_norm) <= tol_g[p] * info[0].grad_norm))
            fail_msg("plan %s: grad norm cpu %.9g gpu %.9g", names[p], info[0].grad_norm,
                     info[1].grad_norm);
        free(gr[0]), free(gr[1]), free(pa[0]), free(pa[1]);
        qwen2_free(mc), qwen2_free(mg);
    }
    prec_policies_free(&pol);
}

/* The memory options on the GPU (docs/engine.md): activations for a training minibatch
 * smaller than max_batch, logits in chunks of rows, a frozen model whose float32 linear
 * weights are freed. Against the CPU with none of them, and against the GPU without them. */
static qwen2_model_t *opts_model(backend_t *be, qwen2_opts_t o)
{
    qwen2_config_t c = {.hidden = 128, .inter = 256, .layers = 2, .heads = 4, .kv_heads = 2,
                        .head_dim = 32, .vocab = 512, .max_pos = 256, .rope_theta = 10000,
                        .rms_eps = 1e-6, .tie = false, .dtype = ST_F32, .bos_id = -1, .pad_id = -1};
    o.head_seed = 5;
    qwen2_model_t *m;
    err_t e = ERR_INIT;
    if (qwen2_new(be, &c, &o, &m, &e) || qwen2_init_philox(m, 21, 0.08f, &e))
        fail_msg("%s", e.msg);
    return m;
}

static void memory_options_on_gpu_match_cpu(void **state)
{
    NEED_GPU();
    enum { B = 3, T = 40 };
    int32_t ids[B * T], len[B] = {40, 31, 17}, tgt[B * T];
    for (int i = 0; i < B * T; i++)
        ids[i] = (int32_t)((i * 7919u + 13) % 512);
    qwen2_batch_t b = {B, T, ids, NULL, len};
    qwen2_next_token_targets(&b, tgt);
    float dlogp[B * T], dent[B * T], dval[B * T];
    for (int i = 0; i < B * T; i++) {
        dlogp[i] = tgt[i] >= 0 ? -0.01f : 0.0f;
        dent[i] = tgt[i] >= 0 ? 0.001f : 0.0f;
        dval[i] = (float)((i % 11) - 5) * 0.01f;
    }
    prec_policies_t pol = plans();
    const char *names[] = {"F", "Z"};
    const double tol_g[] = {1e-2, 3e-2};
    const unsigned heads = QWEN2_HEAD_LM | QWEN2_HEAD_VALUE;
    const qwen2_opts_t plain = {.max_batch = B, .max_seq = T, .training = true, .heads = heads};
    /* inference room for 4 rows, training for 3; logits in chunks of 64 of the 120 rows */
    const qwen2_opts_t lean = {.max_batch = 4, .max_seq = T, .training = true, .heads = heads,
                               .max_train_batch = 3, .logits_rows = 64};
    err_t e = ERR_INIT;
    for (int p = 0; p < 2; p++) {
        qwen2_model_t *ms[3] = {opts_model(cpu, plain), opts_model(gpu, plain), opts_model(gpu, lean)};
        float lp[3][B * T], en[3][B * T], va[3][B * T];
        size_t n = qwen2_nparams(ms[0]);
        float *gr[3] = {malloc(n * 4), malloc(n * 4), malloc(n * 4)};
        for (int s = 0; s < 3; s++) {
            qwen2_model_t *m = ms[s];
            qwen2_grad_in_t g = {dlogp, dent, dval, NULL};
            qwen2_zero_grads(m);
            if (qwen2_set_plan(m, plan(&pol, names[p]), "t", &e) ||
                qwen2_forward(m, &GRAD, &b, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS | QWEN2_FWD_VALUES, &e) ||
                qwen2_token_logprobs(m, tgt, lp[s], en[s], &e) || qwen2_values_get(m, va[s], &e) ||
                qwen2_backward(m, &GRAD, &g, &e) || qwen2_grads_get(m, 0, gr[s], n, &e))
                fail_msg("plan %s, model %d: %s", names[p], s, e.msg);
        }
        double el = rel_l2(lp[2], lp[0], B * T), ee = rel_l2(en[2], en[0], B * T);
        double ev = rel_l2(va[2], va[0], B * T), eg = rel_l2(gr[2], gr[0], n);
        double sl = rel_l2(lp[2], lp[1], B * T), se = rel_l2(en[2], en[1], B * T);
        double sg = rel_l2(gr[2], gr[1], n);
        print_message("plan %s, lean GPU model vs CPU: log-probs %.2g, entropy %.2g, values %.2g, "
                      "gradients %.2g; vs the plain GPU model: %.2g, %.2g, gradients %.2g\n",
                      names[p], el, ee, ev, eg, sl, se, sg);
        double tl = p == 0 ? 1e-3 : 1e-2;
        if (!(el <= tl && ee <= tl && ev <= tl && eg <= tol_g[p]))
            fail_msg("plan %s: the lean GPU model differs from the CPU (%.3g %.3g %.3g %.3g)",
                     names[p], el, ee, ev, eg);
        if (!(sl <= 1e-4 && se <= 1e-4 && sg <= 1e-3))
            fail_msg("plan %s: chunked logits and max_train_batch change the GPU's results "
                     "(%.3g %.3g %.3g)", names[p], sl, se, sg);
        /* a TRAIN batch of 4 rows does not fit the lean model's saved activations */
        qwen2_batch_t b4 = {4, T, ids, NULL, NULL};
        int32_t ids4[4 * T];
        for (int i = 0; i < 4 * T; i++)
            ids4[i] = ids[i % (B * T)];
        b4.ids = ids4;
        err_t e4 = ERR_INIT;
        assert_int_equal(qwen2_forward(ms[2], &GRAD, &b4, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS, &e4),
                         ERR_INPUT);
        free(gr[0]), free(gr[1]), free(gr[2]);
        qwen2_free(ms[0]), qwen2_free(ms[1]), qwen2_free(ms[2]);
    }
    /* frozen under bf16: the float32 linear weights go, the reward-phase log-probs stay */
    qwen2_opts_t fo = {.max_batch = B, .max_seq = T, .heads = QWEN2_HEAD_LM};
    qwen2_model_t *a = opts_model(gpu, fo);
    fo.frozen = true;
    qwen2_model_t *f = opts_model(gpu, fo);
    float la[B * T], lf[B * T];
    size_t freed = 0;
    prec_ctx_t rew = {PREC_REWARD, 0, 0};
    if (qwen2_set_plan(a, plan(&pol, "Z"), "t", &e) || qwen2_set_plan(f, plan(&pol, "Z"), "t", &e) ||
        qwen2_freeze(f, PREC_REWARD, &freed, &e) ||
        qwen2_forward(a, &rew, &b, QWEN2_FWD_LOGITS, &e) || qwen2_token_logprobs(a, tgt, la, NULL, &e) ||
        qwen2_forward(f, &rew, &b, QWEN2_FWD_LOGITS, &e) || qwen2_token_logprobs(f, tgt, lf, NULL, &e))
        fail_msg("frozen: %s", e.msg);
    double worst = 0;
    for (int i = 0; i < B * T; i++)
        worst = fmax(worst, fabs((double)la[i] - lf[i]));
    print_message("frozen model on the GPU: %zu bytes of float32 weights freed; log-probs differ "
                  "by at most %.3g\n", freed, worst);
    if (!(freed > 0 && worst <= 1e-5))
        fail_msg("frozen: freed %zu bytes, log-probs differ by %.3g", freed, worst);
    qwen2_free(a), qwen2_free(f);
    prec_policies_free(&pol);
}

static void generation_on_gpu_gives_the_cpu_ids(void **state)
{
    NEED_GPU();
    enum { B = 3, NEW = 12 };
    int32_t p0[5] = {3, 1, 4, 1, 5}, p1[9] = {9, 2, 6, 5, 3, 5, 8, 9, 7}, p2[2] = {11, 400};
    const int32_t *pp[B] = {p0, p1, p2};
    int plen[B] = {5, 9, 2};
    err_t e = ERR_INIT;
    const qwen2_gen_t cfg[] = {
        {NEW, 0.0, 0, 1.0, 0, 0, NULL, 0},
        {NEW, 1.0, 20, 0.9, 7, 100, NULL, 0},
        {NEW, 0.8, 0, 1.0, 8, 0, NULL, 0},
    };
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        int32_t out[2][B * NEW];
        int ol[2][B];
        for (int s = 0; s < 2; s++) {
            qwen2_model_t *m = small_model(s ? gpu : cpu, B, 9, false);
            prec_ctx_t ctx = {PREC_ROLLOUT, 0, 0};
            if (qwen2_generate(m, &ctx, B, pp, plen, &cfg[k], out[s], ol[s], &e))
                fail_msg("%s", e.msg);
            qwen2_free(m);
        }
        for (int b = 0; b < B; b++) {
            assert_int_equal(ol[0][b], ol[1][b]);
            for (int t = 0; t < ol[0][b]; t++)
                if (out[0][b * NEW + t] != out[1][b * NEW + t])
                    fail_msg("config %zu row %d step %d: cpu %d gpu %d", k, b, t, out[0][b * NEW + t],
                             out[1][b * NEW + t]);
        }
    }
}

/* ---- the commands --------------------------------------------------------------------------- */

static void logprobs_command_runs_on_the_gpu(void **state)
{
    NEED_GPU();
    char *a = NULL, *b = NULL;
    const char *ids = "3,17,42,5,99,1,8";
    assert_int_equal(test_cli(&a, "logprobs --model %s --ids %s --device cpu",
                              FIX("tiny_tied_gqa_f32"), ids), 0);
    assert_int_equal(test_cli(&b, "logprobs --model %s --ids %s --device cuda",
                              FIX("tiny_tied_gqa_f32"), ids), 0);
    cJSON *ja = cJSON_Parse(a), *jb = cJSON_Parse(b);
    assert_non_null(ja);
    assert_non_null(jb);
    double da = cJSON_GetObjectItem(ja, "mean_nll")->valuedouble;
    double db = cJSON_GetObjectItem(jb, "mean_nll")->valuedouble;
    if (!(fabs(da - db) <= 1e-4))
        fail_msg("mean_nll cpu %.9g cuda %.9g", da, db);
    cJSON_Delete(ja), cJSON_Delete(jb);
    free(a), free(b);
    assert_int_equal(test_cli(&a, "generate --model %s --ids 3,17,42 "
                                  "--max-new-tokens 5 --temperature 0 --device cuda",
                                  FIX("tiny_tied_gqa_f32")), 0);
    assert_non_null(strstr(a, "\"ids\""));
    free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(transformers_fixtures_hold_on_gpu),
        cmocka_unit_test(reward_scores_hold_on_gpu),
        cmocka_unit_test(qwen05b_philox_checkpoint_holds_on_gpu),
        cmocka_unit_test(training_step_on_gpu_matches_cpu),
        cmocka_unit_test(memory_options_on_gpu_match_cpu),
        cmocka_unit_test(generation_on_gpu_gives_the_cpu_ids),
        cmocka_unit_test(logprobs_command_runs_on_the_gpu),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
