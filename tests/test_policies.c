/* Tests for the policy derivation (src/profile/policies.h): the plans A-D and the control
 * on a hand-made matrix whose answers are worked out below, policies.json read back by the
 * precision layer into the same resolved plans, the matrix reader, and the options. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "profile/policies.h"
#include "support/testutil.h"
#include "util/fs.h"

/* One decoder block and the lm_head: eight layers. */
static const char *const LAYERS[8] = {
    "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
    "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj",
    "model.layers.0.mlp.gate_proj",    "model.layers.0.mlp.up_proj",
    "model.layers.0.mlp.down_proj",    "lm_head"};

/* The matrix's single-layer deltas (%): MXFP4-tolerant (< 2) are 0, 2, 3, 5, 6, sorted
 * 3 (0.2), 0 (0.5), 6 (0.8), 2 (1.0), 5 (1.9); layer 4's MXFP4 cell failed (empty).
 * MXFP8-tolerant: all but 2, sorted 3, 6, 0, 4 (tie with 0: table order), 5, 7, 1. */
static const double D4[8] = {0.5, 3.0, 1.0, 0.2, NAN, 1.9, 0.8, 2.5};
static const double D8[8] = {0.1, 0.3, 2.5, 0.0, 0.1, 0.2, 0.05, 0.25};
/* The "true" costs the fake measurement adds up (layer 4's MXFP4 cost is 5). */
static const double C4[8] = {0.5, 3.0, 1.0, 0.2, 5.0, 1.9, 0.8, 2.5};

typedef struct fake {
    int calls;
} fake_t;

/* ppl = 10 (1 + sum of per-layer costs / 100), times 1.001 for a non-fp32 compute. */
static int fake_measure(void *ctx, prec_compute_t compute, const mx_format_t *fmt, double *ppl,
                        err_t *e)
{
    (void)e;
    fake_t *f = ctx;
    f->calls++;
    double d = 0;
    for (int l = 0; l < 8; l++)
        d += fmt[l] == MX_FP4_E2M1 ? C4[l] : fmt[l] == MX_FP8_E4M3 ? D8[l] : 0;
    *ppl = 10 * (1 + d / 100) * (compute == PREC_COMPUTE_FP32 ? 1 : 1.001);
    return ERR_OK;
}

static void handmade(profile_sens_t *s)
{
    s->n = 8;
    s->block = 32;
    s->layers = malloc(8 * sizeof *s->layers);
    s->d4 = malloc(8 * sizeof *s->d4);
    s->d8 = malloc(8 * sizeof *s->d8);
    for (int l = 0; l < 8; l++) {
        s->layers[l] = strdup(LAYERS[l]);
        s->d4[l] = D4[l];
        s->d8[l] = D8[l];
    }
}

static void expect_fmt(const char *what, const mx_format_t *got, const char *want)
{
    /* want: one letter per layer: 4 = mxfp4, 8 = mxfp8, f = fp32 */
    for (int l = 0; l < 8; l++) {
        mx_format_t w = want[l] == '4' ? MX_FP4_E2M1 : want[l] == '8' ? MX_FP8_E4M3 : MX_FP32;
        if (got[l] != w)
            fail_msg("%s, layer %s: expected %s, got %s", what, LAYERS[l], mx_format_name(w),
                     mx_format_name(got[l]));
    }
}

static void near(const char *what, double got, double want)
{
    if (fabs(got - want) > 1e-12 * want)
        fail_msg("%s: expected %.15g, got %.15g", what, want, got);
}

static void derive(profile_policies_t *p, profile_sens_t *s, fake_t *f)
{
    policies_opts_t o;
    policies_opts_default(&o);
    err_t e = ERR_INIT;
    handmade(s);
    if (profile_policies_derive(s, &o, fake_measure, f, p, &e))
        fail_msg("%s", e.msg);
}

