/* Tests for precision/: policies.json parsing, errors that name the field, first-match
 * resolution into the per-layer table, the audit JSON and single-entry overrides. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "precision/precision.h"
#include "support/testutil.h"
#include "util/json.h"

static const char *const LAYERS[] = {
    "model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj",
    "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj", "lm_head"};
#define NL 5

static int parse(const char *text, prec_policies_t *p, err_t *e)
{
    return prec_policies_parse(text, strlen(text), "policies.json", p, e);
}

static void expect_error(const char *text, const char *needle)
{
    prec_policies_t p;
    err_t e = ERR_INIT;
    int rc = parse(text, &p, &e);
    if (rc != ERR_INPUT || !strstr(e.msg, needle) || !strstr(e.msg, "policies.json"))
        fail_msg("expected ERR_INPUT naming \"%s\", got rc %d: %s", needle, rc, e.msg);
    assert_int_equal(p.nplans, 0);
}

static const char *PLANS =
    "{\"version\": 1, \"plans\": {"
    " \"A\": {\"description\": \"conservative\", \"compute\": \"fp16\", \"default\": \"fp32\","
    "   \"rules\": ["
    "    {\"phase\": [\"rollout\", \"reward\"], \"operand\": [\"weight\", \"input\"], \"spec\": \"mxfp8_e4m3\"}"
    "   ]},"
    " \"B\": {\"default\": {\"format\": \"bf16\"}, \"rules\": ["
    "    {\"module\": \"model.layers.1.*\", \"spec\": \"mxfp4_e2m1/16\"},"
    "    {\"module\": \"model.layers.*.mlp.down_proj\", \"operand\": \"weight\","
    "     \"spec\": {\"format\": \"mxfp8_e5m2\", \"block\": 32, \"rounding\": \"nearest\", \"scale\": \"rceil\"}},"
    "    {\"model\": \"reward\", \"module\": \"score\", \"spec\": \"fp32\"}"
    " ]}}}";

static void test_parses_plans_and_specs(void **state)
{
    prec_policies_t p;
    err_t e = ERR_INIT;
    assert_int_equal(parse(PLANS, &p, &e), ERR_OK);
    assert_int_equal(p.nplans, 2);
    const prec_plan_t *a;
    assert_int_equal(prec_plan_find(&p, "A", &a, &e), ERR_OK);
    assert_string_equal(a->description, "conservative");
    assert_int_equal(a->compute, PREC_COMPUTE_FP16);
    assert_true(a->loss_scale.init == 65536.0 && a->loss_scale.interval == 2000);
    assert_int_equal(a->nrules, 1);
    assert_int_equal(a->rules[0].phases, (1u << PREC_ROLLOUT) | (1u << PREC_REWARD));
    assert_int_equal(a->rules[0].models, (1u << PREC_MODEL_COUNT) - 1);
    assert_int_equal(a->rules[0].spec.format, MX_FP8_E4M3);
    const prec_plan_t *b;
    assert_int_equal(prec_plan_find(&p, "B", &b, &e), ERR_OK);
    assert_int_equal(b->dflt.format, MX_BF16);
    assert_int_equal(b->rules[0].spec.block, 16);
    assert_int_equal(b->rules[1].spec.round, MX_ROUND_NEAREST);
    assert_int_equal(b->rules[1].spec.scale, MX_SCALE_RCEIL);
    prec_policies_free(&p);
}

static void test_unknown_plan_lists_names(void **state)
{
    prec_policies_t p;
    err_t e = ERR_INIT;
    assert_int_equal(parse(PLANS, &p, &e), ERR_OK);
    const prec_plan_t *x;
    assert_int_equal(prec_plan_find(&p, "Z", &x, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "A, B"));
    prec_policies_free(&p);
}

static void test_errors_name_file_and_field(void **state)
{
    expect_error("{\"version\": 2, \"plans\": {}}", "\"version\"");
    expect_error("{\"plans\": {\"A\": {\"default\": \"fp32\"}}}", "\"version\"");
    expect_error("{\"version\": 1, \"plans\": {}}", "\"plans\"");
    expect_error("{\"version\": 1, \"plans\": {\"A\": {}}}", "plans.A.default");
    expect_error("{\"version\": 1, \"plans\": {\"A\": {\"default\": \"mxfp9\"}}}", "plans.A.default");
    expect_error("{\"version\": 1, \"plans\": {\"A\": {\"default\": \"fp32\", \"rules\": "
                 "[{\"spec\": \"fp32\"}, {\"phase\": \"rolout\", \"spec\": \"fp32\"}]}}}",
                 "plans.A.rules[1].phase");
    expect_error("{\"version\": 1, \"plans\": {\"A\": {\"default\": \"fp32\", \"rules\": "
                 "[{\"operand\": [\"weight\", \"wieght\"], \"spec\": \"fp32\"}]}}}",
                 "plans.A.rules[0].operand");
    expect_error("{\"version\": 1, \"plans\": {\"A\": {\"default\": \"fp32\", \"rules\": "
                 "[{\"model\": \"critic\", \"spec\": \"fp32\"}]}}}", "plans.A.rules[0].model");
    expect_error("{\"version\": 1, \"plans\": {\"A\": {\"default\": \"fp32\", \"rules\": "
                 "[{\"module\": \"lm_head\"}]}}}", "plans.A.rules[0].spec");
    expect_error("{\"version\": 1, \"plans\": {\"A\": {\"default\": \"fp32\", \"rules\": "
                 "[{\"modul\": \"lm_head\", \"spec\": \"fp32\"}]}}}", "plans.A.rules[0].modul");
    expect_error("{\"version\": 1, \"plans\": {\"A\": {\"default\": {\"format\": \"mxfp4\", "
                 "\"block\": 0}}}}", "plans.A.default.block");
    expect_error("{\"version\": 1, \"plans\": {\"A\": {\"default\": \"fp32\", \"compute\": \"fp8\"}}}",
                 "plans.A.compute");
    expect_error("{\"version\": 1, \"plans\": {\"A\": {\"default\": \"fp32\", \"compute\": \"bf16\", "
                 "\"loss_scale\": {}}}}", "plans.A.loss_scale");
    expect_error("{\"version\": 1, \"plans\": {\"A\": {\"default\": \"fp32\"}, \"A\": "
                 "{\"default\": \"fp32\"}}}", "plans.A");
    expect_error("{\"version\": 1, \"plans\": {\"A\": {\"default\": \"fp32\"}", "line 1");
}

static void test_first_matching_rule_wins(void **state)
{
    prec_policies_t p;
    err_t e = ERR_INIT;
    assert_int_equal(parse(PLANS, &p, &e), ERR_OK);
    const prec_plan_t *b;
    prec_plan_find(&p, "B", &b, &e);
    prec_table_t t;
    assert_int_equal(prec_resolve(b, "policies.json", PREC_MODEL_POLICY, LAYERS, NL, &t, &e), ERR_OK);
    /* layer 1 down_proj: rule 0 (model.layers.1.*) comes before rule 1 */
    int i = prec_table_find(&t, "model.layers.1.mlp.down_proj");
    assert_int_equal(t.layers[i].spec[PREC_GRADIENT][PREC_OP_WEIGHT].format, MX_FP4_E2M1);
    assert_int_equal(t.layers[i].rule[PREC_GRADIENT][PREC_OP_WEIGHT], 0);
    /* layer 0 down_proj: rule 1 for the weight only, the default elsewhere */
    i = prec_table_find(&t, "model.layers.0.mlp.down_proj");
    assert_int_equal(t.layers[i].spec[PREC_ROLLOUT][PREC_OP_WEIGHT].format, MX_FP8_E5M2);
    assert_int_equal(t.layers[i].spec[PREC_ROLLOUT][PREC_OP_INPUT].format, MX_BF16);
    assert_int_equal(t.layers[i].rule[PREC_ROLLOUT][PREC_OP_INPUT], -1);
    i = prec_table_find(&t, "lm_head");
    assert_int_equal(t.layers[i].spec[PREC_REWARD][PREC_OP_GRAD_OUTPUT_DW].format, MX_BF16);
    prec_table_free(&t);
    prec_policies_free(&p);
}

