/* Tests for the model's memory options (model/qwen2.h): max_train_batch (activations kept
 * for backward sized for the training minibatch), logits_rows (the LM head, log-softmax,
 * entropy and their backward in chunks of rows), frozen models whose float32 linear
 * weights are freed once their 16-bit copies exist, and the PPO memory table. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/qwen2.h"
#include "rlhf/ppo_mem.h"
#include "support/testutil.h"

static backend_t *be;

static int setup(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    return be_open("cpu", &be, &e);
}

static int teardown(void **state)
{
    (void)state;
    be_close(be);
    return 0;
}

static const qwen2_config_t CFG = {.hidden = 32, .inter = 48, .layers = 3, .heads = 4,
                                   .kv_heads = 2, .head_dim = 8, .vocab = 300, .max_pos = 64,
                                   .rope_theta = 10000, .rms_eps = 1e-6, .tie = true,
                                   .dtype = ST_F32, .bos_id = -1, .pad_id = -1};

static qwen2_model_t *model(const qwen2_config_t *c, const qwen2_opts_t *o, uint64_t seed)
{
    qwen2_model_t *m;
    err_t e = ERR_INIT;
    if (qwen2_new(be, c, o, &m, &e) || qwen2_init_philox(m, seed, 0.3f, &e))
        fail_msg("%s", e.msg);
    return m;
}

static prec_policies_t parse_plans(const char *text)
{
    prec_policies_t p;
    err_t e = ERR_INIT;
    if (prec_policies_parse(text, strlen(text), "test-policies.json", &p, &e))
        fail_msg("%s", e.msg);
    return p;
}

static const prec_ctx_t GRAD = {PREC_GRADIENT, 7, 3};

/* What one training pass of a batch gives: log-probs, entropies, values, gradients. */
typedef struct pass {
    float *logp, *ent, *val, *grads;
    size_t n;
} pass_t;

static void pass_free(pass_t *p)
{
    free(p->logp), free(p->ent), free(p->val), free(p->grads);
}

/* forward (TRAIN, LOGITS, VALUES), log-probs with entropy, backward from a loss that uses
 * all three (dlogp, dentropy, dvalues), gradients read back */
static pass_t train_pass(qwen2_model_t *m, const qwen2_batch_t *b)
{
    const int N = b->B * b->T;
    pass_t p = {malloc(N * sizeof(float)), malloc(N * sizeof(float)), malloc(N * sizeof(float)),
                NULL, qwen2_nparams(m)};
    int32_t *tgt = malloc(N * sizeof *tgt);
    float *dl = malloc(N * sizeof *dl), *de = malloc(N * sizeof *de), *dv = malloc(N * sizeof *dv);
    err_t e = ERR_INIT;
    qwen2_next_token_targets(b, tgt);
    if (qwen2_forward(m, &GRAD, b, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS | QWEN2_FWD_VALUES, &e) ||
        qwen2_token_logprobs(m, tgt, p.logp, p.ent, &e) || qwen2_values_get(m, p.val, &e))
        fail_msg("%s", e.msg);
    for (int i = 0; i < N; i++) {
        dl[i] = tgt[i] >= 0 ? -1.0f / N : 0.0f;
        de[i] = tgt[i] >= 0 ? 0.01f * (float)(i % 3) : 0.0f;
        dv[i] = tgt[i] >= 0 ? 0.1f * p.val[i] : 0.0f;
    }
    qwen2_zero_grads(m);
    if (qwen2_backward(m, &GRAD, &(qwen2_grad_in_t){dl, de, dv, NULL}, &e))
        fail_msg("%s", e.msg);
    p.grads = malloc(p.n * sizeof(float));
    if (qwen2_grads_get(m, 0, p.grads, p.n, &e))
        fail_msg("%s", e.msg);
    free(tgt), free(dl), free(de), free(dv);
    return p;
}

/* largest |a - b| over the real positions (targets >= 0 in `mask`, or all when NULL) */
static double max_diff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++)
        d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

static double rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

/* two rows, the second right-padded */
enum { B = 2, T = 7 };
static const int32_t IDS[B * T] = {5, 17, 250, 3, 99, 42, 7, 11, 260, 1, 2, 0, 0, 0};
static const int32_t LEN[B] = {7, 4};

/* ---- max_train_batch ---------------------------------------------------------------------- */

