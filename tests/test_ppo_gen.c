/* Tests for what PPO added to src/model: the minimum-length rule and rollout-time
 * log-probs of qwen2_generate_ext, and the optimizer-state accessors checkpoints use. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/qwen2.h"
#include "support/testutil.h"

static backend_t *be;

static int setup(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    return be_cpu_open(&be, &e);
}

static int teardown(void **state)
{
    (void)state;
    be_close(be);
    return 0;
}

static qwen2_model_t *tiny(int B, int T, bool training, uint64_t seed)
{
    qwen2_config_t c = {.hidden = 32, .inter = 48, .layers = 2, .heads = 4, .kv_heads = 2,
                        .head_dim = 8, .vocab = 50, .max_pos = 64, .rope_theta = 10000,
                        .rms_eps = 1e-6, .tie = true, .dtype = ST_F32, .bos_id = -1, .pad_id = -1};
    qwen2_opts_t o = {.max_batch = B, .max_seq = T, .training = training,
                      .heads = QWEN2_HEAD_LM | (training ? QWEN2_HEAD_VALUE : 0), .kv_batch = B,
                      .kv_len = T, .head_seed = seed};
    qwen2_model_t *m;
    err_t e = ERR_INIT;
    if (qwen2_new(be, &c, &o, &m, &e) || qwen2_init_philox(m, seed, 0.5f, &e))
        fail_msg("%s", e.msg);
    return m;
}

static const prec_ctx_t ROLL = {PREC_ROLLOUT, 0, 0};

static void min_new_keeps_stop_ids_out_of_the_first_tokens(void **state)
{
    (void)state;
    enum { NEW = 10 };
    int32_t p[3] = {3, 17, 40}, plen = 3, out[NEW], out2[NEW];
    const int32_t *pp[1] = {p};
    int n, n2;
    qwen2_model_t *m = tiny(1, 16, false, 11);
    err_t e = ERR_INIT;
    qwen2_gen_t g = {NEW, 0.0, 0, 1.0, 0, 0, NULL, 0};
    assert_int_equal(qwen2_generate(m, &ROLL, 1, pp, &plen, &g, out, &n, &e), ERR_OK);
    /* the greedy token at step 1 becomes the stop id: without min_new the row ends there */
    int32_t stop = out[1];
    g.stop = &stop, g.nstop = 1;
    assert_int_equal(qwen2_generate(m, &ROLL, 1, pp, &plen, &g, out2, &n2, &e), ERR_OK);
    int first = 0;
    while (out[first] != stop)
        first++;
    assert_int_equal(n2, first + 1);
    qwen2_gen_ext_t x = {6, NULL};
    assert_int_equal(qwen2_generate_ext(m, &ROLL, 1, pp, &plen, &g, &x, out2, &n2, &e), ERR_OK);
    assert_true(n2 >= 6);
    for (int s = 0; s < 6; s++)
        if (out2[s] == stop)
            fail_msg("stop id %d drawn at step %d, before min_new 6", stop, s);
    assert_int_equal(out2[0], out[0]); /* before the first masked step nothing changes */
    /* sampling obeys it too, for any seed */
    g.temperature = 1.0;
    for (uint64_t seed = 1; seed < 6; seed++) {
        g.seed = seed;
        assert_int_equal(qwen2_generate_ext(m, &ROLL, 1, pp, &plen, &g, &x, out2, &n2, &e), ERR_OK);
        assert_true(n2 >= 6);
        for (int s = 0; s < 6; s++)
            assert_int_not_equal(out2[s], stop);
    }
    x.min_new = -1;
    assert_int_equal(qwen2_generate_ext(m, &ROLL, 1, pp, &plen, &g, &x, out2, &n2, &e), ERR_INPUT);
    qwen2_free(m);
}

