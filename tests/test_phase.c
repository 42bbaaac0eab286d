/* Tests for the phase sensitivity (src/profile/phase.h): with nothing quantized each
 * phase's metric is exactly its identity (KL 0, Spearman 1, cosine 1), a quantized layer
 * moves it, the baseline reward accuracy is the reward-model stage's own, the CSVs have the
 * study's columns with the phase's metrics, workers and resuming change no byte, a record
 * for other settings is refused, and the command writes its files. Tiny Philox models on
 * the small synthetic tokenizer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/qwen2.h"
#include "profile/phase.h"
#include "rlhf/rm.h"
#include "support/testutil.h"
#include "tokenizer/tokenizer.h"
#include "util/atomic_file.h"
#include "util/fs.h"
#include "util/json.h"

#define TOKFILE "tests/fixtures/tokenizer/small_synthetic.json"

static char *root;       /* pol/ (policy), rm/ (reward model), hh.jsonl */
static char *pol_dir, *rm_dir, *hh_path;
static data_pair_t pairs[6];
static const data_pair_t *pair_ptrs[6];

static const char *const TURNS[6][3] = {
    {"How do I boil an egg?", "Put it in boiling water for eight minutes, then cool it.", "No."},
    {"Name a color.", "Blue, like the sky on a clear summer day.", "I will not."},
    {"What is a good name for a cat?", "Whiskers is a classic name for a cat.", "Dog."},
    {"Tell me about gardening.", "Plants need soil, water, sunlight and some patience.", "Why?"},
    {"How far is the moon?", "About 384,000 kilometres from the earth on average.", "Far."},
    {"Give me a fruit.", "An apple, crisp and sweet, is a fine fruit to eat.", "Rocks."},
};

static char *path2(const char *a, const char *b)
{
    char *p = fs_join(a, b);
    assert_non_null(p);
    return p;
}

static void make_model(const char *dir, unsigned heads, uint64_t seed)
{
    err_t e = ERR_INIT;
    tok_t *tok;
    backend_t *be;
    if (tok_load(TOKFILE, &tok, &e) || be_cpu_open(&be, &e))
        fail_msg("%s", e.msg);
    qwen2_config_t c = {.hidden = 32, .inter = 48, .layers = 2, .heads = 4, .kv_heads = 2,
                        .head_dim = 8, .vocab = tok_vocab_size(tok), .max_pos = 256,
                        .rope_theta = 10000, .rms_eps = 1e-6, .tie = true, .dtype = ST_F32,
                        .bos_id = -1, .pad_id = -1};
    qwen2_opts_t o = {.max_batch = 1, .max_seq = 8, .heads = heads, .head_seed = seed};
    qwen2_model_t *m;
    if (qwen2_new(be, &c, &o, &m, &e) || qwen2_init_philox(m, seed, 0.3f, &e) ||
        qwen2_save_dir(m, dir, ST_F32, &e))
        fail_msg("%s", e.msg);
    qwen2_free(m);
    be_close(be);
    tok_free(tok);
    char *buf, *dst = path2(dir, "tokenizer.json");
    size_t n;
    assert_int_equal(fs_read_all(TOKFILE, 1 << 24, &buf, &n, &e), 0);
    assert_int_equal(atomic_write(dst, buf, n, &e), 0);
    free(buf);
    free(dst);
}

static int setup(void **state)
{
    (void)state;
    root = test_mkdtemp();
    pol_dir = path2(root, "pol");
    rm_dir = path2(root, "rm");
    hh_path = path2(root, "hh.jsonl");
    make_model(pol_dir, QWEN2_HEAD_LM, 11);
    make_model(rm_dir, QWEN2_HEAD_SCORE, 12);
    FILE *f = fopen(hh_path, "w");
    for (int i = 0; i < 6; i++) {
        char prompt[256];
        snprintf(prompt, sizeof prompt, "\n\nHuman: %s\n\nAssistant:", TURNS[i][0]);
        pairs[i] = (data_pair_t){strdup(prompt), strdup(TURNS[i][1]), strdup(TURNS[i][2]), 0};
        pair_ptrs[i] = &pairs[i];
        fprintf(f, "{\"chosen\": \"\\n\\nHuman: %s\\n\\nAssistant: %s\", "
                   "\"rejected\": \"\\n\\nHuman: %s\\n\\nAssistant: %s\"}\n",
                TURNS[i][0], TURNS[i][1], TURNS[i][0], TURNS[i][2]);
    }
    fclose(f);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 6; i++)
        data_pair_free(&pairs[i]);
    test_rmtree(root);
    free(root);
    free(pol_dir);
    free(rm_dir);
    free(hh_path);
    return 0;
}

