/* Tests for src/rlhf/ppo (the trainer), its checkpoints and options, `mxrlhf ppo` and
 * `mxrlhf baseline`, on tiny random models with the small synthetic tokenizer. The
 * arithmetic itself is tested in test_ppo_math.c. */
#include <fcntl.h>
#include <glob.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "model/qwen2.h"
#include "pipeline/baseline.h"
#include "rlhf/ppo.h"
#include "rlhf/ppo_data.h"
#include "support/testutil.h"
#include "tokenizer/tokenizer.h"
#include "util/atomic_file.h"
#include "util/fs.h"
#include "util/json.h"

#define TOKFILE "tests/fixtures/tokenizer/small_synthetic.json"

static char *root;      /* temp dir with pol/, rm/, rm_nan/ and the prompts */
static backend_t *be;
static ppo_prompts_t prompts;

static char *path2(const char *a, const char *b)
{
    char *p = fs_join(a, b);
    assert_non_null(p);
    return p;
}

/* A tiny Qwen2 on the small tokenizer's vocabulary, saved with tokenizer.json. */
static void make_model(const char *dir, unsigned heads, uint64_t seed, bool nan_score)
{
    err_t e = ERR_INIT;
    tok_t *tok;
    if (tok_load(TOKFILE, &tok, &e))
        fail_msg("%s", e.msg);
    qwen2_config_t c = {.hidden = 32, .inter = 48, .layers = 2, .heads = 4, .kv_heads = 2,
                        .head_dim = 8, .vocab = tok_vocab_size(tok), .max_pos = 128,
                        .rope_theta = 10000, .rms_eps = 1e-6, .tie = true, .dtype = ST_F32,
                        .bos_id = -1, .pad_id = -1};
    qwen2_opts_t o = {.max_batch = 1, .max_seq = 8, .heads = heads, .head_seed = seed};
    qwen2_model_t *m;
    if (qwen2_new(be, &c, &o, &m, &e) || qwen2_init_philox(m, seed, 0.3f, &e))
        fail_msg("%s", e.msg);
    if (nan_score) {
        /* NaN weights are refused at load: finite weights whose score overflows instead
         * (every final-norm output x 1e30, times 1e38, is +-Inf, and their sum Inf or NaN) */
        const char *names[2] = {"model.norm.weight", "score.weight"};
        const float big[2] = {1e30f, 1e38f};
        for (int k = 0; k < 2; k++) {
            const qwen2_tensor_t *t = qwen2_tensor_find(m, names[k]);
            assert_non_null(t);
            float *v = malloc(t->numel * sizeof *v);
            for (size_t i = 0; i < t->numel; i++)
                v[i] = big[k];
            assert_int_equal(qwen2_params_set(m, t->off, v, t->numel, &e), 0);
            free(v);
        }
    }
    if (qwen2_save_dir(m, dir, ST_F32, &e))
        fail_msg("%s", e.msg);
    qwen2_free(m);
    tok_free(tok);
    char *buf, *dst = path2(dir, "tokenizer.json");
    size_t n;
    assert_int_equal(fs_read_all(TOKFILE, 1 << 24, &buf, &n, &e), 0);
    assert_int_equal(atomic_write(dst, buf, n, &e), 0);
    free(buf);
    free(dst);
}

/* Small but complete: every phase, two optimizer steps per epoch, evaluation, best-of-n. */
static void tiny_opts(ppo_opts_t *o)
{
    ppo_opts_default(o);
    o->steps = 3;
    o->batch_size = 4;
    o->mini_batch_size = 2;
    o->ppo_epochs = 2;
    o->max_new_tokens = 10;
    o->min_new_tokens = 2;
    o->max_prompt_tokens = 40;
    o->learning_rate = 1e-3;
    o->eval_prompts = 3;
    o->best_of_n = 2;
    o->checkpoint_every = 2;
}

static int setup(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    if (be_cpu_open(&be, &e))
        return 1;
    root = test_mkdtemp();
    char *pol = path2(root, "pol"), *rm = path2(root, "rm"), *rmn = path2(root, "rm_nan"),
         *work = path2(root, "data"), *tok = path2(pol, "tokenizer.json");
    make_model(pol, QWEN2_HEAD_LM, 11, false);
    make_model(rm, QWEN2_HEAD_SCORE, 12, false);
    make_model(rmn, QWEN2_HEAD_SCORE, 12, true);
    ppo_data_opts_t d = {NULL, false, 60, 1234, tok, RLHF_TEMPLATE_RAW, work};
    if (ppo_prompts_load(&d, &prompts, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    free(pol), free(rm), free(rmn), free(work), free(tok);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ppo_prompts_free(&prompts);
    test_rmtree(root);
    free(root);
    be_close(be);
    return 0;
}

static int run(const ppo_opts_t *o, const char *out, const char *rm, bool resume, err_t *e)
{
    char *pol = path2(root, "pol"), *rmd = path2(root, rm), *od = path2(root, out);
    rlhf_ppo_io_t io = {be, pol, NULL, rmd, NULL, od, NULL, NULL,
                        (const char *const *)prompts.train, prompts.ntrain,
                        (const char *const *)prompts.eval, prompts.neval, true, NULL, resume, NULL,
                        NULL, NULL, NULL};
    rlhf_ppo_result_t res;
    int rc = rlhf_ppo_run(o, &io, &res, e);
    free(pol), free(rmd), free(od);
    return rc;
}

static cJSON *load(const char *dir, const char *name)
{
    char *d = path2(root, dir), *p = path2(d, name);
    cJSON *j = NULL;
    err_t e = ERR_INIT;
    if (json_load_file(p, 1 << 26, &j, &e))
        fail_msg("%s", e.msg);
    free(d), free(p);
    return j;
}

/* training_stats.json without the "time/..." entries (wall-clock, never reproducible) */
static cJSON *stats_no_time(const char *dir)
{
    cJSON *j = load(dir, PPO_STATS_JSON), *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(j, "steps"))
    {
        for (cJSON *it = s->child; it;) {
            cJSON *next = it->next;
            if (!strncmp(it->string, "time/", 5))
                cJSON_Delete(cJSON_DetachItemViaPointer(s, it));
            it = next;
        }
    }
    return j;
}

static void expect_same_stats(const char *a, const char *b)
{
    cJSON *x = stats_no_time(a), *y = stats_no_time(b);
    if (!cJSON_Compare(x, y, true)) {
        char *sx = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(x, "steps"));
        char *sy = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(y, "steps"));
        fail_msg("training_stats.json of %s and %s differ:\n%.1500s\n---\n%.1500s", a, b, sx, sy);
    }
    cJSON_Delete(x);
    cJSON_Delete(y);
}

static void expect_same_file(const char *a, const char *b, const char *name)
{
    char *da = path2(root, a), *db = path2(root, b), *pa = path2(da, name), *pb = path2(db, name);
    char *x, *y;
    size_t nx, ny;
    err_t e = ERR_INIT;
    assert_int_equal(fs_read_all(pa, 1 << 28, &x, &nx, &e), 0);
    assert_int_equal(fs_read_all(pb, 1 << 28, &y, &ny, &e), 0);
    if (nx != ny || memcmp(x, y, nx))
        fail_msg("%s and %s differ", pa, pb);
    free(x), free(y), free(da), free(db), free(pa), free(pb);
}