static void test_max_train_batch_gives_the_same_training_pass(void **state)
{
    (void)state;
    /* a model for inference batches of 4 that trains minibatches of 2, against one sized
     * for 2 rows from the start: the same log-probs, entropies, values and gradients */
    qwen2_opts_t big = {.max_batch = 4, .max_seq = T, .training = true,
                        .heads = QWEN2_HEAD_LM | QWEN2_HEAD_VALUE, .max_train_batch = B};
    qwen2_opts_t small = {.max_batch = B, .max_seq = T, .training = true,
                          .heads = QWEN2_HEAD_LM | QWEN2_HEAD_VALUE};
    qwen2_model_t *a = model(&CFG, &big, 21), *b = model(&CFG, &small, 21);
    qwen2_batch_t bt = {B, T, IDS, NULL, LEN};
    pass_t pa = train_pass(a, &bt), pb = train_pass(b, &bt);
    assert_memory_equal(pa.logp, pb.logp, B * T * sizeof(float));
    assert_memory_equal(pa.ent, pb.ent, B * T * sizeof(float));
    assert_memory_equal(pa.val, pb.val, B * T * sizeof(float));
    assert_memory_equal(pa.grads, pb.grads, pa.n * sizeof(float));
    /* it still runs inference over its full 4 rows */
    int32_t ids4[4 * T];
    for (int i = 0; i < 4 * T; i++)
        ids4[i] = (i * 37 + 5) % CFG.vocab;
    qwen2_batch_t b4 = {4, T, ids4, NULL, NULL};
    err_t e = ERR_INIT;
    assert_int_equal(qwen2_forward(a, &GRAD, &b4, QWEN2_FWD_LOGITS, &e), ERR_OK);
    /* and a second training pass after an optimizer step agrees too */
    qwen2_adamw_t h = {1e-2, 0.9, 0.999, 1e-8, 0.01, 1.0};
    qwen2_step_info_t ia, ib;
    assert_int_equal(qwen2_optimizer_step(a, &h, &ia, &e), ERR_OK);
    assert_int_equal(qwen2_optimizer_step(b, &h, &ib, &e), ERR_OK);
    pass_free(&pa), pass_free(&pb);
    pa = train_pass(a, &bt), pb = train_pass(b, &bt);
    assert_memory_equal(pa.logp, pb.logp, B * T * sizeof(float));
    assert_memory_equal(pa.grads, pb.grads, pa.n * sizeof(float));
    /* the saved activations shrink: sets 1.. and the backward scratch hold 2 rows, not 4 */
    qwen2_opts_t full = big;
    full.max_train_batch = 0;
    qwen2_model_t *c = model(&CFG, &full, 21);
    qwen2_mem_t ma, mc;
    qwen2_memory(a, &ma);
    qwen2_memory(c, &mc);
    if (!(ma.activations < mc.activations * 0.75))
        fail_msg("activations: max_train_batch 2 holds %zu bytes, max_batch 4 %zu", ma.activations,
                 mc.activations);
    pass_free(&pa), pass_free(&pb);
    qwen2_free(a), qwen2_free(b), qwen2_free(c);
}

static void test_training_beyond_max_train_batch_is_refused(void **state)
{
    (void)state;
    qwen2_opts_t o = {.max_batch = 4, .max_seq = T, .training = true, .heads = QWEN2_HEAD_LM,
                      .max_train_batch = B};
    qwen2_model_t *m = model(&CFG, &o, 22);
    int32_t ids[3 * T], tgt[3 * T];
    float lp[3 * T], seed[3 * T];
    for (int i = 0; i < 3 * T; i++)
        ids[i] = (i * 13 + 1) % CFG.vocab, seed[i] = -0.1f;
    qwen2_batch_t b3 = {3, T, ids, NULL, NULL};
    err_t e = ERR_INIT;
    assert_int_equal(qwen2_forward(m, &GRAD, &b3, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS, &e), ERR_INPUT);
    if (!strstr(e.msg, "max_train_batch 2"))
        fail_msg("the error does not name max_train_batch: %s", e.msg);
    /* nothing to go backward from */
    err_t e2 = ERR_INIT;
    assert_int_equal(qwen2_backward(m, &GRAD, &(qwen2_grad_in_t){seed, NULL, NULL, NULL}, &e2),
                     ERR_INPUT);
    /* the same rows without TRAIN are an inference forward: fine */
    err_t e3 = ERR_INIT;
    qwen2_next_token_targets(&b3, tgt);
    assert_int_equal(qwen2_forward(m, &GRAD, &b3, QWEN2_FWD_LOGITS, &e3), ERR_OK);
    assert_int_equal(qwen2_token_logprobs(m, tgt, lp, NULL, &e3), ERR_OK);
    /* and an option larger than max_batch is refused at open */
    qwen2_opts_t bad = o;
    bad.max_train_batch = 5;
    qwen2_model_t *x = NULL;
    err_t e4 = ERR_INIT;
    assert_int_equal(qwen2_new(be, &CFG, &bad, &x, &e4), ERR_INPUT);
    assert_null(x);
    qwen2_free(m);
}

