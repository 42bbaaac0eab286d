/* Tests for the policy comparison (pipeline/compare.h, profile/compare.h,
 * profile/modelled.h) and the study report (report/study.h): the statistics, the control
 * plan's check, the modelled traffic on a hand-computed case, an end-to-end comparison on
 * tiny random models (the control must win exactly half; policy_comparison.csv's layout),
 * and a report built from a hand-made results directory whose numbers must be the CSV's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/hh.h"
#include "data/split.h"
#include "model/qwen2.h"
#include "pipeline/compare.h"
#include "pipeline/config.h"
#include "profile/compare.h"
#include "profile/modelled.h"
#include "report/csv_read.h"
#include "report/study.h"
#include "rlhf/ppo_data.h"
#include "support/testutil.h"
#include "tokenizer/tokenizer.h"
#include "util/atomic_file.h"
#include "util/fs.h"
#include "util/json.h"

#define TOKFILE "tests/fixtures/tokenizer/small_synthetic.json"

#define assert_contains(hay, needle)                                                     \
    do {                                                                                 \
        if (!strstr((hay), (needle)))                                                    \
            fail_msg("expected to find \"%s\" in:\n%.4000s", (needle), (hay));           \
    } while (0)

static char *path2(const char *a, const char *b)
{
    char *p = fs_join(a, b);
    assert_non_null(p);
    return p;
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char *p = path2(dir, name);
    err_t e = ERR_INIT;
    if (atomic_write(p, text, strlen(text), &e))
        fail_msg("%s", e.msg);
    free(p);
}

static char *read_text(const char *dir, const char *name)
{
    char *p = path2(dir, name), *buf;
    size_t n;
    err_t e = ERR_INIT;
    if (fs_read_all(p, 1 << 26, &buf, &n, &e))
        fail_msg("%s", e.msg);
    free(p);
    return buf;
}

/* ---- statistics ------------------------------------------------------------------------------ */

static void confidence_intervals_use_student_t_over_seeds(void **state)
{
    (void)state;
    double x[] = {1, 2, 3};
    profile_stat_t s = profile_stat(x, 3);
    assert_int_equal(s.n, 3);
    assert_true(fabs(s.mean - 2) < 1e-12);
    assert_true(fabs(s.sd - 1) < 1e-12);
    /* t(0.975, 2) = 4.3026527; half-width = t * sd / sqrt(3) */
    if (fabs(s.ci95 - 4.3026527 / sqrt(3.0)) > 1e-6)
        fail_msg("ci95: expected %.7f, got %.7f", 4.3026527 / sqrt(3.0), s.ci95);
    /* missing values are left out; one value has no interval */
    double y[] = {NAN, 5, NAN};
    s = profile_stat(y, 3);
    assert_int_equal(s.n, 1);
    assert_true(s.mean == 5 && isnan(s.ci95) && isnan(s.sd));
    s = profile_stat(y, 1);
    assert_int_equal(s.n, 0);
    assert_true(isnan(s.mean));
    /* the t table and its continuation */
    assert_true(fabs(profile_t975(1) - 12.7062047) < 1e-6);
    assert_true(fabs(profile_t975(30) - 2.0422725) < 1e-6);
    assert_true(fabs(profile_t975(31) - 2.0395134) < 2e-4);
    assert_true(fabs(profile_t975(120) - 1.9799304) < 1e-4);
    assert_true(isnan(profile_t975(0)));
    /* paired ratios: per seed, then their interval */
    double num[] = {2, 3, 4}, den[] = {1, 1, 2};
    s = profile_ratio_stat(num, den, 3); /* ratios 2, 3, 2 */
    assert_true(fabs(s.mean - 7.0 / 3) < 1e-12);
    double sd = sqrt(((2 - 7.0 / 3) * (2 - 7.0 / 3) * 2 + (3 - 7.0 / 3) * (3 - 7.0 / 3)) / 2);
    assert_true(fabs(s.ci95 - 4.3026527 * sd / sqrt(3.0)) < 1e-6);
    double den0[] = {0, 1, NAN};
    s = profile_ratio_stat(num, den0, 3);
    assert_int_equal(s.n, 1);
    assert_true(s.mean == 3);
}

static void identical_samples_win_exactly_half(void **state)
{
    (void)state;
    int ties[64] = {0};
    assert_true(profile_win_rate(ties, 64) == 0.5);
    int mixed[4] = {1, -1, 0, 1};
    assert_true(profile_win_rate(mixed, 4) == (1 + 0 + 0.5 + 1) / 4.0);
    assert_true(isnan(profile_win_rate(mixed, 0)));
    assert_int_equal(profile_cmp(1.5, 1.5), 0);
    assert_int_equal(profile_cmp(2, 1), 1);
    assert_int_equal(profile_cmp(NAN, 1), -1);
    assert_int_equal(profile_cmp(NAN, NAN), 0);
}