/* A configuration file of these PPO options under root (caller frees the path). */
static char *write_config(const ppo_opts_t *o, const char *name)
{
    err_t e = ERR_INIT;
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddItemToObject(cfg, "ppo", opts_to_json(&ppo_opts_table, o));
    char *p = path2(root, name);
    assert_int_equal(json_write_file(p, cfg, true, &e), 0);
    cJSON_Delete(cfg);
    return p;
}

/* One plan, B16: bf16 compute, nothing quantized. */
static const char *const B16_PLANS = "{\"version\": 1, \"plans\": {\"B16\": {\"default\": "
                                     "\"fp32\", \"compute\": \"bf16\", \"rules\": []}}}";

/* ---- tests -------------------------------------------------------------------------------- */

static void same_seed_gives_identical_training_stats(void **state)
{
    (void)state;
    ppo_opts_t o;
    tiny_opts(&o);
    err_t e = ERR_INIT;
    /* Same thread count: the CPU backend's OpenBLAS GEMMs are not yet bit-identical across
     * thread counts (docs/ppo.md, "Determinism"); PPO's own randomness never depends on it. */
    if (run(&o, "det1", "rm", false, &e) || run(&o, "det2", "rm", false, &e))
        fail_msg("%s", e.msg);
    expect_same_stats("det1", "det2");
    expect_same_file("det1", "det2", "policy/model.safetensors");
    /* the run did train: the stats are real numbers and the policy moved away from the SFT */
    cJSON *j = load("det1", PPO_STATS_JSON);
    cJSON *steps = cJSON_GetObjectItemCaseSensitive(j, "steps");
    assert_int_equal(cJSON_GetArraySize(steps), 3);
    cJSON *s3 = cJSON_GetArrayItem(steps, 2);
    const char *keys[] = {"objective/kl", "objective/kl_coef", "objective/entropy", "ppo/loss/policy",
                          "ppo/loss/value", "ppo/policy/approxkl", "ppo/policy/clipfrac",
                          "ppo/returns/mean", "ppo/val/vpred", "ppo/val/error", "env/reward_mean",
                          "env/reward_std", "tokens/responses_len_mean", "data_synth_score",
                          "rollout/logprob_gap_mean", "time/ppo/total"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(s3, keys[i])))
            fail_msg("step 3 lacks a number for %s", keys[i]);
    double kl3 = cJSON_GetObjectItemCaseSensitive(s3, "objective/kl")->valuedouble;
    double kl1 = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(steps, 0), "objective/kl")->valuedouble;
    assert_true(kl1 == 0.0); /* the policy starts as the reference */
    assert_true(kl3 != 0.0);
    assert_true(fabs(cJSON_GetObjectItemCaseSensitive(s3, "rollout/logprob_gap_mean")->valuedouble) < 1e-4);
    cJSON_Delete(j);
    /* another seed, other samples */
    o.seed = 43;
    if (run(&o, "det3", "rm", false, &e))
        fail_msg("%s", e.msg);
    cJSON *x = stats_no_time("det1"), *y = stats_no_time("det3");
    assert_false(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(x, "steps"),
                               cJSON_GetObjectItemCaseSensitive(y, "steps"), true));
    cJSON_Delete(x);
    cJSON_Delete(y);
}

static void min_new_tokens_and_every_kl_estimator_run(void **state)
{
    (void)state;
    ppo_opts_t o;
    tiny_opts(&o);
    o.steps = 1;
    o.eval_prompts = 0;
    o.min_new_tokens = 7;
    const char *ests[] = {"full", "k3", "abs", "mse"};
    for (int k = 0; k < 4; k++) {
        err_t e = ERR_INIT;
        assert_int_equal(ppo_kl_est_from_name(ests[k], &o.kl_penalty), 0);
        char out[32];
        snprintf(out, sizeof out, "kl_%s", ests[k]);
        if (run(&o, out, "rm", false, &e))
            fail_msg("%s: %s", ests[k], e.msg);
        cJSON *j = load(out, PPO_STATS_JSON);
        cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "steps"), 0);
        /* the policy is the reference at step 1: every estimator gives 0 */
        double kl = cJSON_GetObjectItemCaseSensitive(s, "objective/kl")->valuedouble;
        if (!(fabs(kl) < 1e-5))
            fail_msg("%s: KL %g at step 1, expected 0", ests[k], kl);
        cJSON_Delete(j);
        /* no response is shorter than min_new_tokens */
        char *d = path2(root, out), *p = path2(d, "samples.jsonl"), *text;
        size_t n;
        err_t e2 = ERR_INIT;
        assert_int_equal(fs_read_all(p, 1 << 24, &text, &n, &e2), 0);
        int lines = 0;
        for (char *l = text; *l; lines++) {
            char *nl = strchr(l, '\n');
            cJSON *row = cJSON_ParseWithLength(l, (size_t)(nl - l));
            assert_true(cJSON_GetObjectItemCaseSensitive(row, "tokens")->valuedouble >= 7);
            cJSON_Delete(row);
            l = nl + 1;
        }
        assert_int_equal(lines, 4);
        free(text), free(p), free(d);
    }
}

/* Runs `mxrlhf ppo` in a child process and SIGKILLs it once a mid-run checkpoint exists. */
static void kill_and_resume_gives_identical_results(void **state)
{
    (void)state;
    ppo_opts_t o;
    tiny_opts(&o);
    o.steps = 12; /* checkpoints at 2, 4, ..., 12: the kill lands well before the end */
    char *cfgp = write_config(&o, "kill.json");
    char *pol = path2(root, "pol"), *rm = path2(root, "rm"), *full = path2(root, "full"),
         *killed = path2(root, "killed");
    const char *bin = getenv("MXRLHF_BIN");
    if (!bin || !*bin)
        bin = "build/asan/mxrlhf";
    char common[4096];
    snprintf(common, sizeof common, "ppo --policy-model %s --reward-model %s --pairs 60 --config %s",
             pol, rm, cfgp);
    char *log = NULL;
    if (test_cli(&log, "%s --output %s", common, full))
        fail_msg("uninterrupted run failed:\n%s", log);
    free(log);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1), dup2(fd, 2);
        execl(bin, bin, "ppo", "--policy-model", pol, "--reward-model", rm, "--pairs", "60",
              "--config", cfgp, "--output", killed, (char *)NULL);
        _exit(127);
    }
    char *latest = path2(killed, "checkpoints/latest.json");
    bool killed_mid_run = false;
    for (int i = 0; i < 60000; i++) { /* up to 5 minutes */
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            break;
        cJSON *j = NULL;
        err_t ig = ERR_INIT;
        if (fs_exists(latest) && !json_load_file(latest, 4096, &j, &ig)) {
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "step");
            bool mid = cJSON_IsNumber(s) && s->valuedouble >= 2 && s->valuedouble <= 8;
            cJSON_Delete(j);
            if (mid) {
                /* at once: the run is already in the step after the checkpoint, and waiting
                 * here raced the run's end on an idle machine */
                kill(pid, SIGKILL);
                waitpid(pid, &st, 0);
                killed_mid_run = WIFSIGNALED(st);
                break;
            }
        }
        nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL);
    }
    if (!killed_mid_run)
        fail_msg("the run could not be killed between checkpoints (it finished too fast)");
    char *stats = path2(killed, PPO_STATS_JSON);
    assert_false(fs_exists(stats)); /* a killed run has no final statistics */
    if (test_cli(&log, "%s --output %s --resume", common, killed))
        fail_msg("resume failed:\n%s", log);
    free(log);
    expect_same_stats("full", "killed");
    expect_same_file("full", "killed", "policy/model.safetensors");
    expect_same_file("full", "killed", "eval.json");
    free(cfgp), free(pol), free(rm), free(full), free(killed), free(latest), free(stats);
}