/* Two specs (the study's pair at block 8), small samples: a sweep is 2 x 15 + 2 cells. */
static void small_opts(phase_sensitivity_opts_t *o)
{
    phase_sensitivity_opts_default(o);
    o->sweep.nformats = 2;
    o->sweep.formats[0] = MX_FP8_E4M3;
    o->sweep.formats[1] = MX_FP4_E2M1;
    o->sweep.nblocks = 1;
    o->sweep.blocks[0] = 8;
    o->sweep.eval.tokens = 48;
    o->rollout_prompts = 4;
    o->rollout_max_new_tokens = 6;
    o->reward_batch = 4;   /* 6 pairs: a full batch and a short one */
}

static ppo_opts_t sampling(void)
{
    ppo_opts_t p;
    ppo_opts_default(&p);
    p.min_new_tokens = 2;
    return p;
}

static profile_phase_t *open_phase(prec_phase_t ph, const phase_sensitivity_opts_t *o, int nw)
{
    static ppo_opts_t po;
    po = sampling();
    profile_phase_inputs_t in = {pol_dir, rm_dir, pair_ptrs, 6, &po, NULL};
    profile_phase_t *p;
    err_t e = ERR_INIT;
    if (profile_phase_open(ph, o, &in, nw, &p, &e))
        fail_msg("opening phase %s: %s", prec_phase_name(ph), e.msg);
    return p;
}

static void measure(profile_phase_t *p, int w, const char *layer, const char *spec_text,
                    double *v)
{
    err_t e = ERR_INIT;
    mx_spec_t s;
    if ((spec_text && mx_spec_parse(spec_text, &s, &e)) ||
        profile_phase_measure(p, w, layer, spec_text ? &s : NULL, v, &e))
        fail_msg("%s %s: %s", layer ? layer : "every layer", spec_text ? spec_text : "none",
                 e.msg);
}

#define Q_LAYER "model.layers.1.mlp.down_proj"

/* ---- the identities ------------------------------------------------------------------- */

static void gradient_in_float32_has_cosine_exactly_one_and_mxfp4_moves_it(void **state)
{
    (void)state;
    phase_sensitivity_opts_t o;
    small_opts(&o);
    profile_phase_t *p = open_phase(PREC_GRADIENT, &o, 1);
    const double *base = profile_phase_baseline(p);
    assert_true(base[0] == 1.0 && base[1] == 0.0);
    double v[PHASE_NVALUES];
    /* an fp32 "quantization" of every gradient-phase operand of a layer, and of all */
    measure(p, 0, Q_LAYER, "fp32", v);
    if (v[0] != 1.0 || v[1] != 0.0)
        fail_msg("fp32: expected cosine 1 and rel_error 0 exactly, got %.17g and %.17g", v[0],
                 v[1]);
    measure(p, 0, NULL, "fp32", v);
    assert_true(v[0] == 1.0 && v[1] == 0.0);
    measure(p, 0, Q_LAYER, "mxfp4_e2m1/8", v);
    if (!(v[0] < 1.0 && v[0] > 0.5 && v[1] > 0))
        fail_msg("mxfp4 down_proj: expected 0.5 < cosine < 1 and rel_error > 0, got %.17g, %.17g",
                 v[0], v[1]);
    double v8[PHASE_NVALUES];
    measure(p, 0, Q_LAYER, "mxfp8_e4m3/8", v8);
    if (!(v8[0] > v[0] && v8[0] < 1.0))
        fail_msg("expected mxfp8 closer than mxfp4: cosine %.17g vs %.17g", v8[0], v[0]);
    /* the backward operands alone change the gradient but not the forward */
    profile_phase_close(p);
    o.gradient_operands = PHASE_GRAD_BACKWARD;
    p = open_phase(PREC_GRADIENT, &o, 1);
    double vb[PHASE_NVALUES];
    measure(p, 0, Q_LAYER, "mxfp4_e2m1/8", vb);
    assert_true(vb[0] < 1.0 && vb[0] != v[0]);
    profile_phase_close(p);
}

