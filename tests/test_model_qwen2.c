/* Tests for model/qwen2: the peer check against transformers (fixtures made by
 * scripts/peer/engine_peer.py, see tests/fixtures/model/README.md), finite differences,
 * the heads, padding, generation, the optimizer, precision plans and Hugging Face I/O. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/qwen2.h"
#include "support/testutil.h"
#include "util/fs.h"
#include "util/half.h"
#include "util/json.h"
#include "util/safetensors.h"

#define FIX "tests/fixtures/model"

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

/* ---- helpers --------------------------------------------------------------------------- */

static cJSON *load_json(const char *path)
{
    cJSON *j;
    err_t e = ERR_INIT;
    if (json_load_file(path, 64 << 20, &j, &e))
        fail_msg("%s", e.msg);
    return j;
}

/* (B, T) ints of a JSON array of arrays */
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

/* padding from a 0/1 mask: leading zeros = left padding, then the real run */
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

static qwen2_model_t *open_model(const char *dir, int B, int T, bool training, unsigned heads)
{
    qwen2_opts_t o = {.max_batch = B, .max_seq = T, .training = training, .heads = heads,
                      .kv_batch = B, .kv_len = T};
    qwen2_model_t *m;
    err_t e = ERR_INIT;
    if (qwen2_open_dir(dir, be, &o, &m, &e))
        fail_msg("opening %s: %s", dir, e.msg);
    return m;
}

static qwen2_model_t *tiny_philox(int B, int T, unsigned heads, bool tie, int kvh, uint64_t seed)
{
    qwen2_config_t c = {.hidden = 32, .inter = 48, .layers = 2, .heads = 4, .kv_heads = kvh,
                        .head_dim = 8, .vocab = 50, .max_pos = 64, .rope_theta = 10000,
                        .rms_eps = 1e-6, .tie = tie, .dtype = ST_F32, .bos_id = -1, .pad_id = -1};
    qwen2_opts_t o = {.max_batch = B, .max_seq = T, .training = true, .heads = heads,
                      .kv_batch = B, .kv_len = T + 8};
    qwen2_model_t *m;
    err_t e = ERR_INIT;
    if (qwen2_new(be, &c, &o, &m, &e) || qwen2_init_philox(m, seed, 0.3f, &e))
        fail_msg("%s", e.msg);
    return m;
}

static const prec_ctx_t GRAD = {PREC_GRADIENT, 0, 0};

/* sum of logp over the batch's next-token targets */
static double seq_logprob(qwen2_model_t *m, const qwen2_batch_t *b, float *logp, int32_t *tgt)
{
    err_t e = ERR_INIT;
    qwen2_next_token_targets(b, tgt);
    if (qwen2_forward(m, &GRAD, b, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS, &e) ||
        qwen2_token_logprobs(m, tgt, logp, NULL, &e))
        fail_msg("%s", e.msg);
    double s = 0;
    for (int i = 0; i < b->B * b->T; i++)
        s += tgt[i] >= 0 ? logp[i] : 0;
    return s;
}

/* ---- the peer check ---------------------------------------------------------------------- */

static void check_fixture(const char *name, bool with_grads)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, FIX "/%s", name);
    snprintf(path, sizeof path, "%s/ref.json", dir);
    cJSON *ref = load_json(path);
    cJSON *batches = cJSON_GetObjectItem(ref, "batches");
    err_t e = ERR_INIT;
    for (const cJSON *bj = batches->child; bj; bj = bj->next) {
        int B, T;
        int32_t *ids = ints2d(cJSON_GetObjectItem(bj, "ids"), &B, &T);
        int32_t *mask = ints2d(cJSON_GetObjectItem(bj, "mask"), &B, &T);
        int32_t padl[16], len[16], *tgt = malloc(sizeof(int32_t) * B * T);
        float *logp = malloc(sizeof(float) * B * T);
        mask_to_padding(mask, B, T, padl, len);
        bool grads = with_grads && cJSON_GetObjectItem(bj, "grads");
        qwen2_model_t *m = open_model(dir, B, T, true, 0);
        qwen2_batch_t b = {B, T, ids, padl, len};
        double s = seq_logprob(m, &b, logp, tgt);
        /* log-probs, position by position: <= 1e-4 absolute */
        int count = 0;
        const cJSON *want = cJSON_GetObjectItem(bj, "next_token_logprobs");
        int r = 0;
        for (const cJSON *row = want->child; row; row = row->next, r++) {
            int t = 0;
            for (const cJSON *v = row->child; v; v = v->next, t++) {
                bool real = tgt[r * T + t] >= 0;
                if (cJSON_IsNull(v) != !real)
                    fail_msg("%s/%s: position (%d, %d): target presence differs", name, bj->string, r, t);
                if (!real)
                    continue;
                count++;
                double d = fabs(v->valuedouble - logp[r * T + t]);
                if (!(d <= 1e-4))
                    fail_msg("%s/%s: logp(%d, %d): transformers %.9g, engine %.9g", name, bj->string,
                             r, t, v->valuedouble, logp[r * T + t]);
            }
        }
        double loss = -s / count, want_loss = cJSON_GetObjectItem(bj, "loss")->valuedouble;
        if (!(fabs(loss - want_loss) <= 1e-5))
            fail_msg("%s/%s: loss transformers %.9g, engine %.9g", name, bj->string, want_loss, loss);
        if (grads) {
            /* d(mean NLL)/d(logp) = -1/count on every target */
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
            int checked = 0;
            for (int i = 0; i < qwen2_ntensors(m); i++) {
                const qwen2_tensor_t *t = qwen2_tensor(m, i);
                float *w = malloc(sizeof(float) * t->numel), *got = malloc(sizeof(float) * t->numel);
                if (st_read_f32(&f, t->name, t->ndim, t->shape, w, &e))
                    fail_msg("%s", e.msg);
                qwen2_grads_get(m, t->off, got, t->numel, &e);
                double num = 0, den = 0;
                for (size_t k = 0; k < t->numel; k++) {
                    num += ((double)got[k] - w[k]) * ((double)got[k] - w[k]);
                    den += (double)w[k] * w[k];
                }
                double rel = sqrt(num / (den > 0 ? den : 1e-300));
                if (!(rel <= 1e-3))
                    fail_msg("%s: gradient of %s: relative error %.3g (norm %.3g)", name, t->name,
                             rel, sqrt(den));
                checked++;
                free(w), free(got);
            }
            assert_int_equal(checked, f.ntensors);
            st_close(&f);
            free(seed);
        }
        qwen2_free(m);
        free(ids), free(mask), free(tgt), free(logp);
    }
    /* greedy continuations, prompts batched with left padding */
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
        if (qwen2_open_dir(dir, be, &o, &m, &e))
            fail_msg("%s", e.msg);
        qwen2_gen_t g = {max_new, 0.0, 0, 1.0, 0, 0, NULL, 0};
        prec_ctx_t ctx = {PREC_ROLLOUT, 0, 0};
        if (qwen2_generate(m, &ctx, B, (const int32_t *const *)pp, plen, &g, out, out_len, &e))
            fail_msg("%s", e.msg);
        b = 0;
        for (const cJSON *row = cJSON_GetObjectItem(gj, "new_ids")->child; row; row = row->next, b++) {
            assert_int_equal(out_len[b], max_new);
            int t = 0;
            for (const cJSON *v = row->child; v; v = v->next, t++)
                if (out[b * max_new + t] != v->valueint)
                    fail_msg("%s: greedy row %d step %d: transformers %d, engine %d", name, b, t,
                             v->valueint, out[b * max_new + t]);
        }
        for (b = 0; b < B; b++)
            free(pp[b]);
        qwen2_free(m);
    }
    cJSON_Delete(ref);
}

