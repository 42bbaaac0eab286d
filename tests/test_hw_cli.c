/* Tests for `mxrlhf hw` as a user drives it: random vectors written, reproduced by seed
 * and checked by the reference; a hand-edited file with a wrong expected value fails the
 * check (exit 1) and a malformed one is refused (exit 2, naming line and field); bad
 * options are usage errors; the committed fixtures pass `hw check`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx/mx_hwvec.h"
#include "support/testutil.h"
#include "util/fs.h"

static char *slurp(const char *path)
{
    char *t;
    size_t n;
    err_t e = ERR_INIT;
    if (fs_read_all(path, 1 << 26, &t, &n, &e))
        fail_msg("%s", e.msg);
    return t;
}

static void random_vectors_by_seed(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), *a = fs_join(dir, "a.vec"), *b = fs_join(dir, "b.vec");
    char *out = NULL;
    assert_int_equal(test_cli(&out, "hw vectors --source random --count 3 --seed 5 --output %s", a), 0);
    assert_non_null(strstr(out, "wrote 54 vectors (0 real, 54 random)"));
    free(out);
    assert_int_equal(test_cli(&out, "hw vectors --source random --count 3 --seed 5 --output %s", b), 0);
    free(out);
    char *ta = slurp(a), *tb = slurp(b);
    assert_string_equal(ta, tb); /* the same seed, the same file */
    free(tb);
    assert_int_equal(test_cli(&out, "hw check %s", a), 0);
    assert_non_null(strstr(out, "54 of 54 vectors match"));
    free(out);
    /* one format and block */
    assert_int_equal(test_cli(&out, "hw vectors --source random --count 4 --format mxfp4 --k 16 "
                              "--seed 5 --output %s", b), 0);
    free(out);
    mx_hwvec_t *v;
    size_t n;
    err_t e = ERR_INIT;
    assert_int_equal(mx_hwvec_load(b, &v, &n, &e), 0);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(v[i].format, MX_FP4_E2M1);
        assert_int_equal(v[i].k, 16);
    }
    free(v);
    /* a wrong expected value: exit 1, the vector named */
    char *bad = strdup(ta);
    char *first = strstr(bad, "\nmx");
    char *end = strchr(first + 1, '\n');
    memcpy(end - 8, "12345678", 8);
    test_write_file(b, bad, strlen(bad));
    assert_int_equal(test_cli(&out, "hw check %s", b), 1);
    assert_non_null(strstr(out, "vector 1: expected 12345678 in the file"));
    assert_non_null(strstr(out, "53 of 54 vectors match"));
    free(out);
    /* a malformed field: exit 2 with the line and field */
    memcpy(end - 8, "1234567X", 8);
    test_write_file(b, bad, strlen(bad));
    assert_int_equal(test_cli(&out, "hw check %s", b), 2);
    assert_non_null(strstr(out, ":4: field 21 (expected)"));
    free(out);
    free(bad);
    free(ta);
    test_rmtree(dir);
    free(dir);
    free(a);
    free(b);
}

static void usage_errors(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(test_cli(&out, "hw vectors --source maybe --output /tmp/x.vec"), 2);
    assert_non_null(strstr(out, "--source"));
    free(out);
    assert_int_equal(test_cli(&out, "hw vectors --source random"), 2);
    assert_non_null(strstr(out, "output"));
    free(out);
    assert_int_equal(test_cli(&out, "hw vectors --source random --format bf16 --output /tmp/x.vec"), 2);
    free(out);
    assert_int_equal(test_cli(&out, "hw gemm --output /tmp/g.txt --layer lm_head"), 2);
    assert_non_null(strstr(out, "--plan"));
    free(out);
    assert_int_equal(test_cli(&out, "hw project --results /nonexistent-hw19"), 2);
    assert_non_null(strstr(out, "policies.json"));
    free(out);
    assert_int_equal(test_cli(&out, "hw frobnicate"), 2);
    free(out);
    assert_int_equal(test_cli(&out, "hw --help"), 0);
    assert_non_null(strstr(out, "vectors"));
    free(out);
}

static void committed_fixtures_pass_the_reference(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(test_cli(&out, "hw check hw/vectors/default_real.vec"), 0);
    assert_non_null(strstr(out, "288 of 288 vectors match"));
    free(out);
    assert_int_equal(test_cli(&out, "hw check hw/vectors/hand_written.vec"), 0);
    assert_non_null(strstr(out, "7 of 7 vectors match"));
    free(out);
    assert_int_equal(test_cli(&out, "hw check hw/vectors/default_gemm.txt"), 0);
    assert_non_null(strstr(out, "outputs match"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(random_vectors_by_seed),
        cmocka_unit_test(usage_errors),
        cmocka_unit_test(committed_fixtures_pass_the_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
