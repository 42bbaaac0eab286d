/* Tests for src/util: atomic files (and their stale temporaries), the directory lock, JSON
 * field errors and what json_parse refuses, the counter-based RNG. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/testutil.h"
#include "util/atomic_file.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/rng.h"

static void atomic_commit_replaces_whole_file(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "out.txt");
    err_t e = ERR_INIT;
    assert_int_equal(atomic_write(path, "old", 3, &e), 0);
    atomic_file_t af;
    assert_int_equal(atomic_open(&af, path, &e), 0);
    fputs("new contents", af.fp);
    /* Before commit the destination still holds the old bytes. */
    char *text;
    size_t n;
    assert_int_equal(fs_read_all(path, 1 << 20, &text, &n, &e), 0);
    assert_string_equal(text, "old");
    free(text);
    assert_int_equal(atomic_commit(&af, &e), 0);
    assert_int_equal(fs_read_all(path, 1 << 20, &text, &n, &e), 0);
    assert_string_equal(text, "new contents");
    free(text);
    free(path);
    test_rmtree(dir);
    free(dir);
}

static void atomic_abort_leaves_nothing(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "never.txt");
    err_t e = ERR_INIT;
    atomic_file_t af;
    assert_int_equal(atomic_open(&af, path, &e), 0);
    char *tmp = strdup(af.tmp_path);
    fputs("half", af.fp);
    atomic_abort(&af);
    assert_false(fs_exists(path));
    assert_false(fs_exists(tmp));
    free(tmp);
    free(path);
    test_rmtree(dir);
    free(dir);
}

static void atomic_open_in_missing_dir_names_path(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    atomic_file_t af;
    assert_int_equal(atomic_open(&af, "/nonexistent-dir/x.csv", &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "/nonexistent-dir/x.csv"));
}

/* Temporaries "<name>.tmp-*" in dir. */
static int count_temps(const char *dir, const char *name)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    size_t k = strlen(name);
    for (struct dirent *de; (de = readdir(d));)
        n += !strncmp(de->d_name, name, k) && !strncmp(de->d_name + k, ".tmp-", 5);
    closedir(d);
    return n;
}

/* A child that opens an atomic file for `path`, writes to it, says so on the pipe and
 * waits to be killed (a writer caught before its rename). */
static pid_t writer_child(const char *path)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
        close(p[0]);
        err_t e = ERR_INIT;
        atomic_file_t af;
        if (atomic_open(&af, path, &e))
            _exit(1);
        fputs("a checkpoint's worth of bytes", af.fp);
        fflush(af.fp);
        if (write(p[1], "x", 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(p[1]);
    char c;
    assert_int_equal(read(p[0], &c, 1), 1);
    close(p[0]);
    return pid;
}

static void kill_child(pid_t pid)
{
    int st;
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, &st, 0), pid);
}

/* A kill just before the rename left "<path>.tmp-*" forever (gigabytes for a 0.5B
 * checkpoint). The next writer of the same file removes temporaries whose writer is dead,
 * and leaves those of a live writer alone. */
static void atomic_open_removes_stale_temporaries_of_dead_writers(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "policy.safetensors"), *other = fs_join(dir, "other.json");
    pid_t live = writer_child(path);
    pid_t dead = writer_child(path); /* its open left the live writer's temporary alone */
    kill_child(dead);
    pid_t other_dead = writer_child(other);
    kill_child(other_dead);
    assert_int_equal(count_temps(dir, "policy.safetensors"), 2);
    err_t e = ERR_INIT;
    assert_int_equal(atomic_write(path, "new", 3, &e), 0);
    /* the dead writer's temporary is gone, the live one's stays, and so does another
     * file's (only writers of that file clean up after it) */
    assert_int_equal(count_temps(dir, "policy.safetensors"), 1);
    assert_int_equal(count_temps(dir, "other.json"), 1);
    char *text;
    size_t n;
    assert_int_equal(fs_read_all(path, 1 << 10, &text, &n, &e), 0);
    assert_string_equal(text, "new");
    free(text);
    /* once the live writer dies too, its temporary is stale */
    kill_child(live);
    assert_int_equal(atomic_remove_stale(path), 1);
    assert_int_equal(count_temps(dir, "policy.safetensors"), 0);
    assert_int_equal(atomic_remove_stale(other), 1);
    assert_int_equal(count_temps(dir, "other.json"), 0);
    /* our own open temporary is locked: a cleaner leaves it */
    atomic_file_t af;
    assert_int_equal(atomic_open(&af, path, &e), 0);
    assert_int_equal(atomic_remove_stale(path), 0);
    assert_true(fs_exists(af.tmp_path));
    assert_int_equal(atomic_commit(&af, &e), 0);
    assert_int_equal(count_temps(dir, "policy.safetensors"), 0);
    free(path);
    free(other);
    test_rmtree(dir);
    free(dir);
}