static void test_peer_tied_gqa_fp32_matches_transformers(void **state)
{
    check_fixture("tiny_tied_gqa_f32", true);
}

static void test_peer_untied_mha_bf16_matches_transformers(void **state)
{
    check_fixture("tiny_untied_mha_bf16", true);
}

static void test_peer_sharded_mqa_fp16_matches_transformers(void **state)
{
    check_fixture("tiny_untied_mqa_f16_sharded", true);
}

static void test_peer_reward_scores_match_transformers(void **state)
{
    cJSON *ref = load_json(FIX "/tiny_reward/ref.json");
    int B, T;
    int32_t *ids = ints2d(cJSON_GetObjectItem(ref, "ids"), &B, &T);
    int32_t *mask = ints2d(cJSON_GetObjectItem(ref, "mask"), &B, &T);
    int32_t padl[8], len[8];
    float sc[8];
    mask_to_padding(mask, B, T, padl, len);
    qwen2_model_t *m = open_model(FIX "/tiny_reward", B, T, false, QWEN2_HEAD_SCORE);
    qwen2_batch_t b = {B, T, ids, padl, len};
    err_t e = ERR_INIT;
    prec_ctx_t ctx = {PREC_REWARD, 0, 0};
    if (qwen2_forward(m, &ctx, &b, QWEN2_FWD_SCORES, &e) || qwen2_scores_get(m, sc, &e))
        fail_msg("%s", e.msg);
    int i = 0;
    for (const cJSON *v = cJSON_GetObjectItem(ref, "scores")->child; v; v = v->next, i++)
        if (!(fabs(v->valuedouble - sc[i]) <= 1e-4))
            fail_msg("score %d: transformers %.9g, engine %.9g", i, v->valuedouble, sc[i]);
    qwen2_free(m);
    free(ids), free(mask);
    cJSON_Delete(ref);
}

/* ---- gradients by finite differences ----------------------------------------------------- */

/* checks the gradient of `lossfn` at the largest-gradient element of every tensor */
typedef double (*lossfn_t)(qwen2_model_t *m, void *ctx);

static void fd_check(qwen2_model_t *m, lossfn_t loss, void *lctx, const char *what)
{
    err_t e = ERR_INIT;
    size_t n = qwen2_nparams(m);
    float *g = malloc(n * sizeof *g), *p = malloc(n * sizeof *p);
    qwen2_grads_get(m, 0, g, n, &e);
    qwen2_params_get(m, 0, p, n, &e);
    for (int i = 0; i < qwen2_ntensors(m); i++) {
        const qwen2_tensor_t *t = qwen2_tensor(m, i);
        size_t at = t->off;
        for (size_t k = 0; k < t->numel; k++)
            at = fabsf(g[t->off + k]) > fabsf(g[at]) ? t->off + k : at;
        const float h = 1e-2f;
        float x0 = p[at], xp = x0 + h, xm = x0 - h;
        qwen2_params_set(m, at, &xp, 1, &e);
        double lp = loss(m, lctx);
        qwen2_params_set(m, at, &xm, 1, &e);
        double lm = loss(m, lctx);
        qwen2_params_set(m, at, &x0, 1, &e);
        double fd = (lp - lm) / (2 * (double)h);
        if (!(fabs(fd - g[at]) <= 2e-2 * fabs(fd) + 2e-3))
            fail_msg("%s: d loss / d %s[%zu]: finite difference %.6g, backward %.6g", what, t->name,
                     at - t->off, fd, g[at]);
    }
    free(g), free(p);
}

typedef struct lm_ctx {
    qwen2_batch_t b;
    float *logp, *ent, *c, *ce;
    int32_t *tgt;
} lm_ctx_t;