static void control_check_needs_half_and_energy_near_one(void **state)
{
    (void)state;
    double half[3] = {0.5, 0.5, 0.5}, off[3] = {0.5, 0.515625, 0.5};
    profile_stat_t none = {0, NAN, NAN, NAN}, good = {3, 1.02, 0.01, 0.03},
                   bad = {3, 1.3, 0.01, 0.05}, rt = {3, 1.01, 0.02, 0.05};
    profile_control_in_t in = {half, half, 3, none, rt, 0.1};
    profile_control_check_t c;
    profile_control_check(&in, &c);
    assert_true(c.ok && c.win_ok && !c.energy_measured);
    assert_contains(c.message, "not checked: no power sensor");
    in.energy_ratio = good;
    profile_control_check(&in, &c);
    assert_true(c.ok && c.energy_measured && c.energy_ok);
    in.energy_ratio = bad;
    profile_control_check(&in, &c);
    assert_true(!c.ok && c.win_ok && !c.energy_ok);
    assert_contains(c.message, "NOT near 1");
    in.energy_ratio = none;
    in.win_truth = off; /* one ground-truth comparison that did not tie */
    profile_control_check(&in, &c);
    assert_true(!c.ok && !c.win_ok);
    assert_contains(c.message, "seed 1");
    /* an interval that holds 1 passes even beyond the tolerance */
    in.win_truth = half;
    in.energy_ratio = (profile_stat_t){3, 1.2, 0.1, 0.25};
    profile_control_check(&in, &c);
    assert_true(c.ok);
}

/* ---- modelled traffic --------------------------------------------------------------------- */

/* hidden 4, 1 layer, 2 heads of 2 (1 KV head), intermediate 8, vocabulary 16 */
static qwen2_config_t tiny_config(void)
{
    qwen2_config_t c = {.hidden = 4, .inter = 8, .layers = 1, .heads = 2, .kv_heads = 1,
                        .head_dim = 2, .vocab = 16, .max_pos = 64, .rope_theta = 10000,
                        .rms_eps = 1e-6, .tie = true, .dtype = ST_F32, .bos_id = -1,
                        .pad_id = -1};
    return c;
}

static void modelled_traffic_matches_a_hand_computed_case(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    qwen2_config_t c = tiny_config();
    profile_layers_t L;
    assert_int_equal(profile_layers_make(&c, QWEN2_HEAD_LM, &L, &e), 0);
    assert_int_equal(L.n, 8);
    assert_string_equal(L.names[0], "model.layers.0.self_attn.q_proj");
    assert_string_equal(L.names[7], "lm_head");
    /* fp32: 3 trunk tokens, 2 lm_head tokens, weights read once. MACs 3*144 + 2*64 = 560.
     * Bytes (4 each): q 64+48+48, k 32+48+24, v the same, o 160, gate 128+48+96, up the same,
     * down 128+96+48, lm_head 256+32+128: 1760; bf16 half of it. */
    profile_tokens_t tk = {3, 2, 0, 0};
    profile_cost_t a = {0};
    profile_cost_forward(&L, NULL, PREC_ROLLOUT, &tk, 1, &a);
    assert_true(a.macs == 560 && a.macs_by_width[PROFILE_W32] == 560);
    if (a.bytes != 1760 || a.bytes_bf16 != 880)
        fail_msg("fp32: expected 1760 / 880 bytes, got %g / %g", a.bytes, a.bytes_bf16);
    /* MXFP4 with blocks of 2: 4 + 8/2 = 8 bits per element; outputs at 16 bits.
     * q 16+12+24, k 8+12+12, v the same, o 52, gate 32+12+48, up the same, down 32+24+24,
     * lm_head 64+8+64: 568 bytes; every MAC in the 4-bit class. */
    const char *pj = "{\"version\":1,\"plans\":{\"m\":{\"default\":\"fp32\",\"compute\":\"fp16\","
                     "\"rules\":[{\"phase\":\"rollout\",\"operand\":[\"weight\",\"input\"],"
                     "\"spec\":\"mxfp4_e2m1/2\"}]}}}";
    prec_policies_t pol;
    const prec_plan_t *plan;
    prec_table_t t;
    assert_int_equal(prec_policies_parse(pj, strlen(pj), "test", &pol, &e), 0);
    assert_int_equal(prec_plan_find(&pol, "m", &plan, &e), 0);
    assert_int_equal(prec_resolve(plan, "test", PREC_MODEL_POLICY, (const char *const *)L.names,
                                  L.n, &t, &e), 0);
    profile_cost_t b = {0};
    profile_cost_forward(&L, &t, PREC_ROLLOUT, &tk, 1, &b);
    assert_true(b.macs == 560 && b.macs_by_width[PROFILE_W4] == 560);
    if (b.bytes != 568 || b.bytes_bf16 != 880)
        fail_msg("mxfp4/2: expected 568 / 880 bytes, got %g / %g", b.bytes, b.bytes_bf16);
    /* weights read twice (two decode calls) add the weight bytes once more: 16+8+8+16+32+32+32+64 */
    profile_cost_t b2 = {0};
    profile_cost_forward(&L, &t, PREC_ROLLOUT, &tk, 2, &b2);
    assert_true(b2.bytes == 568 + 208);
    /* the gradient phase of the same plan: fp32 operands stored at fp16 (16 bits) */
    profile_cost_t g = {0};
    profile_cost_forward(&L, &t, PREC_GRADIENT, &tk, 1, &g);
    assert_true(g.bytes == 880 && g.macs_by_width[PROFILE_W16] == 560);
    /* backward of one layer (in 4, out 2) over 3 tokens in fp32: dx moves W 32 + dy 24 and
     * writes dx 48; dW moves dy 24 + x 48 and writes dW 32: 208 bytes, 48 MACs */
    profile_layers_t one = {1, L.names + 1, L.in + 1, L.out + 1, L.kind + 1};
    profile_cost_t d = {0};
    profile_tokens_t t3 = {3, 0, 0, 0};
    profile_cost_backward(&one, NULL, &t3, 1, &d);
    if (d.bytes != 208 || d.macs != 48)
        fail_msg("backward: expected 208 bytes, 48 MACs, got %g, %g", d.bytes, d.macs);
    /* a PPO step's rollout: trunk over prompt + response tokens, lm_head over the response */
    profile_ppo_models_t m = {&L, &L, &L, NULL, NULL, NULL};
    profile_ppo_step_t st = {2, 10, 6, 4, 1, 1};
    profile_cost_t acc[PROFILE_NPHASES];
    memset(acc, 0, sizeof acc);
    profile_cost_ppo_step(&m, &st, acc);
    assert_true(acc[PROFILE_PH_ROLLOUT].macs == 16 * 144 + 6 * 64);
    /* gradient update: forward + dx + dW over 16 tokens, lm_head on all of them */
    assert_true(acc[PROFILE_PH_GRADIENT].macs == 3 * (16 * 144 + 16 * 64));
    prec_table_free(&t);
    prec_policies_free(&pol);
    profile_layers_free(&L);
}