static void non_finite_score_stops_and_keeps_the_last_checkpoint(void **state)
{
    (void)state;
    ppo_opts_t o;
    tiny_opts(&o);
    o.steps = 2;
    o.checkpoint_every = 1;
    o.eval_prompts = 0;
    err_t e = ERR_INIT;
    if (run(&o, "nan", "rm", false, &e))
        fail_msg("%s", e.msg);
    /* a resume is this run, so it cannot swap in a reward model that answers NaN: a new
     * run against one, into the same directory, stops at its first step */
    o.steps = 4;
    assert_int_equal(run(&o, "nan", "rm_nan", false, &e), ERR_FAIL);
    if (!strstr(e.msg, "step 1") || !strstr(e.msg, "not finite"))
        fail_msg("expected the error to name step 1 and the non-finite value, got: %s", e.msg);
    cJSON *l = load("nan", "checkpoints/latest.json");
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(l, "step")->valuedouble, 2);
    cJSON_Delete(l);
    /* and the checkpoint is usable: resuming with the good reward model finishes */
    err_t e2 = ERR_INIT;
    if (run(&o, "nan", "rm", true, &e2))
        fail_msg("%s", e2.msg);
}

static void precision_plan_applies_per_phase_and_shows_in_the_logprob_gap(void **state)
{
    (void)state;
    const char *plans = "{\"version\": 1, \"plans\": {\"R4\": {\"default\": \"fp32\", "
                        "\"compute\": \"bf16\", \"rules\": [{\"phase\": \"rollout\", "
                        "\"operand\": [\"weight\", \"input\"], \"spec\": \"mxfp4_e2m1/32\"}]}}}";
    char *pp = path2(root, "plans.json"), *pol = path2(root, "pol"), *rm = path2(root, "rm"),
         *od = path2(root, "plan");
    test_write_file(pp, plans, strlen(plans));
    ppo_opts_t o;
    tiny_opts(&o);
    o.steps = 1;
    o.eval_prompts = 0;
    rlhf_ppo_io_t io = {be, pol, NULL, rm, NULL, od, pp, "R4",
                        (const char *const *)prompts.train, prompts.ntrain,
                        (const char *const *)prompts.eval, prompts.neval, true, NULL, false, NULL,
                        NULL, NULL, NULL};
    err_t e = ERR_INIT;
    rlhf_ppo_result_t res;
    if (rlhf_ppo_run(&o, &io, &res, &e))
        fail_msg("%s", e.msg);
    const char *roles[] = {"precision_policy.json", "precision_reference.json",
                           "precision_reward.json"};
    for (int i = 0; i < 3; i++) {
        char *p = path2(od, roles[i]);
        assert_true(fs_exists(p));
        free(p);
    }
    /* MXFP4 rollouts against bf16 training-time log-probs: a visible gap (fp32 gives ~1e-7) */
    cJSON *j = load("plan", PPO_STATS_JSON);
    cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "steps"), 0);
    double gap = cJSON_GetObjectItemCaseSensitive(s, "rollout/logprob_gap_abs_mean")->valuedouble;
    if (!(gap > 1e-3))
        fail_msg("expected a rollout/training log-prob gap above 1e-3 under MXFP4 rollouts, got %g", gap);
    /* the default (TRL) run has no rollout-correction statistics */
    assert_null(cJSON_GetObjectItemCaseSensitive(s, "rollout_corr/kl"));
    double loss_none = cJSON_GetObjectItemCaseSensitive(s, "ppo/loss/policy")->valuedouble;
    double gap_mean = cJSON_GetObjectItemCaseSensitive(s, "rollout/logprob_gap_mean")->valuedouble;
    cJSON_Delete(j);
    /* the same run with each correction: finite statistics, the same rollouts (the KL is
     * the log-prob gap), and a policy loss the weights changed */
    const ppo_rc_t modes[2] = {PPO_RC_TIS, PPO_RC_SEQ_TIS};
    for (int k = 0; k < 2; k++) {
        char *dir = path2(root, k ? "plan_seq_tis" : "plan_tis");
        o.rollout_correction = modes[k];
        io.out_dir = dir;
        if (rlhf_ppo_run(&o, &io, &res, &e))
            fail_msg("%s", e.msg);
        j = load(k ? "plan_seq_tis" : "plan_tis", PPO_STATS_JSON);
        s = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "steps"), 0);
        const char *keys[] = {"rollout_corr/ratio_mean", "rollout_corr/clipped_frac",
                              "rollout_corr/kl", "ppo/loss/policy", "ppo/loss/total"};
        for (int i = 0; i < 5; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, keys[i]);
            if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
                fail_msg("%s: %s is not a finite number", modes[k] == PPO_RC_TIS ? "tis" : "seq_tis",
                         keys[i]);
        }
        double ratio = cJSON_GetObjectItemCaseSensitive(s, "rollout_corr/ratio_mean")->valuedouble;
        double clipped = cJSON_GetObjectItemCaseSensitive(s, "rollout_corr/clipped_frac")->valuedouble;
        assert_true(ratio > 0 && clipped >= 0 && clipped <= 1);
        /* step 1's rollouts and old log-probs do not depend on the mode */
        assert_true(cJSON_GetObjectItemCaseSensitive(s, "rollout_corr/kl")->valuedouble == gap_mean);
        if (!(cJSON_GetObjectItemCaseSensitive(s, "ppo/loss/policy")->valuedouble != loss_none))
            fail_msg("the %s weights left the policy loss unchanged", ppo_rc_names[modes[k]]);
        cJSON *opts = cJSON_GetObjectItemCaseSensitive(j, "options");
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(opts, "rollout_correction")->valuestring,
                            ppo_rc_names[modes[k]]);
        cJSON_Delete(j);
        free(dir);
    }
    o.rollout_correction = PPO_RC_NONE;
    /* an unknown plan is bad input naming it */
    io.plan = "Z";
    io.out_dir = od;
    assert_int_equal(rlhf_ppo_run(&o, &io, &res, &e), ERR_INPUT);
    free(pp), free(pol), free(rm), free(od);
}

static void resume_refuses_other_options(void **state)
{
    (void)state;
    ppo_opts_t o;
    tiny_opts(&o);
    o.steps = 1;
    o.eval_prompts = 0;
    err_t e = ERR_INIT;
    if (run(&o, "opts", "rm", false, &e))
        fail_msg("%s", e.msg);
    o.learning_rate *= 2;
    o.steps = 2;
    assert_int_equal(run(&o, "opts", "rm", true, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "learning_rate"));
    err_t e2 = ERR_INIT;
    assert_int_equal(run(&o, "never_ran", "rm", true, &e2), ERR_INPUT);
    assert_non_null(strstr(e2.msg, "no checkpoint"));
}