/* ---- chunked logits ----------------------------------------------------------------------- */

/* The same training pass with logits in one piece and in chunks of `rows` rows. */
static void compare_chunked(const prec_policies_t *pol, int rows, double tol_lp, double tol_g)
{
    qwen2_opts_t one = {.max_batch = B, .max_seq = T, .training = true,
                        .heads = QWEN2_HEAD_LM | QWEN2_HEAD_VALUE};
    qwen2_opts_t chunked = one;
    chunked.logits_rows = rows;
    qwen2_model_t *a = model(&CFG, &one, 23), *b = model(&CFG, &chunked, 23);
    err_t e = ERR_INIT;
    if (pol && (qwen2_set_plan(a, &pol->plans[0], "test", &e) ||
                qwen2_set_plan(b, &pol->plans[0], "test", &e)))
        fail_msg("%s", e.msg);
    qwen2_batch_t bt = {B, T, IDS, NULL, LEN};
    pass_t pa = train_pass(a, &bt), pb = train_pass(b, &bt);
    double dl = max_diff(pa.logp, pb.logp, B * T), de = max_diff(pa.ent, pb.ent, B * T),
           dg = rel_l2(pb.grads, pa.grads, pa.n);
    if (!(dl <= tol_lp && de <= tol_lp && dg <= tol_g))
        fail_msg("chunks of %d rows: log-probs differ by %.3g, entropies by %.3g (at most %.3g), "
                 "gradients by %.3g relative (at most %.3g)", rows, dl, de, tol_lp, dg, tol_g);
    /* full logits of rows across chunk boundaries, read after the log-probs */
    const int r0 = 2, n = 9, V = CFG.vocab;
    float *la = malloc(sizeof(float) * n * V), *lb = malloc(sizeof(float) * n * V);
    int32_t tgt[B * T];
    float lp[B * T];
    qwen2_next_token_targets(&bt, tgt);
    if (qwen2_forward(a, &GRAD, &bt, QWEN2_FWD_LOGITS, &e) ||
        qwen2_forward(b, &GRAD, &bt, QWEN2_FWD_LOGITS, &e) ||
        qwen2_token_logprobs(b, tgt, lp, NULL, &e) || qwen2_logits_get(a, r0, n, la, &e) ||
        qwen2_logits_get(b, r0, n, lb, &e))
        fail_msg("%s", e.msg);
    double dlog = max_diff(la, lb, (size_t)n * V);
    if (!(dlog <= tol_lp))
        fail_msg("chunks of %d rows: logits rows [%d, %d) differ by %.3g", rows, r0, r0 + n, dlog);
    free(la), free(lb);
    pass_free(&pa), pass_free(&pb);
    qwen2_free(a), qwen2_free(b);
}

static void test_chunked_logits_match_one_piece(void **state)
{
    (void)state;
    /* fp32: only the order of the lm_head's weight-gradient sums changes */
    compare_chunked(NULL, 3, 1e-6, 1e-6);
    compare_chunked(NULL, 5, 1e-6, 1e-6);
    /* bf16 compute rounds each chunk's weight gradient before it is added up */
    prec_policies_t pol = parse_plans("{\"version\": 1, \"plans\": {\"Z\": {\"default\": \"bf16\", "
                                      "\"compute\": \"bf16\"}}}");
    compare_chunked(&pol, 4, 1e-6, 1e-2);
    prec_policies_free(&pol);
}

