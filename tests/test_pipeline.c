/* Tests for src/pipeline: the configuration file (round trip, errors, overrides), the
 * cached chain of `mxrlhf run` on a tiny configuration (reuse, re-run from a changed
 * section, damaged output, a given model directory, stages not built yet), and the exit
 * codes of `mxrlhf config` and `mxrlhf verify`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mx/mx.h"
#include "pipeline/config.h"
#include "pipeline/pipeline.h"
#include "test_sft_tiny.h"
#include "util/fs.h"
#include "util/json.h"

/* A configuration small enough for a whole chain in a few seconds under ASan. */
static const char *TINY_CONFIG =
    "{\"data\": {\"synth_pairs\": 120, \"corpus_docs\": 200},\n"
    " \"tokenizer\": {\"vocab_size\": 400},\n"
    " \"model\": {\"hidden\": 32, \"layers\": 1, \"heads\": 2, \"kv_heads\": 1,\n"
    "           \"intermediate\": 64, \"max_position\": 256},\n"
    " \"pretrain\": {\"tokens\": 2048, \"seq_len\": 64, \"batch_size\": 8, \"warmup_steps\": 2,\n"
    "              \"log_every\": 0},\n"
    " \"sft\": {\"steps\": 3, \"batch_size\": 4, \"warmup_steps\": 1, \"log_every\": 0},\n"
    " \"rm\": {\"steps\": 3, \"batch_size\": 4, \"warmup_steps\": 1, \"log_every\": 0},\n"
    " \"judge\": {\"steps\": 3, \"batch_size\": 4, \"warmup_steps\": 1, \"log_every\": 0},\n"
    " \"ppo\": {\"steps\": 2, \"batch_size\": 2, \"mini_batch_size\": 2, \"ppo_epochs\": 1,\n"
    "         \"max_new_tokens\": 6, \"eval_prompts\": 2, \"best_of_n\": 2,\n"
    "         \"checkpoint_every\": 0},\n"
    " \"sensitivity\": {\"eval_tokens\": 64, \"formats\": [\"mxfp4_e2m1\", \"mxfp8_e4m3\"],\n"
    "                 \"blocks\": [8, 32], \"workers\": 1},\n"
    " \"phase_sensitivity\": {\"eval_tokens\": 64, \"formats\": [\"mxfp4_e2m1\", \"mxfp8_e4m3\"],\n"
    "                       \"blocks\": [8], \"workers\": 1, \"rollout_prompts\": 2,\n"
    "                       \"rollout_max_new_tokens\": 4, \"reward_pairs\": 8},\n"
    " \"policies\": {\"eval_tokens\": 64},\n"
    " \"compare\": {\"seeds\": 2, \"steps\": 1, \"plans\": \"baseline,A\", \"eval_prompts\": 2,\n"
    "             \"rm_eval_pairs\": 4, \"power_source\": \"none\", \"idle_s\": 0}}\n";

static char *dir;       /* the test's temporary directory */
static char cfg_path[600], out[600];

static int group_setup(void **state)
{
    (void)state;
    dir = test_mkdtemp();
    snprintf(cfg_path, sizeof cfg_path, "%s/tiny.json", dir);
    snprintf(out, sizeof out, "%s/results", dir);
    test_write_file(cfg_path, TINY_CONFIG, strlen(TINY_CONFIG));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    test_rmtree(dir);
    free(dir);
    return 0;
}

/* ---- configuration ---------------------------------------------------------------------- */