/* A resume continued a different run with exit 0 (issue 15): no --policy after a run under
 * a plan, another reward model, fewer steps than done, other prompts, a latest.json whose
 * step is not its checkpoint's. Each is refused naming the field and both values; the same
 * run (its models moved elsewhere) resumes to the bits of an uninterrupted run. */
static void expect_refused(const ppo_opts_t *o, const rlhf_ppo_io_t *io, const char *const *want)
{
    err_t e = ERR_INIT;
    rlhf_ppo_result_t res;
    int rc = rlhf_ppo_run(o, io, &res, &e);
    if (rc != ERR_INPUT)
        fail_msg("expected the resume to be refused (ERR_INPUT), got %d: %s", rc, e.msg);
    for (int i = 0; want[i]; i++)
        if (!strstr(e.msg, want[i]))
            fail_msg("expected the refusal to contain \"%s\", got: %s", want[i], e.msg);
}

static void resume_refuses_a_different_run_and_accepts_the_same(void **state)
{
    (void)state;
    ppo_opts_t o;
    tiny_opts(&o);
    o.steps = 2;
    o.checkpoint_every = 1;
    o.eval_prompts = 0;
    o.best_of_n = 0;
    err_t e = ERR_INIT;
    if (run(&o, "ident", "rm", false, &e))
        fail_msg("%s", e.msg);
    char *od = path2(root, "ident"), *pol = path2(root, "pol"), *rm = path2(root, "rm"),
         *rmn = path2(root, "rm_nan"), *pp = path2(root, "ident_plans.json"),
         *sp = path2(od, "checkpoints/ckpt-000002/state.json"),
         *lp = path2(od, "checkpoints/latest.json");
    test_write_file(pp, B16_PLANS, strlen(B16_PLANS));
    char *before = NULL, *after = NULL;
    size_t nb, na;
    assert_int_equal(fs_read_all(sp, 1 << 26, &before, &nb, &e), 0);
    ppo_opts_t o3 = o;
    o3.steps = 3;
    const rlhf_ppo_io_t same = {be, pol, NULL, rm, NULL, od, NULL, NULL,
                                (const char *const *)prompts.train, prompts.ntrain,
                                (const char *const *)prompts.eval, prompts.neval, true, NULL, true,
                                NULL, NULL, NULL, NULL};
    rlhf_ppo_io_t io = same;

    /* another reward model: its fingerprint, with both directories */
    io.reward_dir = rmn;
    expect_refused(&o3, &io, (const char *[]){"run reward_model.fingerprint was \"", "/rm)",
                                              "/rm_nan) now", NULL});
    /* a reference model other than the policy */
    io = same;
    io.ref_dir = rm;
    expect_refused(&o3, &io, (const char *[]){"run reference_model.fingerprint", NULL});
    /* a precision plan the run did not have (and, the other way round, none for a plan) */
    io = same;
    io.policies_path = pp;
    io.plan = "B16";
    expect_refused(&o3, &io, (const char *[]){"run precision_plan was null in the checkpoint, "
                                              "{\"plan\":\"B16\"", NULL});
    /* other prompts (another data draw) */
    io = same;
    io.n_prompts--;
    expect_refused(&o3, &io, (const char *[]){"run prompts.ppo was \"", NULL});
    /* the data record: a run recorded without one is not the run of a given data draw */
    io = same;
    ppo_data_opts_t d = {NULL, false, 60, 99, NULL, RLHF_TEMPLATE_RAW, NULL};
    io.data = &d;
    expect_refused(&o3, &io, (const char *[]){"run data was absent in the checkpoint", NULL});
    /* a seed, and fewer steps than the checkpoint has done */
    ppo_opts_t os = o3;
    os.seed = 7;
    expect_refused(&os, &same, (const char *[]){"option seed was 42 in the checkpoint, 7 now",
                                                NULL});
    os = o3;
    os.steps = 1;
    expect_refused(&os, &same, (const char *[]){"steps 1 is fewer than the 2 steps", NULL});
    /* latest.json naming a checkpoint of another step */
    char *latest = NULL;
    size_t nl;
    assert_int_equal(fs_read_all(lp, 1 << 16, &latest, &nl, &e), 0);
    const char *bad = "{\"step\": 1, \"dir\": \"ckpt-000002\"}";
    assert_int_equal(atomic_write(lp, bad, strlen(bad), &e), 0);
    expect_refused(&o3, &same, (const char *[]){"latest.json: field \"step\" is 1, but the "
                                                "checkpoint it names (ckpt-000002) holds step 2",
                                                NULL});
    assert_int_equal(atomic_write(lp, latest, nl, &e), 0);
    free(latest);
    /* nothing was written by the refused resumes */
    assert_int_equal(fs_read_all(sp, 1 << 26, &after, &na, &e), 0);
    assert_true(na == nb && !memcmp(before, after, nb));
    char *audit = path2(od, "precision_policy.json");
    assert_false(fs_exists(audit));
    free(audit);

    /* the same run, its reward model moved: accepted, and the bits of an uninterrupted run */
    char *moved = path2(root, "rm_moved");
    assert_int_equal(rename(rm, moved), 0);
    io = same;
    io.reward_dir = moved;
    rlhf_ppo_result_t res;
    int rc = rlhf_ppo_run(&o3, &io, &res, &e);
    assert_int_equal(rename(moved, rm), 0);
    if (rc)
        fail_msg("the same run was refused: %s", e.msg);
    if (run(&o3, "ident_full", "rm", false, &e))
        fail_msg("%s", e.msg);
    /* training_stats.json records where the models were: the moved directory */
    cJSON *x = stats_no_time("ident_full"), *y = stats_no_time("ident");
    cJSON_DeleteItemFromObjectCaseSensitive(x, "models");
    cJSON_DeleteItemFromObjectCaseSensitive(y, "models");
    if (!cJSON_Compare(x, y, true))
        fail_msg("training_stats.json of the resumed and the uninterrupted run differ");
    cJSON_Delete(x);
    cJSON_Delete(y);
    expect_same_file("ident_full", "ident", "policy/model.safetensors");
    expect_same_file("ident_full", "ident", "samples.jsonl");
    free(before), free(after), free(od), free(pol), free(rm), free(rmn), free(pp), free(sp);
    free(lp), free(moved);
}

/* Through the command: a resume without --policy after a run under a plan continued in
 * fp32 with exit 0, another --data-seed was accepted, and a causal LM as --reward-model got
 * data/ written before the refusal. Refused with exit 2 naming the field, nothing written;
 * a checkpoint directory a killed run left half-written (with its temporary) is removed by
 * the next checkpoint. */
