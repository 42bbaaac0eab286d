/* test_preset: the embedded default's presets (pipeline/preset.h) and `mxrlhf run`'s choice
 * of one, config.json's record of it, --stop-after, and the GPU preset's whole chain run on
 * the CPU at the tiny configuration's sizes (tests/fixtures/pin/tiny.json over the preset). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/qwen2.h"
#include "pipeline/config.h"
#include "pipeline/preset.h"
#include "support/testutil.h"
#include "util/fs.h"
#include "util/json.h"

/* ---- the presets themselves ------------------------------------------------------------ */

static void auto_choice_is_gpu_only_for_cuda_on_the_embedded_default(void **state)
{
    (void)state;
    assert_string_equal(pipeline_preset_auto("cuda", true), "gpu");
    assert_string_equal(pipeline_preset_auto("cuda:1", true), "gpu");
    assert_string_equal(pipeline_preset_auto("cpu", true), "cpu");
    assert_string_equal(pipeline_preset_auto(NULL, true), "cpu");
    assert_string_equal(pipeline_preset_auto("cudax", true), "cpu");
    assert_string_equal(pipeline_preset_auto("cuda", false), "cpu");
}

static void cpu_preset_is_the_built_in_defaults(void **state)
{
    (void)state;
    pipeline_config_t a, b;
    err_t e = ERR_INIT;
    pipeline_config_default(&a);
    memset(&b, 0x5a, sizeof b);
    assert_int_equal(pipeline_preset_apply(&b, "cpu", &e), ERR_OK);
    assert_string_equal(b.preset, "");
    /* the same JSON: the CPU default's config.json does not change */
    cJSON *ja = pipeline_config_to_json(&a), *jb = pipeline_config_to_json(&b);
    char *sa = cJSON_PrintUnformatted(ja), *sb = cJSON_PrintUnformatted(jb);
    assert_string_equal(sa, sb);
    assert_null(strstr(sa, "\"preset\""));
    cJSON_free(sa);
    cJSON_free(sb);
    cJSON_Delete(ja);
    cJSON_Delete(jb);
}

static void gpu_preset_sizes_a_model_that_learns_the_topic(void **state)
{
    (void)state;
    pipeline_config_t c, d;
    err_t e = ERR_INIT;
    pipeline_config_default(&d);
    assert_int_equal(pipeline_preset_apply(&c, "gpu", &e), ERR_OK);
    assert_string_equal(c.preset, "gpu");
    /* the corpus's vocabulary stops at 2,741 ids (docs/rlhf.md) */
    qwen2_config_t q = {.hidden = c.model.hidden, .inter = c.model.intermediate,
                        .layers = c.model.layers, .heads = c.model.heads,
                        .kv_heads = c.model.kv_heads, .head_dim = c.model.hidden / c.model.heads,
                        .vocab = 2741, .max_pos = c.model.max_position, .tie = c.model.tie,
                        .rope_theta = c.model.rope_theta, .rms_eps = c.model.rms_eps};
    if (qwen2_config_check(&q, "gpu preset", &e))
        fail_msg("%s", e.msg);
    size_t n = qwen2_config_nparams(&q);
    print_message("gpu preset: %zu parameters\n", n);
    /* the measured choice (docs/rlhf.md, "The GPU preset"): head size 32, the width that
     * learnt the topic conditioning in the budget, 3.7 M parameters */
    assert_int_equal(c.model.hidden / c.model.heads, 32);
    assert_in_range(n, 3000000, 5000000);
    /* what the issue fixes: 100 PPO steps, 3 seeds, calibrated energy, a warm-up */
    assert_int_equal(c.ppo.steps, 100);
    assert_int_equal(c.compare.seeds, 3);
    assert_true(c.compare.calibrate_s > 0);
    assert_true(c.compare.warmup_steps > 0);
    assert_true(c.baseline.calibrate);
    /* sections the preset does not name keep their defaults */
    assert_memory_equal(&c.tokenizer, &d.tokenizer, sizeof c.tokenizer);
    assert_memory_equal(&c.dist, &d.dist, sizeof c.dist);
}

static void unknown_preset_names_the_known_ones(void **state)
{
    (void)state;
    pipeline_config_t c;
    err_t e = ERR_INIT;
    pipeline_config_default(&c);
    assert_int_equal(pipeline_preset_apply(&c, "tpu", &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "\"tpu\""));
    assert_non_null(strstr(e.msg, "\"gpu\""));
}

/* A file naming a preset is read as defaults + preset + the file's sections; its record
 * round-trips. */