static char *config_text(const pipeline_config_t *c)
{
    cJSON *j = pipeline_config_to_json(c);
    assert_non_null(j);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

static void config_defaults_round_trip_through_json(void **state)
{
    (void)state;
    pipeline_config_t a, b;
    pipeline_config_default(&a);
    char *text = config_text(&a);
    memset(&b, 0, sizeof b); /* nothing but what the file says */
    cJSON *j = cJSON_Parse(text);
    err_t e = ERR_INIT;
    assert_int_equal(pipeline_config_from_json(j, "defaults.json", &b, &e), 0);
    char *again = config_text(&b);
    assert_string_equal(text, again);
    if (memcmp(&a, &b, sizeof a))
        fail_msg("expected the parsed configuration to equal the defaults field for field");
    cJSON_Delete(j);
    free(text);
    free(again);
}

static void config_unknown_key_names_the_file_section_and_key(void **state)
{
    (void)state;
    pipeline_config_t c;
    pipeline_config_default(&c);
    err_t e = ERR_INIT;
    cJSON *j = cJSON_Parse("{\"rm\": {\"steps\": 10, \"stepz\": 3}}");
    assert_int_equal(pipeline_config_from_json(j, "my.json", &c, &e), ERR_INPUT);
    if (!strstr(e.msg, "my.json: rm: unknown key \"stepz\""))
        fail_msg("expected the message to name my.json, rm and stepz, got: %s", e.msg);
    cJSON_Delete(j);
    err_clear(&e);
    j = cJSON_Parse("{\"pp0\": {}}");
    assert_int_equal(pipeline_config_from_json(j, "my.json", &c, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "unknown section \"pp0\""));
    cJSON_Delete(j);
    err_clear(&e);
    j = cJSON_Parse("{\"sft\": {\"lr\": \"fast\"}}");
    assert_int_equal(pipeline_config_from_json(j, "my.json", &c, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "my.json: sft: field \"lr\": expected a number"));
    cJSON_Delete(j);
    err_clear(&e);
    j = cJSON_Parse("{\"data\": {\"rm_train\": 0.5}}");
    assert_int_equal(pipeline_config_from_json(j, "my.json", &c, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "sum to"));
    cJSON_Delete(j);
    /* a failed read leaves the configuration as it was */
    pipeline_config_t d;
    pipeline_config_default(&d);
    assert_memory_equal(&c, &d, sizeof c);
}

/* Every section is one options table (util/opts.h): its defaults parse and pass the section's
 * checks, every key has a help line and is named once, and the defaults round-trip. */
static void every_section_table_gives_defaults_help_and_round_trips(void **state)
{
    (void)state;
    for (int i = 0; i < pipeline_nsections; i++) {
        const pipeline_section_t *s = &pipeline_sections[i];
        opt_keys_t k;
        opts_keys(s->table, &k);
        for (int a = 0; a < k.n; a++) {
            if (k.ref[a].hidden)
                continue;
            if (!k.ref[a].f->help || !k.ref[a].f->help[0])
                fail_msg("%s.%s has no help line", s->name, k.ref[a].f->key);
            for (int b = 0; b < a; b++)
                if (!k.ref[b].hidden && !strcmp(k.ref[a].f->key, k.ref[b].f->key))
                    fail_msg("%s.%s is declared twice", s->name, k.ref[a].f->key);
        }
        char *a = calloc(1, s->table->size), *b = calloc(1, s->table->size);
        opts_default(s->table, a);
        err_t e = ERR_INIT;
        if (opts_check(s->table, a, s->name, &e))
            fail_msg("%s: the defaults fail the section's check: %s", s->name, e.msg);
        cJSON *j = opts_to_json(s->table, a);
        /* b holds nothing but what the JSON says (and the sub-keys that are not keys) */
        if (opts_from_json(s->table, j, s->name, b, &e))
            fail_msg("%s: %s", s->name, e.msg);
        assert_memory_equal(a, b, s->table->size);
        cJSON_Delete(j);
        free(a);
        free(b);
    }
}

static void options_suggest_the_nearest_key_and_refuse_repeats(void **state)
{
    (void)state;
    pipeline_config_t c;
    pipeline_config_default(&c);
    err_t e = ERR_INIT;
    assert_int_equal(pipeline_config_set(&c, "ppo.lerning_rate=1e-4", &e), ERR_INPUT);
    assert_string_equal(e.msg, "--set ppo: unknown key \"lerning_rate\" (did you mean "
                               "\"learning_rate\"?)");
    err_clear(&e);
    assert_int_equal(pipeline_config_set(&c, "polices.block=8", &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "did you mean \"policies\"?"));
    err_clear(&e);
    cJSON *j = cJSON_Parse("{\"sft\": {\"steps\": 1, \"steps\": 2}}");
    assert_int_equal(pipeline_config_from_json(j, "my.json", &c, &e), ERR_INPUT);
    assert_string_equal(e.msg, "my.json: sft: key \"steps\" given twice");
    cJSON_Delete(j);
    err_clear(&e);
    j = cJSON_Parse("{\"sft\": {}, \"sft\": {}}");
    assert_int_equal(pipeline_config_from_json(j, "my.json", &c, &e), ERR_INPUT);
    assert_string_equal(e.msg, "my.json: section \"sft\" given twice");
    cJSON_Delete(j);
    /* a flag's text: lists with the formats' aliases, errors naming the flag */
    err_clear(&e);
    sensitivity_opts_t so;
    sensitivity_opts_default(&so);
    assert_int_equal(opts_set_text(&sensitivity_opts_table, &so, "formats", "mxfp4,mxfp8",
                                   "--formats", &e), 0);
    assert_int_equal(so.nformats, 2);
    assert_int_equal(so.formats[0], MX_FP4_E2M1);
    assert_int_equal(so.formats[1], MX_FP8_E4M3);
    assert_int_equal(opts_set_text(&sensitivity_opts_table, &so, "blocks", "8,x", "--blocks", &e),
                     ERR_INPUT);
    assert_string_equal(e.msg, "--blocks: expected integers in [1, 4096], got \"8,x\"");
    /* the phase section embeds the matrix's keys but its thresholds, with 512 tokens */
    phase_sensitivity_opts_t po;
    phase_sensitivity_opts_default(&po);
    assert_int_equal(po.sweep.eval.tokens, 512);
    assert_true(po.sweep.threshold_pct == c.sensitivity.threshold_pct);
    err_clear(&e);
    assert_int_equal(opts_set_text(&phase_sensitivity_opts_table, &po, "threshold_pct", "1",
                                   "--threshold", &e), ERR_INPUT);
    /* help lines come from the table: range and default */
    opt_keys_t k;
    opts_keys(&ppo_opts_table, &k);
    char help[320];
    opts_ref_help(opts_find(&k, "steps"), help, sizeof help);
    assert_string_equal(help, "PPO steps (1 to 1000000000; default 100)");
}

static void config_file_and_overrides_apply_in_order(void **state)
{
    (void)state;
    pipeline_config_t c;
    pipeline_config_default(&c);
    err_t e = ERR_INIT;
    assert_int_equal(pipeline_config_load(cfg_path, &c, &e), 0);
    assert_int_equal(c.model.hidden, 32);
    assert_int_equal(c.sft.steps, 3);
    assert_int_equal(c.rm.optim.warmup_steps, 1);
    assert_int_equal(c.judge.steps, 3);
    assert_int_equal(c.model.intermediate, 64);
    pipeline_config_t d;
    pipeline_config_default(&d);
    assert_true(c.rm.optim.lr == d.rm.optim.lr); /* untouched keys keep their defaults */
    assert_true(c.data.synth_pairs != d.data.synth_pairs);
    assert_int_equal(pipeline_config_set(&c, "sft.steps=7", &e), 0);
    assert_int_equal(pipeline_config_set(&c, "sft.schedule=linear", &e), 0);
    assert_int_equal(c.sft.steps, 7);
    assert_int_equal(c.sft.optim.schedule, RLHF_SCHED_LINEAR);
    assert_int_equal(pipeline_config_set(&c, "sft.nope=1", &e), ERR_INPUT);
    err_clear(&e);
    assert_int_equal(pipeline_config_set(&c, "sft.steps", &e), ERR_INPUT);
}

static void config_command_prints_defaults_and_checks_files(void **state)
{
    (void)state;
    char *o = NULL;
    assert_int_equal(test_cli(&o, "config"), 0);
    cJSON *j = cJSON_Parse(o);
    assert_non_null(j);
    pipeline_config_t a, b;
    pipeline_config_default(&a);
    b = a;
    err_t e = ERR_INIT;
    assert_int_equal(pipeline_config_from_json(j, "stdout", &b, &e), 0);
    assert_memory_equal(&a, &b, sizeof a);
    cJSON_Delete(j);
    free(o);
    char bad[700];
    snprintf(bad, sizeof bad, "%s/bad.json", dir);
    test_write_file(bad, "{\"sft\": {\"stepz\": 1}}", 22);
    assert_int_equal(test_cli(&o, "config --config %s", bad), 2);
    assert_non_null(strstr(o, "unknown key \"stepz\""));
    free(o);
}

/* ---- the chain -------------------------------------------------------------------------- */

/* The status of each stage in <out>/run.json, "name=status,..." in table order. */
static void run_statuses(const char *outdir, char *buf, size_t cap)
{
    char path[700];
    snprintf(path, sizeof path, "%s/run.json", outdir);
    cJSON *j;
    err_t e = ERR_INIT;
    if (json_load_file(path, 1 << 20, &j, &e))
        fail_msg("%s", e.msg);
    size_t at = 0;
    buf[0] = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(j, "stages"))
        at += (size_t)snprintf(buf + at, cap - at, "%s%s=%s", at ? "," : "",
                               cJSON_GetObjectItem(s, "stage")->valuestring,
                               cJSON_GetObjectItem(s, "status")->valuestring);
    cJSON_Delete(j);
}