static void handmade_matrix_gives_the_worked_out_plans(void **state)
{
    (void)state;
    profile_sens_t s;
    profile_policies_t p;
    fake_t f = {0};
    derive(&p, &s, &f);
    /* G4 from all-MXFP8 (3.5%): +3 -> 3.7 keep; +0 -> 4.1 no; +6 -> 4.45 no; +2 -> 2.2 keep;
       +5 -> 3.9 keep (budget 4%) */
    assert_int_equal(p.g4.nsteps, 5);
    const int order4[] = {3, 0, 6, 2, 5};
    const bool acc4[] = {true, false, false, true, true};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(p.g4.steps[i].layer, order4[i]);
        assert_int_equal(p.g4.steps[i].accepted, acc4[i]);
    }
    near("G4 start", p.g4.start_ppl, 10.35);
    near("G4 end", p.g4.end_ppl, 10.39);
    /* G8 from fp32: every tolerant layer fits (1.0% in all) */
    assert_int_equal(p.g8.nsteps, 7);
    const int order8[] = {3, 6, 0, 4, 5, 7, 1};
    for (int i = 0; i < 7; i++) {
        assert_int_equal(p.g8.steps[i].layer, order8[i]);
        assert_true(p.g8.steps[i].accepted);
    }
    /* the plans, per phase: rollout, reward, gradient */
    const profile_policy_t *A = &p.plan[POLICY_A], *B = &p.plan[POLICY_B], *C = &p.plan[POLICY_C],
                           *D = &p.plan[POLICY_D], *Z = &p.plan[POLICY_BASELINE];
    expect_fmt("baseline rollout", Z->fmt[PREC_ROLLOUT], "ffffffff");
    expect_fmt("baseline gradient", Z->fmt[PREC_GRADIENT], "ffffffff");
    expect_fmt("A rollout", A->fmt[PREC_ROLLOUT], "88888888");
    expect_fmt("A reward", A->fmt[PREC_REWARD], "88888888");
    expect_fmt("A gradient", A->fmt[PREC_GRADIENT], "ffffffff");
    expect_fmt("B rollout", B->fmt[PREC_ROLLOUT], "88448488");
    expect_fmt("B reward", B->fmt[PREC_REWARD], "88448488");
    expect_fmt("B gradient", B->fmt[PREC_GRADIENT], "ffffffff");
    expect_fmt("C rollout", C->fmt[PREC_ROLLOUT], "44444444");
    expect_fmt("C gradient", C->fmt[PREC_GRADIENT], "88448488");
    expect_fmt("D rollout", D->fmt[PREC_ROLLOUT], "88448488");
    expect_fmt("D reward", D->fmt[PREC_REWARD], "88f88888");
    expect_fmt("D gradient", D->fmt[PREC_GRADIENT], "ffffffff");
    assert_int_equal(Z->compute, PREC_COMPUTE_FP32);
    assert_int_equal(A->compute, PREC_COMPUTE_FP16);
    assert_int_equal(B->compute, PREC_COMPUTE_FP16);
    assert_int_equal(C->compute, PREC_COMPUTE_FP32);
    assert_int_equal(D->compute, PREC_COMPUTE_FP16);
    /* combined perplexities */
    near("baseline", p.base_ppl, 10);
    near("A rollout", A->ppl[PREC_ROLLOUT], 10.35);
    near("A gradient", A->ppl[PREC_GRADIENT], 10.01);
    near("B reward", B->ppl[PREC_REWARD], 10.39);
    near("C rollout", C->ppl[PREC_ROLLOUT], 11.49);
    near("C gradient", C->ppl[PREC_GRADIENT], 10.39);
    near("D reward", D->ppl[PREC_REWARD], 10.1);
    near("D gradient", D->ppl[PREC_GRADIENT], 10.01);
    /* each distinct configuration once: base, all8, 5 + 7 greedy trials, all4, fp16 */
    assert_int_equal(f.calls, 16);
    assert_int_equal(p.measurements, 16);
    profile_policies_free(&p);
    profile_sens_free(&s);
}

/* A layer whose MXFP4 cell lowers the perplexity by 3% is a candidate under the default
 * rule, but not under the two-sided one (whose budget would also refuse a fall of 4%). */
static const double C4F[8] = {-3.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5};

static int falling_measure(void *ctx, prec_compute_t compute, const mx_format_t *fmt,
                           double *ppl, err_t *e)
{
    (void)ctx;
    (void)e;
    double d = 0;
    for (int l = 0; l < 8; l++)
        d += fmt[l] == MX_FP4_E2M1 ? C4F[l] : fmt[l] == MX_FP8_E4M3 ? 0.1 : 0;
    *ppl = 10 * (1 + d / 100) * (compute == PREC_COMPUTE_FP32 ? 1 : 1.001);
    return ERR_OK;
}