/* ---- the comparison end to end on tiny models ------------------------------------------------ */

static char *root;
static backend_t *be;

static void make_model(const char *dir, unsigned heads, uint64_t seed)
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
    if (qwen2_new(be, &c, &o, &m, &e) || qwen2_init_philox(m, seed, 0.3f, &e) ||
        qwen2_save_dir(m, dir, ST_F32, &e))
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

static const char *const POLICIES =
    "{\"version\": 1, \"plans\": {"
    "\"baseline\": {\"description\": \"control\", \"default\": \"fp32\", \"rules\": []},"
    "\"bf16\": {\"default\": \"bf16\", \"compute\": \"bf16\"},"
    "\"bf16c\": {\"description\": \"the bf16 plan again\", \"default\": \"bf16\", \"compute\": \"bf16\"},"
    "\"A\": {\"default\": \"fp32\", \"compute\": \"fp16\", \"rules\": [{\"phase\": [\"rollout\", "
    "\"reward\"], \"operand\": [\"weight\", \"input\"], \"spec\": \"mxfp8_e4m3/32\"}]}}}";

static int setup_models(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    if (be_cpu_open(&be, &e))
        return 1;
    root = test_mkdtemp();
    char *pol = path2(root, "pol"), *rm = path2(root, "rm"), *judge = path2(root, "judge");
    make_model(pol, QWEN2_HEAD_LM, 11);
    make_model(rm, QWEN2_HEAD_SCORE, 12);
    make_model(judge, QWEN2_HEAD_SCORE, 13);
    write_text(root, "policies.json", POLICIES);
    free(pol), free(rm), free(judge);
    return 0;
}

static int teardown_models(void **state)
{
    (void)state;
    test_rmtree(root);
    free(root);
    be_close(be);
    return 0;
}

static FILE *cmp_log; /* run_compare's progress log (NULL: quiet) */

static void run_compare(const char *out, compare_opts_t *co, pipeline_compare_result_t *res,
                        int expect_rc)
{
    err_t e = ERR_INIT;
    char *pol = path2(root, "pol"), *rm = path2(root, "rm"), *judge = path2(root, "judge"),
         *pj = path2(root, "policies.json"), *work = path2(root, "data"),
         *tok = path2(pol, "tokenizer.json"), *od = path2(root, out), *sp = path2(work, "split.json");
    ppo_prompts_t pr;
    ppo_data_opts_t d = {NULL, false, 60, 1234, tok, RLHF_TEMPLATE_RAW, work};
    if (ppo_prompts_load(&d, &pr, &e))
        fail_msg("%s", e.msg);
    data_hh_t hh;
    data_split_record_t rec;
    const data_pair_t **rme;
    size_t nrme;
    if (data_hh_read(pr.pairs_path, NULL, &hh, &e) || data_split_read(sp, &rec, &e) ||
        data_split_pairs(&hh, &rec, DATA_SPLIT_RM_EVAL, &rme, &nrme, &e))
        fail_msg("%s", e.msg);
    ppo_opts_t o;
    ppo_opts_default(&o);
    o.batch_size = 4;
    o.mini_batch_size = 2;
    o.ppo_epochs = 1;
    o.max_new_tokens = 8;
    o.min_new_tokens = 2;
    o.max_prompt_tokens = 40;
    o.learning_rate = 1e-3;
    rlhf_rm_opts_t rmo;
    rlhf_rm_opts_default(&rmo);
    rmo.batch_size = 4;
    pipeline_compare_t c = {be, "cpu", pol, rm, judge, pj,
                            (const char *const *)pr.train, pr.ntrain,
                            (const char *const *)pr.eval, pr.neval, rme, nrme, true, &rmo, &rmo,
                            NULL, od, cmp_log};
    int rc = pipeline_compare_run(co, &o, &c, res, &e);
    if (rc != expect_rc)
        fail_msg("compare: expected %d, got %d (%s)", expect_rc, rc, e.msg);
    free(rme);
    data_split_free(&rec);
    data_hh_free(&hh);
    ppo_prompts_free(&pr);
    free(pol), free(rm), free(judge), free(pj), free(work), free(tok), free(od), free(sp);
}

static void tiny_compare_opts(compare_opts_t *co)
{
    compare_opts_default(co);
    co->seeds = 2;
    co->steps = 2;
    snprintf(co->plans, sizeof co->plans, "baseline,A");
    co->eval_prompts = 3;
    co->rm_eval_pairs = 6;
    snprintf(co->power_source, sizeof co->power_source, "none");
}