#define BUILT "data=%s,tokenizer=%s,pretrain=%s,sft=%s,rm=%s,judge=%s"

/* The first six stages' statuses are want; every later stage has the status `later`
 * (not_reached after --until judge) or not_built. Stages added later need no edit here. */
static void expect_statuses(const char *outdir, const char *want, const char *later)
{
    char got[2048];
    run_statuses(outdir, got, sizeof got);
    size_t n = strlen(want);
    bool ok = !strncmp(got, want, n) && (got[n] == 0 || got[n] == ',');
    for (const char *p = got + n; ok && *p == ','; ) {
        const char *eq = strchr(p, '='), *end = strchr(p + 1, ',');
        size_t len = end ? (size_t)(end - eq - 1) : strlen(eq + 1);
        ok = eq && ((len == strlen(later) && !strncmp(eq + 1, later, len)) ||
                    (len == 9 && !strncmp(eq + 1, "not_built", 9)));
        p = end ? end : p + strlen(p);
    }
    if (!ok)
        fail_msg("expected stages\n  %s, then every later stage %s\ngot\n  %s", want, later, got);
}

static void run_caches_every_stage_and_reruns_from_a_changed_section(void **state)
{
    (void)state;
    char *o = NULL, want[1024];
    int rc = test_cli(&o, "run --output %s --config %s --until judge", out, cfg_path);
    if (rc)
        fail_msg("first run: exit %d\n%s", rc, o);
    snprintf(want, sizeof want, BUILT, "ran", "ran", "ran", "ran", "ran", "ran");
    expect_statuses(out, want, "not_reached");
    free(o);
    const char *files[] = {"config.json", "data/split.json", "data/pairs.jsonl",
                           "tokenizer/tokenizer.json", "pretrain/model.safetensors",
                           "sft/model.safetensors", "sft/tokenizer.json", "rm/rm_metrics.json",
                           "judge/rm_metrics.json", "rm/stage.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *p = fs_join(out, files[i]);
        if (!fs_exists(p))
            fail_msg("expected %s after the run", p);
        free(p);
    }

    /* the same inputs: everything is reused */
    assert_int_equal(test_cli(&o, "run --output %s --config %s --until judge", out, cfg_path), 0);
    snprintf(want, sizeof want, BUILT, "reused", "reused", "reused", "reused", "reused",
             "reused");
    expect_statuses(out, want, "not_reached");
    assert_non_null(strstr(o, "reusing"));
    free(o);

    /* one SFT value changed: SFT and what reads it run again, the rest is reused */
    assert_int_equal(test_cli(&o, "run --output %s --config %s --until judge --set sft.steps=4", out,
                              cfg_path), 0);
    snprintf(want, sizeof want, BUILT, "reused", "reused", "reused", "ran", "ran", "ran");
    expect_statuses(out, want, "not_reached");
    free(o);

    /* a judge value changed: only the judge runs */
    assert_int_equal(test_cli(&o, "run --output %s --config %s --until judge --set sft.steps=4 "
                                  "--set judge.seed=5", out, cfg_path), 0);
    snprintf(want, sizeof want, BUILT, "reused", "reused", "reused", "reused", "reused",
             "ran");
    expect_statuses(out, want, "not_reached");
    free(o);

    /* a damaged output is not reused */
    char *w = fs_join(out, "rm/model.safetensors");
    assert_int_equal(truncate(w, 100), 0);
    free(w);
    assert_int_equal(test_cli(&o, "run --output %s --config %s --until judge --set sft.steps=4 "
                                  "--set judge.seed=5", out, cfg_path), 0);
    snprintf(want, sizeof want, BUILT, "reused", "reused", "reused", "reused", "ran",
             "reused");
    expect_statuses(out, want, "not_reached");
    free(o);

    /* the saved configuration is the one used */
    char *cp = fs_join(out, "config.json");
    pipeline_config_t c;
    pipeline_config_default(&c);
    err_t e = ERR_INIT;
    assert_int_equal(pipeline_config_load(cp, &c, &e), 0);
    assert_int_equal(c.sft.steps, 4);
    assert_int_equal((int)c.judge.seed, 5);
    free(cp);
}