/* loss = sum c * logp + sum ce * entropy */
static double lm_loss(qwen2_model_t *m, void *v)
{
    lm_ctx_t *x = v;
    err_t e = ERR_INIT;
    if (qwen2_forward(m, &GRAD, &x->b, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS, &e) ||
        qwen2_token_logprobs(m, x->tgt, x->logp, x->ent, &e))
        fail_msg("%s", e.msg);
    double s = 0;
    for (int i = 0; i < x->b.B * x->b.T; i++)
        s += (double)x->c[i] * x->logp[i] + (double)x->ce[i] * x->ent[i];
    return s;
}

static void test_finite_differences_agree_with_backward(void **state)
{
    enum { B = 2, T = 7 };
    int32_t ids[B * T], padl[B] = {0, 2}, len[B] = {6, 5}, tgt[B * T];
    float logp[B * T], ent[B * T], c[B * T], ce[B * T];
    for (int i = 0; i < B * T; i++) {
        ids[i] = (i * 13 + 5) % 50;
        c[i] = (float)((i % 3) - 1) * 0.7f + 0.2f;
        ce[i] = (float)((i % 4) - 1.5) * 0.3f;
    }
    qwen2_model_t *m = tiny_philox(B, T, QWEN2_HEAD_LM, false, 2, 3);
    lm_ctx_t x = {{B, T, ids, padl, len}, logp, ent, c, ce, tgt};
    qwen2_next_token_targets(&x.b, tgt);
    lm_loss(m, &x);
    qwen2_zero_grads(m);
    err_t e = ERR_INIT;
    qwen2_grad_in_t g = {c, ce, NULL, NULL};
    if (qwen2_backward(m, &GRAD, &g, &e))
        fail_msg("%s", e.msg);
    fd_check(m, lm_loss, &x, "log-probs + entropy");
    qwen2_free(m);
}

typedef struct head_ctx {
    qwen2_batch_t b;
    float *out, *c;
    unsigned flag;
} head_ctx_t;

static double head_loss(qwen2_model_t *m, void *v)
{
    head_ctx_t *x = v;
    err_t e = ERR_INIT;
    if (qwen2_forward(m, &GRAD, &x->b, QWEN2_FWD_TRAIN | x->flag, &e))
        fail_msg("%s", e.msg);
    int n = x->flag == QWEN2_FWD_VALUES ? x->b.B * x->b.T : x->b.B;
    if (x->flag == QWEN2_FWD_VALUES ? qwen2_values_get(m, x->out, &e) : qwen2_scores_get(m, x->out, &e))
        fail_msg("%s", e.msg);
    if (x->flag == QWEN2_FWD_SCORES) /* Bradley-Terry: rows (0, 1) = (chosen, rejected) */
        return -log(1.0 / (1.0 + exp(-((double)x->out[0] - x->out[1]))));
    double s = 0;
    for (int i = 0; i < n; i++)
        s += (double)x->c[i] * x->out[i];
    return s;
}

static void test_value_head_gradients_by_finite_differences(void **state)
{
    enum { B = 2, T = 6 };
    int32_t ids[B * T], len[B] = {6, 4};
    float out[B * T], c[B * T];
    for (int i = 0; i < B * T; i++)
        ids[i] = (i * 7 + 1) % 50, c[i] = (i % 2 ? 0.5f : -0.8f) * (i % (T) < len[i / T]);
    qwen2_model_t *m = tiny_philox(B, T, QWEN2_HEAD_LM | QWEN2_HEAD_VALUE, true, 2, 4);
    assert_non_null(qwen2_tensor_find(m, "v_head.summary.weight"));
    assert_non_null(qwen2_tensor_find(m, "v_head.summary.bias"));
    head_ctx_t x = {{B, T, ids, NULL, len}, out, c, QWEN2_FWD_VALUES};
    head_loss(m, &x);
    qwen2_zero_grads(m);
    err_t e = ERR_INIT;
    qwen2_grad_in_t g = {NULL, NULL, c, NULL};
    if (qwen2_backward(m, &GRAD, &g, &e))
        fail_msg("%s", e.msg);
    fd_check(m, head_loss, &x, "values");
    qwen2_free(m);
}

static void test_reward_bradley_terry_gradients_by_finite_differences(void **state)
{
    enum { B = 2, T = 6 };
    int32_t ids[B * T], len[B] = {5, 6};
    float out[B];
    for (int i = 0; i < B * T; i++)
        ids[i] = (i * 11 + 3) % 50;
    qwen2_model_t *m = tiny_philox(B, T, QWEN2_HEAD_SCORE, true, 4, 5);
    head_ctx_t x = {{B, T, ids, NULL, len}, out, NULL, QWEN2_FWD_SCORES};
    head_loss(m, &x);
    /* d/ds_c of -log sigmoid(s_c - s_r) = -(1 - sigmoid(s_c - s_r)), d/ds_r = +that */
    double sg = 1.0 / (1.0 + exp(-((double)out[0] - out[1])));
    float ds[B] = {(float)-(1 - sg), (float)(1 - sg)};
    qwen2_zero_grads(m);
    err_t e = ERR_INIT;
    qwen2_grad_in_t g = {NULL, NULL, NULL, ds};
    if (qwen2_backward(m, &GRAD, &g, &e))
        fail_msg("%s", e.msg);
    fd_check(m, head_loss, &x, "Bradley-Terry");
    qwen2_free(m);
}

/* ---- padding, generation ------------------------------------------------------------------- */