static void test_rule_matching_no_layer_is_an_error_naming_it(void **state)
{
    const char *text = "{\"version\": 1, \"plans\": {\"C\": {\"default\": \"fp32\", \"rules\": ["
                       "{\"module\": \"lm_head\", \"spec\": \"bf16\"},"
                       "{\"module\": \"model.layers.*.mlp.dwn_proj\", \"spec\": \"mxfp4\"}]}}}";
    prec_policies_t p;
    err_t e = ERR_INIT;
    assert_int_equal(parse(text, &p, &e), ERR_OK);
    prec_table_t t;
    assert_int_equal(prec_resolve(&p.plans[0], "policies.json", PREC_MODEL_POLICY, LAYERS, NL, &t, &e),
                     ERR_INPUT);
    assert_non_null(strstr(e.msg, "plans.C.rules[1].module"));
    assert_non_null(strstr(e.msg, "dwn_proj"));
    assert_non_null(strstr(e.msg, "policies.json"));
    prec_policies_free(&p);
}

static void test_rule_for_another_model_is_not_checked(void **state)
{
    /* plan B's "score" rule is for the reward model; a policy has no score layer */
    prec_policies_t p;
    err_t e = ERR_INIT;
    assert_int_equal(parse(PLANS, &p, &e), ERR_OK);
    prec_table_t t;
    assert_int_equal(prec_resolve(&p.plans[1], "x", PREC_MODEL_POLICY, LAYERS, NL, &t, &e), ERR_OK);
    prec_table_free(&t);
    err_clear(&e);
    assert_int_equal(prec_resolve(&p.plans[1], "x", PREC_MODEL_REWARD, LAYERS, NL, &t, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "rules[2]"));
    prec_policies_free(&p);
}