static void rollout_without_quantization_has_kl_exactly_zero_and_a_quantized_layer_moves_it(
    void **state)
{
    (void)state;
    phase_sensitivity_opts_t o;
    small_opts(&o);
    profile_phase_t *p = open_phase(PREC_ROLLOUT, &o, 2);
    const double *base = profile_phase_baseline(p);
    if (base[0] != 0.0)
        fail_msg("baseline kl: expected 0 exactly, got %.17g", base[0]);
    assert_true(isfinite(base[1]));
    double v[PHASE_NVALUES];
    /* the same random numbers in every cell: fp32 gives the baseline's samples again, on
       either worker */
    measure(p, 1, "lm_head", "fp32", v);
    if (v[0] != 0.0 || v[1] != base[1])
        fail_msg("fp32 lm_head: expected kl 0 and reward %.17g, got %.17g and %.17g", base[1],
                 v[0], v[1]);
    measure(p, 0, Q_LAYER, "mxfp4_e2m1/8", v);
    if (!(v[0] > 0 && isfinite(v[1])))
        fail_msg("mxfp4 down_proj: expected kl > 0, got %.17g (reward %.17g)", v[0], v[1]);
    double w[PHASE_NVALUES];
    measure(p, 0, NULL, "mxfp4_e2m1/8", w);
    assert_true(w[0] > 0);
    /* a measurement leaves the table unquantized: the baseline again */
    measure(p, 0, NULL, NULL, v);
    assert_true(v[0] == 0.0 && v[1] == base[1]);
    profile_phase_close(p);
}

static void reward_identity_keeps_the_stage_accuracy_and_spearman_one(void **state)
{
    (void)state;
    phase_sensitivity_opts_t o;
    small_opts(&o);
    profile_phase_t *p = open_phase(PREC_REWARD, &o, 1);
    assert_int_equal(profile_phase_nlayers(p), 14);   /* no lm_head on a reward model */
    const double *base = profile_phase_baseline(p);
    /* the baseline accuracy is the reward-model stage's evaluation of the same pairs */
    backend_t *be;
    err_t e = ERR_INIT;
    rlhf_rm_opts_t ro;
    rlhf_rm_opts_default(&ro);
    rlhf_rm_metrics_t m;
    if (be_cpu_open(&be, &e) || rlhf_rm_evaluate_dir(be, &ro, rm_dir, pair_ptrs, 6, &m, NULL,
                                                     NULL, &e))
        fail_msg("%s", e.msg);
    be_close(be);
    if (base[0] != m.accuracy || base[1] != 1.0)
        fail_msg("baseline: expected accuracy %.17g (the rm stage's) and spearman 1, got %.17g "
                 "and %.17g", m.accuracy, base[0], base[1]);
    double v[PHASE_NVALUES];
    measure(p, 0, "model.layers.1.self_attn.k_proj", "fp32", v);   /* from the residual cache */
    assert_true(v[0] == base[0] && v[1] == 1.0);
    measure(p, 0, NULL, "fp32", v);
    assert_true(v[0] == base[0] && v[1] == 1.0);
    measure(p, 0, NULL, "mxfp4_e2m1/8", v);
    if (!(v[1] < 1.0 && v[1] > -1.0))
        fail_msg("whole reward model in mxfp4: expected spearman < 1, got %.17g", v[1]);
    profile_phase_close(p);
}

/* ---- files ---------------------------------------------------------------------------- */

static char *slurp(const char *path)
{
    char *t;
    size_t n;
    err_t e = ERR_INIT;
    if (fs_read_all(path, 1 << 26, &t, &n, &e))
        fail_msg("%s", e.msg);
    return t;
}

static char *sweep_csv(profile_phase_t *p, const phase_sensitivity_opts_t *o, const char *cells,
                       bool resume, const char *csv, profile_phase_matrix_t *mx)
{
    err_t e = ERR_INIT;
    if (profile_phase_sweep(p, cells, resume, NULL, NULL, mx, &e) ||
        profile_phase_write_csv(mx, o, csv, &e))
        fail_msg("%s", e.msg);
    return slurp(csv);
}