static void run_until_stops_and_sft_command_is_the_chain_up_to_sft(void **state)
{
    (void)state;
    char *o = NULL, o2[700], want[1024];
    snprintf(o2, sizeof o2, "%s/until", dir);
    assert_int_equal(test_cli(&o, "sft --output %s --config %s", o2, cfg_path), 0);
    snprintf(want, sizeof want, BUILT, "ran", "ran", "ran", "ran", "not_reached",
             "not_reached");
    expect_statuses(o2, want, "not_reached");
    free(o);
    assert_int_equal(test_cli(&o, "run --output %s --config %s --until nothing", o2, cfg_path), 2);
    free(o);
    /* --device overrides the sections' device keys, visibly, and the saved configuration
       says what was used (policies.backend: the deprecated name of policies.device) */
    assert_int_equal(test_cli(&o, "run --output %s --config %s --until data --device cpu "
                                  "--set sensitivity.device=cuda --set policies.backend=cuda:1",
                              o2, cfg_path), 0);
    if (!strstr(o, "--device cpu overrides sensitivity.device \"cuda\"") ||
        !strstr(o, "--device cpu overrides policies.device \"cuda:1\"") ||
        strstr(o, "overrides phase_sensitivity"))
        fail_msg("expected the two overrides to be logged, got:\n%s", o);
    free(o);
    char *saved = fs_join(o2, "config.json");
    pipeline_config_t c;
    pipeline_config_default(&c);
    err_t e = ERR_INIT;
    assert_int_equal(pipeline_config_load(saved, &c, &e), 0);
    assert_string_equal(c.sensitivity.backend, "cpu");
    assert_string_equal(c.policies.backend, "cpu");
    free(saved);
}