static void test_logits_rows_bound_the_buffer_and_cover_generation(void **state)
{
    (void)state;
    /* a 256-row logits budget on a batch of 8 x 64 rows: the activation buffer shrinks by
     * (512 - 256) rows of logits; generation over 8 rows still works */
    qwen2_opts_t o = {.max_batch = 8, .max_seq = 64, .heads = QWEN2_HEAD_LM, .kv_batch = 8,
                      .kv_len = 64};
    qwen2_opts_t c = o;
    c.logits_rows = 256;
    qwen2_model_t *a = model(&CFG, &o, 24), *b = model(&CFG, &c, 24);
    qwen2_mem_t ma, mb;
    qwen2_memory(a, &ma);
    qwen2_memory(b, &mb);
    assert_int_equal(ma.activations - mb.activations, (size_t)256 * CFG.vocab * sizeof(float));
    int32_t p0[3] = {4, 8, 15}, p1[2] = {16, 23};
    const int32_t *pr[2] = {p0, p1};
    int plen[2] = {3, 2}, la = 0, lb = 0;
    int32_t oa[2 * 6], ob[2 * 6];
    int lena[2], lenb[2];
    qwen2_gen_t g = {6, 0, 0, 1, 0, 0, NULL, 0};
    prec_ctx_t roll = {PREC_ROLLOUT, 0, 0};
    err_t e = ERR_INIT;
    assert_int_equal(qwen2_generate(a, &roll, 2, pr, plen, &g, oa, lena, &e), ERR_OK);
    assert_int_equal(qwen2_generate(b, &roll, 2, pr, plen, &g, ob, lenb, &e), ERR_OK);
    assert_memory_equal(oa, ob, sizeof oa);
    (void)la, (void)lb;
    /* the last step's logits stay readable after generation */
    float *x = malloc(sizeof(float) * 2 * CFG.vocab), *y = malloc(sizeof(float) * 2 * CFG.vocab);
    assert_int_equal(qwen2_logits_get(a, 0, 2, x, &e), ERR_OK);
    assert_int_equal(qwen2_logits_get(b, 0, 2, y, &e), ERR_OK);
    assert_memory_equal(x, y, sizeof(float) * 2 * CFG.vocab);
    free(x), free(y);
    qwen2_free(a), qwen2_free(b);
}

/* ---- frozen models ------------------------------------------------------------------------ */

static void test_frozen_model_frees_its_linear_weights_and_scores_the_same(void **state)
{
    (void)state;
    qwen2_config_t cfg = CFG;
    cfg.tie = false; /* an untied lm_head is freed too */
    qwen2_opts_t o = {.max_batch = B, .max_seq = T, .heads = QWEN2_HEAD_LM};
    qwen2_opts_t f = o;
    f.frozen = true;
    qwen2_model_t *a = model(&cfg, &o, 25), *b = model(&cfg, &f, 25);
    prec_policies_t pol = parse_plans("{\"version\": 1, \"plans\": {\"Z\": {\"default\": \"bf16\", "
                                      "\"compute\": \"bf16\"}}}");
    err_t e = ERR_INIT;
    assert_int_equal(qwen2_set_plan(a, &pol.plans[0], "test", &e), ERR_OK);
    assert_int_equal(qwen2_set_plan(b, &pol.plans[0], "test", &e), ERR_OK);
    qwen2_mem_t before, after;
    qwen2_memory(b, &before);
    size_t freed = 0;
    assert_int_equal(qwen2_freeze(b, PREC_REWARD, &freed, &e), ERR_OK);
    qwen2_memory(b, &after);
    /* every decoder linear weight and the lm_head: 3 x (32x32 + 2 x 16x32 + 32x32 + 3 x 48x32)
     * + 300x32 floats */
    const size_t lin = 3 * (32 * 32 + 2 * 16 * 32 + 32 * 32 + 3 * 48 * 32) + 300 * 32;
    assert_int_equal(freed, lin * sizeof(float));
    assert_int_equal(before.params - after.params, freed);
    /* reward-phase log-probs: the same bits as the model that kept its float32 weights */
    prec_ctx_t rew = {PREC_REWARD, 0, 0};
    qwen2_batch_t bt = {B, T, IDS, NULL, LEN};
    int32_t tgt[B * T];
    float la[B * T], lb[B * T];
    qwen2_next_token_targets(&bt, tgt);
    assert_int_equal(qwen2_forward(a, &rew, &bt, QWEN2_FWD_LOGITS, &e), ERR_OK);
    assert_int_equal(qwen2_token_logprobs(a, tgt, la, NULL, &e), ERR_OK);
    assert_int_equal(qwen2_forward(b, &rew, &bt, QWEN2_FWD_LOGITS, &e), ERR_OK);
    assert_int_equal(qwen2_token_logprobs(b, tgt, lb, NULL, &e), ERR_OK);
    assert_memory_equal(la, lb, sizeof la);
    /* what would need the freed weights is refused */
    err_t e1 = ERR_INIT, e2 = ERR_INIT, e3 = ERR_INIT, e4 = ERR_INIT;
    assert_int_equal(qwen2_forward(b, &GRAD, &bt, QWEN2_FWD_LOGITS, &e1), ERR_INPUT);
    const qwen2_tensor_t *q = qwen2_tensor_find(b, "model.layers.1.self_attn.q_proj.weight");
    float tmp[32];
    assert_int_equal(qwen2_params_get(b, q->off, tmp, 32, &e2), ERR_INPUT);
    mx_spec_t fp16 = mx_spec_default(MX_FP16);
    assert_int_equal(prec_table_set(qwen2_precision(b), "model.layers.0.mlp.up_proj", PREC_REWARD,
                                    PREC_OP_WEIGHT, &fp16, &e3), ERR_OK);
    assert_int_equal(qwen2_forward(b, &rew, &bt, QWEN2_FWD_LOGITS, &e3), ERR_INPUT);
    assert_int_equal(qwen2_init_philox(b, 1, 0.1f, &e4), ERR_INPUT);
    /* norms and biases stay readable */
    const qwen2_tensor_t *qb = qwen2_tensor_find(b, "model.layers.1.self_attn.q_proj.bias");
    err_t e5 = ERR_INIT;
    assert_int_equal(qwen2_params_get(b, qb->off, tmp, 32, &e5), ERR_OK);
    prec_policies_free(&pol);
    qwen2_free(a), qwen2_free(b);
}