/* Two processes on one output directory: the second is refused, naming the holder; a
 * killed holder's lock is gone with it. */
static void dir_lock_refuses_a_second_taker_naming_the_holder(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *out = fs_join(dir, "run");
    int p[2], q[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(pipe(q), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(p[0]);
        close(q[1]);
        fs_lock_t l;
        err_t e = ERR_INIT;
        char c = fs_lock_dir(out, "mxrlhf ppo", &l, &e) ? 'n' : 'y';
        if (write(p[1], &c, 1) != 1)
            _exit(1);
        if (read(q[0], &c, 1) != 1) /* until the parent says */
            _exit(1);
        fs_unlock_dir(&l);
        _exit(0);
    }
    close(p[1]);
    close(q[0]);
    char c;
    assert_int_equal(read(p[0], &c, 1), 1);
    assert_int_equal(c, 'y');
    fs_lock_t l;
    err_t e = ERR_INIT;
    assert_int_equal(fs_lock_dir(out, "mxrlhf sft", &l, &e), ERR_UNAVAILABLE);
    char want[256];
    snprintf(want, sizeof want, "%s is in use by pid %ld (mxrlhf ppo, started 20", out, (long)pid);
    if (!strstr(e.msg, want))
        fail_msg("expected \"%s...\", got: %s", want, e.msg);
    fs_unlock_dir(&l); /* not held: nothing happens */
    /* the holder releases: the lock file goes, and the directory is free */
    assert_int_equal(write(q[1], "x", 1), 1);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char *lp = fs_join(out, FS_LOCK_NAME);
    assert_false(fs_exists(lp));
    err_clear(&e);
    assert_int_equal(fs_lock_dir(out, "mxrlhf sft", &l, &e), 0);
    /* in one process a second take is refused as well, naming ourselves */
    fs_lock_t l2;
    assert_int_equal(fs_lock_dir(out, "again", &l2, &e), ERR_UNAVAILABLE);
    snprintf(want, sizeof want, "in use by pid %ld (mxrlhf sft, started", (long)getpid());
    assert_non_null(strstr(e.msg, want));
    fs_unlock_dir(&l);
    assert_false(fs_exists(lp));
    /* a holder that is killed leaves its file, but not its lock */
    close(p[0]);
    close(q[1]);
    assert_int_equal(pipe(p), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(p[0]);
        err_t ce = ERR_INIT;
        fs_lock_t cl;
        c = fs_lock_dir(out, "mxrlhf ppo", &cl, &ce) ? 'n' : 'y';
        if (write(p[1], &c, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(p[1]);
    assert_int_equal(read(p[0], &c, 1), 1);
    assert_int_equal(c, 'y');
    close(p[0]);
    kill_child(pid);
    assert_true(fs_exists(lp));
    err_clear(&e);
    assert_int_equal(fs_lock_dir(out, "mxrlhf ppo", &l, &e), 0);
    char *text;
    size_t n;
    assert_int_equal(fs_read_all(lp, 1 << 10, &text, &n, &e), 0);
    snprintf(want, sizeof want, "pid=%ld\nholder=mxrlhf ppo\n", (long)getpid());
    assert_non_null(strstr(text, want));
    free(text);
    fs_unlock_dir(&l);
    free(lp);
    free(out);
    test_rmtree(dir);
    free(dir);
}

/* cJSON keeps both values of a repeated key and readers took one of them silently. */
static void json_parse_refuses_a_repeated_key_naming_its_path(void **state)
{
    (void)state;
    cJSON *j;
    err_t e = ERR_INIT;
    const char *doc = "{\"plans\": {\"A\": {\"rules\": [{\"spec\": 1}, {\"spec\": 1, \"spec\": 2}]}}}";
    assert_int_equal(json_parse(doc, strlen(doc), "p.json", &j, &e), ERR_INPUT);
    assert_null(j);
    assert_string_equal(e.msg, "p.json: key \"plans.A.rules[1].spec\" appears twice (which "
                               "value is meant cannot be told)");
    /* an object of many keys (sorted, not pairwise) */
    char big[4096];
    size_t k = (size_t)snprintf(big, sizeof big, "{\"vocab\": {");
    for (int i = 0; i < 200; i++)
        k += (size_t)snprintf(big + k, sizeof big - k, "\"t%d\": %d, ", i, i);
    snprintf(big + k, sizeof big - k, "\"t77\": 0}}");
    err_clear(&e);
    assert_int_equal(json_parse(big, strlen(big), "t.json", &j, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "t.json: key \"vocab.t77\" appears twice"));
    big[k] = 0;
    snprintf(big + k, sizeof big - k, "\"t200\": 0}}");
    assert_int_equal(json_parse(big, strlen(big), "t.json", &j, &e), 0);
    cJSON_Delete(j);
    /* the same key in different objects is fine */
    doc = "{\"a\": {\"x\": 1}, \"b\": {\"x\": 2}, \"c\": [{\"x\": 3}, {\"x\": 4}]}";
    assert_int_equal(json_parse(doc, strlen(doc), "ok.json", &j, &e), 0);
    cJSON_Delete(j);
}

/* cJSON ends strings at U+0000: a NUL byte or a \u0000 escape would cut a text short. */
static void json_parse_refuses_nul_naming_line_and_column(void **state)
{
    (void)state;
    cJSON *j;
    err_t e = ERR_INIT;
    const char raw[] = "{\n  \"t\": \"a\0b\"\n}";
    assert_int_equal(json_parse(raw, sizeof raw - 1, "x.json", &j, &e), ERR_INPUT);
    assert_string_equal(e.msg, "x.json: line 2, column 10: a NUL byte (a text cannot hold NUL "
                               "bytes)");
    const char *esc = "{\"t\": \"a\\u0000b\"}";
    err_clear(&e);
    assert_int_equal(json_parse(esc, strlen(esc), "x.json", &j, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "x.json: line 1, column 9: a \\u0000 escape"));
    bool isesc;
    assert_int_equal(json_find_nul(esc, strlen(esc), &isesc), 8);
    assert_true(isesc);
    /* "\\u0000" is a backslash and the letters u0000; "\\\u0000" is NUL again */
    const char *lit = "{\"t\": \"C:\\\\u0000\"}", *odd = "{\"t\": \"\\\\\\u0000\"}";
    assert_int_equal(json_find_nul(lit, strlen(lit), &isesc), -1);
    assert_int_equal(json_parse(lit, strlen(lit), "x.json", &j, &e), 0);
    assert_string_equal(cJSON_GetObjectItem(j, "t")->valuestring, "C:\\u0000");
    cJSON_Delete(j);
    assert_int_equal(json_find_nul(odd, strlen(odd), &isesc), 9);
    /* what follows the document is ignored, as cJSON always did (a NUL there too) */
    const char tail[] = "{\"t\": 1}\n\0\0";
    assert_int_equal(json_parse(tail, sizeof tail - 1, "x.json", &j, &e), 0);
    cJSON_Delete(j);
    /* a NUL where a value should be is named as a NUL, not as bad syntax */
    const char mid[] = "{\"t\": \0}";
    err_clear(&e);
    assert_int_equal(json_parse(mid, sizeof mid - 1, "x.json", &j, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "x.json: line 1, column 7: a NUL byte"));
    err_clear(&e);
    /* other escapes of small code points are fine */
    const char *one = "{\"t\": \"\\u0001\\u00e9\"}";
    assert_int_equal(json_parse(one, strlen(one), "x.json", &j, &e), 0);
    cJSON_Delete(j);
}

/* Through the command: a configuration file with a key twice is refused (exit 2), naming
 * the file and the key (it used to take the last value). */
static void cli_config_file_with_a_repeated_key_is_refused(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *cfg = fs_join(dir, "cfg.json");
    const char *doc = "{\"ppo\": {\"learning_rate\": 1e-5, \"steps\": 3, \"learning_rate\": 2e-5}}";
    test_write_file(cfg, doc, strlen(doc));
    char *out;
    assert_int_equal(test_cli(&out, "config --config %s --section ppo", cfg), 2);
    if (!strstr(out, "cfg.json: key \"ppo.learning_rate\" appears twice"))
        fail_msg("expected the repeated key named, got: %s", out);
    free(out);
    free(cfg);
    test_rmtree(dir);
    free(dir);
}

static void json_errors_name_file_and_field(void **state)
{
    (void)state;
    const char *doc = "{\"hidden_size\": \"big\", \"layers\": 2.5, \"ok\": 7}";
    cJSON *j;
    err_t e = ERR_INIT;
    assert_int_equal(json_parse(doc, strlen(doc), "cfg.json", &j, &e), 0);
    long long v;
    assert_int_equal(json_req_int(j, "hidden_size", "cfg.json", &v, &e), ERR_INPUT);
    assert_string_equal(e.msg, "cfg.json: field \"hidden_size\": expected an integer");
    err_clear(&e);
    assert_int_equal(json_req_int(j, "layers", "cfg.json", &v, &e), ERR_INPUT);
    err_clear(&e);
    assert_int_equal(json_req_int(j, "absent", "cfg.json", &v, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "\"absent\" is missing"));
    err_clear(&e);
    assert_int_equal(json_req_int(j, "ok", "cfg.json", &v, &e), 0);
    assert_int_equal(v, 7);
    assert_int_equal(json_opt_int(j, "absent", "cfg.json", 42, &v, &e), 0);
    assert_int_equal(v, 42);
    cJSON_Delete(j);
}

static void json_syntax_error_gives_line_and_column(void **state)
{
    (void)state;
    const char *doc = "{\n  \"a\": 1,\n  \"b\": ]\n}";
    cJSON *j;
    err_t e = ERR_INIT;
    assert_int_equal(json_parse(doc, strlen(doc), "x.json", &j, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "x.json: invalid JSON at line 3"));
}

/* Known-answer vectors from Random123's kat_vectors for philox4x32_10. */
static void philox_matches_random123_kat(void **state)
{
    (void)state;
    rng_block_t b = rng_philox4x32_10(0, 0, 0, 0, 0, 0);
    assert_int_equal(b.v[0], 0x6627e8d5u);
    assert_int_equal(b.v[1], 0xe169c58du);
    assert_int_equal(b.v[2], 0xbc57ac4cu);
    assert_int_equal(b.v[3], 0x9b00dbd8u);
    b = rng_philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
    assert_int_equal(b.v[0], 0x408f276du);
    assert_int_equal(b.v[1], 0x41c83b0eu);
    assert_int_equal(b.v[2], 0xa20bc7c6u);
    assert_int_equal(b.v[3], 0x6d5451fdu);
    b = rng_philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u,
                          0x299f31d0u);
    assert_int_equal(b.v[0], 0xd16cfe09u);
    assert_int_equal(b.v[1], 0x94fdccebu);
    assert_int_equal(b.v[2], 0x5001e420u);
    assert_int_equal(b.v[3], 0x24126ea1u);
}

static void rng_is_a_function_of_its_key(void **state)
{
    (void)state;
    /* Same (seed, stream, index) -> same word, in any order; lanes differ. */
    uint32_t a = rng_u32(42, 7, 1001);
    for (int i = 0; i < 100; i++)
        (void)rng_u32(42, 7, (uint64_t)i);
    assert_int_equal(rng_u32(42, 7, 1001), a);
    assert_int_not_equal(rng_u32(42, 8, 1001), a);
    assert_int_not_equal(rng_u32(43, 7, 1001), a);
    /* Uniforms: mean near 1/2 over many draws. */
    double s = 0;
    for (int i = 0; i < 100000; i++) {
        float u = rng_uniform(1, 2, (uint64_t)i);
        assert_true(u >= 0.0f && u < 1.0f);
        s += u;
    }
    assert_true(fabs(s / 100000 - 0.5) < 0.005);
    /* Normals: mean 0, variance 1 within sampling error. */
    double m = 0, v = 0;
    for (int i = 0; i < 100000; i++) {
        double z = rng_normal(3, 4, (uint64_t)i);
        m += z;
        v += z * z;
    }
    m /= 100000;
    v = v / 100000 - m * m;
    assert_true(fabs(m) < 0.02);
    assert_true(fabs(v - 1) < 0.03);
    assert_int_not_equal(rng_stream("mx.stochastic", 0), rng_stream("mx.stochastic", 1));
}

static void fs_read_all_refuses_large_files(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "big");
    test_write_file(path, "0123456789", 10);
    char *text;
    err_t e = ERR_INIT;
    assert_int_equal(fs_read_all(path, 5, &text, NULL, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, path));
    free(path);
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(atomic_commit_replaces_whole_file),
        cmocka_unit_test(atomic_abort_leaves_nothing),
        cmocka_unit_test(atomic_open_in_missing_dir_names_path),
        cmocka_unit_test(json_errors_name_file_and_field),
        cmocka_unit_test(json_syntax_error_gives_line_and_column),
        cmocka_unit_test(json_parse_refuses_a_repeated_key_naming_its_path),
        cmocka_unit_test(json_parse_refuses_nul_naming_line_and_column),
        cmocka_unit_test(cli_config_file_with_a_repeated_key_is_refused),
        cmocka_unit_test(atomic_open_removes_stale_temporaries_of_dead_writers),
        cmocka_unit_test(dir_lock_refuses_a_second_taker_naming_the_holder),
        cmocka_unit_test(philox_matches_random123_kat),
        cmocka_unit_test(rng_is_a_function_of_its_key),
        cmocka_unit_test(fs_read_all_refuses_large_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