static void csv_header_is_the_study_columns_with_each_phase_metric(void **state)
{
    (void)state;
    phase_sensitivity_opts_t o;
    small_opts(&o);
    char *dir = test_mkdtemp(), *cells = path2(dir, "c.jsonl"), *csv = path2(dir, "m.csv");
    static const char *const want[] = {
        "layer,mxfp4_g8_kl,mxfp4_g8_reward,mxfp4_g8_reward_delta,mxfp8_g8_kl,mxfp8_g8_reward,"
        "mxfp8_g8_reward_delta,mxfp4_tolerant,mxfp8_tolerant,mxfp8_e4m3_g8_kl,"
        "mxfp8_e4m3_g8_reward,mxfp8_e4m3_g8_reward_delta,mxfp8_e4m3_g8_tolerant,"
        "mxfp4_e2m1_g8_kl,mxfp4_e2m1_g8_reward,mxfp4_e2m1_g8_reward_delta,"
        "mxfp4_e2m1_g8_tolerant\n",
        "layer,mxfp4_g8_accuracy,mxfp4_g8_accuracy_delta,mxfp4_g8_spearman,mxfp8_g8_accuracy,"
        "mxfp8_g8_accuracy_delta,mxfp8_g8_spearman,mxfp4_tolerant,mxfp8_tolerant,"
        "mxfp8_e4m3_g8_accuracy,mxfp8_e4m3_g8_accuracy_delta,mxfp8_e4m3_g8_spearman,"
        "mxfp8_e4m3_g8_tolerant,mxfp4_e2m1_g8_accuracy,mxfp4_e2m1_g8_accuracy_delta,"
        "mxfp4_e2m1_g8_spearman,mxfp4_e2m1_g8_tolerant\n",
        "layer,mxfp4_g8_cosine,mxfp4_g8_rel_error,mxfp8_g8_cosine,mxfp8_g8_rel_error,"
        "mxfp4_tolerant,mxfp8_tolerant,mxfp8_e4m3_g8_cosine,mxfp8_e4m3_g8_rel_error,"
        "mxfp8_e4m3_g8_tolerant,mxfp4_e2m1_g8_cosine,mxfp4_e2m1_g8_rel_error,"
        "mxfp4_e2m1_g8_tolerant\n"};
    for (int ph = 0; ph < PREC_PHASE_COUNT; ph++) {
        profile_phase_t *p = open_phase((prec_phase_t)ph, &o, 2);
        profile_phase_matrix_t mx;
        char *t = sweep_csv(p, &o, cells, false, csv, &mx);
        if (strncmp(t, want[ph], strlen(want[ph])))
            fail_msg("phase %s header:\n  expected %s  got      %.*s", prec_phase_name(ph),
                     want[ph], (int)(strchr(t, '\n') - t + 1), t);
        int lines = 0;
        for (char *q = t; *q; q++)
            lines += *q == '\n';
        assert_int_equal(lines, 1 + (ph == PREC_REWARD ? 14 : 15));
        /* the study's columns repeat the full-name ones, tolerance included */
        char *row = strchr(t, '\n') + 1;
        assert_true(!strncmp(row, "model.layers.0.self_attn.q_proj,", 32));
        assert_int_equal((int)mx.cells_run, (ph == PREC_REWARD ? 14 : 15) * 2 + 2);
        free(t);
        profile_phase_matrix_free(&mx);
        profile_phase_close(p);
    }
    test_rmtree(dir);
    free(cells);
    free(csv);
    free(dir);
}