static void rollout_logprobs_equal_a_full_forward(void **state)
{
    (void)state;
    enum { B = 2, NEW = 7, T = 16 };
    int32_t p0[4] = {5, 9, 13, 2}, p1[2] = {44, 7}, plen[B] = {4, 2}, out[B * NEW];
    const int32_t *pp[B] = {p0, p1};
    int out_len[B];
    float lp[B * NEW];
    qwen2_model_t *m = tiny(B, T, false, 12);
    err_t e = ERR_INIT;
    int32_t stop[2] = {1, 2};
    qwen2_gen_t g = {NEW, 1.0, 0, 1.0, 77, 0, stop, 2};
    qwen2_gen_ext_t x = {3, lp}; /* masked steps too: the log-prob is of the unmasked logits */
    assert_int_equal(qwen2_generate_ext(m, &ROLL, B, pp, plen, &g, &x, out, out_len, &e), ERR_OK);
    for (int b = 0; b < B; b++) {
        int32_t seq[T], tgt[T];
        float flp[T];
        int n = plen[b];
        memcpy(seq, pp[b], sizeof(int32_t) * n);
        memcpy(seq + n, out + b * NEW, sizeof(int32_t) * out_len[b]);
        int L = n + out_len[b];
        qwen2_batch_t bt = {1, L, seq, NULL, NULL};
        qwen2_next_token_targets(&bt, tgt);
        if (qwen2_forward(m, &ROLL, &bt, QWEN2_FWD_LOGITS, &e) ||
            qwen2_token_logprobs(m, tgt, flp, NULL, &e))
            fail_msg("%s", e.msg);
        for (int s = 0; s < out_len[b]; s++)
            if (!(fabsf(flp[n - 1 + s] - lp[b * NEW + s]) <= 1e-5f))
                fail_msg("row %d step %d: generate %.8g, forward %.8g", b, s, lp[b * NEW + s],
                         flp[n - 1 + s]);
        for (int s = out_len[b]; s < NEW; s++)
            assert_true(lp[b * NEW + s] == 0.0f);
    }
    qwen2_free(m);
}

/* one training step on a fixed batch: forward, loss gradient on values and log-probs */
static void train_step(qwen2_model_t *m, const qwen2_adamw_t *h)
{
    int32_t ids[2 * 6] = {1, 5, 9, 3, 4, 8, 2, 6, 7, 30, 31, 32}, tgt[12];
    float lp[12], dl[12], dv[12];
    qwen2_batch_t b = {2, 6, ids, NULL, NULL};
    prec_ctx_t g = {PREC_GRADIENT, 0, 0};
    err_t e = ERR_INIT;
    qwen2_next_token_targets(&b, tgt);
    if (qwen2_forward(m, &g, &b, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS | QWEN2_FWD_VALUES, &e) ||
        qwen2_token_logprobs(m, tgt, lp, NULL, &e))
        fail_msg("%s", e.msg);
    for (int i = 0; i < 12; i++) {
        dl[i] = tgt[i] >= 0 ? -0.1f : 0;
        dv[i] = 0.05f * (float)(i % 3);
    }
    qwen2_zero_grads(m);
    qwen2_step_info_t info;
    if (qwen2_backward(m, &g, &(qwen2_grad_in_t){dl, NULL, dv, NULL}, &e) ||
        qwen2_optimizer_step(m, h, &info, &e))
        fail_msg("%s", e.msg);
}

static void optimizer_state_round_trip_resumes_to_the_same_bits(void **state)
{
    (void)state;
    qwen2_adamw_t h = {1e-2, 0.9, 0.999, 1e-8, 0.01, 1.0};
    qwen2_model_t *a = tiny(2, 8, true, 13), *b = tiny(2, 8, true, 99);
    train_step(a, &h);
    train_step(a, &h);
    size_t n = qwen2_nparams(a);
    float *p = malloc(n * sizeof *p), *m1 = malloc(n * sizeof *m1), *m2 = malloc(n * sizeof *m2);
    err_t e = ERR_INIT;
    qwen2_opt_state_t st;
    assert_int_equal(qwen2_params_get(a, 0, p, n, &e), 0);
    assert_int_equal(qwen2_moments_get(a, 0, m1, m2, n, &e), 0);
    qwen2_opt_state_get(a, &st);
    assert_int_equal(st.step, 2);
    assert_true(st.loss_scale == 1.0);
    assert_int_equal(qwen2_params_set(b, 0, p, n, &e), 0);
    assert_int_equal(qwen2_moments_set(b, 0, m1, m2, n, &e), 0);
    assert_int_equal(qwen2_opt_state_set(b, &st, &e), 0);
    train_step(a, &h);
    train_step(b, &h);
    float *pa = malloc(n * sizeof *pa), *pb = malloc(n * sizeof *pb);
    assert_int_equal(qwen2_params_get(a, 0, pa, n, &e), 0);
    assert_int_equal(qwen2_params_get(b, 0, pb, n, &e), 0);
    assert_memory_equal(pa, pb, n * sizeof *pa);
    assert_memory_not_equal(pa, p, n * sizeof *pa);
    st.loss_scale = -1;
    assert_int_equal(qwen2_opt_state_set(b, &st, &e), ERR_INPUT);
    assert_int_equal(qwen2_moments_get(a, n - 2, m1, m2, 5, &e), ERR_INPUT);
    free(p), free(m1), free(m2), free(pa), free(pb);
    qwen2_free(a);
    qwen2_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(min_new_keeps_stop_ids_out_of_the_first_tokens),
        cmocka_unit_test(rollout_logprobs_equal_a_full_forward),
        cmocka_unit_test(optimizer_state_round_trip_resumes_to_the_same_bits),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