static void test_frozen_model_under_fp32_keeps_its_weights(void **state)
{
    (void)state;
    /* fp32 weights under fp32 compute are read as they are: nothing can be freed */
    qwen2_opts_t f = {.max_batch = B, .max_seq = T, .heads = QWEN2_HEAD_SCORE, .frozen = true};
    qwen2_model_t *m = model(&CFG, &f, 26);
    size_t freed = 1;
    err_t e = ERR_INIT;
    assert_int_equal(qwen2_freeze(m, PREC_REWARD, &freed, &e), ERR_OK);
    assert_int_equal(freed, 0);
    qwen2_batch_t bt = {B, T, IDS, NULL, LEN};
    prec_ctx_t roll = {PREC_ROLLOUT, 0, 0};
    assert_int_equal(qwen2_forward(m, &roll, &bt, QWEN2_FWD_SCORES, &e), ERR_OK);
    qwen2_free(m);
    /* and a frozen model cannot train */
    qwen2_opts_t t = f;
    t.training = true;
    qwen2_model_t *x = NULL;
    assert_int_equal(qwen2_new(be, &CFG, &t, &x, &e), ERR_INPUT);
}

/* ---- the PPO memory table ----------------------------------------------------------------- */

static void test_ppo_memory_table_lists_each_model(void **state)
{
    (void)state;
    qwen2_opts_t o = {.max_batch = B, .max_seq = T, .training = true, .heads = QWEN2_HEAD_LM};
    qwen2_model_t *m = model(&CFG, &o, 27);
    qwen2_model_t *const ms[] = {m, NULL};
    const char *const names[] = {"policy", "critic"};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ppo_memory_write(f, be, ms, names, 2);
    fclose(f);
    /* a header, the policy's line (the critic is absent), the sum, and what the backend
       holds (be_mem: on the CPU its buffers, the policy's among them) */
    if (!strstr(text, "weight_cache") || !strstr(text, "policy") || strstr(text, "critic") ||
        !strstr(text, "models in all") || !strstr(text, "the cpu backend holds"))
        fail_msg("memory table:\n%s", text);
    free(text);
    qwen2_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_max_train_batch_gives_the_same_training_pass),
        cmocka_unit_test(test_training_beyond_max_train_batch_is_refused),
        cmocka_unit_test(test_chunked_logits_match_one_piece),
        cmocka_unit_test(test_logits_rows_bound_the_buffer_and_cover_generation),
        cmocka_unit_test(test_frozen_model_frees_its_linear_weights_and_scores_the_same),
        cmocka_unit_test(test_frozen_model_under_fp32_keeps_its_weights),
        cmocka_unit_test(test_ppo_memory_table_lists_each_model),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
