/* The peer check at full size: a checkpoint with Qwen2.5-0.5B's exact config (hidden 896,
 * intermediate 4864, 24 layers, 14 heads, 2 KV heads, vocab 151936, rope_theta 1e6, tied),
 * its weights rebuilt from the Philox rule of qwen2_init_philox, must give the log-probs
 * transformers computed (in float64) for the same weights: tests/fixtures/model/
 * qwen05b_philox.json, made by scripts/peer/engine_peer.py. About 2 GB of memory. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/qwen2.h"
#include "support/testutil.h"
#include "util/json.h"

static void test_qwen05b_config_philox_checkpoint_matches_transformers(void **state)
{
    cJSON *ref;
    err_t e = ERR_INIT;
    if (json_load_file("tests/fixtures/model/qwen05b_philox.json", 1 << 20, &ref, &e))
        fail_msg("%s", e.msg);
    /* the config as transformers' config.json spells it, through our parser */
    cJSON *cj = cJSON_GetObjectItem(ref, "config");
    char *text = cJSON_PrintUnformatted(cj);
    qwen2_config_t c;
    if (qwen2_config_parse(text, strlen(text), "qwen05b_philox.json: config", &c, &e))
        fail_msg("%s", e.msg);
    free(text);
    assert_int_equal(c.hidden, 896);
    assert_int_equal(c.inter, 4864);
    assert_int_equal(c.layers, 24);
    assert_int_equal(c.heads, 14);
    assert_int_equal(c.kv_heads, 2);
    assert_int_equal(c.vocab, 151936);
    assert_true(c.rope_theta == 1e6 && c.tie && c.rms_eps == 1e-6);
    const cJSON *ids = cJSON_GetObjectItem(ref, "ids");
    const int B = cJSON_GetArraySize(ids), T = cJSON_GetArraySize(ids->child);
    int32_t *tok = malloc(sizeof(int32_t) * B * T), *tgt = malloc(sizeof(int32_t) * B * T);
    float *logp = malloc(sizeof(float) * B * T);
    int b = 0;
    for (const cJSON *r = ids->child; r; r = r->next, b++) {
        int t = 0;
        for (const cJSON *v = r->child; v; v = v->next, t++)
            tok[b * T + t] = v->valueint;
    }
    backend_t *be;
    assert_int_equal(be_open("cpu", &be, &e), ERR_OK);
    qwen2_opts_t o = {.max_batch = B, .max_seq = T};
    qwen2_model_t *m;
    const cJSON *ph = cJSON_GetObjectItem(ref, "philox");
    if (qwen2_new(be, &c, &o, &m, &e) ||
        qwen2_init_philox(m, (uint64_t)cJSON_GetObjectItem(ph, "seed")->valuedouble,
                          (float)cJSON_GetObjectItem(ph, "range")->valuedouble, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(qwen2_nparams(m) >= 494032768, 1);
    qwen2_batch_t bt = {B, T, tok, NULL, NULL};
    qwen2_next_token_targets(&bt, tgt);
    prec_ctx_t ctx = {PREC_REWARD, 0, 0};
    if (qwen2_forward(m, &ctx, &bt, QWEN2_FWD_LOGITS, &e) || qwen2_token_logprobs(m, tgt, logp, NULL, &e))
        fail_msg("%s", e.msg);
    double worst = 0;
    b = 0;
    for (const cJSON *r = cJSON_GetObjectItem(ref, "next_token_logprobs")->child; r; r = r->next, b++) {
        int t = 0;
        for (const cJSON *v = r->child; v; v = v->next, t++) {
            double d = fabs(v->valuedouble - logp[b * T + t]);
            worst = d > worst ? d : worst;
            if (!(d <= 1e-4))
                fail_msg("logp(%d, %d): transformers %.9g, engine %.9g", b, t, v->valuedouble,
                         logp[b * T + t]);
        }
    }
    print_message("qwen2.5-0.5B config, Philox weights: max |logp - transformers fp64| = %.3g\n", worst);
    qwen2_free(m);
    be_close(be);
    free(tok), free(tgt), free(logp);
    cJSON_Delete(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen05b_config_philox_checkpoint_matches_transformers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