static void workers_and_resume_give_the_same_files(void **state)
{
    (void)state;
    phase_sensitivity_opts_t o;
    small_opts(&o);
    char *dir = test_mkdtemp(), *cells = path2(dir, "c.jsonl"), *csv = path2(dir, "m.csv");
    for (int ph = 0; ph < PREC_PHASE_COUNT; ph++) {
        profile_phase_t *p1 = open_phase((prec_phase_t)ph, &o, 1),
                        *p3 = open_phase((prec_phase_t)ph, &o, 3);
        profile_phase_matrix_t a, b, r;
        char *ta = sweep_csv(p1, &o, cells, false, csv, &a);
        char *full = slurp(cells);
        char *tb = sweep_csv(p3, &o, cells, false, csv, &b);
        if (strcmp(ta, tb))
            fail_msg("phase %s: 1 and 3 workers differ:\n%s\n---\n%s", prec_phase_name(ph), ta,
                     tb);
        /* interrupted after 11 cells, the next line torn mid-write */
        char *q = full;
        for (int k = 0; k < 12; k++)
            q = strchr(q, '\n') + 1;
        size_t keep = (size_t)(q - full);
        test_write_file(cells, full, keep);
        FILE *f = fopen(cells, "a");
        fputs("{\"cell\":\"layer\",\"la", f);
        fclose(f);
        char *tr = sweep_csv(p3, &o, cells, true, csv, &r);
        assert_int_equal(r.cells_resumed, 11);
        assert_int_equal(r.cells_run, a.cells_run - 11);
        assert_string_equal(ta, tr);
        free(ta), free(tb), free(tr), free(full);
        profile_phase_matrix_free(&a);
        profile_phase_matrix_free(&b);
        profile_phase_matrix_free(&r);
        /* a record made for other settings (more prompts, another reward batch, other gradient
           operands) is refused */
        phase_sensitivity_opts_t o2 = o;
        o2.rollout_prompts = 5;
        o2.reward_batch = 2;
        o2.gradient_operands = PHASE_GRAD_BACKWARD;
        profile_phase_t *p2 = open_phase((prec_phase_t)ph, &o2, 1);
        profile_phase_matrix_t x;
        err_t e = ERR_INIT;
        assert_int_equal(profile_phase_sweep(p2, cells, true, NULL, NULL, &x, &e), ERR_INPUT);
        assert_non_null(strstr(e.msg, "fingerprint"));
        profile_phase_close(p2);
        profile_phase_close(p1);
        profile_phase_close(p3);
    }
    test_rmtree(dir);
    free(cells);
    free(csv);
    free(dir);
}

static void tolerance_follows_each_phase_rule(void **state)
{
    (void)state;
    phase_sensitivity_opts_t o;
    phase_sensitivity_opts_default(&o);
    const double rb[2] = {0, 0.3}, wb[2] = {0.8, 1}, gb[2] = {1, 0};
    double v[2];
    v[0] = 0.059, v[1] = -5;   /* a small KL is tolerant whatever the reward did */
    assert_true(profile_phase_tolerant(&o, PREC_ROLLOUT, v, rb));
    v[0] = 0.06;
    assert_false(profile_phase_tolerant(&o, PREC_ROLLOUT, v, rb));
    v[0] = 0.795, v[1] = 0.9995;   /* half a point down, rho above 0.999 */
    assert_true(profile_phase_tolerant(&o, PREC_REWARD, v, wb));
    v[0] = 0.79;
    assert_false(profile_phase_tolerant(&o, PREC_REWARD, v, wb));
    v[0] = 0.85, v[1] = 0.998;   /* accuracy up, ranks moved */
    assert_false(profile_phase_tolerant(&o, PREC_REWARD, v, wb));
    v[0] = 0.995, v[1] = 0.1;
    assert_true(profile_phase_tolerant(&o, PREC_GRADIENT, v, gb));
    v[0] = 0.99;
    assert_false(profile_phase_tolerant(&o, PREC_GRADIENT, v, gb));
    v[0] = NAN;
    assert_false(profile_phase_tolerant(&o, PREC_GRADIENT, v, gb));
    double cols[PHASE_MAX_COLUMNS];
    v[0] = 0.75, v[1] = 0.9;
    profile_phase_derive(PREC_REWARD, v, wb, cols);
    assert_true(fabs(cols[1] - -5.0) < 1e-12);
    /* 0.58 against 0.59 is a drop of exactly one point (in doubles, 1.0000000000000009):
     * the CSV shows -1 and the 1-point rule (drop < 1) calls it sensitive on every machine,
     * as it calls 0.57 -> 0.58's 0.99999999999999911 one */
    const double wb2[2] = {0.59, 1}, wb3[2] = {0.58, 1};
    v[0] = 0.58, v[1] = 1;
    profile_phase_derive(PREC_REWARD, v, wb2, cols);
    assert_true(cols[1] == -1.0);
    assert_false(profile_phase_tolerant(&o, PREC_REWARD, v, wb2));
    v[0] = 0.57;
    assert_false(profile_phase_tolerant(&o, PREC_REWARD, v, wb3));
}