static void cli_resume_refuses_another_plan_or_data_and_writes_nothing(void **state)
{
    (void)state;
    ppo_opts_t o;
    tiny_opts(&o);
    o.steps = 1;
    o.eval_prompts = 0;
    o.best_of_n = 0;
    err_t e = ERR_INIT;
    char *cfgp = write_config(&o, "cli_resume.json"), *pp = path2(root, "cli_plans.json");
    test_write_file(pp, B16_PLANS, strlen(B16_PLANS));
    char *pol = path2(root, "pol"), *rm = path2(root, "rm"), *out = path2(root, "cli_resume"),
         *fresh = path2(root, "cli_fresh"), *split = path2(out, "data/split.json");
    char common[4096], *log = NULL;
    snprintf(common, sizeof common, "ppo --policy-model %s --pairs 60 --config %s --output %s",
             pol, cfgp, out);
    if (test_cli(&log, "%s --reward-model %s --policy %s --plan B16", common, rm, pp))
        fail_msg("the first run failed:\n%s", log);
    free(log);
    char *before = NULL, *after = NULL;
    size_t nb, na;
    assert_int_equal(fs_read_all(split, 1 << 24, &before, &nb, &e), 0);

    int rc = test_cli(&log, "%s --reward-model %s --resume --steps 2", common, rm);
    if (rc != 2 || !strstr(log, "run precision_plan was {\"plan\":\"B16\"") ||
        !strstr(log, "null now"))
        fail_msg("a resume without the run's plan: expected exit 2 naming precision_plan, got "
                 "%d:\n%s", rc, log);
    free(log);
    rc = test_cli(&log, "%s --reward-model %s --policy %s --plan B16 --resume --steps 2 "
                  "--data-seed 99", common, rm, pp);
    if (rc != 2 || !strstr(log, "run data.data_seed was \"1234\" in the checkpoint, \"99\" now"))
        fail_msg("a resume with another --data-seed: expected exit 2 naming data.data_seed, got "
                 "%d:\n%s", rc, log);
    free(log);
    assert_int_equal(fs_read_all(split, 1 << 24, &after, &na, &e), 0);
    assert_true(na == nb && !memcmp(before, after, nb)); /* data/ as the run left it */

    /* a causal LM as the reward model: refused before data/ is written */
    rc = test_cli(&log, "ppo --policy-model %s --reward-model %s --pairs 60 --config %s "
                  "--output %s", pol, pol, cfgp, fresh);
    if (rc != 2 || !strstr(log, "not a reward model"))
        fail_msg("expected exit 2 for a causal LM as the reward model, got %d:\n%s", rc, log);
    free(log);
    char *fresh_data = path2(fresh, "data");
    assert_false(fs_exists(fresh_data));

    /* the same run resumes; a half-written checkpoint of a killed run goes with the next one */
    char *stale_dir = path2(out, "checkpoints/ckpt-000099"),
         *stale = path2(stale_dir, "policy.safetensors.tmp-AbC123");
    assert_int_equal(fs_mkdir_p(stale_dir, &e), 0);
    test_write_file(stale, "half", 4);
    if (test_cli(&log, "%s --reward-model %s --policy %s --plan B16 --resume --steps 2", common,
                 rm, pp))
        fail_msg("the same run's resume failed:\n%s", log);
    free(log);
    assert_false(fs_exists(stale));
    assert_false(fs_exists(stale_dir));
    free(before), free(after), free(cfgp), free(pp), free(pol), free(rm), free(out), free(fresh);
    free(split), free(fresh_data), free(stale_dir), free(stale);
}

static void options_round_trip_and_errors_name_the_key(void **state)
{
    (void)state;
    ppo_opts_t a, b;
    ppo_opts_default(&a);
    assert_int_equal(a.batch_size, 8);
    assert_int_equal(a.mini_batch_size, 4);
    assert_true(a.learning_rate == 1.41e-5);
    a.kl_penalty = PPO_KL_FULL;
    a.separate_critic = true;
    a.seed = 7;
    cJSON *j = opts_to_json(&ppo_opts_table, &a);
    err_t e = ERR_INIT;
    ppo_opts_default(&b);
    assert_int_equal(opts_from_json(&ppo_opts_table, j, "cfg", &b, &e), 0);
    assert_memory_equal(&a, &b, sizeof a);
    cJSON_Delete(j);
    cJSON *bad = cJSON_Parse("{\"batch_sise\": 8}");
    assert_int_equal(opts_from_json(&ppo_opts_table, bad, "config.json: ppo", &b, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "config.json: ppo: unknown key \"batch_sise\" (did you mean "
                                  "\"batch_size\"?)"));
    cJSON_Delete(bad);
    err_t e2 = ERR_INIT;
    bad = cJSON_Parse("{\"kl_penalty\": \"kl2\"}");
    assert_int_equal(opts_from_json(&ppo_opts_table, bad, "c", &b, &e2), ERR_INPUT);
    assert_non_null(strstr(e2.msg, "c: field \"kl_penalty\": expected one of \"kl\", \"abs\""));
    cJSON_Delete(bad);
    err_t e3 = ERR_INIT;
    bad = cJSON_Parse("{\"batch_size\": 6}"); /* not a multiple of 4 x 1 */
    assert_int_equal(opts_from_json(&ppo_opts_table, bad, "c", &b, &e3), ERR_INPUT);
    cJSON_Delete(bad);
    const char *sets[] = {"learning_rate=1e-4", "adap_kl_ctrl=false", "template=chatml",
                          "rollout_correction=seq_tis", "tis_cap=3.5"};
    ppo_opts_default(&b);
    assert_int_equal(b.rollout_correction, PPO_RC_NONE); /* TRL's behaviour by default */
    assert_true(b.tis_cap == 2);
    for (int i = 0; i < 5; i++)
        assert_int_equal(opts_set_json(&ppo_opts_table, &b, sets[i], "--set", &e), 0);
    assert_true(b.learning_rate == 1e-4 && !b.adap_kl_ctrl && b.template_ == RLHF_TEMPLATE_CHATML);
    assert_true(b.rollout_correction == PPO_RC_SEQ_TIS && b.tis_cap == 3.5);
    err_t e5 = ERR_INIT;
    assert_int_equal(opts_set_json(&ppo_opts_table, &b, "rollout_correction=is", "--set", &e5),
                     ERR_INPUT);
    assert_non_null(strstr(e5.msg, "rollout_correction"));
    err_t e6 = ERR_INIT;
    assert_int_equal(opts_set_json(&ppo_opts_table, &b, "tis_cap=0.5", "--set", &e6), ERR_INPUT);
    assert_non_null(strstr(e6.msg, "tis_cap"));
    /* seeds: JSON integers up to 2^53 or decimal strings, as docs/cli.md says */
    assert_int_equal(opts_set_json(&ppo_opts_table, &b, "seed=\"18446744073709551615\"", "--set",
                                   &e), 0);
    assert_true(b.seed == UINT64_MAX);
    j = opts_to_json(&ppo_opts_table, &b);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "seed")->valuestring,
                        "18446744073709551615");
    cJSON_Delete(j);
    /* a key given twice in one section is an error naming it */
    err_t e4 = ERR_INIT;
    bad = cJSON_Parse("{\"steps\": 3, \"steps\": 4}");
    assert_int_equal(opts_from_json(&ppo_opts_table, bad, "c", &b, &e4), ERR_INPUT);
    assert_string_equal(e4.msg, "c: key \"steps\" given twice");
    cJSON_Delete(bad);
}

