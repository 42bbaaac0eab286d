/* Tests for src/rlhf/rm: the Bradley-Terry reward model, its metrics file, its directory,
 * and the shuffled-label negative control, on the tiny fixture of test_sft_tiny.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rlhf/rm.h"
#include "test_sft_tiny.h"
#include "util/fs.h"
#include "util/json.h"

#define NTRAIN 600
#define NEVAL 400

static tiny_t T;
static rlhf_rm_result_t R_real, R_shuffled;
static char *real_dir, *shuffled_dir;

static void rm_opts(rlhf_rm_opts_t *o, bool shuffle)
{
    rlhf_rm_opts_default(o);
    o->steps = 100;
    o->batch_size = 8;
    o->optim.lr = 3e-3;
    o->optim.warmup_steps = 5;
    o->log_every = 0;
    o->shuffle_labels = shuffle;
}

static void train(bool shuffle, const char *dir, rlhf_rm_result_t *r)
{
    const data_pair_t **tr = tiny_pairs(&T, 0, NTRAIN), **ev = tiny_pairs(&T, NTRAIN, NEVAL);
    rlhf_rm_opts_t o;
    rm_opts(&o, shuffle);
    err_t e = ERR_INIT;
    int rc = rlhf_rm_run(T.be, &o, shuffle ? "control" : "rm", T.base, tr, NTRAIN, ev, NEVAL, dir,
                         NULL, r, &e);
    free(tr);
    free(ev);
    if (rc)
        fail_msg("%s", e.msg);
}

/* Both reward models are trained once for the whole file (the slow part). */
static int group_setup(void **state)
{
    (void)state;
    tiny_setup(&T, 300, NTRAIN + NEVAL, 400, 0);
    real_dir = fs_join(T.dir, "rm");
    shuffled_dir = fs_join(T.dir, "rm_shuffled");
    train(false, real_dir, &R_real);
    train(true, shuffled_dir, &R_shuffled);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(real_dir);
    free(shuffled_dir);
    tiny_teardown(&T);
    return 0;
}

static void reward_model_accuracy_rises_above_chance(void **state)
{
    (void)state;
    print_message("eval accuracy on %d pairs: reward model %.4f, shuffled-label control %.4f\n",
                  NEVAL, R_real.eval.accuracy, R_shuffled.eval.accuracy);
    assert_int_equal(R_real.eval.pairs, NEVAL);
    if (!(R_real.eval.accuracy >= 0.68))
        fail_msg("expected eval accuracy >= 0.68 on %d held-out synthetic pairs, got %.4f", NEVAL,
                 R_real.eval.accuracy);
    if (!(R_real.eval.margin > 0))
        fail_msg("expected a positive mean margin, got %.4f", R_real.eval.margin);
    if (!(R_real.eval.loss < log(2.0)))
        fail_msg("expected the eval loss below log 2 = 0.693, got %.4f", R_real.eval.loss);
}

static void shuffled_labels_stay_near_chance(void **state)
{
    (void)state;
    double a = R_shuffled.eval.accuracy;
    if (!(a >= 0.40 && a <= 0.60))
        fail_msg("expected the shuffled-label control within [0.40, 0.60] on %d pairs, got %.4f "
                 "(the real model got %.4f)", NEVAL, a, R_real.eval.accuracy);
    if (!(R_real.eval.accuracy - a >= 0.12))
        fail_msg("expected the real model 0.12 above the control, got %.4f vs %.4f",
                 R_real.eval.accuracy, a);
}

static void metrics_file_uses_trl_names(void **state)
{
    (void)state;
    char *path = fs_join(real_dir, "rm_metrics.json");
    cJSON *j;
    err_t e = ERR_INIT;
    assert_int_equal(json_load_file(path, 1 << 20, &j, &e), 0);
    const char *keys[] = {"accuracy", "margin", "mean_reward", "min_reward", "max_reward", "loss",
                          "num_tokens"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[i]);
        if (!cJSON_IsNumber(v))
            fail_msg("expected a number \"%s\" in %s", keys[i], path);
    }
    assert_true(fabs(cJSON_GetObjectItem(j, "accuracy")->valuedouble - R_real.eval.accuracy) < 1e-12);
    const cJSON *mn = cJSON_GetObjectItem(j, "min_reward"), *mx = cJSON_GetObjectItem(j, "max_reward"),
                *mean = cJSON_GetObjectItem(j, "mean_reward");
    assert_true(mn->valuedouble <= mean->valuedouble && mean->valuedouble <= mx->valuedouble);
    assert_string_equal(cJSON_GetObjectItem(j, "eval_split")->valuestring, "rm_eval");
    cJSON_Delete(j);
    free(path);
}