static void config_file_preset_round_trips_under_its_sections(void **state)
{
    (void)state;
    pipeline_config_t c, g;
    err_t e = ERR_INIT;
    pipeline_config_default(&c);
    c.model.layers = 3; /* a value before the file: the preset starts again from defaults */
    cJSON *j = cJSON_Parse("{\"model\": {\"hidden\": 64}, \"preset\": \"gpu\"}");
    assert_non_null(j);
    assert_int_equal(pipeline_config_from_json(j, "f.json", &c, &e), ERR_OK);
    cJSON_Delete(j);
    assert_int_equal(pipeline_preset_apply(&g, "gpu", &e), ERR_OK);
    assert_string_equal(c.preset, "gpu");
    assert_int_equal(c.model.hidden, 64);
    assert_int_equal(c.model.layers, g.model.layers);
    assert_int_equal(c.pretrain.tokens, g.pretrain.tokens);
    /* written and read back: the same configuration */
    cJSON *w = pipeline_config_to_json(&c);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(w, "preset");
    assert_true(cJSON_IsString(p));
    assert_string_equal(p->valuestring, "gpu");
    pipeline_config_t r;
    pipeline_config_default(&r);
    assert_int_equal(pipeline_config_from_json(w, "w.json", &r, &e), ERR_OK);
    cJSON_Delete(w);
    assert_memory_equal(&r, &c, sizeof r);
    /* a wrong value is named */
    j = cJSON_Parse("{\"preset\": 7}");
    assert_int_equal(pipeline_config_from_json(j, "f.json", &c, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "f.json: field \"preset\""));
    cJSON_Delete(j);
    j = cJSON_Parse("{\"preset\": \"big\"}");
    e = (err_t)ERR_INIT;
    assert_int_equal(pipeline_config_from_json(j, "f.json", &c, &e), ERR_INPUT);
    if (!strstr(e.msg, "\"big\""))
        fail_msg("%s", e.msg);
    cJSON_Delete(j);
}

/* ---- mxrlhf run ------------------------------------------------------------------------ */

static char repo[2048];

static cJSON *load_json(const char *dir, const char *rel)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    cJSON *j = NULL;
    err_t e = ERR_INIT;
    if (json_load_file(path, 64u << 20, &j, &e))
        fail_msg("%s", e.msg);
    return j;
}

static double num_at(const cJSON *j, const char *section, const char *key)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, section);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, key);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static const char *preset_of(const cJSON *j)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "preset");
    return cJSON_IsString(p) ? p->valuestring : "";
}

/* `mxrlhf ARGS` from dir (the paths the run records are relative). */
static void run_cli(const char *dir, const char *args)
{
    char *o = NULL;
    assert_int_equal(chdir(dir), 0);
    int rc = test_cli(&o, "%s", args);
    assert_int_equal(chdir(repo), 0);
    if (rc)
        fail_msg("mxrlhf %s exited %d:\n%s", args, rc, o);
    free(o);
}

/* The choice by device: the data stage needs no backend, so `--device cuda` runs it here;
 * config.json records the preset, and --set still wins. */
static void run_picks_the_preset_by_device_and_records_it(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    run_cli(dir, "run --device cuda --until data --output g --set model.hidden=64 "
                 "--set data.corpus_docs=300 --set data.synth_pairs=200");
    run_cli(dir, "run --until data --output c --set data.corpus_docs=300 "
                 "--set data.synth_pairs=200");
    run_cli(dir, "run --device cuda --preset cpu --until data --output cc "
                 "--set data.corpus_docs=300 --set data.synth_pairs=200");
    cJSON *g = load_json(dir, "g/config.json"), *c = load_json(dir, "c/config.json"),
          *cc = load_json(dir, "cc/config.json");
    assert_string_equal(preset_of(g), "gpu");
    assert_int_equal((int)num_at(g, "model", "hidden"), 64);     /* --set wins */
    assert_int_equal((int)num_at(g, "model", "heads"), 8);       /* the preset's (CPU: 4) */
    assert_int_equal((long)num_at(g, "pretrain", "tokens"), 6000000);
    assert_string_equal(preset_of(c), "");
    assert_int_equal((int)num_at(c, "model", "hidden"), 128);    /* the CPU default */
    assert_int_equal((long)num_at(c, "pretrain", "tokens"), 4000000);
    assert_string_equal(preset_of(cc), "");
    assert_int_equal((int)num_at(cc, "model", "hidden"), 128);
    /* the run reads its own record back: a second call with --config reuses the stage */
    run_cli(dir, "run --device cuda --until data --output g --config g/config.json");
    cJSON *r = load_json(dir, "g/run.json");
    const cJSON *st = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "stages"), 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(st, "status")->valuestring, "reused");
    cJSON_Delete(r);
    cJSON_Delete(g);
    cJSON_Delete(c);
    cJSON_Delete(cc);
    test_rmtree(dir);
    free(dir);
}