static void test_padding_left_right_or_none_gives_the_same_logprobs(void **state)
{
    enum { T = 8, L = 5 };
    int32_t seq[L] = {3, 17, 29, 4, 41}, ids[T], tgt[T];
    float lp_alone[T], lp[T];
    qwen2_model_t *m = tiny_philox(1, T, QWEN2_HEAD_LM, true, 2, 6);
    qwen2_batch_t alone = {1, L, seq, NULL, NULL};
    seq_logprob(m, &alone, lp_alone, tgt);
    for (int left = 0; left <= T - L; left += T - L) {
        for (int t = 0; t < T; t++)
            ids[t] = (t >= left && t < left + L) ? seq[t - left] : 49;
        int32_t padl = left, len = L;
        qwen2_batch_t b = {1, T, ids, &padl, &len};
        seq_logprob(m, &b, lp, tgt);
        for (int t = 0; t + 1 < L; t++)
            if (!(fabsf(lp[left + t] - lp_alone[t]) <= 1e-5f))
                fail_msg("pad_left %d, position %d: %.9g vs alone %.9g", left, t, lp[left + t], lp_alone[t]);
    }
    qwen2_free(m);
}

static void test_greedy_kv_cache_matches_full_forward_argmax(void **state)
{
    enum { B = 2, NEW = 5 };
    int32_t p0[4] = {5, 9, 13, 2}, p1[2] = {44, 7}, plen[B] = {4, 2}, out[B * NEW];
    const int32_t *pp[B] = {p0, p1};
    int out_len[B];
    qwen2_model_t *m = tiny_philox(B, 9, QWEN2_HEAD_LM, false, 2, 7);
    qwen2_gen_t g = {NEW, 0.0, 0, 1.0, 0, 0, NULL, 0};
    prec_ctx_t ctx = {PREC_ROLLOUT, 0, 0};
    err_t e = ERR_INIT;
    if (qwen2_generate(m, &ctx, B, pp, plen, &g, out, out_len, &e))
        fail_msg("%s", e.msg);
    const int V = qwen2_config(m)->vocab;
    float *logits = malloc(sizeof(float) * V);
    for (int b = 0; b < B; b++) {
        int32_t seq[16];
        int n = plen[b];
        memcpy(seq, pp[b], sizeof(int32_t) * n);
        for (int s = 0; s < NEW; s++) {
            qwen2_batch_t bt = {1, n, seq, NULL, NULL};
            if (qwen2_forward(m, &ctx, &bt, QWEN2_FWD_LOGITS, &e) ||
                qwen2_logits_get(m, n - 1, 1, logits, &e))
                fail_msg("%s", e.msg);
            int best = 0;
            for (int j = 1; j < V; j++)
                best = logits[j] > logits[best] ? j : best;
            if (out[b * NEW + s] != best)
                fail_msg("row %d step %d: KV cache %d, full forward %d", b, s, out[b * NEW + s], best);
            seq[n++] = best;
        }
    }
    free(logits);
    qwen2_free(m);
}

static void test_sampling_same_seed_same_ids_any_thread_count(void **state)
{
    enum { B = 3, NEW = 6 };
    int32_t p0[3] = {1, 2, 3}, p1[1] = {9}, p2[2] = {30, 31}, plen[B] = {3, 1, 2}, a[B * NEW], b2[B * NEW];
    const int32_t *pp[B] = {p0, p1, p2};
    int la[B], lb[B];
    qwen2_model_t *m = tiny_philox(B, 4, QWEN2_HEAD_LM, true, 2, 8);
    qwen2_gen_t g = {NEW, 0.9, 20, 0.95, 1234, 0, NULL, 0};
    prec_ctx_t ctx = {PREC_ROLLOUT, 0, 0};
    err_t e = ERR_INIT;
    omp_set_num_threads(1);
    assert_int_equal(qwen2_generate(m, &ctx, B, pp, plen, &g, a, la, &e), ERR_OK);
    omp_set_num_threads(2);
    assert_int_equal(qwen2_generate(m, &ctx, B, pp, plen, &g, b2, lb, &e), ERR_OK);
    assert_memory_equal(a, b2, sizeof a);
    g.seed = 1235; /* another seed, another sample (30 tokens drawn: equal by chance is ~impossible) */
    assert_int_equal(qwen2_generate(m, &ctx, B, pp, plen, &g, b2, lb, &e), ERR_OK);
    assert_memory_not_equal(a, b2, sizeof a);
    qwen2_free(m);
}

static void test_generation_stops_after_a_stop_id(void **state)
{
    int32_t p[2] = {4, 8}, plen = 2, out[6];
    const int32_t *pp[1] = {p};
    int n;
    qwen2_model_t *m = tiny_philox(1, 4, QWEN2_HEAD_LM, true, 2, 9);
    qwen2_gen_t g = {6, 0.0, 0, 1.0, 0, 0, NULL, 0};
    prec_ctx_t ctx = {PREC_ROLLOUT, 0, 0};
    err_t e = ERR_INIT;
    assert_int_equal(qwen2_generate(m, &ctx, 1, pp, &plen, &g, out, &n, &e), ERR_OK);
    assert_int_equal(n, 6);
    int32_t stop = out[2];
    g.stop = &stop, g.nstop = 1;
    int32_t out2[6];
    assert_int_equal(qwen2_generate(m, &ctx, 1, pp, &plen, &g, out2, &n, &e), ERR_OK);
    int first = 0;
    while (out[first] != stop)
        first++;
    assert_int_equal(n, first + 1);
    assert_memory_equal(out, out2, sizeof(int32_t) * n);
    /* a prompt longer than the cache allows is refused */
    g.max_new = 100;
    assert_int_equal(qwen2_generate(m, &ctx, 1, pp, &plen, &g, out2, &n, &e), ERR_INPUT);
    qwen2_free(m);
}

/* ---- training -------------------------------------------------------------------------------- */