static void control_plan_wins_half_and_comparison_csv_has_its_layout(void **state)
{
    (void)state;
    compare_opts_t co;
    tiny_compare_opts(&co);
    pipeline_compare_result_t res;
    /* a run of an earlier, larger comparison goes; other entries stay */
    char *stale = path2(root, "cmp/runs/99-Z-seed7"), *keep = path2(root, "cmp/runs/data");
    err_t e0 = ERR_INIT;
    assert_int_equal(fs_mkdir_p(stale, &e0), 0);
    assert_int_equal(fs_mkdir_p(keep, &e0), 0);
    write_text(stale, "energy.csv", "x");
    run_compare("cmp", &co, &res, ERR_OK);
    assert_false(fs_exists(stale));
    assert_true(fs_is_dir(keep));
    free(stale), free(keep);
    assert_int_equal(res.runs, 6);
    assert_true(res.control_ok);
    assert_contains(res.control_message, "win rate 0.5 exactly on all 2 seeds");
    char *out = path2(root, "cmp");
    /* policy_comparison.csv: the columns in order, one row per plan and phase */
    static const char *const cols[] = {
        "plan", "phase", "seeds", "steps", "execution", "runtime_s", "runtime_s_ci95",
        "runtime_ratio", "runtime_ratio_ci95", "energy_J", "energy_J_ci95",
        "energy_uncertainty_J", "energy_ratio", "energy_ratio_ci95", "avg_power_W",
        "modelled_traffic_bytes", "modelled_traffic_bf16_bytes", "modelled_traffic_ratio",
        "modelled_macs", "modelled_macs_4bit", "modelled_macs_6bit", "modelled_macs_8bit",
        "modelled_macs_16bit", "modelled_macs_32bit", "final_reward", "final_reward_ci95", "kl",
        "kl_ci95", "judge_score", "judge_score_ci95", "true_score", "true_score_ci95",
        "win_rate_judge", "win_rate_judge_ci95", "win_rate_true", "win_rate_true_ci95",
        "rm_accuracy", "rm_accuracy_ci95", "rm_eval_pairs", "eval_prompts", "energy_source"};
    char *csvp = path2(out, COMPARE_CSV);
    csv_table_t t;
    err_t e = ERR_INIT;
    if (csv_load(csvp, &t, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(t.ncols, (int)(sizeof cols / sizeof cols[0]));
    for (int i = 0; i < t.ncols; i++)
        if (strcmp(t.header[i], cols[i]))
            fail_msg("column %d: expected %s, got %s", i, cols[i], t.header[i]);
    assert_int_equal(t.nrows, 12);
    static const char *const plans[3] = {"unquantized", "baseline", "A"};
    static const char *const phases[4] = {"rollout", "reward_inference", "gradient_update",
                                          "total"};
    for (int i = 0; i < 12; i++) {
        assert_string_equal(csv_cell(&t, i, 0), plans[i / 4]);
        assert_string_equal(csv_cell(&t, i, 1), phases[i % 4]);
        assert_string_equal(csv_cell(&t, i, 2), "2");
        assert_string_equal(csv_cell(&t, i, 3), "2");
        /* no sensor: energy empty, never a number */
        assert_string_equal(csv_cell(&t, i, csv_col(&t, "energy_J")), "");
        assert_string_equal(csv_cell(&t, i, csv_col(&t, "energy_ratio")), "");
        /* quality only on the total row */
        bool tot = i % 4 == 3;
        assert_true(tot == (csv_cell(&t, i, csv_col(&t, "win_rate_judge"))[0] != 0));
        assert_true(tot == (csv_cell(&t, i, csv_col(&t, "rm_accuracy"))[0] != 0));
        assert_true(csv_cell(&t, i, csv_col(&t, "runtime_s"))[0] != 0);
        assert_true(csv_cell(&t, i, csv_col(&t, "modelled_macs"))[0] != 0);
    }
    /* the control and the unquantized run tie on every prompt; the plan's formats */
    assert_string_equal(csv_cell(&t, 7, csv_col(&t, "win_rate_judge")), "0.5");
    assert_string_equal(csv_cell(&t, 7, csv_col(&t, "win_rate_judge_ci95")), "0");
    assert_string_equal(csv_cell(&t, 7, csv_col(&t, "win_rate_true")), "0.5");
    assert_string_equal(csv_cell(&t, 3, csv_col(&t, "modelled_traffic_ratio")), "2");
    assert_string_equal(csv_cell(&t, 4, csv_col(&t, "execution")), "native");
    assert_string_equal(csv_cell(&t, 8, csv_col(&t, "execution")), "emulated");
    /* the control computes what the unquantized run computes: same quality, same RM */
    int fr = csv_col(&t, "final_reward"), ra = csv_col(&t, "rm_accuracy");
    assert_string_equal(csv_cell(&t, 3, fr), csv_cell(&t, 7, fr));
    assert_string_equal(csv_cell(&t, 3, ra), csv_cell(&t, 7, ra));
    double macs4;
    assert_int_equal(csv_cell_double(&t, 8, csv_col(&t, "modelled_macs_8bit"), &macs4, &e), 0);
    assert_true(macs4 > 0); /* A's rollout is MXFP8 */
    csv_table_free(&t);
    /* the run order: seed-major, rotated */
    char *runs = read_text(out, COMPARE_RUNS_CSV);
    assert_contains(runs, "1,unquantized,42,");
    assert_contains(runs, "2,baseline,42,");
    assert_contains(runs, "3,A,42,");
    assert_contains(runs, "4,baseline,43,");
    assert_contains(runs, "6,unquantized,43,");
    free(runs);
    char *js = read_text(out, COMPARE_JSON);
    assert_contains(js, "\"ok\":\ttrue");
    assert_contains(js, "absent:");   /* no clocks or temperature without NVML */
    free(js);
    /* each run kept its files, not its weights */
    char *r1 = path2(out, "runs/01-unquantized-seed42"), *pd = path2(r1, "policy"),
         *es = path2(r1, PPO_EVAL_SAMPLES), *en = path2(r1, "energy.csv");
    assert_true(fs_exists(es) && fs_exists(en) && !fs_exists(pd));
    free(r1), free(pd), free(es), free(en), free(csvp), free(out);
}

/* compare.reference: the unquantized runs use a plan (bf16 on a GPU) and the control, a copy
 * of it, must still reproduce them; a reference that policies.json lacks is named. */
static void a_reference_plan_replaces_fp32_for_the_unquantized_runs(void **state)
{
    (void)state;
    compare_opts_t co;
    tiny_compare_opts(&co);
    co.seeds = 1;
    snprintf(co.plans, sizeof co.plans, "bf16c,A");
    snprintf(co.control, sizeof co.control, "bf16c");
    snprintf(co.reference, sizeof co.reference, "bf16");
    co.calibrate_s = 0.05; /* and each run calibrates its phases (no sensor: segments only) */
    pipeline_compare_result_t res;
    run_compare("cmp_ref", &co, &res, ERR_OK);
    assert_true(res.control_ok);
    char *ptx = read_text(root, "cmp_ref/runs/01-unquantized-seed42/phase_timing.json");
    assert_contains(ptx, "\"steady_from_s\"");  /* a calibration segment */
    free(ptx);
    char *out = path2(root, "cmp_ref"), *csvp = path2(out, COMPARE_CSV);
    csv_table_t t;
    err_t e = ERR_INIT;
    if (csv_load(csvp, &t, &e))
        fail_msg("%s", e.msg);
    assert_string_equal(csv_cell(&t, 0, 0), "unquantized");
    /* bf16 on the CPU is rounded in fp32: emulated, where no plan would be native */
    assert_string_equal(csv_cell(&t, 0, csv_col(&t, "execution")), "emulated");
    /* bf16 operands: the modelled traffic is the bf16 traffic */
    assert_string_equal(csv_cell(&t, 3, csv_col(&t, "modelled_traffic_ratio")), "1");
    int fr = csv_col(&t, "final_reward");
    assert_string_equal(csv_cell(&t, 3, fr), csv_cell(&t, 7, fr));
    csv_table_free(&t);
    char *js = read_text(out, COMPARE_JSON);
    assert_contains(js, "\"reference\":\t\"bf16\"");
    free(js);
    /* the warm-up run (2 steps by default) leaves nothing and changes no recorded run */
    char *wu = path2(out, "runs/00-warmup");
    assert_false(fs_exists(wu));
    free(wu);
    co.warmup_steps = 0;
    co.calibrate_s = 0;
    run_compare("cmp_ref0", &co, &res, ERR_OK);
    char *csv0 = path2(root, "cmp_ref0/" COMPARE_CSV);
    csv_table_t t0;
    if (csv_load(csv0, &t0, &e) || csv_load(csvp, &t, &e))
        fail_msg("%s", e.msg);
    for (int r = 3; r < t.nrows; r += 4)
        assert_string_equal(csv_cell(&t, r, fr), csv_cell(&t0, r, fr));
    csv_table_free(&t0);
    csv_table_free(&t);
    free(csv0);
    snprintf(co.reference, sizeof co.reference, "bf17");
    run_compare("cmp_ref2", &co, &res, ERR_INPUT);
    free(out), free(csvp);
}

/* warmup_each_plan: one unrecorded warm-up under every plan, which leaves nothing behind and
 * changes no recorded figure */
static void each_plan_is_warmed_up_and_nothing_recorded_changes(void **state)
{
    (void)state;
    compare_opts_t co;
    tiny_compare_opts(&co);
    co.seeds = 1;
    pipeline_compare_result_t res;
    run_compare("cmp_wu0", &co, &res, ERR_OK);
    co.warmup_each_plan = true;
    cmp_log = tmpfile();
    assert_non_null(cmp_log);
    run_compare("cmp_wu1", &co, &res, ERR_OK);
    rewind(cmp_log);
    char log[65536];
    size_t n = fread(log, 1, sizeof log - 1, cmp_log);
    log[n] = 0;
    fclose(cmp_log);
    cmp_log = NULL;
    assert_contains(log, "warm-up: 2 PPO steps as unquantized");
    assert_contains(log, "warm-up: 2 PPO steps as baseline");
    assert_contains(log, "warm-up: 2 PPO steps as A");
    char *wu = path2(root, "cmp_wu1/runs/00-warmup");
    assert_false(fs_exists(wu));
    free(wu);
    csv_table_t a, b;
    err_t e = ERR_INIT;
    char *pa = path2(root, "cmp_wu0/" COMPARE_CSV), *pb = path2(root, "cmp_wu1/" COMPARE_CSV);
    if (csv_load(pa, &a, &e) || csv_load(pb, &b, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(a.nrows, b.nrows);
    const char *same[] = {"final_reward", "kl", "true_score", "win_rate_judge"};
    for (int r = 0; r < a.nrows; r++)
        for (size_t k = 0; k < sizeof same / sizeof *same; k++)
            assert_string_equal(csv_cell(&a, r, csv_col(&a, same[k])),
                                csv_cell(&b, r, csv_col(&b, same[k])));
    csv_table_free(&a);
    csv_table_free(&b);
    free(pa), free(pb);
}

static void compare_options_are_checked(void **state)
{
    (void)state;
    compare_opts_t o;
    compare_opts_default(&o);
    err_t e = ERR_INIT;
    cJSON *j = cJSON_Parse("{\"plans\": \"A,B\"}");
    assert_int_equal(opts_from_json(&compare_opts_table, j, "config.json: compare", &o, &e), ERR_INPUT);
    assert_contains(e.msg, "control \"baseline\" is not among the plans");
    cJSON_Delete(j);
    err_clear(&e);
    j = cJSON_Parse("{\"plans\": \"baseline,,A\"}");
    assert_int_equal(opts_from_json(&compare_opts_table, j, "compare", &o, &e), ERR_INPUT);
    cJSON_Delete(j);
    err_clear(&e);
    j = cJSON_Parse("{\"plans\": \"baseline,unquantized\"}");
    assert_int_equal(opts_from_json(&compare_opts_table, j, "compare", &o, &e), ERR_INPUT);
    assert_contains(e.msg, "always runs");
    cJSON_Delete(j);
    err_clear(&e);
    j = cJSON_Parse("{\"seedz\": 3}");
    assert_int_equal(opts_from_json(&compare_opts_table, j, "compare", &o, &e), ERR_INPUT);
    assert_contains(e.msg, "seedz");
    cJSON_Delete(j);
    err_clear(&e);
    j = cJSON_Parse("{\"seeds\": 5, \"order\": \"fixed\"}");
    assert_int_equal(opts_from_json(&compare_opts_table, j, "compare", &o, &e), 0);
    assert_int_equal(o.seeds, 5);
    assert_int_equal(o.order, COMPARE_ORDER_FIXED);
    cJSON_Delete(j);
    /* the configuration file has the section */
    pipeline_config_t *cfg = calloc(1, sizeof *cfg);
    pipeline_config_default(cfg);
    assert_int_equal(cfg->compare.steps, 20);
    assert_int_equal(pipeline_config_set(cfg, "compare.steps=7", &e), 0);
    assert_int_equal(cfg->compare.steps, 7);
    free(cfg);
}

/* ---- the report ------------------------------------------------------------------------------- */

static void make_results(const char *dir, bool with_energy)
{
    const char *sub[] = {"baseline", "sensitivity", "policies", "compare", "phase_sensitivity"};
    err_t e = ERR_INIT;
    for (int i = 0; i < 5; i++) {
        char *p = path2(dir, sub[i]);
        assert_int_equal(fs_mkdir_p(p, &e), 0);
        free(p);
    }
    write_text(dir, "baseline/energy.csv",
               with_energy
                   ? "phase,avg_power_W,runtime_s,energy_J,energy_above_idle_J,uncertainty_J,"
                     "method,windows,note,source\n"
                     "rollout,150.25,12.5,1878.125,,3.5,counter,10,,nvml: fake\n"
                     "reward_inference,100,2.5,250,,1.25,counter,10,,nvml: fake\n"
                     "gradient_update,200,5,1000,,2,counter,10,,nvml: fake\n"
                     "total,156.35,20,3128.125,,6.75,counter,30,,nvml: fake\n"
                   : "phase,avg_power_W,runtime_s,energy_J,energy_above_idle_J,uncertainty_J,"
                     "method,windows,note,source\n"
                     "rollout,,12.5,,,,none,10,no power sensor,none: no sensor\n"
                     "reward_inference,,2.5,,,,none,10,no power sensor,none: no sensor\n"
                     "gradient_update,,5,,,,none,10,no power sensor,none: no sensor\n"
                     "total,,20,,,,none,30,no power sensor,none: no sensor\n");
    /* what phase_timing.json says of tokens (its other fields are not read by the report) */
    write_text(dir, "baseline/phase_timing.json",
               with_energy
                   ? "{\"tokens\": {\"rollout\": 50, \"reward_inference\": 700, "
                     "\"gradient_update\": 1024}, \"phases\": {\"rollout\": "
                     "{\"energy_per_token_J\": 5.5}, \"reward_inference\": "
                     "{\"energy_per_token_J\": 0.25}, \"gradient_update\": "
                     "{\"energy_per_token_J\": null}}}"
                   : "{\"tokens\": {\"rollout\": 50, \"reward_inference\": 700}, \"phases\": "
                     "{\"rollout\": {\"energy_per_token_J\": null}}}");
    write_text(dir, "baseline/training_stats.json",
               "{\"steps\": [{\"step\": 1, \"env/reward_mean\": 0.25, \"objective/kl\": 0},"
               "{\"step\": 2, \"env/reward_mean\": 0.75, \"objective/kl\": 1.5}],"
               "\"evaluations\": [{\"step\": 0, \"prompts\": 4, \"reward_mean\": 0.125, "
               "\"data_synth_score\": -0.5, \"kl\": 0, \"response_len_mean\": 20}], "
               "\"best_of_n\": null}");
    write_text(dir, "sensitivity/sensitivity_matrix.csv",
               "layer,mxfp4_g8_ppl,mxfp4_g8_delta_pct,mxfp4_e2m1_g8_delta_pct,"
               "mxfp8_e4m3_g32_delta_pct\n"
               "model.layers.0.self_attn.q_proj,4,3.5,3.5,0.25\n"
               "lm_head,4,1.5,1.5,0.125\n");
    write_text(dir, "phase_sensitivity/sensitivity_rollout.csv",
               "layer,mxfp4_e2m1_g32_delta_pct\nlm_head,7.5\n");
    /* a phase table without the matrix's delta columns: printed as it is */
    write_text(dir, "phase_sensitivity/sensitivity_reward.csv",
               "layer,mxfp4_g8_spearman,mxfp4_tolerant\n"
               "model.layers.0.self_attn.q_proj,0.99781629091325243,false\nlm_head,1,true\n");
    write_text(dir, "policies/policies.json",
               "{\"version\": 1, \"plans\": {\"baseline\": {\"description\": \"control\", "
               "\"default\": \"fp32\"}, \"A\": {\"description\": \"Conservative\", \"compute\": "
               "\"fp16\", \"default\": \"fp32\", \"rules\": []}}, \"perplexity\": "
               "{\"baseline_ppl\": 3.875, \"threshold_pct\": 2, \"budget_pct\": 4, \"plans\": "
               "{\"A\": {\"rollout\": {\"ppl\": 3.9, \"delta_pct\": 0.625}, \"reward\": {\"ppl\": "
               "3.9, \"delta_pct\": 0.625}, \"gradient\": {\"ppl\": 3.875, \"delta_pct\": 0}}}}}");
    char csv[4096];
    const char *en = with_energy ? "1000,10" : ",";
    const char *er = with_energy ? "1.25,0.05" : ",";
    snprintf(csv, sizeof csv,
             "plan,phase,seeds,steps,execution,runtime_s,runtime_s_ci95,runtime_ratio,"
             "runtime_ratio_ci95,energy_J,energy_J_ci95,energy_uncertainty_J,energy_ratio,"
             "energy_ratio_ci95,modelled_traffic_bytes,modelled_traffic_ratio,modelled_macs,"
             "final_reward,final_reward_ci95,kl,kl_ci95,rm_accuracy,rm_accuracy_ci95,"
             "win_rate_judge,win_rate_judge_ci95,win_rate_true,win_rate_true_ci95\n"
             "unquantized,rollout,3,20,native,4.5,0.5,1,0,%s,,%s,2e9,2,1e9,,,,,,,,,,\n"
             "unquantized,total,3,20,native,30.25,1.5,1,0,%s,,%s,6e9,2,3e9,0.375,0.0625,2.25,"
             "0.5,0.8125,0.03,0.5,0,0.5,0\n"
             "A,rollout,3,20,emulated,3.5,0.25,0.8,0.1,%s,,%s,5e8,0.5,1e9,,,,,,,,,,\n"
             "A,total,3,20,emulated,27.5,1.25,0.9125,0.05,%s,,%s,4e9,0.6875,3e9,0.3125,0.125,"
             "2.75,0.25,0.8,0.035,0.4375,0.0625,0.46875,0.09375\n",
             en, er, en, er, en, er, en, er);
    write_text(dir, "compare/policy_comparison.csv", csv);
    /* the sensor's results were trained with rollout correction, the others without */
    char cj[1024];
    snprintf(cj, sizeof cj,
             "{\"options\": {\"seeds\": 3}, \"ppo\": {\"rollout_correction\": \"%s\", "
             "\"tis_cap\": 2}, \"note\": \"each comparison run is PPO for 20 "
             "steps (the baseline stage runs 100)\", \"order_rule\": \"seed-major rounds\", "
             "\"device_state\": \"absent: none\", \"control_check\": {\"plan\": \"baseline\", "
             "\"message\": \"control check passed: win rate 0.5 exactly on all 3 seeds\"}}",
             with_energy ? "tis" : "none");
    write_text(dir, "compare/comparison.json", cj);
}

static void report_numbers_are_the_csv_numbers(void **state)
{
    (void)state;
    char *dir = path2(root, "res_nosensor"), *out = path2(dir, "report");
    make_results(dir, false);
    report_study_opts_t o = {dir, out, NULL, ""};
    report_study_result_t r;
    err_t e = ERR_INIT;
    if (report_study_write(&o, &r, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(r.sections_present, 6);
    char *md = read_text(out, "report.md");
    /* energy by phase: the runtime as in energy.csv, the empty energy as "no sensor" */
    assert_contains(md, "| rollout | 12.500 | 62.5% | no sensor | no sensor | — | none | 10 |");
    assert_contains(md, "| total | 20 | 100.0% | no sensor | no sensor |");
    assert_contains(md, "so no energy was measured");
    /* energy per token: the counts, no energy without a sensor, "—" for a count missing */
    assert_contains(md, "| phase | token | tokens | energy per token (J) |");
    assert_contains(md, "| rollout | generated | 50 | no sensor |");
    assert_contains(md, "| reward_inference | scored | 700 | no sensor |");
    assert_contains(md, "| gradient_update | trained | — | no sensor |");
    assert_true(strstr(md, "rollout correction") == NULL); /* TRL's PPO: not mentioned */
    /* training curves */
    assert_contains(md, "| 0 | 4 | 0.1250 | -0.5000 | 0 | 20 |");
    /* the heat map's columns: canonical names only (the study's mxfp4_g8 alias left out) */
    assert_contains(md, "2 layers, 2 format/block pairs");
    assert_contains(md, "| mxfp4_e2m1/8 | 1 of 2 | 3.500 | model.layers.0.self_attn.q_proj |");
    assert_contains(md, "### Phase: rollout");
    /* a phase table as it is: six significant digits, and the layers it marks not tolerant */
    assert_contains(md, "| model.layers.0.self_attn.q_proj | 0.997816 | false |");
    assert_contains(md, "Not tolerant at MXFP4 in the reward phase (column `mxfp4_tolerant`): "
                        "1 of 2 layers: `model.layers.0.self_attn.q_proj`.");
    /* policies with their combined perplexities */
    assert_contains(md, "| A | fp16 | 0 | 3.900 (+0.6250) | 3.900 (+0.6250) | 3.875 (0) |");
    /* the comparison's totals, cell for cell */
    assert_contains(md, "| unquantized | native | 20 | 30.250 ± 1.500 | 1 ± 0 | no sensor | "
                        "no sensor | 6 | 2 | 0.3750 ± 0.0625 | 2.250 ± 0.5000 | "
                        "0.8125 ± 0.0300 | 0.5000 ± 0 | 0.5000 ± 0 |");
    assert_contains(md, "| A | emulated | 20 | 27.500 ± 1.250 | 0.9125 ± 0.0500 | no sensor | "
                        "no sensor | 4 | 0.6875 | 0.3125 ± 0.1250 | 2.750 ± 0.2500 | "
                        "0.8000 ± 0.0350 | 0.4375 ± 0.0625 | 0.4688 ± 0.0938 |");
    assert_contains(md, "control check passed: win rate 0.5 exactly on all 3 seeds");
    assert_contains(md, "PPO for 20 steps");
    assert_true(strstr(md, "quality_vs_energy.svg") == NULL); /* nothing to plot without a sensor */
    static const char *const figs[] = {"energy_by_phase.svg", "sensitivity_heatmap.svg",
                                       "sensitivity_rollout_heatmap.svg", "runtime_by_plan.svg",
                                       "quality_vs_runtime.svg", "quality_vs_traffic.svg"};
    for (size_t i = 0; i < sizeof figs / sizeof figs[0]; i++) {
        char *p = path2(out, figs[i]);
        if (!fs_exists(p))
            fail_msg("figure %s was not written", figs[i]);
        assert_contains(md, figs[i]);
        free(p);
    }
    free(md);
    free(dir);
    free(out);
}

static void report_with_a_sensor_shows_energy_and_absent_sections_say_so(void **state)
{
    (void)state;
    char *dir = path2(root, "res_sensor"), *out = path2(dir, "out"), *md_top = path2(dir, "report.md");
    make_results(dir, true);
    char *ph = path2(dir, "phase_sensitivity/sensitivity_rollout.csv");
    remove(ph);
    free(ph);
    ph = path2(dir, "phase_sensitivity/sensitivity_reward.csv");
    remove(ph);
    report_study_opts_t o = {dir, out, md_top, "out/"};
    report_study_result_t r;
    err_t e = ERR_INIT;
    if (report_study_write(&o, &r, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(r.sections_present, 5);
    assert_contains(r.missing, "phase sensitivity");
    char *md = read_text(dir, "report.md");
    assert_contains(md, "| rollout | 12.500 | 62.5% | 150.2 | 1878.1 | 3.500 | counter | 10 |");
    assert_contains(md, "| 1000 ± 10 | 1.250 ± 0.0500 |");
    assert_contains(md, "| rollout | generated | 50 | 5.500 |");
    assert_contains(md, "| reward_inference | scored | 700 | 0.2500 |");
    assert_contains(md, "| gradient_update | trained | 1024 | — |");
    assert_contains(md, "carries the rollout correction `tis` (truncated importance weights, cap 2;");
    assert_contains(md, "Absent: no `sensitivity_rollout.csv`");
    assert_contains(md, "(out/quality_vs_energy.svg)");
    char *p = path2(out, "quality_vs_energy.svg");
    assert_true(fs_exists(p));
    /* a results directory that is not there is an input error */
    report_study_opts_t bad = {"/nonexistent/results", out, NULL, ""};
    assert_int_equal(report_study_write(&bad, NULL, &e), ERR_INPUT);
    free(p), free(md), free(ph), free(dir), free(out), free(md_top);
}

int main(int argc, char **argv)
{
    (void)argc;
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
    }
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(confidence_intervals_use_student_t_over_seeds),
        cmocka_unit_test(identical_samples_win_exactly_half),
        cmocka_unit_test(control_check_needs_half_and_energy_near_one),
        cmocka_unit_test(modelled_traffic_matches_a_hand_computed_case),
    };
    const struct CMUnitTest e2e[] = {
        cmocka_unit_test(control_plan_wins_half_and_comparison_csv_has_its_layout),
        cmocka_unit_test(a_reference_plan_replaces_fp32_for_the_unquantized_runs),
        cmocka_unit_test(each_plan_is_warmed_up_and_nothing_recorded_changes),
        cmocka_unit_test(compare_options_are_checked),
        cmocka_unit_test(report_numbers_are_the_csv_numbers),
        cmocka_unit_test(report_with_a_sensor_shows_energy_and_absent_sections_say_so),
    };
    int failed = cmocka_run_group_tests_name("statistics and modelled traffic", pure, NULL, NULL);
    failed += cmocka_run_group_tests_name("compare and report", e2e, setup_models,
                                          teardown_models);
    return failed;
}