static void run_with_a_given_model_and_hh_file_skips_pretraining(void **state)
{
    (void)state;
    /* the first chain's SFT model and pairs file stand in for a user's model and data */
    char model[700], data[700], o3[700], want[1024], *o = NULL;
    snprintf(model, sizeof model, "%s/sft", out);
    snprintf(data, sizeof data, "%s/data/pairs.jsonl", out);
    snprintf(o3, sizeof o3, "%s/given", dir);
    int rc = test_cli(&o, "run --output %s --config %s --until judge --set data.pairs=100 "
                      "--model %s --data %s",
                      o3, cfg_path, model, data);
    if (rc)
        fail_msg("exit %d\n%s", rc, o);
    snprintf(want, sizeof want, BUILT, "ran", "ran", "skipped", "ran", "ran", "ran");
    expect_statuses(o3, want, "not_reached");
    free(o);
    /* the model's own tokenizer is used, byte for byte */
    char a[800], b[800];
    snprintf(a, sizeof a, "%s/tokenizer.json", model);
    snprintf(b, sizeof b, "%s/tokenizer/tokenizer.json", o3);
    size_t na, nb;
    char *ta = tiny_read(a, &na), *tb = tiny_read(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(ta, tb, na);
    free(ta);
    free(tb);
    /* rm with --model takes a fine-tuned model: no pretraining, no SFT */
    snprintf(o3, sizeof o3, "%s/given_rm", dir);
    assert_int_equal(test_cli(&o, "rm --output %s --config %s --model %s --no-judge", o3,
                              cfg_path, model), 0);
    snprintf(want, sizeof want, BUILT, "ran", "ran", "skipped", "skipped", "ran",
             "not_reached");
    expect_statuses(o3, want, "not_reached");
    free(o);
}

/* The later stages on the first chain's cached output: PPO with the monitor, the matrix,
 * the policies, the comparison and the report, each writing the study's files. */
static void run_continues_into_baseline_sensitivity_policies_compare_and_report(void **state)
{
    (void)state;
    char *o = NULL;
    int rc = test_cli(&o, "run --output %s --config %s", out, cfg_path);
    if (rc)
        fail_msg("exit %d\n%s", rc, o);
    free(o);
    char got[2048];
    run_statuses(out, got, sizeof got);
    if (!strstr(got, ",baseline=ran,") || !strstr(got, ",sensitivity=ran,") ||
        !strstr(got, ",phase_sensitivity=ran,") || !strstr(got, ",policies=ran") ||
        !strstr(got, ",compare=ran") || !strstr(got, ",report=ran"))
        fail_msg("expected baseline, sensitivity, phase_sensitivity, policies, compare and "
                 "report to run, got %s", got);
    const char *files[] = {"baseline/energy.csv", "baseline/phase_timing.json",
                           "baseline/training_stats.json", "baseline/power_log_baseline.csv",
                           "baseline/reward_by_step.svg", "sensitivity/sensitivity_matrix.csv",
                           "phase_sensitivity/sensitivity_rollout.csv",
                           "phase_sensitivity/sensitivity_reward.csv",
                           "phase_sensitivity/sensitivity_gradient.csv",
                           "policies/policies.json", "compare/policy_comparison.csv",
                           "compare/compare_runs.csv", "compare/comparison.json",
                           "report/report.md", "report/sensitivity_heatmap.svg", "report.md"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *p = fs_join(out, files[i]);
        if (!fs_exists(p))
            fail_msg("expected %s after the run", p);
        free(p);
    }
    char *p = fs_join(out, "baseline/energy.csv");
    size_t n;
    char *t = tiny_read(p, &n);
    if (strncmp(t, "phase,avg_power_W,runtime_s,energy_J", 36))
        fail_msg("energy.csv must start with the study's header, got %.60s", t);
    free(t);
    free(p);
    /* the report read the comparison: the control plan passed its check */
    p = fs_join(out, "report.md");
    t = tiny_read(p, &n);
    if (!strstr(t, "control check passed: win rate 0.5 exactly on all 2 seeds"))
        fail_msg("expected report.md to state the control check, got %.3000s", t);
    free(t);
    free(p);
}

/* ---- verify ----------------------------------------------------------------------------- */

static void verify_exit_codes_follow_what_was_asked(void **state)
{
    (void)state;
    char *o = NULL, model[700], data[700], bad[700];
    snprintf(model, sizeof model, "%s/sft", out);
    snprintf(data, sizeof data, "%s/data/pairs.jsonl", out);
    snprintf(bad, sizeof bad, "%s/bad.jsonl", dir);
    test_write_file(bad, "{\"chosen\": 1}\n", 14);

    assert_int_equal(test_cli(&o, "verify"), 0);
    assert_non_null(strstr(o, "cpu"));
    assert_non_null(strstr(o, "power:none"));
    free(o);
    int rc = test_cli(&o, "verify --model %s --data %s", model, data);
    if (rc)
        fail_msg("expected exit 0 for a loadable model and data, got %d:\n%s", rc, o);
    assert_non_null(strstr(o, "120 pairs found"));
    assert_non_null(strstr(o, "parameters"));
    free(o);
    assert_int_equal(test_cli(&o, "verify --model %s/nonexistent", dir), 2);
    free(o);
    assert_int_equal(test_cli(&o, "verify --data %s", bad), 2);
    free(o);
    /* a GPU required but its libraries absent: unavailable */
    assert_int_equal(test_cli(&o, "verify --require-gpu --cudart %s/no-libcudart.so "
                                  "--nvml-lib %s/no-libnvidia-ml.so", dir, dir), 3);
    assert_non_null(strstr(o, "cuda_runtime"));
    free(o);
}

int main(int argc, char **argv)
{
    (void)argc;
    tiny_omp_passive(argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(config_defaults_round_trip_through_json),
        cmocka_unit_test(every_section_table_gives_defaults_help_and_round_trips),
        cmocka_unit_test(options_suggest_the_nearest_key_and_refuse_repeats),
        cmocka_unit_test(config_unknown_key_names_the_file_section_and_key),
        cmocka_unit_test(config_file_and_overrides_apply_in_order),
        cmocka_unit_test(config_command_prints_defaults_and_checks_files),
        cmocka_unit_test(run_caches_every_stage_and_reruns_from_a_changed_section),
        cmocka_unit_test(run_until_stops_and_sft_command_is_the_chain_up_to_sft),
        cmocka_unit_test(run_with_a_given_model_and_hh_file_skips_pretraining),
        cmocka_unit_test(run_continues_into_baseline_sensitivity_policies_compare_and_report),
        cmocka_unit_test(verify_exit_codes_follow_what_was_asked),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
