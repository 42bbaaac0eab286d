/* Error messages read as one line naming where and what, with each piece of context joined
 * by a single ": ": err_prefix drops a separator its caller already wrote, and the
 * commands' failures on bad input (options, configuration, missing files, models that do
 * not load) never show a doubled colon (": :"), the defect issue 21 found in 28 callers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/testutil.h"
#include "util/err.h"

static void err_prefix_joins_with_one_separator(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    err_set(&e, ERR_INPUT, "field \"x\": expected a number");
    err_prefix(&e, "step %d, policy: ", 3);
    err_prefix(&e, "cfg.json");
    assert_string_equal(e.msg, "cfg.json: step 3, policy: field \"x\": expected a number");
    err_t ok = ERR_INIT;
    assert_int_equal(err_prefix(&ok, "nothing happened: "), ERR_OK);
    assert_string_equal(ok.msg, "");
}

static void command_errors_never_double_the_colon(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), cfg[700];
    snprintf(cfg, sizeof cfg, "%s/bad.json", dir);
    test_write_file(cfg, "{\"ppo\": {\"batch_size\": 6}, \"compare\": {\"plans\": \"A,,B\"}}", 56);
    const char *model = test_fixture_path("model/tiny_tied_gqa_f32");
    /* each must fail (exit 2 or 3) with a message */
    const char *cmds[] = {
        "config --config %s",
        "config --set compare.plans=baseline,,A",
        "config --set compare.control=Z",
        "config --set ppo.kl_penalty=kl2",
        "config --set sensitivity.blocks=[16]",
        "compare --plans A --control B --policies x",
        "sensitivity --model %s/nonexistent --tokens 64",
        "sensitivity --phase reward --reward-model %s/nonexistent",
        "policies --model %s/nonexistent --sensitivity %s/none.csv",
        "ppo --policy-model %s/nonexistent --reward-model %s/nonexistent",
        "logprobs --model %s/nonexistent --ids 1,2",
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char line[2048];
        if (i == 0)
            snprintf(line, sizeof line, cmds[i], cfg);
        else
            snprintf(line, sizeof line, cmds[i], dir, dir);
        char *out = NULL;
        int rc = test_cli(&out, "%s", line);
        if (rc != 2 && rc != 3)
            fail_msg("mxrlhf %s: expected exit 2 or 3, got %d:\n%s", line, rc, out);
        if (!strstr(out, "mxrlhf ") || strstr(out, ": :"))
            fail_msg("mxrlhf %s: expected one message without \": :\", got:\n%s", line, out);
        free(out);
    }
    /* and one deep in a run: a model directory that is not a model */
    char *out = NULL;
    assert_int_equal(test_cli(&out, "ppo --policy-model %s --reward-model %s --output %s/p",
                              model, dir, dir), 2);
    if (strstr(out, ": :"))
        fail_msg("expected no \": :\", got:\n%s", out);
    free(out);
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(err_prefix_joins_with_one_separator),
        cmocka_unit_test(command_errors_never_double_the_colon),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