static double train_loss(qwen2_model_t *m, const qwen2_batch_t *b, int32_t *tgt, float *lp, float *seed)
{
    double s = seq_logprob(m, b, lp, tgt);
    int count = 0;
    for (int i = 0; i < b->B * b->T; i++)
        count += tgt[i] >= 0;
    for (int i = 0; i < b->B * b->T; i++)
        seed[i] = tgt[i] >= 0 ? -1.0f / count : 0;
    return -s / count;
}

static void test_adamw_steps_reduce_loss_and_clip(void **state)
{
    enum { B = 2, T = 6 };
    int32_t ids[B * T], tgt[B * T];
    float lp[B * T], seed[B * T];
    for (int i = 0; i < B * T; i++)
        ids[i] = (i * 3 + 1) % 50;
    qwen2_model_t *m = tiny_philox(B, T, QWEN2_HEAD_LM, true, 2, 10);
    qwen2_batch_t b = {B, T, ids, NULL, NULL};
    qwen2_adamw_t h = {1e-2, 0.9, 0.999, 1e-8, 0.01, 1.0};
    err_t e = ERR_INIT;
    double first = 0, last = 0;
    for (int step = 0; step < 5; step++) {
        last = train_loss(m, &b, tgt, lp, seed);
        if (!step)
            first = last;
        qwen2_zero_grads(m);
        qwen2_grad_in_t g = {seed, NULL, NULL, NULL};
        qwen2_step_info_t info;
        uint64_t v = qwen2_version(m);
        if (qwen2_backward(m, &GRAD, &g, &e) || qwen2_optimizer_step(m, &h, &info, &e))
            fail_msg("%s", e.msg);
        assert_true(qwen2_version(m) > v);
        assert_true(info.grad_norm > 0 && isfinite(info.grad_norm));
        assert_true(info.clip == 1.0 || info.grad_norm > 1.0);
    }
    if (!(last < first - 0.05))
        fail_msg("loss did not fall: %.6g -> %.6g", first, last);
    /* a tiny max norm: the step is scaled by max_norm / (norm + 1e-6) */
    h.max_grad_norm = 1e-3;
    train_loss(m, &b, tgt, lp, seed);
    qwen2_zero_grads(m);
    qwen2_grad_in_t g = {seed, NULL, NULL, NULL};
    qwen2_step_info_t info;
    qwen2_backward(m, &GRAD, &g, &e);
    assert_int_equal(qwen2_optimizer_step(m, &h, &info, &e), ERR_OK);
    assert_true(fabs(info.clip - 1e-3 / (info.grad_norm + 1e-6)) < 1e-12);
    qwen2_free(m);
}

static prec_policies_t parse_plans(const char *text)
{
    prec_policies_t p;
    err_t e = ERR_INIT;
    if (prec_policies_parse(text, strlen(text), "test-policies.json", &p, &e))
        fail_msg("%s", e.msg);
    return p;
}

static void test_fp16_loss_scaling_skips_overflow_and_backs_off(void **state)
{
    enum { B = 1, T = 6 };
    int32_t ids[B * T] = {1, 5, 9, 13, 17, 21}, tgt[B * T];
    float lp[B * T], seed[B * T];
    qwen2_model_t *m = tiny_philox(B, T, QWEN2_HEAD_LM, true, 2, 11);
    prec_policies_t pol = parse_plans("{\"version\": 1, \"plans\": {\"H\": {\"default\": \"fp32\", "
                                      "\"compute\": \"fp16\", \"loss_scale\": {\"init\": 1e12}}}}");
    err_t e = ERR_INIT;
    assert_int_equal(qwen2_set_plan(m, &pol.plans[0], "test", &e), ERR_OK);
    assert_true(qwen2_loss_scale(m) == 1e12);
    qwen2_batch_t b = {B, T, ids, NULL, NULL};
    train_loss(m, &b, tgt, lp, seed);
    qwen2_zero_grads(m);
    qwen2_grad_in_t g = {seed, NULL, NULL, NULL};
    assert_int_equal(qwen2_backward(m, &GRAD, &g, &e), ERR_OK);
    size_t n = qwen2_nparams(m);
    float *before = malloc(n * sizeof *before), *after = malloc(n * sizeof *after);
    qwen2_params_get(m, 0, before, n, &e);
    qwen2_adamw_t h = {1e-2, 0.9, 0.999, 1e-8, 0, 1.0};
    qwen2_step_info_t info;
    /* seeds times 1e12 overflow fp16 (max 65504): the step is skipped, the scale halves */
    assert_int_equal(qwen2_optimizer_step(m, &h, &info, &e), ERR_OK);
    assert_true(info.skipped);
    assert_true(qwen2_loss_scale(m) == 5e11);
    qwen2_params_get(m, 0, after, n, &e);
    assert_memory_equal(before, after, n * sizeof *before);
    free(before), free(after);
    prec_policies_free(&pol);
    qwen2_free(m);
}