static void baseline_writes_the_study_files_and_charts(void **state)
{
    (void)state;
    char *pol = path2(root, "pol"), *rm = path2(root, "rm"), *out = path2(root, "baseline");
    char *log = NULL;
    int rc = test_cli(&log, "baseline --policy-model %s --reward-model %s --pairs 60 --steps 2 "
                      "--output %s --power-source none --idle-s 0 --set batch_size=4 "
                      "--set mini_batch_size=2 --set ppo_epochs=2 --set max_new_tokens=8 "
                      "--set eval_prompts=2 --set best_of_n=0",
                      pol, rm, out);
    if (rc)
        fail_msg("baseline failed (%d):\n%s", rc, log);
    free(log);
    const char *files[] = {"power_log_baseline.csv", "phase_timing.json", "energy.csv",
                           "training_stats.json", "training_stats.jsonl", "reward_by_step.svg",
                           "kl_by_step.svg", "losses_by_step.svg", "power_over_time.svg",
                           "policy/model.safetensors", "policy/tokenizer.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *p = path2(out, files[i]);
        if (!fs_exists(p))
            fail_msg("%s was not written", p);
        free(p);
    }
    /* each study phase has its windows and a runtime */
    cJSON *t = load("baseline", "phase_timing.json");
    const cJSON *ph = cJSON_GetObjectItemCaseSensitive(t, "phases");
    const char *names[] = {"rollout", "reward_inference", "gradient_update"};
    for (int i = 0; i < 3; i++) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(ph, names[i]);
        assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(p, "windows")->valuedouble, 2);
        assert_true(cJSON_GetObjectItemCaseSensitive(p, "runtime_s")->valuedouble > 0);
        /* no sensor: tokens counted, no joules per token */
        assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(p, "energy_per_token_J")));
    }
    /* the tokens, from the steps' lengths (batch 4, 2 epochs): generated = the responses,
     * scored = prompt + response, trained = the responses once per epoch */
    cJSON *st = load("baseline", PPO_STATS_JSON);
    double gen = 0, scored = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(st, "steps"))
    {
        double q = cJSON_GetObjectItemCaseSensitive(s, "tokens/queries_len_mean")->valuedouble;
        double r = cJSON_GetObjectItemCaseSensitive(s, "tokens/responses_len_mean")->valuedouble;
        gen += 4 * r;
        scored += 4 * (q + r);
    }
    cJSON_Delete(st);
    const cJSON *tk = cJSON_GetObjectItemCaseSensitive(t, "tokens");
    const double want[3] = {gen, scored, 2 * gen};
    for (int i = 0; i < 3; i++) {
        double got = cJSON_GetObjectItemCaseSensitive(tk, names[i])->valuedouble;
        if (!(fabs(got - want[i]) < 1e-6) || !(got > 0))
            fail_msg("%s: %g tokens, expected %g", names[i], got, want[i]);
        assert_true(cJSON_GetObjectItemCaseSensitive(
                        cJSON_GetObjectItemCaseSensitive(ph, names[i]), "tokens")
                        ->valuedouble == got);
    }
    cJSON_Delete(t);
    free(pol), free(rm), free(out);
}

static void hh_rlhf_file_runs_through_the_baseline(void **state)
{
    (void)state;
    const char *hh;
    REQUIRE_SHARED(hh, "data/hh-rlhf/harmless-base-test.jsonl.gz");
    char *pol = path2(root, "pol"), *rm = path2(root, "rm"), *out = path2(root, "hh");
    char *log = NULL;
    int rc = test_cli(&log, "baseline --policy-model %s --reward-model %s --data %s --pairs 100 "
                      "--steps 1 --output %s --power-source none --idle-s 0 --set batch_size=4 "
                      "--set mini_batch_size=2 --set ppo_epochs=1 --set max_new_tokens=8 "
                      "--set max_prompt_tokens=48 --set eval_prompts=2 --set best_of_n=0",
                      pol, rm, hh, out);
    if (rc)
        fail_msg("baseline on HH-RLHF failed (%d):\n%s", rc, log);
    free(log);
    cJSON *j = load("hh", PPO_STATS_JSON);
    cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "steps"), 0);
    assert_null(cJSON_GetObjectItemCaseSensitive(s, "data_synth_score")); /* not synthetic */
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(s, "env/reward_mean")));
    cJSON_Delete(j);
    free(pol), free(rm), free(out);
}

/* ---- calibration (mxrlhf baseline --calibrate) ------------------------------------------- */

#define CAL_WATTS 80.0

/* A replay trace of one device at a constant CAL_WATTS for 600 s, a row every 0.05 s with
 * the counter on each: whatever the phases' timing, their steady power is CAL_WATTS. */
static char *write_constant_trace(void)
{
    char *p = path2(root, "constant_80W.csv");
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    len += (size_t)snprintf(buf, cap, "time_s,device,power_W,energy_J,phase\n");
    for (int i = 0; i <= 12000; i++) {
        double t = i * 0.05;
        len += (size_t)snprintf(buf + len, cap - len, "%.6f,gpu0,%.3f,%.6f,\n", t, CAL_WATTS,
                                CAL_WATTS * t);
        assert_true(len < cap);
    }
    test_write_file(p, buf, len);
    free(buf);
    return p;
}

static void baseline_cli(const char *out, const char *extra)
{
    char *pol = path2(root, "pol"), *rm = path2(root, "rm"), *od = path2(root, out), *log = NULL;
    int rc = test_cli(&log, "baseline --policy-model %s --reward-model %s --pairs 60 --steps 2 "
                      "--output %s --idle-s 0 --set batch_size=4 --set mini_batch_size=2 "
                      "--set ppo_epochs=1 --set max_new_tokens=8 --set eval_prompts=2 "
                      "--set best_of_n=0 %s", pol, rm, od, extra);
    if (rc)
        fail_msg("baseline %s failed (%d):\n%s", extra, rc, log);
    free(log), free(pol), free(rm), free(od);
}

/* The calibration segments of `phase` in phase_timing.json: their number, and the fewest
 * iterations of one. */
static int calib_segments(const cJSON *timing, const char *phase, long *min_iter)
{
    int n = 0;
    *min_iter = -1;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(timing, "calibration"))
    {
        const cJSON *ph = cJSON_GetObjectItemCaseSensitive(c, "phase");
        if (!cJSON_IsString(ph) || strcmp(ph->valuestring, phase))
            continue;
        long it = (long)cJSON_GetObjectItemCaseSensitive(c, "iterations")->valuedouble;
        *min_iter = n == 0 || it < *min_iter ? it : *min_iter;
        n++;
    }
    return n;
}

/* Field k (0-based) of energy.csv's row for `phase`, copied into buf. */
static const char *csv_field(const char *csv, const char *phase, int k, char *buf, size_t cap)
{
    char key[80];
    snprintf(key, sizeof key, "\n%s,", phase);
    const char *p = strstr(csv, key);
    if (!p)
        fail_msg("energy.csv has no row %s:\n%s", phase, csv);
    p++;
    for (int i = 0; i < k; i++)
        p = strchr(p, ',') + 1;
    size_t n = strcspn(p, ",\n");
    snprintf(buf, cap, "%.*s", (int)(n < cap ? n : cap - 1), p);
    return buf;
}

static char *slurp_out(const char *dir, const char *name)
{
    char *d = path2(root, dir), *p = path2(d, name), *text;
    size_t n;
    err_t e = ERR_INIT;
    if (fs_read_all(p, 1 << 26, &text, &n, &e))
        fail_msg("%s", e.msg);
    free(d), free(p);
    return text;
}

