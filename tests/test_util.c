/* Tests for src/util: atomic files, JSON field errors, the counter-based RNG. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        cmocka_unit_test(philox_matches_random123_kat),
        cmocka_unit_test(rng_is_a_function_of_its_key),
        cmocka_unit_test(fs_read_all_refuses_large_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