static void test_fp16_and_bf16_compute_gradients_close_to_fp32(void **state)
{
    enum { B = 1, T = 6 };
    int32_t ids[B * T] = {2, 4, 6, 8, 10, 12}, tgt[B * T];
    float lp[B * T], seed[B * T];
    err_t e = ERR_INIT;
    qwen2_batch_t b = {B, T, ids, NULL, NULL};
    float *ref = NULL;
    size_t n = 0;
    const char *plans = "{\"version\": 1, \"plans\": {\"F\": {\"default\": \"fp32\"}, "
                        "\"H\": {\"default\": \"fp32\", \"compute\": \"fp16\"}, "
                        "\"Z\": {\"default\": \"fp32\", \"compute\": \"bf16\"}}}";
    prec_policies_t pol = parse_plans(plans);
    for (int p = 0; p < 3; p++) {
        qwen2_model_t *m = tiny_philox(B, T, QWEN2_HEAD_LM, true, 2, 12);
        assert_int_equal(qwen2_set_plan(m, &pol.plans[p], "test", &e), ERR_OK);
        train_loss(m, &b, tgt, lp, seed);
        qwen2_zero_grads(m);
        qwen2_grad_in_t g = {seed, NULL, NULL, NULL};
        assert_int_equal(qwen2_backward(m, &GRAD, &g, &e), ERR_OK);
        n = qwen2_nparams(m);
        float *gr = malloc(n * sizeof *gr);
        qwen2_grads_get(m, 0, gr, n, &e);
        double scale = qwen2_loss_scale(m); /* fp16: gradients are scaled until the step */
        double num = 0, den = 0;
        if (!ref) {
            ref = gr;
        } else {
            for (size_t i = 0; i < n; i++) {
                double d = gr[i] / scale - ref[i];
                num += d * d, den += (double)ref[i] * ref[i];
            }
            double rel = sqrt(num / den);
            /* bf16 keeps 8 significant bits, fp16 11: both far from fp32, yet close */
            if (!(rel > 1e-6 && rel < (p == 1 ? 2e-2 : 5e-2)))
                fail_msg("plan %s: relative gradient difference to fp32 %.3g", pol.plans[p].name, rel);
            free(gr);
        }
        qwen2_free(m);
    }
    free(ref);
    prec_policies_free(&pol);
}

/* ---- precision plans in the model ------------------------------------------------------------- */

static void test_plan_applies_per_phase(void **state)
{
    enum { T = 6 };
    int32_t ids[T] = {3, 1, 4, 1, 5, 9}, tgt[T];
    float a[T], b[T], c[T];
    qwen2_model_t *m = tiny_philox(1, T, QWEN2_HEAD_LM, true, 2, 13);
    qwen2_batch_t bt = {1, T, ids, NULL, NULL};
    qwen2_next_token_targets(&bt, tgt);
    err_t e = ERR_INIT;
    prec_ctx_t roll = {PREC_ROLLOUT, 0, 0};
    assert_int_equal(qwen2_forward(m, &roll, &bt, QWEN2_FWD_LOGITS, &e), ERR_OK);
    qwen2_token_logprobs(m, tgt, a, NULL, &e);
    prec_policies_t pol = parse_plans("{\"version\": 1, \"plans\": {\"R\": {\"default\": \"fp32\", "
                                      "\"rules\": [{\"phase\": \"rollout\", \"operand\": [\"weight\", "
                                      "\"input\"], \"spec\": \"bf16\"}]}}}");
    assert_int_equal(qwen2_set_plan(m, &pol.plans[0], "test", &e), ERR_OK);
    assert_int_equal(qwen2_forward(m, &roll, &bt, QWEN2_FWD_LOGITS, &e), ERR_OK);
    qwen2_token_logprobs(m, tgt, b, NULL, &e);
    prec_ctx_t rew = {PREC_REWARD, 0, 0};
    assert_int_equal(qwen2_forward(m, &rew, &bt, QWEN2_FWD_LOGITS, &e), ERR_OK);
    qwen2_token_logprobs(m, tgt, c, NULL, &e);
    assert_memory_not_equal(a, b, sizeof a); /* rollout under bf16 operands */
    assert_memory_equal(a, c, sizeof a);     /* reward phase untouched: fp32 */
    for (int t = 0; t + 1 < T; t++)
        assert_true(fabsf(a[t] - b[t]) < 0.05f);
    prec_policies_free(&pol);
    qwen2_free(m);
}

static void test_one_layer_quantized_leaves_earlier_activations_bitwise(void **state)
{
    enum { T = 6 };
    int32_t ids[T] = {7, 3, 11, 19, 23, 2};
    qwen2_model_t *m = tiny_philox(1, T, QWEN2_HEAD_LM, true, 2, 14);
    const int H = qwen2_config(m)->hidden, L = qwen2_config(m)->layers;
    qwen2_batch_t bt = {1, T, ids, NULL, NULL};
    float *ref = malloc(sizeof(float) * (L + 1) * T * H), *got = malloc(sizeof(float) * T * H);
    err_t e = ERR_INIT;
    prec_ctx_t ctx = {PREC_ROLLOUT, 0, 0};
    assert_int_equal(qwen2_forward(m, &ctx, &bt, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS, &e), ERR_OK);
    for (int l = 0; l <= L; l++)
        qwen2_hidden_get(m, l, ref + (size_t)l * T * H, &e);
    mx_spec_t s = mx_spec_default(MX_BF16);
    assert_int_equal(prec_table_set(qwen2_precision(m), "model.layers.1.mlp.down_proj", PREC_ROLLOUT,
                                    PREC_OP_WEIGHT, &s, &e), ERR_OK);
    assert_int_equal(qwen2_forward(m, &ctx, &bt, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS, &e), ERR_OK);
    for (int l = 0; l <= 1; l++) { /* inputs of layers 0 and 1: untouched, bit for bit */
        qwen2_hidden_get(m, l, got, &e);
        assert_memory_equal(ref + (size_t)l * T * H, got, sizeof(float) * T * H);
    }
    qwen2_hidden_get(m, L, got, &e); /* after layer 1's down_proj: changed */
    assert_memory_not_equal(ref + (size_t)L * T * H, got, sizeof(float) * T * H);
    free(ref), free(got);
    qwen2_free(m);
}

static void test_plan_rule_naming_no_layer_is_refused_by_the_model(void **state)
{
    qwen2_model_t *m = tiny_philox(1, 4, QWEN2_HEAD_LM, true, 2, 15);
    prec_policies_t pol = parse_plans("{\"version\": 1, \"plans\": {\"X\": {\"default\": \"fp32\", "
                                      "\"rules\": [{\"module\": \"model.layers.7.*\", \"spec\": \"bf16\"}]}}}");
    err_t e = ERR_INIT;
    assert_int_equal(qwen2_set_plan(m, &pol.plans[0], "test-policies.json", &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "plans.X.rules[0].module"));
    prec_policies_free(&pol);
    qwen2_free(m);
}