/* Every parameter of a policy directory (host copy; caller frees). */
static float *policy_params(const char *dir, size_t *n)
{
    err_t e = ERR_INIT;
    qwen2_opts_t mo = {.max_batch = 1, .max_seq = 8, .heads = QWEN2_HEAD_LM};
    qwen2_model_t *m;
    if (qwen2_open_dir(dir, be, &mo, &m, &e))
        fail_msg("%s: %s", dir, e.msg);
    *n = qwen2_nparams(m);
    float *p = malloc(*n * sizeof *p);
    assert_int_equal(qwen2_params_get(m, 0, p, *n, &e), 0);
    qwen2_free(m);
    return p;
}

/* Scratch directories of ranks r > 0 (cli/rank.h) now in /tmp. */
static size_t scratch_dirs(void)
{
    glob_t g = {0};
    size_t n = glob("/tmp/mxrlhf-rank*-*", GLOB_NOSORT, NULL, &g) == 0 ? g.gl_pathc : 0;
    globfree(&g);
    return n;
}

/* Data parallelism on the CPU: 2 ranks x 2 prompts against 1 process x 4 prompts, two steps
 * of two epochs over one minibatch (the whole batch): the same rollouts (rows keep their
 * random streams), the same KL, and the same weights up to the order of the sums (each
 * rank's gradient is its rows' share of the global masked mean; the two are averaged). */
static void two_ranks_x_batch_2_update_as_one_process_x_batch_4(void **state)
{
    (void)state;
    ppo_opts_t o;
    tiny_opts(&o);
    o.steps = 2;
    o.batch_size = 4;
    o.mini_batch_size = 4;
    o.eval_prompts = 0;
    o.best_of_n = 0;
    o.checkpoint_every = 0;
    err_t e = ERR_INIT;
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddItemToObject(cfg, "ppo", opts_to_json(&ppo_opts_table, &o));
    char *cfgp = path2(root, "ddp.json"), *pol = path2(root, "pol"), *rm = path2(root, "rm"),
         *one = path2(root, "ddp1"), *two = path2(root, "ddp2");
    assert_int_equal(json_write_file(cfgp, cfg, true, &e), 0);
    cJSON_Delete(cfg);
    char *log = NULL;
    const char *outs[2] = {one, two}, *gpus[2] = {"", " --gpus 2"};
    const size_t scratch0 = scratch_dirs();
    for (int k = 0; k < 2; k++) {
        if (test_cli(&log, "ppo --policy-model %s --reward-model %s --pairs 60 --config %s "
                           "--output %s%s", pol, rm, cfgp, outs[k], gpus[k]))
            fail_msg("ppo%s: %s", gpus[k], log);
        free(log);
    }
    /* rank 0's rollouts are the first two rows of the one-process batch, step by step */
    char *s1 = slurp_out("ddp1", "samples.jsonl"), *s2 = slurp_out("ddp2", "samples.jsonl");
    char *l1 = s1, *l2 = s2;
    for (int step = 0; step < 2; step++) {
        for (int r = 0; r < 4; r++) {
            char *n1 = strchr(l1, '\n');
            assert_non_null(n1);
            if (r < 2) {
                char *n2 = strchr(l2, '\n');
                assert_non_null(n2);
                cJSON *a = cJSON_ParseWithLength(l1, (size_t)(n1 - l1)),
                      *b = cJSON_ParseWithLength(l2, (size_t)(n2 - l2));
                const cJSON *ra = cJSON_GetObjectItemCaseSensitive(a, "response"),
                            *rb = cJSON_GetObjectItemCaseSensitive(b, "response");
                assert_true(cJSON_IsString(ra) && cJSON_IsString(rb));
                if (strcmp(ra->valuestring, rb->valuestring))
                    fail_msg("step %d row %d: \"%s\" (1 process) vs \"%s\" (rank 0)", step + 1,
                             r, ra->valuestring, rb->valuestring);
                cJSON_Delete(a);
                cJSON_Delete(b);
                l2 = n2 + 1;
            }
            l1 = n1 + 1;
        }
    }
    free(s1);
    free(s2);
    /* the KL the controller saw */
    char *t1 = slurp_out("ddp1", PPO_STATS_JSON), *t2 = slurp_out("ddp2", PPO_STATS_JSON);
    cJSON *j1 = cJSON_Parse(t1), *j2 = cJSON_Parse(t2);
    const cJSON *st1 = cJSON_GetObjectItemCaseSensitive(j1, "steps"),
                *st2 = cJSON_GetObjectItemCaseSensitive(j2, "steps");
    assert_int_equal(cJSON_GetArraySize(st1), 2);
    assert_int_equal(cJSON_GetArraySize(st2), 2);
    for (int i = 0; i < 2; i++) {
        double a = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(st1, i), "objective/kl")
                       ->valuedouble,
               b = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(st2, i), "objective/kl")
                       ->valuedouble;
        print_message("step %d: objective/kl %.9g (1 process) %.9g (2 ranks)\n", i + 1, a, b);
        if (!(fabs(a - b) <= 1e-6 * fmax(1, fabs(a))))
            fail_msg("step %d: KL %.9g vs %.9g", i + 1, a, b);
    }
    cJSON_Delete(j1);
    cJSON_Delete(j2);
    free(t1);
    free(t2);
    /* the weights after two steps */
    char *p1 = path2(one, "policy"), *p2 = path2(two, "policy");
    size_t n0, n1, n2;
    float *w0 = policy_params(pol, &n0), *w1 = policy_params(p1, &n1), *w2 = policy_params(p2, &n2);
    assert_int_equal(n1, n2);
    assert_int_equal(n0, n1);
    double dmax = 0, umax = 0;
    for (size_t i = 0; i < n1; i++) {
        dmax = fmax(dmax, fabs((double)w1[i] - w2[i]));
        umax = fmax(umax, fabs((double)w1[i] - w0[i]));
    }
    /* the update is a few learning rates (Adam); the orders of the sums move it by far less
     * (measured: 5.4e-6 against an update of 4.0e-3, two embedding entries; the others
     * within 2e-7) */
    print_message("2 ranks x 2 vs 1 x 4: max |w1 - w2| = %.3g over %zu weights; largest "
                  "update %.3g\n", dmax, n1, umax);
    if (!(umax > 1e-4 && dmax <= 0.01 * umax))
        fail_msg("the weights differ by %.3g, more than 1%% of the largest update %.3g", dmax,
                 umax);
    free(w0);
    /* rank 1's scratch directory went away with it */
    assert_int_equal(scratch_dirs(), scratch0);
    free(w1), free(w2), free(p1), free(p2);
    free(cfgp), free(pol), free(rm), free(one), free(two);
}

/* An uneven split is refused before any work, naming the sizes. */
static void a_batch_that_does_not_split_over_the_ranks_is_refused(void **state)
{
    (void)state;
    char *pol = path2(root, "pol"), *rm = path2(root, "rm"), *out = path2(root, "ddp3"), *log;
    int rc = test_cli(&log, "ppo --policy-model %s --reward-model %s --pairs 60 --output %s "
                            "--gpus 3 --steps 1", pol, rm, out);
    assert_int_equal(rc, ERR_INPUT);
    assert_non_null(strstr(log, "batch_size 8 does not split evenly over 3 ranks"));
    free(log), free(pol), free(rm), free(out);
}

static const char *const study_phases[3] = {"rollout", "reward_inference", "gradient_update"};