static void test_glob(void **state)
{
    assert_true(prec_glob_match("model.layers.*.mlp.down_proj", "model.layers.12.mlp.down_proj"));
    assert_false(prec_glob_match("model.layers.*.mlp.down_proj", "model.layers.12.mlp.up_proj"));
    assert_true(prec_glob_match("*", "lm_head"));
    assert_true(prec_glob_match("model.layers.?.*", "model.layers.3.self_attn.q_proj"));
    assert_false(prec_glob_match("model.layers.?.*", "model.layers.13.self_attn.q_proj"));
    assert_true(prec_glob_match("*proj", "model.layers.0.mlp.up_proj"));
    assert_false(prec_glob_match("lm_head", "lm_head2"));
    assert_true(prec_glob_match("**a*", "xxa"));
}

static void test_audit_json_and_override(void **state)
{
    prec_policies_t p;
    err_t e = ERR_INIT;
    assert_int_equal(parse(PLANS, &p, &e), ERR_OK);
    prec_table_t t;
    assert_int_equal(prec_resolve(&p.plans[0], "pol.json", PREC_MODEL_POLICY, LAYERS, NL, &t, &e), ERR_OK);
    mx_spec_t s4 = mx_spec_default(MX_FP4_E2M1);
    assert_int_equal(prec_table_set(&t, "lm_head", PREC_ROLLOUT, PREC_OP_WEIGHT, &s4, &e), ERR_OK);
    assert_int_equal(prec_table_set(&t, "nope", PREC_ROLLOUT, PREC_OP_WEIGHT, &s4, &e), ERR_INPUT);
    char *dir = test_mkdtemp(), path[4096];
    snprintf(path, sizeof path, "%s/table.json", dir);
    err_clear(&e);
    assert_int_equal(prec_table_write(&t, path, &e), ERR_OK);
    cJSON *j;
    assert_int_equal(json_load_file(path, 1 << 20, &j, &e), ERR_OK);
    assert_string_equal(cJSON_GetObjectItem(j, "plan")->valuestring, "A");
    assert_string_equal(cJSON_GetObjectItem(j, "compute")->valuestring, "fp16");
    cJSON *lm = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "layers"), "lm_head");
    cJSON *w = cJSON_GetObjectItem(cJSON_GetObjectItem(lm, "rollout"), "weight");
    assert_string_equal(cJSON_GetObjectItem(w, "rule")->valuestring, "override");
    cJSON *in = cJSON_GetObjectItem(cJSON_GetObjectItem(lm, "reward"), "input");
    assert_int_equal(cJSON_GetObjectItem(in, "rule")->valueint, 0);
    char buf[64];
    mx_spec_t e4 = mx_spec_default(MX_FP8_E4M3);
    assert_string_equal(cJSON_GetObjectItem(in, "spec")->valuestring, mx_spec_format(&e4, buf, sizeof buf));
    cJSON_Delete(j);
    test_rmtree(dir);
    free(dir);
    prec_table_free(&t);
    prec_policies_free(&p);
}

static void test_study_phase_names_accepted(void **state)
{
    prec_phase_t ph;
    assert_int_equal(prec_phase_from_name("reward_inference", &ph), 0);
    assert_int_equal(ph, PREC_REWARD);
    assert_int_equal(prec_phase_from_name("gradient_update", &ph), 0);
    assert_int_equal(ph, PREC_GRADIENT);
    assert_int_equal(prec_phase_from_name("warmup", &ph), -1);
}

static void test_load_missing_file_fails(void **state)
{
    prec_policies_t p;
    err_t e = ERR_INIT;
    assert_int_not_equal(prec_policies_load("/nonexistent/policies.json", &p, &e), ERR_OK);
    assert_non_null(strstr(e.msg, "/nonexistent/policies.json"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parses_plans_and_specs),
        cmocka_unit_test(test_unknown_plan_lists_names),
        cmocka_unit_test(test_errors_name_file_and_field),
        cmocka_unit_test(test_first_matching_rule_wins),
        cmocka_unit_test(test_rule_matching_no_layer_is_an_error_naming_it),
        cmocka_unit_test(test_rule_for_another_model_is_not_checked),
        cmocka_unit_test(test_glob),
        cmocka_unit_test(test_audit_json_and_override),
        cmocka_unit_test(test_study_phase_names_accepted),
        cmocka_unit_test(test_load_missing_file_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