static void two_sided_rule_refuses_large_falls(void **state)
{
    (void)state;
    profile_sens_t s;
    handmade(&s);
    for (int l = 0; l < 8; l++) {
        s.d4[l] = C4F[l];
        s.d8[l] = 0.1;
    }
    policies_opts_t o;
    policies_opts_default(&o);
    profile_policies_t p;
    err_t e = ERR_INIT;
    /* one-sided: every layer is a candidate, layer 0 first; all fit (all-MXFP8 0.8%, then
       -2.3% after layer 0, then +0.4 per layer: 0.5% at the end) */
    assert_int_equal(profile_policies_derive(&s, &o, falling_measure, NULL, &p, &e), 0);
    assert_int_equal(p.g4.nsteps, 8);
    assert_int_equal(p.g4.steps[0].layer, 0);
    expect_fmt("one-sided B rollout", p.plan[POLICY_B].fmt[PREC_ROLLOUT], "44444444");
    profile_policies_free(&p);
    /* two-sided: layer 0 is no candidate; the rest go to MXFP4 while |delta| < 4:
       0.8 + 0.4 per layer moved -> 1.2, 1.6, ..., 3.6 (7 layers) */
    o.two_sided = true;
    assert_int_equal(profile_policies_derive(&s, &o, falling_measure, NULL, &p, &e), 0);
    assert_int_equal(p.g4.nsteps, 7);
    expect_fmt("two-sided B rollout", p.plan[POLICY_B].fmt[PREC_ROLLOUT], "84444444");
    profile_policies_free(&p);
    profile_sens_free(&s);
}

/* Resolves plan `name` of the parsed file for a model with `names` and checks every entry
 * against the derived formats. */
static void check_resolved(const prec_policies_t *pol, const profile_policies_t *p, int which,
                           prec_model_t role, int nnames)
{
    const prec_plan_t *plan;
    prec_table_t t;
    err_t e = ERR_INIT;
    if (prec_plan_find(pol, p->plan[which].name, &plan, &e) ||
        prec_resolve(plan, "policies.json", role, (const char *const *)LAYERS, nnames, &t, &e))
        fail_msg("plan %s: %s", p->plan[which].name, e.msg);
    assert_int_equal(t.compute, p->plan[which].compute);
    if (t.compute == PREC_COMPUTE_FP16)
        assert_true(t.loss_scale.init == 65536 && t.loss_scale.interval == 2000);
    for (int l = 0; l < nnames; l++)
        for (int ph = 0; ph < PREC_PHASE_COUNT; ph++)
            for (int op = 0; op < PREC_OPERAND_COUNT; op++) {
                mx_format_t f = p->plan[which].fmt[ph][l];
                bool fwd = op == PREC_OP_WEIGHT || op == PREC_OP_INPUT;
                if (ph != PREC_GRADIENT && !fwd)
                    f = MX_FP32;
                const mx_spec_t *s = prec_spec(&t, l, (prec_phase_t)ph, (prec_operand_t)op);
                bool ok = s->format == f &&
                          (f == MX_FP32 || (s->block == 32 && s->round == MX_ROUND_EVEN &&
                                            s->scale == MX_SCALE_FLOOR));
                if (!ok)
                    fail_msg("plan %s, %s, %s, %s: expected %s/32, got %s/%d",
                             p->plan[which].name, LAYERS[l], prec_phase_name((prec_phase_t)ph),
                             prec_operand_name((prec_operand_t)op), mx_format_name(f),
                             mx_format_name(s->format), s->block);
            }
    prec_table_free(&t);
}