static void calibration_repeats_each_phase_and_leaves_the_run_unchanged(void **state)
{
    (void)state;
    char *trace = write_constant_trace(), extra[1200];
    snprintf(extra, sizeof extra, "--power-source replay:%s --calibrate --calibrate-s 0.3", trace);
    baseline_cli("cal_on", extra);
    snprintf(extra, sizeof extra, "--power-source replay:%s", trace);
    baseline_cli("cal_off", extra);

    cJSON *t = load("cal_on", "phase_timing.json");
    const cJSON *phs = cJSON_GetObjectItemCaseSensitive(t, "phases");
    char *csv = slurp_out("cal_on", "energy.csv"), f[256];
    for (int k = 0; k < 3; k++) {
        long min_iter;
        int n = calib_segments(t, study_phases[k], &min_iter);
        if (n < 1 || min_iter < 1)
            fail_msg("%s: expected calibration segments of >= 1 iteration, got %d (fewest "
                     "iterations %ld)", study_phases[k], n, min_iter);
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(phs, study_phases[k]);
        const cJSON *co = cJSON_GetObjectItemCaseSensitive(p, "calibration");
        assert_true(cJSON_IsObject(co));
        assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(co, "segments")->valuedouble, n);
        /* the replayed power is the phase's steady power, to the joule */
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(co, "power_W");
        if (!cJSON_IsNumber(w) || fabs(w->valuedouble - CAL_WATTS) > 1e-6)
            fail_msg("%s: calibrated power expected %g W, got %s", study_phases[k], CAL_WATTS,
                     cJSON_IsNumber(w) ? "another number" : "none");
        /* and energy.csv says it was calibrated: method, or the note on why not */
        const char *method = csv_field(csv, study_phases[k], 6, f, sizeof f);
        const char *row = strstr(csv, study_phases[k]);
        if (strcmp(method, "calibrated") && !strstr(row, "calibrated (steady power 80.00 W"))
            fail_msg("%s: energy.csv says nothing of the calibration:\n%s", study_phases[k], csv);
    }
    cJSON_Delete(t);
    free(csv);
    char *plog = slurp_out("cal_on", "power_log_baseline.csv");
    assert_non_null(strstr(plog, "calibrate:gradient_update"));
    free(plog);
    /* without --calibrate: no segments */
    t = load("cal_off", "phase_timing.json");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(t, "calibration")), 0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(t, "phases"), "rollout"),
        "calibration")));
    cJSON_Delete(t);
    /* calibration changed nothing of the run */
    expect_same_stats("cal_on", "cal_off");
    expect_same_file("cal_on", "cal_off", "policy/model.safetensors");
    expect_same_file("cal_on", "cal_off", "eval.json");
    expect_same_file("cal_on", "cal_off", "samples.jsonl");
    free(trace);
}

static void calibration_without_a_sensor_records_segments_and_no_energy(void **state)
{
    (void)state;
    baseline_cli("cal_none", "--power-source none --calibrate --calibrate-s 0.3");
    cJSON *t = load("cal_none", "phase_timing.json");
    const cJSON *phs = cJSON_GetObjectItemCaseSensitive(t, "phases");
    char *csv = slurp_out("cal_none", "energy.csv"), f[256];
    for (int k = 0; k < 4; k++) {
        const char *name = k < 3 ? study_phases[k] : "total";
        /* power and energy cells empty, method none: never an estimate */
        if (*csv_field(csv, name, 1, f, sizeof f) || *csv_field(csv, name, 3, f, sizeof f) ||
            strcmp(csv_field(csv, name, 6, f, sizeof f), "none"))
            fail_msg("%s: expected empty power and energy and method none:\n%s", name, csv);
        if (k == 3)
            break;
        long min_iter;
        int n = calib_segments(t, name, &min_iter);
        if (n < 1 || min_iter < 1)
            fail_msg("%s: expected calibration segments of >= 1 iteration, got %d", name, n);
        const cJSON *co = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(phs, name), "calibration");
        assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(co, "segments")->valuedouble, n);
        assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(co, "power_W")));
        assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(phs, name), "energy_J")));
    }
    assert_non_null(strstr(csv, "but no sensor: no steady power"));
    free(csv);
    cJSON_Delete(t);
}

static void baseline_options_default_off_and_errors_name_the_key(void **state)
{
    (void)state;
    pipeline_baseline_opts_t o;
    opts_default(&pipeline_baseline_opts_table, &o);
    assert_false(o.calibrate);
    assert_true(o.calibrate_s == 10);
    err_t e = ERR_INIT;
    cJSON *j = cJSON_Parse("{\"calibrate\": true, \"calibrate_s\": 2.5}");
    assert_int_equal(opts_from_json(&pipeline_baseline_opts_table, j, "cfg: baseline", &o, &e), 0);
    assert_true(o.calibrate && o.calibrate_s == 2.5);
    cJSON_Delete(j);
    j = cJSON_Parse("{\"calibrate_s\": 0}");
    assert_int_equal(opts_from_json(&pipeline_baseline_opts_table, j, "cfg: baseline", &o, &e),
                     ERR_INPUT);
    assert_non_null(strstr(e.msg, "calibrate_s"));
    cJSON_Delete(j);
    /* --calibrate needs the monitor: mxrlhf ppo has none */
    ppo_opts_t po;
    tiny_opts(&po);
    po.steps = 1;
    po.eval_prompts = 0;
    char *pol = path2(root, "pol"), *rm = path2(root, "rm"), *od = path2(root, "cal_nomon");
    energy_calib_opts_t co = {.min_total_s = 0.1};
    rlhf_ppo_io_t io = {be, pol, NULL, rm, NULL, od, NULL, NULL,
                        (const char *const *)prompts.train, prompts.ntrain, NULL, 0, true, NULL,
                        false, NULL, &co, NULL, NULL};
    err_t e2 = ERR_INIT;
    assert_int_equal(rlhf_ppo_run(&po, &io, NULL, &e2), ERR_INPUT);
    assert_non_null(strstr(e2.msg, "monitor"));
    free(pol), free(rm), free(od);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(options_round_trip_and_errors_name_the_key),
        cmocka_unit_test(same_seed_gives_identical_training_stats),
        cmocka_unit_test(min_new_tokens_and_every_kl_estimator_run),
        cmocka_unit_test(kill_and_resume_gives_identical_results),
        cmocka_unit_test(two_ranks_x_batch_2_update_as_one_process_x_batch_4),
        cmocka_unit_test(a_batch_that_does_not_split_over_the_ranks_is_refused),
        cmocka_unit_test(non_finite_score_stops_and_keeps_the_last_checkpoint),
        cmocka_unit_test(precision_plan_applies_per_phase_and_shows_in_the_logprob_gap),
        cmocka_unit_test(resume_refuses_other_options),
        cmocka_unit_test(resume_refuses_a_different_run_and_accepts_the_same),
        cmocka_unit_test(cli_resume_refuses_another_plan_or_data_and_writes_nothing),
        cmocka_unit_test(baseline_writes_the_study_files_and_charts),
        cmocka_unit_test(hh_rlhf_file_runs_through_the_baseline),
        cmocka_unit_test(baseline_options_default_off_and_errors_name_the_key),
        cmocka_unit_test(calibration_repeats_each_phase_and_leaves_the_run_unchanged),
        cmocka_unit_test(calibration_without_a_sensor_records_segments_and_no_energy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