/* ---- Hugging Face directories ---------------------------------------------------------------- */

static void test_save_and_reload_is_bitwise_and_skips_tied_head(void **state)
{
    qwen2_model_t *m = tiny_philox(1, 4, QWEN2_HEAD_LM, true, 2, 16);
    char *dir = test_mkdtemp(), sub[4096];
    snprintf(sub, sizeof sub, "%s/out", dir);
    err_t e = ERR_INIT;
    assert_int_equal(qwen2_save_dir(m, sub, ST_F32, &e), ERR_OK);
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", sub);
    st_file_t f;
    assert_int_equal(st_open(&f, path, &e), ERR_OK);
    assert_null(st_find(&f, "lm_head.weight"));
    assert_non_null(st_metadata(&f, "format"));
    assert_string_equal(st_metadata(&f, "format"), "pt");
    st_close(&f);
    snprintf(path, sizeof path, "%s/config.json", sub);
    cJSON *cfg = load_json(path);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(cfg, "architectures"), 0)->valuestring,
                        "Qwen2ForCausalLM");
    assert_string_equal(cJSON_GetObjectItem(cfg, "torch_dtype")->valuestring, "float32");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cfg, "tie_word_embeddings")));
    cJSON_Delete(cfg);
    qwen2_model_t *r = open_model(sub, 1, 4, false, 0);
    size_t n = qwen2_nparams(m);
    assert_int_equal(n, qwen2_nparams(r));
    float *a = malloc(n * 4), *b = malloc(n * 4);
    qwen2_params_get(m, 0, a, n, &e);
    qwen2_params_get(r, 0, b, n, &e);
    assert_memory_equal(a, b, n * 4);
    /* bf16 save: every value is the bf16 rounding */
    assert_int_equal(qwen2_save_dir(m, sub, ST_BF16, &e), ERR_OK);
    qwen2_free(r);
    r = open_model(sub, 1, 4, false, 0);
    qwen2_params_get(r, 0, b, n, &e);
    for (size_t i = 0; i < n; i++)
        assert_true(b[i] == half_bf16_to_f32(half_f32_to_bf16(a[i])));
    free(a), free(b);
    qwen2_free(r);
    qwen2_free(m);
    test_rmtree(dir);
    free(dir);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    test_write_file(p, text, strlen(text));
}

static void test_config_errors_name_file_and_key(void **state)
{
    char *dir = test_mkdtemp(), path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    qwen2_config_t c;
    err_t e = ERR_INIT;
    write_text(dir, "config.json", "{\"hidden_size\": 64, \"num_hidden_layers\": 2, "
                                   "\"num_attention_heads\": 4, \"vocab_size\": 10}");
    assert_int_equal(qwen2_config_load(path, &c, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, "intermediate_size"));
    err_clear(&e);
    write_text(dir, "config.json", "{\"hidden_size\": \"64\", \"intermediate_size\": 8, "
                                   "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10}");
    assert_int_equal(qwen2_config_load(path, &c, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "hidden_size"));
    err_clear(&e);
    write_text(dir, "config.json", "{\"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 2, "
                                   "\"num_attention_heads\": 4, \"num_key_value_heads\": 3, \"vocab_size\": 10}");
    assert_int_equal(qwen2_config_load(path, &c, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "num_key_value_heads"));
    err_clear(&e);
    write_text(dir, "config.json", "{\"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 2, "
                                   "\"num_attention_heads\": 4, \"vocab_size\": 10, \"rope_scaling\": "
                                   "{\"type\": \"yarn\"}}");
    assert_int_equal(qwen2_config_load(path, &c, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "rope_scaling"));
    err_clear(&e);
    /* transformers 5 spelling: rope_parameters and dtype */
    write_text(dir, "config.json", "{\"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 2, "
                                   "\"num_attention_heads\": 4, \"vocab_size\": 10, \"dtype\": \"bfloat16\", "
                                   "\"rope_parameters\": {\"rope_theta\": 1000000.0, \"rope_type\": \"default\"}, "
                                   "\"eos_token_id\": [5, 7]}");
    assert_int_equal(qwen2_config_load(path, &c, &e), ERR_OK);
    assert_true(c.rope_theta == 1e6);
    assert_int_equal(c.dtype, ST_BF16);
    assert_int_equal(c.n_eos, 2);
    assert_int_equal(c.kv_heads, 4);
    assert_int_equal(c.head_dim, 16);
    test_rmtree(dir);
    free(dir);
}

static void test_shape_disagreeing_with_config_names_tensor(void **state)
{
    char *dir = test_mkdtemp(), cmd[8192];
    snprintf(cmd, sizeof cmd, "cp " FIX "/tiny_tied_gqa_f32/model.safetensors %s/", dir);
    assert_int_equal(system(cmd), 0);
    write_text(dir, "config.json", "{\"model_type\": \"qwen2\", \"hidden_size\": 64, "
                                   "\"intermediate_size\": 80, \"num_hidden_layers\": 2, "
                                   "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
                                   "\"vocab_size\": 160, \"tie_word_embeddings\": true}");
    qwen2_opts_t o = {.max_batch = 1, .max_seq = 4};
    qwen2_model_t *m;
    err_t e = ERR_INIT;
    assert_int_equal(qwen2_open_dir(dir, be, &o, &m, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "model.safetensors"));
    assert_non_null(strstr(e.msg, "mlp."));
    /* a missing tensor is named too */
    err_clear(&e);
    write_text(dir, "config.json", "{\"model_type\": \"qwen2\", \"hidden_size\": 64, "
                                   "\"intermediate_size\": 96, \"num_hidden_layers\": 3, "
                                   "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
                                   "\"vocab_size\": 160, \"tie_word_embeddings\": true}");
    assert_int_equal(qwen2_open_dir(dir, be, &o, &m, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "model.layers.2."));
    test_rmtree(dir);
    free(dir);
}