static void directory_is_a_sequence_classifier_that_reloads_with_identical_scores(void **state)
{
    (void)state;
    char *cfg = fs_join(real_dir, "config.json");
    cJSON *j;
    err_t e = ERR_INIT;
    assert_int_equal(json_load_file(cfg, 1 << 20, &j, &e), 0);
    const cJSON *arch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "architectures"), 0);
    assert_string_equal(arch->valuestring, "Qwen2ForSequenceClassification");
    /* transformers reads the score at the last token that is not pad_token_id: the pad id
     * must not be the end-of-turn token our sequences end with */
    tok_t *tok;
    assert_int_equal(tok_load(T.tok, &tok, &e), 0);
    const cJSON *pad = cJSON_GetObjectItem(j, "pad_token_id");
    assert_true(cJSON_IsNumber(pad));
    assert_int_equal((int)pad->valuedouble, tok_token_id(tok, "<|im_end|>"));
    tok_free(tok);
    cJSON_Delete(j);
    free(cfg);

    const data_pair_t **ev = tiny_pairs(&T, NTRAIN, NEVAL);
    rlhf_rm_opts_t o;
    rm_opts(&o, false);
    rlhf_rm_metrics_t m;
    float *c = malloc(NEVAL * sizeof *c), *r = malloc(NEVAL * sizeof *r);
    assert_int_equal(rlhf_rm_evaluate_dir(T.be, &o, real_dir, ev, NEVAL, &m, c, r, &e), 0);
    if (m.accuracy != R_real.eval.accuracy || m.loss != R_real.eval.loss)
        fail_msg("expected the reloaded model to reproduce accuracy %.17g and loss %.17g, got "
                 "%.17g and %.17g", R_real.eval.accuracy, R_real.eval.loss, m.accuracy, m.loss);
    long correct = 0;
    for (int i = 0; i < NEVAL; i++)
        correct += c[i] > r[i];
    assert_int_equal(correct, (long)llround(m.accuracy * NEVAL));
    free(c);
    free(r);
    free(ev);
}

static void max_epochs_caps_the_steps_on_a_small_set(void **state)
{
    (void)state;
    const data_pair_t **tr = tiny_pairs(&T, 0, 20), **ev = tiny_pairs(&T, NTRAIN, 8);
    rlhf_rm_opts_t o;
    rm_opts(&o, false);
    o.max_epochs = 1.5; /* 20 pairs, batches of 8: ceil(1.5 * 20 / 8) = 4 of the 100 steps */
    char *dir = fs_join(T.dir, "rm_capped");
    rlhf_rm_result_t r;
    err_t e = ERR_INIT;
    if (rlhf_rm_run(T.be, &o, "capped", T.base, tr, 20, ev, 8, dir, NULL, &r, &e))
        fail_msg("%s", e.msg);
    if (r.steps != 4)
        fail_msg("expected 4 steps (1.5 epochs of 20 pairs), got %ld", r.steps);
    free(dir);
    free(tr);
    free(ev);
}

static void evaluating_a_causal_lm_directory_is_refused(void **state)
{
    (void)state;
    const data_pair_t **ev = tiny_pairs(&T, NTRAIN, 8);
    rlhf_rm_opts_t o;
    rm_opts(&o, false);
    rlhf_rm_metrics_t m;
    err_t e = ERR_INIT;
    assert_int_equal(rlhf_rm_evaluate_dir(T.be, &o, T.base, ev, 8, &m, NULL, NULL, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "score head"));
    free(ev);
}

int main(int argc, char **argv)
{
    (void)argc;
    tiny_omp_passive(argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reward_model_accuracy_rises_above_chance),
        cmocka_unit_test(shuffled_labels_stay_near_chance),
        cmocka_unit_test(metrics_file_uses_trl_names),
        cmocka_unit_test(directory_is_a_sequence_classifier_that_reloads_with_identical_scores),
        cmocka_unit_test(max_epochs_caps_the_steps_on_a_small_set),
        cmocka_unit_test(evaluating_a_causal_lm_directory_is_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