static void policies_json_reads_back_into_the_same_resolved_plans(void **state)
{
    (void)state;
    profile_sens_t s;
    profile_policies_t p;
    fake_t f = {0};
    derive(&p, &s, &f);
    cJSON *root = profile_policies_to_json(&p, NULL);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    prec_policies_t pol;
    err_t e = ERR_INIT;
    if (prec_policies_parse(text, strlen(text), "policies.json", &pol, &e))
        fail_msg("%s\n%s", e.msg, text);
    assert_int_equal(pol.nplans, 5);
    for (int i = 0; i < POLICY_COUNT; i++) {
        check_resolved(&pol, &p, i, PREC_MODEL_POLICY, 8);
        /* a reward model (no lm_head) resolves too: lm_head rules name other models */
        check_resolved(&pol, &p, i, PREC_MODEL_REWARD, 7);
    }
    /* the combined perplexities sit beside the plans */
    cJSON *j = cJSON_Parse(text);
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(j, "perplexity");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(pp, "plans"), "D"),
        "reward");
    near("json D reward ppl", cJSON_GetObjectItemCaseSensitive(d, "ppl")->valuedouble, 10.1);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "within_budget")));
    const cJSON *sens = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(j, "derivation"), "sensitive_layers");
    assert_int_equal(cJSON_GetArraySize(sens), 5);
    cJSON_Delete(j);
    prec_policies_free(&pol);
    free(text);
    profile_policies_free(&p);
    profile_sens_free(&s);
}

/* ---- the matrix reader ------------------------------------------------------------------- */

static void matrix_reader_takes_the_block_columns_and_names_what_is_missing(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), *path = fs_join(dir, "m.csv");
    const char *csv =
        "layer,mxfp4_g8_ppl,mxfp8_e4m3_g8_delta_pct,mxfp4_e2m1_g32_delta_pct,"
        "mxfp8_e4m3_g32_delta_pct\r\n"
        "\"model.layers.0.self_attn.q_proj\",1,2,0.5,0.25\r\n"
        "lm_head,1,2,,-1e-3\r\n";
    test_write_file(path, csv, strlen(csv));
    profile_sens_t s;
    err_t e = ERR_INIT;
    assert_int_equal(profile_sens_read(path, 32, &s, &e), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.layers[0], "model.layers.0.self_attn.q_proj");
    assert_true(s.d4[0] == 0.5 && s.d8[0] == 0.25);
    assert_true(isnan(s.d4[1]) && s.d8[1] == -1e-3);
    profile_sens_free(&s);
    assert_int_equal(profile_sens_read(path, 16, &s, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "mxfp4_e2m1_g16_delta_pct"));
    const char *bad = "layer,mxfp4_e2m1_g32_delta_pct,mxfp8_e4m3_g32_delta_pct\n"
                      "lm_head,1,x\n";
    test_write_file(path, bad, strlen(bad));
    err_clear(&e);
    assert_int_equal(profile_sens_read(path, 32, &s, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "line 2"));
    const char *twice = "layer,mxfp4_e2m1_g32_delta_pct,mxfp8_e4m3_g32_delta_pct\n"
                        "lm_head,1,1\nlm_head,1,1\n";
    test_write_file(path, twice, strlen(twice));
    err_clear(&e);
    assert_int_equal(profile_sens_read(path, 32, &s, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "twice"));
    test_rmtree(dir);
    free(path);
    free(dir);
}

static void options_round_trip_and_refuse_unknown_keys(void **state)
{
    (void)state;
    policies_opts_t o, back;
    policies_opts_default(&o);
    o.block = 16;
    o.fp16_compute = PREC_COMPUTE_BF16;
    o.budget_factor = 3;
    cJSON *j = opts_to_json(&policies_opts_table, &o);
    policies_opts_default(&back);
    err_t e = ERR_INIT;
    assert_int_equal(opts_from_json(&policies_opts_table, j, "cfg.policies", &back, &e), 0);
    assert_int_equal(back.block, 16);
    assert_int_equal(back.fp16_compute, PREC_COMPUTE_BF16);
    assert_true(back.budget_factor == 3);
    cJSON_AddStringToObject(j, "blok", "x");
    assert_int_equal(opts_from_json(&policies_opts_table, j, "cfg.policies", &back, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "blok"));
    cJSON_Delete(j);
    j = cJSON_Parse("{\"fp16_compute\": \"fp32\"}");
    err_clear(&e);
    policies_opts_default(&back);
    assert_int_equal(opts_from_json(&policies_opts_table, j, "c", &back, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "fp16_compute"));
    cJSON_Delete(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(handmade_matrix_gives_the_worked_out_plans),
        cmocka_unit_test(policies_json_reads_back_into_the_same_resolved_plans),
        cmocka_unit_test(two_sided_rule_refuses_large_falls),
        cmocka_unit_test(matrix_reader_takes_the_block_columns_and_names_what_is_missing),
        cmocka_unit_test(options_round_trip_and_refuse_unknown_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