static void test_memory_is_reported_by_kind(void **state)
{
    qwen2_model_t *m = tiny_philox(2, 5, QWEN2_HEAD_LM, true, 2, 17);
    qwen2_mem_t mem;
    qwen2_memory(m, &mem);
    size_t pb = qwen2_nparams(m) * sizeof(float);
    assert_true(mem.params >= pb);
    assert_int_equal(mem.grads, pb);
    assert_int_equal(mem.optimizer, 2 * pb);
    assert_true(mem.activations > 0 && mem.kv_cache > 0);
    qwen2_free(m);
}

/* transformers' init: N(0, std^2) weights (mean and spread checked on the 1,600-element
 * embedding and the layers' matrices), zero biases, unit norms; the same seed gives the
 * same values, another seed others. */
static void test_normal_init_is_transformers_init(void **state)
{
    (void)state;
    qwen2_config_t c = {.hidden = 32, .inter = 48, .layers = 2, .heads = 4, .kv_heads = 2,
                        .head_dim = 8, .vocab = 50, .max_pos = 64, .rope_theta = 10000,
                        .rms_eps = 1e-6, .tie = true, .dtype = ST_F32, .bos_id = -1, .pad_id = -1};
    qwen2_opts_t o = {.max_batch = 1, .max_seq = 8};
    qwen2_model_t *m;
    err_t e = ERR_INIT;
    if (qwen2_new(be, &c, &o, &m, &e) || qwen2_init_normal(m, 5, 0.02f, &e))
        fail_msg("%s", e.msg);
    size_t n = qwen2_nparams(m);
    float *p = malloc(n * sizeof *p), *q = malloc(n * sizeof *q);
    assert_int_equal(qwen2_params_get(m, 0, p, n, &e), 0);
    double s1 = 0, s2 = 0;
    size_t nw = 0;
    int nbias = 0, nnorm = 0;
    for (int i = 0; i < qwen2_ntensors(m); i++) {
        const qwen2_tensor_t *t = qwen2_tensor(m, i);
        size_t len = strlen(t->name);
        bool bias = len > 5 && !strcmp(t->name + len - 5, ".bias");
        bool norm = len > 11 && !strcmp(t->name + len - 11, "norm.weight");
        for (size_t k = 0; k < t->numel; k++) {
            float v = p[t->off + k];
            if (bias)
                assert_true(v == 0.0f);
            else if (norm)
                assert_true(v == 1.0f);
            else {
                s1 += v;
                s2 += (double)v * v;
                nw++;
            }
        }
        nbias += bias;
        nnorm += norm;
    }
    assert_true(nbias == 6 && nnorm == 5); /* q/k/v biases of 2 layers; 2 x 2 + final norm */
    double mean = s1 / (double)nw, sd = sqrt(s2 / (double)nw - mean * mean);
    if (!(fabs(mean) < 0.002 && fabs(sd - 0.02) < 0.001))
        fail_msg("normal init over %zu weights: mean %.5f (expected 0), sd %.5f (expected 0.02)",
                 nw, mean, sd);
    assert_int_equal(qwen2_init_normal(m, 5, 0.02f, &e), 0);
    assert_int_equal(qwen2_params_get(m, 0, q, n, &e), 0);
    assert_memory_equal(p, q, n * sizeof *p);
    assert_int_equal(qwen2_init_normal(m, 6, 0.02f, &e), 0);
    assert_int_equal(qwen2_params_get(m, 0, q, n, &e), 0);
    assert_true(memcmp(p, q, n * sizeof *p) != 0);
    free(p), free(q);
    qwen2_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normal_init_is_transformers_init),
        cmocka_unit_test(test_peer_tied_gqa_fp32_matches_transformers),
        cmocka_unit_test(test_peer_untied_mha_bf16_matches_transformers),
        cmocka_unit_test(test_peer_sharded_mqa_fp16_matches_transformers),
        cmocka_unit_test(test_peer_reward_scores_match_transformers),
        cmocka_unit_test(test_finite_differences_agree_with_backward),
        cmocka_unit_test(test_value_head_gradients_by_finite_differences),
        cmocka_unit_test(test_reward_bradley_terry_gradients_by_finite_differences),
        cmocka_unit_test(test_padding_left_right_or_none_gives_the_same_logprobs),
        cmocka_unit_test(test_greedy_kv_cache_matches_full_forward_argmax),
        cmocka_unit_test(test_sampling_same_seed_same_ids_any_thread_count),
        cmocka_unit_test(test_generation_stops_after_a_stop_id),
        cmocka_unit_test(test_adamw_steps_reduce_loss_and_clip),
        cmocka_unit_test(test_fp16_loss_scaling_skips_overflow_and_backs_off),
        cmocka_unit_test(test_fp16_and_bf16_compute_gradients_close_to_fp32),
        cmocka_unit_test(test_plan_applies_per_phase),
        cmocka_unit_test(test_one_layer_quantized_leaves_earlier_activations_bitwise),
        cmocka_unit_test(test_plan_rule_naming_no_layer_is_refused_by_the_model),
        cmocka_unit_test(test_save_and_reload_is_bitwise_and_skips_tied_head),
        cmocka_unit_test(test_config_errors_name_file_and_key),
        cmocka_unit_test(test_shape_disagreeing_with_config_names_tensor),
        cmocka_unit_test(test_memory_is_reported_by_kind),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
