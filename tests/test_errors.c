/* Error messages read as one line naming where and what, with each piece of context joined
 * by a single ": ": err_prefix drops a separator its caller already wrote, and the
 * commands' failures on bad input (options, configuration, missing files, models that do
 * not load) never show a doubled colon (": :"), the defect issue 21 found in 28 callers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/testutil.h"
#include "util/err.h"
#include "util/fs.h"

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

/* Two runs on one --output mixed their files silently (ppo x2: statistics of one seed,
 * samples of the other; a second sft replaced the first's models). Every command that
 * writes an output directory takes its lock: a second writer gets exit 3 naming the
 * directory and the holder, and the lock of a process that died is taken over. */
static void every_writing_command_refuses_a_directory_in_use(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), out[700];
    snprintf(out, sizeof out, "%s/out", dir);
    fs_lock_t held;
    err_t e = ERR_INIT;
    assert_int_equal(fs_lock_dir(out, "the test", &held, &e), 0);
    char pid[64];
    snprintf(pid, sizeof pid, "in use by pid %ld (the test, started ", (long)getpid());
    /* each command with what it needs to reach its output (the inputs need not exist: the
     * directory is locked before they are read) */
    const char *const cmds[] = {
        "ppo --policy-model %s/p --reward-model %s/r --output %s",
        "baseline --policy-model %s/p --reward-model %s/r --output %s",
        "compare --policies %s/p.json --policy-model %s/p --reward-model %s/r --judge-model x "
        "--output %s",
        "run --output %s", "sft --output %s", "rm --output %s",
        "sensitivity --model %s/m --output %s/matrix.csv",
        "monitor --power-source none --idle-s 0 --out %s -- true",
    };
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        char args[2048], *o = NULL;
        /* every %s is the temporary directory but the last, the output */
        int n = 0;
        for (const char *p = cmds[i]; (p = strstr(p, "%s")); p += 2)
            n++;
        const char *a[4] = {dir, dir, dir, dir};
        a[n - 1] = out;
        snprintf(args, sizeof args, cmds[i], a[0], a[1], a[2], a[3]);
        int rc = test_cli(&o, "%s", args);
        if (rc != 3 || !strstr(o, out) || !strstr(o, pid))
            fail_msg("mxrlhf %s: expected exit 3 naming %s and the holder, got %d:\n%s", args,
                     out, rc, o);
        free(o);
    }
    fs_unlock_dir(&held);

    /* a lock file left by a process that died is taken over (the kernel dropped its lock) */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        fs_lock_t l;
        err_t ce = ERR_INIT;
        _exit(fs_lock_dir(out, "mxrlhf ppo", &l, &ce) ? 1 : 0); /* dies holding it */
    }
    int st;
    assert_int_equal(waitpid(child, &st, 0), child);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char lock_path[800];
    snprintf(lock_path, sizeof lock_path, "%s/%s", out, FS_LOCK_NAME);
    assert_true(fs_exists(lock_path)); /* the dead holder's file is still there */
    char *o = NULL;
    int rc = test_cli(&o, "monitor --power-source none --idle-s 0 --out %s -- true", out);
    if (rc != 0)
        fail_msg("a stale lock must be taken over, got exit %d:\n%s", rc, o);
    free(o);
    assert_false(fs_exists(lock_path)); /* released at the end */
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(err_prefix_joins_with_one_separator),
        cmocka_unit_test(command_errors_never_double_the_colon),
        cmocka_unit_test(every_writing_command_refuses_a_directory_in_use),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
