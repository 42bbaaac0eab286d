/* testutil: helpers shared by the tests (cmocka).
 *
 * Shared data lives in ../shared (or $MXRLHF_SHARED). A test that needs it skips when
 * it is missing, except under CI=true, where missing data is a failure: CI has it, so
 * a skip there would hide a broken test. */
#ifndef MXRLHF_TESTS_TESTUTIL_H
#define MXRLHF_TESTS_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* Full path of a file under the shared data directory, or NULL when it is absent. */
const char *test_shared_path(const char *rel);

/* Sets `var` to the shared file's path; skips (or fails under CI=true) when absent. */
#define REQUIRE_SHARED(var, rel)                                                          \
    do {                                                                                  \
        (var) = test_shared_path(rel);                                                    \
        if (!(var)) {                                                                     \
            if (test_in_ci())                                                             \
                fail_msg("shared data %s is missing (CI=true: failing, not skipping)",    \
                         rel);                                                            \
            skip();                                                                       \
        }                                                                                 \
    } while (0)

int test_in_ci(void);

/* Full path of a file under the test fixtures (tests/fixtures), found from any working
 * directory: $MXRLHF_FIXTURES when set (the device packs set it), else the absolute
 * tests/fixtures of the source tree the test was built from (MXRLHF_FIXTURES_DIR, set by
 * the Makefile) when it exists, else tests/fixtures relative to the working directory.
 * The path is returned whether or not the file exists, so an error can name it; it lives
 * in one of 8 rotating buffers (valid until 8 more calls). */
const char *test_fixture_path(const char *rel);

/* A fresh empty directory under $TMPDIR (or /tmp); removed by test_rmtree. */
char *test_mkdtemp(void);
void test_rmtree(const char *dir);

/* Runs the mxrlhf binary ($MXRLHF_BIN, else build/asan/mxrlhf) with a shell command
 * line built from fmt, stdout and stderr captured to *out (caller frees, may be NULL).
 * Returns the exit status (or -1 when it did not exit normally). */
int test_cli(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Bit pattern of a float, for exact comparisons. */
uint32_t test_f32_bits(float x);

/* Writes bytes to a path (test fixtures); fails the test on error. */
void test_write_file(const char *path, const void *data, size_t n);

#endif