static const char *stage_status(const cJSON *run, const char *name)
{
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(run, "stages"))
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(s, "stage");
        if (cJSON_IsString(n) && !strcmp(n->valuestring, name))
            return cJSON_GetObjectItemCaseSensitive(s, "status")->valuestring;
    }
    return "absent";
}

/* The GPU preset's chain on the CPU at the tiny sizes: every stage runs; a run stopped by
 * --stop-after starts nothing new and the next one goes on; a stage left half-written (as a
 * killed call leaves it: files, no stage.json) runs again from scratch. */
static void gpu_preset_chain_runs_scaled_down_and_resumes(void **state)
{
    (void)state;
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    char *dir = test_mkdtemp();
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s/tiny.json", dir);
    size_t n;
    FILE *f = fopen(test_fixture_path("pin/tiny.json"), "rb");
    assert_non_null(f);
    char buf[8192];
    n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    test_write_file(cfg, buf, n);
    /* calibration off: its seconds of repeated work measure nothing without a sensor */
    const char *common = "--preset gpu --config tiny.json --output r --set "
                         "baseline.calibrate=false --set compare.calibrate_s=0";
    char args[1024];
    snprintf(args, sizeof args, "run %s --until judge", common);
    run_cli(dir, args);
    /* out of time at once: the cached stages are reused, nothing else starts */
    snprintf(args, sizeof args, "run %s --stop-after 1e-9", common);
    run_cli(dir, args);
    cJSON *r = load_json(dir, "r/run.json");
    assert_string_equal(stage_status(r, "judge"), "reused");
    assert_string_equal(stage_status(r, "baseline"), "not_reached");
    assert_string_equal(stage_status(r, "report"), "not_reached");
    cJSON_Delete(r);
    /* a baseline stage killed half-way: a partial file, no stage.json */
    char p[4096];
    snprintf(p, sizeof p, "%s/r/baseline", dir);
    err_t e = ERR_INIT;
    assert_int_equal(fs_mkdir_p(p, &e), ERR_OK);
    snprintf(p, sizeof p, "%s/r/baseline/power_log_baseline.csv.partial", dir);
    test_write_file(p, "t,w\n0,", 6);
    snprintf(args, sizeof args, "run %s", common);
    run_cli(dir, args);
    r = load_json(dir, "r/run.json");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")));
    assert_string_equal(stage_status(r, "pretrain"), "reused");
    static const char *const ran[] = {"baseline", "sensitivity", "phase_sensitivity", "policies",
                                      "compare", "hw", "report"};
    for (size_t i = 0; i < sizeof ran / sizeof *ran; i++)
        if (strcmp(stage_status(r, ran[i]), "ran"))
            fail_msg("stage %s: %s, expected ran", ran[i], stage_status(r, ran[i]));
    cJSON_Delete(r);
    assert_false(fs_exists(p));
    /* the preset's values that tiny.json leaves alone reached the run */
    cJSON *c = load_json(dir, "r/config.json");
    assert_string_equal(preset_of(c), "gpu");
    assert_true(num_at(c, "ppo", "learning_rate") == 2e-5);
    assert_true(num_at(c, "sft", "lr") == 3e-4);
    assert_int_equal((int)num_at(c, "model", "hidden"), 32); /* tiny.json's */
    cJSON_Delete(c);
    snprintf(p, sizeof p, "%s/r/report/report.md", dir);
    assert_true(fs_exists(p));
    test_rmtree(dir);
    free(dir);
}

int main(int argc, char **argv)
{
    (void)argc;
    if (!getenv("OMP_WAIT_POLICY")) { /* spinning OpenMP threads on 2 cores: cmd_run.c */
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
    }
    /* the runs happen in their own directory: the binary's path must not be relative */
    const char *bin = getenv("MXRLHF_BIN");
    char abs[4096];
    if (!getcwd(repo, sizeof repo) || !realpath(bin && *bin ? bin : "build/asan/mxrlhf", abs)) {
        fprintf(stderr, "test_preset: cannot find the repository or the mxrlhf binary\n");
        return 1;
    }
    setenv("MXRLHF_BIN", abs, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(auto_choice_is_gpu_only_for_cuda_on_the_embedded_default),
        cmocka_unit_test(cpu_preset_is_the_built_in_defaults),
        cmocka_unit_test(gpu_preset_sizes_a_model_that_learns_the_topic),
        cmocka_unit_test(unknown_preset_names_the_known_ones),
        cmocka_unit_test(config_file_preset_round_trips_under_its_sections),
        cmocka_unit_test(run_picks_the_preset_by_device_and_records_it),
        cmocka_unit_test(gpu_preset_chain_runs_scaled_down_and_resumes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