static void options_round_trip_and_name_bad_keys(void **state)
{
    (void)state;
    phase_sensitivity_opts_t o, back;
    phase_sensitivity_opts_default(&o);
    o.rollout_prompts = 9;
    o.gradient_operands = PHASE_GRAD_BACKWARD;
    o.sweep.eval.tokens = 100;
    o.sweep.nblocks = 1;
    cJSON *j = opts_to_json(&phase_sensitivity_opts_table, &o);
    assert_null(cJSON_GetObjectItem(j, "threshold_pct"));
    phase_sensitivity_opts_default(&back);
    err_t e = ERR_INIT;
    if (opts_from_json(&phase_sensitivity_opts_table, j, "cfg.phase_sensitivity", &back, &e))
        fail_msg("%s", e.msg);
    cJSON *k = opts_to_json(&phase_sensitivity_opts_table, &back);
    char *a = cJSON_PrintUnformatted(j), *b = cJSON_PrintUnformatted(k);
    assert_string_equal(a, b);
    free(a);
    free(b);
    cJSON_Delete(k);
    static const char *const bad[][2] = {
        {"{\"rollout_promts\": 3}", "rollout_promts"},
        {"{\"threshold_pct\": 3}", "threshold_pct"},
        {"{\"gradient_operands\": \"forward\"}", "gradient_operands"},
        {"{\"reward_min_spearman\": 1.5}", "reward_min_spearman"},
        {"{\"blocks\": [16]}", "block 8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *x = cJSON_Parse(bad[i][0]);
        err_clear(&e);
        phase_sensitivity_opts_default(&back);
        assert_int_equal(opts_from_json(&phase_sensitivity_opts_table, x, "cfg.phase_sensitivity", &back, &e),
                         ERR_INPUT);
        if (!strstr(e.msg, bad[i][1]) || !strstr(e.msg, "cfg.phase_sensitivity"))
            fail_msg("%s: expected a message naming %s, got %s", bad[i][0], bad[i][1], e.msg);
        cJSON_Delete(x);
    }
    cJSON_Delete(j);
}

static void command_writes_the_phase_files_and_refuses_bad_input(void **state)
{
    (void)state;
    char *out;
    int rc = test_cli(&out, "sensitivity --phase reward --reward-model %s --eval %s "
                            "--output %s/res/sensitivity_reward.csv --formats "
                            "mxfp8_e4m3,mxfp4_e2m1 --blocks 8 --quiet", rm_dir, hh_path, root);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    assert_non_null(strstr(out, "phase reward: 14 layers"));
    free(out);
    const char *files[] = {"sensitivity_reward.csv", "sensitivity_reward_summary.csv",
                           "sensitivity_reward_cells.jsonl", "sensitivity_reward_metrics.json"};
    for (int i = 0; i < 4; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/res/%s", root, files[i]);
        if (!fs_exists(p))
            fail_msg("%s was not written", p);
    }
    char p[512];
    snprintf(p, sizeof p, "%s/res/sensitivity_reward_summary.csv", root);
    char *t = slurp(p);
    const char *head = "row,format,block,accuracy,accuracy_delta,spearman,tolerant\n"
                       "baseline,fp32,,";
    if (strncmp(t, head, strlen(head)))
        fail_msg("summary: expected it to start with\n%s\ngot\n%s", head, t);
    free(t);
    rc = test_cli(&out, "sensitivity --phase rollout --model %s --eval %s --output %s/x.csv",
                  pol_dir, hh_path, root);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "--reward-model"));
    free(out);
    rc = test_cli(&out, "sensitivity --phase rollout --model %s --reward-model %s --eval %s "
                        "--output %s/x.csv", pol_dir, pol_dir, hh_path, root);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "not a reward model"));
    free(out);
    rc = test_cli(&out, "sensitivity --phase policy --model %s", pol_dir);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "--phase"));
    free(out);
    rc = test_cli(&out, "sensitivity --model %s --reward-model %s", pol_dir, rm_dir);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "--reward-model goes with --phase"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gradient_in_float32_has_cosine_exactly_one_and_mxfp4_moves_it),
        cmocka_unit_test(
            rollout_without_quantization_has_kl_exactly_zero_and_a_quantized_layer_moves_it),
        cmocka_unit_test(reward_identity_keeps_the_stage_accuracy_and_spearman_one),
        cmocka_unit_test(csv_header_is_the_study_columns_with_each_phase_metric),
        cmocka_unit_test(workers_and_resume_give_the_same_files),
        cmocka_unit_test(tolerance_follows_each_phase_rule),
        cmocka_unit_test(options_round_trip_and_name_bad_keys),
        cmocka_unit_test(command_writes_the_phase_files_and_refuses_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
